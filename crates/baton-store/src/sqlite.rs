//! The embedded engine: one SQLite file in WAL mode, driven from tokio's blocking pool.
//!
//! One connection behind a mutex serialises writers, which is what SQLite does anyway; reads
//! are short and keep the lock for microseconds. `synchronous = FULL` because a secrets
//! manager must not lose an acknowledged write on power loss.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_core::rotation::{RotationPolicy, RotationState};
use baton_core::{SecretRecord, Timestamp};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::cache::{RecordCache, arn_key, name_key};
use crate::root_keys;
use crate::schema::{self, SecretRow};
use crate::snapshot::{
    Cell, SNAPSHOT_TABLES, Snapshot, TableRows, insert_statement, rows_per_insert,
};
use crate::{
    AccessKeyRecord, ChangeFeed, ConsumerRecord, ConsumerWrite, NodeRecord, RootKeyStateRecord,
    RotatorRecord, SealedBlob, SealedKind, SealedReplacement, Store, StoreError,
};

/// The SQLite engine.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
    cache: Arc<RecordCache>,
    changes: Arc<ChangeFeed>,
    /// Held for the life of the store: one process per database file, so the cache sees every
    /// write.
    _lock: Arc<std::fs::File>,
}

/// Read connections. WAL lets them read while the writer writes, and each read transaction sees
/// every commit that finished before it began, so a read after a write returns that write.
const READERS: usize = 4;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn sql(statement: &str) -> String {
    statement.replace('$', "?")
}

fn backend(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Constraint(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations, with the
    /// default cache ([`crate::CACHE_BYTES_DEFAULT`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::CACHE_BYTES_DEFAULT)
    }

    /// [`SqliteStore::open`] with a cache of secrets of about `cache_bytes` (at least
    /// [`crate::CACHE_BYTES_MIN`]); beyond it, the least useful entries are evicted.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let lock = lock_exclusively(path)?;
        create_private(path)?;
        let mut conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open(path).map_err(backend)?;
                reader
                    .execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
                    .map_err(backend)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
            cache: Arc::new(RecordCache::with_bytes(cache_bytes)),
            changes: Arc::new(ChangeFeed::default()),
            _lock: Arc::new(lock),
        })
    }

    /// Reads every row of one statement keyed by a single text argument (or none).
    async fn rows_by<T: Send + 'static>(
        &self,
        statement: &'static str,
        key: Option<&str>,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let key = key.map(str::to_owned);
        self.read(move |conn| {
            conn.prepare_cached(&sql(statement))
                .and_then(|mut s| match &key {
                    Some(k) => s.query_map([k], map)?.collect(),
                    None => s.query_map([], map)?.collect(),
                })
                .map_err(backend)
        })
        .await
    }

    /// Deletes by a single text key on the write connection; returns whether a row went.
    async fn delete_by(&self, statement: &'static str, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.with(move |conn| {
            let n = conn.execute(&sql(statement), [&key]).map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    /// Runs `f` on the one write connection, on tokio's blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("sqlite connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("blocking task failed: {e}")))?
    }

    /// Runs a read-only `f` on one of the read connections: a free one if there is one,
    /// otherwise the next in turn.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let free = (0..readers.len())
                .find_map(|i| readers[(start + i) % readers.len()].try_lock().ok());
            let guard = match free {
                Some(guard) => guard,
                None => readers[start % readers.len()]
                    .lock()
                    .map_err(|_| StoreError::Backend("sqlite connection mutex poisoned".into()))?,
            };
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("blocking task failed: {e}")))?
    }
}

/// Takes an exclusive lock on `<database>.lock`, so a second process cannot open the same file.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", lock_path.display())))?;
    file.try_lock().map_err(|_| {
        StoreError::Backend(format!(
            "{} is in use by another Baton process (lock file {} is held); run one server per \
             data directory, or use PostgreSQL for several nodes",
            path.display(),
            lock_path.display()
        ))
    })?;
    Ok(file)
}

/// Creates the database file readable by its owner only; SQLite gives its WAL and shared
/// memory files the same permissions.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(backend)?;
    for (version, body) in schema::MIGRATIONS {
        let tx = conn.transaction().map_err(backend)?;
        let applied: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if applied.is_none() {
            let body = body
                .replace("{blob}", "BLOB")
                .replace("{bigint}", "INTEGER")
                .replace("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT")
                .replace("{audit_seq}", "");
            tx.execute_batch(&body).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                [version],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

fn read_secret_row(r: &Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        id: r.get(0)?,
        account_id: r.get(1)?,
        region: r.get(2)?,
        name: r.get(3)?,
        arn: r.get(4)?,
        description: r.get(5)?,
        kms_key_id: r.get(6)?,
        resource_policy: r.get(7)?,
        rotation_enabled: r.get(8)?,
        rotation_lambda_arn: r.get(9)?,
        rotation_after_days: r.get(10)?,
        rotation_duration: r.get(11)?,
        rotation_schedule: r.get(12)?,
        rotation_rules_set: r.get(13)?,
        last_rotated_at: r.get(14)?,
        created_at: r.get(15)?,
        last_changed_at: r.get(16)?,
        last_accessed_at: r.get(17)?,
        deleted_at: r.get(18)?,
        purge_at: r.get(19)?,
        wrapped_data_key: r.get(20)?,
        revision: r.get(21)?,
        key_meta: r.get(22)?,
        rotation_configured_by: r.get(23)?,
        rotation_database_clone: r.get(24)?,
        tagged: r.get(25)?,
    })
}

/// Runs a statement keyed by a secret id and maps every row.
fn child_rows<T>(
    conn: &Connection,
    statement: &str,
    secret_id: &str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    conn.prepare_cached(&sql(statement))
        .and_then(|mut s| s.query_map([secret_id], map)?.collect())
        .map_err(backend)
}

/// A namespace's secret rows, oldest first.
fn namespace_rows(
    conn: &Connection,
    account_id: &str,
    region: &str,
) -> Result<Vec<SecretRow>, StoreError> {
    conn.prepare_cached(&sql(&schema::select_namespace_secrets()))
        .and_then(|mut s| {
            s.query_map(params![account_id, region], read_secret_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(backend)
}

fn load_children(conn: &Connection, row: SecretRow) -> Result<SecretRecord, StoreError> {
    let id = row.id.clone();
    let versions = child_rows(conn, schema::SELECT_VERSIONS_AND_LABELS, &id, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    let tags = child_rows(conn, schema::SELECT_TAGS, &id, |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    let replicas = child_rows(conn, schema::SELECT_REPLICAS, &id, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    let policy = child_rows(conn, schema::SELECT_POLICY, &id, |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })?
    .pop();
    let rotation = child_rows(conn, schema::SELECT_ROTATION, &id, read_rotation_row)?.pop();
    let next_rotation_at = child_rows(conn, schema::SELECT_SCHEDULE, &id, |r| r.get(0))?.pop();
    row.into_record(versions, tags, replicas, policy, rotation, next_rotation_at)
}

/// Whether `name` is free in the namespace, for a secret other than `except_id`: no secret and no
/// other secret's replica holds it.
fn name_is_free(
    conn: &Connection,
    account_id: &str,
    region: &str,
    name: &str,
    except_id: &str,
) -> Result<bool, StoreError> {
    let in_secrets: Option<String> = conn
        .query_row(
            &sql(schema::NAME_IN_SECRETS),
            params![account_id, region, name],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let in_replicas: Option<String> = conn
        .query_row(
            &sql(schema::NAME_IN_REPLICAS),
            params![account_id, region, name, except_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    Ok(in_secrets.is_none_or(|id| id == except_id) && in_replicas.is_none())
}

fn find_one(
    conn: &Connection,
    where_clause: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Option<SecretRecord>, StoreError> {
    let query = format!(
        "SELECT {} FROM secrets WHERE {where_clause}",
        schema::SECRET_COLUMNS
    );
    let row = conn
        .prepare_cached(&query)
        .and_then(|mut s| s.query_row(args, read_secret_row).optional())
        .map_err(backend)?;
    row.map(|row| load_children(conn, row)).transpose()
}

/// Writes versions, labels and tags of `secret` inside an open transaction.
/// The outbox: the record's events, in the transaction of its write.
fn write_events(tx: &rusqlite::Transaction<'_>, secret: &SecretRecord) -> Result<(), StoreError> {
    for e in &secret.outbox {
        tx.execute(
            &sql(schema::INSERT_EVENT),
            params![
                e.event_id,
                e.at,
                secret.account_id,
                secret.region,
                secret.id,
                secret.arn,
                secret.name,
                e.name,
                e.detail
            ],
        )
        .map_err(backend)?;
    }
    Ok(())
}

fn read_event(r: &Row<'_>) -> rusqlite::Result<crate::EventRecord> {
    Ok(crate::EventRecord {
        seq: r.get(0)?,
        event_id: r.get(1)?,
        at: r.get(2)?,
        account_id: r.get(3)?,
        region: r.get(4)?,
        secret_id: r.get(5)?,
        secret_arn: r.get(6)?,
        secret_name: r.get(7)?,
        event_name: r.get(8)?,
        detail: r.get(9)?,
    })
}

fn write_children(tx: &rusqlite::Transaction<'_>, secret: &SecretRecord) -> Result<(), StoreError> {
    write_events(tx, secret)?;
    let stored: Vec<(String, String)> = tx
        .prepare_cached(&sql(schema::SELECT_VERSION_IDS))
        .and_then(|mut s| {
            s.query_map([&secret.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(backend)?;
    let existing: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    for version in &secret.versions {
        let was_empty = stored
            .iter()
            .any(|(id, kind)| id == &version.version_id && kind == "empty");
        if was_empty && version.kind != baton_core::SecretValueKind::Empty {
            tx.execute(
                &sql(schema::FILL_VERSION),
                params![
                    secret.id,
                    version.version_id,
                    version.kind.as_str(),
                    version.sealed_value
                ],
            )
            .map_err(backend)?;
        }
    }
    tx.execute(&sql(schema::DELETE_LABELS), [&secret.id])
        .map_err(backend)?;
    for gone in existing.iter().filter(|id| secret.version(id).is_none()) {
        tx.execute(&sql(schema::DELETE_VERSION), params![secret.id, gone])
            .map_err(backend)?;
    }
    for version in &secret.versions {
        if !existing.contains(&version.version_id) {
            tx.execute(
                &sql(schema::INSERT_VERSION),
                params![
                    secret.id,
                    version.version_id,
                    version.created_at,
                    version.kind.as_str(),
                    version.sealed_value
                ],
            )
            .map_err(backend)?;
        }
        for label in &version.labels {
            tx.execute(
                &sql(schema::INSERT_LABEL),
                params![secret.id, label, version.version_id],
            )
            .map_err(backend)?;
        }
    }
    tx.execute(&sql(schema::DELETE_TAGS), [&secret.id])
        .map_err(backend)?;
    for (position, tag) in secret.tags.iter().enumerate() {
        tx.execute(
            &sql(schema::INSERT_TAG),
            params![secret.id, position as i64, tag.key, tag.value],
        )
        .map_err(backend)?;
    }
    tx.execute(&sql(schema::DELETE_POLICY), [&secret.id])
        .map_err(backend)?;
    if let Some(policy) = &secret.rotation_policy {
        let (a, b, c, d, e, f) = schema::policy_row(policy);
        tx.execute(
            &sql(schema::INSERT_POLICY),
            params![secret.id, a, b, c, d, e, f],
        )
        .map_err(backend)?;
    }
    tx.execute(&sql(schema::DELETE_SCHEDULE), [&secret.id])
        .map_err(backend)?;
    if let Some(at) = secret.rotation.next_rotation_at {
        tx.execute(&sql(schema::INSERT_SCHEDULE), params![secret.id, at])
            .map_err(backend)?;
    }
    if let Some(state) = &secret.rotation_state {
        tx.execute(
            &sql(schema::DELETE_ROTATION),
            params![secret.id, state.machine.version_id],
        )
        .map_err(backend)?;
        let r = schema::RotationRow::from_state(state);
        tx.execute(
            &sql(schema::INSERT_ROTATION),
            params![
                secret.id,
                r.version_id,
                r.old_version_id,
                r.phase,
                r.phase_started_at,
                r.status,
                r.stopped_step,
                r.stopped_reason,
                r.in_flight,
                r.attempts,
                r.retry_at,
                r.alerted,
                r.gate_ready_since,
                r.started_at,
                r.timeline,
                r.due_at
            ],
        )
        .map_err(backend)?;
    }
    tx.execute(&sql(schema::DELETE_REPLICAS), [&secret.id])
        .map_err(backend)?;
    for (position, replica) in secret.replicas.iter().enumerate() {
        if !name_is_free(
            tx,
            &secret.account_id,
            &replica.region,
            &secret.name,
            &secret.id,
        )? {
            return Err(StoreError::NameTaken);
        }
        tx.execute(
            &sql(schema::INSERT_REPLICA),
            params![
                secret.id,
                position as i64,
                secret.account_id,
                replica.region,
                secret.name,
                replica.kms_key_id,
                replica.last_accessed_at
            ],
        )
        .map_err(backend)?;
    }
    Ok(())
}

fn insert_in(tx: &rusqlite::Transaction<'_>, secret: &SecretRecord) -> Result<(), StoreError> {
    if !name_is_free(
        tx,
        &secret.account_id,
        &secret.region,
        &secret.name,
        &secret.id,
    )? {
        return Err(StoreError::NameTaken);
    }
    let row = SecretRow::from_record(secret);
    tx.execute(
        &sql(schema::INSERT_SECRET),
        params![
            row.id,
            row.account_id,
            row.region,
            row.name,
            row.arn,
            row.description,
            row.kms_key_id,
            row.resource_policy,
            row.rotation_enabled,
            row.rotation_lambda_arn,
            row.rotation_after_days,
            row.rotation_duration,
            row.rotation_schedule,
            row.rotation_rules_set,
            row.last_rotated_at,
            row.created_at,
            row.last_changed_at,
            row.last_accessed_at,
            row.deleted_at,
            row.purge_at,
            row.wrapped_data_key,
            row.revision,
            row.key_meta,
            row.rotation_configured_by,
            row.rotation_database_clone,
            row.tagged
        ],
    )
    .map_err(backend)?;
    write_children(tx, secret)
}

fn save_in(tx: &rusqlite::Transaction<'_>, secret: &SecretRecord) -> Result<i64, StoreError> {
    let row = SecretRow::from_record(secret);
    let updated = tx
        .execute(
            &sql(schema::UPDATE_SECRET),
            params![
                row.id,
                row.revision,
                row.description,
                row.kms_key_id,
                row.resource_policy,
                row.rotation_enabled,
                row.rotation_lambda_arn,
                row.rotation_after_days,
                row.rotation_duration,
                row.rotation_schedule,
                row.rotation_rules_set,
                row.last_rotated_at,
                row.last_changed_at,
                row.last_accessed_at,
                row.deleted_at,
                row.purge_at,
                row.key_meta,
                row.wrapped_data_key,
                row.rotation_configured_by,
                row.rotation_database_clone,
                row.tagged
            ],
        )
        .map_err(backend)?;
    if updated == 0 {
        return Err(StoreError::Conflict);
    }
    write_children(tx, secret)?;
    Ok(secret.revision + 1)
}

fn read_rotation_row(r: &Row<'_>) -> rusqlite::Result<schema::RotationRow> {
    Ok(schema::RotationRow {
        version_id: r.get(0)?,
        old_version_id: r.get(1)?,
        phase: r.get(2)?,
        phase_started_at: r.get(3)?,
        status: r.get(4)?,
        stopped_step: r.get(5)?,
        stopped_reason: r.get(6)?,
        in_flight: r.get(7)?,
        attempts: r.get(8)?,
        retry_at: r.get(9)?,
        alerted: r.get(10)?,
        gate_ready_since: r.get(11)?,
        started_at: r.get(12)?,
        timeline: r.get(13)?,
        due_at: r.get(14)?,
    })
}

fn read_rotator(r: &Row<'_>) -> rusqlite::Result<schema::RotatorRow> {
    Ok(schema::RotatorRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        sealed_signing_secret: r.get(3)?,
        timeout_ms: r.get(4)?,
        created_at: r.get(5)?,
        execution_policy: r.get(6)?,
    })
}

fn read_consumer(r: &Row<'_>) -> rusqlite::Result<schema::ConsumerRow> {
    Ok(schema::ConsumerRow {
        secret_id: r.get(0)?,
        application: r.get(1)?,
        instance_id: r.get(2)?,
        current_version: r.get(3)?,
        accepted_versions: r.get(4)?,
        last_seen_at: r.get(5)?,
        lease_expires_at: r.get(6)?,
        principal: r.get(7)?,
    })
}

fn read_access_key(r: &Row<'_>) -> rusqlite::Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        access_key_id: r.get(0)?,
        sealed_secret: r.get(1)?,
        user_name: r.get(2)?,
        created_at: r.get(3)?,
        scope_arn: r.get(4)?,
        expires_at: r.get(5)?,
        session_token_hash: r.get(6)?,
    })
}

fn read_alias(r: &Row<'_>) -> rusqlite::Result<crate::AliasRecord> {
    Ok(crate::AliasRecord {
        alias_arn: r.get(0)?,
        alias_name: r.get(1)?,
        key_id: r.get(2)?,
        secret_id: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn read_grant(r: &Row<'_>) -> rusqlite::Result<crate::GrantRecord> {
    Ok(crate::GrantRecord {
        grant_id: r.get(0)?,
        secret_id: r.get(1)?,
        key_arn: r.get(2)?,
        grantee: r.get(3)?,
        retiring: r.get(4)?,
        name: r.get(5)?,
        token_hash: r.get(6)?,
        body: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn read_principal(r: &Row<'_>) -> rusqlite::Result<crate::PrincipalRecord> {
    Ok(crate::PrincipalRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        created_at: r.get(2)?,
    })
}

fn read_principal_policy(r: &Row<'_>) -> rusqlite::Result<crate::PrincipalPolicyRecord> {
    Ok(crate::PrincipalPolicyRecord {
        principal_name: r.get(0)?,
        policy_name: r.get(1)?,
        document: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

fn read_audit(r: &Row<'_>) -> rusqlite::Result<crate::AuditRecord> {
    Ok(crate::AuditRecord {
        seq: r.get(0)?,
        at: r.get(1)?,
        request_id: r.get(2)?,
        principal: r.get(3)?,
        access_key_id: r.get(4)?,
        action: r.get(5)?,
        resource: r.get(6)?,
        decision: r.get(7)?,
        outcome: r.get(8)?,
        status: r.get(9)?,
        source_ip: r.get(10)?,
        reason: r.get(11)?,
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
        user_agent: r.get(14)?,
        chain: r.get(15)?,
        chain_seq: r.get(16)?,
    })
}

/// Inserts entries whose chain fields are set, each at the log's next `seq`.
fn insert_audit_rows(
    tx: &rusqlite::Transaction<'_>,
    entries: Vec<crate::AuditRecord>,
) -> Result<Vec<crate::AuditRecord>, StoreError> {
    let mut seq: i64 = tx
        .prepare_cached(&sql(schema::LAST_AUDIT))
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(backend)?
        .unwrap_or_default();
    let mut insert = tx
        .prepare_cached(&sql(schema::INSERT_AUDIT))
        .map_err(backend)?;
    let mut stored = Vec::with_capacity(entries.len());
    for mut e in entries {
        seq += 1;
        e.seq = seq;
        insert
            .execute(params![
                e.seq,
                e.at,
                e.request_id,
                e.principal,
                e.access_key_id,
                e.action,
                e.resource,
                e.decision,
                e.outcome,
                e.status,
                e.source_ip,
                e.reason,
                e.prev_hash,
                e.hash,
                e.user_agent,
                e.chain,
                e.chain_seq
            ])
            .map_err(backend)?;
        stored.push(e);
    }
    Ok(stored)
}

#[async_trait]
impl Store for SqliteStore {
    fn cache_usage(&self) -> Option<(usize, u64)> {
        Some((self.cache.records(), self.cache.weight()))
    }

    async fn insert_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let id = secret.id.clone();
        let secret = secret.clone();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                insert_in(&tx, &secret)?;
                tx.commit().map_err(backend)
            })
            .await;
        self.cache.invalidate(&[&id]);
        if result.is_ok() {
            self.changes.publish(&id);
        }
        result
    }

    async fn save_secret(&self, secret: &SecretRecord) -> Result<i64, StoreError> {
        let id = secret.id.clone();
        let secret = secret.clone();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let revision = save_in(&tx, &secret)?;
                tx.commit().map_err(backend)?;
                Ok(revision)
            })
            .await;
        self.cache.invalidate(&[&id]);
        if result.is_ok() {
            self.changes.publish(&id);
        }
        result
    }

    async fn promote_replica(
        &self,
        primary: &SecretRecord,
        promoted: &SecretRecord,
    ) -> Result<i64, StoreError> {
        let ids = [primary.id.clone(), promoted.id.clone()];
        let (primary, promoted) = (primary.clone(), promoted.clone());
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let revision = save_in(&tx, &primary)?;
                insert_in(&tx, &promoted)?;
                tx.commit().map_err(backend)?;
                Ok(revision)
            })
            .await;
        self.cache.invalidate(&[&ids[0], &ids[1]]);
        if result.is_ok() {
            self.changes.publish(&ids[0]);
            self.changes.publish(&ids[1]);
        }
        result
    }

    async fn find_secret_by_replica(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let (a, r, n) = (account_id.to_owned(), region.to_owned(), name.to_owned());
        self.read(move |conn| {
            find_one(
                conn,
                &format!("id = ({})", sql(schema::REPLICA_OWNER)),
                &[&a, &r, &n],
            )
        })
        .await
    }

    async fn list_replicated_into(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let (a, r) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            let query = format!(
                "SELECT {} FROM secrets WHERE id IN ({}) ORDER BY created_at, id",
                schema::SECRET_COLUMNS,
                sql(schema::REPLICATED_INTO)
            );
            let rows = conn
                .prepare_cached(&query)
                .and_then(|mut s| {
                    s.query_map(params![a, r], read_secret_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)?;
            rows.into_iter()
                .map(|row| load_children(conn, row))
                .collect()
        })
        .await
    }

    async fn find_secret_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let key = name_key(account_id, region, name);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(Some(hit));
        }
        let generation = self.cache.generation();
        let (a, r, n) = (account_id.to_owned(), region.to_owned(), name.to_owned());
        let found = self
            .read(move |conn| {
                find_one(
                    conn,
                    "account_id = ?1 AND region = ?2 AND name = ?3",
                    &[&a, &r, &n],
                )
            })
            .await?;
        if let Some(secret) = &found {
            self.cache.fill(key, secret, generation);
        }
        Ok(found)
    }

    async fn find_secret_by_arn(&self, arn: &str) -> Result<Option<SecretRecord>, StoreError> {
        let key = arn_key(arn);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(Some(hit));
        }
        let generation = self.cache.generation();
        let arn = arn.to_owned();
        let found = self
            .read(move |conn| find_one(conn, "arn = ?1", &[&arn]))
            .await?;
        if let Some(secret) = &found {
            self.cache.fill(key, secret, generation);
        }
        Ok(found)
    }

    async fn list_secrets(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let (a, r) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            let rows = namespace_rows(conn, &a, &r)?;
            rows.into_iter()
                .map(|row| load_children(conn, row))
                .collect()
        })
        .await
    }

    async fn list_secret_heads(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let (a, r) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            let rows = namespace_rows(conn, &a, &r)?;
            let mut tags: std::collections::HashMap<String, Vec<(String, String)>> =
                Default::default();
            conn.prepare_cached(&sql(schema::SELECT_NAMESPACE_TAGS))
                .and_then(|mut s| {
                    let mut q = s.query(params![a, r])?;
                    while let Some(row) = q.next()? {
                        tags.entry(row.get(0)?)
                            .or_default()
                            .push((row.get(1)?, row.get(2)?));
                    }
                    Ok(())
                })
                .map_err(backend)?;
            let mut replicas: std::collections::HashMap<String, Vec<_>> = Default::default();
            conn.prepare_cached(&sql(schema::SELECT_NAMESPACE_REPLICAS))
                .and_then(|mut s| {
                    let mut q = s.query(params![a, r])?;
                    while let Some(row) = q.next()? {
                        replicas.entry(row.get(0)?).or_default().push((
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                        ));
                    }
                    Ok(())
                })
                .map_err(backend)?;
            schema::heads(rows, (tags, replicas))
        })
        .await
    }

    async fn list_secret_arns_page(
        &self,
        account_id: &str,
        region: &str,
        include_deleted: bool,
        newest_first: bool,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (a, r) = (account_id.to_owned(), region.to_owned());
        let query = if newest_first {
            schema::SECRET_ARNS_PAGE_DESC
        } else {
            schema::SECRET_ARNS_PAGE_ASC
        };
        self.read(move |conn| {
            conn.prepare_cached(&sql(query))
                .and_then(|mut s| {
                    s.query_map(
                        params![a, r, include_deleted, limit, offset as i64],
                        |row| row.get(0),
                    )?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn search_secret_arns(
        &self,
        account_id: &str,
        region: &str,
        text: &str,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (a, r, pattern) = (
            account_id.to_owned(),
            region.to_owned(),
            crate::containing_pattern(text),
        );
        self.read(move |conn| {
            conn.prepare_cached(&sql(&schema::secret_arns_containing("LIKE", newest_first)))
                .and_then(|mut s| {
                    s.query_map(params![a, r, pattern, limit], |row| row.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn delete_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let secret_id = secret.id.as_str();
        let record = secret.clone();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                write_events(&tx, &record)?;
                tx.execute(&sql(schema::DELETE_SECRET), [&record.id])
                    .map_err(backend)?;
                tx.commit().map_err(backend)
            })
            .await;
        self.cache.invalidate(&[secret_id]);
        if result.is_ok() {
            self.changes.publish(secret_id);
        }
        result
    }

    async fn secrets_due_for_purge(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::DUE_FOR_PURGE))
                .and_then(|mut s| {
                    s.query_map(params![now, limit], |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.with(move |conn| {
            conn.execute(
                &sql(schema::INSERT_ACCESS_KEY),
                params![
                    key.access_key_id,
                    key.sealed_secret,
                    key.user_name,
                    key.created_at,
                    key.scope_arn,
                    key.expires_at,
                    key.session_token_hash
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn find_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Option<AccessKeyRecord>, StoreError> {
        Ok(self
            .rows_by(
                schema::SELECT_ACCESS_KEY,
                Some(access_key_id),
                read_access_key,
            )
            .await?
            .pop())
    }

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        self.rows_by(schema::LIST_ACCESS_KEYS, None, read_access_key)
            .await
    }

    async fn delete_access_key(&self, access_key_id: &str) -> Result<bool, StoreError> {
        self.delete_by(schema::DELETE_ACCESS_KEY, access_key_id)
            .await
    }

    async fn create_alias(&self, a: &crate::AliasRecord) -> Result<bool, StoreError> {
        let a = a.clone();
        self.with(move |conn| {
            let n = conn
                .execute(
                    &sql(schema::INSERT_ALIAS),
                    params![
                        a.alias_arn,
                        a.alias_name,
                        a.key_id,
                        a.secret_id,
                        a.created_at,
                        a.updated_at
                    ],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn update_alias(&self, a: &crate::AliasRecord) -> Result<bool, StoreError> {
        let a = a.clone();
        self.with(move |conn| {
            let n = conn
                .execute(
                    &sql(schema::UPDATE_ALIAS),
                    params![a.alias_arn, a.key_id, a.secret_id, a.updated_at],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_alias(&self, alias_arn: &str) -> Result<bool, StoreError> {
        let arn = alias_arn.to_owned();
        self.with(move |conn| {
            let n = conn
                .execute(&sql(schema::DELETE_ALIAS), [&arn])
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn find_alias(&self, alias_arn: &str) -> Result<Option<crate::AliasRecord>, StoreError> {
        Ok(self
            .rows_by(schema::SELECT_ALIAS, Some(alias_arn), read_alias)
            .await?
            .pop())
    }

    async fn list_aliases(&self, arn_prefix: &str) -> Result<Vec<crate::AliasRecord>, StoreError> {
        self.rows_by(schema::LIST_ALIASES, Some(arn_prefix), read_alias)
            .await
    }

    async fn insert_grant(&self, g: &crate::GrantRecord) -> Result<(), StoreError> {
        let g = g.clone();
        self.with(move |conn| {
            match conn.execute(
                &sql(schema::INSERT_GRANT),
                params![
                    g.grant_id,
                    g.secret_id,
                    g.key_arn,
                    g.grantee,
                    g.retiring,
                    g.name,
                    g.token_hash,
                    g.body,
                    g.created_at
                ],
            ) {
                Ok(_) => Ok(()),
                Err(e) => match backend(e) {
                    StoreError::Constraint(_) => Err(StoreError::NameTaken),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn find_grant(&self, grant_id: &str) -> Result<Option<crate::GrantRecord>, StoreError> {
        Ok(self
            .rows_by(schema::SELECT_GRANT, Some(grant_id), read_grant)
            .await?
            .pop())
    }

    async fn grants_of_key(&self, secret_id: &str) -> Result<Vec<crate::GrantRecord>, StoreError> {
        self.rows_by(schema::GRANTS_OF_KEY, Some(secret_id), read_grant)
            .await
    }

    async fn grants_retirable_by(
        &self,
        principal: &str,
    ) -> Result<Vec<crate::GrantRecord>, StoreError> {
        self.rows_by(schema::GRANTS_RETIRABLE_BY, Some(principal), read_grant)
            .await
    }

    async fn delete_grant(&self, grant_id: &str) -> Result<bool, StoreError> {
        self.delete_by(schema::DELETE_GRANT, grant_id).await
    }

    async fn insert_principal(&self, p: &crate::PrincipalRecord) -> Result<(), StoreError> {
        let p = p.clone();
        self.with(move |conn| {
            match conn.execute(
                &sql(schema::INSERT_PRINCIPAL),
                params![p.name, p.kind, p.created_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) => match backend(e) {
                    StoreError::Constraint(_) => Err(StoreError::NameTaken),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn find_principal(
        &self,
        name: &str,
    ) -> Result<Option<crate::PrincipalRecord>, StoreError> {
        Ok(self
            .rows_by(schema::SELECT_PRINCIPAL, Some(name), read_principal)
            .await?
            .pop())
    }

    async fn list_principals(&self) -> Result<Vec<crate::PrincipalRecord>, StoreError> {
        self.rows_by(schema::LIST_PRINCIPALS, None, read_principal)
            .await
    }

    async fn delete_principal(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            tx.execute(&sql(schema::DELETE_ACCESS_KEYS_OF), [&name])
                .map_err(backend)?;
            let n = tx
                .execute(&sql(schema::DELETE_PRINCIPAL), [&name])
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_principal_policy(
        &self,
        p: &crate::PrincipalPolicyRecord,
    ) -> Result<(), StoreError> {
        let p = p.clone();
        self.with(move |conn| {
            match conn.execute(
                &sql(schema::UPSERT_PRINCIPAL_POLICY),
                params![p.principal_name, p.policy_name, p.document, p.updated_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) => match backend(e) {
                    StoreError::Constraint(_) => Err(StoreError::NotFound),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn delete_principal_policy(
        &self,
        principal_name: &str,
        policy_name: &str,
    ) -> Result<bool, StoreError> {
        let (a, b) = (principal_name.to_owned(), policy_name.to_owned());
        self.with(move |conn| {
            let n = conn
                .execute(&sql(schema::DELETE_PRINCIPAL_POLICY), params![a, b])
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_principal_policies(
        &self,
        principal_name: &str,
    ) -> Result<Vec<crate::PrincipalPolicyRecord>, StoreError> {
        self.rows_by(
            schema::LIST_PRINCIPAL_POLICIES,
            Some(principal_name),
            read_principal_policy,
        )
        .await
    }

    async fn append_audit(
        &self,
        entries: Vec<crate::AuditRecord>,
        chain: crate::AuditChain,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.with(move |conn| {
            // The write connection is the lock: one appender at a time, in one transaction.
            let tx = conn.transaction().map_err(backend)?;
            let (mut at, mut prev): (i64, Vec<u8>) = tx
                .prepare_cached(&sql(schema::AUDIT_CHAIN_END))
                .and_then(|mut s| s.query_row([""], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(backend)?
                .unwrap_or_default();
            let chained = entries
                .into_iter()
                .map(|mut e| {
                    at += 1;
                    e.chain = String::new();
                    e.chain_seq = at;
                    e.prev_hash = std::mem::take(&mut prev);
                    e.hash = chain(&e.prev_hash, &e);
                    prev = e.hash.clone();
                    e
                })
                .collect();
            let stored = insert_audit_rows(&tx, chained)?;
            tx.commit().map_err(backend)?;
            Ok(stored)
        })
        .await
    }

    async fn append_audit_chained(
        &self,
        entries: Vec<crate::AuditRecord>,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let stored = insert_audit_rows(&tx, entries)?;
            tx.commit().map_err(backend)?;
            Ok(stored)
        })
        .await
    }

    async fn last_audit(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.read(|conn| {
            conn.query_row(&sql(schema::LAST_AUDIT), [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn list_audit(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::LIST_AUDIT))
                .and_then(|mut s| {
                    s.query_map(params![after_seq, limit], read_audit)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn audit_chain_end(&self, chain: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let chain = chain.to_owned();
        self.read(move |conn| {
            conn.query_row(&sql(schema::AUDIT_CHAIN_END), [chain], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_audit_chain(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        let chain = chain.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::LIST_AUDIT_CHAIN))
                .and_then(|mut s| {
                    s.query_map(params![chain, after, limit], read_audit)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn audit_chain_ends(&self) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::AUDIT_CHAIN_ENDS))
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                            r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn audit_chain_starts(&self) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::AUDIT_CHAIN_STARTS))
                .and_then(|mut s| s.query_map([], read_audit)?.collect::<Result<Vec<_>, _>>())
                .map_err(backend)
        })
        .await
    }

    async fn rotations_due(&self, now: Timestamp, limit: u32) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let arns: Vec<String> = conn
                .prepare_cached(&sql(schema::ROTATIONS_DUE))
                .and_then(|mut s| {
                    s.query_map(params![now, limit], |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)?;
            Ok(crate::dedup_in_order(arns))
        })
        .await
    }

    async fn open_rotations(
        &self,
        account_id: &str,
        region: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (account, region) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::OPEN_ROTATIONS))
                .and_then(|mut s| {
                    s.query_map(params![account, region, limit], |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn scheduled_rotations(
        &self,
        account_id: &str,
        region: &str,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String, Timestamp)>, StoreError> {
        let (account, region) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::SCHEDULED_ROTATIONS))
                .and_then(|mut s| {
                    s.query_map(params![account, region, until, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)
        })
        .await
    }

    async fn next_rotation_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(|conn| {
            conn.query_row(&sql(schema::NEXT_ROTATION_DUE), [], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn rotation_history(
        &self,
        secret_id: &str,
        limit: u32,
    ) -> Result<Vec<RotationState>, StoreError> {
        let id = secret_id.to_owned();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&sql(&schema::select_rotation_history()))
                .and_then(|mut s| {
                    s.query_map(params![id, limit], read_rotation_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)?;
            rows.into_iter()
                .map(|row| row.into_state(&id, RotationPolicy::default()))
                .collect()
        })
        .await
    }

    async fn insert_rotator(&self, rotator: &RotatorRecord) -> Result<(), StoreError> {
        let r = schema::RotatorRow::from_record(rotator);
        self.with(move |conn| {
            match conn.execute(
                &sql(schema::INSERT_ROTATOR),
                params![
                    r.name,
                    r.kind,
                    r.target,
                    r.sealed_signing_secret,
                    r.timeout_ms,
                    r.created_at,
                    r.execution_policy
                ],
            ) {
                Ok(_) => Ok(()),
                Err(e) => match backend(e) {
                    StoreError::Constraint(_) => Err(StoreError::NameTaken),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn find_rotator(&self, name: &str) -> Result<Option<RotatorRecord>, StoreError> {
        self.rows_by(schema::SELECT_ROTATOR, Some(name), read_rotator)
            .await?
            .pop()
            .map(schema::RotatorRow::into_record)
            .transpose()
    }

    async fn list_rotators(&self) -> Result<Vec<RotatorRecord>, StoreError> {
        self.rows_by(schema::LIST_ROTATORS, None, read_rotator)
            .await?
            .into_iter()
            .map(schema::RotatorRow::into_record)
            .collect()
    }

    async fn delete_rotator(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_by(schema::DELETE_ROTATOR, name).await
    }

    async fn list_events(
        &self,
        after_seq: i64,
        limit: u32,
        secret_arn: Option<&str>,
    ) -> Result<Vec<crate::EventRecord>, StoreError> {
        let arn = secret_arn.map(str::to_owned);
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(&sql(if arn.is_some() {
                    schema::LIST_EVENTS_OF_SECRET
                } else {
                    schema::LIST_EVENTS
                }))
                .map_err(backend)?;
            let rows = match &arn {
                Some(arn) => statement.query_map(params![after_seq, limit, arn], read_event),
                None => statement.query_map(params![after_seq, limit], read_event),
            };
            rows.and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(backend)
        })
        .await
    }

    async fn find_event(&self, seq: i64) -> Result<Option<crate::EventRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&sql(schema::SELECT_EVENT))
                .and_then(|mut s| {
                    s.query_map([seq], read_event)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map(|mut v| v.pop())
                .map_err(backend)
        })
        .await
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row(&sql(schema::LAST_EVENT_SEQ), [], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn insert_subscription(&self, s: &crate::SubscriptionRecord) -> Result<(), StoreError> {
        let s = s.clone();
        self.with(move |conn| {
            conn.execute(
                &sql(schema::INSERT_SUBSCRIPTION),
                params![
                    s.id,
                    s.account_id,
                    s.region,
                    s.url,
                    s.sealed_signing_secret,
                    s.filter,
                    s.cursor_seq,
                    s.created_at
                ],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<crate::SubscriptionRecord>, StoreError> {
        self.rows_by(schema::LIST_SUBSCRIPTIONS, None, |r| {
            Ok(crate::SubscriptionRecord {
                id: r.get(0)?,
                account_id: r.get(1)?,
                region: r.get(2)?,
                url: r.get(3)?,
                sealed_signing_secret: r.get(4)?,
                filter: r.get(5)?,
                cursor_seq: r.get(6)?,
                created_at: r.get(7)?,
            })
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_by(schema::DELETE_SUBSCRIPTION, id).await
    }

    async fn advance_subscription(&self, id: &str, seq: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            conn.execute(&sql(schema::ADVANCE_SUBSCRIPTION), params![id, seq])
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn insert_dead_letter(&self, d: &crate::DeadLetterRecord) -> Result<(), StoreError> {
        let d = d.clone();
        self.with(move |conn| {
            conn.execute(
                &sql(schema::INSERT_DEAD_LETTER),
                params![
                    d.subscription_id,
                    d.seq,
                    d.attempts,
                    d.last_error,
                    d.failed_at
                ],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn list_dead_letters(&self) -> Result<Vec<crate::DeadLetterRecord>, StoreError> {
        self.rows_by(schema::LIST_DEAD_LETTERS, None, |r| {
            Ok(crate::DeadLetterRecord {
                subscription_id: r.get(0)?,
                seq: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                failed_at: r.get(4)?,
            })
        })
        .await
    }

    async fn delete_dead_letter(
        &self,
        subscription_id: &str,
        seq: i64,
    ) -> Result<bool, StoreError> {
        let id = subscription_id.to_owned();
        self.with(move |conn| {
            conn.execute(&sql(schema::DELETE_DEAD_LETTER), params![id, seq])
                .map(|n| n > 0)
                .map_err(backend)
        })
        .await
    }

    async fn delete_events_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.with(move |conn| {
            conn.execute(&sql(schema::DELETE_EVENTS_BEFORE), [before])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn upsert_consumers(
        &self,
        consumers: &[ConsumerRecord],
    ) -> Result<ConsumerWrite, StoreError> {
        let rows: Vec<_> = consumers
            .iter()
            .map(schema::ConsumerRow::from_record)
            .collect();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            {
                let mut statement = tx
                    .prepare_cached(&sql(schema::UPSERT_CONSUMER))
                    .map_err(backend)?;
                let mut exists = tx
                    .prepare_cached(&sql(schema::CONSUMER_EXISTS))
                    .map_err(backend)?;
                for (index, r) in rows.iter().enumerate() {
                    let written = statement
                        .execute(params![
                            r.secret_id,
                            r.application,
                            r.instance_id,
                            r.current_version,
                            r.accepted_versions,
                            r.last_seen_at,
                            r.lease_expires_at,
                            r.principal
                        ])
                        .map_err(backend)?;
                    if written == 0
                        && exists
                            .exists(params![r.secret_id, r.application, r.instance_id])
                            .map_err(backend)?
                    {
                        // Dropping the transaction rolls back what the batch wrote so far.
                        return Ok(ConsumerWrite::OwnedByAnother(index));
                    }
                }
            }
            tx.commit().map_err(backend)?;
            Ok(ConsumerWrite::Written)
        })
        .await
    }

    async fn list_consumers(&self, secret_id: &str) -> Result<Vec<ConsumerRecord>, StoreError> {
        self.rows_by(schema::LIST_CONSUMERS, Some(secret_id), read_consumer)
            .await?
            .into_iter()
            .map(schema::ConsumerRow::into_record)
            .collect()
    }

    async fn delete_consumers_expired(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.with(move |conn| {
            conn.execute(&sql(schema::DELETE_CONSUMERS_EXPIRED), [before])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn record_plain_read(&self, secret_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let id = secret_id.to_owned();
        self.with(move |conn| {
            conn.execute(&sql(schema::RECORD_PLAIN_READ), params![id, at])
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn record_plain_reads(&self, reads: &[(String, Timestamp)]) -> Result<(), StoreError> {
        let reads = reads.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            {
                let mut record = tx
                    .prepare_cached(&sql(schema::RECORD_PLAIN_READ))
                    .map_err(backend)?;
                for (id, at) in &reads {
                    record.execute(params![id, at]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn last_plain_read(&self, secret_id: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .rows_by(schema::SELECT_PLAIN_READ, Some(secret_id), |r| r.get(0))
            .await?
            .pop())
    }

    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn operational_counts(
        &self,
        now: Timestamp,
    ) -> Result<crate::OperationalCounts, StoreError> {
        self.read(move |conn| {
            let one = |statement: &str| -> Result<i64, StoreError> {
                conn.query_row(&sql(statement), [], |r| r.get(0))
                    .map_err(backend)
            };
            let rotations = conn
                .prepare_cached(schema::ROTATION_COUNTS)
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend)?;
            let (consumers_live, consumers_lagging) = conn
                .query_row(&sql(schema::CONSUMER_COUNTS), [now], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(backend)?;
            Ok(crate::OperationalCounts {
                rotations,
                consumers_live,
                consumers_lagging,
                dead_letters: one(schema::DEAD_LETTER_COUNT)?,
                delivery_backlog: one(schema::DELIVERY_BACKLOG)?,
                pool: None,
            })
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.read(|conn| {
            // One read transaction: WAL gives it one consistent view while writers go on.
            let tx = conn.unchecked_transaction().map_err(backend)?;
            let schema_version = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let mut tables = Vec::with_capacity(SNAPSHOT_TABLES.len());
            for name in SNAPSHOT_TABLES {
                let mut statement = tx
                    .prepare(&format!("SELECT * FROM {name}"))
                    .map_err(backend)?;
                let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
                let width = columns.len();
                let rows = statement
                    .query_map([], |row| {
                        (0..width)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    ValueRef::Null => Cell::Null,
                                    ValueRef::Integer(n) => Cell::Int(n),
                                    ValueRef::Text(t) => {
                                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                                    ValueRef::Real(_) => {
                                        return Err(rusqlite::Error::InvalidColumnType(
                                            i,
                                            "real".into(),
                                            rusqlite::types::Type::Real,
                                        ));
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Cell>>>()
                    })
                    .map_err(backend)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(backend)?;
                tables.push(TableRows {
                    name: (*name).to_owned(),
                    columns,
                    rows,
                });
            }
            tx.commit().map_err(backend)?;
            Ok(Snapshot {
                schema_version,
                tables,
            })
        })
        .await
    }

    async fn restore_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let version: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            snapshot.check(version)?;
            for name in SNAPSHOT_TABLES {
                let rows: i64 = tx
                    .query_row(&format!("SELECT COUNT(*) FROM {name}"), [], |r| r.get(0))
                    .map_err(backend)?;
                if rows > 0 {
                    return Err(crate::snapshot::not_empty(name, rows));
                }
            }
            for table in &snapshot.tables {
                let per = rows_per_insert(table.columns.len());
                for chunk in table.rows.chunks(per) {
                    let statement =
                        sql(&insert_statement(&table.name, &table.columns, chunk.len()));
                    let params: Vec<rusqlite::types::Value> = chunk
                        .iter()
                        .flatten()
                        .map(|cell| match cell {
                            Cell::Null => rusqlite::types::Value::Null,
                            Cell::Int(n) => rusqlite::types::Value::Integer(*n),
                            Cell::Text(t) => rusqlite::types::Value::Text(t.clone()),
                            Cell::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
                        })
                        .collect();
                    tx.prepare_cached(&statement)
                        .and_then(|mut st| st.execute(rusqlite::params_from_iter(params)))
                        .map_err(|e| match backend(e) {
                            StoreError::Constraint(c) => {
                                StoreError::Corrupt(format!("restoring table {}: {c}", table.name))
                            }
                            other => other,
                        })?;
                }
            }
            tx.commit().map_err(backend)?;
            Ok(())
        })
        .await?;
        self.cache.clear();
        self.changes.publish_all();
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row(schema::SCHEMA_VERSION, [], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.with(move |conn| {
            conn.query_row(
                &sql(schema::ACQUIRE_LEASE),
                params![key, holder, now, ttl_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn release_lease(&self, key: &str, holder: &str, token: i64) -> Result<(), StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.with(move |conn| {
            conn.execute(&sql(schema::RELEASE_LEASE), params![key, holder, token])
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn save_secret_fenced(
        &self,
        secret: &SecretRecord,
        fence: &crate::Fence,
    ) -> Result<i64, StoreError> {
        let id = secret.id.clone();
        let secret = secret.clone();
        let fence = fence.clone();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let held: Option<i64> = tx
                    .query_row(
                        &sql(schema::CHECK_FENCE),
                        params![fence.key, fence.holder, fence.token],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                if held.is_none() {
                    return Err(StoreError::FencedOut);
                }
                let revision = save_in(&tx, &secret)?;
                tx.commit().map_err(backend)?;
                Ok(revision)
            })
            .await;
        self.cache.invalidate(&[&id]);
        if result.is_ok() {
            self.changes.publish(&id);
        }
        result
    }

    async fn list_sealed(
        &self,
        kind: SealedKind,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError> {
        let after = after.to_owned();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(&sql(&kind.list_statement()))
                .map_err(backend)?;
            let rows = statement
                .query_map(params![after, limit], |r| {
                    Ok(SealedBlob {
                        id: r.get(0)?,
                        blob: r.get(1)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn replace_sealed(
        &self,
        kind: SealedKind,
        replacements: &[SealedReplacement],
    ) -> Result<u64, StoreError> {
        let items = replacements.to_vec();
        let ids: Vec<String> = items.iter().map(|r| r.id.clone()).collect();
        let result = self
            .with(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let mut replaced = 0u64;
                {
                    let mut statement = tx
                        .prepare_cached(&sql(&kind.replace_statement()))
                        .map_err(backend)?;
                    for r in &items {
                        replaced += statement
                            .execute(params![r.id, r.old, r.new])
                            .map_err(backend)? as u64;
                    }
                }
                tx.commit().map_err(backend)?;
                Ok(replaced)
            })
            .await;
        if kind == SealedKind::SecretDataKey {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            self.cache.invalidate(&refs);
        }
        result
    }

    async fn meta_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            conn.query_row(&sql(root_keys::SELECT_META), params![name], |r| r.get(0))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn init_meta_value(
        &self,
        name: &str,
        value: &[u8],
        now: Timestamp,
    ) -> Result<Vec<u8>, StoreError> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.with(move |conn| {
            conn.execute(&sql(root_keys::INIT_META), params![name, value, now])
                .map_err(backend)?;
            conn.query_row(&sql(root_keys::SELECT_META), params![name], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn root_key_state(&self, primary: &str) -> Result<RootKeyStateRecord, StoreError> {
        let primary = primary.to_owned();
        let found = self
            .read(|conn| {
                conn.query_row(
                    &sql(root_keys::SELECT_ROOT_KEY_STATE),
                    [],
                    read_root_key_state,
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        if let Some(state) = found {
            return Ok(state);
        }
        self.with(move |conn| {
            conn.execute(&sql(root_keys::INIT_ROOT_KEY_STATE), params![primary])
                .map_err(backend)?;
            conn.query_row(
                &sql(root_keys::SELECT_ROOT_KEY_STATE),
                [],
                read_root_key_state,
            )
            .map_err(backend)
        })
        .await
    }

    async fn save_root_key_state(&self, state: &RootKeyStateRecord) -> Result<bool, StoreError> {
        let s = state.clone();
        self.with(move |conn| {
            let n = conn
                .execute(
                    &sql(root_keys::SAVE_ROOT_KEY_STATE),
                    params![
                        s.revision,
                        s.primary_key,
                        s.phase,
                        s.new_key,
                        root_keys::join(&s.old_keys),
                        root_keys::join(&s.retired_keys),
                        s.started_at,
                        s.phase_at,
                        s.rewrapped,
                        s.remaining,
                        s.note
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn heartbeat_node(&self, node: &NodeRecord, now: Timestamp) -> Result<(), StoreError> {
        let n = node.clone();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO nodes (node_id, address, started_at, seen_at, keys_held, wraps_with) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (node_id) DO UPDATE SET \
                 address = excluded.address, started_at = excluded.started_at, \
                 seen_at = excluded.seen_at, keys_held = excluded.keys_held, \
                 wraps_with = excluded.wraps_with",
                params![
                    n.node_id,
                    n.address,
                    n.started_at,
                    now,
                    root_keys::join(&n.keys_held),
                    n.wraps_with
                ],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn remove_node(&self, node_id: &str) -> Result<(), StoreError> {
        self.delete_by(root_keys::DELETE_NODE, node_id)
            .await
            .map(drop)
    }

    async fn list_nodes(
        &self,
        now: Timestamp,
        forget_after_ms: i64,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        self.with(move |conn| {
            conn.execute(
                &sql(root_keys::DELETE_NODES_UNSEEN),
                params![now - forget_after_ms],
            )
            .map_err(backend)?;
            let mut statement = conn
                .prepare_cached(
                    "SELECT node_id, address, started_at, keys_held, wraps_with, ?1 - seen_at \
                     FROM nodes ORDER BY node_id",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![now], |r| {
                    Ok(NodeRecord {
                        node_id: r.get(0)?,
                        address: r.get(1)?,
                        started_at: r.get(2)?,
                        keys_held: root_keys::split(&r.get::<_, String>(3)?),
                        wraps_with: r.get(4)?,
                        age_ms: r.get(5)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }
}

fn read_root_key_state(r: &Row<'_>) -> rusqlite::Result<RootKeyStateRecord> {
    Ok(RootKeyStateRecord {
        revision: r.get(0)?,
        primary_key: r.get(1)?,
        phase: r.get(2)?,
        new_key: r.get(3)?,
        old_keys: root_keys::split(&r.get::<_, String>(4)?),
        retired_keys: root_keys::split(&r.get::<_, String>(5)?),
        started_at: r.get(6)?,
        phase_at: r.get(7)?,
        rewrapped: r.get(8)?,
        remaining: r.get(9)?,
        note: r.get(10)?,
    })
}

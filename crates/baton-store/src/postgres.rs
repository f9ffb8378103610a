//! The PostgreSQL engine, for several Baton nodes sharing one database.
//!
//! Migrations take a transaction-scoped advisory lock, so nodes starting together apply each
//! migration once. The pool is bounded; statements are prepared and cached per connection.
//!
//! Each node keeps a cache of the secrets it read ([`CheckedCache`]), which nothing invalidates:
//! every read by name or ARN first asks the database for the secret's id, revision and the
//! database's incarnation (one indexed row, one round trip), and answers from the cache only if
//! all three are the cached record's. Every write of a secret raises its revision in the
//! transaction that writes it (the guarded `UPDATE` of [`Store::save_secret`], or the bump of a
//! re-wrapped data key), so a write committed on any node before the read began is seen.
//! `store_incarnation` is this engine's alone (one row, created beside `schema_migrations`,
//! not in backups): it changes when a migration is applied or a snapshot restored, the two
//! writes that can bring back an id at a revision it had before with other content. A miss is
//! read in one REPEATABLE READ snapshot, so a cached record's revision is its content's.
//! Checks that arrive together go to the database as one statement ([`check`]).

mod check;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::rotation::{RotationPolicy, RotationState};
use baton_core::{SecretRecord, Timestamp};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::snapshot::{
    Cell, SNAPSHOT_TABLES, Snapshot, TableRows, insert_statement, rows_per_insert,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::cache::{self, CheckedCache};
use crate::root_keys;
use crate::schema::{self, SecretRow};
use crate::{
    AccessKeyRecord, ChangeFeed, ConsumerRecord, ConsumerWrite, NodeRecord, RootKeyStateRecord,
    RotatorRecord, SealedBlob, SealedKind, SealedReplacement, Store, StoreError,
};

/// Connections the pool holds at most.
const POOL_SIZE_MAX: usize = 16;
/// An arbitrary constant naming Baton's migration lock.
const MIGRATION_LOCK_KEY: i64 = 0x6261_746f_6e00;

/// The PostgreSQL engine.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Changes committed through this process. Changes other nodes commit are not seen here
    /// yet: cross-node notification comes with multi-node support.
    changes: Arc<ChangeFeed>,
    cache: Arc<CheckedCache>,
    checker: Arc<check::Checker>,
}

/// The database's incarnation, which a cached record must share.
const SELECT_INCARNATION: &str = "SELECT value FROM store_incarnation";
/// Gives the database a new incarnation: every node's cached records stop matching.
const NEW_INCARNATION: &str = "INSERT INTO store_incarnation (id, value) \
    VALUES (1, md5(random()::text || clock_timestamp()::text)) \
    ON CONFLICT (id) DO UPDATE SET value = excluded.value";

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error()
        && db.code().code().starts_with("23")
    {
        return StoreError::Constraint(db.message().to_owned());
    }
    StoreError::Backend(baton_dbtls::error_chain(&e))
}

/// The newest migration applied, read inside a transaction.
async fn migrated_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .map_err(backend)?
        .get(0))
}

/// One column of a row as a snapshot cell, by the column's type.
fn cell_of(table: &str, row: &Row, i: usize) -> Result<Cell, StoreError> {
    let ty = row.columns()[i].type_();
    let read = |e: tokio_postgres::Error| {
        StoreError::Corrupt(format!(
            "table {table} column {}: {e}",
            row.columns()[i].name()
        ))
    };
    let cell = match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(read)?
            .map(Cell::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(read)?
            .map(|n| Cell::Int(n.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(read)?
            .map(|n| Cell::Int(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(read)?
            .map(|b| Cell::Int(b.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(i)
            .map_err(read)?
            .map(Cell::Text),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(read)?
            .map(Cell::Blob),
        ref other => {
            return Err(StoreError::Corrupt(format!(
                "table {table} column {} has type {other}, which backups do not carry",
                row.columns()[i].name()
            )));
        }
    };
    Ok(cell.unwrap_or(Cell::Null))
}

/// A snapshot cell as a parameter for a column of type `ty`.
fn sql_value(
    table: &str,
    cell: &Cell,
    ty: &Type,
) -> Result<Box<dyn ToSql + Sync + Send>, StoreError> {
    let mismatch = || {
        StoreError::Corrupt(format!(
            "table {table}: a backup cell does not fit a column of type {ty}"
        ))
    };
    Ok(match (cell, ty) {
        (Cell::Null, &Type::INT8) => Box::new(None::<i64>),
        (Cell::Null, &Type::INT4) => Box::new(None::<i32>),
        (Cell::Null, &Type::INT2) => Box::new(None::<i16>),
        (Cell::Null, &Type::BOOL) => Box::new(None::<bool>),
        (Cell::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (Cell::Null, _) => Box::new(None::<String>),
        (Cell::Int(n), &Type::INT8) => Box::new(*n),
        (Cell::Int(n), &Type::INT4) => Box::new(i32::try_from(*n).map_err(|_| mismatch())?),
        (Cell::Int(n), &Type::INT2) => Box::new(i16::try_from(*n).map_err(|_| mismatch())?),
        (Cell::Int(n), &Type::BOOL) => Box::new(*n != 0),
        (Cell::Text(t), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
            Box::new(t.clone())
        }
        (Cell::Blob(b), &Type::BYTEA) => Box::new(b.clone()),
        _ => return Err(mismatch()),
    })
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!("connection pool: {}", baton_dbtls::error_chain(&e)))
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a `key=value` string, with libpq's `sslmode`
    /// and `sslrootcert`) and applies pending migrations, with the default cache of secrets.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_cache(url, cache::CACHE_BYTES_DEFAULT).await
    }

    /// [`PostgresStore::connect`] with a cache of secrets of about `cache_bytes` (at least
    /// [`crate::CACHE_BYTES_MIN`]).
    pub async fn connect_with_cache(url: &str, cache_bytes: u64) -> Result<Self, StoreError> {
        let pg = baton_dbtls::Postgres::from_connection_string(url)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let listen_with = (pg.config.clone(), pg.tls.clone());
        let mode = pg.settings.mode;
        let manager = Manager::from_config(
            pg.config,
            pg.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE_MAX)
            .build()
            .map_err(|e| StoreError::Backend(format!("connection pool: {e}")))?;
        let store = PostgresStore {
            checker: Arc::new(check::Checker::start(pool.clone())),
            pool,
            changes: Arc::new(ChangeFeed::default()),
            cache: Arc::new(CheckedCache::with_bytes(cache_bytes)),
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Backend(reason) => {
                StoreError::Backend(format!("PostgreSQL (sslmode={}): {reason}", mode.name()))
            }
            other => other,
        })?;
        tokio::spawn(follow_notifications(listen_with, store.changes.clone()));
        Ok(store)
    }

    /// Runs one query (prepared once per connection) and maps every row.
    async fn rows<T>(
        &self,
        statement: &str,
        args: &[&(dyn ToSql + Sync)],
        map: impl Fn(&Row) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached(statement).await.map_err(backend)?;
        Ok(client
            .query(&statement, args)
            .await
            .map_err(backend)?
            .iter()
            .map(map)
            .collect())
    }

    /// Runs one statement and returns how many rows it changed.
    async fn changed(
        &self,
        statement: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.execute(statement, args).await.map_err(backend)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS store_incarnation (id INTEGER PRIMARY KEY CHECK (id = 1), \
             value TEXT NOT NULL)",
        )
        .await
        .map_err(backend)?;
        let mut applied_any = tx
            .query_opt(SELECT_INCARNATION, &[])
            .await
            .map_err(backend)?
            .is_none();
        for (version, body) in schema::MIGRATIONS {
            let applied = tx
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(backend)?;
            if applied.is_none() {
                let body = body
                    .replace("{blob}", "BYTEA")
                    .replace("{bigint}", "BIGINT")
                    .replace("{serial}", "BIGSERIAL PRIMARY KEY")
                    .replace("{audit_seq}", schema::AUDIT_SEQ_PG);
                tx.batch_execute(&body).await.map_err(backend)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(backend)?;
                applied_any = true;
            }
        }
        if applied_any {
            tx.execute(NEW_INCARNATION, &[]).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    /// The secret a lookup key names, from this node's cache when the database confirms that
    /// the cached record is current (the checker returns the id, revision and incarnation that
    /// `check` has now), otherwise read whole in one snapshot and cached.
    async fn find_checked(
        &self,
        key: String,
        where_clause: &str,
        check: check::CheckKey,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<SecretRecord>, StoreError> {
        if let Some(cached) = self.cache.get(&key) {
            match self.checker.check(check).await? {
                None => {
                    self.cache.remove(&key);
                    return Ok(None);
                }
                Some(now)
                    if cached.is_current(&now.id, now.revision, now.incarnation.as_deref()) =>
                {
                    return Ok(Some(cached.record.clone()));
                }
                Some(_) => {}
            }
        }
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let incarnation = async {
            let statement = tx
                .prepare_cached(SELECT_INCARNATION)
                .await
                .map_err(backend)?;
            tx.query_opt(&statement, &[]).await.map_err(backend)
        };
        let (incarnation, found) =
            tokio::try_join!(incarnation, find_one(&tx, where_clause, args))?;
        tx.commit().await.map_err(backend)?;
        match (&found, incarnation) {
            (Some(record), Some(row)) => self.cache.fill(key, record, row.get(0)),
            _ => self.cache.remove(&key),
        }
        Ok(found)
    }
}

fn read_secret_row(r: &Row) -> SecretRow {
    SecretRow {
        id: r.get(0),
        account_id: r.get(1),
        region: r.get(2),
        name: r.get(3),
        arn: r.get(4),
        description: r.get(5),
        kms_key_id: r.get(6),
        resource_policy: r.get(7),
        rotation_enabled: r.get(8),
        rotation_lambda_arn: r.get(9),
        rotation_after_days: r.get(10),
        rotation_duration: r.get(11),
        rotation_schedule: r.get(12),
        rotation_rules_set: r.get(13),
        last_rotated_at: r.get(14),
        created_at: r.get(15),
        last_changed_at: r.get(16),
        last_accessed_at: r.get(17),
        deleted_at: r.get(18),
        purge_at: r.get(19),
        wrapped_data_key: r.get(20),
        revision: r.get(21),
        key_meta: r.get(22),
        rotation_configured_by: r.get(23),
        rotation_database_clone: r.get(24),
        tagged: r.get(25),
    }
}

/// Which secret the child tables are read for: the one with this id, or the one a `WHERE`
/// clause on `secrets` finds (with the same arguments as that clause).
#[derive(Clone, Copy)]
enum Owner<'a> {
    Id,
    Where(&'a str),
}

impl Owner<'_> {
    /// `statement` (keyed by `secret_id = $1`) for this owner. Keyed by a clause, it also
    /// returns each row's `secret_id` as its last column, so that the caller can check that
    /// every row belongs to the secret it found.
    fn keyed(self, statement: &str) -> String {
        match self {
            Owner::Id => statement.to_owned(),
            Owner::Where(clause) => {
                let column = if statement.contains("secret_versions v ") {
                    "v.secret_id"
                } else {
                    "secret_id"
                };
                statement
                    .replacen(" FROM ", &format!(", {column} FROM "), 1)
                    .replace(
                        "secret_id = $1",
                        &format!("secret_id = (SELECT id FROM secrets WHERE {clause})"),
                    )
            }
        }
    }
}

/// A child table's rows, with the secret ids they belong to (when keyed by a clause).
type Owned<T> = (Vec<T>, Vec<String>);

/// Runs a child statement for `owner` with these arguments and maps every row.
async fn child_rows<T>(
    client: &impl GenericClient,
    owner: Owner<'_>,
    statement: &str,
    args: &[&(dyn ToSql + Sync)],
    map: impl Fn(&Row) -> T,
) -> Result<Owned<T>, StoreError> {
    let statement = client
        .prepare_cached(&owner.keyed(statement))
        .await
        .map_err(backend)?;
    let rows = client.query(&statement, args).await.map_err(backend)?;
    let owners = match owner {
        Owner::Id => Vec::new(),
        Owner::Where(_) => rows.iter().map(|r| r.get(r.len() - 1)).collect(),
    };
    Ok((rows.iter().map(map).collect(), owners))
}

struct Children {
    versions: Owned<schema::VersionRow>,
    tags: Owned<(String, String)>,
    replicas: Owned<(String, Option<String>, Option<i64>)>,
    policy: Owned<schema::PolicyRow>,
    rotation: Owned<schema::RotationRow>,
    next_rotation_at: Owned<i64>,
}

impl Children {
    /// Whether every row belongs to this secret: false when a write between the statements
    /// gave the clause another secret (a name deleted and taken again).
    fn belong_to(&self, id: &str) -> bool {
        [
            &self.versions.1,
            &self.tags.1,
            &self.replicas.1,
            &self.policy.1,
            &self.rotation.1,
            &self.next_rotation_at.1,
        ]
        .iter()
        .all(|owners| owners.iter().all(|o| o == id))
    }

    fn assemble(self, row: SecretRow) -> Result<SecretRecord, StoreError> {
        row.into_record(
            self.versions.0,
            self.tags.0,
            self.replicas.0,
            self.policy.0.into_iter().next(),
            self.rotation.0.into_iter().next(),
            self.next_rotation_at.0.into_iter().next(),
        )
    }
}

/// A secret's six child tables. Issued together, the queries are pipelined on the one
/// connection: one round trip instead of six.
async fn children(
    client: &impl GenericClient,
    owner: Owner<'_>,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Children, StoreError> {
    let (versions, tags, replicas, policy, rotation, next_rotation_at) = tokio::try_join!(
        child_rows(
            client,
            owner,
            schema::SELECT_VERSIONS_AND_LABELS,
            args,
            |r| { (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)) }
        ),
        child_rows(client, owner, schema::SELECT_TAGS, args, |r| {
            (r.get(0), r.get(1))
        }),
        child_rows(client, owner, schema::SELECT_REPLICAS, args, |r| {
            (r.get(0), r.get(1), r.get(2))
        }),
        child_rows(client, owner, schema::SELECT_POLICY, args, |r| {
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
        }),
        child_rows(
            client,
            owner,
            schema::SELECT_ROTATION,
            args,
            read_rotation_row
        ),
        child_rows(client, owner, schema::SELECT_SCHEDULE, args, |r| r.get(0)),
    )?;
    Ok(Children {
        versions,
        tags,
        replicas,
        policy,
        rotation,
        next_rotation_at,
    })
}

async fn load_children(
    client: &impl GenericClient,
    row: SecretRow,
) -> Result<SecretRecord, StoreError> {
    let id = row.id.clone();
    children(client, Owner::Id, &[&id]).await?.assemble(row)
}

/// Whether `name` is free in the namespace for a secret other than `except_id`.
async fn name_is_free(
    client: &impl GenericClient,
    account_id: &str,
    region: &str,
    name: &str,
    except_id: &str,
) -> Result<bool, StoreError> {
    let in_secrets = client
        .query_opt(schema::NAME_IN_SECRETS, &[&account_id, &region, &name])
        .await
        .map_err(backend)?
        .map(|r| r.get::<_, String>(0));
    let in_replicas = client
        .query_opt(
            schema::NAME_IN_REPLICAS,
            &[&account_id, &region, &name, &except_id],
        )
        .await
        .map_err(backend)?;
    Ok(in_secrets.is_none_or(|id| id == except_id) && in_replicas.is_none())
}

/// The one secret a `WHERE` clause on `secrets` finds, in one round trip: its row and its
/// child tables (each keyed by the same clause) are pipelined together.
async fn find_one(
    client: &impl GenericClient,
    where_clause: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Option<SecretRecord>, StoreError> {
    let query = format!(
        "SELECT {} FROM secrets WHERE {where_clause}",
        schema::SECRET_COLUMNS
    );
    let row = async {
        let statement = client.prepare_cached(&query).await.map_err(backend)?;
        client.query_opt(&statement, args).await.map_err(backend)
    };
    // `biased`: the row is sent first, so children are never older than the row's revision.
    let (row, children) = tokio::try_join!(
        biased;
        row,
        children(client, Owner::Where(where_clause), args)
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let row = read_secret_row(&row);
    if children.belong_to(&row.id) {
        Ok(Some(children.assemble(row)?))
    } else {
        Ok(Some(load_children(client, row).await?))
    }
}

/// Appends one batch to the shared audit chain in one transaction of two round trips: BEGIN,
/// the lock and the chain's end pipelined, then the batch's insert and COMMIT pipelined. The
/// caller rolls back if it fails.
async fn append_audit_in(
    client: &deadpool_postgres::Client,
    entries: Vec<crate::AuditRecord>,
    chain: crate::AuditChain,
) -> Result<Vec<crate::AuditRecord>, StoreError> {
    let lock = client
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await
        .map_err(backend)?;
    let end = client
        .prepare_cached(schema::AUDIT_CHAIN_END)
        .await
        .map_err(backend)?;
    // Prepared first: executing a statement's text would prepare it in a round trip of its
    // own, and the COMMIT sent meanwhile would run before the insert.
    let insert = client
        .prepare_cached(schema::INSERT_AUDIT_BATCH_PG)
        .await
        .map_err(backend)?;
    // `biased`: the statements must be sent in this order.
    let (_, _, end) = tokio::try_join!(
        biased;
        async { client.batch_execute("BEGIN").await.map_err(backend) },
        async {
            client
                .execute(&lock, &[&AUDIT_LOCK_KEY])
                .await
                .map_err(backend)
        },
        async { client.query_opt(&end, &[&""]).await.map_err(backend) },
    )?;
    let (mut at, mut prev): (i64, Vec<u8>) = end.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
    let mut stored = Vec::with_capacity(entries.len());
    for mut e in entries {
        at += 1;
        e.chain = String::new();
        e.chain_seq = at;
        e.prev_hash = std::mem::take(&mut prev);
        e.hash = chain(&e.prev_hash, &e);
        prev = e.hash.clone();
        stored.push(e);
    }
    // The insert and COMMIT pipelined: a failed insert makes PostgreSQL answer the COMMIT
    // with a rollback.
    let (seqs, _) = tokio::try_join!(
        biased;
        insert_audit_rows(client, &insert, &stored),
        async { client.batch_execute("COMMIT").await.map_err(backend) }
    )?;
    assign_seqs(&mut stored, seqs)?;
    Ok(stored)
}

/// Inserts chained entries in one statement (a round trip per entry would make every audited
/// request wait for as many round trips as its batch has entries), returning each row's
/// `(chain_seq, seq)`.
async fn insert_audit_rows(
    client: &deadpool_postgres::Client,
    insert: &tokio_postgres::Statement,
    stored: &[crate::AuditRecord],
) -> Result<Vec<(i64, i64)>, StoreError> {
    fn column<T>(stored: &[crate::AuditRecord], f: impl Fn(&crate::AuditRecord) -> T) -> Vec<T> {
        stored.iter().map(f).collect()
    }
    let ats = column(stored, |e| e.at);
    let request_ids = column(stored, |e| e.request_id.clone());
    let principals = column(stored, |e| e.principal.clone());
    let access_key_ids = column(stored, |e| e.access_key_id.clone());
    let actions = column(stored, |e| e.action.clone());
    let resources = column(stored, |e| e.resource.clone());
    let decisions = column(stored, |e| e.decision.clone());
    let outcomes = column(stored, |e| e.outcome.clone());
    let statuses = column(stored, |e| e.status);
    let source_ips = column(stored, |e| e.source_ip.clone());
    let reasons = column(stored, |e| e.reason.clone());
    let prevs = column(stored, |e| e.prev_hash.clone());
    let hashes = column(stored, |e| e.hash.clone());
    let user_agents = column(stored, |e| e.user_agent.clone());
    let chains = column(stored, |e| e.chain.clone());
    let chain_seqs = column(stored, |e| e.chain_seq);
    let args: [&(dyn ToSql + Sync); 16] = [
        &ats,
        &request_ids,
        &principals,
        &access_key_ids,
        &actions,
        &resources,
        &decisions,
        &outcomes,
        &statuses,
        &source_ips,
        &reasons,
        &prevs,
        &hashes,
        &user_agents,
        &chains,
        &chain_seqs,
    ];
    Ok(client
        .query(insert, &args)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Sets each entry's `seq` from the insert's `(chain_seq, seq)` rows (entries of one chain).
fn assign_seqs(stored: &mut [crate::AuditRecord], seqs: Vec<(i64, i64)>) -> Result<(), StoreError> {
    let seqs: std::collections::HashMap<i64, i64> = seqs.into_iter().collect();
    for e in stored {
        e.seq = *seqs.get(&e.chain_seq).ok_or_else(|| {
            StoreError::Backend(format!(
                "the audit insert returned no row for chain position {}",
                e.chain_seq
            ))
        })?;
    }
    Ok(())
}

/// Serialises writers of events until commit, so that `seq` order is commit order and a
/// reader that follows `seq` never skips an event that commits late.
const EVENTS_LOCK_KEY: i64 = 0x6261_746f_6e65_7631;

/// The outbox: the record's events, in the transaction of its write.
async fn write_events(
    tx: &deadpool_postgres::Transaction<'_>,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    if secret.outbox.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK_KEY])
        .await
        .map_err(backend)?;
    for e in &secret.outbox {
        tx.execute(
            schema::INSERT_EVENT,
            &[
                &e.event_id,
                &e.at,
                &secret.account_id,
                &secret.region,
                &secret.id,
                &secret.arn,
                &secret.name,
                &e.name,
                &e.detail,
            ],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

fn read_event(r: &Row) -> crate::EventRecord {
    crate::EventRecord {
        seq: r.get(0),
        event_id: r.get(1),
        at: r.get(2),
        account_id: r.get(3),
        region: r.get(4),
        secret_id: r.get(5),
        secret_arn: r.get(6),
        secret_name: r.get(7),
        event_name: r.get(8),
        detail: r.get(9),
    }
}

/// Tells every node, at commit, that this secret changed (NOTIFY is transactional: a rolled
/// back write notifies nobody).
async fn notify_in(
    tx: &deadpool_postgres::Transaction<'_>,
    secret_id: &str,
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &secret_id])
        .await
        .map_err(backend)?;
    Ok(())
}

async fn write_children(
    tx: &deadpool_postgres::Transaction<'_>,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    notify_in(tx, &secret.id).await?;
    write_events(tx, secret).await?;
    let stored: Vec<(String, String)> = tx
        .query(schema::SELECT_VERSION_IDS, &[&secret.id])
        .await
        .map_err(backend)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let existing: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    for version in &secret.versions {
        let was_empty = stored
            .iter()
            .any(|(id, kind)| id == &version.version_id && kind == "empty");
        if was_empty && version.kind != baton_core::SecretValueKind::Empty {
            tx.execute(
                schema::FILL_VERSION,
                &[
                    &secret.id,
                    &version.version_id,
                    &version.kind.as_str(),
                    &version.sealed_value,
                ],
            )
            .await
            .map_err(backend)?;
        }
    }
    tx.execute(schema::DELETE_LABELS, &[&secret.id])
        .await
        .map_err(backend)?;
    for gone in existing.iter().filter(|id| secret.version(id).is_none()) {
        tx.execute(schema::DELETE_VERSION, &[&secret.id, gone])
            .await
            .map_err(backend)?;
    }
    for version in &secret.versions {
        if !existing.contains(&version.version_id) {
            tx.execute(
                schema::INSERT_VERSION,
                &[
                    &secret.id,
                    &version.version_id,
                    &version.created_at,
                    &version.kind.as_str(),
                    &version.sealed_value,
                ],
            )
            .await
            .map_err(backend)?;
        }
        for label in &version.labels {
            tx.execute(
                schema::INSERT_LABEL,
                &[&secret.id, label, &version.version_id],
            )
            .await
            .map_err(backend)?;
        }
    }
    tx.execute(schema::DELETE_TAGS, &[&secret.id])
        .await
        .map_err(backend)?;
    for (position, tag) in secret.tags.iter().enumerate() {
        tx.execute(
            schema::INSERT_TAG,
            &[&secret.id, &(position as i64), &tag.key, &tag.value],
        )
        .await
        .map_err(backend)?;
    }
    tx.execute(schema::DELETE_POLICY, &[&secret.id])
        .await
        .map_err(backend)?;
    if let Some(policy) = &secret.rotation_policy {
        let (a, b, c, d, e, f) = schema::policy_row(policy);
        tx.execute(schema::INSERT_POLICY, &[&secret.id, &a, &b, &c, &d, &e, &f])
            .await
            .map_err(backend)?;
    }
    tx.execute(schema::DELETE_SCHEDULE, &[&secret.id])
        .await
        .map_err(backend)?;
    if let Some(at) = secret.rotation.next_rotation_at {
        tx.execute(schema::INSERT_SCHEDULE, &[&secret.id, &at])
            .await
            .map_err(backend)?;
    }
    if let Some(state) = &secret.rotation_state {
        tx.execute(
            schema::DELETE_ROTATION,
            &[&secret.id, &state.machine.version_id],
        )
        .await
        .map_err(backend)?;
        let r = schema::RotationRow::from_state(state);
        tx.execute(
            schema::INSERT_ROTATION,
            &[
                &secret.id,
                &r.version_id,
                &r.old_version_id,
                &r.phase,
                &r.phase_started_at,
                &r.status,
                &r.stopped_step,
                &r.stopped_reason,
                &r.in_flight,
                &r.attempts,
                &r.retry_at,
                &r.alerted,
                &r.gate_ready_since,
                &r.started_at,
                &r.timeline,
                &r.due_at,
            ],
        )
        .await
        .map_err(backend)?;
    }
    tx.execute(schema::DELETE_REPLICAS, &[&secret.id])
        .await
        .map_err(backend)?;
    for (position, replica) in secret.replicas.iter().enumerate() {
        if !name_is_free(
            tx,
            &secret.account_id,
            &replica.region,
            &secret.name,
            &secret.id,
        )
        .await?
        {
            return Err(StoreError::NameTaken);
        }
        tx.execute(
            schema::INSERT_REPLICA,
            &[
                &secret.id,
                &(position as i64),
                &secret.account_id,
                &replica.region,
                &secret.name,
                &replica.kms_key_id,
                &replica.last_accessed_at,
            ],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

async fn insert_in(
    tx: &deadpool_postgres::Transaction<'_>,
    secret: &SecretRecord,
) -> Result<(), StoreError> {
    if !name_is_free(
        tx,
        &secret.account_id,
        &secret.region,
        &secret.name,
        &secret.id,
    )
    .await?
    {
        return Err(StoreError::NameTaken);
    }
    let row = SecretRow::from_record(secret);
    let inserted = tx
        .execute(
            &format!(
                "{} ON CONFLICT (account_id, region, name) DO NOTHING",
                schema::INSERT_SECRET
            ),
            &[
                &row.id,
                &row.account_id,
                &row.region,
                &row.name,
                &row.arn,
                &row.description,
                &row.kms_key_id,
                &row.resource_policy,
                &row.rotation_enabled,
                &row.rotation_lambda_arn,
                &row.rotation_after_days,
                &row.rotation_duration,
                &row.rotation_schedule,
                &row.rotation_rules_set,
                &row.last_rotated_at,
                &row.created_at,
                &row.last_changed_at,
                &row.last_accessed_at,
                &row.deleted_at,
                &row.purge_at,
                &row.wrapped_data_key,
                &row.revision,
                &row.key_meta,
                &row.rotation_configured_by,
                &row.rotation_database_clone,
                &row.tagged,
            ],
        )
        .await
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::NameTaken);
    }
    write_children(tx, secret).await
}

async fn save_in(
    tx: &deadpool_postgres::Transaction<'_>,
    secret: &SecretRecord,
) -> Result<i64, StoreError> {
    let row = SecretRow::from_record(secret);
    let updated = tx
        .execute(
            schema::UPDATE_SECRET,
            &[
                &row.id,
                &row.revision,
                &row.description,
                &row.kms_key_id,
                &row.resource_policy,
                &row.rotation_enabled,
                &row.rotation_lambda_arn,
                &row.rotation_after_days,
                &row.rotation_duration,
                &row.rotation_schedule,
                &row.rotation_rules_set,
                &row.last_rotated_at,
                &row.last_changed_at,
                &row.last_accessed_at,
                &row.deleted_at,
                &row.purge_at,
                &row.key_meta,
                &row.wrapped_data_key,
                &row.rotation_configured_by,
                &row.rotation_database_clone,
                &row.tagged,
            ],
        )
        .await
        .map_err(backend)?;
    if updated == 0 {
        return Err(StoreError::Conflict);
    }
    write_children(tx, secret).await?;
    Ok(secret.revision + 1)
}

fn read_rotation_row(r: &Row) -> schema::RotationRow {
    schema::RotationRow {
        version_id: r.get(0),
        old_version_id: r.get(1),
        phase: r.get(2),
        phase_started_at: r.get(3),
        status: r.get(4),
        stopped_step: r.get(5),
        stopped_reason: r.get(6),
        in_flight: r.get(7),
        attempts: r.get(8),
        retry_at: r.get(9),
        alerted: r.get(10),
        gate_ready_since: r.get(11),
        started_at: r.get(12),
        timeline: r.get(13),
        due_at: r.get(14),
    }
}

fn read_rotator(r: &Row) -> schema::RotatorRow {
    schema::RotatorRow {
        name: r.get(0),
        kind: r.get(1),
        target: r.get(2),
        sealed_signing_secret: r.get(3),
        timeout_ms: r.get(4),
        created_at: r.get(5),
        execution_policy: r.get(6),
    }
}

fn read_consumer(r: &Row) -> schema::ConsumerRow {
    schema::ConsumerRow {
        secret_id: r.get(0),
        application: r.get(1),
        instance_id: r.get(2),
        current_version: r.get(3),
        accepted_versions: r.get(4),
        last_seen_at: r.get(5),
        lease_expires_at: r.get(6),
        principal: r.get(7),
    }
}

fn read_access_key(r: &Row) -> AccessKeyRecord {
    AccessKeyRecord {
        access_key_id: r.get(0),
        sealed_secret: r.get(1),
        user_name: r.get(2),
        created_at: r.get(3),
        scope_arn: r.get(4),
        expires_at: r.get(5),
        session_token_hash: r.get(6),
    }
}

fn read_alias(r: &Row) -> crate::AliasRecord {
    crate::AliasRecord {
        alias_arn: r.get(0),
        alias_name: r.get(1),
        key_id: r.get(2),
        secret_id: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
    }
}

fn read_grant(r: &Row) -> crate::GrantRecord {
    crate::GrantRecord {
        grant_id: r.get(0),
        secret_id: r.get(1),
        key_arn: r.get(2),
        grantee: r.get(3),
        retiring: r.get(4),
        name: r.get(5),
        token_hash: r.get(6),
        body: r.get(7),
        created_at: r.get(8),
    }
}

fn read_principal(r: &Row) -> crate::PrincipalRecord {
    crate::PrincipalRecord {
        name: r.get(0),
        kind: r.get(1),
        created_at: r.get(2),
    }
}

fn read_principal_policy(r: &Row) -> crate::PrincipalPolicyRecord {
    crate::PrincipalPolicyRecord {
        principal_name: r.get(0),
        policy_name: r.get(1),
        document: r.get(2),
        updated_at: r.get(3),
    }
}

fn read_audit(r: &Row) -> crate::AuditRecord {
    crate::AuditRecord {
        seq: r.get(0),
        at: r.get(1),
        request_id: r.get(2),
        principal: r.get(3),
        access_key_id: r.get(4),
        action: r.get(5),
        resource: r.get(6),
        decision: r.get(7),
        outcome: r.get(8),
        status: r.get(9),
        source_ip: r.get(10),
        reason: r.get(11),
        prev_hash: r.get(12),
        hash: r.get(13),
        user_agent: r.get(14),
        chain: r.get(15),
        chain_seq: r.get(16),
    }
}

/// Serializes appenders of the audit log across nodes.
const AUDIT_LOCK_KEY: i64 = 0x6261_746f_6e61_7564;

#[async_trait]
impl Store for PostgresStore {
    fn cache_usage(&self) -> Option<(usize, u64)> {
        Some((self.cache.len(), self.cache.weight()))
    }

    async fn insert_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        insert_in(&tx, secret).await?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish(&secret.id);
        Ok(())
    }

    async fn save_secret(&self, secret: &SecretRecord) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let revision = save_in(&tx, secret).await?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish(&secret.id);
        Ok(revision)
    }

    async fn promote_replica(
        &self,
        primary: &SecretRecord,
        promoted: &SecretRecord,
    ) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let revision = save_in(&tx, primary).await?;
        insert_in(&tx, promoted).await?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish(&primary.id);
        self.changes.publish(&promoted.id);
        Ok(revision)
    }

    async fn find_secret_by_replica(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        find_one(
            &client,
            &format!("id = ({})", schema::REPLICA_OWNER),
            &[&account_id, &region, &name],
        )
        .await
    }

    async fn list_replicated_into(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let query = format!(
            "SELECT {} FROM secrets WHERE id IN ({}) ORDER BY created_at, id",
            schema::SECRET_COLUMNS,
            schema::REPLICATED_INTO
        );
        let rows = client
            .query(&query, &[&account_id, &region])
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(load_children(&client, read_secret_row(&row)).await?);
        }
        Ok(out)
    }

    async fn find_secret_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        self.find_checked(
            cache::name_key(account_id, region, name),
            "account_id = $1 AND region = $2 AND name = $3",
            check::CheckKey::Name {
                account_id: account_id.to_owned(),
                region: region.to_owned(),
                name: name.to_owned(),
            },
            &[&account_id, &region, &name],
        )
        .await
    }

    async fn find_secret_by_arn(&self, arn: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.find_checked(
            cache::arn_key(arn),
            "arn = $1",
            check::CheckKey::Arn(arn.to_owned()),
            &[&arn],
        )
        .await
    }

    async fn list_secrets(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let query = schema::select_namespace_secrets();
        let rows = client
            .query(&query, &[&account_id, &region])
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(load_children(&client, read_secret_row(&row)).await?);
        }
        Ok(out)
    }

    async fn list_secret_heads(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let query = schema::select_namespace_secrets();
        // One round trip: the three statements are pipelined on the one connection.
        let namespace: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&account_id, &region];
        let (rows, tag_rows, replica_rows) = tokio::try_join!(
            client.query(&query, &namespace),
            client.query(schema::SELECT_NAMESPACE_TAGS, &namespace),
            client.query(schema::SELECT_NAMESPACE_REPLICAS, &namespace),
        )
        .map_err(backend)?;
        let mut tags: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
        for row in &tag_rows {
            tags.entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2)));
        }
        let mut replicas: std::collections::HashMap<String, Vec<_>> = Default::default();
        for row in &replica_rows {
            replicas
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2), row.get(3)));
        }
        schema::heads(rows.iter().map(read_secret_row).collect(), (tags, replicas))
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
        let query = if newest_first {
            schema::SECRET_ARNS_PAGE_DESC
        } else {
            schema::SECRET_ARNS_PAGE_ASC
        };
        self.rows(
            query,
            &[
                &account_id,
                &region,
                &include_deleted,
                &i64::from(limit),
                &(offset as i64),
            ],
            |row| row.get(0),
        )
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
        let pattern = crate::containing_pattern(text);
        self.rows(
            &schema::secret_arns_containing("ILIKE", newest_first),
            &[&account_id, &region, &pattern, &i64::from(limit)],
            |row| row.get(0),
        )
        .await
    }

    async fn delete_secret(&self, secret: &SecretRecord) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        write_events(&tx, secret).await?;
        notify_in(&tx, &secret.id).await?;
        tx.execute(schema::DELETE_SECRET, &[&secret.id])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish(&secret.id);
        Ok(())
    }

    async fn list_events(
        &self,
        after_seq: i64,
        limit: u32,
        secret_arn: Option<&str>,
    ) -> Result<Vec<crate::EventRecord>, StoreError> {
        let limit = i64::from(limit);
        match secret_arn {
            Some(arn) => {
                self.rows(
                    schema::LIST_EVENTS_OF_SECRET,
                    &[&after_seq, &limit, &arn],
                    read_event,
                )
                .await
            }
            None => {
                self.rows(schema::LIST_EVENTS, &[&after_seq, &limit], read_event)
                    .await
            }
        }
    }

    async fn find_event(&self, seq: i64) -> Result<Option<crate::EventRecord>, StoreError> {
        Ok(self
            .rows(schema::SELECT_EVENT, &[&seq], read_event)
            .await?
            .pop())
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .rows(schema::LAST_EVENT_SEQ, &[], |r| r.get::<_, i64>(0))
            .await?
            .pop()
            .unwrap_or_default())
    }

    async fn insert_subscription(&self, s: &crate::SubscriptionRecord) -> Result<(), StoreError> {
        self.changed(
            schema::INSERT_SUBSCRIPTION,
            &[
                &s.id,
                &s.account_id,
                &s.region,
                &s.url,
                &s.sealed_signing_secret,
                &s.filter,
                &s.cursor_seq,
                &s.created_at,
            ],
        )
        .await
        .map(drop)
    }

    async fn list_subscriptions(&self) -> Result<Vec<crate::SubscriptionRecord>, StoreError> {
        self.rows(schema::LIST_SUBSCRIPTIONS, &[], |r| {
            crate::SubscriptionRecord {
                id: r.get(0),
                account_id: r.get(1),
                region: r.get(2),
                url: r.get(3),
                sealed_signing_secret: r.get(4),
                filter: r.get(5),
                cursor_seq: r.get(6),
                created_at: r.get(7),
            }
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.changed(schema::DELETE_SUBSCRIPTION, &[&id]).await? > 0)
    }

    async fn advance_subscription(&self, id: &str, seq: i64) -> Result<(), StoreError> {
        self.changed(schema::ADVANCE_SUBSCRIPTION, &[&id, &seq])
            .await
            .map(drop)
    }

    async fn insert_dead_letter(&self, d: &crate::DeadLetterRecord) -> Result<(), StoreError> {
        self.changed(
            schema::INSERT_DEAD_LETTER,
            &[
                &d.subscription_id,
                &d.seq,
                &d.attempts,
                &d.last_error,
                &d.failed_at,
            ],
        )
        .await
        .map(drop)
    }

    async fn list_dead_letters(&self) -> Result<Vec<crate::DeadLetterRecord>, StoreError> {
        self.rows(schema::LIST_DEAD_LETTERS, &[], |r| {
            crate::DeadLetterRecord {
                subscription_id: r.get(0),
                seq: r.get(1),
                attempts: r.get(2),
                last_error: r.get(3),
                failed_at: r.get(4),
            }
        })
        .await
    }

    async fn delete_dead_letter(
        &self,
        subscription_id: &str,
        seq: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .changed(schema::DELETE_DEAD_LETTER, &[&subscription_id, &seq])
            .await?
            > 0)
    }

    async fn delete_events_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.changed(schema::DELETE_EVENTS_BEFORE, &[&before]).await
    }

    async fn secrets_due_for_purge(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(client
            .query(schema::DUE_FOR_PURGE, &[&now, &i64::from(limit)])
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                schema::INSERT_ACCESS_KEY,
                &[
                    &key.access_key_id,
                    &key.sealed_secret,
                    &key.user_name,
                    &key.created_at,
                    &key.scope_arn,
                    &key.expires_at,
                    &key.session_token_hash,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn find_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Option<AccessKeyRecord>, StoreError> {
        Ok(self
            .rows(
                schema::SELECT_ACCESS_KEY,
                &[&access_key_id],
                read_access_key,
            )
            .await?
            .pop())
    }

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        self.rows(schema::LIST_ACCESS_KEYS, &[], read_access_key)
            .await
    }

    async fn delete_access_key(&self, access_key_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .changed(schema::DELETE_ACCESS_KEY, &[&access_key_id])
            .await?
            > 0)
    }

    async fn create_alias(&self, a: &crate::AliasRecord) -> Result<bool, StoreError> {
        let n = self
            .changed(
                schema::INSERT_ALIAS,
                &[
                    &a.alias_arn,
                    &a.alias_name,
                    &a.key_id,
                    &a.secret_id,
                    &a.created_at,
                    &a.updated_at,
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_grant(&self, g: &crate::GrantRecord) -> Result<(), StoreError> {
        match self
            .changed(
                schema::INSERT_GRANT,
                &[
                    &g.grant_id,
                    &g.secret_id,
                    &g.key_arn,
                    &g.grantee,
                    &g.retiring,
                    &g.name,
                    &g.token_hash,
                    &g.body,
                    &g.created_at,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Constraint(_)) => Err(StoreError::NameTaken),
            Err(e) => Err(e),
        }
    }

    async fn find_grant(&self, grant_id: &str) -> Result<Option<crate::GrantRecord>, StoreError> {
        Ok(self
            .rows(schema::SELECT_GRANT, &[&grant_id], read_grant)
            .await?
            .pop())
    }

    async fn grants_of_key(&self, secret_id: &str) -> Result<Vec<crate::GrantRecord>, StoreError> {
        self.rows(schema::GRANTS_OF_KEY, &[&secret_id], read_grant)
            .await
    }

    async fn grants_retirable_by(
        &self,
        principal: &str,
    ) -> Result<Vec<crate::GrantRecord>, StoreError> {
        self.rows(schema::GRANTS_RETIRABLE_BY, &[&principal], read_grant)
            .await
    }

    async fn delete_grant(&self, grant_id: &str) -> Result<bool, StoreError> {
        Ok(self.changed(schema::DELETE_GRANT, &[&grant_id]).await? > 0)
    }

    async fn update_alias(&self, a: &crate::AliasRecord) -> Result<bool, StoreError> {
        let n = self
            .changed(
                schema::UPDATE_ALIAS,
                &[&a.alias_arn, &a.key_id, &a.secret_id, &a.updated_at],
            )
            .await?;
        Ok(n > 0)
    }

    async fn delete_alias(&self, alias_arn: &str) -> Result<bool, StoreError> {
        Ok(self.changed(schema::DELETE_ALIAS, &[&alias_arn]).await? > 0)
    }

    async fn find_alias(&self, alias_arn: &str) -> Result<Option<crate::AliasRecord>, StoreError> {
        Ok(self
            .rows(schema::SELECT_ALIAS, &[&alias_arn], read_alias)
            .await?
            .pop())
    }

    async fn list_aliases(&self, arn_prefix: &str) -> Result<Vec<crate::AliasRecord>, StoreError> {
        self.rows(schema::LIST_ALIASES, &[&arn_prefix], read_alias)
            .await
    }

    async fn insert_principal(&self, p: &crate::PrincipalRecord) -> Result<(), StoreError> {
        match self
            .changed(schema::INSERT_PRINCIPAL, &[&p.name, &p.kind, &p.created_at])
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Constraint(_)) => Err(StoreError::NameTaken),
            Err(e) => Err(e),
        }
    }

    async fn find_principal(
        &self,
        name: &str,
    ) -> Result<Option<crate::PrincipalRecord>, StoreError> {
        Ok(self
            .rows(schema::SELECT_PRINCIPAL, &[&name], read_principal)
            .await?
            .pop())
    }

    async fn list_principals(&self) -> Result<Vec<crate::PrincipalRecord>, StoreError> {
        self.rows(schema::LIST_PRINCIPALS, &[], read_principal)
            .await
    }

    async fn delete_principal(&self, name: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(schema::DELETE_ACCESS_KEYS_OF, &[&name])
            .await
            .map_err(backend)?;
        let n = tx
            .execute(schema::DELETE_PRINCIPAL, &[&name])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(n > 0)
    }

    async fn put_principal_policy(
        &self,
        p: &crate::PrincipalPolicyRecord,
    ) -> Result<(), StoreError> {
        match self
            .changed(
                schema::UPSERT_PRINCIPAL_POLICY,
                &[
                    &p.principal_name,
                    &p.policy_name,
                    &p.document,
                    &p.updated_at,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Constraint(_)) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    async fn delete_principal_policy(
        &self,
        principal_name: &str,
        policy_name: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .changed(
                schema::DELETE_PRINCIPAL_POLICY,
                &[&principal_name, &policy_name],
            )
            .await?
            > 0)
    }

    async fn list_principal_policies(
        &self,
        principal_name: &str,
    ) -> Result<Vec<crate::PrincipalPolicyRecord>, StoreError> {
        self.rows(
            schema::LIST_PRINCIPAL_POLICIES,
            &[&principal_name],
            read_principal_policy,
        )
        .await
    }

    async fn append_audit(
        &self,
        entries: Vec<crate::AuditRecord>,
        chain: crate::AuditChain,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let appended = append_audit_in(&client, entries, chain).await;
        if appended.is_err() {
            // The transaction may still be open (a statement failed before COMMIT was sent);
            // without a transaction this is only a warning.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        appended
    }

    async fn append_audit_chained(
        &self,
        mut entries: Vec<crate::AuditRecord>,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        if entries.iter().any(|e| e.chain != entries[0].chain) {
            return Err(StoreError::Backend(
                "one chained audit append holds entries of one chain".to_owned(),
            ));
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let insert = client
            .prepare_cached(schema::INSERT_AUDIT_BATCH_PG)
            .await
            .map_err(backend)?;
        // One statement, so one transaction of its own: one round trip, no lock.
        let seqs = insert_audit_rows(&client, &insert, &entries).await?;
        assign_seqs(&mut entries, seqs)?;
        Ok(entries)
    }

    fn per_node_audit_chains(&self) -> bool {
        true
    }

    async fn audit_chain_end(&self, chain: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .rows(schema::AUDIT_CHAIN_END, &[&chain], |r| (r.get(0), r.get(1)))
            .await?
            .pop())
    }

    async fn list_audit_chain(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.rows(
            schema::LIST_AUDIT_CHAIN,
            &[&chain, &after, &i64::from(limit)],
            read_audit,
        )
        .await
    }

    async fn audit_chain_ends(&self) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
        self.rows(schema::AUDIT_CHAIN_ENDS, &[], |r| {
            (
                r.get(0),
                r.get::<_, Option<i64>>(1).unwrap_or(0),
                r.get::<_, Option<Vec<u8>>>(2).unwrap_or_default(),
            )
        })
        .await
    }

    async fn audit_chain_starts(&self) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.rows(schema::AUDIT_CHAIN_STARTS, &[], read_audit).await
    }

    async fn last_audit(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .rows(schema::LAST_AUDIT, &[], |r| (r.get(0), r.get(1)))
            .await?
            .pop())
    }

    async fn list_audit(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.rows(
            schema::LIST_AUDIT,
            &[&after_seq, &i64::from(limit)],
            read_audit,
        )
        .await
    }

    async fn rotations_due(&self, now: Timestamp, limit: u32) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(crate::dedup_in_order(
            client
                .query(schema::ROTATIONS_DUE, &[&now, &i64::from(limit)])
                .await
                .map_err(backend)?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        ))
    }

    async fn open_rotations(
        &self,
        account_id: &str,
        region: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(client
            .query(
                schema::OPEN_ROTATIONS,
                &[&account_id, &region, &i64::from(limit)],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn scheduled_rotations(
        &self,
        account_id: &str,
        region: &str,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String, Timestamp)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(client
            .query(
                schema::SCHEDULED_ROTATIONS,
                &[&account_id, &region, &until, &i64::from(limit)],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn next_rotation_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(client
            .query_one(schema::NEXT_ROTATION_DUE, &[])
            .await
            .map_err(backend)?
            .get(0))
    }

    async fn rotation_history(
        &self,
        secret_id: &str,
        limit: u32,
    ) -> Result<Vec<RotationState>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .query(
                &schema::select_rotation_history(),
                &[&secret_id, &i64::from(limit)],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|r| read_rotation_row(r).into_state(secret_id, RotationPolicy::default()))
            .collect()
    }

    async fn insert_rotator(&self, rotator: &RotatorRecord) -> Result<(), StoreError> {
        let r = schema::RotatorRow::from_record(rotator);
        let client = self.pool.get().await.map_err(pool_error)?;
        match client
            .execute(
                schema::INSERT_ROTATOR,
                &[
                    &r.name,
                    &r.kind,
                    &r.target,
                    &r.sealed_signing_secret,
                    &r.timeout_ms,
                    &r.created_at,
                    &r.execution_policy,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match backend(e) {
                StoreError::Constraint(_) => Err(StoreError::NameTaken),
                other => Err(other),
            },
        }
    }

    async fn find_rotator(&self, name: &str) -> Result<Option<RotatorRecord>, StoreError> {
        self.rows(schema::SELECT_ROTATOR, &[&name], read_rotator)
            .await?
            .pop()
            .map(schema::RotatorRow::into_record)
            .transpose()
    }

    async fn list_rotators(&self) -> Result<Vec<RotatorRecord>, StoreError> {
        self.rows(schema::LIST_ROTATORS, &[], read_rotator)
            .await?
            .into_iter()
            .map(schema::RotatorRow::into_record)
            .collect()
    }

    async fn delete_rotator(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.changed(schema::DELETE_ROTATOR, &[&name]).await? > 0)
    }

    async fn upsert_consumers(
        &self,
        consumers: &[ConsumerRecord],
    ) -> Result<ConsumerWrite, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let statement = tx.prepare(schema::UPSERT_CONSUMER).await.map_err(backend)?;
        for (index, r) in consumers
            .iter()
            .map(schema::ConsumerRow::from_record)
            .enumerate()
        {
            let written = tx
                .execute(
                    &statement,
                    &[
                        &r.secret_id,
                        &r.application,
                        &r.instance_id,
                        &r.current_version,
                        &r.accepted_versions,
                        &r.last_seen_at,
                        &r.lease_expires_at,
                        &r.principal,
                    ],
                )
                .await
                .map_err(backend)?;
            if written == 0
                && tx
                    .query_opt(
                        schema::CONSUMER_EXISTS,
                        &[&r.secret_id, &r.application, &r.instance_id],
                    )
                    .await
                    .map_err(backend)?
                    .is_some()
            {
                // Dropping the transaction rolls back what the batch wrote so far.
                return Ok(ConsumerWrite::OwnedByAnother(index));
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(ConsumerWrite::Written)
    }

    async fn list_consumers(&self, secret_id: &str) -> Result<Vec<ConsumerRecord>, StoreError> {
        self.rows(schema::LIST_CONSUMERS, &[&secret_id], read_consumer)
            .await?
            .into_iter()
            .map(schema::ConsumerRow::into_record)
            .collect()
    }

    async fn delete_consumers_expired(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.changed(schema::DELETE_CONSUMERS_EXPIRED, &[&before])
            .await
    }

    async fn record_plain_read(&self, secret_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.changed(schema::RECORD_PLAIN_READ, &[&secret_id, &at])
            .await
            .map(drop)
    }

    async fn record_plain_reads(&self, reads: &[(String, Timestamp)]) -> Result<(), StoreError> {
        // One statement for the batch, each secret once (an upsert may not touch a row twice)
        // and in id order, so that nodes recording the same secrets at once lock their rows in
        // the same order and never deadlock.
        let mut latest = std::collections::BTreeMap::<&str, Timestamp>::new();
        for (id, at) in reads {
            let slot = latest.entry(id.as_str()).or_insert(*at);
            *slot = (*slot).max(*at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (ids, ats): (Vec<&str>, Vec<Timestamp>) = latest.into_iter().unzip();
        let client = self.pool.get().await.map_err(pool_error)?;
        let record = client
            .prepare_cached(RECORD_PLAIN_READS)
            .await
            .map_err(backend)?;
        client
            .execute(&record, &[&ids, &ats])
            .await
            .map(drop)
            .map_err(backend)
    }

    async fn last_plain_read(&self, secret_id: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .rows(schema::SELECT_PLAIN_READ, &[&secret_id], |r| r.get(0))
            .await?
            .pop())
    }

    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client.query_one("SELECT 1", &[]).await.map_err(backend)?;
        Ok(())
    }

    async fn operational_counts(
        &self,
        now: Timestamp,
    ) -> Result<crate::OperationalCounts, StoreError> {
        let status = self.pool.status();
        let client = self.pool.get().await.map_err(pool_error)?;
        let one = async |statement: &str| -> Result<i64, StoreError> {
            Ok(client
                .query_one(statement, &[])
                .await
                .map_err(backend)?
                .get(0))
        };
        let dead_letters = one(schema::DEAD_LETTER_COUNT).await?;
        let delivery_backlog = one(schema::DELIVERY_BACKLOG).await?;
        let rotations = client
            .query(schema::ROTATION_COUNTS, &[])
            .await
            .map_err(backend)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let consumers = client
            .query_one(schema::CONSUMER_COUNTS, &[&now])
            .await
            .map_err(backend)?;
        Ok(crate::OperationalCounts {
            rotations,
            consumers_live: consumers.get(0),
            consumers_lagging: consumers.get(1),
            dead_letters,
            delivery_backlog,
            pool: Some(crate::PoolCounts {
                max: status.max_size as i64,
                open: status.size as i64,
                idle: status.available as i64,
                waiting: status.waiting as i64,
            }),
        })
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        // One snapshot of the whole database: REPEATABLE READ sees every table as of its first
        // statement, while writers go on.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let schema_version = migrated_version(&tx).await?;
        let mut tables = Vec::with_capacity(SNAPSHOT_TABLES.len());
        for name in SNAPSHOT_TABLES {
            let statement = tx
                .prepare(&format!("SELECT * FROM {name}"))
                .await
                .map_err(backend)?;
            let columns: Vec<String> = statement
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect();
            let rows = tx
                .query(&statement, &[])
                .await
                .map_err(backend)?
                .iter()
                .map(|row| (0..row.len()).map(|i| cell_of(name, row, i)).collect())
                .collect::<Result<Vec<Vec<Cell>>, StoreError>>()?;
            tables.push(TableRows {
                name: (*name).to_owned(),
                columns,
                rows,
            });
        }
        tx.commit().await.map_err(backend)?;
        Ok(Snapshot {
            schema_version,
            tables,
        })
    }

    async fn restore_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        // No other writer may add rows between the emptiness check and the commit.
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            SNAPSHOT_TABLES.join(", ")
        ))
        .await
        .map_err(backend)?;
        let version = migrated_version(&tx).await?;
        snapshot.check(version)?;
        for name in SNAPSHOT_TABLES {
            let rows: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {name}"), &[])
                .await
                .map_err(backend)?
                .get(0);
            if rows > 0 {
                return Err(crate::snapshot::not_empty(name, rows));
            }
        }
        for table in &snapshot.tables {
            let types: Vec<Type> = tx
                .prepare(&format!(
                    "SELECT {} FROM {} LIMIT 0",
                    table.columns.join(", "),
                    table.name
                ))
                .await
                .map_err(backend)?
                .columns()
                .iter()
                .map(|c| c.type_().clone())
                .collect();
            let per = rows_per_insert(table.columns.len());
            for chunk in table.rows.chunks(per) {
                let statement = insert_statement(&table.name, &table.columns, chunk.len());
                let values = chunk
                    .iter()
                    .flat_map(|row| row.iter().zip(&types))
                    .map(|(cell, ty)| sql_value(&table.name, cell, ty))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let params: Vec<&(dyn ToSql + Sync)> = values
                    .iter()
                    .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(statement.as_str(), &params)
                    .await
                    .map_err(|e| match backend(e) {
                        StoreError::Constraint(c) => {
                            StoreError::Corrupt(format!("restoring table {}: {c}", table.name))
                        }
                        other => other,
                    })?;
            }
            // A serial column's sequence continues after the restored rows.
            let serials = tx
                .query(
                    "SELECT column_name::TEXT FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     AND column_default LIKE 'nextval(%'",
                    &[&table.name],
                )
                .await
                .map_err(backend)?;
            for row in serials {
                let column: String = row.get(0);
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', '{1}'), \
                         COALESCE((SELECT MAX({1}) FROM {0}), 0) + 1, false)",
                        table.name, column
                    ),
                    &[],
                )
                .await
                .map_err(backend)?;
            }
        }
        // Ids come back at the revisions they had when the backup was taken, perhaps with
        // other content than a node cached under them since.
        tx.execute(NEW_INCARNATION, &[]).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish_all();
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .rows(schema::SCHEMA_VERSION, &[], |r| r.get::<_, i64>(0))
            .await?
            .pop()
            .unwrap_or_default())
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        _now: Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        // The database's clock decides expiry, so nodes whose clocks disagree still agree on
        // who holds a lease.
        let statement = schema::ACQUIRE_LEASE
            .replace("$3", DB_NOW_MS)
            .replace("$4", "$3");
        Ok(self
            .rows(&statement, &[&key, &holder, &ttl_ms], |r| {
                r.get::<_, i64>(0)
            })
            .await?
            .pop())
    }

    async fn release_lease(&self, key: &str, holder: &str, token: i64) -> Result<(), StoreError> {
        self.changed(schema::RELEASE_LEASE, &[&key, &holder, &token])
            .await
            .map(drop)
    }

    async fn list_sealed(
        &self,
        kind: SealedKind,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError> {
        self.rows(&kind.list_statement(), &[&after, &i64::from(limit)], |r| {
            SealedBlob {
                id: r.get(0),
                blob: r.get(1),
            }
        })
        .await
    }

    async fn replace_sealed(
        &self,
        kind: SealedKind,
        replacements: &[SealedReplacement],
    ) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let statement = tx
            .prepare_cached(&kind.replace_statement())
            .await
            .map_err(backend)?;
        let mut replaced = 0;
        for r in replacements {
            replaced += tx
                .execute(&statement, &[&r.id, &r.old, &r.new])
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(replaced)
    }

    async fn meta_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .rows(root_keys::SELECT_META, &[&name], |r| r.get(0))
            .await?
            .pop())
    }

    async fn init_meta_value(
        &self,
        name: &str,
        value: &[u8],
        now: Timestamp,
    ) -> Result<Vec<u8>, StoreError> {
        self.changed(root_keys::INIT_META, &[&name, &value, &now])
            .await?;
        self.rows(root_keys::SELECT_META, &[&name], |r| r.get(0))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("baton_meta {name} vanished")))
    }

    async fn root_key_state(&self, primary: &str) -> Result<RootKeyStateRecord, StoreError> {
        if let Some(state) = self
            .rows(root_keys::SELECT_ROOT_KEY_STATE, &[], read_root_key_state)
            .await?
            .pop()
        {
            return Ok(state);
        }
        self.changed(root_keys::INIT_ROOT_KEY_STATE, &[&primary])
            .await?;
        self.rows(root_keys::SELECT_ROOT_KEY_STATE, &[], read_root_key_state)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("root_key_state vanished".to_owned()))
    }

    async fn save_root_key_state(&self, s: &RootKeyStateRecord) -> Result<bool, StoreError> {
        let (old_keys, retired_keys) = (
            root_keys::join(&s.old_keys),
            root_keys::join(&s.retired_keys),
        );
        let n = self
            .changed(
                root_keys::SAVE_ROOT_KEY_STATE,
                &[
                    &s.revision,
                    &s.primary_key,
                    &s.phase,
                    &s.new_key,
                    &old_keys,
                    &retired_keys,
                    &s.started_at,
                    &s.phase_at,
                    &s.rewrapped,
                    &s.remaining,
                    &s.note,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn heartbeat_node(&self, n: &NodeRecord, _now: Timestamp) -> Result<(), StoreError> {
        let keys = root_keys::join(&n.keys_held);
        self.changed(
            "INSERT INTO nodes (node_id, address, started_at, seen_at, keys_held, wraps_with) \
             VALUES ($1, $2, $3, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
             started_at = excluded.started_at, seen_at = excluded.seen_at, \
             keys_held = excluded.keys_held, wraps_with = excluded.wraps_with",
            &[&n.node_id, &n.address, &n.started_at, &keys, &n.wraps_with],
        )
        .await
        .map(drop)
    }

    async fn remove_node(&self, node_id: &str) -> Result<(), StoreError> {
        self.changed(root_keys::DELETE_NODE, &[&node_id])
            .await
            .map(drop)
    }

    async fn list_nodes(
        &self,
        _now: Timestamp,
        forget_after_ms: i64,
    ) -> Result<Vec<NodeRecord>, StoreError> {
        self.changed(
            "DELETE FROM nodes WHERE seen_at < \
             (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint - $1",
            &[&forget_after_ms],
        )
        .await?;
        self.rows(
            "SELECT node_id, address, started_at, keys_held, wraps_with, \
             (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint - seen_at \
             FROM nodes ORDER BY node_id",
            &[],
            |r| NodeRecord {
                node_id: r.get(0),
                address: r.get(1),
                started_at: r.get(2),
                keys_held: root_keys::split(r.get(3)),
                wraps_with: r.get(4),
                age_ms: r.get(5),
            },
        )
        .await
    }

    async fn save_secret_fenced(
        &self,
        secret: &SecretRecord,
        fence: &crate::Fence,
    ) -> Result<i64, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        // FOR SHARE holds off a takeover (which updates the row) until this write commits, so
        // a write checked against the lease commits before any successor begins.
        let held = tx
            .query_opt(
                &format!("{} FOR SHARE", schema::CHECK_FENCE),
                &[&fence.key, &fence.holder, &fence.token],
            )
            .await
            .map_err(backend)?;
        if held.is_none() {
            return Err(StoreError::FencedOut);
        }
        let revision = save_in(&tx, secret).await?;
        tx.commit().await.map_err(backend)?;
        self.changes.publish(&secret.id);
        Ok(revision)
    }
}

/// `RECORD_PLAIN_READ` for many secrets; `$1` is sorted and holds each id once.
const RECORD_PLAIN_READS: &str = "INSERT INTO plain_reads (secret_id, last_read_at) \
    SELECT r.id, r.at FROM unnest($1::text[], $2::bigint[]) AS r(id, at) \
    WHERE EXISTS (SELECT 1 FROM secrets WHERE id = r.id) ORDER BY r.id \
    ON CONFLICT (secret_id) DO UPDATE SET last_read_at = excluded.last_read_at \
    WHERE excluded.last_read_at > plain_reads.last_read_at";

/// Milliseconds since the epoch by the database's clock.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The channel on which every commit that changes a secret notifies its id to all nodes.
pub const CHANGES_CHANNEL: &str = "baton_changes";

/// Publishes every other node's commits to this node's change feed, for as long as the process
/// runs: a dedicated connection LISTENs, and reconnects after a failure. After each (re)connect
/// every watcher is woken to re-read, since notifications sent while it was away are lost.
async fn follow_notifications(
    (config, tls): (tokio_postgres::Config, MakeRustlsConnect),
    changes: Arc<ChangeFeed>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen(&config, &tls, &changes).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "lost the PostgreSQL notification connection; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    changes: &ChangeFeed,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let statement = format!("LISTEN {CHANGES_CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            result = &mut listen, if !listening => {
                result?;
                listening = true;
                changes.publish_all();
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => changes.publish(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

fn read_root_key_state(r: &Row) -> RootKeyStateRecord {
    RootKeyStateRecord {
        revision: r.get(0),
        primary_key: r.get(1),
        phase: r.get(2),
        new_key: r.get(3),
        old_keys: root_keys::split(r.get(4)),
        retired_keys: root_keys::split(r.get(5)),
        started_at: r.get(6),
        phase_at: r.get(7),
        rewrapped: r.get(8),
        remaining: r.get(9),
        note: r.get(10),
    }
}

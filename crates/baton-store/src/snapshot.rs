//! A store's whole content as plain rows, read in one transaction: what a backup holds and a
//! restore writes. Values stay as stored (sealed), so a snapshot reveals nothing without the
//! root key.
//!
//! The table list is explicit and in foreign-key order, so a restore inserts parents first. Three
//! tables are left out on purpose: `schema_migrations` (the target's own migrations stand for
//! it, and the schema versions must match) and `rotation_leases` (a lease names a node of the
//! old deployment; without it, any node of the new one takes each rotation up where it stood),
//! and `nodes` (heartbeats of the old deployment's nodes).
//! A test checks that every table of the schema is either listed or left out, so a migration
//! that adds a table cannot be forgotten.

use crate::StoreError;

/// Every table a snapshot holds, parents before children.
pub const SNAPSHOT_TABLES: &[&str] = &[
    "secrets",
    "secret_tags",
    "secret_versions",
    "secret_labels",
    "secret_replicas",
    "rotation_policies",
    "rotations",
    "rotation_schedules",
    "consumers",
    "plain_reads",
    "kms_aliases",
    "kms_grants",
    "access_keys",
    "principals",
    "principal_policies",
    "rotators",
    "events",
    "subscriptions",
    "dead_letters",
    "audit_log",
    "baton_meta",
    "root_key_state",
];

/// Tables a snapshot leaves out, and why (see the module documentation).
pub const NOT_IN_SNAPSHOTS: &[&str] = &["schema_migrations", "rotation_leases", "nodes"];

/// One stored value. Booleans are integers (0 or 1), as SQLite stores them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl std::fmt::Debug for Cell {
    /// The kind and size only: a cell may hold a sealed value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Int(_) => f.write_str("Int"),
            Cell::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Cell::Blob(b) => write!(f, "Blob({} bytes)", b.len()),
        }
    }
}

/// One table's rows, with its column names in the order of each row's cells.
#[derive(Clone, PartialEq, Eq)]
pub struct TableRows {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl std::fmt::Debug for TableRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRows")
            .field("name", &self.name)
            .field("columns", &self.columns)
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// A store's content at one moment.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The newest migration of the store it was read from.
    pub schema_version: i64,
    pub tables: Vec<TableRows>,
}

impl std::fmt::Debug for Snapshot {
    /// Counts only: cells hold sealed values and names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        list.entry(&"schema_version", &self.schema_version);
        for t in &self.tables {
            list.entry(&t.name, &t.rows.len());
        }
        list.finish()
    }
}

impl Snapshot {
    pub fn table(&self, name: &str) -> Option<&TableRows> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The same content with each table's rows in one order: engines return rows in no
    /// particular order, so two snapshots are compared sorted.
    pub fn sorted(mut self) -> Self {
        for t in &mut self.tables {
            t.rows.sort();
        }
        self
    }

    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }

    /// Checks what a restore relies on before anything is written: the schema version, the
    /// table list, and that every row has as many cells as its table has columns.
    pub fn check(&self, target_schema_version: i64) -> Result<(), StoreError> {
        if self.schema_version != target_schema_version {
            return Err(StoreError::Refused(format!(
                "the backup is of schema version {}, and this Baton writes schema version {}: \
                 restore it with the Baton release that took it, then upgrade",
                self.schema_version, target_schema_version
            )));
        }
        let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        if names != SNAPSHOT_TABLES {
            return Err(StoreError::Corrupt(format!(
                "the backup's tables are {names:?}; this Baton expects {SNAPSHOT_TABLES:?}"
            )));
        }
        for t in &self.tables {
            if let Some(bad) = t.rows.iter().position(|r| r.len() != t.columns.len()) {
                return Err(StoreError::Corrupt(format!(
                    "table {} row {bad} has {} cells for {} columns",
                    t.name,
                    t.rows[bad].len(),
                    t.columns.len()
                )));
            }
            if let Some(c) = t.columns.iter().find(|c| !is_identifier(c)) {
                return Err(StoreError::Corrupt(format!(
                    "table {} has a column named {c:?}",
                    t.name
                )));
            }
        }
        Ok(())
    }
}

/// Column names go into SQL text; only plain identifiers are accepted.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The error a restore gives when the target already holds data.
pub(crate) fn not_empty(table: &str, rows: i64) -> StoreError {
    StoreError::Refused(format!(
        "the target store is not empty: table {table} holds {rows} row(s). Restore writes only \
         into a new store: a new data directory, or an empty PostgreSQL database"
    ))
}

/// `INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)…` for `rows` rows.
pub(crate) fn insert_statement(table: &str, columns: &[String], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    sql
}

/// How many rows go in one multi-row INSERT: under both engines' limits on parameters.
pub(crate) fn rows_per_insert(columns: usize) -> usize {
    (30_000 / columns.max(1)).clamp(1, 500)
}

//! The schema and statements shared by both engines. Statements use `$N` placeholders;
//! the SQLite engine rewrites them to SQLite's equivalent `?N`.

use baton_core::{
    DeletionState, Replica, RotationConfig, RotationRules, SecretRecord, SecretValueKind, Tag,
    VersionRecord,
};

use crate::StoreError;

/// Migrations, in order. Each runs once, in its own transaction, recorded in `schema_migrations`.
/// `{blob}` and `{bigint}` are replaced by each engine's type names.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    arn TEXT NOT NULL UNIQUE,
    description TEXT,
    kms_key_id TEXT,
    resource_policy TEXT,
    rotation_enabled BOOLEAN NOT NULL,
    rotation_lambda_arn TEXT,
    rotation_after_days {bigint},
    rotation_duration TEXT,
    rotation_schedule TEXT,
    rotation_rules_set BOOLEAN NOT NULL,
    last_rotated_at {bigint},
    created_at {bigint} NOT NULL,
    last_changed_at {bigint} NOT NULL,
    last_accessed_at {bigint},
    deleted_at {bigint},
    purge_at {bigint},
    wrapped_data_key {blob} NOT NULL,
    revision {bigint} NOT NULL,
    UNIQUE (account_id, region, name)
);
CREATE INDEX secrets_purge_at ON secrets (purge_at) WHERE purge_at IS NOT NULL;
CREATE TABLE secret_tags (
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    position {bigint} NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (secret_id, tag_key)
);
CREATE TABLE secret_versions (
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version_id TEXT NOT NULL,
    created_at {bigint} NOT NULL,
    kind TEXT NOT NULL,
    sealed_value {blob} NOT NULL,
    PRIMARY KEY (secret_id, version_id)
);
-- One row per label and secret: the primary key is what makes AWSCURRENT (and every other
-- label) unique within a secret, whatever the code above it does.
CREATE TABLE secret_labels (
    secret_id TEXT NOT NULL,
    label TEXT NOT NULL,
    version_id TEXT NOT NULL,
    PRIMARY KEY (secret_id, label),
    FOREIGN KEY (secret_id, version_id) REFERENCES secret_versions (secret_id, version_id) ON DELETE CASCADE
);
CREATE TABLE access_keys (
    access_key_id TEXT PRIMARY KEY,
    sealed_secret {blob} NOT NULL,
    user_name TEXT NOT NULL,
    created_at {bigint} NOT NULL
);
"#,
    ),
    (
        2,
        r#"
-- A replica is a read-only view of its primary in another region's namespace. Its name is
-- taken in that namespace, so (account_id, region, name) is unique here, and the engines check
-- it against `secrets` too.
CREATE TABLE secret_replicas (
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    position {bigint} NOT NULL,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    name TEXT NOT NULL,
    kms_key_id TEXT,
    last_accessed_at {bigint},
    PRIMARY KEY (secret_id, region),
    UNIQUE (account_id, region, name)
);
"#,
    ),
];

pub const SECRET_COLUMNS: &str = "id, account_id, region, name, arn, description, kms_key_id, \
    resource_policy, rotation_enabled, rotation_lambda_arn, rotation_after_days, rotation_duration, \
    rotation_schedule, rotation_rules_set, last_rotated_at, created_at, last_changed_at, \
    last_accessed_at, deleted_at, purge_at, wrapped_data_key, revision";

pub const INSERT_SECRET: &str = "INSERT INTO secrets (id, account_id, region, name, arn, \
    description, kms_key_id, resource_policy, rotation_enabled, rotation_lambda_arn, \
    rotation_after_days, rotation_duration, rotation_schedule, rotation_rules_set, last_rotated_at, \
    created_at, last_changed_at, last_accessed_at, deleted_at, purge_at, wrapped_data_key, revision) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
    $20, $21, $22)";

/// Updates the mutable columns if the revision is unchanged. Parameters: $1 id, $2 expected
/// revision, then the same values as [`SecretRow`] from description on.
pub const UPDATE_SECRET: &str = "UPDATE secrets SET description = $3, kms_key_id = $4, \
    resource_policy = $5, rotation_enabled = $6, rotation_lambda_arn = $7, \
    rotation_after_days = $8, rotation_duration = $9, rotation_schedule = $10, \
    rotation_rules_set = $11, last_rotated_at = $12, last_changed_at = $13, \
    last_accessed_at = $14, deleted_at = $15, purge_at = $16, revision = $2 + 1 \
    WHERE id = $1 AND revision = $2";

/// Versions with their labels, one row per (version, label); a version without labels has one
/// row with a NULL label. Rows of one version are adjacent.
pub const SELECT_VERSIONS_AND_LABELS: &str = "SELECT v.version_id, v.created_at, v.kind, \
    v.sealed_value, l.label FROM secret_versions v LEFT JOIN secret_labels l \
    ON l.secret_id = v.secret_id AND l.version_id = v.version_id \
    WHERE v.secret_id = $1 ORDER BY v.created_at, v.version_id";
pub const SELECT_TAGS: &str =
    "SELECT tag_key, tag_value FROM secret_tags WHERE secret_id = $1 ORDER BY position";
pub const INSERT_VERSION: &str = "INSERT INTO secret_versions (secret_id, version_id, created_at, \
    kind, sealed_value) VALUES ($1, $2, $3, $4, $5)";
pub const DELETE_VERSION: &str =
    "DELETE FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
pub const SELECT_VERSION_IDS: &str = "SELECT version_id FROM secret_versions WHERE secret_id = $1";
pub const DELETE_LABELS: &str = "DELETE FROM secret_labels WHERE secret_id = $1";
pub const INSERT_LABEL: &str =
    "INSERT INTO secret_labels (secret_id, label, version_id) VALUES ($1, $2, $3)";
pub const DELETE_TAGS: &str = "DELETE FROM secret_tags WHERE secret_id = $1";
pub const INSERT_TAG: &str = "INSERT INTO secret_tags (secret_id, position, tag_key, tag_value) \
    VALUES ($1, $2, $3, $4)";
pub const SELECT_REPLICAS: &str = "SELECT region, kms_key_id, last_accessed_at \
    FROM secret_replicas WHERE secret_id = $1 ORDER BY position";
pub const DELETE_REPLICAS: &str = "DELETE FROM secret_replicas WHERE secret_id = $1";
pub const INSERT_REPLICA: &str = "INSERT INTO secret_replicas (secret_id, position, account_id, \
    region, name, kms_key_id, last_accessed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// Whether a live or deleted secret already holds the name in the namespace.
pub const NAME_IN_SECRETS: &str =
    "SELECT id FROM secrets WHERE account_id = $1 AND region = $2 AND name = $3";
/// Whether another secret's replica holds the name in the namespace.
pub const NAME_IN_REPLICAS: &str = "SELECT secret_id FROM secret_replicas \
    WHERE account_id = $1 AND region = $2 AND name = $3 AND secret_id <> $4";
pub const REPLICA_OWNER: &str =
    "SELECT secret_id FROM secret_replicas WHERE account_id = $1 AND region = $2 AND name = $3";
pub const REPLICATED_INTO: &str = "SELECT secret_id FROM secret_replicas \
    WHERE account_id = $1 AND region = $2 ORDER BY secret_id";
pub const DELETE_SECRET: &str = "DELETE FROM secrets WHERE id = $1";
pub const DUE_FOR_PURGE: &str = "SELECT id FROM secrets WHERE purge_at IS NOT NULL AND purge_at <= $1 ORDER BY purge_at LIMIT $2";
pub const INSERT_ACCESS_KEY: &str = "INSERT INTO access_keys (access_key_id, sealed_secret, \
    user_name, created_at) VALUES ($1, $2, $3, $4)";
pub const SELECT_ACCESS_KEY: &str = "SELECT access_key_id, sealed_secret, user_name, created_at \
    FROM access_keys WHERE access_key_id = $1";
pub const LIST_ACCESS_KEYS: &str = "SELECT access_key_id, sealed_secret, user_name, created_at \
    FROM access_keys ORDER BY created_at, access_key_id";
pub const DELETE_ACCESS_KEY: &str = "DELETE FROM access_keys WHERE access_key_id = $1";

/// One row of [`SELECT_VERSIONS_AND_LABELS`]: version id, creation time, kind, sealed value, and
/// one of its labels.
pub type VersionRow = (String, i64, String, Vec<u8>, Option<String>);

/// The `secrets` row of a record, in [`SECRET_COLUMNS`] order, as engine-neutral values.
pub struct SecretRow {
    pub id: String,
    pub account_id: String,
    pub region: String,
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub resource_policy: Option<String>,
    pub rotation_enabled: bool,
    pub rotation_lambda_arn: Option<String>,
    pub rotation_after_days: Option<i64>,
    pub rotation_duration: Option<String>,
    pub rotation_schedule: Option<String>,
    pub rotation_rules_set: bool,
    pub last_rotated_at: Option<i64>,
    pub created_at: i64,
    pub last_changed_at: i64,
    pub last_accessed_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub purge_at: Option<i64>,
    pub wrapped_data_key: Vec<u8>,
    pub revision: i64,
}

impl SecretRow {
    pub fn from_record(secret: &SecretRecord) -> Self {
        let (deleted_at, purge_at) = match secret.deletion {
            DeletionState::Active => (None, None),
            DeletionState::Scheduled {
                deleted_at,
                purge_at,
            } => (Some(deleted_at), Some(purge_at)),
        };
        let rules = secret.rotation.rules.clone().unwrap_or_default();
        SecretRow {
            id: secret.id.clone(),
            account_id: secret.account_id.clone(),
            region: secret.region.clone(),
            name: secret.name.clone(),
            arn: secret.arn.clone(),
            description: secret.description.clone(),
            kms_key_id: secret.kms_key_id.clone(),
            resource_policy: secret.resource_policy.clone(),
            rotation_enabled: secret.rotation.enabled,
            rotation_lambda_arn: secret.rotation.lambda_arn.clone(),
            rotation_after_days: rules.automatically_after_days,
            rotation_duration: rules.duration,
            rotation_schedule: rules.schedule_expression,
            rotation_rules_set: secret.rotation.rules.is_some(),
            last_rotated_at: secret.rotation.last_rotated_at,
            created_at: secret.created_at,
            last_changed_at: secret.last_changed_at,
            last_accessed_at: secret.last_accessed_at,
            deleted_at,
            purge_at,
            wrapped_data_key: secret.wrapped_data_key.clone(),
            revision: secret.revision,
        }
    }

    /// Rebuilds the record from its row and child rows, checking the invariants after reading.
    pub fn into_record(
        self,
        versions: Vec<VersionRow>,
        tags: Vec<(String, String)>,
        replicas: Vec<(String, Option<String>, Option<i64>)>,
    ) -> Result<SecretRecord, StoreError> {
        let deletion = match (self.deleted_at, self.purge_at) {
            (Some(deleted_at), Some(purge_at)) => DeletionState::Scheduled {
                deleted_at,
                purge_at,
            },
            (None, None) => DeletionState::Active,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "secret {} has only one of deleted_at and purge_at",
                    self.id
                )));
            }
        };
        let mut version_records: Vec<VersionRecord> = Vec::with_capacity(versions.len());
        for (version_id, created_at, kind, sealed_value, label) in versions {
            if version_records.last().map(|v| &v.version_id) != Some(&version_id) {
                let kind = SecretValueKind::parse(&kind).ok_or_else(|| {
                    StoreError::Corrupt(format!("version {version_id} has unknown kind {kind}"))
                })?;
                version_records.push(VersionRecord {
                    version_id,
                    created_at,
                    labels: Default::default(),
                    kind,
                    sealed_value,
                });
            }
            if let (Some(label), Some(version)) = (label, version_records.last_mut()) {
                version.labels.insert(label);
            }
        }
        let record = SecretRecord {
            id: self.id,
            account_id: self.account_id,
            region: self.region,
            name: self.name,
            arn: self.arn,
            description: self.description,
            kms_key_id: self.kms_key_id,
            tags: tags
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
            resource_policy: self.resource_policy,
            rotation: RotationConfig {
                enabled: self.rotation_enabled,
                lambda_arn: self.rotation_lambda_arn,
                rules: self.rotation_rules_set.then_some(RotationRules {
                    automatically_after_days: self.rotation_after_days,
                    duration: self.rotation_duration,
                    schedule_expression: self.rotation_schedule,
                }),
                last_rotated_at: self.last_rotated_at,
            },
            created_at: self.created_at,
            last_changed_at: self.last_changed_at,
            last_accessed_at: self.last_accessed_at,
            deletion,
            wrapped_data_key: self.wrapped_data_key,
            versions: version_records,
            replicas: replicas
                .into_iter()
                .map(|(region, kms_key_id, last_accessed_at)| Replica {
                    region,
                    kms_key_id,
                    last_accessed_at,
                })
                .collect(),
            revision: self.revision,
        };
        if !record.versions.is_empty()
            && record.version_with_label(baton_core::AWSCURRENT).is_none()
        {
            return Err(StoreError::Corrupt(format!(
                "secret {} has versions but no AWSCURRENT",
                record.id
            )));
        }
        Ok(record)
    }
}

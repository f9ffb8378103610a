//! The schema and statements shared by both engines. Statements use `$N` placeholders;
//! the SQLite engine rewrites them to SQLite's equivalent `?N`.

use baton_core::rotation::{
    Blackout, Phase, Rotation, RotationPolicy, RotationState, Status, Step, TimelineEntry,
};
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
    (
        3,
        r#"
CREATE TABLE rotation_policies (
    secret_id TEXT PRIMARY KEY REFERENCES secrets (id) ON DELETE CASCADE,
    propagation_delay_ms {bigint} NOT NULL,
    gate_wait_max_ms {bigint} NOT NULL,
    retire_grace_ms {bigint} NOT NULL,
    step_attempts_max {bigint} NOT NULL,
    blackouts TEXT NOT NULL
);
-- One row per secret: its rotation in flight, or its last one. The primary key is what makes
-- "at most one rotation in flight per secret" a property of the database.
CREATE TABLE rotations (
    secret_id TEXT PRIMARY KEY REFERENCES secrets (id) ON DELETE CASCADE,
    version_id TEXT NOT NULL,
    old_version_id TEXT,
    phase TEXT NOT NULL,
    phase_started_at {bigint} NOT NULL,
    status TEXT NOT NULL,
    stopped_step TEXT,
    stopped_reason TEXT,
    in_flight TEXT,
    attempts {bigint} NOT NULL,
    retry_at {bigint},
    alerted BOOLEAN NOT NULL,
    gate_ready_since {bigint},
    started_at {bigint} NOT NULL,
    timeline TEXT NOT NULL,
    due_at {bigint}
);
-- The engine's due-time index: finding due rotations costs the same among a million secrets.
CREATE INDEX rotations_due_at ON rotations (due_at) WHERE due_at IS NOT NULL;
"#,
    ),
    (
        4,
        r#"
-- When each scheduled secret next starts a rotation; indexed like rotations.due_at.
CREATE TABLE rotation_schedules (
    secret_id TEXT PRIMARY KEY REFERENCES secrets (id) ON DELETE CASCADE,
    next_rotation_at {bigint} NOT NULL
);
CREATE INDEX rotation_schedules_next ON rotation_schedules (next_rotation_at);
"#,
    ),
    (
        5,
        r#"
-- Temporary keys that a rotation gives its rotator: valid for one secret, until they expire.
ALTER TABLE access_keys ADD COLUMN scope_arn TEXT;
ALTER TABLE access_keys ADD COLUMN expires_at {bigint};
-- External rotators, referenced by name from RotationLambdaARN.
CREATE TABLE rotators (
    name TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    created_at {bigint} NOT NULL
);
"#,
    ),
    (
        6,
        r#"
-- Keep every rotation, not only the latest: the history is listable. A partial unique index
-- keeps "at most one rotation in flight per secret" a property of the database.
CREATE TABLE rotations_v2 (
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version_id TEXT NOT NULL,
    old_version_id TEXT,
    phase TEXT NOT NULL,
    phase_started_at {bigint} NOT NULL,
    status TEXT NOT NULL,
    stopped_step TEXT,
    stopped_reason TEXT,
    in_flight TEXT,
    attempts {bigint} NOT NULL,
    retry_at {bigint},
    alerted BOOLEAN NOT NULL,
    gate_ready_since {bigint},
    started_at {bigint} NOT NULL,
    timeline TEXT NOT NULL,
    due_at {bigint},
    PRIMARY KEY (secret_id, version_id)
);
INSERT INTO rotations_v2 SELECT secret_id, version_id, old_version_id, phase, phase_started_at,
    status, stopped_step, stopped_reason, in_flight, attempts, retry_at, alerted,
    gate_ready_since, started_at, timeline, due_at FROM rotations;
DROP TABLE rotations;
ALTER TABLE rotations_v2 RENAME TO rotations;
CREATE INDEX rotations_due_at ON rotations (due_at) WHERE due_at IS NOT NULL;
CREATE UNIQUE INDEX rotations_one_in_flight ON rotations (secret_id)
    WHERE status IN ('running', 'stopped');
"#,
    ),
    (
        7,
        r#"
-- Rotators are commands or webhooks; a webhook's signing secret is sealed under the root key.
CREATE TABLE rotators_v2 (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    sealed_signing_secret {blob},
    timeout_ms {bigint} NOT NULL,
    created_at {bigint} NOT NULL
);
INSERT INTO rotators_v2 SELECT name, 'command', command, NULL, 120000, created_at FROM rotators;
DROP TABLE rotators;
ALTER TABLE rotators_v2 RENAME TO rotators;
"#,
    ),
    (
        8,
        r#"
-- What each reporting consumer (a Baton client or agent) holds, one row per consumer and
-- secret, alive until its lease expires.
CREATE TABLE consumers (
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    application TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    current_version TEXT,
    accepted_versions TEXT NOT NULL,
    last_seen_at {bigint} NOT NULL,
    lease_expires_at {bigint} NOT NULL,
    PRIMARY KEY (secret_id, application, instance_id)
);
CREATE INDEX consumers_lease ON consumers (lease_expires_at);
-- When a reader that does not report (a plain AWS SDK, say) last read each secret.
CREATE TABLE plain_reads (
    secret_id TEXT PRIMARY KEY REFERENCES secrets (id) ON DELETE CASCADE,
    last_read_at {bigint} NOT NULL
);
"#,
    ),
    (
        9,
        r#"
-- Whether a database rotator's retire may end the old user's sessions after the maximum wait.
ALTER TABLE rotation_policies ADD COLUMN kill_sessions BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    ),
    (
        10,
        r#"
-- The event log: written in the transaction of the change it records (the outbox). It
-- outlives its secret, so it has no foreign key. seq orders it: a SQLite write and, in
-- PostgreSQL, an advisory lock make seq order commit order.
CREATE TABLE events (
    seq {serial},
    event_id TEXT NOT NULL UNIQUE,
    at {bigint} NOT NULL,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    secret_id TEXT NOT NULL,
    secret_arn TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    event_name TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_secret ON events (secret_arn, seq);
"#,
    ),
    (
        11,
        r#"
-- Webhook subscriptions to the event log; each delivers in seq order from its cursor.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    region TEXT NOT NULL,
    url TEXT NOT NULL,
    sealed_signing_secret {blob} NOT NULL,
    filter TEXT NOT NULL,
    cursor_seq {bigint} NOT NULL,
    created_at {bigint} NOT NULL
);
-- Events a subscription gave up on after its retries; redelivered on request.
CREATE TABLE dead_letters (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    seq {bigint} NOT NULL,
    attempts {bigint} NOT NULL,
    last_error TEXT NOT NULL,
    failed_at {bigint} NOT NULL,
    PRIMARY KEY (subscription_id, seq)
);
"#,
    ),
    (
        12,
        r#"
-- Principals: 'admin' (the bootstrap administrator: full rights, no policy evaluated), 'user'
-- and 'service' (allowed what their identity policies allow, and nothing else).
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at {bigint} NOT NULL
);
CREATE TABLE principal_policies (
    principal_name TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    policy_name TEXT NOT NULL,
    document TEXT NOT NULL,
    updated_at {bigint} NOT NULL,
    PRIMARY KEY (principal_name, policy_name)
);
-- Keys issued before principals existed: the administrator keeps full rights; every other
-- holder becomes a user with no policy, denied everything until a policy is attached.
INSERT INTO principals (name, kind, created_at)
    SELECT user_name, CASE WHEN user_name = 'admin' THEN 'admin' ELSE 'user' END, MIN(created_at)
    FROM access_keys WHERE expires_at IS NULL GROUP BY user_name;
ALTER TABLE access_keys ADD COLUMN session_token_hash {blob};
-- The audit log: append-only, one row per request, hash-chained in seq order.
CREATE TABLE audit_log (
    seq {bigint} PRIMARY KEY,
    at {bigint} NOT NULL,
    request_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    access_key_id TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    decision TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status {bigint} NOT NULL,
    source_ip TEXT NOT NULL,
    reason TEXT NOT NULL,
    prev_hash {blob} NOT NULL,
    hash {blob} NOT NULL
);
"#,
    ),
    (
        13,
        r#"
-- Who drives each rotation: one node at a time, until expires_at. token grows with every
-- takeover, and every engine write checks it in its transaction (fencing).
CREATE TABLE rotation_leases (
    lease_key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token {bigint} NOT NULL,
    expires_at {bigint} NOT NULL
);
"#,
    ),
    (
        14,
        r#"
-- A KMS key is a secret whose versions hold key material; key_meta says so (spec, usage,
-- enabled). Secrets keep it NULL.
ALTER TABLE secrets ADD COLUMN key_meta TEXT;
-- KMS aliases, one row per alias ARN. Deleting the key's secret deletes its aliases.
CREATE TABLE kms_aliases (
    alias_arn TEXT PRIMARY KEY,
    alias_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    created_at {bigint} NOT NULL,
    updated_at {bigint} NOT NULL
);
CREATE INDEX kms_aliases_secret ON kms_aliases (secret_id);
"#,
    ),
    (
        15,
        r#"
-- Who configured rotation (a principal ARN), and the database role Baton cloned for the
-- secret's alternating users: the built-in database rotators act only within both.
ALTER TABLE secrets ADD COLUMN rotation_configured_by TEXT;
ALTER TABLE secrets ADD COLUMN rotation_database_clone TEXT;
-- The principal that reports each consumer: another may not overwrite it while it lives.
ALTER TABLE consumers ADD COLUMN principal TEXT;
"#,
    ),
    (
        16,
        r#"
-- Small values of the whole deployment, sealed under the root key (the audit chain's key).
CREATE TABLE baton_meta (
    name TEXT PRIMARY KEY,
    value {blob} NOT NULL,
    updated_at {bigint} NOT NULL
);
-- The root key's state: which key wraps, and the latest rotation of it. One row.
CREATE TABLE root_key_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision {bigint} NOT NULL,
    primary_key TEXT NOT NULL,
    phase TEXT,
    new_key TEXT,
    old_keys TEXT NOT NULL,
    retired_keys TEXT NOT NULL,
    started_at {bigint},
    phase_at {bigint},
    rewrapped {bigint} NOT NULL,
    remaining {bigint} NOT NULL,
    note TEXT NOT NULL
);
-- Every node's heartbeat: the root keys it holds and the one it wraps with. seen_at is the
-- database's clock on PostgreSQL, so nodes' clocks need not agree.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at {bigint} NOT NULL,
    seen_at {bigint} NOT NULL,
    keys_held TEXT NOT NULL,
    wraps_with TEXT NOT NULL
);
"#,
    ),
    (
        17,
        r#"
-- What the request came through: the client's User-Agent, or `baton-console`.
ALTER TABLE audit_log ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
"#,
    ),
    (
        18,
        r#"
-- A namespace's secrets in creation order: an unfiltered listing reads one page, not every row.
CREATE INDEX secrets_namespace_created ON secrets (account_id, region, created_at, id);
"#,
    ),
    (
        19,
        r#"
-- A webhook rotator's execution policy: an IAM policy added to its steps' temporary key.
ALTER TABLE rotators ADD COLUMN execution_policy TEXT;
"#,
    ),
    (
        20,
        r#"
-- KMS grants: a grantee principal may perform some operations with one key. `body` is the
-- grant's operations and constraints as JSON; only the grant token's SHA-256 is kept.
-- Deleting the key's secret deletes its grants.
CREATE TABLE kms_grants (
    grant_id TEXT PRIMARY KEY,
    secret_id TEXT NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    key_arn TEXT NOT NULL,
    grantee TEXT NOT NULL,
    retiring TEXT,
    name TEXT,
    token_hash {blob} NOT NULL,
    body TEXT NOT NULL,
    created_at {bigint} NOT NULL
);
CREATE INDEX kms_grants_secret ON kms_grants (secret_id);
CREATE INDEX kms_grants_retiring ON kms_grants (retiring);
"#,
    ),
    (
        21,
        r#"
-- Whether a secret has ever had a tag: after every tag is removed DescribeSecret answers
-- `Tags: []`, and leaves `Tags` out for a secret never tagged, as AWS does.
ALTER TABLE secrets ADD COLUMN tagged BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE secrets SET tagged = TRUE WHERE id IN (SELECT secret_id FROM secret_tags);
"#,
    ),
    (
        22,
        r#"
-- Audit chains. `chain` '' is the shared chain, appended to under a lock: every entry of the
-- embedded store, and on PostgreSQL one registration entry per node process
-- (`baton:StartAuditChain`, naming the node's own chain). Each PostgreSQL node process appends
-- its requests' entries to its own chain, so nodes never wait for each other. `chain_seq` is
-- an entry's position in its chain (consecutive from 1); `seq` orders the whole log.
ALTER TABLE audit_log ADD COLUMN chain TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN chain_seq {bigint} NOT NULL DEFAULT 0;
UPDATE audit_log SET chain_seq = seq;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (chain, chain_seq);
CREATE INDEX audit_log_chain_starts ON audit_log (chain_seq)
    WHERE chain = '' AND action = 'baton:StartAuditChain';
{audit_seq}
"#,
    ),
];

/// PostgreSQL: `seq` comes from a sequence, so that nodes appending to their own chains take
/// positions without waiting for each other.
pub const AUDIT_SEQ_PG: &str = "CREATE SEQUENCE audit_log_seq OWNED BY audit_log.seq;
SELECT setval('audit_log_seq', COALESCE((SELECT MAX(seq) FROM audit_log), 0) + 1, false);
ALTER TABLE audit_log ALTER COLUMN seq SET DEFAULT nextval('audit_log_seq');";

/// The action of the shared chain's entry that registers a node's chain.
pub const START_AUDIT_CHAIN: &str = "baton:StartAuditChain";

/// A page of a namespace's secrets (not keys) in creation order, ascending; `$3` true keeps
/// those scheduled for deletion. `$4` rows from `$5` on.
pub const SECRET_ARNS_PAGE_ASC: &str = "SELECT arn FROM secrets WHERE account_id = $1 \
    AND region = $2 AND key_meta IS NULL AND ($3 OR deleted_at IS NULL) \
    ORDER BY created_at, id LIMIT $4 OFFSET $5";
/// ARNs of a namespace's secrets (not keys) whose name, description, a tag key or a tag value
/// contains `$3` (a LIKE pattern in lower case, `\` escaping), at most `$4`: the candidates of a
/// word search, which the caller then filters exactly. `{like}` is the engine's case-blind LIKE:
/// SQLite's LIKE already ignores ASCII case, PostgreSQL's ILIKE ignores every case. Two scans
/// (rows, then tags) rather than a subquery per row; in creation order, or newest first.
pub fn secret_arns_containing(like: &str, newest_first: bool) -> String {
    let order = if newest_first {
        "created_at DESC, id DESC"
    } else {
        "created_at, id"
    };
    format!(
        "SELECT arn FROM (SELECT s.arn, s.created_at, s.id FROM secrets s \
         WHERE s.account_id = $1 AND s.region = $2 AND s.key_meta IS NULL \
         AND (s.name {like} $3 ESCAPE '\\' OR s.description {like} $3 ESCAPE '\\') \
         UNION SELECT s.arn, s.created_at, s.id FROM secret_tags t \
         JOIN secrets s ON s.id = t.secret_id \
         WHERE s.account_id = $1 AND s.region = $2 AND s.key_meta IS NULL \
         AND (t.tag_key {like} $3 ESCAPE '\\' OR t.tag_value {like} $3 ESCAPE '\\')) AS m \
         ORDER BY {order} LIMIT $4"
    )
}
/// [`SECRET_ARNS_PAGE_ASC`], newest first.
pub const SECRET_ARNS_PAGE_DESC: &str = "SELECT arn FROM secrets WHERE account_id = $1 \
    AND region = $2 AND key_meta IS NULL AND ($3 OR deleted_at IS NULL) \
    ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5";

pub const INSERT_GRANT: &str = "INSERT INTO kms_grants (grant_id, secret_id, key_arn, grantee, \
    retiring, name, token_hash, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const SELECT_GRANT: &str = "SELECT grant_id, secret_id, key_arn, grantee, retiring, name, \
    token_hash, body, created_at FROM kms_grants WHERE grant_id = $1";
pub const GRANTS_OF_KEY: &str = "SELECT grant_id, secret_id, key_arn, grantee, retiring, name, \
    token_hash, body, created_at FROM kms_grants WHERE secret_id = $1 ORDER BY created_at, grant_id";
pub const GRANTS_RETIRABLE_BY: &str = "SELECT grant_id, secret_id, key_arn, grantee, retiring, \
    name, token_hash, body, created_at FROM kms_grants WHERE retiring = $1 \
    ORDER BY created_at, grant_id";
pub const DELETE_GRANT: &str = "DELETE FROM kms_grants WHERE grant_id = $1";

pub const INSERT_ALIAS: &str = "INSERT INTO kms_aliases (alias_arn, alias_name, key_id, \
    secret_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (alias_arn) DO NOTHING";
pub const UPDATE_ALIAS: &str = "UPDATE kms_aliases SET key_id = $2, secret_id = $3, \
    updated_at = $4 WHERE alias_arn = $1";
pub const DELETE_ALIAS: &str = "DELETE FROM kms_aliases WHERE alias_arn = $1";
pub const SELECT_ALIAS: &str = "SELECT alias_arn, alias_name, key_id, secret_id, created_at, \
    updated_at FROM kms_aliases WHERE alias_arn = $1";
/// `$1` is the ARN prefix of a namespace (`arn:aws:kms:<region>:<account>:alias/`).
pub const LIST_ALIASES: &str = "SELECT alias_arn, alias_name, key_id, secret_id, created_at, \
    updated_at FROM kms_aliases WHERE substr(alias_arn, 1, length($1)) = $1 ORDER BY alias_name";

pub const SECRET_COLUMNS: &str = "id, account_id, region, name, arn, description, kms_key_id, \
    resource_policy, rotation_enabled, rotation_lambda_arn, rotation_after_days, rotation_duration, \
    rotation_schedule, rotation_rules_set, last_rotated_at, created_at, last_changed_at, \
    last_accessed_at, deleted_at, purge_at, wrapped_data_key, revision, key_meta, \
    rotation_configured_by, rotation_database_clone, tagged";

pub const INSERT_SECRET: &str = "INSERT INTO secrets (id, account_id, region, name, arn, \
    description, kms_key_id, resource_policy, rotation_enabled, rotation_lambda_arn, \
    rotation_after_days, rotation_duration, rotation_schedule, rotation_rules_set, last_rotated_at, \
    created_at, last_changed_at, last_accessed_at, deleted_at, purge_at, wrapped_data_key, revision, \
    key_meta, rotation_configured_by, rotation_database_clone, tagged) VALUES ($1, $2, $3, $4, $5, \
    $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, \
    $26)";

/// Updates the mutable columns if the revision is unchanged. Parameters: $1 id, $2 expected
/// revision, then the same values as [`SecretRow`] from description on.
pub const UPDATE_SECRET: &str = "UPDATE secrets SET description = $3, kms_key_id = $4, \
    resource_policy = $5, rotation_enabled = $6, rotation_lambda_arn = $7, \
    rotation_after_days = $8, rotation_duration = $9, rotation_schedule = $10, \
    rotation_rules_set = $11, last_rotated_at = $12, last_changed_at = $13, \
    last_accessed_at = $14, deleted_at = $15, purge_at = $16, key_meta = $17, \
    wrapped_data_key = $18, rotation_configured_by = $19, rotation_database_clone = $20, \
    tagged = $21, revision = $2 + 1 \
    WHERE id = $1 AND revision = $2";

/// Versions with their labels, one row per (version, label); a version without labels has one
/// row with a NULL label. Rows of one version are adjacent.
pub const SELECT_VERSIONS_AND_LABELS: &str = "SELECT v.version_id, v.created_at, v.kind, \
    v.sealed_value, l.label FROM secret_versions v LEFT JOIN secret_labels l \
    ON l.secret_id = v.secret_id AND l.version_id = v.version_id \
    WHERE v.secret_id = $1 ORDER BY v.created_at, v.version_id";
/// A namespace's secret rows, oldest first.
pub fn select_namespace_secrets() -> String {
    format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE account_id = $1 AND region = $2 \
         ORDER BY created_at, id"
    )
}
/// Every tag of a namespace's secrets, grouped by secret, in each secret's order.
pub const SELECT_NAMESPACE_TAGS: &str = "SELECT t.secret_id, t.tag_key, t.tag_value \
    FROM secret_tags t JOIN secrets s ON s.id = t.secret_id \
    WHERE s.account_id = $1 AND s.region = $2 ORDER BY t.secret_id, t.position";
/// Every replica of a namespace's secrets, grouped by secret, in each secret's order.
pub const SELECT_NAMESPACE_REPLICAS: &str = "SELECT r.secret_id, r.region, r.kms_key_id, \
    r.last_accessed_at FROM secret_replicas r JOIN secrets s ON s.id = r.secret_id \
    WHERE s.account_id = $1 AND s.region = $2 ORDER BY r.secret_id, r.position";
pub const SELECT_TAGS: &str =
    "SELECT tag_key, tag_value FROM secret_tags WHERE secret_id = $1 ORDER BY position";
pub const INSERT_VERSION: &str = "INSERT INTO secret_versions (secret_id, version_id, created_at, \
    kind, sealed_value) VALUES ($1, $2, $3, $4, $5)";
pub const DELETE_VERSION: &str =
    "DELETE FROM secret_versions WHERE secret_id = $1 AND version_id = $2";
pub const SELECT_VERSION_IDS: &str =
    "SELECT version_id, kind FROM secret_versions WHERE secret_id = $1";
/// Versions are immutable once they hold a value; an empty one (a rotation's placeholder) is
/// filled exactly once.
pub const FILL_VERSION: &str = "UPDATE secret_versions SET kind = $3, sealed_value = $4 \
    WHERE secret_id = $1 AND version_id = $2 AND kind = 'empty'";
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
pub const SELECT_POLICY: &str = "SELECT propagation_delay_ms, gate_wait_max_ms, retire_grace_ms, \
    step_attempts_max, blackouts, kill_sessions FROM rotation_policies WHERE secret_id = $1";
pub const DELETE_POLICY: &str = "DELETE FROM rotation_policies WHERE secret_id = $1";
pub const INSERT_POLICY: &str = "INSERT INTO rotation_policies (secret_id, propagation_delay_ms, \
    gate_wait_max_ms, retire_grace_ms, step_attempts_max, blackouts, kill_sessions) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
const ROTATION_COLUMNS: &str = "version_id, old_version_id, phase, phase_started_at, status, \
    stopped_step, stopped_reason, in_flight, attempts, retry_at, alerted, gate_ready_since, \
    started_at, timeline, due_at";
/// The latest rotation of a secret.
pub const SELECT_ROTATION: &str = "SELECT version_id, old_version_id, phase, phase_started_at, \
    status, stopped_step, stopped_reason, in_flight, attempts, retry_at, alerted, gate_ready_since, \
    started_at, timeline, due_at FROM rotations WHERE secret_id = $1 \
    ORDER BY started_at DESC, version_id DESC LIMIT 1";
/// A secret's rotations, newest first, at most $2.
pub fn select_rotation_history() -> String {
    format!(
        "SELECT {ROTATION_COLUMNS} FROM rotations WHERE secret_id = $1 \
         ORDER BY started_at DESC, version_id DESC LIMIT $2"
    )
}
pub const DELETE_ROTATION: &str = "DELETE FROM rotations WHERE secret_id = $1 AND version_id = $2";
pub const INSERT_ROTATION: &str = "INSERT INTO rotations (secret_id, version_id, old_version_id, \
    phase, phase_started_at, status, stopped_step, stopped_reason, in_flight, attempts, retry_at, \
    alerted, gate_ready_since, started_at, timeline, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
    $8, $9, $10, $11, $12, $13, $14, $15, $16)";
/// ARNs of secrets whose rotation in flight, or whose schedule, is due at or before $1, soonest
/// first, at most $2 (a secret may appear twice). Both halves read an index on the due time.
pub const ROTATIONS_DUE: &str = "SELECT s.arn, d.due FROM ( \
    SELECT * FROM (SELECT secret_id, due_at AS due FROM rotations \
        WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT $2) AS a \
    UNION ALL \
    SELECT * FROM (SELECT secret_id, next_rotation_at AS due FROM rotation_schedules \
        WHERE next_rotation_at <= $1 ORDER BY next_rotation_at LIMIT $2) AS b \
    ) AS d JOIN secrets s ON s.id = d.secret_id ORDER BY d.due LIMIT $2";
/// ARNs of a namespace's rotations in flight, earliest started first, at most $3.
pub const OPEN_ROTATIONS: &str = "SELECT s.arn FROM rotations r JOIN secrets s ON s.id = \
    r.secret_id WHERE r.status IN ('running', 'stopped') AND s.account_id = $1 AND s.region = $2 \
    ORDER BY r.started_at, s.arn LIMIT $3";
/// ARNs of a namespace's scheduled rotations at or before $3, soonest first, at most $4.
pub const SCHEDULED_ROTATIONS: &str = "SELECT s.arn, s.name, r.next_rotation_at FROM \
    rotation_schedules r JOIN secrets s ON s.id = r.secret_id WHERE r.next_rotation_at <= $3 \
    AND s.account_id = $1 AND s.region = $2 ORDER BY r.next_rotation_at, s.arn LIMIT $4";
pub const NEXT_ROTATION_DUE: &str = "SELECT MIN(due) FROM ( \
    SELECT MIN(due_at) AS due FROM rotations WHERE due_at IS NOT NULL \
    UNION ALL SELECT MIN(next_rotation_at) AS due FROM rotation_schedules) AS d";
pub const SELECT_SCHEDULE: &str =
    "SELECT next_rotation_at FROM rotation_schedules WHERE secret_id = $1";
pub const DELETE_SCHEDULE: &str = "DELETE FROM rotation_schedules WHERE secret_id = $1";
pub const INSERT_SCHEDULE: &str =
    "INSERT INTO rotation_schedules (secret_id, next_rotation_at) VALUES ($1, $2)";
pub const INSERT_ROTATOR: &str = "INSERT INTO rotators (name, kind, target, \
    sealed_signing_secret, timeout_ms, created_at, execution_policy) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const SELECT_ROTATOR: &str = "SELECT name, kind, target, sealed_signing_secret, timeout_ms, \
    created_at, execution_policy FROM rotators WHERE name = $1";
pub const LIST_ROTATORS: &str = "SELECT name, kind, target, sealed_signing_secret, timeout_ms, \
    created_at, execution_policy FROM rotators ORDER BY name";
pub const DELETE_ROTATOR: &str = "DELETE FROM rotators WHERE name = $1";
/// Skips a secret that no longer exists rather than failing the batch.
/// Replaces a consumer's row only for the principal that owns it, or once its lease ended.
pub const UPSERT_CONSUMER: &str = "INSERT INTO consumers (secret_id, application, instance_id, \
    current_version, accepted_versions, last_seen_at, lease_expires_at, principal) \
    SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), \
    CAST($5 AS TEXT), CAST($6 AS BIGINT), CAST($7 AS BIGINT), CAST($8 AS TEXT) \
    WHERE EXISTS (SELECT 1 FROM secrets WHERE id = $1) \
    ON CONFLICT (secret_id, application, instance_id) DO UPDATE SET \
    current_version = excluded.current_version, accepted_versions = excluded.accepted_versions, \
    last_seen_at = excluded.last_seen_at, lease_expires_at = excluded.lease_expires_at, \
    principal = excluded.principal \
    WHERE consumers.principal IS NULL OR consumers.principal = excluded.principal \
    OR consumers.lease_expires_at <= excluded.last_seen_at";
/// Whether a consumer has a row: after an upsert that wrote nothing, an owned one.
pub const CONSUMER_EXISTS: &str = "SELECT 1 FROM consumers WHERE secret_id = $1 \
    AND application = $2 AND instance_id = $3";
pub const LIST_CONSUMERS: &str = "SELECT secret_id, application, instance_id, current_version, \
    accepted_versions, last_seen_at, lease_expires_at, principal FROM consumers \
    WHERE secret_id = $1 ORDER BY application, instance_id";
pub const DELETE_CONSUMERS_EXPIRED: &str = "DELETE FROM consumers WHERE lease_expires_at < $1";
pub const RECORD_PLAIN_READ: &str = "INSERT INTO plain_reads (secret_id, last_read_at) \
    SELECT CAST($1 AS TEXT), CAST($2 AS BIGINT) WHERE EXISTS (SELECT 1 FROM secrets WHERE id = $1) \
    ON CONFLICT (secret_id) DO UPDATE SET last_read_at = excluded.last_read_at \
    WHERE excluded.last_read_at > plain_reads.last_read_at";
pub const SELECT_PLAIN_READ: &str = "SELECT last_read_at FROM plain_reads WHERE secret_id = $1";
pub const INSERT_EVENT: &str = "INSERT INTO events (event_id, at, account_id, region, secret_id, \
    secret_arn, secret_name, event_name, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const LIST_EVENTS: &str = "SELECT seq, event_id, at, account_id, region, secret_id, secret_arn, \
    secret_name, event_name, detail FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";
pub const LIST_EVENTS_OF_SECRET: &str = "SELECT seq, event_id, at, account_id, region, secret_id, \
    secret_arn, secret_name, event_name, detail FROM events WHERE seq > $1 AND secret_arn = $3 \
    ORDER BY seq LIMIT $2";
pub const INSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (id, account_id, region, url, \
    sealed_signing_secret, filter, cursor_seq, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub const LIST_SUBSCRIPTIONS: &str = "SELECT id, account_id, region, url, sealed_signing_secret, \
    filter, cursor_seq, created_at FROM subscriptions ORDER BY created_at, id";
pub const DELETE_SUBSCRIPTION: &str = "DELETE FROM subscriptions WHERE id = $1";
pub const ADVANCE_SUBSCRIPTION: &str =
    "UPDATE subscriptions SET cursor_seq = $2 WHERE id = $1 AND cursor_seq < $2";
pub const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters (subscription_id, seq, attempts, \
    last_error, failed_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscription_id, seq) DO NOTHING";
pub const LIST_DEAD_LETTERS: &str = "SELECT subscription_id, seq, attempts, last_error, failed_at \
    FROM dead_letters ORDER BY subscription_id, seq";
pub const DELETE_DEAD_LETTER: &str =
    "DELETE FROM dead_letters WHERE subscription_id = $1 AND seq = $2";
pub const SELECT_EVENT: &str = "SELECT seq, event_id, at, account_id, region, secret_id, secret_arn, \
    secret_name, event_name, detail FROM events WHERE seq = $1";
pub const LAST_EVENT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";
pub const DELETE_EVENTS_BEFORE: &str = "DELETE FROM events WHERE at < $1";
pub const DELETE_SECRET: &str = "DELETE FROM secrets WHERE id = $1";
pub const DUE_FOR_PURGE: &str = "SELECT arn FROM secrets WHERE purge_at IS NOT NULL AND purge_at <= $1 ORDER BY purge_at LIMIT $2";
pub const INSERT_ACCESS_KEY: &str = "INSERT INTO access_keys (access_key_id, sealed_secret, \
    user_name, created_at, scope_arn, expires_at, session_token_hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const SELECT_ACCESS_KEY: &str = "SELECT access_key_id, sealed_secret, user_name, created_at, \
    scope_arn, expires_at, session_token_hash FROM access_keys WHERE access_key_id = $1";
/// Permanent keys only: temporary credentials are not listed.
pub const LIST_ACCESS_KEYS: &str = "SELECT access_key_id, sealed_secret, user_name, created_at, \
    scope_arn, expires_at, session_token_hash FROM access_keys WHERE expires_at IS NULL \
    ORDER BY created_at, access_key_id";
pub const DELETE_ACCESS_KEYS_OF: &str = "DELETE FROM access_keys WHERE user_name = $1";
pub const INSERT_PRINCIPAL: &str =
    "INSERT INTO principals (name, kind, created_at) VALUES ($1, $2, $3)";
pub const SELECT_PRINCIPAL: &str = "SELECT name, kind, created_at FROM principals WHERE name = $1";
pub const LIST_PRINCIPALS: &str = "SELECT name, kind, created_at FROM principals ORDER BY name";
pub const DELETE_PRINCIPAL: &str = "DELETE FROM principals WHERE name = $1";
pub const UPSERT_PRINCIPAL_POLICY: &str = "INSERT INTO principal_policies (principal_name, \
    policy_name, document, updated_at) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (principal_name, policy_name) DO UPDATE SET document = excluded.document, \
    updated_at = excluded.updated_at";
pub const DELETE_PRINCIPAL_POLICY: &str =
    "DELETE FROM principal_policies WHERE principal_name = $1 AND policy_name = $2";
pub const LIST_PRINCIPAL_POLICIES: &str = "SELECT principal_name, policy_name, document, \
    updated_at FROM principal_policies WHERE principal_name = $1 ORDER BY policy_name";
/// `$3` is "now" in milliseconds: a parameter for SQLite, the database's clock for PostgreSQL.
pub const ACQUIRE_LEASE: &str = "INSERT INTO rotation_leases (lease_key, holder, token, expires_at) \
    VALUES ($1, $2, 1, $3 + $4) ON CONFLICT (lease_key) DO UPDATE SET \
    token = CASE WHEN rotation_leases.holder = excluded.holder AND rotation_leases.expires_at > $3 \
    THEN rotation_leases.token ELSE rotation_leases.token + 1 END, \
    holder = excluded.holder, expires_at = excluded.expires_at \
    WHERE rotation_leases.holder = excluded.holder OR rotation_leases.expires_at <= $3 \
    RETURNING token";
pub const RELEASE_LEASE: &str = "UPDATE rotation_leases SET expires_at = 0 \
    WHERE lease_key = $1 AND holder = $2 AND token = $3";
pub const CHECK_FENCE: &str = "SELECT token FROM rotation_leases \
    WHERE lease_key = $1 AND holder = $2 AND token = $3";
/// Rotations that are running or stopped, by phase and status, and how many of them are past
/// a gate's maximum wait: counts only, never per secret.
pub const ROTATION_COUNTS: &str = "SELECT phase, status, COUNT(*), \
    COALESCE(SUM(CASE WHEN alerted THEN 1 ELSE 0 END), 0) FROM rotations \
    WHERE status IN ('running', 'stopped') GROUP BY phase, status";
/// Live reporting consumers, and how many of them do not yet use the current version.
pub const CONSUMER_COUNTS: &str = "SELECT COUNT(*), COALESCE(SUM(CASE WHEN l.version_id IS NULL \
    OR c.current_version IS NULL OR c.current_version <> l.version_id THEN 1 ELSE 0 END), 0) \
    FROM consumers c LEFT JOIN secret_labels l ON l.secret_id = c.secret_id \
    AND l.label = 'AWSCURRENT' WHERE c.lease_expires_at > $1";
pub const DEAD_LETTER_COUNT: &str = "SELECT COUNT(*) FROM dead_letters";
/// Events not yet delivered to a subscription of their namespace (before its filter).
pub const DELIVERY_BACKLOG: &str = "SELECT COUNT(*) FROM subscriptions s JOIN events e \
    ON e.seq > s.cursor_seq AND e.account_id = s.account_id AND e.region = s.region";
pub const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
pub const LAST_AUDIT: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
/// A chain's last entry: its position and hash.
pub const AUDIT_CHAIN_END: &str = "SELECT chain_seq, hash FROM audit_log WHERE chain = $1 \
    ORDER BY chain_seq DESC LIMIT 1";
/// The columns every read of the audit log returns, in this order.
macro_rules! audit_columns {
    () => {
        "seq, at, request_id, principal, access_key_id, action, resource, decision, outcome, \
         status, source_ip, reason, prev_hash, hash, user_agent, chain, chain_seq"
    };
}
pub const INSERT_AUDIT: &str = concat!(
    "INSERT INTO audit_log (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);
/// PostgreSQL: a whole batch of audit entries in one statement, one array per column; `seq`
/// comes from the column's sequence.
pub const INSERT_AUDIT_BATCH_PG: &str = "INSERT INTO audit_log (at, request_id, principal, \
    access_key_id, action, resource, decision, outcome, status, source_ip, reason, prev_hash, \
    hash, user_agent, chain, chain_seq) SELECT * FROM UNNEST($1::bigint[], $2::text[], \
    $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], \
    $10::text[], $11::text[], $12::bytea[], $13::bytea[], $14::text[], $15::text[], \
    $16::bigint[]) RETURNING chain_seq, seq";
pub const LIST_AUDIT: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
);
/// One chain's entries after a position, in chain order.
pub const LIST_AUDIT_CHAIN: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_log WHERE chain = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3"
);
/// Every chain with its last position and hash (NULL before its first entry): the shared
/// chain first, then the node chains in the order they were registered. The registrations come
/// from the partial index, and each end is a probe of the `(chain, chain_seq)` index.
pub const AUDIT_CHAIN_ENDS: &str = "SELECT c.chain, (SELECT MAX(a.chain_seq) FROM audit_log a \
    WHERE a.chain = c.chain), (SELECT a.hash FROM audit_log a WHERE a.chain = c.chain \
    ORDER BY a.chain_seq DESC LIMIT 1) FROM (SELECT CAST('' AS TEXT) AS chain, CAST(0 AS BIGINT) AS first \
    UNION ALL SELECT resource, MIN(chain_seq) FROM audit_log WHERE chain = '' \
    AND action = 'baton:StartAuditChain' GROUP BY resource) c ORDER BY c.first";
/// The shared chain's registrations of node chains, in order (a partial index serves it).
pub const AUDIT_CHAIN_STARTS: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_log WHERE chain = '' AND action = 'baton:StartAuditChain' ORDER BY chain_seq"
);
pub const DELETE_ACCESS_KEY: &str = "DELETE FROM access_keys WHERE access_key_id = $1";

/// One row of [`SELECT_VERSIONS_AND_LABELS`]: version id, creation time, kind, sealed value, and
/// one of its labels.
pub type VersionRow = (String, i64, String, Vec<u8>, Option<String>);

/// A `rotation_policies` row: delays in ms, attempts, blackouts as `HH:MM-HH:MM,…`, and
/// whether sessions may be ended.
pub type PolicyRow = (i64, i64, i64, i64, String, bool);

pub fn policy_row(policy: &RotationPolicy) -> PolicyRow {
    (
        policy.propagation_delay_ms,
        policy.gate_wait_max_ms,
        policy.retire_grace_ms,
        i64::from(policy.step_attempts_max),
        policy
            .blackouts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        policy.kill_sessions_after_max_wait,
    )
}

fn policy_from_row(row: PolicyRow) -> Result<RotationPolicy, StoreError> {
    let (propagation_delay_ms, gate_wait_max_ms, retire_grace_ms, attempts, blackouts, kill) = row;
    let blackouts = blackouts
        .split(',')
        .filter(|b| !b.is_empty())
        .map(|b| Blackout::parse(b).ok_or_else(|| StoreError::Corrupt(format!("blackout {b}"))))
        .collect::<Result<_, _>>()?;
    Ok(RotationPolicy {
        propagation_delay_ms,
        gate_wait_max_ms,
        retire_grace_ms,
        step_attempts_max: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("step_attempts_max {attempts}")))?,
        blackouts,
        kill_sessions_after_max_wait: kill,
        ..RotationPolicy::default()
    })
}

/// A `rotations` row, in [`SELECT_ROTATION`] order.
#[derive(Debug)]
pub struct RotationRow {
    pub version_id: String,
    pub old_version_id: Option<String>,
    pub phase: String,
    pub phase_started_at: i64,
    pub status: String,
    pub stopped_step: Option<String>,
    pub stopped_reason: Option<String>,
    pub in_flight: Option<String>,
    pub attempts: i64,
    pub retry_at: Option<i64>,
    pub alerted: bool,
    pub gate_ready_since: Option<i64>,
    pub started_at: i64,
    pub timeline: String,
    pub due_at: Option<i64>,
}

impl RotationRow {
    pub fn from_state(state: &RotationState) -> Self {
        let m = &state.machine;
        let (status, stopped_step, stopped_reason) = match &m.status {
            Status::Running => ("running", None, None),
            Status::Stopped { step, reason } => (
                "stopped",
                Some(step.as_str().to_owned()),
                Some(reason.clone()),
            ),
            Status::Succeeded => ("succeeded", None, None),
            Status::Cancelled => ("cancelled", None, None),
        };
        RotationRow {
            version_id: m.version_id.clone(),
            old_version_id: m.old_version_id.clone(),
            phase: m.phase.as_str().to_owned(),
            phase_started_at: m.phase_started_at,
            status: status.to_owned(),
            stopped_step,
            stopped_reason,
            in_flight: m.in_flight.map(|s| s.as_str().to_owned()),
            attempts: i64::from(m.attempts),
            retry_at: m.retry_at,
            alerted: m.alerted,
            gate_ready_since: m.gate_ready_since,
            started_at: m.started_at,
            timeline: state
                .timeline
                .iter()
                .map(|e| format!("{}\t{}\n", e.at, e.event))
                .collect(),
            due_at: state.due_at,
        }
    }

    pub fn into_state(
        self,
        secret_id: &str,
        policy: RotationPolicy,
    ) -> Result<RotationState, StoreError> {
        let corrupt =
            |what: String| StoreError::Corrupt(format!("rotation of {secret_id}: {what}"));
        let step = |s: &str| Step::parse(s).ok_or_else(|| corrupt(format!("step {s}")));
        let status = match self.status.as_str() {
            "running" => Status::Running,
            "stopped" => Status::Stopped {
                step: step(self.stopped_step.as_deref().unwrap_or_default())?,
                reason: self.stopped_reason.unwrap_or_default(),
            },
            "succeeded" => Status::Succeeded,
            "cancelled" => Status::Cancelled,
            other => return Err(corrupt(format!("status {other}"))),
        };
        let timeline = self
            .timeline
            .lines()
            .map(|line| {
                let (at, event) = line
                    .split_once('\t')
                    .ok_or_else(|| corrupt(format!("timeline line {line}")))?;
                Ok(TimelineEntry {
                    at: at
                        .parse()
                        .map_err(|_| corrupt(format!("timeline time {at}")))?,
                    event: event.to_owned(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(RotationState {
            machine: Rotation {
                secret_id: secret_id.to_owned(),
                version_id: self.version_id,
                old_version_id: self.old_version_id,
                policy,
                phase: Phase::parse(&self.phase)
                    .ok_or_else(|| corrupt(format!("phase {}", self.phase)))?,
                phase_started_at: self.phase_started_at,
                status,
                in_flight: self.in_flight.as_deref().map(step).transpose()?,
                attempts: u32::try_from(self.attempts)
                    .map_err(|_| corrupt(format!("attempts {}", self.attempts)))?,
                retry_at: self.retry_at,
                alerted: self.alerted,
                gate_ready_since: self.gate_ready_since,
                started_at: self.started_at,
            },
            timeline,
            due_at: self.due_at,
        })
    }
}

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
    /// [`baton_core::KeyMeta::to_text`] of a KMS key's keyring, NULL for a secret.
    pub key_meta: Option<String>,
    pub rotation_configured_by: Option<String>,
    pub rotation_database_clone: Option<String>,
    pub tagged: bool,
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
            key_meta: secret.key.as_ref().map(baton_core::KeyMeta::to_text),
            rotation_configured_by: secret.rotation.configured_by.clone(),
            rotation_database_clone: secret.rotation.database_clone.clone(),
            tagged: secret.tagged,
        }
    }

    /// Rebuilds the record from its row and child rows, checking the invariants after reading.
    pub fn into_record(
        self,
        versions: Vec<VersionRow>,
        tags: Vec<(String, String)>,
        replicas: Vec<(String, Option<String>, Option<i64>)>,
        policy: Option<PolicyRow>,
        rotation: Option<RotationRow>,
        next_rotation_at: Option<i64>,
    ) -> Result<SecretRecord, StoreError> {
        let rotation_policy = policy.map(policy_from_row).transpose()?;
        let rotation_state = rotation
            .map(|r| r.into_state(&self.id, rotation_policy.clone().unwrap_or_default()))
            .transpose()?;
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
        let key = self
            .key_meta
            .as_deref()
            .map(|text| {
                baton_core::KeyMeta::parse_text(text).ok_or_else(|| {
                    StoreError::Corrupt(format!("secret {} has key_meta {text:?}", self.id))
                })
            })
            .transpose()?;
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
            tagged: self.tagged,
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
                next_rotation_at,
                configured_by: self.rotation_configured_by,
                database_clone: self.rotation_database_clone,
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
            rotation_policy,
            rotation_state,
            revision: self.revision,
            key,
            outbox: vec![],
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

/// A `rotators` row as both engines read it.
#[derive(Debug)]
pub struct RotatorRow {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub sealed_signing_secret: Option<Vec<u8>>,
    pub timeout_ms: i64,
    pub created_at: i64,
    pub execution_policy: Option<String>,
}

impl RotatorRow {
    pub fn from_record(r: &crate::RotatorRecord) -> Self {
        let (kind, target, sealed) = match &r.target {
            crate::RotatorTarget::Command(command) => ("command", command.clone(), None),
            crate::RotatorTarget::Webhook {
                url,
                sealed_signing_secret,
            } => ("webhook", url.clone(), Some(sealed_signing_secret.clone())),
        };
        Self {
            name: r.name.clone(),
            kind: kind.to_owned(),
            target,
            sealed_signing_secret: sealed,
            timeout_ms: r.timeout_ms,
            created_at: r.created_at,
            execution_policy: r.execution_policy.clone(),
        }
    }

    pub fn into_record(self) -> Result<crate::RotatorRecord, StoreError> {
        let target = match (self.kind.as_str(), self.sealed_signing_secret) {
            ("command", _) => crate::RotatorTarget::Command(self.target),
            ("webhook", Some(sealed)) => crate::RotatorTarget::Webhook {
                url: self.target,
                sealed_signing_secret: sealed,
            },
            (kind, _) => {
                return Err(StoreError::Corrupt(format!(
                    "rotator {} has kind {kind:?} without what that kind needs",
                    self.name
                )));
            }
        };
        Ok(crate::RotatorRecord {
            name: self.name,
            target,
            timeout_ms: self.timeout_ms,
            created_at: self.created_at,
            execution_policy: self.execution_policy,
        })
    }
}

/// A `consumers` row as both engines read it; the accepted versions are a JSON array.
#[derive(Debug)]
pub struct ConsumerRow {
    pub secret_id: String,
    pub application: String,
    pub instance_id: String,
    pub current_version: Option<String>,
    pub accepted_versions: String,
    pub last_seen_at: i64,
    pub lease_expires_at: i64,
    pub principal: Option<String>,
}

impl ConsumerRow {
    pub fn from_record(r: &crate::ConsumerRecord) -> Self {
        Self {
            secret_id: r.secret_id.clone(),
            application: r.application.clone(),
            instance_id: r.instance_id.clone(),
            current_version: r.current_version.clone(),
            accepted_versions: serde_json::to_string(&r.accepted_versions)
                .unwrap_or_else(|_| "[]".to_owned()),
            last_seen_at: r.last_seen_at,
            lease_expires_at: r.lease_expires_at,
            principal: Some(r.principal.clone()),
        }
    }

    pub fn into_record(self) -> Result<crate::ConsumerRecord, StoreError> {
        let accepted_versions = serde_json::from_str(&self.accepted_versions).map_err(|e| {
            StoreError::Corrupt(format!(
                "consumer {}/{}: accepted versions: {e}",
                self.application, self.instance_id
            ))
        })?;
        Ok(crate::ConsumerRecord {
            secret_id: self.secret_id,
            application: self.application,
            instance_id: self.instance_id,
            current_version: self.current_version,
            accepted_versions,
            last_seen_at: self.last_seen_at,
            lease_expires_at: self.lease_expires_at,
            principal: self.principal.unwrap_or_default(),
        })
    }
}

/// Tags and replicas read for a whole namespace, by secret id.
pub type Heads = (
    std::collections::HashMap<String, Vec<(String, String)>>,
    std::collections::HashMap<String, Vec<(String, Option<String>, Option<i64>)>>,
);

/// Assembles heads (see `Store::list_secret_heads`) from the secrets' rows and the
/// namespace's tags and replicas.
pub fn heads(
    rows: Vec<SecretRow>,
    (mut tags, mut replicas): Heads,
) -> Result<Vec<SecretRecord>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let t = tags.remove(&row.id).unwrap_or_default();
            let r = replicas.remove(&row.id).unwrap_or_default();
            row.into_record(Vec::new(), t, r, None, None, None)
        })
        .collect()
}

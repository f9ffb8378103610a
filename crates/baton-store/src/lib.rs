//! Persistence for Baton: one [`Store`] trait, an embedded SQLite engine (the default) and a
//! PostgreSQL engine for several nodes, and a conformance suite that both must pass.
//!
//! Architecture invariants:
//! - the store never sees plaintext: secret values and access-key secrets arrive sealed;
//! - the store checks no business rule except those the database enforces better than code
//!   (a label is on at most one version of a secret; a name is unique in its namespace);
//! - every write of a secret is one transaction, guarded by the secret's revision, so a writer
//!   that read a stale secret fails with [`StoreError::Conflict`] instead of overwriting.

use async_trait::async_trait;
use baton_core::{SecretRecord, Timestamp};

mod cache;
mod changes;
pub mod conformance;
mod postgres;
pub mod root_keys;
mod schema;
pub mod snapshot;
mod sqlite;

pub use cache::{CACHE_BYTES_DEFAULT, CACHE_BYTES_MIN};
pub use changes::ChangeFeed;
pub use postgres::PostgresStore;
pub use root_keys::{NodeRecord, RootKeyStateRecord, SealedBlob, SealedKind, SealedReplacement};
pub use schema::START_AUDIT_CHAIN;
pub use sqlite::SqliteStore;

/// Keeps the first occurrence of each item, in order.
pub(crate) fn dedup_in_order(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A secret or replica with this name already exists in the namespace, live or scheduled
    /// for deletion.
    #[error("a secret with this name already exists in the namespace")]
    NameTaken,
    /// The secret changed since it was read; reload and retry.
    #[error("the secret was changed concurrently; retry")]
    Conflict,
    /// The row or record does not exist.
    #[error("not found")]
    NotFound,
    /// A database constraint refused the write (a bug upstream: the domain should have caught it).
    #[error("database constraint violated: {0}")]
    Constraint(String),
    /// The database returned data this version of Baton cannot read.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Backend(String),
    /// A fenced write whose lease was taken over (or lapsed) since it was acquired: nothing
    /// was written.
    #[error("the lease was lost to another holder; nothing was written")]
    FencedOut,
    /// An operation refused before writing anything; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
}

/// What [`Store::operational_counts`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationalCounts {
    /// (phase, status, rotations, of which past a gate's maximum wait), for running and
    /// stopped rotations.
    pub rotations: Vec<(String, String, i64, i64)>,
    pub consumers_live: i64,
    /// Live consumers whose current version is not the secret's AWSCURRENT.
    pub consumers_lagging: i64,
    pub dead_letters: i64,
    pub delivery_backlog: i64,
    /// The connection pool, for engines that have one.
    pub pool: Option<PoolCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub max: i64,
    pub open: i64,
    pub idle: i64,
    /// Requests waiting for a connection.
    pub waiting: i64,
}

/// A write made under a lease: it commits only while `holder` still holds `key` with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: String,
    pub holder: String,
    pub token: i64,
}

/// The schema version this build knows; a database at it or beyond is ready for this node.
/// `text` as a LIKE pattern that matches it anywhere, in lower case, with `\` escaping.
pub fn containing_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

pub fn latest_schema_version() -> i64 {
    schema::MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// An access key that Baton issued. The secret half is sealed under the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub sealed_secret: Vec<u8>,
    pub user_name: String,
    pub created_at: Timestamp,
    /// A temporary key may act on this secret only.
    pub scope_arn: Option<String>,
    /// A temporary key stops working at this time.
    pub expires_at: Option<Timestamp>,
    /// Temporary credentials: SHA-256 of the session token that each request must carry.
    pub session_token_hash: Option<Vec<u8>>,
}

/// A KMS alias: a name (`alias/…`) that points at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// `arn:aws:kms:<region>:<account>:alias/<name>`, unique.
    pub alias_arn: String,
    /// `alias/<name>`.
    pub alias_name: String,
    pub key_id: String,
    /// The key's secret; deleting it deletes the alias.
    pub secret_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A KMS grant: `grantee` may perform some operations with one key, under the grant's
/// constraints, until the grant is retired or revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub grant_id: String,
    /// The key's secret; deleting it deletes the grant.
    pub secret_id: String,
    pub key_arn: String,
    pub grantee: String,
    pub retiring: Option<String>,
    pub name: Option<String>,
    /// SHA-256 of the grant token; the token itself is returned once, by CreateGrant.
    pub token_hash: Vec<u8>,
    /// The operations and constraints, as JSON (`{"Operations": [...], "Constraints": {...}}`).
    pub body: String,
    pub created_at: Timestamp,
}

/// Who may call Baton: the bootstrap administrator, or a user or service whose identity
/// policies say what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub name: String,
    /// `admin`, `user` or `service`.
    pub kind: String,
    pub created_at: Timestamp,
}

/// An identity policy attached to a principal, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalPolicyRecord {
    pub principal_name: String,
    pub policy_name: String,
    /// The IAM JSON document, as given.
    pub document: String,
    pub updated_at: Timestamp,
}

/// One entry of the audit log: one request, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRecord {
    /// Its position in the whole log, which orders listings: assigned by the store on append,
    /// increasing, and consecutive on the embedded store. On PostgreSQL it comes from a
    /// sequence, so it can have gaps and an entry can commit after one with a higher `seq`.
    pub seq: i64,
    pub at: Timestamp,
    pub request_id: String,
    /// The caller's ARN, or empty when the request was not authenticated.
    pub principal: String,
    pub access_key_id: String,
    /// `secretsmanager:GetSecretValue`, `baton:CreatePrincipal`, ...
    pub action: String,
    /// The resource as the caller named it, or `*`.
    pub resource: String,
    /// `allow`, `deny`, or `none` when the request was refused before authorization.
    pub decision: String,
    /// `ok` or the error type the caller received.
    pub outcome: String,
    pub status: i64,
    pub source_ip: String,
    /// Why the decision was made: the policy that allowed or denied.
    pub reason: String,
    /// The previous entry's hash (empty for the first).
    pub prev_hash: Vec<u8>,
    /// A keyed hash of `prev_hash` and this entry's fields.
    pub hash: Vec<u8>,
    /// What the request came through: the client's `User-Agent` (shortened, printable), or
    /// `baton-console`. Empty in entries written before it was recorded.
    pub user_agent: String,
    /// The chain it belongs to: empty for the shared chain, else a node process's own chain.
    pub chain: String,
    /// Its position in its chain: consecutive from 1.
    pub chain_seq: i64,
}

/// Computes an entry's hash from the previous hash; [`Store::append_audit`] calls it under the
/// log's lock, so the chain has exactly one successor for each entry.
pub type AuditChain = std::sync::Arc<dyn Fn(&[u8], &AuditRecord) -> Vec<u8> + Send + Sync>;

impl std::fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("access_key_id", &self.access_key_id)
            .field("user_name", &self.user_name)
            .field("created_at", &self.created_at)
            .field("scope_arn", &self.scope_arn)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An external rotator, referenced by name from a RotationLambdaARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatorRecord {
    pub name: String,
    pub target: RotatorTarget,
    /// How long one step may run before it counts as failed.
    pub timeout_ms: i64,
    pub created_at: Timestamp,
    /// An IAM policy document added to the temporary key of each of its steps, beside the
    /// rotation operations on the rotated secret (as a Lambda's execution role).
    pub execution_policy: Option<String>,
}

/// What an external rotator runs for each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotatorTarget {
    /// A command run by `sh -c` with AWS's rotation event on standard input.
    Command(String),
    /// A URL that receives AWS's rotation event in a signed POST. The signing secret is sealed
    /// under the root key, bound to the rotator's name.
    Webhook {
        url: String,
        sealed_signing_secret: Vec<u8>,
    },
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its position in the log: commit order.
    pub seq: i64,
    pub event_id: String,
    pub at: Timestamp,
    pub account_id: String,
    pub region: String,
    pub secret_id: String,
    pub secret_arn: String,
    pub secret_name: String,
    pub event_name: String,
    /// A JSON object; never a value.
    pub detail: String,
}

/// A webhook subscription to the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub id: String,
    pub account_id: String,
    pub region: String,
    pub url: String,
    /// Sealed under the root key, bound to the subscription's id.
    pub sealed_signing_secret: Vec<u8>,
    /// Which events it wants, as JSON (see baton-api's `delivery`).
    pub filter: String,
    /// The last event it has been given (delivered or dead-lettered).
    pub cursor_seq: i64,
    pub created_at: Timestamp,
}

/// An event a subscription gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub subscription_id: String,
    pub seq: i64,
    pub attempts: i64,
    pub last_error: String,
    pub failed_at: Timestamp,
}

/// What one reporting consumer (a Baton client or agent instance) holds of one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub secret_id: String,
    pub application: String,
    pub instance_id: String,
    /// The version it signs or encrypts with.
    pub current_version: Option<String>,
    /// The versions it verifies or decrypts with.
    pub accepted_versions: Vec<String>,
    pub last_seen_at: Timestamp,
    /// Past this, the consumer is gone.
    pub lease_expires_at: Timestamp,
    /// The ARN of the principal that reports it: the record is that principal's until its
    /// lease ends.
    pub principal: String,
}

/// What [`Store::upsert_consumers`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerWrite {
    Written,
    /// The record at this index belongs to another principal whose lease has not ended:
    /// nothing of the batch was written.
    OwnedByAnother(usize),
}

/// The persistence interface. Both engines implement it identically; see [`conformance`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// How many secrets this engine's cache holds and the bytes it accounts for them; `None`
    /// for an engine without one.
    fn cache_usage(&self) -> Option<(usize, u64)> {
        None
    }

    /// Inserts a new secret with its versions. Fails with [`StoreError::NameTaken`] if the
    /// namespace already holds the name.
    async fn insert_secret(&self, secret: &SecretRecord) -> Result<(), StoreError>;

    /// Writes a changed secret if its stored revision still equals `secret.revision`, and
    /// returns the new revision. Versions are immutable once written: new ones are inserted,
    /// pruned ones deleted, and labels and tags replaced, all in one transaction.
    async fn save_secret(&self, secret: &SecretRecord) -> Result<i64, StoreError>;

    async fn find_secret_by_name(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError>;

    async fn find_secret_by_arn(&self, arn: &str) -> Result<Option<SecretRecord>, StoreError>;

    /// The primary secret that has a replica named `name` in the namespace.
    async fn find_secret_by_replica(
        &self,
        account_id: &str,
        region: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError>;

    /// Primary secrets that have a replica in the namespace.
    async fn list_replicated_into(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError>;

    /// In one transaction: saves `primary` (whose replica list no longer has the promoted
    /// region, with the same revision check as [`Store::save_secret`]) and inserts `promoted`,
    /// the standalone secret that takes the replica's place. Returns the primary's new revision.
    async fn promote_replica(
        &self,
        primary: &SecretRecord,
        promoted: &SecretRecord,
    ) -> Result<i64, StoreError>;

    /// All secrets of a namespace, oldest first.
    async fn list_secrets(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError>;

    /// The heads of a namespace's secrets, oldest first: each secret's own row with its tags
    /// and replicas, read in three statements, but **without** versions, labels, rotation
    /// policy, rotation state or schedule. Enough to filter and sort a listing; a page's
    /// secrets are then read whole (`find_secret_by_arn`). Never save a head.
    async fn list_secret_heads(
        &self,
        account_id: &str,
        region: &str,
    ) -> Result<Vec<SecretRecord>, StoreError>;

    /// ARNs of one page of a namespace's secrets (not KMS keys) in creation order (`created_at`,
    /// then id; reversed when `newest_first`), skipping `offset`, at most `limit`; with
    /// `include_deleted`, also those scheduled for deletion. Served by an index on the
    /// namespace and creation time, so an unfiltered listing does not read every row.
    async fn list_secret_arns_page(
        &self,
        account_id: &str,
        region: &str,
        include_deleted: bool,
        newest_first: bool,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// ARNs of a namespace's secrets (not KMS keys) whose name, description, a tag key or a tag
    /// value contains `text` (compared in lower case), in creation order (`created_at`, then id;
    /// reversed when `newest_first`), at most `limit`. A superset of a word
    /// search's matches, which the caller narrows with the exact filter: one scan in the
    /// database instead of reading every secret. Give it ASCII text: SQLite ignores the case
    /// of ASCII letters only (and a letter whose Unicode lower case is ASCII, like the Kelvin
    /// sign, is not found by its ASCII twin there).
    async fn search_secret_arns(
        &self,
        account_id: &str,
        region: &str,
        text: &str,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Removes a secret and everything it owns, and records its outbox, in one transaction.
    async fn delete_secret(&self, secret: &SecretRecord) -> Result<(), StoreError>;

    /// Events after `after_seq`, oldest first, at most `limit`; of one secret if `secret_arn`.
    async fn list_events(
        &self,
        after_seq: i64,
        limit: u32,
        secret_arn: Option<&str>,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Retention: forgets events recorded before `before`; returns how many.
    async fn delete_events_before(&self, before: Timestamp) -> Result<u64, StoreError>;
    async fn find_event(&self, seq: i64) -> Result<Option<EventRecord>, StoreError>;
    /// The newest event's seq, or 0.
    async fn last_event_seq(&self) -> Result<i64, StoreError>;

    async fn insert_subscription(&self, s: &SubscriptionRecord) -> Result<(), StoreError>;
    async fn list_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Returns whether it existed. Its dead letters go with it.
    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError>;
    /// Moves the subscription's cursor forward to `seq` (never back).
    async fn advance_subscription(&self, id: &str, seq: i64) -> Result<(), StoreError>;
    async fn insert_dead_letter(&self, d: &DeadLetterRecord) -> Result<(), StoreError>;
    async fn list_dead_letters(&self) -> Result<Vec<DeadLetterRecord>, StoreError>;
    /// Returns whether it existed.
    async fn delete_dead_letter(&self, subscription_id: &str, seq: i64)
    -> Result<bool, StoreError>;

    /// ARNs of secrets whose recovery window ended at or before `now`, at most `limit` of them.
    async fn secrets_due_for_purge(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError>;
    async fn find_access_key(
        &self,
        access_key_id: &str,
    ) -> Result<Option<AccessKeyRecord>, StoreError>;
    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError>;
    /// Returns whether a key was deleted.
    async fn delete_access_key(&self, access_key_id: &str) -> Result<bool, StoreError>;

    /// Fails with [`StoreError::NameTaken`] if a principal has this name.
    async fn insert_principal(&self, principal: &PrincipalRecord) -> Result<(), StoreError>;
    async fn find_principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError>;
    async fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;
    /// Removes a principal with its policies and access keys, in one transaction. Returns
    /// whether it existed.
    async fn delete_principal(&self, name: &str) -> Result<bool, StoreError>;
    /// Creates or replaces a policy of an existing principal ([`StoreError::NotFound`] if the
    /// principal does not exist).
    async fn put_principal_policy(&self, policy: &PrincipalPolicyRecord) -> Result<(), StoreError>;
    /// Returns whether the policy existed.
    async fn delete_principal_policy(
        &self,
        principal_name: &str,
        policy_name: &str,
    ) -> Result<bool, StoreError>;
    /// A principal's policies, by policy name.
    async fn list_principal_policies(
        &self,
        principal_name: &str,
    ) -> Result<Vec<PrincipalPolicyRecord>, StoreError>;

    /// Appends entries to the shared audit chain in one transaction, under a lock that orders
    /// every appender: each gets the next `chain_seq` of the shared chain, `prev_hash` from its
    /// predecessor, `hash` from `chain`, and its `seq`. Returns the entries as stored.
    async fn append_audit(
        &self,
        entries: Vec<AuditRecord>,
        chain: AuditChain,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Appends entries already chained by their one writer (`chain`, `chain_seq`, `prev_hash`
    /// and `hash` set) in one transaction, without the shared lock; the store assigns `seq`.
    /// Refuses a position its chain already holds, so a chain cannot fork.
    async fn append_audit_chained(
        &self,
        entries: Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Whether each node process should append to a chain of its own: true where several
    /// nodes share the store.
    fn per_node_audit_chains(&self) -> bool {
        false
    }
    /// The newest entry's seq and hash, if the log has any.
    async fn last_audit(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Entries after `after_seq`, in `seq` order, at most `limit`.
    async fn list_audit(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// A chain's last position and hash, if it has entries.
    async fn audit_chain_end(&self, chain: &str) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// One chain's entries after `after`, in chain order, at most `limit`.
    async fn list_audit_chain(
        &self,
        chain: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Every chain with its last position and hash (0 and empty before its first entry): the
    /// shared chain first, then each node chain once, in the order they were registered.
    async fn audit_chain_ends(&self) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError>;
    /// The shared chain's entries that register node chains, in order.
    async fn audit_chain_starts(&self) -> Result<Vec<AuditRecord>, StoreError>;

    /// ARNs of secrets whose rotation in flight or whose schedule is due at or before `now`,
    /// soonest first, at most `limit`. Served by indexes on the due times, so its cost does not
    /// grow with the number of secrets.
    async fn rotations_due(&self, now: Timestamp, limit: u32) -> Result<Vec<String>, StoreError>;

    /// ARNs of a namespace's secrets and keys whose rotation is in flight (running or stopped),
    /// earliest started first, at most `limit`. Served by the index that keeps one rotation in
    /// flight per secret.
    async fn open_rotations(
        &self,
        account_id: &str,
        region: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// ARNs and names of a namespace's secrets whose scheduled rotation falls at or before
    /// `until`, with that time, soonest first, at most `limit`. Served by the schedule's index.
    async fn scheduled_rotations(
        &self,
        account_id: &str,
        region: &str,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, String, Timestamp)>, StoreError>;

    /// The earliest due time of any rotation, if one is due at all.
    async fn next_rotation_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// A secret's rotations, newest first, at most `limit`. Their policies are not kept.
    async fn rotation_history(
        &self,
        secret_id: &str,
        limit: u32,
    ) -> Result<Vec<baton_core::rotation::RotationState>, StoreError>;

    /// Fails with [`StoreError::NameTaken`] if a rotator has this name.
    async fn insert_rotator(&self, rotator: &RotatorRecord) -> Result<(), StoreError>;
    async fn find_rotator(&self, name: &str) -> Result<Option<RotatorRecord>, StoreError>;
    async fn list_rotators(&self) -> Result<Vec<RotatorRecord>, StoreError>;
    /// Returns whether a rotator was deleted.
    async fn delete_rotator(&self, name: &str) -> Result<bool, StoreError>;

    /// Records what consumers hold, each row replacing that consumer's previous one for the
    /// secret, in one transaction. A secret deleted meanwhile is skipped. A consumer whose
    /// live record belongs to another principal is not replaced, and then nothing is written.
    async fn upsert_consumers(
        &self,
        consumers: &[ConsumerRecord],
    ) -> Result<ConsumerWrite, StoreError>;
    /// The consumers of a secret, live or not yet cleaned up.
    async fn list_consumers(&self, secret_id: &str) -> Result<Vec<ConsumerRecord>, StoreError>;
    /// Forgets consumers whose lease ended before `before`; returns how many.
    async fn delete_consumers_expired(&self, before: Timestamp) -> Result<u64, StoreError>;
    /// Notes that a reader that does not report read the secret at `at` (kept if later than
    /// what is stored).
    async fn record_plain_read(&self, secret_id: &str, at: Timestamp) -> Result<(), StoreError>;
    /// [`Store::record_plain_read`] for many reads in one transaction (one commit, one fsync).
    async fn record_plain_reads(&self, reads: &[(String, Timestamp)]) -> Result<(), StoreError>;
    async fn last_plain_read(&self, secret_id: &str) -> Result<Option<Timestamp>, StoreError>;

    /// Commits that changed a secret are published here, by secret id.
    fn changes(&self) -> &ChangeFeed;

    /// Checks that the database answers; used by readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Counts for the server's operational metrics; none is per secret.
    async fn operational_counts(&self, now: Timestamp) -> Result<OperationalCounts, StoreError>;

    /// Every row of every table in [`snapshot::SNAPSHOT_TABLES`], read in one transaction, so
    /// each secret is at one revision and a rotation's state agrees with its labels. Writers
    /// go on meanwhile.
    async fn snapshot(&self) -> Result<snapshot::Snapshot, StoreError>;

    /// Writes a snapshot into this store, in one transaction: all or nothing. Refuses, writing
    /// nothing, a store that holds any row in a snapshot table, or a snapshot of another
    /// schema version.
    async fn restore_snapshot(&self, snapshot: snapshot::Snapshot) -> Result<(), StoreError>;

    /// The newest migration applied to the database (by this node or a newer one).
    async fn schema_version(&self) -> Result<i64, StoreError>;

    /// Takes or renews the lease on `key` for `holder` until `ttl_ms` from now, and returns
    /// its fencing token; `None` while another holder's lease runs. A lease taken over, or
    /// taken again after it lapsed, gets a larger token than any before it. PostgreSQL judges
    /// expiry by the database's clock, so nodes' clocks need not agree; SQLite by `now`.
    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Ends a lease early, if `holder` still holds it with `token`.
    async fn release_lease(&self, key: &str, holder: &str, token: i64) -> Result<(), StoreError>;

    /// Creates an alias; `false` (and nothing written) when its ARN is taken.
    async fn create_alias(&self, alias: &AliasRecord) -> Result<bool, StoreError>;

    /// Points an existing alias at another key; `false` when there is no such alias.
    async fn update_alias(&self, alias: &AliasRecord) -> Result<bool, StoreError>;

    /// Deletes an alias; `false` when there was none.
    async fn delete_alias(&self, alias_arn: &str) -> Result<bool, StoreError>;

    async fn find_alias(&self, alias_arn: &str) -> Result<Option<AliasRecord>, StoreError>;

    /// The aliases whose ARN starts with `arn_prefix`, by name.
    async fn list_aliases(&self, arn_prefix: &str) -> Result<Vec<AliasRecord>, StoreError>;

    /// Stores a grant; `NameTaken` when its id is taken.
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;

    async fn find_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// The grants of the key whose secret is `secret_id`, oldest first.
    async fn grants_of_key(&self, secret_id: &str) -> Result<Vec<GrantRecord>, StoreError>;

    /// The grants whose retiring principal is `principal`, oldest first.
    async fn grants_retirable_by(&self, principal: &str) -> Result<Vec<GrantRecord>, StoreError>;

    /// Deletes a grant; `false` when there was none.
    async fn delete_grant(&self, grant_id: &str) -> Result<bool, StoreError>;

    /// [`Store::save_secret`], in a transaction that first checks `fence` against the lease
    /// (and locks it against takeover until commit): [`StoreError::FencedOut`] if lost.
    /// Root-sealed blobs of one kind whose ids sort after `after`, in id order, at most `limit`.
    async fn list_sealed(
        &self,
        kind: SealedKind,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, StoreError>;
    /// Replaces each blob that is still what was read, in one transaction; returns how many
    /// were replaced (a blob changed since it was read is left alone).
    async fn replace_sealed(
        &self,
        kind: SealedKind,
        replacements: &[SealedReplacement],
    ) -> Result<u64, StoreError>;
    /// A value of `baton_meta`.
    async fn meta_value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a `baton_meta` value unless one exists (the first node to start wins); returns
    /// the stored value.
    async fn init_meta_value(
        &self,
        name: &str,
        value: &[u8],
        now: Timestamp,
    ) -> Result<Vec<u8>, StoreError>;
    /// The root key's state, creating it with `primary` as the primary key if there is none.
    async fn root_key_state(&self, primary: &str) -> Result<RootKeyStateRecord, StoreError>;
    /// Saves the root key's state if its revision is unchanged (`false` if another save came
    /// first).
    async fn save_root_key_state(&self, state: &RootKeyStateRecord) -> Result<bool, StoreError>;
    /// Records a node's heartbeat (the time is the database's where it has a clock).
    async fn heartbeat_node(&self, node: &NodeRecord, now: Timestamp) -> Result<(), StoreError>;
    /// Forgets a node that stopped, so that it holds no gate while its heartbeat ages.
    async fn remove_node(&self, node_id: &str) -> Result<(), StoreError>;
    /// Every node's last heartbeat, with its age; forgets nodes unseen for `forget_after_ms`.
    async fn list_nodes(
        &self,
        now: Timestamp,
        forget_after_ms: i64,
    ) -> Result<Vec<NodeRecord>, StoreError>;
    async fn save_secret_fenced(
        &self,
        secret: &SecretRecord,
        fence: &Fence,
    ) -> Result<i64, StoreError>;
}

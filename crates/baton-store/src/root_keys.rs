//! What the store keeps for the root key's rotation: the rotation's state (one row), each
//! node's heartbeat (which root keys it holds, which one it wraps with), small sealed values of
//! the deployment (`baton_meta`: the audit chain's key), and the listing and compare-and-swap
//! replacement of every root-sealed blob for the re-wrap.
//!
//! The store never opens a blob: the re-wrap reads them, the server re-seals them, and the
//! store replaces each one only if it is still what was read.

use baton_core::Timestamp;

/// A table column that holds values sealed (or data keys wrapped) by the root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedKind {
    /// `secrets.wrapped_data_key` (KMS-wrapped data keys are there too; the server skips them).
    SecretDataKey,
    /// `access_keys.sealed_secret`.
    AccessKey,
    /// `rotators.sealed_signing_secret` (webhook rotators).
    RotatorSigningSecret,
    /// `subscriptions.sealed_signing_secret`.
    SubscriptionSigningSecret,
    /// `baton_meta.value`.
    Meta,
}

impl SealedKind {
    pub const ALL: [SealedKind; 5] = [
        SealedKind::SecretDataKey,
        SealedKind::AccessKey,
        SealedKind::RotatorSigningSecret,
        SealedKind::SubscriptionSigningSecret,
        SealedKind::Meta,
    ];

    /// (table, id column, blob column).
    pub(crate) fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SealedKind::SecretDataKey => ("secrets", "id", "wrapped_data_key"),
            SealedKind::AccessKey => ("access_keys", "access_key_id", "sealed_secret"),
            SealedKind::RotatorSigningSecret => ("rotators", "name", "sealed_signing_secret"),
            SealedKind::SubscriptionSigningSecret => {
                ("subscriptions", "id", "sealed_signing_secret")
            }
            SealedKind::Meta => ("baton_meta", "name", "value"),
        }
    }

    /// Blobs after `$1` in id order, at most `$2`.
    pub(crate) fn list_statement(self) -> String {
        let (table, id, blob) = self.columns();
        format!(
            "SELECT {id}, {blob} FROM {table} WHERE {id} > $1 AND {blob} IS NOT NULL \
             ORDER BY {id} LIMIT $2"
        )
    }

    /// Replaces `$1`'s blob with `$3` if it is still `$2`. A secret's revision moves on, so a
    /// writer that read the old blob gets a conflict and reads again instead of writing the old
    /// blob back.
    pub(crate) fn replace_statement(self) -> String {
        let (table, id, blob) = self.columns();
        let bump = if self == SealedKind::SecretDataKey {
            ", revision = revision + 1"
        } else {
            ""
        };
        format!("UPDATE {table} SET {blob} = $3{bump} WHERE {id} = $1 AND {blob} = $2")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SealedKind::SecretDataKey => "secret data keys",
            SealedKind::AccessKey => "access keys",
            SealedKind::RotatorSigningSecret => "rotator signing secrets",
            SealedKind::SubscriptionSigningSecret => "subscription signing secrets",
            SealedKind::Meta => "deployment keys",
        }
    }
}

/// One root-sealed blob and where it lives.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    pub id: String,
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({}, {} bytes)", self.id, self.blob.len())
    }
}

/// One blob to replace: it is written only if the stored blob is still `old`.
#[derive(Clone)]
pub struct SealedReplacement {
    pub id: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

impl std::fmt::Debug for SealedReplacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedReplacement({})", self.id)
    }
}

/// The root key's state for the whole deployment (one row). Key ids are `rk-…` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyStateRecord {
    /// Compare-and-swap: a save succeeds only if nobody saved since this was read.
    pub revision: i64,
    /// The key new wraps use.
    pub primary_key: String,
    /// `None` when no rotation has ever run; otherwise the latest rotation's phase.
    pub phase: Option<String>,
    pub new_key: Option<String>,
    pub old_keys: Vec<String>,
    /// Keys no node may use any more.
    pub retired_keys: Vec<String>,
    pub started_at: Option<Timestamp>,
    pub phase_at: Option<Timestamp>,
    pub rewrapped: i64,
    pub remaining: i64,
    /// What the rotation waits for, in words.
    pub note: String,
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub address: String,
    pub started_at: Timestamp,
    pub keys_held: Vec<String>,
    pub wraps_with: String,
    /// Milliseconds since the heartbeat, by the database's clock where it has one; filled by
    /// [`crate::Store::list_nodes`], ignored by [`crate::Store::heartbeat_node`].
    pub age_ms: i64,
}

pub(crate) fn join(ids: &[String]) -> String {
    ids.join(",")
}

pub(crate) fn split(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) const SELECT_ROOT_KEY_STATE: &str = "SELECT revision, primary_key, phase, new_key, \
    old_keys, retired_keys, started_at, phase_at, rewrapped, remaining, note \
    FROM root_key_state WHERE id = 1";
pub(crate) const INIT_ROOT_KEY_STATE: &str = "INSERT INTO root_key_state (id, revision, \
    primary_key, old_keys, retired_keys, rewrapped, remaining, note) \
    VALUES (1, 1, $1, '', '', 0, 0, '') ON CONFLICT (id) DO NOTHING";
/// $1 expected revision, then the fields.
pub(crate) const SAVE_ROOT_KEY_STATE: &str = "UPDATE root_key_state SET revision = $1 + 1, \
    primary_key = $2, phase = $3, new_key = $4, old_keys = $5, retired_keys = $6, \
    started_at = $7, phase_at = $8, rewrapped = $9, remaining = $10, note = $11 \
    WHERE id = 1 AND revision = $1";
pub(crate) const SELECT_META: &str = "SELECT value FROM baton_meta WHERE name = $1";
pub(crate) const INIT_META: &str = "INSERT INTO baton_meta (name, value, updated_at) \
    VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
pub(crate) const DELETE_NODES_UNSEEN: &str = "DELETE FROM nodes WHERE seen_at < $1";
pub(crate) const DELETE_NODE: &str = "DELETE FROM nodes WHERE node_id = $1";

//! Baton's domain: secrets, their versions and staging labels, and the rules that govern them.
//!
//! Architecture invariant: this crate knows nothing about tokio, SQL, HTTP, cryptography or
//! the wall clock. Every function that depends on time takes `now` as an argument, so the
//! rules can be tested exhaustively and simulated deterministically.

mod error;
mod labels;
mod names;
pub mod root_key;
pub mod rotation;
pub mod schedule;
mod secret;
mod step_labels;

pub use error::CoreError;
pub use labels::{LabelMove, apply_label_moves, move_label};
pub use names::{
    ARN_SUFFIX_LEN, parse_secret_arn, validate_client_request_token, validate_secret_name,
    validate_version_stage,
};
pub use secret::{
    DEPRECATED_VERSIONS_MAX, DeletionState, KeyMeta, LABELS_PER_SECRET_MAX, NewEvent, NewVersion,
    Replica, RotationConfig, RotationRules, SecretRecord, SecretValueKind, Tag, Timestamp,
    VALUE_BYTES_MAX, VersionRecord, resolve_version,
};
pub use step_labels::{drop_pending_label, promote_labels, retire_labels};

/// The label that marks the version clients use.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The label that Secrets Manager moves to the version that last held AWSCURRENT.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The label that marks a version under rotation, not yet current.
pub const AWSPENDING: &str = "AWSPENDING";

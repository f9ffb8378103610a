//! Baton's application: the operations of the AWS Secrets Manager and KMS APIs and of Baton's
//! own, over the store, the engine and the root key, with their authorization, audit and event
//! delivery. It knows no HTTP server: front ends (`baton-api`'s AWS JSON protocol, the
//! console) authenticate a caller and call [`Baton::invoke`], so every front end gets the same
//! authorization, the same audit entry and the same answer.
//!
//! Architecture invariant: this crate is the only one that knows both the wire types
//! (`baton-proto`) and the domain (`baton-core`); conversions between them live here.

pub mod audit;
pub mod authz;
pub mod backup;
mod coalesce;
mod consumers;
pub mod delivery;
mod error;
pub mod events;
mod invoke;
mod kms;
pub mod master_access;
mod ops;
mod plain_reads;
mod principals;
pub mod root_keys;
mod state;
mod wire;

pub use baton_crypto::SecretBytes;
pub use baton_engine::commands::CommandRotator;
pub use error::{ApiError, MessageKey};
pub use invoke::{Origin, Request};
pub use principals::ADMIN_PRINCIPAL;
pub use state::{
    ALPHABET_KEY, ALPHABET_UPPER_DIGITS, Baton, Caller, KMS_SIGNING_SERVICE, SIGNING_SERVICE,
    ScopedKey, access_key_aad, invalid_token, now_ms, random_chars,
};

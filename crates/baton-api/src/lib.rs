//! Baton's HTTP server: the AWS JSON 1.1 protocol on `POST /`, SigV4 verification against
//! Baton-issued access keys, AWS error shapes, health and Prometheus metrics.
//!
//! Architecture invariant: this crate is the only one that knows both the wire types
//! (`baton-proto`) and the domain (`baton-core`); conversions between them live here.

pub mod audit;
pub mod authz;
pub mod backup;
mod connections;
mod consumers;
mod delivery;
mod error;
pub mod events;
mod kms;
mod master_access;
mod ops;
mod principals;
pub mod root_keys;
mod server;
pub mod sigv4;
mod state;

pub use baton_crypto::SecretBytes;
pub use baton_engine::commands::CommandRotator;
pub use error::{ApiError, MessageKey};
pub use server::{
    Bootstrap, CONNECTIONS_PER_ADDRESS_DEFAULT, REQUEST_READ_TIMEOUT_DEFAULT,
    ROOT_KEY_REWRAP_BATCH_DEFAULT, ServeOptions, Server, StoreChoice,
};
pub use state::{Baton, Caller, SIGNING_SERVICE, now_ms};

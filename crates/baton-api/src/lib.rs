//! Baton's HTTP front end: the AWS JSON 1.1 protocol on `POST /` with SigV4 verification
//! against Baton-issued access keys, the JWKS documents, health, readiness and Prometheus
//! metrics, the listener (plain or TLS) and its limits. It is the only crate that knows axum;
//! the operations themselves are `baton-app`'s, reached through [`baton_app::Baton::invoke`].

mod connections;
mod console;
mod server;
pub mod sigv4;

pub use server::{
    Bootstrap, CONNECTIONS_PER_ADDRESS_DEFAULT, REQUEST_READ_TIMEOUT_DEFAULT,
    ROOT_KEY_REWRAP_BATCH_DEFAULT, ServeOptions, Server, StoreChoice,
};

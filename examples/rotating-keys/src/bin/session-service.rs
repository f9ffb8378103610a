//! Service C: each instance encrypts sessions with the current key and decrypts any session by
//! the key version its ciphertext names, so a session made by one instance opens on another,
//! across rotations.
//!
//! `session-service --secret ID --port N --stats FILE`; POST /encrypt answers the ciphertext of
//! the body, POST /decrypt the plaintext of the body (400 for a refused ciphertext).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use baton_client::keyring::KeyringCache;
use rotating_keys::{Stats, arg, decrypt, encrypt, keyring_from_env, serve_until_stopped};

struct App {
    cache: KeyringCache,
    stats: Arc<Stats>,
}

async fn encrypt_session(
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    match encrypt(&app.cache, &body) {
        Ok(ciphertext) => {
            app.stats.add("encrypted", 1);
            (StatusCode::OK, ciphertext)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn decrypt_session(State(app): State<Arc<App>>, body: String) -> (StatusCode, Vec<u8>) {
    match decrypt(&app.cache, &body).await {
        Ok(plaintext) => {
            app.stats.add("decrypted", 1);
            (StatusCode::OK, plaintext)
        }
        Err(refusal) => {
            app.stats.add("refused", 1);
            (StatusCode::BAD_REQUEST, format!("{refusal:?}").into_bytes())
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = arg("--secret")?;
    let port: u16 = arg("--port")?.parse()?;
    let stats_path = std::path::PathBuf::from(arg("--stats")?);
    let stats = Stats::new(&["encrypted", "decrypted", "refused"]);
    let cache = keyring_from_env(&secret, "session-service").await?;
    let app = Arc::new(App {
        cache,
        stats: stats.clone(),
    });
    let router = Router::new()
        .route("/encrypt", post(encrypt_session))
        .route("/decrypt", post(decrypt_session))
        .with_state(app);
    serve_until_stopped(router, port, stats, stats_path).await
}

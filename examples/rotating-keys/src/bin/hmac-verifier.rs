//! Service B: verifies HMAC-signed requests against every accepted version of the key.
//!
//! `hmac-verifier --secret ID --port N --stats FILE`; POST /verify with the message as the body
//! and `X-Signature: <kid>.<signature>`. 200 when valid, 401 with the reason otherwise.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use baton_client::keyring::KeyringCache;
use rotating_keys::{Refusal, Stats, arg, keyring_from_env, serve_until_stopped, verify};

struct App {
    cache: KeyringCache,
    stats: Arc<Stats>,
}

async fn verify_request(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let token = headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match verify(&app.cache, &body, token).await {
        Ok(()) => {
            app.stats.add("verified", 1);
            (StatusCode::OK, "ok")
        }
        Err(refusal) => {
            let (counter, reason) = match refusal {
                Refusal::UnknownKey => ("refused_unknown_key", "unknown key"),
                Refusal::Invalid => ("refused_invalid", "invalid signature"),
                Refusal::Malformed => ("refused_malformed", "malformed signature"),
            };
            app.stats.add(counter, 1);
            (StatusCode::UNAUTHORIZED, reason)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = arg("--secret")?;
    let port: u16 = arg("--port")?.parse()?;
    let stats_path = std::path::PathBuf::from(arg("--stats")?);
    let stats = Stats::new(&[
        "verified",
        "refused_unknown_key",
        "refused_invalid",
        "refused_malformed",
    ]);
    let cache = keyring_from_env(&secret, "hmac-verifier").await?;
    let app = Arc::new(App {
        cache,
        stats: stats.clone(),
    });
    let router = Router::new()
        .route("/verify", post(verify_request))
        .with_state(app);
    serve_until_stopped(router, port, stats, stats_path).await
}

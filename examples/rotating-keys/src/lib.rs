//! The two scenarios of the seeds, as services that use `baton-client`'s keyring cache:
//!
//! - **Service A → service B** (`hmac-signer`, `hmac-verifier`): A signs each request with the
//!   current HMAC key and names it by `kid` (the version id); B verifies with whichever accepted
//!   version the `kid` names.
//! - **Service C** (`session-service`): every instance encrypts sessions with the current key
//!   and puts the key's version id in the ciphertext, so any instance decrypts any session.
//!
//! Each binary reads `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`, and writes its counters as JSON to `--stats FILE` (atomically,
//! several times a second and at exit), which is how the end-to-end test reads them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::{aead, digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use baton_client::keyring::{KeyVersion, KeyringCache, KeyringOptions};
use baton_client::{AccessKey, Client, ClientConfig};

/// Connects to Baton with the standard AWS environment variables and starts the keyring cache.
pub async fn keyring_from_env(secret_id: &str, application: &str) -> anyhow::Result<KeyringCache> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let client = Client::new(ClientConfig {
        endpoint: var("AWS_ENDPOINT_URL")?,
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key: AccessKey {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
        },
        timeout: Duration::from_secs(10),
    })?;
    let mut options = KeyringOptions::new(application);
    if let Ok(instance) = std::env::var("INSTANCE_ID") {
        options.instance_id = instance;
    }
    Ok(KeyringCache::start(client, secret_id, options).await?)
}

/// `kid.signature` for a message: HMAC-SHA256 with the version's value, base64url.
pub fn sign(key: &KeyVersion, message: &[u8]) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()),
        message,
    );
    format!(
        "{}.{}",
        key.version_id(),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Why a signature or a ciphertext was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    /// No accepted version has this id, even after a refresh.
    UnknownKey,
    Invalid,
}

/// Checks `kid.signature` against the accepted version it names.
pub async fn verify(cache: &KeyringCache, message: &[u8], token: &str) -> Result<(), Refusal> {
    let (kid, signature) = token.split_once('.').ok_or(Refusal::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Refusal::Malformed)?;
    let verify_with = |key: &KeyVersion| {
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()),
            message,
            &signature,
        )
        .map_err(|_| Refusal::Invalid)
    };
    // The hot path: the version is in the cache.
    if let Some(key) = cache.keyring().find(kid) {
        return verify_with(key);
    }
    let ring = cache
        .find_or_refresh(kid)
        .await
        .ok_or(Refusal::UnknownKey)?;
    verify_with(ring.find(kid).ok_or(Refusal::UnknownKey)?)
}

/// The AES-256-GCM key of a version: SHA-256 of its value, so any secret string serves.
fn aead_key(key: &KeyVersion) -> aead::LessSafeKey {
    let digest = digest::digest(&digest::SHA256, key.expose_secret());
    // A SHA-256 digest is exactly an AES-256 key.
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, digest.as_ref())
        .unwrap_or_else(|_| unreachable!("32-byte key"));
    aead::LessSafeKey::new(unbound)
}

/// Encrypts with the current version: `v1.<kid>.<base64url(nonce || ciphertext || tag)>`. The
/// kid is also authenticated data, so a ciphertext cannot be relabelled.
pub fn encrypt(cache: &KeyringCache, plaintext: &[u8]) -> anyhow::Result<String> {
    let ring = cache.keyring();
    let key = ring
        .current()
        .context("the secret has no current version")?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("random"))?;
    let mut sealed = plaintext.to_vec();
    aead_key(key)
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(key.version_id().as_bytes()),
            &mut sealed,
        )
        .map_err(|_| anyhow::anyhow!("seal failed"))?;
    let mut blob = nonce.to_vec();
    blob.extend(sealed);
    Ok(format!(
        "v1.{}.{}",
        key.version_id(),
        URL_SAFE_NO_PAD.encode(blob)
    ))
}

/// Decrypts with the version the ciphertext names, refreshing once for an unknown one.
pub async fn decrypt(cache: &KeyringCache, ciphertext: &str) -> Result<Vec<u8>, Refusal> {
    let rest = ciphertext.strip_prefix("v1.").ok_or(Refusal::Malformed)?;
    let (kid, blob) = rest.split_once('.').ok_or(Refusal::Malformed)?;
    let blob = URL_SAFE_NO_PAD
        .decode(blob)
        .map_err(|_| Refusal::Malformed)?;
    if blob.len() < aead::NONCE_LEN {
        return Err(Refusal::Malformed);
    }
    let open = |key: &KeyVersion| {
        let (nonce, sealed) = blob.split_at(aead::NONCE_LEN);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| Refusal::Malformed)?;
        let mut buffer = sealed.to_vec();
        let plain = aead_key(key)
            .open_in_place(nonce, aead::Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| Refusal::Invalid)?;
        Ok(plain.to_vec())
    };
    if let Some(key) = cache.keyring().find(kid) {
        return open(key);
    }
    let ring = cache
        .find_or_refresh(kid)
        .await
        .ok_or(Refusal::UnknownKey)?;
    open(ring.find(kid).ok_or(Refusal::UnknownKey)?)
}

/// Named counters, written as one JSON object.
#[derive(Debug, Default)]
pub struct Stats {
    names: Vec<&'static str>,
    values: Vec<AtomicU64>,
}

impl Stats {
    pub fn new(names: &[&'static str]) -> Arc<Self> {
        Arc::new(Stats {
            names: names.to_vec(),
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn add(&self, name: &str, n: u64) {
        if let Some(i) = self.names.iter().position(|x| *x == name) {
            self.values[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.names
                .iter()
                .zip(&self.values)
                .map(|(n, v)| ((*n).to_owned(), v.load(Ordering::Relaxed).into()))
                .collect(),
        )
    }

    /// Writes the counters to `path` by rename, so a reader never sees half a file.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json().to_string())?;
        std::fs::rename(tmp, path)
    }

    /// Writes the counters every 200 ms until SIGTERM or Ctrl-C, then once more.
    pub async fn publish_until_stopped(self: Arc<Self>, path: std::path::PathBuf) {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let _ = self.write(&path);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::signal::ctrl_c() => break,
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => break,
            }
        }
        let _ = self.write(&path);
    }
}

/// Serves `router` on loopback `port` while the counters are published, until SIGTERM.
pub async fn serve_until_stopped(
    router: axum::Router,
    port: u16,
    stats: Arc<Stats>,
    stats_path: std::path::PathBuf,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    stats.publish_until_stopped(stats_path).await;
    server.abort();
    Ok(())
}

/// `--name value` from the command line.
pub fn arg(name: &str) -> anyhow::Result<String> {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next().with_context(|| format!("{name} needs a value"));
        }
    }
    anyhow::bail!("missing {name}")
}

//! A keyring cache that always knows every value valid at this moment.
//!
//! [`KeyringCache::start`] fetches a secret's keyring and keeps it fresh in the background: a
//! long-poll watch wakes it within milliseconds of a change, each fetch reports to the server
//! what this instance now holds, and a heartbeat renews its lease. Rotation gates on the server
//! wait for that report, so a new version is used only once every instance accepts it.
//!
//! Reading is lock-free and allocation-free: [`KeyringCache::keyring`] loads an `Arc` from an
//! [`ArcSwap`]. Sign or encrypt with [`Keyring::current`]; verify or decrypt with
//! [`Keyring::find`] by the version id carried in the message, falling back to
//! [`KeyringCache::find_or_refresh`] for an id this instance has not seen yet.
//!
//! ```no_run
//! # async fn example(client: baton_client::Client) -> Result<(), baton_client::ClientError> {
//! use baton_client::keyring::{KeyringCache, KeyringOptions};
//!
//! let cache = KeyringCache::start(client, "prod/hmac-key", KeyringOptions::new("api")).await?;
//! // Signing: the current version, and its id as the `kid`.
//! let ring = cache.keyring();
//! let key = ring.current().expect("the secret has a current version");
//! let (kid, secret) = (key.version_id(), key.expose_secret());
//! # let _ = (kid, secret);
//! // Verifying a message signed with `kid`: any accepted version.
//! match cache.find_or_refresh("6f1c…").await {
//!     Some(key) => { /* verify with key.expose_secret() */ }
//!     None => { /* unknown key: reject */ }
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use base64::Engine as _;
use baton_proto as p;
use zeroize::Zeroizing;

use crate::{Client, ClientError};

/// How a cache identifies itself and paces its work.
#[derive(Debug, Clone)]
pub struct KeyringOptions {
    /// The application name reported to the server, shared by all its instances.
    pub application: String,
    /// This instance; by default the host name, the process id and a random suffix.
    pub instance_id: String,
    /// How long the server counts this instance as live without hearing from it. A heartbeat
    /// goes out every third of it.
    pub lease: Duration,
    /// How long one watch waits on the server.
    pub watch_wait: Duration,
    /// The least time between two refreshes caused by unknown version ids, so forged ids
    /// cannot make the cache hammer the server.
    pub unknown_refresh_interval: Duration,
}

impl KeyringOptions {
    pub fn new(application: impl Into<String>) -> Self {
        KeyringOptions {
            application: application.into(),
            instance_id: default_instance_id(),
            lease: Duration::from_secs(30),
            watch_wait: Duration::from_secs(20),
            unknown_refresh_interval: Duration::from_secs(1),
        }
    }
}

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{:06x}", std::process::id(), nanos & 0xff_ffff)
}

/// One version of the secret. Its value is wiped from memory when the last keyring holding it
/// is dropped, and never shown by `Debug`.
pub struct KeyVersion {
    version_id: String,
    value: Zeroizing<Vec<u8>>,
    binary: bool,
    stages: Vec<String>,
}

impl std::fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersion")
            .field("version_id", &self.version_id)
            .field("value", &"[REDACTED]")
            .field("binary", &self.binary)
            .field("stages", &self.stages)
            .finish()
    }
}

impl KeyVersion {
    pub fn version_id(&self) -> &str {
        &self.version_id
    }

    /// The value: the SecretString's bytes, or the decoded SecretBinary.
    pub fn expose_secret(&self) -> &[u8] {
        &self.value
    }

    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Its staging labels when it was fetched.
    pub fn stages(&self) -> &[String] {
        &self.stages
    }
}

/// An immutable view of the keyring at one moment.
#[derive(Debug)]
pub struct Keyring {
    arn: String,
    revision: String,
    current: Option<usize>,
    /// Every accepted version; `current` indexes into it.
    accepted: Vec<KeyVersion>,
}

impl Keyring {
    /// The version to sign or encrypt with (AWSCURRENT).
    pub fn current(&self) -> Option<&KeyVersion> {
        self.current.map(|i| &self.accepted[i])
    }

    /// Every version to verify or decrypt with: pending, current and previous.
    pub fn accepted(&self) -> &[KeyVersion] {
        &self.accepted
    }

    /// The accepted version with this id.
    pub fn find(&self, version_id: &str) -> Option<&KeyVersion> {
        self.accepted.iter().find(|v| v.version_id == version_id)
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// What `baton.WatchSecrets` compares; changes whenever the keyring does.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    fn from_response(response: p::GetSecretKeyringResponse) -> Result<Self, ClientError> {
        let decode = |v: p::KeyringVersion| -> Result<KeyVersion, ClientError> {
            let version_id = v
                .version_id
                .ok_or_else(|| ClientError::Decode("a keyring version has no VersionId".into()))?;
            let (value, binary) = match (v.secret_string, v.secret_binary) {
                (Some(s), _) => (Zeroizing::new(s.into_bytes()), false),
                (None, Some(b)) => (
                    Zeroizing::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.as_bytes())
                            .map_err(|e| ClientError::Decode(format!("SecretBinary: {e}")))?,
                    ),
                    true,
                ),
                (None, None) => {
                    return Err(ClientError::Decode(format!(
                        "keyring version {version_id} has no value"
                    )));
                }
            };
            Ok(KeyVersion {
                version_id,
                value,
                binary,
                stages: v.version_stages.unwrap_or_default(),
            })
        };
        let current_id = response.current.as_ref().and_then(|c| c.version_id.clone());
        let accepted = response
            .accepted
            .unwrap_or_default()
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let current = match current_id {
            Some(id) => Some(
                accepted
                    .iter()
                    .position(|v| v.version_id == id)
                    .ok_or_else(|| {
                        ClientError::Decode("the current version is not among the accepted".into())
                    })?,
            ),
            None => None,
        };
        Ok(Keyring {
            arn: response.arn.unwrap_or_default(),
            revision: response.revision.unwrap_or_default(),
            current,
            accepted,
        })
    }
}

struct Shared {
    client: Client,
    secret_id: String,
    options: KeyringOptions,
    snapshot: ArcSwap<Keyring>,
    /// Single flight for refreshes caused by unknown version ids, and when the last one ran.
    unknown_refresh: tokio::sync::Mutex<Option<Instant>>,
    refreshes: std::sync::atomic::AtomicU64,
}

/// Ends the background tasks when the last handle to the cache is dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A secret's keyring, kept fresh in the background. Cheap to clone; the background work
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct KeyringCache {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for KeyringCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringCache")
            .field("secret_id", &self.shared.secret_id)
            .field("revision", &self.shared.snapshot.load().revision)
            .finish_non_exhaustive()
    }
}

impl KeyringCache {
    /// Fetches the keyring (reporting this instance to the server) and starts the background
    /// watch and heartbeat. Fails if the first fetch fails: a service should not start without
    /// its keys.
    pub async fn start(
        client: Client,
        secret_id: impl Into<String>,
        options: KeyringOptions,
    ) -> Result<Self, ClientError> {
        let secret_id = secret_id.into();
        let first = fetch(&client, &secret_id, &options).await?;
        let shared = Arc::new(Shared {
            client,
            secret_id,
            options,
            snapshot: ArcSwap::from_pointee(first),
            unknown_refresh: tokio::sync::Mutex::new(None),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        });
        let tasks = vec![
            tokio::spawn(watch_loop(shared.clone())),
            tokio::spawn(heartbeat_loop(shared.clone())),
        ];
        Ok(KeyringCache {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// The keyring now: lock-free and allocation-free.
    pub fn keyring(&self) -> Guard<Arc<Keyring>> {
        self.shared.snapshot.load()
    }

    /// The accepted version with this id, refreshing once from the server if this instance has
    /// not seen it yet (a message signed with a version that is newer than this cache).
    /// Refreshes are single-flight and at most one per `unknown_refresh_interval`; an id that
    /// is still unknown after that is `None`.
    pub async fn find_or_refresh(&self, version_id: &str) -> Option<Arc<Keyring>> {
        let ring = self.shared.snapshot.load_full();
        if ring.find(version_id).is_some() {
            return Some(ring);
        }
        let mut last = self.shared.unknown_refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        let ring = self.shared.snapshot.load_full();
        if ring.find(version_id).is_some() {
            return Some(ring);
        }
        if last.is_some_and(|at| at.elapsed() < self.shared.options.unknown_refresh_interval) {
            return None;
        }
        *last = Some(Instant::now());
        match refresh(&self.shared).await {
            Ok(ring) => ring.find(version_id).is_some().then_some(ring),
            Err(_) => None,
        }
    }

    /// How many times the background watch or an unknown id refreshed the keyring.
    pub fn refreshes(&self) -> u64 {
        self.shared
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.options.instance_id
    }
}

async fn fetch(
    client: &Client,
    secret_id: &str,
    options: &KeyringOptions,
) -> Result<Keyring, ClientError> {
    let response: p::GetSecretKeyringResponse = client
        .call(
            "baton.GetSecretKeyring",
            &p::GetSecretKeyringRequest {
                secret_id: Some(secret_id.to_owned()),
                consumer: Some(p::ConsumerIdentity {
                    application: Some(options.application.clone()),
                    instance_id: Some(options.instance_id.clone()),
                }),
                lease_seconds: Some(options.lease.as_secs() as i64),
            },
        )
        .await?;
    Keyring::from_response(response)
}

async fn refresh(shared: &Shared) -> Result<Arc<Keyring>, ClientError> {
    let ring = Arc::new(fetch(&shared.client, &shared.secret_id, &shared.options).await?);
    shared.snapshot.store(ring.clone());
    shared
        .refreshes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(ring)
}

/// Waits on the server for a change and refetches at once. On errors it keeps the keyring it
/// has and retries with capped exponential backoff.
async fn watch_loop(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let revision = shared.snapshot.load().revision.clone();
        let wait = shared.options.watch_wait;
        let answer: Result<p::WatchSecretsResponse, ClientError> = shared
            .client
            .call_with_timeout(
                "baton.WatchSecrets",
                &p::WatchSecretsRequest {
                    secrets: Some(vec![p::WatchedSecret {
                        secret_id: Some(shared.secret_id.clone()),
                        revision: Some(revision),
                        ..Default::default()
                    }]),
                    wait_seconds: Some(wait.as_secs() as i64),
                },
                wait + Duration::from_secs(10),
            )
            .await;
        let result = match answer {
            Ok(answer) if answer.changed.as_ref().is_some_and(|c| !c.is_empty()) => {
                refresh(&shared).await.map(drop)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Renews the lease with what this instance holds, so the server keeps counting it.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.options.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let ring = shared.snapshot.load_full();
        let report = p::ReportConsumerRequest {
            application: Some(shared.options.application.clone()),
            instance_id: Some(shared.options.instance_id.clone()),
            lease_seconds: Some(shared.options.lease.as_secs() as i64),
            holdings: Some(vec![p::ConsumerHolding {
                secret_id: Some(shared.secret_id.clone()),
                current_version_id: ring.current().map(|v| v.version_id.clone()),
                accepted_version_ids: Some(
                    ring.accepted.iter().map(|v| v.version_id.clone()).collect(),
                ),
            }]),
        };
        // A missed heartbeat is retried at the next beat; the lease outlasts two of them.
        let _: Result<p::ReportConsumerResponse, _> =
            shared.client.call("baton.ReportConsumer", &report).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, value: Option<&str>, binary: Option<&str>) -> p::KeyringVersion {
        p::KeyringVersion {
            version_id: Some(id.into()),
            secret_string: value.map(Into::into),
            secret_binary: binary.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn a_keyring_indexes_its_current_version_and_finds_accepted_ones() {
        let ring = Keyring::from_response(p::GetSecretKeyringResponse {
            arn: Some("arn".into()),
            revision: Some("r1".into()),
            current: Some(version("v1", Some("one"), None)),
            accepted: Some(vec![
                version("v2", None, Some("AAEC")),
                version("v1", Some("one"), None),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ring.current().unwrap().version_id(), "v1");
        assert_eq!(ring.current().unwrap().expose_secret(), b"one");
        let pending = ring.find("v2").unwrap();
        assert!(pending.is_binary());
        assert_eq!(pending.expose_secret(), [0u8, 1, 2]);
        assert!(ring.find("v3").is_none());
        assert_eq!(ring.revision(), "r1");
        assert!(
            !format!("{pending:?}").contains("AAEC") && format!("{ring:?}").contains("REDACTED")
        );
    }

    #[test]
    fn a_current_version_missing_from_the_accepted_set_is_refused() {
        let err = Keyring::from_response(p::GetSecretKeyringResponse {
            current: Some(version("v1", Some("one"), None)),
            accepted: Some(vec![]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("not among the accepted"), "{err}");
    }
}

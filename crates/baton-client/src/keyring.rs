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
    /// Whether the watch asks for each changed keyring in its answer (one request per change)
    /// rather than fetching it after (two). On by default; off is the protocol of servers
    /// from before 2026-12-07, kept to compare the two (`consumers-bench --fetch-after-watch`).
    pub keyrings_in_watch: bool,
}

impl KeyringOptions {
    pub fn new(application: impl Into<String>) -> Self {
        KeyringOptions {
            application: application.into(),
            instance_id: default_instance_id(),
            lease: Duration::from_secs(30),
            watch_wait: Duration::from_secs(20),
            unknown_refresh_interval: Duration::from_secs(1),
            keyrings_in_watch: true,
        }
    }

    /// How reports name this instance.
    fn identity(&self) -> p::ConsumerIdentity {
        p::ConsumerIdentity {
            application: Some(self.application.clone()),
            instance_id: Some(self.instance_id.clone()),
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
    created_date: Option<f64>,
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

    /// When it was created, in seconds since the epoch.
    pub fn created_date(&self) -> Option<f64> {
        self.created_date
    }
}

/// An immutable view of the keyring at one moment.
#[derive(Debug)]
pub struct Keyring {
    arn: String,
    name: String,
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

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `baton.GetSecretKeyring` shape of this keyring, values included.
    pub fn to_wire(&self) -> p::GetSecretKeyringResponse {
        let wire = |v: &KeyVersion| p::KeyringVersion {
            version_id: Some(v.version_id.clone()),
            secret_string: (!v.binary).then(|| String::from_utf8_lossy(&v.value).into_owned()),
            secret_binary: v
                .binary
                .then(|| base64::engine::general_purpose::STANDARD.encode(&*v.value)),
            version_stages: Some(v.stages.clone()),
            created_date: v.created_date,
        };
        p::GetSecretKeyringResponse {
            arn: Some(self.arn.clone()),
            name: Some(self.name.clone()),
            current: self.current().map(wire),
            accepted: Some(self.accepted.iter().map(wire).collect()),
            revision: Some(self.revision.clone()),
        }
    }

    /// The accepted version that carries this staging label.
    pub fn with_stage(&self, stage: &str) -> Option<&KeyVersion> {
        self.accepted
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }

    /// What `baton.WatchSecrets` compares; changes whenever the keyring does.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Builds a keyring from a `baton.GetSecretKeyring` answer.
    pub fn from_wire(response: p::GetSecretKeyringResponse) -> Result<Self, ClientError> {
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
                created_date: v.created_date,
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
            name: response.name.unwrap_or_default(),
            revision: response.revision.unwrap_or_default(),
            current,
            accepted,
        })
    }
}

/// One secret's keyring inside a [`KeyringSet`].
struct Entry {
    snapshot: ArcSwap<Keyring>,
    /// Single flight for refreshes caused by unknown version ids, and when the last one ran.
    unknown_refresh: tokio::sync::Mutex<Option<Instant>>,
}

struct SetShared {
    client: Client,
    options: KeyringOptions,
    /// By the secret id the caller used. Insertion order is kept for eviction.
    entries: std::sync::Mutex<Vec<(String, Arc<Entry>)>>,
    /// Secrets held at most; the oldest is dropped beyond it.
    capacity: usize,
    /// Wakes the watch when the set of secrets changes, so it watches the new one too.
    membership: tokio::sync::Notify,
    refreshes: std::sync::atomic::AtomicU64,
    /// Bumped whenever a keyring is fetched anew.
    changes: tokio::sync::watch::Sender<u64>,
}

impl SetShared {
    fn entry(&self, secret_id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|(id, _)| id == secret_id)
            .map(|(_, e)| e.clone())
    }

    fn all(&self) -> Vec<(String, Arc<Entry>)> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn refresh(&self, secret_id: &str, entry: &Entry) -> Result<Arc<Keyring>, ClientError> {
        let ring = fetch(&self.client, secret_id, &self.options).await?;
        Ok(self.install(entry, ring))
    }

    /// Holds a keyring just read, and tells whoever waits for changes.
    fn install(&self, entry: &Entry, ring: Keyring) -> Arc<Keyring> {
        let ring = Arc::new(ring);
        entry.snapshot.store(ring.clone());
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        ring
    }
}

/// Ends the background tasks when the last handle is dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The keyrings of any number of secrets, kept fresh by one watch and one heartbeat: what an
/// agent holds on behalf of its host. Cheap to clone; the background work stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct KeyringSet {
    shared: Arc<SetShared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for KeyringSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringSet")
            .field("secrets", &self.shared.all().len())
            .finish_non_exhaustive()
    }
}

impl KeyringSet {
    /// Starts the background watch and heartbeat; secrets join with [`KeyringSet::get`].
    pub fn new(client: Client, options: KeyringOptions, capacity: usize) -> Self {
        let shared = Arc::new(SetShared {
            client,
            options,
            entries: std::sync::Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            membership: tokio::sync::Notify::new(),
            refreshes: std::sync::atomic::AtomicU64::new(0),
            changes: tokio::sync::watch::channel(0).0,
        });
        let tasks = vec![
            tokio::spawn(watch_loop(shared.clone())),
            tokio::spawn(heartbeat_loop(shared.clone())),
        ];
        KeyringSet {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// The secret's keyring: from memory when held, else fetched (and reported) and held from
    /// now on, kept fresh by the watch.
    pub async fn get(&self, secret_id: &str) -> Result<Arc<Keyring>, ClientError> {
        Ok(self.entry(secret_id).await?.snapshot.load_full())
    }

    /// Fetches the keyring again now, whether or not it changed.
    pub async fn refresh(&self, secret_id: &str) -> Result<Arc<Keyring>, ClientError> {
        let entry = self.entry(secret_id).await?;
        self.shared.refresh(secret_id, &entry).await
    }

    /// Changes whenever a held keyring is fetched anew (after a watch saw a change, say).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// How many secrets are held.
    pub fn len(&self) -> usize {
        self.shared.all().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times a watch or an unknown id refreshed a keyring.
    pub fn refreshes(&self) -> u64 {
        self.shared
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.options.instance_id
    }

    async fn entry(&self, secret_id: &str) -> Result<Arc<Entry>, ClientError> {
        if let Some(entry) = self.shared.entry(secret_id) {
            return Ok(entry);
        }
        let ring = fetch(&self.shared.client, secret_id, &self.shared.options).await?;
        let entry = Arc::new(Entry {
            snapshot: ArcSwap::from_pointee(ring),
            unknown_refresh: tokio::sync::Mutex::new(None),
        });
        {
            let mut entries = self
                .shared
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Two first requests may race; the first one in wins and both share it.
            if let Some((_, held)) = entries.iter().find(|(id, _)| id == secret_id) {
                return Ok(held.clone());
            }
            if entries.len() >= self.shared.capacity {
                entries.remove(0);
            }
            entries.push((secret_id.to_owned(), entry.clone()));
        }
        self.shared.membership.notify_one();
        Ok(entry)
    }
}

/// One secret's keyring, kept fresh in the background. Cheap to clone; the background work
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct KeyringCache {
    set: KeyringSet,
    secret_id: String,
    entry: Arc<Entry>,
}

impl std::fmt::Debug for KeyringCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringCache")
            .field("secret_id", &self.secret_id)
            .field("revision", &self.entry.snapshot.load().revision)
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
        let set = KeyringSet::new(client, options, 1);
        let entry = set.entry(&secret_id).await?;
        Ok(KeyringCache {
            set,
            secret_id,
            entry,
        })
    }

    /// The keyring now: lock-free and allocation-free.
    pub fn keyring(&self) -> Guard<Arc<Keyring>> {
        self.entry.snapshot.load()
    }

    /// The keyring now, as an `Arc` to keep.
    pub fn keyring_full(&self) -> Arc<Keyring> {
        self.entry.snapshot.load_full()
    }

    /// The keyring that holds this version id, refreshing once from the server if this
    /// instance has not seen it yet (a message signed with a version newer than this cache).
    /// Refreshes are single-flight and at most one per `unknown_refresh_interval`; an id that
    /// is still unknown after that is `None`.
    pub async fn find_or_refresh(&self, version_id: &str) -> Option<Arc<Keyring>> {
        let ring = self.entry.snapshot.load_full();
        if ring.find(version_id).is_some() {
            return Some(ring);
        }
        let mut last = self.entry.unknown_refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        let ring = self.entry.snapshot.load_full();
        if ring.find(version_id).is_some() {
            return Some(ring);
        }
        let interval = self.set.shared.options.unknown_refresh_interval;
        if last.is_some_and(|at| at.elapsed() < interval) {
            return None;
        }
        *last = Some(Instant::now());
        match self.set.shared.refresh(&self.secret_id, &self.entry).await {
            Ok(ring) => ring.find(version_id).is_some().then_some(ring),
            Err(_) => None,
        }
    }

    /// How many times the background watch or an unknown id refreshed the keyring.
    pub fn refreshes(&self) -> u64 {
        self.set.refreshes()
    }

    /// Changes whenever the keyring is fetched anew.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.set.changes()
    }

    pub fn instance_id(&self) -> &str {
        self.set.instance_id()
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
                consumer: Some(options.identity()),
                lease_seconds: Some(options.lease.as_secs() as i64),
            },
        )
        .await?;
    Keyring::from_wire(response)
}

/// One long-poll watch for every held secret; refetches each that changed, or installs the
/// keyring the answer carried. The next watch reports what it installed (`Holdings`): an answer
/// is not a report, since it may never have reached this process. It restarts when a secret
/// joins the set. On errors it keeps what it has and retries with capped backoff.
async fn watch_loop(shared: Arc<SetShared>) {
    let mut backoff = Duration::from_millis(250);
    // Secrets whose keyring was installed from an answer and not yet reported.
    let mut unreported: Vec<String> = Vec::new();
    loop {
        let held = shared.all();
        if held.is_empty() {
            shared.membership.notified().await;
            continue;
        }
        unreported.retain(|id| held.iter().any(|(held_id, _)| held_id == id));
        let wait = shared.options.watch_wait;
        let request = p::WatchSecretsRequest {
            secrets: Some(
                held.iter()
                    .map(|(id, entry)| p::WatchedSecret {
                        secret_id: Some(id.clone()),
                        revision: Some(entry.snapshot.load().revision.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            wait_seconds: Some(wait.as_secs() as i64),
            // Each changed keyring in the answer: no second request for it.
            include_keyrings: Some(shared.options.keyrings_in_watch),
            consumer: Some(shared.options.identity()),
            lease_seconds: Some(shared.options.lease.as_secs() as i64),
            holdings: Some(
                held.iter()
                    .filter(|(id, _)| unreported.contains(id))
                    .map(|(id, entry)| holding(id, entry))
                    .collect(),
            ),
        };
        let call = shared
            .client
            .call_with_timeout::<_, p::WatchSecretsResponse>(
                "baton.WatchSecrets",
                &request,
                wait + Duration::from_secs(10),
            );
        let answer = tokio::select! {
            answer = call => answer,
            () = shared.membership.notified() => continue,
        };
        let mut failed = answer.is_err();
        if let Ok(answer) = answer {
            // The server recorded the holdings on arrival.
            unreported.clear();
            for changed in answer.changed.unwrap_or_default() {
                let Some(id) = changed.secret_id else {
                    continue;
                };
                if let Some((_, entry)) = held.iter().find(|(held_id, _)| *held_id == id) {
                    // A deleted secret keeps its last keyring; its fetch fails until restored.
                    // A server that did not include the keyring (an older one, or a denial)
                    // leaves it to a fetch of its own, which reports it.
                    let carried = changed.keyring.map(Keyring::from_wire);
                    failed |= match carried {
                        Some(Ok(ring)) => {
                            shared.install(entry, ring);
                            unreported.push(id);
                            false
                        }
                        _ => shared.refresh(&id, entry).await.is_err(),
                    };
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        } else {
            backoff = Duration::from_millis(250);
        }
    }
}

/// What this instance holds of one secret, as a report states it.
fn holding(secret_id: &str, entry: &Entry) -> p::ConsumerHolding {
    let ring = entry.snapshot.load();
    p::ConsumerHolding {
        secret_id: Some(secret_id.to_owned()),
        current_version_id: ring.current().map(|v| v.version_id.clone()),
        accepted_version_ids: Some(ring.accepted.iter().map(|v| v.version_id.clone()).collect()),
    }
}

/// Renews the lease with what this instance holds of every secret.
async fn heartbeat_loop(shared: Arc<SetShared>) {
    let every = shared.options.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let held = shared.all();
        if held.is_empty() {
            continue;
        }
        let identity = shared.options.identity();
        let report = p::ReportConsumerRequest {
            application: identity.application,
            instance_id: identity.instance_id,
            lease_seconds: Some(shared.options.lease.as_secs() as i64),
            holdings: Some(held.iter().map(|(id, entry)| holding(id, entry)).collect()),
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
        let ring = Keyring::from_wire(p::GetSecretKeyringResponse {
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
        let err = Keyring::from_wire(p::GetSecretKeyringResponse {
            current: Some(version("v1", Some("one"), None)),
            accepted: Some(vec![]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("not among the accepted"), "{err}");
    }
}

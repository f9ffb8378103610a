//! The root key on a running deployment: where each node's keys come from, the node heartbeat,
//! and the online rotation of the root key through Baton's own phases (see
//! `baton_core::root_key`).
//!
//! Every node runs [`RootKeys::run`]: once a second it reads the deployment's root-key state,
//! adopts it (the primary key, dropping retired keys), reloads its key source when the state
//! names a key it lacks, and writes its heartbeat (the keys it holds, the one it wraps with).
//! Whichever node holds the `root-key-rotation` lease drives the rotation one step at a time;
//! every step is saved with a compare-and-swap on the state's revision and can be re-run, so a
//! node that dies mid-rotation leaves it for the next lease holder.
//!
//! Safety rests on two rules. A node that lacks the key being added writes to the state row at
//! each tick (its note), so a promotion that read the state before that node's heartbeat fails
//! its compare-and-swap and looks again. A node that starts after the promotion without the
//! primary key refuses to start.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_core::root_key::{NodeKeys, RootKeyPhase, every_node_holds, nothing_left_under_old_keys};
use baton_crypto::{RootKey, RootKeyId, SealedUnder, SecretBytes};
use baton_store::{
    NodeRecord, RootKeyStateRecord, SealedBlob, SealedKind, SealedReplacement, Store, StoreError,
};

/// How often a node looks at the state and writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this is not live: it does not hold a gate.
pub const NODE_LIVE_MS: i64 = 10_000;
/// Heartbeats older than this are forgotten.
const NODE_FORGET_MS: i64 = 24 * 3600 * 1000;
const LEASE_KEY: &str = "root-key-rotation";
const LEASE_TTL_MS: i64 = 10_000;
/// How often the re-wrap saves its progress and renews its lease.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// `baton_meta` names that hold values sealed by the root key start with this.
pub const SEALED_META_PREFIX: &str = "sealed/";
/// The audit chain's MAC key, sealed by the root key, so that it outlives a root-key rotation.
pub const AUDIT_CHAIN_KEY: &str = "sealed/audit-chain-key";

/// The authenticated data of a sealed `baton_meta` value.
pub fn meta_aad(name: &str) -> String {
    format!("baton:meta:v1:{name}")
}

/// Where a node's root keys come from.
#[async_trait]
pub trait RootKeySource: Send + Sync + std::fmt::Debug {
    /// In words, for the status and for errors ("file /var/lib/baton/root.key").
    fn describe(&self) -> String;
    /// Every key the source holds now. `shared` are the blobs that sources of this kind on
    /// other nodes stored for the deployment (see [`NewRootKey::share`]).
    async fn keys(&self, shared: &[Vec<u8>]) -> Result<Vec<SecretBytes>, String>;
    /// Makes a new key and adds it to the source, where the source can be written; otherwise
    /// says how the operator adds one.
    async fn add_new_key(&self) -> Result<NewRootKey, String>;
    /// Removes retired keys where the source can be written; returns how many it removed.
    async fn remove_keys(&self, retired: &[RootKeyId]) -> Result<usize, String>;
}

/// A key a source made for a rotation.
#[derive(Debug)]
pub struct NewRootKey {
    pub key: SecretBytes,
    /// A form of the key that only the sources of other nodes can open (a KMS ciphertext), kept
    /// in the store so that every node fetches it; `None` when the operator distributes keys.
    pub share: Option<Vec<u8>>,
}

/// `baton_meta` names of shared new keys start with this (see [`NewRootKey::share`]).
pub const SHARED_KEY_PREFIX: &str = "shared-root-key/";

/// The root key file (the default `<data-dir>/root.key`, or `--root-key-file`): `rotate`
/// writes the new key beside the old one, and retirement removes the old one.
#[derive(Debug)]
pub struct FileSource {
    pub path: std::path::PathBuf,
}

#[async_trait]
impl RootKeySource for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn keys(&self, _shared: &[Vec<u8>]) -> Result<Vec<SecretBytes>, String> {
        RootKey::read_file(&self.path).map_err(|e| e.to_string())
    }

    async fn add_new_key(&self) -> Result<NewRootKey, String> {
        let key = RootKey::generate_bytes().map_err(|e| e.to_string())?;
        RootKey::append_to_file(&self.path, &key).map_err(|e| e.to_string())?;
        Ok(NewRootKey { key, share: None })
    }

    async fn remove_keys(&self, retired: &[RootKeyId]) -> Result<usize, String> {
        RootKey::remove_from_file(&self.path, retired).map_err(|e| e.to_string())
    }
}

/// `--root-key-command`: the command's output is the ring; the operator changes what it prints.
#[derive(Debug)]
pub struct CommandSource {
    pub command: String,
}

#[async_trait]
impl RootKeySource for CommandSource {
    fn describe(&self) -> String {
        format!("command `{}`", self.command)
    }

    async fn keys(&self, _shared: &[Vec<u8>]) -> Result<Vec<SecretBytes>, String> {
        let command = self.command.clone();
        tokio::task::spawn_blocking(move || RootKey::command_keys(&command))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn add_new_key(&self) -> Result<NewRootKey, String> {
        Err(format!(
            "the root key comes from {}, which Baton cannot write: make a key with `baton admin \
             root-key generate`, add its line to what the command prints on every node, then \
             run `baton admin root-key rotate --key-id <id>`",
            self.describe()
        ))
    }

    async fn remove_keys(&self, _retired: &[RootKeyId]) -> Result<usize, String> {
        Ok(0)
    }
}

/// A root key given whole by the caller (tests, benchmarks): nothing to reload or write.
#[derive(Debug)]
pub struct FixedSource;

#[async_trait]
impl RootKeySource for FixedSource {
    fn describe(&self) -> String {
        "a key given at start".to_owned()
    }

    async fn keys(&self, _shared: &[Vec<u8>]) -> Result<Vec<SecretBytes>, String> {
        Ok(Vec::new())
    }

    async fn add_new_key(&self) -> Result<NewRootKey, String> {
        Err("this node's root key was given at start and cannot grow".to_owned())
    }

    async fn remove_keys(&self, _retired: &[RootKeyId]) -> Result<usize, String> {
        Ok(0)
    }
}

/// This node's root keys and its part in their rotation.
pub struct RootKeys {
    pub ring: Arc<RootKey>,
    pub source: Arc<dyn RootKeySource>,
    pub node_id: String,
    pub address: Mutex<String>,
    started_at: i64,
    /// Blobs re-wrapped per transaction.
    pub rewrap_batch: usize,
    /// False while the deployment's primary key is one this node does not hold.
    ready: AtomicBool,
    last_reload: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RootKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKeys")
            .field("ring", &self.ring)
            .field("source", &self.source.describe())
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn parse_id(text: &str) -> Result<RootKeyId, String> {
    text.parse()
}

fn phase_of(state: &RootKeyStateRecord) -> Option<RootKeyPhase> {
    state.phase.as_deref().and_then(RootKeyPhase::parse)
}

impl RootKeys {
    /// Adopts the deployment's state at start: refuses to start when the primary key is one
    /// this node's source does not hold.
    pub async fn start(
        store: &dyn Store,
        ring: Arc<RootKey>,
        source: Arc<dyn RootKeySource>,
        node_id: String,
        rewrap_batch: usize,
        now: i64,
    ) -> anyhow::Result<Arc<Self>> {
        let keys = Arc::new(RootKeys {
            ring,
            source,
            node_id,
            address: Mutex::new(String::new()),
            started_at: now,
            rewrap_batch: rewrap_batch.max(1),
            ready: AtomicBool::new(true),
            last_reload: Mutex::new(None),
        });
        let state = keys.state(store).await?;
        if let Err(reason) = keys.adopt(store, &state, true).await {
            anyhow::bail!("{reason}");
        }
        keys.heartbeat(store, now).await?;
        keys.hold_the_gate_if_lacking(store, &state).await;
        Ok(keys)
    }

    /// The audit chain's MAC key: kept in `baton_meta` sealed by the root key, so that the
    /// chain carries on across a rotation of the root key. The first node to start stores it,
    /// derived from the primary key as earlier versions derived it, so existing chains verify.
    pub async fn audit_chain_key(
        &self,
        store: &dyn Store,
        now: i64,
    ) -> anyhow::Result<baton_crypto::MacKey> {
        let aad = meta_aad(AUDIT_CHAIN_KEY);
        let stored = match store.meta_value(AUDIT_CHAIN_KEY).await? {
            Some(stored) => stored,
            None => {
                let derived = self.ring.derived_secret("audit-chain");
                let sealed = self.ring.seal(derived.expose(), &aad)?;
                store.init_meta_value(AUDIT_CHAIN_KEY, &sealed, now).await?
            }
        };
        let secret = self.ring.open(&stored, &aad).map_err(|e| {
            anyhow::anyhow!("cannot open the audit chain's key with this node's root keys: {e}")
        })?;
        Ok(baton_crypto::MacKey::from_secret(&secret))
    }

    /// Whether this node holds the deployment's primary key (for `/ready`).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The new keys that sources on other nodes shared through the store.
    async fn shared_keys(store: &dyn Store) -> Result<Vec<Vec<u8>>, String> {
        let mut shared = Vec::new();
        let mut after = SHARED_KEY_PREFIX.to_owned();
        loop {
            let page = store
                .list_sealed(SealedKind::Meta, &after, 100)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            let before = shared.len();
            shared.extend(
                page.into_iter()
                    .filter(|b| b.id.starts_with(SHARED_KEY_PREFIX))
                    .map(|b| b.blob),
            );
            if !after.starts_with(SHARED_KEY_PREFIX) || shared.len() == before {
                break;
            }
        }
        Ok(shared)
    }

    /// The deployment's root-key state (created with this node's primary if there is none).
    async fn state(&self, store: &dyn Store) -> Result<RootKeyStateRecord, StoreError> {
        store.root_key_state(&self.ring.primary().to_string()).await
    }

    /// Reads the source again and adds any key it now holds.
    async fn reload(&self, store: &dyn Store, force: bool) -> Result<(), String> {
        {
            let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let shared = Self::shared_keys(store).await?;
        let keys = self.source.keys(&shared).await?;
        if !keys.is_empty() {
            self.ring.add(&keys).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Makes the ring agree with the state: the primary, and no retired key. Reloads the
    /// source when the state names a key this node lacks.
    async fn adopt(
        &self,
        store: &dyn Store,
        state: &RootKeyStateRecord,
        at_start: bool,
    ) -> Result<(), String> {
        let primary = parse_id(&state.primary_key)?;
        let phase = phase_of(state);
        let wanted_new = state
            .new_key
            .as_deref()
            .filter(|_| phase.is_some_and(RootKeyPhase::in_flight))
            .map(parse_id)
            .transpose()?;
        let lacks_a_key =
            !self.ring.holds(primary) || wanted_new.is_some_and(|k| !self.ring.holds(k));
        if lacks_a_key && let Err(e) = self.reload(store, at_start).await {
            tracing::warn!(source = %self.source.describe(), error = %e, "cannot reload the root key source");
        }
        if !self.ring.holds(primary) {
            self.ready.store(false, Ordering::Release);
            return Err(format!(
                "the deployment's root key is {primary}{}, and this node's root key source ({}) \
                 does not hold it: add that key to it{}",
                match (phase, state.phase_at) {
                    (Some(_), Some(at)) => format!(
                        " since its rotation was promoted at {}",
                        jiff::Timestamp::from_millisecond(at)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    ),
                    _ => String::new(),
                },
                self.source.describe(),
                if at_start { ", then start again" } else { "" }
            ));
        }
        self.ring.set_primary(primary).map_err(|e| e.to_string())?;
        for retired in &state.retired_keys {
            if let Ok(id) = parse_id(retired)
                && id != primary
                && self.ring.holds(id)
            {
                let _ = self.ring.drop_key(id);
            }
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn heartbeat(&self, store: &dyn Store, now: i64) -> Result<(), StoreError> {
        let node = NodeRecord {
            node_id: self.node_id.clone(),
            address: self.address.lock().map(|a| a.clone()).unwrap_or_default(),
            started_at: self.started_at,
            keys_held: self.ring.ids().iter().map(ToString::to_string).collect(),
            wraps_with: self.ring.primary().to_string(),
            age_ms: 0,
        };
        store.heartbeat_node(&node, now).await
    }

    /// While a key is being added and this node lacks it, the node writes to the state row:
    /// a promotion that read the state before this node's heartbeat then fails its
    /// compare-and-swap and reads the heartbeats again.
    async fn hold_the_gate_if_lacking(&self, store: &dyn Store, state: &RootKeyStateRecord) {
        if phase_of(state) != Some(RootKeyPhase::Added) {
            return;
        }
        let Some(new_key) = state.new_key.as_deref() else {
            return;
        };
        if parse_id(new_key).is_ok_and(|k| self.ring.holds(k)) {
            return;
        }
        let mut held = state.clone();
        held.note = format!(
            "node {} does not hold {new_key}: add it to its key source ({})",
            self.node_id,
            self.source.describe()
        );
        let _ = store.save_root_key_state(&held).await;
    }

    /// One tick: adopt the state, hold the gate if lacking, heartbeat, and drive the rotation
    /// when this node holds its lease.
    pub async fn tick(&self, store: &dyn Store, now: i64) -> Result<(), String> {
        let state = self.state(store).await.map_err(|e| e.to_string())?;
        self.publish_metrics(&state);
        if let Err(reason) = self.adopt(store, &state, false).await {
            tracing::error!(node = %self.node_id, "{reason}");
        }
        self.hold_the_gate_if_lacking(store, &state).await;
        self.heartbeat(store, now)
            .await
            .map_err(|e| e.to_string())?;
        if phase_of(&state).is_some_and(RootKeyPhase::in_flight) && self.ready() {
            let Some(token) = store
                .acquire_lease(LEASE_KEY, &self.node_id, now, LEASE_TTL_MS)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            let driven = self.drive_while_moving(store, state, now).await;
            let _ = store.release_lease(LEASE_KEY, &self.node_id, token).await;
            driven?;
        }
        Ok(())
    }

    /// Drives step after step while each one moves the phase on (a promotion goes straight
    /// into the re-wrap), writing this node's heartbeat between steps; stops at a gate.
    async fn drive_while_moving(
        &self,
        store: &dyn Store,
        mut state: RootKeyStateRecord,
        now: i64,
    ) -> Result<(), String> {
        for _ in 0..4 {
            let phase = phase_of(&state);
            self.drive(store, state, now).await?;
            state = self.state(store).await.map_err(|e| e.to_string())?;
            if phase_of(&state) == phase || !phase_of(&state).is_some_and(RootKeyPhase::in_flight) {
                return Ok(());
            }
            self.heartbeat(store, crate::state::now_ms())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Runs [`RootKeys::tick`] every [`HEARTBEAT`] until `stop` changes.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.tick(&*store, crate::state::now_ms()).await {
                tracing::warn!(node = %self.node_id, error = %e, "root key tick failed");
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT) => {}
                _ = stop.changed() => {
                    // A node that stops holds no gate while its heartbeat would age.
                    if let Err(e) = store.remove_node(&self.node_id).await {
                        tracing::warn!(error = %e, "could not remove this node's heartbeat");
                    }
                    return;
                }
            }
        }
    }

    async fn live_nodes(&self, store: &dyn Store, now: i64) -> Result<Vec<NodeKeys>, String> {
        Ok(store
            .list_nodes(now, NODE_FORGET_MS)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|n| NodeKeys {
                live: n.age_ms < NODE_LIVE_MS,
                node_id: n.node_id,
                keys_held: n.keys_held,
                wraps_with: n.wraps_with,
            })
            .collect())
    }

    /// Saves `next` if the state is unchanged since `state` was read; `Ok(false)` if not.
    async fn save(&self, store: &dyn Store, next: &RootKeyStateRecord) -> Result<bool, String> {
        store
            .save_root_key_state(next)
            .await
            .map_err(|e| e.to_string())
    }

    /// One step of the rotation (or a whole re-wrap pass), from `state`.
    async fn drive(
        &self,
        store: &dyn Store,
        state: RootKeyStateRecord,
        now: i64,
    ) -> Result<(), String> {
        let Some(phase) = phase_of(&state) else {
            return Ok(());
        };
        let new_key = state.new_key.clone().unwrap_or_default();
        let new_id = parse_id(&new_key)?;
        let mut next = state.clone();
        match phase {
            RootKeyPhase::Added => {
                let nodes = self.live_nodes(store, now).await?;
                match every_node_holds(&new_key, &nodes) {
                    Err(reason) => {
                        if next.note != reason {
                            next.note = reason;
                            self.save(store, &next).await?;
                        }
                    }
                    Ok(()) => {
                        if !self.ring.holds(new_id) {
                            return Ok(());
                        }
                        let remaining = self.count_not_under(store, new_id).await?;
                        next.primary_key = new_key.clone();
                        next.phase = Some(RootKeyPhase::Promoted.as_str().to_owned());
                        next.phase_at = Some(now);
                        next.rewrapped = 0;
                        next.remaining = remaining as i64;
                        next.note = "re-wrapping every sealed value under the new key".to_owned();
                        if self.save(store, &next).await? {
                            self.ring.set_primary(new_id).map_err(|e| e.to_string())?;
                            tracing::info!(key = %new_key, remaining, "root key promoted: new wraps use it");
                        }
                    }
                }
            }
            RootKeyPhase::Promoted => {
                next = self.rewrap_pass(store, next, new_id, now).await?;
                next.phase = Some(RootKeyPhase::Rewrapped.as_str().to_owned());
                next.phase_at = Some(crate::state::now_ms());
                next.note = "checking that every node wraps with the new key and nothing is left \
                             under an old one"
                    .to_owned();
                self.save(store, &next).await?;
            }
            RootKeyPhase::Rewrapped => {
                let nodes = self.live_nodes(store, now).await?;
                let remaining = if nodes.iter().any(|n| n.live && n.wraps_with != new_key) {
                    0
                } else {
                    self.count_not_under(store, new_id).await?
                };
                match nothing_left_under_old_keys(&new_key, &nodes, remaining) {
                    Err(reason) if remaining > 0 => {
                        // Something was sealed under an old key after the pass (a node that
                        // had not yet seen the promotion): re-wrap again.
                        next.phase = Some(RootKeyPhase::Promoted.as_str().to_owned());
                        next.remaining = remaining as i64;
                        next.note = reason;
                        self.save(store, &next).await?;
                    }
                    Err(reason) => {
                        if next.note != reason {
                            next.note = reason;
                            self.save(store, &next).await?;
                        }
                    }
                    Ok(()) => {
                        let old: Vec<String> = state.old_keys.clone();
                        for key in &old {
                            if !next.retired_keys.contains(key) {
                                next.retired_keys.push(key.clone());
                            }
                        }
                        next.phase = Some(RootKeyPhase::Retired.as_str().to_owned());
                        next.phase_at = Some(now);
                        next.remaining = 0;
                        next.note = String::new();
                        if self.save(store, &next).await? {
                            let old_ids: Vec<RootKeyId> =
                                old.iter().filter_map(|k| parse_id(k).ok()).collect();
                            for id in &old_ids {
                                let _ = self.ring.drop_key(*id);
                            }
                            match self.source.remove_keys(&old_ids).await {
                                Ok(n) if n > 0 => {
                                    tracing::info!(removed = n, source = %self.source.describe(), "retired root keys removed from the key source")
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not remove retired root keys from the key source")
                                }
                            }
                            tracing::info!(key = %new_key, retired = ?old, "root key rotation complete");
                        }
                    }
                }
            }
            RootKeyPhase::Retired => {}
        }
        Ok(())
    }

    /// Whether this blob is one the re-wrap must look at.
    fn is_root_sealed(kind: SealedKind, blob: &SealedBlob) -> bool {
        (kind != SealedKind::Meta || blob.id.starts_with(SEALED_META_PREFIX))
            && SealedUnder::of(&blob.blob).is_some()
    }

    /// How many root-sealed blobs are not under `key`.
    pub async fn count_not_under(&self, store: &dyn Store, key: RootKeyId) -> Result<u64, String> {
        let mut count = 0;
        for kind in SealedKind::ALL {
            let mut after = String::new();
            loop {
                let page = store
                    .list_sealed(kind, &after, 2_000)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = last.id.clone();
                count += page
                    .iter()
                    .filter(|b| {
                        Self::is_root_sealed(kind, b)
                            && SealedUnder::of(&b.blob) != Some(SealedUnder::Key(key))
                    })
                    .count() as u64;
            }
        }
        Ok(count)
    }

    fn reseal(
        &self,
        kind: SealedKind,
        blob: &SealedBlob,
    ) -> Result<Option<Vec<u8>>, baton_crypto::CryptoError> {
        match kind {
            SealedKind::SecretDataKey => self.ring.rewrap(&blob.blob, &blob.id),
            SealedKind::AccessKey => self
                .ring
                .reseal(&blob.blob, &baton_crypto::access_key_aad(&blob.id)),
            SealedKind::RotatorSigningSecret => self
                .ring
                .reseal(&blob.blob, &baton_crypto::signing_secret_aad(&blob.id)),
            SealedKind::SubscriptionSigningSecret => self
                .ring
                .reseal(&blob.blob, &crate::delivery::signing_secret_aad(&blob.id)),
            SealedKind::Meta => self.ring.reseal(&blob.blob, &meta_aad(&blob.id)),
        }
    }

    /// Re-wraps every root-sealed blob not under `key`, in batches of `rewrap_batch` (one
    /// transaction each), saving progress after each batch and renewing the lease. A blob
    /// written meanwhile is left for the check that follows.
    async fn rewrap_pass(
        &self,
        store: &dyn Store,
        mut state: RootKeyStateRecord,
        key: RootKeyId,
        now: i64,
    ) -> Result<RootKeyStateRecord, String> {
        let started = Instant::now();
        let total = state.remaining.max(0) as u64;
        let rewrapped_before = state.rewrapped.max(0) as u64;
        let mut rewrapped_now = 0u64;
        let mut last_checkpoint = Instant::now();
        for kind in SealedKind::ALL {
            let mut after = String::new();
            loop {
                let page = store
                    .list_sealed(kind, &after, self.rewrap_batch as u32)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.last() else { break };
                after = last.id.clone();
                let mut batch = Vec::new();
                for blob in page.iter().filter(|b| Self::is_root_sealed(kind, b)) {
                    match self.reseal(kind, blob) {
                        Ok(Some(new)) => batch.push(SealedReplacement {
                            id: blob.id.clone(),
                            old: blob.blob.clone(),
                            new,
                        }),
                        Ok(None) => {}
                        Err(e) => {
                            return Err(format!(
                                "cannot re-wrap {} {}: {e}",
                                kind.as_str(),
                                blob.id
                            ));
                        }
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let batch_started = Instant::now();
                let replaced = store
                    .replace_sealed(kind, &batch)
                    .await
                    .map_err(|e| e.to_string())?;
                rewrapped_now += replaced;
                metrics::counter!("baton_root_key_rewrapped_total").increment(replaced);
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    state = self
                        .checkpoint(
                            store,
                            state,
                            key,
                            rewrapped_before + rewrapped_now,
                            total.saturating_sub(rewrapped_now),
                        )
                        .await?;
                    last_checkpoint = Instant::now();
                }
                // Give requests the writer (and the cores) twice as long as the batch took:
                // the re-wrap takes at most a third of either while traffic goes on.
                tokio::time::sleep(batch_started.elapsed() * 2).await;
            }
        }
        state = self
            .checkpoint(
                store,
                state,
                key,
                rewrapped_before + rewrapped_now,
                total.saturating_sub(rewrapped_now),
            )
            .await?;
        tracing::info!(
            rewrapped = rewrapped_now,
            elapsed_ms = started.elapsed().as_millis() as u64,
            since_promotion_ms = crate::state::now_ms() - now,
            "root key re-wrap pass done"
        );
        Ok(state)
    }

    /// Saves the re-wrap's progress and renews the lease: a node that lost the lease, or a
    /// rotation that moved on, stops the pass.
    async fn checkpoint(
        &self,
        store: &dyn Store,
        mut state: RootKeyStateRecord,
        key: RootKeyId,
        rewrapped: u64,
        remaining: u64,
    ) -> Result<RootKeyStateRecord, String> {
        let renewed = store
            .acquire_lease(
                LEASE_KEY,
                &self.node_id,
                crate::state::now_ms(),
                LEASE_TTL_MS,
            )
            .await
            .map_err(|e| e.to_string())?;
        if renewed.is_none() {
            return Err("lost the root-key-rotation lease during the re-wrap".to_owned());
        }
        for _ in 0..3 {
            state.rewrapped = rewrapped as i64;
            state.remaining = remaining as i64;
            if self.save(store, &state).await? {
                state.revision += 1;
                metrics::gauge!("baton_root_key_remaining").set(state.remaining as f64);
                return Ok(state);
            }
            // Another writer (a node's note) came first: read again and keep our counts.
            state = store
                .root_key_state(&key.to_string())
                .await
                .map_err(|e| e.to_string())?;
            if phase_of(&state) != Some(RootKeyPhase::Promoted) {
                return Err("the rotation moved on during the re-wrap".to_owned());
            }
        }
        Err("the root key's state kept changing during the re-wrap".to_owned())
    }

    fn publish_metrics(&self, state: &RootKeyStateRecord) {
        let phase = phase_of(state);
        for p in [
            RootKeyPhase::Added,
            RootKeyPhase::Promoted,
            RootKeyPhase::Rewrapped,
            RootKeyPhase::Retired,
        ] {
            metrics::gauge!("baton_root_key_rotation_phase", "phase" => p.as_str())
                .set(if phase == Some(p) { 1.0 } else { 0.0 });
        }
        metrics::gauge!("baton_root_key_rewrapped").set(state.rewrapped as f64);
        metrics::gauge!("baton_root_key_remaining").set(state.remaining as f64);
        let age = match (phase, state.phase_at) {
            (Some(p), Some(at)) if p.in_flight() => (crate::state::now_ms() - at) as f64 / 1000.0,
            _ => 0.0,
        };
        metrics::gauge!("baton_root_key_phase_age_seconds").set(age);
        metrics::gauge!("baton_root_keys_held").set(self.ring.ids().len() as f64);
    }
}

impl crate::Baton {
    fn root_keys(&self) -> Result<&Arc<RootKeys>, crate::ApiError> {
        self.root_keys.as_ref().ok_or_else(|| {
            crate::ApiError::InvalidRequest("this Baton runs without a root key source".to_owned())
        })
    }

    /// `baton.DescribeRootKey`.
    pub async fn describe_root_key(
        &self,
        _request: baton_proto::DescribeRootKeyRequest,
    ) -> Result<baton_proto::DescribeRootKeyResponse, crate::ApiError> {
        let keys = self.root_keys()?;
        let state = keys.state(&*self.store).await?;
        let now = crate::state::now_ms();
        let nodes = self.store.list_nodes(now, NODE_FORGET_MS).await?;
        Ok(describe(&state, &nodes, keys))
    }

    /// `baton.RotateRootKey`: starts the rotation; the nodes' ticks drive it.
    pub async fn rotate_root_key(
        &self,
        request: baton_proto::RotateRootKeyRequest,
    ) -> Result<baton_proto::DescribeRootKeyResponse, crate::ApiError> {
        use crate::ApiError;
        let keys = self.root_keys()?;
        let state = keys.state(&*self.store).await?;
        if let Some(phase) = phase_of(&state).filter(|p| p.in_flight()) {
            return Err(ApiError::InvalidRequest(format!(
                "A rotation of the root key is in progress (phase {}, new key {}); wait for it \
                 to finish (baton admin root-key status).",
                phase.as_str(),
                state.new_key.as_deref().unwrap_or("?")
            )));
        }
        let new_id = match request.key_id {
            Some(text) => {
                let id: RootKeyId = text
                    .parse()
                    .map_err(|e: String| ApiError::Validation(format!("KeyId: {e}")))?;
                if !keys.ring.holds(id) {
                    let _ = keys.reload(&*self.store, true).await;
                }
                if !keys.ring.holds(id) {
                    return Err(ApiError::Validation(format!(
                        "This node's root key source ({}) does not hold {id}; add it there \
                         first (and on every other node).",
                        keys.source.describe()
                    )));
                }
                id
            }
            None => {
                let new = keys
                    .source
                    .add_new_key()
                    .await
                    .map_err(ApiError::InvalidRequest)?;
                let id = keys
                    .ring
                    .add(std::slice::from_ref(&new.key))
                    .map_err(ApiError::from)?
                    .remove(0);
                if let Some(share) = new.share {
                    self.store
                        .init_meta_value(
                            &format!("{SHARED_KEY_PREFIX}{id}"),
                            &share,
                            crate::state::now_ms(),
                        )
                        .await?;
                }
                id
            }
        };
        if new_id.to_string() == state.primary_key
            || state.retired_keys.contains(&new_id.to_string())
        {
            return Err(ApiError::Validation(format!(
                "{new_id} is {} key; a rotation needs a new one.",
                if new_id.to_string() == state.primary_key {
                    "already the primary"
                } else {
                    "a retired"
                }
            )));
        }
        let now = crate::state::now_ms();
        let mut next = state.clone();
        next.phase = Some(RootKeyPhase::Added.as_str().to_owned());
        next.new_key = Some(new_id.to_string());
        next.old_keys = keys
            .ring
            .ids()
            .into_iter()
            .filter(|k| *k != new_id && !state.retired_keys.contains(&k.to_string()))
            .map(|k| k.to_string())
            .collect();
        if !next.old_keys.contains(&state.primary_key) {
            next.old_keys.push(state.primary_key.clone());
        }
        next.started_at = Some(now);
        next.phase_at = Some(now);
        next.rewrapped = 0;
        next.remaining = 0;
        next.note = "waiting for every node to hold the new key".to_owned();
        if !self.store.save_root_key_state(&next).await? {
            return Err(ApiError::InvalidRequest(
                "The root key's state changed while the rotation was starting; try again."
                    .to_owned(),
            ));
        }
        tracing::info!(key = %new_id, "root key rotation started");
        let nodes = self.store.list_nodes(now, NODE_FORGET_MS).await?;
        next.revision += 1;
        Ok(describe(&next, &nodes, keys))
    }
}

fn describe(
    state: &RootKeyStateRecord,
    nodes: &[NodeRecord],
    keys: &RootKeys,
) -> baton_proto::DescribeRootKeyResponse {
    let phase = phase_of(state);
    let in_flight = phase.is_some_and(RootKeyPhase::in_flight);
    let mut live = vec![state.primary_key.clone()];
    if in_flight {
        for k in state.old_keys.iter().chain(state.new_key.iter()) {
            if !live.contains(k) {
                live.push(k.clone());
            }
        }
    }
    let seconds = |ms: Option<i64>| ms.map(|m| m as f64 / 1000.0);
    baton_proto::DescribeRootKeyResponse {
        phase: Some(phase.map(|p| p.as_str()).unwrap_or("None").to_owned()),
        primary_key: Some(state.primary_key.clone()),
        new_key: state.new_key.clone(),
        keys_live: Some(live),
        retired_keys: Some(state.retired_keys.clone()),
        rewrapped_count: Some(state.rewrapped),
        remaining_count: Some(state.remaining),
        started_date: seconds(state.started_at),
        phase_date: seconds(state.phase_at),
        waiting_for: (in_flight && !state.note.is_empty()).then(|| state.note.clone()),
        key_source: Some(keys.source.describe()),
        nodes: Some(
            nodes
                .iter()
                .map(|n| baton_proto::RootKeyNode {
                    node_id: Some(n.node_id.clone()),
                    address: Some(n.address.clone()),
                    keys_held: Some(n.keys_held.clone()),
                    wraps_with: Some(n.wraps_with.clone()),
                    seconds_since_heartbeat: Some(n.age_ms.max(0) as f64 / 1000.0),
                    live: Some(n.age_ms < NODE_LIVE_MS),
                })
                .collect(),
        ),
    }
}

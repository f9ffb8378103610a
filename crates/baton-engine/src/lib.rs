//! Baton's rotation engine. It finds due rotations through the store's due-time index, feeds
//! `baton-core`'s phase machine the time and the consumers' status, performs the commands it
//! answers with, and saves the machine's new state in the same transaction as the label changes
//! the step implied (they travel together in the `SecretRecord`).
//!
//! Architecture invariant: the engine and the servers are the only places that read the clock.
//!
//! Crash safety: nothing a drive does is visible until its single save. If the process dies
//! before it, the rotation is still due with its step in flight, and `Rotation::resume` runs that
//! step again: every step is idempotent by the new version's id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton_core::rotation::{
    Command, ConsumerStatus, Holding, Input, Rotation, RotationError, RotationState, Step,
};
use baton_core::{AWSCURRENT, CoreError, SecretRecord, Timestamp};
use baton_crypto::RootKey;
use baton_store::{Fence, Store, StoreError};

mod builtin;
pub mod commands;
mod database;
mod events;
mod external;
pub mod keywrap;
mod observe;
pub mod outbound;
mod redact;

pub use builtin::{
    Builtin, DEFAULT_KEY_TYPE, KEYPAIR_ROTATOR, KMS_ROTATOR, MYSQL_ROTATOR, POSTGRES_ROTATOR,
    RANDOM_ROTATOR, rotate_key_at_once, rotates_at_once,
};
use tokio::sync::{Notify, watch};

/// Due rotations taken per pass of the engine.
const DUE_BATCH_MAX: u32 = 100;
/// Commands one drive performs at most before it saves and yields.
const COMMANDS_PER_DRIVE_MAX: usize = 64;
const SAVE_ATTEMPTS_MAX: usize = 8;
/// The engine sleeps at most this long between looks at the due index.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// How long a node holds a rotation's lease without renewing it; renewed every third of it
/// while a drive runs.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(15);
/// How soon to look again at a due rotation that another node is driving.
const FOREIGN_LEASE_RETRY: Duration = Duration::from_millis(250);
/// A gate that reporting consumers hold is looked at again this often, so a consumer whose
/// lease ends stops holding it promptly. Reports wake it sooner (see [`Kicks`]).
const GATE_RECHECK_MS: Timestamp = 1_000;
/// The API records plain reads at most this often per secret, so a stored time may be this much
/// older than the latest read; gates add it to the propagation delay.
pub use baton_core::rotation::PLAIN_READ_RECORD_INTERVAL_MS;

/// Secrets whose rotation should be looked at now, because a consumer reported: the engine
/// drives them at its next pass, and a kick wakes it.
#[derive(Debug, Default)]
pub struct Kicks {
    pending: std::sync::Mutex<std::collections::HashSet<String>>,
    wake: Notify,
}

impl Kicks {
    pub fn kick(&self, arn: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.insert(arn.to_owned()) {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<String> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().collect()
    }
}

/// The engine's clock, in milliseconds since the epoch.
pub fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as Timestamp)
        .unwrap_or_default()
}

/// Why a drive failed; the rotation stays due and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("rotation: {0}")]
    Rotation(RotationError),
    #[error("the secret kept changing under the engine")]
    Conflicts,
}

/// The name of the rotation function in a RotationLambdaARN
/// (`arn:aws:lambda:<region>:<account>:function:<name>`), or the string itself.
pub fn rotator_name(lambda_arn: &str) -> &str {
    lambda_arn
        .rsplit_once(":function:")
        .map_or(lambda_arn, |(_, name)| name)
}

/// Whether the rotation function is one of Baton's built-in rotators.
pub fn is_builtin(lambda_arn: &str) -> bool {
    Builtin::from_name(rotator_name(lambda_arn)).is_some()
}

/// Whether the rotation function is `baton-postgres` or `baton-mysql`.
pub fn is_database_rotator(lambda_arn: &str) -> bool {
    matches!(
        Builtin::from_name(rotator_name(lambda_arn)),
        Some(Builtin::Database(_))
    )
}

/// The master secret a database secret's value names (`masterarn`), if it parses as one.
pub fn database_master_arn(value: &[u8]) -> Option<String> {
    baton_dbrotate::DbSecret::parse(value).ok()?.masterarn
}

/// Where external rotators reach this server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// The certificate to trust, when the server speaks TLS with its own certificate.
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// When the secret's schedule next starts a rotation after one that started (or was last
/// completed) at `last`: a random point in the next window, outside blackouts. `None` when
/// rotation is off or has no rules.
pub fn plan_next_rotation(
    secret: &SecretRecord,
    last: Timestamp,
    now: Timestamp,
) -> Option<Timestamp> {
    let config = &secret.rotation;
    if !config.enabled || config.lambda_arn.is_none() {
        return None;
    }
    let schedule = baton_core::schedule::Schedule::parse(config.rules.as_ref()?).ok()??;
    let mut draw = [0u8; 8];
    baton_crypto::fill_random(&mut draw).ok()?;
    let blackouts = secret
        .rotation_policy
        .as_ref()
        .map(|p| p.blackouts.clone())
        .unwrap_or_default();
    schedule
        .next_rotation(last, now, &blackouts, u64::from_le_bytes(draw))
        .map(|next| next.at)
}

/// Starts a rotation on `secret` (to be saved by the caller), keyed by `version_id`.
pub fn start_rotation(
    secret: &mut SecretRecord,
    version_id: String,
    now: Timestamp,
) -> Result<(), CoreError> {
    secret.ensure_not_deleted()?;
    if let Some(state) = &secret.rotation_state
        && !state.machine.is_finished()
    {
        return Err(CoreError::InvalidRequest(
            "A previous rotation isn't complete. That rotation will be reattempted.".to_owned(),
        ));
    }
    if secret.version(&version_id).is_some() {
        return Err(CoreError::ResourceExists(format!(
            "A version with the ClientRequestToken {version_id} already exists; a rotation needs \
             a new token."
        )));
    }
    let old = secret
        .version_with_label(AWSCURRENT)
        .map(|v| v.version_id.clone());
    let policy = secret.rotation_policy.clone().unwrap_or_default();
    let (machine, commands) = Rotation::start(secret.id.clone(), version_id, old, policy, now);
    let mut state = RotationState {
        machine,
        timeline: Vec::new(),
        due_at: None,
    };
    for command in &commands {
        if let Command::Record(event) = command {
            let arn = secret.arn.clone();
            secret
                .outbox
                .extend(events::record(&mut state, &arn, now, event));
        }
    }
    // The first step runs on the engine's next pass.
    state.due_at = Some(now);
    secret.rotation_state = Some(state);
    Ok(())
}

/// A test-only fault hook: `BATON_DANGER_TEST_CRASH_AT=before-save:<step>` or
/// `after-save:<step>` makes the process kill itself with SIGKILL at that step boundary, so the
/// crash tests can check that a rotation resumes correctly from every point. Never set it in
/// production.
const CRASH_HOOK_ENV: &str = "BATON_DANGER_TEST_CRASH_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    BeforeSave(Step),
    AfterSave(Step),
}

fn crash_hook_from_env() -> Option<CrashPoint> {
    let value = std::env::var(CRASH_HOOK_ENV).ok()?;
    let (when, step) = value.split_once(':')?;
    let step = Step::parse(step)?;
    match when {
        "before-save" => Some(CrashPoint::BeforeSave(step)),
        "after-save" => Some(CrashPoint::AfterSave(step)),
        _ => None,
    }
}

fn crash_now(point: CrashPoint) {
    tracing::error!(
        ?point,
        "{CRASH_HOOK_ENV} is set: killing this process with SIGKILL"
    );
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // `kill` delivers the signal before it exits; never continue past the crash point.
    std::process::abort();
}

/// A fresh version id (ClientRequestToken) in UUID form, from the system's random generator.
/// Host, process id and a random suffix: tells operators which process holds a lease.
/// A node's name when the operator gives none: host, process id and a random suffix.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let mut b = [0u8; 4];
    let _ = baton_crypto::fill_random(&mut b);
    format!(
        "{host}/{}/{}",
        std::process::id(),
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn new_version_id() -> String {
    let mut b = [0u8; 16];
    if baton_crypto::fill_random(&mut b).is_err() {
        // The clock is unique enough for an id when the generator fails; a collision with an
        // existing version is refused by start_rotation.
        b[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The rotation engine of one node.
pub struct Engine {
    store: Arc<dyn Store>,
    root_key: Arc<RootKey>,
    /// This node's name in leases: unique per process.
    node_id: String,
    lease_ttl: Duration,
    /// Set when a pass skipped a due rotation because another node holds its lease.
    skipped_for_lease: std::sync::atomic::AtomicBool,
    wake: Arc<Notify>,
    kicks: Arc<Kicks>,
    crash_hook: Option<CrashPoint>,
    endpoint: Option<Endpoint>,
    /// Calls webhook rotators.
    http: reqwest::Client,
    /// Whether webhook rotators may be on loopback or private addresses.
    allow_private_webhooks: bool,
    /// Decides whether a rotation may read its master secret; without one, none may.
    master_access: Option<Arc<dyn MasterAccess>>,
    /// The operator's command rotators.
    command_rotators: Arc<commands::CommandRotators>,
}

/// Authorizes a built-in database rotator's read of its master secret on behalf of the
/// principal that configured the rotation, and records the decision in the audit log. The
/// engine knows no policies; the API implements this with the same evaluation as a request.
#[async_trait::async_trait]
pub trait MasterAccess: Send + Sync {
    /// `Ok` when `configured_by` may read `master_arn` (GetSecretValue) now; otherwise the
    /// reason, which stops the rotation's step safely.
    async fn authorize_master_read(
        &self,
        configured_by: &str,
        secret_arn: &str,
        master_arn: &str,
    ) -> Result<(), String>;
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, root_key: Arc<RootKey>) -> Self {
        let crash_hook = crash_hook_from_env();
        if let Some(point) = crash_hook {
            tracing::warn!(?point, "test crash hook armed ({CRASH_HOOK_ENV})");
        }
        Engine {
            store,
            root_key,
            node_id: default_node_id(),
            lease_ttl: LEASE_TTL_DEFAULT,
            skipped_for_lease: std::sync::atomic::AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            kicks: Arc::new(Kicks::default()),
            crash_hook,
            endpoint: None,
            master_access: None,
            command_rotators: Arc::default(),
            http: outbound::client(None, false),
            allow_private_webhooks: false,
        }
    }

    /// Names this node in rotation leases (default: host, process id and a random suffix), and
    /// sets how long a lease lasts without renewal: a lost node's rotations are taken over
    /// after at most this long.
    pub fn with_lease(mut self, node_id: Option<String>, ttl: Duration) -> Self {
        if let Some(id) = node_id {
            self.node_id = id;
        }
        self.lease_ttl = ttl;
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Lets external rotators call this server at `endpoint`.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The command rotators the operator defined (configuration and rotators directory).
    pub fn with_command_rotators(mut self, rotators: Arc<commands::CommandRotators>) -> Self {
        self.command_rotators = rotators;
        self
    }

    /// Lets webhook rotators be on loopback, private and link-local addresses
    /// (`--allow-private-webhooks`).
    pub fn with_private_webhooks(mut self, allow: bool) -> Self {
        self.allow_private_webhooks = allow;
        self.http = outbound::client(None, allow);
        self
    }

    /// Lets built-in database rotators read master secrets, as far as the principal that
    /// configured each rotation may.
    pub fn with_master_access(mut self, access: Arc<dyn MasterAccess>) -> Self {
        self.master_access = Some(access);
        self
    }

    /// Notifying it makes the engine look at the due index at once (after RotateSecret, say).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Shares the API's kicks, so consumer reports reach this engine.
    pub fn with_kicks(mut self, kicks: Arc<Kicks>) -> Self {
        self.kicks = kicks;
        self
    }

    /// Kicking a secret makes the engine drive its rotation at once (after a consumer report).
    pub fn kicks(&self) -> Arc<Kicks> {
        self.kicks.clone()
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            self.drive_due().await;
            for arn in self.kicks.take() {
                if let Err(e) = self.drive_now(&arn, true).await {
                    tracing::warn!(secret = %arn, error = %e, "rotation drive failed");
                }
            }
            let mut sleep = match self.store.next_rotation_due().await {
                Ok(Some(at)) => Duration::from_millis(
                    (at - now_ms()).clamp(0, IDLE_WAKE.as_millis() as i64) as u64,
                ),
                Ok(None) => IDLE_WAKE,
                Err(e) => {
                    tracing::warn!(error = %e, "rotation engine cannot read the due index");
                    IDLE_WAKE
                }
            };
            // A due rotation that another node drives stays due until that node saves; do not
            // spin on it.
            if self
                .skipped_for_lease
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                sleep = sleep.max(FOREIGN_LEASE_RETRY);
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = self.kicks.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Drives every rotation due now. Returns how many were driven.
    pub async fn drive_due(&self) -> usize {
        let due = match self.store.rotations_due(now_ms(), DUE_BATCH_MAX).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "rotation engine cannot read the due index");
                return 0;
            }
        };
        for arn in &due {
            if let Err(e) = self.drive(arn).await {
                tracing::warn!(secret = %arn, error = %e, "rotation drive failed; will retry");
            }
        }
        due.len()
    }

    /// Drives one secret's rotation as far as it can go now, and saves the result.
    pub async fn drive(&self, arn: &str) -> Result<(), EngineError> {
        self.drive_now(arn, false).await
    }

    /// As [`Engine::drive`]; `kicked` evaluates a waiting gate before its due time, because a
    /// consumer just reported. A tick is idempotent, so an early look is harmless.
    ///
    /// Only the holder of the secret's lease drives it: the lease is renewed while the drive
    /// runs and released after, and every save checks its fencing token in the transaction,
    /// so a node that lost the lease (paused, partitioned, slow) writes nothing.
    async fn drive_now(&self, arn: &str, kicked: bool) -> Result<(), EngineError> {
        let ttl_ms = self.lease_ttl.as_millis() as i64;
        let Some(token) = self
            .store
            .acquire_lease(arn, &self.node_id, now_ms(), ttl_ms)
            .await?
        else {
            self.skipped_for_lease
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        };
        let fence = Fence {
            key: arn.to_owned(),
            holder: self.node_id.clone(),
            token,
        };
        let renewal = {
            let store = self.store.clone();
            let fence = fence.clone();
            let every = self.lease_ttl / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match store
                        .acquire_lease(&fence.key, &fence.holder, now_ms(), ttl_ms)
                        .await
                    {
                        Ok(Some(t)) if t == fence.token => {}
                        other => {
                            observe::lease_lost("renewal refused");
                            tracing::warn!(secret = %fence.key, result = ?other.map(|t| t.is_some()), "lost the rotation's lease; this drive's writes will be refused");
                            return;
                        }
                    }
                }
            })
        };
        let result = self.drive_leased(arn, kicked, &fence).await;
        renewal.abort();
        match result {
            Err(EngineError::Store(StoreError::FencedOut)) => {
                observe::lease_lost("fenced out");
                tracing::warn!(secret = %arn, node = %self.node_id, token, "fenced out: another node took this rotation over; nothing was written");
                Ok(())
            }
            other => {
                if let Err(e) = self.store.release_lease(arn, &self.node_id, token).await {
                    tracing::debug!(secret = %arn, error = %e, "could not release the lease; it lapses by itself");
                }
                other
            }
        }
    }

    async fn drive_leased(
        &self,
        arn: &str,
        kicked: bool,
        fence: &Fence,
    ) -> Result<(), EngineError> {
        for _ in 0..SAVE_ATTEMPTS_MAX {
            let Some(mut secret) = self.store.find_secret_by_arn(arn).await? else {
                return Ok(());
            };
            let now = now_ms();
            let in_flight = secret
                .rotation_state
                .as_ref()
                .is_some_and(|s| s.due_at.is_some());
            if secret.rotation.next_rotation_at.is_some_and(|at| at <= now) {
                if in_flight {
                    // A rotation is still running: the schedule waits for its next window.
                    secret.rotation.next_rotation_at = plan_next_rotation(&secret, now, now);
                } else if builtin::rotates_at_once(&secret) {
                    let token = new_version_id();
                    match builtin::rotate_key_at_once(&self.root_key, &mut secret, &token, now) {
                        Ok(()) => {
                            tracing::info!(secret = %arn, version = %token, "scheduled key rotation: the new material is current")
                        }
                        Err(e) => {
                            tracing::warn!(secret = %arn, error = %e, "scheduled key rotation failed")
                        }
                    }
                    secret.rotation.next_rotation_at = plan_next_rotation(&secret, now, now);
                } else {
                    tracing::info!(secret = %arn, "scheduled rotation starts");
                    let token = new_version_id();
                    if let Err(e) = start_rotation(&mut secret, token, now) {
                        tracing::warn!(secret = %arn, error = %e, "scheduled rotation could not start");
                    }
                    secret.rotation.next_rotation_at = plan_next_rotation(&secret, now, now);
                }
            }
            let Some(mut state) = secret.rotation_state.take() else {
                return self.save(&secret, fence).await;
            };
            let due = state.due_at.is_some_and(|at| at <= now);
            let gate_waiting = state.due_at.is_some() && state.machine.waiting_gate().is_some();
            if !(due || (kicked && gate_waiting)) {
                secret.rotation_state = Some(state);
                match self.save(&secret, fence).await {
                    Err(EngineError::Store(StoreError::Conflict)) => continue,
                    other => return other,
                }
            }
            // The policy may have changed since the rotation started; the current one applies.
            state.machine.policy = secret.rotation_policy.clone().unwrap_or_default();
            let consumers = self.consumers(&secret, &state.machine, now).await?;
            // For the gate-wait histogram: a gate this drive may pass began to wait then.
            let rotator = observe::rotator_label(secret.rotation.lambda_arn.as_deref());
            let waiting_since = state
                .machine
                .waiting_gate()
                .map(|_| state.machine.phase_started_at);
            let mut queue: VecDeque<Command> = state.machine.resume().into();
            if queue.is_empty() {
                queue.extend(
                    state
                        .machine
                        .handle(Input::Tick(consumers.status), now)
                        .map_err(EngineError::Rotation)?,
                );
            }
            let mut performed = 0;
            let mut steps_done = Vec::new();
            // After a step that reaches a gate, the gate is evaluated at once with what the
            // consumers hold, so a rotation nobody would notice does not wait for nothing.
            let mut retick = false;
            // An external rotator's next step reads the secret from the store, so the engine's
            // part of the previous one (label moves) must be saved first: one external step per
            // drive. The next step stays in flight and runs at the next drive, at once.
            let mut external_step_done = false;
            let mut logged = Vec::new();
            loop {
                if queue.is_empty() && retick {
                    retick = false;
                    let status = self.consumers(&secret, &state.machine, now).await?.status;
                    queue.extend(
                        state
                            .machine
                            .handle(Input::Tick(status), now)
                            .map_err(EngineError::Rotation)?,
                    );
                }
                let Some(command) = queue.pop_front() else {
                    break;
                };
                if external_step_done && matches!(command, Command::Run(_)) {
                    break;
                }
                performed += 1;
                if performed > COMMANDS_PER_DRIVE_MAX {
                    break;
                }
                match command {
                    Command::Run(step) => {
                        let outcome = if secret
                            .rotation
                            .lambda_arn
                            .as_deref()
                            .is_some_and(is_builtin)
                        {
                            let mut trial = secret.clone();
                            match self.perform(&mut trial, &state.machine, step, now).await {
                                Ok(database::StepResult::Done) => Ok(trial),
                                Ok(database::StepResult::Deferred(reason)) => {
                                    queue.extend(
                                        state
                                            .machine
                                            .handle(Input::StepDeferred { step, reason }, now)
                                            .map_err(EngineError::Rotation)?,
                                    );
                                    continue;
                                }
                                Err(e) => Err(e),
                            }
                        } else {
                            let outcome = self
                                .perform_external(&secret, &state.machine, step, now, fence)
                                .await;
                            external_step_done = outcome.is_ok();
                            if outcome.is_err() {
                                // The rotator may have written before it failed: continue from
                                // what the store holds now, or the save would only conflict.
                                if let Ok(Some(mut fresh)) =
                                    self.store.find_secret_by_arn(arn).await
                                {
                                    fresh.rotation_state = None;
                                    secret = fresh;
                                }
                            }
                            outcome
                        };
                        let input = match outcome {
                            Ok(changed) => {
                                secret = changed;
                                steps_done.push(step);
                                if self.crash_hook == Some(CrashPoint::BeforeSave(step)) {
                                    crash_now(CrashPoint::BeforeSave(step));
                                }
                                retick = true;
                                Input::StepSucceeded(step)
                            }
                            Err(reason) => Input::StepFailed { step, reason },
                        };
                        queue.extend(
                            state
                                .machine
                                .handle(input, now)
                                .map_err(EngineError::Rotation)?,
                        );
                    }
                    Command::DropPending => drop_pending(&mut secret, &state.machine, now),
                    Command::Record(event) => {
                        // Logged when it changes something, not on every look at a gate.
                        if let Some(recorded) = events::record(&mut state, arn, now, &event) {
                            observe::recorded(&event, &rotator, waiting_since, now);
                            tracing::info!(secret = %arn, version = %state.machine.version_id, event = %event, "rotation");
                            logged.push(recorded);
                        }
                    }
                }
            }
            let recheck = self
                .consumers(&secret, &state.machine, now)
                .await?
                .recheck_at;
            // A phase reached in this drive becomes visible to consumers only when this save
            // commits, which a slow step (key generation, a database) may put well after `now`:
            // its gate counts the propagation delay from then, never from before.
            if state.machine.phase_started_at == now && !steps_done.is_empty() {
                state.machine.phase_started_at = now_ms().max(now);
            }
            state.compute_due_at_with(now, recheck);
            secret.rotation_state = Some(state);
            // Collected apart: an external step replaces `secret` with a fresh read.
            secret.outbox.extend(logged);
            match self.store.save_secret_fenced(&secret, fence).await {
                Ok(_) => {
                    if let Some(CrashPoint::AfterSave(step)) = self.crash_hook
                        && steps_done.contains(&step)
                    {
                        crash_now(CrashPoint::AfterSave(step));
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Conflicts)
    }

    /// What the secret's consumers hold with respect to the rotation's next gate, and when to
    /// look again if that can change without a report (a lease ending, plain reads aging out).
    async fn consumers(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        now: Timestamp,
    ) -> Result<Consumers, EngineError> {
        let rows = self.store.list_consumers(&secret.id).await?;
        let live: Vec<_> = rows.iter().filter(|c| c.lease_expires_at > now).collect();
        let plain_until = baton_core::rotation::plain_readers_until(
            self.store.last_plain_read(&secret.id).await?,
            &rotation.policy,
        );
        let non_reporting = plain_until.is_some_and(|until| until > now);
        // Only versions the secret has count: the API refuses others, and a version pruned
        // since the report cannot be what a gate waits for.
        let exists = |v: &String| secret.version(v).is_some();
        let holdings: Vec<(Option<&str>, Vec<String>)> = live
            .iter()
            .map(|c| {
                (
                    c.current_version
                        .as_ref()
                        .filter(|v| exists(v))
                        .map(String::as_str),
                    c.accepted_versions
                        .iter()
                        .filter(|v| exists(v))
                        .cloned()
                        .collect(),
                )
            })
            .collect();
        let status = rotation.consumer_status(
            holdings.iter().map(|(current, accepted)| Holding {
                current: *current,
                accepted,
            }),
            non_reporting,
        );
        let lease_check = (!live.is_empty()).then_some(now + GATE_RECHECK_MS);
        let plain_check = plain_until.filter(|&until| until > now);
        let recheck_at = match (lease_check, plain_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Consumers { status, recheck_at })
    }

    async fn save(&self, secret: &SecretRecord, fence: &Fence) -> Result<(), EngineError> {
        self.store.save_secret_fenced(secret, fence).await?;
        Ok(())
    }

    /// Performs one step of a built-in rotator on `secret` (a copy that is kept only if the
    /// step succeeds).
    async fn perform(
        &self,
        secret: &mut SecretRecord,
        rotation: &Rotation,
        step: Step,
        now: Timestamp,
    ) -> Result<database::StepResult, String> {
        let name = secret
            .rotation
            .lambda_arn
            .as_deref()
            .map(rotator_name)
            .unwrap_or_default();
        let builtin = Builtin::from_name(name)
            .ok_or_else(|| format!("{name:?} is not a built-in rotator"))?;
        if let Builtin::Database(_) = builtin
            && matches!(step, Step::Set | Step::Test | Step::Retire)
        {
            let result = self.database_step(secret, rotation, step, now).await?;
            if let database::StepResult::Deferred(_) = result {
                return Ok(result);
            }
        }
        match step {
            Step::Create => {
                let data_key = keywrap::data_key(&*self.store, &self.root_key, secret).await?;
                builtin::create_value(&data_key, builtin, secret, rotation, now)
            }
            // Random and key-pair rotators have no target system to set or test.
            Step::Set | Step::Test => Ok(()),
            Step::Promote => promote_labels(secret, rotation, now),
            Step::Retire => retire_labels(secret, rotation, now),
        }
        .map(|()| database::StepResult::Done)
    }
}

struct Consumers {
    status: ConsumerStatus,
    recheck_at: Option<Timestamp>,
}

/// The engine's part of promotion, as `baton_core::promote_labels` defines it.
fn promote_labels(
    secret: &mut SecretRecord,
    rotation: &Rotation,
    now: Timestamp,
) -> Result<(), String> {
    baton_core::promote_labels(secret, rotation, now).map_err(|e| e.to_string())?;
    secret.rotation.last_rotated_at = Some(now);
    Ok(())
}

/// The engine's part of retirement, as `baton_core::retire_labels` defines it.
fn retire_labels(
    secret: &mut SecretRecord,
    rotation: &Rotation,
    now: Timestamp,
) -> Result<(), String> {
    baton_core::retire_labels(secret, rotation, now).map_err(|e| e.to_string())
}

fn drop_pending(secret: &mut SecretRecord, rotation: &Rotation, now: Timestamp) {
    if let Err(e) = baton_core::drop_pending_label(secret, &rotation.version_id, now) {
        tracing::warn!(error = %e, "could not drop AWSPENDING after a cancellation");
    }
}

#[cfg(test)]
mod tests {
    use baton_core::{
        AWSPREVIOUS, DeletionState, NewVersion, RotationConfig, RotationRules, SecretValueKind,
    };
    use baton_crypto::value_aad;
    use baton_store::SqliteStore;

    use super::*;

    fn secret(root_key: &RootKey, now: Timestamp) -> SecretRecord {
        let data_key = baton_crypto::DataKey::generate().unwrap();
        let id = "engine-test".to_owned();
        let mut secret = SecretRecord {
            wrapped_data_key: root_key.wrap(&data_key, &id).unwrap(),
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:e-AbCdEf".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            name: "e".into(),
            description: None,
            kms_key_id: None,
            tags: vec![],
            tagged: false,
            resource_policy: None,
            rotation: RotationConfig {
                enabled: true,
                lambda_arn: Some("arn:aws:lambda:us-east-1:1:function:baton-random".into()),
                rules: Some(RotationRules {
                    automatically_after_days: None,
                    duration: None,
                    schedule_expression: Some("rate(4 hours)".into()),
                }),
                last_rotated_at: None,
                // Due a second ago.
                next_rotation_at: Some(now - 1_000),
                ..RotationConfig::default()
            },
            created_at: now,
            last_changed_at: now,
            last_accessed_at: None,
            deletion: DeletionState::Active,
            versions: vec![],
            replicas: vec![],
            rotation_policy: Some(baton_core::rotation::RotationPolicy {
                propagation_delay_ms: 0,
                retire_grace_ms: 0,
                ..Default::default()
            }),
            rotation_state: None,
            id: id.clone(),
            revision: 0,
            key: None,
            outbox: vec![],
        };
        secret
            .add_version(
                NewVersion {
                    version_id: "v1".into(),
                    kind: SecretValueKind::String,
                    sealed_value: data_key.seal(b"first", &value_aad(&id, "v1")).unwrap(),
                    labels: None,
                },
                now,
            )
            .unwrap();
        secret
    }

    #[tokio::test]
    async fn a_due_schedule_starts_a_rotation_that_completes_and_plans_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        let (root_key, _) = RootKey::generate().unwrap();
        let root_key = Arc::new(root_key);
        let now = now_ms();
        let secret = secret(&root_key, now);
        store.insert_secret(&secret).await.unwrap();
        let engine = Engine::new(store.clone(), root_key);
        // With T = 0, every gate passes on the next look; a few passes finish the rotation.
        for _ in 0..10 {
            engine.drive_due().await;
        }
        let after = store
            .find_secret_by_arn(&secret.arn)
            .await
            .unwrap()
            .unwrap();
        let state = after.rotation_state.clone().expect("a rotation started");
        assert_eq!(
            state.machine.status,
            baton_core::rotation::Status::Succeeded
        );
        let current = after.version_with_label(AWSCURRENT).unwrap();
        assert_ne!(current.version_id, "v1");
        assert!(
            after.version("v1").unwrap().labels.is_empty(),
            "old value retired"
        );
        assert_eq!(
            current.labels.iter().collect::<Vec<_>>(),
            [AWSCURRENT],
            "AWSPENDING left the new version at retirement"
        );
        let next = after
            .rotation
            .next_rotation_at
            .expect("the next rotation is planned");
        assert!(
            next >= now + 4 * 3_600_000 && next < now + 5 * 3_600_000 + 60_000,
            "{next}"
        );
    }

    #[tokio::test]
    async fn a_due_symmetric_key_rotates_at_once_and_an_asymmetric_one_starts_its_phases() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        let (root_key, _) = RootKey::generate().unwrap();
        let root_key = Arc::new(root_key);
        let now = now_ms();
        let mut arns = Vec::new();
        for (n, spec) in ["SYMMETRIC_DEFAULT", "ECC_NIST_P256"]
            .into_iter()
            .enumerate()
        {
            let mut key = secret(&root_key, now);
            key.id = format!("key-{n}");
            key.arn = format!("arn:aws:kms:us-east-1:123456789012:key/key-{n}");
            key.name = format!("kms:key/key-{n}");
            key.rotation.lambda_arn = Some(KMS_ROTATOR.into());
            key.key = Some(baton_core::KeyMeta {
                key_id: format!("key-{n}"),
                spec: spec.into(),
                usage: "ENCRYPT_DECRYPT".into(),
                enabled: true,
                aws_managed: false,
            });
            let data_key = baton_crypto::DataKey::generate().unwrap();
            key.wrapped_data_key = root_key.wrap(&data_key, &key.id).unwrap();
            let material = builtin::kms_material(&key).unwrap();
            key.versions[0].sealed_value = data_key
                .seal(material.expose(), &value_aad(&key.id, "v1"))
                .unwrap();
            key.versions[0].kind = SecretValueKind::Binary;
            store.insert_secret(&key).await.unwrap();
            arns.push(key.arn);
        }
        let engine = Engine::new(store.clone(), root_key.clone());
        engine.drive_due().await;

        let symmetric = store.find_secret_by_arn(&arns[0]).await.unwrap().unwrap();
        assert!(
            symmetric.rotation_state.is_none(),
            "no phases for a symmetric key"
        );
        let current = symmetric.version_with_label(AWSCURRENT).unwrap();
        assert_ne!(current.version_id, "v1", "new material is current at once");
        assert!(
            symmetric
                .version("v1")
                .unwrap()
                .labels
                .contains(AWSPREVIOUS)
        );
        let new = keywrap::key_material(&root_key, &symmetric, &current.version_id).unwrap();
        let old = keywrap::key_material(&root_key, &symmetric, "v1").unwrap();
        assert_eq!(new.len(), 32);
        assert_ne!(new.expose(), old.expose());
        assert_eq!(symmetric.rotation.last_rotated_at, Some(current.created_at));
        assert!(
            symmetric
                .rotation
                .next_rotation_at
                .is_some_and(|at| at > now + 3_600_000)
        );

        let asymmetric = store.find_secret_by_arn(&arns[1]).await.unwrap().unwrap();
        let state = asymmetric
            .rotation_state
            .as_ref()
            .expect("an asymmetric key rotates through the phase machine");
        assert!(!state.timeline.is_empty(), "its phases are recorded");
        assert!(asymmetric.version(&state.machine.version_id).is_some());
    }
}

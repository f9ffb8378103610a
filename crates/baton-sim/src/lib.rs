//! A deterministic simulator of Baton's rotation protocol.
//!
//! Simulated time, one server and N service instances. Each instance caches the keyring,
//! refreshes it every `refresh_ms` (with jitter and a clock-skewed phase), signs every message
//! with its current version, and verifies what it receives against its accepted set. Messages
//! travel between instances with a random delay. The server runs `baton-core`'s phase machine
//! on the same clock, exactly as the engine does: it feeds inputs, performs the commands, and
//! wakes at `poll_timeout`.
//!
//! Faults: rotator steps fail at random, the server crashes between a step's effect and its
//! record (and resumes from what it had persisted), and instances lose the server for less than
//! the gate's maximum wait.
//!
//! The checker counts verification failures and checks the invariants after every event. Every
//! run is a pure function of its [`SimConfig`], seed included, so a failing seed replays exactly.
//! The control, [`Mode::Naive`], replaces the value in one step as a hand-built rotation would;
//! it must show failures, which proves that the checker can fail.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use baton_core::rotation::{
    Command, ConsumerStatus, Input, Keyring, Phase, Rotation, RotationEvent, RotationPolicy, Step,
    keyring,
};
use baton_core::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, DeletionState, LabelMove, NewVersion, RotationConfig,
    SecretRecord, SecretValueKind, Timestamp,
};

/// How rotations happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Baton's phased rotation with gates.
    Phased,
    /// The control: the new value becomes current at once, and the old one stops being accepted.
    Naive,
}

/// Everything a run depends on.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub mode: Mode,
    pub instances: usize,
    /// Each instance refreshes its keyring this often...
    pub refresh_ms: Timestamp,
    /// ...plus or minus up to this much, drawn per refresh.
    pub jitter_ms: Timestamp,
    /// Each instance's clock is offset by up to this much, which shifts its refresh schedule.
    pub skew_ms: Timestamp,
    /// Whether instances report what they hold (Baton clients) or not (plain AWS SDKs).
    pub reporting: bool,
    /// A reporting instance unheard for this long is gone and no longer holds a gate.
    pub consumer_lease_ms: Timestamp,
    pub message_interval_ms: Timestamp,
    pub message_delay_max_ms: Timestamp,
    pub duration_ms: Timestamp,
    pub rotation_interval_ms: Timestamp,
    pub policy: RotationPolicy,
    pub step_latency_max_ms: Timestamp,
    /// Probability that a rotator step fails.
    pub step_failure_rate: f64,
    /// Probability that the server crashes after a step's effect and before recording it.
    pub crash_rate: f64,
    /// Probability, per refresh, that an instance loses the server for a while.
    pub partition_rate: f64,
    /// A partition lasts at most this long (keep it below the gate's maximum wait).
    pub partition_max_ms: Timestamp,
    /// Events processed at most; a bound on every run.
    pub events_max: u64,
}

impl SimConfig {
    /// Reporting Baton clients, with every kind of fault.
    pub fn phased_with_faults(seed: u64) -> Self {
        let refresh_ms = 60_000;
        SimConfig {
            seed,
            mode: Mode::Phased,
            instances: 12,
            refresh_ms,
            jitter_ms: 10_000,
            skew_ms: 5_000,
            reporting: true,
            consumer_lease_ms: 20 * refresh_ms,
            message_interval_ms: 1_000,
            message_delay_max_ms: 500,
            duration_ms: 6 * 3_600_000,
            rotation_interval_ms: 40 * 60_000,
            policy: RotationPolicy {
                propagation_delay_ms: refresh_ms + 10_000 + 5_000,
                gate_wait_max_ms: 15 * refresh_ms,
                // Messages are in flight for at most message_delay_max_ms.
                retire_grace_ms: 1_000,
                step_attempts_max: 8,
                kill_sessions_after_max_wait: false,
                backoff_base_ms: 1_000,
                backoff_max_ms: 30_000,
                blackouts: Vec::new(),
            },
            step_latency_max_ms: 2_000,
            step_failure_rate: 0.2,
            crash_rate: 0.1,
            partition_rate: 0.01,
            partition_max_ms: 10 * refresh_ms,
            events_max: 5_000_000,
        }
    }

    /// Plain AWS SDKs that do not report: gates wait the propagation delay. Partitions are off,
    /// because nothing can tell a reader that lost the server from one that refreshed.
    pub fn phased_non_reporting(seed: u64) -> Self {
        SimConfig {
            reporting: false,
            partition_rate: 0.0,
            ..Self::phased_with_faults(seed)
        }
    }

    /// The control.
    pub fn naive(seed: u64) -> Self {
        SimConfig {
            mode: Mode::Naive,
            step_failure_rate: 0.0,
            crash_rate: 0.0,
            partition_rate: 0.0,
            ..Self::phased_with_faults(seed)
        }
    }
}

/// What a run observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub messages: u64,
    pub verification_failures: u64,
    pub rotations_started: u32,
    pub rotations_succeeded: u32,
    pub step_failures: u32,
    pub crashes: u32,
    pub partitions: u32,
    pub invariant_violations: Vec<String>,
    /// The first few failed verifications, described, for replaying a seed.
    pub failure_samples: Vec<String>,
    pub events: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} messages, {} verification failures, {}/{} rotations succeeded, {} step failures, {} crashes, {} partitions, {} invariant violations",
            self.seed,
            self.messages,
            self.verification_failures,
            self.rotations_succeeded,
            self.rotations_started,
            self.step_failures,
            self.crashes,
            self.partitions,
            self.invariant_violations.len()
        )
    }
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn between(&mut self, low: Timestamp, high: Timestamp) -> Timestamp {
        low + self.below((high - low + 1).max(1) as u64) as Timestamp
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Refresh(usize),
    Send(usize),
    Deliver {
        to: usize,
        version: String,
    },
    TriggerRotation,
    EngineWake,
    StepDone {
        step: Step,
        succeeded: bool,
        generation: u64,
    },
}

struct Instance {
    view: Option<Keyring>,
    partitioned_until: Timestamp,
    /// Whether the last refresh fell inside a partition: the next one reconnects first, so
    /// back-to-back partitions never add up beyond `partition_max_ms`.
    reconnecting: bool,
    last_report_at: Option<Timestamp>,
}

struct Server {
    secret: SecretRecord,
    rotation: Option<Rotation>,
    /// What survives a crash: the last state written to the store.
    persisted: (SecretRecord, Option<Rotation>),
    /// Bumped by a crash, so answers of steps started before it are dropped.
    generation: u64,
    versions_ever: BTreeSet<String>,
    tested_at: Option<Timestamp>,
    promoted_at: Option<Timestamp>,
}

struct Sim {
    config: SimConfig,
    rng: Rng,
    now: Timestamp,
    queue: BinaryHeap<Reverse<(Timestamp, u64, Event)>>,
    sequence: u64,
    instances: Vec<Instance>,
    server: Server,
    report: Report,
    next_version: u64,
    /// The engine's next scheduled wake-up; earlier ones replace it.
    wake_at: Option<Timestamp>,
}

fn initial_secret() -> SecretRecord {
    let mut secret = SecretRecord {
        id: "sim-secret".into(),
        account_id: "000000000000".into(),
        region: "sim-1".into(),
        name: "sim/key".into(),
        arn: "arn:aws:secretsmanager:sim-1:000000000000:secret:sim/key-AbCdEf".into(),
        description: None,
        kms_key_id: None,
        tags: Vec::new(),
        resource_policy: None,
        rotation: RotationConfig::default(),
        created_at: 0,
        last_changed_at: 0,
        last_accessed_at: None,
        deletion: DeletionState::Active,
        wrapped_data_key: Vec::new(),
        versions: Vec::new(),
        replicas: Vec::new(),
        rotation_policy: None,
        rotation_state: None,
        revision: 0,
        key: None,
        outbox: vec![],
    };
    add(&mut secret, "v0", None, 0);
    secret
}

fn add(secret: &mut SecretRecord, version: &str, labels: Option<Vec<String>>, now: Timestamp) {
    secret
        .add_version(
            NewVersion {
                version_id: version.into(),
                kind: SecretValueKind::String,
                sealed_value: Vec::new(),
                labels,
            },
            now,
        )
        .expect("the simulator adds fresh versions");
}

/// Runs one simulation to its end and reports what happened.
pub fn run(config: &SimConfig) -> Report {
    let secret = initial_secret();
    let mut sim = Sim {
        rng: Rng(config.seed),
        now: 0,
        queue: BinaryHeap::new(),
        sequence: 0,
        instances: Vec::new(),
        server: Server {
            persisted: (secret.clone(), None),
            versions_ever: BTreeSet::from(["v0".to_owned()]),
            secret,
            rotation: None,
            generation: 0,
            tested_at: None,
            promoted_at: None,
        },
        report: Report {
            seed: config.seed,
            messages: 0,
            verification_failures: 0,
            rotations_started: 0,
            rotations_succeeded: 0,
            step_failures: 0,
            crashes: 0,
            partitions: 0,
            invariant_violations: Vec::new(),
            failure_samples: Vec::new(),
            events: 0,
        },
        next_version: 1,
        wake_at: None,
        config: config.clone(),
    };
    sim.start();
    while let Some(Reverse((at, _, event))) = sim.queue.pop() {
        if at > sim.config.duration_ms || sim.report.events >= sim.config.events_max {
            break;
        }
        sim.now = at;
        sim.report.events += 1;
        sim.handle(event);
        sim.check_invariants();
    }
    sim.report
}

impl Sim {
    fn schedule(&mut self, at: Timestamp, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, event)));
    }

    fn start(&mut self) {
        let initial = keyring(&self.server.secret);
        for i in 0..self.config.instances {
            self.instances.push(Instance {
                view: Some(initial.clone()),
                partitioned_until: 0,
                reconnecting: false,
                last_report_at: Some(0),
            });
            let skew = self.rng.between(-self.config.skew_ms, self.config.skew_ms);
            let first = self.rng.between(0, self.config.refresh_ms) + skew;
            self.schedule(first.max(1), Event::Refresh(i));
            let send = self.rng.between(1, self.config.message_interval_ms);
            self.schedule(send, Event::Send(i));
        }
        self.schedule(self.config.rotation_interval_ms, Event::TriggerRotation);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Refresh(i) => self.refresh(i),
            Event::Send(i) => self.send(i),
            Event::Deliver { to, version } => {
                self.report.messages += 1;
                let accepted = self.instances[to]
                    .view
                    .as_ref()
                    .is_some_and(|k| k.accepted.contains(&version));
                if !accepted {
                    self.report.verification_failures += 1;
                    if self.report.failure_samples.len() < 5 {
                        let sample = format!(
                            "at {} ms: instance {to} (view {:?}, last report {:?}, partitioned until {}) \
                             rejected {version}; rotation {:?}",
                            self.now,
                            self.instances[to].view,
                            self.instances[to].last_report_at,
                            self.instances[to].partitioned_until,
                            self.server.rotation.as_ref().map(|r| (
                                &r.version_id,
                                r.phase,
                                r.phase_started_at
                            )),
                        );
                        self.report.failure_samples.push(sample);
                    }
                }
            }
            Event::TriggerRotation => {
                self.trigger_rotation();
                self.schedule(
                    self.now + self.config.rotation_interval_ms,
                    Event::TriggerRotation,
                );
            }
            Event::EngineWake => {
                if self.wake_at != Some(self.now) {
                    return;
                }
                self.wake_at = None;
                self.feed(Input::Tick(self.consumer_status()));
            }
            Event::StepDone {
                step,
                succeeded,
                generation,
            } => {
                if generation != self.server.generation {
                    return;
                }
                if !succeeded {
                    self.report.step_failures += 1;
                    self.feed(Input::StepFailed {
                        step,
                        reason: "the rotator failed".into(),
                    });
                    return;
                }
                self.apply_step(step);
                if self.rng.chance(self.config.crash_rate) {
                    self.crash();
                    return;
                }
                self.feed(Input::StepSucceeded(step));
            }
        }
    }

    fn refresh(&mut self, i: usize) {
        let interval = self.config.refresh_ms
            + self
                .rng
                .between(-self.config.jitter_ms, self.config.jitter_ms);
        self.schedule(self.now + interval.max(1), Event::Refresh(i));
        if self.instances[i].partitioned_until > self.now {
            self.instances[i].reconnecting = true;
            return;
        }
        let reconnecting = std::mem::take(&mut self.instances[i].reconnecting);
        if !reconnecting && self.rng.chance(self.config.partition_rate) {
            self.report.partitions += 1;
            let until = self.now + self.rng.between(1, self.config.partition_max_ms);
            self.instances[i].partitioned_until = until;
            return;
        }
        self.instances[i].view = Some(keyring(&self.server.secret));
        if self.config.reporting {
            self.instances[i].last_report_at = Some(self.now);
            // Reports reach the engine at once, which is what lets gates pass early.
            self.feed(Input::Tick(self.consumer_status()));
        }
    }

    fn send(&mut self, i: usize) {
        self.schedule(self.now + self.config.message_interval_ms, Event::Send(i));
        let Some(version) = self.instances[i]
            .view
            .as_ref()
            .and_then(|k| k.current.clone())
        else {
            return;
        };
        let n = self.config.instances as u64;
        let to = ((i as u64 + 1 + self.rng.below(n - 1)) % n) as usize;
        let delay = self.rng.between(0, self.config.message_delay_max_ms);
        self.schedule(self.now + delay, Event::Deliver { to, version });
    }

    fn new_version(&mut self) -> String {
        let v = format!("v{}", self.next_version);
        self.next_version += 1;
        v
    }

    fn trigger_rotation(&mut self) {
        if self
            .server
            .rotation
            .as_ref()
            .is_some_and(|r| !r.is_finished())
        {
            return;
        }
        self.report.rotations_started += 1;
        let version = self.new_version();
        let old = keyring(&self.server.secret).current;
        match self.config.mode {
            Mode::Naive => {
                add(&mut self.server.secret, &version, None, self.now);
                if let Some(old) = old {
                    let drop_previous = LabelMove {
                        label: AWSPREVIOUS.into(),
                        remove_from_version_id: Some(old),
                        move_to_version_id: None,
                    };
                    baton_core::move_label(&mut self.server.secret, &drop_previous, self.now)
                        .expect("the old version holds AWSPREVIOUS");
                }
                self.server.versions_ever.insert(version);
                self.report.rotations_succeeded += 1;
            }
            Mode::Phased => {
                let (rotation, commands) = Rotation::start(
                    self.server.secret.id.clone(),
                    version,
                    old,
                    self.config.policy.clone(),
                    self.now,
                );
                self.server.rotation = Some(rotation);
                self.server.tested_at = None;
                self.server.promoted_at = None;
                self.persist();
                self.perform(commands);
            }
        }
    }

    fn consumer_status(&self) -> ConsumerStatus {
        match &self.server.rotation {
            Some(r) => self.consumer_status_at(&r.version_id, r.phase),
            None => ConsumerStatus::unknown(),
        }
    }

    /// What live reporting instances hold, for the gate that follows `phase`: the propagation
    /// gate needs them to accept `version`, the drain gate needs them to use it.
    fn consumer_status_at(&self, version: &str, phase: Phase) -> ConsumerStatus {
        if !self.config.reporting {
            return ConsumerStatus::unknown();
        }
        let (mut reporting, mut ready) = (0, 0);
        for instance in &self.instances {
            let live = instance
                .last_report_at
                .is_some_and(|at| self.now - at < self.config.consumer_lease_ms);
            if !live {
                continue;
            }
            reporting += 1;
            let holds = instance.view.as_ref().is_some_and(|k| match phase {
                Phase::Promoted => k.current.as_deref() == Some(version),
                _ => k.accepted.iter().any(|v| v == version),
            });
            if holds {
                ready += 1;
            }
        }
        ConsumerStatus {
            reporting,
            reporting_ready: ready,
            non_reporting_readers: false,
        }
    }

    /// Feeds an input to the machine, persists the result, performs the commands, and
    /// schedules the next wake-up.
    fn feed(&mut self, input: Input) {
        let Some(rotation) = self.server.rotation.as_mut() else {
            return;
        };
        let commands = rotation.handle(input, self.now).unwrap_or_default();
        if commands.contains(&Command::Record(RotationEvent::Succeeded)) {
            self.report.rotations_succeeded += 1;
        }
        self.persist();
        self.perform(commands);
    }

    fn persist(&mut self) {
        self.server.persisted = (self.server.secret.clone(), self.server.rotation.clone());
        if let Some(at) = self
            .server
            .rotation
            .as_ref()
            .and_then(Rotation::poll_timeout)
        {
            // A deadline in the past means "when something changes": use a minimum interval.
            let at = at.max(self.now + 1_000);
            if self.wake_at.is_none_or(|w| at < w || w < self.now) {
                self.wake_at = Some(at);
                self.schedule(at, Event::EngineWake);
            }
        }
    }

    fn perform(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Run(step) => {
                    let latency = self.rng.between(1, self.config.step_latency_max_ms);
                    let succeeded = !self.rng.chance(self.config.step_failure_rate);
                    let generation = self.server.generation;
                    self.schedule(
                        self.now + latency,
                        Event::StepDone {
                            step,
                            succeeded,
                            generation,
                        },
                    );
                }
                Command::DropPending | Command::Record(_) => {}
            }
        }
    }

    /// The effect of a step on the store, as the engine writes it.
    fn apply_step(&mut self, step: Step) {
        let Some(rotation) = self.server.rotation.clone() else {
            return;
        };
        let new = rotation.version_id.clone();
        match step {
            Step::Create => {
                if self.server.secret.version(&new).is_none() {
                    add(
                        &mut self.server.secret,
                        &new,
                        Some(vec![AWSPENDING.to_owned()]),
                        self.now,
                    );
                    self.server.versions_ever.insert(new);
                }
            }
            Step::Set => {}
            Step::Test => self.server.tested_at = Some(self.now),
            Step::Promote => {
                self.check_promotion_is_safe(&rotation);
                let current = keyring(&self.server.secret).current;
                if current.as_deref() != Some(&new) {
                    let moves = [
                        LabelMove {
                            label: AWSCURRENT.into(),
                            remove_from_version_id: current,
                            move_to_version_id: Some(new.clone()),
                        },
                        LabelMove {
                            label: AWSPENDING.into(),
                            remove_from_version_id: Some(new),
                            move_to_version_id: None,
                        },
                    ];
                    baton_core::apply_label_moves(&mut self.server.secret, &moves, self.now)
                        .expect("promotion moves are valid");
                }
                self.server.promoted_at = Some(self.now);
            }
            Step::Retire => {
                self.check_retirement_is_safe(&rotation);
                if let Some(old) = &rotation.old_version_id
                    && self
                        .server
                        .secret
                        .version(old)
                        .is_some_and(|v| v.labels.contains(AWSPREVIOUS))
                {
                    let change = LabelMove {
                        label: AWSPREVIOUS.into(),
                        remove_from_version_id: Some(old.clone()),
                        move_to_version_id: None,
                    };
                    baton_core::move_label(&mut self.server.secret, &change, self.now)
                        .expect("retirement move is valid");
                }
            }
        }
    }

    fn crash(&mut self) {
        self.report.crashes += 1;
        self.server.generation += 1;
        let (secret, rotation) = self.server.persisted.clone();
        self.server.secret = secret;
        self.server.rotation = rotation;
        let commands = self
            .server
            .rotation
            .as_ref()
            .map(Rotation::resume)
            .unwrap_or_default();
        self.persist();
        self.perform(commands);
    }

    fn violation(&mut self, what: String) {
        if self.report.invariant_violations.len() < 20 {
            self.report
                .invariant_violations
                .push(format!("at {} ms: {what}", self.now));
        }
    }

    fn check_promotion_is_safe(&mut self, rotation: &Rotation) {
        if rotation.phase != Phase::Propagated {
            self.violation(format!("promoted from phase {:?}", rotation.phase));
        }
        let status = self.consumer_status_at(&rotation.version_id, Phase::Tested);
        let waited = self.server.tested_at.map(|t| self.now - t).unwrap_or(0);
        let by_reports = self.config.reporting && status.reporting_ready == status.reporting;
        let by_time = waited >= self.config.policy.propagation_delay_ms;
        if !(by_reports || by_time) {
            self.violation(format!(
                "promoted {} before the propagation gate",
                rotation.version_id
            ));
        }
    }

    fn check_retirement_is_safe(&mut self, rotation: &Rotation) {
        if rotation.phase != Phase::Drained {
            self.violation(format!("retired from phase {:?}", rotation.phase));
        }
        let status = self.consumer_status_at(&rotation.version_id, Phase::Promoted);
        let waited = self.server.promoted_at.map(|t| self.now - t).unwrap_or(0);
        let by_reports = self.config.reporting && status.reporting_ready == status.reporting;
        let by_time = waited >= self.config.policy.propagation_delay_ms;
        if !(by_reports || by_time) {
            self.violation(format!(
                "retired {:?} before the drain gate",
                rotation.old_version_id
            ));
        }
    }

    fn check_invariants(&mut self) {
        let currents = self
            .server
            .secret
            .versions
            .iter()
            .filter(|v| v.labels.contains(AWSCURRENT))
            .count();
        if currents != 1 {
            self.violation(format!("{currents} versions hold AWSCURRENT"));
        }
        let lost: Vec<String> = self
            .server
            .versions_ever
            .iter()
            .filter(|v| self.server.secret.version(v).is_none())
            .cloned()
            .collect();
        for version in lost {
            // A crash may undo a create that was never recorded; its step runs again.
            let pending_again = self
                .server
                .rotation
                .as_ref()
                .is_some_and(|r| r.version_id == version && r.phase == Phase::Started);
            if !pending_again {
                self.violation(format!("version {version} was lost"));
            }
        }
    }
}

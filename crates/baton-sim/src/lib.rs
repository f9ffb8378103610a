//! A deterministic simulator of Baton's rotation protocol.
//!
//! Simulated time, one server and N service instances of two kinds. A keyring instance (Baton's
//! client or agent, or a plain SDK reading the keyring) caches the whole keyring, refreshes it
//! every `refresh_ms` (with jitter and a clock-skewed phase), signs every message with its
//! current version, and verifies what it receives against its accepted set. An AWS-cache
//! instance reads as AWS's Secrets Manager Agent and caching libraries do: one cache entry per
//! staging label, each with its own expiry; an expired entry is checked with DescribeSecret and
//! fetched again only when its label moved; a label that does not exist is "not found" and is
//! not cached. It signs with AWSCURRENT and verifies with AWSPENDING, AWSCURRENT and
//! AWSPREVIOUS, each looked up through its cache. Messages travel between instances with a
//! random delay. Half the AWS-cache instances model AWS's caching libraries instead: one
//! DescribeSecret result per secret, refreshed when it expires, and each version's value fetched
//! once by version id. The server runs `baton-core`'s phase machine
//! on the same clock, exactly as the engine does: it feeds inputs, performs the commands, and
//! wakes at `poll_timeout`.
//!
//! Faults: rotator steps fail at random, the server crashes between a step's effect and its
//! record (and resumes from what it had persisted), and instances lose the server for less than
//! the gate's maximum wait.
//!
//! The server records plain reads (reads by clients that do not report) as the API does, with
//! the same throttle, and the gates see them through `baton_core::rotation::plain_readers_until`.
//! Label moves of promotion and retirement are `baton-core`'s own functions, the engine's.
//!
//! The checker counts verification failures and checks the invariants after every event. Every
//! run is a pure function of its [`SimConfig`], seed included, so a failing seed replays exactly.
//! The controls must show failures, which proves that the checker can fail: [`Mode::Naive`]
//! replaces the value in one step as a hand-built rotation would; [`ReadsCounted::ValuesOnly`]
//! counts only reads that return a value, as Baton once did, so AWS caches that poll with
//! DescribeSecret go unseen; and `pending_kept_at_promotion: false` removes AWSPENDING at
//! promotion, as Baton once did, which per-label caches cannot survive.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use baton_core::rotation::{
    Command, ConsumerStatus, Input, Keyring, PLAIN_READ_RECORD_INTERVAL_MS, Phase, Rotation,
    RotationEvent, RotationPolicy, Step, keyring, plain_readers_until,
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

/// Which reads the server records as evidence of a reader that does not report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadsCounted {
    /// Every read of the secret: DescribeSecret, and GetSecretValue whether or not the stage
    /// exists. What Baton does.
    Every,
    /// The control: only a GetSecretValue that returns a value.
    ValuesOnly,
}

/// Which AWS caches the AWS-cache instances model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsCacheKinds {
    /// Every other one each: AWS's agent and AWS's caching libraries.
    Both,
    /// Only the agent's per-label entries.
    AgentsOnly,
    /// Only the libraries' per-secret DescribeSecret result.
    LibrariesOnly,
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
    /// Whether keyring instances report what they hold (Baton clients) or not (plain AWS SDKs).
    pub reporting: bool,
    /// How many instances (the first ones) read through a model of AWS's caches instead.
    pub aws_caches: usize,
    /// Each AWS cache entry lives between half of this and this long from its fetch or check
    /// (AWS's Python library draws its refresh in that range; AWS's agent uses the whole TTL).
    pub cache_ttl_ms: Timestamp,
    pub aws_cache_kinds: AwsCacheKinds,
    pub reads_counted: ReadsCounted,
    /// Whether AWSPENDING stays on the new version from promotion until retirement (Baton), or
    /// is removed at promotion (the control).
    pub pending_kept_at_promotion: bool,
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
            aws_caches: 0,
            cache_ttl_ms: refresh_ms,
            aws_cache_kinds: AwsCacheKinds::Both,
            reads_counted: ReadsCounted::Every,
            pending_kept_at_promotion: true,
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

    /// Every instance reads through a model of AWS's agent or caching libraries, with a
    /// propagation delay of the cache's TTL plus 2 s, as the README tells their users to set.
    /// Partitions are off: such a cache answers an error when it cannot reach the server.
    pub fn phased_aws_caches(seed: u64) -> Self {
        let cache_ttl_ms = 20_000;
        let base = Self::phased_with_faults(seed);
        SimConfig {
            reporting: false,
            aws_caches: base.instances,
            cache_ttl_ms,
            partition_rate: 0.0,
            duration_ms: 2 * 3_600_000,
            rotation_interval_ms: 10 * 60_000,
            policy: RotationPolicy {
                propagation_delay_ms: cache_ttl_ms + 2_000,
                gate_wait_max_ms: 5 * 60_000,
                ..base.policy
            },
            ..base
        }
    }

    /// Half the instances read through AWS's caches, half are reporting Baton clients that
    /// refresh every 15 s and lose the server now and then.
    pub fn phased_mixed(seed: u64) -> Self {
        let refresh_ms = 15_000;
        let aws = Self::phased_aws_caches(seed);
        SimConfig {
            reporting: true,
            aws_caches: aws.instances / 2,
            refresh_ms,
            jitter_ms: 5_000,
            consumer_lease_ms: 20 * refresh_ms,
            partition_rate: 0.01,
            partition_max_ms: 10 * refresh_ms,
            policy: RotationPolicy {
                gate_wait_max_ms: 15 * refresh_ms,
                ..aws.policy
            },
            ..aws
        }
    }

    /// Control (a): AWS's caching libraries, and only reads that return a value count as
    /// reads. (An agent asks for a missing label on every lookup, and its first answer with a
    /// value is counted even so; the libraries learn of a new label only from DescribeSecret.)
    pub fn control_reads_values_only(seed: u64) -> Self {
        SimConfig {
            reads_counted: ReadsCounted::ValuesOnly,
            aws_cache_kinds: AwsCacheKinds::LibrariesOnly,
            ..Self::phased_aws_caches(seed)
        }
    }

    /// Control (b): AWS's agent, and promotion removes AWSPENDING. (A library's one
    /// DescribeSecret result never mixes labels of two moments.)
    pub fn control_pending_dropped_at_promotion(seed: u64) -> Self {
        SimConfig {
            pending_kept_at_promotion: false,
            aws_cache_kinds: AwsCacheKinds::AgentsOnly,
            ..Self::phased_aws_caches(seed)
        }
    }

    /// Whether the configuration is a control, which must show failures.
    pub fn is_control(&self) -> bool {
        self.mode == Mode::Naive
            || self.reads_counted == ReadsCounted::ValuesOnly
            || !self.pending_kept_at_promotion
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
    /// Requests the AWS-cache instances sent to the server.
    pub cache_requests: u64,
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

/// How an instance holds the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Keyring,
    /// AWS's Secrets Manager Agent: one entry per staging label.
    AwsAgent,
    /// AWS's caching libraries (`SecretCache`): one DescribeSecret result per secret.
    AwsLibrary,
}

/// A caching library's DescribeSecret result: which version each label named.
#[derive(Debug, Clone)]
struct Described {
    labels: BTreeMap<String, String>,
    expires_at: Timestamp,
}

/// One entry of an AWS cache: the version a staging label named when it was last checked.
#[derive(Debug, Clone)]
struct CacheEntry {
    version: String,
    expires_at: Timestamp,
}

/// A read as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Describe,
    Value,
    NotFound,
}

struct Instance {
    kind: Kind,
    view: Option<Keyring>,
    /// The agent kind's entries, by staging label.
    cache: BTreeMap<&'static str, CacheEntry>,
    /// The library kind's DescribeSecret result and the versions whose values it fetched.
    described: Option<Described>,
    fetched: BTreeSet<String>,
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
    /// The last recorded plain read, kept in its own table: it survives a crash.
    plain_read_at: Option<Timestamp>,
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
        tagged: false,
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
            plain_read_at: None,
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
            cache_requests: 0,
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
            let kind = match (i, self.config.aws_cache_kinds) {
                (i, _) if i >= self.config.aws_caches => Kind::Keyring,
                (_, AwsCacheKinds::AgentsOnly) => Kind::AwsAgent,
                (_, AwsCacheKinds::LibrariesOnly) => Kind::AwsLibrary,
                (i, AwsCacheKinds::Both) if i % 2 == 0 => Kind::AwsAgent,
                (_, AwsCacheKinds::Both) => Kind::AwsLibrary,
            };
            let mut instance = Instance {
                kind,
                view: None,
                cache: BTreeMap::new(),
                described: None,
                fetched: BTreeSet::new(),
                partitioned_until: 0,
                reconnecting: false,
                last_report_at: None,
            };
            match kind {
                Kind::Keyring => {
                    instance.view = Some(initial.clone());
                    instance.last_report_at = Some(0);
                    let skew = self.rng.between(-self.config.skew_ms, self.config.skew_ms);
                    let first = self.rng.between(0, self.config.refresh_ms) + skew;
                    self.schedule(first.max(1), Event::Refresh(i));
                }
                // Fetched at some time before the run began: each instance's entry expires at
                // its own time.
                Kind::AwsAgent => {
                    let current = initial.current.clone().expect("v0 is current");
                    let expires_at = self.rng.between(1, self.config.cache_ttl_ms);
                    instance.cache.insert(
                        AWSCURRENT,
                        CacheEntry {
                            version: current,
                            expires_at,
                        },
                    );
                }
                Kind::AwsLibrary => {
                    let current = initial.current.clone().expect("v0 is current");
                    instance.described = Some(Described {
                        labels: BTreeMap::from([(AWSCURRENT.to_owned(), current.clone())]),
                        expires_at: self.rng.between(1, self.config.cache_ttl_ms),
                    });
                    instance.fetched.insert(current);
                }
            }
            self.instances.push(instance);
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
                let accepted = match self.instances[to].kind {
                    Kind::Keyring => self.instances[to]
                        .view
                        .as_ref()
                        .is_some_and(|k| k.accepted.contains(&version)),
                    Kind::AwsAgent | Kind::AwsLibrary => {
                        let mut accepted = false;
                        for label in [AWSPENDING, AWSCURRENT, AWSPREVIOUS] {
                            accepted |= self.cache_lookup(to, label).as_ref() == Some(&version);
                        }
                        accepted
                    }
                };
                if !accepted {
                    self.report.verification_failures += 1;
                    if self.report.failure_samples.len() < 5 {
                        let sample = format!(
                            "at {} ms: instance {to} (view {:?}, cache {:?}, described {:?}, last report {:?}, partitioned until {}) \
                             rejected {version}; rotation {:?}",
                            self.now,
                            self.instances[to].view,
                            self.instances[to].cache,
                            self.instances[to].described,
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
                // As the engine does: a gate reached by a step is evaluated at once with what
                // the consumers hold, so a rotation nobody would notice does not wait.
                self.feed(Input::Tick(self.consumer_status()));
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
        } else {
            self.note_read(Read::Value);
        }
    }

    /// The server's side of a read by a client that does not report: recorded at most once per
    /// `PLAIN_READ_RECORD_INTERVAL_MS`, as the API does.
    fn note_read(&mut self, read: Read) {
        let counted = match self.config.reads_counted {
            ReadsCounted::Every => true,
            ReadsCounted::ValuesOnly => read == Read::Value,
        };
        if !counted
            || self
                .server
                .plain_read_at
                .is_some_and(|at| self.now - at < PLAIN_READ_RECORD_INTERVAL_MS)
        {
            return;
        }
        self.server.plain_read_at = Some(self.now);
    }

    /// One staging label looked up through an AWS-cache instance's cache.
    fn cache_lookup(&mut self, i: usize, label: &'static str) -> Option<String> {
        match self.instances[i].kind {
            Kind::AwsLibrary => self.library_lookup(i, label),
            _ => self.agent_lookup(i, label),
        }
    }

    fn cache_ttl(&mut self) -> Timestamp {
        self.rng
            .between(self.config.cache_ttl_ms / 2, self.config.cache_ttl_ms)
            .max(1)
    }

    /// As AWS's caching libraries do: the DescribeSecret result names the label's version,
    /// and a version's value is fetched once, by id.
    fn library_lookup(&mut self, i: usize, label: &'static str) -> Option<String> {
        if self.instances[i]
            .described
            .as_ref()
            .is_none_or(|d| d.expires_at <= self.now)
        {
            self.report.cache_requests += 1;
            self.note_read(Read::Describe);
            let labels = self
                .server
                .secret
                .versions
                .iter()
                .flat_map(|v| v.labels.iter().map(|l| (l.clone(), v.version_id.clone())))
                .collect();
            let expires_at = self.now + self.cache_ttl();
            self.instances[i].described = Some(Described { labels, expires_at });
        }
        let version = self.instances[i]
            .described
            .as_ref()
            .and_then(|d| d.labels.get(label).cloned())?;
        if !self.instances[i].fetched.contains(&version) {
            // GetSecretValue with VersionId: versions are never removed in the simulator.
            self.report.cache_requests += 1;
            self.note_read(Read::Value);
            self.instances[i].fetched.insert(version.clone());
        }
        Some(version)
    }

    /// As AWS's agent does: one entry per label, checked with DescribeSecret when it expires.
    fn agent_lookup(&mut self, i: usize, label: &'static str) -> Option<String> {
        let cached = self.instances[i].cache.get(label).cloned();
        if let Some(entry) = &cached
            && entry.expires_at > self.now
        {
            return Some(entry.version.clone());
        }
        let on_server = self
            .server
            .secret
            .version_with_label(label)
            .map(|v| v.version_id.clone());
        let expires_at = self.now + self.cache_ttl();
        if let Some(entry) = cached {
            // An expired entry is checked with DescribeSecret and kept if its label has not moved.
            self.report.cache_requests += 1;
            self.note_read(Read::Describe);
            if on_server.as_deref() == Some(entry.version.as_str()) {
                self.instances[i].cache.insert(
                    label,
                    CacheEntry {
                        version: entry.version.clone(),
                        expires_at,
                    },
                );
                return Some(entry.version);
            }
        }
        // GetSecretValue with VersionStage = label.
        self.report.cache_requests += 1;
        match on_server {
            Some(version) => {
                self.note_read(Read::Value);
                self.instances[i].cache.insert(
                    label,
                    CacheEntry {
                        version: version.clone(),
                        expires_at,
                    },
                );
                Some(version)
            }
            None => {
                self.note_read(Read::NotFound);
                self.instances[i].cache.remove(label);
                None
            }
        }
    }

    fn send(&mut self, i: usize) {
        self.schedule(self.now + self.config.message_interval_ms, Event::Send(i));
        let current = match self.instances[i].kind {
            Kind::Keyring => self.instances[i]
                .view
                .as_ref()
                .and_then(|k| k.current.clone()),
            Kind::AwsAgent | Kind::AwsLibrary => self.cache_lookup(i, AWSCURRENT),
        };
        let Some(version) = current else {
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
        let non_reporting_readers =
            plain_readers_until(self.server.plain_read_at, &self.config.policy)
                .is_some_and(|until| until > self.now);
        let (mut reporting, mut ready) = (0, 0);
        for instance in &self.instances {
            if instance.kind != Kind::Keyring || !self.config.reporting {
                continue;
            }
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
            non_reporting_readers,
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
            let mut at = at.max(self.now + 1_000);
            // As the engine does: a gate is looked at again when plain readers may have gone.
            if let Some(until) = plain_readers_until(self.server.plain_read_at, &self.config.policy)
                && until > self.now
                && self
                    .server
                    .rotation
                    .as_ref()
                    .and_then(Rotation::waiting_gate)
                    .is_some()
            {
                at = at.min(until);
            }
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
                baton_core::promote_labels(&mut self.server.secret, &rotation, self.now)
                    .expect("promotion moves are valid");
                if !self.config.pending_kept_at_promotion {
                    baton_core::drop_pending_label(&mut self.server.secret, &new, self.now)
                        .expect("removing AWSPENDING is valid");
                }
                self.server.promoted_at = Some(self.now);
            }
            Step::Retire => {
                self.check_retirement_is_safe(&rotation);
                baton_core::retire_labels(&mut self.server.secret, &rotation, self.now)
                    .expect("retirement moves are valid");
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
        let by_reports = self.only_reporting() && status.reporting_ready == status.reporting;
        let by_time = waited >= self.config.policy.propagation_delay_ms;
        if !(by_reports || by_time) {
            self.violation(format!(
                "promoted {} before the propagation gate",
                rotation.version_id
            ));
        }
    }

    /// Whether every instance reports what it holds: the checker's ground truth, not the
    /// server's inference from recorded reads.
    fn only_reporting(&self) -> bool {
        self.config.reporting && self.config.aws_caches == 0
    }

    fn check_retirement_is_safe(&mut self, rotation: &Rotation) {
        if rotation.phase != Phase::Drained {
            self.violation(format!("retired from phase {:?}", rotation.phase));
        }
        let status = self.consumer_status_at(&rotation.version_id, Phase::Promoted);
        let waited = self.server.promoted_at.map(|t| self.now - t).unwrap_or(0);
        let by_reports = self.only_reporting() && status.reporting_ready == status.reporting;
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

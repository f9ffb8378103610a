//! The rotation phase machine: sans-IO, with time and events as inputs and commands as output.
//!
//! A rotation moves through phases, each reached when its step succeeded or its gate passed:
//!
//! ```text
//! Started -create-> Created -set-> Set -test-> Tested -gate-> Propagated -promote-> Promoted
//!         -gate-> Drained -retire-> Retired
//! ```
//!
//! The machine never performs a step. It answers [`Rotation::handle`] with [`Command`]s (run
//! this step, raise this alert, record this event) and tells, through [`Rotation::poll_timeout`],
//! when it next wants to be called. Repeating an input is a no-op, so a caller that crashed and
//! replays its last input does no harm.
//!
//! Promotion needs a [`Tested`] and a [`Propagated`] token, and retirement a [`Drained`] token.
//! Only this module can mint them: the test step's success mints `Tested`, and the gates mint
//! `Propagated` and `Drained`. Skipping a gate therefore does not compile.

use crate::Timestamp;

const MINUTE_MS: Timestamp = 60_000;
const DAY_MS: Timestamp = 24 * 60 * MINUTE_MS;

/// The phase a rotation has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Started,
    Created,
    Set,
    Tested,
    Propagated,
    Promoted,
    Drained,
    Retired,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Started,
        Phase::Created,
        Phase::Set,
        Phase::Tested,
        Phase::Propagated,
        Phase::Promoted,
        Phase::Drained,
        Phase::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Created => "created",
            Phase::Set => "set",
            Phase::Tested => "tested",
            Phase::Propagated => "propagated",
            Phase::Promoted => "promoted",
            Phase::Drained => "drained",
            Phase::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A unit of work the engine performs for the machine. Each is idempotent, keyed by the new
/// version id (AWS's ClientRequestToken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// The rotator creates the new value; the engine stores it as AWSPENDING.
    Create,
    /// The rotator makes the target system accept the new value.
    Set,
    /// The rotator checks that the target accepts the new value.
    Test,
    /// The engine moves AWSCURRENT to the new version and AWSPREVIOUS to the old one, in one
    /// transaction (after the rotator's finishSecret, for external rotators).
    Promote,
    /// The rotator revokes the old value at its target; the engine removes AWSPREVIOUS.
    Retire,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "create",
            Step::Set => "set",
            Step::Test => "test",
            Step::Promote => "promote",
            Step::Retire => "retire",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        [
            Step::Create,
            Step::Set,
            Step::Test,
            Step::Promote,
            Step::Retire,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }

    /// The phase reached when this step succeeds.
    fn reaches(self) -> Phase {
        match self {
            Step::Create => Phase::Created,
            Step::Set => Phase::Set,
            Step::Test => Phase::Tested,
            Step::Promote => Phase::Promoted,
            Step::Retire => Phase::Retired,
        }
    }
}

/// The two gates of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Every consumer holds the new value before anyone uses it.
    Propagation,
    /// Every consumer uses the new value before the old one is retired.
    Drain,
}

/// A daily window, in minutes after midnight UTC, during which no promotion and no retirement
/// happens. `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackout {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl Blackout {
    fn minute_of_day(now: Timestamp) -> Timestamp {
        now.rem_euclid(DAY_MS) / MINUTE_MS
    }

    pub fn contains(&self, now: Timestamp) -> bool {
        let m = Self::minute_of_day(now);
        let (s, e) = (
            Timestamp::from(self.start_minute),
            Timestamp::from(self.end_minute),
        );
        if s <= e {
            s <= m && m < e
        } else {
            m >= s || m < e
        }
    }

    /// The first instant at or after `now` outside this window.
    pub fn end_after(&self, now: Timestamp) -> Timestamp {
        if !self.contains(now) {
            return now;
        }
        let day_start = now - now.rem_euclid(DAY_MS);
        let end = day_start + Timestamp::from(self.end_minute) * MINUTE_MS;
        if end > now { end } else { end + DAY_MS }
    }
}

/// How a rotation waits and retries. Stored per secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long readers that do not report (plain AWS SDKs) may hold an old value: the time
    /// after which every such reader has refreshed. This is T in the brief.
    pub propagation_delay_ms: Timestamp,
    /// How long a gate may be held by a lagging reporting consumer before an alert is raised.
    pub gate_wait_max_ms: Timestamp,
    /// How long a signature or ciphertext made with the old value may still be in use after the
    /// last consumer stopped making them: messages in flight, tokens until they expire. The
    /// drain gate waits this long after every consumer uses the new value, before retirement.
    pub retire_grace_ms: Timestamp,
    /// Attempts of a step before the rotation stops in a safe state.
    pub step_attempts_max: u32,
    /// Whether a database rotator's retire ends the old user's sessions once the gate's
    /// maximum wait has passed. Off by default: it waits and alerts instead.
    pub kill_sessions_after_max_wait: bool,
    pub backoff_base_ms: Timestamp,
    pub backoff_max_ms: Timestamp,
    pub blackouts: Vec<Blackout>,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            propagation_delay_ms: 5 * MINUTE_MS,
            gate_wait_max_ms: 60 * MINUTE_MS,
            retire_grace_ms: 5 * MINUTE_MS,
            step_attempts_max: 5,
            kill_sessions_after_max_wait: false,
            backoff_base_ms: 1_000,
            backoff_max_ms: 5 * MINUTE_MS,
            blackouts: Vec::new(),
        }
    }
}

impl RotationPolicy {
    fn in_blackout(&self, now: Timestamp) -> bool {
        self.blackouts.iter().any(|b| b.contains(now))
    }

    /// The first instant at or after `now` outside every blackout (windows may chain).
    fn blackout_end(&self, now: Timestamp) -> Timestamp {
        let mut t = now;
        for _ in 0..=self.blackouts.len() {
            let next = self
                .blackouts
                .iter()
                .map(|b| b.end_after(t))
                .max()
                .unwrap_or(t);
            if next == t {
                return t;
            }
            t = next;
        }
        t
    }

    fn backoff(&self, attempts: u32) -> Timestamp {
        let exponent = attempts.saturating_sub(1).min(30);
        self.backoff_base_ms
            .saturating_mul(1 << exponent)
            .min(self.backoff_max_ms)
    }
}

/// How long a deferred step waits before it is asked for again.
pub const DEFERRED_STEP_RETRY_MS: Timestamp = 2_000;

/// What the consumers of a secret hold, as the engine knows it when it calls the machine.
/// Reporting consumers come with the clients-and-agent milestone; until then the engine passes
/// [`ConsumerStatus::unknown`], and gates wait the full propagation delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// Live consumers that report what they hold.
    pub reporting: u32,
    /// Of those, how many hold what the next phase needs.
    pub reporting_ready: u32,
    /// Whether readers that do not report may exist (a plain AWS SDK, say).
    pub non_reporting_readers: bool,
}

impl ConsumerStatus {
    /// Nothing is known: assume readers that do not report.
    pub fn unknown() -> Self {
        ConsumerStatus {
            reporting: 0,
            reporting_ready: 0,
            non_reporting_readers: true,
        }
    }
}

/// A plain read (one by a client that does not report what it holds) is recorded at most once
/// per this interval per secret on each node, and the read that records waits for the record's
/// commit. The stored time may therefore be this much older than the latest read, which
/// [`plain_readers_until`] adds: readers count as present for this much longer after the last
/// one. That is all it costs, since a gate with such readers waits the propagation delay from
/// its phase's start, not from a read; so it is long enough that a node reading many secrets
/// rarely waits for a commit (one read in 60 of a secret read once a second), and short next to
/// the default propagation delay of five minutes.
pub const PLAIN_READ_RECORD_INTERVAL_MS: Timestamp = 60_000;

/// Until when a reader that does not report may still hold a view older than the secret's
/// state, given the last recorded plain read: one propagation delay after it, plus the slack
/// of the recording throttle. Every read counts, not only reads of a value: AWS's caching
/// libraries and agent refresh through DescribeSecret and fetch a value only when a label
/// moved, so a cache that polls keeps this window open as long as it lives.
pub fn plain_readers_until(
    last_plain_read: Option<Timestamp>,
    policy: &RotationPolicy,
) -> Option<Timestamp> {
    last_plain_read.map(|at| at + PLAIN_READ_RECORD_INTERVAL_MS + policy.propagation_delay_ms)
}

/// What one live reporting consumer holds of the secret.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// The version it signs or encrypts with.
    pub current: Option<&'a str>,
    /// The versions it verifies or decrypts with.
    pub accepted: &'a [String],
}

/// Inputs of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; re-evaluate gates and retries with what consumers hold now.
    Tick(ConsumerStatus),
    StepSucceeded(Step),
    StepFailed {
        step: Step,
        reason: String,
    },
    /// The step cannot finish yet for a reason that is not a failure (the old database user
    /// still has sessions, say): it is asked for again after a pause, without counting an
    /// attempt, and past the gate's maximum wait an alert is raised once.
    StepDeferred {
        step: Step,
        reason: String,
    },
    /// An operator's explicit override of a held gate.
    ForceAdvance,
    /// An operator's retry of a rotation that stopped after its retry limit.
    Retry,
    /// An operator's cancellation; allowed only before promotion.
    Cancel,
}

/// What the machine asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Step),
    /// Cancellation before promotion: remove AWSPENDING from the new version.
    DropPending,
    Record(RotationEvent),
}

/// Every state change, for history, watchers and webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEvent {
    PhaseReached(Phase),
    GateWaiting {
        gate: Gate,
        reason: String,
    },
    GatePassed {
        gate: Gate,
        forced: bool,
    },
    /// A live reporting consumer held the gate past its maximum wait.
    GateAlert {
        gate: Gate,
        waited_ms: Timestamp,
    },
    StepFailed {
        step: Step,
        attempt: u32,
        reason: String,
    },
    /// A step waits for its target (the old database user still has sessions, say).
    StepDeferred {
        step: Step,
        reason: String,
    },
    /// A deferred step waited past the gate's maximum wait.
    StepHeld {
        step: Step,
        waited_ms: Timestamp,
        reason: String,
    },
    /// The retry limit was reached; the rotation waits for an operator.
    Stopped {
        step: Step,
        reason: String,
    },
    Succeeded,
    Cancelled,
}

/// Whether the rotation is still moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running,
    /// Stopped in a safe state after `step` failed too often; `baton rotation retry` resumes.
    Stopped {
        step: Step,
        reason: String,
    },
    Succeeded,
    Cancelled,
}

/// Refusals of operator inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("the rotation has passed promotion; it can only finish, not be cancelled")]
    CancelAfterPromotion,
    #[error("the rotation is not stopped; there is nothing to retry")]
    NothingToRetry,
    #[error("no gate is waiting; there is nothing to force")]
    NothingToForce,
    #[error("the rotation has ended")]
    Ended,
}

/// Evidence that the test step succeeded. Only this module mints it.
#[derive(Debug)]
pub struct Tested(());
/// Evidence that the propagation gate passed. Only this module mints it.
#[derive(Debug)]
pub struct Propagated(());
/// Evidence that the drain gate passed. Only this module mints it.
#[derive(Debug)]
pub struct Drained(());

/// The only way to ask for promotion.
fn promote(_tested: &Tested, _propagated: &Propagated) -> Command {
    Command::Run(Step::Promote)
}

/// The only way to ask for retirement.
fn retire(_drained: &Drained) -> Command {
    Command::Run(Step::Retire)
}

/// One rotation of one secret: the persisted state of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub secret_id: String,
    /// The new version's id, AWS's ClientRequestToken: the idempotency key of every step.
    pub version_id: String,
    /// The version that was AWSCURRENT when the rotation started, if any.
    pub old_version_id: Option<String>,
    pub policy: RotationPolicy,
    pub phase: Phase,
    pub phase_started_at: Timestamp,
    pub status: Status,
    /// The step in flight, if one was asked for and has not answered.
    pub in_flight: Option<Step>,
    /// Failed attempts of the current step.
    pub attempts: u32,
    pub retry_at: Option<Timestamp>,
    /// Whether the current gate's alert was raised (once per gate).
    pub alerted: bool,
    /// When the current gate's consumer condition first held; the drain gate then waits the
    /// retire grace from here.
    pub gate_ready_since: Option<Timestamp>,
    pub started_at: Timestamp,
}

impl Rotation {
    /// Starts a rotation; the first command creates the new value.
    pub fn start(
        secret_id: String,
        version_id: String,
        old_version_id: Option<String>,
        policy: RotationPolicy,
        now: Timestamp,
    ) -> (Rotation, Vec<Command>) {
        let mut rotation = Rotation {
            secret_id,
            version_id,
            old_version_id,
            policy,
            phase: Phase::Started,
            phase_started_at: now,
            status: Status::Running,
            in_flight: None,
            attempts: 0,
            retry_at: None,
            alerted: false,
            gate_ready_since: None,
            started_at: now,
        };
        let mut out = vec![Command::Record(RotationEvent::PhaseReached(Phase::Started))];
        rotation.advance(ConsumerStatus::unknown(), now, false, &mut out);
        (rotation, out)
    }

    /// After a restart: re-asks for the step that was in flight when the process stopped. Every
    /// step is idempotent by its version id, so running it twice is safe; not running it would
    /// leave the rotation waiting forever.
    pub fn resume(&self) -> Vec<Command> {
        match (&self.status, self.in_flight) {
            (Status::Running, Some(step)) => vec![Command::Run(step)],
            _ => Vec::new(),
        }
    }

    /// Counts the consumers that hold what this rotation's next gate needs: the propagation
    /// gate needs the new version accepted; the drain gate, after promotion, needs it current.
    /// `holdings` are the live reporting consumers; `non_reporting_readers` says whether a
    /// reader that does not report may still hold an old view.
    pub fn consumer_status<'a>(
        &self,
        holdings: impl IntoIterator<Item = Holding<'a>>,
        non_reporting_readers: bool,
    ) -> ConsumerStatus {
        let mut status = ConsumerStatus {
            reporting: 0,
            reporting_ready: 0,
            non_reporting_readers,
        };
        for holding in holdings {
            status.reporting += 1;
            status.reporting_ready += u32::from(self.is_ready(holding));
        }
        status
    }

    /// Whether one consumer holds what this rotation's next gate needs: before promotion the
    /// new version accepted, after it the new version current. A live consumer that is not
    /// ready is one that holds the gate.
    pub fn is_ready(&self, holding: Holding<'_>) -> bool {
        if matches!(
            self.phase,
            Phase::Promoted | Phase::Drained | Phase::Retired
        ) {
            holding.current == Some(self.version_id.as_str())
        } else {
            holding.accepted.contains(&self.version_id)
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, Status::Succeeded | Status::Cancelled)
    }

    /// The step that leads out of the current phase, if it is a step rather than a gate.
    fn next_step(&self) -> Option<Step> {
        match self.phase {
            Phase::Started => Some(Step::Create),
            Phase::Created => Some(Step::Set),
            Phase::Set => Some(Step::Test),
            Phase::Propagated => Some(Step::Promote),
            Phase::Drained => Some(Step::Retire),
            Phase::Tested | Phase::Promoted | Phase::Retired => None,
        }
    }

    /// The gate the rotation waits at now, if any.
    pub fn waiting_gate(&self) -> Option<Gate> {
        match self.phase {
            Phase::Tested => Some(Gate::Propagation),
            Phase::Promoted => Some(Gate::Drain),
            _ => None,
        }
    }

    /// When the machine next wants a `Tick`, if ever. A gate held by lagging consumers past its
    /// deadlines returns a time in the past: the caller ticks again when consumers change, or
    /// after its own minimum interval.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.status != Status::Running {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        if self.in_flight.is_some() {
            return None;
        }
        match (self.waiting_gate(), self.next_step()) {
            (Some(Gate::Drain), _) if self.gate_ready_since.is_some() => self
                .gate_ready_since
                .map(|since| since + self.policy.retire_grace_ms),
            (Some(_), _) => {
                let deadline = self.phase_started_at + self.policy.propagation_delay_ms;
                let alert = self.phase_started_at + self.policy.gate_wait_max_ms;
                Some(if self.alerted {
                    deadline
                } else {
                    deadline.min(alert)
                })
            }
            // A promotion or retirement that is not in flight waits out a blackout.
            (None, Some(Step::Promote | Step::Retire)) => {
                Some(self.policy.blackout_end(self.phase_started_at))
            }
            _ => None,
        }
    }

    /// Feeds one input. Inputs that do not apply to the current state are no-ops.
    pub fn handle(&mut self, input: Input, now: Timestamp) -> Result<Vec<Command>, RotationError> {
        let mut out = Vec::new();
        match input {
            Input::Tick(consumers) => {
                if self.status == Status::Running {
                    self.advance(consumers, now, false, &mut out);
                }
            }
            Input::StepSucceeded(step) => {
                if self.status != Status::Running || self.in_flight != Some(step) {
                    return Ok(out);
                }
                self.in_flight = None;
                self.attempts = 0;
                self.retry_at = None;
                self.enter(step.reaches(), now, &mut out);
                self.advance(ConsumerStatus::unknown(), now, false, &mut out);
            }
            Input::StepFailed { step, reason } => {
                if self.status != Status::Running || self.in_flight != Some(step) {
                    return Ok(out);
                }
                self.in_flight = None;
                self.attempts += 1;
                out.push(Command::Record(RotationEvent::StepFailed {
                    step,
                    attempt: self.attempts,
                    reason: reason.clone(),
                }));
                if self.attempts >= self.policy.step_attempts_max {
                    self.retry_at = None;
                    self.status = Status::Stopped {
                        step,
                        reason: reason.clone(),
                    };
                    out.push(Command::Record(RotationEvent::Stopped { step, reason }));
                } else {
                    self.retry_at = Some(now + self.policy.backoff(self.attempts));
                }
            }
            Input::StepDeferred { step, reason } => {
                if self.status != Status::Running || self.in_flight != Some(step) {
                    return Ok(out);
                }
                self.in_flight = None;
                self.retry_at = Some(now + DEFERRED_STEP_RETRY_MS);
                let waited_ms = now - self.phase_started_at;
                if waited_ms >= self.policy.gate_wait_max_ms && !self.alerted {
                    self.alerted = true;
                    out.push(Command::Record(RotationEvent::StepHeld {
                        step,
                        waited_ms,
                        reason: reason.clone(),
                    }));
                }
                out.push(Command::Record(RotationEvent::StepDeferred {
                    step,
                    reason,
                }));
            }
            Input::ForceAdvance => {
                if self.is_finished() {
                    return Err(RotationError::Ended);
                }
                if self.waiting_gate().is_none() || self.status != Status::Running {
                    return Err(RotationError::NothingToForce);
                }
                self.advance(ConsumerStatus::unknown(), now, true, &mut out);
            }
            Input::Retry => {
                if !matches!(self.status, Status::Stopped { .. }) {
                    return Err(RotationError::NothingToRetry);
                }
                self.status = Status::Running;
                self.attempts = 0;
                self.retry_at = None;
                self.advance(ConsumerStatus::unknown(), now, false, &mut out);
            }
            Input::Cancel => {
                if self.is_finished() {
                    return Err(RotationError::Ended);
                }
                if self.phase >= Phase::Promoted || self.in_flight == Some(Step::Promote) {
                    return Err(RotationError::CancelAfterPromotion);
                }
                self.status = Status::Cancelled;
                self.in_flight = None;
                self.retry_at = None;
                out.push(Command::DropPending);
                out.push(Command::Record(RotationEvent::Cancelled));
            }
        }
        Ok(out)
    }

    fn enter(&mut self, phase: Phase, now: Timestamp, out: &mut Vec<Command>) {
        self.phase = phase;
        self.phase_started_at = now;
        self.alerted = false;
        self.gate_ready_since = None;
        out.push(Command::Record(RotationEvent::PhaseReached(phase)));
        if phase == Phase::Retired {
            self.status = Status::Succeeded;
            out.push(Command::Record(RotationEvent::Succeeded));
        }
    }

    /// Moves as far as the current time and consumers allow: retries a failed step when its
    /// backoff ended, evaluates a waiting gate, and asks for the next step.
    fn advance(
        &mut self,
        consumers: ConsumerStatus,
        now: Timestamp,
        force: bool,
        out: &mut Vec<Command>,
    ) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return;
            }
            self.retry_at = None;
        }
        if let Some(gate) = self.waiting_gate() {
            if !self.evaluate_gate(gate, consumers, now, force, out) {
                return;
            }
            let passed_into = match gate {
                Gate::Propagation => Phase::Propagated,
                Gate::Drain => Phase::Drained,
            };
            self.enter(passed_into, now, out);
        }
        let Some(step) = self.next_step() else {
            return;
        };
        let command = match step {
            Step::Promote | Step::Retire if self.policy.in_blackout(now) => {
                // Said once (repeats are not recorded), so the wait has a visible cause.
                let end = self.policy.blackout_end(now);
                let minute = end.rem_euclid(DAY_MS) / MINUTE_MS;
                out.push(Command::Record(RotationEvent::StepDeferred {
                    step,
                    reason: format!(
                        "a blackout window is in force until {:02}:{:02} UTC",
                        minute / 60,
                        minute % 60
                    ),
                }));
                return;
            }
            Step::Promote => promote(&Tested(()), &Propagated(())),
            Step::Retire => retire(&Drained(())),
            other => Command::Run(other),
        };
        self.in_flight = Some(step);
        out.push(command);
    }

    /// Whether `gate` passes now. Records why it waits, and alerts once past the maximum wait.
    fn evaluate_gate(
        &mut self,
        gate: Gate,
        consumers: ConsumerStatus,
        now: Timestamp,
        force: bool,
        out: &mut Vec<Command>,
    ) -> bool {
        let waited = now - self.phase_started_at;
        if force {
            out.push(Command::Record(RotationEvent::GatePassed {
                gate,
                forced: true,
            }));
            return true;
        }
        let lagging = consumers
            .reporting
            .saturating_sub(consumers.reporting_ready);
        if lagging > 0 {
            self.gate_ready_since = None;
            if waited >= self.policy.gate_wait_max_ms && !self.alerted {
                self.alerted = true;
                out.push(Command::Record(RotationEvent::GateAlert {
                    gate,
                    waited_ms: waited,
                }));
            }
            out.push(Command::Record(RotationEvent::GateWaiting {
                gate,
                reason: format!(
                    "{lagging} of {} reporting consumer(s) do not hold what the next phase needs",
                    consumers.reporting
                ),
            }));
            return false;
        }
        if consumers.non_reporting_readers && waited < self.policy.propagation_delay_ms {
            out.push(Command::Record(RotationEvent::GateWaiting {
                gate,
                // Stable text: the timeline keeps one entry per distinct reason, not one a tick.
                reason: format!(
                    "readers that do not report (plain AWS SDKs, AWS's agent or caching \
                     libraries) may hold the old view: the gate waits the propagation delay \
                     T = {} from the phase's start",
                    duration_text(self.policy.propagation_delay_ms)
                ),
            }));
            return false;
        }
        let ready_since = *self.gate_ready_since.get_or_insert(now);
        if gate == Gate::Drain && now < ready_since + self.policy.retire_grace_ms {
            out.push(Command::Record(RotationEvent::GateWaiting {
                gate,
                reason: format!(
                    "signatures made with the old value may still be in use: the gate waits the \
                     retire grace of {} after every consumer uses the new value",
                    duration_text(self.policy.retire_grace_ms)
                ),
            }));
            return false;
        }
        out.push(Command::Record(RotationEvent::GatePassed {
            gate,
            forced: false,
        }));
        true
    }
}

/// A duration as a person reads it: "850 ms", "1.5 s", "42 s", "4 min 20 s", "2 h 5 min",
/// "3 d 4 h". Shared by the timeline's messages and the CLI.
pub fn duration_text(ms: Timestamp) -> String {
    let ms = ms.max(0);
    let s = ms / 1_000;
    let pair = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    match s {
        _ if ms < 1_000 => format!("{ms} ms"),
        0..10 if ms % 1_000 != 0 => format!("{:.1} s", ms as f64 / 1_000.0),
        0..60 => format!("{s} s"),
        60..3_600 => pair(s / 60, "min", s % 60, "s"),
        3_600..86_400 => pair(s / 3_600, "h", s % 3_600 / 60, "min"),
        _ => pair(s / 86_400, "d", s % 86_400 / 3_600, "h"),
    }
}

impl Blackout {
    /// Parses `HH:MM-HH:MM` (UTC).
    pub fn parse(text: &str) -> Option<Blackout> {
        let (start, end) = text.trim().split_once('-')?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start_minute, end_minute) = (minute(start)?, minute(end)?);
        (start_minute != end_minute).then_some(Blackout {
            start_minute,
            end_minute,
        })
    }
}

impl std::fmt::Display for Blackout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60
        )
    }
}

impl std::fmt::Display for RotationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gate_name = |g: &Gate| match g {
            Gate::Propagation => "propagation",
            Gate::Drain => "drain",
        };
        match self {
            RotationEvent::PhaseReached(p) => write!(f, "phase {}", p.as_str()),
            RotationEvent::GateWaiting { gate, reason } => {
                write!(f, "{} gate waiting: {reason}", gate_name(gate))
            }
            RotationEvent::GatePassed { gate, forced } => write!(
                f,
                "{} gate passed{}",
                gate_name(gate),
                if *forced { " (forced)" } else { "" }
            ),
            RotationEvent::GateAlert { gate, waited_ms } => write!(
                f,
                "ALERT: {} gate held by lagging consumers for {}",
                gate_name(gate),
                duration_text(*waited_ms)
            ),
            RotationEvent::StepFailed {
                step,
                attempt,
                reason,
            } => write!(
                f,
                "step {} failed (attempt {attempt}): {reason}",
                step.as_str()
            ),
            RotationEvent::StepDeferred { step, reason } => {
                write!(f, "step {} waiting: {reason}", step.as_str())
            }
            RotationEvent::StepHeld {
                step,
                waited_ms,
                reason,
            } => write!(
                f,
                "ALERT: step {} held for {}: {reason}",
                step.as_str(),
                duration_text(*waited_ms)
            ),
            RotationEvent::Stopped { step, reason } => {
                write!(f, "stopped after step {} failed: {reason}", step.as_str())
            }
            RotationEvent::Succeeded => f.write_str("succeeded"),
            RotationEvent::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// One line of a rotation's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub event: String,
}

/// What the store keeps of a secret's current (or last) rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationState {
    pub machine: Rotation,
    /// Every event of this rotation, oldest first; consecutive repeats are kept once.
    pub timeline: Vec<TimelineEntry>,
    /// When the engine must next drive this rotation; `None` when it has ended or stopped.
    pub due_at: Option<Timestamp>,
}

/// A timeline is bounded: past this many entries the oldest are dropped.
pub const TIMELINE_ENTRIES_MAX: usize = 200;

impl RotationState {
    pub fn record(&mut self, at: Timestamp, event: &RotationEvent) {
        let text = event.to_string().replace(['\t', '\n'], " ");
        if self.timeline.last().is_some_and(|e| e.event == text) {
            return;
        }
        self.timeline.push(TimelineEntry { at, event: text });
        if self.timeline.len() > TIMELINE_ENTRIES_MAX {
            // Past the bound, the oldest entry that only said what a wait was for goes first;
            // the phases, gate passes and outcome stay as long as anything else is left.
            let waiting = |e: &TimelineEntry| e.event.contains(" waiting: ");
            match self.timeline.iter().position(waiting) {
                Some(oldest) => {
                    self.timeline.remove(oldest);
                }
                None => {
                    self.timeline.remove(0);
                }
            }
        }
    }

    /// Records every `Command::Record` among `commands`.
    pub fn record_all(&mut self, at: Timestamp, commands: &[Command]) {
        for command in commands {
            if let Command::Record(event) = command {
                self.record(at, event);
            }
        }
    }

    /// When the engine must next look at this rotation.
    pub fn compute_due_at(&mut self, now: Timestamp) {
        self.compute_due_at_with(now, None);
    }

    /// As [`RotationState::compute_due_at`], and a rotation waiting at a gate is looked at
    /// again by `recheck_at` at the latest: when a consumer's lease may end, say.
    pub fn compute_due_at_with(&mut self, now: Timestamp, recheck_at: Option<Timestamp>) {
        self.due_at = match (&self.machine.status, self.machine.in_flight) {
            (Status::Running, Some(_)) => Some(now),
            (Status::Running, None) => {
                let poll = self.machine.poll_timeout();
                let poll = match (poll, recheck_at) {
                    // The gate was just evaluated at `now`: a deadline already past means time
                    // no longer holds it, consumers do, so look again when they may have moved
                    // (the recheck) rather than at once, over and over.
                    (Some(p), Some(r)) if self.machine.waiting_gate().is_some() && p <= now => {
                        Some(r)
                    }
                    (Some(p), Some(r)) if self.machine.waiting_gate().is_some() => Some(p.min(r)),
                    (p, _) => p,
                };
                poll.map(|t| t.max(now))
            }
            _ => None,
        };
    }
}

/// What a consumer must use and accept, derived from the staging labels alone, so AWS clients
/// that read labels and Baton clients that read the keyring always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    /// The version to sign or encrypt with: AWSCURRENT.
    pub current: Option<String>,
    /// Every version to verify or decrypt with: AWSPENDING, AWSCURRENT and AWSPREVIOUS.
    pub accepted: Vec<String>,
}

pub fn keyring(secret: &crate::SecretRecord) -> Keyring {
    // A version whose value the rotator has not stored yet is not part of any keyring.
    let label = |l: &str| {
        secret
            .version_with_label(l)
            .filter(|v| v.kind != crate::SecretValueKind::Empty)
            .map(|v| v.version_id.clone())
    };
    let mut accepted = Vec::new();
    for l in [crate::AWSPENDING, crate::AWSCURRENT, crate::AWSPREVIOUS] {
        if let Some(v) = label(l)
            && !accepted.contains(&v)
        {
            accepted.push(v);
        }
    }
    Keyring {
        current: label(crate::AWSCURRENT),
        accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = 300_000;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            propagation_delay_ms: T,
            gate_wait_max_ms: 4 * T,
            retire_grace_ms: 0,
            step_attempts_max: 3,
            kill_sessions_after_max_wait: false,
            backoff_base_ms: 1_000,
            backoff_max_ms: 8_000,
            blackouts: vec![],
        }
    }

    fn runs(commands: &[Command]) -> Vec<Step> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Run(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn tick(r: &mut Rotation, now: Timestamp) -> Vec<Command> {
        r.handle(Input::Tick(ConsumerStatus::unknown()), now)
            .unwrap()
    }

    fn ok(r: &mut Rotation, step: Step, now: Timestamp) -> Vec<Command> {
        r.handle(Input::StepSucceeded(step), now).unwrap()
    }

    /// Drives a rotation to its end as the engine does: runs each step asked for, ticks every
    /// second with `status(now)`, records every event. Returns the timeline's texts.
    fn drive_recorded(
        policy: RotationPolicy,
        status: impl Fn(&Rotation, Timestamp) -> ConsumerStatus,
        seconds_max: i64,
    ) -> Vec<String> {
        let (machine, out) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), policy, 0);
        let mut state = RotationState {
            machine,
            timeline: Vec::new(),
            due_at: None,
        };
        let mut queue: std::collections::VecDeque<Command> = out.into();
        for second in 0..seconds_max {
            let now = second * 1_000;
            queue.extend(
                state
                    .machine
                    .handle(Input::Tick(status(&state.machine, now)), now)
                    .unwrap(),
            );
            while let Some(command) = queue.pop_front() {
                match command {
                    Command::Run(step) => queue.extend(
                        state
                            .machine
                            .handle(Input::StepSucceeded(step), now)
                            .unwrap(),
                    ),
                    Command::Record(event) => state.record(now, &event),
                    Command::DropPending => {}
                }
            }
            if state.machine.is_finished() {
                break;
            }
        }
        assert!(state.machine.is_finished(), "{:?}", state.timeline);
        state.timeline.into_iter().map(|e| e.event).collect()
    }

    #[test]
    fn a_gate_held_for_ten_minutes_adds_entries_when_its_cause_changes_not_every_tick() {
        // One reporting consumer lags for ten minutes at each gate; plain readers were seen, and
        // hold each gate five minutes more (T = 15 min).
        let lag_ms = 10 * 60_000;
        let policy = RotationPolicy {
            propagation_delay_ms: 15 * 60_000,
            gate_wait_max_ms: 30 * 60_000,
            ..policy()
        };
        let timeline = drive_recorded(
            policy,
            |rotation, now| {
                let caught_up = now >= rotation.phase_started_at + lag_ms;
                ConsumerStatus {
                    reporting: 1,
                    reporting_ready: u32::from(caught_up),
                    non_reporting_readers: true,
                }
            },
            3 * 3_600,
        );
        for phase in Phase::ALL {
            let entry = format!("phase {}", phase.as_str());
            assert!(timeline.contains(&entry), "{entry} missing: {timeline:#?}");
        }
        assert!(timeline.iter().any(|e| e == "propagation gate passed"));
        assert!(timeline.iter().any(|e| e == "drain gate passed"));
        assert_eq!(timeline.last().map(String::as_str), Some("succeeded"));
        // A few entries per gate (consumers, then plain readers, then the retire grace), not
        // one per second of the wait.
        assert!(
            timeline.len() < 30,
            "{} entries: {timeline:#?}",
            timeline.len()
        );
        assert!(
            timeline
                .iter()
                .any(|e| e.contains("waits the propagation delay T = 15 min")),
            "{timeline:#?}"
        );
    }

    #[test]
    fn a_full_timeline_drops_waiting_entries_before_phases() {
        let (machine, _) = Rotation::start("s".into(), "v2".into(), None, policy(), 0);
        let mut state = RotationState {
            machine,
            timeline: Vec::new(),
            due_at: None,
        };
        state.record(0, &RotationEvent::PhaseReached(Phase::Started));
        for i in 0..(2 * TIMELINE_ENTRIES_MAX as i64) {
            state.record(
                i,
                &RotationEvent::GateWaiting {
                    gate: Gate::Propagation,
                    reason: format!("cause {i}"),
                },
            );
        }
        state.record(1_000_000, &RotationEvent::PhaseReached(Phase::Propagated));
        assert_eq!(state.timeline.len(), TIMELINE_ENTRIES_MAX);
        assert_eq!(state.timeline[0].event, "phase started");
        assert_eq!(state.timeline.last().unwrap().event, "phase propagated");
    }

    #[test]
    fn a_rotation_waits_the_propagation_delay_at_each_gate() {
        let (mut r, out) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), policy(), 0);
        assert_eq!(runs(&out), [Step::Create]);
        assert_eq!(runs(&ok(&mut r, Step::Create, 10)), [Step::Set]);
        assert_eq!(runs(&ok(&mut r, Step::Set, 20)), [Step::Test]);
        assert!(
            runs(&ok(&mut r, Step::Test, 30)).is_empty(),
            "propagation gate holds"
        );
        assert_eq!(r.poll_timeout(), Some(30 + T));
        assert!(runs(&tick(&mut r, 30 + T - 1)).is_empty());
        assert_eq!(runs(&tick(&mut r, 30 + T)), [Step::Promote]);
        assert!(
            runs(&ok(&mut r, Step::Promote, 40 + T)).is_empty(),
            "drain gate holds"
        );
        assert_eq!(runs(&tick(&mut r, 40 + 2 * T)), [Step::Retire]);
        let out = ok(&mut r, Step::Retire, 50 + 2 * T);
        assert!(out.contains(&Command::Record(RotationEvent::Succeeded)));
        assert_eq!(r.status, Status::Succeeded);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn repeated_and_stray_inputs_are_no_ops() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), None, policy(), 0);
        ok(&mut r, Step::Create, 1);
        let snapshot = r.clone();
        assert!(ok(&mut r, Step::Create, 2).is_empty());
        assert!(ok(&mut r, Step::Promote, 2).is_empty());
        assert!(tick(&mut r, 3).is_empty());
        assert_eq!(r, snapshot);
    }

    #[test]
    fn reporting_consumers_pass_a_gate_early_and_laggards_hold_it_with_one_alert() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), None, policy(), 0);
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        let all_ready = ConsumerStatus {
            reporting: 3,
            reporting_ready: 3,
            non_reporting_readers: false,
        };
        let out = r.handle(Input::Tick(all_ready), 5).unwrap();
        assert_eq!(runs(&out), [Step::Promote], "passes in 5 ms, not T");
        ok(&mut r, Step::Promote, 6);
        let lagging = ConsumerStatus {
            reporting: 3,
            reporting_ready: 2,
            non_reporting_readers: false,
        };
        assert!(runs(&r.handle(Input::Tick(lagging), 6 + 2 * T).unwrap()).is_empty());
        let alerts = |r: &mut Rotation, now| {
            r.handle(Input::Tick(lagging), now)
                .unwrap()
                .into_iter()
                .filter(|c| matches!(c, Command::Record(RotationEvent::GateAlert { .. })))
                .count()
        };
        let (mut a, mut b) = (r.clone(), r.clone());
        assert_eq!(alerts(&mut a, 6 + 4 * T), 1);
        assert_eq!(alerts(&mut a, 6 + 5 * T), 0, "alerted once");
        assert_eq!(b.status, Status::Running);
        let out = b.handle(Input::ForceAdvance, 6 + 5 * T).unwrap();
        assert!(out.contains(&Command::Record(RotationEvent::GatePassed {
            gate: Gate::Drain,
            forced: true
        })));
        assert_eq!(runs(&out), [Step::Retire]);
    }

    #[test]
    fn a_gate_held_by_consumers_past_its_deadline_is_looked_at_on_the_recheck_not_at_once() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), policy(), 0);
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        let lagging = ConsumerStatus {
            reporting: 2,
            reporting_ready: 1,
            non_reporting_readers: false,
        };
        let now = 10 * T;
        r.handle(Input::Tick(lagging), now).unwrap();
        assert!(r.waiting_gate().is_some(), "held by the lagging consumer");
        let mut state = RotationState {
            machine: r,
            timeline: vec![],
            due_at: None,
        };
        state.compute_due_at_with(now, Some(now + 1_000));
        assert_eq!(
            state.due_at,
            Some(now + 1_000),
            "not `now`, which would spin"
        );
        state.compute_due_at_with(now, None);
        assert_eq!(
            state.due_at,
            Some(now),
            "with nothing to recheck, time decides at once"
        );
    }

    #[test]
    fn consumers_count_as_ready_for_the_gate_the_rotation_waits_at() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), policy(), 0);
        let old_only = vec!["v1".to_owned()];
        let both = vec!["v2".to_owned(), "v1".to_owned()];
        let holdings = |current| {
            [
                Holding {
                    current: Some("v1"),
                    accepted: &old_only,
                },
                Holding {
                    current,
                    accepted: &both,
                },
            ]
        };
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        // Propagation: accepting the new version is enough.
        let status = r.consumer_status(holdings(Some("v1")), true);
        assert_eq!(
            status,
            ConsumerStatus {
                reporting: 2,
                reporting_ready: 1,
                non_reporting_readers: true
            }
        );
        tick_with(
            &mut r,
            ConsumerStatus {
                reporting: 1,
                reporting_ready: 1,
                non_reporting_readers: false,
            },
            1,
        );
        ok(&mut r, Step::Promote, 2);
        assert_eq!(r.phase, Phase::Promoted);
        // Drain: the new version must be current; accepting it no longer suffices.
        assert_eq!(
            r.consumer_status(holdings(Some("v1")), false)
                .reporting_ready,
            0
        );
        assert_eq!(
            r.consumer_status(holdings(Some("v2")), false)
                .reporting_ready,
            1
        );
        assert_eq!(r.consumer_status([], false).reporting, 0);
    }

    fn tick_with(r: &mut Rotation, status: ConsumerStatus, now: Timestamp) {
        let out = r.handle(Input::Tick(status), now).unwrap();
        assert_eq!(runs(&out), [Step::Promote]);
    }

    #[test]
    fn a_deferred_retire_waits_without_failing_alerts_once_and_then_completes() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), policy(), 0);
        let ready = ConsumerStatus {
            reporting: 0,
            reporting_ready: 0,
            non_reporting_readers: false,
        };
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        r.handle(Input::Tick(ready), 1).unwrap();
        ok(&mut r, Step::Promote, 1);
        let out = r.handle(Input::Tick(ready), 2).unwrap();
        assert_eq!(runs(&out), [Step::Retire]);
        let defer = |r: &mut Rotation, now| {
            r.handle(
                Input::StepDeferred {
                    step: Step::Retire,
                    reason: "2 sessions".into(),
                },
                now,
            )
            .unwrap()
        };
        let out = defer(&mut r, 3);
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Record(RotationEvent::StepDeferred { .. })))
        );
        assert_eq!(r.attempts, 0, "a deferral is not a failure");
        assert_eq!(r.poll_timeout(), Some(3 + DEFERRED_STEP_RETRY_MS));
        assert!(
            runs(&r.handle(Input::Tick(ready), 4).unwrap()).is_empty(),
            "waits"
        );
        let out = r
            .handle(Input::Tick(ready), 3 + DEFERRED_STEP_RETRY_MS)
            .unwrap();
        assert_eq!(runs(&out), [Step::Retire], "asked again after the pause");
        let held = |out: &[Command]| {
            out.iter()
                .filter(|c| matches!(c, Command::Record(RotationEvent::StepHeld { .. })))
                .count()
        };
        assert_eq!(
            held(&defer(&mut r, 4 * T + 10)),
            1,
            "alert past the maximum wait"
        );
        r.handle(Input::Tick(ready), 4 * T + 10 + DEFERRED_STEP_RETRY_MS)
            .unwrap();
        assert_eq!(held(&defer(&mut r, 5 * T)), 0, "alerted once");
        r.handle(Input::Tick(ready), 5 * T + DEFERRED_STEP_RETRY_MS)
            .unwrap();
        ok(&mut r, Step::Retire, 5 * T + DEFERRED_STEP_RETRY_MS);
        assert_eq!(r.status, Status::Succeeded);
    }

    #[test]
    fn failed_steps_back_off_then_stop_safely_until_retried() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), None, policy(), 0);
        let fail = |r: &mut Rotation, now| {
            r.handle(
                Input::StepFailed {
                    step: Step::Create,
                    reason: "target down".into(),
                },
                now,
            )
            .unwrap()
        };
        fail(&mut r, 0);
        assert_eq!(r.poll_timeout(), Some(1_000));
        assert!(runs(&tick(&mut r, 999)).is_empty());
        assert_eq!(runs(&tick(&mut r, 1_000)), [Step::Create]);
        fail(&mut r, 1_000);
        assert_eq!(r.poll_timeout(), Some(3_000), "backoff doubles");
        tick(&mut r, 3_000);
        let out = fail(&mut r, 3_000);
        assert!(matches!(
            r.status,
            Status::Stopped {
                step: Step::Create,
                ..
            }
        ));
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Record(RotationEvent::Stopped { .. })))
        );
        assert_eq!(r.phase, Phase::Started, "nothing was promoted");
        assert!(tick(&mut r, 99_999).is_empty());
        assert_eq!(
            runs(&r.handle(Input::Retry, 100_000).unwrap()),
            [Step::Create]
        );
    }

    #[test]
    fn promotion_and_retirement_wait_out_blackouts() {
        let mut p = policy();
        // 00:00 to 01:00 UTC.
        p.blackouts = vec![Blackout {
            start_minute: 0,
            end_minute: 60,
        }];
        let day = DAY_MS * 100;
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), None, p, day - T - 10);
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, day - T - 10);
        }
        // The gate passes at 23:59:59.99 + T = inside the blackout, and says why it waits.
        let out = tick(&mut r, day + 1);
        assert!(runs(&out).is_empty());
        assert!(
            out.contains(&Command::Record(RotationEvent::StepDeferred {
                step: Step::Promote,
                reason: "a blackout window is in force until 01:00 UTC".into(),
            })),
            "{out:?}"
        );
        assert_eq!(r.phase, Phase::Propagated);
        assert_eq!(r.poll_timeout(), Some(day + 60 * MINUTE_MS));
        assert_eq!(runs(&tick(&mut r, day + 60 * MINUTE_MS)), [Step::Promote]);
    }

    #[test]
    fn cancellation_is_allowed_only_before_promotion() {
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), None, policy(), 0);
        ok(&mut r, Step::Create, 0);
        let mut early = r.clone();
        let out = early.handle(Input::Cancel, 1).unwrap();
        assert_eq!(out[0], Command::DropPending);
        assert_eq!(early.status, Status::Cancelled);
        for step in [Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        tick(&mut r, T);
        assert_eq!(
            r.handle(Input::Cancel, T + 1),
            Err(RotationError::CancelAfterPromotion),
            "promotion is in flight"
        );
    }

    #[test]
    fn retirement_waits_the_grace_after_every_consumer_uses_the_new_value() {
        let mut p = policy();
        p.retire_grace_ms = 1_000;
        let (mut r, _) = Rotation::start("s".into(), "v2".into(), Some("v1".into()), p, 0);
        for step in [Step::Create, Step::Set, Step::Test] {
            ok(&mut r, step, 0);
        }
        let ready = ConsumerStatus {
            reporting: 2,
            reporting_ready: 2,
            non_reporting_readers: false,
        };
        assert_eq!(
            runs(&r.handle(Input::Tick(ready), 10).unwrap()),
            [Step::Promote]
        );
        ok(&mut r, Step::Promote, 20);
        assert!(runs(&r.handle(Input::Tick(ready), 30).unwrap()).is_empty());
        assert_eq!(r.poll_timeout(), Some(1_030));
        let lagging = ConsumerStatus {
            reporting_ready: 1,
            ..ready
        };
        r.handle(Input::Tick(lagging), 500).unwrap();
        assert!(
            runs(&r.handle(Input::Tick(ready), 1_030).unwrap()).is_empty(),
            "grace restarts"
        );
        assert!(runs(&r.handle(Input::Tick(ready), 2_029).unwrap()).is_empty());
        assert_eq!(
            runs(&r.handle(Input::Tick(ready), 2_030).unwrap()),
            [Step::Retire]
        );
    }

    #[test]
    fn blackout_windows_parse_and_print() {
        let b = Blackout::parse("23:30-01:15").unwrap();
        assert_eq!((b.start_minute, b.end_minute), (23 * 60 + 30, 75));
        assert_eq!(b.to_string(), "23:30-01:15");
        for bad in ["24:00-01:00", "10:00", "10:00-10:00", "ab:cd-01:00"] {
            assert_eq!(Blackout::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn blackouts_wrap_past_midnight() {
        let b = Blackout {
            start_minute: 23 * 60,
            end_minute: 60,
        };
        assert!(b.contains(DAY_MS - MINUTE_MS));
        assert!(b.contains(DAY_MS + 30 * MINUTE_MS));
        assert!(!b.contains(DAY_MS + 61 * MINUTE_MS));
        assert_eq!(b.end_after(DAY_MS - MINUTE_MS), DAY_MS + 60 * MINUTE_MS);
    }
}

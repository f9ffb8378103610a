//! Consumers: what reporting clients and agents hold (so rotation gates pass on evidence rather
//! than on a blind delay), when plain readers last read, and long-poll watches.

use std::time::Duration;

use baton_core::SecretRecord;
use baton_proto as p;
use baton_store::{ConsumerRecord, ConsumerWrite};

use crate::plain_reads::Claim;
use crate::state::{Baton, Caller, now_ms};
use crate::{ApiError, wire::seconds};

/// A consumer that does not renew within this is gone, unless it asks for another lease.
pub const DEFAULT_LEASE_SECONDS: i64 = 30;
const LEASE_SECONDS_MIN: i64 = 5;
const LEASE_SECONDS_MAX: i64 = 600;
const HOLDINGS_MAX: usize = 1000;
const ACCEPTED_VERSIONS_MAX: usize = 20;
const IDENTITY_LENGTH_MAX: usize = 128;
/// Secrets one `baton.SummarizeSecrets` may name: two pages of the console's list.
const SUMMARIZED_SECRETS_MAX: usize = 100;
/// Secrets one watch may name.
const WATCHED_SECRETS_MAX: usize = 1000;
/// How long a watch waits when the caller does not say.
const DEFAULT_WAIT_SECONDS: i64 = 20;
/// Consumers whose lease ended longer ago than this are deleted; until then ListConsumers shows
/// them as not live.
pub const EXPIRED_CONSUMERS_KEPT_MS: i64 = 3_600_000;

fn identity(
    application: &Option<String>,
    instance_id: &Option<String>,
) -> Result<(String, String), ApiError> {
    let check = |value: &Option<String>, member: &str| -> Result<String, ApiError> {
        let value = crate::ops::required(value, member)?;
        if value.is_empty()
            || value.len() > IDENTITY_LENGTH_MAX
            || value.chars().any(|c| c.is_control())
        {
            return Err(ApiError::InvalidParameter(format!(
                "{member} must be 1 to {IDENTITY_LENGTH_MAX} characters without control \
                 characters."
            )));
        }
        Ok(value.to_owned())
    };
    Ok((
        check(application, "Application")?,
        check(instance_id, "InstanceId")?,
    ))
}

fn lease_ms(lease_seconds: Option<i64>) -> Result<i64, ApiError> {
    let lease = lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !(LEASE_SECONDS_MIN..=LEASE_SECONDS_MAX).contains(&lease) {
        return Err(ApiError::InvalidParameter(format!(
            "LeaseSeconds must be between {LEASE_SECONDS_MIN} and {LEASE_SECONDS_MAX}; got \
             {lease}."
        )));
    }
    Ok(lease * 1000)
}

fn check_version_ids<'a>(ids: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
    for id in ids {
        baton_core::validate_client_request_token(id).map_err(|_| {
            ApiError::InvalidParameter(format!(
                "'{}' is not a version id: version ids are 32 to 64 characters.",
                id.chars().take(80).collect::<String>()
            ))
        })?;
    }
    Ok(())
}

/// A report may name only versions the secret has: a made-up id could otherwise stand for a
/// version that a rotation creates later, and pass its gate before anyone holds it.
fn check_versions_exist<'a>(
    secret: &SecretRecord,
    secret_id: &str,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<(), ApiError> {
    for id in ids {
        if secret.version(id).is_none() {
            return Err(ApiError::Validation(format!(
                "The secret {secret_id} has no version {id}; a consumer can hold only versions \
                 that exist."
            )));
        }
    }
    Ok(())
}

/// A report, or a watch, names at most `HOLDINGS_MAX` holdings.
fn check_holdings_count(holdings: &[p::ConsumerHolding]) -> Result<(), ApiError> {
    if holdings.len() > HOLDINGS_MAX {
        return Err(ApiError::InvalidParameter(format!(
            "A report may name at most {HOLDINGS_MAX} secrets; it named {}.",
            holdings.len()
        )));
    }
    Ok(())
}

/// What a report of holdings writes: one record per known secret, in order with the name
/// the report gave it and, when a rotation of it is in flight, the ARN to wake.
#[derive(Default)]
struct HoldingsReport {
    records: Vec<ConsumerRecord>,
    names: Vec<String>,
    kick: Vec<Option<String>>,
    unknown: Vec<String>,
}

/// The refusal of a report for a consumer that another principal reports.
fn owned_by_another(record: &ConsumerRecord, secret_id: &str) -> ApiError {
    ApiError::AccessDenied(format!(
        "The consumer {}/{} of {secret_id} is reported by another principal until its lease \
         ends; choose another InstanceId.",
        record.application, record.instance_id
    ))
}

fn rotation_in_flight(secret: &SecretRecord) -> bool {
    secret
        .rotation_state
        .as_ref()
        .is_some_and(|s| s.due_at.is_some())
}

impl Baton {
    /// Records a read by a client that does not report what it holds, and returns once a record
    /// covering it has committed. Reads with a rotation's temporary key are the rotator's own and
    /// do not count. At most one write per secret per `PLAIN_READ_RECORD_INTERVAL_MS` on this
    /// node; the engine allows for that slack.
    pub(crate) async fn note_plain_read(&self, caller: &Caller, secret: &SecretRecord) {
        if caller.is_rotation() {
            return;
        }
        let now = now_ms();
        let recording = match self.plain_reads.claim(&secret.id, now) {
            Claim::Record(recording) => recording,
            // A failed record was logged by the read that wrote it.
            Claim::Covered(covered) => {
                crate::plain_reads::committed(covered).await;
                return;
            }
        };
        let written = self
            .plain_read_writer
            .write(&self.store, (secret.id.clone(), now))
            .await
            .unwrap_or_else(|| Err("the plain-read writer stopped".to_owned()));
        if let Err(e) = &written {
            tracing::warn!(error = %e, "could not record a plain read; gates wait the full delay only if it was recorded");
        }
        self.plain_reads
            .written(&secret.id, recording, written.is_ok());
    }

    /// A keyring fetch by a reporting consumer: it now holds the keyring it is answered with.
    pub(crate) async fn note_keyring_fetch(
        &self,
        caller: &Caller,
        secret: &SecretRecord,
        consumer: Option<&p::ConsumerIdentity>,
        lease_seconds: Option<i64>,
        keyring: &baton_core::rotation::Keyring,
    ) -> Result<(), ApiError> {
        let Some(consumer) = consumer else {
            self.note_plain_read(caller, secret).await;
            return Ok(());
        };
        let (application, instance_id) = identity(&consumer.application, &consumer.instance_id)?;
        let lease = lease_ms(lease_seconds)?;
        let now = now_ms();
        let record = ConsumerRecord {
            secret_id: secret.id.clone(),
            application,
            instance_id,
            current_version: keyring.current.clone(),
            accepted_versions: keyring.accepted.clone(),
            last_seen_at: now,
            lease_expires_at: now + lease,
            principal: caller.principal.arn.clone(),
        };
        let kick = rotation_in_flight(secret).then_some(secret.arn.as_str());
        self.record_consumer(record, &secret.arn, kick).await
    }

    /// Writes one consumer record with the others that arrive meanwhile: many watchers report
    /// at once after a change, and their reports share one transaction. Then wakes what waits
    /// on reports: the rotation of `kick` (the secret's ARN, when one is in flight) and the
    /// console's live views. `named` is how a refusal names the secret.
    async fn record_consumer(
        &self,
        record: ConsumerRecord,
        named: &str,
        kick: Option<&str>,
    ) -> Result<(), ApiError> {
        let written = self
            .consumer_report_writer
            .write(&self.store, record.clone())
            .await
            .unwrap_or_else(|| Err("the consumer report writer stopped".to_owned()))
            .map_err(|e| {
                // As for every store error: the detail goes to the log, not to the caller.
                tracing::error!(error = %e, "recording a consumer failed");
                ApiError::Internal("An error occurred on the server side.".to_owned())
            })?;
        if !written {
            return Err(owned_by_another(&record, named));
        }
        if let Some(arn) = kick {
            self.kicks.kick(arn);
        }
        self.consumer_reports
            .send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// `baton.ReportConsumer`: a heartbeat that renews the consumer's lease and records what it
    /// holds of each secret.
    pub async fn report_consumer(
        &self,
        caller: &Caller,
        req: p::ReportConsumerRequest,
    ) -> Result<p::ReportConsumerResponse, ApiError> {
        let (application, instance_id) = identity(&req.application, &req.instance_id)?;
        let lease = lease_ms(req.lease_seconds)?;
        let holdings = req.holdings.unwrap_or_default();
        if holdings.is_empty() {
            // Only a lease renewal for no secret: nothing is read or written.
            self.nothing_to_authorize(caller, "an empty report acts on no secret");
        }
        check_holdings_count(&holdings)?;
        let report = self
            .holdings_report(caller, (&application, &instance_id), lease, &holdings)
            .await?;
        if let ConsumerWrite::OwnedByAnother(index) =
            self.store.upsert_consumers(&report.records).await?
        {
            return Err(owned_by_another(
                &report.records[index],
                &report.names[index],
            ));
        }
        for arn in report.kick.iter().flatten() {
            self.kicks.kick(arn);
        }
        self.consumer_reports
            .send_modify(|n| *n = n.wrapping_add(1));
        Ok(p::ReportConsumerResponse {
            lease_seconds: Some(lease / 1000),
            unknown_secret_ids: Some(report.unknown),
        })
    }

    /// The records a report of `holdings` writes, each checked as `baton.ReportConsumer`
    /// checks it (authorized for `caller`'s action); holdings of secrets that do not exist are
    /// named in `unknown`, not recorded.
    async fn holdings_report(
        &self,
        caller: &Caller,
        (application, instance_id): (&str, &str),
        lease: i64,
        holdings: &[p::ConsumerHolding],
    ) -> Result<HoldingsReport, ApiError> {
        let now = now_ms();
        let mut report = HoldingsReport::default();
        for holding in holdings {
            let secret_id = crate::ops::required(&holding.secret_id, "holdings.member.secretId")?;
            let accepted = holding.accepted_version_ids.clone().unwrap_or_default();
            if accepted.len() > ACCEPTED_VERSIONS_MAX {
                return Err(ApiError::InvalidParameter(format!(
                    "A consumer accepts at most {ACCEPTED_VERSIONS_MAX} versions of a secret; \
                     {} were reported for {secret_id}.",
                    accepted.len()
                )));
            }
            check_version_ids(accepted.iter().chain(&holding.current_version_id))?;
            let secret = match self.locate(caller, secret_id).await {
                Ok(located) => located.secret,
                Err(ApiError::ResourceNotFound(_)) => {
                    report.unknown.push(secret_id.to_owned());
                    continue;
                }
                Err(e) => return Err(e),
            };
            check_versions_exist(
                &secret,
                secret_id,
                accepted.iter().chain(&holding.current_version_id),
            )?;
            report
                .kick
                .push(rotation_in_flight(&secret).then(|| secret.arn.clone()));
            report.names.push(secret_id.to_owned());
            report.records.push(ConsumerRecord {
                secret_id: secret.id,
                application: application.to_owned(),
                instance_id: instance_id.to_owned(),
                current_version: holding.current_version_id.clone(),
                accepted_versions: accepted,
                last_seen_at: now,
                lease_expires_at: now + lease,
                principal: caller.principal.arn.clone(),
            });
        }
        Ok(report)
    }

    /// `baton.ListConsumers`: who holds which version of a secret, and when it was last seen.
    pub async fn list_consumers(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ListConsumersResponse, ApiError> {
        let located = self
            .locate(caller, crate::ops::required(&req.secret_id, "secretId")?)
            .await?;
        let arn = located.arn();
        let secret = located.secret;
        let now = now_ms();
        let consumers = self.store.list_consumers(&secret.id).await?;
        let last_plain_read = self.store.last_plain_read(&secret.id).await?;
        Ok(p::ListConsumersResponse {
            arn: Some(arn),
            name: Some(secret.name.clone()),
            current_version_id: baton_core::rotation::keyring(&secret).current,
            consumers: Some(
                consumers
                    .into_iter()
                    .map(|c| p::Consumer {
                        live: Some(c.lease_expires_at > now),
                        application: Some(c.application),
                        instance_id: Some(c.instance_id),
                        current_version_id: c.current_version,
                        accepted_version_ids: Some(c.accepted_versions),
                        last_seen_date: Some(seconds(c.last_seen_at)),
                        lease_expires_date: Some(seconds(c.lease_expires_at)),
                        principal: Some(c.principal).filter(|p| !p.is_empty()),
                    })
                    .collect(),
            ),
            last_plain_read_date: last_plain_read.map(seconds),
        })
    }

    /// `baton.SummarizeSecrets`: for each named secret, its rotation in flight (phase, status,
    /// waiting gate) and how many live reporting consumers it has and how many of them lag: the
    /// ones holding a waiting gate, or with no rotation in flight, those not using the current
    /// version. Each secret is authorized as `baton:ListConsumers`; a refusal is that secret's
    /// entry in `Errors`. The console's secrets list shows it beside each row.
    pub async fn summarize_secrets(
        &self,
        caller: &Caller,
        req: p::SummarizeSecretsRequest,
    ) -> Result<p::SummarizeSecretsResponse, ApiError> {
        let ids = req.secret_ids.unwrap_or_default();
        if ids.is_empty() || ids.len() > SUMMARIZED_SECRETS_MAX {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value at 'secretIds' failed to satisfy \
                 constraint: Member must have length between 1 and {SUMMARIZED_SECRETS_MAX}"
            )));
        }
        let reader = caller.acting_as("baton:ListConsumers");
        let now = now_ms();
        let (mut summaries, mut errors) = (Vec::new(), Vec::new());
        for id in ids {
            let located = match self.locate(&reader, &id).await {
                Ok(l) => l,
                Err(e) => {
                    errors.push(p::ApiErrorEntry {
                        secret_id: Some(id),
                        error_code: Some(e.error_type().to_owned()),
                        message: Some(e.to_string()),
                    });
                    continue;
                }
            };
            let arn = located.arn();
            let secret = located.secret;
            let consumers = self.store.list_consumers(&secret.id).await?;
            let live = consumers
                .iter()
                .filter(|c| c.lease_expires_at > now)
                .count();
            let description = crate::ops::rotation_description(arn.clone(), &secret);
            let in_flight = secret
                .rotation_state
                .as_ref()
                .is_some_and(|s| !s.machine.is_finished());
            let lagging = if description.waiting_gate.is_some() {
                crate::ops::gate_holders(&secret, &consumers, now).len()
            } else {
                let current = baton_core::rotation::keyring(&secret).current;
                consumers
                    .iter()
                    .filter(|c| c.lease_expires_at > now && c.current_version != current)
                    .count()
            };
            summaries.push(p::SecretSummary {
                arn: Some(arn),
                name: Some(secret.name.clone()),
                rotation_phase: description.phase.filter(|_| in_flight),
                rotation_status: description.status.filter(|_| in_flight),
                waiting_gate: description.waiting_gate,
                consumers_live: Some(live as i64),
                consumers_lagging: Some(lagging as i64),
            });
        }
        Ok(p::SummarizeSecretsResponse {
            summaries: Some(summaries),
            errors: Some(errors),
        })
    }

    /// `baton.WatchSecrets`: answers as soon as one of the named secrets' view revision differs
    /// from the one the caller knows, or after the wait with nothing changed. It sleeps on the
    /// store's change feed, not on the database.
    pub async fn watch_secrets(
        &self,
        caller: &Caller,
        req: p::WatchSecretsRequest,
    ) -> Result<p::WatchSecretsResponse, ApiError> {
        let include_keyrings = req.include_keyrings == Some(true);
        let holdings = req.holdings.unwrap_or_default();
        let reporter = if holdings.is_empty() {
            None
        } else {
            let Some(consumer) = &req.consumer else {
                return Err(ApiError::InvalidParameter(
                    "Holdings needs Consumer: the consumer whose holdings they are.".to_owned(),
                ));
            };
            check_holdings_count(&holdings)?;
            Some((
                identity(&consumer.application, &consumer.instance_id)?,
                lease_ms(req.lease_seconds)?,
            ))
        };
        let watched = req.secrets.unwrap_or_default();
        if watched.is_empty() || watched.len() > WATCHED_SECRETS_MAX {
            return Err(ApiError::InvalidParameter(format!(
                "Secrets must name 1 to {WATCHED_SECRETS_MAX} secrets; it named {}.",
                watched.len()
            )));
        }
        let wait_max = self.watch_wait_max.as_secs() as i64;
        let wait = req
            .wait_seconds
            .unwrap_or(DEFAULT_WAIT_SECONDS.min(wait_max));
        if !(0..=wait_max).contains(&wait) {
            return Err(ApiError::InvalidParameter(format!(
                "WaitSeconds must be between 0 and {wait_max}; got {wait}."
            )));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
        // Resolve each name to its secret, then subscribe, then compare: a change committed
        // after the subscription always wakes this watch.
        let mut entries = Vec::with_capacity(watched.len());
        let mut changed = Vec::new();
        for w in &watched {
            let secret_id = crate::ops::required(&w.secret_id, "secrets.member.secretId")?;
            match self.locate(caller, secret_id).await {
                Ok(located) => {
                    let receiver = self.store.changes().subscribe(&located.secret.id);
                    entries.push((w, located.secret.arn.clone(), located.arn(), receiver));
                }
                Err(ApiError::ResourceNotFound(_)) => changed.push(gone(w)),
                Err(e) => return Err(e),
            }
        }
        // The watch is authorized: record what the consumer installed since its last one.
        if let Some(((application, instance_id), lease)) = &reporter {
            self.record_watch_holdings(caller, (application, instance_id), *lease, &holdings)
                .await;
        }
        loop {
            for (w, arn, caller_arn, _) in &entries {
                match self.store.find_secret_by_arn(arn).await? {
                    None => changed.push(gone(w)),
                    Some(secret) => {
                        let revision = secret.view_revision();
                        let deleted = secret.is_scheduled_for_deletion();
                        if w.revision.as_deref() != Some(revision.as_str()) || deleted {
                            changed.push(p::WatchedSecret {
                                secret_id: w.secret_id.clone(),
                                arn: Some(caller_arn.clone()),
                                revision: Some(revision),
                                deleted: Some(deleted),
                                keyring: None,
                            });
                        }
                    }
                }
            }
            if !changed.is_empty() || tokio::time::Instant::now() >= deadline {
                if include_keyrings {
                    self.add_keyrings(caller, &mut changed).await;
                }
                return Ok(p::WatchSecretsResponse {
                    changed: Some(changed),
                });
            }
            let any_change = futures_util::future::select_all(
                entries
                    .iter_mut()
                    .map(|(_, _, _, receiver)| Box::pin(receiver.changed())),
            );
            if tokio::time::timeout_at(deadline, any_change).await.is_err() {
                return Ok(p::WatchSecretsResponse {
                    changed: Some(changed),
                });
            }
        }
    }
}

impl Baton {
    /// Adds each changed secret's keyring to a watch's answer, read exactly as
    /// `baton.GetSecretKeyring` would read it for this caller, which is the action each read is
    /// authorized for. It is not a report: the answer may never reach the consumer (one that
    /// has stopped, say), so the consumer reports what it installed with its next watch. A
    /// keyring the caller may not read is left out: the client's own fetch then fails with the
    /// reason. Each read checks with a note of its own, so a keyring left out does not turn
    /// the watch's audit entry into a denial; the entry names the secrets whose keyrings it
    /// carried.
    async fn add_keyrings(&self, caller: &Caller, changed: &mut [p::WatchedSecret]) {
        let reader = Caller {
            operation: "GetSecretKeyring".to_owned(),
            action: "baton:GetSecretKeyring".to_owned(),
            note: Default::default(),
            ..caller.clone()
        };
        let mut carried = Vec::new();
        for w in changed.iter_mut().filter(|w| w.deleted != Some(true)) {
            let Some(secret_id) = &w.secret_id else {
                continue;
            };
            if let Ok((keyring, _, _)) = self.read_keyring(&reader, secret_id).await {
                carried.push(secret_id.clone());
                w.keyring = Some(keyring);
            }
        }
        if !carried.is_empty() {
            self.add_to_reason(
                caller,
                &format!(
                    "answered with the keyrings of {} (baton:GetSecretKeyring)",
                    carried.join(",")
                ),
            );
        }
    }

    /// Records the holdings a watch brings (what the consumer installed from its previous
    /// answer) as `baton.ReportConsumer` would, authorized for `baton:ReportConsumer` with a
    /// note of its own. It never fails the watch: a holding that cannot be recorded (a version
    /// deleted since, a denial, a consumer reported by another principal) is named in the
    /// watch's audit entry, and the consumer's heartbeat reports it, or fails, on its own.
    async fn record_watch_holdings(
        &self,
        caller: &Caller,
        identity: (&str, &str),
        lease: i64,
        holdings: &[p::ConsumerHolding],
    ) {
        let reporter = Caller {
            operation: "ReportConsumer".to_owned(),
            action: "baton:ReportConsumer".to_owned(),
            note: Default::default(),
            ..caller.clone()
        };
        let report = match self
            .holdings_report(&reporter, identity, lease, holdings)
            .await
        {
            Ok(report) => report,
            Err(e) => {
                self.add_to_reason(caller, &format!("its holdings were not recorded: {e}"));
                return;
            }
        };
        let writes = report
            .records
            .into_iter()
            .zip(&report.names)
            .zip(&report.kick)
            .map(|((record, named), kick)| self.record_consumer(record, named, kick.as_deref()));
        let outcomes = futures_util::future::join_all(writes).await;
        let mut recorded = Vec::new();
        for (named, outcome) in report.names.iter().zip(outcomes) {
            match outcome {
                Ok(()) => recorded.push(named.as_str()),
                Err(e) => self.add_to_reason(
                    caller,
                    &format!("its holding of {named} was not recorded: {e}"),
                ),
            }
        }
        if !recorded.is_empty() {
            self.add_to_reason(
                caller,
                &format!(
                    "recorded the holdings of {} (baton:ReportConsumer)",
                    recorded.join(",")
                ),
            );
        }
    }

    /// Appends a clause to the reason the caller's audit entry gives.
    fn add_to_reason(&self, caller: &Caller, clause: &str) {
        if let Ok(mut note) = caller.note.lock() {
            note.reason = format!("{}; {clause}", note.reason);
        }
    }
}

fn gone(w: &p::WatchedSecret) -> p::WatchedSecret {
    p::WatchedSecret {
        secret_id: w.secret_id.clone(),
        arn: None,
        revision: None,
        deleted: Some(true),
        keyring: None,
    }
}

//! Rotation of secrets: starting, cancelling and resuming a rotation, its policy, and how a
//! rotation is described.

use super::*;

/// Checks RotationRules with the schedule parser that the engine uses, so what is accepted is
/// exactly what can run.
pub(crate) fn check_rotation_rules(rules: &p::RotationRules) -> Result<RotationRules, ApiError> {
    if let Some(days) = rules.automatically_after_days
        && !(1..=1000).contains(&days)
    {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value '{days}' at 'rotationRules.automaticallyAfterDays' \
             failed to satisfy constraint: Member must have value between 1 and 1000"
        )));
    }
    let rules = RotationRules {
        automatically_after_days: rules.automatically_after_days,
        duration: rules.duration.clone(),
        schedule_expression: rules.schedule_expression.clone(),
    };
    baton_core::schedule::Schedule::parse(&rules)?;
    Ok(rules)
}

/// The rotation policy PutRotationPolicy asks for, checked.
pub(crate) fn rotation_policy_from(
    req: &p::PutRotationPolicyRequest,
) -> Result<baton_core::rotation::RotationPolicy, ApiError> {
    const WEEK_SECONDS: i64 = 7 * 86_400;
    let seconds_in = |value: Option<i64>, member: &str, default_ms: i64| -> Result<i64, ApiError> {
        match value {
            None => Ok(default_ms),
            Some(v) if (0..=WEEK_SECONDS).contains(&v) => Ok(v * 1000),
            Some(v) => Err(ApiError::InvalidParameter(format!(
                "{member} must be between 0 and {WEEK_SECONDS} seconds, got {v}."
            ))),
        }
    };
    let defaults = baton_core::rotation::RotationPolicy::default();
    let attempts = match req.max_attempts {
        None => defaults.step_attempts_max,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::InvalidParameter(format!(
                "MaxAttempts must be between 1 and 100, got {n}."
            )));
        }
    };
    let blackouts = req
        .blackout_windows
        .iter()
        .flatten()
        .map(|w| {
            baton_core::rotation::Blackout::parse(w).ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "Blackout window '{w}' is invalid: use HH:MM-HH:MM in UTC, start and end \
                         different (it may wrap past midnight)."
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = baton_core::rotation::RotationPolicy {
        propagation_delay_ms: seconds_in(
            req.propagation_delay_seconds,
            "PropagationDelaySeconds",
            defaults.propagation_delay_ms,
        )?,
        gate_wait_max_ms: seconds_in(
            req.max_gate_wait_seconds,
            "MaxGateWaitSeconds",
            defaults.gate_wait_max_ms,
        )?,
        retire_grace_ms: seconds_in(
            req.retire_grace_seconds,
            "RetireGraceSeconds",
            defaults.retire_grace_ms,
        )?,
        step_attempts_max: attempts,
        blackouts,
        kill_sessions_after_max_wait: req.kill_sessions_after_max_wait.unwrap_or(false),
        ..defaults
    };
    Ok(policy)
}

/// Sets a secret's (or key's) rotation policy: the schedule and the rotation in flight follow it.
pub(crate) fn apply_rotation_policy(
    secret: &mut SecretRecord,
    policy: &baton_core::rotation::RotationPolicy,
    now: baton_core::Timestamp,
) {
    secret.rotation_policy = Some(policy.clone());
    if secret.rotation.next_rotation_at.is_some() {
        // New blackouts may move the scheduled time.
        let last = secret.rotation.last_rotated_at.unwrap_or(secret.created_at);
        secret.rotation.next_rotation_at = baton_engine::plan_next_rotation(secret, last, now);
    }
    if let Some(state) = secret.rotation_state.as_mut() {
        // The engine applies the new policy at its next drive.
        state.machine.policy = policy.clone();
        state.compute_due_at(now);
    }
}

/// DescribeRotation's answer for a secret or a KMS key's keyring.
pub(crate) fn rotation_description(
    arn: String,
    secret: &SecretRecord,
) -> p::DescribeRotationResponse {
    let policy = secret.rotation_policy.clone().unwrap_or_default();
    let wire_policy = p::RotationPolicy {
        propagation_delay_seconds: Some(policy.propagation_delay_ms / 1000),
        max_gate_wait_seconds: Some(policy.gate_wait_max_ms / 1000),
        retire_grace_seconds: Some(policy.retire_grace_ms / 1000),
        max_attempts: Some(i64::from(policy.step_attempts_max)),
        blackout_windows: Some(policy.blackouts.iter().map(ToString::to_string).collect()),
        kill_sessions_after_max_wait: Some(policy.kill_sessions_after_max_wait),
    };
    let mut response = p::DescribeRotationResponse {
        arn: Some(arn),
        name: Some(secret.name.clone()),
        policy: Some(wire_policy),
        ..Default::default()
    };
    if let Some(state) = &secret.rotation_state {
        use baton_core::rotation::Status;
        let m = &state.machine;
        let reason = match &m.status {
            Status::Stopped { step, reason } => {
                Some(format!("step {} failed: {reason}", step.as_str()))
            }
            _ => None,
        };
        let status = status_name(&m.status);
        response.phase = Some(m.phase.as_str().to_owned());
        response.status = Some(status.to_owned());
        response.status_reason = reason;
        response.version_id = Some(m.version_id.clone());
        response.old_version_id = m.old_version_id.clone();
        response.next_wake_date = state.due_at.map(seconds);
        response.timeline = Some(wire_timeline(state));
        if let Some(gate) = m.waiting_gate().filter(|_| m.status == Status::Running) {
            let name = match gate {
                baton_core::rotation::Gate::Propagation => "propagation",
                baton_core::rotation::Gate::Drain => "drain",
            };
            response.waiting_gate = Some(name.to_owned());
            response.gate_waited_seconds = Some(seconds(now_ms() - m.phase_started_at));
            let prefix = format!("{name} gate waiting: ");
            response.gate_reason = state
                .timeline
                .iter()
                .rev()
                .take_while(|e| !e.event.starts_with("phase "))
                .find_map(|e| e.event.strip_prefix(&prefix).map(str::to_owned));
        }
    }
    response
}

impl Baton {
    /// Records rotation settings and, unless RotateImmediately is false, starts a rotation that
    /// the engine drives through its phases. Only built-in rotators run so far; for any other
    /// function an immediate rotation is refused rather than pretended.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        req: p::RotateSecretRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let rules = req
            .rotation_rules
            .as_ref()
            .map(check_rotation_rules)
            .transpose()?;
        if let Some(token) = &req.client_request_token {
            baton_core::validate_client_request_token(token)?;
        }
        let immediately = req.rotate_immediately.unwrap_or(true);
        let token = token_or_new(&req.client_request_token)?;
        let secret_id = required(&req.secret_id, "secretId")?;
        // Whether the function is a registered external rotator (a read outside the write).
        let lambda_in_use = match &req.rotation_lambda_arn {
            Some(lambda) => Some(lambda.clone()),
            None => {
                self.find_primary(caller, secret_id)
                    .await?
                    .rotation
                    .lambda_arn
            }
        };
        if let Some(lambda) = &lambda_in_use
            && baton_engine::is_database_rotator(lambda)
        {
            self.authorize_database_master(caller, secret_id).await?;
        }
        let registered = match &lambda_in_use {
            Some(lambda) if !baton_engine::is_builtin(lambda) => {
                let name = baton_engine::rotator_name(lambda);
                self.is_command_rotator(name)? || self.store.find_rotator(name).await?.is_some()
            }
            _ => false,
        };
        let now = now_ms();
        let (started, secret) = self
            .update(caller, secret_id, |secret, _| {
                secret.ensure_not_deleted()?;
                let lambda = req
                    .rotation_lambda_arn
                    .clone()
                    .or_else(|| secret.rotation.lambda_arn.clone())
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(
                            "No Lambda rotation function ARN is associated with this secret."
                                .to_owned(),
                        )
                    })?;
                // A retried RotateSecret with the token of the rotation in flight succeeds.
                if immediately
                    && secret
                        .rotation_state
                        .as_ref()
                        .is_some_and(|s| s.machine.version_id == token && !s.machine.is_finished())
                {
                    return Ok(Outcome::Unchanged(true));
                }
                if immediately && !baton_engine::is_builtin(&lambda) && !registered {
                    return Err(ApiError::InvalidRequest(format!(
                        "Baton has no rotation function {}: use the built-in {}, define a \
                             command in the server's configuration, or register a webhook with \
                             `baton rotator create`. Pass RotateImmediately=false to record the \
                             configuration without rotating.",
                        baton_engine::rotator_name(&lambda),
                        baton_engine::RANDOM_ROTATOR
                    )));
                }
                secret.rotation.enabled = true;
                secret.rotation.lambda_arn = Some(lambda);
                // Built-in database rotators act with this principal's right to the master.
                secret.rotation.configured_by = Some(caller.principal.arn.clone());
                if let Some(rules) = &rules {
                    secret.rotation.rules = Some(rules.clone());
                }
                if immediately {
                    baton_engine::start_rotation(secret, token.clone(), now)?;
                }
                let last = if immediately {
                    now
                } else {
                    secret.rotation.last_rotated_at.unwrap_or(secret.created_at)
                };
                secret.rotation.next_rotation_at =
                    baton_engine::plan_next_rotation(secret, last, now);
                secret.last_changed_at = now;
                Ok(Outcome::Changed(immediately))
            })
            .await?;
        if started {
            self.engine_wake.notify_one();
        }
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: started.then_some(token),
        })
    }

    /// Configuring `baton-postgres` or `baton-mysql` on a secret whose value names a master
    /// secret needs the right to read that master, as a Lambda rotation function would need
    /// it: the rotator will act as the master. The check is audited with the request.
    pub(crate) async fn authorize_database_master(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<(), ApiError> {
        let secret = self.find_primary(caller, secret_id).await?;
        let Some(current) = secret.version_with_label(baton_core::AWSCURRENT) else {
            return Ok(());
        };
        if current.kind != SecretValueKind::String {
            return Ok(());
        }
        let data_key = self.stored_data_key(&secret).await?;
        let value = self.open_value(&data_key, &secret, &current.version_id)?;
        let Some(master) = baton_engine::database_master_arn(value.expose()) else {
            return Ok(());
        };
        let reader = caller.acting_as("secretsmanager:GetSecretValue");
        match self.locate(&reader, &master).await {
            Ok(_) => Ok(()),
            Err(ApiError::AccessDenied(why)) => Err(ApiError::AccessDenied(format!(
                "The secret's masterarn names {master}, and the rotator would act as that master \
                 secret: configuring its rotation needs secretsmanager:GetSecretValue on it. {why}"
            ))),
            Err(ApiError::ResourceNotFound(_)) => Err(ApiError::InvalidParameter(format!(
                "The secret's masterarn names {master}, which does not exist."
            ))),
            Err(e) => Err(e),
        }
    }

    /// Disables rotation, and cancels a rotation in flight if it has not been promoted yet.
    pub async fn cancel_rotate_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let now = now_ms();
        let (pending, secret) = self
            .update(
                caller,
                required(&req.secret_id, "secretId")?,
                |secret, _| {
                    secret.ensure_not_deleted()?;
                    secret.rotation.enabled = false;
                    secret.rotation.next_rotation_at = None;
                    secret.last_changed_at = now;
                    let mut pending = None;
                    if let Some(mut state) = secret.rotation_state.take() {
                        if !state.machine.is_finished() {
                            let commands = state
                                .machine
                                .handle(baton_core::rotation::Input::Cancel, now)
                                .map_err(|e| {
                                    ApiError::InvalidRequest(format!(
                                        "The rotation of version {} can't be cancelled: {e}.",
                                        state.machine.version_id
                                    ))
                                })?;
                            for command in commands {
                                match command {
                                    baton_core::rotation::Command::DropPending => {
                                        let version = state.machine.version_id.clone();
                                        baton_core::drop_pending_label(secret, &version, now)?;
                                        pending = Some(version);
                                    }
                                    baton_core::rotation::Command::Record(event) => {
                                        state.record(now, &event)
                                    }
                                    baton_core::rotation::Command::Run(_) => {}
                                }
                            }
                            state.compute_due_at(now);
                        }
                        secret.rotation_state = Some(state);
                    }
                    Ok(Outcome::Changed(pending))
                },
            )
            .await?;
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: pending,
        })
    }

    /// Baton's extension: resumes a rotation that stopped after its retry limit
    /// (`Force: false`), or passes a held gate on an operator's word (`Force: true`).
    pub async fn resume_rotation(
        &self,
        caller: &Caller,
        req: p::ResumeRotationRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        use baton_core::rotation::Input;
        let secret_id = required(&req.secret_id, "secretId")?.to_owned();
        let input = if req.force.unwrap_or(false) {
            Input::ForceAdvance
        } else {
            Input::Retry
        };
        let now = now_ms();
        self.update(caller, &secret_id, |secret, _| {
            let Some(state) = secret.rotation_state.as_mut() else {
                return Err(ApiError::InvalidRequest(
                    "This secret has no rotation to resume.".to_owned(),
                ));
            };
            let commands = state.machine.handle(input.clone(), now).map_err(|e| {
                ApiError::InvalidRequest(format!("Can't resume the rotation: {e}."))
            })?;
            state.record_all(now, &commands);
            // Steps the machine asked for run on the engine's next pass.
            state.due_at = Some(now);
            Ok(Outcome::Changed(()))
        })
        .await?;
        self.wake_engine_and_describe(caller, secret_id).await
    }

    pub(crate) async fn wake_engine_and_describe(
        &self,
        caller: &Caller,
        secret_id: String,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        self.engine_wake.notify_one();
        self.describe_rotation(
            caller,
            p::SecretIdRequest {
                secret_id: Some(secret_id),
                key_id: None,
            },
        )
        .await
    }

    /// Baton's extension: how rotations of a secret wait and retry.
    pub async fn put_rotation_policy(
        &self,
        caller: &Caller,
        req: p::PutRotationPolicyRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        let policy = rotation_policy_from(&req)?;
        if let Some(key_id) = &req.key_id {
            return self.put_key_rotation_policy(caller, key_id, policy).await;
        }
        let secret_id = required(&req.secret_id, "secretId")?.to_owned();
        let now = now_ms();
        self.update(caller, &secret_id, |secret, _| {
            secret.ensure_not_deleted()?;
            apply_rotation_policy(secret, &policy, now);
            Ok(Outcome::Changed(()))
        })
        .await?;
        self.wake_engine_and_describe(caller, secret_id).await
    }

    /// Baton's extension: the rotation in flight (or the last one), its timeline, and the policy.
    pub async fn describe_rotation(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        if let Some(key_id) = &req.key_id {
            let key = self.key_for(caller, key_id, &caller.action).await?;
            return Ok(rotation_description(key.secret.arn.clone(), &key.secret));
        }
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        Ok(rotation_description(located.arn(), &located.secret))
    }

    /// Baton's extension: a secret's rotations, newest first, each with its timeline.
    pub async fn list_rotations(
        &self,
        caller: &Caller,
        req: p::ListRotationsRequest,
    ) -> Result<p::ListRotationsResponse, ApiError> {
        let max_results = req.max_results.unwrap_or(20);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        let history = self
            .store
            .rotation_history(&located.secret.id, max_results as u32)
            .await?;
        Ok(p::ListRotationsResponse {
            arn: Some(located.arn()),
            name: Some(located.secret.name.clone()),
            rotations: Some(
                history
                    .iter()
                    .map(|state| p::RotationSummary {
                        version_id: Some(state.machine.version_id.clone()),
                        old_version_id: state.machine.old_version_id.clone(),
                        phase: Some(state.machine.phase.as_str().to_owned()),
                        status: Some(status_name(&state.machine.status).to_owned()),
                        started_date: Some(seconds(state.machine.started_at)),
                        timeline: Some(wire_timeline(state)),
                    })
                    .collect(),
            ),
        })
    }
}

/// The most rotations one `baton.ListOpenRotations` answer describes.
const OPEN_ROTATIONS_MAX: i64 = 10_000;
/// The furthest ahead `baton.ListOpenRotations` looks for scheduled rotations: a year.
const SCHEDULED_WITHIN_MAX_SECONDS: i64 = 366 * 86_400;

/// The live reporting consumers that hold a waiting gate: those that do not hold what the
/// rotation's next phase needs, judged as the engine judges them (only versions the secret has
/// count).
pub(crate) fn gate_holders(
    secret: &SecretRecord,
    consumers: &[baton_store::ConsumerRecord],
    now: baton_core::Timestamp,
) -> Vec<p::ConsumerIdentity> {
    let Some(state) = &secret.rotation_state else {
        return Vec::new();
    };
    let exists = |v: &&String| secret.version(v).is_some();
    consumers
        .iter()
        .filter(|c| c.lease_expires_at > now)
        .filter(|c| {
            let accepted: Vec<String> =
                c.accepted_versions.iter().filter(exists).cloned().collect();
            !state.machine.is_ready(baton_core::rotation::Holding {
                current: c
                    .current_version
                    .as_ref()
                    .filter(exists)
                    .map(String::as_str),
                accepted: &accepted,
            })
        })
        .map(|c| p::ConsumerIdentity {
            application: Some(c.application.clone()),
            instance_id: Some(c.instance_id.clone()),
        })
        .collect()
}

impl Baton {
    /// Baton's extension: every rotation in flight in the caller's namespace (running or
    /// stopped), earliest started first, with the consumers holding each waiting gate; and the
    /// rotations scheduled in the next `ScheduledWithinSeconds`.
    pub async fn list_open_rotations(
        &self,
        caller: &Caller,
        req: p::ListOpenRotationsRequest,
    ) -> Result<p::ListOpenRotationsResponse, ApiError> {
        let max_results = req.max_results.unwrap_or(1_000);
        if !(1..=OPEN_ROTATIONS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {OPEN_ROTATIONS_MAX}"
            )));
        }
        let within = req.scheduled_within_seconds.unwrap_or(86_400);
        if !(0..=SCHEDULED_WITHIN_MAX_SECONDS).contains(&within) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{within}' at 'scheduledWithinSeconds' \
                 failed to satisfy constraint: Member must have value between 0 and \
                 {SCHEDULED_WITHIN_MAX_SECONDS}"
            )));
        }
        let now = now_ms();
        let mut arns = self
            .store
            .open_rotations(&caller.account_id, &caller.region, max_results as u32 + 1)
            .await?;
        let truncated = arns.len() > max_results as usize;
        arns.truncate(max_results as usize);
        let mut rotations = Vec::with_capacity(arns.len());
        for arn in arns {
            // A secret deleted since the listing is simply not shown.
            let Some(secret) = self.store.find_secret_by_arn(&arn).await? else {
                continue;
            };
            let Some(state) = &secret.rotation_state else {
                continue;
            };
            let d = rotation_description(arn, &secret);
            let held_by = match d.waiting_gate {
                Some(_) => {
                    let consumers = self.store.list_consumers(&secret.id).await?;
                    Some(gate_holders(&secret, &consumers, now))
                }
                None => None,
            };
            rotations.push(p::OpenRotation {
                arn: d.arn,
                name: d.name,
                phase: d.phase,
                status: d.status,
                status_reason: d.status_reason,
                version_id: d.version_id,
                started_date: Some(seconds(state.machine.started_at)),
                waiting_gate: d.waiting_gate,
                gate_reason: d.gate_reason,
                gate_waited_seconds: d.gate_waited_seconds,
                alerted: Some(state.machine.alerted),
                held_by,
            });
        }
        let scheduled = self
            .store
            .scheduled_rotations(
                &caller.account_id,
                &caller.region,
                now + within * 1000,
                max_results as u32,
            )
            .await?
            .into_iter()
            .map(|(arn, name, at)| p::ScheduledRotation {
                arn: Some(arn),
                name: Some(name),
                next_rotation_date: Some(seconds(at)),
            })
            .collect();
        Ok(p::ListOpenRotationsResponse {
            rotations: Some(rotations),
            scheduled: Some(scheduled),
            truncated: Some(truncated),
        })
    }
}

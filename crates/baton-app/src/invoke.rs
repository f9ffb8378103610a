//! One operation, served the same way whatever front end asked for it: the AWS JSON protocol
//! over HTTP or the console. The front end authenticates the caller (a SigV4 signature, a
//! console session); [`Baton::invoke`] then refuses work the audit log cannot record, looks the
//! operation up, authorizes it, runs it, refuses an answer that no authorization check
//! covered, and records the audit entry, the metrics and the request log line.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use baton_proto as p;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::now_ms;
use crate::{ApiError, Baton, Caller};

/// Where a request came from, as the audit entry and `aws:` condition keys see it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The TCP peer's address: `aws:SourceIp`.
    pub peer: IpAddr,
    /// Whether the request came over TLS: `aws:SecureTransport`.
    pub secure: bool,
    /// What the request came through, for the audit entry: see [`Origin::user_agent`].
    pub user_agent: String,
}

/// The longest user agent an audit entry keeps.
const USER_AGENT_CHARS_MAX: usize = 256;

impl Origin {
    /// A client's `User-Agent` as the audit log keeps it: printable ASCII only (a header
    /// cannot add lines to a log), at most 256 characters.
    pub fn user_agent(header: &str) -> String {
        header
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(USER_AGENT_CHARS_MAX)
            .collect()
    }
}

/// One request to [`Baton::invoke`].
#[derive(Debug)]
pub struct Request<'a> {
    pub request_id: &'a str,
    /// The operation, as `X-Amz-Target` names it: `secretsmanager.GetSecretValue`,
    /// `TrentService.Encrypt`, `baton.ListRotations`.
    pub target: &'a str,
    /// The JSON request body, or why the front end could not read one.
    pub body: Result<&'a [u8], ApiError>,
    pub origin: Origin,
}

/// Where an operation's authorization happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Against resource `*`, in `dispatch`, before it runs: it acts on no one secret or
    /// principal.
    OnStar,
    /// By the operation itself, on the secret it looks up (`locate`) or the principal it acts
    /// on (`principals.rs`).
    Itself,
}

/// The operations served (their names are the metrics label; anything else is "unknown"), and
/// where each is authorized.
const OPERATIONS: &[(&str, Checked)] = &[
    ("secretsmanager.CreateSecret", Checked::Itself),
    ("secretsmanager.DescribeSecret", Checked::Itself),
    ("secretsmanager.GetSecretValue", Checked::Itself),
    ("secretsmanager.BatchGetSecretValue", Checked::OnStar),
    ("secretsmanager.PutSecretValue", Checked::Itself),
    ("secretsmanager.UpdateSecret", Checked::Itself),
    ("secretsmanager.UpdateSecretVersionStage", Checked::Itself),
    ("secretsmanager.ListSecrets", Checked::OnStar),
    ("secretsmanager.ListSecretVersionIds", Checked::Itself),
    ("secretsmanager.DeleteSecret", Checked::Itself),
    ("secretsmanager.RestoreSecret", Checked::Itself),
    ("secretsmanager.TagResource", Checked::Itself),
    ("secretsmanager.UntagResource", Checked::Itself),
    ("secretsmanager.GetRandomPassword", Checked::OnStar),
    ("secretsmanager.PutResourcePolicy", Checked::Itself),
    ("secretsmanager.GetResourcePolicy", Checked::Itself),
    ("secretsmanager.DeleteResourcePolicy", Checked::Itself),
    ("secretsmanager.ValidateResourcePolicy", Checked::Itself),
    ("secretsmanager.RotateSecret", Checked::Itself),
    ("secretsmanager.CancelRotateSecret", Checked::Itself),
    ("secretsmanager.ReplicateSecretToRegions", Checked::Itself),
    (
        "secretsmanager.RemoveRegionsFromReplication",
        Checked::Itself,
    ),
    ("secretsmanager.StopReplicationToReplica", Checked::Itself),
    ("baton.UpdateSecretVersionStages", Checked::Itself),
    ("baton.GetSecretKeyring", Checked::Itself),
    ("baton.ReportConsumer", Checked::Itself),
    ("baton.ListConsumers", Checked::Itself),
    ("baton.SummarizeSecrets", Checked::Itself),
    ("baton.WatchSecrets", Checked::Itself),
    ("baton.ListEvents", Checked::OnStar),
    ("baton.CreateSubscription", Checked::OnStar),
    ("baton.ListSubscriptions", Checked::OnStar),
    ("baton.DeleteSubscription", Checked::OnStar),
    ("baton.ListDeadLetters", Checked::OnStar),
    ("baton.RedeliverDeadLetters", Checked::OnStar),
    ("baton.PutRotationPolicy", Checked::Itself),
    ("baton.DescribeRotation", Checked::Itself),
    ("baton.ResumeRotation", Checked::Itself),
    ("baton.ListRotations", Checked::Itself),
    ("baton.ListOpenRotations", Checked::OnStar),
    ("baton.CreateRotator", Checked::OnStar),
    ("baton.ListRotators", Checked::OnStar),
    ("baton.DeleteRotator", Checked::OnStar),
    ("baton.CreateAccessKey", Checked::Itself),
    ("baton.ListAccessKeys", Checked::Itself),
    ("baton.DeleteAccessKey", Checked::Itself),
    ("baton.CreatePrincipal", Checked::Itself),
    ("baton.ListPrincipals", Checked::OnStar),
    ("baton.DeletePrincipal", Checked::Itself),
    ("baton.PutPrincipalPolicy", Checked::Itself),
    ("baton.GetPrincipalPolicy", Checked::Itself),
    ("baton.DeletePrincipalPolicy", Checked::Itself),
    ("baton.GetSessionToken", Checked::OnStar),
    ("baton.ListAuditEntries", Checked::OnStar),
    ("baton.VerifyAuditLog", Checked::OnStar),
    ("baton.CreateBackup", Checked::OnStar),
    ("baton.RotateRootKey", Checked::OnStar),
    ("baton.DescribeRootKey", Checked::OnStar),
    ("TrentService.CreateKey", Checked::OnStar),
    ("TrentService.DescribeKey", Checked::Itself),
    ("TrentService.ListKeys", Checked::OnStar),
    ("TrentService.EnableKey", Checked::Itself),
    ("TrentService.DisableKey", Checked::Itself),
    ("TrentService.ScheduleKeyDeletion", Checked::Itself),
    ("TrentService.UpdateKeyDescription", Checked::Itself),
    ("TrentService.CancelKeyDeletion", Checked::Itself),
    ("TrentService.CreateAlias", Checked::Itself),
    ("TrentService.UpdateAlias", Checked::Itself),
    ("TrentService.DeleteAlias", Checked::Itself),
    ("TrentService.ListAliases", Checked::OnStar),
    ("TrentService.TagResource", Checked::Itself),
    ("TrentService.UntagResource", Checked::Itself),
    ("TrentService.ListResourceTags", Checked::Itself),
    ("TrentService.GetKeyPolicy", Checked::Itself),
    ("TrentService.PutKeyPolicy", Checked::Itself),
    ("TrentService.ListKeyPolicies", Checked::Itself),
    ("TrentService.Encrypt", Checked::Itself),
    ("TrentService.Decrypt", Checked::Itself),
    ("TrentService.ReEncrypt", Checked::Itself),
    ("TrentService.GenerateDataKey", Checked::Itself),
    (
        "TrentService.GenerateDataKeyWithoutPlaintext",
        Checked::Itself,
    ),
    ("TrentService.GenerateDataKeyPair", Checked::Itself),
    (
        "TrentService.GenerateDataKeyPairWithoutPlaintext",
        Checked::Itself,
    ),
    ("TrentService.Sign", Checked::Itself),
    ("TrentService.Verify", Checked::Itself),
    ("TrentService.GetPublicKey", Checked::Itself),
    ("TrentService.GenerateMac", Checked::Itself),
    ("TrentService.VerifyMac", Checked::Itself),
    ("TrentService.GenerateRandom", Checked::OnStar),
    ("TrentService.EnableKeyRotation", Checked::Itself),
    ("TrentService.DisableKeyRotation", Checked::Itself),
    ("TrentService.GetKeyRotationStatus", Checked::Itself),
    ("TrentService.RotateKeyOnDemand", Checked::Itself),
    ("TrentService.ListKeyRotations", Checked::Itself),
    ("TrentService.CreateGrant", Checked::Itself),
    ("TrentService.ListGrants", Checked::Itself),
    ("TrentService.ListRetirableGrants", Checked::OnStar),
    ("TrentService.RetireGrant", Checked::Itself),
    ("TrentService.RevokeGrant", Checked::Itself),
];
/// What the request log and the audit entry say about who asked and what was decided.
#[derive(Debug, Default)]
struct Seen {
    access_key_id: String,
    principal: String,
    action: String,
    note: Option<crate::authz::SharedNote>,
    refused_by_audit: bool,
}

/// The IAM action of an operation: `secretsmanager.GetSecretValue` is
/// `secretsmanager:GetSecretValue`, `baton.ListEvents` is `baton:ListEvents`.
fn action_of(target: &str) -> String {
    match target.strip_prefix(p::kms::KMS_TARGET_PREFIX) {
        Some(op) => format!("kms:{op}"),
        None => target.replacen('.', ":", 1),
    }
}

impl Baton {
    /// Serves one request. `authenticate` is awaited only when the audit log can take the
    /// entry; its error (an unknown key, a bad signature, an ended session) is the answer, and
    /// is audited like any other. Every outcome, including a timeout, is audited before it is
    /// returned; in required mode an entry the log cannot take turns the answer into an error.
    pub async fn invoke(
        &self,
        request: Request<'_>,
        authenticate: impl Future<Output = Result<Caller, ApiError>>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ApiError> {
        let started = Instant::now();
        let target = request.target;
        let operation: &'static str = OPERATIONS
            .iter()
            .find(|(op, _)| *op == target)
            .map(|(op, _)| *op)
            .unwrap_or("unknown");
        let mut seen = Seen::default();
        let result = match request.body {
            Err(e) => Err(e),
            Ok(body) => match tokio::time::timeout(
                timeout,
                self.dispatch(&request.origin, authenticate, body, target, &mut seen),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(ApiError::Timeout(format!(
                    "The request did not complete within {timeout:?}."
                ))),
            },
        };
        let result = match &self.audit {
            Some(audit) => {
                // A request refused because the log is failing does not wait on the log.
                let entry =
                    audit_entry(request.request_id, target, &request.origin, &seen, &result);
                match audit.record(entry, !seen.refused_by_audit).await {
                    Ok(()) => result,
                    Err(e) => Err(e),
                }
            }
            None => result,
        };
        let (status, outcome) = match &result {
            Ok(_) => (200, "ok"),
            Err(e) => {
                let (status, error_type, _) = e.wire();
                (status.as_u16(), error_type)
            }
        };
        let elapsed = started.elapsed();
        metrics::counter!("baton_requests_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("baton_request_duration_seconds", "operation" => operation)
            .record(elapsed.as_secs_f64());
        // The access log: off unless the operator asks for it (`baton serve --access-log`),
        // since the audit log already records every request.
        tracing::info!(
            target: "baton::access",
            request_id = %request.request_id,
            operation,
            status,
            outcome,
            access_key_id = %seen.access_key_id,
            principal = %seen.principal,
            latency_us = elapsed.as_micros() as u64,
            "request"
        );
        result
    }

    async fn dispatch(
        &self,
        origin: &Origin,
        authenticate: impl Future<Output = Result<Caller, ApiError>>,
        body: &[u8],
        target: &str,
        seen: &mut Seen,
    ) -> Result<Vec<u8>, ApiError> {
        if let Some(audit) = &self.audit
            && let Err(e) = audit.admit()
        {
            seen.refused_by_audit = true;
            return Err(e);
        }
        let mut caller = authenticate.await?;
        // Each request notes its own decisions: a front end that keeps a caller between
        // requests (a console session) must not carry one request's notes into the next.
        caller.note = crate::authz::SharedNote::default();
        caller.source_ip = Some(origin.peer);
        caller.secure_transport = origin.secure;
        caller.operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        caller.action = action_of(target);
        seen.access_key_id.clone_from(&caller.access_key_id);
        seen.principal.clone_from(&caller.principal.arn);
        seen.action.clone_from(&caller.action);
        seen.note = Some(caller.note.clone());
        let Some(&(_, checked)) = OPERATIONS.iter().find(|(op, _)| *op == target) else {
            return Err(if target.is_empty() {
                ApiError::UnknownOperation(
                    "The request has no X-Amz-Target header naming the operation.".to_owned(),
                )
            } else {
                ApiError::UnknownOperation(format!(
                    "Baton does not support the operation {target}."
                ))
            });
        };
        if checked == Checked::OnStar {
            self.authorize(&caller, crate::authz::Target::global(&caller.action))?;
        }
        let result = serve_operation(self, &caller, body, target).await;
        // Fail closed: an operation that succeeded without any authorization check is a bug,
        // and its answer is withheld rather than served unchecked.
        let checked = caller.note.lock().map(|n| n.checked).unwrap_or(false);
        if result.is_ok() && !checked {
            tracing::error!(
                operation = target,
                "operation answered without an authorization check; refusing"
            );
            return Err(ApiError::Internal(format!(
                "{target} was not authorized; the answer is withheld."
            )));
        }
        result
    }
}

fn parse<T: DeserializeOwned>(body: &[u8], target: &str) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // The message names the position and the kind of mismatch, never the offending value,
    // which could be a secret sent in the wrong field.
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            serde_json::error::Category::Data => "has a member of the wrong type",
            serde_json::error::Category::Io => "could not be read",
        };
        ApiError::Serialization(format!(
            "The request body for {target} {what} (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

/// The audit entry of one request: never a value, only who, what, where and the outcome.
fn audit_entry(
    request_id: &str,
    target: &str,
    origin: &Origin,
    seen: &Seen,
    result: &Result<Vec<u8>, ApiError>,
) -> baton_store::AuditRecord {
    let note = seen
        .note
        .as_ref()
        .map(|n| n.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let (outcome, status) = match result {
        Ok(_) => ("ok".to_owned(), 200),
        Err(e) => {
            let (status, error_type, _) = e.wire();
            (error_type.to_owned(), i64::from(status.as_u16()))
        }
    };
    let denied = matches!(result, Err(ApiError::AccessDenied(_)));
    baton_store::AuditRecord {
        at: now_ms(),
        request_id: request_id.to_owned(),
        principal: seen.principal.clone(),
        access_key_id: seen.access_key_id.clone(),
        action: if seen.action.is_empty() {
            action_of(target)
        } else {
            seen.action.clone()
        },
        resource: note.resources.join(","),
        decision: if denied || note.denied && result.is_err() {
            "deny"
        } else if note.checked {
            "allow"
        } else {
            "none"
        }
        .to_owned(),
        outcome,
        status,
        source_ip: origin.peer.to_string(),
        user_agent: origin.user_agent.clone(),
        reason: note.reason,
        ..Default::default()
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("serializing response: {e}")))
}

async fn serve_operation(
    baton: &Baton,
    caller: &crate::Caller,
    body: &[u8],
    target: &str,
) -> Result<Vec<u8>, ApiError> {
    let c = caller;
    macro_rules! op {
        ($f:ident) => {
            to_json(&baton.$f(c, parse(body, target)?).await?)
        };
    }
    match target {
        "secretsmanager.CreateSecret" => op!(create_secret),
        "secretsmanager.DescribeSecret" => op!(describe_secret),
        "secretsmanager.GetSecretValue" => op!(get_secret_value),
        "secretsmanager.BatchGetSecretValue" => op!(batch_get_secret_value),
        "secretsmanager.PutSecretValue" => op!(put_secret_value),
        "secretsmanager.UpdateSecret" => op!(update_secret),
        "secretsmanager.UpdateSecretVersionStage" => op!(update_secret_version_stage),
        "secretsmanager.ListSecrets" => op!(list_secrets),
        "secretsmanager.ListSecretVersionIds" => op!(list_secret_version_ids),
        "secretsmanager.DeleteSecret" => op!(delete_secret),
        "secretsmanager.RestoreSecret" => op!(restore_secret),
        "secretsmanager.TagResource" => op!(tag_resource),
        "secretsmanager.UntagResource" => op!(untag_resource),
        "secretsmanager.GetRandomPassword" => {
            to_json(&baton.get_random_password(parse(body, target)?)?)
        }
        "secretsmanager.PutResourcePolicy" => op!(put_resource_policy),
        "secretsmanager.GetResourcePolicy" => op!(get_resource_policy),
        "secretsmanager.DeleteResourcePolicy" => op!(delete_resource_policy),
        "secretsmanager.ValidateResourcePolicy" => op!(validate_resource_policy),
        "secretsmanager.RotateSecret" => op!(rotate_secret),
        "secretsmanager.CancelRotateSecret" => op!(cancel_rotate_secret),
        "secretsmanager.ReplicateSecretToRegions" => op!(replicate_secret_to_regions),
        "secretsmanager.RemoveRegionsFromReplication" => op!(remove_regions_from_replication),
        "secretsmanager.StopReplicationToReplica" => op!(stop_replication_to_replica),
        "baton.UpdateSecretVersionStages" => op!(update_secret_version_stages),
        "baton.GetSecretKeyring" => op!(get_secret_keyring),
        "baton.ReportConsumer" => op!(report_consumer),
        "baton.ListConsumers" => op!(list_consumers),
        "baton.WatchSecrets" => op!(watch_secrets),
        "baton.ListEvents" => op!(list_events),
        "baton.CreateSubscription" => op!(create_subscription),
        "baton.ListSubscriptions" => op!(list_subscriptions),
        "baton.DeleteSubscription" => op!(delete_subscription),
        "baton.ListDeadLetters" => op!(list_dead_letters),
        "baton.RedeliverDeadLetters" => op!(redeliver_dead_letters),
        "baton.PutRotationPolicy" => op!(put_rotation_policy),
        "baton.DescribeRotation" => op!(describe_rotation),
        "baton.ResumeRotation" => op!(resume_rotation),
        "baton.ListRotations" => op!(list_rotations),
        "baton.ListOpenRotations" => op!(list_open_rotations),
        "baton.SummarizeSecrets" => op!(summarize_secrets),
        "baton.CreateRotator" => op!(create_rotator),
        "baton.ListRotators" => to_json(&baton.list_rotators().await?),
        "baton.DeleteRotator" => to_json(&baton.delete_rotator(parse(body, target)?).await?),
        "baton.CreateAccessKey" => op!(create_access_key),
        "baton.ListAccessKeys" => op!(list_access_keys),
        "baton.DeleteAccessKey" => op!(delete_access_key),
        "baton.CreatePrincipal" => op!(create_principal),
        "baton.ListPrincipals" => to_json(&baton.list_principals().await?),
        "baton.DeletePrincipal" => op!(delete_principal),
        "baton.PutPrincipalPolicy" => op!(put_principal_policy),
        "baton.GetPrincipalPolicy" => op!(get_principal_policy),
        "baton.DeletePrincipalPolicy" => op!(delete_principal_policy),
        "baton.GetSessionToken" => op!(get_session_token),
        "baton.ListAuditEntries" => to_json(&baton.list_audit_entries(parse(body, target)?).await?),
        "baton.VerifyAuditLog" => to_json(&baton.verify_audit_log(parse(body, target)?).await?),
        "baton.CreateBackup" => baton.create_backup().await,
        "baton.RotateRootKey" => to_json(&baton.rotate_root_key(parse(body, target)?).await?),
        "baton.DescribeRootKey" => to_json(&baton.describe_root_key(parse(body, target)?).await?),
        "TrentService.CreateKey" => op!(kms_create_key),
        "TrentService.DescribeKey" => op!(kms_describe_key),
        "TrentService.ListKeys" => op!(kms_list_keys),
        "TrentService.EnableKey" => {
            to_json(&baton.kms_set_enabled(c, parse(body, target)?, true).await?)
        }
        "TrentService.DisableKey" => to_json(
            &baton
                .kms_set_enabled(c, parse(body, target)?, false)
                .await?,
        ),
        "TrentService.ScheduleKeyDeletion" => op!(kms_schedule_key_deletion),
        "TrentService.UpdateKeyDescription" => op!(kms_update_key_description),
        "TrentService.CancelKeyDeletion" => op!(kms_cancel_key_deletion),
        "TrentService.CreateAlias" => op!(kms_create_alias),
        "TrentService.UpdateAlias" => op!(kms_update_alias),
        "TrentService.DeleteAlias" => op!(kms_delete_alias),
        "TrentService.ListAliases" => op!(kms_list_aliases),
        "TrentService.TagResource" => op!(kms_tag_resource),
        "TrentService.UntagResource" => op!(kms_untag_resource),
        "TrentService.ListResourceTags" => op!(kms_list_resource_tags),
        "TrentService.GetKeyPolicy" => op!(kms_get_key_policy),
        "TrentService.PutKeyPolicy" => op!(kms_put_key_policy),
        "TrentService.ListKeyPolicies" => op!(kms_list_key_policies),
        "TrentService.Encrypt" => op!(kms_encrypt),
        "TrentService.Decrypt" => op!(kms_decrypt),
        "TrentService.ReEncrypt" => op!(kms_re_encrypt),
        "TrentService.GenerateDataKey" => to_json(
            &baton
                .kms_generate_data_key(c, parse(body, target)?, true)
                .await?,
        ),
        "TrentService.GenerateDataKeyWithoutPlaintext" => to_json(
            &baton
                .kms_generate_data_key(c, parse(body, target)?, false)
                .await?,
        ),
        "TrentService.GenerateDataKeyPair" => to_json(
            &baton
                .kms_generate_data_key_pair(c, parse(body, target)?, true)
                .await?,
        ),
        "TrentService.GenerateDataKeyPairWithoutPlaintext" => to_json(
            &baton
                .kms_generate_data_key_pair(c, parse(body, target)?, false)
                .await?,
        ),
        "TrentService.Sign" => op!(kms_sign),
        "TrentService.Verify" => op!(kms_verify),
        "TrentService.GetPublicKey" => op!(kms_get_public_key),
        "TrentService.GenerateMac" => op!(kms_generate_mac),
        "TrentService.VerifyMac" => op!(kms_verify_mac),
        "TrentService.GenerateRandom" => to_json(&baton.kms_generate_random(parse(body, target)?)?),
        "TrentService.EnableKeyRotation" => op!(kms_enable_key_rotation),
        "TrentService.DisableKeyRotation" => op!(kms_disable_key_rotation),
        "TrentService.GetKeyRotationStatus" => op!(kms_get_key_rotation_status),
        "TrentService.RotateKeyOnDemand" => op!(kms_rotate_key_on_demand),
        "TrentService.CreateGrant" => op!(kms_create_grant),
        "TrentService.ListGrants" => op!(kms_list_grants),
        "TrentService.ListRetirableGrants" => op!(kms_list_retirable_grants),
        "TrentService.RetireGrant" => op!(kms_retire_grant),
        "TrentService.RevokeGrant" => op!(kms_revoke_grant),
        "TrentService.ListKeyRotations" => op!(kms_list_key_rotations),
        other => Err(ApiError::UnknownOperation(format!(
            "Baton does not support the operation {other}."
        ))),
    }
}

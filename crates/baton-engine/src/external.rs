//! External rotators: commands and webhooks that receive AWS's rotation event and act on the
//! secret through the API with a temporary key scoped to it, as a Lambda rotation function
//! does with its execution role.

use std::time::Duration;

use baton_core::rotation::{Rotation, Step};
use baton_core::{AWSCURRENT, AWSPENDING, NewVersion, SecretRecord, SecretValueKind, Timestamp};
use baton_crypto::SecretBytes;
use baton_store::{RotatorRecord, RotatorTarget};
use serde_json::Value;

use crate::{Endpoint, Engine, now_ms, promote_labels, retire_labels, rotator_name};

/// How long the temporary key of one external step stays valid.
const TEMPORARY_KEY_TTL_MS: Timestamp = 15 * 60_000;

/// The rotation event an AWS rotation function receives, and its `Step` names.
fn aws_step_name(step: Step) -> Option<&'static str> {
    match step {
        Step::Create => Some("createSecret"),
        Step::Set => Some("setSecret"),
        Step::Test => Some("testSecret"),
        Step::Promote => Some("finishSecret"),
        // AWS functions know no retire step; the engine removes AWSPREVIOUS itself.
        Step::Retire => None,
    }
}

/// What one step of an external rotator is given.
struct StepCall<'a> {
    rotator: &'a RotatorRecord,
    secret: &'a SecretRecord,
    aws_step: &'a str,
    endpoint: &'a Endpoint,
    key_id: &'a str,
    key_secret: &'a TemporarySecret,
    session_token: &'a TemporarySecret,
    expires_at: Timestamp,
}

impl Engine {
    /// Runs one step of an external rotator: the command gets the AWS rotation event on
    /// standard input and a temporary key that may act only on this secret. Afterwards the
    /// secret is read again (the rotator wrote through the API) and the engine's part of the
    /// step is applied to that fresh copy.
    pub(crate) async fn perform_external(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        step: Step,
        now: Timestamp,
        fence: &baton_store::Fence,
    ) -> Result<SecretRecord, String> {
        let name = secret
            .rotation
            .lambda_arn
            .as_deref()
            .map(rotator_name)
            .unwrap_or_default();
        let rotator = self
            .store
            .find_rotator(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("no rotator named {name:?} is registered (baton rotator create)")
            })?;
        if step == Step::Create {
            self.create_empty_pending_version(secret, rotation, now, fence)
                .await?;
        }
        if let Some(aws_step) = aws_step_name(step) {
            self.run_rotator_step(&rotator, secret, rotation, aws_step, now)
                .await?;
        }
        let mut fresh = self
            .store
            .find_secret_by_arn(&secret.arn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the secret was deleted during its rotation".to_owned())?;
        fresh.rotation_state = None;
        match step {
            Step::Create => {
                let stored = fresh.version(&rotation.version_id).is_some_and(|v| {
                    v.kind != SecretValueKind::Empty
                        && (v.labels.contains(AWSPENDING) || v.labels.contains(AWSCURRENT))
                });
                if !stored {
                    return Err(format!(
                        "the rotator's createSecret did not store version {} as AWSPENDING",
                        rotation.version_id
                    ));
                }
                Ok(fresh)
            }
            Step::Set | Step::Test => Ok(fresh),
            Step::Promote => promote_labels(&mut fresh, rotation, now).map(|()| fresh),
            Step::Retire => retire_labels(&mut fresh, rotation, now).map(|()| fresh),
        }
    }

    /// As AWS does before createSecret: the new version exists, labelled AWSPENDING, with no
    /// value yet; the rotator's PutSecretValue with the same token fills it.
    async fn create_empty_pending_version(
        &self,
        secret: &SecretRecord,
        rotation: &Rotation,
        now: Timestamp,
        fence: &baton_store::Fence,
    ) -> Result<(), String> {
        let mut fresh = self
            .store
            .find_secret_by_arn(&secret.arn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the secret was deleted during its rotation".to_owned())?;
        if fresh.version(&rotation.version_id).is_some() {
            return Ok(());
        }
        fresh
            .add_version(
                NewVersion {
                    version_id: rotation.version_id.clone(),
                    kind: SecretValueKind::Empty,
                    sealed_value: Vec::new(),
                    labels: Some(vec![AWSPENDING.to_owned()]),
                },
                now,
            )
            .map_err(|e| e.to_string())?;
        self.store
            .save_secret_fenced(&fresh, fence)
            .await
            .map_err(|e| format!("could not store the pending version: {e}"))?;
        Ok(())
    }

    /// Runs one AWS step at the rotator with a temporary key that may act only on this secret,
    /// and deletes the key afterwards (it would expire by itself in any case).
    async fn run_rotator_step(
        &self,
        rotator: &RotatorRecord,
        secret: &SecretRecord,
        rotation: &Rotation,
        aws_step: &str,
        now: Timestamp,
    ) -> Result<(), String> {
        let endpoint = self
            .endpoint
            .clone()
            .ok_or_else(|| "external rotators need the server's endpoint".to_owned())?;
        let (key_id, key_secret, session_token) =
            self.issue_temporary_key(&secret.arn, now).await?;
        let event = serde_json::json!({
            "Step": aws_step,
            "SecretId": secret.arn,
            "ClientRequestToken": rotation.version_id,
        });
        let timeout = Duration::from_millis(rotator.timeout_ms.max(1) as u64);
        let call = StepCall {
            rotator,
            secret,
            aws_step,
            endpoint: &endpoint,
            key_id: &key_id,
            key_secret: &key_secret,
            session_token: &session_token,
            expires_at: now + TEMPORARY_KEY_TTL_MS,
        };
        let result = match &rotator.target {
            RotatorTarget::Command(command) => {
                tokio::time::timeout(timeout, run_command(command, &call, event)).await
            }
            RotatorTarget::Webhook {
                url,
                sealed_signing_secret,
            } => {
                let signing_secret = self
                    .root_key
                    .open(
                        sealed_signing_secret,
                        &baton_crypto::signing_secret_aad(&rotator.name),
                    )
                    .map_err(|e| format!("rotator {}: signing secret: {e}", rotator.name));
                match signing_secret {
                    Ok(signing_secret) => {
                        tokio::time::timeout(
                            timeout,
                            self.call_webhook(url, &signing_secret, &call, event),
                        )
                        .await
                    }
                    Err(e) => Ok(Err(e)),
                }
            }
        }
        .unwrap_or_else(|_| {
            Err(format!(
                "rotator {} did not finish its {aws_step} step within {timeout:?}",
                rotator.name
            ))
        });
        if let Err(e) = self.store.delete_access_key(&key_id).await {
            tracing::warn!(error = %e, "could not delete a rotation's temporary key; it expires by itself");
        }
        result
    }

    /// POSTs the event, signed, with the temporary credentials and the endpoint under `Baton`
    /// (a webhook has no environment to receive them in). A 2xx answer is success. Redirects
    /// are not followed, so the credentials go nowhere but the registered URL.
    async fn call_webhook(
        &self,
        url: &str,
        signing_secret: &SecretBytes,
        call: &StepCall<'_>,
        mut event: serde_json::Value,
    ) -> Result<(), String> {
        event["Baton"] = serde_json::json!({
            "Endpoint": call.endpoint.url,
            "Region": call.secret.region,
            "Credentials": {
                "AccessKeyId": call.key_id,
                "SecretAccessKey": call.key_secret.expose_str(),
                "SessionToken": call.session_token.expose_str(),
                "Expiration": call.expires_at / 1000,
            },
        });
        let body = SecretBytes::from(serde_json::to_vec(&event).map_err(|e| e.to_string())?);
        if let Some(Value::Object(baton)) = event.get_mut("Baton")
            && let Some(Value::Object(credentials)) = baton.get_mut("Credentials")
        {
            for field in ["SecretAccessKey", "SessionToken"] {
                if let Some(Value::String(s)) = credentials.get_mut(field) {
                    zeroize::Zeroize::zeroize(s);
                }
            }
        }
        let name = &call.rotator.name;
        let mut request = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("baton/", env!("CARGO_PKG_VERSION")));
        let signed = baton_crypto::webhook::signed_headers(
            signing_secret.expose(),
            now_ms() / 1000,
            body.expose(),
        );
        for (header, value) in signed {
            request = request.header(header, value);
        }
        let response = request
            .body(body.expose().to_vec())
            .send()
            .await
            // reqwest's error names the URL, never the body.
            .map_err(|e| format!("rotator {name}: {} step: {e}", call.aws_step))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            // The answer's body is not recorded: a receiver might echo what it was sent.
            Err(format!(
                "rotator {name} answered its {} step with HTTP {status}",
                call.aws_step
            ))
        }
    }

    /// Temporary credentials valid for `TEMPORARY_KEY_TTL_MS` that may act only on `arn`: a key
    /// and a session token that every request must carry (only its hash is stored).
    async fn issue_temporary_key(
        &self,
        arn: &str,
        now: Timestamp,
    ) -> Result<(String, TemporarySecret, TemporarySecret), String> {
        let mut raw = [0u8; 62];
        baton_crypto::fill_random(&mut raw).map_err(|e| e.to_string())?;
        let mut hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
        raw.fill(0);
        let key_id = format!("BTT{}", &hex[..17]);
        let secret = TemporarySecret(SecretBytes::from(hex[17..60].to_owned()));
        let token = TemporarySecret(SecretBytes::from(format!("bst_{}", &hex[60..])));
        zeroize::Zeroize::zeroize(&mut hex);
        let record = baton_store::AccessKeyRecord {
            sealed_secret: self
                .root_key
                .seal(secret.0.expose(), &baton_crypto::access_key_aad(&key_id))
                .map_err(|e| e.to_string())?,
            access_key_id: key_id.clone(),
            user_name: "rotation".to_owned(),
            created_at: now,
            scope_arn: Some(arn.to_owned()),
            expires_at: Some(now + TEMPORARY_KEY_TTL_MS),
            session_token_hash: Some(baton_crypto::sha256(token.0.expose())),
        };
        self.store
            .insert_access_key(&record)
            .await
            .map_err(|e| e.to_string())?;
        Ok((key_id, secret, token))
    }
}

/// Runs the command by `sh -c` with the event on standard input, the endpoint and the temporary
/// key in its environment, and none of the server's AWS_* or BATON_* variables.
async fn run_command(
    command_line: &str,
    call: &StepCall<'_>,
    event: serde_json::Value,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let name = &call.rotator.name;
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(command_line)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy().into_owned();
        if var.starts_with("AWS_") || var.starts_with("BATON_") {
            command.env_remove(&var);
        }
    }
    command
        .env("AWS_ENDPOINT_URL", &call.endpoint.url)
        .env("AWS_REGION", &call.secret.region)
        .env("AWS_DEFAULT_REGION", &call.secret.region)
        .env("AWS_ACCESS_KEY_ID", call.key_id)
        .env("AWS_SECRET_ACCESS_KEY", call.key_secret.expose_str())
        .env("AWS_SESSION_TOKEN", call.session_token.expose_str());
    if let Some(ca) = &call.endpoint.ca_bundle {
        command.env("AWS_CA_BUNDLE", ca);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start rotator {name}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input closes the pipe; its exit status, not
        // the failed write, says whether the step succeeded.
        let _ = stdin.write_all(event.to_string().as_bytes()).await;
        drop(stdin);
    }
    // On timeout the caller drops this future, and kill_on_drop ends the child.
    match child.wait().await {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "rotator {name} failed its {} step ({status})",
            call.aws_step
        )),
        Err(e) => Err(format!("rotator {name}: {e}")),
    }
}

/// A temporary key's secret half, wiped on drop.
pub(crate) struct TemporarySecret(SecretBytes);

impl TemporarySecret {
    fn expose_str(&self) -> &str {
        std::str::from_utf8(self.0.expose()).unwrap_or_default()
    }
}

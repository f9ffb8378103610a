//! External rotators: commands and webhooks that receive AWS's rotation event and act on the
//! secret through the API with a temporary key scoped to it, as a Lambda rotation function
//! does with its execution role. Commands are the operator's (`commands.rs`); webhooks may be
//! registered through the API.

use std::time::Duration;

use baton_core::rotation::{Rotation, Step};
use baton_core::{AWSCURRENT, AWSPENDING, NewVersion, SecretRecord, SecretValueKind, Timestamp};
use baton_crypto::SecretBytes;
use baton_store::{RotatorRecord, RotatorTarget};
use serde_json::Value;

use crate::commands::CommandRotator;
use crate::{Endpoint, Engine, now_ms, outbound, promote_labels, retire_labels, rotator_name};

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

/// An external rotator, found by name.
enum External {
    Command(CommandRotator),
    Webhook(RotatorRecord),
}

/// What one step of an external rotator is given.
struct StepCall<'a> {
    name: &'a str,
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
        let rotator = self.find_external(name).await?;
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

    /// The rotator named `name`: an operator's command, or a webhook registered through the API.
    /// A command registered through the API (before commands became the operator's) does not
    /// run until the operator confirms it.
    async fn find_external(&self, name: &str) -> Result<External, String> {
        if let Some(command) = self.command_rotators.find(name)? {
            return Ok(External::Command(command));
        }
        match self
            .store
            .find_rotator(name)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(record) if matches!(record.target, RotatorTarget::Webhook { .. }) => {
                Ok(External::Webhook(record))
            }
            Some(_) => Err(format!(
                "rotator {name:?} is a command registered through the API, which Baton no longer \
                 runs: commands run with the server's privileges, so they come from the \
                 operator. Review it and confirm it with `baton migrate-command-rotators \
                 --confirm {name}`"
            )),
            None => Err(format!(
                "no rotator named {name:?}: define a command in the server's configuration or \
                 rotators directory, or register a webhook (baton rotator create)"
            )),
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
        rotator: &External,
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
        let (name, timeout) = match rotator {
            External::Command(c) => (c.name.as_str(), Duration::from_secs(c.timeout_seconds())),
            External::Webhook(r) => (
                r.name.as_str(),
                Duration::from_millis(r.timeout_ms.max(1) as u64),
            ),
        };
        let call = StepCall {
            name,
            secret,
            aws_step,
            endpoint: &endpoint,
            key_id: &key_id,
            key_secret: &key_secret,
            session_token: &session_token,
            expires_at: now + TEMPORARY_KEY_TTL_MS,
        };
        let result = match rotator {
            External::Command(command) => Ok(run_command(command, timeout, &call, event).await),
            External::Webhook(RotatorRecord {
                target: RotatorTarget::Command(_),
                ..
            }) => Ok(Err(StepFailure::bare(format!(
                "rotator {name} is not a webhook"
            )))),
            External::Webhook(
                rotator @ RotatorRecord {
                    target:
                        RotatorTarget::Webhook {
                            url,
                            sealed_signing_secret,
                        },
                    ..
                },
            ) => {
                let signing_secret = self
                    .root_key
                    .open(
                        sealed_signing_secret,
                        &baton_crypto::signing_secret_aad(&rotator.name),
                    )
                    .map_err(|e| {
                        StepFailure::bare(format!("rotator {}: signing secret: {e}", rotator.name))
                    });
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
            Err(StepFailure::bare(format!(
                "rotator {name} did not finish its {aws_step} step within {timeout:?}"
            )))
        });
        if let Err(e) = self.store.delete_access_key(&key_id).await {
            tracing::warn!(error = %e, "could not delete a rotation's temporary key; it expires by itself");
        }
        match result {
            Ok(()) => Ok(()),
            Err(failure) => Err(self
                .explain(
                    failure,
                    secret,
                    rotation,
                    &[&key_secret.0, &session_token.0],
                )
                .await),
        }
    }

    /// A failed step's reason, followed by the end of what it printed with every secret it
    /// could have seen hidden: the secret's current and pending values (and each string field
    /// of a JSON value) and its temporary credentials.
    async fn explain(
        &self,
        failure: StepFailure,
        secret: &SecretRecord,
        rotation: &Rotation,
        credentials: &[&SecretBytes],
    ) -> String {
        if failure.output.iter().all(u8::is_ascii_whitespace) {
            return failure.reason;
        }
        let mut values = Vec::new();
        if let Ok(data_key) = crate::keywrap::data_key(&*self.store, &self.root_key, secret).await {
            let current = secret
                .version_with_label(AWSCURRENT)
                .map(|v| v.version_id.clone());
            let ids = current.into_iter().chain([rotation.version_id.clone()]);
            for id in ids {
                if let Some(v) = secret
                    .version(&id)
                    .filter(|v| v.kind != SecretValueKind::Empty)
                    && let Ok(plain) =
                        data_key.open(&v.sealed_value, &baton_crypto::value_aad(&secret.id, &id))
                {
                    values.push(plain);
                }
            }
        } else {
            // Without the values nothing can be shown safely.
            return format!(
                "{} (its output is withheld: the secret's values could not be read to redact it)",
                failure.reason
            );
        }
        let mut secrets: Vec<&SecretBytes> = values.iter().collect();
        secrets.extend_from_slice(credentials);
        let shown = crate::redact::tail(&failure.output, &secrets);
        format!("{}; its output ended with: {shown}", failure.reason)
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
    ) -> Result<(), StepFailure> {
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
        let body = SecretBytes::from(
            serde_json::to_vec(&event).map_err(|e| StepFailure::bare(e.to_string()))?,
        );
        if let Some(Value::Object(baton)) = event.get_mut("Baton")
            && let Some(Value::Object(credentials)) = baton.get_mut("Credentials")
        {
            for field in ["SecretAccessKey", "SessionToken"] {
                if let Some(Value::String(s)) = credentials.get_mut(field) {
                    zeroize::Zeroize::zeroize(s);
                }
            }
        }
        let name = call.name;
        // What went wrong goes to the server's log; the rotation's timeline, which API callers
        // read, says only that the call failed, so it cannot map the server's network.
        let failed = |detail: String| {
            tracing::warn!(rotator = %name, step = call.aws_step, %detail, "webhook rotator call failed");
            StepFailure::bare(format!(
                "rotator {name}: the {} step's webhook call failed (details in the server log)",
                call.aws_step
            ))
        };
        outbound::check_url(url, self.allow_private_webhooks).map_err(failed)?;
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
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The receiver answered (a public address, or a private one the operator allowed): its
        // answer is kept, its end only, and redacted by the caller (it might echo the
        // credentials it was sent).
        let mut output = crate::redact::Tail::default();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            output.push(&chunk);
        }
        Err(StepFailure {
            reason: format!(
                "rotator {name}: the {} step's webhook answered HTTP {status}",
                call.aws_step
            ),
            output: output.into_bytes(),
        })
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

/// Runs the operator's command with the event on standard input and a clean environment: the
/// endpoint, the region, the temporary key, and what the definition names. It runs in a process
/// group of its own, and the timeout ends the whole group, not only the first process.
async fn run_command(
    rotator: &CommandRotator,
    timeout: Duration,
    call: &StepCall<'_>,
    event: serde_json::Value,
) -> Result<(), StepFailure> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let name = call.name;
    rotator
        .check_executable()
        .map_err(|e| StepFailure::bare(format!("rotator {name} refused: {e}")))?;
    let mut command = tokio::process::Command::new(&rotator.command[0]);
    command
        .args(&rotator.command[1..])
        .env_clear()
        .envs(&rotator.env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
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
        .map_err(|e| StepFailure::bare(format!("could not start rotator {name}: {e}")))?;
    // Standard error is read as it comes, keeping its end, so a chatty command never blocks.
    let stderr = child.stderr.take().map(|mut pipe| {
        tokio::spawn(async move {
            let mut kept = crate::redact::Tail::default();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.push(&buf[..n]);
            }
            kept.into_bytes()
        })
    });
    let group = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    // Whatever the outcome, nothing the step started outlives it.
    let end_group = || {
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input closes the pipe; its exit status, not
        // the failed write, says whether the step succeeded.
        let _ = stdin.write_all(event.to_string().as_bytes()).await;
        drop(stdin);
    }
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    end_group();
    // The group is gone, so the pipe closes; a descendant that escaped it gets a second.
    let output = match stderr {
        Some(reader) => tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let failed = |reason: String| StepFailure {
        reason,
        output: output.clone(),
    };
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(failed(format!(
            "rotator {name} failed its {} step ({status})",
            call.aws_step
        ))),
        Ok(Err(e)) => Err(StepFailure::bare(format!("rotator {name}: {e}"))),
        Err(_) => {
            let _ = child.wait().await;
            Err(failed(format!(
                "rotator {name} did not finish its {} step within {timeout:?}; its processes \
                 were ended",
                call.aws_step
            )))
        }
    }
}

/// Why an external step failed, with what it printed (a command's standard error, a
/// webhook's answer), before redaction.
pub(crate) struct StepFailure {
    reason: String,
    output: Vec<u8>,
}

impl StepFailure {
    fn bare(reason: String) -> Self {
        StepFailure {
            reason,
            output: Vec::new(),
        }
    }
}

/// A temporary key's secret half, wiped on drop.
pub(crate) struct TemporarySecret(SecretBytes);

impl TemporarySecret {
    fn expose_str(&self) -> &str {
        std::str::from_utf8(self.0.expose()).unwrap_or_default()
    }
}

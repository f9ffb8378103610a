//! `baton rotation …`: start, watch, retry, force and cancel rotations, and set their policy.

use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_client::Client;
use baton_proto as p;
use clap::Subcommand;

use crate::connect::OutputFormat;
use crate::output::{date, human_seconds, show, table};

#[derive(Debug, Subcommand)]
pub enum RotationCommand {
    /// Start a rotation now.
    Start {
        secret_id: String,
        /// The rotator: a built-in name such as baton-random. Default: the one configured.
        #[arg(long)]
        rotator: Option<String>,
        /// The new version's id (ClientRequestToken); default: a new UUID.
        #[arg(long)]
        token: Option<String>,
    },
    /// Show the rotation in flight (or the last one): phase, status, what a gate waits for.
    Status {
        secret_id: String,
        /// Follow the rotation live until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Show every rotation of the secret, newest first, with its timeline.
    History { secret_id: String },
    /// Resume a rotation that stopped after its retry limit.
    Retry { secret_id: String },
    /// Pass a gate that lagging consumers hold. This overrides Baton's safety check.
    Advance {
        secret_id: String,
        /// Required: forcing a gate can break consumers that do not yet hold the new value.
        #[arg(long, required = true)]
        force: bool,
    },
    /// Cancel a rotation that has not been promoted, and disable rotation.
    Cancel { secret_id: String },
    /// Set how rotations of this secret wait and retry.
    Configure {
        secret_id: String,
        /// Seconds after which readers that do not report hold the new value (T).
        #[arg(long)]
        propagation_delay: Option<i64>,
        /// Seconds a lagging consumer may hold a gate before an alert.
        #[arg(long)]
        max_gate_wait: Option<i64>,
        /// Seconds signatures made with the old value stay in use after everyone switched.
        #[arg(long)]
        retire_grace: Option<i64>,
        /// Attempts of a step before the rotation stops safely.
        #[arg(long)]
        max_attempts: Option<i64>,
        /// A daily UTC window with no promotion or retirement, HH:MM-HH:MM; repeatable. Given,
        /// it replaces the windows; `--no-blackouts` removes them all.
        #[arg(long = "blackout", conflicts_with = "no_blackouts")]
        blackouts: Vec<String>,
        /// Remove every blackout window.
        #[arg(long)]
        no_blackouts: bool,
        /// Database rotators: end the old user's sessions once the maximum gate wait passed
        /// (otherwise retire waits and alerts). `--kill-sessions false` turns it off.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        kill_sessions: Option<bool>,
        /// Start from the defaults instead of the stored policy: settings not given are reset.
        #[arg(long)]
        reset: bool,
    },
}

fn print_rotation(r: &p::DescribeRotationResponse) {
    let Some(phase) = &r.phase else {
        println!(
            "{}: no rotation has run",
            r.name.as_deref().unwrap_or_default()
        );
        return;
    };
    println!(
        "{}: version {} is {} ({}){}",
        r.name.as_deref().unwrap_or_default(),
        r.version_id.as_deref().unwrap_or_default(),
        phase,
        r.status.as_deref().unwrap_or_default(),
        r.status_reason
            .as_ref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    if let Some(last) = r.timeline.as_ref().and_then(|t| t.last()) {
        println!("  latest: {}", last.event.as_deref().unwrap_or_default());
    }
    if let Some(progress) = gate_progress(r) {
        println!("  {progress}");
    }
    if let Some(wake) = r.next_wake_date {
        println!("  next step at {}", date(Some(wake)));
    }
}

/// "the propagation gate has waited 4 min 20 s (T = 5 min): <what it waits for>".
fn gate_progress(r: &p::DescribeRotationResponse) -> Option<String> {
    let gate = r.waiting_gate.as_deref()?;
    let waited = r.gate_waited_seconds.unwrap_or_default().max(0.0);
    let t = r.policy.as_ref().and_then(|p| p.propagation_delay_seconds);
    Some(format!(
        "the {gate} gate has waited {}{}{}",
        human_seconds(waited),
        t.map(|t| format!(" (T = {})", human_seconds(t as f64)))
            .unwrap_or_default(),
        r.gate_reason
            .as_ref()
            .map(|why| format!(": {why}"))
            .unwrap_or_default()
    ))
}

async fn describe(client: &Client, secret_id: &str) -> anyhow::Result<p::DescribeRotationResponse> {
    describe_target(client, &target(secret_id)).await
}

fn target(secret_id: &str) -> p::SecretIdRequest {
    p::SecretIdRequest {
        secret_id: Some(secret_id.to_owned()),
        key_id: None,
    }
}

async fn describe_target(
    client: &Client,
    target: &p::SecretIdRequest,
) -> anyhow::Result<p::DescribeRotationResponse> {
    Ok(client.call("baton.DescribeRotation", target).await?)
}

/// Follows a rotation until it ends, printing each new timeline line.
/// Follows a rotation until it ends: prints every timeline entry not printed yet (by its time
/// and text, so a bounded timeline dropping old entries cannot hide new ones), and looks again
/// when the engine next will (at least every 5 s, at most every second), not on a fixed tick.
async fn watch(client: &Client, secret_id: &str) -> anyhow::Result<()> {
    watch_target(client, &target(secret_id), &mut |line| println!("{line}")).await
}

/// [`watch`] for a secret or (with `key_id`) a KMS key, with the gate's progress at each look;
/// each line goes to `out`.
pub async fn watch_target(
    client: &Client,
    target: &p::SecretIdRequest,
    out: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let mut printed: std::collections::HashSet<(i64, String)> = std::collections::HashSet::new();
    let mut last_progress = String::new();
    loop {
        let r = describe_target(client, target).await?;
        for entry in r.timeline.iter().flatten() {
            let text = entry.event.clone().unwrap_or_default();
            let key = (
                (entry.date.unwrap_or_default() * 1000.0) as i64,
                text.clone(),
            );
            if printed.insert(key) {
                out(&format!("{}  {text}", date(entry.date)));
            }
        }
        if let Some(progress) = gate_progress(&r)
            && progress != last_progress
        {
            out(&format!("    {progress}"));
            last_progress = progress;
        }
        match r.status.as_deref() {
            Some("InProgress") => {
                let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
                let wait = r
                    .next_wake_date
                    .map_or(WATCH_LOOK_MAX_SECONDS, |wake| wake - now)
                    .clamp(WATCH_LOOK_MIN_SECONDS, WATCH_LOOK_MAX_SECONDS);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
            None => {
                out("no rotation has run");
                return Ok(());
            }
            Some(other) => {
                out(&format!("rotation {other}"));
                return Ok(());
            }
        }
    }
}

/// How often `--watch` looks at a rotation, at most and at least.
const WATCH_LOOK_MIN_SECONDS: f64 = 1.0;
const WATCH_LOOK_MAX_SECONDS: f64 = 5.0;

pub async fn run(
    client: Client,
    format: OutputFormat,
    command: RotationCommand,
) -> anyhow::Result<()> {
    match command {
        RotationCommand::Start {
            secret_id,
            rotator,
            token,
        } => {
            let rotation_lambda_arn = match rotator {
                Some(name) => {
                    let d: p::DescribeSecretResponse = client
                        .call(
                            "secretsmanager.DescribeSecret",
                            &p::SecretIdRequest {
                                secret_id: Some(secret_id.clone()),
                                key_id: None,
                            },
                        )
                        .await?;
                    let arn = d.arn.unwrap_or_default();
                    let parts: Vec<&str> = arn.split(':').collect();
                    if parts.len() < 5 {
                        bail!("unexpected ARN {arn}");
                    }
                    Some(format!(
                        "arn:aws:lambda:{}:{}:function:{name}",
                        parts[3], parts[4]
                    ))
                }
                None => None,
            };
            let r: p::ArnNameVersionResponse = client
                .call(
                    "secretsmanager.RotateSecret",
                    &p::RotateSecretRequest {
                        secret_id: Some(secret_id),
                        client_request_token: token,
                        rotation_lambda_arn,
                        rotation_rules: None,
                        rotate_immediately: Some(true),
                    },
                )
                .await?;
            show(format, &r, |r| {
                let name = r.name.as_deref().unwrap_or_default();
                println!(
                    "rotation of {name} started: new version {}; follow it with `baton rotation status {name} --watch`",
                    r.version_id.as_deref().unwrap_or_default()
                )
            })
        }
        RotationCommand::Status {
            secret_id,
            watch: true,
        } => watch(&client, &secret_id).await,
        RotationCommand::Status { secret_id, .. } => {
            let r = describe(&client, &secret_id).await?;
            show(format, &r, print_rotation)
        }
        RotationCommand::History { secret_id } => {
            let r: p::ListRotationsResponse = client
                .call(
                    "baton.ListRotations",
                    &p::ListRotationsRequest {
                        secret_id: Some(secret_id),
                        max_results: Some(100),
                    },
                )
                .await?;
            show(format, &r, |r| {
                for rotation in r.rotations.iter().flatten() {
                    println!(
                        "version {} ({}, started {})",
                        rotation.version_id.as_deref().unwrap_or_default(),
                        rotation.status.as_deref().unwrap_or_default(),
                        date(rotation.started_date)
                    );
                    table(
                        &["When", "Event"],
                        rotation
                            .timeline
                            .iter()
                            .flatten()
                            .map(|e| vec![date(e.date), e.event.clone().unwrap_or_default()])
                            .collect(),
                    );
                }
            })
        }
        RotationCommand::Retry { secret_id } => {
            let r: p::DescribeRotationResponse = client
                .call(
                    "baton.ResumeRotation",
                    &p::ResumeRotationRequest {
                        secret_id: Some(secret_id),
                        force: Some(false),
                    },
                )
                .await?;
            show(format, &r, print_rotation)
        }
        RotationCommand::Advance { secret_id, force } => {
            let r: p::DescribeRotationResponse = client
                .call(
                    "baton.ResumeRotation",
                    &p::ResumeRotationRequest {
                        secret_id: Some(secret_id),
                        force: Some(force),
                    },
                )
                .await?;
            show(format, &r, print_rotation)
        }
        RotationCommand::Cancel { secret_id } => {
            let r: p::ArnNameVersionResponse = client
                .call(
                    "secretsmanager.CancelRotateSecret",
                    &p::SecretIdRequest {
                        secret_id: Some(secret_id),
                        key_id: None,
                    },
                )
                .await?;
            show(format, &r, |r| match &r.version_id {
                Some(v) => println!("cancelled the rotation to version {v}; rotation is disabled"),
                None => println!("rotation is disabled"),
            })
        }
        RotationCommand::Configure {
            secret_id,
            propagation_delay,
            max_gate_wait,
            retire_grace,
            max_attempts,
            blackouts,
            no_blackouts,
            kill_sessions,
            reset,
        } => {
            // A read-modify-write of the stored policy: a setting not given keeps its value.
            let stored = if reset {
                p::RotationPolicy::default()
            } else {
                let current: p::DescribeRotationResponse = client
                    .call(
                        "baton.DescribeRotation",
                        &p::SecretIdRequest {
                            secret_id: Some(secret_id.clone()),
                            key_id: None,
                        },
                    )
                    .await?;
                current.policy.unwrap_or_default()
            };
            let blackout_windows = if no_blackouts {
                Some(Vec::new())
            } else if blackouts.is_empty() {
                stored.blackout_windows
            } else {
                Some(blackouts)
            };
            let r: p::DescribeRotationResponse = client
                .call(
                    "baton.PutRotationPolicy",
                    &p::PutRotationPolicyRequest {
                        secret_id: Some(secret_id),
                        key_id: None,
                        propagation_delay_seconds: propagation_delay
                            .or(stored.propagation_delay_seconds),
                        max_gate_wait_seconds: max_gate_wait.or(stored.max_gate_wait_seconds),
                        retire_grace_seconds: retire_grace.or(stored.retire_grace_seconds),
                        max_attempts: max_attempts.or(stored.max_attempts),
                        blackout_windows,
                        kill_sessions_after_max_wait: kill_sessions
                            .or(stored.kill_sessions_after_max_wait),
                    },
                )
                .await?;
            show(format, &r, |r| {
                let policy = r.policy.clone().unwrap_or_default();
                table(
                    &["Setting", "Value"],
                    vec![
                        vec![
                            "propagation delay".into(),
                            human_seconds(
                                policy.propagation_delay_seconds.unwrap_or_default() as f64
                            ),
                        ],
                        vec![
                            "max gate wait".into(),
                            human_seconds(policy.max_gate_wait_seconds.unwrap_or_default() as f64),
                        ],
                        vec![
                            "retire grace".into(),
                            human_seconds(policy.retire_grace_seconds.unwrap_or_default() as f64),
                        ],
                        vec![
                            "max attempts".into(),
                            format!("{}", policy.max_attempts.unwrap_or_default()),
                        ],
                        vec![
                            "blackouts (UTC)".into(),
                            policy.blackout_windows.unwrap_or_default().join(", "),
                        ],
                    ],
                )
            })
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RotatorCommand {
    /// Register a webhook that performs each rotation step. It gets AWS's rotation event (Step,
    /// SecretId, ClientRequestToken) and a temporary key for that one secret. Command rotators
    /// are defined by the operator in the server's configuration, not here.
    Create {
        name: String,
        /// POST the event, signed with HMAC-SHA256 (Baton-Signature and Baton-Timestamp
        /// headers), with the endpoint and temporary key under "Baton". A 2xx answer is
        /// success. HTTPS to a public address (others need --allow-private-webhooks on the
        /// server).
        #[arg(long)]
        webhook: String,
        /// How long one step may take (1-900 s, default 30).
        #[arg(long)]
        timeout_seconds: Option<i64>,
        /// An execution policy (an IAM policy JSON file) added to each step's temporary key,
        /// as a Lambda's execution role; for example, read access to the master secret an
        /// alternating-users rotation needs. Needs baton:PassRotatorPolicy.
        #[arg(long, value_name = "FILE")]
        policy: Option<std::path::PathBuf>,
    },
    /// List rotators: the operator's commands and the registered webhooks.
    List,
    /// Delete a rotator.
    Delete { name: String },
}

pub async fn run_rotator(
    client: Client,
    format: OutputFormat,
    command: RotatorCommand,
) -> anyhow::Result<()> {
    match command {
        RotatorCommand::Create {
            name,
            webhook,
            timeout_seconds,
            policy,
        } => {
            let policy_document = policy
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the execution policy {}", path.display()))
                })
                .transpose()?;
            let r: p::Rotator = client
                .call(
                    "baton.CreateRotator",
                    &p::Rotator {
                        name: Some(name),
                        webhook_url: Some(webhook),
                        timeout_seconds,
                        policy_document,
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &r, |r| {
                if let Some(secret) = &r.signing_secret {
                    println!(
                        "signing secret (shown once; give it to the webhook to verify \
                         Baton-Signature): {secret}"
                    );
                }
                println!(
                    "rotator {} registered; use it with RotationLambdaARN \
                     arn:aws:lambda:<region>:<account>:function:{} or `baton rotation start --rotator {}`",
                    r.name.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                )
            })
        }
        RotatorCommand::List => {
            let r: p::ListRotatorsResponse =
                client.call("baton.ListRotators", &p::Empty {}).await?;
            show(format, &r, |r| {
                table(
                    &[
                        "Name", "Kind", "Target", "Timeout", "Policy", "Source", "Created",
                    ],
                    r.rotators
                        .iter()
                        .flatten()
                        .map(|x| {
                            let (kind, target) = match (&x.command, &x.webhook_url) {
                                (Some(command), _) if x.runnable == Some(false) => {
                                    ("command (not run until confirmed)", command.clone())
                                }
                                (Some(command), _) => ("command", command.clone()),
                                (None, Some(url)) => ("webhook", url.clone()),
                                (None, None) => ("", String::new()),
                            };
                            vec![
                                x.name.clone().unwrap_or_default(),
                                kind.to_owned(),
                                target,
                                format!("{}s", x.timeout_seconds.unwrap_or_default()),
                                if x.policy_document.is_some() {
                                    "execution policy"
                                } else {
                                    "-"
                                }
                                .to_owned(),
                                x.source.clone().unwrap_or_default(),
                                date(x.create_date),
                            ]
                        })
                        .collect(),
                )
            })
        }
        RotatorCommand::Delete { name } => {
            let r: p::Empty = client
                .call(
                    "baton.DeleteRotator",
                    &p::RotatorNameRequest {
                        name: Some(name.clone()),
                    },
                )
                .await?;
            show(format, &r, |_| println!("deleted rotator {name}"))
        }
    }
}

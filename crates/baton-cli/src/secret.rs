//! `baton secret …`: thin commands over the signed API.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use baton_client::Client;
use baton_proto as p;
use clap::Subcommand;

use crate::connect::OutputFormat;
use crate::output::{date, show, table};

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret, with a first value if one is given.
    Create {
        name: String,
        #[command(flatten)]
        value: ValueArgs,
        #[arg(long)]
        description: Option<String>,
        /// Tag as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Print a secret's value (AWSCURRENT unless a version or stage is named).
    Get {
        secret_id: String,
        #[arg(long)]
        version_id: Option<String>,
        #[arg(long)]
        stage: Option<String>,
    },
    /// Store a new value as a new version.
    Put {
        secret_id: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Staging label for the new version; repeatable. Default AWSCURRENT.
        #[arg(long = "stage")]
        stages: Vec<String>,
    },
    /// List secrets.
    List {
        /// Only names starting with this prefix.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Include secrets scheduled for deletion.
        #[arg(long)]
        include_deleted: bool,
    },
    /// Show a secret's metadata and versions (never its value).
    Describe { secret_id: String },
    /// Change the description, or store a new current value.
    Update {
        secret_id: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Schedule deletion after a recovery window, or delete at once with --force.
    Delete {
        secret_id: String,
        /// Days before the secret is purged, 7 to 30.
        #[arg(long)]
        recovery_days: Option<i64>,
        /// Delete now, without any chance of recovery.
        #[arg(long, conflicts_with = "recovery_days")]
        force: bool,
    },
    /// Cancel a scheduled deletion.
    Restore { secret_id: String },
    /// Show which Baton clients and agents hold which version, and when plain readers last
    /// read the secret: what rotation gates wait for.
    Consumers { secret_id: String },
    /// List a secret's versions and their labels.
    Versions {
        secret_id: String,
        #[arg(long)]
        include_deprecated: bool,
    },
    /// Move staging labels. Several --move arguments apply in one atomic change.
    Label {
        secret_id: String,
        /// LABEL:FROM:TO, where FROM or TO may be empty (e.g. AWSCURRENT:v1:v2, blue::v3).
        #[arg(long = "move", value_parser = parse_move, required = true)]
        moves: Vec<(String, Option<String>, Option<String>)>,
    },
    /// Add tags (KEY=VALUE) and remove tags (--remove KEY).
    Tag {
        secret_id: String,
        #[arg(value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
}

/// Where a value comes from. Prefer a file or standard input: a value on the command line
/// is visible to other local users and lands in shell history.
#[derive(Debug, clap::Args)]
pub struct ValueArgs {
    /// The value as text (visible in `ps` and shell history; prefer --value-file).
    #[arg(long, conflicts_with_all = ["value_file", "binary_file"])]
    value: Option<String>,
    /// Read the text value from a file, or from standard input with '-'.
    #[arg(long, conflicts_with = "binary_file")]
    value_file: Option<PathBuf>,
    /// Read a binary value from a file, or from standard input with '-'.
    #[arg(long)]
    binary_file: Option<PathBuf>,
}

fn read_source(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the value from standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

impl ValueArgs {
    /// Returns (SecretString, SecretBinary as base64).
    fn read(&self) -> anyhow::Result<(Option<String>, Option<String>)> {
        use base64::Engine as _;
        if let Some(v) = &self.value {
            return Ok((Some(v.clone()), None));
        }
        if let Some(path) = &self.value_file {
            let bytes = read_source(path)?;
            let text = String::from_utf8(bytes)
                .context("the value is not UTF-8 text; store it with --binary-file instead")?;
            return Ok((Some(text), None));
        }
        if let Some(path) = &self.binary_file {
            let bytes = read_source(path)?;
            return Ok((
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ));
        }
        Ok((None, None))
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

type Move = (String, Option<String>, Option<String>);

fn parse_move(s: &str) -> Result<Move, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [label, from, to] = parts[..] else {
        return Err(format!("expected LABEL:FROM:TO, got '{s}'"));
    };
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    if label.is_empty() || (from.is_empty() && to.is_empty()) {
        return Err(format!(
            "'{s}' needs a label and at least one of FROM and TO"
        ));
    }
    Ok((label.to_owned(), opt(from), opt(to)))
}

fn stages_rows(map: &Option<std::collections::BTreeMap<String, Vec<String>>>) -> Vec<Vec<String>> {
    map.iter()
        .flatten()
        .map(|(v, s)| vec![v.clone(), s.join(", ")])
        .collect()
}

pub async fn run_secret(
    client: Client,
    format: OutputFormat,
    command: SecretCommand,
) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create {
            name,
            value,
            description,
            tags,
        } => {
            let (secret_string, secret_binary) = value.read()?;
            let response: p::CreateSecretResponse = client
                .call(
                    "secretsmanager.CreateSecret",
                    &p::CreateSecretRequest {
                        name: Some(name),
                        description,
                        secret_string,
                        secret_binary,
                        tags: (!tags.is_empty()).then(|| {
                            tags.into_iter()
                                .map(|(k, v)| p::Tag {
                                    key: Some(k),
                                    value: Some(v),
                                })
                                .collect()
                        }),
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &response, |r| {
                println!("created {}", r.arn.as_deref().unwrap_or_default());
                if let Some(v) = &r.version_id {
                    println!("version {v} is AWSCURRENT");
                }
            })
        }
        SecretCommand::Get {
            secret_id,
            version_id,
            stage,
        } => {
            let value: p::SecretValue = client
                .call(
                    "secretsmanager.GetSecretValue",
                    &p::GetSecretValueRequest {
                        secret_id: Some(secret_id),
                        version_id,
                        version_stage: stage,
                    },
                )
                .await?;
            show(format, &value, |v| {
                use std::io::Write as _;
                if let Some(s) = &v.secret_string {
                    println!("{s}");
                } else if let Some(b) = &v.secret_binary {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default();
                    let _ = std::io::stdout().write_all(&bytes);
                }
            })
        }
        SecretCommand::Put {
            secret_id,
            value,
            stages,
        } => {
            let (secret_string, secret_binary) = value.read()?;
            if secret_string.is_none() && secret_binary.is_none() {
                bail!("give the new value with --value, --value-file or --binary-file");
            }
            let response: p::PutSecretValueResponse = client
                .call(
                    "secretsmanager.PutSecretValue",
                    &p::PutSecretValueRequest {
                        secret_id: Some(secret_id),
                        secret_string,
                        secret_binary,
                        version_stages: (!stages.is_empty()).then_some(stages),
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &response, |r| {
                println!(
                    "version {} [{}]",
                    r.version_id.as_deref().unwrap_or_default(),
                    r.version_stages.clone().unwrap_or_default().join(", ")
                );
            })
        }
        SecretCommand::List {
            name_prefix,
            include_deleted,
        } => {
            let mut entries = Vec::new();
            let mut next_token = None;
            loop {
                let page: p::ListSecretsResponse = client
                    .call(
                        "secretsmanager.ListSecrets",
                        &p::ListSecretsRequest {
                            include_planned_deletion: Some(include_deleted),
                            next_token: next_token.take(),
                            filters: name_prefix.clone().map(|n| {
                                vec![p::Filter {
                                    key: Some("name".into()),
                                    values: Some(vec![n]),
                                }]
                            }),
                            ..Default::default()
                        },
                    )
                    .await?;
                entries.extend(page.secret_list.unwrap_or_default());
                match page.next_token {
                    Some(t) => next_token = Some(t),
                    None => break,
                }
            }
            let all = p::ListSecretsResponse {
                secret_list: Some(entries),
                next_token: None,
            };
            show(format, &all, |r| {
                table(
                    &["Name", "Description", "Last changed", "Deleted"],
                    r.secret_list
                        .iter()
                        .flatten()
                        .map(|s| {
                            vec![
                                s.name.clone().unwrap_or_default(),
                                s.description.clone().unwrap_or_default(),
                                date(s.last_changed_date),
                                s.deleted_date.map(|d| date(Some(d))).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        SecretCommand::Describe { secret_id } => {
            let d: p::DescribeSecretResponse = client
                .call(
                    "secretsmanager.DescribeSecret",
                    &p::SecretIdRequest {
                        secret_id: Some(secret_id),
                        key_id: None,
                    },
                )
                .await?;
            show(format, &d, |d| {
                table(
                    &["Field", "Value"],
                    vec![
                        vec!["ARN".into(), d.arn.clone().unwrap_or_default()],
                        vec!["Name".into(), d.name.clone().unwrap_or_default()],
                        vec![
                            "Description".into(),
                            d.description.clone().unwrap_or_default(),
                        ],
                        vec!["Created".into(), date(d.created_date)],
                        vec!["Last changed".into(), date(d.last_changed_date)],
                        vec!["Last accessed".into(), date(d.last_accessed_date)],
                        vec!["Deleted".into(), date(d.deleted_date)],
                        vec![
                            "Rotation".into(),
                            if d.rotation_enabled.unwrap_or(false) {
                                "enabled"
                            } else {
                                "disabled"
                            }
                            .into(),
                        ],
                        vec![
                            "Tags".into(),
                            d.tags
                                .iter()
                                .flatten()
                                .map(|t| {
                                    format!(
                                        "{}={}",
                                        t.key.as_deref().unwrap_or_default(),
                                        t.value.as_deref().unwrap_or_default()
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(" "),
                        ],
                    ],
                );
                table(
                    &["Version", "Stages"],
                    stages_rows(&d.version_ids_to_stages),
                );
            })
        }
        SecretCommand::Update {
            secret_id,
            description,
            value,
        } => {
            let (secret_string, secret_binary) = value.read()?;
            let r: p::ArnNameVersionResponse = client
                .call(
                    "secretsmanager.UpdateSecret",
                    &p::UpdateSecretRequest {
                        secret_id: Some(secret_id),
                        description,
                        secret_string,
                        secret_binary,
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &r, |r| {
                println!("updated {}", r.arn.as_deref().unwrap_or_default());
                if let Some(v) = &r.version_id {
                    println!("version {v} is AWSCURRENT");
                }
            })
        }
        SecretCommand::Delete {
            secret_id,
            recovery_days,
            force,
        } => {
            let r: p::DeleteSecretResponse = client
                .call(
                    "secretsmanager.DeleteSecret",
                    &p::DeleteSecretRequest {
                        secret_id: Some(secret_id),
                        recovery_window_in_days: recovery_days,
                        force_delete_without_recovery: force.then_some(true),
                    },
                )
                .await?;
            show(format, &r, |r| {
                if force {
                    println!("deleted {}", r.name.as_deref().unwrap_or_default());
                } else {
                    println!(
                        "{} will be purged at {}; `baton secret restore` cancels",
                        r.name.as_deref().unwrap_or_default(),
                        date(r.deletion_date)
                    );
                }
            })
        }
        SecretCommand::Restore { secret_id } => {
            let r: p::ArnNameResponse = client
                .call(
                    "secretsmanager.RestoreSecret",
                    &p::SecretIdRequest {
                        secret_id: Some(secret_id),
                        key_id: None,
                    },
                )
                .await?;
            show(format, &r, |r| {
                println!("restored {}", r.name.as_deref().unwrap_or_default())
            })
        }
        SecretCommand::Consumers { secret_id } => {
            let r: p::ListConsumersResponse = client
                .call(
                    "baton.ListConsumers",
                    &p::SecretIdRequest {
                        secret_id: Some(secret_id),
                        key_id: None,
                    },
                )
                .await?;
            show(format, &r, |r| {
                let current = r.current_version_id.clone().unwrap_or_default();
                table(
                    &[
                        "Application",
                        "Instance",
                        "Uses",
                        "Accepts new",
                        "Live",
                        "Last seen",
                    ],
                    r.consumers
                        .iter()
                        .flatten()
                        .map(|c| {
                            let uses = c.current_version_id.clone().unwrap_or_default();
                            let marker = if uses == current { " (current)" } else { "" };
                            vec![
                                c.application.clone().unwrap_or_default(),
                                c.instance_id.clone().unwrap_or_default(),
                                format!("{uses}{marker}"),
                                c.accepted_version_ids
                                    .clone()
                                    .unwrap_or_default()
                                    .join(", "),
                                if c.live == Some(true) {
                                    "yes"
                                } else {
                                    "lease ended"
                                }
                                .to_owned(),
                                date(c.last_seen_date),
                            ]
                        })
                        .collect(),
                );
                match r.last_plain_read_date {
                    Some(at) => println!(
                        "last read by a client that does not report: {} (gates wait the propagation delay after it)",
                        date(Some(at))
                    ),
                    None => println!("no client that does not report has read it"),
                }
            })
        }
        SecretCommand::Versions {
            secret_id,
            include_deprecated,
        } => {
            let r: p::ListSecretVersionIdsResponse = client
                .call(
                    "secretsmanager.ListSecretVersionIds",
                    &p::ListSecretVersionIdsRequest {
                        secret_id: Some(secret_id),
                        include_deprecated: Some(include_deprecated),
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &r, |r| {
                table(
                    &["Version", "Stages", "Created"],
                    r.versions
                        .iter()
                        .flatten()
                        .map(|v| {
                            vec![
                                v.version_id.clone().unwrap_or_default(),
                                v.version_stages.clone().unwrap_or_default().join(", "),
                                date(v.created_date),
                            ]
                        })
                        .collect(),
                )
            })
        }
        SecretCommand::Label { secret_id, moves } => {
            let r: p::UpdateSecretVersionStagesResponse = client
                .call(
                    "baton.UpdateSecretVersionStages",
                    &p::UpdateSecretVersionStagesRequest {
                        secret_id: Some(secret_id),
                        moves: Some(
                            moves
                                .into_iter()
                                .map(|(label, from, to)| p::StageMove {
                                    version_stage: Some(label),
                                    remove_from_version_id: from,
                                    move_to_version_id: to,
                                })
                                .collect(),
                        ),
                    },
                )
                .await?;
            show(format, &r, |r| {
                table(
                    &["Version", "Stages"],
                    stages_rows(&r.version_ids_to_stages),
                )
            })
        }
        SecretCommand::Tag {
            secret_id,
            tags,
            remove,
        } => {
            if tags.is_empty() && remove.is_empty() {
                bail!("give tags as KEY=VALUE, or --remove KEY");
            }
            if !tags.is_empty() {
                let _: p::Empty = client
                    .call(
                        "secretsmanager.TagResource",
                        &p::TagResourceRequest {
                            secret_id: Some(secret_id.clone()),
                            tags: Some(
                                tags.into_iter()
                                    .map(|(k, v)| p::Tag {
                                        key: Some(k),
                                        value: Some(v),
                                    })
                                    .collect(),
                            ),
                        },
                    )
                    .await?;
            }
            if !remove.is_empty() {
                let _: p::Empty = client
                    .call(
                        "secretsmanager.UntagResource",
                        &p::UntagResourceRequest {
                            secret_id: Some(secret_id),
                            tag_keys: Some(remove),
                        },
                    )
                    .await?;
            }
            if format == OutputFormat::Json {
                println!("{{}}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_moves_parse_with_optional_ends() {
        assert_eq!(
            parse_move("AWSCURRENT:v1:v2").unwrap(),
            ("AWSCURRENT".into(), Some("v1".into()), Some("v2".into()))
        );
        assert_eq!(
            parse_move("blue::v3").unwrap(),
            ("blue".into(), None, Some("v3".into()))
        );
        assert!(parse_move("blue::").is_err());
        assert!(parse_move("blue").is_err());
    }
}

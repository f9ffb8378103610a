//! `baton admin …` (principals, policies, access keys, session credentials) and
//! `baton audit …` (tail, search, verify).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_client::Client;
use baton_proto as p;
use clap::Subcommand;

use crate::connect::{ConnectArgs, OutputFormat, ServerArgs};
use crate::output::{date, position, show, table};

/// `baton admin …`. Each client command takes the connection flags; `backup` takes them
/// without `--output`, which names its file, and `restore` works on a store, not a server.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage principals: users and services that call Baton.
    Principal {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: PrincipalCommand,
    },
    /// Manage the identity policies attached to principals.
    Policy {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage access keys.
    AccessKey {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: AccessKeyCommand,
    },
    /// Get temporary credentials with your own rights (printed as shell exports).
    SessionToken {
        #[command(flatten)]
        connect: ConnectArgs,
        /// How long they last, 900 to 43200 seconds.
        #[arg(long, default_value_t = 3600)]
        duration_seconds: i64,
    },
    /// Take a consistent backup from the running server: every secret, version, label, key,
    /// principal, policy, rotation, subscription and the audit chain, values sealed as stored.
    Backup {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: crate::backup::BackupArgs,
    },
    /// Restore a backup into an empty store (a new data directory or an empty PostgreSQL
    /// database), with the server stopped. All or nothing.
    Restore(crate::backup::RestoreArgs),
    /// Copy secrets from a Secrets Manager endpoint (AWS, or another Baton): every labelled
    /// version with its labels, tags, description and rotation settings. Safe to run again.
    Import(crate::import::ImportArgs),
    /// Rotate the root key online on every node, and follow it.
    RootKey {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        command: crate::root_key_admin::RootKeyCommand,
    },
}

/// The client operations of `baton admin`, once connected.
#[derive(Debug)]
enum AdminOp {
    Principal(PrincipalCommand),
    Policy(PolicyCommand),
    AccessKey(AccessKeyCommand),
    SessionToken { duration_seconds: i64 },
}

pub async fn dispatch(command: AdminCommand) -> anyhow::Result<()> {
    let (connect, op) = match command {
        AdminCommand::Backup { server, args } => {
            return crate::backup::backup(server.client()?, args).await;
        }
        AdminCommand::Restore(args) => return crate::backup::restore(args).await,
        AdminCommand::Import(args) => return crate::import::run(args).await,
        AdminCommand::RootKey { connect, command } => {
            return crate::root_key_admin::run(connect, command).await;
        }
        AdminCommand::Principal { connect, command } => (connect, AdminOp::Principal(command)),
        AdminCommand::Policy { connect, command } => (connect, AdminOp::Policy(command)),
        AdminCommand::AccessKey { connect, command } => (connect, AdminOp::AccessKey(command)),
        AdminCommand::SessionToken {
            connect,
            duration_seconds,
        } => (connect, AdminOp::SessionToken { duration_seconds }),
    };
    run(connect.client()?, connect.output, op).await
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Create a principal. It may do nothing until a policy is attached.
    Create {
        name: String,
        /// `user` (a person) or `service`.
        #[arg(long, default_value = "user")]
        kind: String,
    },
    /// List principals and their policies.
    List,
    /// Delete a principal with its policies and access keys.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Attach (or replace) a policy: an IAM JSON document from a file, or '-' for stdin.
    Put {
        principal: String,
        policy_name: String,
        #[arg(long)]
        document: PathBuf,
    },
    /// Print a policy's document.
    Get {
        principal: String,
        policy_name: String,
    },
    /// Detach a policy.
    Delete {
        principal: String,
        policy_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Issue a new access key for a principal; its secret is shown this once.
    Create {
        #[arg(long, default_value = "admin")]
        principal: String,
    },
    /// List access keys (never their secrets).
    List {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Delete an access key.
    Delete { access_key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest entries, oldest first; with --follow keep printing new ones.
    Tail {
        /// How many of the newest entries to start with.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        #[arg(long)]
        follow: bool,
    },
    /// Print entries that match every filter given, oldest first.
    Search {
        /// The caller's ARN, exactly.
        #[arg(long)]
        principal: Option<String>,
        /// An action; `*` wildcards allowed (`secretsmanager:Get*`).
        #[arg(long)]
        action: Option<String>,
        /// A resource as the caller named it; `*` wildcards allowed.
        #[arg(long)]
        resource: Option<String>,
        /// `allow`, `deny` or `none`.
        #[arg(long)]
        decision: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Stop after this many matches.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Check the whole chain: exits 1 and names each entry that was edited, removed or moved.
    Verify {
        /// Entries checked per request.
        #[arg(long, default_value_t = 10_000)]
        page: i64,
    },
}

fn read_document(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the policy from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn run(client: Client, format: OutputFormat, command: AdminOp) -> anyhow::Result<()> {
    match command {
        AdminOp::Principal(PrincipalCommand::Create { name, kind }) => {
            let r: p::CreatePrincipalResponse = client
                .call(
                    "baton.CreatePrincipal",
                    &p::CreatePrincipalRequest {
                        name: Some(name),
                        kind: Some(kind),
                    },
                )
                .await?;
            show(format, &r, |r| {
                let p = r.principal.clone().unwrap_or_default();
                println!(
                    "created {} {} ({}); it may do nothing until a policy is attached",
                    p.kind.unwrap_or_default(),
                    p.name.unwrap_or_default(),
                    p.arn.unwrap_or_default()
                );
            })
        }
        AdminOp::Principal(PrincipalCommand::List) => {
            let r: p::ListPrincipalsResponse =
                client.call("baton.ListPrincipals", &p::Empty {}).await?;
            show(format, &r, |r| {
                table(
                    &["Name", "Kind", "ARN", "Policies", "Created"],
                    r.principals
                        .iter()
                        .flatten()
                        .map(|p| {
                            vec![
                                p.name.clone().unwrap_or_default(),
                                p.kind.clone().unwrap_or_default(),
                                p.arn.clone().unwrap_or_default(),
                                p.policy_names.clone().unwrap_or_default().join(", "),
                                date(p.create_date),
                            ]
                        })
                        .collect(),
                )
            })
        }
        AdminOp::Principal(PrincipalCommand::Delete { name }) => {
            let r: p::Empty = client
                .call(
                    "baton.DeletePrincipal",
                    &p::PrincipalNameRequest {
                        principal_name: Some(name.clone()),
                    },
                )
                .await?;
            show(format, &r, |_| {
                println!("deleted principal {name} with its policies and access keys")
            })
        }
        AdminOp::Policy(PolicyCommand::Put {
            principal,
            policy_name,
            document,
        }) => {
            let text = read_document(&document)?;
            let r: p::PutPrincipalPolicyResponse = client
                .call(
                    "baton.PutPrincipalPolicy",
                    &p::PutPrincipalPolicyRequest {
                        principal_name: Some(principal.clone()),
                        policy_name: Some(policy_name.clone()),
                        policy_document: Some(text),
                    },
                )
                .await?;
            for warning in r.warnings.iter().flatten() {
                eprintln!("warning: {warning}");
            }
            show(format, &r, |_| {
                println!("attached policy {policy_name} to {principal}")
            })
        }
        AdminOp::Policy(PolicyCommand::Get {
            principal,
            policy_name,
        }) => {
            let r: p::GetPrincipalPolicyResponse = client
                .call(
                    "baton.GetPrincipalPolicy",
                    &p::PrincipalPolicyRequest {
                        principal_name: Some(principal),
                        policy_name: Some(policy_name),
                    },
                )
                .await?;
            show(format, &r, |r| {
                println!("{}", r.policy_document.clone().unwrap_or_default())
            })
        }
        AdminOp::Policy(PolicyCommand::Delete {
            principal,
            policy_name,
        }) => {
            let r: p::Empty = client
                .call(
                    "baton.DeletePrincipalPolicy",
                    &p::PrincipalPolicyRequest {
                        principal_name: Some(principal.clone()),
                        policy_name: Some(policy_name.clone()),
                    },
                )
                .await?;
            show(format, &r, |_| {
                println!("detached policy {policy_name} from {principal}")
            })
        }
        AdminOp::AccessKey(AccessKeyCommand::Create { principal }) => {
            let r: p::CreateAccessKeyResponse = client
                .call(
                    "baton.CreateAccessKey",
                    &p::CreateAccessKeyRequest {
                        principal_name: Some(principal),
                        user_name: None,
                    },
                )
                .await?;
            show(format, &r, |r| {
                let key = r.access_key.clone().unwrap_or_default();
                println!("Access key created. The secret is shown this once; store it now.");
                println!(
                    "AWS_ACCESS_KEY_ID={}",
                    key.access_key_id.unwrap_or_default()
                );
                println!(
                    "AWS_SECRET_ACCESS_KEY={}",
                    key.secret_access_key.unwrap_or_default()
                );
            })
        }
        AdminOp::AccessKey(AccessKeyCommand::List { principal }) => {
            let r: p::ListAccessKeysResponse = client
                .call(
                    "baton.ListAccessKeys",
                    &p::ListAccessKeysRequest {
                        principal_name: principal,
                    },
                )
                .await?;
            show(format, &r, |r| {
                table(
                    &["Access key id", "Principal", "Created"],
                    r.access_keys
                        .iter()
                        .flatten()
                        .map(|k| {
                            vec![
                                k.access_key_id.clone().unwrap_or_default(),
                                k.principal_name.clone().unwrap_or_default(),
                                date(k.create_date),
                            ]
                        })
                        .collect(),
                )
            })
        }
        AdminOp::AccessKey(AccessKeyCommand::Delete { access_key_id }) => {
            let r: p::Empty = client
                .call(
                    "baton.DeleteAccessKey",
                    &p::DeleteAccessKeyRequest {
                        access_key_id: Some(access_key_id.clone()),
                    },
                )
                .await?;
            show(format, &r, |_| {
                println!("deleted access key {access_key_id}")
            })
        }
        AdminOp::SessionToken { duration_seconds } => {
            let r: p::GetSessionTokenResponse = client
                .call(
                    "baton.GetSessionToken",
                    &p::GetSessionTokenRequest {
                        duration_seconds: Some(duration_seconds),
                    },
                )
                .await?;
            show(format, &r, |r| {
                let c = r.credentials.clone().unwrap_or_default();
                println!(
                    "export AWS_ACCESS_KEY_ID={}",
                    c.access_key_id.unwrap_or_default()
                );
                println!(
                    "export AWS_SECRET_ACCESS_KEY={}",
                    c.secret_access_key.unwrap_or_default()
                );
                println!(
                    "export AWS_SESSION_TOKEN={}",
                    c.session_token.unwrap_or_default()
                );
                println!("# expires {}", date(c.expiration));
            })
        }
    }
}

/// Where `audit tail --follow` is in each chain. Each chain commits in its own order, so
/// reading every chain after its position never passes over an entry, while a position in
/// `seq` can pass over one that commits a moment after a later entry from another node.
#[derive(Default)]
struct ChainPositions(std::collections::HashMap<String, i64>);

impl ChainPositions {
    fn pass(&mut self, chain: &str, position: i64) {
        let at = self.0.entry(chain.to_owned()).or_insert(0);
        *at = (*at).max(position);
    }

    fn pass_entry(&mut self, e: &p::AuditEntry) {
        self.pass(
            e.chain.as_deref().unwrap_or_default(),
            e.chain_seq.unwrap_or(0),
        );
    }

    /// Every entry committed after the positions: the shared chain's, with every chain's
    /// end, then each chain that has grown (a chain registered since starts from its start).
    async fn poll(&mut self, client: &Client) -> anyhow::Result<Vec<p::AuditEntry>> {
        let mut new = Vec::new();
        let mut grown = vec![String::new()];
        let mut include_chains = Some(true);
        while let Some(chain) = grown.pop() {
            loop {
                let request = p::ListAuditEntriesRequest {
                    after_seq: Some(self.0.get(&chain).copied().unwrap_or(0)),
                    chain: Some(chain.clone()),
                    include_chains: include_chains.take(),
                    max_results: Some(1000),
                    ..Default::default()
                };
                let r: p::ListAuditEntriesResponse =
                    client.call("baton.ListAuditEntries", &request).await?;
                for end in r.chains.unwrap_or_default() {
                    let (name, last) = (end.chain.unwrap_or_default(), end.last_seq.unwrap_or(0));
                    if !name.is_empty() && last > self.0.get(&name).copied().unwrap_or(0) {
                        grown.push(name);
                    }
                }
                for e in r.entries.unwrap_or_default() {
                    self.pass_entry(&e);
                    new.push(e);
                }
                if r.next_seq.is_none() {
                    break;
                }
            }
        }
        Ok(new)
    }
}

fn print_entry(format: OutputFormat, e: &p::AuditEntry) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(e)?),
        OutputFormat::Table => println!(
            "{:>8} {} {:<5} {:<24} {} {} from {} by {}{}",
            e.seq.unwrap_or_default(),
            date(e.time),
            e.decision.clone().unwrap_or_default(),
            e.action.clone().unwrap_or_default(),
            e.resource
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "-".into()),
            e.outcome.clone().unwrap_or_default(),
            e.source_ip.clone().unwrap_or_default(),
            e.principal
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "(unauthenticated)".into()),
            e.reason
                .clone()
                .filter(|r| !r.is_empty())
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default(),
        ),
    }
    Ok(())
}

fn parse_time(text: &Option<String>) -> anyhow::Result<Option<f64>> {
    text.as_ref()
        .map(|t| {
            t.parse::<jiff::Timestamp>()
                .map(|ts| ts.as_millisecond() as f64 / 1000.0)
                .with_context(|| {
                    format!("{t:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z")
                })
        })
        .transpose()
}

pub async fn run_audit(
    client: Client,
    format: OutputFormat,
    command: AuditCommand,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail { lines, follow } => {
            if lines < 0 {
                bail!("--lines must be zero or more");
            }
            // The newest entries by seq; to follow, every chain's end, read before them.
            let mut request = p::ListAuditEntriesRequest {
                after_seq: Some(-lines),
                max_results: Some(lines.clamp(1, 1000)),
                include_chains: follow.then_some(true),
                ..Default::default()
            };
            let mut positions = ChainPositions::default();
            let mut printed = 0;
            loop {
                let r: p::ListAuditEntriesResponse =
                    client.call("baton.ListAuditEntries", &request).await?;
                for end in r.chains.unwrap_or_default() {
                    positions.pass(&end.chain.unwrap_or_default(), end.last_seq.unwrap_or(0));
                }
                for e in r.entries.unwrap_or_default() {
                    if printed < lines {
                        print_entry(format, &e)?;
                        printed += 1;
                    }
                    positions.pass_entry(&e);
                }
                match r.next_seq {
                    Some(next) => {
                        request.after_seq = Some(next);
                        request.max_results = Some(1000);
                        request.include_chains = None;
                    }
                    None => break,
                }
            }
            if !follow {
                return Ok(());
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut new = positions.poll(&client).await?;
                new.sort_by_key(|e| e.seq);
                for e in &new {
                    print_entry(format, e)?;
                }
            }
        }
        AuditCommand::Search {
            principal,
            action,
            resource,
            decision,
            since,
            until,
            limit,
        } => {
            // `GetSecretValue` means `secretsmanager:GetSecretValue`, as a person would expect;
            // an action with a service prefix or a wildcard is used as given.
            let action = action.map(|a| {
                if a.contains(':') || a.contains('*') {
                    a
                } else if a.starts_with(char::is_uppercase) {
                    format!("*:{a}")
                } else {
                    a
                }
            });
            let mut request = p::ListAuditEntriesRequest {
                after_seq: Some(0),
                max_results: Some(1000),
                principal,
                action,
                resource,
                decision,
                since: parse_time(&since)?,
                until: parse_time(&until)?,
                ..Default::default()
            };
            let mut found = 0;
            loop {
                let r: p::ListAuditEntriesResponse =
                    client.call("baton.ListAuditEntries", &request).await?;
                for e in r.entries.iter().flatten() {
                    if found == limit {
                        return Ok(());
                    }
                    print_entry(format, e)?;
                    found += 1;
                }
                match r.next_seq {
                    Some(next) => request.after_seq = Some(next),
                    None => {
                        if found == 0 && format == OutputFormat::Table {
                            eprintln!("no entries match");
                        }
                        return Ok(());
                    }
                }
            }
        }
        AuditCommand::Verify { page } => {
            let mut after = 0;
            let mut chain = String::new();
            let mut checked = 0;
            let mut chains = 1;
            let mut problems = Vec::new();
            let mut ends = Vec::new();
            let last_hash = loop {
                let r: p::VerifyAuditLogResponse = client
                    .call(
                        "baton.VerifyAuditLog",
                        &p::VerifyAuditLogRequest {
                            after_seq: Some(after),
                            max_results: Some(page),
                            chain: Some(chain.clone()),
                        },
                    )
                    .await?;
                checked += r.checked.unwrap_or(0);
                after = r.last_seq.unwrap_or(after);
                chain = r.chain.unwrap_or_default();
                chains = r.chains.unwrap_or(chains);
                problems.extend(r.problems.unwrap_or_default());
                ends.extend(r.ends.unwrap_or_default());
                if r.more != Some(true) {
                    break r.last_hash.unwrap_or_default();
                }
                eprintln!(
                    "verified {checked} entries (through {})",
                    position(&chain, after)
                );
            };
            if format == OutputFormat::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "Checked": checked,
                        "Chains": chains,
                        "Chain": chain,
                        "LastSeq": after,
                        "LastHash": last_hash,
                        "Ends": ends,
                        "Problems": problems,
                    })
                );
            } else {
                for problem in &problems {
                    println!(
                        "entry {}: {}",
                        position(
                            problem.chain.as_deref().unwrap_or_default(),
                            problem.seq.unwrap_or_default()
                        ),
                        problem.problem.clone().unwrap_or_default()
                    );
                }
                println!("checked {checked} entries in {chains} chain(s)");
                // The same lines a backup prints, to compare with it.
                for end in &ends {
                    println!(
                        "{}",
                        crate::output::chain_end_line(
                            end.chain.as_deref().unwrap_or_default(),
                            end.last_seq.unwrap_or_default(),
                            end.last_hash.as_deref().unwrap_or_default()
                        )
                    );
                }
            }
            if problems.is_empty() {
                if format == OutputFormat::Table {
                    println!("the audit chain is intact");
                }
                Ok(())
            } else {
                bail!(
                    "the audit log was tampered with: {} problem(s)",
                    problems.len()
                )
            }
        }
    }
}

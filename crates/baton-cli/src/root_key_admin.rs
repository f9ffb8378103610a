//! `baton admin root-key …`: rotate the root key online, follow the rotation, and make a key
//! for sources Baton cannot write (commands, several nodes).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use baton_client::Client;
use baton_crypto::RootKey;
use baton_proto::{DescribeRootKeyRequest, DescribeRootKeyResponse, RotateRootKeyRequest};
use clap::Subcommand;

use crate::connect::ConnectArgs;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum RootKeyCommand {
    /// Start a rotation of the root key: add, wait for every node to hold the new key, promote,
    /// re-wrap everything, wait until nothing is left under the old key, retire it.
    Rotate {
        /// A key the operator has already added to every node's key source (see `generate`).
        /// Without it, a server whose key comes from its root key file makes the key itself.
        #[arg(long)]
        key_id: Option<String>,
        /// Follow the rotation until the old key is retired, showing its progress.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (the rotation goes on).
        #[arg(long, default_value_t = 3600)]
        wait_seconds: u64,
    },
    /// The phase of the root key's rotation, the re-wrap's progress and every node's keys.
    Status,
    /// Make a new root key for a source Baton cannot write (a command's output, the key files
    /// of several nodes): prints its id; add the file's line to every node, then `rotate
    /// --key-id`.
    Generate {
        /// Where to write the key line (created with mode 0600; never printed).
        #[arg(long)]
        output_file: PathBuf,
    },
}

pub async fn run(connect: ConnectArgs, command: RootKeyCommand) -> anyhow::Result<()> {
    match command {
        RootKeyCommand::Generate { output_file } => generate(&output_file),
        RootKeyCommand::Status => {
            let status = describe(&connect.client()?).await?;
            output::show(connect.output, &status, print_status)
        }
        RootKeyCommand::Rotate {
            key_id,
            wait,
            wait_seconds,
        } => {
            let client = connect.client()?;
            let started: DescribeRootKeyResponse = client
                .call("baton.RotateRootKey", &RotateRootKeyRequest { key_id })
                .await?;
            eprintln!(
                "root key rotation started: new key {}",
                started.new_key.as_deref().unwrap_or("?")
            );
            if !wait {
                return output::show(connect.output, &started, print_status);
            }
            let done = follow(&client, Duration::from_secs(wait_seconds)).await?;
            output::show(connect.output, &done, print_status)
        }
    }
}

async fn describe(client: &Client) -> anyhow::Result<DescribeRootKeyResponse> {
    Ok(client
        .call("baton.DescribeRootKey", &DescribeRootKeyRequest {})
        .await?)
}

/// Polls the status every second, printing each change of phase, what it waits for, and the
/// re-wrap's progress, until the phase is `Retired`.
async fn follow(client: &Client, limit: Duration) -> anyhow::Result<DescribeRootKeyResponse> {
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let status = describe(client).await?;
        let phase = status.phase.clone().unwrap_or_default();
        let line = match (phase.as_str(), &status.waiting_for) {
            ("Promoted", _) => format!(
                "Promoted: re-wrapped {}, {} left",
                status.rewrapped_count.unwrap_or(0),
                status.remaining_count.unwrap_or(0)
            ),
            (phase, Some(why)) => format!("{phase}: {why}"),
            (phase, None) => phase.to_owned(),
        };
        if line != last_line {
            eprintln!("[{}] {line}", output::human_duration(started.elapsed()));
            last_line = line;
        }
        if phase == "Retired" {
            return Ok(status);
        }
        if started.elapsed() > limit {
            anyhow::bail!(
                "the rotation is still in phase {phase} after {}; it goes on (baton admin \
                 root-key status)",
                output::human_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_status(s: &DescribeRootKeyResponse) {
    let list = |v: &Option<Vec<String>>| {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| v.join(", "))
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows = vec![
        vec!["Phase".into(), s.phase.clone().unwrap_or_default()],
        vec![
            "Primary key".into(),
            s.primary_key.clone().unwrap_or_default(),
        ],
        vec![
            "New key".into(),
            s.new_key.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["Keys live".into(), list(&s.keys_live)],
        vec!["Retired keys".into(), list(&s.retired_keys)],
        vec![
            "Re-wrapped".into(),
            s.rewrapped_count.unwrap_or(0).to_string(),
        ],
        vec![
            "Remaining".into(),
            s.remaining_count.unwrap_or(0).to_string(),
        ],
        vec!["Started".into(), output::date(s.started_date)],
        vec!["Phase since".into(), output::date(s.phase_date)],
        vec![
            "Waiting for".into(),
            s.waiting_for.clone().unwrap_or_else(|| "-".into()),
        ],
        vec![
            "Key source".into(),
            s.key_source.clone().unwrap_or_default(),
        ],
    ];
    output::table(&["Field", "Value"], rows);
    let nodes = s.nodes.clone().unwrap_or_default();
    if !nodes.is_empty() {
        output::table(
            &[
                "Node",
                "Address",
                "Keys Held",
                "Wraps With",
                "Last Seen",
                "Live",
            ],
            nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node_id.clone().unwrap_or_default(),
                        n.address.clone().unwrap_or_default(),
                        list(&n.keys_held),
                        n.wraps_with.clone().unwrap_or_default(),
                        format!(
                            "{} ago",
                            output::human_seconds(n.seconds_since_heartbeat.unwrap_or(0.0))
                        ),
                        if n.live == Some(true) { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect(),
        );
    }
}

fn generate(path: &std::path::Path) -> anyhow::Result<()> {
    let key = RootKey::generate_bytes()?;
    let id = RootKey::id_of(&key)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(RootKey::to_text(&key).expose())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{id}");
    eprintln!(
        "wrote root key {id} to {}: add its line to every node's key source, then run \
         `baton admin root-key rotate --key-id {id}`",
        path.display()
    );
    Ok(())
}

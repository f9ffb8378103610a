//! `baton events tail`: the event log, as it grows.

use std::time::Duration;

use baton_client::Client;
use baton_proto as p;
use clap::Subcommand;

use crate::connect::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events, oldest first: one line each, or one JSON object per line with
    /// --output json (EventBridge's shape).
    Tail {
        /// Only this secret's events (a name, or an ARN, also of a deleted secret).
        #[arg(long)]
        secret_id: Option<String>,
        /// Keep printing new events as they are recorded, until interrupted.
        #[arg(long)]
        follow: bool,
        /// Start after this position (an event's detail.baton.seq).
        #[arg(long)]
        after: Option<String>,
    },
}

fn summary(event: &serde_json::Value) -> String {
    let detail = &event["detail"];
    let extra = &detail["additionalEventData"];
    let what = match extra["message"].as_str() {
        Some(message) => message.to_owned(),
        None => extra["versionIdsToStages"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(v, s)| format!("{v}={s}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    };
    format!(
        "{}  {:<24} {}  {}",
        event["time"].as_str().unwrap_or_default(),
        detail["eventName"].as_str().unwrap_or_default(),
        detail["baton"]["secretName"].as_str().unwrap_or_default(),
        what
    )
}

pub async fn run(
    client: Client,
    format: OutputFormat,
    command: EventsCommand,
) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        secret_id,
        follow,
        after,
    } = command;
    let mut token = after;
    loop {
        let page: p::ListEventsResponse = client
            .call(
                "baton.ListEvents",
                &p::ListEventsRequest {
                    secret_id: secret_id.clone(),
                    max_results: Some(100),
                    next_token: token.clone(),
                },
            )
            .await?;
        let events = page.events.unwrap_or_default();
        for event in &events {
            match format {
                OutputFormat::Json => println!("{event}"),
                _ => println!("{}", summary(event)),
            }
        }
        token = page.next_token.or(token);
        if events.len() < 100 {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

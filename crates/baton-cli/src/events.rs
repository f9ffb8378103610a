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
    /// Deliver events to a webhook, signed (Baton-Signature, Baton-Timestamp), at least once,
    /// in order. Prints the signing secret once.
    Subscribe {
        url: String,
        /// Only these event names; repeatable.
        #[arg(long = "event-name")]
        event_names: Vec<String>,
        /// Only secrets whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only secrets with this tag, as KEY or KEY=VALUE.
        #[arg(long)]
        tag: Option<String>,
        /// Delivery attempts before an event goes to the dead letters (1-10, default 6).
        #[arg(long)]
        max_attempts: Option<i64>,
    },
    /// List subscriptions.
    Subscriptions,
    /// Delete a subscription.
    Unsubscribe { subscription_id: String },
    /// Events a subscription gave up on.
    DeadLetters {
        #[arg(long)]
        subscription_id: Option<String>,
    },
    /// Send a subscription's dead letters again now.
    Redeliver {
        subscription_id: String,
        /// Only the event with this sequence number.
        #[arg(long)]
        seq: Option<i64>,
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

async fn tail(
    client: Client,
    format: OutputFormat,
    secret_id: Option<String>,
    follow: bool,
    after: Option<String>,
) -> anyhow::Result<()> {
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

pub async fn run(
    client: Client,
    format: OutputFormat,
    command: EventsCommand,
) -> anyhow::Result<()> {
    use crate::output::{show, table};
    match command {
        EventsCommand::Tail {
            secret_id,
            follow,
            after,
        } => tail(client, format, secret_id, follow, after).await,
        EventsCommand::Subscribe {
            url,
            event_names,
            prefix,
            tag,
            max_attempts,
        } => {
            let (tag_key, tag_value) = match tag {
                Some(tag) => match tag.split_once('=') {
                    Some((k, v)) => (Some(k.to_owned()), Some(v.to_owned())),
                    None => (Some(tag), None),
                },
                None => (None, None),
            };
            let r: p::Subscription = client
                .call(
                    "baton.CreateSubscription",
                    &p::Subscription {
                        url: Some(url),
                        event_names: (!event_names.is_empty()).then_some(event_names),
                        secret_name_prefix: prefix,
                        tag_key,
                        tag_value,
                        max_attempts,
                        ..Default::default()
                    },
                )
                .await?;
            show(format, &r, |r| {
                println!(
                    "subscription {} created; signing secret (shown once): {}",
                    r.subscription_id.as_deref().unwrap_or_default(),
                    r.signing_secret.as_deref().unwrap_or_default()
                )
            })
        }
        EventsCommand::Subscriptions => {
            let r: p::ListSubscriptionsResponse =
                client.call("baton.ListSubscriptions", &p::Empty {}).await?;
            show(format, &r, |r| {
                table(
                    &[
                        "Subscription",
                        "URL",
                        "Events",
                        "Prefix",
                        "Delivered through",
                    ],
                    r.subscriptions
                        .iter()
                        .flatten()
                        .map(|s| {
                            vec![
                                s.subscription_id.clone().unwrap_or_default(),
                                s.url.clone().unwrap_or_default(),
                                s.event_names.clone().unwrap_or_default().join(", "),
                                s.secret_name_prefix.clone().unwrap_or_default(),
                                s.delivered_through_seq.unwrap_or_default().to_string(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        EventsCommand::Unsubscribe { subscription_id } => {
            let r: p::Empty = client
                .call(
                    "baton.DeleteSubscription",
                    &p::SubscriptionIdRequest {
                        subscription_id: Some(subscription_id.clone()),
                        seq: None,
                    },
                )
                .await?;
            show(format, &r, |_| {
                println!("deleted subscription {subscription_id}")
            })
        }
        EventsCommand::DeadLetters { subscription_id } => {
            let r: p::ListDeadLettersResponse = client
                .call(
                    "baton.ListDeadLetters",
                    &p::SubscriptionIdRequest {
                        subscription_id,
                        seq: None,
                    },
                )
                .await?;
            show(format, &r, |r| {
                table(
                    &[
                        "Subscription",
                        "Seq",
                        "Event",
                        "Secret",
                        "Attempts",
                        "Last error",
                    ],
                    r.dead_letters
                        .iter()
                        .flatten()
                        .map(|d| {
                            vec![
                                d.subscription_id.clone().unwrap_or_default(),
                                d.seq.unwrap_or_default().to_string(),
                                d.event_name.clone().unwrap_or_default(),
                                d.secret_name.clone().unwrap_or_default(),
                                d.attempts.unwrap_or_default().to_string(),
                                d.last_error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                )
            })
        }
        EventsCommand::Redeliver {
            subscription_id,
            seq,
        } => {
            let r: p::RedeliverResponse = client
                .call(
                    "baton.RedeliverDeadLetters",
                    &p::SubscriptionIdRequest {
                        subscription_id: Some(subscription_id),
                        seq,
                    },
                )
                .await?;
            show(format, &r, |r| {
                println!(
                    "redelivered {}; still failing {}",
                    r.redelivered.unwrap_or_default(),
                    r.still_failing.as_ref().map_or(0, Vec::len)
                )
            })
        }
    }
}

//! The events page: subscriptions with how far each has delivered, the newest events, and
//! dead letters with their redelivery.

use askama::Template;
use baton_app::Baton;
use baton_proto as p;
use serde_json::{Value, json};

use crate::pages::{Bar, api_error_page, bar, date, refusal, render};
use crate::{Console, Response, Signed};

/// Events the page shows, newest first.
const RECENT_EVENTS: i64 = 50;

struct SubscriptionRow {
    id: String,
    url: String,
    filters: String,
    delivered_through: i64,
    behind: i64,
    created: String,
}

struct EventRow {
    seq: i64,
    time: String,
    name: String,
    secret: String,
    /// Subscriptions whose cursor is past this event (delivered, or not matched).
    passed: usize,
}

struct DeadLetterRow {
    subscription: String,
    seq: i64,
    event: String,
    secret: String,
    attempts: i64,
    error: String,
    failed: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    subscriptions: Result<Vec<SubscriptionRow>, String>,
    events: Result<Vec<EventRow>, String>,
    dead_letters: Result<Vec<DeadLetterRow>, String>,
    subscription_count: usize,
    may_redeliver: bool,
    csrf: String,
}

pub(crate) async fn events_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    notice: Option<String>,
) -> Response {
    let head = baton.store.last_event_seq().await.unwrap_or(0);
    let subs: Result<p::ListSubscriptionsResponse, _> = signed
        .call(baton, console, "baton.ListSubscriptions", &json!({}))
        .await;
    let subs = subs.map(|s| s.subscriptions.unwrap_or_default());
    let cursors: Vec<i64> = subs
        .as_ref()
        .map(|s| {
            s.iter()
                .map(|s| s.delivered_through_seq.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let subscriptions = subs
        .map(|list| {
            list.into_iter()
                .map(|s| {
                    let through = s.delivered_through_seq.unwrap_or_default();
                    let mut filters = Vec::new();
                    if let Some(names) = s.event_names.filter(|n| !n.is_empty()) {
                        filters.push(format!("events {}", names.join(", ")));
                    }
                    if let Some(prefix) = s.secret_name_prefix {
                        filters.push(format!("names starting {prefix}"));
                    }
                    if let Some(key) = s.tag_key {
                        filters.push(format!(
                            "tag {key}={}",
                            s.tag_value.unwrap_or_else(|| "*".into())
                        ));
                    }
                    SubscriptionRow {
                        id: s.subscription_id.unwrap_or_default(),
                        url: s.url.unwrap_or_default(),
                        filters: if filters.is_empty() {
                            "every event".to_owned()
                        } else {
                            filters.join("; ")
                        },
                        delivered_through: through,
                        behind: (head - through).max(0),
                        created: date(s.create_date),
                    }
                })
                .collect()
        })
        .map_err(|e| refusal(&e));
    let recent: Result<p::ListEventsResponse, _> = signed
        .call(
            baton,
            console,
            "baton.ListEvents",
            &json!({"NextToken": (head - RECENT_EVENTS).max(0).to_string(),
                    "MaxResults": RECENT_EVENTS}),
        )
        .await;
    let events = recent
        .map(|r| {
            let mut rows: Vec<EventRow> = r
                .events
                .unwrap_or_default()
                .iter()
                .map(|e: &Value| {
                    let seq = e["detail"]["baton"]["seq"].as_i64().unwrap_or_default();
                    EventRow {
                        seq,
                        time: e["time"].as_str().unwrap_or_default().to_owned(),
                        name: e["detail"]["eventName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        secret: e["detail"]["baton"]["secretName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        passed: cursors.iter().filter(|&&c| c >= seq).count(),
                    }
                })
                .collect();
            rows.reverse();
            rows
        })
        .map_err(|e| refusal(&e));
    let dead: Result<p::ListDeadLettersResponse, _> = signed
        .call(baton, console, "baton.ListDeadLetters", &json!({}))
        .await;
    let dead_letters = dead
        .map(|d| {
            d.dead_letters
                .unwrap_or_default()
                .into_iter()
                .map(|d| DeadLetterRow {
                    subscription: d.subscription_id.unwrap_or_default(),
                    seq: d.seq.unwrap_or_default(),
                    event: d.event_name.unwrap_or_default(),
                    secret: d.secret_name.unwrap_or_default(),
                    attempts: d.attempts.unwrap_or_default(),
                    error: d.last_error.unwrap_or_default(),
                    failed: date(d.failed_date),
                })
                .collect()
        })
        .map_err(|e| refusal(&e));
    render(
        EventsPage {
            title: "Events",
            bar: bar(signed),
            notice,
            subscription_count: cursors.len(),
            subscriptions,
            events,
            dead_letters,
            may_redeliver: baton.may(signed.caller(), "baton:RedeliverDeadLetters", "*"),
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

/// Redelivers one dead letter, or all of a subscription's, and says how it went.
pub(crate) async fn redeliver(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    form: &std::collections::HashMap<String, String>,
) -> Response {
    let mut request =
        json!({"SubscriptionId": form.get("subscription").cloned().unwrap_or_default()});
    if let Some(seq) = form.get("seq").and_then(|s| s.parse::<i64>().ok()) {
        request["Seq"] = json!(seq);
    }
    let answer: Result<p::RedeliverResponse, _> = signed
        .call(baton, console, "baton.RedeliverDeadLetters", &request)
        .await;
    match answer {
        Ok(r) => {
            let still = r.still_failing.unwrap_or_default();
            let notice = format!(
                "Redelivered {}; {} still failing{}",
                r.redelivered.unwrap_or_default(),
                still.len(),
                still
                    .first()
                    .and_then(|d| d.last_error.clone())
                    .map(|e| format!(" (the first: {e})"))
                    .unwrap_or_else(|| ".".to_owned())
            );
            events_page(console, baton, signed, Some(notice)).await
        }
        Err(e) => api_error_page(signed, &e),
    }
}

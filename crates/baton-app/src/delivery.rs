//! Webhook delivery of the event log: at least once, in log order per subscription (so in
//! order per secret), signed like webhook rotators (`Baton-Timestamp`, `Baton-Signature`),
//! with bounded exponential backoff and a dead-letter list.
//!
//! Each subscription has a worker task of its own, so a slow or failing endpoint delays only
//! itself, never another subscription nor the rotation engine. A worker advances its cursor
//! only after the events before it were delivered or dead-lettered, once per page of up to 100:
//! a crash in between means those events are sent again, never lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_proto as p;
use baton_store::{DeadLetterRecord, EventRecord, SubscriptionRecord};
use serde::{Deserialize, Serialize};

use crate::ApiError;
use crate::state::{Baton, Caller, now_ms};
use crate::wire::{required, seconds};

const DEFAULT_ATTEMPTS: i64 = 6;
const ATTEMPTS_MAX: i64 = 10;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Workers look for new events at least this often, besides being woken by commits.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Which events a subscription wants; stored as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Filter {
    #[serde(default)]
    event_names: Vec<String>,
    #[serde(default)]
    secret_name_prefix: Option<String>,
    #[serde(default)]
    tag_key: Option<String>,
    #[serde(default)]
    tag_value: Option<String>,
    #[serde(default)]
    max_attempts: Option<i64>,
}

impl Filter {
    /// Whether `e` passes; tags are the secret's tags now (a deleted secret has none).
    async fn matches(&self, baton: &Baton, e: &EventRecord) -> bool {
        if !self.event_names.is_empty() && !self.event_names.contains(&e.event_name) {
            return false;
        }
        if let Some(prefix) = &self.secret_name_prefix
            && !e.secret_name.starts_with(prefix.as_str())
        {
            return false;
        }
        if let Some(key) = &self.tag_key {
            let Ok(Some(secret)) = baton.store.find_secret_by_arn(&e.secret_arn).await else {
                return false;
            };
            return secret
                .tags
                .iter()
                .any(|t| &t.key == key && self.tag_value.as_ref().is_none_or(|v| &t.value == v));
        }
        true
    }
}

fn wire(s: &SubscriptionRecord) -> p::Subscription {
    let filter: Filter = serde_json::from_str(&s.filter).unwrap_or_default();
    p::Subscription {
        subscription_id: Some(s.id.clone()),
        url: Some(s.url.clone()),
        event_names: Some(filter.event_names),
        secret_name_prefix: filter.secret_name_prefix,
        tag_key: filter.tag_key,
        tag_value: filter.tag_value,
        max_attempts: Some(filter.max_attempts.unwrap_or(DEFAULT_ATTEMPTS)),
        signing_secret: None,
        create_date: Some(seconds(s.created_at)),
        delivered_through_seq: Some(s.cursor_seq),
    }
}

/// The authenticated data of a subscription's sealed signing secret.
pub(crate) fn signing_secret_aad(id: &str) -> String {
    baton_crypto::signing_secret_aad(&format!("subscription/{id}"))
}

impl Baton {
    /// `baton.CreateSubscription`: deliveries start with the next event recorded.
    pub async fn create_subscription(
        &self,
        caller: &Caller,
        req: p::Subscription,
    ) -> Result<p::Subscription, ApiError> {
        let url = required(&req.url, "url")?;
        crate::ops::check_webhook_url(url)?;
        let max_attempts = req.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
        if !(1..=ATTEMPTS_MAX).contains(&max_attempts) {
            return Err(ApiError::InvalidParameter(format!(
                "MaxAttempts must be between 1 and {ATTEMPTS_MAX}; got {max_attempts}."
            )));
        }
        if req.tag_value.is_some() && req.tag_key.is_none() {
            return Err(ApiError::InvalidParameter(
                "TagValue needs a TagKey.".to_owned(),
            ));
        }
        // Last, as it resolves the name: the cheap checks answer first.
        self.check_webhook_destination(url).await?;
        let filter = Filter {
            event_names: req.event_names.clone().unwrap_or_default(),
            secret_name_prefix: req.secret_name_prefix.clone(),
            tag_key: req.tag_key.clone(),
            tag_value: req.tag_value.clone(),
            max_attempts: Some(max_attempts),
        };
        let id = format!("sub-{}", uuid::Uuid::new_v4().simple());
        let secret = baton_crypto::webhook::new_signing_secret()?;
        let record = SubscriptionRecord {
            sealed_signing_secret: self
                .root_key
                .seal(secret.expose(), &signing_secret_aad(&id))?,
            id,
            account_id: caller.account_id.clone(),
            region: caller.region.clone(),
            url: url.to_owned(),
            filter: serde_json::to_string(&filter)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            cursor_seq: self.store.last_event_seq().await?,
            created_at: now_ms(),
        };
        self.store.insert_subscription(&record).await?;
        self.delivery_wake.notify_one();
        let mut out = wire(&record);
        out.signing_secret = Some(String::from_utf8_lossy(secret.expose()).into_owned());
        Ok(out)
    }

    async fn own_subscriptions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<SubscriptionRecord>, ApiError> {
        Ok(self
            .store
            .list_subscriptions()
            .await?
            .into_iter()
            .filter(|s| s.account_id == caller.account_id && s.region == caller.region)
            .collect())
    }

    async fn own_subscription(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<SubscriptionRecord, ApiError> {
        self.own_subscriptions(caller)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| ApiError::ResourceNotFound(format!("Baton has no subscription {id}.")))
    }

    pub async fn list_subscriptions(
        &self,
        caller: &Caller,
        _req: p::Empty,
    ) -> Result<p::ListSubscriptionsResponse, ApiError> {
        Ok(p::ListSubscriptionsResponse {
            subscriptions: Some(
                self.own_subscriptions(caller)
                    .await?
                    .iter()
                    .map(wire)
                    .collect(),
            ),
        })
    }

    pub async fn delete_subscription(
        &self,
        caller: &Caller,
        req: p::SubscriptionIdRequest,
    ) -> Result<p::Empty, ApiError> {
        let id = required(&req.subscription_id, "subscriptionId")?;
        self.own_subscription(caller, id).await?;
        self.store.delete_subscription(id).await?;
        self.delivery_wake.notify_one();
        Ok(p::Empty {})
    }

    async fn wire_dead_letter(&self, d: &DeadLetterRecord) -> Result<p::DeadLetter, ApiError> {
        let event = self.store.find_event(d.seq).await?;
        Ok(p::DeadLetter {
            subscription_id: Some(d.subscription_id.clone()),
            seq: Some(d.seq),
            event_name: event.as_ref().map(|e| e.event_name.clone()),
            secret_name: event.map(|e| e.secret_name),
            attempts: Some(d.attempts),
            last_error: Some(d.last_error.clone()),
            failed_date: Some(seconds(d.failed_at)),
        })
    }

    pub async fn list_dead_letters(
        &self,
        caller: &Caller,
        req: p::SubscriptionIdRequest,
    ) -> Result<p::ListDeadLettersResponse, ApiError> {
        let own: Vec<String> = self
            .own_subscriptions(caller)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut out = Vec::new();
        for d in self.store.list_dead_letters().await? {
            let wanted = own.contains(&d.subscription_id)
                && req
                    .subscription_id
                    .as_ref()
                    .is_none_or(|id| *id == d.subscription_id);
            if wanted {
                out.push(self.wire_dead_letter(&d).await?);
            }
        }
        Ok(p::ListDeadLettersResponse {
            dead_letters: Some(out),
        })
    }

    /// `baton.RedeliverDeadLetters`: sends a subscription's dead letters again, now, once each;
    /// those delivered leave the list.
    pub async fn redeliver_dead_letters(
        &self,
        caller: &Caller,
        req: p::SubscriptionIdRequest,
    ) -> Result<p::RedeliverResponse, ApiError> {
        let id = required(&req.subscription_id, "subscriptionId")?;
        let sub = self.own_subscription(caller, id).await?;
        let client = http_client(self);
        let (mut redelivered, mut still) = (0, Vec::new());
        for d in self.store.list_dead_letters().await? {
            if d.subscription_id != sub.id || req.seq.is_some_and(|s| s != d.seq) {
                continue;
            }
            let outcome = match self.store.find_event(d.seq).await? {
                Some(event) => deliver_once(self, &client, &sub, &event).await,
                None => Err("the event is past its retention".to_owned()),
            };
            match outcome {
                Ok(()) => {
                    self.store.delete_dead_letter(&sub.id, d.seq).await?;
                    redelivered += 1;
                }
                Err(e) => {
                    let mut d = d.clone();
                    d.last_error = e;
                    still.push(self.wire_dead_letter(&d).await?);
                }
            }
        }
        Ok(p::RedeliverResponse {
            redelivered: Some(redelivered),
            still_failing: Some(still),
        })
    }
}

fn http_client(baton: &Baton) -> reqwest::Client {
    baton_engine::outbound::client(Some(DELIVERY_TIMEOUT), baton.allow_private_webhooks)
}

/// What API callers see of a failed delivery; the reason goes to the server's log only, so
/// dead letters cannot be used to map the server's network.
const DELIVERY_FAILED: &str = "delivery failed";

/// One signed POST of one event; 2xx is success.
async fn deliver_once(
    baton: &Baton,
    client: &reqwest::Client,
    sub: &SubscriptionRecord,
    event: &EventRecord,
) -> Result<(), String> {
    let failed = |detail: String| {
        tracing::warn!(subscription = %sub.id, seq = event.seq, %detail, "event delivery failed");
        DELIVERY_FAILED.to_owned()
    };
    baton_engine::outbound::check_url(&sub.url, baton.allow_private_webhooks).map_err(failed)?;
    let secret = baton
        .root_key
        .open(&sub.sealed_signing_secret, &signing_secret_aad(&sub.id))
        .map_err(|e| failed(format!("signing secret: {e}")))?;
    let body = serde_json::to_vec(&crate::events::eventbridge(event))
        .map_err(|e| failed(e.to_string()))?;
    let mut request = client
        .post(&sub.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("baton/", env!("CARGO_PKG_VERSION")));
    for (name, value) in
        baton_crypto::webhook::signed_headers(secret.expose(), now_ms() / 1000, &body)
    {
        request = request.header(name, value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(failed(format!("HTTP {}", response.status())))
    }
}

/// One subscription's deliveries, in log order, until aborted.
async fn worker<A: AsRef<Baton> + Send + Sync + 'static>(app: Arc<A>, mut sub: SubscriptionRecord) {
    let baton: &Baton = (*app).as_ref();
    let client = http_client(baton);
    let filter: Filter = serde_json::from_str(&sub.filter).unwrap_or_default();
    let attempts_max = filter.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
    loop {
        let wake = baton.store.changes().any_change();
        let page = match baton.store.list_events(sub.cursor_seq, 100, None).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(subscription = %sub.id, error = %e, "cannot read the event log");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if page.is_empty() {
            let _ = tokio::time::timeout(IDLE_POLL, wake).await;
            continue;
        }
        for event in page {
            let wanted = event.account_id == sub.account_id
                && event.region == sub.region
                && filter.matches(baton, &event).await;
            if wanted {
                let mut backoff = BACKOFF_BASE;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match deliver_once(baton, &client, &sub, &event).await {
                        Ok(()) => break,
                        Err(e) if attempt >= attempts_max => {
                            tracing::warn!(subscription = %sub.id, seq = event.seq, error = %e, "event dead-lettered");
                            let letter = DeadLetterRecord {
                                subscription_id: sub.id.clone(),
                                seq: event.seq,
                                attempts: attempt,
                                last_error: e,
                                failed_at: now_ms(),
                            };
                            if let Err(e) = baton.store.insert_dead_letter(&letter).await {
                                // Not recorded: retry the whole event rather than lose it.
                                tracing::warn!(error = %e, "cannot record a dead letter");
                                tokio::time::sleep(IDLE_POLL).await;
                                attempt = 0;
                                continue;
                            }
                            break;
                        }
                        Err(_) => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            }
            sub.cursor_seq = event.seq;
        }
        // Once per page, not per event: a write per event would cap delivery at the disk's
        // fsync rate. A crash before it sends the page's events again: at least once.
        if let Err(e) = baton
            .store
            .advance_subscription(&sub.id, sub.cursor_seq)
            .await
        {
            tracing::warn!(subscription = %sub.id, error = %e, "cannot save the delivery cursor");
        }
    }
}

/// Keeps one worker per subscription, starting and stopping them as subscriptions come and go.
pub async fn run<A: AsRef<Baton> + Send + Sync + 'static>(
    app: Arc<A>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let baton: &Baton = (*app).as_ref();
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match baton.store.list_subscriptions().await {
            Ok(subs) => {
                workers.retain(|id, task| {
                    let keep = subs.iter().any(|s| &s.id == id) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for sub in subs {
                    if !workers.contains_key(&sub.id) {
                        let id = sub.id.clone();
                        workers.insert(id, tokio::spawn(worker(app.clone(), sub)));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list subscriptions"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = baton.delivery_wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
    for task in workers.values() {
        task.abort();
    }
}

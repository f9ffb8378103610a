//! The event log as AWS's EventBridge events for Secrets Manager: what each change records, and
//! how `baton.ListEvents` renders it. Values never appear: an event names the secret, the
//! operation and the versions with their staging labels.

use baton_core::{NewEvent, SecretRecord};
use baton_proto as p;
use baton_store::EventRecord;

use crate::ApiError;
use crate::state::{Baton, Caller, now_ms};
use crate::wire::required;

const LIST_EVENTS_MAX: u32 = 100;

/// The event of an API change to `secret`: the operation's name, and the versions' staging
/// labels after it.
pub(crate) fn api_event(operation: &str, secret: &SecretRecord) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        at: now_ms(),
        name: operation.to_owned(),
        detail: serde_json::json!({
            "requestParameters": { "secretId": secret.arn },
            "additionalEventData": { "versionIdsToStages": stages(secret) },
        })
        .to_string(),
    }
}

/// The purge of a secret: one `EndSecretVersionDelete` per version, as AWS records it.
pub(crate) fn version_deletion_events(secret: &SecretRecord) -> Vec<NewEvent> {
    secret
        .versions
        .iter()
        .map(|v| NewEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            at: now_ms(),
            name: "EndSecretVersionDelete".to_owned(),
            detail: serde_json::json!({
                "requestParameters": { "secretId": secret.arn },
                "additionalEventData": { "versionId": v.version_id },
            })
            .to_string(),
        })
        .collect()
}

fn stages(secret: &SecretRecord) -> serde_json::Value {
    serde_json::Value::Object(
        secret
            .versions
            .iter()
            .filter(|v| !v.labels.is_empty())
            .map(|v| {
                (
                    v.version_id.clone(),
                    v.labels.iter().cloned().collect::<Vec<_>>().into(),
                )
            })
            .collect(),
    )
}

/// AWS's rotation events are service events; API calls are API calls.
fn detail_type(event_name: &str) -> &'static str {
    if event_name.starts_with("Rotation") || event_name == "EndSecretVersionDelete" {
        "AWS Service Event via CloudTrail"
    } else {
        "AWS API Call via CloudTrail"
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// One event in EventBridge's shape, with Baton's sequence number under `detail.baton`.
pub fn eventbridge(e: &EventRecord) -> serde_json::Value {
    let mut detail: serde_json::Value =
        serde_json::from_str(&e.detail).unwrap_or_else(|_| serde_json::json!({}));
    detail["eventVersion"] = "1.08".into();
    detail["eventSource"] = "secretsmanager.amazonaws.com".into();
    detail["eventName"] = e.event_name.clone().into();
    detail["eventTime"] = rfc3339(e.at).into();
    detail["awsRegion"] = e.region.clone().into();
    detail["eventID"] = e.event_id.clone().into();
    detail["baton"] = serde_json::json!({ "seq": e.seq, "secretName": e.secret_name });
    serde_json::json!({
        "version": "0",
        "id": e.event_id,
        "detail-type": detail_type(&e.event_name),
        "source": "aws.secretsmanager",
        "account": e.account_id,
        "time": rfc3339(e.at),
        "region": e.region,
        "resources": [e.secret_arn],
        "detail": detail,
    })
}

impl Baton {
    /// `baton.ListEvents`: the event log, oldest first, after `NextToken`; of one secret when
    /// `SecretId` is given (also after the secret was deleted, by its ARN).
    pub async fn list_events(
        &self,
        caller: &Caller,
        req: p::ListEventsRequest,
    ) -> Result<p::ListEventsResponse, ApiError> {
        let limit = match req.max_results {
            None => LIST_EVENTS_MAX,
            Some(n) if (1..=i64::from(LIST_EVENTS_MAX)).contains(&n) => n as u32,
            Some(n) => {
                return Err(ApiError::InvalidParameter(format!(
                    "MaxResults must be between 1 and {LIST_EVENTS_MAX}; got {n}."
                )));
            }
        };
        let after = match &req.next_token {
            None => 0,
            Some(token) => token.parse::<i64>().map_err(|_| {
                ApiError::InvalidNextToken("The NextToken is not one ListEvents gave.".to_owned())
            })?,
        };
        let arn = match &req.secret_id {
            None => None,
            Some(id) if id.starts_with("arn:") => Some(id.clone()),
            Some(id) => Some(
                self.find_primary(caller, required(&Some(id.clone()), "secretId")?)
                    .await?
                    .arn,
            ),
        };
        // Callers see their own account's events only.
        let mut events = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store
                .list_events(cursor, limit, arn.as_deref())
                .await?;
            let exhausted = page.len() < limit as usize;
            for e in page {
                cursor = e.seq;
                if e.account_id == caller.account_id && e.region == caller.region {
                    events.push(e);
                }
            }
            if exhausted || events.len() >= limit as usize {
                break;
            }
        }
        events.truncate(limit as usize);
        let next_token = match events.last() {
            Some(last) => last.seq.to_string(),
            None => cursor.to_string(),
        };
        Ok(p::ListEventsResponse {
            events: Some(events.iter().map(eventbridge).collect()),
            next_token: Some(next_token),
        })
    }
}

//! The KMS keys' pages: the list of keys with their aliases, and one key with its versions,
//! rotation and JWKS link; enable, disable and rotate. Every read and write goes through
//! [`Signed::call`], as the AWS API's would.

use std::collections::HashMap;

use askama::Template;
use baton_app::Baton;
use serde_json::{Value, json};

use crate::pages::{Bar, bar, date, encode, refusal, render};
use crate::{Console, PREFIX, Response, Signed};

/// Keys per page of the list: each is one DescribeKey.
const KEYS_PAGE: i64 = 50;
/// Pages of ListAliases read to name every key's aliases.
const ALIAS_PAGES: usize = 20;

struct KeyRow {
    id: String,
    href: String,
    aliases: Vec<String>,
    description: String,
    spec: String,
    usage: String,
    state: String,
    created: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    listing: Result<Vec<KeyRow>, String>,
    next: Option<String>,
}

struct KeyRotation {
    schedule: String,
    next: String,
    in_flight: String,
}

struct KeyVersion {
    id: String,
    made: String,
    kind: String,
    state: String,
}

struct KeyFacts {
    arn: String,
    description: String,
    spec: String,
    usage: String,
    state: String,
    created: String,
    current: String,
    aliases: Vec<String>,
    jwks: Option<String>,
    rotation: Result<KeyRotation, String>,
    versions: Result<Vec<KeyVersion>, String>,
}

#[derive(Template)]
#[template(path = "key.html")]
struct KeyPage {
    title: String,
    bar: Option<Bar>,
    notice: Option<String>,
    id: String,
    href: String,
    described: Result<KeyFacts, String>,
    may_enable: bool,
    may_disable: bool,
    may_rotate: bool,
    csrf: String,
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_owned()
}

pub(crate) fn key_href(id: &str) -> String {
    format!("{PREFIX}/keys/{}", encode(id))
}

/// Every alias of the namespace, by the key it names, as far as `ALIAS_PAGES` pages go.
async fn aliases_by_key(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    key_id: Option<&str>,
) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut request = json!({"Limit": 100});
    if let Some(id) = key_id {
        request["KeyId"] = json!(id);
    }
    for _ in 0..ALIAS_PAGES {
        let answer: Result<Value, _> = signed
            .call(baton, console, "TrentService.ListAliases", &request)
            .await;
        let Ok(page) = answer else { break };
        for alias in page["Aliases"].as_array().into_iter().flatten() {
            if let Some(target) = alias["TargetKeyId"].as_str() {
                out.entry(target.to_owned())
                    .or_default()
                    .push(text(alias, "AliasName"));
            }
        }
        match page["NextMarker"].as_str() {
            Some(marker) if page["Truncated"] == json!(true) => request["Marker"] = json!(marker),
            _ => break,
        }
    }
    out
}

pub(crate) async fn keys_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    query: &HashMap<String, String>,
) -> Response {
    let mut request = json!({"Limit": KEYS_PAGE});
    if let Some(marker) = query.get("next") {
        request["Marker"] = json!(marker);
    }
    let answer: Result<Value, _> = signed
        .call(baton, console, "TrentService.ListKeys", &request)
        .await;
    let mut next = None;
    let listing = match answer {
        Err(e) => Err(refusal(&e)),
        Ok(list) => {
            if list["Truncated"] == json!(true)
                && let Some(marker) = list["NextMarker"].as_str()
            {
                next = Some(format!("{PREFIX}/keys?next={}", encode(marker)));
            }
            let aliases = aliases_by_key(console, baton, signed, None).await;
            let mut rows = Vec::new();
            for key in list["Keys"].as_array().into_iter().flatten() {
                let id = text(key, "KeyId");
                let described: Result<Value, _> = signed
                    .call(
                        baton,
                        console,
                        "TrentService.DescribeKey",
                        &json!({"KeyId": id}),
                    )
                    .await;
                // A key the caller may list but not describe is listed by its id alone.
                let m = described
                    .map(|d| d["KeyMetadata"].clone())
                    .unwrap_or(Value::Null);
                rows.push(KeyRow {
                    href: key_href(&id),
                    aliases: aliases.get(&id).cloned().unwrap_or_default(),
                    description: text(&m, "Description"),
                    spec: text(&m, "KeySpec"),
                    usage: text(&m, "KeyUsage"),
                    state: text(&m, "KeyState"),
                    created: date(m["CreationDate"].as_f64()),
                    id,
                });
            }
            Ok(rows)
        }
    };
    render(
        KeysPage {
            title: "Keys",
            bar: bar(signed),
            notice: None,
            listing,
            next,
        },
        200,
    )
}

pub(crate) async fn key_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    id: &str,
    notice: Option<String>,
) -> Response {
    let on_key = json!({"KeyId": id});
    let described: Result<Value, _> = signed
        .call(baton, console, "TrentService.DescribeKey", &on_key)
        .await;
    let mut arn = String::new();
    let mut state = String::new();
    let described = match described {
        Err(e) => Err(refusal(&e)),
        Ok(d) => {
            let m = &d["KeyMetadata"];
            arn = text(m, "Arn");
            state = text(m, "KeyState");
            let key_id = text(m, "KeyId");
            let rotation: Result<Value, _> = signed
                .call(baton, console, "TrentService.GetKeyRotationStatus", &on_key)
                .await;
            let rotation = rotation
                .map(|r| KeyRotation {
                    schedule: match (
                        r["KeyRotationEnabled"].as_bool(),
                        r["RotationPeriodInDays"].as_i64(),
                    ) {
                        (Some(true), Some(days)) => format!("every {days} days"),
                        (Some(true), None) => "on".to_owned(),
                        _ => "off".to_owned(),
                    },
                    next: date(r["NextRotationDate"].as_f64()),
                    in_flight: match r["BatonRotationPhase"].as_str() {
                        Some(phase) => format!(
                            "since {}, in phase {phase}",
                            date(r["OnDemandRotationStartDate"].as_f64())
                        ),
                        None => "no".to_owned(),
                    },
                })
                .map_err(|e| refusal(&e));
            let rotations: Result<Value, _> = signed
                .call(
                    baton,
                    console,
                    "TrentService.ListKeyRotations",
                    &json!({"KeyId": id, "Limit": 100}),
                )
                .await;
            let versions = rotations
                .map(|r| {
                    let mut rows: Vec<KeyVersion> = r["Rotations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|v| KeyVersion {
                            id: text(v, "BatonKeyVersionId"),
                            made: date(v["RotationDate"].as_f64()),
                            kind: match v["RotationType"].as_str() {
                                Some("ON_DEMAND") => "rotated on demand".to_owned(),
                                _ => "rotated on schedule".to_owned(),
                            },
                            state: text(v, "BatonKeyVersionState"),
                        })
                        .collect();
                    rows.reverse();
                    rows
                })
                .map_err(|e| refusal(&e));
            let asymmetric_signing =
                text(m, "KeyUsage") == "SIGN_VERIFY" && !text(m, "KeySpec").starts_with("HMAC");
            Ok(KeyFacts {
                arn: arn.clone(),
                description: text(m, "Description"),
                spec: text(m, "KeySpec"),
                usage: text(m, "KeyUsage"),
                state: state.clone(),
                created: date(m["CreationDate"].as_f64()),
                current: text(m, "BatonCurrentKeyVersionId"),
                aliases: aliases_by_key(console, baton, signed, Some(&key_id))
                    .await
                    .remove(&key_id)
                    .unwrap_or_default(),
                jwks: asymmetric_signing.then(|| format!("/jwks/{}", encode(&key_id))),
                rotation,
                versions,
            })
        }
    };
    let caller = signed.caller();
    let may = |action: &str| !arn.is_empty() && baton.may(caller, action, &arn);
    render(
        KeyPage {
            title: format!("Key {id}"),
            bar: bar(signed),
            notice,
            id: id.to_owned(),
            href: key_href(id),
            may_enable: state == "Disabled" && may("kms:EnableKey"),
            may_disable: state == "Enabled" && may("kms:DisableKey"),
            may_rotate: state == "Enabled" && may("kms:RotateKeyOnDemand"),
            described,
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

/// Enable, disable or rotate a key, then back to its page.
pub(crate) async fn key_action(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    id: &str,
    action: &str,
) -> Response {
    let (target, done) = match action {
        "enable" => ("TrentService.EnableKey", "enabled"),
        "disable" => ("TrentService.DisableKey", "disabled"),
        _ => ("TrentService.RotateKeyOnDemand", "rotated"),
    };
    let then = format!("{}?done={done}", key_href(id));
    crate::pages::perform(console, baton, signed, target, &json!({"KeyId": id}), then).await
}

/// The notice a key's page shows after an action.
pub(crate) fn done_notice(done: Option<&String>) -> Option<String> {
    match done.map(String::as_str) {
        Some("enabled") => Some("The key is enabled.".to_owned()),
        Some("disabled") => Some("The key is disabled: every use of it is refused.".to_owned()),
        Some("rotated") => Some(
            "The key was rotated: a symmetric or HMAC key uses its new material now; an \
             asymmetric key's new version goes through the rotation's phases."
                .to_owned(),
        ),
        _ => None,
    }
}

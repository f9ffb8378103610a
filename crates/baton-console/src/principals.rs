//! The principals' pages: principals with their access keys and policies, and a policy editor
//! that shows the validator's findings before the policy is saved.

use std::collections::HashMap;

use askama::Template;
use baton_app::Baton;
use baton_proto as p;
use serde_json::json;

use crate::pages::{Bar, api_error_page, bar, date, encode, refusal, render};
use crate::{Console, PREFIX, Response, Signed};

struct PrincipalRow {
    name: String,
    href: String,
    kind: String,
    created: String,
    policies: Vec<String>,
    keys: usize,
}

#[derive(Template)]
#[template(path = "principals.html")]
struct PrincipalsPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    listing: Result<Vec<PrincipalRow>, String>,
}

struct PolicyView {
    name: String,
    document: Result<String, String>,
}

/// The policy being edited: what was typed, and what the validator or the save found.
pub(crate) struct Draft {
    name: String,
    document: String,
    findings: Vec<(&'static str, String)>,
    /// Set when the draft was checked (with no finding, the page says so).
    checked: bool,
}

#[derive(Template)]
#[template(path = "principal.html")]
struct PrincipalPage {
    title: String,
    bar: Option<Bar>,
    notice: Option<String>,
    name: String,
    principal: Result<(String, String, String), String>,
    keys: Result<Vec<(String, String)>, String>,
    policies: Vec<PolicyView>,
    draft: Draft,
    may_edit: bool,
    edit_href: String,
    csrf: String,
}

fn principal_href(name: &str) -> String {
    format!("{PREFIX}/principals/{}", encode(name))
}

async fn access_keys(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    principal: Option<&str>,
) -> Result<Vec<p::AccessKey>, String> {
    let mut request = json!({});
    if let Some(name) = principal {
        request["PrincipalName"] = json!(name);
    }
    let answer: Result<p::ListAccessKeysResponse, _> = signed
        .call(baton, console, "baton.ListAccessKeys", &request)
        .await;
    answer
        .map(|r| r.access_keys.unwrap_or_default())
        .map_err(|e| refusal(&e))
}

pub(crate) async fn principals_page(console: &Console, baton: &Baton, signed: &Signed) -> Response {
    let answer: Result<p::ListPrincipalsResponse, _> = signed
        .call(baton, console, "baton.ListPrincipals", &json!({}))
        .await;
    let keys = access_keys(console, baton, signed, None)
        .await
        .unwrap_or_default();
    let mut per_principal: HashMap<String, usize> = HashMap::new();
    for k in &keys {
        *per_principal
            .entry(k.principal_name.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let listing = answer
        .map(|r| {
            r.principals
                .unwrap_or_default()
                .into_iter()
                .map(|pr| {
                    let name = pr.name.unwrap_or_default();
                    PrincipalRow {
                        href: principal_href(&name),
                        keys: per_principal.get(&name).copied().unwrap_or(0),
                        kind: pr.kind.unwrap_or_default(),
                        created: date(pr.create_date),
                        policies: pr.policy_names.unwrap_or_default(),
                        name,
                    }
                })
                .collect()
        })
        .map_err(|e| refusal(&e));
    render(
        PrincipalsPage {
            title: "Principals",
            bar: bar(signed),
            notice: None,
            listing,
        },
        200,
    )
}

pub(crate) async fn principal_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
    draft: Option<Draft>,
    notice: Option<String>,
) -> Response {
    let answer: Result<p::ListPrincipalsResponse, _> = signed
        .call(baton, console, "baton.ListPrincipals", &json!({}))
        .await;
    let found = answer.map_err(|e| refusal(&e)).and_then(|r| {
        r.principals
            .unwrap_or_default()
            .into_iter()
            .find(|pr| pr.name.as_deref() == Some(name))
            .ok_or_else(|| format!("No principal is named {name}."))
    });
    let mut policies = Vec::new();
    let mut arn = String::new();
    if let Ok(pr) = &found {
        arn = pr.arn.clone().unwrap_or_default();
        for policy in pr.policy_names.clone().unwrap_or_default() {
            let doc: Result<p::GetPrincipalPolicyResponse, _> = signed
                .call(
                    baton,
                    console,
                    "baton.GetPrincipalPolicy",
                    &json!({"PrincipalName": name, "PolicyName": policy}),
                )
                .await;
            policies.push(PolicyView {
                document: doc
                    .map(|d| pretty(&d.policy_document.unwrap_or_default()))
                    .map_err(|e| refusal(&e)),
                name: policy,
            });
        }
    }
    let keys = access_keys(console, baton, signed, Some(name))
        .await
        .map(|keys| {
            keys.into_iter()
                .map(|k| (k.access_key_id.unwrap_or_default(), date(k.create_date)))
                .collect()
        });
    let may_edit = found
        .as_ref()
        .is_ok_and(|pr| pr.kind.as_deref() != Some("admin"))
        && !arn.is_empty()
        && baton.may(signed.caller(), "baton:PutPrincipalPolicy", &arn);
    render(
        PrincipalPage {
            title: format!("Principal {name}"),
            bar: bar(signed),
            notice,
            name: name.to_owned(),
            principal: found.map(|pr| {
                (
                    pr.kind.unwrap_or_default(),
                    pr.arn.unwrap_or_default(),
                    date(pr.create_date),
                )
            }),
            keys,
            policies,
            draft: draft.unwrap_or(Draft {
                name: String::new(),
                document: String::new(),
                findings: Vec::new(),
                checked: false,
            }),
            may_edit,
            edit_href: format!("{}/policy", principal_href(name)),
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_owned())
}

/// The policy form: "Check" shows the validator's findings and saves nothing; "Save" runs
/// PutPrincipalPolicy, and a refusal keeps the draft on the page with the reason.
pub(crate) async fn edit_policy(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
    form: &HashMap<String, String>,
) -> Response {
    let policy = form
        .get("policy")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let document = form.get("document").cloned().unwrap_or_default();
    let findings = baton.principal_policy_findings(&document);
    if form.get("intent").map(String::as_str) != Some("save") {
        let draft = Draft {
            name: policy,
            document,
            findings,
            checked: true,
        };
        return principal_page(console, baton, signed, name, Some(draft), None).await;
    }
    let answer: Result<p::PutPrincipalPolicyResponse, _> = signed
        .call(
            baton,
            console,
            "baton.PutPrincipalPolicy",
            &json!({"PrincipalName": name, "PolicyName": policy, "PolicyDocument": document}),
        )
        .await;
    match answer {
        Ok(r) => {
            let warnings = r.warnings.unwrap_or_default();
            let notice = if warnings.is_empty() {
                format!("The policy {policy} was saved.")
            } else {
                format!(
                    "The policy {policy} was saved, with warnings: {}",
                    warnings.join(" ")
                )
            };
            principal_page(console, baton, signed, name, None, Some(notice)).await
        }
        Err(baton_app::ApiError::AccessDenied(m)) => {
            api_error_page(signed, &baton_app::ApiError::AccessDenied(m))
        }
        Err(e) => {
            let draft = Draft {
                name: policy,
                document,
                findings: vec![("NOT_SAVED", refusal(&e))],
                checked: true,
            };
            principal_page(console, baton, signed, name, Some(draft), None).await
        }
    }
}

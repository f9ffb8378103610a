//! `baton admin import`: copies secrets from any Secrets Manager endpoint (AWS, or another
//! Baton) into this Baton, through both public APIs.
//!
//! For each secret: every version that still has a staging label, under its own version id
//! and with its labels; its description and tags; and its rotation settings, recorded with
//! rotation turned off (`RotationLambdaARN` names a Lambda function Baton cannot run; configure
//! a Baton rotator to rotate it). Values travel from one API to the other in memory only and
//! never reach a log or an error.
//!
//! Idempotent: a version id is written once (versions are immutable), labels are moved only
//! where they differ, and description, tags and rotation settings are written only when they
//! differ, so a second run reports every secret `unchanged`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context as _;
use baton_client::{Client, ClientError};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::connect::signed_client;
use crate::output::human_duration;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The Secrets Manager endpoint to copy from: `https://secretsmanager.<region>.amazonaws.com`
    /// for AWS, or another Baton's URL.
    #[arg(long)]
    from_endpoint: String,
    /// The source's credentials: a profile of the AWS shared credentials file. Default: the
    /// AWS environment variables, else the `default` profile.
    #[arg(long)]
    profile: Option<String>,
    /// The source's region (default: AWS_REGION, else us-east-1). Secrets land in the same
    /// region of this Baton unless --to-region says otherwise.
    #[arg(long)]
    region: Option<String>,
    /// Copy only secrets whose names start with this prefix.
    #[arg(long)]
    filter: Option<String>,
    /// This Baton's URL (default: BATON_ENDPOINT, else http://127.0.0.1:8080).
    #[arg(long, env = "BATON_ENDPOINT")]
    endpoint: Option<String>,
    /// The profile of this Baton's credentials, when they differ from the source's.
    #[arg(long)]
    to_profile: Option<String>,
    /// The region of this Baton to import into.
    #[arg(long)]
    to_region: Option<String>,
}

/// Secrets imported at once.
const IMPORT_CONCURRENCY: usize = 8;

#[derive(Debug, Default)]
struct Summary {
    imported: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Imported,
    Updated(Vec<String>),
    Unchanged,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let region = args
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let source = signed_client(
        args.from_endpoint.clone(),
        region.clone(),
        args.profile.as_deref(),
    )
    .context("the source's credentials")?;
    let target = signed_client(
        args.endpoint
            .clone()
            .unwrap_or_else(|| baton_client::DEFAULT_ENDPOINT.to_owned()),
        args.to_region.clone().unwrap_or(region),
        args.to_profile.as_deref(),
    )
    .context("this Baton's credentials")?;

    let names = list_source(&source, args.filter.as_deref())
        .await
        .with_context(|| format!("listing the secrets of {}", args.from_endpoint))?;
    eprintln!(
        "importing {} secret(s) from {} into {}",
        names.len(),
        args.from_endpoint,
        target.endpoint()
    );
    let mut summary = Summary::default();
    let total = names.len();
    // A few secrets at a time: each needs several round trips to both ends.
    let mut results = futures_util::stream::iter(names.iter())
        .map(|name| {
            let (source, target) = (&source, &target);
            async move { (name, import_one(source, target, name).await) }
        })
        .buffer_unordered(IMPORT_CONCURRENCY);
    let mut done = 0;
    while let Some((name, result)) = results.next().await {
        done += 1;
        match result {
            Ok(Outcome::Imported) => {
                summary.imported += 1;
                eprintln!("[{done}/{total}] {name}: imported");
            }
            Ok(Outcome::Updated(what)) => {
                summary.updated += 1;
                eprintln!("[{done}/{total}] {name}: updated ({})", what.join(", "));
            }
            Ok(Outcome::Unchanged) => summary.unchanged += 1,
            Err(e) => {
                summary.failed += 1;
                eprintln!("[{done}/{total}] {name}: FAILED: {e:#}");
            }
        }
        if done % 100 == 0 {
            eprintln!("… {done} of {total} secrets done");
        }
    }
    eprintln!("done in {}", human_duration(started.elapsed()));
    println!(
        "imported={} updated={} unchanged={} failed={}",
        summary.imported, summary.updated, summary.unchanged, summary.failed
    );
    if summary.failed > 0 {
        anyhow::bail!(
            "{} secret(s) could not be imported (see above)",
            summary.failed
        );
    }
    Ok(())
}

async fn list_source(source: &Client, prefix: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = json!({"MaxResults": 100});
        if let Some(p) = prefix {
            request["Filters"] = json!([{"Key": "name", "Values": [p]}]);
        }
        if let Some(t) = &token {
            request["NextToken"] = json!(t);
        }
        let page: Value = source.call("secretsmanager.ListSecrets", &request).await?;
        for s in page["SecretList"].as_array().into_iter().flatten() {
            if let Some(name) = s["Name"].as_str()
                // The name filter matches prefixes of words too; keep true prefixes.
                && prefix.is_none_or(|p| name.starts_with(p))
            {
                names.push(name.to_owned());
            }
        }
        match page["NextToken"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// One labelled version of the source: its labels and its value, as the API carries it.
struct SourceVersion {
    labels: BTreeSet<String>,
    /// ("SecretString", text) or ("SecretBinary", base64).
    value: (&'static str, String),
}

impl std::fmt::Debug for SourceVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceVersion")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

fn stages(described: &Value) -> BTreeMap<String, BTreeSet<String>> {
    described["VersionIdsToStages"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, labels)| {
                    let labels = labels
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l.as_str().map(str::to_owned))
                        .collect();
                    (id.clone(), labels)
                })
                .filter(|(_, labels): &(String, BTreeSet<String>)| !labels.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn tags(described: &Value) -> BTreeMap<String, String> {
    described["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["Key"].as_str()?.to_owned(),
                t["Value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { error_type, .. } if error_type.ends_with("ResourceNotFoundException"))
}

async fn import_one(source: &Client, target: &Client, name: &str) -> anyhow::Result<Outcome> {
    let described: Value = source
        .call("secretsmanager.DescribeSecret", &json!({"SecretId": name}))
        .await
        .context("describing it at the source")?;
    let mut versions = BTreeMap::new();
    for (id, labels) in stages(&described) {
        let got: Value = source
            .call(
                "secretsmanager.GetSecretValue",
                &json!({"SecretId": name, "VersionId": id}),
            )
            .await
            .with_context(|| format!("reading version {id} at the source"))?;
        let value = match (got["SecretString"].as_str(), got["SecretBinary"].as_str()) {
            (Some(s), _) => ("SecretString", s.to_owned()),
            (None, Some(b)) => ("SecretBinary", b.to_owned()),
            _ => anyhow::bail!("version {id} has no value at the source"),
        };
        versions.insert(id, SourceVersion { labels, value });
    }
    let current = versions
        .iter()
        .find(|(_, v)| v.labels.contains("AWSCURRENT"))
        .map(|(id, _)| id.clone())
        .context("the source has no AWSCURRENT version")?;

    let existing = match target
        .call::<_, Value>("secretsmanager.DescribeSecret", &json!({"SecretId": name}))
        .await
    {
        Ok(d) => Some(d),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(e).context("describing it here"),
    };
    let mut changes = Vec::new();
    let held = match &existing {
        Some(d) => stages(d),
        None => {
            create(target, name, &described, &versions, &current).await?;
            BTreeMap::new()
        }
    };
    if existing.is_some() {
        // New versions first, then labels that differ.
        for (id, v) in &versions {
            if !held.contains_key(id) && !has_version(target, name, id).await? {
                put_version(target, name, id, v, Some(&v.labels)).await?;
                changes.push(format!("version {id}"));
            }
        }
        changes.extend(move_labels(target, name, &versions).await?);
    }
    let here: Value = target
        .call("secretsmanager.DescribeSecret", &json!({"SecretId": name}))
        .await?;
    changes.extend(sync_details(target, name, &described, &here).await?);
    Ok(match (existing, changes.is_empty()) {
        (None, _) => Outcome::Imported,
        (Some(_), true) => Outcome::Unchanged,
        (Some(_), false) => Outcome::Updated(changes),
    })
}

async fn has_version(target: &Client, name: &str, id: &str) -> anyhow::Result<bool> {
    let listed: Value = target
        .call(
            "secretsmanager.ListSecretVersionIds",
            &json!({"SecretId": name, "IncludeDeprecated": true}),
        )
        .await?;
    Ok(listed["Versions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["VersionId"].as_str() == Some(id)))
}

/// Creates the secret with its version ids: AWSPREVIOUS's version first (as the first
/// current), then AWSCURRENT's, so the previous label falls where it was; then the rest with
/// their labels.
async fn create(
    target: &Client,
    name: &str,
    described: &Value,
    versions: &BTreeMap<String, SourceVersion>,
    current: &str,
) -> anyhow::Result<()> {
    let previous = versions
        .iter()
        .find(|(id, v)| v.labels.contains("AWSPREVIOUS") && id.as_str() != current)
        .map(|(id, _)| id.clone());
    let first = previous.clone().unwrap_or_else(|| current.to_owned());
    let v = &versions[&first];
    let mut request = json!({"Name": name, "ClientRequestToken": first, v.value.0: v.value.1});
    if let Some(d) = described["Description"].as_str() {
        request["Description"] = json!(d);
    }
    let tags: Vec<Value> = tags(described)
        .into_iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    if !tags.is_empty() {
        request["Tags"] = json!(tags);
    }
    target
        .call::<_, Value>("secretsmanager.CreateSecret", &request)
        .await
        .context("creating it here")?;
    if previous.is_some() {
        put_version(target, name, current, &versions[current], None).await?;
    }
    for (id, v) in versions {
        if *id == first || id == current {
            continue;
        }
        let labels: BTreeSet<String> = v
            .labels
            .iter()
            .filter(|l| *l != "AWSPREVIOUS" && *l != "AWSCURRENT")
            .cloned()
            .collect();
        put_version(target, name, id, v, Some(&labels)).await?;
    }
    // Labels other than the two moved above (a custom label on the previous version, say).
    move_labels(target, name, versions).await?;
    Ok(())
}

/// Moves every label to the version that holds it at the source, where it differs here;
/// returns the labels moved.
async fn move_labels(
    target: &Client,
    name: &str,
    versions: &BTreeMap<String, SourceVersion>,
) -> anyhow::Result<Vec<String>> {
    let here = stages(
        &target
            .call::<_, Value>("secretsmanager.DescribeSecret", &json!({"SecretId": name}))
            .await?,
    );
    let mut moved = Vec::new();
    for (id, v) in versions {
        for label in &v.labels {
            let holder = here
                .iter()
                .find(|(_, l)| l.contains(label))
                .map(|(h, _)| h.clone());
            if holder.as_deref() == Some(id.as_str()) {
                continue;
            }
            let mut request =
                json!({"SecretId": name, "VersionStage": label, "MoveToVersionId": id});
            if let Some(h) = holder {
                request["RemoveFromVersionId"] = json!(h);
            }
            target
                .call::<_, Value>("secretsmanager.UpdateSecretVersionStage", &request)
                .await
                .with_context(|| format!("moving {label} to {id}"))?;
            moved.push(format!("label {label}"));
        }
    }
    Ok(moved)
}

/// PutSecretValue under the source's version id. `labels`: None for the default (AWSCURRENT).
async fn put_version(
    target: &Client,
    name: &str,
    id: &str,
    v: &SourceVersion,
    labels: Option<&BTreeSet<String>>,
) -> anyhow::Result<()> {
    let mut request = json!({"SecretId": name, "ClientRequestToken": id, v.value.0: v.value.1});
    if let Some(labels) = labels {
        request["VersionStages"] = json!(labels.iter().collect::<Vec<_>>());
    }
    target
        .call::<_, Value>("secretsmanager.PutSecretValue", &request)
        .await
        .with_context(|| format!("writing version {id}"))?;
    Ok(())
}

/// Description, tags and rotation settings, each written only when it differs.
async fn sync_details(
    target: &Client,
    name: &str,
    source: &Value,
    here: &Value,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    let description = source["Description"].as_str().unwrap_or_default();
    if here["Description"].as_str().unwrap_or_default() != description {
        target
            .call::<_, Value>(
                "secretsmanager.UpdateSecret",
                &json!({"SecretId": name, "Description": description}),
            )
            .await
            .context("updating the description")?;
        changes.push("description".to_owned());
    }
    let (want, have) = (tags(source), tags(here));
    let stale: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    if !stale.is_empty() {
        target
            .call::<_, Value>(
                "secretsmanager.UntagResource",
                &json!({"SecretId": name, "TagKeys": stale}),
            )
            .await
            .context("removing tags")?;
    }
    let missing: Vec<Value> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    if !missing.is_empty() {
        target
            .call::<_, Value>(
                "secretsmanager.TagResource",
                &json!({"SecretId": name, "Tags": missing}),
            )
            .await
            .context("tagging")?;
    }
    if !stale.is_empty() || !missing.is_empty() {
        changes.push("tags".to_owned());
    }
    // Rotation: recorded with rotation off. Baton cannot run a Lambda function.
    let lambda = source["RotationLambdaARN"].as_str();
    let rules = &source["RotationRules"];
    if let Some(lambda) = lambda
        && (here["RotationLambdaARN"].as_str() != Some(lambda) || here["RotationRules"] != *rules)
    {
        let mut request =
            json!({"SecretId": name, "RotationLambdaARN": lambda, "RotateImmediately": false});
        if rules.is_object() {
            request["RotationRules"] = rules.clone();
        }
        target
            .call::<_, Value>("secretsmanager.RotateSecret", &request)
            .await
            .context("recording the rotation settings")?;
        target
            .call::<_, Value>(
                "secretsmanager.CancelRotateSecret",
                &json!({"SecretId": name}),
            )
            .await
            .context("turning rotation off")?;
        changes.push("rotation settings".to_owned());
    }
    Ok(changes)
}

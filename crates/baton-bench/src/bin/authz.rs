//! `authz-bench`: what authorization and the audit log cost a GetSecretValue.
//!
//! One in-process Baton (embedded store, audit log in its default required mode) serves the
//! same secret to four callers in alternating rounds: the administrator (no policy is
//! evaluated), a principal with 1 attached policy, one with 50, and, on a second Baton whose
//! audit log is best-effort, the administrator again. A bare hyper server answering a fixed
//! body of the same size is the reference, measured in the same rounds. The 50 policies are
//! the worst case for evaluation order: 49 of them allow other secrets under conditions, and
//! the one that allows this secret comes last.
//!
//! Run: `cargo run --release -p baton-bench --bin authz-bench -- [--rounds N] [--seconds S]`

use baton_bench::{
    admin_client, alternate_cases, flag, runtime, signed_post, signed_post_as, start_baton_with,
    start_reference,
};
use bytes::Bytes;
use serde_json::json;

const SECRET_NAME: &str = "bench/authz";
const CONCURRENCY: usize = 64;

fn main() -> anyhow::Result<()> {
    let rounds = flag("--rounds", 5)? as usize;
    let seconds = flag("--seconds", 4)?;
    let baton_rt = runtime("baton")?;
    let reference_rt = runtime("reference")?;
    let load_rt = runtime("load")?;
    let required_dir = tempfile::tempdir()?;
    let best_effort_dir = tempfile::tempdir()?;
    use baton_app::audit::AuditMode;
    let addr = start_baton_with(&baton_rt, required_dir.path(), AuditMode::Required)?;
    let best_effort_addr =
        start_baton_with(&baton_rt, best_effort_dir.path(), AuditMode::BestEffort)?;

    let value = "x".repeat(256);
    let mut arn = String::new();
    for a in [addr, best_effort_addr] {
        let admin = admin_client(a)?;
        let created: serde_json::Value = load_rt.block_on(admin.call(
            "secretsmanager.CreateSecret",
            &json!({"Name": SECRET_NAME, "SecretString": value}),
        ))?;
        arn = created["ARN"].as_str().unwrap_or_default().to_owned();
    }
    let admin = admin_client(addr)?;
    let principal = |name: &str, policies: usize| -> anyhow::Result<(String, String)> {
        load_rt.block_on(async {
            admin
                .call::<_, serde_json::Value>(
                    "baton.CreatePrincipal",
                    &json!({"Name": name, "Kind": "service"}),
                )
                .await?;
            for i in 0..policies {
                let statement = if i + 1 == policies {
                    json!({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": format!("{}-*", arn.rsplit_once('-').map(|(a, _)| a).unwrap_or(&arn))})
                } else {
                    json!({"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "secretsmanager:Describe*"],
                           "Resource": format!("arn:aws:secretsmanager:*:*:secret:team-{i}/*"),
                           "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": format!("team-{i}")},
                                         "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}})
                };
                admin
                    .call::<_, serde_json::Value>(
                        "baton.PutPrincipalPolicy",
                        &json!({"PrincipalName": name, "PolicyName": format!("p{i:02}"),
                                "PolicyDocument": json!({"Version": "2012-10-17", "Statement": [statement]}).to_string()}),
                    )
                    .await?;
            }
            let key: serde_json::Value = admin
                .call("baton.CreateAccessKey", &json!({"PrincipalName": name}))
                .await?;
            let key = &key["AccessKey"];
            anyhow::Ok((
                key["AccessKeyId"].as_str().unwrap_or_default().to_owned(),
                key["SecretAccessKey"].as_str().unwrap_or_default().to_owned(),
            ))
        })
    };
    let one = principal("bench-one-policy", 1)?;
    let fifty = principal("bench-fifty-policies", 50)?;

    let body = json!({"SecretId": SECRET_NAME});
    let response: serde_json::Value =
        load_rt.block_on(admin.call("secretsmanager.GetSecretValue", &body))?;
    let reference_addr =
        start_reference(&reference_rt, Bytes::from(serde_json::to_vec(&response)?))?;
    let target = "secretsmanager.GetSecretValue";
    let cases: Vec<(&str, Vec<http::Request<Bytes>>)> = vec![
        (
            "reference (bare hyper)",
            vec![signed_post(reference_addr, target, &body)?],
        ),
        (
            "admin, audit required",
            vec![signed_post(addr, target, &body)?],
        ),
        (
            "1 policy, audit required",
            vec![signed_post_as(addr, target, &body, &one.0, &one.1)?],
        ),
        (
            "50 policies, audit required",
            vec![signed_post_as(addr, target, &body, &fifty.0, &fifty.1)?],
        ),
        (
            "admin, audit best-effort",
            vec![signed_post(best_effort_addr, target, &body)?],
        ),
    ];
    println!(
        "GetSecretValue, 256-byte value, concurrency {CONCURRENCY}, {rounds} rounds of {seconds} s, cases alternating"
    );
    alternate_cases(&load_rt, &cases, CONCURRENCY, rounds, seconds, (1, "admin"))?;
    Ok(())
}

//! `nodes-bench`: GetSecretValue throughput with 1, 2 and 3 nodes on one PostgreSQL database,
//! against the embedded (SQLite) single node and a bare hyper reference, in the same run.
//!
//! Every node runs in this process, on a runtime of its own (2 workers each), on loopback; the
//! load generator spreads its 64 connections evenly over the nodes of a case, as a load
//! balancer would. Every node keeps its audit log in the default required mode, so each answer
//! waits for its audit entry's commit, as in production. Cases alternate by round.
//!
//! Needs a PostgreSQL server: `--database-url postgres://user@host/db` names a database to
//! connect to; the benchmark creates a fresh database beside it and drops it at the end.
//!
//! With `--secrets N` (N > 1), every case reads N secrets, each request a secret and a node of
//! the case picked uniformly at random, after each node has read every secret twice (so the
//! caches hold them); the default reads one secret.
//!
//! Run: `cargo run --release -p baton-bench --bin nodes-bench -- --database-url URL [--rounds N] [--seconds S] [--secrets N] [--audit required|best-effort]`

use anyhow::Context as _;
use baton_bench::{
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, admin_client, alternate_cases, flag, runtime, signed_post,
    start_options, start_reference,
};
use bytes::Bytes;
use serde_json::json;

const SECRET_NAME: &str = "bench/nodes";
const CONCURRENCY: usize = 64;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn admin_sql(url: &str, statement: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    client.batch_execute(statement).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let url = arg("--database-url")
        .or_else(|| std::env::var("BATON_TEST_POSTGRES_URL").ok())
        .context("pass --database-url postgres://… (or set BATON_TEST_POSTGRES_URL)")?;
    let rounds: usize = arg("--rounds").map(|r| r.parse()).transpose()?.unwrap_or(5);
    let audit: baton_app::audit::AuditMode = arg("--audit")
        .map(|a| a.parse().map_err(anyhow::Error::msg))
        .transpose()?
        .unwrap_or(baton_app::audit::AuditMode::Required);
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);
    let secrets = flag("--secrets", 1)?.max(1) as usize;
    let load_rt = runtime("load")?;
    let name = format!("baton_nodes_bench_{}", std::process::id());
    load_rt.block_on(admin_sql(&url, &format!("CREATE DATABASE {name}")))?;
    let (base, _) = url.rsplit_once('/').context("the URL names no database")?;
    let db_url = format!("{base}/{name}");
    let result = run(&load_rt, &db_url, rounds, seconds, secrets, audit);
    load_rt.block_on(admin_sql(
        &url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    ))?;
    result
}

fn run(
    load_rt: &tokio::runtime::Runtime,
    db_url: &str,
    rounds: usize,
    seconds: u64,
    secrets: usize,
    audit: baton_app::audit::AuditMode,
) -> anyhow::Result<()> {
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite_rt = runtime("sqlite")?;
    let mut sqlite_options = baton_api::ServeOptions::embedded_for_tests(
        sqlite_dir.path(),
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
    );
    sqlite_options.audit.mode = audit;
    let sqlite = start_options(&sqlite_rt, sqlite_options)?;
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let runtimes: Vec<_> = (0..3)
        .map(|i| runtime(&format!("node{i}")))
        .collect::<Result<_, _>>()?;
    let root_key = dirs[0].path().join("root.key");
    let mut nodes = Vec::new();
    for (i, (dir, rt)) in dirs.iter().zip(&runtimes).enumerate() {
        let mut options = baton_api::ServeOptions::embedded_for_tests(
            dir.path(),
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
        );
        options.store = baton_api::StoreChoice::Postgres(db_url.to_owned());
        options.root_key_file = Some(root_key.clone());
        options.node_id = Some(format!("bench-node-{i}"));
        options.audit.mode = audit;
        nodes.push(start_options(rt, options)?);
    }
    let value = "x".repeat(256);
    let names: Vec<String> = if secrets == 1 {
        vec![SECRET_NAME.to_owned()]
    } else {
        (0..secrets)
            .map(|i| format!("{SECRET_NAME}-{i:06}"))
            .collect()
    };
    let target = "secretsmanager.GetSecretValue";
    for addr in [sqlite, nodes[0]] {
        let admin = admin_client(addr)?;
        for name in &names {
            load_rt.block_on(admin.call::<_, serde_json::Value>(
                "secretsmanager.CreateSecret",
                &json!({"Name": name, "SecretString": value}),
            ))?;
        }
    }
    if secrets > 1 {
        // The first read of a secret records its access date (a write); the second is cached.
        for &addr in std::iter::once(&sqlite).chain(&nodes) {
            let admin = admin_client(addr)?;
            for name in names.iter().chain(&names) {
                load_rt.block_on(
                    admin.call::<_, serde_json::Value>(target, &json!({"SecretId": name})),
                )?;
            }
        }
    }
    let response: serde_json::Value =
        load_rt.block_on(admin_client(nodes[0])?.call(target, &json!({"SecretId": names[0]})))?;
    let reference_rt = runtime("reference")?;
    let reference = start_reference(&reference_rt, Bytes::from(serde_json::to_vec(&response)?))?;
    // Every secret on every node of a case.
    let get = |addrs: &[std::net::SocketAddr]| -> anyhow::Result<Vec<http::Request<Bytes>>> {
        let mut requests = Vec::new();
        for name in &names {
            for &addr in addrs {
                requests.push(signed_post(addr, target, &json!({"SecretId": name}))?);
            }
        }
        Ok(requests)
    };
    let cases: Vec<(&str, Vec<http::Request<Bytes>>)> = vec![
        ("reference (bare hyper)", get(&[reference])?),
        ("SQLite, 1 node", get(&[sqlite])?),
        ("PostgreSQL, 1 node", get(&nodes[..1])?),
        ("PostgreSQL, 2 nodes", get(&nodes[..2])?),
        ("PostgreSQL, 3 nodes", get(&nodes)?),
    ];
    println!(
        "GetSecretValue, 256-byte value, {secrets} secret(s), concurrency {CONCURRENCY} spread over the nodes, audit {audit:?}, {rounds} rounds of {seconds} s, cases alternating"
    );
    alternate_cases(load_rt, &cases, CONCURRENCY, rounds, seconds, (1, "SQLite"))?;
    Ok(())
}

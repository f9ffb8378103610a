//! `rotation-bench`: two figures of the rotation engine, each against a reference in the same run.
//!
//! 1. Finding due rotations among 1,000,000 secrets, against the same query among 1,000: the
//!    due-time indexes should make the ratio close to 1.
//! 2. The wall time of one full rotation through a real server with T = 1 s, against its floor:
//!    two gates of T each, so 2 s.
//!
//! Run: `cargo run --release -p baton-bench --bin rotation-bench`

use std::time::{Duration, Instant};

use baton_store::{SqliteStore, Store};

const ACCESS_KEY_ID: &str = "BTNBENCHMARK00000002";
const SECRET_ACCESS_KEY: &str = "benchmark-secret-access-key-000000000002";

/// Fills a fresh database with `n` secrets: `due` of them scheduled in the past, the rest in the
/// future, written in one transaction straight into the schema that SqliteStore created.
fn populate(path: &std::path::Path, n: usize, due: usize) -> anyhow::Result<()> {
    drop(SqliteStore::open(path)?);
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut secret = tx.prepare(
            "INSERT INTO secrets (id, account_id, region, name, arn, rotation_enabled, \
             rotation_rules_set, created_at, last_changed_at, wrapped_data_key, revision) \
             VALUES (?1, '123456789012', 'us-east-1', ?1, ?2, 1, 0, 0, 0, x'00', 0)",
        )?;
        let mut schedule = tx.prepare(
            "INSERT INTO rotation_schedules (secret_id, next_rotation_at) VALUES (?1, ?2)",
        )?;
        for i in 0..n {
            let id = format!("s{i:08}");
            secret.execute(rusqlite::params![
                id,
                format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}-AbCdEf")
            ])?;
            // Spread due times: `due` secrets in the past, the rest over the next year.
            let at: i64 = if i < due {
                1_000 + i as i64
            } else {
                4_000_000_000_000 + (i as i64 * 31_536) % 31_536_000_000
            };
            schedule.execute(rusqlite::params![id, at])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn time_due_query(store: &dyn Store, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let due = store.rotations_due(2_000_000, 100).await?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(due.len() == 100, "expected 100 due, got {}", due.len());
    }
    Ok(samples)
}

async fn due_index_figure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let large = dir.path().join("large.db");
    let small = dir.path().join("small.db");
    let started = Instant::now();
    populate(&large, 1_000_000, 500)?;
    populate(&small, 1_000, 500)?;
    eprintln!("populated in {:.1} s", started.elapsed().as_secs_f64());
    let large_store = SqliteStore::open(&large)?;
    let small_store = SqliteStore::open(&small)?;
    // Alternate, so noise hits both alike.
    let (mut l, mut s) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        l.extend(time_due_query(&large_store, 20).await?);
        s.extend(time_due_query(&small_store, 20).await?);
    }
    let (lm, lmin, lmax) = median(l);
    let (sm, smin, smax) = median(s);
    println!("Finding 100 due rotations (rotations_due, SQLite, 200 samples each):");
    println!("  among 1,000,000 secrets: median {lm:.0} µs [{lmin:.0}..{lmax:.0}]");
    println!("  among 1,000 secrets (reference): median {sm:.0} µs [{smin:.0}..{smax:.0}]");
    println!("  ratio 1,000,000 / 1,000: {:.2}", lm / sm);
    Ok(())
}

async fn full_rotation_figure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options =
        baton_api::ServeOptions::embedded_for_tests(dir.path(), ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let server = baton_api::Server::bind(options).await?;
    let addr = server.local_addr()?;
    tokio::spawn(server.run(std::future::pending()));
    let client = baton_client::Client::new(baton_client::ClientConfig {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        access_key: baton_client::AccessKey {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
        },
        timeout: Duration::from_secs(10),
    })?;
    let call = |target: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move { client.call::<_, serde_json::Value>(target, &body).await }
    };
    call(
        "secretsmanager.CreateSecret",
        serde_json::json!({"Name": "bench", "SecretString": "v0"}),
    )
    .await?;
    call(
        "baton.PutRotationPolicy",
        serde_json::json!({"SecretId": "bench", "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0}),
    )
    .await?;
    let lambda = "arn:aws:lambda:us-east-1:123456789012:function:baton-random";
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        call(
            "secretsmanager.RotateSecret",
            serde_json::json!({"SecretId": "bench", "RotationLambdaARN": lambda}),
        )
        .await?;
        loop {
            let r = call(
                "baton.DescribeRotation",
                serde_json::json!({"SecretId": "bench"}),
            )
            .await?;
            if r["Status"] == "Succeeded" {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "rotation stuck: {r}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples.push(started.elapsed().as_secs_f64());
    }
    let (m, min, max) = median(samples);
    println!(
        "One full rotation (create, set, test, two gates, promote, retire) with T = 1 s, 5 runs:"
    );
    println!("  wall time: median {m:.3} s [{min:.3}..{max:.3}]");
    println!(
        "  reference (two gates of T): 2.000 s; ratio {:.3}",
        m / 2.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    due_index_figure().await?;
    full_rotation_figure().await?;
    Ok(())
}

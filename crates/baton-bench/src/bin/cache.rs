//! GetSecretValue over many secrets read uniformly at random, against reading one secret, on
//! the embedded store: once with the cache sized to hold every secret, once sized for a tenth
//! of them (`--fraction 10`, measured from what the full cache holds).
//!
//! `cache-bench [--secrets 100000] [--rounds 5] [--seconds 4] [--concurrency 64]
//! [--fraction 10]`
//!
//! Each case is its own in-process `baton serve` (a 2-worker runtime each) over its own copy
//! of the store, with the required audit log. The requests are signed once before the rounds
//! (a SigV4 signature stays valid for 15 minutes).

use std::path::Path;
use std::time::Instant;

use baton_bench::{alternate_cases, flag, runtime, signed_post};
use serde_json::json;

const READABLE: &str = "bench/one";

fn filled_store(dir: &Path, secrets: usize) -> anyhow::Result<()> {
    let rt = runtime("fill")?;
    rt.block_on(async {
        let ring = baton_crypto::RootKey::load_or_create(&dir.join("root.key"))?.0;
        let store = baton_store::SqliteStore::open(&dir.join("baton.db"))?;
        baton_bench::fill_store(&store, &ring, secrets, READABLE).await
    })
}

/// Reads every secret twice, 64 at a time: a secret's first read of the day records its
/// access date (a write, which drops it from the cache); the second fills the cache.
fn warm(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    secrets: usize,
) -> anyhow::Result<()> {
    for _ in 0..2 {
        rt.block_on(async {
            let client = baton_bench::admin_client(addr)?;
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..64 {
                let client = client.clone();
                tasks.spawn(async move {
                    for i in (worker..secrets).step_by(64) {
                        let _: serde_json::Value = client
                            .call(
                                "secretsmanager.GetSecretValue",
                                &json!({"SecretId": format!("bench/{i:07}")}),
                            )
                            .await?;
                    }
                    Ok::<_, baton_client::ClientError>(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // The servers' warnings and errors, so that a failed request says why.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let secrets = flag("--secrets", 100_000)? as usize;
    let rounds = flag("--rounds", 5)? as usize;
    let seconds = flag("--seconds", 4)?;
    let concurrency = flag("--concurrency", 64)? as usize;
    let fraction = flag("--fraction", 10)?.max(1);
    let started = Instant::now();
    let full_dir = tempfile::tempdir()?;
    filled_store(full_dir.path(), secrets)?;
    // Filled separately, not copied: a copy of a WAL-mode file taken while its WAL is not yet
    // checkpointed would miss what the WAL holds.
    let small_dir = tempfile::tempdir()?;
    filled_store(small_dir.path(), secrets)?;
    eprintln!(
        "filled two stores of {secrets} secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The full cache first: read every secret once, then size the small one from what it holds.
    let full_rt = runtime("baton-full")?;
    let mut options = baton_api::ServeOptions::embedded_for_tests(
        full_dir.path(),
        baton_bench::ACCESS_KEY_ID,
        baton_bench::SECRET_ACCESS_KEY,
    );
    options.cache_bytes = 1 << 30;
    let full = full_rt.block_on(baton_api::Server::bind(options))?;
    let full_usage = full.cache_usage();
    let full_addr = full.local_addr()?;
    full_rt.spawn(full.run(std::future::pending()));

    let signed = |addr, i: usize| {
        signed_post(
            addr,
            "secretsmanager.GetSecretValue",
            &json!({"SecretId": format!("bench/{i:07}")}),
        )
    };
    let started = Instant::now();
    let full_requests: Vec<_> = (0..secrets)
        .map(|i| signed(full_addr, i))
        .collect::<Result<_, _>>()?;
    let load_rt = runtime("load")?;
    warm(&load_rt, full_addr, secrets)?;
    let (held, bytes) = full_usage().unwrap_or_default();
    eprintln!(
        "signed and read {secrets} secrets in {:.1} s; the full cache holds {held} secrets in {} bytes ({} per secret)",
        started.elapsed().as_secs_f64(),
        bytes,
        bytes / held.max(1) as u64
    );

    let small_rt = runtime("baton-small")?;
    let mut options = baton_api::ServeOptions::embedded_for_tests(
        small_dir.path(),
        baton_bench::ACCESS_KEY_ID,
        baton_bench::SECRET_ACCESS_KEY,
    );
    let per_secret = bytes / held.max(1) as u64;
    options.cache_bytes =
        (per_secret * secrets as u64 / fraction).max(baton_store::CACHE_BYTES_MIN);
    let small_bytes = options.cache_bytes;
    let small = small_rt.block_on(baton_api::Server::bind(options))?;
    let small_usage = small.cache_usage();
    let small_addr = small.local_addr()?;
    small_rt.spawn(small.run(std::future::pending()));
    warm(&load_rt, small_addr, secrets)?;
    let small_requests: Vec<_> = (0..secrets)
        .map(|i| signed(small_addr, i))
        .collect::<Result<_, _>>()?;
    let one = signed_post(
        full_addr,
        "secretsmanager.GetSecretValue",
        &json!({"SecretId": READABLE}),
    )?;

    println!(
        "GetSecretValue, concurrency {concurrency}, {rounds} rounds of {seconds} s each, alternating; {secrets} secrets read uniformly at random"
    );
    let all_name = format!("{secrets} secrets, cache holds all");
    let small_name = format!("{secrets} secrets, cache of {small_bytes} bytes (1/{fraction})");
    let cases = [
        ("one secret", vec![one]),
        (all_name.as_str(), full_requests),
        (small_name.as_str(), small_requests),
    ];
    alternate_cases(
        &load_rt,
        &cases,
        concurrency,
        rounds,
        seconds,
        (0, "one secret"),
    )?;
    let (small_held, small_used) = small_usage().unwrap_or_default();
    println!(
        "the small cache held {small_held} secrets in {small_used} bytes at the end ({:.1}% of the secrets)",
        100.0 * small_held as f64 / secrets as f64
    );
    Ok(())
}

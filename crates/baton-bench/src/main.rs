//! `baton-bench`: GetSecretValue throughput and latency over loopback at a fixed concurrency,
//! against a bare hyper server that answers a fixed body of the same size, in the same run.
//!
//! Both servers run in this process on runtimes of the same shape, and the load generator sends
//! byte-identical pre-signed requests to both, so the ratio isolates what Baton does per request.
//! Rounds alternate between the two servers so that machine noise hits both alike; the report
//! gives the median and the spread (min to max) over rounds. A second part times the three
//! pieces of a GetSecretValue on their own: SigV4 verification, the store read, and decryption.
//!
//! Run: `cargo run --release -p baton-bench -- [--rounds N] [--seconds S] [--concurrency C]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;

use baton_bench::{
    ACCESS_KEY_ID, RoundResult, SECRET_ACCESS_KEY, load, median_and_spread, runtime, start_baton,
    start_reference,
};
const SECRET_NAME: &str = "bench/db-password";

/// With `--features mimalloc`, every allocation of this process (Baton, the reference and the
/// load generator alike) goes to mimalloc instead of glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    rounds: usize,
    seconds: u64,
    concurrency: usize,
    value_bytes: usize,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        rounds: 5,
        seconds: 5,
        concurrency: 64,
        value_bytes: 256,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> anyhow::Result<usize> {
            args.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--rounds" => options.rounds = value()?,
            "--seconds" => options.seconds = value()? as u64,
            "--concurrency" => options.concurrency = value()?,
            "--value-bytes" => options.value_bytes = value()?,
            other => anyhow::bail!(
                "unknown flag {other}; use --rounds, --seconds, --concurrency, --value-bytes"
            ),
        }
    }
    Ok(options)
}

/// A GetSecretValue request signed once; a SigV4 signature stays valid for 15 minutes, which
/// covers the run, and sending identical bytes to both servers keeps the client's cost equal.
fn signed_get(addr: SocketAddr) -> anyhow::Result<http::Request<Bytes>> {
    baton_bench::signed_post(
        addr,
        "secretsmanager.GetSecretValue",
        &serde_json::json!({ "SecretId": SECRET_NAME }),
    )
}

/// Times `f` over `iterations` calls and returns nanoseconds per call.
fn time_per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn breakdown(rt: &tokio::runtime::Runtime, template: &http::Request<Bytes>) -> anyhow::Result<()> {
    use baton_api::sigv4;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs() as i64;
    let parsed = sigv4::parse(template.headers(), now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = baton_crypto::sigv4::signing_key(
        SECRET_ACCESS_KEY.as_bytes(),
        &parsed.scope_date,
        &parsed.region,
        &parsed.service,
    );
    let verify_ns = time_per_call(20_000, || {
        let parsed = sigv4::parse(template.headers(), now).expect("parse");
        let canonical = sigv4::canonical_request(
            template.method(),
            template.uri(),
            template.headers(),
            &parsed.signed_headers,
            template.body(),
        );
        sigv4::verify(&parsed, &canonical, &key).expect("verify");
    });
    let derive_ns = time_per_call(20_000, || {
        let _ = baton_crypto::sigv4::signing_key(
            SECRET_ACCESS_KEY.as_bytes(),
            "20260101",
            "us-east-1",
            "secretsmanager",
        );
    });

    let dir = tempfile::tempdir()?;
    let store = baton_store::SqliteStore::open(&dir.path().join("b.db"))?;
    let (root_key, _) = baton_crypto::RootKey::generate()?;
    let baton = baton_app::Baton::new(
        Arc::new(store.clone()),
        root_key,
        "123456789012".into(),
        vec!["us-east-1".into()],
    );
    rt.block_on(async {
        use baton_store::Store as _;
        let data_key = baton_crypto::DataKey::generate()?;
        let secret_id = "bench-secret".to_owned();
        let mut secret = baton_bench::plain_secret(
            &secret_id,
            SECRET_NAME,
            baton.root_key.wrap(&data_key, &secret_id)?,
        );
        let value = vec![b'x'; 256];
        secret.add_version(
            baton_core::NewVersion {
                version_id: "v1".into(),
                kind: baton_core::SecretValueKind::String,
                sealed_value: data_key
                    .seal(&value, &format!("baton:secret-value:v1:{secret_id}:v1"))?,
                labels: None,
            },
            0,
        )?;
        store.insert_secret(&secret).await?;
        let iterations = 5_000u32;
        let started = Instant::now();
        for _ in 0..iterations {
            store
                .find_secret_by_name("123456789012", "us-east-1", SECRET_NAME)
                .await?;
        }
        let store_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        // Listing a namespace of one secret runs the same queries, and is never cached.
        let started = Instant::now();
        for _ in 0..iterations {
            store.list_secrets("123456789012", "us-east-1").await?;
        }
        let uncached_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        let sealed = secret.versions[0].sealed_value.clone();
        let decrypt_ns = time_per_call(20_000, || {
            let dk = baton
                .root_key
                .unwrap(&secret.wrapped_data_key, &secret_id)
                .expect("unwrap");
            let _ = dk
                .open(&sealed, "baton:secret-value:v1:bench-secret:v1")
                .expect("open");
        });
        println!();
        println!("Where the time of one GetSecretValue goes (single thread, per call):");
        println!(
            "  SigV4 verification (parse, canonical request, HMAC; key cached)   {:>8.1} µs",
            verify_ns / 1000.0
        );
        println!(
            "  SigV4 signing-key derivation (on a cache miss only)              {:>8.1} µs",
            derive_ns / 1000.0
        );
        println!(
            "  store read, cached (the SQLite engine's write-through cache)     {:>8.1} µs",
            store_ns / 1000.0
        );
        println!(
            "  store read, uncached (SQLite queries on the blocking pool)       {:>8.1} µs",
            uncached_ns / 1000.0
        );
        println!(
            "  decryption (unwrap data key + open 256-byte value, AES-256-GCM)  {:>8.1} µs",
            decrypt_ns / 1000.0
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let baton_rt = runtime("baton")?;
    let reference_rt = runtime("reference")?;
    let load_rt = runtime("load")?;

    let dir = tempfile::tempdir()?;
    let baton_addr = start_baton(&baton_rt, dir.path())?;
    // Create the secret through the real API with the real client.
    let client = baton_client::Client::new(baton_client::ClientConfig {
        endpoint: format!("http://{baton_addr}"),
        region: "us-east-1".into(),
        access_key: baton_client::AccessKey {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
        },
        timeout: Duration::from_secs(10),
    })?;
    let value = "x".repeat(options.value_bytes);
    load_rt.block_on(client.call::<_, serde_json::Value>(
        "secretsmanager.CreateSecret",
        &serde_json::json!({ "Name": SECRET_NAME, "SecretString": value }),
    ))?;
    let response: serde_json::Value = load_rt.block_on(client.call(
        "secretsmanager.GetSecretValue",
        &serde_json::json!({ "SecretId": SECRET_NAME }),
    ))?;
    let body = Bytes::from(serde_json::to_vec(&response)?);
    let reference_addr = start_reference(&reference_rt, body.clone())?;

    let baton_request = signed_get(baton_addr)?;
    let reference_request = signed_get(reference_addr)?;
    let duration = Duration::from_secs(options.seconds);
    println!(
        "GetSecretValue, {}-byte value ({}-byte response), concurrency {}, {} rounds of {} s each, alternating",
        options.value_bytes,
        body.len(),
        options.concurrency,
        options.rounds,
        options.seconds
    );
    // Warm both up.
    load(
        &load_rt,
        &baton_request,
        options.concurrency,
        Duration::from_secs(1),
    );
    load(
        &load_rt,
        &reference_request,
        options.concurrency,
        Duration::from_secs(1),
    );
    let mut baton_rounds = Vec::new();
    let mut reference_rounds = Vec::new();
    for round in 0..options.rounds {
        let b = load(&load_rt, &baton_request, options.concurrency, duration);
        let r = load(&load_rt, &reference_request, options.concurrency, duration);
        println!(
            "  round {}: baton {:>8.0} req/s p50 {:>6} µs p99 {:>6} µs errors {} | reference {:>8.0} req/s p50 {:>6} µs p99 {:>6} µs errors {}",
            round + 1,
            b.requests_per_second,
            b.p50_us,
            b.p99_us,
            b.errors,
            r.requests_per_second,
            r.p50_us,
            r.p99_us,
            r.errors
        );
        baton_rounds.push(b);
        reference_rounds.push(r);
    }
    let summary = |name: &str, rounds: &[RoundResult]| {
        let (rps, rps_min, rps_max) =
            median_and_spread(rounds.iter().map(|r| r.requests_per_second).collect());
        let (p50, p50_min, p50_max) =
            median_and_spread(rounds.iter().map(|r| r.p50_us as f64).collect());
        let (p99, p99_min, p99_max) =
            median_and_spread(rounds.iter().map(|r| r.p99_us as f64).collect());
        println!(
            "{name:<10} throughput median {rps:>8.0} req/s [{rps_min:.0}..{rps_max:.0}]  p50 {p50:.0} µs [{p50_min:.0}..{p50_max:.0}]  p99 {p99:.0} µs [{p99_min:.0}..{p99_max:.0}]"
        );
        (rps, p50, p99)
    };
    println!();
    let (b_rps, b_p50, b_p99) = summary("baton", &baton_rounds);
    let (r_rps, r_p50, r_p99) = summary("reference", &reference_rounds);
    let ratios: Vec<f64> = baton_rounds
        .iter()
        .zip(&reference_rounds)
        .map(|(b, r)| b.requests_per_second / r.requests_per_second)
        .collect();
    let (ratio, ratio_min, ratio_max) = median_and_spread(ratios);
    println!(
        "ratio baton/reference: throughput {:.2} (per-round median {ratio:.2}, spread {ratio_min:.2}..{ratio_max:.2}); p50 latency x{:.1}; p99 latency x{:.1}",
        b_rps / r_rps,
        b_p50 / r_p50,
        b_p99 / r_p99
    );
    breakdown(&load_rt, &baton_request)?;
    Ok(())
}

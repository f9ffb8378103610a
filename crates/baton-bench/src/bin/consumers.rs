//! `consumers-bench`: the figures of the consumers milestone, each against a reference measured
//! in the same run.
//!
//! 1. The client's in-process keyring read (ArcSwap) in ns/op, against the same read through
//!    an `RwLock<Arc<_>>`, the usual alternative.
//! 2. The agent's cache-hit throughput and p99, against a bare hyper server answering the same
//!    body.
//! 3. Propagation latency: from a new version becoming current until each of 100 watching
//!    clients holds it, against one signed round trip to the server.
//! 4. Server memory per open watch, against memory per idle keep-alive connection, measured on
//!    a separate `baton serve` process (build it first with `cargo build --release -p baton-cli`).
//! 5. The wall time of a rotation gated on acknowledgements, against the same rotation gated
//!    on T = 30 s by a plain reader.
//!
//! Run: `cargo build --release -p baton-cli && cargo run --release -p baton-bench --bin
//! consumers-bench -- [--skip-t-gated]`
//!
//! With `--watchers 1000,10000`, it measures only propagation, to that many watchers, each
//! count on a separate `baton serve` (so the server's memory per watch can be read from its
//! RSS). Each watcher holds up to two connections (its parked watch and a fetch), so N
//! watchers need about 2N open files in this process and as many in the server: with this
//! machine's hard limit of 20,000 files, 5,000 is the most one process can run. With
//! `--fetch-after-watch` each cache's watch names the changes only and the cache fetches each
//! keyring after it (two requests per change), to compare with keyrings in the watch's answer.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use baton_bench::{
    admin_client, load, median_and_spread, rss_kib, runtime, start_baton, start_reference,
};
use baton_client::keyring::{KeyringCache, KeyringOptions};
use baton_proto as p;
use bytes::Bytes;

const ROUNDS: usize = 5;

fn options(application: &str, instance: usize) -> KeyringOptions {
    let mut o = KeyringOptions::new(application);
    o.instance_id = format!("{application}-{instance}");
    // `--fetch-after-watch`: the watch names the changes only, and each cache fetches its
    // keyring after (two requests per change, the protocol before keyrings in the watch).
    o.keyrings_in_watch = !std::env::args().any(|a| a == "--fetch-after-watch");
    o
}

async fn create(client: &baton_client::Client, name: &str, value: &str) -> anyhow::Result<()> {
    client
        .call::<_, serde_json::Value>(
            "secretsmanager.CreateSecret",
            &serde_json::json!({ "Name": name, "SecretString": value }),
        )
        .await?;
    Ok(())
}

async fn put(client: &baton_client::Client, name: &str, value: &str) -> anyhow::Result<String> {
    let r: serde_json::Value = client
        .call(
            "secretsmanager.PutSecretValue",
            &serde_json::json!({ "SecretId": name, "SecretString": value }),
        )
        .await?;
    Ok(r["VersionId"].as_str().unwrap_or_default().to_owned())
}

fn keyring_read(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> anyhow::Result<()> {
    let client = admin_client(addr)?;
    let cache = rt.block_on(async {
        create(&client, "bench/keyring-read", &"k".repeat(32)).await?;
        anyhow::Ok(KeyringCache::start(client, "bench/keyring-read", options("reader", 0)).await?)
    })?;
    let locked = RwLock::new(cache.keyring_full());
    const N: u32 = 5_000_000;
    let time = |f: &dyn Fn() -> usize| {
        let mut sink = 0usize;
        for _ in 0..N / 10 {
            sink = sink.wrapping_add(f());
        }
        let started = Instant::now();
        for _ in 0..N {
            sink = sink.wrapping_add(f());
        }
        std::hint::black_box(sink);
        started.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let (mut swap, mut lock) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        swap.push(time(&|| {
            let ring = cache.keyring();
            ring.current().map_or(0, |k| k.expose_secret().len())
        }));
        lock.push(time(&|| {
            let ring = locked.read().map(|g| Arc::clone(&g)).expect("lock");
            ring.current().map_or(0, |k| k.expose_secret().len())
        }));
    }
    let (s, s_lo, s_hi) = median_and_spread(swap);
    let (l, l_lo, l_hi) = median_and_spread(lock);
    println!("\n1. keyring read (current version's value), one thread, {ROUNDS} rounds of {N}");
    println!("   KeyringCache::keyring (ArcSwap) {s:.1} ns/op [{s_lo:.1}..{s_hi:.1}]");
    println!("   reference RwLock<Arc<Keyring>>   {l:.1} ns/op [{l_lo:.1}..{l_hi:.1}]");
    println!("   ratio {:.2}", s / l);
    Ok(())
}

fn agent_throughput(
    baton_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
    reference_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let client = admin_client(addr)?;
    baton_rt.block_on(create(&client, "bench/agent", &"a".repeat(256)))?;
    let token = "bench-ssrf-token";
    let config = baton_agent::AgentConfig::load(None, Some(format!("http://{addr}")), Some(2773))?;
    let listener = agent_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let agent_addr = listener.local_addr()?;
    agent_rt.spawn(baton_agent::serve(
        config,
        baton_client::AccessKey {
            access_key_id: baton_bench::ACCESS_KEY_ID.into(),
            secret_access_key: baton_bench::SECRET_ACCESS_KEY.into(),
        },
        zeroize::Zeroizing::new(token.to_owned()),
        listener,
        std::future::pending(),
    ));
    let request = |addr: SocketAddr| {
        http::Request::builder()
            .method("GET")
            .uri(format!(
                "http://{addr}/secretsmanager/get?secretId=bench%2Fagent"
            ))
            .header("host", addr.to_string())
            .header("X-Aws-Parameters-Secrets-Token", token)
            .body(Bytes::new())
    };
    // The first request fills the agent's cache; its answer is the reference's fixed body.
    let body = load_rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client
            .get(format!(
                "http://{agent_addr}/secretsmanager/get?secretId=bench%2Fagent"
            ))
            .header("X-Aws-Parameters-Secrets-Token", token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "agent answered {}", r.status());
        anyhow::Ok(r.bytes().await?)
    })?;
    let reference_addr = start_reference(reference_rt, body.clone())?;
    let (agent_request, reference_request) = (request(agent_addr)?, request(reference_addr)?);
    let seconds = Duration::from_secs(3);
    load(load_rt, &agent_request, 32, Duration::from_secs(1));
    load(load_rt, &reference_request, 32, Duration::from_secs(1));
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let x = load(load_rt, &agent_request, 32, seconds);
        let y = load(load_rt, &reference_request, 32, seconds);
        anyhow::ensure!(x.errors == 0 && y.errors == 0, "errors: {x:?} {y:?}");
        a.push(x);
        r.push(y);
    }
    let stat = |v: &[baton_bench::RoundResult], f: fn(&baton_bench::RoundResult) -> f64| {
        median_and_spread(v.iter().map(f).collect())
    };
    let (at, at_lo, at_hi) = stat(&a, |x| x.requests_per_second);
    let (rt_, rt_lo, rt_hi) = stat(&r, |x| x.requests_per_second);
    let (ap99, _, _) = stat(&a, |x| x.p99_us as f64);
    let (rp99, _, _) = stat(&r, |x| x.p99_us as f64);
    println!(
        "\n2. agent cache hits, GET /secretsmanager/get ({}-byte answer), concurrency 32, {ROUNDS} rounds of {} s",
        body.len(),
        seconds.as_secs()
    );
    println!("   agent     {at:>9.0} req/s [{at_lo:.0}..{at_hi:.0}], p99 {ap99:.0} µs");
    println!("   reference {rt_:>9.0} req/s [{rt_lo:.0}..{rt_hi:.0}], p99 {rp99:.0} µs");
    println!(
        "   ratio throughput {:.2}, p99 ×{:.1}",
        at / rt_,
        ap99 / rp99
    );
    Ok(())
}

/// Starts `watchers` watching `KeyringCache`s of `bench/propagation` (which must exist), 256
/// at a time, each with a connection of its own.
fn start_watchers(
    clients_rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    watchers: usize,
) -> anyhow::Result<Vec<KeyringCache>> {
    clients_rt.block_on(async {
        let mut caches = Vec::with_capacity(watchers);
        for start in (0..watchers).step_by(256) {
            let batch = (start..watchers.min(start + 256)).map(|i| async move {
                anyhow::Ok(
                    KeyringCache::start(
                        admin_client(addr)?,
                        "bench/propagation",
                        options("watcher", i),
                    )
                    .await?,
                )
            });
            for cache in futures_util::future::join_all(batch).await {
                caches.push(cache?);
            }
        }
        anyhow::Ok(caches)
    })
}

fn propagation(
    rt: &tokio::runtime::Runtime,
    clients_rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let admin = admin_client(addr)?;
    rt.block_on(create(&admin, "bench/propagation", "v0-value"))?;
    let caches = start_watchers(clients_rt, addr, 100)?;
    propagation_trials(rt, clients_rt, addr, &caches, 20)
}

/// Propagation to many watchers on a separate `baton serve`, with the server's memory per
/// parked watch (its RSS with every watch parked, against before the watchers started).
fn propagation_at_scale(
    rt: &tokio::runtime::Runtime,
    clients_rt: &tokio::runtime::Runtime,
    watchers: usize,
) -> anyhow::Result<()> {
    // A cache holds up to two connections: its parked watch and, while it refetches, a fetch.
    let limit = (2 * watchers + 1000).to_string();
    let (mut child, addr, _dir) = spawn_server(&[
        "--connections-max",
        &limit,
        "--connections-per-address-max",
        &limit,
    ])?;
    let result = (|| -> anyhow::Result<()> {
        let admin = admin_client(addr)?;
        rt.block_on(create(&admin, "bench/propagation", "v0-value"))?;
        std::thread::sleep(Duration::from_millis(1500));
        let before = rss_kib(child.id())?;
        let started = Instant::now();
        let caches = start_watchers(clients_rt, addr, watchers)?;
        let startup = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1500));
        let after = rss_kib(child.id())?;
        println!(
            "\n3b. {watchers} watchers on a separate baton serve: started in {startup:.1} s; server RSS {:.1} MiB before, {:.1} MiB with every watch parked: {:.0} bytes per watch",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            (after as f64 - before as f64) * 1024.0 / watchers as f64
        );
        propagation_trials(rt, clients_rt, addr, &caches, 10)
    })();
    let _ = child.kill();
    let _ = child.wait();
    if result.is_err() {
        let log = std::fs::read_to_string(_dir.path().join("data").join("server.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        eprintln!("the server's last log lines:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
    result
}

/// `trials` times: a PutSecretValue, then the time until each cache holds the new version.
fn propagation_trials(
    rt: &tokio::runtime::Runtime,
    clients_rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    caches: &[KeyringCache],
    trials: usize,
) -> anyhow::Result<()> {
    let watchers = caches.len();
    let admin = admin_client(addr)?;
    let (mut p50s, mut p99s, mut alls, mut rtts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        // Let every watch be parked on the server.
        std::thread::sleep(Duration::from_millis(200 + watchers as u64 / 10));
        let waiters: Vec<_> = caches
            .iter()
            .map(|cache| {
                let cache = cache.clone();
                let mut changes = cache.changes();
                clients_rt.spawn(async move {
                    loop {
                        let _ = changes.changed().await;
                        let ring = cache.keyring();
                        if let Some(v) = ring.current() {
                            return (v.version_id().to_owned(), Instant::now());
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let version = rt.block_on(put(&admin, "bench/propagation", &format!("value-{trial}")))?;
        let mut latencies: Vec<f64> = clients_rt.block_on(async {
            let mut out = Vec::new();
            for w in waiters {
                let (held, at) = tokio::time::timeout(Duration::from_secs(60), w).await??;
                anyhow::ensure!(held == version, "a watcher holds {held}, not {version}");
                out.push(at.duration_since(started).as_secs_f64() * 1000.0);
            }
            anyhow::Ok(out)
        })?;
        latencies.sort_by(f64::total_cmp);
        p50s.push(latencies[watchers / 2]);
        p99s.push(latencies[watchers * 99 / 100]);
        alls.push(latencies[watchers - 1]);
        let rtt = Instant::now();
        rt.block_on(admin.call::<_, serde_json::Value>(
            "baton.GetSecretKeyring",
            &p::GetSecretKeyringRequest {
                secret_id: Some("bench/propagation".into()),
                ..Default::default()
            },
        ))?;
        rtts.push(rtt.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p50_lo, p50_hi) = median_and_spread(p50s);
    let (p99, p99_lo, p99_hi) = median_and_spread(p99s);
    let (all, all_lo, all_hi) = median_and_spread(alls);
    let (rtt, rtt_lo, rtt_hi) = median_and_spread(rtts);
    println!(
        "\n3. propagation: PutSecretValue sent until each of {watchers} watching clients holds the new version, {trials} trials"
    );
    println!(
        "   p50 {p50:.1} ms [{p50_lo:.1}..{p50_hi:.1}], p99 {p99:.1} ms [{p99_lo:.1}..{p99_hi:.1}], all {watchers} {all:.1} ms [{all_lo:.1}..{all_hi:.1}]"
    );
    println!(
        "   reference: one signed GetSecretKeyring round trip {rtt:.2} ms [{rtt_lo:.2}..{rtt_hi:.2}]"
    );
    println!(
        "   ratio p50 / round trip {:.1}, p99 / round trip {:.1}",
        p50 / rtt,
        p99 / rtt
    );
    Ok(())
}

fn spawn_server(
    extra: &[&str],
) -> anyhow::Result<(std::process::Child, SocketAddr, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let (child, addr) = baton_bench::spawn_serve(&dir.path().join("data"), extra)?;
    Ok((child, addr, dir))
}

fn memory_per_watch(rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    const CONNECTIONS: usize = 2000;
    let (mut child, addr, _dir) = spawn_server(&[
        "--connections-max",
        "10000",
        "--connections-per-address-max",
        "10000",
    ])?;
    let result = (|| -> anyhow::Result<()> {
        let admin = admin_client(addr)?;
        let revision = rt.block_on(async {
            create(&admin, "bench/watched", "value").await?;
            let ring: p::GetSecretKeyringResponse = admin
                .call(
                    "baton.GetSecretKeyring",
                    &p::GetSecretKeyringRequest {
                        secret_id: Some("bench/watched".into()),
                        ..Default::default()
                    },
                )
                .await?;
            anyhow::Ok(ring.revision.unwrap_or_default())
        })?;
        let watch = signed_watch(addr, &revision)?;
        let health = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let settle = || std::thread::sleep(Duration::from_millis(1500));
        let (mut idle, mut watching) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            // Idle keep-alive connections that each completed one request: the reference.
            settle();
            let before = rss_kib(child.id())?;
            let mut conns = Vec::new();
            for _ in 0..CONNECTIONS {
                let mut s = std::net::TcpStream::connect(addr)?;
                s.write_all(health.as_bytes())?;
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf)?;
                conns.push(s);
            }
            settle();
            idle.push((rss_kib(child.id())? as f64 - before as f64) * 1024.0 / CONNECTIONS as f64);
            drop(conns);
            // The same number of connections, each holding a parked watch.
            settle();
            let before = rss_kib(child.id())?;
            let mut conns = Vec::new();
            for _ in 0..CONNECTIONS {
                let mut s = std::net::TcpStream::connect(addr)?;
                s.write_all(&watch)?;
                conns.push(s);
            }
            settle();
            watching
                .push((rss_kib(child.id())? as f64 - before as f64) * 1024.0 / CONNECTIONS as f64);
            drop(conns);
        }
        let (w, w_lo, w_hi) = median_and_spread(watching);
        let (i, i_lo, i_hi) = median_and_spread(idle);
        println!(
            "\n4. server memory (RSS of a separate baton serve), {CONNECTIONS} connections, 3 rounds"
        );
        println!("   per open watch             {w:.0} bytes [{w_lo:.0}..{w_hi:.0}]");
        println!("   reference: per idle connection {i:.0} bytes [{i_lo:.0}..{i_hi:.0}]");
        println!("   ratio {:.2}", w / i);
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// A raw, signed HTTP/1.1 WatchSecrets request that parks for 20 s.
fn signed_watch(addr: SocketAddr, revision: &str) -> anyhow::Result<Vec<u8>> {
    let request = baton_bench::signed_post(
        addr,
        "baton.WatchSecrets",
        &serde_json::json!({
            "Secrets": [{ "SecretId": "bench/watched", "Revision": revision }],
            "WaitSeconds": 20,
        }),
    )?;
    let mut out = format!(
        "POST / HTTP/1.1\r\ncontent-length: {}\r\n",
        request.body().len()
    );
    for (k, v) in request.headers() {
        out.push_str(&format!("{k}: {}\r\n", v.to_str()?));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(request.body());
    Ok(bytes)
}

/// One rotation's wall time, with three reporting consumers; a plain read first makes the
/// gates wait T instead.
fn rotation_wall_time(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    name: &str,
    plain_reader: bool,
) -> anyhow::Result<f64> {
    let admin = admin_client(addr)?;
    rt.block_on(async {
        create(&admin, name, "initial-value").await?;
        admin
            .call::<_, serde_json::Value>(
                "baton.PutRotationPolicy",
                &serde_json::json!({
                    "SecretId": name, "PropagationDelaySeconds": 30, "RetireGraceSeconds": 0,
                    "MaxGateWaitSeconds": 120,
                }),
            )
            .await?;
        let mut consumers = Vec::new();
        for i in 0..3 {
            consumers.push(KeyringCache::start(admin_client(addr)?, name, options("svc", i)).await?);
        }
        if plain_reader {
            admin
                .call::<_, serde_json::Value>(
                    "secretsmanager.GetSecretValue",
                    &serde_json::json!({ "SecretId": name }),
                )
                .await?;
        }
        let started = Instant::now();
        admin
            .call::<_, serde_json::Value>(
                "secretsmanager.RotateSecret",
                &serde_json::json!({
                    "SecretId": name,
                    "RotationLambdaARN": "arn:aws:lambda:us-east-1:123456789012:function:baton-random",
                }),
            )
            .await?;
        loop {
            let r: serde_json::Value = admin
                .call("baton.DescribeRotation", &serde_json::json!({ "SecretId": name }))
                .await?;
            match r["Status"].as_str() {
                Some("Succeeded") => break,
                Some("Stopped") => anyhow::bail!("rotation stopped: {r}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        drop(consumers);
        Ok(started.elapsed().as_secs_f64())
    })
}

fn main() -> anyhow::Result<()> {
    let skip_t_gated = std::env::args().any(|a| a == "--skip-t-gated");
    let args: Vec<String> = std::env::args().collect();
    // `--watchers 1000,10000`: only propagation at these scales, each on its own server.
    if let Some(at) = args.iter().position(|a| a == "--watchers") {
        let counts = args
            .get(at + 1)
            .context("--watchers needs a list, e.g. 1000,10000")?;
        let clients_rt = runtime("clients")?;
        let load_rt = runtime("load")?;
        for count in counts.split(',') {
            let n: usize = count
                .parse()
                .with_context(|| format!("--watchers: {count:?} is not a number"))?;
            anyhow::ensure!(n >= 2, "--watchers: at least 2 watchers");
            propagation_at_scale(&load_rt, &clients_rt, n)?;
        }
        return Ok(());
    }
    let baton_rt = runtime("baton")?;
    let clients_rt = runtime("clients")?;
    let agent_rt = runtime("agent")?;
    let reference_rt = runtime("reference")?;
    let load_rt = runtime("load")?;
    let dir = tempfile::tempdir()?;
    let addr = start_baton(&baton_rt, dir.path())?;

    keyring_read(&clients_rt, addr)?;
    agent_throughput(&baton_rt, &agent_rt, &reference_rt, &load_rt, addr)?;
    propagation(&load_rt, &clients_rt, addr)?;
    memory_per_watch(&load_rt)?;

    let acked: Vec<f64> = (0..ROUNDS)
        .map(|i| rotation_wall_time(&clients_rt, addr, &format!("bench/acked-{i}"), false))
        .collect::<anyhow::Result<_>>()?;
    let (a, a_lo, a_hi) = median_and_spread(acked);
    println!("\n5. one rotation with 3 reporting consumers, T = 30 s, retire grace 0");
    println!(
        "   gated on acknowledgements {a:.3} s [{a_lo:.3}..{a_hi:.3}] over {ROUNDS} rotations"
    );
    if skip_t_gated {
        println!("   (T-gated reference skipped: --skip-t-gated)");
    } else {
        let t = rotation_wall_time(&clients_rt, addr, "bench/t-gated", true)?;
        println!(
            "   reference with a plain read just before it {t:.3} s (the propagation gate waits T; the drain gate passes once that read is T old)"
        );
        println!("   ratio {:.4}", a / t);
    }
    Ok(())
}

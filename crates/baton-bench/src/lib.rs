//! Shared pieces of Baton's benchmarks: an in-process `baton serve`, the bare hyper reference
//! server, and a closed-loop HTTP load generator that reports throughput and latency.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_store::Store as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const ACCESS_KEY_ID: &str = "BTNBENCHMARK00000001";
/// The version id of the readable secret [`fill_store`] adds.
pub const READABLE_VERSION: &str = "00000000-0000-4000-8000-000000000001";
/// The version id of the values [`fill_store`] writes.
pub const FILL_VERSION: &str = "00000000-0000-4000-8000-0000000000f1";
pub const SECRET_ACCESS_KEY: &str = "benchmark-secret-access-key-000000000000";

/// A secret with no versions, tags or rotation in account 123456789012, us-east-1, with its
/// data key wrapped as `wrapped_data_key`: what benchmarks insert straight into a store.
pub fn plain_secret(id: &str, name: &str, wrapped_data_key: Vec<u8>) -> baton_core::SecretRecord {
    baton_core::SecretRecord {
        id: id.into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        name: name.into(),
        arn: format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"),
        description: None,
        kms_key_id: None,
        tags: vec![],
        tagged: false,
        resource_policy: None,
        rotation: Default::default(),
        created_at: 0,
        last_changed_at: 0,
        last_accessed_at: None,
        deletion: baton_core::DeletionState::Active,
        wrapped_data_key,
        versions: vec![],
        replicas: vec![],
        rotation_policy: None,
        rotation_state: None,
        revision: 0,
        key: None,
        outbox: vec![],
    }
}

/// Fills an empty store with `n` secrets whose data keys `ring` wraps (one restore
/// transaction), plus one readable secret named `readable`. The `n` are named
/// `bench/0000000`…; each, like `readable`, holds a 256-byte value (version [`FILL_VERSION`]).
pub async fn fill_store(
    store: &baton_store::SqliteStore,
    ring: &baton_crypto::RootKey,
    n: usize,
    readable: &str,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let template_store = baton_store::SqliteStore::open(&dir.path().join("template.db"))?;
    let mut template = plain_secret("tmpl", "benchtemplate", vec![0; 60]);
    template.add_version(
        baton_core::NewVersion {
            version_id: FILL_VERSION.into(),
            kind: baton_core::SecretValueKind::String,
            sealed_value: vec![7; 96],
            labels: None,
        },
        0,
    )?;
    template_store.insert_secret(&template).await?;
    let mut snapshot = template_store.snapshot().await?;
    let data_key = baton_crypto::DataKey::generate()?;
    for table in &mut snapshot.tables {
        let wrapped_at = table.columns.iter().position(|c| c == "wrapped_data_key");
        let sealed_at = table.columns.iter().position(|c| c == "sealed_value");
        let rows = std::mem::take(&mut table.rows);
        for i in 0..n {
            let id = format!("sec-{i:08}");
            for row in &rows {
                let mut copy: Vec<baton_store::snapshot::Cell> = row
                    .iter()
                    .map(|cell| match cell {
                        baton_store::snapshot::Cell::Text(t) => baton_store::snapshot::Cell::Text(
                            t.replace("tmpl", &id)
                                .replace("benchtemplate", &format!("bench/{i:07}")),
                        ),
                        other => other.clone(),
                    })
                    .collect();
                if let Some(at) = wrapped_at {
                    copy[at] = baton_store::snapshot::Cell::Blob(ring.wrap(&data_key, &id)?);
                }
                if let Some(at) = sealed_at {
                    copy[at] = baton_store::snapshot::Cell::Blob(
                        data_key.seal(&[b'x'; 256], &baton_crypto::value_aad(&id, FILL_VERSION))?,
                    );
                }
                table.rows.push(copy);
            }
        }
    }
    store.restore_snapshot(snapshot).await?;
    let key = baton_crypto::DataKey::generate()?;
    let mut secret = plain_secret("bench-secret", readable, ring.wrap(&key, "bench-secret")?);
    secret.add_version(
        baton_core::NewVersion {
            version_id: READABLE_VERSION.into(),
            kind: baton_core::SecretValueKind::String,
            sealed_value: key.seal(
                &[b'x'; 256],
                &baton_crypto::value_aad("bench-secret", READABLE_VERSION),
            )?,
            labels: None,
        },
        0,
    )?;
    store.insert_secret(&secret).await?;
    Ok(())
}

/// Starts a separate `baton serve` (the release binary next to the running one) on `data_dir`
/// with the benchmark's administrator key and these extra flags, logging warnings to
/// `<data_dir>/server.log`, and waits until it accepts connections.
pub fn spawn_serve(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(std::process::Child, SocketAddr)> {
    use anyhow::Context as _;
    let baton = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("baton");
    anyhow::ensure!(
        baton.exists(),
        "{} is missing: run `cargo build --release -p baton-cli` first",
        baton.display()
    );
    std::fs::create_dir_all(data_dir)?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut child = std::process::Command::new(&baton)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--account-id",
            "123456789012",
        ])
        .env("BATON_BOOTSTRAP_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("BATON_BOOTSTRAP_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("server.log"))?)
        .args(extra)
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("baton serve did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, addr))
}

/// A process's resident memory, in KiB (Linux).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// A numeric command-line flag (`--rounds 5`), or `default` when absent.
pub fn flag(name: &str, default: u64) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

/// A 2-worker runtime, the shape every party of a benchmark gets.
pub fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Starts `baton serve` in-process on an ephemeral port with a known administrator key, and
/// the default audit log (required mode).
pub fn start_baton(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> anyhow::Result<SocketAddr> {
    start_baton_with(rt, dir, baton_app::audit::AuditOptions::default().mode)
}

/// As [`start_baton`], with the audit log in `audit` mode.
pub fn start_baton_with(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    audit: baton_app::audit::AuditMode,
) -> anyhow::Result<SocketAddr> {
    let mut options =
        baton_api::ServeOptions::embedded_for_tests(dir, ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    options.audit.mode = audit;
    start_options(rt, options)
}

/// Starts a server with these options; returns its address.
pub fn start_options(
    rt: &tokio::runtime::Runtime,
    options: baton_api::ServeOptions,
) -> anyhow::Result<SocketAddr> {
    let server = rt.block_on(baton_api::Server::bind(options))?;
    let addr = server.local_addr()?;
    rt.spawn(server.run(std::future::pending()));
    Ok(addr)
}

/// The reference: hyper answering every request with the same fixed body.
pub fn start_reference(rt: &tokio::runtime::Runtime, body: Bytes) -> anyhow::Result<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            // Read the request body, as Baton must, before answering.
                            let _ = request.into_body().collect().await;
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", baton_proto::CONTENT_TYPE)
                                    .body(Full::new(body))
                                    .expect("static response"),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[derive(Debug, Clone, Copy)]
pub struct RoundResult {
    pub requests_per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
}

/// Sends copies of `template` from `concurrency` keep-alive connections for `duration`.
pub fn load(
    rt: &tokio::runtime::Runtime,
    template: &http::Request<Bytes>,
    concurrency: usize,
    duration: Duration,
) -> RoundResult {
    load_spread(rt, std::slice::from_ref(template), concurrency, duration)
}

/// As [`load`], with connection `i` sending copies of `templates[i % len]`: the same load
/// spread over several servers (nodes behind a load balancer). With more templates than
/// connections, each request instead picks a template uniformly at random (a fixed
/// pseudo-random sequence per connection): reads spread over many secrets.
pub fn load_spread(
    rt: &tokio::runtime::Runtime,
    templates: &[http::Request<Bytes>],
    concurrency: usize,
    duration: Duration,
) -> RoundResult {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let templates: Vec<Arc<http::Request<Bytes>>> =
        templates.iter().map(|t| Arc::new(t.clone())).collect();
    rt.block_on(async move {
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let client = client.clone();
            let templates = templates.clone();
            let spread = templates.len() > concurrency;
            tasks.push(tokio::spawn(async move {
                let mut latencies_us: Vec<u64> = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let template = if spread {
                        sent += 1;
                        let pick = splitmix64(((i as u64) << 40) ^ sent);
                        &templates[(pick % templates.len() as u64) as usize]
                    } else {
                        &templates[i % templates.len()]
                    };
                    let mut builder = http::Request::builder()
                        .method(template.method())
                        .uri(template.uri());
                    for (k, v) in template.headers() {
                        builder = builder.header(k, v);
                    }
                    let request = builder
                        .body(Full::new(template.body().clone()))
                        .expect("request from template");
                    let started = Instant::now();
                    match client.request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.into_body().collect().await;
                            if ok {
                                latencies_us.push(started.elapsed().as_micros() as u64);
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies_us, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (latencies, e) = task.await.expect("load task");
            all.extend(latencies);
            errors += e;
        }
        all.sort_unstable();
        let pick = |q: f64| {
            all.get(((all.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        RoundResult {
            requests_per_second: all.len() as f64 / duration.as_secs_f64(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            errors,
        }
    })
}

/// A well-mixed 64-bit hash (SplitMix64's finalizer).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The median, minimum and maximum.
pub fn median_and_spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    (median, values[0], values[values.len() - 1])
}

/// A client of the in-process server with the benchmark's administrator key.
pub fn admin_client(addr: SocketAddr) -> anyhow::Result<baton_client::Client> {
    Ok(baton_client::Client::new(baton_client::ClientConfig {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        access_key: baton_client::AccessKey {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
        },
        timeout: Duration::from_secs(30),
    })?)
}

/// A POST of `body` to operation `target`, signed once with the benchmark's key. A SigV4
/// signature stays valid for 15 minutes, which covers a run.
pub fn signed_post(
    addr: SocketAddr,
    target: &str,
    body: &serde_json::Value,
) -> anyhow::Result<http::Request<Bytes>> {
    signed_post_as(addr, target, body, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
}

/// As [`signed_post`], signed with another access key.
pub fn signed_post_as(
    addr: SocketAddr,
    target: &str,
    body: &serde_json::Value,
    access_key_id: &str,
    secret_access_key: &str,
) -> anyhow::Result<http::Request<Bytes>> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let body = serde_json::to_vec(body)?;
    let url = format!("http://{addr}/");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("host", addr.to_string())
        .header("content-type", baton_proto::CONTENT_TYPE)
        .header("x-amz-target", target)
        .body(body.clone())?;
    let identity = aws_credential_types::Credentials::new(
        access_key_id,
        secret_access_key,
        None,
        None,
        "bench",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(if target.starts_with(baton_proto::kms::KMS_TARGET_PREFIX) {
            "kms"
        } else {
            "secretsmanager"
        })
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(&mut request);
    let (parts, body) = request.into_parts();
    Ok(http::Request::from_parts(parts, Bytes::from(body)))
}

/// Warms up every case, runs `rounds` rounds in which the cases alternate (each case's
/// templates spread over its connections), prints each round, then each case's median
/// throughput with its spread, its median p50, and its per-round median ratio to case 0 and to
/// case `baseline` (named `baseline_name`). Fails if a warm-up has errors.
pub fn alternate_cases(
    rt: &tokio::runtime::Runtime,
    cases: &[(&str, Vec<http::Request<Bytes>>)],
    concurrency: usize,
    rounds: usize,
    seconds: u64,
    (baseline, baseline_name): (usize, &str),
) -> anyhow::Result<Vec<Vec<RoundResult>>> {
    for (name, templates) in cases {
        let warm = load_spread(rt, templates, concurrency, Duration::from_secs(1));
        anyhow::ensure!(
            warm.errors == 0 && warm.requests_per_second > 0.0,
            "{name}: the warm-up failed ({} errors)",
            warm.errors
        );
    }
    let width = cases.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut results: Vec<Vec<RoundResult>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, (name, templates)) in cases.iter().enumerate() {
            let r = load_spread(rt, templates, concurrency, Duration::from_secs(seconds));
            println!(
                "  round {}: {name:<width$} {:>8.0} req/s p50 {:>6} µs p99 {:>6} µs errors {}",
                round + 1,
                r.requests_per_second,
                r.p50_us,
                r.p99_us,
                r.errors
            );
            results[i].push(r);
        }
    }
    println!();
    let rps = |i: usize| -> Vec<f64> { results[i].iter().map(|r| r.requests_per_second).collect() };
    let ratio = |i: usize, j: usize| {
        median_and_spread(rps(i).iter().zip(rps(j)).map(|(a, b)| a / b).collect()).0
    };
    for (i, (name, _)) in cases.iter().enumerate() {
        let (median, low, high) = median_and_spread(rps(i));
        let (p50, _, _) = median_and_spread(results[i].iter().map(|r| r.p50_us as f64).collect());
        println!(
            "{name:<width$} median {median:>8.0} req/s [{low:.0}..{high:.0}]  p50 {p50:>5.0} µs  vs {} {:.2}  vs {baseline_name} {:.2}",
            cases[0].0,
            ratio(i, 0),
            ratio(i, baseline)
        );
    }
    Ok(results)
}

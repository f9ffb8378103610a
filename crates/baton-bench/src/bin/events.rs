//! `events-bench`: webhook delivery throughput and latency, against the same receiver fed
//! directly in the same run.
//!
//! An in-process `baton serve` on the embedded store with one subscription to a local hyper
//! receiver. 1. Throughput: 2,000 events are committed (PutSecretValue on 200 secrets, 8
//! writers), then timed from the first commit until the receiver has them all; the reference
//! is 2,000 POSTs of the same bodies sent one after another on one connection, which is how a
//! delivery worker sends. The receiver holds the first delivery until all 2,000 are
//! committed, so the figure is the delivery rate, not the commit rate. 2. Latency: 200 single PutSecretValue calls, each timed from its
//! response (the commit is before it) until the receiver has its event; the reference is one
//! POST's round trip.
//!
//! Run: `cargo run --release -p baton-bench --bin events-bench`

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_bench::{admin_client, median_and_spread, runtime, start_baton};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

/// When each event (by secret name and event name) arrived, and the bodies, for the reference.
#[derive(Default)]
struct Arrivals {
    at: HashMap<String, Instant>,
    bodies: Vec<Bytes>,
}

/// `gate` holds every request until it has permits: a backlog builds up behind it.
fn start_receiver(
    rt: &tokio::runtime::Runtime,
    arrivals: Arc<Mutex<Arrivals>>,
    gate: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<SocketAddr> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let arrivals = arrivals.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let arrivals = arrivals.clone();
                        let gate = gate.clone();
                        async move {
                            drop(gate.acquire().await);
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let now = Instant::now();
                            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) {
                                let key = format!(
                                    "{}|{}",
                                    event["detail"]["baton"]["secretName"]
                                        .as_str()
                                        .unwrap_or_default(),
                                    event["detail"]["eventName"].as_str().unwrap_or_default()
                                );
                                let mut a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                                a.at.entry(key).or_insert(now);
                                if a.bodies.len() < 2_000 {
                                    a.bodies.push(body);
                                }
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
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

async fn call(
    client: &baton_client::Client,
    target: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    Ok(client.call(target, &body).await?)
}

fn main() -> anyhow::Result<()> {
    let baton_rt = runtime("baton")?;
    let receiver_rt = runtime("receiver")?;
    let load_rt = runtime("load")?;
    let dir = tempfile::tempdir()?;
    let addr = start_baton(&baton_rt, dir.path())?;
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let receiver = start_receiver(&receiver_rt, arrivals.clone(), gate.clone())?;
    let client = admin_client(addr)?;
    const SECRETS: usize = 200;
    const PUTS: usize = 10;
    load_rt.block_on(async {
        call(
            &client,
            "baton.CreateSubscription",
            serde_json::json!({
                "Url": format!("http://{receiver}/"), "EventNames": ["PutSecretValue"],
            }),
        )
        .await?;
        for i in 0..SECRETS {
            call(
                &client,
                "secretsmanager.CreateSecret",
                serde_json::json!({
                    "Name": format!("bench/events/{i}"), "SecretString": "v0",
                }),
            )
            .await?;
        }
        anyhow::Ok(())
    })?;

    // 1. Throughput: the receiver holds the first delivery until every event is committed,
    // then the worker drains the backlog.
    load_rt.block_on(async {
        let mut writers = Vec::new();
        for w in 0..8 {
            let client = client.clone();
            writers.push(tokio::spawn(async move {
                for i in (w..SECRETS).step_by(8) {
                    for n in 0..PUTS {
                        call(&client, "secretsmanager.PutSecretValue", serde_json::json!({
                            "SecretId": format!("bench/events/{i}"), "SecretString": format!("v{}", n + 1),
                        }))
                        .await?;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for w in writers {
            w.await??;
        }
        anyhow::Ok(())
    })?;
    let total = SECRETS * PUTS;
    let started = Instant::now();
    gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let have = arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bodies
            .len();
        if have >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {have} of {total} events arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let delivered = started.elapsed();
    let bodies = arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .bodies
        .clone();
    let http = reqwest::Client::new();
    let url = format!("http://{receiver}/reference");
    let reference = load_rt.block_on(async {
        let started = Instant::now();
        for body in &bodies {
            http.post(&url)
                .body(body.clone())
                .send()
                .await?
                .bytes()
                .await?;
        }
        anyhow::Ok(started.elapsed())
    })?;
    let baton_rate = total as f64 / delivered.as_secs_f64();
    let reference_rate = bodies.len() as f64 / reference.as_secs_f64();
    println!("1. delivery throughput: a backlog of {total} committed events drained");
    println!(
        "   Baton: {:.2} s, {baton_rate:.0} events/s",
        delivered.as_secs_f64()
    );
    println!(
        "   reference: the same bodies POSTed in sequence on one connection: {reference_rate:.0} POSTs/s"
    );
    println!("   ratio {:.2}", baton_rate / reference_rate);

    // 2. Latency from commit to delivery, one write at a time.
    let mut latencies = Vec::new();
    let mut round_trips = Vec::new();
    for i in 0..SECRETS {
        let name = format!("bench/events/{i}");
        load_rt.block_on(call(
            &client,
            "secretsmanager.PutSecretValue",
            serde_json::json!({
                "SecretId": name, "SecretString": "latency",
            }),
        ))?;
        let committed = Instant::now();
        let key = format!("{name}|PutSecretValue");
        // The throughput phase recorded this key already; wait for a new arrival.
        arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .at
            .remove(&key);
        let deadline = committed + Duration::from_secs(10);
        let arrived = loop {
            if let Some(at) = arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .at
                .get(&key)
            {
                break *at;
            }
            anyhow::ensure!(Instant::now() < deadline, "event {key} did not arrive");
            std::thread::sleep(Duration::from_micros(200));
        };
        latencies.push(arrived.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        let rtt = Instant::now();
        load_rt.block_on(async {
            http.post(&url)
                .body(bodies[0].clone())
                .send()
                .await?
                .bytes()
                .await
        })?;
        round_trips.push(rtt.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let (rtt, rtt_lo, rtt_hi) = median_and_spread(round_trips);
    println!(
        "2. latency from PutSecretValue's response to delivery, {SECRETS} writes one at a time"
    );
    println!(
        "   p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        latencies[latencies.len() - 1]
    );
    println!(
        "   reference: one POST round trip to the receiver {rtt:.2} ms [{rtt_lo:.2}..{rtt_hi:.2}]"
    );
    println!("   ratio p50 / round trip {:.1}", p50 / rtt);
    Ok(())
}

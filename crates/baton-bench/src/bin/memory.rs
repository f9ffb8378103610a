//! The server's resident memory with `--secrets` secrets stored and the default cache, idle
//! and under load, against the same server on an empty store in the same run.
//!
//! `memory-bench [--secrets 1000000] [--seconds 10] [--concurrency 64] [--signed 200000]`
//!
//! Both are separate `baton serve` processes (build `baton` first:
//! `cargo build --release -p baton-cli`); RSS is read from `/proc/PID/status`. The load reads
//! `--signed` secrets chosen uniformly at random (signed once before, each request picking one
//! at random), more than the default cache holds, so the cache fills to its bound.

use std::time::{Duration, Instant};

use baton_bench::{flag, rss_kib, runtime, signed_post, spawn_serve};
use serde_json::json;

const READABLE: &str = "bench/readable";

/// RSS now, then the peak and last RSS while `load` runs for `seconds`.
fn under_load(
    pid: u32,
    rt: &tokio::runtime::Runtime,
    templates: &[http::Request<bytes::Bytes>],
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(u64, u64, f64)> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let result = baton_bench::load_spread(rt, templates, concurrency, Duration::from_secs(seconds));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    anyhow::ensure!(result.errors == 0, "{} requests failed", result.errors);
    Ok((peak, rss_kib(pid)?, result.requests_per_second))
}

fn main() -> anyhow::Result<()> {
    let secrets = flag("--secrets", 1_000_000)? as usize;
    let seconds = flag("--seconds", 10)?;
    let concurrency = flag("--concurrency", 64)? as usize;
    let signed = flag("--signed", 200_000)? as usize;
    let full = tempfile::tempdir()?;
    let empty = tempfile::tempdir()?;
    let started = Instant::now();
    runtime("fill")?.block_on(async {
        for (dir, n) in [(full.path(), secrets), (empty.path(), 0)] {
            let ring = baton_crypto::RootKey::load_or_create(&dir.join("root.key"))?.0;
            let store = baton_store::SqliteStore::open(&dir.join("baton.db"))?;
            baton_bench::fill_store(&store, &ring, n, READABLE).await?;
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "filled {secrets} secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let load_rt = runtime("load")?;
    let mut report = Vec::new();
    for (name, dir, n) in [
        ("empty store", empty.path(), 0),
        ("full store", full.path(), secrets),
    ] {
        let (mut child, addr) = spawn_serve(dir, &[])?;
        let measured = (|| -> anyhow::Result<(u64, u64, u64, f64)> {
            std::thread::sleep(Duration::from_secs(2));
            let idle = rss_kib(child.id())?;
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let templates: Vec<_> = (0..signed.min(n.max(1)))
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let id = if n == 0 {
                        READABLE.to_owned()
                    } else {
                        format!("bench/{:07}", rng % n as u64)
                    };
                    signed_post(
                        addr,
                        "secretsmanager.GetSecretValue",
                        &json!({ "SecretId": id }),
                    )
                })
                .collect::<Result<_, _>>()?;
            let (peak, end, rps) =
                under_load(child.id(), &load_rt, &templates, concurrency, seconds)?;
            Ok((idle, peak, end, rps))
        })();
        let _ = child.kill();
        let _ = child.wait();
        let (idle, peak, end, rps) = measured?;
        println!(
            "{name:<12} ({n} secrets): RSS idle {:.1} MiB; under load ({rps:.0} req/s, {seconds} s) peak {:.1} MiB, at the end {:.1} MiB",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            end as f64 / 1024.0
        );
        report.push((idle, peak));
    }
    println!(
        "ratio full / empty: idle {:.2}, peak under load {:.2}",
        report[1].0 as f64 / report[0].0 as f64,
        report[1].1 as f64 / report[0].1 as f64
    );
    Ok(())
}

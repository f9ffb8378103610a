//! `rootkey-bench`: the online rotation of the root key over 100,000 secrets.
//!
//! 1. Re-wrap rate: an embedded store of N secrets, each with its data key wrapped by the root
//!    key; a rotation driven tick by tick as a node drives it (`RootKeys::tick`), timed from
//!    the first tick to retirement (the count, the re-wrap pass and the final check). The reference, in the same run, is the same batches of compare-and-swap
//!    replacements with no cryptography (every blob written back as it was): what the store
//!    alone costs. Rounds alternate; each round is a fresh rotation.
//! 2. GetSecretValue during a re-wrap: `baton serve` in-process on the same store, loaded at
//!    concurrency 64 in 250 ms slices, alternating rounds with no rotation and rounds that run
//!    exactly while a rotation re-wraps; the ratio of throughputs, per round.
//!
//! Run: `cargo run --release -p baton-bench --bin rootkey-bench [-- --secrets 100000 --rounds 5]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_bench::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, flag, median_and_spread, runtime};
use baton_crypto::RootKey;
use baton_store::{SealedKind, SealedReplacement, SqliteStore, Store};

const SECRET_NAME: &str = "bench/db-password";
const ACCOUNT: &str = "123456789012";

fn main() -> anyhow::Result<()> {
    let secrets = flag("--secrets", 100_000)? as usize;
    let rounds = flag("--rounds", 5)? as usize;
    let rt = runtime("rootkey-bench")?;
    rt.block_on(rewrap_rate(secrets, rounds.min(3)))?;
    during_load(&rt, secrets, rounds)
}

/// Writes every root-sealed blob back unchanged, in the re-wrap's batches: the store's cost
/// without the cryptography.
async fn rewrite_unchanged(store: &dyn Store, batch: u32) -> anyhow::Result<u64> {
    let mut written = 0;
    for kind in SealedKind::ALL {
        let mut after = String::new();
        loop {
            let page = store.list_sealed(kind, &after, batch).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            let same: Vec<SealedReplacement> = page
                .iter()
                .map(|b| SealedReplacement {
                    id: b.id.clone(),
                    old: b.blob.clone(),
                    new: b.blob.clone(),
                })
                .collect();
            written += store.replace_sealed(kind, &same).await?;
        }
    }
    Ok(written)
}

async fn rewrap_rate(n: usize, rounds: usize) -> anyhow::Result<()> {
    println!("rootkey-bench: re-wrap of {n} secrets, {rounds} rounds");
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("root.key");
    let ring = Arc::new(RootKey::load_or_create(&key_path)?.0);
    let store = SqliteStore::open(&dir.path().join("baton.db"))?;
    let started = Instant::now();
    baton_bench::fill_store(&store, &ring, n, SECRET_NAME).await?;
    println!("  filled in {:.1} s", started.elapsed().as_secs_f64());
    let store: Arc<dyn Store> = Arc::new(store);
    let batch = baton_api::ROOT_KEY_REWRAP_BATCH_DEFAULT;
    let keys = baton_app::root_keys::RootKeys::start(
        &*store,
        ring.clone(),
        Arc::new(baton_app::root_keys::FileSource { path: key_path }),
        "bench-node".into(),
        batch,
        baton_app::now_ms(),
    )
    .await?;
    let mut baton = baton_app::Baton::new(
        store.clone(),
        ring.clone(),
        ACCOUNT.into(),
        vec!["us-east-1".into()],
    );
    baton.root_keys = Some(keys.clone());

    let (mut rewrap_s, mut reference_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        let unchanged = rewrite_unchanged(&*store, batch as u32).await?;
        let reference = started.elapsed().as_secs_f64();

        baton
            .rotate_root_key(baton_proto::RotateRootKeyRequest::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Tick as a node does, without the second between ticks: the count, the pass and the
        // final check, from the promotion to the retirement.
        let started = Instant::now();
        let mut ticks = 0;
        let rewrapped = loop {
            ticks += 1;
            keys.tick(&*store, baton_app::now_ms())
                .await
                .map_err(anyhow::Error::msg)?;
            let after = status(&baton).await?;
            if after.phase.as_deref() == Some("Retired") {
                break after.rewrapped_count.unwrap_or(0);
            }
            anyhow::ensure!(ticks < 20, "the rotation did not finish: {after:?}");
        };
        let pass = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            rewrapped as usize > n,
            "the rotation re-wrapped every secret"
        );
        println!(
            "  round {}: rotation re-wrapped {rewrapped} blobs in {pass:.2} s ({:.0}/s, {ticks} ticks); reference: {unchanged} unchanged in {reference:.2} s ({:.0}/s)",
            round + 1,
            rewrapped as f64 / pass,
            unchanged as f64 / reference
        );
        rewrap_s.push(rewrapped as f64 / pass);
        reference_s.push(unchanged as f64 / reference);
        ratios.push(pass / reference);
    }
    let (r, r_lo, r_hi) = median_and_spread(rewrap_s);
    let (f, f_lo, f_hi) = median_and_spread(reference_s);
    let (q, q_lo, q_hi) = median_and_spread(ratios);
    println!("re-wrap rate: median {r:.0} blobs/s [{r_lo:.0}..{r_hi:.0}]");
    println!(
        "reference (same batches, no cryptography): median {f:.0} blobs/s [{f_lo:.0}..{f_hi:.0}]"
    );
    println!("re-wrap time / reference time: median {q:.2} [{q_lo:.2}..{q_hi:.2}]");
    Ok(())
}

async fn status(baton: &baton_app::Baton) -> anyhow::Result<baton_proto::DescribeRootKeyResponse> {
    baton
        .describe_root_key(Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn during_load(rt: &tokio::runtime::Runtime, n: usize, rounds: usize) -> anyhow::Result<()> {
    println!();
    println!("GetSecretValue at concurrency 64 with and without a re-wrap of {n} secrets");
    let dir = tempfile::tempdir()?;
    prepare_data_dir(rt, dir.path(), n)?;
    let server_rt = runtime("rootkey-server")?;
    let options =
        baton_api::ServeOptions::embedded_for_tests(dir.path(), ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let addr = baton_bench::start_options(&server_rt, options)?;
    let get = baton_bench::signed_post(
        addr,
        "secretsmanager.GetSecretValue",
        &serde_json::json!({ "SecretId": SECRET_NAME }),
    )?;
    let client = baton_bench::admin_client(addr)?;
    let describe = || -> anyhow::Result<baton_proto::DescribeRootKeyResponse> {
        Ok(rt.block_on(client.call("baton.DescribeRootKey", &serde_json::json!({})))?)
    };
    let slice = Duration::from_millis(250);
    let warm = baton_bench::load(rt, &get, 64, Duration::from_secs(1));
    anyhow::ensure!(warm.errors == 0, "the warm-up failed");
    let (mut idle, mut busy, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Under a rotation: from the moment the re-wrap starts until it ends.
        let _: baton_proto::DescribeRootKeyResponse =
            rt.block_on(client.call("baton.RotateRootKey", &serde_json::json!({})))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while describe()?.phase.as_deref() == Some("Added") {
            anyhow::ensure!(Instant::now() < deadline, "the rotation was not promoted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (mut requests, mut errors, mut slices) = (0.0, 0, 0u32);
        let started = Instant::now();
        while describe()?.phase.as_deref() == Some("Promoted") {
            let r = baton_bench::load(rt, &get, 64, slice);
            requests += r.requests_per_second * slice.as_secs_f64();
            errors += r.errors;
            slices += 1;
        }
        let busy_s = started.elapsed().as_secs_f64();
        if slices == 0 {
            println!(
                "  round {}: the re-wrap ended before a slice could run; use more secrets",
                round + 1
            );
            continue;
        }
        let with = requests / (f64::from(slices) * slice.as_secs_f64());
        // The same number of slices with no rotation.
        let (mut idle_requests, mut idle_errors) = (0.0, 0);
        for _ in 0..slices {
            let r = baton_bench::load(rt, &get, 64, slice);
            idle_requests += r.requests_per_second * slice.as_secs_f64();
            idle_errors += r.errors;
        }
        let without = idle_requests / (f64::from(slices) * slice.as_secs_f64());
        anyhow::ensure!(
            errors == 0 && idle_errors == 0,
            "failed requests: {errors} during, {idle_errors} without"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while describe()?.phase.as_deref() != Some("Retired") {
            anyhow::ensure!(Instant::now() < deadline, "the rotation did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "  round {}: re-wrap lasted {busy_s:.1} s ({slices} slices); {with:.0} req/s during, {without:.0} req/s without: {:.2}",
            round + 1,
            with / without
        );
        idle.push(without);
        busy.push(with);
        ratios.push(with / without);
    }
    let (w, w_lo, w_hi) = median_and_spread(busy);
    let (o, o_lo, o_hi) = median_and_spread(idle);
    let (q, q_lo, q_hi) = median_and_spread(ratios);
    println!("during a re-wrap: median {w:.0} req/s [{w_lo:.0}..{w_hi:.0}]");
    println!("without one:      median {o:.0} req/s [{o_lo:.0}..{o_hi:.0}]");
    println!("ratio during / without, per round: median {q:.2} [{q_lo:.2}..{q_hi:.2}]");
    Ok(())
}

/// A data directory with a root key file and a store of `n` secrets it wraps.
fn prepare_data_dir(rt: &tokio::runtime::Runtime, dir: &Path, n: usize) -> anyhow::Result<()> {
    rt.block_on(async {
        let ring = RootKey::load_or_create(&dir.join("root.key"))?.0;
        let store = SqliteStore::open(&dir.join("baton.db"))?;
        baton_bench::fill_store(&store, &ring, n, SECRET_NAME).await
    })
}

//! The console's costs, on an in-process server over a store of `--secrets` secrets:
//!
//! 1. server time to answer each page (sequential requests on one connection, so the time is
//!    the server's plus one loopback round trip), against the console's stylesheet on the same
//!    server in the same rounds (fixed bytes, no session, no operation): the reference;
//! 2. each page's weight, with the stylesheet and the script;
//! 3. the delay from a consumer's report (`baton.ReportConsumer` returning) to the rotation
//!    page's live stream carrying it.
//!
//! The overview is measured with `--rotations` rotations in flight, each held at its
//! propagation gate by a reporting consumer that never takes the new version.
//!
//! `console-bench [--secrets 100000] [--rotations 1000] [--rounds 5] [--requests 100]
//! [--reports 200]`

use std::time::{Duration, Instant};

use baton_bench::{SECRET_ACCESS_KEY, flag, median_and_spread, runtime};

const READABLE: &str = "bench/console";

fn main() -> anyhow::Result<()> {
    let secrets = flag("--secrets", 100_000)? as usize;
    let rounds = flag("--rounds", 5)? as usize;
    let requests = flag("--requests", 100)? as usize;
    let reports = flag("--reports", 200)? as usize;
    let rotations = flag("--rotations", 1_000)? as usize;
    let rt = runtime("console-bench")?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    rt.block_on(async {
        let ring = baton_crypto::RootKey::load_or_create(&dir.path().join("root.key"))?.0;
        let store = baton_store::SqliteStore::open(&dir.path().join("baton.db"))?;
        baton_bench::fill_store(&store, &ring, secrets, READABLE).await
    })?;
    eprintln!(
        "filled {secrets} secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let addr = baton_bench::start_baton(&rt, dir.path())?;
    rt.block_on(async {
        let started = Instant::now();
        hold_rotations(addr, rotations).await?;
        eprintln!(
            "{rotations} rotations held at their gates in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        run(addr, secrets, rotations, rounds, requests, reports).await
    })
}

/// Starts `n` rotations of new secrets, each held at the propagation gate by a consumer that
/// reports only the old version, and waits until every one waits there.
async fn hold_rotations(addr: std::net::SocketAddr, n: usize) -> anyhow::Result<()> {
    use serde_json::json;
    let client = baton_bench::admin_client(addr)?;
    let described: baton_proto::DescribeSecretResponse = client
        .call(
            "secretsmanager.DescribeSecret",
            &json!({"SecretId": READABLE}),
        )
        .await?;
    let account = described
        .arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(4))
        .ok_or_else(|| anyhow::anyhow!("no account in the readable secret's ARN"))?
        .to_owned();
    let lambda = format!("arn:aws:lambda:us-east-1:{account}:function:baton-random");
    for i in 0..n {
        let name = format!("bench/rotating/{i:05}");
        let created: baton_proto::ArnNameVersionResponse = client
            .call(
                "secretsmanager.CreateSecret",
                &json!({"Name": name, "SecretString": "first"}),
            )
            .await?;
        let version = created.version_id.unwrap_or_default();
        let _: serde_json::Value = client
            .call(
                "baton.PutRotationPolicy",
                &json!({"SecretId": name, "PropagationDelaySeconds": 3600,
                        "MaxGateWaitSeconds": 3600}),
            )
            .await?;
        let _: serde_json::Value = client
            .call(
                "baton.ReportConsumer",
                &json!({"Application": "bench-lagging", "InstanceId": format!("i-{i}"),
                        "LeaseSeconds": 600,
                        "Holdings": [{"SecretId": name, "CurrentVersionId": version,
                                      "AcceptedVersionIds": [version]}]}),
            )
            .await?;
        let _: serde_json::Value = client
            .call(
                "secretsmanager.RotateSecret",
                &json!({"SecretId": name, "RotationLambdaARN": lambda}),
            )
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open: baton_proto::ListOpenRotationsResponse = client
            .call("baton.ListOpenRotations", &json!({"MaxResults": 10_000}))
            .await?;
        let waiting = open
            .rotations
            .unwrap_or_default()
            .iter()
            .filter(|r| r.waiting_gate.as_deref() == Some("propagation"))
            .count();
        if waiting >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {waiting} of {n} rotations reached their gate in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(
    addr: std::net::SocketAddr,
    secrets: usize,
    rotations: usize,
    rounds: usize,
    requests: usize,
    reports: usize,
) -> anyhow::Result<()> {
    let base = format!("http://{addr}/console");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1)
        .build()?;
    let cookie = sign_in(&http, &base).await?;
    let readable = format!("{base}/secrets/{}", READABLE.replace('/', "%2F"));
    let overview = format!("overview, {rotations} rotations in flight");
    let pages = [
        (overview.as_str(), format!("{base}/overview")),
        ("secrets, first page", format!("{base}/secrets")),
        (
            "secrets, search for one name's word",
            format!("{base}/secrets?q=0099123"),
        ),
        (
            "secrets, search matching every secret",
            format!("{base}/secrets?q=bench"),
        ),
        ("a secret", readable.clone()),
        ("a rotation", format!("{readable}/rotation")),
        ("audit", format!("{base}/audit")),
    ];
    let reference = format!("{base}/assets/console.css");
    // Warm-up: the cache, the connection.
    for (_, url) in &pages {
        get(&http, url, &cookie).await?;
    }
    let mut per_page: Vec<Vec<f64>> = vec![Vec::new(); pages.len()];
    let mut reference_ms = Vec::new();
    for _ in 0..rounds {
        for (i, (_, url)) in pages.iter().enumerate() {
            per_page[i].extend(time_gets(&http, url, &cookie, requests).await?);
            reference_ms.extend(time_gets(&http, &reference, &cookie, requests).await?);
        }
    }
    let (ref_p50, _, _) = median_and_spread(reference_ms.clone());
    println!(
        "## console pages over {secrets} secrets and {rotations} rotations in flight \
         ({rounds} rounds of {requests} requests)"
    );
    println!("| page | p50 ms | p90 ms | min..max of round medians | p50 / reference p50 |");
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in pages.iter().enumerate() {
        let all = per_page[i].clone();
        let (p50, _, _) = median_and_spread(all.clone());
        let p90 = percentile(all.clone(), 0.9);
        let medians: Vec<f64> = all
            .chunks(requests)
            .map(|c| median_and_spread(c.to_vec()).0)
            .collect();
        let (_, lo, hi) = median_and_spread(medians);
        println!(
            "| {name} | {p50:.2} | {p90:.2} | {lo:.2}..{hi:.2} | {:.1} |",
            p50 / ref_p50
        );
    }
    println!(
        "| reference: console.css | {ref_p50:.3} | {:.3} | | 1 |",
        percentile(reference_ms, 0.9)
    );

    let css = get(&http, &reference, &cookie).await?.len();
    let js = get(&http, &format!("{base}/assets/console.js"), &cookie)
        .await?
        .len();
    println!(
        "\n## page weight (uncompressed bytes: the page + console.css {css} + console.js {js})"
    );
    println!("| page | HTML | with assets |");
    println!("|---|---|---|");
    for (name, url) in &pages {
        let html = get(&http, url, &cookie).await?.len();
        println!("| {name} | {html} | {} |", html + css + js);
    }

    report_delay(&http, addr, &readable, &cookie, reports).await
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Signs in through the form; returns the session cookie.
async fn sign_in(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let form = http.get(format!("{base}/")).send().await?;
    let pre = cookie_of(&form, "baton_sign_in")?;
    let html = form.text().await?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no CSRF token in the sign-in form"))?
        .to_owned();
    let answer = http
        .post(format!("{base}/sign-in"))
        .header("cookie", format!("baton_sign_in={pre}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("csrf", &csrf)
                .append_pair("access_key_id", baton_bench::ACCESS_KEY_ID)
                .append_pair("secret_access_key", SECRET_ACCESS_KEY)
                .append_pair("region", "us-east-1")
                .finish(),
        )
        .send()
        .await?;
    anyhow::ensure!(
        answer.status() == 303,
        "sign-in answered {}",
        answer.status()
    );
    Ok(format!(
        "baton_session={}",
        cookie_of(&answer, "baton_session")?
    ))
}

fn cookie_of(response: &reqwest::Response, name: &str) -> anyhow::Result<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {name} cookie"))
}

async fn get(http: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<bytes::Bytes> {
    let r = http.get(url).header("cookie", cookie).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url} answered {}", r.status());
    Ok(r.bytes().await?)
}

async fn time_gets(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        get(http, url, cookie).await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Opens the rotation page's live stream, then reports consumers one at a time, each under a
/// new instance id, and times each report's appearance in the stream.
async fn report_delay(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    readable: &str,
    cookie: &str,
    reports: usize,
) -> anyhow::Result<()> {
    let client = baton_bench::admin_client(addr)?;
    let described: baton_proto::DescribeSecretResponse = client
        .call(
            "secretsmanager.DescribeSecret",
            &serde_json::json!({"SecretId": READABLE}),
        )
        .await?;
    let version = described
        .version_ids_to_stages
        .unwrap_or_default()
        .into_keys()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the readable secret has no version"))?;
    let live = http
        .get(format!("{readable}/rotation/live"))
        .header("cookie", cookie)
        .send()
        .await?;
    anyhow::ensure!(
        live.status().is_success(),
        "live answered {}",
        live.status()
    );
    let mut live = live;
    let mut seen = String::new();
    let mut delays = Vec::with_capacity(reports);
    for k in 0..reports {
        let instance = format!("bench-instance-{k:05}");
        let _: serde_json::Value = client
            .call(
                "baton.ReportConsumer",
                &serde_json::json!({
                    "Application": "console-bench", "InstanceId": instance, "LeaseSeconds": 600,
                    "Holdings": [{"SecretId": READABLE, "CurrentVersionId": version,
                                  "AcceptedVersionIds": [version]}]}),
            )
            .await?;
        let reported = Instant::now();
        loop {
            if let Some(at) = seen.find(&instance) {
                seen.drain(..at + instance.len());
                break;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
                .await
                .map_err(|_| anyhow::anyhow!("no update for report {k} within 10 s"))??
                .ok_or_else(|| anyhow::anyhow!("the live stream ended"))?;
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        delays.push(reported.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, lo, hi) = median_and_spread(delays.clone());
    println!("\n## report to live view ({reports} reports, one at a time)");
    println!("| p50 ms | p99 ms | min..max ms |");
    println!("|---|---|---|");
    println!(
        "| {p50:.1} | {:.1} | {lo:.1}..{hi:.1} |",
        percentile(delays, 0.99)
    );
    Ok(())
}

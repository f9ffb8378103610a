//! Service A: signs each request with the current HMAC key, `kid` = its version id, and sends
//! it to the verifiers in turn.
//!
//! `hmac-signer --secret ID --verifiers URL,URL --interval-ms N --stats FILE`. It counts what
//! the verifiers accepted and refused until it is stopped with SIGTERM.

use std::time::Duration;

use rotating_keys::{Stats, arg, keyring_from_env, sign};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = arg("--secret")?;
    let verifiers: Vec<String> = arg("--verifiers")?
        .split(',')
        .map(|u| format!("{}/verify", u.trim_end_matches('/')))
        .collect();
    let interval = Duration::from_millis(arg("--interval-ms")?.parse()?);
    let stats_path = std::path::PathBuf::from(arg("--stats")?);
    let stats = Stats::new(&["sent", "accepted", "refused", "unreachable"]);
    let cache = keyring_from_env(&secret, "hmac-signer").await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let sender = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let instance = cache.instance_id().to_owned();
            for n in 0u64.. {
                let message = format!("{instance}:{n}");
                let signature = {
                    let ring = cache.keyring();
                    match ring.current() {
                        Some(key) => sign(key, message.as_bytes()),
                        None => continue,
                    }
                };
                let url = &verifiers[n as usize % verifiers.len()];
                stats.add("sent", 1);
                match http
                    .post(url)
                    .header("x-signature", signature)
                    .body(message)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => stats.add("accepted", 1),
                    Ok(_) => stats.add("refused", 1),
                    Err(_) => stats.add("unreachable", 1),
                }
                tokio::time::sleep(interval).await;
            }
        })
    };
    stats.publish_until_stopped(stats_path).await;
    sender.abort();
    Ok(())
}

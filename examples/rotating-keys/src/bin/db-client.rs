//! A database client that opens a new connection for every request with the credentials it
//! holds now, from its keyring cache: the load that a database rotation must not break.
//!
//! `db-client --secret ID --interval-ms N --stats FILE`. It counts connections that worked and
//! failed until SIGTERM; a failure's first message is kept in the stats as `first_failure`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotating_keys::{Stats, arg, keyring_from_env};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = arg("--secret")?;
    let interval = Duration::from_millis(arg("--interval-ms")?.parse()?);
    let stats_path = std::path::PathBuf::from(arg("--stats")?);
    let stats = Stats::new(&["connected", "failed"]);
    let first_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let cache = keyring_from_env(&secret, "db-client").await?;
    let worker = {
        let (stats, first_failure) = (stats.clone(), first_failure.clone());
        tokio::spawn(async move {
            loop {
                let credentials = {
                    let ring = cache.keyring();
                    ring.current()
                        .map(|v| baton_dbrotate::DbSecret::parse(v.expose_secret()))
                };
                let outcome = match credentials {
                    Some(Ok(db)) => baton_dbrotate::check_login(&db, &db.username, &db.password)
                        .await
                        .map_err(|e| e.to_string()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("no current version".to_owned()),
                };
                match outcome {
                    Ok(()) => stats.add("connected", 1),
                    Err(e) => {
                        stats.add("failed", 1);
                        first_failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    };
    let path = stats_path.clone();
    stats.clone().publish_until_stopped(path).await;
    worker.abort();
    let mut json = stats.to_json();
    if let Some(e) = first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        json["first_failure"] = e.into();
    }
    std::fs::write(&stats_path, json.to_string())?;
    Ok(())
}

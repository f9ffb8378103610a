//! baton-client's keyring cache against a real server over loopback: the watch delivers a new
//! version (in its own answer, with no fetch after it, and the next watch reports it), and unknown version ids cause one refresh at most per interval however many
//! callers ask at once.

mod common;

use std::time::Duration;

use baton_client::Client;
use baton_client::keyring::{KeyringCache, KeyringOptions};

async fn server(dir: &std::path::Path) -> Client {
    common::start(dir, std::future::pending()).await.0
}

async fn call(client: &Client, target: &str, body: serde_json::Value) -> serde_json::Value {
    client.call(target, &body).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_delivers_new_versions_and_unknown_ids_refresh_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path()).await;
    let first = call(
        &client,
        "secretsmanager.CreateSecret",
        serde_json::json!({"Name": "app/key", "SecretString": "one"}),
    )
    .await["VersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut options = KeyringOptions::new("test");
    options.unknown_refresh_interval = Duration::from_secs(60);
    let cache = KeyringCache::start(client.clone(), "app/key", options)
        .await
        .unwrap();
    assert_eq!(cache.keyring().current().unwrap().version_id(), first);
    assert_eq!(cache.keyring().current().unwrap().expose_secret(), b"one");

    // Fifty callers ask for an id nobody has: one refresh, then the interval holds.
    let before = cache.refreshes();
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .find_or_refresh("f0f0f0f0-0000-4000-8000-000000000000")
                    .await
            })
        })
        .collect();
    for lookup in lookups {
        assert!(lookup.await.unwrap().is_none());
    }
    assert_eq!(cache.refreshes() - before, 1, "single flight");
    assert!(
        cache
            .find_or_refresh("f0f0f0f0-0000-4000-8000-000000000001")
            .await
            .is_none()
    );
    assert_eq!(cache.refreshes() - before, 1, "rate-limited");

    // A new pending version reaches the cache through the watch alone.
    let mut changes = cache.changes();
    let pending = call(
        &client,
        "secretsmanager.PutSecretValue",
        serde_json::json!({"SecretId": "app/key", "SecretString": "two", "VersionStages": ["AWSPENDING"]}),
    )
    .await["VersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::timeout(Duration::from_secs(10), async {
        while cache.keyring().find(&pending).is_none() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the watch delivered the pending version");
    let ring = cache.keyring();
    assert_eq!(
        ring.current().unwrap().version_id(),
        first,
        "pending is accepted, not used"
    );
    assert_eq!(ring.find(&pending).unwrap().expose_secret(), b"two");
    // In the watch's answer: no keyring fetch of its own after the write.
    let log = call(
        &client,
        "baton.ListAuditEntries",
        serde_json::json!({"AfterSeq": -200, "MaxResults": 200}),
    )
    .await;
    let entries = log["Entries"].as_array().unwrap();
    let put_at = entries
        .iter()
        .rposition(|e| e["Action"] == "secretsmanager:PutSecretValue")
        .unwrap();
    let after: Vec<_> = entries[put_at..]
        .iter()
        .map(|e| (e["Action"].as_str().unwrap(), e["Reason"].as_str().unwrap()))
        .collect();
    assert!(
        after.iter().all(|(a, _)| *a != "baton:GetSecretKeyring"),
        "{after:?}"
    );
    assert!(
        after.iter().any(|(a, r)| *a == "baton:WatchSecrets"
            && r.contains("answered with the keyrings of app/key")),
        "{after:?}"
    );

    // The server knows what this instance holds once the next watch says so (the answer is not
    // a report), well before the first heartbeat (a third of the 30 s lease).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let consumers = call(
            &client,
            "baton.ListConsumers",
            serde_json::json!({"SecretId": "app/key"}),
        )
        .await;
        let held = &consumers["Consumers"][0];
        assert_eq!(held["InstanceId"], cache.instance_id());
        if held["AcceptedVersionIds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == pending.as_str())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next watch did not report the pending version: {held}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

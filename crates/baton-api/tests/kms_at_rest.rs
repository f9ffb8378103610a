//! KMS key material never sits on disk in the clear: after a key is created and rotated
//! through a running server, each version's material (read back through the root key, as the
//! server does) appears nowhere in the database file or its WAL.

mod common;

use std::time::Duration;

use baton_crypto::RootKey;
use baton_store::{SqliteStore, Store};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_material_is_only_on_disk_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (client, running) = common::start(dir.path(), async move {
        let _ = stopped.await;
    })
    .await;
    let mut arns = Vec::new();
    for spec in ["SYMMETRIC_DEFAULT", "HMAC_256", "ECC_NIST_P256"] {
        let out: Value = client
            .call("TrentService.CreateKey", &json!({"KeySpec": spec}))
            .await
            .unwrap();
        let key = out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
        let _: Value = client
            .call(
                "baton.PutRotationPolicy",
                &json!({"KeyId": key, "PropagationDelaySeconds": 0, "RetireGraceSeconds": 0}),
            )
            .await
            .unwrap();
        let _: Value = client
            .call("TrentService.RotateKeyOnDemand", &json!({"KeyId": key}))
            .await
            .unwrap();
        arns.push(out["KeyMetadata"]["Arn"].as_str().unwrap().to_owned());
    }
    for arn in &arns {
        let mut finished = false;
        for _ in 0..400 {
            let status: Value = client
                .call("TrentService.GetKeyRotationStatus", &json!({"KeyId": arn}))
                .await
                .unwrap();
            if status.get("OnDemandRotationStartDate").is_none() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(finished, "rotation of {arn} finished");
    }
    stop.send(()).unwrap();
    running.await.unwrap();
    // The data directory stays locked until the server's last task has dropped its store, and
    // its connections checkpoint and remove the WAL as they close: wait for the lock rather
    // than copy files that are still changing.
    let mut store = None;
    for _ in 0..400 {
        match SqliteStore::open(&dir.path().join("baton.db")) {
            Ok(opened) => {
                store = Some(opened);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    let store = store.expect("the stopped server released its data directory within 10 s");
    let (root_key, created) = RootKey::load_or_create(&dir.path().join("root.key")).unwrap();
    assert!(!created, "the server's root key is read, not a new one");
    let mut files = Vec::new();
    for name in ["baton.db", "baton.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            files.push(bytes);
        }
    }
    let mut checked = 0;
    for arn in &arns {
        let key = store.find_secret_by_arn(arn).await.unwrap().unwrap();
        assert!(key.versions.len() >= 2, "{arn} rotated");
        for version in &key.versions {
            let material =
                baton_engine::keywrap::key_material(&root_key, &key, &version.version_id).unwrap();
            assert!(material.len() >= 32);
            // The test is meaningful only if the files could hold it: search every window.
            for file in &files {
                assert!(
                    !file.windows(material.len()).any(|w| w == material.expose()),
                    "key material of {arn} version {} is on disk in the clear",
                    version.version_id
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6);
}

//! baton-client's JWT verifier against a real server's JWKS over loopback: tokens signed by
//! Baton's KMS Sign verify through rotations, concurrent verifications of a new `kid` cause one
//! fetch, made-up `kid`s cannot make it fetch more than once per interval, and forged or
//! expired tokens are refused.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use baton_client::Client;
use baton_client::jwks::{JwksOptions, JwksVerifier, JwtError};
use serde_json::{Value, json};

async fn server(dir: &std::path::Path) -> Client {
    common::start(dir, std::future::pending()).await.0
}

async fn call(client: &Client, target: &str, body: Value) -> Value {
    client.call(target, &body).await.unwrap()
}

async fn current(client: &Client, key: &str) -> String {
    call(client, "TrentService.DescribeKey", json!({"KeyId": key})).await["KeyMetadata"]
        ["BatonCurrentKeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A JWT signed by Baton with the current version, named as its kid.
async fn token(client: &Client, key: &str, claims: Value) -> String {
    let kid = current(client, key).await;
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!(
        "{}.{}",
        enc(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
        enc(&claims)
    );
    let out = call(
        client,
        "TrentService.Sign",
        json!({"KeyId": key, "Message": STANDARD.encode(&input),
               "SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256", "BatonKeyVersionId": kid}),
    )
    .await;
    let sig = STANDARD.decode(out["Signature"].as_str().unwrap()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

async fn rotate(client: &Client, key: &str) -> String {
    let version = call(
        client,
        "TrentService.RotateKeyOnDemand",
        json!({"KeyId": key}),
    )
    .await["BatonKeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..400 {
        let status = call(
            client,
            "TrentService.GetKeyRotationStatus",
            json!({"KeyId": key}),
        )
        .await;
        if status.get("OnDemandRotationStartDate").is_none() {
            return version;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("rotation of {key} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_through_rotations_and_new_kids_are_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path()).await;
    let key = call(
        &client,
        "TrentService.CreateKey",
        json!({"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"}),
    )
    .await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    // A long cache (propagation delay 600 s: max-age 300 s), so only unknown kids refresh.
    call(
        &client,
        "baton.PutRotationPolicy",
        json!({"KeyId": key, "PropagationDelaySeconds": 600, "RetireGraceSeconds": 0}),
    )
    .await;
    let verifier = JwksVerifier::new(
        client.endpoint(),
        &key,
        JwksOptions {
            unknown_kid_interval: Duration::from_millis(300),
            ..JwksOptions::default()
        },
    )
    .unwrap();
    let first = token(&client, &key, json!({"sub": "a"})).await;
    assert_eq!(verifier.verify(&first).await.unwrap()["sub"], "a");
    assert_eq!(verifier.fetches(), 1);

    // Drop the delay so the rotation promotes at once: the verifier's cache is now behind.
    call(
        &client,
        "baton.PutRotationPolicy",
        json!({"KeyId": key, "PropagationDelaySeconds": 0, "RetireGraceSeconds": 0}),
    )
    .await;
    let new_version = rotate(&client, &key).await;
    call(
        &client,
        "baton.PutRotationPolicy",
        json!({"KeyId": key, "PropagationDelaySeconds": 600, "RetireGraceSeconds": 0}),
    )
    .await;
    let second = token(&client, &key, json!({"sub": "b"})).await;
    assert!(
        second.starts_with(
            &URL_SAFE_NO_PAD
                .encode(json!({"alg": "RS256", "typ": "JWT", "kid": new_version}).to_string())
        )
    );
    // Twenty verifications of the new kid at once: one fetch.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (v, t) = (verifier.clone(), second.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap()["sub"], "b");
    }
    assert_eq!(verifier.fetches(), 2, "single flight");
    assert_eq!(verifier.kids().await, vec![new_version.clone()]);

    // Made-up kids: at most one fetch per interval, however many tokens name them.
    let forged_header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "nope"}).to_string());
    let rest = second.split_once('.').unwrap().1;
    let forged = format!("{forged_header}.{rest}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..10 {
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(JwtError::UnknownKid(_))
        ));
    }
    assert_eq!(verifier.fetches(), 3);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(verifier.verify(&forged).await.is_err());
    assert_eq!(verifier.fetches(), 4);

    // A token altered after signing, and one that has expired.
    let mut altered = second.clone();
    altered.insert(second.find('.').unwrap() + 1, 'e');
    assert!(verifier.verify(&altered).await.is_err());
    let expired = token(&client, &key, json!({"sub": "c", "exp": 1_000})).await;
    assert!(matches!(
        verifier.verify(&expired).await,
        Err(JwtError::Expired)
    ));
    // The retired first version is gone from the JWKS: its token no longer verifies.
    assert!(matches!(
        verifier.verify(&first).await,
        Err(JwtError::UnknownKid(_))
    ));
}

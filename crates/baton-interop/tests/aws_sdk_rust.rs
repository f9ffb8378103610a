//! The AWS SDK for Rust (`aws-sdk-secretsmanager`, `aws-sdk-kms`, pinned in Cargo.toml) against
//! a Baton server on loopback HTTP: the secret lifecycle with a paginator, rotation
//! configuration, a resource policy, and KMS encrypt/decrypt, data keys and signatures.
//! Once on the embedded store and once on PostgreSQL (`BATON_TEST_POSTGRES_URL`; the test
//! named `…postgres` is left out by scripts/test when it is unset).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, RotationRulesType, Tag};
use baton_api::{ServeOptions, Server, StoreChoice};

const KEY_ID: &str = "BTNRUSTSDKTEST000001";
const SECRET: &str = "rust-sdk-test-secret-access-key-00000000";

struct Running {
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(store: StoreChoice) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::embedded_for_tests(dir.path(), KEY_ID, SECRET);
    options.store = store;
    let server = Server::bind(options).await.unwrap();
    let endpoint = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        endpoint,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        (&mut self.task).await.unwrap();
    }
}

fn clients(endpoint: &str) -> (aws_sdk_secretsmanager::Client, aws_sdk_kms::Client) {
    let credentials = Credentials::new(KEY_ID, SECRET, None, None, "baton-test");
    let sm = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials.clone())
        .endpoint_url(endpoint)
        .build();
    let kms = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .build();
    (
        aws_sdk_secretsmanager::Client::from_conf(sm),
        aws_sdk_kms::Client::from_conf(kms),
    )
}

async fn secrets(sm: &aws_sdk_secretsmanager::Client) {
    let created = sm
        .create_secret()
        .name("rust/db")
        .secret_string(r#"{"username":"app","password":"first-rust-value"}"#)
        .description("made by the Rust SDK")
        .tags(Tag::builder().key("team").value("payments").build())
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_owned();
    assert!(arn.starts_with("arn:aws:secretsmanager:us-east-1:123456789012:secret:rust/db-"));
    let put = sm
        .put_secret_value()
        .secret_id("rust/db")
        .secret_string(r#"{"username":"app","password":"second-rust-value"}"#)
        .send()
        .await
        .unwrap();
    let current = sm.get_secret_value().secret_id(&arn).send().await.unwrap();
    assert_eq!(current.version_id(), put.version_id());
    assert_eq!(current.version_stages(), ["AWSCURRENT"]);
    assert!(
        current
            .secret_string()
            .unwrap()
            .contains("second-rust-value")
    );
    let previous = sm
        .get_secret_value()
        .secret_id("rust/db")
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(previous.version_id(), created.version_id());

    // A second secret, then the paginator walks both a page at a time.
    sm.create_secret()
        .name("rust/api")
        .secret_string("api-rust-value")
        .send()
        .await
        .unwrap();
    let pages: Vec<_> = sm
        .list_secrets()
        .filters(
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values("rust/")
                .build(),
        )
        .max_results(1)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let mut names: Vec<String> = pages
        .iter()
        .flat_map(|p| p.secret_list())
        .map(|s| s.name().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["rust/api", "rust/db"]);
    assert!(
        pages.len() >= 2,
        "one secret per page: {} pages",
        pages.len()
    );

    sm.rotate_secret()
        .secret_id("rust/db")
        .rotation_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:baton-random")
        .rotation_rules(
            RotationRulesType::builder()
                .schedule_expression("rate(10 days)")
                .build(),
        )
        .rotate_immediately(false)
        .send()
        .await
        .unwrap();
    let described = sm
        .describe_secret()
        .secret_id("rust/db")
        .send()
        .await
        .unwrap();
    assert_eq!(described.rotation_enabled(), Some(true));
    assert_eq!(
        described.rotation_rules().unwrap().schedule_expression(),
        Some("rate(10 days)")
    );
    assert!(described.next_rotation_date().is_some());
    assert_eq!(described.tags().len(), 1);

    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    sm.put_resource_policy()
        .secret_id("rust/db")
        .resource_policy(policy)
        .send()
        .await
        .unwrap();
    let got = sm
        .get_resource_policy()
        .secret_id("rust/db")
        .send()
        .await
        .unwrap();
    assert!(
        got.resource_policy()
            .unwrap()
            .contains("secretsmanager:GetSecretValue")
    );

    let missing = sm
        .describe_secret()
        .secret_id("rust/none")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(missing.is_resource_not_found_exception(), "{missing:?}");
    let deleted = sm
        .delete_secret()
        .secret_id("rust/db")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.arn(), Some(arn.as_str()));
}

async fn keys(kms: &aws_sdk_kms::Client) {
    let key = kms
        .create_key()
        .description("rust key")
        .send()
        .await
        .unwrap();
    let meta = key.key_metadata().unwrap();
    let key_id = meta.key_id().to_owned();
    let key_arn = meta.arn().unwrap().to_owned();
    kms.create_alias()
        .alias_name("alias/rust")
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let sealed = kms
        .encrypt()
        .key_id("alias/rust")
        .plaintext(Blob::new("rust plaintext"))
        .encryption_context("tenant", "t-1")
        .send()
        .await
        .unwrap();
    assert_eq!(sealed.key_id(), Some(key_arn.as_str()));
    let data = kms
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(data.plaintext().unwrap().as_ref().len(), 32);
    for _ in 0..2 {
        kms.rotate_key_on_demand()
            .key_id(&key_id)
            .send()
            .await
            .unwrap();
    }
    let rotations = kms
        .list_key_rotations()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations.rotations().len(), 2);
    let opened = kms
        .decrypt()
        .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
        .encryption_context("tenant", "t-1")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"rust plaintext");
    assert_eq!(opened.key_id(), Some(key_arn.as_str()));
    let wrong = kms
        .decrypt()
        .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
        .encryption_context("tenant", "t-2")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(wrong.is_invalid_ciphertext_exception(), "{wrong:?}");

    let signer = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let signer = signer.key_metadata().unwrap().key_id().to_owned();
    let signature = kms
        .sign()
        .key_id(&signer)
        .message(Blob::new("signed"))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    let verified = kms
        .verify()
        .key_id(&signer)
        .message(Blob::new("signed"))
        .signature(signature.signature().unwrap().clone())
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    assert!(verified.signature_valid());

    let aliases: Vec<_> = kms
        .list_aliases()
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert!(
        aliases.iter().any(|a| a.alias_name() == Some("alias/rust")),
        "{aliases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_works_against_the_embedded_store() {
    let running = start(StoreChoice::Sqlite).await;
    let (sm, kms) = clients(&running.endpoint);
    secrets(&sm).await;
    keys(&kms).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_works_against_postgres() {
    let url = std::env::var("BATON_TEST_POSTGRES_URL")
        .expect("BATON_TEST_POSTGRES_URL names the PostgreSQL server for this test");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = format!("baton_rust_sdk_{}", std::process::id());
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let (base, _) = url.rsplit_once('/').unwrap();
    let running = start(StoreChoice::Postgres(format!("{base}/{name}"))).await;
    let (sm, kms) = clients(&running.endpoint);
    secrets(&sm).await;
    keys(&kms).await;
    running.stop().await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

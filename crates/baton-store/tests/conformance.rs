//! Runs the store conformance suite against SQLite and PostgreSQL. Every test that needs
//! PostgreSQL has `postgres` in its name and reads `BATON_TEST_POSTGRES_URL` (CI sets it).

use baton_store::{
    AccessKeyRecord, ConsumerRecord, DeadLetterRecord, PostgresStore, PrincipalPolicyRecord,
    PrincipalRecord, RotatorRecord, RotatorTarget, SqliteStore, Store, SubscriptionRecord,
    conformance,
};

async fn sqlite() -> (Box<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("baton.db")).unwrap();
    (Box::new(store), dir)
}

/// The PostgreSQL store of `BATON_TEST_POSTGRES_URL`. Without it this fails rather than pass
/// having checked nothing; `scripts/test` leaves these tests out when it is unset, and says so.
async fn postgres() -> Box<dyn Store> {
    let url = std::env::var("BATON_TEST_POSTGRES_URL").expect(
        "BATON_TEST_POSTGRES_URL is not set, and this test needs PostgreSQL; scripts/test \
         leaves the postgres tests out when it is unset (cargo nextest run -E 'not test(/postgres/)')",
    );
    Box::new(
        PostgresStore::connect(&url)
            .await
            .expect("connect to BATON_TEST_POSTGRES_URL"),
    )
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite_engine {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = sqlite().await;
                    conformance::$check(&*store).await;
                }
            )*
        }
        mod postgres_engine {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let store = postgres().await;
                    conformance::$check(&*store).await;
                }
            )*
        }
        #[test]
        fn every_conformance_check_runs_on_both_engines() {
            let listed: Vec<&str> = vec![$(stringify!($check)),*];
            assert_eq!(listed, conformance::CHECKS);
        }
    };
}

conformance!(
    inserted_secret_reads_back_identically,
    names_are_unique_per_namespace,
    saves_add_versions_and_move_labels,
    pruned_versions_are_deleted,
    stale_revision_is_a_conflict_and_writes_nothing,
    database_refuses_a_label_on_two_versions,
    listing_is_per_namespace_and_oldest_first,
    heads_are_the_listing_without_versions,
    a_listing_page_is_read_in_creation_order,
    a_text_search_finds_secrets_containing_it,
    purge_finds_due_secrets_and_deletes_everything,
    access_keys_round_trip,
    replicas_round_trip_and_hold_their_name,
    promoting_a_replica_is_one_transaction,
    rotation_state_round_trips_and_due_rotations_are_found,
    open_and_scheduled_rotations_are_listed_per_namespace,
    rotators_round_trip,
    an_empty_version_is_filled_once,
    consumers_round_trip_and_expire,
    plain_reads_keep_the_latest,
    committed_changes_are_published,
    events_are_written_with_their_change_and_read_in_order,
    no_event_is_recorded_for_a_write_that_did_not_commit,
    subscriptions_keep_a_forward_cursor_and_dead_letters,
    principals_and_their_policies_round_trip,
    the_audit_log_appends_a_gapless_chain,
    a_writers_own_audit_chain_appends_as_given_and_cannot_fork,
    leases_fence_out_a_holder_that_lost_them,
    keys_and_their_aliases_round_trip,
    grants_round_trip_and_go_with_their_key,
    root_key_state_nodes_and_sealed_blobs_round_trip,
);

/// Two PostgreSQL stores on one database stand for two nodes: a commit on one wakes the
/// watchers of the other (LISTEN/NOTIFY).
#[tokio::test]
async fn postgres_a_change_on_one_node_wakes_watchers_on_another() {
    let (a, b) = (postgres().await, postgres().await);
    let secret = conformance::sample_secret("cross-node");
    a.insert_secret(&secret).await.unwrap();
    let mut watcher = b.changes().subscribe(&secret.id);
    // Give the listener of b a moment to be LISTENing before the change commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut changed = a.find_secret_by_arn(&secret.arn).await.unwrap().unwrap();
    changed.description = Some("changed on node a".into());
    a.save_secret(&changed).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), watcher.changed())
        .await
        .expect("node b heard of node a's commit within 5 s")
        .unwrap();
}

/// A database of its own on the PostgreSQL server of `BATON_TEST_POSTGRES_URL`, for a restore,
/// which needs an empty store. Dropped by the next run (names carry the process id).
async fn empty_postgres(label: &str) -> Box<dyn Store> {
    Box::new(
        PostgresStore::connect(&empty_postgres_url(label).await)
            .await
            .unwrap(),
    )
}

/// The URL of a new, empty database of its own (see [`empty_postgres`]).
async fn empty_postgres_url(label: &str) -> String {
    let url = std::env::var("BATON_TEST_POSTGRES_URL").expect("BATON_TEST_POSTGRES_URL");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = format!("baton_restore_{label}_{}", std::process::id());
    // Databases of test processes that have ended go first. nextest runs each test in a
    // process of its own, so a database whose process still runs belongs to a running test.
    let earlier = admin
        .query(
            "SELECT datname::TEXT FROM pg_database WHERE datname LIKE 'baton_restore_%'",
            &[],
        )
        .await
        .unwrap();
    for row in earlier {
        let old: String = row.get(0);
        let ended = old
            .rsplit('_')
            .next()
            .is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if ended {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
                .await;
        }
    }
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Fills most tables, through the checks that leave their rows behind.
async fn populate(store: &dyn Store) {
    conformance::inserted_secret_reads_back_identically(store).await;
    conformance::saves_add_versions_and_move_labels(store).await;
    conformance::access_keys_round_trip(store).await;
    conformance::replicas_round_trip_and_hold_their_name(store).await;
    conformance::rotation_state_round_trips_and_due_rotations_are_found(store).await;
    conformance::rotators_round_trip(store).await;
    conformance::consumers_round_trip_and_expire(store).await;
    conformance::plain_reads_keep_the_latest(store).await;
    conformance::events_are_written_with_their_change_and_read_in_order(store).await;
    conformance::subscriptions_keep_a_forward_cursor_and_dead_letters(store).await;
    conformance::principals_and_their_policies_round_trip(store).await;
    conformance::the_audit_log_appends_a_gapless_chain(store).await;
    conformance::a_writers_own_audit_chain_appends_as_given_and_cannot_fork(store).await;
    conformance::keys_and_their_aliases_round_trip(store).await;
    conformance::grants_round_trip_and_go_with_their_key(store).await;
    conformance::root_key_state_nodes_and_sealed_blobs_round_trip(store).await;
    // Rows the checks above clean up after themselves.
    let mut secret = conformance::sample_secret("backup-extra");
    secret.rotation.next_rotation_at = Some(86_400_000);
    store.insert_secret(&secret).await.unwrap();
    store
        .create_alias(&baton_store::AliasRecord {
            alias_arn: format!("arn:aws:kms:us-east-1:{}:alias/backup", secret.account_id),
            alias_name: "alias/backup".into(),
            key_id: "k-backup".into(),
            secret_id: secret.id.clone(),
            created_at: 4,
            updated_at: 4,
        })
        .await
        .unwrap();
    store
        .insert_grant(&baton_store::GrantRecord {
            grant_id: "g-backup".into(),
            secret_id: secret.id.clone(),
            key_arn: secret.arn.clone(),
            grantee: "arn:aws:iam::1:role/app".into(),
            retiring: None,
            name: Some("backup".into()),
            token_hash: vec![3; 32],
            body: r#"{"Operations":["Encrypt"]}"#.into(),
            created_at: 4,
        })
        .await
        .unwrap();
    store
        .insert_access_key(&AccessKeyRecord {
            access_key_id: "AKIABACKUP0000000001".into(),
            sealed_secret: vec![1, 2, 3],
            user_name: "backup-admin".into(),
            created_at: 5,
            scope_arn: None,
            expires_at: None,
            session_token_hash: None,
        })
        .await
        .unwrap();
    store
        .insert_principal(&PrincipalRecord {
            name: "backup-admin".into(),
            kind: "user".into(),
            created_at: 5,
        })
        .await
        .unwrap();
    store
        .put_principal_policy(&PrincipalPolicyRecord {
            principal_name: "backup-admin".into(),
            policy_name: "all".into(),
            document: r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
            updated_at: 6,
        })
        .await
        .unwrap();
    store
        .insert_rotator(&RotatorRecord {
            name: "backup-hook".into(),
            target: RotatorTarget::Webhook {
                url: "https://rotate.example/hook".into(),
                sealed_signing_secret: vec![9; 40],
            },
            timeout_ms: 30_000,
            created_at: 7,
            execution_policy: Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into()),
        })
        .await
        .unwrap();
    let subscription = SubscriptionRecord {
        id: "sub-backup".into(),
        account_id: secret.account_id.clone(),
        region: "us-east-1".into(),
        url: "https://events.example/in".into(),
        sealed_signing_secret: vec![8; 40],
        filter: "{}".into(),
        cursor_seq: 3,
        created_at: 8,
    };
    store.insert_subscription(&subscription).await.unwrap();
    store
        .insert_dead_letter(&DeadLetterRecord {
            subscription_id: subscription.id.clone(),
            seq: 2,
            attempts: 5,
            last_error: "delivery failed".into(),
            failed_at: 9,
        })
        .await
        .unwrap();
    store
        .upsert_consumers(&[ConsumerRecord {
            secret_id: secret.id.clone(),
            application: "app".into(),
            instance_id: "i-1".into(),
            current_version: Some("v1".into()),
            accepted_versions: vec!["v1".into(), "v0".into()],
            last_seen_at: 10,
            lease_expires_at: i64::MAX / 2,
            principal: "arn:aws:iam::1:user/app".into(),
        }])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_snapshot_moves_from_sqlite_to_postgres_and_back_unchanged() {
    let (source, _dir) = sqlite().await;
    populate(&*source).await;
    let taken = source.snapshot().await.unwrap();
    let filled: Vec<&str> = taken
        .tables
        .iter()
        .filter(|t| !t.rows.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    let empty: Vec<&str> = baton_store::snapshot::SNAPSHOT_TABLES
        .iter()
        .copied()
        .filter(|t| !filled.contains(t))
        .collect();
    assert!(
        empty.is_empty(),
        "the populated store fills every table; empty: {empty:?}"
    );

    let pg = empty_postgres("a").await;
    pg.restore_snapshot(taken.clone()).await.unwrap();
    let from_pg = pg.snapshot().await.unwrap();
    assert_eq!(from_pg.clone().sorted(), taken.clone().sorted());
    // The restored store works: its event sequence continues after the restored events.
    let last = pg.last_event_seq().await.unwrap();
    conformance::events_are_written_with_their_change_and_read_in_order(&*pg).await;
    assert!(pg.last_event_seq().await.unwrap() > last);

    let (back, _dir2) = sqlite().await;
    back.restore_snapshot(from_pg.clone()).await.unwrap();
    assert_eq!(back.snapshot().await.unwrap().sorted(), from_pg.sorted());
}

#[tokio::test]
async fn a_restore_into_a_store_that_holds_anything_writes_nothing() {
    let (source, _dir) = sqlite().await;
    populate(&*source).await;
    let taken = source.snapshot().await.unwrap();
    let (target, _dir2) = sqlite().await;
    conformance::inserted_secret_reads_back_identically(&*target).await;
    let before = target.snapshot().await.unwrap().sorted();
    let err = target
        .restore_snapshot(taken.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the target store is not empty: table"),
        "{err}"
    );
    assert_eq!(target.snapshot().await.unwrap().sorted(), before);
    // A snapshot of another schema version is refused before anything is read or written.
    let (empty, _dir3) = sqlite().await;
    let mut old = taken;
    old.schema_version -= 1;
    let err = empty.restore_snapshot(old).await.unwrap_err().to_string();
    assert!(
        err.contains("restore it with the Baton release that took it"),
        "{err}"
    );
    assert_eq!(empty.snapshot().await.unwrap().row_count(), 0);
}

#[tokio::test]
async fn postgres_restore_refuses_a_database_that_holds_anything() {
    let (source, _dir) = sqlite().await;
    populate(&*source).await;
    let pg = empty_postgres("b").await;
    conformance::inserted_secret_reads_back_identically(&*pg).await;
    let before = pg.snapshot().await.unwrap().sorted();
    let err = pg
        .restore_snapshot(source.snapshot().await.unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the target store is not empty"), "{err}");
    assert_eq!(pg.snapshot().await.unwrap().sorted(), before);
}

/// A migration that adds a table must say whether backups carry it.
#[tokio::test]
async fn every_table_of_the_schema_is_in_snapshots_or_left_out_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    let mut known: Vec<String> = baton_store::snapshot::SNAPSHOT_TABLES
        .iter()
        .chain(baton_store::snapshot::NOT_IN_SNAPSHOTS)
        .map(|t| (*t).to_owned())
        .collect();
    known.sort();
    assert_eq!(tables, known);
}

/// Node `a` answers reads from its cache of secrets only after the database confirmed the
/// cached record is current, so every write node `b` commits is seen by `a`'s next read: each
/// kind of write of a secret, a deletion, a name taken again, and a restore that brings an id
/// back at a revision `a` has cached with other content.
#[tokio::test]
async fn postgres_a_node_reads_every_write_another_node_committed() {
    use baton_core::{NewVersion, SecretValueKind};
    use baton_store::{SealedKind, SealedReplacement};

    let url = empty_postgres_url("cached").await;
    let (a, b) = (
        PostgresStore::connect(&url).await.unwrap(),
        PostgresStore::connect(&url).await.unwrap(),
    );
    // What the database holds now, read by a node with nothing cached.
    let truth = |name: String, arn: String| {
        let url = url.clone();
        async move {
            let fresh = PostgresStore::connect(&url).await.unwrap();
            let by_arn = fresh.find_secret_by_arn(&arn).await.unwrap();
            let by_name = match &by_arn {
                Some(s) => fresh
                    .find_secret_by_name(&s.account_id, &s.region, &name)
                    .await
                    .unwrap(),
                None => None,
            };
            (by_name, by_arn)
        }
    };
    let secret = conformance::sample_secret("cached");
    let (acct, region, name, arn) = (
        secret.account_id.clone(),
        secret.region.clone(),
        secret.name.clone(),
        secret.arn.clone(),
    );
    let read_a = || async {
        (
            a.find_secret_by_name(&acct, &region, &name).await.unwrap(),
            a.find_secret_by_arn(&arn).await.unwrap(),
        )
    };
    b.insert_secret(&secret).await.unwrap();
    assert_eq!(read_a().await, truth(name.clone(), arn.clone()).await);
    // Read twice: the second read is a hit.
    assert_eq!(read_a().await.1.unwrap(), secret);
    let (cached, _) = a.cache_usage().unwrap();
    assert_eq!(cached, 2, "node a cached the secret by name and by ARN");

    // A saved change: a new version that takes AWSCURRENT, and a new description.
    let mut changed = b.find_secret_by_arn(&arn).await.unwrap().unwrap();
    changed
        .add_version(
            NewVersion {
                version_id: "v2".into(),
                kind: SecretValueKind::String,
                sealed_value: b"sealed-v2".to_vec(),
                labels: None,
            },
            2_000,
        )
        .unwrap();
    changed.description = Some("changed on node b".into());
    b.save_secret(&changed).await.unwrap();
    let (by_name, by_arn) = read_a().await;
    assert_eq!(
        by_arn.as_ref().unwrap().description.as_deref(),
        Some("changed on node b")
    );
    assert_eq!(by_arn.as_ref().unwrap().versions.len(), 2);
    assert_eq!((by_name, by_arn), truth(name.clone(), arn.clone()).await);

    // The data key re-wrapped by a root key rotation.
    let wrapped = b
        .list_sealed(SealedKind::SecretDataKey, "", 100)
        .await
        .unwrap()
        .into_iter()
        .find(|blob| blob.id == secret.id)
        .unwrap();
    b.replace_sealed(
        SealedKind::SecretDataKey,
        &[SealedReplacement {
            id: secret.id.clone(),
            old: wrapped.blob.clone(),
            new: b"rewrapped".to_vec(),
        }],
    )
    .await
    .unwrap();
    let (by_name, by_arn) = read_a().await;
    assert_eq!(
        by_arn.as_ref().unwrap().wrapped_data_key,
        b"rewrapped".to_vec()
    );
    assert_eq!((by_name, by_arn), truth(name.clone(), arn.clone()).await);

    // Deleted, then the name taken by another secret.
    let current = b.find_secret_by_arn(&arn).await.unwrap().unwrap();
    b.delete_secret(&current).await.unwrap();
    assert_eq!(read_a().await, (None, None));
    let mut again = conformance::sample_secret("cached");
    again.account_id = acct.clone();
    again.description = Some("the name taken again".into());
    b.insert_secret(&again).await.unwrap();
    let by_name = a.find_secret_by_name(&acct, &region, &name).await.unwrap();
    assert_eq!(by_name, Some(again.clone()));

    // A restore brings `again` back at revision 0 with its first content, after node a cached
    // revision 1 with other content; node b then writes revision 1 once more, differently.
    let backup = b.snapshot().await.unwrap();
    let mut first = again.clone();
    first.description = Some("revision 1, before the restore".into());
    b.save_secret(&first).await.unwrap();
    let cached = a
        .find_secret_by_name(&acct, &region, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (cached.revision, cached.description.as_deref()),
        (1, Some("revision 1, before the restore"))
    );
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "TRUNCATE {} CASCADE",
            baton_store::snapshot::SNAPSHOT_TABLES.join(", ")
        ))
        .await
        .unwrap();
    b.restore_snapshot(backup).await.unwrap();
    let mut second = again.clone();
    second.description = Some("revision 1, after the restore".into());
    b.save_secret(&second).await.unwrap();
    let read = a
        .find_secret_by_name(&acct, &region, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (read.revision, read.description.as_deref()),
        (1, Some("revision 1, after the restore"))
    );
}

/// Two nodes appending to one audit log at once, each batch as its writer task sends it: every
/// append succeeds, and the log is one gapless chain with each batch a consecutive run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_nodes_append_to_one_audit_chain_at_once() {
    use baton_store::{AuditChain, AuditRecord};
    let url = empty_postgres_url("audit").await;
    let chain: AuditChain = std::sync::Arc::new(|prev: &[u8], e: &AuditRecord| {
        let mut h = prev.to_vec();
        h.truncate(32);
        h.extend_from_slice(e.chain_seq.to_be_bytes().as_slice());
        h.extend_from_slice(e.request_id.as_bytes());
        h
    });
    let mut nodes = Vec::new();
    for node in 0..2 {
        let store = PostgresStore::connect(&url).await.unwrap();
        let chain = chain.clone();
        nodes.push(tokio::spawn(async move {
            let mut batches = Vec::new();
            for batch in 0..40 {
                let entries = (0..1 + batch % 7)
                    .map(|i| AuditRecord {
                        request_id: format!("node{node}-{batch}-{i}"),
                        action: "secretsmanager:GetSecretValue".into(),
                        decision: "allow".into(),
                        ..Default::default()
                    })
                    .collect();
                batches.push(store.append_audit(entries, chain.clone()).await.unwrap());
            }
            batches
        }));
    }
    let mut appended = 0;
    for node in nodes {
        for batch in node.await.unwrap() {
            appended += batch.len();
            for pair in batch.windows(2) {
                assert_eq!(
                    pair[1].chain_seq,
                    pair[0].chain_seq + 1,
                    "a batch is a consecutive run"
                );
            }
        }
    }
    let store = PostgresStore::connect(&url).await.unwrap();
    let listed = store.list_audit_chain("", 0, 10_000).await.unwrap();
    assert_eq!(listed.len(), appended);
    for (i, pair) in listed.windows(2).enumerate() {
        assert_eq!(pair[0].chain_seq, i as i64 + 1, "no gaps");
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each links to its predecessor"
        );
    }
}

/// Two nodes append to chains of their own at once, with no lock between them: each chain is
/// stored as its writer made it, and the whole log's `seq` gives every entry its own place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_nodes_append_to_their_own_audit_chains_at_once() {
    use baton_store::AuditRecord;
    let url = empty_postgres_url("chains").await;
    let mut nodes = Vec::new();
    for node in 0..2 {
        let store = PostgresStore::connect(&url).await.unwrap();
        nodes.push(tokio::spawn(async move {
            let chain = format!("node-{node}");
            let mut at = 0i64;
            let mut written = Vec::new();
            for batch in 0..40 {
                let entries: Vec<AuditRecord> = (0..1 + batch % 7)
                    .map(|_| {
                        at += 1;
                        AuditRecord {
                            request_id: format!("{chain}-{at}"),
                            chain: chain.clone(),
                            chain_seq: at,
                            prev_hash: (at - 1).to_be_bytes().to_vec(),
                            hash: at.to_be_bytes().to_vec(),
                            ..Default::default()
                        }
                    })
                    .collect();
                written.extend(store.append_audit_chained(entries).await.unwrap());
            }
            (chain, written)
        }));
    }
    let store = PostgresStore::connect(&url).await.unwrap();
    let mut seqs = Vec::new();
    for node in nodes {
        let (chain, written) = node.await.unwrap();
        assert_eq!(
            store.list_audit_chain(&chain, 0, 10_000).await.unwrap(),
            written
        );
        seqs.extend(written.iter().map(|e| e.seq));
    }
    let listed = store.list_audit(0, 10_000).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|e| e.seq)
            .collect::<std::collections::BTreeSet<_>>(),
        seqs.iter().copied().collect(),
        "each entry has its own seq, and the listing holds them all"
    );
    assert_eq!(listed.len(), seqs.len());
}

/// Reads on one node that run together (so their checks share statements), by name and by ARN
/// over several secrets, while another node writes: every read that began after a write was
/// acknowledged returns that write, and a name no secret has reads as nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_reads_checked_together_each_see_the_writes_committed_before_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let url = empty_postgres_url("together").await;
    let writer = PostgresStore::connect(&url).await.unwrap();
    let reader = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let secrets: Vec<_> = (0..4)
        .map(|i| conformance::sample_secret(&format!("together-{i}")))
        .collect();
    for secret in &secrets {
        writer.insert_secret(secret).await.unwrap();
    }
    // Readers that keep the node's checks in flight, so the reads below arrive mid-statement.
    let stop = Arc::new(AtomicBool::new(false));
    let mut background = Vec::new();
    for task in 0..8 {
        let (reader, stop, secrets) = (reader.clone(), stop.clone(), secrets.clone());
        background.push(tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let s = &secrets[(task + reads) % secrets.len()];
                let found = reader.find_secret_by_arn(&s.arn).await.unwrap();
                assert_eq!(found.map(|f| f.id), Some(s.id.clone()));
                let found = reader
                    .find_secret_by_name(&s.account_id, &s.region, &s.name)
                    .await
                    .unwrap();
                assert_eq!(found.map(|f| f.id), Some(s.id.clone()));
                let missing = reader
                    .find_secret_by_name(&s.account_id, &s.region, "no-such-secret")
                    .await
                    .unwrap();
                assert!(missing.is_none());
                reads += 1;
            }
            reads
        }));
    }
    for round in 0..100 {
        let target = &secrets[round % secrets.len()];
        let mut current = writer
            .find_secret_by_arn(&target.arn)
            .await
            .unwrap()
            .unwrap();
        let description = format!("round {round}");
        current.description = Some(description.clone());
        writer.save_secret(&current).await.unwrap();
        let reads: Vec<_> = (0..16)
            .map(|i| {
                let (reader, target) = (reader.clone(), target.clone());
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        reader.find_secret_by_arn(&target.arn).await
                    } else {
                        reader
                            .find_secret_by_name(&target.account_id, &target.region, &target.name)
                            .await
                    }
                })
            })
            .collect();
        for read in reads {
            let found = read.await.unwrap().unwrap().unwrap();
            assert_eq!(
                found.description.as_deref(),
                Some(description.as_str()),
                "a read that began after the write returned it"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in background {
        total += task.await.unwrap();
    }
    assert!(total > 0, "the background readers ran");
}

//! The conformance suite: behaviour every [`Store`] engine must show. Each check is a public
//! async function, so the engines' test files run the same list; see `tests/conformance.rs`.
//!
//! Checks use fresh ids and account numbers, so they can share one database with other runs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_core::{
    AWSCURRENT, AWSPREVIOUS, DeletionState, NewVersion, RotationConfig, RotationRules,
    SecretRecord, SecretValueKind, Tag,
};

use crate::{AccessKeyRecord, NodeRecord, SealedKind, SealedReplacement, Store, StoreError};

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A secret in a namespace of its own, with one current version.
pub fn sample_secret(name: &str) -> SecretRecord {
    let id = unique("sec-");
    let account_id = unique("acct-");
    let mut secret = SecretRecord {
        arn: format!(
            "arn:aws:secretsmanager:us-east-1:{account_id}:secret:{name}-{}",
            &id[..6]
        ),
        id,
        account_id,
        region: "us-east-1".into(),
        name: name.into(),
        description: Some("a description".into()),
        kms_key_id: None,
        tags: vec![
            Tag {
                key: "team".into(),
                value: "payments".into(),
            },
            Tag {
                key: "env".into(),
                value: "prod".into(),
            },
        ],
        tagged: true,
        resource_policy: None,
        rotation: RotationConfig {
            enabled: true,
            lambda_arn: Some("arn:aws:lambda:us-east-1:1:function:f".into()),
            rules: Some(RotationRules {
                automatically_after_days: None,
                duration: Some("2h".into()),
                schedule_expression: Some("rate(4 hours)".into()),
            }),
            last_rotated_at: None,
            next_rotation_at: None,
            configured_by: Some("arn:aws:iam::123456789012:user/configurer".into()),
            database_clone: Some("app_clone".into()),
        },
        created_at: 1_000,
        last_changed_at: 1_000,
        last_accessed_at: None,
        deletion: DeletionState::Active,
        wrapped_data_key: vec![1, 2, 3],
        versions: vec![],
        replicas: vec![],
        rotation_policy: None,
        rotation_state: None,
        revision: 0,
        key: None,
        outbox: vec![],
    };
    add(&mut secret, "v1", None, 1_000);
    secret
}

fn add(secret: &mut SecretRecord, id: &str, labels: Option<&[&str]>, now: i64) {
    secret
        .add_version(
            NewVersion {
                version_id: id.into(),
                kind: SecretValueKind::String,
                sealed_value: format!("sealed-{id}").into_bytes(),
                labels: labels.map(|l| l.iter().map(|s| s.to_string()).collect()),
            },
            now,
        )
        .expect("valid version");
}

fn labels(secret: &SecretRecord, id: &str) -> BTreeSet<String> {
    secret
        .version(id)
        .map(|v| v.labels.clone())
        .unwrap_or_default()
}

pub async fn inserted_secret_reads_back_identically(store: &dyn Store) {
    let secret = sample_secret("app/db");
    store.insert_secret(&secret).await.unwrap();
    let by_name = store
        .find_secret_by_name(&secret.account_id, "us-east-1", "app/db")
        .await
        .unwrap()
        .expect("found by name");
    assert_eq!(by_name, secret);
    let by_arn = store.find_secret_by_arn(&secret.arn).await.unwrap();
    assert_eq!(by_arn.as_ref(), Some(&secret));
    assert!(
        store
            .find_secret_by_name(&secret.account_id, "eu-west-1", "app/db")
            .await
            .unwrap()
            .is_none(),
        "regions are separate namespaces"
    );
}

pub async fn names_are_unique_per_namespace(store: &dyn Store) {
    let secret = sample_secret("dup");
    store.insert_secret(&secret).await.unwrap();
    let mut twin = sample_secret("dup");
    twin.account_id = secret.account_id.clone();
    assert!(matches!(
        store.insert_secret(&twin).await,
        Err(StoreError::NameTaken)
    ));
    let mut other_region = twin.clone();
    other_region.region = "eu-west-1".into();
    other_region.arn = format!("{}-eu", twin.arn);
    store.insert_secret(&other_region).await.unwrap();
}

pub async fn saves_add_versions_and_move_labels(store: &dyn Store) {
    let mut secret = sample_secret("rotating");
    store.insert_secret(&secret).await.unwrap();
    add(&mut secret, "v2", None, 2_000);
    add(&mut secret, "v3", Some(&["AWSPENDING"]), 3_000);
    secret.tags.retain(|t| t.key != "env");
    secret.deletion = DeletionState::Scheduled {
        deleted_at: 4_000,
        purge_at: 5_000,
    };
    secret.revision = store.save_secret(&secret).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, secret);
    assert_eq!(
        labels(&loaded, "v2"),
        BTreeSet::from([AWSCURRENT.to_owned()])
    );
    assert_eq!(
        labels(&loaded, "v1"),
        BTreeSet::from([AWSPREVIOUS.to_owned()])
    );
    assert_eq!(
        labels(&loaded, "v3"),
        BTreeSet::from(["AWSPENDING".to_owned()])
    );
}

pub async fn pruned_versions_are_deleted(store: &dyn Store) {
    let mut secret = sample_secret("pruned");
    store.insert_secret(&secret).await.unwrap();
    add(&mut secret, "v2", None, 2_000);
    add(&mut secret, "v3", None, 3_000);
    secret.versions.retain(|v| v.version_id != "v1");
    secret.revision = store.save_secret(&secret).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = loaded
        .versions
        .iter()
        .map(|v| v.version_id.as_str())
        .collect();
    assert_eq!(ids, ["v2", "v3"]);
}

pub async fn stale_revision_is_a_conflict_and_writes_nothing(store: &dyn Store) {
    let secret = sample_secret("cas");
    store.insert_secret(&secret).await.unwrap();
    let mut first = secret.clone();
    add(&mut first, "v2", None, 2_000);
    first.revision = store.save_secret(&first).await.unwrap();
    assert_eq!(first.revision, secret.revision + 1);

    let mut stale = secret.clone();
    add(&mut stale, "v9", None, 2_500);
    assert!(matches!(
        store.save_secret(&stale).await,
        Err(StoreError::Conflict)
    ));
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, first);
}

/// The database itself refuses a label on two versions, even if code above it is wrong, and
/// the refused transaction leaves nothing behind.
pub async fn database_refuses_a_label_on_two_versions(store: &dyn Store) {
    let mut secret = sample_secret("constraint");
    store.insert_secret(&secret).await.unwrap();
    add(&mut secret, "v2", Some(&["AWSPENDING"]), 2_000);
    let before_bad_write = secret.clone();
    let mut corrupt = secret.clone();
    for version in &mut corrupt.versions {
        version.labels.insert(AWSCURRENT.to_owned());
    }
    assert!(matches!(
        store.save_secret(&corrupt).await,
        Err(StoreError::Constraint(_))
    ));
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.versions.len(),
        1,
        "the refused write added no version"
    );
    assert_eq!(loaded.revision, before_bad_write.revision);
}

pub async fn listing_is_per_namespace_and_oldest_first(store: &dyn Store) {
    let first = sample_secret("list-a");
    let mut second = sample_secret("list-b");
    second.account_id = first.account_id.clone();
    second.created_at = first.created_at + 1;
    store.insert_secret(&second).await.unwrap();
    store.insert_secret(&first).await.unwrap();
    let listed = store
        .list_secrets(&first.account_id, "us-east-1")
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["list-a", "list-b"]);
}

pub async fn heads_are_the_listing_without_versions(store: &dyn Store) {
    let first = sample_secret("heads-a");
    let mut second = sample_secret("heads-b");
    second.account_id = first.account_id.clone();
    second.created_at = first.created_at + 1;
    second.tags.reverse();
    second.replicas = vec![baton_core::Replica {
        region: "eu-west-1".into(),
        kms_key_id: Some("alias/x".into()),
        last_accessed_at: None,
    }];
    store.insert_secret(&second).await.unwrap();
    store.insert_secret(&first).await.unwrap();
    let whole = store
        .list_secrets(&first.account_id, "us-east-1")
        .await
        .unwrap();
    let heads = store
        .list_secret_heads(&first.account_id, "us-east-1")
        .await
        .unwrap();
    assert_eq!(heads.len(), 2);
    for (head, whole) in heads.iter().zip(&whole) {
        assert!(!whole.versions.is_empty(), "the sample has a version");
        assert!(head.versions.is_empty() && head.rotation_state.is_none());
        let mut expected = whole.clone();
        expected.versions.clear();
        expected.rotation_policy = None;
        expected.rotation_state = None;
        expected.rotation.next_rotation_at = None;
        assert_eq!(head, &expected, "{}", head.name);
    }
}

pub async fn purge_finds_due_secrets_and_deletes_everything(store: &dyn Store) {
    let mut due = sample_secret("due");
    due.deletion = DeletionState::Scheduled {
        deleted_at: 0,
        purge_at: -50_000_000,
    };
    store.insert_secret(&due).await.unwrap();
    let ids = store
        .secrets_due_for_purge(-49_999_999, 1_000)
        .await
        .unwrap();
    assert!(ids.contains(&due.arn), "{ids:?}");
    let early = store
        .secrets_due_for_purge(-50_000_001, 1_000)
        .await
        .unwrap();
    assert!(!early.contains(&due.arn));
    store.delete_secret(&due).await.unwrap();
    assert!(store.find_secret_by_arn(&due.arn).await.unwrap().is_none());
    // The name is free again.
    let mut again = sample_secret("due");
    again.account_id = due.account_id.clone();
    store.insert_secret(&again).await.unwrap();
}

pub async fn access_keys_round_trip(store: &dyn Store) {
    let key = AccessKeyRecord {
        access_key_id: unique("BTN"),
        sealed_secret: vec![9, 9, 9],
        user_name: "admin".into(),
        created_at: 42,
        scope_arn: None,
        expires_at: None,
        session_token_hash: Some(vec![7; 32]),
    };
    store.insert_access_key(&key).await.unwrap();
    assert_eq!(
        store.find_access_key(&key.access_key_id).await.unwrap(),
        Some(key.clone())
    );
    assert!(store.list_access_keys().await.unwrap().contains(&key));
    assert!(
        store.insert_access_key(&key).await.is_err(),
        "ids are unique"
    );
    assert!(store.delete_access_key(&key.access_key_id).await.unwrap());
    assert!(!store.delete_access_key(&key.access_key_id).await.unwrap());
    assert_eq!(
        store.find_access_key(&key.access_key_id).await.unwrap(),
        None
    );
    store.ping().await.unwrap();
}

fn with_replica(mut secret: SecretRecord, region: &str) -> SecretRecord {
    secret
        .add_replicas(
            &[(region.to_owned(), Some("alias/replica-key".into()))],
            2_000,
        )
        .expect("valid replica");
    secret
}

pub async fn replicas_round_trip_and_hold_their_name(store: &dyn Store) {
    let secret = with_replica(sample_secret("replicated"), "eu-west-1");
    store.insert_secret(&secret).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, secret);
    let via_replica = store
        .find_secret_by_replica(&secret.account_id, "eu-west-1", "replicated")
        .await
        .unwrap();
    assert_eq!(via_replica.as_ref().map(|s| &s.id), Some(&secret.id));
    let listed = store
        .list_replicated_into(&secret.account_id, "eu-west-1")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // The replica's name is taken in its region.
    let mut clash = sample_secret("replicated");
    clash.account_id = secret.account_id.clone();
    clash.region = "eu-west-1".into();
    clash.arn = format!("{}-clash", secret.arn);
    assert!(matches!(
        store.insert_secret(&clash).await,
        Err(StoreError::NameTaken)
    ));
    // And a replica cannot be added where a secret of that name exists.
    let mut other = sample_secret("occupied");
    other.account_id = secret.account_id.clone();
    store.insert_secret(&other).await.unwrap();
    let mut resident = sample_secret("occupied");
    resident.account_id = secret.account_id.clone();
    resident.region = "ap-south-1".into();
    resident.arn = format!("{}-ap", other.arn);
    store.insert_secret(&resident).await.unwrap();
    let other = with_replica(other, "ap-south-1");
    assert!(matches!(
        store.save_secret(&other).await,
        Err(StoreError::NameTaken)
    ));
}

pub async fn promoting_a_replica_is_one_transaction(store: &dyn Store) {
    let secret = with_replica(sample_secret("promote"), "eu-west-1");
    store.insert_secret(&secret).await.unwrap();
    let mut primary = secret.clone();
    primary
        .remove_replicas(&["eu-west-1".into()], 3_000)
        .unwrap();
    let mut promoted = sample_secret("promote");
    promoted.account_id = secret.account_id.clone();
    promoted.region = "eu-west-1".into();
    promoted.arn = secret.replica_arn("eu-west-1");

    let mut stale = primary.clone();
    stale.revision -= 1;
    assert!(matches!(
        store.promote_replica(&stale, &promoted).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        store
            .find_secret_by_arn(&promoted.arn)
            .await
            .unwrap()
            .is_none()
    );

    let revision = store.promote_replica(&primary, &promoted).await.unwrap();
    assert_eq!(revision, secret.revision + 1);
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.replicas.is_empty());
    let standalone = store
        .find_secret_by_name(&secret.account_id, "eu-west-1", "promote")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(standalone.id, promoted.id);
    assert!(
        store
            .find_secret_by_replica(&secret.account_id, "eu-west-1", "promote")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn rotation_state_round_trips_and_due_rotations_are_found(store: &dyn Store) {
    use baton_core::rotation::{Blackout, Rotation, RotationPolicy, RotationState};
    let mut secret = sample_secret("rotating-state");
    let policy = RotationPolicy {
        propagation_delay_ms: 1_000,
        blackouts: vec![Blackout::parse("01:00-02:30").unwrap()],
        ..RotationPolicy::default()
    };
    let (machine, commands) = Rotation::start(
        secret.id.clone(),
        "v2-token".into(),
        Some("v1".into()),
        policy.clone(),
        5_000,
    );
    let mut state = RotationState {
        machine,
        timeline: Vec::new(),
        due_at: None,
    };
    for command in &commands {
        if let baton_core::rotation::Command::Record(event) = command {
            state.record(5_000, event);
        }
    }
    // A due time far in the past, so no other check's rotations come first.
    state.due_at = Some(-9_000_000_000_000 + 7);
    secret.rotation_policy = Some(policy);
    secret.rotation_state = Some(state);
    store.insert_secret(&secret).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, secret);
    let due = store
        .rotations_due(-9_000_000_000_000 + 7, 10)
        .await
        .unwrap();
    assert!(due.contains(&secret.arn), "{due:?}");
    let early = store
        .rotations_due(-9_000_000_000_000 + 6, 10)
        .await
        .unwrap();
    assert!(!early.contains(&secret.arn));
    assert!(
        store
            .next_rotation_due()
            .await
            .unwrap()
            .is_some_and(|t| t <= -9_000_000_000_000 + 7)
    );
    let mut done = loaded.clone();
    done.rotation_state.as_mut().unwrap().due_at = None;
    done.revision = store.save_secret(&done).await.unwrap();
    let due = store.rotations_due(0, 1_000).await.unwrap();
    assert!(!due.contains(&secret.arn));

    // A schedule makes the secret due too, and is found through its own index.
    let mut scheduled = done.clone();
    scheduled.rotation.next_rotation_at = Some(-9_000_000_000_000 + 3);
    scheduled.revision = store.save_secret(&scheduled).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.rotation.next_rotation_at,
        Some(-9_000_000_000_000 + 3)
    );
    let due = store
        .rotations_due(-9_000_000_000_000 + 3, 10)
        .await
        .unwrap();
    assert_eq!(due.iter().filter(|a| **a == secret.arn).count(), 1);
    assert!(
        store
            .next_rotation_due()
            .await
            .unwrap()
            .is_some_and(|t| t <= -9_000_000_000_000 + 3)
    );
    let mut unscheduled = loaded;
    unscheduled.rotation.next_rotation_at = None;
    unscheduled.revision = store.save_secret(&unscheduled).await.unwrap();
    let due = store.rotations_due(0, 1_000).await.unwrap();
    assert!(!due.contains(&secret.arn));

    // A second rotation while the first is in flight is refused by the database itself.
    let (second, _) = Rotation::start(
        secret.id.clone(),
        "v3-token".into(),
        Some("v1".into()),
        RotationPolicy::default(),
        6_000,
    );
    let mut two_in_flight = unscheduled.clone();
    two_in_flight.rotation_state = Some(RotationState {
        machine: second.clone(),
        timeline: Vec::new(),
        due_at: None,
    });
    assert!(matches!(
        store.save_secret(&two_in_flight).await,
        Err(StoreError::Constraint(_))
    ));
    // Once the first has ended, the next one is kept beside it in the history.
    let mut first_done = unscheduled;
    first_done.rotation_state.as_mut().unwrap().machine.status =
        baton_core::rotation::Status::Cancelled;
    first_done.revision = store.save_secret(&first_done).await.unwrap();
    let mut next = first_done.clone();
    next.rotation_state = Some(RotationState {
        machine: second,
        timeline: Vec::new(),
        due_at: None,
    });
    store.save_secret(&next).await.unwrap();
    let history = store.rotation_history(&secret.id, 10).await.unwrap();
    let versions: Vec<&str> = history
        .iter()
        .map(|r| r.machine.version_id.as_str())
        .collect();
    assert_eq!(versions, ["v3-token", "v2-token"], "newest first");
    let latest = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        latest.rotation_state.unwrap().machine.version_id,
        "v3-token"
    );
}

pub async fn an_empty_version_is_filled_once(store: &dyn Store) {
    let mut secret = sample_secret("placeholder");
    secret
        .add_version(
            NewVersion {
                version_id: "v2".into(),
                kind: SecretValueKind::Empty,
                sealed_value: Vec::new(),
                labels: Some(vec!["AWSPENDING".into()]),
            },
            2_000,
        )
        .unwrap();
    store.insert_secret(&secret).await.unwrap();
    secret
        .fill_version(
            NewVersion {
                version_id: "v2".into(),
                kind: SecretValueKind::String,
                sealed_value: b"sealed-v2".to_vec(),
                labels: Some(vec!["AWSPENDING".into()]),
            },
            3_000,
        )
        .unwrap();
    secret.revision = store.save_secret(&secret).await.unwrap();
    let loaded = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    let v2 = loaded.version("v2").unwrap();
    assert_eq!(
        (v2.kind, v2.sealed_value.as_slice()),
        (SecretValueKind::String, b"sealed-v2".as_slice())
    );
    assert_eq!(loaded, secret);
}

pub async fn rotators_round_trip(store: &dyn Store) {
    let rotator = crate::RotatorRecord {
        name: unique("rot-"),
        target: crate::RotatorTarget::Command("python3 rotate.py --flag 'quoted arg'".into()),
        timeout_ms: 120_000,
        created_at: 7,
        execution_policy: None,
    };
    let webhook = crate::RotatorRecord {
        name: unique("hook-"),
        target: crate::RotatorTarget::Webhook {
            url: "https://rotator.example/rotate".into(),
            sealed_signing_secret: b"sealed".to_vec(),
        },
        timeout_ms: 5_000,
        created_at: 8,
        execution_policy: Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into()),
    };
    store.insert_rotator(&webhook).await.unwrap();
    assert_eq!(
        store.find_rotator(&webhook.name).await.unwrap(),
        Some(webhook.clone())
    );
    assert!(store.delete_rotator(&webhook.name).await.unwrap());
    store.insert_rotator(&rotator).await.unwrap();
    assert!(matches!(
        store.insert_rotator(&rotator).await,
        Err(StoreError::NameTaken)
    ));
    assert_eq!(
        store.find_rotator(&rotator.name).await.unwrap(),
        Some(rotator.clone())
    );
    assert!(store.list_rotators().await.unwrap().contains(&rotator));
    assert!(store.delete_rotator(&rotator.name).await.unwrap());
    assert!(!store.delete_rotator(&rotator.name).await.unwrap());
    assert_eq!(store.find_rotator(&rotator.name).await.unwrap(), None);
}

pub async fn consumers_round_trip_and_expire(store: &dyn Store) {
    let secret = sample_secret(&unique("consumed-"));
    store.insert_secret(&secret).await.unwrap();
    let record = |app: &str, instance: &str, current: &str, lease: i64| crate::ConsumerRecord {
        secret_id: secret.id.clone(),
        application: app.into(),
        instance_id: instance.into(),
        current_version: Some(current.into()),
        accepted_versions: vec!["v2".into(), current.into()],
        last_seen_at: lease - 30_000,
        lease_expires_at: lease,
        principal: "arn:aws:iam::123456789012:role/app".into(),
    };
    let a = record("verifier", "i-1", "v1", 100_000);
    let b = record("signer", "i-2", "v1", 200_000);
    store
        .upsert_consumers(&[a.clone(), b.clone()])
        .await
        .unwrap();
    // A later report replaces that consumer's row.
    let a2 = record("verifier", "i-1", "v2", 300_000);
    assert_eq!(
        store
            .upsert_consumers(std::slice::from_ref(&a2))
            .await
            .unwrap(),
        crate::ConsumerWrite::Written
    );
    assert_eq!(
        store.list_consumers(&secret.id).await.unwrap(),
        vec![b.clone(), a2.clone()],
        "ordered by application, then instance"
    );
    // A report for a secret that no longer exists is skipped, not an error.
    let mut ghost = record("x", "y", "v1", 1);
    ghost.secret_id = "no-such-secret".into();
    store.upsert_consumers(&[ghost]).await.unwrap();
    assert!(
        store
            .list_consumers("no-such-secret")
            .await
            .unwrap()
            .is_empty()
    );
    // While its lease lives, another principal cannot replace the record, and a batch with
    // such a record writes nothing at all.
    let mut forged = record("verifier", "i-1", "v9", 310_000);
    forged.principal = "arn:aws:iam::123456789012:role/intruder".into();
    let mut forged_new = record("forger", "i-9", "v9", 310_000);
    forged_new.principal = forged.principal.clone();
    assert_eq!(
        store
            .upsert_consumers(&[forged_new, forged.clone()])
            .await
            .unwrap(),
        crate::ConsumerWrite::OwnedByAnother(1)
    );
    assert_eq!(
        store.list_consumers(&secret.id).await.unwrap(),
        vec![b.clone(), a2.clone()],
        "nothing of the refused batch was written"
    );
    // Expired leases are forgotten.
    assert!(store.delete_consumers_expired(250_000).await.unwrap() >= 1);
    assert_eq!(
        store.list_consumers(&secret.id).await.unwrap(),
        vec![a2.clone()]
    );
    // Once the owner's lease has ended, another principal may take the identity over.
    let mut taken = forged;
    taken.last_seen_at = a2.lease_expires_at;
    taken.lease_expires_at = a2.lease_expires_at + 30_000;
    assert_eq!(
        store
            .upsert_consumers(std::slice::from_ref(&taken))
            .await
            .unwrap(),
        crate::ConsumerWrite::Written
    );
    assert_eq!(store.list_consumers(&secret.id).await.unwrap(), vec![taken]);
    // Deleting the secret removes its consumers.
    store.delete_secret(&secret).await.unwrap();
    assert!(store.list_consumers(&secret.id).await.unwrap().is_empty());
}

pub async fn plain_reads_keep_the_latest(store: &dyn Store) {
    let secret = sample_secret(&unique("read-"));
    store.insert_secret(&secret).await.unwrap();
    assert_eq!(store.last_plain_read(&secret.id).await.unwrap(), None);
    store.record_plain_read(&secret.id, 5_000).await.unwrap();
    store.record_plain_read(&secret.id, 3_000).await.unwrap();
    assert_eq!(
        store.last_plain_read(&secret.id).await.unwrap(),
        Some(5_000)
    );
    store.record_plain_read(&secret.id, 9_000).await.unwrap();
    assert_eq!(
        store.last_plain_read(&secret.id).await.unwrap(),
        Some(9_000)
    );
    store.record_plain_read("no-such-secret", 1).await.unwrap();
    assert_eq!(store.last_plain_read("no-such-secret").await.unwrap(), None);

    // A batch: the latest of each secret's reads is kept, an unknown secret is skipped, and a
    // read older than the stored one changes nothing.
    let other = sample_secret(&unique("read-"));
    store.insert_secret(&other).await.unwrap();
    store
        .record_plain_reads(&[
            (other.id.clone(), 2_000),
            (secret.id.clone(), 8_000),
            ("no-such-secret".to_owned(), 4_000),
            (other.id.clone(), 7_000),
            (other.id.clone(), 6_000),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.last_plain_read(&secret.id).await.unwrap(),
        Some(9_000)
    );
    assert_eq!(store.last_plain_read(&other.id).await.unwrap(), Some(7_000));
    assert_eq!(store.last_plain_read("no-such-secret").await.unwrap(), None);
    store.record_plain_reads(&[]).await.unwrap();
}

pub async fn committed_changes_are_published(store: &dyn Store) {
    let mut secret = sample_secret(&unique("watched-"));
    let mut watcher = store.changes().subscribe(&secret.id);
    let mut other = store.changes().subscribe("some-other-secret");
    store.insert_secret(&secret).await.unwrap();
    assert!(watcher.has_changed().unwrap(), "insert publishes");
    // Across nodes (PostgreSQL), the commit's notification also comes back asynchronously;
    // let it arrive before looking for publications of the failed save.
    // A node that (re)connects to the notifications wakes every watcher once, too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    watcher.mark_unchanged();
    other.mark_unchanged();
    // A write that fails publishes nothing.
    let mut stale = secret.clone();
    stale.revision += 7;
    stale.description = Some("stale".into());
    assert!(store.save_secret(&stale).await.is_err());
    assert!(
        !watcher.has_changed().unwrap(),
        "a failed save publishes nothing"
    );
    secret.description = Some("changed".into());
    store.save_secret(&secret).await.unwrap();
    assert!(watcher.has_changed().unwrap(), "save publishes");
    watcher.mark_unchanged();
    store.delete_secret(&secret).await.unwrap();
    assert!(watcher.has_changed().unwrap(), "delete publishes");
    assert!(!other.has_changed().unwrap());
    other.mark_unchanged();
}

fn event(name: &str, at: i64) -> baton_core::NewEvent {
    baton_core::NewEvent {
        event_id: unique("ev-"),
        at,
        name: name.into(),
        detail: format!("{{\"n\":\"{name}\"}}"),
    }
}

async fn events_of(store: &dyn Store, arn: &str) -> Vec<crate::EventRecord> {
    store.list_events(0, 10_000, Some(arn)).await.unwrap()
}

pub async fn events_are_written_with_their_change_and_read_in_order(store: &dyn Store) {
    let mut secret = sample_secret(&unique("evented-"));
    secret.outbox.push(event("CreateSecret", 1));
    store.insert_secret(&secret).await.unwrap();
    let mut secret = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert!(secret.outbox.is_empty(), "a loaded record has no outbox");
    secret.description = Some("x".into());
    secret.outbox.push(event("UpdateSecret", 2));
    secret.outbox.push(event("TagResource", 3));
    store.save_secret(&secret).await.unwrap();
    let events = events_of(store, &secret.arn).await;
    let names: Vec<&str> = events.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(names, ["CreateSecret", "UpdateSecret", "TagResource"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[0].secret_name, secret.name);
    assert_eq!(events[0].secret_id, secret.id);
    // Pagination after a sequence number.
    let rest = store
        .list_events(events[0].seq, 10_000, Some(&secret.arn))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(
        store
            .list_events(events[0].seq, 1, Some(&secret.arn))
            .await
            .unwrap()
            .len(),
        1
    );
    // The event of a deletion outlives the secret.
    let mut doomed = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    doomed.outbox.push(event("DeleteSecret", 4));
    store.delete_secret(&doomed).await.unwrap();
    let names: Vec<String> = events_of(store, &secret.arn)
        .await
        .into_iter()
        .map(|e| e.event_name)
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("DeleteSecret"));
    // Retention.
    assert!(store.delete_events_before(3).await.unwrap() >= 2);
    let names: Vec<String> = events_of(store, &secret.arn)
        .await
        .into_iter()
        .map(|e| e.event_name)
        .collect();
    assert_eq!(names, ["TagResource", "DeleteSecret"]);
}

/// A property over random operation sequences (a fixed-seed generator, so a failure replays):
/// the log holds exactly the events of the writes that committed; a stale save or one the
/// database refuses records nothing.
pub async fn no_event_is_recorded_for_a_write_that_did_not_commit(store: &dyn Store) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut secret = sample_secret(&unique("outbox-"));
    store.insert_secret(&secret).await.unwrap();
    secret = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    let mut committed = Vec::new();
    for i in 0..120 {
        let mut attempt = secret.clone();
        let name = format!("op-{i}");
        attempt.outbox.push(event(&name, i));
        match next() % 3 {
            0 => {
                attempt.description = Some(name.clone());
                let revision = store.save_secret(&attempt).await.unwrap();
                committed.push(name);
                secret = attempt;
                secret.revision = revision;
                secret.outbox.clear();
            }
            1 => {
                attempt.revision -= 1;
                assert!(matches!(
                    store.save_secret(&attempt).await,
                    Err(StoreError::Conflict)
                ));
            }
            _ => {
                add(&mut attempt, &unique("bad-"), Some(&[AWSCURRENT]), i);
                for version in &mut attempt.versions {
                    version.labels.insert("DOUBLE".to_owned());
                }
                assert!(store.save_secret(&attempt).await.is_err());
            }
        }
    }
    let logged: Vec<String> = events_of(store, &secret.arn)
        .await
        .into_iter()
        .map(|e| e.event_name)
        .collect();
    assert_eq!(logged, committed);
    assert!(
        committed.len() > 20 && committed.len() < 100,
        "all three kinds ran"
    );
}

pub async fn subscriptions_keep_a_forward_cursor_and_dead_letters(store: &dyn Store) {
    let sub = crate::SubscriptionRecord {
        id: unique("sub-"),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        url: "https://hooks.example/baton".into(),
        sealed_signing_secret: b"sealed".to_vec(),
        filter: "{}".into(),
        cursor_seq: 5,
        created_at: 1,
    };
    store.insert_subscription(&sub).await.unwrap();
    let find = |all: Vec<crate::SubscriptionRecord>| all.into_iter().find(|s| s.id == sub.id);
    assert_eq!(
        find(store.list_subscriptions().await.unwrap()),
        Some(sub.clone())
    );
    store.advance_subscription(&sub.id, 9).await.unwrap();
    store.advance_subscription(&sub.id, 7).await.unwrap();
    let cursor = find(store.list_subscriptions().await.unwrap())
        .unwrap()
        .cursor_seq;
    assert_eq!(cursor, 9, "a cursor never moves back");
    let letter = crate::DeadLetterRecord {
        subscription_id: sub.id.clone(),
        seq: 8,
        attempts: 6,
        last_error: "HTTP 500".into(),
        failed_at: 2,
    };
    store.insert_dead_letter(&letter).await.unwrap();
    store.insert_dead_letter(&letter).await.unwrap();
    let mine = |all: Vec<crate::DeadLetterRecord>| -> Vec<crate::DeadLetterRecord> {
        all.into_iter()
            .filter(|d| d.subscription_id == sub.id)
            .collect()
    };
    assert_eq!(
        mine(store.list_dead_letters().await.unwrap()),
        vec![letter.clone()]
    );
    assert!(store.delete_dead_letter(&sub.id, 8).await.unwrap());
    assert!(!store.delete_dead_letter(&sub.id, 8).await.unwrap());
    store.insert_dead_letter(&letter).await.unwrap();
    assert!(store.delete_subscription(&sub.id).await.unwrap());
    assert!(
        mine(store.list_dead_letters().await.unwrap()).is_empty(),
        "cascade"
    );
    assert!(find(store.list_subscriptions().await.unwrap()).is_none());
}

pub async fn principals_and_their_policies_round_trip(store: &dyn Store) {
    use crate::{PrincipalPolicyRecord, PrincipalRecord};
    let name = unique("svc");
    let principal = PrincipalRecord {
        name: name.clone(),
        kind: "service".into(),
        created_at: 5,
    };
    store.insert_principal(&principal).await.unwrap();
    assert!(matches!(
        store.insert_principal(&principal).await,
        Err(StoreError::NameTaken)
    ));
    assert_eq!(
        store.find_principal(&name).await.unwrap(),
        Some(principal.clone())
    );
    assert!(store.list_principals().await.unwrap().contains(&principal));
    let policy = |policy_name: &str, document: &str| PrincipalPolicyRecord {
        principal_name: name.clone(),
        policy_name: policy_name.into(),
        document: document.into(),
        updated_at: 6,
    };
    store
        .put_principal_policy(&policy("b", "{1}"))
        .await
        .unwrap();
    store
        .put_principal_policy(&policy("a", "{2}"))
        .await
        .unwrap();
    store
        .put_principal_policy(&policy("b", "{3}"))
        .await
        .unwrap();
    assert_eq!(
        store.list_principal_policies(&name).await.unwrap(),
        vec![policy("a", "{2}"), policy("b", "{3}")],
        "replaced in place, listed by name"
    );
    let orphan = PrincipalPolicyRecord {
        principal_name: unique("nobody"),
        ..policy("a", "{}")
    };
    assert!(matches!(
        store.put_principal_policy(&orphan).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.delete_principal_policy(&name, "a").await.unwrap());
    assert!(!store.delete_principal_policy(&name, "a").await.unwrap());
    let key = AccessKeyRecord {
        access_key_id: unique("BTN"),
        sealed_secret: vec![1],
        user_name: name.clone(),
        created_at: 7,
        scope_arn: None,
        expires_at: None,
        session_token_hash: None,
    };
    store.insert_access_key(&key).await.unwrap();
    assert!(store.delete_principal(&name).await.unwrap());
    assert!(!store.delete_principal(&name).await.unwrap());
    assert_eq!(store.find_principal(&name).await.unwrap(), None);
    assert!(
        store
            .list_principal_policies(&name)
            .await
            .unwrap()
            .is_empty(),
        "policies go with their principal"
    );
    assert_eq!(
        store.find_access_key(&key.access_key_id).await.unwrap(),
        None,
        "so do its access keys"
    );
}

pub async fn the_audit_log_appends_a_gapless_chain(store: &dyn Store) {
    use crate::AuditRecord;
    let marker = unique("req");
    let chain: crate::AuditChain = std::sync::Arc::new(|prev: &[u8], e: &AuditRecord| {
        let mut h = prev.to_vec();
        h.truncate(32);
        h.extend_from_slice(e.chain_seq.to_be_bytes().as_slice());
        h.extend_from_slice(e.request_id.as_bytes());
        h
    });
    let entry = |i: usize| AuditRecord {
        request_id: format!("{marker}-{i}"),
        action: "secretsmanager:GetSecretValue".into(),
        decision: "allow".into(),
        ..Default::default()
    };
    // Concurrent appenders (other tests, other nodes) each get a consecutive run of the shared
    // chain's positions.
    let (a, b) = tokio::join!(
        store.append_audit((0..3).map(entry).collect(), chain.clone()),
        store.append_audit((3..5).map(entry).collect(), chain.clone()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for run in [&a, &b] {
        for pair in run.windows(2) {
            assert_eq!(pair[1].chain_seq, pair[0].chain_seq + 1);
            assert!(pair[1].seq > pair[0].seq, "seq grows along a run");
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        assert!(run.iter().all(|e| e.chain.is_empty()), "the shared chain");
    }
    let (last_seq, last_hash) = store.last_audit().await.unwrap().unwrap();
    assert!(last_seq >= a[2].seq.max(b[1].seq));
    assert!(!last_hash.is_empty());
    let (end, _) = store.audit_chain_end("").await.unwrap().unwrap();
    assert!(end >= a[2].chain_seq.max(b[1].chain_seq));
    let first = a[0].chain_seq.min(b[0].chain_seq);
    let listed = store.list_audit_chain("", first - 1, 1000).await.unwrap();
    assert!(listed.len() >= 5);
    for pair in listed.windows(2) {
        assert_eq!(pair[1].chain_seq, pair[0].chain_seq + 1, "no gaps");
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each links to its predecessor"
        );
    }
    let mine: Vec<&AuditRecord> = listed
        .iter()
        .filter(|e| e.request_id.starts_with(&marker))
        .collect();
    assert_eq!(mine.len(), 5);
    assert!(
        a.iter().chain(&b).all(|e| mine.contains(&e)),
        "read back as stored"
    );
    let by_seq = store
        .list_audit(a[0].seq.min(b[0].seq) - 1, 1000)
        .await
        .unwrap();
    assert!(
        a.iter().chain(&b).all(|e| by_seq.contains(e)),
        "the whole log's listing holds them too"
    );
}

/// A chain appended by its one writer: stored as given with a `seq` each, listed in chain
/// order, its end found; a second entry at a position the chain holds is refused and nothing
/// of its batch is written; a registration entry is found among the chain starts.
pub async fn a_writers_own_audit_chain_appends_as_given_and_cannot_fork(store: &dyn Store) {
    use crate::AuditRecord;
    let chain_id = unique("chain-");
    let entry = |i: i64| AuditRecord {
        request_id: format!("{chain_id}-{i}"),
        action: "secretsmanager:GetSecretValue".into(),
        decision: "allow".into(),
        chain: chain_id.clone(),
        chain_seq: i,
        prev_hash: vec![i as u8],
        hash: vec![i as u8 + 1],
        ..Default::default()
    };
    let first = store
        .append_audit_chained((1..=3).map(entry).collect())
        .await
        .unwrap();
    let more = store
        .append_audit_chained((4..=5).map(entry).collect())
        .await
        .unwrap();
    assert!(more[0].seq > first[2].seq, "a later append has later seqs");
    let listed = store.list_audit_chain(&chain_id, 0, 100).await.unwrap();
    assert_eq!(listed, [first, more].concat(), "read back as stored");
    assert_eq!(
        store
            .list_audit_chain(&chain_id, 3, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.audit_chain_end(&chain_id).await.unwrap(),
        Some((5, vec![6]))
    );
    // A fork: position 5 again, with 6 after it in the same batch.
    let mut fork = entry(5);
    fork.request_id = "forged".into();
    assert!(
        store
            .append_audit_chained(vec![entry(6), fork])
            .await
            .is_err()
    );
    assert_eq!(
        store
            .list_audit_chain(&chain_id, 0, 100)
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(store.audit_chain_end("no-such-chain").await.unwrap(), None);

    let registration = AuditRecord {
        request_id: unique("start-"),
        action: crate::START_AUDIT_CHAIN.into(),
        resource: chain_id.clone(),
        ..Default::default()
    };
    let chain: crate::AuditChain = std::sync::Arc::new(|_: &[u8], _: &AuditRecord| vec![7]);
    store
        .append_audit(vec![registration.clone()], chain.clone())
        .await
        .unwrap();
    let starts = store.audit_chain_starts().await.unwrap();
    assert!(
        starts
            .iter()
            .any(|s| s.resource == chain_id && s.request_id == registration.request_id)
    );
    let ends = store.audit_chain_ends().await.unwrap();
    assert_eq!(ends[0].0, "", "the shared chain comes first: {ends:?}");
    assert_eq!(
        ends.iter()
            .filter(|(c, _, _)| *c == chain_id)
            .collect::<Vec<_>>(),
        [&(chain_id.clone(), 5, vec![6])],
        "a registered chain is listed once, with its end"
    );
    // Registered again (a retry), still once; a chain registered before its first entry ends at 0.
    store
        .append_audit(vec![registration.clone()], chain.clone())
        .await
        .unwrap();
    let empty = unique("chain-");
    store
        .append_audit(
            vec![AuditRecord {
                request_id: unique("start-"),
                resource: empty.clone(),
                ..registration
            }],
            chain,
        )
        .await
        .unwrap();
    let ends = store.audit_chain_ends().await.unwrap();
    let at = |c: &str| ends.iter().position(|(name, _, _)| name == c);
    assert_eq!(ends.iter().filter(|(c, _, _)| *c == chain_id).count(), 1);
    assert!(
        at(&chain_id) < at(&empty),
        "in registration order: {ends:?}"
    );
    assert_eq!(ends[at(&empty).unwrap()], (empty.clone(), 0, vec![]));
    let (_, shared_end, shared_hash) = &ends[0];
    assert_eq!(
        store.audit_chain_end("").await.unwrap(),
        Some((*shared_end, shared_hash.clone())),
        "the shared chain's end: {ends:?}"
    );
}

/// Grants are found by id, listed by key and by retiring principal, deleted once, and deleted
/// with their key.
pub async fn grants_round_trip_and_go_with_their_key(store: &dyn Store) {
    let key = sample_secret("grant-key");
    store.insert_secret(&key).await.unwrap();
    let retiring = unique("arn:aws:iam::1:role/retirer-");
    let grant = crate::GrantRecord {
        grant_id: unique("g-"),
        secret_id: key.id.clone(),
        key_arn: key.arn.clone(),
        grantee: "arn:aws:iam::1:role/app".into(),
        retiring: Some(retiring.clone()),
        name: Some("app-decrypt".into()),
        token_hash: vec![7; 32],
        body: r#"{"Operations":["Decrypt"]}"#.into(),
        created_at: 5,
    };
    store.insert_grant(&grant).await.unwrap();
    assert!(matches!(
        store.insert_grant(&grant).await,
        Err(StoreError::NameTaken)
    ));
    let second = crate::GrantRecord {
        grant_id: unique("g-"),
        retiring: None,
        name: None,
        created_at: 6,
        ..grant.clone()
    };
    store.insert_grant(&second).await.unwrap();
    assert_eq!(
        store.find_grant(&grant.grant_id).await.unwrap(),
        Some(grant.clone())
    );
    assert_eq!(
        store.grants_of_key(&key.id).await.unwrap(),
        vec![grant.clone(), second.clone()]
    );
    assert_eq!(
        store.grants_retirable_by(&retiring).await.unwrap(),
        vec![grant.clone()]
    );
    assert!(store.delete_grant(&grant.grant_id).await.unwrap());
    assert!(!store.delete_grant(&grant.grant_id).await.unwrap());
    store.delete_secret(&key).await.unwrap();
    assert_eq!(store.find_grant(&second.grant_id).await.unwrap(), None);
}

/// A KMS key's keyring keeps its key metadata; aliases are unique, move between keys, list by
/// namespace, and go with the key's secret.
pub async fn keys_and_their_aliases_round_trip(store: &dyn Store) {
    let mut key = sample_secret("kms-key");
    key.key = Some(baton_core::KeyMeta {
        key_id: unique("k-"),
        spec: "RSA_2048".into(),
        usage: "SIGN_VERIFY".into(),
        enabled: true,
        aws_managed: false,
    });
    store.insert_secret(&key).await.unwrap();
    let read = store.find_secret_by_arn(&key.arn).await.unwrap().unwrap();
    assert_eq!(read, key);
    let mut managed = sample_secret("kms-managed");
    managed.key = Some(baton_core::KeyMeta {
        key_id: unique("k-"),
        spec: "SYMMETRIC_DEFAULT".into(),
        usage: "ENCRYPT_DECRYPT".into(),
        enabled: true,
        aws_managed: true,
    });
    store.insert_secret(&managed).await.unwrap();
    let read_managed = store
        .find_secret_by_arn(&managed.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read_managed.key, managed.key,
        "an AWS managed key stays one"
    );
    let mut disabled = read.clone();
    disabled.key.as_mut().unwrap().enabled = false;
    // A secret moved to another KMS key saves its re-wrapped data key.
    disabled.wrapped_data_key = vec![9, 9, 9];
    store.save_secret(&disabled).await.unwrap();
    let read = store.find_secret_by_arn(&key.arn).await.unwrap().unwrap();
    assert!(!read.key.as_ref().unwrap().enabled);
    assert_eq!(read.wrapped_data_key, vec![9, 9, 9]);
    let other = sample_secret("kms-key-2");
    store.insert_secret(&other).await.unwrap();
    let prefix = format!("arn:aws:kms:us-east-1:{}:alias/", key.account_id);
    let alias = crate::AliasRecord {
        alias_arn: format!("{prefix}app"),
        alias_name: "alias/app".into(),
        key_id: "k1".into(),
        secret_id: key.id.clone(),
        created_at: 5,
        updated_at: 5,
    };
    assert!(store.create_alias(&alias).await.unwrap());
    assert!(
        !store.create_alias(&alias).await.unwrap(),
        "alias names are unique"
    );
    let moved = crate::AliasRecord {
        key_id: "k2".into(),
        secret_id: other.id.clone(),
        updated_at: 9,
        ..alias.clone()
    };
    assert!(store.update_alias(&moved).await.unwrap());
    assert_eq!(
        store.find_alias(&alias.alias_arn).await.unwrap(),
        Some(moved.clone())
    );
    let second = crate::AliasRecord {
        alias_arn: format!("{prefix}b"),
        alias_name: "alias/b".into(),
        ..alias.clone()
    };
    assert!(store.create_alias(&second).await.unwrap());
    let listed = store.list_aliases(&prefix).await.unwrap();
    assert_eq!(listed, vec![moved.clone(), second.clone()]);
    assert!(
        store
            .list_aliases("arn:aws:kms:us-east-1:nobody:alias/")
            .await
            .unwrap()
            .is_empty()
    );
    // Deleting the key's secret deletes the aliases that point at it.
    store.delete_secret(&read).await.unwrap();
    assert_eq!(store.find_alias(&second.alias_arn).await.unwrap(), None);
    assert!(store.delete_alias(&moved.alias_arn).await.unwrap());
    assert!(!store.delete_alias(&moved.alias_arn).await.unwrap());
    assert!(!store.update_alias(&moved).await.unwrap());
}

pub async fn leases_fence_out_a_holder_that_lost_them(store: &dyn Store) {
    use crate::Fence;
    let secret = sample_secret("leased");
    store.insert_secret(&secret).await.unwrap();
    let key = secret.arn.clone();
    let now = 1_000_000;
    let a = store.acquire_lease(&key, "node-a", now, 300).await.unwrap();
    let a = a.expect("a free lease is granted");
    assert_eq!(
        store
            .acquire_lease(&key, "node-a", now + 1, 300)
            .await
            .unwrap(),
        Some(a),
        "the holder renews with the same token"
    );
    assert_eq!(
        store
            .acquire_lease(&key, "node-b", now + 2, 300)
            .await
            .unwrap(),
        None,
        "another node waits while the lease runs"
    );
    let fence_a = Fence {
        key: key.clone(),
        holder: "node-a".into(),
        token: a,
    };
    let mut mine = store.find_secret_by_arn(&key).await.unwrap().unwrap();
    mine.description = Some("written by a".into());
    store.save_secret_fenced(&mine, &fence_a).await.unwrap();
    // The lease lapses (PostgreSQL judges by its own clock, so really wait).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let b = store
        .acquire_lease(&key, "node-b", now + 1_000, 300_000)
        .await
        .unwrap()
        .expect("a lapsed lease is taken over");
    assert!(b > a, "a takeover gets a larger token");
    // A wakes up and writes with its old token: refused, and nothing is written.
    let mut stale = store.find_secret_by_arn(&key).await.unwrap().unwrap();
    stale.description = Some("stale write by a".into());
    assert!(matches!(
        store.save_secret_fenced(&stale, &fence_a).await,
        Err(StoreError::FencedOut)
    ));
    let now_stored = store.find_secret_by_arn(&key).await.unwrap().unwrap();
    assert_eq!(now_stored.description.as_deref(), Some("written by a"));
    let fence_b = Fence {
        key: key.clone(),
        holder: "node-b".into(),
        token: b,
    };
    stale.description = Some("written by b".into());
    store.save_secret_fenced(&stale, &fence_b).await.unwrap();
    assert_eq!(
        store
            .acquire_lease(&key, "node-a", now + 2_000, 300)
            .await
            .unwrap(),
        None
    );
    store.release_lease(&key, "node-b", b).await.unwrap();
    let again = store
        .acquire_lease(&key, "node-a", now + 3_000, 300)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(again > b);
    assert!(store.schema_version().await.unwrap() >= crate::latest_schema_version());
}

pub async fn open_and_scheduled_rotations_are_listed_per_namespace(store: &dyn Store) {
    use baton_core::rotation::{Rotation, RotationPolicy, RotationState, Status, Step};
    let first = sample_secret("open-a");
    let in_namespace = |name: &str| {
        let mut s = sample_secret(name);
        s.account_id = first.account_id.clone();
        s.arn = format!(
            "arn:aws:secretsmanager:us-east-1:{}:secret:{name}-{}",
            first.account_id,
            &s.id[..6]
        );
        s
    };
    let rotating = |mut secret: SecretRecord, started: i64, status: Status| {
        let (mut machine, _) = Rotation::start(
            secret.id.clone(),
            format!("v-{started}"),
            None,
            RotationPolicy::default(),
            started,
        );
        machine.status = status;
        secret.rotation_state = Some(RotationState {
            machine,
            timeline: Vec::new(),
            due_at: None,
        });
        secret
    };
    let running = rotating(first.clone(), 2_000, Status::Running);
    let stopped = rotating(
        in_namespace("open-b"),
        1_000,
        Status::Stopped {
            step: Step::Test,
            reason: "refused".into(),
        },
    );
    let mut finished = rotating(in_namespace("open-c"), 500, Status::Succeeded);
    finished.rotation.next_rotation_at = Some(100);
    let elsewhere = rotating(sample_secret("open-d"), 10, Status::Running);
    for s in [&running, &stopped, &finished, &elsewhere] {
        store.insert_secret(s).await.unwrap();
    }
    let open = store
        .open_rotations(&first.account_id, "us-east-1", 10)
        .await
        .unwrap();
    assert_eq!(open, vec![stopped.arn.clone(), running.arn.clone()]);
    let one = store
        .open_rotations(&first.account_id, "us-east-1", 1)
        .await
        .unwrap();
    assert_eq!(one, vec![stopped.arn.clone()]);
    assert!(
        store
            .open_rotations(&first.account_id, "eu-west-1", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = store
        .scheduled_rotations(&first.account_id, "us-east-1", 100, 10)
        .await
        .unwrap();
    assert_eq!(
        due,
        vec![(finished.arn.clone(), finished.name.clone(), 100)]
    );
    assert!(
        store
            .scheduled_rotations(&first.account_id, "us-east-1", 99, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_listing_page_is_read_in_creation_order(store: &dyn Store) {
    let first = sample_secret("page-a");
    let mut secrets = vec![first.clone()];
    for (i, name) in ["page-b", "page-c", "page-d"].iter().enumerate() {
        let mut s = sample_secret(name);
        s.account_id = first.account_id.clone();
        s.arn = format!(
            "arn:aws:secretsmanager:us-east-1:{}:secret:{name}-{}",
            first.account_id,
            &s.id[..6]
        );
        s.created_at = first.created_at + 1 + i as i64;
        secrets.push(s);
    }
    secrets[3].deletion = DeletionState::Scheduled {
        deleted_at: 5_000,
        purge_at: 9_000,
    };
    // Inserted out of order: the page's order is the creation time's, not the insertion's.
    for s in secrets.iter().rev() {
        store.insert_secret(s).await.unwrap();
    }
    let arns = |range: std::ops::Range<usize>| -> Vec<String> {
        secrets[range].iter().map(|s| s.arn.clone()).collect()
    };
    let page = |deleted, newest, offset, limit| {
        store.list_secret_arns_page(
            &first.account_id,
            "us-east-1",
            deleted,
            newest,
            offset,
            limit,
        )
    };
    assert_eq!(page(false, false, 0, 10).await.unwrap(), arns(0..3));
    assert_eq!(page(true, false, 0, 10).await.unwrap(), arns(0..4));
    assert_eq!(page(false, false, 1, 1).await.unwrap(), arns(1..2));
    let mut newest = arns(0..4);
    newest.reverse();
    assert_eq!(page(true, true, 0, 2).await.unwrap(), newest[..2].to_vec());
    assert!(page(false, false, 3, 10).await.unwrap().is_empty());
    assert!(
        store
            .list_secret_arns_page(&first.account_id, "eu-west-1", true, false, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_text_search_finds_secrets_containing_it(store: &dyn Store) {
    let mut named = sample_secret("Search-Payments_DB");
    named.description = Some("Holds 100% of the LEDGER".into());
    named.tags = vec![Tag {
        key: "Owner".into(),
        value: "team_blue".into(),
    }];
    let mut other = sample_secret("unrelated");
    other.account_id = named.account_id.clone();
    other.arn = format!(
        "arn:aws:secretsmanager:us-east-1:{}:secret:unrelated-{}",
        named.account_id,
        &other.id[..6]
    );
    other.description = None;
    other.tags = Vec::new();
    let mut later = other.clone();
    later.id = unique("sec-");
    later.name = "later".into();
    later.arn = format!(
        "arn:aws:secretsmanager:us-east-1:{}:secret:later-{}",
        named.account_id,
        &later.id[..6]
    );
    later.description = Some("a copy of the ledger".into());
    later.created_at = named.created_at + 5;
    for s in [&later, &named, &other] {
        store.insert_secret(s).await.unwrap();
    }
    // In creation order, or newest first.
    for (newest, expected) in [
        (false, vec![named.arn.clone(), later.arn.clone()]),
        (true, vec![later.arn.clone(), named.arn.clone()]),
    ] {
        let found = store
            .search_secret_arns(&named.account_id, "us-east-1", "LEDGER", newest, 10)
            .await
            .unwrap();
        assert_eq!(found, expected, "newest first: {newest}");
    }
    let search = |text: &'static str| {
        store.search_secret_arns(&named.account_id, "us-east-1", text, false, 10)
    };
    let just_named = vec![named.arn.clone()];
    // Name, description, tag key and tag value, in any case.
    for text in ["payments", "PAYMENTS_db", "holds", "owner", "BLUE"] {
        assert_eq!(search(text).await.unwrap(), just_named, "{text}");
    }
    // LIKE's wildcards are plain characters.
    assert_eq!(search("100%").await.unwrap(), just_named);
    assert!(search("1%0").await.unwrap().is_empty());
    assert_eq!(
        search("m_b").await.unwrap(),
        just_named,
        "the _ in team_blue"
    );
    assert!(
        search("h_p").await.unwrap().is_empty(),
        "_ does not match the - of search-payments"
    );
    assert!(search("nowhere").await.unwrap().is_empty());
    assert!(
        store
            .search_secret_arns(&named.account_id, "eu-west-1", "payments", false, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every check, by name, for engines' test files that run them in a loop.
pub const CHECKS: &[&str] = &[
    "inserted_secret_reads_back_identically",
    "names_are_unique_per_namespace",
    "saves_add_versions_and_move_labels",
    "pruned_versions_are_deleted",
    "stale_revision_is_a_conflict_and_writes_nothing",
    "database_refuses_a_label_on_two_versions",
    "listing_is_per_namespace_and_oldest_first",
    "heads_are_the_listing_without_versions",
    "a_listing_page_is_read_in_creation_order",
    "a_text_search_finds_secrets_containing_it",
    "purge_finds_due_secrets_and_deletes_everything",
    "access_keys_round_trip",
    "replicas_round_trip_and_hold_their_name",
    "promoting_a_replica_is_one_transaction",
    "rotation_state_round_trips_and_due_rotations_are_found",
    "open_and_scheduled_rotations_are_listed_per_namespace",
    "rotators_round_trip",
    "an_empty_version_is_filled_once",
    "consumers_round_trip_and_expire",
    "plain_reads_keep_the_latest",
    "committed_changes_are_published",
    "events_are_written_with_their_change_and_read_in_order",
    "no_event_is_recorded_for_a_write_that_did_not_commit",
    "subscriptions_keep_a_forward_cursor_and_dead_letters",
    "principals_and_their_policies_round_trip",
    "the_audit_log_appends_a_gapless_chain",
    "a_writers_own_audit_chain_appends_as_given_and_cannot_fork",
    "leases_fence_out_a_holder_that_lost_them",
    "keys_and_their_aliases_round_trip",
    "grants_round_trip_and_go_with_their_key",
    "root_key_state_nodes_and_sealed_blobs_round_trip",
];

/// The root key's rotation: its state is a compare-and-swap row, heartbeats carry the keys a
/// node holds, `baton_meta` keeps the first value stored, and a re-wrap replaces a blob only if
/// it is unchanged, moving a secret's revision on so that a writer holding the old blob gets a
/// conflict instead of writing it back.
pub async fn root_key_state_nodes_and_sealed_blobs_round_trip(store: &dyn Store) {
    let state = store.root_key_state("rk-0000000000000001").await.unwrap();
    assert!(!state.primary_key.is_empty());
    let mut next = state.clone();
    next.phase = Some("Added".into());
    next.new_key = Some("rk-00000000000000ff".into());
    next.old_keys = vec![state.primary_key.clone()];
    next.note = "waiting for node-a".into();
    assert!(store.save_root_key_state(&next).await.unwrap());
    assert!(
        !store.save_root_key_state(&next).await.unwrap(),
        "a stale revision saves nothing"
    );
    let read = store.root_key_state("rk-ignored").await.unwrap();
    assert_eq!(read.revision, state.revision + 1);
    assert_eq!(read.old_keys, next.old_keys);
    assert_eq!(read.note, next.note);
    // Put it back as it was, for whoever shares this database.
    let mut back = state.clone();
    back.revision = read.revision;
    assert!(store.save_root_key_state(&back).await.unwrap());

    let name = unique("meta-");
    assert_eq!(
        store.init_meta_value(&name, b"first", 1).await.unwrap(),
        b"first"
    );
    assert_eq!(
        store.init_meta_value(&name, b"second", 2).await.unwrap(),
        b"first"
    );
    assert_eq!(store.meta_value(&name).await.unwrap().unwrap(), b"first");
    assert_eq!(store.meta_value(&unique("absent-")).await.unwrap(), None);

    let node = NodeRecord {
        node_id: unique("node-"),
        address: "127.0.0.1:1".into(),
        started_at: 5,
        keys_held: vec!["rk-a".into(), "rk-b".into()],
        wraps_with: "rk-a".into(),
        age_ms: 0,
    };
    let now = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    store.heartbeat_node(&node, now).await.unwrap();
    let mut moved = node.clone();
    moved.wraps_with = "rk-b".into();
    store.heartbeat_node(&moved, now).await.unwrap();
    let listed = store.list_nodes(now, 86_400_000).await.unwrap();
    let seen = listed
        .iter()
        .find(|n| n.node_id == node.node_id)
        .expect("heartbeat listed");
    assert_eq!(seen.keys_held, node.keys_held);
    assert_eq!(seen.wraps_with, "rk-b");
    assert!(
        (-60_000..60_000).contains(&seen.age_ms),
        "age {}",
        seen.age_ms
    );

    let key = AccessKeyRecord {
        access_key_id: unique("BTNRW"),
        sealed_secret: vec![1, 1, 1],
        user_name: "admin".into(),
        created_at: 42,
        scope_arn: None,
        expires_at: None,
        session_token_hash: None,
    };
    store.insert_access_key(&key).await.unwrap();
    let mut after = String::new();
    let mut found = false;
    loop {
        let page = store
            .list_sealed(SealedKind::AccessKey, &after, 100)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        found |= page
            .iter()
            .any(|b| b.id == key.access_key_id && b.blob == key.sealed_secret);
    }
    assert!(found, "paging by id lists every access key");
    let replace = |old: Vec<u8>, new: Vec<u8>| SealedReplacement {
        id: key.access_key_id.clone(),
        old,
        new,
    };
    assert_eq!(
        store
            .replace_sealed(SealedKind::AccessKey, &[replace(vec![7], vec![2, 2, 2])])
            .await
            .unwrap(),
        0,
        "a blob that changed since it was read is left alone"
    );
    assert_eq!(
        store
            .replace_sealed(
                SealedKind::AccessKey,
                &[replace(vec![1, 1, 1], vec![2, 2, 2])]
            )
            .await
            .unwrap(),
        1
    );
    let read = store
        .find_access_key(&key.access_key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.sealed_secret, vec![2, 2, 2]);

    let secret = sample_secret("rewrap");
    store.insert_secret(&secret).await.unwrap();
    // Fill a cache, if the engine has one.
    store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    let replaced = store
        .replace_sealed(
            SealedKind::SecretDataKey,
            &[SealedReplacement {
                id: secret.id.clone(),
                old: secret.wrapped_data_key.clone(),
                new: vec![4, 5, 6],
            }],
        )
        .await
        .unwrap();
    assert_eq!(replaced, 1);
    let read = store
        .find_secret_by_arn(&secret.arn)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.wrapped_data_key, vec![4, 5, 6], "no stale cached blob");
    let mut stale = secret.clone();
    add(&mut stale, "v2", None, 2_000);
    assert!(
        matches!(store.save_secret(&stale).await, Err(StoreError::Conflict)),
        "a writer holding the old blob must read again"
    );
}

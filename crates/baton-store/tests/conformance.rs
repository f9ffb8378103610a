//! Runs the store conformance suite against SQLite and PostgreSQL. Every test that needs
//! PostgreSQL has `postgres` in its name and reads `BATON_TEST_POSTGRES_URL` (CI sets it).

use baton_store::{PostgresStore, SqliteStore, Store, conformance};

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
    purge_finds_due_secrets_and_deletes_everything,
    access_keys_round_trip,
    replicas_round_trip_and_hold_their_name,
    promoting_a_replica_is_one_transaction,
    rotation_state_round_trips_and_due_rotations_are_found,
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
    leases_fence_out_a_holder_that_lost_them,
    keys_and_their_aliases_round_trip,
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

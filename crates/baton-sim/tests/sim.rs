//! Simulated rotations: Baton's phased rotation never fails a verification, under faults and
//! across seeds, while the one-step control does. `BATON_SIM_SEED=N` replays one seed.

use baton_sim::{Mode, SimConfig, run};

fn seeds() -> Vec<u64> {
    match std::env::var("BATON_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("BATON_SIM_SEED is a number")],
        Err(_) => (1..=12).collect(),
    }
}

fn assert_clean(config: &SimConfig) {
    let report = run(config);
    println!("{report}");
    assert!(
        report.invariant_violations.is_empty(),
        "{report}\n{:#?}\nreplay with BATON_SIM_SEED={}",
        report.invariant_violations,
        report.seed
    );
    assert_eq!(
        report.verification_failures, 0,
        "{report}\nreplay with BATON_SIM_SEED={}",
        report.seed
    );
    // Every instance sends all along (one message per interval): most of them arrived.
    let sent = config.instances as i64 * config.duration_ms / config.message_interval_ms;
    assert!(report.messages as i64 > sent * 9 / 10, "{report}");
    assert!(
        report.rotations_succeeded >= 3,
        "{report}\nreplay with BATON_SIM_SEED={}",
        report.seed
    );
}

#[test]
fn phased_rotation_with_reporting_consumers_never_fails_a_verification_under_faults() {
    for seed in seeds() {
        let config = SimConfig::phased_with_faults(seed);
        assert_clean(&config);
    }
}

#[test]
fn phased_rotation_with_plain_aws_readers_never_fails_a_verification() {
    for seed in seeds() {
        assert_clean(&SimConfig::phased_non_reporting(seed));
    }
}

#[test]
fn faults_are_actually_injected() {
    let report = run(&SimConfig::phased_with_faults(7));
    assert!(report.step_failures > 0, "{report}");
    assert!(report.crashes > 0, "{report}");
    assert!(report.partitions > 0, "{report}");
}

/// The control: replacing the value in one step breaks requests, so the checker can fail.
#[test]
fn one_step_rotation_is_caught_failing_verifications() {
    for seed in seeds() {
        let config = SimConfig::naive(seed);
        assert_eq!(config.mode, Mode::Naive);
        let report = run(&config);
        println!("{report}");
        assert!(report.verification_failures > 0, "{report}");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::phased_with_faults(42);
    assert_eq!(run(&config), run(&config));
}

#[test]
fn gates_that_pass_too_early_are_caught() {
    // A propagation delay shorter than the refresh interval, with readers that do not report:
    // the gates pass before every reader has the new keyring, and verifications fail.
    let mut config = SimConfig::phased_non_reporting(3);
    config.policy.propagation_delay_ms = config.refresh_ms / 10;
    let report = run(&config);
    assert!(report.verification_failures > 0, "{report}");
}

#[test]
fn phased_rotation_behind_aws_caches_never_fails_a_verification() {
    for seed in seeds() {
        let config = SimConfig::phased_aws_caches(seed);
        let report = run(&config);
        assert!(report.cache_requests > 1_000, "{report}");
        assert_clean(&config);
    }
}

#[test]
fn phased_rotation_with_aws_caches_and_reporting_clients_never_fails_a_verification() {
    for seed in seeds() {
        assert_clean(&SimConfig::phased_mixed(seed));
    }
}

/// Control (a): counting only reads that return a value leaves caches that poll with
/// DescribeSecret unseen, and the gates pass before they hold what they need.
#[test]
fn aws_caches_are_caught_failing_when_describe_is_not_a_read() {
    let failures: u64 = seeds()
        .into_iter()
        .map(|seed| run(&SimConfig::control_reads_values_only(seed)).verification_failures)
        .sum();
    assert!(failures > 0, "the control showed no failure");
}

/// Control (b): removing AWSPENDING at promotion leaves a per-label cache whose AWSPENDING
/// entry expired before its AWSCURRENT entry holding only the old version.
#[test]
fn aws_caches_are_caught_failing_when_promotion_removes_awspending() {
    let failures: u64 = seeds()
        .into_iter()
        .map(|seed| {
            run(&SimConfig::control_pending_dropped_at_promotion(seed)).verification_failures
        })
        .sum();
    assert!(failures > 0, "the control showed no failure");
}

//! `baton-sim --seeds N [--first S] [--naive | --non-reporting | --aws-caches | --mixed |
//! --control reads-values-only | --control pending-dropped-at-promotion]`: runs N seeds of the
//! simulated rotation protocol and ends with `seeds=N failed_verifications=F
//! invariant_violations=V`. Exits non-zero when Baton's phased rotation fails a verification or
//! breaks an invariant, or when a control shows no failure.

use baton_sim::{SimConfig, run};

fn main() -> std::process::ExitCode {
    let mut seeds: u64 = 100;
    let mut first: u64 = 1;
    let mut preset: fn(u64) -> SimConfig = SimConfig::phased_with_faults;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |flag: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("error: {flag} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match arg.as_str() {
            "--seeds" => seeds = number("--seeds"),
            "--first" => first = number("--first"),
            "--naive" => preset = SimConfig::naive,
            "--non-reporting" => preset = SimConfig::phased_non_reporting,
            "--aws-caches" => preset = SimConfig::phased_aws_caches,
            "--mixed" => preset = SimConfig::phased_mixed,
            "--control" => match args.next().as_deref() {
                Some("reads-values-only") => preset = SimConfig::control_reads_values_only,
                Some("pending-dropped-at-promotion") => {
                    preset = SimConfig::control_pending_dropped_at_promotion
                }
                other => {
                    eprintln!(
                        "error: --control takes reads-values-only or pending-dropped-at-promotion, not {other:?}"
                    );
                    return std::process::ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "error: unknown argument {other}; use --seeds N, --first S, --naive, --non-reporting, --aws-caches, --mixed or --control NAME"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let config_for = preset;
    let control = preset(first).is_control();
    // Seeds are independent: spread them over the machine's cores, then report in seed order.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut reports: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    (first..first + seeds)
                        .filter(|seed| seed % workers == w)
                        .map(|seed| run(&config_for(seed)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    let (mut failed, mut violations, mut messages) = (0u64, 0u64, 0u64);
    let mut failing_seeds = Vec::new();
    for report in &reports {
        messages += report.messages;
        failed += report.verification_failures;
        violations += report.invariant_violations.len() as u64;
        if report.verification_failures > 0 || !report.invariant_violations.is_empty() {
            if failing_seeds.len() < 10 && !control {
                eprintln!("{report}");
                for v in report
                    .invariant_violations
                    .iter()
                    .chain(&report.failure_samples)
                {
                    eprintln!("  {v}");
                }
            }
            failing_seeds.push(report.seed);
        }
    }
    println!(
        "messages={messages} seeds_with_failures={}",
        failing_seeds.len()
    );
    if !control && !failing_seeds.is_empty() {
        println!(
            "replay a failing seed with: cargo run --release -p baton-sim -- --seeds 1 --first {}",
            failing_seeds[0]
        );
    }
    if control {
        println!(
            "this is a control: its failures are expected, and the run fails if there are none"
        );
    }
    println!("seeds={seeds} failed_verifications={failed} invariant_violations={violations}");
    let ok = if control {
        failed > 0
    } else {
        failed == 0 && violations == 0
    };
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

//! Rotation metrics, from the events the engine records. No label grows with the number of
//! secrets: gates, steps, outcomes and rotator kinds are small fixed sets (a rotator that is not
//! built in counts as `external`); per-secret detail is in the API.

use baton_core::Timestamp;
use baton_core::rotation::{Gate, RotationEvent};

fn gate_name(gate: Gate) -> &'static str {
    match gate {
        Gate::Propagation => "propagation",
        Gate::Drain => "drain",
    }
}

/// The label for a rotation's rotator: a built-in's name, or `external`.
pub(crate) fn rotator_label(lambda_arn: Option<&str>) -> String {
    match lambda_arn {
        Some(arn) if crate::is_builtin(arn) => crate::rotator_name(arn).to_owned(),
        Some(_) => "external".to_owned(),
        None => "none".to_owned(),
    }
}

/// Counts one recorded event. `waiting_since` is when the gate that passed began to wait, if
/// it was already waiting when this drive began (a gate passed in the drive that reached it
/// waited no time).
pub(crate) fn recorded(
    event: &RotationEvent,
    rotator: &str,
    waiting_since: Option<Timestamp>,
    now: Timestamp,
) {
    match event {
        RotationEvent::GatePassed { gate, forced } => {
            let waited = waiting_since.map_or(0, |since| (now - since).max(0));
            metrics::histogram!("baton_gate_wait_seconds", "gate" => gate_name(*gate))
                .record(waited as f64 / 1_000.0);
            if *forced {
                metrics::counter!("baton_gates_forced_total", "gate" => gate_name(*gate))
                    .increment(1);
            }
        }
        RotationEvent::GateAlert { gate, .. } => {
            metrics::counter!("baton_gate_alerts_total", "gate" => gate_name(*gate)).increment(1);
        }
        RotationEvent::StepHeld { .. } => {
            metrics::counter!("baton_gate_alerts_total", "gate" => "retire-step").increment(1);
        }
        RotationEvent::StepFailed { step, .. } => {
            metrics::counter!(
                "baton_rotation_step_failures_total",
                "rotator" => rotator.to_owned(),
                "step" => step.as_str()
            )
            .increment(1);
        }
        RotationEvent::Stopped { .. } => ended("stopped"),
        RotationEvent::Succeeded => ended("succeeded"),
        RotationEvent::Cancelled => ended("cancelled"),
        RotationEvent::PhaseReached(_)
        | RotationEvent::GateWaiting { .. }
        | RotationEvent::StepDeferred { .. } => {}
    }
}

fn ended(outcome: &'static str) {
    metrics::counter!("baton_rotations_ended_total", "outcome" => outcome).increment(1);
}

/// A node lost a rotation's lease to another (a takeover, seen by the node that lost it).
pub(crate) fn lease_lost(how: &'static str) {
    metrics::counter!("baton_lease_takeovers_total", "seen_as" => how).increment(1);
}

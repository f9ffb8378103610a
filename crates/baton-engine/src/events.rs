//! The events a rotation records in the event log, named like AWS's rotation service events
//! (`RotationStarted`, `RotationSucceeded`, `RotationFailed`) plus Baton's phases and gates.

use baton_core::rotation::{Phase, RotationEvent, RotationState};
use baton_core::{NewEvent, Timestamp};

fn name(event: &RotationEvent) -> &'static str {
    match event {
        RotationEvent::PhaseReached(Phase::Started) => "RotationStarted",
        RotationEvent::PhaseReached(_) => "RotationPhaseReached",
        RotationEvent::GateWaiting { .. } => "RotationGateWaiting",
        RotationEvent::GatePassed { .. } => "RotationGatePassed",
        RotationEvent::GateAlert { .. } | RotationEvent::StepHeld { .. } => "RotationAlert",
        RotationEvent::StepFailed { .. } => "RotationStepFailed",
        RotationEvent::StepDeferred { .. } => "RotationStepWaiting",
        RotationEvent::Stopped { .. } => "RotationFailed",
        RotationEvent::Succeeded => "RotationSucceeded",
        RotationEvent::Cancelled => "RotationCancelled",
    }
}

/// Records `event` in the rotation's timeline and returns the event to log, if any. Waiting
/// is logged when it begins, not on every look at the gate.
pub(crate) fn record(
    state: &mut RotationState,
    secret_arn: &str,
    now: Timestamp,
    event: &RotationEvent,
) -> Option<NewEvent> {
    let already_waiting = matches!(
        event,
        RotationEvent::GateWaiting { .. } | RotationEvent::StepDeferred { .. }
    ) && state.timeline.last().is_some_and(|last| {
        last.event.contains(" waiting")
            && last.event.split(' ').next() == event.to_string().split(' ').next()
    });
    let before = state.timeline.len();
    let last_before = state.timeline.last().cloned();
    state.record(now, event);
    let appended = state.timeline.len() != before || state.timeline.last() != last_before.as_ref();
    if !appended || already_waiting {
        return None;
    }
    let phase = match event {
        RotationEvent::PhaseReached(phase) => Some(phase.as_str()),
        _ => None,
    };
    Some(NewEvent {
        event_id: crate::new_version_id(),
        at: now,
        name: name(event).to_owned(),
        detail: serde_json::json!({
            "requestParameters": { "secretId": secret_arn },
            "additionalEventData": {
                "versionId": state.machine.version_id,
                "phase": phase,
                "message": event.to_string(),
            },
        })
        .to_string(),
    })
}

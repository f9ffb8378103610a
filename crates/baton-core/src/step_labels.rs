//! The staging-label changes of the rotation steps that move labels: promotion, retirement
//! and cancellation. The engine, the API and the simulator all call these, so the labels a
//! simulated rotation shows are the labels a real one writes.
//!
//! AWSPENDING stays on the new version from promotion until retirement. AWS's caching
//! libraries and agent cache each staging label apart, each with its own expiry, so right
//! after promotion a verifier may hold a fresh AWSPENDING entry next to a stale AWSCURRENT one.
//! If promotion removed AWSPENDING, that verifier would hold only the old version while other
//! instances already sign with the new one. AWS documents that after a rotation AWSPENDING
//! "might be attached to the same version as AWSCURRENT", so keeping it there is compatible.

use crate::rotation::Rotation;
use crate::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, CoreError, LabelMove, SecretRecord, Timestamp};

/// Promotion: AWSCURRENT moves to the new version (AWSPREVIOUS follows to the version that
/// held it), and AWSPENDING stays on the new version (it is put back if a rotation function
/// removed it). One atomic change; idempotent.
pub fn promote_labels(
    secret: &mut SecretRecord,
    rotation: &Rotation,
    now: Timestamp,
) -> Result<(), CoreError> {
    let new = rotation.version_id.as_str();
    let current = secret
        .version_with_label(AWSCURRENT)
        .map(|v| v.version_id.clone());
    let mut moves = Vec::new();
    if current.as_deref() != Some(new) {
        moves.push(LabelMove {
            label: AWSCURRENT.into(),
            remove_from_version_id: current,
            move_to_version_id: Some(new.to_owned()),
        });
    }
    let pending = secret
        .version_with_label(AWSPENDING)
        .map(|v| v.version_id.clone());
    if pending.as_deref() != Some(new) {
        moves.push(LabelMove {
            label: AWSPENDING.into(),
            remove_from_version_id: pending,
            move_to_version_id: Some(new.to_owned()),
        });
    }
    apply(secret, &moves, now)
}

/// Retirement: AWSPENDING leaves the new version and AWSPREVIOUS leaves the old one, in one
/// change. Idempotent.
pub fn retire_labels(
    secret: &mut SecretRecord,
    rotation: &Rotation,
    now: Timestamp,
) -> Result<(), CoreError> {
    let mut moves = Vec::new();
    if holds(secret, &rotation.version_id, AWSPENDING) {
        moves.push(removal(AWSPENDING, &rotation.version_id));
    }
    if let Some(old) = &rotation.old_version_id
        && holds(secret, old, AWSPREVIOUS)
    {
        moves.push(removal(AWSPREVIOUS, old));
    }
    apply(secret, &moves, now)
}

/// Cancellation before promotion: AWSPENDING leaves the new version. Idempotent.
pub fn drop_pending_label(
    secret: &mut SecretRecord,
    version_id: &str,
    now: Timestamp,
) -> Result<(), CoreError> {
    if holds(secret, version_id, AWSPENDING) {
        apply(secret, &[removal(AWSPENDING, version_id)], now)?;
    }
    Ok(())
}

fn holds(secret: &SecretRecord, version_id: &str, label: &str) -> bool {
    secret
        .version(version_id)
        .is_some_and(|v| v.labels.contains(label))
}

fn removal(label: &str, version_id: &str) -> LabelMove {
    LabelMove {
        label: label.into(),
        remove_from_version_id: Some(version_id.to_owned()),
        move_to_version_id: None,
    }
}

fn apply(secret: &mut SecretRecord, moves: &[LabelMove], now: Timestamp) -> Result<(), CoreError> {
    if moves.is_empty() {
        return Ok(());
    }
    crate::apply_label_moves(secret, moves, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::{RotationPolicy, keyring};
    use crate::secret::tests::{empty_secret, labels_of, put};

    fn rotation(new: &str, old: &str) -> Rotation {
        let (rotation, _) = Rotation::start(
            "s1".into(),
            new.into(),
            Some(old.into()),
            RotationPolicy::default(),
            0,
        );
        rotation
    }

    #[test]
    fn awspending_stays_on_the_new_version_from_promotion_until_retirement() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&[AWSPENDING]), 2);
        let r = rotation("v2", "v1");

        promote_labels(&mut s, &r, 3).unwrap();
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT, AWSPENDING]);
        assert_eq!(labels_of(&s, "v1"), [AWSPREVIOUS]);
        // Every stage a per-label cache may hold names a version in use.
        assert_eq!(keyring(&s).accepted, ["v2", "v1"]);
        let promoted = s.clone();
        promote_labels(&mut s, &r, 4).unwrap();
        assert_eq!(s.versions, promoted.versions, "promotion is idempotent");

        retire_labels(&mut s, &r, 5).unwrap();
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT]);
        assert!(labels_of(&s, "v1").is_empty());
        let retired = s.clone();
        retire_labels(&mut s, &r, 6).unwrap();
        assert_eq!(s.versions, retired.versions, "retirement is idempotent");
    }

    #[test]
    fn promotion_puts_back_an_awspending_that_a_rotation_function_moved_away() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&[AWSPENDING]), 2);
        let r = rotation("v2", "v1");
        drop_pending_label(&mut s, "v2", 3).unwrap();
        promote_labels(&mut s, &r, 4).unwrap();
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT, AWSPENDING]);
    }

    #[test]
    fn a_new_rotation_takes_awspending_for_its_own_version() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&[AWSPENDING]), 2);
        promote_labels(&mut s, &rotation("v2", "v1"), 3).unwrap();
        // The next rotation's create stores its version as AWSPENDING (as PutSecretValue does),
        // which takes the label from the version that kept it since promotion.
        put(&mut s, "v3", Some(&[AWSPENDING]), 4);
        assert_eq!(labels_of(&s, "v3"), [AWSPENDING]);
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT]);
        // The earlier rotation's retirement, if it ran late, no longer touches v3's label.
        retire_labels(&mut s, &rotation("v2", "v1"), 5).unwrap();
        assert_eq!(labels_of(&s, "v3"), [AWSPENDING]);
    }
}

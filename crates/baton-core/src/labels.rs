//! Staging labels: each is attached to at most one version of a secret, and moving AWSCURRENT
//! moves AWSPREVIOUS to the version that held it.

use crate::{AWSCURRENT, AWSPREVIOUS, CoreError, SecretRecord, Timestamp};

/// One label change, as UpdateSecretVersionStage describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMove {
    pub label: String,
    /// The version the label must currently be on, if it is on any.
    pub remove_from_version_id: Option<String>,
    /// The version that gets the label; `None` removes it.
    pub move_to_version_id: Option<String>,
}

/// Attaches `label` to `version_id`, taking it from whichever version held it. Callers have
/// already checked that the version exists and that the move is allowed.
pub(crate) fn attach_label(secret: &mut SecretRecord, label: &str, version_id: &str) {
    let previous_holder = secret
        .version_with_label(label)
        .map(|v| v.version_id.clone());
    if previous_holder.as_deref() == Some(version_id) {
        return;
    }
    for version in &mut secret.versions {
        version.labels.remove(label);
    }
    if let Some(version) = secret
        .versions
        .iter_mut()
        .find(|v| v.version_id == version_id)
    {
        version.labels.insert(label.to_owned());
    }
    if label == AWSCURRENT
        && let Some(old) = previous_holder
    {
        attach_label(secret, AWSPREVIOUS, &old);
    }
}

fn version_not_found(id: &str) -> CoreError {
    CoreError::ResourceNotFound(format!(
        "Secrets Manager can't find the specified secret value for VersionId: {id}"
    ))
}

/// Applies one label move with UpdateSecretVersionStage's checks. On error the secret is unchanged.
pub fn move_label(
    secret: &mut SecretRecord,
    change: &LabelMove,
    now: Timestamp,
) -> Result<(), CoreError> {
    apply_label_moves(secret, std::slice::from_ref(change), now)
}

/// Applies several label moves as one atomic change: either all apply, or none does.
///
/// Moves apply in order, and each is checked against the state the previous ones left, so a
/// caller can promote a new version and demote the old one with no moment in between.
pub fn apply_label_moves(
    secret: &mut SecretRecord,
    changes: &[LabelMove],
    now: Timestamp,
) -> Result<(), CoreError> {
    secret.ensure_not_deleted()?;
    if changes.is_empty() {
        return Err(CoreError::InvalidParameter(
            "At least one staging label change is required.".to_owned(),
        ));
    }
    let mut next = secret.clone();
    for change in changes {
        apply_one(&mut next, change)?;
    }
    next.check_label_limit()?;
    next.last_changed_at = now;
    next.check_invariants();
    *secret = next;
    Ok(())
}

fn apply_one(secret: &mut SecretRecord, change: &LabelMove) -> Result<(), CoreError> {
    let label = change.label.as_str();
    crate::validate_version_stage(label)?;
    let holder = secret
        .version_with_label(label)
        .map(|v| v.version_id.clone());
    if let Some(from) = &change.remove_from_version_id {
        if secret.version(from).is_none() {
            return Err(version_not_found(from));
        }
        if holder.as_deref() != Some(from.as_str()) {
            return Err(CoreError::InvalidParameter(format!(
                "The staging label {label} is not attached to version {from}, \
                 so it can't be removed from it."
            )));
        }
    }
    match &change.move_to_version_id {
        Some(to) => {
            if secret.version(to).is_none() {
                return Err(version_not_found(to));
            }
            if let Some(current_holder) = &holder
                && current_holder != to
                && change.remove_from_version_id.as_deref() != Some(current_holder.as_str())
            {
                return Err(CoreError::InvalidParameter(format!(
                    "The parameter RemoveFromVersionId can't be empty. Staging label {label} is \
                     currently attached to version {current_holder}, so you must explicitly \
                     reference that version in RemoveFromVersionId."
                )));
            }
            attach_label(secret, label, to);
        }
        None => {
            let Some(from) = &change.remove_from_version_id else {
                return Err(CoreError::InvalidParameter(
                    "You must specify MoveToVersionId, RemoveFromVersionId, or both.".to_owned(),
                ));
            };
            if label == AWSCURRENT {
                return Err(CoreError::InvalidParameter(
                    "You can't remove the staging label AWSCURRENT without moving it to another \
                     version: a secret with versions always has exactly one AWSCURRENT."
                        .to_owned(),
                ));
            }
            if let Some(version) = secret.versions.iter_mut().find(|v| &v.version_id == from) {
                version.labels.remove(label);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::tests::{empty_secret, labels_of, put};

    fn mv(label: &str, from: Option<&str>, to: Option<&str>) -> LabelMove {
        LabelMove {
            label: label.into(),
            remove_from_version_id: from.map(Into::into),
            move_to_version_id: to.map(Into::into),
        }
    }

    #[test]
    fn moving_current_requires_naming_its_holder_and_moves_previous() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&["AWSPENDING"]), 2);
        let err = move_label(&mut s, &mv(AWSCURRENT, None, Some("v2")), 3).unwrap_err();
        assert!(matches!(err, CoreError::InvalidParameter(m) if m.contains("v1")));
        move_label(&mut s, &mv(AWSCURRENT, Some("v1"), Some("v2")), 3).unwrap();
        assert_eq!(labels_of(&s, "v2"), ["AWSCURRENT", "AWSPENDING"]);
        assert_eq!(labels_of(&s, "v1"), [AWSPREVIOUS]);
    }

    #[test]
    fn current_cannot_be_removed_without_a_new_holder() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        let before = s.clone();
        assert!(move_label(&mut s, &mv(AWSCURRENT, Some("v1"), None), 2).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn custom_labels_can_be_added_and_removed() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        move_label(&mut s, &mv("blue", None, Some("v1")), 2).unwrap();
        assert_eq!(labels_of(&s, "v1"), ["AWSCURRENT", "blue"]);
        move_label(&mut s, &mv("blue", Some("v1"), None), 3).unwrap();
        assert_eq!(labels_of(&s, "v1"), ["AWSCURRENT"]);
        assert!(matches!(
            move_label(&mut s, &mv("blue", Some("v1"), None), 4),
            Err(CoreError::InvalidParameter(_))
        ));
    }

    #[test]
    fn unknown_versions_are_not_found() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        assert!(matches!(
            move_label(&mut s, &mv("x", None, Some("nope")), 2),
            Err(CoreError::ResourceNotFound(_))
        ));
    }

    #[test]
    fn several_moves_apply_atomically_or_not_at_all() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&["AWSPENDING"]), 2);
        let before = s.clone();
        // The second move is invalid, so the first must not stick either.
        let bad = [
            mv(AWSCURRENT, Some("v1"), Some("v2")),
            mv("AWSPENDING", Some("v1"), None),
        ];
        assert!(apply_label_moves(&mut s, &bad, 3).is_err());
        assert_eq!(s, before);
        let good = [
            mv(AWSCURRENT, Some("v1"), Some("v2")),
            mv("AWSPENDING", Some("v2"), None),
        ];
        apply_label_moves(&mut s, &good, 3).unwrap();
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT]);
        assert_eq!(labels_of(&s, "v1"), [AWSPREVIOUS]);
    }

    /// Property: whatever sequence of moves is applied, each label sits on at most one version
    /// and a secret with versions keeps exactly one AWSCURRENT.
    #[test]
    fn random_move_sequences_keep_labels_unique_and_one_current() {
        let labels = [AWSCURRENT, AWSPREVIOUS, "AWSPENDING", "blue"];
        let versions = ["v1", "v2", "v3"];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _round in 0..200 {
            let mut s = empty_secret();
            for v in versions {
                put(&mut s, v, None, 1);
            }
            for step in 0..20 {
                let pick = |n: &mut dyn FnMut(usize) -> usize| -> Option<String> {
                    let i = n(versions.len() + 1);
                    versions.get(i).map(|v| v.to_string())
                };
                let change = LabelMove {
                    label: labels[next(labels.len())].to_owned(),
                    remove_from_version_id: pick(&mut next),
                    move_to_version_id: pick(&mut next),
                };
                let _ = move_label(&mut s, &change, step);
                let mut seen = std::collections::BTreeSet::new();
                for version in &s.versions {
                    for label in &version.labels {
                        assert!(seen.insert(label.clone()), "{label} twice after {change:?}");
                    }
                }
                assert!(s.version_with_label(AWSCURRENT).is_some());
            }
        }
    }
}

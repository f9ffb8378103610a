//! A secret, its versions, and the rules for adding versions, deleting and restoring.

use std::collections::BTreeSet;
use std::fmt;

use crate::labels::attach_label;
use crate::{AWSCURRENT, CoreError};

/// Milliseconds since the Unix epoch, UTC. Time is always an input to this crate.
pub type Timestamp = i64;

const DAY_MS: Timestamp = 24 * 60 * 60 * 1000;

/// A secret value may be at most this many bytes, as in AWS.
pub const VALUE_BYTES_MAX: usize = 65_536;
/// A secret may carry at most this many staging labels across all of its versions.
pub const LABELS_PER_SECRET_MAX: usize = 20;
/// Versions without labels beyond this count are pruned once they are older than a day.
pub const DEPRECATED_VERSIONS_MAX: usize = 100;

/// A key/value tag on a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// Whether a version holds a string or binary value, or none yet. The value itself is sealed
/// elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretValueKind {
    String,
    Binary,
    /// A version a rotation created before its rotator stored the value, as AWS does: it
    /// carries AWSPENDING, reads as not found, and the rotator's PutSecretValue with the same
    /// token fills it.
    Empty,
}

impl SecretValueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretValueKind::String => "string",
            SecretValueKind::Binary => "binary",
            SecretValueKind::Empty => "empty",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "string" => Some(SecretValueKind::String),
            "binary" => Some(SecretValueKind::Binary),
            "empty" => Some(SecretValueKind::Empty),
            _ => None,
        }
    }
}

/// One version of a secret. The value is sealed by `baton-crypto` before it reaches the domain,
/// so this type never holds plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub version_id: String,
    pub created_at: Timestamp,
    /// Staging labels, kept sorted. A version with none is deprecated.
    pub labels: BTreeSet<String>,
    pub kind: SecretValueKind,
    pub sealed_value: Vec<u8>,
}

impl fmt::Debug for VersionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionRecord")
            .field("version_id", &self.version_id)
            .field("created_at", &self.created_at)
            .field("labels", &self.labels)
            .field("kind", &self.kind)
            .field("sealed_value_len", &self.sealed_value.len())
            .finish()
    }
}

/// A version about to be added.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub version_id: String,
    pub kind: SecretValueKind,
    pub sealed_value: Vec<u8>,
    /// Labels to attach; `None` means the AWS default, `[AWSCURRENT]`.
    pub labels: Option<Vec<String>>,
}

/// The rotation settings that RotateSecret stores. The engine that acts on them is separate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationConfig {
    pub enabled: bool,
    pub lambda_arn: Option<String>,
    pub rules: Option<RotationRules>,
    pub last_rotated_at: Option<Timestamp>,
    /// When the schedule next starts a rotation; set while rotation is enabled with rules.
    pub next_rotation_at: Option<Timestamp>,
    /// The ARN of the principal that last configured rotation (RotateSecret). A built-in
    /// database rotator reads the master secret only as far as this principal may.
    pub configured_by: Option<String>,
    /// The alternating-users clone that Baton created for this secret. The master changes
    /// the password of this role and of the user it was cloned from, and of no other.
    pub database_clone: Option<String>,
}

/// AWS's RotationRulesType.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationRules {
    pub automatically_after_days: Option<i64>,
    pub duration: Option<String>,
    pub schedule_expression: Option<String>,
}

/// A region this secret is replicated to. A replica is a read-only view of its primary in
/// another region's namespace, so it follows every write to the primary by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub region: String,
    pub kms_key_id: Option<String>,
    pub last_accessed_at: Option<Timestamp>,
}

/// Whether a secret is live or waiting out its recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    Active,
    Scheduled {
        deleted_at: Timestamp,
        purge_at: Timestamp,
    },
}

/// A change to announce: written to the event log in the same transaction as the change, so
/// an event is never lost and never recorded for a change that did not commit. `detail` is a
/// JSON object that never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: String,
    pub at: Timestamp,
    /// The operation (`PutSecretValue`) or the service event (`RotationSucceeded`).
    pub name: String,
    pub detail: String,
}

/// What makes a secret the keyring of a KMS key. The spec and usage are AWS's names
/// (`RSA_2048`, `SIGN_VERIFY`), checked by the API against `baton_crypto::kms` when the key is
/// created; the key's description, tags, policy, rotation and deletion are the secret's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    pub key_id: String,
    pub spec: String,
    pub usage: String,
    pub enabled: bool,
    /// An AWS managed key (`alias/aws/<service>`): made by Baton on first use, used only by
    /// the service it belongs to, and changed by nobody.
    pub aws_managed: bool,
}

const AWS_MANAGED: &str = "aws-managed";

impl KeyMeta {
    /// The stored form: `<key id> <spec> <usage> enabled|disabled[ aws-managed]`.
    pub fn to_text(&self) -> String {
        let state = if self.enabled { "enabled" } else { "disabled" };
        let mut text = format!("{} {} {} {state}", self.key_id, self.spec, self.usage);
        if self.aws_managed {
            text.push(' ');
            text.push_str(AWS_MANAGED);
        }
        text
    }

    pub fn parse_text(text: &str) -> Option<KeyMeta> {
        let mut parts = text.split(' ');
        let (key_id, spec, usage, state) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let aws_managed = match parts.next() {
            None => false,
            Some(AWS_MANAGED) => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        let enabled = match state {
            "enabled" => true,
            "disabled" => false,
            _ => return None,
        };
        Some(KeyMeta {
            key_id: key_id.to_owned(),
            spec: spec.to_owned(),
            usage: usage.to_owned(),
            enabled,
            aws_managed,
        })
    }
}

/// A secret with all of its versions: the unit that the store loads and saves atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Internal, immutable identity; bound into the authenticated data of every sealed value.
    pub id: String,
    pub account_id: String,
    pub region: String,
    pub name: String,
    pub arn: String,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub tags: Vec<Tag>,
    /// Whether the secret has ever had a tag. As in AWS, DescribeSecret answers `Tags: []`
    /// once every tag has been removed, and leaves `Tags` out for a secret never tagged.
    pub tagged: bool,
    pub resource_policy: Option<String>,
    pub rotation: RotationConfig,
    pub created_at: Timestamp,
    pub last_changed_at: Timestamp,
    pub last_accessed_at: Option<Timestamp>,
    pub deletion: DeletionState,
    /// The secret's data key, wrapped by the root key.
    pub wrapped_data_key: Vec<u8>,
    pub versions: Vec<VersionRecord>,
    /// Regions this secret is replicated to, in the order they were added.
    pub replicas: Vec<Replica>,
    /// Baton's rotation settings (`baton.PutRotationPolicy`); `None` means the defaults.
    pub rotation_policy: Option<crate::rotation::RotationPolicy>,
    /// The rotation in flight, or the last one.
    pub rotation_state: Option<crate::rotation::RotationState>,
    /// Incremented by every save; the store refuses a save whose expected revision is stale.
    pub revision: i64,
    /// Set when this secret is the keyring of a KMS key: its versions hold key material, and
    /// the Secrets Manager API neither lists nor reads it.
    pub key: Option<KeyMeta>,
    /// Events to record in the same transaction as this record's next write (the outbox).
    /// Never read back: a loaded record's outbox is empty.
    pub outbox: Vec<NewEvent>,
}

impl SecretRecord {
    pub fn version(&self, version_id: &str) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version_id == version_id)
    }

    pub fn version_with_label(&self, label: &str) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.labels.contains(label))
    }

    pub fn is_scheduled_for_deletion(&self) -> bool {
        matches!(self.deletion, DeletionState::Scheduled { .. })
    }

    /// The ARN of this secret's replica in `region`: the same name and suffix, another region.
    pub fn replica_arn(&self, region: &str) -> String {
        let mut parts: Vec<&str> = self.arn.splitn(5, ':').collect();
        if parts.len() == 5 {
            parts[3] = region;
        }
        parts.join(":")
    }

    pub fn replica(&self, region: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.region == region)
    }

    /// Adds replica regions; a region that already is one keeps its replica (and takes the
    /// new KMS key id). Returns the regions that were newly added.
    pub fn add_replicas(
        &mut self,
        regions: &[(String, Option<String>)],
        now: Timestamp,
    ) -> Result<Vec<String>, CoreError> {
        self.ensure_not_deleted()?;
        let mut seen = BTreeSet::new();
        for (region, _) in regions {
            if region == &self.region {
                return Err(CoreError::InvalidParameter(format!(
                    "{region} is the secret's primary region; it can't also be a replica region."
                )));
            }
            if !seen.insert(region.as_str()) {
                return Err(CoreError::InvalidParameter(format!(
                    "The region {region} appears more than once in AddReplicaRegions."
                )));
            }
        }
        let mut added = Vec::new();
        for (region, kms_key_id) in regions {
            match self.replicas.iter_mut().find(|r| &r.region == region) {
                Some(existing) => existing.kms_key_id = kms_key_id.clone(),
                None => {
                    self.replicas.push(Replica {
                        region: region.clone(),
                        kms_key_id: kms_key_id.clone(),
                        last_accessed_at: None,
                    });
                    added.push(region.clone());
                }
            }
        }
        self.last_changed_at = now;
        Ok(added)
    }

    /// Removes replica regions; each must be one.
    pub fn remove_replicas(&mut self, regions: &[String], now: Timestamp) -> Result<(), CoreError> {
        for region in regions {
            if self.replica(region).is_none() {
                return Err(CoreError::InvalidParameter(format!(
                    "{region} is not a replica region of this secret."
                )));
            }
        }
        self.replicas.retain(|r| !regions.contains(&r.region));
        self.last_changed_at = now;
        Ok(())
    }

    /// Refuses an operation on a secret that waits out its recovery window.
    /// A fingerprint of what readers can see: every labelled version with a value, its labels,
    /// and whether the secret is deleted. It changes when a reader's view changes and not on
    /// bookkeeping writes (a rotation's timeline, an access date), so watchers wake only for
    /// changes that matter. FNV-1a, stable across processes and versions of Baton.
    pub fn view_revision(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            // A separator no identifier contains, so ("ab","c") and ("a","bc") differ.
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        };
        feed(if self.is_scheduled_for_deletion() {
            b"deleted"
        } else {
            b"live"
        });
        let mut visible: Vec<&VersionRecord> = self
            .versions
            .iter()
            .filter(|v| !v.labels.is_empty() && v.kind != SecretValueKind::Empty)
            .collect();
        visible.sort_by(|a, b| a.version_id.cmp(&b.version_id));
        for version in visible {
            feed(version.version_id.as_bytes());
            for label in &version.labels {
                feed(label.as_bytes());
            }
        }
        format!("{hash:016x}")
    }

    pub fn ensure_not_deleted(&self) -> Result<(), CoreError> {
        if self.is_scheduled_for_deletion() {
            return Err(CoreError::InvalidRequest(
                "You can't perform this operation on the secret because it was marked for deletion."
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Stores the value of an empty version (see [`SecretValueKind::Empty`]) and attaches
    /// `labels` to it, as PutSecretValue does for a rotation's version.
    pub fn fill_version(&mut self, new: NewVersion, now: Timestamp) -> Result<(), CoreError> {
        self.ensure_not_deleted()?;
        let Some(index) = self
            .versions
            .iter()
            .position(|v| v.version_id == new.version_id && v.kind == SecretValueKind::Empty)
        else {
            return Err(CoreError::ResourceExists(
                "You can't modify an existing version, you can only create a new version."
                    .to_owned(),
            ));
        };
        if new.kind == SecretValueKind::Empty {
            return Err(CoreError::InvalidParameter(
                "A version's value can't be filled with nothing.".to_owned(),
            ));
        }
        let mut next = self.clone();
        next.versions[index].kind = new.kind;
        next.versions[index].sealed_value = new.sealed_value;
        // As with a new version, no stages means AWSCURRENT.
        for label in new.labels.unwrap_or_else(|| vec![AWSCURRENT.to_owned()]) {
            crate::validate_version_stage(&label)?;
            attach_label(&mut next, &label, &new.version_id);
        }
        next.check_label_limit()?;
        next.last_changed_at = now;
        next.check_invariants();
        *self = next;
        Ok(())
    }

    /// Adds a version and attaches its labels, as CreateSecret and PutSecretValue do.
    ///
    /// Moving AWSCURRENT moves AWSPREVIOUS to the version that held it. The first version of a
    /// secret always gets AWSCURRENT. Afterwards, deprecated versions are pruned.
    pub fn add_version(&mut self, new: NewVersion, now: Timestamp) -> Result<(), CoreError> {
        self.ensure_not_deleted()?;
        if self.version(&new.version_id).is_some() {
            return Err(CoreError::ResourceExists(
                "You can't modify an existing version, you can only create a new version."
                    .to_owned(),
            ));
        }
        let mut labels: Vec<String> = new.labels.unwrap_or_else(|| vec![AWSCURRENT.to_owned()]);
        for label in &labels {
            crate::validate_version_stage(label)?;
        }
        if self.version_with_label(AWSCURRENT).is_none() && !labels.iter().any(|l| l == AWSCURRENT)
        {
            labels.push(AWSCURRENT.to_owned());
        }
        let mut next = self.clone();
        next.versions.push(VersionRecord {
            version_id: new.version_id.clone(),
            created_at: now,
            labels: BTreeSet::new(),
            kind: new.kind,
            sealed_value: new.sealed_value,
        });
        for label in &labels {
            attach_label(&mut next, label, &new.version_id);
        }
        next.check_label_limit()?;
        next.prune_deprecated(now);
        next.last_changed_at = now;
        next.check_invariants();
        *self = next;
        Ok(())
    }

    pub(crate) fn check_label_limit(&self) -> Result<(), CoreError> {
        let count: usize = self.versions.iter().map(|v| v.labels.len()).sum();
        if count > LABELS_PER_SECRET_MAX {
            return Err(CoreError::LimitExceeded(format!(
                "A secret can have at most {LABELS_PER_SECRET_MAX} staging labels attached \
                 across its versions; this request would attach {count}."
            )));
        }
        Ok(())
    }

    /// Removes the oldest versions without labels while there are more than
    /// `DEPRECATED_VERSIONS_MAX` of them, but never one younger than a day.
    /// A KMS key's versions are never pruned: old ciphertext must keep decrypting.
    pub fn prune_deprecated(&mut self, now: Timestamp) {
        if self.key.is_some() {
            return;
        }
        let mut deprecated: Vec<(Timestamp, String)> = self
            .versions
            .iter()
            .filter(|v| v.labels.is_empty())
            .map(|v| (v.created_at, v.version_id.clone()))
            .collect();
        if deprecated.len() <= DEPRECATED_VERSIONS_MAX {
            return;
        }
        deprecated.sort();
        let excess = deprecated.len() - DEPRECATED_VERSIONS_MAX;
        let doomed: BTreeSet<String> = deprecated
            .into_iter()
            .take(excess)
            .filter(|(created_at, _)| now - created_at > DAY_MS)
            .map(|(_, id)| id)
            .collect();
        self.versions.retain(|v| !doomed.contains(&v.version_id));
    }

    /// Starts the recovery window, or marks the secret for immediate purge with `window_days = 0`.
    pub fn schedule_deletion(&mut self, window_days: i64, now: Timestamp) -> Result<(), CoreError> {
        self.ensure_not_deleted()?;
        self.deletion = DeletionState::Scheduled {
            deleted_at: now,
            purge_at: now + window_days * DAY_MS,
        };
        self.last_changed_at = now;
        Ok(())
    }

    /// Cancels a scheduled deletion.
    pub fn restore(&mut self, now: Timestamp) -> Result<(), CoreError> {
        if !self.is_scheduled_for_deletion() {
            // AWS treats restoring a live secret as a successful no-op.
            return Ok(());
        }
        self.deletion = DeletionState::Active;
        self.last_changed_at = now;
        Ok(())
    }

    /// Adds or overwrites tags by key.
    pub fn tag(&mut self, tags: Vec<Tag>, now: Timestamp) -> Result<(), CoreError> {
        for tag in tags {
            match self.tags.iter_mut().find(|t| t.key == tag.key) {
                Some(existing) => existing.value = tag.value,
                None => self.tags.push(tag),
            }
        }
        if self.tags.len() > TAGS_PER_SECRET_MAX {
            return Err(CoreError::LimitExceeded(format!(
                "A secret can have at most {TAGS_PER_SECRET_MAX} tags."
            )));
        }
        self.tagged |= !self.tags.is_empty();
        self.last_changed_at = now;
        Ok(())
    }

    pub fn untag(&mut self, keys: &[String], now: Timestamp) {
        self.tags.retain(|t| !keys.contains(&t.key));
        self.last_changed_at = now;
    }

    /// Asserts the invariants that every saved secret must satisfy. A breach is a programmer
    /// error, so it panics in debug builds; the database constraints catch it in release builds.
    pub fn check_invariants(&self) {
        let mut seen = BTreeSet::new();
        for version in &self.versions {
            for label in &version.labels {
                debug_assert!(
                    seen.insert(label.as_str()),
                    "label {label} attached to two versions of secret {}",
                    self.id
                );
            }
        }
        debug_assert!(
            self.versions.is_empty() || self.version_with_label(AWSCURRENT).is_some(),
            "secret {} has versions but none is AWSCURRENT",
            self.id
        );
    }
}

/// A secret may carry at most this many tags, as in AWS.
pub const TAGS_PER_SECRET_MAX: usize = 50;

/// Picks the version that GetSecretValue returns: by id, by label, or AWSCURRENT by default.
/// When both are given, the version must carry the label.
pub fn resolve_version<'a>(
    secret: &'a SecretRecord,
    version_id: Option<&str>,
    version_stage: Option<&str>,
) -> Result<&'a VersionRecord, CoreError> {
    match (version_id, version_stage) {
        (Some(id), stage) => {
            let version = secret.version(id).ok_or_else(|| {
                CoreError::ResourceNotFound(format!(
                    "Secrets Manager can't find the specified secret value for VersionId: {id}"
                ))
            })?;
            if let Some(stage) = stage
                && !version.labels.contains(stage)
            {
                return Err(CoreError::InvalidRequest(format!(
                    "You provided a VersionStage that is not associated to the provided VersionId. \
                     VersionId {id} does not have staging label {stage}."
                )));
            }
            Ok(version)
        }
        (None, stage) => {
            let stage = stage.unwrap_or(AWSCURRENT);
            secret.version_with_label(stage).ok_or_else(|| {
                CoreError::ResourceNotFound(format!(
                    "Secrets Manager can't find the specified secret value for staging label: {stage}"
                ))
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::AWSPREVIOUS;

    pub(crate) fn empty_secret() -> SecretRecord {
        SecretRecord {
            id: "s1".into(),
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            name: "app/key".into(),
            arn: "arn:aws:secretsmanager:us-east-1:000000000000:secret:app/key-AbCdEf".into(),
            description: None,
            kms_key_id: None,
            tags: vec![],
            tagged: false,
            resource_policy: None,
            rotation: RotationConfig::default(),
            created_at: 0,
            last_changed_at: 0,
            last_accessed_at: None,
            deletion: DeletionState::Active,
            wrapped_data_key: vec![],
            versions: vec![],
            replicas: vec![],
            rotation_policy: None,
            rotation_state: None,
            revision: 0,
            key: None,
            outbox: vec![],
        }
    }

    pub(crate) fn put(
        secret: &mut SecretRecord,
        id: &str,
        labels: Option<&[&str]>,
        now: Timestamp,
    ) {
        secret
            .add_version(
                NewVersion {
                    version_id: id.into(),
                    kind: SecretValueKind::String,
                    sealed_value: id.as_bytes().to_vec(),
                    labels: labels.map(|l| l.iter().map(|s| s.to_string()).collect()),
                },
                now,
            )
            .expect("add_version");
    }

    #[test]
    fn the_view_revision_changes_with_what_readers_see_only() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 0);
        let first = s.view_revision();
        assert_eq!(first.len(), 16);
        // Bookkeeping does not change it.
        s.last_accessed_at = Some(5);
        s.description = Some("changed".into());
        s.revision += 3;
        assert_eq!(s.view_revision(), first);
        // A new current version does, and so does a label move back.
        put(&mut s, "v2", None, 1);
        let second = s.view_revision();
        assert_ne!(second, first);
        put(&mut s, "v3", Some(&["AWSPENDING"]), 2);
        assert_ne!(s.view_revision(), second);
        // An empty placeholder is invisible until filled.
        let before = s.view_revision();
        s.add_version(
            NewVersion {
                version_id: "v4".into(),
                kind: SecretValueKind::Empty,
                sealed_value: vec![],
                labels: Some(vec!["LABEL".into()]),
            },
            3,
        )
        .unwrap();
        assert_eq!(s.view_revision(), before);
        s.deletion = DeletionState::Scheduled {
            deleted_at: 4,
            purge_at: 5,
        };
        assert_ne!(s.view_revision(), before);
    }

    pub(crate) fn labels_of(secret: &SecretRecord, id: &str) -> Vec<String> {
        secret
            .version(id)
            .map(|v| v.labels.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn putting_a_value_moves_current_to_the_new_version_and_previous_to_the_old() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", None, 2);
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT]);
        assert_eq!(labels_of(&s, "v1"), [AWSPREVIOUS]);
        put(&mut s, "v3", None, 3);
        assert_eq!(labels_of(&s, "v3"), [AWSCURRENT]);
        assert_eq!(labels_of(&s, "v2"), [AWSPREVIOUS]);
        assert!(labels_of(&s, "v1").is_empty(), "v1 is deprecated");
    }

    #[test]
    fn the_first_version_always_becomes_current() {
        let mut s = empty_secret();
        put(&mut s, "v1", Some(&["AWSPENDING"]), 1);
        assert_eq!(labels_of(&s, "v1"), ["AWSCURRENT", "AWSPENDING"]);
    }

    #[test]
    fn a_pending_version_leaves_current_in_place() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", Some(&["AWSPENDING"]), 2);
        assert_eq!(labels_of(&s, "v1"), [AWSCURRENT]);
        assert_eq!(labels_of(&s, "v2"), ["AWSPENDING"]);
    }

    #[test]
    fn an_existing_version_id_cannot_be_reused() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        let err = s
            .add_version(
                NewVersion {
                    version_id: "v1".into(),
                    kind: SecretValueKind::String,
                    sealed_value: vec![1],
                    labels: None,
                },
                2,
            )
            .unwrap_err();
        assert!(matches!(err, CoreError::ResourceExists(_)));
        assert_eq!(s.versions.len(), 1);
    }

    #[test]
    fn label_limit_is_enforced_without_changing_the_secret() {
        let mut s = empty_secret();
        let labels: Vec<String> = (0..19).map(|i| format!("L{i}")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        put(&mut s, "v1", Some(&refs), 1);
        assert_eq!(s.versions[0].labels.len(), 20);
        let before = s.clone();
        let err = s
            .add_version(
                NewVersion {
                    version_id: "v2".into(),
                    kind: SecretValueKind::String,
                    sealed_value: vec![],
                    labels: Some(vec!["AWSCURRENT".into(), "extra".into()]),
                },
                2,
            )
            .unwrap_err();
        assert!(matches!(err, CoreError::LimitExceeded(_)));
        assert_eq!(s, before);
    }

    #[test]
    fn deprecated_versions_are_pruned_past_100_once_older_than_a_day() {
        let mut s = empty_secret();
        for i in 0..105 {
            put(&mut s, &format!("v{i:03}"), None, i);
        }
        // 103 deprecated versions, all younger than a day: nothing pruned.
        assert_eq!(s.versions.len(), 105);
        put(&mut s, "late", None, 2 * DAY_MS);
        // 104 deprecated now; the 4 oldest go.
        assert_eq!(s.versions.len(), 102);
        assert!(s.version("v000").is_none());
        assert!(s.version("v003").is_none());
        assert!(s.version("v004").is_some());
    }

    #[test]
    fn resolving_versions_by_id_and_stage() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        put(&mut s, "v2", None, 2);
        assert_eq!(resolve_version(&s, None, None).unwrap().version_id, "v2");
        assert_eq!(
            resolve_version(&s, None, Some(AWSPREVIOUS))
                .unwrap()
                .version_id,
            "v1"
        );
        assert_eq!(
            resolve_version(&s, Some("v1"), None).unwrap().version_id,
            "v1"
        );
        assert!(matches!(
            resolve_version(&s, Some("v1"), Some(AWSCURRENT)),
            Err(CoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            resolve_version(&s, None, Some("AWSPENDING")),
            Err(CoreError::ResourceNotFound(_))
        ));
    }

    #[test]
    fn replicas_are_added_once_never_in_the_primary_region_and_removed_by_name() {
        let mut s = empty_secret();
        let add = |r: &[&str]| -> Vec<(String, Option<String>)> {
            r.iter().map(|r| (r.to_string(), None)).collect()
        };
        assert_eq!(
            s.add_replicas(&add(&["eu-west-1"]), 1).unwrap(),
            ["eu-west-1"]
        );
        assert!(s.add_replicas(&add(&["eu-west-1"]), 2).unwrap().is_empty());
        assert!(s.add_replicas(&add(&["us-east-1"]), 3).is_err());
        assert!(
            s.add_replicas(&add(&["ap-south-1", "ap-south-1"]), 3)
                .is_err()
        );
        assert_eq!(
            s.replica_arn("eu-west-1"),
            "arn:aws:secretsmanager:eu-west-1:000000000000:secret:app/key-AbCdEf"
        );
        assert!(s.remove_replicas(&["ap-south-1".into()], 4).is_err());
        s.remove_replicas(&["eu-west-1".into()], 4).unwrap();
        assert!(s.replicas.is_empty());
    }

    #[test]
    fn an_empty_version_is_filled_once_and_takes_its_stages() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        s.add_version(
            NewVersion {
                version_id: "v2".into(),
                kind: SecretValueKind::Empty,
                sealed_value: vec![],
                labels: Some(vec!["AWSPENDING".into()]),
            },
            2,
        )
        .unwrap();
        let fill = |labels: Option<Vec<String>>| NewVersion {
            version_id: "v2".into(),
            kind: SecretValueKind::String,
            sealed_value: b"x".to_vec(),
            labels,
        };
        let mut pending = s.clone();
        pending
            .fill_version(fill(Some(vec!["AWSPENDING".into()])), 3)
            .unwrap();
        assert_eq!(labels_of(&pending, "v2"), ["AWSPENDING"]);
        assert_eq!(labels_of(&pending, "v1"), [AWSCURRENT]);
        assert!(
            matches!(
                pending.fill_version(fill(None), 4),
                Err(CoreError::ResourceExists(_))
            ),
            "filled only once"
        );
        // Without stages, as PutSecretValue defaults, the version becomes current.
        s.fill_version(fill(None), 3).unwrap();
        assert_eq!(labels_of(&s, "v2"), ["AWSCURRENT", "AWSPENDING"]);
        assert_eq!(labels_of(&s, "v1"), [AWSPREVIOUS]);
    }

    #[test]
    fn deleted_secrets_refuse_new_versions_until_restored() {
        let mut s = empty_secret();
        put(&mut s, "v1", None, 1);
        s.schedule_deletion(7, 10).unwrap();
        assert_eq!(
            s.deletion,
            DeletionState::Scheduled {
                deleted_at: 10,
                purge_at: 10 + 7 * DAY_MS
            }
        );
        assert!(matches!(
            s.add_version(
                NewVersion {
                    version_id: "v2".into(),
                    kind: SecretValueKind::String,
                    sealed_value: vec![],
                    labels: None
                },
                11
            ),
            Err(CoreError::InvalidRequest(_))
        ));
        s.restore(12).unwrap();
        put(&mut s, "v2", None, 13);
        assert_eq!(labels_of(&s, "v2"), [AWSCURRENT]);
    }
}

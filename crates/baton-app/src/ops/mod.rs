//! The Secrets Manager operations and Baton's own, each a function from a request type of
//! `baton-proto` to its response type. Rules live in `baton-core`; this module converts
//! between the wire and the domain, seals and opens values, and retries on write conflicts.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_core::{
    CoreError, DeletionState, LabelMove, NewVersion, RotationConfig, RotationRules, SecretRecord,
    SecretValueKind, Tag, VALUE_BYTES_MAX, resolve_version,
};
use baton_crypto::{DataKey, PasswordOptions, SecretBytes};
use baton_proto as p;
use baton_store::StoreError;

use crate::ApiError;
use crate::authz::Target;
use crate::state::{ALPHABET_ARN_SUFFIX, Baton, Caller, now_ms, random_chars, value_aad};
pub(crate) use crate::wire::{length_error, required, seconds};

mod policies;
mod replication;
mod rotation;
mod rotators;
mod secrets;
mod values;

pub(crate) use replication::*;
pub(crate) use rotation::*;
pub(crate) use rotators::*;
pub(crate) use secrets::*;

/// A write retries this many times when another writer changed the secret in between.
const UPDATE_ATTEMPTS_MAX: usize = 8;
const DAY_MS: i64 = 86_400_000;
const DESCRIPTION_CHARS_MAX: usize = 2048;
const TAG_KEY_CHARS_MAX: usize = 128;
const TAG_VALUE_CHARS_MAX: usize = 256;
const LIST_RESULTS_MAX: i64 = 100;
const BATCH_IDS_MAX: usize = 20;
const RECOVERY_WINDOW_DAYS_DEFAULT: i64 = 30;

/// Whether a write changed the secret, so the caller knows whether to save it.
pub(crate) enum Outcome<T> {
    Changed(T),
    Unchanged(T),
}

fn check_description(description: &Option<String>) -> Result<(), ApiError> {
    if let Some(d) = description
        && d.chars().count() > DESCRIPTION_CHARS_MAX
    {
        return Err(length_error(
            "description",
            "less than or equal to",
            DESCRIPTION_CHARS_MAX,
        ));
    }
    Ok(())
}

/// AWS's tag characters: letters, spaces, numbers, and `_ . : / = + - @`. No control
/// characters, so a tag cannot add lines to a log, a rendered file or an HTTP header.
fn tag_char_allowed(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

fn convert_tags(tags: &[p::Tag]) -> Result<Vec<Tag>, ApiError> {
    tags.iter()
        .map(|t| {
            let key = t
                .key
                .clone()
                .ok_or_else(|| ApiError::missing("tags.member.key"))?;
            let value = t.value.clone().unwrap_or_default();
            if key.is_empty() || key.chars().count() > TAG_KEY_CHARS_MAX {
                return Err(ApiError::Validation(format!(
                    "1 validation error detected: Value at 'tags.member.key' failed to satisfy \
                     constraint: Member must have length between 1 and {TAG_KEY_CHARS_MAX}"
                )));
            }
            if value.chars().count() > TAG_VALUE_CHARS_MAX {
                return Err(length_error(
                    "tags.member.value",
                    "less than or equal to",
                    TAG_VALUE_CHARS_MAX,
                ));
            }
            for (text, member) in [(&key, "tags.member.key"), (&value, "tags.member.value")] {
                if !text.chars().all(tag_char_allowed) {
                    return Err(ApiError::Validation(format!(
                        "1 validation error detected: Value at '{member}' failed to satisfy \
                         constraint: Member must satisfy regular expression pattern: \
                         ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$"
                    )));
                }
            }
            if key.starts_with("aws:") {
                return Err(ApiError::InvalidParameter(
                    "Tag keys that start with aws: are reserved for AWS use.".to_owned(),
                ));
            }
            Ok(Tag { key, value })
        })
        .collect()
}

/// A secret's `Tags`: absent for a secret never tagged, `[]` once every tag was removed.
fn wire_tags(secret: &SecretRecord) -> Option<Vec<p::Tag>> {
    (secret.tagged || !secret.tags.is_empty()).then(|| {
        secret
            .tags
            .iter()
            .map(|t| p::Tag {
                key: Some(t.key.clone()),
                value: Some(t.value.clone()),
            })
            .collect()
    })
}

fn stages_map(secret: &SecretRecord) -> BTreeMap<String, Vec<String>> {
    secret
        .versions
        .iter()
        .filter(|v| !v.labels.is_empty())
        .map(|v| (v.version_id.clone(), v.labels.iter().cloned().collect()))
        .collect()
}

fn wire_rules(rules: &Option<RotationRules>) -> Option<p::RotationRules> {
    rules.as_ref().map(|r| p::RotationRules {
        automatically_after_days: r.automatically_after_days,
        duration: r.duration.clone(),
        schedule_expression: r.schedule_expression.clone(),
    })
}

fn deleted_date(secret: &SecretRecord) -> Option<f64> {
    match secret.deletion {
        DeletionState::Active => None,
        DeletionState::Scheduled { deleted_at, .. } => Some(seconds(deleted_at)),
    }
}

/// Reads SecretString or SecretBinary from a request: exactly one, within the size limit.
fn value_input(
    string: &Option<String>,
    binary: &Option<String>,
) -> Result<Option<(SecretValueKind, SecretBytes)>, ApiError> {
    let (kind, bytes, member) = match (string, binary) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidParameter(
                "You can't specify both a binary secret value and a string secret value in the \
                 same secret."
                    .to_owned(),
            ));
        }
        (None, None) => return Ok(None),
        (Some(s), None) => (
            SecretValueKind::String,
            SecretBytes::from(s.clone()),
            "secretString",
        ),
        (None, Some(b)) => {
            let decoded = BASE64.decode(b).map_err(|_| {
                ApiError::Serialization("SecretBinary is not valid base64.".to_owned())
            })?;
            (
                SecretValueKind::Binary,
                SecretBytes::new(decoded),
                "secretBinary",
            )
        }
    };
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(length_error(
            member,
            "less than or equal to",
            VALUE_BYTES_MAX,
        ));
    }
    Ok(Some((kind, bytes)))
}

fn token_or_new(token: &Option<String>) -> Result<String, ApiError> {
    match token {
        Some(t) => {
            baton_core::validate_client_request_token(t)?;
            Ok(t.clone())
        }
        None => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

/// A secret as the caller's region sees it: the secret itself, or its replica there.
#[derive(Debug)]
pub struct Located {
    pub secret: SecretRecord,
    /// The region of the replica the caller reached, or `None` for the primary.
    pub replica_region: Option<String>,
}

/// What reading a value needs of a customer KMS key, and what writing one needs.
const KMS_READ: &str = "kms:Decrypt";
const KMS_WRITE: &str = "kms:GenerateDataKey";

/// A rotation's status as the wire names it.
fn status_name(status: &baton_core::rotation::Status) -> &'static str {
    use baton_core::rotation::Status;
    match status {
        Status::Running => "InProgress",
        Status::Stopped { .. } => "Stopped",
        Status::Succeeded => "Succeeded",
        Status::Cancelled => "Cancelled",
    }
}

fn wire_timeline(state: &baton_core::rotation::RotationState) -> Vec<p::TimelineEntry> {
    state
        .timeline
        .iter()
        .map(|e| p::TimelineEntry {
            date: Some(seconds(e.at)),
            event: Some(e.event.clone()),
        })
        .collect()
}

/// ListSecrets shows what DescribeSecret shows, under other member names.
fn list_entry(d: p::DescribeSecretResponse) -> p::SecretListEntry {
    p::SecretListEntry {
        arn: d.arn,
        name: d.name,
        description: d.description,
        kms_key_id: d.kms_key_id,
        rotation_enabled: d.rotation_enabled,
        rotation_lambda_arn: d.rotation_lambda_arn,
        rotation_rules: d.rotation_rules,
        last_rotated_date: d.last_rotated_date,
        last_changed_date: d.last_changed_date,
        last_accessed_date: d.last_accessed_date,
        deleted_date: d.deleted_date,
        next_rotation_date: d.next_rotation_date,
        tags: d.tags,
        secret_versions_to_stages: d.version_ids_to_stages,
        owning_service: d.owning_service,
        created_date: d.created_date,
        primary_region: d.primary_region,
    }
}

fn arn_matches(candidate: &str, given: &str) -> bool {
    candidate == given
        || (candidate.len() == given.len() + 1 + baton_core::ARN_SUFFIX_LEN
            && candidate.starts_with(given)
            && candidate.as_bytes()[given.len()] == b'-')
}

impl Located {
    /// The KMS key the value is encrypted under in the caller's region.
    pub fn kms_key_id(&self) -> Option<&str> {
        match &self.replica_region {
            Some(region) => self
                .secret
                .replica(region)
                .and_then(|r| r.kms_key_id.as_deref()),
            None => self.secret.kms_key_id.as_deref(),
        }
    }

    /// The ARN in the caller's region.
    pub fn arn(&self) -> String {
        match &self.replica_region {
            Some(region) => self.secret.replica_arn(region),
            None => self.secret.arn.clone(),
        }
    }

    fn describe(&self) -> p::DescribeSecretResponse {
        let secret = &self.secret;
        let (last_accessed_at, replication_status) = match &self.replica_region {
            Some(region) => (
                secret.replica(region).and_then(|r| r.last_accessed_at),
                None,
            ),
            None => (secret.last_accessed_at, replication_status(secret)),
        };
        let stages = stages_map(secret);
        // AWS: RotationEnabled appears once rotation was configured (also after it was turned
        // off), PrimaryRegion only on replicated secrets, VersionIdsToStages only when there
        // are versions.
        let rotation_configured = secret.rotation.enabled || secret.rotation.lambda_arn.is_some();
        let replicated = self.replica_region.is_some() || !secret.replicas.is_empty();
        p::DescribeSecretResponse {
            version_ids_to_stages: (!stages.is_empty()).then_some(stages),
            arn: Some(self.arn()),
            name: Some(secret.name.clone()),
            description: secret.description.clone(),
            kms_key_id: match &self.replica_region {
                Some(region) => secret.replica(region).and_then(|r| r.kms_key_id.clone()),
                None => secret.kms_key_id.clone(),
            },
            rotation_enabled: rotation_configured.then_some(secret.rotation.enabled),
            rotation_lambda_arn: secret.rotation.lambda_arn.clone(),
            rotation_rules: wire_rules(&secret.rotation.rules),
            last_rotated_date: secret.rotation.last_rotated_at.map(seconds),
            last_changed_date: Some(seconds(secret.last_changed_at)),
            last_accessed_date: last_accessed_at.map(seconds),
            deleted_date: deleted_date(secret),
            next_rotation_date: secret.rotation.next_rotation_at.map(seconds),
            tags: wire_tags(secret),
            owning_service: None,
            created_date: Some(seconds(secret.created_at)),
            primary_region: replicated.then(|| secret.region.clone()),
            replication_status,
        }
    }
}

impl Baton {
    /// Finds a secret by name, full ARN or partial ARN (an ARN without its random suffix) in the
    /// caller's namespace, whether the secret lives there or is replicated there.
    ///
    /// Checks the caller's action on the secret: a caller who may not act on it is denied
    /// whether or not it exists, and only a caller who may is told that it does not.
    pub async fn locate(&self, caller: &Caller, secret_id: &str) -> Result<Located, ApiError> {
        match self.find_located(caller, secret_id).await {
            Ok(located) => {
                self.authorize_secret(caller, secret_id, Some((&located.secret, &located.arn())))?;
                Ok(located)
            }
            Err(ApiError::ResourceNotFound(m)) => {
                self.authorize_secret(caller, secret_id, None)?;
                Err(ApiError::ResourceNotFound(m))
            }
            Err(e) => Err(e),
        }
    }

    /// Finds a secret by name or ARN. A KMS key's keyring is not a secret here: the Secrets
    /// Manager operations neither find nor read it.
    async fn find_located(&self, caller: &Caller, secret_id: &str) -> Result<Located, ApiError> {
        match self.find_located_any(caller, secret_id).await {
            Ok(located) if located.secret.key.is_some() => Err(ApiError::secret_not_found()),
            other => other,
        }
    }

    async fn find_located_any(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<Located, ApiError> {
        if secret_id.is_empty() {
            return Err(length_error("secretId", "greater than or equal to", 1));
        }
        if secret_id.len() > 2048 {
            return Err(length_error("secretId", "less than or equal to", 2048));
        }
        let (account, region) = (caller.account_id.as_str(), caller.region.as_str());
        let primary = |secret: SecretRecord| Located {
            secret,
            replica_region: None,
        };
        let replica = |secret: SecretRecord| Located {
            secret,
            replica_region: Some(caller.region.clone()),
        };
        let Some(arn) = baton_core::parse_secret_arn(secret_id) else {
            if let Some(secret) = self
                .store
                .find_secret_by_name(account, region, secret_id)
                .await?
            {
                return Ok(primary(secret));
            }
            let found = self
                .store
                .find_secret_by_replica(account, region, secret_id)
                .await?;
            return found.map(replica).ok_or_else(ApiError::secret_not_found);
        };
        if arn.region != region || arn.account != account {
            return Err(ApiError::secret_not_found());
        }
        if let Some(secret) = self.store.find_secret_by_arn(secret_id).await? {
            return Ok(primary(secret));
        }
        // A partial ARN names the secret without its suffix; a full ARN may name a replica.
        if let Some(secret) = self
            .store
            .find_secret_by_name(account, region, arn.resource)
            .await?
            && arn_matches(&secret.arn, secret_id)
        {
            return Ok(primary(secret));
        }
        let suffixed = arn.resource.len() > baton_core::ARN_SUFFIX_LEN + 1;
        let candidates = [
            Some(arn.resource),
            suffixed.then(|| &arn.resource[..arn.resource.len() - baton_core::ARN_SUFFIX_LEN - 1]),
        ];
        for name in candidates.into_iter().flatten() {
            if let Some(secret) = self
                .store
                .find_secret_by_replica(account, region, name)
                .await?
                && arn_matches(&secret.replica_arn(region), secret_id)
            {
                return Ok(replica(secret));
            }
        }
        Err(ApiError::secret_not_found())
    }

    /// Finds a secret that the caller may change: a replica is read-only.
    pub(crate) async fn find_primary(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<SecretRecord, ApiError> {
        let located = self.locate(caller, secret_id).await?;
        if located.replica_region.is_some() {
            return Err(ApiError::InvalidParameter(
                "Operation not permitted on a replica secret. Call must be made in primary \
                 secret's region."
                    .to_owned(),
            ));
        }
        Ok(located.secret)
    }

    /// Loads a secret, applies `change`, and saves it if it changed, retrying on conflicts.
    async fn update<T>(
        &self,
        caller: &Caller,
        secret_id: &str,
        mut change: impl FnMut(&mut SecretRecord, &Baton) -> Result<Outcome<T>, ApiError>,
    ) -> Result<(T, SecretRecord), ApiError> {
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let mut secret = self.find_primary(caller, secret_id).await?;
            // A data key wrapped by a KMS key is held root-wrapped while `change` runs (which
            // is synchronous), and wrapped again under the key the secret names before saving.
            // If that key is disabled, the wrap stays as it is: changes that need no value
            // (tags, deletion) still go through, and ones that do fail with DecryptionFailure.
            let stored_wrap = secret.wrapped_data_key.clone();
            let mut unwrapped = false;
            if baton_crypto::kms::data_key_wrapper(&stored_wrap).is_some()
                && let Ok(data_key) = self.stored_data_key(&secret).await
            {
                secret.wrapped_data_key = self.root_key.wrap(&data_key, &secret.id)?;
                unwrapped = true;
            }
            let kms_key_before = secret.kms_key_id.clone();
            let outcome = change(&mut secret, self);
            let held_wrap = std::mem::replace(&mut secret.wrapped_data_key, stored_wrap);
            match outcome? {
                Outcome::Unchanged(out) => return Ok((out, secret)),
                Outcome::Changed(out) => {
                    // Re-wrapping is one small encryption, never a pass over the values: it
                    // moves the data key to the key's current version (lazily, on the next
                    // write after the key rotated) or under a new KmsKeyId.
                    if unwrapped || secret.kms_key_id != kms_key_before {
                        let data_key = self.data_key(&SecretRecord {
                            wrapped_data_key: held_wrap,
                            ..secret.clone()
                        })?;
                        secret.wrapped_data_key = self.wrap_for(caller, &secret, &data_key).await?;
                    }
                    // The operation first, then what it set off (RotateSecret, RotationStarted).
                    secret
                        .outbox
                        .insert(0, crate::events::api_event(&caller.operation, &secret));
                    match self.store.save_secret(&secret).await {
                        Ok(revision) => {
                            secret.revision = revision;
                            return Ok((out, secret));
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(StoreError::NameTaken) => return Err(name_taken_in_replica_region()),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ApiError::Internal(
            "The secret is being changed by many writers at once; retry the request.".to_owned(),
        ))
    }

    /// Applies `change` like [`Baton::update`] and answers with the secret's ARN and name, as
    /// several operations do.
    async fn update_answering_arn_name(
        &self,
        caller: &Caller,
        secret_id: &str,
        change: impl FnMut(&mut SecretRecord, &Baton) -> Result<Outcome<()>, ApiError>,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let ((), secret) = self.update(caller, secret_id, change).await?;
        Ok(p::ArnNameResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
        })
    }

    fn open_value(
        &self,
        data_key: &DataKey,
        secret: &SecretRecord,
        version_id: &str,
    ) -> Result<SecretBytes, ApiError> {
        let version = secret
            .version(version_id)
            .ok_or_else(ApiError::secret_not_found)?;
        Ok(data_key.open(&version.sealed_value, &value_aad(&secret.id, version_id))?)
    }

    /// A version's value as the wire carries it: SecretString, or SecretBinary in base64.
    fn wire_value(
        &self,
        data_key: &DataKey,
        secret: &SecretRecord,
        version_id: &str,
    ) -> Result<(Option<String>, Option<String>), ApiError> {
        let kind = secret
            .version(version_id)
            .map(|v| v.kind)
            .ok_or_else(ApiError::secret_not_found)?;
        if kind == SecretValueKind::Empty {
            return Err(ApiError::ResourceNotFound(format!(
                "Secrets Manager can't find the specified secret value for VersionId: {version_id}"
            )));
        }
        let plaintext = self.open_value(data_key, secret, version_id)?;
        Ok(match kind {
            // Refused above: an empty version has no value to return.
            SecretValueKind::Empty => (None, None),
            SecretValueKind::String => (
                Some(String::from_utf8(plaintext.expose().to_vec()).map_err(|_| {
                    ApiError::Internal("A stored string value is not UTF-8.".to_owned())
                })?),
                None,
            ),
            SecretValueKind::Binary => (None, Some(BASE64.encode(plaintext.expose()))),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::*;

    pub(crate) fn baton(dir: &std::path::Path) -> Baton {
        let store = baton_store::SqliteStore::open(&dir.join("baton.db")).unwrap();
        let (root_key, _) = baton_crypto::RootKey::generate().unwrap();
        Baton::new(
            Arc::new(store),
            root_key,
            "123456789012".into(),
            vec!["us-east-1".into()],
        )
    }

    pub(crate) fn caller() -> Caller {
        Caller::admin("123456789012", "us-east-1", "Test")
    }
}

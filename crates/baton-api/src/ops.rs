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

pub(crate) fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| ApiError::missing(member))
}

pub(crate) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(crate) fn length_error(member: &str, op: &str, bound: usize) -> ApiError {
    ApiError::Validation(format!(
        "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member \
         must have length {op} {bound}"
    ))
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

fn wire_tags(tags: &[Tag]) -> Option<Vec<p::Tag>> {
    (!tags.is_empty()).then(|| {
        tags.iter()
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
            tags: wire_tags(&secret.tags),
            owning_service: None,
            created_date: Some(seconds(secret.created_at)),
            primary_region: replicated.then(|| secret.region.clone()),
            replication_status,
        }
    }
}

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

/// Replicas follow every write by construction (they are views of the primary), so each is
/// always in sync.
fn replication_status(secret: &SecretRecord) -> Option<Vec<p::ReplicationStatus>> {
    (!secret.replicas.is_empty()).then(|| {
        secret
            .replicas
            .iter()
            .map(|r| p::ReplicationStatus {
                region: Some(r.region.clone()),
                kms_key_id: r.kms_key_id.clone(),
                status: Some("InSync".to_owned()),
                status_message: Some("Replication succeeded".to_owned()),
                last_accessed_date: r.last_accessed_at.map(seconds),
            })
            .collect()
    })
}

fn name_taken_in_replica_region() -> ApiError {
    ApiError::ResourceExists(
        "A secret with this name already exists in a replica region. Delete it there, or pass \
         ForceOverwriteReplicaSecret to replace it with the replica."
            .to_owned(),
    )
}

fn refuse_if_replicated(secret: &SecretRecord) -> Result<(), ApiError> {
    if secret.replicas.is_empty() {
        return Ok(());
    }
    let regions: Vec<&str> = secret.replicas.iter().map(|r| r.region.as_str()).collect();
    Err(ApiError::InvalidParameter(format!(
        "You can't delete secret {} that still has replica regions [{}]",
        secret.arn,
        regions.join(", ")
    )))
}

/// What ValidateResourcePolicy reports about a secret's resource policy: the document's own
/// problems, actions that do not apply to a secret, and broad access. Malformed JSON is an error.
fn resource_policy_findings(text: &str) -> Result<Vec<baton_iam::Finding>, ApiError> {
    let mut findings = match baton_iam::Policy::parse(text, baton_iam::PolicyKind::Resource) {
        Ok(policy) => policy.broad_access_findings(),
        Err(baton_iam::PolicyError::Malformed(m)) => {
            return Err(ApiError::MalformedPolicyDocument(m));
        }
        Err(baton_iam::PolicyError::Invalid(findings)) => findings,
    };
    // The document parsed as JSON above; here only its actions are looked at.
    let doc: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let statements = match &doc["Statement"] {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for (i, st) in statements.iter().enumerate() {
        let actions = match st.get("Action").or_else(|| st.get("NotAction")) {
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
            None => vec![],
        };
        for action in actions.iter().filter_map(|a| a.as_str()) {
            let service = action
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if action != "*" && service != "secretsmanager" && service != "baton" {
                findings.push(baton_iam::Finding {
                    check_name: "SYNTAX_CHECK",
                    message: format!(
                        "Statement {i}: action '{action}' does not apply to Secrets Manager."
                    ),
                });
            }
        }
    }
    Ok(findings)
}

fn arn_matches(candidate: &str, given: &str) -> bool {
    candidate == given
        || (candidate.len() == given.len() + 1 + baton_core::ARN_SUFFIX_LEN
            && candidate.starts_with(given)
            && candidate.as_bytes()[given.len()] == b'-')
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

    /// Baton's keyring view: the version to sign or encrypt with (AWSCURRENT) and every version
    /// to verify or decrypt with (AWSPENDING, AWSCURRENT, AWSPREVIOUS), with their values.
    pub async fn get_secret_keyring(
        &self,
        caller: &Caller,
        req: p::GetSecretKeyringRequest,
    ) -> Result<p::GetSecretKeyringResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        self.authorize_key_use(caller, located.kms_key_id(), KMS_READ)?;
        let arn = located.arn();
        let secret = located.secret;
        secret.ensure_not_deleted()?;
        let view = baton_core::rotation::keyring(&secret);
        let data_key = self.stored_data_key(&secret).await?;
        let entry = |version_id: &str| -> Result<p::KeyringVersion, ApiError> {
            let (secret_string, secret_binary) = self.wire_value(&data_key, &secret, version_id)?;
            let version = secret
                .version(version_id)
                .ok_or_else(ApiError::secret_not_found)?;
            Ok(p::KeyringVersion {
                version_id: Some(version_id.to_owned()),
                secret_string,
                secret_binary,
                version_stages: Some(version.labels.iter().cloned().collect()),
                created_date: Some(seconds(version.created_at)),
            })
        };
        let response = p::GetSecretKeyringResponse {
            current: view.current.as_deref().map(entry).transpose()?,
            accepted: Some(
                view.accepted
                    .iter()
                    .map(|v| entry(v))
                    .collect::<Result<_, _>>()?,
            ),
            name: Some(secret.name.clone()),
            arn: Some(arn),
            revision: Some(secret.view_revision()),
        };
        self.note_keyring_fetch(
            caller,
            &secret,
            req.consumer.as_ref(),
            req.lease_seconds,
            &view,
        )
        .await?;
        Ok(response)
    }

    /// Adds a version, or succeeds without change if the same token already holds the same
    /// value (a retried request). The same token with another value is refused.
    fn add_or_match_version(
        &self,
        secret: &mut SecretRecord,
        version_id: &str,
        (kind, value): &(SecretValueKind, SecretBytes),
        labels: Option<Vec<String>>,
        now: i64,
    ) -> Result<Outcome<()>, ApiError> {
        let data_key = self.data_key(secret)?;
        if secret
            .version(version_id)
            .is_some_and(|v| v.kind == SecretValueKind::Empty)
        {
            let sealed_value = data_key.seal(value.expose(), &value_aad(&secret.id, version_id))?;
            secret.fill_version(
                NewVersion {
                    version_id: version_id.to_owned(),
                    kind: *kind,
                    sealed_value,
                    labels,
                },
                now,
            )?;
            return Ok(Outcome::Changed(()));
        }
        if let Some(existing) = secret.version(version_id) {
            let existing_kind = existing.kind;
            let stored = self.open_value(&data_key, secret, version_id)?;
            if existing_kind == *kind && stored.ct_eq(value.expose()) {
                return Ok(Outcome::Unchanged(()));
            }
            return Err(ApiError::ResourceExists(format!(
                "You can't use ClientRequestToken {version_id} because that value is already \
                 in use for a version of secret {}.",
                secret.arn
            )));
        }
        let sealed_value = data_key.seal(value.expose(), &value_aad(&secret.id, version_id))?;
        secret.add_version(
            NewVersion {
                version_id: version_id.to_owned(),
                kind: *kind,
                sealed_value,
                labels,
            },
            now,
        )?;
        Ok(Outcome::Changed(()))
    }

    pub async fn create_secret(
        &self,
        caller: &Caller,
        req: p::CreateSecretRequest,
    ) -> Result<p::CreateSecretResponse, ApiError> {
        let name = required(&req.name, "name")?;
        baton_core::validate_secret_name(name)?;
        check_description(&req.description)?;
        let value = value_input(&req.secret_string, &req.secret_binary)?;
        let version_id = token_or_new(&req.client_request_token)?;
        let tags = convert_tags(req.tags.as_deref().unwrap_or_default())?;
        let replicas =
            self.replica_regions(req.add_replica_regions.as_deref().unwrap_or_default())?;
        let pending = self.pending_secret_arn(caller, name);
        self.authorize(
            caller,
            Target {
                action: &caller.action,
                arn: &pending,
                shown: name,
                resource_policy: None,
                tags: &[],
            },
        )?;
        if value.is_some() {
            self.authorize_key_use(caller, req.kms_key_id.as_deref(), KMS_WRITE)?;
        }
        let now = now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let data_key = DataKey::generate()?;
        let mut secret = SecretRecord {
            arn: format!(
                "arn:aws:secretsmanager:{}:{}:secret:{name}-{}",
                caller.region,
                caller.account_id,
                random_chars(baton_core::ARN_SUFFIX_LEN, ALPHABET_ARN_SUFFIX)?
            ),
            wrapped_data_key: self.root_key.wrap(&data_key, &id)?,
            replicas: Vec::new(),
            rotation_policy: None,
            rotation_state: None,
            id,
            account_id: caller.account_id.clone(),
            region: caller.region.clone(),
            name: name.to_owned(),
            description: req.description.clone(),
            kms_key_id: req.kms_key_id.clone(),
            tags: Vec::new(),
            resource_policy: None,
            rotation: RotationConfig::default(),
            created_at: now,
            last_changed_at: now,
            last_accessed_at: None,
            deletion: DeletionState::Active,
            versions: Vec::new(),
            revision: 0,
            key: None,
            outbox: vec![],
        };
        secret.tag(tags, now)?;
        secret.add_replicas(&replicas, now)?;
        if let Some(value) = &value {
            self.add_or_match_version(&mut secret, &version_id, value, None, now)?;
        }
        if req.force_overwrite_replica_secret.unwrap_or(false) {
            self.clear_replica_names(caller, name, &replicas).await?;
        }
        secret.wrapped_data_key = self.wrap_for(caller, &secret, &data_key).await?;
        secret
            .outbox
            .push(crate::events::api_event(&caller.operation, &secret));
        match self.store.insert_secret(&secret).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                let existing = match self.locate(caller, name).await {
                    Ok(Located {
                        replica_region: None,
                        secret,
                    }) => secret,
                    Ok(Located { .. }) => {
                        return Err(ApiError::ResourceExists(format!(
                            "The operation failed because the secret {name} already exists: it \
                             is a replica of a secret in another region."
                        )));
                    }
                    Err(_) => return Err(name_taken_in_replica_region()),
                };
                if existing.is_scheduled_for_deletion() {
                    return Err(ApiError::InvalidRequest(format!(
                        "You can't create this secret because a secret with the name {name} is \
                         already scheduled for deletion. Restore it with RestoreSecret, or \
                         delete it now with DeleteSecret and ForceDeleteWithoutRecovery, then \
                         create it again."
                    )));
                }
                // A retried CreateSecret with the same token and value succeeds unchanged.
                let mut existing = existing;
                if let (Some(_), Some(value)) = (&req.client_request_token, &value)
                    && existing.version(&version_id).is_some()
                    && let Outcome::Unchanged(()) =
                        self.add_or_match_version(&mut existing, &version_id, value, None, now)?
                {
                    return Ok(p::CreateSecretResponse {
                        arn: Some(existing.arn),
                        name: Some(existing.name),
                        version_id: Some(version_id),
                        replication_status: None,
                    });
                }
                return Err(ApiError::ResourceExists(format!(
                    "The operation failed because the secret {name} already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(p::CreateSecretResponse {
            replication_status: replication_status(&secret),
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: value.map(|_| version_id),
        })
    }

    pub async fn describe_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::DescribeSecretResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        // AWS's caches refresh through DescribeSecret: it is a read like any other.
        self.note_plain_read(caller, &located.secret).await;
        Ok(located.describe())
    }

    /// Reads one value. Records the access date at day granularity, as AWS does, which costs
    /// at most one write per secret per day.
    async fn read_value(
        &self,
        caller: &Caller,
        secret_id: &str,
        version_id: Option<&str>,
        version_stage: Option<&str>,
    ) -> Result<p::SecretValue, ApiError> {
        if let Some(v) = version_id {
            baton_core::validate_client_request_token(v).map_err(|e| match e {
                CoreError::Validation(m) => {
                    ApiError::Validation(m.replace("clientRequestToken", "versionId"))
                }
                other => other.into(),
            })?;
        }
        if let Some(s) = version_stage {
            baton_core::validate_version_stage(s)?;
        }
        let located = self.locate(caller, secret_id).await?;
        self.authorize_key_use(caller, located.kms_key_id(), KMS_READ)?;
        let arn = located.arn();
        let mut secret = located.secret;
        secret.ensure_not_deleted()?;
        // Asking for a stage that does not exist yet is how a cache looks for AWSPENDING: the
        // reader is there whether or not the answer is a value.
        self.note_plain_read(caller, &secret).await;
        let version = resolve_version(&secret, version_id, version_stage)?;
        let data_key = self.stored_data_key(&secret).await?;
        let (secret_string, secret_binary) =
            self.wire_value(&data_key, &secret, &version.version_id)?;
        let value = p::SecretValue {
            arn: Some(arn),
            name: Some(secret.name.clone()),
            version_id: Some(version.version_id.clone()),
            secret_binary,
            secret_string,
            version_stages: Some(version.labels.iter().cloned().collect()),
            created_date: Some(seconds(version.created_at)),
        };
        let today = now_ms() / DAY_MS * DAY_MS;
        let last_accessed = match &located.replica_region {
            None => &mut secret.last_accessed_at,
            Some(region) => match secret.replicas.iter_mut().find(|r| &r.region == region) {
                Some(replica) => &mut replica.last_accessed_at,
                None => return Ok(value),
            },
        };
        if *last_accessed != Some(today) {
            *last_accessed = Some(today);
            // Losing this race to a concurrent writer only delays the access date.
            match self.store.save_secret(&secret).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(value)
    }

    pub async fn get_secret_value(
        &self,
        caller: &Caller,
        req: p::GetSecretValueRequest,
    ) -> Result<p::SecretValue, ApiError> {
        self.read_value(
            caller,
            required(&req.secret_id, "secretId")?,
            req.version_id.as_deref(),
            req.version_stage.as_deref(),
        )
        .await
    }

    pub async fn batch_get_secret_value(
        &self,
        caller: &Caller,
        req: p::BatchGetSecretValueRequest,
    ) -> Result<p::BatchGetSecretValueResponse, ApiError> {
        let ids: Vec<String> = match (&req.secret_id_list, &req.filters) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidParameter(
                    "Either SecretIdList or Filters must be provided, but not both.".to_owned(),
                ));
            }
            (None, None) => {
                return Err(ApiError::InvalidParameter(
                    "Either SecretIdList or Filters must be provided.".to_owned(),
                ));
            }
            (Some(list), None) => {
                if req.max_results.is_some() {
                    return Err(ApiError::InvalidParameter(
                        "MaxResults can only be used with Filters.".to_owned(),
                    ));
                }
                if list.is_empty() || list.len() > BATCH_IDS_MAX {
                    return Err(ApiError::Validation(format!(
                        "1 validation error detected: Value at 'secretIdList' failed to satisfy \
                         constraint: Member must have length between 1 and {BATCH_IDS_MAX}"
                    )));
                }
                list.clone()
            }
            (None, Some(filters)) => {
                let lister = caller.acting_as("secretsmanager:ListSecrets");
                self.authorize(&lister, Target::global(&lister.action))?;
                let listed = self
                    .list_secrets(
                        &lister,
                        p::ListSecretsRequest {
                            filters: Some(filters.clone()),
                            max_results: Some(req.max_results.unwrap_or(BATCH_IDS_MAX as i64)),
                            next_token: req.next_token.clone(),
                            ..Default::default()
                        },
                    )
                    .await?;
                let ids = listed
                    .secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| s.arn)
                    .collect();
                let mut response = self.batch_read(caller, ids).await;
                response.next_token = listed.next_token;
                return Ok(response);
            }
        };
        Ok(self.batch_read(caller, ids).await)
    }

    async fn batch_read(
        &self,
        caller: &Caller,
        ids: Vec<String>,
    ) -> p::BatchGetSecretValueResponse {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        // Each secret needs GetSecretValue of its own; a denial is that secret's error.
        let reader = caller.acting_as("secretsmanager:GetSecretValue");
        for id in ids {
            match self.read_value(&reader, &id, None, None).await {
                Ok(value) => values.push(value),
                Err(e) => errors.push(p::ApiErrorEntry {
                    secret_id: Some(id),
                    error_code: Some(e.error_type().to_owned()),
                    message: Some(e.to_string()),
                }),
            }
        }
        p::BatchGetSecretValueResponse {
            secret_values: Some(values),
            next_token: None,
            errors: Some(errors),
        }
    }

    pub async fn put_secret_value(
        &self,
        caller: &Caller,
        req: p::PutSecretValueRequest,
    ) -> Result<p::PutSecretValueResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let value = value_input(&req.secret_string, &req.secret_binary)?.ok_or_else(|| {
            ApiError::InvalidRequest(
                "You must provide either SecretString or SecretBinary.".to_owned(),
            )
        })?;
        let version_id = token_or_new(&req.client_request_token)?;
        if let Some(stages) = &req.version_stages {
            if stages.is_empty() || stages.len() > 20 {
                return Err(ApiError::Validation(
                    "1 validation error detected: Value at 'versionStages' failed to satisfy \
                     constraint: Member must have length between 1 and 20"
                        .to_owned(),
                ));
            }
            for stage in stages {
                baton_core::validate_version_stage(stage)?;
            }
        }
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, baton| {
                secret.ensure_not_deleted()?;
                baton.authorize_key_use(caller, secret.kms_key_id.as_deref(), KMS_WRITE)?;
                baton.add_or_match_version(
                    secret,
                    &version_id,
                    &value,
                    req.version_stages.clone(),
                    now,
                )
            })
            .await?;
        let stages = secret
            .version(&version_id)
            .map(|v| v.labels.iter().cloned().collect());
        Ok(p::PutSecretValueResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: Some(version_id),
            version_stages: stages,
        })
    }

    pub async fn update_secret(
        &self,
        caller: &Caller,
        req: p::UpdateSecretRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        check_description(&req.description)?;
        let value = value_input(&req.secret_string, &req.secret_binary)?;
        let version_id = token_or_new(&req.client_request_token)?;
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, baton| {
                secret.ensure_not_deleted()?;
                let mut changed = false;
                if let Some(d) = &req.description
                    && secret.description.as_ref() != Some(d)
                {
                    secret.description = Some(d.clone());
                    changed = true;
                }
                if let Some(k) = &req.kms_key_id
                    && secret.kms_key_id.as_ref() != Some(k)
                {
                    secret.kms_key_id = Some(k.clone());
                    changed = true;
                }
                if value.is_some() {
                    baton.authorize_key_use(caller, secret.kms_key_id.as_deref(), KMS_WRITE)?;
                }
                if let Some(value) = &value
                    && let Outcome::Changed(()) =
                        baton.add_or_match_version(secret, &version_id, value, None, now)?
                {
                    changed = true;
                }
                if changed {
                    secret.last_changed_at = now;
                    Ok(Outcome::Changed(()))
                } else {
                    Ok(Outcome::Unchanged(()))
                }
            })
            .await?;
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: value.map(|_| version_id),
        })
    }

    pub async fn update_secret_version_stage(
        &self,
        caller: &Caller,
        req: p::UpdateSecretVersionStageRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let change = LabelMove {
            label: required(&req.version_stage, "versionStage")?.to_owned(),
            remove_from_version_id: req.remove_from_version_id.clone(),
            move_to_version_id: req.move_to_version_id.clone(),
        };
        let now = now_ms();
        self.update_answering_arn_name(caller, secret_id, |secret, _| {
            baton_core::move_label(secret, &change, now)?;
            Ok(Outcome::Changed(()))
        })
        .await
    }

    /// Baton's extension: several label moves in one atomic write.
    pub async fn update_secret_version_stages(
        &self,
        caller: &Caller,
        req: p::UpdateSecretVersionStagesRequest,
    ) -> Result<p::UpdateSecretVersionStagesResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let moves = req
            .moves
            .as_ref()
            .ok_or_else(|| ApiError::missing("moves"))?
            .iter()
            .map(|m| {
                Ok(LabelMove {
                    label: required(&m.version_stage, "moves.member.versionStage")?.to_owned(),
                    remove_from_version_id: m.remove_from_version_id.clone(),
                    move_to_version_id: m.move_to_version_id.clone(),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                baton_core::apply_label_moves(secret, &moves, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        Ok(p::UpdateSecretVersionStagesResponse {
            version_ids_to_stages: Some(stages_map(&secret)),
            arn: Some(secret.arn),
            name: Some(secret.name),
        })
    }

    pub async fn list_secrets(
        &self,
        caller: &Caller,
        req: p::ListSecretsRequest,
    ) -> Result<p::ListSecretsResponse, ApiError> {
        let max_results = req.max_results.unwrap_or(LIST_RESULTS_MAX);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let filters = parse_filters(req.filters.as_deref().unwrap_or_default())?;
        let offset = decode_next_token(&req.next_token)?;
        let include_deleted = req.include_planned_deletion.unwrap_or(false);
        let (account, region) = (caller.account_id.as_str(), caller.region.as_str());
        let mut primaries = self.store.list_secrets(account, region).await?;
        primaries.retain(|s| s.key.is_none());
        let replicated = self.store.list_replicated_into(account, region).await?;
        let mut secrets: Vec<Located> = primaries
            .into_iter()
            .map(|secret| Located {
                secret,
                replica_region: None,
            })
            .chain(replicated.into_iter().map(|secret| Located {
                secret,
                replica_region: Some(caller.region.clone()),
            }))
            .filter(|l| include_deleted || !l.secret.is_scheduled_for_deletion())
            .filter(|l| filters.iter().all(|f| f.matches(l)))
            .collect();
        sort_secrets(
            &mut secrets,
            req.sort_by.as_deref(),
            req.sort_order.as_deref(),
        )?;
        let total = secrets.len();
        let page: Vec<p::SecretListEntry> = secrets
            .iter()
            .skip(offset)
            .take(max_results as usize)
            .map(|l| list_entry(l.describe()))
            .collect();
        let next = offset + page.len();
        Ok(p::ListSecretsResponse {
            secret_list: Some(page),
            next_token: (next < total).then(|| encode_next_token(next)),
        })
    }

    pub async fn list_secret_version_ids(
        &self,
        caller: &Caller,
        req: p::ListSecretVersionIdsRequest,
    ) -> Result<p::ListSecretVersionIdsResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        self.note_plain_read(caller, &located.secret).await;
        let arn = located.arn();
        let secret = located.secret;
        let max_results = req.max_results.unwrap_or(LIST_RESULTS_MAX);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let offset = decode_next_token(&req.next_token)?;
        let include_deprecated = req.include_deprecated.unwrap_or(false);
        let mut versions: Vec<_> = secret
            .versions
            .iter()
            .filter(|v| include_deprecated || !v.labels.is_empty())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.created_at));
        let total = versions.len();
        let page: Vec<p::SecretVersionsListEntry> = versions
            .into_iter()
            .skip(offset)
            .take(max_results as usize)
            .map(|v| p::SecretVersionsListEntry {
                version_id: Some(v.version_id.clone()),
                version_stages: Some(v.labels.iter().cloned().collect()),
                last_accessed_date: None,
                created_date: Some(seconds(v.created_at)),
                kms_key_ids: None,
            })
            .collect();
        let next = offset + page.len();
        Ok(p::ListSecretVersionIdsResponse {
            versions: Some(page),
            next_token: (next < total).then(|| encode_next_token(next)),
            arn: Some(arn),
            name: Some(secret.name),
        })
    }

    pub async fn delete_secret(
        &self,
        caller: &Caller,
        req: p::DeleteSecretRequest,
    ) -> Result<p::DeleteSecretResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let force = req.force_delete_without_recovery.unwrap_or(false);
        if force && req.recovery_window_in_days.is_some() {
            return Err(ApiError::InvalidParameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with \
                 RecoveryWindowInDays."
                    .to_owned(),
            ));
        }
        let window = req
            .recovery_window_in_days
            .unwrap_or(RECOVERY_WINDOW_DAYS_DEFAULT);
        if !(7..=30).contains(&window) {
            return Err(ApiError::InvalidParameter(
                "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
                    .to_owned(),
            ));
        }
        let now = now_ms();
        if force {
            let mut secret = match self.find_primary(caller, secret_id).await {
                Ok(secret) => secret,
                // AWS: a forced delete of a secret that does not exist (or is already gone)
                // succeeds, so a retried or repeated teardown does not fail.
                Err(ApiError::ResourceNotFound(_)) => {
                    let (arn, name) = match baton_core::parse_secret_arn(secret_id) {
                        // A full ARN ends in "-" and a 6-character suffix the name lacks.
                        Some(arn) => {
                            let resource = arn.resource;
                            let suffix = baton_core::ARN_SUFFIX_LEN + 1;
                            let name = match resource.len().checked_sub(suffix) {
                                Some(cut) if cut > 0 && resource.as_bytes()[cut] == b'-' => {
                                    &resource[..cut]
                                }
                                _ => resource,
                            };
                            (secret_id.to_owned(), name.to_owned())
                        }
                        None => (
                            format!(
                                "arn:aws:secretsmanager:{}:{}:secret:{secret_id}",
                                caller.region, caller.account_id
                            ),
                            secret_id.to_owned(),
                        ),
                    };
                    return Ok(p::DeleteSecretResponse {
                        arn: Some(arn),
                        name: Some(name),
                        deletion_date: Some(seconds(now)),
                    });
                }
                Err(e) => return Err(e),
            };
            refuse_if_replicated(&secret)?;
            secret
                .outbox
                .push(crate::events::api_event(&caller.operation, &secret));
            self.store.delete_secret(&secret).await?;
            return Ok(p::DeleteSecretResponse {
                arn: Some(secret.arn),
                name: Some(secret.name),
                deletion_date: Some(seconds(now)),
            });
        }
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                refuse_if_replicated(secret)?;
                secret.schedule_deletion(window, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        let DeletionState::Scheduled { purge_at, .. } = secret.deletion else {
            return Err(ApiError::Internal("deletion was not recorded".to_owned()));
        };
        Ok(p::DeleteSecretResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            deletion_date: Some(seconds(purge_at)),
        })
    }

    pub async fn restore_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let now = now_ms();
        self.update_answering_arn_name(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                if !secret.is_scheduled_for_deletion() {
                    return Ok(Outcome::Unchanged(()));
                }
                secret.restore(now)?;
                Ok(Outcome::Changed(()))
            },
        )
        .await
    }

    pub async fn tag_resource(
        &self,
        caller: &Caller,
        req: p::TagResourceRequest,
    ) -> Result<p::Empty, ApiError> {
        let tags = convert_tags(req.tags.as_ref().ok_or_else(|| ApiError::missing("tags"))?)?;
        let now = now_ms();
        self.update(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                secret.tag(tags.clone(), now)?;
                Ok(Outcome::Changed(()))
            },
        )
        .await?;
        Ok(p::Empty {})
    }

    pub async fn untag_resource(
        &self,
        caller: &Caller,
        req: p::UntagResourceRequest,
    ) -> Result<p::Empty, ApiError> {
        let keys = req
            .tag_keys
            .clone()
            .ok_or_else(|| ApiError::missing("tagKeys"))?;
        let now = now_ms();
        self.update(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                secret.untag(&keys, now);
                Ok(Outcome::Changed(()))
            },
        )
        .await?;
        Ok(p::Empty {})
    }

    pub fn get_random_password(
        &self,
        req: p::GetRandomPasswordRequest,
    ) -> Result<p::GetRandomPasswordResponse, ApiError> {
        let defaults = PasswordOptions::default();
        let length = req.password_length.unwrap_or(i64::from(defaults.length));
        if !(1..=4096).contains(&length) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{length}' at 'passwordLength' failed to \
                 satisfy constraint: Member must have value between 1 and 4096"
            )));
        }
        let options = PasswordOptions {
            length: length as u32,
            exclude_characters: req.exclude_characters.clone().unwrap_or_default(),
            exclude_numbers: req.exclude_numbers.unwrap_or(false),
            exclude_punctuation: req.exclude_punctuation.unwrap_or(false),
            exclude_uppercase: req.exclude_uppercase.unwrap_or(false),
            exclude_lowercase: req.exclude_lowercase.unwrap_or(false),
            include_space: req.include_space.unwrap_or(false),
            require_each_included_type: req.require_each_included_type.unwrap_or(true),
        };
        let password = baton_crypto::random_password(&options).map_err(|e| match e {
            baton_crypto::PasswordError::Crypto(c) => ApiError::from(c),
            other => ApiError::InvalidParameter(other.to_string()),
        })?;
        let text = String::from_utf8(password.expose().to_vec())
            .map_err(|_| ApiError::Internal("password is not UTF-8".to_owned()))?;
        Ok(p::GetRandomPasswordResponse {
            random_password: Some(text),
        })
    }

    pub async fn put_resource_policy(
        &self,
        caller: &Caller,
        req: p::PutResourcePolicyRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let text = required(&req.resource_policy, "resourcePolicy")?;
        let findings = resource_policy_findings(text)?;
        if let Some(invalid) = findings.iter().find(|f| f.check_name == "SYNTAX_CHECK") {
            return Err(ApiError::MalformedPolicyDocument(invalid.message.clone()));
        }
        if req.block_public_policy.unwrap_or(false)
            && findings
                .iter()
                .any(|f| f.check_name == "BROAD_ACCESS_CHECK")
        {
            return Err(ApiError::PublicPolicy(
                "BlockPublicPolicy is set and the resource policy grants broad access to the \
                 secret (an Allow for principal \"*\" without a Condition)."
                    .to_owned(),
            ));
        }
        let now = now_ms();
        self.update_answering_arn_name(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                secret.resource_policy = Some(text.to_owned());
                secret.last_changed_at = now;
                Ok(Outcome::Changed(()))
            },
        )
        .await
    }

    pub async fn get_resource_policy(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::GetResourcePolicyResponse, ApiError> {
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        let arn = located.arn();
        let secret = located.secret;
        Ok(p::GetResourcePolicyResponse {
            arn: Some(arn),
            name: Some(secret.name),
            resource_policy: secret.resource_policy,
        })
    }

    pub async fn delete_resource_policy(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ArnNameResponse, ApiError> {
        let now = now_ms();
        self.update_answering_arn_name(
            caller,
            required(&req.secret_id, "secretId")?,
            |secret, _| {
                secret.ensure_not_deleted()?;
                if secret.resource_policy.is_none() {
                    return Ok(Outcome::Unchanged(()));
                }
                secret.resource_policy = None;
                secret.last_changed_at = now;
                Ok(Outcome::Changed(()))
            },
        )
        .await
    }

    pub async fn validate_resource_policy(
        &self,
        caller: &Caller,
        req: p::ValidateResourcePolicyRequest,
    ) -> Result<p::ValidateResourcePolicyResponse, ApiError> {
        match &req.secret_id {
            Some(id) => drop(self.locate(caller, id).await?),
            None => self.authorize(caller, Target::global(&caller.action))?,
        }
        let text = required(&req.resource_policy, "resourcePolicy")?;
        let findings = resource_policy_findings(text)?;
        Ok(p::ValidateResourcePolicyResponse {
            policy_validation_passed: Some(findings.is_empty()),
            validation_errors: Some(
                findings
                    .into_iter()
                    .map(|f| p::ValidationErrorsEntry {
                        check_name: Some(f.check_name.to_owned()),
                        error_message: Some(f.message),
                    })
                    .collect(),
            ),
        })
    }

    /// Records rotation settings and, unless RotateImmediately is false, starts a rotation that
    /// the engine drives through its phases. Only built-in rotators run so far; for any other
    /// function an immediate rotation is refused rather than pretended.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        req: p::RotateSecretRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let rules = req
            .rotation_rules
            .as_ref()
            .map(check_rotation_rules)
            .transpose()?;
        if let Some(token) = &req.client_request_token {
            baton_core::validate_client_request_token(token)?;
        }
        let immediately = req.rotate_immediately.unwrap_or(true);
        let token = token_or_new(&req.client_request_token)?;
        let secret_id = required(&req.secret_id, "secretId")?;
        // Whether the function is a registered external rotator (a read outside the write).
        let lambda_in_use = match &req.rotation_lambda_arn {
            Some(lambda) => Some(lambda.clone()),
            None => {
                self.find_primary(caller, secret_id)
                    .await?
                    .rotation
                    .lambda_arn
            }
        };
        if let Some(lambda) = &lambda_in_use
            && baton_engine::is_database_rotator(lambda)
        {
            self.authorize_database_master(caller, secret_id).await?;
        }
        let registered = match &lambda_in_use {
            Some(lambda) if !baton_engine::is_builtin(lambda) => {
                let name = baton_engine::rotator_name(lambda);
                self.is_command_rotator(name)? || self.store.find_rotator(name).await?.is_some()
            }
            _ => false,
        };
        let now = now_ms();
        let (started, secret) = self
            .update(caller, secret_id, |secret, _| {
                secret.ensure_not_deleted()?;
                let lambda = req
                    .rotation_lambda_arn
                    .clone()
                    .or_else(|| secret.rotation.lambda_arn.clone())
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(
                            "No Lambda rotation function ARN is associated with this secret."
                                .to_owned(),
                        )
                    })?;
                // A retried RotateSecret with the token of the rotation in flight succeeds.
                if immediately
                    && secret
                        .rotation_state
                        .as_ref()
                        .is_some_and(|s| s.machine.version_id == token && !s.machine.is_finished())
                {
                    return Ok(Outcome::Unchanged(true));
                }
                if immediately && !baton_engine::is_builtin(&lambda) && !registered {
                    return Err(ApiError::InvalidRequest(format!(
                        "Baton has no rotation function {}: use the built-in {}, define a \
                             command in the server's configuration, or register a webhook with \
                             `baton rotator create`. Pass RotateImmediately=false to record the \
                             configuration without rotating.",
                        baton_engine::rotator_name(&lambda),
                        baton_engine::RANDOM_ROTATOR
                    )));
                }
                secret.rotation.enabled = true;
                secret.rotation.lambda_arn = Some(lambda);
                // Built-in database rotators act with this principal's right to the master.
                secret.rotation.configured_by = Some(caller.principal.arn.clone());
                if let Some(rules) = &rules {
                    secret.rotation.rules = Some(rules.clone());
                }
                if immediately {
                    baton_engine::start_rotation(secret, token.clone(), now)?;
                }
                let last = if immediately {
                    now
                } else {
                    secret.rotation.last_rotated_at.unwrap_or(secret.created_at)
                };
                secret.rotation.next_rotation_at =
                    baton_engine::plan_next_rotation(secret, last, now);
                secret.last_changed_at = now;
                Ok(Outcome::Changed(immediately))
            })
            .await?;
        if started {
            self.engine_wake.notify_one();
        }
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: started.then_some(token),
        })
    }

    /// Configuring `baton-postgres` or `baton-mysql` on a secret whose value names a master
    /// secret needs the right to read that master, as a Lambda rotation function would need
    /// it: the rotator will act as the master. The check is audited with the request.
    async fn authorize_database_master(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<(), ApiError> {
        let secret = self.find_primary(caller, secret_id).await?;
        let Some(current) = secret.version_with_label(baton_core::AWSCURRENT) else {
            return Ok(());
        };
        if current.kind != SecretValueKind::String {
            return Ok(());
        }
        let data_key = self.stored_data_key(&secret).await?;
        let value = self.open_value(&data_key, &secret, &current.version_id)?;
        let Some(master) = baton_engine::database_master_arn(value.expose()) else {
            return Ok(());
        };
        let reader = caller.acting_as("secretsmanager:GetSecretValue");
        match self.locate(&reader, &master).await {
            Ok(_) => Ok(()),
            Err(ApiError::AccessDenied(why)) => Err(ApiError::AccessDenied(format!(
                "The secret's masterarn names {master}, and the rotator would act as that master \
                 secret: configuring its rotation needs secretsmanager:GetSecretValue on it. {why}"
            ))),
            Err(ApiError::ResourceNotFound(_)) => Err(ApiError::InvalidParameter(format!(
                "The secret's masterarn names {master}, which does not exist."
            ))),
            Err(e) => Err(e),
        }
    }

    /// Disables rotation, and cancels a rotation in flight if it has not been promoted yet.
    pub async fn cancel_rotate_secret(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::ArnNameVersionResponse, ApiError> {
        let now = now_ms();
        let (pending, secret) = self
            .update(
                caller,
                required(&req.secret_id, "secretId")?,
                |secret, _| {
                    secret.ensure_not_deleted()?;
                    secret.rotation.enabled = false;
                    secret.rotation.next_rotation_at = None;
                    secret.last_changed_at = now;
                    let mut pending = None;
                    if let Some(mut state) = secret.rotation_state.take() {
                        if !state.machine.is_finished() {
                            let commands = state
                                .machine
                                .handle(baton_core::rotation::Input::Cancel, now)
                                .map_err(|e| {
                                    ApiError::InvalidRequest(format!(
                                        "The rotation of version {} can't be cancelled: {e}.",
                                        state.machine.version_id
                                    ))
                                })?;
                            for command in commands {
                                match command {
                                    baton_core::rotation::Command::DropPending => {
                                        let version = state.machine.version_id.clone();
                                        baton_core::drop_pending_label(secret, &version, now)?;
                                        pending = Some(version);
                                    }
                                    baton_core::rotation::Command::Record(event) => {
                                        state.record(now, &event)
                                    }
                                    baton_core::rotation::Command::Run(_) => {}
                                }
                            }
                            state.compute_due_at(now);
                        }
                        secret.rotation_state = Some(state);
                    }
                    Ok(Outcome::Changed(pending))
                },
            )
            .await?;
        Ok(p::ArnNameVersionResponse {
            arn: Some(secret.arn),
            name: Some(secret.name),
            version_id: pending,
        })
    }

    /// Baton's extension: resumes a rotation that stopped after its retry limit
    /// (`Force: false`), or passes a held gate on an operator's word (`Force: true`).
    pub async fn resume_rotation(
        &self,
        caller: &Caller,
        req: p::ResumeRotationRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        use baton_core::rotation::Input;
        let secret_id = required(&req.secret_id, "secretId")?.to_owned();
        let input = if req.force.unwrap_or(false) {
            Input::ForceAdvance
        } else {
            Input::Retry
        };
        let now = now_ms();
        self.update(caller, &secret_id, |secret, _| {
            let Some(state) = secret.rotation_state.as_mut() else {
                return Err(ApiError::InvalidRequest(
                    "This secret has no rotation to resume.".to_owned(),
                ));
            };
            let commands = state.machine.handle(input.clone(), now).map_err(|e| {
                ApiError::InvalidRequest(format!("Can't resume the rotation: {e}."))
            })?;
            state.record_all(now, &commands);
            // Steps the machine asked for run on the engine's next pass.
            state.due_at = Some(now);
            Ok(Outcome::Changed(()))
        })
        .await?;
        self.wake_engine_and_describe(caller, secret_id).await
    }

    async fn wake_engine_and_describe(
        &self,
        caller: &Caller,
        secret_id: String,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        self.engine_wake.notify_one();
        self.describe_rotation(
            caller,
            p::SecretIdRequest {
                secret_id: Some(secret_id),
                key_id: None,
            },
        )
        .await
    }

    /// Baton's extension: how rotations of a secret wait and retry.
    pub async fn put_rotation_policy(
        &self,
        caller: &Caller,
        req: p::PutRotationPolicyRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        let policy = rotation_policy_from(&req)?;
        if let Some(key_id) = &req.key_id {
            return self.put_key_rotation_policy(caller, key_id, policy).await;
        }
        let secret_id = required(&req.secret_id, "secretId")?.to_owned();
        let now = now_ms();
        self.update(caller, &secret_id, |secret, _| {
            secret.ensure_not_deleted()?;
            apply_rotation_policy(secret, &policy, now);
            Ok(Outcome::Changed(()))
        })
        .await?;
        self.wake_engine_and_describe(caller, secret_id).await
    }

    /// Baton's extension: the rotation in flight (or the last one), its timeline, and the policy.
    pub async fn describe_rotation(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::DescribeRotationResponse, ApiError> {
        if let Some(key_id) = &req.key_id {
            let key = self.key_for(caller, key_id, &caller.action).await?;
            return Ok(rotation_description(key.secret.arn.clone(), &key.secret));
        }
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        Ok(rotation_description(located.arn(), &located.secret))
    }

    /// Baton's extension: a secret's rotations, newest first, each with its timeline.
    pub async fn list_rotations(
        &self,
        caller: &Caller,
        req: p::ListRotationsRequest,
    ) -> Result<p::ListRotationsResponse, ApiError> {
        let max_results = req.max_results.unwrap_or(20);
        if !(1..=LIST_RESULTS_MAX).contains(&max_results) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{max_results}' at 'maxResults' failed to \
                 satisfy constraint: Member must have value between 1 and {LIST_RESULTS_MAX}"
            )));
        }
        let located = self
            .locate(caller, required(&req.secret_id, "secretId")?)
            .await?;
        let history = self
            .store
            .rotation_history(&located.secret.id, max_results as u32)
            .await?;
        Ok(p::ListRotationsResponse {
            arn: Some(located.arn()),
            name: Some(located.secret.name.clone()),
            rotations: Some(
                history
                    .iter()
                    .map(|state| p::RotationSummary {
                        version_id: Some(state.machine.version_id.clone()),
                        old_version_id: state.machine.old_version_id.clone(),
                        phase: Some(state.machine.phase.as_str().to_owned()),
                        status: Some(status_name(&state.machine.status).to_owned()),
                        started_date: Some(seconds(state.machine.started_at)),
                        timeline: Some(wire_timeline(state)),
                    })
                    .collect(),
            ),
        })
    }

    /// Registers a webhook rotator: a URL that receives AWS's rotation event in a signed POST.
    /// Commands are refused: they run with the server's privileges, so only the operator
    /// defines them, in the server's configuration.
    pub async fn create_rotator(&self, req: p::Rotator) -> Result<p::Rotator, ApiError> {
        let name = required(&req.name, "name")?;
        baton_engine::commands::check_name(name).map_err(ApiError::InvalidParameter)?;
        let timeout_seconds = req.timeout_seconds;
        if let Some(t) = timeout_seconds
            && !(1..=ROTATOR_TIMEOUT_MAX_SECONDS).contains(&t)
        {
            return Err(ApiError::InvalidParameter(format!(
                "TimeoutSeconds must be between 1 and {ROTATOR_TIMEOUT_MAX_SECONDS}; got {t}."
            )));
        }
        let url = match (&req.command, &req.webhook_url) {
            (None, Some(url)) => url,
            (Some(_), None) => {
                return Err(ApiError::InvalidParameter(
                    "Command rotators cannot be created through the API: a command runs with the \
                     server's privileges, so the operator defines it in the server's \
                     configuration ([[rotator]] in the config file, or a file in \
                     --rotators-dir). Webhook rotators can be created here."
                        .to_owned(),
                ));
            }
            _ => {
                return Err(ApiError::InvalidParameter(
                    "Give exactly one of Command and WebhookUrl.".to_owned(),
                ));
            }
        };
        if self.is_command_rotator(name)? {
            return Err(ApiError::ResourceExists(format!(
                "A rotator named {name} already exists (a command in the server's \
                 configuration)."
            )));
        }
        self.check_webhook_destination(url).await?;
        let secret = baton_crypto::webhook::new_signing_secret()?;
        let sealed = self
            .root_key
            .seal(secret.expose(), &baton_crypto::signing_secret_aad(name))?;
        let record = baton_store::RotatorRecord {
            name: name.to_owned(),
            target: baton_store::RotatorTarget::Webhook {
                url: url.clone(),
                sealed_signing_secret: sealed,
            },
            timeout_ms: timeout_seconds.unwrap_or(WEBHOOK_TIMEOUT_DEFAULT_SECONDS) * 1000,
            created_at: now_ms(),
        };
        match self.store.insert_rotator(&record).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                return Err(ApiError::ResourceExists(format!(
                    "A rotator named {name} already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let mut wire = wire_rotator(record);
        wire.signing_secret = Some(String::from_utf8_lossy(secret.expose()).into_owned());
        Ok(wire)
    }

    /// Whether `name` is one of the operator's command rotators.
    fn is_command_rotator(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .command_rotators
            .find(name)
            .map_err(ApiError::Internal)?
            .is_some())
    }

    /// The operator's commands, then the webhooks (and commands awaiting the operator's
    /// confirmation) registered through the API.
    pub async fn list_rotators(&self) -> Result<p::ListRotatorsResponse, ApiError> {
        let mut rotators: Vec<p::Rotator> = self
            .command_rotators
            .list()
            .map_err(ApiError::Internal)?
            .into_iter()
            .map(|c| p::Rotator {
                timeout_seconds: Some(c.timeout_seconds() as i64),
                command: Some(c.command.join(" ")),
                name: Some(c.name),
                webhook_url: None,
                signing_secret: None,
                create_date: None,
                source: Some("configuration".to_owned()),
                runnable: Some(true),
            })
            .collect();
        rotators.extend(
            self.store
                .list_rotators()
                .await?
                .into_iter()
                .map(wire_rotator),
        );
        Ok(p::ListRotatorsResponse {
            rotators: Some(rotators),
        })
    }

    pub async fn delete_rotator(&self, req: p::RotatorNameRequest) -> Result<p::Empty, ApiError> {
        let name = required(&req.name, "name")?;
        if self.is_command_rotator(name)? {
            return Err(ApiError::InvalidRequest(format!(
                "The rotator {name} is a command in the server's configuration; the operator \
                 removes it there."
            )));
        }
        if !self.store.delete_rotator(name).await? {
            return Err(ApiError::ResourceNotFound(format!(
                "Baton has no rotator named {name}."
            )));
        }
        Ok(p::Empty {})
    }

    /// Checks AddReplicaRegions: each region must be served by this deployment.
    fn replica_regions(
        &self,
        regions: &[p::ReplicaRegion],
    ) -> Result<Vec<(String, Option<String>)>, ApiError> {
        regions
            .iter()
            .map(|r| {
                let region = r
                    .region
                    .clone()
                    .ok_or_else(|| ApiError::missing("addReplicaRegions.member.region"))?;
                if !self.regions.contains(&region) {
                    return Err(ApiError::InvalidParameter(format!(
                        "Invalid replica region {region}: this Baton serves {}.",
                        self.regions.join(", ")
                    )));
                }
                Ok((region, r.kms_key_id.clone()))
            })
            .collect()
    }

    /// With ForceOverwriteReplicaSecret: deletes standalone secrets that hold `name` in the
    /// replica regions, so the replicas can take their place.
    async fn clear_replica_names(
        &self,
        caller: &Caller,
        name: &str,
        regions: &[(String, Option<String>)],
    ) -> Result<(), ApiError> {
        for (region, _) in regions {
            if let Some(mut existing) = self
                .store
                .find_secret_by_name(&caller.account_id, region, name)
                .await?
            {
                refuse_if_replicated(&existing)?;
                tracing::info!(secret = %existing.arn, "ForceOverwriteReplicaSecret: deleting to make room for a replica");
                existing
                    .outbox
                    .push(crate::events::api_event("DeleteSecret", &existing));
                self.store.delete_secret(&existing).await?;
            }
        }
        Ok(())
    }

    pub async fn replicate_secret_to_regions(
        &self,
        caller: &Caller,
        req: p::ReplicateSecretToRegionsRequest,
    ) -> Result<p::ReplicationResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        let regions = self.replica_regions(
            req.add_replica_regions
                .as_deref()
                .ok_or_else(|| ApiError::missing("addReplicaRegions"))?,
        )?;
        if regions.is_empty() {
            return Err(ApiError::InvalidParameter(
                "AddReplicaRegions must name at least one region.".to_owned(),
            ));
        }
        if req.force_overwrite_replica_secret.unwrap_or(false) {
            let name = self.find_primary(caller, secret_id).await?.name;
            self.clear_replica_names(caller, &name, &regions).await?;
        }
        let now = now_ms();
        let ((), secret) = self
            .update(caller, secret_id, |secret, _| {
                secret.add_replicas(&regions, now)?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        Ok(p::ReplicationResponse {
            replication_status: replication_status(&secret).or(Some(Vec::new())),
            arn: Some(secret.arn),
        })
    }

    pub async fn remove_regions_from_replication(
        &self,
        caller: &Caller,
        req: p::RemoveRegionsFromReplicationRequest,
    ) -> Result<p::ReplicationResponse, ApiError> {
        let regions = req
            .remove_replica_regions
            .clone()
            .ok_or_else(|| ApiError::missing("removeReplicaRegions"))?;
        let now = now_ms();
        let ((), secret) = self
            .update(
                caller,
                required(&req.secret_id, "secretId")?,
                |secret, _| {
                    secret.remove_replicas(&regions, now)?;
                    Ok(Outcome::Changed(()))
                },
            )
            .await?;
        Ok(p::ReplicationResponse {
            replication_status: replication_status(&secret).or(Some(Vec::new())),
            arn: Some(secret.arn),
        })
    }

    /// Promotes the replica in the caller's region to a standalone secret: a new identity and
    /// data key, every version re-sealed for it, and the primary's replica removed, in one
    /// transaction.
    pub async fn stop_replication_to_replica(
        &self,
        caller: &Caller,
        req: p::SecretIdRequest,
    ) -> Result<p::StopReplicationToReplicaResponse, ApiError> {
        let secret_id = required(&req.secret_id, "secretId")?;
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let located = self.locate(caller, secret_id).await?;
            let Some(region) = located.replica_region.clone() else {
                return Err(ApiError::InvalidRequest(
                    "This secret is not a replica. Call StopReplicationToReplica in the region of \
                     the replica you want to promote."
                        .to_owned(),
                ));
            };
            let arn = located.arn();
            let primary = located.secret;
            let now = now_ms();
            let old_key = self.stored_data_key(&primary).await?;
            let new_key = DataKey::generate()?;
            let id = uuid::Uuid::new_v4().to_string();
            let mut versions = primary.versions.clone();
            for version in &mut versions {
                let plaintext = self.open_value(&old_key, &primary, &version.version_id)?;
                version.sealed_value =
                    new_key.seal(plaintext.expose(), &value_aad(&id, &version.version_id))?;
            }
            let replica = primary.replica(&region).cloned();
            let promoted = SecretRecord {
                wrapped_data_key: self.root_key.wrap(&new_key, &id)?,
                id,
                account_id: primary.account_id.clone(),
                region: region.clone(),
                name: primary.name.clone(),
                arn: arn.clone(),
                description: primary.description.clone(),
                kms_key_id: replica.as_ref().and_then(|r| r.kms_key_id.clone()),
                tags: primary.tags.clone(),
                resource_policy: primary.resource_policy.clone(),
                rotation: RotationConfig::default(),
                created_at: now,
                last_changed_at: now,
                last_accessed_at: replica.and_then(|r| r.last_accessed_at),
                deletion: DeletionState::Active,
                versions,
                replicas: Vec::new(),
                rotation_policy: primary.rotation_policy.clone(),
                rotation_state: None,
                revision: 0,
                key: None,
                outbox: vec![],
            };
            let mut primary = primary;
            primary.remove_replicas(std::slice::from_ref(&region), now)?;
            primary
                .outbox
                .push(crate::events::api_event(&caller.operation, &primary));
            let mut promoted = promoted;
            promoted
                .outbox
                .push(crate::events::api_event(&caller.operation, &promoted));
            match self.store.promote_replica(&primary, &promoted).await {
                Ok(_) => {
                    return Ok(p::StopReplicationToReplicaResponse { arn: Some(arn) });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Internal(
            "The secret is being changed by many writers at once; retry the request.".to_owned(),
        ))
    }

    /// Removes secrets whose recovery window has ended. Returns how many were purged.
    pub async fn purge_due(&self, now: i64) -> Result<usize, ApiError> {
        const PURGE_BATCH_MAX: u32 = 100;
        let arns = self
            .store
            .secrets_due_for_purge(now, PURGE_BATCH_MAX)
            .await?;
        for arn in &arns {
            let Some(mut secret) = self.store.find_secret_by_arn(arn).await? else {
                continue;
            };
            // AWS records the end of each version's deletion as a service event.
            let ends = crate::events::version_deletion_events(&secret);
            secret.outbox.extend(ends);
            self.store.delete_secret(&secret).await?;
        }
        let ids = arns;
        self.store
            .delete_events_before(now - self.events_retention.as_millis() as i64)
            .await?;
        // Housekeeping that shares the purge's rhythm.
        self.store
            .delete_consumers_expired(now - crate::consumers::EXPIRED_CONSUMERS_KEPT_MS)
            .await?;
        self.store.changes().sweep();
        Ok(ids.len())
    }
}

/// Checks RotationRules with the schedule parser that the engine uses, so what is accepted is
/// exactly what can run.
fn check_rotation_rules(rules: &p::RotationRules) -> Result<RotationRules, ApiError> {
    if let Some(days) = rules.automatically_after_days
        && !(1..=1000).contains(&days)
    {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value '{days}' at 'rotationRules.automaticallyAfterDays' \
             failed to satisfy constraint: Member must have value between 1 and 1000"
        )));
    }
    let rules = RotationRules {
        automatically_after_days: rules.automatically_after_days,
        duration: rules.duration.clone(),
        schedule_expression: rules.schedule_expression.clone(),
    };
    baton_core::schedule::Schedule::parse(&rules)?;
    Ok(rules)
}

/// A ListSecrets filter, as AWS documents each key: values are OR-ed, and a leading `!` negates
/// a value.
/// - `name`, `tag-key`, `tag-value`: prefix of the attribute, case-sensitive;
/// - `description`: every word of the value is the start of a word of the description, in any
///   order, not case-sensitive ("My Description" matches "Description of my secret");
/// - `primary-region`: prefix of the primary's region, for replicated secrets only (primaries
///   with replicas, and their replicas): a secret that is not replicated has no primary region;
/// - `all`: the value and every attribute (name, description, tag keys and values) are split
///   into words (see [`words`]); any word of the value that starts a word of any attribute
///   matches, not case-sensitive.
struct Filter {
    key: String,
    values: Vec<String>,
}

/// The words of a text as Secrets Manager's search splits it: at every character that is not a
/// letter or digit, at a change from lower to upper case, and between letters and digits.
/// `credsDatabase#892` has the words `creds`, `Database` and `892`. Lower-cased.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev = None;
            continue;
        }
        if let Some(p) = prev {
            let case_change = p.is_lowercase() && c.is_uppercase();
            let kind_change = p.is_numeric() != c.is_numeric();
            if (case_change || kind_change) && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
        prev = Some(c);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

impl Filter {
    fn matches(&self, located: &Located) -> bool {
        let secret = &located.secret;
        self.values
            .iter()
            .any(|value| match value.strip_prefix('!') {
                Some(negated) => !self.matches_one(located, secret, negated),
                None => self.matches_one(located, secret, value),
            })
    }

    fn matches_one(&self, located: &Located, secret: &SecretRecord, value: &str) -> bool {
        match self.key.as_str() {
            "name" => secret.name.starts_with(value),
            "tag-key" => secret.tags.iter().any(|t| t.key.starts_with(value)),
            "tag-value" => secret.tags.iter().any(|t| t.value.starts_with(value)),
            "primary-region" => {
                let replicated = located.replica_region.is_some() || !secret.replicas.is_empty();
                replicated && secret.region.starts_with(value)
            }
            "owning-service" => false,
            "description" => {
                let have = words(secret.description.as_deref().unwrap_or_default());
                let want = words(value);
                !want.is_empty() && want.iter().all(|w| have.iter().any(|h| h.starts_with(w)))
            }
            _ => {
                let mut have = words(&secret.name);
                have.extend(words(secret.description.as_deref().unwrap_or_default()));
                for t in &secret.tags {
                    have.extend(words(&t.key));
                    have.extend(words(&t.value));
                }
                words(value)
                    .iter()
                    .any(|w| have.iter().any(|h| h.starts_with(w)))
            }
        }
    }
}

fn parse_filters(filters: &[p::Filter]) -> Result<Vec<Filter>, ApiError> {
    const KEYS: [&str; 7] = [
        "description",
        "name",
        "tag-key",
        "tag-value",
        "primary-region",
        "owning-service",
        "all",
    ];
    filters
        .iter()
        .map(|f| {
            let key = f
                .key
                .clone()
                .ok_or_else(|| ApiError::missing("filters.member.key"))?;
            if !KEYS.contains(&key.as_str()) {
                return Err(ApiError::Validation(format!(
                    "1 validation error detected: Value '{key}' at 'filters.member.key' failed \
                     to satisfy constraint: Member must satisfy enum value set: [{}]",
                    KEYS.join(", ")
                )));
            }
            let values = f.values.clone().unwrap_or_default();
            if values.is_empty() || values.len() > 10 {
                return Err(ApiError::InvalidParameter(format!(
                    "Filter {key} must have between 1 and 10 values."
                )));
            }
            Ok(Filter { key, values })
        })
        .collect()
}

fn sort_secrets(
    secrets: &mut [Located],
    sort_by: Option<&str>,
    sort_order: Option<&str>,
) -> Result<(), ApiError> {
    match sort_by.unwrap_or("created-date") {
        "created-date" => secrets.sort_by(|a, b| {
            (a.secret.created_at, &a.secret.id).cmp(&(b.secret.created_at, &b.secret.id))
        }),
        "last-changed-date" => secrets.sort_by_key(|l| l.secret.last_changed_at),
        "last-accessed-date" => secrets.sort_by_key(|l| l.secret.last_accessed_at),
        "name" => secrets.sort_by(|a, b| a.secret.name.cmp(&b.secret.name)),
        other => {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'sortBy' failed to satisfy \
                 constraint: Member must satisfy enum value set: [created-date, \
                 last-accessed-date, last-changed-date, name]"
            )));
        }
    }
    match sort_order.unwrap_or("asc") {
        "asc" => {}
        "desc" => secrets.reverse(),
        other => {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'sortOrder' failed to satisfy \
                 constraint: Member must satisfy enum value set: [asc, desc]"
            )));
        }
    }
    Ok(())
}

fn encode_next_token(offset: usize) -> String {
    BASE64.encode(format!("baton-page-v1:{offset}"))
}

fn decode_next_token(token: &Option<String>) -> Result<usize, ApiError> {
    let Some(token) = token else {
        return Ok(0);
    };
    BASE64
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.strip_prefix("baton-page-v1:")
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| ApiError::InvalidNextToken("The NextToken value is invalid.".to_owned()))
}

/// The longest step a rotator may take, as a Lambda function's maximum timeout.
const ROTATOR_TIMEOUT_MAX_SECONDS: i64 = 900;

/// A webhook's step timeout when the request names none.
const WEBHOOK_TIMEOUT_DEFAULT_SECONDS: i64 = 30;

fn wire_rotator(r: baton_store::RotatorRecord) -> p::Rotator {
    let (command, webhook_url) = match r.target {
        baton_store::RotatorTarget::Command(command) => (Some(command), None),
        baton_store::RotatorTarget::Webhook { url, .. } => (None, Some(url)),
    };
    p::Rotator {
        name: Some(r.name),
        // A command registered through the API runs only once the operator confirms it.
        runnable: Some(command.is_none()),
        command,
        webhook_url,
        timeout_seconds: Some(r.timeout_ms / 1000),
        signing_secret: None,
        create_date: Some(seconds(r.created_at)),
        source: Some("api".to_owned()),
    }
}

/// A webhook rotator receives temporary credentials, so its URL must be HTTPS, or plain HTTP
/// only to this machine's loopback, and must not carry credentials of its own.
pub(crate) fn check_webhook_url(url: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| ApiError::InvalidParameter(format!("Invalid WebhookUrl: {why}."));
    if url.len() > 2048 {
        return Err(invalid("it is longer than 2048 characters"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| invalid("it is not an absolute http(s) URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("it is not an absolute http(s) URL"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("it must not contain user information"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost"
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(invalid(
                    "plain http is allowed only to a loopback address; use https, because the \
                     rotator is sent temporary credentials",
                ))
            }
        }
        _ => Err(invalid("it is not an absolute http(s) URL")),
    }
}

impl Baton {
    /// A webhook's URL is well formed and leads to an address this server may connect to.
    pub(crate) async fn check_webhook_destination(&self, url: &str) -> Result<(), ApiError> {
        check_webhook_url(url)?;
        baton_engine::outbound::check_url_resolves(url, self.allow_private_webhooks)
            .await
            .map_err(|why| ApiError::InvalidParameter(format!("Invalid WebhookUrl: {why}.")))
    }
}

/// The rotation policy PutRotationPolicy asks for, checked.
fn rotation_policy_from(
    req: &p::PutRotationPolicyRequest,
) -> Result<baton_core::rotation::RotationPolicy, ApiError> {
    const WEEK_SECONDS: i64 = 7 * 86_400;
    let seconds_in = |value: Option<i64>, member: &str, default_ms: i64| -> Result<i64, ApiError> {
        match value {
            None => Ok(default_ms),
            Some(v) if (0..=WEEK_SECONDS).contains(&v) => Ok(v * 1000),
            Some(v) => Err(ApiError::InvalidParameter(format!(
                "{member} must be between 0 and {WEEK_SECONDS} seconds, got {v}."
            ))),
        }
    };
    let defaults = baton_core::rotation::RotationPolicy::default();
    let attempts = match req.max_attempts {
        None => defaults.step_attempts_max,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::InvalidParameter(format!(
                "MaxAttempts must be between 1 and 100, got {n}."
            )));
        }
    };
    let blackouts = req
        .blackout_windows
        .iter()
        .flatten()
        .map(|w| {
            baton_core::rotation::Blackout::parse(w).ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "Blackout window '{w}' is invalid: use HH:MM-HH:MM in UTC, start and end \
                         different (it may wrap past midnight)."
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = baton_core::rotation::RotationPolicy {
        propagation_delay_ms: seconds_in(
            req.propagation_delay_seconds,
            "PropagationDelaySeconds",
            defaults.propagation_delay_ms,
        )?,
        gate_wait_max_ms: seconds_in(
            req.max_gate_wait_seconds,
            "MaxGateWaitSeconds",
            defaults.gate_wait_max_ms,
        )?,
        retire_grace_ms: seconds_in(
            req.retire_grace_seconds,
            "RetireGraceSeconds",
            defaults.retire_grace_ms,
        )?,
        step_attempts_max: attempts,
        blackouts,
        kill_sessions_after_max_wait: req.kill_sessions_after_max_wait.unwrap_or(false),
        ..defaults
    };
    Ok(policy)
}

/// Sets a secret's (or key's) rotation policy: the schedule and the rotation in flight follow it.
pub(crate) fn apply_rotation_policy(
    secret: &mut SecretRecord,
    policy: &baton_core::rotation::RotationPolicy,
    now: baton_core::Timestamp,
) {
    secret.rotation_policy = Some(policy.clone());
    if secret.rotation.next_rotation_at.is_some() {
        // New blackouts may move the scheduled time.
        let last = secret.rotation.last_rotated_at.unwrap_or(secret.created_at);
        secret.rotation.next_rotation_at = baton_engine::plan_next_rotation(secret, last, now);
    }
    if let Some(state) = secret.rotation_state.as_mut() {
        // The engine applies the new policy at its next drive.
        state.machine.policy = policy.clone();
        state.compute_due_at(now);
    }
}

/// DescribeRotation's answer for a secret or a KMS key's keyring.
pub(crate) fn rotation_description(
    arn: String,
    secret: &SecretRecord,
) -> p::DescribeRotationResponse {
    let policy = secret.rotation_policy.clone().unwrap_or_default();
    let wire_policy = p::RotationPolicy {
        propagation_delay_seconds: Some(policy.propagation_delay_ms / 1000),
        max_gate_wait_seconds: Some(policy.gate_wait_max_ms / 1000),
        retire_grace_seconds: Some(policy.retire_grace_ms / 1000),
        max_attempts: Some(i64::from(policy.step_attempts_max)),
        blackout_windows: Some(policy.blackouts.iter().map(ToString::to_string).collect()),
        kill_sessions_after_max_wait: Some(policy.kill_sessions_after_max_wait),
    };
    let mut response = p::DescribeRotationResponse {
        arn: Some(arn),
        name: Some(secret.name.clone()),
        policy: Some(wire_policy),
        ..Default::default()
    };
    if let Some(state) = &secret.rotation_state {
        use baton_core::rotation::Status;
        let m = &state.machine;
        let reason = match &m.status {
            Status::Stopped { step, reason } => {
                Some(format!("step {} failed: {reason}", step.as_str()))
            }
            _ => None,
        };
        let status = status_name(&m.status);
        response.phase = Some(m.phase.as_str().to_owned());
        response.status = Some(status.to_owned());
        response.status_reason = reason;
        response.version_id = Some(m.version_id.clone());
        response.old_version_id = m.old_version_id.clone();
        response.next_wake_date = state.due_at.map(seconds);
        response.timeline = Some(wire_timeline(state));
        if let Some(gate) = m.waiting_gate().filter(|_| m.status == Status::Running) {
            let name = match gate {
                baton_core::rotation::Gate::Propagation => "propagation",
                baton_core::rotation::Gate::Drain => "drain",
            };
            response.waiting_gate = Some(name.to_owned());
            response.gate_waited_seconds = Some(seconds(now_ms() - m.phase_started_at));
            let prefix = format!("{name} gate waiting: ");
            response.gate_reason = state
                .timeline
                .iter()
                .rev()
                .take_while(|e| !e.event.starts_with("phase "))
                .find_map(|e| e.event.strip_prefix(&prefix).map(str::to_owned));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn baton(dir: &std::path::Path) -> Baton {
        let store = baton_store::SqliteStore::open(&dir.join("baton.db")).unwrap();
        let (root_key, _) = baton_crypto::RootKey::generate().unwrap();
        Baton::new(
            Arc::new(store),
            root_key,
            "123456789012".into(),
            vec!["us-east-1".into()],
        )
    }

    fn caller() -> Caller {
        Caller::admin("123456789012", "us-east-1", "Test")
    }

    #[tokio::test]
    async fn purge_removes_secrets_only_after_their_recovery_window() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        for name in ["doomed", "kept"] {
            baton
                .create_secret(
                    &caller(),
                    p::CreateSecretRequest {
                        name: Some(name.into()),
                        secret_string: Some("v".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        let deleted = baton
            .delete_secret(
                &caller(),
                p::DeleteSecretRequest {
                    secret_id: Some("doomed".into()),
                    recovery_window_in_days: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let purge_at_ms = (deleted.deletion_date.unwrap() * 1000.0) as i64;
        assert_eq!(baton.purge_due(purge_at_ms - 1).await.unwrap(), 0);
        assert_eq!(baton.purge_due(purge_at_ms + 1).await.unwrap(), 1);
        assert!(matches!(
            baton.find_primary(&caller(), "doomed").await,
            Err(ApiError::ResourceNotFound(_))
        ));
        assert!(baton.find_primary(&caller(), "kept").await.is_ok());
        // The purge is in the event log: the end of each version's deletion.
        let events = baton.store.list_events(0, 1_000, None).await.unwrap();
        let purged: Vec<&str> = events
            .iter()
            .filter(|e| e.secret_name == "doomed")
            .map(|e| e.event_name.as_str())
            .collect();
        // (The test caller names its operations "Test".)
        assert_eq!(purged, ["Test", "Test", "EndSecretVersionDelete"]);
    }

    #[tokio::test]
    async fn a_sealed_value_moved_to_another_version_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        let c = caller();
        baton
            .create_secret(
                &c,
                p::CreateSecretRequest {
                    name: Some("s".into()),
                    secret_string: Some("one".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        baton
            .put_secret_value(
                &c,
                p::PutSecretValueRequest {
                    secret_id: Some("s".into()),
                    secret_string: Some("two".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut secret = baton.find_primary(&c, "s").await.unwrap();
        // Swap the sealed values of the two versions, as an attacker with database access could.
        let first = secret.versions[0].sealed_value.clone();
        secret.versions[0].sealed_value = secret.versions[1].sealed_value.clone();
        secret.versions[1].sealed_value = first;
        let data_key = baton.data_key(&secret).unwrap();
        for version in &secret.versions {
            assert!(
                baton
                    .open_value(&data_key, &secret, &version.version_id)
                    .is_err()
            );
        }
    }

    #[test]
    fn webhook_urls_must_be_https_or_loopback_http() {
        for ok in [
            "https://rotator.example/rotate",
            "https://10.0.0.5:8443/x?y=1",
            "http://127.0.0.1:9000/rotate",
            "http://localhost/rotate",
            "http://[::1]:8080/",
        ] {
            assert!(super::check_webhook_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.5/rotate",
            "http://rotator.example/",
            "https://user:pw@rotator.example/",
            "ftp://rotator.example/",
            "/relative",
            "not a url",
        ] {
            assert!(super::check_webhook_url(bad).is_err(), "{bad}");
        }
    }
}

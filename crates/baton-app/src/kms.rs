//! The AWS KMS operations (`TrentService.<Op>`). A KMS key is a secret whose versions hold key
//! material (`SecretRecord::key` set); the Secrets Manager operations never list or read it.
//! The key's description, tags, key policy, rotation schedule and deletion are the secret's,
//! and the rotation engine rotates it through the same phases as a secret, with the
//! `baton-kms` built-in rotator generating the new material.
//!
//! Which version does what follows the staging labels (see `baton_core::rotation::keyring`):
//! AWSCURRENT encrypts, signs and MACs; AWSPENDING, AWSCURRENT and AWSPREVIOUS verify. A
//! symmetric ciphertext names its version, and every version of a symmetric key decrypts for
//! the key's life, as in AWS KMS: retiring a version stops it from verifying, never from
//! decrypting data already written.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_core::{
    DeletionState, KeyMeta, NewVersion, RotationConfig, RotationRules, SecretRecord,
    SecretValueKind, Tag,
};
use baton_crypto::kms::{
    self as ck, KeySpec, KeyUsage, MacAlgorithm, MessageType, RsaEncryption, SigningAlgorithm,
};
use baton_crypto::{CryptoError, DataKey, SecretBytes};
use baton_proto::kms as k;
use serde_json::{Value, json};

mod grants;

use crate::ApiError;
use crate::authz::Target;
use crate::ops::{Outcome, length_error, rotation_description, seconds};
use crate::state::{Baton, Caller, now_ms, value_aad};

const DESCRIPTION_CHARS_MAX: usize = 8192;
const POLICY_CHARS_MAX: usize = 32_768;
const MESSAGE_BYTES_MAX: usize = 4096;
const CIPHERTEXT_BYTES_MAX: usize = 6144;
const DATA_KEY_BYTES_MAX: i64 = 1024;
const ROTATION_DAYS_MIN: i64 = 90;
const ROTATION_DAYS_MAX: i64 = 2560;
const ROTATION_DAYS_DEFAULT: i64 = 365;
const DELETION_DAYS_DEFAULT: i64 = 30;
const LIST_LIMIT_MAX: i64 = 1000;
const UPDATE_ATTEMPTS_MAX: usize = 8;
const TAGS_MAX: usize = 50;
/// Version ids of rotations started by RotateKeyOnDemand begin with this; ListKeyRotations
/// reports them as ON_DEMAND and the others as AUTOMATIC.
const ON_DEMAND_PREFIX: &str = "ondemand-";
/// The AWS managed keys Baton makes on first use: `alias/aws/<service>`.
const AWS_MANAGED_SERVICES: &[&str] = &["secretsmanager"];
/// AWS KMS's quota of on-demand rotations per key, which AWS does not raise.
const ON_DEMAND_ROTATIONS_MAX: usize = 10;
/// RotateKeyOnDemand is refused this close before a scheduled rotation, as in AWS.
const SCHEDULED_CONFLICT_MS: i64 = 20 * 60 * 1000;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// Parsed signing keys kept in memory, at most.
pub(crate) const PARSED_KEYS_MAX: usize = 1024;
/// Symmetric and HMAC key versions whose material stays open in memory.
pub(crate) const OPENED_KEYS_MAX: usize = 4096;

/// A KMS key as the operations see it.
#[derive(Debug)]
pub(crate) struct Key {
    pub secret: SecretRecord,
    meta: KeyMeta,
    spec: KeySpec,
    usage: KeyUsage,
}

impl Key {
    fn from_secret(secret: SecretRecord) -> Result<Option<Key>, ApiError> {
        let Some(meta) = secret.key.clone() else {
            return Ok(None);
        };
        let corrupt = || ApiError::Internal(format!("key {} has unknown metadata", meta.key_id));
        let spec = KeySpec::parse(&meta.spec).ok_or_else(corrupt)?;
        let usage = KeyUsage::parse(&meta.usage).ok_or_else(corrupt)?;
        Ok(Some(Key {
            secret,
            meta,
            spec,
            usage,
        }))
    }

    fn arn(&self) -> &str {
        &self.secret.arn
    }

    fn state(&self) -> &'static str {
        if self.secret.is_scheduled_for_deletion() {
            "PendingDeletion"
        } else if self.meta.enabled {
            "Enabled"
        } else {
            "Disabled"
        }
    }

    /// Refuses a change to a key that is pending deletion.
    fn not_pending_deletion(&self) -> Result<(), ApiError> {
        if self.secret.is_scheduled_for_deletion() {
            return Err(ApiError::KmsInvalidState(format!(
                "{} is pending deletion.",
                self.arn()
            )));
        }
        Ok(())
    }

    /// Refuses a change to an AWS managed key: AWS manages it, and its key policy lets the
    /// account only describe, get and list it.
    fn customer_managed(&self) -> Result<(), ApiError> {
        if self.meta.aws_managed {
            return Err(ApiError::AccessDenied(format!(
                "{} is an AWS managed key: only the service it belongs to uses it, and nobody \
                 can change it. Create a customer managed key (CreateKey) to use or manage \
                 it yourself.",
                self.arn()
            )));
        }
        Ok(())
    }

    /// Refuses a cryptographic operation on a disabled key, one pending deletion, or an AWS
    /// managed key.
    fn usable(&self) -> Result<(), ApiError> {
        self.customer_managed()?;
        self.not_pending_deletion()?;
        if !self.meta.enabled {
            return Err(ApiError::KmsDisabled(format!(
                "{} is disabled.",
                self.arn()
            )));
        }
        Ok(())
    }

    fn needs_usage(&self, usage: KeyUsage, operation: &str) -> Result<(), ApiError> {
        if self.usage == usage {
            return Ok(());
        }
        Err(ApiError::KmsInvalidKeyUsage(format!(
            "{operation} needs a key with KeyUsage {}; {} has KeyUsage {} (KeySpec {}).",
            usage.name(),
            self.arn(),
            self.usage.name(),
            self.spec.name()
        )))
    }

    fn needs_symmetric(&self, operation: &str) -> Result<(), ApiError> {
        if self.spec == KeySpec::SymmetricDefault {
            return Ok(());
        }
        Err(ApiError::KmsInvalidKeyUsage(format!(
            "{operation} needs a symmetric encryption key; {} is {} with KeyUsage {}.",
            self.arn(),
            self.spec.name(),
            self.usage.name()
        )))
    }

    /// The version that encrypts, signs and MACs now: AWSCURRENT.
    fn current_version(&self) -> Result<String, ApiError> {
        baton_core::rotation::keyring(&self.secret)
            .current
            .ok_or_else(|| ApiError::Internal(format!("key {} has no current version", self.arn())))
    }

    /// The versions that verify now, the current one first.
    fn accepted_versions(&self) -> Vec<String> {
        let ring = baton_core::rotation::keyring(&self.secret);
        let mut out: Vec<String> = ring.current.iter().cloned().collect();
        out.extend(
            ring.accepted
                .into_iter()
                .filter(|v| Some(v) != ring.current.as_ref()),
        );
        out
    }

    fn version_state(&self, version_id: &str) -> &'static str {
        let Some(version) = self.secret.version(version_id) else {
            return "unknown";
        };
        if version.labels.contains(baton_core::AWSCURRENT) {
            "current"
        } else if version.labels.contains(baton_core::AWSPENDING) {
            "pending"
        } else if version.labels.contains(baton_core::AWSPREVIOUS) {
            "previous"
        } else {
            "retired"
        }
    }

    fn encryption_algorithms(&self) -> Vec<&'static str> {
        match (self.spec, self.usage) {
            (KeySpec::SymmetricDefault, _) => vec![SYMMETRIC_DEFAULT],
            (s, KeyUsage::EncryptDecrypt) if s.is_rsa() => {
                vec![
                    RsaEncryption::OaepSha1.name(),
                    RsaEncryption::OaepSha256.name(),
                ]
            }
            _ => vec![],
        }
    }

    fn signing_algorithms(&self) -> Vec<&'static str> {
        if self.usage != KeyUsage::SignVerify {
            return vec![];
        }
        self.spec
            .signing_algorithms()
            .iter()
            .map(|a| a.name())
            .collect()
    }

    fn metadata(&self) -> Value {
        let mut m = json!({
            "AWSAccountId": self.secret.account_id,
            "KeyId": self.meta.key_id,
            "Arn": self.arn(),
            "CreationDate": seconds(self.secret.created_at),
            "Enabled": self.state() == "Enabled",
            "Description": self.secret.description.clone().unwrap_or_default(),
            "KeyUsage": self.usage.name(),
            "KeyState": self.state(),
            "Origin": "AWS_KMS",
            "KeyManager": if self.meta.aws_managed { "AWS" } else { "CUSTOMER" },
            "CustomerMasterKeySpec": self.spec.name(),
            "KeySpec": self.spec.name(),
            "MultiRegion": false,
        });
        if let DeletionState::Scheduled { purge_at, .. } = self.secret.deletion {
            m["DeletionDate"] = json!(seconds(purge_at));
        }
        let encryption = self.encryption_algorithms();
        if !encryption.is_empty() {
            m["EncryptionAlgorithms"] = json!(encryption);
        }
        let signing = self.signing_algorithms();
        if !signing.is_empty() {
            m["SigningAlgorithms"] = json!(signing);
        }
        if let Some(mac) = self.spec.mac_algorithm() {
            m["MacAlgorithms"] = json!([mac.name()]);
        }
        if let Ok(current) = self.current_version() {
            m["BatonCurrentKeyVersionId"] = json!(current);
        }
        m
    }
}

pub(crate) fn key_arn(account: &str, region: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{key_id}")
}

fn alias_arn(caller: &Caller, alias_name: &str) -> String {
    format!(
        "arn:aws:kms:{}:{}:{alias_name}",
        caller.region, caller.account_id
    )
}

fn alias_prefix(caller: &Caller) -> String {
    alias_arn(caller, "alias/")
}

/// How a request names a key.
enum KeyRef {
    /// A key ARN in the caller's namespace.
    Key(String),
    /// An alias ARN in the caller's namespace.
    Alias(String),
    /// An ARN of another account or region: nothing this caller can reach.
    Elsewhere(String),
}

fn key_ref(caller: &Caller, text: &str) -> KeyRef {
    if let Some(rest) = text.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let here = parts.len() == 5
            && parts[1] == "kms"
            && parts[2] == caller.region
            && parts[3] == caller.account_id;
        return match parts.get(4) {
            Some(resource) if here && resource.starts_with("alias/") => {
                KeyRef::Alias(text.to_owned())
            }
            Some(resource) if here && resource.starts_with("key/") => KeyRef::Key(text.to_owned()),
            _ => KeyRef::Elsewhere(text.to_owned()),
        };
    }
    if text.starts_with("alias/") {
        KeyRef::Alias(alias_arn(caller, text))
    } else {
        KeyRef::Key(key_arn(&caller.account_id, &caller.region, text))
    }
}

fn decode(value: &Option<String>, member: &str) -> Result<SecretBytes, ApiError> {
    let text = value.as_deref().ok_or_else(|| ApiError::missing(member))?;
    BASE64
        .decode(text)
        .map(SecretBytes::from)
        .map_err(|_| ApiError::Serialization(format!("{member} is not valid base64.")))
}

fn bounded(bytes: &SecretBytes, member: &str, max: usize) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(length_error(member, "greater than or equal to", 1));
    }
    if bytes.len() > max {
        return Err(length_error(member, "less than or equal to", max));
    }
    Ok(())
}

fn context(map: &Option<BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn enum_error(member: &str, value: &str, allowed: &[&str]) -> ApiError {
    ApiError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

fn range_error(member: &str, value: i64, min: i64, max: i64) -> ApiError {
    ApiError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must have value between {min} and {max}"
    ))
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn crypto_error(e: CryptoError) -> ApiError {
    match e {
        CryptoError::DigestLength => ApiError::Validation(
            "Digest is invalid length for the signing algorithm: a DIGEST message must be \
             exactly the digest's length."
                .to_owned(),
        ),
        CryptoError::PlaintextTooLong(max) => ApiError::Validation(format!(
            "The plaintext is longer than the {max} bytes this key and algorithm can encrypt."
        )),
        other => ApiError::from(other),
    }
}

/// The AWS default key policy: the account's IAM policies decide.
fn default_key_policy(account_id: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

fn aws_managed_service_name(service: &str) -> &'static str {
    match service {
        "secretsmanager" => "Secrets Manager",
        _ => "AWS",
    }
}

/// The key policy of an AWS managed key, in AWS's shape: the service may use the key for the
/// account's callers, and the account may describe, get and list it.
fn aws_managed_key_policy(account_id: &str, region: &str, service: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Id": format!("auto-{service}-2"),
        "Statement": [
            {
                "Sid": format!("Allow access through AWS {} for all principals in the account that are authorized to use AWS {}", aws_managed_service_name(service), aws_managed_service_name(service)),
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:CallerAccount": account_id,
                        "kms:ViaService": format!("{service}.{region}.amazonaws.com")
                    }
                }
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*"],
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

fn check_policy(policy: &str) -> Result<(), ApiError> {
    if policy.is_empty() || policy.chars().count() > POLICY_CHARS_MAX {
        return Err(length_error("policy", "between 1 and", POLICY_CHARS_MAX));
    }
    baton_iam::Policy::parse(policy, baton_iam::PolicyKind::Resource)
        .map(drop)
        .map_err(|e| ApiError::MalformedPolicyDocument(format!("The key policy is not valid: {e}")))
}

fn check_tags(tags: &[k::KmsTag]) -> Result<Vec<Tag>, ApiError> {
    if tags.len() > TAGS_MAX {
        return Err(ApiError::KmsTag(format!(
            "A key can have at most {TAGS_MAX} tags; the request has {}.",
            tags.len()
        )));
    }
    tags.iter()
        .map(|t| {
            let key = t.tag_key.clone().unwrap_or_default();
            let value = t
                .tag_value
                .clone()
                .ok_or_else(|| ApiError::KmsTag(format!("Tag {key:?} has no TagValue.")))?;
            if key.is_empty() || key.chars().count() > 128 {
                return Err(ApiError::KmsTag(
                    "A TagKey must be 1 to 128 characters long.".to_owned(),
                ));
            }
            if key.starts_with("aws:") {
                return Err(ApiError::KmsTag(format!(
                    "Tag keys starting with aws: are reserved: {key:?}."
                )));
            }
            if value.chars().count() > 256 {
                return Err(ApiError::KmsTag(format!(
                    "The TagValue of {key:?} is longer than 256 characters."
                )));
            }
            Ok(Tag { key, value })
        })
        .collect()
}

/// Why RotateKeyOnDemand may not rotate `key` now, in AWS's order: a rotation in flight, an
/// automatic rotation due within 20 minutes (ConflictException), or the key's quota of
/// on-demand rotations used up (LimitExceededException).
fn may_rotate_on_demand(key: &SecretRecord, now: baton_core::Timestamp) -> Result<(), ApiError> {
    if key
        .rotation_state
        .as_ref()
        .is_some_and(|s| !s.machine.is_finished())
    {
        return Err(ApiError::KmsConflict(format!(
            "A rotation of {} is in progress; it must finish before another starts.",
            key.arn
        )));
    }
    if key.rotation.enabled
        && key
            .rotation
            .next_rotation_at
            .is_some_and(|at| at <= now + SCHEDULED_CONFLICT_MS)
    {
        return Err(ApiError::KmsConflict(format!(
            "An automatic rotation of {} is scheduled to begin within the next 20 minutes; \
             rotate on demand after it.",
            key.arn
        )));
    }
    let done = key
        .versions
        .iter()
        .filter(|v| v.version_id.starts_with(ON_DEMAND_PREFIX))
        .count();
    if done >= ON_DEMAND_ROTATIONS_MAX {
        return Err(ApiError::LimitExceeded(format!(
            "{} has been rotated on demand {done} times, the most a key can be \
             ({ON_DEMAND_ROTATIONS_MAX}); its automatic rotation still runs.",
            key.arn
        )));
    }
    Ok(())
}

/// An alias name as AWS checks it, in AWS's order and words: the member pattern
/// (`^[a-zA-Z0-9:/_-]+$`), the `alias/` prefix, no `:` after all (the pattern admits it; the
/// service does not), the length, and `alias/aws/` reserved for AWS managed keys
/// (NotAuthorizedException). CreateAlias, UpdateAlias and DeleteAlias all check it.
fn check_alias_name(name: &str) -> Result<(), ApiError> {
    let pattern = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-'));
    if !pattern {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
        )));
    }
    if !name.starts_with("alias/") {
        return Err(ApiError::Validation(
            "Alias must start with the prefix \"alias/\". Please see \
             https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
                .to_owned(),
        ));
    }
    if name.contains(':') {
        return Err(ApiError::Validation(format!(
            "{name} contains invalid characters for an alias"
        )));
    }
    if name.len() > 256 || name.len() <= "alias/".len() {
        return Err(length_error("aliasName", "less than or equal to", 256));
    }
    if name.starts_with("alias/aws/") {
        return Err(ApiError::KmsNotAuthorized(
            "Alias names that begin with alias/aws/ are reserved for AWS managed keys.".to_owned(),
        ));
    }
    Ok(())
}

/// A page of `items` from the offset `marker`, AWS's Limit/Marker/Truncated/NextMarker.
fn page<T>(
    items: Vec<T>,
    limit: Option<i64>,
    marker: &Option<String>,
    default_limit: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = limit.unwrap_or(default_limit);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(range_error("limit", limit, 1, LIST_LIMIT_MAX));
    }
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= items.len())
            .ok_or_else(|| {
                ApiError::KmsInvalidMarker(
                    "The Marker is not one this list returned, or the list changed.".to_owned(),
                )
            })?,
    };
    let end = (start + limit as usize).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((
        items.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}

fn paged(field: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = json!({ field: items, "Truncated": next.is_some() });
    if let Some(next) = next {
        out["NextMarker"] = json!(next);
    }
    out
}

impl Baton {
    async fn find_key_ref(&self, r: &KeyRef) -> Result<Option<Key>, ApiError> {
        let arn = match r {
            KeyRef::Elsewhere(_) => return Ok(None),
            KeyRef::Key(arn) => arn.clone(),
            KeyRef::Alias(alias) => match self.store.find_alias(alias).await? {
                Some(a) => {
                    let (account, region) = alias_namespace(alias);
                    key_arn(account, region, &a.key_id)
                }
                None => {
                    let (account, region) = alias_namespace(alias);
                    let name = alias
                        .rsplit_once(":alias/")
                        .map(|(_, n)| format!("alias/{n}"));
                    return match name {
                        Some(name) if name.starts_with("alias/aws/") => {
                            let caller = Caller::admin(account, region, "AwsManagedKey");
                            self.aws_managed_key(&caller, &name).await
                        }
                        _ => Ok(None),
                    };
                }
            },
        };
        match self.store.find_secret_by_arn(&arn).await? {
            Some(secret) => Key::from_secret(secret),
            None => Ok(None),
        }
    }

    /// A new key's keyring with `material` as its first, current version.
    fn new_key_record(
        &self,
        meta: KeyMeta,
        caller: &Caller,
        description: Option<String>,
        policy: String,
        material: &SecretBytes,
    ) -> Result<SecretRecord, ApiError> {
        let now = now_ms();
        let secret_id = uuid::Uuid::new_v4().to_string();
        let version_id = uuid::Uuid::new_v4().to_string();
        let data_key = DataKey::generate()?;
        let mut secret = SecretRecord {
            arn: key_arn(&caller.account_id, &caller.region, &meta.key_id),
            wrapped_data_key: self.root_key.wrap(&data_key, &secret_id)?,
            // ':' cannot appear in a secret's name, so no secret can take this one.
            name: format!("kms:key/{}", meta.key_id),
            account_id: caller.account_id.clone(),
            region: caller.region.clone(),
            description,
            kms_key_id: None,
            tags: Vec::new(),
            tagged: false,
            resource_policy: Some(policy),
            rotation: RotationConfig {
                lambda_arn: Some(baton_engine::KMS_ROTATOR.to_owned()),
                ..RotationConfig::default()
            },
            created_at: now,
            last_changed_at: now,
            last_accessed_at: None,
            deletion: DeletionState::Active,
            versions: Vec::new(),
            replicas: Vec::new(),
            rotation_policy: None,
            rotation_state: None,
            revision: 0,
            key: Some(meta),
            outbox: vec![],
            id: secret_id,
        };
        let sealed_value = data_key.seal(material.expose(), &value_aad(&secret.id, &version_id))?;
        secret.add_version(
            NewVersion {
                version_id,
                kind: SecretValueKind::Binary,
                sealed_value,
                labels: None,
            },
            now,
        )?;
        Ok(secret)
    }

    /// The AWS managed key of `alias` (`alias/aws/secretsmanager`) in the caller's namespace,
    /// made on first use as AWS makes it: symmetric, with AWS's description and a key policy
    /// that lets the account describe, get and list it, rotating every year. Its id is derived
    /// from the namespace, so nodes that make it at once make the same key and one insert wins.
    async fn aws_managed_key(&self, caller: &Caller, alias: &str) -> Result<Option<Key>, ApiError> {
        let Some(service) = alias
            .strip_prefix("alias/aws/")
            .filter(|s| AWS_MANAGED_SERVICES.contains(s))
        else {
            return Ok(None);
        };
        let digest = baton_crypto::sha256(
            format!("{}\0{}\0{alias}", caller.account_id, caller.region).as_bytes(),
        );
        let key_id = uuid::Builder::from_random_bytes(digest[..16].try_into().expect("16 bytes"))
            .into_uuid()
            .to_string();
        let arn = key_arn(&caller.account_id, &caller.region, &key_id);
        if self.store.find_secret_by_arn(&arn).await?.is_none() {
            let material = ck::generate_key_material(KeySpec::SymmetricDefault)?;
            let mut secret = self.new_key_record(
                KeyMeta {
                    key_id: key_id.clone(),
                    spec: SYMMETRIC_DEFAULT.to_owned(),
                    usage: KeyUsage::EncryptDecrypt.name().to_owned(),
                    enabled: true,
                    aws_managed: true,
                },
                caller,
                Some(format!(
                    "Default key that protects my {} data when no other key is defined",
                    aws_managed_service_name(service)
                )),
                aws_managed_key_policy(&caller.account_id, &caller.region, service),
                &material,
            )?;
            let now = secret.created_at;
            secret.rotation.enabled = true;
            secret.rotation.rules = Some(RotationRules {
                automatically_after_days: Some(ROTATION_DAYS_DEFAULT),
                ..RotationRules::default()
            });
            secret.rotation.next_rotation_at = baton_engine::plan_next_rotation(&secret, now, now);
            // Another request (or node) made it first: the read below finds that one.
            match self.store.insert_secret(&secret).await {
                Ok(_)
                | Err(
                    baton_store::StoreError::NameTaken | baton_store::StoreError::Constraint(_),
                ) => {}
                Err(e) => return Err(e.into()),
            }
            self.engine_wake.notify_one();
        }
        let alias_arn = alias_arn(caller, alias);
        if self.store.find_alias(&alias_arn).await?.is_none() {
            let Some(secret) = self.store.find_secret_by_arn(&arn).await? else {
                return Ok(None);
            };
            let now = now_ms();
            // `false`: another request made the alias first, to the same key.
            self.store
                .create_alias(&baton_store::AliasRecord {
                    alias_arn,
                    alias_name: alias.to_owned(),
                    key_id: key_id.clone(),
                    secret_id: secret.id,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
        }
        match self.store.find_secret_by_arn(&arn).await? {
            Some(secret) => Key::from_secret(secret),
            None => Ok(None),
        }
    }

    /// Finds the key a request names and authorizes `action` on it. An unknown key is
    /// authorized on the ARN it would have, so a denial reads the same whether it exists.
    pub(crate) async fn key_for(
        &self,
        caller: &Caller,
        text: &str,
        action: &str,
    ) -> Result<Key, ApiError> {
        self.key_for_context(caller, text, action, None).await
    }

    /// As [`Baton::key_for`], for an operation that takes an encryption context: a grant's
    /// constraints are checked against it. A grant of the key to the caller can allow what
    /// the policies leave undecided (see [`grants`]).
    pub(crate) async fn key_for_context(
        &self,
        caller: &Caller,
        text: &str,
        action: &str,
        encryption_context: Option<&[(String, String)]>,
    ) -> Result<Key, ApiError> {
        if text.is_empty() {
            return Err(length_error("keyId", "greater than or equal to", 1));
        }
        if text.len() > 2048 {
            return Err(length_error("keyId", "less than or equal to", 2048));
        }
        let r = key_ref(caller, text);
        let found = self.find_key_ref(&r).await?;
        let shown = match (&found, &r) {
            (Some(key), _) => key.arn().to_owned(),
            (None, KeyRef::Key(a) | KeyRef::Alias(a) | KeyRef::Elsewhere(a)) => a.clone(),
        };
        let target = Target {
            action,
            arn: &shown,
            shown: &shown,
            resource_policy: found
                .as_ref()
                .and_then(|k| k.secret.resource_policy.as_deref()),
            tags: found.as_ref().map_or(&[], |k| &k.secret.tags),
        };
        let decision = self.decide(caller, &target)?;
        let grant = match &found {
            Some(key) if Baton::grant_may_allow(decision.as_ref()) => {
                self.allowing_grant(key, caller, action, encryption_context)
                    .await?
            }
            _ => None,
        };
        self.conclude(caller, target, decision, grant.as_deref())?;
        found.ok_or_else(|| match r {
            KeyRef::Alias(a) => alias_not_found(&a),
            KeyRef::Key(a) | KeyRef::Elsewhere(a) => {
                ApiError::KmsNotFound(format!("Key '{a}' does not exist"))
            }
        })
    }

    /// The key a request's required `KeyId` names, authorized for the request's own action.
    async fn key_of(&self, caller: &Caller, key_id: &Option<String>) -> Result<Key, ApiError> {
        self.key_for(caller, required(key_id, "keyId")?, &caller.action)
            .await
    }

    /// As [`Baton::key_of`], for a request with an encryption context (see
    /// [`Baton::key_for_context`]).
    async fn key_of_context(
        &self,
        caller: &Caller,
        key_id: &Option<String>,
        encryption_context: &[(String, String)],
    ) -> Result<Key, ApiError> {
        let text = required(key_id, "keyId")?;
        self.key_for_context(caller, text, &caller.action, Some(encryption_context))
            .await
    }

    /// Applies `change` to a key and saves it, retrying on a concurrent write.
    async fn update_key<T>(
        &self,
        caller: &Caller,
        text: &str,
        mut change: impl FnMut(&mut Key) -> Result<Outcome<T>, ApiError>,
    ) -> Result<(T, Key), ApiError> {
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let mut key = self.key_for(caller, text, &caller.action).await?;
            key.customer_managed()?;
            match change(&mut key)? {
                Outcome::Unchanged(out) => return Ok((out, key)),
                Outcome::Changed(out) => {
                    key.secret.key = Some(key.meta.clone());
                    key.secret
                        .outbox
                        .insert(0, crate::events::api_event(&caller.operation, &key.secret));
                    match self.store.save_secret(&key.secret).await {
                        Ok(revision) => {
                            key.secret.revision = revision;
                            return Ok((out, key));
                        }
                        Err(baton_store::StoreError::Conflict) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ApiError::Internal(
            "The key is being changed by many writers at once; retry the request.".to_owned(),
        ))
    }

    /// Opens a key version's material: unwraps the key's data key, then the version.
    fn open_key_material(&self, key: &Key, version_id: &str) -> Result<SecretBytes, ApiError> {
        if key.secret.version(version_id).is_none() {
            return Err(ApiError::KmsInvalidCiphertext(format!(
                "{} has no key version {version_id}.",
                key.arn()
            )));
        }
        baton_engine::keywrap::key_material(&self.root_key, &key.secret, version_id)
            .map_err(|e| ApiError::Internal(format!("opening key material: {e}")))
    }

    /// A symmetric or HMAC key version's material, opened at most once while it stays in
    /// `opened_keys`: a request then unwraps nothing.
    fn key_material(&self, key: &Key, version_id: &str) -> Result<Arc<SecretBytes>, ApiError> {
        let cache_key = (key.secret.id.clone(), version_id.to_owned());
        if let Some(found) = self.opened_keys.get(&cache_key) {
            return Ok(found);
        }
        let material = Arc::new(self.open_key_material(key, version_id)?);
        self.opened_keys.insert(cache_key, material.clone());
        Ok(material)
    }

    /// A signing key version, parsed once per process (RSA parsing checks the key, which costs
    /// more than a signature).
    fn parsed_key(&self, key: &Key, version_id: &str) -> Result<Arc<ck::ParsedKey>, ApiError> {
        let cache_key = (key.secret.id.clone(), version_id.to_owned());
        if let Some(found) = self.parsed_keys.get(&cache_key) {
            return Ok(found);
        }
        let parsed = Arc::new(ck::ParsedKey::parse(
            key.spec,
            &self.open_key_material(key, version_id)?,
        )?);
        self.parsed_keys.insert(cache_key, parsed.clone());
        Ok(parsed)
    }

    /// The wrapped form of a secret's data key: under the current version of the KMS key its
    /// KmsKeyId names, or under the root key when it names none or the default key.
    pub(crate) async fn wrap_for(
        &self,
        caller: &Caller,
        secret: &SecretRecord,
        data_key: &DataKey,
    ) -> Result<Vec<u8>, ApiError> {
        let Some(id) = secret
            .kms_key_id
            .as_deref()
            .filter(|k| !k.is_empty() && *k != crate::authz::DEFAULT_KMS_KEY)
        else {
            return Ok(self.root_key.wrap(data_key, &secret.id)?);
        };
        let fail = |why: &str| {
            ApiError::EncryptionFailure(format!(
                "Secrets Manager can't encrypt the protected secret text using the KMS key \
                 {id}: {why}."
            ))
        };
        let key = self
            .find_key_ref(&key_ref(caller, id))
            .await?
            .ok_or_else(|| fail("there is no such key in this region"))?;
        if key.state() != "Enabled" {
            return Err(fail(&format!("the key is {}", key.state())));
        }
        if key.spec != KeySpec::SymmetricDefault {
            return Err(fail("it is not a symmetric encryption key"));
        }
        baton_engine::keywrap::wrap_under(&self.root_key, &key.secret, &secret.id, data_key)
            .map_err(|e| ApiError::Internal(format!("wrapping a data key: {e}")))
    }

    pub async fn kms_create_key(
        &self,
        caller: &Caller,
        req: k::CreateKeyRequest,
    ) -> Result<Value, ApiError> {
        let spec_name = req
            .key_spec
            .as_deref()
            .or(req.customer_master_key_spec.as_deref())
            .unwrap_or(SYMMETRIC_DEFAULT);
        let spec = KeySpec::parse(spec_name)
            .ok_or_else(|| enum_error("keySpec", spec_name, &KeySpec::ALL.map(KeySpec::name)))?;
        let usage = match &req.key_usage {
            None => spec.usages()[0],
            Some(name) => KeyUsage::parse(name)
                .ok_or_else(|| enum_error("keyUsage", name, &KeyUsage::ALL.map(KeyUsage::name)))?,
        };
        if !spec.usages().contains(&usage) {
            return Err(ApiError::Validation(format!(
                "KeyUsage {} is not compatible with KeySpec {}; it allows {}.",
                usage.name(),
                spec.name(),
                spec.usages()
                    .iter()
                    .map(|u| u.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(origin) = &req.origin
            && origin != "AWS_KMS"
        {
            return Err(ApiError::KmsUnsupportedOperation(format!(
                "Baton generates all key material itself: Origin must be AWS_KMS, not {origin}."
            )));
        }
        if req.multi_region == Some(true) {
            return Err(ApiError::KmsUnsupportedOperation(
                "Baton does not create multi-Region keys.".to_owned(),
            ));
        }
        if let Some(d) = &req.description
            && d.chars().count() > DESCRIPTION_CHARS_MAX
        {
            return Err(length_error(
                "description",
                "less than or equal to",
                DESCRIPTION_CHARS_MAX,
            ));
        }
        if let Some(policy) = &req.policy {
            check_policy(policy)?;
        }
        let tags = check_tags(req.tags.as_deref().unwrap_or_default())?;
        let material = tokio::task::spawn_blocking(move || ck::generate_key_material(spec))
            .await
            .map_err(|e| ApiError::Internal(format!("key generation task failed: {e}")))??;
        let key_id = uuid::Uuid::new_v4().to_string();
        let mut secret = self.new_key_record(
            KeyMeta {
                key_id,
                spec: spec.name().to_owned(),
                usage: usage.name().to_owned(),
                enabled: true,
                aws_managed: false,
            },
            caller,
            req.description.clone(),
            req.policy
                .clone()
                .unwrap_or_else(|| default_key_policy(&caller.account_id)),
            &material,
        )?;
        secret.tag(tags, secret.created_at)?;
        secret
            .outbox
            .push(crate::events::api_event(&caller.operation, &secret));
        self.store.insert_secret(&secret).await?;
        let key = Key::from_secret(secret)?
            .ok_or_else(|| ApiError::Internal("created key lost its metadata".to_owned()))?;
        Ok(json!({ "KeyMetadata": key.metadata() }))
    }

    pub async fn kms_describe_key(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        Ok(json!({ "KeyMetadata": key.metadata() }))
    }

    pub async fn kms_list_keys(
        &self,
        caller: &Caller,
        req: k::ListRequest,
    ) -> Result<Value, ApiError> {
        let keys: Vec<Value> = self
            .store
            .list_secrets(&caller.account_id, &caller.region)
            .await?
            .into_iter()
            .filter_map(|s| {
                let meta = s.key?;
                Some(json!({ "KeyId": meta.key_id, "KeyArn": s.arn }))
            })
            .collect();
        let (keys, next) = page(keys, req.limit, &req.marker, 100)?;
        Ok(paged("Keys", keys, next))
    }

    /// UpdateKeyDescription: replaces the description (Terraform's `aws_kms_key` calls it on
    /// every change of `description`). An empty description clears it.
    pub async fn kms_update_key_description(
        &self,
        caller: &Caller,
        req: k::UpdateKeyDescriptionRequest,
    ) -> Result<Value, ApiError> {
        let description = req
            .description
            .ok_or_else(|| ApiError::missing("description"))?;
        if description.chars().count() > DESCRIPTION_CHARS_MAX {
            return Err(length_error(
                "description",
                "less than or equal to",
                DESCRIPTION_CHARS_MAX,
            ));
        }
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.not_pending_deletion()?;
            let new = (!description.is_empty()).then(|| description.clone());
            if key.secret.description == new {
                return Ok(Outcome::Unchanged(()));
            }
            key.secret.description = new;
            key.secret.last_changed_at = now_ms();
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    /// EnableKey (`enable`) and DisableKey.
    pub async fn kms_set_enabled(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
        enable: bool,
    ) -> Result<Value, ApiError> {
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.not_pending_deletion()?;
            if key.meta.enabled == enable {
                return Ok(Outcome::Unchanged(()));
            }
            key.meta.enabled = enable;
            key.secret.last_changed_at = now_ms();
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn kms_schedule_key_deletion(
        &self,
        caller: &Caller,
        req: k::ScheduleKeyDeletionRequest,
    ) -> Result<Value, ApiError> {
        let days = req.pending_window_in_days.unwrap_or(DELETION_DAYS_DEFAULT);
        if !(7..=30).contains(&days) {
            return Err(range_error("pendingWindowInDays", days, 7, 30));
        }
        let ((), key) = self
            .update_key(caller, required(&req.key_id, "keyId")?, |key| {
                key.not_pending_deletion()?;
                key.secret.schedule_deletion(days, now_ms())?;
                Ok(Outcome::Changed(()))
            })
            .await?;
        let deletion_date = match key.secret.deletion {
            DeletionState::Scheduled { purge_at, .. } => Some(seconds(purge_at)),
            DeletionState::Active => None,
        };
        Ok(json!({
            "KeyId": key.arn(),
            "DeletionDate": deletion_date,
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }))
    }

    pub async fn kms_cancel_key_deletion(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        let ((), key) = self
            .update_key(caller, required(&req.key_id, "keyId")?, |key| {
                if !key.secret.is_scheduled_for_deletion() {
                    return Err(ApiError::KmsInvalidState(format!(
                        "{} is not pending deletion.",
                        key.arn()
                    )));
                }
                key.secret.restore(now_ms())?;
                // As in AWS, a key whose deletion is cancelled comes back disabled.
                key.meta.enabled = false;
                Ok(Outcome::Changed(()))
            })
            .await?;
        Ok(json!({ "KeyId": key.arn() }))
    }

    pub async fn kms_create_alias(
        &self,
        caller: &Caller,
        req: k::AliasRequest,
    ) -> Result<Value, ApiError> {
        let name = required(&req.alias_name, "aliasName")?;
        check_alias_name(name)?;
        let target = required(&req.target_key_id, "targetKeyId")?;
        if target.starts_with("alias/") || target.contains(":alias/") {
            return Err(ApiError::Validation(
                "TargetKeyId must be a key id or key ARN, not an alias.".to_owned(),
            ));
        }
        let alias_arn = alias_arn(caller, name);
        self.authorize(caller, Target::named(&caller.action, &alias_arn))?;
        let key = self.key_for(caller, target, &caller.action).await?;
        key.customer_managed()?;
        key.not_pending_deletion()?;
        let now = now_ms();
        let created = self
            .store
            .create_alias(&baton_store::AliasRecord {
                alias_arn: alias_arn.clone(),
                alias_name: name.to_owned(),
                key_id: key.meta.key_id.clone(),
                secret_id: key.secret.id.clone(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        if !created {
            return Err(ApiError::KmsAlreadyExists(format!(
                "An alias with the name {alias_arn} already exists"
            )));
        }
        Ok(json!({}))
    }

    pub async fn kms_update_alias(
        &self,
        caller: &Caller,
        req: k::AliasRequest,
    ) -> Result<Value, ApiError> {
        let name = required(&req.alias_name, "aliasName")?;
        check_alias_name(name)?;
        let target = required(&req.target_key_id, "targetKeyId")?;
        let alias_arn = alias_arn(caller, name);
        self.authorize(caller, Target::named(&caller.action, &alias_arn))?;
        let Some(mut alias) = self.store.find_alias(&alias_arn).await? else {
            return Err(alias_not_found(&alias_arn));
        };
        let old = self
            .find_key_ref(&KeyRef::Key(key_arn(
                &caller.account_id,
                &caller.region,
                &alias.key_id,
            )))
            .await?;
        let new = self.key_for(caller, target, &caller.action).await?;
        new.customer_managed()?;
        if let Some(old) = old
            && (old.usage != new.usage || old.spec.is_asymmetric() != new.spec.is_asymmetric())
        {
            return Err(ApiError::Validation(format!(
                "{} points at a {} key with KeyUsage {}; the new target {} is {} with KeyUsage \
                 {}. An alias moves only between keys of the same type and usage.",
                name,
                old.spec.name(),
                old.usage.name(),
                new.arn(),
                new.spec.name(),
                new.usage.name()
            )));
        }
        alias.key_id = new.meta.key_id.clone();
        alias.secret_id = new.secret.id.clone();
        alias.updated_at = now_ms();
        if !self.store.update_alias(&alias).await? {
            return Err(alias_not_found(&alias_arn));
        }
        Ok(json!({}))
    }

    pub async fn kms_delete_alias(
        &self,
        caller: &Caller,
        req: k::AliasRequest,
    ) -> Result<Value, ApiError> {
        let name = required(&req.alias_name, "aliasName")?;
        check_alias_name(name)?;
        let alias_arn = alias_arn(caller, name);
        self.authorize(caller, Target::named(&caller.action, &alias_arn))?;
        if !self.store.delete_alias(&alias_arn).await? {
            return Err(alias_not_found(&alias_arn));
        }
        Ok(json!({}))
    }

    pub async fn kms_list_aliases(
        &self,
        caller: &Caller,
        req: k::ListRequest,
    ) -> Result<Value, ApiError> {
        let only = match &req.key_id {
            Some(text) => Some(
                self.key_for(caller, text, &caller.action)
                    .await?
                    .meta
                    .key_id,
            ),
            None => None,
        };
        let stored = self.store.list_aliases(&alias_prefix(caller)).await?;
        // As in AWS, the predefined aliases of AWS managed keys are listed before their key
        // exists, without a TargetKeyId.
        let predefined: Vec<Value> = AWS_MANAGED_SERVICES
            .iter()
            .map(|service| format!("alias/aws/{service}"))
            .filter(|name| only.is_none() && !stored.iter().any(|a| a.alias_name == *name))
            .map(|name| json!({ "AliasArn": alias_arn(caller, &name), "AliasName": name }))
            .collect();
        let aliases: Vec<Value> = stored
            .into_iter()
            .filter(|a| only.as_ref().is_none_or(|id| *id == a.key_id))
            .map(|a| {
                json!({
                    "AliasName": a.alias_name,
                    "AliasArn": a.alias_arn,
                    "TargetKeyId": a.key_id,
                    "CreationDate": seconds(a.created_at),
                    "LastUpdatedDate": seconds(a.updated_at),
                })
            })
            .chain(predefined)
            .collect();
        let (aliases, next) = page(aliases, req.limit, &req.marker, 50)?;
        Ok(paged("Aliases", aliases, next))
    }

    pub async fn kms_tag_resource(
        &self,
        caller: &Caller,
        req: k::TagResourceRequest,
    ) -> Result<Value, ApiError> {
        let tags = check_tags(req.tags.as_deref().unwrap_or_default())?;
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.secret
                .tag(tags.clone(), now_ms())
                .map_err(|e| ApiError::KmsTag(e.to_string()))?;
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn kms_untag_resource(
        &self,
        caller: &Caller,
        req: k::UntagResourceRequest,
    ) -> Result<Value, ApiError> {
        let keys = req.tag_keys.clone().unwrap_or_default();
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.secret.untag(&keys, now_ms());
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn kms_list_resource_tags(
        &self,
        caller: &Caller,
        req: k::ListRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let tags: Vec<Value> = key
            .secret
            .tags
            .iter()
            .map(|t| json!({ "TagKey": t.key, "TagValue": t.value }))
            .collect();
        let (tags, next) = page(tags, req.limit, &req.marker, 50)?;
        Ok(paged("Tags", tags, next))
    }

    pub async fn kms_get_key_policy(
        &self,
        caller: &Caller,
        req: k::KeyPolicyRequest,
    ) -> Result<Value, ApiError> {
        check_policy_name(&req.policy_name)?;
        let key = self.key_of(caller, &req.key_id).await?;
        Ok(json!({
            "Policy": key.secret.resource_policy.clone().unwrap_or_default(),
            "PolicyName": "default",
        }))
    }

    pub async fn kms_put_key_policy(
        &self,
        caller: &Caller,
        req: k::KeyPolicyRequest,
    ) -> Result<Value, ApiError> {
        check_policy_name(&req.policy_name)?;
        let policy = required(&req.policy, "policy")?.to_owned();
        check_policy(&policy)?;
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.secret.resource_policy = Some(policy.clone());
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn kms_list_key_policies(
        &self,
        caller: &Caller,
        req: k::ListRequest,
    ) -> Result<Value, ApiError> {
        self.key_of(caller, &req.key_id).await?;
        Ok(json!({ "PolicyNames": ["default"], "Truncated": false }))
    }

    pub async fn kms_encrypt(
        &self,
        caller: &Caller,
        req: k::EncryptRequest,
    ) -> Result<Value, ApiError> {
        let plaintext = decode(&req.plaintext, "plaintext")?;
        bounded(&plaintext, "plaintext", MESSAGE_BYTES_MAX)?;
        let ctx = context(&req.encryption_context);
        let key = self.key_of_context(caller, &req.key_id, &ctx).await?;
        let (blob, version, alg) = self.encrypt_with(
            &key,
            &plaintext,
            &ctx,
            req.encryption_algorithm.as_deref(),
            "Encrypt",
        )?;
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": key.arn(),
            "EncryptionAlgorithm": alg,
            "BatonKeyVersionId": version,
        }))
    }

    /// Encrypts under the key's current version: a versioned blob for a symmetric key, raw
    /// RSAES-OAEP for an RSA key.
    fn encrypt_with(
        &self,
        key: &Key,
        plaintext: &SecretBytes,
        ctx: &[(String, String)],
        algorithm: Option<&str>,
        operation: &str,
    ) -> Result<(Vec<u8>, String, &'static str), ApiError> {
        key.usable()?;
        key.needs_usage(KeyUsage::EncryptDecrypt, operation)?;
        let version = key.current_version()?;
        let material = self.key_material(key, &version)?;
        if key.spec == KeySpec::SymmetricDefault {
            if let Some(alg) = algorithm
                && alg != SYMMETRIC_DEFAULT
            {
                return Err(ApiError::KmsInvalidKeyUsage(format!(
                    "The encryption algorithm {alg} is not valid for the symmetric key {}; use \
                     SYMMETRIC_DEFAULT.",
                    key.arn()
                )));
            }
            let blob = ck::encrypt_blob(
                &material,
                &key.meta.key_id,
                &version,
                ctx,
                plaintext.expose(),
            )?;
            return Ok((blob, version, SYMMETRIC_DEFAULT));
        }
        let alg = rsa_algorithm(key, algorithm)?;
        if !ctx.is_empty() {
            return Err(ApiError::Validation(
                "EncryptionContext is not supported with asymmetric keys.".to_owned(),
            ));
        }
        let blob = ck::rsa_encrypt(&material, alg, plaintext.expose()).map_err(crypto_error)?;
        Ok((blob, version, alg.name()))
    }

    /// Decrypts a ciphertext blob: a symmetric one names its key and version; an RSA one needs
    /// the key named, and is tried with each of its versions, newest first.
    async fn decrypt_blob(
        &self,
        caller: &Caller,
        blob: &SecretBytes,
        key_id: Option<&str>,
        ctx: &[(String, String)],
        algorithm: Option<&str>,
        action: &str,
    ) -> Result<(SecretBytes, Key, String, &'static str), ApiError> {
        bounded(blob, "ciphertextBlob", CIPHERTEXT_BYTES_MAX)?;
        let symmetric = algorithm.is_none_or(|a| a == SYMMETRIC_DEFAULT);
        if !symmetric {
            let key_id = key_id.ok_or_else(|| {
                ApiError::Validation(
                    "KeyId is required to decrypt with an asymmetric encryption algorithm."
                        .to_owned(),
                )
            })?;
            let key = self.key_for(caller, key_id, action).await?;
            key.usable()?;
            key.needs_usage(KeyUsage::EncryptDecrypt, "Decrypt")?;
            let alg = rsa_algorithm(&key, algorithm)?;
            let mut versions: Vec<_> = key.secret.versions.iter().collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.created_at));
            for v in versions {
                let material = self.key_material(&key, &v.version_id)?;
                if let Ok(plain) = ck::rsa_decrypt(&material, alg, blob.expose()) {
                    let version = v.version_id.clone();
                    return Ok((plain, key, version, alg.name()));
                }
            }
            return Err(invalid_ciphertext());
        }
        let header = ck::parse_blob(blob.expose()).map_err(|_| invalid_ciphertext())?;
        let named = key_arn(&caller.account_id, &caller.region, &header.key_id);
        let key = self
            .key_for_context(caller, &named, action, Some(ctx))
            .await?;
        if let Some(requested) = key_id {
            let requested = self.find_key_ref(&key_ref(caller, requested)).await?;
            if requested.is_none_or(|r| r.meta.key_id != key.meta.key_id) {
                return Err(ApiError::KmsIncorrectKey(
                    "The key ID in the request does not identify the KMS key that encrypted \
                     this ciphertext."
                        .to_owned(),
                ));
            }
        }
        key.usable()?;
        key.needs_symmetric("Decrypt")?;
        let material = self.key_material(&key, &header.version_id)?;
        let plain =
            ck::decrypt_blob(&material, blob.expose(), ctx).map_err(|_| invalid_ciphertext())?;
        Ok((plain, key, header.version_id, SYMMETRIC_DEFAULT))
    }

    pub async fn kms_decrypt(
        &self,
        caller: &Caller,
        req: k::DecryptRequest,
    ) -> Result<Value, ApiError> {
        let blob = decode(&req.ciphertext_blob, "ciphertextBlob")?;
        let (plain, key, version, alg) = self
            .decrypt_blob(
                caller,
                &blob,
                req.key_id.as_deref(),
                &context(&req.encryption_context),
                req.encryption_algorithm.as_deref(),
                &caller.action,
            )
            .await?;
        Ok(json!({
            "KeyId": key.arn(),
            "Plaintext": b64(plain.expose()),
            "EncryptionAlgorithm": alg,
            "BatonKeyVersionId": version,
        }))
    }

    pub async fn kms_re_encrypt(
        &self,
        caller: &Caller,
        req: k::ReEncryptRequest,
    ) -> Result<Value, ApiError> {
        let blob = decode(&req.ciphertext_blob, "ciphertextBlob")?;
        let destination = required(&req.destination_key_id, "destinationKeyId")?;
        let (plain, source, _, source_alg) = self
            .decrypt_blob(
                caller,
                &blob,
                req.source_key_id.as_deref(),
                &context(&req.source_encryption_context),
                req.source_encryption_algorithm.as_deref(),
                "kms:ReEncryptFrom",
            )
            .await?;
        let destination_ctx = context(&req.destination_encryption_context);
        let target = self
            .key_for_context(
                caller,
                destination,
                "kms:ReEncryptTo",
                Some(&destination_ctx),
            )
            .await?;
        let (blob, version, alg) = self.encrypt_with(
            &target,
            &plain,
            &destination_ctx,
            req.destination_encryption_algorithm.as_deref(),
            "ReEncrypt",
        )?;
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "SourceKeyId": source.arn(),
            "KeyId": target.arn(),
            "SourceEncryptionAlgorithm": source_alg,
            "DestinationEncryptionAlgorithm": alg,
            "BatonKeyVersionId": version,
        }))
    }

    /// GenerateDataKey, and GenerateDataKeyWithoutPlaintext when `with_plaintext` is false.
    pub async fn kms_generate_data_key(
        &self,
        caller: &Caller,
        req: k::GenerateDataKeyRequest,
        with_plaintext: bool,
    ) -> Result<Value, ApiError> {
        let len = match (&req.key_spec, req.number_of_bytes) {
            (Some(spec), None) => match spec.as_str() {
                "AES_256" => 32,
                "AES_128" => 16,
                other => return Err(enum_error("keySpec", other, &["AES_256", "AES_128"])),
            },
            (None, Some(n)) if (1..=DATA_KEY_BYTES_MAX).contains(&n) => n as usize,
            (None, Some(n)) => return Err(range_error("numberOfBytes", n, 1, DATA_KEY_BYTES_MAX)),
            _ => {
                return Err(ApiError::Validation(
                    "Please specify either number of bytes or key spec.".to_owned(),
                ));
            }
        };
        let ctx = context(&req.encryption_context);
        let key = self.key_of_context(caller, &req.key_id, &ctx).await?;
        key.usable()?;
        key.needs_symmetric("GenerateDataKey")?;
        let mut bytes = vec![0u8; len];
        baton_crypto::fill_random(&mut bytes)?;
        let data_key = SecretBytes::from(bytes);
        let (blob, version, _) =
            self.encrypt_with(&key, &data_key, &ctx, None, "GenerateDataKey")?;
        let mut out = json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": key.arn(),
            "BatonKeyVersionId": version,
        });
        if with_plaintext {
            out["Plaintext"] = json!(b64(data_key.expose()));
        }
        Ok(out)
    }

    /// GenerateDataKeyPair, and GenerateDataKeyPairWithoutPlaintext.
    pub async fn kms_generate_data_key_pair(
        &self,
        caller: &Caller,
        req: k::GenerateDataKeyPairRequest,
        with_plaintext: bool,
    ) -> Result<Value, ApiError> {
        let pair_names = [
            "RSA_2048",
            "RSA_3072",
            "RSA_4096",
            "ECC_NIST_P256",
            "ECC_NIST_P384",
            "ECC_NIST_P521",
            "ECC_SECG_P256K1",
        ];
        let spec_name = required(&req.key_pair_spec, "keyPairSpec")?;
        let spec = KeySpec::parse(spec_name)
            .filter(|s| s.is_asymmetric())
            .ok_or_else(|| enum_error("keyPairSpec", spec_name, &pair_names))?;
        let ctx = context(&req.encryption_context);
        let key = self.key_of_context(caller, &req.key_id, &ctx).await?;
        key.usable()?;
        key.needs_symmetric("GenerateDataKeyPair")?;
        let private = tokio::task::spawn_blocking(move || ck::generate_key_material(spec))
            .await
            .map_err(|e| ApiError::Internal(format!("key generation task failed: {e}")))??;
        let public = ck::public_key_der(spec, &private)?;
        let (blob, version, _) =
            self.encrypt_with(&key, &private, &ctx, None, "GenerateDataKeyPair")?;
        let mut out = json!({
            "PrivateKeyCiphertextBlob": b64(&blob),
            "PublicKey": b64(&public),
            "KeyId": key.arn(),
            "KeyPairSpec": spec.name(),
            "BatonKeyVersionId": version,
        });
        if with_plaintext {
            out["PrivateKeyPlaintext"] = json!(b64(private.expose()));
        }
        Ok(out)
    }

    fn signing_request(
        key: &Key,
        req: &k::SignRequest,
        operation: &str,
    ) -> Result<(SecretBytes, SigningAlgorithm, MessageType), ApiError> {
        let message = decode(&req.message, "message")?;
        bounded(&message, "message", MESSAGE_BYTES_MAX)?;
        let alg_name = required(&req.signing_algorithm, "signingAlgorithm")?;
        let alg = SigningAlgorithm::parse(alg_name).ok_or_else(|| {
            enum_error(
                "signingAlgorithm",
                alg_name,
                &SigningAlgorithm::ALL.map(SigningAlgorithm::name),
            )
        })?;
        let kind = match req.message_type.as_deref() {
            None | Some("RAW") => MessageType::Raw,
            Some("DIGEST") => MessageType::Digest,
            Some(other) => return Err(enum_error("messageType", other, &["RAW", "DIGEST"])),
        };
        key.usable()?;
        key.needs_usage(KeyUsage::SignVerify, operation)?;
        if !key.spec.signing_algorithms().contains(&alg) {
            return Err(ApiError::KmsInvalidKeyUsage(format!(
                "The signing algorithm {} is not valid for {} ({}); use one of {}.",
                alg.name(),
                key.arn(),
                key.spec.name(),
                key.signing_algorithms().join(", ")
            )));
        }
        Ok((message, alg, kind))
    }

    pub async fn kms_sign(&self, caller: &Caller, req: k::SignRequest) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let (message, alg, kind) = Self::signing_request(&key, &req, "Sign")?;
        let version = match &req.baton_key_version_id {
            None => key.current_version()?,
            Some(v) => match key.version_state(v) {
                "current" | "previous" => v.clone(),
                state => {
                    return Err(ApiError::KmsInvalidState(format!(
                        "Key version {v} of {} is {state}: only the current version ({}) or \
                         the previous one signs.",
                        key.arn(),
                        key.current_version()?
                    )));
                }
            },
        };
        let signature = self
            .parsed_key(&key, &version)?
            .sign(alg, message.expose(), kind)
            .map_err(crypto_error)?;
        Ok(json!({
            "KeyId": key.arn(),
            "Signature": b64(&signature),
            "SigningAlgorithm": alg.name(),
            "BatonKeyVersionId": version,
        }))
    }

    pub async fn kms_verify(
        &self,
        caller: &Caller,
        req: k::SignRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let (message, alg, kind) = Self::signing_request(&key, &req, "Verify")?;
        let signature = decode(&req.signature, "signature")?;
        bounded(&signature, "signature", 6144)?;
        for version in key.accepted_versions() {
            if self
                .parsed_key(&key, &version)?
                .verify(alg, message.expose(), kind, signature.expose())
                .map_err(crypto_error)?
            {
                return Ok(json!({
                    "KeyId": key.arn(),
                    "SignatureValid": true,
                    "SigningAlgorithm": alg.name(),
                    "BatonKeyVersionId": version,
                }));
            }
        }
        Err(ApiError::KmsInvalidSignature(format!(
            "The signature does not verify with any version of {} accepted now.",
            key.arn()
        )))
    }

    pub async fn kms_get_public_key(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        key.usable()?;
        if !key.spec.is_asymmetric() {
            return Err(ApiError::KmsUnsupportedOperation(format!(
                "{} is a {} key: it has no public key.",
                key.arn(),
                key.spec.name()
            )));
        }
        let version = key.current_version()?;
        let parsed = self.parsed_key(&key, &version)?;
        let public = parsed.public_key_der();
        // A public key held outside Baton: the next rotation's gates allow for it.
        self.note_plain_read(caller, &key.secret).await;
        let mut out = json!({
            "KeyId": key.arn(),
            "PublicKey": b64(public),
            "CustomerMasterKeySpec": key.spec.name(),
            "KeySpec": key.spec.name(),
            "KeyUsage": key.usage.name(),
            "BatonKeyVersionId": version,
        });
        if key.usage == KeyUsage::SignVerify {
            out["SigningAlgorithms"] = json!(key.signing_algorithms());
        } else {
            out["EncryptionAlgorithms"] = json!(key.encryption_algorithms());
        }
        Ok(out)
    }

    fn mac_request(
        key: &Key,
        req: &k::MacRequest,
        operation: &str,
    ) -> Result<(SecretBytes, MacAlgorithm), ApiError> {
        let message = decode(&req.message, "message")?;
        bounded(&message, "message", MESSAGE_BYTES_MAX)?;
        let alg_name = required(&req.mac_algorithm, "macAlgorithm")?;
        let alg = MacAlgorithm::parse(alg_name).ok_or_else(|| {
            enum_error(
                "macAlgorithm",
                alg_name,
                &MacAlgorithm::ALL.map(MacAlgorithm::name),
            )
        })?;
        key.usable()?;
        key.needs_usage(KeyUsage::GenerateVerifyMac, operation)?;
        if key.spec.mac_algorithm() != Some(alg) {
            return Err(ApiError::KmsInvalidKeyUsage(format!(
                "The MAC algorithm {} is not valid for {} ({}).",
                alg.name(),
                key.arn(),
                key.spec.name()
            )));
        }
        Ok((message, alg))
    }

    pub async fn kms_generate_mac(
        &self,
        caller: &Caller,
        req: k::MacRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let (message, alg) = Self::mac_request(&key, &req, "GenerateMac")?;
        let version = key.current_version()?;
        let tag = ck::mac(&*self.key_material(&key, &version)?, alg, message.expose());
        Ok(json!({
            "Mac": b64(&tag),
            "MacAlgorithm": alg.name(),
            "KeyId": key.arn(),
            "BatonKeyVersionId": version,
        }))
    }

    pub async fn kms_verify_mac(
        &self,
        caller: &Caller,
        req: k::MacRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let (message, alg) = Self::mac_request(&key, &req, "VerifyMac")?;
        let tag = decode(&req.mac, "mac")?;
        for version in key.accepted_versions() {
            let material = self.key_material(&key, &version)?;
            if ck::verify_mac(&material, alg, message.expose(), tag.expose()) {
                return Ok(json!({
                    "KeyId": key.arn(),
                    "MacValid": true,
                    "MacAlgorithm": alg.name(),
                    "BatonKeyVersionId": version,
                }));
            }
        }
        Err(ApiError::KmsInvalidMac(format!(
            "The MAC does not verify with any version of {} accepted now.",
            key.arn()
        )))
    }

    pub fn kms_generate_random(&self, req: k::GenerateRandomRequest) -> Result<Value, ApiError> {
        let n = req
            .number_of_bytes
            .ok_or_else(|| ApiError::missing("numberOfBytes"))?;
        if !(1..=DATA_KEY_BYTES_MAX).contains(&n) {
            return Err(range_error("numberOfBytes", n, 1, DATA_KEY_BYTES_MAX));
        }
        let mut bytes = vec![0u8; n as usize];
        baton_crypto::fill_random(&mut bytes)?;
        let bytes = SecretBytes::from(bytes);
        Ok(json!({ "Plaintext": b64(bytes.expose()) }))
    }

    pub async fn kms_enable_key_rotation(
        &self,
        caller: &Caller,
        req: k::EnableKeyRotationRequest,
    ) -> Result<Value, ApiError> {
        let days = req.rotation_period_in_days.unwrap_or(ROTATION_DAYS_DEFAULT);
        if !(ROTATION_DAYS_MIN..=ROTATION_DAYS_MAX).contains(&days) {
            return Err(range_error(
                "rotationPeriodInDays",
                days,
                ROTATION_DAYS_MIN,
                ROTATION_DAYS_MAX,
            ));
        }
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.usable()?;
            let now = now_ms();
            let secret = &mut key.secret;
            secret.rotation.enabled = true;
            secret.rotation.lambda_arn = Some(baton_engine::KMS_ROTATOR.to_owned());
            secret.rotation.rules = Some(RotationRules {
                automatically_after_days: Some(days),
                ..RotationRules::default()
            });
            let last = secret.rotation.last_rotated_at.unwrap_or(secret.created_at);
            secret.rotation.next_rotation_at = baton_engine::plan_next_rotation(secret, last, now);
            secret.last_changed_at = now;
            Ok(Outcome::Changed(()))
        })
        .await?;
        self.engine_wake.notify_one();
        Ok(json!({}))
    }

    pub async fn kms_disable_key_rotation(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        self.update_key(caller, required(&req.key_id, "keyId")?, |key| {
            key.usable()?;
            key.secret.rotation.enabled = false;
            key.secret.rotation.next_rotation_at = None;
            key.secret.last_changed_at = now_ms();
            Ok(Outcome::Changed(()))
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn kms_get_key_rotation_status(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let rotation = &key.secret.rotation;
        let mut out = json!({
            "KeyId": key.arn(),
            "KeyRotationEnabled": rotation.enabled,
        });
        if rotation.enabled {
            if let Some(days) = rotation
                .rules
                .as_ref()
                .and_then(|r| r.automatically_after_days)
            {
                out["RotationPeriodInDays"] = json!(days);
            }
            if let Some(next) = rotation.next_rotation_at {
                out["NextRotationDate"] = json!(seconds(next));
            }
        }
        if let Some(state) = &key.secret.rotation_state
            && !state.machine.is_finished()
        {
            out["OnDemandRotationStartDate"] = json!(seconds(state.machine.started_at));
            out["BatonRotationPhase"] = json!(state.machine.phase.as_str());
        }
        Ok(out)
    }

    /// RotateKeyOnDemand. A symmetric or HMAC key's new material is current when this answers
    /// (see [`baton_engine::rotates_at_once`]); an asymmetric key's rotation starts and goes
    /// through its phases. As in AWS: at most [`ON_DEMAND_ROTATIONS_MAX`] per key, and
    /// ConflictException while an automatic rotation runs or is due within 20 minutes.
    pub async fn kms_rotate_key_on_demand(
        &self,
        caller: &Caller,
        req: k::KeyIdRequest,
    ) -> Result<Value, ApiError> {
        let version_id = format!("{ON_DEMAND_PREFIX}{}", uuid::Uuid::new_v4());
        let ((), key) = self
            .update_key(caller, required(&req.key_id, "keyId")?, |key| {
                key.usable()?;
                let now = now_ms();
                let secret = &mut key.secret;
                may_rotate_on_demand(secret, now)?;
                secret.rotation.lambda_arn = Some(baton_engine::KMS_ROTATOR.to_owned());
                if baton_engine::rotates_at_once(secret) {
                    baton_engine::rotate_key_at_once(&self.root_key, secret, &version_id, now)
                        .map_err(|e| ApiError::Internal(format!("rotating key material: {e}")))?;
                } else {
                    baton_engine::start_rotation(secret, version_id.clone(), now)?;
                }
                secret.last_changed_at = now;
                Ok(Outcome::Changed(()))
            })
            .await?;
        self.engine_wake.notify_one();
        Ok(json!({ "KeyId": key.arn(), "BatonKeyVersionId": version_id }))
    }

    pub async fn kms_list_key_rotations(
        &self,
        caller: &Caller,
        req: k::ListRequest,
    ) -> Result<Value, ApiError> {
        let key = self.key_of(caller, &req.key_id).await?;
        let mut versions: Vec<_> = key.secret.versions.iter().collect();
        versions.sort_by_key(|v| (v.created_at, v.version_id.clone()));
        let rotations: Vec<Value> = versions
            .into_iter()
            .skip(1)
            .map(|v| {
                json!({
                    "KeyId": key.arn(),
                    "RotationDate": seconds(v.created_at),
                    "RotationType": if v.version_id.starts_with(ON_DEMAND_PREFIX) {
                        "ON_DEMAND"
                    } else {
                        "AUTOMATIC"
                    },
                    "BatonKeyVersionId": v.version_id,
                    "BatonKeyVersionState": key.version_state(&v.version_id),
                })
            })
            .collect();
        let (rotations, next) = page(rotations, req.limit, &req.marker, 100)?;
        Ok(paged("Rotations", rotations, next))
    }

    /// `baton.PutRotationPolicy` with a KeyId: how the key's rotations wait at their gates.
    pub(crate) async fn put_key_rotation_policy(
        &self,
        caller: &Caller,
        text: &str,
        policy: baton_core::rotation::RotationPolicy,
    ) -> Result<baton_proto::DescribeRotationResponse, ApiError> {
        let ((), key) = self
            .update_key(caller, text, |key| {
                key.secret.ensure_not_deleted()?;
                crate::ops::apply_rotation_policy(&mut key.secret, &policy, now_ms());
                Ok(Outcome::Changed(()))
            })
            .await?;
        self.engine_wake.notify_one();
        Ok(rotation_description(key.arn().to_owned(), &key.secret))
    }

    /// The public JWKS of an asymmetric signing key: every version accepted now, `kid` = the
    /// version id. Unauthenticated; the key is named by id, ARN or alias in the server's
    /// default namespace. Each answer counts as a read by a consumer that does not report, so
    /// the next rotation's gates wait the propagation delay for JWKS caches.
    pub async fn jwks(&self, region: &str, text: &str) -> Result<(Value, i64), ApiError> {
        let caller = Caller::admin(&self.account_id, region, "GetJwks");
        let not_found =
            || ApiError::KmsNotFound(format!("No signing key {text:?} publishes a JWKS."));
        let key = self
            .find_key_ref(&key_ref(&caller, text))
            .await?
            .filter(|k| k.usage == KeyUsage::SignVerify && k.spec.is_asymmetric())
            .ok_or_else(not_found)?;
        key.usable()?;
        let mut keys = Vec::new();
        for version in key.accepted_versions() {
            keys.push(self.parsed_key(&key, &version)?.jwk(&version));
        }
        self.note_plain_read(&caller, &key.secret).await;
        let delay = key
            .secret
            .rotation_policy
            .clone()
            .unwrap_or_default()
            .propagation_delay_ms;
        Ok((json!({ "keys": keys }), delay))
    }
}

fn alias_namespace(alias_arn: &str) -> (&str, &str) {
    // arn:aws:kms:<region>:<account>:alias/<name>
    let mut parts = alias_arn.splitn(6, ':');
    let region = parts.nth(3).unwrap_or_default();
    let account = parts.next().unwrap_or_default();
    (account, region)
}

fn check_policy_name(name: &Option<String>) -> Result<(), ApiError> {
    match name.as_deref() {
        None | Some("default") => Ok(()),
        Some(other) => Err(ApiError::Validation(format!(
            "PolicyName must be \"default\", not {other:?}: a key has one key policy."
        ))),
    }
}

fn rsa_algorithm(key: &Key, algorithm: Option<&str>) -> Result<RsaEncryption, ApiError> {
    let name = algorithm.unwrap_or(SYMMETRIC_DEFAULT);
    RsaEncryption::parse(name).ok_or_else(|| {
        ApiError::KmsInvalidKeyUsage(format!(
            "The encryption algorithm {name} is not valid for {} ({}); use RSAES_OAEP_SHA_1 or \
             RSAES_OAEP_SHA_256.",
            key.arn(),
            key.spec.name()
        ))
    })
}

fn alias_not_found(alias_arn: &str) -> ApiError {
    ApiError::KmsNotFound(format!("Alias {alias_arn} is not found."))
}

fn invalid_ciphertext() -> ApiError {
    ApiError::KmsInvalidCiphertext(
        "The ciphertext is not one this key made, was altered, or its encryption context \
         differs."
            .to_owned(),
    )
}

fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, ApiError> {
    crate::ops::required(value, member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::{baton, caller};

    async fn create(baton: &Baton, spec: &str) -> String {
        let out = baton
            .kms_create_key(
                &caller(),
                k::CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
    }

    async fn rotate(baton: &Baton, key: &str) -> Result<Value, ApiError> {
        baton
            .kms_rotate_key_on_demand(
                &caller(),
                k::KeyIdRequest {
                    key_id: Some(key.into()),
                },
            )
            .await
    }

    #[tokio::test]
    async fn on_demand_rotations_stop_at_the_quota_and_near_a_scheduled_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        let key = create(&baton, "SYMMETRIC_DEFAULT").await;
        for n in 0..ON_DEMAND_ROTATIONS_MAX {
            rotate(&baton, &key)
                .await
                .unwrap_or_else(|e| panic!("rotation {n}: {e:?}"));
        }
        match rotate(&baton, &key).await {
            Err(ApiError::LimitExceeded(m)) => assert!(m.contains("10 times"), "{m}"),
            other => panic!("the eleventh on-demand rotation: {other:?}"),
        }

        let key = create(&baton, "HMAC_256").await;
        let arn = key_arn("123456789012", "us-east-1", &key);
        let mut record = baton.store.find_secret_by_arn(&arn).await.unwrap().unwrap();
        record.rotation.enabled = true;
        record.rotation.next_rotation_at = Some(now_ms() + 19 * 60 * 1000);
        baton.store.save_secret(&record).await.unwrap();
        match rotate(&baton, &key).await {
            Err(ApiError::KmsConflict(m)) => assert!(m.contains("within the next 20 minutes")),
            other => panic!("a rotation 19 minutes before the scheduled one: {other:?}"),
        }
        let mut record = baton.store.find_secret_by_arn(&arn).await.unwrap().unwrap();
        record.rotation.next_rotation_at = Some(now_ms() + 21 * 60 * 1000);
        baton.store.save_secret(&record).await.unwrap();
        rotate(&baton, &key)
            .await
            .expect("21 minutes before is allowed");
    }

    #[tokio::test]
    async fn symmetric_and_hmac_keys_rotate_at_once_and_asymmetric_ones_in_phases() {
        let dir = tempfile::tempdir().unwrap();
        let baton = baton(dir.path());
        for (spec, at_once) in [
            ("SYMMETRIC_DEFAULT", true),
            ("HMAC_384", true),
            ("ECC_NIST_P256", false),
        ] {
            let key = create(&baton, spec).await;
            let arn = key_arn("123456789012", "us-east-1", &key);
            let before = baton.store.find_secret_by_arn(&arn).await.unwrap().unwrap();
            let old = baton_core::rotation::keyring(&before).current.unwrap();
            let out = rotate(&baton, &key).await.unwrap();
            let version = out["BatonKeyVersionId"].as_str().unwrap();
            let after = baton.store.find_secret_by_arn(&arn).await.unwrap().unwrap();
            let ring = baton_core::rotation::keyring(&after);
            if at_once {
                assert_eq!(ring.current.as_deref(), Some(version), "{spec}");
                assert!(after.rotation_state.is_none(), "{spec}: no phases");
                assert!(
                    after
                        .version(&old)
                        .unwrap()
                        .labels
                        .contains(baton_core::AWSPREVIOUS),
                    "{spec}"
                );
                assert!(after.rotation.last_rotated_at.is_some());
                let new = baton_engine::keywrap::key_material(&baton.root_key, &after, version);
                let old = baton_engine::keywrap::key_material(&baton.root_key, &after, &old);
                assert_ne!(new.unwrap().expose(), old.unwrap().expose(), "{spec}");
            } else {
                assert_eq!(ring.current.as_deref(), Some(old.as_str()), "{spec}");
                let state = after.rotation_state.expect("a phased rotation started");
                assert_eq!(state.machine.version_id, version);
                match rotate(&baton, &key).await {
                    Err(ApiError::KmsConflict(m)) => assert!(m.contains("in progress")),
                    other => panic!("{spec}: a second rotation during the first: {other:?}"),
                }
            }
        }
    }
}

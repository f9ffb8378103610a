//! Wire types of the AWS KMS JSON 1.1 protocol (`X-Amz-Target: TrentService.<Op>`) as Baton
//! serves it. Binary members (Plaintext, CiphertextBlob, Signature, Mac, Message) are base64
//! strings. Responses are built by the server as JSON; these are the requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SENSITIVE_FIELDS;

/// The target prefix of AWS KMS operations.
pub const KMS_TARGET_PREFIX: &str = "TrentService.";

wire!(KmsTag { tag_key: Option<String>, tag_value: Option<String> });

wire!(CreateKeyRequest {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    customer_master_key_spec: Option<String>,
    key_spec: Option<String>,
    origin: Option<String>,
    multi_region: Option<bool>,
    tags: Option<Vec<KmsTag>>,
    bypass_policy_lockout_safety_check: Option<bool>,
});

wire!(KeyIdRequest { key_id: Option<String> });

wire!(UpdateKeyDescriptionRequest {
    key_id: Option<String>,
    description: Option<String>,
});

wire!(ScheduleKeyDeletionRequest {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
});

wire!(ListRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
});

wire!(AliasRequest {
    alias_name: Option<String>,
    target_key_id: Option<String>,
});

wire!(TagResourceRequest {
    key_id: Option<String>,
    tags: Option<Vec<KmsTag>>,
});

wire!(UntagResourceRequest {
    key_id: Option<String>,
    tag_keys: Option<Vec<String>>,
});

wire!(KeyPolicyRequest {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
    bypass_policy_lockout_safety_check: Option<bool>,
});

wire!(EncryptRequest {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
});

wire!(DecryptRequest {
    key_id: Option<String>,
    ciphertext_blob: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
});

wire!(ReEncryptRequest {
    ciphertext_blob: Option<String>,
    source_encryption_context: Option<BTreeMap<String, String>>,
    source_key_id: Option<String>,
    destination_key_id: Option<String>,
    destination_encryption_context: Option<BTreeMap<String, String>>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
});

wire!(GenerateDataKeyRequest {
    key_id: Option<String>,
    key_spec: Option<String>,
    number_of_bytes: Option<i64>,
    encryption_context: Option<BTreeMap<String, String>>,
    grant_tokens: Option<Vec<String>>,
});

wire!(GenerateDataKeyPairRequest {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    grant_tokens: Option<Vec<String>>,
});

wire!(SignRequest {
    key_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    signing_algorithm: Option<String>,
    signature: Option<String>,
    grant_tokens: Option<Vec<String>>,
    /// Baton's extension for Sign: sign with this version (the current or the previous one),
    /// so a JWT can name its `kid` before it is signed.
    baton_key_version_id: Option<String>,
});

wire!(MacRequest {
    key_id: Option<String>,
    message: Option<String>,
    mac_algorithm: Option<String>,
    mac: Option<String>,
    grant_tokens: Option<Vec<String>>,
});

wire!(GenerateRandomRequest { number_of_bytes: Option<i64> });

wire!(EnableKeyRotationRequest {
    key_id: Option<String>,
    rotation_period_in_days: Option<i64>,
});

wire!(GrantConstraints {
    encryption_context_subset: Option<BTreeMap<String, String>>,
    encryption_context_equals: Option<BTreeMap<String, String>>,
});

wire!(CreateGrantRequest {
    key_id: Option<String>,
    grantee_principal: Option<String>,
    retiring_principal: Option<String>,
    operations: Option<Vec<String>>,
    constraints: Option<GrantConstraints>,
    grant_tokens: Option<Vec<String>>,
    name: Option<String>,
    dry_run: Option<bool>,
});

wire!(ListGrantsRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
    grant_id: Option<String>,
    grantee_principal: Option<String>,
});

wire!(ListRetirableGrantsRequest {
    retiring_principal: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
});

wire!(RetireGrantRequest {
    grant_token: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
});

wire!(RevokeGrantRequest {
    key_id: Option<String>,
    grant_id: Option<String>,
    dry_run: Option<bool>,
});

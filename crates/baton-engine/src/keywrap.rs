//! Data keys of secrets encrypted under a KMS key (CreateSecret's KmsKeyId).
//!
//! Every secret has its own data key. By default the root key wraps it; a secret created
//! under a Baton KMS key has it wrapped by that key's current version instead, as a KMS
//! ciphertext blob bound to the secret's id (`baton_crypto::kms::wrap_data_key`). The values
//! themselves are always sealed by the data key, so rotating the KMS key never touches them:
//! a data key wrapped by an older version still unwraps (symmetric versions decrypt for the
//! key's life), and the next write of the secret re-wraps it under the current version.

use baton_core::SecretRecord;
use baton_crypto::kms as ck;
use baton_crypto::{DataKey, RootKey, SecretBytes, value_aad};
use baton_store::Store;

/// A KMS key's ARN in a secret's namespace.
pub fn key_arn(account_id: &str, region: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{account_id}:key/{key_id}")
}

/// The material of one version of a KMS key's keyring.
pub fn key_material(
    root_key: &RootKey,
    key: &SecretRecord,
    version_id: &str,
) -> Result<SecretBytes, String> {
    let version = key
        .version(version_id)
        .ok_or_else(|| format!("{} has no key version {version_id}", key.arn))?;
    let data_key = root_key
        .unwrap(&key.wrapped_data_key, &key.id)
        .map_err(|e| e.to_string())?;
    data_key
        .open(&version.sealed_value, &value_aad(&key.id, version_id))
        .map_err(|e| e.to_string())
}

/// The secret's data key, whichever key wrapped it.
pub async fn data_key(
    store: &dyn Store,
    root_key: &RootKey,
    secret: &SecretRecord,
) -> Result<DataKey, String> {
    let Some(header) = ck::data_key_wrapper(&secret.wrapped_data_key) else {
        return root_key
            .unwrap(&secret.wrapped_data_key, &secret.id)
            .map_err(|e| e.to_string());
    };
    let arn = key_arn(&secret.account_id, &secret.region, &header.key_id);
    let key = store
        .find_secret_by_arn(&arn)
        .await
        .map_err(|e| e.to_string())?
        .filter(|k| k.key.is_some())
        .ok_or_else(|| format!("the KMS key {arn} that wraps this secret's data key is gone"))?;
    // As in AWS: while the key is disabled or pending deletion, nothing it protects is read.
    if key.key.as_ref().is_some_and(|m| !m.enabled) || key.is_scheduled_for_deletion() {
        return Err(format!("the KMS key {arn} is disabled or pending deletion"));
    }
    let material = key_material(root_key, &key, &header.version_id)?;
    ck::unwrap_data_key(&material, &secret.wrapped_data_key, &secret.id).map_err(|e| e.to_string())
}

/// Wraps `data_key` for `secret_id` under the current version of `key`.
pub fn wrap_under(
    root_key: &RootKey,
    key: &SecretRecord,
    secret_id: &str,
    data_key: &DataKey,
) -> Result<Vec<u8>, String> {
    let meta = key
        .key
        .as_ref()
        .ok_or_else(|| format!("{} is not a KMS key", key.arn))?;
    let current = baton_core::rotation::keyring(key)
        .current
        .ok_or_else(|| format!("{} has no current version", key.arn))?;
    let material = key_material(root_key, key, &current)?;
    ck::wrap_data_key(&material, &meta.key_id, &current, secret_id, data_key)
        .map_err(|e| e.to_string())
}

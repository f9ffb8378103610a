//! KMS grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant.
//!
//! A grant lets its grantee principal perform some operations with one key. Authorization
//! consults the key's grants only when the policies leave a request undecided (an implicit
//! deny that no session policy caused): a grant never overrides an explicit Deny. A grant's
//! constraints are checked against the request's encryption context. Baton is consistent, so
//! a grant is effective as soon as CreateGrant answers; its token is accepted where AWS takes
//! one and is needed only to retire it without naming the key.

use std::collections::BTreeMap;

use baton_proto::kms as k;
use baton_store::{GrantRecord, StoreError};
use serde_json::{Value, json};

use super::{Key, KeyUsage, enum_error, key_arn, page, paged};
use crate::ApiError;
use crate::authz::Target;
use crate::ops::{length_error, seconds};
use crate::state::{Baton, Caller, now_ms};
use crate::wire::required;

/// The grant operations, as AWS names them.
const OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];
/// Operations that take an encryption context, to which a grant's constraints apply.
const WITH_CONTEXT: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];
/// Operations any key allows in a grant.
const ANY_KEY: &[&str] = &["CreateGrant", "RetireGrant", "DescribeKey"];
const TOKEN_PREFIX: &str = "BatonGrantToken1.";
const NAME_CHARS_MAX: usize = 256;
const PRINCIPAL_CHARS_MAX: usize = 256;
const GRANT_TOKENS_MAX: usize = 10;
const GRANTS_PER_KEY_MAX: usize = 50_000;

/// The operations a key of this usage allows in a grant, besides [`ANY_KEY`].
fn allowed_operations(key: &Key) -> &'static [&'static str] {
    match key.usage {
        KeyUsage::EncryptDecrypt if key.spec.is_asymmetric() => &[
            "Encrypt",
            "Decrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
            "GetPublicKey",
        ],
        KeyUsage::EncryptDecrypt => &[
            "Encrypt",
            "Decrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
        ],
        KeyUsage::SignVerify => &["Sign", "Verify", "GetPublicKey"],
        KeyUsage::GenerateVerifyMac => &["GenerateMac", "VerifyMac"],
    }
}

/// The token of a grant: not a credential (as in AWS, a token only names a grant), so it is
/// derived from the grant's id and CreateGrant can answer the same one again.
fn token_of(grant_id: &str) -> String {
    format!("{TOKEN_PREFIX}{grant_id}")
}

fn grant_id_of_token(token: &str) -> Result<&str, ApiError> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiError::KmsInvalidGrantToken("The grant token is not one Baton issued.".to_owned())
        })
}

fn check_grant_tokens(tokens: &Option<Vec<String>>) -> Result<(), ApiError> {
    let tokens = tokens.as_deref().unwrap_or_default();
    if tokens.len() > GRANT_TOKENS_MAX {
        return Err(length_error(
            "grantTokens",
            "less than or equal to",
            GRANT_TOKENS_MAX,
        ));
    }
    for token in tokens {
        grant_id_of_token(token)?;
    }
    Ok(())
}

fn pattern_error(member: &str, value: &str, pattern: &str) -> ApiError {
    ApiError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must satisfy regular expression pattern: {pattern}"
    ))
}

fn check_principal(member: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > PRINCIPAL_CHARS_MAX {
        return Err(length_error(member, "between 1 and", PRINCIPAL_CHARS_MAX));
    }
    let ok = value
        .chars()
        .all(|c| c.is_alphanumeric() || "_+=,.@:/-".contains(c));
    if !ok {
        return Err(pattern_error(member, value, "^[\\w+=,.@:/-]+$"));
    }
    Ok(())
}

/// A grant's operations and constraints, as stored in `body`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body {
    operations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    constraints: Option<k::GrantConstraints>,
}

fn body_of(grant: &GrantRecord) -> Result<Body, ApiError> {
    serde_json::from_str(&grant.body).map_err(|e| {
        ApiError::Internal(format!(
            "grant {} has a body Baton cannot read: {e}",
            grant.grant_id
        ))
    })
}

/// Whether a grant's constraints hold for a request with `context`. They apply only to
/// operations that take an encryption context.
fn constraints_hold(
    constraints: &Option<k::GrantConstraints>,
    operation: &str,
    context: Option<&[(String, String)]>,
) -> bool {
    let Some(c) = constraints else {
        return true;
    };
    if !WITH_CONTEXT.contains(&operation) {
        return true;
    }
    let given: BTreeMap<&str, &str> = context
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let subset = c.encryption_context_subset.as_ref().is_none_or(|want| {
        want.iter()
            .all(|(k, v)| given.get(k.as_str()) == Some(&v.as_str()))
    });
    let equals = c.encryption_context_equals.as_ref().is_none_or(|want| {
        want.len() == given.len()
            && want
                .iter()
                .all(|(k, v)| given.get(k.as_str()) == Some(&v.as_str()))
    });
    subset && equals
}

fn wire_grant(grant: &GrantRecord, body: Body, account_id: &str) -> Value {
    let mut out = json!({
        "KeyId": grant.key_arn,
        "GrantId": grant.grant_id,
        "CreationDate": seconds(grant.created_at),
        "GranteePrincipal": grant.grantee,
        "IssuingAccount": format!("arn:aws:iam::{account_id}:root"),
        "Operations": body.operations,
    });
    if let Some(name) = &grant.name {
        out["Name"] = json!(name);
    }
    if let Some(retiring) = &grant.retiring {
        out["RetiringPrincipal"] = json!(retiring);
    }
    if let Some(c) = body.constraints {
        out["Constraints"] = serde_json::to_value(c).unwrap_or_default();
    }
    out
}

/// One page of `grants` in AWS's list shape (`Grants`, `Truncated`, `NextMarker`).
fn grants_page<'a>(
    grants: impl Iterator<Item = &'a GrantRecord>,
    limit: &Option<i64>,
    marker: &Option<String>,
    account_id: &str,
) -> Result<Value, ApiError> {
    let grants = grants
        .map(|grant| Ok(wire_grant(grant, body_of(grant)?, account_id)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let (grants, next) = page(grants, *limit, marker, 50)?;
    Ok(paged("Grants", grants, next))
}

fn dry_run(flag: Option<bool>) -> Result<(), ApiError> {
    if flag == Some(true) {
        return Err(ApiError::KmsDryRun(
            "The request would have succeeded, but the DryRun option is set.".to_owned(),
        ));
    }
    Ok(())
}

impl Baton {
    /// The first grant of `key` that lets the caller perform `action` with `context`.
    pub(super) async fn allowing_grant(
        &self,
        key: &Key,
        caller: &Caller,
        action: &str,
        context: Option<&[(String, String)]>,
    ) -> Result<Option<String>, ApiError> {
        let Some(operation) = action.strip_prefix("kms:") else {
            return Ok(None);
        };
        for grant in self.store.grants_of_key(&key.secret.id).await? {
            if grant.grantee != caller.principal.arn {
                continue;
            }
            let body = body_of(&grant)?;
            if body.operations.iter().any(|o| o == operation)
                && constraints_hold(&body.constraints, operation, context)
            {
                return Ok(Some(grant.grant_id));
            }
        }
        Ok(None)
    }

    pub async fn kms_create_grant(
        &self,
        caller: &Caller,
        req: k::CreateGrantRequest,
    ) -> Result<Value, ApiError> {
        let grantee = required(&req.grantee_principal, "granteePrincipal")?;
        check_principal("granteePrincipal", grantee)?;
        if let Some(retiring) = &req.retiring_principal {
            check_principal("retiringPrincipal", retiring)?;
        }
        let operations = req.operations.clone().unwrap_or_default();
        if operations.is_empty() {
            return Err(ApiError::missing("operations"));
        }
        for operation in &operations {
            if !OPERATIONS.contains(&operation.as_str()) {
                return Err(enum_error("operations", operation, OPERATIONS));
            }
        }
        if let Some(name) = &req.name {
            if name.is_empty() || name.chars().count() > NAME_CHARS_MAX {
                return Err(length_error("name", "between 1 and", NAME_CHARS_MAX));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c))
            {
                return Err(pattern_error("name", name, "^[a-zA-Z0-9:/_-]+$"));
            }
        }
        if let Some(c) = &req.constraints {
            if c.encryption_context_subset.is_some() && c.encryption_context_equals.is_some() {
                return Err(ApiError::Validation(
                    "A grant's Constraints take EncryptionContextSubset or \
                     EncryptionContextEquals, not both."
                        .to_owned(),
                ));
            }
            if !operations
                .iter()
                .any(|o| WITH_CONTEXT.contains(&o.as_str()))
            {
                return Err(ApiError::Validation(
                    "Constraints apply to operations that take an encryption context, and \
                     this grant allows none."
                        .to_owned(),
                ));
            }
        }
        check_grant_tokens(&req.grant_tokens)?;
        let key = self
            .key_for(caller, required(&req.key_id, "keyId")?, &caller.action)
            .await?;
        key.customer_managed()?;
        key.not_pending_deletion()?;
        let allowed = allowed_operations(&key);
        if let Some(bad) = operations
            .iter()
            .find(|o| !ANY_KEY.contains(&o.as_str()) && !allowed.contains(&o.as_str()))
        {
            return Err(ApiError::Validation(format!(
                "The grant operation {bad} is not valid for {}, a {} key with KeyUsage {}.",
                key.arn(),
                key.spec.name(),
                key.usage.name()
            )));
        }
        let body = Body {
            operations: operations.clone(),
            constraints: req.constraints.clone(),
        };
        let existing = self.store.grants_of_key(&key.secret.id).await?;
        // As in AWS: the same name with the same grant is the same request.
        if let Some(name) = &req.name {
            for grant in &existing {
                if grant.name.as_ref() == Some(name)
                    && grant.grantee == grantee
                    && grant.retiring == req.retiring_principal
                    && body_of(grant)? == body
                {
                    dry_run(req.dry_run)?;
                    return Ok(json!({
                        "GrantId": grant.grant_id,
                        "GrantToken": token_of(&grant.grant_id),
                    }));
                }
            }
        }
        if existing.len() >= GRANTS_PER_KEY_MAX {
            return Err(ApiError::LimitExceeded(format!(
                "{} has {GRANTS_PER_KEY_MAX} grants, the most a key can have.",
                key.arn()
            )));
        }
        dry_run(req.dry_run)?;
        let mut raw = [0u8; 32];
        baton_crypto::fill_random(&mut raw)?;
        let grant_id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let token = token_of(&grant_id);
        let record = GrantRecord {
            grant_id: grant_id.clone(),
            secret_id: key.secret.id.clone(),
            key_arn: key.arn().to_owned(),
            grantee: grantee.to_owned(),
            retiring: req.retiring_principal.clone(),
            name: req.name.clone(),
            token_hash: baton_crypto::sha256(token.as_bytes()),
            body: serde_json::to_string(&body)
                .map_err(|e| ApiError::Internal(format!("serializing a grant: {e}")))?,
            created_at: now_ms(),
        };
        match self.store.insert_grant(&record).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                return Err(ApiError::Internal(
                    "A new grant id collided with another; retry the request.".to_owned(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(json!({ "GrantId": grant_id, "GrantToken": token }))
    }

    pub async fn kms_list_grants(
        &self,
        caller: &Caller,
        req: k::ListGrantsRequest,
    ) -> Result<Value, ApiError> {
        let key = self
            .key_for(caller, required(&req.key_id, "keyId")?, &caller.action)
            .await?;
        let grants = self.store.grants_of_key(&key.secret.id).await?;
        let grants = grants.iter().filter(|grant| {
            req.grant_id.as_ref().is_none_or(|id| *id == grant.grant_id)
                && req
                    .grantee_principal
                    .as_ref()
                    .is_none_or(|p| *p == grant.grantee)
        });
        grants_page(grants, &req.limit, &req.marker, &caller.account_id)
    }

    /// ListRetirableGrants: the grants in the caller's namespace that `RetiringPrincipal` may
    /// retire. Authorized on `*`, as AWS authorizes it (IAM policy only).
    pub async fn kms_list_retirable_grants(
        &self,
        caller: &Caller,
        req: k::ListRetirableGrantsRequest,
    ) -> Result<Value, ApiError> {
        let retiring = required(&req.retiring_principal, "retiringPrincipal")?;
        check_principal("retiringPrincipal", retiring)?;
        let namespace = key_arn(&caller.account_id, &caller.region, "");
        let grants = self.store.grants_retirable_by(retiring).await?;
        let grants = grants
            .iter()
            .filter(|grant| grant.key_arn.starts_with(&namespace));
        grants_page(grants, &req.limit, &req.marker, &caller.account_id)
    }

    /// RetireGrant, by its token or by key and grant id. The grant's retiring principal may
    /// retire it, its grantee when it allows RetireGrant, and whoever the policies allow
    /// `kms:RetireGrant` on the key.
    pub async fn kms_retire_grant(
        &self,
        caller: &Caller,
        req: k::RetireGrantRequest,
    ) -> Result<Value, ApiError> {
        let grant_id = match (&req.grant_token, &req.grant_id) {
            (Some(token), _) => grant_id_of_token(token)?.to_owned(),
            (None, Some(id)) => {
                required(&req.key_id, "keyId")?;
                id.clone()
            }
            (None, None) => {
                return Err(ApiError::Validation(
                    "RetireGrant needs a GrantToken, or a KeyId and a GrantId.".to_owned(),
                ));
            }
        };
        let grant = self.store.find_grant(&grant_id).await?;
        let grant = grant.filter(|g| {
            g.key_arn
                .starts_with(&key_arn(&caller.account_id, &caller.region, ""))
        });
        let key = match &req.key_id {
            Some(text) => Some(
                self.find_key_ref(&super::key_ref(caller, text))
                    .await?
                    .ok_or_else(|| ApiError::KmsNotFound(format!("Key '{text}' does not exist")))?,
            ),
            None => None,
        };
        let Some(grant) = grant.filter(|g| key.as_ref().is_none_or(|k| k.arn() == g.key_arn))
        else {
            return Err(ApiError::KmsNotFound(format!(
                "Grant ID {grant_id} not found."
            )));
        };
        let principal = &caller.principal.arn;
        let body = body_of(&grant)?;
        let as_grant = if grant.retiring.as_ref() == Some(principal) {
            Some(format!("{} (its retiring principal)", grant.grant_id))
        } else if grant.grantee == *principal && body.operations.iter().any(|o| o == "RetireGrant")
        {
            Some(format!(
                "{} (its grantee, allowed RetireGrant)",
                grant.grant_id
            ))
        } else {
            None
        };
        let policy = match &key {
            Some(k) => k.secret.resource_policy.clone(),
            None => self
                .store
                .find_secret_by_arn(&grant.key_arn)
                .await?
                .and_then(|s| s.resource_policy),
        };
        let target = Target {
            action: &caller.action,
            arn: &grant.key_arn,
            shown: &grant.key_arn,
            resource_policy: policy.as_deref(),
            tags: &[],
        };
        let decision = self.decide(caller, &target)?;
        self.conclude(caller, target, decision, as_grant.as_deref())?;
        dry_run(req.dry_run)?;
        self.store.delete_grant(&grant.grant_id).await?;
        Ok(json!({}))
    }

    pub async fn kms_revoke_grant(
        &self,
        caller: &Caller,
        req: k::RevokeGrantRequest,
    ) -> Result<Value, ApiError> {
        let grant_id = required(&req.grant_id, "grantId")?;
        let key = self
            .key_for(caller, required(&req.key_id, "keyId")?, &caller.action)
            .await?;
        let found = self
            .store
            .find_grant(grant_id)
            .await?
            .filter(|g| g.key_arn == key.arn());
        if found.is_none() {
            return Err(ApiError::KmsInvalidGrantId(format!(
                "{grant_id} is not a grant of {}.",
                key.arn()
            )));
        }
        dry_run(req.dry_run)?;
        self.store.delete_grant(grant_id).await?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn constraints_match_a_subset_or_the_exact_context_and_only_where_a_context_is_taken() {
        let subset = Some(k::GrantConstraints {
            encryption_context_subset: Some([("tenant".to_owned(), "a".to_owned())].into()),
            encryption_context_equals: None,
        });
        let equals = Some(k::GrantConstraints {
            encryption_context_subset: None,
            encryption_context_equals: Some([("tenant".to_owned(), "a".to_owned())].into()),
        });
        let exact = pairs(&[("tenant", "a")]);
        let more = pairs(&[("tenant", "a"), ("purpose", "x")]);
        let other = pairs(&[("tenant", "b")]);
        assert!(constraints_hold(&subset, "Decrypt", Some(&exact)));
        assert!(constraints_hold(&subset, "Decrypt", Some(&more)));
        assert!(!constraints_hold(&subset, "Decrypt", Some(&other)));
        assert!(!constraints_hold(&subset, "Encrypt", Some(&[])));
        assert!(constraints_hold(&equals, "Encrypt", Some(&exact)));
        assert!(!constraints_hold(&equals, "Encrypt", Some(&more)));
        assert!(!constraints_hold(&equals, "GenerateDataKey", None));
        // DescribeKey takes no context: the constraint does not apply to it.
        assert!(constraints_hold(&equals, "DescribeKey", None));
        assert!(constraints_hold(&None, "Decrypt", Some(&other)));
    }

    #[test]
    fn a_grant_token_names_its_grant_and_nothing_else_is_one() {
        let id = "ab".repeat(32);
        assert_eq!(grant_id_of_token(&token_of(&id)).unwrap(), id);
        for bad in [
            "",
            "token",
            "BatonGrantToken1.xyz",
            &format!("BatonGrantToken1.{id}0"),
        ] {
            assert!(
                matches!(
                    grant_id_of_token(bad),
                    Err(ApiError::KmsInvalidGrantToken(_))
                ),
                "{bad}"
            );
        }
    }
}

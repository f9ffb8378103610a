//! Principals, their identity policies and access keys (`baton.CreatePrincipal` and friends),
//! and temporary credentials (`baton.GetSessionToken`).

use baton_iam::{Policy, PolicyError, PolicyKind};
use baton_proto as p;
use baton_store::{AccessKeyRecord, PrincipalPolicyRecord, PrincipalRecord, StoreError};

use crate::authz::{PrincipalKind, Target, principal_arn};
use crate::state::{ALPHABET_KEY, ALPHABET_UPPER_DIGITS, access_key_aad, now_ms, random_chars};
use crate::wire::{length_error, required, seconds};
use crate::{ApiError, Baton, Caller};

/// The name of the administrator that the first start creates.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// How many policies one principal may have.
pub const POLICIES_PER_PRINCIPAL_MAX: usize = 100;
/// Session credentials last this long unless asked otherwise, and within these bounds.
const SESSION_SECONDS_DEFAULT: i64 = 3600;
const SESSION_SECONDS_MIN: i64 = 900;
const SESSION_SECONDS_MAX: i64 = 43_200;

/// Names of principals and policies: IAM's characters, 1 to `max` of them.
fn check_name(value: &str, member: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(length_error(member, "between 1 and", max));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c)))
    {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: \
             Member must contain only letters, digits and +=,.@_- (found {bad:?})"
        )));
    }
    Ok(())
}

fn no_such_principal(name: &str) -> ApiError {
    ApiError::ResourceNotFound(format!("Baton has no principal named {name}."))
}

/// An identity policy (a principal's, or a rotator's execution policy), with every finding of
/// the validator as MalformedPolicyDocumentException.
pub(crate) fn checked_identity_policy(document: &str) -> Result<Policy, ApiError> {
    Policy::parse(document, PolicyKind::Identity).map_err(|e| match e {
        PolicyError::Malformed(m) => ApiError::MalformedPolicyDocument(m),
        PolicyError::Invalid(findings) => ApiError::MalformedPolicyDocument(
            findings
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    })
}

impl Baton {
    fn wire_principal(&self, p: &PrincipalRecord, policy_names: Vec<String>) -> p::Principal {
        let kind = PrincipalKind::parse(&p.kind).unwrap_or(PrincipalKind::User);
        p::Principal {
            name: Some(p.name.clone()),
            kind: Some(p.kind.clone()),
            arn: Some(principal_arn(&self.account_id, kind, &p.name)),
            create_date: Some(seconds(p.created_at)),
            policy_names: Some(policy_names),
        }
    }

    /// Checks the caller's action on one principal, whose ARN is the resource: a policy can
    /// allow managing `user/team-*` and nobody else (the administrator is `…:root`). A name
    /// that does not exist is checked on the ARN of a user of that name, so the denial reads
    /// the same either way.
    async fn authorize_principal(
        &self,
        caller: &Caller,
        name: &str,
        kind_if_new: Option<PrincipalKind>,
    ) -> Result<Option<PrincipalRecord>, ApiError> {
        let record = self.store.find_principal(name).await?;
        let kind = record
            .as_ref()
            .and_then(|r| PrincipalKind::parse(&r.kind))
            .or(kind_if_new)
            .unwrap_or(PrincipalKind::User);
        let arn = principal_arn(&self.account_id, kind, name);
        self.authorize(
            caller,
            Target {
                action: &caller.action,
                arn: &arn,
                // The name as given: the ARN would tell a user from a service, and so that the
                // principal exists.
                shown: name,
                resource_policy: None,
                tags: &[],
            },
        )?;
        Ok(record)
    }

    /// Creates the administrator principal if it does not exist yet (first start, or a
    /// database from before principals).
    pub async fn ensure_admin_principal(&self) -> Result<(), ApiError> {
        let admin = PrincipalRecord {
            name: ADMIN_PRINCIPAL.to_owned(),
            kind: PrincipalKind::Admin.as_str().to_owned(),
            created_at: now_ms(),
        };
        match self.store.insert_principal(&admin).await {
            Ok(()) | Err(StoreError::NameTaken) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_principal(
        &self,
        caller: &Caller,
        req: p::CreatePrincipalRequest,
    ) -> Result<p::CreatePrincipalResponse, ApiError> {
        let name = required(&req.name, "name")?;
        check_name(name, "name", 64)?;
        let kind = match req.kind.as_deref().unwrap_or("user") {
            "user" => PrincipalKind::User,
            "service" => PrincipalKind::Service,
            other => {
                return Err(ApiError::InvalidParameter(format!(
                    "Kind must be \"user\" or \"service\", not {other:?}. There is one \
                     administrator, created at first start."
                )));
            }
        };
        self.authorize_principal(caller, name, Some(kind)).await?;
        let record = PrincipalRecord {
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            created_at: now_ms(),
        };
        match self.store.insert_principal(&record).await {
            Ok(()) => {}
            Err(StoreError::NameTaken) => {
                return Err(ApiError::ResourceExists(format!(
                    "A principal named {name} already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(p::CreatePrincipalResponse {
            principal: Some(self.wire_principal(&record, vec![])),
        })
    }

    pub async fn list_principals(&self) -> Result<p::ListPrincipalsResponse, ApiError> {
        let mut principals = Vec::new();
        for record in self.store.list_principals().await? {
            let names = self
                .store
                .list_principal_policies(&record.name)
                .await?
                .into_iter()
                .map(|p| p.policy_name)
                .collect();
            principals.push(self.wire_principal(&record, names));
        }
        Ok(p::ListPrincipalsResponse {
            principals: Some(principals),
        })
    }

    pub async fn delete_principal(
        &self,
        caller: &Caller,
        req: p::PrincipalNameRequest,
    ) -> Result<p::Empty, ApiError> {
        let name = required(&req.principal_name, "principalName")?;
        self.authorize_principal(caller, name, None).await?;
        if name == ADMIN_PRINCIPAL || name == caller.principal.name {
            return Err(ApiError::InvalidRequest(format!(
                "You can't delete the principal {name}: it is the administrator or yourself, and \
                 nobody might be left to manage Baton."
            )));
        }
        if !self.store.delete_principal(name).await? {
            return Err(no_such_principal(name));
        }
        self.forget_all_access_keys();
        Ok(p::Empty {})
    }

    pub async fn put_principal_policy(
        &self,
        caller: &Caller,
        req: p::PutPrincipalPolicyRequest,
    ) -> Result<p::PutPrincipalPolicyResponse, ApiError> {
        let principal = required(&req.principal_name, "principalName")?;
        self.authorize_principal(caller, principal, None).await?;
        let policy_name = required(&req.policy_name, "policyName")?;
        check_name(policy_name, "policyName", 128)?;
        let document = required(&req.policy_document, "policyDocument")?;
        checked_identity_policy(document)?;
        let record = self
            .store
            .find_principal(principal)
            .await?
            .ok_or_else(|| no_such_principal(principal))?;
        if record.kind == PrincipalKind::Admin.as_str() {
            return Err(ApiError::InvalidRequest(
                "The administrator has every right; a policy on it would not be evaluated."
                    .to_owned(),
            ));
        }
        let existing = self.store.list_principal_policies(principal).await?;
        if existing.len() >= POLICIES_PER_PRINCIPAL_MAX
            && !existing.iter().any(|p| p.policy_name == policy_name)
        {
            return Err(ApiError::LimitExceeded(format!(
                "A principal may have at most {POLICIES_PER_PRINCIPAL_MAX} policies."
            )));
        }
        match self
            .store
            .put_principal_policy(&PrincipalPolicyRecord {
                principal_name: principal.to_owned(),
                policy_name: policy_name.to_owned(),
                document: document.to_owned(),
                updated_at: now_ms(),
            })
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(no_such_principal(principal)),
            Err(e) => return Err(e.into()),
        }
        self.forget_all_access_keys();
        Ok(p::PutPrincipalPolicyResponse {
            warnings: Some(self.foreign_resources(document)),
        })
    }

    /// What the validator finds in an identity policy document, without saving it: each
    /// (check, message). `SYNTAX_CHECK` findings are what PutPrincipalPolicy would refuse it for;
    /// `RESOURCE_CHECK` findings are the warnings it would answer with. It reads nothing stored,
    /// so it needs no authorization: the console checks a draft with it before saving.
    pub fn principal_policy_findings(&self, document: &str) -> Vec<(&'static str, String)> {
        match Policy::parse(document, PolicyKind::Identity) {
            Err(PolicyError::Malformed(m)) => vec![("SYNTAX_CHECK", m)],
            Err(PolicyError::Invalid(findings)) => findings
                .into_iter()
                .map(|f| (f.check_name, f.message))
                .collect(),
            Ok(_) => self
                .foreign_resources(document)
                .into_iter()
                .map(|w| ("RESOURCE_CHECK", w))
                .collect(),
        }
    }

    /// The Resource and NotResource ARNs of a policy that name another account, or a region
    /// this server does not serve: they can never match here, which is usually a pasted
    /// example's account id.
    fn foreign_resources(&self, document: &str) -> Vec<String> {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(document) else {
            return Vec::new();
        };
        let statements = match &doc["Statement"] {
            serde_json::Value::Array(list) => list.clone(),
            other => vec![other.clone()],
        };
        let mut warnings = Vec::new();
        for statement in &statements {
            for member in ["Resource", "NotResource"] {
                let resources = match &statement[member] {
                    serde_json::Value::String(s) => vec![s.clone()],
                    serde_json::Value::Array(list) => list
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                for arn in resources {
                    let parts: Vec<&str> = arn.splitn(6, ':').collect();
                    if parts.len() < 6 || parts[0] != "arn" {
                        continue;
                    }
                    let (region, account) = (parts[3], parts[4]);
                    if !account.is_empty()
                        && !account.contains(['*', '?'])
                        && account != self.account_id
                    {
                        warnings.push(format!(
                            "{arn} names account {account}, but this server's account is {}: it \
                             will never match",
                            self.account_id
                        ));
                    } else if !region.is_empty()
                        && !region.contains(['*', '?'])
                        && !self.regions.iter().any(|r| r == region)
                    {
                        warnings.push(format!(
                            "{arn} names region {region}, which this server does not serve ({}): \
                             it will never match",
                            self.regions.join(", ")
                        ));
                    }
                }
            }
        }
        warnings
    }

    pub async fn get_principal_policy(
        &self,
        caller: &Caller,
        req: p::PrincipalPolicyRequest,
    ) -> Result<p::GetPrincipalPolicyResponse, ApiError> {
        let principal = required(&req.principal_name, "principalName")?;
        self.authorize_principal(caller, principal, None).await?;
        let policy_name = required(&req.policy_name, "policyName")?;
        let found = self
            .store
            .list_principal_policies(principal)
            .await?
            .into_iter()
            .find(|p| p.policy_name == policy_name)
            .ok_or_else(|| {
                ApiError::ResourceNotFound(format!(
                    "Principal {principal} has no policy named {policy_name}."
                ))
            })?;
        Ok(p::GetPrincipalPolicyResponse {
            principal_name: Some(found.principal_name),
            policy_name: Some(found.policy_name),
            policy_document: Some(found.document),
        })
    }

    pub async fn delete_principal_policy(
        &self,
        caller: &Caller,
        req: p::PrincipalPolicyRequest,
    ) -> Result<p::Empty, ApiError> {
        let principal = required(&req.principal_name, "principalName")?;
        self.authorize_principal(caller, principal, None).await?;
        let policy_name = required(&req.policy_name, "policyName")?;
        if !self
            .store
            .delete_principal_policy(principal, policy_name)
            .await?
        {
            return Err(ApiError::ResourceNotFound(format!(
                "Principal {principal} has no policy named {policy_name}."
            )));
        }
        self.forget_all_access_keys();
        Ok(p::Empty {})
    }

    pub async fn create_access_key(
        &self,
        caller: &Caller,
        req: p::CreateAccessKeyRequest,
    ) -> Result<p::CreateAccessKeyResponse, ApiError> {
        let principal = req
            .principal_name
            .clone()
            .or(req.user_name.clone())
            .ok_or_else(|| ApiError::missing("principalName"))?;
        if self
            .authorize_principal(caller, &principal, None)
            .await?
            .is_none()
        {
            return Err(no_such_principal(&principal));
        }
        let (record, secret) = self.issue_access_key(&principal, None).await?;
        Ok(p::CreateAccessKeyResponse {
            access_key: Some(p::AccessKey {
                access_key_id: Some(record.access_key_id),
                secret_access_key: Some(
                    String::from_utf8(secret.expose().to_vec()).unwrap_or_default(),
                ),
                principal_name: Some(record.user_name.clone()),
                user_name: Some(record.user_name),
                create_date: Some(seconds(record.created_at)),
            }),
        })
    }

    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        req: p::ListAccessKeysRequest,
    ) -> Result<p::ListAccessKeysResponse, ApiError> {
        match &req.principal_name {
            Some(name) => drop(self.authorize_principal(caller, name, None).await?),
            None => self.authorize(caller, Target::global(&caller.action))?,
        }
        let keys = self.store.list_access_keys().await?;
        Ok(p::ListAccessKeysResponse {
            access_keys: Some(
                keys.into_iter()
                    .filter(|k| {
                        req.principal_name
                            .as_ref()
                            .is_none_or(|name| &k.user_name == name)
                    })
                    .map(|k| p::AccessKey {
                        access_key_id: Some(k.access_key_id),
                        secret_access_key: None,
                        principal_name: Some(k.user_name.clone()),
                        user_name: Some(k.user_name),
                        create_date: Some(seconds(k.created_at)),
                    })
                    .collect(),
            ),
        })
    }

    pub async fn delete_access_key(
        &self,
        caller: &Caller,
        req: p::DeleteAccessKeyRequest,
    ) -> Result<p::Empty, ApiError> {
        let id = required(&req.access_key_id, "accessKeyId")?;
        let keys = self.store.list_access_keys().await?;
        let Some(key) = keys.iter().find(|k| k.access_key_id == id) else {
            self.authorize(caller, Target::global(&caller.action))?;
            return Err(ApiError::ResourceNotFound(format!(
                "Baton has no access key {id}."
            )));
        };
        self.authorize_principal(caller, &key.user_name, None)
            .await?;
        let admin_keys = keys
            .iter()
            .filter(|k| k.user_name == ADMIN_PRINCIPAL)
            .count();
        if key.user_name == ADMIN_PRINCIPAL && admin_keys == 1 {
            return Err(ApiError::InvalidRequest(
                "You can't delete the administrator's last access key: nobody could manage \
                 Baton afterwards. Create another administrator key first."
                    .to_owned(),
            ));
        }
        self.store.delete_access_key(id).await?;
        self.forget_access_key(id);
        Ok(p::Empty {})
    }

    /// Temporary credentials with the caller's own rights, which need the session token on
    /// every request and stop working at their expiration.
    pub async fn get_session_token(
        &self,
        caller: &Caller,
        req: p::GetSessionTokenRequest,
    ) -> Result<p::GetSessionTokenResponse, ApiError> {
        let seconds_valid = req.duration_seconds.unwrap_or(SESSION_SECONDS_DEFAULT);
        if !(SESSION_SECONDS_MIN..=SESSION_SECONDS_MAX).contains(&seconds_valid) {
            return Err(ApiError::Validation(format!(
                "1 validation error detected: Value '{seconds_valid}' at 'durationSeconds' \
                 failed to satisfy constraint: Member must have value between \
                 {SESSION_SECONDS_MIN} and {SESSION_SECONDS_MAX}"
            )));
        }
        if caller.principal.temporary || caller.is_rotation() {
            return Err(ApiError::AccessDenied(
                "Temporary credentials cannot get more temporary credentials; call with a \
                 long-term access key."
                    .to_owned(),
            ));
        }
        let access_key_id = format!("BTS{}", random_chars(17, ALPHABET_UPPER_DIGITS)?);
        let secret = random_chars(40, ALPHABET_KEY)?;
        let token = format!("bst_{}", random_chars(64, ALPHABET_KEY)?);
        let expires_at = now_ms() + seconds_valid * 1000;
        let record = AccessKeyRecord {
            sealed_secret: self
                .root_key
                .seal(secret.as_bytes(), &access_key_aad(&access_key_id))?,
            access_key_id: access_key_id.clone(),
            user_name: caller.principal.name.clone(),
            created_at: now_ms(),
            scope_arn: None,
            expires_at: Some(expires_at),
            session_token_hash: Some(baton_crypto::sha256(token.as_bytes())),
        };
        self.store.insert_access_key(&record).await?;
        Ok(p::GetSessionTokenResponse {
            credentials: Some(p::Credentials {
                access_key_id: Some(access_key_id),
                secret_access_key: Some(secret),
                session_token: Some(token),
                expiration: Some(seconds(expires_at)),
            }),
        })
    }
}

//! Authorization: who a caller is (a principal with its policies) and whether it may do what it
//! asks. Every operation is checked; `dispatch` refuses to answer an operation that succeeded
//! without a check (see [`AuthzNote::checked`]), so a new operation cannot forget one.

use std::sync::{Arc, Mutex};

use baton_core::{SecretRecord, Tag};
use baton_iam::{Context, Decision, Policy, PolicyKind, PolicySet, Request, Source};
use baton_store::AccessKeyRecord;

use crate::state::now_ms;
use crate::{ApiError, Baton, Caller};

/// The KMS key that AWS uses when a secret names none; its use needs no permission of its own.
pub const DEFAULT_KMS_KEY: &str = "alias/aws/secretsmanager";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The bootstrap administrator: full rights, no policy is evaluated.
    Admin,
    User,
    Service,
    /// A rotation's temporary credentials: the steps of one rotation on one secret.
    Rotation,
}

impl PrincipalKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            "service" => Some(Self::Service),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Service => "service",
            Self::Rotation => "rotation",
        }
    }
}

/// The ARN a principal has in policies, error messages and the audit log.
pub fn principal_arn(account_id: &str, kind: PrincipalKind, name: &str) -> String {
    match kind {
        PrincipalKind::Admin => format!("arn:aws:iam::{account_id}:root"),
        PrincipalKind::User => format!("arn:aws:iam::{account_id}:user/{name}"),
        PrincipalKind::Service => format!("arn:aws:iam::{account_id}:role/{name}"),
        PrincipalKind::Rotation => {
            format!("arn:aws:sts::{account_id}:assumed-role/baton-rotation/{name}")
        }
    }
}

/// Who is calling, with everything needed to decide its requests.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    pub arn: String,
    pub kind: PrincipalKind,
    /// Identity policies, by name, parsed once when the access key is looked up.
    pub policies: Vec<(String, Policy)>,
    /// Temporary credentials' limit, if any.
    pub session: Option<Policy>,
    /// Whether the credentials are temporary (a session token was required).
    pub temporary: bool,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.kind == PrincipalKind::Admin
    }

    /// The administrator, for in-process callers (benchmarks and tests).
    pub fn admin(account_id: &str) -> Self {
        Principal {
            name: "admin".into(),
            arn: principal_arn(account_id, PrincipalKind::Admin, "admin"),
            kind: PrincipalKind::Admin,
            policies: vec![],
            session: None,
            temporary: false,
        }
    }
}

/// What a rotation's temporary credentials may call: the steps of an AWS rotation function.
const ROTATION_ACTIONS: &[&str] = &[
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ListSecretVersionIds",
];

/// The policy of a rotation's temporary credentials: its steps on its secret, and random
/// passwords.
fn rotation_policy(secret_arn: &str) -> Policy {
    let mut policy = Policy::allowing(ROTATION_ACTIONS, &[secret_arn]);
    policy.extend(Policy::allowing(
        &["secretsmanager:GetRandomPassword"],
        &["*"],
    ));
    policy
}

/// What authorization decided during one request, for its audit entry.
#[derive(Debug, Default, Clone)]
pub struct AuthzNote {
    /// Whether any check ran.
    pub checked: bool,
    /// Resources checked, as the caller named them.
    pub resources: Vec<String>,
    /// Why: the policy that allowed, or the denial.
    pub reason: String,
    pub denied: bool,
}

impl AuthzNote {
    fn record(&mut self, shown: &str, reason: String, denied: bool) {
        self.checked = true;
        if !self.resources.iter().any(|r| r == shown) && self.resources.len() < 20 {
            self.resources.push(shown.to_owned());
        }
        if denied || !self.denied {
            self.reason = reason;
        }
        self.denied |= denied;
    }
}

pub(crate) type SharedNote = Arc<Mutex<AuthzNote>>;

/// What a check is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub action: &'a str,
    /// The resource's ARN, or `*`.
    pub arn: &'a str,
    /// The resource as the caller named it: what a denial message shows, so a denial reveals
    /// nothing the caller did not say.
    pub shown: &'a str,
    pub resource_policy: Option<&'a str>,
    pub tags: &'a [Tag],
}

impl<'a> Target<'a> {
    /// A resource with no policy or tags of its own, named by its ARN.
    pub fn named(action: &'a str, arn: &'a str) -> Self {
        Target {
            action,
            arn,
            shown: arn,
            resource_policy: None,
            tags: &[],
        }
    }

    pub fn global(action: &'a str) -> Self {
        Target {
            action,
            arn: "*",
            shown: "*",
            resource_policy: None,
            tags: &[],
        }
    }
}

fn denial_message(caller: &Caller, target: &Target<'_>, decision: &Decision) -> String {
    let who = &caller.principal.arn;
    let (action, shown) = (target.action, target.shown);
    match decision {
        Decision::ExplicitDeny { source, .. } => format!(
            "User: {who} is not authorized to perform: {action} on resource: {shown} with an \
             explicit deny in {}",
            source.kind_phrase()
        ),
        Decision::ImplicitDeny { missing } => format!(
            "User: {who} is not authorized to perform: {action} on resource: {shown} because \
             no {} allows the {action} action",
            match missing {
                Source::Session => "session policy",
                _ => "identity-based policy",
            }
        ),
        Decision::Allow(_) => String::new(),
    }
}

fn reason(decision: &Decision) -> String {
    let name = |source: &Source| match source {
        Source::Identity(name) if !name.is_empty() => format!("identity policy {name}"),
        Source::Identity(_) => "no identity policy".to_owned(),
        Source::Resource => "the resource policy".to_owned(),
        Source::Session => "the session policy".to_owned(),
    };
    match decision {
        Decision::Allow(source) => format!("allowed by {}", name(source)),
        Decision::ExplicitDeny { source, sid } => format!(
            "explicit deny in {}{}",
            name(source),
            sid.as_ref()
                .map(|s| format!(" (Sid {s})"))
                .unwrap_or_default()
        ),
        Decision::ImplicitDeny {
            missing: Source::Session,
        } => "not allowed by the session policy".to_owned(),
        Decision::ImplicitDeny { .. } => "no policy allows it".to_owned(),
    }
}

/// The ARN of a KMS key as a secret names it (key id, alias or ARN).
pub fn kms_key_arn(caller: &Caller, key: &str) -> String {
    if key.starts_with("arn:") {
        key.to_owned()
    } else if key.starts_with("alias/") {
        format!("arn:aws:kms:{}:{}:{key}", caller.region, caller.account_id)
    } else {
        format!(
            "arn:aws:kms:{}:{}:key/{key}",
            caller.region, caller.account_id
        )
    }
}

impl Baton {
    /// The principal an access key acts as, with its policies parsed.
    pub(crate) async fn load_principal(
        &self,
        key: &AccessKeyRecord,
    ) -> Result<Arc<Principal>, ApiError> {
        let temporary = key.session_token_hash.is_some();
        if let Some(scope) = &key.scope_arn {
            let mut session = rotation_policy(scope);
            let mut policies = vec![("rotation-scope".to_owned(), session.clone())];
            if let Some(execution) = self.execution_policy(scope).await? {
                session.extend(execution.clone());
                policies.push(("execution-policy".to_owned(), execution));
            }
            return Ok(Arc::new(Principal {
                name: key.access_key_id.clone(),
                arn: principal_arn(
                    &self.account_id,
                    PrincipalKind::Rotation,
                    &key.access_key_id,
                ),
                kind: PrincipalKind::Rotation,
                policies,
                session: Some(session),
                temporary,
            }));
        }
        let unknown = || {
            ApiError::UnrecognizedClient(
                "The security token included in the request is invalid.".to_owned(),
            )
        };
        let mut principal = self
            .principal_named(&key.user_name)
            .await?
            .ok_or_else(unknown)?;
        principal.temporary = temporary;
        Ok(Arc::new(principal))
    }

    /// The execution policy of the rotator that rotates `secret_arn`: an operator's command's
    /// `policy`, or a webhook's `PolicyDocument`. A policy that no longer parses fails the
    /// request rather than leaving out a statement that might have been a Deny.
    async fn execution_policy(&self, secret_arn: &str) -> Result<Option<Policy>, ApiError> {
        let Some(secret) = self.store.find_secret_by_arn(secret_arn).await? else {
            return Ok(None);
        };
        let Some(lambda) = secret.rotation.lambda_arn.as_deref() else {
            return Ok(None);
        };
        let name = baton_engine::rotator_name(lambda);
        let document = match self
            .command_rotators
            .find(name)
            .map_err(ApiError::Internal)?
        {
            Some(command) => command.policy,
            None => self
                .store
                .find_rotator(name)
                .await?
                .and_then(|r| r.execution_policy),
        };
        document
            .map(|d| {
                Policy::parse(&d, PolicyKind::Identity).map_err(|e| {
                    ApiError::Internal(format!(
                        "the execution policy of rotator {name} cannot be enforced: {e}"
                    ))
                })
            })
            .transpose()
    }

    /// A stored principal with its policies parsed, or `None` if there is no such principal.
    pub(crate) async fn principal_named(&self, name: &str) -> Result<Option<Principal>, ApiError> {
        let Some(record) = self.store.find_principal(name).await? else {
            return Ok(None);
        };
        let kind = PrincipalKind::parse(&record.kind).ok_or_else(|| {
            ApiError::Internal(format!(
                "principal {} has unknown kind {:?}",
                record.name, record.kind
            ))
        })?;
        let mut policies = Vec::new();
        if kind != PrincipalKind::Admin {
            for stored in self.store.list_principal_policies(&record.name).await? {
                // Skipping a policy that does not parse could skip a Deny: refuse instead.
                let policy =
                    Policy::parse(&stored.document, PolicyKind::Identity).map_err(|e| {
                        ApiError::Internal(format!(
                            "policy {} of principal {} cannot be enforced: {e}",
                            stored.policy_name, record.name
                        ))
                    })?;
                policies.push((stored.policy_name, policy));
            }
        }
        Ok(Some(Principal {
            arn: principal_arn(&self.account_id, kind, &record.name),
            name: record.name,
            kind,
            policies,
            session: None,
            temporary: false,
        }))
    }

    /// The condition keys of a request on a resource with these tags.
    fn context(&self, caller: &Caller, tags: &[Tag]) -> Context {
        let mut ctx = Context::new();
        ctx.set_time(now_ms())
            .set("aws:PrincipalArn", caller.principal.arn.clone())
            .set("aws:PrincipalAccount", caller.account_id.clone())
            .set("aws:RequestedRegion", caller.region.clone())
            .set("aws:SecureTransport", caller.secure_transport.to_string())
            .set(
                "aws:PrincipalType",
                match caller.principal.kind {
                    PrincipalKind::Admin => "Account",
                    PrincipalKind::User => "User",
                    PrincipalKind::Service | PrincipalKind::Rotation => "AssumedRole",
                },
            );
        if caller.principal.kind == PrincipalKind::User {
            ctx.set("aws:username", caller.principal.name.clone());
        }
        if let Some(ip) = caller.source_ip {
            ctx.set("aws:SourceIp", ip.to_string());
        }
        for tag in tags {
            ctx.set(
                &format!("secretsmanager:ResourceTag/{}", tag.key),
                tag.value.clone(),
            );
            ctx.set(&format!("aws:ResourceTag/{}", tag.key), tag.value.clone());
        }
        ctx
    }

    /// Decides one request and notes the decision for the audit log.
    pub(crate) fn authorize(&self, caller: &Caller, target: Target<'_>) -> Result<(), ApiError> {
        let decision = self.decide(caller, &target)?;
        self.conclude(caller, target, decision, None)
    }

    /// What the policies decide for the request, recording nothing; `None` for the
    /// administrator.
    pub(crate) fn decide(
        &self,
        caller: &Caller,
        target: &Target<'_>,
    ) -> Result<Option<Decision>, ApiError> {
        let principal = &caller.principal;
        if principal.is_admin() {
            return Ok(None);
        }
        let resource_policy = match target.resource_policy {
            Some(text) => Some(Policy::parse(text, PolicyKind::Resource).map_err(|e| {
                ApiError::Internal(format!(
                    "the resource policy of {} cannot be enforced: {e}",
                    target.arn
                ))
            })?),
            None => None,
        };
        let ctx = self.context(caller, target.tags);
        Ok(Some(baton_iam::evaluate(
            PolicySet {
                identity: &principal.policies,
                resource: resource_policy.as_ref(),
                session: principal.session.as_ref(),
            },
            &Request {
                principal_arn: &principal.arn,
                account_id: &caller.account_id,
                action: target.action,
                resource: target.arn,
                context: &ctx,
            },
        )))
    }

    /// Whether a KMS grant could turn `decision` into an allow: only an implicit deny that no
    /// session policy caused can be.
    pub(crate) fn grant_may_allow(decision: Option<&Decision>) -> bool {
        matches!(decision, Some(Decision::ImplicitDeny { missing }) if !matches!(missing, Source::Session))
    }

    /// Records `decision` in the request's note and answers it. `grant` names a KMS grant
    /// that allows the request: it turns an implicit deny into an allow, never an explicit
    /// deny, and a session policy still bounds temporary credentials.
    pub(crate) fn conclude(
        &self,
        caller: &Caller,
        target: Target<'_>,
        decision: Option<Decision>,
        grant: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut note = caller.note.lock().unwrap_or_else(|e| e.into_inner());
        match (decision, grant) {
            (None, _) => {
                note.record(target.shown, "administrator".to_owned(), false);
                Ok(())
            }
            (Some(d), _) if d.is_allowed() => {
                note.record(target.shown, reason(&d), false);
                Ok(())
            }
            (Some(d), Some(grant)) if Self::grant_may_allow(Some(&d)) => {
                note.record(target.shown, format!("allowed by grant {grant}"), false);
                Ok(())
            }
            (Some(d), _) => {
                note.record(target.shown, reason(&d), true);
                Err(ApiError::AccessDenied(denial_message(caller, &target, &d)))
            }
        }
    }

    /// Whether the caller's identity policies allow an action on a resource, ignoring resource
    /// policies, tags and conditions that only a request has: a hint for a front end choosing
    /// which actions to offer, never a decision. The request itself is authorized in full.
    pub fn may(&self, caller: &Caller, action: &str, arn: &str) -> bool {
        let probe = Caller::new(
            &caller.access_key_id,
            &caller.account_id,
            &caller.region,
            caller.principal.clone(),
        );
        self.authorize(&probe, Target::named(action, arn)).is_ok()
    }

    /// Notes that a request that names nothing to act on (an empty report) needed no check:
    /// a deliberate decision, unlike an operation that forgot its check.
    pub(crate) fn nothing_to_authorize(&self, caller: &Caller, why: &str) {
        let mut note = caller.note.lock().unwrap_or_else(|e| e.into_inner());
        note.record("-", why.to_owned(), false);
    }

    /// Checks the caller's action on a secret, found or not. For a secret that does not exist
    /// the check runs against the ARN its name would have, so that a caller who may not see a
    /// secret is denied whether or not it exists.
    pub(crate) fn authorize_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        found: Option<(&SecretRecord, &str)>,
    ) -> Result<(), ApiError> {
        let action = caller.action.as_str();
        match found {
            Some((secret, arn)) => self.authorize(
                caller,
                Target {
                    action,
                    arn,
                    shown: secret_id,
                    resource_policy: secret.resource_policy.as_deref(),
                    tags: &secret.tags,
                },
            ),
            None => {
                let arn = if secret_id.starts_with("arn:") {
                    secret_id.to_owned()
                } else {
                    self.pending_secret_arn(caller, secret_id)
                };
                self.authorize(
                    caller,
                    Target {
                        action,
                        arn: &arn,
                        shown: secret_id,
                        resource_policy: None,
                        tags: &[],
                    },
                )
            }
        }
    }

    /// The ARN a secret of this name has before its random suffix is known: policies written
    /// for `name-*` or `name-??????` match it, a policy naming one existing secret does not.
    pub(crate) fn pending_secret_arn(&self, caller: &Caller, name: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-??????",
            caller.region, caller.account_id
        )
    }

    /// Reading or writing a value also uses the secret's KMS key, as in AWS: a customer key
    /// needs `kms:Decrypt` (reads) or `kms:GenerateDataKey` (writes) of its own.
    pub(crate) fn authorize_key_use(
        &self,
        caller: &Caller,
        kms_key_id: Option<&str>,
        action: &str,
    ) -> Result<(), ApiError> {
        let Some(key) = kms_key_id.filter(|k| *k != DEFAULT_KMS_KEY && !k.is_empty()) else {
            return Ok(());
        };
        let arn = kms_key_arn(caller, key);
        self.authorize(
            caller,
            Target {
                action,
                arn: &arn,
                shown: &arn,
                resource_policy: None,
                tags: &[],
            },
        )
        .map_err(|e| match e {
            ApiError::AccessDenied(m) => ApiError::AccessDenied(format!(
                "Access to KMS is not allowed: the secret is encrypted under {key}, and {m}"
            )),
            other => other,
        })
    }
}

//! Resource policies on secrets: put, get, delete, and the validator's findings.

use super::*;

/// What ValidateResourcePolicy reports about a secret's resource policy: the document's own
/// problems, actions that do not apply to a secret, and broad access. Malformed JSON is an error.
pub(crate) fn resource_policy_findings(text: &str) -> Result<Vec<baton_iam::Finding>, ApiError> {
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

impl Baton {
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
}

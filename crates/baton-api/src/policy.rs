//! Resource policy documents: parsed and checked as IAM JSON policies. Evaluating them comes
//! with authorization; here they are validated and stored.

use serde_json::Value;

/// The size AWS allows for a resource policy.
pub const POLICY_CHARS_MAX: usize = 20_480;

/// One finding of the validation, as ValidateResourcePolicy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check_name: &'static str,
    pub message: String,
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Parses a policy. `Err` means it is not a JSON policy document at all (malformed); `Ok`
/// carries findings that make it invalid or risky.
pub fn check(text: &str) -> Result<(Value, Vec<Finding>), String> {
    if text.len() > POLICY_CHARS_MAX {
        return Err(format!(
            "The policy is {} characters long; the limit is {POLICY_CHARS_MAX}.",
            text.len()
        ));
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("The policy is not valid JSON: {e}"))?;
    let Some(object) = doc.as_object() else {
        return Err("The policy must be a JSON object.".to_owned());
    };
    let mut findings = Vec::new();
    let mut syntax = |message: String| {
        findings.push(Finding {
            check_name: "SYNTAX_CHECK",
            message,
        })
    };
    match object.get("Version").and_then(Value::as_str) {
        Some("2012-10-17") | Some("2008-10-17") => {}
        Some(other) => syntax(format!(
            "Version '{other}' is not a policy language version; use \"2012-10-17\"."
        )),
        None => syntax("The policy has no Version; use \"2012-10-17\".".to_owned()),
    }
    let Some(statements) = object.get("Statement") else {
        syntax("The policy has no Statement.".to_owned());
        return Ok((doc.clone(), findings));
    };
    for (i, statement) in as_list(statements).into_iter().enumerate() {
        let Some(st) = statement.as_object() else {
            syntax(format!("Statement {i} is not an object."));
            continue;
        };
        match st.get("Effect").and_then(Value::as_str) {
            Some("Allow") | Some("Deny") => {}
            _ => syntax(format!(
                "Statement {i}: Effect must be \"Allow\" or \"Deny\"."
            )),
        }
        if !st.contains_key("Principal") && !st.contains_key("NotPrincipal") {
            syntax(format!(
                "Statement {i}: a resource policy statement must name a Principal."
            ));
        }
        let actions = st.get("Action").or_else(|| st.get("NotAction"));
        match actions {
            None => syntax(format!("Statement {i}: Action or NotAction is required.")),
            Some(actions) => {
                for action in as_list(actions) {
                    match action.as_str() {
                        Some(a)
                            if a == "*"
                                || a.to_ascii_lowercase().starts_with("secretsmanager:") => {}
                        Some(a) => syntax(format!(
                            "Statement {i}: action '{a}' does not apply to Secrets Manager."
                        )),
                        None => syntax(format!("Statement {i}: actions must be strings.")),
                    }
                }
            }
        }
        if !st.contains_key("Resource") && !st.contains_key("NotResource") {
            syntax(format!(
                "Statement {i}: Resource or NotResource is required."
            ));
        }
    }
    Ok((doc, findings))
}

/// Whether a policy allows anyone at all (`"*"` principal) without a condition.
pub fn grants_public_access(doc: &Value) -> bool {
    let Some(statements) = doc.get("Statement") else {
        return false;
    };
    as_list(statements).into_iter().any(|st| {
        let allows = st.get("Effect").and_then(Value::as_str) == Some("Allow");
        let unconditioned = st.get("Condition").is_none();
        let public = match st.get("Principal") {
            Some(Value::String(s)) => s == "*",
            Some(Value::Object(p)) => p
                .values()
                .flat_map(as_list)
                .any(|v| v.as_str() == Some("*")),
            _ => false,
        };
        allows && unconditioned && public
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sound_policy_has_no_findings() {
        let (doc, findings) = check(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#,
        )
        .unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        assert!(!grants_public_access(&doc));
    }

    #[test]
    fn findings_name_what_is_wrong() {
        let (_, findings) =
            check(r#"{"Statement":{"Effect":"Maybe","Action":"s3:GetObject"}}"#).unwrap();
        let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains("no Version")),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m.contains("Effect")));
        assert!(messages.iter().any(|m| m.contains("Principal")));
        assert!(messages.iter().any(|m| m.contains("s3:GetObject")));
        assert!(messages.iter().any(|m| m.contains("Resource")));
        assert!(check("not json").is_err());
        assert!(check("[1]").is_err());
    }

    #[test]
    fn public_principals_without_conditions_are_detected() {
        let (doc, _) = check(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"secretsmanager:*","Resource":"*"}}"#,
        )
        .unwrap();
        assert!(grants_public_access(&doc));
    }
}

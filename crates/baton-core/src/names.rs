//! Validation of names, tokens and labels, following the AWS Secrets Manager API reference.

use crate::CoreError;

/// Number of random characters Secrets Manager appends to a secret's name in its ARN.
pub const ARN_SUFFIX_LEN: usize = 6;

const NAME_LEN_MAX: usize = 512;
const TOKEN_LEN_MIN: usize = 32;
const TOKEN_LEN_MAX: usize = 64;
const STAGE_LEN_MAX: usize = 256;

fn length_error(field: &str, op: &str, bound: usize) -> CoreError {
    CoreError::Validation(format!(
        "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
         Member must have length {op} {bound}"
    ))
}

/// Checks a secret name: 1 to 512 characters from ASCII letters, digits and `/_+=.@-`.
pub fn validate_secret_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() {
        return Err(length_error("name", "greater than or equal to", 1));
    }
    if name.len() > NAME_LEN_MAX {
        return Err(length_error("name", "less than or equal to", NAME_LEN_MAX));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if !name.chars().all(allowed) {
        return Err(CoreError::InvalidParameter(
            "Invalid name. Must be a valid name containing alphanumeric characters, \
             or any of the following: -/_+=.@!"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Checks a ClientRequestToken (the version id): 32 to 64 characters.
pub fn validate_client_request_token(token: &str) -> Result<(), CoreError> {
    if token.len() < TOKEN_LEN_MIN {
        return Err(length_error(
            "clientRequestToken",
            "greater than or equal to",
            TOKEN_LEN_MIN,
        ));
    }
    if token.len() > TOKEN_LEN_MAX {
        return Err(length_error(
            "clientRequestToken",
            "less than or equal to",
            TOKEN_LEN_MAX,
        ));
    }
    Ok(())
}

/// Checks a staging label: 1 to 256 characters.
pub fn validate_version_stage(stage: &str) -> Result<(), CoreError> {
    if stage.is_empty() {
        return Err(length_error("versionStage", "greater than or equal to", 1));
    }
    if stage.len() > STAGE_LEN_MAX {
        return Err(length_error(
            "versionStage",
            "less than or equal to",
            STAGE_LEN_MAX,
        ));
    }
    Ok(())
}

/// The parts of a Secrets Manager ARN: `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>[-XXXXXX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    /// The resource part after `secret:`, which is the name, possibly followed by the 6-character suffix.
    pub resource: &'a str,
}

/// Parses a secret ARN, or returns `None` when `id` is not one (it is then a name).
pub fn parse_secret_arn(id: &str) -> Option<SecretArn<'_>> {
    let rest = id.strip_prefix("arn:")?;
    let mut parts = rest.splitn(6, ':');
    let _partition = parts.next()?;
    if parts.next()? != "secretsmanager" {
        return None;
    }
    let region = parts.next()?;
    let account = parts.next()?;
    if parts.next()? != "secret" {
        return None;
    }
    let resource = parts.next()?;
    Some(SecretArn {
        region,
        account,
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_aws_character_set_and_length() {
        assert!(validate_secret_name("prod/db+main=1.x@y_z-w").is_ok());
        assert!(matches!(
            validate_secret_name("has space"),
            Err(CoreError::InvalidParameter(_))
        ));
        assert!(matches!(
            validate_secret_name(""),
            Err(CoreError::Validation(_))
        ));
        assert!(validate_secret_name(&"a".repeat(512)).is_ok());
        assert!(matches!(
            validate_secret_name(&"a".repeat(513)),
            Err(CoreError::Validation(_))
        ));
    }

    #[test]
    fn tokens_must_be_32_to_64_characters() {
        assert!(validate_client_request_token(&"x".repeat(31)).is_err());
        assert!(validate_client_request_token(&"x".repeat(32)).is_ok());
        assert!(validate_client_request_token(&"x".repeat(64)).is_ok());
        assert!(validate_client_request_token(&"x".repeat(65)).is_err());
    }

    #[test]
    fn arns_parse_into_region_account_and_resource() {
        let arn =
            parse_secret_arn("arn:aws:secretsmanager:eu-west-1:123456789012:secret:a/b-AbC123")
                .expect("valid arn");
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "123456789012");
        assert_eq!(arn.resource, "a/b-AbC123");
        assert_eq!(parse_secret_arn("plain-name"), None);
        assert_eq!(parse_secret_arn("arn:aws:kms:r:a:key/x"), None);
    }
}

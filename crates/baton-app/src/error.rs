//! `ApiError`: every error a request can end in, and its one mapping to AWS's wire shape.

use baton_core::CoreError;
use baton_store::StoreError;
use http::StatusCode;

/// An error returned to a client. Each variant maps to exactly one `(status, __type)` pair in
/// [`ApiError::wire`]; the match there has no catch-all arm, so adding a variant forces a
/// decision about its wire code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    MissingAuthenticationToken(String),
    #[error("{0}")]
    IncompleteSignature(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    UnrecognizedClient(String),
    #[error("{0}")]
    ExpiredToken(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidNextToken(String),
    #[error("{0}")]
    ResourceExists(String),
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    PublicPolicy(String),
    #[error("{0}")]
    PreconditionNotMet(String),
    /// The request body is larger than the server accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request ran past the server's time limit.
    #[error("{0}")]
    Timeout(String),
    /// The KMS key named by a secret's KmsKeyId cannot wrap its data key.
    #[error("{0}")]
    EncryptionFailure(String),
    /// The KMS key that wraps a secret's data key cannot unwrap it.
    #[error("{0}")]
    DecryptionFailure(String),
    /// KMS: no key or alias by that name (`NotFoundException`).
    #[error("{0}")]
    KmsNotFound(String),
    #[error("{0}")]
    KmsDisabled(String),
    #[error("{0}")]
    KmsInvalidState(String),
    #[error("{0}")]
    KmsInvalidCiphertext(String),
    #[error("{0}")]
    KmsIncorrectKey(String),
    #[error("{0}")]
    KmsInvalidKeyUsage(String),
    #[error("{0}")]
    KmsInvalidSignature(String),
    #[error("{0}")]
    KmsInvalidMac(String),
    #[error("{0}")]
    KmsAlreadyExists(String),
    #[error("{0}")]
    KmsInvalidAliasName(String),
    #[error("{0}")]
    KmsNotAuthorized(String),
    #[error("{0}")]
    KmsUnsupportedOperation(String),
    #[error("{0}")]
    KmsInvalidMarker(String),
    #[error("{0}")]
    KmsTag(String),
    #[error("{0}")]
    KmsConflict(String),
    #[error("{0}")]
    KmsInvalidArn(String),
    #[error("{0}")]
    KmsInvalidGrantToken(String),
    #[error("{0}")]
    KmsInvalidGrantId(String),
    /// A request with `DryRun` that would have succeeded.
    #[error("{0}")]
    KmsDryRun(String),
    /// A failure on Baton's side. The message is generic; details go to the log only.
    #[error("{0}")]
    Internal(String),
}

/// Whether the body's message member is spelled `message` (front-end errors) or `Message`
/// (service errors), as AWS spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKey {
    Lower,
    Upper,
}

impl ApiError {
    pub fn wire(&self) -> (StatusCode, &'static str, MessageKey) {
        use MessageKey::{Lower, Upper};
        let bad = StatusCode::BAD_REQUEST;
        match self {
            ApiError::MissingAuthenticationToken(_) => {
                (bad, "MissingAuthenticationTokenException", Lower)
            }
            ApiError::IncompleteSignature(_) => (bad, "IncompleteSignatureException", Lower),
            ApiError::InvalidSignature(_) => (bad, "InvalidSignatureException", Lower),
            ApiError::UnrecognizedClient(_) => (bad, "UnrecognizedClientException", Lower),
            ApiError::ExpiredToken(_) => (bad, "ExpiredTokenException", Lower),
            ApiError::AccessDenied(_) => (bad, "AccessDeniedException", Lower),
            ApiError::Serialization(_) => (bad, "SerializationException", Lower),
            ApiError::UnknownOperation(_) => (bad, "UnknownOperationException", Lower),
            ApiError::Validation(_) => (bad, "ValidationException", Lower),
            ApiError::InvalidParameter(_) => (bad, "InvalidParameterException", Upper),
            ApiError::InvalidRequest(_) => (bad, "InvalidRequestException", Upper),
            ApiError::InvalidNextToken(_) => (bad, "InvalidNextTokenException", Upper),
            ApiError::ResourceExists(_) => (bad, "ResourceExistsException", Upper),
            ApiError::ResourceNotFound(_) => (bad, "ResourceNotFoundException", Upper),
            ApiError::LimitExceeded(_) => (bad, "LimitExceededException", Upper),
            ApiError::MalformedPolicyDocument(_) => {
                (bad, "MalformedPolicyDocumentException", Upper)
            }
            ApiError::PublicPolicy(_) => (bad, "PublicPolicyException", Upper),
            ApiError::PreconditionNotMet(_) => (bad, "PreconditionNotMetException", Upper),
            ApiError::EncryptionFailure(_) => (bad, "EncryptionFailure", Upper),
            ApiError::DecryptionFailure(_) => (bad, "DecryptionFailure", Upper),
            ApiError::KmsNotFound(_) => (bad, "NotFoundException", Lower),
            ApiError::KmsDisabled(_) => (bad, "DisabledException", Lower),
            ApiError::KmsInvalidState(_) => (bad, "KMSInvalidStateException", Lower),
            ApiError::KmsInvalidCiphertext(_) => (bad, "InvalidCiphertextException", Lower),
            ApiError::KmsIncorrectKey(_) => (bad, "IncorrectKeyException", Lower),
            ApiError::KmsInvalidKeyUsage(_) => (bad, "InvalidKeyUsageException", Lower),
            ApiError::KmsInvalidSignature(_) => (bad, "KMSInvalidSignatureException", Lower),
            ApiError::KmsInvalidMac(_) => (bad, "KMSInvalidMacException", Lower),
            ApiError::KmsAlreadyExists(_) => (bad, "AlreadyExistsException", Lower),
            ApiError::KmsInvalidAliasName(_) => (bad, "InvalidAliasNameException", Lower),
            ApiError::KmsNotAuthorized(_) => (bad, "NotAuthorizedException", Lower),
            ApiError::KmsUnsupportedOperation(_) => (bad, "UnsupportedOperationException", Lower),
            ApiError::KmsInvalidMarker(_) => (bad, "InvalidMarkerException", Lower),
            ApiError::KmsTag(_) => (bad, "TagException", Lower),
            ApiError::KmsConflict(_) => (bad, "ConflictException", Lower),
            ApiError::KmsInvalidArn(_) => (bad, "InvalidArnException", Lower),
            ApiError::KmsInvalidGrantToken(_) => (bad, "InvalidGrantTokenException", Lower),
            ApiError::KmsInvalidGrantId(_) => (bad, "InvalidGrantIdException", Lower),
            ApiError::KmsDryRun(_) => (
                StatusCode::PRECONDITION_FAILED,
                "DryRunOperationException",
                Lower,
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                Lower,
            ),
            ApiError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "RequestTimeoutException",
                Lower,
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServiceError",
                Upper,
            ),
        }
    }

    pub fn error_type(&self) -> &'static str {
        self.wire().1
    }

    /// The JSON body, serialised from `baton-proto`'s error type.
    pub fn body(&self) -> Vec<u8> {
        let (_, error_type, key) = self.wire();
        let message = self.to_string();
        let value = match key {
            MessageKey::Upper => serde_json::json!({ "__type": error_type, "Message": message }),
            MessageKey::Lower => serde_json::json!({ "__type": error_type, "message": message }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    pub fn secret_not_found() -> Self {
        ApiError::ResourceNotFound("Secrets Manager can't find the specified secret.".to_owned())
    }

    /// A required member is absent, in the front end's wording.
    pub fn missing(member: &str) -> Self {
        ApiError::Validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: \
             Member must not be null"
        ))
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidParameter(m) => ApiError::InvalidParameter(m),
            CoreError::InvalidRequest(m) => ApiError::InvalidRequest(m),
            CoreError::Validation(m) => ApiError::Validation(m),
            CoreError::ResourceExists(m) => ApiError::ResourceExists(m),
            CoreError::ResourceNotFound(m) => ApiError::ResourceNotFound(m),
            CoreError::LimitExceeded(m) => ApiError::LimitExceeded(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::Internal("An error occurred on the server side.".to_owned())
    }
}

impl From<baton_crypto::CryptoError> for ApiError {
    fn from(e: baton_crypto::CryptoError) -> Self {
        tracing::error!(error = %e, "crypto error");
        ApiError::Internal("An error occurred on the server side.".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_use_capital_message_and_front_end_errors_lower_case() {
        let body = String::from_utf8(ApiError::secret_not_found().body()).unwrap();
        assert_eq!(
            body,
            r#"{"Message":"Secrets Manager can't find the specified secret.","__type":"ResourceNotFoundException"}"#
        );
        let body = String::from_utf8(
            ApiError::MissingAuthenticationToken("Missing Authentication Token".into()).body(),
        )
        .unwrap();
        assert!(
            body.contains(r#""message":"Missing Authentication Token""#),
            "{body}"
        );
    }
}

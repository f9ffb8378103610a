//! Errors raised by the domain rules. Each names what was wrong; none carries a secret value.

/// A rule of the domain was broken by the request.
///
/// The API layer maps each variant to exactly one AWS error code; see `baton-api`'s `ApiError`.
/// Deliberately not `non_exhaustive`: the API's mapping to wire codes must match every variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A parameter has a value the operation does not accept (AWS `InvalidParameterException`).
    #[error("{0}")]
    InvalidParameter(String),
    /// The request is not valid for the current state of the resource (AWS `InvalidRequestException`).
    #[error("{0}")]
    InvalidRequest(String),
    /// A field breaks a length or pattern constraint (AWS `ValidationException`).
    #[error("{0}")]
    Validation(String),
    /// A resource already exists, or a version would be modified (AWS `ResourceExistsException`).
    #[error("{0}")]
    ResourceExists(String),
    /// The secret or version does not exist (AWS `ResourceNotFoundException`).
    #[error("{0}")]
    ResourceNotFound(String),
    /// A quota was reached (AWS `LimitExceededException`).
    #[error("{0}")]
    LimitExceeded(String),
}

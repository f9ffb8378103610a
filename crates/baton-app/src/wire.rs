//! The small conversions every operation shares, between the wire's members and the
//! domain's values; a leaf module that depends on nothing else in the crate.

use std::time::SystemTime;

use crate::ApiError;

/// The server's clock, in milliseconds since the epoch. Only the server and engine read it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub(crate) fn required<'a>(value: &'a Option<String>, member: &str) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| ApiError::missing(member))
}

pub(crate) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(crate) fn length_error(member: &str, op: &str, bound: usize) -> ApiError {
    ApiError::Validation(format!(
        "1 validation error detected: Value at '{member}' failed to satisfy constraint: Member \
         must have length {op} {bound}"
    ))
}

//! Signatures on the HTTP requests Baton sends (webhook rotators, and later event deliveries).
//!
//! A request carries `Baton-Timestamp: <unix seconds>` and
//! `Baton-Signature: v1=<hex HMAC-SHA256(signing secret, "<timestamp>.<body>")>`. The receiver
//! recomputes the HMAC over the raw body, compares in constant time, and refuses timestamps
//! older than its tolerance, so a captured request cannot be replayed later.

use aws_lc_rs::hmac;

use crate::{CryptoError, SecretBytes};

pub const TIMESTAMP_HEADER: &str = "Baton-Timestamp";
pub const SIGNATURE_HEADER: &str = "Baton-Signature";
/// How old a signed request a receiver should accept, in seconds.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// A new signing secret: `bws_` and 64 hex characters (256 bits from the system generator).
pub fn new_signing_secret() -> Result<SecretBytes, CryptoError> {
    let mut raw = [0u8; 32];
    crate::fill_random(&mut raw)?;
    let text = format!("bws_{}", hex::encode(raw));
    raw.fill(0);
    Ok(SecretBytes::from(text))
}

/// The `Baton-Signature` header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", hex::encode(context.sign().as_ref()))
}

/// The two headers that sign `body` sent at `timestamp`: (`Baton-Timestamp`, `Baton-Signature`).
pub fn signed_headers(secret: &[u8], timestamp: i64, body: &[u8]) -> [(&'static str, String); 2] {
    [
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, sign(secret, timestamp, body)),
    ]
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header has no v1= value")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the timestamp is outside the accepted window")]
    Stale,
}

/// Checks a request's signature header against its raw body, and its timestamp against `now`
/// (both in unix seconds). Several `v1=` values may be listed, comma-separated, while a secret
/// is being changed; one match suffices.
pub fn verify(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let expected = sign(secret, timestamp, body);
    let mut any = false;
    let mut matched = false;
    for candidate in header.split(',').map(str::trim) {
        if candidate.starts_with("v1=") {
            any = true;
            matched |= crate::constant_time_eq(candidate.as_bytes(), expected.as_bytes());
        }
    }
    if !any {
        return Err(SignatureError::Malformed);
    }
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > tolerance_seconds {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_is_refused() {
        let secret = new_signing_secret().unwrap();
        let secret = secret.expose();
        let body = br#"{"Step":"createSecret"}"#;
        let header = sign(secret, 1_700_000_000, body);
        assert!(header.starts_with("v1=") && header.len() == 3 + 64);
        assert_eq!(
            verify(secret, 1_700_000_000, body, &header, 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify(secret, 1_700_000_000, b"{}", &header, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, 1_700_000_001, body, &header, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another secret",
                1_700_000_000,
                body,
                &header,
                1_700_000_010,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, 1_700_000_000, body, &header, 1_700_000_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(
                secret,
                1_700_000_000,
                body,
                "sha256=abc",
                1_700_000_000,
                300
            ),
            Err(SignatureError::Malformed)
        );
        let rolled = format!("v1=00, {header}");
        assert_eq!(
            verify(secret, 1_700_000_000, body, &rolled, 1_700_000_000, 300),
            Ok(())
        );
    }

    /// A fixed vector, computed independently with Python's hmac module, pins the format.
    #[test]
    fn the_signature_matches_an_independent_hmac_sha256() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"bws_test",b"1700000000.hello",hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"bws_test", 1_700_000_000, b"hello"),
            "v1=6673143e4358857a1f9203f8c381d8b0ca6f5fa24a014cea24fb63d1ccbd6b3a"
        );
    }
}

//! The cryptographic half of AWS Signature Version 4: hashing and the signing-key derivation.
//! Parsing and canonicalising requests lives in `baton-api`, which owns HTTP.

use aws_lc_rs::{digest, hmac};

use crate::SecretBytes;

/// Lower-case hex SHA-256 of `data`, as SigV4 writes payload and request hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(
    secret_access_key: &[u8],
    date: &str,
    region: &str,
    service: &str,
) -> SecretBytes {
    let k_secret = SecretBytes::new([b"AWS4".as_slice(), secret_access_key].concat());
    let k_date = hmac_sha256(k_secret.expose(), date.as_bytes());
    let k_region = hmac_sha256(k_date.as_ref(), region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), service.as_bytes());
    let k_signing = hmac_sha256(k_service.as_ref(), b"aws4_request");
    SecretBytes::new(k_signing.as_ref().to_vec())
}

/// Hex HMAC-SHA256 of the string to sign under the derived signing key.
pub fn signature(signing_key: &SecretBytes, string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key.expose(), string_to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example from the AWS General Reference ("Examples of how to derive a signing
    /// key for Signature Version 4").
    #[test]
    fn signing_key_matches_the_aws_reference_example() {
        let key = signing_key(
            b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key.expose()),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn sha256_of_empty_payload() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

//! Cryptography for Baton: envelope encryption at rest, secret memory, random passwords and the
//! SigV4 key derivation.
//!
//! Architecture invariant: every secret byte that this crate hands out lives in a
//! [`SecretBytes`], which wipes itself on drop and never prints its contents. One backend,
//! aws-lc-rs, does all of the work.

mod envelope;
mod harden;
mod keypair;
pub mod kms;
mod password;
mod root_key;
mod secret_bytes;
pub mod sigv4;
pub mod webhook;

pub use envelope::{
    DataKey, MacKey, SEALED_FORMAT_V1, access_key_aad, signing_secret_aad, value_aad,
};
pub use harden::{Hardening, harden_process};
pub use keypair::{GeneratedKeyPair, KeyPairType, generate_key_pair};
pub use password::{
    PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, PasswordError, PasswordOptions, random_password,
};
pub use root_key::{ROOT_SEALED_V2, RootKey, RootKeyId, SealedUnder};
pub use secret_bytes::SecretBytes;

/// A cryptographic operation failed. Messages never include key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("sealed value is malformed or was not sealed for this context")]
    OpenFailed,
    #[error("the system random number generator failed")]
    Random,
    #[error("could not generate a {0} key pair")]
    KeyGeneration(&'static str),
    #[error("the key is not asymmetric")]
    NotAsymmetric,
    #[error("the key id is not a UUID, or the version id is not 1 to 64 ASCII characters")]
    BadKeyId,
    #[error("the signing algorithm does not suit the key")]
    WrongAlgorithm,
    #[error("the digest's length does not match the signing algorithm")]
    DigestLength,
    #[error("the plaintext is longer than the {0} bytes this key and algorithm can encrypt")]
    PlaintextTooLong(usize),
    #[error("root key file {path}: {reason}")]
    RootKeyFile { path: String, reason: String },
    #[error("root key command `{command}`: {reason}")]
    RootKeyCommand { command: String, reason: String },
    #[error("sealed under root key {0}, which this node does not hold")]
    UnknownRootKey(String),
    #[error("root key {0} is the primary and cannot be dropped from the ring")]
    PrimaryRootKey(String),
}

/// Fills `buf` with bytes from the operating system's secure random number generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

/// SHA-256 of `data`, as stored for session tokens (which are high-entropy, so no salt).
pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

//! Key material for Baton's KMS keys: generation per key spec, the versioned ciphertext format,
//! signatures, MACs and RSA encryption. Key material enters and leaves only as [`SecretBytes`];
//! symmetric and HMAC material is raw bytes, asymmetric material is PKCS#8 v1 DER.
//!
//! # Ciphertext format, version 1
//!
//! ```text
//! offset  size  field
//! 0       1     format: 0x01
//! 1       16    key id: the key's UUID, binary
//! 17      1     n: length of the key version id (1..=64)
//! 18      n     key version id, ASCII
//! 18+n    12    AES-GCM nonce, random
//! 30+n    ...   AES-256-GCM ciphertext, then the 16-byte tag
//! ```
//!
//! The authenticated data is `"baton-kms-v1\0"`, the header (bytes `0..18+n`), and the
//! encryption context: its pairs sorted by key, each key and value preceded by its length as a
//! 4-byte big-endian integer. So a blob names the key and version that decrypt it, and cannot be
//! moved to another key, version or context without failing authentication.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair as _, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{CryptoError, SecretBytes};

/// The first byte of every ciphertext blob this module writes.
pub const CIPHERTEXT_FORMAT_V1: u8 = 1;
const AAD_LABEL: &[u8] = b"baton-kms-v1\0";
const TAG_LEN: usize = 16;
/// The longest key version id a ciphertext can carry.
pub const VERSION_ID_MAX: usize = 64;

/// A key spec, named as AWS KMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    SymmetricDefault,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccNistP256,
    EccNistP384,
    EccNistP521,
    /// secp256k1, for signing only (the curve of Bitcoin and Ethereum signers).
    EccSecgP256k1,
    Hmac256,
    Hmac384,
    Hmac512,
}

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
    GenerateVerifyMac,
}

impl KeyUsage {
    pub const ALL: [KeyUsage; 3] = [
        Self::EncryptDecrypt,
        Self::SignVerify,
        Self::GenerateVerifyMac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::EncryptDecrypt => "ENCRYPT_DECRYPT",
            Self::SignVerify => "SIGN_VERIFY",
            Self::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }
}

impl KeySpec {
    pub const ALL: [KeySpec; 11] = [
        Self::SymmetricDefault,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
        Self::EccNistP256,
        Self::EccNistP384,
        Self::EccNistP521,
        Self::EccSecgP256k1,
        Self::Hmac256,
        Self::Hmac384,
        Self::Hmac512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SymmetricDefault => "SYMMETRIC_DEFAULT",
            Self::Rsa2048 => "RSA_2048",
            Self::Rsa3072 => "RSA_3072",
            Self::Rsa4096 => "RSA_4096",
            Self::EccNistP256 => "ECC_NIST_P256",
            Self::EccNistP384 => "ECC_NIST_P384",
            Self::EccNistP521 => "ECC_NIST_P521",
            Self::EccSecgP256k1 => "ECC_SECG_P256K1",
            Self::Hmac256 => "HMAC_256",
            Self::Hmac384 => "HMAC_384",
            Self::Hmac512 => "HMAC_512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The usages AWS allows for this spec; the first is the default.
    pub fn usages(self) -> &'static [KeyUsage] {
        match self {
            Self::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => {
                &[KeyUsage::EncryptDecrypt, KeyUsage::SignVerify]
            }
            Self::EccNistP256 | Self::EccNistP384 | Self::EccNistP521 | Self::EccSecgP256k1 => {
                &[KeyUsage::SignVerify]
            }
            Self::Hmac256 | Self::Hmac384 | Self::Hmac512 => &[KeyUsage::GenerateVerifyMac],
        }
    }

    pub fn is_asymmetric(self) -> bool {
        matches!(
            self,
            Self::Rsa2048
                | Self::Rsa3072
                | Self::Rsa4096
                | Self::EccNistP256
                | Self::EccNistP384
                | Self::EccNistP521
                | Self::EccSecgP256k1
        )
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }

    /// The signing algorithms a key of this spec supports (none unless asymmetric).
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithm] {
        use SigningAlgorithm::*;
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => &[
                RsassaPssSha256,
                RsassaPssSha384,
                RsassaPssSha512,
                RsassaPkcs1V15Sha256,
                RsassaPkcs1V15Sha384,
                RsassaPkcs1V15Sha512,
            ],
            Self::EccNistP256 | Self::EccSecgP256k1 => &[EcdsaSha256],
            Self::EccNistP384 => &[EcdsaSha384],
            Self::EccNistP521 => &[EcdsaSha512],
            _ => &[],
        }
    }

    /// The MAC algorithm of an HMAC key.
    pub fn mac_algorithm(self) -> Option<MacAlgorithm> {
        match self {
            Self::Hmac256 => Some(MacAlgorithm::HmacSha256),
            Self::Hmac384 => Some(MacAlgorithm::HmacSha384),
            Self::Hmac512 => Some(MacAlgorithm::HmacSha512),
            _ => None,
        }
    }

    /// The JWS algorithm a JWT verifier uses with this key's public half.
    pub fn jws_alg(self) -> Option<&'static str> {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => Some("RS256"),
            Self::EccNistP256 => Some("ES256"),
            Self::EccNistP384 => Some("ES384"),
            Self::EccNistP521 => Some("ES512"),
            Self::EccSecgP256k1 => Some("ES256K"),
            _ => None,
        }
    }
}

/// A signing algorithm, named as AWS KMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    RsassaPssSha256,
    RsassaPssSha384,
    RsassaPssSha512,
    RsassaPkcs1V15Sha256,
    RsassaPkcs1V15Sha384,
    RsassaPkcs1V15Sha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 9] = [
        Self::RsassaPssSha256,
        Self::RsassaPssSha384,
        Self::RsassaPssSha512,
        Self::RsassaPkcs1V15Sha256,
        Self::RsassaPkcs1V15Sha384,
        Self::RsassaPkcs1V15Sha512,
        Self::EcdsaSha256,
        Self::EcdsaSha384,
        Self::EcdsaSha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RsassaPssSha256 => "RSASSA_PSS_SHA_256",
            Self::RsassaPssSha384 => "RSASSA_PSS_SHA_384",
            Self::RsassaPssSha512 => "RSASSA_PSS_SHA_512",
            Self::RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            Self::RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            Self::RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
            Self::EcdsaSha256 => "ECDSA_SHA_256",
            Self::EcdsaSha384 => "ECDSA_SHA_384",
            Self::EcdsaSha512 => "ECDSA_SHA_512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::RsassaPssSha256 | Self::RsassaPkcs1V15Sha256 | Self::EcdsaSha256 => {
                &digest::SHA256
            }
            Self::RsassaPssSha384 | Self::RsassaPkcs1V15Sha384 | Self::EcdsaSha384 => {
                &digest::SHA384
            }
            Self::RsassaPssSha512 | Self::RsassaPkcs1V15Sha512 | Self::EcdsaSha512 => {
                &digest::SHA512
            }
        }
    }

    fn rsa_encoding(self) -> &'static dyn signature::RsaEncoding {
        match self {
            Self::RsassaPssSha256 => &signature::RSA_PSS_SHA256,
            Self::RsassaPssSha384 => &signature::RSA_PSS_SHA384,
            Self::RsassaPssSha512 => &signature::RSA_PSS_SHA512,
            Self::RsassaPkcs1V15Sha256 => &signature::RSA_PKCS1_SHA256,
            Self::RsassaPkcs1V15Sha384 => &signature::RSA_PKCS1_SHA384,
            _ => &signature::RSA_PKCS1_SHA512,
        }
    }

    /// The verification algorithm for a key of `spec` (ECDSA with SHA-256 serves two curves).
    fn verification(self, spec: KeySpec) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::EcdsaSha256 if spec == KeySpec::EccSecgP256k1 => {
                &signature::ECDSA_P256K1_SHA256_ASN1
            }
            Self::RsassaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::RsassaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::RsassaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
            Self::RsassaPkcs1V15Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RsassaPkcs1V15Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RsassaPkcs1V15Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::EcdsaSha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcdsaSha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::EcdsaSha512 => &signature::ECDSA_P521_SHA512_ASN1,
        }
    }
}

/// An HMAC algorithm, named as AWS KMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl MacAlgorithm {
    pub const ALL: [MacAlgorithm; 3] = [Self::HmacSha256, Self::HmacSha384, Self::HmacSha512];

    pub fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "HMAC_SHA_256",
            Self::HmacSha384 => "HMAC_SHA_384",
            Self::HmacSha512 => "HMAC_SHA_512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// An RSA encryption algorithm, named as AWS KMS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaEncryption {
    OaepSha1,
    OaepSha256,
}

impl RsaEncryption {
    pub fn name(self) -> &'static str {
        match self {
            Self::OaepSha1 => "RSAES_OAEP_SHA_1",
            Self::OaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::OaepSha1, Self::OaepSha256]
            .into_iter()
            .find(|a| a.name() == name)
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        match self {
            Self::OaepSha1 => &OAEP_SHA1_MGF1SHA1,
            Self::OaepSha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

fn failed<E>(_: E) -> CryptoError {
    CryptoError::OpenFailed
}

/// New key material for `spec`.
pub fn generate_key_material(spec: KeySpec) -> Result<SecretBytes, CryptoError> {
    let random = |len: usize| {
        let mut bytes = vec![0u8; len];
        crate::fill_random(&mut bytes)?;
        Ok(SecretBytes::from(bytes))
    };
    let generation = |_| CryptoError::KeyGeneration(spec.name());
    match spec {
        KeySpec::SymmetricDefault | KeySpec::Hmac256 => random(32),
        KeySpec::Hmac384 => random(48),
        KeySpec::Hmac512 => random(64),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let size = match spec {
                KeySpec::Rsa2048 => KeySize::Rsa2048,
                KeySpec::Rsa3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let pair = RsaKeyPair::generate(size).map_err(generation)?;
            let der: Pkcs8V1Der<'_> = pair.as_der().map_err(generation)?;
            Ok(SecretBytes::from(der.as_ref().to_vec()))
        }
        KeySpec::EccNistP256
        | KeySpec::EccNistP384
        | KeySpec::EccNistP521
        | KeySpec::EccSecgP256k1 => {
            let pair = EcdsaKeyPair::generate(ec_algorithm(spec)).map_err(generation)?;
            let der = pair.to_pkcs8v1().map_err(generation)?;
            Ok(SecretBytes::from(der.as_ref().to_vec()))
        }
    }
}

fn ec_algorithm(spec: KeySpec) -> &'static EcdsaSigningAlgorithm {
    match spec {
        KeySpec::EccNistP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        KeySpec::EccNistP521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        KeySpec::EccSecgP256k1 => &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
        _ => &ECDSA_P256_SHA256_ASN1_SIGNING,
    }
}

/// The public half of asymmetric material: DER SubjectPublicKeyInfo, as GetPublicKey returns it.
pub fn public_key_der(spec: KeySpec, material: &SecretBytes) -> Result<Vec<u8>, CryptoError> {
    Ok(ParsedKey::parse(spec, material)?.public_der)
}

/// The key and version a ciphertext blob names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// The key's UUID in its usual hyphenated form.
    pub key_id: String,
    pub version_id: String,
}

fn key_id_bytes(key_id: &str) -> Result<[u8; 16], CryptoError> {
    let hex_digits: String = key_id.chars().filter(|c| *c != '-').collect();
    let bytes = hex::decode(hex_digits).map_err(|_| CryptoError::BadKeyId)?;
    bytes.try_into().map_err(|_| CryptoError::BadKeyId)
}

fn key_id_text(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn context_aad(header: &[u8], context: &[(String, String)]) -> Vec<u8> {
    let mut pairs: Vec<&(String, String)> = context.iter().collect();
    pairs.sort();
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + 64);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    for (k, v) in pairs {
        for part in [k, v] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
    }
    aad
}

fn aes_key(material: &SecretBytes) -> Result<LessSafeKey, CryptoError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, material.expose()).map_err(failed)?,
    ))
}

/// Encrypts `plaintext` under a symmetric key version into a version-1 blob.
pub fn encrypt_blob(
    material: &SecretBytes,
    key_id: &str,
    version_id: &str,
    context: &[(String, String)],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if version_id.is_empty() || version_id.len() > VERSION_ID_MAX || !version_id.is_ascii() {
        return Err(CryptoError::BadKeyId);
    }
    let mut blob =
        Vec::with_capacity(18 + version_id.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    blob.push(CIPHERTEXT_FORMAT_V1);
    blob.extend_from_slice(&key_id_bytes(key_id)?);
    blob.push(version_id.len() as u8);
    blob.extend_from_slice(version_id.as_bytes());
    let header_len = blob.len();
    let mut nonce = [0u8; NONCE_LEN];
    crate::fill_random(&mut nonce)?;
    blob.extend_from_slice(&nonce);
    let aad = context_aad(&blob[..header_len], context);
    let mut sealed = plaintext.to_vec();
    aes_key(material)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut sealed,
        )
        .map_err(failed)?;
    blob.extend_from_slice(&sealed);
    Ok(blob)
}

/// Reads the key and version a blob names, without decrypting it.
pub fn parse_blob(blob: &[u8]) -> Result<BlobHeader, CryptoError> {
    let bad = || CryptoError::OpenFailed;
    if blob.first() != Some(&CIPHERTEXT_FORMAT_V1) || blob.len() < 18 {
        return Err(bad());
    }
    let n = usize::from(blob[17]);
    if n == 0 || n > VERSION_ID_MAX || blob.len() < 18 + n + NONCE_LEN + TAG_LEN {
        return Err(bad());
    }
    let version_id = std::str::from_utf8(&blob[18..18 + n]).map_err(|_| bad())?;
    Ok(BlobHeader {
        key_id: key_id_text(&blob[1..17]),
        version_id: version_id.to_owned(),
    })
}

/// Decrypts a version-1 blob with the material of the version its header names.
pub fn decrypt_blob(
    material: &SecretBytes,
    blob: &[u8],
    context: &[(String, String)],
) -> Result<SecretBytes, CryptoError> {
    let header = parse_blob(blob)?;
    let header_len = 18 + header.version_id.len();
    let nonce: [u8; NONCE_LEN] = blob[header_len..header_len + NONCE_LEN]
        .try_into()
        .map_err(failed)?;
    let aad = context_aad(&blob[..header_len], context);
    let mut buffer = blob[header_len + NONCE_LEN..].to_vec();
    let plain_len = aes_key(material)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut buffer,
        )
        .map_err(failed)?
        .len();
    buffer.truncate(plain_len);
    Ok(SecretBytes::from(buffer))
}

/// The first bytes of a secret's data key wrapped by a KMS key (instead of the root key).
/// What follows is a version-1 ciphertext blob of the data key, whose encryption context
/// binds it to the secret: `{"baton:secret-id": <secret id>}`.
pub const KMS_WRAPPED_PREFIX: &[u8] = b"BTNK1";

fn secret_context(secret_id: &str) -> [(String, String); 1] {
    [("baton:secret-id".to_owned(), secret_id.to_owned())]
}

/// Wraps a secret's data key under a KMS key version.
pub fn wrap_data_key(
    material: &SecretBytes,
    key_id: &str,
    version_id: &str,
    secret_id: &str,
    data_key: &crate::DataKey,
) -> Result<Vec<u8>, CryptoError> {
    let blob = encrypt_blob(
        material,
        key_id,
        version_id,
        &secret_context(secret_id),
        data_key.bytes.expose(),
    )?;
    Ok([KMS_WRAPPED_PREFIX, &blob].concat())
}

/// The key and version that wrapped a data key, or `None` when the root key wrapped it.
pub fn data_key_wrapper(wrapped: &[u8]) -> Option<BlobHeader> {
    parse_blob(wrapped.strip_prefix(KMS_WRAPPED_PREFIX)?).ok()
}

/// Unwraps a data key that [`wrap_data_key`] wrapped for `secret_id`.
pub fn unwrap_data_key(
    material: &SecretBytes,
    wrapped: &[u8],
    secret_id: &str,
) -> Result<crate::DataKey, CryptoError> {
    let blob = wrapped
        .strip_prefix(KMS_WRAPPED_PREFIX)
        .ok_or(CryptoError::OpenFailed)?;
    crate::DataKey::from_bytes(decrypt_blob(material, blob, &secret_context(secret_id))?)
}

/// Whether `message` is the message itself or its digest (AWS's MessageType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Raw,
    Digest,
}

fn message_digest(
    alg: SigningAlgorithm,
    message: &[u8],
    kind: MessageType,
) -> Result<Digest, CryptoError> {
    match kind {
        MessageType::Raw => Ok(digest::digest(alg.digest(), message)),
        MessageType::Digest => {
            Digest::import_less_safe(message, alg.digest()).map_err(|_| CryptoError::DigestLength)
        }
    }
}

/// Asymmetric key material parsed once, so signing and verifying need no PKCS#8 parse (which
/// for RSA includes checking the key) per call. Dropping it frees aws-lc's structures, and
/// aws-lc zeroes memory it frees.
pub struct ParsedKey {
    spec: KeySpec,
    pair: ParsedPair,
    public_der: Vec<u8>,
}

enum ParsedPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey")
            .field("spec", &self.spec)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl ParsedKey {
    pub fn parse(spec: KeySpec, material: &SecretBytes) -> Result<Self, CryptoError> {
        let (pair, public): (ParsedPair, PublicKeyX509Der<'static>) = if spec.is_rsa() {
            let pair = RsaKeyPair::from_pkcs8(material.expose()).map_err(failed)?;
            let public = pair.public_key().as_der().map_err(failed)?;
            (ParsedPair::Rsa(pair), public)
        } else if spec.is_asymmetric() {
            let pair =
                EcdsaKeyPair::from_pkcs8(ec_algorithm(spec), material.expose()).map_err(failed)?;
            let public = pair.public_key().as_der().map_err(failed)?;
            (ParsedPair::Ec(pair), public)
        } else {
            return Err(CryptoError::NotAsymmetric);
        };
        Ok(ParsedKey {
            spec,
            pair,
            public_der: public.as_ref().to_vec(),
        })
    }

    /// The public half: DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The public JWK, with `kid`, `use` and `alg`.
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.pair {
            ParsedPair::Rsa(pair) => {
                let public = pair.public_key();
                serde_json::json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            ParsedPair::Ec(pair) => {
                let point = pair.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                serde_json::json!({
                    "kty": "EC",
                    "crv": match self.spec {
                        KeySpec::EccNistP384 => "P-384",
                        KeySpec::EccNistP521 => "P-521",
                        KeySpec::EccSecgP256k1 => "secp256k1",
                        _ => "P-256",
                    },
                    "x": b64(&point[1..=half]),
                    "y": b64(&point[1 + half..]),
                })
            }
        };
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        jwk["alg"] = self.spec.jws_alg().unwrap_or_default().into();
        jwk
    }

    /// Signs `message`; the algorithm must suit the spec.
    pub fn sign(
        &self,
        alg: SigningAlgorithm,
        message: &[u8],
        kind: MessageType,
    ) -> Result<Vec<u8>, CryptoError> {
        if !self.spec.signing_algorithms().contains(&alg) {
            return Err(CryptoError::WrongAlgorithm);
        }
        let digest = message_digest(alg, message, kind)?;
        match &self.pair {
            ParsedPair::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign_digest(alg.rsa_encoding(), &digest, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            ParsedPair::Ec(pair) => {
                Ok(pair.sign_digest(&digest).map_err(failed)?.as_ref().to_vec())
            }
        }
    }

    /// Whether `sig` is a signature of `message` by this key.
    pub fn verify(
        &self,
        alg: SigningAlgorithm,
        message: &[u8],
        kind: MessageType,
        sig: &[u8],
    ) -> Result<bool, CryptoError> {
        if !self.spec.signing_algorithms().contains(&alg) {
            return Err(CryptoError::WrongAlgorithm);
        }
        let digest = message_digest(alg, message, kind)?;
        Ok(
            UnparsedPublicKey::new(alg.verification(self.spec), &self.public_der)
                .verify_digest(&digest, sig)
                .is_ok(),
        )
    }
}

/// Signs `message` with asymmetric material. The algorithm must suit the spec.
pub fn sign(
    spec: KeySpec,
    material: &SecretBytes,
    alg: SigningAlgorithm,
    message: &[u8],
    kind: MessageType,
) -> Result<Vec<u8>, CryptoError> {
    if !spec.signing_algorithms().contains(&alg) {
        return Err(CryptoError::WrongAlgorithm);
    }
    ParsedKey::parse(spec, material)?.sign(alg, message, kind)
}

/// Whether `sig` is a signature of `message` by asymmetric material.
pub fn verify(
    spec: KeySpec,
    material: &SecretBytes,
    alg: SigningAlgorithm,
    message: &[u8],
    kind: MessageType,
    sig: &[u8],
) -> Result<bool, CryptoError> {
    if !spec.signing_algorithms().contains(&alg) {
        return Err(CryptoError::WrongAlgorithm);
    }
    ParsedKey::parse(spec, material)?.verify(alg, message, kind, sig)
}

/// The HMAC of `message` under HMAC material.
pub fn mac(material: &SecretBytes, alg: MacAlgorithm, message: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(alg.algorithm(), material.expose());
    hmac::sign(&key, message).as_ref().to_vec()
}

/// Whether `tag` is the HMAC of `message`, compared in constant time.
pub fn verify_mac(material: &SecretBytes, alg: MacAlgorithm, message: &[u8], tag: &[u8]) -> bool {
    let key = hmac::Key::new(alg.algorithm(), material.expose());
    hmac::verify(&key, message, tag).is_ok()
}

/// Encrypts with the public half of RSA material (RSAES-OAEP). The output is the raw RSA
/// ciphertext, as AWS KMS returns it.
pub fn rsa_encrypt(
    material: &SecretBytes,
    alg: RsaEncryption,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let private = PrivateDecryptingKey::from_pkcs8(material.expose()).map_err(failed)?;
    let public: PublicEncryptingKey = private.public_key();
    let public = OaepPublicEncryptingKey::new(public).map_err(failed)?;
    if plaintext.len() > public.max_plaintext_size(alg.oaep()) {
        return Err(CryptoError::PlaintextTooLong(
            public.max_plaintext_size(alg.oaep()),
        ));
    }
    let mut out = vec![0u8; public.ciphertext_size()];
    let len = public
        .encrypt(alg.oaep(), plaintext, &mut out, None)
        .map_err(failed)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// Decrypts an RSAES-OAEP ciphertext with RSA material.
pub fn rsa_decrypt(
    material: &SecretBytes,
    alg: RsaEncryption,
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let private = PrivateDecryptingKey::from_pkcs8(material.expose()).map_err(failed)?;
    let private = OaepPrivateDecryptingKey::new(private).map_err(failed)?;
    let mut out = vec![0u8; private.min_output_size()];
    let len = private
        .decrypt(alg.oaep(), ciphertext, &mut out, None)
        .map_err(failed)?
        .len();
    out.truncate(len);
    Ok(SecretBytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ID: &str = "0b7e2f52-4c1d-4a3e-9f00-1234567890ab";

    fn ctx(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_blob_names_its_key_and_version_and_binds_the_context() {
        let material = generate_key_material(KeySpec::SymmetricDefault).unwrap();
        let context = ctx(&[("tenant", "a"), ("app", "b")]);
        let blob = encrypt_blob(&material, KEY_ID, "v-1", &context, b"hello").unwrap();
        assert_eq!(
            parse_blob(&blob).unwrap(),
            BlobHeader {
                key_id: KEY_ID.into(),
                version_id: "v-1".into()
            }
        );
        // The order of the context's pairs does not matter; their content does.
        let reordered = ctx(&[("app", "b"), ("tenant", "a")]);
        assert_eq!(
            decrypt_blob(&material, &blob, &reordered).unwrap().expose(),
            b"hello"
        );
        assert!(decrypt_blob(&material, &blob, &ctx(&[("tenant", "a")])).is_err());
        assert!(decrypt_blob(&material, &blob, &[]).is_err());
        // Renaming the version in the header breaks authentication.
        let mut moved = blob.clone();
        moved[18] = b'w';
        assert!(decrypt_blob(&material, &moved, &context).is_err());
        let other = generate_key_material(KeySpec::SymmetricDefault).unwrap();
        assert!(decrypt_blob(&other, &blob, &context).is_err());
        assert!(parse_blob(&blob[..20]).is_err());
        assert!(parse_blob(b"").is_err());
    }

    #[test]
    fn a_data_key_wrapped_by_a_kms_key_opens_only_for_its_secret() {
        let material = generate_key_material(KeySpec::SymmetricDefault).unwrap();
        let data_key = crate::DataKey::generate().unwrap();
        let wrapped = wrap_data_key(&material, KEY_ID, "v-7", "secret-1", &data_key).unwrap();
        let header = data_key_wrapper(&wrapped).unwrap();
        assert_eq!(
            (header.key_id.as_str(), header.version_id.as_str()),
            (KEY_ID, "v-7")
        );
        let opened = unwrap_data_key(&material, &wrapped, "secret-1").unwrap();
        let sealed = data_key.seal(b"value", "aad").unwrap();
        assert_eq!(opened.open(&sealed, "aad").unwrap().expose(), b"value");
        assert!(unwrap_data_key(&material, &wrapped, "secret-2").is_err());
        // A root-wrapped data key is not mistaken for a KMS-wrapped one.
        let (root, _) = crate::RootKey::generate().unwrap();
        assert!(data_key_wrapper(&root.wrap(&data_key, "secret-1").unwrap()).is_none());
    }

    #[test]
    fn signatures_verify_only_with_their_key_algorithm_and_message() {
        for (spec, alg) in [
            (KeySpec::Rsa2048, SigningAlgorithm::RsassaPssSha256),
            (KeySpec::Rsa2048, SigningAlgorithm::RsassaPkcs1V15Sha512),
            (KeySpec::EccNistP256, SigningAlgorithm::EcdsaSha256),
            (KeySpec::EccNistP384, SigningAlgorithm::EcdsaSha384),
            (KeySpec::EccNistP521, SigningAlgorithm::EcdsaSha512),
            (KeySpec::EccSecgP256k1, SigningAlgorithm::EcdsaSha256),
        ] {
            let material = generate_key_material(spec).unwrap();
            let sig = sign(spec, &material, alg, b"msg", MessageType::Raw).unwrap();
            assert!(verify(spec, &material, alg, b"msg", MessageType::Raw, &sig).unwrap());
            assert!(!verify(spec, &material, alg, b"msh", MessageType::Raw, &sig).unwrap());
            // A signature over the digest is the same as over the message.
            let d = digest::digest(alg.digest(), b"msg");
            assert!(
                verify(spec, &material, alg, d.as_ref(), MessageType::Digest, &sig).unwrap(),
                "{spec:?} {alg:?}"
            );
            let other = generate_key_material(spec).unwrap();
            assert!(!verify(spec, &other, alg, b"msg", MessageType::Raw, &sig).unwrap());
        }
        let ec = generate_key_material(KeySpec::EccNistP256).unwrap();
        assert!(matches!(
            sign(
                KeySpec::EccNistP256,
                &ec,
                SigningAlgorithm::RsassaPssSha256,
                b"m",
                MessageType::Raw
            ),
            Err(CryptoError::WrongAlgorithm)
        ));
        assert!(matches!(
            sign(
                KeySpec::EccNistP256,
                &ec,
                SigningAlgorithm::EcdsaSha256,
                b"short",
                MessageType::Digest
            ),
            Err(CryptoError::DigestLength)
        ));
    }

    #[test]
    fn macs_and_rsa_encryption_round_trip() {
        let material = generate_key_material(KeySpec::Hmac384).unwrap();
        assert_eq!(material.len(), 48);
        let tag = mac(&material, MacAlgorithm::HmacSha384, b"m");
        assert_eq!(tag.len(), 48);
        assert!(verify_mac(&material, MacAlgorithm::HmacSha384, b"m", &tag));
        assert!(!verify_mac(&material, MacAlgorithm::HmacSha384, b"n", &tag));
        let rsa = generate_key_material(KeySpec::Rsa2048).unwrap();
        let c = rsa_encrypt(&rsa, RsaEncryption::OaepSha256, b"data").unwrap();
        assert_eq!(
            rsa_decrypt(&rsa, RsaEncryption::OaepSha256, &c)
                .unwrap()
                .expose(),
            b"data"
        );
        assert!(rsa_decrypt(&rsa, RsaEncryption::OaepSha1, &c).is_err());
        // RSAES-OAEP with SHA-256 under a 2048-bit key takes at most 256 - 2 * 32 - 2 bytes.
        let max = 256 - 2 * 32 - 2;
        assert!(rsa_encrypt(&rsa, RsaEncryption::OaepSha256, &vec![0; max]).is_ok());
        assert!(matches!(
            rsa_encrypt(&rsa, RsaEncryption::OaepSha256, &vec![0; max + 1]),
            Err(CryptoError::PlaintextTooLong(190))
        ));
    }

    #[test]
    fn the_jwk_and_the_der_are_the_same_public_key() {
        let material = generate_key_material(KeySpec::EccNistP256).unwrap();
        let jwk = ParsedKey::parse(KeySpec::EccNistP256, &material)
            .unwrap()
            .jwk("v9");
        assert_eq!(jwk["kid"], "v9");
        assert_eq!(jwk["alg"], "ES256");
        let der = public_key_der(KeySpec::EccNistP256, &material).unwrap();
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        // The SPKI of a P-256 key ends with the uncompressed point 04 || x || y.
        assert_eq!(&der[der.len() - 64..der.len() - 32], &x[..]);
        assert!(public_key_der(KeySpec::Hmac256, &material).is_err());
    }
}

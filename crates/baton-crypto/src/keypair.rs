//! Asymmetric key pairs for the `baton-keypair` rotator: generation, PEM encoding and the public
//! JWK. The private key leaves this module only as PEM text inside a [`SecretBytes`].

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::kms::{KeySpec, ParsedKey, generate_key_material};
use crate::{CryptoError, SecretBytes};

/// The key types the rotator generates, named as AWS KMS names its key specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPairType {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccNistP256,
    EccNistP384,
    Ed25519,
}

impl KeyPairType {
    pub const ALL: [KeyPairType; 6] = [
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
        Self::EccNistP256,
        Self::EccNistP384,
        Self::Ed25519,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "RSA_2048",
            Self::Rsa3072 => "RSA_3072",
            Self::Rsa4096 => "RSA_4096",
            Self::EccNistP256 => "ECC_NIST_P256",
            Self::EccNistP384 => "ECC_NIST_P384",
            Self::Ed25519 => "ED25519",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The JWS algorithm a verifier should use with this key.
    pub fn jws_alg(self) -> &'static str {
        match self {
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => "RS256",
            Self::EccNistP256 => "ES256",
            Self::EccNistP384 => "ES384",
            Self::Ed25519 => "EdDSA",
        }
    }
}

/// A freshly generated key pair: the private key as PKCS#8 PEM, the public key as SPKI PEM and
/// as a JWK (a JSON object) whose `kid` is the given key id.
pub struct GeneratedKeyPair {
    pub private_key_pem: SecretBytes,
    pub public_key_pem: String,
    pub public_jwk: serde_json::Value,
}

impl std::fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("private_key_pem", &"<redacted>")
            .field("public_key_pem", &self.public_key_pem)
            .finish()
    }
}

/// Generates a key pair of `key_type`; `kid` goes into the JWK.
pub fn generate_key_pair(
    key_type: KeyPairType,
    kid: &str,
) -> Result<GeneratedKeyPair, CryptoError> {
    let failed = |_| CryptoError::KeyGeneration(key_type.name());
    let (pkcs8, spki, mut jwk): (Vec<u8>, Vec<u8>, serde_json::Value) = match key_type {
        KeyPairType::Rsa2048
        | KeyPairType::Rsa3072
        | KeyPairType::Rsa4096
        | KeyPairType::EccNistP256
        | KeyPairType::EccNistP384 => {
            // The same generation and public forms as a KMS key of the same spec.
            let spec = match key_type {
                KeyPairType::Rsa2048 => KeySpec::Rsa2048,
                KeyPairType::Rsa3072 => KeySpec::Rsa3072,
                KeyPairType::Rsa4096 => KeySpec::Rsa4096,
                KeyPairType::EccNistP256 => KeySpec::EccNistP256,
                _ => KeySpec::EccNistP384,
            };
            let material = generate_key_material(spec)?;
            let parsed = ParsedKey::parse(spec, &material)?;
            (
                material.expose().to_vec(),
                parsed.public_key_der().to_vec(),
                parsed.jwk(kid),
            )
        }
        KeyPairType::Ed25519 => {
            let pair = Ed25519KeyPair::generate().map_err(failed)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(failed)?;
            let spki: PublicKeyX509Der<'_> = pair.public_key().as_der().map_err(failed)?;
            let jwk = serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            (pkcs8.as_ref().to_vec(), spki.as_ref().to_vec(), jwk)
        }
    };
    let pkcs8 = SecretBytes::from(pkcs8);
    jwk["kid"] = kid.into();
    jwk["use"] = "sig".into();
    jwk["alg"] = key_type.jws_alg().into();
    Ok(GeneratedKeyPair {
        private_key_pem: SecretBytes::from(pem("PRIVATE KEY", pkcs8.expose())),
        public_key_pem: pem("PUBLIC KEY", &spki),
        public_jwk: jwk,
    })
}

/// PEM armour (RFC 7468): base64 in lines of 64 characters between BEGIN and END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        self, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
        UnparsedPublicKey,
    };

    fn unpem(text: &str, label: &str) -> Vec<u8> {
        let begin = format!("-----BEGIN {label}-----\n");
        let end = format!("-----END {label}-----\n");
        let body = text
            .strip_prefix(&begin)
            .and_then(|t| t.strip_suffix(&end))
            .expect("PEM armour");
        assert!(
            body.lines().all(|l| l.len() <= 64),
            "PEM lines are at most 64"
        );
        STANDARD.decode(body.replace('\n', "")).expect("base64")
    }

    fn b64url(jwk: &serde_json::Value, field: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(jwk[field].as_str().expect(field))
            .expect("base64url")
    }

    /// Signs with the private PEM and verifies with both public forms, so the PEM, the SPKI and
    /// the JWK are proven to be the same key.
    #[test]
    fn every_key_type_signs_with_its_pem_and_verifies_with_its_pem_and_jwk() {
        let message = b"baton keypair";
        for key_type in KeyPairType::ALL {
            // RSA-4096 generation takes seconds in debug builds; 2048 and 3072 cover RSA here.
            if key_type == KeyPairType::Rsa4096 {
                continue;
            }
            let pair = generate_key_pair(key_type, "v-1").expect("generate");
            let private_pem = std::str::from_utf8(pair.private_key_pem.expose()).unwrap();
            let pkcs8 = unpem(private_pem, "PRIVATE KEY");
            let spki = unpem(&pair.public_key_pem, "PUBLIC KEY");
            let jwk = &pair.public_jwk;
            assert_eq!(jwk["kid"], "v-1");
            assert_eq!(jwk["alg"], key_type.jws_alg());
            let rng = aws_lc_rs::rand::SystemRandom::new();
            match key_type {
                KeyPairType::Rsa2048 | KeyPairType::Rsa3072 | KeyPairType::Rsa4096 => {
                    let private = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).unwrap();
                    let mut sig = vec![0; private.public_modulus_len()];
                    private
                        .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                        .unwrap();
                    let bits = private.public_modulus_len() * 8;
                    let expected_bits = match key_type {
                        KeyPairType::Rsa2048 => 2048,
                        _ => 3072,
                    };
                    assert_eq!(bits, expected_bits);
                    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &spki)
                        .verify(message, &sig)
                        .expect("verifies with the SPKI");
                    let components = signature::RsaPublicKeyComponents {
                        n: b64url(jwk, "n"),
                        e: b64url(jwk, "e"),
                    };
                    components
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                        .expect("verifies with the JWK");
                }
                KeyPairType::EccNistP256 | KeyPairType::EccNistP384 => {
                    let (sign_alg, verify_alg) = if key_type == KeyPairType::EccNistP256 {
                        (
                            &ECDSA_P256_SHA256_ASN1_SIGNING,
                            &signature::ECDSA_P256_SHA256_ASN1,
                        )
                    } else {
                        (
                            &ECDSA_P384_SHA384_ASN1_SIGNING,
                            &signature::ECDSA_P384_SHA384_ASN1,
                        )
                    };
                    let private = EcdsaKeyPair::from_pkcs8(sign_alg, &pkcs8).unwrap();
                    let sig = private.sign(&rng, message).unwrap();
                    UnparsedPublicKey::new(verify_alg, &spki)
                        .verify(message, sig.as_ref())
                        .expect("verifies with the SPKI");
                    let mut point = vec![4u8];
                    point.extend(b64url(jwk, "x"));
                    point.extend(b64url(jwk, "y"));
                    UnparsedPublicKey::new(verify_alg, &point)
                        .verify(message, sig.as_ref())
                        .expect("verifies with the JWK point");
                }
                KeyPairType::Ed25519 => {
                    let private = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
                    let sig = private.sign(message);
                    UnparsedPublicKey::new(&signature::ED25519, &spki)
                        .verify(message, sig.as_ref())
                        .expect("verifies with the SPKI");
                    UnparsedPublicKey::new(&signature::ED25519, b64url(jwk, "x"))
                        .verify(message, sig.as_ref())
                        .expect("verifies with the JWK");
                }
            }
        }
    }

    #[test]
    fn key_type_names_round_trip_and_unknown_names_are_refused() {
        for key_type in KeyPairType::ALL {
            assert_eq!(KeyPairType::parse(key_type.name()), Some(key_type));
        }
        assert_eq!(KeyPairType::parse("RSA_1024"), None);
        assert_eq!(KeyPairType::parse("rsa_2048"), None);
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let pair = generate_key_pair(KeyPairType::Ed25519, "k").unwrap();
        let shown = format!("{pair:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("PRIVATE KEY"));
    }
}

//! Envelope encryption: a root key wraps one data key per secret; each version's value is sealed
//! with its secret's data key under AES-256-GCM.
//!
//! Sealed format v1: `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The caller
//! passes authenticated data that names what the value belongs to (secret id and version id), so
//! a sealed value copied to another row fails to open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::{CryptoError, SecretBytes, fill_random};

/// The first byte of every sealed value written by this version of Baton.
pub const SEALED_FORMAT_V1: u8 = 1;
pub(crate) const KEY_LEN: usize = 32;

pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        // AES_256_GCM accepts exactly 32 bytes; every caller passes a KEY_LEN buffer.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256-GCM key");
        AeadKey(LessSafeKey::new(unbound))
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_framed(&[SEALED_FORMAT_V1], plaintext, aad)
    }

    /// Seals after `header` (the format byte and anything that names the key), which the
    /// caller also folds into `aad` when it must be authenticated.
    pub(crate) fn seal_framed(
        &self,
        header: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(header);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| CryptoError::OpenFailed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, CryptoError> {
        if sealed.first() != Some(&SEALED_FORMAT_V1) {
            return Err(CryptoError::OpenFailed);
        }
        self.open_framed(1, sealed, aad)
    }

    /// Opens what [`AeadKey::seal_framed`] sealed after a header of `header_len` bytes.
    pub(crate) fn open_framed(
        &self,
        header_len: usize,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        if sealed.len() < header_len + NONCE_LEN {
            return Err(CryptoError::OpenFailed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[header_len..header_len + NONCE_LEN]
            .try_into()
            .map_err(|_| CryptoError::OpenFailed)?;
        let mut buf = sealed[header_len + NONCE_LEN..].to_vec();
        let opened = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map(|plaintext| plaintext.len());
        match opened {
            Ok(plaintext_len) => {
                buf.truncate(plaintext_len);
                Ok(SecretBytes::new(buf))
            }
            Err(_) => {
                // The buffer may hold partly decrypted bytes; wipe it before it is freed.
                buf.zeroize();
                Err(CryptoError::OpenFailed)
            }
        }
    }
}

/// A derived HMAC-SHA256 key (see [`crate::RootKey::mac_key`]).
pub struct MacKey(pub(crate) aws_lc_rs::hmac::Key);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey([REDACTED])")
    }
}

impl MacKey {
    /// The MAC of the parts, each prefixed with its length so that no two different lists of
    /// parts share an input.
    pub fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.0);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        context.sign().as_ref().to_vec()
    }
}

/// The authenticated data of a secret version's sealed value: it binds the value to its secret
/// and version, so a sealed value copied to another row fails to open.
pub fn value_aad(secret_id: &str, version_id: &str) -> String {
    format!("baton:secret-value:v1:{secret_id}:{version_id}")
}

/// The authenticated data of an access key's sealed secret half.
pub fn access_key_aad(access_key_id: &str) -> String {
    format!("baton:access-key:v1:{access_key_id}")
}

/// The authenticated data binding a webhook rotator's sealed signing secret to its name.
pub fn signing_secret_aad(rotator_name: &str) -> String {
    format!("baton:signing-secret:v1:{rotator_name}")
}

pub(crate) fn wrap_aad(context: &str) -> Vec<u8> {
    format!("baton:data-key:v1:{context}").into_bytes()
}

/// A per-secret data key. Its bytes are wiped when it is dropped.
pub struct DataKey {
    pub(crate) bytes: SecretBytes,
    key: AeadKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut raw = vec![0u8; KEY_LEN];
        fill_random(&mut raw)?;
        Self::from_bytes(SecretBytes::new(raw))
    }

    pub(crate) fn from_bytes(bytes: SecretBytes) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::OpenFailed);
        }
        let key = AeadKey::new(bytes.expose());
        Ok(DataKey { bytes, key })
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        self.key.seal(plaintext, aad.as_bytes())
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<SecretBytes, CryptoError> {
        self.key.open(sealed, aad.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RootKey;

    #[test]
    fn sealed_values_open_only_with_the_same_authenticated_data() {
        let (root, _) = RootKey::generate().unwrap();
        let dk = DataKey::generate().unwrap();
        let wrapped = root.wrap(&dk, "secret-1").unwrap();
        let dk2 = root.unwrap(&wrapped, "secret-1").unwrap();
        assert!(
            root.unwrap(&wrapped, "secret-2").is_err(),
            "wrapped key bound to its secret"
        );

        let sealed = dk.seal(b"the plaintext", "secret-1/v1").unwrap();
        assert_eq!(sealed[0], SEALED_FORMAT_V1);
        assert!(!sealed.windows(13).any(|w| w == b"the plaintext"));
        assert_eq!(
            dk2.open(&sealed, "secret-1/v1").unwrap().expose(),
            b"the plaintext"
        );
        assert!(
            dk2.open(&sealed, "secret-1/v2").is_err(),
            "moved to another version"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(dk2.open(&tampered, "secret-1/v1").is_err());
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let dk = DataKey::generate().unwrap();
        assert_ne!(dk.seal(b"x", "a").unwrap(), dk.seal(b"x", "a").unwrap());
    }
}

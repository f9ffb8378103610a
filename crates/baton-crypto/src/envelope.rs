//! Envelope encryption: a root key wraps one data key per secret; each version's value is sealed
//! with its secret's data key under AES-256-GCM.
//!
//! Sealed format v1: `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The caller
//! passes authenticated data that names what the value belongs to (secret id and version id), so
//! a sealed value copied to another row fails to open.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::{CryptoError, SecretBytes, fill_random};

/// The first byte of every sealed value written by this version of Baton.
pub const SEALED_FORMAT_V1: u8 = 1;
const KEY_LEN: usize = 32;
const ROOT_KEY_FILE_HEADER: &str = "baton-root-key-v1";

struct AeadKey(LessSafeKey);

impl AeadKey {
    fn new(bytes: &[u8]) -> Self {
        // AES_256_GCM accepts exactly 32 bytes; every caller passes a KEY_LEN buffer.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256-GCM key");
        AeadKey(LessSafeKey::new(unbound))
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(SEALED_FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(1 + NONCE_LEN);
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
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_FORMAT_V1 {
            return Err(CryptoError::OpenFailed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| CryptoError::OpenFailed)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
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

/// The root of trust: wraps every data key. Loaded from a 0600 file at start-up.
pub struct RootKey {
    key: AeadKey,
    /// HMAC key for deriving purpose-bound keys (the audit chain's, for one).
    derive: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

impl RootKey {
    pub fn from_bytes(bytes: &SecretBytes) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::OpenFailed);
        }
        Ok(RootKey {
            key: AeadKey::new(bytes.expose()),
            derive: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes.expose()),
        })
    }

    pub fn generate() -> Result<(Self, SecretBytes), CryptoError> {
        let mut raw = vec![0u8; KEY_LEN];
        fill_random(&mut raw)?;
        let bytes = SecretBytes::new(raw);
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// Loads an existing root key file (mode 0600, `baton-root-key-v1 <hex>`); never creates
    /// one.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let file_error = |reason: String| CryptoError::RootKeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = SecretBytes::from(fs::read(path).map_err(|e| file_error(e.to_string()))?);
        let mode = fs::metadata(path)
            .map_err(|e| file_error(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(file_error(format!(
                "permissions are {:o}; the root key file must not be readable by group or others (chmod 600)",
                mode & 0o777
            )));
        }
        Self::from_text(&text).map_err(file_error)
    }

    /// Parses the root key file's format, `baton-root-key-v1 <64 hex digits>`, from wherever
    /// it came (a file, a command's output). The error names what is wrong, never the key.
    pub fn from_text(text: &SecretBytes) -> Result<Self, String> {
        Self::from_bytes(&Self::parse_text(text)?).map_err(|e| e.to_string())
    }

    /// The key bytes of the root key file's format (to wrap them under KMS, say).
    pub fn parse_text(text: &SecretBytes) -> Result<SecretBytes, String> {
        let body = std::str::from_utf8(text.expose())
            .map_err(|_| "not UTF-8".to_owned())?
            .trim();
        let hex_part = body
            .strip_prefix(ROOT_KEY_FILE_HEADER)
            .ok_or_else(|| format!("does not start with {ROOT_KEY_FILE_HEADER}"))?
            .trim();
        let bytes =
            SecretBytes::new(hex::decode(hex_part).map_err(|_| "key is not valid hex".to_owned())?);
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "key must be {KEY_LEN} bytes ({} hex digits), not {}",
                2 * KEY_LEN,
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    /// The root key file's format for `bytes`, as a command or a file must give it.
    pub fn to_text(bytes: &SecretBytes) -> SecretBytes {
        SecretBytes::from(format!(
            "{ROOT_KEY_FILE_HEADER} {}\n",
            hex::encode(bytes.expose())
        ))
    }

    /// Runs `command` with `/bin/sh -c` and reads the key from its standard output, in the root
    /// key file's format: for systemd credentials, a TPM, or a secret store's CLI. It must exit
    /// 0 within 30 seconds; its standard error is shown when it fails (it should never hold the
    /// key).
    pub fn from_command(command: &str) -> Result<Self, CryptoError> {
        let fail = |reason: String| CryptoError::RootKeyCommand {
            command: command.to_owned(),
            reason,
        };
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("could not start: {e}")))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail("did not finish within 30 s".into()));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        let stdout = SecretBytes::from(output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(fail(format!(
                "exited with {}{}",
                output.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last.chars().take(200).collect::<String>())
                }
            )));
        }
        Self::from_text(&stdout).map_err(|reason| fail(format!("its output {reason}")))
    }

    /// Loads the root key file, or creates it with mode 0600 if it does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CryptoError> {
        let file_error = |reason: String| CryptoError::RootKeyFile {
            path: path.display().to_string(),
            reason,
        };
        match fs::metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, bytes) = Self::generate()?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| file_error(e.to_string()))?;
                let text = SecretBytes::from(format!(
                    "{ROOT_KEY_FILE_HEADER} {}\n",
                    hex::encode(bytes.expose())
                ));
                file.write_all(text.expose())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| file_error(e.to_string()))?;
                Ok((key, true))
            }
            Err(e) => Err(file_error(e.to_string())),
        }
    }

    /// Wraps a data key for the secret (or other owner) named by `context`.
    pub fn wrap(&self, data_key: &DataKey, context: &str) -> Result<Vec<u8>, CryptoError> {
        self.key.seal(data_key.bytes.expose(), &wrap_aad(context))
    }

    pub fn unwrap(&self, wrapped: &[u8], context: &str) -> Result<DataKey, CryptoError> {
        let bytes = self.key.open(wrapped, &wrap_aad(context))?;
        DataKey::from_bytes(bytes)
    }

    /// Seals a small secret directly under the root key, such as an access key's secret half.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        self.key.seal(plaintext, aad.as_bytes())
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<SecretBytes, CryptoError> {
        self.key.open(sealed, aad.as_bytes())
    }

    /// A MAC key for one purpose, derived from the root key (HMAC-SHA256 of the purpose under
    /// the root key): anyone without the root key can neither compute nor forge its MACs.
    pub fn mac_key(&self, purpose: &str) -> MacKey {
        let tag = aws_lc_rs::hmac::sign(
            &self.derive,
            format!("baton/derive/v1/{purpose}").as_bytes(),
        );
        MacKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            tag.as_ref(),
        ))
    }
}

/// A derived HMAC-SHA256 key (see [`RootKey::mac_key`]).
pub struct MacKey(aws_lc_rs::hmac::Key);

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

fn wrap_aad(context: &str) -> Vec<u8> {
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

    #[test]
    fn root_key_file_is_created_0600_and_reloads_to_the_same_key() {
        let dir = std::env::temp_dir().join(format!("baton-rk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("root.key");
        let (k1, created) = RootKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, created) = RootKey::load_or_create(&path).unwrap();
        assert!(!created);
        let sealed = k1.seal(b"v", "ctx").unwrap();
        assert_eq!(k2.open(&sealed, "ctx").unwrap().expose(), b"v");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = RootKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

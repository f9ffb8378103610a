//! The root of trust: a ring of root keys that wrap every data key and seal every small secret
//! (access keys, signing secrets, the audit chain's key).
//!
//! Several root keys can be live at once, so that the root key can be rotated while traffic
//! goes on: one key is the *primary* (new wraps use it), every key in the ring opens what it
//! sealed. Root-sealed format v2 names its key:
//! `0x02 || key id (8 bytes) || nonce (12 bytes) || ciphertext || tag (16 bytes)`, and the
//! header is part of the authenticated data. Format v1 (`0x01 || nonce || ciphertext || tag`,
//! written before key rings existed) names no key; it opens with whichever key of the ring made
//! it, and re-wrapping turns it into v2.
//!
//! A key's id is derived from the key (`HMAC-SHA256(key, "baton/root-key-id/v1")`, first 8
//! bytes), so the key file needs no id of its own and two nodes given the same key agree on its
//! id. The id reveals nothing about the key.
//!
//! The root key file holds one or more lines `baton-root-key-v1 <64 hex digits>`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::envelope::{AeadKey, KEY_LEN, wrap_aad};
use crate::{CryptoError, DataKey, MacKey, SEALED_FORMAT_V1, SecretBytes, fill_random};

/// The first byte of a value sealed by a root key that names itself.
pub const ROOT_SEALED_V2: u8 = 2;
const ID_LEN: usize = 8;
const V2_HEADER_LEN: usize = 1 + ID_LEN;
const ROOT_KEY_FILE_HEADER: &str = "baton-root-key-v1";

/// A root key's id, shown as `rk-<16 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootKeyId([u8; ID_LEN]);

impl std::fmt::Display for RootKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rk-{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for RootKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for RootKeyId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a root key id (rk- and 16 hex digits)");
        let digits = s.strip_prefix("rk-").ok_or_else(bad)?;
        let bytes = hex::decode(digits).map_err(|_| bad())?;
        Ok(RootKeyId(bytes.try_into().map_err(|_| bad())?))
    }
}

/// Which root key sealed a blob, read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedUnder {
    /// Format v1, from before key rings: it names no key.
    Legacy,
    Key(RootKeyId),
}

impl SealedUnder {
    /// What a root-sealed blob's header says, or `None` when the blob is not root-sealed (a
    /// data key wrapped by a KMS key, say).
    pub fn of(blob: &[u8]) -> Option<Self> {
        match *blob.first()? {
            SEALED_FORMAT_V1 => Some(SealedUnder::Legacy),
            ROOT_SEALED_V2 if blob.len() >= V2_HEADER_LEN => Some(SealedUnder::Key(RootKeyId(
                blob[1..V2_HEADER_LEN].try_into().ok()?,
            ))),
            _ => None,
        }
    }
}

struct RingKey {
    id: RootKeyId,
    aead: AeadKey,
    derive: aws_lc_rs::hmac::Key,
}

impl RingKey {
    fn new(bytes: &SecretBytes) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::OpenFailed);
        }
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes.expose());
        let tag = aws_lc_rs::hmac::sign(&derive, b"baton/root-key-id/v1");
        let id = RootKeyId(tag.as_ref()[..ID_LEN].try_into().expect("8 of 32 bytes"));
        Ok(RingKey {
            id,
            aead: AeadKey::new(bytes.expose()),
            derive,
        })
    }

    fn header(&self) -> [u8; V2_HEADER_LEN] {
        let mut header = [0u8; V2_HEADER_LEN];
        header[0] = ROOT_SEALED_V2;
        header[1..].copy_from_slice(&self.id.0);
        header
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let header = self.header();
        self.aead
            .seal_framed(&header, plaintext, &[&header[..], aad].concat())
    }

    fn derived(&self, purpose: &str) -> aws_lc_rs::hmac::Tag {
        aws_lc_rs::hmac::sign(
            &self.derive,
            format!("baton/derive/v1/{purpose}").as_bytes(),
        )
    }
}

struct Ring {
    keys: Vec<Arc<RingKey>>,
    primary: RootKeyId,
}

impl Ring {
    fn key(&self, id: RootKeyId) -> Option<&Arc<RingKey>> {
        self.keys.iter().find(|k| k.id == id)
    }

    fn primary(&self) -> &Arc<RingKey> {
        self.key(self.primary)
            .expect("the primary root key is always in the ring")
    }
}

/// The ring of root keys this node holds. Shared by every part of the server behind one `Arc`;
/// adding, promoting and retiring keys takes effect for all of them at once.
pub struct RootKey {
    ring: RwLock<Arc<Ring>>,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.snapshot();
        write!(
            f,
            "RootKey {{ primary: {}, keys: {:?}, material: [REDACTED] }}",
            ring.primary,
            ring.keys.iter().map(|k| k.id).collect::<Vec<_>>()
        )
    }
}

impl RootKey {
    /// A ring of one key.
    pub fn from_bytes(bytes: &SecretBytes) -> Result<Self, CryptoError> {
        Self::from_keys(std::slice::from_ref(bytes))
    }

    /// A ring of `keys`, the last of them primary until the store says otherwise.
    pub fn from_keys(keys: &[SecretBytes]) -> Result<Self, CryptoError> {
        let mut ring: Vec<Arc<RingKey>> = Vec::with_capacity(keys.len());
        for bytes in keys {
            let key = RingKey::new(bytes)?;
            if !ring.iter().any(|k| k.id == key.id) {
                ring.push(Arc::new(key));
            }
        }
        let primary = ring.last().ok_or(CryptoError::OpenFailed)?.id;
        Ok(RootKey {
            ring: RwLock::new(Arc::new(Ring {
                keys: ring,
                primary,
            })),
        })
    }

    /// 32 fresh random bytes for a new root key.
    pub fn generate_bytes() -> Result<SecretBytes, CryptoError> {
        let mut raw = vec![0u8; KEY_LEN];
        fill_random(&mut raw)?;
        Ok(SecretBytes::new(raw))
    }

    pub fn generate() -> Result<(Self, SecretBytes), CryptoError> {
        let bytes = Self::generate_bytes()?;
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// The id a key has in any ring.
    pub fn id_of(bytes: &SecretBytes) -> Result<RootKeyId, CryptoError> {
        Ok(RingKey::new(bytes)?.id)
    }

    fn snapshot(&self) -> Arc<Ring> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(
        &self,
        change: impl FnOnce(&Ring) -> Result<Ring, CryptoError>,
    ) -> Result<(), CryptoError> {
        let mut guard = self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = change(&guard)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// The ids of every key in the ring, in the order they were added.
    pub fn ids(&self) -> Vec<RootKeyId> {
        self.snapshot().keys.iter().map(|k| k.id).collect()
    }

    /// The key that new wraps use.
    pub fn primary(&self) -> RootKeyId {
        self.snapshot().primary
    }

    pub fn holds(&self, id: RootKeyId) -> bool {
        self.snapshot().key(id).is_some()
    }

    /// Adds keys to the ring (keys it already holds are skipped); returns their ids.
    pub fn add(&self, keys: &[SecretBytes]) -> Result<Vec<RootKeyId>, CryptoError> {
        let new: Vec<RingKey> = keys.iter().map(RingKey::new).collect::<Result<_, _>>()?;
        let ids = new.iter().map(|k| k.id).collect();
        self.replace(|ring| {
            let mut keys = ring.keys.clone();
            for key in new {
                if !keys.iter().any(|k| k.id == key.id) {
                    keys.push(Arc::new(key));
                }
            }
            Ok(Ring {
                keys,
                primary: ring.primary,
            })
        })?;
        Ok(ids)
    }

    /// Makes `id` the key that new wraps use.
    pub fn set_primary(&self, id: RootKeyId) -> Result<(), CryptoError> {
        self.replace(|ring| {
            ring.key(id)
                .ok_or(CryptoError::UnknownRootKey(id.to_string()))?;
            Ok(Ring {
                keys: ring.keys.clone(),
                primary: id,
            })
        })
    }

    /// Drops a key from the ring: nothing it sealed opens on this node any more. The primary
    /// cannot be dropped.
    pub fn drop_key(&self, id: RootKeyId) -> Result<(), CryptoError> {
        self.replace(|ring| {
            if ring.primary == id {
                return Err(CryptoError::PrimaryRootKey(id.to_string()));
            }
            Ok(Ring {
                keys: ring.keys.iter().filter(|k| k.id != id).cloned().collect(),
                primary: ring.primary,
            })
        })
    }

    /// Loads an existing root key file (mode 0600, one or more `baton-root-key-v1 <hex>`
    /// lines); never creates one.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let keys = Self::read_file(path)?;
        Self::from_keys(&keys).map_err(|e| file_error(path, e.to_string()))
    }

    /// The keys of a root key file, after checking that only its owner can read it.
    pub fn read_file(path: &Path) -> Result<Vec<SecretBytes>, CryptoError> {
        let text = SecretBytes::from(fs::read(path).map_err(|e| file_error(path, e.to_string()))?);
        let mode = fs::metadata(path)
            .map_err(|e| file_error(path, e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(file_error(
                path,
                format!(
                    "permissions are {:o}; the root key file must not be readable by group or others (chmod 600)",
                    mode & 0o777
                ),
            ));
        }
        Self::parse_ring(&text).map_err(|reason| file_error(path, reason))
    }

    /// Parses the root key file's format from wherever it came (a file, a command's output).
    /// The error names what is wrong, never the key.
    pub fn from_text(text: &SecretBytes) -> Result<Self, String> {
        Self::from_keys(&Self::parse_ring(text)?).map_err(|e| e.to_string())
    }

    /// The one key of a text in the root key file's format; refuses a ring of several.
    pub fn parse_text(text: &SecretBytes) -> Result<SecretBytes, String> {
        let mut keys = Self::parse_ring(text)?;
        if keys.len() != 1 {
            return Err(format!("holds {} keys where one is expected", keys.len()));
        }
        Ok(keys.remove(0))
    }

    /// Every key of a text in the root key file's format: one `baton-root-key-v1 <64 hex
    /// digits>` line per key (blank lines and `#` comments are skipped).
    pub fn parse_ring(text: &SecretBytes) -> Result<Vec<SecretBytes>, String> {
        let body = std::str::from_utf8(text.expose()).map_err(|_| "not UTF-8".to_owned())?;
        let mut keys = Vec::new();
        for (number, line) in body.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason: String| format!("line {}: {reason}", number + 1);
            let hex_part = line
                .strip_prefix(ROOT_KEY_FILE_HEADER)
                .ok_or_else(|| at(format!("does not start with {ROOT_KEY_FILE_HEADER}")))?
                .trim();
            let bytes = SecretBytes::new(
                hex::decode(hex_part).map_err(|_| at("key is not valid hex".to_owned()))?,
            );
            if bytes.len() != KEY_LEN {
                return Err(at(format!(
                    "key must be {KEY_LEN} bytes ({} hex digits), not {}",
                    2 * KEY_LEN,
                    bytes.len()
                )));
            }
            keys.push(bytes);
        }
        if keys.is_empty() {
            return Err(format!(
                "holds no key (expected {ROOT_KEY_FILE_HEADER} <hex>)"
            ));
        }
        Ok(keys)
    }

    /// The root key file's format for one key, as a command or a file must give it.
    pub fn to_text(bytes: &SecretBytes) -> SecretBytes {
        Self::ring_text(std::slice::from_ref(bytes))
    }

    /// The root key file's format for several keys, one line each.
    pub fn ring_text(keys: &[SecretBytes]) -> SecretBytes {
        let mut text = String::new();
        for bytes in keys {
            text.push_str(ROOT_KEY_FILE_HEADER);
            text.push(' ');
            text.push_str(&hex::encode(bytes.expose()));
            text.push('\n');
        }
        SecretBytes::from(text)
    }

    /// Runs `command` and builds the ring from its output (see [`RootKey::command_keys`]).
    pub fn from_command(command: &str) -> Result<Self, CryptoError> {
        let keys = Self::command_keys(command)?;
        Self::from_keys(&keys).map_err(|e| CryptoError::RootKeyCommand {
            command: command.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Runs `command` with `/bin/sh -c` and reads the keys from its standard output, in the root
    /// key file's format: for systemd credentials, a TPM, or a secret store's CLI. It must exit
    /// 0 within 30 seconds; its standard error is shown when it fails (it should never hold the
    /// key).
    pub fn command_keys(command: &str) -> Result<Vec<SecretBytes>, CryptoError> {
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
        Self::parse_ring(&stdout).map_err(|reason| fail(format!("its output {reason}")))
    }

    /// Loads the root key file, or creates it with mode 0600 if it does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), CryptoError> {
        match fs::metadata(path) {
            Ok(_) => Ok((Self::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, bytes) = Self::generate()?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| file_error(path, e.to_string()))?;
                file.write_all(Self::to_text(&bytes).expose())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| file_error(path, e.to_string()))?;
                Ok((key, true))
            }
            Err(e) => Err(file_error(path, e.to_string())),
        }
    }

    /// Adds `key` to the root key file (a ring from then on), atomically: the new file is
    /// written beside it, synced and renamed over it. Does nothing if the file holds it.
    pub fn append_to_file(path: &Path, key: &SecretBytes) -> Result<(), CryptoError> {
        let mut keys = Self::read_file(path)?;
        let id = Self::id_of(key)?;
        for existing in &keys {
            if Self::id_of(existing)? == id {
                return Ok(());
            }
        }
        keys.push(key.clone());
        write_file_atomically(path, &Self::ring_text(&keys))
    }

    /// Removes the keys `drop` names from the root key file, atomically; returns how many it
    /// removed. Never leaves the file empty.
    pub fn remove_from_file(path: &Path, drop: &[RootKeyId]) -> Result<usize, CryptoError> {
        let keys = Self::read_file(path)?;
        let mut kept = Vec::with_capacity(keys.len());
        for key in keys.iter() {
            if !drop.contains(&Self::id_of(key)?) {
                kept.push(key.clone());
            }
        }
        let removed = keys.len() - kept.len();
        if kept.is_empty() {
            return Err(file_error(path, "would hold no key".to_owned()));
        }
        if removed > 0 {
            write_file_atomically(path, &Self::ring_text(&kept))?;
        }
        Ok(removed)
    }

    fn open_with(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, CryptoError> {
        let ring = self.snapshot();
        match SealedUnder::of(sealed) {
            Some(SealedUnder::Key(id)) => {
                let key = ring
                    .key(id)
                    .ok_or_else(|| CryptoError::UnknownRootKey(id.to_string()))?;
                key.aead.open_framed(
                    V2_HEADER_LEN,
                    sealed,
                    &[&sealed[..V2_HEADER_LEN], aad].concat(),
                )
            }
            Some(SealedUnder::Legacy) => {
                // Format v1 names no key: the primary first, then the others.
                let primary = ring.primary();
                let others = ring.keys.iter().filter(|k| k.id != primary.id);
                for key in std::iter::once(primary).chain(others) {
                    if let Ok(opened) = key.aead.open_framed(1, sealed, aad) {
                        return Ok(opened);
                    }
                }
                Err(CryptoError::OpenFailed)
            }
            None => Err(CryptoError::OpenFailed),
        }
    }

    /// Wraps a data key for the secret (or other owner) named by `context`.
    pub fn wrap(&self, data_key: &DataKey, context: &str) -> Result<Vec<u8>, CryptoError> {
        self.snapshot()
            .primary()
            .seal(data_key.bytes.expose(), &wrap_aad(context))
    }

    pub fn unwrap(&self, wrapped: &[u8], context: &str) -> Result<DataKey, CryptoError> {
        DataKey::from_bytes(self.open_with(wrapped, &wrap_aad(context))?)
    }

    /// Seals a small secret directly under the root key, such as an access key's secret half.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        self.snapshot().primary().seal(plaintext, aad.as_bytes())
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<SecretBytes, CryptoError> {
        self.open_with(sealed, aad.as_bytes())
    }

    /// A wrapped data key sealed again under the primary key, or `None` when the primary
    /// already wraps it.
    pub fn rewrap(&self, wrapped: &[u8], context: &str) -> Result<Option<Vec<u8>>, CryptoError> {
        self.reseal_with(wrapped, &wrap_aad(context))
    }

    /// A value [`RootKey::seal`] sealed, sealed again under the primary key, or `None` when the
    /// primary already seals it.
    pub fn reseal(&self, sealed: &[u8], aad: &str) -> Result<Option<Vec<u8>>, CryptoError> {
        self.reseal_with(sealed, aad.as_bytes())
    }

    fn reseal_with(&self, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        let ring = self.snapshot();
        if SealedUnder::of(sealed) == Some(SealedUnder::Key(ring.primary)) {
            return Ok(None);
        }
        let plaintext = self.open_with(sealed, aad)?;
        Ok(Some(ring.primary().seal(plaintext.expose(), aad)?))
    }

    /// A MAC key for one purpose, derived from the primary root key (HMAC-SHA256 of the purpose
    /// under the root key): anyone without the root key can neither compute nor forge its MACs.
    pub fn mac_key(&self, purpose: &str) -> MacKey {
        let tag = self.snapshot().primary().derived(purpose);
        MacKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            tag.as_ref(),
        ))
    }

    /// The MAC key for `purpose` under every key of the ring, to check something made before
    /// or during a rotation.
    pub fn mac_keys(&self, purpose: &str) -> Vec<(RootKeyId, MacKey)> {
        self.snapshot()
            .keys
            .iter()
            .map(|k| {
                let tag = k.derived(purpose);
                (
                    k.id,
                    MacKey(aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA256,
                        tag.as_ref(),
                    )),
                )
            })
            .collect()
    }

    /// The bytes of [`RootKey::mac_key`]'s key for `purpose`, to keep that key sealed in the
    /// store so that it outlives a rotation of the root key.
    pub fn derived_secret(&self, purpose: &str) -> SecretBytes {
        SecretBytes::new(self.snapshot().primary().derived(purpose).as_ref().to_vec())
    }
}

impl MacKey {
    /// A MAC key from bytes kept sealed (see [`RootKey::derived_secret`]).
    pub fn from_secret(bytes: &SecretBytes) -> Self {
        MacKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            bytes.expose(),
        ))
    }
}

fn file_error(path: &Path, reason: String) -> CryptoError {
    CryptoError::RootKeyFile {
        path: path.display().to_string(),
        reason,
    }
}

/// Writes `text` to a new 0600 file beside `path`, syncs it, renames it over `path` and syncs
/// the directory, so a crash leaves either the old file or the new one.
fn write_file_atomically(path: &Path, text: &SecretBytes) -> Result<(), CryptoError> {
    let fail = |e: std::io::Error| file_error(path, e.to_string());
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root.key".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = file
        .write_all(text.expose())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-rk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn root_key_file_is_created_0600_and_reloads_to_the_same_key() {
        let dir = temp_dir("create");
        let path = dir.join("root.key");
        let (k1, created) = RootKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, created) = RootKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.primary(), k2.primary());
        let sealed = k1.seal(b"v", "ctx").unwrap();
        assert_eq!(k2.open(&sealed, "ctx").unwrap().expose(), b"v");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = RootKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_value_names_its_key_and_opens_only_with_a_ring_that_holds_it() {
        let (old, old_bytes) = RootKey::generate().unwrap();
        let sealed = old.seal(b"the access key", "ctx").unwrap();
        assert_eq!(
            SealedUnder::of(&sealed),
            Some(SealedUnder::Key(old.primary()))
        );

        let new_bytes = RootKey::generate_bytes().unwrap();
        let new_id = RootKey::id_of(&new_bytes).unwrap();
        let ring = RootKey::from_bytes(&old_bytes).unwrap();
        ring.add(std::slice::from_ref(&new_bytes)).unwrap();
        assert_eq!(ring.primary(), old.primary(), "adding does not promote");
        ring.set_primary(new_id).unwrap();
        let resealed = ring
            .reseal(&sealed, "ctx")
            .unwrap()
            .expect("under the old key");
        assert_eq!(SealedUnder::of(&resealed), Some(SealedUnder::Key(new_id)));
        assert!(
            ring.reseal(&resealed, "ctx").unwrap().is_none(),
            "already under the primary"
        );
        assert_eq!(
            ring.open(&resealed, "ctx").unwrap().expose(),
            b"the access key"
        );

        // The old key alone opens nothing the new key sealed, and names what it lacks.
        let err = old.open(&resealed, "ctx").unwrap_err().to_string();
        assert!(err.contains(&new_id.to_string()), "{err}");
        // Dropping the old key: the primary cannot go, the old one can.
        assert!(ring.drop_key(new_id).is_err());
        ring.drop_key(old.primary()).unwrap();
        assert!(ring.open(&sealed, "ctx").is_err());
        // The header is authenticated: naming another key fails.
        let mut renamed = resealed.clone();
        renamed[1..9].copy_from_slice(&old.primary().0);
        assert!(old.open(&renamed, "ctx").is_err());
    }

    #[test]
    fn legacy_v1_blobs_open_with_the_key_that_made_them_and_rewrap_to_v2() {
        let bytes = RootKey::generate_bytes().unwrap();
        let legacy = AeadKey::new(bytes.expose());
        let data_key = DataKey::generate().unwrap();
        let v1 = legacy
            .seal_framed(
                &[SEALED_FORMAT_V1],
                data_key.bytes.expose(),
                &wrap_aad("s-1"),
            )
            .unwrap();
        assert_eq!(SealedUnder::of(&v1), Some(SealedUnder::Legacy));
        let other = RootKey::generate_bytes().unwrap();
        // The legacy key is not the primary here: it is found anyway.
        let ring = RootKey::from_keys(&[bytes, other]).unwrap();
        ring.unwrap(&v1, "s-1").unwrap();
        let v2 = ring.rewrap(&v1, "s-1").unwrap().unwrap();
        assert_eq!(SealedUnder::of(&v2), Some(SealedUnder::Key(ring.primary())));
        assert!(
            ring.unwrap(&v2, "s-2").is_err(),
            "still bound to its secret"
        );
    }

    #[test]
    fn the_key_file_becomes_a_ring_and_loses_retired_keys() {
        let dir = temp_dir("ring");
        let path = dir.join("root.key");
        let (first, _) = RootKey::load_or_create(&path).unwrap();
        let second = RootKey::generate_bytes().unwrap();
        RootKey::append_to_file(&path, &second).unwrap();
        RootKey::append_to_file(&path, &second).unwrap();
        let ring = RootKey::load(&path).unwrap();
        assert_eq!(
            ring.ids(),
            vec![first.primary(), RootKey::id_of(&second).unwrap()]
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            RootKey::remove_from_file(&path, &[first.primary()]).unwrap(),
            1
        );
        assert_eq!(
            RootKey::load(&path).unwrap().ids(),
            vec![RootKey::id_of(&second).unwrap()]
        );
        let all = RootKey::load(&path).unwrap().ids();
        assert!(
            RootKey::remove_from_file(&path, &all).is_err(),
            "never empty"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ring_text_errors_name_the_line_never_the_key() {
        let bad = SecretBytes::from(format!(
            "baton-root-key-v1 {}\nbaton-root-key-v1 abcd\n",
            "11".repeat(32)
        ));
        let err = RootKey::parse_ring(&bad).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains(&"11".repeat(32)), "{err}");
        assert!(
            RootKey::parse_text(&RootKey::ring_text(&[
                RootKey::generate_bytes().unwrap(),
                RootKey::generate_bytes().unwrap()
            ]))
            .is_err()
        );
    }

    #[test]
    fn ids_parse_back_and_debug_shows_no_material() {
        let (ring, bytes) = RootKey::generate().unwrap();
        let id = ring.primary();
        assert_eq!(id.to_string().parse::<RootKeyId>().unwrap(), id);
        let shown = format!("{ring:?}");
        assert!(!shown.contains(&hex::encode(bytes.expose())), "{shown}");
        assert!(shown.contains(&id.to_string()));
    }
}

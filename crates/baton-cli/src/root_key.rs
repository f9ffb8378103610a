//! Root keys that are not a plain file: from a command's output, or kept on disk only wrapped
//! by a KMS key and unwrapped at start through any AWS KMS-compatible endpoint (AWS KMS, or
//! another Baton).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use baton_app::root_keys::{NewRootKey, RootKeySource};
use baton_client::{Client, ClientConfig};
use baton_crypto::{RootKey, RootKeyId, SecretBytes};
use serde_json::{Value, json};

/// The file that holds the KMS-wrapped root key, in the data directory.
pub const WRAPPED_FILE: &str = "root.key.kms";
const WRAPPED_HEADER: &str = "baton-root-key-kms-v1";

/// Binds the wrapped key to its purpose: KMS refuses to unwrap it under another context.
fn context() -> Value {
    json!({"baton": "root-key"})
}

/// The KMS endpoint: AWS_ENDPOINT_URL_KMS, else AWS_ENDPOINT_URL, else AWS KMS in the key's
/// region.
fn endpoint(region: &str) -> String {
    ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"))
}

/// A root key source kept only wrapped by a KMS key: `<data-dir>/root.key.kms`, plus the new
/// keys of rotations, which the node that starts a rotation asks KMS to generate and shares
/// wrapped through the store, so that every node fetches and unwraps it.
#[derive(Debug)]
pub struct KmsSource {
    key_arn: String,
    endpoint: String,
    wrapped_path: std::path::PathBuf,
    client: Client,
}

/// Opens the KMS-wrapped root key of `data_dir` with `key_arn`: the ring it holds now, and the
/// source that reads it again. On the first start KMS generates the key (GenerateDataKey), or,
/// when a plain `root.key` already exists, wraps that key (Encrypt); only the wrapped form is
/// written.
pub async fn from_kms(key_arn: &str, data_dir: &Path) -> anyhow::Result<(RootKey, KmsSource)> {
    let parts: Vec<&str> = key_arn.split(':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "kms" || !parts[5].starts_with("key/") {
        bail!(
            "--root-key-kms must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not {key_arn:?}"
        );
    }
    let region = parts[3];
    let endpoint = endpoint(region);
    let credentials = baton_client::credentials::resolve(None)
        .map_err(anyhow::Error::msg)
        .context("credentials for KMS")?;
    let mut client = Client::new(ClientConfig {
        endpoint: endpoint.clone(),
        region: region.to_owned(),
        access_key: credentials.access_key,
        timeout: Duration::from_secs(15),
    })?;
    if let Some(token) = credentials.session_token {
        client = client.with_session_token(token);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let source = KmsSource {
        key_arn: key_arn.to_owned(),
        endpoint,
        wrapped_path: data_dir.join(WRAPPED_FILE),
        client,
    };
    let bytes = source.first_key(data_dir).await?;
    let ring = RootKey::from_bytes(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "KMS key {key_arn} unwrapped {} bytes; a root key is 32",
            bytes.len()
        )
    })?;
    Ok((ring, source))
}

impl KmsSource {
    fn kms_error(&self, what: &str) -> String {
        format!("{what} with KMS key {} at {}", self.key_arn, self.endpoint)
    }

    /// KMS Decrypt of one wrapped key (`CiphertextBlob` in base64).
    async fn unwrap(&self, blob: &str) -> anyhow::Result<SecretBytes> {
        let r: Value = self
            .client
            .call(
                "TrentService.Decrypt",
                &json!({"CiphertextBlob": blob, "KeyId": self.key_arn, "EncryptionContext": context()}),
            )
            .await
            .with_context(|| self.kms_error("unwrapping the root key"))?;
        decode_plaintext(&r)
    }

    async fn first_key(&self, data_dir: &Path) -> anyhow::Result<SecretBytes> {
        let wrapped_path = &self.wrapped_path;
        let key_arn = self.key_arn.as_str();
        match std::fs::read_to_string(wrapped_path) {
            Ok(text) => {
                let (arn, blob) = parse_wrapped(&text)
                    .with_context(|| format!("reading {}", wrapped_path.display()))?;
                if arn != key_arn {
                    bail!(
                        "{} is wrapped under {arn}, not {key_arn}: start with --root-key-kms {arn}",
                        wrapped_path.display()
                    );
                }
                self.unwrap(&blob).await
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let plain = data_dir.join("root.key");
                let r: Value = if plain.exists() {
                    let text = SecretBytes::from(std::fs::read(&plain)?);
                    let bytes = RootKey::parse_text(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", plain.display()))?;
                    let b64 = SecretBytes::from(
                        base64::engine::general_purpose::STANDARD.encode(bytes.expose()),
                    );
                    let mut r: Value = self
                        .client
                        .call(
                            "TrentService.Encrypt",
                            &json!({"KeyId": key_arn, "Plaintext": std::str::from_utf8(b64.expose())?, "EncryptionContext": context()}),
                        )
                        .await
                        .with_context(|| self.kms_error("wrapping the existing root key"))?;
                    tracing::warn!(path = %plain.display(), "the existing root key is now kept wrapped by KMS as well; delete the plain file (shred it) so the disk no longer holds it");
                    r["Plaintext"] = json!(std::str::from_utf8(b64.expose())?);
                    r
                } else {
                    self.generate().await?
                };
                let blob = r["CiphertextBlob"]
                    .as_str()
                    .context("KMS answered without a CiphertextBlob")?;
                write_wrapped(wrapped_path, key_arn, blob)?;
                tracing::info!(path = %wrapped_path.display(), key = key_arn, "root key created and kept wrapped by KMS");
                decode_plaintext(&r)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", wrapped_path.display())),
        }
    }

    async fn generate(&self) -> anyhow::Result<Value> {
        self.client
            .call(
                "TrentService.GenerateDataKey",
                &json!({"KeyId": self.key_arn, "KeySpec": "AES_256", "EncryptionContext": context()}),
            )
            .await
            .with_context(|| self.kms_error("generating a root key"))
    }
}

fn decode_plaintext(r: &Value) -> anyhow::Result<SecretBytes> {
    let plaintext = SecretBytes::from(
        r["Plaintext"]
            .as_str()
            .map(str::to_owned)
            .context("KMS answered without a Plaintext")?,
    );
    Ok(SecretBytes::from(
        base64::engine::general_purpose::STANDARD
            .decode(plaintext.expose())
            .context("KMS's Plaintext is not base64")?,
    ))
}

#[async_trait::async_trait]
impl RootKeySource for KmsSource {
    fn describe(&self) -> String {
        format!(
            "{} wrapped by KMS key {}",
            self.wrapped_path.display(),
            self.key_arn
        )
    }

    async fn keys(&self, shared: &[Vec<u8>]) -> Result<Vec<SecretBytes>, String> {
        let mut keys = Vec::new();
        let text = std::fs::read_to_string(&self.wrapped_path)
            .map_err(|e| format!("{}: {e}", self.wrapped_path.display()))?;
        let mut wrapped = vec![parse_wrapped(&text).map_err(|e| e.to_string())?];
        for share in shared {
            if let Ok(line) = std::str::from_utf8(share)
                && let Ok(parsed) = parse_wrapped(line)
            {
                wrapped.push(parsed);
            }
        }
        for (arn, blob) in wrapped {
            if arn != self.key_arn {
                tracing::warn!(wrapped_by = %arn, this_node = %self.key_arn, "a shared root key is wrapped by another KMS key; this node cannot unwrap it");
                continue;
            }
            keys.push(self.unwrap(&blob).await.map_err(|e| format!("{e:#}"))?);
        }
        Ok(keys)
    }

    async fn add_new_key(&self) -> Result<NewRootKey, String> {
        let r = self.generate().await.map_err(|e| format!("{e:#}"))?;
        let blob = r["CiphertextBlob"]
            .as_str()
            .ok_or("KMS answered without a CiphertextBlob")?;
        let share = format!("{WRAPPED_HEADER} {} {blob}", self.key_arn).into_bytes();
        let key = decode_plaintext(&r).map_err(|e| format!("{e:#}"))?;
        Ok(NewRootKey {
            key,
            share: Some(share),
        })
    }

    async fn remove_keys(&self, _retired: &[RootKeyId]) -> Result<usize, String> {
        // The file's key is dropped from the ring at every start once it is retired; the new
        // key comes from the store's share.
        Ok(0)
    }
}

fn parse_wrapped(text: &str) -> anyhow::Result<(String, String)> {
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(WRAPPED_HEADER), Some(arn), Some(blob), None) => {
            Ok((arn.to_owned(), blob.to_owned()))
        }
        _ => bail!("expected `{WRAPPED_HEADER} <key ARN> <base64 blob>`"),
    }
}

fn write_wrapped(path: &Path, arn: &str, blob: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{WRAPPED_HEADER} {arn} {blob}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

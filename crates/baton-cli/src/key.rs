//! `baton key …`: KMS keys over the KMS API: create, list, describe, encrypt, decrypt, sign,
//! verify, rotate, aliases, and the JWKS.

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton_client::Client;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::connect::OutputFormat;
use crate::output::{date, json as print_json, table};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key.
    Create {
        /// SYMMETRIC_DEFAULT, RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384,
        /// HMAC_256, HMAC_384 or HMAC_512.
        #[arg(long, default_value = "SYMMETRIC_DEFAULT")]
        spec: String,
        /// ENCRYPT_DECRYPT, SIGN_VERIFY or GENERATE_VERIFY_MAC; default: the spec's first.
        #[arg(long)]
        usage: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Also create this alias (alias/NAME) for the key.
        #[arg(long)]
        alias: Option<String>,
    },
    /// List the keys of the region.
    List,
    /// Show a key's metadata, rotation status and versions.
    Describe { key: String },
    /// Encrypt data (from --text, --file or standard input); prints the base64 ciphertext.
    Encrypt {
        key: String,
        #[command(flatten)]
        input: Input,
        /// Encryption context pair KEY=VALUE; repeatable. Decrypt needs the same pairs.
        #[arg(long = "context")]
        context: Vec<String>,
    },
    /// Decrypt a base64 ciphertext (from --text, --file or standard input); writes the
    /// plaintext to standard output.
    Decrypt {
        /// The key; optional for symmetric ciphertext, which names its key and version.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        input: Input,
        #[arg(long = "context")]
        context: Vec<String>,
    },
    /// Sign a message (from --text, --file or standard input); prints the base64 signature.
    Sign {
        key: String,
        /// RSASSA_PSS_SHA_256, RSASSA_PKCS1_V1_5_SHA_256, ECDSA_SHA_256, …
        #[arg(long)]
        algorithm: String,
        #[command(flatten)]
        input: Input,
    },
    /// Verify a base64 signature of a message; exits non-zero if it does not verify.
    Verify {
        key: String,
        #[arg(long)]
        algorithm: String,
        #[arg(long)]
        signature: String,
        #[command(flatten)]
        input: Input,
    },
    /// Rotate a key now: a new version goes through the phases (pending, current, retired).
    Rotate {
        key: String,
        /// Wait until the rotation has finished, printing each phase.
        #[arg(long)]
        wait: bool,
        /// Turn on automatic rotation every DAYS days (90 to 2560) instead of rotating now.
        #[arg(long)]
        every_days: Option<i64>,
    },
    /// Manage aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Print the key's public JWKS, as GET /jwks/KEY serves it.
    Jwks { key: String },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Create alias/NAME for a key.
    Create {
        name: String,
        key: String,
    },
    /// Point an alias at another key of the same type and usage.
    Update {
        name: String,
        key: String,
    },
    Delete {
        name: String,
    },
    List,
}

/// Where a command's data comes from.
#[derive(Debug, clap::Args)]
pub struct Input {
    /// The data as text.
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// Read the data from this file.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

impl Input {
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(text) = &self.text {
            return Ok(text.as_bytes().to_vec());
        }
        if let Some(path) = &self.file {
            return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        }
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
        Ok(data)
    }

    /// A base64 argument: surrounding whitespace (a trailing newline from a file or pipe) is
    /// not part of it.
    fn read_base64(&self) -> anyhow::Result<Vec<u8>> {
        let raw = self.read()?;
        let text = std::str::from_utf8(&raw).context("the input is not base64 text")?;
        STANDARD
            .decode(text.trim())
            .context("the input is not valid base64")
    }
}

fn context(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--context {pair:?} must be KEY=VALUE");
        };
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(map))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

async fn kms(client: &Client, op: &str, body: Value) -> anyhow::Result<Value> {
    Ok(client.call(&format!("TrentService.{op}"), &body).await?)
}

pub async fn run(client: Client, format: OutputFormat, command: KeyCommand) -> anyhow::Result<()> {
    let json_out = format == OutputFormat::Json;
    match command {
        KeyCommand::Create {
            spec,
            usage,
            description,
            alias,
        } => {
            let mut body = json!({"KeySpec": spec});
            if let Some(u) = usage {
                body["KeyUsage"] = json!(u);
            }
            if let Some(d) = description {
                body["Description"] = json!(d);
            }
            let out = kms(&client, "CreateKey", body).await?;
            let meta = &out["KeyMetadata"];
            if let Some(alias) = alias {
                kms(
                    &client,
                    "CreateAlias",
                    json!({"AliasName": alias, "TargetKeyId": meta["KeyId"]}),
                )
                .await
                .context("the key was created, but its alias was not")?;
            }
            if json_out {
                print_json(&out)?;
            } else {
                println!("{}", text(&meta["KeyId"]));
            }
        }
        KeyCommand::List => {
            let mut rows = Vec::new();
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let mut body = json!({"Limit": 1000});
                if let Some(m) = &marker {
                    body["Marker"] = json!(m);
                }
                let page = kms(&client, "ListKeys", body).await?;
                for k in page["Keys"].as_array().into_iter().flatten() {
                    let meta = kms(&client, "DescribeKey", json!({"KeyId": k["KeyId"]})).await?;
                    let m = &meta["KeyMetadata"];
                    rows.push(vec![
                        text(&m["KeyId"]),
                        text(&m["KeySpec"]),
                        text(&m["KeyUsage"]),
                        text(&m["KeyState"]),
                        text(&m["Description"]),
                    ]);
                    all.push(meta["KeyMetadata"].clone());
                }
                match page.get("NextMarker").and_then(Value::as_str) {
                    Some(next) => marker = Some(next.to_owned()),
                    None => break,
                }
            }
            if json_out {
                print_json(&all)?;
            } else {
                table(&["Key ID", "Spec", "Usage", "State", "Description"], rows);
            }
        }
        KeyCommand::Describe { key } => {
            let meta = kms(&client, "DescribeKey", json!({"KeyId": key})).await?;
            let rotation = kms(&client, "GetKeyRotationStatus", json!({"KeyId": key})).await?;
            let versions = kms(&client, "ListKeyRotations", json!({"KeyId": key})).await?;
            if json_out {
                print_json(
                    &json!({"KeyMetadata": meta["KeyMetadata"], "Rotation": rotation,
                                   "Rotations": versions["Rotations"]}),
                )?;
                return Ok(());
            }
            let m = &meta["KeyMetadata"];
            let mut fields: Vec<Vec<String>> = [
                ("ARN", "Arn"),
                ("Key spec", "KeySpec"),
                ("Key usage", "KeyUsage"),
                ("State", "KeyState"),
                ("Description", "Description"),
                ("Current version", "BatonCurrentKeyVersionId"),
            ]
            .into_iter()
            .map(|(label, field)| vec![label.to_owned(), text(&m[field])])
            .collect();
            fields.push(vec!["Created".to_owned(), date(m["CreationDate"].as_f64())]);
            fields.push(vec![
                "Automatic rotation".to_owned(),
                match rotation["KeyRotationEnabled"].as_bool() {
                    Some(true) => format!(
                        "every {} days, next {}",
                        text(&rotation["RotationPeriodInDays"]),
                        date(rotation["NextRotationDate"].as_f64())
                    ),
                    _ => "off".to_owned(),
                },
            ]);
            table(&["Field", "Value"], fields);
            let rows = versions["Rotations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        text(&r["BatonKeyVersionId"]),
                        text(&r["BatonKeyVersionState"]),
                        text(&r["RotationType"]),
                        date(r["RotationDate"].as_f64()),
                    ]
                })
                .collect();
            table(&["Rotated to version", "State", "Type", "Date"], rows);
        }
        KeyCommand::Encrypt {
            key,
            input,
            context: pairs,
        } => {
            let plain = input.read()?;
            let out = kms(
                &client,
                "Encrypt",
                json!({"KeyId": key, "Plaintext": STANDARD.encode(&plain),
                       "EncryptionContext": context(&pairs)?}),
            )
            .await?;
            if json_out {
                print_json(&out)?;
            } else {
                println!("{}", text(&out["CiphertextBlob"]));
            }
        }
        KeyCommand::Decrypt {
            key,
            input,
            context: pairs,
        } => {
            let blob = input.read_base64()?;
            let mut body = json!({"CiphertextBlob": STANDARD.encode(&blob),
                                  "EncryptionContext": context(&pairs)?});
            if let Some(k) = key {
                body["KeyId"] = json!(k);
            }
            let out = kms(&client, "Decrypt", body).await?;
            let plain = STANDARD
                .decode(out["Plaintext"].as_str().unwrap_or_default())
                .context("the server's plaintext is not base64")?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&plain)?;
            stdout.flush()?;
        }
        KeyCommand::Sign {
            key,
            algorithm,
            input,
        } => {
            let message = input.read()?;
            let out = kms(
                &client,
                "Sign",
                json!({"KeyId": key, "Message": STANDARD.encode(&message),
                       "SigningAlgorithm": algorithm}),
            )
            .await?;
            if json_out {
                print_json(&out)?;
            } else {
                println!("{}", text(&out["Signature"]));
            }
        }
        KeyCommand::Verify {
            key,
            algorithm,
            signature,
            input,
        } => {
            let message = input.read()?;
            let out = kms(
                &client,
                "Verify",
                json!({"KeyId": key, "Message": STANDARD.encode(&message),
                       "Signature": signature.trim(), "SigningAlgorithm": algorithm}),
            )
            .await?;
            if json_out {
                print_json(&out)?;
            } else {
                println!(
                    "valid: signed by version {}",
                    text(&out["BatonKeyVersionId"])
                );
            }
        }
        KeyCommand::Rotate {
            key,
            wait,
            every_days,
        } => {
            if let Some(days) = every_days {
                kms(
                    &client,
                    "EnableKeyRotation",
                    json!({"KeyId": key, "RotationPeriodInDays": days}),
                )
                .await?;
                println!("{key}: rotates every {days} days");
                return Ok(());
            }
            let out = kms(&client, "RotateKeyOnDemand", json!({"KeyId": key})).await?;
            let version = text(&out["BatonKeyVersionId"]);
            println!("{version}");
            if wait {
                // The same progress as `baton rotation status --watch`, to the end, on standard
                // error: standard output is the new version id, for scripts.
                crate::rotation::watch_target(
                    &client,
                    &baton_proto::SecretIdRequest {
                        secret_id: None,
                        key_id: Some(key.clone()),
                    },
                    &mut |line| eprintln!("{line}"),
                )
                .await?;
            }
        }
        KeyCommand::Alias(command) => match command {
            AliasCommand::Create { name, key } => {
                kms(
                    &client,
                    "CreateAlias",
                    json!({"AliasName": name, "TargetKeyId": key}),
                )
                .await?;
            }
            AliasCommand::Update { name, key } => {
                kms(
                    &client,
                    "UpdateAlias",
                    json!({"AliasName": name, "TargetKeyId": key}),
                )
                .await?;
            }
            AliasCommand::Delete { name } => {
                kms(&client, "DeleteAlias", json!({"AliasName": name})).await?;
            }
            AliasCommand::List => {
                let out = kms(&client, "ListAliases", json!({"Limit": 1000})).await?;
                if json_out {
                    print_json(&out["Aliases"])?;
                } else {
                    let rows = out["Aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| vec![text(&a["AliasName"]), text(&a["TargetKeyId"])])
                        .collect();
                    table(&["Alias", "Key ID"], rows);
                }
            }
        },
        KeyCommand::Jwks { key } => {
            print_json(&client.jwks(&key).await?)?;
        }
    }
    Ok(())
}

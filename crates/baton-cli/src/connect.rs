//! Where the CLI connects and with which credentials: flags, then `BATON_ENDPOINT` and the
//! standard AWS environment variables, then the AWS shared credentials file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_client::{AccessKey, Client, ClientConfig, DEFAULT_ENDPOINT};
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables and text.
    Table,
    /// JSON as the API returns it, for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Server URL.
    #[arg(long, global = true, env = "BATON_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Region (namespace) to act in.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Profile in the AWS shared credentials file.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads one profile of an AWS shared credentials file (INI).
fn profile_keys(path: &PathBuf, profile: &str) -> anyhow::Result<Option<AccessKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if in_profile && let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    Ok(match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Some(AccessKey {
            access_key_id,
            secret_access_key,
        }),
        _ => None,
    })
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let profile = self.profile.clone().or_else(|| env("AWS_PROFILE"));
        let from_env = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) if profile.is_none() => {
                Some(AccessKey {
                    access_key_id,
                    secret_access_key,
                })
            }
            _ => None,
        };
        let from_env_used = from_env.is_some();
        let access_key = match from_env {
            Some(key) => key,
            None => {
                let path = env("AWS_SHARED_CREDENTIALS_FILE")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
                let profile = profile.unwrap_or_else(|| "default".to_owned());
                match path {
                    Some(path) => profile_keys(&path, &profile)?.with_context(|| {
                        format!(
                            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                             add profile [{profile}] to {}",
                            path.display()
                        )
                    })?,
                    None => bail!(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                         AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE"
                    ),
                }
            }
        };
        let client = Client::new(ClientConfig {
            endpoint,
            region,
            access_key,
            timeout: Duration::from_secs(30),
        })?;
        // Temporary credentials (`baton admin session-token`) come with a session token.
        Ok(match env("AWS_SESSION_TOKEN") {
            Some(token) if from_env_used => client.with_session_token(token),
            _ => client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_the_shared_credentials_file() {
        let dir = std::env::temp_dir().join(format!("baton-cli-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n# c\n[baton]\naws_access_key_id=C\naws_secret_access_key = D\n",
        )
        .unwrap();
        let key = profile_keys(&path, "baton").unwrap().unwrap();
        assert_eq!(
            (key.access_key_id.as_str(), key.secret_access_key.as_str()),
            ("C", "D")
        );
        assert!(profile_keys(&path, "missing").unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

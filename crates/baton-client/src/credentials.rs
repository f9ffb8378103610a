//! Credentials as every AWS tool finds them: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
//! (with `AWS_SESSION_TOKEN`), unless a profile is named; then the profile (`AWS_PROFILE`, or
//! `default`) of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, or
//! `~/.aws/credentials`). The CLI and the agent both use this.

use std::path::{Path, PathBuf};

use crate::AccessKey;

/// An access key, and the session token temporary credentials carry.
#[derive(Debug)]
pub struct Credentials {
    pub access_key: AccessKey,
    pub session_token: Option<String>,
    /// Where they came from, for a start-up line: "environment" or "profile NAME in PATH".
    pub source: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Finds the credentials; `profile` (a `--profile` flag) wins over the environment.
pub fn resolve(profile: Option<&str>) -> Result<Credentials, String> {
    let profile = profile.map(str::to_owned).or_else(|| env("AWS_PROFILE"));
    if profile.is_none()
        && let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Credentials {
            access_key: AccessKey {
                access_key_id,
                secret_access_key,
            },
            session_token: env("AWS_SESSION_TOKEN"),
            source: "environment".to_owned(),
        });
    }
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
        .ok_or_else(|| {
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE"
                .to_owned()
        })?;
    let profile = profile.unwrap_or_else(|| "default".to_owned());
    let access_key = profile_keys(&path, &profile)?.ok_or_else(|| {
        format!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile \
             [{profile}] to {}",
            path.display()
        )
    })?;
    Ok(Credentials {
        access_key,
        session_token: None,
        source: format!("profile {profile} in {}", path.display()),
    })
}

/// Reads one profile of an AWS shared credentials file (INI).
pub fn profile_keys(path: &Path, profile: &str) -> Result<Option<AccessKey>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_from_the_shared_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
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
    }
}

//! File sinks: a secret rendered through a template into a file, replaced atomically whenever
//! the secret's current version changes, followed by an optional reload command. For programs
//! that read their credentials from files.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_client::keyring::{Keyring, KeyringSet};
use zeroize::Zeroizing;

use crate::config::Sink;

/// How long a reload command may run.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Sinks are re-rendered at least this often, in case a write failed.
const RESYNC: Duration = Duration::from_secs(30);

/// How a sink writes values into its template's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// Shell-style environment file (`KEY=value`): a value other than plain characters is
    /// single-quoted; a value with a control character (a newline, say) is refused, because
    /// it would add lines to the file.
    Env,
    /// Inside a JSON string: escaped as JSON escapes it.
    Json,
    /// As it is: for a file that holds one value, such as a PEM key.
    Raw,
}

impl SinkFormat {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "env" => Ok(Self::Env),
            "json" => Ok(Self::Json),
            "raw" => Ok(Self::Raw),
            other => bail!("unknown sink format {other:?}: use env, json or raw"),
        }
    }

    /// `env` for `*.env`, `json` for `*.json`, `raw` for anything else.
    pub fn for_destination(destination: &Path) -> Self {
        match destination.extension().and_then(|e| e.to_str()) {
            Some("env") => Self::Env,
            Some("json") => Self::Json,
            _ => Self::Raw,
        }
    }

    /// Appends `value`, escaped for this format, or says why it cannot be written.
    fn push(self, out: &mut String, what: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Self::Raw => out.push_str(value),
            Self::Json => {
                let quoted = Zeroizing::new(serde_json::to_string(value)?);
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Self::Env => {
                if value.chars().any(char::is_control) {
                    bail!(
                        "{what} holds a control character (a newline, say), which an env file \
                         cannot hold on one line; use format = \"json\" or \"raw\" for this sink"
                    );
                }
                let plain = !value.is_empty()
                    && value.chars().all(|c| {
                        c.is_ascii_alphanumeric()
                            || matches!(c, '_' | '.' | '/' | ':' | '@' | '+' | '-' | ',')
                    });
                if plain {
                    out.push_str(value);
                } else {
                    out.push('\'');
                    for c in value.chars() {
                        if c == '\'' {
                            out.push_str("'\\''");
                        } else {
                            out.push(c);
                        }
                    }
                    out.push('\'');
                }
            }
        }
        Ok(())
    }
}

/// A parsed template: text with `{{secret_string}}`, `{{version_id}}` and `{{json.KEY}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    SecretString,
    VersionId,
    JsonField(String),
}

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").with_context(|| {
                format!(
                    "a {{{{ at byte {} is never closed",
                    text.len() - rest.len() + start
                )
            })?;
            let name = after[..end].trim();
            parts.push(match name {
                "secret_string" => Part::SecretString,
                "version_id" => Part::VersionId,
                _ => match name.strip_prefix("json.") {
                    Some(key) if !key.is_empty() => Part::JsonField(key.to_owned()),
                    _ => bail!(
                        "unknown placeholder {{{{{name}}}}}: use secret_string, version_id or json.KEY"
                    ),
                },
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// Renders the keyring's current version, each value escaped for `format`.
    pub fn render(&self, ring: &Keyring, format: SinkFormat) -> anyhow::Result<Zeroizing<String>> {
        let current = ring
            .current()
            .context("the secret has no current version")?;
        let text = || -> anyhow::Result<&str> {
            if current.is_binary() {
                bail!("the secret's value is binary; templates render SecretString values");
            }
            std::str::from_utf8(current.expose_secret()).context("the value is not UTF-8")
        };
        let mut json: Option<serde_json::Value> = None;
        let mut out = Zeroizing::new(String::new());
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::VersionId => out.push_str(current.version_id()),
                Part::SecretString => format.push(&mut out, "the secret's value", text()?)?,
                Part::JsonField(key) => {
                    if json.is_none() {
                        json = Some(
                            serde_json::from_str(text()?)
                                .context("json.KEY needs a JSON object value")?,
                        );
                    }
                    let field = json
                        .as_ref()
                        .and_then(|j| j.get(key))
                        .with_context(|| format!("the value has no field {key:?}"))?;
                    let what = format!("the field {key:?}");
                    match field {
                        serde_json::Value::String(s) => format.push(&mut out, &what, s)?,
                        other => format.push(&mut out, &what, &other.to_string())?,
                    }
                }
            }
        }
        if let Some(serde_json::Value::Object(map)) = &mut json {
            for value in map.values_mut() {
                if let serde_json::Value::String(s) = value {
                    zeroize::Zeroize::zeroize(s);
                }
            }
        }
        Ok(out)
    }
}

/// Writes `content` to `destination` with `mode` by renaming a synced temporary file in the
/// same directory, so readers see the old file or the new one, never a mixture. Returns false
/// when the file already holds exactly this content.
pub fn write_atomically(destination: &Path, content: &[u8], mode: u32) -> anyhow::Result<bool> {
    if let Ok(existing) = std::fs::read(destination) {
        let existing = Zeroizing::new(existing);
        let same_mode = std::fs::metadata(destination)
            .map(|m| m.permissions().mode() & 0o777 == mode)
            .unwrap_or(false);
        if existing.as_slice() == content && same_mode {
            return Ok(false);
        }
    }
    let name = destination
        .file_name()
        .context("the destination is not a file path")?;
    let tmp = destination.with_file_name(format!(".{}.baton-tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // The umask may have narrowed the mode at creation; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, destination)
        .with_context(|| format!("renaming into {}", destination.display()))?;
    if let Some(dir) = destination.parent()
        && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = dir.sync_all();
    }
    Ok(true)
}

/// Renders every sink now, and again whenever a keyring changes.
pub async fn run(set: KeyringSet, sinks: Vec<Sink>) {
    if sinks.is_empty() {
        return;
    }
    let mut changes = set.changes();
    loop {
        for sink in &sinks {
            if let Err(e) = render_sink(&set, sink).await {
                tracing::warn!(destination = %sink.destination.display(), error = %format!("{e:#}"), "sink not rendered");
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

async fn render_sink(set: &KeyringSet, sink: &Sink) -> anyhow::Result<()> {
    let ring = set.get(&sink.secret_id).await?;
    let content = sink.template.render(&ring, sink.format)?;
    let destination = sink.destination.clone();
    let mode = sink.mode;
    let written = tokio::task::spawn_blocking(move || {
        write_atomically(&destination, content.as_bytes(), mode)
    })
    .await??;
    if !written {
        return Ok(());
    }
    tracing::info!(destination = %sink.destination.display(), version = ring.current().map(|v| v.version_id()).unwrap_or_default(), "sink rendered");
    if let Some(command) = &sink.reload_command {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting reload command {command:?}"))?;
        match tokio::time::timeout(RELOAD_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%status, "reload command failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "reload command failed"),
            Err(_) => tracing::warn!("reload command timed out after {RELOAD_TIMEOUT:?}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_their_placeholders_and_refuse_unknown_ones() {
        let t = Template::parse("user={{ json.username }}\npw={{json.password}} v={{version_id}}")
            .unwrap();
        assert_eq!(t.0.len(), 6);
        assert!(
            Template::parse("{{secret}}")
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder")
        );
        assert!(
            Template::parse("a {{json.x")
                .unwrap_err()
                .to_string()
                .contains("never closed")
        );
        assert!(Template::parse("{{json.}}").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().0,
            vec![Part::Text("plain".into())]
        );
    }

    #[test]
    fn values_are_escaped_for_the_sink_format_or_refused() {
        let push = |format: SinkFormat, value: &str| {
            let mut out = String::new();
            format.push(&mut out, "the field", value).map(|()| out)
        };
        assert_eq!(push(SinkFormat::Env, "s3cret-1.2").unwrap(), "s3cret-1.2");
        assert_eq!(push(SinkFormat::Env, "a b$c").unwrap(), "'a b$c'");
        assert_eq!(push(SinkFormat::Env, "it's").unwrap(), "'it'\\''s'");
        assert_eq!(push(SinkFormat::Env, "").unwrap(), "''");
        let refused = push(SinkFormat::Env, "x\nINJECTED=1")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("control character"), "{refused}");
        assert_eq!(
            push(SinkFormat::Json, "a\"b\n").unwrap(),
            "a\\\"b\\n",
            "escaped as inside a JSON string"
        );
        assert_eq!(
            push(SinkFormat::Raw, "-----BEGIN\nKEY").unwrap(),
            "-----BEGIN\nKEY"
        );
        assert_eq!(
            SinkFormat::for_destination(Path::new("/run/app/db.env")),
            SinkFormat::Env
        );
        assert_eq!(
            SinkFormat::for_destination(Path::new("/run/app/db.json")),
            SinkFormat::Json
        );
        assert_eq!(
            SinkFormat::for_destination(Path::new("/run/app/key.pem")),
            SinkFormat::Raw
        );
        assert!(SinkFormat::parse("yaml").is_err());
    }

    #[test]
    fn atomic_writes_set_the_mode_and_skip_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        assert!(write_atomically(&path, b"one", 0o640).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(
            !write_atomically(&path, b"one", 0o640).unwrap(),
            "unchanged: not rewritten"
        );
        assert!(write_atomically(&path, b"two", 0o600).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! The agent's TOML configuration. Keys are AWS's agent's, plus Baton's own; an unknown key is
//! an error, so a misspelt setting never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    // AWS Secrets Manager Agent keys.
    log_level: Option<String>,
    http_port: Option<u16>,
    ttl_seconds: Option<u64>,
    cache_size: Option<usize>,
    ssrf_headers: Option<Vec<String>>,
    ssrf_env_variables: Option<Vec<String>>,
    path_prefix: Option<String>,
    max_conn: Option<usize>,
    region: Option<String>,
    // Baton's.
    endpoint: Option<String>,
    application: Option<String>,
    instance_id: Option<String>,
    lease_seconds: Option<u64>,
    #[serde(default)]
    sink: Vec<SinkConfig>,
}

/// A file rendered from a secret whenever its current version changes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub secret_id: String,
    /// The template text; exactly one of `template` and `template_file`.
    pub template: Option<String>,
    pub template_file: Option<PathBuf>,
    pub destination: PathBuf,
    /// Octal file mode, such as "0600" (the default).
    pub mode: Option<String>,
    /// Run by `sh -c` after the file changed, such as `kill -HUP $(cat /run/app.pid)`.
    pub reload_command: Option<String>,
    /// How values are escaped: `env`, `json` or `raw`; by default `env` for a `.env`
    /// destination, `json` for `.json`, and `raw` otherwise.
    pub format: Option<String>,
}

/// The settings the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub log_level: String,
    pub http_port: u16,
    /// How long a value read past the keyring (a custom label) is kept.
    pub ttl: Duration,
    pub cache_size: usize,
    pub ssrf_headers: Vec<String>,
    pub ssrf_env_variables: Vec<String>,
    pub path_prefix: String,
    pub max_conn: usize,
    pub region: String,
    pub endpoint: String,
    pub application: String,
    pub instance_id: Option<String>,
    pub lease: Duration,
    pub sinks: Vec<Sink>,
}

/// A validated sink.
#[derive(Debug, Clone)]
pub struct Sink {
    pub secret_id: String,
    pub template: crate::sinks::Template,
    pub destination: PathBuf,
    pub mode: u32,
    pub reload_command: Option<String>,
    pub format: crate::sinks::SinkFormat,
}

impl AgentConfig {
    /// Reads `path` (if given) over the defaults; `endpoint` and `port` from the command line
    /// win over the file.
    pub fn load(
        path: Option<&Path>,
        endpoint: Option<String>,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::from_file(file, endpoint, port)
    }

    fn from_file(
        file: FileConfig,
        endpoint: Option<String>,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let http_port = port.or(file.http_port).unwrap_or(2773);
        if http_port < 1024 {
            bail!("http_port must be 1024 or above (got {http_port})");
        }
        let ttl = file.ttl_seconds.unwrap_or(300);
        if ttl > 3600 {
            bail!("ttl_seconds must be between 0 and 3600 (got {ttl})");
        }
        let cache_size = file.cache_size.unwrap_or(1000);
        if !(1..=1000).contains(&cache_size) {
            bail!("cache_size must be between 1 and 1000 (got {cache_size})");
        }
        let max_conn = file.max_conn.unwrap_or(800);
        if !(1..=1000).contains(&max_conn) {
            bail!("max_conn must be between 1 and 1000 (got {max_conn})");
        }
        let path_prefix = file.path_prefix.unwrap_or_else(|| "/v1/".to_owned());
        if !path_prefix.starts_with('/') {
            bail!("path_prefix must begin with / (got {path_prefix:?})");
        }
        let ssrf_headers = file.ssrf_headers.unwrap_or_else(|| {
            vec![
                "X-Aws-Parameters-Secrets-Token".to_owned(),
                "X-Vault-Token".to_owned(),
            ]
        });
        if ssrf_headers.is_empty() {
            bail!("ssrf_headers must name at least one header");
        }
        let ssrf_env_variables = file.ssrf_env_variables.unwrap_or_else(|| {
            [
                "AWS_TOKEN",
                "AWS_SESSION_TOKEN",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            ]
            .map(str::to_owned)
            .to_vec()
        });
        if ssrf_env_variables.is_empty() {
            bail!("ssrf_env_variables must name at least one variable");
        }
        let lease = file.lease_seconds.unwrap_or(30);
        if !(5..=600).contains(&lease) {
            bail!("lease_seconds must be between 5 and 600 (got {lease})");
        }
        let endpoint = endpoint
            .or(file.endpoint)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .context("no Baton endpoint: pass --endpoint, set endpoint in the config or AWS_ENDPOINT_URL")?;
        let region = file
            .region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let sinks = file
            .sink
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                Sink::validate(s).with_context(|| format!("in [[sink]] number {}", i + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AgentConfig {
            log_level: file.log_level.unwrap_or_else(|| "info".to_owned()),
            http_port,
            ttl: Duration::from_secs(ttl),
            cache_size,
            ssrf_headers,
            ssrf_env_variables,
            path_prefix,
            max_conn,
            region,
            endpoint,
            application: file.application.unwrap_or_else(|| "baton-agent".to_owned()),
            instance_id: file.instance_id,
            lease: Duration::from_secs(lease),
            sinks,
        })
    }

    /// The SSRF token: the first of `ssrf_env_variables` that is set. A value starting with
    /// `file://` names a file holding the token, as AWS's agent reads it.
    pub fn ssrf_token(&self) -> anyhow::Result<zeroize::Zeroizing<String>> {
        for name in &self.ssrf_env_variables {
            let Ok(value) = std::env::var(name) else {
                continue;
            };
            let token = match value.strip_prefix("file://") {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the SSRF token file named by {name}"))?
                    .trim()
                    .to_owned(),
                None => value,
            };
            if token.is_empty() {
                bail!("the SSRF token in {name} is empty");
            }
            return Ok(zeroize::Zeroizing::new(token));
        }
        bail!(
            "no SSRF token: set one of {} (or point it at a file with file://PATH)",
            self.ssrf_env_variables.join(", ")
        )
    }
}

impl Sink {
    fn validate(s: SinkConfig) -> anyhow::Result<Self> {
        let text = match (&s.template, &s.template_file) {
            (Some(t), None) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading template {}", path.display()))?,
            _ => bail!("give exactly one of template and template_file"),
        };
        let mode = match &s.mode {
            None => 0o600,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .with_context(|| {
                    format!("mode {m:?} is not an octal file mode such as \"0640\"")
                })?,
        };
        if s.destination.file_name().is_none() {
            bail!("destination {} is not a file path", s.destination.display());
        }
        let format = match s.format.as_deref() {
            Some(name) => crate::sinks::SinkFormat::parse(name)?,
            None => crate::sinks::SinkFormat::for_destination(&s.destination),
        };
        Ok(Sink {
            secret_id: s.secret_id,
            template: crate::sinks::Template::parse(&text)?,
            destination: s.destination,
            mode,
            reload_command: s.reload_command,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<AgentConfig> {
        let file: FileConfig = toml::from_str(text)?;
        AgentConfig::from_file(file, Some("http://127.0.0.1:1".into()), None)
    }

    #[test]
    fn defaults_follow_aws_agent() {
        let c = parse("").unwrap();
        assert_eq!(c.http_port, 2773);
        assert_eq!(c.ttl, Duration::from_secs(300));
        assert_eq!(c.path_prefix, "/v1/");
        assert_eq!(c.ssrf_headers[0], "X-Aws-Parameters-Secrets-Token");
        assert_eq!(c.ssrf_env_variables[0], "AWS_TOKEN");
        assert_eq!((c.max_conn, c.cache_size), (800, 1000));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let err = parse("http_prot = 2774\n").unwrap_err();
        assert!(format!("{err:#}").contains("http_prot"), "{err:#}");
        for (text, needle) in [
            ("http_port = 80", "http_port must be 1024"),
            ("ttl_seconds = 4000", "ttl_seconds"),
            ("cache_size = 0", "cache_size"),
            ("path_prefix = \"v1\"", "path_prefix"),
            ("ssrf_headers = []", "ssrf_headers"),
            (
                "[[sink]]\nsecret_id = \"a\"\ndestination = \"/tmp/x\"\n",
                "exactly one of template",
            ),
            (
                "[[sink]]\nsecret_id = \"a\"\ntemplate = \"x\"\ndestination = \"/tmp/x\"\nmode = \"999\"\n",
                "octal file mode",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_sink_parses_its_mode_and_template() {
        let c = parse(
            "[[sink]]\nsecret_id = \"db\"\ntemplate = \"pw={{json.password}}\"\n\
             destination = \"/tmp/db.env\"\nmode = \"0640\"\nreload_command = \"true\"\n",
        )
        .unwrap();
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].mode, 0o640);
        assert_eq!(c.sinks[0].reload_command.as_deref(), Some("true"));
    }
}

//! `baton serve`: settings from flags, environment variables and a TOML file, in that order of
//! precedence; then the server runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_api::{Bootstrap, ServeOptions, Server, StoreChoice};
use clap::{Args, ValueEnum};
use serde::Deserialize;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATA_DIR: &str = "./baton-data";
const DEFAULT_ACCOUNT_ID: &str = "000000000000";
const DEFAULT_REGION: &str = "us-east-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// Address and port to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "BATON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the SQLite database, the root key and the first credentials (default
    /// ./baton-data).
    #[arg(long, env = "BATON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use PostgreSQL at this URL instead of the embedded SQLite file (the default).
    #[arg(long, env = "BATON_DATABASE_URL")]
    database_url: Option<String>,
    /// Memory for the embedded store's cache of secrets, as bytes or with a KiB, MiB or GiB
    /// suffix (default 128MiB, at least 1MiB); beyond it, the least used secrets are evicted.
    #[arg(long, env = "BATON_CACHE_SIZE")]
    cache_size: Option<String>,
    /// Root key file; defaults to <data-dir>/root.key. Nodes sharing a database share it.
    #[arg(long, env = "BATON_ROOT_KEY_FILE", conflicts_with_all = ["root_key_command", "root_key_kms"])]
    root_key_file: Option<PathBuf>,
    /// Read the root key from this command's standard output (run by /bin/sh -c), in the root
    /// key file's format: systemd credentials, a TPM, a secret store's CLI. Nothing is written.
    #[arg(long, env = "BATON_ROOT_KEY_COMMAND", conflicts_with = "root_key_kms")]
    root_key_command: Option<String>,
    /// Keep the root key on disk only wrapped by this KMS key (<data-dir>/root.key.kms), and
    /// unwrap it at start with KMS Decrypt at AWS_ENDPOINT_URL_KMS (AWS KMS, or another Baton).
    #[arg(long, env = "BATON_ROOT_KEY_KMS")]
    root_key_kms: Option<String>,
    /// Sealed values re-wrapped per transaction while the root key rotates (default 256).
    #[arg(long, env = "BATON_ROOT_KEY_REWRAP_BATCH")]
    root_key_rewrap_batch: Option<usize>,
    /// The 12-digit account id in every ARN (default 000000000000).
    #[arg(long, env = "BATON_ACCOUNT_ID")]
    account_id: Option<String>,
    /// Regions served, comma-separated; each is a separate namespace (default us-east-1).
    #[arg(long, env = "BATON_REGIONS", value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// PEM certificate chain; serves HTTPS together with --tls-key.
    #[arg(long, env = "BATON_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "BATON_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log format (default text).
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Also log one line per request (request id, operation, outcome, principal, latency) at
    /// info level, target baton::access. Off by default: the audit log records every request.
    #[arg(long, env = "BATON_ACCESS_LOG")]
    access_log: bool,
    /// Largest request body accepted, in bytes (default 524288).
    #[arg(long, env = "BATON_BODY_BYTES_MAX")]
    body_bytes_max: Option<usize>,
    /// Most connections served at once; more are refused (default 4096).
    #[arg(long, env = "BATON_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    /// Most connections one IP address may hold at once (default 256).
    #[arg(long, env = "BATON_CONNECTIONS_PER_ADDRESS_MAX")]
    connections_per_address_max: Option<usize>,
    /// Seconds a client may take to send a request's headers, and then its body; also how long
    /// an idle kept-alive connection stays open (default 10).
    #[arg(long, env = "BATON_REQUEST_READ_TIMEOUT_SECONDS")]
    request_read_timeout_seconds: Option<u64>,
    /// Seconds a request may take before it fails with a timeout (default 30).
    #[arg(long, env = "BATON_REQUEST_TIMEOUT_SECONDS")]
    request_timeout_seconds: Option<u64>,
    /// A file holding the bearer token that `/metrics` (and a detailed `/ready`) need on the
    /// API listener. Without it, and without --metrics-listen, no metrics are served.
    #[arg(long, env = "BATON_METRICS_TOKEN_FILE")]
    metrics_token_file: Option<PathBuf>,
    /// A second listener, plain HTTP, for `/metrics`, `/ready` and `/health` only; keep it on
    /// a private interface. It needs no token.
    #[arg(long, env = "BATON_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Let webhook rotators and event subscriptions use loopback, private and link-local
    /// addresses (off by default, so a registered URL cannot reach into the server's network).
    #[arg(long, env = "BATON_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// The web console at /console/ on the API listener: on (the default) or off.
    #[arg(long, env = "BATON_CONSOLE", value_name = "on|off")]
    console: Option<OnOff>,
    /// A directory of command rotators, one `<name>.toml` each (name, command = [absolute
    /// path, args...], optional sha256, timeout_seconds, env). It and its files must be
    /// writable by their owner only; files are read at each use.
    #[arg(long, env = "BATON_ROTATORS_DIR")]
    rotators_dir: Option<PathBuf>,
    /// Seconds between purges of secrets whose recovery window ended (default 60).
    #[arg(long, env = "BATON_PURGE_INTERVAL_SECONDS")]
    purge_interval_seconds: Option<u64>,
    /// Days the event log keeps events (1-3650, default 30).
    #[arg(long, env = "BATON_EVENTS_RETENTION_DAYS")]
    events_retention_days: Option<u64>,
    /// `required` (default): refuse requests while the audit log cannot be written, and answer
    /// each request only once its audit entry is committed. `best-effort`: never wait for it.
    #[arg(long, env = "BATON_AUDIT_MODE")]
    audit_mode: Option<String>,
    /// Also append every audit entry to this file, one JSON object per line.
    #[arg(long, env = "BATON_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
    /// This node's name in rotation leases (default: host/pid/random).
    #[arg(long, env = "BATON_NODE_ID")]
    node_id: Option<String>,
    /// Seconds a rotation's lease lasts without renewal (2-300, default 15): how long a lost
    /// node's rotations wait before another node takes them over.
    #[arg(long, env = "BATON_LEASE_SECONDS")]
    lease_seconds: Option<u64>,
}

/// The config file. Unknown keys are an error, so a misspelt setting is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    cache_size: Option<String>,
    root_key_file: Option<PathBuf>,
    root_key_command: Option<String>,
    root_key_kms: Option<String>,
    root_key_rewrap_batch: Option<usize>,
    account_id: Option<String>,
    regions: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<LogFormat>,
    access_log: Option<bool>,
    body_bytes_max: Option<usize>,
    connections_max: Option<usize>,
    connections_per_address_max: Option<usize>,
    request_read_timeout_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    metrics_token_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    allow_private_webhooks: Option<bool>,
    console: Option<bool>,
    rotators_dir: Option<PathBuf>,
    /// Command rotators: `[[rotator]]` tables.
    rotator: Option<Vec<baton_app::CommandRotator>>,
    purge_interval_seconds: Option<u64>,
    events_retention_days: Option<u64>,
    audit_mode: Option<String>,
    audit_file: Option<PathBuf>,
    node_id: Option<String>,
    lease_seconds: Option<u64>,
}

fn load_file(path: &PathBuf) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
}

fn init_logging(format: LogFormat, access_log: bool) {
    use tracing_subscriber::EnvFilter;
    // The per-request line (target baton::access) is on only when asked for, whatever
    // RUST_LOG says: off, its callsite is disabled once and costs nothing per request.
    let access = if access_log {
        "baton::access=info"
    } else {
        "baton::access=off"
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(access.parse().expect("a valid directive"));
    // Colour only for a person at a terminal, never in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn validate_account_id(id: &str) -> anyhow::Result<()> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("account id must be 12 digits, got '{id}'");
    }
    Ok(())
}

/// A size in bytes: a number, optionally followed by KiB, MiB or GiB.
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => bail!("unknown unit {other:?}: write a number of bytes, or use KiB, MiB or GiB"),
    };
    let n: u64 = digits.parse().map_err(|_| {
        anyhow::anyhow!("expected a number of bytes, optionally with KiB, MiB or GiB")
    })?;
    n.checked_mul(multiplier)
        .ok_or_else(|| anyhow::anyhow!("the size is too large"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let log_format = args
        .log_format
        .or(file.log_format)
        .unwrap_or(LogFormat::Text);
    init_logging(
        log_format,
        args.access_log || file.access_log.unwrap_or(false),
    );
    let account_id = args
        .account_id
        .or(file.account_id)
        .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());
    validate_account_id(&account_id)?;
    let regions = args
        .regions
        .or(file.regions)
        .unwrap_or_else(|| vec![DEFAULT_REGION.to_owned()]);
    if regions.is_empty() || regions.iter().any(|r| r.is_empty() || r.contains(':')) {
        bail!("regions must be a non-empty list of names without ':', got {regions:?}");
    }
    let bootstrap = match (
        std::env::var("BATON_BOOTSTRAP_ACCESS_KEY_ID").ok(),
        std::env::var("BATON_BOOTSTRAP_SECRET_ACCESS_KEY").ok(),
    ) {
        (Some(id), Some(secret)) => {
            if id.len() < 16 || secret.len() < 16 {
                bail!(
                    "BATON_BOOTSTRAP_ACCESS_KEY_ID and BATON_BOOTSTRAP_SECRET_ACCESS_KEY must each be at least 16 characters"
                );
            }
            Some(Bootstrap {
                access_key_id: id,
                secret_access_key: secret.into(),
            })
        }
        (None, None) => None,
        _ => bail!(
            "set both BATON_BOOTSTRAP_ACCESS_KEY_ID and BATON_BOOTSTRAP_SECRET_ACCESS_KEY, or neither"
        ),
    };
    let database_url = args.database_url.or(file.database_url);
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    // Before any key material is in memory: no core dumps, memory locked where allowed.
    let hardening = baton_crypto::harden_process();
    for warning in &hardening.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        core_dumps_off = hardening.core_dumps_off,
        memory_locked = hardening.memory_locked,
        "process hardening"
    );
    let root_key_file = args.root_key_file.or(file.root_key_file);
    let root_key_command = args.root_key_command.or(file.root_key_command);
    let root_key_kms = args.root_key_kms.or(file.root_key_kms);
    type Source = std::sync::Arc<dyn baton_app::root_keys::RootKeySource>;
    let (root_key, root_key_source): (_, Option<Source>) =
        match (&root_key_file, root_key_command, root_key_kms) {
            (_, Some(command), None) if root_key_file.is_none() => (
                Some(std::sync::Arc::new(baton_crypto::RootKey::from_command(
                    &command,
                )?)),
                Some(std::sync::Arc::new(baton_app::root_keys::CommandSource {
                    command,
                })),
            ),
            (None, None, Some(arn)) => {
                let (ring, source) = crate::root_key::from_kms(&arn, &data_dir).await?;
                (
                    Some(std::sync::Arc::new(ring)),
                    Some(std::sync::Arc::new(source) as Source),
                )
            }
            (_, None, None) => (None, None),
            _ => bail!("choose one of root_key_file, root_key_command and root_key_kms"),
        };
    let root_key_rewrap_batch = args
        .root_key_rewrap_batch
        .or(file.root_key_rewrap_batch)
        .unwrap_or(baton_api::ROOT_KEY_REWRAP_BATCH_DEFAULT);
    anyhow::ensure!(
        (1..=10_000).contains(&root_key_rewrap_batch),
        "root_key_rewrap_batch must be between 1 and 10000 (got {root_key_rewrap_batch})"
    );
    let cache_bytes = match args.cache_size.or(file.cache_size) {
        Some(text) => parse_size(&text).with_context(|| format!("in cache_size {text:?}"))?,
        None => baton_store::CACHE_BYTES_DEFAULT,
    };
    anyhow::ensure!(
        cache_bytes >= baton_store::CACHE_BYTES_MIN,
        "cache_size must be at least 1MiB (got {cache_bytes} bytes)"
    );
    let options = ServeOptions {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
        data_dir,
        store: match database_url {
            Some(url) => StoreChoice::Postgres(url),
            None => StoreChoice::Sqlite,
        },
        cache_bytes,
        root_key_file,
        root_key,
        root_key_source,
        root_key_rewrap_batch,
        account_id,
        regions,
        tls_cert: args.tls_cert.or(file.tls_cert),
        tls_key: args.tls_key.or(file.tls_key),
        body_bytes_max: args
            .body_bytes_max
            .or(file.body_bytes_max)
            .unwrap_or(512 * 1024),
        connections_max: args
            .connections_max
            .or(file.connections_max)
            .unwrap_or(4096),
        connections_per_address_max: {
            let max = args
                .connections_per_address_max
                .or(file.connections_per_address_max)
                .unwrap_or(baton_api::CONNECTIONS_PER_ADDRESS_DEFAULT);
            anyhow::ensure!(max >= 1, "connections_per_address_max must be at least 1");
            max
        },
        request_read_timeout: {
            let seconds = args
                .request_read_timeout_seconds
                .or(file.request_read_timeout_seconds)
                .unwrap_or(baton_api::REQUEST_READ_TIMEOUT_DEFAULT.as_secs());
            anyhow::ensure!(
                (1..=300).contains(&seconds),
                "request_read_timeout_seconds must be between 1 and 300 (got {seconds})"
            );
            Duration::from_secs(seconds)
        },
        metrics_token: match args.metrics_token_file.or(file.metrics_token_file) {
            Some(path) => Some(read_metrics_token(&path)?),
            None => None,
        },
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        allow_private_webhooks: args.allow_private_webhooks
            || file.allow_private_webhooks.unwrap_or(false),
        rotators_dir: args.rotators_dir.or(file.rotators_dir),
        command_rotators: file.rotator.unwrap_or_default(),
        request_timeout: Duration::from_secs(
            args.request_timeout_seconds
                .or(file.request_timeout_seconds)
                .unwrap_or(30),
        ),
        purge_interval: Duration::from_secs(
            args.purge_interval_seconds
                .or(file.purge_interval_seconds)
                .unwrap_or(60),
        ),
        shutdown_grace: Duration::from_secs(30),
        events_retention: {
            let days = args
                .events_retention_days
                .or(file.events_retention_days)
                .unwrap_or(30);
            anyhow::ensure!(
                (1..=3650).contains(&days),
                "events_retention_days must be between 1 and 3650 (got {days})"
            );
            Duration::from_secs(days * 24 * 3600)
        },
        bootstrap,
        audit: baton_app::audit::AuditOptions {
            mode: match args.audit_mode.or(file.audit_mode) {
                Some(mode) => mode.parse().map_err(anyhow::Error::msg)?,
                None => baton_app::audit::AuditMode::Required,
            },
            file: args.audit_file.or(file.audit_file),
        },
        node_id: args.node_id.or(file.node_id),
        console: args
            .console
            .map(|c| c == OnOff::On)
            .or(file.console)
            .unwrap_or(true),
        lease_ttl: {
            let seconds = args.lease_seconds.or(file.lease_seconds).unwrap_or(15);
            anyhow::ensure!(
                (2..=300).contains(&seconds),
                "lease_seconds must be between 2 and 300 (got {seconds})"
            );
            Duration::from_secs(seconds)
        },
    };
    let server = Server::bind(options).await?;
    server.run(shutdown_signal()).await
}

/// The metrics token: the file's content without surrounding whitespace, at least 16 bytes.
fn read_metrics_token(path: &PathBuf) -> anyhow::Result<baton_app::SecretBytes> {
    let text = std::fs::read(path)
        .with_context(|| format!("reading the metrics token file {}", path.display()))?;
    let token = text.trim_ascii();
    anyhow::ensure!(
        token.len() >= 16,
        "the metrics token in {} is shorter than 16 bytes",
        path.display()
    );
    Ok(baton_app::SecretBytes::from(token.to_vec()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_keys_are_errors_that_name_the_key() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let ok: FileConfig =
            toml::from_str("regions = [\"eu-west-1\"]\nlog_format = \"json\"\n").unwrap();
        assert_eq!(ok.regions.unwrap(), ["eu-west-1"]);
        assert_eq!(ok.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn sizes_take_binary_units_and_name_a_bad_one() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        let err = parse_size("128MB").unwrap_err().to_string();
        assert!(err.contains("\"MB\"") && err.contains("MiB"), "{err}");
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(validate_account_id("123456789012").is_ok());
        assert!(validate_account_id("12345").is_err());
        assert!(validate_account_id("12345678901a").is_err());
    }
}

/// A switch given as `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

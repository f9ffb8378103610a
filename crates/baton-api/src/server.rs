//! Serving: the listener (plain or TLS), connection and body limits, request timeouts,
//! graceful shutdown, the purge task, and first-start bootstrap of the root and admin keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use baton_crypto::{RootKey, SecretBytes};
use baton_proto as p;
use baton_store::{PostgresStore, SqliteStore, Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use baton_app::{ApiError, Baton};
use baton_app::{access_key_aad, now_ms};

/// Which engine stores the data.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// The embedded default: `<data_dir>/baton.db`.
    Sqlite,
    /// A `postgres://` URL.
    Postgres(String),
}

/// The administrator key to create on first start instead of a random one.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub access_key_id: String,
    pub secret_access_key: SecretBytes,
}

/// Everything `baton serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreChoice,
    /// The embedded store's cache of secrets, in bytes (PostgreSQL has none).
    pub cache_bytes: u64,
    /// Defaults to `<data_dir>/root.key`. Several nodes on one database share one root key.
    pub root_key_file: Option<PathBuf>,
    /// A root key obtained elsewhere (a command, KMS); when set, no file is read or created.
    pub root_key: Option<Arc<RootKey>>,
    /// Where `root_key` came from, so that the node can read it again when a rotation adds a
    /// key; without it a given key is fixed.
    pub root_key_source: Option<Arc<dyn baton_app::root_keys::RootKeySource>>,
    /// Sealed values re-wrapped per transaction during a root-key rotation.
    pub root_key_rewrap_batch: usize,
    pub account_id: String,
    pub regions: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub body_bytes_max: usize,
    pub connections_max: usize,
    /// Most connections one IP address may hold at once.
    pub connections_per_address_max: usize,
    /// How long a client may take to send a request's headers (also the keep-alive idle
    /// timeout), and then its body.
    pub request_read_timeout: Duration,
    pub request_timeout: Duration,
    /// The bearer token `/metrics` and a detailed `/ready` need on the API listener; `None`
    /// keeps `/metrics` off that listener.
    pub metrics_token: Option<SecretBytes>,
    /// A second, plain-HTTP listener for `/metrics`, `/ready` and `/health` only, meant for a
    /// private interface; it needs no token.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether webhook rotators and event subscriptions may be on loopback, private or
    /// link-local addresses. Off by default: registering a URL must not reach into the
    /// network the server runs in.
    pub allow_private_webhooks: bool,
    /// Command rotators from the config file's `[[rotator]]` tables.
    pub command_rotators: Vec<baton_engine::commands::CommandRotator>,
    /// A directory of command rotator definitions, one `<name>.toml` each, read at each use.
    pub rotators_dir: Option<PathBuf>,
    pub purge_interval: Duration,
    /// How long the event log keeps events.
    pub events_retention: Duration,
    pub shutdown_grace: Duration,
    pub bootstrap: Option<Bootstrap>,
    pub audit: baton_app::audit::AuditOptions,
    /// This node's name in rotation leases; default: host, process id and a random suffix.
    pub node_id: Option<String>,
    /// How long a rotation's lease lasts unrenewed: the longest a lost node's rotations wait
    /// before another node takes them over.
    pub lease_ttl: Duration,
    /// Whether `/console/` serves the web console.
    pub console: bool,
}

impl ServeOptions {
    /// An embedded (SQLite) server on an ephemeral loopback port with the default limits and
    /// a known administrator key: for benchmarks and in-process tests.
    pub fn embedded_for_tests(
        data_dir: &std::path::Path,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            store: StoreChoice::Sqlite,
            cache_bytes: baton_store::CACHE_BYTES_DEFAULT,
            root_key_file: None,
            root_key: None,
            root_key_source: None,
            root_key_rewrap_batch: ROOT_KEY_REWRAP_BATCH_DEFAULT,
            account_id: "123456789012".into(),
            regions: vec!["us-east-1".into()],
            tls_cert: None,
            tls_key: None,
            body_bytes_max: 512 * 1024,
            connections_max: 4096,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_DEFAULT,
            request_read_timeout: REQUEST_READ_TIMEOUT_DEFAULT,
            request_timeout: Duration::from_secs(30),
            metrics_token: None,
            metrics_listen: None,
            allow_private_webhooks: true,
            command_rotators: Vec::new(),
            rotators_dir: None,
            purge_interval: Duration::from_secs(3600),
            events_retention: Duration::from_secs(30 * 24 * 3600),
            shutdown_grace: Duration::from_secs(1),
            bootstrap: Some(Bootstrap {
                access_key_id: access_key_id.into(),
                secret_access_key: secret_access_key.to_owned().into(),
            }),
            audit: baton_app::audit::AuditOptions::default(),
            node_id: None,
            lease_ttl: baton_engine::LEASE_TTL_DEFAULT,
            console: true,
        }
    }
}

/// How long a client may take to send a request's headers, then its body.
pub const REQUEST_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Most connections one address may hold by default: a fleet behind one NAT address still
/// fits, while one client cannot take every slot.
pub const CONNECTIONS_PER_ADDRESS_DEFAULT: usize = 256;
/// Sealed values re-wrapped per transaction during a root-key rotation: small enough that a
/// batch holds SQLite's writer for a few milliseconds, so requests go on between batches.
pub const ROOT_KEY_REWRAP_BATCH_DEFAULT: usize = 256;

pub(crate) struct App {
    pub(crate) baton: Baton,
    /// The console, unless `--console off`.
    pub(crate) console: Option<Arc<baton_console::Console>>,
    request_timeout: Duration,
    body_bytes_max: usize,
    metrics: PrometheusHandle,
    metrics_token: Option<SecretBytes>,
}

impl AsRef<Baton> for App {
    fn as_ref(&self) -> &Baton {
        &self.baton
    }
}

/// A bound, ready server. `run` serves until the shutdown signal.
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    options: ServeOptions,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.options.listen)
            .finish_non_exhaustive()
    }
}

fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])?
        .install_recorder()?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn load_tls(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match or are unsupported")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    /// Opens the store and root key (creating them on first start), creates the administrator
    /// key if there is none, and binds the listener.
    pub async fn bind(mut options: ServeOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating data directory {}", options.data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&options.data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", options.data_dir.display()))?;
        }
        let (root_key, root_key_source): (
            Arc<RootKey>,
            Arc<dyn baton_app::root_keys::RootKeySource>,
        ) = match options.root_key.take() {
            Some(key) => (
                key,
                options
                    .root_key_source
                    .clone()
                    .unwrap_or_else(|| Arc::new(baton_app::root_keys::FixedSource)),
            ),
            None => {
                let root_key_path = options
                    .root_key_file
                    .clone()
                    .unwrap_or_else(|| options.data_dir.join("root.key"));
                let (root_key, created) = RootKey::load_or_create(&root_key_path)?;
                if created {
                    tracing::info!(path = %root_key_path.display(), "created root key (mode 0600); back it up: without it no secret can be read");
                }
                (
                    Arc::new(root_key),
                    Arc::new(baton_app::root_keys::FileSource {
                        path: root_key_path,
                    }),
                )
            }
        };
        let store: Arc<dyn Store> = match &options.store {
            StoreChoice::Sqlite => {
                let path = options.data_dir.join("baton.db");
                Arc::new(
                    SqliteStore::open_with_cache(&path, options.cache_bytes)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            }
            StoreChoice::Postgres(url) => Arc::new(
                PostgresStore::connect_with_cache(url, options.cache_bytes)
                    .await
                    .context("connecting to PostgreSQL")?,
            ),
        };
        let node_id = options
            .node_id
            .clone()
            .unwrap_or_else(baton_engine::default_node_id);
        options.node_id = Some(node_id.clone());
        let root_keys = baton_app::root_keys::RootKeys::start(
            &*store,
            root_key.clone(),
            root_key_source,
            node_id,
            options.root_key_rewrap_batch,
            now_ms(),
        )
        .await?;
        let chain_key = root_keys.audit_chain_key(&*store, now_ms()).await?;
        let mut baton = Baton::new(
            store,
            root_key,
            options.account_id.clone(),
            options.regions.clone(),
        );
        baton.root_keys = Some(root_keys);
        baton.events_retention = options.events_retention;
        baton.allow_private_webhooks = options.allow_private_webhooks;
        baton.command_rotators = Arc::new(
            baton_engine::commands::CommandRotators::new(
                options.command_rotators.clone(),
                options.rotators_dir.clone(),
            )
            .map_err(anyhow::Error::msg)?,
        );
        // A watch answers before the request timeout cuts it off.
        baton.watch_wait_max = baton.watch_wait_max.min(
            options
                .request_timeout
                .saturating_sub(Duration::from_secs(2)),
        );
        baton.audit = Some(baton_app::audit::AuditLog::start(
            baton.store.clone(),
            chain_key,
            &options.audit,
        ));
        bootstrap_admin(&baton, &options).await?;
        let tls = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
        };
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let app = Arc::new(App {
            baton,
            console: options.console.then(|| {
                Arc::new(baton_console::Console::new(baton_console::ConsoleOptions {
                    request_timeout: options.request_timeout,
                    ..Default::default()
                }))
            }),
            request_timeout: options.request_timeout,
            body_bytes_max: options.body_bytes_max,
            metrics: metrics_handle()?,
            metrics_token: options.metrics_token.clone(),
        });
        Ok(Server {
            app,
            listener,
            tls,
            options,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What the store's cache holds: a handle that keeps answering once the server runs.
    pub fn cache_usage(&self) -> impl Fn() -> Option<(usize, u64)> + Send + Sync + 'static {
        let store = self.app.baton.store.clone();
        move || store.cache_usage()
    }

    /// Serves until `shutdown` resolves, then drains open connections for up to the grace
    /// period.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            app,
            listener,
            tls,
            options,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let body_limits = crate::connections::BodyLimits {
            deadline: options.request_read_timeout,
            bytes_max: options.body_bytes_max,
        };
        let router = Router::new()
            .route("/", post(api))
            .route("/health", get(health))
            .route("/jwks/{*key}", get(jwks))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .route("/console", get(crate::console::serve))
            .route("/console/", get(crate::console::serve))
            .route(
                "/console/{*rest}",
                get(crate::console::serve).post(crate::console::serve),
            )
            .layer(DefaultBodyLimit::max(options.body_bytes_max))
            .layer(axum::middleware::from_fn_with_state(
                body_limits,
                crate::connections::receive_within,
            ))
            .with_state(app.clone());
        let metrics_server = match options.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding the metrics listener {address}: {e}"))?;
                tracing::info!(address = %listener.local_addr()?, "metrics listener");
                let private = Router::new()
                    .route("/health", get(health))
                    .route("/ready", get(ready_detailed))
                    .route("/metrics", get(metrics_open))
                    .with_state(app.clone());
                let mut stop = stop_rx.clone();
                Some(tokio::spawn(async move {
                    let served = axum::serve(listener, private)
                        .with_graceful_shutdown(async move {
                            let _ = stop.changed().await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "the metrics listener stopped");
                    }
                }))
            }
            None => None,
        };
        let purge = tokio::spawn(purge_loop(
            app.clone(),
            options.purge_interval,
            stop_rx.clone(),
        ));
        let delivery = tokio::spawn(baton_app::delivery::run(app.clone(), stop_rx.clone()));
        let root_keys = app.baton.root_keys.clone().map(|keys| {
            if let (Ok(mut address), Ok(local)) = (keys.address.lock(), listener.local_addr()) {
                *address = local.to_string();
            }
            tokio::spawn(keys.run(app.baton.store.clone(), stop_rx.clone()))
        });
        let local = listener.local_addr()?;
        let host = if local.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
        } else {
            local
        };
        let engine = baton_engine::Engine::new(app.baton.store.clone(), app.baton.root_key.clone())
            .with_lease(options.node_id.clone(), options.lease_ttl)
            .with_kicks(app.baton.kicks.clone())
            .with_private_webhooks(options.allow_private_webhooks)
            .with_command_rotators(app.baton.command_rotators.clone())
            .with_master_access(Arc::new(baton_app::master_access::MasterReads(app.clone())))
            .with_endpoint(baton_engine::Endpoint {
                url: format!("{}://{host}", if tls.is_some() { "https" } else { "http" }),
                ca_bundle: options.tls_cert.clone(),
            });
        let engine_wake = engine.waker();
        let node_id = engine.node_id().to_owned();
        let wake_forwarder = {
            let from_api = app.baton.engine_wake.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = from_api.notified() => engine_wake.notify_one(),
                        _ = stop.changed() => return,
                    }
                }
            })
        };
        let engine = tokio::spawn(engine.run(stop_rx));
        let connections = Arc::new(Semaphore::new(options.connections_max));
        let per_address = crate::connections::PerAddress::new(options.connections_per_address_max);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that sends its headers too slowly, or keeps a connection idle, loses it rather
        // than holding a connection slot open indefinitely.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(options.request_read_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(options.request_read_timeout))
            .keep_alive_timeout(options.request_read_timeout);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %listener.local_addr()?, scheme, node = %node_id, "baton is listening");
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                metrics::counter!("baton_connections_refused_total").increment(1);
                tracing::warn!(%peer, limit = options.connections_max, "connection limit reached; refusing");
                drop(stream);
                continue;
            };
            let Some(address_permit) = per_address.try_acquire(peer.ip()) else {
                metrics::counter!("baton_connections_refused_total").increment(1);
                tracing::warn!(%peer, limit = options.connections_per_address_max, "per-address connection limit reached; refusing");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service =
                TowerToHyperService::new(router.clone().layer(axum::Extension(Connection {
                    peer,
                    secure: tls.is_some(),
                })));
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            let read_timeout = options.request_read_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                let _address_permit = address_permit;
                // The first bytes (a TLS handshake or a request) must arrive within the read
                // timeout: a connection that sends nothing must not hold its slot. Later
                // requests on the connection are bounded by the header read timeout.
                let mut first = [0u8; 1];
                if !matches!(
                    tokio::time::timeout(read_timeout, stream.peek(&mut first)).await,
                    Ok(Ok(1))
                ) {
                    tracing::debug!(%peer, "closed a connection that sent nothing");
                    return;
                }
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(read_timeout, acceptor.accept(stream))
                            .await
                            .unwrap_or_else(|_| {
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "the TLS handshake took longer than the read timeout",
                                ))
                            }) {
                            Ok(tls_stream) => {
                                watcher
                                    .watch(
                                        builder
                                            .serve_connection(TokioIo::new(tls_stream), service)
                                            .into_owned(),
                                    )
                                    .await
                            }
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        }
                    }
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .into_owned(),
                            )
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        tracing::info!("shutting down: no new connections; draining open ones");
        let _ = stop_tx.send(true);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(options.shutdown_grace) => {
                tracing::warn!(grace = ?options.shutdown_grace, "grace period over; closing remaining connections");
            }
        }
        if let Some(audit) = &app.baton.audit {
            audit.flush().await;
        }
        let _ = purge.await;
        let _ = delivery.await;
        if let Some(root_keys) = root_keys {
            let _ = root_keys.await;
        }
        let _ = engine.await;
        let _ = wake_forwarder.await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        Ok(())
    }
}

async fn bootstrap_admin(baton: &Baton, options: &ServeOptions) -> anyhow::Result<()> {
    baton
        .ensure_admin_principal()
        .await
        .map_err(|e| anyhow::anyhow!("creating the administrator principal: {e}"))?;
    let keys = baton.store.list_access_keys().await?;
    if let Some(first) = keys.first() {
        // A root key that cannot open what the database holds would fail every request;
        // refuse to start instead, and say why.
        if baton
            .root_key
            .open(&first.sealed_secret, &access_key_aad(&first.access_key_id))
            .is_err()
        {
            anyhow::bail!(
                "the root key does not match this database: it cannot open the stored access                  keys. Nodes that share a database must share one root key (--root-key-file)"
            );
        }
        return Ok(());
    }
    let fixed = options
        .bootstrap
        .clone()
        .map(|b| (b.access_key_id, b.secret_access_key));
    let from_env = fixed.is_some();
    let (record, secret) = baton
        .issue_access_key(baton_app::ADMIN_PRINCIPAL, fixed)
        .await
        .map_err(|e| anyhow::anyhow!("creating the administrator access key: {e}"))?;
    let path = options.data_dir.join("credentials");
    let text = SecretBytes::from(format!(
        "# Baton administrator key, created {}. Use with AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE=baton.\n\
         [baton]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        jiff::Timestamp::from_millisecond(now_ms())
            .map(|t| t.to_string())
            .unwrap_or_default(),
        record.access_key_id,
        String::from_utf8_lossy(secret.expose())
    ));
    write_private_file(&path, text.expose())?;
    if from_env {
        tracing::info!(access_key_id = %record.access_key_id, "created the administrator key from BATON_BOOTSTRAP_* (development and CI only)");
    } else {
        // Printed once, on first start only; afterwards it is only in the 0600 file.
        println!(
            "\nBaton created an administrator access key. It is shown this once and saved to {} (mode 0600).\n\
             \n  AWS_ACCESS_KEY_ID={}\n  AWS_SECRET_ACCESS_KEY={}\n",
            path.display(),
            record.access_key_id,
            String::from_utf8_lossy(secret.expose())
        );
    }
    Ok(())
}

fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Sets the gauges of rotations, consumers, delivery and the connection pool from the store,
/// at each scrape: counts only, so no series grows with the number of secrets. `baton_ready`
/// is what `/ready` answers: 1 when the database answered within 2 s and holds every migration
/// this node knows; when it is 0 the other gauges keep their previous values.
async fn refresh_gauges(app: &App) {
    use baton_core::rotation::Phase;
    let store = &app.baton.store;
    let counts = tokio::time::timeout(Duration::from_secs(2), async {
        let counts = store.operational_counts(now_ms()).await?;
        let version = store.schema_version().await?;
        Ok::<_, baton_store::StoreError>((counts, version))
    })
    .await;
    let c = match counts {
        Ok(Ok((c, version))) if version >= baton_store::latest_schema_version() => c,
        Ok(Ok(_)) => {
            metrics::gauge!("baton_ready").set(0.0);
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the operational counts failed");
            metrics::gauge!("baton_ready").set(0.0);
            return;
        }
        Err(_) => {
            tracing::warn!("reading the operational counts timed out");
            metrics::gauge!("baton_ready").set(0.0);
            return;
        }
    };
    metrics::gauge!("baton_ready").set(1.0);
    for phase in Phase::ALL {
        for status in ["running", "stopped"] {
            let (count, overdue) = c
                .rotations
                .iter()
                .find(|(p, s, _, _)| p == phase.as_str() && s == status)
                .map_or((0, 0), |(_, _, n, o)| (*n, *o));
            metrics::gauge!("baton_rotations", "phase" => phase.as_str(), "status" => status)
                .set(count as f64);
            metrics::gauge!("baton_rotations_past_max_gate_wait", "phase" => phase.as_str(), "status" => status)
                .set(overdue as f64);
        }
    }
    metrics::gauge!("baton_consumers", "state" => "live").set(c.consumers_live as f64);
    metrics::gauge!("baton_consumers", "state" => "lagging").set(c.consumers_lagging as f64);
    metrics::gauge!("baton_dead_letters").set(c.dead_letters as f64);
    metrics::gauge!("baton_event_delivery_backlog").set(c.delivery_backlog as f64);
    if let Some(pool) = c.pool {
        for (state, n) in [
            ("max", pool.max),
            ("open", pool.open),
            ("idle", pool.idle),
            ("waiting", pool.waiting),
        ] {
            metrics::gauge!("baton_db_pool_connections", "state" => state).set(n as f64);
        }
    }
}

async fn purge_loop(app: Arc<App>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match app.baton.purge_due(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged secrets whose recovery window ended"),
            Err(e) => tracing::error!(error = %e, "purge failed; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

/// `/ready` on the API listener: ready or not ready, and the reason and schema version only
/// with the metrics bearer token.
async fn ready(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if bearer_matches(&app, &headers) {
        return ready_detailed(State(app)).await;
    }
    let ready = readiness_problem(&app).await.is_none();
    let (status, body) = if ready {
        (StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Ready to serve, with the reason when not.
async fn ready_detailed(State(app): State<Arc<App>>) -> Response {
    let want = baton_store::latest_schema_version();
    let (status, body) = match readiness_problem(&app).await {
        None => (
            StatusCode::OK,
            serde_json::json!({"status": "ready", "schema_version": want}),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "reason": reason}),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Why the node is not ready: the database does not answer within 2 s, or lacks a migration
/// this node knows (a newer node may have applied more; migrations are additive, so an older
/// node still works).
async fn readiness_problem(app: &App) -> Option<String> {
    if let Some(keys) = &app.baton.root_keys
        && !keys.ready()
    {
        return Some(
            "this node does not hold the deployment's primary root key (see the log)".to_owned(),
        );
    }
    let store = &app.baton.store;
    let want = baton_store::latest_schema_version();
    match tokio::time::timeout(Duration::from_secs(2), async {
        store.ping().await?;
        store.schema_version().await
    })
    .await
    {
        Err(_) => Some("the database did not answer within 2 s".to_owned()),
        Ok(Err(e)) => Some(format!("the database is not reachable: {e}")),
        Ok(Ok(have)) if have < want => Some(format!(
            "the database schema is at version {have}; this node needs {want}"
        )),
        Ok(Ok(_)) => None,
    }
}

/// `GET /jwks/<key id, ARN or alias>`: the public keys of every accepted version of a signing
/// key, unauthenticated. Cached by clients for at most half the key's propagation delay (and
/// at most 5 minutes), so a verifier always fetches a pending key before anyone signs with it.
async fn jwks(
    State(app): State<Arc<App>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let baton = &app.baton;
    let region = baton.regions.first().cloned().unwrap_or_default();
    let json = |status: StatusCode, body: String, extra: Vec<(header::HeaderName, String)>| {
        let mut response = (status, body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in extra {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        response
    };
    match baton.jwks(&region, &key).await {
        Ok((body, delay_ms)) => {
            let text = body.to_string();
            let etag = format!(
                "\"{}\"",
                hex::encode(&baton_crypto::sha256(text.as_bytes())[..16])
            );
            let max_age = (delay_ms / 2000).clamp(0, 300);
            let extra = vec![
                (header::ETAG, etag.clone()),
                (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
            ];
            let unchanged = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
            if unchanged {
                json(StatusCode::NOT_MODIFIED, String::new(), extra)
            } else {
                json(StatusCode::OK, text, extra)
            }
        }
        Err(e) => {
            let status = match e {
                ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NOT_FOUND,
            };
            let body = serde_json::json!({"error": e.error_type(), "message": e.to_string()});
            json(status, body.to_string(), vec![])
        }
    }
}

/// `/metrics` on the API listener: only with the bearer token of `--metrics-token-file`, since
/// the counts tell who is refused what and how often.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.metrics_token {
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not served on this listener: start the server with \
             --metrics-token-file or --metrics-listen\n",
        )
            .into_response(),
        Some(_) if !bearer_matches(&app, &headers) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need the bearer token of --metrics-token-file\n",
        )
            .into_response(),
        Some(_) => metrics_open(State(app)).await.into_response(),
    }
}

/// `/metrics` on the metrics listener, which the operator keeps private.
async fn metrics_open(State(app): State<Arc<App>>) -> impl IntoResponse {
    refresh_gauges(&app).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Whether the request carries the metrics bearer token, compared in constant time.
fn bearer_matches(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.metrics_token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| token.ct_eq(given.trim().as_bytes()))
}

/// The TCP connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    pub(crate) secure: bool,
}

/// `POST /`: one AWS JSON 1.1 request. The application authenticates nothing itself: this
/// front end verifies the SigV4 signature and hands the caller to [`Baton::invoke`], which
/// authorizes, runs and audits the operation.
async fn api(
    State(app): State<Arc<App>>,
    axum::Extension(connection): axum::Extension<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match &body {
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge(format!(
                "The request body is larger than the {} bytes this server accepts.",
                app.body_bytes_max
            )))
        }
        Err(rejection) => Err(ApiError::Serialization(format!(
            "The request body could not be read: {rejection}."
        ))),
        Ok(body) => Ok(&body[..]),
    };
    let signed_body: &[u8] = body.as_ref().map(|b| *b).unwrap_or_default();
    let service = if target.starts_with(p::kms::KMS_TARGET_PREFIX) {
        baton_app::KMS_SIGNING_SERVICE
    } else {
        baton_app::SIGNING_SERVICE
    };
    let authenticate = crate::sigv4::authenticate(
        &app.baton,
        &method,
        &uri,
        &headers,
        signed_body,
        now_ms() / 1000,
        service,
    );
    let request = baton_app::Request {
        request_id: &request_id,
        target: &target,
        body,
        origin: baton_app::Origin {
            peer: connection.peer.ip(),
            secure: connection.secure,
            user_agent: baton_app::Origin::user_agent(
                headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            ),
        },
    };
    let result = app
        .baton
        .invoke(request, authenticate, app.request_timeout)
        .await;
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (e.wire().0, e.body()),
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(p::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    response
}

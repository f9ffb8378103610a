//! `baton agent`: a sidecar on the host's loopback that speaks the HTTP interface of AWS's
//! Secrets Manager Agent, so applications written for that agent work unchanged, and that is
//! never stale: one long-poll watch on the server covers every secret it holds, and it reports
//! what it holds on behalf of its host, so rotations wait for it.
//!
//! Requests, as AWS's agent takes them:
//! - `GET /secretsmanager/get?secretId=…[&versionStage=…|&versionId=…][&refreshNow=true]`;
//! - `GET /v1/<secretId>?…` (the prefix is `path_prefix`);
//! - `GET /ping`, without a token.
//!
//! Every other request needs the SSRF token in one of `ssrf_headers`, and a request carrying
//! `X-Forwarded-For` is refused. Baton adds `GET /baton/keyring?secretId=…`.
//!
//! Values with the AWSCURRENT, AWSPENDING or AWSPREVIOUS label, or whose version id is in the
//! keyring, come from the watched keyring. Other labels and versions are read from the server
//! and kept for `ttl_seconds` or until the secret changes, whichever comes first.

pub mod config;
pub mod sinks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use baton_client::keyring::{KeyVersion, Keyring, KeyringOptions, KeyringSet};
use baton_client::{AccessKey, Client, ClientConfig, ClientError};
use baton_proto as p;
use zeroize::Zeroizing;

pub use config::AgentConfig;

/// The labels a keyring carries.
const KEYRING_STAGES: [&str; 3] = ["AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"];

/// A value read past the keyring, with the keyring revision it was read under.
struct Extra {
    revision: String,
    fetched: Instant,
    body: Zeroizing<String>,
}

struct Agent {
    set: KeyringSet,
    client: Client,
    token: Zeroizing<String>,
    ssrf_headers: Vec<String>,
    path_prefix: String,
    ttl: Duration,
    connections: tokio::sync::Semaphore,
    extras: Mutex<HashMap<(String, String), Extra>>,
}

/// An answer in AWS's agent's error shape: the AWS error type and message, with its status.
fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "__type": error_type, "message": message }).to_string(),
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(text))
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn client_error(e: &ClientError) -> Response {
    match e {
        ClientError::Api {
            status,
            error_type,
            message,
        } => error(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            error_type,
            message,
        ),
        ClientError::Transport { .. } => {
            error(StatusCode::BAD_GATEWAY, "ConnectionError", "Read Error")
        }
        ClientError::Decode(_) | ClientError::Config(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "")
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space in queries).
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A request the agent refuses before reaching the server.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// AWS's agent's plain-text refusals.
    Plain(StatusCode, &'static str),
    /// An invalid parameter, in AWS's error shape.
    Parameter(String),
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Plain(status, text) => plain(status, text),
            Refused::Parameter(message) => error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                &message,
            ),
        }
    }
}

/// What one request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    secret_id: String,
    version_id: Option<String>,
    version_stage: Option<String>,
    refresh_now: bool,
}

impl Query {
    fn parse(secret_id: Option<String>, query: Option<&str>) -> Result<Self, Refused> {
        let bad = |m: &str| Refused::Parameter(m.to_owned());
        let mut q = Query {
            secret_id: secret_id.unwrap_or_default(),
            ..Default::default()
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                percent_decode(value, true).ok_or_else(|| bad("a query value is not valid"))?;
            match key {
                "secretId" => q.secret_id = value,
                "versionId" => q.version_id = Some(value),
                "versionStage" => q.version_stage = Some(value),
                "refreshNow" => {
                    q.refresh_now = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("refreshNow must be true or false")),
                    }
                }
                other => {
                    return Err(bad(&format!("unknown parameter {other}")));
                }
            }
        }
        if q.secret_id.is_empty() {
            return Err(bad("secretId is required"));
        }
        Ok(q)
    }
}

/// The GetSecretValue shape of a keyring version.
fn secret_value(ring: &Keyring, v: &KeyVersion) -> String {
    let mut body = serde_json::json!({
        "ARN": ring.arn(),
        "Name": ring.name(),
        "VersionId": v.version_id(),
        "VersionStages": v.stages(),
    });
    if let Some(created) = v.created_date() {
        body["CreatedDate"] = created.into();
    }
    if v.is_binary() {
        body["SecretBinary"] = base64::engine::general_purpose::STANDARD
            .encode(v.expose_secret())
            .into();
    } else {
        body["SecretString"] = String::from_utf8_lossy(v.expose_secret()).into();
    }
    let text = body.to_string();
    if let Some(serde_json::Value::String(s)) = body.get_mut("SecretString") {
        zeroize::Zeroize::zeroize(s);
    }
    text
}

impl Agent {
    /// AWS's agent's checks: the connection limit, then (except for /ping) no forwarding and
    /// the SSRF token, then GET only.
    fn admit(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Refused> {
        if uri.path() == "/ping" {
            return Ok(());
        }
        if headers.contains_key("x-forwarded-for") {
            tracing::warn!("refused a request with X-Forwarded-For");
            return Err(Refused::Plain(StatusCode::BAD_REQUEST, "Forwarded"));
        }
        let presented = self.ssrf_headers.iter().any(|name| {
            headers.get(name.as_str()).is_some_and(|v| {
                baton_crypto::constant_time_eq(v.as_bytes(), self.token.as_bytes())
            })
        });
        if !presented {
            tracing::warn!("refused a request without the SSRF token");
            return Err(Refused::Plain(StatusCode::FORBIDDEN, "Bad Token"));
        }
        if method != Method::GET {
            return Err(Refused::Plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
            ));
        }
        Ok(())
    }

    async fn get(&self, q: Query) -> Response {
        let ring = if q.refresh_now {
            self.set.refresh(&q.secret_id).await
        } else {
            self.set.get(&q.secret_id).await
        };
        let ring = match ring {
            Ok(ring) => ring,
            Err(e) => return client_error(&e),
        };
        let from_keyring = match (&q.version_id, &q.version_stage) {
            (Some(id), stage) => ring
                .find(id)
                .filter(|v| stage.as_ref().is_none_or(|s| v.stages().contains(s))),
            (None, Some(stage)) if KEYRING_STAGES.contains(&stage.as_str()) => {
                ring.with_stage(stage)
            }
            (None, Some(_)) => None,
            (None, None) => ring.current(),
        };
        if let Some(version) = from_keyring {
            return json_response(StatusCode::OK, secret_value(&ring, version));
        }
        self.get_past_keyring(&q, &ring).await
    }

    /// A label or version the keyring does not carry: read from the server (a read that
    /// does not report), kept until the secret changes or for the TTL.
    async fn get_past_keyring(&self, q: &Query, ring: &Keyring) -> Response {
        let key = (
            q.secret_id.clone(),
            format!(
                "{}|{}",
                q.version_id.as_deref().unwrap_or_default(),
                q.version_stage.as_deref().unwrap_or_default()
            ),
        );
        {
            let extras = self.extras.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(extra) = extras.get(&key)
                && extra.revision == ring.revision()
                && extra.fetched.elapsed() < self.ttl
                && !q.refresh_now
            {
                return json_response(StatusCode::OK, extra.body.to_string());
            }
        }
        let answer: Result<serde_json::Value, ClientError> = self
            .client
            .call(
                "secretsmanager.GetSecretValue",
                &p::GetSecretValueRequest {
                    secret_id: Some(q.secret_id.clone()),
                    version_id: q.version_id.clone(),
                    version_stage: q.version_stage.clone(),
                },
            )
            .await;
        match answer {
            Ok(value) => {
                let body = Zeroizing::new(value.to_string());
                let mut extras = self.extras.lock().unwrap_or_else(|e| e.into_inner());
                if extras.len() >= 1000 {
                    extras.clear();
                }
                extras.insert(
                    key,
                    Extra {
                        revision: ring.revision().to_owned(),
                        fetched: Instant::now(),
                        body: body.clone(),
                    },
                );
                json_response(StatusCode::OK, body.to_string())
            }
            Err(e) => client_error(&e),
        }
    }
}

async fn handle(
    State(agent): State<Arc<Agent>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Ok(_permit) = agent.connections.try_acquire() else {
        if uri.path() != "/ping" {
            return plain(StatusCode::TOO_MANY_REQUESTS, "Connection limit exceeded");
        }
        return plain(StatusCode::OK, "healthy");
    };
    if let Err(refusal) = agent.admit(&method, &uri, &headers) {
        return refusal.into_response();
    }
    let path = uri.path();
    if path == "/ping" {
        return plain(StatusCode::OK, "healthy");
    }
    let query = if path == "/secretsmanager/get" {
        Query::parse(None, uri.query())
    } else if path == "/baton/keyring" {
        match Query::parse(None, uri.query()) {
            Ok(q) => {
                let ring = if q.refresh_now {
                    agent.set.refresh(&q.secret_id).await
                } else {
                    agent.set.get(&q.secret_id).await
                };
                return match ring {
                    Ok(ring) => json_response(
                        StatusCode::OK,
                        serde_json::to_string(&ring.to_wire()).unwrap_or_default(),
                    ),
                    Err(e) => client_error(&e),
                };
            }
            Err(refusal) => return refusal.into_response(),
        }
    } else if let Some(rest) = path.strip_prefix(agent.path_prefix.as_str()) {
        match percent_decode(rest, false) {
            Some(id) => Query::parse(Some(id), uri.query()),
            None => return plain(StatusCode::BAD_REQUEST, "Bad path"),
        }
    } else {
        return plain(StatusCode::NOT_FOUND, "Not found");
    };
    match query {
        Ok(q) => agent.get(q).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Runs the agent until SIGTERM or Ctrl-C. Credentials come from the environment or the
/// shared credentials file, as for every AWS tool (`baton_client::credentials`).
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let token = config.ssrf_token()?;
    let credentials = baton_client::credentials::resolve(None).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.http_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", config.http_port))?;
    eprintln!(
        "baton agent: serving AWS's agent protocol on http://127.0.0.1:{} for {} ({} secret(s) \
         in file sinks); credentials from {}; requests need the SSRF token in \
         X-Aws-Parameters-Secrets-Token",
        config.http_port,
        config.endpoint,
        config.sinks.len(),
        credentials.source,
    );
    let access_key = credentials.access_key;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    };
    serve(config, access_key, token, listener, shutdown).await
}

/// Serves on `listener` until `shutdown` completes; [`run`] with everything given.
pub async fn serve(
    config: AgentConfig,
    access_key: AccessKey,
    token: Zeroizing<String>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = Client::new(ClientConfig {
        endpoint: config.endpoint.clone(),
        region: config.region.clone(),
        access_key,
        timeout: Duration::from_secs(10),
    })?;
    let mut options = KeyringOptions::new(config.application.clone());
    if let Some(instance) = &config.instance_id {
        options.instance_id.clone_from(instance);
    }
    options.lease = config.lease;
    let set = KeyringSet::new(client.clone(), options, config.cache_size);
    let agent = Arc::new(Agent {
        set: set.clone(),
        client,
        token,
        ssrf_headers: config.ssrf_headers.clone(),
        path_prefix: config.path_prefix.clone(),
        ttl: config.ttl,
        connections: tokio::sync::Semaphore::new(config.max_conn),
        extras: Mutex::new(HashMap::new()),
    });
    let sinks = tokio::spawn(sinks::run(set, config.sinks.clone()));
    let router = Router::new().fallback(handle).with_state(agent);
    tracing::info!(address = %listener.local_addr()?, endpoint = %config.endpoint, "baton agent listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    sinks.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_like_aws_agent() {
        let q = Query::parse(
            None,
            Some("secretId=prod%2Fdb&versionStage=AWSPENDING&refreshNow=true"),
        )
        .unwrap();
        assert_eq!(
            q,
            Query {
                secret_id: "prod/db".into(),
                version_id: None,
                version_stage: Some("AWSPENDING".into()),
                refresh_now: true,
            }
        );
        let q = Query::parse(Some("a b".into()), Some("versionId=v1")).unwrap();
        assert_eq!(
            (q.secret_id.as_str(), q.version_id.as_deref()),
            ("a b", Some("v1"))
        );
        assert!(
            Query::parse(None, Some("versionStage=X")).is_err(),
            "secretId required"
        );
        assert!(Query::parse(None, Some("secretId=a&refreshNow=yes")).is_err());
        assert!(Query::parse(None, Some("secretId=a&color=red")).is_err());
        assert!(Query::parse(None, Some("secretId=%zz")).is_err());
    }

    #[test]
    fn percent_decoding_handles_paths_and_queries() {
        assert_eq!(percent_decode("a%2Fb+c", true).as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("a%2Fb+c", false).as_deref(), Some("a/b+c"));
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
    }
}

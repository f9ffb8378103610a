//! A client for Baton's AWS-compatible API: signs every request with AWS's own SigV4 signer and
//! decodes AWS-shaped errors.
//!
//! Architecture invariant: this crate depends on no server crate; it knows only the wire types
//! of `baton-proto`.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use baton_proto::{CONTENT_TYPE, ErrorBody};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

pub mod credentials;
pub mod jwks;
pub mod keyring;

/// The signing service name Baton verifies.
pub const SIGNING_SERVICE: &str = "secretsmanager";
/// The signing service name of the KMS operations (`TrentService.*`).
pub const KMS_SIGNING_SERVICE: &str = "kms";
/// Where `baton serve` listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// An access key pair. The secret half never appears in `Debug`.
#[derive(Clone)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .finish()
    }
}

impl Drop for AccessKey {
    fn drop(&mut self) {
        // Wipe the secret half in place before the allocation is freed.
        self.secret_access_key.zeroize();
    }
}

/// Where and as whom to call.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: String,
    pub region: String,
    pub access_key: AccessKey,
    pub timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an AWS error.
    #[error("{error_type}: {message}")]
    Api {
        status: u16,
        error_type: String,
        message: String,
    },
    /// The request did not reach the server, or its answer did not arrive.
    #[error("could not reach Baton at {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    /// The answer was not what the protocol promises.
    #[error("unexpected response from Baton: {0}")]
    Decode(String),
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// A session token of temporary credentials. Never appears in `Debug`; wiped on drop.
#[derive(Clone)]
struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken([REDACTED])")
    }
}

impl Drop for SessionToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A signing client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
    session_token: Option<SessionToken>,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            http,
            config,
            session_token: None,
        })
    }

    /// Signs with temporary credentials: their session token goes with every request.
    pub fn with_session_token(mut self, token: String) -> Self {
        self.session_token = Some(SessionToken(token));
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// The public JWKS of a signing key (`GET /jwks/<key>`, unauthenticated).
    pub async fn jwks(&self, key: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/jwks/{key}", self.config.endpoint.trim_end_matches('/'));
        let transport = |e: reqwest::Error| ClientError::Transport {
            endpoint: self.config.endpoint.clone(),
            reason: error_chain(&e),
        };
        let response = self
            .http
            .get(&url)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body);
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            error_type: body["error"]
                .as_str()
                .unwrap_or("NotFoundException")
                .to_owned(),
            message: body["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Calls an operation by its full target, e.g. `secretsmanager.GetSecretValue`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_with_timeout(target, request, self.config.timeout)
            .await
    }

    /// As [`Client::call`], with a timeout of its own (a long poll outlasts the default one).
    pub async fn call_with_timeout<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let bytes = self.call_raw(target, request, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Calls an operation whose answer is not JSON (`baton.CreateBackup` answers with a
    /// file) and returns the body as it came. Errors are decoded as for [`Client::call`].
    pub async fn call_raw<Req: Serialize>(
        &self,
        target: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let url = format!("{}/", self.config.endpoint.trim_end_matches('/'));
        let host = reqwest::Url::parse(&url)
            .map_err(|e| ClientError::Config(format!("endpoint {url}: {e}")))?;
        let host = match (host.host_str(), host.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(ClientError::Config(format!("endpoint {url} has no host"))),
        };
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("host", host)
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", target)
            .body(body)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let service = if target.starts_with(baton_proto::kms::KMS_TARGET_PREFIX) {
            KMS_SIGNING_SERVICE
        } else {
            SIGNING_SERVICE
        };
        self.sign(&mut request, service)?;
        let (parts, body) = request.into_parts();
        let response = self
            .http
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                endpoint: self.config.endpoint.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Transport {
            endpoint: self.config.endpoint.clone(),
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            Ok(bytes.into())
        } else {
            let error: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
                ClientError::Decode(format!(
                    "HTTP {status} with a body that is not an AWS error"
                ))
            })?;
            Err(ClientError::Api {
                status: status.as_u16(),
                error_type: error.error_type,
                message: error.message,
            })
        }
    }

    fn sign(&self, request: &mut http::Request<Vec<u8>>, service: &str) -> Result<(), ClientError> {
        let identity = Credentials::new(
            self.config.access_key.access_key_id.clone(),
            self.config.access_key.secret_access_key.clone(),
            self.session_token.as_ref().map(|t| t.0.clone()),
            None,
            "baton-client",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .into();
        let uri = request.uri().to_string();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| ClientError::Config(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_debug_hides_the_secret() {
        let key = AccessKey {
            access_key_id: "BTNEXAMPLE".into(),
            secret_access_key: "very-secret-value".into(),
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("BTNEXAMPLE") && !shown.contains("very-secret-value"));
    }
}

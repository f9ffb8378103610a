//! Baton's web console, at `/console/`: server-rendered pages over the same operations as the
//! AWS API, called through [`baton_app::Baton::invoke`] with the signed-in user's `Caller`, so
//! each page's reads and each action are authorized and audited like any request (the audit
//! entry's user agent is `baton-console`).
//!
//! This crate knows no HTTP server. `baton-api` turns an HTTP request into a [`Request`] and a
//! [`Response`] back into HTTP. Safety is here, whatever serves it:
//! - a session is a random token in an `HttpOnly; SameSite=Strict` cookie (`Secure` under TLS)
//!   naming a server-side session, which ends on idle, on age, at sign-out and when its access
//!   key is deleted;
//! - every state-changing request carries the session's CSRF token (the sign-in form carries a
//!   pre-session token, checked against a cookie of its own);
//! - every response forbids inline script, framing and referrers;
//! - every text a user supplied is escaped by the templates;
//! - a value is in a page only after "Reveal", which is a GetSecretValue;
//! - failed sign-ins are limited per source address.

mod events;
mod keys;
mod pages;
mod plots;
mod principals;
mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_app::{ApiError, Baton, Caller, Origin};
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use session::{ABSOLUTE_TIMEOUT_DEFAULT, IDLE_TIMEOUT_DEFAULT, Session, Sessions};

/// The user agent the audit log records for the console's requests.
pub const USER_AGENT: &str = "baton-console";
/// The session cookie.
pub const SESSION_COOKIE: &str = "baton_session";
/// The cookie that carries the sign-in form's pre-session CSRF token.
pub const SIGN_IN_COOKIE: &str = "baton_sign_in";
/// Where the console is served.
pub const PREFIX: &str = "/console";

/// The headers every console response carries.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
];

/// An HTTP method, as far as the console cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// One request to the console, as the HTTP front end parsed it.
pub struct Request {
    pub method: Method,
    /// The path below `/console`, starting with `/` (`/secrets/db%2Fmain`).
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// The `Cookie` header.
    pub cookie: Option<String>,
    /// The form body of a POST (`application/x-www-form-urlencoded`).
    pub body: Vec<u8>,
    pub peer: IpAddr,
    /// Whether the request came over TLS: cookies are then `Secure`.
    pub secure: bool,
}

impl std::fmt::Debug for Request {
    /// Leaves out the cookie (a session token) and the body (a sign-in form holds a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("peer", &self.peer)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A response body: a whole page, or a stream of Server-Sent Events.
pub enum Body {
    Full(Vec<u8>),
    Events(BoxStream<'static, String>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Body::Events(_) => f.write_str("Events"),
        }
    }
}

/// The console's answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: Body::Full(body),
        }
    }

    fn html(status: u16, body: String) -> Self {
        Response::new(status, "text/html; charset=utf-8", body.into_bytes())
    }

    /// `303 See Other`: where a form's POST sends the browser.
    fn see_other(location: &str) -> Self {
        let mut r = Response::new(303, "text/plain; charset=utf-8", Vec::new());
        r.headers.push(("location".into(), location.into()));
        r
    }

    fn with_cookie(mut self, cookie: String) -> Self {
        self.headers.push(("set-cookie".into(), cookie));
        self
    }
}

/// Settings of the console.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// The longest one operation may take, as for the API.
    pub request_timeout: Duration,
    /// How often a live view redraws when nothing has told it of a change (a report to
    /// another node, a phase the engine moved).
    pub live_interval: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            absolute_timeout: ABSOLUTE_TIMEOUT_DEFAULT,
            request_timeout: Duration::from_secs(30),
            live_interval: Duration::from_secs(2),
        }
    }
}

/// The console of one node: its sessions and settings.
#[derive(Debug)]
pub struct Console {
    sessions: Sessions,
    options: ConsoleOptions,
}

impl Console {
    pub fn new(options: ConsoleOptions) -> Self {
        Console {
            sessions: Sessions::new(options.idle_timeout, options.absolute_timeout),
            options,
        }
    }

    /// Serves one request below `/console`.
    pub async fn handle<A>(self: &Arc<Self>, app: &Arc<A>, request: Request) -> Response
    where
        A: AsRef<Baton> + Send + Sync + 'static,
    {
        let mut response = pages::route(self, app, request, Instant::now()).await;
        for (name, value) in SECURITY_HEADERS {
            response.headers.push(((*name).into(), (*value).into()));
        }
        response
    }
}

/// A signed-in request: the session and where the request came from.
#[derive(Clone)]
struct Signed {
    token: String,
    session: Arc<Session>,
    peer: IpAddr,
    secure: bool,
}

impl std::fmt::Debug for Signed {
    /// Leaves out the session token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("session", &self.session)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Signed {
    fn caller(&self) -> &Caller {
        &self.session.caller
    }

    /// Calls one operation as the signed-in user, through the same path as the AWS API: the
    /// same authorization, the same audit entry, with `baton-console` as its user agent.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        baton: &Baton,
        console: &Console,
        target: &str,
        request: &Req,
    ) -> Result<Resp, ApiError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ApiError::Internal(format!("serializing a console request: {e}")))?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut caller = self.caller().clone();
        caller.viewer = true;
        let answer = baton
            .invoke(
                baton_app::Request {
                    request_id: &request_id,
                    target,
                    body: Ok(&body),
                    origin: Origin {
                        peer: self.peer,
                        secure: self.secure,
                        user_agent: USER_AGENT.to_owned(),
                    },
                },
                async move { Ok(caller) },
                console.options.request_timeout,
            )
            .await?;
        serde_json::from_slice(&answer)
            .map_err(|e| ApiError::Internal(format!("reading the answer of {target}: {e}")))
    }

    /// [`Signed::call`] with `{"SecretId": secret_id}`: most pages read one secret.
    async fn on_secret<Resp: DeserializeOwned>(
        &self,
        baton: &Baton,
        console: &Console,
        target: &str,
        secret_id: &str,
    ) -> Result<Resp, ApiError> {
        self.call(
            baton,
            console,
            target,
            &serde_json::json!({ "SecretId": secret_id }),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_cookie_and_no_form() {
        let request = Request {
            method: Method::Post,
            path: "/sign-in".into(),
            query: String::new(),
            cookie: Some("baton_session=token-value-123".into()),
            body: b"secret_access_key=the-secret-456".to_vec(),
            peer: "127.0.0.1".parse().unwrap(),
            secure: false,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("token-value-123"), "{shown}");
        assert!(!shown.contains("the-secret-456"), "{shown}");
        assert!(shown.contains("/sign-in"), "{shown}");
    }
}

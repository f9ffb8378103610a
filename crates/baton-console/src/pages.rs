//! The console's pages: each handler reads through [`Signed::call`] and renders a template.
//! Templates escape every value; the only unescaped insert is the live section, which is
//! itself a rendered template.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use baton_app::{ApiError, Baton, SecretBytes};
use baton_proto as p;
use futures_util::StreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::json;

use crate::{Console, Method, PREFIX, Request, Response, SESSION_COOKIE, SIGN_IN_COOKIE, Signed};

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");
/// Audit entries per page.
const AUDIT_PAGE: i64 = 200;
/// How far behind the log's head a filtered search of the audit page looks.
const AUDIT_WINDOW: i64 = 10_000;
/// Secrets per page of the list.
const PAGE_SIZE: i64 = 50;
/// Rows the overview shows in each of its tables; the rest are counted. Keeps the page
/// under its weight budget with thousands of rotations in flight.
const OVERVIEW_ROWS: usize = 100;
/// Rotations the overview asks for: alerts and counts cover this many.
const OVERVIEW_ROTATIONS: i64 = 10_000;
/// The longest one live stream runs; the browser's EventSource then reconnects, and the
/// session is checked again.
const LIVE_STREAM_MAX: Duration = Duration::from_secs(10 * 60);
/// The shortest time between two redraws of one live view.
const LIVE_REDRAW_MIN: Duration = Duration::from_millis(20);

/// Everything in a path segment or query value except letters and digits and `-_.~`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A name as one path segment.
pub(crate) fn encode(name: &str) -> String {
    utf8_percent_encode(name, COMPONENT).to_string()
}

fn secret_href(name: &str) -> String {
    format!("{PREFIX}/secrets/{}", encode(name))
}

/// The signed-in user's bar at the top of each page.
pub(crate) struct Bar {
    pub(crate) principal: String,
    pub(crate) csrf: String,
}

pub(crate) fn bar(signed: &Signed) -> Option<Bar> {
    Some(Bar {
        principal: signed.caller().principal.arn.clone(),
        csrf: signed.session.csrf_token().to_owned(),
    })
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    regions: Vec<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    bar: Option<Bar>,
    notice: Option<String>,
    message: String,
    back: String,
}

struct SecretRow {
    name: String,
    href: String,
    description: String,
    changed: String,
    rotation: String,
    next_rotation: String,
    tags: Vec<String>,
    arn: String,
    /// The rotation in flight's phase (and gate), or why it is not known.
    phase: String,
    /// Live reporting consumers, and how many of them lag.
    consumers: String,
    lagging: bool,
}

#[derive(Template)]
#[template(path = "secrets.html")]
struct SecretsPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    query: String,
    listing: Result<Vec<SecretRow>, String>,
    next: Option<String>,
    may_create: bool,
    csrf: String,
}

struct VersionRow {
    id: String,
    created: String,
    created_at: Option<f64>,
    labels: Vec<String>,
}

/// One mark on the versions' timeline: a version's creation, with what it is labelled.
struct TimelineMark {
    x: f64,
    /// `start`, `middle` or `end`: text near an edge grows inwards.
    anchor: &'static str,
    /// The text's baseline, staggered so that neighbours do not overlap.
    y: f64,
    text: String,
    current: bool,
}

/// A timeline of versions by creation time, drawn as SVG: the newest at the right.
struct VersionTimeline {
    width: f64,
    height: f64,
    marks: Vec<TimelineMark>,
    first: String,
    last: String,
}

fn version_timeline(versions: &[VersionRow]) -> Option<VersionTimeline> {
    const WIDTH: f64 = 640.0;
    const MARGIN: f64 = 40.0;
    let times: Vec<f64> = versions.iter().filter_map(|v| v.created_at).collect();
    let (lo, hi) = times
        .iter()
        .fold(None, |acc: Option<(f64, f64)>, &t| match acc {
            None => Some((t, t)),
            Some((a, b)) => Some((a.min(t), b.max(t))),
        })?;
    let span = (hi - lo).max(1e-9);
    let mut sorted: Vec<&VersionRow> = versions.iter().filter(|v| v.created_at.is_some()).collect();
    sorted.sort_by(|a, b| {
        a.created_at
            .partial_cmp(&b.created_at)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let marks: Vec<TimelineMark> = sorted
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v.created_at.unwrap_or(lo);
            let x = if times.len() == 1 {
                WIDTH / 2.0
            } else {
                MARGIN + (t - lo) / span * (WIDTH - 2.0 * MARGIN)
            };
            let short: String = v.id.chars().take(8).collect();
            let text = if v.labels.is_empty() {
                short
            } else {
                format!("{short} {}", v.labels.join(" "))
            };
            TimelineMark {
                anchor: if x < WIDTH / 4.0 {
                    "start"
                } else if x > WIDTH * 3.0 / 4.0 {
                    "end"
                } else {
                    "middle"
                },
                x,
                y: 44.0 + (i % 3) as f64 * 16.0,
                text,
                current: v.labels.iter().any(|l| l == "AWSCURRENT"),
            }
        })
        .collect();
    Some(VersionTimeline {
        width: WIDTH,
        height: 44.0 + 3.0 * 16.0,
        marks,
        first: date(Some(lo)),
        last: date(Some(hi)),
    })
}

struct SecretFacts {
    arn: String,
    description: String,
    changed: String,
    rotation: String,
    next_rotation: String,
    deleted: String,
    tags: Vec<(String, String)>,
    versions: Vec<VersionRow>,
    timeline: Option<VersionTimeline>,
    /// Every label in use, for the label-move form.
    labels: Vec<String>,
    rotation_function: String,
    /// The resource policy as indented JSON, none, or why it cannot be shown.
    resource_policy: Result<Option<String>, String>,
    /// Baton's rotation policy: (setting, value) pairs, or why it cannot be shown.
    rotation_policy: Result<Vec<(&'static str, String)>, String>,
}

#[derive(Template)]
#[template(path = "secret.html")]
struct SecretPage {
    title: String,
    bar: Option<Bar>,
    notice: Option<String>,
    name: String,
    described: Result<SecretFacts, String>,
    value: Option<Result<String, String>>,
    may_put: bool,
    may_rotate: bool,
    may_label: bool,
    may_delete: bool,
    may_restore: bool,
    csrf: String,
    reveal_href: String,
    put_href: String,
    rotate_href: String,
    rotation_href: String,
    label_href: String,
    delete_href: String,
    restore_href: String,
}

struct Gate {
    name: String,
    reason: String,
    waited: String,
    holders: Vec<String>,
}

struct RotationFacts {
    phase: String,
    status: String,
    status_reason: String,
    version: String,
    old_version: String,
    next_wake: String,
    gate: Option<Gate>,
    /// (when, what, how long after the previous entry)
    timeline: Vec<(String, String, String)>,
}

struct ConsumerRow {
    application: String,
    instance: String,
    uses: String,
    accepts: Vec<String>,
    last_seen: String,
    state: &'static str,
}

struct Consumers {
    rows: Vec<ConsumerRow>,
    /// The version consumers should hold: the rotation's new one, or the current one.
    target: String,
    live: usize,
    holding_new: usize,
    plain_read: String,
}

#[derive(Template)]
#[template(path = "rotation_live.html")]
struct RotationLive {
    plot: Option<crate::plots::Propagation>,
    rotation: Result<RotationFacts, String>,
    consumers: Result<Consumers, String>,
}

#[derive(Template)]
#[template(path = "rotation.html")]
struct RotationPage {
    title: String,
    bar: Option<Bar>,
    notice: Option<String>,
    name: String,
    secret_href: String,
    live_href: String,
    live: String,
    history: Result<Option<crate::plots::History>, String>,
    actions_href: String,
    may_resume: bool,
    may_cancel: bool,
    csrf: String,
}

#[derive(Default)]
struct AuditFilter {
    principal: String,
    action: String,
    resource: String,
    decision: String,
    /// As the form gives them: `YYYY-MM-DDTHH:MM`, in UTC.
    since: String,
    until: String,
    /// A time that could not be read.
    problem: Option<String>,
}

/// A `datetime-local` value, read as UTC, in the wire's seconds.
fn form_time(text: &str) -> Result<Option<f64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<jiff::civil::DateTime>()
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| Some(z.timestamp().as_millisecond() as f64 / 1000.0))
        .map_err(|_| format!("{text:?} is not a time: use YYYY-MM-DDTHH:MM, in UTC."))
}

struct AuditRow {
    seq: i64,
    time: String,
    principal: String,
    action: String,
    resource: String,
    decision: String,
    outcome: String,
    user_agent: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    filter: AuditFilter,
    entries: Result<Vec<AuditRow>, String>,
    verified: Option<String>,
    csrf: String,
}

struct OpenRow {
    name: String,
    href: String,
    phase: String,
    started: String,
    /// For a running rotation, what it waits for; for a stopped one, why it stopped.
    waiting: String,
}

struct GateRow {
    name: String,
    href: String,
    gate: String,
    waited: String,
    alerted: bool,
    holders: Vec<String>,
    reason: String,
}

struct Alert {
    text: String,
    href: String,
}

struct Open {
    alerts: Vec<Alert>,
    running: Vec<OpenRow>,
    gates: Vec<GateRow>,
    stopped: Vec<OpenRow>,
    /// (href, name, when)
    due: Vec<(String, String, String)>,
    /// How many of each there are, shown or not.
    counts: Counts,
    truncated: bool,
}

#[derive(Default)]
struct Counts {
    alerts: usize,
    running: usize,
    gates: usize,
    stopped: usize,
    due: usize,
}

/// Keeps the first `OVERVIEW_ROWS` of a list; returns how many there were.
fn first_rows<T>(rows: &mut Vec<T>) -> usize {
    let n = rows.len();
    rows.truncate(OVERVIEW_ROWS);
    n
}

struct AuditStatus {
    mode: &'static str,
    healthy: bool,
    entries: i64,
    newest: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    title: &'static str,
    bar: Option<Bar>,
    notice: Option<String>,
    rotations: Result<Open, String>,
    dead_letters: Result<usize, String>,
    audit: Result<AuditStatus, String>,
}

pub(crate) fn render(page: impl Template, status: u16) -> Response {
    match page.render() {
        Ok(html) => Response::html(status, html),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            Response::new(
                500,
                "text/plain; charset=utf-8",
                b"The page failed to render.".to_vec(),
            )
        }
    }
}

/// The date of a wire timestamp (seconds since the epoch), in UTC to the second.
pub(crate) fn date(seconds: Option<f64>) -> String {
    seconds
        .and_then(|s| jiff::Timestamp::from_millisecond((s * 1000.0) as i64).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

pub(crate) fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// What a page shows where an operation's data would be when the operation failed: for a
/// denial, that access is denied and why; otherwise the error as the API names it.
pub(crate) fn refusal(e: &ApiError) -> String {
    let (_, error_type, _) = e.wire();
    match e {
        ApiError::AccessDenied(_) => format!("Access denied. {e}"),
        _ => format!("{error_type}: {e}"),
    }
}

fn status_of(e: &ApiError) -> u16 {
    e.wire().0.as_u16()
}

fn pairs(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

fn cookie<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .cookie
        .as_deref()?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cookie_header(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

pub(crate) fn error_page(
    signed: Option<&Signed>,
    status: u16,
    title: &str,
    message: String,
) -> Response {
    render(
        ErrorPage {
            title: title.to_owned(),
            bar: signed.and_then(bar),
            notice: None,
            message,
            back: format!("{PREFIX}/"),
        },
        status,
    )
}

pub(crate) fn api_error_page(signed: &Signed, e: &ApiError) -> Response {
    let title = if matches!(e, ApiError::AccessDenied(_)) {
        "Access denied"
    } else {
        "The request failed"
    };
    error_page(Some(signed), status_of(e), title, refusal(e))
}

/// Runs a write for a form and answers as a form's POST should: on success a redirect to
/// `then` (so a reload does not post again), on failure the error's page.
pub(crate) async fn perform(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    target: &str,
    request: &serde_json::Value,
    then: String,
) -> Response {
    let answer: Result<serde_json::Value, _> = signed.call(baton, console, target, request).await;
    match answer {
        Ok(_) => Response::see_other(&then),
        Err(e) => api_error_page(signed, &e),
    }
}

pub(crate) async fn route<A>(
    console: &Arc<Console>,
    app: &Arc<A>,
    request: Request,
    now: Instant,
) -> Response
where
    A: AsRef<Baton> + Send + Sync + 'static,
{
    let baton = (**app).as_ref();
    let raw: Vec<&str> = request
        .path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut segments = Vec::with_capacity(raw.len());
    for s in raw {
        match percent_decode_str(s).decode_utf8() {
            Ok(s) => segments.push(s.into_owned()),
            Err(_) => {
                return error_page(None, 400, "Bad request", "The path is not UTF-8.".into());
            }
        }
    }
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (request.method, path.as_slice()) {
        (Method::Get, ["assets", "console.css"]) => {
            return Response::new(200, "text/css; charset=utf-8", CSS.as_bytes().to_vec());
        }
        (Method::Get, ["assets", "console.js"]) => {
            return Response::new(
                200,
                "text/javascript; charset=utf-8",
                JS.as_bytes().to_vec(),
            );
        }
        (Method::Post, ["sign-in"]) => return sign_in(console, baton, &request, now).await,
        _ => {}
    }
    let Some(signed) = session_of(console, baton, &request, now).await else {
        return match (request.method, path.as_slice()) {
            (Method::Get, []) => sign_in_page(baton, &request, None, 200),
            (Method::Get, _) => Response::see_other(&format!("{PREFIX}/")),
            _ => error_page(
                None,
                403,
                "Signed out",
                "You are not signed in, or your session has ended. Sign in again.".into(),
            ),
        };
    };
    let form = if request.method == Method::Post {
        let form = pairs(&String::from_utf8_lossy(&request.body));
        let given = form.get("csrf").map(String::as_bytes).unwrap_or_default();
        if !signed.session.csrf.ct_eq(given) {
            return error_page(
                Some(&signed),
                403,
                "Refused",
                "The form's CSRF token is missing or wrong. Reload the page and try again.".into(),
            );
        }
        form
    } else {
        HashMap::new()
    };
    let query = pairs(&request.query);
    match (request.method, path.as_slice()) {
        (Method::Get, []) => Response::see_other(&format!("{PREFIX}/overview")),
        (Method::Get, ["overview"]) => overview_page(console, baton, &signed).await,
        (Method::Post, ["sign-out"]) => {
            console.sessions.end(&signed.token);
            Response::see_other(&format!("{PREFIX}/")).with_cookie(cookie_header(
                SESSION_COOKIE,
                "",
                request.secure,
                Some(0),
            ))
        }
        (Method::Get, ["secrets"]) => secrets_page(console, baton, &signed, &query, None).await,
        (Method::Post, ["secrets"]) => create_secret(console, baton, &signed, &form).await,
        (Method::Get, ["secrets", name]) => {
            let notice = query.get("done").and_then(|d| match d.as_str() {
                "put" => Some("The new value is the current version.".to_owned()),
                "created" => Some("The secret was created.".to_owned()),
                "label" => Some("The label was moved.".to_owned()),
                "deleted" => Some(
                    "The secret is scheduled for deletion. Until then it can be restored."
                        .to_owned(),
                ),
                "restored" => Some("The secret was restored.".to_owned()),
                _ => None,
            });
            secret_page(console, baton, &signed, name, None, notice).await
        }
        (Method::Post, ["secrets", name, "reveal"]) => {
            let value = reveal(console, baton, &signed, name).await;
            secret_page(console, baton, &signed, name, Some(value), None).await
        }
        (Method::Post, ["secrets", name, "value"]) => {
            let Some(value) = form.get("value").filter(|v| !v.is_empty()) else {
                return error_page(
                    Some(&signed),
                    400,
                    "Refused",
                    "The new value is empty.".into(),
                );
            };
            perform(
                console,
                baton,
                &signed,
                "secretsmanager.PutSecretValue",
                &json!({"SecretId": name, "SecretString": value}),
                format!("{}?done=put", secret_href(name)),
            )
            .await
        }
        (Method::Post, ["secrets", name, "label"]) => {
            move_label(console, baton, &signed, name, &form).await
        }
        (Method::Post, ["secrets", name, "delete"]) => {
            delete_secret(console, baton, &signed, name, &form).await
        }
        (Method::Post, ["secrets", name, "restore"]) => {
            perform(
                console,
                baton,
                &signed,
                "secretsmanager.RestoreSecret",
                &json!({"SecretId": name}),
                format!("{}?done=restored", secret_href(name)),
            )
            .await
        }
        (Method::Post, ["secrets", name, "rotate"]) => {
            perform(
                console,
                baton,
                &signed,
                "secretsmanager.RotateSecret",
                &json!({"SecretId": name}),
                format!("{}/rotation", secret_href(name)),
            )
            .await
        }
        (Method::Get, ["secrets", name, "rotation"]) => {
            rotation_page(console, baton, &signed, name).await
        }
        (
            Method::Post,
            [
                "secrets",
                name,
                "rotation",
                action @ ("retry" | "force" | "cancel"),
            ],
        ) => {
            if *action == "force" && form.get("confirm").map(String::as_str) != Some(*name) {
                return error_page(
                    Some(&signed),
                    400,
                    "Not confirmed",
                    format!(
                        "Forcing a gate open needs the secret's name, {name}, typed to confirm. \
                         Nothing was changed."
                    ),
                );
            }
            let (target, request) = match *action {
                "cancel" => (
                    "secretsmanager.CancelRotateSecret",
                    json!({"SecretId": name}),
                ),
                "force" => (
                    "baton.ResumeRotation",
                    json!({"SecretId": name, "Force": true}),
                ),
                _ => (
                    "baton.ResumeRotation",
                    json!({"SecretId": name, "Force": false}),
                ),
            };
            let then = format!("{}/rotation", secret_href(name));
            perform(console, baton, &signed, target, &request, then).await
        }
        (Method::Get, ["secrets", name, "rotation", "live"]) => {
            live_stream(console.clone(), app.clone(), signed, (*name).to_owned())
        }
        (Method::Get, ["keys"]) => crate::keys::keys_page(console, baton, &signed, &query).await,
        (Method::Get, ["keys", id]) => {
            let notice = crate::keys::done_notice(query.get("done"));
            crate::keys::key_page(console, baton, &signed, id, notice).await
        }
        (Method::Post, ["keys", id, action @ ("enable" | "disable" | "rotate")]) => {
            crate::keys::key_action(console, baton, &signed, id, action).await
        }
        (Method::Get, ["events"]) => {
            crate::events::events_page(console, baton, &signed, None).await
        }
        (Method::Post, ["events", "redeliver"]) => {
            crate::events::redeliver(console, baton, &signed, &form).await
        }
        (Method::Get, ["principals"]) => {
            crate::principals::principals_page(console, baton, &signed).await
        }
        (Method::Get, ["principals", name]) => {
            crate::principals::principal_page(console, baton, &signed, name, None, None).await
        }
        (Method::Post, ["principals", name, "policy"]) => {
            crate::principals::edit_policy(console, baton, &signed, name, &form).await
        }
        (Method::Get, ["audit"]) => audit_page(console, baton, &signed, &query, None).await,
        (Method::Post, ["audit", "verify"]) => {
            let verified = verify_audit(console, baton, &signed).await;
            audit_page(console, baton, &signed, &query, Some(verified)).await
        }
        _ => error_page(
            Some(&signed),
            404,
            "Not found",
            "The console has no such page.".into(),
        ),
    }
}

fn sign_in_page(
    baton: &Baton,
    request: &Request,
    problem: Option<String>,
    status: u16,
) -> Response {
    let token = crate::session::random_token();
    render(
        SignInPage {
            title: "Sign in",
            bar: None,
            notice: None,
            problem,
            csrf: token.clone(),
            regions: baton.regions.clone(),
        },
        status,
    )
    .with_cookie(cookie_header(SIGN_IN_COOKIE, &token, request.secure, None))
}

async fn sign_in(console: &Console, baton: &Baton, request: &Request, now: Instant) -> Response {
    if let Some(wait) = console.sessions.sign_in_refused_for(request.peer, now) {
        let mut r = sign_in_page(
            baton,
            request,
            Some(format!(
                "Too many failed sign-ins from this address. Try again in {} s.",
                wait.as_secs().max(1)
            )),
            429,
        );
        r.headers
            .push(("retry-after".into(), wait.as_secs().max(1).to_string()));
        return r;
    }
    let form = pairs(&String::from_utf8_lossy(&request.body));
    let expected = cookie(request, SIGN_IN_COOKIE).unwrap_or_default();
    let given = form.get("csrf").map(String::as_str).unwrap_or_default();
    if expected.is_empty() || !baton_crypto::constant_time_eq(expected.as_bytes(), given.as_bytes())
    {
        return error_page(
            None,
            403,
            "Refused",
            "The sign-in form's CSRF token is missing or wrong. Reload the page and try again."
                .into(),
        );
    }
    let id = form
        .get("access_key_id")
        .map(|s| s.trim())
        .unwrap_or_default();
    let secret = SecretBytes::from(
        form.get("secret_access_key")
            .map(|s| s.trim().as_bytes().to_vec())
            .unwrap_or_default(),
    );
    let region = form
        .get("region")
        .cloned()
        .or_else(|| baton.regions.first().cloned())
        .unwrap_or_default();
    let origin = baton_app::Origin {
        peer: request.peer,
        secure: request.secure,
        user_agent: crate::USER_AGENT.to_owned(),
    };
    match baton.sign_in(id, &secret, &region, &origin).await {
        Ok(caller) => {
            console.sessions.sign_in_succeeded(request.peer);
            let token = console.sessions.start(caller, now);
            Response::see_other(&format!("{PREFIX}/overview"))
                .with_cookie(cookie_header(SESSION_COOKIE, &token, request.secure, None))
                .with_cookie(cookie_header(SIGN_IN_COOKIE, "", request.secure, Some(0)))
        }
        Err(e) => {
            console.sessions.sign_in_failed(request.peer, now);
            tracing::info!(peer = %request.peer, "a console sign-in failed");
            sign_in_page(baton, request, Some(e.to_string()), 401)
        }
    }
}

/// The request's live session, if its access key still exists.
async fn session_of(
    console: &Console,
    baton: &Baton,
    request: &Request,
    now: Instant,
) -> Option<Signed> {
    let token = cookie(request, SESSION_COOKIE).filter(|t| !t.is_empty())?;
    let session = console.sessions.find(token, now)?;
    match baton
        .store
        .find_access_key(&session.caller.access_key_id)
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            console.sessions.end(token);
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a console session's access key");
            return None;
        }
    }
    Some(Signed {
        token: token.to_owned(),
        session,
        peer: request.peer,
        secure: request.secure,
    })
}

/// Where a rotation of `arn` is shown: a secret's rotation page, or a key's page.
fn rotation_href(arn: &str, name: &str) -> String {
    match arn.split_once(":key/") {
        Some((_, id)) => format!("{PREFIX}/keys/{}", encode(id)),
        None => format!("{}/rotation", secret_href(name)),
    }
}

fn open_rotations(list: p::ListOpenRotationsResponse) -> Open {
    let mut open = Open {
        alerts: Vec::new(),
        running: Vec::new(),
        gates: Vec::new(),
        stopped: Vec::new(),
        due: Vec::new(),
        counts: Counts::default(),
        truncated: list.truncated == Some(true),
    };
    for r in list.rotations.unwrap_or_default() {
        let arn = r.arn.unwrap_or_default();
        let name = r.name.unwrap_or_default();
        let href = rotation_href(&arn, &name);
        let phase = r.phase.unwrap_or_default();
        let started = date(r.started_date);
        if r.status.as_deref() == Some("Stopped") {
            open.alerts.push(Alert {
                text: format!("The rotation of {name} stopped in phase {phase}."),
                href: href.clone(),
            });
            open.stopped.push(OpenRow {
                name,
                href,
                phase,
                started,
                waiting: r.status_reason.unwrap_or_default(),
            });
            continue;
        }
        let waiting = match &r.waiting_gate {
            Some(gate) => format!("the {gate} gate"),
            None => "its next step".to_owned(),
        };
        if let Some(gate) = r.waiting_gate {
            let waited = duration(r.gate_waited_seconds.unwrap_or_default());
            let alerted = r.alerted == Some(true);
            if alerted {
                open.alerts.push(Alert {
                    text: format!(
                        "The {gate} gate of {name} has waited {waited}, past its maximum."
                    ),
                    href: href.clone(),
                });
            }
            open.gates.push(GateRow {
                name: name.clone(),
                href: href.clone(),
                gate,
                waited,
                alerted,
                holders: r
                    .held_by
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| {
                        format!(
                            "{} / {}",
                            c.application.unwrap_or_default(),
                            c.instance_id.unwrap_or_default()
                        )
                    })
                    .collect(),
                reason: r.gate_reason.unwrap_or_default(),
            });
        }
        open.running.push(OpenRow {
            name,
            href,
            phase,
            started,
            waiting,
        });
    }
    open.due = list
        .scheduled
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let name = s.name.unwrap_or_default();
            (secret_href(&name), name, date(s.next_rotation_date))
        })
        .collect();
    open.counts = Counts {
        alerts: first_rows(&mut open.alerts),
        running: first_rows(&mut open.running),
        gates: first_rows(&mut open.gates),
        stopped: first_rows(&mut open.stopped),
        due: first_rows(&mut open.due),
    };
    open
}

async fn overview_page(console: &Console, baton: &Baton, signed: &Signed) -> Response {
    let rotations: Result<p::ListOpenRotationsResponse, _> = signed
        .call(
            baton,
            console,
            "baton.ListOpenRotations",
            &json!({"ScheduledWithinSeconds": 86_400, "MaxResults": OVERVIEW_ROTATIONS}),
        )
        .await;
    let dead: Result<p::ListDeadLettersResponse, _> = signed
        .call(baton, console, "baton.ListDeadLetters", &json!({}))
        .await;
    let newest: Result<p::ListAuditEntriesResponse, _> = signed
        .call(
            baton,
            console,
            "baton.ListAuditEntries",
            &json!({"AfterSeq": -1, "MaxResults": 1}),
        )
        .await;
    let audit = newest.map(|page| {
        let newest = page.entries.unwrap_or_default().pop();
        AuditStatus {
            mode: match baton.audit.as_ref().map(|a| a.mode()) {
                Some(baton_app::audit::AuditMode::Required) => {
                    "required: nothing is answered unaudited"
                }
                Some(baton_app::audit::AuditMode::BestEffort) => {
                    "best-effort: entries that cannot be written are counted and dropped"
                }
                None => "off",
            },
            healthy: baton.audit.as_ref().is_none_or(|a| a.healthy()),
            entries: newest.as_ref().and_then(|e| e.seq).unwrap_or(0),
            newest: date(newest.and_then(|e| e.time)),
        }
    });
    render(
        OverviewPage {
            title: "Overview",
            bar: bar(signed),
            notice: None,
            rotations: rotations.map(open_rotations).map_err(|e| refusal(&e)),
            dead_letters: dead
                .map(|d| d.dead_letters.unwrap_or_default().len())
                .map_err(|e| refusal(&e)),
            audit: audit.map_err(|e| refusal(&e)),
        },
        200,
    )
}

async fn secrets_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    query: &HashMap<String, String>,
    notice: Option<String>,
) -> Response {
    let q = query
        .get("q")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mut request = json!({"MaxResults": PAGE_SIZE, "SortOrder": "asc"});
    if !q.is_empty() {
        request["Filters"] = json!([{"Key": "all", "Values": [q]}]);
    }
    if let Some(token) = query.get("next") {
        request["NextToken"] = json!(token);
    }
    let answer: Result<p::ListSecretsResponse, _> = signed
        .call(baton, console, "secretsmanager.ListSecrets", &request)
        .await;
    let mut next = None;
    let listing = match answer {
        Ok(list) => {
            next = list
                .next_token
                .map(|t| format!("{PREFIX}/secrets?q={}&next={}", encode(&q), encode(&t)));
            Ok::<Vec<SecretRow>, String>(
                list.secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| {
                        let name = s.name.unwrap_or_default();
                        SecretRow {
                            arn: s.arn.unwrap_or_default(),
                            phase: String::new(),
                            consumers: String::new(),
                            lagging: false,
                            href: secret_href(&name),
                            name,
                            description: s.description.unwrap_or_default(),
                            changed: date(s.last_changed_date),
                            rotation: rotation_summary(s.rotation_enabled, &s.rotation_rules),
                            next_rotation: date(s.next_rotation_date),
                            tags: s
                                .tags
                                .unwrap_or_default()
                                .into_iter()
                                .map(|t| {
                                    format!(
                                        "{}={}",
                                        t.key.unwrap_or_default(),
                                        t.value.unwrap_or_default()
                                    )
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            )
        }
        Err(e) => Err(refusal(&e)),
    };
    let listing = match listing {
        Ok(mut rows) => {
            summarize(console, baton, signed, &mut rows).await;
            Ok(rows)
        }
        other => other,
    };
    let caller = signed.caller();
    let pattern = format!(
        "arn:aws:secretsmanager:{}:{}:secret:*",
        caller.region, caller.account_id
    );
    render(
        SecretsPage {
            title: "Secrets",
            bar: bar(signed),
            notice,
            query: q,
            listing,
            next,
            may_create: baton.may(caller, "secretsmanager:CreateSecret", &pattern),
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

/// Fills each row's rotation phase and consumer counts with one `baton.SummarizeSecrets`; a
/// secret the caller may not summarize says so in its row.
async fn summarize(console: &Console, baton: &Baton, signed: &Signed, rows: &mut [SecretRow]) {
    if rows.is_empty() {
        return;
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.arn.as_str()).collect();
    let answer: Result<p::SummarizeSecretsResponse, _> = signed
        .call(
            baton,
            console,
            "baton.SummarizeSecrets",
            &json!({"SecretIds": ids}),
        )
        .await;
    let (summaries, errors) = match answer {
        Ok(a) => (
            a.summaries.unwrap_or_default(),
            a.errors.unwrap_or_default(),
        ),
        Err(e) => {
            let why = refusal(&e);
            for row in rows.iter_mut() {
                row.phase = why.clone();
            }
            return;
        }
    };
    let by_arn: HashMap<String, p::SecretSummary> = summaries
        .into_iter()
        .map(|s| (s.arn.clone().unwrap_or_default(), s))
        .collect();
    for row in rows.iter_mut() {
        match by_arn.get(&row.arn) {
            Some(s) => {
                row.phase = match (&s.rotation_phase, &s.waiting_gate, &s.rotation_status) {
                    (Some(phase), Some(gate), _) => format!("{phase}, {gate} gate waiting"),
                    (Some(phase), None, Some(status)) if status == "Stopped" => {
                        format!("{phase}, stopped")
                    }
                    (Some(phase), None, _) => phase.clone(),
                    (None, _, _) => "none".to_owned(),
                };
                let (live, lagging) = (
                    s.consumers_live.unwrap_or_default(),
                    s.consumers_lagging.unwrap_or_default(),
                );
                row.lagging = lagging > 0;
                row.consumers = format!("{live} live, {lagging} lagging");
            }
            None => {
                row.phase = errors
                    .iter()
                    .find(|e| e.secret_id.as_deref() == Some(row.arn.as_str()))
                    .map(|e| match e.error_code.as_deref() {
                        Some("AccessDeniedException") => "Access denied.".to_owned(),
                        _ => e.message.clone().unwrap_or_default(),
                    })
                    .unwrap_or_default();
            }
        }
    }
}

fn rotation_summary(enabled: Option<bool>, rules: &Option<p::RotationRules>) -> String {
    if enabled != Some(true) {
        return "off".to_owned();
    }
    match rules {
        Some(r) => match (&r.schedule_expression, r.automatically_after_days) {
            (Some(expr), _) => format!("on, {expr}"),
            (None, Some(days)) => format!("on, every {days} days"),
            (None, None) => "on".to_owned(),
        },
        None => "on".to_owned(),
    }
}

async fn create_secret(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    form: &HashMap<String, String>,
) -> Response {
    let name = form.get("name").map(|s| s.trim()).unwrap_or_default();
    let value = form.get("value").map(String::as_str).unwrap_or_default();
    let mut request = json!({"Name": name, "SecretString": value});
    if let Some(d) = form.get("description").filter(|d| !d.is_empty()) {
        request["Description"] = json!(d);
    }
    let then = format!("{}?done=created", secret_href(name));
    perform(
        console,
        baton,
        signed,
        "secretsmanager.CreateSecret",
        &request,
        then,
    )
    .await
}

/// Moves a label to a version: UpdateSecretVersionStage, removing it from the version that holds
/// it now (read just before, so the move names it as AWS requires).
async fn move_label(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
    form: &HashMap<String, String>,
) -> Response {
    let label = form.get("label").map(|s| s.trim()).unwrap_or_default();
    let to = form.get("to").map(|s| s.trim()).unwrap_or_default();
    if label.is_empty() || to.is_empty() {
        return error_page(
            Some(signed),
            400,
            "Refused",
            "Moving a label needs the label and the version to move it to. Nothing was changed."
                .into(),
        );
    }
    let described: Result<p::DescribeSecretResponse, _> = signed
        .on_secret(baton, console, "secretsmanager.DescribeSecret", name)
        .await;
    let from = match described {
        Ok(d) => d
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .find(|(_, labels)| labels.iter().any(|l| l == label))
            .map(|(id, _)| id),
        Err(e) => return api_error_page(signed, &e),
    };
    let mut request = json!({"SecretId": name, "VersionStage": label, "MoveToVersionId": to});
    if let Some(from) = from {
        request["RemoveFromVersionId"] = json!(from);
    }
    let then = format!("{}?done=label", secret_href(name));
    let target = "secretsmanager.UpdateSecretVersionStage";
    perform(console, baton, signed, target, &request, then).await
}

/// Schedules the secret's deletion after a recovery window of 7 to 30 days; the name must be
/// typed to confirm. Deletion without recovery is not offered here: it is the API's.
async fn delete_secret(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
    form: &HashMap<String, String>,
) -> Response {
    if form.get("confirm").map(String::as_str) != Some(name) {
        return error_page(
            Some(signed),
            400,
            "Not confirmed",
            format!(
                "Deleting a secret needs its name, {name}, typed to confirm. Nothing was changed."
            ),
        );
    }
    let days = match form.get("window").map(|w| w.trim().parse::<i64>()) {
        None => 30,
        Some(Ok(d)) => d,
        Some(Err(_)) => {
            return error_page(
                Some(signed),
                400,
                "Refused",
                "The recovery window must be a whole number of days, 7 to 30. Nothing was \
                 changed."
                    .into(),
            );
        }
    };
    perform(
        console,
        baton,
        signed,
        "secretsmanager.DeleteSecret",
        &json!({"SecretId": name, "RecoveryWindowInDays": days}),
        format!("{}?done=deleted", secret_href(name)),
    )
    .await
}

async fn reveal(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
) -> Result<String, String> {
    let answer: Result<p::SecretValue, _> = signed
        .on_secret(baton, console, "secretsmanager.GetSecretValue", name)
        .await;
    match answer {
        Ok(v) => Ok(match (v.secret_string, v.secret_binary) {
            (Some(s), _) => s,
            (None, Some(b)) => format!("(binary, base64) {b}"),
            (None, None) => String::new(),
        }),
        Err(e) => Err(refusal(&e)),
    }
}

async fn secret_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    name: &str,
    value: Option<Result<String, String>>,
    notice: Option<String>,
) -> Response {
    let described: Result<p::DescribeSecretResponse, _> = signed
        .on_secret(baton, console, "secretsmanager.DescribeSecret", name)
        .await;
    let described = match described {
        Ok(d) => {
            let versions: Result<p::ListSecretVersionIdsResponse, _> = signed
                .call(
                    baton,
                    console,
                    "secretsmanager.ListSecretVersionIds",
                    &json!({"SecretId": name, "MaxResults": 100}),
                )
                .await;
            let created: HashMap<String, Option<f64>> = versions
                .map(|v| {
                    v.versions
                        .unwrap_or_default()
                        .into_iter()
                        .map(|v| (v.version_id.unwrap_or_default(), v.created_date))
                        .collect()
                })
                .unwrap_or_default();
            let mut rows: Vec<VersionRow> = d
                .version_ids_to_stages
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(id, labels)| {
                    let created_at = created.get(&id).copied().flatten();
                    VersionRow {
                        created: date(created_at),
                        created_at,
                        id,
                        labels,
                    }
                })
                .collect();
            rows.sort_by(|a, b| b.created.cmp(&a.created));
            let mut labels: Vec<String> = rows.iter().flat_map(|r| r.labels.clone()).collect();
            labels.sort();
            let policy: Result<p::GetResourcePolicyResponse, _> = signed
                .on_secret(baton, console, "secretsmanager.GetResourcePolicy", name)
                .await;
            let resource_policy = match policy {
                Ok(r) => Ok(r.resource_policy.map(|text| {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .and_then(|v| serde_json::to_string_pretty(&v))
                        .unwrap_or(text)
                })),
                Err(e) => Err(refusal(&e)),
            };
            let rotation: Result<p::DescribeRotationResponse, _> = signed
                .on_secret(baton, console, "baton.DescribeRotation", name)
                .await;
            let rotation_policy = rotation
                .map(|r| {
                    let policy = r.policy.unwrap_or_default();
                    let seconds = |s: Option<i64>| duration(s.unwrap_or_default() as f64);
                    vec![
                        (
                            "Propagation delay T",
                            seconds(policy.propagation_delay_seconds),
                        ),
                        ("Longest gate wait", seconds(policy.max_gate_wait_seconds)),
                        ("Retire grace", seconds(policy.retire_grace_seconds)),
                        (
                            "Attempts per step",
                            policy.max_attempts.unwrap_or_default().to_string(),
                        ),
                        (
                            "Blackout windows (UTC)",
                            match policy.blackout_windows.unwrap_or_default() {
                                w if w.is_empty() => "none".to_owned(),
                                w => w.join(", "),
                            },
                        ),
                    ]
                })
                .map_err(|e| refusal(&e));
            Ok(SecretFacts {
                timeline: version_timeline(&rows),
                labels,
                rotation_function: d.rotation_lambda_arn.clone().unwrap_or_default(),
                resource_policy,
                rotation_policy,
                arn: d.arn.clone().unwrap_or_default(),
                description: d.description.clone().unwrap_or_default(),
                changed: date(d.last_changed_date),
                rotation: rotation_summary(d.rotation_enabled, &d.rotation_rules),
                next_rotation: date(d.next_rotation_date),
                deleted: date(d.deleted_date),
                tags: d
                    .tags
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                    .collect(),
                versions: rows,
            })
        }
        Err(e) => Err(e),
    };
    let status = match &described {
        Err(e) if !matches!(e, ApiError::AccessDenied(_)) => status_of(e),
        _ => 200,
    };
    let caller = signed.caller();
    let arn = described
        .as_ref()
        .map(|d| d.arn.clone())
        .unwrap_or_default();
    let deleted = described.as_ref().is_ok_and(|d| d.deleted != "—");
    let may = |action: &str| !arn.is_empty() && baton.may(caller, action, &arn);
    let href = secret_href(name);
    render(
        SecretPage {
            title: name.to_owned(),
            bar: bar(signed),
            notice,
            name: name.to_owned(),
            may_put: !deleted && may("secretsmanager:PutSecretValue"),
            may_rotate: !deleted && may("secretsmanager:RotateSecret"),
            may_label: !deleted && may("secretsmanager:UpdateSecretVersionStage"),
            may_delete: !deleted && may("secretsmanager:DeleteSecret"),
            may_restore: deleted && may("secretsmanager:RestoreSecret"),
            label_href: format!("{href}/label"),
            delete_href: format!("{href}/delete"),
            restore_href: format!("{href}/restore"),
            described: described.map_err(|e| refusal(&e)),
            value,
            csrf: signed.session.csrf_token().to_owned(),
            reveal_href: format!("{href}/reveal"),
            put_href: format!("{href}/value"),
            rotate_href: format!("{href}/rotate"),
            rotation_href: format!("{href}/rotation"),
        },
        status,
    )
}

async fn rotation_page(console: &Console, baton: &Baton, signed: &Signed, name: &str) -> Response {
    let live = render_live(console, baton, signed, name).await;
    let caller = signed.caller();
    // The secret's ARN for the hints; a secret the caller cannot describe offers no actions.
    let described: Result<p::DescribeSecretResponse, _> = signed
        .on_secret(baton, console, "secretsmanager.DescribeSecret", name)
        .await;
    let arn = described.ok().and_then(|d| d.arn).unwrap_or_default();
    let rotations: Result<p::ListRotationsResponse, _> = signed
        .call(
            baton,
            console,
            "baton.ListRotations",
            &json!({"SecretId": name, "MaxResults": 20}),
        )
        .await;
    let history = rotations
        .map(|r| {
            crate::plots::history(
                &r.rotations.unwrap_or_default(),
                wall_clock(),
                |t| date(Some(t)),
                duration,
            )
        })
        .map_err(|e| refusal(&e));
    let href = secret_href(name);
    render(
        RotationPage {
            title: format!("Rotation of {name}"),
            bar: bar(signed),
            notice: None,
            name: name.to_owned(),
            secret_href: href.clone(),
            live_href: format!("{href}/rotation/live"),
            live,
            history,
            actions_href: format!("{href}/rotation"),
            may_resume: !arn.is_empty() && baton.may(caller, "baton:ResumeRotation", &arn),
            may_cancel: !arn.is_empty()
                && baton.may(caller, "secretsmanager:CancelRotateSecret", &arn),
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

/// The live part of a rotation's page: the rotation, its gate, and its consumers.
async fn render_live(console: &Console, baton: &Baton, signed: &Signed, name: &str) -> String {
    let rotation: Result<p::DescribeRotationResponse, _> = signed
        .on_secret(baton, console, "baton.DescribeRotation", name)
        .await;
    let consumers: Result<p::ListConsumersResponse, _> = signed
        .on_secret(baton, console, "baton.ListConsumers", name)
        .await;
    let live = live_view(wall_clock(), rotation, consumers);
    live.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the live rotation view failed to render");
        "<p class=\"error\">The view failed to render.</p>".to_owned()
    })
}

/// Now, as the wire's seconds since the epoch: the console is a front end, and reads the clock
/// only to draw how long things have waited.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn live_view(
    now: f64,
    rotation: Result<p::DescribeRotationResponse, ApiError>,
    consumers: Result<p::ListConsumersResponse, ApiError>,
) -> RotationLive {
    let in_flight = rotation
        .as_ref()
        .ok()
        .filter(|r| r.status.as_deref() == Some("InProgress"));
    let gate_name = in_flight.and_then(|r| r.waiting_gate.clone());
    let new_version = in_flight.and_then(|r| r.version_id.clone());
    let consumers = consumers.map(|c| {
        let target = new_version.clone().or(c.current_version_id.clone());
        let mut rows = Vec::new();
        let (mut live, mut holding_new) = (0, 0);
        for c in c.consumers.clone().unwrap_or_default() {
            let accepts = c.accepted_version_ids.clone().unwrap_or_default();
            let uses = c.current_version_id.clone().unwrap_or_default();
            let holds = target
                .as_ref()
                .is_some_and(|t| *t == uses || accepts.contains(t));
            let is_live = c.live == Some(true);
            let lagging = is_live
                && match gate_name.as_deref() {
                    Some("drain") => target.as_deref() != Some(uses.as_str()),
                    _ => !holds,
                };
            if is_live {
                live += 1;
                if holds {
                    holding_new += 1;
                }
            }
            rows.push(ConsumerRow {
                application: c.application.unwrap_or_default(),
                instance: c.instance_id.unwrap_or_default(),
                uses,
                accepts,
                last_seen: date(c.last_seen_date),
                state: if !is_live {
                    "expired"
                } else if lagging {
                    "lagging"
                } else {
                    "caught-up"
                },
            });
        }
        Consumers {
            rows,
            target: target.clone().unwrap_or_else(|| "—".into()),
            live,
            holding_new,
            plain_read: c
                .last_plain_read_date
                .map(|d| date(Some(d)))
                .unwrap_or_default(),
        }
    });
    let holders: Vec<String> = consumers
        .as_ref()
        .map(|c| {
            c.rows
                .iter()
                .filter(|r| r.state == "lagging")
                .map(|r| format!("{} / {}", r.application, r.instance))
                .collect()
        })
        .unwrap_or_default();
    let live_now = gate_name
        .as_deref()
        .zip(consumers.as_ref().ok())
        .and_then(|(gate, c)| {
            let live: Vec<&ConsumerRow> = c.rows.iter().filter(|r| r.state != "expired").collect();
            let ready = live.iter().filter(|r| r.state == "caught-up").count();
            (!live.is_empty()).then(|| (gate, ready as f64 / live.len() as f64))
        });
    let plot = rotation.as_ref().ok().and_then(|r| {
        crate::plots::propagation(
            r.timeline.as_deref().unwrap_or_default(),
            live_now,
            now,
            |t| date(Some(t)),
        )
    });
    let rotation = rotation.map(|r| RotationFacts {
        phase: r.phase.clone().unwrap_or_else(|| "—".into()),
        status: r.status.clone().unwrap_or_else(|| "none".into()),
        status_reason: r.status_reason.clone().unwrap_or_default(),
        version: r.version_id.clone().unwrap_or_else(|| "—".into()),
        old_version: r.old_version_id.clone().unwrap_or_else(|| "—".into()),
        next_wake: date(r.next_wake_date),
        gate: gate_name.clone().map(|name| Gate {
            name,
            reason: r.gate_reason.clone().unwrap_or_default(),
            waited: duration(r.gate_waited_seconds.unwrap_or_default()),
            holders: holders.clone(),
        }),
        timeline: {
            let mut previous: Option<f64> = None;
            r.timeline
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let after = match (previous, e.date) {
                        (Some(p), Some(d)) => format!("+{}", duration(d - p)),
                        _ => String::new(),
                    };
                    previous = e.date.or(previous);
                    (date(e.date), e.event.unwrap_or_default(), after)
                })
                .collect()
        },
    });
    RotationLive {
        plot,
        rotation: rotation.map_err(|e| refusal(&e)),
        consumers: consumers.map_err(|e| refusal(&e)),
    }
}

/// One Server-Sent Event carrying a section's HTML, one `data:` line per line.
fn event(name: &str, html: &str) -> String {
    let mut out = format!("event: {name}\n");
    for line in html.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The propagation view, live: redrawn when a consumer reports to this node or a secret
/// changes, and at least every `live_interval` (for reports to other nodes and the engine's
/// steps); an event is sent only when the view changed. The stream ends with its session.
fn live_stream<A>(console: Arc<Console>, app: Arc<A>, signed: Signed, name: String) -> Response
where
    A: AsRef<Baton> + Send + Sync + 'static,
{
    let started = Instant::now();
    let reports = (*app).as_ref().consumer_reports.subscribe();
    let state = (console, app, signed, name, reports, String::new(), true);
    let stream = futures_util::stream::unfold(state, move |state| async move {
        let (console, app, signed, name, mut reports, last, first) = state;
        let baton = (*app).as_ref();
        if !first {
            tokio::select! {
                _ = reports.changed() => {}
                _ = baton.store.changes().any_change() => {}
                _ = tokio::time::sleep(console.options.live_interval) => {}
            }
            tokio::time::sleep(LIVE_REDRAW_MIN).await;
        }
        let now = Instant::now();
        if now.duration_since(started) > LIVE_STREAM_MAX
            || console.sessions.find(&signed.token, now).is_none()
        {
            return None;
        }
        let html = render_live(&console, baton, &signed, &name).await;
        let out = if html != last {
            event("update", &html)
        } else {
            ": unchanged\n\n".to_owned()
        };
        Some((out, (console, app, signed, name, reports, html, false)))
    });
    let mut response = Response::new(200, "text/event-stream", Vec::new());
    response.body = crate::Body::Events(stream.boxed());
    response
}

async fn audit_page(
    console: &Console,
    baton: &Baton,
    signed: &Signed,
    query: &HashMap<String, String>,
    verified: Option<String>,
) -> Response {
    let get = |k: &str| {
        query
            .get(k)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let mut filter = AuditFilter {
        principal: get("principal"),
        action: get("action"),
        resource: get("resource"),
        decision: get("decision"),
        since: get("since"),
        until: get("until"),
        problem: None,
    };
    let (since, until) = match (form_time(&filter.since), form_time(&filter.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            filter.problem = Some(e);
            (None, None)
        }
    };
    // The newest entries: the page starts this far behind the log's head (further when
    // filtering, so that matches among recent entries are found).
    let head = baton
        .store
        .last_audit()
        .await
        .ok()
        .flatten()
        .map(|(seq, _)| seq)
        .unwrap_or(0);
    let filtered = [
        &filter.principal,
        &filter.action,
        &filter.resource,
        &filter.decision,
    ]
    .iter()
    .any(|v| !v.is_empty())
        || since.is_some()
        || until.is_some();
    let behind = if filtered { AUDIT_WINDOW } else { AUDIT_PAGE };
    let mut request = json!({"MaxResults": AUDIT_PAGE, "AfterSeq": (head - behind).max(0)});
    for (key, value) in [
        ("Principal", &filter.principal),
        ("Action", &filter.action),
        ("Resource", &filter.resource),
        ("Decision", &filter.decision),
    ] {
        if !value.is_empty() {
            request[key] = json!(value);
        }
    }
    for (key, value) in [("Since", since), ("Until", until)] {
        if let Some(t) = value {
            request[key] = json!(t);
        }
    }
    // Pages forward to the head, keeping the newest matches: the window is bounded, so this
    // is at most `AUDIT_WINDOW / AUDIT_PAGE` calls.
    let mut kept: std::collections::VecDeque<p::AuditEntry> = Default::default();
    let mut failure = None;
    for _ in 0..AUDIT_WINDOW / AUDIT_PAGE + 1 {
        let answer: Result<p::ListAuditEntriesResponse, _> = signed
            .call(baton, console, "baton.ListAuditEntries", &request)
            .await;
        match answer {
            Err(e) => {
                failure = Some(refusal(&e));
                break;
            }
            Ok(page) => {
                for e in page.entries.unwrap_or_default() {
                    if kept.len() == AUDIT_PAGE as usize {
                        kept.pop_front();
                    }
                    kept.push_back(e);
                }
                match page.next_seq {
                    Some(next) => request["AfterSeq"] = json!(next),
                    None => break,
                }
            }
        }
    }
    let entries = match failure {
        Some(denied) => Err(denied),
        None => Ok(kept
            .into_iter()
            .rev()
            .map(|e| AuditRow {
                seq: e.seq.unwrap_or_default(),
                time: date(e.time),
                principal: e.principal.unwrap_or_default(),
                action: e.action.unwrap_or_default(),
                resource: e.resource.unwrap_or_default(),
                decision: e.decision.unwrap_or_default(),
                outcome: e.outcome.unwrap_or_default(),
                user_agent: e.user_agent.unwrap_or_default(),
            })
            .collect()),
    };
    render(
        AuditPage {
            title: "Audit log",
            bar: bar(signed),
            notice: None,
            filter,
            entries,
            verified,
            csrf: signed.session.csrf_token().to_owned(),
        },
        200,
    )
}

/// Runs the chain check over the whole log, page by page.
async fn verify_audit(console: &Console, baton: &Baton, signed: &Signed) -> String {
    let mut after = 0i64;
    let mut chain = String::new();
    let mut checked = 0i64;
    loop {
        let answer: Result<p::VerifyAuditLogResponse, _> = signed
            .call(
                baton,
                console,
                "baton.VerifyAuditLog",
                &json!({"AfterSeq": after, "Chain": chain, "MaxResults": 10_000}),
            )
            .await;
        match answer {
            Err(e) => return refusal(&e),
            Ok(v) => {
                checked += v.checked.unwrap_or_default();
                let problems = v.problems.unwrap_or_default();
                if let Some(first) = problems.first() {
                    let chain = first.chain.clone().unwrap_or_default();
                    return format!(
                        "The chain is broken: {} problem(s); the first at seq {}{}: {}",
                        problems.len(),
                        first.seq.unwrap_or_default(),
                        if chain.is_empty() {
                            String::new()
                        } else {
                            format!(" of chain {chain}")
                        },
                        first.problem.clone().unwrap_or_default()
                    );
                }
                let last = v.last_seq.unwrap_or(after);
                let next = v.chain.unwrap_or_default();
                if v.more != Some(true) || (last <= after && next == chain) {
                    let chains = v.chains.unwrap_or(1);
                    return if chains > 1 {
                        format!(
                            "The chain is intact: {checked} entries checked in {chains} chains."
                        )
                    } else {
                        format!("The chain is intact: {checked} entries checked, up to seq {last}.")
                    };
                }
                after = last;
                chain = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(instance: &str, uses: &str, accepts: &[&str]) -> p::Consumer {
        p::Consumer {
            application: Some("app".into()),
            instance_id: Some(instance.into()),
            current_version_id: Some(uses.into()),
            accepted_version_ids: Some(accepts.iter().map(|s| (*s).to_owned()).collect()),
            live: Some(true),
            ..Default::default()
        }
    }

    fn rotation(gate: &str) -> p::DescribeRotationResponse {
        p::DescribeRotationResponse {
            status: Some("InProgress".into()),
            version_id: Some("new".into()),
            old_version_id: Some("old".into()),
            waiting_gate: Some(gate.into()),
            gate_reason: Some("waiting".into()),
            ..Default::default()
        }
    }

    fn consumers() -> p::ListConsumersResponse {
        p::ListConsumersResponse {
            current_version_id: Some("old".into()),
            consumers: Some(vec![
                consumer("a", "old", &["old", "new"]),
                consumer("b", "old", &["old"]),
                consumer("c", "new", &["new", "old"]),
                p::Consumer {
                    live: Some(false),
                    ..consumer("d", "old", &["old"])
                },
            ]),
            ..Default::default()
        }
    }

    fn holders(view: &RotationLive) -> Vec<String> {
        view.rotation
            .as_ref()
            .unwrap()
            .gate
            .as_ref()
            .map(|g| g.holders.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_propagation_gate_is_held_by_live_consumers_that_do_not_accept_the_new_version() {
        let view = live_view(0.0, Ok(rotation("propagation")), Ok(consumers()));
        assert_eq!(holders(&view), vec!["app / b"]);
        let c = view.consumers.as_ref().unwrap();
        assert_eq!((c.holding_new, c.live), (2, 3));
        let states: Vec<_> = c.rows.iter().map(|r| r.state).collect();
        assert_eq!(states, ["caught-up", "lagging", "caught-up", "expired"]);
    }

    #[test]
    fn the_drain_gate_is_held_by_live_consumers_that_still_use_the_old_version() {
        let view = live_view(0.0, Ok(rotation("drain")), Ok(consumers()));
        assert_eq!(holders(&view), vec!["app / a", "app / b"]);
    }

    #[test]
    fn with_no_rotation_in_flight_no_gate_is_shown() {
        let done = p::DescribeRotationResponse {
            status: Some("Succeeded".into()),
            waiting_gate: Some("drain".into()),
            ..rotation("drain")
        };
        let view = live_view(0.0, Ok(done), Ok(consumers()));
        assert!(holders(&view).is_empty());
        let html = view.render().unwrap();
        assert!(html.contains("No gate is held."), "{html}");
    }

    #[test]
    fn a_denied_read_shows_a_note_and_no_data() {
        let view = live_view(
            0.0,
            Err(ApiError::AccessDenied(
                "not allowed to DescribeRotation".into(),
            )),
            Ok(consumers()),
        );
        let html = view.render().unwrap();
        assert!(
            html.contains("Access denied. not allowed to DescribeRotation"),
            "{html}"
        );
        assert!(!html.contains("Phase"), "{html}");
    }

    #[test]
    fn user_text_is_escaped_in_the_live_view() {
        let mut list = consumers();
        list.consumers = Some(vec![consumer("<script>x()</script>", "old", &["old"])]);
        let html = live_view(0.0, Ok(rotation("propagation")), Ok(list))
            .render()
            .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let plain = cookie_header(SESSION_COOKIE, "t", false, None);
        assert_eq!(
            plain,
            "baton_session=t; Path=/console; HttpOnly; SameSite=Strict"
        );
        let tls = cookie_header(SESSION_COOKIE, "t", true, Some(0));
        assert!(tls.ends_with("; Secure; Max-Age=0"), "{tls}");
    }

    fn open(name: &str, status: &str, gate: Option<&str>, alerted: bool) -> p::OpenRotation {
        p::OpenRotation {
            arn: Some(format!(
                "arn:aws:secretsmanager:us-east-1:1:secret:{name}-abcdef"
            )),
            name: Some(name.into()),
            phase: Some("tested".into()),
            status: Some(status.into()),
            status_reason: (status == "Stopped").then(|| "step test failed: no".into()),
            waiting_gate: gate.map(Into::into),
            alerted: Some(alerted),
            held_by: gate.map(|_| {
                vec![p::ConsumerIdentity {
                    application: Some("app".into()),
                    instance_id: Some("i-1".into()),
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_overview_sorts_rotations_into_its_sections_and_caps_each_table() {
        let mut rotations = vec![
            open("stopped", "Stopped", None, false),
            open("late", "InProgress", Some("drain"), true),
        ];
        rotations.extend(
            (0..150).map(|i| open(&format!("s{i}"), "InProgress", Some("propagation"), false)),
        );
        let o = open_rotations(p::ListOpenRotationsResponse {
            rotations: Some(rotations),
            scheduled: Some(vec![p::ScheduledRotation {
                arn: None,
                name: Some("due/soon".into()),
                next_rotation_date: Some(0.0),
            }]),
            truncated: Some(false),
        });
        assert_eq!(o.counts.running, 151);
        assert_eq!(o.running.len(), OVERVIEW_ROWS);
        assert_eq!(o.counts.gates, 151);
        assert_eq!(o.gates[0].name, "late");
        assert!(o.gates[0].alerted);
        assert_eq!(o.gates[0].holders, vec!["app / i-1".to_owned()]);
        assert_eq!(o.counts.stopped, 1);
        assert_eq!(o.stopped[0].waiting, "step test failed: no");
        let alerts: Vec<&str> = o.alerts.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(
            alerts,
            vec![
                "The rotation of stopped stopped in phase tested.",
                "The drain gate of late has waited 0 s, past its maximum.",
            ]
        );
        assert_eq!(o.alerts[0].href, "/console/secrets/stopped/rotation");
        assert_eq!(o.due[0].0, "/console/secrets/due%2Fsoon");
    }

    #[test]
    fn a_key_rotation_links_to_the_key() {
        assert_eq!(
            rotation_href("arn:aws:kms:us-east-1:1:key/1234-ab", "1234-ab"),
            "/console/keys/1234-ab"
        );
    }

    #[test]
    fn audit_times_are_read_as_utc_and_a_bad_one_is_named() {
        assert_eq!(form_time("1970-01-01T00:01"), Ok(Some(60.0)));
        assert_eq!(form_time("2026-12-03T10:00:30"), Ok(Some(1_796_292_030.0)));
        assert_eq!(form_time(""), Ok(None));
        let e = form_time("yesterday").unwrap_err();
        assert!(e.contains("\"yesterday\" is not a time"), "{e}");
    }

    #[test]
    fn the_timeline_shows_how_long_each_step_took() {
        let mut r = rotation("propagation");
        r.timeline = Some(
            [
                (0.0, "phase started"),
                (5.0, "phase created"),
                (70.0, "phase set"),
            ]
            .into_iter()
            .map(|(t, e)| p::TimelineEntry {
                date: Some(t),
                event: Some(e.into()),
            })
            .collect(),
        );
        let view = live_view(0.0, Ok(r), Ok(consumers()));
        let steps: Vec<String> = view
            .rotation
            .unwrap()
            .timeline
            .into_iter()
            .map(|(_, _, after)| after)
            .collect();
        assert_eq!(steps, vec!["", "+5 s", "+1 min 5 s"]);
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(encode("db/main prod"), "db%2Fmain%20prod");
        assert_eq!(secret_href("a<b>"), "/console/secrets/a%3Cb%3E");
    }

    #[test]
    fn each_event_line_is_a_data_line() {
        assert_eq!(
            event("update", "<p>a</p>\n<p>b</p>"),
            "event: update\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
        );
    }
}

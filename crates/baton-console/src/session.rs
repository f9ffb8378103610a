//! Console sessions: a random token in an HttpOnly cookie names a server-side session that holds
//! the signed-in caller and the session's CSRF token. Sessions end after an idle time, after an
//! absolute time, at sign-out, and when their access key is deleted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use baton_app::Caller;
use baton_crypto::SecretBytes;

/// How long a session lasts without a request.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// How long a session lasts at most, however busy.
pub const ABSOLUTE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins one address may make within [`FAILURE_WINDOW`] before it must wait.
pub const FAILURES_MAX: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The most sessions held at once; the oldest is ended to make room.
const SESSIONS_MAX: usize = 10_000;

/// A signed-in user.
pub struct Session {
    pub caller: Caller,
    /// Sent in every form and compared in constant time on every state-changing request.
    pub csrf: SecretBytes,
    created: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.caller.principal.arn)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The CSRF token as forms carry it.
    pub fn csrf_token(&self) -> &str {
        std::str::from_utf8(self.csrf.expose()).unwrap_or_default()
    }
}

/// The sessions of this node, and the failed sign-ins of each address.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    by_token: Mutex<HashMap<String, Arc<Session>>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

/// A random token of 32 bytes, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // fill_random fails only when the OS has no randomness, which nothing here survives.
    baton_crypto::fill_random(&mut bytes).expect("the operating system's random generator");
    B64.encode(bytes)
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Sessions {
            idle,
            absolute,
            by_token: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for a caller; returns its token, for the cookie.
    pub fn start(&self, caller: Caller, now: Instant) -> String {
        let token = random_token();
        let session = Arc::new(Session {
            caller,
            csrf: SecretBytes::from(random_token().into_bytes()),
            created: now,
            last_seen: now,
        });
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| self.alive(s, now));
        if map.len() >= SESSIONS_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(token.clone(), session);
        token
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.absolute
    }

    /// The live session a cookie names, with its idle time restarted.
    pub fn find(&self, token: &str, now: Instant) -> Option<Arc<Session>> {
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let session = map.get(token)?.clone();
        if !self.alive(&session, now) {
            map.remove(token);
            return None;
        }
        let renewed = Arc::new(Session {
            caller: session.caller.clone(),
            csrf: session.csrf.clone(),
            created: session.created,
            last_seen: now,
        });
        map.insert(token.to_owned(), renewed.clone());
        Some(renewed)
    }

    /// Ends a session (sign-out, or its key is gone).
    pub fn end(&self, token: &str) {
        self.by_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// How long an address must wait before it may try to sign in again, if it must.
    pub fn sign_in_refused_for(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = failures.get_mut(&address)?;
        list.retain(|at| now.duration_since(*at) < FAILURE_WINDOW);
        if list.len() < FAILURES_MAX {
            return None;
        }
        let oldest = list.iter().min().copied()?;
        Some(FAILURE_WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    /// Counts a failed sign-in from an address.
    pub fn sign_in_failed(&self, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= SESSIONS_MAX {
            failures.retain(|_, list| {
                list.iter()
                    .any(|at| now.duration_since(*at) < FAILURE_WINDOW)
            });
        }
        failures.entry(address).or_default().push(now);
    }

    /// A successful sign-in forgets the address's failures.
    pub fn sign_in_succeeded(&self, address: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller::admin("123456789012", "us-east-1", "Test")
    }

    #[test]
    fn a_session_ends_after_its_idle_time_and_its_absolute_time() {
        let sessions = Sessions::new(Duration::from_secs(10), Duration::from_secs(25));
        let t0 = Instant::now();
        let token = sessions.start(caller(), t0);
        assert!(sessions.find(&token, t0 + Duration::from_secs(9)).is_some());
        // Kept busy, it still ends at the absolute limit.
        assert!(
            sessions
                .find(&token, t0 + Duration::from_secs(18))
                .is_some()
        );
        assert!(
            sessions
                .find(&token, t0 + Duration::from_secs(24))
                .is_some()
        );
        assert!(
            sessions
                .find(&token, t0 + Duration::from_secs(26))
                .is_none()
        );

        let idle = sessions.start(caller(), t0);
        assert!(sessions.find(&idle, t0 + Duration::from_secs(11)).is_none());
        assert!(sessions.find("not-a-token", t0).is_none());
    }

    #[test]
    fn sign_out_ends_the_session_on_the_server() {
        let sessions = Sessions::new(IDLE_TIMEOUT_DEFAULT, ABSOLUTE_TIMEOUT_DEFAULT);
        let now = Instant::now();
        let token = sessions.start(caller(), now);
        sessions.end(&token);
        assert!(sessions.find(&token, now).is_none());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_within_the_window() {
        let sessions = Sessions::new(IDLE_TIMEOUT_DEFAULT, ABSOLUTE_TIMEOUT_DEFAULT);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..FAILURES_MAX {
            assert_eq!(sessions.sign_in_refused_for(a, t0), None, "attempt {i}");
            sessions.sign_in_failed(a, t0);
        }
        let wait = sessions.sign_in_refused_for(a, t0).unwrap();
        assert_eq!(wait, FAILURE_WINDOW);
        assert_eq!(sessions.sign_in_refused_for(b, t0), None);
        assert_eq!(sessions.sign_in_refused_for(a, t0 + FAILURE_WINDOW), None);
        sessions.sign_in_failed(a, t0 + FAILURE_WINDOW);
        sessions.sign_in_succeeded(a);
        assert_eq!(sessions.sign_in_refused_for(a, t0 + FAILURE_WINDOW), None);
    }
}

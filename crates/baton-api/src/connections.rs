//! Connection hygiene: how long a client may take to send a request, and how many connections
//! one address may hold. A secrets manager sits on every service's path; a few slow or greedy
//! clients must not be able to take every connection slot, so `/health` and real clients keep
//! being served.
//!
//! - Headers: hyper's header read timeout (`ServeOptions::request_read_timeout`). It also runs
//!   while a kept-alive connection waits for its next request, so it is the idle timeout too.
//! - Body: [`receive_within`] reads the whole body within the same time after the headers, or
//!   answers 408 and closes the connection.
//! - Per address: [`PerAddress`] caps the connections one IP address holds at once, below the
//!   server-wide `connections_max`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use baton_app::ApiError;

/// How long a request's body may take to arrive, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub(crate) deadline: Duration,
    pub(crate) bytes_max: usize,
}

/// Reads the whole body within the deadline before the request goes on. A body larger than
/// allowed is left to the handler's own limit, which answers with AWS's error shape.
pub(crate) async fn receive_within(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    // One byte more than allowed is enough to know the body is too large.
    let read = axum::body::to_bytes(body, limits.bytes_max.saturating_add(1));
    let refusal = match tokio::time::timeout(limits.deadline, read).await {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        Ok(Err(_)) => ApiError::PayloadTooLarge(format!(
            "The request body is larger than the {} bytes this server accepts.",
            limits.bytes_max
        )),
        Err(_) => ApiError::Timeout(format!(
            "The request body did not arrive within {} s.",
            limits.deadline.as_secs()
        )),
    };
    metrics::counter!("baton_requests_refused_total", "reason" => refusal.error_type())
        .increment(1);
    let status = match refusal {
        ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, baton_proto::CONTENT_TYPE)],
        refusal.body(),
    )
        .into_response();
    // The rest of a slow body is not worth waiting for: close the connection.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Counts the open connections of each address.
#[derive(Debug)]
pub(crate) struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct AddressPermit {
    limiter: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(PerAddress {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `address`, or `None` if it holds the maximum.
    pub(crate) fn try_acquire(self: &Arc<Self>, address: IpAddr) -> Option<AddressPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            limiter: self.clone(),
            address,
        })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_slots_back() {
        let limiter = PerAddress::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none(), "a third is refused");
        assert!(
            limiter.try_acquire(b).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            limiter.try_acquire(a).is_some(),
            "a closed connection frees its slot"
        );
    }
}

//! Mounts the console (`baton-console`) at `/console/`: turns an axum request into the
//! console's request and its response back into HTTP, streaming Server-Sent Events.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use crate::server::{App, Connection};

pub(crate) async fn serve(
    State(app): State<Arc<App>>,
    axum::Extension(connection): axum::Extension<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(console) = app.console.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(body) = body else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.").into_response();
    };
    let path = uri
        .path()
        .strip_prefix(baton_console::PREFIX)
        .unwrap_or_default();
    if path.is_empty() {
        // `/console` itself: relative links need the trailing slash.
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("{}/", baton_console::PREFIX))],
        )
            .into_response();
    }
    let request = baton_console::Request {
        method: match method {
            Method::GET | Method::HEAD => baton_console::Method::Get,
            Method::POST => baton_console::Method::Post,
            _ => baton_console::Method::Other,
        },
        path: path.to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        cookie: headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .reduce(|a, _| a)
            .map(str::to_owned),
        body: body.to_vec(),
        peer: connection.peer.ip(),
        secure: connection.secure,
    };
    let answer = console.handle(&app, request).await;
    let mut response = match answer.body {
        baton_console::Body::Full(bytes) => Response::new(Body::from(bytes)),
        baton_console::Body::Events(stream) => Response::new(Body::from_stream(
            stream.map(|event| Ok::<_, std::convert::Infallible>(Bytes::from(event))),
        )),
    };
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.append(name, value);
        }
    }
    response
}

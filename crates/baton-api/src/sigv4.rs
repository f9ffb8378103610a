//! Verification of AWS Signature Version 4 on incoming requests.
//!
//! The verifier rebuilds the canonical request from what arrived, derives the signing key from
//! the access key's secret, and compares signatures in constant time. The error types and
//! messages follow what AWS's front end answers, so SDKs surface familiar errors.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, Uri};
use baton_crypto::SecretBytes;
use baton_crypto::sigv4::{sha256_hex, signature};

use baton_app::{ApiError, Baton, Caller, invalid_token};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The largest difference between the request's date and the server's clock that is accepted.
pub const CLOCK_SKEW_MAX_SECONDS: i64 = 15 * 60;

/// The parsed `Authorization` header and the request facts the signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub access_key_id: String,
    pub scope_date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
    pub amz_date: String,
    pub amz_date_seconds: i64,
    pub security_token: Option<String>,
}

fn incomplete(authorization: &str, problems: &[&str]) -> ApiError {
    let mut message = String::new();
    for problem in problems {
        message.push_str(problem);
        message.push(' ');
    }
    message.push_str("Authorization=");
    message.push_str(authorization);
    ApiError::IncompleteSignature(message)
}

/// Parses the `Authorization` header and date, and checks the clock skew against `now_seconds`.
/// Headers a request must sign whenever it carries them.
const MUST_SIGN_WHEN_PRESENT: [&str; 2] = ["x-amz-target", "content-type"];

pub fn parse(headers: &HeaderMap, now_seconds: i64) -> Result<SignedRequest, ApiError> {
    let Some(authorization) = headers.get("authorization") else {
        return Err(ApiError::MissingAuthenticationToken(
            "Missing Authentication Token".to_owned(),
        ));
    };
    let authorization = authorization.to_str().map_err(|_| {
        ApiError::IncompleteSignature("The Authorization header is not valid ASCII.".to_owned())
    })?;
    let Some(rest) = authorization.strip_prefix(ALGORITHM) else {
        let algorithm = authorization.split_whitespace().next().unwrap_or_default();
        return Err(ApiError::IncompleteSignature(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'; only {ALGORITHM} is accepted."
        )));
    };
    let mut parts: BTreeMap<&str, &str> = BTreeMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            parts.insert(k.trim(), v.trim());
        }
    }
    let mut problems = Vec::new();
    if !parts.contains_key("Credential") {
        problems.push("Authorization header requires 'Credential' parameter.");
    }
    if !parts.contains_key("Signature") {
        problems.push("Authorization header requires 'Signature' parameter.");
    }
    if !parts.contains_key("SignedHeaders") {
        problems.push("Authorization header requires 'SignedHeaders' parameter.");
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok());
    if amz_date.is_none() {
        problems.push(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    }
    if !problems.is_empty() {
        return Err(incomplete(authorization, &problems));
    }
    let (credential, signed_headers, signature, amz_date) = (
        parts["Credential"],
        parts["SignedHeaders"],
        parts["Signature"],
        amz_date.unwrap_or_default(),
    );
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
        return Err(ApiError::IncompleteSignature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if terminator != "aws4_request" {
        return Err(ApiError::InvalidSignature(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )));
    }
    let amz_date_seconds = parse_amz_date(amz_date).ok_or_else(|| {
        ApiError::IncompleteSignature(format!(
            "X-Amz-Date must be in ISO 8601 basic format YYYYMMDD'T'HHMMSS'Z', got '{amz_date}'."
        ))
    })?;
    if amz_date_seconds < now_seconds - CLOCK_SKEW_MAX_SECONDS {
        return Err(ApiError::InvalidSignature(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now_seconds - CLOCK_SKEW_MAX_SECONDS),
            format_amz_date(now_seconds)
        )));
    }
    if amz_date_seconds > now_seconds + CLOCK_SKEW_MAX_SECONDS {
        return Err(ApiError::InvalidSignature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now_seconds + CLOCK_SKEW_MAX_SECONDS),
            format_amz_date(now_seconds)
        )));
    }
    if !amz_date.starts_with(scope_date) {
        return Err(ApiError::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{scope_date}' != '{}', from '{amz_date}'.",
            &amz_date[..8.min(amz_date.len())]
        )));
    }
    let signed_headers: Vec<String> = signed_headers
        .split(';')
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(ApiError::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    // The target names the operation: unsigned, whoever captured a request could turn a
    // ListSecrets into another operation within the signature's 15 minutes. AWS's SDKs, the
    // aws CLI and Baton's own clients sign both of these.
    for must_sign in MUST_SIGN_WHEN_PRESENT {
        if headers.contains_key(must_sign) && !signed_headers.iter().any(|h| h == must_sign) {
            return Err(ApiError::InvalidSignature(format!(
                "The request carries {must_sign} but does not sign it: include {must_sign} in \
                 SignedHeaders."
            )));
        }
    }
    Ok(SignedRequest {
        access_key_id: access_key_id.to_owned(),
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
        amz_date: amz_date.to_owned(),
        amz_date_seconds,
        security_token: headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

/// The canonical request of SigV4, from the request as received.
pub fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> String {
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = if name == "host" && headers.get("host").is_none() {
            uri.authority().map(|a| a.to_string()).into_iter().collect()
        } else {
            headers
                .get_all(name.as_str())
                .iter()
                .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
                .collect()
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{}\n{}",
        signed_headers.join(";"),
        sha256_hex(body)
    )
}

/// Checks the signature of a parsed request under the signing key derived for its scope.
pub fn verify(
    signed: &SignedRequest,
    canonical_request: &str,
    signing_key: &SecretBytes,
) -> Result<(), ApiError> {
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{}/{}/{}/aws4_request\n{}",
        signed.amz_date,
        signed.scope_date,
        signed.region,
        signed.service,
        sha256_hex(canonical_request.as_bytes())
    );
    let expected = signature(signing_key, &string_to_sign);
    if baton_crypto::constant_time_eq(expected.as_bytes(), signed.signature.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::InvalidSignature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .to_owned(),
        ))
    }
}

/// Verifies a request's SigV4 signature (and, for temporary credentials, its session
/// token) against Baton's access keys, and returns the caller with its principal.
pub async fn authenticate(
    baton: &Baton,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now_seconds: i64,
    service: &str,
) -> Result<Caller, ApiError> {
    let signed = parse(headers, now_seconds)?;
    if signed.service != service {
        return Err(ApiError::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if !baton.regions.contains(&signed.region) {
        return Err(ApiError::InvalidSignature(format!(
            "Credential should be scoped to a valid region, not '{}'. This Baton serves: {}.",
            signed.region,
            baton.regions.join(", ")
        )));
    }
    let key = baton
        .signing_key(
            &signed.access_key_id,
            &signed.scope_date,
            &signed.region,
            &signed.service,
        )
        .await?;
    let canonical = canonical_request(method, uri, headers, &signed.signed_headers, body);
    verify(&signed, &canonical, &key.signing_key)?;
    match (&key.session_token_hash, &signed.security_token) {
        (None, None) => {}
        (Some(expected), Some(token))
            if baton_crypto::constant_time_eq(
                &baton_crypto::sha256(token.as_bytes()),
                expected,
            ) => {}
        _ => return Err(invalid_token()),
    }
    if key.expires_at.is_some_and(|at| now_seconds * 1000 >= at) {
        return Err(ApiError::ExpiredToken(
            "The security token included in the request is expired".to_owned(),
        ));
    }
    Ok(Caller::new(
        &signed.access_key_id,
        &baton.account_id,
        &signed.region,
        key.principal,
    ))
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(seconds: i64) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let rem = seconds.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use axum::http::{HeaderValue, Request};

    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// Signs a request with AWS's own signer, so the verifier is checked against an
    /// independent implementation.
    fn signed_request(body: &[u8], at: SystemTime) -> Request<Vec<u8>> {
        let identity = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("secretsmanager")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let mut request = Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8080/")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "secretsmanager.GetSecretValue")
            .body(body.to_vec())
            .unwrap();
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:8080/",
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request
    }

    fn check(request: &Request<Vec<u8>>, secret: &str, now: i64) -> Result<(), ApiError> {
        let parsed = parse(request.headers(), now)?;
        let canonical = canonical_request(
            request.method(),
            request.uri(),
            request.headers(),
            &parsed.signed_headers,
            request.body(),
        );
        let key = baton_crypto::sigv4::signing_key(
            secret.as_bytes(),
            &parsed.scope_date,
            &parsed.region,
            &parsed.service,
        );
        verify(&parsed, &canonical, &key)
    }

    fn now_seconds(at: SystemTime) -> i64 {
        at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn requests_signed_by_aws_sigv4_verify() {
        let at = SystemTime::now();
        let request = signed_request(br#"{"SecretId":"x"}"#, at);
        check(&request, SECRET, now_seconds(at)).unwrap();
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_is_an_invalid_signature() {
        let at = SystemTime::now();
        let mut request = signed_request(br#"{"SecretId":"x"}"#, at);
        assert!(matches!(
            check(&request, "wrong-secret", now_seconds(at)),
            Err(ApiError::InvalidSignature(_))
        ));
        *request.body_mut() = br#"{"SecretId":"y"}"#.to_vec();
        assert!(matches!(
            check(&request, SECRET, now_seconds(at)),
            Err(ApiError::InvalidSignature(_))
        ));
    }

    #[test]
    fn a_tampered_signed_header_is_an_invalid_signature() {
        let at = SystemTime::now();
        let mut request = signed_request(b"{}", at);
        request.headers_mut().insert(
            "x-amz-target",
            HeaderValue::from_static("secretsmanager.DeleteSecret"),
        );
        assert!(matches!(
            check(&request, SECRET, now_seconds(at)),
            Err(ApiError::InvalidSignature(_))
        ));
    }

    #[test]
    fn clock_skew_beyond_15_minutes_is_refused_both_ways() {
        let at = SystemTime::now();
        let request = signed_request(b"{}", at);
        let now = now_seconds(at);
        check(&request, SECRET, now + 14 * 60).unwrap();
        let err = check(&request, SECRET, now + 16 * 60).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidSignature(m) if m.starts_with("Signature expired:")),
            "{err:?}"
        );
        let err = check(&request, SECRET, now - 16 * 60).unwrap_err();
        assert!(matches!(&err, ApiError::InvalidSignature(m) if m.contains("not yet current")));
    }

    #[test]
    fn missing_parts_are_named_in_an_incomplete_signature_error() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            parse(&headers, 0),
            Err(ApiError::MissingAuthenticationToken(_))
        ));
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/secretsmanager/aws4_request",
            ),
        );
        let Err(ApiError::IncompleteSignature(message)) = parse(&headers, 0) else {
            panic!("expected IncompleteSignature");
        };
        assert!(message.contains("'Signature' parameter"), "{message}");
        assert!(message.contains("'SignedHeaders' parameter"), "{message}");
        assert!(message.contains("'X-Amz-Date'"), "{message}");
        assert!(!message.contains("'Credential' parameter"), "{message}");
    }

    #[test]
    fn a_target_or_content_type_left_out_of_the_signature_is_refused() {
        let at = SystemTime::now();
        let now = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let request = signed_request(b"{}", at);
        assert!(parse(request.headers(), now).is_ok());
        for header in ["x-amz-target", "content-type"] {
            let mut narrowed = request.headers().clone();
            let authorization = narrowed["authorization"].to_str().unwrap().to_owned();
            let (before, after) = authorization.split_once("SignedHeaders=").unwrap();
            let (list, rest) = after.split_once(',').unwrap();
            let kept: Vec<&str> = list.split(';').filter(|h| *h != header).collect();
            let changed = format!("{before}SignedHeaders={},{rest}", kept.join(";"));
            narrowed.insert("authorization", HeaderValue::from_str(&changed).unwrap());
            let Err(ApiError::InvalidSignature(message)) = parse(&narrowed, now) else {
                panic!("{header} left unsigned was accepted");
            };
            assert!(message.contains(header), "{message}");
            // Without the header at all, there is nothing to sign.
            narrowed.remove(header);
            assert!(parse(&narrowed, now).is_ok(), "{header} absent");
        }
    }

    #[test]
    fn amz_dates_round_trip() {
        for s in ["19700101T000000Z", "20240229T235959Z", "21001231T120000Z"] {
            assert_eq!(format_amz_date(parse_amz_date(s).unwrap()), s);
        }
        assert_eq!(parse_amz_date("20240101T000000Z"), Some(1_704_067_200));
        assert_eq!(parse_amz_date("2024-01-01T00:00:00Z"), None);
    }
}

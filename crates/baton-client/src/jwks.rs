//! A JWT verifier fed by Baton's JWKS (`GET /jwks/<key>`).
//!
//! It keeps the key set for the `max-age` the server sends (half the key's propagation delay),
//! and refreshes early when a token names a `kid` it does not hold. Refreshes are single-flight
//! (concurrent verifications of tokens with a new `kid` cause one fetch) and an unknown `kid`
//! triggers at most one fetch per [`JwksOptions::unknown_kid_interval`], so tokens with made-up
//! ids cannot make the verifier hammer the server.
//!
//! Supported algorithms: RS256 (RSASSA-PKCS1-v1_5 with SHA-256), ES256 and ES384 (JWS's
//! fixed-length `r || s` signatures). Tokens whose `exp` has passed or whose `nbf` has not come
//! are refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    #[error("the token is not a JWS compact serialization: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not supported (RS256, ES256, ES384)")]
    Algorithm(String),
    #[error("no key {0:?} in the JWKS, also after a refresh")]
    UnknownKid(String),
    #[error("the signature does not verify with key {0:?}")]
    BadSignature(String),
    #[error("the token expired or is not valid yet")]
    Expired,
    #[error("fetching the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
}

/// How the verifier refreshes.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// The least time between two refreshes caused by an unknown `kid`.
    pub unknown_kid_interval: Duration,
    /// Used when the server sends no `max-age`.
    pub default_max_age: Duration,
    /// Tolerance for `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            unknown_kid_interval: Duration::from_secs(1),
            default_max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { alg: &'static str, point: Vec<u8> },
}

#[derive(Debug, Default)]
struct KeySet {
    keys: HashMap<String, PublicKey>,
    fetched_at: Option<Instant>,
    max_age: Duration,
    /// Bumped by every completed fetch, so a waiter can tell whether another caller's fetch
    /// already ran while it waited for the refresh lock.
    generation: u64,
    last_unknown_refresh: Option<Instant>,
}

/// Verifies JWTs against one key's JWKS. Cheap to clone; clones share the cache.
#[derive(Debug, Clone)]
pub struct JwksVerifier {
    url: String,
    http: reqwest::Client,
    options: JwksOptions,
    set: Arc<RwLock<KeySet>>,
    refresh_lock: Arc<Mutex<()>>,
    fetches: Arc<AtomicU64>,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("a part is not base64url".to_owned()))
}

fn parse_jwk(jwk: &Value) -> Option<(String, PublicKey)> {
    let kid = jwk.get("kid")?.as_str()?.to_owned();
    let field = |name: &str| -> Option<Vec<u8>> { b64(jwk.get(name)?.as_str()?).ok() };
    let key = match jwk.get("kty")?.as_str()? {
        "RSA" => PublicKey::Rsa {
            n: field("n")?,
            e: field("e")?,
        },
        "EC" => {
            let alg = match jwk.get("crv")?.as_str()? {
                "P-256" => "ES256",
                "P-384" => "ES384",
                _ => return None,
            };
            let mut point = vec![4u8];
            point.extend(field("x")?);
            point.extend(field("y")?);
            PublicKey::Ec { alg, point }
        }
        _ => return None,
    };
    Some((kid, key))
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        d.trim()
            .strip_prefix("max-age=")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
    })
}

impl JwksVerifier {
    /// A verifier for the key (id, ARN or alias) served at `endpoint`.
    pub fn new(endpoint: &str, key: &str, options: JwksOptions) -> Result<Self, JwtError> {
        let url = format!("{}/jwks/{key}", endpoint.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| JwtError::Fetch {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(JwksVerifier {
            url,
            http,
            options,
            set: Arc::new(RwLock::new(KeySet::default())),
            refresh_lock: Arc::new(Mutex::new(())),
            fetches: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The `kid`s held now.
    pub async fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.set.read().await.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    async fn fetch(&self) -> Result<(), JwtError> {
        let failed = |reason: String| JwtError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        let age = max_age(response.headers()).unwrap_or(self.options.default_max_age);
        let body: Value = response.json().await.map_err(|e| failed(e.to_string()))?;
        let keys: HashMap<String, PublicKey> = body
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| failed("the answer has no keys array".to_owned()))?
            .iter()
            .filter_map(parse_jwk)
            .collect();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut set = self.set.write().await;
        set.keys = keys;
        set.fetched_at = Some(Instant::now());
        set.max_age = age;
        set.generation += 1;
        Ok(())
    }

    /// Fetches unless another caller's fetch completed since `seen_generation`.
    async fn refresh(&self, seen_generation: u64, unknown_kid: bool) -> Result<(), JwtError> {
        let _flight = self.refresh_lock.lock().await;
        {
            let mut set = self.set.write().await;
            if set.generation != seen_generation {
                return Ok(());
            }
            if unknown_kid {
                if set
                    .last_unknown_refresh
                    .is_some_and(|at| at.elapsed() < self.options.unknown_kid_interval)
                {
                    return Ok(());
                }
                set.last_unknown_refresh = Some(Instant::now());
            }
        }
        self.fetch().await
    }

    async fn key_for(&self, kid: &str) -> Result<PublicKey, JwtError> {
        let (found, generation, stale) = {
            let set = self.set.read().await;
            let stale = set.fetched_at.is_none_or(|at| at.elapsed() >= set.max_age);
            (set.keys.get(kid).cloned(), set.generation, stale)
        };
        if stale {
            self.refresh(generation, false).await?;
        } else if let Some(key) = found {
            return Ok(key);
        } else {
            self.refresh(generation, true).await?;
        }
        let set = self.set.read().await;
        match set.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if stale => {
                // The stale refresh did not bring it: one more, as for any unknown kid.
                let generation = set.generation;
                drop(set);
                self.refresh(generation, true).await?;
                self.set
                    .read()
                    .await
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| JwtError::UnknownKid(kid.to_owned()))
            }
            None => Err(JwtError::UnknownKid(kid.to_owned())),
        }
    }

    /// Verifies a compact JWS and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("it must have three parts".to_owned()));
        };
        let header_json: Value = serde_json::from_slice(&b64(header)?)
            .map_err(|_| JwtError::Malformed("the header is not JSON".to_owned()))?;
        let alg = header_json
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kid = header_json
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Malformed("the header has no kid".to_owned()))?
            .to_owned();
        let key = self.key_for(&kid).await?;
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let sig = b64(sig)?;
        let ok = match (&key, alg.as_str()) {
            (PublicKey::Rsa { n, e }, "RS256") => RsaPublicKeyComponents { n, e }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signing_input.as_bytes(),
                    &sig,
                )
                .is_ok(),
            (
                PublicKey::Ec {
                    alg: key_alg,
                    point,
                },
                "ES256" | "ES384",
            ) if *key_alg == alg => {
                let verification = if alg == "ES256" {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                UnparsedPublicKey::new(verification, point)
                    .verify(signing_input.as_bytes(), &sig)
                    .is_ok()
            }
            _ => return Err(JwtError::Algorithm(alg)),
        };
        if !ok {
            return Err(JwtError::BadSignature(kid));
        }
        let claims: Value = serde_json::from_slice(&b64(payload)?)
            .map_err(|_| JwtError::Malformed("the payload is not JSON".to_owned()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let leeway = self.options.leeway.as_secs() as i64;
        let exp = claims.get("exp").and_then(Value::as_i64);
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        if exp.is_some_and(|exp| now > exp + leeway) || nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_entries_parse_into_keys_and_unknown_kinds_are_skipped() {
        let rsa = serde_json::json!({"kty": "RSA", "kid": "v1", "n": "AQAB", "e": "AQAB"});
        let ec =
            serde_json::json!({"kty": "EC", "kid": "v2", "crv": "P-256", "x": "AQ", "y": "Ag"});
        let odd = serde_json::json!({"kty": "OKP", "kid": "v3", "crv": "Ed25519", "x": "AQ"});
        assert!(matches!(parse_jwk(&rsa), Some((k, PublicKey::Rsa { .. })) if k == "v1"));
        match parse_jwk(&ec) {
            Some((k, PublicKey::Ec { alg, point })) => {
                assert_eq!((k.as_str(), alg, point), ("v2", "ES256", vec![4, 1, 2]));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_jwk(&odd).is_none());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=7".parse().unwrap(),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&headers), None);
    }
}

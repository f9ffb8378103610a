//! The server's shared state: the store, the root key, the namespace settings, and the
//! authentication of callers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use baton_crypto::{DataKey, RootKey, SecretBytes};
use baton_store::{AccessKeyRecord, Store};

use crate::authz::{Principal, PrincipalKind, SharedNote};
use crate::{ApiError, sigv4};

/// How long a derived signing key is reused before the access key is looked up again. This
/// bounds how long a key deleted on another node keeps working on this one.
const SIGNING_KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// The cache holds at most this many signing keys; it is cleared when full.
const SIGNING_KEY_CACHE_MAX: usize = 10_000;
/// The service name callers sign for.
pub const SIGNING_SERVICE: &str = "secretsmanager";
/// The service name callers of the KMS operations (`TrentService.*`) sign for.
pub const KMS_SIGNING_SERVICE: &str = "kms";

/// Who made a request, established by a verified signature.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key_id: String,
    pub account_id: String,
    /// The region from the credential scope: the namespace the request acts on.
    pub region: String,
    /// The principal the access key acts as, with its policies.
    pub principal: Arc<Principal>,
    /// The TCP peer's address: `aws:SourceIp`.
    pub source_ip: Option<IpAddr>,
    /// Whether the request came over TLS: `aws:SecureTransport`.
    pub secure_transport: bool,
    /// The operation being served (`PutSecretValue`), the name of the event it records.
    pub operation: String,
    /// The IAM action checked for it (`secretsmanager:PutSecretValue`).
    pub action: String,
    /// What authorization decided, shared by every clone, for the audit entry.
    pub(crate) note: SharedNote,
}

impl Caller {
    /// The administrator, calling in-process: for benchmarks and tests.
    pub fn admin(account_id: &str, region: &str, operation: &str) -> Self {
        Caller {
            access_key_id: "in-process".into(),
            account_id: account_id.into(),
            region: region.into(),
            principal: Arc::new(Principal::admin(account_id)),
            source_ip: None,
            secure_transport: false,
            operation: operation.into(),
            action: format!("secretsmanager:{operation}"),
            note: SharedNote::default(),
        }
    }

    /// The same caller checked for another action (a batch read checks each secret for
    /// GetSecretValue), noting into the same audit entry.
    pub(crate) fn acting_as(&self, action: &str) -> Caller {
        Caller {
            action: action.to_owned(),
            ..self.clone()
        }
    }

    /// Whether the credentials are a rotation's temporary ones.
    pub fn is_rotation(&self) -> bool {
        self.principal.kind == PrincipalKind::Rotation
    }
}

/// What authentication keeps of an access key between requests.
#[derive(Clone)]
struct CachedKey {
    signing_key: SecretBytes,
    fetched: Instant,
    principal: Arc<Principal>,
    expires_at: Option<i64>,
    session_token_hash: Option<Vec<u8>>,
}

/// Shared by every request.
pub struct Baton {
    pub store: Arc<dyn Store>,
    pub root_key: Arc<RootKey>,
    /// This node's root key source and its part in rotating the root key; `None` only for
    /// in-process use without a server.
    pub root_keys: Option<Arc<crate::root_keys::RootKeys>>,
    /// Wakes the rotation engine when a rotation starts, so it does not wait for its next pass.
    pub engine_wake: Arc<tokio::sync::Notify>,
    /// Makes the engine look at a secret's rotation at once, when a consumer reports.
    pub kicks: Arc<baton_engine::Kicks>,
    /// The longest a watch waits; below the request timeout.
    pub watch_wait_max: Duration,
    /// How long the event log keeps events.
    pub events_retention: Duration,
    /// Wakes the delivery supervisor when subscriptions change.
    pub delivery_wake: tokio::sync::Notify,
    /// When this node last recorded a plain read of each secret (throttles the writes).
    pub(crate) plain_reads: Mutex<HashMap<String, i64>>,
    pub account_id: String,
    pub regions: Vec<String>,
    /// The audit log; `None` only for in-process use without a server.
    pub audit: Option<crate::audit::AuditLog>,
    /// Whether webhooks (rotators, subscriptions) may be on loopback or private addresses.
    pub allow_private_webhooks: bool,
    /// The operator's command rotators.
    pub command_rotators: Arc<baton_engine::commands::CommandRotators>,
    signing_keys: Mutex<HashMap<String, CachedKey>>,
    /// Asymmetric KMS key versions parsed once, by (key's secret id, version id). A version's
    /// material never changes, so entries are never stale; the map is bounded by clearing.
    pub(crate) parsed_keys: Mutex<HashMap<(String, String), Arc<baton_crypto::kms::ParsedKey>>>,
}

impl std::fmt::Debug for Baton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baton")
            .field("account_id", &self.account_id)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// The server's clock, in milliseconds since the epoch. Only the server and engine read it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub use baton_crypto::access_key_aad;

pub use baton_crypto::value_aad;

impl Baton {
    pub fn new(
        store: Arc<dyn Store>,
        root_key: impl Into<Arc<RootKey>>,
        account_id: String,
        regions: Vec<String>,
    ) -> Self {
        Baton {
            store,
            root_key: root_key.into(),
            root_keys: None,
            engine_wake: Arc::new(tokio::sync::Notify::new()),
            kicks: Arc::new(baton_engine::Kicks::default()),
            watch_wait_max: Duration::from_secs(20),
            plain_reads: Mutex::new(HashMap::new()),
            events_retention: Duration::from_secs(30 * 24 * 3600),
            delivery_wake: tokio::sync::Notify::new(),
            account_id,
            regions,
            audit: None,
            allow_private_webhooks: false,
            command_rotators: Arc::default(),
            signing_keys: Mutex::new(HashMap::new()),
            parsed_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies the request's SigV4 signature (and, for temporary credentials, its session
    /// token) and returns the caller with its principal.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now_seconds: i64,
        service: &str,
    ) -> Result<Caller, ApiError> {
        let signed = sigv4::parse(headers, now_seconds)?;
        let invalid_token = || {
            ApiError::UnrecognizedClient(
                "The security token included in the request is invalid.".to_owned(),
            )
        };
        if signed.service != service {
            return Err(ApiError::InvalidSignature(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        if !self.regions.contains(&signed.region) {
            return Err(ApiError::InvalidSignature(format!(
                "Credential should be scoped to a valid region, not '{}'. This Baton serves: {}.",
                signed.region,
                self.regions.join(", ")
            )));
        }
        let cache_key = format!(
            "{}/{}/{}/{}",
            signed.access_key_id, signed.scope_date, signed.region, signed.service
        );
        let cached = self
            .signing_keys
            .lock()
            .ok()
            .and_then(|cache| cache.get(&cache_key).cloned())
            .filter(|k| k.fetched.elapsed() < SIGNING_KEY_CACHE_TTL);
        let key = match cached {
            Some(key) => key,
            None => {
                let record = self
                    .store
                    .find_access_key(&signed.access_key_id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::UnrecognizedClient(
                            "The security token included in the request is invalid.".to_owned(),
                        )
                    })?;
                let secret = self.root_key.open(
                    &record.sealed_secret,
                    &access_key_aad(&record.access_key_id),
                )?;
                let key = CachedKey {
                    signing_key: baton_crypto::sigv4::signing_key(
                        secret.expose(),
                        &signed.scope_date,
                        &signed.region,
                        &signed.service,
                    ),
                    fetched: Instant::now(),
                    principal: self.load_principal(&record).await?,
                    expires_at: record.expires_at,
                    session_token_hash: record.session_token_hash.clone(),
                };
                if let Ok(mut cache) = self.signing_keys.lock() {
                    if cache.len() >= SIGNING_KEY_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(cache_key, key.clone());
                }
                key
            }
        };
        let canonical =
            sigv4::canonical_request(method, uri, headers, &signed.signed_headers, body);
        sigv4::verify(&signed, &canonical, &key.signing_key)?;
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
        Ok(Caller {
            access_key_id: signed.access_key_id,
            account_id: self.account_id.clone(),
            region: signed.region,
            principal: key.principal,
            source_ip: None,
            secure_transport: false,
            operation: String::new(),
            action: String::new(),
            note: SharedNote::default(),
        })
    }

    /// Forgets every cached signing key, so that changed principals and policies take effect
    /// on this node at once (other nodes see them within `SIGNING_KEY_CACHE_TTL`).
    pub fn forget_all_access_keys(&self) {
        if let Ok(mut cache) = self.signing_keys.lock() {
            cache.clear();
        }
    }

    /// Forgets cached signing keys of an access key, so its deletion takes effect at once here.
    pub fn forget_access_key(&self, access_key_id: &str) {
        if let Ok(mut cache) = self.signing_keys.lock() {
            let prefix = format!("{access_key_id}/");
            cache.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    /// Issues a new access key. Returns the record and the secret half, which the caller shows
    /// once and never again.
    pub async fn issue_access_key(
        &self,
        principal_name: &str,
        fixed: Option<(String, SecretBytes)>,
    ) -> Result<(AccessKeyRecord, SecretBytes), ApiError> {
        let (access_key_id, secret) = match fixed {
            Some(pair) => pair,
            None => (
                format!("BTN{}", random_chars(17, ALPHABET_UPPER_DIGITS)?),
                SecretBytes::from(random_chars(40, ALPHABET_KEY)?),
            ),
        };
        let record = AccessKeyRecord {
            sealed_secret: self
                .root_key
                .seal(secret.expose(), &access_key_aad(&access_key_id))?,
            access_key_id,
            user_name: principal_name.to_owned(),
            created_at: now_ms(),
            scope_arn: None,
            expires_at: None,
            session_token_hash: None,
        };
        self.store.insert_access_key(&record).await?;
        Ok((record, secret))
    }

    /// The data key of a record whose key the root key wraps: a fresh record, or one inside
    /// [`Baton::update`], which holds a KMS-wrapped key in root-wrapped form while it changes.
    pub fn data_key(&self, secret: &baton_core::SecretRecord) -> Result<DataKey, ApiError> {
        if baton_crypto::kms::data_key_wrapper(&secret.wrapped_data_key).is_some() {
            return Err(key_unavailable());
        }
        Ok(self.root_key.unwrap(&secret.wrapped_data_key, &secret.id)?)
    }

    /// The data key of a stored secret, whichever key wraps it (the root key, or the KMS key
    /// named by the secret's KmsKeyId).
    pub async fn stored_data_key(
        &self,
        secret: &baton_core::SecretRecord,
    ) -> Result<DataKey, ApiError> {
        baton_engine::keywrap::data_key(&*self.store, &self.root_key, secret)
            .await
            .map_err(|e| {
                tracing::warn!(secret = %secret.arn, error = %e, "cannot unwrap a data key");
                key_unavailable()
            })
    }
}

fn key_unavailable() -> ApiError {
    ApiError::DecryptionFailure(
        "Secrets Manager can't decrypt the protected secret text using the provided KMS key: \
         the key that wraps this secret's data key is disabled, pending deletion or gone."
            .to_owned(),
    )
}

pub const ALPHABET_UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub const ALPHABET_KEY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const ALPHABET_ARN_SUFFIX: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters drawn uniformly from `alphabet` (its length must divide 256 or be
/// rejection-sampled; all alphabets here are sampled by rejection).
pub fn random_chars(n: usize, alphabet: &[u8]) -> Result<String, ApiError> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut buf = [0u8; 32];
        baton_crypto::fill_random(&mut buf)?;
        for b in buf {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

//! The application's shared state: the store, the root key, the namespace settings, and the
//! access keys callers authenticate with.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_crypto::{DataKey, RootKey, SecretBytes};
use baton_store::{AccessKeyRecord, Store};

use crate::ApiError;
use crate::authz::{Principal, PrincipalKind, SharedNote};

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
    /// A person looking at the console, not a program: the values it describes are not held
    /// by any consumer, so its DescribeSecret calls are not plain reads that rotation gates
    /// wait for. A value it reveals still is one (the person may paste it somewhere).
    pub viewer: bool,
    /// What authorization decided, shared by every clone, for the audit entry.
    pub(crate) note: SharedNote,
}

impl Caller {
    /// A caller authenticated by a front end, before [`Baton::invoke`] fills in the
    /// operation and the connection.
    pub fn new(
        access_key_id: &str,
        account_id: &str,
        region: &str,
        principal: Arc<Principal>,
    ) -> Self {
        Caller {
            access_key_id: access_key_id.to_owned(),
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            principal,
            source_ip: None,
            secure_transport: false,
            operation: String::new(),
            action: String::new(),
            viewer: false,
            note: SharedNote::default(),
        }
    }

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
            viewer: false,
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

/// What a front end needs to verify a SigV4 request signed with an access key.
#[derive(Clone)]
pub struct ScopedKey {
    /// The key derived for the request's scope (date, region, service).
    pub signing_key: SecretBytes,
    pub principal: Arc<Principal>,
    /// When temporary credentials end, in milliseconds since the epoch.
    pub expires_at: Option<i64>,
    /// SHA-256 of the session token temporary credentials must present.
    pub session_token_hash: Option<Vec<u8>>,
}

/// The audit entry of a sign-in attempt.
struct SignInAudit<'a> {
    principal: String,
    access_key_id: String,
    outcome: String,
    status: i64,
    origin: &'a crate::Origin,
}

impl SignInAudit<'_> {
    fn into_record(self) -> baton_store::AuditRecord {
        let ok = self.status == 200;
        baton_store::AuditRecord {
            at: now_ms(),
            request_id: uuid::Uuid::new_v4().to_string(),
            principal: self.principal,
            access_key_id: self.access_key_id,
            action: "baton:SignIn".to_owned(),
            resource: "*".to_owned(),
            decision: if ok { "allow" } else { "deny" }.to_owned(),
            outcome: self.outcome,
            status: self.status,
            source_ip: self.origin.peer.to_string(),
            reason: if ok {
                "the access key's secret matched".to_owned()
            } else {
                "the sign-in was refused".to_owned()
            },
            user_agent: self.origin.user_agent.clone(),
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for ScopedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedKey")
            .field("principal", &self.principal.arn)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What authentication keeps of an access key between requests.
#[derive(Clone)]
struct CachedKey {
    scoped: ScopedKey,
    fetched: Instant,
}

/// The error of an unknown access key or a wrong session token, as AWS words it.
pub fn invalid_token() -> ApiError {
    ApiError::UnrecognizedClient(
        "The security token included in the request is invalid.".to_owned(),
    )
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
    /// Counts the consumer reports this node has stored, so that live views (the console's
    /// propagation view) redraw when one arrives instead of polling.
    pub consumer_reports: tokio::sync::watch::Sender<u64>,
    /// The longest a watch waits; below the request timeout.
    pub watch_wait_max: Duration,
    /// How long the event log keeps events.
    pub events_retention: Duration,
    /// Wakes the delivery supervisor when subscriptions change.
    pub delivery_wake: tokio::sync::Notify,
    /// When this node last recorded a plain read of each secret (throttles the writes).
    pub(crate) plain_reads: crate::plain_reads::PlainReadThrottle,
    /// Writes those records, many per transaction.
    pub(crate) plain_read_writer: crate::coalesce::Coalescer<crate::coalesce::PlainReads>,
    /// Writes keyring fetches' consumer records, many per transaction.
    pub(crate) consumer_report_writer: crate::coalesce::Coalescer<crate::coalesce::ConsumerReports>,
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
    /// material never changes, so entries are never stale; the least used are evicted.
    pub(crate) parsed_keys:
        quick_cache::sync::Cache<(String, String), Arc<baton_crypto::kms::ParsedKey>>,
    /// Symmetric and HMAC KMS key versions' material, opened once (unwrapping the key's data
    /// key, then the version), by (key's secret id, version id); zeroized when evicted.
    pub(crate) opened_keys: quick_cache::sync::Cache<(String, String), Arc<SecretBytes>>,
}

impl std::fmt::Debug for Baton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baton")
            .field("account_id", &self.account_id)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

pub use crate::wire::now_ms;

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
            consumer_reports: tokio::sync::watch::Sender::new(0),
            watch_wait_max: Duration::from_secs(20),
            plain_reads: Default::default(),
            plain_read_writer: Default::default(),
            consumer_report_writer: Default::default(),
            events_retention: Duration::from_secs(30 * 24 * 3600),
            delivery_wake: tokio::sync::Notify::new(),
            account_id,
            regions,
            audit: None,
            allow_private_webhooks: false,
            command_rotators: Arc::default(),
            signing_keys: Mutex::new(HashMap::new()),
            parsed_keys: quick_cache::sync::Cache::new(crate::kms::PARSED_KEYS_MAX),
            opened_keys: quick_cache::sync::Cache::new(crate::kms::OPENED_KEYS_MAX),
        }
    }

    /// The SigV4 signing key of an access key for one credential scope, with what the
    /// front end checks besides the signature (expiry, session token). Derived keys are
    /// cached for `SIGNING_KEY_CACHE_TTL`; an unknown key is `UnrecognizedClient`.
    pub async fn signing_key(
        &self,
        access_key_id: &str,
        scope_date: &str,
        region: &str,
        service: &str,
    ) -> Result<ScopedKey, ApiError> {
        let cache_key = format!("{access_key_id}/{scope_date}/{region}/{service}");
        let cached = self
            .signing_keys
            .lock()
            .ok()
            .and_then(|cache| cache.get(&cache_key).cloned())
            .filter(|k| k.fetched.elapsed() < SIGNING_KEY_CACHE_TTL);
        if let Some(key) = cached {
            return Ok(key.scoped);
        }
        let record = self
            .store
            .find_access_key(access_key_id)
            .await?
            .ok_or_else(invalid_token)?;
        let secret = self.root_key.open(
            &record.sealed_secret,
            &access_key_aad(&record.access_key_id),
        )?;
        let scoped = ScopedKey {
            signing_key: baton_crypto::sigv4::signing_key(
                secret.expose(),
                scope_date,
                region,
                service,
            ),
            principal: self.load_principal(&record).await?,
            expires_at: record.expires_at,
            session_token_hash: record.session_token_hash.clone(),
        };
        if let Ok(mut cache) = self.signing_keys.lock() {
            if cache.len() >= SIGNING_KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                cache_key,
                CachedKey {
                    scoped: scoped.clone(),
                    fetched: Instant::now(),
                },
            );
        }
        Ok(scoped)
    }

    /// The caller a long-term access key and its secret stand for, checked without a
    /// signature: the console's sign-in. The secret is compared in constant time; a wrong
    /// secret and an unknown key give the same error. Temporary credentials (a rotation's,
    /// `GetSessionToken`'s) are refused: they belong to programs, not to people.
    ///
    /// Every attempt is audited (action `baton:SignIn`, the key's principal when the key
    /// exists); in required mode a sign-in the log cannot record is refused.
    pub async fn sign_in(
        &self,
        access_key_id: &str,
        secret: &SecretBytes,
        region: &str,
        origin: &crate::Origin,
    ) -> Result<Caller, ApiError> {
        if let Some(audit) = &self.audit {
            audit.admit()?;
        }
        let result = self.check_sign_in(access_key_id, secret, region).await;
        if let Some(audit) = &self.audit {
            let (outcome, status) = match &result {
                Ok(_) => ("ok".to_owned(), 200),
                Err(e) => {
                    let (status, error_type, _) = e.wire();
                    (error_type.to_owned(), i64::from(status.as_u16()))
                }
            };
            let entry = SignInAudit {
                principal: result
                    .as_ref()
                    .map(|c| c.principal.arn.clone())
                    .unwrap_or_default(),
                access_key_id: access_key_id.chars().take(128).collect(),
                outcome,
                status,
                origin,
            };
            audit.record(entry.into_record(), true).await?;
        }
        result
    }

    async fn check_sign_in(
        &self,
        access_key_id: &str,
        secret: &SecretBytes,
        region: &str,
    ) -> Result<Caller, ApiError> {
        let wrong = || {
            ApiError::UnrecognizedClient(
                "The access key ID or the secret access key is not valid.".to_owned(),
            )
        };
        let record = self
            .store
            .find_access_key(access_key_id)
            .await?
            .ok_or_else(wrong)?;
        let stored = self.root_key.open(
            &record.sealed_secret,
            &access_key_aad(&record.access_key_id),
        )?;
        if !stored.ct_eq(secret.expose()) {
            return Err(wrong());
        }
        if record.session_token_hash.is_some() || record.expires_at.is_some() {
            return Err(ApiError::UnrecognizedClient(
                "Temporary credentials cannot sign in; use a long-term access key.".to_owned(),
            ));
        }
        if !self.regions.iter().any(|r| r == region) {
            return Err(ApiError::InvalidParameter(format!(
                "This Baton serves {}, not {region}.",
                self.regions.join(", ")
            )));
        }
        let principal = self.load_principal(&record).await?;
        Ok(Caller::new(
            access_key_id,
            &self.account_id,
            region,
            principal,
        ))
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

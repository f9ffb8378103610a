//! The audit log: one entry per request (who, what, which resource, the decision, the result,
//! the source address and the time; never a value), appended in batches by one writer task and
//! chained with a MAC keyed from the root key, so that an edited, removed or reordered entry is
//! detected by `baton audit verify` and cannot be re-chained without the root key.
//!
//! In `required` mode (the default), a response waits until its entry is committed, and while
//! the log cannot be written every request is refused before it runs. In `best-effort` mode a
//! request never waits and entries that cannot be written are counted and dropped.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use baton_crypto::MacKey;
use baton_proto as p;
use baton_store::{AuditChain, AuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::wire::seconds;
use crate::{ApiError, Baton};

/// Entries waiting for the writer; a full queue slows requests down (required mode) or drops
/// entries (best-effort mode).
const QUEUE_DEPTH: usize = 65_536;
/// The most entries one transaction appends.
const BATCH_MAX: usize = 1024;
const LIST_MAX: i64 = 1000;
const VERIFY_MAX: i64 = 100_000;

/// What happens when the audit log cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    /// Refuse requests rather than serve them unaudited.
    Required,
    /// Serve requests; count and drop entries that cannot be written.
    BestEffort,
}

impl std::str::FromStr for AuditMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(Self::Required),
            "best-effort" => Ok(Self::BestEffort),
            other => Err(format!(
                "audit mode must be \"required\" or \"best-effort\", not {other:?}"
            )),
        }
    }
}

/// How the server keeps its audit log.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub mode: AuditMode,
    /// Also append each entry as a JSON line to this file.
    pub file: Option<PathBuf>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            mode: AuditMode::Required,
            file: None,
        }
    }
}

enum Message {
    Entry(Box<AuditRecord>, Option<oneshot::Sender<bool>>),
    Flush(oneshot::Sender<()>),
}

/// The server's handle on its audit log.
pub struct AuditLog {
    queue: mpsc::Sender<Message>,
    mode: AuditMode,
    healthy: Arc<AtomicBool>,
    /// The newest entry this node appended: a chain whose end is behind it was truncated.
    last_written: Arc<Mutex<Written>>,
    /// Set when an append landed at or below a position this node had written in that chain.
    truncated: Arc<Mutex<Option<Truncation>>>,
    key: Arc<MacKey>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The MAC of an entry given its predecessor's: covers every field and its position in its
/// chain, so an edited, moved or swapped entry no longer matches. The user agent (recorded
/// since schema 17) and the chain's name (since schema 22) are covered when not empty, so
/// entries written before keep their hashes: their position in the shared chain is the `seq`
/// they had. The whole log's `seq` is not covered; it only orders listings.
pub fn entry_hash(key: &MacKey, prev: &[u8], e: &AuditRecord) -> Vec<u8> {
    let (seq, at, status) = (
        e.chain_seq.to_be_bytes(),
        e.at.to_be_bytes(),
        e.status.to_be_bytes(),
    );
    let mut parts: Vec<&[u8]> = vec![
        b"baton-audit-v1",
        prev,
        &seq,
        &at,
        e.request_id.as_bytes(),
        e.principal.as_bytes(),
        e.access_key_id.as_bytes(),
        e.action.as_bytes(),
        e.resource.as_bytes(),
        e.decision.as_bytes(),
        e.outcome.as_bytes(),
        &status,
        e.source_ip.as_bytes(),
        e.reason.as_bytes(),
    ];
    if !e.user_agent.is_empty() {
        parts.extend([b"user-agent".as_slice(), e.user_agent.as_bytes()]);
    }
    if !e.chain.is_empty() {
        parts.extend([b"chain".as_slice(), e.chain.as_bytes()]);
    }
    key.mac(&parts)
}

fn json_line(e: &AuditRecord) -> String {
    serde_json::json!({
        "seq": e.seq,
        "chain": e.chain,
        "chain_seq": e.chain_seq,
        "time": jiff::Timestamp::from_millisecond(e.at).map(|t| t.to_string()).unwrap_or_default(),
        "request_id": e.request_id,
        "principal": e.principal,
        "access_key_id": e.access_key_id,
        "action": e.action,
        "resource": e.resource,
        "decision": e.decision,
        "outcome": e.outcome,
        "status": e.status,
        "source_ip": e.source_ip,
        "reason": e.reason,
        "user_agent": e.user_agent,
        "prev_hash": hex::encode(&e.prev_hash),
        "hash": hex::encode(&e.hash),
    })
    .to_string()
}

impl AuditLog {
    /// Starts the writer task with the chain's MAC key (see
    /// [`crate::root_keys::RootKeys::audit_chain_key`]). Must run inside a tokio runtime.
    pub fn start(store: Arc<dyn Store>, chain_key: MacKey, options: &AuditOptions) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let key = Arc::new(chain_key);
        let log = AuditLog {
            queue,
            mode: options.mode,
            healthy: Arc::new(AtomicBool::new(true)),
            last_written: Arc::new(Mutex::new(Written::default())),
            truncated: Arc::new(Mutex::new(None)),
            key: key.clone(),
        };
        let chain: AuditChain =
            Arc::new(move |prev: &[u8], e: &AuditRecord| entry_hash(&key, prev, e));
        let own = store.per_node_audit_chains().then(|| OwnChain {
            id: format!("node-{}", uuid::Uuid::new_v4().simple()),
            end: None,
            genesis: None,
        });
        tokio::spawn(writer(
            rx,
            store,
            Appender { chain, own },
            options.file.clone(),
            log.healthy.clone(),
            log.last_written.clone(),
            log.truncated.clone(),
        ));
        log
    }

    pub fn mode(&self) -> AuditMode {
        self.mode
    }

    /// Whether the last append succeeded: false while the log cannot be written.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// In required mode, refuses a request before it runs while the log cannot be written.
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.mode == AuditMode::Required && !self.healthy.load(Ordering::Acquire) {
            metrics::counter!("baton_audit_refusals_total", "when" => "before the request")
                .increment(1);
            return Err(ApiError::Internal(
                "The audit log cannot be written, and this Baton is configured to refuse \
                 requests it cannot audit. Check the database; requests resume when it accepts \
                 writes again."
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Queues an entry. In required mode (and when `wait`), returns once it is committed, or
    /// an error if it could not be.
    pub async fn record(&self, entry: AuditRecord, wait: bool) -> Result<(), ApiError> {
        let failed = || {
            ApiError::Internal(
                "The request's audit entry could not be written, so its response is withheld; \
                 the operation may or may not have taken effect. Retry it (with the same \
                 ClientRequestToken, where the operation takes one)."
                    .to_owned(),
            )
        };
        if self.mode == AuditMode::Required && wait {
            let (ack, done) = oneshot::channel();
            self.queue
                .send(Message::Entry(Box::new(entry), Some(ack)))
                .await
                .map_err(|_| failed())?;
            return match done.await {
                Ok(true) => Ok(()),
                _ => {
                    metrics::counter!("baton_audit_refusals_total", "when" => "answer withheld")
                        .increment(1);
                    Err(failed())
                }
            };
        }
        if self
            .queue
            .try_send(Message::Entry(Box::new(entry), None))
            .is_err()
        {
            metrics::counter!("baton_audit_dropped_total").increment(1);
            tracing::warn!("audit queue full; an entry was dropped (best-effort mode)");
        }
        Ok(())
    }

    /// Waits until every entry queued so far is written (or failed).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.queue.send(Message::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The newest entry a node appended: its chain, position and hash.
#[derive(Debug, Clone, Default)]
struct Written {
    chain: String,
    chain_seq: i64,
}

/// An append that landed at or below a position this node had already written in its chain.
#[derive(Debug, Clone)]
struct Truncation {
    chain: String,
    landed: i64,
    had: i64,
}

/// A node process's own chain, where several nodes share the store.
struct OwnChain {
    /// `node-` and a random UUID: new for each process, so no two writers share a chain.
    id: String,
    /// Where the chain ends as this writer left it; `None` before the first append and after
    /// a failed one, whose commit is unknown (the end is then read back).
    end: Option<(i64, Vec<u8>)>,
    /// The hash of the shared chain's entry that registered this chain; the chain's first
    /// entry links to it.
    genesis: Option<Vec<u8>>,
}

/// The pins a registration entry carries: for each chain, the end it had then.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Pins {
    pins: Vec<(String, i64, String)>,
}

fn pins_of(registration: &AuditRecord) -> Vec<(String, i64, String)> {
    serde_json::from_str::<Pins>(&registration.reason)
        .map(|p| p.pins)
        .unwrap_or_default()
}

/// Appends a batch where this node appends: the shared chain, or its own chain.
struct Appender {
    chain: AuditChain,
    own: Option<OwnChain>,
}

impl Appender {
    async fn append(
        &mut self,
        store: &dyn Store,
        mut entries: Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, baton_store::StoreError> {
        let Some(own) = self.own.as_mut() else {
            return store.append_audit(entries, self.chain.clone()).await;
        };
        let genesis = match &own.genesis {
            Some(hash) => hash.clone(),
            None => {
                let hash = register(store, &self.chain, &own.id).await?;
                own.genesis = Some(hash.clone());
                hash
            }
        };
        let (mut at, mut prev) = match own.end.take() {
            Some(end) => end,
            None => store
                .audit_chain_end(&own.id)
                .await?
                .unwrap_or((0, genesis)),
        };
        for e in &mut entries {
            at += 1;
            e.chain = own.id.clone();
            e.chain_seq = at;
            e.prev_hash = std::mem::take(&mut prev);
            e.hash = (self.chain)(&e.prev_hash, e);
            prev = e.hash.clone();
        }
        let stored = store.append_audit_chained(entries).await?;
        own.end = Some((at, prev));
        Ok(stored)
    }
}

/// Registers a node's chain in the shared chain: one entry naming it, which pins the end of
/// every chain that has grown since it was last pinned, so that entries cut off the end of a
/// chain whose node has stopped are still found by `verify`. Returns the entry's hash.
async fn register(
    store: &dyn Store,
    chain: &AuditChain,
    id: &str,
) -> Result<Vec<u8>, baton_store::StoreError> {
    let starts = store.audit_chain_starts().await?;
    let mut pinned: std::collections::HashMap<String, i64> = Default::default();
    for start in &starts {
        for (c, seq, _) in pins_of(start) {
            let at = pinned.entry(c).or_default();
            *at = (*at).max(seq);
        }
    }
    let mut pins = Pins::default();
    for (chain, seq, hash) in store.audit_chain_ends().await? {
        if !chain.is_empty() && seq > 0 && pinned.get(&chain).is_none_or(|p| *p < seq) {
            pins.pins.push((chain, seq, hex::encode(hash)));
        }
    }
    let entry = AuditRecord {
        at: crate::state::now_ms(),
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: "baton".to_owned(),
        action: baton_store::START_AUDIT_CHAIN.to_owned(),
        resource: id.to_owned(),
        decision: "none".to_owned(),
        outcome: "ok".to_owned(),
        status: 200,
        reason: serde_json::to_string(&pins).unwrap_or_default(),
        user_agent: "baton-node".to_owned(),
        ..Default::default()
    };
    let stored = store.append_audit(vec![entry], chain.clone()).await?;
    tracing::info!(
        chain = id,
        "this node appends its audit entries to a chain of its own"
    );
    Ok(stored
        .into_iter()
        .next()
        .map(|e| e.hash)
        .unwrap_or_default())
}

async fn writer(
    mut rx: mpsc::Receiver<Message>,
    store: Arc<dyn Store>,
    mut appender: Appender,
    file: Option<PathBuf>,
    healthy: Arc<AtomicBool>,
    last_written: Arc<Mutex<Written>>,
    truncated: Arc<Mutex<Option<Truncation>>>,
) {
    let mut sink = file.as_ref().and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| tracing::error!(path = %path.display(), error = %e, "cannot open the audit file"))
            .ok()
    });
    while let Some(first) = rx.recv().await {
        let mut entries = Vec::new();
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Message::Entry(e, ack) => {
                    entries.push(*e);
                    acks.extend(ack);
                }
                Message::Flush(ack) => flushes.push(ack),
            }
            if entries.len() < BATCH_MAX {
                next = rx.try_recv().ok();
            }
        }
        let ok = if entries.is_empty() {
            true
        } else {
            let count = entries.len();
            match appender.append(&*store, entries).await {
                Ok(stored) => {
                    if let (Some(first), Some(last)) = (stored.first(), stored.last())
                        && let Ok(mut mine) = last_written.lock()
                    {
                        // Positions in a chain only grow; a new entry at or below one this node
                        // already wrote means entries were cut off the end of its chain.
                        if first.chain == mine.chain && first.chain_seq <= mine.chain_seq {
                            tracing::error!(
                                chain = %first.chain,
                                written_up_to = mine.chain_seq,
                                appended_at = first.chain_seq,
                                "the audit log lost entries from its end; `baton audit verify` reports it"
                            );
                            if let Ok(mut t) = truncated.lock() {
                                t.get_or_insert(Truncation {
                                    chain: first.chain.clone(),
                                    landed: first.chain_seq,
                                    had: mine.chain_seq,
                                });
                            }
                        }
                        *mine = Written {
                            chain: last.chain.clone(),
                            chain_seq: last.chain_seq,
                        };
                    }
                    if let Some(file) = sink.as_mut() {
                        let mut text = String::new();
                        for e in &stored {
                            text.push_str(&json_line(e));
                            text.push('\n');
                        }
                        // The database is the log; the file is a copy. Its failure is logged,
                        // not a reason to refuse requests.
                        if let Err(e) = file.write_all(text.as_bytes()) {
                            metrics::counter!("baton_audit_file_errors_total").increment(1);
                            tracing::error!(error = %e, "writing the audit file failed");
                        }
                    }
                    metrics::counter!("baton_audit_entries_total").increment(count as u64);
                    true
                }
                Err(e) => {
                    metrics::counter!("baton_audit_failures_total").increment(count as u64);
                    tracing::error!(error = %e, entries = count, "appending to the audit log failed");
                    false
                }
            }
        };
        healthy.store(ok, Ordering::Release);
        for ack in acks {
            let _ = ack.send(ok);
        }
        for flush in flushes {
            let _ = flush.send(());
        }
    }
}

fn wire_entry(e: AuditRecord) -> p::AuditEntry {
    p::AuditEntry {
        seq: Some(e.seq),
        time: Some(seconds(e.at)),
        request_id: Some(e.request_id),
        principal: Some(e.principal),
        access_key_id: Some(e.access_key_id),
        action: Some(e.action),
        resource: Some(e.resource),
        decision: Some(e.decision),
        outcome: Some(e.outcome),
        status: Some(e.status),
        source_ip: Some(e.source_ip),
        reason: Some(e.reason),
        user_agent: Some(e.user_agent),
        prev_hash: Some(hex::encode(e.prev_hash)),
        hash: Some(hex::encode(e.hash)),
        chain: Some(e.chain),
        chain_seq: Some(e.chain_seq),
    }
}

fn page_size(value: Option<i64>, default: i64, max: i64) -> Result<u32, ApiError> {
    let n = value.unwrap_or(default);
    if !(1..=max).contains(&n) {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
             constraint: Member must have value between 1 and {max}"
        )));
    }
    Ok(n as u32)
}

impl Baton {
    /// One page of the log after `AfterSeq` (or, with a negative `AfterSeq`, of its last
    /// entries), filtered.
    pub async fn list_audit_entries(
        &self,
        req: p::ListAuditEntriesRequest,
    ) -> Result<p::ListAuditEntriesResponse, ApiError> {
        let limit = page_size(req.max_results, 100, LIST_MAX)?;
        // Read before the page, so an entry after a chain's end here is on the page or later.
        let ends = if req.include_chains == Some(true) || req.chain.is_some() {
            Some(self.store.audit_chain_ends().await?)
        } else {
            None
        };
        let rows = match &req.chain {
            None => {
                let after = match req.after_seq.unwrap_or(0) {
                    tail if tail < 0 => {
                        let last = self.store.last_audit().await?.map(|(s, _)| s).unwrap_or(0);
                        (last + tail).max(0)
                    }
                    after => after,
                };
                self.store.list_audit(after, limit).await?
            }
            Some(chain) => {
                let Some((_, end, _)) = ends.iter().flatten().find(|(c, _, _)| c == chain) else {
                    return Err(ApiError::Validation(format!(
                        "the audit log has no chain named {chain:?}"
                    )));
                };
                let after = match req.after_seq.unwrap_or(0) {
                    tail if tail < 0 => (end + tail).max(0),
                    after => after,
                };
                self.store.list_audit_chain(chain, after, limit).await?
            }
        };
        let scanned = rows.len() as i64;
        let next_seq = (rows.len() == limit as usize)
            .then(|| {
                rows.last().map(|e| {
                    if req.chain.is_some() {
                        e.chain_seq
                    } else {
                        e.seq
                    }
                })
            })
            .flatten();
        let since = req.since.map(|s| (s * 1000.0) as i64);
        let until = req.until.map(|s| (s * 1000.0) as i64);
        let entries = rows
            .into_iter()
            .filter(|e| {
                req.principal.as_ref().is_none_or(|p| &e.principal == p)
                    && req.decision.as_ref().is_none_or(|d| &e.decision == d)
                    && req
                        .action
                        .as_ref()
                        .is_none_or(|a| baton_iam::wildcard_match(a, &e.action, true))
                    && req
                        .resource
                        .as_ref()
                        .is_none_or(|r| baton_iam::wildcard_match(r, &e.resource, false))
                    && since.is_none_or(|s| e.at >= s)
                    && until.is_none_or(|u| e.at < u)
            })
            .map(wire_entry)
            .collect();
        Ok(p::ListAuditEntriesResponse {
            entries: Some(entries),
            next_seq,
            chains: ends
                .filter(|_| req.include_chains == Some(true))
                .map(|ends| {
                    ends.into_iter()
                        .map(|(chain, last, _)| p::AuditChainEnd {
                            chain: Some(chain),
                            last_seq: Some(last),
                            last_hash: None,
                        })
                        .collect()
                }),
            scanned: Some(scanned),
        })
    }

    /// Checks up to `MaxResults` entries from `AfterSeq` in `Chain` on, chain after chain:
    /// consecutive positions, each entry linked to its predecessor (a node chain's first entry
    /// to the shared chain's entry that registered it) and matching its MAC, and no chain
    /// ending before an end that a later registration pinned or that this node wrote.
    pub async fn verify_audit_log(
        &self,
        req: p::VerifyAuditLogRequest,
    ) -> Result<p::VerifyAuditLogResponse, ApiError> {
        let limit = page_size(req.max_results, 10_000, VERIFY_MAX)?;
        let Some(audit) = &self.audit else {
            return Err(ApiError::Internal(
                "this Baton has no audit log to verify".to_owned(),
            ));
        };
        let starts = self.store.audit_chain_starts().await?;
        let mut order: Vec<String> = vec![String::new()];
        let mut geneses: std::collections::HashMap<&str, Vec<&[u8]>> = Default::default();
        let mut pins: std::collections::HashMap<String, (i64, i64)> = Default::default();
        for start in &starts {
            if !order.contains(&start.resource) {
                order.push(start.resource.clone());
            }
            geneses
                .entry(start.resource.as_str())
                .or_default()
                .push(&start.hash);
            for (c, seq, _) in pins_of(start) {
                let pin = pins.entry(c).or_insert((0, start.chain_seq));
                if seq > pin.0 {
                    *pin = (seq, start.chain_seq);
                }
            }
        }
        let chain_name = req.chain.unwrap_or_default();
        let Some(mut at) = order.iter().position(|c| *c == chain_name) else {
            return Err(ApiError::Validation(format!(
                "the audit log has no chain named {chain_name:?}"
            )));
        };
        let mut after = req.after_seq.unwrap_or(0).max(0);
        let mut problems = Vec::new();
        let mut problem = |chain: &str, seq: i64, text: String| {
            problems.push(p::AuditProblem {
                seq: Some(seq),
                chain: Some(chain.to_owned()),
                problem: Some(text),
            })
        };
        if at == 0
            && after == 0
            && let Some(t) = audit.truncated.lock().ok().and_then(|t| t.clone())
        {
            problem(
                &t.chain,
                t.landed,
                format!(
                    "this node had written entries up to {}, then the chain's end was at {}: \
                     entries were removed from its end",
                    t.had,
                    t.landed - 1
                ),
            );
        }
        let key = &audit.key;
        let mut checked = 0usize;
        let mut prev_hash: Vec<u8>;
        let mut ends = Vec::new();
        let more = loop {
            let chain = order[at].as_str();
            prev_hash = Vec::new();
            let mut first_links: Vec<&[u8]> = Vec::new();
            if after > 0 {
                match self
                    .store
                    .list_audit_chain(chain, after - 1, 1)
                    .await?
                    .pop()
                {
                    Some(e) if e.chain_seq == after => prev_hash = e.hash,
                    _ => problem(
                        chain,
                        after,
                        format!("entry {after}, where this check starts, is missing"),
                    ),
                }
            } else if let Some(g) = geneses.get(chain) {
                first_links = g.clone();
            }
            let budget = limit - checked as u32;
            let rows = self.store.list_audit_chain(chain, after, budget).await?;
            let mut expected = after + 1;
            for e in &rows {
                if e.chain_seq != expected {
                    problem(
                        chain,
                        e.chain_seq,
                        format!(
                            "entries {expected} to {} are missing (removed)",
                            e.chain_seq - 1
                        ),
                    );
                }
                let links = if e.chain_seq == 1 && !first_links.is_empty() {
                    first_links
                        .iter()
                        .any(|g| baton_crypto::constant_time_eq(&e.prev_hash, g))
                } else {
                    baton_crypto::constant_time_eq(&e.prev_hash, &prev_hash)
                };
                if !links {
                    problem(
                        chain,
                        e.chain_seq,
                        "does not link to the entry before it (an entry was removed, inserted \
                         or moved)"
                            .to_owned(),
                    );
                }
                if !baton_crypto::constant_time_eq(&entry_hash(key, &e.prev_hash, e), &e.hash) {
                    problem(
                        chain,
                        e.chain_seq,
                        "its content does not match its MAC (the entry was edited or swapped)"
                            .to_owned(),
                    );
                }
                prev_hash = e.hash.clone();
                expected = e.chain_seq + 1;
            }
            checked += rows.len();
            let end = rows.last().map(|e| e.chain_seq).unwrap_or(after);
            after = end;
            if rows.len() == budget as usize {
                break true;
            }
            // The chain's end: a chain cannot show that entries were cut off its end, but a
            // later registration pinned where it ended then, and this node remembers the
            // newest entry it wrote.
            if let Some((pinned, by)) = pins.get(chain)
                && *pinned > end
            {
                problem(
                    chain,
                    end + 1,
                    format!(
                        "the chain ends at entry {end}, but it reached entry {pinned} when \
                         entry {by} of the shared chain was written (entries were removed \
                         from its end)"
                    ),
                );
            }
            let mine = audit
                .last_written
                .lock()
                .map(|g| g.clone())
                .unwrap_or_default();
            if mine.chain == chain && mine.chain_seq > end {
                problem(
                    chain,
                    end + 1,
                    format!(
                        "the chain ends at entry {end}, but this node wrote entries up to {} \
                         (entries were removed from its end)",
                        mine.chain_seq
                    ),
                );
            }
            ends.push(p::AuditChainEnd {
                chain: Some(chain.to_owned()),
                last_seq: Some(end),
                last_hash: Some(hex::encode(&prev_hash)),
            });
            if at + 1 == order.len() {
                break false;
            }
            at += 1;
            after = 0;
            if checked as u32 == limit {
                prev_hash = Vec::new();
                break true;
            }
        };
        Ok(p::VerifyAuditLogResponse {
            checked: Some(checked as i64),
            chain: Some(order[at].clone()),
            last_seq: Some(after),
            last_hash: Some(hex::encode(&prev_hash)),
            problems: Some(problems),
            more: Some(more),
            chains: Some(order.len() as i64),
            ends: Some(ends),
        })
    }
}

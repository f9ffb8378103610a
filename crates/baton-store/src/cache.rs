//! A write-through cache of secrets for the embedded engine, where this process is the only
//! writer (the data directory is locked), so every change passes through [`RecordCache::invalidate`].
//!
//! It is bounded in bytes and evicts (quick_cache's CLOCK-Pro, sharded, reads take a shard's
//! read lock), so a working set larger than the cache degrades to the uncached speed gradually
//! rather than at a cliff.
//!
//! Two maps: `records`, by secret id, holds each cached record with the lookup keys (name or
//! ARN) it was filled under; `aliases` maps a lookup key to a secret id. An alias is only a
//! hint: a lookup hits only if the record it leads to lists that key. Invalidation therefore
//! removes just the record, and an alias left behind (or evicted) costs at most a miss.
//!
//! A fill that raced with a write must not leave the old record behind. Every invalidation
//! bumps a generation, then removes its records; a reader notes the generation before it reads
//! the database, fills only if no invalidation happened since, and after inserting checks the
//! generation again, removing what it inserted if it moved. Either the writer's removal comes
//! after the reader's insert, or the reader's second check sees the writer's bump (both are
//! sequentially consistent), so a stale record never stays.
//!
//! PostgreSQL, where other nodes write to the same database, uses [`CheckedCache`] instead:
//! nothing invalidates it, and a hit is served only after the database confirmed that the
//! cached record is still the current one (see `postgres.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_core::SecretRecord;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// The default size of the cache: about 100,000 typical secrets (a record with two versions
/// weighs about 1 KiB here).
pub const CACHE_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;
/// The smallest cache accepted.
pub const CACHE_BYTES_MIN: u64 = 1024 * 1024;

/// The share of the budget given to aliases, which are small.
const ALIAS_SHARE: u64 = 8;

struct Entry {
    record: SecretRecord,
    /// The lookup keys this record was filled under while it was current.
    keys: Vec<String>,
    weight: u64,
}

#[derive(Clone)]
struct EntryWeight;

impl Weighter<Arc<str>, Arc<Entry>> for EntryWeight {
    fn weight(&self, _id: &Arc<str>, entry: &Arc<Entry>) -> u64 {
        entry.weight
    }
}

#[derive(Clone)]
struct AliasWeight;

impl Weighter<String, Arc<str>> for AliasWeight {
    fn weight(&self, key: &String, id: &Arc<str>) -> u64 {
        (key.len() + id.len() + 64) as u64
    }
}

/// Approximately the heap and inline bytes a cached record holds.
fn record_bytes(r: &SecretRecord, keys: &[String]) -> u64 {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let mut n = std::mem::size_of::<Entry>()
        + r.id.len()
        + r.account_id.len()
        + r.region.len()
        + r.name.len()
        + r.arn.len()
        + opt(&r.description)
        + opt(&r.kms_key_id)
        + opt(&r.resource_policy)
        + r.wrapped_data_key.len()
        + keys.iter().map(|k| k.len() + 24).sum::<usize>();
    n += r
        .tags
        .iter()
        .map(|t| t.key.len() + t.value.len() + 48)
        .sum::<usize>();
    n += r
        .versions
        .iter()
        .map(|v| {
            std::mem::size_of_val(v)
                + v.version_id.len()
                + v.sealed_value.len()
                + v.labels.iter().map(|l| l.len() + 48).sum::<usize>()
        })
        .sum::<usize>();
    n += r.replicas.len() * 128;
    if r.rotation_state.is_some() || r.rotation_policy.is_some() || r.key.is_some() {
        n += 512;
    }
    n as u64
}

pub(crate) struct RecordCache {
    generation: AtomicU64,
    records: Cache<Arc<str>, Arc<Entry>, EntryWeight>,
    aliases: Cache<String, Arc<str>, AliasWeight>,
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache::with_bytes(CACHE_BYTES_DEFAULT)
    }
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCache")
    }
}

pub(crate) fn name_key(account_id: &str, region: &str, name: &str) -> String {
    format!("name\u{0}{account_id}\u{0}{region}\u{0}{name}")
}

pub(crate) fn arn_key(arn: &str) -> String {
    format!("arn\u{0}{arn}")
}

impl RecordCache {
    /// A cache of about `bytes` (at least [`CACHE_BYTES_MIN`]).
    pub(crate) fn with_bytes(bytes: u64) -> Self {
        let bytes = bytes.max(CACHE_BYTES_MIN);
        let alias_bytes = bytes / ALIAS_SHARE;
        let record_bytes = bytes - alias_bytes;
        RecordCache {
            generation: AtomicU64::new(0),
            records: Cache::with_weighter(
                (record_bytes / 1024) as usize,
                record_bytes,
                EntryWeight,
            ),
            aliases: Cache::with_weighter((alias_bytes / 160) as usize, alias_bytes, AliasWeight),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<SecretRecord> {
        let id = self.aliases.get(key)?;
        let entry = self.records.get(&*id)?;
        entry
            .keys
            .iter()
            .any(|k| k == key)
            .then(|| entry.record.clone())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches `record` under `key`, unless a write happened since `generation` was read.
    pub(crate) fn fill(&self, key: String, record: &SecretRecord, generation: u64) {
        if self.generation() != generation {
            return;
        }
        let id: Arc<str> = Arc::from(record.id.as_str());
        // A record still cached is current (a write would have removed it), so the keys it
        // was filled under still lead to it.
        let mut keys = match self.records.peek(&*id) {
            Some(cached) if cached.record.revision == record.revision => cached.keys.clone(),
            _ => Vec::new(),
        };
        if !keys.contains(&key) {
            keys.push(key.clone());
        }
        let weight = record_bytes(record, &keys);
        self.records.insert(
            id.clone(),
            Arc::new(Entry {
                record: record.clone(),
                keys,
                weight,
            }),
        );
        self.aliases.insert(key, id.clone());
        if self.generation() != generation {
            self.records.remove(&*id);
        }
    }

    /// Forgets every entry (after a restore replaced the store's content).
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.records.clear();
        self.aliases.clear();
    }

    /// Forgets every entry of these secrets. Called after each write commits (or fails).
    pub(crate) fn invalidate(&self, secret_ids: &[&str]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for id in secret_ids {
            self.records.remove(*id);
        }
    }

    /// Bytes held by cached records and aliases, by the cache's own accounting.
    pub(crate) fn weight(&self) -> u64 {
        self.records.weight() + self.aliases.weight()
    }

    /// Records cached.
    pub(crate) fn records(&self) -> usize {
        self.records.len()
    }
}

/// A record a node cached from PostgreSQL, with what identifies its content: the secret's id
/// and revision (every write of a secret raises its revision in the same transaction) and the
/// database's incarnation (new after a restore or a migration, which can bring back an id at
/// a revision it had before with other content).
pub(crate) struct Checked {
    pub(crate) record: SecretRecord,
    pub(crate) incarnation: String,
    weight: u64,
}

impl Checked {
    /// Whether the database's current `(id, revision, incarnation)` for the lookup key is the
    /// cached record's.
    pub(crate) fn is_current(&self, id: &str, revision: i64, incarnation: Option<&str>) -> bool {
        self.record.id == id
            && self.record.revision == revision
            && incarnation == Some(self.incarnation.as_str())
    }
}

#[derive(Clone)]
struct CheckedWeight;

impl Weighter<String, Arc<Checked>> for CheckedWeight {
    fn weight(&self, key: &String, entry: &Arc<Checked>) -> u64 {
        key.len() as u64 + entry.weight
    }
}

/// A byte-bounded, evicting map from lookup key (name or ARN) to the record last read under
/// it. It is never invalidated: its user checks each hit against the database.
pub(crate) struct CheckedCache {
    entries: Cache<String, Arc<Checked>, CheckedWeight>,
}

impl CheckedCache {
    /// A cache of about `bytes` (at least [`CACHE_BYTES_MIN`]).
    pub(crate) fn with_bytes(bytes: u64) -> Self {
        let bytes = bytes.max(CACHE_BYTES_MIN);
        CheckedCache {
            entries: Cache::with_weighter((bytes / 1024) as usize, bytes, CheckedWeight),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Checked>> {
        self.entries.get(key)
    }

    /// Caches `record` under `key`, as read in one snapshot with `incarnation`.
    pub(crate) fn fill(&self, key: String, record: &SecretRecord, incarnation: String) {
        let weight = record_bytes(record, &[]) + incarnation.len() as u64;
        self.entries.insert(
            key,
            Arc::new(Checked {
                record: record.clone(),
                incarnation,
                weight,
            }),
        );
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    /// Bytes held, by the cache's own accounting.
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }

    /// Lookup keys cached (a secret read by name and by ARN counts twice).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::conformance::sample_secret;

    #[test]
    fn a_fill_that_raced_with_a_write_is_dropped() {
        let cache = RecordCache::default();
        let secret = sample_secret("cached");
        let before_read = cache.generation();
        cache.invalidate(&[&secret.id]);
        cache.fill(arn_key(&secret.arn), &secret, before_read);
        assert!(cache.get(&arn_key(&secret.arn)).is_none());
    }

    #[test]
    fn invalidation_removes_every_key_of_the_secret() {
        let cache = RecordCache::default();
        let secret = sample_secret("cached");
        let generation = cache.generation();
        let by_name = name_key(&secret.account_id, &secret.region, &secret.name);
        cache.fill(by_name.clone(), &secret, generation);
        cache.fill(arn_key(&secret.arn), &secret, generation);
        assert_eq!(cache.get(&by_name), Some(secret.clone()));
        assert_eq!(cache.get(&arn_key(&secret.arn)), Some(secret.clone()));
        cache.invalidate(&[&secret.id]);
        assert!(cache.get(&by_name).is_none());
        assert!(cache.get(&arn_key(&secret.arn)).is_none());
    }

    #[test]
    fn a_full_cache_evicts_some_entries_and_keeps_the_rest() {
        let cache = RecordCache::with_bytes(CACHE_BYTES_MIN);
        let secrets: Vec<SecretRecord> = (0..5_000)
            .map(|i| sample_secret(&format!("s{i}")))
            .collect();
        let per_record = record_bytes(&secrets[0], &[arn_key(&secrets[0].arn)]);
        for s in &secrets {
            cache.fill(arn_key(&s.arn), s, cache.generation());
        }
        assert!(
            cache.weight() <= CACHE_BYTES_MIN,
            "{} bytes held",
            cache.weight()
        );
        // Full means close to the budget, never emptied: at least half of what fits stays.
        let fits = (CACHE_BYTES_MIN - CACHE_BYTES_MIN / ALIAS_SHARE) / per_record;
        assert!(fits < 5_000, "the test must overfill the cache");
        assert!(
            cache.records() as u64 >= fits / 2,
            "{} records of {fits} that fit",
            cache.records()
        );
        let hits = secrets
            .iter()
            .filter(|s| cache.get(&arn_key(&s.arn)).as_ref() == Some(*s))
            .count();
        assert!(hits as u64 >= fits / 2, "{hits} hits");
    }

    /// A store the model reads: lookup keys lead to secret ids, ids to records.
    #[derive(Default)]
    struct Model {
        keys: HashMap<String, usize>,
        records: HashMap<usize, SecretRecord>,
    }

    impl Model {
        fn read(&self, key: &str) -> Option<SecretRecord> {
            self.keys
                .get(key)
                .and_then(|id| self.records.get(id))
                .cloned()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A reader notes the generation and reads the store for this key.
        BeginRead(usize),
        /// The n-th unfinished read (modulo their number) fills the cache.
        FinishRead(usize),
        /// A write changes this secret.
        Write(usize),
        /// This key now leads to that secret (a deletion and re-creation, or a replica moving):
        /// the write touches both secrets.
        Move(usize, usize),
        /// A lookup: a hit must equal the store's current answer.
        Get(usize),
    }

    const KEYS: usize = 6;
    const SECRETS: usize = 4;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..KEYS).prop_map(Op::BeginRead),
            3 => any::<usize>().prop_map(Op::FinishRead),
            2 => (0..SECRETS).prop_map(Op::Write),
            1 => (0..KEYS, 0..SECRETS).prop_map(|(k, s)| Op::Move(k, s)),
            4 => (0..KEYS).prop_map(Op::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_hit_always_equals_the_store(ops in proptest::collection::vec(op(), 1..120)) {
            let cache = RecordCache::with_bytes(CACHE_BYTES_MIN);
            let mut model = Model::default();
            let secrets: Vec<SecretRecord> =
                (0..SECRETS).map(|i| sample_secret(&format!("m{i}"))).collect();
            let key = |k: usize| format!("key-{k}");
            for (i, s) in secrets.iter().enumerate() {
                model.records.insert(i, s.clone());
            }
            for k in 0..KEYS {
                model.keys.insert(key(k), k % SECRETS);
            }
            let mut pending: Vec<(String, u64, Option<SecretRecord>)> = Vec::new();
            for op in ops {
                match op {
                    Op::BeginRead(k) => {
                        let generation = cache.generation();
                        pending.push((key(k), generation, model.read(&key(k))));
                    }
                    Op::FinishRead(n) => {
                        if !pending.is_empty() {
                            let (k, generation, found) = pending.remove(n % pending.len());
                            if let Some(record) = found {
                                cache.fill(k, &record, generation);
                            }
                        }
                    }
                    Op::Write(s) => {
                        let record = model.records.get_mut(&s).unwrap();
                        record.revision += 1;
                        record.description = Some(format!("revision {}", record.revision));
                        cache.invalidate(&[&secrets[s].id]);
                    }
                    Op::Move(k, s) => {
                        let before = model.keys.insert(key(k), s).unwrap();
                        cache.invalidate(&[&secrets[before].id, &secrets[s].id]);
                    }
                    Op::Get(k) => {
                        if let Some(hit) = cache.get(&key(k)) {
                            prop_assert_eq!(Some(hit), model.read(&key(k)));
                        }
                    }
                }
            }
        }
    }
}

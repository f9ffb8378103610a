//! A write-through cache of secrets for the embedded engine, where this process is the only
//! writer (the data directory is locked), so every change passes through [`RecordCache::invalidate`].
//!
//! A fill that raced with a write must not leave the old record behind. Every invalidation
//! bumps a generation; a reader notes the generation before it reads the database and fills
//! only if no invalidation happened since. A stale fill that slipped in before the writer's
//! invalidation is removed by that invalidation.
//!
//! PostgreSQL does not use it: other nodes write to the same database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_core::SecretRecord;

/// Entries held at most; a full cache is emptied and refills with what is read.
const ENTRIES_MAX: usize = 10_000;

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<String, Arc<SecretRecord>>,
    keys_by_id: HashMap<String, Vec<String>>,
}

#[derive(Default)]
pub(crate) struct RecordCache {
    inner: Mutex<Inner>,
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
    pub(crate) fn get(&self, key: &str) -> Option<SecretRecord> {
        let inner = self.inner.lock().ok()?;
        inner
            .entries
            .get(key)
            .map(|record| SecretRecord::clone(record))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.inner.lock().map(|i| i.generation).unwrap_or(u64::MAX)
    }

    /// Caches `record` under `key`, unless a write happened since `generation` was read.
    pub(crate) fn fill(&self, key: String, record: &SecretRecord, generation: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= ENTRIES_MAX {
            inner.entries.clear();
            inner.keys_by_id.clear();
        }
        inner
            .keys_by_id
            .entry(record.id.clone())
            .or_default()
            .push(key.clone());
        inner.entries.insert(key, Arc::new(record.clone()));
    }

    /// Forgets every entry (after a restore replaced the store's content).
    pub(crate) fn clear(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        inner.entries.clear();
        inner.keys_by_id.clear();
    }

    /// Forgets every entry of these secrets. Called after each write commits (or fails).
    pub(crate) fn invalidate(&self, secret_ids: &[&str]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        for id in secret_ids {
            for key in inner.keys_by_id.remove(*id).unwrap_or_default() {
                inner.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        cache.invalidate(&[&secret.id]);
        assert!(cache.get(&by_name).is_none());
        assert!(cache.get(&arn_key(&secret.arn)).is_none());
    }
}

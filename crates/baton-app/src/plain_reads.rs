//! The per-node throttle of plain-read records: at most one record per secret per
//! `PLAIN_READ_RECORD_INTERVAL_MS`, and no read answered before a record that covers it has
//! committed. A read that finds another read's record still being written waits for that
//! commit rather than answering at once.

use std::collections::HashMap;
use std::sync::Mutex;

use baton_core::Timestamp;
use baton_core::rotation::PLAIN_READ_RECORD_INTERVAL_MS;
use tokio::sync::watch;

/// Entries kept before the throttle forgets them all (each costs a later read one record).
const MAX_ENTRIES: usize = 100_000;

/// What a plain read must do before it is answered.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Write the record; then report the outcome with [`PlainReadThrottle::written`].
    Record(Recording),
    /// A record of this secret written at most one interval ago covers this read: wait until it
    /// has committed ([`committed`]).
    Covered(watch::Receiver<bool>),
}

/// A record this read is writing; dropping it unreported counts as a failure.
#[derive(Debug)]
pub(crate) struct Recording {
    at: Timestamp,
    done: watch::Sender<bool>,
}

#[derive(Debug)]
struct Entry {
    at: Timestamp,
    committed: watch::Receiver<bool>,
}

/// When this node last recorded a plain read of each secret, and whether that record has
/// committed.
#[derive(Debug, Default)]
pub(crate) struct PlainReadThrottle {
    recorded: Mutex<HashMap<String, Entry>>,
}

impl PlainReadThrottle {
    /// What a plain read of `secret_id` at `now` must do.
    pub(crate) fn claim(&self, secret_id: &str, now: Timestamp) -> Claim {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = recorded.get(secret_id)
            && now - entry.at < PLAIN_READ_RECORD_INTERVAL_MS
        {
            return Claim::Covered(entry.committed.clone());
        }
        if recorded.len() >= MAX_ENTRIES {
            recorded.clear();
        }
        let (done, committed) = watch::channel(false);
        recorded.insert(secret_id.to_owned(), Entry { at: now, committed });
        Claim::Record(Recording { at: now, done })
    }

    /// The outcome of a record: a committed one releases the reads it covers; a failed one is
    /// forgotten, so the next read writes again, and the reads waiting on it go on unrecorded,
    /// as the read that wrote it does.
    pub(crate) fn written(&self, secret_id: &str, recording: Recording, committed: bool) {
        if committed {
            recording.done.send_replace(true);
            return;
        }
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded
            .get(secret_id)
            .is_some_and(|e| e.at == recording.at)
        {
            recorded.remove(secret_id);
        }
    }
}

/// Waits until the covering record has committed: `false` if it failed.
pub(crate) async fn committed(mut covered: watch::Receiver<bool>) -> bool {
    covered.wait_for(|c| *c).await.is_ok()
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn recording(claim: Claim) -> Recording {
        match claim {
            Claim::Record(r) => r,
            Claim::Covered(_) => panic!("expected to record"),
        }
    }

    fn covered(claim: Claim) -> watch::Receiver<bool> {
        match claim {
            Claim::Covered(c) => c,
            Claim::Record(_) => panic!("expected to be covered"),
        }
    }

    #[tokio::test]
    async fn a_read_covered_by_a_record_in_flight_waits_for_its_commit() {
        let throttle = PlainReadThrottle::default();
        let first = recording(throttle.claim("s", 1_000));
        let mut waiting = Box::pin(committed(covered(throttle.claim("s", 1_001))));
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "answered before the record committed"
        );
        throttle.written("s", first, true);
        assert!(waiting.await);
        // Once committed, a covered read goes on at once.
        assert!(committed(covered(throttle.claim("s", 1_002))).await);
    }

    #[tokio::test]
    async fn a_failed_record_releases_its_waiters_as_unrecorded_and_is_written_again() {
        let throttle = PlainReadThrottle::default();
        let first = recording(throttle.claim("s", 1_000));
        let waiting = covered(throttle.claim("s", 1_001));
        throttle.written("s", first, false);
        assert!(!committed(waiting).await);
        let again = recording(throttle.claim("s", 1_002));
        throttle.written("s", again, true);
    }

    #[test]
    fn each_secret_records_once_per_interval() {
        let throttle = PlainReadThrottle::default();
        let first = recording(throttle.claim("s", 0));
        throttle.written("s", first, true);
        covered(throttle.claim("s", PLAIN_READ_RECORD_INTERVAL_MS - 1));
        recording(throttle.claim("other", 1));
        recording(throttle.claim("s", PLAIN_READ_RECORD_INTERVAL_MS));
    }

    #[test]
    fn a_stale_failure_does_not_forget_a_newer_record() {
        let throttle = PlainReadThrottle::default();
        let old = recording(throttle.claim("s", 0));
        let new = recording(throttle.claim("s", PLAIN_READ_RECORD_INTERVAL_MS));
        throttle.written("s", old, false);
        covered(throttle.claim("s", PLAIN_READ_RECORD_INTERVAL_MS + 1));
        throttle.written("s", new, true);
    }
}

//! In-process notification of committed changes to secrets, for long-poll watchers.
//!
//! Every engine publishes a secret's id after each commit that changed it. A watcher subscribes
//! to the ids it cares about and sleeps until one of them is published: no database polling,
//! and a change wakes only the watchers of that secret. A channel exists only while someone
//! watches its secret; publishing to a secret nobody watches costs one map lookup.
//!
//! Publications carry no data. A woken watcher reads the secret again, so a publication that
//! races with a subscription can cause one spurious wake-up but never a missed change, provided
//! the watcher subscribes before it compares revisions.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub struct ChangeFeed {
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Woken by every publication: for workers that follow the whole event log.
    any: tokio::sync::Notify,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("watched_secrets", &self.watched_secrets())
            .finish()
    }
}

impl ChangeFeed {
    /// A receiver that changes whenever `secret_id` is published. Subscribe first, then read
    /// the state to compare with: a change committed in between still wakes the receiver.
    pub fn subscribe(&self, secret_id: &str) -> watch::Receiver<u64> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        match channels.get(secret_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                channels.insert(secret_id.to_owned(), sender);
                receiver
            }
        }
    }

    /// Completes at the next publication of any secret.
    pub fn any_change(&self) -> tokio::sync::futures::Notified<'_> {
        self.any.notified()
    }

    /// Wakes every watcher of `secret_id`. Channels whose watchers all left are dropped here.
    pub fn publish(&self, secret_id: &str) {
        self.any.notify_waiters();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = channels.get(secret_id) {
            if sender.receiver_count() == 0 {
                channels.remove(secret_id);
            } else {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every watcher: after a gap in notifications from other nodes (a reconnect), when
    /// any secret may have changed unseen. Watchers re-read, so this costs a read each.
    pub fn publish_all(&self) {
        self.any.notify_waiters();
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for sender in channels.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Drops channels nobody watches any more; for a periodic sweep.
    pub fn sweep(&self) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, sender| sender.receiver_count() > 0);
    }

    /// How many secrets have a channel (watched now, or until the next sweep or publication).
    pub fn watched_secrets(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publication_wakes_the_watchers_of_that_secret_only() {
        let feed = ChangeFeed::default();
        let mut a1 = feed.subscribe("a");
        let a2 = feed.subscribe("a");
        let mut b = feed.subscribe("b");
        feed.publish("a");
        assert!(a1.has_changed().unwrap());
        assert!(a2.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a1.changed().await.unwrap();
        assert!(!a1.has_changed().unwrap());
        b.mark_unchanged();
    }

    #[test]
    fn channels_without_watchers_are_dropped() {
        let feed = ChangeFeed::default();
        let watcher = feed.subscribe("a");
        drop(feed.subscribe("b"));
        assert_eq!(feed.watched_secrets(), 2);
        feed.publish("b");
        assert_eq!(feed.watched_secrets(), 1);
        drop(watcher);
        feed.sweep();
        assert_eq!(feed.watched_secrets(), 0);
        // Publishing to a secret nobody watches creates nothing.
        feed.publish("c");
        assert_eq!(feed.watched_secrets(), 0);
    }
}

//! Group commit for small writes that many requests make at once: one writer task per kind
//! takes every item that arrived while its previous transaction ran and writes them in one,
//! so N concurrent requests cost one commit (one fsync) instead of N. Each request still
//! waits for its own item's outcome, so an answer never goes out before its write is durable.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use baton_store::{ConsumerRecord, ConsumerWrite, Store};
use tokio::sync::{mpsc, oneshot};

/// The most items one transaction writes.
const BATCH_MAX: usize = 1024;

/// A kind of write that can be grouped.
pub(crate) trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Outcome: Send + 'static;
    /// The metric label of this kind.
    const NAME: &'static str;
    /// Writes `items` (in as few transactions as it can) and returns each item's outcome, in
    /// order.
    fn write(
        store: Arc<dyn Store>,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Vec<Self::Outcome>> + Send;
}

type Queued<B> = (<B as Batch>::Item, oneshot::Sender<<B as Batch>::Outcome>);

/// The queue of one kind of write; its writer starts with the first item.
pub(crate) struct Coalescer<B: Batch> {
    queue: OnceLock<mpsc::UnboundedSender<Queued<B>>>,
}

impl<B: Batch> Default for Coalescer<B> {
    fn default() -> Self {
        Coalescer {
            queue: OnceLock::new(),
        }
    }
}

impl<B: Batch> std::fmt::Debug for Coalescer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").field("kind", &B::NAME).finish()
    }
}

impl<B: Batch> Coalescer<B> {
    /// Queues `item` and waits for its outcome; `None` if the writer is gone (the runtime is
    /// shutting down). Must run inside a tokio runtime.
    pub(crate) async fn write(&self, store: &Arc<dyn Store>, item: B::Item) -> Option<B::Outcome> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer::<B>(store.clone(), rx));
            tx
        });
        let (done, outcome) = oneshot::channel();
        queue.send((item, done)).ok()?;
        outcome.await.ok()
    }
}

async fn writer<B: Batch>(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Queued<B>>) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, BATCH_MAX).await > 0 {
        let (items, waiting): (Vec<_>, Vec<_>) = queued.drain(..).unzip();
        metrics::histogram!("baton_write_batch_size", "kind" => B::NAME).record(items.len() as f64);
        for (outcome, done) in B::write(store.clone(), items)
            .await
            .into_iter()
            .zip(waiting)
        {
            let _ = done.send(outcome);
        }
    }
}

/// Plain reads: `(secret id, read at)`.
pub(crate) struct PlainReads;

impl Batch for PlainReads {
    type Item = (String, i64);
    type Outcome = Result<(), String>;
    const NAME: &'static str = "plain_read";

    async fn write(store: Arc<dyn Store>, items: Vec<Self::Item>) -> Vec<Self::Outcome> {
        let result = store
            .record_plain_reads(&items)
            .await
            .map_err(|e| e.to_string());
        vec![result; items.len()]
    }
}

/// Consumers' reports of what they hold, each written on its own terms: a record owned by
/// another principal is refused without holding back the others.
pub(crate) struct ConsumerReports;

impl Batch for ConsumerReports {
    type Item = ConsumerRecord;
    /// Whether it was written (`Ok(false)`: another principal owns that consumer).
    type Outcome = Result<bool, String>;
    const NAME: &'static str = "consumer_report";

    async fn write(store: Arc<dyn Store>, items: Vec<Self::Item>) -> Vec<Self::Outcome> {
        let mut outcomes: Vec<Self::Outcome> = vec![Ok(true); items.len()];
        // A refused record rolls back its whole batch: set it aside and write the rest again.
        // Refusals are rare, so this is nearly always one transaction.
        let mut pending: Vec<usize> = (0..items.len()).collect();
        while !pending.is_empty() {
            let batch: Vec<ConsumerRecord> = pending.iter().map(|&i| items[i].clone()).collect();
            match store.upsert_consumers(&batch).await {
                Ok(ConsumerWrite::Written) => break,
                Ok(ConsumerWrite::OwnedByAnother(at)) => {
                    outcomes[pending.remove(at)] = Ok(false);
                }
                Err(e) => {
                    for i in pending {
                        outcomes[i] = Err(e.to_string());
                    }
                    break;
                }
            }
        }
        outcomes
    }
}

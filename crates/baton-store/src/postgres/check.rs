//! Coalesced checks of cached secrets.
//!
//! A read that finds its secret in the node's cache first asks the database for the secret's
//! id, revision and the database's incarnation (see the parent module). Reads that arrive while
//! such a statement is in flight wait for it to end and go together in the next one, each key
//! once, so a busy node sends one statement per round trip instead of one per read, as group
//! commit does for writes.
//!
//! A read is never answered by a statement sent before the read asked: a request joins only a
//! batch that has not been sent, so the statement that answers it takes its snapshot after the
//! read began, and every write committed before then is seen. That is read-after-write across
//! nodes, the guarantee the cache must keep.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{backend, pool_error};
use crate::StoreError;

/// The most distinct keys one statement checks.
const KEYS_MAX: usize = 1024;
/// The most waiting reads one statement answers (several may ask for one key).
const READS_MAX: usize = 4096;

/// Checks every key of a batch in one statement and one snapshot: names by the namespace's
/// unique index, ARNs by theirs. `k.i` tells which key a row answers (positive for names,
/// negative for ARNs), since a key with no secret returns no row.
const CHECK_BATCH: &str = "\
    SELECT k.i, s.id, s.revision, (SELECT value FROM store_incarnation) \
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(account_id, region, name, i) \
    JOIN secrets s ON s.account_id = k.account_id AND s.region = k.region AND s.name = k.name \
    UNION ALL \
    SELECT -k.i, s.id, s.revision, (SELECT value FROM store_incarnation) \
    FROM unnest($4::text[]) WITH ORDINALITY AS k(arn, i) \
    JOIN secrets s ON s.arn = k.arn";

/// What a cached record was looked up by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CheckKey {
    Name {
        account_id: String,
        region: String,
        name: String,
    },
    Arn(String),
}

/// The database's current id, revision and incarnation for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Current {
    pub(crate) id: String,
    pub(crate) revision: i64,
    pub(crate) incarnation: Option<String>,
}

/// `None` when no secret has the key; the error is the database's, as text, since one failure
/// answers every read of its batch.
type Answer = Result<Option<Current>, String>;

struct Request {
    key: CheckKey,
    answer: oneshot::Sender<Answer>,
}

/// The handle on a node's checker task.
pub(crate) struct Checker {
    queue: mpsc::Sender<Request>,
    pool: Pool,
}

impl Checker {
    /// Starts the task that runs the batches. Must run inside a tokio runtime.
    pub(crate) fn start(pool: Pool) -> Self {
        let (queue, requests) = mpsc::channel(READS_MAX);
        tokio::spawn(run(pool.clone(), requests));
        Checker { queue, pool }
    }

    /// The database's current id, revision and incarnation for `key`, from a statement sent
    /// after this call began.
    pub(crate) async fn check(&self, key: CheckKey) -> Result<Option<Current>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let asked = self.queue.send(Request { key, answer }).await;
        let answer = match asked {
            Ok(()) => answered.await.ok(),
            Err(mpsc::error::SendError(request)) => {
                // The task is gone (its runtime ended): check alone.
                return Ok(check_batch(&self.pool, std::slice::from_ref(&request.key))
                    .await
                    .map_err(StoreError::Backend)?
                    .remove(&request.key));
            }
        };
        match answer {
            Some(answer) => answer.map_err(StoreError::Backend),
            None => Err(StoreError::Backend(
                "the check of cached secrets stopped".to_owned(),
            )),
        }
    }
}

async fn run(pool: Pool, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut waiting: HashMap<CheckKey, Vec<oneshot::Sender<Answer>>> = HashMap::new();
        waiting.entry(first.key).or_default().push(first.answer);
        let mut reads = 1;
        // Everything that asked while the previous statement ran goes in this one.
        while waiting.len() < KEYS_MAX && reads < READS_MAX {
            let Ok(request) = requests.try_recv() else {
                break;
            };
            waiting.entry(request.key).or_default().push(request.answer);
            reads += 1;
        }
        let keys: Vec<CheckKey> = waiting.keys().cloned().collect();
        match check_batch(&pool, &keys).await {
            Ok(mut found) => {
                for (key, answers) in waiting {
                    let current = found.remove(&key);
                    for answer in answers {
                        let _ = answer.send(Ok(current.clone()));
                    }
                }
            }
            Err(reason) => {
                for answer in waiting.into_values().flatten() {
                    let _ = answer.send(Err(reason.clone()));
                }
            }
        }
    }
}

/// One statement for every key; keys with no secret are absent from the map.
async fn check_batch(pool: &Pool, keys: &[CheckKey]) -> Result<HashMap<CheckKey, Current>, String> {
    let text = |e: StoreError| match e {
        StoreError::Backend(reason) => reason,
        other => other.to_string(),
    };
    let client = pool.get().await.map_err(|e| text(pool_error(e)))?;
    let statement = client
        .prepare_cached(CHECK_BATCH)
        .await
        .map_err(|e| text(backend(e)))?;
    let (mut accounts, mut regions, mut names, mut arns) = (vec![], vec![], vec![], vec![]);
    let (mut by_name, mut by_arn) = (vec![], vec![]);
    for key in keys {
        match key {
            CheckKey::Name {
                account_id,
                region,
                name,
            } => {
                accounts.push(account_id.as_str());
                regions.push(region.as_str());
                names.push(name.as_str());
                by_name.push(key);
            }
            CheckKey::Arn(arn) => {
                arns.push(arn.as_str());
                by_arn.push(key);
            }
        }
    }
    let rows = client
        .query(&statement, &[&accounts, &regions, &names, &arns])
        .await
        .map_err(|e| text(backend(e)))?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        let ordinal: i64 = row.get(0);
        let key = match ordinal {
            1.. => by_name.get(ordinal as usize - 1),
            ..0 => by_arn.get(ordinal.unsigned_abs() as usize - 1),
            0 => None,
        };
        if let Some(key) = key {
            let current = Current {
                id: row.get(1),
                revision: row.get(2),
                incarnation: row.get(3),
            };
            found.insert((*key).clone(), current);
        }
    }
    Ok(found)
}

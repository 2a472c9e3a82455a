//! Group commit for step outcomes, the engine's hottest write.
//!
//! Runners hand their outcomes to one writer task. It takes whatever has queued up (up to
//! [`MAX_BATCH`]) and writes it in one transaction, each outcome inside its own SAVEPOINT so
//! a stale fence (or any error) undoes that outcome alone. Every caller gets its reply only
//! after the transaction committed, so durability is exactly that of a commit per step; what
//! is shared is the cost of BEGIN/COMMIT and of writing the same pages again. Under light
//! load a batch is one outcome and nothing waits.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::events::NewEvent;
use super::jobs::JobRow;
use super::progress::{TaskUpdate, apply_task_update};
use super::sql::{Pool, Tx, query};
use super::{Result, Store, StoreError, WriteHealth};
use crate::model::JobState;

/// Outcomes written in one transaction at most.
const MAX_BATCH: usize = 256;

pub(crate) struct Request {
    job_id: String,
    cluster: String,
    fence: i64,
    update: TaskUpdate,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Option<JobState>>>,
}

pub(super) fn spawn_writer(
    pool: Pool,
    appended: broadcast::Sender<String>,
    health: Arc<WriteHealth>,
) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(writer(pool, rx, appended, health));
    tx
}

pub(super) async fn commit(
    store: &Store,
    job: &JobRow,
    fence: i64,
    update: &TaskUpdate,
    events: &[NewEvent],
) -> Result<Option<JobState>> {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        job_id: job.id.clone(),
        cluster: job.cluster.clone(),
        fence,
        update: update.clone(),
        events: events.to_vec(),
        reply,
    };
    let gone = || StoreError::CommitFailed("the commit writer has stopped".into());
    store.commits.send(request).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn writer(
    pool: Pool,
    mut rx: mpsc::Receiver<Request>,
    appended: broadcast::Sender<String>,
    health: Arc<WriteHealth>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match write_batch(&pool, &batch).await {
            Ok(results) => {
                if results.iter().any(Result::is_ok) {
                    health.clear();
                }
                for (r, result) in batch.drain(..).zip(results) {
                    if result
                        .as_ref()
                        .is_ok_and(|s| s.is_some() || !r.events.is_empty())
                    {
                        let _ = appended.send(r.job_id.clone());
                    }
                    let _ = r.reply.send(result);
                }
            }
            Err(StoreError::Unwritable(why)) => {
                // Nothing of the batch was written, and the connection it used is replaced
                // on release (see `release_clean`), so the next batch starts clean.
                health.set(why.clone());
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(StoreError::Unwritable(why.clone())));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(StoreError::CommitFailed(msg.clone())));
                }
            }
        }
    }
}

/// Writes a batch in one transaction; the outer error means nothing of it was committed.
async fn write_batch(pool: &Pool, batch: &[Request]) -> Result<Vec<Result<Option<JobState>>>> {
    let mut tx = match pool {
        Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
    };
    let mut results = Vec::with_capacity(batch.len());
    for r in batch {
        query("SAVEPOINT outcome").execute(&mut tx).await?;
        let result = apply_task_update(
            &mut tx, &r.job_id, &r.cluster, r.fence, &r.update, &r.events,
        )
        .await;
        if result.is_err() {
            query("ROLLBACK TO outcome").execute(&mut tx).await?;
        }
        query("RELEASE outcome").execute(&mut tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

//! What a lease holder writes about its nodes, each write fenced: a step's outcome (through
//! the group commit), external IDs a step recorded, taking a node's lock when it starts
//! and giving it back when it ends, and cancelling the unfinished nodes at a safe point.

use super::sql::{Tx, query, query_by};
use serde_json::Value;

use super::derive::derive_job_state;
use super::events::{NewEvent, insert_event};
use super::jobs::{JobRow, PROGRESS_VERSION_KEY, TaskRow};
use super::leases::check_fence;
use super::{Result, Store, StoreError, lock_job, now_ms};
use crate::model::{EventKind, FailureClass, JobState, NodeStatus};

/// The mutable part of a node task, written whole by its lease holder after each step.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub name: String,
    pub state: String,
    pub status: NodeStatus,
    pub attempt: i64,
    pub attempts_total: i64,
    pub entered_at: i64,
    pub wake_at: Option<i64>,
    pub wait_reason: Option<String>,
    pub failure_class: Option<FailureClass>,
    pub last_error: Option<String>,
}

impl TaskUpdate {
    pub fn from_row(row: &TaskRow) -> TaskUpdate {
        TaskUpdate {
            name: row.name.clone(),
            state: row.state.clone(),
            status: row.status,
            attempt: row.attempt,
            attempts_total: row.attempts_total,
            entered_at: row.entered_at,
            wake_at: row.wake_at,
            wait_reason: row.wait_reason.clone(),
            failure_class: row.failure_class.as_deref().and_then(|c| c.parse().ok()),
            last_error: row.last_error.clone(),
        }
    }
}

impl Store {
    /// Writes one node task's new state and the events that explain it, fenced, in one
    /// transaction (shared with other steps' outcomes that arrive together: group commit). When the task leaves the runnable set, its node lock is released and
    /// the job's state is re-derived; the new job state is returned then. A job that this
    /// commit finishes also gives up its lease here.
    pub async fn commit_task(
        &self,
        job: &JobRow,
        fence: i64,
        update: &TaskUpdate,
        events: &[NewEvent],
    ) -> Result<Option<JobState>> {
        super::commits::commit(self, job, fence, update, events).await
    }

    /// Records one field of a node's progress record (fenced) — an external ID a step
    /// created, so a re-run after a crash finds it instead of creating a second one — and
    /// stamps the record with its `version` (under [`PROGRESS_VERSION_KEY`]) in the same
    /// write. The optional event says what was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_external(
        &self,
        job_id: &str,
        fence: i64,
        node: &str,
        version: u64,
        key: &str,
        value: &Value,
        event: Option<&NewEvent>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        lock_job(&mut tx, job_id).await?;
        let changed = query_by(
            "UPDATE node_tasks SET external_ids = json_set(external_ids, '$.\"' || ? || '\"', ?, \
               '$.\"' || ? || '\"', json(?)), \
               updated_at = ? \
             WHERE job_id = ? AND name = ? AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND fence = ?)",
            "UPDATE node_tasks SET external_ids = (external_ids::jsonb \
               || jsonb_build_object(?::text, ?::bigint) \
               || jsonb_build_object(?::text, ?::jsonb))::text, \
               updated_at = ? \
             WHERE job_id = ? AND name = ? AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND fence = ?)",
        )
        .bind(PROGRESS_VERSION_KEY)
        .bind(version as i64)
        .bind(key)
        .bind(value.to_string())
        .bind(now_ms())
        .bind(job_id)
        .bind(node)
        .bind(job_id)
        .bind(fence)
        .execute(&mut tx)
        .await?;
        if changed == 0 {
            return Err(StoreError::LeaseLost { fence });
        }
        if let Some(e) = event {
            insert_event(&mut tx, job_id, now_ms(), e).await?;
        }
        self.commit(tx).await?;
        if event.is_some() {
            self.notify_appended(job_id);
        }
        Ok(())
    }

    /// Starts work on a node: takes the node lock for `(cluster, node)` for this job and, the
    /// first time, marks the job running, in one fenced transaction. Returns the job holding
    /// the node instead, if that is another job.
    pub async fn start_node(&self, job: &JobRow, fence: i64, node: &str) -> Result<Option<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, &job.id, fence).await?;
        // A no-op update on conflict makes RETURNING give the current holder either way.
        let holder: String = query(
            "INSERT INTO node_locks (cluster, node, job_id, acquired_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (cluster, node) DO UPDATE SET node = excluded.node RETURNING job_id",
        )
        .bind(&job.cluster)
        .bind(node)
        .bind(&job.id)
        .bind(now)
        .scalar(&mut tx)
        .await?;
        if holder != job.id {
            self.commit(tx).await?;
            return Ok(Some(holder));
        }
        let started = query(
            "UPDATE jobs SET state = 'running', updated_at = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(now)
        .bind(&job.id)
        .execute(&mut tx)
        .await?;
        if started > 0 {
            let e = NewEvent::new(EventKind::JobState)
                .transition("queued", "running")
                .message("job running");
            insert_event(&mut tx, &job.id, now, &e).await?;
        }
        self.commit(tx).await?;
        if started > 0 {
            self.notify_appended(&job.id);
        }
        Ok(None)
    }

    /// Marks every unfinished task of a job cancelled, recording what each leaves behind.
    pub async fn finish_cancel(
        &self,
        job: &JobRow,
        fence: i64,
        tasks: &[TaskRow],
    ) -> Result<JobState> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, &job.id, fence).await?;
        for t in tasks.iter().filter(|t| !t.status.is_terminal()) {
            query(
                "UPDATE node_tasks SET status = 'cancelled', wake_at = NULL, wait_reason = NULL, \
                 updated_at = ? WHERE job_id = ? AND name = ?",
            )
            .bind(now)
            .bind(&job.id)
            .bind(&t.name)
            .execute(&mut tx)
            .await?;
            release_node_lock(&mut tx, &job.cluster, &t.name, &job.id).await?;
            let leaves = t.external_ids();
            let message = if leaves.is_empty() {
                format!("cancelled in state {}; it had created nothing", t.state)
            } else {
                let list: Vec<String> = leaves.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "cancelled in state {}; left in place: {}",
                    t.state,
                    list.join(", ")
                )
            };
            let e = NewEvent::new(EventKind::Operator)
                .node(&t.name)
                .transition(&t.state, "cancelled")
                .message(message)
                .data(Value::Object(leaves));
            insert_event(&mut tx, &job.id, now, &e).await?;
        }
        let state = derive_job_state(&mut tx, &job.id, now).await?;
        self.commit(tx).await?;
        self.notify_appended(&job.id);
        Ok(state)
    }
}

/// The body of [`Store::commit_task`], inside the caller's transaction. Writes nothing when
/// the fence is stale.
pub(super) async fn apply_task_update(
    tx: &mut Tx,
    job_id: &str,
    cluster: &str,
    fence: i64,
    update: &TaskUpdate,
    events: &[NewEvent],
) -> Result<Option<JobState>> {
    let now = now_ms();
    lock_job(tx, job_id).await?;
    let changed = query(
        "UPDATE node_tasks SET state = ?, status = ?, attempt = ?, attempts_total = ?, \
           entered_at = ?, wake_at = ?, wait_reason = ?, failure_class = ?, last_error = ?, updated_at = ? \
         WHERE job_id = ? AND name = ? AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND fence = ?)",
    )
    .bind(&update.state)
    .bind(update.status.as_str())
    .bind(update.attempt)
    .bind(update.attempts_total)
    .bind(update.entered_at)
    .bind(update.wake_at)
    .bind(&update.wait_reason)
    .bind(update.failure_class.map(|c| c.as_str()))
    .bind(&update.last_error)
    .bind(now)
    .bind(job_id)
    .bind(&update.name)
    .bind(job_id)
    .bind(fence)
    .execute(&mut *tx)
    .await?;
    if changed == 0 {
        return Err(StoreError::LeaseLost { fence });
    }
    for e in events {
        insert_event(tx, job_id, now, e).await?;
    }
    if update.status.is_runnable() {
        return Ok(None);
    }
    if update.status.is_terminal() {
        release_node_lock(tx, cluster, &update.name, job_id).await?;
    }
    let state = derive_job_state(tx, job_id, now).await?;
    if state.is_terminal() {
        // The job is done: its lease goes in the same transaction.
        query("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Some(state))
}

pub(super) async fn release_node_lock(
    tx: &mut Tx,
    cluster: &str,
    node: &str,
    job_id: &str,
) -> Result<()> {
    query("DELETE FROM node_locks WHERE cluster = ? AND node = ? AND job_id = ?")
        .bind(cluster)
        .bind(node)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

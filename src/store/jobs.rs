//! Jobs, their node tasks and their history.

use serde_json::Value;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::{Result, Store, StoreError, now_ms};
use crate::model::{EventKind, FailureClass, JobState, NodeStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub tenant: String,
    pub owner: String,
    pub cluster: String,
    pub params: String,
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub cancel_requested: bool,
    pub deadline_at: Option<i64>,
    pub concurrency: i64,
    pub schedule_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub next_run_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub fence: i64,
    pub operator_seq: i64,
}

impl JobRow {
    pub fn params(&self) -> Value {
        serde_json::from_str(&self.params).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub job_id: String,
    pub name: String,
    pub seq: i64,
    pub spec: String,
    pub state: String,
    #[sqlx(try_from = "String")]
    pub status: NodeStatus,
    pub attempt: i64,
    pub attempts_total: i64,
    pub entered_at: i64,
    pub wake_at: Option<i64>,
    pub wait_reason: Option<String>,
    pub failure_class: Option<String>,
    pub last_error: Option<String>,
    pub external_ids: String,
    pub updated_at: i64,
}

impl TaskRow {
    pub fn spec(&self) -> Value {
        serde_json::from_str(&self.spec).unwrap_or(Value::Null)
    }

    pub fn external_ids(&self) -> serde_json::Map<String, Value> {
        serde_json::from_str(&self.external_ids).unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub job_id: String,
    pub at: i64,
    pub node: Option<String>,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub attempt: Option<i64>,
    pub class: Option<String>,
    pub message: Option<String>,
    pub data: Option<String>,
}

/// An entry to append to a job's history.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub node: Option<String>,
    pub kind: EventKind,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub attempt: Option<i64>,
    pub class: Option<FailureClass>,
    pub message: Option<String>,
    pub data: Option<Value>,
}

impl NewEvent {
    pub fn new(kind: EventKind) -> NewEvent {
        NewEvent {
            node: None,
            kind,
            from_state: None,
            to_state: None,
            attempt: None,
            class: None,
            message: None,
            data: None,
        }
    }

    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    pub fn transition(mut self, from: &str, to: &str) -> Self {
        self.from_state = Some(from.to_string());
        self.to_state = Some(to.to_string());
        self
    }

    pub fn attempt(mut self, attempt: i64) -> Self {
        self.attempt = Some(attempt);
        self
    }

    pub fn class(mut self, class: Option<FailureClass>) -> Self {
        self.class = class;
        self
    }

    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// A job as submitted, before it has an ID in the database.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub tenant: String,
    pub owner: String,
    pub cluster: String,
    pub params: Value,
    pub deadline_at: Option<i64>,
    pub concurrency: i64,
    pub schedule_id: Option<String>,
    /// `(name, spec)` per node, in request order.
    pub nodes: Vec<(String, Value)>,
    /// The workflow's start state.
    pub start_state: String,
}

/// Ties a submit to a key, so a retried request returns the first job.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// Canonical JSON of the request: a reuse with a different request is a conflict.
    pub request: String,
}

#[derive(Debug, Clone)]
pub struct Submitted {
    pub job_id: String,
    /// False when an idempotency key returned an earlier job.
    pub created: bool,
}

/// A job this worker now holds the lease on.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: JobRow,
    pub tasks: Vec<TaskRow>,
    /// The worker whose lease lapsed, if this claim took the job over after a crash.
    pub taken_over_from: Option<String>,
}

/// What a heartbeat learns about the job it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub cancel_requested: bool,
    pub operator_seq: i64,
}

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

/// Filters for listing jobs; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub tenant: Option<String>,
    pub owner: Option<String>,
    pub kind: Option<String>,
    pub state: Option<JobState>,
    pub cluster: Option<String>,
    /// Return jobs older than this job ID (IDs are time-ordered UUIDv7).
    pub before: Option<String>,
    pub limit: i64,
}

const JOB_COLUMNS: &str = "id, kind, tenant, owner, cluster, params, state, cancel_requested, \
     deadline_at, concurrency, schedule_id, created_at, updated_at, finished_at, \
     next_run_at, lease_owner, lease_until, fence, operator_seq";

const TASK_COLUMNS: &str = "job_id, name, seq, spec, state, status, attempt, attempts_total, \
     entered_at, wake_at, wait_reason, failure_class, last_error, external_ids, updated_at";

impl Store {
    /// Persists a new job with its node tasks and its first event, atomically; or, for a
    /// repeated idempotency key with the same request, returns the job first made for it.
    pub async fn submit(&self, job: &NewJob, key: Option<&IdempotencyKey>) -> Result<Submitted> {
        let mut tx = self.begin_write().await?;
        if let Some(k) = key
            && let Some(s) = existing_for_key(&mut tx, &job.tenant, &job.owner, k).await?
        {
            return Ok(s);
        }
        insert_job(&mut tx, job).await?;
        if let Some(k) = key {
            sqlx::query(
                "INSERT INTO idempotency_keys (tenant, owner, key, request, job_id, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&job.tenant)
            .bind(&job.owner)
            .bind(&k.key)
            .bind(&k.request)
            .bind(&job.id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        self.wrote();
        self.notify_appended(&job.id);
        Ok(Submitted {
            job_id: job.id.clone(),
            created: true,
        })
    }

    /// Makes the waiting node tasks named `node` in unfinished jobs on clusters of
    /// namespace `ns` due now: something they wait for changed (a watch saw it), so they
    /// look again instead of sleeping out their recheck interval. A node backing off before
    /// a retry keeps its backoff. Returns the jobs nudged.
    pub async fn nudge(&self, ns: &str, node: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let jobs: Vec<(String,)> = sqlx::query_as(
            "UPDATE node_tasks SET wake_at = ? WHERE name = ? AND status = 'waiting' AND wake_at > ? \
             AND (wait_reason IS NULL OR substr(wait_reason, 1, ?) != ?) \
             AND job_id IN (SELECT id FROM jobs WHERE finished_at IS NULL AND cluster LIKE ? ESCAPE '\\') \
             RETURNING job_id",
        )
        .bind(now)
        .bind(node)
        .bind(now)
        .bind(crate::model::RETRY_WAIT_PREFIX.len() as i64)
        .bind(crate::model::RETRY_WAIT_PREFIX)
        .bind(format!("{}/%", ns.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
        .fetch_all(&mut *tx)
        .await?;
        for (job,) in &jobs {
            sqlx::query(
                "UPDATE jobs SET next_run_at = ? WHERE id = ? AND next_run_at IS NOT NULL AND next_run_at > ?",
            )
            .bind(now)
            .bind(job)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(jobs.into_iter().map(|(j,)| j).collect())
    }

    /// The job an idempotency key already made, if any.
    pub async fn idempotent_job(
        &self,
        tenant: &str,
        owner: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?",
        )
        .bind(tenant)
        .bind(owner)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.0))
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn tasks(&self, job_id: &str) -> Result<Vec<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM node_tasks WHERE job_id = ? ORDER BY seq");
        Ok(sqlx::query_as(&sql)
            .bind(job_id)
            .fetch_all(&self.read)
            .await?)
    }

    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1"));
        if let Some(v) = &f.tenant {
            q.push(" AND tenant = ").push_bind(v.clone());
        }
        if let Some(v) = &f.owner {
            q.push(" AND owner = ").push_bind(v.clone());
        }
        if let Some(v) = &f.kind {
            q.push(" AND kind = ").push_bind(v.clone());
        }
        if let Some(v) = f.state {
            q.push(" AND state = ").push_bind(v.as_str());
        }
        if let Some(v) = &f.cluster {
            q.push(" AND cluster = ").push_bind(v.clone());
        }
        if let Some(v) = &f.before {
            q.push(" AND id < ").push_bind(v.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
        Ok(q.build_query_as().fetch_all(&self.read).await?)
    }

    /// A job's history after event `after`, oldest first.
    pub async fn events(&self, job_id: &str, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as(
            "SELECT id, job_id, at, node, kind, from_state, to_state, attempt, class, message, data \
             FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Counts of jobs by kind and state, for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(
            sqlx::query_as("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Claims up to `limit` jobs, most overdue first, whose lease is free or lapsed, bumping
    /// each one's fencing token, in one transaction.
    pub async fn claim_due(&self, worker: &str, lease_ms: i64, limit: usize) -> Result<Vec<Claim>> {
        let mut tx = self.begin_write().await?;
        // Read the clock once the write lock is held: waiting for it must not eat the lease.
        let now = now_ms();
        let mut candidates: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, lease_owner FROM jobs \
             WHERE next_run_at IS NOT NULL AND lease_owner IS NULL AND next_run_at <= ? \
             ORDER BY next_run_at LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if candidates.len() < limit {
            // Leases that lapsed: their holder died (or stalled) mid-job.
            let lapsed: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT id, lease_owner FROM jobs \
                 WHERE lease_owner IS NOT NULL AND lease_until < ? \
                 ORDER BY lease_until LIMIT ?",
            )
            .bind(now)
            .bind((limit - candidates.len()) as i64)
            .fetch_all(&mut *tx)
            .await?;
            candidates.extend(lapsed);
        }
        let mut claims = Vec::with_capacity(candidates.len());
        for (id, previous) in candidates {
            let job: JobRow = sqlx::query_as(&format!(
                "UPDATE jobs SET lease_owner = ?, lease_until = ?, fence = fence + 1 WHERE id = ? \
                 RETURNING {JOB_COLUMNS}"
            ))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            // A lease is cleared on a clean release; one still set here lapsed under a dead worker.
            let taken_over_from = previous.filter(|p| p != worker);
            if let Some(prev) = &taken_over_from {
                let e = NewEvent::new(EventKind::LeaseTakeover).message(format!(
                    "worker {worker} took over from {prev}, whose lease lapsed"
                ));
                insert_event(&mut tx, &id, now, &e).await?;
            }
            let tasks: Vec<TaskRow> = sqlx::query_as(&format!(
                "SELECT {TASK_COLUMNS} FROM node_tasks WHERE job_id = ? ORDER BY seq"
            ))
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            claims.push(Claim {
                job,
                tasks,
                taken_over_from,
            });
        }
        self.commit(tx).await?;
        for c in claims.iter().filter(|c| c.taken_over_from.is_some()) {
            self.notify_appended(&c.job.id);
        }
        Ok(claims)
    }

    /// Extends a held lease. `None`: the lease is gone (another worker claimed the job).
    pub async fn heartbeat(
        &self,
        job_id: &str,
        fence: i64,
        lease_ms: i64,
    ) -> Result<Option<Heartbeat>> {
        let row: Option<(bool, i64)> = sqlx::query_as(
            // The new expiry is computed when the statement runs, after any wait for the lock.
            "UPDATE jobs SET lease_until = CAST(unixepoch('subsec') * 1000 AS INTEGER) + ? \
             WHERE id = ? AND fence = ? RETURNING cancel_requested, operator_seq",
        )
        .bind(lease_ms)
        .bind(job_id)
        .bind(fence)
        .fetch_optional(&self.write)
        .await
        .map_err(|e| self.failed(e.into()))?;
        Ok(row.map(|(cancel_requested, operator_seq)| Heartbeat {
            cancel_requested,
            operator_seq,
        }))
    }

    /// Re-reads the tasks of a job this worker holds (after an operator changed some).
    pub async fn reload_tasks(&self, job_id: &str) -> Result<Vec<TaskRow>> {
        self.tasks(job_id).await
    }

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

    /// Records an external ID a step created (fenced), so a re-run after a crash finds it
    /// instead of creating a second one. The optional event says what was created.
    pub async fn record_external(
        &self,
        job_id: &str,
        fence: i64,
        node: &str,
        key: &str,
        value: &Value,
        event: Option<&NewEvent>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE node_tasks SET external_ids = json_set(external_ids, '$.\"' || ? || '\"', json(?)), \
               updated_at = ? \
             WHERE job_id = ? AND name = ? AND EXISTS (SELECT 1 FROM jobs WHERE id = ? AND fence = ?)",
        )
        .bind(key)
        .bind(value.to_string())
        .bind(now_ms())
        .bind(job_id)
        .bind(node)
        .bind(job_id)
        .bind(fence)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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

    /// Appends events on behalf of the lease holder (fenced).
    pub async fn append_events(&self, job_id: &str, fence: i64, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, job_id, fence).await?;
        let now = now_ms();
        for e in events {
            insert_event(&mut tx, job_id, now, e).await?;
        }
        self.commit(tx).await?;
        self.notify_appended(job_id);
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
        let holder: String = sqlx::query_scalar(
            "INSERT INTO node_locks (cluster, node, job_id, acquired_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (cluster, node) DO UPDATE SET node = excluded.node RETURNING job_id",
        )
        .bind(&job.cluster)
        .bind(node)
        .bind(&job.id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if holder != job.id {
            self.commit(tx).await?;
            return Ok(Some(holder));
        }
        let started = sqlx::query(
            "UPDATE jobs SET state = 'running', updated_at = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(now)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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

    /// Gives up the lease cleanly, leaving `next_run_at` at the job's earliest wake-up.
    pub async fn release(&self, job_id: &str, fence: i64) -> Result<()> {
        self.release_until(job_id, fence, None).await
    }

    /// Gives up the lease and, if `not_before` is set, leaves the job alone until then.
    pub async fn release_until(
        &self,
        job_id: &str,
        fence: i64,
        not_before: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        check_fence(&mut tx, job_id, fence).await?;
        derive_job_state(&mut tx, job_id, now_ms()).await?;
        sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, \
               next_run_at = CASE WHEN next_run_at IS NULL THEN NULL ELSE MAX(next_run_at, COALESCE(?, 0)) END \
             WHERE id = ?",
        )
        .bind(not_before)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(())
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
            sqlx::query(
                "UPDATE node_tasks SET status = 'cancelled', wake_at = NULL, wait_reason = NULL, \
                 updated_at = ? WHERE job_id = ? AND name = ?",
            )
            .bind(now)
            .bind(&job.id)
            .bind(&t.name)
            .execute(&mut *tx)
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

    /// Operator: asks a job to stop at its next safe point.
    pub async fn request_cancel(&self, job_id: &str, who: &str) -> Result<JobState> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let state: JobState =
            sqlx::query_scalar::<_, String>("SELECT state FROM jobs WHERE id = ?")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?
                .parse()
                .map_err(StoreError::Conflict)?;
        if state.is_terminal() {
            return Err(StoreError::Conflict(format!("the job has already {state}")));
        }
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, state = 'cancelling', next_run_at = ?, \
             operator_seq = operator_seq + 1, updated_at = ? WHERE id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        let e = NewEvent::new(EventKind::Operator).message(format!(
            "cancel requested by {who}; in-flight steps finish, nothing new starts"
        ));
        insert_event(&mut tx, job_id, now, &e).await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(JobState::Cancelling)
    }

    /// Operator: sends every `needs_input` node back to the state that asked, and returns
    /// their names.
    pub async fn resume(&self, job_id: &str, who: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let names: Vec<(String, String)> = sqlx::query_as(
            "UPDATE node_tasks SET status = 'running', attempt = 0, wake_at = ?, wait_reason = NULL, \
               entered_at = ?, updated_at = ? \
             WHERE job_id = ? AND status = 'needs_input' RETURNING name, state",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        if names.is_empty() {
            return Err(StoreError::Conflict(
                "no node of this job is needs_input".into(),
            ));
        }
        for (name, state) in &names {
            let e = NewEvent::new(EventKind::Operator)
                .node(name)
                .transition("needs_input", state)
                .message(format!("resumed by {who}"));
            insert_event(&mut tx, job_id, now, &e).await?;
        }
        sqlx::query("UPDATE jobs SET operator_seq = operator_seq + 1 WHERE id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        derive_job_state(&mut tx, job_id, now).await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(names.into_iter().map(|(n, _)| n).collect())
    }

    /// Operator: applies a JSON merge patch (RFC 7396) to a `needs_input` node's spec, read
    /// and written in one transaction so concurrent amends never drop each other's changes.
    /// Returns the changed top-level fields.
    pub async fn amend_node(
        &self,
        job_id: &str,
        node: &str,
        patch: &serde_json::Map<String, Value>,
        who: &str,
    ) -> Result<Vec<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT status, spec FROM node_tasks WHERE job_id = ? AND name = ?")
                .bind(job_id)
                .bind(node)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status, spec)) = row else {
            return Err(StoreError::Conflict(format!(
                "the job has no node `{node}`"
            )));
        };
        if status != "needs_input" {
            return Err(StoreError::Conflict(format!(
                "node `{node}` is {status}; only a needs_input node can be amended"
            )));
        }
        let mut spec: Value = serde_json::from_str(&spec)?;
        merge_patch(&mut spec, &Value::Object(patch.clone()));
        let changed: Vec<String> = patch.keys().cloned().collect();
        sqlx::query("UPDATE node_tasks SET spec = ?, updated_at = ? WHERE job_id = ? AND name = ?")
            .bind(spec.to_string())
            .bind(now)
            .bind(job_id)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET operator_seq = operator_seq + 1, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        let e = NewEvent::new(EventKind::Operator)
            .node(node)
            .message(format!("spec amended by {who}: {}", changed.join(", ")))
            .data(serde_json::json!({ "changed": changed }));
        insert_event(&mut tx, job_id, now, &e).await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(changed)
    }
}

/// JSON merge patch (RFC 7396): objects merge recursively, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let obj = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge_patch(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The body of [`Store::commit_task`], inside the caller's transaction. Writes nothing when
/// the fence is stale.
pub(super) async fn apply_task_update(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    cluster: &str,
    fence: i64,
    update: &TaskUpdate,
    events: &[NewEvent],
) -> Result<Option<JobState>> {
    let now = now_ms();
    let changed = sqlx::query(
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
    .execute(&mut **tx)
    .await?
    .rows_affected();
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
        sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = ?")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Some(state))
}

async fn existing_for_key(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &str,
    owner: &str,
    k: &IdempotencyKey,
) -> Result<Option<Submitted>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT request, job_id FROM idempotency_keys WHERE tenant = ? AND owner = ? AND key = ?",
    )
    .bind(tenant)
    .bind(owner)
    .bind(&k.key)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Ok(None),
        Some((request, job_id)) if request == k.request => Ok(Some(Submitted {
            job_id,
            created: false,
        })),
        Some((_, job_id)) => Err(StoreError::Conflict(format!(
            "Idempotency-Key `{}` was first used for a different request (your job {job_id})",
            k.key
        ))),
    }
}

pub(super) async fn insert_job(tx: &mut Transaction<'static, Sqlite>, job: &NewJob) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, kind, tenant, owner, cluster, params, state, deadline_at, \
           concurrency, schedule_id, created_at, updated_at, next_run_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
    )
    .bind(&job.id)
    .bind(&job.kind)
    .bind(&job.tenant)
    .bind(&job.owner)
    .bind(&job.cluster)
    .bind(job.params.to_string())
    .bind(job.deadline_at)
    .bind(job.concurrency)
    .bind(&job.schedule_id)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    for (seq, (name, spec)) in job.nodes.iter().enumerate() {
        sqlx::query(
            "INSERT INTO node_tasks (job_id, name, seq, spec, state, status, entered_at, wake_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        )
        .bind(&job.id)
        .bind(name)
        .bind(seq as i64)
        .bind(spec.to_string())
        .bind(&job.start_state)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let names: Vec<&str> = job.nodes.iter().map(|(n, _)| n.as_str()).collect();
    let mut e = NewEvent::new(EventKind::Submitted)
        .message(format!(
            "{} job for {} submitted by {} ({} nodes)",
            job.kind,
            job.cluster,
            job.owner,
            names.len()
        ))
        .data(serde_json::json!({ "nodes": names, "params": job.params }));
    if let Some(s) = &job.schedule_id {
        e = e.message(format!(
            "{} job for {} enqueued by schedule {s}",
            job.kind, job.cluster
        ));
    }
    insert_event(tx, &job.id, now, &e).await
}

pub(super) async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    at: i64,
    e: &NewEvent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (job_id, at, node, kind, from_state, to_state, attempt, class, message, data) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job_id)
    .bind(at)
    .bind(&e.node)
    .bind(e.kind.as_str())
    .bind(&e.from_state)
    .bind(&e.to_state)
    .bind(e.attempt)
    .bind(e.class.map(|c| c.as_str()))
    .bind(&e.message)
    .bind(e.data.as_ref().map(|d| d.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn check_fence(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    fence: i64,
) -> Result<()> {
    let current: Option<i64> = sqlx::query_scalar("SELECT fence FROM jobs WHERE id = ?")
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?;
    if current != Some(fence) {
        return Err(StoreError::LeaseLost { fence });
    }
    Ok(())
}

async fn release_node_lock(
    tx: &mut Transaction<'static, Sqlite>,
    cluster: &str,
    node: &str,
    job_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM node_locks WHERE cluster = ? AND node = ? AND job_id = ?")
        .bind(cluster)
        .bind(node)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Re-derives a job's state and next wake-up from its tasks, inside the caller's transaction,
/// and records a `job_state` event when the state changes.
async fn derive_job_state(
    tx: &mut Transaction<'static, Sqlite>,
    job_id: &str,
    now: i64,
) -> Result<JobState> {
    let (old, cancel_requested, deadline_at): (String, bool, Option<i64>) =
        sqlx::query_as("SELECT state, cancel_requested, deadline_at FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?;
    let old: JobState = old.parse().map_err(StoreError::Conflict)?;
    let counts: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT status, COUNT(*), MIN(wake_at) FROM node_tasks WHERE job_id = ? GROUP BY status",
    )
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await?;
    let count = |s: NodeStatus| {
        counts
            .iter()
            .filter(|(st, _, _)| st == s.as_str())
            .map(|(_, n, _)| *n)
            .sum::<i64>()
    };
    let total: i64 = counts.iter().map(|(_, n, _)| n).sum();
    let terminal =
        count(NodeStatus::Succeeded) + count(NodeStatus::Failed) + count(NodeStatus::Cancelled);
    let runnable_wake = counts
        .iter()
        .filter(|(s, _, _)| {
            s.parse::<NodeStatus>()
                .map(|s| s.is_runnable())
                .unwrap_or(false)
        })
        .filter_map(|(_, _, w)| *w)
        .min();
    // Once running, a job never reads as queued again (a crash can leave every task pending).
    let started = old != JobState::Queued || total - count(NodeStatus::Pending) > 0;
    let state = if terminal == total {
        // A cancel that came too late to stop anything does not hide the nodes' results.
        if count(NodeStatus::Cancelled) > 0 {
            JobState::Cancelled
        } else if count(NodeStatus::Failed) > 0 {
            JobState::Failed
        } else {
            JobState::Succeeded
        }
    } else if cancel_requested {
        JobState::Cancelling
    } else if runnable_wake.is_none() && count(NodeStatus::NeedsInput) > 0 {
        JobState::NeedsInput
    } else if started {
        JobState::Running
    } else {
        JobState::Queued
    };
    let next_run_at = if state.is_terminal() {
        None
    } else if cancel_requested {
        Some(now)
    } else {
        // Nodes waiting for input still have the job's deadline to meet.
        runnable_wake.or(deadline_at)
    };
    sqlx::query(
        "UPDATE jobs SET state = ?, next_run_at = ?, updated_at = ?, \
           finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE NULL END \
         WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(next_run_at)
    .bind(now)
    .bind(state.is_terminal())
    .bind(now)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    if state != old {
        let summary = counts
            .iter()
            .map(|(s, n, _)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        let e = NewEvent::new(EventKind::JobState)
            .transition(old.as_str(), state.as_str())
            .message(format!("job {state}: nodes {summary}"));
        insert_event(tx, job_id, now, &e).await?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut spec = json!({"name": "n-1", "root_volume": {"size_gib": 20, "type": "ssd2"}, "ip": "10.6.0.9"});
        merge_patch(
            &mut spec,
            &json!({"root_volume": {"type": "ssd"}, "ip": null, "labels": {"a": "b"}}),
        );
        assert_eq!(
            spec,
            json!({"name": "n-1", "root_volume": {"size_gib": 20, "type": "ssd"}, "labels": {"a": "b"}})
        );
    }
}

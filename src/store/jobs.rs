//! Jobs and their node tasks as rows: a new job's insert (with its first event and, when
//! asked, its idempotency key, in one transaction) and the reads the API and the engine make.

use super::sql::{Tx, query};
use serde_json::Value;

use super::events::{NewEvent, insert_event};
use super::idempotency::{IdempotencyKey, existing_for_key, record_key};
use super::{Result, Store, now_ms};
use crate::model::{EventKind, JobState, NodeStatus, WAITING_FOR_QUOTA};

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

/// The key of a progress record's version in the `external_ids` column (the engine's
/// `progress` module says what the versions mean).
pub const PROGRESS_VERSION_KEY: &str = "v";

impl TaskRow {
    pub fn spec(&self) -> Value {
        serde_json::from_str(&self.spec).unwrap_or(Value::Null)
    }

    /// The node's progress record as stored, its version (`"v"`) included; an error when
    /// the column holds no JSON object.
    pub fn progress_record(&self) -> std::result::Result<serde_json::Map<String, Value>, String> {
        match serde_json::from_str(&self.external_ids) {
            Ok(Value::Object(record)) => Ok(record),
            Ok(other) => Err(format!("not a JSON object: {other}")),
            Err(e) => Err(format!("not JSON: {e}")),
        }
    }

    /// The fields of the node's progress record, without its version: what the API shows
    /// as `external_ids` and a cancel reports as left in place (nothing, for a record that
    /// cannot be read: the node's steps fail on it, saying why).
    pub fn external_ids(&self) -> serde_json::Map<String, Value> {
        let mut fields = self.progress_record().unwrap_or_default();
        fields.remove(PROGRESS_VERSION_KEY);
        fields
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

#[derive(Debug, Clone)]
pub struct Submitted {
    pub job_id: String,
    /// False when an idempotency key returned an earlier job.
    pub created: bool,
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

pub(super) const JOB_COLUMNS: &str = "id, kind, tenant, owner, cluster, params, state, cancel_requested, \
     deadline_at, concurrency, schedule_id, created_at, updated_at, finished_at, \
     next_run_at, lease_owner, lease_until, fence, operator_seq";

pub(super) const TASK_COLUMNS: &str = "job_id, name, seq, spec, state, status, attempt, attempts_total, \
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
            record_key(&mut tx, job, k).await?;
        }
        self.commit(tx).await?;
        self.wrote();
        self.notify_appended(&job.id);
        Ok(Submitted {
            job_id: job.id.clone(),
            created: true,
        })
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        Ok(query(&sql).bind(id).fetch_optional(&self.read).await?)
    }

    pub async fn tasks(&self, job_id: &str) -> Result<Vec<TaskRow>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM node_tasks WHERE job_id = ? ORDER BY seq");
        Ok(query(&sql).bind(job_id).fetch_all(&self.read).await?)
    }

    /// Every job the filter matches, newest first: all of them, read a page at a time
    /// (`f.before` and `f.limit` are ignored).
    pub async fn list_all_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        const PAGE: i64 = 500;
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .list_jobs(&JobFilter {
                    before: before.clone(),
                    limit: PAGE,
                    ..f.clone()
                })
                .await?;
            before = page.last().map(|j| j.id.clone());
            let full = page.len() as i64 == PAGE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        let filters = [
            ("tenant = ?", f.tenant.clone()),
            ("owner = ?", f.owner.clone()),
            ("kind = ?", f.kind.clone()),
            ("state = ?", f.state.map(|s| s.as_str().to_string())),
            ("cluster = ?", f.cluster.clone()),
            ("id < ?", f.before.clone()),
        ];
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
        let mut values = Vec::new();
        for (clause, value) in filters {
            if let Some(v) = value {
                sql.push_str(" AND ");
                sql.push_str(clause);
                values.push(v);
            }
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        let q = values
            .into_iter()
            .fold(query(sql), |q, v| q.bind(v))
            .bind(f.limit);
        Ok(q.fetch_all(&self.read).await?)
    }

    /// Counts of jobs by kind and state, for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(
            query("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Counts of nodes by their job's kind and their status, for `/metrics`; a `waiting`
    /// node whose wait is for quota counts as `waiting_for_quota` (the reason scale_out's
    /// quota step gives, [`WAITING_FOR_QUOTA`]).
    pub async fn node_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(query(
            "SELECT j.kind, CASE WHEN t.status = 'waiting' AND t.wait_reason LIKE ? || '%' \
               THEN ? ELSE t.status END AS s, COUNT(*) \
             FROM node_tasks t JOIN jobs j ON j.id = t.job_id GROUP BY j.kind, s",
        )
        .bind(WAITING_FOR_QUOTA)
        .bind(WAITING_FOR_QUOTA)
        .fetch_all(&self.read)
        .await?)
    }
}

pub(super) async fn insert_job(tx: &mut Tx, job: &NewJob) -> Result<()> {
    let now = now_ms();
    query(
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
    .execute(&mut *tx)
    .await?;
    for (seq, (name, spec)) in job.nodes.iter().enumerate() {
        query(
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
        .execute(&mut *tx)
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

//! A job's history: append-only entries (the schema's triggers refuse updates and
//! deletes), written in the transaction of the change they record.

use super::sql::{Tx, query};
use serde_json::Value;

use super::leases::check_fence;
use super::{Result, Store, lock_job, notify_replicas, now_ms};
use crate::model::{EventKind, FailureClass};

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

impl Store {
    /// A job's history after event `after`, oldest first.
    pub async fn events(&self, job_id: &str, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        Ok(query(
            "SELECT id, job_id, at, node, kind, from_state, to_state, attempt, class, message, data \
             FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
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
}

/// Appends one entry to a job's history. On PostgreSQL it first locks the job's row (so
/// the job's event IDs grow in commit order: a reader paging by ID never passes one that
/// commits later) and notifies the other replicas, on commit, that the job was written to.
pub(super) async fn insert_event(tx: &mut Tx, job_id: &str, at: i64, e: &NewEvent) -> Result<()> {
    lock_job(tx, job_id).await?;
    notify_replicas(tx, job_id).await?;
    query(
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

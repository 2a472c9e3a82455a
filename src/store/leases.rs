//! Leases with fencing: claiming due or lapsed jobs (each claim bumps the job's fencing
//! token), heartbeats, clean release, and the fence check every holder's write makes.

use super::sql::{Tx, query};

use super::derive::derive_job_state;
use super::events::{NewEvent, insert_event};
use super::jobs::{JOB_COLUMNS, JobRow, TASK_COLUMNS, TaskRow};
use super::sql::query_by;
use super::{Result, Store, StoreError, now_ms};
use crate::model::EventKind;

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

impl Store {
    /// Claims up to `limit` jobs, most overdue first, whose lease is free or lapsed, bumping
    /// each one's fencing token, in one transaction.
    pub async fn claim_due(&self, worker: &str, lease_ms: i64, limit: usize) -> Result<Vec<Claim>> {
        let mut tx = self.begin_write().await?;
        // Read the clock once the write lock is held: waiting for it must not eat the lease.
        let now = now_ms();
        // On PostgreSQL other replicas claim at the same moment: each skips the rows
        // another holds locked, so no two claim one job and none waits on another.
        const DUE: &str = "SELECT id, lease_owner FROM jobs \
             WHERE next_run_at IS NOT NULL AND lease_owner IS NULL AND next_run_at <= ? \
             ORDER BY next_run_at LIMIT ?";
        let mut candidates: Vec<(String, Option<String>)> =
            query_by(DUE, format!("{DUE} FOR UPDATE SKIP LOCKED"))
                .bind(now)
                .bind(limit as i64)
                .fetch_all(&mut tx)
                .await?;
        if candidates.len() < limit {
            // Leases that lapsed: their holder died (or stalled) mid-job.
            const LAPSED: &str = "SELECT id, lease_owner FROM jobs \
                 WHERE lease_owner IS NOT NULL AND lease_until < ? \
                 ORDER BY lease_until LIMIT ?";
            let lapsed: Vec<(String, Option<String>)> =
                query_by(LAPSED, format!("{LAPSED} FOR UPDATE SKIP LOCKED"))
                    .bind(now)
                    .bind((limit - candidates.len()) as i64)
                    .fetch_all(&mut tx)
                    .await?;
            candidates.extend(lapsed);
        }
        let mut claims = Vec::with_capacity(candidates.len());
        for (id, previous) in candidates {
            let job: JobRow = query(format!(
                "UPDATE jobs SET lease_owner = ?, lease_until = ?, fence = fence + 1 WHERE id = ? \
                 RETURNING {JOB_COLUMNS}"
            ))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(&id)
            .fetch_one(&mut tx)
            .await?;
            // A lease is cleared on a clean release; one still set here lapsed under a dead worker.
            let taken_over_from = previous.filter(|p| p != worker);
            if let Some(prev) = &taken_over_from {
                let e = NewEvent::new(EventKind::LeaseTakeover).message(format!(
                    "worker {worker} took over from {prev}, whose lease lapsed"
                ));
                insert_event(&mut tx, &id, now, &e).await?;
            }
            let tasks: Vec<TaskRow> = query(format!(
                "SELECT {TASK_COLUMNS} FROM node_tasks WHERE job_id = ? ORDER BY seq"
            ))
            .bind(&id)
            .fetch_all(&mut tx)
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
        // The new expiry is computed when the statement runs, after any wait for the lock.
        let row: Option<(bool, i64)> = query_by(
            "UPDATE jobs SET lease_until = CAST(unixepoch('subsec') * 1000 AS INTEGER) + ? \
             WHERE id = ? AND fence = ? RETURNING cancel_requested, operator_seq",
            "UPDATE jobs SET lease_until = \
               CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT) + ? \
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
        query_by(
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, \
               next_run_at = CASE WHEN next_run_at IS NULL THEN NULL ELSE MAX(next_run_at, COALESCE(?, 0)) END \
             WHERE id = ?",
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, \
               next_run_at = CASE WHEN next_run_at IS NULL THEN NULL ELSE GREATEST(next_run_at, COALESCE(?, 0)) END \
             WHERE id = ?",
        )
        .bind(not_before)
        .bind(job_id)
        .execute(&mut tx)
        .await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(())
    }
}

/// Refuses the write unless `fence` is still the job's fencing token; on PostgreSQL the
/// job's row stays locked for the rest of the transaction, so a claim cannot bump the token
/// between this check and the writes it guards.
pub(super) async fn check_fence(tx: &mut Tx, job_id: &str, fence: i64) -> Result<()> {
    const FENCE: &str = "SELECT fence FROM jobs WHERE id = ?";
    let current: Option<i64> = query_by(FENCE, format!("{FENCE} FOR UPDATE"))
        .bind(job_id)
        .scalar_optional(&mut *tx)
        .await?;
    if current != Some(fence) {
        return Err(StoreError::LeaseLost { fence });
    }
    Ok(())
}

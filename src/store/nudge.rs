//! Nudges: a watch saw something a waiting node waits for change, so the node looks again
//! now instead of sleeping out its recheck interval.

use super::sql::{query, query_by};
use super::{Result, Store, notify_replicas, now_ms};

impl Store {
    /// Makes the waiting node tasks named `node` in unfinished jobs on clusters of
    /// namespace `ns` due now: something they wait for changed (a watch saw it), so they
    /// look again instead of sleeping out their recheck interval. Only `waiting` nodes: a
    /// `backing_off` one keeps its backoff, whatever it waits for. Returns the jobs nudged.
    pub async fn nudge(&self, ns: &str, node: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let pattern = format!(
            "{}/%",
            ns.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut tx = self.begin_write().await?;
        // PostgreSQL: the jobs' rows are locked first, in ID order, as every other write
        // locks a job before its tasks — so a nudge and a step's commit never deadlock.
        const JOBS: &str = "SELECT id FROM jobs WHERE finished_at IS NULL AND cluster LIKE ? ESCAPE '\\' \
             AND id IN (SELECT job_id FROM node_tasks WHERE name = ? AND status = 'waiting' AND wake_at > ?) \
             ORDER BY id";
        query_by(JOBS, format!("{JOBS} FOR UPDATE"))
            .bind(&pattern)
            .bind(node)
            .bind(now)
            .execute(&mut tx)
            .await?;
        let jobs: Vec<(String,)> = query(
            "UPDATE node_tasks SET wake_at = ? WHERE name = ? AND status = 'waiting' AND wake_at > ? \
             AND job_id IN (SELECT id FROM jobs WHERE finished_at IS NULL AND cluster LIKE ? ESCAPE '\\') \
             RETURNING job_id",
        )
        .bind(now)
        .bind(node)
        .bind(now)
        .bind(&pattern)
        .fetch_all(&mut tx)
        .await?;
        for (job,) in &jobs {
            query(
                "UPDATE jobs SET next_run_at = ? WHERE id = ? AND next_run_at IS NOT NULL AND next_run_at > ?",
            )
            .bind(now)
            .bind(job)
            .bind(now)
            .execute(&mut tx)
            .await?;
            // Whichever replica is free claims it now, not on its next poll.
            notify_replicas(&mut tx, job).await?;
        }
        self.commit(tx).await?;
        Ok(jobs.into_iter().map(|(j,)| j).collect())
    }
}

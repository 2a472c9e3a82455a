//! Nudges: a watch saw something a waiting node waits for change, so the node looks again
//! now instead of sleeping out its recheck interval.

use super::{Result, Store, now_ms};

impl Store {
    /// Makes the waiting node tasks named `node` in unfinished jobs on clusters of
    /// namespace `ns` due now: something they wait for changed (a watch saw it), so they
    /// look again instead of sleeping out their recheck interval. Only `waiting` nodes: a
    /// `backing_off` one keeps its backoff, whatever it waits for. Returns the jobs nudged.
    pub async fn nudge(&self, ns: &str, node: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let jobs: Vec<(String,)> = sqlx::query_as(
            "UPDATE node_tasks SET wake_at = ? WHERE name = ? AND status = 'waiting' AND wake_at > ? \
             AND job_id IN (SELECT id FROM jobs WHERE finished_at IS NULL AND cluster LIKE ? ESCAPE '\\') \
             RETURNING job_id",
        )
        .bind(now)
        .bind(node)
        .bind(now)
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
}

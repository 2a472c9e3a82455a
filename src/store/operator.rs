//! What an operator asks of a job: cancel, resume the nodes that need input, amend a
//! node's spec. Each bumps the job's `operator_seq`, which its runner's heartbeat reads.

use serde_json::Value;

use super::derive::derive_job_state;
use super::events::{NewEvent, insert_event};
use super::sql::query;
use super::{Result, Store, StoreError, lock_job, now_ms};
use crate::model::{EventKind, JobState};

impl Store {
    /// Operator: asks a job to stop at its next safe point.
    pub async fn request_cancel(&self, job_id: &str, who: &str) -> Result<JobState> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        lock_job(&mut tx, job_id).await?;
        let state: JobState = query("SELECT state FROM jobs WHERE id = ?")
            .bind(job_id)
            .scalar::<String>(&mut tx)
            .await?
            .parse()
            .map_err(StoreError::Conflict)?;
        if state.is_terminal() {
            return Err(StoreError::Conflict(format!("the job has already {state}")));
        }
        query(
            "UPDATE jobs SET cancel_requested = TRUE, state = 'cancelling', next_run_at = ?, \
             operator_seq = operator_seq + 1, updated_at = ? WHERE id = ?",
        )
        .bind(now)
        .bind(now)
        .bind(job_id)
        .execute(&mut tx)
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
        lock_job(&mut tx, job_id).await?;
        // RETURNING has no defined order on PostgreSQL: sort by request order ourselves.
        let mut names: Vec<(i64, String, String)> = query(
            "UPDATE node_tasks SET status = 'running', attempt = 0, wake_at = ?, wait_reason = NULL, \
               entered_at = ?, updated_at = ? \
             WHERE job_id = ? AND status = 'needs_input' RETURNING seq, name, state",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(job_id)
        .fetch_all(&mut tx)
        .await?;
        if names.is_empty() {
            return Err(StoreError::Conflict(
                "no node of this job is needs_input".into(),
            ));
        }
        names.sort_by_key(|(seq, _, _)| *seq);
        for (_, name, state) in &names {
            let e = NewEvent::new(EventKind::Operator)
                .node(name)
                .transition("needs_input", state)
                .message(format!("resumed by {who}"));
            insert_event(&mut tx, job_id, now, &e).await?;
        }
        query("UPDATE jobs SET operator_seq = operator_seq + 1 WHERE id = ?")
            .bind(job_id)
            .execute(&mut tx)
            .await?;
        derive_job_state(&mut tx, job_id, now).await?;
        self.commit(tx).await?;
        self.notify_appended(job_id);
        Ok(names.into_iter().map(|(_, n, _)| n).collect())
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
        lock_job(&mut tx, job_id).await?;
        let row: Option<(String, String)> =
            query("SELECT status, spec FROM node_tasks WHERE job_id = ? AND name = ?")
                .bind(job_id)
                .bind(node)
                .fetch_optional(&mut tx)
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
        query("UPDATE node_tasks SET spec = ?, updated_at = ? WHERE job_id = ? AND name = ?")
            .bind(spec.to_string())
            .bind(now)
            .bind(job_id)
            .bind(node)
            .execute(&mut tx)
            .await?;
        query("UPDATE jobs SET operator_seq = operator_seq + 1, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(job_id)
            .execute(&mut tx)
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
/// replaces. json-patch's, which the simulated apiserver uses for merge patches too.
pub use json_patch::merge as merge_patch;

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

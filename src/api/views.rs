//! The JSON shapes the API returns. Times are RFC 3339 (UTC); states use their one string form.

use serde_json::{Value, json};

use crate::store::{EventRow, JobRow, ScheduleRow, TaskRow, rfc3339};

pub fn job(j: &JobRow, tasks: Option<&[TaskRow]>) -> Value {
    let mut v = json!({
        "id": j.id,
        "kind": j.kind,
        "tenant": j.tenant,
        "owner": j.owner,
        "cluster": j.cluster,
        "state": j.state,
        "params": j.params(),
        "concurrency": j.concurrency,
        "deadline": j.deadline_at.map(rfc3339),
        "cancel_requested": j.cancel_requested,
        "schedule_id": j.schedule_id,
        "created_at": rfc3339(j.created_at),
        "updated_at": rfc3339(j.updated_at),
        "finished_at": j.finished_at.map(rfc3339),
        "next_wake_at": j.next_run_at.map(rfc3339),
    });
    if let Some(tasks) = tasks {
        let nodes: Vec<Value> = tasks.iter().map(node).collect();
        let mut counts = serde_json::Map::new();
        for t in tasks {
            let n = counts.entry(t.status.as_str()).or_insert(json!(0));
            *n = json!(n.as_i64().unwrap_or(0) + 1);
        }
        // The current wait: the nodes that wait, and on what.
        let waits: Vec<Value> = tasks
            .iter()
            .filter(|t| t.wait_reason.is_some())
            .map(|t| json!({ "node": t.name, "status": t.status, "reason": t.wait_reason, "until": t.wake_at.map(rfc3339) }))
            .collect();
        v["nodes"] = Value::Array(nodes);
        v["node_counts"] = Value::Object(counts);
        v["waits"] = Value::Array(waits);
    }
    v
}

pub fn node(t: &TaskRow) -> Value {
    json!({
        "name": t.name,
        "state": t.state,
        "status": t.status,
        "attempt": t.attempt,
        "attempts_total": t.attempts_total,
        "failure_class": t.failure_class,
        "last_error": t.last_error,
        "wait": t.wait_reason.as_ref().map(|r| json!({ "reason": r, "until": t.wake_at.map(rfc3339) })),
        "external_ids": t.external_ids(),
        "spec": t.spec(),
        "updated_at": rfc3339(t.updated_at),
    })
}

pub fn event(e: &EventRow) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "node": e.node,
        "kind": e.kind,
        "from": e.from_state,
        "to": e.to_state,
        "attempt": e.attempt,
        "class": e.class,
        "message": e.message,
        "data": e.data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
    })
}

pub fn schedule(s: &ScheduleRow) -> Value {
    json!({
        "id": s.id,
        "tenant": s.tenant,
        "owner": s.owner,
        "name": s.name,
        "cron": s.cron,
        "job": serde_json::from_str::<Value>(&s.template).unwrap_or(Value::Null),
        "enabled": s.enabled,
        "next_fire_at": rfc3339(s.next_fire_at),
        "last_fired_at": s.last_fired_at.map(rfc3339),
        "last_job_id": s.last_job_id,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.updated_at),
        "last_error": s.last_error,
        "last_error_at": s.last_error_at.map(rfc3339),
    })
}

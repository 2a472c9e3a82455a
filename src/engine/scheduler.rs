//! Turns cron ticks into jobs.
//!
//! Missed ticks: if the engine was down across several ticks of a schedule, it enqueues **one**
//! job for them when it comes back (not one per missed tick), then continues with the first
//! tick after now. Each tick is fired at most once across restarts and across several engine
//! processes on one database, because firing is a compare-and-set on the schedule's
//! `next_fire_at` in the same transaction that inserts the job.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::Engine;
use super::request;
use crate::store::now_ms;

/// How often due schedules are looked for.
const TICK: Duration = Duration::from_millis(500);

/// Parses a cron expression: the usual 5 fields (minute hour day month weekday), or 6-7 with
/// seconds (and year) first as the `cron` crate reads them.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        n => {
            return Err(format!(
                "`{expr}` has {n} fields; expected 5 (min hour dom month dow) or 6-7 with seconds"
            ));
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("`{expr}`: {e}"))
}

/// The first tick strictly after `after_ms`.
pub fn next_tick(schedule: &cron::Schedule, after_ms: i64) -> Option<i64> {
    let after: DateTime<Utc> = DateTime::from_timestamp_millis(after_ms)?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

pub(super) async fn run(engine: Engine) {
    let mut shutdown = engine.inner.shutdown.clone();
    loop {
        if let Err(e) = fire_due(&engine).await {
            warn!(error = %e, "firing schedules failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn fire_due(engine: &Engine) -> Result<(), crate::store::StoreError> {
    let store = engine.store();
    let now = now_ms();
    for s in store.due_schedules(now).await? {
        let Ok(cron) = parse_cron(&s.cron) else {
            warn!(schedule = %s.id, cron = %s.cron, "stored cron expression no longer parses; disabling");
            store
                .update_schedule(
                    &s.id,
                    &crate::store::ScheduleChange {
                        enabled: Some(false),
                        ..Default::default()
                    },
                )
                .await?;
            continue;
        };
        // `None`: this is the expression's last tick (a year field that runs out); it still
        // fires, and the schedule is disabled in the same transaction.
        let next = next_tick(&cron, now);
        let template: serde_json::Value = serde_json::from_str(&s.template)?;
        let req = match request::parse(&template, engine.workflows()) {
            Ok(r) => r,
            Err(errs) => {
                let list: Vec<String> = errs
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                warn!(schedule = %s.id, problems = %list.join("; "), "template no longer admits; skipping this tick");
                store.skip_tick(&s, next).await?;
                continue;
            }
        };
        let wf = engine.workflows()[&req.kind].clone();
        let job = req.into_job(&wf, &s.tenant, &s.owner, Some(s.id.clone()));
        if let Some(job_id) = store.fire_schedule(&s, next, &job).await? {
            let missed = next_tick(&cron, s.next_fire_at).is_some_and(|second| second <= now);
            info!(schedule = %s.id, name = %s.name, job_id = %job_id, missed_ticks_collapsed = missed, "schedule fired");
            engine.inner.metrics.schedule_fires.inc();
            engine.wake(&job_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_is_read_with_seconds_at_zero() {
        let s = parse_cron("*/5 * * * *").unwrap();
        let base = DateTime::parse_from_rfc3339("2026-01-01T00:01:30Z")
            .unwrap()
            .timestamp_millis();
        let next = next_tick(&s, base).unwrap();
        assert_eq!(crate::store::rfc3339(next), "2026-01-01T00:05:00.000Z");
    }

    #[test]
    fn a_bad_expression_says_what_is_wrong() {
        assert!(parse_cron("every day").unwrap_err().contains("2 fields"));
        assert!(parse_cron("61 * * * *").is_err());
    }
}

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

use std::sync::Arc;

use super::Engine;
use super::intake::{Intake, Refused};
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

pub(super) async fn run(engine: Engine, intake: Arc<Intake>) {
    let mut shutdown = engine.inner.shutdown.clone();
    loop {
        if let Err(e) = fire_due(&engine, &intake).await {
            warn!(error = %e, "firing schedules failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Fires every due schedule as its owner, through the intake: the template is checked
/// again in full at the moment it fires. A tick that makes no job says why on the schedule.
async fn fire_due(engine: &Engine, intake: &Intake) -> Result<(), crate::store::StoreError> {
    let store = engine.store();
    let now = now_ms();
    let metrics = &engine.inner.metrics;
    for s in store.due_schedules(now).await? {
        let Ok(cron) = parse_cron(&s.cron) else {
            warn!(schedule = %s.id, cron = %s.cron, "stored cron expression no longer parses; disabling");
            store
                .pause_schedule(&s.id, "its cron expression no longer parses")
                .await?;
            continue;
        };
        // `None`: this is the expression's last tick (a year field that runs out); it still
        // fires, and the schedule is disabled in the same transaction.
        let next = next_tick(&cron, now);
        // The owner must still exist and still hold a role in the schedule's tenant.
        let owner = intake
            .auth()
            .principal(&s.owner)
            .filter(|p| p.can_access(&s.tenant, &s.owner));
        let Some(owner) = owner else {
            let why = format!(
                "paused: its owner {} no longer exists or no longer holds a role in tenant {}; an admin or a tenant admin of {} can take it over by editing it",
                s.owner, s.tenant, s.tenant
            );
            warn!(schedule = %s.id, owner = %s.owner, "schedule owner gone; pausing");
            store.pause_schedule(&s.id, &why).await?;
            metrics.schedule_refused("owner_gone");
            continue;
        };
        let template: serde_json::Value = serde_json::from_str(&s.template)?;
        let job = match intake.admit_job(owner, &template, Some(s.id.clone())).await {
            Ok(job) => job,
            Err(Refused::Store(e)) => return Err(e),
            Err(r) => {
                let why = r.summary();
                warn!(schedule = %s.id, problems = %why, "tick made no job");
                store.skip_tick(&s, next, &why).await?;
                let reason = if r.is_permanent() {
                    "refused"
                } else {
                    "unavailable"
                };
                metrics.schedule_refused(reason);
                continue;
            }
        };
        if let Some(job_id) = store.fire_schedule(&s, next, &job).await? {
            let missed = next_tick(&cron, s.next_fire_at).is_some_and(|second| second <= now);
            info!(schedule = %s.id, name = %s.name, job_id = %job_id, missed_ticks_collapsed = missed, "schedule fired");
            metrics.schedule_fires.inc();
            engine.wake(&job_id);
        }
    }
    Ok(())
}

/// The shortest gap between two of an expression's next ticks (over its next 500, or a
/// week), so a schedule that would fire more often than the configured minimum is refused.
pub fn shortest_interval(schedule: &cron::Schedule, from_ms: i64) -> Option<Duration> {
    let from: DateTime<Utc> = DateTime::from_timestamp_millis(from_ms)?;
    let horizon = from + chrono::TimeDelta::days(7);
    let ticks: Vec<DateTime<Utc>> = schedule
        .after(&from)
        .take_while(|t| *t <= horizon)
        .take(500)
        .collect();
    ticks
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .min()
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
    fn the_shortest_interval_is_the_closest_pair_of_ticks() {
        let at = |e: &str| shortest_interval(&parse_cron(e).unwrap(), 0).unwrap();
        assert_eq!(at("*/3 * * * * *"), Duration::from_secs(3));
        assert_eq!(at("0,30 * * * * *"), Duration::from_secs(30));
        assert_eq!(at("*/5 * * * *"), Duration::from_secs(300));
        assert_eq!(at("0,1 3 * * *"), Duration::from_secs(60));
    }

    #[test]
    fn a_bad_expression_says_what_is_wrong() {
        assert!(parse_cron("every day").unwrap_err().contains("2 fields"));
        assert!(parse_cron("61 * * * *").is_err());
    }
}

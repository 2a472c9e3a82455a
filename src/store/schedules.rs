//! Schedules: cron expressions that enqueue a job template.
//!
//! Exactly one job per tick: firing is a compare-and-set on `next_fire_at` in the same
//! transaction that inserts the job, so two engine processes on one file, or a restart in the
//! middle, can never enqueue a tick twice.

use super::sql::query;

use super::events::{NewEvent, insert_event};
use super::jobs::{NewJob, insert_job};
use super::{Result, Store, StoreError, now_ms, rfc3339};
use crate::model::EventKind;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: String,
    pub tenant: String,
    pub owner: String,
    pub name: String,
    pub cron: String,
    pub template: String,
    pub enabled: bool,
    pub next_fire_at: i64,
    pub last_fired_at: Option<i64>,
    pub last_job_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why the last tick made no job, if it made none.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant, owner, name, cron, template, enabled, next_fire_at, \
     last_fired_at, last_job_id, created_at, updated_at, last_error, last_error_at";

/// The changeable parts of a schedule; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ScheduleChange {
    pub cron: Option<String>,
    pub template: Option<String>,
    pub enabled: Option<bool>,
    pub next_fire_at: Option<i64>,
    /// The principal whose authority the schedule now fires with (whoever last changed it).
    pub owner: Option<String>,
}

impl Store {
    pub async fn create_schedule(&self, s: &ScheduleRow) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // The name is taken or not in the insert itself: two replicas creating the same name
        // at once make one schedule, and the other is told so.
        let inserted = query(format!(
            "INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant, name) DO NOTHING"
        ))
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.owner)
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.template)
        .bind(s.enabled)
        .bind(s.next_fire_at)
        .bind(s.last_fired_at)
        .bind(&s.last_job_id)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(&s.last_error)
        .bind(s.last_error_at)
        .execute(&mut tx)
        .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {} already has a schedule named `{}`",
                s.tenant, s.name
            )));
        }
        self.commit(tx).await?;
        Ok(())
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>> {
        Ok(
            query(format!("SELECT {COLUMNS} FROM schedules WHERE id = ?"))
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn list_schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRow>> {
        let q = match tenant {
            Some(t) => query(format!(
                "SELECT {COLUMNS} FROM schedules WHERE tenant = ? ORDER BY tenant, name"
            ))
            .bind(t),
            None => query(format!(
                "SELECT {COLUMNS} FROM schedules ORDER BY tenant, name"
            )),
        };
        Ok(q.fetch_all(&self.read).await?)
    }

    pub async fn update_schedule(&self, id: &str, c: &ScheduleChange) -> Result<()> {
        query(
            "UPDATE schedules SET cron = COALESCE(?, cron), template = COALESCE(?, template), \
               enabled = COALESCE(?, enabled), next_fire_at = COALESCE(?, next_fire_at), \
               owner = COALESCE(?, owner), updated_at = ? WHERE id = ?",
        )
        .bind(&c.cron)
        .bind(&c.template)
        .bind(c.enabled)
        .bind(c.next_fire_at)
        .bind(&c.owner)
        .bind(now_ms())
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn delete_schedule(&self, id: &str) -> Result<bool> {
        Ok(query("DELETE FROM schedules WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?
            > 0)
    }

    /// Enabled schedules whose next tick is due.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRow>> {
        Ok(query(format!(
            "SELECT {COLUMNS} FROM schedules WHERE enabled = TRUE AND next_fire_at <= ? ORDER BY next_fire_at"
        ))
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Enqueues `job` for the tick `s.next_fire_at` and moves the schedule on to `next` (or,
    /// after its last tick, disables it), in one transaction. `None`: someone else fired this
    /// tick first (or the schedule changed).
    pub async fn fire_schedule(
        &self,
        s: &ScheduleRow,
        next: Option<i64>,
        job: &NewJob,
    ) -> Result<Option<String>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let moved = query(
            "UPDATE schedules SET next_fire_at = COALESCE(?, next_fire_at), enabled = ?, \
               last_fired_at = ?, last_job_id = ?, last_error = NULL, last_error_at = NULL, \
               updated_at = ? \
             WHERE id = ? AND next_fire_at = ? AND enabled = TRUE",
        )
        .bind(next)
        .bind(next.is_some())
        .bind(now)
        .bind(&job.id)
        .bind(now)
        .bind(&s.id)
        .bind(s.next_fire_at)
        .execute(&mut tx)
        .await?;
        if moved == 0 {
            return Ok(None);
        }
        insert_job(&mut tx, job).await?;
        let e = NewEvent::new(EventKind::Note)
            .message(format!(
                "enqueued by schedule {} for its tick at {}",
                s.name,
                rfc3339(s.next_fire_at)
            ))
            .data(serde_json::json!({ "schedule_id": s.id, "tick": rfc3339(s.next_fire_at) }));
        insert_event(&mut tx, &job.id, now, &e).await?;
        self.commit(tx).await?;
        self.notify_appended(&job.id);
        Ok(Some(job.id.clone()))
    }

    /// Moves a schedule past ticks that cannot fire (its template no longer admits), so a
    /// broken template does not spin.
    pub async fn skip_tick(&self, s: &ScheduleRow, next: Option<i64>, why: &str) -> Result<()> {
        let now = now_ms();
        query(
            "UPDATE schedules SET next_fire_at = COALESCE(?, next_fire_at), enabled = ?, \
               last_error = ?, last_error_at = ?, updated_at = ? \
             WHERE id = ? AND next_fire_at = ?",
        )
        .bind(next)
        .bind(next.is_some())
        .bind(why)
        .bind(now)
        .bind(now)
        .bind(&s.id)
        .bind(s.next_fire_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Pauses a schedule that must not fire any more as it stands (its owner is gone or no
    /// longer holds the role), saying why.
    pub async fn pause_schedule(&self, id: &str, why: &str) -> Result<()> {
        let now = now_ms();
        query(
            "UPDATE schedules SET enabled = FALSE, last_error = ?, last_error_at = ?, updated_at = ? \
             WHERE id = ?",
        )
        .bind(why)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

//! `/v1/schedules`: cron expressions that enqueue a job template.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, parse_json};
use super::{AppState, not_found, resolve_tenant, views};
use crate::config::Principal;
use crate::engine::request::{self, FieldError, check_dns_label};
use crate::engine::scheduler::{next_tick, parse_cron};
use crate::model::Role;
use crate::store::{ScheduleChange, ScheduleRow, now_ms};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSchedule {
    name: String,
    cron: String,
    job: Value,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleUpdate {
    cron: Option<String>,
    job: Option<Value>,
    enabled: Option<bool>,
}

/// Reads a typed body, naming the offending field on failure.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .unwrap_or("(body)")
            .to_string();
        ApiError::field(field, msg)
    })
}

/// Checks a job template as `POST /v1/jobs` would, with fields prefixed `job.`.
fn check_template(st: &AppState, p: &Principal, job: &Value) -> Result<String, ApiError> {
    let req = request::parse(job, st.engine.workflows()).map_err(|errs| {
        ApiError::Invalid(
            errs.into_iter()
                .map(|e| FieldError::new(format!("job.{}", e.field), e.message))
                .collect(),
        )
    })?;
    resolve_tenant(&st.auth, p, req.tenant.as_deref(), &req.cluster)
}

fn cron_next(expr: &str) -> Result<i64, ApiError> {
    let schedule = parse_cron(expr).map_err(|e| ApiError::field("cron", e))?;
    next_tick(&schedule, now_ms()).ok_or_else(|| ApiError::field("cron", "never fires again"))
}

pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let s: NewSchedule = typed(parse_json(&body)?)?;
    // Every problem at once: name, cron and the job template.
    let checks = (
        check_dns_label(&s.name).map_err(|e| ApiError::field("name", e)),
        cron_next(&s.cron),
        check_template(&st, &p, &s.job),
    );
    let (next_fire_at, tenant) = match checks {
        (Ok(()), Ok(next), Ok(tenant)) => (next, tenant),
        (a, b, c) => {
            let mut fields = Vec::new();
            for e in [a.err(), b.err(), c.err()].into_iter().flatten() {
                match e {
                    ApiError::Invalid(f) => fields.extend(f),
                    other => return Err(other),
                }
            }
            return Err(ApiError::Invalid(fields));
        }
    };
    let now = now_ms();
    let row = ScheduleRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant,
        owner: p.name.clone(),
        name: s.name,
        cron: s.cron,
        template: s.job.to_string(),
        enabled: s.enabled,
        next_fire_at,
        last_fired_at: None,
        last_job_id: None,
        created_at: now,
        updated_at: now,
    };
    st.engine.store().create_schedule(&row).await?;
    Ok((StatusCode::CREATED, Json(views::schedule(&row))).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let tenant = if p.role == Role::Admin {
        None
    } else {
        p.tenant.as_deref()
    };
    let rows = st.engine.store().list_schedules(tenant).await?;
    let items: Vec<Value> = rows
        .iter()
        .filter(|s| p.can_access(&s.tenant, &s.owner))
        .map(views::schedule)
        .collect();
    Ok(Json(json!({ "schedules": items })))
}

async fn visible(st: &AppState, p: &Principal, id: &str) -> Result<ScheduleRow, ApiError> {
    match st.engine.store().schedule(id).await? {
        Some(s) if p.can_access(&s.tenant, &s.owner) => Ok(s),
        _ => Err(not_found("schedule", id)),
    }
}

pub async fn show(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::schedule(&visible(&st, &p, &id).await?)))
}

pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let current = visible(&st, &p, &id).await?;
    let u: ScheduleUpdate = typed(parse_json(&body)?)?;
    let mut change = ScheduleChange::default();
    if let Some(c) = &u.cron {
        change.next_fire_at = Some(cron_next(c)?);
        change.cron = Some(c.clone());
    }
    if let Some(job) = &u.job {
        let tenant = check_template(&st, &p, job)?;
        if tenant != current.tenant {
            return Err(ApiError::field(
                "job.tenant",
                "a schedule cannot move to another tenant",
            ));
        }
        change.template = Some(job.to_string());
    }
    if let Some(enabled) = u.enabled {
        change.enabled = Some(enabled);
        // Re-enabling starts from the next tick, not from ticks missed while disabled.
        if enabled && !current.enabled && change.next_fire_at.is_none() {
            change.next_fire_at = Some(cron_next(u.cron.as_deref().unwrap_or(&current.cron))?);
        }
    }
    st.engine.store().update_schedule(&id, &change).await?;
    Ok(Json(views::schedule(&visible(&st, &p, &id).await?)))
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    visible(&st, &p, &id).await?;
    st.engine.store().delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

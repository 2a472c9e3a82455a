//! `/v1/schedules`: cron expressions that enqueue a job template.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, parse_json};
use super::openapi;
use super::{AppState, not_found, views};
use crate::config::Principal;
use crate::engine::intake::{Moment, Refused};
use crate::engine::request::{FieldError, check_dns_label};
use crate::engine::scheduler::{next_tick, parse_cron, shortest_interval};
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

/// Checks a job template as `POST /v1/jobs` would — through the intake, as `p`, everything
/// that does not depend on the moment it fires — with fields prefixed `job.`.
async fn check_template(st: &AppState, p: &Principal, job: &Value) -> Result<String, ApiError> {
    let prefixed = |errs: Vec<FieldError>| {
        errs.into_iter()
            .map(|e| FieldError::new(format!("job.{}", e.field), e.message))
            .collect()
    };
    match st.intake.check(p, job, Moment::Template).await {
        Ok((_, tenant)) => Ok(tenant),
        Err(Refused::Invalid(f)) => Err(ApiError::Invalid(prefixed(f))),
        Err(other) => Err(ApiError::from(other)),
    }
}

/// The next tick of a cron expression, refusing one that fires more often than the
/// server's minimum interval.
fn cron_next(st: &AppState, expr: &str) -> Result<i64, ApiError> {
    let schedule = parse_cron(expr).map_err(|e| ApiError::field("cron", e))?;
    let now = now_ms();
    if let Some(gap) = shortest_interval(&schedule, now)
        && gap < st.schedule_min_interval
    {
        return Err(ApiError::field(
            "cron",
            format!(
                "`{expr}` fires every {}s at times; this server's minimum interval is {}s (--schedule-min-interval)",
                gap.as_secs(),
                st.schedule_min_interval.as_secs()
            ),
        ));
    }
    next_tick(&schedule, now).ok_or_else(|| ApiError::field("cron", "never fires again"))
}

/// Creates a schedule; its job template is checked as `POST /v1/jobs` checks a job.
#[utoipa::path(post, path = "/schedules", operation_id = "createSchedule", tag = "schedules", security(("bearerAuth" = [])),
    request_body(content = openapi::NewSchedule, content_type = "application/json"),
    responses((status = 201, description = "The schedule.", body = openapi::Schedule),
    (status = 400, description = "The body is empty or not JSON.", body = openapi::ErrorBody),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 403, description = "The principal may not act for the template's tenant.", body = openapi::ErrorBody),
    (status = 409, description = "The tenant has a schedule of that name.", body = openapi::ErrorBody),
    (status = 422, description = "Some fields are wrong: one entry per problem.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let s: NewSchedule = typed(parse_json(&body)?)?;
    // Every problem at once: name, cron and the job template.
    let checks = (
        check_dns_label(&s.name).map_err(|e| ApiError::field("name", e)),
        cron_next(&st, &s.cron),
        check_template(&st, &p, &s.job).await,
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
        last_error: None,
        last_error_at: None,
    };
    st.engine.store().create_schedule(&row).await?;
    Ok((StatusCode::CREATED, Json(views::schedule(&row))).into_response())
}

/// The schedules the principal may see.
#[utoipa::path(get, path = "/schedules", operation_id = "listSchedules", tag = "schedules", security(("bearerAuth" = [])),
    responses((status = 200, description = "The schedules.", body = openapi::ScheduleList),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
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

/// One schedule.
#[utoipa::path(get, path = "/schedules/{id}", operation_id = "getSchedule", tag = "schedules", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Schedule ID.", max_length = 64)),
    responses((status = 200, description = "The schedule.", body = openapi::Schedule),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn show(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::schedule(&visible(&st, &p, &id).await?)))
}

/// Changes a schedule; whoever changes what it does fires it from then on.
#[utoipa::path(patch, path = "/schedules/{id}", operation_id = "updateSchedule", tag = "schedules", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Schedule ID.", max_length = 64)),
    request_body(content = openapi::ScheduleUpdate, content_type = "application/json"),
    responses((status = 200, description = "The schedule as changed.", body = openapi::Schedule),
    (status = 400, description = "The body is empty or not JSON.", body = openapi::ErrorBody),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 403, description = "The principal may not act for the template's tenant.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 422, description = "Some fields are wrong: one entry per problem.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let current = visible(&st, &p, &id).await?;
    let u: ScheduleUpdate = typed(parse_json(&body)?)?;
    // Whoever changes what a schedule does (template, cron, or enabling it) fires it from
    // then on, with their own rights: the template is checked as them, and its jobs are
    // theirs. Pausing it changes nothing else.
    let takes_over = u.job.is_some() || u.cron.is_some() || u.enabled == Some(true);
    let mut change = ScheduleChange {
        owner: takes_over.then(|| p.name.clone()),
        ..ScheduleChange::default()
    };
    if let Some(c) = &u.cron {
        change.next_fire_at = Some(cron_next(&st, c)?);
        change.cron = Some(c.clone());
    }
    let template: Value = match &u.job {
        Some(job) => job.clone(),
        None => serde_json::from_str(&current.template).unwrap_or(Value::Null),
    };
    if takes_over {
        let tenant = check_template(&st, &p, &template).await?;
        if tenant != current.tenant {
            return Err(ApiError::field(
                "job.tenant",
                "a schedule cannot move to another tenant",
            ));
        }
        if u.job.is_some() {
            change.template = Some(template.to_string());
        }
    }
    if let Some(enabled) = u.enabled {
        change.enabled = Some(enabled);
        // Re-enabling starts from the next tick, not from ticks missed while disabled.
        if enabled && !current.enabled && change.next_fire_at.is_none() {
            change.next_fire_at = Some(cron_next(&st, u.cron.as_deref().unwrap_or(&current.cron))?);
        }
    }
    st.engine.store().update_schedule(&id, &change).await?;
    Ok(Json(views::schedule(&visible(&st, &p, &id).await?)))
}

/// Deletes a schedule; jobs it enqueued stay.
#[utoipa::path(delete, path = "/schedules/{id}", operation_id = "deleteSchedule", tag = "schedules", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Schedule ID.", max_length = 64)),
    responses((status = 204, description = "Deleted."),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    visible(&st, &p, &id).await?;
    st.engine.store().delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

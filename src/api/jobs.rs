//! `/v1/jobs`: submit, list, show, history (JSON or a live SSE stream), cancel, resume and
//! amend a node.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, parse_json};
use super::openapi;
use super::{AppState, not_found, views};
use crate::config::Principal;
use crate::engine::request::FieldError;
use crate::model::{JobState, Role};
use crate::store::{IdempotencyKey, JobFilter, JobRow, Store};

/// Submits a job. An `Idempotency-Key` makes a retry return the job it created.
#[utoipa::path(post, path = "/jobs", operation_id = "submitJob", tag = "jobs", security(("bearerAuth" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; scoped to the submitting user.", min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]+$")),
    request_body(content = inline(openapi::JobRequestBody), description = "A job request: one branch per kind.", content_type = "application/json"),
    responses(
    (status = 202, description = "Accepted: the job as stored.", body = openapi::Job),
    (status = 200, description = "Replayed: the job an earlier request with this Idempotency-Key created.", body = openapi::Job),
    (status = 400, description = "The body is empty or not JSON.", body = openapi::ErrorBody),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 403, description = "The principal may not act for the tenant asked for.", body = openapi::ErrorBody),
    (status = 409, description = "The Idempotency-Key was used for another request, or the cloud cannot take the job now (fields name why).", body = openapi::ErrorBody),
    (status = 422, description = "Some fields are wrong: one entry per problem.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn submit(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_json(&body)?;
    // Every problem at once: the header's and the body's.
    let mut problems = Vec::new();
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().unwrap_or_default().trim();
            if k.is_empty() || k.len() > 255 {
                problems.push(FieldError::new(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                ));
                None
            } else {
                // Keys are scoped to the submitting user (see the store).
                Some(IdempotencyKey {
                    key: k.to_string(),
                    request: body.to_string(),
                })
            }
        }
    };
    let submitted = st.intake.submit(&p, &body, key.as_ref(), problems).await?;
    st.engine.wake(&submitted.job_id);
    let view = job_view(st.engine.store(), &submitted.job_id).await?;
    let status = if submitted.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(view)).into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        format!("/v1/jobs/{}", submitted.job_id).parse().unwrap(),
    );
    if !submitted.created {
        resp.headers_mut()
            .insert("idempotent-replayed", "true".parse().unwrap());
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs of this kind.
    #[param(max_length = 63)]
    kind: Option<String>,
    /// Only jobs in this state.
    #[param(schema_with = job_state_param)]
    state: Option<String>,
    /// Only jobs on this cluster (`namespace/name`).
    #[param(max_length = 127)]
    cluster: Option<String>,
    /// Admins: only this tenant's jobs. Others see only their own tenant's.
    #[param(max_length = 253)]
    tenant: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 64)]
    cursor: Option<String>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

fn job_state_param() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    utoipa::openapi::Ref::from_schema_name("JobState").into()
}

/// The jobs the principal may see, newest first.
#[utoipa::path(get, path = "/jobs", operation_id = "listJobs", tag = "jobs", security(("bearerAuth" = [])), params(ListQuery),
    responses((status = 200, description = "A page of jobs.", body = openapi::JobPage),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 422, description = "A query parameter is wrong.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::field("(query)", e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|e| ApiError::field("state", e))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    let mut wrong = Vec::new();
    if !(1..=500).contains(&limit) {
        wrong.push(FieldError::new("limit", "must be from 1 to 500"));
    }
    for (name, value, max) in [
        ("kind", &q.kind, 63),
        ("cluster", &q.cluster, 127),
        ("tenant", &q.tenant, 253),
        ("cursor", &q.cursor, 64),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > max) {
            wrong.push(FieldError::new(name, format!("at most {max} characters")));
        }
    }
    if !wrong.is_empty() {
        return Err(ApiError::Invalid(wrong));
    }
    let mut filter = JobFilter {
        kind: q.kind,
        state,
        cluster: q.cluster,
        before: q.cursor,
        limit: limit + 1,
        ..Default::default()
    };
    match p.role {
        Role::Admin => filter.tenant = q.tenant,
        Role::TenantAdmin | Role::Member => {
            if q.tenant
                .as_ref()
                .is_some_and(|t| Some(t) != p.tenant.as_ref())
            {
                return Ok(Json(json!({ "jobs": [], "next_cursor": null })));
            }
            filter.tenant = p.tenant.clone();
            if p.role == Role::Member {
                filter.owner = Some(p.name.clone());
            }
        }
    }
    let mut rows = st.engine.store().list_jobs(&filter).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|j| j.id.clone())
    } else {
        None
    };
    let jobs: Vec<Value> = rows.iter().map(|j| views::job(j, None)).collect();
    Ok(Json(json!({ "jobs": jobs, "next_cursor": next })))
}

/// Loads a job the principal may see, or a 404 that does not say which it was.
async fn visible(st: &AppState, p: &Principal, id: &str) -> Result<JobRow, ApiError> {
    match st.engine.store().job(id).await? {
        Some(j) if p.can_access(&j.tenant, &j.owner) => Ok(j),
        _ => Err(not_found("job", id)),
    }
}

async fn job_view(store: &Store, id: &str) -> Result<Value, ApiError> {
    let job = store.job(id).await?.ok_or_else(|| not_found("job", id))?;
    let tasks = store.tasks(id).await?;
    Ok(views::job(&job, Some(&tasks)))
}

/// One job with its nodes.
#[utoipa::path(get, path = "/jobs/{id}", operation_id = "getJob", tag = "jobs", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Job ID.", max_length = 64)),
    responses((status = 200, description = "The job.", body = openapi::Job),
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
    visible(&st, &p, &id).await?;
    Ok(Json(job_view(st.engine.store(), &id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a greater id. Overrides Last-Event-ID.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size (default 1000). JSON only.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// A job's history: JSON pages by default; with `Accept: text/event-stream`, a Server-Sent
/// Events stream: history from `after`, then live, ending once the job is finished.
#[utoipa::path(get, path = "/jobs/{id}/events", operation_id = "getJobEvents", tag = "jobs", security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "Job ID.", max_length = 64), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Used as `after` when `after` is absent; ignored unless an integer.")),
    responses((status = 200, description = "Events oldest first.", content(
        (openapi::EventPage = "application/json"),
        (String = "text/event-stream"))),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 422, description = "A query parameter is wrong.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn events(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::field("(query)", e.body_text()))?;
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::field("after", "must be 0 or more"));
    }
    visible(&st, &p, &id).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let after = q.after.or(last_seen).unwrap_or(0);
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_stream {
        let stream = live_events(
            st.engine.store().clone(),
            id,
            after,
            st.engine.shutdown_signal(),
        );
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::field("limit", "must be from 1 to 10000"));
    }
    let rows = st.engine.store().events(&id, after, limit).await?;
    let next_after = rows.last().map(|e| e.id).unwrap_or(after);
    let events: Vec<Value> = rows.iter().map(views::event).collect();
    Ok(Json(json!({ "events": events, "next_after": next_after })).into_response())
}

/// Streams a job's history from `after`, then live, ending once the job is finished and
/// everything it wrote has been sent. Appends in this process wake it at once; writes by
/// other engine processes are picked up within a second.
fn live_events(
    store: Store,
    job_id: String,
    after: i64,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = store.subscribe_appends();
    stream::unfold(
        Some((store, job_id, after, rx, shutdown)),
        |state| async move {
            let (store, job_id, mut after, mut rx, mut shutdown) = state?;
            let mut finished = false;
            loop {
                // A server shutting down ends its streams, so it does not wait on watchers.
                if *shutdown.borrow() {
                    return None;
                }
                let batch = store.events(&job_id, after, 500).await.ok()?;
                if let Some(last) = batch.last() {
                    after = last.id;
                    let items: Vec<Result<Event, Infallible>> = batch
                        .iter()
                        .map(|e| {
                            Ok(Event::default()
                                .id(e.id.to_string())
                                .event(e.kind.clone())
                                .data(views::event(e).to_string()))
                        })
                        .collect();
                    return Some((
                        stream::iter(items),
                        Some((store, job_id, after, rx, shutdown)),
                    ));
                }
                if finished {
                    return None;
                }
                // The job's final events commit with its final state: once it reads finished,
                // one more empty read means nothing is left to send.
                if store
                    .job(&job_id)
                    .await
                    .ok()?
                    .is_none_or(|j| j.state.is_terminal())
                {
                    finished = true;
                    continue;
                }
                let appended = async {
                    loop {
                        match rx.recv().await {
                            Ok(id) if id == job_id => return,
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => return,
                            Err(RecvError::Closed) => std::future::pending::<()>().await,
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(1), appended) => {}
                    _ = shutdown.changed() => {}
                }
            }
        },
    )
    .flatten()
}

/// Asks the job to stop: in-flight steps finish, nothing new starts.
#[utoipa::path(post, path = "/jobs/{id}/cancel", operation_id = "cancelJob", tag = "jobs", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Job ID.", max_length = 64)),
    responses((status = 202, description = "Cancel recorded; the job as it is now.", body = openapi::Job),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 409, description = "The job is already finished.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn cancel(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    visible(&st, &p, &id).await?;
    st.engine.store().request_cancel(&id, &p.name).await?;
    st.engine.wake(&id);
    Ok((
        StatusCode::ACCEPTED,
        Json(job_view(st.engine.store(), &id).await?),
    )
        .into_response())
}

/// Resumes a job's failed and needs_input nodes.
#[utoipa::path(post, path = "/jobs/{id}/resume", operation_id = "resumeJob", tag = "jobs", security(("bearerAuth" = [])), params(("id" = String, Path, description = "Job ID.", max_length = 64)),
    responses((status = 200, description = "The job, with `resumed`.", body = openapi::Job),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 409, description = "The job is cancelled, or has nothing to resume.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn resume(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = visible(&st, &p, &id).await?;
    if job.cancel_requested {
        return Err(ApiError::Conflict(
            "the job is cancelled; it cannot be resumed".into(),
        ));
    }
    let resumed = st.engine.store().resume(&id, &p.name).await?;
    st.engine.wake(&id);
    let mut view = job_view(st.engine.store(), &id).await?;
    view["resumed"] = json!(resumed);
    Ok(Json(view))
}

/// Applies the body to a `needs_input` node's spec as a JSON merge patch (RFC 7396: objects
/// merge, `null` removes a field). The node's name cannot change.
#[utoipa::path(patch, path = "/jobs/{id}/nodes/{name}", operation_id = "amendNode", tag = "jobs", security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "Job ID.", max_length = 64), ("name" = String, Path, description = "The node's name, a DNS-1123 label.", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
    request_body(content = inline(openapi::NodePatch), description = "A JSON merge patch of the node's spec: each field is set, or removed when null. `name` may only repeat the node's name.", content_type = "application/json"),
    responses((status = 200, description = "The node as amended.", body = openapi::Node),
    (status = 400, description = "The body is empty or not JSON.", body = openapi::ErrorBody),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "Absent, or not the principal's to see (the same answer, so IDs do not leak).", body = openapi::ErrorBody),
    (status = 409, description = "The node is not needs_input, or the cloud cannot take the amended spec now.", body = openapi::ErrorBody),
    (status = 422, description = "Some fields are wrong: one entry per problem.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
    (status = 503, description = "The database cannot be written now, or the cloud could not be asked.", body = openapi::ErrorBody),
))]
pub async fn amend(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // A node name is a DNS-1123 label, checked as Kubernetes would before anything is read.
    crate::engine::request::check_dns_label(&name).map_err(|e| ApiError::field("name", e))?;
    visible(&st, &p, &id).await?;
    let patch = parse_json(&body)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::field(
            "(body)",
            "must be a JSON object of node fields to change",
        ));
    };
    let tasks = st.engine.store().tasks(&id).await?;
    let Some(task) = tasks.iter().find(|t| t.name == name) else {
        return Err(not_found("node", &name));
    };
    let mut patch = patch;
    match patch.remove("name") {
        Some(n) if n.as_str() != Some(name.as_str()) => {
            return Err(ApiError::field(
                "name",
                "a node's name cannot be amended; cancel and submit a new job",
            ));
        }
        _ => {}
    }
    if patch.is_empty() {
        return Err(ApiError::field("(body)", "names no field to change"));
    }
    // Only a node waiting for input can be amended (the store checks again when it writes);
    // asked first, so that a node in flight is not checked against the cloud for nothing.
    if task.status != crate::model::NodeStatus::NeedsInput {
        return Err(ApiError::Conflict(format!(
            "node `{name}` is {}; only a needs_input node can be amended",
            task.status
        )));
    }
    // The amended spec must be one the job kind accepts, beside the job's other nodes.
    if let Some(a) = st.intake.admission()
        && let Some(job) = st.engine.store().job(&id).await?
    {
        let mut amended: Value = serde_json::from_str(&task.spec).unwrap_or_default();
        crate::store::merge_patch(&mut amended, &Value::Object(patch.clone()));
        let others: Vec<Value> = tasks
            .iter()
            .filter(|t| t.name != name)
            .filter_map(|t| serde_json::from_str(&t.spec).ok())
            .collect();
        use crate::engine::admission::Refusal;
        match a
            .check_amend(&job.kind, &job.cluster, &amended, &others)
            .await
        {
            Ok(()) => {}
            Err(Refusal::Invalid(f)) => return Err(ApiError::Invalid(f)),
            Err(Refusal::Conflict(f)) => return Err(ApiError::ConflictFields(f)),
            Err(Refusal::Unavailable(m)) => return Err(ApiError::Unavailable(m)),
        }
    }
    st.engine
        .store()
        .amend_node(&id, &name, &patch, &p.name)
        .await?;
    let tasks = st.engine.store().tasks(&id).await?;
    let task = tasks
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| not_found("node", &name))?;
    Ok(Json(views::node(task)))
}

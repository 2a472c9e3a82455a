//! The HTTP API (axum): jobs, their history, schedules, health, metrics and the OpenAPI
//! document.
//!
//! Invariants: every `/v1` route needs a bearer token (or the portal's session cookie, which
//! `portal::session_principal` resolves to the same principal); a principal never sees another
//! tenant's (or, for members, another user's) jobs: those answer 404 exactly like absent ones.
//! Handlers validate the whole request before they write anything.

mod clusters;
mod error;
mod jobs;
mod metered;
pub mod openapi;
mod schedules;
pub mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::config::Auth;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    /// The one way in: every job and schedule template is checked and stored through it.
    pub intake: Arc<crate::engine::intake::Intake>,
    /// A schedule may not fire more often than this.
    pub schedule_min_interval: std::time::Duration,
    /// The cloud's clients, for the views of clusters and quota.
    pub clients: Option<crate::cloud::Clients>,
    /// The portal's signed-in browsers: a session cookie stands for a principal as a bearer
    /// token does.
    pub sessions: Arc<crate::portal::Sessions>,
}

/// The `/v1` operations, each registered with its document entry (`openapi.rs` says how to
/// add one). Every one needs a bearer token (`router` adds the check).
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::resume))
        .routes(routes!(jobs::amend))
        .routes(routes!(clusters::list))
        .routes(routes!(clusters::nodes))
        .routes(routes!(clusters::catalog))
        .routes(routes!(clusters::quota))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(
            schedules::show,
            schedules::update,
            schedules::delete
        ))
}

/// The operations without a token: health, readiness, metrics and the document.
fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// The OpenAPI document of exactly the routes `router` serves.
pub fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::Base::openapi())
        .nest("/v1", v1_routes())
        .merge(open_routes())
        .into_openapi()
}

pub fn router(state: AppState) -> Router {
    let (v1, _) = v1_routes().split_for_parts();
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let (open, _) = open_routes().split_for_parts();
    Router::new()
        .nest("/v1", v1)
        .merge(open)
        .merge(crate::portal::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metered::track,
        ))
        .with_state(state)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "server",
    responses((status = 200, description = "The process answers.", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

async fn require_token(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let has_bearer = req.headers().contains_key(header::AUTHORIZATION);
    if !has_bearer
        && let Some(principal) = crate::portal::session_principal(&st, req.method(), req.headers())?
    {
        req.extensions_mut().insert(principal);
        return Ok(next.run(req).await);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let principal = st
        .auth
        .authenticate(token)
        .ok_or(ApiError::Unauthorized)?
        .clone();
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Ready when the database answers and, after a write failed, can be written again.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "server", responses(
    (status = 200, description = "The database answers.", body = String, content_type = "text/plain"),
    (status = 503, description = "The database does not answer, or cannot be written yet.", body = String, content_type = "text/plain"),
))]
async fn readyz(State(st): State<AppState>) -> Response {
    match st.engine.store().ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not ready: {e}\n"),
        )
            .into_response(),
    }
}

/// Open, or behind `--metrics-token` when one is set; it never names a tenant either way.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "server", responses(
    (status = 200, description = "OpenMetrics text exposition (prometheus-client).", body = String, content_type = "application/openmetrics-text"),
    (status = 401, description = "A metrics token is set and was not presented.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not be read.", body = openapi::ErrorBody),
    (status = 503, description = "The database is not writable.", body = openapi::ErrorBody),
))]
async fn metrics(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if !st.metrics.may_scrape(presented) {
        return Err(ApiError::Unauthorized);
    }
    let jobs = st.engine.store().job_counts().await?;
    let nodes = st.engine.store().node_counts().await?;
    Ok((
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.metrics.render(&jobs, &nodes),
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = openapi::AnyObject)))]
async fn openapi() -> Json<&'static serde_json::Value> {
    Json(&*openapi::DOCUMENT)
}

/// A 404 that reads the same for "absent" and "not yours".
pub(crate) fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} {id} not found"))
}

#[cfg(test)]
mod tests {
    /// Axum cannot list a router's routes, so the other half of "the document and the router
    /// agree" is checked where routes are added: the API's modules add them only through
    /// `.routes(routes!(…))`, which registers the document entry too. A route that belongs in
    /// no document (the portal under /ui) is added by `.route`/`.nest_service` and listed here.
    #[test]
    fn every_route_is_registered_with_its_document_entry() {
        const UNDOCUMENTED: &[&str] = &["\"/ui"];
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("jobs.rs", include_str!("jobs.rs")),
            ("clusters.rs", include_str!("clusters.rs")),
            ("schedules.rs", include_str!("schedules.rs")),
        ];
        for (file, src) in sources {
            // Spelt in two so that this test's own source does not match.
            let needles = [concat!(".rou", "te("), concat!(".nest_", "service(")];
            for (at, _) in needles.iter().flat_map(|n| src.match_indices(n)) {
                let call = &src[at..src[at..].find(',').map_or(src.len(), |e| at + e)];
                assert!(
                    UNDOCUMENTED.iter().any(|u| call.contains(u)),
                    "{file}: `{call}` adds a route the OpenAPI document does not describe; \
                     annotate the handler with #[utoipa::path] and add it with .routes(routes!(…))"
                );
            }
        }
    }

    /// Operation IDs are unique (clients generated from the document name methods by them).
    #[test]
    fn operation_ids_are_unique() {
        let doc = &*super::openapi::DOCUMENT;
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all, "{ids:?}");
    }

    /// The document names every path parameter it uses, with bounds.
    #[test]
    fn every_parameter_is_bounded() {
        let doc = &*super::openapi::DOCUMENT;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                // Last-Event-ID is any text by the SSE spec (ignored unless an integer).
                let params = op["parameters"].as_array().into_iter().flatten();
                for p in params.filter(|p| p["name"] != "Last-Event-ID") {
                    let s = &p["schema"];
                    let bounded = ["maxLength", "maximum", "minimum", "enum", "$ref", "pattern"]
                        .iter()
                        .any(|k| !s[k].is_null());
                    assert!(
                        bounded,
                        "{method} {path}: parameter {} unbounded: {s}",
                        p["name"]
                    );
                }
            }
        }
    }
}

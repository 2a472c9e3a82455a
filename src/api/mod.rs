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
mod schedules;
pub mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};

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

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/resume", post(jobs::resume))
        .route("/jobs/{id}/nodes/{name}", patch(jobs::amend))
        .route("/clusters", get(clusters::list))
        .route("/clusters/{ns}/{name}/nodes", get(clusters::nodes))
        .route("/clusters/{ns}/{name}/catalog", get(clusters::catalog))
        .route("/clusters/{ns}/{name}/quota", get(clusters::quota))
        .route("/schedules", post(schedules::create).get(schedules::list))
        .route(
            "/schedules/{id}",
            get(schedules::show)
                .patch(schedules::update)
                .delete(schedules::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::portal::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
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
async fn metrics(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if !st.metrics.may_scrape(presented) {
        return Err(ApiError::Unauthorized);
    }
    let counts = st.engine.store().job_counts().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(&counts),
    )
        .into_response())
}

async fn openapi() -> Response {
    let doc: serde_json::Value =
        serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON (tested)");
    Json(doc).into_response()
}

/// The OpenAPI document, kept beside the handlers it describes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A 404 that reads the same for "absent" and "not yours".
pub(crate) fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} {id} not found"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/events",
            "/v1/jobs/{id}/cancel",
            "/v1/jobs/{id}/resume",
            "/v1/jobs/{id}/nodes/{name}",
            "/v1/clusters",
            "/v1/clusters/{ns}/{name}/nodes",
            "/v1/clusters/{ns}/{name}/catalog",
            "/v1/clusters/{ns}/{name}/quota",
            "/v1/schedules",
            "/v1/schedules/{id}",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "openapi.json lacks {p}");
        }
    }
}

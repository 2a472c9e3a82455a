//! Nova's server routes and their handlers.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::super::{Pairs, Shared, Token, page};
use super::views::listed;
use super::{instance_not_found, is_admin, microversion};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/servers", get(list).post(create))
        .route("/servers/detail", get(list_detail))
        .route("/servers/{id}", get(show).delete(delete))
        .route("/servers/{id}/action", post(action))
}

async fn create(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.create_server(&t, &body["server"], microversion(&headers)) {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(State(cloud): State<Shared>, Extension(t): Extension<Token>, q: Pairs) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let servers = match listed(&c, &t, &q, false) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = servers
        .into_iter()
        .map(|s| json!({ "id": s.id, "name": s.name, "links": c.server_links(&s.id) }))
        .collect();
    Json(json!({ "servers": page(items, &q) })).into_response()
}

async fn list_detail(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    q: Pairs,
) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let mv = microversion(&headers);
    let servers = match listed(&c, &t, &q, true) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = servers
        .into_iter()
        .map(|s| c.server_json(s, is_admin(&t), mv))
        .collect();
    Json(json!({ "servers": page(items, &q) })).into_response()
}

async fn show(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    match c.server_index(&t, &id) {
        Some(i) => {
            let v = c.server_json(&c.servers[i], is_admin(&t), microversion(&headers));
            Json(json!({ "server": v })).into_response()
        }
        None => instance_not_found(&id).into_response(),
    }
}

async fn delete(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.delete_server(&t, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn action(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.server_action(&t, &id, &body) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

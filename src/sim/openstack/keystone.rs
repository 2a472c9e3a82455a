//! Keystone v3: password authentication with project scope, and the service catalog.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Shared, Token, error, unauthorized, version_doc};

/// How long an issued token lives (Keystone's default).
const TOKEN_LIFE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", post(issue))
}

async fn version(State(cloud): State<Shared>) -> Response {
    let base = cloud.lock().unwrap().base.clone();
    axum::Json(json!({ "version": version_doc(&base, "v3.14", "/identity/v3/", None) }))
        .into_response()
}

/// `POST /v3/auth/tokens` with the password method and a project scope (by name or ID).
async fn issue(State(cloud): State<Shared>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "error", "Malformed request body.");
    };
    let auth = &body["auth"];
    let user = &auth["identity"]["password"]["user"];
    let (Some(name), Some(password)) = (user["name"].as_str(), user["password"].as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "error",
            "Expected a password identity with user name and password.",
        );
    };
    let scope = &auth["scope"]["project"];
    let mut c = cloud.lock().unwrap();
    let Some(project) = c.projects.iter().find(|p| {
        scope["id"].as_str() == Some(p.id.as_str())
            || scope["name"].as_str() == Some(p.name.as_str())
    }) else {
        return unauthorized();
    };
    let Some(u) = project
        .users
        .iter()
        .find(|u| u.name == name && u.password.matches(password))
    else {
        return unauthorized();
    };
    let expires_at = chrono::Utc::now() + TOKEN_LIFE;
    let token = Token {
        project_id: project.id.clone(),
        user_id: u.id.clone(),
        roles: u.roles.clone(),
        expires_at,
    };
    let body = json!({ "token": {
        "methods": ["password"],
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "user": { "id": u.id, "name": u.name, "domain": { "id": "default", "name": "Default" } },
        "project": { "id": project.id, "name": project.name, "domain": { "id": "default", "name": "Default" } },
        "roles": u.roles.iter().map(|r| json!({ "id": r, "name": r })).collect::<Vec<_>>(),
        "catalog": catalog(&c.base, &c.region),
    }});
    let id = uuid::Uuid::new_v4().simple().to_string();
    c.tokens.insert(id.clone(), token);
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        "x-subject-token",
        id.parse().expect("a UUID is a valid header value"),
    );
    resp
}

/// The service catalog: one public endpoint per service, in one region.
fn catalog(base: &str, region: &str) -> Value {
    let service = |kind: &str, name: &str, path: &str| {
        json!({
            "type": kind, "name": name, "id": name,
            "endpoints": [{ "id": format!("{name}-public"), "interface": "public", "region": region,
                            "region_id": region, "url": format!("{base}{path}") }],
        })
    };
    json!([
        service("identity", "keystone", "/identity/v3"),
        service("compute", "nova", "/compute/v2.1"),
        service("network", "neutron", "/networking"),
        service("block-storage", "cinderv3", "/volume/v3"),
        service("image", "glance", "/image"),
    ])
}

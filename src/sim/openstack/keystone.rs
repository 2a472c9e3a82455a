//! Keystone v3: password authentication with project scope, the service catalog, token
//! validation and the projects a token's user may scope to.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Cloud, Shared, Token, error, token_from, unauthorized, version_doc};

/// How long an issued token lives (Keystone's default).
const TOKEN_LIFE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", post(issue).get(validate).head(check))
        .route("/v3/auth/projects", get(projects))
}

async fn version(State(cloud): State<Shared>) -> Response {
    let base = cloud.lock().unwrap().base.clone();
    let mut v = version_doc(&base, "v3.14", "/identity/v3/", None);
    v["status"] = json!("stable");
    let v = super::with_media_type(v, "application/vnd.openstack.identity-v3+json", false);
    axum::Json(json!({ "version": v })).into_response()
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
    let now = chrono::Utc::now();
    let token = Token {
        project_id: project.id.clone(),
        user_id: u.id.clone(),
        roles: u.roles.clone(),
        issued_at: now,
        expires_at: now + TOKEN_LIFE,
    };
    let body = token_body(&c, &token, true);
    let id = uuid::Uuid::new_v4().simple().to_string();
    c.tokens.insert(id.clone(), token);
    with_subject((StatusCode::CREATED, axum::Json(body)).into_response(), &id)
}

fn with_subject(mut resp: Response, id: &str) -> Response {
    resp.headers_mut().insert(
        "x-subject-token",
        id.parse().expect("a token ID is a valid header value"),
    );
    resp
}

/// A token as Keystone shows it when it issues or validates one.
fn token_body(c: &Cloud, t: &Token, with_catalog: bool) -> Value {
    let project = c.project(&t.project_id);
    let user = project.and_then(|p| p.users.iter().find(|u| u.id == t.user_id));
    let mut body = json!({ "token": {
        "methods": ["password"],
        "expires_at": t.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "issued_at": t.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "audit_ids": [],
        "user": { "id": t.user_id, "name": user.map(|u| u.name.as_str()), "domain": { "id": "default", "name": "Default" }, "password_expires_at": null },
        "project": { "id": t.project_id, "name": project.map(|p| p.name.as_str()), "domain": { "id": "default", "name": "Default" } },
        "is_domain": false,
        "roles": t.roles.iter().map(|r| json!({ "id": r, "name": r })).collect::<Vec<_>>(),
    }});
    if with_catalog {
        body["token"]["catalog"] = catalog(&c.base, &c.region);
    }
    body
}

/// `GET /v3/auth/tokens`: validates the `X-Subject-Token` for the holder of `X-Auth-Token`
/// and shows it (without the catalog under `?nocatalog`). Keystone's policy
/// (`identity:validate_token`) lets an admin or the token's own user validate it.
async fn validate(State(cloud): State<Shared>, headers: HeaderMap, q: super::Pairs) -> Response {
    let Some(caller) = token_from(&cloud, &headers, "x-auth-token") else {
        return unauthorized();
    };
    let subject_id = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Some(subject) = token_from(&cloud, &headers, "x-subject-token") else {
        return error(
            StatusCode::NOT_FOUND,
            "error",
            &format!("Could not find token: {subject_id}."),
        );
    };
    if !caller.is_admin() && caller.user_id != subject.user_id {
        return error(
            StatusCode::FORBIDDEN,
            "error",
            "You are not authorized to perform the requested action: identity:validate_token.",
        );
    }
    let c = cloud.lock().unwrap();
    let with_catalog = !q.iter().any(|(k, _)| k == "nocatalog");
    with_subject(
        axum::Json(token_body(&c, &subject, with_catalog)).into_response(),
        &subject_id,
    )
}

/// `HEAD /v3/auth/tokens`: the same check, no body.
async fn check(State(cloud): State<Shared>, headers: HeaderMap, q: super::Pairs) -> Response {
    let resp = validate(State(cloud), headers, q).await;
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    Response::from_parts(parts, axum::body::Body::empty())
}

/// `GET /v3/auth/projects`: the projects the token's user may scope a token to. A simulated
/// user belongs to the one project it is listed under.
async fn projects(State(cloud): State<Shared>, headers: HeaderMap) -> Response {
    let Some(caller) = token_from(&cloud, &headers, "x-auth-token") else {
        return unauthorized();
    };
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .projects
        .iter()
        .filter(|p| p.users.iter().any(|u| u.id == caller.user_id))
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "domain_id": "default", "enabled": true,
                "description": "", "is_domain": false, "parent_id": "default", "tags": [],
                "options": {},
                "links": { "self": format!("{}/identity/v3/projects/{}", c.base, p.id) },
            })
        })
        .collect();
    axum::Json(json!({
        "projects": items,
        "links": { "self": format!("{}/identity/v3/auth/projects", c.base), "previous": null, "next": null },
    }))
    .into_response()
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

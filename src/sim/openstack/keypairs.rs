//! Nova keypairs (`/os-keypairs`): a user's public keys by name, which a server names in
//! `key_name`. A keypair belongs to the user, not the project, as in Nova: the token's user
//! sees its own keypairs in any project it scopes to.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::servers::{ApiError, microversion};
use super::{Cloud, Keypair, Shared, Token, now_rfc3339};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/os-keypairs", get(list).post(create))
        .route("/os-keypairs/{name}", get(show).delete(delete))
}

/// A stand-in for Nova's fingerprint (the MD5 of the decoded key, colon-separated): the
/// same layout, from a hash of the key text.
pub fn fingerprint(public_key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let bytes: Vec<u8> = (0..2u8)
        .flat_map(|salt| {
            let mut h = std::hash::DefaultHasher::new();
            (salt, public_key).hash(&mut h);
            h.finish().to_be_bytes()
        })
        .collect();
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// Whether a public key reads as OpenSSH's one-line form (type, base64 blob, comment).
fn well_formed(key: &str) -> bool {
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && blob.len() >= 16
        && blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
}

impl Cloud {
    /// Whether `user` has a keypair named `name` (what Nova checks for a server's `key_name`).
    pub fn has_keypair(&self, user: &str, name: &str) -> bool {
        self.keypairs
            .iter()
            .any(|k| k.user_id == user && k.name == name)
    }
}

fn not_found(name: &str, user: &str) -> Response {
    ApiError::nova(
        StatusCode::NOT_FOUND,
        &format!("Keypair {name} not found for user {user}"),
    )
    .into_response()
}

/// The fields every keypair view has; the list adds nothing, the create adds `user_id`
/// (2.10), the show the database row.
fn brief(k: &Keypair) -> Value {
    json!({ "name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint, "type": "ssh" })
}

async fn list(State(cloud): State<Shared>, Extension(t): Extension<Token>) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .keypairs
        .iter()
        .filter(|k| k.user_id == t.user_id)
        .map(|k| json!({ "keypair": brief(k) }))
        .collect();
    Json(json!({ "keypairs": items }))
}

/// `POST /os-keypairs` with a public key (importing; a generated key is not simulated).
/// 2.2 answers 201 instead of 200.
async fn create(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let req = &body["keypair"];
    let Some(name) = req["name"].as_str().filter(|n| !n.trim().is_empty()) else {
        return ApiError::nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute keypair. 'name' is a required property",
        )
        .into_response();
    };
    let Some(public_key) = req["public_key"].as_str() else {
        return ApiError::nova(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute keypair. 'public_key' is a required property",
        )
        .into_response();
    };
    if !well_formed(public_key) {
        return ApiError::nova(
            StatusCode::BAD_REQUEST,
            "Keypair data is invalid: failed to generate fingerprint",
        )
        .into_response();
    }
    let mut c = cloud.lock().unwrap();
    if c.has_keypair(&t.user_id, name) {
        return ApiError::nova(
            StatusCode::CONFLICT,
            &format!("Key pair '{name}' already exists."),
        )
        .into_response();
    }
    let k = Keypair {
        id: c.keypairs.iter().map(|k| k.id).max().unwrap_or(0) + 1,
        name: name.to_string(),
        user_id: t.user_id.clone(),
        public_key: public_key.to_string(),
        fingerprint: fingerprint(public_key),
        created: now_rfc3339(),
    };
    let mut view = brief(&k);
    view["user_id"] = json!(k.user_id);
    c.keypairs.push(k);
    let status = if microversion(&headers) >= (2, 2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(json!({ "keypair": view }))).into_response()
}

async fn show(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(name): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    let Some(k) = c
        .keypairs
        .iter()
        .find(|k| k.user_id == t.user_id && k.name == name)
    else {
        return not_found(&name, &t.user_id);
    };
    let mut view = brief(k);
    let created = chrono::DateTime::parse_from_rfc3339(&k.created)
        .map(|d| d.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    for (key, v) in [
        ("id", json!(k.id)),
        ("user_id", json!(k.user_id)),
        ("created_at", json!(created)),
        ("updated_at", Value::Null),
        ("deleted", json!(false)),
        ("deleted_at", Value::Null),
    ] {
        view[key] = v;
    }
    Json(json!({ "keypair": view })).into_response()
}

/// 2.2 answers 204 instead of 202.
async fn delete(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let before = c.keypairs.len();
    c.keypairs
        .retain(|k| !(k.user_id == t.user_id && k.name == name));
    if c.keypairs.len() == before {
        return not_found(&name, &t.user_id);
    }
    if microversion(&headers) >= (2, 2) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::ACCEPTED.into_response()
    }
}

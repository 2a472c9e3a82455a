//! How every API failure reaches the client: a status and a JSON body that names the field and
//! the reason, never an internal detail that could carry a secret.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::request::FieldError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON at all.
    Malformed(String),
    /// 422: the body is JSON but some fields are wrong.
    Invalid(Vec<FieldError>),
    Unauthorized,
    Forbidden(String),
    /// 404: absent, or not this principal's to see (so IDs of other tenants do not leak).
    NotFound(String),
    /// 409: the request conflicts with the current state.
    Conflict(String),
    /// 409 naming fields: the request is right but the cloud cannot take it now.
    ConflictFields(Vec<FieldError>),
    /// 503: a dependency (the cloud) could not be asked.
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<crate::config::TenancyError> for ApiError {
    fn from(e: crate::config::TenancyError) -> ApiError {
        use crate::config::TenancyError;
        match e {
            TenancyError::Forbidden(m) => ApiError::Forbidden(m),
            TenancyError::Field(f, m) => ApiError::field(f, m),
        }
    }
}

impl From<crate::engine::intake::Refused> for ApiError {
    fn from(e: crate::engine::intake::Refused) -> ApiError {
        use crate::engine::intake::Refused;
        match e {
            Refused::Invalid(f) => ApiError::Invalid(f),
            Refused::Conflict(f) => ApiError::ConflictFields(f),
            Refused::Forbidden(m) => ApiError::Forbidden(m),
            Refused::Unavailable(m) => ApiError::Unavailable(m),
            Refused::Store(e) => ApiError::from(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            // Nothing was written; the client may retry once the operator has made room.
            e @ StoreError::Unwritable(_) => {
                tracing::error!(error = %e, "store write failed while serving a request");
                ApiError::Unavailable(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "store error while serving a request");
                ApiError::Internal(
                    "the database could not complete the request; see the server log".into(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Malformed(m) => (StatusCode::BAD_REQUEST, json!({ "error": m })),
            ApiError::Invalid(fields) => {
                let summary: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "error": format!("invalid request: {}", summary.join("; ")), "fields": fields }),
                )
            }
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({ "error": "missing or unknown bearer token (Authorization: Bearer <token>)" }),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({ "error": m })),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "error": m })),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({ "error": m })),
            ApiError::ConflictFields(fields) => {
                let summary: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect();
                (
                    StatusCode::CONFLICT,
                    json!({ "error": format!("the cloud cannot take this job now: {}", summary.join("; ")), "fields": fields }),
                )
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": m })),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": m })),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", "Bearer".parse().unwrap());
        }
        resp
    }
}

/// Parses a request body as JSON, turning serde's complaint into a 400 with line and column.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::Malformed(
            "the request body is empty; expected a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("malformed JSON: {e}")))
}

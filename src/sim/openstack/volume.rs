//! Cinder (block storage v3): version list and volume types. Volumes and quota sets arrive
//! with the next slice of the simulator.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Pairs, Shared, VolumeType, not_found, page, version_doc};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(versions))
        .route("/v3/", get(versions))
        .route("/v3/types", get(types))
        .route("/v3/types/{id}", get(volume_type))
        // Older clients put the project in the path.
        .route("/v3/{project}/types", get(types))
}

async fn versions(State(cloud): State<Shared>) -> Json<Value> {
    let base = cloud.lock().unwrap().base.clone();
    Json(json!({ "versions": [version_doc(&base, "v3.0", "/volume/v3/", Some(("3.0", "3.71")))] }))
}

fn type_json(t: &VolumeType) -> Value {
    json!({ "id": t.id, "name": t.name, "is_public": true, "extra_specs": {}, "description": null,
            "os-volume-type-access:is_public": true, "qos_specs_id": null })
}

async fn types(State(cloud): State<Shared>, q: Pairs) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items = c.volume_types.iter().map(type_json).collect();
    Json(json!({ "volume_types": page(items, &q) }))
}

async fn volume_type(State(cloud): State<Shared>, Path(id): Path<String>) -> Response {
    let c = cloud.lock().unwrap();
    match c.volume_types.iter().find(|t| t.id == id || t.name == id) {
        Some(t) => Json(json!({ "volume_type": type_json(t) })).into_response(),
        None => not_found("Volume type", &id),
    }
}

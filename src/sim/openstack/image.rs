//! Glance (image v2): version list and images.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Cloud, Image, Pairs, Shared, not_found, page, param};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v2/images", get(images))
        .route("/v2/images/{id}", get(image))
}

pub(super) async fn versions(State(cloud): State<Shared>) -> Json<Value> {
    let base = cloud.lock().unwrap().base.clone();
    Json(json!({ "versions": [super::version_doc(&base, "v2.16", "/image/v2/", None)] }))
}

fn image_json(c: &Cloud, i: &Image) -> Value {
    json!({
        "id": i.id, "name": i.name, "status": "active", "visibility": "public",
        "container_format": "bare", "disk_format": "qcow2", "min_disk": i.min_disk_gib, "min_ram": 0,
        "size": i.size_bytes, "virtual_size": null, "protected": false, "os_hidden": false, "tags": [],
        "owner": "", "created_at": c.born, "updated_at": c.born,
        "self": format!("/v2/images/{}", i.id), "file": format!("/v2/images/{}/file", i.id),
        "schema": "/v2/schemas/image",
    })
}

async fn images(State(cloud): State<Shared>, q: Pairs) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .images
        .iter()
        .filter(|i| param(&q, "name").is_none_or(|n| n == i.name))
        .map(|i| image_json(&c, i))
        .collect();
    Json(
        json!({ "images": page(items, &q), "first": "/v2/images", "schema": "/v2/schemas/images" }),
    )
}

/// Glance returns the image at the top level, not wrapped.
async fn image(State(cloud): State<Shared>, Path(id): Path<String>) -> Response {
    let c = cloud.lock().unwrap();
    match c.images.iter().find(|i| i.id == id) {
        Some(i) => Json(image_json(&c, i)).into_response(),
        None => not_found("Image", &id),
    }
}

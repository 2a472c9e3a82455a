//! Glance (image v2): version list and images.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Cloud, Image, Pairs, Shared, page, param};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v2/images", get(images))
        .route("/v2/images/{id}", get(image))
}

/// Glance lists its versions with 300 Multiple Choices, as Cinder does.
pub(super) async fn versions(State(cloud): State<Shared>) -> Response {
    let base = cloud.lock().unwrap().base.clone();
    let versions: Vec<Value> = (0..=16)
        .rev()
        .map(|minor| {
            let status = if minor == 16 { "CURRENT" } else { "SUPPORTED" };
            super::bare_version(&base, &format!("v2.{minor}"), "/image/v2/", status)
        })
        .collect();
    (
        axum::http::StatusCode::MULTIPLE_CHOICES,
        Json(json!({ "versions": versions })),
    )
        .into_response()
}

/// An image as Glance shows it. The checksums are stand-ins of the real layout (MD5 hex,
/// SHA-512 hex) derived from the ID; the store is Glance's file store.
fn image_json(c: &Cloud, i: &Image) -> Value {
    let hex = |n: usize| -> String { i.id.replace('-', "").chars().cycle().take(n).collect() };
    json!({
        "checksum": hex(32), "os_hash_algo": "sha512", "os_hash_value": hex(128), "stores": "file",
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
        // Glance's 404 is an HTML page, not JSON.
        None => (
            axum::http::StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            format!(
                "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  \
                 <h1>404 Not Found</h1>\n  No image found with ID {id}<br /><br />\n\n\n\n \
                 </body>\n</html>"
            ),
        )
            .into_response(),
    }
}

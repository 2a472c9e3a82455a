//! The cloud's part of the simulator's console (`/sim/v1`, see `sim::control`): its ground
//! truth and runtime quotas.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, error, ports, servers, volume};

pub fn router() -> Router<Shared> {
    Router::new().route("/quotas/{project}", put(set_quotas))
}

/// Everything the cloud holds now, across projects, or only what `project` (a name or an
/// ID) owns.
pub fn state(cloud: &Shared, project: Option<&str>) -> Value {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let projects: Vec<Value> = c
        .projects
        .iter()
        .map(|p| json!({ "id": p.id, "name": p.name, "quotas": p.quotas }))
        .collect();
    let only = project.map(|want| {
        c.projects
            .iter()
            .find(|p| p.name == want || p.id == want)
            .map(|p| p.id.clone())
            .unwrap_or_default()
    });
    let mine = |owner: &str| only.as_ref().is_none_or(|id| id == owner);
    json!({
        "projects": projects,
        "ports": c.ports.iter().filter(|x| mine(&x.project_id)).map(|p| ports::port_json(p, true)).collect::<Vec<_>>(),
        "floating_ips": c.floating_ips.iter().filter(|x| mine(&x.project_id)).map(|f| ports::fip_json(&c, f)).collect::<Vec<_>>(),
        "volumes": c.volumes.iter().filter(|x| mine(&x.project_id)).map(|v| volume::volume_json(v, true)).collect::<Vec<_>>(),
        "servers": c.servers.iter().filter(|x| mine(&x.project_id)).map(servers::state_json).collect::<Vec<_>>(),
    })
}

/// A change to some of a project's quotas; the rest stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaChange {
    instances: Option<i64>,
    cores: Option<i64>,
    ram_mib: Option<i64>,
    volumes: Option<i64>,
    gigabytes: Option<i64>,
    ports: Option<i64>,
    floatingip: Option<i64>,
}

/// `PUT /sim/v1/quotas/{project}` (name or ID): raise or lower quotas while the cloud runs.
async fn set_quotas(
    State(cloud): State<Shared>,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let change: QuotaChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "badRequest",
                &e.to_string(),
            );
        }
    };
    let mut c = cloud.lock().unwrap();
    let Some(p) = c
        .projects
        .iter_mut()
        .find(|p| p.id == project || p.name == project)
    else {
        return super::not_found("Project", &project);
    };
    let q = &mut p.quotas;
    for (slot, value) in [
        (&mut q.instances, change.instances),
        (&mut q.cores, change.cores),
        (&mut q.ram_mib, change.ram_mib),
        (&mut q.volumes, change.volumes),
        (&mut q.gigabytes, change.gigabytes),
        (&mut q.ports, change.ports),
        (&mut q.floatingip, change.floatingip),
    ] {
        if let Some(v) = value {
            *slot = v;
        }
    }
    Json(json!({ "project": p.name, "quotas": p.quotas })).into_response()
}

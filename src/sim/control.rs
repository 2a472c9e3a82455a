//! The simulator's console, `/sim/v1`, beside the cloud's APIs: the ground truth tests
//! compare against (`GET /state`), runtime quotas (`PUT /quotas/{project}`) and fault
//! injection (`POST /faults`, `GET /faults`, `DELETE /faults/{id}`). No token: it is the
//! operator's console of a fake cloud, not part of the cloud.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::controllers::Controllers;
use super::kube::resources::ix;
use super::kube::{ErrorFault, Kube, MANAGEMENT};
use super::openstack::servers::NoValidHost;
use super::openstack::{Outage, Shared};

/// What the console reaches.
#[derive(Clone)]
pub struct Console {
    pub cloud: Shared,
    pub kube: Kube,
    pub controllers: Arc<Controllers>,
    faults: Arc<Mutex<Vec<(String, Value)>>>,
    /// Volume types a fault took away, to give back when it ends.
    removed_types: Arc<Mutex<Vec<(String, super::openstack::VolumeType)>>>,
    removed_images: Arc<Mutex<Vec<(String, super::openstack::Image)>>>,
}

impl Console {
    pub fn new(cloud: Shared, kube: Kube, controllers: Arc<Controllers>) -> Console {
        Console {
            cloud,
            kube,
            controllers,
            faults: Arc::new(Mutex::new(Vec::new())),
            removed_types: Arc::new(Mutex::new(Vec::new())),
            removed_images: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// Requests the simulator served to its clients (not to its own controllers, not to the
/// console), by API: what a benchmark reads to say how many calls a client made per node.
#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<std::collections::BTreeMap<&'static str, u64>>>);

/// Which API a path belongs to.
fn api_of(path: &str) -> Option<&'static str> {
    const OPENSTACK: &[(&str, &str)] = &[
        ("/identity", "keystone"),
        ("/compute", "nova"),
        ("/networking", "neutron"),
        ("/volume", "cinder"),
        ("/image", "glance"),
    ];
    if path.starts_with("/sim/") {
        return None;
    }
    Some(
        OPENSTACK
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map_or("kubernetes", |(_, api)| api),
    )
}

/// Middleware: counts every client request by API.
pub async fn count(
    State(counts): State<Counts>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    if agent != Some(super::CONTROLLER_AGENT)
        && let Some(api) = api_of(req.uri().path())
    {
        *counts.0.lock().unwrap().entry(api).or_default() += 1;
    }
    next.run(req).await
}

/// `GET /sim/v1/requests`: the counts so far, by API.
pub fn counts_router(counts: Counts) -> Router {
    Router::new()
        .route(
            "/sim/v1/requests",
            get(|State(c): State<Counts>| async move {
                Json(json!(*c.0.lock().unwrap())).into_response()
            }),
        )
        .with_state(counts)
}

pub fn router(console: Console) -> Router {
    Router::new()
        .route("/sim/v1/state", get(state))
        .route("/sim/v1/faults", get(list_faults).post(add_fault))
        .route("/sim/v1/faults/{id}", delete(remove_fault))
        .with_state(console)
}

/// Every server, port, volume and floating IP (only one project's with `?project=<name or
/// ID>`), and every cluster's Machines and Nodes.
async fn state(
    State(c): State<Console>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let project = q.get("project").map(String::as_str);
    let mut doc = super::openstack::control::state(&c.cloud, project);
    let clusters = c.kube.clusters.lock().unwrap();
    let machines: Vec<Value> = clusters[MANAGEMENT]
        .list(ix::MACHINE, None)
        .map(|m| {
            json!({
                "namespace": m["metadata"]["namespace"], "name": m["metadata"]["name"],
                "uid": m["metadata"]["uid"], "resourceVersion": m["metadata"]["resourceVersion"],
                "cluster": m["spec"]["clusterName"], "phase": m["status"]["phase"],
                "providerID": m["spec"]["providerID"], "failureDomain": m["spec"]["failureDomain"],
                "deleting": m["metadata"]["deletionTimestamp"].is_string(),
                "labels": m["metadata"]["labels"],
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for (key, objects) in clusters.iter().filter(|(k, _)| k.as_str() != MANAGEMENT) {
        for n in objects.list(ix::NODE, None) {
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].clone());
            nodes.push(json!({
                "cluster": key, "name": n["metadata"]["name"], "providerID": n["spec"]["providerID"],
                "ready": ready, "labels": n["metadata"]["labels"],
            }));
        }
    }
    doc["machines"] = json!(machines);
    doc["nodes"] = json!(nodes);
    Json(doc)
}

async fn list_faults(State(c): State<Console>) -> Json<Value> {
    let faults: Vec<Value> = c
        .faults
        .lock()
        .unwrap()
        .iter()
        .map(|(id, f)| {
            let mut f = f.clone();
            f["id"] = json!(id);
            f
        })
        .collect();
    Json(json!({ "faults": faults }))
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
        .into_response()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn rate(f: &Value) -> Result<f64, String> {
    match &f["rate"] {
        Value::Null => Ok(1.0),
        v => v
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| "rate: must be a number from 0 to 1".to_string()),
    }
}

/// `POST /sim/v1/faults`: one fault, by `kind`. See README's simulator section for the list.
async fn add_fault(State(c): State<Console>, Json(f): Json<Value>) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let kind = f["kind"].as_str().unwrap_or_default();
    let now = c.controllers.clock.now();
    match kind {
        "no_valid_host" => {
            let r = match rate(&f) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            c.cloud.lock().unwrap().no_valid_host.push(NoValidHost {
                availability_zone: f["availability_zone"].as_str().map(str::to_string),
                host: f["host"].as_str().map(str::to_string),
                probability: r,
            });
        }
        "outage" => {
            let r = match rate(&f) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let status = f["status"].as_u64().unwrap_or(500) as u16;
            if !(500..600).contains(&status) {
                return bad("status: must be a 5xx code");
            }
            let mut cloud = c.cloud.lock().unwrap();
            let until = f["duration_seconds"]
                .as_f64()
                .map(|s| std::time::Instant::now() + cloud.sim_delay(s));
            cloud.outages.push(Outage {
                id: id.clone(),
                services: strings(&f["services"]),
                status,
                rate: r,
                until,
                cause: f["cause"].as_str().unwrap_or("database").to_string(),
            });
        }
        "slow_boot" => {
            let Some(secs) = f["boot_seconds"].as_f64().filter(|s| *s >= 0.0) else {
                return bad("boot_seconds: required, a number of simulated seconds");
            };
            c.cloud.lock().unwrap().boot_seconds = secs;
        }
        "server_error" => {
            let Some(name) = f["server"].as_str() else {
                return bad("server: required, the server's name");
            };
            let after = f["after_seconds"].as_f64().unwrap_or(0.0);
            let message = f["message"]
                .as_str()
                .unwrap_or("Instance failed: the hypervisor reported an error")
                .to_string();
            let mut cloud = c.cloud.lock().unwrap();
            let Some(sid) = cloud
                .servers
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.id.clone())
            else {
                return bad(format!("server: no server named {name}"));
            };
            cloud.break_server_after(&sid, after, &message);
        }
        "node_not_ready" => {
            let Some(node) = f["node"].as_str() else {
                return bad("node: required, the Node's name");
            };
            let after = f["after_seconds"].as_f64().unwrap_or(0.0);
            c.controllers
                .faults
                .lock()
                .unwrap()
                .nodes_not_ready
                .push((node.to_string(), now + after));
        }
        "leak" => {
            let what = strings(&f["resources"]);
            if what.is_empty() || what.iter().any(|w| w != "ports" && w != "volumes") {
                return bad("resources: a list of `ports` and/or `volumes`");
            }
            let mut faults = c.controllers.faults.lock().unwrap();
            faults.leak_ports |= what.iter().any(|w| w == "ports");
            faults.leak_volumes |= what.iter().any(|w| w == "volumes");
        }
        "stuck_finalizer" => {
            let Some(machine) = f["machine"].as_str() else {
                return bad("machine: required, the Machine's name");
            };
            c.controllers
                .faults
                .lock()
                .unwrap()
                .stuck_finalizers
                .push(machine.to_string());
        }
        "kube_error" => {
            let r = match rate(&f) {
                Ok(r) => r,
                Err(e) => return bad(e),
            };
            let code = f["code"].as_u64().unwrap_or(500) as u16;
            if ![409, 429, 500, 503].contains(&code) {
                return bad("code: one of 409, 429, 500, 503");
            }
            c.kube.faults.lock().unwrap().errors.push(ErrorFault {
                id: id.clone(),
                code,
                verbs: strings(&f["verbs"]),
                resources: strings(&f["resources"]),
                rate: r,
                remaining: f["count"].as_u64().map(|n| n as u32),
            });
        }
        "volume_type_missing" => {
            let Some(name) = f["name"].as_str() else {
                return bad("name: required, the volume type's name");
            };
            let mut cloud = c.cloud.lock().unwrap();
            let Some(pos) = cloud.volume_types.iter().position(|t| t.name == name) else {
                return bad(format!("name: no volume type {name}"));
            };
            let gone = cloud.volume_types.remove(pos);
            c.removed_types.lock().unwrap().push((id.clone(), gone));
        }
        "image_missing" => {
            let Some(name) = f["name"].as_str() else {
                return bad("name: required, the image's name");
            };
            let mut cloud = c.cloud.lock().unwrap();
            let Some(pos) = cloud.images.iter().position(|i| i.name == name) else {
                return bad(format!("name: no image {name}"));
            };
            let gone = cloud.images.remove(pos);
            c.removed_images.lock().unwrap().push((id.clone(), gone));
        }
        "drop_watches" => c.kube.drop_watches(),
        "compact" => c.kube.compact(),
        other => {
            return bad(format!(
                "kind: unknown fault `{other}` (known: no_valid_host, outage, slow_boot, server_error, node_not_ready, leak, stuck_finalizer, kube_error, volume_type_missing, image_missing, drop_watches, compact)"
            ));
        }
    }
    c.faults.lock().unwrap().push((id.clone(), f.clone()));
    let mut out = f;
    out["id"] = json!(id);
    (StatusCode::CREATED, Json(out)).into_response()
}

/// `DELETE /sim/v1/faults/{id}`: ends a lasting fault.
async fn remove_fault(State(c): State<Console>, Path(id): Path<String>) -> Response {
    let found = {
        let mut faults = c.faults.lock().unwrap();
        let pos = faults.iter().position(|(x, _)| *x == id);
        pos.map(|p| faults.remove(p).1)
    };
    let Some(f) = found else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no fault {id}") })),
        )
            .into_response();
    };
    match f["kind"].as_str().unwrap_or_default() {
        "no_valid_host" => c.cloud.lock().unwrap().no_valid_host.retain(|n| {
            n.availability_zone.as_deref() != f["availability_zone"].as_str()
                || n.host.as_deref() != f["host"].as_str()
        }),
        "outage" => c.cloud.lock().unwrap().outages.retain(|o| o.id != id),
        "slow_boot" => c.cloud.lock().unwrap().boot_seconds = super::openstack::BOOT_SECONDS,
        "node_not_ready" => {
            let node = f["node"].as_str().unwrap_or_default();
            c.controllers
                .faults
                .lock()
                .unwrap()
                .nodes_not_ready
                .retain(|(n, _)| n != node);
        }
        "leak" => {
            let mut faults = c.controllers.faults.lock().unwrap();
            faults.leak_ports = false;
            faults.leak_volumes = false;
        }
        "stuck_finalizer" => {
            let m = f["machine"].as_str().unwrap_or_default();
            c.controllers
                .faults
                .lock()
                .unwrap()
                .stuck_finalizers
                .retain(|x| x != m);
        }
        "kube_error" => c.kube.faults.lock().unwrap().errors.retain(|e| e.id != id),
        "volume_type_missing" => {
            let mut removed = c.removed_types.lock().unwrap();
            if let Some(pos) = removed.iter().position(|(x, _)| *x == id) {
                let (_, t) = removed.remove(pos);
                c.cloud.lock().unwrap().volume_types.push(t);
            }
        }
        "image_missing" => {
            let mut removed = c.removed_images.lock().unwrap();
            if let Some(pos) = removed.iter().position(|(x, _)| *x == id) {
                let (_, i) = removed.remove(pos);
                c.cloud.lock().unwrap().images.push(i);
            }
        }
        _ => {}
    }
    StatusCode::NO_CONTENT.into_response()
}

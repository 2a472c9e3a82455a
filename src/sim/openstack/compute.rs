//! Nova (compute v2.1): version document, flavors, availability zones, hypervisors (admin
//! only, with the usage of the servers placed on them), limits and quota sets. Servers are in
//! `servers.rs`.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::servers::microversion;
use super::{Flavor, Pairs, Shared, Token, error, not_found, page, param, version_doc};

/// The disk each simulated hypervisor has, in GiB (scenarios give CPU and RAM only).
const HYPERVISOR_DISK_GIB: i64 = 1000;

/// Nova names the microversion it answered with on every response.
async fn microversion_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (major, minor) = microversion(req.headers());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let v = format!("{major}.{minor}");
    if let Ok(x) = format!("compute {v}").parse() {
        h.insert("openstack-api-version", x);
    }
    if let Ok(x) = v.parse() {
        h.insert("x-openstack-nova-api-version", x);
    }
    h.insert(
        axum::http::header::VARY,
        axum::http::HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    resp
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/flavors", get(flavors))
        .route("/flavors/detail", get(flavors_detail))
        .route("/flavors/{id}", get(flavor))
        .route(
            "/flavors/{id}/os-extra_specs",
            get(|| async { Json(json!({ "extra_specs": {} })) }),
        )
        .route("/os-availability-zone", get(zones))
        .route("/os-availability-zone/detail", get(zones_detail))
        .route("/os-hypervisors/detail", get(hypervisors))
        .route("/limits", get(limits))
        .route("/os-quota-sets/{project}", get(quota_set))
        .route("/os-quota-sets/{project}/detail", get(quota_set_detail))
        .merge(super::servers::routes())
        .merge(super::keypairs::routes())
        .layer(axum::middleware::from_fn(microversion_headers))
}

pub(super) async fn version(State(cloud): State<Shared>) -> Json<Value> {
    let base = cloud.lock().unwrap().base.clone();
    let v = version_doc(&base, "v2.1", "/compute/v2.1/", Some(("2.1", "2.90")));
    let v = super::with_media_type(
        v,
        "application/vnd.openstack.compute+json;version=2.1",
        true,
    );
    Json(json!({ "version": v }))
}

/// A flavor; `extra_specs` are embedded from 2.61.
fn flavor_json(base: &str, f: &Flavor, detail: bool, mv: (u32, u32)) -> Value {
    let links = json!([{ "rel": "self", "href": format!("{base}/compute/v2.1/flavors/{}", f.id) }]);
    if !detail {
        return json!({ "id": f.id, "name": f.name, "links": links });
    }
    let mut v = json!({
        "id": f.id, "name": f.name, "vcpus": f.vcpus, "ram": f.ram_mib, "disk": f.disk_gib,
        "swap": "", "rxtx_factor": 1.0, "OS-FLV-EXT-DATA:ephemeral": 0,
        "OS-FLV-DISABLED:disabled": false, "os-flavor-access:is_public": true,
        "description": null, "links": links,
    });
    if mv >= (2, 61) {
        v["extra_specs"] = json!({});
    }
    v
}

fn list_flavors(
    cloud: &Shared,
    q: &[(String, String)],
    detail: bool,
    headers: &HeaderMap,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let mv = microversion(headers);
    let items = c
        .flavors
        .iter()
        .map(|f| flavor_json(&c.base, f, detail, mv))
        .collect();
    Json(json!({ "flavors": page(items, q) }))
}

async fn flavors(State(cloud): State<Shared>, headers: HeaderMap, q: Pairs) -> Json<Value> {
    list_flavors(&cloud, &q, false, &headers)
}

async fn flavors_detail(State(cloud): State<Shared>, headers: HeaderMap, q: Pairs) -> Json<Value> {
    list_flavors(&cloud, &q, true, &headers)
}

async fn flavor(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    let mv = microversion(&headers);
    match c.flavors.iter().find(|f| f.id == id) {
        Some(f) => Json(json!({ "flavor": flavor_json(&c.base, f, true, mv) })).into_response(),
        None => not_found("Flavor", &id),
    }
}

async fn zones(State(cloud): State<Shared>) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let info: Vec<Value> = c
        .availability_zones
        .iter()
        .map(|z| json!({ "zoneName": z, "zoneState": { "available": true }, "hosts": null }))
        .collect();
    Json(json!({ "availabilityZoneInfo": info }))
}

/// With hosts: which compute hosts sit in which zone.
async fn zones_detail(State(cloud): State<Shared>, Extension(t): Extension<Token>) -> Response {
    if !t.roles.iter().any(|r| r == "admin") {
        return policy_refused("os_compute_api:os-availability-zone:detail");
    }
    let c = cloud.lock().unwrap();
    let info: Vec<Value> = c
        .availability_zones
        .iter()
        .map(|z| {
            let hosts: serde_json::Map<String, Value> = c
                .hypervisors
                .iter()
                .filter(|h| &h.availability_zone == z)
                .map(|h| {
                    let svc = json!({ "nova-compute": { "available": true, "active": true, "updated_at": c.born } });
                    (h.name.clone(), svc)
                })
                .collect();
            json!({ "zoneName": z, "zoneState": { "available": true }, "hosts": hosts })
        })
        .collect();
    Json(json!({ "availabilityZoneInfo": info })).into_response()
}

/// The hypervisors with their usage. Before 2.88 each also shows its disk, free space and
/// CPU details (which 2.88 removed); the simulated disk is 1000 GiB, used by the flavors'
/// disks of the servers placed there.
async fn hypervisors(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    q: Pairs,
) -> Response {
    if !t.roles.iter().any(|r| r == "admin") {
        return policy_refused("os_compute_api:os-hypervisors:list-detail");
    }
    let mv = microversion(&headers);
    let mut c = cloud.lock().unwrap();
    c.advance();
    let items: Vec<Value> = c
        .hypervisors
        .iter()
        .map(|h| {
            let (vcpus_used, ram_used, vms) = c.hypervisor_usage(&h.name);
            let mut v = json!({
                "id": h.id.to_string(), "hypervisor_hostname": h.name, "hypervisor_type": "QEMU",
                "state": "up", "status": "enabled", "host_ip": "192.168.0.1",
                "service": { "host": h.name, "id": h.id.to_string(), "disabled_reason": null },
            });
            if mv < (2, 88) {
                let disk_used = c.hypervisor_disk(&h.name);
                let older = [
                    ("vcpus", json!(h.vcpus)),
                    ("memory_mb", json!(h.memory_mib)),
                    ("vcpus_used", json!(vcpus_used)),
                    ("memory_mb_used", json!(ram_used)),
                    ("running_vms", json!(vms)),
                    ("local_gb", json!(HYPERVISOR_DISK_GIB)),
                    ("local_gb_used", json!(disk_used)),
                    ("free_ram_mb", json!(h.memory_mib - ram_used)),
                    ("free_disk_gb", json!(HYPERVISOR_DISK_GIB - disk_used)),
                    ("disk_available_least", json!(HYPERVISOR_DISK_GIB - disk_used)),
                    ("current_workload", json!(0)),
                    ("hypervisor_version", json!(8_002_000)),
                    ("cpu_info", json!({ "arch": "x86_64", "model": "Nehalem", "vendor": "Intel",
                        "topology": { "cores": 1, "threads": 1, "sockets": h.vcpus }, "features": [] })),
                ];
                for (k, x) in older {
                    v[k] = x;
                }
            }
            v
        })
        .collect();
    Json(json!({ "hypervisors": page(items, &q) })).into_response()
}

/// The token's project's limits and usage; another project's (`?tenant_id=`) needs
/// `os_compute_api:limits:other_project`, admin-only by Nova's default policy.
async fn limits(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    query: Pairs,
) -> Response {
    let project = param(&query, "tenant_id")
        .unwrap_or(&t.project_id)
        .to_string();
    if project != t.project_id && !t.is_admin() {
        return policy_refused("os_compute_api:limits:other_project");
    }
    let mut c = cloud.lock().unwrap();
    c.advance();
    let Some(p) = c.projects.iter().find(|p| p.id == project) else {
        return not_found("Project", &project);
    };
    let q = p.quotas;
    let (instances, cores, ram) = c.compute_usage(&project);
    Json(json!({ "limits": { "rate": [], "absolute": {
        "maxTotalInstances": q.instances, "maxTotalCores": q.cores, "maxTotalRAMSize": q.ram_mib,
        "maxServerMeta": 128,
        "maxTotalKeypairs": 100, "maxServerGroups": 10, "maxServerGroupMembers": 10,
        "totalInstancesUsed": instances, "totalCoresUsed": cores, "totalRAMUsed": ram,
        "totalServerGroupsUsed": 0,
    }}}))
    .into_response()
}

/// Nova's quota set: limits, or with `detail` `{in_use, limit, reserved}` for each.
fn quota_view(cloud: &Shared, t: &Token, project: &str, detail: bool) -> Response {
    if t.project_id != project && !t.roles.iter().any(|r| r == "admin") {
        return policy_refused("os_compute_api:os-quota-sets:show");
    }
    let mut c = cloud.lock().unwrap();
    c.advance();
    let Some(q) = c.project(project).map(|p| p.quotas) else {
        return not_found("Project", project);
    };
    let (instances, cores, ram) = c.compute_usage(project);
    let entry = |limit: i64, used: i64| {
        if detail {
            json!({ "limit": limit, "in_use": used, "reserved": 0 })
        } else {
            json!(limit)
        }
    };
    Json(json!({ "quota_set": {
        "id": project,
        "instances": entry(q.instances, instances),
        "cores": entry(q.cores, cores),
        "ram": entry(q.ram_mib, ram),
        "key_pairs": entry(100, 0),
        "metadata_items": entry(128, 0),
        "server_groups": entry(10, 0),
        "server_group_members": entry(10, 0),
    }}))
    .into_response()
}

async fn quota_set(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(project): Path<String>,
) -> Response {
    quota_view(&cloud, &t, &project, false)
}

async fn quota_set_detail(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(project): Path<String>,
) -> Response {
    quota_view(&cloud, &t, &project, true)
}

fn policy_refused(rule: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("Policy doesn't allow {rule} to be performed."),
    )
}

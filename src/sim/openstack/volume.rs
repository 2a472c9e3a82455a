//! Cinder (block storage v3): version list, volume types, volumes, quota sets with usage and
//! absolute limits,
//! failing as Cinder does: an unknown type is a 404, a full quota a 413 with `Retry-After`.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Cloud, Pairs, Shared, Token, Volume, VolumeType, error, not_found, now_rfc3339, page, param,
    position_owned, version_doc,
};

pub fn router() -> Router<Shared> {
    let v3 = Router::new()
        .route("/types", get(types))
        .route("/types/{id}", get(volume_type))
        .route("/volumes", get(volumes).post(create))
        .route("/volumes/detail", get(volumes))
        .route("/volumes/{id}", get(show).delete(delete))
        .route("/os-quota-sets/{project}", get(quota_set))
        .route("/limits", get(limits));
    Router::new()
        .nest("/v3", v3.clone())
        // Clients configured with the project in the path reach the same handlers.
        .nest("/v3/{project_in_path}", v3)
}

/// Cinder lists its versions at its root with 300 Multiple Choices.
pub(super) async fn versions(State(cloud): State<Shared>) -> Response {
    let mut resp = versions_v3(State(cloud)).await.into_response();
    *resp.status_mut() = StatusCode::MULTIPLE_CHOICES;
    resp
}

/// The same list under `/v3`, with 200, for clients that discover at the catalog URL (real
/// Cinder wants a token there).
pub(super) async fn versions_v3(State(cloud): State<Shared>) -> Json<Value> {
    let base = cloud.lock().unwrap().base.clone();
    let v = version_doc(&base, "v3.0", "/volume/v3/", Some(("3.0", "3.71")));
    let mut v = super::with_media_type(v, "application/vnd.openstack.volume+json;version=3", true);
    // Cinder lists the documentation link before the self link.
    if let Some(links) = v["links"].as_array_mut() {
        links.reverse();
    }
    Json(json!({ "versions": [v] }))
}

fn type_json(t: &VolumeType) -> Value {
    let description = (t.name == super::DEFAULT_VOLUME_TYPE).then_some("Default Volume Type");
    json!({ "id": t.id, "name": t.name, "is_public": true, "extra_specs": {}, "description": description,
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

/// The detailed form, everywhere: the `openstack` crate parses even `?name=` results in full.
/// The host and migration attributes are admin-only (Cinder's `volume_host_attribute` and
/// `volume_mig_status_attribute` policies); `volume_image_metadata` is there only for a
/// volume made from an image.
pub(super) fn volume_json(v: &Volume, admin: bool) -> Value {
    let mut out = created_json(v);
    out["status"] = json!(if v.attachments.is_empty() {
        "available"
    } else {
        "in-use"
    });
    out["os-vol-tenant-attr:tenant_id"] = json!(v.project_id);
    if let Some(i) = &v.image_id {
        out["volume_image_metadata"] = json!({ "image_id": i });
    }
    if admin {
        out["os-vol-host-attr:host"] = json!(format!(
            "sim-cinder@{}#{}",
            v.availability_zone, v.volume_type
        ));
        out["os-vol-mig-status-attr:migstat"] = Value::Null;
        out["os-vol-mig-status-attr:name_id"] = Value::Null;
    }
    out
}

/// A volume as `POST /volumes` answers it: still `creating`, without the attributes that
/// only a show adds.
fn created_json(v: &Volume) -> Value {
    let attachments: Vec<Value> = v
        .attachments
        .iter()
        .map(|a| {
            json!({
                "id": v.id, "attachment_id": a.id, "volume_id": v.id, "server_id": a.server_id,
                "host_name": a.host_name, "device": a.device, "attached_at": a.attached_at,
            })
        })
        .collect();
    json!({
        "id": v.id, "name": v.name, "size": v.size_gib, "status": "creating", "volume_type": v.volume_type,
        "availability_zone": v.availability_zone, "bootable": if v.image_id.is_some() { "true" } else { "false" },
        "encrypted": false, "multiattach": false, "metadata": {}, "attachments": attachments, "links": [],
        "user_id": v.user_id, "description": v.description, "consistencygroup_id": null,
        "snapshot_id": null, "source_volid": null, "replication_status": null, "migration_status": null,
        "created_at": cinder_time(&v.created), "updated_at": cinder_time(&v.created),
    })
}

/// Cinder's timestamp layout: microseconds and no zone (`2026-12-02T13:24:38.000000`), which
/// gophercloud parses exactly (`JSONRFC3339MilliNoZ`); an RFC 3339 `Z` breaks it.
fn cinder_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// Cinder's quota refusal: 413, `Retry-After: 0`, the exception class before the message.
fn over_limit(message: String) -> Response {
    let body = json!({ "overLimit": { "code": 413, "message": message, "retryAfter": "0" } });
    let mut resp = (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
    resp.headers_mut()
        .insert("retry-after", "0".parse().expect("a valid header value"));
    resp
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "badRequest", message)
}

/// The name of the volume type `wanted` names (an ID or a name; `__DEFAULT__` when `None`),
/// or Cinder's 404 message, worded by how the type was named.
pub(super) fn volume_type_name(c: &Cloud, wanted: Option<&str>) -> Result<String, String> {
    let Some(wanted) = wanted else {
        return Ok(super::DEFAULT_VOLUME_TYPE.to_string());
    };
    match c
        .volume_types
        .iter()
        .find(|t| t.id == wanted || t.name == wanted)
    {
        Some(t) => Ok(t.name.clone()),
        None if uuid::Uuid::parse_str(wanted).is_ok() => {
            Err(format!("Volume type {wanted} could not be found."))
        }
        None => Err(format!(
            "Volume type with name {wanted} could not be found."
        )),
    }
}

/// Cinder's quota message if one more volume of `size` GiB does not fit, else `None`.
pub(super) fn quota_refusal(c: &Cloud, project: &str, size: i64) -> Option<String> {
    let quotas = c.project(project)?.quotas;
    let (count, gigabytes) = usage(c, project);
    if count >= quotas.volumes {
        return Some(format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({}) exceeded for quota 'volumes'.",
            quotas.volumes
        ));
    }
    if gigabytes + size > quotas.gigabytes {
        return Some(format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. \
             Requested {size}G, quota is {}G and {gigabytes}G has been consumed.",
            quotas.gigabytes
        ));
    }
    None
}

/// A project's volume count and gigabytes in use.
fn usage(c: &Cloud, project: &str) -> (i64, i64) {
    let mine = c.volumes.iter().filter(|v| v.project_id == project);
    mine.fold((0, 0), |(n, gb), v| (n + 1, gb + v.size_gib))
}

async fn create(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Json(body): Json<Value>,
) -> Response {
    let req = &body["volume"];
    let Some(size) = req["size"].as_i64().filter(|s| *s > 0) else {
        return bad_request("Invalid input received: size must be an integer greater than 0.");
    };
    let mut c = cloud.lock().unwrap();
    let type_name = match volume_type_name(&c, req["volume_type"].as_str()) {
        Ok(name) => name,
        Err(message) => return error(StatusCode::NOT_FOUND, "itemNotFound", &message),
    };
    let az = req["availability_zone"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "nova".into());
    if req["availability_zone"].is_string() && !c.availability_zones.contains(&az) {
        return bad_request(&format!("Availability zone '{az}' is invalid."));
    }
    if c.project(&t.project_id).is_none() {
        return not_found("Project", &t.project_id);
    }
    // From an image: Cinder checks it and its min_disk before the quota.
    if let Some(image) = req["imageRef"].as_str() {
        let Some(min_disk) = c
            .images
            .iter()
            .find(|i| i.id == image)
            .map(|i| i.min_disk_gib)
        else {
            return bad_request("Invalid image identifier or unable to access requested image.");
        };
        if size < min_disk {
            return bad_request(&format!(
                "Invalid input received: Volume size {size}GB cannot be smaller than the \
                 image minDisk size {min_disk}GB."
            ));
        }
    }
    if let Some(message) = quota_refusal(&c, &t.project_id, size) {
        return over_limit(message);
    }
    let volume = Volume {
        id: c.new_id(),
        name: req["name"].as_str().unwrap_or_default().to_string(),
        project_id: t.project_id.clone(),
        user_id: t.user_id.clone(),
        size_gib: size,
        volume_type: type_name,
        availability_zone: az,
        image_id: req["imageRef"].as_str().map(str::to_string),
        description: req["description"].as_str().map(str::to_string),
        attachments: Vec::new(),
        created: now_rfc3339(),
    };
    let view = created_json(&volume);
    c.volumes.push(volume);
    (StatusCode::ACCEPTED, Json(json!({ "volume": view }))).into_response()
}

async fn volumes(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .volumes
        .iter()
        // Cinder lists the caller's project's volumes; `all_tenants` widens it for an admin
        // only and is dropped for anyone else (`volume/api.py` `get_all`).
        .filter(|v| {
            let all = t.is_admin()
                && param(&q, "all_tenants").is_some_and(|a| !matches!(a, "0" | "false" | "False"));
            let wanted = param(&q, "project_id");
            if all {
                wanted.is_none_or(|w| w == v.project_id)
            } else {
                v.project_id == t.project_id
            }
        })
        .filter(|v| param(&q, "name").is_none_or(|n| n == v.name))
        .map(|v| volume_json(v, t.is_admin()))
        .collect();
    Json(json!({ "volumes": page(items, &q) }))
}

async fn show(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match position_owned(&c.volumes, &id, &t) {
        Some(i) => {
            Json(json!({ "volume": volume_json(&c.volumes[i], t.is_admin()) })).into_response()
        }
        None => not_found("Volume", &id),
    }
}

async fn delete(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match position_owned(&c.volumes, &id, &t) {
        // Cinder refuses to delete an attached volume; Nova detaches it first.
        Some(i) if !c.volumes[i].attachments.is_empty() => bad_request(
            "Invalid volume: Volume status must be available or error or error_restoring or \
             error_extending or error_managing and must not be migrating, attached, belong to a \
             group, have snapshots, awaiting a transfer, or be disassociated from snapshots after \
             volume transfer.",
        ),
        Some(i) => {
            c.volumes.remove(i);
            StatusCode::ACCEPTED.into_response()
        }
        None => not_found("Volume", &id),
    }
}

/// `GET /os-quota-sets/{project}[?usage=true]`: limits, and with `usage` what is in use.
async fn quota_set(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(project): Path<Vec<(String, String)>>,
    q: Pairs,
) -> Response {
    let project = project
        .iter()
        .find(|(k, _)| k == "project")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if t.project_id != project && !t.roles.iter().any(|r| r == "admin") {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Policy doesn't allow volume_extension:quotas:show to be performed.",
        );
    }
    let c = cloud.lock().unwrap();
    let Some(p) = c.project(&project) else {
        return not_found("Project", &project);
    };
    let (count, gigabytes) = usage(&c, &project);
    let with_usage = param(&q, "usage") == Some("true");
    let entry = |limit: i64, used: i64| {
        if with_usage {
            json!({ "limit": limit, "in_use": used, "reserved": 0 })
        } else {
            json!(limit)
        }
    };
    let mut set = json!({
        "id": project,
        "volumes": entry(p.quotas.volumes, count),
        "gigabytes": entry(p.quotas.gigabytes, gigabytes),
        "snapshots": entry(10, 0),
        "per_volume_gigabytes": entry(-1, 0),
        "backups": entry(10, 0),
        "backup_gigabytes": entry(1000, 0),
        "groups": entry(10, 0),
    });
    // Cinder adds unlimited per-type quotas for every type.
    for t in &c.volume_types {
        let typed = c
            .volumes
            .iter()
            .filter(|v| v.project_id == project && v.volume_type == t.name);
        let (n, gb) = typed.fold((0, 0), |(n, gb), v| (n + 1, gb + v.size_gib));
        set[format!("volumes_{}", t.name)] = entry(-1, n);
        set[format!("gigabytes_{}", t.name)] = entry(-1, gb);
        set[format!("snapshots_{}", t.name)] = entry(-1, 0);
    }
    Json(json!({ "quota_set": set })).into_response()
}

/// The caller's project's absolute limits and usage (`openstack limits show --absolute`).
async fn limits(State(cloud): State<Shared>, Extension(t): Extension<Token>) -> Response {
    let c = cloud.lock().unwrap();
    let Some(p) = c.project(&t.project_id) else {
        return not_found("Project", &t.project_id);
    };
    let (count, gigabytes) = usage(&c, &t.project_id);
    Json(json!({ "limits": { "rate": [], "absolute": {
        "maxTotalVolumes": p.quotas.volumes, "maxTotalVolumeGigabytes": p.quotas.gigabytes,
        "maxTotalSnapshots": 10, "maxTotalBackups": 10, "maxTotalBackupGigabytes": 1000,
        "totalVolumesUsed": count, "totalGigabytesUsed": gigabytes, "totalSnapshotsUsed": 0,
        "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0,
    }}}))
    .into_response()
}

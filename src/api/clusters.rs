//! Views of the cloud through Capstan's own clients: a cluster's Machines with what made
//! them, and the tenant's quota. 503 when no cloud is configured or it cannot be read.

use axum::Json;
use axum::extract::{Extension, Path, State};
use kube::api::ListParams;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, resolve_tenant};
use crate::cloud::capi::{self, CLUSTER_NAME_LABEL, JOB_LABEL};
use crate::cloud::os::Service;
use crate::config::Principal;

fn clients(st: &AppState) -> Result<&crate::cloud::Clients, ApiError> {
    st.clients.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "no cloud is configured (serve --sim, or --kubeconfig and --clouds-yaml)".into(),
        )
    })
}

fn condition(m: &Value, kind: &str) -> Value {
    m["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| json!({ "status": c["status"], "reason": c["reason"], "message": c["message"] }))
        .unwrap_or(Value::Null)
}

/// `GET /v1/clusters/{ns}/{name}/nodes`: every Machine of the cluster, its phase, health,
/// addresses, floating IP and the job that made it.
pub async fn nodes(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cluster = format!("{ns}/{name}");
    resolve_tenant(&st.auth, &p, None, &cluster)?;
    let c = clients(&st)?;
    let list = capi::machines(&c.kube, &ns)
        .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={name}")))
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading Machines: {e}")))?;
    let fips =
        c.os.get(Service::Network, &["floatingips"], &[])
            .await
            .map_err(|e| ApiError::Unavailable(format!("reading floating IPs: {e}")))?;
    let ports =
        c.os.get(Service::Network, &["ports"], &[])
            .await
            .map_err(|e| ApiError::Unavailable(format!("reading ports: {e}")))?;
    let mut out = Vec::new();
    for m in list.items {
        let m = serde_json::to_value(&m).unwrap_or_default();
        let machine = m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let port_ids: Vec<&Value> = ports["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["name"]
                    .as_str()
                    .and_then(|n| n.strip_prefix(&format!("{machine}-")))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|p| &p["id"])
            .collect();
        let floating: Vec<&Value> = fips["floatingips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| port_ids.contains(&&f["port_id"]))
            .map(|f| &f["floating_ip_address"])
            .collect();
        let addresses: Vec<&Value> = m["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| &a["address"])
            .collect();
        out.push(json!({
            "machine": machine,
            "phase": m["status"]["phase"],
            "node": m["status"]["nodeRef"]["name"],
            "healthy": condition(&m, "NodeHealthy"),
            "failure_domain": m["spec"]["failureDomain"],
            "provider_id": m["spec"]["providerID"],
            "addresses": addresses,
            "floating_ips": floating,
            "failure_reason": m["status"]["failureReason"],
            "failure_message": m["status"]["failureMessage"],
            "job": m["metadata"]["labels"][JOB_LABEL],
            "created_at": m["metadata"]["creationTimestamp"],
        }));
    }
    Ok(Json(json!({ "cluster": cluster, "nodes": out })))
}

/// `GET /v1/quota`: the project's limits and usage, as preflight reads them; for admins and
/// tenant admins (members see their own jobs, not the cloud's accounts).
pub async fn quota(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    if p.role == crate::model::Role::Member {
        return Err(ApiError::Forbidden(
            "the project's quota is for admins and tenant admins".into(),
        ));
    }
    let c = clients(&st)?;
    let usage = crate::lifecycle::quota::read(&c.os)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading quotas: {e}")))?;
    Ok(Json(
        json!({ "project_id": c.os.project_id, "quota": usage.items }),
    ))
}

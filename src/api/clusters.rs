//! Views of the cloud through Capstan's own clients: a cluster's Machines with what made
//! them, and its project's quota — both read with the cluster's own OpenStack credentials.
//! 422 naming the path parameter when `{ns}` or `{name}` is not a DNS-1123 label (checked
//! before Kubernetes is asked), 404 when the cluster does not exist or is another tenant's,
//! 503 when no cloud is configured or it cannot be read.

use axum::Json;
use axum::extract::{Extension, Path, State};
use kube::api::ListParams;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::openapi;
use crate::cloud::capi::{CLUSTER_NAME_LABEL, Condition, JOB_LABEL, Machine, capo};
use crate::cloud::os::Service;
use crate::cloud::{ClusterRef, CredentialError};
use crate::config::Principal;
use crate::engine::request::{FieldError, check_dns_label};

fn clients(st: &AppState) -> Result<&crate::cloud::Clients, ApiError> {
    st.clients.as_ref().ok_or_else(|| {
        ApiError::Unavailable("no cloud is configured (serve --sim, or serve --kubeconfig)".into())
    })
}

/// A condition as the API shows it.
fn condition(c: Option<&Condition>) -> Value {
    c.map(|c| json!({ "status": c.status, "reason": c.reason, "message": c.message }))
        .unwrap_or(Value::Null)
}

/// `GET /v1/clusters/{ns}/{name}/nodes`: every Machine of the cluster, its phase, health,
/// addresses, floating IP and the job that made it.
#[utoipa::path(get, path = "/clusters/{ns}/{name}/nodes", operation_id = "clusterNodes", tag = "clusters", security(("bearerAuth" = [])),
    params(("ns" = String, Path, description = "The cluster's namespace, a DNS-1123 label; anything else is a 422 naming the parameter.", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), ("name" = String, Path, description = "The CAPI Cluster's name, a DNS-1123 label.", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
    responses((status = 200, description = "`{cluster, nodes}`: each Machine with its phase, health, addresses, floating IPs and the job that made it.", body = openapi::AnyObject),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "No such cluster, or not the principal's to see.", body = openapi::ErrorBody),
    (status = 422, description = "`ns` or `name` is not a DNS-1123 label, or the cluster's credentials are wrong.", body = openapi::ErrorBody),
    (status = 503, description = "No cloud is configured, or it could not be read.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
))]
pub async fn nodes(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_ref(ns, name)?;
    let (ns, name) = (cluster.ns.as_str(), cluster.name.as_str());
    visible(&st, &p, &cluster)?;
    let c = clients(&st)?;
    let os = cluster_os(c, &cluster).await?;
    let list = c
        .capi()
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading Machines: {e}")))?
        .machines(ns)
        .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={name}")))
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading Machines: {e}")))?;
    let fips = os
        .get(Service::Network, &["floatingips"], &[])
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading floating IPs: {e}")))?;
    let ports = os
        .get(Service::Network, &["ports"], &[])
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading ports: {e}")))?;
    let mut out = Vec::new();
    for o in list.items {
        let m = Machine::read(&o);
        let machine = m.name.clone();
        let port_ids: Vec<&Value> = ports["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| capo::is_port_of(n, &machine))
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
        let job = json!(o.metadata.labels.as_ref().and_then(|l| l.get(JOB_LABEL)));
        out.push(json!({
            "machine": machine,
            "phase": m.phase,
            "node": m.node,
            "healthy": condition(m.node_health()),
            "failure_domain": m.failure_domain,
            "provider_id": m.provider_id,
            "addresses": m.addresses,
            "floating_ips": floating,
            "failure_reason": m.failure_reason,
            "failure_message": m.failure_message,
            "job": job_seen_by(&st, &p, &job).await?,
            "created_at": m.created_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }));
    }
    Ok(Json(
        json!({ "cluster": cluster.to_string(), "nodes": out }),
    ))
}

/// The cluster named by the path, checked the way Kubernetes would before anything asks it:
/// a namespace or name that is not a DNS-1123 label is a 422 naming the path parameter.
fn cluster_ref(ns: String, name: String) -> Result<ClusterRef, ApiError> {
    let mut wrong = Vec::new();
    for (param, value) in [("ns", &ns), ("name", &name)] {
        if let Err(e) = check_dns_label(value) {
            wrong.push(FieldError::new(param, e));
        }
    }
    if wrong.is_empty() {
        Ok(ClusterRef { ns, name })
    } else {
        Err(ApiError::Invalid(wrong))
    }
}

/// A cluster of another tenant answers 404, exactly like one that does not exist.
fn visible(st: &AppState, p: &Principal, cluster: &ClusterRef) -> Result<(), ApiError> {
    if st.auth.may_see_namespace(p, &cluster.ns) {
        Ok(())
    } else {
        Err(not_found(cluster))
    }
}

/// One text for a cluster that does not exist and one this principal may not see.
fn not_found(cluster: &ClusterRef) -> ApiError {
    ApiError::NotFound(format!("cluster {cluster} not found"))
}

/// The job that made a node, as `p` may see it: a member sees only their own jobs' IDs, a
/// tenant admin their tenant's.
async fn job_seen_by(st: &AppState, p: &Principal, job: &Value) -> Result<Value, ApiError> {
    let Some(id) = job.as_str() else {
        return Ok(Value::Null);
    };
    Ok(match st.engine.store().job(id).await? {
        Some(j) if p.can_access(&j.tenant, &j.owner) => json!(id),
        _ => Value::Null,
    })
}

/// OpenStack as the cluster sees it; a cluster that does not exist is a 404, credentials
/// that do not work a 422 naming the Secret.
async fn cluster_os(
    c: &crate::cloud::Clients,
    cluster: &ClusterRef,
) -> Result<crate::cloud::os::OpenStack, ApiError> {
    c.os(cluster).await.map_err(|e| match e {
        CredentialError::NoCluster(_) => not_found(cluster),
        e if e.is_unavailable() => ApiError::Unavailable(e.to_string()),
        e => ApiError::field("cluster", e.to_string()),
    })
}

/// `GET /v1/clusters/{ns}/{name}/quota`: the limits and usage of the cluster's project, read
/// with the cluster's own credentials, for whoever may see the cluster.
#[utoipa::path(get, path = "/clusters/{ns}/{name}/quota", operation_id = "clusterQuota", tag = "clusters", security(("bearerAuth" = [])),
    params(("ns" = String, Path, description = "The cluster's namespace, a DNS-1123 label; anything else is a 422 naming the parameter.", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), ("name" = String, Path, description = "The CAPI Cluster's name, a DNS-1123 label.", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
    responses((status = 200, description = "`{cluster, project_id, quota}`: the project's limits and usage.", body = openapi::AnyObject),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "No such cluster, or not the principal's to see.", body = openapi::ErrorBody),
    (status = 422, description = "`ns` or `name` is not a DNS-1123 label, or the cluster's credentials are wrong.", body = openapi::ErrorBody),
    (status = 503, description = "No cloud is configured, or it could not be read.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
))]
pub async fn quota(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_ref(ns, name)?;
    visible(&st, &p, &cluster)?;
    let c = clients(&st)?;
    let os = cluster_os(c, &cluster).await?;
    let usage = crate::lifecycle::quota::read(&os)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading quotas: {e}")))?;
    Ok(Json(
        json!({ "cluster": cluster.to_string(), "project_id": os.project_id, "quota": usage.items }),
    ))
}

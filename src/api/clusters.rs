//! Views of the cloud through Capstan's own clients: the clusters a principal may see, a
//! cluster's Machines with what made them, its project's quota and the catalog a new worker
//! is chosen from — the last three read with the cluster's own OpenStack credentials.
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
use crate::cloud::capi::{
    CAPI_GROUP, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Condition, JOB_LABEL, MANAGED_LABEL,
    Machine, capo,
};
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

/// A cluster's path parameters, as every `/clusters/{ns}/{name}/…` operation takes and
/// documents them (checked by `cluster_ref`, which answers 422 naming the one that is wrong).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClusterPath {
    /// The cluster's namespace, a DNS-1123 label; anything else is a 422 naming the parameter.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )]
    ns: String,
    /// The CAPI Cluster's name, a DNS-1123 label.
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )]
    name: String,
}

/// `GET /v1/clusters/{ns}/{name}/nodes`: every Machine of the cluster, its phase, health,
/// addresses, floating IP and the job that made it.
#[utoipa::path(get, path = "/clusters/{ns}/{name}/nodes", operation_id = "clusterNodes", tag = "clusters", security(("bearerAuth" = [])),
    params(ClusterPath),
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
    Path(path): Path<ClusterPath>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_ref(path.ns, path.name)?;
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
    let servers = os
        .get(Service::Compute, &["servers", "detail"], &[])
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading servers: {e}")))?;
    let volumes = os
        .get(Service::BlockStorage, &["volumes", "detail"], &[])
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading volumes: {e}")))?;
    // The Nodes as the workload cluster has them (its labels, taints and Ready), when its
    // kubeconfig Secret lets Capstan in; the Machines' view stands without them. Read as
    // plain JSON: one odd Node must not hide every other's.
    let workload_nodes: Vec<Value> =
        match crate::lifecycle::common::workload_client(c, &cluster).await {
            Ok(w) => {
                let req = axum::http::Request::get("/api/v1/nodes")
                    .body(Vec::new())
                    .expect("a request");
                w.request::<Value>(req)
                    .await
                    .map(|l| l["items"].as_array().cloned().unwrap_or_default())
                    .unwrap_or_default()
            }
            Err(_) => Vec::new(),
        };
    let mut out = Vec::new();
    for o in list.items {
        let m = Machine::read(&o);
        let machine = m.name.clone();
        let server_id = m.server_id();
        let node = m
            .node
            .as_deref()
            .and_then(|n| workload_nodes.iter().find(|x| x["metadata"]["name"] == n));
        let server = servers["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| server_id.is_some() && s["id"].as_str() == server_id.as_deref())
            .map(|s| {
                json!({
                    "id": s["id"], "status": s["status"], "flavor": s["flavor"]["original_name"],
                    "availability_zone": s["OS-EXT-AZ:availability_zone"],
                    "host": s["OS-EXT-SRV-ATTR:host"],
                })
            });
        let node_volumes: Vec<Value> = volumes["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| capo::is_volume_of(n, &machine))
            })
            .map(|v| json!({"name": v["name"], "size_gib": v["size"], "type": v["volume_type"], "status": v["status"]}))
            .collect();
        let labels = node_labels(o.metadata.labels.as_ref(), node);
        let taints: Vec<Value> = node
            .and_then(|n| n["spec"]["taints"].as_array())
            .into_iter()
            .flatten()
            .map(|t| json!({"key": t["key"], "value": t["value"], "effect": t["effect"]}))
            .collect();
        let ready = node
            .and_then(|n| n["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(
                |c| json!({"status": c["status"], "reason": c["reason"], "message": c["message"]}),
            );
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
            "node_ready": ready.unwrap_or_else(|| condition(m.condition("NodeReady"))),
            "taints": taints,
            "control_plane": o.metadata.labels.as_ref().is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL)),
            "labels": labels,
            "server": server,
            "volumes": node_volumes,
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

/// Roles and labels of a worker: its Machine's (roles among them, which CAPI syncs to the
/// Node) and its Node's, without what Kubernetes, CAPI and Capstan set for themselves.
fn node_labels(
    machine: Option<&std::collections::BTreeMap<String, String>>,
    node: Option<&Value>,
) -> serde_json::Map<String, Value> {
    let own = |k: &str| {
        let bookkeeping = k.starts_with(CAPI_GROUP)
            || k.starts_with("capstan.io/")
            || k == MANAGED_LABEL
            || [
                "kubernetes.io/",
                "beta.kubernetes.io/",
                "node.kubernetes.io/",
                "topology.kubernetes.io/",
            ]
            .iter()
            .any(|p| k.starts_with(p));
        !bookkeeping
    };
    let mut out: serde_json::Map<String, Value> = machine
        .into_iter()
        .flatten()
        .filter(|(k, _)| own(k))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let node_labels = node.and_then(|n| n["metadata"]["labels"].as_object());
    for (k, v) in node_labels.into_iter().flatten() {
        if own(k) && v.is_string() {
            out.insert(k.clone(), v.clone());
        }
    }
    out
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
    params(ClusterPath),
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
    Path(path): Path<ClusterPath>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_ref(path.ns, path.name)?;
    visible(&st, &p, &cluster)?;
    let c = clients(&st)?;
    let os = cluster_os(c, &cluster).await?;
    let usage = crate::lifecycle::quota::read(&os)
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading quotas: {e}")))?;
    let in_flight = in_flight(&st, &os, &cluster).await?;
    Ok(Json(
        json!({ "cluster": cluster.to_string(), "project_id": os.project_id, "quota": usage.items,
                "in_flight": in_flight }),
    ))
}

/// What the cluster's unfinished scale_out jobs will still take from the quota: the nodes
/// that have not made their server yet (pending, or waiting at the quota step), each as
/// preflight counts it. Totals only, whichever principal's jobs they are.
async fn in_flight(
    st: &AppState,
    os: &crate::cloud::os::OpenStack,
    cluster: &ClusterRef,
) -> Result<Value, ApiError> {
    use crate::lifecycle::quota::Need;
    use crate::model::{JobState, NodeStatus};
    let store = st.engine.store();
    let mut need = Need::default();
    let mut flavors: Option<Value> = None;
    for state in [JobState::Queued, JobState::Running, JobState::NeedsInput] {
        let filter = crate::store::JobFilter {
            kind: Some("scale_out".into()),
            state: Some(state),
            cluster: Some(cluster.to_string()),
            limit: 10_000,
            ..Default::default()
        };
        for job in store.list_jobs(&filter).await? {
            for t in store.tasks(&job.id).await? {
                let before_create = t.status == NodeStatus::Pending
                    || (t.state == "quota" && !t.status.is_terminal());
                if !before_create {
                    continue;
                }
                let Ok(spec) = serde_json::from_str::<crate::lifecycle::spec::NodeSpec>(&t.spec)
                else {
                    continue;
                };
                if flavors.is_none() {
                    flavors = Some(
                        os.get(Service::Compute, &["flavors", "detail"], &[])
                            .await
                            .map_err(|e| ApiError::Unavailable(format!("reading flavors: {e}")))?,
                    );
                }
                let flavor = flavors.as_ref().and_then(|f| {
                    f["flavors"].as_array().into_iter().flatten().find(|f| {
                        f["name"] == spec.flavor.as_str() || f["id"] == spec.flavor.as_str()
                    })
                });
                need.add(&Need::with_flavor(&spec, flavor));
            }
        }
    }
    Ok(json!({
        "instances": need.instances, "cores": need.cores, "ram": need.ram,
        "volumes": need.volumes, "gigabytes": need.gigabytes, "port": need.port,
        "floatingip": need.floatingip,
    }))
}

/// `GET /v1/clusters`: the CAPI Clusters of every namespace the principal may see, with the
/// tenant that owns each and its number of worker Machines.
#[utoipa::path(get, path = "/clusters", operation_id = "listClusters", tag = "clusters", security(("bearerAuth" = [])),
    responses((status = 200, description = "`{clusters}`: each cluster the principal may see, with `ns`, `name`, `cluster`, `tenant` and its number of worker Machines.", body = openapi::AnyObject),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 503, description = "No cloud is configured, or it could not be read.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let c = clients(&st)?;
    let capi = c
        .capi()
        .await
        .map_err(|e| ApiError::Unavailable(format!("reading Clusters: {e}")))?;
    let unavailable = |e: kube::Error| ApiError::Unavailable(format!("reading Clusters: {e}"));
    let clusters = capi
        .all_clusters()
        .list(&ListParams::default())
        .await
        .map_err(unavailable)?;
    let machines = capi
        .all_machines()
        .list(&ListParams::default())
        .await
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for o in clusters.items {
        let ns = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone().unwrap_or_default();
        if !st.auth.may_see_namespace(&p, &ns) {
            continue;
        }
        let workers = machines
            .items
            .iter()
            .filter(|m| m.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|m| {
                m.metadata.labels.as_ref().is_some_and(|l| {
                    l.get(CLUSTER_NAME_LABEL) == Some(&name) && !l.contains_key(CONTROL_PLANE_LABEL)
                })
            })
            .count();
        let tenant = st
            .auth
            .tenant_of_namespace(&ns)
            .map(str::to_string)
            .or_else(|| {
                // Without tenants configured every job is the `default` tenant's.
                st.auth.tenants.is_empty().then(|| "default".to_string())
            });
        out.push(
            json!({ "ns": ns, "name": name, "cluster": format!("{ns}/{name}"),
                         "tenant": tenant, "workers": workers }),
        );
    }
    out.sort_by(|a, b| a["cluster"].as_str().cmp(&b["cluster"].as_str()));
    Ok(Json(json!({ "clusters": out })))
}

/// `GET /v1/clusters/{ns}/{name}/catalog`: what a new worker of the cluster can be made of,
/// as the cluster's own credentials see it — flavors, images, networks with their subnets,
/// availability zones, compute hosts (`null` where the credentials may not list them),
/// volume types and free floating IP addresses of the external networks.
#[utoipa::path(get, path = "/clusters/{ns}/{name}/catalog", operation_id = "clusterCatalog", tag = "clusters", security(("bearerAuth" = [])),
    params(ClusterPath),
    responses((status = 200, description = "What the cluster's own credentials see: `flavors`, `images`, `networks` with subnets, `availability_zones`, `hosts` (null where not allowed), `volume_types`, free `floating_ips`.", body = openapi::AnyObject),
    (status = 401, description = "Missing or unknown bearer token.", body = openapi::ErrorBody),
    (status = 404, description = "No such cluster, or not the principal's to see.", body = openapi::ErrorBody),
    (status = 422, description = "`ns` or `name` is not a DNS-1123 label, or the cluster's credentials are wrong.", body = openapi::ErrorBody),
    (status = 503, description = "No cloud is configured, or it could not be read.", body = openapi::ErrorBody),
    (status = 500, description = "The database could not complete the request.", body = openapi::ErrorBody),
))]
pub async fn catalog(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(path): Path<ClusterPath>,
) -> Result<Json<Value>, ApiError> {
    let cluster = cluster_ref(path.ns, path.name)?;
    visible(&st, &p, &cluster)?;
    let c = clients(&st)?;
    let os = cluster_os(c, &cluster).await?;
    let read = |service, path: &'static [&'static str], what: &'static str| {
        let os = os.clone();
        async move {
            os.get(service, path, &[])
                .await
                .map_err(|e| ApiError::Unavailable(format!("reading {what}: {e}")))
        }
    };
    let (flavors, images, networks, subnets, types, zones, fips) = tokio::try_join!(
        read(Service::Compute, &["flavors", "detail"], "flavors"),
        read(Service::Image, &["images"], "images"),
        read(Service::Network, &["networks"], "networks"),
        read(Service::Network, &["subnets"], "subnets"),
        read(Service::BlockStorage, &["types"], "volume types"),
        read(
            Service::Compute,
            &["os-availability-zone"],
            "availability zones"
        ),
        read(Service::Network, &["floatingips"], "floating IPs"),
    )?;
    // Listing hosts is an admin's right in Nova; other credentials see none.
    let hosts = os
        .get(Service::Compute, &["os-availability-zone", "detail"], &[])
        .await
        .ok()
        .map(|d| catalog::hosts(&d));
    Ok(Json(json!({
        "cluster": cluster.to_string(),
        "project_id": os.project_id,
        "flavors": catalog::flavors(&flavors),
        "images": catalog::names(&images["images"]),
        "networks": catalog::networks(&networks, &subnets, &os.project_id),
        "availability_zones": catalog::zones(&zones),
        "hosts": hosts,
        "volume_types": catalog::names(&types["volume_types"]),
        "floating_ips": catalog::free_floating_ips(&networks, &subnets, &fips),
    })))
}

/// The catalog's pure parts: OpenStack's list answers reduced to what a form offers.
mod catalog {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use serde_json::{Value, json};

    use crate::ipv4::Cidr;

    /// How many free addresses of each external subnet the catalog offers.
    const FREE_ADDRESSES: usize = 16;

    fn items(v: &Value) -> impl Iterator<Item = &Value> {
        v.as_array().into_iter().flatten()
    }

    pub fn names(list: &Value) -> Vec<Value> {
        let mut names: Vec<Value> = items(list)
            .filter_map(|x| x["name"].as_str())
            .map(|n| json!(n))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        names
    }

    pub fn flavors(v: &Value) -> Vec<Value> {
        let mut out: Vec<Value> = items(&v["flavors"])
            .map(|f| json!({"name": f["name"], "vcpus": f["vcpus"], "ram_mib": f["ram"], "disk_gib": f["disk"]}))
            .collect();
        out.sort_by_key(|f| (f["vcpus"].as_i64(), f["ram_mib"].as_i64()));
        out
    }

    /// The networks the project may put a port on: its own, shared and external ones (an
    /// admin's credentials list every project's, which are not the cluster's to use).
    pub fn networks(networks: &Value, subnets: &Value, project: &str) -> Vec<Value> {
        items(&networks["networks"])
            .filter(|n| {
                n["router:external"] == true
                    || n["shared"] == true
                    || n["project_id"].as_str().is_none_or(|p| p.is_empty() || p == project)
            })
            .map(|n| {
                let subs: Vec<Value> = items(&subnets["subnets"])
                    .filter(|s| s["network_id"] == n["id"])
                    .map(|s| json!({"name": s["name"], "cidr": s["cidr"]}))
                    .collect();
                json!({"name": n["name"], "external": n["router:external"] == true, "subnets": subs})
            })
            .collect()
    }

    pub fn zones(v: &Value) -> Vec<Value> {
        items(&v["availabilityZoneInfo"])
            .filter(|z| z["zoneState"]["available"] != false)
            .filter_map(|z| z["zoneName"].as_str())
            .map(|z| json!(z))
            .collect()
    }

    /// `(zone, host)` pairs from `os-availability-zone/detail`, compute hosts only.
    pub fn hosts(v: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        for z in items(&v["availabilityZoneInfo"]) {
            for (host, services) in z["hosts"].as_object().into_iter().flatten() {
                if services.get("nova-compute").is_some() {
                    out.push(json!({"zone": z["zoneName"], "host": host}));
                }
            }
        }
        out
    }

    /// Addresses of the external networks' subnets that no floating IP holds yet, from the
    /// top of each range down (where Neutron's own allocation, from the bottom, reaches last).
    pub fn free_floating_ips(networks: &Value, subnets: &Value, fips: &Value) -> Vec<Value> {
        let taken: HashSet<&str> = items(&fips["floatingips"])
            .filter_map(|f| f["floating_ip_address"].as_str())
            .collect();
        let external: HashSet<&str> = items(&networks["networks"])
            .filter(|n| n["router:external"] == true)
            .filter_map(|n| n["id"].as_str())
            .collect();
        let mut out = Vec::new();
        for s in items(&subnets["subnets"]) {
            if !s["network_id"]
                .as_str()
                .is_some_and(|n| external.contains(n))
            {
                continue;
            }
            let Some(cidr) = s["cidr"].as_str().and_then(|c| Cidr::parse(c).ok()) else {
                continue;
            };
            let (first, last) = cidr.hosts();
            let gateway = s["gateway_ip"].as_str();
            let free = (u32::from(first)..=u32::from(last))
                .rev()
                .map(|a| Ipv4Addr::from(a).to_string())
                .filter(|a| !taken.contains(a.as_str()) && Some(a.as_str()) != gateway)
                .take(FREE_ADDRESSES);
            out.extend(free.map(|address| json!({"address": address, "network": s["name"]})));
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn free_floating_ips_skip_allocated_addresses_gateways_and_internal_networks() {
            let networks = json!({"networks": [
                {"id": "ext", "name": "public", "router:external": true},
                {"id": "int", "name": "demo-net", "router:external": false}]});
            let subnets = json!({"subnets": [
                {"network_id": "ext", "name": "public-subnet", "cidr": "172.24.4.0/29", "gateway_ip": "172.24.4.1"},
                {"network_id": "int", "name": "demo-subnet", "cidr": "10.6.0.0/24"}]});
            let fips = json!({"floatingips": [{"floating_ip_address": "172.24.4.5"}]});
            let free: Vec<Value> = free_floating_ips(&networks, &subnets, &fips)
                .iter()
                .map(|f| f["address"].clone())
                .collect();
            assert_eq!(
                free,
                [
                    json!("172.24.4.6"),
                    json!("172.24.4.4"),
                    json!("172.24.4.3"),
                    json!("172.24.4.2")
                ]
            );
        }

        #[test]
        fn hosts_are_the_compute_hosts_of_each_zone() {
            let detail = json!({"availabilityZoneInfo": [
                {"zoneName": "internal", "hosts": {"ctl": {"nova-scheduler": {}}}},
                {"zoneName": "az1", "hosts": {"compute-1": {"nova-compute": {}}}}]});
            assert_eq!(
                hosts(&detail),
                [json!({"zone": "az1", "host": "compute-1"})]
            );
        }
    }
}

//! Admission of the lifecycle kinds: `scale_out`'s request shape (defaults resolved into
//! each node's spec) and its preflight against the cloud, before anything is created.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::quota::{self, Need};
use super::spec::{FloatingIp, NodeSpec, parse_request_nodes};
use crate::cloud::capi::{self, capo};
use crate::cloud::marks;
use crate::cloud::os::{CallError, OpenStack, Service};
use crate::cloud::{Clients, ClusterRef, CredentialError};
use crate::engine::admission::{Admission, AdmitFuture, Refusal};
use crate::engine::request::{FieldError, JobRequest};
use crate::ipv4::Cidr;

/// Top-level request fields of `scale_out` that travel in the job's params.
const SCALE_OUT_FIELDS: &[&str] = &[
    "defaults",
    "require_quota",
    "version",
    "bootstrap_secret",
    "stall_after",
];

pub struct Lifecycle {
    pub clients: Clients,
    /// Capstan's own record: a repaired node's original spec, when Capstan made it.
    pub store: crate::store::Store,
}

impl Admission for Lifecycle {
    fn prepare(&self, kind: &str, body: Value) -> Result<Value, Vec<FieldError>> {
        match kind {
            "scale_out" => prepare_scale_out(body),
            "delete_nodes" => move_to_params(body, &["force_after"]),
            "repair_sweep" => move_to_params(
                sweep_node(body),
                &[
                    "max_parallel",
                    "max_unhealthy",
                    "unhealthy_after",
                    "startup_timeout",
                ],
            ),
            "orphan_sweep" => move_to_params(sweep_node(body), &["grace", "dry_run"]),
            "repair" => move_to_params(
                body,
                &[
                    "force",
                    "force_after",
                    "max_parallel",
                    "max_unhealthy",
                    "unhealthy_after",
                    "startup_timeout",
                ],
            ),
            _ => Ok(body),
        }
    }

    fn check_amend<'a>(
        &'a self,
        kind: &'a str,
        cluster: &'a str,
        amended: &'a Value,
        others: &'a [Value],
    ) -> AdmitFuture<'a> {
        Box::pin(async move {
            // Both kinds' nodes are scale_out node specs (a repair recreates with one).
            if kind != "scale_out" && kind != "repair" {
                return Ok(());
            }
            let spec =
                super::spec::parse_node(&json!({}), amended, "").map_err(Refusal::Invalid)?;
            let mut all: Vec<NodeSpec> = others
                .iter()
                .filter_map(|o| serde_json::from_value(o.clone()).ok())
                .collect();
            all.push(spec.clone());
            let errs = super::spec::check_unique(&all);
            if !errs.is_empty() {
                return Err(Refusal::Invalid(errs));
            }
            // The node checks preflight makes, against the cluster's cloud, for this node;
            // quota is waited for, not refused.
            let cluster = ClusterRef::parse(cluster)
                .map_err(|e| Refusal::Invalid(vec![FieldError::new("cluster", e)]))?;
            let mut req = JobRequest {
                kind: "scale_out".into(),
                cluster,
                tenant: None,
                nodes: vec![(
                    spec.name.clone(),
                    serde_json::to_value(&spec).expect("a node spec serializes"),
                )],
                deadline: None,
                concurrency: None,
                params: json!({}),
            };
            match preflight(&self.clients, &mut req).await {
                Err(Refusal::Invalid(f)) => Err(Refusal::Invalid(
                    f.into_iter()
                        .map(|e| FieldError::new(e.field.replacen("nodes[0].", "", 1), e.message))
                        .collect(),
                )),
                Err(Refusal::Unavailable(m)) => Err(Refusal::Unavailable(m)),
                _ => Ok(()),
            }
        })
    }

    fn admit<'a>(&'a self, req: &'a mut JobRequest, _tenant: &'a str) -> AdmitFuture<'a> {
        Box::pin(async move {
            match req.kind.as_str() {
                "scale_out" => preflight(&self.clients, req).await,
                "delete_nodes" => resolve_for_delete(&self.clients, req).await,
                "repair" => admit_repair(&self.clients, &self.store, req).await,
                // The sweeps act on their cluster with its credentials: both must exist.
                "repair_sweep" | "orphan_sweep" => {
                    cluster_os(&self.clients, &req.cluster).await.map(|_| ())
                }
                _ => Ok(()),
            }
        })
    }
}

/// Moves `scale_out`'s own fields into `params` and resolves every node against the
/// defaults, so each stored node spec is complete.
pub fn prepare_scale_out(mut body: Value) -> Result<Value, Vec<FieldError>> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    let mut params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        Some(Value::Null) | None => Map::new(),
        Some(other) => {
            obj.insert("params".into(), other);
            return Ok(body);
        }
    };
    for f in SCALE_OUT_FIELDS {
        if let Some(v) = obj.remove(*f) {
            params.insert(f.to_string(), v);
        }
    }
    let mut errs = Vec::new();
    if let Some(v) = params.get("require_quota")
        && !v.is_boolean()
    {
        errs.push(FieldError::new("require_quota", "must be true or false"));
    }
    if let Some(v) = params.get("stall_after") {
        match v.as_str().map(crate::duration::parse) {
            Some(Ok(_)) => {}
            Some(Err(e)) => errs.push(FieldError::new("stall_after", e)),
            None => errs.push(FieldError::new(
                "stall_after",
                "must be a duration such as `60s`",
            )),
        }
    }
    let nodes = match obj.get("nodes") {
        Some(Value::Array(list)) => list.clone(),
        _ => {
            obj.insert("params".into(), Value::Object(params));
            return if errs.is_empty() { Ok(body) } else { Err(errs) };
        }
    };
    match parse_request_nodes(params.get("defaults"), &nodes) {
        Ok(specs) => {
            let resolved: Vec<Value> = specs
                .iter()
                .map(|s| serde_json::to_value(s).expect("a node spec serializes"))
                .collect();
            obj.insert("nodes".into(), Value::Array(resolved));
        }
        Err(e) => errs.extend(e),
    }
    obj.insert("params".into(), Value::Object(params));
    if errs.is_empty() { Ok(body) } else { Err(errs) }
}

/// The one node task a sweep runs as. Stored rows name it, so it never changes.
pub(crate) const SWEEP_NODE: &str = "sweep";

/// A sweep acts on its cluster, not on named nodes: a request without `nodes` gets the one
/// task the engine runs it as; one that names them (`["sweep"]`, the older form) is kept.
fn sweep_node(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut()
        && !obj.contains_key("nodes")
    {
        obj.insert("nodes".into(), json!([SWEEP_NODE]));
    }
    body
}

/// Moves a kind's own top-level fields into `params`, checking durations.
fn move_to_params(mut body: Value, fields: &[&str]) -> Result<Value, Vec<FieldError>> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    let mut params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let mut errs = Vec::new();
    for f in fields {
        if let Some(v) = obj.remove(*f) {
            if f.ends_with("_after") {
                match v.as_str().map(crate::duration::parse) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => errs.push(FieldError::new(*f, e)),
                    None => errs.push(FieldError::new(*f, "must be a duration such as `15m`")),
                }
            }
            params.insert(f.to_string(), v);
        }
    }
    obj.insert("params".into(), Value::Object(params));
    if errs.is_empty() { Ok(body) } else { Err(errs) }
}

fn kube_unavailable(e: kube::Error) -> Refusal {
    Refusal::Unavailable(format!("could not read the cluster: {e}"))
}

/// The cluster's OpenStack, with its own credentials. A cluster that does not exist, or
/// whose credentials are missing or refused, is a 422 naming the Secret and the field; a
/// cloud that cannot be reached is a 503.
async fn cluster_os(c: &Clients, cluster: &ClusterRef) -> Result<OpenStack, Refusal> {
    c.os(cluster).await.map_err(|e| match e {
        e if e.is_unavailable() => {
            Refusal::Unavailable(format!("could not log in to {cluster}'s cloud: {e}"))
        }
        CredentialError::NoCluster(_) => {
            Refusal::Invalid(vec![FieldError::new("cluster", e.to_string())])
        }
        e => Refusal::Invalid(vec![FieldError::new(
            "cluster",
            format!("the OpenStack credentials of {cluster}: {e}"),
        )]),
    })
}

/// The worker Machines of a cluster (by CAPI's cluster-name label; control-plane Machines
/// are not workers).
async fn cluster_machines(
    c: &Clients,
    ns: &str,
    cluster: &str,
) -> Result<Vec<kube::api::DynamicObject>, Refusal> {
    Ok(c.capi()
        .await
        .map_err(kube_unavailable)?
        .machines(ns)
        .list(&kube::api::ListParams::default().labels(&format!(
            "{}={cluster},!{}",
            capi::CLUSTER_NAME_LABEL,
            capi::CONTROL_PLANE_LABEL
        )))
        .await
        .map_err(kube_unavailable)?
        .items)
}

/// Resolves each named node — a Machine name, a Node name or a Nova server UUID — to a
/// Machine of the named cluster, and nowhere else; a name with nothing behind it in this
/// cluster is refused, nothing touched. A Machine already gone whose server or port is still
/// in the cluster's project is accepted only with proof it was this cluster's (the server
/// carries the cluster's mark, or the port CAPO's description for this cluster), so a
/// second delete job finishes what a first one left.
async fn resolve_for_delete(c: &Clients, req: &mut JobRequest) -> Result<(), Refusal> {
    let cluster = req.cluster.clone();
    let os = cluster_os(c, &cluster).await?;
    let (ns, name) = (&cluster.ns, &cluster.name);
    let all = cluster_machines(c, ns, name).await?;
    let nodes: Vec<k8s_openapi::api::core::v1::Node> =
        match super::common::workload_client(c, &cluster).await {
            Ok(w) => kube::Api::all(w)
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
    let servers = read(&os, Service::Compute, &["servers", "detail"], "servers").await?;
    let ports = read(&os, Service::Network, &["ports"], "ports").await?;
    let server_of_machine = |m: &kube::api::DynamicObject| capi::Machine::read(m).server_id();
    let port_mark = marks::capo_port_description(&cluster);
    let mut errs = Vec::new();
    let mut resolved = Vec::new();
    let mut seen = HashSet::new();
    for (i, (given, _)) in req.nodes.iter().enumerate() {
        let by_machine = all
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(given.as_str()));
        let by_node = || {
            let node = nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(given.as_str()))?;
            let id = capo::server_id_of(node.spec.as_ref()?.provider_id.as_deref())?;
            all.iter()
                .find(|m| server_of_machine(m) == Some(id.clone()))
        };
        let by_server = || {
            all.iter()
                .find(|m| server_of_machine(m).as_deref() == Some(given.as_str()))
        };
        let machine = by_machine
            .or_else(by_node)
            .or_else(by_server)
            .and_then(|m| m.metadata.name.clone());
        // What a gone Machine of this cluster left, with proof it was this cluster's.
        let leftover = || -> Option<String> {
            let marked_server = servers["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| {
                    (s["name"] == given.as_str() || s["id"] == given.as_str())
                        && marks::server_is_marked(s, &cluster)
                });
            if let Some(s) = marked_server {
                return s["name"].as_str().map(str::to_string);
            }
            let marked_port = ports["ports"].as_array().into_iter().flatten().any(|p| {
                p["name"] == capo::port_name(given, 0).as_str()
                    && p["description"] == port_mark.as_str()
            });
            marked_port.then(|| given.clone())
        };
        match machine.or_else(leftover) {
            Some(m) if !seen.insert(m.clone()) => errs.push(FieldError::new(
                format!("nodes[{i}]"),
                format!("{given} names Machine {m}, which another entry already names"),
            )),
            Some(m) => resolved.push((m.clone(), json!({ "name": m, "given": given }))),
            None => errs.push(FieldError::new(
                format!("nodes[{i}]"),
                format!("no Machine, Node or server {given} in cluster {cluster}"),
            )),
        }
    }
    if !errs.is_empty() {
        return Err(Refusal::Invalid(errs));
    }
    let named: Vec<Value> = resolved.iter().map(|(n, _)| json!(n)).collect();
    if let Some(p) = req.params.as_object_mut() {
        p.insert("named_machines".into(), json!(named));
    } else {
        req.params = json!({ "named_machines": named });
    }
    req.nodes = resolved;
    Ok(())
}

/// `max_unhealthy` as a fraction: `"40%"` or a number of percent.
fn percent(v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Null => return Ok(0.4),
        Value::String(s) => s
            .trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .map_err(|e| e.to_string())?,
        Value::Number(n) => n.as_f64().unwrap_or(-1.0),
        _ => -1.0,
    };
    if (0.0..=100.0).contains(&n) {
        Ok(n / 100.0)
    } else {
        Err("must be a percentage from 0% to 100%".into())
    }
}

/// Checks a repair: the named Machines exist, the cluster is not too broken to repair
/// (`max_unhealthy`), and each node's spec is found (stored by Capstan, or read back).
pub(crate) async fn admit_repair(
    c: &Clients,
    store: &crate::store::Store,
    req: &mut JobRequest,
) -> Result<(), Refusal> {
    use super::common::pick_server;
    use super::repair::{Thresholds, assess, read_back, release_params};
    let cref = req.cluster.clone();
    let os = cluster_os(c, &cref).await?;
    let (ns, cluster) = (cref.ns.clone(), cref.name.clone());
    let mut errs = Vec::new();
    let max_unhealthy = match percent(&req.params["max_unhealthy"]) {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldError::new("max_unhealthy", e));
            0.4
        }
    };
    let max_parallel = match &req.params["max_parallel"] {
        Value::Null => 1,
        v => match v.as_u64() {
            Some(n) if (1..=100).contains(&n) => n as u32,
            _ => {
                errs.push(FieldError::new(
                    "max_parallel",
                    "must be an integer from 1 to 100",
                ));
                1
            }
        },
    };
    let all = cluster_machines(c, &ns, &cluster).await?;
    let servers = os
        .get(Service::Compute, &["servers", "detail"], &[])
        .await
        .map_err(|e| unavailable("servers", e))?;
    let thresholds = Thresholds::from_params(&req.params);
    let unhealthy: Vec<String> = all
        .iter()
        .filter(|m| {
            let machine = capi::Machine::read(m);
            let server = pick_server(
                servers["servers"].as_array().into_iter().flatten(),
                &cref,
                &machine,
            );
            assess(&machine, server, thresholds).is_some()
        })
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    if !all.is_empty() && unhealthy.len() as f64 / all.len() as f64 > max_unhealthy {
        return Err(Refusal::Conflict(vec![FieldError::new(
            "max_unhealthy",
            format!(
                "{} of {} workers of {ns}/{cluster} are unhealthy ({:.0}%: {}), more than max_unhealthy {:.0}%: stopping rather than replacing them all",
                unhealthy.len(),
                all.len(),
                100.0 * unhealthy.len() as f64 / all.len() as f64,
                unhealthy.join(", "),
                100.0 * max_unhealthy
            ),
        )]));
    }
    let osms = c
        .capi()
        .await
        .map_err(kube_unavailable)?
        .openstack_machines(&ns);
    let mut nodes = Vec::new();
    let mut releases = Vec::new();
    for (i, (name, _)) in req.nodes.iter().enumerate() {
        let Some(m) = all
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(name.as_str()))
        else {
            errs.push(FieldError::new(
                format!("nodes[{i}]"),
                format!("no Machine {name} in cluster {ns}/{cluster}"),
            ));
            continue;
        };
        // Capstan's own spec when it made the node; else what the cluster says.
        let job = m
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(capi::JOB_LABEL))
            .cloned();
        let mut stored = None;
        if let Some(j) = job
            && let Ok(tasks) = store.tasks(&j).await
        {
            stored = tasks
                .iter()
                .find(|t| &t.name == name)
                .and_then(|t| serde_json::from_str::<NodeSpec>(&t.spec).ok());
        }
        let spec = match stored {
            Some(s) => s,
            None => {
                let Some(osm) = osms.get_opt(name).await.map_err(kube_unavailable)? else {
                    errs.push(FieldError::new(
                        format!("nodes[{i}]"),
                        format!("Machine {name} has no OpenStackMachine to read its spec from"),
                    ));
                    continue;
                };
                match read_back(&os, m, &osm).await {
                    Ok(s) => s,
                    Err(e) => {
                        errs.push(FieldError::new(
                            format!("nodes[{i}]"),
                            format!("cannot read {name}'s spec back: {e}"),
                        ));
                        continue;
                    }
                }
            }
        };
        // The floating IP it has now is released and taken again by address — only with
        // proof it is this node's: on a port of the server its Machine names, or described
        // by Capstan for this cluster and node. (An address alone is not proof: with the
        // admin role Neutron lists every project's.)
        if let FloatingIp::Address(a) = &spec.floating_ip {
            let fips = os
                .get(
                    Service::Network,
                    &["floatingips"],
                    &[("floating_ip_address", &a.to_string())],
                )
                .await
                .map_err(|e| unavailable("floating IPs", e))?;
            let server = capi::Machine::read(m).server_id();
            let node_ports: Vec<String> = match server.as_deref() {
                Some(id) => os
                    .get(Service::Network, &["ports"], &[("device_id", id)])
                    .await
                    .map_err(|e| unavailable("ports", e))?["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["device_id"] == id)
                    .filter_map(|p| p["id"].as_str().map(str::to_string))
                    .collect(),
                None => Vec::new(),
            };
            for f in fips["floatingips"].as_array().into_iter().flatten() {
                let on_node = f["port_id"]
                    .as_str()
                    .is_some_and(|p| node_ports.iter().any(|x| x == p));
                let described = marks::read_floating_ip_description(
                    f["description"].as_str().unwrap_or_default(),
                )
                .is_some_and(|(c, _, n)| c == cref && n == *name);
                if (on_node || described)
                    && let Some(id) = f["id"].as_str()
                {
                    releases.push((name.clone(), id.to_string()));
                }
            }
        }
        nodes.push((
            name.clone(),
            serde_json::to_value(&spec).expect("a node spec serializes"),
        ));
    }
    if !errs.is_empty() {
        return Err(Refusal::Invalid(errs));
    }
    req.nodes = nodes;
    req.concurrency = Some(max_parallel);
    if !req.params.is_object() {
        req.params = json!({});
    }
    req.params["release"] = release_params(&releases);
    Ok(())
}

fn field(i: usize, f: &str) -> String {
    format!("nodes[{i}].{f}")
}

fn names<'a>(list: &'a Value, key: &str) -> HashSet<&'a str> {
    list[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str())
        .collect()
}

fn unavailable(what: &str, e: CallError) -> Refusal {
    Refusal::Unavailable(format!("preflight could not read {what}: {e}"))
}

/// One list the checks need from the cloud; a failure is a 503 naming what could not be read.
async fn read(
    os: &crate::cloud::os::OpenStack,
    service: Service,
    path: &[&str],
    what: &str,
) -> Result<Value, Refusal> {
    os.get(service, path, &[])
        .await
        .map_err(|e| unavailable(what, e))
}

/// The node's keypair exists for the cluster's OpenStack user (keypairs belong to users; Nova
/// refuses a server with an unknown `key_name`: 400 "Invalid key_name provided.").
fn check_keypair(i: usize, s: &NodeSpec, listed: &Value) -> Option<FieldError> {
    let key = s.ssh_key.as_deref()?;
    let known = listed["keypairs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k["keypair"]["name"] == key);
    (!known).then(|| {
        FieldError::new(
            field(i, "ssh_key"),
            format!("keypair {key} does not exist for the cluster's OpenStack user"),
        )
    })
}

/// Each of the node's security groups is one the cluster's project can use, by name (the
/// OpenStackMachine asks CAPO for them by a name filter): its own, or one shared with it
/// (Neutron RBAC marks those `shared`). Another project's group, which credentials with the
/// admin role also list, does not count. CAPO looks them up before it makes the node's
/// ports and stops, with no server, at the first it cannot find.
fn check_security_groups(
    i: usize,
    s: &NodeSpec,
    listed: &Value,
    project_id: &str,
) -> Vec<FieldError> {
    let names: HashSet<&str> = listed["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["project_id"] == project_id || g["shared"] == true)
        .filter_map(|g| g["name"].as_str())
        .collect();
    s.security_groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !names.contains(g.as_str()))
        .map(|(j, g)| {
            FieldError::new(
                field(i, &format!("security_groups[{j}]")),
                format!("security group {g} does not exist in the project"),
            )
        })
        .collect()
}

/// Checks every node against the cloud, reporting every problem at once.
async fn preflight(c: &Clients, req: &mut JobRequest) -> Result<(), Refusal> {
    let specs: Vec<NodeSpec> = req
        .nodes
        .iter()
        .map(|(_, v)| serde_json::from_value(v.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| Refusal::Invalid(vec![FieldError::new("nodes", e.to_string())]))?;
    let cref = req.cluster.clone();
    let os = &cluster_os(c, &cref).await?;
    let (ns, cluster) = (cref.ns.clone(), cref.name.clone());
    let mut errs = Vec::new();

    // The cluster and what every node needs from it.
    let kube_unavailable =
        |e: kube::Error| Refusal::Unavailable(format!("preflight could not read the cluster: {e}"));
    let capi = c.capi().await.map_err(kube_unavailable)?;
    let found = capi
        .clusters(&ns)
        .get_opt(&cluster)
        .await
        .map_err(kube_unavailable)?;
    if found.is_none() {
        return Err(Refusal::Invalid(vec![FieldError::new(
            "cluster",
            format!("no CAPI Cluster {ns}/{cluster}"),
        )]));
    }
    let bootstrap = req.params["bootstrap_secret"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{cluster}-bootstrap"));
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.kube.clone(), &ns);
    if secrets
        .get_opt(&bootstrap)
        .await
        .map_err(kube_unavailable)?
        .is_none()
    {
        errs.push(FieldError::new(
            "bootstrap_secret",
            format!("Secret {ns}/{bootstrap} with the workers' bootstrap data does not exist"),
        ));
    }
    let machines = capi.machines(&ns);

    // What the cloud offers to this cluster's project.
    let flavors = read(os, Service::Compute, &["flavors", "detail"], "flavors").await?;
    let images = read(os, Service::Image, &["images"], "images").await?;
    let networks = read(os, Service::Network, &["networks"], "networks").await?;
    let subnets = read(os, Service::Network, &["subnets"], "subnets").await?;
    let ports = read(os, Service::Network, &["ports"], "ports").await?;
    let fips = read(os, Service::Network, &["floatingips"], "floating IPs").await?;
    let types = read(os, Service::BlockStorage, &["types"], "volume types").await?;
    let zones = read(
        os,
        Service::Compute,
        &["os-availability-zone"],
        "availability zones",
    )
    .await?;
    let servers = read(os, Service::Compute, &["servers"], "servers").await?;
    let wants_host = specs.iter().any(|s| s.host.is_some());
    let hypervisors = if wants_host {
        Some(
            os.get(Service::Compute, &["os-hypervisors", "detail"], &[])
                .await,
        )
    } else {
        None
    };
    // Which hosts each zone has (admin-only, like pinning itself). Real Nova accepts
    // `az1:compute-3` for a host of az2 and places the server in az2: refuse it here.
    let zone_hosts: Vec<(String, String)> = if wants_host {
        os.get(Service::Compute, &["os-availability-zone", "detail"], &[])
            .await
            .map(|d| {
                d["availabilityZoneInfo"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|z| {
                        let zone = z["zoneName"].as_str().unwrap_or_default().to_string();
                        z["hosts"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, services)| services.get("nova-compute").is_some())
                            .map(move |(h, _)| (zone.clone(), h.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // A keypair belongs to the OpenStack user, a security group to the project: each is
    // read only when a node names one.
    let keypairs = if specs.iter().any(|s| s.ssh_key.is_some()) {
        Some(read(os, Service::Compute, &["os-keypairs"], "keypairs").await?)
    } else {
        None
    };
    let groups = if specs.iter().any(|s| !s.security_groups.is_empty()) {
        Some(
            os.get(Service::Network, &["security-groups"], &[])
                .await
                .map_err(|e| unavailable("security groups", e))?,
        )
    } else {
        None
    };
    let flavor_names = names(&flavors, "flavors");
    let image_names = names(&images, "images");
    let network_names = names(&networks, "networks");
    let type_names = names(&types, "volume_types");
    let server_names = names(&servers, "servers");
    let zone_names: HashSet<&str> = zones["availabilityZoneInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| z["zoneName"].as_str())
        .collect();
    // Addresses in use, per subnet: credentials with the admin role list every project's
    // ports, and two projects may well use the same range.
    let taken: HashSet<(String, String)> = ports["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
        .filter_map(|ip| {
            Some((
                ip["subnet_id"].as_str()?.to_string(),
                ip["ip_address"].as_str()?.to_string(),
            ))
        })
        .collect();
    let fip_taken: HashSet<&str> = fips["floatingips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["floating_ip_address"].as_str())
        .collect();

    // Where floating IPs come from: the subnets of the external networks.
    let external_ids: HashSet<&str> = networks["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["router:external"] == true)
        .filter_map(|n| n["id"].as_str())
        .collect();
    let external_cidrs: Vec<(&str, &str)> = subnets["subnets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["network_id"]
                .as_str()
                .is_some_and(|n| external_ids.contains(n))
        })
        .filter_map(|s| Some((s["name"].as_str()?, s["cidr"].as_str()?)))
        .collect();
    let mut total = Need::default();
    for (i, s) in specs.iter().enumerate() {
        if machines
            .get_opt(&s.name)
            .await
            .map_err(kube_unavailable)?
            .is_some()
        {
            errs.push(FieldError::new(
                field(i, "name"),
                format!("a Machine named {} already exists in {ns}", s.name),
            ));
        }
        if server_names.contains(s.name.as_str()) {
            errs.push(FieldError::new(
                field(i, "name"),
                format!(
                    "a Nova server named {} already exists in the project",
                    s.name
                ),
            ));
        }
        if !flavor_names.contains(s.flavor.as_str()) {
            errs.push(FieldError::new(
                field(i, "flavor"),
                format!("flavor {} does not exist", s.flavor),
            ));
        }
        if !image_names.contains(s.image.as_str()) {
            errs.push(FieldError::new(
                field(i, "image"),
                format!("image {} does not exist", s.image),
            ));
        }
        let network = networks["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == s.network.as_str());
        if network.is_none() {
            errs.push(FieldError::new(
                field(i, "network"),
                format!("network {} does not exist", s.network),
            ));
        }
        let subnet = subnets["subnets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == s.subnet.as_str());
        match (subnet, network) {
            (None, _) => errs.push(FieldError::new(
                field(i, "subnet"),
                format!("subnet {} does not exist", s.subnet),
            )),
            (Some(sub), Some(net)) if sub["network_id"] != net["id"] => errs.push(FieldError::new(
                field(i, "subnet"),
                format!("subnet {} is not on network {}", s.subnet, s.network),
            )),
            (Some(sub), _) => {
                if let Some(ip) = s.ip {
                    let cidr = sub["cidr"].as_str().unwrap_or_default();
                    match Cidr::parse(cidr) {
                        Ok(c) if !c.contains_str(&ip.to_string()) => errs.push(FieldError::new(
                            field(i, "ip"),
                            format!("{ip} is outside subnet {} ({cidr})", s.subnet),
                        )),
                        _ => {}
                    }
                    let subnet_id = sub["id"].as_str().unwrap_or_default().to_string();
                    if taken.contains(&(subnet_id, ip.to_string())) {
                        errs.push(FieldError::new(
                            field(i, "ip"),
                            format!("{ip} is already allocated in subnet {}", s.subnet),
                        ));
                    }
                }
            }
        }
        let _ = network_names.len();
        if let Some(az) = &s.availability_zone
            && !zone_names.contains(az.as_str())
        {
            errs.push(FieldError::new(
                field(i, "availability_zone"),
                format!("availability zone {az} does not exist"),
            ));
        }
        if let Some(host) = &s.host {
            match &hypervisors {
                Some(Ok(h)) => {
                    let known = h["hypervisors"].as_array().into_iter().flatten().any(|x| {
                        x["hypervisor_hostname"] == host.as_str() || x["service"]["host"] == host.as_str()
                    });
                    if !known {
                        errs.push(FieldError::new(field(i, "host"), format!("compute host {host} is not in the hypervisor list")));
                    } else if let Some(az) = &s.availability_zone
                        && zone_names.contains(az.as_str())
                        && let Some((zone, _)) = zone_hosts.iter().find(|(_, h)| h == host)
                        && zone != az
                    {
                        errs.push(FieldError::new(
                            field(i, "host"),
                            format!("compute host {host} is in availability zone {zone}, not {az}"),
                        ));
                    }
                }
                Some(Err(e)) if e.status == 403 => errs.push(FieldError::new(
                    field(i, "host"),
                    "pinning a compute host needs credentials with the admin role; these cannot read the hypervisor list",
                )),
                Some(Err(e)) => return Err(Refusal::Unavailable(format!("preflight could not read hypervisors: {e}"))),
                None => {}
            }
        }
        if let Some(k) = &keypairs {
            errs.extend(check_keypair(i, s, k));
        }
        if let Some(g) = &groups {
            errs.extend(check_security_groups(i, s, g, &os.project_id));
        }
        // Cinder refuses a volume smaller than its image's min_disk (400).
        let min_disk = images["images"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == s.image.as_str())
            .and_then(|x| x["min_disk"].as_u64())
            .unwrap_or(0);
        if let Some(r) = &s.root_volume
            && u64::from(r.size_gib) < min_disk
        {
            errs.push(FieldError::new(
                field(i, "root_volume.size_gib"),
                format!(
                    "{} GiB is smaller than image {}'s min_disk of {min_disk} GiB",
                    r.size_gib, s.image
                ),
            ));
        }
        if let Some(r) = &s.root_volume
            && let Some(t) = &r.volume_type
            && !type_names.contains(t.as_str())
        {
            errs.push(FieldError::new(
                field(i, "root_volume.type"),
                format!("volume type {t} does not exist"),
            ));
        }
        for (j, d) in s.data_volumes.iter().enumerate() {
            if let Some(t) = &d.volume_type
                && !type_names.contains(t.as_str())
            {
                errs.push(FieldError::new(
                    field(i, &format!("data_volumes[{j}].type")),
                    format!("volume type {t} does not exist"),
                ));
            }
        }
        if let FloatingIp::Address(a) = &s.floating_ip {
            let address = a.to_string();
            if fip_taken.contains(address.as_str()) {
                errs.push(FieldError::new(
                    field(i, "floating_ip"),
                    format!("floating IP {a} is already allocated"),
                ));
            } else if !external_cidrs
                .iter()
                .any(|(_, c)| Cidr::parse(c).is_ok_and(|c| c.contains_str(&address)))
            {
                let known: Vec<String> = external_cidrs
                    .iter()
                    .map(|(n, c)| format!("{n} {c}"))
                    .collect();
                errs.push(FieldError::new(
                    field(i, "floating_ip"),
                    format!(
                        "{a} is in no subnet of an external network ({})",
                        known.join(", ")
                    ),
                ));
            }
        }
        let flavor = flavors["flavors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == s.flavor.as_str());
        total.add(&Need::with_flavor(s, flavor));
    }
    if !errs.is_empty() {
        return Err(Refusal::Invalid(errs));
    }
    // Quota headroom for the whole job.
    let usage = quota::read(os)
        .await
        .map_err(|e| unavailable("quotas", e))?;
    let short = usage.short_for(&total);
    if !short.is_empty() {
        if req.params["require_quota"] == true {
            return Err(Refusal::Conflict(
                short
                    .into_iter()
                    .map(|s| FieldError::new("quota", s))
                    .collect(),
            ));
        }
        if let Some(p) = req.params.as_object_mut() {
            p.insert("quota_short_at_submit".into(), json!(short));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_needs_no_node_list_and_the_older_form_still_works() {
        for kind in ["repair_sweep", "orphan_sweep"] {
            let bare = prepare_sweep(kind, json!({"kind": kind, "cluster": "default/demo"}));
            assert_eq!(bare["nodes"], json!([SWEEP_NODE]), "{kind}");
            let old = prepare_sweep(
                kind,
                json!({"kind": kind, "cluster": "default/demo", "nodes": ["sweep"]}),
            );
            assert_eq!(old["nodes"], json!(["sweep"]), "{kind}");
        }
        // The kind's own fields still move into params.
        let b = prepare_sweep(
            "orphan_sweep",
            json!({"kind": "orphan_sweep", "cluster": "default/demo", "grace": "0s"}),
        );
        assert_eq!(b["params"]["grace"], "0s");
    }

    fn prepare_sweep(kind: &str, body: Value) -> Value {
        let fields: &[&str] = if kind == "orphan_sweep" {
            &["grace", "dry_run"]
        } else {
            &["max_parallel"]
        };
        move_to_params(sweep_node(body), fields).unwrap()
    }
}

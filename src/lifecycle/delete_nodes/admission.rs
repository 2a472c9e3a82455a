//! `delete_nodes`' admission: each named node resolved to a Machine of the named cluster,
//! and nowhere else.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::cloud::Clients;
use crate::cloud::capi::{self, capo};
use crate::cloud::marks;
use crate::cloud::os::Service;
use crate::engine::admission::Refusal;
use crate::engine::request::{FieldError, JobRequest};
use crate::lifecycle::admission::{cluster_machines, cluster_os, read};
use crate::lifecycle::common::workload_client;
use crate::lifecycle::params::{HumanDuration, KindParams};

/// `delete_nodes`' own request fields, which travel in the job's params.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteNodesParams {
    /// Force the delete (skip drain, delete server/ports/volumes/floating IP through
    /// OpenStack, drop finalizers) after this long.
    #[schema(inline)]
    pub force_after: Option<HumanDuration>,
}

impl KindParams for DeleteNodesParams {
    const FIELDS: &'static [&'static str] = &["force_after"];
}

/// Resolves each named node — a Machine name, a Node name or a Nova server UUID — to a
/// Machine of the named cluster, and nowhere else; a name with nothing behind it in this
/// cluster is refused, nothing touched. A Machine already gone whose server or port is still
/// in the cluster's project is accepted only with proof it was this cluster's (the server
/// carries the cluster's mark, or the port CAPO's description for this cluster), so a
/// second delete job finishes what a first one left.
pub(super) async fn resolve(c: &Clients, req: &mut JobRequest) -> Result<(), Refusal> {
    let cluster = req.cluster.clone();
    let os = cluster_os(c, &cluster).await?;
    let (ns, name) = (&cluster.ns, &cluster.name);
    let all = cluster_machines(c, ns, name).await?;
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = match workload_client(c, &cluster).await {
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

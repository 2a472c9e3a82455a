//! `repair`'s admission: the named Machines exist, the cluster is not too broken to repair
//! (`max_unhealthy`), and each node's spec is found (stored by Capstan, or read back).

use serde_json::{Value, json};

use super::{Thresholds, assess, read_back, release_params};
use crate::cloud::Clients;
use crate::cloud::capi;
use crate::cloud::marks;
use crate::cloud::os::Service;
use crate::engine::admission::Refusal;
use crate::engine::request::{FieldError, JobRequest};
use crate::lifecycle::admission::{cluster_machines, cluster_os, kube_unavailable, unavailable};
use crate::lifecycle::common::pick_server;
use crate::lifecycle::spec::{FloatingIp, NodeSpec};

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
pub(super) async fn admit(
    c: &Clients,
    store: &crate::store::Store,
    req: &mut JobRequest,
) -> Result<(), Refusal> {
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

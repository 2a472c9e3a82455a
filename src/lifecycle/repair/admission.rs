//! `repair`'s admission: the named Machines exist, the cluster is not too broken to repair
//! (`max_unhealthy`), and each node's spec is found (stored by Capstan, or read back).

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Thresholds, assess, read_back, release_params};
use kube::api::DynamicObject;

use crate::cloud::capi;
use crate::cloud::marks;
use crate::cloud::os::OpenStack;
use crate::cloud::os::Service;
use crate::cloud::{Clients, ClusterRef};
use crate::engine::admission::Refusal;
use crate::engine::request::{FieldError, JobRequest};
use crate::lifecycle::admission::{cluster_machines, cluster_os, kube_unavailable, unavailable};
use crate::lifecycle::common::pick_server;
use crate::lifecycle::params::{self, Flag, HumanDuration, KindParams, Parallel, Percent};
use crate::lifecycle::spec::{FloatingIp, NodeSpec};

/// `repair`'s own request fields, which travel in the job's params.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RepairParams {
    /// Replace the nodes even if they are healthy.
    #[schema(inline)]
    pub force: Option<Flag>,
    /// Force the delete of the old node (skip drain, delete its OpenStack resources, drop
    /// finalizers) after this long.
    #[schema(inline)]
    #[allow(dead_code)] // read by delete_nodes' steps, which a repair runs, as theirs
    pub force_after: Option<HumanDuration>,
    #[serde(flatten)]
    #[schema(inline)]
    pub health: HealthParams,
}

impl KindParams for RepairParams {
    const FIELDS: &'static [&'static str] = &[
        "force",
        "force_after",
        "max_unhealthy",
        "max_parallel",
        "unhealthy_after",
        "startup_timeout",
    ];
}

/// What makes a node unhealthy and how many are repaired at once: `repair`'s and
/// `repair_sweep`'s.
#[derive(Debug, Deserialize, ToSchema)]
pub struct HealthParams {
    /// Nodes repaired at once (default 1).
    #[schema(inline)]
    pub max_parallel: Option<Parallel>,
    /// Refuse (or stop) when more than this share of the cluster's workers is unhealthy
    /// (default `40%`).
    #[schema(inline)]
    pub max_unhealthy: Option<Percent>,
    /// NodeHealthy not True for longer than this is unhealthy (default 5m).
    #[schema(inline)]
    pub unhealthy_after: Option<HumanDuration>,
    /// No Node this long after the Machine was created is unhealthy (default 20m).
    #[schema(inline)]
    pub startup_timeout: Option<HumanDuration>,
}

impl KindParams for HealthParams {
    const FIELDS: &'static [&'static str] = &[
        "max_unhealthy",
        "max_parallel",
        "unhealthy_after",
        "startup_timeout",
    ];
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
    let (max_unhealthy, max_parallel) = limits(&req.params, &mut errs);
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
    check_max_unhealthy(&cref, all.len(), &unhealthy, max_unhealthy)?;
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
        let spec = match spec_of(store, &os, &osms, m, name).await? {
            Ok(s) => s,
            Err(e) => {
                errs.push(FieldError::new(format!("nodes[{i}]"), e));
                continue;
            }
        };
        if let FloatingIp::Address(a) = &spec.floating_ip {
            for id in floating_ips_to_release(&os, &cref, m, name, &a.to_string()).await? {
                releases.push((name.clone(), id));
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

/// `max_unhealthy` (a fraction) and `max_parallel` from the params (checked by `prepare`
/// already), each problem named; when one is wrong, both defaults are used for the other checks.
fn limits(params: &Value, errs: &mut Vec<FieldError>) -> (f64, u32) {
    match params::read::<RepairParams>(params).map(|r| r.health) {
        Ok(h) => (
            h.max_unhealthy.map_or(0.4, |p| p.0),
            h.max_parallel.map_or(1, |p| p.0),
        ),
        Err(e) => {
            errs.extend(e);
            (0.4, 1)
        }
    }
}

/// A 409 when more than `max_unhealthy` of the cluster's `workers` are unhealthy: stopping
/// rather than replacing them all.
fn check_max_unhealthy(
    cluster: &ClusterRef,
    workers: usize,
    unhealthy: &[String],
    max_unhealthy: f64,
) -> Result<(), Refusal> {
    if workers == 0 || unhealthy.len() as f64 / workers as f64 <= max_unhealthy {
        return Ok(());
    }
    Err(Refusal::Conflict(vec![FieldError::new(
        "max_unhealthy",
        format!(
            "{} of {workers} workers of {cluster} are unhealthy ({:.0}%: {}), more than max_unhealthy {:.0}%: stopping rather than replacing them all",
            unhealthy.len(),
            100.0 * unhealthy.len() as f64 / workers as f64,
            unhealthy.join(", "),
            100.0 * max_unhealthy
        ),
    )]))
}

/// The node's spec: Capstan's own when it made the node (the spec its job stored), else
/// read back from what the cluster says. The inner error says why it cannot be found.
async fn spec_of(
    store: &crate::store::Store,
    os: &OpenStack,
    osms: &kube::Api<DynamicObject>,
    m: &DynamicObject,
    name: &str,
) -> Result<Result<NodeSpec, String>, Refusal> {
    let job = m
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(capi::JOB_LABEL))
        .cloned();
    if let Some(j) = job
        && let Ok(tasks) = store.tasks(&j).await
        && let Some(stored) = tasks
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| serde_json::from_str::<NodeSpec>(&t.spec).ok())
    {
        return Ok(Ok(stored));
    }
    let Some(osm) = osms.get_opt(name).await.map_err(kube_unavailable)? else {
        return Ok(Err(format!(
            "Machine {name} has no OpenStackMachine to read its spec from"
        )));
    };
    Ok(read_back(os, m, &osm)
        .await
        .map_err(|e| format!("cannot read {name}'s spec back: {e}")))
}

/// The floating IPs at `address` to release before the node is recreated and take it again
/// — only with proof they are this node's: on a port of the server its Machine names, or
/// described by Capstan for this cluster and node. (An address alone is not proof: with the
/// admin role Neutron lists every project's.)
async fn floating_ips_to_release(
    os: &OpenStack,
    cluster: &ClusterRef,
    m: &DynamicObject,
    name: &str,
    address: &str,
) -> Result<Vec<String>, Refusal> {
    let fips = os
        .get(
            Service::Network,
            &["floatingips"],
            &[("floating_ip_address", address)],
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
    let mut out = Vec::new();
    for f in fips["floatingips"].as_array().into_iter().flatten() {
        let on_node = f["port_id"]
            .as_str()
            .is_some_and(|p| node_ports.iter().any(|x| x == p));
        let described =
            marks::read_floating_ip_description(f["description"].as_str().unwrap_or_default())
                .is_some_and(|(c, _, n)| c == *cluster && n == name);
        if (on_node || described)
            && let Some(id) = f["id"].as_str()
        {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unhealthy_stops_a_repair_of_too_broken_a_cluster() {
        let cluster = ClusterRef::parse("default/demo").unwrap();
        let names = |n: usize| (1..=n).map(|i| format!("w-{i}")).collect::<Vec<_>>();
        // (workers, unhealthy, max_unhealthy, refused)
        for (workers, unhealthy, max, refused) in [
            (5, 2, 0.4, false),
            (5, 3, 0.4, true),
            (0, 0, 0.0, false),
            (4, 4, 1.0, false),
            (4, 1, 0.0, true),
        ] {
            let got = check_max_unhealthy(&cluster, workers, &names(unhealthy), max);
            assert_eq!(got.is_err(), refused, "{unhealthy} of {workers} at {max}");
        }
        let Err(Refusal::Conflict(f)) = check_max_unhealthy(&cluster, 5, &names(3), 0.4) else {
            panic!("a 409 expected");
        };
        assert_eq!(
            f[0].message,
            "3 of 5 workers of default/demo are unhealthy (60%: w-1, w-2, w-3), more than max_unhealthy 40%: stopping rather than replacing them all"
        );
    }

    #[test]
    fn max_unhealthy_and_max_parallel_are_checked_with_their_defaults() {
        let mut errs = Vec::new();
        assert_eq!(limits(&json!({}), &mut errs), (0.4, 1));
        assert_eq!(
            limits(
                &json!({"max_unhealthy": "25%", "max_parallel": 3}),
                &mut errs
            ),
            (0.25, 3)
        );
        assert!(errs.is_empty());
        limits(
            &json!({"max_unhealthy": "120%", "max_parallel": 0}),
            &mut errs,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["max_unhealthy", "max_parallel"]);
    }
}

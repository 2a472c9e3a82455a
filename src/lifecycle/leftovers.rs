//! What a node leaves in OpenStack, found by CAPO's names and removed only with proof that
//! it is this cluster's (`cloud::marks`): the cleanup after a failed attempt, the end of a
//! delete, and a forced delete share it.
//!
//! Proof, per resource: a server whose ID the cluster's Machine referenced, or that carries
//! the cluster's metadata mark; a floating IP Capstan described for this cluster and node,
//! one a repair of this cluster recorded, or one on a proven port; a port on a proven server
//! or carrying CAPO's description for this cluster; a volume attached to a proven server or
//! carrying CAPO's description for this node. Everything is read with the cluster's own
//! credentials, so only its project is ever seen. What has the node's name but no proof is
//! left alone and reported.

use std::collections::BTreeSet;

use serde_json::Value;

use super::common::os_error;
use crate::cloud::ClusterRef;
use crate::cloud::marks;
use crate::cloud::os::{OpenStack, Service};
use crate::engine::step::StepError;
use crate::model::FailureClass;

/// Where to look for one node's leftovers.
pub struct Leftovers<'a> {
    pub cluster: &'a ClusterRef,
    /// The node's name: its server's.
    pub node: &'a str,
    /// Server IDs the cluster's objects referenced (the Machine's providerID).
    pub server_ids: &'a [String],
    /// Its ports' names (`<node>-0`, …).
    pub ports: &'a [String],
    /// Its volumes' names (`<node>-root`, `<node>-<device>`).
    pub volumes: &'a [String],
    /// Floating IPs this cluster's record names for release, by ID.
    pub floating_ips: &'a [String],
    /// Also release the floating IPs Capstan allocated for this node in this cluster.
    pub capstan_floating_ips: bool,
}

/// What a removal did, and what it would not touch for want of proof.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<String>,
    pub left_alone: Vec<String>,
}

fn items<'v>(v: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    v[key].as_array().into_iter().flatten()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

/// Deletes whatever of the node is still there and provably the cluster's. A volume still
/// attached to a server Nova is deleting is a transient error: the step looks again.
pub async fn remove(os: &OpenStack, l: &Leftovers<'_>) -> Result<Removal, StepError> {
    let mut out = Removal::default();
    // Read everything first: proofs link resources (a port is proven by its server), and
    // deleting the server would break the link.
    let servers = proven_servers(os, l, &mut out.left_alone).await?;
    let ports = proven_ports(os, l, &servers, &mut out.left_alone).await?;
    let fips = releasable_floating_ips(os, l, &ports).await?;
    let volumes = proven_volumes(os, l, &servers, &mut out.left_alone).await?;

    for sid in servers {
        os.delete(Service::Compute, &["servers", &sid])
            .await
            .map_err(|e| os_error("deleting the server", e))?;
        out.removed.push(format!("server {} ({sid})", l.node));
    }
    for (fid, address) in fips {
        os.delete(Service::Network, &["floatingips", &fid])
            .await
            .map_err(|e| os_error("releasing the floating IP", e))?;
        out.removed.push(format!("floating IP {address} ({fid})"));
    }
    for (name, pid) in ports {
        os.delete(Service::Network, &["ports", &pid])
            .await
            .map_err(|e| os_error("deleting a port", e))?;
        out.removed.push(format!("port {name} ({pid})"));
    }
    for (name, vid) in volumes {
        match os.delete(Service::BlockStorage, &["volumes", &vid]).await {
            Ok(()) => out.removed.push(format!("volume {name} ({vid})")),
            Err(e) if e.status == 400 => {
                return Err(StepError::new(
                    FailureClass::Transient,
                    format!("volume {name} still attached: {e}"),
                ));
            }
            Err(e) => return Err(os_error("deleting a volume", e)),
        }
    }
    Ok(out)
}

/// The node's servers with proof (referenced by the cluster's Machine, or marked for it),
/// by ID in the order Nova lists them; the others are left alone.
async fn proven_servers(
    os: &OpenStack,
    l: &Leftovers<'_>,
    left_alone: &mut Vec<String>,
) -> Result<Vec<String>, StepError> {
    let servers = os
        .named(Service::Compute, &["servers", "detail"], "servers", l.node)
        .await
        .map_err(|e| os_error("listing servers", e))?;
    let mut proven = Vec::new();
    for s in &servers {
        let sid = id(s);
        if l.server_ids.contains(&sid) || marks::server_is_marked(s, l.cluster) {
            proven.push(sid);
        } else {
            left_alone.push(format!(
                "server {} ({sid}): named like the node but neither referenced by {}'s Machine nor marked for it",
                l.node, l.cluster
            ));
        }
    }
    Ok(proven)
}

/// The node's ports with proof (on a proven server, or CAPO's description for this
/// cluster), as (name, ID); the others are left alone.
async fn proven_ports(
    os: &OpenStack,
    l: &Leftovers<'_>,
    servers: &[String],
    left_alone: &mut Vec<String>,
) -> Result<Vec<(String, String)>, StepError> {
    let port_description = marks::capo_port_description(l.cluster);
    let mut proven = Vec::new();
    for name in l.ports {
        for p in os
            .named(Service::Network, &["ports"], "ports", name)
            .await
            .map_err(|e| os_error("listing ports", e))?
        {
            let device = p["device_id"].as_str().unwrap_or_default();
            if servers.iter().any(|s| s == device) || p["description"] == port_description.as_str()
            {
                proven.push((name.clone(), id(&p)));
            } else {
                left_alone.push(format!(
                    "port {name} ({}): no proof it is {}'s",
                    id(&p),
                    l.cluster
                ));
            }
        }
    }
    Ok(proven)
}

/// The floating IPs to release, as (ID, address): those named for release, and — when
/// asked — those Capstan described for this node or on one of its proven `ports`.
async fn releasable_floating_ips(
    os: &OpenStack,
    l: &Leftovers<'_>,
    ports: &[(String, String)],
) -> Result<Vec<(String, String)>, StepError> {
    let port_ids: BTreeSet<&str> = ports.iter().map(|(_, i)| i.as_str()).collect();
    let fips = os
        .get(Service::Network, &["floatingips"], &[])
        .await
        .map_err(|e| os_error("listing floating IPs", e))?;
    let mut release = Vec::new();
    for f in items(&fips, "floatingips") {
        let fid = id(f);
        let described =
            marks::read_floating_ip_description(f["description"].as_str().unwrap_or(""))
                .is_some_and(|(c, _, n)| &c == l.cluster && n == l.node);
        let on_proven_port = f["port_id"].as_str().is_some_and(|p| port_ids.contains(p));
        if (l.capstan_floating_ips && (described || on_proven_port))
            || l.floating_ips.contains(&fid)
        {
            let address = f["floating_ip_address"].as_str().unwrap_or_default();
            release.push((fid, address.to_string()));
        }
    }
    Ok(release)
}

/// The node's volumes with proof (attached to a proven server, or, unattached, CAPO's
/// description for this node), as (name, ID); the others are left alone.
async fn proven_volumes(
    os: &OpenStack,
    l: &Leftovers<'_>,
    servers: &[String],
    left_alone: &mut Vec<String>,
) -> Result<Vec<(String, String)>, StepError> {
    let mut proven = Vec::new();
    for name in l.volumes {
        for v in os
            .named(
                Service::BlockStorage,
                &["volumes", "detail"],
                "volumes",
                name,
            )
            .await
            .map_err(|e| os_error("listing volumes", e))?
        {
            let attached: Vec<&str> = items(&v, "attachments")
                .filter_map(|a| a["server_id"].as_str())
                .collect();
            if attached.iter().any(|a| servers.iter().any(|s| s == a))
                || (attached.is_empty() && marks::capo_volume_described_for(&v, l.node))
            {
                proven.push((name.clone(), id(&v)));
            } else {
                left_alone.push(format!(
                    "volume {name} ({}): no proof it is {}'s",
                    id(&v),
                    l.cluster
                ));
            }
        }
    }
    Ok(proven)
}

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
    let servers = os
        .named(Service::Compute, &["servers", "detail"], "servers", l.node)
        .await
        .map_err(|e| os_error("listing servers", e))?;
    let mut proven_servers = BTreeSet::new();
    let mut servers_to_delete = Vec::new();
    for s in &servers {
        let sid = id(s);
        if l.server_ids.contains(&sid) || marks::server_is_marked(s, l.cluster) {
            proven_servers.insert(sid.clone());
            servers_to_delete.push(sid);
        } else {
            out.left_alone.push(format!(
                "server {} ({sid}): named like the node but neither referenced by {}'s Machine nor marked for it",
                l.node, l.cluster
            ));
        }
    }
    let port_description = marks::capo_port_description(l.cluster);
    let mut ports_to_delete = Vec::new();
    for name in l.ports {
        for p in os
            .named(Service::Network, &["ports"], "ports", name)
            .await
            .map_err(|e| os_error("listing ports", e))?
        {
            let device = p["device_id"].as_str().unwrap_or_default();
            let proven =
                proven_servers.contains(device) || p["description"] == port_description.as_str();
            if proven {
                ports_to_delete.push((name.clone(), id(&p)));
            } else {
                out.left_alone.push(format!(
                    "port {name} ({}): no proof it is {}'s",
                    id(&p),
                    l.cluster
                ));
            }
        }
    }
    let port_ids: BTreeSet<&str> = ports_to_delete.iter().map(|(_, i)| i.as_str()).collect();
    let fips = os
        .get(Service::Network, &["floatingips"], &[])
        .await
        .map_err(|e| os_error("listing floating IPs", e))?;
    let mut fips_to_delete = Vec::new();
    for f in items(&fips, "floatingips") {
        let fid = id(f);
        let described =
            marks::read_floating_ip_description(f["description"].as_str().unwrap_or(""))
                .is_some_and(|(c, _, n)| &c == l.cluster && n == l.node);
        let on_proven_port = f["port_id"].as_str().is_some_and(|p| port_ids.contains(p));
        if (l.capstan_floating_ips && (described || on_proven_port))
            || l.floating_ips.contains(&fid)
        {
            fips_to_delete.push((
                fid,
                f["floating_ip_address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    let mut volumes_to_delete = Vec::new();
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
            let proven = attached.iter().any(|s| proven_servers.contains(*s))
                || (attached.is_empty() && marks::capo_volume_described_for(&v, l.node));
            if proven {
                volumes_to_delete.push((name.clone(), id(&v)));
            } else {
                out.left_alone.push(format!(
                    "volume {name} ({}): no proof it is {}'s",
                    id(&v),
                    l.cluster
                ));
            }
        }
    }

    for sid in servers_to_delete {
        os.delete(Service::Compute, &["servers", &sid])
            .await
            .map_err(|e| os_error("deleting the server", e))?;
        out.removed.push(format!("server {} ({sid})", l.node));
    }
    for (fid, address) in fips_to_delete {
        os.delete(Service::Network, &["floatingips", &fid])
            .await
            .map_err(|e| os_error("releasing the floating IP", e))?;
        out.removed.push(format!("floating IP {address} ({fid})"));
    }
    for (name, pid) in ports_to_delete {
        os.delete(Service::Network, &["ports", &pid])
            .await
            .map_err(|e| os_error("deleting a port", e))?;
        out.removed.push(format!("port {name} ({pid})"));
    }
    for (name, vid) in volumes_to_delete {
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

//! What a node leaves in OpenStack, found by CAPO's names and Capstan's marks, and removed:
//! the cleanup after a failed attempt, the end of a delete, and a forced delete share it.

use super::scale_out::os_error;
use crate::cloud::Clients;
use crate::cloud::os::Service;
use crate::engine::step::StepError;
use crate::model::FailureClass;

/// Where to look for one node's leftovers.
pub struct Leftovers<'a> {
    /// The node's name: its server's.
    pub node: &'a str,
    /// Its ports' names (`<node>-0`, …).
    pub ports: &'a [String],
    /// Its volumes' names (`<node>-root`, `<node>-<device>`).
    pub volumes: &'a [String],
    /// Floating IPs to release by ID.
    pub floating_ips: &'a [String],
    /// Also release the floating IPs Capstan allocated for this node (described
    /// `capstan job … node <node>`).
    pub capstan_floating_ips: bool,
}

/// Deletes whatever of the node is still there; returns what it removed. A volume still
/// attached to a server Nova is deleting is a transient error: the step looks again.
pub async fn remove(c: &Clients, l: &Leftovers<'_>) -> Result<Vec<String>, StepError> {
    let mut removed = Vec::new();
    for s in
        c.os.named(Service::Compute, &["servers"], "servers", l.node)
            .await
            .map_err(|e| os_error("listing servers", e))?
    {
        let id = s["id"].as_str().unwrap_or_default();
        c.os.delete(Service::Compute, &["servers", id])
            .await
            .map_err(|e| os_error("deleting the server", e))?;
        removed.push(format!("server {} ({id})", l.node));
    }
    let fips =
        c.os.get(Service::Network, &["floatingips"], &[])
            .await
            .map_err(|e| os_error("listing floating IPs", e))?;
    let suffix = format!(" node {}", l.node);
    for f in fips["floatingips"].as_array().into_iter().flatten() {
        let id = f["id"].as_str().unwrap_or_default();
        let desc = f["description"].as_str().unwrap_or_default();
        let capstans = desc.starts_with("capstan job ") && desc.ends_with(&suffix);
        if (l.capstan_floating_ips && capstans) || l.floating_ips.iter().any(|x| x == id) {
            c.os.delete(Service::Network, &["floatingips", id])
                .await
                .map_err(|e| os_error("releasing the floating IP", e))?;
            removed.push(format!(
                "floating IP {} ({id})",
                f["floating_ip_address"].as_str().unwrap_or_default()
            ));
        }
    }
    for name in l.ports {
        for p in
            c.os.named(Service::Network, &["ports"], "ports", name)
                .await
                .map_err(|e| os_error("listing ports", e))?
        {
            let id = p["id"].as_str().unwrap_or_default();
            c.os.delete(Service::Network, &["ports", id])
                .await
                .map_err(|e| os_error("deleting a port", e))?;
            removed.push(format!("port {name} ({id})"));
        }
    }
    for name in l.volumes {
        for v in
            c.os.named(
                Service::BlockStorage,
                &["volumes", "detail"],
                "volumes",
                name,
            )
            .await
            .map_err(|e| os_error("listing volumes", e))?
        {
            let id = v["id"].as_str().unwrap_or_default();
            match c.os.delete(Service::BlockStorage, &["volumes", id]).await {
                Ok(()) => removed.push(format!("volume {name} ({id})")),
                Err(e) if e.status == 400 => {
                    return Err(StepError::new(
                        FailureClass::Transient,
                        format!("volume {name} still attached: {e}"),
                    ));
                }
                Err(e) => return Err(os_error("deleting a volume", e)),
            }
        }
    }
    Ok(removed)
}

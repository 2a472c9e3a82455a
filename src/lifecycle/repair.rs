//! `repair`: an unhealthy node is deleted (`delete.rs`'s steps) and recreated with the same
//! spec it was made with (`scale_out.rs`'s steps and failure policies).
//!
//! check → mark → wait → [force] → release → quota → create → provision → floating_ip →
//! join → done. The spec is the one Capstan stored when it made the node, or, for a node it
//! did not make, read back from its Machine, OpenStackMachine and Neutron port.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::scale_out::{capi_of, cluster_of, kube_error, os_error, os_of, split_cluster};
use super::spec::{DataVolume, FloatingIp, NodeSpec, ROLE_LABEL_PREFIX, RootVolume};
use crate::cloud::Clients;
use crate::cloud::ClusterRef;
use crate::cloud::capi::Machine;
use crate::cloud::marks;
use crate::cloud::os::OpenStack;
use crate::cloud::os::Service;
use crate::engine::step::{Outcome, Registry, StepContext, StepError};

/// When a node counts as unhealthy (DESIGN §3), with repair's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `NodeHealthy` not True for longer than this.
    pub unhealthy_after: Duration,
    /// No Node this long after the Machine was created.
    pub startup_timeout: Duration,
}

impl Thresholds {
    pub fn from_params(p: &Value) -> Thresholds {
        let d = |k: &str, default: u64| {
            p[k].as_str()
                .and_then(|s| crate::duration::parse(s).ok())
                .unwrap_or(Duration::from_secs(default))
        };
        Thresholds {
            unhealthy_after: d("unhealthy_after", 300),
            startup_timeout: d("startup_timeout", 1200),
        }
    }
}

fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    t.and_then(|t| (now - t).to_std().ok()).unwrap_or_default()
}

/// Why a Machine is unhealthy, or `None` when it is healthy.
pub fn assess(m: &Machine, server: Option<&Value>, t: Thresholds) -> Option<String> {
    let now = Utc::now();
    if let Some(msg) = &m.failure_message {
        return Some(format!("Machine failed: {msg}"));
    }
    if let Some(r) = &m.failure_reason {
        return Some(format!("Machine failed: {r}"));
    }
    if let Some(s) = server {
        let state = s["status"].as_str().unwrap_or_default();
        if state == "ERROR" || state == "SHUTOFF" {
            let fault = s["fault"]["message"].as_str().unwrap_or_default();
            return Some(format!("server is {state} {fault}").trim().to_string());
        }
    }
    if m.node.is_none() {
        let created = since(m.created_at, now);
        return (created > t.startup_timeout).then(|| {
            format!(
                "no Node {} after the Machine was created (startup timeout {})",
                crate::duration::format(created),
                crate::duration::format(t.startup_timeout)
            )
        });
    }
    match m.condition("NodeHealthy") {
        Some(c) if c.status != "True" => {
            let since = since(c.last_transition, now);
            (since > t.unhealthy_after).then(|| {
                format!(
                    "NodeHealthy {} for {} ({})",
                    c.status,
                    crate::duration::format(since),
                    c.message
                        .as_deref()
                        .or(c.reason.as_deref())
                        .unwrap_or("no reason")
                )
            })
        }
        _ => None,
    }
}

/// Of the servers Nova lists (with `status` and `fault`), the Machine's: the one its
/// providerID names, else the one of its name that carries the cluster's mark. A server
/// that only shares the name is not this node's.
pub fn pick_server<'a>(
    servers: impl IntoIterator<Item = &'a Value>,
    cluster: &ClusterRef,
    machine: &Machine,
) -> Option<&'a Value> {
    let name = machine.name.as_str();
    let by_id = machine
        .provider_id
        .as_deref()
        .and_then(marks::server_id_of_provider_id);
    let candidates: Vec<&Value> = servers
        .into_iter()
        .filter(|s| s["name"] == name || by_id.is_some_and(|i| s["id"] == i))
        .collect();
    candidates
        .iter()
        .find(|s| by_id.is_some_and(|i| s["id"] == i))
        .or_else(|| {
            candidates
                .iter()
                .find(|s| marks::server_is_marked(s, cluster))
        })
        .copied()
}

/// The Machine's server, read with the cluster's credentials (see `pick_server`).
pub async fn server_of(
    os: &OpenStack,
    cluster: &ClusterRef,
    machine: &Machine,
) -> Result<Option<Value>, StepError> {
    let found = os
        .named(
            Service::Compute,
            &["servers", "detail"],
            "servers",
            &machine.name,
        )
        .await
        .map_err(|e| os_error("listing servers", e))?;
    Ok(pick_server(&found, cluster, machine).cloned())
}

/// The spec a node was made with, read back from what CAPI, CAPO and Neutron hold, for a
/// node Capstan did not create.
pub async fn read_back(
    os: &OpenStack,
    m: &DynamicObject,
    osm: &DynamicObject,
) -> Result<NodeSpec, String> {
    let machine = Machine::read(m);
    let name = machine.name.clone();
    let o = &osm.data["spec"];
    let port = &o["ports"][0];
    let mut spec = NodeSpec {
        name: name.clone(),
        availability_zone: None,
        host: None,
        flavor: o["flavor"]
            .as_str()
            .ok_or("the OpenStackMachine names no flavor")?
            .to_string(),
        image: o["image"]["filter"]["name"]
            .as_str()
            .ok_or("the OpenStackMachine names no image by name")?
            .to_string(),
        ssh_key: o["sshKeyName"].as_str().map(str::to_string),
        security_groups: o["securityGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["filter"]["name"].as_str().map(str::to_string))
            .collect(),
        network: port["network"]["filter"]["name"]
            .as_str()
            .ok_or("the OpenStackMachine's port names no network")?
            .to_string(),
        subnet: port["fixedIPs"][0]["subnet"]["filter"]["name"]
            .as_str()
            .ok_or("the OpenStackMachine's port names no subnet")?
            .to_string(),
        ip: None,
        floating_ip: FloatingIp::None,
        root_volume: o["rootVolume"]["sizeGiB"].as_u64().map(|s| RootVolume {
            size_gib: s as u32,
            volume_type: o["rootVolume"]["type"].as_str().map(str::to_string),
        }),
        data_volumes: o["additionalBlockDevices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["storage"]["type"] != "Local")
            .map(|d| DataVolume {
                name: d["name"].as_str().unwrap_or("data").to_string(),
                size_gib: d["sizeGiB"].as_u64().unwrap_or(1) as u32,
                volume_type: d["storage"]["volume"]["type"].as_str().map(str::to_string),
            })
            .collect(),
        roles: Vec::new(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
    };
    if let Some(fd) = machine.failure_domain.as_deref() {
        match fd.split_once(':') {
            Some((az, host)) => {
                spec.availability_zone = Some(az.to_string());
                spec.host = Some(host.to_string());
            }
            None => spec.availability_zone = Some(fd.to_string()),
        }
    }
    for (k, _) in m.metadata.labels.clone().unwrap_or_default() {
        if let Some(role) = k.strip_prefix(ROLE_LABEL_PREFIX) {
            spec.roles.push(role.to_string());
        }
    }
    // The address it has and the floating IP on it, from Neutron: the port on its server.
    let server_id = machine
        .provider_id
        .as_deref()
        .and_then(marks::server_id_of_provider_id)
        .unwrap_or_default()
        .to_string();
    let ports = os
        .named(
            Service::Network,
            &["ports"],
            "ports",
            &marks::port_name(&name, 0),
        )
        .await
        .map_err(|e| e.to_string())?;
    if let Some(p) = ports
        .iter()
        .find(|p| !server_id.is_empty() && p["device_id"] == server_id.as_str())
    {
        spec.ip = p["fixed_ips"][0]["ip_address"]
            .as_str()
            .and_then(|a| a.parse().ok());
        let fips = os
            .get(Service::Network, &["floatingips"], &[])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(f) = fips["floatingips"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["port_id"] == p["id"])
            && let Some(a) = f["floating_ip_address"]
                .as_str()
                .and_then(|a| a.parse().ok())
        {
            spec.floating_ip = FloatingIp::Address(a);
        }
    }
    Ok(spec)
}

pub fn register(r: &mut Registry, clients: Clients) {
    r.step("repair.check", &["unhealthy", "healthy"], move |ctx| {
        let c = clients.clone();
        async move { check_step(&c, ctx).await }
    });
}

/// Looks at the node once more: a healthy one is left alone unless the job says `force`.
async fn check_step(c: &Clients, ctx: StepContext) -> Result<Outcome, StepError> {
    let (ns, _) = split_cluster(&ctx.cluster);
    let name = ctx.spec["name"].as_str().unwrap_or(&ctx.node).to_string();
    let m = capi_of(c)
        .await?
        .machines(&ns)
        .get_opt(&name)
        .await
        .map_err(|e| kube_error("reading the Machine", e))?;
    let Some(m) = m else {
        return Ok(Outcome::next_because(
            "unhealthy",
            None,
            format!("Machine {name} is gone; recreating it"),
        ));
    };
    let machine = Machine::read(&m);
    let cluster = cluster_of(&ctx)?;
    let server = server_of(&os_of(c, &cluster).await?, &cluster, &machine).await?;
    let why = assess(
        &machine,
        server.as_ref(),
        Thresholds::from_params(&ctx.params),
    );
    match why {
        Some(why) => Ok(Outcome::next_because("unhealthy", None, why)),
        None if ctx.params["force"] == true => Ok(Outcome::next_because(
            "unhealthy",
            None,
            format!("{name} is healthy; replaced anyway (force)"),
        )),
        None => Ok(Outcome::next_because(
            "healthy",
            None,
            format!("{name} is healthy; left alone"),
        )),
    }
}

/// The params a repair job carries for the delete steps: which floating IPs to release so
/// the same address can be taken again.
pub fn release_params(fips: &[(String, String)]) -> Value {
    let mut map = serde_json::Map::new();
    for (node, id) in fips {
        map.entry(node.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("array")
            .push(json!(id));
    }
    Value::Object(map)
}

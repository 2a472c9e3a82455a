//! `repair`: an unhealthy node is deleted (`delete_nodes/steps.rs`) and recreated with the same
//! spec it was made with (`scale_out/steps.rs`, with its failure policies).
//!
//! check → mark → wait → [force] → release → quota → create → provision → floating_ip →
//! join → done. The spec is the one Capstan stored when it made the node, or, for a node it
//! did not make, read back from its Machine, OpenStackMachine and Neutron port.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::admission::{HealthParams, RepairParams};
use super::common::{capi_of, cluster_of, kube_error, os_of, server_of};
use super::spec::{DataVolume, FloatingIp, NodeSpec, ROLE_LABEL_PREFIX, RootVolume};
use crate::cloud::Clients;
use crate::cloud::capi::Machine;
use crate::cloud::capi::capo::{self, OpenStackMachine};
use crate::cloud::os::{OpenStack, Service};
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::lifecycle::params::{self, HumanDuration};

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
        let h = params::read::<HealthParams>(p).ok();
        let d = |v: Option<HumanDuration>, default: u64| {
            v.map_or(Duration::from_secs(default), |d| d.0)
        };
        Thresholds {
            unhealthy_after: d(h.as_ref().and_then(|h| h.unhealthy_after), 300),
            startup_timeout: d(h.as_ref().and_then(|h| h.startup_timeout), 1200),
        }
    }
}

fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    t.and_then(|t| (now - t).to_std().ok()).unwrap_or_default()
}

/// Why a Machine is unhealthy, or `None` when it is healthy.
pub fn assess(m: &Machine, server: Option<&Value>, t: Thresholds) -> Option<String> {
    assess_at(m, server, t, Utc::now())
}

/// `assess` as of `now`: a failure CAPI recorded, a server Nova shows in ERROR or SHUTOFF, no
/// Node past the startup timeout, or `NodeHealthy` not True for longer than
/// `unhealthy_after` — in that order, the first that holds is the reason.
fn assess_at(
    m: &Machine,
    server: Option<&Value>,
    t: Thresholds,
    now: DateTime<Utc>,
) -> Option<String> {
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
    match m.node_health() {
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

/// The spec a node was made with, read back from what CAPI, CAPO and Neutron hold, for a
/// node Capstan did not create.
pub async fn read_back(
    os: &OpenStack,
    m: &DynamicObject,
    osm: &DynamicObject,
) -> Result<NodeSpec, String> {
    let machine = Machine::read(m);
    let labels = m.metadata.labels.clone().unwrap_or_default();
    let mut spec = spec_of_objects(&machine, &labels, &OpenStackMachine::read(osm))?;
    // The address it has and the floating IP on it, from Neutron: the port on its server.
    let server_id = machine.server_id().unwrap_or_default();
    let ports = os
        .named(
            Service::Network,
            &["ports"],
            "ports",
            &capo::port_name(&spec.name, 0),
        )
        .await
        .map_err(|e| e.to_string())?;
    let Some(port) = port_on(&ports, &server_id) else {
        return Ok(spec);
    };
    let fips = os
        .get(Service::Network, &["floatingips"], &[])
        .await
        .map_err(|e| e.to_string())?;
    (spec.ip, spec.floating_ip) = addresses_of(port, &fips);
    Ok(spec)
}

/// The node's port: the one of CAPO's name on its server (none without a server ID).
fn port_on<'a>(ports: &'a [Value], server_id: &str) -> Option<&'a Value> {
    ports
        .iter()
        .find(|p| !server_id.is_empty() && p["device_id"] == server_id)
}

/// The address a node's port has, and the floating IP on that port (from Neutron's list of
/// floating IPs), as the spec to recreate it with names them.
fn addresses_of(port: &Value, fips: &Value) -> (Option<Ipv4Addr>, FloatingIp) {
    let ip = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .and_then(|a| a.parse().ok());
    let floating = fips["floatingips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["port_id"] == port["id"])
        .and_then(|f| f["floating_ip_address"].as_str())
        .and_then(|a| a.parse().ok())
        .map_or(FloatingIp::None, FloatingIp::Address);
    (ip, floating)
}

/// The part of a read-back spec the Machine (its labels and failure domain) and the
/// OpenStackMachine hold: everything but the address and floating IP, which only Neutron
/// knows. Local (ephemeral) block devices are not data volumes.
fn spec_of_objects(
    machine: &Machine,
    labels: &BTreeMap<String, String>,
    osm: &OpenStackMachine,
) -> Result<NodeSpec, String> {
    let port = osm.ports.first().cloned().unwrap_or_default();
    let (availability_zone, host) = zone_and_host(machine.failure_domain.as_deref());
    Ok(NodeSpec {
        name: machine.name.clone(),
        availability_zone,
        host,
        flavor: osm
            .flavor
            .clone()
            .ok_or("the OpenStackMachine names no flavor")?,
        image: osm
            .image
            .clone()
            .ok_or("the OpenStackMachine names no image by name")?,
        ssh_key: osm.ssh_key.clone(),
        security_groups: osm.security_groups.clone(),
        network: port
            .network
            .ok_or("the OpenStackMachine's port names no network")?,
        subnet: port
            .subnet
            .ok_or("the OpenStackMachine's port names no subnet")?,
        ip: None,
        floating_ip: FloatingIp::None,
        root_volume: osm.root_volume.as_ref().map(|r| RootVolume {
            size_gib: r.size_gib as u32,
            volume_type: r.volume_type.clone(),
        }),
        data_volumes: osm
            .block_devices
            .iter()
            .filter(|d| d.storage.as_deref() != Some("Local"))
            .map(|d| DataVolume {
                name: d.name.clone().unwrap_or_else(|| "data".into()),
                size_gib: d.size_gib.unwrap_or(1) as u32,
                volume_type: d.volume_type.clone(),
            })
            .collect(),
        roles: labels
            .keys()
            .filter_map(|k| k.strip_prefix(ROLE_LABEL_PREFIX))
            .map(str::to_string)
            .collect(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
    })
}

/// A Machine's failure domain read back as the spec's zone and host: `az:host` pins a
/// host, a bare `az` only the zone (the inverse of `NodeSpec::failure_domain`).
fn zone_and_host(failure_domain: Option<&str>) -> (Option<String>, Option<String>) {
    match failure_domain {
        Some(fd) => match fd.split_once(':') {
            Some((az, host)) => (Some(az.to_string()), Some(host.to_string())),
            None => (Some(fd.to_string()), None),
        },
        None => (None, None),
    }
}

pub fn register(r: &mut Registry, clients: Clients) {
    r.step("repair.check", &["unhealthy", "healthy"], move |ctx| {
        let c = clients.clone();
        async move { check_step(&c, ctx).await }
    });
}

/// Looks at the node once more: a healthy one is left alone unless the job says `force`.
async fn check_step(c: &Clients, ctx: StepContext) -> Result<Outcome, StepError> {
    let cluster = cluster_of(&ctx)?;
    let name = ctx.spec["name"].as_str().unwrap_or(&ctx.node).to_string();
    let m = capi_of(c)
        .await?
        .machines(&cluster.ns)
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
    let server = server_of(&os_of(c, &cluster).await?, &cluster, &machine).await?;
    let why = assess(
        &machine,
        server.as_ref(),
        Thresholds::from_params(&ctx.params),
    );
    let force = params::of_job::<RepairParams>(&ctx.params)?
        .force
        .is_some_and(|f| f.0);
    match why {
        Some(why) => Ok(Outcome::next_because("unhealthy", None, why)),
        None if force => Ok(Outcome::next_because(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::capi::Condition;

    const MIN: i64 = 60;

    fn at(now: DateTime<Utc>, minutes_ago: i64) -> Option<DateTime<Utc>> {
        Some(now - chrono::Duration::seconds(minutes_ago * MIN))
    }

    /// A Machine made `age` minutes before `now`, with a Node whose `NodeHealthy` has been
    /// `status` for `for_min` minutes (no Node when `status` is `None`).
    fn machine(now: DateTime<Utc>, age: i64, health: Option<(&str, i64, Option<&str>)>) -> Machine {
        Machine {
            name: "w-1".into(),
            created_at: at(now, age),
            node: health.map(|_| "w-1".to_string()),
            conditions: health
                .into_iter()
                .map(|(status, for_min, message)| Condition {
                    type_: "NodeHealthy".into(),
                    status: status.into(),
                    reason: Some("NodeConditionsFailed".into()),
                    message: message.map(str::to_string),
                    last_transition: at(now, for_min),
                })
                .collect(),
            ..Machine::default()
        }
    }

    // Long, and kept whole: a table, one row per story, read top to bottom.
    #[test]
    fn which_nodes_repair_judges_unhealthy_and_why() {
        let now = Utc::now();
        let t = Thresholds {
            unhealthy_after: Duration::from_secs(5 * 60),
            startup_timeout: Duration::from_secs(20 * 60),
        };
        let healthy = machine(now, 60, Some(("True", 50, None)));
        let failed = Machine {
            failure_reason: Some("UpdateError".into()),
            failure_message: Some("The server was unexpectedly deleted".into()),
            ..healthy.clone()
        };
        let reason_only = Machine {
            failure_reason: Some("UpdateError".into()),
            ..healthy.clone()
        };
        let error = json!({"status": "ERROR", "fault": {"message": "No valid host was found."}});
        let shutoff = json!({"status": "SHUTOFF"});
        let active = json!({"status": "ACTIVE"});
        // (story, Machine, its server as Nova shows it, the reason repair gives or None)
        let rows: Vec<(&str, Machine, Option<&Value>, Option<&str>)> = vec![
            (
                "a Ready worker is left alone",
                healthy.clone(),
                Some(&active),
                None,
            ),
            (
                "CAPI's failure message is the reason, before a healthy-looking Node",
                failed.clone(),
                Some(&active),
                Some("Machine failed: The server was unexpectedly deleted"),
            ),
            (
                "a failure reason without a message",
                reason_only,
                None,
                Some("Machine failed: UpdateError"),
            ),
            (
                "a server in ERROR, with Nova's fault",
                healthy.clone(),
                Some(&error),
                Some("server is ERROR No valid host was found."),
            ),
            (
                "a server someone shut off",
                healthy.clone(),
                Some(&shutoff),
                Some("server is SHUTOFF"),
            ),
            (
                "no Node 30m after the Machine was made (startup timeout 20m)",
                machine(now, 30, None),
                None,
                Some("no Node 30m after the Machine was created (startup timeout 20m)"),
            ),
            (
                "no Node 10m after: still starting",
                machine(now, 10, None),
                None,
                None,
            ),
            (
                "NodeHealthy False for 10m, past unhealthy_after 5m, with the kubelet's message",
                machine(now, 60, Some(("False", 10, Some("Node is not ready")))),
                Some(&active),
                Some("NodeHealthy False for 10m (Node is not ready)"),
            ),
            (
                "NodeHealthy Unknown for 10m without a message names the reason",
                machine(now, 60, Some(("Unknown", 10, None))),
                Some(&active),
                Some("NodeHealthy Unknown for 10m (NodeConditionsFailed)"),
            ),
            (
                "NodeHealthy False for 2m: within unhealthy_after, left alone",
                machine(now, 60, Some(("False", 2, None))),
                Some(&active),
                None,
            ),
            (
                "a Node CAPI has not judged yet (no NodeHealthy) is left alone",
                Machine {
                    conditions: Vec::new(),
                    ..healthy.clone()
                },
                Some(&active),
                None,
            ),
        ];
        for (story, m, server, want) in rows {
            assert_eq!(assess_at(&m, server, t, now).as_deref(), want, "{story}");
        }
    }

    /// The edges of the assessment: which reason wins when several hold, and what is said
    /// when upstream says little.
    #[test]
    fn the_first_reason_that_holds_is_the_one_repair_gives() {
        let now = Utc::now();
        let t = Thresholds {
            unhealthy_after: Duration::from_secs(5 * 60),
            startup_timeout: Duration::from_secs(20 * 60),
        };
        let error_no_fault = json!({"status": "ERROR"});
        let shutoff = json!({"status": "SHUTOFF", "fault": {"message": "stopped by ops"}});
        let building = json!({"status": "BUILD"});
        let silent = Machine {
            conditions: vec![Condition {
                type_: "NodeHealthy".into(),
                status: "False".into(),
                reason: None,
                message: None,
                last_transition: at(now, 10),
            }],
            ..machine(now, 60, Some(("False", 10, None)))
        };
        let rows: Vec<(&str, Machine, Option<&Value>, Option<&str>)> = vec![
            (
                "a server in ERROR without a fault says only its status",
                machine(now, 60, Some(("True", 50, None))),
                Some(&error_no_fault),
                Some("server is ERROR"),
            ),
            (
                "a SHUTOFF server's fault is given with it",
                machine(now, 60, Some(("True", 50, None))),
                Some(&shutoff),
                Some("server is SHUTOFF stopped by ops"),
            ),
            (
                "a broken server wins over a missing Node",
                machine(now, 30, None),
                Some(&error_no_fault),
                Some("server is ERROR"),
            ),
            (
                "a building server is not a reason; the missing Node is",
                machine(now, 30, None),
                Some(&building),
                Some("no Node 30m after the Machine was created (startup timeout 20m)"),
            ),
            (
                "a Machine with no creation time and no Node is still starting",
                Machine {
                    created_at: None,
                    ..machine(now, 0, None)
                },
                None,
                None,
            ),
            (
                "NodeHealthy with neither message nor reason says so",
                silent,
                None,
                Some("NodeHealthy False for 10m (no reason)"),
            ),
            (
                "a failure reason wins over a broken server and an unhealthy Node",
                Machine {
                    failure_reason: Some("UpdateError".into()),
                    ..machine(now, 60, Some(("False", 10, None)))
                },
                Some(&error_no_fault),
                Some("Machine failed: UpdateError"),
            ),
        ];
        for (story, m, server, want) in rows {
            assert_eq!(assess_at(&m, server, t, now).as_deref(), want, "{story}");
        }
    }

    /// A failure domain reads back as the zone and host a spec gives, and the spec's
    /// failure domain is the one read back.
    #[test]
    fn a_failure_domain_reads_back_as_zone_and_host() {
        let rows: [(Option<&str>, Option<&str>, Option<&str>); 3] = [
            (Some("az1:host-7"), Some("az1"), Some("host-7")),
            (Some("az2"), Some("az2"), None),
            (None, None, None),
        ];
        for (fd, az, host) in rows {
            let (a, h) = zone_and_host(fd);
            assert_eq!((a.as_deref(), h.as_deref()), (az, host), "{fd:?}");
            let spec = NodeSpec {
                availability_zone: a,
                host: h,
                ..spec_of_objects(
                    &Machine::default(),
                    &BTreeMap::new(),
                    &osm(made_by_scale_out()),
                )
                .unwrap()
            };
            assert_eq!(spec.failure_domain().as_deref(), fd, "{fd:?}");
        }
    }

    /// The address and floating IP a repaired node gets back, from its port and Neutron's
    /// floating IPs.
    #[test]
    fn the_address_and_floating_ip_read_back_from_the_nodes_port() {
        let port = json!({"id": "p-1", "device_id": "s-1",
                          "fixed_ips": [{"ip_address": "10.0.0.7"}]});
        let fips = |port_id: &str, address: &str| {
            json!({"floatingips": [{"port_id": "p-other", "floating_ip_address": "203.0.113.9"},
                                   {"port_id": port_id, "floating_ip_address": address}]})
        };
        let addr = |a: &str| a.parse::<Ipv4Addr>().unwrap();
        let rows: Vec<(&str, Value, Value, Option<Ipv4Addr>, FloatingIp)> = vec![
            (
                "the port's address and the floating IP on that port",
                port.clone(),
                fips("p-1", "203.0.113.5"),
                Some(addr("10.0.0.7")),
                FloatingIp::Address(addr("203.0.113.5")),
            ),
            (
                "no floating IP on the port: none, not another port's",
                port.clone(),
                fips("p-2", "203.0.113.5"),
                Some(addr("10.0.0.7")),
                FloatingIp::None,
            ),
            (
                "a port without an address keeps its floating IP",
                json!({"id": "p-1", "fixed_ips": []}),
                fips("p-1", "203.0.113.5"),
                None,
                FloatingIp::Address(addr("203.0.113.5")),
            ),
            (
                "an address that is not IPv4 is not read back",
                json!({"id": "p-1", "fixed_ips": [{"ip_address": "fd00::7"}]}),
                json!({"floatingips": []}),
                None,
                FloatingIp::None,
            ),
        ];
        for (story, port, fips, ip, floating) in rows {
            assert_eq!(addresses_of(&port, &fips), (ip, floating), "{story}");
        }
        let ports = [json!({"device_id": "s-0"}), port.clone()];
        assert_eq!(port_on(&ports, "s-1"), Some(&port));
        assert_eq!(port_on(&ports, "s-9"), None);
        // A Machine without a server ID has no port, not the first unattached one.
        assert_eq!(port_on(&[json!({"device_id": ""})], ""), None);
    }

    #[test]
    fn thresholds_come_from_the_params_with_repairs_defaults() {
        let t = Thresholds::from_params(&json!({"unhealthy_after": "2m"}));
        assert_eq!(t.unhealthy_after, Duration::from_secs(120));
        assert_eq!(t.startup_timeout, Duration::from_secs(1200));
        let d = Thresholds::from_params(&json!({"unhealthy_after": "soon"}));
        assert_eq!(d.unhealthy_after, Duration::from_secs(300));
    }

    fn osm(spec: Value) -> OpenStackMachine {
        OpenStackMachine::read(
            &serde_json::from_value(json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "OpenStackMachine",
                "metadata": {"name": "w-1"},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    /// What Capstan writes for a node (`scale_out`'s OpenStackMachine) and its Machine.
    fn made_by_scale_out() -> Value {
        json!({
            "flavor": "m1.large",
            "image": {"filter": {"name": "ubuntu-2204-kube-v1.30.4"}},
            "sshKeyName": "ops",
            "securityGroups": [{"filter": {"name": "workers"}}, {"filter": {"name": "ssh"}}],
            "ports": [{"network": {"filter": {"name": "demo-net"}},
                       "fixedIPs": [{"subnet": {"filter": {"name": "demo-subnet"}}}]}],
            "rootVolume": {"sizeGiB": 40, "type": "ssd"},
            "additionalBlockDevices": [
                {"name": "logs", "sizeGiB": 10, "storage": {"type": "Volume", "volume": {"type": "hdd"}}},
                {"name": "cache", "sizeGiB": 2, "storage": {"type": "Local"}},
            ],
        })
    }

    #[test]
    fn a_node_spec_reads_back_from_its_machine_and_openstack_machine() {
        let labels = BTreeMap::from([
            (format!("{ROLE_LABEL_PREFIX}ingress"), String::new()),
            ("cluster.x-k8s.io/cluster-name".to_string(), "demo".into()),
        ]);
        let pinned = Machine {
            name: "w-1".into(),
            failure_domain: Some("az1:host-7".into()),
            ..Machine::default()
        };
        let spec = spec_of_objects(&pinned, &labels, &osm(made_by_scale_out())).unwrap();
        assert_eq!(spec.name, "w-1");
        assert_eq!(
            (spec.availability_zone.as_deref(), spec.host.as_deref()),
            (Some("az1"), Some("host-7"))
        );
        assert_eq!(
            (spec.flavor.as_str(), spec.image.as_str()),
            ("m1.large", "ubuntu-2204-kube-v1.30.4")
        );
        assert_eq!(spec.ssh_key.as_deref(), Some("ops"));
        assert_eq!(spec.security_groups, ["workers", "ssh"]);
        assert_eq!(
            (spec.network.as_str(), spec.subnet.as_str()),
            ("demo-net", "demo-subnet")
        );
        assert_eq!(
            spec.root_volume,
            Some(RootVolume {
                size_gib: 40,
                volume_type: Some("ssd".into())
            })
        );
        // The ephemeral device is not a data volume.
        assert_eq!(
            spec.data_volumes,
            [DataVolume {
                name: "logs".into(),
                size_gib: 10,
                volume_type: Some("hdd".into())
            }]
        );
        assert_eq!(spec.roles, ["ingress"]);
        // Only Neutron knows these; `read_back` fills them in.
        assert_eq!((spec.ip, &spec.floating_ip), (None, &FloatingIp::None));
        // The names the recreated node will get are the ones CAPO gave the old one.
        assert_eq!(spec.volume_names(), ["w-1-root", "w-1-logs"]);

        let az_only = Machine {
            failure_domain: Some("az2".into()),
            ..pinned.clone()
        };
        let spec = spec_of_objects(&az_only, &BTreeMap::new(), &osm(made_by_scale_out())).unwrap();
        assert_eq!(
            (spec.availability_zone.as_deref(), spec.host),
            (Some("az2"), None)
        );
        assert!(spec.roles.is_empty());
    }

    #[test]
    fn a_spec_that_cannot_be_read_back_says_what_is_missing() {
        let m = Machine {
            name: "w-1".into(),
            ..Machine::default()
        };
        let without = |key: &str| {
            let mut o = made_by_scale_out();
            o.as_object_mut().unwrap().remove(key);
            spec_of_objects(&m, &BTreeMap::new(), &osm(o)).unwrap_err()
        };
        assert_eq!(without("flavor"), "the OpenStackMachine names no flavor");
        assert_eq!(
            without("image"),
            "the OpenStackMachine names no image by name"
        );
        assert_eq!(
            without("ports"),
            "the OpenStackMachine's port names no network"
        );
        let mut by_id = made_by_scale_out();
        by_id["image"] = json!({"id": "8c1e4b2a"});
        assert_eq!(
            spec_of_objects(&m, &BTreeMap::new(), &osm(by_id)).unwrap_err(),
            "the OpenStackMachine names no image by name"
        );
    }
}

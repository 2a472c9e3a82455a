//! CAPO (v0.14) as Capstan reads it: the names CAPO gives what it makes in OpenStack for a
//! node, the providerID it puts on a Machine, and typed views of the OpenStackMachine,
//! OpenStackServer and OpenStackCluster fields Capstan reads. CAPO's kinds do not change
//! version with CAPI's, so there is one shape each.
//!
//! **Invariant:** no other module spells a CAPO name (`<node>-0`, `<node>-root`) or a CAPO
//! JSON path; a CAPO upgrade that renames either changes only this file.

use kube::api::DynamicObject;
use serde_json::Value;

// ---- names -------------------------------------------------------------------------------

/// CAPO's name for a node's port on its `index`th network (`<node>-<index>`).
pub fn port_name(node: &str, index: usize) -> String {
    format!("{node}-{index}")
}

/// CAPO's name for a node's root volume, when it boots from one (`<node>-root`).
pub fn root_volume_name(node: &str) -> String {
    volume_name(node, "root")
}

/// CAPO's name for a node's additional block device `device` (`<node>-<device>`).
pub fn volume_name(node: &str, device: &str) -> String {
    format!("{node}-{device}")
}

/// What follows `<node>-` in `name`, if `name` is one of CAPO's names for `node`'s things.
fn suffix<'a>(name: &'a str, node: &str) -> Option<&'a str> {
    name.strip_prefix(node)?
        .strip_prefix('-')
        .filter(|s| !s.is_empty())
}

/// Whether `name` has the shape of CAPO's name for one of `node`'s ports (`<node>-<digits>`).
pub fn is_port_of(name: &str, node: &str) -> bool {
    suffix(name, node).is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` has the shape of CAPO's name for one of `node`'s volumes (`<node>-root`,
/// `<node>-<device>` with a device name without `-`).
pub fn is_volume_of(name: &str, node: &str) -> bool {
    suffix(name, node).is_some_and(|s| !s.contains('-'))
}

/// Whether some CAPO name for `node`'s things could be `name` (`<node>-<anything>`).
pub fn may_be_of(name: &str, node: &str) -> bool {
    suffix(name, node).is_some()
}

// ---- providerID --------------------------------------------------------------------------

/// A Machine's (or Node's) `providerID` as CAPO writes it: `openstack:///<server id>`, or
/// `openstack://<region>/<server id>` in a cloud with regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderId {
    pub region: Option<String>,
    pub server_id: String,
}

impl ProviderId {
    /// The one parser of providerIDs; `None` for another provider's or an empty ID.
    pub fn parse(s: &str) -> Option<ProviderId> {
        let rest = s.strip_prefix("openstack://")?;
        let (region, id) = rest.rsplit_once('/').unwrap_or(("", rest));
        (!id.is_empty()).then(|| ProviderId {
            region: Some(region).filter(|r| !r.is_empty()).map(str::to_string),
            server_id: id.to_string(),
        })
    }
}

/// The server ID a providerID names, if it is CAPO's.
pub fn server_id_of(provider_id: Option<&str>) -> Option<String> {
    provider_id.and_then(ProviderId::parse).map(|p| p.server_id)
}

// ---- OpenStackMachine --------------------------------------------------------------------

/// One of an OpenStackMachine's ports: the network and subnet it names by filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Port {
    pub network: Option<String>,
    pub subnet: Option<String>,
}

/// An additional block device of an OpenStackMachine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: Option<String>,
    pub size_gib: Option<u64>,
    /// `Volume` (a Cinder volume, CAPO's default) or `Local` (ephemeral).
    pub storage: Option<String>,
    pub volume_type: Option<String>,
}

/// An OpenStackMachine's root volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootVolume {
    pub size_gib: u64,
    pub volume_type: Option<String>,
}

/// The fields of an OpenStackMachine's spec Capstan reads (it writes them in `scale_out`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenStackMachine {
    pub name: String,
    pub flavor: Option<String>,
    /// The image, when named by filter (not by ID).
    pub image: Option<String>,
    pub ssh_key: Option<String>,
    /// Security groups named by filter.
    pub security_groups: Vec<String>,
    pub ports: Vec<Port>,
    pub root_volume: Option<RootVolume>,
    pub block_devices: Vec<BlockDevice>,
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl OpenStackMachine {
    pub fn read(o: &DynamicObject) -> OpenStackMachine {
        let spec = &o.data["spec"];
        let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
        OpenStackMachine {
            name: o.metadata.name.clone().unwrap_or_default(),
            flavor: string(&spec["flavor"]),
            image: string(&spec["image"]["filter"]["name"]),
            ssh_key: string(&spec["sshKeyName"]),
            security_groups: list("securityGroups")
                .iter()
                .filter_map(|g| string(&g["filter"]["name"]))
                .collect(),
            ports: list("ports")
                .iter()
                .map(|p| Port {
                    network: string(&p["network"]["filter"]["name"]),
                    subnet: string(&p["fixedIPs"][0]["subnet"]["filter"]["name"]),
                })
                .collect(),
            root_volume: spec["rootVolume"]["sizeGiB"]
                .as_u64()
                .map(|size_gib| RootVolume {
                    size_gib,
                    volume_type: string(&spec["rootVolume"]["type"]),
                }),
            block_devices: list("additionalBlockDevices")
                .iter()
                .map(|d| BlockDevice {
                    name: string(&d["name"]),
                    size_gib: d["sizeGiB"].as_u64(),
                    storage: string(&d["storage"]["type"]),
                    volume_type: string(&d["storage"]["volume"]["type"]),
                })
                .collect(),
        }
    }

    /// The names CAPO gives this machine's ports (one per port in its spec, at least one)
    /// and Cinder volumes (the root volume when it boots from one, then each named
    /// additional block device).
    pub fn resource_names(&self) -> (Vec<String>, Vec<String>) {
        let ports = (0..self.ports.len().max(1))
            .map(|i| port_name(&self.name, i))
            .collect();
        let root = self
            .root_volume
            .as_ref()
            .map(|_| root_volume_name(&self.name));
        let devices = self
            .block_devices
            .iter()
            .filter_map(|d| d.name.as_deref())
            .map(|d| volume_name(&self.name, d));
        (ports, root.into_iter().chain(devices).collect())
    }

    /// The names to look for when the OpenStackMachine is gone: CAPO's first port and root
    /// volume of `node`.
    pub fn default_resource_names(node: &str) -> (Vec<String>, Vec<String>) {
        (vec![port_name(node, 0)], vec![root_volume_name(node)])
    }
}

// ---- OpenStackServer ---------------------------------------------------------------------

/// What Capstan reads of an OpenStackServer's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenStackServer {
    /// The Nova server's ID, once CAPO has one.
    pub instance_id: Option<String>,
    /// The message of an `InstanceReady` condition whose reason is `InstanceCreateFailed`:
    /// Nova refused the create (CAPO v0.14 gives up on it; terminal).
    pub create_failed: Option<String>,
}

impl OpenStackServer {
    pub fn read(o: &DynamicObject) -> OpenStackServer {
        let status = &o.data["status"];
        OpenStackServer {
            instance_id: string(&status["instanceID"]),
            create_failed: status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["type"] == "InstanceReady" && x["reason"] == "InstanceCreateFailed")
                .and_then(|x| string(&x["message"])),
        }
    }
}

// ---- OpenStackCluster --------------------------------------------------------------------

/// What Capstan reads of an OpenStackCluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenStackCluster {
    /// `spec.identityRef` as it stands (Capstan copies it to the machines it makes).
    pub identity_ref: Value,
    /// The Secret `identityRef` names, if any.
    pub identity_secret: Option<String>,
    /// The `clouds.yaml` entry `identityRef` names (`cloudName`), if set.
    pub identity_cloud: Option<String>,
    /// The external network's ID, from the status.
    pub external_network: Option<String>,
}

impl OpenStackCluster {
    pub fn read(o: &DynamicObject) -> OpenStackCluster {
        let identity = &o.data["spec"]["identityRef"];
        let non_empty = |v: &Value| string(v).filter(|s| !s.is_empty());
        OpenStackCluster {
            identity_ref: identity.clone(),
            identity_secret: non_empty(&identity["name"]),
            identity_cloud: non_empty(&identity["cloudName"]),
            external_network: string(&o.data["status"]["externalNetwork"]["id"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("an object")
    }

    #[test]
    fn provider_ids_with_and_without_a_region() {
        let plain = ProviderId::parse("openstack:///abc").unwrap();
        assert_eq!((plain.region, plain.server_id.as_str()), (None, "abc"));
        let regional = ProviderId::parse("openstack://RegionOne/abc").unwrap();
        assert_eq!(regional.region.as_deref(), Some("RegionOne"));
        assert_eq!(regional.server_id, "abc");
        assert_eq!(ProviderId::parse("aws:///abc"), None);
        assert_eq!(ProviderId::parse("openstack:///"), None);
        assert_eq!(
            server_id_of(Some("openstack://RegionOne/abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(server_id_of(None), None);
    }

    #[test]
    fn capo_names_and_what_they_belong_to() {
        assert_eq!(port_name("w-1", 0), "w-1-0");
        assert_eq!(root_volume_name("w-1"), "w-1-root");
        assert_eq!(volume_name("w-1", "logs"), "w-1-logs");
        assert!(is_port_of("w-1-0", "w-1"));
        assert!(is_port_of("w-1-12", "w-1"));
        assert!(!is_port_of("w-1-root", "w-1"));
        assert!(!is_port_of("w-1-", "w-1"));
        assert!(!is_port_of("w-10", "w-1"));
        assert!(is_volume_of("w-1-root", "w-1"));
        assert!(is_volume_of("w-1-logs", "w-1"));
        // `w-1-2-root` is node `w-1-2`'s root volume, not a device `2-root` of `w-1`.
        assert!(!is_volume_of("w-1-2-root", "w-1"));
        assert!(may_be_of("w-1-2-root", "w-1"));
        assert!(!may_be_of("w-1", "w-1"));
    }

    #[test]
    fn an_openstack_machine_names_its_ports_and_volumes() {
        let osm = OpenStackMachine::read(&object(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
            "metadata": {"name": "w-1"},
            "spec": {
                "flavor": "m1.small",
                "image": {"filter": {"name": "ubuntu"}},
                "ports": [
                    {"network": {"filter": {"name": "net"}}, "fixedIPs": [{"subnet": {"filter": {"name": "sub"}}}]},
                    {"network": {"filter": {"name": "storage"}}}
                ],
                "rootVolume": {"sizeGiB": 20, "type": "ssd"},
                "additionalBlockDevices": [
                    {"name": "logs", "sizeGiB": 5, "storage": {"type": "Volume", "volume": {"type": "hdd"}}},
                    {"name": "scratch", "sizeGiB": 1, "storage": {"type": "Local"}}
                ]
            }
        })));
        assert_eq!(osm.ports[0].subnet.as_deref(), Some("sub"));
        assert_eq!(osm.ports[1].subnet, None);
        assert_eq!(
            osm.root_volume,
            Some(RootVolume {
                size_gib: 20,
                volume_type: Some("ssd".into())
            })
        );
        let (ports, volumes) = osm.resource_names();
        assert_eq!(ports, ["w-1-0", "w-1-1"]);
        assert_eq!(volumes, ["w-1-root", "w-1-logs", "w-1-scratch"]);
        // No ports in the spec: CAPO still makes one on the cluster's network.
        let bare = OpenStackMachine::read(&object(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
            "metadata": {"name": "w-2"}, "spec": {"flavor": "m1.small"}
        })));
        assert_eq!(bare.resource_names(), (vec!["w-2-0".to_string()], vec![]));
        assert_eq!(
            OpenStackMachine::default_resource_names("w-3"),
            (vec!["w-3-0".to_string()], vec!["w-3-root".to_string()])
        );
    }

    #[test]
    fn a_refused_create_reads_from_the_openstack_server() {
        let oss = OpenStackServer::read(&object(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "OpenStackServer",
            "metadata": {"name": "w-1"},
            "status": {"instanceID": "abc", "conditions": [
                {"type": "Ready", "status": "False", "reason": "InstanceCreateFailed", "message": "not this one"},
                {"type": "InstanceReady", "status": "False", "reason": "InstanceCreateFailed", "message": "Quota exceeded for cores"}
            ]}
        })));
        assert_eq!(oss.instance_id.as_deref(), Some("abc"));
        assert_eq!(
            oss.create_failed.as_deref(),
            Some("Quota exceeded for cores")
        );
    }
}

//! The scale_out per-node spec (DESIGN §2): a request's `defaults` and `nodes[i]` resolved
//! into one [`NodeSpec`] per node, checked field by field.
//!
//! A node's value replaces the default's, per top-level field; nested values (`root_volume`,
//! `data_volumes`, `labels`, …) are replaced as a whole, never merged. A node's explicit
//! `null` unsets the default (`"host": null` boots a node anywhere in its AZ). Every problem
//! is reported at once and names its field: `nodes[2].ip` when the node set it,
//! `defaults.flavor` when the node inherited it.
//!
//! `NodeSpec` serialises in the same shape as a request node, so the stored JSON can be
//! amended by a JSON merge patch and parsed again by [`parse_node`].
//!
//! Pure: no I/O. Whether a flavor, subnet or IP exists and is free is preflight's business.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cloud::capi::capo;
use crate::engine::request::{FieldError, check_dns_label};

/// One node as scale_out creates it, every default applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Machine, OpenStackMachine and Nova server name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Compute host pinning; only with `availability_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub flavor: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    pub network: String,
    pub subnet: String,
    /// The fixed IP in `subnet`; Neutron picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "FloatingIp::is_none")]
    pub floating_ip: FloatingIp,
    /// Boot from a volume of this size; absent: boot from the image on the flavor's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<RootVolume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_volumes: Vec<DataVolume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

/// Whether the node gets a floating IP, and which. Written `false`, `true` or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatingIp {
    #[default]
    None,
    /// Any free address from the external network.
    Any,
    /// Exactly this address.
    Address(Ipv4Addr),
}

impl FloatingIp {
    pub fn is_none(&self) -> bool {
        *self == FloatingIp::None
    }
}

impl Serialize for FloatingIp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FloatingIp::None => s.serialize_bool(false),
            FloatingIp::Any => s.serialize_bool(true),
            FloatingIp::Address(a) => s.collect_str(a),
        }
    }
}

impl<'de> Deserialize<'de> for FloatingIp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        floating_ip_from(&v).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootVolume {
    pub size_gib: u32,
    /// The Cinder volume type; absent: the cloud's default type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataVolume {
    /// The device name within the node; the Cinder volume is `<node>-<name>`.
    pub name: String,
    pub size_gib: u32,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// Kubernetes' three taint effects, spelled as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The label prefix CAPI syncs from a Machine to its Node for roles.
pub const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";
/// The label domain CAPI syncs from a Machine to its Node (with its subdomains).
pub const SYNCED_LABEL_DOMAIN: &str = "node.cluster.x-k8s.io";

impl NodeSpec {
    /// `Machine.spec.failureDomain`: the AZ, or Nova's `az:host` when pinned to a host.
    pub fn failure_domain(&self) -> Option<String> {
        let az = self.availability_zone.as_ref()?;
        Some(match &self.host {
            Some(h) => format!("{az}:{h}"),
            None => az.clone(),
        })
    }

    /// The Cinder volumes CAPO makes for this node: `<name>-root` (only when booting from
    /// a volume), then `<name>-<device>` for each data volume, in order.
    pub fn volume_names(&self) -> Vec<String> {
        let root = self
            .root_volume
            .as_ref()
            .map(|_| capo::root_volume_name(&self.name));
        root.into_iter()
            .chain(
                self.data_volumes
                    .iter()
                    .map(|d| capo::volume_name(&self.name, &d.name)),
            )
            .collect()
    }

    /// The Neutron port CAPO makes for the node's one network: `<name>-0`.
    pub fn port_name(&self) -> String {
        capo::port_name(&self.name, 0)
    }

    /// Labels set on the Machine, which CAPI syncs to the Node: each role as
    /// `node-role.kubernetes.io/<role>: ""`, and the labels under `node.cluster.x-k8s.io`.
    pub fn machine_labels(&self) -> BTreeMap<String, String> {
        let roles = self
            .roles
            .iter()
            .map(|r| (format!("{ROLE_LABEL_PREFIX}{r}"), String::new()));
        let synced = self
            .labels
            .iter()
            .filter(|(k, _)| is_synced_label(k))
            .map(|(k, v)| (k.clone(), v.clone()));
        roles.chain(synced).collect()
    }

    /// Labels CAPI does not sync, patched onto the Node once it has joined.
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .filter(|(k, _)| !is_synced_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn is_synced_label(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        prefix == SYNCED_LABEL_DOMAIN || prefix.ends_with(&format!(".{SYNCED_LABEL_DOMAIN}"))
    })
}

const FIELDS: &[&str] = &[
    "name",
    "availability_zone",
    "host",
    "flavor",
    "image",
    "ssh_key",
    "security_groups",
    "network",
    "subnet",
    "ip",
    "floating_ip",
    "root_volume",
    "data_volumes",
    "roles",
    "labels",
    "taints",
];
/// Fields that only make sense per node.
const NOT_DEFAULTABLE: &[&str] = &["name"];
/// Longest free-form name (Nova, Neutron and Cinder names are at most 255).
const MAX_NAME: usize = 255;
/// CAPO's `sizeGiB` is an int32.
const MAX_SIZE_GIB: u64 = i32::MAX as u64;

/// Parses one node, filling what it leaves out from `defaults` (an object, or `null`).
/// Fields are named `<field_prefix>.<field>` (`nodes[2].ip`; just `ip` for an empty prefix)
/// or `defaults.<field>` when the value came from the defaults.
pub fn parse_node(
    defaults: &Value,
    node: &Value,
    field_prefix: &str,
) -> Result<NodeSpec, Vec<FieldError>> {
    let mut errs = Vec::new();
    let empty = Map::new();
    let defaults = match defaults {
        Value::Object(d) => d,
        Value::Null => &empty,
        _ => {
            errs.push(FieldError::new("defaults", "must be an object"));
            &empty
        }
    };
    let named;
    let node = match node {
        Value::Object(n) => n,
        Value::String(s) => {
            named = Map::from_iter([("name".to_string(), Value::String(s.clone()))]);
            &named
        }
        _ => {
            errs.push(FieldError::new(
                prefix_or(field_prefix, "(node)"),
                "must be an object (or a node name)",
            ));
            return Err(errs);
        }
    };
    errs.extend(unknown_fields(defaults, node, field_prefix));
    let mut p = Parser {
        defaults,
        node,
        prefix: field_prefix,
        errs,
    };

    let spec = p.node_spec();
    if !p.errs.is_empty() {
        return Err(p.errs);
    }
    // Every required field pushed an error if it was missing, so the spec is whole.
    Ok(spec.expect("a missing required field always records an error"))
}

/// The fields of `defaults` and `node` that a node spec does not have, or that only a node
/// may set.
fn unknown_fields(
    defaults: &Map<String, Value>,
    node: &Map<String, Value>,
    field_prefix: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for key in defaults.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errs.push(FieldError::new(
                format!("defaults.{key}"),
                format!("unknown field (known: {})", FIELDS.join(", ")),
            ));
        } else if NOT_DEFAULTABLE.contains(&key.as_str()) {
            errs.push(FieldError::new(
                format!("defaults.{key}"),
                "is per node and cannot be defaulted",
            ));
        }
    }
    for key in node.keys() {
        if !FIELDS.contains(&key.as_str()) {
            errs.push(FieldError::new(
                join(field_prefix, key),
                format!("unknown field (known: {})", FIELDS.join(", ")),
            ));
        }
    }
    errs
}

/// Parses every node of a scale_out request (`nodes[i]`, against the request's `defaults`)
/// and checks what must be unique across the job: names, fixed IPs, floating IP addresses
/// and the Cinder volume names the nodes will get.
pub fn parse_request_nodes(
    defaults: Option<&Value>,
    nodes: &[Value],
) -> Result<Vec<NodeSpec>, Vec<FieldError>> {
    let defaults = defaults.unwrap_or(&Value::Null);
    let mut errs: Vec<FieldError> = Vec::new();
    let mut parsed = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match parse_node(defaults, n, &format!("nodes[{i}]")) {
            Ok(spec) => parsed.push((i, spec)),
            Err(es) => {
                // A bad default is reported once, not once per node that inherits it.
                for e in es {
                    if !errs.contains(&e) {
                        errs.push(e);
                    }
                }
            }
        }
    }
    errs.extend(unique_across(parsed.iter().map(|(i, s)| (*i, s))));
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(parsed.into_iter().map(|(_, s)| s).collect())
}

/// The cross-node checks of [`parse_request_nodes`], for a job's nodes after an amend.
pub fn check_unique(nodes: &[NodeSpec]) -> Vec<FieldError> {
    unique_across(nodes.iter().enumerate())
}

fn unique_across<'a>(nodes: impl Iterator<Item = (usize, &'a NodeSpec)>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut fips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut volumes: HashMap<String, usize> = HashMap::new();
    for (i, n) in nodes {
        let duplicate_name = names.get(n.name.as_str()).copied();
        if let Some(j) = duplicate_name {
            errs.push(FieldError::new(
                format!("nodes[{i}].name"),
                format!("`{}` is also the name of nodes[{j}]", n.name),
            ));
        } else {
            names.insert(&n.name, i);
        }
        if let Some(ip) = n.ip {
            if let Some(j) = ips.insert(ip, i) {
                errs.push(FieldError::new(
                    format!("nodes[{i}].ip"),
                    format!("{ip} is also the IP of nodes[{j}]"),
                ));
            }
        }
        if let FloatingIp::Address(a) = n.floating_ip {
            if let Some(j) = fips.insert(a, i) {
                errs.push(FieldError::new(
                    format!("nodes[{i}].floating_ip"),
                    format!("{a} is also the floating IP of nodes[{j}]"),
                ));
            }
        }
        if duplicate_name.is_some() {
            // Its volumes collide with the other node's by construction; said once above.
            continue;
        }
        let root = n
            .root_volume
            .as_ref()
            .map(|_| ("root".to_string(), "root_volume".to_string()));
        let data = n
            .data_volumes
            .iter()
            .enumerate()
            .map(|(k, d)| (d.name.clone(), format!("data_volumes[{k}].name")));
        for (device, field) in root.into_iter().chain(data) {
            let v = format!("{}-{device}", n.name);
            if let Some(j) = volumes.insert(v.clone(), i) {
                errs.push(FieldError::new(
                    format!("nodes[{i}].{field}"),
                    format!("makes volume `{v}`, which nodes[{j}] also makes"),
                ));
            }
        }
    }
    errs
}

/// Resolves each field from the node, else the defaults, naming the field by its origin.
struct Parser<'a> {
    defaults: &'a Map<String, Value>,
    node: &'a Map<String, Value>,
    prefix: &'a str,
    errs: Vec<FieldError>,
}

type Check<T> = fn(&Value, &str, &mut Vec<FieldError>) -> Option<T>;

impl<'a> Parser<'a> {
    /// Every field of the node spec, each checked (errors pushed); the spec when every
    /// required field is there.
    fn node_spec(&mut self) -> Option<NodeSpec> {
        let name = self.required("name", |v, f, e| {
            let s = string(v, f, e)?;
            check_dns_label(&s)
                .map_err(|m| e.push(FieldError::new(f, m)))
                .ok()?;
            Some(s)
        });
        let availability_zone = self.optional("availability_zone", zone_or_host);
        let host = self.optional("host", zone_or_host);
        if host.is_some() && availability_zone.is_none() {
            let f = self.field_of("host");
            self.errs.push(FieldError::new(
                f,
                "needs `availability_zone` (the host is pinned as `az:host`)",
            ));
        }
        let flavor = self.required("flavor", string);
        let image = self.required("image", string);
        let ssh_key = self.optional("ssh_key", string);
        let security_groups = self
            .optional("security_groups", |v, f, e| unique_list(v, f, e, string))
            .unwrap_or_default();
        let network = self.required("network", string);
        let subnet = self.required("subnet", string);
        let ip = self.optional("ip", |v, f, e| {
            let s = string(v, f, e)?;
            usable_ipv4(&s, f, e)
        });
        let floating_ip = self
            .optional("floating_ip", |v, f, e| {
                let parsed = floating_ip_from(v).map_err(|m| e.push(FieldError::new(f, m)));
                let fip = parsed.ok()?;
                if let FloatingIp::Address(a) = fip {
                    usable_ipv4(&a.to_string(), f, e)?;
                }
                Some(fip)
            })
            .unwrap_or_default();
        let root_volume = self.optional("root_volume", root_volume);
        let data_volumes = self
            .optional("data_volumes", data_volumes)
            .unwrap_or_default();
        let roles = self
            .optional("roles", |v, f, e| unique_list(v, f, e, role))
            .unwrap_or_default();
        let labels = self.optional("labels", labels).unwrap_or_default();
        let taints = self.optional("taints", taints).unwrap_or_default();

        match (name, flavor, image, network, subnet) {
            (Some(name), Some(flavor), Some(image), Some(network), Some(subnet)) => {
                Some(NodeSpec {
                    name,
                    availability_zone,
                    host,
                    flavor,
                    image,
                    ssh_key,
                    security_groups,
                    network,
                    subnet,
                    ip,
                    floating_ip,
                    root_volume,
                    data_volumes,
                    roles,
                    labels,
                    taints,
                })
            }
            _ => None,
        }
    }

    /// The value in force for `key` and the field name to report it under; `None` when
    /// unset (absent from both, or `null` where it was found).
    fn pick(&self, key: &str) -> Option<(&'a Value, String)> {
        let (v, field) = match self.node.get(key) {
            Some(v) => (v, join(self.prefix, key)),
            None => (self.defaults.get(key)?, format!("defaults.{key}")),
        };
        (!v.is_null()).then_some((v, field))
    }

    /// Where a missing or inherited field is reported.
    fn field_of(&self, key: &str) -> String {
        self.pick(key)
            .map(|(_, f)| f)
            .unwrap_or_else(|| join(self.prefix, key))
    }

    fn optional<T>(
        &mut self,
        key: &str,
        check: impl FnOnce(&Value, &str, &mut Vec<FieldError>) -> Option<T>,
    ) -> Option<T> {
        let (v, field) = self.pick(key)?;
        check(v, &field, &mut self.errs)
    }

    fn required<T>(&mut self, key: &str, check: Check<T>) -> Option<T> {
        if self.pick(key).is_none() {
            let field = join(self.prefix, key);
            let msg = if key == "name" {
                "is required"
            } else {
                "is required (on the node or in `defaults`)"
            };
            self.errs.push(FieldError::new(field, msg));
            return None;
        }
        self.optional(key, check)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn prefix_or(prefix: &str, otherwise: &str) -> String {
    if prefix.is_empty() {
        otherwise.to_string()
    } else {
        prefix.to_string()
    }
}

fn string(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() && s.len() <= MAX_NAME => Some(s.to_string()),
        _ => {
            errs.push(FieldError::new(
                field,
                format!("must be a non-empty string of at most {MAX_NAME} characters"),
            ));
            None
        }
    }
}

/// An AZ or a host: `az:host` is how they are joined, so neither may hold a colon.
fn zone_or_host(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    let s = string(v, field, errs)?;
    if s.contains(':') {
        errs.push(FieldError::new(
            field,
            format!("`{s}` must not contain ':' (Nova joins AZ and host as `az:host`)"),
        ));
        return None;
    }
    Some(s)
}

fn usable_ipv4(s: &str, field: &str, errs: &mut Vec<FieldError>) -> Option<Ipv4Addr> {
    let Ok(ip) = s.parse::<Ipv4Addr>() else {
        errs.push(FieldError::new(
            field,
            format!("`{s}` is not an IPv4 address"),
        ));
        return None;
    };
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        errs.push(FieldError::new(
            field,
            format!("{ip} cannot be a node's address"),
        ));
        return None;
    }
    Some(ip)
}

fn floating_ip_from(v: &Value) -> Result<FloatingIp, String> {
    match v {
        Value::Bool(false) | Value::Null => Ok(FloatingIp::None),
        Value::Bool(true) => Ok(FloatingIp::Any),
        Value::String(s) => s
            .parse()
            .map(FloatingIp::Address)
            .map_err(|_| format!("`{s}` is not an IPv4 address")),
        _ => Err("must be `true`, `false` or an IPv4 address".to_string()),
    }
}

fn size_gib(v: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<u32> {
    match v.and_then(Value::as_u64) {
        Some(n) if (1..=MAX_SIZE_GIB).contains(&n) => Some(n as u32),
        _ if v.is_none() => {
            errs.push(FieldError::new(field, "is required"));
            None
        }
        _ => {
            errs.push(FieldError::new(
                field,
                format!("must be a whole number of GiB from 1 to {MAX_SIZE_GIB}"),
            ));
            None
        }
    }
}

/// An object's fields, with unknown ones reported.
fn object<'v>(
    v: &'v Value,
    field: &str,
    known: &[&str],
    errs: &mut Vec<FieldError>,
) -> Option<&'v Map<String, Value>> {
    let Some(o) = v.as_object() else {
        errs.push(FieldError::new(field, "must be an object"));
        return None;
    };
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            errs.push(FieldError::new(
                format!("{field}.{k}"),
                format!("unknown field (known: {})", known.join(", ")),
            ));
        }
    }
    Some(o)
}

fn volume_type(o: &Map<String, Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    match o.get("type") {
        None | Some(Value::Null) => None,
        Some(t) => string(t, &format!("{field}.type"), errs),
    }
}

fn root_volume(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<RootVolume> {
    let o = object(v, field, &["size_gib", "type"], errs)?;
    let before = errs.len();
    let size_gib = size_gib(o.get("size_gib"), &format!("{field}.size_gib"), errs);
    let volume_type = volume_type(o, field, errs);
    (errs.len() == before).then(|| RootVolume {
        size_gib: size_gib.unwrap_or_default(),
        volume_type,
    })
}

fn data_volumes(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<Vec<DataVolume>> {
    let Some(list) = v.as_array() else {
        errs.push(FieldError::new(
            field,
            "must be an array of {name, size_gib, type}",
        ));
        return None;
    };
    let before = errs.len();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Some(o) = object(d, &field, &["name", "size_gib", "type"], errs) else {
            continue;
        };
        let name_field = format!("{field}.name");
        let name = match o.get("name") {
            None => {
                errs.push(FieldError::new(&name_field, "is required"));
                None
            }
            Some(n) => string(n, &name_field, errs).and_then(|n| {
                if let Err(m) = check_dns_label(&n) {
                    errs.push(FieldError::new(&name_field, m));
                    None
                } else if n == "root" {
                    errs.push(FieldError::new(
                        &name_field,
                        "`root` is reserved for the root volume (use `root_volume`)",
                    ));
                    None
                } else if !seen.insert(n.clone()) {
                    errs.push(FieldError::new(
                        &name_field,
                        format!("`{n}` is named twice in this node"),
                    ));
                    None
                } else {
                    Some(n)
                }
            }),
        };
        let size_gib = size_gib(o.get("size_gib"), &format!("{field}.size_gib"), errs);
        let volume_type = volume_type(o, &field, errs);
        if let (Some(name), Some(size_gib)) = (name, size_gib) {
            out.push(DataVolume {
                name,
                size_gib,
                volume_type,
            });
        }
    }
    (errs.len() == before).then_some(out)
}

fn unique_list<T: Eq + std::hash::Hash + Clone>(
    v: &Value,
    field: &str,
    errs: &mut Vec<FieldError>,
    item: Check<T>,
) -> Option<Vec<T>> {
    let Some(list) = v.as_array() else {
        errs.push(FieldError::new(field, "must be an array"));
        return None;
    };
    let before = errs.len();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, x) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(t) = item(x, &f, errs) {
            if seen.insert(t.clone()) {
                out.push(t);
            } else {
                errs.push(FieldError::new(f, "is listed twice"));
            }
        }
    }
    (errs.len() == before).then_some(out)
}

/// A role becomes the name part of `node-role.kubernetes.io/<role>`.
fn role(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    let s = string(v, field, errs)?;
    check_dns_label(&s)
        .map_err(|m| errs.push(FieldError::new(field, m)))
        .ok()?;
    Some(s)
}

fn labels(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<BTreeMap<String, String>> {
    let Some(o) = v.as_object() else {
        errs.push(FieldError::new(
            field,
            "must be an object of label keys to string values",
        ));
        return None;
    };
    let before = errs.len();
    let mut out = BTreeMap::new();
    for (k, val) in o {
        let f = format!("{field}.{k}");
        if let Err(m) = check_label_key(k) {
            errs.push(FieldError::new(&f, m));
        } else if k.starts_with(ROLE_LABEL_PREFIX) {
            errs.push(FieldError::new(
                &f,
                format!("use `roles` for `{ROLE_LABEL_PREFIX}` labels"),
            ));
        }
        match val.as_str() {
            Some(s) => match check_label_value(s) {
                Ok(()) => {
                    out.insert(k.clone(), s.to_string());
                }
                Err(m) => errs.push(FieldError::new(&f, m)),
            },
            None => errs.push(FieldError::new(&f, "must be a string")),
        }
    }
    (errs.len() == before).then_some(out)
}

fn taints(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<Vec<Taint>> {
    let Some(list) = v.as_array() else {
        errs.push(FieldError::new(
            field,
            "must be an array of {key, value, effect}",
        ));
        return None;
    };
    let before = errs.len();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Some(o) = object(t, &field, &["key", "value", "effect"], errs) else {
            continue;
        };
        let key = match o.get("key").and_then(Value::as_str) {
            Some(k) => check_label_key(k)
                .map(|()| k.to_string())
                .map_err(|m| errs.push(FieldError::new(format!("{field}.key"), m)))
                .ok(),
            None => {
                errs.push(FieldError::new(
                    format!("{field}.key"),
                    "is required (a string)",
                ));
                None
            }
        };
        let value = match o.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match check_label_value(s) {
                Ok(()) => Some(s.clone()),
                Err(m) => {
                    errs.push(FieldError::new(format!("{field}.value"), m));
                    None
                }
            },
            Some(_) => {
                errs.push(FieldError::new(
                    format!("{field}.value"),
                    "must be a string",
                ));
                None
            }
        };
        let effect = match o.get("effect").and_then(Value::as_str) {
            Some("NoSchedule") => Some(TaintEffect::NoSchedule),
            Some("PreferNoSchedule") => Some(TaintEffect::PreferNoSchedule),
            Some("NoExecute") => Some(TaintEffect::NoExecute),
            _ => {
                errs.push(FieldError::new(
                    format!("{field}.effect"),
                    "must be one of: NoSchedule, PreferNoSchedule, NoExecute",
                ));
                None
            }
        };
        if let (Some(key), Some(effect)) = (key, effect) {
            // Kubernetes refuses two taints with the same key and effect.
            if !seen.insert((key.clone(), effect)) {
                errs.push(FieldError::new(
                    &field,
                    format!("a taint `{key}` with effect {effect:?} is listed twice"),
                ));
            }
            out.push(Taint { key, value, effect });
        }
    }
    (errs.len() == before).then_some(out)
}

/// Kubernetes' qualified-name part: 1-63 characters, alphanumeric at both ends, `-_.` inside.
fn check_qualified_name(s: &str) -> Result<(), String> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "`{s}` must be 1-63 characters: letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain of at most 253.
fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || p.split('.').any(|l| check_dns_label(l).is_err()) {
            return Err(format!(
                "label key prefix `{p}` is not a DNS-1123 subdomain"
            ));
        }
    }
    check_qualified_name(name).map_err(|m| format!("label key name: {m}"))
}

/// A label value: empty, or a qualified-name part.
fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    check_qualified_name(v).map_err(|m| format!("label value: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> Value {
        json!({
            "availability_zone": "az1",
            "flavor": "m1.large",
            "image": "ubuntu-22.04-k8s-1.30",
            "ssh_key": "ops",
            "security_groups": ["k8s-workers"],
            "network": "tenant-net",
            "subnet": "tenant-subnet",
            "root_volume": {"size_gib": 50, "type": "ssd"},
            "roles": ["worker"],
        })
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    fn one_error(node: Value) -> FieldError {
        let errs = parse_node(&defaults(), &node, "nodes[2]").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn a_node_inherits_defaults_and_overrides_them_field_by_field() {
        let n = parse_node(
            &defaults(),
            &json!({"name": "ingress-1", "flavor": "m1.xlarge", "ip": "10.6.0.21",
                    "root_volume": {"size_gib": 100}, "roles": ["ingress"]}),
            "nodes[0]",
        )
        .unwrap();
        assert_eq!(n.flavor, "m1.xlarge");
        assert_eq!(n.image, "ubuntu-22.04-k8s-1.30");
        assert_eq!(n.availability_zone.as_deref(), Some("az1"));
        assert_eq!(n.security_groups, vec!["k8s-workers"]);
        assert_eq!(n.ip, Some(Ipv4Addr::new(10, 6, 0, 21)));
        // Nested objects are replaced whole: the default's `type` does not leak in.
        assert_eq!(
            n.root_volume,
            Some(RootVolume {
                size_gib: 100,
                volume_type: None
            })
        );
        assert_eq!(n.roles, vec!["ingress"]);
        assert_eq!(n.floating_ip, FloatingIp::None);
    }

    #[test]
    fn a_null_on_the_node_unsets_the_default() {
        let n = parse_node(
            &defaults(),
            &json!({"name": "w-1", "root_volume": null, "ssh_key": null}),
            "nodes[0]",
        )
        .unwrap();
        assert_eq!((&n.root_volume, &n.ssh_key), (&None, &None));
        assert!(n.volume_names().is_empty());
    }

    #[test]
    fn required_fields_missing_after_defaults_are_named_on_the_node() {
        let errs = parse_node(
            &json!({"flavor": "m1.small"}),
            &json!({"name": "w-1"}),
            "nodes[4]",
        )
        .unwrap_err();
        assert_eq!(
            fields(&errs),
            vec!["nodes[4].image", "nodes[4].network", "nodes[4].subnet"]
        );
        let errs = parse_node(&defaults(), &json!({}), "nodes[0]").unwrap_err();
        assert_eq!(fields(&errs), vec!["nodes[0].name"]);
    }

    // Long, and kept whole: a table, one row per bad field, read top to bottom.
    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!({"name": "W_1"}), "nodes[2].name"),
            (json!({"name": "w-1", "colour": "red"}), "nodes[2].colour"),
            (json!({"name": "w-1", "flavor": ""}), "nodes[2].flavor"),
            (json!({"name": "w-1", "image": 7}), "nodes[2].image"),
            (json!({"name": "w-1", "network": ["a"]}), "nodes[2].network"),
            (json!({"name": "w-1", "subnet": ""}), "nodes[2].subnet"),
            (json!({"name": "w-1", "ssh_key": false}), "nodes[2].ssh_key"),
            (json!({"name": "w-1", "ip": "10.7.0.300"}), "nodes[2].ip"),
            (json!({"name": "w-1", "ip": "127.0.0.1"}), "nodes[2].ip"),
            (json!({"name": "w-1", "ip": "fd00::5"}), "nodes[2].ip"),
            (
                json!({"name": "w-1", "floating_ip": "yes"}),
                "nodes[2].floating_ip",
            ),
            (
                json!({"name": "w-1", "floating_ip": 1}),
                "nodes[2].floating_ip",
            ),
            (
                json!({"name": "w-1", "availability_zone": "az1:cmp-1"}),
                "nodes[2].availability_zone",
            ),
            (
                json!({"name": "w-1", "availability_zone": null, "host": "cmp-1"}),
                "nodes[2].host",
            ),
            (
                json!({"name": "w-1", "security_groups": "k8s"}),
                "nodes[2].security_groups",
            ),
            (
                json!({"name": "w-1", "security_groups": ["a", "a"]}),
                "nodes[2].security_groups[1]",
            ),
            (
                json!({"name": "w-1", "root_volume": {"size_gib": 0}}),
                "nodes[2].root_volume.size_gib",
            ),
            (
                json!({"name": "w-1", "root_volume": {"size_gib": 3000000000u64}}),
                "nodes[2].root_volume.size_gib",
            ),
            (
                json!({"name": "w-1", "root_volume": {"type": "ssd"}}),
                "nodes[2].root_volume.size_gib",
            ),
            (
                json!({"name": "w-1", "root_volume": {"size_gib": 5, "iops": 9}}),
                "nodes[2].root_volume.iops",
            ),
            (
                json!({"name": "w-1", "root_volume": {"size_gib": 5, "type": ""}}),
                "nodes[2].root_volume.type",
            ),
            (
                json!({"name": "w-1", "root_volume": 50}),
                "nodes[2].root_volume",
            ),
            (
                json!({"name": "w-1", "data_volumes": {}}),
                "nodes[2].data_volumes",
            ),
            (
                json!({"name": "w-1", "data_volumes": [{"name": "root", "size_gib": 5}]}),
                "nodes[2].data_volumes[0].name",
            ),
            (
                json!({"name": "w-1", "data_volumes": [{"name": "Logs", "size_gib": 5}]}),
                "nodes[2].data_volumes[0].name",
            ),
            (
                json!({"name": "w-1", "data_volumes": [{"size_gib": 5}]}),
                "nodes[2].data_volumes[0].name",
            ),
            (
                json!({"name": "w-1", "data_volumes": [{"name": "d", "size_gib": 5}, {"name": "d", "size_gib": 6}]}),
                "nodes[2].data_volumes[1].name",
            ),
            (
                json!({"name": "w-1", "data_volumes": [{"name": "d", "size_gib": -1}]}),
                "nodes[2].data_volumes[0].size_gib",
            ),
            (
                json!({"name": "w-1", "roles": ["Ingress"]}),
                "nodes[2].roles[0]",
            ),
            (
                json!({"name": "w-1", "roles": ["ingress", "ingress"]}),
                "nodes[2].roles[1]",
            ),
            (json!({"name": "w-1", "labels": ["a"]}), "nodes[2].labels"),
            (
                json!({"name": "w-1", "labels": {"-bad": "x"}}),
                "nodes[2].labels.-bad",
            ),
            (
                json!({"name": "w-1", "labels": {"Example.com/tier": "x"}}),
                "nodes[2].labels.Example.com/tier",
            ),
            (
                json!({"name": "w-1", "labels": {"tier": "has space"}}),
                "nodes[2].labels.tier",
            ),
            (
                json!({"name": "w-1", "labels": {"tier": 3}}),
                "nodes[2].labels.tier",
            ),
            (
                json!({"name": "w-1", "labels": {"node-role.kubernetes.io/infra": ""}}),
                "nodes[2].labels.node-role.kubernetes.io/infra",
            ),
            (
                json!({"name": "w-1", "taints": [{"key": "dedicated", "effect": "Sometimes"}]}),
                "nodes[2].taints[0].effect",
            ),
            (
                json!({"name": "w-1", "taints": [{"effect": "NoSchedule"}]}),
                "nodes[2].taints[0].key",
            ),
            (
                json!({"name": "w-1", "taints": [{"key": "a", "value": "b c", "effect": "NoSchedule"}]}),
                "nodes[2].taints[0].value",
            ),
            (
                json!({"name": "w-1", "taints": [{"key": "a", "effect": "NoSchedule", "x": 1}]}),
                "nodes[2].taints[0].x",
            ),
            (
                json!({"name": "w-1", "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "value": "v", "effect": "NoSchedule"}]}),
                "nodes[2].taints[1]",
            ),
        ];
        for (node, field) in cases {
            let e = one_error(node.clone());
            assert_eq!(e.field, field, "{node}: {}", e.message);
        }
    }

    #[test]
    fn a_bad_default_is_named_in_defaults_and_reported_once() {
        let mut d = defaults();
        d["flavor"] = json!(42);
        d["name"] = json!("w");
        d["colour"] = json!("red");
        let errs = parse_request_nodes(Some(&d), &[json!({"name": "w-1"}), json!({"name": "w-2"})])
            .unwrap_err();
        assert_eq!(
            fields(&errs),
            vec!["defaults.colour", "defaults.name", "defaults.flavor"]
        );
        // A node that sets the field itself does not inherit the bad default's error.
        let errs = parse_request_nodes(Some(&d), &[json!({"name": "w-1", "flavor": "m1.small"})])
            .unwrap_err();
        assert_eq!(fields(&errs), vec!["defaults.colour", "defaults.name"]);
    }

    #[test]
    fn all_problems_of_all_nodes_come_back_together() {
        let errs = parse_request_nodes(
            Some(&defaults()),
            &[
                json!({"name": "w-1", "ip": "bad"}),
                json!({"name": "w-2", "host": "cmp-1", "availability_zone": null, "taints": 1}),
            ],
        )
        .unwrap_err();
        assert_eq!(
            fields(&errs),
            vec!["nodes[0].ip", "nodes[1].host", "nodes[1].taints"]
        );
    }

    #[test]
    fn names_ips_floating_ips_and_volume_names_are_unique_across_the_job() {
        let errs = parse_request_nodes(
            Some(&defaults()),
            &[
                json!({"name": "w-1", "ip": "10.6.0.21", "floating_ip": "172.24.4.10"}),
                json!({"name": "w-2", "ip": "10.6.0.21"}),
                json!({"name": "w-1", "floating_ip": "172.24.4.10"}),
                // `a` + `b-root` would collide with `a-b`'s root volume `a-b-root`.
                json!({"name": "a-b"}),
                json!({"name": "a", "data_volumes": [{"name": "b-root", "size_gib": 5}]}),
                json!({"name": "w-9", "ip": "10.6.0.22", "floating_ip": true}),
                json!({"name": "w-10", "ip": "10.6.0.23", "floating_ip": true}),
            ],
        )
        .unwrap_err();
        assert_eq!(
            fields(&errs),
            vec![
                "nodes[1].ip",
                "nodes[2].name",
                "nodes[2].floating_ip",
                "nodes[4].data_volumes[0].name"
            ]
        );
        assert!(errs[0].message.contains("nodes[0]"), "{}", errs[0].message);
    }

    #[test]
    fn floating_ip_is_false_true_or_an_address() {
        let fip = |v: Value| {
            parse_node(&defaults(), &json!({"name": "w-1", "floating_ip": v}), "")
                .unwrap()
                .floating_ip
        };
        assert_eq!(fip(json!(false)), FloatingIp::None);
        assert_eq!(fip(json!(true)), FloatingIp::Any);
        assert_eq!(
            fip(json!("172.24.4.10")),
            FloatingIp::Address(Ipv4Addr::new(172, 24, 4, 10))
        );
        let errs = parse_node(
            &defaults(),
            &json!({"name": "w-1", "floating_ip": "0.0.0.0"}),
            "",
        )
        .unwrap_err();
        assert_eq!(fields(&errs), vec!["floating_ip"]);
    }

    fn full() -> NodeSpec {
        parse_node(
            &defaults(),
            &json!({
                "name": "logging-1", "host": "cmp-7", "ip": "10.6.0.31", "floating_ip": "172.24.4.11",
                "data_volumes": [{"name": "logs", "size_gib": 200, "type": "hdd"}, {"name": "wal", "size_gib": 20}],
                "roles": ["logging", "monitoring"],
                "labels": {"node.cluster.x-k8s.io/pool": "logs", "team.node.cluster.x-k8s.io/owner": "obs", "example.com/tier": "gold"},
                "taints": [{"key": "dedicated", "value": "logging", "effect": "NoSchedule"}],
            }),
            "nodes[0]",
        )
        .unwrap()
    }

    #[test]
    fn a_spec_round_trips_through_json_and_back_through_the_parser() {
        let n = full();
        let stored = serde_json::to_value(&n).unwrap();
        assert_eq!(stored["floating_ip"], "172.24.4.11");
        assert_eq!(
            stored["root_volume"],
            json!({"size_gib": 50, "type": "ssd"})
        );
        let back: NodeSpec = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back, n);
        assert_eq!(parse_node(&Value::Null, &stored, "").unwrap(), n);
        // A spec without a floating IP or root volume stores neither and reads back the same.
        let bare = parse_node(
            &defaults(),
            &json!({"name": "w-1", "root_volume": null}),
            "",
        )
        .unwrap();
        let v = serde_json::to_value(&bare).unwrap();
        assert!(v.get("floating_ip").is_none() && v.get("root_volume").is_none());
        assert_eq!(serde_json::from_value::<NodeSpec>(v).unwrap(), bare);
    }

    /// A stored spec read back by a step (`serde`, no defaults to fill): each row changes
    /// one field of a full stored spec and says whether it still reads, and as what.
    #[test]
    fn a_stored_spec_reads_back_field_by_field() {
        let base = serde_json::to_value(full()).unwrap();
        // (story, field, stored value (null: absent), what it writes back as, or None when
        // it does not read)
        let rows: Vec<(&str, &str, Value, Option<Value>)> = vec![
            (
                "floating IP true",
                "floating_ip",
                json!(true),
                Some(json!(true)),
            ),
            (
                "floating IP false is no floating IP",
                "floating_ip",
                json!(false),
                Some(Value::Null),
            ),
            (
                "floating IP as an address",
                "floating_ip",
                json!("172.24.4.12"),
                Some(json!("172.24.4.12")),
            ),
            (
                "floating IP not an address",
                "floating_ip",
                json!("nope"),
                None,
            ),
            (
                "no root volume",
                "root_volume",
                Value::Null,
                Some(Value::Null),
            ),
            (
                "a root volume without a type",
                "root_volume",
                json!({"size_gib": 20}),
                Some(json!({"size_gib": 20})),
            ),
            (
                "a root volume with an unknown field",
                "root_volume",
                json!({"size_gib": 20, "iops": 3}),
                None,
            ),
            (
                "a taint with an unknown effect",
                "taints",
                json!([{"key": "k", "effect": "Sometimes"}]),
                None,
            ),
            ("an IP that is not one", "ip", json!("10.6.0.300"), None),
            ("a name of the wrong type", "name", json!(7), None),
            ("no flavor", "flavor", Value::Null, None),
        ];
        for (story, field, value, written) in rows {
            let mut stored = base.clone();
            if value.is_null() {
                stored.as_object_mut().unwrap().remove(field);
            } else {
                stored[field] = value;
            }
            let back = serde_json::from_value::<NodeSpec>(stored)
                .map(|n| serde_json::to_value(&n).unwrap()[field].clone());
            assert_eq!(back.as_ref().ok(), written.as_ref(), "{story}: {back:?}");
        }
    }

    /// Which labels CAPI syncs from the Machine to the Node (put on the Machine) and which
    /// Capstan patches onto the Node after it joins.
    #[test]
    fn labels_in_capis_synced_domain_go_on_the_machine_the_rest_on_the_node() {
        let rows = [
            ("node.cluster.x-k8s.io/pool", true),
            ("team.node.cluster.x-k8s.io/owner", true),
            ("node.cluster.x-k8s.io", false),
            ("evilnode.cluster.x-k8s.io/x", false),
            ("cluster.x-k8s.io/pool", false),
            ("example.com/tier", false),
            ("tier", false),
        ];
        for (key, synced) in rows {
            assert_eq!(is_synced_label(key), synced, "{key}");
        }
    }

    #[test]
    fn an_amend_is_a_merge_patch_on_the_stored_spec_then_parsed_again() {
        let mut stored = serde_json::to_value(full()).unwrap();
        crate::store::merge_patch(
            &mut stored,
            &json!({"ip": "10.6.0.40", "host": null, "root_volume": {"size_gib": 80}}),
        );
        let n = parse_node(&Value::Null, &stored, "nodes[0]").unwrap();
        assert_eq!(n.ip, Some(Ipv4Addr::new(10, 6, 0, 40)));
        assert_eq!(n.failure_domain().as_deref(), Some("az1"));
        assert_eq!(n.root_volume.map(|r| r.size_gib), Some(80));

        let mut bad = serde_json::to_value(full()).unwrap();
        crate::store::merge_patch(&mut bad, &json!({"availability_zone": null}));
        let errs = parse_node(&Value::Null, &bad, "nodes[0]").unwrap_err();
        assert_eq!(fields(&errs), vec!["nodes[0].host"]);
        // The JSON form is strict too: an unknown field is refused on read.
        let mut odd = serde_json::to_value(full()).unwrap();
        odd["colour"] = json!("red");
        assert!(serde_json::from_value::<NodeSpec>(odd).is_err());
    }

    #[test]
    fn helpers_give_the_names_and_labels_capo_and_capi_use() {
        let n = full();
        assert_eq!(n.failure_domain().as_deref(), Some("az1:cmp-7"));
        assert_eq!(
            n.volume_names(),
            vec!["logging-1-root", "logging-1-logs", "logging-1-wal"]
        );
        assert_eq!(n.port_name(), "logging-1-0");
        let machine: Vec<(String, String)> = n.machine_labels().into_iter().collect();
        assert_eq!(
            machine,
            vec![
                ("node-role.kubernetes.io/logging".into(), String::new()),
                ("node-role.kubernetes.io/monitoring".into(), String::new()),
                ("node.cluster.x-k8s.io/pool".into(), "logs".into()),
                ("team.node.cluster.x-k8s.io/owner".into(), "obs".into()),
            ]
        );
        let node: Vec<(String, String)> = n.node_labels().into_iter().collect();
        assert_eq!(node, vec![("example.com/tier".into(), "gold".into())]);
        let mut no_az = n.clone();
        no_az.availability_zone = None;
        no_az.host = None;
        assert_eq!(no_az.failure_domain(), None);
    }

    #[test]
    fn a_bare_name_is_a_node_that_takes_every_default() {
        let specs = parse_request_nodes(Some(&defaults()), &[json!("w-1"), json!({"name": "w-2"})])
            .unwrap();
        assert_eq!(specs[0].flavor, specs[1].flavor);
        assert_eq!(specs[0].name, "w-1");
        assert!(parse_request_nodes(None, &[json!("w-1")]).is_err());
    }
}

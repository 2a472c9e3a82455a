//! `scale_out`'s preflight: every node checked against the cluster and its cloud before
//! anything is created, every problem reported at once. What the cloud offers is read once
//! (`Offer::read`); each rule is then a pure check of one node against it; quota headroom is
//! checked for the whole job last.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::admission::ScaleOutParams;
use crate::cloud::Clients;
use crate::cloud::os::{CallError, OpenStack, Service};
use crate::engine::admission::Refusal;
use crate::engine::request::{FieldError, JobRequest};
use crate::ipv4::Cidr;
use crate::lifecycle::admission::{cluster_os, field, names, read, unavailable};
use crate::lifecycle::params;
use crate::lifecycle::quota::{self, Need};
use crate::lifecycle::spec::{FloatingIp, NodeSpec};

fn kube_unavailable(e: kube::Error) -> Refusal {
    Refusal::Unavailable(format!("preflight could not read the cluster: {e}"))
}

/// Checks every node against the cloud, reporting every problem at once.
pub(crate) async fn preflight(c: &Clients, req: &mut JobRequest) -> Result<(), Refusal> {
    let specs: Vec<NodeSpec> = req
        .nodes
        .iter()
        .map(|(_, v)| serde_json::from_value(v.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| Refusal::Invalid(vec![FieldError::new("nodes", e.to_string())]))?;
    let cref = req.cluster.clone();
    let os = &cluster_os(c, &cref).await?;
    let mut errs = check_cluster(c, req).await?;
    let offer = Offer::read(os, &specs).await?;
    let machines = c.capi().await.map_err(kube_unavailable)?.machines(&cref.ns);
    let mut total = Need::default();
    for (i, s) in specs.iter().enumerate() {
        if machines
            .get_opt(&s.name)
            .await
            .map_err(kube_unavailable)?
            .is_some()
        {
            errs.push(FieldError::new(
                field(i, "name"),
                format!("a Machine named {} already exists in {}", s.name, cref.ns),
            ));
        }
        errs.extend(check_server_name(i, s, &offer));
        errs.extend(check_flavor_and_image(i, s, &offer));
        errs.extend(check_network(i, s, &offer));
        errs.extend(check_zone(i, s, &offer));
        errs.extend(check_host(i, s, &offer)?);
        if let Some(k) = &offer.keypairs {
            errs.extend(check_keypair(i, s, k));
        }
        if let Some(g) = &offer.groups {
            errs.extend(check_security_groups(i, s, g, &os.project_id));
        }
        errs.extend(check_volumes(i, s, &offer));
        errs.extend(check_floating_ip(i, s, &offer));
        total.add(&Need::with_flavor(s, offer.flavor(&s.flavor)));
    }
    if !errs.is_empty() {
        return Err(Refusal::Invalid(errs));
    }
    check_quota(os, req, &total).await
}

/// The cluster exists, and so does the Secret with its workers' bootstrap data (a missing
/// Secret is reported with the nodes' problems; a missing cluster alone).
async fn check_cluster(c: &Clients, req: &JobRequest) -> Result<Vec<FieldError>, Refusal> {
    let (ns, cluster) = (&req.cluster.ns, &req.cluster.name);
    let capi = c.capi().await.map_err(kube_unavailable)?;
    let found = capi
        .clusters(ns)
        .get_opt(cluster)
        .await
        .map_err(kube_unavailable)?;
    if found.is_none() {
        return Err(Refusal::Invalid(vec![FieldError::new(
            "cluster",
            format!("no CAPI Cluster {ns}/{cluster}"),
        )]));
    }
    let own = params::read::<ScaleOutParams>(&req.params).map_err(Refusal::Invalid)?;
    let bootstrap = own
        .bootstrap_secret
        .map_or_else(|| format!("{cluster}-bootstrap"), |s| s.0);
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.kube.clone(), ns);
    let mut errs = Vec::new();
    if secrets
        .get_opt(&bootstrap)
        .await
        .map_err(kube_unavailable)?
        .is_none()
    {
        errs.push(FieldError::new(
            "bootstrap_secret",
            format!("Secret {ns}/{bootstrap} with the workers' bootstrap data does not exist"),
        ));
    }
    Ok(errs)
}

/// What the cloud offers to the cluster's project, read once for all nodes.
struct Offer {
    flavors: Value,
    images: Value,
    networks: Value,
    subnets: Value,
    types: Value,
    server_names: HashSet<String>,
    zone_names: HashSet<String>,
    /// Which hosts each zone has, as `(zone, host)`; read only when a node pins a host.
    zone_hosts: Vec<(String, String)>,
    /// The hypervisor list (admin-only), read only when a node pins a host.
    hypervisors: Option<Result<Value, CallError>>,
    /// The OpenStack user's keypairs, read only when a node names one.
    keypairs: Option<Value>,
    /// The security groups, read only when a node names one.
    groups: Option<Value>,
    /// Addresses in use, as `(subnet ID, address)`.
    taken: HashSet<(String, String)>,
    /// Floating IP addresses allocated.
    fip_taken: HashSet<String>,
    /// Where floating IPs come from: the external networks' subnets, as `(name, CIDR)`.
    external_cidrs: Vec<(String, String)>,
}

impl Offer {
    async fn read(os: &OpenStack, specs: &[NodeSpec]) -> Result<Offer, Refusal> {
        let flavors = read(os, Service::Compute, &["flavors", "detail"], "flavors").await?;
        let images = read(os, Service::Image, &["images"], "images").await?;
        let networks = read(os, Service::Network, &["networks"], "networks").await?;
        let subnets = read(os, Service::Network, &["subnets"], "subnets").await?;
        let ports = read(os, Service::Network, &["ports"], "ports").await?;
        let fips = read(os, Service::Network, &["floatingips"], "floating IPs").await?;
        let types = read(os, Service::BlockStorage, &["types"], "volume types").await?;
        let zones = read(
            os,
            Service::Compute,
            &["os-availability-zone"],
            "availability zones",
        )
        .await?;
        let servers = read(os, Service::Compute, &["servers"], "servers").await?;
        let wants_host = specs.iter().any(|s| s.host.is_some());
        let hypervisors = if wants_host {
            Some(
                os.get(Service::Compute, &["os-hypervisors", "detail"], &[])
                    .await,
            )
        } else {
            None
        };
        let zone_hosts = if wants_host {
            zone_hosts(os).await
        } else {
            Vec::new()
        };
        // A keypair belongs to the OpenStack user, a security group to the project: each is
        // read only when a node names one.
        let keypairs = if specs.iter().any(|s| s.ssh_key.is_some()) {
            Some(read(os, Service::Compute, &["os-keypairs"], "keypairs").await?)
        } else {
            None
        };
        let groups = if specs.iter().any(|s| !s.security_groups.is_empty()) {
            Some(
                os.get(Service::Network, &["security-groups"], &[])
                    .await
                    .map_err(|e| unavailable("security groups", e))?,
            )
        } else {
            None
        };
        let owned = |set: HashSet<&str>| set.into_iter().map(str::to_string).collect();
        let external_cidrs = external_cidrs(&networks, &subnets);
        Ok(Offer {
            server_names: owned(names(&servers, "servers")),
            zone_names: owned(zone_names(&zones)),
            fip_taken: owned(floating_addresses(&fips)),
            flavors,
            images,
            networks,
            subnets,
            types,
            zone_hosts,
            hypervisors,
            keypairs,
            groups,
            taken: addresses_in_use(&ports),
            external_cidrs,
        })
    }

    fn named<'a>(list: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
        list[key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == name)
    }

    fn flavor(&self, name: &str) -> Option<&Value> {
        Offer::named(&self.flavors, "flavors", name)
    }

    fn image(&self, name: &str) -> Option<&Value> {
        Offer::named(&self.images, "images", name)
    }

    fn volume_type(&self, name: &str) -> bool {
        Offer::named(&self.types, "volume_types", name).is_some()
    }
}

/// Which hosts each zone has (admin-only, like pinning itself). Real Nova accepts
/// `az1:compute-3` for a host of az2 and places the server in az2: `check_host` refuses it.
async fn zone_hosts(os: &OpenStack) -> Vec<(String, String)> {
    os.get(Service::Compute, &["os-availability-zone", "detail"], &[])
        .await
        .map(|d| {
            d["availabilityZoneInfo"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|z| {
                    let zone = z["zoneName"].as_str().unwrap_or_default().to_string();
                    z["hosts"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, services)| services.get("nova-compute").is_some())
                        .map(move |(h, _)| (zone.clone(), h.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The subnets of the external networks, as `(name, CIDR)`.
/// The availability zones' names.
fn zone_names(zones: &Value) -> HashSet<&str> {
    zones["availabilityZoneInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| z["zoneName"].as_str())
        .collect()
}

/// Addresses in use, per subnet, as `(subnet ID, address)`: credentials with the admin
/// role list every project's ports, and two projects may well use the same range.
fn addresses_in_use(ports: &Value) -> HashSet<(String, String)> {
    ports["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
        .filter_map(|ip| {
            Some((
                ip["subnet_id"].as_str()?.to_string(),
                ip["ip_address"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The floating IP addresses allocated.
fn floating_addresses(fips: &Value) -> HashSet<&str> {
    fips["floatingips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["floating_ip_address"].as_str())
        .collect()
}

fn external_cidrs(networks: &Value, subnets: &Value) -> Vec<(String, String)> {
    let external_ids: HashSet<&str> = networks["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["router:external"] == true)
        .filter_map(|n| n["id"].as_str())
        .collect();
    subnets["subnets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["network_id"]
                .as_str()
                .is_some_and(|n| external_ids.contains(n))
        })
        .filter_map(|s| Some((s["name"].as_str()?.into(), s["cidr"].as_str()?.into())))
        .collect()
}

/// No Nova server of the project has the node's name already.
fn check_server_name(i: usize, s: &NodeSpec, offer: &Offer) -> Option<FieldError> {
    offer.server_names.contains(&s.name).then(|| {
        FieldError::new(
            field(i, "name"),
            format!(
                "a Nova server named {} already exists in the project",
                s.name
            ),
        )
    })
}

fn check_flavor_and_image(i: usize, s: &NodeSpec, offer: &Offer) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if offer.flavor(&s.flavor).is_none() {
        errs.push(FieldError::new(
            field(i, "flavor"),
            format!("flavor {} does not exist", s.flavor),
        ));
    }
    if offer.image(&s.image).is_none() {
        errs.push(FieldError::new(
            field(i, "image"),
            format!("image {} does not exist", s.image),
        ));
    }
    errs
}

/// The network and subnet exist, the subnet is on the network, and a fixed IP is inside
/// the subnet and free.
fn check_network(i: usize, s: &NodeSpec, offer: &Offer) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let network = Offer::named(&offer.networks, "networks", &s.network);
    if network.is_none() {
        errs.push(FieldError::new(
            field(i, "network"),
            format!("network {} does not exist", s.network),
        ));
    }
    let subnet = Offer::named(&offer.subnets, "subnets", &s.subnet);
    match (subnet, network) {
        (None, _) => errs.push(FieldError::new(
            field(i, "subnet"),
            format!("subnet {} does not exist", s.subnet),
        )),
        (Some(sub), Some(net)) if sub["network_id"] != net["id"] => errs.push(FieldError::new(
            field(i, "subnet"),
            format!("subnet {} is not on network {}", s.subnet, s.network),
        )),
        (Some(sub), _) => {
            if let Some(ip) = s.ip {
                let cidr = sub["cidr"].as_str().unwrap_or_default();
                match Cidr::parse(cidr) {
                    Ok(c) if !c.contains_str(&ip.to_string()) => errs.push(FieldError::new(
                        field(i, "ip"),
                        format!("{ip} is outside subnet {} ({cidr})", s.subnet),
                    )),
                    _ => {}
                }
                let subnet_id = sub["id"].as_str().unwrap_or_default().to_string();
                if offer.taken.contains(&(subnet_id, ip.to_string())) {
                    errs.push(FieldError::new(
                        field(i, "ip"),
                        format!("{ip} is already allocated in subnet {}", s.subnet),
                    ));
                }
            }
        }
    }
    errs
}

fn check_zone(i: usize, s: &NodeSpec, offer: &Offer) -> Option<FieldError> {
    let az = s.availability_zone.as_ref()?;
    (!offer.zone_names.contains(az)).then(|| {
        FieldError::new(
            field(i, "availability_zone"),
            format!("availability zone {az} does not exist"),
        )
    })
}

/// A pinned host is a known compute host, in the node's zone; pinning needs credentials
/// that may read the hypervisor list (a hypervisor list that cannot be read for another
/// reason is a 503).
fn check_host(i: usize, s: &NodeSpec, offer: &Offer) -> Result<Option<FieldError>, Refusal> {
    let (Some(host), Some(hypervisors)) = (&s.host, &offer.hypervisors) else {
        return Ok(None);
    };
    let h = match hypervisors {
        Ok(h) => h,
        Err(e) if e.status == 403 => {
            return Ok(Some(FieldError::new(
                field(i, "host"),
                "pinning a compute host needs credentials with the admin role; these cannot read the hypervisor list",
            )));
        }
        Err(e) => {
            return Err(Refusal::Unavailable(format!(
                "preflight could not read hypervisors: {e}"
            )));
        }
    };
    let known = h["hypervisors"].as_array().into_iter().flatten().any(|x| {
        x["hypervisor_hostname"] == host.as_str() || x["service"]["host"] == host.as_str()
    });
    if !known {
        return Ok(Some(FieldError::new(
            field(i, "host"),
            format!("compute host {host} is not in the hypervisor list"),
        )));
    }
    if let Some(az) = &s.availability_zone
        && offer.zone_names.contains(az)
        && let Some((zone, _)) = offer.zone_hosts.iter().find(|(_, h)| h == host)
        && zone != az
    {
        return Ok(Some(FieldError::new(
            field(i, "host"),
            format!("compute host {host} is in availability zone {zone}, not {az}"),
        )));
    }
    Ok(None)
}

/// The node's keypair exists for the cluster's OpenStack user (keypairs belong to users; Nova
/// refuses a server with an unknown `key_name`: 400 "Invalid key_name provided.").
fn check_keypair(i: usize, s: &NodeSpec, listed: &Value) -> Option<FieldError> {
    let key = s.ssh_key.as_deref()?;
    let known = listed["keypairs"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k["keypair"]["name"] == key);
    (!known).then(|| {
        FieldError::new(
            field(i, "ssh_key"),
            format!("keypair {key} does not exist for the cluster's OpenStack user"),
        )
    })
}

/// Each of the node's security groups is one the cluster's project can use, by name (the
/// OpenStackMachine asks CAPO for them by a name filter): its own, or one shared with it
/// (Neutron RBAC marks those `shared`). Another project's group, which credentials with the
/// admin role also list, does not count. CAPO looks them up before it makes the node's
/// ports and stops, with no server, at the first it cannot find.
fn check_security_groups(
    i: usize,
    s: &NodeSpec,
    listed: &Value,
    project_id: &str,
) -> Vec<FieldError> {
    let names: HashSet<&str> = listed["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["project_id"] == project_id || g["shared"] == true)
        .filter_map(|g| g["name"].as_str())
        .collect();
    s.security_groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !names.contains(g.as_str()))
        .map(|(j, g)| {
            FieldError::new(
                field(i, &format!("security_groups[{j}]")),
                format!("security group {g} does not exist in the project"),
            )
        })
        .collect()
}

/// The root volume is at least the image's `min_disk` (Cinder refuses a smaller one: 400),
/// and every volume type exists.
fn check_volumes(i: usize, s: &NodeSpec, offer: &Offer) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let min_disk = offer
        .image(&s.image)
        .and_then(|x| x["min_disk"].as_u64())
        .unwrap_or(0);
    if let Some(r) = &s.root_volume
        && u64::from(r.size_gib) < min_disk
    {
        errs.push(FieldError::new(
            field(i, "root_volume.size_gib"),
            format!(
                "{} GiB is smaller than image {}'s min_disk of {min_disk} GiB",
                r.size_gib, s.image
            ),
        ));
    }
    if let Some(r) = &s.root_volume
        && let Some(t) = &r.volume_type
        && !offer.volume_type(t)
    {
        errs.push(FieldError::new(
            field(i, "root_volume.type"),
            format!("volume type {t} does not exist"),
        ));
    }
    for (j, d) in s.data_volumes.iter().enumerate() {
        if let Some(t) = &d.volume_type
            && !offer.volume_type(t)
        {
            errs.push(FieldError::new(
                field(i, &format!("data_volumes[{j}].type")),
                format!("volume type {t} does not exist"),
            ));
        }
    }
    errs
}

/// A floating IP asked for by address is free and in a subnet of an external network.
fn check_floating_ip(i: usize, s: &NodeSpec, offer: &Offer) -> Option<FieldError> {
    let FloatingIp::Address(a) = &s.floating_ip else {
        return None;
    };
    let address = a.to_string();
    if offer.fip_taken.contains(&address) {
        return Some(FieldError::new(
            field(i, "floating_ip"),
            format!("floating IP {a} is already allocated"),
        ));
    }
    let inside = offer
        .external_cidrs
        .iter()
        .any(|(_, c)| Cidr::parse(c).is_ok_and(|c| c.contains_str(&address)));
    if inside {
        return None;
    }
    let known: Vec<String> = offer
        .external_cidrs
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    Some(FieldError::new(
        field(i, "floating_ip"),
        format!(
            "{a} is in no subnet of an external network ({})",
            known.join(", ")
        ),
    ))
}

/// Quota headroom for the whole job: short is a 409 under `require_quota`, else recorded in
/// params (`quota_short_at_submit`) and waited for.
async fn check_quota(os: &OpenStack, req: &mut JobRequest, total: &Need) -> Result<(), Refusal> {
    let usage = quota::read(os)
        .await
        .map_err(|e| unavailable("quotas", e))?;
    let short = usage.short_for(total);
    if short.is_empty() {
        return Ok(());
    }
    let own = params::read::<ScaleOutParams>(&req.params).map_err(Refusal::Invalid)?;
    if own.require_quota.is_some_and(|f| f.0) {
        return Err(Refusal::Conflict(
            short
                .into_iter()
                .map(|s| FieldError::new("quota", s))
                .collect(),
        ));
    }
    if let Some(p) = req.params.as_object_mut() {
        p.insert("quota_short_at_submit".into(), json!(short));
    }
    Ok(())
}

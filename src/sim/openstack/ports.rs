//! Neutron ports, floating IPs and quotas: the addresses a node takes, checked as Neutron
//! checks them (IP inside the subnet, not taken, quota) and failing with Neutron's own codes
//! and texts.

use std::net::Ipv4Addr;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Cloud, FloatingIp, Pairs, Port, Shared, Token, neutron_error, neutron_listed, now_rfc3339,
    page, param, position_owned,
};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2.0/ports", get(list_ports).post(create_port))
        .route(
            "/v2.0/ports/{id}",
            get(show_port).put(update_port).delete(delete_port),
        )
        .route(
            "/v2.0/ports/{id}/tags",
            get(port_tags).put(replace_port_tags),
        )
        .route("/v2.0/ports/{id}/tags/{tag}", put(add_port_tag))
        .route("/v2.0/floatingips", get(list_fips).post(create_fip))
        .route(
            "/v2.0/floatingips/{id}",
            put(update_fip).get(show_fip).delete(delete_fip),
        )
        .route("/v2.0/quotas/{project}", get(quota))
        .route("/v2.0/quotas/{project}/details", get(quota_details))
}

/// A port as Neutron shows it. The binding's details (`binding:host_id`, `:profile`,
/// `:vif_type`, `:vif_details`) are admin-only in Neutron's default policy.
pub(super) fn port_json(p: &Port, admin: bool) -> Value {
    let ips: Vec<Value> = p
        .fixed_ips
        .iter()
        .map(|(s, ip)| json!({ "subnet_id": s, "ip_address": ip.to_string() }))
        .collect();
    let mut v = json!({
        "id": p.id, "name": p.name, "network_id": p.network_id, "mac_address": p.mac,
        "admin_state_up": true, "status": if p.device_id.is_empty() { "DOWN" } else { "ACTIVE" },
        "fixed_ips": ips, "device_id": p.device_id, "device_owner": p.device_owner,
        "project_id": p.project_id, "tenant_id": p.project_id, "security_groups": p.security_groups,
        "binding:vnic_type": "normal", "port_security_enabled": true, "extra_dhcp_opts": [],
        "allowed_address_pairs": [], "description": p.description, "tags": p.tags,
        "revision_number": 1, "created_at": p.created, "updated_at": p.created,
    });
    if admin {
        let bound = !p.binding_host.is_empty();
        v["binding:host_id"] = json!(p.binding_host);
        v["binding:profile"] = json!({});
        v["binding:vif_type"] = json!(if bound { "ovs" } else { "unbound" });
        v["binding:vif_details"] = if bound {
            json!({ "port_filter": true, "connectivity": "l2" })
        } else {
            json!({})
        };
    }
    v
}

/// A floating IP as Neutron shows it, with `port_details` of the port it is associated with.
pub(super) fn fip_json(c: &Cloud, f: &FloatingIp) -> Value {
    let port_details = f
        .port_id
        .as_ref()
        .and_then(|id| c.ports.iter().find(|p| &p.id == id))
        .map(|p| {
            json!({ "name": p.name, "network_id": p.network_id, "mac_address": p.mac,
                    "admin_state_up": true, "status": if p.device_id.is_empty() { "DOWN" } else { "ACTIVE" },
                    "device_id": p.device_id, "device_owner": p.device_owner })
        });
    json!({
        "id": f.id, "floating_ip_address": f.address.to_string(), "floating_network_id": f.floating_network_id,
        "port_id": f.port_id, "fixed_ip_address": f.fixed_ip.map(|i| i.to_string()), "router_id": null,
        "status": if f.port_id.is_some() { "ACTIVE" } else { "DOWN" },
        "project_id": f.project_id, "tenant_id": f.project_id, "description": f.description,
        "port_details": port_details, "tags": [], "revision_number": 0,
        "created_at": f.created, "updated_at": f.created,
    })
}

/// Addresses in use on a subnet: ports' fixed IPs, floating IPs and the gateway.
fn taken(c: &Cloud, subnet_id: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = c
        .ports
        .iter()
        .flat_map(|p| {
            p.fixed_ips
                .iter()
                .filter(|(s, _)| s == subnet_id)
                .map(|(_, ip)| *ip)
        })
        .collect();
    if let Some(s) = c.subnets.iter().find(|s| s.id == subnet_id) {
        out.extend(
            c.floating_ips
                .iter()
                .filter(|f| s.cidr.contains(f.address))
                .map(|f| f.address),
        );
        out.extend(
            s.gateway
                .as_deref()
                .and_then(|g| g.parse::<Ipv4Addr>().ok()),
        );
    }
    out
}

/// A Neutron error on its way to the client.
pub(super) struct Fault {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        neutron_error(self.status, self.kind, &self.message)
    }
}

/// Takes `wanted` on the subnet, or the first free address; the error is Neutron's.
pub(super) fn allocate(
    c: &Cloud,
    subnet_id: &str,
    wanted: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, Fault> {
    let subnet = c
        .subnets
        .iter()
        .find(|s| s.id == subnet_id)
        .expect("caller checked the subnet");
    let used = taken(c, subnet_id);
    match wanted {
        Some(ip) if !subnet.cidr.contains(ip) => Err(Fault {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidIpForSubnet",
            message: format!("IP address {ip} is not a valid IP for the specified subnet."),
        }),
        Some(ip) if used.contains(&ip) => Err(Fault {
            status: StatusCode::CONFLICT,
            kind: "IpAddressAlreadyAllocated",
            message: format!("IP address {ip} already allocated in subnet {subnet_id}"),
        }),
        Some(ip) => Ok(ip),
        None => {
            let (first, last) = subnet.cidr.hosts();
            (u32::from(first)..=u32::from(last))
                .map(Ipv4Addr::from)
                .find(|ip| !used.contains(ip))
                .ok_or_else(|| Fault {
                    status: StatusCode::CONFLICT,
                    kind: "IpAddressGenerationFailure",
                    message: format!(
                        "No more IP addresses available on network {}.",
                        subnet.network_id
                    ),
                })
        }
    }
}

/// A MAC address in OpenStack's `fa:16:3e` range.
pub(super) fn new_mac(rng: &mut fastrand::Rng) -> String {
    let b = rng.u32(..).to_be_bytes();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

fn over_quota(resource: &str) -> Response {
    neutron_error(
        StatusCode::CONFLICT,
        "OverQuota",
        &format!("Quota exceeded for resources: ['{resource}']."),
    )
}

fn bad_request(message: &str) -> Response {
    neutron_error(StatusCode::BAD_REQUEST, "HTTPBadRequest", message)
}

/// Neutron's floating IP 404 is the one without a full stop.
fn fip_not_found(id: &str) -> Response {
    neutron_error(
        StatusCode::NOT_FOUND,
        "FloatingIPNotFound",
        &format!("Floating IP {id} could not be found"),
    )
}

fn neutron_not_found(kind: &str, what: &str, id: &str) -> Response {
    neutron_error(
        StatusCode::NOT_FOUND,
        kind,
        &format!("{what} {id} could not be found."),
    )
}

async fn create_port(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Json(body): Json<Value>,
) -> Response {
    let req = &body["port"];
    let Some(network_id) = req["network_id"].as_str() else {
        return bad_request(
            "Failed to parse request. Required attribute 'network_id' not specified",
        );
    };
    let mut c = cloud.lock().unwrap();
    if !c.networks.iter().any(|n| {
        n.id == network_id && (n.external || n.project_id.as_deref() == Some(&t.project_id))
    }) {
        return neutron_not_found("NetworkNotFound", "Network", network_id);
    }
    let limit = c
        .project(&t.project_id)
        .map(|p| p.quotas.ports)
        .unwrap_or(0);
    if c.ports
        .iter()
        .filter(|p| p.project_id == t.project_id)
        .count() as i64
        >= limit
    {
        return over_quota("port");
    }
    let requested: Vec<Value> = req["fixed_ips"].as_array().cloned().unwrap_or_default();
    let requested = if requested.is_empty() {
        vec![json!({})]
    } else {
        requested
    };
    let mut fixed = Vec::new();
    for r in &requested {
        let wanted = match r["ip_address"].as_str() {
            Some(a) => match a.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return bad_request(&format!(
                        "Invalid input for ip_address. Reason: '{a}' is not a valid IP address."
                    ));
                }
            },
            None => None,
        };
        let subnet_id = match r["subnet_id"].as_str() {
            Some(s) => match c.subnets.iter().find(|x| x.id == s) {
                Some(sub) if sub.network_id == network_id => s.to_string(),
                Some(_) => {
                    return bad_request(&format!("Subnet {s} is not on network {network_id}."));
                }
                None => return neutron_not_found("SubnetNotFound", "Subnet", s),
            },
            // No subnet given: the one whose range holds the IP, else the network's first.
            None => {
                let on_net = c.subnets.iter().filter(|s| s.network_id == network_id);
                match on_net
                    .clone()
                    .find(|s| wanted.is_some_and(|ip| s.cidr.contains(ip)))
                    .or(on_net.clone().next())
                {
                    Some(s) => s.id.clone(),
                    None => return bad_request(&format!("Network {network_id} has no subnet.")),
                }
            }
        };
        match allocate(&c, &subnet_id, wanted) {
            Ok(ip) => fixed.push((subnet_id, ip)),
            Err(fault) => return fault.into_response(),
        }
    }
    // The groups asked for (IDs, each the project's), else the project's `default`.
    let security_groups = match req["security_groups"].as_array() {
        Some(wanted) => {
            let mut ids = Vec::new();
            for w in wanted.iter().filter_map(Value::as_str) {
                match c.security_group_id(&t.project_id, w).filter(|id| id == w) {
                    Some(id) => ids.push(id),
                    None => {
                        return neutron_error(
                            StatusCode::NOT_FOUND,
                            "SecurityGroupNotFound",
                            &format!("Security group {w} does not exist"),
                        );
                    }
                }
            }
            ids
        }
        None => c
            .security_group_id(&t.project_id, "default")
            .into_iter()
            .collect(),
    };
    let port = Port {
        id: c.new_id(),
        name: req["name"].as_str().unwrap_or_default().to_string(),
        network_id: network_id.to_string(),
        project_id: t.project_id.clone(),
        fixed_ips: fixed,
        mac: new_mac(&mut c.rng),
        device_id: req["device_id"].as_str().unwrap_or_default().to_string(),
        device_owner: req["device_owner"].as_str().unwrap_or_default().to_string(),
        binding_host: String::new(),
        description: req["description"].as_str().unwrap_or_default().to_string(),
        tags: Vec::new(),
        security_groups,
        created: now_rfc3339(),
    };
    let view = port_json(&port, t.is_admin());
    c.ports.push(port);
    (StatusCode::CREATED, Json(json!({ "port": view }))).into_response()
}

async fn list_ports(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .ports
        .iter()
        .filter(|p| neutron_listed(&t, &p.project_id, &q))
        .filter(|p| tags_match(&p.tags, &q))
        .filter(|p| {
            // `fixed_ips=ip_address=…` / `fixed_ips=subnet_id=…`, each given must match.
            q.iter().filter(|(k, _)| k == "fixed_ips").all(|(_, v)| {
                let (key, want) = v.split_once('=').unwrap_or(("", v));
                p.fixed_ips.iter().any(|(s, ip)| match key {
                    "ip_address" => ip.to_string() == want,
                    "subnet_id" => s == want,
                    _ => false,
                })
            })
        })
        .map(|p| port_json(p, t.is_admin()))
        .collect();
    // Neutron filters a list on any of its attributes.
    let items = super::network::filtered(
        items,
        &q,
        &[
            "id",
            "name",
            "network_id",
            "device_id",
            "device_owner",
            "mac_address",
            "status",
            "description",
        ],
    );
    Json(json!({ "ports": page(items, &q) }))
}

/// Neutron's tag filters: `tags` (all of), `tags-any`, `not-tags`, `not-tags-any`, each a
/// comma-separated list.
pub(super) fn tags_match(tags: &[String], q: &[(String, String)]) -> bool {
    let list = |k: &str| -> Option<Vec<&str>> { param(q, k).map(|v| v.split(',').collect()) };
    let has = |t: &&str| tags.iter().any(|x| x == t);
    list("tags").is_none_or(|w| w.iter().all(has))
        && list("tags-any").is_none_or(|w| w.iter().any(has))
        && list("not-tags").is_none_or(|w| !w.iter().all(has))
        && list("not-tags-any").is_none_or(|w| !w.iter().any(has))
}

/// `PUT /v2.0/ports/{id}`: name, description and the device it is bound to.
async fn update_port(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Malformed request body",
        );
    };
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.ports, &id, &t) else {
        return neutron_not_found("PortNotFound", "Port", &id);
    };
    let u = &body["port"];
    let p = &mut c.ports[i];
    if let Some(n) = u["name"].as_str() {
        p.name = n.to_string();
    }
    if let Some(d) = u["description"].as_str() {
        p.description = d.to_string();
    }
    if let Some(d) = u["device_id"].as_str() {
        p.device_id = d.to_string();
    }
    if let Some(d) = u["device_owner"].as_str() {
        p.device_owner = d.to_string();
    }
    Json(json!({ "port": port_json(p, t.is_admin()) })).into_response()
}

async fn port_tags(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match position_owned(&c.ports, &id, &t) {
        Some(i) => Json(json!({ "tags": c.ports[i].tags })).into_response(),
        None => neutron_not_found("PortNotFound", "Port", &id),
    }
}

/// `PUT /v2.0/ports/{id}/tags`: replaces every tag (what gophercloud's `ReplaceAll` sends).
async fn replace_port_tags(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let tags: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["tags"].clone()).ok());
    let Some(tags) = tags else {
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            "Invalid input for operation: Invalid tags body.",
        );
    };
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.ports, &id, &t) else {
        return neutron_not_found("PortNotFound", "Port", &id);
    };
    c.ports[i].tags = tags;
    Json(json!({ "tags": c.ports[i].tags })).into_response()
}

/// `PUT /v2.0/ports/{id}/tags/{tag}`: adds one tag; 201 with no body.
async fn add_port_tag(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path((id, tag)): Path<(String, String)>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.ports, &id, &t) else {
        return neutron_not_found("PortNotFound", "Port", &id);
    };
    if !c.ports[i].tags.contains(&tag) {
        c.ports[i].tags.push(tag);
    }
    StatusCode::CREATED.into_response()
}

async fn show_port(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match position_owned(&c.ports, &id, &t) {
        Some(i) => Json(json!({ "port": port_json(&c.ports[i], t.is_admin()) })).into_response(),
        None => neutron_not_found("PortNotFound", "Port", &id),
    }
}

async fn delete_port(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.ports, &id, &t) else {
        return neutron_not_found("PortNotFound", "Port", &id);
    };
    c.ports.remove(i);
    // A floating IP on a deleted port stays allocated, disassociated, as in Neutron.
    for f in c
        .floating_ips
        .iter_mut()
        .filter(|f| f.port_id.as_deref() == Some(id.as_str()))
    {
        f.port_id = None;
        f.fixed_ip = None;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Points a floating IP at a port (its first fixed IP), or at nothing.
fn associate(c: &mut Cloud, fip: usize, port_id: Option<&str>, project: &str) -> Result<(), Fault> {
    let fixed = match port_id {
        None => None,
        Some(p) => match c
            .ports
            .iter()
            .find(|x| x.id == p && x.project_id == project)
        {
            Some(port) => port.fixed_ips.first().map(|(_, ip)| *ip),
            None => {
                return Err(Fault {
                    status: StatusCode::NOT_FOUND,
                    kind: "PortNotFound",
                    message: format!("Port {p} could not be found."),
                });
            }
        },
    };
    let f = &mut c.floating_ips[fip];
    f.port_id = port_id.map(str::to_string);
    f.fixed_ip = fixed;
    Ok(())
}

async fn create_fip(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Json(body): Json<Value>,
) -> Response {
    let req = &body["floatingip"];
    let Some(net_id) = req["floating_network_id"].as_str() else {
        return bad_request(
            "Failed to parse request. Required attribute 'floating_network_id' not specified",
        );
    };
    let mut c = cloud.lock().unwrap();
    match c.networks.iter().find(|n| n.id == net_id) {
        None => return neutron_not_found("NetworkNotFound", "Network", net_id),
        Some(n) if !n.external => {
            return bad_request(&format!(
                "Bad floatingip request: Network {net_id} is not a valid external network."
            ));
        }
        Some(_) => {}
    }
    let limit = c
        .project(&t.project_id)
        .map(|p| p.quotas.floatingip)
        .unwrap_or(0);
    if c.floating_ips
        .iter()
        .filter(|f| f.project_id == t.project_id)
        .count() as i64
        >= limit
    {
        return over_quota("floatingip");
    }
    let wanted = match req["floating_ip_address"].as_str() {
        Some(a) => match a.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return bad_request(&format!(
                    "Invalid input for floating_ip_address. Reason: '{a}' is not a valid IP address."
                ));
            }
        },
        None => None,
    };
    let subnets: Vec<String> = c
        .subnets
        .iter()
        .filter(|s| s.network_id == net_id && wanted.is_none_or(|ip| s.cidr.contains(ip)))
        .map(|s| s.id.clone())
        .collect();
    let Some(subnet_id) = subnets.first() else {
        let ip = wanted.map(|i| i.to_string()).unwrap_or_default();
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "InvalidIpForNetwork",
            &format!(
                "IP address {ip} is not a valid IP for any of the subnets on the specified network."
            ),
        );
    };
    let address = match allocate(&c, subnet_id, wanted) {
        Ok(ip) => ip,
        Err(fault) => return fault.into_response(),
    };
    let fip = FloatingIp {
        id: c.new_id(),
        project_id: t.project_id.clone(),
        floating_network_id: net_id.to_string(),
        address,
        port_id: None,
        fixed_ip: None,
        description: req["description"].as_str().unwrap_or_default().to_string(),
        created: now_rfc3339(),
    };
    c.floating_ips.push(fip);
    let i = c.floating_ips.len() - 1;
    if let Some(port) = req["port_id"].as_str()
        && let Err(fault) = associate(&mut c, i, Some(port), &t.project_id)
    {
        c.floating_ips.pop();
        return fault.into_response();
    }
    (
        StatusCode::CREATED,
        Json(json!({ "floatingip": fip_json(&c, &c.floating_ips[i]) })),
    )
        .into_response()
}

async fn update_fip(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.floating_ips, &id, &t) else {
        return fip_not_found(&id);
    };
    if let Some(port) = body["floatingip"].get("port_id") {
        if let Err(fault) = associate(&mut c, i, port.as_str(), &t.project_id) {
            return fault.into_response();
        }
    }
    Json(json!({ "floatingip": fip_json(&c, &c.floating_ips[i]) })).into_response()
}

async fn list_fips(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .floating_ips
        .iter()
        .filter(|f| neutron_listed(&t, &f.project_id, &q))
        .filter(|f| param(&q, "floating_ip_address").is_none_or(|a| a == f.address.to_string()))
        .filter(|f| param(&q, "port_id").is_none_or(|p| Some(p) == f.port_id.as_deref()))
        .filter(|f| param(&q, "floating_network_id").is_none_or(|n| n == f.floating_network_id))
        .filter(|f| param(&q, "description").is_none_or(|d| d == f.description))
        .map(|f| fip_json(&c, f))
        .collect();
    Json(json!({ "floatingips": page(items, &q) }))
}

async fn show_fip(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match position_owned(&c.floating_ips, &id, &t) {
        Some(i) => Json(json!({ "floatingip": fip_json(&c, &c.floating_ips[i]) })).into_response(),
        None => fip_not_found(&id),
    }
}

async fn delete_fip(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.floating_ips, &id, &t) else {
        return fip_not_found(&id);
    };
    c.floating_ips.remove(i);
    StatusCode::NO_CONTENT.into_response()
}

/// Limits and what the project uses, per Neutron resource. Ports and floating IPs follow the
/// scenario's quotas; the rest have Neutron's default limits.
fn usage(c: &Cloud, project: &str) -> Option<Vec<(&'static str, i64, i64)>> {
    let q = c.project(project)?.quotas;
    let count = |n: usize| n as i64;
    let mine = |owner: &Option<String>| owner.as_deref() == Some(project);
    let groups = c.security_groups.iter().filter(|g| g.project_id == project);
    Some(vec![
        (
            "network",
            100,
            count(c.networks.iter().filter(|n| mine(&n.project_id)).count()),
        ),
        (
            "subnet",
            100,
            count(c.subnets.iter().filter(|s| mine(&s.project_id)).count()),
        ),
        ("subnetpool", -1, 0),
        (
            "port",
            q.ports,
            count(c.ports.iter().filter(|p| p.project_id == project).count()),
        ),
        ("router", 10, 0),
        ("router_route", 30, 0),
        (
            "floatingip",
            q.floatingip,
            count(
                c.floating_ips
                    .iter()
                    .filter(|f| f.project_id == project)
                    .count(),
            ),
        ),
        ("rbac_policy", 10, 0),
        ("security_group", 10, count(groups.clone().count())),
        (
            "security_group_rule",
            100,
            count(groups.map(|g| g.rules.len()).sum()),
        ),
    ])
}

/// Neutron's quota view: plain limits, or with `details` limit, used and reserved. Another
/// project's quota needs the `get_quota` policy (admin-only by default): Neutron's
/// `QuotaSetsController.show` (and the details controller) enforce it only when `id` is not
/// the caller's project, and oslo.policy's refusal is a 403.
fn quota_view(cloud: &Shared, t: &Token, project: &str, details: bool) -> Response {
    if t.project_id != project && !t.is_admin() {
        return neutron_error(
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
            "get_quota is disallowed by policy",
        );
    }
    let c = cloud.lock().unwrap();
    let Some(u) = usage(&c, project) else {
        return neutron_not_found("ProjectNotFound", "Project", project);
    };
    let quota: serde_json::Map<String, Value> = u
        .iter()
        .map(|(k, limit, used)| {
            let v = if details {
                json!({ "limit": limit, "used": used, "reserved": 0 })
            } else {
                json!(limit)
            };
            (k.to_string(), v)
        })
        .collect();
    Json(json!({ "quota": quota })).into_response()
}

async fn quota(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(project): Path<String>,
) -> Response {
    quota_view(&cloud, &t, &project, false)
}

async fn quota_details(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(project): Path<String>,
) -> Response {
    quota_view(&cloud, &t, &project, true)
}

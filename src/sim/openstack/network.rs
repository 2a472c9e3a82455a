//! Neutron (network v2.0): version list, extensions, networks and subnets; ports, floating
//! IPs and quotas are in `ports.rs`.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Cloud, Network, Pairs, Shared, Subnet, Token, bare_version, neutron_error, not_found, page,
    param,
};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v2.0/networks", get(networks))
        .route("/v2.0/networks/{id}", get(network))
        .route("/v2.0/subnets", get(subnets))
        .route("/v2.0/subnets/{id}", get(subnet))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension))
        .merge(super::ports::routes())
        .merge(super::security_groups::routes())
}

pub(super) async fn versions(State(cloud): State<Shared>) -> Json<Value> {
    let base = cloud.lock().unwrap().base.clone();
    Json(json!({ "versions": [bare_version(&base, "v2.0", "/networking/v2.0/", "CURRENT")] }))
}

/// The API extensions whose fields the simulator serves: clients (python-openstackclient's
/// `port create`) look some up before they send a request.
const EXTENSIONS: [(&str, &str); 6] = [
    ("external-net", "Neutron external network"),
    ("quotas", "Quota management support"),
    ("quota_details", "Quota details management support"),
    ("project-id", "project_id field enabled"),
    ("standard-attr-description", "standard-attr-description"),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute",
    ),
];

fn extension_json((alias, name): (&str, &str)) -> Value {
    json!({ "alias": alias, "name": name, "description": name, "updated": "2013-01-20T00:00:00-00:00", "links": [] })
}

async fn extensions() -> Json<Value> {
    Json(json!({ "extensions": EXTENSIONS.into_iter().map(extension_json).collect::<Vec<_>>() }))
}

async fn extension(Path(alias): Path<String>) -> Response {
    match EXTENSIONS.into_iter().find(|(a, _)| *a == alias) {
        Some(e) => Json(json!({ "extension": extension_json(e) })).into_response(),
        None => not_found("Extension", &alias),
    }
}

/// Networks a project sees: its own, and shared or external ones; an admin sees every
/// project's, as Neutron's policy (`get_network`: admin, owner, shared or external) has it.
/// Lists narrow with `project_id`/`tenant_id` like any other field filter.
fn visible(n: &Network, t: &Token) -> bool {
    n.external || t.is_admin() || n.project_id.as_deref() == Some(t.project_id.as_str())
}

/// A network as Neutron shows it; the `provider:*` fields are admin-only (external networks
/// are flat on physnet `public`, the others VXLAN, as in the lab), and `is_default` belongs
/// to external networks.
fn network_json(c: &Cloud, n: &Network, admin: bool) -> Value {
    let subnets: Vec<&str> = c
        .subnets
        .iter()
        .filter(|s| s.network_id == n.id)
        .map(|s| s.id.as_str())
        .collect();
    let mut v = json!({
        "id": n.id, "name": n.name, "status": "ACTIVE", "admin_state_up": true,
        "router:external": n.external, "shared": false, "mtu": 1500, "subnets": subnets,
        "project_id": n.project_id.clone().unwrap_or_default(), "tenant_id": n.project_id.clone().unwrap_or_default(),
        "availability_zones": [], "availability_zone_hints": [], "description": "",
        "port_security_enabled": true, "ipv4_address_scope": null, "ipv6_address_scope": null,
        "qinq": false, "vlan_transparent": false, "tags": [], "revision_number": 1,
        "created_at": c.born, "updated_at": c.born,
    });
    if n.external {
        v["is_default"] = json!(false);
    }
    if admin {
        let index = c.networks.iter().position(|x| x.id == n.id).unwrap_or(0) as i64;
        let (kind, physnet, segment) = if n.external {
            ("flat", json!("public"), Value::Null)
        } else {
            ("vxlan", Value::Null, json!(100 + index))
        };
        v["provider:network_type"] = json!(kind);
        v["provider:physical_network"] = physnet;
        v["provider:segmentation_id"] = segment;
    }
    v
}

fn subnet_json(c: &Cloud, s: &Subnet) -> Value {
    let (start, end) = s.cidr.hosts();
    let cidr = format!("{}/{}", s.cidr.network, s.cidr.prefix);
    let external = c
        .networks
        .iter()
        .any(|n| n.id == s.network_id && n.external);
    json!({
        "id": s.id, "name": s.name, "network_id": s.network_id, "cidr": cidr, "ip_version": 4,
        "enable_dhcp": true, "gateway_ip": s.gateway, "dns_nameservers": [], "host_routes": [],
        "allocation_pools": [{ "start": start.to_string(), "end": end.to_string() }],
        "project_id": s.project_id.clone().unwrap_or_default(), "tenant_id": s.project_id.clone().unwrap_or_default(),
        "ipv6_address_mode": null, "ipv6_ra_mode": null, "subnetpool_id": null, "service_types": [],
        "router:external": external, "tags": [], "revision_number": 0,
        "description": "", "created_at": c.born, "updated_at": c.born,
    })
}

/// Keeps items whose field equals each given filter (Neutron's exact-match filters).
pub(super) fn filtered(items: Vec<Value>, q: &[(String, String)], keys: &[&str]) -> Vec<Value> {
    items
        .into_iter()
        .filter(|v| {
            keys.iter().all(|k| match param(q, k) {
                None => true,
                Some(want) => match &v[*k] {
                    Value::String(s) => s == want,
                    Value::Bool(b) => b.to_string() == want.to_lowercase(),
                    other => serde_json::from_str::<Value>(want).is_ok_and(|w| &w == other),
                },
            })
        })
        .collect()
}

async fn networks(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items = c
        .networks
        .iter()
        .filter(|n| visible(n, &t))
        .map(|n| network_json(&c, n, t.is_admin()))
        .collect();
    let items = filtered(
        items,
        &q,
        &[
            "name",
            "id",
            "router:external",
            "status",
            "project_id",
            "tenant_id",
        ],
    );
    Json(json!({ "networks": page(items, &q) }))
}

async fn network(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match c.networks.iter().find(|n| n.id == id && visible(n, &t)) {
        Some(n) => Json(json!({ "network": network_json(&c, n, t.is_admin()) })).into_response(),
        None => neutron_error(
            StatusCode::NOT_FOUND,
            "NetworkNotFound",
            &format!("Network {id} could not be found."),
        ),
    }
}

fn subnet_visible(c: &Cloud, s: &Subnet, t: &Token) -> bool {
    c.networks
        .iter()
        .any(|n| n.id == s.network_id && visible(n, t))
}

async fn subnets(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items = c
        .subnets
        .iter()
        .filter(|s| subnet_visible(&c, s, &t))
        .map(|s| subnet_json(&c, s))
        .collect();
    let items = filtered(
        items,
        &q,
        &[
            "name",
            "id",
            "network_id",
            "cidr",
            "project_id",
            "tenant_id",
        ],
    );
    Json(json!({ "subnets": page(items, &q) }))
}

async fn subnet(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match c
        .subnets
        .iter()
        .find(|s| s.id == id && subnet_visible(&c, s, &t))
    {
        Some(s) => Json(json!({ "subnet": subnet_json(&c, s) })).into_response(),
        None => neutron_error(
            StatusCode::NOT_FOUND,
            "SubnetNotFound",
            &format!("Subnet {id} could not be found."),
        ),
    }
}

//! Servers as Nova shows them: the server document (its addresses, links and the fields
//! each microversion adds), the list filters, and the console's state view.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::{Cloud, Token, param};
use super::{ApiError, Server, ServerStatus, is_admin};

impl Cloud {
    pub(super) fn server_links(&self, id: &str) -> Value {
        json!([
            { "rel": "self", "href": format!("{}/compute/v2.1/servers/{id}", self.base) },
            { "rel": "bookmark", "href": format!("{}/compute/servers/{id}", self.base) },
        ])
    }

    /// `addresses`: each bound port's fixed IPs under its network's name, then the floating IPs
    /// associated with it.
    pub(super) fn addresses(&self, s: &Server) -> Value {
        let mut out = serde_json::Map::new();
        for p in self.ports.iter().filter(|p| s.ports.contains(&p.id)) {
            let net = self
                .networks
                .iter()
                .find(|n| n.id == p.network_id)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            let entry = |addr: String, kind: &str| json!({ "addr": addr, "version": 4, "OS-EXT-IPS:type": kind, "OS-EXT-IPS-MAC:mac_addr": p.mac });
            let list = out.entry(net).or_insert_with(|| json!([]));
            let list = list.as_array_mut().expect("built as an array");
            list.extend(
                p.fixed_ips
                    .iter()
                    .map(|(_, ip)| entry(ip.to_string(), "fixed")),
            );
            list.extend(
                self.floating_ips
                    .iter()
                    .filter(|f| f.port_id.as_deref() == Some(p.id.as_str()))
                    .map(|f| entry(f.address.to_string(), "floating")),
            );
        }
        Value::Object(out)
    }

    /// The full server, as `GET /servers/{id}` and `/servers/detail` show it at `microversion`.
    pub(super) fn server_json(&self, s: &Server, admin: bool, microversion: (u32, u32)) -> Value {
        let flavor = self.flavors.iter().find(|f| f.id == s.flavor_id);
        // 2.47 embedded the flavor; before, a reference (what the crate asks for in lists).
        let flavor = if microversion >= (2, 47) {
            json!({
                "original_name": flavor.map(|f| f.name.clone()).unwrap_or_default(),
                "vcpus": flavor.map_or(0, |f| f.vcpus), "ram": flavor.map_or(0, |f| f.ram_mib),
                "disk": flavor.map_or(0, |f| f.disk_gib), "ephemeral": 0, "swap": 0, "extra_specs": {},
            })
        } else {
            json!({ "id": s.flavor_id, "links": [{ "rel": "bookmark",
                "href": format!("{}/compute/flavors/{}", self.base, s.flavor_id) }] })
        };
        let image = if s.image_id.is_empty() {
            json!("")
        } else {
            json!({ "id": s.image_id, "links": [{ "rel": "bookmark",
                "href": format!("{}/compute/images/{}", self.base, s.image_id) }] })
        };
        let volumes: Vec<Value> = s
            .volumes
            .iter()
            .map(|v| json!({ "id": v.id, "delete_on_termination": v.delete_on_termination }))
            .collect();
        let mut v = json!({
            "id": s.id, "name": s.name, "status": s.status.as_str(),
            "tenant_id": s.project_id, "user_id": s.user_id,
            "metadata": s.metadata, "hostId": host_id(&s.project_id, &s.host),
            "image": image, "flavor": flavor,
            "created": s.created, "updated": s.updated,
            "addresses": self.addresses(s),
            "accessIPv4": "", "accessIPv6": "",
            "links": self.server_links(&s.id),
            "OS-DCF:diskConfig": "MANUAL",

            "OS-EXT-AZ:availability_zone": s.availability_zone,
            "config_drive": if s.config_drive { "True" } else { "" },
            "key_name": s.key_name,
            "OS-SRV-USG:launched_at": s.launched_at.as_deref().map(naive_time),
            "OS-SRV-USG:terminated_at": null,
            "security_groups": s.security_groups.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
            "OS-EXT-STS:task_state": if s.status == ServerStatus::Build { json!("spawning") } else { Value::Null },
            "OS-EXT-STS:vm_state": s.status.vm_state(),
            "OS-EXT-STS:power_state": s.status.power_state(),
            "os-extended-volumes:volumes_attached": volumes,
            "locked": false,
        });
        // Nova shows progress only in the states that make any.
        match s.status {
            ServerStatus::Build => v["progress"] = json!(0),
            ServerStatus::Active => v["progress"] = json!(100),
            ServerStatus::Error | ServerStatus::Shutoff => {}
        }
        // A server the scheduler never placed has no security groups applied.
        if s.host.is_empty() && s.status == ServerStatus::Error {
            if let Some(o) = v.as_object_mut() {
                o.remove("security_groups");
            }
        }
        if microversion >= (2, 19) {
            v["description"] = Value::Null;
        }
        if microversion >= (2, 26) {
            v["tags"] = json!(s.tags);
        }
        if microversion >= (2, 71) {
            v["server_groups"] = json!([]);
        }
        if admin {
            let host = (!s.host.is_empty()).then_some(s.host.as_str());
            v["OS-EXT-SRV-ATTR:host"] = json!(host);
            v["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(host);
            v["OS-EXT-SRV-ATTR:instance_name"] = json!(s.instance_name);
            if microversion >= (2, 3) {
                let extended = [
                    ("hostname", json!(s.name)),
                    ("reservation_id", json!(s.reservation_id)),
                    ("launch_index", json!(0)),
                    ("kernel_id", json!("")),
                    ("ramdisk_id", json!("")),
                    (
                        "root_device_name",
                        json!((!s.host.is_empty()).then_some("/dev/vda")),
                    ),
                    ("user_data", json!(s.user_data)),
                ];
                for (k, x) in extended {
                    v[format!("OS-EXT-SRV-ATTR:{k}")] = x;
                }
            }
            if microversion >= (2, 16) {
                v["host_status"] = json!(if host.is_some() { "UP" } else { "" });
            }
        }
        if let (ServerStatus::Error, Some(f)) = (s.status, &s.fault) {
            let mut fault = json!({ "code": f.code, "message": f.message, "created": f.created });
            if !f.details.is_empty() && (admin || f.code != 500) {
                fault["details"] = json!(f.details);
            }
            v["fault"] = fault;
        }
        v
    }
}

/// Nova's `hostId`: an opaque digest of project and host, empty when the server has no host.
pub(super) fn host_id(project: &str, host: &str) -> String {
    if host.is_empty() {
        return String::new();
    }
    use std::hash::{Hash, Hasher};
    (0..4)
        .map(|salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            (salt, project, host).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect::<String>()[..56]
        .to_string()
}

/// Nova prints `launched_at` without an offset (`2019-04-23T15:19:10.000000`).
pub(super) fn naive_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default()
}

/// Nova's `name` filter is a regular expression; anchors and plain text are what clients send.
pub(super) fn name_matches(pattern: &str, name: &str) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// The caller's servers (all projects' for an admin with `all_tenants`, narrowed by
/// `project_id`/`tenant_id`), newest first as Nova sorts them, filtered by `name` and
/// `status`.
///
/// Nova (`servers.py` `_get_servers`) checks `os_compute_api:servers:index:get_all_tenants`
/// (`detail:get_all_tenants` for `/detail`), admin-only by default, whenever a true
/// `all_tenants` is given: a member gets 403, not its own servers. Without `all_tenants` the
/// list is the token's project's and `tenant_id` is ignored.
pub(super) fn listed<'a>(
    c: &'a Cloud,
    t: &Token,
    q: &[(String, String)],
    detail: bool,
) -> Result<Vec<&'a Server>, ApiError> {
    let all = param(q, "all_tenants").is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    if all && !is_admin(t) {
        let rule = if detail { "detail" } else { "index" };
        return Err(ApiError::nova(
            StatusCode::FORBIDDEN,
            &format!(
                "Policy doesn't allow os_compute_api:servers:{rule}:get_all_tenants to be performed."
            ),
        ));
    }
    let project = param(q, "project_id").or(param(q, "tenant_id"));
    Ok(c.servers
        .iter()
        .rev()
        .filter(|s| {
            if all {
                project.is_none_or(|p| p == s.project_id)
            } else {
                s.project_id == t.project_id
            }
        })
        .filter(|s| param(q, "name").is_none_or(|n| name_matches(n, &s.name)))
        .filter(|s| param(q, "status").is_none_or(|st| st.eq_ignore_ascii_case(s.status.as_str())))
        .collect())
}

/// The state console's view of a server.
pub(in crate::sim::openstack) fn state_json(s: &Server) -> Value {
    json!({
        "id": s.id, "name": s.name, "project_id": s.project_id, "status": s.status.as_str(),
        "availability_zone": s.availability_zone, "host": s.host,
        "fault": s.fault.as_ref().map(|f| json!({ "code": f.code, "message": f.message, "created": f.created })),
        "ports": s.ports, "volumes": s.volumes.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        "metadata": s.metadata, "tags": s.tags, "flavor_id": s.flavor_id, "image_id": s.image_id,
        "key_name": s.key_name, "security_groups": s.security_groups,
    })
}

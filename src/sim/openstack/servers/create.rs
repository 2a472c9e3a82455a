//! `POST /servers`: the request checked as Nova's schema and policy check it (metadata,
//! references, NICs, quota), then ports bound or made and the server placed in BUILD.

use std::net::Ipv4Addr;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::{Cloud, Port, Token, now_rfc3339, ports};
use super::block_devices::BdmSource;
use super::{ApiError, Server, ServerStatus, bad_request, instance_not_found};

/// Nova's JSON-schema refusal of the `server` body.
pub(super) fn schema_error(req: &Value, reason: &str) -> ApiError {
    bad_request(&format!(
        "Invalid input for field/attribute server. Value: {req}. {reason}"
    ))
}

/// A server metadata key Nova's schema accepts.
pub(super) fn metadata_key_ok(key: &str) -> bool {
    (1..=255).contains(&key.chars().count())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c))
}

/// The last path segment of a reference: Nova takes `flavorRef`/`imageRef` as an ID or a URL.
pub(super) fn last_segment(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// A NIC asked for in `networks`.
pub(super) enum Nic {
    Port(String),
    Network {
        id: String,
        fixed_ip: Option<Ipv4Addr>,
    },
}

/// Nova's schema for server metadata: keys of letters, digits and `-_:. ` (no `/`), at most
/// 255 characters each, and string values of at most 255. The refusal quotes the metadata
/// as Python prints a dict.
pub(super) fn check_metadata(metadata: &Value) -> Result<(), ApiError> {
    let Some(m) = metadata.as_object() else {
        return Ok(());
    };
    let repr = || {
        let pairs: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("'{k}': '{}'", v.as_str().unwrap_or_default()))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    };
    // jsonschema's additionalProperties text: every key no pattern admits, sorted, "does"
    // for one and "do" for several.
    let mut bad: Vec<String> = m
        .keys()
        .filter(|k| !metadata_key_ok(k))
        .map(|k| format!("'{k}'"))
        .collect();
    bad.sort();
    if !bad.is_empty() {
        let verb = if bad.len() == 1 { "does" } else { "do" };
        return Err(bad_request(&format!(
            "Invalid input for field/attribute metadata. Value: {}. {} {verb} not match any \
             of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'",
            repr(),
            bad.join(", ")
        )));
    }
    for v in m.values() {
        let problem = match v.as_str() {
            Some(x) if x.chars().count() <= 255 => continue,
            Some(x) => format!("'{x}' is too long"),
            None => format!("{v} is not of type 'string'"),
        };
        return Err(bad_request(&format!(
            "Invalid input for field/attribute metadata. Value: {}. {problem}",
            repr()
        )));
    }
    Ok(())
}

impl Cloud {
    /// `POST /servers`: `req` is the `server` object of the body. Answers the 202 body
    /// (`{"server": {"id", "links", "adminPass", ...}}`) or Nova's refusal.
    pub fn create_server(
        &mut self,
        caller: &Token,
        req: &Value,
        microversion: (u32, u32),
    ) -> Result<Value, ApiError> {
        self.advance();
        let admin = caller.roles.iter().any(|r| r == "admin");
        let project = caller.project_id.clone();
        if !req.is_object() {
            return Err(bad_request(
                "Invalid input for field/attribute server. 'server' is a required property",
            ));
        }
        let Some(name) = req["name"].as_str() else {
            return Err(schema_error(req, "'name' is a required property"));
        };
        let flavor_ref = match &req["flavorRef"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(schema_error(req, "'flavorRef' is a required property")),
        };
        for (field, since) in [
            ("tags", (2, 52)),
            ("trusted_image_certificates", (2, 63)),
            ("host", (2, 74)),
            ("hypervisor_hostname", (2, 74)),
        ] {
            if req.get(field).is_some() && microversion < since {
                return Err(schema_error(
                    req,
                    &format!("Additional properties are not allowed ('{field}' was unexpected)"),
                ));
            }
        }
        // Nova's schema (`metadata` in nova/api/validation/parameter_types.py) is checked
        // before any lookup.
        check_metadata(&req["metadata"])?;
        let flavor_id = last_segment(&flavor_ref).to_string();
        let Some(flavor) = self.flavors.iter().find(|f| f.id == flavor_id) else {
            return Err(bad_request(&format!(
                "Flavor {flavor_id} could not be found."
            )));
        };
        let (vcpus, ram) = (flavor.vcpus, flavor.ram_mib);
        let image_ref = req["imageRef"]
            .as_str()
            .map(last_segment)
            .unwrap_or_default()
            .to_string();
        if !image_ref.is_empty() && !self.images.iter().any(|i| i.id == image_ref) {
            return Err(bad_request(&format!(
                "Image {image_ref} could not be found."
            )));
        }

        // `az`, `az:host` or `az:host:node`; the host forms are admin-only.
        let (zone, forced_host) = match req["availability_zone"].as_str() {
            None | Some("") => (None, None),
            Some(spec) => {
                let mut parts = spec.splitn(3, ':');
                let zone = parts.next().unwrap_or_default();
                let host = parts.next().filter(|h| !h.is_empty());
                if spec.contains(':') && !admin {
                    return Err(ApiError::nova(
                        StatusCode::FORBIDDEN,
                        "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed.",
                    ));
                }
                (
                    Some(zone.to_string()).filter(|z| !z.is_empty()),
                    host.map(str::to_string),
                )
            }
        };
        // 2.74's requested destination (`host`, `hypervisor_hostname`: one name per compute
        // host here) is admin-only by Nova's default policy, checked before anything else.
        let requested = ["host", "hypervisor_hostname"]
            .iter()
            .filter_map(|f| req[*f].as_str())
            .find(|h| !h.is_empty())
            .map(str::to_string);
        if requested.is_some() && !admin {
            return Err(ApiError::nova(
                StatusCode::FORBIDDEN,
                "Policy doesn't allow os_compute_api:servers:create:requested_destination to be performed.",
            ));
        }
        let forced_host = forced_host.or(requested);
        if let Some(z) = &zone
            && !self.availability_zones.contains(z)
        {
            return Err(bad_request(
                "The requested availability zone is not available",
            ));
        }
        if let Some(h) = &forced_host
            && !self.hypervisors.iter().any(|x| &x.name == h)
        {
            return Err(bad_request(&format!(
                "Compute host {h} could not be found."
            )));
        }

        // Nova looks the keypair up for the caller's user, and each security group but
        // `default` in Neutron, within the project (`_validate_and_build_base_options`).
        if let Some(key) = req["key_name"].as_str()
            && !self.has_keypair(&caller.user_id, key)
        {
            return Err(bad_request("Invalid key_name provided."));
        }
        let mut security_groups: Vec<String> = req["security_groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if security_groups.is_empty() {
            security_groups.push("default".into());
        }
        let mut group_ids = Vec::new();
        for g in &security_groups {
            match self.security_group_id(&project, g) {
                Some(id) => group_ids.push(id),
                None if g == "default" => {}
                None => {
                    return Err(bad_request(&format!(
                        "Unable to find security_group with name or id '{g}'"
                    )));
                }
            }
        }
        let nics = self.requested_nics(req, &project)?;
        let bdms = self.requested_bdms(req, &project, microversion)?;
        let boots = !image_ref.is_empty() || bdms.iter().any(|b| b.boot_index == Some(0));
        if !boots {
            return Err(bad_request(
                "Block Device Mapping is Invalid: Boot sequence for the instance and image/block \
                 device mapping combination is not valid.",
            ));
        }
        let image_id = if !image_ref.is_empty() {
            image_ref
        } else {
            bdms.iter()
                .find_map(|b| match &b.source {
                    BdmSource::LocalImage(i) if b.boot_index == Some(0) => Some(i.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };

        self.check_compute_quota(&project, vcpus, ram)?;

        // Placement: the pinned host, or the least loaded (by free RAM) in the zone with room.
        let fits = |c: &Cloud, h: &super::super::Hypervisor| {
            let (used_cpu, used_ram, _) = c.hypervisor_usage(&h.name);
            h.vcpus - used_cpu >= vcpus && h.memory_mib - used_ram >= ram
        };
        let mut host = self
            .hypervisors
            .iter()
            .filter(|h| forced_host.as_ref().is_none_or(|f| &h.name == f))
            .filter(|h| zone.as_ref().is_none_or(|z| &h.availability_zone == z))
            .filter(|h| fits(self, h))
            .max_by_key(|h| (h.memory_mib - self.hypervisor_usage(&h.name).1, -h.id))
            .map(|h| (h.name.clone(), h.availability_zone.clone()));
        let target_zone = host
            .as_ref()
            .map(|(_, z)| z.clone())
            .or(zone.clone())
            .unwrap_or_default();
        let hooks = self.no_valid_host.clone();
        for hook in &hooks {
            let zone_ok = hook
                .availability_zone
                .as_ref()
                .is_none_or(|z| z == &target_zone);
            let host_ok = hook.host.as_ref().is_none_or(|h| {
                host.as_ref().is_some_and(|(x, _)| x == h) || forced_host.as_ref() == Some(h)
            });
            if zone_ok && host_ok && self.rng.f64() < hook.probability {
                host = None;
            }
        }

        let id = self.new_id();
        let mut build_fault = None;
        let mut bound_ports = Vec::new();
        let mut own_ports = Vec::new();
        let mut attached = Vec::new();
        match &host {
            // Nova never reaches a compute host: no ports bound, no volumes created.
            None => {
                // Nova's text, trailing space included (the scheduler's reason is no longer
                // appended).
                build_fault = Some((500, "No valid host was found. ".to_string()));
            }
            Some((host_name, az)) => {
                let new_volumes: Vec<i64> = bdms
                    .iter()
                    .filter_map(|b| match b.source {
                        BdmSource::NewVolume { size_gib, .. } => Some(size_gib),
                        _ => None,
                    })
                    .collect();
                if self.volume_quota_refuses(&project, &new_volumes) {
                    // Cinder's 413 reaches Nova on the compute host and aborts the build.
                    build_fault = Some((
                        500,
                        format!(
                            "Build of instance {id} aborted: Quota exceeded for resources: volumes"
                        ),
                    ));
                } else {
                    (bound_ports, own_ports) =
                        self.bind_ports(&nics, &id, caller, host_name, az)?;
                    for p in self.ports.iter_mut().filter(|p| own_ports.contains(&p.id)) {
                        p.security_groups = group_ids.clone();
                    }
                    attached = self.attach_volumes(&bdms, &id, caller, host_name, az);
                }
            }
        }

        self.instances_created += 1;
        let now = now_rfc3339();
        let metadata = req["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let server = Server {
            id: id.clone(),
            name: name.to_string(),
            project_id: project,
            user_id: caller.user_id.clone(),
            flavor_id,
            image_id,
            availability_zone: target_zone,
            host: host.map(|(h, _)| h).unwrap_or_default(),
            status: ServerStatus::Build,
            fault: None,
            metadata,
            tags: strings(&req["tags"]),
            key_name: req["key_name"].as_str().map(str::to_string),
            security_groups: security_groups.clone(),
            config_drive: matches!(&req["config_drive"], Value::Bool(true))
                || req["config_drive"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("true")),
            ports: bound_ports,
            own_ports,
            volumes: attached,
            instance_name: format!("instance-{:08x}", self.instances_created),
            reservation_id: format!(
                "r-{}",
                (0..8).map(|_| self.rng.lowercase()).collect::<String>()
            ),
            user_data: req["user_data"].as_str().map(str::to_string),
            created: now.clone(),
            updated: now,
            launched_at: None,
            ready_at: Instant::now() + self.sim_delay(self.boot_seconds),
            build_fault,
            break_at: None,
        };
        self.servers.push(server);
        self.advance();
        let admin_pass: String = (0..12).map(|_| self.rng.alphanumeric()).collect();
        Ok(json!({ "server": {
            "id": id,
            "links": self.server_links(&id),
            "adminPass": admin_pass,
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": security_groups.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
        }}))
    }

    /// `networks`: ports to bind and networks to create ports on, checked as Nova's API does.
    pub(super) fn requested_nics(&self, req: &Value, project: &str) -> Result<Vec<Nic>, ApiError> {
        let auto = || -> Result<Vec<Nic>, ApiError> {
            match self
                .networks
                .iter()
                .find(|n| !n.external && n.project_id.as_deref() == Some(project))
            {
                Some(n) => Ok(vec![Nic::Network {
                    id: n.id.clone(),
                    fixed_ip: None,
                }]),
                None => Err(bad_request(&format!(
                    "Unable to automatically allocate a network for project {project}"
                ))),
            }
        };
        let nics = match &req["networks"] {
            Value::String(s) if s == "none" => Vec::new(),
            Value::String(s) if s == "auto" => auto()?,
            Value::Null => auto()?,
            Value::Array(entries) => {
                let mut out = Vec::new();
                for e in entries {
                    if let Some(port) = e["port"].as_str() {
                        out.push(Nic::Port(port.to_string()));
                    } else if let Some(net) = e["uuid"].as_str() {
                        let fixed_ip = match e["fixed_ip"].as_str() {
                            None => None,
                            Some(a) => Some(a.parse::<Ipv4Addr>().map_err(|_| {
                                bad_request(&format!(
                                    "Invalid input for field/attribute fixed_ip. Value: {a}. '{a}' is not a 'ipv4'"
                                ))
                            })?),
                        };
                        out.push(Nic::Network {
                            id: net.to_string(),
                            fixed_ip,
                        });
                    } else {
                        return Err(bad_request(
                            "Bad networks format: network uuid is not in proper format",
                        ));
                    }
                }
                out
            }
            _ => return Err(schema_error(req, "'networks' is not valid")),
        };
        let mut new_ports = 0;
        for nic in &nics {
            match nic {
                Nic::Port(id) => {
                    let Some(p) = self
                        .ports
                        .iter()
                        .find(|p| &p.id == id && p.project_id == project)
                    else {
                        return Err(bad_request(&format!("Port id {id} could not be found.")));
                    };
                    if !p.device_id.is_empty() {
                        return Err(ApiError::nova(
                            StatusCode::CONFLICT,
                            &format!("Port {id} is still in use."),
                        ));
                    }
                }
                Nic::Network { id, .. } => {
                    if !self.networks.iter().any(|n| {
                        &n.id == id && (n.external || n.project_id.as_deref() == Some(project))
                    }) {
                        return Err(bad_request(&format!("Network {id} could not be found.")));
                    }
                    new_ports += 1;
                }
            }
        }
        let port_limit = self.project(project).map(|p| p.quotas.ports).unwrap_or(0);
        let ports_used = self
            .ports
            .iter()
            .filter(|p| p.project_id == project)
            .count() as i64;
        if new_ports > 0 && ports_used + new_ports > port_limit {
            return Err(ApiError::nova(
                StatusCode::FORBIDDEN,
                "Maximum number of ports exceeded",
            ));
        }
        Ok(nics)
    }

    /// Nova's quota check for one more server of `vcpus` and `ram` MiB: 403 with Nova's text.
    pub(super) fn check_compute_quota(
        &self,
        project: &str,
        vcpus: i64,
        ram: i64,
    ) -> Result<(), ApiError> {
        let Some(p) = self.project(project) else {
            return Err(instance_not_found(project));
        };
        let q = p.quotas;
        let (n, cores, ram_used) = self.compute_usage(project);
        // Nova lists the exceeded resources sorted, joining each column with ", ".
        let overs: Vec<(&str, i64, i64, i64)> = [
            ("cores", vcpus, cores, q.cores),
            ("instances", 1, n, q.instances),
            ("ram", ram, ram_used, q.ram_mib),
        ]
        .into_iter()
        .filter(|(_, req, used, limit)| *limit >= 0 && used + req > *limit)
        .collect();
        if overs.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = overs.iter().map(|o| o.0).collect();
        let names = names.join(", ");
        let column = |pick: fn(&(&str, i64, i64, i64)) -> i64| {
            let cells: Vec<String> = overs.iter().map(|o| pick(o).to_string()).collect();
            cells.join(", ")
        };
        Err(ApiError::nova(
            StatusCode::FORBIDDEN,
            &format!(
                "Quota exceeded for {names}: Requested {}, but already used {} of {} {names}",
                column(|o| o.1),
                column(|o| o.2),
                column(|o| o.3),
            ),
        ))
    }

    /// Whether Cinder would refuse the new volumes (count or gigabytes).
    pub(super) fn volume_quota_refuses(&self, project: &str, sizes: &[i64]) -> bool {
        if sizes.is_empty() {
            return false;
        }
        let Some(p) = self.project(project) else {
            return true;
        };
        let mine = self.volumes.iter().filter(|v| v.project_id == project);
        let (count, gb) = mine.fold((0, 0), |(n, g), v| (n + 1, g + v.size_gib));
        count + sizes.len() as i64 > p.quotas.volumes
            || gb + sizes.iter().sum::<i64>() > p.quotas.gigabytes
    }

    /// Creates the ports Nova makes and binds every port to the server; nothing changes if an
    /// address cannot be had. Answers (all port IDs, the ones Nova created).
    pub(super) fn bind_ports(
        &mut self,
        nics: &[Nic],
        server_id: &str,
        caller: &Token,
        host: &str,
        az: &str,
    ) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let mut all = Vec::new();
        let mut created = Vec::new();
        for nic in nics {
            match nic {
                Nic::Port(id) => all.push(id.clone()),
                Nic::Network { id, fixed_ip } => match self.new_port(id, *fixed_ip, caller) {
                    Ok(port_id) => {
                        all.push(port_id.clone());
                        created.push(port_id);
                    }
                    Err(e) => {
                        self.ports.retain(|p| !created.contains(&p.id));
                        return Err(e);
                    }
                },
            }
        }
        for p in self.ports.iter_mut().filter(|p| all.contains(&p.id)) {
            p.device_id = server_id.to_string();
            p.device_owner = format!("compute:{az}");
            p.binding_host = host.to_string();
        }
        Ok((all, created))
    }

    /// A port on `network_id`, as Nova asks Neutron for one.
    pub(super) fn new_port(
        &mut self,
        network_id: &str,
        fixed_ip: Option<Ipv4Addr>,
        caller: &Token,
    ) -> Result<String, ApiError> {
        let subnet = self
            .subnets
            .iter()
            .filter(|s| s.network_id == network_id)
            .find(|s| fixed_ip.is_none_or(|ip| s.cidr.contains(ip)))
            .map(|s| s.id.clone());
        let Some(subnet) = subnet else {
            return Err(bad_request(&format!(
                "Fixed IP {} is not a valid ip address for network {network_id}.",
                fixed_ip.map(|i| i.to_string()).unwrap_or_default()
            )));
        };
        let ip = match ports::allocate(self, &subnet, fixed_ip) {
            Ok(ip) => ip,
            Err(f) if f.kind == "IpAddressAlreadyAllocated" => {
                let owner = self
                    .ports
                    .iter()
                    .find(|p| p.fixed_ips.iter().any(|(_, a)| Some(*a) == fixed_ip))
                    .map(|p| p.device_id.clone())
                    .unwrap_or_default();
                return Err(bad_request(&format!(
                    "Fixed IP address {} is already in use on instance {owner}.",
                    fixed_ip.map(|i| i.to_string()).unwrap_or_default()
                )));
            }
            Err(f) => return Err(bad_request(&f.message)),
        };
        let port = Port {
            id: self.new_id(),
            name: String::new(),
            network_id: network_id.to_string(),
            project_id: caller.project_id.clone(),
            fixed_ips: vec![(subnet, ip)],
            mac: ports::new_mac(&mut self.rng),
            device_id: String::new(),
            device_owner: String::new(),
            binding_host: String::new(),
            description: String::new(),
            tags: Vec::new(),
            security_groups: Vec::new(),
            created: now_rfc3339(),
        };
        let id = port.id.clone();
        self.ports.push(port);
        Ok(id)
    }
}

//! Nova servers: create (ports, boot from volume, quotas, placement on the scenario's
//! hypervisors), show, list, delete and the power actions, failing with Nova's codes and texts.
//!
//! Creation is asynchronous as in Nova: the POST is checked and answered at once (202, or the
//! synchronous refusals: bad references, policy, quota), then the server stays BUILD for
//! `Cloud::boot_seconds` of simulated time and becomes ACTIVE — or ERROR with a fault when the
//! scheduler found no room (or a fault hook says so). `Cloud::advance` applies what is due; every
//! handler that shows servers calls it first, and so may any other code that holds the lock.
//!
//! The logic is in plain `Cloud` methods (`create_server`, `delete_server`, `server_action`)
//! that answer with Nova's status and exact JSON body, so the simulator's own controllers reach
//! the same behaviour and the same errors without HTTP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Cloud, Pairs, Port, Shared, Token, Volume, VolumeAttachment, now_rfc3339, page, param, ports,
    volume,
};

/// A server's status, as Nova reports it. Only the states the simulator reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    Build,
    Active,
    Error,
    Shutoff,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Build => "BUILD",
            ServerStatus::Active => "ACTIVE",
            ServerStatus::Error => "ERROR",
            ServerStatus::Shutoff => "SHUTOFF",
        }
    }

    /// Nova's `vm_state`, which its state-conflict messages name.
    fn vm_state(self) -> &'static str {
        match self {
            ServerStatus::Build => "building",
            ServerStatus::Active => "active",
            ServerStatus::Error => "error",
            ServerStatus::Shutoff => "stopped",
        }
    }

    /// `OS-EXT-STS:power_state`: 0 no state, 1 running, 4 shutdown.
    fn power_state(self) -> u8 {
        match self {
            ServerStatus::Active => 1,
            ServerStatus::Shutoff => 4,
            ServerStatus::Build | ServerStatus::Error => 0,
        }
    }
}

/// Why a server is in ERROR, as `GET /servers/{id}` shows it.
#[derive(Debug, Clone)]
pub struct ServerFault {
    pub code: u16,
    pub message: String,
    /// Shown to admins, or to anyone when `code` is not 500 (Nova's rule); empty for none.
    pub details: String,
    pub created: String,
}

/// A volume attached to a server.
#[derive(Debug, Clone)]
pub struct AttachedVolume {
    pub id: String,
    pub delete_on_termination: bool,
    pub device: String,
}

pub struct Server {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    pub flavor_id: String,
    /// Empty when booted from a volume.
    pub image_id: String,
    pub availability_zone: String,
    /// The hypervisor it runs on; empty when it was never placed.
    pub host: String,
    pub status: ServerStatus,
    pub fault: Option<ServerFault>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub config_drive: bool,
    /// Ports bound to it, in the order of the request.
    pub ports: Vec<String>,
    /// The subset of `ports` Nova created itself (from `{"uuid": net}`): deleted with the server.
    pub own_ports: Vec<String>,
    pub volumes: Vec<AttachedVolume>,
    pub instance_name: String,
    /// Nova's `r-…` reservation of the request that made it.
    pub reservation_id: String,
    /// The `user_data` it was created with (base64, as sent).
    pub user_data: Option<String>,
    pub created: String,
    pub updated: String,
    pub launched_at: Option<String>,
    /// When BUILD ends.
    pub ready_at: Instant,
    /// What the end of BUILD brings: ACTIVE when `None`, else ERROR with this code and message.
    pub build_fault: Option<(u16, String)>,
    /// A fault due later (`Cloud::break_server_after`).
    pub break_at: Option<(Instant, String)>,
}

/// Fault injection: a server placed (or asked for) in `availability_zone` and/or on `host`
/// (`None` matches any) goes ERROR with "No valid host" after its boot delay, with
/// `probability` (1.0 = always), drawn from the cloud's seeded generator.
#[derive(Debug, Clone)]
pub struct NoValidHost {
    pub availability_zone: Option<String>,
    pub host: Option<String>,
    pub probability: f64,
}

/// A refusal as Nova sends it: the status and the exact JSON body, so a caller without HTTP
/// can quote it (gophercloud: `Expected HTTP response code [202] when accessing [POST <url>],
/// but got 403 instead: <body>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: String,
}

impl ApiError {
    /// Nova's fault body: the key follows the status (`nova/api/openstack/wsgi.py`).
    pub fn nova(status: StatusCode, message: &str) -> ApiError {
        let key = match status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            409 => "conflictingRequest",
            413 | 429 => "overLimit",
            _ => "computeFault",
        };
        let body = json!({ key: { "code": status.as_u16(), "message": message } });
        ApiError {
            status,
            body: body.to_string(),
        }
    }

    /// The `message` inside the body.
    pub fn message(&self) -> String {
        let v: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|inner| inner["message"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response()
    }
}

fn bad_request(message: &str) -> ApiError {
    ApiError::nova(StatusCode::BAD_REQUEST, message)
}

/// Nova's JSON-schema refusal of the `server` body.
fn schema_error(req: &Value, reason: &str) -> ApiError {
    bad_request(&format!(
        "Invalid input for field/attribute server. Value: {req}. {reason}"
    ))
}

/// A server metadata key Nova's schema accepts.
fn metadata_key_ok(key: &str) -> bool {
    (1..=255).contains(&key.chars().count())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c))
}

fn instance_not_found(id: &str) -> ApiError {
    ApiError::nova(
        StatusCode::NOT_FOUND,
        &format!("Instance {id} could not be found."),
    )
}

/// The microversion the caller asked for (`X-OpenStack-Nova-API-Version` or
/// `OpenStack-API-Version: compute 2.N`); 2.1 when none, as Nova does.
pub fn microversion(headers: &HeaderMap) -> (u32, u32) {
    let raw = headers
        .get("x-openstack-nova-api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("openstack-api-version")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("compute "))
                .map(str::to_string)
        });
    match raw.as_deref().map(str::trim) {
        Some("latest") => MAX_MICROVERSION,
        Some(v) => v
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((2, 1)),
        None => (2, 1),
    }
}

/// The highest microversion the version document advertises.
const MAX_MICROVERSION: (u32, u32) = (2, 90);

/// The last path segment of a reference: Nova takes `flavorRef`/`imageRef` as an ID or a URL.
fn last_segment(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// A NIC asked for in `networks`.
enum Nic {
    Port(String),
    Network {
        id: String,
        fixed_ip: Option<Ipv4Addr>,
    },
}

/// A block device asked for in `block_device_mapping_v2`, checked.
struct Bdm {
    source: BdmSource,
    boot_index: Option<i64>,
    delete_on_termination: bool,
}

enum BdmSource {
    /// A new volume Cinder creates (from an image, or blank).
    NewVolume {
        image_id: Option<String>,
        size_gib: i64,
        volume_type: Option<String>,
    },
    /// An existing volume of the project.
    Volume(String),
    /// The image booted on local disk (same as `imageRef`).
    LocalImage(String),
}

/// Reads an integer Nova accepts as a number or a numeric string (`"volume_size": "1"`).
fn int_field(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

const GIB: i64 = 1024 * 1024 * 1024;

/// Nova's schema for server metadata: keys of letters, digits and `-_:. ` (no `/`), at most
/// 255 characters each, and string values of at most 255. The refusal quotes the metadata
/// as Python prints a dict.
fn check_metadata(metadata: &Value) -> Result<(), ApiError> {
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
    /// Real time for `sim_seconds` of simulated time.
    pub fn sim_delay(&self, sim_seconds: f64) -> Duration {
        let scale = if self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        };
        Duration::from_secs_f64((sim_seconds / scale).max(0.0))
    }

    /// Applies what is due: BUILD servers whose boot delay has passed become ACTIVE (or ERROR
    /// with their build fault), and scheduled breaks happen. Cheap; call it before reading.
    pub fn advance(&mut self) {
        let now = Instant::now();
        let wall = |at: Instant| {
            let ago =
                chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default();
            (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        for s in &mut self.servers {
            if s.status == ServerStatus::Build && s.ready_at <= now {
                let at = wall(s.ready_at);
                s.updated = at.clone();
                match s.build_fault.take() {
                    None => {
                        s.status = ServerStatus::Active;
                        s.launched_at = Some(at);
                    }
                    Some((code, message)) => {
                        s.status = ServerStatus::Error;
                        s.fault = Some(ServerFault {
                            code,
                            details: format!("nova.exception: {message}"),
                            message,
                            created: at,
                        });
                    }
                }
            }
            if let Some((due, _)) = &s.break_at
                && *due <= now
                && s.status != ServerStatus::Build
            {
                let (due, message) = s.break_at.take().expect("checked above");
                let at = wall(due);
                s.status = ServerStatus::Error;
                s.updated = at.clone();
                s.fault = Some(ServerFault {
                    code: 500,
                    details: String::new(),
                    message,
                    created: at,
                });
            }
        }
    }

    /// Puts a server into ERROR now with a 500 fault, as a failed hypervisor would. Its ports,
    /// volumes and host stay, as in Nova. `false` if there is no such server.
    pub fn break_server(&mut self, id: &str, message: &str) -> bool {
        self.break_server_after(id, 0.0, message)
    }

    /// Like `break_server`, `sim_seconds` of simulated time from now (and not before the server
    /// has left BUILD).
    pub fn break_server_after(&mut self, id: &str, sim_seconds: f64, message: &str) -> bool {
        let due = Instant::now() + self.sim_delay(sim_seconds);
        let Some(s) = self.servers.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        s.break_at = Some((due, message.to_string()));
        self.advance();
        true
    }

    /// vCPUs, RAM (MiB) and servers placed on a hypervisor.
    pub fn hypervisor_usage(&self, host: &str) -> (i64, i64, i64) {
        self.servers
            .iter()
            .filter(|s| s.host == host)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .fold((0, 0, 0), |(c, r, n), f| {
                (c + f.vcpus, r + f.ram_mib, n + 1)
            })
    }

    /// The flavors' disk (GiB) of the servers placed on a hypervisor.
    pub fn hypervisor_disk(&self, host: &str) -> i64 {
        self.servers
            .iter()
            .filter(|s| s.host == host)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .map(|f| f.disk_gib)
            .sum()
    }

    /// Instances, cores and RAM (MiB) a project's servers count against its Nova quota (every
    /// server, ERROR ones too, as Nova counts them).
    pub fn compute_usage(&self, project: &str) -> (i64, i64, i64) {
        self.servers
            .iter()
            .filter(|s| s.project_id == project)
            .filter_map(|s| self.flavors.iter().find(|f| f.id == s.flavor_id))
            .fold((0, 0, 0), |(n, c, r), f| {
                (n + 1, c + f.vcpus, r + f.ram_mib)
            })
    }

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
        let fits = |c: &Cloud, h: &super::Hypervisor| {
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
    fn requested_nics(&self, req: &Value, project: &str) -> Result<Vec<Nic>, ApiError> {
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

    /// `block_device_mapping_v2`, checked against Glance and Cinder as Nova's API does.
    fn requested_bdms(
        &self,
        req: &Value,
        project: &str,
        microversion: (u32, u32),
    ) -> Result<Vec<Bdm>, ApiError> {
        let Some(entries) = req["block_device_mapping_v2"].as_array() else {
            return Ok(Vec::new());
        };
        let invalid = |why: &str| bad_request(&format!("Block Device Mapping is Invalid: {why}"));
        let mut out = Vec::new();
        for e in entries {
            let source_type = e["source_type"].as_str().unwrap_or("blank");
            let dest = e["destination_type"].as_str().unwrap_or("volume");
            let uuid = e["uuid"].as_str().unwrap_or_default().to_string();
            let size = int_field(&e["volume_size"]);
            let volume_type = e["volume_type"].as_str().map(str::to_string);
            if volume_type.is_some() && microversion < (2, 67) {
                return Err(schema_error(
                    req,
                    "Additional properties are not allowed ('volume_type' was unexpected)",
                ));
            }
            if let Some(t) = &volume_type
                && volume::volume_type_name(self, Some(t)).is_err()
            {
                return Err(bad_request(&format!("Volume type {t} could not be found.")));
            }
            let source = match (source_type, dest) {
                ("image", "local") => {
                    if !self.images.iter().any(|i| i.id == uuid) {
                        return Err(bad_request(&format!("Image {uuid} could not be found.")));
                    }
                    BdmSource::LocalImage(uuid)
                }
                ("image", "volume") => {
                    let Some(image) = self.images.iter().find(|i| i.id == uuid) else {
                        return Err(bad_request(&format!("Image {uuid} could not be found.")));
                    };
                    let min = image.min_disk_gib.max(1);
                    let size_gib = size.unwrap_or(min);
                    if size_gib < image.min_disk_gib {
                        return Err(bad_request(&format!(
                            "Volume is smaller than the minimum size specified in image metadata. \
                             Volume size is {} bytes, minimum size is {} bytes.",
                            size_gib * GIB,
                            image.min_disk_gib * GIB
                        )));
                    }
                    BdmSource::NewVolume {
                        image_id: Some(uuid),
                        size_gib,
                        volume_type,
                    }
                }
                ("blank", "volume") => match size.filter(|s| *s > 0) {
                    Some(size_gib) => BdmSource::NewVolume {
                        image_id: None,
                        size_gib,
                        volume_type,
                    },
                    None => return Err(invalid("Blank volumes need a volume_size.")),
                },
                ("volume", "volume") => {
                    let Some(v) = self
                        .volumes
                        .iter()
                        .find(|v| v.id == uuid && v.project_id == project)
                    else {
                        return Err(bad_request(&format!("Volume {uuid} could not be found.")));
                    };
                    if !v.attachments.is_empty() {
                        return Err(bad_request(&format!(
                            "Invalid volume: Volume {uuid} status must be available or downloading"
                        )));
                    }
                    BdmSource::Volume(uuid)
                }
                (s, d) => {
                    return Err(invalid(&format!(
                        "source_type {s} with destination_type {d} is not simulated."
                    )));
                }
            };
            out.push(Bdm {
                source,
                boot_index: e["boot_index"].as_i64().or_else(|| {
                    e["boot_index"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .filter(|i: &i64| *i >= 0)
                }),
                delete_on_termination: e["delete_on_termination"].as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }

    /// Nova's quota check for one more server of `vcpus` and `ram` MiB: 403 with Nova's text.
    fn check_compute_quota(&self, project: &str, vcpus: i64, ram: i64) -> Result<(), ApiError> {
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
    fn volume_quota_refuses(&self, project: &str, sizes: &[i64]) -> bool {
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
    fn bind_ports(
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
    fn new_port(
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

    /// Creates the volumes the mapping asks Cinder for and attaches them and the existing ones;
    /// the boot device is `/dev/vda`, the rest follow in request order.
    fn attach_volumes(
        &mut self,
        bdms: &[Bdm],
        server_id: &str,
        caller: &Token,
        host: &str,
        az: &str,
    ) -> Vec<AttachedVolume> {
        let mut ordered: Vec<&Bdm> = bdms
            .iter()
            .filter(|b| !matches!(b.source, BdmSource::LocalImage(_)))
            .collect();
        ordered.sort_by_key(|b| b.boot_index.filter(|i| *i >= 0).unwrap_or(i64::MAX));
        // Booted from an image, the local disk is `/dev/vda` and volumes start at `vdb`.
        let local_boot = ordered.first().is_none_or(|b| b.boot_index != Some(0));
        let now = now_rfc3339();
        let mut out = Vec::new();
        for (i, b) in ordered.into_iter().enumerate() {
            let letter = (b'a' + ((i + usize::from(local_boot)) % 26) as u8) as char;
            let device = format!("/dev/vd{letter}");
            let attachment = VolumeAttachment {
                id: self.new_id(),
                server_id: server_id.to_string(),
                host_name: host.to_string(),
                device: device.clone(),
                attached_at: now.clone(),
            };
            let volume_id = match &b.source {
                BdmSource::Volume(id) => {
                    if let Some(v) = self.volumes.iter_mut().find(|v| &v.id == id) {
                        v.attachments.push(attachment);
                    }
                    id.clone()
                }
                BdmSource::NewVolume {
                    image_id,
                    size_gib,
                    volume_type,
                } => {
                    let type_name =
                        volume::volume_type_name(self, volume_type.as_deref()).unwrap_or_default();
                    let v = Volume {
                        id: self.new_id(),
                        name: if image_id.is_none() {
                            format!("{server_id}-blank-vol")
                        } else {
                            String::new()
                        },
                        project_id: caller.project_id.clone(),
                        user_id: caller.user_id.clone(),
                        size_gib: *size_gib,
                        volume_type: type_name,
                        availability_zone: az.to_string(),
                        image_id: image_id.clone(),
                        description: None,
                        attachments: vec![attachment],
                        created: now.clone(),
                    };
                    let id = v.id.clone();
                    self.volumes.push(v);
                    id
                }
                BdmSource::LocalImage(_) => unreachable!("filtered above"),
            };
            out.push(AttachedVolume {
                id: volume_id,
                delete_on_termination: b.delete_on_termination,
                device,
            });
        }
        out
    }

    /// The server `id` as the caller may see it: its project's, or any for an admin (Nova's
    /// `os_compute_api:servers:show`/`delete` default to admin or project member); another
    /// project's server is `itemNotFound` to a member, as Nova answers.
    fn server_index(&self, caller: &Token, id: &str) -> Option<usize> {
        let admin = caller.roles.iter().any(|r| r == "admin");
        self.servers
            .iter()
            .position(|s| s.id == id && (admin || s.project_id == caller.project_id))
    }

    /// `DELETE /servers/{id}`: the server is gone at once. Ports Nova created are deleted, the
    /// caller's own ports unbound; volumes with `delete_on_termination` are deleted, the others
    /// detached (available again).
    pub fn delete_server(&mut self, caller: &Token, id: &str) -> Result<(), ApiError> {
        self.advance();
        let Some(i) = self.server_index(caller, id) else {
            return Err(instance_not_found(id));
        };
        let s = self.servers.remove(i);
        self.ports.retain(|p| !s.own_ports.contains(&p.id));
        for f in self.floating_ips.iter_mut() {
            if f.port_id.as_ref().is_some_and(|p| s.own_ports.contains(p)) {
                f.port_id = None;
                f.fixed_ip = None;
            }
        }
        for p in self.ports.iter_mut().filter(|p| p.device_id == s.id) {
            p.device_id.clear();
            p.device_owner.clear();
            p.binding_host.clear();
        }
        for v in &mut self.volumes {
            v.attachments.retain(|a| a.server_id != s.id);
        }
        let doomed: Vec<&str> = s
            .volumes
            .iter()
            .filter(|v| v.delete_on_termination)
            .map(|v| v.id.as_str())
            .collect();
        self.volumes.retain(|v| !doomed.contains(&v.id.as_str()));
        Ok(())
    }

    /// `POST /servers/{id}/action` for `os-stop`, `os-start` and `reboot`, with Nova's state
    /// checks. Takes effect at once.
    pub fn server_action(
        &mut self,
        caller: &Token,
        id: &str,
        action: &Value,
    ) -> Result<(), ApiError> {
        self.advance();
        let Some(i) = self.server_index(caller, id) else {
            return Err(instance_not_found(id));
        };
        let Some((name, args)) = action.as_object().and_then(|o| o.iter().next()) else {
            return Err(bad_request("Malformed request body"));
        };
        use ServerStatus::*;
        let (method, allowed, to): (&str, &[ServerStatus], ServerStatus) = match name.as_str() {
            "os-stop" => ("stop", &[Active, Error], Shutoff),
            "os-start" => ("start", &[Shutoff], Active),
            "reboot" if args["type"].as_str() == Some("HARD") => {
                ("reboot", &[Active, Shutoff, Error], Active)
            }
            "reboot" => ("reboot", &[Active], Active),
            other => return Err(bad_request(&format!("There is no such action: {other}"))),
        };
        let s = &mut self.servers[i];
        if !allowed.contains(&s.status) {
            return Err(ApiError::nova(
                StatusCode::CONFLICT,
                &format!(
                    "Cannot '{method}' instance {id} while it is in vm_state {}",
                    s.status.vm_state()
                ),
            ));
        }
        if s.host.is_empty() {
            return Err(ApiError::nova(
                StatusCode::CONFLICT,
                &format!("Instance {id} is not ready"),
            ));
        }
        s.status = to;
        if to == Active {
            s.fault = None;
        }
        s.updated = now_rfc3339();
        Ok(())
    }

    fn server_links(&self, id: &str) -> Value {
        json!([
            { "rel": "self", "href": format!("{}/compute/v2.1/servers/{id}", self.base) },
            { "rel": "bookmark", "href": format!("{}/compute/servers/{id}", self.base) },
        ])
    }

    /// `addresses`: each bound port's fixed IPs under its network's name, then the floating IPs
    /// associated with it.
    fn addresses(&self, s: &Server) -> Value {
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
    fn server_json(&self, s: &Server, admin: bool, microversion: (u32, u32)) -> Value {
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
fn host_id(project: &str, host: &str) -> String {
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
fn naive_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
        .unwrap_or_default()
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/servers", get(list).post(create))
        .route("/servers/detail", get(list_detail))
        .route("/servers/{id}", get(show).delete(delete))
        .route("/servers/{id}/action", post(action))
}

fn is_admin(t: &Token) -> bool {
    t.roles.iter().any(|r| r == "admin")
}

async fn create(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.create_server(&t, &body["server"], microversion(&headers)) {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Nova's `name` filter is a regular expression; anchors and plain text are what clients send.
fn name_matches(pattern: &str, name: &str) -> bool {
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
fn listed<'a>(
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

async fn list(State(cloud): State<Shared>, Extension(t): Extension<Token>, q: Pairs) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let servers = match listed(&c, &t, &q, false) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = servers
        .into_iter()
        .map(|s| json!({ "id": s.id, "name": s.name, "links": c.server_links(&s.id) }))
        .collect();
    Json(json!({ "servers": page(items, &q) })).into_response()
}

async fn list_detail(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    q: Pairs,
) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let mv = microversion(&headers);
    let servers = match listed(&c, &t, &q, true) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let items: Vec<Value> = servers
        .into_iter()
        .map(|s| c.server_json(s, is_admin(&t), mv))
        .collect();
    Json(json!({ "servers": page(items, &q) })).into_response()
}

async fn show(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    c.advance();
    match c.server_index(&t, &id) {
        Some(i) => {
            let v = c.server_json(&c.servers[i], is_admin(&t), microversion(&headers));
            Json(json!({ "server": v })).into_response()
        }
        None => instance_not_found(&id).into_response(),
    }
}

async fn delete(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.delete_server(&t, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn action(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    match c.server_action(&t, &id, &body) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The state console's view of a server.
pub(super) fn state_json(s: &Server) -> Value {
    json!({
        "id": s.id, "name": s.name, "project_id": s.project_id, "status": s.status.as_str(),
        "availability_zone": s.availability_zone, "host": s.host,
        "fault": s.fault.as_ref().map(|f| json!({ "code": f.code, "message": f.message, "created": f.created })),
        "ports": s.ports, "volumes": s.volumes.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        "metadata": s.metadata, "tags": s.tags, "flavor_id": s.flavor_id, "image_id": s.image_id,
        "key_name": s.key_name, "security_groups": s.security_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_error_bodies_are_keyed_by_status() {
        let e = ApiError::nova(StatusCode::FORBIDDEN, "Quota exceeded");
        assert_eq!(
            e.body,
            r#"{"forbidden":{"code":403,"message":"Quota exceeded"}}"#
        );
        assert_eq!(e.message(), "Quota exceeded");
    }

    #[test]
    fn the_name_filter_understands_anchors() {
        assert!(name_matches("w-0", "demo-w-01"));
        assert!(name_matches("^demo", "demo-w-01"));
        assert!(!name_matches("^w", "demo-w-01"));
        assert!(name_matches("^demo-w-01$", "demo-w-01"));
        assert!(!name_matches("^demo-w-0$", "demo-w-01"));
    }

    /// The demo cloud with instant boots, and its admin's token.
    fn demo() -> (Cloud, Token) {
        let scenario = crate::sim::scenario::Scenario::parse(crate::sim::scenario::DEMO).unwrap();
        let mut c = Cloud::new(
            &scenario,
            "http://sim".into(),
            &mut fastrand::Rng::with_seed(7),
        )
        .unwrap();
        c.boot_seconds = 0.0;
        let (p, u) = (&c.projects[0], &c.projects[0].users[0]);
        let t = Token {
            project_id: p.id.clone(),
            user_id: u.id.clone(),
            roles: u.roles.clone(),
            issued_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
        };
        (c, t)
    }

    #[test]
    fn controllers_create_break_and_delete_servers_without_http() {
        let (mut c, t) = demo();
        c.no_valid_host.push(NoValidHost {
            availability_zone: Some("az2".into()),
            host: None,
            probability: 1.0,
        });
        let req = |az: &str| {
            json!({ "name": "w", "flavorRef": c.flavors[0].id, "imageRef": c.images[0].id,
                    "availability_zone": az, "networks": "none" })
        };
        let (in_az1, in_az2, nowhere) = (req("az1"), req("az2"), req("az9"));
        let id = |v: Value| v["server"]["id"].as_str().unwrap().to_string();

        let doomed = id(c.create_server(&t, &in_az2, (2, 60)).unwrap());
        let s = c.servers.iter().find(|s| s.id == doomed).unwrap();
        assert_eq!(s.status, ServerStatus::Error);
        let fault = s.fault.as_ref().unwrap();
        assert_eq!(
            (fault.code, fault.message.as_str()),
            (500, "No valid host was found. ")
        );

        let fine = id(c.create_server(&t, &in_az1, (2, 60)).unwrap());
        assert_eq!(c.servers[1].status, ServerStatus::Active);
        assert!(c.break_server(&fine, "Hypervisor compute-1 lost power"));
        assert_eq!(c.servers[1].status, ServerStatus::Error);
        assert_eq!(
            c.servers[1].fault.as_ref().unwrap().message,
            "Hypervisor compute-1 lost power"
        );
        assert_eq!(c.compute_usage(&t.project_id).0, 2);

        let refused = c.create_server(&t, &nowhere, (2, 60)).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            refused.body,
            r#"{"badRequest":{"code":400,"message":"The requested availability zone is not available"}}"#
        );

        c.delete_server(&t, &fine).unwrap();
        let gone = c.delete_server(&t, &fine).unwrap_err();
        assert_eq!(
            gone.message(),
            format!("Instance {fine} could not be found.")
        );
    }

    #[test]
    fn unknown_keypairs_security_groups_and_slashed_metadata_keys_are_refused_as_nova_does() {
        let (mut c, t) = demo();
        let (flavor, image) = (c.flavors[0].id.clone(), c.images[0].id.clone());
        let req = |extra: Value| {
            let mut r = json!({ "name": "w", "flavorRef": flavor, "imageRef": image,
                                "networks": "none" });
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            r
        };
        let refused = |c: &mut Cloud, r: Value| c.create_server(&t, &r, (2, 60)).unwrap_err();
        let e = refused(&mut c, req(json!({"key_name": "nope"})));
        assert_eq!(
            (e.status, e.message()),
            (StatusCode::BAD_REQUEST, "Invalid key_name provided.".into())
        );
        let e = refused(&mut c, req(json!({"security_groups": [{"name": "web"}]})));
        assert_eq!(
            e.message(),
            "Unable to find security_group with name or id 'web'"
        );
        let e = refused(&mut c, req(json!({"metadata": {"capstan.io/job": "j"}})));
        assert_eq!(
            e.message(),
            "Invalid input for field/attribute metadata. Value: {'capstan.io/job': 'j'}. \
             'capstan.io/job' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"
        );
        let fine = req(
            json!({"key_name": "demo-key", "security_groups": [{"name": "default"}],
                               "metadata": {"capstan.io:job": "j"}}),
        );
        c.create_server(&t, &fine, (2, 60)).unwrap();
        assert_eq!(c.servers[0].key_name.as_deref(), Some("demo-key"));
    }

    #[test]
    fn microversions_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(microversion(&h), (2, 1));
        h.insert("x-openstack-nova-api-version", "2.47".parse().unwrap());
        assert_eq!(microversion(&h), (2, 47));
        let mut h = HeaderMap::new();
        h.insert("openstack-api-version", "compute 2.60".parse().unwrap());
        assert_eq!(microversion(&h), (2, 60));
    }
}

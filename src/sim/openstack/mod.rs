//! The simulated OpenStack: Keystone v3, Nova, Neutron, Cinder and Glance subsets over HTTP,
//! shaped like the upstream APIs so that the `openstack` crate (and any other client) uses
//! them as it would a real cloud.
//!
//! Every service sits under its own path prefix on one listener (`/identity/v3`,
//! `/compute/v2.1`, `/networking/v2.0`, `/volume/v3`, `/image/v2`) and is published in the
//! token's service catalog. Every call but token creation needs a valid `X-Auth-Token`.

mod compute;
pub mod control;
mod image;
mod keypairs;
mod keystone;
mod network;
mod ports;
mod security_groups;
pub mod servers;
mod volume;

pub use servers::{ApiError, AttachedVolume, NoValidHost, Server, ServerFault, ServerStatus};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::scenario::{Quotas, Scenario};
use crate::config::Secret;

/// The state of the simulated cloud. One lock: handlers are short and never await inside it.
pub struct Cloud {
    /// `http://host:port`, for catalog URLs and self links.
    pub base: String,
    pub region: String,
    pub projects: Vec<Project>,
    pub tokens: HashMap<String, Token>,
    pub availability_zones: Vec<String>,
    pub hypervisors: Vec<Hypervisor>,
    pub flavors: Vec<Flavor>,
    pub images: Vec<Image>,
    pub volume_types: Vec<VolumeType>,
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub ports: Vec<Port>,
    pub floating_ips: Vec<FloatingIp>,
    pub volumes: Vec<Volume>,
    /// Nova keypairs; each belongs to a user, not a project, as in Nova.
    pub keypairs: Vec<Keypair>,
    /// Neutron security groups; every project has its `default`, as Neutron makes one.
    pub security_groups: Vec<SecurityGroup>,
    /// Nova servers, oldest first.
    pub servers: Vec<Server>,
    /// Simulated seconds per real second: delays (a server's boot) are divided by it.
    pub time_scale: f64,
    /// How long a server stays in BUILD, in simulated seconds.
    pub boot_seconds: f64,
    /// Fault injection: servers whose placement matches an entry go ERROR with "No valid
    /// host" after the boot delay, as if the scheduler had found no room.
    pub no_valid_host: Vec<NoValidHost>,
    /// Injected 5xx outages.
    pub outages: Vec<Outage>,
    /// Servers created so far, for Nova's `instance-%08x` names.
    pub instances_created: u64,
    /// Hands out IDs and MAC addresses; seeded, so a run repeats.
    pub rng: fastrand::Rng,
    /// When the cloud was created (RFC 3339), for resources' timestamps.
    pub born: String,
}

pub struct Project {
    pub id: String,
    pub name: String,
    pub users: Vec<User>,
    pub quotas: Quotas,
}

pub struct User {
    pub id: String,
    pub name: String,
    pub password: Secret,
    pub roles: Vec<String>,
}

/// An issued token: who it is for and until when.
#[derive(Clone)]
pub struct Token {
    pub project_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl Token {
    /// Whether the token carries the `admin` role (in its project: the sim has no system
    /// scope, so this is the `role:admin` of the services' default policies).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

pub struct Hypervisor {
    pub id: i64,
    pub name: String,
    pub availability_zone: String,
    pub vcpus: i64,
    pub memory_mib: i64,
}

pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_gib: i64,
}

pub struct Image {
    pub id: String,
    pub name: String,
    pub min_disk_gib: i64,
    pub size_bytes: i64,
}

pub struct VolumeType {
    pub id: String,
    pub name: String,
}

/// The volume type Cinder creates for itself and gives volumes asked for without a type.
pub const DEFAULT_VOLUME_TYPE: &str = "__DEFAULT__";

pub struct Network {
    pub id: String,
    pub name: String,
    pub project_id: Option<String>,
    pub external: bool,
}

pub struct Subnet {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub project_id: Option<String>,
    pub cidr: crate::ipv4::Cidr,
    pub gateway: Option<String>,
}

pub struct Port {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub project_id: String,
    /// `(subnet ID, address)` pairs.
    pub fixed_ips: Vec<(String, std::net::Ipv4Addr)>,
    pub mac: String,
    pub device_id: String,
    pub device_owner: String,
    /// `binding:host_id`: the compute host of the server the port is bound to, or empty.
    pub binding_host: String,
    /// What the creator wrote (CAPO: `Created by cluster-api-provider-openstack cluster …`).
    pub description: String,
    /// Neutron's standard-attr-tag tags (CAPO puts an OpenStackMachine's `tags` here).
    pub tags: Vec<String>,
    /// The IDs of the security groups applied to it (the project's `default` unless asked).
    pub security_groups: Vec<String>,
    pub created: String,
}

/// A Nova keypair: a public key registered under a name, for one user.
pub struct Keypair {
    /// Nova's database row ID, shown by `GET /os-keypairs/{name}`.
    pub id: i64,
    pub name: String,
    pub user_id: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created: String,
}

/// A Neutron security group and its rules.
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub description: String,
    pub rules: Vec<SecurityGroupRule>,
    pub created: String,
}

pub struct SecurityGroupRule {
    pub id: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// `IPv4` or `IPv6`.
    pub ethertype: &'static str,
    /// The group whose members may reach this one (the default group's ingress rules).
    pub remote_group_id: Option<String>,
}

pub struct Volume {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    pub size_gib: i64,
    /// The type's name, as Cinder reports it.
    pub volume_type: String,
    pub availability_zone: String,
    pub image_id: Option<String>,
    pub description: Option<String>,
    /// The servers it is attached to (Nova's boot-from-volume and data volumes).
    pub attachments: Vec<VolumeAttachment>,
    pub created: String,
}

/// One attachment of a volume to a server, as Cinder lists it.
pub struct VolumeAttachment {
    pub id: String,
    pub server_id: String,
    pub host_name: String,
    pub device: String,
    pub attached_at: String,
}

pub struct FloatingIp {
    pub id: String,
    pub project_id: String,
    pub floating_network_id: String,
    pub address: std::net::Ipv4Addr,
    pub port_id: Option<String>,
    pub fixed_ip: Option<std::net::Ipv4Addr>,
    pub description: String,
    pub created: String,
}

impl Cloud {
    /// A fresh resource ID.
    pub fn new_id(&mut self) -> String {
        fresh_id(&mut self.rng)
    }

    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// Builds the cloud a scenario describes. IDs come from `rng`, so a seed repeats them.
    pub fn new(
        scenario: &Scenario,
        base: String,
        rng: &mut fastrand::Rng,
    ) -> anyhow::Result<Cloud> {
        // The cloud keeps its own generator for what it creates later.
        let own_rng = fastrand::Rng::with_seed(rng.u64(..));
        let mut id = || fresh_id(rng);
        let projects: Vec<Project> = scenario
            .projects
            .iter()
            .map(|p| Project {
                id: id().replace('-', ""),
                name: p.name.clone(),
                users: p
                    .users
                    .iter()
                    .map(|u| User {
                        id: String::new(),
                        name: u.name.clone(),
                        password: u.password.clone(),
                        roles: u.roles.clone(),
                    })
                    .collect(),
                quotas: p.quotas,
            })
            .collect();
        let mut projects = projects;
        for p in &mut projects {
            for u in &mut p.users {
                u.id = id().replace('-', "");
            }
        }
        let born = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut keypairs = Vec::new();
        let mut security_groups = Vec::new();
        for (p, spec) in projects.iter().zip(&scenario.projects) {
            for (u, uspec) in p.users.iter().zip(&spec.users) {
                for k in &uspec.keypairs {
                    keypairs.push(Keypair {
                        id: keypairs.len() as i64 + 1,
                        name: k.name.clone(),
                        user_id: u.id.clone(),
                        fingerprint: keypairs::fingerprint(&k.public_key),
                        public_key: k.public_key.clone(),
                        created: born.clone(),
                    });
                }
            }
            security_groups.push(security_groups::default_group(&p.id, &mut id, &born));
            for name in &spec.security_groups {
                security_groups.push(security_groups::group(&p.id, name, "", &mut id, &born));
            }
        }
        let project_id = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| projects.iter().find(|p| &p.name == n).map(|p| p.id.clone()))
        };
        let mut networks = Vec::new();
        let mut subnets = Vec::new();
        for n in &scenario.networks {
            let net_id = id();
            for s in &n.subnets {
                subnets.push(Subnet {
                    id: id(),
                    name: s.name.clone(),
                    network_id: net_id.clone(),
                    project_id: project_id(&n.project),
                    cidr: crate::ipv4::Cidr::parse(&s.cidr).map_err(anyhow::Error::msg)?,
                    gateway: s.gateway.clone(),
                });
            }
            networks.push(Network {
                id: net_id,
                name: n.name.clone(),
                project_id: project_id(&n.project),
                external: n.external,
            });
        }
        Ok(Cloud {
            base,
            region: scenario.region.clone(),
            tokens: HashMap::new(),
            availability_zones: scenario.availability_zones.clone(),
            hypervisors: scenario
                .hypervisors
                .iter()
                .enumerate()
                .map(|(i, h)| Hypervisor {
                    id: i as i64 + 1,
                    name: h.name.clone(),
                    availability_zone: h.availability_zone.clone(),
                    vcpus: h.vcpus,
                    memory_mib: h.memory_mib,
                })
                .collect(),
            flavors: scenario
                .flavors
                .iter()
                .map(|f| Flavor {
                    id: id(),
                    name: f.name.clone(),
                    vcpus: f.vcpus,
                    ram_mib: f.ram_mib,
                    disk_gib: f.disk_gib,
                })
                .collect(),
            images: scenario
                .images
                .iter()
                .map(|i| Image {
                    id: id(),
                    name: i.name.clone(),
                    min_disk_gib: i.min_disk_gib,
                    size_bytes: i.size_bytes,
                })
                .collect(),
            // Cinder always has `__DEFAULT__`, the type of a volume asked for without one.
            volume_types: scenario
                .volume_types
                .iter()
                .map(String::as_str)
                .chain([DEFAULT_VOLUME_TYPE])
                .map(|n| VolumeType {
                    id: id(),
                    name: n.to_string(),
                })
                .collect(),
            projects,
            networks,
            subnets,
            ports: Vec::new(),
            floating_ips: Vec::new(),
            volumes: Vec::new(),
            keypairs,
            security_groups,
            servers: Vec::new(),
            time_scale: 1.0,
            boot_seconds: BOOT_SECONDS,
            no_valid_host: Vec::new(),
            outages: Vec::new(),
            instances_created: 0,
            rng: own_rng,
            born,
        })
    }
}

/// A resource that belongs to one project: what every show, update and delete looks up.
pub(super) trait Owned {
    fn id(&self) -> &str;
    fn project_id(&self) -> &str;
}

macro_rules! owned {
    ($($t:ty),*) => {$(
        impl Owned for $t {
            fn id(&self) -> &str { &self.id }
            fn project_id(&self) -> &str { &self.project_id }
        }
    )*};
}
owned!(Port, FloatingIp, Volume, Server, SecurityGroup);

/// Where the caller's resource `id` sits in `items`: another project's counts as absent
/// (the services answer 404, not 403, so IDs do not leak across projects), except to an
/// admin, whom the services' default policies (`admin_or_owner` and its successors: Nova's
/// `servers:show`, Neutron's `get_port`/`get_floatingip`, Cinder's `volume:get`) let reach
/// any project's resource by ID.
pub(super) fn position_owned<T: Owned>(items: &[T], id: &str, t: &Token) -> Option<usize> {
    items
        .iter()
        .position(|x| x.id() == id && (t.is_admin() || x.project_id() == t.project_id))
}

/// Whether a Neutron list shows a resource of `project` to the caller. Neutron scopes a
/// list to the caller's project by its policy engine, not by a query filter: a member sees
/// its own project's items only, and an admin sees every project's (`GET /v2.0/ports` as
/// admin lists all ports) unless it filters with `project_id` or `tenant_id`, as upstream.
pub(super) fn neutron_listed(t: &Token, project: &str, q: &[(String, String)]) -> bool {
    let wanted = param(q, "project_id").or(param(q, "tenant_id"));
    (t.is_admin() || project == t.project_id) && wanted.is_none_or(|w| w == project)
}

/// A well-formed UUID (v4 layout) drawn from `rng`.
fn fresh_id(rng: &mut fastrand::Rng) -> String {
    uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

pub type Shared = Arc<Mutex<Cloud>>;

/// How long a server builds, in simulated seconds, unless a fault says otherwise.
pub const BOOT_SECONDS: f64 = 20.0;

/// An injected outage: a service answering 5xx (MariaDB or RabbitMQ down behind it).
#[derive(Debug, Clone)]
pub struct Outage {
    pub id: String,
    /// Catalog types: `compute`, `network`, `block-storage`, `image`, `identity`; all when
    /// empty.
    pub services: Vec<String>,
    /// 500 or 503.
    pub status: u16,
    /// Chance per request, 0..=1.
    pub rate: f64,
    /// Until when (real time); for good when `None`.
    pub until: Option<std::time::Instant>,
    /// What broke: `database` (oslo.db) or `messaging` (oslo.messaging).
    pub cause: String,
}

/// The catalog type a path belongs to.
fn service_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "compute" => "compute",
        "networking" => "network",
        "volume" => "block-storage",
        "image" => "image",
        "identity" => "identity",
        _ => "",
    }
}

/// The body each service sends when its database or message bus is down.
fn outage_body(service: &str, status: u16, cause: &str) -> Value {
    let class = if cause == "messaging" {
        "oslo_messaging.exceptions.MessagingTimeout"
    } else {
        "oslo_db.exception.DBConnectionError"
    };
    match (service, status) {
        ("compute", 503) => {
            json!({"serviceUnavailable": {"code": 503, "message": "Service Unavailable"}})
        }
        ("compute", _) => json!({"computeFault": {"code": 500, "message": format!(
            "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.\n<class '{class}'>")}}),
        ("network", 503) => {
            json!({"NeutronError": {"type": "ServiceUnavailable", "message": "The server is currently unavailable. Please try again at a later time.", "detail": ""}})
        }
        ("network", _) => {
            json!({"NeutronError": {"type": "HTTPInternalServerError", "message": "Request Failed: internal server error while processing your request.", "detail": ""}})
        }
        ("identity", _) => {
            json!({"error": {"code": status, "message": "An unexpected error prevented the server from fulfilling your request.", "title": "Internal Server Error"}})
        }
        (_, _) => {
            json!({"computeFault": {"code": status, "message": "The server has either erred or is incapable of performing the requested operation."}})
        }
    }
}

/// Answers with an injected outage's 5xx instead of serving, while one applies.
async fn outages(State(cloud): State<Shared>, req: Request, next: Next) -> Response {
    let service = service_of(req.uri().path());
    let hit = {
        let mut c = cloud.lock().unwrap();
        let now = std::time::Instant::now();
        c.outages.retain(|o| o.until.is_none_or(|u| u > now));
        let roll = c.rng.f64();
        c.outages
            .iter()
            .find(|o| {
                (o.services.is_empty() || o.services.iter().any(|s| s == service)) && roll < o.rate
            })
            .map(|o| (o.status, o.cause.clone()))
    };
    match hit {
        Some((status, cause)) if !service.is_empty() => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(outage_body(service, status, &cause))).into_response()
        }
        _ => next.run(req).await,
    }
}

/// The OpenStack half of the simulator's router.
pub fn router(cloud: Shared) -> Router {
    let authed = Router::new()
        .nest("/compute/v2.1", compute::router())
        .nest("/networking", network::router())
        .nest("/volume", volume::router())
        .nest("/image", image::router())
        .route_layer(middleware::from_fn_with_state(cloud.clone(), require_token));
    // Version documents are public, and answer with and without the trailing slash that
    // gophercloud adds to every catalog URL before discovering versions there.
    let roots = Router::new()
        .route("/compute/v2.1", get(compute::version))
        .route("/compute/v2.1/", get(compute::version))
        .route("/networking", get(network::versions))
        .route("/networking/", get(network::versions))
        .route("/image", get(image::versions))
        .route("/image/", get(image::versions))
        .route("/volume", get(volume::versions))
        .route("/volume/", get(volume::versions))
        .route("/volume/v3", get(volume::versions_v3))
        .route("/volume/v3/", get(volume::versions_v3));
    Router::new()
        .nest("/identity", keystone::router())
        .merge(roots)
        .merge(authed)
        .layer(middleware::from_fn_with_state(cloud.clone(), outages))
        .nest("/sim/v1", control::router())
        .with_state(cloud)
}

/// The live token a header names, if any.
pub(super) fn token_from(
    cloud: &Shared,
    headers: &axum::http::HeaderMap,
    header: &str,
) -> Option<Token> {
    let id = headers.get(header)?.to_str().ok()?;
    let c = cloud.lock().unwrap();
    c.tokens
        .get(id)
        .filter(|tok| tok.expires_at > chrono::Utc::now())
        .cloned()
}

/// Resolves `X-Auth-Token` to its token, or answers 401 as Keystone-backed services do.
async fn require_token(State(cloud): State<Shared>, mut req: Request, next: Next) -> Response {
    match token_from(&cloud, req.headers(), "x-auth-token") {
        Some(t) => {
            req.extensions_mut().insert(t);
            next.run(req).await
        }
        None => unauthorized(),
    }
}

pub(super) fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "error",
        "The request you have made requires authentication.",
    )
}

/// An error in the shape the OpenStack services use: `{"<kind>": {"code", "message"}}`, and
/// Keystone's `{"error": {"code", "message", "title"}}`.
pub(super) fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut body = json!({ kind: { "code": status.as_u16(), "message": message } });
    if kind == "error" {
        body[kind]["title"] = json!(status.canonical_reason());
    }
    (status, axum::Json(body)).into_response()
}

/// Neutron's error shape: `{"NeutronError": {"type", "message", "detail"}}`.
pub(super) fn neutron_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({ "NeutronError": { "type": kind, "message": message, "detail": "" } });
    (status, axum::Json(body)).into_response()
}

/// Now, as the services print it.
pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!("{what} {id} could not be found."),
    )
}

/// A query string as pairs: clients repeat keys (`limit=2&limit=50`), so no struct.
pub(super) type Pairs = axum::extract::Query<Vec<(String, String)>>;

/// The last value given for `key`, as the upstream services read repeated keys.
pub(super) fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Applies `limit`/`marker` paging to items already filtered and in a stable order.
pub(super) fn page(items: Vec<Value>, q: &[(String, String)]) -> Vec<Value> {
    let start = match param(q, "marker") {
        Some(m) => match items.iter().position(|v| v["id"].as_str() == Some(m)) {
            Some(i) => i + 1,
            None => return Vec::new(),
        },
        None => 0,
    };
    let limit = param(q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(1000);
    items.into_iter().skip(start).take(limit).collect()
}

/// A version entry whose self link points at this listener, as Keystone, Nova and Cinder
/// write it: `updated`, and with a `media_type` the `media-types` list and the
/// `describedby` link. Neutron's and Glance's entries have neither (`bare`).
pub(super) fn version_doc(base: &str, id: &str, path: &str, micro: Option<(&str, &str)>) -> Value {
    let mut v = json!({
        "id": id,
        "status": "CURRENT",
        "updated": "2024-01-01T00:00:00Z",
        "links": [{ "rel": "self", "href": format!("{base}{path}") }],
    });
    if let Some((min, max)) = micro {
        v["min_version"] = json!(min);
        v["version"] = json!(max);
    }
    v
}

/// `version_doc` with the `media-types` of Keystone, Nova and Cinder, and (Nova, Cinder)
/// their documentation link.
pub(super) fn with_media_type(mut v: Value, media_type: &str, described: bool) -> Value {
    v["media-types"] = json!([{ "base": "application/json", "type": media_type }]);
    if described && let Some(links) = v["links"].as_array_mut() {
        links.push(json!({ "rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/" }));
    }
    v
}

/// A version entry with only `id`, `status` and `links` (Neutron, Glance).
pub(super) fn bare_version(base: &str, id: &str, path: &str, status: &str) -> Value {
    json!({ "id": id, "status": status, "links": [{ "rel": "self", "href": format!("{base}{path}") }] })
}

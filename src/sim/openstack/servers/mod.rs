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
//!
//! A file per concept: `create.rs` (the POST checked, ports bound, the server placed),
//! `block_devices.rs` (block_device_mapping_v2 and its volumes), `boot.rs` (BUILD → ACTIVE
//! or ERROR in simulated time, and usage of hypervisors and quota), `actions.rs` (delete,
//! power and reboot), `views.rs` (the server document, list filters), `http.rs` (routes).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Token;

mod actions;
mod block_devices;
mod boot;
mod create;
mod http;
mod views;

pub use http::routes;
pub(super) use views::state_json;

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

/// Whether the caller holds the admin role (which sees every project's servers).
fn is_admin(t: &Token) -> bool {
    t.roles.iter().any(|r| r == "admin")
}

#[cfg(test)]
mod tests;

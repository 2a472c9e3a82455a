//! Neutron security groups (`/v2.0/security-groups`): every project has its `default` group
//! (Neutron creates it with the project's first request; the simulator with the cloud), with
//! Neutron's four default rules. Nova resolves a server's `security_groups` names here, and
//! ports carry group IDs.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{
    Cloud, Pairs, SecurityGroup, SecurityGroupRule, Shared, Token, neutron_error, neutron_listed,
    now_rfc3339, page, param, position_owned,
};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2.0/security-groups", get(list).post(create))
        .route("/v2.0/security-groups/{id}", get(show).delete(delete))
}

/// A group without rules (a new group gets Neutron's two egress rules).
pub fn group(
    project: &str,
    name: &str,
    description: &str,
    id: &mut impl FnMut() -> String,
    now: &str,
) -> SecurityGroup {
    let rules = ["IPv4", "IPv6"]
        .into_iter()
        .map(|ethertype| SecurityGroupRule {
            id: id(),
            direction: "egress",
            ethertype,
            remote_group_id: None,
        })
        .collect();
    SecurityGroup {
        id: id(),
        name: name.to_string(),
        project_id: project.to_string(),
        description: description.to_string(),
        rules,
        created: now.to_string(),
    }
}

/// A project's `default` group: egress anywhere, ingress from its own members.
pub fn default_group(project: &str, id: &mut impl FnMut() -> String, now: &str) -> SecurityGroup {
    let mut g = group(project, "default", "Default security group", id, now);
    for ethertype in ["IPv4", "IPv6"] {
        g.rules.push(SecurityGroupRule {
            id: id(),
            direction: "ingress",
            ethertype,
            remote_group_id: Some(g.id.clone()),
        });
    }
    g
}

impl Cloud {
    /// The ID of the caller's project's group named (or with the ID) `wanted`, as Nova and
    /// Neutron resolve a name within the project.
    pub fn security_group_id(&self, project: &str, wanted: &str) -> Option<String> {
        self.security_groups
            .iter()
            .filter(|g| g.project_id == project)
            .find(|g| g.id == wanted || g.name == wanted)
            .map(|g| g.id.clone())
    }
}

fn rule_json(g: &SecurityGroup, r: &SecurityGroupRule, in_default: Value) -> Value {
    json!({
        "id": r.id, "security_group_id": g.id, "direction": r.direction, "ethertype": r.ethertype,
        "protocol": null, "port_range_min": null, "port_range_max": null,
        "remote_ip_prefix": null, "normalized_cidr": null, "remote_group_id": r.remote_group_id,
        "remote_address_group_id": null, "belongs_to_default_sg": in_default,
        "description": null, "tags": [], "revision_number": 0, "standard_attr_id": 1,
        "project_id": g.project_id, "tenant_id": g.project_id,
        "created_at": g.created, "updated_at": g.created,
    })
}

/// A group as Neutron shows it. The lists leave `belongs_to_default_sg` unset (null); the
/// show fills it.
fn group_json(g: &SecurityGroup, detail: bool) -> Value {
    let in_default = if detail {
        json!(g.name == "default")
    } else {
        Value::Null
    };
    let rules: Vec<Value> = g
        .rules
        .iter()
        .map(|r| rule_json(g, r, in_default.clone()))
        .collect();
    json!({
        "id": g.id, "name": g.name, "description": g.description, "security_group_rules": rules,
        "shared": false, "stateful": true, "tags": [], "revision_number": 1,
        "project_id": g.project_id, "tenant_id": g.project_id,
        "created_at": g.created, "updated_at": g.created,
    })
}

fn not_found(id: &str) -> Response {
    neutron_error(
        StatusCode::NOT_FOUND,
        "SecurityGroupNotFound",
        &format!("Security group {id} does not exist"),
    )
}

async fn list(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    q: Pairs,
) -> Json<Value> {
    let c = cloud.lock().unwrap();
    let items: Vec<Value> = c
        .security_groups
        .iter()
        .filter(|g| neutron_listed(&t, &g.project_id, &q))
        .filter(|g| param(&q, "name").is_none_or(|n| n == g.name))
        .filter(|g| param(&q, "id").is_none_or(|i| i == g.id))
        .map(|g| group_json(g, false))
        .collect();
    Json(json!({ "security_groups": page(items, &q) }))
}

async fn show(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let c = cloud.lock().unwrap();
    match position_owned(&c.security_groups, &id, &t) {
        Some(i) => Json(json!({ "security_group": group_json(&c.security_groups[i], true) }))
            .into_response(),
        None => not_found(&id),
    }
}

async fn create(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Json(body): Json<Value>,
) -> Response {
    let req = &body["security_group"];
    let Some(name) = req["name"].as_str() else {
        return neutron_error(
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
            "Failed to parse request. Required attribute 'name' not specified",
        );
    };
    let mut c = cloud.lock().unwrap();
    let description = req["description"].as_str().unwrap_or_default();
    let now = now_rfc3339();
    let mut rng = fastrand::Rng::with_seed(c.rng.u64(..));
    let g = group(
        &t.project_id,
        name,
        description,
        &mut || super::fresh_id(&mut rng),
        &now,
    );
    let view = group_json(&g, true);
    c.security_groups.push(g);
    (StatusCode::CREATED, Json(json!({ "security_group": view }))).into_response()
}

async fn delete(
    State(cloud): State<Shared>,
    Extension(t): Extension<Token>,
    Path(id): Path<String>,
) -> Response {
    let mut c = cloud.lock().unwrap();
    let Some(i) = position_owned(&c.security_groups, &id, &t) else {
        return not_found(&id);
    };
    if c.security_groups[i].name == "default" {
        return neutron_error(
            StatusCode::CONFLICT,
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        );
    }
    if c.ports.iter().any(|p| p.security_groups.contains(&id)) {
        return neutron_error(
            StatusCode::CONFLICT,
            "SecurityGroupInUse",
            &format!("Security Group {id} in use."),
        );
    }
    c.security_groups.remove(i);
    StatusCode::NO_CONTENT.into_response()
}

//! `scale_out`'s admission: its request shape (its own fields into `params`, every node
//! resolved against `defaults` so each stored node spec is complete), and a node's spec as
//! an amend would leave it checked like at submit. The checks against the cloud are in
//! `preflight.rs`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::preflight::preflight;
use crate::cloud::ClusterRef;
use crate::engine::admission::Refusal;
use crate::engine::request::{FieldError, JobRequest};
use crate::lifecycle::admission::Lifecycle;
use crate::lifecycle::params::{self, Flag, HumanDuration, KindParams, SubdomainName};
use crate::lifecycle::spec::{self, NodeSpec, parse_request_nodes};

/// `scale_out`'s own request fields, which travel in the job's params.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ScaleOutParams {
    /// Node fields every node inherits unless it sets them (flavor, image, network, subnet,
    /// root_volume, data_volumes, availability_zone, host, ssh_key, security_groups,
    /// floating_ip, roles, labels, taints).
    #[schema(value_type = Option<Object>)]
    pub defaults: Option<Value>,
    /// Refuse with 409 when the whole job does not fit the project's quota now (default:
    /// accept, and nodes wait as waiting_for_quota).
    #[schema(inline)]
    pub require_quota: Option<Flag>,
    /// The Kubernetes version of the new Machines (default: the cluster's MachineSets').
    pub version: Option<String>,
    /// The Secret with the workers' bootstrap data (default `<cluster>-bootstrap`).
    #[schema(inline)]
    pub bootstrap_secret: Option<SubdomainName>,
    /// A Machine with no server this long is looked into, the cloud asked why (default 60s).
    #[schema(inline)]
    pub stall_after: Option<HumanDuration>,
}

impl KindParams for ScaleOutParams {
    const FIELDS: &'static [&'static str] = &[
        "defaults",
        "require_quota",
        "version",
        "bootstrap_secret",
        "stall_after",
    ];
}

/// Moves `scale_out`'s own fields into `params` and resolves every node against the
/// defaults, so each stored node spec is complete.
pub(super) fn prepare(mut body: Value) -> Result<Value, Vec<FieldError>> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    let mut params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        Some(Value::Null) | None => Map::new(),
        Some(other) => {
            obj.insert("params".into(), other);
            return Ok(body);
        }
    };
    for f in ScaleOutParams::FIELDS {
        if let Some(v) = obj.remove(*f) {
            params.insert(f.to_string(), v);
        }
    }
    // Every problem at once: the nodes are resolved against `defaults` even when another
    // field is wrong.
    let (defaults, mut errs) = match params::parse::<ScaleOutParams>(&params) {
        Ok(own) => (own.defaults, Vec::new()),
        Err(e) => (params.get("defaults").cloned(), e),
    };
    let nodes = match obj.get("nodes") {
        Some(Value::Array(list)) => list.clone(),
        _ => {
            obj.insert("params".into(), Value::Object(params));
            return if errs.is_empty() { Ok(body) } else { Err(errs) };
        }
    };
    match parse_request_nodes(defaults.as_ref(), &nodes) {
        Ok(specs) => {
            let resolved: Vec<Value> = specs
                .iter()
                .map(|s| serde_json::to_value(s).expect("a node spec serializes"))
                .collect();
            obj.insert("nodes".into(), Value::Array(resolved));
        }
        Err(e) => errs.extend(e),
    }
    obj.insert("params".into(), Value::Object(params));
    if errs.is_empty() { Ok(body) } else { Err(errs) }
}

/// Checks a node's amended spec beside the job's other nodes (names unique), then with the
/// node checks preflight makes against the cluster's cloud; quota is waited for, not
/// refused. A repair's nodes are scale_out node specs too, so it checks its amends here.
pub(crate) async fn check_amend(
    cx: &Lifecycle,
    cluster: ClusterRef,
    amended: &Value,
    others: &[Value],
) -> Result<(), Refusal> {
    let node = spec::parse_node(&json!({}), amended, "").map_err(Refusal::Invalid)?;
    let mut all: Vec<NodeSpec> = others
        .iter()
        .filter_map(|o| serde_json::from_value(o.clone()).ok())
        .collect();
    all.push(node.clone());
    let errs = spec::check_unique(&all);
    if !errs.is_empty() {
        return Err(Refusal::Invalid(errs));
    }
    let mut req = JobRequest {
        kind: super::NAME.into(),
        cluster,
        tenant: None,
        nodes: vec![(
            node.name.clone(),
            serde_json::to_value(&node).expect("a node spec serializes"),
        )],
        deadline: None,
        concurrency: None,
        params: json!({}),
    };
    match preflight(&cx.clients, &mut req).await {
        Err(Refusal::Invalid(f)) => Err(Refusal::Invalid(
            f.into_iter()
                .map(|e| FieldError::new(e.field.replacen("nodes[0].", "", 1), e.message))
                .collect(),
        )),
        Err(Refusal::Unavailable(m)) => Err(Refusal::Unavailable(m)),
        _ => Ok(()),
    }
}

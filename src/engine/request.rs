//! A job request as `POST /v1/jobs` and schedule templates take it, checked field by field.
//!
//! Every problem is reported at once, each naming its field (`nodes[2].name`), so an operator
//! fixes a request in one round. Nothing here touches the database: a request that does not
//! parse is never half-created.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::workflow::Workflow;
use crate::model::ClusterRef;
pub use crate::model::check_dns_label;
use crate::store::{NewJob, now_ms};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The offending field, e.g. `nodes[2].name`, `job.cluster`, `Idempotency-Key`, `(body)`
    /// or `(query)`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub kind: String,
    /// Parsed here, once; stored as its `ns/name` string.
    pub cluster: ClusterRef,
    pub tenant: Option<String>,
    pub nodes: Vec<(String, Value)>,
    pub deadline: Option<Duration>,
    pub concurrency: Option<u32>,
    pub params: Value,
}

/// The fields every request has; a kind adds its own (`Admission::fields`).
pub const FIELDS: &[&str] = &[
    "kind",
    "cluster",
    "tenant",
    "nodes",
    "deadline",
    "concurrency",
    "params",
];
pub const MAX_NODES: usize = 1000;

/// Checks a request body against the known workflows. `kind_fields` are the kind's own
/// top-level fields (its admission moves them into `params`): known too, and listed with the
/// generic ones when a field is not.
pub fn parse(
    body: &Value,
    workflows: &HashMap<String, Arc<Workflow>>,
    kind_fields: &[&str],
) -> Result<JobRequest, Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("(body)", "must be a JSON object")]);
    };
    let known = || FIELDS.iter().chain(kind_fields);
    for key in obj.keys() {
        if !known().any(|f| f == key) {
            let known: Vec<&str> = known().copied().collect();
            errs.push(FieldError::new(
                key,
                format!("unknown field (known: {})", known.join(", ")),
            ));
        }
    }
    let kind = parse_kind(obj.get("kind"), workflows, &mut errs);
    let cluster = parse_cluster(obj.get("cluster"), &mut errs);
    let tenant = parse_tenant(obj.get("tenant"), &mut errs);
    let nodes = parse_nodes(obj.get("nodes"), &mut errs);
    let deadline = parse_deadline(obj.get("deadline"), &mut errs);
    let concurrency = parse_concurrency(obj.get("concurrency"), &mut errs);
    let params = parse_params(obj.get("params"), &mut errs);
    let Some(cluster) = cluster.filter(|_| errs.is_empty()) else {
        return Err(errs);
    };
    Ok(JobRequest {
        kind,
        cluster,
        tenant,
        nodes,
        deadline,
        concurrency,
        params,
    })
}

/// `kind`: one of the loaded workflows.
fn parse_kind(
    v: Option<&Value>,
    workflows: &HashMap<String, Arc<Workflow>>,
    errs: &mut Vec<FieldError>,
) -> String {
    match v {
        Some(Value::String(k)) if workflows.contains_key(k) => k.clone(),
        Some(Value::String(k)) => {
            let mut known: Vec<&String> = workflows.keys().collect();
            known.sort();
            let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            errs.push(FieldError::new(
                "kind",
                format!("unknown kind `{k}` (known: {})", known.join(", ")),
            ));
            String::new()
        }
        Some(_) => {
            errs.push(FieldError::new("kind", "must be a string"));
            String::new()
        }
        None => {
            errs.push(FieldError::new("kind", "is required"));
            String::new()
        }
    }
}

/// `cluster`: `namespace/name`, parsed once here.
fn parse_cluster(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Option<ClusterRef> {
    match v {
        Some(Value::String(c)) => match ClusterRef::parse(c) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.push(FieldError::new("cluster", e));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new(
                "cluster",
                "must be a string `namespace/name`",
            ));
            None
        }
        None => {
            errs.push(FieldError::new("cluster", "is required (`namespace/name`)"));
            None
        }
    }
}

/// `tenant`: optional, non-empty.
fn parse_tenant(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
        Some(_) => {
            errs.push(FieldError::new("tenant", "must be a non-empty string"));
            None
        }
    }
}

/// `deadline`: optional, a positive duration.
fn parse_deadline(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Option<Duration> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => match crate::duration::parse(d) {
            Ok(d) if d > crate::duration::MAX => {
                errs.push(FieldError::new("deadline", "must be at most 3650d"));
                None
            }
            Ok(d) if d > Duration::ZERO => Some(d),
            Ok(_) => {
                errs.push(FieldError::new("deadline", "must be longer than 0s"));
                None
            }
            Err(e) => {
                errs.push(FieldError::new("deadline", e));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new(
                "deadline",
                "must be a duration string such as `2h`",
            ));
            None
        }
    }
}

/// `concurrency`: optional, 1 to 100.
fn parse_concurrency(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Option<u32> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=100).contains(&n) => Some(n as u32),
            _ => {
                errs.push(FieldError::new(
                    "concurrency",
                    "must be an integer from 1 to 100",
                ));
                None
            }
        },
    }
}

/// `params`: optional, an object (empty when absent).
fn parse_params(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            errs.push(FieldError::new("params", "must be an object"));
            Value::Null
        }
    }
}

fn parse_nodes(v: Option<&Value>, errs: &mut Vec<FieldError>) -> Vec<(String, Value)> {
    let list = match v {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            errs.push(FieldError::new("nodes", "must name at least one node"));
            return Vec::new();
        }
        Some(_) => {
            errs.push(FieldError::new(
                "nodes",
                "must be an array of node names or node objects",
            ));
            return Vec::new();
        }
        None => {
            errs.push(FieldError::new("nodes", "is required"));
            return Vec::new();
        }
    };
    if list.len() > MAX_NODES {
        errs.push(FieldError::new(
            "nodes",
            format!("at most {MAX_NODES} nodes per job"),
        ));
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let (name, spec) = match n {
            Value::String(s) => (s.clone(), serde_json::json!({ "name": s })),
            Value::Object(o) => match o.get("name") {
                Some(Value::String(s)) => (s.clone(), n.clone()),
                _ => {
                    errs.push(FieldError::new(
                        format!("nodes[{i}].name"),
                        "is required (a string)",
                    ));
                    continue;
                }
            },
            _ => {
                errs.push(FieldError::new(
                    format!("nodes[{i}]"),
                    "must be a node name or an object with `name`",
                ));
                continue;
            }
        };
        if let Err(e) = check_dns_label(&name) {
            errs.push(FieldError::new(format!("nodes[{i}].name"), e));
            continue;
        }
        if !seen.insert(name.clone()) {
            errs.push(FieldError::new(
                format!("nodes[{i}].name"),
                format!("`{name}` is named twice"),
            ));
            continue;
        }
        out.push((name, spec));
    }
    out
}

impl JobRequest {
    /// The job to persist for this request, for `tenant` and `owner`.
    pub fn into_job(
        self,
        wf: &Workflow,
        tenant: &str,
        owner: &str,
        schedule_id: Option<String>,
    ) -> NewJob {
        let deadline = self.deadline.or(wf.deadline);
        NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            kind: self.kind,
            tenant: tenant.to_string(),
            owner: owner.to_string(),
            cluster: self.cluster.to_string(),
            params: self.params,
            deadline_at: deadline
                .map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            concurrency: self.concurrency.unwrap_or(wf.concurrency) as i64,
            schedule_id,
            nodes: self.nodes,
            start_state: wf.start.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workflows() -> HashMap<String, Arc<Workflow>> {
        let mut r = crate::engine::step::Registry::new();
        r.step("t.a", &["ok"], |_c| async {
            Ok(crate::engine::step::Outcome::next("ok"))
        });
        crate::engine::workflow::load_all(
            &[("t.yaml".into(), "kind: t\nstart: a\nstates:\n  a: {step: t.a, on: {ok: done}}\n  done: {end: succeeded}\n".into())],
            &r,
        )
        .unwrap()
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let errs = parse(
            &json!({"kind": "nope", "cluster": "Default", "nodes": ["ok-1", "ok-1", "Bad_Name", {"x": 1}], "colour": "red", "deadline": "5y"}),
            &workflows(),
            &[],
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "colour",
                "kind",
                "cluster",
                "nodes[1].name",
                "nodes[2].name",
                "nodes[3].name",
                "deadline"
            ]
        );
        assert!(errs[1].message.contains("unknown kind `nope` (known: t)"));
        // A deadline past any timestamp is refused, not stored as one that cannot be shown.
        let far = json!({"kind": "t", "cluster": "default/demo", "nodes": ["a-1"], "deadline": "5644873201h"});
        let errs = parse(&far, &workflows(), &[]).unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::new("deadline", "must be at most 3650d")]
        );
    }

    #[test]
    fn a_good_request_keeps_node_specs_in_order() {
        let req = parse(&json!({"kind": "t", "cluster": "default/demo", "nodes": ["a-1", {"name": "b-2", "ip": "10.0.0.2"}]}), &workflows(), &[]).unwrap();
        assert_eq!(req.nodes[0], ("a-1".to_string(), json!({"name": "a-1"})));
        assert_eq!(req.nodes[1].1["ip"], "10.0.0.2");
    }

    #[test]
    fn an_unknown_field_lists_the_kinds_own_fields_too() {
        let body =
            json!({"kind": "t", "cluster": "default/demo", "nodes": ["a-1"], "colour": "red"});
        let errs = parse(&body, &workflows(), &["defaults", "force_after"]).unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::new(
                "colour",
                "unknown field (known: kind, cluster, tenant, nodes, deadline, concurrency, params, defaults, force_after)"
            )]
        );
        // The kind's own fields are known (they reach here only when its admission could not
        // move them into params, and said why).
        let mut own = body.clone();
        own.as_object_mut().unwrap().remove("colour");
        own["force_after"] = json!("soon");
        assert!(parse(&own, &workflows(), &["force_after"]).is_ok());
    }
}

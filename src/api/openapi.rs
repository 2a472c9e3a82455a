//! The OpenAPI document, generated: the operations from the handlers' `#[utoipa::path]`
//! annotations (routes and document entries are registered together, see `super::routes`),
//! the job request from the kinds' registry (`lifecycle::kind::KINDS`: one `oneOf` branch per
//! kind, discriminated by `kind`, with the generic fields and the kind's own params type), and
//! the response shapes from the types below, which a test ties to what `views` writes.
//!
//! Adding an operation: annotate the handler with `#[utoipa::path(...)]` (every status it can
//! answer, errors as `ErrorBody`) and register it with `.routes(routes!(handler))` in
//! `super::v1_routes` or `super::open_routes`; the document and the router then both have it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Discriminator, Object, ObjectBuilder, OneOfBuilder, Schema,
    Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::lifecycle::kind::{JobKind, KINDS};
use crate::model::{EventKind, FailureClass, JobState, NodeStatus, Role};

/// The document, built once from the routes and the registry.
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(super::document()).expect("the OpenAPI document serializes");
    link(&mut doc);
    doc
});

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Capstan",
        description = "Capstan's job engine API. Every /v1 route needs a bearer token. Errors are JSON `{\"error\": string}`; a 422 adds `fields`, one entry per problem."
    ),
    components(schemas(
        ErrorBody, crate::engine::request::FieldError, JobSummary, Job, JobWait, Node, NodeWait,
        Event, EventPage, JobPage, Schedule, ScheduleList, NewSchedule, ScheduleUpdate
    )),
    modifiers(&Registry),
    tags(
        (name = "jobs", description = "Submit, watch, cancel, resume and amend jobs."),
        (name = "clusters", description = "What the cloud shows of a cluster."),
        (name = "schedules", description = "Cron expressions that enqueue a job template."),
        (name = "server", description = "Health, readiness, metrics and this document."),
    )
)]
pub struct Base;

/// The links from what a create answers to the operations on what it created (a job's ID to
/// show, history, cancel and resume it; a schedule's to show, change and delete it), so a
/// client, or schemathesis' stateful phase, can follow them. Written into the JSON: utoipa
/// 5's `Link` serializes `operation_id` in snake case, which OpenAPI readers do not know.
fn link(doc: &mut Value) {
    let links: [(&str, &str, &[&str]); 2] = [
        (
            "/v1/jobs",
            "202",
            &["getJob", "getJobEvents", "cancelJob", "resumeJob"],
        ),
        (
            "/v1/schedules",
            "201",
            &["getSchedule", "updateSchedule", "deleteSchedule"],
        ),
    ];
    for (path, status, targets) in links {
        let resp = &mut doc["paths"][path]["post"]["responses"][status];
        assert!(resp.is_object(), "POST {path} has no {status} to link from");
        for t in targets {
            resp["links"][*t] = serde_json::json!({
                "operationId": t,
                "parameters": { "id": "$response.body#/id" },
            });
        }
    }
}

/// What comes from the registry and the model rather than from one type: the job request (a
/// `oneOf` on `kind`), the state enums, and the bearer scheme.
struct Registry;

impl Modify for Registry {
    fn modify(&self, doc: &mut OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.security_schemes.insert(
            "bearerAuth".into(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A configured token; its principal has a Role and, unless admin, one tenant.",
                    ))
                    .build(),
            ),
        );
        let mut request = OneOfBuilder::new()
            .description(Some(
                "A job to submit: one branch per job kind, chosen by `kind`. Every field is checked and all problems are reported at once (422).",
            ))
            .discriminator(Some(Discriminator::new("kind")));
        for k in KINDS {
            let name = kind_schema_name(*k);
            c.schemas.insert(name.clone(), kind_request(*k).into());
            request = request.item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name)));
        }
        c.schemas.insert("JobRequest".into(), request.into());
        c.schemas.insert("NodeSpec".into(), node_spec().into());
        c.schemas.insert("DnsLabel".into(), dns_label().into());
        for (name, values, what) in [
            (
                "JobState",
                JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "Where a job is in its life.",
            ),
            (
                "NodeStatus",
                NodeStatus::ALL.iter().map(|s| s.as_str()).collect(),
                "Where a node task is.",
            ),
            (
                "FailureClass",
                FailureClass::ALL.iter().map(|s| s.as_str()).collect(),
                "Why a node failed.",
            ),
            (
                "EventKind",
                EventKind::ALL.iter().map(|s| s.as_str()).collect(),
                "What a history entry records.",
            ),
            (
                "Role",
                Role::ALL.iter().map(|s| s.as_str()).collect(),
                "What a token's principal may do.",
            ),
        ] {
            c.schemas
                .insert(name.into(), string_enum(&values, what).into());
        }
    }
}

fn string_enum(values: &[&str], description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

/// `scale_out` → `ScaleOutJob`.
fn kind_schema_name(k: &dyn JobKind) -> String {
    let camel: String = k
        .name()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{camel}Job")
}

/// The DNS-1123 label pattern Kubernetes validates names against.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

fn dns_label() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(63))
        .pattern(Some(DNS_LABEL_PATTERN))
        .description(Some(
            "A DNS-1123 label: lowercase letters, digits and '-', starting and ending alphanumeric, at most 63 characters.",
        ))
        .build()
}

fn node_spec() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", RefOr::Ref(utoipa::openapi::Ref::from_schema_name("DnsLabel")))
        .required("name")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(
            "A node: its name plus the fields the kind reads (scale_out: flavor, image, network, subnet, …; see README).",
        ))
        .build()
}

/// One kind's request: `kind` fixed to its name, the generic fields, and the kind's own
/// (its params type's properties). Nothing else is accepted.
fn kind_request(k: &dyn JobKind) -> Object {
    let own = own_properties(k.name(), (k.params().schema)());
    let sweep = k.reshape(serde_json::json!({})).get("nodes").is_some();
    let mut b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(k.name()))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([k.name()])),
        )
        .required("kind")
        .property(
            "cluster",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(
                    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                ))
                .max_length(Some(127))
                .description(Some(
                    "`namespace/name`, both DNS-1123 labels. The namespace must belong to the job's tenant.",
                ))
                .examples(["default/demo"]),
        )
        .required("cluster");
    for (name, schema) in generic_fields() {
        b = b.property(name, schema);
    }
    let nodes = ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "DnsLabel",
                )))
                .item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "NodeSpec",
                ))),
        )
        .min_items(Some(1))
        .max_items(Some(crate::engine::request::MAX_NODES))
        .description(Some(if sweep {
            "Optional: a sweep acts on its cluster and runs as one task named `sweep`."
        } else {
            "The nodes to act on, each a name or an object with `name`. Names must be unique."
        }));
    b = b.property("nodes", nodes);
    if !sweep {
        b = b.required("nodes");
    }
    for (name, schema) in own {
        b = b.property(name, schema);
    }
    b.build()
}

/// The properties of a kind's params type: an object, or (with `#[serde(flatten)]`) all of
/// several, inline.
fn own_properties(kind: &str, schema: RefOr<Schema>) -> Vec<(String, RefOr<Schema>)> {
    match schema {
        RefOr::T(Schema::Object(o)) => o.properties.into_iter().collect(),
        RefOr::T(Schema::AllOf(all)) => all
            .items
            .into_iter()
            .flat_map(|s| own_properties(kind, s))
            .collect(),
        _ => panic!("{kind}'s params type is not an object (flatten with #[schema(inline)])"),
    }
}

/// The fields every request has besides `kind`, `cluster` and `nodes`.
fn generic_fields() -> Vec<(&'static str, Object)> {
    let nullable = |t: Type| utoipa::openapi::schema::SchemaType::from_iter([t, Type::Null]);
    vec![
        (
            "tenant",
            ObjectBuilder::new()
                .schema_type(nullable(Type::String))
                .min_length(Some(1))
                .description(Some(
                    "Admins only may name another tenant. When omitted: the principal's tenant, or for admins the tenant owning the cluster's namespace.",
                ))
                .build(),
        ),
        (
            "deadline",
            ObjectBuilder::new()
                .schema_type(nullable(Type::String))
                .pattern(Some(crate::lifecycle::params::DURATION_PATTERN))
                .description(Some(
                    "A duration longer than 0s and at most 3650d, such as `2h` or `1h30m` (units ms, s, m, h, d). Defaults to the workflow's.",
                ))
                .build(),
        ),
        (
            "concurrency",
            ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .minimum(Some(1))
                .maximum(Some(100))
                .description(Some("How many nodes may run at once. Defaults to the workflow's."))
                .build(),
        ),
        (
            "params",
            ObjectBuilder::new()
                .schema_type(nullable(Type::Object))
                .additional_properties(Some(AdditionalProperties::FreeForm(true)))
                .description(Some("Workflow parameters. Defaults to {}."))
                .build(),
        ),
    ]
}

/// Every error: a sentence, and for 422 (and a 409 the cloud gives) one entry per field.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[schema(nullable = false)]
    pub fields: Option<Vec<crate::engine::request::FieldError>>,
}

/// A job as listings show it. Times are RFC 3339, UTC.
#[derive(Serialize, ToSchema)]
pub struct JobSummary {
    /// A UUIDv7; IDs sort by creation time.
    pub id: String,
    pub kind: String,
    pub tenant: String,
    /// The principal that submitted the job (or owns its schedule).
    pub owner: String,
    pub cluster: String,
    #[schema(schema_with = job_state)]
    pub state: String,
    #[schema(value_type = Object)]
    pub params: Value,
    pub concurrency: i64,
    /// When the job's deadline passes.
    #[schema(format = DateTime)]
    pub deadline: Option<String>,
    pub cancel_requested: bool,
    pub schedule_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// When the engine next looks at the job.
    #[schema(format = DateTime)]
    pub next_wake_at: Option<String>,
}

/// A job with its nodes, as single-job responses show it.
#[derive(Serialize, ToSchema)]
pub struct Job {
    #[serde(flatten)]
    pub job: JobSummary,
    /// In submission order.
    pub nodes: Vec<Node>,
    /// How many nodes have each status; statuses with no node are absent.
    pub node_counts: BTreeMap<String, i64>,
    /// The nodes that currently wait, and on what.
    pub waits: Vec<JobWait>,
    /// `POST /v1/jobs/{id}/resume` only: the nodes resumed.
    #[schema(nullable = false)]
    pub resumed: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct JobWait {
    pub node: String,
    #[schema(schema_with = node_status)]
    pub status: String,
    pub reason: String,
    /// When the node is next looked at.
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

/// One node task of a job.
#[derive(Serialize, ToSchema)]
pub struct Node {
    pub name: String,
    /// The workflow state the node is at, e.g. `wait_provisioned`.
    pub state: String,
    #[schema(schema_with = node_status)]
    pub status: String,
    /// Attempts at the current step.
    pub attempt: i64,
    /// Attempts across all steps.
    pub attempts_total: i64,
    pub failure_class: Option<String>,
    pub last_error: Option<String>,
    /// What the node waits on, if it waits.
    pub wait: Option<NodeWait>,
    /// What the node's steps have made and recorded.
    #[schema(value_type = Object)]
    pub external_ids: Value,
    #[schema(value_type = Object)]
    pub spec: Value,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct NodeWait {
    pub reason: String,
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

/// One entry of a job's append-only history.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// Increasing; use as `after` or Last-Event-ID.
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// null for job-level entries.
    pub node: Option<String>,
    #[schema(schema_with = event_kind)]
    pub kind: String,
    /// The state left, for transitions.
    pub from: Option<String>,
    /// The state entered, for transitions.
    pub to: Option<String>,
    pub attempt: Option<i64>,
    pub class: Option<String>,
    pub message: Option<String>,
    /// Extra JSON the entry carries, or null.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// The last event's id (or the given `after` when none); pass as `after` for the next page.
    pub next_after: i64,
}

#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A cron expression that enqueues a job template.
#[derive(Serialize, ToSchema)]
pub struct Schedule {
    pub id: String,
    pub tenant: String,
    pub owner: String,
    pub name: String,
    pub cron: String,
    /// The job template, as it was given.
    #[schema(value_type = Object)]
    pub job: Value,
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub next_fire_at: String,
    #[schema(format = DateTime)]
    pub last_fired_at: Option<String>,
    pub last_job_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Why the last firing did not enqueue a job.
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_error_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// A new schedule.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// Unique within the tenant.
    #[schema(schema_with = dns_label_ref)]
    pub name: String,
    /// 5 fields (minute hour day-of-month month day-of-week), or 6-7 with seconds first (and
    /// year last). UTC.
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// The job to enqueue; checked as POST /v1/jobs checks it, errors prefixed `job.`.
    #[schema(schema_with = job_request_ref)]
    pub job: Value,
    #[schema(default = true)]
    pub enabled: Option<bool>,
}

/// Fields to change; absent or null keeps the current value. The tenant cannot change.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleUpdate {
    pub cron: Option<String>,
    #[schema(schema_with = job_request_or_null)]
    pub job: Option<Value>,
    /// Re-enabling fires from the next tick, not the ticks missed.
    pub enabled: Option<bool>,
}

fn job_request_ref() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("JobRequest"))
}
fn job_request_or_null() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(job_request_ref())
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}
fn dns_label_ref() -> Object {
    dns_label()
}
fn job_state() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("JobState"))
}
fn node_status() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("NodeStatus"))
}
fn event_kind() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("EventKind"))
}

/// Any JSON object (the cluster views, whose shapes come from the cloud).
pub fn any_object() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
}

impl PartialSchema for AnyObject {
    fn schema() -> RefOr<Schema> {
        any_object().into()
    }
}
impl ToSchema for AnyObject {}

/// `POST /v1/jobs`' body: the registry's `JobRequest`.
pub struct JobRequestBody;

impl PartialSchema for JobRequestBody {
    fn schema() -> RefOr<Schema> {
        job_request_ref()
    }
}
impl ToSchema for JobRequestBody {}

/// `PATCH /v1/jobs/{id}/nodes/{name}`' body: node fields to set, or remove with null; `name`
/// may only repeat the node's, and at least one other field is named.
pub struct NodePatch;

impl PartialSchema for NodePatch {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("name", dns_label())
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .min_properties(Some(1))
            .examples([serde_json::json!({"image": "ubuntu-24.04", "flavor": null})])
            .into()
    }
}
impl ToSchema for NodePatch {}

/// A response body whose fields come from the cloud (a cluster's nodes, its quota).
pub struct AnyObject;

//! Routing, verbs, patches, watches and discovery over HTTP.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::resources::{KINDS, Kind};
use super::schema;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ApiError, Objects, Target, Write};
use super::{Kube, MANAGEMENT};

/// How often an idle watch gets a BOOKMARK, so its resume point stays fresh.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// The longest a watch stays open when the client names no `timeoutSeconds`.
const WATCH_MAX: Duration = Duration::from_secs(1800);

pub fn router(kube: Kube) -> Router {
    schema::load();
    Router::new()
        .route("/version", any(handle))
        .route("/api", any(handle))
        .route("/api/{*rest}", any(handle))
        .route("/apis", any(handle))
        .route("/apis/{*rest}", any(handle))
        .route("/workload/{*rest}", any(handle))
        .with_state(kube)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

fn unknown_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// What a request addresses, once the path is parsed.
struct Target_ {
    kind: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

async fn handle(
    State(kube): State<Kube>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut warnings = Vec::new();
    let mut response = match serve(&kube, &method, &uri, &headers, &body, &mut warnings) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    for w in warnings {
        // The apiserver's `Warning: 299 - "<text>"`, one header per warning.
        let quoted = serde_json::to_string(&w).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {quoted}")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// `?fieldValidation=`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Drop them and say so in a `Warning` header (the default).
    Warn,
    /// Drop them silently.
    Ignore,
}

fn field_validation(q: &HashMap<String, String>) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}, supported values: \"Ignore\", \"Warn\", \"Strict\""
        ))),
    }
}

/// Prunes the fields a custom resource's schema does not know from a request body and
/// answers for them as `fieldValidation` says: `Strict` refuses the request with the
/// decoder's `strict decoding error`, `Warn` adds a warning per field.
fn unknown_fields(
    kind: usize,
    obj: &mut Value,
    how: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let unknown = schema::prune(kind, obj);
    if unknown.is_empty() || how == FieldValidation::Ignore {
        return Ok(());
    }
    let texts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    if how == FieldValidation::Strict {
        return Err(format!("strict decoding error: {}", texts.join(", ")));
    }
    warnings.extend(texts);
    Ok(())
}

/// Server-side apply cannot type an applied configuration with fields the schema does not
/// know: structured-merge-diff's 500, whatever `fieldValidation` says.
fn apply_unknown_fields(kind: &Kind, kind_ix: usize, body: &Bytes) -> Result<(), ApiError> {
    let mut applied = parse_body(body, "application/apply-patch+yaml")?;
    let unknown = schema::prune(kind_ix, &mut applied);
    if unknown.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = unknown
        .iter()
        .map(|p| format!(".{p}: field not declared in schema"))
        .collect();
    let errors = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    let meta = &applied["metadata"];
    Err(ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{}; {}, Kind={}): {errors}",
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
            kind.api_version(),
            kind.kind
        ),
    ))
}

/// A create or update body with unknown fields, under `Strict`: the decoder's error as the
/// handler words it.
fn undecodable(kind: &Kind, why: String) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {why}",
        kind.kind, kind.version, kind.kind
    ))
}

/// A patch whose result has unknown fields, under `Strict`: the patch handler's `Invalid`
/// with neither kind nor name, the patched object quoted.
fn strict_patch_error(patched: &Value, why: String) -> ApiError {
    let quoted = serde_json::to_string(&patched.to_string()).unwrap_or_default();
    let body = format!("Invalid value: {quoted}: {why}");
    let mut e = ApiError::new(422, "Invalid", format!(" \"\" is invalid: patch: {body}"));
    e.details = json!({
        "causes": [{ "reason": "FieldValueInvalid", "message": body, "field": "patch" }],
    });
    e
}

fn serve(
    kube: &Kube,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    warnings: &mut Vec<String>,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (cluster, rest) = match segs.as_slice() {
        ["workload", ns, name, rest @ ..] => (format!("{ns}/{name}"), rest),
        rest => (MANAGEMENT.to_string(), rest),
    };
    let Some(token) = kube.token(&cluster) else {
        return Err(unknown_path());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // kubectl (client-go) sends no bearer token over plain HTTP, so a request without one is
    // served, as an apiserver with anonymous access would; a wrong token is refused.
    if presented.is_some_and(|p| p != token) {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let workload = cluster != MANAGEMENT;
    let q: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let (group, version, path) = match rest {
        ["version"] => return Ok(json_response(StatusCode::OK, &version_doc())),
        ["api"] => return Ok(json_response(StatusCode::OK, &api_versions())),
        ["apis"] => return Ok(json_response(StatusCode::OK, &api_groups(workload))),
        ["api", v, path @ ..] => ("", *v, path),
        ["apis", g] => {
            return group_doc(g, workload)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(unknown_path);
        }
        ["apis", g, v, path @ ..] => (*g, *v, path),
        _ => return Err(unknown_path()),
    };
    if path.is_empty() {
        return resource_list(group, version, workload)
            .map(|d| json_response(StatusCode::OK, &d))
            .ok_or_else(unknown_path);
    }
    let t = parse_target(group, version, path, workload)?;
    if let Some(w) = schema::deprecation(t.kind) {
        warnings.push(w.to_string());
    }
    let verb = verb(method, &t, &q);
    inject_fault(kube, &verb, KINDS[t.kind].plural)?;
    if verb == "watch" {
        return watch(kube, &cluster, &t, &q);
    }
    let mut clusters = kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(&cluster).ok_or_else(unknown_path)?;
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let kind = &KINDS[t.kind];
    let ns = t.ns.as_deref().unwrap_or("");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match (verb.as_str(), &t.name, t.sub.as_deref()) {
        ("list", None, None) => list(objects, &t, &q),
        ("create", None, None) => {
            let mut obj = parse_body(body, content_type)?;
            unknown_fields(t.kind, &mut obj, field_validation(&q)?, warnings)
                .map_err(|why| undecodable(kind, why))?;
            let created = objects.create(t.kind, ns, obj, false, dry_run)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("deletecollection", None, None) => {
            let labels = label_selector(&q)?;
            let fields = field_selector(kind, &q)?;
            let scope = t.ns.as_deref();
            let victims = objects.select(t.kind, scope, &labels, &fields);
            let options = delete_options(body)?;
            let mut items = Vec::new();
            for v in victims {
                let name = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let vns = v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                objects.delete(t.kind, &vns, &name, &options, dry_run)?;
                items.push(v);
            }
            Ok(json_response(
                StatusCode::OK,
                &list_doc(kind, objects, items, None),
            ))
        }
        ("get", Some(name), None | Some("status")) => {
            let obj = objects
                .get(t.kind, ns, name)
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(StatusCode::OK, obj))
        }
        ("get", Some(name), Some("scale")) if kind.scale => {
            let obj = objects
                .get(t.kind, ns, name)
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(StatusCode::OK, &scale_of(obj)))
        }
        ("update", Some(name), sub @ (None | Some("status"))) => {
            let mut obj = parse_body(body, content_type)?;
            unknown_fields(t.kind, &mut obj, field_validation(&q)?, warnings)
                .map_err(|why| undecodable(kind, why))?;
            let target = if sub.is_some() {
                Target::Status
            } else {
                Target::Main
            };
            let updated = objects.update(
                t.kind,
                ns,
                name,
                obj,
                Write {
                    target,
                    require_rv: true,
                    dry_run,
                },
            )?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("update" | "patch", Some(name), Some("scale")) if kind.scale => {
            let current = objects
                .get(t.kind, ns, name)
                .ok_or_else(|| ApiError::not_found(kind, name))?
                .clone();
            let mut scale = scale_of(&current);
            if verb == "update" {
                scale = parse_body(body, content_type)?;
            } else {
                apply_patch(kind, &mut scale, body, content_type)?;
            }
            let replicas = scale["spec"]["replicas"].clone();
            let mut next = current;
            next["spec"]["replicas"] = replicas;
            if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
                next["metadata"]["resourceVersion"] = json!(rv);
            }
            let updated = objects.update(
                t.kind,
                ns,
                name,
                next,
                Write {
                    target: Target::Main,
                    require_rv: false,
                    dry_run,
                },
            )?;
            Ok(json_response(StatusCode::OK, &scale_of(&updated)))
        }
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let target = if sub.is_some() {
                Target::Status
            } else {
                Target::Main
            };
            let apply = content_type.starts_with("application/apply-patch");
            let how = field_validation(&q)?;
            if apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return Err(ApiError::bad_request(
                    "PATCH requests with apply patch type require fieldManager to be set",
                ));
            }
            if apply {
                apply_unknown_fields(kind, t.kind, body)?;
            }
            let Some(current) = objects.get(t.kind, ns, name).cloned() else {
                if apply && target == Target::Main {
                    let mut obj = parse_body(body, "application/apply-patch+yaml")?;
                    obj["metadata"]["name"] = json!(name);
                    unknown_fields(t.kind, &mut obj, how, warnings)
                        .map_err(|why| strict_patch_error(&obj, why))?;
                    let created = objects.create(t.kind, ns, obj, false, dry_run)?;
                    return Ok(json_response(StatusCode::CREATED, &created));
                }
                return Err(ApiError::not_found(kind, name));
            };
            let mut next = current;
            apply_patch(kind, &mut next, body, content_type)?;
            // Kept only to quote in a strict refusal.
            let patched = (how == FieldValidation::Strict).then(|| next.clone());
            unknown_fields(t.kind, &mut next, how, warnings)
                .map_err(|why| strict_patch_error(patched.as_ref().unwrap_or(&Value::Null), why))?;
            let updated = objects.update(
                t.kind,
                ns,
                name,
                next,
                Write {
                    target,
                    require_rv: false,
                    dry_run,
                },
            )?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("delete", Some(name), None) => {
            let options = delete_options(body)?;
            let dry = dry_run
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == "All"));
            let out = objects.delete(t.kind, ns, name, &options, dry)?;
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )),
    }
}

fn parse_target(
    group: &str,
    version: &str,
    path: &[&str],
    workload: bool,
) -> Result<Target_, ApiError> {
    let (ns, rest) = match path {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(unknown_path()),
    };
    let kind = super::resources::find(group, version, plural).ok_or_else(unknown_path)?;
    let k = &KINDS[kind];
    if (workload && !k.workload) || (ns.is_some() && !k.namespaced) {
        return Err(unknown_path());
    }
    if k.namespaced && ns.is_none() && name.is_some() {
        return Err(unknown_path());
    }
    match sub.as_deref() {
        None => {}
        Some("status") if k.status => {}
        Some("scale") if k.scale => {}
        Some(_) => return Err(unknown_path()),
    }
    Ok(Target_ {
        kind,
        ns,
        name,
        sub,
    })
}

fn verb(method: &Method, t: &Target_, q: &HashMap<String, String>) -> String {
    let item = t.name.is_some();
    let v = match *method {
        Method::GET if !item && q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET if item => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if item => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    };
    v.to_string()
}

fn inject_fault(kube: &Kube, verb: &str, plural: &str) -> Result<(), ApiError> {
    let mut faults = kube.faults.lock().unwrap();
    for f in faults.errors.iter_mut() {
        let verb_ok = f.verbs.is_empty() || f.verbs.iter().any(|v| v == verb);
        let res_ok = f.resources.is_empty() || f.resources.iter().any(|r| r == plural);
        if !verb_ok || !res_ok || f.remaining == Some(0) || fastrand::f64() >= f.rate {
            continue;
        }
        if let Some(n) = f.remaining.as_mut() {
            *n -= 1;
        }
        let (reason, message) = match f.code {
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected)",
            ),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later. (injected)",
            ),
            503 => (
                "ServiceUnavailable",
                "etcdserver: leader changed (injected)",
            ),
            _ => (
                "InternalError",
                "Internal error occurred: etcdserver: request timed out (injected)",
            ),
        };
        return Err(ApiError::new(f.code, reason, message));
    }
    Ok(())
}

fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    let parsed = if content_type.contains("yaml") {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::bad_request(format!("the body could not be decoded: {e}")))
}

fn delete_options(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    parse_body(body, "application/json")
}

/// Applies a merge, JSON or apply patch (by content type) to `obj`.
fn apply_patch(
    kind: &Kind,
    obj: &mut Value,
    body: &Bytes,
    content_type: &str,
) -> Result<(), ApiError> {
    if content_type.starts_with("application/json-patch+json") {
        let raw: Value = parse_body(body, "application/json")?;
        let Value::Array(ops) = raw else {
            return Err(ApiError::bad_request("a JSON patch must be an array"));
        };
        // The apiserver's json-patch library lets `test` of a missing path against null
        // pass; kube-runtime's finalizer helper depends on that.
        let ops: Vec<Value> = ops
            .into_iter()
            .filter(|op| {
                let missing_null_test = op["op"] == "test"
                    && op["value"].is_null()
                    && op["path"]
                        .as_str()
                        .is_some_and(|p| obj.pointer(p).is_none());
                !missing_null_test
            })
            .collect();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(obj, &patch).map_err(|e| {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            ApiError::new(422, "Invalid", e.to_string()).with_name(kind, name)
        })?;
        return Ok(());
    }
    if content_type.starts_with("application/strategic-merge-patch+json") && kind.is_custom() {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if content_type.starts_with("application/apply-patch") {
        let applied = parse_body(body, "application/apply-patch+yaml")?;
        deep_merge(obj, &applied);
        return Ok(());
    }
    let patch = parse_body(body, "application/json")?;
    json_patch::merge(obj, &patch);
    Ok(())
}

impl ApiError {
    fn with_name(self, kind: &Kind, name: &str) -> ApiError {
        let mut e = self;
        e.details = json!({ "name": name, "group": kind.group, "kind": kind.plural });
        e
    }
}

/// Server-side apply, approximated: maps merge key by key, everything else is replaced.
fn deep_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

fn label_selector(q: &HashMap<String, String>) -> Result<LabelSelector, ApiError> {
    LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
}

fn field_selector(kind: &Kind, q: &HashMap<String, String>) -> Result<FieldSelector, ApiError> {
    let extra: &[&str] = if kind.kind == "Secret" {
        &["type"]
    } else {
        &[]
    };
    FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        extra,
    )
    .map_err(ApiError::bad_request)
}

fn list_doc(kind: &Kind, objects: &Objects, items: Vec<Value>, next: Option<String>) -> Value {
    let mut meta = json!({ "resourceVersion": objects.resource_version().to_string() });
    if let Some(c) = next {
        meta["continue"] = json!(c);
    }
    json!({
        "apiVersion": kind.api_version(), "kind": format!("{}List", kind.kind),
        "metadata": meta, "items": items,
    })
}

/// A list, paged with `limit` and `continue` (an opaque `namespace/name` to resume after).
fn list(objects: &Objects, t: &Target_, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let kind = &KINDS[t.kind];
    let labels = label_selector(q)?;
    let fields = field_selector(kind, q)?;
    let mut items = objects.select(t.kind, t.ns.as_deref(), &labels, &fields);
    if let Some(after) = q.get("continue").filter(|c| !c.is_empty()) {
        items.retain(|o| item_key(o).as_str() > after.as_str());
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut next = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        next = items.last().map(item_key);
    }
    Ok(json_response(
        StatusCode::OK,
        &list_doc(kind, objects, items, next),
    ))
}

fn item_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn scale_of(obj: &Value) -> Value {
    let labels = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": { "replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0) },
        "status": { "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": labels },
    })
}

fn watch_line(change: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": change, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(kind: &Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    watch_line(
        "BOOKMARK",
        &json!({ "apiVersion": kind.api_version(), "kind": kind.kind, "metadata": meta }),
    )
}

/// A watch: NDJSON events after the given version (or the current objects as ADDED first),
/// BOOKMARKs while idle and before closing at `timeoutSeconds`, an ERROR 410 event when the
/// version is older than the history.
fn watch(
    kube: &Kube,
    cluster: &str,
    t: &Target_,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let kind_ix = t.kind;
    let kind = &KINDS[kind_ix];
    let labels = label_selector(q)?;
    let fields = field_selector(kind, q)?;
    let ns = t.ns.clone();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(WATCH_MAX)
        .min(WATCH_MAX);
    let from = q
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && rv.as_str() != "0")
        .map(|rv| {
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
        })
        .transpose()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let kube = kube.clone();
    let cluster = cluster.to_string();
    let epoch = kube.faults.lock().unwrap().watch_epoch;
    let matches = move |o: &Value| {
        ns.as_deref()
            .is_none_or(|n| o["metadata"]["namespace"].as_str() == Some(n))
            && labels.matches(o["metadata"].get("labels"))
            && fields.matches(o)
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut cursor, mut notify, initial) = {
            let clusters = kube.clusters.lock().unwrap();
            let Some(objects) = clusters.get(&cluster) else {
                return;
            };
            let mut lines = Vec::new();
            let cursor = match from {
                Some(rv) if !send_initial => {
                    if rv < objects.floor() {
                        let gone = ApiError::new(
                            410,
                            "Expired",
                            format!("too old resource version: {rv} ({})", objects.floor()),
                        );
                        lines.push(watch_line("ERROR", &gone.status()));
                        let _ = tx.try_send(Ok(lines.remove(0)));
                        return;
                    }
                    rv
                }
                _ => {
                    for o in objects.list(kind_ix, None).filter(|o| matches(o)) {
                        lines.push(watch_line("ADDED", o));
                    }
                    if send_initial {
                        lines.push(bookmark(kind, objects.resource_version(), true));
                    }
                    objects.resource_version()
                }
            };
            (cursor, objects.subscribe(), lines)
        };
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        loop {
            let (lines, expired) = {
                let clusters = kube.clusters.lock().unwrap();
                let Some(objects) = clusters.get(&cluster) else {
                    return;
                };
                if kube.faults.lock().unwrap().watch_epoch != epoch {
                    return;
                }
                if cursor < objects.floor() {
                    let gone = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {cursor} ({})", objects.floor()),
                    );
                    (vec![watch_line("ERROR", &gone.status())], true)
                } else {
                    let lines = objects
                        .since(cursor)
                        .filter(|e| e.kind == kind_ix && matches(&e.object()))
                        .map(|e| {
                            Bytes::from(format!(
                                "{{\"type\":\"{}\",\"object\":{}}}\n",
                                e.change.as_str(),
                                e.object
                            ))
                        })
                        .collect();
                    cursor = objects.resource_version();
                    (lines, false)
                }
            };
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if expired {
                return;
            }
            tokio::select! {
                changed = notify.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(BOOKMARK_EVERY) => {
                    if bookmarks && tx.send(Ok(bookmark(kind, cursor, false))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(Ok(bookmark(kind, cursor, false))).await;
                    }
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "31", "gitVersion": "v1.31.0-capstan-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "" }],
    })
}

fn served(workload: bool) -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().filter(move |k| !workload || k.workload)
}

/// `(group, version)` pairs served, in table order, without repeats.
fn group_versions(workload: bool) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in served(workload).filter(|k| k.is_custom()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

fn group_json(group: &str, workload: bool) -> Value {
    let versions: Vec<Value> = group_versions(workload)
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
        .collect();
    json!({ "name": group, "versions": versions, "preferredVersion": versions[0] })
}

fn api_groups(workload: bool) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions(workload) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.iter().map(|g| group_json(g, workload)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn group_doc(group: &str, workload: bool) -> Option<Value> {
    group_versions(workload)
        .iter()
        .any(|(g, _)| *g == group)
        .then(|| {
            let mut doc = group_json(group, workload);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

fn resource_list(group: &str, version: &str, workload: bool) -> Option<Value> {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for k in served(workload).filter(|k| k.group == group && k.version == version) {
        let mut r = json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": verbs,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if k.is_custom() {
            r["categories"] = json!(["cluster-api"]);
        }
        resources.push(r);
        if k.status {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if k.scale {
            resources.push(json!({
                "name": format!("{}/scale", k.plural), "singularName": "",
                "namespaced": k.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources,
    }))
}

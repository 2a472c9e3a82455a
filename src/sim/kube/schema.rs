//! What kube-apiserver does to a custom resource with a structural schema, for the kinds
//! the simulator serves: prune unknown fields (reporting their paths, for
//! `fieldValidation`), drop nulls the schema does not allow, apply `default`s, and validate
//! types, enums, required fields, bounds, lengths, item counts and patterns, with
//! kube-apiserver's field paths and texts (k8s.io/apiextensions-apiserver v0.34: pruning,
//! defaulting, `kubeOpenAPIResultToFieldErrors`; kube-openapi's messages).
//!
//! The schemas are upstream's, checked in as `schemas.json` (written by `lab/sim-schemas`
//! from the CRDs in the Go module cache) and compiled once per process.
//! Not done: `x-kubernetes-validations` (CEL rules), list-map/set uniqueness, formats other
//! than `uuid` and `ipv4`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use super::resources::KINDS;

/// One field error, as `k8s.io/apimachinery`'s `field.Error` renders it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, …
    pub reason: &'static str,
    pub field: String,
    /// The error without its field: `Required value`, `Invalid value: 0: …`.
    pub body: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError::new("FieldValueRequired", field, "Required value", None, detail)
    }

    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError::new("FieldValueForbidden", field, "Forbidden", None, detail)
    }

    pub fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError::new(
            "FieldValueInvalid",
            field,
            "Invalid value",
            Some(value),
            detail,
        )
    }

    fn type_invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        FieldError::new(
            "FieldValueTypeInvalid",
            field,
            "Invalid value",
            Some(value),
            detail,
        )
    }

    fn new(
        reason: &'static str,
        field: &str,
        what: &str,
        value: Option<&Value>,
        detail: &str,
    ) -> FieldError {
        let mut body = what.to_string();
        if let Some(v) = value {
            body.push_str(": ");
            body.push_str(&go_value(v));
        }
        if !detail.is_empty() {
            body.push_str(": ");
            body.push_str(detail);
        }
        FieldError {
            reason,
            field: field.to_string(),
            body,
        }
    }
}

/// A value as `field.Error` prints it: strings quoted, numbers and booleans bare,
/// anything else as JSON.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        other => other.to_string(),
    }
}

/// Go's `%q` for the strings these messages hold.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    IntOrString,
    Any,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Object => "object",
            Ty::Array => "array",
            Ty::String => "string",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::Boolean => "boolean",
            Ty::IntOrString => "integer,string",
            Ty::Any => "",
        }
    }
}

/// One compiled schema node.
#[derive(Debug)]
struct Node {
    ty: Ty,
    properties: BTreeMap<String, Node>,
    additional: Option<Box<Node>>,
    items: Option<Box<Node>>,
    preserve_unknown: bool,
    nullable: bool,
    default: Option<Value>,
    required: Vec<String>,
    enumeration: Vec<Value>,
    minimum: Option<(f64, bool)>,
    maximum: Option<(f64, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    pattern: Option<(String, regex::Regex)>,
    format: Option<String>,
}

impl Node {
    fn compile(s: &Value) -> Node {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        let count = |k: &str| s.get(k).and_then(Value::as_u64);
        let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
        let ty = if flag("x-kubernetes-int-or-string") {
            Ty::IntOrString
        } else {
            match s.get("type").and_then(Value::as_str) {
                Some("object") => Ty::Object,
                Some("array") => Ty::Array,
                Some("string") => Ty::String,
                Some("integer") => Ty::Integer,
                Some("number") => Ty::Number,
                Some("boolean") => Ty::Boolean,
                _ => Ty::Any,
            }
        };
        let pattern = s.get("pattern").and_then(Value::as_str).map(|p| {
            let re = regex::Regex::new(p)
                .unwrap_or_else(|e| panic!("upstream pattern {p:?} does not compile: {e}"));
            (p.to_string(), re)
        });
        Node {
            ty,
            properties: s
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), Node::compile(v)))
                        .collect()
                })
                .unwrap_or_default(),
            additional: match s.get("additionalProperties") {
                Some(v @ Value::Object(_)) => Some(Box::new(Node::compile(v))),
                Some(Value::Bool(true)) => Some(Box::new(Node::compile(&Value::Null))),
                _ => None,
            },
            items: s.get("items").map(|v| Box::new(Node::compile(v))),
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            nullable: flag("nullable"),
            default: s.get("default").cloned(),
            required: s
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            enumeration: s
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            minimum: num("minimum").map(|m| (m, flag("exclusiveMinimum"))),
            maximum: num("maximum").map(|m| (m, flag("exclusiveMaximum"))),
            min_length: count("minLength"),
            max_length: count("maxLength"),
            min_items: count("minItems"),
            max_items: count("maxItems"),
            min_properties: count("minProperties"),
            max_properties: count("maxProperties"),
            pattern,
            format: s.get("format").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// The schema of a map's field `k`: a property, or `additionalProperties`.
    fn field(&self, k: &str) -> Option<&Node> {
        self.properties.get(k).or(self.additional.as_deref())
    }
}

/// The fields of `ObjectMeta`; anything else under `metadata` is unknown.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const SCHEMAS_JSON: &str = include_str!("schemas.json");

/// Compiled schemas by index into [`KINDS`] (`None`: a built-in kind, not checked here).
static SCHEMAS: LazyLock<Vec<Option<Node>>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(SCHEMAS_JSON).expect("schemas.json is JSON");
    KINDS
        .iter()
        .map(|k| {
            if !k.is_custom() {
                return None;
            }
            let key = format!("{}/{}/{}", k.group, k.version, k.kind);
            let s = doc["kinds"]
                .get(&key)
                .unwrap_or_else(|| panic!("schemas.json has no schema for {key}"));
            Some(Node::compile(s))
        })
        .collect()
});

/// What the schema file says of each kind besides its schema, by index into [`KINDS`].
struct Versions {
    /// The schema has `x-kubernetes-validations` (CEL rules, not evaluated here).
    rules: bool,
    /// The warning every request for a deprecated version gets.
    deprecation: Option<String>,
    /// Stored in another version: writes go through the conversion webhook.
    converted: bool,
}

static VERSIONS: LazyLock<Vec<Versions>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(SCHEMAS_JSON).expect("schemas.json is JSON");
    KINDS
        .iter()
        .map(|k| {
            let key = format!("{}/{}/{}", k.group, k.version, k.kind);
            Versions {
                rules: doc["kinds"]
                    .get(&key)
                    .is_some_and(|s| s.to_string().contains("\"x-kubernetes-validations\"")),
                deprecation: doc["deprecated"][&key].as_str().map(str::to_string),
                converted: doc["storage"].get(&key).is_some(),
            }
        })
        .collect()
});

/// `cluster.x-k8s.io/v1beta1 Machine is deprecated; use cluster.x-k8s.io/v1beta2 Machine`
/// for the versions upstream marks deprecated.
pub fn deprecation(kind: usize) -> Option<&'static str> {
    VERSIONS.get(kind).and_then(|v| v.deprecation.as_deref())
}

/// What kube-apiserver adds to the errors of a kind with CEL rules when one of them is of
/// a kind that stops the rules from running (unsupported, required, too long, too many,
/// wrong type).
pub fn rules_not_checked(kind: usize, errs: &[FieldError]) -> Option<FieldError> {
    const BLOCKING: [&str; 5] = [
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    ];
    let rules = VERSIONS.get(kind).is_some_and(|v| v.rules);
    (rules && errs.iter().any(|e| BLOCKING.contains(&e.reason))).then(|| {
        FieldError::invalid(
            "<nil>",
            &Value::Null,
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        )
    })
}

/// Whether the served version is not the stored one (CAPI's v1beta1 since v1.11): every
/// write is converted by CAPI's conversion webhook, which decodes it into Go types.
pub fn converted(kind: usize) -> bool {
    VERSIONS.get(kind).is_some_and(|v| v.converted)
}

/// What Go's `encoding/json` says when the conversion webhook decodes a value of the wrong
/// type: `json: cannot unmarshal string into Go struct field MachineSetSpec.spec.replicas
/// of type int32`. The Go type names are reconstructed from the schema (a struct's name
/// from its field's), so they are upstream's only for the common cases.
pub fn go_decode_error(kind: usize, obj: &Value) -> Option<String> {
    let root = schema(kind)?;
    let Value::Object(top) = obj else {
        return None;
    };
    let mut segs: Vec<&str> = Vec::new();
    for (k, v) in top {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = root.properties.get(k)
            && let Some(e) = go_mismatch(v, s, k, &mut segs, KINDS[kind].kind)
        {
            return Some(e);
        }
    }
    None
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn go_type(s: &Node, field: &str) -> String {
    match s.ty {
        Ty::String => "string".into(),
        Ty::Boolean => "bool".into(),
        Ty::Number => "float64".into(),
        Ty::Integer => match s.format.as_deref() {
            Some("int32") => "int32".into(),
            Some("int64") => "int64".into(),
            _ => "int".into(),
        },
        Ty::Array => format!(
            "[]{}",
            s.items
                .as_deref()
                .map(|i| go_type(i, field))
                .unwrap_or_default()
        ),
        Ty::Object if s.properties.is_empty() && s.additional.is_some() => format!(
            "map[string]{}",
            s.additional
                .as_deref()
                .map(|a| go_type(a, field))
                .unwrap_or_default()
        ),
        _ => format!("v1beta1.{}", capitalised(field)),
    }
}

fn go_mismatch<'a>(
    v: &'a Value,
    s: &Node,
    field: &'a str,
    segs: &mut Vec<&'a str>,
    kind: &str,
) -> Option<String> {
    segs.push(field);
    let out = go_mismatch_here(v, s, field, segs, kind);
    segs.pop();
    out
}

fn go_mismatch_here<'a>(
    v: &'a Value,
    s: &Node,
    field: &'a str,
    segs: &mut Vec<&'a str>,
    kind: &str,
) -> Option<String> {
    // Types with their own decoding (quantities, times, int-or-string) are left alone.
    if v.is_null()
        || matches!(s.ty, Ty::Any | Ty::IntOrString)
        || s.format.as_deref() == Some("date-time")
    {
        return None;
    }
    if !type_ok(s.ty, v) {
        let found = match v {
            Value::String(_) => "string".to_string(),
            Value::Bool(_) => "bool".to_string(),
            Value::Array(_) => "array".to_string(),
            Value::Object(_) => "object".to_string(),
            Value::Number(n) => format!("number {n}"),
            Value::Null => "null".to_string(),
        };
        let found = if found.starts_with("number") && s.ty != Ty::Integer {
            "number".to_string()
        } else {
            found
        };
        // The struct that holds the field: `<Kind>Spec` for `spec.x`, else the parent's
        // field name.
        let holder = match segs.len() {
            0 | 1 => kind.to_string(),
            2 => format!("{kind}{}", capitalised(segs[0])),
            n => capitalised(segs[n - 2]),
        };
        return Some(format!(
            "json: cannot unmarshal {found} into Go struct field {holder}.{} of type {}",
            segs.join("."),
            go_type(s, field)
        ));
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if let Some(sub) = s.properties.get(k) {
                    if let Some(e) = go_mismatch(x, sub, k, segs, kind) {
                        return Some(e);
                    }
                } else if let Some(extra) = s.additional.as_deref()
                    && !type_ok(extra.ty, x)
                    && !x.is_null()
                    && extra.ty != Ty::Any
                {
                    return Some(format!(
                        "json: cannot unmarshal {} into Go value of type {}",
                        type_of(x).replace("boolean", "bool"),
                        go_type(extra, k)
                    ));
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for x in a {
                    if items.ty == Ty::Object || items.ty == Ty::Array {
                        // Go names an element's fields from the slice's field.
                        let Value::Object(m) = x else {
                            if let Some(e) = go_mismatch_here(x, items, field, segs, kind) {
                                return Some(e);
                            }
                            continue;
                        };
                        for (k, y) in m {
                            if let Some(sub) = items.properties.get(k)
                                && let Some(e) = go_mismatch(y, sub, k, segs, kind)
                            {
                                return Some(e);
                            }
                        }
                    } else if let Some(e) = go_mismatch_here(x, items, field, segs, kind) {
                        return Some(e);
                    }
                }
            }
        }
        _ => {}
    }
    None
}

/// What decoding into Go types and encoding back adds: a required field (one Go writes
/// even when empty) that is missing comes back as its zero value — `""`, `0`, `false`,
/// `{}` — so kube-apiserver then validates the zero value (a missing `clusterName` is
/// "should be at least 1 chars long", not "Required value"). Times and lists (which Go
/// writes as null) are left out.
pub fn fill_required(kind: usize, obj: &mut Value) {
    if let Some(root) = schema(kind)
        && let Value::Object(top) = obj
    {
        for (k, v) in top.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = root.properties.get(k) {
                zero_fill(v, s);
            }
        }
    }
}

fn zero_fill(v: &mut Value, s: &Node) {
    match v {
        Value::Object(m) => {
            for k in &s.required {
                if m.contains_key(k) {
                    continue;
                }
                let Some(sub) = s.properties.get(k) else {
                    continue;
                };
                let zero = match sub.ty {
                    Ty::String if sub.format.as_deref() != Some("date-time") => json!(""),
                    Ty::Integer | Ty::Number => json!(0),
                    Ty::Boolean => json!(false),
                    Ty::Object => json!({}),
                    _ => continue,
                };
                m.insert(k.clone(), zero);
            }
            for (k, x) in m.iter_mut() {
                if let Some(sub) = s.properties.get(k) {
                    zero_fill(x, sub);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for x in a {
                    zero_fill(x, items);
                }
            }
        }
        _ => {}
    }
}

fn schema(kind: usize) -> Option<&'static Node> {
    SCHEMAS.get(kind).and_then(Option::as_ref)
}

/// Compiles every schema now (at startup), so no request pays for it.
pub fn load() {
    LazyLock::force(&SCHEMAS);
    LazyLock::force(&VERSIONS);
}

/// Removes fields the schema does not know, as the apiserver's decoder does, and returns
/// their paths (`spec.foo`, `spec.ports[0].bar`, `metadata.foo`), sorted. Built-in kinds
/// are left alone.
pub fn prune(kind: usize, obj: &mut Value) -> Vec<String> {
    let Some(root) = schema(kind) else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.retain(|k, _| {
            let known = OBJECT_META.contains(&k.as_str());
            if !known {
                unknown.push(format!("metadata.{k}"));
            }
            known
        });
    }
    let Value::Object(top) = obj else {
        return unknown;
    };
    let mut path = String::new();
    top.retain(|k, v| {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            return true;
        }
        match root.properties.get(k) {
            Some(s) => {
                path.clear();
                path.push_str(k);
                prune_value(v, Some(s), &mut path, &mut unknown);
                true
            }
            None => {
                unknown.push(k.clone());
                false
            }
        }
    });
    prune_nulls(top, root);
    unknown.sort();
    unknown
}

fn prune_value(x: &mut Value, s: Option<&Node>, path: &mut String, unknown: &mut Vec<String>) {
    if let Some(s) = s.filter(|s| s.preserve_unknown) {
        skip_prune(x, s, path, unknown);
        return;
    }
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let len = path.len();
                push_key(path, k);
                let keep = match s.and_then(|s| s.field(k)) {
                    Some(sub) => {
                        prune_value(v, Some(sub), path, unknown);
                        true
                    }
                    None => {
                        unknown.push(path.clone());
                        false
                    }
                };
                path.truncate(len);
                keep
            });
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                prune_value(v, s.and_then(|s| s.items.as_deref()), path, unknown);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Under `x-kubernetes-preserve-unknown-fields`: unknown fields stay, known ones are
/// pruned as usual (list items likewise, by their own schema).
fn skip_prune(x: &mut Value, s: &Node, path: &mut String, unknown: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if let Some(sub) = s.field(k) {
                    let len = path.len();
                    push_key(path, k);
                    prune_value(v, Some(sub), path, unknown);
                    path.truncate(len);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for (i, v) in a.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    skip_prune(v, items, path, unknown);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn push_key(path: &mut String, k: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k);
}

/// Drops `null`s where the schema allows no null and has no default to put there.
fn prune_nulls(m: &mut Map<String, Value>, s: &Node) {
    m.retain(|k, v| {
        let sub = s.field(k);
        if v.is_null() && sub.is_some_and(|sub| !sub.nullable && sub.default.is_none()) {
            return false;
        }
        match v {
            Value::Object(inner) => {
                if let Some(sub) = sub {
                    prune_nulls(inner, sub);
                }
            }
            Value::Array(a) => {
                if let Some(items) = sub.and_then(|sub| sub.items.as_deref()) {
                    for item in a.iter_mut() {
                        if let Value::Object(inner) = item {
                            prune_nulls(inner, items);
                        }
                    }
                }
            }
            _ => {}
        }
        true
    });
}

/// Applies the schema's `default`s: a missing field (or a null one the schema does not
/// allow) with a default gets it, and defaults nest.
pub fn default(kind: usize, obj: &mut Value) {
    if let Some(root) = schema(kind) {
        default_value(obj, root);
    }
}

fn default_value(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                let missing = match m.get(k) {
                    None => true,
                    Some(v) => v.is_null() && !prop.nullable,
                };
                if missing {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default_value(v, prop);
                } else if let Some(extra) = s.additional.as_deref() {
                    if v.is_null()
                        && !extra.nullable
                        && let Some(d) = &extra.default
                    {
                        *v = d.clone();
                    }
                    default_value(v, extra);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.items.as_deref() {
                for v in a.iter_mut() {
                    if v.is_null()
                        && !items.nullable
                        && let Some(d) = &items.default
                    {
                        *v = d.clone();
                    }
                    default_value(v, items);
                }
            }
        }
        _ => {}
    }
}

/// Checks an object against its kind's schema (`status_only`: only its `status`, as a write
/// to `/status` is checked). With `old` (an update) errors in parts equal to the old
/// object's are not reported: the apiserver's validation ratcheting, by path.
pub fn validate(
    kind: usize,
    obj: &Value,
    old: Option<&Value>,
    status_only: bool,
) -> Vec<FieldError> {
    let Some(root) = schema(kind) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    if status_only {
        if let (Some(status), Some(s)) = (obj.get("status"), root.properties.get("status")) {
            check(
                status,
                s,
                old.and_then(|o| o.get("status")),
                "status",
                &mut errs,
            );
        }
    } else {
        check(obj, root, old, "", &mut errs);
    }
    errs
}

fn child(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// What kube-openapi calls a value's type.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(ty: Ty, v: &Value) -> bool {
    let integral = |v: &Value| {
        v.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
    };
    match ty {
        Ty::Any => true,
        Ty::Object => v.is_object(),
        Ty::Array => v.is_array(),
        Ty::String => v.is_string(),
        Ty::Boolean => v.is_boolean(),
        Ty::Number => v.is_number(),
        Ty::Integer => v.is_number() && integral(v),
        Ty::IntOrString => v.is_string() || (v.is_number() && integral(v)),
    }
}

fn in_body(path: &str) -> String {
    format!("{path} in body")
}

/// Go's `%v` of a float64 bound: `1`, `0.5`.
fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn check(v: &Value, s: &Node, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    if old == Some(v) {
        // Ratcheting: an unchanged part is not re-checked.
        return;
    }
    let field = path.to_string();
    if !type_ok(s.ty, v) {
        if v.is_null() && s.nullable {
            return;
        }
        let found = type_of(v);
        errs.push(FieldError::type_invalid(
            &field,
            &Value::String(found.into()),
            &format!(
                "{} must be of type {}: {}",
                in_body(path),
                s.ty.name(),
                go_quote(found)
            ),
        ));
        if s.enumeration.is_empty() {
            return;
        }
    }
    match v {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(max) = s.max_length
                && chars > max
            {
                let unit = if max == 1 { "byte" } else { "bytes" };
                errs.push(FieldError::new(
                    "FieldValueTooLong",
                    &field,
                    "Too long",
                    None,
                    &format!("may not be more than {max} {unit}"),
                ));
            } else if let Some(min) = s.min_length
                && chars < min
            {
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    &format!("{} should be at least {min} chars long", in_body(path)),
                ));
            } else if let Some((p, re)) = &s.pattern
                && !re.is_match(text)
            {
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    &format!("{} should match '{p}'", in_body(path)),
                ));
            }
            if let Some(f) = s.format.as_deref()
                && !format_ok(f, text)
            {
                errs.push(FieldError::type_invalid(
                    &field,
                    v,
                    &format!("{} must be of type {f}: {}", in_body(path), go_quote(text)),
                ));
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some((max, exclusive)) = s.maximum
                && (f > max || (exclusive && f == max))
            {
                let how = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    &format!("{} should be {how} {}", in_body(path), go_float(max)),
                ));
            }
            if let Some((min, exclusive)) = s.minimum
                && (f < min || (exclusive && f == min))
            {
                let how = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    &format!("{} should be {how} {}", in_body(path), go_float(min)),
                ));
            }
        }
        Value::Array(items) => {
            let old_items = old.and_then(Value::as_array);
            if let Some(item) = s.items.as_deref() {
                for (i, x) in items.iter().enumerate() {
                    let was = old_items.and_then(|o| o.get(i));
                    check(x, item, was, &format!("{path}[{i}]"), errs);
                }
            }
            let n = items.len() as u64;
            if let Some(min) = s.min_items
                && n < min
            {
                errs.push(FieldError::invalid(
                    &field,
                    &Value::from(n),
                    &format!("{} should have at least {min} items", in_body(path)),
                ));
            }
            if let Some(max) = s.max_items
                && n > max
            {
                let unit = if max == 1 { "item" } else { "items" };
                errs.push(FieldError::new(
                    "FieldValueTooMany",
                    &field,
                    "Too many",
                    Some(&Value::from(n)),
                    &format!("must have at most {max} {unit}"),
                ));
            }
        }
        Value::Object(m) => {
            let old_map = old.and_then(Value::as_object);
            let n = m.len() as u64;
            if let Some(min) = s.min_properties
                && n < min
            {
                errs.push(FieldError::invalid(
                    &field,
                    &Value::from(n),
                    &format!("{} should have at least {min} properties", in_body(path)),
                ));
            }
            if let Some(max) = s.max_properties
                && n > max
            {
                errs.push(FieldError::new(
                    "FieldValueTooMany",
                    &field,
                    "Too many",
                    Some(&Value::from(n)),
                    &format!("must have at most {max} items"),
                ));
            }
            for (k, x) in m {
                let (sub, at_root) = (s.field(k), path.is_empty());
                if at_root && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                    continue;
                }
                if let Some(sub) = sub {
                    let was = old_map.and_then(|o| o.get(k));
                    check(x, sub, was, &child(path, k), errs);
                }
            }
            for k in &s.required {
                if !m.contains_key(k) {
                    errs.push(FieldError::required(&child(path, k), ""));
                }
            }
        }
        _ => {}
    }
    if !s.enumeration.is_empty() && !s.enumeration.iter().any(|e| enum_eq(e, v)) {
        let supported: Vec<String> = s
            .enumeration
            .iter()
            .map(|e| match e {
                Value::String(s) => go_quote(s),
                other => go_quote(&other.to_string()),
            })
            .collect();
        errs.push(FieldError::new(
            "FieldValueNotSupported",
            &field,
            "Unsupported value",
            Some(v),
            &format!("supported values: {}", supported.join(", ")),
        ));
    }
}

/// The string formats kube-openapi checks that upstream schemas use (`uuid`: dashes
/// optional, any case; `ipv4`); others pass.
fn format_ok(format: &str, text: &str) -> bool {
    match format {
        "uuid" => {
            let hex: String = text.chars().filter(|c| *c != '-').collect();
            let groups: Vec<usize> = text.split('-').map(str::len).collect();
            hex.len() == 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
                && (groups == [32] || groups == [8, 4, 4, 4, 12])
        }
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        _ => true,
    }
}

fn enum_eq(e: &Value, v: &Value) -> bool {
    match (e, v) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => e == v,
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::ix;
    use super::*;

    fn machine() -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
            "metadata": {"name": "m"},
            "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": "b"},
                     "infrastructureRef": {"kind": "OpenStackMachine", "name": "m"}},
        })
    }

    #[test]
    fn every_served_custom_kind_has_a_schema_and_its_patterns_compile() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(schema(i).is_some(), k.is_custom(), "{}", k.kind);
        }
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_but_preserved_where_the_schema_says() {
        let mut m = machine();
        m["spec"]["foo"] = json!(1);
        m["spec"]["infrastructureRef"]["bar"] = json!("x");
        m["metadata"]["colour"] = json!("blue");
        m["top"] = json!(true);
        m["status"] =
            json!({"addresses": [{"type": "InternalIP", "address": "1.2.3.4", "zone": "a"}]});
        let unknown = prune(ix::MACHINE, &mut m);
        assert_eq!(
            unknown,
            [
                "metadata.colour",
                "spec.foo",
                "spec.infrastructureRef.bar",
                "status.addresses[0].zone",
                "top"
            ]
        );
        assert!(m["spec"].get("foo").is_none());
        assert!(m.get("top").is_none());
        assert_eq!(m["spec"]["clusterName"], "demo");
        // Maps of additionalProperties (labels, a filter's tags) keep their keys.
        let mut osm = json!({"metadata": {"name": "o", "labels": {"a": "b"}},
            "spec": {"flavor": "m1", "image": {"filter": {"name": "ubuntu"}}}});
        assert!(prune(ix::OPENSTACK_MACHINE, &mut osm).is_empty());
        assert_eq!(osm["metadata"]["labels"]["a"], "b");
        // A topology variable's value is x-kubernetes-preserve-unknown-fields.
        let mut cluster = json!({"metadata": {"name": "c"}, "spec": {"topology": {
            "class": "k", "version": "v1.31.0",
            "variables": [{"name": "v", "value": {"any": {"thing": [1, 2]}}, "extra": 1}]}}});
        assert_eq!(
            prune(ix::CLUSTER, &mut cluster),
            ["spec.topology.variables[0].extra"]
        );
        assert_eq!(
            cluster["spec"]["topology"]["variables"][0]["value"]["any"]["thing"],
            json!([1, 2])
        );
    }

    #[test]
    fn defaults_fill_missing_and_nested_fields() {
        let mut osm = json!({"metadata": {"name": "o"}, "spec": {"flavor": "m1",
            "identityRef": {"name": "creds", "cloudName": "c"},
            "rootVolume": {"sizeGiB": 10, "availabilityZone": {}},
            "additionalBlockDevices": [{"name": "data", "sizeGiB": 1,
                "storage": {"type": "Volume", "volume": {"availabilityZone": null}}}]}});
        default(ix::OPENSTACK_MACHINE, &mut osm);
        assert_eq!(osm["spec"]["identityRef"]["type"], "Secret");
        assert_eq!(
            osm["spec"]["rootVolume"]["availabilityZone"]["from"],
            "Name"
        );
        assert_eq!(
            osm["spec"]["additionalBlockDevices"][0]["storage"]["volume"]["availabilityZone"],
            Value::Null,
            "a null with no default of its own is left for pruning"
        );
        let mut bare = json!({"metadata": {"name": "o"}, "spec": {"flavor": "m1"}});
        default(ix::OPENSTACK_MACHINE, &mut bare);
        assert!(
            bare["spec"].get("identityRef").is_none(),
            "only fields present get their members defaulted"
        );
    }

    #[test]
    fn wrong_types_required_fields_enums_and_bounds_read_as_kube_writes_them() {
        let mut m = machine();
        m["spec"].as_object_mut().unwrap().remove("clusterName");
        m["spec"]["nodeDrainTimeout"] = json!(true);
        m["spec"]["readinessGates"] = json!([{"conditionType": ""}]);
        let errs = validate(ix::MACHINE, &m, None, false);
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{} {}: {}", e.reason, e.field, e.body))
            .collect();
        assert!(
            text.contains(&"FieldValueRequired spec.clusterName: Required value".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with(
                "FieldValueTypeInvalid spec.nodeDrainTimeout: Invalid value: \"boolean\": spec.nodeDrainTimeout in body must be of type string: \"boolean\""
            )),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with(
                "FieldValueInvalid spec.readinessGates[0].conditionType: Invalid value: \"\": spec.readinessGates[0].conditionType in body should be at least 1 chars long"
            )),
            "{text:?}"
        );
        let mut ms = json!({"metadata": {"name": "ms"}, "spec": {"clusterName": "demo",
            "deletePolicy": "Sideways", "selector": {},
            "template": {"spec": {"clusterName": "demo", "bootstrap": {},
            "infrastructureRef": {}}}}});
        default(ix::MACHINE_SET, &mut ms);
        let errs = validate(ix::MACHINE_SET, &ms, None, false);
        assert_eq!(
            errs,
            [FieldError {
                reason: "FieldValueNotSupported",
                field: "spec.deletePolicy".into(),
                body: r#"Unsupported value: "Sideways": supported values: "Random", "Newest", "Oldest""#
                    .into(),
            }]
        );
    }

    #[test]
    fn unchanged_invalid_parts_are_not_rechecked_on_update() {
        let mut old = machine();
        old["spec"]["nodeDrainTimeout"] = json!(true);
        let mut new = old.clone();
        new["spec"]["version"] = json!("v1.31.0");
        assert!(validate(ix::MACHINE, &new, Some(&old), false).is_empty());
        assert_eq!(validate(ix::MACHINE, &new, None, false).len(), 1);
    }

    #[test]
    fn the_conversion_webhooks_go_decoding_names_the_field_and_fills_zero_values() {
        assert!(converted(ix::MACHINE_SET) && !converted(ix::OPENSTACK_MACHINE));
        let mut ms = json!({"metadata": {"name": "ms"}, "spec": {"clusterName": "demo",
            "replicas": "three", "selector": {}, "template": {"spec": {}}}});
        assert_eq!(
            go_decode_error(ix::MACHINE_SET, &ms).as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field MachineSetSpec.spec.replicas of type int32"
            )
        );
        ms["spec"]["replicas"] = json!(1);
        assert_eq!(go_decode_error(ix::MACHINE_SET, &ms), None);
        let mut m = json!({"metadata": {"name": "m"}, "spec": {"bootstrap": {}}});
        fill_required(ix::MACHINE, &mut m);
        assert_eq!(m["spec"]["clusterName"], "");
        assert_eq!(m["spec"]["infrastructureRef"], json!({}));
        let errs = validate(ix::MACHINE, &m, None, false);
        assert_eq!(
            errs,
            [FieldError::invalid(
                "spec.clusterName",
                &json!(""),
                "spec.clusterName in body should be at least 1 chars long"
            )]
        );
    }

    #[test]
    fn a_kind_with_cel_rules_says_they_were_not_checked_after_a_blocking_error() {
        let osm = json!({"metadata": {"name": "o"}, "spec": {"flavor": 5}});
        let errs = validate(ix::OPENSTACK_MACHINE, &osm, None, false);
        let notice = rules_not_checked(ix::OPENSTACK_MACHINE, &errs).unwrap();
        assert_eq!(notice.field, "<nil>");
        assert!(
            notice
                .body
                .starts_with("Invalid value: null: some validation rules")
        );
        let bounds = json!({"metadata": {"name": "o"}, "spec": {"image": {}}});
        let errs = validate(ix::OPENSTACK_MACHINE, &bounds, None, false);
        assert_eq!(errs.len(), 1);
        assert_eq!(rules_not_checked(ix::OPENSTACK_MACHINE, &errs), None);
    }
}

//! One API server's objects, with the apiserver's write semantics: resourceVersions,
//! conflicts, the status subresource, generation, finalizers and deletionTimestamp,
//! owner-reference garbage collection, and a bounded history that watches replay.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::resources::{KINDS, Kind};
use super::schema::{self, FieldError};
use super::selector::{FieldSelector, LabelSelector};
use super::webhooks;

/// How many changes a store remembers for watches; older resume points get 410 Gone.
pub const HISTORY: usize = 8192;

/// A failure in the apiserver's `Status` form.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: json!({}),
        }
    }

    fn about(mut self, kind: &Kind, name: &str) -> ApiError {
        self.details = json!({ "name": name, "group": kind.group, "kind": kind.plural });
        self
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified()),
        )
        .about(kind, name)
    }

    pub fn conflict(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified()
            ),
        )
        .about(kind, name)
    }

    /// One field's error: `why` is the error's body (`Required value: …`, `Invalid value:
    /// …`), whose first words give the cause's reason.
    pub fn invalid(kind: &Kind, name: &str, field: &str, why: &str) -> ApiError {
        let reason = if why.starts_with("Required value") {
            "FieldValueRequired"
        } else if why.starts_with("Forbidden") {
            "FieldValueForbidden"
        } else {
            "FieldValueInvalid"
        };
        ApiError::invalid_fields(
            kind,
            name,
            vec![FieldError {
                reason,
                field: field.to_string(),
                body: why.to_string(),
            }],
        )
    }

    /// What `apierrors.NewInvalid` makes of field errors: 422 `Invalid`, a cause per error,
    /// the message naming the kind with its group (`Machine.cluster.x-k8s.io "m" is
    /// invalid: …`, several errors in brackets, repeats once).
    pub fn invalid_fields(kind: &Kind, name: &str, errs: Vec<FieldError>) -> ApiError {
        let qualified = if kind.group.is_empty() {
            kind.kind.to_string()
        } else {
            format!("{}.{}", kind.kind, kind.group)
        };
        let mut texts: Vec<String> = Vec::new();
        for e in &errs {
            let t = format!("{}: {}", e.field, e.body);
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
        let all = match texts.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({ "reason": e.reason, "message": e.body, "field": e.field }))
            .collect();
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {all}"),
        );
        e.details =
            json!({ "name": name, "group": kind.group, "kind": kind.kind, "causes": causes });
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "code": self.code,
        });
        // As metav1.Status is written: no empty reason or details.
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if self.details.as_object().is_some_and(|d| !d.is_empty()) {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// What a watch sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: usize,
    pub change: Change,
    /// The object as JSON text. A `Value` tree costs several times its text (a B-tree node
    /// per map, however small), and the history holds thousands of objects: with 1,000
    /// Machines it was most of the simulator's memory.
    pub object: Box<str>,
}

impl Event {
    /// The object, parsed back (for a watch's selectors).
    pub fn object(&self) -> Value {
        serde_json::from_str(&self.object).unwrap_or(Value::Null)
    }
}

type Key = (usize, String, String);

/// Where a write goes: the object itself or its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

/// How an update is made: to what, whether a custom resource's PUT must carry a
/// `resourceVersion`, and whether it is only tried (`dryRun`).
#[derive(Debug, Clone, Copy)]
pub struct Write {
    pub target: Target,
    pub require_rv: bool,
    pub dry_run: bool,
}

/// One API server's objects.
pub struct Objects {
    rv: u64,
    items: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    /// Watches asked to resume from a version before this one get 410 Gone.
    floor: u64,
    /// Woken on every change, with the newest resourceVersion.
    notify: tokio::sync::watch::Sender<u64>,
}

impl Default for Objects {
    fn default() -> Self {
        Objects {
            rv: 1,
            items: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 1,
            notify: tokio::sync::watch::channel(1).0,
        }
    }
}

/// Seconds-precision RFC 3339, as the apiserver writes timestamps.
pub fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).get(field).and_then(Value::as_str).unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether everything but `metadata`, `status`, `apiVersion` and `kind` — what
/// `generation` counts — is equal (compared in place: controllers write thousands of
/// objects a pass).
fn same_spec(a: &Value, b: &Value) -> bool {
    const SKIP: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => a
            .iter()
            .filter(|(k, _)| !SKIP.contains(&k.as_str()))
            .eq(b.iter().filter(|(k, _)| !SKIP.contains(&k.as_str()))),
        _ => a == b,
    }
}

impl Objects {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// How many objects are stored, and how many changes the history holds (the
    /// simulator's memory figure).
    pub fn sizes(&self) -> (usize, usize) {
        (self.items.len(), self.history.len())
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Forgets the change history, as etcd's compaction does: watches resuming from any
    /// version handed out so far get 410 Gone (the version moves on, so a fresh list can
    /// be watched from).
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.floor = self.rv;
        self.poke();
    }

    /// Wakes every watch without a change (they re-check whether to end).
    pub fn poke(&self) {
        self.notify.send_replace(self.rv);
    }

    /// The oldest version a watch may resume from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn get(&self, kind: usize, ns: &str, name: &str) -> Option<&Value> {
        self.items.get(&(kind, ns.to_string(), name.to_string()))
    }

    /// Objects of a kind (in one namespace, or all when `ns` is `None`), in name order.
    pub fn list<'a>(
        &'a self,
        kind: usize,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.items
            .range((kind, String::new(), String::new())..)
            .take_while(move |((k, _, _), _)| *k == kind)
            .filter(move |((_, n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// The `(namespace, name)` of every object of a kind, in name order: what a controller
    /// walks, fetching each object in turn, instead of cloning them all up front.
    pub fn keys(&self, kind: usize) -> Vec<(String, String)> {
        self.items
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
            .collect()
    }

    /// Objects whose labels and fields match.
    pub fn select(
        &self,
        kind: usize,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.list(kind, ns)
            .filter(|o| labels.matches(meta(o).get("labels")) && fields.matches(o))
            .cloned()
            .collect()
    }

    /// Changes after `rv` (exclusive), oldest first.
    pub fn since(&self, rv: u64) -> impl Iterator<Item = &Event> {
        let start = self.history.partition_point(|e| e.rv <= rv);
        self.history.range(start..)
    }

    fn record(&mut self, kind: usize, change: Change, object: &Value) {
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            change,
            object: object.to_string().into_boxed_str(),
        });
        while self.history.len() > HISTORY {
            let dropped = self.history.pop_front().expect("history is not empty");
            self.floor = dropped.rv;
        }
        self.notify.send_replace(self.rv);
    }

    fn bump(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// POST: a new object. `with_status` keeps a given status (the simulator's own seeding;
    /// clients' creates drop it, as the apiserver does for a status subresource).
    pub fn create(
        &mut self,
        kind_ix: usize,
        ns: &str,
        mut obj: Value,
        with_status: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let kind = &KINDS[kind_ix];
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let body_ns = meta_str(&obj, "namespace");
        if kind.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if self.get(kind_ix, ns, &candidate).is_none() {
                    break candidate;
                }
            };
        }
        // kube-apiserver's order: decoding prunes and defaults, mutating webhooks, then
        // one validation of metadata and schema, the validating webhooks, and only then
        // the store (a clash of names is found last).
        if kind.status && !with_status {
            obj.as_object_mut().expect("object").remove("status");
        }
        schema::prune(kind_ix, &mut obj);
        schema::default(kind_ix, &mut obj);
        meta_mut(&mut obj).insert("name".into(), json!(name));
        convert(kind_ix, &mut obj)?;
        webhooks::mutate(kind_ix, &mut obj, None);
        let mut errs = Vec::new();
        if let Err(why) = check_name(&name) {
            errs.push(FieldError {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                body: why,
            });
        }
        errs.extend(owner_reference_errors(&obj));
        errs.extend(schema::validate(kind_ix, &obj, None, false));
        errs.extend(schema::rules_not_checked(kind_ix, &errs));
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(kind, &name, errs));
        }
        webhooks::validate(kind_ix, &obj, None, dry_run)?;
        webhooks::convert_back(kind_ix, &mut obj, ns);
        let key_ns = if kind.namespaced { ns } else { "" };
        if self.get(kind_ix, key_ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.qualified()),
            )
            .about(kind, &name));
        }
        normalise(kind_ix, &mut obj);
        if dry_run {
            return Ok(obj);
        }
        let rv = self.bump();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if kind.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(timestamp()));
        m.insert("resourceVersion".into(), json!(rv));
        if kind.is_custom() {
            m.insert("generation".into(), json!(1));
        }
        m.remove("deletionTimestamp");
        self.record(kind_ix, Change::Added, &obj);
        self.items
            .insert((kind_ix, key_ns.to_string(), name), obj.clone());
        Ok(obj)
    }

    /// A create by the simulator's own controllers: as [`Objects::create`], and a refusal
    /// by the schema or a webhook (a bug in the controller) is logged.
    pub fn create_own(&mut self, kind: usize, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let created = self.create(kind, ns, obj, false, false);
        if let Err(e) = &created
            && e.code == 422
        {
            tracing::warn!(
                kind = KINDS[kind].kind,
                ns,
                "sim controller create refused: {}",
                e.message
            );
        }
        created
    }

    /// PUT, or the result of a PATCH: replaces the object (or its status). A stale
    /// `metadata.resourceVersion` is a conflict; an empty one on a custom resource's PUT is
    /// invalid (`require_rv`).
    pub fn update(
        &mut self,
        kind_ix: usize,
        ns: &str,
        name: &str,
        mut new: Value,
        how: Write,
    ) -> Result<Value, ApiError> {
        let Write {
            target,
            require_rv,
            dry_run,
        } = how;
        let kind = &KINDS[kind_ix];
        let key_ns = if kind.namespaced { ns } else { "" };
        let key = (kind_ix, key_ns.to_string(), name.to_string());
        let Some(old) = self.items.get(&key) else {
            return Err(ApiError::not_found(kind, name));
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let rv = meta_str(&new, "resourceVersion");
        if rv.is_empty() && require_rv && kind.is_custom() {
            return Err(ApiError::invalid(
                kind,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        if !rv.is_empty() && rv != meta_str(old, "resourceVersion") {
            return Err(ApiError::conflict(kind, name));
        }
        if target == Target::Status {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        } else if kind.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        }
        // Server-owned metadata is carried over from the stored object.
        let old_meta = meta(old).clone();
        {
            let m = meta_mut(&mut new);
            m.insert("name".into(), json!(name));
            if kind.namespaced {
                m.insert("namespace".into(), json!(ns));
            }
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            m.insert(
                "resourceVersion".into(),
                old_meta["resourceVersion"].clone(),
            );
        }
        if &new == old {
            // Nothing changes (a controller's write at rest): no new version, no event,
            // and nothing for the schema or the webhooks to look at.
            return Ok(new);
        }
        schema::prune(kind_ix, &mut new);
        schema::default(kind_ix, &mut new);
        convert(kind_ix, &mut new)?;
        if target == Target::Main {
            webhooks::mutate(kind_ix, &mut new, Some(old));
        }
        let mut errs = Vec::new();
        let deleting = old_meta.get("deletionTimestamp").is_some();
        let old_finalizers = finalizers(old);
        let new_finalizers = finalizers(&new);
        if deleting && let Some(f) = new_finalizers.iter().find(|f| !old_finalizers.contains(f)) {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{f}\"}}"
                ),
            ));
        }
        errs.extend(owner_reference_errors(&new));
        errs.extend(schema::validate(
            kind_ix,
            &new,
            Some(old),
            target == Target::Status,
        ));
        errs.extend(schema::rules_not_checked(kind_ix, &errs));
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(kind, name, errs));
        }
        if target == Target::Main {
            webhooks::validate(kind_ix, &new, Some(old), dry_run)?;
        }
        webhooks::convert_back(kind_ix, &mut new, ns);
        normalise(kind_ix, &mut new);
        if kind.is_custom() && target == Target::Main && !same_spec(&new, old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if dry_run {
            return Ok(new);
        }
        if deleting && new_finalizers.is_empty() {
            self.remove(&key);
            return Ok(new);
        }
        if &new == old {
            // The apiserver skips writes that change nothing: no new version, no event.
            return Ok(new);
        }
        let rv = self.bump();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
        self.record(kind_ix, Change::Modified, &new);
        self.items.insert(key, new.clone());
        Ok(new)
    }

    /// DELETE: marks an object with finalizers (or a foreground deletion) as deleting, or
    /// removes it. Returns the object (still there) or a `Status` (gone).
    pub fn delete(
        &mut self,
        kind_ix: usize,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let kind = &KINDS[kind_ix];
        let key_ns = if kind.namespaced { ns } else { "" };
        let key = (kind_ix, key_ns.to_string(), name.to_string());
        let Some(old) = self.items.get(&key) else {
            return Err(ApiError::not_found(kind, name));
        };
        let pre = options.get("preconditions").unwrap_or(&Value::Null);
        for field in ["uid", "resourceVersion"] {
            if let Some(want) = pre.get(field).and_then(Value::as_str)
                && want != meta_str(old, field)
            {
                return Err(ApiError::conflict(kind, name));
            }
        }
        if meta(old).get("deletionTimestamp").is_some() {
            return Ok(old.clone());
        }
        let foreground =
            options.get("propagationPolicy").and_then(Value::as_str) == Some("Foreground");
        let uid = meta_str(old, "uid").to_string();
        if finalizers(old).is_empty() && !foreground {
            if !dry_run {
                self.remove(&key);
            }
            return Ok(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": { "name": name, "group": kind.group, "kind": kind.plural, "uid": uid },
            }));
        }
        let mut obj = old.clone();
        {
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(timestamp()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = m.get("generation").and_then(Value::as_i64) {
                m.insert("generation".into(), json!(g + 1));
            }
            if foreground {
                let mut f = finalizers(old);
                if !f.iter().any(|x| x == "foregroundDeletion") {
                    f.push("foregroundDeletion".into());
                }
                m.insert("finalizers".into(), json!(f));
            }
        }
        if dry_run {
            return Ok(obj);
        }
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
        self.record(kind_ix, Change::Modified, &obj);
        self.items.insert(key, obj.clone());
        self.collect_garbage();
        Ok(obj)
    }

    /// Final removal: a DELETED event, then the garbage collector's pass.
    fn remove(&mut self, key: &Key) {
        if let Some(mut obj) = self.items.remove(key) {
            let rv = self.bump();
            meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
            self.record(key.0, Change::Deleted, &obj);
            self.collect_garbage();
        }
    }

    /// The garbage collector, run to a fixed point: dependents whose owners are all gone are
    /// deleted (honouring their own finalizers); dangling references beside a live owner are
    /// dropped; foreground deletions finish once no dependent is left.
    fn collect_garbage(&mut self) {
        loop {
            let live: std::collections::HashSet<String> = self
                .items
                .values()
                .map(|o| meta_str(o, "uid").to_string())
                .collect();
            let foreground: std::collections::HashSet<&str> = self
                .items
                .values()
                .filter(|o| finalizers(o).iter().any(|f| f == "foregroundDeletion"))
                .map(|o| meta_str(o, "uid"))
                .collect();
            let owning: std::collections::HashSet<String> =
                self.items.values().flat_map(owner_uids).collect();
            let mut deletes = Vec::new();
            let mut trims = Vec::new();
            let mut foreground_done = Vec::new();
            for (key, obj) in &self.items {
                let owners = owner_uids(obj);
                if !owners.is_empty() {
                    let alive = owners.iter().filter(|u| live.contains(*u)).count();
                    let owner_deleting_foreground =
                        owners.iter().any(|u| foreground.contains(u.as_str()));
                    if (alive == 0 || owner_deleting_foreground)
                        && meta(obj).get("deletionTimestamp").is_none()
                    {
                        deletes.push(key.clone());
                    } else if alive < owners.len() && alive > 0 {
                        trims.push(key.clone());
                    }
                }
                let uid = meta_str(obj, "uid");
                if foreground.contains(uid) && !owning.contains(uid) {
                    foreground_done.push(key.clone());
                }
            }
            if deletes.is_empty() && trims.is_empty() && foreground_done.is_empty() {
                return;
            }
            for key in deletes {
                let _ = self.delete(key.0, &key.1, &key.2, &json!({}), false);
            }
            for key in trims {
                if let Some(mut obj) = self.items.get(&key).cloned() {
                    if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| {
                            r.get("uid")
                                .and_then(Value::as_str)
                                .is_some_and(|u| live.contains(u))
                        });
                    }
                    let _ = self.update(
                        key.0,
                        &key.1,
                        &key.2,
                        obj,
                        Write {
                            target: Target::Main,
                            require_rv: false,
                            dry_run: false,
                        },
                    );
                }
            }
            for key in foreground_done {
                if let Some(mut obj) = self.items.get(&key).cloned() {
                    let rest: Vec<String> = finalizers(&obj)
                        .into_iter()
                        .filter(|f| f != "foregroundDeletion")
                        .collect();
                    meta_mut(&mut obj).insert("finalizers".into(), json!(rest));
                    let _ = self.update(
                        key.0,
                        &key.1,
                        &key.2,
                        obj,
                        Write {
                            target: Target::Main,
                            require_rv: false,
                            dry_run: false,
                        },
                    );
                }
            }
        }
    }

    /// Applies `f` to a stored object and writes the result back (the simulator's
    /// controllers use this; `Target::Status` for status). `None` when the object is gone.
    pub fn modify(
        &mut self,
        kind: usize,
        ns: &str,
        name: &str,
        target: Target,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut obj = self.get(kind, ns, name)?.clone();
        f(&mut obj);
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let written = self.update(
            kind,
            ns,
            name,
            obj,
            Write {
                target,
                require_rv: false,
                dry_run: false,
            },
        );
        if let Err(e) = &written
            && e.code == 422
        {
            // The simulator's own controller wrote what the apiserver refuses: a bug in it.
            tracing::warn!(
                kind = KINDS[kind].kind,
                ns,
                name,
                "sim controller write refused: {}",
                e.message
            );
        }
        written.ok()
    }
}

/// A write to a kind stored in another version goes through CAPI's conversion webhook,
/// which decodes it into Go types: a value of the wrong type fails the request (500, the
/// webhook's error), and missing fields Go always writes come back as zero values.
fn convert(kind_ix: usize, obj: &mut Value) -> Result<(), ApiError> {
    if !schema::converted(kind_ix) {
        return Ok(());
    }
    if let Some(why) = schema::go_decode_error(kind_ix, obj) {
        let kind = &KINDS[kind_ix];
        let e = format!(
            "conversion webhook for {}, Kind={} failed: {why}",
            kind.api_version(),
            kind.kind
        );
        let message = format!("Internal error occurred: {e}");
        let mut err = ApiError::new(500, "InternalError", message.clone());
        err.details = json!({ "causes": [{ "message": message }] });
        return Err(err);
    }
    schema::fill_required(kind_ix, obj);
    Ok(())
}

/// Lowercase letters and digits, as the apiserver's `generateName` suffixes (5 characters).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// DNS-1123 subdomain: what object names must be.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn owner_reference_errors(obj: &Value) -> Vec<FieldError> {
    let Some(refs) = meta(obj).get("ownerReferences").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let mut controllers = 0;
    for (i, r) in refs.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if r.get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError {
                    reason: "FieldValueInvalid",
                    field: format!("metadata.ownerReferences[{i}].{field}"),
                    body: "Invalid value: \"\": must not be empty".into(),
                });
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errs.push(FieldError {
            reason: "FieldValueInvalid",
            field: "metadata.ownerReferences".into(),
            body: "Invalid value: only one reference can have Controller set to true".into(),
        });
    }
    errs
}

/// What the apiserver does to every stored object: `apiVersion`/`kind` set, no empty
/// finalizer list, Secrets' `stringData` folded into base64 `data`.
fn normalise(kind_ix: usize, obj: &mut Value) {
    let kind = &KINDS[kind_ix];
    let o = obj.as_object_mut().expect("object");
    o.insert("apiVersion".into(), json!(kind.api_version()));
    o.insert("kind".into(), json!(kind.kind));
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if m.get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            m.remove("finalizers");
        }
        for field in ["labels", "annotations"] {
            if m.get(field).is_some_and(Value::is_null) {
                m.remove(field);
            }
        }
    }
    if kind.kind == "Secret"
        && let Some(Value::Object(string_data)) = o.remove("stringData")
    {
        use base64::Engine;
        let data = o
            .entry("data")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("data is an object");
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default().to_string();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::ix;
    use super::*;

    fn machine(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"clusterName": "demo",
            "bootstrap": {"dataSecretName": "b"}, "infrastructureRef": {"name": name}}})
    }

    fn machine_set(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"clusterName": "demo", "selector": {},
            "template": {"spec": machine(name)["spec"]}}})
    }

    #[test]
    fn versions_conflicts_and_status() {
        let mut s = Objects::default();
        let m = s
            .create(ix::MACHINE, "default", machine("m1"), false, false)
            .unwrap();
        assert_eq!(m["metadata"]["generation"], 1);
        let rv = m["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut stale = m.clone();
        stale["spec"]["version"] = json!("v1.30.0");
        let updated = s
            .update(
                ix::MACHINE,
                "default",
                "m1",
                stale.clone(),
                Write {
                    target: Target::Main,
                    require_rv: true,
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
        let err = s
            .update(
                ix::MACHINE,
                "default",
                "m1",
                stale,
                Write {
                    target: Target::Main,
                    require_rv: true,
                    dry_run: false,
                },
            )
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        // A status write keeps the spec; a main write keeps the status.
        let mut st = updated.clone();
        st["status"] = json!({"phase": "Running"});
        st["spec"]["version"] = json!("ignored");
        let after = s
            .update(
                ix::MACHINE,
                "default",
                "m1",
                st,
                Write {
                    target: Target::Status,
                    require_rv: true,
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(after["status"]["phase"], "Running");
        assert_eq!(after["spec"]["version"], "v1.30.0");
        assert_eq!(after["metadata"]["generation"], 2);
        let mut main = after.clone();
        main["status"] = json!({"phase": "Deleted"});
        let after = s
            .update(
                ix::MACHINE,
                "default",
                "m1",
                main,
                Write {
                    target: Target::Main,
                    require_rv: true,
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(after["status"]["phase"], "Running");
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = Objects::default();
        let mut m = machine("m1");
        m["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
        s.create(ix::MACHINE, "default", m, false, false).unwrap();
        let marked = s
            .delete(ix::MACHINE, "default", "m1", &json!({}), false)
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let mut add = marked.clone();
        add["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io", "other"]);
        let err = s
            .update(
                ix::MACHINE,
                "default",
                "m1",
                add,
                Write {
                    target: Target::Main,
                    require_rv: true,
                    dry_run: false,
                },
            )
            .unwrap_err();
        assert_eq!(err.code, 422);
        let mut drop = marked;
        drop["metadata"]["finalizers"] = json!([]);
        s.update(
            ix::MACHINE,
            "default",
            "m1",
            drop,
            Write {
                target: Target::Main,
                require_rv: true,
                dry_run: false,
            },
        )
        .unwrap();
        assert!(s.get(ix::MACHINE, "default", "m1").is_none());
        let kinds: Vec<&str> = s.since(0).map(|e| e.change.as_str()).collect();
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    }

    #[test]
    fn owners_take_their_dependents_along() {
        let mut s = Objects::default();
        let set = s
            .create(ix::MACHINE_SET, "default", machine_set("ms"), false, false)
            .unwrap();
        let mut m = machine("ms-abcde");
        m["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet", "name": "ms",
            "uid": set["metadata"]["uid"], "controller": true,
        }]);
        m["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
        s.create(ix::MACHINE, "default", m, false, false).unwrap();
        let status = s
            .delete(ix::MACHINE_SET, "default", "ms", &json!({}), false)
            .unwrap();
        assert_eq!(status["status"], "Success");
        assert_eq!(status["details"]["uid"], set["metadata"]["uid"]);
        let m = s.get(ix::MACHINE, "default", "ms-abcde").unwrap();
        assert!(
            m["metadata"]["deletionTimestamp"].is_string(),
            "the dependent is being deleted but its finalizer holds it"
        );
    }

    #[test]
    fn secrets_fold_string_data_and_history_is_bounded() {
        let mut s = Objects::default();
        let secret = s
            .create(
                ix::SECRET,
                "default",
                json!({"metadata": {"name": "x"}, "stringData": {"value": "hi"}}),
                false,
                false,
            )
            .unwrap();
        assert_eq!(secret["data"]["value"], "aGk=");
        assert!(secret.get("stringData").is_none());
        for i in 0..HISTORY + 10 {
            s.create(
                ix::MACHINE,
                "default",
                machine(&format!("m{i}")),
                false,
                false,
            )
            .unwrap();
        }
        assert!(s.floor() > 1);
        assert_eq!(s.since(0).count(), HISTORY);
    }
}

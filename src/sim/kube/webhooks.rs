//! The upstream admission webhooks for the kinds the simulator serves, as the apiserver
//! calls them: CAPI v1.12's defaulting and validating webhooks for Machine, MachineSet and
//! MachineDeployment (`internal/webhooks`), CAPO v0.14's validating webhooks for
//! OpenStackMachine, OpenStackMachineTemplate and OpenStackServer (`pkg/webhooks`). A
//! denial comes back as kube-apiserver returns it: the webhook's own `Invalid` status (422,
//! its causes), its message prefixed with `admission webhook "<name>" denied the request: `.
//! Webhooks see writes to the object itself, not to `/status`.
//!
//! Not done: the Cluster and OpenStackCluster webhooks (topology and managed-network rules
//! no simulated client exercises), machine-naming templates, taints and the preflight-check
//! annotation.

use serde_json::{Map, Value, json};

use super::resources::{KINDS, ix};
use super::schema::FieldError;
use super::store::ApiError;

const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";

/// The defaulting webhooks (`default.<kind>.cluster.x-k8s.io`).
pub fn mutate(kind: usize, obj: &mut Value, old: Option<&Value>) {
    match kind {
        ix::MACHINE => {
            let cluster = obj["spec"]["clusterName"].clone();
            label(obj, CLUSTER_NAME_LABEL, cluster);
            prefix_version(&mut obj["spec"]);
            // v1beta2's `deletion.nodeDeletionTimeoutSeconds: 10`, as v1beta1 shows it.
            if obj["spec"].get("nodeDeletionTimeout").is_none() {
                obj["spec"]["nodeDeletionTimeout"] = json!("10s");
            }
        }
        ix::MACHINE_SET | ix::MACHINE_DEPLOYMENT => {
            let cluster = obj["spec"]["clusterName"].clone();
            label(obj, CLUSTER_NAME_LABEL, cluster.clone());
            if obj["spec"].get("replicas").is_none_or(Value::is_null) {
                let replicas = replicas_default(obj, old);
                obj["spec"]["replicas"] = json!(replicas);
            }
            let name = obj["metadata"]["name"].clone();
            let spec = &mut obj["spec"];
            let selector = &mut spec["selector"];
            let empty = selector
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && selector
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            let (own_label, own_value) = if kind == ix::MACHINE_SET {
                (SET_NAME_LABEL, label_value(name.as_str().unwrap_or("")))
            } else {
                (DEPLOYMENT_NAME_LABEL, name.clone())
            };
            if empty {
                selector["matchLabels"][own_label] = own_value.clone();
                spec["template"]["metadata"]["labels"][own_label] = own_value;
            }
            if kind == ix::MACHINE_DEPLOYMENT {
                spec["selector"]["matchLabels"][CLUSTER_NAME_LABEL] = cluster.clone();
                spec["template"]["metadata"]["labels"][CLUSTER_NAME_LABEL] = cluster;
                let strategy = &mut spec["strategy"];
                if strategy.get("type").is_none_or(Value::is_null) {
                    strategy["type"] = json!("RollingUpdate");
                }
                if strategy["type"] == "RollingUpdate" {
                    let rolling = &mut strategy["rollingUpdate"];
                    if rolling.get("maxSurge").is_none_or(Value::is_null) {
                        rolling["maxSurge"] = json!(1);
                    }
                    if rolling.get("maxUnavailable").is_none_or(Value::is_null) {
                        rolling["maxUnavailable"] = json!(0);
                    }
                }
            }
            if let Some(t) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                prefix_version(t);
            }
        }
        _ => {}
    }
}

fn label(obj: &mut Value, key: &str, value: Value) {
    let value = if value.is_null() { json!("") } else { value };
    obj["metadata"]["labels"][key] = value;
}

/// `1.31.0` → `v1.31.0`.
fn prefix_version(spec: &mut Value) {
    if let Some(v) = spec.get("version").and_then(Value::as_str)
        && !v.is_empty()
        && !v.starts_with('v')
    {
        spec["version"] = json!(format!("v{v}"));
    }
}

/// CAPI's `format.MustFormatValue`: a name too long for a label value becomes a hash.
fn label_value(name: &str) -> Value {
    if name.len() <= 63 {
        return json!(name);
    }
    // Upstream hashes with FNV-32a and prints it base36-ish; such names do not occur in
    // the simulator's scenarios, so only the shape matters here.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    json!(format!("hash_{h:x}_z"))
}

/// The replicas a set gets when none is given: the autoscaler's min size on create (or
/// the old count clamped into min..max on update) when both size annotations are set, the
/// old count otherwise, else 1.
fn replicas_default(obj: &Value, old: Option<&Value>) -> i64 {
    let ann = &obj["metadata"]["annotations"];
    let size = |k: &str| {
        ann.get(format!(
            "cluster.x-k8s.io/cluster-api-autoscaler-node-group-{k}-size"
        ))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok())
    };
    let old_replicas = old.and_then(|o| o["spec"]["replicas"].as_i64());
    if let (Some(min), Some(max)) = (size("min"), size("max")) {
        return match old_replicas {
            None => min,
            Some(r) if r < min => min,
            Some(r) if r > max => max,
            Some(r) => r,
        };
    }
    1
}

/// What the conversion back from CAPI's stored v1beta2 leaves of v1beta1 object
/// references: `apiVersion`, `kind`, `name` and the object's own namespace (v1beta2 keeps
/// only group, kind and name).
pub fn convert_back(kind: usize, obj: &mut Value, ns: &str) {
    let refs: &[&[&str]] = match kind {
        ix::MACHINE => &[
            &["spec", "infrastructureRef"],
            &["spec", "bootstrap", "configRef"],
        ],
        ix::MACHINE_SET | ix::MACHINE_DEPLOYMENT => &[
            &["spec", "template", "spec", "infrastructureRef"],
            &["spec", "template", "spec", "bootstrap", "configRef"],
        ],
        ix::CLUSTER => &[&["spec", "infrastructureRef"], &["spec", "controlPlaneRef"]],
        _ => return,
    };
    for path in refs {
        let mut at = Some(&mut *obj);
        for seg in *path {
            at = at.and_then(|v| v.get_mut(*seg));
        }
        if let Some(Value::Object(r)) = at {
            r.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "name"));
            r.insert("namespace".into(), json!(ns));
        }
    }
}

/// The validating webhooks; `Err` is the apiserver's answer to a denied request.
pub fn validate(
    kind: usize,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    let (hook, errs) = match kind {
        ix::MACHINE => ("validation.machine.cluster.x-k8s.io", machine(obj, old)),
        ix::MACHINE_SET => (
            "validation.machineset.cluster.x-k8s.io",
            machine_set(obj, old, "MachineSet"),
        ),
        ix::MACHINE_DEPLOYMENT => (
            "validation.machinedeployment.cluster.x-k8s.io",
            machine_set(obj, old, "MachineDeployment"),
        ),
        ix::OPENSTACK_MACHINE => (
            "validation.openstackmachine.infrastructure.cluster.x-k8s.io",
            openstack_machine(obj, old),
        ),
        ix::OPENSTACK_MACHINE_TEMPLATE => (
            "validation.openstackmachinetemplate.infrastructure.cluster.x-k8s.io",
            openstack_machine_template(obj, old, dry_run),
        ),
        ix::OPENSTACK_SERVER => (
            "validation.openstackserver.infrastructure.cluster.x-k8s.io",
            openstack_server(obj, old, dry_run),
        ),
        _ => return Ok(()),
    };
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut e = ApiError::invalid_fields(&KINDS[kind], name, errs);
    e.message = format!(
        "admission webhook \"{hook}\" denied the request: {}",
        e.message
    );
    Err(e)
}

fn is_defined(r: &Value) -> bool {
    r.as_object().is_some_and(|m| {
        ["kind", "name"].iter().all(|k| {
            m.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
    })
}

fn has_bootstrap(spec: &Value) -> bool {
    is_defined(&spec["bootstrap"]["configRef"]) || spec["bootstrap"]["dataSecretName"].is_string()
}

fn is_kube_semver(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.splitn(3, '.');
    let num = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
        })
    };
    let (major, minor, tail) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let patch_len = tail.bytes().take_while(u8::is_ascii_digit).count();
    let (patch, extra) = tail.split_at(patch_len);
    num(major)
        && num(minor)
        && num(Some(patch))
        && extra
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

fn version_errors(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = spec["version"].as_str()
        && !v.is_empty()
        && !is_kube_semver(v)
    {
        errs.push(FieldError::invalid(
            path,
            &json!(v),
            "must be a valid semantic version",
        ));
    }
}

fn cluster_name_immutable(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    if let Some(old) = old
        && old["spec"]["clusterName"] != obj["spec"]["clusterName"]
    {
        errs.push(FieldError::forbidden(
            "spec.clusterName",
            "field is immutable",
        ));
    }
}

fn machine(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let pool_owned = obj["metadata"]["labels"]
        .get("cluster.x-k8s.io/pool-name")
        .is_some();
    if !has_bootstrap(spec) && !pool_owned {
        errs.push(FieldError::required(
            "spec.bootstrap",
            "expected either spec.bootstrap.dataSecretName or spec.bootstrap.configRef to be populated",
        ));
    }
    cluster_name_immutable(obj, old, &mut errs);
    version_errors(spec, "spec.version", &mut errs);
    errs
}

/// A label selector as `metav1.LabelSelectorAsSelector` reads it, matched against labels;
/// `Err` for an operator it does not know.
fn selector_matches(selector: &Value, labels: &Value) -> Result<(bool, String), String> {
    let mut parts = Vec::new();
    let mut ok = true;
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let mut match_labels: Vec<(&String, &Value)> = selector["matchLabels"]
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    match_labels.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in match_labels {
        let v = v.as_str().unwrap_or("");
        parts.push(format!("{k}={v}"));
        ok &= get(k) == Some(v);
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e["operator"].as_str().unwrap_or("") {
            "In" => {
                parts.push(format!("{key} in ({})", values.join(",")));
                ok &= get(key).is_some_and(|v| values.contains(&v));
            }
            "NotIn" => {
                parts.push(format!("{key} notin ({})", values.join(",")));
                ok &= get(key).is_none_or(|v| !values.contains(&v));
            }
            "Exists" => {
                parts.push(key.to_string());
                ok &= get(key).is_some();
            }
            "DoesNotExist" => {
                parts.push(format!("!{key}"));
                ok &= get(key).is_none();
            }
            other => {
                return Err(format!(
                    "\"{other}\" is not a valid label selector operator"
                ));
            }
        }
    }
    parts.sort();
    Ok((ok, parts.join(",")))
}

/// MachineSet's and MachineDeployment's rules (the same but for how a selector that does
/// not match the template's labels is reported).
fn machine_set(obj: &Value, old: Option<&Value>, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    if kind == "MachineDeployment" {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        if name.len() > 63 {
            errs.push(FieldError::invalid(
                "metadata.name",
                &json!(name),
                "must be a valid label value: must be no more than 63 characters",
            ));
        }
    }
    if !has_bootstrap(&spec["template"]["spec"]) {
        errs.push(FieldError::required(
            "spec.template.spec.bootstrap",
            "expected either spec.template.spec.bootstrap.dataSecretName or spec.template.spec.bootstrap.configRef to be populated",
        ));
    }
    let template_labels = &spec["template"]["metadata"]["labels"];
    match selector_matches(&spec["selector"], template_labels) {
        Err(why) => errs.push(FieldError::invalid(
            "spec.selector",
            &spec["selector"],
            &why,
        )),
        Ok((false, text)) => {
            let detail = format!("must match spec.selector {}", go_quote(&text));
            let labels = if template_labels.is_object() {
                template_labels.clone()
            } else {
                json!({})
            };
            errs.push(if kind == "MachineSet" {
                FieldError::invalid("spec.template.metadata.labels", &labels, &detail)
            } else {
                FieldError::forbidden("spec.template.metadata.labels", &detail)
            });
        }
        Ok((true, _)) => {}
    }
    cluster_name_immutable(obj, old, &mut errs);
    if spec["clusterName"] != spec["template"]["spec"]["clusterName"] {
        errs.push(FieldError::invalid(
            "spec.clusterName",
            &spec["clusterName"],
            "spec.clusterName and spec.template.spec.clusterName must be set to the same value",
        ));
    }
    version_errors(
        &spec["template"]["spec"],
        "spec.template.spec.version",
        &mut errs,
    );
    errs
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// CAPO's create-time rules, shared by OpenStackMachine and OpenStackServer.
fn block_devices_and_ports(spec: &Value, errs: &mut Vec<FieldError>) {
    if spec.get("rootVolume").is_some_and(|v| !v.is_null())
        && let Some(devices) = spec["additionalBlockDevices"].as_array()
    {
        for d in devices {
            if d["name"] == "root" {
                errs.push(FieldError::forbidden(
                    "spec.additionalBlockDevices",
                    "cannot contain a device named \"root\" when rootVolume is set",
                ));
            }
        }
    }
    for port in spec["ports"].as_array().into_iter().flatten() {
        let disabled = port["disablePortSecurity"].as_bool().unwrap_or(false);
        let groups = port["securityGroups"]
            .as_array()
            .is_some_and(|g| !g.is_empty());
        if disabled && groups {
            errs.push(FieldError::forbidden(
                "spec.ports",
                "cannot have security groups when DisablePortSecurity is set to true",
            ));
        }
    }
}

fn spec_without(obj: &Value, drop: &[&str]) -> Map<String, Value> {
    let mut spec = obj["spec"].as_object().cloned().unwrap_or_default();
    for k in drop {
        spec.remove(*k);
    }
    spec
}

fn openstack_machine(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(old) = old else {
        block_devices_and_ports(&obj["spec"], &mut errs);
        return errs;
    };
    // providerID and instanceID may be set once; identityRef may change.
    let mut drop = vec!["identityRef"];
    for k in ["providerID", "instanceID"] {
        if old["spec"].get(k).is_none_or(Value::is_null) {
            drop.push(k);
        }
    }
    if spec_without(old, &drop) != spec_without(obj, &drop) {
        errs.push(FieldError::forbidden("spec", "cannot be modified"));
    }
    errs
}

fn openstack_machine_template(obj: &Value, old: Option<&Value>, dry_run: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let template = &obj["spec"]["template"]["spec"];
    if template.get("providerID").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden(
            "spec.template.spec.providerID",
            "cannot be set in templates",
        ));
    }
    if let Some(old) = old
        && !dry_run
        && old["spec"]["template"]["spec"] != *template
    {
        errs.push(FieldError::invalid(
            "spec.template.spec",
            template,
            "OpenStackMachineTemplate spec.template.spec field is immutable. Please create a new resource instead. Ref doc: https://cluster-api.sigs.k8s.io/tasks/change-machine-template.html",
        ));
    }
    errs
}

fn openstack_server(obj: &Value, old: Option<&Value>, dry_run: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(old) = old else {
        block_devices_and_ports(&obj["spec"], &mut errs);
        return errs;
    };
    if !dry_run && old["spec"] != obj["spec"] {
        errs.push(FieldError::forbidden(
            "spec",
            "OpenStackServer spec field is immutable. Please create a new resource instead.",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine_set() -> Value {
        json!({"metadata": {"name": "ms"}, "spec": {"clusterName": "demo", "selector": {},
            "template": {"spec": {"clusterName": "demo", "version": "1.31.0",
            "bootstrap": {"dataSecretName": "b"}, "infrastructureRef": {"name": "t"}}}}})
    }

    #[test]
    fn defaulting_labels_selects_and_counts_as_capi_does() {
        let mut ms = machine_set();
        mutate(ix::MACHINE_SET, &mut ms, None);
        assert_eq!(ms["metadata"]["labels"][CLUSTER_NAME_LABEL], "demo");
        assert_eq!(ms["spec"]["replicas"], 1);
        assert_eq!(ms["spec"]["selector"]["matchLabels"][SET_NAME_LABEL], "ms");
        assert_eq!(
            ms["spec"]["template"]["metadata"]["labels"][SET_NAME_LABEL],
            "ms"
        );
        assert_eq!(ms["spec"]["template"]["spec"]["version"], "v1.31.0");
        assert!(validate(ix::MACHINE_SET, &ms, None, false).is_ok());
    }

    #[test]
    fn denials_carry_the_webhook_name_and_upstream_causes() {
        let mut ms = machine_set();
        mutate(ix::MACHINE_SET, &mut ms, None);
        let mut changed = ms.clone();
        changed["spec"]["clusterName"] = json!("other");
        let e = validate(ix::MACHINE_SET, &changed, Some(&ms), false).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "admission webhook \"validation.machineset.cluster.x-k8s.io\" denied the request: MachineSet.cluster.x-k8s.io \"ms\" is invalid: [spec.clusterName: Forbidden: field is immutable, spec.clusterName: Invalid value: \"other\": spec.clusterName and spec.template.spec.clusterName must be set to the same value]"
        );
        assert_eq!(e.details["causes"][0]["reason"], "FieldValueForbidden");
        let mut m = json!({"metadata": {"name": "m"}, "spec": {"clusterName": "demo",
            "bootstrap": {}, "version": "1.31"}});
        mutate(ix::MACHINE, &mut m, None);
        let e = validate(ix::MACHINE, &m, None, false).unwrap_err();
        let fields: Vec<&str> = e.details["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["spec.bootstrap", "spec.version"]);
    }

    #[test]
    fn an_openstack_machine_spec_changes_only_where_capo_allows() {
        let old = json!({"metadata": {"name": "o"}, "spec": {"flavor": "m1"}});
        let mut set_once = old.clone();
        set_once["spec"]["providerID"] = json!("openstack:///x");
        assert!(validate(ix::OPENSTACK_MACHINE, &set_once, Some(&old), false).is_ok());
        let mut changed = set_once.clone();
        changed["spec"]["providerID"] = json!("openstack:///y");
        let e = validate(ix::OPENSTACK_MACHINE, &changed, Some(&set_once), false).unwrap_err();
        assert!(e.message.ends_with(
            "OpenStackMachine.infrastructure.cluster.x-k8s.io \"o\" is invalid: spec: Forbidden: cannot be modified"
        ));
    }
}

//! The simulator's apiserver against the real one on schemas and webhooks: the same bad,
//! partial and changed objects sent to the lab's kube-apiserver (upstream CRDs, CAPI's and
//! CAPO's webhooks) and to a fresh simulator, raw over HTTP, and what a client sees of the
//! answers compared: status code, reason, the causes' fields and types, the message where
//! it is the apiserver's or a webhook's own text, `Warning` headers, and defaulted fields.

use axum::http::{Method, Request};
use serde_json::{Value, json};

use super::common::process::{Sim, kube_client};
use super::{TURN, lab_dir};

/// An apiserver's answer, raw.
#[derive(Debug)]
struct Answer {
    code: u16,
    body: Value,
    warnings: Vec<String>,
}

async fn call(c: &kube::Client, method: Method, path: &str, ctype: &str, body: &Value) -> Answer {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(kube::client::Body::from(bytes))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let raw = resp.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        code,
        body,
        warnings,
    }
}

const CAPI: &str = "/apis/cluster.x-k8s.io/v1beta1/namespaces/default";
const CAPO: &str = "/apis/infrastructure.cluster.x-k8s.io/v1beta1/namespaces/default";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

/// What is compared of a refusal: code, reason, and the causes as (field, reason) pairs,
/// sorted (kube-apiserver reports several errors in map order).
fn refusal(a: &Answer) -> Value {
    let mut causes: Vec<(String, String)> = a.body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    causes.sort();
    json!({"code": a.code, "reason": a.body["reason"], "causes": causes,
           "details.kind": a.body["details"]["kind"], "details.group": a.body["details"]["group"]})
}

fn machine(name: &str) -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterName": "schemas-nowhere",
                 "bootstrap": {"dataSecretName": "schemas-bootstrap"},
                 "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                                       "kind": "OpenStackMachine", "name": name}},
    })
}

fn machine_set(name: &str) -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterName": "schemas-nowhere", "replicas": 0, "selector": {},
                 "template": {"spec": machine(name)["spec"]}},
    })
}

fn openstack_machine(name: &str) -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"flavor": "k8s.small", "image": {"filter": {"name": "ubuntu"}},
                 "identityRef": {"name": "schemas-creds", "cloudName": "capstan-sim"}},
    })
}

/// Both apiservers, and the differences found so far.
struct Pair {
    lab: kube::Client,
    sim: kube::Client,
    diffs: Vec<String>,
    /// (collection path, name) of everything created, deleted at the end.
    made: Vec<(String, String)>,
}

impl Pair {
    async fn both(&mut self, method: Method, path: &str, ctype: &str, body: &Value) -> [Answer; 2] {
        let lab = call(&self.lab, method.clone(), path, ctype, body).await;
        let sim = call(&self.sim, method, path, ctype, body).await;
        for a in [&lab, &sim] {
            if a.code == 201
                && let Some(name) = a.body["metadata"]["name"].as_str()
            {
                let collection = path.split('?').next().unwrap().to_string();
                if !self.made.contains(&(collection.clone(), name.to_string())) {
                    self.made.push((collection, name.to_string()));
                }
            }
        }
        [lab, sim]
    }

    fn same(&mut self, what: &str, lab: &Value, sim: &Value) {
        if lab != sim {
            self.diffs
                .push(format!("{what}:\n    real: {lab}\n    sim:  {sim}"));
        }
    }

    async fn clean(&mut self) {
        for (collection, name) in std::mem::take(&mut self.made) {
            for c in [&self.lab, &self.sim] {
                let path = format!("{collection}/{name}");
                // Delete, then drop the finalizers the controllers hold it with (for a
                // cluster that does not exist they would wait for ever).
                let _ = call(c, Method::DELETE, &path, JSON, &Value::Null).await;
                let patch = json!({"metadata": {"finalizers": null}});
                let _ = call(c, Method::PATCH, &path, MERGE, &patch).await;
            }
        }
    }
}

#[tokio::test]
async fn the_simulators_apiserver_prunes_defaults_and_refuses_as_kube_apiserver_and_the_webhooks_do()
 {
    let Some(dir) = lab_dir() else { return };
    let _turn = TURN.lock().await;
    let sim = Sim::start(20, None, &[]);
    let mut p = Pair {
        lab: kube_client(&dir.join("kubeconfig")).await,
        sim: kube_client(&sim.kubeconfig).await,
        diffs: Vec::new(),
        made: Vec::new(),
    };
    let tag = format!("{:04x}", fastrand::u16(..));
    let machines = format!("{CAPI}/machines");

    // A required field missing: the schema's 422, text and all.
    let mut m = machine(&format!("schemas-{tag}-required"));
    m["spec"].as_object_mut().unwrap().remove("clusterName");
    let [real, simulated] = p.both(Method::POST, &machines, JSON, &m).await;
    p.same("required: refusal", &refusal(&real), &refusal(&simulated));
    p.same(
        "required: message",
        &real.body["message"],
        &simulated.body["message"],
    );

    // A wrong type and a value outside an enum, on a MachineSet.
    let mut ms = machine_set(&format!("schemas-{tag}-types"));
    ms["spec"]["replicas"] = json!("three");
    ms["spec"]["deletePolicy"] = json!("Sideways");
    let [real, simulated] = p
        .both(Method::POST, &format!("{CAPI}/machinesets"), JSON, &ms)
        .await;
    p.same("types: refusal", &refusal(&real), &refusal(&simulated));
    let messages = |a: &Answer| {
        let mut m: Vec<Value> = a.body["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        m.sort_by_key(|c| c["field"].to_string());
        Value::Array(m)
    };
    p.same("types: causes", &messages(&real), &messages(&simulated));

    // A value outside an enum on a converted kind: checked after conversion.
    let mut ms = machine_set(&format!("schemas-{tag}-enum"));
    ms["spec"]["deletePolicy"] = json!("Sideways");
    let [real, simulated] = p
        .both(Method::POST, &format!("{CAPI}/machinesets"), JSON, &ms)
        .await;
    p.same("enum: refusal", &refusal(&real), &refusal(&simulated));
    p.same("enum: causes", &messages(&real), &messages(&simulated));

    // Types, bounds, enums, required members, lengths and property counts on a kind
    // served in its stored version (no conversion): the schema's own errors.
    let mut osm = openstack_machine(&format!("schemas-{tag}-osm-bad"));
    osm["spec"]["flavor"] = json!(5);
    osm["spec"]["configDrive"] = json!("yes");
    osm["spec"]["rootVolume"] = json!({"sizeGiB": 0, "availabilityZone": {"from": "Elsewhere"}});
    osm["spec"]["serverMetadata"] = json!([{"key": "a"}, {"key": "k".repeat(300), "value": "v"}]);
    osm["spec"]["image"] = json!({});
    let [real, simulated] = p
        .both(
            Method::POST,
            &format!("{CAPO}/openstackmachines"),
            JSON,
            &osm,
        )
        .await;
    p.same(
        "schema errors: refusal",
        &refusal(&real),
        &refusal(&simulated),
    );
    p.same(
        "schema errors: causes",
        &messages(&real),
        &messages(&simulated),
    );

    // Unknown fields: refused under Strict, pruned with a warning by default, silently
    // under Ignore.
    let mut m = machine(&format!("schemas-{tag}-strict"));
    m["spec"]["foo"] = json!(1);
    m["metadata"]["colour"] = json!("blue");
    let [real, simulated] = p
        .both(
            Method::POST,
            &format!("{machines}?fieldValidation=Strict"),
            JSON,
            &m,
        )
        .await;
    p.same(
        "strict: code, reason, message",
        &json!([real.code, real.body["reason"], real.body["message"]]),
        &json!([
            simulated.code,
            simulated.body["reason"],
            simulated.body["message"]
        ]),
    );
    let mut m = machine(&format!("schemas-{tag}-warn"));
    m["spec"]["foo"] = json!(1);
    m["spec"]["infrastructureRef"]["bar"] = json!("x");
    let [real, simulated] = p.both(Method::POST, &machines, JSON, &m).await;
    p.same(
        "warn: code and warnings",
        &json!([real.code, real.warnings]),
        &json!([simulated.code, simulated.warnings]),
    );
    p.same(
        "warn: the stored spec",
        &real.body["spec"],
        &simulated.body["spec"],
    );
    p.same(
        "warn: the stored labels (the defaulting webhook)",
        &real.body["metadata"]["labels"],
        &simulated.body["metadata"]["labels"],
    );

    // A merge patch that adds an unknown field, under Strict.
    let path = format!("{machines}/schemas-{tag}-warn?fieldValidation=Strict");
    let patch = json!({"spec": {"foo": 2}});
    let [real, simulated] = p.both(Method::PATCH, &path, MERGE, &patch).await;
    p.same(
        "strict patch: refusal",
        &refusal(&real),
        &refusal(&simulated),
    );

    // Server-side apply with an unknown field: structured-merge-diff cannot type it.
    let name = format!("schemas-{tag}-apply");
    let mut osm = openstack_machine(&name);
    osm["spec"]["foo"] = json!(1);
    let path = format!("{CAPO}/openstackmachines/{name}?fieldManager=schemas");
    let [real, simulated] = p
        .both(Method::PATCH, &path, "application/apply-patch+yaml", &osm)
        .await;
    p.same(
        "apply: code, reason, message",
        &json!([real.code, real.body["reason"], real.body["message"]]),
        &json!([
            simulated.code,
            simulated.body["reason"],
            simulated.body["message"]
        ]),
    );

    // The Machine webhook: clusterName is immutable; bootstrap needs one of its two.
    let path = format!("{machines}/schemas-{tag}-warn");
    let patch = json!({"spec": {"clusterName": "schemas-elsewhere"}});
    let [real, simulated] = p.both(Method::PATCH, &path, MERGE, &patch).await;
    p.same(
        "immutable clusterName: refusal",
        &refusal(&real),
        &refusal(&simulated),
    );
    p.same(
        "immutable clusterName: message",
        &real.body["message"],
        &simulated.body["message"],
    );
    // Upstream's webhook leaves the references alone: they may change.
    let patch = json!({"spec": {"infrastructureRef": {"name": "schemas-other"},
                                "bootstrap": {"dataSecretName": "schemas-other"}}});
    let [real, simulated] = p.both(Method::PATCH, &path, MERGE, &patch).await;
    p.same(
        "changed references: code and spec",
        &json!([real.code, real.body["spec"]]),
        &json!([simulated.code, simulated.body["spec"]]),
    );
    let mut m = machine(&format!("schemas-{tag}-bootstrap"));
    m["spec"]["bootstrap"] = json!({});
    let [real, simulated] = p.both(Method::POST, &machines, JSON, &m).await;
    p.same(
        "no bootstrap: refusal",
        &refusal(&real),
        &refusal(&simulated),
    );
    p.same(
        "no bootstrap: message",
        &real.body["message"],
        &simulated.body["message"],
    );

    // The MachineSet webhook's defaults: replicas, selector, labels.
    let mut ms = machine_set(&format!("schemas-{tag}-defaults"));
    ms["spec"].as_object_mut().unwrap().remove("replicas");
    ms["spec"]["template"]["spec"]["version"] = json!("1.31.0");
    let [real, simulated] = p
        .both(Method::POST, &format!("{CAPI}/machinesets"), JSON, &ms)
        .await;
    let view = |a: &Answer| {
        json!({"code": a.code, "labels": a.body["metadata"]["labels"],
               "replicas": a.body["spec"]["replicas"], "selector": a.body["spec"]["selector"],
               "template labels": a.body["spec"]["template"]["metadata"]["labels"],
               "version": a.body["spec"]["template"]["spec"]["version"]})
    };
    p.same("machineset defaults", &view(&real), &view(&simulated));
    // A MachineDeployment's defaults: replicas, selector, labels, strategy.
    let mut md = machine_set(&format!("schemas-{tag}-md"));
    md["kind"] = json!("MachineDeployment");
    md["spec"].as_object_mut().unwrap().remove("replicas");
    let [real, simulated] = p
        .both(
            Method::POST,
            &format!("{CAPI}/machinedeployments"),
            JSON,
            &md,
        )
        .await;
    let md_view = |a: &Answer| {
        let mut v = view(a);
        v["strategy"] = a.body["spec"]["strategy"].clone();
        v
    };
    p.same(
        "machinedeployment defaults",
        &md_view(&real),
        &md_view(&simulated),
    );
    // A template whose labels the selector does not match.
    let mut ms = machine_set(&format!("schemas-{tag}-selector"));
    ms["spec"]["selector"] = json!({"matchLabels": {"pool": "a"}});
    ms["spec"]["template"]["metadata"] = json!({"labels": {"pool": "b"}});
    let [real, simulated] = p
        .both(Method::POST, &format!("{CAPI}/machinesets"), JSON, &ms)
        .await;
    p.same("selector: refusal", &refusal(&real), &refusal(&simulated));
    p.same(
        "selector: message",
        &real.body["message"],
        &simulated.body["message"],
    );

    // OpenStackMachine: schema defaults, then CAPO's webhook on a spec change.
    let osm = openstack_machine(&format!("schemas-{tag}-osm"));
    let [real, simulated] = p
        .both(
            Method::POST,
            &format!("{CAPO}/openstackmachines"),
            JSON,
            &osm,
        )
        .await;
    p.same(
        "openstackmachine: code and spec",
        &json!([real.code, real.body["spec"]]),
        &json!([simulated.code, simulated.body["spec"]]),
    );
    let path = format!("{CAPO}/openstackmachines/schemas-{tag}-osm");
    let patch = json!({"spec": {"flavor": "k8s.large"}});
    let [real, simulated] = p.both(Method::PATCH, &path, MERGE, &patch).await;
    p.same(
        "openstackmachine spec change: refusal",
        &refusal(&real),
        &refusal(&simulated),
    );
    p.same(
        "openstackmachine spec change: message",
        &real.body["message"],
        &simulated.body["message"],
    );
    let patch =
        json!({"spec": {"providerID": "openstack:///00000000-0000-0000-0000-000000000001"}});
    let [real, simulated] = p.both(Method::PATCH, &path, MERGE, &patch).await;
    p.same(
        "openstackmachine providerID set once: code",
        &json!(real.code),
        &json!(simulated.code),
    );

    // A deprecated version says so on every answer.
    let [real, simulated] = p.both(Method::GET, &machines, JSON, &Value::Null).await;
    p.same(
        "deprecation warning",
        &json!(real.warnings),
        &json!(simulated.warnings),
    );

    p.clean().await;
    assert!(
        p.diffs.is_empty(),
        "the simulator's apiserver differs from kube-apiserver with CAPI/CAPO:\n{}",
        p.diffs.join("\n")
    );
}

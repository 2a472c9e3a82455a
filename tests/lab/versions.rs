//! Capstan speaks the CAPI version the cluster serves: real CAPI v1.12 serves v1beta2 (and
//! v1beta1 only through its conversion webhook, deprecated), so Capstan writes its Machines
//! as v1beta2 and reads their failures where v1beta2 keeps them
//! (`status.deprecated.v1beta1`).

use std::time::Duration;

use serde_json::{Value, json};

use super::common::{World, request};
use super::{TURN, lab_dir};

/// Machines as `kubectl get machines` reads them on current CAPI: at v1beta2, the stored
/// version (the World's `capi` reads v1beta1, through the conversion webhook).
async fn machines_v1beta2(w: &World) -> kube::Api<kube::api::DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Machine",
    ));
    kube::Api::namespaced_with(w.kube().await, "default", &ar)
}

/// The Machine's phase, as `kubectl get machine` shows it.
async fn phase(w: &World, name: &str) -> Option<String> {
    let m = machines_v1beta2(w).await.get_opt(name).await.unwrap()?;
    m.data["status"]["phase"].as_str().map(str::to_string)
}

/// A plain worker of this World (its own name and a free fixed IP), in `az`.
fn worker(w: &World, i: usize, az: &str) -> Value {
    let n = w.node(i);
    json!({"name": n["name"], "ip": n["ip"], "availability_zone": az})
}

/// The managedFields entries of an object written by Capstan's field manager.
fn capstans_writes(o: &kube::api::DynamicObject) -> Vec<(String, String)> {
    o.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some("capstan"))
        .map(|f| {
            (
                f.api_version.clone().unwrap_or_default(),
                f.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn capstan_writes_its_machines_as_v1beta2_where_real_capi_serves_it() {
    let Some(dir) = lab_dir() else { return };
    let _turn = TURN.lock().await;
    let lab = World::lab(dir).await;
    let w1 = worker(&lab, 0, "az1");
    let name = w1["name"].as_str().unwrap().to_string();
    let (s, job) = lab.submit(&request(vec![w1])).await;
    assert_eq!(s, 202, "{job}");
    let done = lab.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    // What `kubectl get machine <name> -o yaml --show-managed-fields` shows: Capstan
    // created the Machine through v1beta2, and its OpenStackMachine through CAPO's v1beta1.
    let m = machines_v1beta2(&lab).await.get(&name).await.unwrap();
    let writes = capstans_writes(&m);
    assert!(!writes.is_empty(), "{:#?}", m.metadata.managed_fields);
    assert!(
        writes.iter().all(|(v, _)| v == "cluster.x-k8s.io/v1beta2"),
        "{writes:?}"
    );
    assert_eq!(
        m.data["spec"]["infrastructureRef"],
        json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "OpenStackMachine",
               "name": name})
    );
    let osm = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        lab.kube().await,
        "default",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "infrastructure.cluster.x-k8s.io",
            "v1beta1",
            "OpenStackMachine",
        )),
    )
    .get(&name)
    .await
    .unwrap();
    assert!(
        capstans_writes(&osm)
            .iter()
            .any(|(v, _)| v == "infrastructure.cluster.x-k8s.io/v1beta1"),
        "{:#?}",
        osm.metadata.managed_fields
    );
    // Capstan reads it back through the same version: Running, its Node healthy.
    let nodes = lab.get("/v1/clusters/default/demo/nodes").await.unwrap();
    let seen = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["machine"] == name.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{nodes:#}"));
    assert_eq!(seen["phase"], "Running", "{seen}");
    assert_eq!(seen["node"], name.as_str(), "{seen}");
    assert_eq!(seen["healthy"]["status"], "True", "{seen}");
    assert_eq!(seen["job"], job["id"], "{seen}");
}

/// Deletes a server through Nova with the demo project's credentials (lab/demo's
/// clouds.yaml), as an operator's `openstack server delete` would.
async fn delete_server_behind_capos_back(lab: &World, dir: &std::path::Path, id: &str) {
    let text = std::fs::read_to_string(dir.join("clouds.yaml")).unwrap();
    let clouds: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let auth = &clouds["clouds"]["capstan-sim"]["auth"];
    let s = |k: &str| auth[k].as_str().unwrap().to_string();
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": s("username"), "domain": {"name": s("user_domain_name")},
            "password": s("password")}}},
        "scope": {"project": {"name": s("project_name"),
                              "domain": {"name": s("project_domain_name")}}}}});
    let resp = lab
        .http
        .post(format!("{}/auth/tokens", s("auth_url")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let catalog: Value = resp.json().await.unwrap();
    let nova = catalog["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "compute")
        .and_then(|s| {
            s["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["interface"] == "public")
        })
        .and_then(|e| e["url"].as_str())
        .unwrap()
        .to_string();
    let resp = lab
        .http
        .delete(format!("{nova}/servers/{id}"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_real_capi_marks_failed_in_v1beta2_is_read_as_failed_and_repaired() {
    let Some(dir) = lab_dir() else { return };
    let _turn = TURN.lock().await;
    let lab = World::lab(dir.clone()).await;
    let wf = worker(&lab, 0, "az2");
    let name = wf["name"].as_str().unwrap().to_string();
    let (s, job) = lab.submit(&request(vec![wf])).await;
    assert_eq!(s, 202, "{job}");
    let done = lab.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let machines = machines_v1beta2(&lab).await;
    let before = machines.get(&name).await.unwrap();
    let server = before.data["spec"]["providerID"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_string();
    // The server goes behind CAPO's back: CAPO v0.14 fails the OpenStackMachine ("The server
    // was unexpectedly deleted") and CAPI copies that to the Machine — in v1beta2 under
    // status.deprecated.v1beta1, where v1beta1's status.failureMessage no longer is.
    delete_server_behind_capos_back(&lab, &dir, &server).await;
    let mut failed = Value::Null;
    for _ in 0..600 {
        let nodes = lab.get("/v1/clusters/default/demo/nodes").await.unwrap();
        if let Some(n) = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["machine"] == name.as_str() && n["failure_message"].is_string())
        {
            failed = n.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = failed["failure_message"]
        .as_str()
        .unwrap_or_else(|| panic!("Capstan never read the failure: {failed}"));
    assert!(
        message.ends_with("The server was unexpectedly deleted"),
        "{message}"
    );
    let m = machines.get(&name).await.unwrap();
    assert_eq!(
        m.data["status"]["deprecated"]["v1beta1"]["failureMessage"],
        message
    );
    assert!(m.data["status"]["failureMessage"].is_null(), "{:#}", m.data);
    // A repair reads the same failure as its reason, and replaces the node.
    let (s, job) = lab
        .submit(&json!({"kind": "repair", "cluster": "default/demo", "nodes": [name]}))
        .await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let why = lab
        .until_event(&id, "the repair's reason", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Machine failed:"))
        })
        .await;
    assert!(
        why["message"]
            .as_str()
            .unwrap()
            .ends_with("The server was unexpectedly deleted"),
        "{why}"
    );
    let done = lab.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(phase(&lab, &name).await.as_deref(), Some("Running"));
    let after = machines.get(&name).await.unwrap();
    assert_ne!(after.metadata.uid, before.metadata.uid, "a new Machine");
    assert_ne!(
        after.data["spec"]["providerID"], before.data["spec"]["providerID"],
        "on a new server"
    );
}

//! The differential test: the same objects on the lab (real CAPI and CAPO) and on a fresh
//! simulator (its own CAPI/CAPO behaviour), and what a client can observe of them compared
//! — so the simulator cannot drift from the real controllers where failures surface.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::common::process::{Sim, kube_client};
use super::{TURN, World, lab_dir};

/// One cloud as the test sees it: a management apiserver and the simulated OpenStack's
/// console (for faults), and the identity Secret's cloud name there.
struct Cloud {
    kube: kube::Client,
    console: String,
    cloud_name: &'static str,
}

fn api(c: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(c.clone(), "default", &ar)
}

/// A standalone worker as Capstan makes one (v1beta1, `dataSecretName`, no configRef).
async fn create_worker(c: &Cloud, name: &str, zone: &str, ip: &str) {
    let machine = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"cluster.x-k8s.io/cluster-name": "demo"}},
        "spec": {"clusterName": "demo", "version": "v1.30.4",
                 "bootstrap": {"dataSecretName": "demo-bootstrap"}, "failureDomain": zone,
                 "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                     "kind": "OpenStackMachine", "name": name, "namespace": "default"}},
    });
    let osm = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"cluster.x-k8s.io/cluster-name": "demo"}},
        "spec": {"flavor": "k8s.small", "image": {"filter": {"name": "ubuntu-2204-kube-v1.30"}},
                 "identityRef": {"name": "demo-cloud-config", "cloudName": c.cloud_name},
                 "ports": [{"network": {"filter": {"name": "demo-net"}},
                            "fixedIPs": [{"subnet": {"filter": {"name": "demo-subnet"}}, "ipAddress": ip}]}]},
    });
    let pp = PostParams::default();
    let osms = api(
        &c.kube,
        "infrastructure.cluster.x-k8s.io",
        "v1beta1",
        "OpenStackMachine",
    );
    osms.create(&pp, &serde_json::from_value(osm).unwrap())
        .await
        .unwrap();
    let machines = api(&c.kube, "cluster.x-k8s.io", "v1beta1", "Machine");
    machines
        .create(&pp, &serde_json::from_value(machine).unwrap())
        .await
        .unwrap();
}

fn condition(o: &Value, kind: &str) -> Value {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| {
            json!({"status": c["status"], "reason": c["reason"],
                   "message": c["message"].as_str().unwrap_or("")})
        })
        .unwrap_or(Value::Null)
}

/// What a client observes of a worker: the Machine (as v1beta1 shows it), its
/// OpenStackMachine and its OpenStackServer.
async fn observe(c: &Cloud, name: &str) -> Value {
    let get = |group: &'static str, version: &'static str, kind: &'static str| {
        let a = api(&c.kube, group, version, kind);
        async move {
            a.get_opt(name)
                .await
                .unwrap()
                .map(|o| serde_json::to_value(o).unwrap())
                .unwrap_or(Value::Null)
        }
    };
    let m = get("cluster.x-k8s.io", "v1beta1", "Machine").await;
    let osm = get(
        "infrastructure.cluster.x-k8s.io",
        "v1beta1",
        "OpenStackMachine",
    )
    .await;
    let oss = get(
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "OpenStackServer",
    )
    .await;
    json!({
        "machine": {"failureReason": m["status"]["failureReason"],
                    "failureMessage": m["status"]["failureMessage"]},
        "openstackmachine": {"failureReason": osm["status"]["failureReason"],
                             "ready": osm["status"]["ready"].as_bool().unwrap_or(false)},
        "openstackserver": {"instanceState": oss["status"]["instanceState"],
                            "InstanceReady": condition(&oss, "InstanceReady")},
    })
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..900 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

async fn fault(console: &str, body: Value) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{console}/sim/v1/faults"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn end_fault(console: &str, id: &str) {
    reqwest::Client::new()
        .delete(format!("{console}/sim/v1/faults/{id}"))
        .send()
        .await
        .unwrap();
}

/// A server that goes to ERROR while building ("No valid host"), and a healthy one: the
/// same on both clouds, as far as a client can see.
#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_shows_failures_as_real_capi_and_capo_do() {
    let Some(dir) = lab_dir() else { return };
    let _turn = TURN.lock().await;
    let lab = World::lab(dir).await;
    let real = Cloud {
        kube: lab.kube().await,
        console: lab.console.url.clone(),
        cloud_name: "capstan-sim",
    };
    // The lab keeps what an earlier run made: that run's workers go first.
    let machines = api(&real.kube, "cluster.x-k8s.io", "v1beta1", "Machine");
    let osms = api(
        &real.kube,
        "infrastructure.cluster.x-k8s.io",
        "v1beta1",
        "OpenStackMachine",
    );
    for name in ["diff-err-1", "diff-ok-1"] {
        let _ = machines.delete(name, &Default::default()).await;
    }
    until("an earlier run's workers gone", async || {
        for name in ["diff-err-1", "diff-ok-1"] {
            if machines.get_opt(name).await.unwrap().is_some()
                || osms.get_opt(name).await.unwrap().is_some()
            {
                return false;
            }
        }
        true
    })
    .await;
    let sim = Sim::start(20, None, &[]);
    let simulated = Cloud {
        kube: kube_client(&sim.kubeconfig).await,
        console: sim.url.clone(),
        cloud_name: "openstack",
    };
    let mut seen = Vec::new();
    for (c, ip) in [(&real, "10.6.0.231"), (&simulated, "10.6.0.231")] {
        let id = fault(
            &c.console,
            json!({"kind": "no_valid_host", "availability_zone": "az2"}),
        )
        .await;
        create_worker(c, "diff-err-1", "az2", ip).await;
        let oss = api(
            &c.kube,
            "infrastructure.cluster.x-k8s.io",
            "v1alpha1",
            "OpenStackServer",
        );
        until("the OpenStackServer in ERROR", async || {
            oss.get_opt("diff-err-1")
                .await
                .ok()
                .flatten()
                .is_some_and(|o| o.data["status"]["instanceState"] == "ERROR")
        })
        .await;
        // Whatever the controllers do next, they have had time to do it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        end_fault(&c.console, &id).await;
        seen.push(observe(c, "diff-err-1").await);
    }
    assert_eq!(
        seen[1], seen[0],
        "ERROR while building: simulator (left) vs real CAPI/CAPO (right)"
    );
    assert_eq!(
        seen[0]["openstackserver"]["InstanceReady"]["reason"],
        "InstanceStateError"
    );

    let mut seen = Vec::new();
    for (c, ip) in [(&real, "10.6.0.232"), (&simulated, "10.6.0.232")] {
        create_worker(c, "diff-ok-1", "az1", ip).await;
        let machines = api(&c.kube, "cluster.x-k8s.io", "v1beta1", "Machine");
        until("the Machine Running", async || {
            machines
                .get_opt("diff-ok-1")
                .await
                .ok()
                .flatten()
                .is_some_and(|m| m.data["status"]["phase"] == "Running")
        })
        .await;
        let m = serde_json::to_value(machines.get("diff-ok-1").await.unwrap()).unwrap();
        let mut o = observe(c, "diff-ok-1").await;
        o["machine"]["providerID"] = json!(
            m["spec"]["providerID"]
                .as_str()
                .map(|p| p.starts_with("openstack:///"))
        );
        o["machine"]["nodeRef"] = json!(m["status"]["nodeRef"]["name"] == "diff-ok-1");
        seen.push(o);
    }
    assert_eq!(
        seen[1], seen[0],
        "a healthy worker: simulator (left) vs real CAPI/CAPO (right)"
    );

    // Its kubelet stops posting: the Machine's NodeHealthy as each CAPI reads the Node.
    let mut seen = Vec::new();
    for c in [&real, &simulated] {
        let id = fault(
            &c.console,
            json!({"kind": "node_not_ready", "node": "diff-ok-1"}),
        )
        .await;
        let machines = api(&c.kube, "cluster.x-k8s.io", "v1beta1", "Machine");
        let mut healthy = Value::Null;
        until("the Machine not NodeHealthy", async || {
            let m = machines.get_opt("diff-ok-1").await.ok().flatten();
            healthy = m
                .map(|m| condition(&serde_json::to_value(m).unwrap(), "NodeHealthy"))
                .unwrap_or(Value::Null);
            healthy.is_object() && healthy["status"] != "True"
        })
        .await;
        end_fault(&c.console, &id).await;
        seen.push(healthy);
    }
    assert_eq!(
        seen[1], seen[0],
        "a NotReady worker: simulator (left) vs real CAPI (right)"
    );
    assert_eq!(seen[0]["status"], "Unknown", "{}", seen[0]);
}

//! The scale_out, delete_nodes and repair scenarios, each written once and run by the
//! lifecycle binary on a fresh simulator and by the lab binary on real CAPI and CAPO. They
//! check what a user would: the job through Capstan's API, the Machines and Nodes through
//! the Kubernetes API, the servers, ports, floating IPs and volumes through the simulated
//! OpenStack's ground truth. The lab is one cloud whose state outlives a test, so counts
//! are measured against what was there before, and node names and IPs come from the World.

use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{Cloud, World, assert_exactly_as_specified, by_name, counts, name_of, request};

/// The demo MachineSet's workers: name → (uid, resourceVersion).
async fn originals(w: &World) -> Vec<(String, String, String)> {
    w.set_machines()
        .await
        .into_iter()
        .map(|m| {
            (
                m.metadata.name.unwrap(),
                m.metadata.uid.unwrap(),
                m.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

/// The seed's story: 10 workers while the project has room for 6 more; the quota is raised
/// later. With `kills`, the engine is killed with SIGKILL that many times along the way.
pub async fn story(w: &mut World, kills: usize) {
    let before = originals(w).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let was = counts(w).await;
    let used = w.servers_used().await;
    w.quota(json!({"instances": used + 6})).await;
    let nodes: Vec<Value> = (1..=10).map(|i| w.node(i)).collect();
    let id = w.submit_ok(&request(nodes.clone())).await;
    let waiting = w
        .until_event(&id, "a quota wait", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("waiting_for_quota"))
        })
        .await;
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("instances: need 1, free 0"),
        "{waiting}"
    );
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..900))).await;
        w.kill_serve();
        if k == 0 {
            w.quota(json!({"instances": used + 50})).await;
        }
        w.start_serve();
    }
    if kills == 0 {
        w.quota(json!({"instances": used + 50})).await;
    }
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(w, &nodes, was).await;
    assert_eq!(originals(w).await, before, "existing workers untouched");
    // Each node labelled as asked, on the Node itself (role via CAPI's label sync).
    for n in &nodes {
        let labels = w.node_labels(name_of(n)).await;
        assert_eq!(labels["team"], "edge", "{n}: {labels}");
        assert_eq!(
            labels["node-role.kubernetes.io/ingress"], "",
            "{n}: {labels}"
        );
    }
}

/// A bad volume type is refused at submit (422 naming each field, nothing stored or made);
/// a type removed after preflight makes the node ask for input, a bad amend is refused
/// field by field, a good one and a resume finish the node.
pub async fn volume_types(w: &World) {
    let was = counts(w).await;
    let mut nodes: Vec<Value> = (1..=3).map(|i| w.node(i)).collect();
    nodes[0]["data_volumes"][0]["type"] = json!("ssd2");
    nodes[2]["root_volume"] = json!({"size_gib": 20, "type": "nvme"});
    let (status, body) = w.submit(&request(nodes)).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["nodes[0].data_volumes[0].type", "nodes[2].root_volume.type"]
    );
    let jobs = w.get("/v1/jobs").await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "no job stored");
    assert_eq!(counts(w).await, was, "nothing created");

    // A type that disappears after preflight: held at the quota wait until it is gone, so
    // CAPO meets its absence; the node needs input; amend, resume, Running.
    let used = w.servers_used().await;
    w.quota(json!({"instances": used})).await;
    let n = w.node(4);
    let name = name_of(&n).to_string();
    let id = w.submit_ok(&request(vec![n])).await;
    w.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let fault = w
        .fault(json!({"kind": "volume_type_missing", "name": "ssd"}))
        .await;
    w.quota(json!({"instances": used + 50})).await;
    let asked = w
        .until_event(&id, "needs_input", |e| e["kind"] == "needs_input")
        .await;
    assert!(
        asked["message"]
            .as_str()
            .unwrap()
            .contains("Volume type with name ssd could not be found."),
        "{asked}"
    );
    w.end_fault(&fault).await;
    let s = w.state().await;
    assert!(
        by_name(&s["servers"], &name).is_empty(),
        "cleaned up before asking"
    );
    assert!(by_name(&s["ports"], &format!("{name}-0")).is_empty());
    // An amend goes through the node checks preflight makes: nothing it would refuse is
    // stored.
    let (code, body) = w
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/jobs/{id}/nodes/{name}"),
            super::TOKEN,
            Some(&json!({"subnet": "😀", "availability_zone": "10.7.0.5", "floating_ip": "10.6.0.255"})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let mut fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["availability_zone", "floating_ip", "subnet"],
        "{body}"
    );
    let job = w.get(&format!("/v1/jobs/{id}")).await.unwrap();
    let stored = &job["nodes"][0]["spec"];
    assert_eq!(stored["subnet"], "demo-subnet", "{job}");
    let code = w
        .patch(
            &format!("/v1/jobs/{id}/nodes/{name}"),
            &json!({"root_volume": {"size_gib": 20, "type": "hdd"}}),
        )
        .await;
    assert_eq!(code, 200);
    w.post(&format!("/v1/jobs/{id}/resume"), &json!({})).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let s = w.state().await;
    let root = by_name(&s["volumes"], &format!("{name}-root"));
    assert_eq!(root[0]["volume_type"], "hdd");
    let m = w.machines().await.get(&name).await.unwrap();
    assert_eq!(m.data["status"]["phase"], "Running", "{name}");
}

/// Nova and Neutron fail `rate` of their answers while four nodes wait for quota and then
/// build (for `building`): Capstan's own reads fail and are retried; the nodes come up
/// exactly as specified.
pub async fn outage(w: &World, rate: f64, building: Duration) {
    let was = counts(w).await;
    let nodes: Vec<Value> = (1..=4).map(|i| w.node(i)).collect();
    // The nodes first wait for quota, so the outage meets them mid-job whatever the speed
    // of the machine.
    let used = w.servers_used().await;
    w.quota(json!({"instances": used})).await;
    let id = w.submit_ok(&request(nodes.clone())).await;
    let outage = w
        .fault(
            json!({"kind": "outage", "services": ["compute", "network"], "rate": rate,
                      "cause": "messaging"}),
        )
        .await;
    w.until_event(&id, "a transient retry", |e| {
        e["kind"] == "retry" && (e["class"] == "transient" || e["data"]["class"] == "transient")
            || e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("transient"))
    })
    .await;
    w.quota(json!({"instances": used + 50})).await;
    tokio::time::sleep(building).await;
    w.end_fault(&outage).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(w, &nodes, was).await;
}

/// No valid host on the host a node is pinned to: a capacity failure, read from Nova's
/// fault (real CAPO says only InstanceStateError), retried until the host has room.
pub async fn no_valid_host(w: &World) {
    let was = counts(w).await;
    let nodes = vec![w.node(1)];
    let fault = w
        .fault(json!({"kind": "no_valid_host", "host": nodes[0]["host"]}))
        .await;
    let id = w.submit_ok(&request(nodes.clone())).await;
    let failed = w
        .until_event(&id, "a capacity failure", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("capacity"))
        })
        .await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("No valid host was found"),
        "{failed}"
    );
    w.end_fault(&fault).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(w, &nodes, was).await;
}

/// Ports and volumes CAPO leaves behind when it deletes a failed attempt are removed by
/// Capstan's cleanup. Simulator only: the leak is CAPO's (the `leak` fault makes the
/// simulator's CAPO leave them), and real CAPO v0.14 deletes what it made — it adopts
/// orphaned ports and volumes by name on delete — so the lab has no honest way to leak.
pub async fn leaked_resources(w: &World) {
    assert_eq!(
        w.cloud,
        Cloud::Sim,
        "the leak fault acts on the simulator's CAPO"
    );
    let was = counts(w).await;
    w.fault(json!({"kind": "leak", "resources": ["ports", "volumes"]}))
        .await;
    let nodes = vec![w.node(2)];
    let name = name_of(&nodes[0]).to_string();
    let nvh = w
        .fault(json!({"kind": "no_valid_host", "host": nodes[0]["host"]}))
        .await;
    let id = w.submit_ok(&request(nodes.clone())).await;
    let cleaned = w
        .until_event(&id, "the cleanup of leaked resources", |e| {
            e["kind"] == "cleanup"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("removed what the failed attempt left"))
        })
        .await;
    let removed = cleaned["data"]["removed"].to_string();
    assert!(removed.contains(&format!("port {name}-0")), "{removed}");
    assert!(
        removed.contains(&format!("volume {name}-root")),
        "{removed}"
    );
    assert!(
        removed.contains(&format!("volume {name}-data")),
        "{removed}"
    );
    w.end_fault(&nvh).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(w, &nodes, was).await;
}

/// A Machine's name, UID and creation time: what must not change for a Machine a job leaves
/// alone.
pub fn identity_of(m: &DynamicObject) -> (String, String, String) {
    (
        m.metadata.name.clone().unwrap_or_default(),
        m.metadata.uid.clone().unwrap_or_default(),
        m.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    )
}

/// delete_nodes of two named MachineSet workers — the two newest, which the set's policy
/// (Oldest) would never pick: exactly those go, the set is lowered by two, the rest keep
/// their UIDs, no replacement comes, their servers are gone. With `kills`, the engine is
/// killed with SIGKILL that many times along the way. On the simulator two writes to
/// MachineSets answer 409 first, so the guarded scale-down must read again (the lab's
/// apiserver is real: it has no such fault, and a conflict there is luck).
pub async fn named_set_delete(w: &mut World, kills: usize) {
    let names = w.scale_demo_set(5).await;
    let mut all: Vec<(String, String, String)> =
        w.set_machines().await.iter().map(identity_of).collect();
    assert_eq!(all.len(), names.len());
    all.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let named: Vec<String> = all[..2].iter().map(|m| m.0.clone()).collect();
    let conflicts = w.cloud == Cloud::Sim;
    if conflicts {
        w.fault(json!({"kind": "kube_error", "code": 409, "verbs": ["patch"], "resources": ["machinesets"], "count": 2}))
            .await;
    }
    let id = w
        .submit_ok(&json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": named}))
        .await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(0..500))).await;
        w.kill_serve();
        w.start_serve();
    }
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let left: Vec<(String, String)> = w
        .set_machines()
        .await
        .into_iter()
        .map(|m| (m.metadata.name.unwrap(), m.metadata.uid.unwrap()))
        .collect();
    for n in &named {
        assert!(!left.iter().any(|m| &m.0 == n), "{n} still there: {left:?}");
    }
    // The rest keep their UIDs; no replacement appears.
    let mut kept: Vec<(String, String)> = all[2..]
        .iter()
        .map(|m| (m.0.clone(), m.1.clone()))
        .collect();
    kept.sort();
    assert_eq!(left, kept);
    tokio::time::sleep(w.settle()).await;
    assert_eq!(w.set_machines().await.len(), 3, "no replacement");
    let set = w.machine_sets().await.get("demo-md-0").await.unwrap();
    assert_eq!(set.data["spec"]["replicas"], 3);
    let events = w.events(&id).await;
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("deletion order Oldest"))),
        "the set's policy is stated"
    );
    if conflicts {
        assert!(
            events.iter().any(|e| e["kind"] == "retry"
                || e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("changed while lowering"))),
            "the conflict was met and retried: {events:#?}"
        );
    }
    let s = w.state().await;
    for n in &named {
        assert!(by_name(&s["servers"], n).is_empty(), "{n}'s server is gone");
    }
}

/// What a user checks of a node after a repair: its server, address, floating IP, volumes.
pub async fn node_view(
    w: &World,
    name: &str,
) -> (String, Value, Value, Vec<(String, i64, String)>) {
    let s = w.state().await;
    let server = by_name(&s["servers"], name)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port = by_name(&s["ports"], &format!("{name}-0"))[0].clone();
    let ip = port["fixed_ips"][0]["ip_address"].clone();
    let fip = s["floating_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["port_id"] == port["id"])
        .map(|f| f["floating_ip_address"].clone())
        .unwrap_or(Value::Null);
    let mut volumes: Vec<(String, i64, String)> = s["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with(&format!("{name}-")))
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["size"].as_i64().unwrap(),
                v["volume_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    volumes.sort();
    (server, ip, fip, volumes)
}

/// Waits until the Machine's NodeHealthy condition is `want`.
pub async fn node_healthy(w: &World, name: &str, want: &str) {
    for _ in 0..w.polls(600) {
        let m = w.machines().await.get(name).await.unwrap();
        let healthy = m.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NodeHealthy")
            .map(|c| c["status"].clone());
        if healthy == Some(json!(want)) {
            // Past the tests' `unhealthy_after` of 1s (transition times have seconds).
            tokio::time::sleep(Duration::from_millis(2100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never NodeHealthy={want}");
}

/// A repair of a NotReady node: it is replaced with the same name, IP, floating IP address
/// and volumes on a new server; a second repair finds it healthy and leaves it alone.
pub async fn repair_not_ready(w: &mut World, kills: usize) {
    let n = w.node(7);
    let name = name_of(&n).to_string();
    let id = w.submit_ok(&request(vec![n])).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let before = node_view(w, &name).await;
    assert!(before.2.is_string(), "it has a floating IP");
    let fips = counts(w).await[3];

    let fault = w
        .fault(json!({"kind": "node_not_ready", "node": name}))
        .await;
    // Its kubelet stopped posting: upstream's NodeHealthy (v1beta1) is Unknown, not False.
    node_healthy(w, &name, "Unknown").await;
    let (status, job) = w
        .submit(
            &json!({"kind": "repair", "cluster": "default/demo", "nodes": [name],
                        "unhealthy_after": "1s"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // The kubelet of the new server is fine: the fault was the old one's.
    w.until_event(&id, "the old Machine deleted", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("standalone: deleted"))
    })
    .await;
    w.end_fault(&fault).await;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(0..500))).await;
        w.kill_serve();
        w.start_serve();
    }
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let after = node_view(w, &name).await;
    assert_eq!(
        by_name(&w.state().await["servers"], &name).len(),
        1,
        "one server"
    );
    assert_ne!(after.0, before.0, "a new server");
    assert_eq!(after.1, before.1, "same IP");
    assert_eq!(after.2, before.2, "same floating IP address");
    assert_eq!(after.3, before.3, "same volumes");
    node_healthy(w, &name, "True").await;
    assert_eq!(counts(w).await[3], fips, "no doubled floating IP");

    // A second repair finds it healthy and leaves it alone.
    let id = w
        .submit_ok(&json!({"kind": "repair", "cluster": "default/demo", "nodes": [name]}))
        .await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let events = w.events(&id).await;
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("healthy; left alone"))),
        "{events:#?}"
    );
    assert_eq!(node_view(w, &name).await.0, after.0, "untouched");
}

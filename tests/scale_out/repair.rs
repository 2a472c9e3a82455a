//! repair end to end: a NotReady node is replaced with the same name, IP, floating IP
//! address and volumes; a healthy one is left alone; too many unhealthy stops the repair.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{World, by_name, node, request};

/// What a user checks of a node after a repair: its server, address, floating IP, volumes.
async fn node_view(w: &World, name: &str) -> (String, Value, Value, Vec<(String, i64, String)>) {
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

async fn node_healthy(w: &World, name: &str, want: &str) {
    for _ in 0..600 {
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

#[tokio::test(flavor = "multi_thread")]
async fn a_not_ready_node_is_replaced_with_the_same_spec_and_a_healthy_one_left_alone() {
    let w = World::start();
    let (_, job) = w.submit(&request(vec![node(7)])).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let before = node_view(&w, "demo-w-07").await;
    assert!(before.2.is_string(), "it has a floating IP");

    let fault = w
        .fault(json!({"kind": "node_not_ready", "node": "demo-w-07"}))
        .await;
    node_healthy(&w, "demo-w-07", "False").await;
    let (status, job) = w
        .submit(
            &json!({"kind": "repair", "cluster": "default/demo", "nodes": ["demo-w-07"],
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
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let after = node_view(&w, "demo-w-07").await;
    assert_ne!(after.0, before.0, "a new server");
    assert_eq!(after.1, before.1, "same IP");
    assert_eq!(after.2, before.2, "same floating IP address");
    assert_eq!(after.3, before.3, "same volumes");
    node_healthy(&w, "demo-w-07", "True").await;
    let s = w.state().await;
    assert_eq!(
        s["floating_ips"].as_array().unwrap().len(),
        1,
        "no doubled floating IP"
    );

    // A second repair finds it healthy and leaves it alone.
    let (status, job) = w
        .submit(&json!({"kind": "repair", "cluster": "default/demo", "nodes": ["demo-w-07"]}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let events = w.events(&id).await;
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("healthy; left alone"))),
        "{events:#?}"
    );
    assert_eq!(node_view(&w, "demo-w-07").await.0, after.0, "untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_capstan_did_not_make_is_read_back_and_replaced() {
    let w = World::start();
    let machines = w.machines().await;
    let list = machines.list(&Default::default()).await.unwrap();
    let name = list.items[0].metadata.name.clone().unwrap();
    let before = node_view(&w, &name).await;
    w.fault(json!({"kind": "node_not_ready", "node": name}))
        .await;
    node_healthy(&w, &name, "False").await;
    let (status, job) = w
        .submit(
            &json!({"kind": "repair", "cluster": "default/demo", "nodes": [name],
                        "unhealthy_after": "1s"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let spec = &job["nodes"][0]["spec"];
    assert_eq!(spec["flavor"], "k8s.small", "{spec}");
    assert_eq!(spec["ip"], before.1, "{spec}");
    assert_eq!(spec["availability_zone"], "az1", "{spec}");
    w.until_event(&id, "the Machine marked", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("deletePolicy"))
    })
    .await;
    let faults: Value = w
        .http
        .get(format!("{}/sim/v1/faults", w.sim_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for f in faults["faults"].as_array().unwrap() {
        w.end_fault(f["id"].as_str().unwrap()).await;
    }
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let after = node_view(&w, &name).await;
    assert_ne!(after.0, before.0);
    assert_eq!(after.1, before.1, "same IP");
    // The set was lowered by one and the node recreated standalone: still 3 workers.
    let sets = w.machine_sets().await;
    assert_eq!(
        sets.get("demo-md-0").await.unwrap().data["spec"]["replicas"],
        2
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        machines
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_of_five_not_ready_stops_at_max_unhealthy_and_says_why() {
    let w = World::start();
    let sets = w.machine_sets().await;
    sets.patch(
        "demo-md-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let machines = w.machines().await;
    let names: Vec<String> = loop {
        let list = machines.list(&Default::default()).await.unwrap();
        if list
            .items
            .iter()
            .filter(|m| m.data["status"]["phase"] == "Running")
            .count()
            == 5
        {
            break list
                .items
                .iter()
                .map(|m| m.metadata.name.clone().unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for n in &names[..3] {
        w.fault(json!({"kind": "node_not_ready", "node": n})).await;
    }
    for n in &names[..3] {
        node_healthy(&w, n, "False").await;
    }
    let before: Vec<String> = names.clone();
    let (status, body) = w
        .submit(
            &json!({"kind": "repair", "cluster": "default/demo", "nodes": [names[0]],
                        "unhealthy_after": "1s"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let why = body["fields"][0]["message"].as_str().unwrap();
    assert!(
        why.starts_with("3 of 5 workers of default/demo are unhealthy (60%"),
        "{why}"
    );
    assert!(why.contains("more than max_unhealthy 40%"), "{why}");
    let mut now: Vec<String> = machines
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    now.sort();
    let mut before = before;
    before.sort();
    assert_eq!(now, before, "nothing replaced");
}

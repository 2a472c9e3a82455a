//! repair end to end: a NotReady node is replaced with the same name, IP, floating IP
//! address and volumes; a healthy one is left alone; too many unhealthy stops the repair.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::scenarios::{node_healthy, node_view};
use crate::common::{World, scenarios};

#[tokio::test(flavor = "multi_thread")]
async fn a_not_ready_node_is_replaced_with_the_same_spec_and_a_healthy_one_left_alone() {
    scenarios::repair_not_ready(&mut World::start(), 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_engine_during_a_repair_changes_nothing_of_the_outcome() {
    scenarios::repair_not_ready(&mut World::start(), 3).await;
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
    node_healthy(&w, &name, "Unknown").await;
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
            .is_some_and(|m| m.contains("deletion order"))
    })
    .await;
    let faults: Value = w
        .http
        .get(format!("{}/sim/v1/faults", w.console.url))
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
    let names = w.scale_demo_set(5).await;
    for n in &names[..3] {
        w.fault(json!({"kind": "node_not_ready", "node": n})).await;
    }
    for n in &names[..3] {
        node_healthy(&w, n, "Unknown").await;
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
    let mut now: Vec<String> = w
        .machines()
        .await
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

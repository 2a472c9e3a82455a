//! delete_nodes end to end: exactly the named nodes go, a set is lowered by exactly their
//! number through conflicts, a stuck delete is forced, and nothing is left in OpenStack.

use std::time::Duration;

use serde_json::json;

use crate::common::{World, by_name, node, request, scenarios};

async fn machine_names(w: &World) -> Vec<(String, String, String)> {
    let list = w.machines().await.list(&Default::default()).await.unwrap();
    let mut out: Vec<(String, String, String)> =
        list.items.iter().map(scenarios::identity_of).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_two_named_workers_of_a_set_takes_exactly_those_through_conflicts() {
    scenarios::named_set_delete(&mut World::start(), 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_engine_during_a_set_delete_changes_nothing_of_the_outcome() {
    scenarios::named_set_delete(&mut World::start(), 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_delete_is_forced_after_force_after_and_leaves_nothing() {
    let w = World::start();
    let nodes = vec![node(1)];
    let id = w.submit_ok(&request(nodes)).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let s = w.state().await;
    assert_eq!(s["floating_ips"].as_array().unwrap().len(), 1);

    // CAPI never lets go of the Machine, and Nova fails every call for a while.
    w.fault(json!({"kind": "stuck_finalizer", "machine": "demo-w-01"}))
        .await;
    let (status, job) = w
        .submit(&json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": ["demo-w-01"], "force_after": "2s"}))
        .await;
    assert_eq!(status, 202, "{job}");
    w.fault(json!({"kind": "outage", "services": ["compute"], "status": 500, "rate": 1.0, "duration_seconds": 150}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let events = w.events(&id).await;
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("force_after")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("forced: dropped finalizers")),
        "{messages:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "retry"
                && e["message"].as_str().is_some_and(|m| m.contains("500"))),
        "Nova's 5xx was retried: {messages:#?}"
    );
    let s = w.state().await;
    assert!(by_name(&s["servers"], "demo-w-01").is_empty());
    assert!(by_name(&s["ports"], "demo-w-01-0").is_empty());
    assert!(by_name(&s["volumes"], "demo-w-01-root").is_empty());
    assert!(by_name(&s["volumes"], "demo-w-01-data").is_empty());
    assert_eq!(
        s["floating_ips"].as_array().unwrap().len(),
        0,
        "floating IP released"
    );
    assert!(
        w.machines()
            .await
            .get_opt("demo-w-01")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_names_are_refused_and_nothing_is_touched() {
    let w = World::start();
    let before = machine_names(&w).await;
    let first = before[0].0.clone();
    let (status, body) = w
        .submit(&json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": [first, "nope-1", "nope-2"]}))
        .await;
    assert_eq!(status, 422, "{body}");
    let fields = crate::refused_fields(&body);
    assert_eq!(fields, ["nodes[1]", "nodes[2]"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(machine_names(&w).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_field_is_refused_naming_the_kinds_own_fields_too() {
    let w = World::start();
    let before = machine_names(&w).await;
    let first = before[0].0.clone();
    let (status, body) = w
        .submit(&json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": [first], "forceafter": "2s"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "forceafter", "{body}");
    assert_eq!(
        body["fields"][0]["message"],
        "unknown field (known: kind, cluster, tenant, nodes, deadline, concurrency, params, force_after)",
        "{body}"
    );
    assert_eq!(machine_names(&w).await, before);
}

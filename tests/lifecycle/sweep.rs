//! The sweeps end to end: the repair sweep finds NotReady nodes of a cluster and repairs
//! them (once; and not when too many are unhealthy), the orphan sweep lists in a dry run
//! and removes what no Machine owns after a grace period.

use serde_json::{Value, json};

use crate::common::scenarios::{node_healthy, node_view};
use crate::common::{World, by_name, node, request};

#[tokio::test(flavor = "multi_thread")]
async fn the_repair_sweep_replaces_a_not_ready_node_and_a_second_sweep_does_nothing() {
    let w = World::start();
    let id = w.submit_ok(&request(vec![node(5)])).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let before = node_view(&w, "demo-w-05").await;
    let fault = w
        .fault(json!({"kind": "node_not_ready", "node": "demo-w-05"}))
        .await;
    node_healthy(&w, "demo-w-05", "Unknown").await;
    let sweep = json!({"kind": "repair_sweep", "cluster": "default/demo",
                       "params": {"unhealthy_after": "1s"}});
    let id = w.submit_ok(&sweep).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let submitted = w
        .until_event(&id, "a repair job", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("submitted repair job"))
        })
        .await;
    let repair = submitted["data"]["repair_job"]
        .as_str()
        .unwrap()
        .to_string();
    w.until_event(&repair, "the old Machine deleted", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("standalone: deleted"))
    })
    .await;
    w.end_fault(&fault).await;
    assert_eq!(w.finished(&repair).await["state"], "succeeded");
    let after = node_view(&w, "demo-w-05").await;
    assert_ne!(after.0, before.0, "a new server");
    assert_eq!((after.1, after.2, after.3), (before.1, before.2, before.3));
    node_healthy(&w, "demo-w-05", "True").await;

    let id = w.submit_ok(&sweep).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let events = w.events(&id).await;
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("healthy; nothing to repair"))),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("submitted repair job"))
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repair_sweep_stops_at_max_unhealthy_and_says_why() {
    let w = World::start();
    let names = w.scale_demo_set(5).await;
    for n in &names[..3] {
        w.fault(json!({"kind": "node_not_ready", "node": n})).await;
    }
    for n in &names[..3] {
        node_healthy(&w, n, "Unknown").await;
    }
    let (_, job) = w
        .submit(
            &json!({"kind": "repair_sweep", "cluster": "default/demo", "nodes": ["sweep"],
                        "params": {"unhealthy_after": "1s"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "failed", "{done:#}");
    let why = done["nodes"][0]["last_error"].as_str().unwrap();
    assert!(
        why.contains("3 of 5 workers of default/demo are unhealthy"),
        "{why}"
    );
    assert!(why.contains("more than max_unhealthy 40%"), "{why}");
    let jobs = w.get("/v1/jobs?kind=repair").await.unwrap();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        0,
        "no repair submitted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_orphan_sweep_lists_in_a_dry_run_and_removes_after_the_grace_period() {
    let w = World::start();
    let t = w.os_token().await;
    let get = reqwest::Method::GET;
    let nets = w
        .os(
            &t,
            get.clone(),
            "/networking/v2.0/networks?name=demo-net",
            None,
        )
        .await;
    let net = nets["networks"][0]["id"].as_str().unwrap().to_string();
    let port = w
        .os(
            &t,
            reqwest::Method::POST,
            "/networking/v2.0/ports",
            // As CAPO makes a port for the cluster: its description is the cluster's mark.
            Some(json!({"port": {"name": "demo-w-09-0", "network_id": net,
            "description": "Created by cluster-api-provider-openstack cluster default-demo"}})),
        )
        .await;
    let port = port["port"]["id"].as_str().unwrap().to_string();
    let flavors = w.os(&t, get.clone(), "/compute/v2.1/flavors", None).await;
    let flavor = flavors["flavors"][0]["id"].as_str().unwrap().to_string();
    let images = w.os(&t, get.clone(), "/image/v2/images", None).await;
    let image = images["images"][0]["id"].as_str().unwrap().to_string();
    let server = w
        .os(
            &t,
            reqwest::Method::POST,
            "/compute/v2.1/servers",
            Some(
                // As Capstan's OpenStackMachines make it: marked for the cluster.
                json!({"server": {"name": "demo-w-09", "flavorRef": flavor, "imageRef": image,
                               "networks": [{"port": port}], "tags": ["capstan"],
                               "metadata": {"capstan.io:cluster": "default/demo"}}}),
            ),
        )
        .await;
    assert!(server["server"]["id"].is_string(), "{server}");
    // Capstan's old tag and a Capstan-like name, but no mark of this cluster: not proof.
    let stranger = w
        .os(
            &t,
            reqwest::Method::POST,
            "/compute/v2.1/servers",
            Some(
                json!({"server": {"name": "demo-w-10", "flavorRef": flavor, "imageRef": image,
                               "networks": "none", "tags": ["capstan"]}}),
            ),
        )
        .await;
    assert!(stranger["server"]["id"].is_string(), "{stranger}");
    let sweep = |params: Value| {
        json!({"kind": "orphan_sweep", "cluster": "default/demo",
                                        "nodes": ["sweep"], "params": params})
    };
    let orphans_left = |s: &Value| {
        (
            by_name(&s["servers"], "demo-w-09").len(),
            by_name(&s["ports"], "demo-w-09-0").len(),
        )
    };
    // Younger than the grace period: nothing happens.
    let id = w.submit_ok(&sweep(json!({"grace": "1h"}))).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    assert_eq!(orphans_left(&w.state().await), (1, 1));
    // A dry run lists them and keeps them.
    let id = w
        .submit_ok(&sweep(json!({"grace": "0s", "dry_run": true})))
        .await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let listed: Vec<String> = w
        .events(&id)
        .await
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .filter(|m| m.starts_with("orphan (dry run, kept)"))
        .collect();
    assert!(
        listed.iter().any(|m| m.contains("server demo-w-09")),
        "{listed:?}"
    );
    assert!(
        listed.iter().any(|m| m.contains("port demo-w-09-0")),
        "{listed:?}"
    );
    assert_eq!(orphans_left(&w.state().await), (1, 1));
    // The real sweep removes them, and leaves every live node's resources alone.
    let before = w.state().await;
    let id = w.submit_ok(&sweep(json!({"grace": "0s"}))).await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let after = w.state().await;
    assert_eq!(orphans_left(&after), (0, 0));
    assert_eq!(
        by_name(&after["servers"], "demo-w-10").len(),
        1,
        "unmarked: left alone"
    );
    assert_eq!(
        after["servers"].as_array().unwrap().len(),
        before["servers"].as_array().unwrap().len() - 1
    );
    assert_eq!(
        after["ports"].as_array().unwrap().len(),
        before["ports"].as_array().unwrap().len() - 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_without_nodes_and_a_bad_field_is_refused_for_that_field_only() {
    let w = World::start();
    for (kind, field, bad) in [
        ("orphan_sweep", "grace", "soon"),
        ("repair_sweep", "unhealthy_after", "later"),
    ] {
        let (status, body) = w
            .submit(&json!({"kind": kind, "cluster": "default/demo", field: bad}))
            .await;
        assert_eq!(status, 422, "{kind}: {body}");
        let named = crate::refused_fields(&body);
        // The sweep supplies its one node itself: only the bad field is named.
        assert_eq!(named.len(), 1, "{kind}: {body}");
        assert!(named[0].ends_with(field), "{kind}: {body}");
    }
    let jobs = w.get("/v1/jobs").await.unwrap();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs}");
}

//! scale_out end to end: the shared scenarios (the seed story, volume types, an outage, no
//! valid host, leaked resources) on a fresh simulator, and what only the simulator can set
//! up (an image gone after preflight, a floating IP allocated twice, a name taken by
//! someone else's Machine).

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::common::{World, by_name, node, request, scenarios};

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_story_ten_workers_wait_for_quota_and_all_run_as_specified() {
    scenarios::story(&mut World::start(), 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_engine_during_the_story_changes_nothing_of_the_outcome() {
    scenarios::story(&mut World::start(), 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_volume_type_is_refused_at_submit_and_a_vanished_one_asks_for_input() {
    scenarios::volume_types(&World::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_outside_the_zone_or_a_root_volume_below_min_disk_is_refused_at_preflight() {
    // Real Nova takes `az1:compute-3` and puts the server in az2 (the lab saw it); the
    // node asked for az1, so preflight refuses it.
    let w = World::start();
    let mut n = node(1);
    n["availability_zone"] = json!("az1");
    n["host"] = json!("compute-3");
    let (status, body) = w.submit(&request(vec![n])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["fields"][0]["message"], "compute host compute-3 is in availability zone az2, not az1",
        "{body}"
    );
    assert_eq!(body["fields"][0]["field"], "nodes[0].host");
    // A root volume smaller than the image's min_disk (10 GiB): Cinder would say 400.
    let mut n = node(1);
    n["root_volume"] = json!({"size_gib": 5, "type": "ssd"});
    let (status, body) = w.submit(&request(vec![n])).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "nodes[0].root_volume.size_gib");
    assert_eq!(
        body["fields"][0]["message"],
        "5 GiB is smaller than image ubuntu-2204-kube-v1.30's min_disk of 10 GiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_gone_after_preflight_is_found_although_capo_says_nothing() {
    // Real CAPO requeues a failed image lookup without any condition: the Machine just has
    // no server. Capstan asks the cloud once the Machine has waited `stall_after`.
    let w = World::start();
    w.quota(json!({"instances": 3})).await;
    let mut req = request(vec![node(5)]);
    req["stall_after"] = json!("1s");
    let id = w.submit_ok(&req).await;
    w.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let fault = w
        .fault(json!({"kind": "image_missing", "name": "ubuntu-2204-kube-v1.30"}))
        .await;
    w.quota(json!({"instances": 50})).await;
    let asked = w
        .until_event(&id, "needs_input", |e| e["kind"] == "needs_input")
        .await;
    let message = asked["message"].as_str().unwrap();
    assert!(
        message.contains("image ubuntu-2204-kube-v1.30 does not exist"),
        "{asked}"
    );
    w.end_fault(&fault).await;
    let s = w.state().await;
    assert!(by_name(&s["servers"], "demo-w-05").is_empty());
    assert!(
        !s["machines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "demo-w-05"),
        "the attempt's Machine is gone"
    );
    w.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_and_neutron_failing_thirty_percent_of_the_time_only_slow_things_down() {
    scenarios::outage(&World::start(), 0.3, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_host_on_a_pinned_host_is_retried_as_capacity_until_it_has_room() {
    scenarios::no_valid_host(&World::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_and_volumes_leaked_by_capo_on_delete_are_removed_by_cleanup() {
    scenarios::leaked_resources(&World::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_floating_ip_allocated_twice_for_a_node_is_released_and_the_node_keeps_one() {
    // What a POST /floatingips that timed out on Capstan's side and went through on
    // Neutron's leaves (a database outage holds requests, then completes them): more than
    // one floating IP described for the node. The node waits for quota meanwhile.
    let w = World::start();
    w.quota(json!({"instances": w.servers_used().await})).await;
    let id = w.submit_ok(&request(vec![node(0)])).await;
    w.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let t = w.os_token().await;
    let get = reqwest::Method::GET;
    let public = w
        .os(
            &t,
            get.clone(),
            "/networking/v2.0/networks?name=public",
            None,
        )
        .await;
    let network = public["networks"][0]["id"].as_str().unwrap().to_string();
    let description = format!("capstan cluster default/demo job {id} node demo-w-00");
    for _ in 0..2 {
        let made = w
            .os(
                &t,
                reqwest::Method::POST,
                "/networking/v2.0/floatingips",
                Some(json!({"floatingip": {"floating_network_id": network,
                                       "description": description}})),
            )
            .await;
        assert!(made["floatingip"]["id"].is_string(), "{made}");
    }
    w.quota(json!({"instances": 50})).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    // One floating IP is the node's, on its port; the other is gone.
    let fips = w
        .os(&t, get.clone(), "/networking/v2.0/floatingips", None)
        .await;
    let described: Vec<&serde_json::Value> = fips["floatingips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["description"] == description.as_str())
        .collect();
    assert_eq!(described.len(), 1, "{fips:#}");
    let state = w.state().await;
    let port = &by_name(&state["ports"], "demo-w-00-0")[0]["id"];
    assert_eq!(&described[0]["port_id"], port, "{:#}", described[0]);
    assert!(
        w.events(&id).await.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("released floating IP"))),
        "the release is in the job's history"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_taken_after_preflight_asks_for_input_and_leaves_the_other_node_alone() {
    let w = World::start();
    // The node waits for a floating IP's quota, so someone can take its name after
    // preflight (and boot a server under it, which needs no floating IP).
    w.quota(json!({"floatingip": 0})).await;
    let id = w.submit_ok(&request(vec![node(3)])).await;
    w.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    // Someone else's Machine of that name (with its OpenStackMachine), made outside Capstan.
    let machines = w.machines().await;
    let osms: Api<DynamicObject> = Api::namespaced_with(
        machines.clone().into_client(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "infrastructure.cluster.x-k8s.io",
            "v1beta1",
            "OpenStackMachine",
        )),
    );
    let osm = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
        "metadata": {"name": "demo-w-03", "namespace": "default"},
        "spec": {"flavor": "k8s.small", "image": {"filter": {"name": "ubuntu-2204-kube-v1.30"}},
                 "identityRef": {"name": "demo-cloud-config", "cloudName": "openstack"},
                 "ports": [{"network": {"filter": {"name": "demo-net"}},
                            "fixedIPs": [{"subnet": {"filter": {"name": "demo-subnet"}}}]}]},
    });
    let machine = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": "demo-w-03", "namespace": "default"},
        "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": "demo-bootstrap"},
                 "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                                       "kind": "OpenStackMachine", "name": "demo-w-03", "namespace": "default"}},
    });
    let pp = kube::api::PostParams::default();
    osms.create(&pp, &serde_json::from_value(osm).unwrap())
        .await
        .unwrap();
    machines
        .create(&pp, &serde_json::from_value(machine).unwrap())
        .await
        .unwrap();
    // Its server is up before Capstan's node looks again.
    for _ in 0..300 {
        let s = w.state().await;
        if by_name(&s["servers"], "demo-w-03")
            .first()
            .is_some_and(|x| x["status"] == "ACTIVE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.quota(json!({"floatingip": 50})).await;
    // Capstan's node asks for input and touches none of the other node's resources.
    let asked = w
        .until_event(&id, "needs_input", |e| e["kind"] == "needs_input")
        .await;
    assert!(
        asked["message"]
            .as_str()
            .unwrap()
            .contains("already exists and was not made by this job"),
        "{asked}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = w.state().await;
    assert_eq!(
        by_name(&s["servers"], "demo-w-03").len(),
        1,
        "the other node's server stays"
    );
    assert_eq!(by_name(&s["servers"], "demo-w-03")[0]["status"], "ACTIVE");
    assert_eq!(by_name(&s["ports"], "demo-w-03-0").len(), 1, "and its port");
    let m = machines.get("demo-w-03").await.unwrap();
    assert!(m.metadata.deletion_timestamp.is_none(), "and its Machine");
    assert!(
        !m.metadata
            .labels
            .unwrap_or_default()
            .contains_key("capstan.io:job"),
        "and it was not adopted"
    );
}

//! Two tenants on one Capstan: `demo` (namespace `default`, project demo) and `acme`
//! (namespace `acme`, project acme, cluster `acme/prod`). A member of one tenant can neither
//! see nor touch the other's nodes — not through a delete, a schedule, a sweep or a view —
//! and every cloud act uses the cluster's own credentials.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{ADA, ALICE, BOB, DANA, EVE, TOKEN, World, by_name, node, request};

/// A scale_out of the acme cluster (its network, subnet and addresses).
fn acme_request(names: &[&str]) -> Value {
    let nodes: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "availability_zone": "az2"}))
        .collect();
    json!({"kind": "scale_out", "cluster": "acme/prod",
           "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                        "network": "acme-net", "subnet": "acme-subnet"},
           "nodes": nodes})
}

/// `POST /v1/schedules` as the holder of `token`.
async fn schedule(w: &World, token: &str, body: Value) -> (u16, Value) {
    w.call(Method::POST, "/v1/schedules", token, Some(&body))
        .await
}

fn fields(body: &Value) -> Vec<String> {
    body["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{}: {}",
                f["field"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// Alice (member of demo) makes `alice-w-1` in default/demo, with a floating IP.
async fn alice_node(w: &World) -> Value {
    let mut n = node(1);
    n["name"] = json!("alice-w-1");
    n["ip"] = json!("10.6.0.91");
    n["floating_ip"] = json!(true);
    let (s, job) = w
        .call(Method::POST, "/v1/jobs", ALICE, Some(&request(vec![n])))
        .await;
    assert_eq!(s, 202, "{job}");
    let done = w.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let state = w.state().await;
    by_name(&state["servers"], "alice-w-1")[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_of_one_tenant_cannot_delete_another_tenants_node_by_any_name() {
    let w = World::start();
    let server = alice_node(&w).await;
    let sid = server["id"].as_str().unwrap();
    let before = w.state().await;
    let node_name = before["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["providerID"].as_str().is_some_and(|p| p.ends_with(sid)))
        .map(|n| n["name"].as_str().unwrap().to_string())
        .expect("alice-w-1 has joined as a Node");
    // Eve (acme) names alice's node through her own cluster, by Machine name, Node name and
    // server UUID; and through a cluster that does not exist.
    for given in ["alice-w-1", node_name.as_str(), sid] {
        let (s, body) = w
            .call(
                Method::POST,
                "/v1/jobs",
                EVE,
                Some(&json!({"kind": "delete_nodes", "cluster": "acme/prod", "nodes": [given], "force_after": "1s"})),
            )
            .await;
        assert_eq!(s, 422, "{given}: {body}");
        assert_eq!(
            fields(&body),
            [format!(
                "nodes[0]: no Machine, Node or server {given} in cluster acme/prod"
            )]
        );
    }
    let (s, body) = w
        .call(
            Method::POST,
            "/v1/jobs",
            EVE,
            Some(&json!({"kind": "delete_nodes", "cluster": "acme/ghost", "nodes": ["alice-w-1"]})),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(fields(&body), ["cluster: no CAPI Cluster acme/ghost"]);
    // Eve cannot name demo's namespace either.
    let (s, body) = w
        .call(
            Method::POST,
            "/v1/jobs",
            EVE,
            Some(
                &json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": ["alice-w-1"]}),
            ),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    // Nothing of alice's node moved.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = w.state().await;
    let m = after["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "alice-w-1")
        .unwrap();
    assert_eq!(m["phase"], "Running");
    assert_eq!(
        by_name(&after["servers"], "alice-w-1")[0]["status"],
        "ACTIVE"
    );
    assert_eq!(by_name(&after["ports"], "alice-w-1-0").len(), 1);
    assert_eq!(
        after["floating_ips"].as_array().unwrap().len(),
        before["floating_ips"].as_array().unwrap().len()
    );
    let eve_jobs = w.call(Method::GET, "/v1/jobs", EVE, None).await.1;
    assert_eq!(
        eve_jobs["jobs"].as_array().unwrap().len(),
        0,
        "no job stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_come_in_through_the_same_admission_as_jobs() {
    let w = World::start();
    let demo_set_machine = w.state().await["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["namespace"] == "default")
        .map(|m| m["name"].as_str().unwrap().to_string())
        .unwrap();
    // A scheduled delete of another tenant's node is refused when it is created, exactly as
    // the same job would be.
    let (s, body) = schedule(&w, EVE, json!({"name": "eve-del", "cron": "*/3 * * * * *", "job": {"kind": "delete_nodes",
                "cluster": "acme/prod", "nodes": [demo_set_machine], "params": {"force_after": "1s"}}})).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        fields(&body),
        [format!(
            "job.nodes[0]: no Machine, Node or server {demo_set_machine} in cluster acme/prod"
        )]
    );
    // A scale_out template with defaults is a scale_out like any other; a fake node list is
    // not.
    let (s, body) = schedule(
        &w,
        EVE,
        json!({"name": "eve-grow", "cron": "0 3 * * *", "enabled": false,
                         "job": acme_request(&["acme-n-1"])}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = schedule(
        &w,
        EVE,
        json!({"name": "eve-fake", "cron": "0 3 * * *",
                         "job": {"kind": "scale_out", "cluster": "acme/prod", "nodes": ["sweep"]}}),
    )
    .await;
    assert_eq!(s, 422, "{body}");
    // Firing faster than the server's minimum interval (2 s in this world) is refused.
    let (s, body) = schedule(&w, EVE, json!({"name": "eve-fast", "cron": "* * * * * *",
                         "job": {"kind": "repair_sweep", "cluster": "acme/prod", "nodes": ["sweep"]}})).await;
    assert_eq!(s, 422, "{body}");
    assert!(
        fields(&body)[0].starts_with("cron: `* * * * * *` fires every 1s"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_the_world_no_longer_admits_makes_no_job_and_says_why() {
    let w = World::start();
    // Every 2 s, grow acme by one named node: the first tick admits; after it, the name is
    // taken, so later ticks are refused at firing with preflight's reason.
    let (s, sched) = schedule(
        &w,
        ADA,
        json!({"name": "grow", "cron": "*/2 * * * * *", "job": acme_request(&["acme-s-1"])}),
    )
    .await;
    assert_eq!(s, 201, "{sched}");
    let id = sched["id"].as_str().unwrap();
    let mut last = Value::Null;
    for _ in 0..300 {
        last = w
            .call(Method::GET, &format!("/v1/schedules/{id}"), ADA, None)
            .await
            .1;
        if last["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let why = last["last_error"].as_str().expect("a refused tick");
    assert!(
        why.contains("a Machine named acme-s-1 already exists in acme"),
        "{last:#}"
    );
    w.call(
        Method::PATCH,
        &format!("/v1/schedules/{id}"),
        ADA,
        Some(&json!({"enabled": false})),
    )
    .await;
    let jobs = w.call(Method::GET, "/v1/jobs", ADA, None).await.1;
    let from_schedule: Vec<&Value> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["schedule_id"] == id)
        .collect();
    assert_eq!(from_schedule.len(), 1, "{jobs:#}");
    let metrics = reqwest::get(format!("{}/metrics", w.api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("capstan_schedule_refusals_total{reason=\"refused\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_whose_owner_is_removed_pauses_and_an_editor_takes_it_over() {
    let mut w = World::start();
    let sweep = json!({"kind": "repair_sweep", "cluster": "default/demo", "nodes": ["sweep"]});
    let (s, bobs) = schedule(
        &w,
        BOB,
        json!({"name": "bob-sweep", "cron": "*/2 * * * * *", "job": sweep}),
    )
    .await;
    assert_eq!(s, 201, "{bobs}");
    let (s, alices) = schedule(
        &w,
        ALICE,
        json!({"name": "alice-sweep", "cron": "*/2 * * * * *", "job": sweep}),
    )
    .await;
    assert_eq!(s, 201, "{alices}");
    // Dana (tenant admin of demo) edits alice's: from then on it fires as dana.
    let aid = alices["id"].as_str().unwrap();
    let (s, edited) = w
        .call(
            Method::PATCH,
            &format!("/v1/schedules/{aid}"),
            DANA,
            Some(&json!({"cron": "*/4 * * * * *"})),
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["owner"], "dana");
    // Bob leaves the configuration; the server restarts.
    w.kill_serve();
    let config = std::fs::read_to_string(w.path("capstan.yaml")).unwrap();
    let without_bob: String = config
        .lines()
        .filter(|l| !l.contains("name: bob"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(w.path("capstan.yaml"), without_bob).unwrap();
    w.start_serve();
    let bid = bobs["id"].as_str().unwrap();
    let mut s = Value::Null;
    for _ in 0..100 {
        s = w.get(&format!("/v1/schedules/{bid}")).await.unwrap();
        if s["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s["enabled"], false, "{s:#}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("its owner bob no longer exists"),
        "{s:#}"
    );
    // Alice's schedule, now dana's, fires as dana.
    let mut owners = Vec::new();
    for _ in 0..100 {
        let jobs = w.get("/v1/jobs").await.unwrap();
        owners = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["schedule_id"] == aid)
            .map(|j| j["owner"].as_str().unwrap().to_string())
            .collect();
        if owners.iter().any(|o| o == "dana") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(owners.iter().any(|o| o == "dana"), "{owners:?}");
}

/// The first project's ID of that name in the simulator's ground truth.
fn project_id(state: &Value, name: &str) -> String {
    state["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tenant_works_in_its_own_project_and_sees_only_its_own_quota() {
    let w = World::start();
    let (s, job) = w
        .call(
            Method::POST,
            "/v1/jobs",
            EVE,
            Some(&acme_request(&["eve-w-1"])),
        )
        .await;
    assert_eq!(s, 202, "{job}");
    let done = w.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let state = w.state_all().await;
    let (demo, acme) = (project_id(&state, "demo"), project_id(&state, "acme"));
    let server = by_name(&state["servers"], "eve-w-1")[0];
    assert_eq!(
        server["project_id"],
        acme.as_str(),
        "made with acme's credentials"
    );
    assert_eq!(server["metadata"]["capstan.io:cluster"], "acme/prod");
    // Quota: each cluster's project, for whoever may see the cluster, and for no one else.
    let (s, q) = w
        .call(Method::GET, "/v1/clusters/acme/prod/quota", EVE, None)
        .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["project_id"], acme.as_str());
    let (s, q) = w
        .call(Method::GET, "/v1/clusters/default/demo/quota", ALICE, None)
        .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["project_id"], demo.as_str());
    for (token, path) in [
        (ADA, "/v1/clusters/default/demo/quota"),
        (EVE, "/v1/clusters/default/demo/nodes"),
        (ALICE, "/v1/clusters/acme/prod/quota"),
    ] {
        let (s, body) = w.call(Method::GET, path, token, None).await;
        assert_eq!(s, 404, "{path}: {body}");
    }
    let (s, _) = w
        .call(Method::GET, "/v1/clusters/acme/ghost/nodes", TOKEN, None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_view_names_a_wrong_path_parameter_and_a_missing_cluster_is_not_found() {
    let w = World::start();
    // Not DNS-1123 labels: refused with the parameter named, before Kubernetes is asked.
    for (path, param) in [
        ("/v1/clusters/%0FC9%27/0/nodes", "ns"),
        ("/v1/clusters/Default/demo/quota", "ns"),
        ("/v1/clusters/default/demo_1/nodes", "name"),
        ("/v1/clusters/default/-demo/quota", "name"),
    ] {
        let (s, body) = w.call(Method::GET, path, TOKEN, None).await;
        assert_eq!(s, 422, "{path}: {body}");
        assert_eq!(fields(&body).len(), 1, "{path}: {body}");
        assert_eq!(body["fields"][0]["field"], param, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("DNS-1123"),
            "{path}: {body}"
        );
    }
    // A cluster that does not exist and one of another tenant read the same.
    for (token, path, cluster) in [
        (TOKEN, "/v1/clusters/default/ghost/nodes", "default/ghost"),
        (TOKEN, "/v1/clusters/default/ghost/quota", "default/ghost"),
        (TOKEN, "/v1/clusters/nowhere/demo/nodes", "nowhere/demo"),
        (ALICE, "/v1/clusters/acme/prod/nodes", "acme/prod"),
    ] {
        let (s, body) = w.call(Method::GET, path, token, None).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_eq!(body["error"], format!("cluster {cluster} not found"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_sees_which_of_the_nodes_are_their_own_jobs_and_no_one_elses() {
    let w = World::start();
    alice_node(&w).await;
    let view = |token| w.call(Method::GET, "/v1/clusters/default/demo/nodes", token, None);
    let (_, as_alice) = view(ALICE).await;
    let (_, as_bob) = view(BOB).await;
    let job_of = |v: &Value| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["machine"] == "alice-w-1")
            .unwrap()["job"]
            .clone()
    };
    assert!(job_of(&as_alice).is_string(), "{as_alice:#}");
    assert!(job_of(&as_bob).is_null(), "{as_bob:#}");
    assert!(job_of(&view(DANA).await.1).is_string());
}

/// GET on the simulated OpenStack with a Keystone token.
async fn os_get(w: &World, token: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", w.console.url))
        .header("x-auth-token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A server made by hand in a project, marked for `cluster` and tagged as Capstan's: an
/// orphan the moment it exists.
async fn orphan_server(w: &World, token: &str, name: &str, cluster: &str) -> String {
    let id_of = |list: &Value, key: &str, name: &str| {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["id"]
            .clone()
    };
    let flavor = id_of(
        &os_get(w, token, "/compute/v2.1/flavors").await,
        "flavors",
        "k8s.small",
    );
    let image = id_of(
        &os_get(w, token, "/image/v2/images").await,
        "images",
        "ubuntu-2204-kube-v1.30",
    );
    let body = json!({"server": {"name": name, "flavorRef": flavor, "imageRef": image,
        "networks": "none", "metadata": {"capstan.io:cluster": cluster}, "tags": ["capstan"]}});
    let resp = reqwest::Client::new()
        .post(format!("{}/compute/v2.1/servers", w.console.url))
        .header("x-auth-token", token)
        .header("openstack-api-version", "compute 2.60")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{v}");
    v["server"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_orphan_sweep_never_touches_another_tenants_resources() {
    let w = World::start();
    let demo = w.os_login("capstan-sim").await;
    let acme = w.os_login("capstan-sim-acme").await;
    let d = orphan_server(&w, &demo, "d-orphan-1", "default/demo").await;
    let a = orphan_server(&w, &acme, "a-orphan-1", "acme/prod").await;
    let (s, job) = w
        .call(
            Method::POST,
            "/v1/jobs",
            ADA,
            Some(&json!({"kind": "orphan_sweep", "cluster": "acme/prod", "nodes": ["sweep"], "grace": "0s"})),
        )
        .await;
    assert_eq!(s, 202, "{job}");
    let done = w.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let ids: Vec<String> = w.state_all().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.contains(&a), "acme's orphan deleted");
    assert!(ids.contains(&d), "demo's orphan left alone");
    // And demo's own sweep takes demo's.
    let id = w
        .submit_ok(&json!({"kind": "orphan_sweep", "cluster": "default/demo", "grace": "0s"}))
        .await;
    assert_eq!(w.finished(&id).await["state"], "succeeded");
    let s = w.state().await;
    assert!(by_name(&s["servers"], "d-orphan-1").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_that_do_not_work_fail_preflight_naming_the_secret() {
    let w = World::start();
    let secrets = w.secrets("acme").await;
    let secret = secrets.get("prod-cloud-config").await.unwrap();
    let text = String::from_utf8(secret.data.as_ref().unwrap()["clouds.yaml"].0.clone()).unwrap();
    let wrong = text.replace("acme-secret", "not-the-password");
    assert_ne!(wrong, text, "the Secret holds acme's password");
    secrets
        .patch(
            "prod-cloud-config",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"clouds.yaml": wrong}})),
        )
        .await
        .unwrap();
    let (s, body) = w
        .call(
            Method::POST,
            "/v1/jobs",
            EVE,
            Some(&acme_request(&["eve-x-1"])),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    let why = fields(&body).join("; ");
    assert!(
        why.contains("Secret acme/prod-cloud-config: logging in as cloud `openstack` was refused"),
        "{why}"
    );
    assert!(!why.contains("not-the-password"), "no secret in the answer");
    secrets
        .delete("prod-cloud-config", &Default::default())
        .await
        .unwrap();
    let (s, body) = w
        .call(
            Method::POST,
            "/v1/jobs",
            EVE,
            Some(&acme_request(&["eve-x-1"])),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        fields(&body).join("; ").contains(
            "Secret acme/prod-cloud-config (identityRef of cluster acme/prod) does not exist"
        ),
        "{body}"
    );
    let jobs = w.call(Method::GET, "/v1/jobs", EVE, None).await.1;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0);
}

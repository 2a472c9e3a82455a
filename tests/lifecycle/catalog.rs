//! The read endpoints the portal builds its pages from: the clusters a principal may see
//! (`GET /v1/clusters`) and what a new worker of a cluster can be made of
//! (`GET /v1/clusters/{ns}/{name}/catalog`), read with that cluster's own credentials —
//! under the same tenancy rules as every other view.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{ADA, ALICE, DANA, EVE, TOKEN, World, request};

fn clusters(body: &Value) -> Vec<(String, String, usize)> {
    body["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap().to_string(),
                c["tenant"].as_str().unwrap().to_string(),
                c["workers"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_principal_lists_the_clusters_of_its_tenant_and_an_admin_lists_all() {
    let w = World::start();
    let demo = ("default/demo".to_string(), "demo".to_string(), 3);
    let acme = ("acme/prod".to_string(), "acme".to_string(), 2);
    for (token, expected) in [
        (TOKEN, vec![acme.clone(), demo.clone()]),
        (ALICE, vec![demo.clone()]),
        (DANA, vec![demo.clone()]),
        (EVE, vec![acme.clone()]),
        (ADA, vec![acme.clone()]),
    ] {
        let (s, body) = w.call(Method::GET, "/v1/clusters", token, None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(clusters(&body), expected, "{token}");
    }
    let (s, _) = w
        .call(Method::GET, "/v1/clusters", "nobody-token", None)
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_offers_what_the_clusters_own_credentials_see_and_its_choices_are_accepted() {
    let w = World::start();
    let (s, cat) = w
        .call(
            Method::GET,
            "/v1/clusters/default/demo/catalog",
            ALICE,
            None,
        )
        .await;
    assert_eq!(s, 200, "{cat}");
    let flavors: Vec<&str> = cat["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(flavors, ["k8s.small", "k8s.workload"]);
    assert_eq!(strings(&cat["images"]), ["ubuntu-2204-kube-v1.30"]);
    assert_eq!(strings(&cat["availability_zones"]), ["az1", "az2"]);
    let types = strings(&cat["volume_types"]);
    assert!(types.contains(&"ssd") && types.contains(&"hdd"), "{cat}");
    let nets: Vec<&str> = cat["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(
        nets.contains(&"demo-net") && nets.contains(&"public"),
        "{cat}"
    );
    assert!(
        !nets.contains(&"acme-net"),
        "another project's network: {cat}"
    );
    // demo's credentials have the admin role: they see the compute hosts by zone.
    assert_eq!(cat["hosts"].as_array().unwrap().len(), 4, "{cat}");
    assert!(
        cat["hosts"]
            .as_array()
            .unwrap()
            .contains(&json!({"zone": "az2", "host": "compute-3"}))
    );
    let fip = cat["floating_ips"][0]["address"].as_str().unwrap();
    assert!(fip.starts_with("172.35.0."), "{cat}");

    // What the catalog offers is what a scale_out accepts: host, floating IP and type.
    let node = json!({"name": "cat-w-1", "availability_zone": "az2", "host": "compute-3",
                      "floating_ip": fip, "roles": ["ingress"], "labels": {"team": "edge"},
                      "data_volumes": [{"name": "data", "size_gib": 10, "type": types[0]}]});
    let (s, job) = w
        .call(Method::POST, "/v1/jobs", ALICE, Some(&request(vec![node])))
        .await;
    assert_eq!(s, 202, "{job}");
    let done = w.finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    // The workers view shows what the node was made of.
    let (s, view) = w
        .call(Method::GET, "/v1/clusters/default/demo/nodes", ALICE, None)
        .await;
    assert_eq!(s, 200, "{view}");
    let made = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["machine"] == "cat-w-1")
        .expect("cat-w-1 in the view");
    assert_eq!(made["server"]["flavor"], "k8s.small", "{made}");
    assert_eq!(made["server"]["status"], "ACTIVE", "{made}");
    assert_eq!(made["server"]["host"], "compute-3", "{made}");
    assert_eq!(made["floating_ips"], json!([fip]), "{made}");
    assert_eq!(made["job"], job["id"], "{made}");
    // Its role (a Machine label) and its label (put on the Node), not the bookkeeping.
    assert_eq!(
        made["labels"],
        json!({"node-role.kubernetes.io/ingress": "", "team": "edge"}),
        "{made}"
    );
    assert_eq!(made["node_ready"]["status"], "True", "{made}");
    let volumes: Vec<(&str, &str)> = made["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["type"].as_str().unwrap()))
        .collect();
    assert!(volumes.contains(&("cat-w-1-data", types[0])), "{made}");
    assert!(volumes.contains(&("cat-w-1-root", "ssd")), "{made}");
    // The address it took is no longer offered.
    let (_, after) = w
        .call(
            Method::GET,
            "/v1/clusters/default/demo/catalog",
            ALICE,
            None,
        )
        .await;
    assert!(
        after["floating_ips"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["address"] != fip),
        "{after}"
    );

    // acme's member credentials: their own network, and no hosts (Nova's admin-only list).
    let (s, cat) = w
        .call(Method::GET, "/v1/clusters/acme/prod/catalog", EVE, None)
        .await;
    assert_eq!(s, 200, "{cat}");
    assert_eq!(cat["hosts"], Value::Null, "{cat}");
    let nets: Vec<&str> = cat["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(
        nets.contains(&"acme-net") && !nets.contains(&"demo-net"),
        "{cat}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_catalog_reads_as_a_cluster_that_does_not_exist() {
    let w = World::start();
    for (token, path, cluster) in [
        (ALICE, "/v1/clusters/acme/prod/catalog", "acme/prod"),
        (EVE, "/v1/clusters/default/demo/catalog", "default/demo"),
        (TOKEN, "/v1/clusters/default/ghost/catalog", "default/ghost"),
    ] {
        let (s, body) = w.call(Method::GET, path, token, None).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_eq!(body["error"], format!("cluster {cluster} not found"));
    }
    let (s, body) = w
        .call(
            Method::GET,
            "/v1/clusters/Default/demo/catalog",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "ns");
}

/// `GET /v1/clusters/default/demo/quota` as alice.
async fn quota(w: &World) -> Value {
    let (s, q) = w
        .call(Method::GET, "/v1/clusters/default/demo/quota", ALICE, None)
        .await;
    assert_eq!(s, 200, "{q}");
    q
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_shows_what_the_jobs_in_flight_will_still_take() {
    let w = World::start();
    assert_eq!(quota(&w).await["in_flight"]["instances"], 0);
    // Two nodes held at the quota wait: no room for an instance.
    let used = w.servers_used().await;
    w.quota(json!({"instances": used})).await;
    let nodes: Vec<Value> = (1..=2)
        .map(|i| json!({"name": format!("held-w-{i}"), "floating_ip": true}))
        .collect();
    let (s, job) = w
        .call(Method::POST, "/v1/jobs", ALICE, Some(&request(nodes)))
        .await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    w.until_event(id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let q = quota(&w).await;
    // k8s.small is 2 vCPU and 4096 MiB; each node a 20 GiB root volume and a floating IP.
    assert_eq!(
        q["in_flight"],
        json!({"instances": 2, "cores": 4, "ram": 8192, "volumes": 2, "gigabytes": 40,
               "port": 2, "floatingip": 2}),
        "{q}"
    );
    w.quota(json!({"instances": used + 50})).await;
    let done = w.finished(id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(
        quota(&w).await["in_flight"]["instances"],
        0,
        "made: now in `used`"
    );
}

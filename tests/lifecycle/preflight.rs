//! Preflight against what the real cloud refuses late: a node's keypair (Nova: 400 "Invalid
//! key_name provided." at server create) and its security groups (CAPO stops before the
//! ports) must exist, checked with the cluster's own credentials at submit.

use serde_json::json;

use crate::common::{World, request};

/// A worker of the demo cluster with an SSH key and security groups.
fn worker(name: &str, key: &str, groups: &[&str]) -> serde_json::Value {
    json!({"name": name, "availability_zone": "az1", "ssh_key": key, "security_groups": groups})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_keypair_or_security_group_is_refused_at_submit_and_nothing_is_made() {
    let w = World::start();
    let before = w.state().await["servers"].as_array().unwrap().len();
    let (status, body) = w
        .submit(&request(vec![worker(
            "demo-w-40",
            "nobodys-key",
            &["default", "k8s-workers"],
        )]))
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<(&str, &str)> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "nodes[0].ssh_key",
                "keypair nobodys-key does not exist for the cluster's OpenStack user"
            ),
            (
                "nodes[0].security_groups[1]",
                "security group k8s-workers does not exist in the project"
            ),
        ]
    );
    let jobs = w.get("/v1/jobs").await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "no job stored");
    assert!(
        w.machines()
            .await
            .get_opt("demo-w-40")
            .await
            .unwrap()
            .is_none(),
        "no Machine"
    );
    let s = w.state().await;
    assert_eq!(s["servers"].as_array().unwrap().len(), before, "no server");
    assert!(
        s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "demo-w-40-0"),
        "no port"
    );

    // The demo user's own keypair and the project's default group: the node is made with
    // them, and Nova took the key.
    let id = w
        .submit_ok(&request(vec![worker(
            "demo-w-41",
            "demo-key",
            &["default"],
        )]))
        .await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let s = w.state().await;
    let server = s["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "demo-w-41")
        .expect("the node's server");
    assert_eq!(server["key_name"], "demo-key");

    // Another project's keypair and security group do not count, although the demo
    // cluster's credentials (admin role in demo) list every project's groups.
    // acme's user in project acme (the simulator's second tenant).
    let acme = w.os_login("capstan-sim-acme").await;
    for (path, body) in [
        (
            "/compute/v2.1/os-keypairs",
            json!({"keypair": {"name": "acme-key", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhYg acme"}}),
        ),
        (
            "/networking/v2.0/security-groups",
            json!({"security_group": {"name": "acme-web"}}),
        ),
    ] {
        let resp = w
            .http
            .post(format!("{}{path}", w.console.url))
            .header("X-Auth-Token", &acme)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
    let (status, body) = w
        .submit(&request(vec![worker(
            "demo-w-42",
            "acme-key",
            &["acme-web"],
        )]))
        .await;
    assert_eq!(status, 422, "{body}");
    let fields = crate::refused_fields(&body);
    assert_eq!(fields, ["nodes[0].ssh_key", "nodes[0].security_groups[0]"]);
}

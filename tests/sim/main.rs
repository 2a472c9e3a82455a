//! Conformance of the simulated cloud's OpenStack side: `capstan sim` runs as a process, and
//! the `openstack` crate — the client production uses — authenticates with what its
//! `clouds.yaml` says and reads the demo cloud as it would a real one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use openstack::auth::Password;
use openstack::{ErrorKind, IdOrName};
use serde_json::Value;

struct SimProcess {
    child: Child,
    url: String,
    clouds_yaml: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim() -> SimProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_once("listening on ")
        .expect("the sim says where it listens")
        .1
        .trim()
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    SimProcess {
        child,
        url,
        clouds_yaml: dir.path().join("clouds.yaml"),
        _dir: dir,
    }
}

/// The `capstan-sim` entry of the written clouds.yaml, as a client would read it.
fn cloud_entry(sim: &SimProcess) -> serde_yaml::Value {
    let text = std::fs::read_to_string(&sim.clouds_yaml).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["clouds"]["capstan-sim"].clone()
}

async fn login(sim: &SimProcess, password: &str) -> openstack::Result<openstack::Cloud> {
    let auth = &cloud_entry(sim)["auth"];
    let s = |k: &str| auth[k].as_str().unwrap().to_string();
    let pw = Password::new(
        s("auth_url"),
        s("username"),
        password,
        s("user_domain_name"),
    )?
    .with_project_scope(
        IdOrName::Name(s("project_name")),
        IdOrName::Name(s("project_domain_name")),
    );
    openstack::Cloud::new(pw).await
}

#[tokio::test]
async fn the_openstack_crate_reads_the_demo_cloud_through_its_clouds_yaml() {
    let sim = start_sim();
    let entry = cloud_entry(&sim);
    assert_eq!(
        entry["auth"]["auth_url"].as_str().unwrap(),
        format!("{}/identity/v3", sim.url)
    );
    assert_eq!(entry["region_name"].as_str(), Some("RegionOne"));
    let password = entry["auth"]["password"].as_str().unwrap().to_string();
    let cloud = login(&sim, &password)
        .await
        .expect("password auth with project scope");

    let mut flavors: Vec<String> = cloud
        .list_flavors()
        .await
        .unwrap()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    flavors.sort();
    assert_eq!(flavors, vec!["k8s.small", "k8s.workload"]);
    // By name: the crate tries the name as an ID, gets a 404, and falls back to the list.
    let workload = cloud.get_flavor("k8s.workload").await.unwrap();
    assert_eq!((workload.vcpu_count(), workload.ram_size()), (4, 8192));

    let images = cloud.list_images().await.unwrap();
    assert_eq!(
        images.iter().map(|i| i.name().clone()).collect::<Vec<_>>(),
        vec!["ubuntu-2204-kube-v1.30"]
    );
    let image = cloud.get_image("ubuntu-2204-kube-v1.30").await.unwrap();
    assert_eq!(image.id(), images[0].id());

    let net = cloud.get_network("demo-net").await.unwrap();
    let subnets = cloud.list_subnets().await.unwrap();
    let demo_subnet = subnets
        .iter()
        .find(|s| s.network_id() == net.id())
        .expect("demo-net has a subnet");
    assert_eq!(demo_subnet.cidr().to_string(), "10.6.0.0/24");
    let mut networks: Vec<String> = cloud
        .list_networks()
        .await
        .unwrap()
        .iter()
        .filter_map(|n| n.name().clone())
        .collect();
    networks.sort();
    assert_eq!(networks, vec!["demo-net", "public"]);
    assert_eq!(
        cloud.get_network("no-such-net").await.unwrap_err().kind(),
        ErrorKind::ResourceNotFound
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_login() {
    let sim = start_sim();
    let err = login(&sim, "not-the-password").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
}

/// What a generic HTTP client sees: a token from Keystone, then the catalog's services,
/// including the admin-only and the Cinder calls the `openstack` crate does not wrap.
#[tokio::test]
async fn keystone_tokens_open_the_catalog_services_and_paging_follows_limit_and_marker() {
    let sim = start_sim();
    let entry = cloud_entry(&sim);
    let http = reqwest::Client::new();
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": entry["auth"]["username"].as_str().unwrap(), "domain": {"name": "Default"},
            "password": entry["auth"]["password"].as_str().unwrap()}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}});
    let resp = http
        .post(format!("{}/identity/v3/auth/tokens", sim.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let issued: Value = resp.json().await.unwrap();
    let types: Vec<&str> = issued["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["identity", "compute", "network", "block-storage", "image"]
    );

    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let r = http
                .get(path)
                .header("x-auth-token", token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, hv) = get(format!("{}/compute/v2.1/os-hypervisors/detail", sim.url)).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = hv["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hypervisor_hostname"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["compute-1", "compute-2", "compute-3", "compute-4"]
    );
    let (_, az) = get(format!(
        "{}/compute/v2.1/os-availability-zone/detail",
        sim.url
    ))
    .await;
    assert!(
        az["availabilityZoneInfo"][0]["hosts"]["compute-1"].is_object(),
        "{az}"
    );
    let (_, types) = get(format!("{}/volume/v3/types", sim.url)).await;
    let names: Vec<&str> = types["volume_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ssd", "hdd"]);
    let (_, limits) = get(format!("{}/compute/v2.1/limits", sim.url)).await;
    assert_eq!(limits["limits"]["absolute"]["maxTotalInstances"], 50);

    // limit/marker paging, ending with an empty page (what the crate waits for).
    let (_, p1) = get(format!("{}/compute/v2.1/flavors?limit=1", sim.url)).await;
    let first = p1["flavors"][0]["id"].as_str().unwrap().to_string();
    let (_, p2) = get(format!(
        "{}/compute/v2.1/flavors?limit=2&limit=1&marker={first}",
        sim.url
    ))
    .await;
    assert_eq!(
        p2["flavors"].as_array().unwrap().len(),
        1,
        "the last repeated limit wins"
    );
    let second = p2["flavors"][0]["id"].as_str().unwrap();
    assert_ne!(second, first);
    let (_, p3) = get(format!(
        "{}/compute/v2.1/flavors?limit=1&marker={second}",
        sim.url
    ))
    .await;
    assert_eq!(p3["flavors"], serde_json::json!([]));

    // Without a token: 401.
    let r = http
        .get(format!("{}/compute/v2.1/flavors", sim.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

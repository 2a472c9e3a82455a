//! Conformance of the simulated cloud's OpenStack side: `capstan sim` runs as a process, and
//! the `openstack` crate — the client production uses — authenticates with what its
//! `clouds.yaml` says and reads the demo cloud as it would a real one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use openstack::auth::Password;
use openstack::network::PortIpRequest;
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
    start_sim_with(None)
}

/// Starts `capstan sim`, on the demo cloud or on the given scenario text.
fn start_sim_with(scenario: Option<&str>) -> SimProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path());
    if let Some(text) = scenario {
        let path = dir.path().join("scenario.yaml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--scenario").arg(path);
    }
    let mut child = cmd
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

/// Starts the simulator on `scenario` and logs in as its `clouds.yaml` says.
async fn sim_and_login(scenario: &str) -> (SimProcess, openstack::Cloud) {
    let sim = start_sim_with(Some(scenario));
    let password = cloud_entry(&sim)["auth"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let cloud = login(&sim, &password).await.unwrap();
    (sim, cloud)
}

/// The demo scenario from the repository, for variations of it.
const DEMO: &str = include_str!("../../scenarios/demo.yaml");

#[tokio::test]
async fn ports_and_floating_ips_check_addresses_and_quota_as_neutron_does() {
    // Room for two ports and one floating IP.
    let scenario = DEMO.replace("ports: 200, floatingip: 50", "ports: 2, floatingip: 1");
    let (sim, cloud) = sim_and_login(&scenario).await;
    let net = cloud.get_network("demo-net").await.unwrap();
    let subnet = cloud
        .list_subnets()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.network_id() == net.id())
        .unwrap();
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    // A port asking for an exact address on demo-subnet.
    let port_at = |address: &str| {
        cloud
            .new_port(net.id().clone())
            .with_name("demo-w-01-0")
            .with_fixed_ip(PortIpRequest::IpFromSubnet(
                ip(address),
                subnet.id().clone().into(),
            ))
            .create()
    };

    // A port with an exact fixed IP on the subnet.
    let port = port_at("10.6.0.21").await.unwrap();
    assert_eq!(port.fixed_ips()[0].ip_address, ip("10.6.0.21"));
    assert_eq!(&port.fixed_ips()[0].subnet_id, subnet.id());

    // The same IP again: Neutron's 409 with its own text.
    let taken = port_at("10.6.0.21").await.unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict);
    assert!(
        taken.to_string().contains(&format!(
            "IP address 10.6.0.21 already allocated in subnet {}",
            subnet.id()
        )),
        "{taken}"
    );
    // An IP outside the subnet: 400.
    let outside = port_at("10.7.0.5").await.unwrap_err();
    assert_eq!(outside.kind(), ErrorKind::InvalidInput);
    assert!(
        outside
            .to_string()
            .contains("IP address 10.7.0.5 is not a valid IP for the specified subnet."),
        "{outside}"
    );

    // Any free address; then the quota (2 ports) is spent.
    let second = cloud.new_port(net.id().clone()).create().await.unwrap();
    assert_eq!(
        second.fixed_ips()[0].ip_address,
        ip("10.6.0.2"),
        "the gateway (.1) is never handed out"
    );
    let over = cloud.new_port(net.id().clone()).create().await.unwrap_err();
    assert_eq!(over.kind(), ErrorKind::Conflict);
    assert!(
        over.to_string()
            .contains("Quota exceeded for resources: ['port']."),
        "{over}"
    );

    // A floating IP with an exact address from the external network, associated to the port.
    let public = cloud.get_network("public").await.unwrap();
    let mut fip = cloud
        .new_floating_ip(public.id().clone())
        .with_floating_ip_address(ip("172.35.0.50"))
        .create()
        .await
        .unwrap();
    assert_eq!(fip.floating_ip_address(), ip("172.35.0.50"));
    fip.associate(port.id().clone(), None).await.unwrap();
    assert_eq!(fip.fixed_ip_address(), Some(ip("10.6.0.21")));
    let over = cloud
        .new_floating_ip(public.id().clone())
        .create()
        .await
        .unwrap_err();
    assert!(
        over.to_string()
            .contains("Quota exceeded for resources: ['floatingip']."),
        "{over}"
    );

    // Usage as Neutron reports it, which Capstan's preflight reads.
    let token = raw_token(&sim).await;
    let project = token.1.clone();
    let details: Value = reqwest::Client::new()
        .get(format!(
            "{}/networking/v2.0/quotas/{project}/details",
            sim.url
        ))
        .header("x-auth-token", &token.0)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        details["quota"]["port"],
        serde_json::json!({"limit": 2, "used": 2, "reserved": 0})
    );
    assert_eq!(details["quota"]["floatingip"]["used"], 1);

    // Deleting the port leaves the floating IP allocated but unassociated, as Neutron does.
    port.delete().await.unwrap(); // the simulator deletes at once; no need to wait
    let fips = cloud.list_floating_ips().await.unwrap();
    assert_eq!(fips.len(), 1);
    assert!(!fips[0].is_associated());
}

/// A token and its project ID, from Keystone directly.
async fn raw_token(sim: &SimProcess) -> (String, String) {
    let entry = cloud_entry(sim);
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": entry["auth"]["username"].as_str().unwrap(), "domain": {"name": "Default"},
            "password": entry["auth"]["password"].as_str().unwrap()}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}});
    let resp = reqwest::Client::new()
        .post(format!("{}/identity/v3/auth/tokens", sim.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = resp.json().await.unwrap();
    (
        token,
        v["token"]["project"]["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn volumes_refuse_unknown_types_and_full_quotas_with_cinders_own_errors() {
    // Room for two volumes and 100 GiB.
    let scenario = DEMO.replace(
        "volumes: 100, gigabytes: 10000",
        "volumes: 2, gigabytes: 100",
    );
    let (sim, cloud) = sim_and_login(&scenario).await;

    let root = cloud
        .new_volume(20u64)
        .with_name("demo-w-01-root".to_string())
        .with_volume_type("ssd")
        .with_availability_zone("az1")
        .create()
        .await
        .unwrap();
    assert_eq!((root.size(), root.volume_type().as_str()), (20, "ssd"));
    let found = cloud.get_volume("demo-w-01-root").await.unwrap();
    assert_eq!(found.id(), root.id());

    let unknown = cloud
        .new_volume(10u64)
        .with_volume_type("ssd2")
        .create()
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::ResourceNotFound);
    assert!(
        unknown
            .to_string()
            .contains("Volume type with name ssd2 could not be found."),
        "{unknown}"
    );

    let too_big = cloud
        .new_volume(90u64)
        .with_volume_type("hdd")
        .create()
        .await
        .unwrap_err();
    assert!(
        too_big.to_string().contains(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. \
             Requested 90G, quota is 100G and 20G has been consumed."
        ),
        "{too_big}"
    );
    cloud
        .new_volume(50u64)
        .with_name("demo-w-01-data".to_string())
        .with_volume_type("hdd")
        .create()
        .await
        .unwrap();
    let third = cloud.new_volume(1u64).create().await.unwrap_err();
    assert!(
        third.to_string().contains("VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'."),
        "{third}"
    );

    // Usage, as the preflight reads it.
    let (token, project) = raw_token(&sim).await;
    let usage: Value = reqwest::Client::new()
        .get(format!(
            "{}/volume/v3/os-quota-sets/{project}?usage=true",
            sim.url
        ))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["quota_set"]["volumes"]["in_use"], 2);
    assert_eq!(usage["quota_set"]["gigabytes"]["in_use"], 70);
    assert_eq!(usage["quota_set"]["gigabytes"]["limit"], 100);

    // Deleting frees the quota.
    root.delete().await.unwrap();
    assert_eq!(
        cloud.get_volume("demo-w-01-root").await.unwrap_err().kind(),
        ErrorKind::ResourceNotFound
    );
    cloud.new_volume(10u64).create().await.unwrap();
}

/// The simulator's console: raising a quota while it runs lets a refused create succeed, and
/// `/sim/v1/state` shows the ground truth (what the seed's story needs: "the quota is raised
/// after a while").
#[tokio::test]
async fn quotas_change_at_runtime_and_the_state_shows_the_ground_truth() {
    let scenario = DEMO.replace("ports: 200, floatingip: 50", "ports: 1, floatingip: 50");
    let (sim, cloud) = sim_and_login(&scenario).await;
    let net = cloud.get_network("demo-net").await.unwrap();
    cloud
        .new_port(net.id().clone())
        .with_name("p-1")
        .create()
        .await
        .unwrap();
    let refused = cloud
        .new_port(net.id().clone())
        .with_name("p-2")
        .create()
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("Quota exceeded for resources: ['port'].")
    );

    let http = reqwest::Client::new();
    let bad = http
        .put(format!("{}/sim/v1/quotas/demo", sim.url))
        .body(r#"{"portz": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422, "an unknown quota name is refused");
    let raised: Value = http
        .put(format!("{}/sim/v1/quotas/demo", sim.url))
        .body(r#"{"ports": 3}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raised["quotas"]["ports"], 3);
    assert_eq!(
        raised["quotas"]["floatingip"], 50,
        "the quotas not named stay"
    );
    cloud
        .new_port(net.id().clone())
        .with_name("p-2")
        .create()
        .await
        .unwrap();

    let state: Value = http
        .get(format!("{}/sim/v1/state", sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ports: Vec<(&str, &str)> = state["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["fixed_ips"][0]["ip_address"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, vec![("p-1", "10.6.0.2"), ("p-2", "10.6.0.3")]);
    assert_eq!(state["volumes"], serde_json::json!([]));
}

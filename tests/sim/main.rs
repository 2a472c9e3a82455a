//! Conformance of the simulated cloud: `capstan sim` runs as a process; the `openstack`
//! crate and kube-rs — the clients production uses — connect with the `clouds.yaml` and
//! `kubeconfig` it writes and use it as they would a real cloud (Kubernetes side and the
//! CAPI/CAPO behaviours in `k8s.rs`).

use std::time::Duration;

use openstack::auth::Password;
use openstack::block_storage::VolumeStatus;
use openstack::compute::{BlockDevice, ServerStatus};
use openstack::network::PortIpRequest;
use openstack::waiter::Waiter;
use openstack::{ErrorKind, IdOrName};
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;
mod k8s;
mod tenants;

use common::process::{Sim, kube_client};

fn start_sim() -> Sim {
    start_sim_with(None)
}

/// Starts `capstan sim`, on the demo cloud or on the given scenario text.
fn start_sim_with(scenario: Option<&str>) -> Sim {
    start_sim_args(scenario, &[])
}

fn start_sim_args(scenario: Option<&str>, extra: &[&std::ffi::OsStr]) -> Sim {
    // 500 simulated seconds a second: a server's 20 s boot takes 40 ms.
    Sim::start(500, scenario, extra)
}

/// The `capstan-sim` entry of the written clouds.yaml, as a client would read it.
fn cloud_entry(sim: &Sim) -> serde_yaml::Value {
    let text = std::fs::read_to_string(&sim.clouds_yaml).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["clouds"]["capstan-sim"].clone()
}

async fn login(sim: &Sim, password: &str) -> openstack::Result<openstack::Cloud> {
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
    // demo's user is an admin: Neutron lists every project's networks to an admin.
    assert_eq!(networks, vec!["acme-net", "demo-net", "public"]);
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
    assert_eq!(names, vec!["ssd", "hdd", "__DEFAULT__"]);
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
async fn sim_and_login(scenario: &str) -> (Sim, openstack::Cloud) {
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

/// The demo cloud without its CAPI cluster: nothing in use, for the OpenStack API tests.
static BARE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| DEMO[..DEMO.find("\nclusters:").unwrap()].to_string());

#[tokio::test]
async fn ports_and_floating_ips_check_addresses_and_quota_as_neutron_does() {
    // Room for two ports and one floating IP.
    let scenario = BARE.replace("ports: 200, floatingip: 50", "ports: 2, floatingip: 1");
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
async fn raw_token(sim: &Sim) -> (String, String) {
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

/// The lab mode: one simulator's OpenStack registers the Nodes of its booted servers in
/// another Kubernetes API server (here another simulator's workload cluster, over HTTP as
/// it would the lab's real apiserver), and removes them when the servers go.
#[tokio::test]
async fn with_an_external_apiserver_booted_servers_register_their_nodes_there() {
    let host = start_sim();
    let client = kube_client(&host.kubeconfig).await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    let secret = secrets.get("demo-kubeconfig").await.unwrap();
    let workload = host.kubeconfig.with_file_name("workload.kubeconfig");
    std::fs::write(&workload, &secret.data.unwrap()["value"].0).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(kube_client(&workload).await);
    let before = nodes.list(&Default::default()).await.unwrap().items.len();

    let lab = start_sim_args(None, &["--external-kube".as_ref(), workload.as_os_str()]);
    // The lab-mode simulator seeds no cluster of its own: no server exists until asked.
    let (token, _) = raw_token(&lab).await;
    let compute = format!("{}/compute/v2.1", lab.url);
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            http.get(path)
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        get(format!("{compute}/servers")).await["servers"],
        json!([])
    );
    let flavor = get(format!("{compute}/flavors")).await["flavors"][0]["id"].clone();
    let image = get(format!("{}/image/v2/images", lab.url)).await["images"][0]["id"].clone();
    let made: Value = http
        .post(format!("{compute}/servers"))
        .header("X-Auth-Token", &token)
        .json(
            &json!({"server": {"name": "lab-w-1", "flavorRef": flavor, "imageRef": image,
                                 "networks": "none", "availability_zone": "az2"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["server"]["id"].as_str().unwrap().to_string();
    let node = k8s::eventually("the Node registered", || async {
        nodes.get_opt("lab-w-1").await.ok().flatten()
    })
    .await;
    let spec = node.spec.unwrap();
    assert_eq!(
        spec.provider_id.as_deref(),
        Some(format!("openstack:///{id}").as_str())
    );
    let ready = k8s::eventually("the Node Ready", || async {
        let n = nodes.get("lab-w-1").await.ok()?;
        n.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        before + 1
    );
    let resp = http
        .delete(format!("{compute}/servers/{id}"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    k8s::eventually("the Node removed with its server", || async {
        nodes
            .get_opt("lab-w-1")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
}

/// What real CAPO v0.14.7 (gophercloud) needed from the simulated OpenStack in the lab
/// (lab/NOTES.md): version roots with gophercloud's trailing slash and without a token,
/// Neutron list filters on any attribute, port tags, Nova's microversion headers, and
/// Cinder's timestamp layout.
#[tokio::test]
async fn the_apis_answer_as_gophercloud_expects_them_to() {
    let sim = start_sim();
    let http = reqwest::Client::new();
    for root in [
        "/networking/",
        "/networking",
        "/compute/v2.1/",
        "/image/",
        "/volume/v3/",
    ] {
        let resp = http.get(format!("{}{root}", sim.url)).send().await.unwrap();
        // Glance lists its versions with 300 Multiple Choices, as the real one does.
        let want = if root == "/image/" { 300 } else { 200 };
        assert_eq!(resp.status(), want, "GET {root} without a token");
        let doc: Value = resp.json().await.unwrap();
        assert!(
            doc["versions"].is_array() || doc["version"].is_object(),
            "{root}: {doc}"
        );
    }
    let (token, _) = raw_token(&sim).await;
    let get = |path: &str| {
        http.get(format!("{}{path}", sim.url))
            .header("X-Auth-Token", &token)
            .header("OpenStack-API-Version", "compute 2.60")
    };
    // Nova names the microversion it answered with.
    let resp = get("/compute/v2.1/flavors").send().await.unwrap();
    assert_eq!(resp.headers()["openstack-api-version"], "compute 2.60");
    assert_eq!(resp.headers()["x-openstack-nova-api-version"], "2.60");
    // A port list filtered by ID has that port alone; tags replace and filter.
    let ports: Value = get("/networking/v2.0/ports")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = ports["ports"].as_array().unwrap();
    assert!(all.len() >= 3, "{ports}");
    let id = all[1]["id"].as_str().unwrap();
    let one: Value = get(&format!("/networking/v2.0/ports?id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["ports"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["ports"][0]["id"], id);
    let resp = http
        .put(format!("{}/networking/v2.0/ports/{id}/tags", sim.url))
        .header("X-Auth-Token", &token)
        .json(&json!({"tags": ["capstan", "team-a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tagged: Value = get("/networking/v2.0/ports?tags=capstan,team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tagged["ports"].as_array().unwrap().len(), 1, "{tagged}");
    assert_eq!(tagged["ports"][0]["tags"], json!(["capstan", "team-a"]));
    // Cinder's timestamps: microseconds, no zone.
    let made: Value = http
        .post(format!("{}/volume/v3/volumes", sim.url))
        .header("X-Auth-Token", &token)
        .json(&json!({"volume": {"name": "stamp-1", "size": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = made["volume"]["created_at"].as_str().unwrap().to_string();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&created, "%Y-%m-%dT%H:%M:%S%.6f").is_ok()
            && !created.ends_with('Z'),
        "{created}"
    );
}

#[tokio::test]
async fn volumes_refuse_unknown_types_and_full_quotas_with_cinders_own_errors() {
    // Room for two volumes and 100 GiB.
    let scenario = BARE.replace(
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
    let scenario = BARE.replace("ports: 200, floatingip: 50", "ports: 1, floatingip: 50");
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

/// A Nova call with a raw token, for what the `openstack` crate does not read (`fault`, the
/// admin attributes) or cannot send; answers the status and the body.
async fn nova(
    sim: &Sim,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/compute/v2.1{path}", sim.url))
        .header("x-auth-token", token)
        .header("x-openstack-nova-api-version", "2.60");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `GET /servers/{id}` until it leaves BUILD; the simulated boot is 40 ms.
async fn settled(sim: &Sim, token: &str, id: &str) -> Value {
    for _ in 0..100 {
        let (_, v) = nova(
            sim,
            token,
            reqwest::Method::GET,
            &format!("/servers/{id}"),
            None,
        )
        .await;
        if v["server"]["status"] != "BUILD" {
            return v["server"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server {id} stayed in BUILD");
}

const QUICK: Duration = Duration::from_millis(20);
const PATIENCE: Duration = Duration::from_secs(10);

/// A worker the way CAPO makes one: a pre-created port with a fixed IP, a root volume Nova
/// creates from the image, a data volume created beforehand. It builds, becomes ACTIVE, gets
/// a floating IP, and on delete gives back the port (unbound) and the data volume (available)
/// while its root volume goes with it.
#[tokio::test]
async fn a_server_boots_from_volume_on_its_own_port_and_delete_gives_back_what_it_did_not_create() {
    let (sim, cloud) = sim_and_login(&BARE).await;
    let net = cloud.get_network("demo-net").await.unwrap();
    let subnet = cloud
        .list_subnets()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.network_id() == net.id())
        .unwrap();
    let fixed: std::net::IpAddr = "10.6.0.21".parse().unwrap();
    let port = cloud
        .new_port(net.id().clone())
        .with_name("demo-w-01-0")
        .with_fixed_ip(PortIpRequest::IpFromSubnet(
            fixed,
            subnet.id().clone().into(),
        ))
        .create()
        .await
        .unwrap();
    let data = cloud
        .new_volume(50u64)
        .with_name("demo-w-01-data".to_string())
        .with_volume_type("hdd")
        .create()
        .await
        .unwrap();
    let flavor = cloud.get_flavor("k8s.small").await.unwrap();
    let image = cloud.get_image("ubuntu-2204-kube-v1.30").await.unwrap();

    let mut root = BlockDevice::from_new_volume(image.id().clone(), 20, true);
    root.delete_on_termination = true;
    let waiter = cloud
        .new_server("demo-w-01", flavor)
        .with_port(port.id().clone())
        .with_block_device(root)
        .with_block_device(BlockDevice::from_volume(data.id().clone(), false))
        .with_availability_zone("az1")
        .with_metadata("cluster", "demo")
        .create()
        .await
        .unwrap();
    assert_eq!(waiter.current_state().status(), ServerStatus::Building);
    let server = waiter.wait_for_with_delay(PATIENCE, QUICK).await.unwrap();
    assert_eq!(server.status(), ServerStatus::Active);
    assert_eq!(server.name(), "demo-w-01");
    assert_eq!(server.availability_zone(), "az1");
    assert!(!server.has_image(), "booted from a volume: no image");
    assert_eq!(
        server.metadata().get("cluster").map(String::as_str),
        Some("demo")
    );
    let addrs = &server.addresses()["demo-net"];
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].addr, fixed);
    assert!(
        addrs[0]
            .mac_addr
            .as_deref()
            .unwrap()
            .eq_ignore_ascii_case(&port.mac_address().to_string())
    );

    // Nova bound the port, attached both volumes and created the root one from the image.
    let bound = cloud.get_port(port.id()).await.unwrap();
    assert_eq!(bound.device_id().as_deref(), Some(server.id().as_str()));
    assert_eq!(bound.device_owner().as_deref(), Some("compute:az1"));
    let volumes = cloud.list_volumes().await.unwrap();
    assert_eq!(volumes.len(), 2);
    for v in &volumes {
        assert_eq!(v.status(), VolumeStatus::InUse, "{}", v.id());
        assert_eq!(&v.attachments()[0].server_id, server.id());
    }
    let root_volume = volumes.iter().find(|v| v.id() != data.id()).unwrap();
    assert_eq!((root_volume.size(), root_volume.bootable()), (20, true));
    assert_eq!(root_volume.attachments()[0].device, "/dev/vda");

    // Raw: the admin view names the host, the volumes, and what the hypervisor now carries.
    let (token, _) = raw_token(&sim).await;
    let raw = settled(&sim, &token, server.id()).await;
    let host = raw["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    assert!(
        host == "compute-1" || host == "compute-2",
        "{host} is in az1"
    );
    assert_eq!(raw["image"], "");
    assert_eq!(
        raw["os-extended-volumes:volumes_attached"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(raw.get("fault").is_none());
    let (_, hv) = nova(
        &sim,
        &token,
        reqwest::Method::GET,
        "/os-hypervisors/detail",
        None,
    )
    .await;
    let mine = hv["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hypervisor_hostname"] == host.as_str())
        .unwrap();
    assert_eq!(
        (mine["vcpus_used"].as_i64(), mine["memory_mb_used"].as_i64()),
        (Some(2), Some(4096))
    );
    assert_eq!(mine["running_vms"], 1);

    // A floating IP on its port shows among its addresses.
    let public = cloud.get_network("public").await.unwrap();
    let mut fip = cloud
        .new_floating_ip(public.id().clone())
        .create()
        .await
        .unwrap();
    fip.associate(port.id().clone(), None).await.unwrap();
    let mut server = cloud.get_server(server.id()).await.unwrap();
    assert_eq!(server.floating_ip(), Some(fip.floating_ip_address()));

    // Stop and start, as the status waiters see it; starting a running server conflicts.
    server
        .stop()
        .await
        .unwrap()
        .wait_for_with_delay(PATIENCE, QUICK)
        .await
        .unwrap();
    assert_eq!(server.status(), ServerStatus::ShutOff);
    server
        .start()
        .await
        .unwrap()
        .wait_for_with_delay(PATIENCE, QUICK)
        .await
        .unwrap();
    let (status, body) = nova(
        &sim,
        &token,
        reqwest::Method::POST,
        &format!("/servers/{}/action", server.id()),
        Some(json!({"os-start": null})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["conflictingRequest"]["message"],
        format!(
            "Cannot 'start' instance {} while it is in vm_state active",
            server.id()
        )
    );

    let id = server.id().clone();
    server
        .delete()
        .await
        .unwrap()
        .wait_for_with_delay(PATIENCE, QUICK)
        .await
        .unwrap();
    assert_eq!(
        cloud.get_server(&id).await.unwrap_err().kind(),
        ErrorKind::ResourceNotFound
    );
    let (status, _) = nova(
        &sim,
        &token,
        reqwest::Method::GET,
        &format!("/servers/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let freed = cloud.get_port(port.id()).await.unwrap();
    assert!(
        freed.device_id().as_deref().unwrap_or_default().is_empty(),
        "the port is unbound"
    );
    let fip = cloud.get_floating_ip(fip.id()).await.unwrap();
    assert_eq!(
        fip.fixed_ip_address(),
        Some(fixed),
        "the floating IP stays on the port"
    );
    let volumes = cloud.list_volumes().await.unwrap();
    assert_eq!(
        volumes.len(),
        1,
        "the root volume was deleted on termination"
    );
    assert_eq!(volumes[0].id(), data.id());
    assert_eq!(volumes[0].status(), VolumeStatus::Available);
}

/// What a scale-out meets when the cloud is full: a host with no room takes the server (202)
/// and it goes ERROR with Nova's "No valid host" fault; a full quota refuses at once with
/// Nova's 403 and text; usage and paging follow the servers.
#[tokio::test]
async fn full_hosts_and_full_quotas_fail_as_nova_does() {
    let scenario = BARE.replace(
        "{name: compute-4, availability_zone: az2, vcpus: 64, memory_mib: 262144}",
        "{name: compute-4, availability_zone: az2, vcpus: 2, memory_mib: 4096}",
    );
    let (sim, cloud) = sim_and_login(&scenario).await;
    let (token, project) = raw_token(&sim).await;
    let small = cloud.get_flavor("k8s.small").await.unwrap();
    let workload = cloud.get_flavor("k8s.workload").await.unwrap();
    let image = cloud.get_image("ubuntu-2204-kube-v1.30").await.unwrap();
    let create = |name: &str, flavor: &str, az: &str| {
        json!({"server": {"name": name, "flavorRef": flavor, "imageRef": image.id(),
                          "availability_zone": az, "networks": "none"}})
    };
    let post = |body: Value| nova(&sim, &token, reqwest::Method::POST, "/servers", Some(body));

    // compute-4 has 2 vCPUs; a 4-vCPU server pinned there is accepted, then fails.
    let (status, body) = post(create("demo-w-big", workload.id(), "az2:compute-4")).await;
    assert_eq!(status, 202, "{body}");
    let big = body["server"]["id"].as_str().unwrap().to_string();
    let failed = settled(&sim, &token, &big).await;
    assert_eq!(failed["status"], "ERROR");
    assert_eq!(failed["fault"]["code"], 500);
    assert_eq!(failed["fault"]["message"], "No valid host was found. ");
    assert!(failed["fault"]["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(failed["OS-EXT-SRV-ATTR:host"], Value::Null);
    // The crate's waiter sees the same ERROR.
    let err = cloud
        .new_server("demo-w-big-2", workload.clone())
        .with_image(image.id().clone())
        .with_availability_zone("az2:compute-4")
        .create()
        .await
        .unwrap()
        .wait_for_with_delay(PATIENCE, QUICK)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OperationFailed);

    // Zones and hosts that do not exist are refused at once.
    let (status, body) = post(create("x", small.id(), "az9")).await;
    assert_eq!(
        (status, body["badRequest"]["message"].as_str()),
        (
            400,
            Some("The requested availability zone is not available")
        )
    );
    let (status, body) = post(create("x", small.id(), "az2:compute-9")).await;
    assert_eq!(
        (status, body["badRequest"]["message"].as_str()),
        (400, Some("Compute host compute-9 could not be found."))
    );
    // Nova's schema allows no `/` in a metadata key (the lab's real Nova refused one; with
    // one such key jsonschema says "does", with several "do").
    let mut slashed = create("x", small.id(), "az2");
    slashed["server"]["metadata"] = json!({"capstan.io/cluster": "default/demo", "ok:key": "v"});
    let (status, body) = post(slashed).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["badRequest"]["message"],
        "Invalid input for field/attribute metadata. Value: {'capstan.io/cluster': \
         'default/demo', 'ok:key': 'v'}. 'capstan.io/cluster' does not match any of the regexes: \
         '^[a-zA-Z0-9-_:. ]{1,255}$'"
    );

    // Three servers while the quota allows three instances: the fourth is refused.
    let http = reqwest::Client::new();
    let set_quota = |q: Value| {
        let http = http.clone();
        let url = format!("{}/sim/v1/quotas/demo", sim.url);
        async move {
            assert!(
                http.put(url)
                    .body(q.to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .is_success()
            )
        }
    };
    set_quota(json!({"instances": 3})).await;
    let (status, body) = post(create("demo-w-01", small.id(), "az1")).await;
    assert_eq!(
        (status, body["server"]["id"].is_string()),
        (202, true),
        "{body}"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/compute/v2.1/servers", sim.url))
        .header("x-auth-token", &token)
        .json(&create("demo-w-02", small.id(), "az1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"forbidden":{"code":403,"message":"Quota exceeded for instances: Requested 1, but already used 3 of 3 instances"}}"#
    );
    let refused = cloud
        .new_server("demo-w-02", small.clone())
        .with_image(image.id().clone())
        .create()
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AccessDenied);
    // Cores: 4 + 4 + 2 are used.
    set_quota(json!({"instances": 50, "cores": 11})).await;
    let (status, body) = post(create("demo-w-02", small.id(), "az1")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["forbidden"]["message"],
        "Quota exceeded for cores: Requested 2, but already used 10 of 11 cores"
    );

    let (_, limits) = nova(&sim, &token, reqwest::Method::GET, "/limits", None).await;
    let absolute = &limits["limits"]["absolute"];
    assert_eq!(
        (
            absolute["totalInstancesUsed"].as_i64(),
            absolute["totalCoresUsed"].as_i64()
        ),
        (Some(3), Some(10))
    );
    assert_eq!(absolute["totalRAMUsed"], 8192 + 8192 + 4096);
    let (_, quota) = nova(
        &sim,
        &token,
        reqwest::Method::GET,
        &format!("/os-quota-sets/{project}/detail"),
        None,
    )
    .await;
    assert_eq!(
        quota["quota_set"]["cores"],
        json!({"limit": 11, "in_use": 10, "reserved": 0})
    );

    // Paging, newest first, until the empty page the crate waits for.
    let page = |q: String| {
        let (sim, token) = (&sim, &token);
        async move {
            nova(
                sim,
                token,
                reqwest::Method::GET,
                &format!("/servers?{q}"),
                None,
            )
            .await
        }
    };
    let (_, p1) = page("limit=2".into()).await;
    let names: Vec<&str> = p1["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["demo-w-01", "demo-w-big-2"]);
    let (_, p2) = page(format!(
        "limit=2&marker={}",
        p1["servers"][1]["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(p2["servers"].as_array().unwrap().len(), 1);
    assert_eq!(p2["servers"][0]["id"], big.as_str());
    let (_, p3) = page(format!("limit=2&marker={big}")).await;
    assert_eq!(p3["servers"], json!([]));
    assert_eq!(cloud.list_servers().await.unwrap().len(), 3);
    let (_, by_name) = page("name=big".into()).await;
    assert_eq!(by_name["servers"].as_array().unwrap().len(), 2);
    let (_, errors) = page("status=ERROR".into()).await;
    assert_eq!(errors["servers"].as_array().unwrap().len(), 2, "{errors}");

    // The ground truth agrees.
    let state: Value = http
        .get(format!("{}/sim/v1/state", sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed_state = state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == big.as_str())
        .unwrap();
    assert_eq!(failed_state["status"], "ERROR");
    assert_eq!(failed_state["fault"]["code"], 500);
}

/// What python-openstackclient asks before `port create` and for `limits show --absolute`.
#[tokio::test]
async fn generic_clients_find_neutron_extensions_and_cinder_limits() {
    let sim = start_sim();
    let (token, _) = raw_token(&sim).await;
    let get = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", sim.url))
            .header("X-Auth-Token", &token)
            .send()
    };
    let ext: Value = get("/networking/v2.0/extensions")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ext["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["alias"] == "external-net")
    );
    let missing = get("/networking/v2.0/extensions/port-security")
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let limits: Value = get("/volume/v3/limits")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let absolute = &limits["limits"]["absolute"];
    assert_eq!(absolute["maxTotalVolumes"], 100);
    assert_eq!(absolute["totalVolumesUsed"], 0);
}

/// Keypairs belong to the user and security groups to the project, as in Nova and Neutron:
/// the demo user's `demo-key` is listed and a second import of its name is 409; the
/// project's `default` group lands on a port that asks for none; Cinder refuses a volume
/// from the image below its min_disk. (`tests/openstack` compares these with the real
/// services.)
#[tokio::test]
async fn keypairs_security_groups_and_min_disk_are_there_as_upstream_has_them() {
    let sim = start_sim();
    let (token, project) = raw_token(&sim).await;
    let (status, keys) = nova(&sim, &token, reqwest::Method::GET, "/os-keypairs", None).await;
    assert_eq!(status, 200);
    assert_eq!(keys["keypairs"][0]["keypair"]["name"], "demo-key", "{keys}");
    let again = json!({"keypair": {"name": "demo-key", "public_key":
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO7jpZy/y0BoJ50ukBbnEJ0bCiUgGF6HMM0PiyOoXcyf x"}});
    let (status, body) = nova(
        &sim,
        &token,
        reqwest::Method::POST,
        "/os-keypairs",
        Some(again),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["conflictingRequest"]["message"],
        "Key pair 'demo-key' already exists."
    );

    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http
            .get(format!("{}{path}", sim.url))
            .header("x-auth-token", &token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let groups = get(format!(
        "/networking/v2.0/security-groups?project_id={project}"
    ))
    .await;
    let names: Vec<&str> = groups["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default"]);
    let default = groups["security_groups"][0]["id"].clone();
    let net =
        get("/networking/v2.0/networks?name=demo-net".into()).await["networks"][0]["id"].clone();
    let port: Value = http
        .post(format!("{}/networking/v2.0/ports", sim.url))
        .header("x-auth-token", &token)
        .json(&json!({"port": {"network_id": net, "name": "p"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(port["port"]["security_groups"], json!([default]));

    let image = get("/image/v2/images".into()).await["images"][0]["id"].clone();
    let resp = http
        .post(format!("{}/volume/v3/volumes", sim.url))
        .header("x-auth-token", &token)
        .json(&json!({"volume": {"size": 5, "imageRef": image}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["badRequest"]["message"],
        "Invalid input received: Volume size 5GB cannot be smaller than the image minDisk size 10GB."
    );
}

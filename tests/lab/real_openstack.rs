//! Capstan against real OpenStack: the upstream lab with everything real but the kubelets —
//! Keystone, Nova (fake virt driver, compute-1..4), Placement, Neutron, Glance and Cinder of
//! `lab/openstack-up`, and kube-apiserver, CAPI v1.12 and CAPO v0.14 of `lab/up` with
//! `lab/demo --openstack real` (the sim's kubelets follow the real Nova).
//!
//! Needs both labs: `CAPSTAN_OPENSTACK_LAB_DIR` (the OpenStack lab's state directory) and
//! `CAPSTAN_LAB_DIR` (the Kubernetes lab whose demo points at it). Without them each test
//! says why it is skipped and passes. Run only this module against such a lab
//! (`cargo test --test lab real_openstack`): the rest of the lab suite drives the simulated
//! OpenStack's console. What the cloud holds is read through its own APIs, as the demo
//! project's user and as the cloud admin; every test removes what it made through Capstan
//! and checks that no server, port, volume or floating IP is left behind.
//!
//! The harness (start `capstan serve`, submit, wait for events) is tests/common's; the
//! real cloud is read through its own APIs here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use reqwest::Method;
use serde_json::{Value, json};

use super::common::api::Api as CapstanApi;
use super::common::process::{Process, SERVE_LISTENING, serve_command};

const TOKEN: &str = "real-os-test-token-0001";

/// One test at a time: the labs are one shared cloud.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A logged-in user of the real cloud: its token, project and public endpoints.
struct Cloud {
    http: reqwest::Client,
    token: String,
    project_id: String,
    endpoints: BTreeMap<String, String>,
}

impl Cloud {
    /// Keystone password login as entry `name` of the OpenStack lab's clouds.yaml.
    async fn login(clouds_yaml: &Path, name: &str) -> Cloud {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(clouds_yaml).unwrap()).unwrap();
        let auth = &doc["clouds"][name]["auth"];
        let s = |k: &str| auth[k].as_str().unwrap().to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s("username"), "domain": {"name": "Default"}, "password": s("password")}}},
            "scope": {"project": {"name": s("project_name"), "domain": {"name": "Default"}}}}});
        let resp = http
            .post(format!(
                "{}/auth/tokens",
                s("auth_url").trim_end_matches('/')
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "Keystone login as {name}");
        let token = resp.headers()["X-Subject-Token"]
            .to_str()
            .unwrap()
            .to_string();
        let doc: Value = resp.json().await.unwrap();
        let mut endpoints = BTreeMap::new();
        for svc in doc["token"]["catalog"].as_array().unwrap() {
            for e in svc["endpoints"].as_array().unwrap() {
                if e["interface"] == "public" {
                    endpoints.insert(
                        svc["type"].as_str().unwrap().to_string(),
                        e["url"].as_str().unwrap().trim_end_matches('/').to_string(),
                    );
                }
            }
        }
        Cloud {
            http,
            token,
            project_id: doc["token"]["project"]["id"].as_str().unwrap().to_string(),
            endpoints,
        }
    }

    /// One call; the status and the JSON body (Null when there is none).
    async fn call(
        &self,
        method: Method,
        service: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.endpoints[service]))
            .header("X-Auth-Token", &self.token);
        if service == "compute" {
            // Cinder refuses a version header for another service (400).
            req = req.header("OpenStack-API-Version", "compute 2.60");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, service: &str, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, service, path, None).await;
        assert_eq!(status, 200, "GET {service} {path}: {body}");
        body
    }

    async fn list(&self, service: &str, path: &str, key: &str) -> Vec<Value> {
        self.get(service, path).await[key]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// What the demo project holds on the real cloud, by kind: what a leak would change.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    servers: Vec<String>,
    ports: usize,
    volumes: Vec<String>,
    floating_ips: Vec<String>,
}

struct RealLab {
    k8s: PathBuf,
    demo: Cloud,
    admin: Cloud,
    os_dir: PathBuf,
    serve: Option<Process>,
    capstan: CapstanApi,
    db: tempfile::TempDir,
}

/// Both labs, or the reason to skip.
fn lab_dirs() -> Result<(PathBuf, PathBuf), String> {
    let os = std::env::var_os("CAPSTAN_OPENSTACK_LAB_DIR")
        .ok_or("CAPSTAN_OPENSTACK_LAB_DIR is not set (lab/openstack-up brings one up)")?;
    let k8s = std::env::var_os("CAPSTAN_LAB_DIR").ok_or(
        "CAPSTAN_LAB_DIR is not set (lab/up, then lab/demo --openstack real, bring one up)",
    )?;
    let (os, k8s) = (PathBuf::from(os), PathBuf::from(k8s));
    let pointed = std::fs::read_to_string(k8s.join("openstack-dir")).unwrap_or_default();
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if !same(Path::new(pointed.trim()), &os) {
        return Err(format!(
            "the Kubernetes lab at {} was not demo'd with --openstack real --openstack-dir {}",
            k8s.display(),
            os.display()
        ));
    }
    Ok((os, k8s))
}

impl RealLab {
    async fn start() -> Option<RealLab> {
        let (os_dir, k8s) = match lab_dirs() {
            Ok(d) => d,
            Err(why) => {
                println!("skipped: {why}");
                return None;
            }
        };
        let clouds = os_dir.join("clouds.yaml");
        let mut lab = RealLab {
            k8s,
            demo: Cloud::login(&clouds, "capstan-lab").await,
            admin: Cloud::login(&clouds, "capstan-lab-cloud-admin").await,
            os_dir,
            serve: None,
            // Bounded, so that a hanging Capstan fails the test instead of hanging it.
            capstan: CapstanApi::new("", TOKEN, Some(Duration::from_secs(180))),
            db: tempfile::tempdir().unwrap(),
        };
        lab.start_serve();
        Some(lab)
    }

    fn start_serve(&mut self) {
        let cmd = serve_command(
            self.db.path().join("capstan.db"),
            &self.k8s.join("kubeconfig"),
            TOKEN,
        );
        let (process, url) = Process::start(cmd, SERVE_LISTENING);
        self.serve = Some(process);
        self.capstan.url = url;
    }

    /// SIGKILL.
    fn kill_serve(&mut self) {
        self.serve = None;
    }

    async fn submit(&self, body: &Value) -> (u16, Value) {
        self.capstan.submit(body).await
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.capstan.get(path).await
    }

    /// The job's events, one line each, for a failure's message.
    async fn story(&self, id: &str) -> Vec<String> {
        self.capstan.story(id).await
    }

    /// Waits until the job is finished (bounded: real Nova boots in ~10 s, the Node joins
    /// 10 s later).
    async fn finished(&self, id: &str) -> Value {
        self.capstan.finished(id, 3000).await
    }

    /// The first event of the job `pred` accepts, waiting for it (bounded).
    async fn until_event(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.capstan.until_event(id, what, 1800, pred).await
    }

    /// Submits and waits for the job to succeed.
    async fn run(&self, body: &Value) -> Value {
        let (s, job) = self.submit(body).await;
        assert_eq!(s, 202, "{job}");
        let done = self.finished(job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
        done
    }

    /// Named deletes of `nodes` through Capstan.
    async fn delete(&self, nodes: &[&str]) {
        self.run(&json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": nodes}))
            .await;
    }

    async fn kube(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.k8s.join("kubeconfig")).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    async fn phase(&self, name: &str) -> Option<String> {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta2",
            "Machine",
        ));
        let machines: Api<DynamicObject> = Api::namespaced_with(self.kube().await, "default", &ar);
        let m = machines.get_opt(name).await.ok()??;
        m.data["status"]["phase"].as_str().map(str::to_string)
    }

    /// The demo project's servers (by name), ports, volumes and floating IPs, read as the
    /// cloud admin (so a server of any state, and every port, counts).
    async fn census(&self) -> Census {
        let p = &self.demo.project_id;
        let mut servers: Vec<String> = self
            .admin
            .list(
                "compute",
                &format!("/servers?all_tenants=1&project_id={p}"),
                "servers",
            )
            .await
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_string())
            .collect();
        servers.sort();
        let ports = self
            .admin
            .list("network", &format!("/v2.0/ports?project_id={p}"), "ports")
            .await
            .len();
        let mut volumes: Vec<String> = self
            .demo
            .list("volumev3", "/volumes/detail", "volumes")
            .await
            .iter()
            .map(|v| format!("{} {}", v["name"], v["status"]))
            .collect();
        volumes.sort();
        let mut floating_ips: Vec<String> = self
            .admin
            .list(
                "network",
                &format!("/v2.0/floatingips?project_id={p}"),
                "floatingips",
            )
            .await
            .iter()
            .map(|f| f["floating_ip_address"].as_str().unwrap().to_string())
            .collect();
        floating_ips.sort();
        Census {
            servers,
            ports,
            volumes,
            floating_ips,
        }
    }

    /// Nothing left behind: the census comes back to `before` (Nova and Cinder delete in
    /// the background, so it is read again for a while; the assertion is on the last read).
    async fn no_leaks(&self, before: &Census) {
        let mut now = self.census().await;
        for _ in 0..120 {
            if now == *before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            now = self.census().await;
        }
        assert_eq!(&now, before, "what the demo project holds after the test");
    }

    /// The demo project's server named `name`, as the admin sees it (host, fault).
    async fn server(&self, name: &str) -> Value {
        let p = &self.demo.project_id;
        let list = self
            .admin
            .list(
                "compute",
                &format!("/servers/detail?all_tenants=1&project_id={p}&name=^{name}$"),
                "servers",
            )
            .await;
        assert_eq!(list.len(), 1, "exactly one server {name}: {list:#?}");
        list[0].clone()
    }

    /// Sets the demo project's instance quota (the cloud admin's `os-quota-sets`).
    async fn instance_quota(&self, instances: usize) {
        let (s, body) = self
            .admin
            .call(
                Method::PUT,
                "compute",
                &format!("/os-quota-sets/{}", self.demo.project_id),
                Some(json!({"quota_set": {"instances": instances}})),
            )
            .await;
        assert_eq!(s, 200, "{body}");
    }

    /// The demo project's server count, as its quota counts them.
    async fn servers_used(&self) -> usize {
        self.census().await.servers.len()
    }

    /// A fixed address of demo-subnet that no port holds, from the top of the range (real
    /// IPAM hands out random ones).
    async fn free_address(&self, skip: &[&str]) -> String {
        for last in (200..=250).rev() {
            let ip = format!("10.6.0.{last}");
            if skip.contains(&ip.as_str()) {
                continue;
            }
            let held = self
                .admin
                .list(
                    "network",
                    &format!("/v2.0/ports?fixed_ips=ip_address%3D{ip}"),
                    "ports",
                )
                .await;
            if held.is_empty() {
                return ip;
            }
        }
        panic!("demo-subnet has no free address in 10.6.0.200-250");
    }

    /// The process group of one of the OpenStack lab's services (its DIR/pids line).
    fn service_group(&self, name: &str) -> i32 {
        let pids = std::fs::read_to_string(self.os_dir.join("pids")).unwrap();
        pids.lines()
            .find_map(|l| {
                let (n, pid) = l.split_once(' ')?;
                (n == name).then(|| pid.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in the OpenStack lab's pids"))
    }
}

fn node(name: &str, az: &str) -> Value {
    json!({"name": name, "availability_zone": az})
}

fn request(nodes: Vec<Value>) -> Value {
    json!({"kind": "scale_out", "cluster": "default/demo",
           "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                        "network": "demo-net", "subnet": "demo-subnet"},
           "nodes": nodes})
}

/// The address of a server's port on demo-net, and its floating IP if it has one.
fn addresses(server: &Value) -> (Option<String>, Option<String>) {
    let all: Vec<Value> = server["addresses"]["demo-net"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of = |kind: &str| {
        all.iter()
            .find(|a| a["OS-EXT-IPS:type"] == kind)
            .and_then(|a| a["addr"].as_str().map(str::to_string))
    };
    (of("fixed"), of("floating"))
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_as_specified_on_real_openstack_and_named_deletes_leave_nothing_behind() {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    let fixed = lab.free_address(&[]).await;
    let exact_fip = "172.35.0.77";
    let mut pinned = node("os-w-01", "az2");
    pinned["host"] = json!("compute-4");
    pinned["ip"] = json!(fixed);
    pinned["floating_ip"] = json!(true);
    pinned["root_volume"] = json!({"size_gib": 20, "type": "ssd"});
    pinned["data_volumes"] = json!([{"name": "data", "size_gib": 10, "type": "hdd"}]);
    let mut exact = node("os-w-02", "az1");
    exact["floating_ip"] = json!(exact_fip);
    lab.run(&request(vec![pinned, exact])).await;
    for n in ["os-w-01", "os-w-02"] {
        assert_eq!(lab.phase(n).await.as_deref(), Some("Running"), "{n}");
    }
    // What Nova and Neutron say of them.
    let w1 = lab.server("os-w-01").await;
    assert_eq!(w1["OS-EXT-SRV-ATTR:host"], "compute-4");
    assert_eq!(w1["OS-EXT-AZ:availability_zone"], "az2");
    assert_eq!(w1["metadata"]["capstan.io:cluster"], "default/demo");
    let (ip, fip) = addresses(&w1);
    assert_eq!(ip.as_deref(), Some(fixed.as_str()));
    assert!(fip.is_some(), "os-w-01 has a floating IP: {w1:#}");
    let (_, fip2) = addresses(&lab.server("os-w-02").await);
    assert_eq!(fip2.as_deref(), Some(exact_fip));
    let vols = lab
        .demo
        .list("volumev3", "/volumes/detail", "volumes")
        .await;
    let attached: Vec<&Value> = vols
        .iter()
        .filter(|v| v["attachments"][0]["server_id"] == w1["id"])
        .collect();
    assert_eq!(attached.len(), 2, "root and data volume: {vols:#?}");
    // Preflight refuses what the real cloud would: the address and the floating IP taken,
    // a volume type Cinder does not have.
    let mut again = node("os-w-03", "az1");
    again["ip"] = json!(fixed);
    again["floating_ip"] = json!(exact_fip);
    again["root_volume"] = json!({"size_gib": 20, "type": "nvme"});
    let (s, body) = lab.submit(&request(vec![again])).await;
    assert_eq!(s, 422, "{body}");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    for f in [
        "nodes[0].ip",
        "nodes[0].floating_ip",
        "nodes[0].root_volume.type",
    ] {
        assert!(fields.contains(&f), "{f} refused: {body:#}");
    }
    // Named deletes: the servers, ports, volumes and Capstan's floating IPs all go.
    lab.delete(&["os-w-01", "os-w-02"]).await;
    lab.no_leaks(&before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_wait_on_real_nova_ends_when_the_admin_raises_the_quota() {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    lab.instance_quota(lab.servers_used().await).await;
    let (s, job) = lab.submit(&request(vec![node("os-q-1", "az2")])).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    lab.until_event(&id, "a quota wait", |e| {
        e["kind"] == "waiting"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("waiting_for_quota: instances"))
    })
    .await;
    lab.instance_quota(50).await;
    let done = lab.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(lab.phase("os-q-1").await.as_deref(), Some("Running"));
    lab.delete(&["os-q-1"]).await;
    lab.no_leaks(&before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_host_on_a_full_real_host_is_retried_until_the_host_has_room() {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    // Fill compute-3 with servers of our own (forced there, as the demo user may: it has
    // the admin role in its project) until Nova says it is full.
    let ids =
        |what: Value, key: &str| -> String { what[key][0]["id"].as_str().unwrap().to_string() };
    let flavor = ids(
        lab.demo
            .get("compute", "/flavors?name=k8s.small")
            .await
            .clone(),
        "flavors",
    );
    let image = ids(
        lab.demo
            .get("image", "/v2/images?name=ubuntu-2204-kube-v1.30")
            .await,
        "images",
    );
    let net = ids(
        lab.demo
            .get("network", "/v2.0/networks?name=demo-net")
            .await,
        "networks",
    );
    let mut fillers: Vec<String> = Vec::new();
    for i in 0..8 {
        let (s, body) = lab
            .demo
            .call(
                Method::POST,
                "compute",
                "/servers",
                Some(
                    json!({"server": {"name": format!("os-filler-{i}"), "flavorRef": flavor,
                    "imageRef": image, "networks": [{"uuid": net}],
                    "availability_zone": "az2:compute-3"}}),
                ),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        let id = body["server"]["id"].as_str().unwrap().to_string();
        fillers.push(id.clone());
        let mut status = String::new();
        for _ in 0..120 {
            let (_, doc) = lab
                .demo
                .call(Method::GET, "compute", &format!("/servers/{id}"), None)
                .await;
            status = doc["server"]["status"].as_str().unwrap_or("").to_string();
            if status == "ACTIVE" || status == "ERROR" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if status == "ERROR" {
            break;
        }
        assert_eq!(status, "ACTIVE", "filler {i}");
    }
    let full = fillers.pop().expect("a filler that found compute-3 full");
    lab.demo
        .call(Method::DELETE, "compute", &format!("/servers/{full}"), None)
        .await;
    let mut n = node("os-nvh-1", "az2");
    n["host"] = json!("compute-3");
    let (s, job) = lab.submit(&request(vec![n])).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // Real CAPO says only InstanceStateError; Nova's fault says why.
    let seen = lab
        .until_event(&id, "the capacity failure", |e| {
            e["kind"] == "transition"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("No valid host"))
        })
        .await;
    assert!(
        seen["message"].as_str().unwrap().starts_with("capacity"),
        "{seen}"
    );
    // Room on compute-3: one filler goes.
    let room = fillers.pop().expect("compute-3 took at least one filler");
    lab.demo
        .call(Method::DELETE, "compute", &format!("/servers/{room}"), None)
        .await;
    let done = lab.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(lab.phase("os-nvh-1").await.as_deref(), Some("Running"));
    assert_eq!(
        lab.server("os-nvh-1").await["OS-EXT-SRV-ATTR:host"],
        "compute-3"
    );
    for f in fillers {
        lab.demo
            .call(Method::DELETE, "compute", &format!("/servers/{f}"), None)
            .await;
    }
    lab.delete(&["os-nvh-1"]).await;
    lab.no_leaks(&before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_type_deleted_after_preflight_on_real_cinder_asks_for_input_and_an_amend_finishes_it()
 {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    // Held at the quota wait until the type is gone, so real CAPO meets its absence.
    lab.instance_quota(lab.servers_used().await).await;
    let mut n = node("os-vt-1", "az1");
    n["root_volume"] = json!({"size_gib": 20, "type": "ssd"});
    let (s, job) = lab.submit(&request(vec![n])).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let types = lab.admin.list("volumev3", "/types", "volume_types").await;
    let ssd = types
        .iter()
        .find(|t| t["name"] == "ssd")
        .expect("type ssd")
        .clone();
    let (s, body) = lab
        .admin
        .call(
            Method::DELETE,
            "volumev3",
            &format!("/types/{}", ssd["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 202, "deleting type ssd: {body}");
    lab.instance_quota(50).await;
    let asked = lab
        .until_event(&id, "needs_input", |e| e["kind"] == "needs_input")
        .await;
    // The type comes back (for the other tests), as the seed made it.
    let (s, body) = lab
        .admin
        .call(
            Method::POST,
            "volumev3",
            "/types",
            Some(json!({"volume_type": {"name": "ssd",
                "extra_specs": {"volume_backend_name": "fake"}}})),
        )
        .await;
    assert_eq!(s, 200, "recreating type ssd: {body}");
    assert!(
        asked["message"]
            .as_str()
            .unwrap()
            .contains("Volume type with name ssd could not be found."),
        "{asked}"
    );
    let resp = lab
        .capstan
        .http
        .patch(format!("{}/v1/jobs/{id}/nodes/os-vt-1", lab.capstan.url))
        .bearer_auth(TOKEN)
        .json(&json!({"root_volume": {"size_gib": 20, "type": "hdd"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = lab
        .capstan
        .http
        .post(format!("{}/v1/jobs/{id}/resume", lab.capstan.url))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let done = lab.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(lab.phase("os-vt-1").await.as_deref(), Some("Running"));
    lab.delete(&["os-vt-1"]).await;
    lab.no_leaks(&before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_of_capstan_mid_job_on_real_openstack_makes_each_server_once() {
    let _turn = TURN.lock().await;
    let Some(mut lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    let mut a = node("os-k9-1", "az1");
    a["floating_ip"] = json!(true);
    let (s, job) = lab.submit(&request(vec![a, node("os-k9-2", "az2")])).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    for pause in [300, 1500, 4000, 9000] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        lab.kill_serve();
        lab.start_serve();
    }
    let done = lab.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    for n in ["os-k9-1", "os-k9-2"] {
        lab.server(n).await; // exactly one each
        assert_eq!(lab.phase(n).await.as_deref(), Some("Running"), "{n}");
    }
    let now = lab.census().await;
    assert_eq!(
        now.floating_ips.len(),
        before.floating_ips.len() + 1,
        "one floating IP made: {now:?}"
    );
    lab.delete(&["os-k9-1", "os-k9-2"]).await;
    lab.no_leaks(&before).await;
}

/// A service of the OpenStack lab stopped (SIGSTOP to its process group: it holds its
/// connections and answers nothing, as a hung broker or database does), resumed when
/// dropped, whatever the test did meanwhile.
struct Stopped(i32);

impl Stopped {
    fn new(lab: &RealLab, service: &str) -> Stopped {
        let group = lab.service_group(service);
        signal("-STOP", group);
        Stopped(group)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, group: i32) {
    let ok = Command::new("kill")
        .args([sig, "--", &format!("-{group}")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} -{group}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_stopped_while_real_capo_creates_the_server_only_delays_the_node() {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    // Held at the quota wait, so the outage meets the node when CAPO creates its server.
    lab.instance_quota(lab.servers_used().await).await;
    let (s, job) = lab.submit(&request(vec![node("os-mq-1", "az2")])).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    lab.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let stopped = Stopped::new(&lab, "rabbitmq");
    lab.instance_quota(50).await; // Nova's quota API needs only the database
    lab.until_event(&id, "the Machine", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("Machine and OpenStackMachine os-mq-1 created"))
    })
    .await;
    // The broker stays away for a while; Capstan's API answers meanwhile.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let during = lab.get(&format!("/v1/jobs/{id}")).await.expect("the job");
    println!("with RabbitMQ stopped 45 s: job {}", during["state"]);
    // The node cannot boot without the message queue: the job is still at work.
    assert!(
        matches!(during["state"].as_str(), Some("queued" | "running")),
        "finished while RabbitMQ was stopped: {during:#}"
    );
    for line in lab.story(&id).await {
        println!("  {line}");
    }
    drop(stopped);
    let done = lab.finished(&id).await;
    for line in lab.story(&id).await {
        println!("  {line}");
    }
    assert_eq!(done["state"], "succeeded", "{done:#}");
    lab.server("os-mq-1").await; // exactly one
    assert_eq!(lab.phase("os-mq-1").await.as_deref(), Some("Running"));
    lab.delete(&["os-mq-1"]).await;
    lab.no_leaks(&before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_stopped_makes_a_submit_answer_503_in_bounded_time_and_nothing_is_made() {
    let _turn = TURN.lock().await;
    let Some(lab) = RealLab::start().await else {
        return;
    };
    let before = lab.census().await;
    let body = request(vec![node("os-db-1", "az1")]);
    // Logged in once (a token cached) before the database goes.
    let (s, _) = lab
        .submit(&json!({"kind": "scale_out", "cluster": "default/demo",
        "nodes": [{"name": "os-db-0", "availability_zone": "az1", "flavor": "nope"}]}))
        .await;
    assert_eq!(s, 422);
    let stopped = Stopped::new(&lab, "mariadb");
    let (s, refusal) = lab.submit(&body).await;
    println!("with MariaDB stopped: {s} {refusal}");
    assert_eq!(s, 503, "{refusal:#}");
    assert!(
        refusal.to_string().contains("no answer within"),
        "{refusal:#}"
    );
    drop(stopped);
    assert_eq!(lab.census().await, before, "nothing was made");
    let done = lab.run(&body).await;
    assert_eq!(done["state"], "succeeded");
    lab.delete(&["os-db-1"]).await;
    lab.no_leaks(&before).await;
}

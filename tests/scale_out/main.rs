//! scale_out end to end: `capstan sim` and `capstan serve` run as separate processes and
//! meet only over loopback HTTP, as in production. The tests check what a user would: the
//! job through Capstan's API, the Machines through the Kubernetes API (kube-rs), and the
//! servers, ports, floating IPs and volumes through the simulated cloud's ground truth.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

mod delete;
mod repair;
mod tenancy;

const TOKEN: &str = "scale-out-test-token";

/// Two tenants as examples/config.yaml has them: `demo` owns namespace `default`, `acme`
/// owns `acme` (the simulator's second project and cluster `acme/prod`).
const TENANTS: &str = "tenants:
  demo: {namespaces: [default]}
  acme: {namespaces: [acme]}
tokens:
  - {name: alice, role: member, tenant: demo, token: alice-token-0001}
  - {name: bob, role: member, tenant: demo, token: bob-token-00001}
  - {name: dana, role: tenant_admin, tenant: demo, token: dana-token-0001}
  - {name: eve, role: member, tenant: acme, token: eve-token-00001}
  - {name: ada, role: tenant_admin, tenant: acme, token: ada-token-00001}
";
const ALICE: &str = "alice-token-0001";
const BOB: &str = "bob-token-00001";
const DANA: &str = "dana-token-0001";
const EVE: &str = "eve-token-00001";
const ADA: &str = "ada-token-00001";

struct World {
    sim: Child,
    sim_url: String,
    dir: tempfile::TempDir,
    serve: Option<Child>,
    api: String,
    http: reqwest::Client,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.serve.as_mut() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

/// Spawns a process and returns it with the value of the first stdout line containing
/// `marker`; the rest of its output is drained.
fn spawn_reading(mut cmd: Command, marker: &str) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let value = loop {
        let line = lines
            .next()
            .expect("the process printed its address")
            .unwrap();
        if let Some((_, v)) = line.split_once(marker) {
            break v.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, value)
}

impl World {
    fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        // 50 simulated seconds a second: a server boots in 0.4 s, a Node joins 0.2 s later.
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--time-scale", "50"])
            .arg("--state-dir")
            .arg(dir.path());
        let (sim, sim_url) = spawn_reading(cmd, "listening on ");
        let mut w = World {
            sim,
            sim_url,
            dir,
            serve: None,
            api: String::new(),
            http: reqwest::Client::new(),
        };
        std::fs::write(w.path("capstan.yaml"), TENANTS).unwrap();
        w.start_serve();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_serve(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--lease", "2s"])
            .arg("--db")
            .arg(self.path("capstan.db"))
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .arg("--config")
            .arg(self.path("capstan.yaml"))
            .args(["--schedule-min-interval", "2s"])
            .env("CAPSTAN_ADMIN_TOKEN", TOKEN);
        let (child, url) = spawn_reading(cmd, "capstan: listening on ");
        self.serve = Some(child);
        self.api = url;
    }

    /// SIGKILL: no chance to release leases or finish steps.
    fn kill_serve(&mut self) {
        if let Some(mut s) = self.serve.take() {
            s.kill().unwrap();
            s.wait().unwrap();
        }
    }

    async fn submit(&self, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.api))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Submits a job that must be accepted (202); returns its ID.
    async fn submit_ok(&self, body: &Value) -> String {
        let (status, job) = self.submit(body).await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// GET on Capstan's API; `None` while the server is down (between a kill and a restart).
    async fn get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.http
            .post(format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Any call as the holder of `token`: the status and the JSON body (`null` if none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn patch(&self, path: &str, body: &Value) -> u16 {
        self.http
            .patch(format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let v = self.get(&format!("/v1/jobs/{id}/events?limit=10000")).await;
        v.and_then(|v| v["events"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The simulator's ground truth for project demo (the cluster most tests work on).
    async fn state(&self) -> Value {
        self.state_of("?project=demo").await
    }

    /// The ground truth of every project.
    async fn state_all(&self) -> Value {
        self.state_of("").await
    }

    async fn state_of(&self, query: &str) -> Value {
        self.http
            .get(format!("{}/sim/v1/state{query}", self.sim_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn fault(&self, f: Value) -> String {
        let resp = self
            .http
            .post(format!("{}/sim/v1/faults", self.sim_url))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{f}");
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    async fn end_fault(&self, id: &str) {
        let resp = self
            .http
            .delete(format!("{}/sim/v1/faults/{id}", self.sim_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    async fn quota(&self, q: Value) {
        let resp = self
            .http
            .put(format!("{}/sim/v1/quotas/demo", self.sim_url))
            .json(&q)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    async fn machines(&self) -> Api<DynamicObject> {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.path("kubeconfig")).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        config.proxy_url = None;
        let client = kube::Client::try_from(config).unwrap();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta1",
            "Machine",
        ));
        Api::namespaced_with(client, "default", &ar)
    }

    async fn secrets(&self, ns: &str) -> Api<k8s_openapi::api::core::v1::Secret> {
        Api::namespaced(self.machines().await.into_client(), ns)
    }

    async fn machine_sets(&self) -> Api<DynamicObject> {
        let m = self.machines().await;
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta1",
            "MachineSet",
        ));
        Api::namespaced_with(m.into_client(), "default", &ar)
    }

    /// Sets the demo MachineSet's replicas and waits until that many Machines run; returns
    /// their names.
    async fn scale_demo_set(&self, n: usize) -> Vec<String> {
        self.machine_sets()
            .await
            .patch(
                "demo-md-0",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap();
        let machines = self.machines().await;
        for _ in 0..600 {
            let list = machines.list(&Default::default()).await.unwrap();
            let up = list
                .items
                .iter()
                .filter(|m| m.data["status"]["phase"] == "Running")
                .count();
            if up == n && list.items.len() == n {
                return list
                    .items
                    .into_iter()
                    .map(|m| m.metadata.name.unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never {n} Machines Running");
    }

    /// Waits until the job is finished (bounded so a broken run fails instead of hanging).
    async fn finished(&self, id: &str) -> Value {
        for _ in 0..1200 {
            if let Some(j) = self.get(&format!("/v1/jobs/{id}")).await
                && j["finished_at"].is_string()
            {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events: Vec<String> = self
            .events(id)
            .await
            .iter()
            .map(|e| format!("{} {} {}", e["kind"], e["node"], e["message"]))
            .collect();
        panic!("job {id} never finished: {events:#?}");
    }

    async fn until_event(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1200 {
            if let Some(e) = self.events(id).await.into_iter().find(|e| pred(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never saw {what} in job {id}: {:#?}", self.events(id).await);
    }
}

fn node(i: usize) -> Value {
    let (az, host) = match i % 4 {
        0 => ("az1", "compute-1"),
        1 => ("az1", "compute-2"),
        2 => ("az2", "compute-3"),
        _ => ("az2", "compute-4"),
    };
    json!({
        "name": format!("demo-w-{i:02}"), "availability_zone": az, "host": host,
        "ip": format!("10.6.0.{}", 20 + i), "floating_ip": true,
        "data_volumes": [{"name": "data", "size_gib": 10, "type": "hdd"}],
        "roles": ["ingress"], "labels": {"team": "edge"},
    })
}

fn request(nodes: Vec<Value>) -> Value {
    json!({
        "kind": "scale_out", "cluster": "default/demo",
        "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                     "network": "demo-net", "subnet": "demo-subnet",
                     "root_volume": {"size_gib": 20, "type": "ssd"}},
        "nodes": nodes,
    })
}

fn by_name<'a>(list: &'a Value, name: &str) -> Vec<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == name)
        .collect()
}

/// Every node of the request exists exactly as specified, once, and nothing else is left.
async fn assert_exactly_as_specified(w: &World, nodes: &[Value], existing: usize) {
    let s = w.state().await;
    let machines = w.machines().await;
    for n in nodes {
        let name = n["name"].as_str().unwrap();
        let m = machines.get(name).await.unwrap();
        assert_eq!(m.data["status"]["phase"], "Running", "{name}");
        let fd = format!(
            "{}:{}",
            n["availability_zone"].as_str().unwrap(),
            n["host"].as_str().unwrap()
        );
        assert_eq!(m.data["spec"]["failureDomain"], fd.as_str(), "{name}");
        let servers = by_name(&s["servers"], name);
        assert_eq!(servers.len(), 1, "one server {name}");
        assert_eq!(servers[0]["status"], "ACTIVE");
        assert_eq!(servers[0]["host"], n["host"], "{name}");
        let ports = by_name(&s["ports"], &format!("{name}-0"));
        assert_eq!(ports.len(), 1, "one port for {name}");
        assert_eq!(ports[0]["fixed_ips"][0]["ip_address"], n["ip"], "{name}");
        let fips: Vec<&Value> = s["floating_ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["port_id"] == ports[0]["id"])
            .collect();
        assert_eq!(fips.len(), 1, "one floating IP on {name}");
        for (vol, size, kind) in [("root", 20, "ssd"), ("data", 10, "hdd")] {
            let v = by_name(&s["volumes"], &format!("{name}-{vol}"));
            assert_eq!(v.len(), 1, "{name}-{vol}");
            assert_eq!(
                (v[0]["size"].as_i64(), v[0]["volume_type"].as_str()),
                (Some(size), Some(kind))
            );
        }
    }
    let total = nodes.len() + existing;
    assert_eq!(
        s["servers"].as_array().unwrap().len(),
        total,
        "no stray server"
    );
    assert_eq!(s["ports"].as_array().unwrap().len(), total, "no stray port");
    assert_eq!(
        s["volumes"].as_array().unwrap().len(),
        nodes.len() * 2,
        "no stray volume"
    );
    assert_eq!(
        s["floating_ips"].as_array().unwrap().len(),
        nodes.len(),
        "no stray floating IP"
    );
}

/// The existing workers: name → (uid, resourceVersion).
async fn originals(w: &World) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = w
        .machines()
        .await
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|m| {
            m.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("demo-md-0-")
        })
        .map(|m| {
            (
                m.metadata.name.unwrap(),
                m.metadata.uid.unwrap(),
                m.metadata.resource_version.unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The seed's story: 10 workers while the project has room for 6 more; the quota is raised
/// later. With `kills`, the engine is killed with SIGKILL that many times along the way.
async fn story(kills: usize) {
    let mut w = World::start();
    let before = originals(&w).await;
    assert_eq!(before.len(), 3);
    w.quota(json!({"instances": 9})).await;
    let nodes: Vec<Value> = (1..=10).map(node).collect();
    let id = w.submit_ok(&request(nodes.clone())).await;
    let waiting = w
        .until_event(&id, "a quota wait", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("waiting_for_quota"))
        })
        .await;
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("instances: need 1, free 0"),
        "{waiting}"
    );
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..900))).await;
        w.kill_serve();
        if k == 0 {
            w.quota(json!({"instances": 50})).await;
        }
        w.start_serve();
    }
    if kills == 0 {
        w.quota(json!({"instances": 50})).await;
    }
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(&w, &nodes, 3).await;
    assert_eq!(originals(&w).await, before, "existing workers untouched");
    // Each node labelled as asked, on the Node itself (role via CAPI's label sync).
    let s = w.state().await;
    for n in s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["name"].as_str().unwrap().starts_with("demo-w-"))
    {
        assert_eq!(n["labels"]["team"], "edge", "{n}");
        assert_eq!(n["labels"]["node-role.kubernetes.io/ingress"], "", "{n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_story_ten_workers_wait_for_quota_and_all_run_as_specified() {
    story(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_engine_during_the_story_changes_nothing_of_the_outcome() {
    story(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_volume_type_is_refused_at_submit_and_a_vanished_one_asks_for_input() {
    let w = World::start();
    let mut nodes: Vec<Value> = (1..=3).map(node).collect();
    nodes[0]["data_volumes"][0]["type"] = json!("ssd2");
    nodes[2]["root_volume"] = json!({"size_gib": 20, "type": "nvme"});
    let (status, body) = w.submit(&request(nodes)).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["nodes[0].data_volumes[0].type", "nodes[2].root_volume.type"]
    );
    let jobs = w.get("/v1/jobs").await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "no job stored");
    assert_eq!(
        w.state().await["servers"].as_array().unwrap().len(),
        3,
        "nothing created"
    );

    // A type that disappears after preflight: the node needs input; amend, resume, Running.
    w.quota(json!({"instances": 3})).await;
    let nodes = vec![node(4)];
    let id = w.submit_ok(&request(nodes.clone())).await;
    w.until_event(&id, "a quota wait", |e| e["kind"] == "waiting")
        .await;
    let fault = w
        .fault(json!({"kind": "volume_type_missing", "name": "ssd"}))
        .await;
    w.quota(json!({"instances": 50})).await;
    let asked = w
        .until_event(&id, "needs_input", |e| e["kind"] == "needs_input")
        .await;
    assert!(
        asked["message"]
            .as_str()
            .unwrap()
            .contains("Volume type with name ssd could not be found."),
        "{asked}"
    );
    w.end_fault(&fault).await;
    let s = w.state().await;
    assert!(
        by_name(&s["servers"], "demo-w-04").is_empty(),
        "cleaned up before asking"
    );
    assert!(by_name(&s["ports"], "demo-w-04-0").is_empty());
    // An amend goes through the node checks preflight makes: nothing it would refuse is
    // stored.
    let (code, body) = w
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/jobs/{id}/nodes/demo-w-04"),
            TOKEN,
            Some(&json!({"subnet": "😀", "availability_zone": "10.7.0.5", "floating_ip": "10.6.0.255"})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let mut fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["availability_zone", "floating_ip", "subnet"],
        "{body}"
    );
    let job = w.get(&format!("/v1/jobs/{id}")).await.unwrap();
    let stored = &job["nodes"][0]["spec"];
    assert_eq!(stored["subnet"], "demo-subnet", "{job}");
    let code = w
        .patch(
            &format!("/v1/jobs/{id}/nodes/demo-w-04"),
            &json!({"root_volume": {"size_gib": 20, "type": "hdd"}}),
        )
        .await;
    assert_eq!(code, 200);
    w.post(&format!("/v1/jobs/{id}/resume"), &json!({})).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let s = w.state().await;
    let root = by_name(&s["volumes"], "demo-w-04-root");
    assert_eq!(root[0]["volume_type"], "hdd");
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
    let w = World::start();
    let nodes: Vec<Value> = (1..=4).map(node).collect();
    // The nodes first wait for quota, so the outage meets them mid-job whatever the speed
    // of the machine: Capstan's own reads fail, and it retries.
    w.quota(json!({"instances": 3})).await;
    let id = w.submit_ok(&request(nodes.clone())).await;
    let outage = w
        .fault(
            json!({"kind": "outage", "services": ["compute", "network"], "rate": 0.3,
                      "cause": "messaging"}),
        )
        .await;
    w.until_event(&id, "a transient retry", |e| {
        e["kind"] == "retry" && (e["class"] == "transient" || e["data"]["class"] == "transient")
            || e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("transient"))
    })
    .await;
    w.quota(json!({"instances": 50})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.end_fault(&outage).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(&w, &nodes, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_valid_host_on_a_pinned_host_is_retried_as_capacity_until_it_has_room() {
    let w = World::start();
    let fault = w
        .fault(json!({"kind": "no_valid_host", "host": "compute-2"}))
        .await;
    let nodes = vec![node(1)];
    let id = w.submit_ok(&request(nodes.clone())).await;
    let failed = w
        .until_event(&id, "a capacity failure", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("capacity"))
        })
        .await;
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("No valid host was found"),
        "{failed}"
    );
    w.end_fault(&fault).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(&w, &nodes, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_and_volumes_leaked_by_capo_on_delete_are_removed_by_cleanup() {
    let w = World::start();
    w.fault(json!({"kind": "leak", "resources": ["ports", "volumes"]}))
        .await;
    let nvh = w
        .fault(json!({"kind": "no_valid_host", "host": "compute-3"}))
        .await;
    let nodes = vec![node(2)];
    let id = w.submit_ok(&request(nodes.clone())).await;
    let cleaned = w
        .until_event(&id, "the cleanup of leaked resources", |e| {
            e["kind"] == "cleanup"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("removed what the failed attempt left"))
        })
        .await;
    let removed = cleaned["data"]["removed"].to_string();
    assert!(removed.contains("port demo-w-02-0"), "{removed}");
    assert!(removed.contains("volume demo-w-02-root"), "{removed}");
    assert!(removed.contains("volume demo-w-02-data"), "{removed}");
    w.end_fault(&nvh).await;
    let done = w.finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_exactly_as_specified(&w, &nodes, 3).await;
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

//! One harness, two clouds: a `capstan serve` driven over its HTTP API against either a
//! fresh simulator (`capstan sim`: its own Kubernetes side, CAPI and CAPO) or the lab
//! (`lab/up` + `lab/demo`: real kube-apiserver, CAPI v1.12 and CAPO v0.14, with the
//! simulated OpenStack beside them). Both clouds have the simulator's console for ground
//! truth and faults, so a scenario (`scenarios.rs`) is written once and run on each; where
//! the clouds differ the harness says so here, in one place.
//!
//! Included by the scale_out and lab test binaries with `#[path]`; each uses part of it.
#![allow(dead_code)]

pub mod scenarios;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

pub const TOKEN: &str = "scale-out-test-token";

/// Two tenants as examples/config.yaml has them: `demo` owns namespace `default`, `acme`
/// owns `acme` (the simulator's second project and cluster `acme/prod`).
pub const TENANTS: &str = "tenants:
  demo: {namespaces: [default]}
  acme: {namespaces: [acme]}
tokens:
  - {name: alice, role: member, tenant: demo, token: alice-token-0001}
  - {name: bob, role: member, tenant: demo, token: bob-token-00001}
  - {name: dana, role: tenant_admin, tenant: demo, token: dana-token-0001}
  - {name: eve, role: member, tenant: acme, token: eve-token-00001}
  - {name: ada, role: tenant_admin, tenant: acme, token: ada-token-00001}
";

/// Which cloud a World runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    /// A fresh `capstan sim` of this World's own (50 simulated seconds a second).
    Sim,
    /// The lab: one shared cloud at time scale 1, its state carried from test to test.
    Lab,
}

pub struct World {
    pub cloud: Cloud,
    /// The simulator process (Sim only; the lab's is lab/demo's).
    sim: Option<Child>,
    pub sim_url: String,
    /// Sim: the simulator's state dir (kubeconfig, clouds.yaml) and Capstan's database.
    /// Lab: Capstan's database only.
    pub dir: tempfile::TempDir,
    /// Lab: its state directory (kubeconfig).
    lab_dir: Option<PathBuf>,
    serve: Option<Child>,
    pub api: String,
    pub http: reqwest::Client,
    /// Node names of this World: `demo-w-NN` on the simulator; on the lab, whose state
    /// outlives a test, a prefix of this World's own.
    prefix: String,
    /// Fixed IPs for `node(i)` on the lab: free addresses of demo-subnet when it started.
    free_ips: Vec<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_serve();
        if let Some(mut s) = self.sim.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Spawns a process and returns it with the value of the first stdout line containing
/// `marker`; the rest of its output is drained.
pub fn spawn_reading(mut cmd: Command, marker: &str) -> (Child, String) {
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
    /// A fresh simulator with the demo scenario (3 workers in MachineSet demo-md-0) and a
    /// `capstan serve` on it.
    pub fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        // 50 simulated seconds a second: a server boots in 0.4 s, a Node joins 0.2 s later.
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--time-scale", "50"])
            .arg("--state-dir")
            .arg(dir.path());
        let (sim, sim_url) = spawn_reading(cmd, "listening on ");
        let mut w = World {
            cloud: Cloud::Sim,
            sim: Some(sim),
            sim_url,
            dir,
            lab_dir: None,
            serve: None,
            api: String::new(),
            http: reqwest::Client::new(),
            prefix: "demo-w".into(),
            free_ips: Vec::new(),
        };
        std::fs::write(w.path("capstan.yaml"), TENANTS).unwrap();
        w.start_serve();
        w
    }

    /// A `capstan serve` (own database) on the running lab whose state directory is `dir`.
    pub async fn lab(dir: PathBuf) -> World {
        let log = std::fs::read_to_string(dir.join("logs/sim.log")).expect("lab/demo's sim log");
        let sim_url = log
            .lines()
            .find_map(|l| l.strip_prefix("capstan sim: listening on "))
            .expect("the simulated OpenStack's address")
            .trim()
            .to_string();
        let letters: String = (0..3).map(|_| fastrand::lowercase()).collect();
        let mut w = World {
            cloud: Cloud::Lab,
            sim: None,
            sim_url,
            dir: tempfile::tempdir().unwrap(),
            lab_dir: Some(dir),
            serve: None,
            api: String::new(),
            http: reqwest::Client::new(),
            prefix: format!("lab-{letters}"),
            free_ips: Vec::new(),
        };
        let used: BTreeSet<String> = w.state().await["ports"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip["ip_address"].as_str().map(str::to_string))
            .collect();
        // Above the addresses the cloud hands out itself (from the pool's start), below
        // the differential test's.
        w.free_ips = (100..230)
            .map(|i| format!("10.6.0.{i}"))
            .filter(|ip| !used.contains(ip))
            .collect();
        // The lab keeps every earlier test's nodes: room for them in all that the
        // scenarios do not set themselves (they set `instances`).
        w.quota(
            json!({"cores": 100_000, "ram_mib": 100_000_000, "volumes": 10_000,
                       "gigabytes": 1_000_000, "ports": 10_000, "floatingip": 10_000}),
        )
        .await;
        w.start_serve();
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kubeconfig(&self) -> PathBuf {
        match &self.lab_dir {
            Some(d) => d.join("kubeconfig"),
            None => self.path("kubeconfig"),
        }
    }

    pub fn start_serve(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--lease", "2s"])
            .arg("--db")
            .arg(self.path("capstan.db"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("CAPSTAN_ADMIN_TOKEN", TOKEN);
        if self.cloud == Cloud::Sim {
            cmd.arg("--config")
                .arg(self.path("capstan.yaml"))
                .args(["--schedule-min-interval", "2s"]);
        }
        let (child, url) = spawn_reading(cmd, "capstan: listening on ");
        self.serve = Some(child);
        self.api = url;
    }

    /// SIGKILL: no chance to release leases or finish steps.
    pub fn kill_serve(&mut self) {
        if let Some(mut s) = self.serve.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    /// How long a wait may take: the lab runs real controllers in real time (a node takes
    /// ~30 s there, under a second on the simulator).
    fn polls(&self, sim: usize) -> usize {
        match self.cloud {
            Cloud::Sim => sim,
            Cloud::Lab => sim * 5,
        }
    }

    /// How long to watch for something that must not happen (a replacement Machine): real
    /// CAPI's MachineSet controller answers in about a second, the simulator's sooner.
    pub fn settle(&self) -> Duration {
        match self.cloud {
            Cloud::Sim => Duration::from_millis(500),
            Cloud::Lab => Duration::from_secs(5),
        }
    }

    /// Worker `i` of a scenario: on the simulator `demo-w-NN` pinned to a host by `i`, with a
    /// fixed IP `10.6.0.(20+i)`; on the lab the same under this World's prefix, with a free
    /// address.
    pub fn node(&self, i: usize) -> Value {
        let mut n = node(i);
        if self.cloud == Cloud::Lab {
            n["name"] = json!(format!("{}-{i:02}", self.prefix));
            n["ip"] = json!(self.free_ips[i]);
        }
        n
    }

    pub async fn submit(&self, body: &Value) -> (u16, Value) {
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
    pub async fn submit_ok(&self, body: &Value) -> String {
        let (status, job) = self.submit(body).await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    /// GET on Capstan's API; `None` while the server is down (between a kill and a restart).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
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
    pub async fn call(
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

    pub async fn patch(&self, path: &str, body: &Value) -> u16 {
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

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let v = self.get(&format!("/v1/jobs/{id}/events?limit=10000")).await;
        v.and_then(|v| v["events"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The simulated OpenStack's ground truth for project demo (the cluster most tests work
    /// on).
    pub async fn state(&self) -> Value {
        self.state_of("?project=demo").await
    }

    /// The ground truth of every project.
    pub async fn state_all(&self) -> Value {
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

    pub async fn fault(&self, f: Value) -> String {
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

    pub async fn end_fault(&self, id: &str) {
        let resp = self
            .http
            .delete(format!("{}/sim/v1/faults/{id}", self.sim_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    pub async fn quota(&self, q: Value) {
        let resp = self
            .http
            .put(format!("{}/sim/v1/quotas/demo", self.sim_url))
            .json(&q)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    /// Servers project demo has now (what an instance quota is measured against).
    pub async fn servers_used(&self) -> usize {
        self.state().await["servers"].as_array().unwrap().len()
    }

    pub async fn kube(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        config.proxy_url = None;
        kube::Client::try_from(config).unwrap()
    }

    /// CAPI objects of namespace default, at the version Capstan uses (v1beta1; real CAPI
    /// v1.12 serves it beside v1beta2).
    pub async fn capi(&self, kind: &str) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", kind));
        Api::namespaced_with(self.kube().await, "default", &ar)
    }

    pub async fn machines(&self) -> Api<DynamicObject> {
        self.capi("Machine").await
    }

    pub async fn secrets(&self, ns: &str) -> Api<k8s_openapi::api::core::v1::Secret> {
        Api::namespaced(self.kube().await, ns)
    }

    pub async fn machine_sets(&self) -> Api<DynamicObject> {
        self.capi("MachineSet").await
    }

    /// The demo MachineSet's Machines (those being deleted too), sorted by name.
    pub async fn set_machines(&self) -> Vec<DynamicObject> {
        let mut out: Vec<DynamicObject> = self
            .machines()
            .await
            .list(&kube::api::ListParams::default().labels("cluster.x-k8s.io/set-name=demo-md-0"))
            .await
            .unwrap()
            .items;
        out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        out
    }

    /// Sets the demo MachineSet's replicas and waits until it has exactly that many
    /// Machines, all Running; returns their names.
    pub async fn scale_demo_set(&self, n: usize) -> Vec<String> {
        self.machine_sets()
            .await
            .patch(
                "demo-md-0",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await
            .unwrap();
        for _ in 0..self.polls(600) {
            let all = self
                .machines()
                .await
                .list(
                    &kube::api::ListParams::default().labels("cluster.x-k8s.io/set-name=demo-md-0"),
                )
                .await
                .unwrap()
                .items;
            let up = all
                .iter()
                .filter(|m| m.data["status"]["phase"] == "Running")
                .count();
            if up == n && all.len() == n {
                return all.into_iter().map(|m| m.metadata.name.unwrap()).collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never {n} Machines of demo-md-0 Running");
    }

    /// A Node's labels, as the workload cluster has them.
    pub async fn node_labels(&self, name: &str) -> Value {
        match self.cloud {
            Cloud::Sim => {
                let s = self.state().await;
                by_name(&s["nodes"], name)
                    .first()
                    .map(|n| n["labels"].clone())
                    .unwrap_or(Value::Null)
            }
            // The lab's apiserver is its own workload cluster.
            Cloud::Lab => {
                let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.kube().await);
                json!(
                    nodes
                        .get(name)
                        .await
                        .unwrap()
                        .metadata
                        .labels
                        .unwrap_or_default()
                )
            }
        }
    }

    /// Waits until the job is finished (bounded so a broken run fails instead of hanging).
    pub async fn finished(&self, id: &str) -> Value {
        for _ in 0..self.polls(1200) {
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

    /// The first event of the job `pred` accepts, waiting for it (bounded).
    pub async fn until_event(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..self.polls(1200) {
            if let Some(e) = self.events(id).await.into_iter().find(|e| pred(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never saw {what} in job {id}: {:#?}", self.events(id).await);
    }
}

/// Worker `i` on the simulator: `demo-w-NN`, pinned to a host by `i`, fixed IP
/// `10.6.0.(20+i)`, floating IP, a data volume, role ingress, label team=edge.
pub fn node(i: usize) -> Value {
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

pub fn request(nodes: Vec<Value>) -> Value {
    json!({
        "kind": "scale_out", "cluster": "default/demo",
        "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                     "network": "demo-net", "subnet": "demo-subnet",
                     "root_volume": {"size_gib": 20, "type": "ssd"}},
        "nodes": nodes,
    })
}

pub fn by_name<'a>(list: &'a Value, name: &str) -> Vec<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == name)
        .collect()
}

pub fn name_of(n: &Value) -> &str {
    n["name"].as_str().unwrap()
}

/// How many servers, ports, volumes and floating IPs project demo has: what "nothing
/// else is left" is measured against.
pub async fn counts(w: &World) -> [usize; 4] {
    let s = w.state().await;
    ["servers", "ports", "volumes", "floating_ips"].map(|k| s[k].as_array().unwrap().len())
}

/// Every node of the request exists exactly as specified, once, and nothing else is left:
/// the project has exactly what it had (`before`) and the nodes' own resources.
pub async fn assert_exactly_as_specified(w: &World, nodes: &[Value], before: [usize; 4]) {
    let s = w.state().await;
    let machines = w.machines().await;
    for n in nodes {
        let name = name_of(n);
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
        assert_eq!(
            servers[0]["metadata"]["capstan.io:cluster"], "default/demo",
            "{name}: marked for its cluster"
        );
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
    let [servers, ports, volumes, fips] = before;
    let n = nodes.len();
    let len = |k: &str| s[k].as_array().unwrap().len();
    assert_eq!(len("servers"), servers + n, "no stray server");
    assert_eq!(len("ports"), ports + n, "no stray port");
    assert_eq!(len("volumes"), volumes + n * 2, "no stray volume");
    assert_eq!(len("floating_ips"), fips + n, "no stray floating IP");
}

//! `World`: a `capstan serve` on a fresh simulator or on the lab, with what a scenario
//! reads and changes of either cloud (see `mod.rs`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::api;
use super::console::Console;
use super::fixtures::{TENANTS, TOKEN, by_name, name_of, node};
use super::process::{Process, SERVE_LISTENING, Sim, kube_client, serve_command};

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
    /// Capstan's server; `None` between a kill and a restart. Dropped (killed) first.
    serve: Option<Process>,
    /// Capstan's API at the server's current address.
    pub api: api::Api,
    /// The simulator (Sim only; the lab's is lab/demo's).
    sim: Option<Sim>,
    /// The simulator's console (and its base URL, where the OpenStack services are too).
    pub console: Console,
    /// Lab: the temporary directory of Capstan's database.
    lab_tmp: Option<tempfile::TempDir>,
    /// Where Capstan's database and config are: on the simulator its state directory
    /// (beside its kubeconfig and clouds.yaml), on the lab `lab_tmp`.
    files: PathBuf,
    /// Lab: its state directory (kubeconfig).
    lab_dir: Option<PathBuf>,
    pub http: reqwest::Client,
    /// Node names of this World: `demo-w-NN` on the simulator; on the lab, whose state
    /// outlives a test, a prefix of this World's own.
    prefix: String,
    /// Fixed IPs for `node(i)` on the lab: free addresses of demo-subnet when it started.
    free_ips: Vec<String>,
    /// Capstan's database when it is not the `capstan.db` file beside the rest (a
    /// PostgreSQL URL that replicas share).
    db: Option<String>,
}

impl World {
    /// A fresh simulator with the demo scenario (3 workers in MachineSet demo-md-0) and a
    /// `capstan serve` on it.
    pub fn start() -> World {
        let mut w = World::sim(None);
        w.start_serve();
        w
    }

    /// A fresh simulator with the demo scenario and no `capstan serve` yet: the caller
    /// starts servers (`serve_command`) on `db`, each with this World's kubeconfig, config
    /// and admin token, and points `api` at one that is up.
    pub fn replicas_on(db: &str) -> World {
        World::sim(Some(db.to_string()))
    }

    fn sim(db: Option<String>) -> World {
        // 50 simulated seconds a second: a server boots in 0.4 s, a Node joins 0.2 s later.
        let sim = Sim::start(50, None, &[]);
        let w = World {
            cloud: Cloud::Sim,
            serve: None,
            api: api::Api::new("", TOKEN, None),
            console: Console::new(&sim.url),
            files: sim.dir.path().to_path_buf(),
            sim: Some(sim),
            lab_tmp: None,
            lab_dir: None,
            http: reqwest::Client::new(),
            prefix: "demo-w".into(),
            free_ips: Vec::new(),
            db,
        };
        std::fs::write(w.path("capstan.yaml"), TENANTS).unwrap();
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
        let tmp = tempfile::tempdir().unwrap();
        let mut w = World {
            cloud: Cloud::Lab,
            serve: None,
            api: api::Api::new("", TOKEN, None),
            sim: None,
            console: Console::new(&sim_url),
            files: tmp.path().to_path_buf(),
            lab_tmp: Some(tmp),
            lab_dir: Some(dir),
            http: reqwest::Client::new(),
            prefix: format!("lab-{letters}"),
            free_ips: Vec::new(),
            db: None,
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
        self.files.join(name)
    }

    fn kubeconfig(&self) -> PathBuf {
        match &self.lab_dir {
            Some(d) => d.join("kubeconfig"),
            None => self.path("kubeconfig"),
        }
    }

    /// The `capstan serve` this World runs (`start_serve`), for a caller that starts more
    /// of them on one database.
    pub fn serve_command(&self) -> std::process::Command {
        let db = match &self.db {
            Some(db) => db.into(),
            None => self.path("capstan.db").into_os_string(),
        };
        let mut cmd = serve_command(db, &self.kubeconfig(), TOKEN);
        if self.cloud == Cloud::Sim {
            cmd.arg("--config")
                .arg(self.path("capstan.yaml"))
                .args(["--schedule-min-interval", "2s"]);
        }
        cmd
    }

    pub fn start_serve(&mut self) {
        let (process, url) = Process::start(self.serve_command(), SERVE_LISTENING);
        self.serve = Some(process);
        self.api.url = url;
    }

    /// SIGKILL: no chance to release leases or finish steps.
    pub fn kill_serve(&mut self) {
        self.serve = None;
    }

    /// How long a wait may take: the lab runs real controllers in real time (a node takes
    /// ~30 s there, under a second on the simulator).
    pub fn polls(&self, sim: usize) -> usize {
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

    // Capstan's API as this World's admin (`api.rs` has the calls; these keep scenarios short).

    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        self.api.submit(body).await
    }

    pub async fn submit_ok(&self, body: &Value) -> String {
        self.api.submit_ok(body).await
    }

    pub async fn get(&self, path: &str) -> Option<Value> {
        self.api.get(path).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        self.api.post(path, body).await
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.api.call(method, path, token, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> u16 {
        self.api.patch(path, body).await
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.api.events(id).await
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
        self.console.state(query).await
    }

    /// A Keystone token of the simulated cloud's demo user (its clouds.yaml's `capstan-sim`),
    /// for calls a user makes by hand.
    pub async fn os_token(&self) -> String {
        self.os_login("capstan-sim").await
    }

    /// Logs in to the simulated Keystone as a `clouds.yaml` entry, scoped to its project;
    /// returns the token.
    pub async fn os_login(&self, cloud: &str) -> String {
        let text = std::fs::read_to_string(self.path("clouds.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let auth = &doc["clouds"][cloud]["auth"];
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"].as_str().unwrap(), "domain": {"name": "Default"},
            "password": auth["password"].as_str().unwrap()}}},
            "scope": {"project": {"id": auth["project_id"].as_str().unwrap()}}}});
        let resp = self
            .http
            .post(format!("{}/identity/v3/auth/tokens", self.console.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "Keystone login as {cloud}");
        resp.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string()
    }

    /// A call on the simulated OpenStack with a Keystone token (Nova microversion 2.60); the
    /// JSON body (`null` if none).
    pub async fn os(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.console.url))
            .header("X-Auth-Token", token)
            .header("X-OpenStack-Nova-API-Version", "2.60");
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    pub async fn fault(&self, f: Value) -> String {
        self.console.fault(&f).await
    }

    pub async fn end_fault(&self, id: &str) {
        self.console.end_fault(id).await
    }

    /// Sets some of project demo's quotas.
    pub async fn quota(&self, q: Value) {
        self.console.quota("demo", &q).await
    }

    /// Servers project demo has now (what an instance quota is measured against).
    pub async fn servers_used(&self) -> usize {
        self.state().await["servers"].as_array().unwrap().len()
    }

    pub async fn kube(&self) -> kube::Client {
        kube_client(&self.kubeconfig()).await
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
        self.api.finished(id, self.polls(1200)).await
    }

    /// The first event of the job `pred` accepts, waiting for it (bounded).
    pub async fn until_event(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.api.until_event(id, what, self.polls(1200), pred).await
    }
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

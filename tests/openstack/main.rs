//! The differential test against a real OpenStack: the same raw HTTP requests go to the
//! lab's real services (`lab/openstack-up`: Keystone, Nova, Neutron, Glance, Cinder and
//! Placement 2026.2) and to a `capstan sim` started here, and what Capstan and CAPO read is
//! compared — status codes, error bodies (their structure, and their message with IDs
//! masked) and the shapes of the JSON documents (key sets and value types, recursively), not
//! their values. Where the two disagree the real cloud is right: the simulator is changed and
//! `lab/openstack/NOTES.md` lists each change.
//!
//! `CAPSTAN_OPENSTACK_LAB_DIR` names the lab's state directory (its `clouds.yaml`); without
//! it every test says it is skipped and passes. The tests that change the lab's project
//! (quotas, full hosts) take turns; every resource they make is named `capstan-diff-…` and
//! swept before and after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;
mod shape;
mod stories;

use common::process::Sim;
use shape::Diffs;

/// One test at a time changes the lab's quotas and fills its hosts.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The prefix of every name this suite gives what it creates.
const PREFIX: &str = "capstan-diff-";

/// The demo project's Nova microversion as Capstan speaks it (`src/cloud/os.rs`).
const CAPSTAN_MV: &str = "2.60";

fn lab_dir() -> Option<PathBuf> {
    match std::env::var_os("CAPSTAN_OPENSTACK_LAB_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            println!(
                "skipped: CAPSTAN_OPENSTACK_LAB_DIR is not set (lab/openstack-up --state-dir D \
                 brings a real OpenStack up)"
            );
            None
        }
    }
}

/// An answer: its status and its JSON body (`null` when there is none).
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: Value,
}

/// One cloud as a client sees it after logging in: a token and the catalog's public URLs.
struct Side {
    name: &'static str,
    http: reqwest::Client,
    token: String,
    project_id: String,
    /// Catalog type → public URL, without a trailing slash.
    endpoints: BTreeMap<String, String>,
    /// The token document Keystone issued.
    issued: Reply,
}

/// Who logs in, read from a `clouds.yaml` entry.
#[derive(Clone)]
struct Login {
    auth_url: String,
    user: String,
    password: String,
    project: String,
}

impl Login {
    /// The entry of `clouds.yaml` at `path` whose project is `project`.
    fn from_clouds_yaml(path: &Path, project: &str) -> Login {
        let text = std::fs::read_to_string(path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let auth = doc["clouds"]
            .as_mapping()
            .unwrap()
            .values()
            .map(|c| &c["auth"])
            .find(|a| a["project_name"].as_str() == Some(project))
            .unwrap_or_else(|| panic!("{} has no cloud for project {project}", path.display()));
        let s = |k: &str| auth[k].as_str().unwrap().to_string();
        Login {
            auth_url: s("auth_url").trim_end_matches('/').to_string(),
            user: s("username"),
            password: s("password"),
            project: project.to_string(),
        }
    }

    fn body(&self, password: &str) -> Value {
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": self.project, "domain": {"name": "Default"}}}}})
    }
}

impl Side {
    async fn login(name: &'static str, login: &Login) -> Side {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let resp = http
            .post(format!("{}/auth/tokens", login.auth_url))
            .json(&login.body(&login.password))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 201, "{name}: login as {}", login.user);
        let token = resp.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = resp.json().await.unwrap();
        let mut endpoints = BTreeMap::new();
        for service in body["token"]["catalog"].as_array().unwrap() {
            let public = service["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["interface"] == "public");
            if let (Some(kind), Some(e)) = (service["type"].as_str(), public) {
                let url = e["url"].as_str().unwrap().trim_end_matches('/');
                endpoints.insert(kind.to_string(), url.to_string());
            }
        }
        Side {
            name,
            http,
            token,
            project_id: body["token"]["project"]["id"].as_str().unwrap().to_string(),
            endpoints,
            issued: Reply { status, body },
        }
    }

    fn endpoint(&self, service: &str) -> &str {
        self.endpoints
            .get(service)
            .unwrap_or_else(|| panic!("{}'s catalog has no {service}", self.name))
    }

    /// The service's root, where clients discover its versions: the catalog URL cut before
    /// its first version segment (`/v3`, `/v2.1`), if it has one.
    fn root(&self, service: &str) -> String {
        let url = self.endpoint(service);
        let is_version = |seg: &str| {
            seg.strip_prefix('v')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        };
        let mut cut = url.len();
        let mut at = 0;
        for seg in url.split('/') {
            if at > "https://".len() && is_version(seg) {
                cut = at - 1;
                break;
            }
            at += seg.len() + 1;
        }
        url[..cut].to_string()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A call to `path` under a service's catalog URL, with the token.
    async fn call(
        &self,
        service: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{path}", self.endpoint(service));
        let mut req = self
            .http
            .request(method, url)
            .header("x-auth-token", &self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    async fn get(&self, service: &str, path: &str) -> Reply {
        self.call(service, Method::GET, path, None, &[]).await
    }

    async fn post(&self, service: &str, path: &str, body: &Value) -> Reply {
        self.call(service, Method::POST, path, Some(body), &[])
            .await
    }

    async fn delete(&self, service: &str, path: &str) -> Reply {
        self.call(service, Method::DELETE, path, None, &[]).await
    }

    /// A Nova call at a microversion.
    async fn nova(&self, method: Method, path: &str, body: Option<&Value>, mv: &str) -> Reply {
        let header = format!("compute {mv}");
        self.call(
            "compute",
            method,
            path,
            body,
            &[("openstack-api-version", header.as_str())],
        )
        .await
    }

    /// The ID of the named item in a list answer (`{"<key>": [...]}`).
    async fn id_of(&self, service: &str, path: &str, key: &str, name: &str) -> String {
        let list = self.get(service, path).await;
        list.body[key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == name)
            .and_then(|x| x["id"].as_str())
            .unwrap_or_else(|| panic!("{}: no {name} in {path}: {}", self.name, list.body))
            .to_string()
    }

    /// A server once it has left BUILD.
    async fn settled_server(&self, id: &str) -> Reply {
        for _ in 0..240 {
            let r = self
                .nova(Method::GET, &format!("/servers/{id}"), None, CAPSTAN_MV)
                .await;
            if r.status != 200 || r.body["server"]["status"] != "BUILD" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{}: server {id} stayed in BUILD", self.name);
    }

    /// Waits until `GET path` answers 404 (Nova deletes servers, Cinder volumes, in the
    /// background).
    async fn gone(&self, service: &str, path: &str) -> Reply {
        for _ in 0..240 {
            let r = self.get(service, path).await;
            if r.status == 404 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{}: {path} never went away", self.name);
    }

    /// A volume once it has left `creating`.
    async fn settled_volume(&self, id: &str) -> Reply {
        for _ in 0..240 {
            let r = self.get("block-storage", &format!("/volumes/{id}")).await;
            if r.status != 200 || r.body["volume"]["status"] != "creating" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{}: volume {id} stayed creating", self.name);
    }

    /// Removes what an earlier, interrupted run of this suite left: servers, ports, volumes,
    /// floating IPs and keypairs whose name (or description) starts with `PREFIX`.
    async fn sweep(&self) {
        let servers = self.nova(Method::GET, "/servers", None, CAPSTAN_MV).await;
        for s in mine(&servers.body["servers"], "name") {
            let path = format!("/servers/{}", s["id"].as_str().unwrap());
            self.nova(Method::DELETE, &path, None, CAPSTAN_MV).await;
            self.gone("compute", &path).await;
        }
        let ports = self.get("network", "/v2.0/ports").await;
        for p in mine(&ports.body["ports"], "name") {
            let id = p["id"].as_str().unwrap();
            self.delete("network", &format!("/v2.0/ports/{id}")).await;
        }
        let fips = self.get("network", "/v2.0/floatingips").await;
        for f in mine(&fips.body["floatingips"], "description") {
            let id = f["id"].as_str().unwrap();
            self.delete("network", &format!("/v2.0/floatingips/{id}"))
                .await;
        }
        let volumes = self.get("block-storage", "/volumes/detail").await;
        for v in mine(&volumes.body["volumes"], "name") {
            let path = format!("/volumes/{}", v["id"].as_str().unwrap());
            self.delete("block-storage", &path).await;
            self.gone("block-storage", &path).await;
        }
        let keys = self
            .nova(Method::GET, "/os-keypairs", None, CAPSTAN_MV)
            .await;
        for k in keys.body["keypairs"].as_array().into_iter().flatten() {
            let name = k["keypair"]["name"].as_str().unwrap_or_default();
            if name.starts_with(PREFIX) {
                let path = format!("/os-keypairs/{name}");
                self.nova(Method::DELETE, &path, None, CAPSTAN_MV).await;
            }
        }
    }
}

/// The items of a list whose `field` starts with `PREFIX`.
fn mine<'a>(list: &'a Value, field: &str) -> Vec<&'a Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|x| x[field].as_str().is_some_and(|n| n.starts_with(PREFIX)))
        .collect()
}

/// The simulator's built-in demo cloud, with its hypervisors the size of the lab's (so the
/// same servers fill a host) and no CAPI clusters (whose workers would be servers the lab's
/// project does not have).
fn scenario_like(vcpus: i64, memory_mib: i64) -> String {
    let demo = include_str!("../../scenarios/demo.yaml");
    let without_clusters = demo.split("\nclusters:").next().unwrap();
    without_clusters.replace(
        "vcpus: 64, memory_mib: 262144",
        &format!("vcpus: {vcpus}, memory_mib: {memory_mib}"),
    ) + "\n"
}

fn start_sim(scenario: &str) -> Sim {
    // 50 simulated seconds a second: a server builds in 0.4 s.
    Sim::start(50, Some(scenario), &[])
}

/// The real cloud and a simulator shaped like it, each logged in to the same project.
struct Pair {
    real: Side,
    sim: Side,
    lab: PathBuf,
    simulator: Sim,
}

impl Pair {
    /// `None` (the test is skipped) without a lab.
    async fn start(project: &str) -> Option<Pair> {
        let lab = lab_dir()?;
        let real = Side::login(
            "real",
            &Login::from_clouds_yaml(&lab.join("clouds.yaml"), project),
        )
        .await;
        let hypervisors = real
            .nova(Method::GET, "/os-hypervisors/detail", None, CAPSTAN_MV)
            .await;
        let first = &hypervisors.body["hypervisors"][0];
        let simulator = start_sim(&scenario_like(
            first["vcpus"].as_i64().expect("the lab's hypervisor size"),
            first["memory_mb"].as_i64().unwrap(),
        ));
        let sim = Side::login(
            "sim",
            &Login::from_clouds_yaml(&simulator.clouds_yaml, project),
        )
        .await;
        Some(Pair {
            real,
            sim,
            lab,
            simulator,
        })
    }

    /// Both sides logged in to another project.
    async fn login(&self, project: &str) -> (Side, Side) {
        let real = Login::from_clouds_yaml(&self.lab.join("clouds.yaml"), project);
        let sim = Login::from_clouds_yaml(&self.simulator.clouds_yaml, project);
        (
            Side::login("real", &real).await,
            Side::login("sim", &sim).await,
        )
    }

    /// Sets a project's instance quota on both sides: Nova's own API on the real cloud (the
    /// demo user holds the admin role), the console on the simulator.
    async fn set_instances_quota(&self, side: &Side, project_id: &str, instances: i64) {
        if side.name == "real" {
            let body = json!({"quota_set": {"instances": instances}});
            let path = format!("/os-quota-sets/{project_id}");
            let r = side.nova(Method::PUT, &path, Some(&body), CAPSTAN_MV).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        } else {
            let r = side
                .http
                .put(format!("{}/sim/v1/quotas/{project_id}", self.simulator.url))
                .json(&json!({"instances": instances}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    }
}

/// Runs the same story on both sides, at once, and hands back both transcripts.
macro_rules! both {
    ($story:ident($real:expr, $sim:expr $(, $arg:expr)*)) => {
        tokio::join!(stories::$story($real $(, $arg)*), stories::$story($sim $(, $arg)*))
    };
}

/// Asserts a story's transcripts agree, listing every difference at once.
fn agree(what: &str, real: &[stories::Seen], sim: &[stories::Seen]) {
    let mut d = Diffs::default();
    d.transcripts(real, sim);
    d.assert_none(what);
}

#[tokio::test(flavor = "multi_thread")]
async fn keystone_tokens_catalogs_and_every_services_version_document_agree() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let (real, sim) = both!(identity(&p.real, &p.sim));
    agree("identity and versions", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn flavors_images_networks_zones_hypervisors_and_types_have_the_same_shapes() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let (real, sim) = both!(catalogue(&p.real, &p.sim));
    agree("what the cloud offers", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_quota_sets_with_usage_have_the_same_shapes() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let (real, sim) = both!(quotas(&p.real, &p.sim));
    agree("limits and quotas", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn ports_and_floating_ips_refuse_taken_and_foreign_addresses_alike() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let _turn = TURN.lock().await;
    tokio::join!(p.real.sweep(), p.sim.sweep());
    let (real, sim) = both!(addresses(&p.real, &p.sim));
    tokio::join!(p.real.sweep(), p.sim.sweep());
    agree("ports and floating IPs", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn keypairs_and_security_groups_exist_and_unknown_ones_refuse_a_server() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let _turn = TURN.lock().await;
    tokio::join!(p.real.sweep(), p.sim.sweep());
    let (real, sim) = both!(keys_and_groups(&p.real, &p.sim));
    tokio::join!(p.real.sweep(), p.sim.sweep());
    agree("keypairs and security groups", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_over_quota_on_a_full_host_and_deleted_fail_and_answer_alike() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let _turn = TURN.lock().await;
    tokio::join!(p.real.sweep(), p.sim.sweep());
    let (real, sim) = tokio::join!(stories::servers(&p.real, &p), stories::servers(&p.sim, &p));
    tokio::join!(p.real.sweep(), p.sim.sweep());
    agree("servers", &real, &sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_of_unknown_types_over_quota_or_below_min_disk_are_refused_alike() {
    let Some(p) = Pair::start("demo").await else {
        return;
    };
    let _turn = TURN.lock().await;
    let (acme_real, acme_sim) = p.login("acme").await;
    tokio::join!(p.real.sweep(), p.sim.sweep());
    let (real, sim) = tokio::join!(
        stories::volumes(&p.real, &acme_real),
        stories::volumes(&p.sim, &acme_sim)
    );
    tokio::join!(p.real.sweep(), p.sim.sweep());
    agree("volumes", &real, &sim);
}

//! `capstan bench scale-out --nodes N`: N workers through Capstan versus the same N through
//! CAPI itself (a MachineSet's replicas raised by N), one after the other on one cloud, and
//! what Capstan asked of the cloud per node.
//!
//! Both run as separate processes, as they would be deployed: the simulated cloud (`capstan
//! sim`, unless `--kubeconfig` names a cloud of your own, e.g. the lab's) and `capstan serve`
//! pointed at it. The simulator counts the requests its clients make (its own controllers
//! excluded), which is where the per-node figures come from; a real cloud gives none.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cloud::capi::{Capi, CapiVersion, Machine, shape};

#[derive(Debug, Args)]
pub struct ScaleOutBenchArgs {
    /// Workers to add, each way.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// With the simulator: simulated seconds per real second.
    #[arg(long, default_value_t = 10.0)]
    pub time_scale: f64,
    /// A management cluster of your own (e.g. the lab's `DIR/kubeconfig`) instead of the
    /// simulator; its cluster `default/demo` and MachineSet `demo-md-0` are used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `capstan <args>` and reads its stdout until a line containing `marker`; returns
/// the rest of that line.
fn spawn(args: &[&str], envs: &[(&str, &str)], marker: &str) -> anyhow::Result<(Proc, String)> {
    let exe = std::env::current_exe().context("finding the capstan binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting capstan {}", args[0]))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let proc = Proc(child);
    for line in lines.by_ref() {
        let line = line?;
        if let Some((_, rest)) = line.split_once(marker) {
            let rest = rest.trim().to_string();
            // Keep the pipe drained so the child never blocks on a full stdout.
            std::thread::spawn(move || for _ in lines {});
            return Ok((proc, rest));
        }
    }
    bail!("capstan {} exited before printing `{marker}`", args[0])
}

/// The demo scenario with room for 3 + 2n workers.
fn scenario(n: usize) -> String {
    let room = (3 + 2 * n + 10) as i64;
    crate::sim::scenario::DEMO
        .replace(
            "quotas: {instances: 50, cores: 200, ram_mib: 409600, volumes: 100, gigabytes: 10000, ports: 200, floatingip: 50}",
            &format!(
                "quotas: {{instances: {room}, cores: {}, ram_mib: {}, volumes: {room}, gigabytes: {}, ports: {room}, floatingip: 50}}",
                room * 4,
                room * 8192,
                room * 50
            ),
        )
        .replace(
            "vcpus: 64, memory_mib: 262144",
            &format!("vcpus: {}, memory_mib: {}", room * 4, room * 8192),
        )
        .replace("cidr: 10.6.0.0/24", "cidr: 10.6.0.0/16")
}

async fn kube_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Running Machines of the set.
async fn running_in_set(machines: &Api<DynamicObject>, set: &str) -> anyhow::Result<usize> {
    Ok(machines
        .list(&kube::api::ListParams::default().labels(&format!("cluster.x-k8s.io/set-name={set}")))
        .await?
        .items
        .iter()
        .filter(|m| Machine::read(m).phase.as_deref() == Some("Running"))
        .count())
}

async fn requests(http: &reqwest::Client, sim: Option<&str>) -> Option<Value> {
    let url = format!("{}/sim/v1/requests", sim?);
    http.get(url).send().await.ok()?.json().await.ok()
}

pub async fn run(args: ScaleOutBenchArgs) -> anyhow::Result<()> {
    let n = args.nodes;
    let dir = tempfile::tempdir()?;
    let dir_str = dir.path().display().to_string();
    let http = reqwest::Client::new();
    // The cloud.
    let (_sim, sim_url, kubeconfig) = match &args.kubeconfig {
        Some(k) => (None, None, k.clone()),
        None => {
            let scenario_text = scenario(n);
            let scenario = dir.path().join("scenario.yaml");
            std::fs::write(&scenario, scenario_text)?;
            let scale = args.time_scale.to_string();
            let (p, url) = spawn(
                &[
                    "sim",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    &dir_str,
                    "--scenario",
                    &scenario.display().to_string(),
                    "--time-scale",
                    &scale,
                ],
                &[],
                "listening on ",
            )?;
            (Some(p), Some(url), dir.path().join("kubeconfig"))
        }
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let db = dir.path().join("bench.db").display().to_string();
    let (_serve, api) = spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--kubeconfig",
            &kubeconfig.display().to_string(),
        ],
        &[("CAPSTAN_ADMIN_TOKEN", token.as_str())],
        "capstan: listening on ",
    )?;
    let client = kube_client(&kubeconfig).await?;
    let version = CapiVersion::discover(&client)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the apiserver serves no Cluster API (cluster.x-k8s.io)"))?;
    let capi = Capi::new(client.clone(), version);
    let machines = capi.machines("default");
    let sets = capi.machine_sets("default");
    let cloud = match &sim_url {
        Some(u) => format!(
            "the simulated cloud at time scale {} ({u})",
            args.time_scale
        ),
        None => format!("the cloud of {}", kubeconfig.display()),
    };
    println!("scale-out bench: {n} workers each way on {cloud}");

    // CAPI alone: the MachineSet's replicas raised by n.
    let set = sets
        .get("demo-md-0")
        .await
        .context("MachineSet default/demo-md-0")?;
    let before = shape::replicas(&set).unwrap_or(0).max(0) as usize;
    let started = Instant::now();
    sets.patch(
        "demo-md-0",
        &PatchParams::default(),
        &Patch::Merge(shape::replicas_patch(json!({}), (before + n) as i64)),
    )
    .await?;
    loop {
        if running_in_set(&machines, "demo-md-0").await? >= before + n {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "the MachineSet never reached {} Running Machines",
                before + n
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_set = started.elapsed();
    println!(
        "machineset: {n} workers Running in {:.2}s (replicas {before} -> {})",
        by_set.as_secs_f64(),
        before + n
    );

    // Capstan: the same n, each one specified.
    let nodes: Vec<Value> = (1..=n)
        .map(|i| json!({"name": format!("bench-w-{i:03}"), "availability_zone": if i % 2 == 0 { "az2" } else { "az1" }}))
        .collect();
    let body = json!({"kind": "scale_out", "cluster": "default/demo", "concurrency": n.min(100),
        "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                     "network": "demo-net", "subnet": "demo-subnet"},
        "nodes": nodes});
    let counted_before = requests(&http, sim_url.as_deref()).await;
    let started = Instant::now();
    let resp = http
        .post(format!("{api}/v1/jobs"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let job: Value = resp.json().await?;
    if status.as_u16() != 202 {
        bail!("the scale_out was refused ({status}): {job}");
    }
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let done = loop {
        let j: Value = http
            .get(format!("{api}/v1/jobs/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if j["finished_at"].is_string() {
            break j;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the scale_out job {id} did not finish in an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_capstan = started.elapsed();
    if done["state"] != "succeeded" {
        bail!("the scale_out job {id} ended {}", done["state"]);
    }
    println!(
        "capstan: {n} workers Running and joined in {:.2}s (job {id})",
        by_capstan.as_secs_f64()
    );
    if let (Some(a), Some(b)) = (counted_before, requests(&http, sim_url.as_deref()).await) {
        let apis = [
            "kubernetes",
            "keystone",
            "nova",
            "neutron",
            "cinder",
            "glance",
        ];
        let per: Vec<String> = apis
            .iter()
            .map(|k| {
                let d = b[k].as_u64().unwrap_or(0) - a[k].as_u64().unwrap_or(0);
                format!("{k} {:.1}", d as f64 / n as f64)
            })
            .collect();
        let openstack: u64 = apis[1..]
            .iter()
            .map(|k| b[k].as_u64().unwrap_or(0) - a[k].as_u64().unwrap_or(0))
            .sum();
        let kube = b["kubernetes"].as_u64().unwrap_or(0) - a["kubernetes"].as_u64().unwrap_or(0);
        println!(
            "capstan requests per node: Kubernetes {:.1}, OpenStack {:.1} ({})",
            kube as f64 / n as f64,
            openstack as f64 / n as f64,
            per.join(", ")
        );
    } else {
        println!("capstan requests per node: not counted (only the simulator counts them)");
    }
    println!(
        "capstan/machineset time ratio: {:.2}",
        by_capstan.as_secs_f64() / by_set.as_secs_f64()
    );
    Ok(())
}

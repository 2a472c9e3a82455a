//! `capstan bench engine` (`engine.rs`): N jobs x K no-op steps through the real engine, on
//! SQLite or a scratch PostgreSQL database (`scratch.rs`), by one engine or several replicas,
//! and, in the same run, the floor: the same number of minimal transactions (one UPDATE and
//! one INSERT each) through sqlx on the same database and settings. The ratio says how much
//! the engine costs over the database itself.
//!
//! `capstan bench sim`: the simulator in this process, grown to N running worker Machines
//! (each with its server, port and root volume), and what that costs in memory and time.
//!
//! `capstan bench scale-out` (`scale_out.rs`): N workers through Capstan versus through a
//! MachineSet, on the simulator or a cloud of your own.

mod engine;
pub mod scale_out;
mod scratch;

pub use engine::{EngineBenchArgs, EngineReport, engine};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

/// A `/proc/self/status` figure (`VmRSS`, `VmHWM`) in MB; NaN where there is no procfs.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM")
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn tempdir_in(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("capstan-bench-{}", uuid::Uuid::new_v4())),
    };
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

#[derive(Debug, Args)]
pub struct SimBenchArgs {
    /// Worker Machines to bring up (each with a server, a port and a root volume).
    #[arg(long, default_value_t = 1000)]
    pub machines: usize,
    /// Simulated seconds per real second: boots and Node joins all but instant.
    #[arg(long, default_value_t = 1000.0)]
    pub time_scale: f64,
}

/// The demo scenario with room for `n` workers: quotas, hypervisors and the subnet raised,
/// and `demo-md-0` starting empty (it is grown once it points at a template with a root
/// volume).
fn bench_scenario(n: usize) -> String {
    let n = n as i64 + 100;
    crate::sim::scenario::DEMO
        .replace(
            "quotas: {instances: 50, cores: 200, ram_mib: 409600, volumes: 100, gigabytes: 10000, ports: 200, floatingip: 50}",
            &format!(
                "quotas: {{instances: {n}, cores: {}, ram_mib: {}, volumes: {n}, gigabytes: {}, ports: {n}, floatingip: 50}}",
                n * 4,
                n * 8192,
                n * 50
            ),
        )
        .replace(
            "vcpus: 64, memory_mib: 262144",
            &format!("vcpus: {}, memory_mib: {}", n * 4, n * 8192),
        )
        .replace("cidr: 10.6.0.0/24", "cidr: 10.6.0.0/16")
        .replace("replicas: 3,", "replicas: 0,")
}

pub async fn sim(args: SimBenchArgs) -> anyhow::Result<()> {
    use crate::sim::kube::MANAGEMENT;
    use crate::sim::kube::resources::ix;
    use crate::sim::kube::store::Target;

    let n = args.machines;
    let dir = tempdir_in(None)?;
    let scenario = dir.join("scenario.yaml");
    std::fs::write(&scenario, bench_scenario(n))?;
    let rss_before = proc_status_mb("VmRSS");
    let started = Instant::now();
    let sim = crate::sim::Sim::start(&crate::sim::SimOptions {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        state_dir: dir.clone(),
        scenario: Some(scenario),
        seed: 1,
        time_scale: args.time_scale,
        external_kube: None,
        follow_nova: None,
    })
    .await?;
    println!(
        "sim bench: {n} worker Machines (server + port + {} GiB root volume each) at time scale {}",
        ROOT_VOLUME_GIB, args.time_scale
    );
    {
        let mut clusters = sim.kube.clusters.lock().unwrap();
        let objects = clusters.get_mut(MANAGEMENT).expect("management");
        // A template's spec is immutable (CAPO's webhook): a new one with root volumes,
        // and the set pointed at it, as a user changes a MachineSet's machines.
        let mut template = objects
            .get(ix::OPENSTACK_MACHINE_TEMPLATE, "default", "demo-md-0")
            .expect("the scenario's template")
            .clone();
        template["metadata"] = serde_json::json!({"name": "demo-md-0-bench"});
        template["spec"]["template"]["spec"]["rootVolume"] =
            serde_json::json!({"sizeGiB": ROOT_VOLUME_GIB, "type": "ssd"});
        objects
            .create_own(ix::OPENSTACK_MACHINE_TEMPLATE, "default", template)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        objects.modify(ix::MACHINE_SET, "default", "demo-md-0", Target::Main, |o| {
            o["spec"]["replicas"] = serde_json::json!(n);
            o["spec"]["template"]["spec"]["infrastructureRef"]["name"] =
                serde_json::json!("demo-md-0-bench");
        });
    }
    let running = || -> usize {
        let clusters = sim.kube.clusters.lock().unwrap();
        clusters[MANAGEMENT]
            .list(ix::MACHINE, None)
            .filter(|m| m["status"]["phase"] == "Running")
            .count()
    };
    let deadline = started + Duration::from_secs(1800);
    let mut last_report = Instant::now();
    loop {
        let up = running();
        if up >= n {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {up} of {n} Machines Running after 30 minutes");
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "  {up}/{n} Running after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = started.elapsed();
    // A few more passes at rest: what the steady state holds, not only the peak of the climb.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pass = sim.controllers.timed_pass().await;
    let pass_total: Duration = pass.iter().map(|(_, d)| *d).sum();
    let (servers, ports, volumes) = {
        let c = sim.cloud.lock().unwrap();
        (c.servers.len(), c.ports.len(), c.volumes.len())
    };
    let (objects, history) = {
        let clusters = sim.kube.clusters.lock().unwrap();
        clusters[MANAGEMENT].sizes()
    };
    println!(
        "settled: {} Machines Running in {:.1}s",
        running(),
        settled.as_secs_f64()
    );
    println!("cloud: {servers} servers, {ports} ports, {volumes} volumes");
    println!("management store: {objects} objects, {history} changes in the watch history");
    let by_controller: Vec<String> = pass
        .iter()
        .map(|(what, d)| format!("{what} {:.1}", d.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "one controller pass at rest: {:.1} ms ({})",
        pass_total.as_secs_f64() * 1000.0,
        by_controller.join(", ")
    );
    println!(
        "RSS: {:.1} MB now, {:.1} MB peak ({:.1} MB before the simulator started)",
        proc_status_mb("VmRSS"),
        proc_status_mb("VmHWM"),
        rss_before
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The root volume each bench Machine boots from.
const ROOT_VOLUME_GIB: i64 = 20;

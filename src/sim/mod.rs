//! The simulated cloud: a separate world that speaks the real wire protocols, so Capstan (and
//! any other client) is exercised exactly as against a real cloud.
//!
//! Invariant: nothing outside this module tree imports it except the command line that starts
//! it (and `capstan bench sim`, which measures it); the engine and the lifecycle steps meet
//! it only over loopback HTTP, through the `clouds.yaml` it writes.
//!
//! Served so far: Keystone auth, catalog, token validation and a user's projects; Nova
//! flavors, AZs, hypervisors, limits, quota sets and servers (with fault hooks); Neutron
//! networks, subnets, ports, floating IPs and quotas; Cinder volume types, volumes and quota
//! sets; Glance images. A member's token sees only its project's resources (and external
//! networks), as the services' default policies scope it; an admin's reaches further where
//! upstream lets it. Scripted faults and the Kubernetes API come next (issue 3).

mod control;
pub mod controllers;
mod external;
mod real_nova;

pub mod kube;
pub mod openstack;
pub mod scenario;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use scenario::Scenario;

/// The User-Agent of the simulated controllers' own OpenStack calls, which the request counts
/// leave out (`GET /sim/v1/requests` counts what the cloud's clients asked).
pub const CONTROLLER_AGENT: &str = "capstan-sim-controllers";

/// The cloud name written to `clouds.yaml` for the first project.
pub const CLOUD_NAME: &str = "capstan-sim";

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    /// Where `clouds.yaml` is written.
    pub state_dir: PathBuf,
    /// A scenario file; the built-in demo when `None`.
    pub scenario: Option<PathBuf>,
    /// Seeds the IDs the cloud hands out, so runs repeat.
    pub seed: u64,
    /// Simulated seconds per real second (a server's 20 s boot takes 20 ms at 1000).
    pub time_scale: f64,
    /// The lab mode: a real apiserver (this kubeconfig) runs CAPI and CAPO; the simulator
    /// serves OpenStack and registers booted servers' Nodes there (`external.rs`). Its own
    /// Kubernetes side is not seeded and its controllers do not run.
    pub external_kube: Option<PathBuf>,
    /// With `external_kube`: the kubelets follow a real Nova instead of the simulated one —
    /// this `clouds.yaml` and the entry to log in as (an admin's: it lists every project).
    pub follow_nova: Option<(PathBuf, String)>,
}

/// Simulated seconds from a server's ACTIVE to its Node joining the workload cluster.
pub const NODE_JOIN_SECONDS: f64 = 10.0;

/// A running simulator.
pub struct Sim {
    pub addr: SocketAddr,
    pub clouds_yaml: PathBuf,
    pub kubeconfig: PathBuf,
    pub cloud: openstack::Shared,
    pub kube: kube::Kube,
    pub controllers: Arc<controllers::Controllers>,
    task: tokio::task::JoinHandle<()>,
    controller_task: tokio::task::JoinHandle<()>,
}

impl Sim {
    /// Binds, builds the scenario's cloud and clusters, writes `clouds.yaml` and `kubeconfig`,
    /// serves in the background, and lets the scenario's existing workers come up (instantly)
    /// before returning.
    pub async fn start(opts: &SimOptions) -> anyhow::Result<Sim> {
        let text = match &opts.scenario {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario {}", path.display()))?,
            None => scenario::DEMO.to_string(),
        };
        let scenario = Scenario::parse(&text).context("scenario")?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let mut rng = fastrand::Rng::with_seed(opts.seed);
        let mut cloud = openstack::Cloud::new(&scenario, base.clone(), &mut rng)?;
        cloud.time_scale = opts.time_scale;
        let cloud = Arc::new(Mutex::new(cloud));
        std::fs::create_dir_all(&opts.state_dir)?;
        let clouds_yaml = opts.state_dir.join("clouds.yaml");
        let project_ids: Vec<String> = {
            let c = cloud.lock().unwrap();
            scenario
                .projects
                .iter()
                .map(|p| {
                    c.projects
                        .iter()
                        .find(|x| x.name == p.name)
                        .map(|x| x.id.clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        write_private(
            &clouds_yaml,
            &clouds_yaml_text(&scenario, &project_ids, &base),
        )?;
        let kube = kube::KubeWorld::new();
        let kubeconfig = opts.state_dir.join("kubeconfig");
        let token = kube.token(kube::MANAGEMENT).expect("management token");
        write_private(&kubeconfig, &kube::kubeconfig(&base, "capstan-sim", &token))?;
        let clock = controllers::Clock::new(opts.time_scale);
        let controllers = controllers::Controllers::new(kube.clone(), clock, NODE_JOIN_SECONDS);
        let console = control::Console::new(cloud.clone(), kube.clone(), controllers.clone());
        let counts = control::Counts::default();
        let app = openstack::router(cloud.clone())
            .merge(kube::router(kube.clone()))
            .merge(control::router(console))
            .merge(control::counts_router(counts.clone()))
            .layer(axum::middleware::from_fn_with_state(counts, control::count));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        {
            let c = cloud.lock().unwrap();
            let ids = |what: &str| -> String {
                let (kind, name) = what.split_once(':').unwrap_or(("", what));
                match kind {
                    "project" => c
                        .projects
                        .iter()
                        .find(|p| p.name == name)
                        .map(|p| p.id.clone()),
                    "network" => c
                        .networks
                        .iter()
                        .find(|n| n.name == name)
                        .map(|n| n.id.clone()),
                    _ => c
                        .subnets
                        .iter()
                        .find(|s| s.name == name)
                        .map(|s| s.id.clone()),
                }
                .unwrap_or_default()
            };
            if opts.external_kube.is_none() {
                controllers::seed::seed(&kube, &scenario, &base, &ids);
            }
        }
        let controller_task = match &opts.external_kube {
            Some(kubeconfig) => {
                let (kubeconfig, faults) = (kubeconfig.clone(), controllers.clone());
                let source = match &opts.follow_nova {
                    Some((clouds, name)) => external::Source::Nova(Box::new(
                        real_nova::RealNova::from_clouds_yaml(clouds, name)?,
                    )),
                    None => external::Source::Sim(cloud.clone()),
                };
                let join_after =
                    std::time::Duration::from_secs_f64(NODE_JOIN_SECONDS / opts.time_scale);
                tokio::spawn(async move {
                    if let Err(e) =
                        external::kubelets(&kubeconfig, source, faults, join_after).await
                    {
                        tracing::error!(error = %e, "the external kubelets stopped");
                    }
                })
            }
            None => {
                // The scenario's workers exist before anyone looks: boot and join without delay.
                let boot = std::mem::replace(&mut cloud.lock().unwrap().boot_seconds, 0.0);
                controllers::Controllers::new(kube.clone(), clock, 0.0)
                    .settle(200)
                    .await;
                cloud.lock().unwrap().boot_seconds = boot;
                controllers.clone().spawn()
            }
        };
        Ok(Sim {
            addr,
            clouds_yaml,
            kubeconfig,
            cloud,
            kube,
            controllers,
            task,
            controller_task,
        })
    }

    /// Keystone's URL, as written to `clouds.yaml`.
    pub fn auth_url(&self) -> String {
        format!("http://{}/identity/v3", self.addr)
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tokio::select! {
            _ = crate::serve::shutdown_signal() => {}
            r = self.task => r?,
            r = self.controller_task => r?,
        }
        Ok(())
    }
}

/// The `clouds.yaml` entry for a project's `j`th user: the first project's first user is
/// `capstan-sim`, another project's first user `capstan-sim-<project>`, any further user
/// `capstan-sim-<project>-<user>`.
fn cloud_name(project_index: usize, project: &str, user_index: usize, user: &str) -> String {
    match (project_index, user_index) {
        (0, 0) => CLOUD_NAME.to_string(),
        (_, 0) => format!("{CLOUD_NAME}-{project}"),
        _ => format!("{CLOUD_NAME}-{project}-{user}"),
    }
}

/// One cloud entry per project user, named by [`cloud_name`].
fn clouds_yaml_text(s: &Scenario, project_ids: &[String], base: &str) -> String {
    let mut out = String::from(
        "# Written by `capstan sim`: the simulated cloud, as any OpenStack client reads it.\nclouds:\n",
    );
    for (i, p) in s.projects.iter().enumerate() {
        for (j, u) in p.users.iter().enumerate() {
            let name = cloud_name(i, &p.name, j, &u.name);
            out.push_str(&format!(
                "  {name}:\n    auth:\n      auth_url: {base}/identity/v3\n      username: {user}\n      password: {password:?}\n      project_name: {project}\n      project_id: {project_id}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {region}\n    interface: public\n    identity_api_version: 3\n",
                user = u.name,
                password = u.password.expose(),
                project = p.name,
                project_id = project_ids[i],
                region = s.region,
            ));
        }
    }
    out
}

/// Writes a file only its owner can read: it holds passwords.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

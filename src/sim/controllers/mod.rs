//! Controllers that behave like CAPI, CAPO v0.14, the kubeadm bootstrap provider and the
//! workload clusters' kubelets, flaws included. They work the simulated API servers'
//! objects in process and reach the simulated OpenStack over HTTP, as CAPO does.
//!
//! Level-triggered: every pass looks at every object and moves it one step; a pass runs
//! every [`TICK`]. Delays (boots, Node joins, retries) are in simulated seconds, scaled by
//! the time-scale factor.

pub mod capi;
pub mod capo;
pub mod openstack;
pub mod seed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::kube::Kube;
use super::kube::resources::ix;
use openstack::{Credentials, Session};

/// How often the controllers make a pass.
pub const TICK: Duration = Duration::from_millis(40);

/// Simulated time: real time since start, times the scale factor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Clock {
        Clock {
            start: Instant::now(),
            scale,
        }
    }

    /// Simulated seconds since start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.scale
    }
}

/// Faults the controllers act out, set through `/sim/v1/faults`.
#[derive(Debug, Default)]
pub struct Faults {
    /// Machines whose finalizer CAPI never removes.
    pub stuck_finalizers: Vec<String>,
    /// CAPO deletes servers but leaves their ports / volumes behind.
    pub leak_ports: bool,
    pub leak_volumes: bool,
    /// Nodes that go NotReady from a simulated time on: `(node, at)`.
    pub nodes_not_ready: Vec<(String, f64)>,
}

/// What the controllers remember between passes (as controller-runtime's queues would).
#[derive(Debug, Default)]
pub struct Memory {
    /// When each OpenStackServer (by UID) was first seen ACTIVE.
    pub active_since: HashMap<String, f64>,
    /// Backoff after a failed reconcile: `(next attempt, failures so far)`.
    pub retry_at: HashMap<String, (f64, u32)>,
    /// Next resync of a settled server.
    pub resync_at: HashMap<String, f64>,
}

pub struct Controllers {
    pub kube: Kube,
    pub clock: Clock,
    /// Simulated seconds from a server's ACTIVE to its Node joining.
    pub node_join_seconds: f64,
    pub faults: Mutex<Faults>,
    pub memory: Mutex<Memory>,
    http: reqwest::Client,
    sessions: tokio::sync::Mutex<HashMap<Credentials, Session>>,
}

impl Controllers {
    pub fn new(kube: Kube, clock: Clock, node_join_seconds: f64) -> Arc<Controllers> {
        Arc::new(Controllers {
            kube,
            clock,
            node_join_seconds,
            faults: Mutex::new(Faults::default()),
            memory: Mutex::new(Memory::default()),
            // Marked, so the simulator's request counts are its clients' alone.
            http: reqwest::Client::builder()
                .user_agent(crate::sim::CONTROLLER_AGENT)
                .build()
                .expect("a reqwest client"),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// One pass of every controller, in the order objects flow.
    pub async fn pass(&self) {
        self.timed_pass().await;
    }

    /// A pass that says how long each controller took (`capstan bench sim` prints it).
    pub async fn timed_pass(&self) -> Vec<(&'static str, Duration)> {
        let mut took = Vec::with_capacity(7);
        let mut at = Instant::now();
        let mut lap = |what: &'static str| {
            took.push((what, at.elapsed()));
            at = Instant::now();
        };
        capi::reconcile_machine_deployments(&self.kube);
        lap("MachineDeployments");
        capi::reconcile_machine_sets(&self.kube);
        lap("MachineSets");
        capi::reconcile_kubeadm_configs(&self.kube);
        lap("KubeadmConfigs");
        capi::reconcile_machines(self);
        lap("Machines");
        capo::reconcile_machines(self);
        lap("OpenStackMachines");
        capo::reconcile_servers(self).await;
        lap("OpenStackServers");
        capi::reconcile_nodes(self);
        lap("Nodes");
        took
    }

    /// Passes until every Machine is Running (or `max` passes): the scenario's existing
    /// workers, before anyone connects.
    pub async fn settle(&self, max: usize) {
        for _ in 0..max {
            self.pass().await;
            let clusters = self.kube.clusters.lock().unwrap();
            let all_running = clusters[super::kube::MANAGEMENT]
                .list(ix::MACHINE, None)
                .all(|m| m["status"]["phase"] == "Running");
            let sets_full = clusters[super::kube::MANAGEMENT]
                .list(ix::MACHINE_SET, None)
                .all(|s| s["status"]["replicas"] == s["spec"]["replicas"]);
            if all_running && sets_full {
                return;
            }
        }
    }

    /// Runs passes until the task is dropped.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.pass().await;
                tokio::time::sleep(TICK).await;
            }
        })
    }
}

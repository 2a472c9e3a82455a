//! The engine: claims due jobs, runs their node state machines, fires schedules.
//!
//! Bird's-eye: [`Engine::run`] loops claiming jobs whose `next_run_at` is due and whose lease
//! is free or lapsed; each claimed job gets a [`runner`] task that owns it until nothing is due
//! soon. [`scheduler`] turns cron ticks into jobs. Waits live in the database (`wake_at`), so
//! a restarted engine simply claims what is due.
//!
//! Invariants: the engine talks to the world only through registered steps; it never sleeps
//! inside a step; every write it makes for a job is fenced by the token it claimed it with.

pub mod admission;
pub mod intake;
pub mod progress;
pub mod request;
pub mod retry;
mod runner;
pub mod scheduler;
pub mod step;
pub mod workflow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::Store;
use step::Registry;
use workflow::Workflow;

/// Jobs claimed in one transaction at most.
const CLAIM_BATCH: usize = 64;

/// Tunables of one engine process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Identifies this process in leases and history.
    pub worker_id: String,
    /// How long a claim lasts without a heartbeat; a crashed worker's jobs resume after it.
    pub lease: Duration,
    /// How often to look for due jobs written by other processes.
    pub poll: Duration,
    /// Jobs this process runs at once.
    pub max_jobs: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            // The random part tells a restarted process (same PID in a container) from the
            // one that died, so the takeover is recorded.
            worker_id: format!(
                "{}-{}-{:04x}",
                hostname(),
                std::process::id(),
                fastrand::u16(..)
            ),
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(250),
            max_jobs: 64,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "capstan".into())
}

pub(crate) struct Inner {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub workflows: HashMap<String, Arc<Workflow>>,
    pub config: EngineConfig,
    pub metrics: Arc<Metrics>,
    held: runner::Held,
    poke: Notify,
    pub shutdown: watch::Receiver<bool>,
}

/// A handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        workflows: HashMap<String, Arc<Workflow>>,
        config: EngineConfig,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                workflows,
                config,
                metrics,
                held: runner::Held::default(),
                poke: Notify::new(),
                shutdown,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn workflows(&self) -> &HashMap<String, Arc<Workflow>> {
        &self.inner.workflows
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Flips to `true` when the process begins to shut down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    /// Tells the engine a job may have work now (submitted, resumed, cancelled).
    pub fn wake(&self, job_id: &str) {
        match self.inner.held.get(job_id) {
            Some(n) => n.notify_one(),
            None => self.inner.poke.notify_one(),
        }
    }

    /// Claims and runs due jobs until shutdown, then lets running jobs reach a safe point
    /// and release their leases.
    pub async fn run(&self) {
        let inner = &self.inner;
        info!(worker = %inner.config.worker_id, lease = ?inner.config.lease, "engine started");
        let mut runners = JoinSet::new();
        let mut shutdown = inner.shutdown.clone();
        let remote = tokio::spawn(wake_on_remote_writes(self.inner.clone()));
        let lease_ms = inner.config.lease.as_millis() as i64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let room = inner
                .config
                .max_jobs
                .saturating_sub(inner.held.len())
                .min(CLAIM_BATCH);
            if room > 0 {
                match inner
                    .store
                    .claim_due(&inner.config.worker_id, lease_ms, room)
                    .await
                {
                    Ok(claims) => {
                        let full = claims.len() == room;
                        for claim in claims {
                            let id = claim.job.id.clone();
                            let wake = inner.held.insert(&id);
                            let inner = self.inner.clone();
                            runners.spawn(async move {
                                runner::run(inner.clone(), claim, wake.clone()).await;
                                inner.held.remove(&id, &wake);
                            });
                        }
                        if full {
                            continue; // more may be due
                        }
                    }
                    Err(e) => warn!(error = %e, "claiming jobs failed; will retry"),
                }
            }
            tokio::select! {
                _ = inner.poke.notified() => {}
                _ = tokio::time::sleep(inner.config.poll) => {}
                Some(_) = runners.join_next(), if !runners.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        remote.abort();
        while runners.join_next().await.is_some() {}
        info!("engine stopped");
    }

    /// Fires due schedules until shutdown.
    /// Fires due schedules through `intake`, each as its owner.
    pub async fn run_scheduler(&self, intake: Arc<intake::Intake>) {
        scheduler::run(self.clone(), intake).await
    }
}

/// Another replica wrote to a job this process does not hold (PostgreSQL's NOTIFY: a
/// submit, a resume, a nudge, a release): claim now rather than on the next poll. Notices
/// about held jobs are this process's own writes (or an operator's, which the runner's
/// heartbeat reads), so they wake nothing.
async fn wake_on_remote_writes(inner: Arc<Inner>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut notices = inner.store.subscribe_remote();
    loop {
        match notices.recv().await {
            Ok(job) if !job.is_empty() && inner.held.get(&job).is_some() => {}
            Ok(_) | Err(RecvError::Lagged(_)) => inner.poke.notify_one(),
            Err(RecvError::Closed) => return,
        }
    }
}

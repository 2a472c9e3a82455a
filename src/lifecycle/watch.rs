//! Event-driven waits: watches on the Machines and OpenStackMachines Capstan made (and the
//! OpenStackServers behind them) nudge the job that waits on them, so a waiting node looks
//! again when its objects change instead of polling; its recheck interval is only a
//! safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::debug;

use crate::cloud::Clients;
use crate::cloud::capi::{self, JOB_LABEL};
use crate::engine::Engine;

/// `namespace/name` of a node's objects → the job that made them.
type Jobs = Arc<Mutex<HashMap<String, String>>>;

/// Runs the watches until the process ends.
pub fn spawn(clients: &Clients, engine: Engine) -> Vec<tokio::task::JoinHandle<()>> {
    let jobs: Jobs = Arc::default();
    let labelled = watcher::Config::default().labels(JOB_LABEL);
    let all =
        |ar: kube::api::ApiResource| Api::<DynamicObject>::all_with(clients.kube.clone(), &ar);
    vec![
        tokio::spawn(run(
            all(capi::machine_resource()),
            labelled.clone(),
            jobs.clone(),
            engine.clone(),
        )),
        tokio::spawn(run(
            all(capi::openstack_machine_resource()),
            labelled,
            jobs.clone(),
            engine.clone(),
        )),
        tokio::spawn(run(
            all(capi::openstack_server_resource()),
            watcher::Config::default(),
            jobs,
            engine,
        )),
    ]
}

async fn run(api: Api<DynamicObject>, config: watcher::Config, jobs: Jobs, engine: Engine) {
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let obj = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => o,
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "watch interrupted; it resumes");
                continue;
            }
        };
        let key = format!(
            "{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default()
        );
        let job = match obj.metadata.labels.as_ref().and_then(|l| l.get(JOB_LABEL)) {
            Some(j) => {
                jobs.lock().unwrap().insert(key, j.clone());
                j.clone()
            }
            None => match jobs.lock().unwrap().get(&key) {
                Some(j) => j.clone(),
                None => continue,
            },
        };
        match engine.store().nudge(&job).await {
            Ok(true) => engine.wake(&job),
            Ok(false) => {}
            Err(e) => tracing::warn!(job = %job, error = %e, "could not nudge a waiting job"),
        }
    }
}

//! Event-driven waits: watches on Machines, OpenStackMachines and OpenStackServers nudge
//! the unfinished jobs whose waiting node has that name (a node's objects share its name),
//! so a waiting node looks again when its objects change instead of polling; its recheck
//! interval is only a safety net.

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::debug;

use crate::cloud::Clients;
use crate::cloud::capi;
use crate::engine::Engine;

/// Runs the watches until the process ends. The Machine watch starts once the CAPI version
/// the apiserver serves is known (asked again every few seconds until it answers).
pub fn spawn(clients: &Clients, engine: Engine) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = [
        capi::openstack_machine_resource(),
        capi::openstack_server_resource(),
    ]
    .into_iter()
    .map(|ar| {
        let api = Api::<DynamicObject>::all_with(clients.kube.clone(), &ar);
        tokio::spawn(run(api, engine.clone()))
    })
    .collect();
    let clients = clients.clone();
    tasks.push(tokio::spawn(async move {
        let capi = loop {
            match clients.capi().await {
                Ok(c) => break c,
                Err(e) => {
                    debug!(error = %e, "the Cluster API version is not known yet; asking again");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        };
        run(capi.all_machines(), engine).await
    }));
    tasks
}

async fn run(api: Api<DynamicObject>, engine: Engine) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        let obj = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => o,
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "watch interrupted; it resumes");
                continue;
            }
        };
        let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        match engine.store().nudge(ns, name).await {
            Ok(jobs) => jobs.iter().for_each(|j| engine.wake(j)),
            Err(e) => tracing::warn!(node = %name, error = %e, "could not nudge waiting jobs"),
        }
    }
}

//! The lab mode (`capstan sim --external-kube KUBECONFIG`): the simulated OpenStack beside a
//! real Kubernetes API server on which the real CAPI and CAPO managers run. The simulator's
//! own Kubernetes side and controllers stay off; it does only what no real component does
//! here — the kubelet of each booted server: a server ACTIVE for the join delay gets a Node
//! registered in the workload cluster (the external apiserver), with `spec.providerID` as
//! CAPO writes it (`openstack:///<id>`), kubelet's labels and a Ready condition; a Node
//! whose server is gone is removed, as the cloud controller manager would. The servers come
//! from the simulated cloud, or (`--follow-nova`) from a real Nova (`real_nova.rs`): a
//! [`Source`]. A Node under the `node_not_ready` fault is left as the node lifecycle
//! controller leaves one whose kubelet stopped posting (the lab runs no such controller): its
//! four conditions Unknown.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::controllers::Controllers;
use super::openstack::Shared;
use super::real_nova::RealNova;

/// Marks the Nodes this loop registered (and may remove).
const REGISTERED_BY: &str = "sim.capstan.io/kubelet";

/// One server the loop may register.
pub(super) struct Booted {
    pub(super) name: String,
    pub(super) id: String,
    pub(super) zone: String,
    pub(super) flavor: String,
    pub(super) address: Option<String>,
    /// When it became ACTIVE; its Node joins the join delay later.
    pub(super) ready_at: Instant,
}

/// Where the kubelets learn which servers have booted.
pub enum Source {
    /// The simulated cloud of this process.
    Sim(Shared),
    /// A real Nova, read over HTTP (the upstream lab with real OpenStack).
    Nova(Box<RealNova>),
}

impl Source {
    /// How often to look: a real Nova is asked over HTTP, so less often than the sim.
    fn period(&self) -> Duration {
        match self {
            Source::Sim(_) => Duration::from_millis(250),
            Source::Nova(_) => Duration::from_secs(1),
        }
    }

    async fn booted(&mut self) -> anyhow::Result<Vec<Booted>> {
        match self {
            Source::Sim(cloud) => Ok(booted(cloud)),
            Source::Nova(nova) => nova.booted().await,
        }
    }
}

fn booted(cloud: &Shared) -> Vec<Booted> {
    let mut c = cloud.lock().unwrap();
    c.advance();
    let flavors: Vec<(String, String)> = c
        .flavors
        .iter()
        .map(|f| (f.id.clone(), f.name.clone()))
        .collect();
    c.servers
        .iter()
        .filter(|s| s.status.as_str() == "ACTIVE")
        .map(|s| Booted {
            name: s.name.clone(),
            id: s.id.clone(),
            zone: s.availability_zone.clone(),
            flavor: flavors
                .iter()
                .find(|(id, _)| *id == s.flavor_id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            address: s.ports.first().and_then(|p| {
                c.ports
                    .iter()
                    .find(|x| x.id == *p)
                    .and_then(|x| x.fixed_ips.first())
                    .map(|(_, a)| a.to_string())
            }),
            ready_at: s.ready_at,
        })
        .collect()
}

/// Registers and removes Nodes in the external apiserver until the process ends.
pub async fn kubelets(
    kubeconfig: &Path,
    mut source: Source,
    faults: Arc<Controllers>,
    join_after: Duration,
) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let nodes: Api<Node> = Api::all(kube::Client::try_from(config)?);
    loop {
        if let Err(e) = pass(&nodes, &mut source, join_after).await {
            tracing::warn!(error = %e, "registering Nodes in the external apiserver");
        }
        if let Err(e) = not_ready(&nodes, &faults).await {
            tracing::warn!(error = %e, "posting Node conditions in the external apiserver");
        }
        tokio::time::sleep(source.period()).await;
    }
}

async fn pass(nodes: &Api<Node>, source: &mut Source, join_after: Duration) -> anyhow::Result<()> {
    let servers = source.booted().await?;
    let existing = nodes
        .list(&kube::api::ListParams::default().labels(REGISTERED_BY))
        .await?
        .items;
    let have: BTreeSet<String> = existing
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    for s in servers
        .iter()
        .filter(|s| s.ready_at + join_after <= Instant::now() && !have.contains(&s.name))
    {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": s.name, "labels": {
                REGISTERED_BY: "true",
                "kubernetes.io/hostname": s.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": s.flavor,
                "topology.kubernetes.io/zone": s.zone,
            }},
            "spec": {"providerID": format!("openstack:///{}", s.id)},
        });
        let node: Node = serde_json::from_value(node)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let mut addresses = vec![json!({"type": "Hostname", "address": s.name})];
        if let Some(a) = &s.address {
            addresses.push(json!({"type": "InternalIP", "address": a}));
        }
        let status = json!({"status": {
            "conditions": posted(),
            "addresses": addresses,
            "nodeInfo": {"kubeletVersion": "v1.30.4", "kubeProxyVersion": "v1.30.4",
                "operatingSystem": "linux", "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.0", "osImage": "Ubuntu 22.04",
                "kernelVersion": "5.15.0", "machineID": s.id, "systemUUID": s.id,
                "bootID": s.id},
        }});
        nodes
            .patch_status(&s.name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    let alive: BTreeSet<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    for gone in have.iter().filter(|n| !alive.contains(n.as_str())) {
        let _ = nodes.delete(gone, &DeleteParams::default()).await;
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// All four of kubelet's conditions as a healthy kubelet posts them: CAPI's NodeHealthy wants
/// the pressure ones False as well as Ready True (the lab found Machines never Ready without
/// them).
fn posted() -> serde_json::Value {
    let now = now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// The `node_not_ready` fault: a faulted Node's conditions go Unknown as the node lifecycle
/// controller sets them once a kubelet stops posting (reason `NodeStatusUnknown`, the last
/// heartbeat kept); when the fault ends the kubelet posts again. (Real CAPI v1.12 then reads
/// the Machine's NodeHealthy as Unknown: Ready alone Unknown would still count as healthy.)
async fn not_ready(nodes: &Api<Node>, faults: &Controllers) -> anyhow::Result<()> {
    let now_sim = faults.clock.now();
    let down: BTreeSet<String> = faults
        .faults
        .lock()
        .unwrap()
        .nodes_not_ready
        .iter()
        .filter(|(_, at)| now_sim >= *at)
        .map(|(n, _)| n.clone())
        .collect();
    let registered = nodes
        .list(&kube::api::ListParams::default().labels(REGISTERED_BY))
        .await?
        .items;
    for node in registered {
        let name = node.metadata.name.clone().unwrap_or_default();
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        let ready = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let conditions = match (ready, down.contains(&name)) {
            (true, true) => {
                let now = now();
                let unknown: Vec<serde_json::Value> = conditions
                    .iter()
                    .map(|c| {
                        json!({"type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": "Kubelet stopped posting node status.",
                               "lastHeartbeatTime": c.last_heartbeat_time, "lastTransitionTime": now})
                    })
                    .collect();
                json!(unknown)
            }
            (false, false) if !conditions.is_empty() => posted(),
            _ => continue,
        };
        nodes
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await?;
    }
    Ok(())
}

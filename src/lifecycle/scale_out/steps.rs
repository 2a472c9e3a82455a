//! `scale_out`: workers specified one by one, created as CAPI Machines with CAPO
//! OpenStackMachines, watched until their Node is healthy, with failures classified where
//! they really appear, the failed attempt cleaned up through OpenStack, and retries under
//! DESIGN §4's policies. `workflows/scale_out.yaml` is the state machine:
//!
//! quota → create → provision → floating_ip → join → done; any failure → cleanup → quota
//! (or `needs_input` for a wrong spec).
//!
//! Every step is safe to re-run after a crash: it looks before it creates, finds what an
//! earlier run made by name and by Capstan's labels, and records IDs before using them.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};

use super::admission::ScaleOutParams;
use super::classify::{self, Classified, Failure, Source};
use super::common::{
    capi_of, cluster_of, kube_error, os_error, os_failure, os_of, server_of, workload_client,
};
use super::leftovers::Removal;
use super::progress::{RecordedFailure, ScaleOutProgress};
use super::quota::{self, Need};
use super::spec::{FloatingIp, NodeSpec};
use crate::cloud::capi::capo::{OpenStackCluster, OpenStackServer};
use crate::cloud::capi::{
    self, CLUSTER_NAME_LABEL, Capi, JOB_LABEL, MANAGED_LABEL, Machine, MachineFields, NODE_LABEL,
};
use crate::cloud::marks;
use crate::cloud::os::{CallError, OpenStack, Service};
use crate::cloud::{Clients, ClusterRef};
use crate::engine::retry::RetryPolicy;
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::lifecycle::params;
use crate::model::{EventKind, FailureClass, WAITING_FOR_QUOTA};
use crate::store::now_ms;

/// How often a waiting node looks again without being nudged: watches on its Machine,
/// OpenStackMachine and OpenStackServer wake it when they change (`lifecycle::watch`), so
/// this is only a safety net — for changes only OpenStack sees (a Nova fault).
const RECHECK: Duration = Duration::from_secs(3);
/// How often a node waiting for quota reads the quota again (no watch sees quota change).
const QUOTA_RECHECK: Duration = Duration::from_secs(5);
/// A Machine with no server this long is looked into (CAPO shows nothing for a failed lookup).
const STALL_AFTER: Duration = Duration::from_secs(60);
/// Backoff between attempts after a cleaned-up failure: 2 s doubling to 60 s, each delay
/// drawn from 100–120% of that. The engine's policy type draws its jitter both ways, so the
/// band is written as its centre (110%: 2.2 s to 66 s) ± 1/11.
const ATTEMPT_BACKOFF: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(2_200),
    cap: Duration::from_millis(66_000),
    jitter: 1.0 / 11.0,
    max_attempts: None,
    deadline: None,
};

pub fn register(r: &mut Registry, clients: Clients) {
    let c = clients.clone();
    r.step("scale_out.quota", &["ok"], move |ctx| {
        let c = c.clone();
        async move { quota_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("scale_out.create", &["ok", "failed"], move |ctx| {
        let c = c.clone();
        async move { create_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("scale_out.provision", &["ready", "failed"], move |ctx| {
        let c = c.clone();
        async move { provision_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("scale_out.floating_ip", &["ok", "failed"], move |ctx| {
        let c = c.clone();
        async move { floating_ip_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("scale_out.join", &["ok", "failed"], move |ctx| {
        let c = c.clone();
        async move { join_step(&c, ctx).await }
    });
    let c = clients;
    r.step("scale_out.cleanup", &["retry"], move |ctx| {
        let c = c.clone();
        async move { cleanup_step(&c, ctx).await }
    });
}

fn spec_of(ctx: &StepContext) -> Result<NodeSpec, StepError> {
    serde_json::from_value(ctx.spec.clone()).map_err(|e| {
        StepError::new(
            FailureClass::InvalidSpec,
            format!("node spec unreadable: {e}"),
        )
    })
}

fn labels_of(o: &DynamicObject) -> BTreeMap<String, String> {
    o.metadata.labels.clone().unwrap_or_default()
}

fn ours(o: &DynamicObject, job: &str) -> bool {
    labels_of(o).get(JOB_LABEL).map(String::as_str) == Some(job)
}

/// Moves the node to cleanup, keeping what failed for the cleanup step and the history.
async fn failed(ctx: &mut StepContext, c: &Classified, text: &str) -> Result<Outcome, StepError> {
    let failure = RecordedFailure {
        class: c.class,
        reason: c.reason.to_string(),
        short: c.short.clone(),
        text: text.to_string(),
    };
    ctx.record(ScaleOutProgress::FAILURE, &failure, None)
        .await?;
    Ok(Outcome::next_because(
        "failed",
        Some(c.class),
        format!("{} ({}): {text}", c.class.as_str(), c.reason),
    ))
}

// ---- quota -------------------------------------------------------------------------------

/// Waits (as `waiting_for_quota`) until the project has room for this node.
async fn quota_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    // A new attempt: the last one's failure and backoff are done with (cleanup leaves them
    // for this step to clear, so a crash inside cleanup never backs off twice).
    let progress: ScaleOutProgress = ctx.progress()?;
    if progress.failure.is_some() {
        ctx.clear(ScaleOutProgress::FAILURE).await?;
    }
    if progress.retry_at.is_some() {
        ctx.clear(ScaleOutProgress::RETRY_AT).await?;
    }
    let os = os_of(c, &cluster_of(&ctx)?).await?;
    let usage = quota::read(&os)
        .await
        .map_err(|e| os_error("reading quota", e))?;
    let need = Need::of(&os, &spec)
        .await
        .map_err(|e| os_error("reading the flavor", e))?;
    let short = usage.short_for(&need);
    if short.is_empty() {
        return Ok(Outcome::next("ok"));
    }
    Ok(Outcome::recheck_in(
        QUOTA_RECHECK,
        format!("{WAITING_FOR_QUOTA}: {}", short.join(", ")),
    ))
}

// ---- create ------------------------------------------------------------------------------

/// What the cluster provides every node: names and references read from its objects.
struct ClusterInfo {
    cluster: ClusterRef,
    identity_ref: Value,
    version: Option<String>,
    bootstrap_secret: String,
}

async fn cluster_info(
    capi: &Capi,
    cluster: &ClusterRef,
    params: &Value,
) -> Result<ClusterInfo, StepError> {
    let (ns, name) = (&cluster.ns, &cluster.name);
    let osc = capi
        .openstack_clusters(ns)
        .get(name)
        .await
        .map_err(|e| kube_error("reading the OpenStackCluster", e))?;
    let identity_ref = OpenStackCluster::read(&osc).identity_ref;
    let own = params::of_job::<ScaleOutParams>(params)?;
    let version = match own.version {
        Some(v) => Some(v),
        None => capi
            .machine_sets(ns)
            .list(&kube::api::ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={name}")))
            .await
            .ok()
            .and_then(|l| l.items.iter().find_map(capi::shape::template_version)),
    };
    let bootstrap_secret = own
        .bootstrap_secret
        .map_or_else(|| format!("{name}-bootstrap"), |s| s.0);
    Ok(ClusterInfo {
        cluster: cluster.clone(),
        identity_ref,
        version,
        bootstrap_secret,
    })
}

fn node_labels(spec: &NodeSpec, cluster: &str, job: &str) -> BTreeMap<String, String> {
    let mut labels = spec.machine_labels();
    labels.insert(CLUSTER_NAME_LABEL.into(), cluster.into());
    labels.insert(JOB_LABEL.into(), job.into());
    labels.insert(NODE_LABEL.into(), spec.name.clone());
    labels.insert(MANAGED_LABEL.into(), "capstan".into());
    labels
}

/// The OpenStackMachine for a node spec (CAPO v1beta1 fields).
fn openstack_machine(
    spec: &NodeSpec,
    info: &ClusterInfo,
    job: &str,
    labels: &BTreeMap<String, String>,
) -> DynamicObject {
    let mut fixed = json!({ "subnet": { "filter": { "name": spec.subnet } } });
    if let Some(ip) = spec.ip {
        fixed["ipAddress"] = json!(ip.to_string());
    }
    let mut osm_spec = json!({
        "flavor": spec.flavor,
        "image": { "filter": { "name": spec.image } },
        "identityRef": info.identity_ref,
        "ports": [{ "network": { "filter": { "name": spec.network } }, "fixedIPs": [fixed] }],
        "tags": ["capstan"],
        // The cluster's mark on the server, the proof later steps need before touching it.
        "serverMetadata": marks::server_metadata(&info.cluster, job),
    });
    if let Some(root) = &spec.root_volume {
        let mut r = json!({ "sizeGiB": root.size_gib });
        if let Some(t) = &root.volume_type {
            r["type"] = json!(t);
        }
        osm_spec["rootVolume"] = r;
    }
    if !spec.data_volumes.is_empty() {
        let devices: Vec<Value> = spec
            .data_volumes
            .iter()
            .map(|d| {
                let mut volume = json!({});
                if let Some(t) = &d.volume_type {
                    volume["type"] = json!(t);
                }
                json!({ "name": d.name, "sizeGiB": d.size_gib,
                        "storage": { "type": "Volume", "volume": volume } })
            })
            .collect();
        osm_spec["additionalBlockDevices"] = json!(devices);
    }
    if let Some(k) = &spec.ssh_key {
        osm_spec["sshKeyName"] = json!(k);
    }
    if !spec.security_groups.is_empty() {
        let groups: Vec<Value> = spec
            .security_groups
            .iter()
            .map(|g| json!({ "filter": { "name": g } }))
            .collect();
        osm_spec["securityGroups"] = json!(groups);
    }
    serde_json::from_value(json!({
        "apiVersion": capi::api_version(capi::CAPO_GROUP, capi::CAPO_VERSION),
        "kind": "OpenStackMachine",
        "metadata": { "name": spec.name, "namespace": info.cluster.ns, "labels": labels },
        "spec": osm_spec,
    }))
    .expect("an OpenStackMachine is a valid object")
}

/// The Machine, in the shape of the CAPI version the cluster serves.
fn machine(
    capi: &Capi,
    spec: &NodeSpec,
    info: &ClusterInfo,
    labels: &BTreeMap<String, String>,
) -> DynamicObject {
    let failure_domain = spec.failure_domain();
    capi.machine(&MachineFields {
        name: &spec.name,
        namespace: &info.cluster.ns,
        labels,
        cluster_name: &info.cluster.name,
        bootstrap_secret: &info.bootstrap_secret,
        version: info.version.as_deref(),
        failure_domain: failure_domain.as_deref(),
    })
}

/// Creates (or adopts, when this job made it) the OpenStackMachine and the Machine.
async fn create_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    let capi = capi_of(c).await?;
    let info = cluster_info(&capi, &cluster_of(&ctx)?, &ctx.params).await?;
    let labels = node_labels(&spec, &info.cluster.name, &ctx.job_id);
    let osms = capi.openstack_machines(&info.cluster.ns);
    let machines = capi.machines(&info.cluster.ns);
    for (api, obj, what) in [
        (
            &osms,
            openstack_machine(&spec, &info, &ctx.job_id, &labels),
            "OpenStackMachine",
        ),
        (&machines, machine(&capi, &spec, &info, &labels), "Machine"),
    ] {
        let existing = api
            .get_opt(&spec.name)
            .await
            .map_err(|e| kube_error(&format!("reading {what}"), e))?;
        match existing {
            Some(o) if ours(&o, &ctx.job_id) => continue,
            Some(_) => {
                let text = format!(
                    "{what} {} already exists and was not made by this job",
                    spec.name
                );
                // The name is someone else's: never adopted, never cleaned up by this job.
                let c = Classified {
                    class: FailureClass::Conflict,
                    ..classify::classify(&Failure::new(Source::Kubernetes, Some(409), &text))
                };
                return failed(&mut ctx, &c, &text).await;
            }
            None => {}
        }
        match api.create(&capi::post_params(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                return Ok(Outcome::recheck_in(
                    RECHECK,
                    format!("{what} appeared meanwhile; looking again"),
                ));
            }
            Err(e) => return Err(kube_error(&format!("creating {what}"), e)),
        }
    }
    let attempt = ctx.progress::<ScaleOutProgress>()?.attempts.unwrap_or(0) + 1;
    ctx.record(
        ScaleOutProgress::ATTEMPTS,
        &attempt,
        Some(format!(
            "attempt {attempt}: Machine and OpenStackMachine {} created",
            spec.name
        )),
    )
    .await?;
    Ok(Outcome::next("ok"))
}

// ---- provision ---------------------------------------------------------------------------

/// Waits until the server is ACTIVE and CAPO says the machine is ready, reading failures
/// where they appear: the Machine's failure fields, the OpenStackServer's `InstanceReady`
/// condition, and Nova's own `fault` (which CAPO v0.14 never surfaces).
async fn provision_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    let cluster = cluster_of(&ctx)?;
    let ns = &cluster.ns;
    let capi = capi_of(c).await?;
    let Some(m) = capi
        .machines(ns)
        .get_opt(&spec.name)
        .await
        .map_err(|e| kube_error("reading the Machine", e))?
    else {
        let text = format!("Machine {} disappeared while provisioning", spec.name);
        let cl = classify::classify(&Failure::new(Source::Kubernetes, Some(404), &text));
        let cl = Classified {
            class: FailureClass::Transient,
            ..cl
        };
        return failed(&mut ctx, &cl, &text).await;
    };
    let machine = Machine::read(&m);
    if let Some((cl, text)) = capi_failure(&capi, ns, &spec, &machine).await? {
        return failed(&mut ctx, &cl, &text).await;
    }
    let os = os_of(c, &cluster).await?;
    let server = server_of(&os, &cluster, &machine).await?;
    if let Some(s) = &server {
        // Each attempt's server (a retry makes a new one): the proof the later steps need.
        if let Some(id) = s["id"].as_str()
            && ctx.progress::<ScaleOutProgress>()?.server_id.as_deref() != Some(id)
        {
            ctx.record(
                ScaleOutProgress::SERVER_ID,
                &id.to_string(),
                Some(format!("server {} is {id}", spec.name)),
            )
            .await?;
        }
        if let Some((cl, text)) = nova_fault(s) {
            return failed(&mut ctx, &cl, &text).await;
        }
    }
    let infra_ready = machine.infrastructure_provisioned;
    let active = server.as_ref().is_some_and(|s| s["status"] == "ACTIVE");
    if infra_ready && active {
        return Ok(Outcome::next("ready"));
    }
    // No server long after the Machine was made: real CAPO requeues a failed lookup (image,
    // flavor, network, subnet) without any condition, so ask the cloud what is missing.
    if server.is_none() && stalled(&m, &ctx.params) {
        return no_server_yet(c, &mut ctx, &os, &spec, ns).await;
    }
    let phase = machine.phase.as_deref().unwrap_or("Pending");
    let state = server
        .as_ref()
        .and_then(|s| s["status"].as_str())
        .unwrap_or("not created yet");
    Ok(Outcome::recheck_in(
        RECHECK,
        format!("provisioning: Machine {phase}, server {state}"),
    ))
}

/// A failure CAPI or CAPO reports for the node: the Machine's failure fields, or the
/// OpenStackServer's `InstanceReady` condition.
async fn capi_failure(
    capi: &Capi,
    ns: &str,
    spec: &NodeSpec,
    machine: &Machine,
) -> Result<Option<(Classified, String)>, StepError> {
    if let Some(text) = machine.failure_message.clone() {
        let cl = classify::classify(&Failure::new(Source::MachineFailure, None, &text));
        return Ok(Some((cl, text)));
    }
    let oss = capi
        .openstack_servers(ns)
        .get_opt(&spec.name)
        .await
        .map_err(|e| kube_error("reading the OpenStackServer", e))?;
    Ok(oss
        .and_then(|oss| OpenStackServer::read(&oss).create_failed)
        .map(|text| {
            let cl =
                classify::classify(&Failure::new(Source::OpenStackServerCondition, None, &text));
            (cl, text)
        }))
}

/// Nova's own `fault` of a server in ERROR (which CAPO v0.14 never surfaces), classified.
fn nova_fault(server: &Value) -> Option<(Classified, String)> {
    if server["status"] != "ERROR" {
        return None;
    }
    let fault = &server["fault"];
    let text = fault["message"]
        .as_str()
        .unwrap_or("server went to ERROR without a fault")
        .to_string();
    let code = fault["code"].as_u64().map(|c| c as u16);
    let cl = classify::classify(&Failure::new(Source::NovaFault, code, &text));
    Some((cl, text))
}

/// A Machine with no server past `stall_after`: a reference the cloud does not have fails
/// the attempt as `invalid_spec`; otherwise it waits, saying what CAPO says.
async fn no_server_yet(
    c: &Clients,
    ctx: &mut StepContext,
    os: &OpenStack,
    spec: &NodeSpec,
    ns: &str,
) -> Result<Outcome, StepError> {
    let missing = missing_references(os, spec)
        .await
        .map_err(|e| os_error("checking the node's references", e))?;
    if !missing.is_empty() {
        let text = format!(
            "no server after {}: {}",
            crate::duration::format(stall_after(&ctx.params)),
            missing.join("; ")
        );
        let cl = Classified {
            class: FailureClass::InvalidSpec,
            rule: "stalled_missing_reference",
            reason: "the node names something the cloud does not have",
            short: Vec::new(),
            source: Source::Nova,
            status: None,
            message: text.clone(),
        };
        return failed(ctx, &cl, &text).await;
    }
    let said = capo_warning(c, ns, &spec.name).await;
    Ok(Outcome::recheck_in(
        RECHECK,
        format!(
            "provisioning: no server after {}; its flavor, image, network, subnet and volume types exist{}",
            crate::duration::format(stall_after(&ctx.params)),
            said.map(|w| format!("; CAPO says: {w}"))
                .unwrap_or_default()
        ),
    ))
}

/// How long a Machine may show no server before the cloud is asked why (`stall_after`).
fn stall_after(params: &Value) -> Duration {
    params::read::<ScaleOutParams>(params)
        .ok()
        .and_then(|p| p.stall_after)
        .map_or(STALL_AFTER, |d| d.0)
}

fn stalled(m: &DynamicObject, params: &Value) -> bool {
    let Some(created) = m.metadata.creation_timestamp.as_ref() else {
        return false;
    };
    let age_ms = chrono::Utc::now().timestamp_millis() - created.0.as_millisecond();
    age_ms >= stall_after(params).as_millis() as i64
}

/// What of the node's spec the cluster's cloud does not have now: flavor, image, network,
/// subnet, volume types.
async fn missing_references(os: &OpenStack, spec: &NodeSpec) -> Result<Vec<String>, CallError> {
    let mut missing = Vec::new();
    let has = |list: &Value, key: &str, name: &str| {
        list[key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["name"] == name)
    };
    let flavors = os.get(Service::Compute, &["flavors"], &[]).await?;
    if !has(&flavors, "flavors", &spec.flavor) {
        missing.push(format!("flavor {} does not exist", spec.flavor));
    }
    let images = os.get(Service::Image, &["images"], &[]).await?;
    if !has(&images, "images", &spec.image) {
        missing.push(format!("image {} does not exist", spec.image));
    }
    let networks = os.get(Service::Network, &["networks"], &[]).await?;
    if !has(&networks, "networks", &spec.network) {
        missing.push(format!("network {} does not exist", spec.network));
    }
    let subnets = os.get(Service::Network, &["subnets"], &[]).await?;
    if !has(&subnets, "subnets", &spec.subnet) {
        missing.push(format!("subnet {} does not exist", spec.subnet));
    }
    let wanted: Vec<&String> = spec
        .root_volume
        .iter()
        .filter_map(|r| r.volume_type.as_ref())
        .chain(
            spec.data_volumes
                .iter()
                .filter_map(|d| d.volume_type.as_ref()),
        )
        .collect();
    if !wanted.is_empty() {
        let types = os.get(Service::BlockStorage, &["types"], &[]).await?;
        for t in wanted {
            if !has(&types, "volume_types", t) {
                missing.push(format!("volume type {t} does not exist"));
            }
        }
    }
    Ok(missing)
}

/// The newest Warning event CAPO recorded for the node's objects, if the apiserver has one.
async fn capo_warning(c: &Clients, ns: &str, name: &str) -> Option<String> {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(c.kube.clone(), ns);
    let list = events
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .ok()?;
    list.items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0.as_millisecond()))
        .and_then(|e| e.message)
}

// ---- floating IP -------------------------------------------------------------------------

/// The cluster's external network ID (from the OpenStackCluster's status).
async fn external_network(c: &Clients, cluster: &ClusterRef) -> Result<String, StepError> {
    let name = &cluster.name;
    let osc = capi_of(c)
        .await?
        .openstack_clusters(&cluster.ns)
        .get(name)
        .await
        .map_err(|e| kube_error("reading the OpenStackCluster", e))?;
    OpenStackCluster::read(&osc)
        .external_network
        .ok_or_else(|| {
            StepError::new(
                FailureClass::InvalidSpec,
                format!("OpenStackCluster {name} has no external network"),
            )
        })
}

/// Allocates the node's floating IP (recording its ID before associating it, and finding it
/// again by description after a crash) and associates it with the node's port.
async fn floating_ip_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    if spec.floating_ip.is_none() {
        return Ok(Outcome::next("ok"));
    }
    let cluster = cluster_of(&ctx)?;
    let os = os_of(c, &cluster).await?;
    let progress: ScaleOutProgress = ctx.progress()?;
    // The node's port: on its server (recorded when provisioning saw it).
    let server_id = progress.server_id.clone().unwrap_or_default();
    let port_id = node_port(&os, &spec, &server_id).await?;
    let description = marks::floating_ip_description(&cluster, &ctx.job_id, &spec.name);
    // Every floating IP described for this node. More than one means a POST that timed out
    // on our side was done by Neutron after all (a database outage holds requests, then
    // completes them) and the retry made another: one is kept, the rest released below.
    let described = described_floating_ips(&os, &description).await?;
    let found = progress.floating_ip_id.clone().or_else(|| {
        described
            .iter()
            .find(|f| f["port_id"] == port_id.as_str())
            .or_else(|| described.first())
            .and_then(|f| f["id"].as_str())
            .map(str::to_string)
    });
    let fip_id = match found {
        Some(id) => id,
        None => match allocate_floating_ip(c, &os, &cluster, &spec, &description).await? {
            Ok(id) => id,
            Err(needs_input) => return Ok(needs_input),
        },
    };
    if progress.floating_ip_id.is_none() {
        ctx.record(
            ScaleOutProgress::FLOATING_IP_ID,
            &fip_id,
            Some(format!("floating IP {fip_id} allocated for {}", spec.name)),
        )
        .await?;
    }
    release_extra_floating_ips(&ctx, &os, &description, &fip_id, &spec).await?;
    associate_floating_ip(&ctx, &os, &fip_id, &port_id, &spec).await?;
    Ok(Outcome::next("ok"))
}

/// The ID of the node's port on `server_id`; not there yet is a transient error.
async fn node_port(os: &OpenStack, spec: &NodeSpec, server_id: &str) -> Result<String, StepError> {
    let port = os
        .named(Service::Network, &["ports"], "ports", &spec.port_name())
        .await
        .map_err(|e| os_error("finding the node's port", e))?
        .into_iter()
        .find(|p| !server_id.is_empty() && p["device_id"] == server_id)
        .ok_or_else(|| {
            StepError::new(
                FailureClass::Transient,
                format!(
                    "port {} of server {server_id} not found yet",
                    spec.port_name()
                ),
            )
        })?;
    Ok(port["id"].as_str().unwrap_or_default().to_string())
}

/// Allocates a floating IP described for this node (at the spec's exact address, if it
/// names one). A refusal that an amend can fix is the node's needs-input outcome.
async fn allocate_floating_ip(
    c: &Clients,
    os: &OpenStack,
    cluster: &ClusterRef,
    spec: &NodeSpec,
    description: &str,
) -> Result<Result<String, Outcome>, StepError> {
    let network = external_network(c, cluster).await?;
    let mut body = json!({ "floatingip": {
        "floating_network_id": network, "description": description } });
    if let FloatingIp::Address(a) = &spec.floating_ip {
        body["floatingip"]["floating_ip_address"] = json!(a.to_string());
    }
    let e = match os
        .call(
            Service::Network,
            Method::POST,
            &["floatingips"],
            &[],
            Some(&body),
        )
        .await
    {
        Ok(v) => {
            let id = v["floatingip"]["id"].as_str().unwrap_or_default();
            return Ok(Ok(id.to_string()));
        }
        Err(e) => e,
    };
    // An exact address "already allocated" may be ours: an earlier POST that timed out here
    // and went through there.
    if let Some(id) = described_floating_ips(os, description)
        .await?
        .first()
        .and_then(|f| f["id"].as_str())
    {
        return Ok(Ok(id.to_string()));
    }
    let cl = os_failure(&e);
    if cl.class == FailureClass::InvalidSpec {
        return Ok(Err(Outcome::needs_input(
            Some(cl.class),
            format!("floating IP: {e}"),
        )));
    }
    Err(StepError::new(
        cl.class,
        format!("allocating a floating IP: {e}"),
    ))
}

/// Releases the floating IPs described for this node (proof they are this job's) other
/// than the recorded one `keep`.
async fn release_extra_floating_ips(
    ctx: &StepContext,
    os: &OpenStack,
    description: &str,
    keep: &str,
    spec: &NodeSpec,
) -> Result<(), StepError> {
    for extra in described_floating_ips(os, description)
        .await?
        .iter()
        .filter(|f| f["id"] != keep)
    {
        let id = extra["id"].as_str().unwrap_or_default();
        let address = extra["floating_ip_address"].as_str().unwrap_or_default();
        match os
            .call(
                Service::Network,
                Method::DELETE,
                &["floatingips", id],
                &[],
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == 404 => {}
            Err(e) => return Err(os_error("releasing a second floating IP", e)),
        }
        ctx.event(
            EventKind::Note,
            format!(
                "released floating IP {address}: a second one allocated for {} (an allocation \
                 that timed out here went through after all)",
                spec.name
            ),
            Some(json!({ "floating_ip": address, "floating_ip_id": id })),
        )
        .await?;
    }
    Ok(())
}

/// Associates the floating IP with the node's port, unless it already is.
async fn associate_floating_ip(
    ctx: &StepContext,
    os: &OpenStack,
    fip_id: &str,
    port_id: &str,
    spec: &NodeSpec,
) -> Result<(), StepError> {
    let current = os
        .get(Service::Network, &["floatingips", fip_id], &[])
        .await
        .map_err(|e| os_error("reading the floating IP", e))?;
    let address = current["floatingip"]["floating_ip_address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if current["floatingip"]["port_id"] == port_id {
        return Ok(());
    }
    os.call(
        Service::Network,
        Method::PUT,
        &["floatingips", fip_id],
        &[],
        Some(&json!({ "floatingip": { "port_id": port_id } })),
    )
    .await
    .map_err(|e| os_error("associating the floating IP", e))?;
    ctx.event(
        EventKind::Note,
        format!("floating IP {} associated with {}", address, spec.name),
        Some(json!({ "floating_ip": address, "port_id": port_id })),
    )
    .await
}

/// The floating IPs whose description is `description` (Capstan's mark for one node).
async fn described_floating_ips(
    os: &OpenStack,
    description: &str,
) -> Result<Vec<Value>, StepError> {
    let all = os
        .get(Service::Network, &["floatingips"], &[])
        .await
        .map_err(|e| os_error("listing floating IPs", e))?;
    Ok(all["floatingips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["description"] == description)
        .cloned()
        .collect())
}

// ---- join --------------------------------------------------------------------------------

/// Waits for the Node to join and be healthy, then puts the spec's labels and taints on it.
async fn join_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    let cluster = cluster_of(&ctx)?;
    let m = capi_of(c)
        .await?
        .machines(&cluster.ns)
        .get(&spec.name)
        .await
        .map_err(|e| kube_error("reading the Machine", e))?;
    let m = Machine::read(&m);
    // A node that breaks before it joins goes to cleanup like one that never built.
    if let Some(text) = m.failure_message.clone() {
        let cl = classify::classify(&Failure::new(Source::MachineFailure, None, &text));
        return failed(&mut ctx, &cl, &text).await;
    }
    if let Some(s) = server_of(&os_of(c, &cluster).await?, &cluster, &m).await?
        && let Some((cl, text)) = nova_fault(&s)
    {
        return failed(&mut ctx, &cl, &text).await;
    }
    let Some(node) = m.node.as_deref().filter(|_| m.node_healthy()) else {
        let phase = m.phase.as_deref().unwrap_or("Pending");
        return Ok(Outcome::recheck_in(
            RECHECK,
            format!("waiting for the Node to join and be healthy (Machine {phase})"),
        ));
    };
    let labels = spec.node_labels();
    if !labels.is_empty() || !spec.taints.is_empty() {
        let workload = workload_client(c, &cluster).await?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(workload);
        let mut patch = json!({ "metadata": { "labels": labels } });
        if !spec.taints.is_empty() {
            // A merge patch replaces the whole list: keep the taints others put there (the
            // CNI's, an operator's), replace only ours by key and effect, and guard the write
            // with the version read.
            let current = nodes
                .get(node)
                .await
                .map_err(|e| kube_error("reading the Node", e))?;
            let ours = serde_json::to_value(&spec.taints).unwrap_or_default();
            let ours = ours.as_array().cloned().unwrap_or_default();
            let mut taints: Vec<Value> = current
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .into_iter()
                .map(|t| serde_json::to_value(t).unwrap_or_default())
                .filter(|t| {
                    !ours
                        .iter()
                        .any(|o| o["key"] == t["key"] && o["effect"] == t["effect"])
                })
                .collect();
            taints.extend(ours);
            patch["spec"] = json!({ "taints": taints });
            patch["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
        }
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| kube_error("labelling the Node", e))?;
    }
    Ok(Outcome::next("ok"))
}

// ---- cleanup -----------------------------------------------------------------------------

/// Removes what the failed attempt left: the Machine (and OpenStackMachine) this job made,
/// then — checked through OpenStack — the server, ports, volumes and floating IP of that
/// attempt; then applies the failure class's policy.
async fn cleanup_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let spec = spec_of(&ctx)?;
    let progress: ScaleOutProgress = ctx.progress()?;
    // Waiting for input: the spec it waited with is recorded. An amended spec starts over;
    // the same spec (a resume without an amend, or a crash right after asking) asks again.
    if let Some(asked_with) = &progress.awaiting_input {
        if Value::Object(asked_with.clone()) == ctx.spec {
            let failure = failure_of(&ctx, &progress)?;
            return Ok(ask_for_input(&spec, failure));
        }
        // `failure` first: a crash between the two re-runs this branch.
        ctx.clear(ScaleOutProgress::FAILURE).await?;
        ctx.clear(ScaleOutProgress::AWAITING_INPUT).await?;
        return Ok(Outcome::next_because(
            "retry",
            None,
            "resumed with the amended spec",
        ));
    }
    let failure = failure_of(&ctx, &progress)?;
    if let Some(at) = progress.retry_at {
        return Ok(backoff_until(at, failure.class));
    }
    let cluster = cluster_of(&ctx)?;
    // 1. The Machine and OpenStackMachine this job made (never anyone else's).
    if let Some(wait) = remove_attempt_machines(c, &ctx, &spec, &cluster).await? {
        return Ok(wait);
    }
    // 2. OpenStack: whatever of that attempt is still there.
    remove_attempt_leftovers(c, &mut ctx, &spec, &cluster, &progress, failure.class).await?;
    // 3. The policy for the class.
    match failure.class {
        FailureClass::InvalidSpec | FailureClass::Conflict => {
            let asked_with = ctx.spec.as_object().cloned().unwrap_or_default();
            ctx.record(ScaleOutProgress::AWAITING_INPUT, &asked_with, None)
                .await?;
            Ok(ask_for_input(&spec, failure))
        }
        FailureClass::Auth => Ok(Outcome::fail(failure.class, failure.text.clone())),
        class => {
            let failures = progress.failures.unwrap_or(0) + 1;
            // `retry_at` first: a crash between the two writes re-runs the backoff branch
            // above, never this cleanup, so no failure is counted twice.
            let at = now_ms() + ATTEMPT_BACKOFF.delay(failures).as_millis() as i64;
            ctx.record(ScaleOutProgress::RETRY_AT, &at, None).await?;
            ctx.record(ScaleOutProgress::FAILURES, &failures, None)
                .await?;
            Ok(Outcome::backoff_until(
                at,
                class,
                format!(
                    "{} failure {failures}; retrying with the same spec",
                    class.as_str()
                ),
            ))
        }
    }
}

/// The failure cleanup acts on. A step records it before it moves the node to cleanup, so
/// its absence is a bug, not a reason to guess a class.
fn failure_of<'a>(
    ctx: &StepContext,
    progress: &'a ScaleOutProgress,
) -> Result<&'a RecordedFailure, StepError> {
    progress.failure.as_ref().ok_or_else(|| {
        StepError::new(
            FailureClass::Internal,
            format!(
                "node {}: progress record field `failure`: missing, though the node is in cleanup",
                ctx.node
            ),
        )
    })
}

/// Waits for an operator to amend the node and resume.
fn ask_for_input(spec: &NodeSpec, failure: &RecordedFailure) -> Outcome {
    Outcome::needs_input(
        Some(failure.class),
        format!(
            "{} — amend the node (PATCH /v1/jobs/{{id}}/nodes/{}) and resume",
            failure.text, spec.name
        ),
    )
}

/// Backs off until `at`, then retries. `failure` and `retry_at` are cleared by the next
/// attempt (`quota`), not here: a crash before the move to `quota` commits re-runs this,
/// never the cleanup and another backoff.
fn backoff_until(at: i64, class: FailureClass) -> Outcome {
    if now_ms() < at {
        return Outcome::backoff_until(at, class, format!("backing off after {}", class.as_str()));
    }
    Outcome::next_because("retry", Some(class), "retrying after backoff")
}

/// Deletes the Machine and OpenStackMachine this job made for the failed attempt; a wait
/// while they go.
async fn remove_attempt_machines(
    c: &Clients,
    ctx: &StepContext,
    spec: &NodeSpec,
    cluster: &ClusterRef,
) -> Result<Option<Outcome>, StepError> {
    let capi = capi_of(c).await?;
    let machines = capi.machines(&cluster.ns);
    let osms = capi.openstack_machines(&cluster.ns);
    let mut waiting = Vec::new();
    for (api, what) in [(&machines, "Machine"), (&osms, "OpenStackMachine")] {
        if let Some(o) = api
            .get_opt(&spec.name)
            .await
            .map_err(|e| kube_error(&format!("reading {what}"), e))?
            && ours(&o, &ctx.job_id)
        {
            if o.metadata.deletion_timestamp.is_none() {
                api.delete(&spec.name, &DeleteParams::background())
                    .await
                    .map_err(|e| kube_error(&format!("deleting {what}"), e))?;
                ctx.event(
                    EventKind::Cleanup,
                    format!("deleted {what} {} of the failed attempt", spec.name),
                    None,
                )
                .await?;
            }
            waiting.push(what);
        }
    }
    Ok((!waiting.is_empty()).then(|| {
        Outcome::recheck_in(
            RECHECK,
            format!("waiting for {} {} to go", waiting.join(" and "), spec.name),
        )
    }))
}

/// Removes through OpenStack what the failed attempt left — only when this job made an
/// attempt: a name another Machine holds (conflict) means those are someone else's — and
/// forgets the attempt's server and floating IP.
async fn remove_attempt_leftovers(
    c: &Clients,
    ctx: &mut StepContext,
    spec: &NodeSpec,
    cluster: &ClusterRef,
    progress: &ScaleOutProgress,
    class: FailureClass,
) -> Result<(), StepError> {
    let removal = if class == FailureClass::Conflict || progress.attempts.is_none() {
        Removal::default()
    } else {
        super::leftovers::remove(
            &os_of(c, cluster).await?,
            &super::leftovers::Leftovers {
                cluster,
                node: &spec.name,
                server_ids: &progress.server_id.iter().cloned().collect::<Vec<_>>(),
                ports: &[spec.port_name()],
                volumes: &spec.volume_names(),
                floating_ips: &progress.floating_ip_id.iter().cloned().collect::<Vec<_>>(),
                capstan_floating_ips: false,
            },
        )
        .await?
    };
    for l in &removal.left_alone {
        ctx.event(EventKind::Note, format!("left alone: {l}"), None)
            .await?;
    }
    let removed = removal.removed;
    if progress.floating_ip_id.is_some() {
        ctx.clear(ScaleOutProgress::FLOATING_IP_ID).await?;
    }
    if progress.server_id.is_some() {
        ctx.clear(ScaleOutProgress::SERVER_ID).await?;
    }
    let message = if removed.is_empty() {
        format!(
            "verified through OpenStack: nothing of {}'s failed attempt is left",
            spec.name
        )
    } else {
        format!(
            "removed what the failed attempt left: {}",
            removed.join(", ")
        )
    };
    ctx.event(
        EventKind::Cleanup,
        message,
        Some(json!({ "removed": removed })),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cleanup's backoff through the engine's policy type draws from the same band as its
    /// own computation did: `min(2 s · 2^(n-1), 60 s)` plus up to 20%.
    #[test]
    fn the_backoff_between_attempts_doubles_from_2s_to_60s_plus_up_to_a_fifth() {
        for failures in 1..=8u32 {
            let raw = (2_000u64 << (failures - 1)).min(60_000);
            for _ in 0..200 {
                let d = ATTEMPT_BACKOFF.delay(failures).as_secs_f64() * 1000.0;
                assert!(
                    (raw as f64 - 0.001..=raw as f64 * 1.2 + 0.001).contains(&d),
                    "failure {failures}: {d} ms outside {raw}..={} ms",
                    raw * 6 / 5
                );
            }
        }
    }
}

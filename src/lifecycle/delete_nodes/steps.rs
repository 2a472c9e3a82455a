//! `delete_nodes` (and the first half of `repair`): exactly the named nodes go.
//!
//! mark → wait → release → done; wait → force (past `force_after`) → wait.
//!
//! A standalone Machine is deleted. A Machine owned by a MachineSet (or by a
//! MachineDeployment through its set) is annotated `cluster.x-k8s.io/delete-machine` and the
//! owner's `replicas` lowered by one in the same guarded write that records, on the owner,
//! which Machines this job has counted — so a crash never lowers it twice, and a concurrent
//! change is a 409 that is read again, never guessed. When the Machine, its
//! OpenStackMachine and its server are gone, the floating IP Capstan allocated is released
//! and OpenStack is checked for ports and volumes left behind.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch};
use serde_json::{Value, json};

use super::admission::DeleteNodesParams;
use super::common::{capi_of, cluster_of, kube_error, os_error, os_of};
use super::leftovers::Removal;
use super::progress::{DeleteProgress, Scaled, SetMember};
use crate::cloud::Clients;
use crate::cloud::capi::capo::{OpenStackMachine, OpenStackServer};
use crate::cloud::capi::{self, Capi, DELETE_MACHINE_ANNOTATION, Machine};
use crate::cloud::marks;
use crate::cloud::os::Service;
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::lifecycle::params;
use crate::model::{EventKind, FailureClass};
use crate::store::now_ms;

const RECHECK: Duration = Duration::from_secs(3);

pub fn register(r: &mut Registry, clients: Clients) {
    let c = clients.clone();
    r.step("delete.mark", &["ok"], move |ctx| {
        let c = c.clone();
        async move { mark_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("delete.wait", &["gone", "force"], move |ctx| {
        let c = c.clone();
        async move { wait_step(&c, ctx).await }
    });
    let c = clients.clone();
    r.step("delete.force", &["ok"], move |ctx| {
        let c = c.clone();
        async move { force_step(&c, ctx).await }
    });
    let c = clients;
    r.step("delete.release", &["ok"], move |ctx| {
        let c = c.clone();
        async move { release_step(&c, ctx).await }
    });
}

fn machine_name(ctx: &StepContext) -> String {
    ctx.spec["name"].as_str().unwrap_or(&ctx.node).to_string()
}

/// The annotation on a MachineSet/MachineDeployment listing the Machines a job counted.
fn ledger_key(job: &str) -> String {
    format!("capstan.io/scaled-down-by-{job}")
}

/// The controller owner of an object, as `(kind, name)`.
fn owner(o: &DynamicObject) -> Option<(String, String)> {
    o.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.name.clone()))
}

/// Marks the Machine for deletion the way its owner needs: delete it, or annotate it and
/// lower the owner's replicas by exactly one (once).
async fn mark_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let name = machine_name(&ctx);
    let cluster = cluster_of(&ctx)?;
    let ns = cluster.ns.as_str();
    let progress: DeleteProgress = ctx.progress()?;
    if progress.started_at.is_none() {
        ctx.record(DeleteProgress::STARTED_AT, &now_ms(), None)
            .await?;
    }
    let capi = capi_of(c).await?;
    let Some(m) = capi
        .machines(ns)
        .get_opt(&name)
        .await
        .map_err(|e| kube_error("reading the Machine", e))?
    else {
        return already_gone(&ctx, &capi, ns, &name, progress.scaled.as_ref()).await;
    };
    // Only this cluster's Machines: a same-named Machine of another cluster is not ours.
    let machine = Machine::read(&m);
    let its_cluster = machine.cluster_name.as_deref().unwrap_or_default();
    if its_cluster != cluster.name {
        return Ok(Outcome::fail(
            FailureClass::InvalidSpec,
            format!(
                "Machine {ns}/{name} belongs to cluster {its_cluster}, not {}; left alone",
                cluster.name
            ),
        ));
    }
    if progress.port_names.is_none() {
        record_what_it_leaves(&mut ctx, &capi, ns, &name, &machine).await?;
    }
    let Some((kind, set_name)) = owner(&m) else {
        return delete_standalone(&ctx, &capi, ns, &name, &m).await;
    };
    if kind != "MachineSet" {
        return Err(StepError::new(
            FailureClass::InvalidSpec,
            format!("Machine {name} is owned by a {kind}, which Capstan does not scale"),
        ));
    }
    let set = capi
        .machine_sets(ns)
        .get(&set_name)
        .await
        .map_err(|e| kube_error("reading the MachineSet", e))?;
    let (scaled_api, scaled) = match scaled_owner(&capi, ns, &name, &set).await? {
        Ok(scaled) => scaled,
        Err(wait) => return Ok(wait),
    };
    let target = Scaled {
        kind: scaled
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default(),
        name: scaled.metadata.name.clone().unwrap_or_default(),
    };
    // Who is in the set now: what must still be there when this node is gone.
    if progress.set_members.is_none() {
        record_set_members(&mut ctx, &capi, ns, &name, &set, &target).await?;
    }
    annotate(&ctx, &capi, ns, &name, &m).await?;
    if progress.scaled.is_none() {
        ctx.record(DeleteProgress::SCALED, &target, None).await?;
    }
    lower_once(&ctx, &scaled_api, &scaled, &name).await
}

/// The Machine is gone already — but if it was a set's, the set may have taken it for
/// another named Machine's count: this one's count is still owed then.
async fn already_gone(
    ctx: &StepContext,
    capi: &Capi,
    ns: &str,
    name: &str,
    scaled: Option<&Scaled>,
) -> Result<Outcome, StepError> {
    if let Some(scaled) = scaled {
        let api = match scaled.kind.as_str() {
            "MachineDeployment" => capi.machine_deployments(ns),
            _ => capi.machine_sets(ns),
        };
        // Owed only if the set took this Machine in place of another one this job named
        // (still there, annotated by this job); gone for another reason, nothing is owed.
        let mark = format!("capstan job {}", ctx.job_id);
        let named_left = capi
            .machines(ns)
            .list(&Default::default())
            .await
            .map_err(|e| kube_error("listing Machines", e))?
            .items
            .iter()
            .any(|x| {
                x.metadata.deletion_timestamp.is_none()
                    && x.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DELETE_MACHINE_ANNOTATION))
                        == Some(&mark)
            });
        if named_left
            && let Some(o) = api
                .get_opt(&scaled.name)
                .await
                .map_err(|e| kube_error("reading the Machine's owner", e))?
        {
            return lower_once(ctx, &api, &o, name).await;
        }
    }
    ctx.event(
        EventKind::Note,
        format!("Machine {name} is already gone; finishing what is left in OpenStack"),
        None,
    )
    .await?;
    Ok(Outcome::next("ok"))
}

/// Records what CAPO named this node's ports and volumes, and the servers this cluster's
/// objects name for it: the proof that lets a later step delete them after the objects
/// are gone (a same-named server is not proof).
async fn record_what_it_leaves(
    ctx: &mut StepContext,
    capi: &Capi,
    ns: &str,
    name: &str,
    machine: &Machine,
) -> Result<(), StepError> {
    let osm = capi
        .openstack_machines(ns)
        .get_opt(name)
        .await
        .map_err(|e| kube_error("reading the OpenStackMachine", e))?;
    // CAPO's names for them come from the OpenStackMachine; when it is gone, CAPO's
    // defaults.
    let (ports, volumes) = match osm.as_ref().map(OpenStackMachine::read) {
        Some(osm) => osm.resource_names(),
        None => OpenStackMachine::default_resource_names(name),
    };
    ctx.record(DeleteProgress::PORT_NAMES, &ports, None).await?;
    ctx.record(DeleteProgress::VOLUME_NAMES, &volumes, None)
        .await?;
    let mut server_ids: Vec<String> = machine.server_id().into_iter().collect();
    if let Some(oss) = capi
        .openstack_servers(ns)
        .get_opt(name)
        .await
        .map_err(|e| kube_error("reading the OpenStackServer", e))?
        && let Some(id) = OpenStackServer::read(&oss).instance_id
        && !server_ids.contains(&id)
    {
        server_ids.push(id);
    }
    ctx.record(DeleteProgress::SERVER_IDS, &server_ids, None)
        .await
}

/// A Machine no set owns is deleted (once: one already going is left to finish).
async fn delete_standalone(
    ctx: &StepContext,
    capi: &Capi,
    ns: &str,
    name: &str,
    m: &DynamicObject,
) -> Result<Outcome, StepError> {
    if m.metadata.deletion_timestamp.is_some() {
        return Ok(Outcome::next("ok"));
    }
    capi.machines(ns)
        .delete(name, &DeleteParams::background())
        .await
        .map_err(|e| kube_error("deleting the Machine", e))?;
    ctx.event(
        EventKind::Note,
        format!("Machine {name} is standalone: deleted"),
        None,
    )
    .await?;
    Ok(Outcome::next("ok"))
}

/// The object whose replicas count for `set`: the set itself, or the MachineDeployment that
/// owns it — unless that deployment is rolling out, when the answer is a wait.
async fn scaled_owner(
    capi: &Capi,
    ns: &str,
    name: &str,
    set: &DynamicObject,
) -> Result<Result<(kube::Api<DynamicObject>, DynamicObject), Outcome>, StepError> {
    let sets = capi.machine_sets(ns);
    let Some((_, md)) = owner(set).filter(|(k, _)| k == "MachineDeployment") else {
        return Ok(Ok((sets, set.clone())));
    };
    let mds = capi.machine_deployments(ns);
    let o = mds
        .get(&md)
        .await
        .map_err(|e| kube_error("reading the MachineDeployment", e))?;
    // During a rollout the deployment scales its old set down first: lowering it now would
    // take a node that was not named (rancher/rancher#52041). Wait.
    let md_uid = o.metadata.uid.clone().unwrap_or_default();
    let active_sets = sets
        .list(&Default::default())
        .await
        .map_err(|e| kube_error("listing MachineSets", e))?
        .items
        .into_iter()
        .filter(|x| {
            x.metadata
                .owner_references
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r.uid == md_uid))
                && capi::shape::replicas(x).unwrap_or(0) > 0
        })
        .count();
    if active_sets > 1 {
        return Ok(Err(Outcome::recheck_in(
            RECHECK,
            format!(
                "MachineDeployment {md} is rolling out ({active_sets} MachineSets with replicas); waiting until one is left so that only {name} goes"
            ),
        )));
    }
    Ok(Ok((mds, o)))
}

/// Records the set's members before the node goes, and says in the history how the node
/// will go.
async fn record_set_members(
    ctx: &mut StepContext,
    capi: &Capi,
    ns: &str,
    name: &str,
    set: &DynamicObject,
    target: &Scaled,
) -> Result<(), StepError> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let members: Vec<SetMember> = capi
        .machines(ns)
        .list(&Default::default())
        .await
        .map_err(|e| kube_error("listing Machines", e))?
        .items
        .iter()
        .filter(|x| owner(x).is_some_and(|(k, n)| k == "MachineSet" && n == set_name))
        .map(|x| SetMember {
            name: x.metadata.name.clone(),
            uid: x.metadata.uid.clone(),
        })
        .collect();
    ctx.record(DeleteProgress::SET_MEMBERS, &members, None)
        .await?;
    let policy = capi::shape::deletion_order(set);
    let Scaled { kind, name: scaled } = target;
    ctx.event(
        EventKind::Note,
        format!(
            "Machine {name} belongs to MachineSet {set_name} (deletion order {policy}); it is annotated {DELETE_MACHINE_ANNOTATION} so that it, and no other, goes when {kind} {scaled} is lowered by one"
        ),
        Some(json!({ "machine_set": set_name, "delete_policy": policy, "scaled": {"kind": kind, "name": scaled} })),
    )
    .await
}

/// 1. The annotation first, so the set deletes this Machine when its count drops. (With
///    several named Machines annotated, the set may take them in another order than the
///    job lowers it; each still lowers it once, so all of them, and only they, go.)
async fn annotate(
    ctx: &StepContext,
    capi: &Capi,
    ns: &str,
    name: &str,
    m: &DynamicObject,
) -> Result<(), StepError> {
    let annotated = m
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(DELETE_MACHINE_ANNOTATION));
    if m.metadata.deletion_timestamp.is_some() || annotated {
        return Ok(());
    }
    let mark = format!("capstan job {}", ctx.job_id);
    capi.machines(ns)
        .patch(
            name,
            &capi::patch_params(),
            &Patch::Merge(json!({"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: mark}}})),
        )
        .await
        .map_err(|e| kube_error("annotating the Machine", e))?;
    Ok(())
}

/// Lowers the owner's replicas by one for `name`, once: the owner's ledger annotation,
/// written in the same guarded patch, says whether this Machine was counted already.
async fn lower_once(
    ctx: &StepContext,
    api: &kube::Api<DynamicObject>,
    scaled: &DynamicObject,
    name: &str,
) -> Result<Outcome, StepError> {
    let scaled_kind = scaled
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let scaled_name = scaled.metadata.name.clone().unwrap_or_default();
    let scaled_api = api;
    // 2. One lower, in the same write that records this Machine on the owner's ledger; the
    //    resourceVersion makes a concurrent change a 409, read again on the retry.
    let key = ledger_key(&ctx.job_id);
    let counted: BTreeSet<String> = scaled
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&key))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if counted.contains(name) {
        return Ok(Outcome::next("ok"));
    }
    let replicas = capi::shape::replicas(scaled).unwrap_or(1);
    let mut ledger = counted;
    ledger.insert(name.to_string());
    let ledger: Vec<String> = ledger.into_iter().collect();
    let patch = capi::shape::replicas_patch(
        json!({"resourceVersion": scaled.metadata.resource_version, "annotations": {key: ledger.join(",")}}),
        (replicas - 1).max(0),
    );
    match scaled_api
        .patch(&scaled_name, &capi::patch_params(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => {
            ctx.event(
                EventKind::Note,
                format!(
                    "{scaled_kind} {scaled_name}: replicas {replicas} -> {} for {name}",
                    (replicas - 1).max(0)
                ),
                None,
            )
            .await?;
            Ok(Outcome::next("ok"))
        }
        Err(kube::Error::Api(s)) if s.is_conflict() => Err(StepError::new(
            FailureClass::Transient,
            format!(
                "{scaled_kind} {scaled_name} changed while lowering its replicas; reading it again"
            ),
        )),
        Err(e) => Err(kube_error("lowering replicas", e)),
    }
}

/// Waits until the Machine, its OpenStackMachine and its server are gone; past
/// `force_after` it goes to `force`.
async fn wait_step(c: &Clients, ctx: StepContext) -> Result<Outcome, StepError> {
    let name = machine_name(&ctx);
    let cluster = cluster_of(&ctx)?;
    let ns = cluster.ns.as_str();
    let capi = capi_of(c).await?;
    let machine = capi
        .machines(ns)
        .get_opt(&name)
        .await
        .map_err(|e| kube_error("reading the Machine", e))?;
    let osm = capi
        .openstack_machines(ns)
        .get_opt(&name)
        .await
        .map_err(|e| kube_error("reading the OpenStackMachine", e))?;
    let progress: DeleteProgress = ctx.progress()?;
    let known = progress.all_server_ids();
    let server: Vec<Value> = os_of(c, &cluster)
        .await?
        .named(Service::Compute, &["servers", "detail"], "servers", &name)
        .await
        .map_err(|e| os_error("listing servers", e))?
        .into_iter()
        .filter(|s| {
            s["id"]
                .as_str()
                .is_some_and(|i| known.iter().any(|k| k == i))
                || marks::server_is_marked(s, &cluster)
        })
        .collect();
    let mut left = Vec::new();
    if machine.is_some() {
        left.push("Machine");
    }
    if osm.is_some() {
        left.push("OpenStackMachine");
    }
    if !server.is_empty() {
        left.push("server");
    }
    if left.is_empty() {
        return Ok(Outcome::next("gone"));
    }
    let force_after = params::of_job::<DeleteNodesParams>(&ctx.params)?
        .force_after
        .map(|d| d.0);
    let started = progress.started_at.unwrap_or_else(now_ms);
    if let Some(f) = force_after
        && now_ms() - started >= f.as_millis() as i64
        && progress.forced != Some(true)
    {
        return Ok(Outcome::next_because(
            "force",
            None,
            format!(
                "{} of {name} still there after force_after {}",
                left.join(", "),
                crate::duration::format(f)
            ),
        ));
    }
    Ok(Outcome::recheck_in(
        RECHECK,
        format!("waiting for {} of {name} to go", left.join(", ")),
    ))
}

/// Forces the delete: the server, ports, volumes and Capstan's floating IP through
/// OpenStack, and the finalizers dropped — each act recorded.
async fn force_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let name = machine_name(&ctx);
    let cluster = cluster_of(&ctx)?;
    let ns = cluster.ns.as_str();
    let removal = sweep_named(c, &ctx, &name).await?;
    for r in &removal.removed {
        ctx.event(EventKind::Cleanup, format!("forced: deleted {r}"), None)
            .await?;
    }
    for l in &removal.left_alone {
        ctx.event(EventKind::Note, format!("left alone: {l}"), None)
            .await?;
    }
    let capi = capi_of(c).await?;
    let apis = [
        (capi.machines(ns), "Machine"),
        (capi.openstack_machines(ns), "OpenStackMachine"),
        (capi.openstack_servers(ns), "OpenStackServer"),
    ];
    for (api, what) in apis {
        let Some(o) = api
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(&format!("reading {what}"), e))?
        else {
            continue;
        };
        if o.metadata.deletion_timestamp.is_none() {
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|e| kube_error(&format!("deleting {what}"), e))?;
        }
        let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.is_empty() {
            api.patch(
                &name,
                &capi::patch_params(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .map_err(|e| kube_error(&format!("dropping {what}'s finalizers"), e))?;
            ctx.event(
                EventKind::Cleanup,
                format!("forced: dropped finalizers {finalizers:?} of {what} {name}"),
                None,
            )
            .await?;
        }
    }
    ctx.record(DeleteProgress::FORCED, &true, None).await?;
    Ok(Outcome::next("ok"))
}

/// After the node is gone: releases the floating IP Capstan allocated for it and removes
/// any port or volume of it OpenStack still has.
async fn release_step(c: &Clients, mut ctx: StepContext) -> Result<Outcome, StepError> {
    let name = machine_name(&ctx);
    let removal = sweep_named(c, &ctx, &name).await?;
    for l in &removal.left_alone {
        ctx.event(EventKind::Note, format!("left alone: {l}"), None)
            .await?;
    }
    let removed = removal.removed;
    let message = if removed.is_empty() {
        format!(
            "verified through OpenStack: no server, port, volume or floating IP of {name} is left"
        )
    } else {
        format!("removed what {name} left: {}", removed.join(", "))
    };
    ctx.event(
        EventKind::Cleanup,
        message,
        Some(json!({ "removed": removed })),
    )
    .await?;
    // The set must have lost exactly the named Machines.
    if let Some(members) = ctx.progress::<DeleteProgress>()?.set_members {
        let ns = cluster_of(&ctx)?.ns;
        let now: BTreeSet<String> = capi_of(c)
            .await?
            .machines(&ns)
            .list(&Default::default())
            .await
            .map_err(|e| kube_error("listing Machines", e))?
            .items
            .into_iter()
            .filter_map(|m| m.metadata.uid)
            .collect();
        let named: BTreeSet<String> = ctx.params["named_machines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let unexpected: Vec<String> = members
            .iter()
            .filter(|m| !m.uid.as_ref().is_some_and(|u| now.contains(u)))
            .filter_map(|m| m.name.clone())
            .filter(|n| !named.contains(n))
            .collect();
        if !unexpected.is_empty() {
            ctx.event(
                EventKind::Failed,
                format!(
                    "UNEXPECTED: Machine(s) {} of the set went away although not named in this job",
                    unexpected.join(", ")
                ),
                Some(json!({ "unexpected": unexpected })),
            )
            .await?;
        }
    }
    ctx.record(DeleteProgress::RELEASED, &true, None).await?;
    Ok(Outcome::next("ok"))
}

/// Deletes the node's server, ports and volumes (by CAPO's names, as recorded when it was
/// marked), the floating IPs Capstan allocated for it and those a repair releases — each
/// only with proof that it is this cluster's (see `leftovers`).
pub(crate) async fn sweep_named(
    c: &Clients,
    ctx: &StepContext,
    name: &str,
) -> Result<Removal, StepError> {
    let progress: DeleteProgress = ctx.progress()?;
    let (default_ports, default_volumes) = OpenStackMachine::default_resource_names(name);
    // A repair releases the floating IP the node had (Capstan's or not), so the same address
    // can be taken again; admission found it on this node's port, with this cluster's
    // credentials.
    let released: Vec<String> = ctx.params["release"][name]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let cluster = cluster_of(ctx)?;
    super::leftovers::remove(
        &os_of(c, &cluster).await?,
        &super::leftovers::Leftovers {
            cluster: &cluster,
            node: name,
            server_ids: &progress.all_server_ids(),
            ports: &progress.port_names.unwrap_or(default_ports),
            volumes: &progress.volume_names.unwrap_or(default_volumes),
            floating_ips: &released,
            capstan_floating_ips: true,
        },
    )
    .await
}

//! The sweeps, run by schedules (or submitted by hand) as one-node jobs (`nodes: ["sweep"]`):
//!
//! - `repair_sweep` (per cluster): finds unhealthy workers and submits one repair job for up
//!   to `max_parallel` of them, skipping nodes an unfinished job already holds; when more
//!   than `max_unhealthy` of the workers are unhealthy it stops and says why.
//! - `orphan_sweep` (per tenant's cluster namespace): OpenStack servers, ports, volumes and
//!   floating IPs that carry Capstan's names or marks but belong to no live Machine and no
//!   unfinished job are deleted once older than `grace` — or only listed (`dry_run`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::scale_out::{kube_error, os_error, split_cluster};
use crate::cloud::Clients;
use crate::cloud::capi;
use crate::cloud::os::Service;
use crate::engine::request::JobRequest;
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::model::{EventKind, FailureClass, JobState};
use crate::store::{IdempotencyKey, JobFilter, NewJob, Store, now_ms};

/// The state `workflows/repair.yaml` starts in (checked by a test against the file).
pub const REPAIR_START: &str = "check";

/// Capstan's own store, set once `serve` has opened it.
type StoreCell = std::sync::Arc<std::sync::OnceLock<Store>>;

fn store_of(cell: &StoreCell) -> Result<Store, StepError> {
    cell.get()
        .cloned()
        .ok_or_else(|| StepError::new(FailureClass::Transient, "the store is not open yet"))
}

pub fn register(r: &mut Registry, clients: Clients, store: StoreCell) {
    let (c, s) = (clients.clone(), store.clone());
    r.step("sweep.repair", &["ok"], move |ctx| {
        let (c, s) = (c.clone(), s.clone());
        async move { repair_sweep(&c, &store_of(&s)?, ctx).await }
    });
    r.step("sweep.orphans", &["ok"], move |ctx| {
        let (c, s) = (clients.clone(), store.clone());
        async move { orphan_sweep(&c, &store_of(&s)?, ctx).await }
    });
}

/// Node names held by unfinished jobs on clusters of namespace `ns` (other than `except`).
async fn busy_nodes(store: &Store, ns: &str, except: &str) -> Result<BTreeSet<String>, StepError> {
    Ok(unfinished(store, ns, except)
        .await?
        .into_iter()
        .map(|(_, _, node)| node)
        .collect())
}

/// `(kind, cluster, node)` of every node task of unfinished jobs on clusters of namespace
/// `ns` (other than job `except`).
async fn unfinished(
    store: &Store,
    ns: &str,
    except: &str,
) -> Result<Vec<(String, String, String)>, StepError> {
    let mut out = Vec::new();
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::NeedsInput,
        JobState::Cancelling,
    ] {
        let jobs = store
            .list_jobs(&JobFilter {
                state: Some(state),
                limit: 1000,
                ..JobFilter::default()
            })
            .await?;
        for j in jobs.iter().filter(|j| j.id != except) {
            if j.cluster.split('/').next() != Some(ns) {
                continue;
            }
            for t in store.tasks(&j.id).await? {
                out.push((j.kind.clone(), j.cluster.clone(), t.name));
            }
        }
    }
    Ok(out)
}

async fn repair_sweep(
    c: &Clients,
    store: &Store,
    mut ctx: StepContext,
) -> Result<Outcome, StepError> {
    if let Some(j) = ctx.external("repair_job") {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!("submitted repair job {j}"),
        ));
    }
    let (ns, cluster) = split_cluster(&ctx.cluster);
    let thresholds = super::repair::Thresholds::from_params(&ctx.params);
    let machines = capi::machines(&c.kube, &ns)
        .list(&kube::api::ListParams::default().labels(&format!(
            "{}={cluster},!{}",
            capi::CLUSTER_NAME_LABEL,
            capi::CONTROL_PLANE_LABEL
        )))
        .await
        .map_err(|e| kube_error("listing Machines", e))?
        .items;
    let servers =
        c.os.get(Service::Compute, &["servers", "detail"], &[])
            .await
            .map_err(|e| os_error("listing servers", e))?;
    let mut unhealthy = Vec::new();
    for m in &machines {
        let name = m.metadata.name.clone().unwrap_or_default();
        let server = servers["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name.as_str());
        if let Some(why) = super::repair::assess(
            &serde_json::to_value(m).unwrap_or_default(),
            server,
            thresholds,
        ) {
            unhealthy.push((name, why));
        }
    }
    if unhealthy.is_empty() {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!(
                "all {} workers of {ns}/{cluster} are healthy; nothing to repair",
                machines.len()
            ),
        ));
    }
    let busy = busy_nodes(store, &ns, &ctx.job_id).await?;
    let free: Vec<&(String, String)> = unhealthy
        .iter()
        .filter(|(n, _)| !busy.contains(n))
        .collect();
    for (n, why) in &unhealthy {
        let held = if busy.contains(n) {
            " (an unfinished job holds it: left to that job)"
        } else {
            ""
        };
        ctx.event(
            EventKind::Note,
            format!("{n} is unhealthy: {why}{held}"),
            None,
        )
        .await?;
    }
    let max_parallel = ctx.params["max_parallel"]
        .as_u64()
        .unwrap_or(1)
        .clamp(1, 100) as usize;
    // At most max_parallel of the cluster's nodes in repair at once, counting repairs
    // earlier sweeps (or operators) started that are not finished.
    let repairing = unfinished(store, &ns, &ctx.job_id)
        .await?
        .iter()
        .filter(|(kind, cluster, _)| kind == "repair" && *cluster == ctx.cluster)
        .count();
    let room = max_parallel.saturating_sub(repairing);
    let chosen: Vec<String> = free.iter().take(room).map(|(n, _)| n.clone()).collect();
    if chosen.is_empty() {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!(
                "nothing submitted: {repairing} node(s) of {} already in repair (max_parallel {max_parallel}), or every unhealthy worker is in a job",
                ctx.cluster
            ),
        ));
    }
    let mut params = ctx.params.as_ref().clone();
    if !params.is_object() {
        params = json!({});
    }
    let mut req = JobRequest {
        kind: "repair".into(),
        cluster: ctx.cluster.clone(),
        tenant: Some(ctx.tenant.clone()),
        nodes: chosen
            .iter()
            .map(|n| (n.clone(), json!({ "name": n })))
            .collect(),
        deadline: None,
        concurrency: None,
        params,
    };
    match super::admission::admit_repair(c, store, &mut req).await {
        Ok(()) => {}
        Err(
            crate::engine::admission::Refusal::Conflict(f)
            | crate::engine::admission::Refusal::Invalid(f),
        ) => {
            let why: Vec<String> = f
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            return Ok(Outcome::fail(
                FailureClass::Conflict,
                format!("stopped: {}", why.join("; ")),
            ));
        }
        Err(crate::engine::admission::Refusal::Unavailable(m)) => {
            return Err(StepError::new(FailureClass::Transient, m));
        }
    }
    let job = NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        kind: "repair".into(),
        tenant: ctx.tenant.clone(),
        owner: "repair_sweep".into(),
        cluster: ctx.cluster.clone(),
        params: req.params,
        deadline_at: Some(now_ms() + 6 * 3600 * 1000),
        concurrency: req.concurrency.unwrap_or(1) as i64,
        schedule_id: None,
        nodes: req.nodes,
        start_state: REPAIR_START.into(),
    };
    // One repair job per sweep job, also when this step runs again after a crash.
    let key = IdempotencyKey {
        key: format!("repair-sweep-{}", ctx.job_id),
        request: json!({ "sweep": ctx.job_id }).to_string(),
    };
    let submitted = store.submit(&job, Some(&key)).await?;
    ctx.record(
        "repair_job",
        json!(submitted.job_id),
        Some(format!(
            "submitted repair job {} for {}",
            submitted.job_id,
            chosen.join(", ")
        )),
    )
    .await?;
    Ok(Outcome::next("ok"))
}

fn older_than(created: &Value, grace: std::time::Duration) -> bool {
    let Some(t) = created
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return false;
    };
    (Utc::now() - t.with_timezone(&Utc))
        .to_std()
        .is_ok_and(|age| age >= grace)
}

/// `<node>-<suffix>`: which of `nodes` a port (`-<digits>`) or volume (`-root`,
/// `-<device>`) name belongs to — unless a live Machine's longer name claims it.
fn owner_of<'a>(
    name: &str,
    nodes: &'a BTreeSet<String>,
    live: &BTreeSet<String>,
    port: bool,
) -> Option<&'a String> {
    let suffix_of = |n: &str| {
        (name.len() > n.len() + 1 && name.starts_with(n) && name.as_bytes()[n.len()] == b'-')
            .then(|| &name[n.len() + 1..])
    };
    let claimed_by_live = live.iter().any(|l| suffix_of(l).is_some());
    if claimed_by_live {
        return None;
    }
    nodes
        .iter()
        .filter(|n| {
            suffix_of(n).is_some_and(|sfx| {
                if port {
                    sfx.bytes().all(|b| b.is_ascii_digit())
                } else {
                    !sfx.contains('-') || sfx == "root"
                }
            })
        })
        .max_by_key(|n| n.len())
}

async fn orphan_sweep(c: &Clients, store: &Store, ctx: StepContext) -> Result<Outcome, StepError> {
    let (ns, _) = split_cluster(&ctx.cluster);
    let grace = match ctx.params["grace"].as_str() {
        Some("0s") | Some("0") => std::time::Duration::ZERO,
        Some(g) => crate::duration::parse(g)
            .map_err(|e| StepError::new(FailureClass::InvalidSpec, format!("grace: {e}")))?,
        None => std::time::Duration::from_secs(3600),
    };
    let dry_run = ctx.params["dry_run"] == true;
    // What is alive: Machines in the namespace, and nodes unfinished jobs hold.
    // Alive anywhere: a Machine of that name in any namespace keeps its resources.
    let live: BTreeSet<String> =
        kube::Api::<kube::api::DynamicObject>::all_with(c.kube.clone(), &capi::machine_resource())
            .list(&Default::default())
            .await
            .map_err(|e| kube_error("listing Machines", e))?
            .items
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .collect();
    let busy = busy_nodes(store, &ns, &ctx.job_id).await?;
    // Capstan's names: every node its lifecycle jobs in this tenant made, and servers tagged
    // `capstan` (the OpenStackMachines Capstan creates carry that tag).
    let mut names = BTreeSet::new();
    for j in store
        .list_jobs(&JobFilter {
            tenant: Some(ctx.tenant.clone()),
            limit: 10_000,
            ..JobFilter::default()
        })
        .await?
    {
        let here = j.cluster.split('/').next() == Some(ns.as_str());
        if here && ["scale_out", "repair"].contains(&j.kind.as_str()) {
            for t in store.tasks(&j.id).await? {
                names.insert(t.name);
            }
        }
    }
    let servers =
        c.os.get(Service::Compute, &["servers", "detail"], &[])
            .await
            .map_err(|e| os_error("listing servers", e))?;
    for s in servers["servers"].as_array().into_iter().flatten() {
        if s["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "capstan"))
        {
            if let Some(n) = s["name"].as_str() {
                names.insert(n.to_string());
            }
        }
    }
    let orphan_node = |n: &str| !live.contains(n) && !busy.contains(n);
    let mut found: Vec<(Service, &'static str, String, String)> = Vec::new();
    for s in servers["servers"].as_array().into_iter().flatten() {
        let n = s["name"].as_str().unwrap_or_default();
        if names.contains(n) && orphan_node(n) && older_than(&s["created"], grace) {
            found.push((
                Service::Compute,
                "server",
                n.to_string(),
                s["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let fips =
        c.os.get(Service::Network, &["floatingips"], &[])
            .await
            .map_err(|e| os_error("listing floating IPs", e))?;
    for f in fips["floatingips"].as_array().into_iter().flatten() {
        let desc = f["description"].as_str().unwrap_or_default();
        if let Some(n) = desc
            .strip_prefix("capstan job ")
            .and_then(|d| d.split(" node ").nth(1))
            && orphan_node(n)
            && older_than(&f["created_at"], grace)
        {
            found.push((
                Service::Network,
                "floating IP",
                f["floating_ip_address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                f["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let ports =
        c.os.get(Service::Network, &["ports"], &[])
            .await
            .map_err(|e| os_error("listing ports", e))?;
    // A port or volume attached to a server that is not itself an orphan is in use.
    let orphan_servers: BTreeSet<String> = found.iter().map(|f| f.3.clone()).collect();
    let free_or_orphaned = |device: &str| device.is_empty() || orphan_servers.contains(device);
    for p in ports["ports"].as_array().into_iter().flatten() {
        let pn = p["name"].as_str().unwrap_or_default();
        if let Some(n) = owner_of(pn, &names, &live, true)
            && orphan_node(n)
            && free_or_orphaned(p["device_id"].as_str().unwrap_or_default())
            && older_than(&p["created_at"], grace)
        {
            found.push((
                Service::Network,
                "port",
                pn.to_string(),
                p["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let volumes =
        c.os.get(Service::BlockStorage, &["volumes", "detail"], &[])
            .await
            .map_err(|e| os_error("listing volumes", e))?;
    for v in volumes["volumes"].as_array().into_iter().flatten() {
        let vn = v["name"].as_str().unwrap_or_default();
        let attached_to = v["attachments"][0]["server_id"]
            .as_str()
            .unwrap_or_default();
        if let Some(n) = owner_of(vn, &names, &live, false)
            && orphan_node(n)
            && free_or_orphaned(attached_to)
            && older_than(&v["created_at"], grace)
        {
            found.push((
                Service::BlockStorage,
                "volume",
                vn.to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if found.is_empty() {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!("no orphans older than {}", crate::duration::format(grace)),
        ));
    }
    for (service, what, name, id) in &found {
        if dry_run {
            ctx.event(
                EventKind::Note,
                format!("orphan (dry run, kept): {what} {name} ({id})"),
                Some(json!({ "what": what, "name": name, "id": id })),
            )
            .await?;
            continue;
        }
        let path: Vec<&str> = match service {
            Service::Compute => vec!["servers", id],
            Service::Network if *what == "port" => vec!["ports", id],
            Service::Network => vec!["floatingips", id],
            _ => vec!["volumes", id],
        };
        match c.os.delete(*service, &path).await {
            Ok(()) => {
                ctx.event(
                    EventKind::Cleanup,
                    format!("orphan deleted: {what} {name} ({id})"),
                    Some(json!({ "what": what, "name": name, "id": id })),
                )
                .await?;
            }
            // A volume still attached to an orphan server being deleted: the next sweep.
            Err(e) if e.status == 400 => {
                ctx.event(
                    EventKind::Note,
                    format!("orphan {what} {name} not deleted yet: {e}"),
                    None,
                )
                .await?;
            }
            Err(e) => return Err(os_error(&format!("deleting orphan {what} {name}"), e)),
        }
    }
    Ok(Outcome::next("ok"))
}

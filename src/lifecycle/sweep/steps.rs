//! The sweeps, run by schedules (or submitted by hand) as one-node jobs: a request names no
//! nodes, and admission gives it the one task `sweep` (the older `"nodes": ["sweep"]` is
//! still accepted):
//!
//! - `repair_sweep` (per cluster): finds unhealthy workers and submits one repair job for up
//!   to `max_parallel` of them, skipping nodes an unfinished job already holds; when more
//!   than `max_unhealthy` of the workers are unhealthy it stops and says why.
//! - `orphan_sweep` (per cluster, with the cluster's own credentials): OpenStack servers,
//!   ports, volumes and floating IPs that carry this cluster's marks (Capstan's or CAPO's,
//!   see `cloud::marks`) but belong to no live Machine and no unfinished job of any tenant
//!   are deleted once older than `grace` — or only listed (`dry_run`).
//!
//! Both create jobs, if at all, only through the intake.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use std::sync::Arc;

use super::admission::OrphanSweepParams;
use super::common::{capi_of, cluster_of, kube_error, os_error, os_of};
use super::{IntakeCell, repair};
use crate::cloud::capi::{self, capo};
use crate::cloud::marks;
use crate::cloud::os::{OpenStack, Service};
use crate::cloud::{Clients, ClusterRef};
use crate::engine::intake::{Intake, Refused};
use crate::engine::progress::{Field, Progress};
use crate::engine::step::{Outcome, Registry, StepContext, StepError};
use crate::lifecycle::kind::{self, JobKind};
use crate::lifecycle::params;
use crate::model::{EventKind, FailureClass, JobState};
use crate::store::{IdempotencyKey, JobFilter, JobRow, Store};

fn intake_of(cell: &IntakeCell) -> Result<Arc<Intake>, StepError> {
    cell.get()
        .cloned()
        .ok_or_else(|| StepError::new(FailureClass::Transient, "the intake is not ready yet"))
}

pub fn register_repair_sweep(r: &mut Registry, clients: Clients, intake: IntakeCell) {
    r.step("sweep.repair", &["ok"], move |ctx| {
        let (c, i) = (clients.clone(), intake.clone());
        async move { repair_sweep(&c, &*intake_of(&i)?, ctx).await }
    });
}

pub fn register_orphan_sweep(r: &mut Registry, clients: Clients, intake: IntakeCell) {
    r.step("sweep.orphans", &["ok"], move |ctx| {
        let (c, i) = (clients.clone(), intake.clone());
        async move { orphan_sweep(&c, intake_of(&i)?.store(), ctx).await }
    });
}

/// Every unfinished job, other than `except`.
async fn unfinished_jobs(store: &Store, except: &str) -> Result<Vec<JobRow>, StepError> {
    let mut out = Vec::new();
    for state in [
        JobState::Queued,
        JobState::Running,
        JobState::NeedsInput,
        JobState::Cancelling,
    ] {
        let filter = JobFilter {
            state: Some(state),
            ..JobFilter::default()
        };
        out.extend(
            store
                .list_all_jobs(&filter)
                .await?
                .into_iter()
                .filter(|j| j.id != except),
        );
    }
    Ok(out)
}

/// Node names held by unfinished jobs anywhere (other than `except`): a name in any
/// tenant's job is not an orphan.
async fn busy_nodes(store: &Store, except: &str) -> Result<BTreeSet<String>, StepError> {
    let mut out = BTreeSet::new();
    for j in unfinished_jobs(store, except).await? {
        for t in store.tasks(&j.id).await? {
            out.insert(t.name);
        }
    }
    Ok(out)
}

/// What a repair_sweep's node records: the repair job it submitted. See
/// `engine::progress`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RepairSweepProgress {
    repair_job: Option<String>,
}

impl Progress for RepairSweepProgress {}

impl RepairSweepProgress {
    const REPAIR_JOB: Field<Self, String> = Field::new("repair_job");
}

/// Finds the cluster's unhealthy workers and submits one repair job for those no other job
/// holds, as many as `max_parallel` leaves room for.
async fn repair_sweep(
    c: &Clients,
    intake: &Intake,
    mut ctx: StepContext,
) -> Result<Outcome, StepError> {
    if let Some(j) = ctx.progress::<RepairSweepProgress>()?.repair_job {
        // Quoted, as the note has always shown the ID.
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!("submitted repair job {j:?}"),
        ));
    }
    let cref = cluster_of(&ctx)?;
    let (workers, unhealthy) = unhealthy_workers(c, &cref, &ctx.params).await?;
    if unhealthy.is_empty() {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!("all {workers} workers of {cref} are healthy; nothing to repair"),
        ));
    }
    let chosen = match choose(intake.store(), &ctx, &unhealthy).await? {
        Ok(chosen) => chosen,
        Err(nothing) => return Ok(nothing),
    };
    let job_id = match submit_repair(intake, &ctx, &chosen).await? {
        Ok(id) => id,
        Err(stopped) => return Ok(stopped),
    };
    ctx.record(
        RepairSweepProgress::REPAIR_JOB,
        &job_id,
        Some(format!(
            "submitted repair job {job_id} for {}",
            chosen.join(", ")
        )),
    )
    .await?;
    Ok(Outcome::next("ok"))
}

/// The cluster's workers (how many) and the unhealthy ones, each with why (repair's
/// health assessment under the sweep's thresholds).
async fn unhealthy_workers(
    c: &Clients,
    cref: &ClusterRef,
    params: &Value,
) -> Result<(usize, Vec<(String, String)>), StepError> {
    let thresholds = repair::Thresholds::from_params(params);
    let machines = capi_of(c)
        .await?
        .machines(&cref.ns)
        .list(&kube::api::ListParams::default().labels(&format!(
            "{}={},!{}",
            capi::CLUSTER_NAME_LABEL,
            cref.name,
            capi::CONTROL_PLANE_LABEL
        )))
        .await
        .map_err(|e| kube_error("listing Machines", e))?
        .items;
    let servers = os_of(c, cref)
        .await?
        .get(Service::Compute, &["servers", "detail"], &[])
        .await
        .map_err(|e| os_error("listing servers", e))?;
    let mut unhealthy = Vec::new();
    for m in &machines {
        let name = m.metadata.name.clone().unwrap_or_default();
        let machine = capi::Machine::read(m);
        let server = super::common::pick_server(
            servers["servers"].as_array().into_iter().flatten(),
            cref,
            &machine,
        );
        if let Some(why) = repair::assess(&machine, server, thresholds) {
            unhealthy.push((name, why));
        }
    }
    Ok((machines.len(), unhealthy))
}

/// The unhealthy nodes to repair now: not held by an unfinished job of this cluster, and at
/// most `max_parallel` of the cluster's nodes in repair at once. Each unhealthy node is
/// noted in the history; none to repair is the step's outcome.
async fn choose(
    store: &Store,
    ctx: &StepContext,
    unhealthy: &[(String, String)],
) -> Result<Result<Vec<String>, Outcome>, StepError> {
    let unfinished = unfinished_jobs(store, &ctx.job_id).await?;
    // Nodes an unfinished job of this cluster holds: left to that job.
    let mut busy = BTreeSet::new();
    for j in unfinished.iter().filter(|j| j.cluster == ctx.cluster) {
        busy.extend(store.tasks(&j.id).await?.into_iter().map(|t| t.name));
    }
    for (n, why) in unhealthy {
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
    let max_parallel = params::of_job::<repair::HealthParams>(&ctx.params)?
        .max_parallel
        .map_or(1, |p| p.0 as usize);
    // At most max_parallel of the cluster's nodes in repair at once, counting repairs
    // earlier sweeps (or operators) started that are not finished.
    let mut repairing = 0;
    for j in unfinished
        .iter()
        .filter(|j| j.kind == repair::NAME && j.cluster == ctx.cluster)
    {
        repairing += store.tasks(&j.id).await?.len();
    }
    let room = max_parallel.saturating_sub(repairing);
    let chosen: Vec<String> = unhealthy
        .iter()
        .filter(|(n, _)| !busy.contains(n))
        .take(room)
        .map(|(n, _)| n.clone())
        .collect();
    if chosen.is_empty() {
        return Ok(Err(Outcome::next_because(
            "ok",
            None,
            format!(
                "nothing submitted: {repairing} node(s) of {} already in repair (max_parallel {max_parallel}), or every unhealthy worker is in a job",
                ctx.cluster
            ),
        )));
    }
    Ok(Ok(chosen))
}

/// Submits the repair of `chosen` the one way every job comes in, as the sweep's owner: its
/// admission (max_unhealthy, specs) is the same as for a repair submitted by hand. The new
/// job's ID, or the outcome that stops the sweep.
async fn submit_repair(
    intake: &Intake,
    ctx: &StepContext,
    chosen: &[String],
) -> Result<Result<String, Outcome>, StepError> {
    let owner = intake
        .store()
        .job(&ctx.job_id)
        .await?
        .map(|j| j.owner)
        .unwrap_or_default();
    let Some(principal) = intake.auth().principal(&owner).cloned() else {
        return Ok(Err(Outcome::fail(
            FailureClass::Auth,
            format!("the sweep's owner {owner} no longer exists; no repair submitted"),
        )));
    };
    // The sweep's own fields that a repair takes too are passed on.
    let mut params = serde_json::Map::new();
    let passed_on = super::RepairSweep
        .fields()
        .iter()
        .filter(|f| repair::Repair.fields().contains(f));
    for &k in passed_on {
        if !ctx.params[k].is_null() {
            params.insert(k.to_string(), ctx.params[k].clone());
        }
    }
    let body = json!({
        "kind": repair::NAME,
        "cluster": ctx.cluster,
        "tenant": ctx.tenant,
        "nodes": chosen,
        "params": params,
    });
    // One repair job per sweep job, also when this step runs again after a crash.
    let key = IdempotencyKey {
        key: format!("repair-sweep-{}", ctx.job_id),
        request: json!({ "sweep": ctx.job_id }).to_string(),
    };
    match intake
        .submit(&principal, &body, Some(&key), Vec::new())
        .await
    {
        Ok(s) => Ok(Ok(s.job_id)),
        Err(Refused::Unavailable(m)) => Err(StepError::new(FailureClass::Transient, m)),
        Err(Refused::Store(e)) => Err(e.into()),
        Err(r) => Ok(Err(Outcome::fail(
            FailureClass::Conflict,
            format!("stopped: {}", r.summary()),
        ))),
    }
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

/// Which of `nodes` a port or volume belongs to by CAPO's names (`capo::is_port_of`,
/// `capo::is_volume_of`), the longest name first — unless a live Machine's name could
/// claim it.
fn owner_of<'a>(
    name: &str,
    nodes: &'a BTreeSet<String>,
    live: &BTreeSet<String>,
    port: bool,
) -> Option<&'a String> {
    if live.iter().any(|l| capo::may_be_of(name, l)) {
        return None;
    }
    nodes
        .iter()
        .filter(|n| {
            if port {
                capo::is_port_of(name, n)
            } else {
                capo::is_volume_of(name, n)
            }
        })
        .max_by_key(|n| n.len())
}

/// Finds what Capstan (or CAPO, for Capstan's nodes) made for this cluster and nothing owns
/// any more. Only resources with proof they are this cluster's are candidates: servers
/// carrying its mark, floating IPs Capstan described for it, ports with CAPO's description
/// for it, and volumes attached to an orphan server or described by CAPO for one of the
/// cluster's nodes — read with the cluster's own credentials.
async fn orphan_sweep(c: &Clients, store: &Store, ctx: StepContext) -> Result<Outcome, StepError> {
    let cluster = cluster_of(&ctx)?;
    let os = os_of(c, &cluster).await?;
    let own = params::of_job::<OrphanSweepParams>(&ctx.params)?;
    let grace = own
        .grace
        .map_or(std::time::Duration::from_secs(3600), |g| g.0);
    let dry_run = own.dry_run.is_some_and(|f| f.0);
    let mut alive = Alive::read(c, store, &ctx).await?;
    let servers = os
        .get(Service::Compute, &["servers", "detail"], &[])
        .await
        .map_err(|e| os_error("listing servers", e))?;
    let servers = servers["servers"].as_array().cloned().unwrap_or_default();
    for s in &servers {
        if marks::server_is_marked(s, &cluster)
            && let Some(n) = s["name"].as_str()
        {
            alive.names.insert(n.to_string());
        }
    }
    let look = Look {
        cluster: &cluster,
        grace,
        alive: &alive,
    };
    let mut found = look.servers(&servers);
    // Neutron shows credentials with the admin role every project's: ask for this one's.
    let project = [("project_id", os.project_id.as_str())];
    let fips = os
        .get(Service::Network, &["floatingips"], &project)
        .await
        .map_err(|e| os_error("listing floating IPs", e))?;
    found.extend(look.floating_ips(&fips));
    // A port or volume attached to a server that is not itself an orphan is in use.
    let orphan_servers: BTreeSet<String> = found.iter().map(|f| f.id.clone()).collect();
    let ports = os
        .get(Service::Network, &["ports"], &project)
        .await
        .map_err(|e| os_error("listing ports", e))?;
    found.extend(look.ports(&ports, &orphan_servers));
    let volumes = os
        .get(Service::BlockStorage, &["volumes", "detail"], &[])
        .await
        .map_err(|e| os_error("listing volumes", e))?;
    found.extend(look.volumes(&volumes, &orphan_servers));
    if found.is_empty() {
        return Ok(Outcome::next_because(
            "ok",
            None,
            format!("no orphans older than {}", crate::duration::format(grace)),
        ));
    }
    for orphan in &found {
        remove_orphan(&ctx, &os, orphan, dry_run).await?;
    }
    Ok(Outcome::next("ok"))
}

/// An orphan the sweep found: its service, what it is, its name and ID.
struct Orphan {
    service: Service,
    what: &'static str,
    name: String,
    id: String,
}

/// What is alive, read once per sweep: every Machine's name anywhere and the servers
/// Machines name; the nodes any unfinished job holds, in any tenant; and the names of the
/// nodes Capstan made in this cluster.
struct Alive {
    live: BTreeSet<String>,
    live_servers: BTreeSet<String>,
    busy: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl Alive {
    async fn read(c: &Clients, store: &Store, ctx: &StepContext) -> Result<Alive, StepError> {
        let machines: Vec<capi::Machine> = capi_of(c)
            .await?
            .all_machines()
            .list(&Default::default())
            .await
            .map_err(|e| kube_error("listing Machines", e))?
            .items
            .iter()
            .map(capi::Machine::read)
            .collect();
        let busy = busy_nodes(store, &ctx.job_id).await?;
        // The nodes Capstan made in this cluster: the nodes of its jobs of the kinds that
        // make servers (scale_out, repair); the servers carrying its mark add theirs.
        let mut names = BTreeSet::new();
        let filter = JobFilter {
            cluster: Some(ctx.cluster.clone()),
            ..JobFilter::default()
        };
        for j in store
            .list_all_jobs(&filter)
            .await?
            .iter()
            .filter(|j| kind::find(&j.kind).is_some_and(|k| k.makes_servers()))
        {
            for t in store.tasks(&j.id).await? {
                names.insert(t.name);
            }
        }
        Ok(Alive {
            live: machines.iter().map(|m| m.name.clone()).collect(),
            live_servers: machines
                .iter()
                .filter_map(capi::Machine::server_id)
                .collect(),
            busy,
            names,
        })
    }

    /// A node no Machine has and no unfinished job holds.
    fn orphan_node(&self, n: &str) -> bool {
        !self.live.contains(n) && !self.busy.contains(n)
    }
}

/// One sweep's look at OpenStack's lists: the orphans in each, each with proof it is the
/// cluster's, older than `grace`.
struct Look<'a> {
    cluster: &'a ClusterRef,
    grace: std::time::Duration,
    alive: &'a Alive,
}

impl Look<'_> {
    fn servers(&self, servers: &[Value]) -> Vec<Orphan> {
        servers
            .iter()
            .filter(|s| {
                let sid = s["id"].as_str().unwrap_or_default();
                marks::server_is_marked(s, self.cluster)
                    && self
                        .alive
                        .orphan_node(s["name"].as_str().unwrap_or_default())
                    && !self.alive.live_servers.contains(sid)
                    && older_than(&s["created"], self.grace)
            })
            .map(|s| Orphan {
                service: Service::Compute,
                what: "server",
                name: s["name"].as_str().unwrap_or_default().to_string(),
                id: s["id"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    fn floating_ips(&self, fips: &Value) -> Vec<Orphan> {
        let mut found = Vec::new();
        for f in fips["floatingips"].as_array().into_iter().flatten() {
            let desc = f["description"].as_str().unwrap_or_default();
            if let Some((owner, _, n)) = marks::read_floating_ip_description(desc)
                && owner == *self.cluster
                && self.alive.orphan_node(&n)
                && older_than(&f["created_at"], self.grace)
            {
                found.push(Orphan {
                    service: Service::Network,
                    what: "floating IP",
                    name: f["floating_ip_address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    id: f["id"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        found
    }

    fn ports(&self, ports: &Value, orphan_servers: &BTreeSet<String>) -> Vec<Orphan> {
        let free_or_orphaned = |device: &str| device.is_empty() || orphan_servers.contains(device);
        let port_mark = marks::capo_port_description(self.cluster);
        let mut found = Vec::new();
        for p in ports["ports"].as_array().into_iter().flatten() {
            let pn = p["name"].as_str().unwrap_or_default();
            if p["description"] == port_mark.as_str()
                && let Some(n) = owner_of(pn, &self.alive.names, &self.alive.live, true)
                && self.alive.orphan_node(n)
                && free_or_orphaned(p["device_id"].as_str().unwrap_or_default())
                && older_than(&p["created_at"], self.grace)
            {
                found.push(Orphan {
                    service: Service::Network,
                    what: "port",
                    name: pn.to_string(),
                    id: p["id"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        found
    }

    fn volumes(&self, volumes: &Value, orphan_servers: &BTreeSet<String>) -> Vec<Orphan> {
        let mut found = Vec::new();
        for v in volumes["volumes"].as_array().into_iter().flatten() {
            let vn = v["name"].as_str().unwrap_or_default();
            let attached_to = v["attachments"][0]["server_id"]
                .as_str()
                .unwrap_or_default();
            let Some(n) = owner_of(vn, &self.alive.names, &self.alive.live, false) else {
                continue;
            };
            let proven = orphan_servers.contains(attached_to)
                || (attached_to.is_empty() && marks::capo_volume_described_for(v, n));
            if proven && self.alive.orphan_node(n) && older_than(&v["created_at"], self.grace) {
                found.push(Orphan {
                    service: Service::BlockStorage,
                    what: "volume",
                    name: vn.to_string(),
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        found
    }
}

/// Deletes one orphan (or, in a dry run, only notes it), recording what was done.
async fn remove_orphan(
    ctx: &StepContext,
    os: &OpenStack,
    orphan: &Orphan,
    dry_run: bool,
) -> Result<(), StepError> {
    let Orphan {
        service,
        what,
        name,
        id,
    } = orphan;
    if dry_run {
        return ctx
            .event(
                EventKind::Note,
                format!("orphan (dry run, kept): {what} {name} ({id})"),
                Some(json!({ "what": what, "name": name, "id": id })),
            )
            .await;
    }
    let path: Vec<&str> = match service {
        Service::Compute => vec!["servers", id],
        Service::Network if *what == "port" => vec!["ports", id],
        Service::Network => vec!["floatingips", id],
        _ => vec!["volumes", id],
    };
    match os.delete(*service, &path).await {
        Ok(()) => {
            ctx.event(
                EventKind::Cleanup,
                format!("orphan deleted: {what} {name} ({id})"),
                Some(json!({ "what": what, "name": name, "id": id })),
            )
            .await
        }
        // A volume still attached to an orphan server being deleted: the next sweep.
        Err(e) if e.status == 400 => {
            ctx.event(
                EventKind::Note,
                format!("orphan {what} {name} not deleted yet: {e}"),
                None,
            )
            .await
        }
        Err(e) => Err(os_error(&format!("deleting orphan {what} {name}"), e)),
    }
}

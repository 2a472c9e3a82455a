//! Three `capstan serve` replicas on one PostgreSQL database and one simulated cloud, SIGKILLed
//! and restarted at random for the whole run, while jobs of all three kinds (scale_out,
//! delete_nodes of standalone nodes and of MachineSet workers, repair of NotReady and of
//! healthy nodes) are submitted to whichever replica is up. At the end: every job finished
//! and succeeded, none lost (each is listed, once), nothing done twice (one server and one
//! Machine per living node, the MachineSet lowered exactly once per worker deleted), nothing
//! leaked (no server, port, volume or floating IP beyond the living nodes').
//!
//! Needs `CAPSTAN_TEST_PG` (`tests/postgres/run` starts a server); without it the test says
//! it is skipped and passes. `CAPSTAN_SOAK_JOBS` sets its size (default 20: a CI run of
//! under a minute); `CAPSTAN_SOAK_SEED` repeats a run's choices (each run prints its seed).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::api::Api;
use crate::common::db::{TestDb, test_pg};
use crate::common::process::{Process, SERVE_LISTENING};
use crate::common::scenarios::node_healthy;
use crate::common::{TOKEN, World, assert_exactly_as_specified, by_name, counts, name_of, request};

const REPLICAS: usize = 3;

/// A replica: up (its process and address) or killed, waiting to be started again.
type Replica = Option<(Process, String)>;

fn start(w: &World) -> (Process, String) {
    Process::start(w.serve_command(), SERVE_LISTENING)
}

/// What a job was submitted to do, for the checks at the end.
#[derive(Debug, Clone)]
enum Plan {
    ScaleOut(Vec<usize>),
    DeleteStandalone(usize),
    DeleteSetWorker(String),
    /// The node, and whether it was made NotReady first (the fault to end once its old
    /// Machine is deleted).
    Repair(usize, Option<String>),
}

impl Plan {
    fn kind(&self) -> &'static str {
        match self {
            Plan::ScaleOut(_) => "scale_out",
            Plan::DeleteStandalone(_) | Plan::DeleteSetWorker(_) => "delete_nodes",
            Plan::Repair(..) => "repair",
        }
    }
}

/// Submits to a random replica that is up, with an idempotency key: a retry after a
/// connection lost mid-request (a replica killed) returns the job the first attempt made.
async fn submit(replicas: &[Replica], body: &Value, key: &str) -> String {
    for _ in 0..200 {
        let up: Vec<&String> = replicas.iter().flatten().map(|(_, url)| url).collect();
        if let Some(url) = up.get(fastrand::usize(0..up.len().max(1))) {
            let api = Api::new(url, TOKEN, Some(Duration::from_secs(10)));
            let sent = api
                .send(
                    Method::POST,
                    "/v1/jobs",
                    Some(TOKEN),
                    Some(&body.to_string()),
                    &[("idempotency-key", key)],
                )
                .await;
            if let Ok((status, text)) = sent {
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if status.as_u16() == 202 || status.as_u16() == 200 {
                    return answer["id"].as_str().unwrap().to_string();
                }
                assert!(status.is_server_error(), "{key}: {status} {text}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica took {key}");
}

/// A node's resources in the cloud, by name: servers, ports, volumes, floating IPs.
fn resources_of(state: &Value, name: &str) -> [usize; 4] {
    let prefix = format!("{name}-");
    let named = |k: &str| -> Vec<&Value> {
        state[k]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
            .collect()
    };
    let ports = named("ports");
    let fips = state["floating_ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| ports.iter().any(|p| p["id"] == f["port_id"]))
        .count();
    [
        by_name(&state["servers"], name).len(),
        ports.len(),
        named("volumes").len(),
        fips,
    ]
}

fn soak_jobs() -> usize {
    std::env::var("CAPSTAN_SOAK_JOBS")
        .ok()
        .map(|v| v.parse().expect("CAPSTAN_SOAK_JOBS: a number of jobs"))
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_on_one_postgresql_killed_at_random_lose_double_and_leak_nothing() {
    let Some(server) = test_pg() else {
        println!(
            "skipped: CAPSTAN_TEST_PG is not set (tests/postgres/run starts a PostgreSQL server)"
        );
        return;
    };
    let began = Instant::now();
    let jobs = soak_jobs().max(4);
    // Half scale_out, a quarter each delete_nodes and repair; a third of the deletes take
    // MachineSet workers.
    let (repairs, deletes) = (jobs / 4, jobs / 4);
    let set_deletes = deletes.div_ceil(3);
    let scale_outs = jobs - repairs - deletes;

    let db = TestDb::postgres(&server);
    let mut w = World::replicas_on(&db.location);
    let mut replicas: Vec<Replica> = (0..REPLICAS).map(|_| Some(start(&w))).collect();
    w.api.url = replicas[0].as_ref().unwrap().1.clone();
    w.quota(
        json!({"instances": 10_000, "cores": 100_000, "ram_mib": 100_000_000,
                   "volumes": 10_000, "gigabytes": 1_000_000, "ports": 10_000,
                   "floatingip": 10_000}),
    )
    .await;
    let set_workers = w.scale_demo_set(3 + set_deletes).await;
    let baseline = counts(&w).await;
    let start_state = w.state().await;

    let seed = std::env::var("CAPSTAN_SOAK_SEED")
        .ok()
        .map(|v| v.parse().expect("CAPSTAN_SOAK_SEED: a number"))
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("replica soak: {jobs} jobs, seed {seed}");
    let mut submitted: Vec<(String, Plan)> = Vec::new();
    let mut finished: BTreeMap<String, Value> = BTreeMap::new();
    let mut todo = (scale_outs, deletes - set_deletes, set_deletes, repairs);
    let mut set_left: Vec<String> = set_workers.clone();
    let mut next_node = 1;
    // Standalone nodes whose scale_out succeeded and that no later job has taken.
    let mut free: Vec<usize> = Vec::new();
    let mut faults: Vec<(String, String)> = Vec::new(); // (repair job, fault)
    let (mut kills, mut restarts, mut rounds) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60 * (5 + jobs as u64 / 2));

    while submitted.len() < jobs || finished.len() < jobs {
        rounds += 1;
        assert!(
            Instant::now() < deadline,
            "the soak did not finish: {} of {} jobs finished",
            finished.len(),
            submitted.len()
        );
        let up = replicas.iter().flatten().next().unwrap();
        w.api.url = up.1.clone();

        // A job of a kind that can be submitted now.
        let mut kinds = Vec::new();
        if todo.0 > 0 {
            kinds.push(0);
        }
        if todo.1 > 0 && !free.is_empty() {
            kinds.push(1);
        }
        if todo.2 > 0 {
            kinds.push(2);
        }
        if todo.3 > 0 && !free.is_empty() {
            kinds.push(3);
        }
        if !kinds.is_empty() {
            let (plan, body) = match kinds[rng.usize(0..kinds.len())] {
                0 => {
                    todo.0 -= 1;
                    let n: Vec<usize> = (0..rng.usize(1..=2)).map(|k| next_node + k).collect();
                    next_node += n.len();
                    let nodes = n.iter().map(|i| w.node(*i)).collect();
                    (Plan::ScaleOut(n), request(nodes))
                }
                1 => {
                    todo.1 -= 1;
                    let i = free.swap_remove(rng.usize(0..free.len()));
                    let name = name_of(&w.node(i)).to_string();
                    (
                        Plan::DeleteStandalone(i),
                        json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": [name]}),
                    )
                }
                2 => {
                    todo.2 -= 1;
                    let name = set_left.swap_remove(rng.usize(0..set_left.len()));
                    (
                        Plan::DeleteSetWorker(name.clone()),
                        json!({"kind": "delete_nodes", "cluster": "default/demo", "nodes": [name]}),
                    )
                }
                _ => {
                    todo.3 -= 1;
                    let i = free.swap_remove(rng.usize(0..free.len()));
                    let name = name_of(&w.node(i)).to_string();
                    // Half of them find the node NotReady and replace it.
                    let fault = if rng.bool() {
                        let f = w
                            .fault(json!({"kind": "node_not_ready", "node": name}))
                            .await;
                        node_healthy(&w, &name, "Unknown").await;
                        Some(f)
                    } else {
                        None
                    };
                    (
                        Plan::Repair(i, fault),
                        json!({"kind": "repair", "cluster": "default/demo", "nodes": [name],
                               "unhealthy_after": "1s"}),
                    )
                }
            };
            let key = format!("soak-{}", submitted.len());
            let id = submit(&replicas, &body, &key).await;
            if let Plan::Repair(_, Some(f)) = &plan {
                faults.push((id.clone(), f.clone()));
            }
            submitted.push((id, plan));
        }

        // Kill one replica (never the last one up) and start the ones killed before.
        tokio::time::sleep(Duration::from_millis(rng.u64(200..1200))).await;
        for r in replicas.iter_mut().filter(|r| r.is_none()) {
            *r = Some(start(&w));
            restarts += 1;
        }
        let victim = rng.usize(0..REPLICAS);
        if rng.f32() < 0.6 {
            replicas[victim] = None; // SIGKILL on drop
            kills += 1;
        }
        let up = replicas.iter().flatten().next().unwrap();
        w.api.url = up.1.clone();

        // A repaired node's kubelet is fine again once its old Machine is gone.
        let mut ended = Vec::new();
        for (k, (id, fault)) in faults.iter().enumerate() {
            let replaced = w.events(id).await.iter().any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("standalone: deleted"))
            });
            if replaced || finished.contains_key(id) {
                w.end_fault(fault).await;
                ended.push(k);
            }
        }
        for k in ended.into_iter().rev() {
            faults.remove(k);
        }

        // What finished; a scale_out's nodes become free for a delete or a repair.
        for (id, plan) in &submitted {
            if finished.contains_key(id) {
                continue;
            }
            let Some(job) = w.get(&format!("/v1/jobs/{id}")).await else {
                continue;
            };
            if job["finished_at"].is_string() {
                if let (Plan::ScaleOut(n), "succeeded") = (plan, job["state"].as_str().unwrap()) {
                    free.extend(n);
                }
                finished.insert(id.clone(), job);
            }
        }
    }
    // All up for the checks.
    for r in replicas.iter_mut().filter(|r| r.is_none()) {
        *r = Some(start(&w));
        restarts += 1;
    }
    w.api.url = replicas[rng.usize(0..REPLICAS)].as_ref().unwrap().1.clone();

    // Every job finished, and succeeded.
    let mut failed = Vec::new();
    for (id, plan) in &submitted {
        let job = &finished[id];
        if job["state"] != "succeeded" {
            failed.push(format!("{} {id}: {}", plan.kind(), job["state"]));
        }
    }
    // None lost: each submitted job is listed, and nothing else (a retried submission made
    // no second job).
    let listed = w.get("/v1/jobs?limit=500").await.unwrap();
    let listed: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let ids: BTreeSet<&String> = submitted.iter().map(|(id, _)| id).collect();
    let lost = ids.iter().filter(|id| !listed.contains(id)).count();
    let extra = listed.len() - (ids.len() - lost);

    // The nodes that should be: the MachineSet's workers not deleted, the standalone nodes
    // made and not deleted.
    let mut living: Vec<usize> = Vec::new();
    let mut deleted_set: Vec<String> = Vec::new();
    for (_, plan) in &submitted {
        match plan {
            Plan::ScaleOut(n) => living.extend(n),
            Plan::DeleteStandalone(i) => living.retain(|x| x != i),
            Plan::DeleteSetWorker(name) => deleted_set.push(name.clone()),
            Plan::Repair(..) => {}
        }
    }
    let state = w.state().await;
    // Nothing done twice: one server per name, one Machine per living node, the set
    // lowered once per worker deleted.
    let mut servers: BTreeMap<&str, usize> = BTreeMap::new();
    for s in state["servers"].as_array().unwrap() {
        *servers.entry(s["name"].as_str().unwrap()).or_default() += 1;
    }
    let duplicated_servers: usize = servers.values().map(|n| n - 1).sum();
    let machines = w.machines().await.list(&Default::default()).await.unwrap();
    let machine_names: Vec<String> = machines
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    let set = w.machine_sets().await.get("demo-md-0").await.unwrap();
    let set_replicas = set.data["spec"]["replicas"].as_u64().unwrap() as usize;
    let set_now = w.set_machines().await.len();
    let lowered_wrong = set_replicas.abs_diff(set_workers.len() - deleted_set.len());
    // Nothing leaked: the project has what it had, less the deleted workers' resources,
    // plus the living standalone nodes'.
    let mut expected = baseline;
    for name in &deleted_set {
        for (e, r) in expected.iter_mut().zip(resources_of(&start_state, name)) {
            *e -= r;
        }
    }
    let now = counts(&w).await;
    let per_node = [1, 1, 2, 1];
    let leaked: Vec<i64> = (0..4)
        .map(|k| now[k] as i64 - (expected[k] + per_node[k] * living.len()) as i64)
        .collect();

    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, plan) in &submitted {
        *by_kind.entry(plan.kind()).or_default() += 1;
    }
    let repaired = submitted
        .iter()
        .filter(|(_, p)| matches!(p, Plan::Repair(_, Some(_))))
        .count();
    eprintln!(
        "replica soak: {} jobs ({by_kind:?}; {repaired} repairs of NotReady nodes, {} set \
         workers deleted), {REPLICAS} replicas, {kills} kills, {restarts} restarts, {rounds} \
         rounds; failed {}, lost {lost}, extra {extra}, duplicated servers \
         {duplicated_servers}, set lowered wrong by {lowered_wrong}, leaked \
         [servers, ports, volumes, floating IPs] {leaked:?}; {:.1} s (seed {seed})",
        submitted.len(),
        deleted_set.len(),
        failed.len(),
        began.elapsed().as_secs_f64()
    );

    assert!(failed.is_empty(), "jobs that did not succeed: {failed:#?}");
    assert_eq!((lost, extra), (0, 0), "listed: {listed:?}");
    assert_eq!(duplicated_servers, 0, "{servers:?}");
    assert_eq!(
        (set_replicas, set_now),
        (
            set_workers.len() - deleted_set.len(),
            set_workers.len() - deleted_set.len()
        ),
        "the MachineSet lowered once per worker deleted"
    );
    for name in &deleted_set {
        assert!(!machine_names.contains(name), "{name} is still there");
    }
    for (_, plan) in &submitted {
        match plan {
            Plan::DeleteStandalone(i) => {
                let name = name_of(&w.node(*i)).to_string();
                assert!(!machine_names.contains(&name), "{name} is still there");
            }
            Plan::Repair(i, _) => {
                let name = name_of(&w.node(*i)).to_string();
                assert!(machine_names.contains(&name), "repaired {name} is gone");
            }
            _ => {}
        }
    }
    assert_eq!(
        leaked,
        vec![0; 4],
        "leaked [servers, ports, volumes, floating IPs]"
    );
    let nodes: Vec<Value> = living.iter().map(|i| w.node(*i)).collect();
    assert_exactly_as_specified(&w, &nodes, expected).await;
    assert_eq!(by_kind.len(), 3, "jobs of all three kinds ran: {by_kind:?}");
    assert!(kills > 0, "no replica was killed");
    drop(replicas);
    drop(w);
}

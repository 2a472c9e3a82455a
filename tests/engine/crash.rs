//! kill -9 at random instants, with two engine processes on one database: every job
//! completes, each step's effect happens exactly once, a step re-runs only when the process
//! that ran it died, no two processes ever work one job at once, and no event is lost or
//! doubled.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

use crate::common::db::EngineDb;
use crate::support::{ADMIN, Api, Server, ServerSpec, side_pool};

const MIN_JOBS: usize = 16;
const NODES: usize = 3;
const KILLS: usize = 10;

/// (job, node, workflow state)
type StepKey = (String, String, String);

/// Submits through whichever server answers; the idempotency key makes a retry after a
/// connection lost mid-request return the job the first attempt may have created.
async fn submit_somewhere(urls: &[String], body: &Value, key: &str) -> String {
    for round in 0..100 {
        let api = Api::new(&urls[round % urls.len()]);
        if let Ok((status, v)) = api
            .call(
                Method::POST,
                "/v1/jobs",
                Some(ADMIN),
                Some(&body.to_string()),
                &[("idempotency-key", key)],
            )
            .await
            && (status == StatusCode::ACCEPTED || status == StatusCode::OK)
        {
            return v["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no server took the submission");
}

/// Whether a worker process currently holds a lease, read from the engine's database.
async fn holds_a_lease(db: &EngineDb, pid: u32) -> bool {
    let now = capstan::store::now_ms();
    let held = db
        .integer(&format!(
            "SELECT COUNT(*) FROM jobs WHERE lease_owner LIKE '%-{pid}-%' AND lease_until > {now}"
        ))
        .await;
    held > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(dir.path());
    spec.lease = "2s"; // a runner trusts it for 2/3 of that past each heartbeat
    let mut rng = fastrand::Rng::with_seed(0xCA9_57A1);
    let mut servers = vec![Server::start(&spec), Server::start(&spec)];
    let engine_db = EngineDb::read_only(&spec.db).await;

    let mut ids = Vec::new();
    let mut killed: HashMap<i64, i64> = HashMap::new(); // pid -> kill time
    let mut kills = 0;
    let mut submitted = 0;
    let mut rounds = 0;
    while kills < KILLS || submitted < MIN_JOBS {
        rounds += 1;
        assert!(rounds < 500, "only {kills} kills in {rounds} rounds");
        // Jobs keep arriving while processes die.
        for _ in 0..2 {
            if kills < KILLS || submitted < MIN_JOBS {
                let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
                let nodes: Vec<Value> = (0..NODES)
                    .map(|n| json!({"name": format!("j{submitted}-n{n}"), "wait_ms": 250}))
                    .collect();
                let body = json!({"kind": "crash", "cluster": "default/demo", "nodes": nodes});
                ids.push(submit_somewhere(&urls, &body, &format!("crash-{submitted}")).await);
                submitted += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(150..600))).await;
        if kills < KILLS {
            // Kill a process while it holds work, at whatever instant that is.
            let victim = rng.usize(0..servers.len());
            if !holds_a_lease(&engine_db, servers[victim].pid()).await {
                continue;
            }
            let s = servers.remove(victim);
            let pid = s.pid();
            s.kill();
            killed.insert(pid as i64, capstan::store::now_ms());
            kills += 1;
            servers.push(Server::start(&spec));
        }
    }

    let api = Api::new(&servers[0].url);
    let mut succeeded = 0;
    for id in &ids {
        let job = api.wait_finished(id).await;
        assert_eq!(job["state"], "succeeded", "job {id}: {job}");
        succeeded += 1;
    }
    let jobs = ids.len();
    assert_eq!(succeeded, jobs);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        jobs,
        "a retried submission made a second job"
    );

    let side = side_pool(&spec.side).await;
    // Each effect exactly once: the step looks before it creates, so two copies would mean two
    // processes ran the same step at the same time.
    let effects: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT job, node, state, COUNT(*) FROM effects GROUP BY job, node, state")
            .fetch_all(&side)
            .await
            .unwrap();
    assert_eq!(effects.len(), jobs * NODES * 3, "every effect happened");
    for (job, node, state, n) in &effects {
        assert_eq!(*n, 1, "effect {job}/{node}/{state} happened {n} times");
    }

    // A step ran again only because the process running it (or about to commit it) died.
    let rows =
        sqlx::query("SELECT job, node, state, pid, started, ended FROM executions ORDER BY id")
            .fetch_all(&side)
            .await
            .unwrap();
    let mut runs: BTreeMap<StepKey, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        runs.entry((r.get("job"), r.get("node"), r.get("state")))
            .or_default()
            .push(r.get("pid"));
    }
    let mut reruns = 0;
    for (key, list) in &runs {
        for pid in &list[..list.len() - 1] {
            assert!(
                killed.contains_key(pid),
                "{key:?} ran again although process {pid} was never killed: {list:?}"
            );
            reruns += 1;
        }
    }

    // Never two processes on one job at once: per job, execution spans of different
    // processes do not overlap (a killed process's span ends at its kill).
    let mut by_job: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
    for r in &rows {
        let pid: i64 = r.get("pid");
        let end: Option<i64> = r.get("ended");
        let end = end
            .or_else(|| killed.get(&pid).copied())
            .expect("an unfinished execution belongs to a killed process");
        by_job
            .entry(r.get("job"))
            .or_default()
            .push((r.get("started"), end, pid));
    }
    for (job, spans) in &by_job {
        for a in spans {
            for b in spans {
                if a.2 != b.2 {
                    assert!(
                        a.1 <= b.0 || b.1 <= a.0,
                        "job {job}: processes {} and {} overlapped: {a:?} {b:?}",
                        a.2,
                        b.2
                    );
                }
            }
        }
    }

    // History: each node's transitions appear once each, in order; the job started and
    // finished once.
    let mut takeovers = 0;
    for id in &ids {
        let events = api.events(id).await;
        takeovers += events
            .iter()
            .filter(|e| e["kind"] == "lease_takeover")
            .count();
        for n in 0..NODES {
            let node_events: Vec<(String, String)> = events
                .iter()
                .filter(|e| {
                    e["kind"] == "transition"
                        && e["node"]
                            .as_str()
                            .is_some_and(|x| x.ends_with(&format!("-n{n}")))
                })
                .map(|e| {
                    (
                        e["from"].as_str().unwrap().to_string(),
                        e["to"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let expected: Vec<(String, String)> =
                [("a", "w"), ("w", "b"), ("b", "c"), ("c", "done")]
                    .iter()
                    .map(|(f, t)| (f.to_string(), t.to_string()))
                    .collect();
            assert_eq!(node_events, expected, "job {id} node n{n}");
        }
        let job_states: Vec<&str> = events
            .iter()
            .filter(|e| e["kind"] == "job_state")
            .map(|e| e["to"].as_str().unwrap())
            .collect();
        assert_eq!(job_states, vec!["running", "succeeded"], "job {id}");
    }
    assert!(
        takeovers >= 1,
        "no job was ever taken over after a kill; the test did not exercise recovery"
    );
    eprintln!(
        "crash test: {jobs} jobs, {kills} kills, {reruns} step re-runs after kills, {takeovers} lease takeovers"
    );
}

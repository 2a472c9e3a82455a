//! The engine's behaviour as an operator meets it through the API: retries and backoff
//! (which a watch's nudge never cuts short), deadlines, cancel, amend and resume, idempotency keys, node locks between jobs,
//! schedules (across restarts and processes), tenancy, and bad input of every kind.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::db::{EngineDb, TestDb, postgres_only, sqlite_only};
use crate::support::{ADMIN, Api, Server, ServerSpec, open_gate, open_store, serve_refuses};

fn job(kind: &str, nodes: Value) -> Value {
    json!({"kind": kind, "cluster": "default/demo", "nodes": nodes})
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_failing_step_is_retried_with_growing_backoff_until_it_works_or_its_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);

    // Fails twice (transient), then works.
    let ok = api
        .submit(
            ADMIN,
            &job("retry", json!([{"name": "n-1", "fail_times": 2}])),
        )
        .await;
    // Fails more often than the 4 attempts the workflow allows.
    let spent = api
        .submit(
            ADMIN,
            &job(
                "retry",
                json!([{"name": "n-2", "fail_times": 9, "fail_class": "capacity"}]),
            ),
        )
        .await;

    let ok = api.wait_finished(ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["state"], "succeeded");
    assert_eq!(ok["nodes"][0]["attempts_total"], 3);
    let events = api.events(ok["id"].as_str().unwrap()).await;
    let retries: Vec<&Value> = events.iter().filter(|e| e["kind"] == "retry").collect();
    assert_eq!(retries.len(), 2);
    assert!(retries.iter().all(|e| e["class"] == "transient"));
    assert_eq!(retries[0]["message"], "injected failure 1");
    // base 40ms, doubling, no jitter.
    let backoffs: Vec<u64> = retries
        .iter()
        .map(|e| e["data"]["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(backoffs, vec![40, 80]);

    let spent = api.wait_finished(spent["id"].as_str().unwrap()).await;
    assert_eq!(spent["state"], "failed");
    let node = &spent["nodes"][0];
    assert_eq!(
        node["state"], "gave_up",
        "the exhausted transition was taken"
    );
    assert_eq!(node["failure_class"], "capacity");
    assert!(
        node["last_error"]
            .as_str()
            .unwrap()
            .contains("4 of 4 attempts failed"),
        "{node}"
    );
    let events = api.events(spent["id"].as_str().unwrap()).await;
    let backoffs: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "retry")
        .map(|e| e["data"]["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(backoffs, vec![40, 80, 160], "capped at 160ms");

    // What an operator's Prometheus sees: retries by kind and class (the 4th capacity
    // failure spent the budget: not a retry, the node's failure), jobs by kind and state,
    // the one node that succeeded.
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "capstan_retries_total{kind=\"retry\",class=\"transient\"} 2",
        "capstan_retries_total{kind=\"retry\",class=\"capacity\"} 3",
        "capstan_node_failures_total{kind=\"retry\",class=\"capacity\"} 1",
        "capstan_node_ready_seconds_count{kind=\"retry\"} 1",
        "capstan_nodes{kind=\"retry\",status=\"succeeded\"} 1",
        "capstan_nodes{kind=\"retry\",status=\"failed\"} 1",
        "capstan_jobs{kind=\"retry\",state=\"succeeded\"} 1",
        "capstan_jobs{kind=\"retry\",state=\"failed\"} 1",
        "capstan_step_duration_seconds_count{kind=\"retry\",step=\"t.flaky\"} 7",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics lacks `{line}`:\n{metrics}"
        );
    }
    for (path, expect) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let resp = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap().trim(), expect);
    }
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
}

/// Every operation the OpenAPI document describes is one the server routes (not the
/// fallback's "no such route", not 405), asked with a token and well-formed path parameters.
/// The other way round holds by construction (routes and document entries are registered
/// together; `api::tests::every_route_is_registered_with_its_document_entry`).
#[tokio::test]
async fn every_operation_in_the_openapi_document_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let client = reqwest::Client::new();
    let doc: Value = client
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut asked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = path
                .replace("{id}", "0190a0a0-0000-7000-8000-000000000000")
                .replace("{ns}", "default")
                .replace("{name}", "demo");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = client
                .request(m, format!("{}{url}", server.url))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !body.contains("no such route"),
                "{method} {path}: {status} {body}"
            );
            asked += 1;
        }
    }
    assert!(asked >= 18, "only {asked} operations documented");
}

/// A watch's nudge (what `lifecycle::watch` does when a Machine of a node's name changes)
/// wakes a node that waits for something to change, never one backing off after a failure:
/// the two are told apart by their status, which the API shows, not by their reasons' text.
#[tokio::test]
async fn a_nudge_wakes_a_waiting_node_and_never_one_backing_off() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    open_gate(&spec.side, "open").await;
    let j = api
        .submit(
            ADMIN,
            &job(
                "nudge",
                json!([
                    {"name": "backing-1", "gate": "open", "fail_times": 1},
                    {"name": "waiting-1", "recheck_ms": 3_600_000},
                ]),
            ),
        )
        .await;
    let id = j["id"].as_str().unwrap();
    let before = api
        .wait_for(id, "one node backing off, one waiting", |j| {
            j["nodes"][0]["status"] == "backing_off" && j["nodes"][1]["status"] == "waiting"
        })
        .await;
    assert_eq!(
        before["state"], "running",
        "a backoff keeps the job running"
    );
    assert_eq!(
        before["node_counts"],
        json!({"backing_off": 1, "waiting": 1})
    );
    let backing = &before["nodes"][0];
    assert_eq!(
        backing["wait"]["reason"],
        "retrying flaky after transient failure (attempt 1)"
    );
    assert_eq!(before["waits"][0]["status"], "backing_off");

    let store = open_store(&spec.db).await;
    assert_eq!(
        store.nudge("default", "backing-1").await.unwrap(),
        Vec::<String>::new(),
        "a backing-off node is not nudged"
    );
    assert_eq!(
        store.nudge("default", "waiting-1").await.unwrap(),
        vec![id.to_string()]
    );
    // The waiting node looks again now: its next look is an hour from this run, not the last.
    let waited_until = before["nodes"][1]["wait"]["until"].clone();
    let after = api
        .wait_for(id, "the nudged node's step run again", |j| {
            j["nodes"][1]["wait"]["until"] != waited_until
        })
        .await;
    assert_eq!(after["nodes"][1]["status"], "waiting");
    let kept = &after["nodes"][0];
    assert_eq!(kept["status"], "backing_off");
    assert_eq!(kept["wait"]["until"], backing["wait"]["until"]);
    assert_eq!(
        kept["attempts_total"], backing["attempts_total"],
        "its step did not run again"
    );
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_its_unfinished_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let mut body = job("gate", json!(["held-1"]));
    body["deadline"] = json!("1s");
    let j = api.submit(ADMIN, &body).await;
    let j = api.wait_finished(j["id"].as_str().unwrap()).await;
    assert_eq!(j["state"], "failed");
    assert_eq!(j["nodes"][0]["failure_class"], "deadline");
    assert!(
        j["nodes"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("deadline")
    );

    // A node waiting for operator input is held to the deadline too.
    let mut body = job("input", json!(["unfixed-1"]));
    body["deadline"] = json!("1s");
    let j = api.submit(ADMIN, &body).await;
    let j = api.wait_finished(j["id"].as_str().unwrap()).await;
    assert_eq!(j["state"], "failed");
    assert_eq!(j["nodes"][0]["failure_class"], "deadline");
}

#[tokio::test]
async fn cancel_stops_at_a_safe_point_and_says_what_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let j = api.submit(ADMIN, &job("gate", json!(["c-1", "c-2"]))).await;
    let id = j["id"].as_str().unwrap();
    api.wait_for(id, "both nodes waiting at the gate", |j| {
        j["node_counts"]["waiting"] == 2
    })
    .await;
    let (status, _) = api
        .post(&format!("/v1/jobs/{id}/cancel"), ADMIN, &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let j = api.wait_finished(id).await;
    assert_eq!(j["state"], "cancelled");
    assert_eq!(j["node_counts"]["cancelled"], 2);
    let events = api.events(id).await;
    let left: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "operator" && e["to"] == "cancelled")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(
        left.iter()
            .all(|m| m.contains("cancelled in state hold; left in place: gate_seen_at=")),
        "{left:?}"
    );
    // A finished job cannot be cancelled again.
    let (status, body) = api
        .post(&format!("/v1/jobs/{id}/cancel"), ADMIN, &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn an_auth_error_fails_at_once_and_an_invalid_spec_error_waits_for_an_amend() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    // Retrying cannot help an authorization refusal: one attempt, the node fails.
    let auth = api
        .submit(
            ADMIN,
            &job(
                "retry",
                json!([{"name": "a-1", "fail_times": 9, "fail_class": "auth"}]),
            ),
        )
        .await;
    let auth = api.wait_finished(auth["id"].as_str().unwrap()).await;
    assert_eq!(auth["state"], "failed");
    assert_eq!(auth["nodes"][0]["attempts_total"], 1);
    assert_eq!(auth["nodes"][0]["failure_class"], "auth");
    let events = api.events(auth["id"].as_str().unwrap()).await;
    assert!(!events.iter().any(|e| e["kind"] == "retry"), "{events:#?}");
    // Nor a wrong spec: the node waits for an operator, who amends it and resumes.
    let bad = api
        .submit(
            ADMIN,
            &job(
                "retry",
                json!([{"name": "s-1", "fail_times": 1, "fail_class": "invalid_spec"}]),
            ),
        )
        .await;
    let id = bad["id"].as_str().unwrap().to_string();
    let waiting = api
        .wait_for(&id, "needs_input", |j| j["state"] == "needs_input")
        .await;
    assert_eq!(waiting["nodes"][0]["failure_class"], "invalid_spec");
    let (s, _) = api
        .call(
            Method::PATCH,
            &format!("/v1/jobs/{id}/nodes/s-1"),
            Some(ADMIN),
            Some("{\"fail_class\": \"transient\"}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(&format!("/v1/jobs/{id}/resume"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let done = api.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded");
    let events = api.events(&id).await;
    assert!(!events.iter().any(|e| e["kind"] == "retry"), "{events:#?}");
}

#[tokio::test]
async fn a_step_returning_an_outcome_it_never_declared_fails_its_node_as_internal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let job = api.submit(ADMIN, &job("undeclared", json!(["u-1"]))).await;
    let id = job["id"].as_str().unwrap();
    let done = api.wait_finished(id).await;
    // A bug in a step is Capstan's to fix, not the operator's: the node fails as
    // `internal`, never `invalid_spec` (which would ask for an amend that cannot help).
    assert_eq!(done["state"], "failed");
    assert_eq!(done["nodes"][0]["status"], "failed");
    assert_eq!(done["nodes"][0]["failure_class"], "internal");
    let error = done["nodes"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("undeclared outcome `sideways`") && error.contains("state a"),
        "{done:#}"
    );
    let events = api.events(id).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "failed" && e["class"] == "internal"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_needs_input_node_is_amended_then_resumed_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let j = api
        .submit(ADMIN, &job("input", json!(["ok-1", {"name": "bad-1"}])))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    // Both nodes need input (neither says fixed).
    let j = api
        .wait_for(&id, "needs_input", |j| j["state"] == "needs_input")
        .await;
    assert_eq!(j["nodes"][1]["status"], "needs_input");
    assert!(
        j["nodes"][1]["wait"]["reason"]
            .as_str()
            .unwrap()
            .contains("ssd2")
    );

    // Amending a node that does not exist, or renaming one, is refused.
    let path = format!("/v1/jobs/{id}/nodes/bad-1");
    let (s, _) = api
        .call(
            Method::PATCH,
            &format!("/v1/jobs/{id}/nodes/nope"),
            Some(ADMIN),
            Some("{\"fixed\": true}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = api
        .call(
            Method::PATCH,
            &path,
            Some(ADMIN),
            Some("{\"name\": \"other\"}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["fields"][0]["field"], "name");

    for node in ["ok-1", "bad-1"] {
        let (s, n) = api
            .call(
                Method::PATCH,
                &format!("/v1/jobs/{id}/nodes/{node}"),
                Some(ADMIN),
                Some("{\"fixed\": true}"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{n}");
        assert_eq!(n["spec"]["fixed"], true);
    }
    let (s, resumed) = api
        .post(&format!("/v1/jobs/{id}/resume"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["resumed"], json!(["ok-1", "bad-1"]));
    let j = api.wait_finished(&id).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    // A node that is running again cannot be amended; resume with nothing to resume is a 409.
    let (s, _) = api
        .call(
            Method::PATCH,
            &path,
            Some(ADMIN),
            Some("{\"fixed\": false}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = api
        .post(&format!("/v1/jobs/{id}/resume"), ADMIN, &json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let events = api.events(&id).await;
    let ops: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "operator")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        vec![
            "spec amended by admin: fixed",
            "spec amended by admin: fixed",
            "resumed by admin",
            "resumed by admin"
        ]
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job_and_refuses_a_different_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let body = job("gate", json!(["i-1"])).to_string();
    let key = [("idempotency-key", "scale-demo-42")];
    let (s1, first) = api
        .call(Method::POST, "/v1/jobs", Some(ADMIN), Some(&body), &key)
        .await
        .unwrap();
    let (s2, again) = api
        .call(Method::POST, "/v1/jobs", Some(ADMIN), Some(&body), &key)
        .await
        .unwrap();
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(first["id"], again["id"]);
    let other = job("gate", json!(["i-2"])).to_string();
    let (s3, err) = api
        .call(Method::POST, "/v1/jobs", Some(ADMIN), Some(&other), &key)
        .await
        .unwrap();
    assert_eq!(s3, StatusCode::CONFLICT);
    assert!(err["error"].as_str().unwrap().contains("scale-demo-42"));
    let (_, page) = api.get("/v1/jobs", ADMIN).await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        1,
        "only the first request made a job"
    );
}

#[tokio::test]
async fn two_jobs_on_one_node_never_act_at_once_and_the_second_says_why_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let first = api
        .submit(
            ADMIN,
            &job("gate", json!([{"name": "shared-1", "gate": "first"}])),
        )
        .await;
    let first_id = first["id"].as_str().unwrap();
    api.wait_for(first_id, "the first job at its gate", |j| {
        j["nodes"][0]["status"] == "waiting"
    })
    .await;
    // The second job touches the same node and a free one: the free one runs, the shared one waits.
    let second = api.submit(ADMIN, &job("gate", json!([{"name": "shared-1", "gate": "second"}, {"name": "free-1", "gate": "second"}]))).await;
    let second_id = second["id"].as_str().unwrap();
    let j = api
        .wait_for(second_id, "shared-1 blocked", |j| {
            j["nodes"][0]["status"] == "blocked" && j["nodes"][1]["status"] == "waiting"
        })
        .await;
    assert_eq!(
        j["nodes"][0]["wait"]["reason"],
        format!("waiting for job {first_id}, which is acting on this node")
    );
    open_gate(&spec.side, "second").await;
    // The second job's shared node stays blocked while the first job holds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, j) = api.get(&format!("/v1/jobs/{second_id}"), ADMIN).await;
    assert_eq!(j["nodes"][0]["status"], "blocked");
    open_gate(&spec.side, "first").await;
    assert_eq!(api.wait_finished(first_id).await["state"], "succeeded");
    assert_eq!(api.wait_finished(second_id).await["state"], "succeeded");
    let events = api.events(second_id).await;
    assert!(kinds(&events).contains(&"blocked"));
}

/// The ticks recorded by schedule-fired jobs, from their history.
async fn fired_ticks(api: &Api) -> Vec<String> {
    let (_, page) = api.get("/v1/jobs?limit=500", ADMIN).await;
    let mut ticks = Vec::new();
    for j in page["jobs"].as_array().unwrap() {
        for e in api.events(j["id"].as_str().unwrap()).await {
            if let Some(t) = e["data"]["tick"].as_str() {
                ticks.push(t.to_string());
            }
        }
    }
    ticks.sort();
    ticks
}

#[tokio::test]
async fn on_postgresql_a_job_submitted_to_one_replica_is_run_by_another_without_waiting_for_its_poll()
 {
    if postgres_only("replicas hear of each other's writes through PostgreSQL's NOTIFY") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A serves the API and runs nothing; B runs jobs but polls only once an hour, so only
    // a notice from A's write can wake it.
    let mut front = ServerSpec::new(dir.path());
    front.max_jobs = Some(0);
    front.log = dir.path().join("front.log");
    let mut worker = ServerSpec::new(dir.path());
    worker.db = front.db.clone();
    worker.poll = "1h";
    worker.log = dir.path().join("worker.log");
    let a = Server::start(&front);
    let _b = Server::start(&worker);
    let api = Api::new(&a.url);
    for round in 1..=2 {
        // The second round comes after B has run the first and gone back to sleep.
        let node = format!("n-{round}");
        let created = api
            .submit(
                ADMIN,
                &job("retry", json!([{"name": node, "fail_times": 0}])),
            )
            .await;
        let id = created["id"].as_str().unwrap();
        let done = api.wait_finished(id).await;
        assert_eq!(done["state"], "succeeded", "round {round}: {done}");
    }
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_across_two_processes_and_collapses_missed_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let a = Server::start(&spec);
    let b = Server::start(&spec);
    let api = Api::new(&a.url);
    let (s, created) = api
        .post("/v1/schedules", ADMIN, &json!({"name": "every-second", "cron": "* * * * * *", "job": job("smoke-free", json!(["x"]))}))
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an unknown kind in the template is refused: {created}"
    );
    assert_eq!(created["fields"][0]["field"], "job.kind");
    let (s, created) = api
        .post("/v1/schedules", ADMIN, &json!({"name": "every-second", "cron": "* * * * * *", "job": job("retry", json!([{"name": "s-1", "fail_times": 0}]))}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let sched_id = created["id"].as_str().unwrap().to_string();
    // The other process knows the name is taken.
    let (s, again) = Api::new(&b.url)
        .post("/v1/schedules", ADMIN, &json!({"name": "every-second", "cron": "*/2 * * * * *", "job": job("retry", json!([{"name": "s-2", "fail_times": 0}]))}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    assert!(
        again
            .to_string()
            .contains("already has a schedule named `every-second`"),
        "{again}"
    );

    // Two processes share the database for a few ticks.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ticks = fired_ticks(&api).await;
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert_eq!(
        ticks.iter().collect::<HashSet<_>>().len(),
        ticks.len(),
        "a tick fired twice: {ticks:?}"
    );

    // Both go down across several ticks; one comes back.
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(3800)).await;
    let due_at_restart: i64 = {
        let db = EngineDb::read_only(&spec.db).await;
        let v = db.integer("SELECT next_fire_at FROM schedules").await;
        db.close().await;
        v
    };
    let c = Server::start(&spec);
    let up_at = capstan::store::now_ms();
    assert!(
        up_at - due_at_restart > 2000,
        "several ticks were missed while down"
    );
    let api = Api::new(&c.url);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = fired_ticks(&api).await;
    let ms = |t: &String| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let missed: Vec<&String> = after
        .iter()
        .filter(|t| ms(t) >= due_at_restart && ms(t) < up_at)
        .collect();
    // The ticks missed while down fired once, as the first of them, on restart; no other.
    assert_eq!(
        missed.len(),
        1,
        "missed ticks should collapse to one job: {missed:?}"
    );
    assert_eq!(ms(missed[0]), due_at_restart);
    assert!(
        after.iter().any(|t| ms(t) > up_at),
        "ticks continue after restart"
    );
    assert_eq!(
        after.iter().collect::<HashSet<_>>().len(),
        after.len(),
        "a tick fired twice: {after:?}"
    );

    // Schedules can be disabled and deleted.
    let (s, disabled) = api
        .call(
            Method::PATCH,
            &format!("/v1/schedules/{sched_id}"),
            Some(ADMIN),
            Some("{\"enabled\": false}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((s, &disabled["enabled"]), (StatusCode::OK, &json!(false)));
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/schedules/{sched_id}"),
            Some(ADMIN),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get(&format!("/v1/schedules/{sched_id}"), ADMIN).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

const TENANT_CONFIG: &str = "\
tenants:
  demo: {namespaces: [default]}
  other: {namespaces: [other]}
  loose: {}
tokens:
  - {name: carol, role: tenant_admin, tenant: demo, token: carol-token-1}
  - {name: alice, role: member, tenant: demo, token: alice-token-1}
  - {name: bob, role: member, tenant: demo, token: bob-token-11}
  - {name: olga, role: tenant_admin, tenant: other, token: olga-token-1}
  - {name: lou, role: member, tenant: loose, token: lou-token-11}
";

#[tokio::test]
async fn each_principal_sees_and_touches_only_what_its_role_allows() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, TENANT_CONFIG).unwrap();
    spec.config = Some(config);
    let server = Server::start(&spec);
    let api = Api::new(&server.url);

    // No token, or an unknown one: 401.
    let (s, _) = api
        .call(Method::GET, "/v1/jobs", None, None, &[])
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.get("/v1/jobs", "not-a-token").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let alices = api
        .submit("alice-token-1", &job("gate", json!(["a-1"])))
        .await;
    assert_eq!(
        (alices["tenant"].as_str(), alices["owner"].as_str()),
        (Some("demo"), Some("alice"))
    );
    let bobs = api
        .submit("bob-token-11", &job("gate", json!(["b-1"])))
        .await;
    let olgas = api
        .submit(
            "olga-token-1",
            &json!({"kind": "gate", "cluster": "other/x", "nodes": ["o-1"]}),
        )
        .await;
    let a = format!("/v1/jobs/{}", alices["id"].as_str().unwrap());

    // Who can read alice's job: alice, her tenant admin, the platform admin. Not bob, not olga,
    // and they get 404, exactly as for a job that does not exist.
    for (token, expect) in [
        ("alice-token-1", StatusCode::OK),
        ("carol-token-1", StatusCode::OK),
        (ADMIN, StatusCode::OK),
        ("bob-token-11", StatusCode::NOT_FOUND),
        ("olga-token-1", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(api.get(&a, token).await.0, expect, "{token} GET");
        assert_eq!(
            api.get(&format!("{a}/events"), token).await.0,
            expect,
            "{token} events"
        );
    }
    let (s, missing) = api
        .get(
            "/v1/jobs/00000000-0000-7000-8000-000000000000",
            "olga-token-1",
        )
        .await;
    let (_, hidden) = api.get(&a, "olga-token-1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        missing["error"]
            .as_str()
            .unwrap()
            .replace("00000000-0000-7000-8000-000000000000", "ID"),
        hidden["error"]
            .as_str()
            .unwrap()
            .replace(alices["id"].as_str().unwrap(), "ID")
    );
    // Nor can they act on it.
    assert_eq!(
        api.post(&format!("{a}/cancel"), "olga-token-1", &json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.post(&format!("{a}/cancel"), "bob-token-11", &json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let ids = |page: &Value| -> Vec<String> {
        let mut v: Vec<String> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["owner"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&api.get("/v1/jobs", "alice-token-1").await.1),
        vec!["alice"]
    );
    assert_eq!(
        ids(&api.get("/v1/jobs", "carol-token-1").await.1),
        vec!["alice", "bob"]
    );
    assert_eq!(
        ids(&api.get("/v1/jobs", "olga-token-1").await.1),
        vec!["olga"]
    );
    assert_eq!(
        ids(&api.get("/v1/jobs", "olga-token-1").await.1.clone()),
        ids(&api.get("/v1/jobs?tenant=other", ADMIN).await.1)
    );
    assert_eq!(
        ids(&api.get("/v1/jobs?tenant=demo", "olga-token-1").await.1),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&api.get("/v1/jobs", ADMIN).await.1),
        vec!["alice", "bob", "olga"]
    );

    // A member cannot act for another tenant or in a namespace that is not their tenant's.
    let (s, _) = api.post("/v1/jobs", "alice-token-1", &json!({"kind": "gate", "cluster": "default/demo", "tenant": "other", "nodes": ["x-1"]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = api
        .post(
            "/v1/jobs",
            "alice-token-1",
            &json!({"kind": "gate", "cluster": "other/x", "nodes": ["x-1"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["fields"][0]["field"], "cluster");
    // A tenant that lists no namespaces still cannot act in one another tenant owns.
    let (s, e) = api
        .post("/v1/jobs", "lou-token-11", &job("gate", json!(["l-1"])))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("belongs to another tenant")
    );

    // Idempotency keys are each user's own: the same key from bob makes bob's job, and
    // alice's retry still finds hers.
    let body = job("gate", json!(["k-1"])).to_string();
    let key = [("idempotency-key", "nightly")];
    let submit_as =
        |token: &'static str| api.call(Method::POST, "/v1/jobs", Some(token), Some(&body), &key);
    let (s1, by_alice) = submit_as("alice-token-1").await.unwrap();
    let (s2, by_bob) = submit_as("bob-token-11").await.unwrap();
    let (s3, again) = submit_as("alice-token-1").await.unwrap();
    assert_eq!(
        (s1, s2, s3),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED, StatusCode::OK)
    );
    assert_ne!(by_alice["id"], by_bob["id"]);
    assert_eq!(by_alice["id"], again["id"]);

    // The tenant admin can cancel a member's job.
    assert_eq!(
        api.post(&format!("{a}/cancel"), "carol-token-1", &json!({}))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    let _ = (bobs, olgas);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let post = |body: &'static str| {
        let api = &api;
        async move {
            api.call(Method::POST, "/v1/jobs", Some(ADMIN), Some(body), &[])
                .await
                .unwrap()
        }
    };
    let (s, e) = post("{\"kind\": \"gate\",").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );
    let (s, e) = post("").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = post("{\"kind\": \"gate\", \"cluster\": \"default/demo\", \"nodes\": [\"n-1\"], \"colour\": \"red\"}").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["fields"][0]["field"], "colour");
    let (s, e) =
        post("{\"kind\": \"teleport\", \"cluster\": \"default/demo\", \"nodes\": [\"n-1\"]}").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["fields"][0]["field"], "kind");
    assert!(
        e["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown kind `teleport`")
    );
    let (s, e) = post("{\"kind\": \"gate\", \"cluster\": \"default/demo\", \"nodes\": [\"n-1\", \"N_2\", \"n-1\"], \"deadline\": \"soon\"}").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["nodes[1].name", "nodes[2].name", "deadline"]);

    let (s, e) = api
        .post(
            "/v1/schedules",
            ADMIN,
            &json!({"name": "Nightly", "cron": "every night", "job": job("teleport", json!(["n-1"]))}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["name", "cron", "job.kind"],
        "every problem at once: {e}"
    );
    let (s, e) = api.post("/v1/schedules", ADMIN, &json!({"name": "nightly", "cron": "0 3 * * *", "job": job("gate", json!(["n-1"])), "when": 1})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["fields"][0]["field"], "when");
    let (s, _) = api.get("/v1/jobs?state=sideways", ADMIN).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing of any of that was persisted.
    let (_, jobs) = api.get("/v1/jobs", ADMIN).await;
    let (_, schedules) = api.get("/v1/schedules", ADMIN).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0);
    assert_eq!(schedules["schedules"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn history_streams_live_over_sse_until_the_job_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let j = api.submit(ADMIN, &job("gate", json!(["s-1"]))).await;
    let id = j["id"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{id}/events", server.url))
        .bearer_auth(ADMIN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    tokio::time::sleep(Duration::from_millis(200)).await;
    open_gate(&spec.side, "s-1").await;
    // The stream ends by itself once the job has finished and everything is sent.
    let body = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("stream ended")
        .unwrap();
    let streamed: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let stored = api.events(id).await;
    assert_eq!(
        streamed, stored,
        "the stream carries exactly the stored history"
    );
    assert_eq!(streamed.last().unwrap()["to"], "succeeded");
}

/// What a refused start must leave as it was: the tables, and a SQLite file's bytes.
async fn fingerprint(db: &TestDb) -> (Vec<String>, Option<Vec<u8>>) {
    let direct = EngineDb::read_only(db).await;
    let tables = direct.tables().await;
    direct.close().await;
    (tables, db.file().map(|f| std::fs::read(f).unwrap()))
}

#[tokio::test]
async fn serve_refuses_a_database_that_is_not_its_own_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    if !sqlite_only("a file that is not SQLite has no PostgreSQL counterpart") {
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"these are someone's notes, not a database").unwrap();
        let err = serve_refuses(&junk, None);
        assert!(
            err.contains("is not a Capstan database (not an SQLite file)"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&junk).unwrap(),
            b"these are someone's notes, not a database"
        );
    }

    // Another application's database.
    let theirs = TestDb::fresh(dir.path(), "theirs.db");
    let direct = EngineDb::open(&theirs).await;
    direct
        .execute("CREATE TABLE invoices (id BIGINT PRIMARY KEY)")
        .await;
    direct.execute("INSERT INTO invoices VALUES (7)").await;
    direct.close().await;
    let before = fingerprint(&theirs).await;
    let err = serve_refuses(&theirs, None);
    assert!(
        err.contains("has tables (invoices) but no capstan_meta"),
        "{err}"
    );
    assert_eq!(fingerprint(&theirs).await, before);

    // Ours, but migrated by a newer binary: serve refuses it, and so does `db check`.
    let newer = TestDb::fresh(dir.path(), "newer.db");
    drop(open_store(&newer).await);
    let direct = EngineDb::open(&newer).await;
    let checksum = if newer.is_postgres() {
        "'\\x00'"
    } else {
        "x'00'"
    };
    direct
        .execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', TRUE, {checksum}, 0)"
        ))
        .await;
    if !newer.is_postgres() {
        direct.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    }
    direct.close().await;
    let before = fingerprint(&newer).await;
    let err = serve_refuses(&newer, None);
    assert!(
        err.contains("written by a newer Capstan (migration 99990101000000"),
        "{err}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["db", "check", "--db"])
        .arg(&newer)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "db check: {said}");
    assert!(said.contains("99990101000000"), "db check: {said}");
    assert_eq!(fingerprint(&newer).await, before);
}

#[tokio::test]
async fn serve_refuses_an_incomplete_workflow_naming_file_state_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("workflows");
    std::fs::create_dir(&wf).unwrap();
    std::fs::write(wf.join("broken.yaml"), "kind: broken\nstart: a\nstates:\n  a: {step: smoke.touch, on: {ok: b}}\n  b: {step: no.such.step, on: {ok: done}}\n  done: {end: succeeded}\n  lost: {end: failed}\n").unwrap();
    let db = TestDb::fresh(dir.path(), "c.db");
    let err = serve_refuses(&db, Some(&wf));
    assert!(
        err.contains("broken.yaml: state `b`: step `no.such.step` is not registered"),
        "{err}"
    );
    assert!(
        err.contains("broken.yaml: state `lost`: unreachable from the start state `a`"),
        "{err}"
    );
    match db.file() {
        Some(file) => assert!(!file.exists(), "no database is created for a refused start"),
        None => assert_eq!(
            EngineDb::read_only(&db).await.tables().await,
            Vec::<String>::new(),
            "nothing is created in the database for a refused start"
        ),
    }
}

#[tokio::test]
async fn with_no_token_configured_serve_keeps_a_private_admin_token_file_and_never_logs_it() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    if sqlite_only("the local admin token is a file kept beside the SQLite file") {
        // With no file to keep it beside, a PostgreSQL store wants a configured token.
        let db = TestDb::fresh(dir.path(), "fresh.db");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env_remove("CAPSTAN_ADMIN_TOKEN");
        let err = crate::common::process::refuses(cmd);
        assert!(err.contains("token"), "{err}");
        return;
    }
    let db = dir.path().join("fresh.db");
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("CAPSTAN_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let url = line
        .split_once("listening on ")
        .unwrap()
        .1
        .trim()
        .to_string();
    let token_file = dir.path().join("fresh.admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let api = Api::new(&url);
    assert_eq!(api.get("/v1/jobs", &token).await.0, StatusCode::OK);
    assert_eq!(
        api.submit(
            &token,
            &json!({"kind": "smoke", "cluster": "default/demo", "nodes": ["n-1"]})
        )
        .await["kind"],
        "smoke"
    );
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("fresh.admin-token"),
        "the log says where the token is: {logged}"
    );
    assert!(
        !logged.contains(&token),
        "the token itself must never be logged"
    );
}

/// What the server answers has the shapes its OpenAPI document gives (the document's response
/// types are written beside the views; this ties them): every required field is there and no
/// field is undocumented, for a job, its nodes, a page of jobs, a history and a schedule.
#[tokio::test]
async fn the_served_shapes_are_the_documented_ones() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let submitted = api
        .submit(
            ADMIN,
            &job("retry", json!([{"name": "n-1", "fail_times": 0}])),
        )
        .await;
    let id = submitted["id"].as_str().unwrap().to_string();
    api.wait_finished(&id).await;
    let (_, shown) = api.get(&format!("/v1/jobs/{id}"), ADMIN).await;
    conforms(&doc, "Job", &shown);
    let (_, page) = api.get("/v1/jobs", ADMIN).await;
    conforms(&doc, "JobPage", &page);
    let (_, events) = api.get(&format!("/v1/jobs/{id}/events"), ADMIN).await;
    conforms(&doc, "EventPage", &events);
    let (status, resumed) = api
        .post(&format!("/v1/jobs/{id}/resume"), ADMIN, &json!({}))
        .await;
    if status == StatusCode::OK {
        conforms(&doc, "Job", &resumed);
    }
    let (_, schedule) = api
        .post(
            "/v1/schedules",
            ADMIN,
            &json!({"name": "nightly", "cron": "0 3 * * *", "job": job("retry", json!(["s-1"]))}),
        )
        .await;
    conforms(&doc, "Schedule", &schedule);
    let (_, list) = api.get("/v1/schedules", ADMIN).await;
    conforms(&doc, "ScheduleList", &list);
    let (_, refused) = api.post("/v1/jobs", ADMIN, &json!({"kind": 1})).await;
    conforms(&doc, "ErrorBody", &refused);
}

/// `value` against the document's schema `name`: required fields present, no undocumented
/// one, recursively through `$ref`, `allOf`, `oneOf` (null or one schema) and arrays.
fn conforms(doc: &Value, name: &str, value: &Value) {
    fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        match s["$ref"].as_str() {
            Some(r) => resolve(
                doc,
                &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
            ),
            None => s,
        }
    }
    fn walk(doc: &Value, s: &Value, v: &Value, at: &str) {
        let s = resolve(doc, s);
        if let Some(branches) = s["oneOf"].as_array() {
            if v.is_null() {
                return;
            }
            let non_null: Vec<&Value> = branches.iter().filter(|b| b["type"] != "null").collect();
            if let [one] = non_null.as_slice() {
                walk(doc, one, v, at);
            }
            return;
        }
        let mut props = serde_json::Map::new();
        let mut required = Vec::new();
        let parts: Vec<&Value> = match s["allOf"].as_array() {
            Some(all) => all.iter().map(|p| resolve(doc, p)).collect(),
            None => vec![s],
        };
        for p in parts {
            props.extend(p["properties"].as_object().cloned().unwrap_or_default());
            required.extend(p["required"].as_array().cloned().unwrap_or_default());
        }
        if let Some(obj) = v.as_object().filter(|_| !props.is_empty()) {
            for r in &required {
                assert!(
                    obj.contains_key(r.as_str().unwrap()),
                    "{at}: lacks {r}: {v}"
                );
            }
            for (k, x) in obj {
                let p = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}: `{k}` is not in the document"));
                walk(doc, p, x, &format!("{at}.{k}"));
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
            for (i, x) in list.iter().enumerate() {
                walk(doc, items, x, &format!("{at}[{i}]"));
            }
        }
    }
    walk(doc, &doc["components"]["schemas"][name], value, name);
}

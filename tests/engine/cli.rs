//! The `capstan` client commands as a script runs them against a real server: exit codes,
//! `jobs wait`, event streams that ride out a server restart, pages followed to the end,
//! output formats, YAML job files, job ID prefixes and why a failed job failed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN, Api, Server, ServerSpec, open_gate};

fn job(kind: &str, nodes: Value) -> Value {
    json!({"kind": kind, "cluster": "default/demo", "nodes": nodes})
}

/// `capstan ARGS` as a script runs it against `url` with the admin token.
fn capstan(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(args)
        .env("CAPSTAN_URL", url)
        .env("CAPSTAN_TOKEN", ADMIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn capstan_cli(url: &str, args: &[&str]) -> Child {
    capstan(url, args).spawn().unwrap()
}

/// What a finished command left: its exit code, stdout and stderr.
struct Ran {
    code: i32,
    out: String,
    err: String,
}

async fn ran(child: Child) -> Ran {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    Ran {
        code: out.status.code().expect("exited, not killed"),
        out: String::from_utf8_lossy(&out.stdout).to_string(),
        err: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

async fn exit_of(child: Child) -> (i32, String) {
    let r = ran(child).await;
    (r.code, r.err)
}

async fn run(url: &str, args: &[&str]) -> Ran {
    ran(capstan_cli(url, args)).await
}
#[tokio::test]
async fn a_script_tells_from_the_cli_exit_code_how_a_job_ended_and_why_a_call_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let url = server.url.as_str();
    let watch = |id: &str| capstan_cli(url, &["jobs", "watch", id]);

    let ok = api.submit(ADMIN, &job("retry", json!(["w-ok"]))).await;
    let (code, err) = exit_of(watch(ok["id"].as_str().unwrap())).await;
    assert_eq!(code, 0, "succeeded: {err}");

    let failed = api
        .submit(
            ADMIN,
            &job("retry", json!([{"name": "w-failed", "fail_times": 9}])),
        )
        .await;
    let (code, err) = exit_of(watch(failed["id"].as_str().unwrap())).await;
    assert_eq!(code, 3, "failed: {err}");
    assert!(err.contains("failed"), "{err}");

    // Watched while it is cancelled: the watch ends with the job.
    let held = api.submit(ADMIN, &job("gate", json!(["w-held"]))).await;
    let id = held["id"].as_str().unwrap();
    api.wait_for(id, "the node waiting at the gate", |j| {
        j["node_counts"]["waiting"] == 1
    })
    .await;
    let watching = watch(id);
    let (status, _) = api
        .post(&format!("/v1/jobs/{id}/cancel"), ADMIN, &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (code, err) = exit_of(watching).await;
    assert_eq!(code, 4, "cancelled: {err}");

    let input = api.submit(ADMIN, &job("input", json!(["w-input"]))).await;
    let (code, err) = exit_of(watch(input["id"].as_str().unwrap())).await;
    assert_eq!(code, 5, "needs input: {err}");
    assert!(err.contains("jobs resume"), "{err}");

    let unknown = "00000000-0000-0000-0000-000000000000";
    for args in [["jobs", "watch", unknown], ["jobs", "show", unknown]] {
        let (code, err) = exit_of(capstan_cli(url, &args)).await;
        assert_eq!(code, 6, "{args:?}: {err}");
    }

    let file = dir.path().join("bad.json");
    std::fs::write(&file, job("gate", json!(["Not_A_Name"])).to_string()).unwrap();
    let (code, err) = exit_of(capstan_cli(
        url,
        &["jobs", "submit", file.to_str().unwrap()],
    ))
    .await;
    assert_eq!(code, 7, "refused: {err}");
    assert!(err.contains("422"), "{err}");

    // A port nothing listens on any more.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (code, err) = exit_of(capstan_cli(&gone, &["jobs", "list"])).await;
    assert_eq!(code, 8, "unreachable: {err}");

    let (code, _) = exit_of(capstan_cli(url, &["jobs", "watch"])).await;
    assert_eq!(code, 2, "a usage error stays clap's");
}

#[tokio::test]
async fn jobs_wait_ends_with_the_jobs_code_or_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let url = server.url.as_str();
    let id = |j: &Value| j["id"].as_str().unwrap().to_string();

    let ok = id(&api.submit(ADMIN, &job("retry", json!(["w-ok"]))).await);
    let r = run(url, &["jobs", "wait", &ok]).await;
    assert_eq!(r.code, 0, "succeeded: {}", r.err);
    assert_eq!(r.out, "", "jobs wait prints nothing");

    let failed = id(&api
        .submit(
            ADMIN,
            &job("retry", json!([{"name": "w-failed", "fail_times": 9}])),
        )
        .await);
    let r = run(url, &["jobs", "wait", &failed, "--for", "terminal"]).await;
    assert_eq!(r.code, 3, "failed: {}", r.err);

    let input = id(&api.submit(ADMIN, &job("input", json!(["w-input"]))).await);
    let r = run(url, &["jobs", "wait", &input]).await;
    assert_eq!(r.code, 5, "needs input ends a wait for success: {}", r.err);
    // Waiting for the end waits through needs_input, here until the timeout.
    let r = run(
        url,
        &[
            "jobs",
            "wait",
            &input,
            "--for",
            "terminal",
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert_eq!(r.code, 9, "timed out: {}", r.err);
    assert!(
        r.err.contains("needs_input"),
        "says where the job is: {}",
        r.err
    );

    let held = id(&api.submit(ADMIN, &job("gate", json!(["w-held"]))).await);
    let waiting = capstan_cli(url, &["jobs", "wait", &held]);
    let (status, _) = api
        .post(&format!("/v1/jobs/{held}/cancel"), ADMIN, &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = ran(waiting).await;
    assert_eq!(r.code, 4, "cancelled: {}", r.err);
}

/// Reads a child's stdout lines as they come.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn a_followed_history_survives_a_server_restart_and_prints_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    spec.listen = Some(port.to_string());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let url = server.url.clone();
    let j = api.submit(ADMIN, &job("gate", json!(["r-1"]))).await;
    let id = j["id"].as_str().unwrap().to_string();
    api.wait_for(&id, "the node waiting at the gate", |j| {
        j["node_counts"]["waiting"] == 1
    })
    .await;

    let mut follower = capstan_cli(&url, &["jobs", "events", "-f", &id, "-o", "json"]);
    let seen = lines_of(&mut follower);
    let first = tokio::task::spawn_blocking(move || {
        let line = seen.recv_timeout(Duration::from_secs(30));
        (line, seen)
    });
    let (line, seen) = first.await.unwrap();
    assert!(line.is_ok(), "the follower printed the history so far");
    let mut printed = vec![line.unwrap()];
    // A second follower that gives up soon: the server stays away longer than it waits.
    let impatient = capstan_cli(
        &url,
        &["jobs", "events", "-f", &id, "--reconnect-for", "1s"],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    let r = ran(impatient).await;
    assert_eq!(r.code, 8, "gave up on a server gone away: {}", r.err);
    assert!(r.err.contains("gave up"), "{}", r.err);

    // The same database on the same port; the job goes on and finishes after the restart.
    let server = Server::start(&spec);
    assert_eq!(server.url, url);
    open_gate(&spec.side, "r-1").await;
    let r = ran(follower).await;
    assert_eq!(r.code, 0, "the job succeeded: {}", r.err);
    printed.extend(seen.try_iter());
    let printed: Vec<Value> = printed
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored = api.events(&id).await;
    assert_eq!(
        printed, stored,
        "every stored event printed exactly once, in order"
    );
    assert_eq!(stored.last().unwrap()["to"], "succeeded");
    assert!(
        stored.iter().any(|e| e["kind"] == "lease_takeover"),
        "the restarted server took the job over: events after the restart were followed"
    );
}

#[tokio::test]
async fn listings_follow_the_servers_pages_and_print_in_the_format_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let url = server.url.as_str();
    // Five jobs from a YAML file, each with its own node.
    let mut ids = Vec::new();
    for i in 0..5 {
        let file = dir.path().join(format!("job-{i}.yaml"));
        std::fs::write(
            &file,
            format!(
                "kind: retry\ncluster: default/demo\nnodes:\n  - name: p-{i}\n    fail_times: 0\n"
            ),
        )
        .unwrap();
        let r = run(
            url,
            &["jobs", "submit", "-f", file.to_str().unwrap(), "-o", "json"],
        )
        .await;
        assert_eq!(r.code, 0, "a YAML job file: {}", r.err);
        let j: Value = serde_json::from_str(&r.out).unwrap();
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        api.wait_finished(id).await;
    }

    let r = run(
        url,
        &["jobs", "list", "--all", "--page-size", "2", "--no-headers"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    let listed: Vec<&str> = r
        .out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(
        listed, newest_first,
        "every job over three pages, no header"
    );

    let r = run(url, &["jobs", "list", "--limit", "3", "--page-size", "2"]).await;
    assert_eq!(
        r.out.lines().count(),
        4,
        "a header and three jobs: {}",
        r.out
    );
    assert!(r.out.starts_with("ID "), "{}", r.out);
    assert!(r.err.contains("--cursor"), "says there is more: {}", r.err);

    // A history over many small pages, exactly as stored.
    let id = &ids[0];
    let r = run(
        url,
        &["jobs", "events", id, "--page-size", "2", "-o", "json"],
    )
    .await;
    let paged: Value = serde_json::from_str(&r.out).unwrap();
    let stored = api.events(id).await;
    assert!(stored.len() > 2, "more events than one page");
    assert_eq!(paged["events"].as_array().unwrap(), &stored);

    // YAML is the same document as JSON.
    let yaml = run(url, &["jobs", "get", id, "-o", "yaml"]).await;
    let json = run(url, &["jobs", "get", id, "--json"]).await;
    let from_yaml: Value = serde_yaml::from_str(&yaml.out).unwrap();
    let from_json: Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(from_yaml, from_json);
    let wide = run(url, &["jobs", "get", id, "-o", "wide"]).await;
    assert!(wide.out.contains("STEP RUNS"), "{}", wide.out);
}

#[tokio::test]
async fn a_job_id_prefix_names_one_job_or_is_refused_naming_the_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let url = server.url.as_str();
    let a = api.submit(ADMIN, &job("retry", json!(["x-1"]))).await;
    let b = api.submit(ADMIN, &job("retry", json!(["x-2"]))).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let common: String = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    let unique = &a[..common.len() + 1];

    let r = run(url, &["jobs", "wait", unique]).await;
    assert_eq!(r.code, 0, "a unique prefix: {}", r.err);
    let r = run(url, &["jobs", "get", unique, "--json"]).await;
    let shown: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(shown["id"], a);

    let r = run(url, &["jobs", "get", &common]).await;
    assert_eq!(r.code, 2, "ambiguous: {}", r.err);
    assert!(
        r.err.contains(a) && r.err.contains(b),
        "names both: {}",
        r.err
    );

    let r = run(url, &["jobs", "get", "zz"]).await;
    assert_eq!(r.code, 6, "no such job: {}", r.err);
}

#[tokio::test]
async fn a_failed_jobs_summary_names_each_failed_nodes_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&ServerSpec::new(dir.path()));
    let api = Api::new(&server.url);
    let url = server.url.as_str();
    let j = api
        .submit(
            ADMIN,
            &job(
                "retry",
                json!([{"name": "f-bad", "fail_times": 9}, {"name": "f-good", "fail_times": 0}]),
            ),
        )
        .await;
    let id = j["id"].as_str().unwrap();
    let r = run(url, &["jobs", "wait", id]).await;
    assert_eq!(r.code, 3, "{}", r.err);
    let r = run(url, &["jobs", "get", id]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    let why = r
        .out
        .split_once("why it failed:\n")
        .unwrap_or_else(|| panic!("a failed job says why: {}", r.out))
        .1;
    assert_eq!(why.lines().count(), 1, "one line per failed node: {why}");
    assert!(
        why.contains("f-bad: [transient] injected failure"),
        "the node and its failure: {why}"
    );
    assert!(!why.contains("f-good"), "{why}");
}

#[tokio::test]
async fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run("http://127.0.0.1:1", &["completion", shell]).await;
        assert_eq!(r.code, 0, "{shell}: {}", r.err);
        for word in ["jobs", "wait", "schedules", "quota"] {
            assert!(r.out.contains(word), "{shell} completes {word}");
        }
    }
}

/// Into a log or a pipe, `jobs watch` prints the table when the job or a node moves, not on
/// each redraw of a countdown (a node rechecking its gate every 50 ms for seconds).
#[tokio::test]
async fn watch_into_a_pipe_prints_a_frame_per_change_not_per_redraw() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(dir.path());
    let server = Server::start(&spec);
    let api = Api::new(&server.url);
    let j = api.submit(ADMIN, &job("gate", json!(["g-1"]))).await;
    let id = j["id"].as_str().unwrap();
    api.wait_for(id, "the node waiting at the gate", |j| {
        j["node_counts"]["waiting"] == 1
    })
    .await;
    let watching = capstan_cli(&server.url, &["jobs", "watch", id]);
    // Long enough for a display that redraws each second to redraw a few times.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    open_gate(&spec.side, "g-1").await;
    let r = ran(watching).await;
    assert_eq!(r.code, 0, "{}", r.err);
    let frames = r.out.matches(&format!("job {id}")).count();
    assert!(
        (2..=4).contains(&frames),
        "waiting, then moving on and done: {frames} frames\n{}",
        r.out
    );
    let last = r.out.lines().rfind(|l| l.starts_with("job ")).unwrap();
    assert!(
        last.contains("  succeeded  "),
        "ends on the finished job: {last}"
    );
}

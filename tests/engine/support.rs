//! What the engine tests share: a real `capstan serve` child process with test-registered
//! steps, an HTTP client, and the side database in which the test steps record every
//! execution (the "outside world" the engine must not act on twice). The engine's own
//! database is a SQLite file, or with `CAPSTAN_TEST_STORE=postgres` a fresh PostgreSQL
//! database of each test's own (`common::db`): every test here runs on either store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capstan::engine::progress::{Field, Progress};
use capstan::engine::step::{Outcome, Registry, StepContext, StepError};
use capstan::model::FailureClass;
use capstan::store::now_ms;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::OnceCell;

use crate::common;
use crate::common::api::poll;
use crate::common::db::TestDb;
use crate::common::process::{Process, SERVE_LISTENING, refuses};

pub const ADMIN: &str = "admin-token-0001";

pub fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflows")
}

/// The side database: one table of executions (every run of a test step, with its process
/// and time span) and one of effects (what an idempotent step created, once).
pub async fn side_pool(path: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePool::connect_with(opts).await.expect("side db");
    for ddl in [
        "CREATE TABLE IF NOT EXISTS executions (id INTEGER PRIMARY KEY, job TEXT, node TEXT, state TEXT, pid INTEGER, started INTEGER, ended INTEGER)",
        "CREATE TABLE IF NOT EXISTS effects (job TEXT, node TEXT, state TEXT, pid INTEGER)",
        "CREATE TABLE IF NOT EXISTS gates (name TEXT PRIMARY KEY)",
    ] {
        sqlx::query(ddl).execute(&pool).await.expect("side ddl");
    }
    pool
}

static SIDE: OnceCell<SqlitePool> = OnceCell::const_new();

async fn side() -> &'static SqlitePool {
    SIDE.get_or_init(|| async {
        let path = std::env::var("CAPSTAN_TEST_SIDE_DB").expect("CAPSTAN_TEST_SIDE_DB");
        side_pool(Path::new(&path)).await
    })
    .await
}

async fn begin_execution(ctx: &StepContext) -> i64 {
    sqlx::query_scalar("INSERT INTO executions (job, node, state, pid, started) VALUES (?, ?, ?, ?, ?) RETURNING id")
        .bind(&ctx.job_id)
        .bind(&ctx.node)
        .bind(&ctx.state)
        .bind(std::process::id() as i64)
        .bind(now_ms())
        .fetch_one(side().await)
        .await
        .expect("record execution")
}

async fn end_execution(id: i64) {
    sqlx::query("UPDATE executions SET ended = ? WHERE id = ?")
        .bind(now_ms())
        .bind(id)
        .execute(side().await)
        .await
        .expect("end execution");
}

fn spec_u64(ctx: &StepContext, key: &str, default: u64) -> u64 {
    ctx.spec.get(key).and_then(Value::as_u64).unwrap_or(default)
}

/// Creates its effect once: it looks before it creates, as real steps must.
async fn effect(ctx: StepContext) -> Result<Outcome, StepError> {
    let exec = begin_execution(&ctx).await;
    let pool = side().await;
    tokio::time::sleep(Duration::from_millis(spec_u64(&ctx, "work_ms", 15))).await;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM effects WHERE job = ? AND node = ? AND state = ?")
            .bind(&ctx.job_id)
            .bind(&ctx.node)
            .bind(&ctx.state)
            .fetch_optional(pool)
            .await
            .expect("look");
    if exists.is_none() {
        sqlx::query("INSERT INTO effects (job, node, state, pid) VALUES (?, ?, ?, ?)")
            .bind(&ctx.job_id)
            .bind(&ctx.node)
            .bind(&ctx.state)
            .bind(std::process::id() as i64)
            .execute(pool)
            .await
            .expect("create");
    }
    end_execution(exec).await;
    Ok(Outcome::next("ok"))
}

/// What the test steps record about a node.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct TestProgress {
    ready_at: Option<i64>,
    gate_seen_at: Option<i64>,
}

impl Progress for TestProgress {}

impl TestProgress {
    const READY_AT: Field<Self, i64> = Field::new("ready_at");
    const GATE_SEEN_AT: Field<Self, i64> = Field::new("gate_seen_at");
}

/// A persisted wait of `wait_ms`, measured from the first run.
async fn wait(mut ctx: StepContext) -> Result<Outcome, StepError> {
    let ready_at = match ctx.progress::<TestProgress>()?.ready_at {
        Some(t) => t,
        None => {
            let t = now_ms() + spec_u64(&ctx, "wait_ms", 300) as i64;
            ctx.record(TestProgress::READY_AT, &t, None).await?;
            t
        }
    };
    if now_ms() >= ready_at {
        Ok(Outcome::next("ok"))
    } else {
        Ok(Outcome::wait_until(ready_at, "waiting for ready_at"))
    }
}

/// Fails `fail_times` times (class `fail_class`), then succeeds.
async fn flaky(ctx: StepContext) -> Result<Outcome, StepError> {
    let exec = begin_execution(&ctx).await;
    end_execution(exec).await;
    let runs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE job = ? AND node = ?")
            .bind(&ctx.job_id)
            .bind(&ctx.node)
            .fetch_one(side().await)
            .await
            .expect("count");
    let class: FailureClass = ctx
        .spec
        .get("fail_class")
        .and_then(Value::as_str)
        .unwrap_or("transient")
        .parse()
        .unwrap();
    if runs <= spec_u64(&ctx, "fail_times", 2) as i64 {
        return Err(StepError::new(class, format!("injected failure {runs}")));
    }
    Ok(Outcome::next("ok"))
}

/// Needs input until the node's spec says `fixed: true`.
async fn check(ctx: StepContext) -> Result<Outcome, StepError> {
    if ctx.spec.get("fixed") == Some(&json!(true)) {
        Ok(Outcome::next("ok"))
    } else {
        Ok(Outcome::needs_input(
            Some(FailureClass::InvalidSpec),
            "volume type `ssd2` does not exist; set `fixed: true`",
        ))
    }
}

/// Waits until the test opens the gate named in the spec (default: the node's name),
/// looking again every `recheck_ms` (default 50).
async fn gate(mut ctx: StepContext) -> Result<Outcome, StepError> {
    if ctx.progress::<TestProgress>()?.gate_seen_at.is_none() {
        ctx.record(TestProgress::GATE_SEEN_AT, &now_ms(), None)
            .await?;
    }
    let name = ctx
        .spec
        .get("gate")
        .and_then(Value::as_str)
        .unwrap_or(&ctx.node)
        .to_string();
    let open: Option<i64> = sqlx::query_scalar("SELECT 1 FROM gates WHERE name = ?")
        .bind(&name)
        .fetch_optional(side().await)
        .await
        .expect("gate");
    if open.is_some() {
        Ok(Outcome::next("ok"))
    } else {
        Ok(Outcome::recheck_in(
            Duration::from_millis(spec_u64(&ctx, "recheck_ms", 50)),
            format!("gate {name} closed"),
        ))
    }
}

/// A buggy step: it declares only `ok` but returns `sideways`.
async fn undeclared(_ctx: StepContext) -> Result<Outcome, StepError> {
    Ok(Outcome::next("sideways"))
}

pub fn test_registry() -> Registry {
    let mut r = Registry::new();
    r.step("t.effect", &["ok"], effect);
    r.step("t.wait", &["ok"], wait);
    r.step("t.flaky", &["ok"], flaky);
    r.step("t.check", &["ok"], check);
    r.step("t.gate", &["ok"], gate);
    r.step("t.undeclared", &["ok"], undeclared);
    r
}

/// A `capstan serve` child process running the test steps; killed when dropped.
pub struct Server {
    process: Process,
    pub url: String,
    /// Its database lives at least as long as it (dropped after the process).
    _db: TestDb,
}

pub struct ServerSpec {
    /// The engine's database; servers started from this spec share it.
    pub db: TestDb,
    pub side: PathBuf,
    pub config: Option<PathBuf>,
    pub lease: &'static str,
    pub log: PathBuf,
    /// Where to listen (a free port by default); a restarted server given the same address
    /// is where its clients left it.
    pub listen: Option<String>,
    /// The engine's poll interval (`100ms` by default).
    pub poll: &'static str,
    /// How many jobs the engine holds at once; 0 claims none (the replica only serves the API).
    pub max_jobs: Option<usize>,
}

impl ServerSpec {
    pub fn new(dir: &Path) -> ServerSpec {
        ServerSpec {
            db: TestDb::fresh(dir, "capstan.db"),
            side: dir.join("side.db"),
            config: None,
            lease: "2s",
            log: dir.join("server.log"),
            listen: None,
            poll: "100ms",
            max_jobs: None,
        }
    }
}

impl Server {
    /// Starts the child (this test binary, reaching `child_server_entry`) and waits for it
    /// to say where it listens.
    pub fn start(spec: &ServerSpec) -> Server {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child_server_entry",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CAPSTAN_TEST_CHILD", "1")
        .env("CAPSTAN_TEST_DB", &spec.db.location)
        .env("CAPSTAN_TEST_SIDE_DB", &spec.side)
        .env("CAPSTAN_TEST_LEASE", spec.lease)
        .env("CAPSTAN_TEST_POLL", spec.poll)
        .env("CAPSTAN_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info,sqlx=warn");
        if let Some(c) = &spec.config {
            cmd.env("CAPSTAN_TEST_CONFIG", c);
        }
        if let Some(l) = &spec.listen {
            cmd.env("CAPSTAN_TEST_LISTEN", l);
        }
        if let Some(n) = spec.max_jobs {
            cmd.env("CAPSTAN_TEST_MAX_JOBS", n.to_string());
        }
        let (process, url) = Process::start_logged(cmd, SERVE_LISTENING, &spec.log);
        Server {
            process,
            url,
            _db: spec.db.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(self) {
        self.process.kill();
    }
}

/// The store as `capstan serve` opens it, on the test's database.
pub async fn open_store(db: &TestDb) -> capstan::store::Store {
    let location = capstan::store::DbLocation::parse(&db.location).unwrap();
    capstan::store::Store::open(location).await.unwrap()
}

/// Runs `capstan serve` and expects it to refuse to start; returns its stderr.
pub fn serve_refuses(db: impl AsRef<std::ffi::OsStr>, workflows: Option<&Path>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("CAPSTAN_ADMIN_TOKEN", ADMIN);
    if let Some(w) = workflows {
        cmd.arg("--workflows").arg(w);
    }
    refuses(cmd)
}

/// Capstan's API with the admin token named per call (the engine tests act as several
/// holders and send raw bodies and headers); built on the shared client.
pub struct Api(common::api::Api);

impl Api {
    pub fn new(url: &str) -> Api {
        Api(common::api::Api::new(
            url,
            ADMIN,
            Some(Duration::from_secs(10)),
        ))
    }

    /// The status and the body: JSON, or its text as a string.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<(StatusCode, Value)> {
        let (status, text) = self.0.send(method, path, token, body, headers).await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None, &[])
            .await
            .expect("GET")
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            path,
            Some(token),
            Some(&body.to_string()),
            &[],
        )
        .await
        .expect("POST")
    }

    pub async fn submit(&self, token: &str, body: &Value) -> Value {
        let (status, v) = self.post("/v1/jobs", token, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit: {v}");
        v
    }

    /// Polls until the job is finished; a generous bound only so a broken engine fails the
    /// test instead of hanging it (not a timing claim).
    pub async fn wait_finished(&self, id: &str) -> Value {
        let finished = |job: &Value| {
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        };
        let done = self.poll_job(id, 600, Duration::from_millis(100), finished);
        done.await
            .unwrap_or_else(|| panic!("job {id} did not finish"))
    }

    /// Polls until `pred` holds for the job.
    pub async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let seen = self.poll_job(id, 600, Duration::from_millis(50), pred);
        seen.await
            .unwrap_or_else(|| panic!("job {id}: never saw {what}"))
    }

    async fn poll_job(
        &self,
        id: &str,
        tries: usize,
        every: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let path = format!("/v1/jobs/{id}");
        poll(tries, every, || async {
            let (_, job) = self.get(&path, ADMIN).await;
            pred(&job).then_some(job)
        })
        .await
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/v1/jobs/{id}/events"), ADMIN).await;
        assert_eq!(status, StatusCode::OK);
        page["events"].as_array().cloned().unwrap_or_default()
    }
}

pub async fn open_gate(side: &Path, name: &str) {
    let pool = side_pool(side).await;
    sqlx::query("INSERT OR IGNORE INTO gates (name) VALUES (?)")
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
}

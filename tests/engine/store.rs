//! The store as an operator meets it: a full disk (503s and `/readyz`, then recovery without a
//! restart), the modes of the files Capstan keeps, a foreign file left exactly as it was, an
//! upgrade with jobs in flight, and who may read `/metrics`. These run the real `capstan`
//! binary and its built-in `smoke` kind, or open its database as `capstan serve` does. Those
//! about the SQLite file itself (a full disk, file modes, an upgrade from SQLite's older
//! schemas) say so and are skipped on PostgreSQL.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::db::{EngineDb, TestDb, sqlite_only};
use crate::common::process::{Process, SERVE_LISTENING, refuses};
use crate::support::{ADMIN, Api, open_store};

fn smoke(node: &str) -> Value {
    json!({"kind": "smoke", "cluster": "default/demo", "nodes": [node]})
}

/// A `capstan serve` process of the real binary; killed when dropped.
struct Capstan {
    _process: Process,
    url: String,
}

impl Capstan {
    /// Starts `capstan serve --db <db> <args>`; `admin` sets `CAPSTAN_ADMIN_TOKEN`.
    fn start(db: impl AsRef<OsStr>, args: &[&str], admin: Option<&str>, log: &Path) -> Capstan {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(args)
            .env_remove("CAPSTAN_ADMIN_TOKEN")
            .env_remove("CAPSTAN_METRICS_TOKEN")
            .env("RUST_LOG", "info,sqlx=warn");
        if let Some(token) = admin {
            cmd.env("CAPSTAN_ADMIN_TOKEN", token);
        }
        let (process, url) = Process::start_logged(cmd, SERVE_LISTENING, log);
        Capstan {
            _process: process,
            url,
        }
    }
}

/// Runs `capstan serve` expecting it to refuse to start; returns its stderr.
fn refused(db: impl AsRef<OsStr>, admin: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("CAPSTAN_ADMIN_TOKEN");
    if let Some(token) = admin {
        cmd.env("CAPSTAN_ADMIN_TOKEN", token);
    }
    refuses(cmd)
}

async fn get_open(api: &Api, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    api.call(Method::GET, path, None, None, headers)
        .await
        .expect("GET")
}

/// Unmounts the small tmpfs however the test ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes zeros to `path` until the file system refuses another byte.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

#[tokio::test]
async fn a_full_disk_answers_503_and_not_ready_then_writes_work_again_without_a_restart() {
    if sqlite_only("a full disk is the SQLite file's; PostgreSQL's disk is its server's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here: {e}");
            return;
        }
    }
    // Declared before the server, so the server stops before the tmpfs is unmounted.
    let _unmount = Unmount(mnt.clone());
    let log = dir.path().join("serve.log");
    let server = Capstan::start(mnt.join("capstan.db"), &[], Some(ADMIN), &log);
    let api = Api::new(&server.url);

    let before = api.submit(ADMIN, &smoke("n-1")).await;
    let before = api.wait_finished(before["id"].as_str().unwrap()).await;
    assert_eq!(before["state"], "succeeded", "{before}");

    let filler = mnt.join("filler");
    assert!(fill(&filler) > 0);
    // Twice: the second write must fail for the same reason as the first, not because
    // the first left the write connection inside a transaction.
    for attempt in 1..=2 {
        let (status, body) = api.post("/v1/jobs", ADMIN, &smoke("n-2")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: {body}"
        );
        assert_eq!(
            body["error"], "the database cannot be written: database or disk is full",
            "attempt {attempt}"
        );
    }
    let (status, body) = get_open(&api, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .contains("the database cannot be written"),
        "{body}"
    );
    assert_eq!(get_open(&api, "/healthz", &[]).await.0, StatusCode::OK);

    std::fs::remove_file(&filler).unwrap();
    let after = api.submit(ADMIN, &smoke("n-2")).await;
    let after = api.wait_finished(after["id"].as_str().unwrap()).await;
    assert_eq!(after["state"], "succeeded", "{after}");
    let (status, body) = get_open(&api, "/readyz", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("non-zero transaction depth"),
        "the store never got stuck in a transaction: {logged}"
    );
    drop(server);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_database_and_token_files_are_private_and_a_readable_token_file_is_refused() {
    if sqlite_only("the modes are those of the SQLite file and the token file beside it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("capstan.db");
    let token_file = dir.path().join("capstan.admin-token");
    let log = dir.path().join("serve.log");
    {
        let server = Capstan::start(&db, &[], None, &log);
        let token = std::fs::read_to_string(&token_file).unwrap();
        let api = Api::new(&server.url);
        api.submit(token.trim(), &smoke("n-1")).await;
        for file in [
            &db,
            &dir.path().join("capstan.db-wal"),
            &dir.path().join("capstan.db-shm"),
            &token_file,
        ] {
            assert_eq!(
                mode(file),
                0o600,
                "{} is {:04o}",
                file.display(),
                mode(file)
            );
        }
    }

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(&db, None);
    assert!(
        err.contains(&format!(
            "{} holds the admin token but its mode is 0644",
            token_file.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 600 {}", token_file.display())),
        "{err}"
    );
    assert_eq!(
        mode(&token_file),
        0o644,
        "the file is left for the operator to judge"
    );

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(Capstan::start(&db, &[], None, &log));
}

/// Before `backing_off` was a status, a node backing off was stored as `waiting`, told apart
/// by its reason's text. A database upgraded with jobs in flight keeps their backoffs: the
/// migration moves those nodes to `backing_off` (so a nudge leaves them alone) and leaves a
/// plain wait, every reason and every wake time as they were.
#[tokio::test]
async fn an_upgrade_with_jobs_in_flight_keeps_their_backoffs() {
    use sqlx::Connection;
    use sqlx::migrate::{Migrate, Migrator};

    if sqlite_only("PostgreSQL's schema began with `backing_off`: no older one to upgrade from") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("capstan.db");
    // The database as the release before `backing_off` left it: migrations 1 and 2.
    let migrations = Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"))
        .await
        .unwrap();
    let mut conn = sqlx::SqliteConnection::connect_with(&capstan::store::connect_options(&db))
        .await
        .unwrap();
    conn.ensure_migrations_table().await.unwrap();
    for m in migrations.iter().filter(|m| m.version <= 2) {
        conn.apply(m).await.unwrap();
    }
    let wake = capstan::store::now_ms() + 3_600_000;
    sqlx::query(
        "INSERT INTO jobs (id, kind, tenant, owner, cluster, params, state, concurrency, \
           created_at, updated_at, next_run_at) \
         VALUES ('job-1', 'scale_out', 'default', 'admin', 'default/demo', '{}', 'running', 5, 0, 0, ?)",
    )
    .bind(wake)
    .execute(&mut conn)
    .await
    .unwrap();
    let nodes = [
        // The engine's retry of a step error.
        (
            "w-1",
            "retrying create after transient failure (attempt 2)",
            "backing_off",
        ),
        // scale_out's cleanup between attempts, and its same wait re-entered.
        (
            "w-2",
            "capacity failure 1; retrying with the same spec",
            "backing_off",
        ),
        ("w-3", "backing off after quota", "backing_off"),
        // A wait for a change a watch sees.
        (
            "w-4",
            "provisioning: Machine Provisioning, server BUILD",
            "waiting",
        ),
    ];
    for (seq, (name, reason, _)) in nodes.iter().enumerate() {
        sqlx::query(
            "INSERT INTO node_tasks (job_id, name, seq, spec, state, status, entered_at, \
               wake_at, wait_reason, updated_at) \
             VALUES ('job-1', ?, ?, '{}', 'provision', 'waiting', 0, ?, ?, 0)",
        )
        .bind(name)
        .bind(seq as i64)
        .bind(wake)
        .bind(reason)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = capstan::store::Store::open(&db).await.unwrap();
    let tasks = store.tasks("job-1").await.unwrap();
    for ((name, reason, status), t) in nodes.iter().zip(&tasks) {
        assert_eq!(
            (
                t.name.as_str(),
                t.status.as_str(),
                t.wait_reason.as_deref(),
                t.wake_at
            ),
            (*name, *status, Some(*reason), Some(wake))
        );
    }
    for (name, _, status) in nodes {
        let nudged = store.nudge("default", name).await.unwrap();
        assert_eq!(nudged.is_empty(), status == "backing_off", "{name}");
    }
}

/// Before progress records were typed, a node's `external_ids` was a plain map with no
/// version. A job in flight across the upgrade goes on from that record: a smoke node
/// touched before the upgrade settles from its stored `touched_at` (it is not touched
/// again), the API shows the record as before (no version in it), and a record (or a field
/// of it) that cannot be read fails its node as `internal`, naming the node (and the field).
#[tokio::test]
async fn a_job_in_flight_across_the_upgrade_reads_its_unversioned_progress_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::fresh(dir.path(), "capstan.db");
    drop(open_store(&db).await);
    let touched = capstan::store::now_ms() + 3_600_000;
    let direct = EngineDb::open(&db).await;
    direct
        .execute(
            "INSERT INTO jobs (id, kind, tenant, owner, cluster, params, state, concurrency, \
               created_at, updated_at, next_run_at) \
             VALUES ('job-1', 'smoke', 'default', 'admin', 'default/demo', '{}', 'running', 10, 0, 0, 0)",
        )
        .await;
    let nodes = [
        ("n-1", json!({ "touched_at": touched })),
        ("n-2", json!({ "touched_at": "yesterday" })),
        ("n-3", json!(["not", "a", "record"])),
    ];
    for (seq, (name, record)) in nodes.iter().enumerate() {
        direct
            .execute(&format!(
                "INSERT INTO node_tasks (job_id, name, seq, spec, state, status, entered_at, \
                   external_ids, updated_at) \
                 VALUES ('job-1', '{name}', {seq}, '{{}}', 'settle', 'pending', 0, '{record}', 0)"
            ))
            .await;
    }
    direct.close().await;

    let server = Capstan::start(&db, &[], Some(ADMIN), &dir.path().join("server.log"));
    let api = Api::new(&server.url);
    let node = |job: &Value, name: &str| {
        job["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let job = api
        .wait_for("job-1", "n-1 settling, n-2 and n-3 failed", |j| {
            node(j, "n-1")["status"] == "waiting"
                && node(j, "n-2")["status"] == "failed"
                && node(j, "n-3")["status"] == "failed"
        })
        .await;
    let settling = node(&job, "n-1");
    assert_eq!(settling["state"], "settle");
    assert_eq!(settling["external_ids"], json!({ "touched_at": touched }));
    assert_eq!(settling["wait"]["reason"], "settling for 1s");
    let broken = node(&job, "n-2");
    assert_eq!(broken["failure_class"], "internal");
    let error = broken["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("node n-2") && error.contains("`touched_at`"),
        "{error}"
    );
    assert_eq!(broken["external_ids"], json!({ "touched_at": "yesterday" }));
    let garbled = node(&job, "n-3");
    assert_eq!(garbled["failure_class"], "internal");
    let error = garbled["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("node n-3: progress record unreadable"),
        "{error}"
    );
}

#[tokio::test]
async fn a_foreign_file_with_a_capstan_meta_table_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let blob = match crate::common::db::backend() {
        crate::common::db::Backend::Sqlite => "BLOB",
        crate::common::db::Backend::Postgres => "BYTEA",
    };
    let other_shape = format!("CREATE TABLE capstan_meta (id INTEGER PRIMARY KEY, data {blob})");
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "meta-only.db",
            &[
                "CREATE TABLE capstan_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
            ],
            "does not name the capstan schema",
        ),
        (
            "claims-capstan.db",
            &[
                "CREATE TABLE capstan_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "INSERT INTO capstan_meta VALUES ('schema', 'capstan')",
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
            ],
            "has a capstan_meta table but no record of Capstan's migrations",
        ),
        (
            "other-shape.db",
            &[&other_shape],
            "its capstan_meta table is not Capstan's",
        ),
    ];
    for (name, statements, why) in cases {
        let db = TestDb::fresh(dir.path(), name);
        let direct = EngineDb::open(&db).await;
        for statement in statements {
            direct.execute(statement).await;
        }
        direct.close().await;
        let tables = || async {
            let direct = EngineDb::read_only(&db).await;
            let names = direct.tables().await;
            direct.close().await;
            names
        };
        let tables_before = tables().await;
        let bytes_before = db.file().map(|f| std::fs::read(f).unwrap());
        let err = refused(&db, Some(ADMIN));
        assert!(
            err.contains(&format!("{} is not a Capstan database", db.location)),
            "{name}: {err}"
        );
        assert!(err.contains(why), "{name}: {err}");
        assert_eq!(
            tables().await,
            tables_before,
            "{name}: its tables are unchanged"
        );
        if let Some(file) = db.file() {
            assert!(
                bytes_before.as_deref() == Some(&std::fs::read(file).unwrap()[..]),
                "{name}: its bytes are unchanged"
            );
            assert!(
                !dir.path().join(format!("{name}-wal")).exists(),
                "{name}: no WAL was started in it"
            );
        }
    }
}

#[tokio::test]
async fn metrics_need_the_metrics_token_when_one_is_set_and_never_name_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let secret = "metrics-token-5f1c9e";

    let guarded_db = TestDb::fresh(dir.path(), "guarded.db");
    let guarded = Capstan::start(&guarded_db, &["--metrics-token", secret], Some(ADMIN), &log);
    let api = Api::new(&guarded.url);
    let (admin, right) = (format!("Bearer {ADMIN}"), format!("Bearer {secret}"));
    for (headers, want) in [
        (vec![], StatusCode::UNAUTHORIZED),
        (
            vec![("authorization", "Bearer wrong")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            vec![("authorization", admin.as_str())],
            StatusCode::UNAUTHORIZED,
        ),
        (vec![("authorization", right.as_str())], StatusCode::OK),
    ] {
        let (status, body) = get_open(&api, "/metrics", &headers).await;
        assert_eq!(status, want, "{headers:?}: {body}");
    }
    drop(guarded);

    let open_db = TestDb::fresh(dir.path(), "open.db");
    let open = Capstan::start(&open_db, &[], Some(ADMIN), &log);
    let api = Api::new(&open.url);
    for tenant in ["acme-corp", "globex"] {
        let mut job = smoke("n-1");
        job["tenant"] = json!(tenant);
        api.submit(ADMIN, &job).await;
    }
    // Paths that name a tenant count by their route template, or as `unmatched`.
    let admin = format!("Bearer {ADMIN}");
    for path in ["/v1/jobs/acme-corp-secret", "/acme-corp/nowhere"] {
        let (status, _) = get_open(&api, path, &[("authorization", admin.as_str())]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, body) = get_open(&api, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let body = body.as_str().unwrap().to_string();
    assert!(body.contains("capstan_jobs{kind=\"smoke\""), "{body}");
    for route in [
        "method=\"POST\",route=\"/v1/jobs\",status=\"202\"",
        "method=\"GET\",route=\"/v1/jobs/{id}\",status=\"404\"",
        "method=\"GET\",route=\"unmatched\",status=\"404\"",
    ] {
        let series = format!("capstan_http_request_duration_seconds_count{{{route}}}");
        assert!(body.contains(&series), "no {series}: {body}");
    }
    for leak in ["tenant=", "acme-corp", "globex"] {
        assert!(!body.contains(leak), "/metrics shows `{leak}`: {body}");
    }
    drop(open);

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(secret),
        "the metrics token is never logged"
    );
}

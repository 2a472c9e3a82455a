//! `capstan bench engine`: N jobs x K no-op steps through the real engine and, in the same
//! run, the floor: as many minimal transactions (one UPDATE and one INSERT each) through sqlx
//! on the same database and connection settings. The ratio says how much the engine costs
//! over the database itself.
//!
//! The database is always the bench's own: a SQLite file in a scratch directory, or, with
//! `--db postgres://…`, a scratch database the bench creates on that server and drops at the
//! end (`scratch.rs`). An operator's data is never touched.
//!
//! With `--replicas N`, N engines share the work on the one database, each with its own
//! [`Store`] (its own pools and, on PostgreSQL, its own LISTEN connection), as N `capstan
//! serve` replicas would; jobs are submitted to them in turn, as through a Service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::sync::watch;

use super::scratch::ScratchDatabase;
use super::{peak_rss_mb, percentile, tempdir_in};
use crate::engine::step::{Outcome, Registry};
use crate::engine::{Engine, EngineConfig, request, workflow};
use crate::metrics::Metrics;
use crate::store::{DbLocation, JobFilter, Store, connect_options};

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Jobs to run (one node each).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// No-op steps per job.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Jobs each engine runs at once (= active node tasks per replica).
    #[arg(long, default_value_t = 1000)]
    pub active: usize,
    /// Engines sharing the work on the one database, each with its own store (own pools, own
    /// LISTEN connection on PostgreSQL), as that many `capstan serve` replicas would.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Run on PostgreSQL: a server URL (`postgres://user:pass@host:5432/postgres`) of a role
    /// that may CREATE DATABASE. The bench creates a scratch database `capstan_bench_<uuid>`
    /// there, runs in it and drops it at the end. Without it: SQLite in a scratch directory.
    #[arg(long, value_name = "URL", conflicts_with = "dir")]
    pub db: Option<String>,
    /// Directory for the SQLite files (a temporary one, removed at the end, by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Concurrent submitting clients.
const SUBMITTERS: usize = 8;

/// What one run measured; `engine` prints it as it goes, tests read it.
#[derive(Debug)]
pub struct EngineReport {
    /// Steps each replica ran, in replica order; their sum is at least jobs x steps (more only
    /// if a step ran again after a lease was lost).
    pub steps_by_replica: Vec<u64>,
    /// Jobs that ended in any state but succeeded.
    pub not_succeeded: i64,
    pub engine_time: Duration,
    pub floor_time: Duration,
    /// The scratch PostgreSQL database the run made and dropped.
    pub scratch_database: Option<String>,
}

/// Where a run keeps its jobs: always a place of its own.
enum Scratch {
    Sqlite { dir: PathBuf, remove: bool },
    Postgres(ScratchDatabase),
}

impl Scratch {
    fn location(&self) -> DbLocation {
        match self {
            Scratch::Sqlite { dir, .. } => DbLocation::Sqlite(dir.join("bench.db")),
            Scratch::Postgres(db) => DbLocation::Postgres(db.url.clone()),
        }
    }

    /// Removes what the run made (a directory the user named is left in place).
    async fn remove(self) -> anyhow::Result<()> {
        match self {
            Scratch::Sqlite { dir, remove } => {
                if remove {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Ok(())
            }
            Scratch::Postgres(db) => {
                let name = db.name.clone();
                db.drop().await?;
                println!("dropped the scratch database {name}");
                Ok(())
            }
        }
    }
}

pub async fn engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    run(args).await.map(|_| ())
}

/// Runs the bench and prints its figures; the scratch database is dropped however the run
/// ends (an error, Ctrl-C).
pub async fn run(args: EngineBenchArgs) -> anyhow::Result<EngineReport> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        args.jobs >= 1 && args.steps >= 1,
        "--jobs and --steps must be at least 1"
    );
    let scratch = match &args.db {
        None => Scratch::Sqlite {
            dir: tempdir_in(args.dir.clone())?,
            remove: args.dir.is_none(),
        },
        Some(url) => match DbLocation::parse(url).map_err(|e| anyhow::anyhow!("--db {e}"))? {
            DbLocation::Postgres(server) => {
                let db = ScratchDatabase::create(&server).await?;
                println!(
                    "created the scratch database {} on {} (dropped at the end)",
                    db.name,
                    DbLocation::Postgres(server)
                );
                Scratch::Postgres(db)
            }
            DbLocation::Sqlite(_) => anyhow::bail!(
                "--db takes a PostgreSQL server URL (postgres://…); on SQLite the bench uses a \
                 scratch file of its own (--dir to choose where)"
            ),
        },
    };
    let location = scratch.location();
    let scratch_database = match &scratch {
        Scratch::Postgres(db) => Some(db.name.clone()),
        Scratch::Sqlite { .. } => None,
    };
    let outcome = tokio::select! {
        r = measure(&args, &location) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let removed = scratch.remove().await;
    let report = outcome?;
    removed?;
    Ok(EngineReport {
        scratch_database,
        ..report
    })
}

async fn measure(args: &EngineBenchArgs, location: &DbLocation) -> anyhow::Result<EngineReport> {
    let workflow_yaml = workflow_yaml(args.steps);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut replicas = Vec::with_capacity(args.replicas);
    for i in 0..args.replicas {
        let store = Store::open(location).await?;
        // Each replica counts the steps it ran: its share of the work.
        let ran = Arc::new(AtomicU64::new(0));
        let mut registry = Registry::new();
        registry.step("bench.noop", &["ok"], {
            let ran = ran.clone();
            move |_ctx| {
                ran.fetch_add(1, Ordering::Relaxed);
                async { Ok(Outcome::next("ok")) }
            }
        });
        let workflows =
            workflow::load_all(&[("bench.yaml".into(), workflow_yaml.clone())], &registry)?;
        let config = EngineConfig {
            worker_id: format!("bench-{}", i + 1),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(50),
            max_jobs: args.active,
        };
        let engine = Engine::new(
            store.clone(),
            Arc::new(registry),
            workflows,
            config,
            Arc::new(Metrics::default()),
            stop_rx.clone(),
        );
        replicas.push((engine, store, ran));
    }
    let total_steps = args.jobs * args.steps;
    println!(
        "engine bench: {} jobs x {} no-op steps = {total_steps} steps, {} replica(s), at most {} \
         jobs active in each; db {location}",
        args.jobs, args.steps, args.replicas, args.active,
    );

    let mut runners = tokio::task::JoinSet::new();
    for (engine, _, _) in &replicas {
        let engine = engine.clone();
        runners.spawn(async move { engine.run().await });
    }
    let started = Instant::now();
    // Jobs arrive from several clients at once, as through the API; with replicas, each
    // client's jobs go to the replicas in turn, as a Service spreads requests.
    let mut submitters = tokio::task::JoinSet::new();
    for client in 0..SUBMITTERS {
        let targets: Vec<(Engine, Store)> = replicas
            .iter()
            .map(|(e, s, _)| (e.clone(), s.clone()))
            .collect();
        let jobs = args.jobs;
        submitters.spawn(async move {
            for i in (client..jobs).step_by(SUBMITTERS) {
                let (engine, store) = &targets[i % targets.len()];
                let wf = engine.workflows()["bench"].clone();
                let body = serde_json::json!({ "kind": "bench", "cluster": "bench/c", "nodes": [format!("n-{i}")] });
                let req = request::parse(&body, engine.workflows(), &[])
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let job = req.into_job(&wf, "bench", "bench", None);
                store.submit(&job, None).await?;
                engine.wake(&job.id);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = submitters.join_next().await {
        r??;
    }
    let submitted = started.elapsed();
    let store = replicas[0].1.clone();
    loop {
        let counts = store.job_counts().await?;
        let done: i64 = counts
            .iter()
            .filter(|(_, s, _)| s == "succeeded" || s == "failed")
            .map(|(_, _, n)| n)
            .sum();
        if done as usize >= args.jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let engine_time = started.elapsed();
    let _ = stop_tx.send(true);
    while runners.join_next().await.is_some() {}
    let rss_engine = peak_rss_mb();
    let steps_by_replica: Vec<u64> = replicas
        .iter()
        .map(|(_, _, ran)| ran.load(Ordering::Relaxed))
        .collect();
    drop(replicas);

    let mut latencies = latencies_ms(&store).await?;
    latencies.sort_unstable();
    let not_succeeded: i64 = store
        .job_counts()
        .await?
        .iter()
        .filter(|(_, s, _)| s != "succeeded")
        .map(|(_, _, n)| n)
        .sum();
    drop(store);

    let floor_time = floor(location, total_steps).await?;
    let steps_per_s = total_steps as f64 / engine_time.as_secs_f64();
    println!(
        "submit: {} jobs from {SUBMITTERS} concurrent clients in {:.2}s",
        args.jobs,
        submitted.as_secs_f64()
    );
    println!(
        "engine: {total_steps} steps in {:.2}s = {steps_per_s:.0} steps/s ({not_succeeded} jobs not succeeded)",
        engine_time.as_secs_f64()
    );
    if steps_by_replica.len() > 1 {
        let ran: u64 = steps_by_replica.iter().sum();
        let shares: Vec<String> = steps_by_replica
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "replica {} {n} ({:.0}%)",
                    i + 1,
                    100.0 * *n as f64 / ran.max(1) as f64
                )
            })
            .collect();
        println!("steps by replica: {}; total {ran}", shares.join(", "));
    }
    println!(
        "latency submit->done: p50 {} ms, p99 {} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!(
        "floor: {total_steps} transactions (1 UPDATE + 1 INSERT) one after another in {:.2}s = {:.0} txn/s",
        floor_time.as_secs_f64(),
        total_steps as f64 / floor_time.as_secs_f64()
    );
    println!(
        "peak RSS: {rss_engine:.1} MB ({} finished jobs, {} active node tasks at most per replica)",
        args.jobs, args.active
    );
    println!(
        "engine/floor time ratio: {:.2}",
        engine_time.as_secs_f64() / floor_time.as_secs_f64()
    );
    Ok(EngineReport {
        steps_by_replica,
        not_succeeded,
        engine_time,
        floor_time,
        scratch_database: None,
    })
}

fn workflow_yaml(steps: usize) -> String {
    let mut y =
        String::from("kind: bench\nstart: s1\nconcurrency: 1\nretry: {max_attempts: 1}\nstates:\n");
    for i in 1..=steps {
        let next = if i == steps {
            "done".to_string()
        } else {
            format!("s{}", i + 1)
        };
        y.push_str(&format!(
            "  s{i}: {{step: bench.noop, on: {{ok: {next}}}}}\n"
        ));
    }
    y.push_str("  done: {end: succeeded}\n");
    y
}

/// Each job's time from submission to its end, in ms, read through the store's own listing.
async fn latencies_ms(store: &Store) -> anyhow::Result<Vec<i64>> {
    let jobs = store.list_all_jobs(&JobFilter::default()).await?;
    Ok(jobs
        .iter()
        .filter_map(|j| j.finished_at.map(|f| f - j.created_at))
        .collect())
}

/// The floor: `n` transactions of one UPDATE and one INSERT, one after another, on the same
/// database with the same connection settings as the store's.
async fn floor(location: &DbLocation, n: usize) -> anyhow::Result<Duration> {
    match location {
        DbLocation::Sqlite(path) => floor_sqlite(path, n).await,
        DbLocation::Postgres(url) => floor_postgres(url, n).await,
    }
}

async fn floor_sqlite(db: &Path, n: usize) -> anyhow::Result<Duration> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(db))
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_floor_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER, msg TEXT)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT OR REPLACE INTO bench_floor (id, n) VALUES (1, 0)")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    for i in 0..n {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE bench_floor SET n = n + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO bench_floor_log (at, msg) VALUES (?, ?)")
            .bind(i as i64)
            .bind("step")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

async fn floor_postgres(url: &str, n: usize) -> anyhow::Result<Duration> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.parse()?)
        .await?;
    sqlx::query("CREATE TABLE bench_floor (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_floor_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         at BIGINT, msg TEXT)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO bench_floor (id, n) VALUES (1, 0)")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    for i in 0..n {
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE bench_floor SET n = n + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO bench_floor_log (at, msg) VALUES ($1, $2)")
            .bind(i as i64)
            .bind("step")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(db: Option<String>, replicas: usize) -> EngineBenchArgs {
        EngineBenchArgs {
            jobs: 24,
            steps: 3,
            active: 8,
            replicas,
            db,
            dir: None,
        }
    }

    /// The run did the whole work: every job succeeded, every step ran, and with replicas
    /// the steps were counted per replica.
    fn check_complete(report: &EngineReport, args_replicas: usize) {
        assert_eq!(report.not_succeeded, 0, "{report:?}");
        assert_eq!(report.steps_by_replica.len(), args_replicas);
        assert!(
            report.steps_by_replica.iter().sum::<u64>() >= 24 * 3,
            "{report:?}"
        );
        assert!(report.floor_time > Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_end_to_end_on_sqlite_with_two_replicas() {
        let report = run(tiny(None, 2)).await.unwrap();
        check_complete(&report, 2);
        assert_eq!(report.scratch_database, None);
    }

    #[tokio::test]
    async fn refuses_a_sqlite_path_as_db() {
        let err = run(tiny(Some("/var/lib/capstan/capstan.db".into()), 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("PostgreSQL server URL"), "{err}");
        assert!(!Path::new("/var/lib/capstan/capstan.db").exists());
    }

    /// On the server `CAPSTAN_TEST_PG` names: the run makes its own database, shares the work
    /// between two replicas, and leaves no database behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_end_to_end_on_postgres_with_two_replicas_and_drops_its_database() {
        let Ok(server) = std::env::var("CAPSTAN_TEST_PG") else {
            eprintln!(
                "skipped: CAPSTAN_TEST_PG is not set (a postgres:// URL of a role that may \
                 CREATE DATABASE)"
            );
            return;
        };
        let report = run(tiny(Some(server.clone()), 2)).await.unwrap();
        check_complete(&report, 2);
        let name = report.scratch_database.clone().expect("a scratch database");
        assert!(name.starts_with("capstan_bench_"), "{name}");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "the scratch database {name} is still there");
    }
}

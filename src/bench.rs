//! `capstan bench engine`: N jobs x K no-op steps through the real engine on a file database,
//! and, in the same run, the floor: the same number of minimal transactions (one UPDATE and
//! one INSERT each) through sqlx on the same file and settings. The ratio says how much the
//! engine costs over the database itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::sync::watch;

use crate::engine::step::{Outcome, Registry};
use crate::engine::{Engine, EngineConfig, request, workflow};
use crate::metrics::Metrics;
use crate::store::{Store, connect_options};

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Jobs to run (one node each).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// No-op steps per job.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Jobs the engine runs at once (= active node tasks).
    #[arg(long, default_value_t = 1000)]
    pub active: usize,
    /// Directory for the database files (a temporary one by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Concurrent submitting clients.
const SUBMITTERS: usize = 8;

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

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let tmp = tempdir_in(args.dir.clone())?;
    let db = tmp.join("bench.db");
    let store = Store::open(&db).await?;
    let mut registry = Registry::new();
    registry.step("bench.noop", &["ok"], |_ctx| async {
        Ok(Outcome::next("ok"))
    });
    let workflows = workflow::load_all(
        &[("bench.yaml".into(), workflow_yaml(args.steps))],
        &registry,
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = EngineConfig {
        lease: Duration::from_secs(60),
        poll: Duration::from_millis(50),
        max_jobs: args.active,
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        store.clone(),
        Arc::new(registry),
        workflows,
        config,
        Arc::new(Metrics::default()),
        stop_rx,
    );
    let total_steps = args.jobs * args.steps;
    println!(
        "engine bench: {} jobs x {} no-op steps = {total_steps} steps, at most {} jobs active; db {}",
        args.jobs,
        args.steps,
        args.active,
        db.display()
    );

    let runner = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let started = Instant::now();
    // Jobs arrive from several clients at once, as through the API.
    let mut submitters = tokio::task::JoinSet::new();
    for client in 0..SUBMITTERS {
        let (engine, store) = (engine.clone(), store.clone());
        let jobs = args.jobs;
        submitters.spawn(async move {
            let wf = engine.workflows()["bench"].clone();
            for i in (client..jobs).step_by(SUBMITTERS) {
                let body = serde_json::json!({ "kind": "bench", "cluster": "bench/c", "nodes": [format!("n-{i}")] });
                let req = request::parse(&body, engine.workflows()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
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
    let _ = runner.await;
    let rss_engine = peak_rss_mb();

    let mut latencies: Vec<i64> =
        sqlx::query_scalar::<_, i64>("SELECT finished_at - created_at FROM jobs")
            .fetch_all(&sqlx::SqlitePool::connect_with(connect_options(&db).read_only(true)).await?)
            .await?;
    latencies.sort_unstable();
    let failed: i64 = store
        .job_counts()
        .await?
        .iter()
        .filter(|(_, s, _)| s != "succeeded")
        .map(|(_, _, n)| n)
        .sum();

    let floor_time = floor(&db, total_steps).await?;
    let steps_per_s = total_steps as f64 / engine_time.as_secs_f64();
    println!(
        "submit: {} jobs from {SUBMITTERS} concurrent clients in {:.2}s",
        args.jobs,
        submitted.as_secs_f64()
    );
    println!(
        "engine: {total_steps} steps in {:.2}s = {steps_per_s:.0} steps/s ({failed} jobs not succeeded)",
        engine_time.as_secs_f64()
    );
    println!(
        "latency submit->done: p50 {} ms, p99 {} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!(
        "floor: {total_steps} transactions (1 UPDATE + 1 INSERT) in {:.2}s = {:.0} txn/s",
        floor_time.as_secs_f64(),
        total_steps as f64 / floor_time.as_secs_f64()
    );
    println!(
        "peak RSS: {rss_engine:.1} MB ({} finished jobs, {} active node tasks at most)",
        args.jobs, args.active
    );
    println!(
        "engine/floor time ratio: {:.2}",
        engine_time.as_secs_f64() / floor_time.as_secs_f64()
    );
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// The floor: `n` transactions of one UPDATE and one INSERT, one after another, on the same
/// file with the same connection settings as the store's writer.
async fn floor(db: &std::path::Path, n: usize) -> anyhow::Result<Duration> {
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

fn tempdir_in(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("capstan-bench-{}", uuid::Uuid::new_v4())),
    };
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

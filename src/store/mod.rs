//! The durable record: jobs, node tasks, the event log, node locks, idempotency keys and
//! schedules, in one SQLite file through sqlx.
//!
//! Invariants:
//! - Every write a lease holder makes is *fenced*: it names the fencing token it claimed the
//!   job with, and is refused once another worker has claimed the job since. A stale worker
//!   can therefore never overwrite a newer worker's progress.
//! - A state change and the event that records it commit in one transaction: history can
//!   neither lose a change nor show one that did not happen.
//! - Events are append-only (enforced by triggers in the schema).
//! - The store knows nothing of workflows, steps, HTTP or clouds.

mod commits;
mod jobs;
mod schedules;

pub use jobs::*;
pub use schedules::*;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::broadcast;

/// Migrations compiled into the binary; the file never needs the source tree.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not a Capstan database ({why}); refusing to touch it")]
    NotOurs { path: String, why: String },
    #[error(
        "{path} was written by a newer Capstan (migration {found}, this binary knows up to {known}); refusing to touch it"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the job's lease was taken by another worker (fencing token {fence} is stale)")]
    LeaseLost { fence: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("committing step outcomes failed: {0}")]
    CommitFailed(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database handle. Cheap to clone.
///
/// Writes from this process go through a single connection, so they queue in sqlx rather
/// than sleeping in SQLite's busy handler; reads use a separate pool (WAL lets them run
/// beside the writer). Writers in *other* processes on the same file wait on `busy_timeout`.
#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    /// Job IDs whose history grew, for live event streams in this process.
    appended: broadcast::Sender<String>,
    /// Step outcomes on their way to the group-commit writer.
    commits: tokio::sync::mpsc::Sender<commits::Request>,
}

impl Store {
    /// Opens (creating if absent) a Capstan database file and applies pending migrations.
    ///
    /// A file that is not a Capstan database, or one migrated by a newer binary, is refused
    /// before anything is written to it.
    pub async fn open(path: &Path) -> Result<Store> {
        let display = path.display().to_string();
        if path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            check_is_ours(path, &display).await?;
        }

        let options = connect_options(path);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (appended, _) = broadcast::channel(1024);
        let commits = commits::spawn_writer(write.clone(), appended.clone());
        Ok(Store {
            write,
            read,
            appended,
            commits,
        })
    }

    /// Subscribes to "this job's history grew" notices from this process.
    pub fn subscribe_appends(&self) -> broadcast::Receiver<String> {
        self.appended.subscribe()
    }

    pub(crate) fn notify_appended(&self, job_id: &str) {
        let _ = self.appended.send(job_id.to_string());
    }

    /// Whether the database answers; used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front: a read-then-write transaction can then
        // never fail to upgrade because another process committed in between.
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The connection settings every Capstan connection uses (and `bench` measures against).
pub fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // In WAL mode NORMAL keeps every committed transaction across a process crash
        // (kill -9); only an OS crash or power loss can drop the last few.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Refuses files that are not SQLite, not Capstan's, or from a newer Capstan, using a
/// read-only connection so the file is left exactly as it was.
async fn check_is_ours(path: &Path, display: &str) -> Result<()> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: display.to_string(),
        why,
    };
    let mut header = [0u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| not_ours(e.to_string()))?;
        f.read_exact(&mut header)
            .map_err(|_| not_ours("shorter than an SQLite header".into()))?;
    }
    if &header != b"SQLite format 3\0" {
        return Err(not_ours("not an SQLite file".into()));
    }
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await?;
    if tables.is_empty() {
        pool.close().await;
        return Ok(()); // an empty SQLite file: ours to initialise
    }
    if !tables.iter().any(|t| t == "capstan_meta") {
        pool.close().await;
        return Err(not_ours(format!(
            "it has tables ({}) but no capstan_meta",
            tables.join(", ")
        )));
    }
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> = if tables.iter().any(|t| t == "_sqlx_migrations") {
        sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await?
            .get("v")
    } else {
        None
    };
    pool.close().await;
    match found {
        Some(found) if found > known => Err(StoreError::TooNew {
            path: display.to_string(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch: the store's one time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Renders a stored time for the API and the CLI.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

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
//! - A failed write never poisons the store: a write connection released while sqlx still
//!   counts a transaction on it (a COMMIT that failed, say on a full disk, after which
//!   SQLite had already rolled back and sqlx's own ROLLBACK failed) is closed and replaced,
//!   so the next write starts clean once the cause is gone. A write the database could not
//!   make ([`StoreError::Unwritable`]) marks the store unwritable until a write proves
//!   otherwise; [`Store::ready`] probes it.
//! - The store knows nothing of workflows, steps, HTTP or clouds.

mod commits;
mod derive;
mod events;
mod idempotency;
mod jobs;
mod leases;
mod nudge;
mod operator;
mod progress;
mod schedules;

pub use events::*;
pub use idempotency::*;
pub use jobs::*;
pub use leases::*;
pub use operator::*;
pub use progress::*;
pub use schedules::*;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqlitePool, TransactionManager};
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Migrations compiled into the binary; the file never needs the source tree.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How much room the readiness probe asks the file system for beside the database: a few
/// dozen WAL frames, what an ordinary write needs.
const PROBE_BYTES: usize = 256 * 1024;

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
    /// The database refused to write for a reason outside Capstan: the disk is full, the
    /// file system is read-only or failing. The API answers 503.
    #[error("the database cannot be written: {0}")]
    Unwritable(String),
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &e {
            // SQLite's primary result codes (the low byte of the extended code).
            const IOERR: i64 = 10;
            const READONLY: i64 = 8;
            const FULL: i64 = 13;
            const CANTOPEN: i64 = 14;
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff;
            if matches!(code, IOERR | READONLY | FULL | CANTOPEN) {
                return StoreError::Unwritable(db.message().to_string());
            }
        }
        StoreError::Db(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether the last write this process attempted could be made: set by a write the
/// database refused ([`StoreError::Unwritable`]), cleared by a write that went through
/// (a submission, a batch of step outcomes, or the readiness probe).
#[derive(Default)]
struct WriteHealth(Mutex<Option<String>>);

impl WriteHealth {
    fn failing(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }

    fn set(&self, why: String) {
        let mut failing = self.0.lock().unwrap();
        if failing.is_none() {
            warn!(error = %why, "the database cannot be written; not ready until a write works again");
        }
        *failing = Some(why);
    }

    fn clear(&self) {
        if self.0.lock().unwrap().take().is_some() {
            info!("the database can be written again");
        }
    }
}

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
    health: Arc<WriteHealth>,
    path: PathBuf,
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

        create_private(path)?;

        let options = connect_options(path);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(release_clean(conn)))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (appended, _) = broadcast::channel(1024);
        let health = Arc::new(WriteHealth::default());
        let commits = commits::spawn_writer(write.clone(), appended.clone(), health.clone());
        Ok(Store {
            write,
            read,
            appended,
            commits,
            health,
            path: path.to_path_buf(),
        })
    }

    /// Subscribes to "this job's history grew" notices from this process.
    pub fn subscribe_appends(&self) -> broadcast::Receiver<String> {
        self.appended.subscribe()
    }

    pub(crate) fn notify_appended(&self, job_id: &str) {
        let _ = self.appended.send(job_id.to_string());
    }

    /// Whether the database answers and, after a write failed, can be written again;
    /// used by `/readyz`.
    ///
    /// While the last write failed, each call probes: it asks the file system for
    /// [`PROBE_BYTES`] beside the database (a write that needs the file to grow is what a
    /// full disk refuses, and a probe inside SQLite could reuse WAL space a failed commit
    /// left) and commits one row to `capstan_meta` through the write connection. A probe
    /// that passes clears the mark.
    pub async fn ready(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        if self.health.failing().is_none() {
            return Ok(());
        }
        match self.probe_write().await {
            Ok(()) => {
                self.health.clear();
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn probe_write(&self) -> Result<()> {
        let mut name = self.path.clone().into_os_string();
        name.push(".write-probe");
        let probe = PathBuf::from(name);
        tokio::task::spawn_blocking(move || {
            let room = (|| {
                use std::io::Write;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut f = options.open(&probe)?;
                f.write_all(&vec![0u8; PROBE_BYTES])?;
                f.flush()
            })();
            let _ = std::fs::remove_file(&probe);
            room.map_err(|e| StoreError::Unwritable(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Unwritable(format!("the write probe stopped: {e}")))??;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO capstan_meta (key, value) VALUES ('write_probe', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front: a read-then-write transaction can then
        // never fail to upgrade because another process committed in between.
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.failed(e.into()))
    }

    /// Commits a write transaction, noting a commit the database refused.
    pub(crate) async fn commit(&self, tx: sqlx::Transaction<'static, sqlx::Sqlite>) -> Result<()> {
        tx.commit().await.map_err(|e| self.failed(e.into()))
    }

    /// Notes a failed write: one the database could not make marks the store unwritable.
    pub(crate) fn failed(&self, e: StoreError) -> StoreError {
        if let StoreError::Unwritable(why) = &e {
            self.health.set(why.clone());
        }
        e
    }

    /// Notes a write that went through.
    pub(crate) fn wrote(&self) {
        self.health.clear();
    }
}

/// Decides whether the write connection goes back to the pool. It must come back with no
/// transaction open: after a COMMIT that failed (a full disk), SQLite may already have
/// rolled back, the ROLLBACK sqlx sends when the transaction is dropped then fails too, and
/// sqlx keeps counting a transaction that no longer exists, refusing every later BEGIN
/// ("attempted to call begin_with at non-zero transaction depth"). Such a connection is
/// closed (which rolls back whatever SQLite still holds) and the pool opens a new one.
async fn release_clean(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    // The ROLLBACK a dropped transaction queued runs before the ping answers.
    conn.ping().await?;
    let depth = <sqlx::Sqlite as sqlx::Database>::TransactionManager::get_transaction_depth(conn);
    if depth > 0 {
        warn!(
            depth,
            "the write connection still holds a transaction after a failed write; replacing it"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Creates the database file, if absent, readable and writable by its owner only; SQLite
/// gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unwritable(format!(
            "creating {}: {e}",
            path.display()
        ))),
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
    let identity = identify(&pool, &tables).await;
    pool.close().await;
    let found = identity.map_err(not_ours)?;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if found > known {
        return Err(StoreError::TooNew {
            path: display.to_string(),
            found,
            known,
        });
    }
    Ok(())
}

/// Reads, without writing, what makes a non-empty file Capstan's: a `capstan_meta` table
/// whose `schema` row says `capstan`, and the migration record that wrote it (every
/// Capstan file has both, from its first migration on). Returns the newest migration
/// applied, or why the file is not Capstan's.
async fn identify(pool: &SqlitePool, tables: &[String]) -> std::result::Result<i64, String> {
    if !tables.iter().any(|t| t == "capstan_meta") {
        return Err(format!(
            "it has tables ({}) but no capstan_meta",
            tables.join(", ")
        ));
    }
    let schema: Option<String> =
        sqlx::query_scalar("SELECT value FROM capstan_meta WHERE key = 'schema'")
            .fetch_optional(pool)
            .await
            .map_err(|e| format!("its capstan_meta table is not Capstan's ({e})"))?;
    if schema.as_deref() != Some("capstan") {
        return Err("its capstan_meta table does not name the capstan schema".into());
    }
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err("it has a capstan_meta table but no record of Capstan's migrations".into());
    }
    let found: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get("v"))
        .map_err(|e| format!("its migration record is unreadable ({e})"))?;
    found.ok_or_else(|| "its migration record is empty".to_string())
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

//! The durable record: jobs, node tasks, the event log, node locks, idempotency keys and
//! schedules, in one SQLite file or one PostgreSQL database, through sqlx.
//!
//! Invariants (on both databases):
//! - Every write a lease holder makes is *fenced*: it names the fencing token it claimed the
//!   job with, and is refused once another worker has claimed the job since. A stale worker
//!   can therefore never overwrite a newer worker's progress.
//! - A state change and the event that records it commit in one transaction: history can
//!   neither lose a change nor show one that did not happen.
//! - Events are append-only (enforced by triggers in the schema).
//! - Writes that read before they write are serialised: on SQLite every write transaction
//!   takes the file's write lock up front (`BEGIN IMMEDIATE`); on PostgreSQL each one locks
//!   the rows of the job it writes (`FOR UPDATE`) before reading them, claims skip rows
//!   another replica holds (`FOR UPDATE SKIP LOCKED`), and a job's events are appended only
//!   under its row lock, so their IDs grow in commit order and a reader paging by ID never
//!   skips one.
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
mod location;
mod nudge;
mod operator;
mod postgres;
mod progress;
mod schedules;
mod sql;
mod sqlite;

pub use events::*;
pub use idempotency::*;
pub use jobs::*;
pub use leases::*;
pub use location::DbLocation;
pub use operator::*;
pub use progress::*;
pub use schedules::*;
pub use sql::Dialect;
pub use sqlite::connect_options;

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tracing::{info, warn};

use sql::{Pool, Tx, query};

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
    /// file system is read-only or failing, the server is unreachable. The API answers 503.
    #[error("the database cannot be written: {0}")]
    Unwritable(String),
    #[error("cannot connect to {location}: {why}")]
    Connect { location: String, why: String },
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        let cannot_write = match &e {
            sqlx::Error::Database(db) => {
                match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => postgres::cannot_write(pg.code()),
                    None => sqlite::cannot_write(db.code().as_deref()),
                }
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            _ => false,
        };
        if cannot_write {
            return StoreError::Unwritable(match &e {
                sqlx::Error::Database(db) => db.message().to_string(),
                other => other.to_string(),
            });
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

/// `found`, the newest migration a database has, unless a newer binary applied it.
fn not_newer(display: &str, found: i64, known: i64) -> Result<i64> {
    if found > known {
        return Err(StoreError::TooNew {
            path: display.to_string(),
            found,
            known,
        });
    }
    Ok(found)
}

/// Where the schema of a database stands against this binary's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The newest migration applied; 0 for an empty database.
    pub applied: i64,
    /// The newest migration this binary has.
    pub known: i64,
}

impl SchemaStatus {
    pub fn current(&self) -> bool {
        self.applied == self.known
    }
}

/// The database handle. Cheap to clone.
///
/// SQLite: writes from this process go through a single connection, so they queue in sqlx
/// rather than sleeping in SQLite's busy handler; reads use a separate pool (WAL lets them
/// run beside the writer); writers in *other* processes on the same file wait on
/// `busy_timeout`. PostgreSQL: one pool for both, row locks between replicas, and a
/// listening connection through which other replicas' submits and appends arrive.
#[derive(Clone)]
pub struct Store {
    write: Pool,
    read: Pool,
    /// Job IDs whose history grew: in this process, and (PostgreSQL) in other replicas.
    appended: broadcast::Sender<String>,
    /// Jobs another replica wrote to (PostgreSQL's NOTIFY): they may be due now.
    remote: broadcast::Sender<String>,
    /// Step outcomes on their way to the group-commit writer.
    commits: tokio::sync::mpsc::Sender<commits::Request>,
    health: Arc<WriteHealth>,
    location: DbLocation,
    /// PostgreSQL: keeps the listening connection open while any clone of the store lives.
    _listener: Option<Arc<postgres::ListenerGuard>>,
}

impl Store {
    /// Opens (creating if absent) a Capstan database — a SQLite file or a PostgreSQL
    /// database — and applies pending migrations.
    ///
    /// A database that is not Capstan's, or one migrated by a newer binary, is refused
    /// before anything is written to it.
    pub async fn open(location: impl Into<DbLocation>) -> Result<Store> {
        let location = location.into();
        let (write, read) = match &location {
            DbLocation::Sqlite(path) => sqlite::open(path).await?,
            DbLocation::Postgres(url) => {
                let pool = postgres::open(url, &location).await?;
                (pool.clone(), pool)
            }
        };
        let (appended, _) = broadcast::channel(1024);
        let (remote, _) = broadcast::channel(1024);
        let listener = match &write {
            Pool::Postgres(pool) => Some(Arc::new(postgres::spawn_listener(
                pool.clone(),
                appended.clone(),
                remote.clone(),
            ))),
            Pool::Sqlite(_) => None,
        };
        let health = Arc::new(WriteHealth::default());
        let commits = commits::spawn_writer(write.clone(), appended.clone(), health.clone());
        Ok(Store {
            write,
            read,
            appended,
            remote,
            commits,
            health,
            location,
            _listener: listener,
        })
    }

    /// Where the schema of a database stands, read without writing to it: refuses one that
    /// is not Capstan's or was migrated by a newer binary, as [`Store::open`] would.
    pub async fn check(location: impl Into<DbLocation>) -> Result<SchemaStatus> {
        let location = location.into();
        match &location {
            DbLocation::Sqlite(path) => sqlite::check(path, &location.to_string()).await,
            DbLocation::Postgres(url) => postgres::check(url, &location).await,
        }
    }

    /// Where the store lives (a PostgreSQL URL shown without its password).
    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    pub fn dialect(&self) -> Dialect {
        self.write.dialect()
    }

    /// Subscribes to "this job's history grew" notices: from this process, and on
    /// PostgreSQL from every replica.
    pub fn subscribe_appends(&self) -> broadcast::Receiver<String> {
        self.appended.subscribe()
    }

    /// Subscribes to the jobs other replicas wrote to (PostgreSQL only; an empty ID means
    /// notices may have been missed while the listening connection was down): a job
    /// submitted or resumed there may be due here at once.
    pub fn subscribe_remote(&self) -> broadcast::Receiver<String> {
        self.remote.subscribe()
    }

    pub(crate) fn notify_appended(&self, job_id: &str) {
        let _ = self.appended.send(job_id.to_string());
    }

    /// Whether the database answers and, after a write failed, can be written again;
    /// used by `/readyz`.
    ///
    /// While the last write failed, each call probes: on SQLite it first asks the file
    /// system for room beside the database (a write that needs the file to grow is what a
    /// full disk refuses, and a probe inside SQLite could reuse WAL space a failed commit
    /// left); on both it commits one row to `capstan_meta`. A probe that passes clears the
    /// mark.
    pub async fn ready(&self) -> Result<()> {
        query("SELECT 1").execute(&self.read).await?;
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
        if let Some(path) = self.location.file() {
            sqlite::probe_room(path).await?;
        }
        let mut tx = self.begin_write().await?;
        query(
            "INSERT INTO capstan_meta (key, value) VALUES ('write_probe', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(&mut tx)
        .await?;
        self.commit(tx).await
    }

    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        let tx = match &self.write {
            // IMMEDIATE takes the write lock up front: a read-then-write transaction can
            // then never fail to upgrade because another process committed in between.
            Pool::Sqlite(p) => p.begin_with("BEGIN IMMEDIATE").await.map(Tx::Sqlite),
            // Each write locks the rows it reads before writing (see the module's invariants).
            Pool::Postgres(p) => p.begin().await.map(Tx::Postgres),
        };
        tx.map_err(|e| self.failed(e.into()))
    }

    /// Commits a write transaction, noting a commit the database refused.
    pub(crate) async fn commit(&self, tx: Tx) -> Result<()> {
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

/// Locks a job's row for the rest of the transaction (PostgreSQL; on SQLite the
/// transaction already holds the write lock). Returns whether the job exists.
pub(crate) async fn lock_job(tx: &mut Tx, job_id: &str) -> Result<bool> {
    if tx.dialect() == Dialect::Sqlite {
        return Ok(true);
    }
    let found: Option<i64> = query("SELECT fence FROM jobs WHERE id = ? FOR UPDATE")
        .bind(job_id)
        .scalar_optional(&mut *tx)
        .await?;
    Ok(found.is_some())
}

/// PostgreSQL: tells the other replicas, when `tx` commits, that `job_id` was written to
/// (they hear it on their listening connection). SQLite has no other replicas to tell.
pub(crate) async fn notify_replicas(tx: &mut Tx, job_id: &str) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        query("SELECT pg_notify(?, ?)")
            .bind(postgres::CHANNEL)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
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

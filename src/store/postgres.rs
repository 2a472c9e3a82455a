//! The PostgreSQL store's own parts: connecting, recognising and migrating the database
//! under an advisory lock (replicas starting together migrate it once), which of its errors
//! mean it cannot be written, and the LISTEN connection through which replicas hear of each
//! other's writes.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use super::sql::{Pool, query};
use super::{DbLocation, Result, SchemaStatus, StoreError};

/// Migrations compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel every write that appends to a job's history notifies, with the job's ID.
pub(super) const CHANNEL: &str = "capstan_jobs";

/// The advisory lock held while a replica checks and migrates the schema (sqlx's migrator
/// takes one of its own inside it, keyed by the database name).
const SCHEMA_LOCK: i64 = 0x6361_7073_7461_6e01; // "capstan" + 1

/// Connections per replica: the engine's group-commit writer, claims and heartbeats, the
/// API's reads, and one for LISTEN outside the pool.
const MAX_CONNECTIONS: u32 = 10;

fn known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

fn options(url: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = url.parse().map_err(StoreError::Db)?;
    Ok(options.application_name("capstan"))
}

/// Connects, refuses a database that is not Capstan's or is newer, and migrates it, all
/// under [`SCHEMA_LOCK`].
pub(super) async fn open(url: &str, location: &DbLocation) -> Result<Pool> {
    // One connection of its own first: an unreachable server or a refused login is said
    // at once, with its reason, rather than as the pool's timeout 30 s later.
    let mut conn = connect(url, location).await?;
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options(url)?);
    query("SELECT pg_advisory_lock(?)")
        .bind(SCHEMA_LOCK)
        .execute(super::sql::Ex::PgConn(&mut conn))
        .await?;
    let migrated = async {
        identify(&mut conn, &location.to_string()).await?;
        MIGRATOR.run(&pool).await?;
        Ok::<(), StoreError>(())
    }
    .await;
    let unlocked = query("SELECT pg_advisory_unlock(?)")
        .bind(SCHEMA_LOCK)
        .execute(super::sql::Ex::PgConn(&mut conn))
        .await;
    migrated?;
    unlocked?;
    Ok(Pool::Postgres(pool))
}

async fn connect(url: &str, location: &DbLocation) -> Result<PgConnection> {
    options(url)?
        .connect()
        .await
        .map_err(|e| StoreError::Connect {
            location: location.to_string(),
            why: e.to_string(),
        })
}

/// Where the database's schema stands, read without writing.
pub(super) async fn check(url: &str, location: &DbLocation) -> Result<SchemaStatus> {
    let mut conn = connect(url, location).await?;
    let applied = identify(&mut conn, &location.to_string()).await?;
    Ok(SchemaStatus {
        applied,
        known: known(),
    })
}

/// Reads, without writing, what makes a database Capstan's (as on SQLite: a `capstan_meta`
/// table naming the schema, and sqlx's migration record), in the connection's schema.
/// Returns the newest migration applied (0 for an empty database), or refuses.
async fn identify(conn: &mut PgConnection, display: &str) -> Result<i64> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: display.to_string(),
        why,
    };
    let tables: Vec<String> = query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .scalars(super::sql::Ex::PgConn(&mut *conn))
    .await?;
    if tables.is_empty() {
        return Ok(0);
    }
    if !tables.iter().any(|t| t == "capstan_meta") {
        return Err(not_ours(format!(
            "it has tables ({}) but no capstan_meta",
            tables.join(", ")
        )));
    }
    let schema: Option<String> = query("SELECT value FROM capstan_meta WHERE key = 'schema'")
        .scalar_optional(super::sql::Ex::PgConn(&mut *conn))
        .await
        .map_err(|e| not_ours(format!("its capstan_meta table is not Capstan's ({e})")))?;
    if schema.as_deref() != Some("capstan") {
        return Err(not_ours(
            "its capstan_meta table does not name the capstan schema".into(),
        ));
    }
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(not_ours(
            "it has a capstan_meta table but no record of Capstan's migrations".into(),
        ));
    }
    let found: Option<i64> = query("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .scalar(super::sql::Ex::PgConn(&mut *conn))
        .await
        .map_err(|e| not_ours(format!("its migration record is unreadable ({e})")))?;
    let found = found.ok_or_else(|| not_ours("its migration record is empty".into()))?;
    super::not_newer(display, found, known())
}

/// SQLSTATEs that mean the database cannot take writes now, whatever Capstan sends: class
/// 08 (connection exception), 53 (insufficient resources: disk full, out of memory, too
/// many connections), 57P (the server is shutting down or starting), 25006 (a read-only
/// transaction: a standby, or `default_transaction_read_only`).
pub(super) fn cannot_write(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "25006"
}

/// Listens on [`CHANNEL`] for the life of the process: each notice (a job ID) goes to the
/// live event streams (`appended`) and to the engine (`remote`). When the connection drops
/// it reconnects, and sends an empty ID to `remote`: notices may have been missed, look
/// again.
///
/// The task lives as long as the returned guard: the [`Store`](super::Store) holds it, so
/// the connection closes when the last clone of the store is dropped.
pub(super) fn spawn_listener(
    pool: PgPool,
    appended: broadcast::Sender<String>,
    remote: broadcast::Sender<String>,
) -> ListenerGuard {
    ListenerGuard(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot open the LISTEN connection; other replicas' work is seen on the next poll");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            let _ = remote.send(String::new());
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        let job = n.payload().to_string();
                        let _ = appended.send(job.clone());
                        let _ = remote.send(job);
                    }
                    Ok(None) => {
                        debug!("the LISTEN connection dropped; reconnecting");
                        let _ = remote.send(String::new());
                    }
                    Err(e) => {
                        warn!(error = %e, "the LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }))
}

/// Stops the listening task when dropped.
pub(super) struct ListenerGuard(tokio::task::JoinHandle<()>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

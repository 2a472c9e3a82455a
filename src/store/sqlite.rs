//! The SQLite store's own parts: the file (created private, recognised before it is
//! touched), its connections and settings, its migrations, and which of its errors mean
//! the file cannot be written.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqlitePool, TransactionManager};
use tracing::warn;

use super::sql::Pool;
use super::{Result, SchemaStatus, StoreError};

/// Migrations compiled into the binary; the file never needs the source tree.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How much room the readiness probe asks the file system for beside the database: a few
/// dozen WAL frames, what an ordinary write needs.
const PROBE_BYTES: usize = 256 * 1024;

/// The newest migration this binary has.
fn known() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Opens the file (creating it, private, if absent), refusing one that is not Capstan's or
/// is newer, and migrates it. Returns the write pool (one connection) and the read pool.
pub(super) async fn open(path: &Path) -> Result<(Pool, Pool)> {
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
    Ok((Pool::Sqlite(write), Pool::Sqlite(read)))
}

/// Where a file's schema stands, read without writing (an absent or empty file is at 0).
pub(super) async fn check(path: &Path, display: &str) -> Result<SchemaStatus> {
    let applied = if path.exists()
        && std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    {
        check_is_ours(path, display).await?
    } else {
        0
    };
    Ok(SchemaStatus {
        applied,
        known: known(),
    })
}

/// SQLite's primary result codes (the low byte of the extended code) that mean the file
/// cannot be written: an I/O error, a read-only file, a full disk, a file it cannot open.
pub(super) fn cannot_write(code: Option<&str>) -> bool {
    const IOERR: i64 = 10;
    const READONLY: i64 = 8;
    const FULL: i64 = 13;
    const CANTOPEN: i64 = 14;
    let code = code.and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff;
    matches!(code, IOERR | READONLY | FULL | CANTOPEN)
}

/// Asks the file system for [`PROBE_BYTES`] beside the database, and gives them back.
pub(super) async fn probe_room(path: &Path) -> Result<()> {
    let mut name = path.to_path_buf().into_os_string();
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
    .map_err(|e| StoreError::Unwritable(format!("the write probe stopped: {e}")))?
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
/// Returns the newest migration applied.
async fn check_is_ours(path: &Path, display: &str) -> Result<i64> {
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
        return Ok(0); // an empty SQLite file: ours to initialise
    }
    let identity = identify(&pool, &tables).await;
    pool.close().await;
    let found = identity.map_err(not_ours)?;
    super::not_newer(display, found, known())
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

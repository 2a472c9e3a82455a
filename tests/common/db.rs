//! The engine's database in a test, on either store: a SQLite file in the test's directory
//! (the default), or — with `CAPSTAN_TEST_STORE=postgres` — a fresh PostgreSQL database of
//! the test's own, `capstan_t_<uuid>`, made on the server `CAPSTAN_TEST_PG` names (a URL of
//! a role that may CREATE DATABASE; `tests/postgres/server` starts one) and dropped when the
//! test is done. `EngineDb` reads and writes it directly, as another program would, for the
//! few tests that look under the API.

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{Connection, PgPool, SqlitePool};

/// The server the PostgreSQL tests make their databases on.
pub const TEST_PG: &str = "CAPSTAN_TEST_PG";

/// Which store the engine suite runs against: `CAPSTAN_TEST_STORE` (`sqlite` or
/// `postgres`; unset is SQLite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("CAPSTAN_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("CAPSTAN_TEST_STORE={other}: expected `sqlite` or `postgres`"),
    }
}

/// `CAPSTAN_TEST_PG`, if set.
pub fn test_pg() -> Option<String> {
    std::env::var(TEST_PG).ok().filter(|s| !s.is_empty())
}

/// For a test about the SQLite file itself: on PostgreSQL it says why it is skipped and
/// returns true.
pub fn sqlite_only(why: &str) -> bool {
    let skip = backend() == Backend::Postgres;
    if skip {
        println!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// For a test of what only PostgreSQL does: on SQLite it says why it is skipped and returns
/// true.
pub fn postgres_only(why: &str) -> bool {
    let skip = backend() != Backend::Postgres;
    if skip {
        println!("skipped on SQLite: {why}");
    }
    skip
}

/// Runs `f` to completion on a runtime of its own in another thread: the databases are
/// made and dropped from synchronous code (constructors, `Drop`) inside the tests' runtime.
fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .expect("database setup thread")
}

/// The URL of database `name` on the server `server` names.
fn with_database(server: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(server)
        .unwrap_or_else(|e| panic!("{TEST_PG} is not a URL ({e}): {server}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// One test's engine database, given to `capstan serve --db` as `location`. Its clones
/// share it: a PostgreSQL database is dropped with the last of them (a server started from
/// a test's spec keeps one).
#[derive(Clone)]
pub struct TestDb {
    /// A SQLite file's path or a `postgres://` URL.
    pub location: String,
    postgres: Option<Arc<Dropped>>,
}

/// A PostgreSQL database of a test: the server's URL and the database's name.
struct Dropped {
    server: String,
    name: String,
}

impl TestDb {
    /// The database of the store under test: the SQLite file `dir/file`, or a fresh
    /// PostgreSQL database (a missing `CAPSTAN_TEST_PG` fails the test: asked for
    /// PostgreSQL, it must not pass on SQLite).
    pub fn fresh(dir: &Path, file: &str) -> TestDb {
        match backend() {
            Backend::Sqlite => TestDb::sqlite(dir.join(file)),
            Backend::Postgres => {
                let server = test_pg().unwrap_or_else(|| {
                    panic!(
                        "CAPSTAN_TEST_STORE=postgres needs {TEST_PG}, the URL of a PostgreSQL role \
                         that may CREATE DATABASE (tests/postgres/server starts one)"
                    )
                });
                TestDb::postgres(&server)
            }
        }
    }

    pub fn sqlite(path: PathBuf) -> TestDb {
        TestDb {
            location: path.to_str().expect("a UTF-8 path").to_string(),
            postgres: None,
        }
    }

    /// A new, empty database `capstan_t_<uuid>` on the server `server` names.
    pub fn postgres(server: &str) -> TestDb {
        let name = format!("capstan_t_{}", uuid::Uuid::new_v4().simple());
        let (admin, db) = (server.to_string(), name.clone());
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("connecting to {TEST_PG}: {e}"));
            sqlx::query(&format!("CREATE DATABASE \"{db}\""))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e}"));
            conn.close().await.ok();
        });
        TestDb {
            location: with_database(server, &name),
            postgres: Some(Arc::new(Dropped {
                server: server.to_string(),
                name,
            })),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The SQLite file, if it is one.
    pub fn file(&self) -> Option<&Path> {
        (!self.is_postgres()).then(|| Path::new(&self.location))
    }
}

impl AsRef<OsStr> for TestDb {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.location)
    }
}

impl Drop for Dropped {
    /// Drops the PostgreSQL database, closing what is still connected (a killed server's
    /// sessions end on their own; a test's own pools may still be open).
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(&drop).execute(&mut conn).await;
                conn.close().await.ok();
            }
        });
    }
}

/// The engine's database opened directly, as another program would (SQLite read-write
/// unless opened `read_only`); the tests give it portable SQL with literals.
pub enum EngineDb {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl EngineDb {
    pub async fn open(db: &TestDb) -> EngineDb {
        EngineDb::connect(db, false).await
    }

    /// Opens it without writing (SQLite: no WAL started in a file someone else owns).
    pub async fn read_only(db: &TestDb) -> EngineDb {
        EngineDb::connect(db, true).await
    }

    async fn connect(db: &TestDb, read_only: bool) -> EngineDb {
        match db.file() {
            Some(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(read_only)
                    .create_if_missing(!read_only);
                EngineDb::Sqlite(SqlitePool::connect_with(options).await.unwrap())
            }
            None => EngineDb::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&db.location)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to the test's database: {e}")),
            ),
        }
    }

    pub async fn execute(&self, sql: &str) {
        let done = match self {
            EngineDb::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
            EngineDb::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The one integer a query answers (BIGINT on PostgreSQL).
    pub async fn integer(&self, sql: &str) -> i64 {
        let v = match self {
            EngineDb::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            EngineDb::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        };
        v.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Its tables, by name.
    pub async fn tables(&self) -> Vec<String> {
        let names = match self {
            EngineDb::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(p)
                .await
            }
            EngineDb::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
                )
                .fetch_all(p)
                .await
            }
        };
        names.unwrap()
    }

    pub async fn close(self) {
        match self {
            EngineDb::Sqlite(p) => p.close().await,
            EngineDb::Postgres(p) => p.close().await,
        }
    }
}

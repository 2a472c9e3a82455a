//! One way to run the store's SQL on SQLite or PostgreSQL.
//!
//! The store writes each statement once, with `?` placeholders (rewritten to `$1`, `$2`, …
//! for PostgreSQL) and values of three types (integers, text, booleans), and reads rows into
//! the same `FromRow` types on both databases. Where the two dialects differ (the clock, JSON,
//! row locks) a statement is given in both ([`query_by`]). Both schemas use the types these
//! values decode from (BIGINT and BOOLEAN on PostgreSQL), so a row reads the same from either.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments, FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool,
    Transaction,
};

/// Which database a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool of either database.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// An open transaction on either database.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Where a statement runs: inside a transaction or on a pool.
pub(crate) enum Ex<'e> {
    SqliteConn(&'e mut SqliteConnection),
    PgConn(&'e mut PgConnection),
    SqlitePool(&'e SqlitePool),
    PgPool(&'e PgPool),
}

impl<'e> From<&'e mut Tx> for Ex<'e> {
    fn from(tx: &'e mut Tx) -> Ex<'e> {
        match tx {
            Tx::Sqlite(tx) => Ex::SqliteConn(&mut *tx),
            Tx::Postgres(tx) => Ex::PgConn(&mut *tx),
        }
    }
}

impl<'e> From<&'e Pool> for Ex<'e> {
    fn from(pool: &'e Pool) -> Ex<'e> {
        match pool {
            Pool::Sqlite(p) => Ex::SqlitePool(p),
            Pool::Postgres(p) => Ex::PgPool(p),
        }
    }
}

impl Ex<'_> {
    fn dialect(&self) -> Dialect {
        match self {
            Ex::SqliteConn(_) | Ex::SqlitePool(_) => Dialect::Sqlite,
            Ex::PgConn(_) | Ex::PgPool(_) => Dialect::Postgres,
        }
    }
}

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

pub(crate) trait IntoArg {
    fn into_arg(self) -> Arg;
}

macro_rules! into_arg {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl IntoArg for $t {
            fn into_arg(self) -> Arg {
                let $v = self;
                $e
            }
        })*
    };
}

into_arg! {
    i64 => |v| Arg::Int(Some(v)),
    Option<i64> => |v| Arg::Int(v),
    bool => |v| Arg::Bool(Some(v)),
    Option<bool> => |v| Arg::Bool(v),
    String => |v| Arg::Text(Some(v)),
    &str => |v| Arg::Text(Some(v.to_string())),
    &String => |v| Arg::Text(Some(v.clone())),
    Option<String> => |v| Arg::Text(v),
    Option<&str> => |v| Arg::Text(v.map(str::to_string)),
    &Option<String> => |v| Arg::Text(v.clone()),
}

/// Rows both databases can decode into.
pub(crate) trait Rowed:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Rowed for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Runs `sqlx::$make(sql, args).$run(executor)` on whichever executor `ex` holds, with the
/// arguments converted for its database, and maps the result (the same closure text in
/// each arm: the result types differ per database), or returns it as it is.
macro_rules! on_either {
    ($ex:expr, $make:ident($sql:expr, $args:expr).$run:ident) => {
        on_either!($ex, $make($sql, $args).$run, std::convert::identity)
    };
    ($ex:expr, $make:ident($sql:expr, $args:expr).$run:ident, $map:expr) => {
        match $ex {
            Ex::SqliteConn(c) => sqlx::$make($sql, sqlite_args($args)?)
                .$run(c)
                .await
                .map($map),
            Ex::SqlitePool(p) => sqlx::$make($sql, sqlite_args($args)?)
                .$run(p)
                .await
                .map($map),
            Ex::PgConn(c) => sqlx::$make($sql, pg_args($args)?).$run(c).await.map($map),
            Ex::PgPool(p) => sqlx::$make($sql, pg_args($args)?).$run(p).await.map($map),
        }
    };
}

/// A statement and its bound values.
pub(crate) struct Query {
    sqlite: String,
    postgres: Option<String>,
    args: Vec<Arg>,
}

/// A statement both databases run as written (placeholders aside).
pub(crate) fn query(sql: impl Into<String>) -> Query {
    Query {
        sqlite: sql.into(),
        postgres: None,
        args: Vec::new(),
    }
}

/// A statement written once per dialect, with the same placeholders in the same order.
pub(crate) fn query_by(sqlite: impl Into<String>, postgres: impl Into<String>) -> Query {
    Query {
        sqlite: sqlite.into(),
        postgres: Some(postgres.into()),
        args: Vec::new(),
    }
}

impl Query {
    pub fn bind(mut self, value: impl IntoArg) -> Query {
        self.args.push(value.into_arg());
        self
    }

    /// The statement's text for `dialect`, and its values.
    fn parts(self, dialect: Dialect) -> (String, Vec<Arg>) {
        let sql = match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => numbered(self.postgres.as_deref().unwrap_or(&self.sqlite)),
        };
        (sql, self.args)
    }

    /// Runs the statement; returns the rows it changed.
    pub async fn execute<'e>(self, ex: impl Into<Ex<'e>>) -> Result<u64, sqlx::Error> {
        let ex = ex.into();
        let (sql, args) = self.parts(ex.dialect());
        on_either!(ex, query_with(&sql, args).execute, |r| r.rows_affected())
    }

    pub async fn fetch_all<'e, T: Rowed>(
        self,
        ex: impl Into<Ex<'e>>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let ex = ex.into();
        let (sql, args) = self.parts(ex.dialect());
        on_either!(ex, query_as_with(&sql, args).fetch_all)
    }

    pub async fn fetch_optional<'e, T: Rowed>(
        self,
        ex: impl Into<Ex<'e>>,
    ) -> Result<Option<T>, sqlx::Error> {
        let ex = ex.into();
        let (sql, args) = self.parts(ex.dialect());
        on_either!(ex, query_as_with(&sql, args).fetch_optional)
    }

    pub async fn fetch_one<'e, T: Rowed>(self, ex: impl Into<Ex<'e>>) -> Result<T, sqlx::Error> {
        self.fetch_optional(ex)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// The first column of each row.
    pub async fn scalars<'e, T>(self, ex: impl Into<Ex<'e>>) -> Result<Vec<T>, sqlx::Error>
    where
        (T,): Rowed,
    {
        let rows: Vec<(T,)> = self.fetch_all(ex).await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// The first column of the first row, if there is a row.
    pub async fn scalar_optional<'e, T>(
        self,
        ex: impl Into<Ex<'e>>,
    ) -> Result<Option<T>, sqlx::Error>
    where
        (T,): Rowed,
    {
        let row: Option<(T,)> = self.fetch_optional(ex).await?;
        Ok(row.map(|(v,)| v))
    }

    /// The first column of the one row the statement must return.
    pub async fn scalar<'e, T>(self, ex: impl Into<Ex<'e>>) -> Result<T, sqlx::Error>
    where
        (T,): Rowed,
    {
        self.scalar_optional(ex)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

fn sqlite_args<'q>(args: Vec<Arg>) -> Result<SqliteArguments<'q>, sqlx::Error> {
    arguments(args)
}

fn pg_args(args: Vec<Arg>) -> Result<PgArguments, sqlx::Error> {
    arguments(args)
}

/// The values in the argument list of database `A::Database`.
fn arguments<'q, A>(args: Vec<Arg>) -> Result<A, sqlx::Error>
where
    A: Arguments<'q> + Default,
    Option<i64>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
    Option<String>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
    Option<bool>: sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
{
    let mut out = A::default();
    for a in args {
        match a {
            Arg::Int(v) => out.add(v),
            Arg::Text(v) => out.add(v),
            Arg::Bool(v) => out.add(v),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

/// Rewrites `?` placeholders as PostgreSQL's `$1`, `$2`, … (a `?` inside a quoted string
/// or identifier is left alone).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        let cases = [
            ("SELECT 1", "SELECT 1"),
            ("a = ? AND b = ?", "a = $1 AND b = $2"),
            ("x = '?' AND y = ?", "x = '?' AND y = $1"),
            ("\"w?\" = ? || '?''?' || ?", "\"w?\" = $1 || '?''?' || $2"),
        ];
        for (sql, want) in cases {
            assert_eq!(numbered(sql), want, "{sql}");
        }
    }
}

//! A PostgreSQL database of the bench's own, so that pointing `capstan bench engine --db` at
//! a server an operator uses can never touch their data: the bench connects to the database
//! the URL names only to create `capstan_bench_<uuid>` beside it, runs in that one, and drops
//! it at the end (with `FORCE`, which ends the connections the engines' stores still hold;
//! PostgreSQL 13 or later).

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor};

pub struct ScratchDatabase {
    /// The server's URL as given, to come back to for the drop.
    server: String,
    /// `capstan_bench_<uuid>`: lowercase letters, digits and underscores, so it needs no
    /// quoting in SQL.
    pub name: String,
    /// The server's URL with this database in place of the one it named.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates a fresh database on the server `server_url` points at.
    pub async fn create(server_url: &str) -> anyhow::Result<ScratchDatabase> {
        let name = format!("capstan_bench_{}", uuid::Uuid::new_v4().simple());
        let mut url =
            reqwest::Url::parse(server_url).context("reading the PostgreSQL URL given to --db")?;
        url.set_path(&format!("/{name}"));
        let mut conn = connect(server_url).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| {
                format!("creating the scratch database {name} (the role needs CREATEDB)")
            })?;
        Ok(ScratchDatabase {
            server: server_url.to_string(),
            name,
            url: url.into(),
        })
    }

    /// Drops the database, ending any connection still open on it.
    pub async fn drop(self) -> anyhow::Result<()> {
        let mut conn = connect(&self.server).await?;
        conn.execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
            .await
            .with_context(|| format!("dropping the scratch database {}", self.name))?;
        Ok(())
    }
}

async fn connect(server_url: &str) -> anyhow::Result<sqlx::PgConnection> {
    let options: PgConnectOptions = server_url
        .parse()
        .context("reading the PostgreSQL URL given to --db")?;
    options
        .connect()
        .await
        .context("connecting to the server --db names")
}

//! TEMPORARY: a stand-in for `crate::store::DbLocation` and `Store::open(impl Into<DbLocation>)`
//! until the PostgreSQL store (issue 14) lands; removed on the rebase onto it.

use std::path::PathBuf;

use crate::store::Store;

#[derive(Debug, Clone)]
pub enum DbLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbLocation {
    pub fn parse(s: &str) -> DbLocation {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            DbLocation::Postgres(s.to_string())
        } else {
            DbLocation::Sqlite(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for DbLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbLocation::Sqlite(p) => write!(f, "{}", p.display()),
            DbLocation::Postgres(u) => match reqwest::Url::parse(u) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("****"));
                    write!(f, "{url}")
                }
                _ => write!(f, "{u}"),
            },
        }
    }
}

pub async fn open_store(location: &DbLocation) -> anyhow::Result<Store> {
    match location {
        DbLocation::Sqlite(p) => Ok(Store::open(p).await?),
        DbLocation::Postgres(_) => anyhow::bail!("the PostgreSQL store is not here yet"),
    }
}

//! Where the store lives: a SQLite file, or a PostgreSQL database given by URL.

use std::fmt;
use std::path::{Path, PathBuf};

/// The `--db` of `serve`, `db` and `bench`: a `postgres://` (or `postgresql://`) URL is a
/// PostgreSQL database, anything else the path of a SQLite file.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbLocation {
    pub fn parse(s: &str) -> Result<DbLocation, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty: give a SQLite file or a postgres:// URL".into());
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return url::Url::parse(s)
                .map(|_| DbLocation::Postgres(s.to_string()))
                .map_err(|e| format!("is not a valid PostgreSQL URL ({e})"));
        }
        if lower.contains("://") {
            return Err(
                "names a database Capstan does not know: give a SQLite file or a postgres:// URL"
                    .into(),
            );
        }
        Ok(DbLocation::Sqlite(PathBuf::from(s)))
    }

    /// The SQLite file, if the store is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            DbLocation::Sqlite(p) => Some(p),
            DbLocation::Postgres(_) => None,
        }
    }
}

impl std::str::FromStr for DbLocation {
    type Err = String;
    fn from_str(s: &str) -> Result<DbLocation, String> {
        DbLocation::parse(s)
    }
}

impl From<&Path> for DbLocation {
    fn from(p: &Path) -> DbLocation {
        DbLocation::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for DbLocation {
    fn from(p: PathBuf) -> DbLocation {
        DbLocation::Sqlite(p)
    }
}

impl From<&PathBuf> for DbLocation {
    fn from(p: &PathBuf) -> DbLocation {
        DbLocation::Sqlite(p.clone())
    }
}

impl From<&DbLocation> for DbLocation {
    fn from(l: &DbLocation) -> DbLocation {
        l.clone()
    }
}

/// Shows the file, or the URL without its password (and without query parameters, where
/// a password may also be given).
impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(p) => write!(f, "{}", p.display()),
            DbLocation::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("redacted"));
                    }
                    u.set_query(None);
                    write!(f, "{u}")
                }
                Err(_) => f.write_str("postgres://(unreadable URL)"),
            },
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbLocation({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::DbLocation;

    #[test]
    fn urls_are_postgres_and_the_rest_files() {
        assert_eq!(
            DbLocation::parse("capstan.db").unwrap(),
            DbLocation::Sqlite("capstan.db".into())
        );
        assert!(matches!(
            DbLocation::parse("postgres://u:p@db:5432/capstan").unwrap(),
            DbLocation::Postgres(_)
        ));
        assert!(matches!(
            DbLocation::parse("postgresql://db/capstan").unwrap(),
            DbLocation::Postgres(_)
        ));
        assert!(
            DbLocation::parse("mysql://db/capstan")
                .unwrap_err()
                .contains("does not know")
        );
        assert!(DbLocation::parse(" ").unwrap_err().contains("empty"));
    }

    #[test]
    fn the_password_is_never_shown() {
        let l = DbLocation::parse(
            "postgres://capstan:s3cret@db:5432/capstan?password=s3cret&sslmode=require",
        )
        .unwrap();
        let shown = format!("{l} {l:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db:5432/capstan"), "{shown}");
    }
}

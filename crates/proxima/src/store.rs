//! The database: virtual keys, teams and the usage ledger, on SQLite (the embedded default) or
//! PostgreSQL (shared by replicas), with the same SQL and the same behaviour on both.
//!
//! Nothing here is on the request path: keys and teams are read into memory by
//! [`crate::policy::directory`], and usage records are written in batches by
//! [`crate::usage::ledger`].
//!
//! Portable SQL: `$N` parameters (SQLite reads them too), integers as `BIGINT`, money as whole
//! nano-dollars, times as epoch milliseconds, lists and maps as JSON text. Sums are cast back
//! to `BIGINT` because PostgreSQL widens them to `NUMERIC`.

/// A statement assembled with `format!` from constant text and `$N` placeholders only: every
/// value is bound, never spliced in.
macro_rules! sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

mod keys;
mod ledger;
mod migrations;
mod teams;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::AnyPool;

use crate::error::{Error, ErrorKind, Result};

pub use keys::{hex, secret_digest, KeyPatch, KeyRecord, NewKey};
pub use ledger::{ledger_id, GroupBy, LedgerRow, LogFilter, LogPage, SpendColumn, UsageGroup};
pub use teams::{TeamPatch, TeamRecord};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// On a SQLite file, one native connection for the ledger's batch inserts: it binds the
    /// rows' shared strings as they are, where the `Any` driver copies every value twice.
    ledger_pool: Option<SqlitePool>,
}

impl Store {
    /// Connects to `url` and applies the migrations it has not seen yet.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url))
        } else {
            (Backend::Postgres, url.to_owned())
        };
        let memory = backend == Backend::Sqlite && url.contains(":memory:");
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            // An in-memory SQLite database lives as long as its one connection.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(u32::from(memory))
            .idle_timeout((!memory).then(|| Duration::from_secs(300)))
            .max_lifetime((!memory).then(|| Duration::from_secs(1800)));
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets the report queries read while the ledger writes.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await.map_err(open_error)?;
        let ledger_pool = if backend == Backend::Sqlite && !memory {
            Some(sqlite_ledger_pool(&url).await?)
        } else {
            None
        };
        Ok(Store {
            pool,
            backend,
            ledger_pool,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        migrations::apply(self).await
    }

    /// Closes every connection.
    pub async fn close(&self) {
        if let Some(ledger) = &self.ledger_pool {
            ledger.close().await;
        }
        self.pool.close().await;
    }
}

/// The ledger writer's own connection to the SQLite file at `url`, set up as the shared pool's.
async fn sqlite_ledger_pool(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(open_error)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(open_error)
}

/// `sqlite://FILE` as sqlx wants it: created when missing.
fn sqlite_url(url: &str) -> String {
    if url.contains(":memory:") || url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    }
}

/// A database error as users see it: what failed, never a connection string.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => format!("connection failed: {io}"),
        sqlx::Error::PoolTimedOut => "no connection within 5s: is the database running?".into(),
        sqlx::Error::PoolClosed => "the connection pool is closed".into(),
        sqlx::Error::Configuration(c) => format!("bad database URL: {c}"),
        other => other.to_string(),
    }
}

fn open_error(e: sqlx::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("cannot open the database: {}", describe(&e)),
    )
}

/// Every database failure is the gateway's: 503 `Unavailable` with what failed.
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("database error: {}", describe(&e)),
    )
}

/// A JSON text column, read back.
fn json_column<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// Reads column `name` of `row`.
fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(db_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod testing {
    //! Stores for tests: a fresh SQLite file, or a fresh schema in the local PostgreSQL.

    use super::Store;

    /// The PostgreSQL the store tests use (trust auth); `PROXIMA_TEST_POSTGRES` overrides.
    pub fn postgres_base() -> String {
        std::env::var("PROXIMA_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    pub async fn sqlite() -> Store {
        let dir = std::env::temp_dir().join(format!("proxima-store-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        Store::open(&format!("sqlite://{}", dir.join("test.db").display()))
            .await
            .unwrap()
    }

    /// A store in a schema of its own, so tests running at once never see each other's rows.
    pub async fn postgres() -> Store {
        let schema = format!("proxima_test_{:016x}", fastrand::u64(..));
        let admin = Store::connect(&postgres_base()).await.unwrap();
        sqlx::query(sql!("CREATE SCHEMA {schema}"))
            .execute(&admin.pool)
            .await
            .unwrap();
        admin.close().await;
        Store::open(&format!(
            "{}?options=-c%20search_path%3D{schema}",
            postgres_base()
        ))
        .await
        .unwrap()
    }

    /// Runs the same test body against both databases.
    macro_rules! on_both {
        ($name:ident, $body:expr) => {
            mod $name {
                use super::*;
                #[tokio::test]
                async fn sqlite() {
                    let f = $body;
                    f($crate::store::testing::sqlite().await).await;
                }
                #[tokio::test]
                async fn postgres() {
                    let f = $body;
                    f($crate::store::testing::postgres().await).await;
                }
            }
        };
    }
    pub(crate) use on_both;
}

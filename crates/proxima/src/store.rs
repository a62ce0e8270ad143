//! The database: virtual keys, teams, the usage ledger and its daily rollups, the audit log,
//! the conversation store, uploaded files and prompt templates, on SQLite (the embedded
//! default) or PostgreSQL (shared by replicas), with the same behaviour on both.
//!
//! Nothing here is on the request path: keys and teams are read into memory by
//! [`crate::policy::directory`], and usage records are written in batches by
//! [`crate::usage::ledger`].
//!
//! Each database has its native pool (`Pool`); a query whose text is the same on both is
//! written once and run on either through `on_pool!`, and only what differs — the schema
//! (`store/migrations/<backend>/`), placeholders of the ledger's batch inserts — is written
//! per backend. Portable SQL: `$N` parameters (SQLite reads them too), integers as `BIGINT`,
//! money as whole nano-dollars, times as epoch milliseconds, lists and maps as JSON text. Sums
//! are cast back to `BIGINT` because PostgreSQL widens them to `NUMERIC`.

/// A statement assembled with `format!` from constant text and `$N` placeholders only: every
/// value is bound, never spliced in.
macro_rules! sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

/// Runs `$body` with `$pool` bound to the store's native pool (`&SqlitePool` or `&PgPool`):
/// a query written once, compiled for each database.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite { pool: $pool, .. } => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// A tenant's row by id: runs `$sql` (`$1` the id, `$2` the owner) on `$store` and reads the
/// row it finds, if any, with `$read`. Every owner-checked lookup is written this way.
macro_rules! fetch_owned {
    ($store:expr, $sql:expr, $id:expr, $owner:expr, $read:expr) => {
        on_pool!($store, |pool| {
            let row = sqlx::query($sql)
                .bind($id)
                .bind($owner)
                .fetch_optional(pool)
                .await
                .map_err($crate::store::db_error)?;
            row.as_ref().map($read).transpose()
        })
    };
}

/// A [`Query`] as an sqlx query with its parameters bound, for whichever database runs it.
macro_rules! bound_query {
    ($query:expr) => {{
        let $crate::store::Query { sql, params, .. } = $query;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for param in params {
            query = match param {
                $crate::store::Param::Text(text) => query.bind(text),
                $crate::store::Param::Int(int) => query.bind(int),
            };
        }
        query
    }};
}

/// Runs a [`Query`] on `$store` and reads every row it returns with `$read`.
macro_rules! fetch_query {
    ($store:expr, $query:expr, $read:expr) => {{
        let query = $query;
        on_pool!($store, |pool| {
            let rows = bound_query!(query)
                .fetch_all(pool)
                .await
                .map_err($crate::store::db_error)?;
            rows.iter().map($read).collect::<Result<Vec<_>>>()
        })
    }};
}

mod audit;
mod conversations;
mod files;
mod keys;
mod ledger;
mod ledger_writer;
mod migrations;
mod prompts;
mod rollups;
mod teams;
mod usage_series;
mod vector_stores;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous,
};

use crate::error::{Error, ErrorKind, Result};

pub use audit::{AuditEntry, AuditFilter};
pub use conversations::{
    ConversationRecord, ItemRecord, NewItem, Order, Postings, ResponseRecord, TurnRead,
    TurnSnapshot, POSTINGS_PER_TERM,
};
pub use files::FileRecord;
pub use keys::{hex, secret_digest, KeyPatch, KeyRecord, NewKey};
pub use ledger::{ledger_id, GroupBy, LedgerRow, LogFilter, LogPage, SpendColumn, UsageGroup};
pub use prompts::{NewPrompt, PromptRecord};
pub use rollups::{PurgeLock, DAY_MS};
pub use teams::{TeamPatch, TeamRecord};
pub use usage_series::{SeriesFilter, UsageBucket};
pub use vector_stores::{
    ChunkKey, ChunkRow, Chunking, FileCounts, FileListing, IndexedFile, NewChunk, StoreFileRecord,
    VectorStoreRecord,
};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The VALUES rows of a multi-row INSERT: `rows` rows of `width` parameters, bound in the
/// order they appear. PostgreSQL numbers them (`$1`, `$2`, …). On SQLite they are anonymous
/// (`?`): SQLite keeps a numbered parameter's name in a list that it scans whenever it is
/// asked for a name, and sqlx asks for every parameter's at every run, so a statement of n
/// numbered parameters cost n² steps (hundreds of thousands for an index insert).
pub(crate) fn value_rows(backend: Backend, rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            n += 1;
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// The store's connections, native to its database.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite {
        pool: SqlitePool,
        /// On a SQLite file, one connection of its own for the ledger's batch inserts, on its
        /// own thread ([`ledger_writer`]): its few insert statements stay prepared on it, and
        /// the writes queue on it in order instead of taking turns at the file's write lock
        /// with the pool's connections.
        ledger: Option<ledger_writer::LedgerWriter>,
    },
    Postgres(PgPool),
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
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
        let pool = if url.starts_with("sqlite:") {
            let url = sqlite_url(url);
            let options = sqlite_options(&url)?;
            let memory = url.contains(":memory:");
            let pool = pool_options(memory)
                .connect_with(options.clone())
                .await
                .map_err(open_error)?;
            let ledger = if memory {
                None
            } else {
                Some(ledger_writer::LedgerWriter::open(options.get_filename()).await?)
            };
            Pool::Sqlite { pool, ledger }
        } else {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            Pool::Postgres(
                pool_options(false)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?,
            )
        };
        Ok(Store { pool })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite { .. } => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        migrations::apply(self).await
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { pool, ledger } => {
                if let Some(ledger) = ledger {
                    ledger.close().await;
                }
                pool.close().await;
            }
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A query being put together, with its parameters. Placeholders must appear in the text in
/// the order they are bound: SQLite gets anonymous `?` (it looks named ones up by a linear
/// scan, which made a batch of thousands of parameters quadratic), PostgreSQL `$N`.
pub(crate) struct Query {
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
    backend: Backend,
}

/// A parameter of a [`Query`], bound when the query runs on its database.
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

impl Query {
    pub(crate) fn new(backend: Backend, sql: &str) -> Query {
        Query {
            sql: sql.to_owned(),
            params: Vec::new(),
            backend,
        }
    }

    /// Binds `value` and returns its placeholder.
    pub(crate) fn bind(&mut self, value: Param) -> String {
        self.params.push(value);
        match self.backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${}", self.params.len()),
        }
    }

    pub(crate) fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// Ends the query of a newest-first page: rows older than the cursor `after` (the `next`
    /// of a previous page: an id beginning with `prefix`), by id, one more than `limit`.
    pub(crate) fn page(&mut self, after: Option<&str>, prefix: &str, limit: i64) -> Result<()> {
        if let Some(after) = after {
            if !after.starts_with(prefix) {
                return Err(Error::invalid_request(
                    "`after` must be the `next` value of a previous page",
                )
                .with_param("after"));
            }
            let p = self.bind(Param::Text(after.to_owned()));
            self.push(&format!(" AND id < {p}"));
        }
        let p_limit = self.bind(Param::Int(limit + 1));
        self.push(&format!(" ORDER BY id DESC LIMIT {p_limit}"));
        Ok(())
    }
}

/// A page of a list read newest first, and where the next (older) page starts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Rows a page asks for: `limit` (50 unless given), within 1 to 1,000.
    fn limit(limit: Option<i64>) -> i64 {
        limit.unwrap_or(50).clamp(1, 1000)
    }

    /// The page of `rows`, read `limit + 1` of them so that one more tells another page
    /// follows; `next` is then the id (`id`) of the page's last row.
    fn cut(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more.then(|| rows.last().map(id)).flatten();
        Page { data: rows, next }
    }
}

/// How long a pooled connection may sit idle and still be handed out untested: long enough
/// for the statements of one request, too short for a database restart to go unnoticed.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// The pools' settings on either database.
fn pool_options<DB: sqlx::Database>(memory: bool) -> PoolOptions<DB> {
    PoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        // An in-memory SQLite database lives as long as its one connection.
        .max_connections(if memory { 1 } else { 8 })
        .min_connections(u32::from(memory))
        .idle_timeout((!memory).then(|| Duration::from_secs(300)))
        .max_lifetime((!memory).then(|| Duration::from_secs(1800)))
        // sqlx pings a connection when it is handed out and again when it comes back: by
        // default every statement waits for one more round trip (to PostgreSQL, or to the
        // SQLite connection's worker thread). The ping on return already drops a connection a
        // failed statement left broken, so only one idle long enough for the server to have
        // dropped it is pinged before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > TRUSTED_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Every SQLite connection's settings.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(open_error)?
        // WAL lets the report queries read while the ledger writes.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // 8 MiB of page cache a connection (SQLite's default is 2 MiB): the conversation
        // store's indexes of long histories stay in memory, and a turn reads no disk.
        .pragma("cache_size", "-8192")
        // Reads of the first GiB through a memory map, not a system call and a copy a page:
        // recall's index of a 100,000-item history (300 MB) outgrows the page cache, and its
        // reads land on random pages (a turn's recall took half the time it did without).
        .pragma("mmap_size", "1073741824"))
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

impl Store {
    /// Deletes the row of `table` with this `id` and `owner`; `false` when there is none.
    async fn delete_owned(&self, table: &'static str, id: &str, owner: &str) -> Result<bool> {
        let sql = sql!("DELETE FROM {table} WHERE id = $1 AND owner = $2");
        let deleted = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(deleted == 1)
    }
}

/// A JSON text column, read back.
fn json_column<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// A column type both databases decode, so that one row reader serves both.
trait Column:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// A result row of either database.
trait Row {
    /// Reads column `name`.
    fn column<T: Column>(&self, name: &str) -> Result<T>;
}

impl Row for SqliteRow {
    fn column<T: Column>(&self, name: &str) -> Result<T> {
        sqlx::Row::try_get(self, name).map_err(db_error)
    }
}

impl Row for PgRow {
    fn column<T: Column>(&self, name: &str) -> Result<T> {
        sqlx::Row::try_get(self, name).map_err(db_error)
    }
}

/// Reads column `name` of `row`.
fn col<T: Column>(row: &impl Row, name: &str) -> Result<T> {
    row.column(name)
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

    /// The URL of a SQLite file not made yet.
    pub fn sqlite_url() -> String {
        let dir = std::env::temp_dir().join(format!("proxima-store-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}", dir.join("test.db").display())
    }

    /// The URL of an empty schema of its own, so tests running at once never see each
    /// other's rows.
    pub async fn postgres_url() -> String {
        let schema = format!("proxima_test_{:016x}", fastrand::u64(..));
        let admin = Store::connect(&postgres_base()).await.unwrap();
        let create = sql!("CREATE SCHEMA {schema}");
        on_pool!(admin, |pool| sqlx::query(create)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
        admin.close().await;
        format!("{}?options=-c%20search_path%3D{schema}", postgres_base())
    }

    pub async fn sqlite() -> Store {
        Store::open(&sqlite_url()).await.unwrap()
    }

    pub async fn postgres() -> Store {
        Store::open(&postgres_url().await).await.unwrap()
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

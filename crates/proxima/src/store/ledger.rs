//! The usage ledger table: one row per request, written in batches; spend lookups for budgets;
//! the usage report and the searchable call log.
//!
//! Rows carry their own unique id and are inserted with `ON CONFLICT DO NOTHING`, so a batch
//! written again after a failure whose outcome was unknown (or replayed from the spill file)
//! never counts twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::rollups::first_day_from;
use super::{col, db_error, value_rows, Backend, Page, Param, Pool, Query, Row, Store};
use crate::clock;
use crate::error::{Error, Result};
use crate::pricing::{self, Nanos};

/// One request, as the ledger keeps it. Text is shared (`Arc<str>`): a row is built from the
/// request's own strings, and binding it to an insert copies none of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub id: Arc<str>,
    pub request_id: Arc<str>,
    /// When the request arrived, epoch ms.
    pub at: i64,
    pub key_id: Option<Arc<str>>,
    pub key_name: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    /// The end user the client named (`user` in the request body).
    pub user: Option<Arc<str>>,
    pub model: Arc<str>,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<Arc<str>>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cost_nanos: Nanos,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    /// The HTTP status the client got (499: the client went away first).
    pub status: i64,
    /// The SPEC error code when it failed.
    pub error_code: Option<Arc<str>>,
    /// The response cache's verdict for a model with caching on: `hit`, `semantic-hit`, `miss`
    /// or `bypass`.
    pub cache: Option<Arc<str>>,
    /// A cache hit: what the stored answer cost when it was made, the spend it saved.
    #[serde(default)]
    pub saved_nanos: Nanos,
    pub attempts: i64,
    pub stream: bool,
    /// Tags from `x-proxima-metadata`, as JSON text.
    pub metadata: Option<Arc<str>>,
}

/// A new row's id: its time as 12 hex digits of epoch ms, so that ids sort by time (rows are
/// appended at the end of the primary key, and time ranges are id ranges: the table needs no
/// other index), then 80 bits that make it unique ([`time_id`]).
pub fn ledger_id(at: i64) -> Arc<str> {
    time_id(*b"u_", at)
}

/// An id beginning with `prefix` that sorts by time, made like [`ledger_id`]'s. After the time
/// come 40 random bits drawn once per process, then 40 bits of a sequence the process counts
/// up: ids one process makes in the same millisecond sort in the order it made them (two quick
/// admin actions stay in order in the audit log), and two processes' ids differ in their
/// random bits.
pub(super) fn time_id(prefix: [u8; 2], at: i64) -> Arc<str> {
    static PROCESS: OnceLock<u128> = OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    const LOW_40: u64 = (1 << 40) - 1;
    let process = *PROCESS.get_or_init(|| fastrand::u128(..) >> 88);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) & LOW_40;
    // Written by hand: `format!` of a u128 was a tenth of what closing a request costs.
    let mut id = [0u8; 2 + 12 + 20];
    id[..2].copy_from_slice(&prefix);
    let at = at.clamp(0, 0xffff_ffff_ffff) as u128;
    put_hex(&mut id[2..14], at);
    put_hex(&mut id[14..], (process << 40) | u128::from(sequence));
    Arc::from(std::str::from_utf8(&id).unwrap_or_default())
}

/// Writes the low `out.len()` hex digits of `value` into `out`, most significant first.
fn put_hex(out: &mut [u8], mut value: u128) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// The smallest id a row at or after `at` (epoch ms) can have.
pub(super) fn id_floor(at: i64) -> String {
    format!("u_{:012x}", at.clamp(0, 0xffff_ffff_ffff))
}

const COLUMNS: &str = "id, request_id, at, key_id, key_name, team, end_user, model, provider, \
    upstream_model, input_tokens, output_tokens, cached_tokens, cost_nanos, latency_ms, ttft_ms, \
    status, error_code, cache, saved_nanos, attempts, stream, metadata";
const COLUMN_COUNT: usize = 23;
/// Rows per INSERT statement: a batch is written in statements of these sizes, largest first.
pub(super) const INSERT_SIZES: [usize; 4] = [64, 16, 4, 1];

fn row_from(row: &impl Row) -> Result<LedgerRow> {
    Ok(LedgerRow {
        id: col::<String>(row, "id")?.into(),
        request_id: col::<String>(row, "request_id")?.into(),
        at: col(row, "at")?,
        key_id: col::<Option<String>>(row, "key_id")?.map(Into::into),
        key_name: col::<Option<String>>(row, "key_name")?.map(Into::into),
        team: col::<Option<String>>(row, "team")?.map(Into::into),
        user: col::<Option<String>>(row, "end_user")?.map(Into::into),
        model: col::<String>(row, "model")?.into(),
        provider: col::<Option<String>>(row, "provider")?.map(Into::into),
        upstream_model: col::<Option<String>>(row, "upstream_model")?.map(Into::into),
        input_tokens: col(row, "input_tokens")?,
        output_tokens: col(row, "output_tokens")?,
        cached_tokens: col(row, "cached_tokens")?,
        cost_nanos: col(row, "cost_nanos")?,
        latency_ms: col(row, "latency_ms")?,
        ttft_ms: col(row, "ttft_ms")?,
        status: col(row, "status")?,
        error_code: col::<Option<String>>(row, "error_code")?.map(Into::into),
        cache: col::<Option<String>>(row, "cache")?.map(Into::into),
        saved_nanos: col(row, "saved_nanos")?,
        attempts: col(row, "attempts")?,
        stream: col::<i64>(row, "stream")? != 0,
        metadata: col::<Option<String>>(row, "metadata")?.map(Into::into),
    })
}

/// A line of the usage report grouped `by`, read from its row.
fn group_from(row: &impl Row, by: GroupBy) -> Result<UsageGroup> {
    let group = if by == GroupBy::Day {
        col::<Option<i64>>(row, "grp")?.map(|d| clock::day(d * 86_400_000))
    } else {
        col::<Option<String>>(row, "grp")?
    };
    let cost_nanos: i64 = col(row, "cost_nanos")?;
    let saved_nanos: i64 = col(row, "saved_nanos")?;
    Ok(UsageGroup {
        group,
        name: col(row, "name")?,
        requests: col(row, "requests")?,
        errors: col(row, "errors")?,
        input_tokens: col(row, "input_tokens")?,
        output_tokens: col(row, "output_tokens")?,
        cached_tokens: col(row, "cached_tokens")?,
        cost_usd: pricing::usd(cost_nanos),
        cost_nanos,
        cache_hits: col(row, "cache_hits")?,
        saved_usd: pricing::usd(saved_nanos),
        saved_nanos,
    })
}

/// What the usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    Team,
    Model,
    Day,
}

/// One line of the usage report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The key id, team, public model or UTC day (`2026-11-27`); `null` for requests without
    /// one (no team, say).
    pub group: Option<String>,
    /// The key's name, when grouping by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    #[serde(skip)]
    pub cost_nanos: Nanos,
    /// Requests answered from the response cache (exact or semantic), successfully.
    pub cache_hits: i64,
    /// What those answers cost when they were made: the spend the cache saved.
    pub saved_usd: f64,
    #[serde(skip)]
    pub saved_nanos: Nanos,
}

/// Filters of `GET /admin/logs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    pub key: Option<String>,
    pub team: Option<String>,
    /// A model name, or a prefix of one ending in `*`: `mcp:*` is every MCP tool call.
    pub model: Option<String>,
    /// An HTTP status (`429`), or `ok` / `error`.
    pub status: Option<String>,
    pub request_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// A page of the call log.
pub type LogPage = Page<LedgerRow>;

/// The INSERT of `INSERT_SIZES[index]` rows on `backend`, built once.
pub(super) fn insert_sql(backend: Backend, index: usize) -> &'static str {
    static SQL: OnceLock<[[String; INSERT_SIZES.len()]; 2]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        [Backend::Sqlite, Backend::Postgres].map(|backend| {
            INSERT_SIZES.map(|rows| {
                format!(
                    "INSERT INTO usage_ledger ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
                    value_rows(backend, rows, COLUMN_COUNT)
                )
            })
        })
    });
    let by_backend = match backend {
        Backend::Sqlite => &all[0],
        Backend::Postgres => &all[1],
    };
    &by_backend[index.min(INSERT_SIZES.len() - 1)]
}

/// One value of a ledger row, as bound to an insert.
pub(super) enum Value<'a> {
    Text(Option<&'a Arc<str>>),
    Int(Option<i64>),
}

/// A row's values in the order of [`COLUMNS`].
pub(super) fn values(r: &LedgerRow) -> [Value<'_>; COLUMN_COUNT] {
    use Value::{Int, Text};
    [
        Text(Some(&r.id)),
        Text(Some(&r.request_id)),
        Int(Some(r.at)),
        Text(r.key_id.as_ref()),
        Text(r.key_name.as_ref()),
        Text(r.team.as_ref()),
        Text(r.user.as_ref()),
        Text(Some(&r.model)),
        Text(r.provider.as_ref()),
        Text(r.upstream_model.as_ref()),
        Int(Some(r.input_tokens)),
        Int(Some(r.output_tokens)),
        Int(Some(r.cached_tokens)),
        Int(Some(r.cost_nanos)),
        Int(Some(r.latency_ms)),
        Int(r.ttft_ms),
        Int(Some(r.status)),
        Text(r.error_code.as_ref()),
        Text(r.cache.as_ref()),
        Int(Some(r.saved_nanos)),
        Int(Some(r.attempts)),
        Int(Some(i64::from(r.stream))),
        Text(r.metadata.as_ref()),
    ]
}

/// `rows` cut into statements of the fixed sizes (largest first), each with its size's index:
/// the databases keep each statement prepared instead of parsing a new text per batch size.
pub(super) fn insert_chunks(rows: &[LedgerRow]) -> impl Iterator<Item = (usize, &[LedgerRow])> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let (index, size) = INSERT_SIZES
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, n)| n <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some((index, chunk))
    })
}

/// The parameters of an insert of `chunk`. Shared strings are bound as they are, without a
/// copy.
fn bind_rows<A>(chunk: &[LedgerRow]) -> Result<A>
where
    A: sqlx::Arguments,
    Option<Arc<str>>: for<'q> sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
    Option<i64>: for<'q> sqlx::Encode<'q, A::Database> + sqlx::Type<A::Database>,
{
    let mut args = A::default();
    args.reserve(chunk.len() * COLUMN_COUNT, 0);
    for value in chunk.iter().flat_map(values) {
        match value {
            Value::Text(value) => args.add(value.cloned()),
            Value::Int(value) => args.add(value),
        }
        .map_err(bind_error)?;
    }
    Ok(args)
}

fn bind_error(e: sqlx::error::BoxDynError) -> Error {
    Error::internal(format!("cannot bind a query parameter: {e}"))
}

/// Writes `rows` to `pool`, a `backend` database, in one transaction: one commit, and a batch
/// is in or out as a whole.
async fn insert_batch<DB>(pool: &sqlx::Pool<DB>, backend: Backend, rows: &[LedgerRow]) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    Option<Arc<str>>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut tx = pool.begin().await.map_err(db_error)?;
    for (index, chunk) in insert_chunks(rows) {
        sqlx::query_with(
            insert_sql(backend, index),
            bind_rows::<DB::Arguments>(chunk)?,
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}

impl Store {
    /// Writes `rows` in one transaction; rows already there are skipped.
    pub async fn insert_usage(&self, rows: &[LedgerRow]) -> Result<()> {
        match &self.pool {
            Pool::Sqlite {
                ledger: Some(writer),
                ..
            } => writer.insert(rows).await,
            Pool::Sqlite { pool, ledger: None } => insert_batch(pool, Backend::Sqlite, rows).await,
            Pool::Postgres(pool) => insert_batch(pool, Backend::Postgres, rows).await,
        }
    }

    /// What a key, team or model spent since `from` (epoch ms): seeds budget counters.
    pub async fn spent_since(&self, column: SpendColumn, name: &str, from: i64) -> Result<Nanos> {
        let column = match column {
            SpendColumn::Key => "key_id",
            SpendColumn::Team => "team",
            SpendColumn::Model => "model",
        };
        // Raw rows, and the days purged into rollups that begin in the period (budget periods
        // begin at UTC midnight, so no day is split).
        let sql = sql!(
            "SELECT CAST(COALESCE((SELECT SUM(cost_nanos) FROM usage_ledger \
             WHERE {column} = $1 AND id >= $2), 0) + COALESCE((SELECT SUM(cost_nanos) \
             FROM usage_daily WHERE {column} = $1 AND day >= $3), 0) AS BIGINT) AS spent"
        );
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(name)
                .bind(id_floor(from))
                .bind(first_day_from(from))
                .fetch_one(pool)
                .await
                .map_err(db_error)?;
            col(&row, "spent")
        })
    }

    /// Requests, errors, tokens and cost between `from` and `to` (epoch ms), grouped: from the
    /// raw rows in the range and the daily rollups of purged days that begin in it.
    pub async fn usage_report(&self, by: GroupBy, from: i64, to: i64) -> Result<Vec<UsageGroup>> {
        // What each line is grouped by, in the raw rows and in the rollups (where '' is none).
        let (raw_group, rollup_group) = match by {
            GroupBy::Key => ("key_id", "NULLIF(key_id, '')"),
            GroupBy::Team => ("team", "NULLIF(team, '')"),
            GroupBy::Model => ("model", "model"),
            // Whole UTC days since the epoch; named as dates below.
            GroupBy::Day => ("CAST(at / 86400000 AS BIGINT)", "day"),
        };
        let (raw_name, rollup_name) = if by == GroupBy::Key {
            ("MAX(key_name)", "MAX(NULLIF(key_name, ''))")
        } else {
            ("NULL", "NULL")
        };
        let sql = sql!(
            "SELECT grp, MAX(name) AS name, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(errors) AS BIGINT) AS errors, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos, \
             CAST(SUM(cache_hits) AS BIGINT) AS cache_hits, \
             CAST(SUM(saved_nanos) AS BIGINT) AS saved_nanos FROM (\
             SELECT {raw_group} AS grp, {raw_name} AS name, COUNT(*) AS requests, \
             SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, \
             SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
             SUM(cached_tokens) AS cached_tokens, SUM(cost_nanos) AS cost_nanos, \
             SUM(CASE WHEN cache IN ('hit', 'semantic-hit') AND status < 400 THEN 1 ELSE 0 END) AS cache_hits, \
             SUM(saved_nanos) AS saved_nanos \
             FROM usage_ledger WHERE id >= $1 AND id < $2 GROUP BY grp \
             UNION ALL \
             SELECT {rollup_group} AS grp, {rollup_name} AS name, SUM(requests) AS requests, \
             SUM(errors) AS errors, SUM(input_tokens) AS input_tokens, \
             SUM(output_tokens) AS output_tokens, SUM(cached_tokens) AS cached_tokens, \
             SUM(cost_nanos) AS cost_nanos, SUM(cache_hits) AS cache_hits, \
             SUM(saved_nanos) AS saved_nanos \
             FROM usage_daily WHERE day >= $3 AND day < $4 GROUP BY grp\
             ) AS parts GROUP BY grp ORDER BY cost_nanos DESC, requests DESC"
        );
        let mut groups = on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(id_floor(from))
                .bind(id_floor(to))
                .bind(first_day_from(from))
                .bind(first_day_from(to))
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|row| group_from(row, by))
                .collect::<Result<Vec<_>>>()
        })?;
        if by == GroupBy::Day {
            groups.sort_by(|a, b| a.group.cmp(&b.group));
        }
        Ok(groups)
    }

    /// The call log, newest first, filtered, one page at a time.
    pub async fn logs(&self, filter: &LogFilter) -> Result<LogPage> {
        let limit = Page::<LedgerRow>::limit(filter.limit);
        let mut q = Query::new(
            self.backend(),
            &format!("SELECT {COLUMNS} FROM usage_ledger WHERE 1 = 1"),
        );
        let equal = |q: &mut Query, column: &str, value: &Option<String>| -> Result<()> {
            if let Some(value) = value {
                let p = q.bind(Param::Text(value.clone()));
                q.push(&format!(" AND {column} = {p}"));
            }
            Ok(())
        };
        equal(&mut q, "key_id", &filter.key)?;
        equal(&mut q, "team", &filter.team)?;
        match filter.model.as_deref().map(|m| (m, m.strip_suffix('*'))) {
            Some((_, Some(prefix))) => {
                // `substr` rather than `LIKE`: exact on both databases, with no wildcards
                // inside the prefix to escape. The length is a number made here.
                let p = q.bind(Param::Text(prefix.to_owned()));
                let length = prefix.chars().count();
                q.push(&format!(" AND substr(model, 1, {length}) = {p}"));
            }
            _ => equal(&mut q, "model", &filter.model)?,
        }
        equal(&mut q, "request_id", &filter.request_id)?;
        match filter.status.as_deref() {
            None => {}
            Some("ok") => q.push(" AND status < 400"),
            Some("error") => q.push(" AND status >= 400"),
            Some(code) => {
                let status: i64 = code.parse().map_err(|_| {
                    Error::invalid_request(format!(
                        "status `{code}` is not an HTTP status, `ok` or `error`"
                    ))
                    .with_param("status")
                })?;
                let p = q.bind(Param::Int(status));
                q.push(&format!(" AND status = {p}"));
            }
        }
        if let Some(from) = filter.from {
            let p = q.bind(Param::Text(id_floor(from)));
            q.push(&format!(" AND id >= {p}"));
        }
        if let Some(to) = filter.to {
            let p = q.bind(Param::Text(id_floor(to)));
            q.push(&format!(" AND id < {p}"));
        }
        q.page(filter.after.as_deref(), "u_", limit)?;
        let rows = fetch_query!(self, q, row_from)?;
        Ok(Page::cut(rows, limit, |r| r.id.to_string()))
    }

    /// Every ledger row's count, for tests and the recovery check.
    pub async fn count_usage(&self) -> Result<i64> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_ledger")
                .fetch_one(pool)
                .await
                .map_err(db_error)?;
            col(&row, "n")
        })
    }
}

/// Which ledger column a spend lookup sums by.
#[derive(Debug, Clone, Copy)]
pub enum SpendColumn {
    Key,
    Team,
    Model,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(super) mod tests {
    use super::super::testing::on_both;
    use super::*;

    pub fn row(i: i64, key: &str, team: Option<&str>, model: &str, status: i64) -> LedgerRow {
        LedgerRow {
            id: format!("{}{i:020x}", id_floor(1_795_773_600_000 + i * 1000)).into(),
            request_id: format!("req-{i}").into(),
            at: 1_795_773_600_000 + i * 1000,
            key_id: Some(key.into()),
            key_name: Some(format!("{key}-name").into()),
            team: team.map(Arc::from),
            user: None,
            model: model.into(),
            provider: Some("p".into()),
            upstream_model: Some("u".into()),
            input_tokens: 10,
            output_tokens: 5,
            cached_tokens: 0,
            cost_nanos: 1_500,
            latency_ms: 12,
            ttft_ms: None,
            status,
            error_code: (status >= 400).then(|| "upstream_error".into()),
            cache: None,
            saved_nanos: 0,
            attempts: 1,
            stream: false,
            metadata: Some(r#"{"app":"x"}"#.into()),
        }
    }

    #[test]
    fn ids_of_one_millisecond_sort_in_the_order_they_were_made() {
        let at = 1_795_773_600_000;
        let ids: Vec<Arc<str>> = (0..1000).map(|_| ledger_id(at)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{:?}", &ids[..4]);
        assert!(ids
            .iter()
            .all(|id| id.starts_with(&id_floor(at)) && id.len() == 34));
        // A later millisecond sorts after, whatever the sequence says.
        assert!(ledger_id(at - 1) < ids[0] && ledger_id(at + 1) > ids[999]);
    }

    /// On a SQLite file the ledger's own writer takes the batch (`ledger_writer`): a batch is
    /// one transaction across its statements, and a closed writer refuses.
    #[tokio::test]
    async fn a_sqlite_batch_that_fails_on_one_row_writes_none_of_them() {
        let store = crate::store::testing::sqlite().await;
        let Pool::Sqlite { pool, .. } = &store.pool else {
            panic!("a SQLite store");
        };
        // Rows 0..36 go in by earlier statements of the batch (16 + 16 + 4) before the last
        // one meets the refusal.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_ledger WHEN NEW.request_id = 'req-38' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(pool)
        .await
        .unwrap();
        let rows: Vec<LedgerRow> = (0..40).map(|i| row(i, "k", None, "fast", 200)).collect();
        let error = store.insert_usage(&rows).await.unwrap_err();
        assert!(
            error.message.contains("refused by the test"),
            "{}",
            error.message
        );
        assert_eq!(store.count_usage().await.unwrap(), 0);

        store.insert_usage(&rows[..38]).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 38);

        store.close().await;
        let error = store.insert_usage(&rows[39..]).await.unwrap_err();
        assert!(error.message.contains("closed"), "{}", error.message);
    }

    on_both!(ledger_writes_once_and_reports, |store: Store| async move {
        let rows: Vec<LedgerRow> = (0..30)
            .map(|i| {
                let key = if i % 3 == 0 { "k1" } else { "k2" };
                let team = (i % 2 == 0).then_some("t");
                row(
                    i,
                    key,
                    team,
                    if i < 20 { "fast" } else { "smart" },
                    if i == 7 { 502 } else { 200 },
                )
            })
            .collect();
        let mut rows = rows;
        rows[3].cache = Some("hit".into());
        rows[3].saved_nanos = 2_000;
        rows[4].cache = Some("miss".into());
        store.insert_usage(&rows).await.unwrap();
        // The same rows again (a retried batch) change nothing.
        store.insert_usage(&rows[..10]).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 30);

        let by_key = store.usage_report(GroupBy::Key, 0, i64::MAX).await.unwrap();
        let total: i64 = by_key.iter().map(|g| g.requests).sum();
        assert_eq!(total, 30);
        let k2 = by_key
            .iter()
            .find(|g| g.group.as_deref() == Some("k2"))
            .unwrap();
        assert_eq!((k2.requests, k2.errors, k2.input_tokens), (20, 1, 200));
        assert_eq!(k2.name.as_deref(), Some("k2-name"));
        assert_eq!(k2.cost_nanos, 30_000);
        let k1 = by_key
            .iter()
            .find(|g| g.group.as_deref() == Some("k1"))
            .unwrap();
        assert_eq!(
            (k1.cache_hits, k1.saved_nanos, k2.cache_hits),
            (1, 2_000, 0)
        );
        let by_team = store
            .usage_report(GroupBy::Team, 0, i64::MAX)
            .await
            .unwrap();
        assert!(by_team
            .iter()
            .any(|g| g.group.is_none() && g.requests == 15));
        let by_day = store.usage_report(GroupBy::Day, 0, i64::MAX).await.unwrap();
        assert_eq!(by_day.len(), 1);
        assert_eq!(by_day[0].group.as_deref(), Some("2026-11-27"));
        let window = store
            .usage_report(GroupBy::Model, 1_795_773_600_000 + 20_000, i64::MAX)
            .await
            .unwrap();
        assert_eq!(window.len(), 1);
        assert_eq!(window[0].group.as_deref(), Some("smart"));

        assert_eq!(
            store.spent_since(SpendColumn::Key, "k1", 0).await.unwrap(),
            10 * 1_500
        );
        assert_eq!(
            store
                .spent_since(SpendColumn::Team, "t", 1_795_773_600_000 + 10_000)
                .await
                .unwrap(),
            10 * 1_500
        );
        assert_eq!(
            store
                .spent_since(SpendColumn::Key, "nobody", 0)
                .await
                .unwrap(),
            0
        );

        // Pages walk the whole log newest first, each row once.
        let mut seen = Vec::new();
        let mut filter = LogFilter {
            limit: Some(7),
            ..LogFilter::default()
        };
        loop {
            let page = store.logs(&filter).await.unwrap();
            seen.extend(page.data.iter().map(|r| r.id.to_string()));
            match page.next {
                Some(next) => filter.after = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = rows.iter().rev().map(|r| r.id.to_string()).collect();
        assert_eq!(seen, expected);
        let errors = store
            .logs(&LogFilter {
                status: Some("error".into()),
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(errors.data.len(), 1);
        assert_eq!(errors.data[0], rows[7]);
        let filtered = store
            .logs(&LogFilter {
                key: Some("k1".into()),
                model: Some("smart".into()),
                status: Some("200".into()),
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(filtered.data.len(), 3);
        // A model ending in `*` is a prefix, taken as written (`_` is no wildcard).
        for (model, rows) in [("sm*", 10), ("fast*", 20), ("*", 30), ("_*", 0), ("fas", 0)] {
            let page = store
                .logs(&LogFilter {
                    model: Some(model.into()),
                    limit: Some(100),
                    ..LogFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(page.data.len(), rows, "{model}");
        }
        assert!(store
            .logs(&LogFilter {
                status: Some("bad".into()),
                ..LogFilter::default()
            })
            .await
            .is_err());
    });
}

//! Daily rollups of the usage ledger, for `[storage] log_retention`: the oldest raw rows are
//! moved into `usage_daily` (sums per UTC day, key, team, model and upstream) a small batch
//! at a time, by [`crate::usage::retention`].
//!
//! A batch is one short transaction: `DELETE ... RETURNING` takes the rows out and their sums
//! are added to the rollups before it commits, so each request is counted exactly once, raw
//! or rolled up, whatever runs at the same time — a ledger row written late for an old day is
//! simply moved by the next pass. Reports and budget lookups
//! ([`Store::usage_report`], [`Store::spent_since`]) read both tables.

use std::collections::BTreeMap;

use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use super::ledger::id_floor;
use super::{col, db_error, Backend, Param, Pool, Query, Row, Store};
use crate::clock::now_ms;
use crate::error::Result;

/// Milliseconds in a (UTC) day: rollups are per day since the epoch.
pub const DAY_MS: i64 = 86_400_000;

/// PostgreSQL's advisory lock held by the replica purging (any number, the same in every
/// release), with the schema's hash as its second half: replicas share a schema's tables,
/// and gateways on other schemas of the same database purge their own at the same time.
const PURGE_LOCK: i32 = 7165335;

/// Rollup rows per upsert statement (16 parameters each).
const UPSERT_ROWS: usize = 64;

/// The rows of a day that share every rollup column: '' for a column the raw row left empty.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    day: i64,
    key_id: String,
    key_name: String,
    team: String,
    model: String,
    provider: String,
    upstream_model: String,
}

#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    cost_nanos: i64,
    saved_nanos: i64,
    cache_hits: i64,
    latency_ms: i64,
}

/// Takes out the oldest rows before `$1` (an id floor), at most `$2` of them, with what the
/// rollups keep of each.
const TAKE_OLDEST: &str = "DELETE FROM usage_ledger WHERE id IN \
    (SELECT id FROM usage_ledger WHERE id < $1 ORDER BY id LIMIT $2) \
    RETURNING at, key_id, key_name, team, model, provider, upstream_model, input_tokens, \
    output_tokens, cached_tokens, cost_nanos, saved_nanos, latency_ms, status, cache";

/// Adds a taken ledger row to its group's sums.
fn add(sums: &mut BTreeMap<Group, Sums>, row: &impl Row) -> Result<()> {
    let text = |name: &str| -> Result<String> {
        Ok(col::<Option<String>>(row, name)?.unwrap_or_default())
    };
    let status: i64 = col(row, "status")?;
    let cache = col::<Option<String>>(row, "cache")?;
    let group = Group {
        day: col::<i64>(row, "at")?.div_euclid(DAY_MS),
        key_id: text("key_id")?,
        key_name: text("key_name")?,
        team: text("team")?,
        model: col(row, "model")?,
        provider: text("provider")?,
        upstream_model: text("upstream_model")?,
    };
    let s = sums.entry(group).or_default();
    s.requests += 1;
    s.errors += i64::from(status >= 400);
    s.input_tokens += col::<i64>(row, "input_tokens")?;
    s.output_tokens += col::<i64>(row, "output_tokens")?;
    s.cached_tokens += col::<i64>(row, "cached_tokens")?;
    s.cost_nanos += col::<i64>(row, "cost_nanos")?;
    s.saved_nanos += col::<i64>(row, "saved_nanos")?;
    s.cache_hits +=
        i64::from(status < 400 && matches!(cache.as_deref(), Some("hit" | "semantic-hit")));
    s.latency_ms += col::<i64>(row, "latency_ms")?;
    Ok(())
}

/// Statements adding `sums` to the rollups, [`UPSERT_ROWS`] groups each.
fn upserts(backend: Backend, sums: &BTreeMap<Group, Sums>) -> Vec<Query> {
    const SUMMED: [&str; 9] = [
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost_nanos",
        "saved_nanos",
        "cache_hits",
        "latency_ms",
    ];
    let entries: Vec<(&Group, &Sums)> = sums.iter().collect();
    let update = SUMMED
        .iter()
        .map(|c| format!("{c} = usage_daily.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    entries
        .chunks(UPSERT_ROWS)
        .map(|chunk| {
            let mut q = Query::new(
                backend,
                &format!(
                    "INSERT INTO usage_daily (day, key_id, key_name, team, model, provider, \
                     upstream_model, {}) VALUES ",
                    SUMMED.join(", ")
                ),
            );
            for (i, (g, s)) in chunk.iter().enumerate() {
                let texts = [
                    &g.key_id,
                    &g.key_name,
                    &g.team,
                    &g.model,
                    &g.provider,
                    &g.upstream_model,
                ];
                let ints = [
                    s.requests,
                    s.errors,
                    s.input_tokens,
                    s.output_tokens,
                    s.cached_tokens,
                    s.cost_nanos,
                    s.saved_nanos,
                    s.cache_hits,
                    s.latency_ms,
                ];
                let mut placeholders = vec![q.bind(Param::Int(g.day))];
                placeholders.extend(texts.map(|t| q.bind(Param::Text(t.clone()))));
                placeholders.extend(ints.map(|n| q.bind(Param::Int(n))));
                q.push(if i == 0 { "(" } else { ", (" });
                q.push(&placeholders.join(", "));
                q.push(")");
            }
            q.push(&format!(
                " ON CONFLICT (day, key_id, key_name, team, model, provider, upstream_model) \
                 DO UPDATE SET {update}"
            ));
            q
        })
        .collect()
}

/// While held, this replica is the one purging the ledger. On PostgreSQL it is a session
/// advisory lock on a connection of its own, closed (and so unlocked) when the guard is
/// dropped, even by a task cancelled at shutdown; SQLite is one node and needs none.
pub struct PurgeLock {
    connection: Option<PoolConnection<Postgres>>,
}

impl PurgeLock {
    /// Gives the lock up now. Dropping it does so only once its connection has closed, a
    /// moment later, in the background: a pass that follows at once would find it still held.
    pub async fn release(mut self) {
        if let Some(mut connection) = self.connection.take() {
            // Should it fail, the connection closes on drop and takes the lock with it.
            let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                .bind(PURGE_LOCK)
                .execute(&mut *connection)
                .await;
        }
    }
}

impl Store {
    /// Takes the purge lock, or `None` when another replica holds it.
    pub async fn try_purge_lock(&self) -> Result<Option<PurgeLock>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Some(PurgeLock { connection: None }));
        };
        let mut connection = pool.acquire().await.map_err(db_error)?;
        connection.close_on_drop();
        let row =
            sqlx::query("SELECT pg_try_advisory_lock($1, hashtext(current_schema())) AS locked")
                .bind(PURGE_LOCK)
                .fetch_one(&mut *connection)
                .await
                .map_err(db_error)?;
        let locked: bool = col(&row, "locked")?;
        Ok(locked.then_some(PurgeLock {
            connection: Some(connection),
        }))
    }

    /// Moves the oldest ledger rows from before `before` (epoch ms), at most `limit` of them,
    /// into the daily rollups in one transaction; returns how many it moved (fewer than
    /// `limit`: none older are left).
    pub async fn roll_up_oldest(&self, before: i64, limit: usize) -> Result<usize> {
        let backend = self.backend();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let taken = sqlx::query(TAKE_OLDEST)
                .bind(id_floor(before))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            let mut sums = BTreeMap::new();
            for row in &taken {
                add(&mut sums, row)?;
            }
            for upsert in upserts(backend, &sums) {
                bound_query!(upsert)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(taken.len())
        })
    }

    /// Records that ledger rows before `before` (epoch ms) are only in the rollups now; an
    /// earlier time than the one recorded changes nothing.
    pub async fn set_purged_before(&self, before: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO usage_purge (id, purged_before, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, purged_before = \
             CASE WHEN excluded.purged_before > usage_purge.purged_before \
             THEN excluded.purged_before ELSE usage_purge.purged_before END"
        )
        .bind(before)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// Before when the ledger's rows are only in the daily rollups (epoch ms, a UTC
    /// midnight); `None` when nothing was ever purged.
    pub async fn purged_before(&self) -> Result<Option<i64>> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT purged_before FROM usage_purge WHERE id = 1")
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(|r| col(r, "purged_before")).transpose()
        })
    }

    /// Every rollup row's count, for tests and the benchmark.
    pub async fn count_rollups(&self) -> Result<i64> {
        on_pool!(self, |pool| {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_daily")
                .fetch_one(pool)
                .await
                .map_err(db_error)?;
            col(&row, "n")
        })
    }
}

/// The first UTC day (days since the epoch) that begins at or after `ms`: a purged day counts
/// in a time range when it begins inside it.
pub(super) fn first_day_from(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) + i64::from(ms.rem_euclid(DAY_MS) != 0)
}

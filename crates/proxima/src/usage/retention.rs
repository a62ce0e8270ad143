//! Retention of the usage ledger (`[storage] log_retention`): raw rows are kept at least that
//! long, then whole UTC days of them are moved into daily rollups (per key, team, model and
//! upstream) that reports and budget lookups read in their place.
//!
//! At 2,000 requests a second the raw ledger grows by about a gigabyte an hour, so a pass moves
//! rows a small batch at a time ([`BATCH_ROWS`] per short transaction, [`BATCH_PAUSE`] between
//! transactions): the ledger writer's batch inserts wait at most one batch, never the whole
//! pass. Each batch deletes its rows and adds their sums to the rollups atomically
//! ([`Store::roll_up_oldest`]), so totals are the same before, during and after a purge.
//! With several replicas on PostgreSQL one purges at a time (an advisory lock, taken per
//! pass); SQLite is a single node.

use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::error::Result;
use crate::state::AppState;
use crate::store::{Store, DAY_MS};

/// Ledger rows moved per transaction.
pub const BATCH_ROWS: usize = 1000;
/// Pause between two batches, in which the ledger writer gets the database to itself.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// How often each replica looks for rows past retention.
const SWEEP: Duration = Duration::from_secs(600);
/// The first look, after start: a starting gateway has better things to do.
const FIRST_SWEEP: Duration = Duration::from_secs(60);

/// What a purge pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Every ledger row before `before` (epoch ms, a UTC midnight) is in the rollups now;
    /// `rows` were moved by this pass.
    Done { rows: usize, before: i64 },
    /// Another replica is purging; this one did nothing.
    Busy,
}

/// The first instant whose rows are kept raw at `now` (epoch ms): the UTC midnight on or
/// before `now - retention`, so that rows are kept at least `retention` and a day is purged
/// whole.
pub fn purge_before(now: i64, retention: Duration) -> i64 {
    let oldest_kept = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    oldest_kept - oldest_kept.rem_euclid(DAY_MS)
}

/// One purge pass: moves every ledger row older than `retention` at `now` (epoch ms) into the
/// daily rollups, [`BATCH_ROWS`] at a time with `pause` between batches.
pub async fn purge(store: &Store, retention: Duration, now: i64, pause: Duration) -> Result<Purge> {
    let Some(lock) = store.try_purge_lock().await? else {
        return Ok(Purge::Busy);
    };
    let purged = purge_locked(store, retention, now, pause).await;
    lock.release().await;
    purged
}

/// [`purge`]'s work, with the lock held.
async fn purge_locked(
    store: &Store,
    retention: Duration,
    now: i64,
    pause: Duration,
) -> Result<Purge> {
    let before = purge_before(now, retention);
    let mut rows = 0;
    loop {
        let moved = store.roll_up_oldest(before, BATCH_ROWS).await?;
        rows += moved;
        if moved < BATCH_ROWS {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    store.set_purged_before(before).await?;
    Ok(Purge::Done { rows, before })
}

/// Purges with the current config's `log_retention`, a minute after start and then every ten
/// minutes, until the server stops. Without `log_retention` nothing is purged.
pub async fn keep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_SWEEP, SWEEP);
    loop {
        tick.tick().await;
        let Some(retention) = state.gateway().config.storage.log_retention else {
            continue;
        };
        let store = &state.services().store;
        match purge(store, retention.0, clock::now_ms(), BATCH_PAUSE).await {
            Ok(Purge::Done { rows: 0, .. }) => {}
            Ok(Purge::Done { rows, before }) => tracing::info!(
                rows,
                before = %clock::day(before),
                "usage ledger rows past log_retention moved into daily rollups"
            ),
            Ok(Purge::Busy) => tracing::debug!("another replica is purging the usage ledger"),
            Err(e) => tracing::warn!(error = %e, "could not purge the usage ledger"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc as Shared;

    use super::*;
    use crate::store::testing::on_both;
    use crate::store::{ledger_id, GroupBy, LedgerRow, LogFilter, SpendColumn, UsageGroup};

    /// Midnight UTC, 2026-11-01 (a Sunday).
    const NOV_1: i64 = 1_793_491_200_000;
    const DAY: Duration = Duration::from_secs(86_400);

    /// A ledger row at `at`, varied by `i`: three keys over two teams (and none), two models,
    /// every seventh failed, every fifth a cache hit.
    fn row(at: i64, i: i64) -> LedgerRow {
        let key = ["k1", "k2", "k3"][(i % 3) as usize];
        LedgerRow {
            id: ledger_id(at),
            request_id: format!("req-{at}-{i}").into(),
            at,
            key_id: Some(key.into()),
            key_name: Some(format!("{key}-name").into()),
            team: (key != "k3").then(|| Shared::from(if key == "k1" { "red" } else { "blue" })),
            user: None,
            model: if i % 2 == 0 { "fast" } else { "smart" }.into(),
            provider: Some("p".into()),
            upstream_model: Some(if i % 2 == 0 { "u-fast" } else { "u-smart" }.into()),
            input_tokens: 10 + i % 13,
            output_tokens: 5 + i % 7,
            cached_tokens: i % 3,
            cost_nanos: 1_000 + 17 * (i % 11),
            latency_ms: 20 + i % 9,
            ttft_ms: None,
            status: if i % 7 == 0 { 502 } else { 200 },
            error_code: None,
            cache: (i % 5 == 0).then(|| "hit".into()),
            saved_nanos: if i % 5 == 0 { 400 } else { 0 },
            attempts: 1,
            stream: false,
            metadata: None,
        }
    }

    /// `n` rows a day from `first` for `days` days, spread over each day.
    fn days_of_rows(first: i64, days: i64, n: i64) -> Vec<LedgerRow> {
        (0..days * n)
            .map(|i| row(first + (i / n) * DAY_MS + (i % n) * (DAY_MS / n), i))
            .collect()
    }

    /// Everything a user can read of the usage: every report over every range, and the spend
    /// budgets are seeded with from each day's start.
    async fn totals(store: &Store) -> Vec<String> {
        let mut seen = Vec::new();
        let ranges = [
            (0, i64::MAX),
            (NOV_1, NOV_1 + 5 * DAY_MS),
            (NOV_1 + 3 * DAY_MS, NOV_1 + 8 * DAY_MS),
            (NOV_1 + 6 * DAY_MS, i64::MAX),
        ];
        for (from, to) in ranges {
            for by in [GroupBy::Key, GroupBy::Team, GroupBy::Model, GroupBy::Day] {
                let report: Vec<UsageGroup> = store.usage_report(by, from, to).await.unwrap();
                seen.push(format!("{by:?} {from}..{to}: {report:?}"));
            }
        }
        for day in 0..10 {
            let from = NOV_1 + day * DAY_MS;
            for (column, name) in [
                (SpendColumn::Key, "k1"),
                (SpendColumn::Team, "blue"),
                (SpendColumn::Model, "smart"),
            ] {
                let spent = store.spent_since(column, name, from).await.unwrap();
                seen.push(format!("{column:?} {name} since day {day}: {spent}"));
            }
        }
        seen
    }

    on_both!(
        a_purge_keeps_every_total_and_leaves_no_old_raw_row,
        |store: Store| async move {
            // Ten days of 250 rows (2,500: three batches), purged at noon on day 9 keeping 3 days:
            // days 0 to 5 go, days 6 to 9 stay raw.
            let rows = days_of_rows(NOV_1, 10, 250);
            for batch in rows.chunks(500) {
                store.insert_usage(batch).await.unwrap();
            }
            let before = totals(&store).await;
            let now = NOV_1 + 9 * DAY_MS + DAY_MS / 2;

            let done = purge(&store, 3 * DAY, now, Duration::ZERO).await.unwrap();
            let cutoff = NOV_1 + 6 * DAY_MS;
            assert_eq!(
                done,
                Purge::Done {
                    rows: 1_500,
                    before: cutoff
                }
            );
            assert_eq!(store.count_usage().await.unwrap(), 1_000);
            let old = LogFilter {
                to: Some(cutoff),
                ..LogFilter::default()
            };
            assert!(store.logs(&old).await.unwrap().data.is_empty());
            let kept = store.logs(&LogFilter::default()).await.unwrap();
            assert!(kept.data.iter().all(|r| r.at >= cutoff));
            // Six days, three keys with their teams, two models (each key sees both).
            assert_eq!(store.count_rollups().await.unwrap(), 6 * 3 * 2);
            assert_eq!(store.purged_before().await.unwrap(), Some(cutoff));
            assert_eq!(totals(&store).await, before);

            // Nothing is left to move: a second pass changes nothing.
            let again = purge(&store, 3 * DAY, now, Duration::ZERO).await.unwrap();
            assert_eq!(
                again,
                Purge::Done {
                    rows: 0,
                    before: cutoff
                }
            );
            assert_eq!(totals(&store).await, before);

            // A row written late for a purged day (replayed from a spill file) counts at once,
            // and the next pass moves it into its day.
            let late = row(NOV_1 + 2 * DAY_MS + 5, 1);
            store
                .insert_usage(std::slice::from_ref(&late))
                .await
                .unwrap();
            let with_late = totals(&store).await;
            assert_ne!(with_late, before);
            let moved = purge(&store, 3 * DAY, now, Duration::ZERO).await.unwrap();
            assert_eq!(
                moved,
                Purge::Done {
                    rows: 1,
                    before: cutoff
                }
            );
            assert_eq!(totals(&store).await, with_late);
        }
    );

    on_both!(
        ledger_writes_during_a_purge_succeed_and_count_once,
        |store: Store| async move {
            let old = days_of_rows(NOV_1, 6, 1_000);
            for batch in old.chunks(1_000) {
                store.insert_usage(batch).await.unwrap();
            }
            let now = NOV_1 + 9 * DAY_MS;
            // While the purge runs without pauses, the ledger writes batches of new rows, and
            // rows for the very days being purged.
            let writer = {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut written = 0;
                    for round in 0..40 {
                        let at = if round % 4 == 0 {
                            NOV_1 + (round % 6) * DAY_MS + 7
                        } else {
                            now - 1_000
                        };
                        let batch: Vec<LedgerRow> =
                            (0..50).map(|i| row(at + i, round * 50 + i)).collect();
                        store.insert_usage(&batch).await.unwrap();
                        written += batch.len() as i64;
                        tokio::task::yield_now().await;
                    }
                    written
                })
            };
            let purged = purge(&store, 3 * DAY, now, Duration::ZERO).await.unwrap();
            let written = writer.await.unwrap();
            // Late rows that arrived after the pass passed their day wait for the next one.
            let late = purge(&store, 3 * DAY, now, Duration::ZERO).await.unwrap();
            let moved = |p: Purge| match p {
                Purge::Done { rows, .. } => rows as i64,
                Purge::Busy => panic!("nobody else purges"),
            };
            let all = store
                .usage_report(GroupBy::Model, 0, i64::MAX)
                .await
                .unwrap();
            let requests: i64 = all.iter().map(|g| g.requests).sum();
            assert_eq!(requests, 6_000 + written);
            let raw = store.count_usage().await.unwrap();
            assert_eq!(moved(purged) + moved(late) + raw, 6_000 + written);
            assert_eq!(
                store
                    .logs(&LogFilter {
                        to: Some(NOV_1 + 6 * DAY_MS),
                        ..LogFilter::default()
                    })
                    .await
                    .unwrap()
                    .data
                    .len(),
                0
            );
        }
    );

    #[tokio::test]
    async fn one_replica_purges_at_a_time_on_postgres() {
        let url = crate::store::testing::postgres_url().await;
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let held = a.try_purge_lock().await.unwrap().expect("free");
        assert_eq!(
            purge(&b, DAY, NOV_1, Duration::ZERO).await.unwrap(),
            Purge::Busy
        );
        // Dropping the guard closes its connection, which ends the lock (within moments).
        drop(held);
        let mut waited = 0;
        while purge(&b, DAY, NOV_1, Duration::ZERO).await.unwrap() == Purge::Busy {
            waited += 1;
            assert!(waited < 100, "the lock outlived its guard");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn rows_are_kept_at_least_the_retention_and_purged_by_whole_days() {
        let day = |d: i64| d * DAY_MS;
        let three_days = Duration::from_secs(3 * 86_400);
        // At 10:00 on day 10, rows from 10:00 on day 7 must stay: day 7 is kept whole.
        assert_eq!(purge_before(day(10) + 36_000_000, three_days), day(7));
        assert_eq!(purge_before(day(10), three_days), day(7));
        assert_eq!(purge_before(day(10) - 1, three_days), day(6));
    }
}

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
    let Some(_lock) = store.try_purge_lock().await? else {
        return Ok(Purge::Busy);
    };
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

/// Purges with the current config's `log_retention`, now and every ten minutes, until the
/// server stops. Without `log_retention` nothing is purged.
pub async fn keep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SWEEP);
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
    use super::*;

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

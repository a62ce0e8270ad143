//! This replica's own counters: used without Redis, and while Redis is unreachable.
//!
//! Each map sits behind one mutex held only for a few map probes and additions, never across
//! an await, which is what makes all-or-none across several buckets or budgets trivial.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

// Keys are scopes from config and the key store, never chosen by callers: a fast seeded hash
// is enough (SipHash was a tenth of the limiter's instructions).
use foldhash::HashMap;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{
    ceil_div, refill, scaled, BudgetId, BudgetKey, Dim, Outcome, Scope, SpendLookup, Take, IDLE,
};
use crate::error::Result;
use crate::pricing::Nanos;

pub(super) struct Local {
    /// Bucket time is milliseconds since this instant (tokio's, so tests can pause time).
    base: Instant,
    buckets: Mutex<HashMap<(Scope, Dim), Bucket>>,
    budgets: Mutex<Budgets>,
    /// Ledger lookups in progress, so concurrent first requests of a period seed it once.
    seeding: Mutex<HashMap<BudgetId, Arc<OnceCell<Nanos>>>>,
}

struct Bucket {
    /// Scaled level at `at`; below zero after a settle took more than estimated.
    level: i64,
    at: i64,
    /// The capacity at the last update, so a sweep knows when the bucket is full again.
    cap: u64,
}

struct Budgets {
    /// Bumped when the counters are forgotten, so reservations made before do not touch the
    /// new counters.
    epoch: u64,
    counters: HashMap<BudgetId, Counter>,
}

struct Counter {
    spent: Nanos,
    reserved: Nanos,
    /// When the period ends (epoch ms), and when the counter was last used.
    end: i64,
    touched: i64,
}

pub(super) enum LocalReserve {
    Reserved {
        epoch: u64,
    },
    Refused {
        index: usize,
        spent: Nanos,
        reserved: Nanos,
    },
    /// Budget `index` has no counter yet: seed it from the ledger, then try again.
    Unseeded(usize),
}

/// The bucket of `scope` and `dim`, found once (one hash, one clone of the scope); a new one is
/// full, as a missing one reads.
fn bucket<'a>(
    map: &'a mut HashMap<(Scope, Dim), Bucket>,
    scope: &Scope,
    dim: Dim,
    cap: u64,
    now: i64,
) -> &'a mut Bucket {
    map.entry((scope.clone(), dim)).or_insert(Bucket {
        level: scaled(cap),
        at: now,
        cap,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves counters that are still consistent
    // (every update is a few plain stores), so keep counting.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Local {
    pub(super) fn new() -> Local {
        Local {
            base: Instant::now(),
            buckets: Mutex::new(HashMap::default()),
            budgets: Mutex::new(Budgets {
                epoch: 0,
                counters: HashMap::default(),
            }),
            seeding: Mutex::new(HashMap::default()),
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes `need` from every bucket, or nothing when one of them has too little.
    ///
    /// Each bucket is taken from as it is read (one map probe, where a read and then a write
    /// took two), and the takes are undone if a later bucket is short (rare).
    pub(super) fn acquire(&self, takes: &[Take<'_>]) -> Outcome {
        let now = self.now();
        let mut levels = Vec::with_capacity(takes.len());
        let mut refused: Option<(usize, i64)> = None;
        // Takes before the first short bucket were made, and are undone if one is short.
        let mut taken = takes.len();
        let mut buckets = lock(&self.buckets);
        for (index, take) in takes.iter().enumerate() {
            let slot = bucket(&mut buckets, take.scope, take.dim, take.cap, now);
            let level = refill(slot.level, slot.at, now, take.cap);
            let need = scaled(take.need);
            if level < need {
                // Checked by the caller: a bucket short of `need` has a capacity above zero.
                let cap = i64::try_from(take.cap).unwrap_or(i64::MAX).max(1);
                let wait = ceil_div(need - level, cap);
                if refused.is_none_or(|(_, longest)| wait > longest) {
                    refused = Some((index, wait));
                }
                taken = taken.min(index);
            } else if index < taken {
                *slot = Bucket {
                    level: level - need,
                    at: now,
                    cap: take.cap,
                };
            }
            levels.push(level);
        }
        if refused.is_some() {
            // A bucket refilled to `now` and left there reads as it did before the take.
            for (take, &level) in takes.iter().zip(&levels).take(taken) {
                *bucket(&mut buckets, take.scope, take.dim, take.cap, now) = Bucket {
                    level,
                    at: now,
                    cap: take.cap,
                };
            }
        } else {
            for (take, level) in takes.iter().zip(levels.iter_mut()) {
                *level -= scaled(take.need);
            }
        }
        Outcome { refused, levels }
    }

    /// Takes `delta` more tokens from each bucket (gives back when negative).
    pub(super) fn adjust_tokens(&self, buckets: &[(Scope, u64)], delta: i64) {
        let now = self.now();
        let taken = delta.saturating_mul(super::SCALE);
        let mut map = lock(&self.buckets);
        for (scope, cap) in buckets {
            let slot = bucket(&mut map, scope, Dim::Tokens, *cap, now);
            let level = refill(slot.level, slot.at, now, *cap);
            *slot = Bucket {
                level: level.saturating_sub(taken).min(scaled(*cap)),
                at: now,
                cap: *cap,
            };
        }
    }

    pub(super) fn try_reserve(
        &self,
        keys: &[BudgetKey],
        max_cost: Nanos,
        now: i64,
    ) -> LocalReserve {
        let mut budgets = lock(&self.budgets);
        for (index, key) in keys.iter().enumerate() {
            let Some(counter) = budgets.counters.get(&key.id) else {
                return LocalReserve::Unseeded(index);
            };
            if counter
                .spent
                .saturating_add(counter.reserved)
                .saturating_add(max_cost)
                > key.limit
            {
                return LocalReserve::Refused {
                    index,
                    spent: counter.spent,
                    reserved: counter.reserved,
                };
            }
        }
        for key in keys {
            if let Some(counter) = budgets.counters.get_mut(&key.id) {
                counter.reserved += max_cost;
                counter.touched = now;
            }
        }
        LocalReserve::Reserved {
            epoch: budgets.epoch,
        }
    }

    /// Creates `key`'s counter from what the ledger says was spent in its period; concurrent
    /// callers for the same counter share one lookup.
    pub(super) async fn seed(&self, key: &BudgetKey, spend: &SpendLookup, now: i64) -> Result<()> {
        let cell = lock(&self.seeding)
            .entry(key.id.clone())
            .or_default()
            .clone();
        let (scope, _, start) = &key.id;
        let looked_up = cell
            .get_or_try_init(|| spend(scope.clone(), *start))
            .await
            .copied();
        if let Ok(spent) = looked_up {
            lock(&self.budgets)
                .counters
                .entry(key.id.clone())
                .or_insert(Counter {
                    spent,
                    reserved: 0,
                    end: key.end,
                    touched: now,
                });
        }
        // Done either way: after a failed lookup the next request asks the ledger again.
        lock(&self.seeding).remove(&key.id);
        looked_up.map(|_| ())
    }

    pub(super) fn settle(
        &self,
        keys: &[BudgetKey],
        epoch: u64,
        max_cost: Nanos,
        cost: Nanos,
        now: i64,
    ) {
        let mut budgets = lock(&self.budgets);
        if budgets.epoch != epoch {
            // Counters started over from the ledger since; it records this cost.
            return;
        }
        for key in keys {
            if let Some(counter) = budgets.counters.get_mut(&key.id) {
                counter.reserved = (counter.reserved - max_cost).max(0);
                counter.spent = counter.spent.saturating_add(cost);
                counter.touched = now;
            }
        }
    }

    /// Drops every budget counter: they are seeded again from the ledger when next used.
    pub(super) fn forget_budgets(&self) {
        let mut budgets = lock(&self.budgets);
        budgets.counters.clear();
        budgets.epoch += 1;
    }

    /// Drops full buckets, and budget counters of past periods or idle for long, with nothing
    /// reserved: keeps memory bounded by what is in use.
    pub(super) fn sweep(&self, wall_now: i64) {
        let now = self.now();
        lock(&self.buckets).retain(|_, b| refill(b.level, b.at, now, b.cap) < scaled(b.cap));
        let idle = i64::try_from(IDLE.as_millis()).unwrap_or(i64::MAX);
        lock(&self.budgets).counters.retain(|_, counter| {
            counter.reserved > 0 || (counter.end > wall_now && wall_now - counter.touched < idle)
        });
    }

    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize) {
        (
            lock(&self.buckets).len(),
            lock(&self.budgets).counters.len(),
        )
    }

    #[cfg(test)]
    pub(super) fn counter(&self, id: &BudgetId) -> Option<(Nanos, Nanos)> {
        lock(&self.budgets)
            .counters
            .get(id)
            .map(|counter| (counter.spent, counter.reserved))
    }
}

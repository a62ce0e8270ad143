//! The counters in Redis, shared by every replica. Each operation is one Lua script call
//! (EVALSHA), so checks and debits across several buckets or budgets are atomic.
//!
//! Keys, under the prefix (`proxima:`):
//! `rate:{requests|tokens}:{kind}:{name}` (hash: level, at),
//! `budget:{period}:{start}:{kind}:{name}` (hash: spent, reserved) and
//! `budget-leases:{period}:{start}:{kind}:{name}` (sorted set of reservations by lease end).
//! The scope's name comes last, so no name can make two keys collide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::{period_label, BudgetId, BudgetKey, Dim, Outcome, Scope, Take, LEASE};
use crate::pricing::Nanos;

/// Longest wait for Redis on a request's path; slower counts as down.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// Budget keys outlive their period by this much, for settles of calls that ran across the
/// reset and for replicas whose clocks lag.
const BUDGET_KEY_SLACK_MS: i64 = 24 * 3600 * 1000;

const PRELUDE: &str = include_str!("prelude.lua");

pub(super) struct Remote {
    conn: ConnectionManager,
    prefix: String,
    acquire: Script,
    reserve: Script,
    settle: Script,
    /// Reservation ids are this replica's random tag and a counter: unique across replicas.
    tag: u64,
    next_id: AtomicU64,
    /// LEASE, shorter in tests.
    lease_ms: AtomicU64,
}

pub(super) enum RemoteReserve {
    Reserved {
        id: String,
    },
    Refused {
        index: usize,
        spent: Nanos,
        reserved: Nanos,
    },
    /// These budgets have no counters in Redis yet: seed them from the ledger.
    Unseeded(Vec<usize>),
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

impl Remote {
    /// Connects lazily: fails only on a URL that can never work.
    pub(super) fn open(url: &str, prefix: &str) -> Result<Remote, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("[storage] redis is not a usable Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // The background ping retries every second; requests must not wait on reconnects.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Remote {
            conn,
            prefix: prefix.to_owned(),
            acquire: script(include_str!("acquire.lua")),
            reserve: script(include_str!("reserve.lua")),
            settle: script(include_str!("settle.lua")),
            tag: fastrand::u64(..),
            next_id: AtomicU64::new(0),
            lease_ms: AtomicU64::new(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// The connection (a cheap clone) and the key prefix, for other state kept in Redis.
    pub(super) fn connection(&self) -> (ConnectionManager, &str) {
        (self.conn.clone(), &self.prefix)
    }

    #[cfg(test)]
    pub(super) fn set_lease(&self, lease: Duration) {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.lease_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Redis error: {e}")),
            Err(_) => Err(format!("Redis did not answer within {timeout:?}")),
        }
    }

    async fn call<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("Redis error: {e}")),
            Err(_) => Err(format!("Redis did not answer within {CALL_TIMEOUT:?}")),
        }
    }

    // Keys are joined from their parts rather than with `format!`, whose machinery cost more
    // than the rest of building a script call.
    fn bucket_key(&self, scope: &Scope, dim: Dim) -> String {
        [
            &self.prefix,
            "rate:",
            dim.label(),
            ":",
            scope.kind(),
            ":",
            scope.name(),
        ]
        .concat()
    }

    pub(super) fn budget_keys(&self, id: &BudgetId) -> (String, String) {
        let (scope, period, start) = id;
        let start = start.to_string();
        let tail = [
            period_label(*period),
            ":",
            &start,
            ":",
            scope.kind(),
            ":",
            scope.name(),
        ];
        let key = |kind: &str| {
            let mut key = String::with_capacity(64);
            key.push_str(&self.prefix);
            key.push_str(kind);
            tail.iter().for_each(|part| key.push_str(part));
            key
        };
        (key("budget:"), key("budget-leases:"))
    }

    pub(super) async fn acquire(&self, takes: &[Take<'_>]) -> Result<Outcome, String> {
        let mut invocation = self.acquire.prepare_invoke();
        for take in takes {
            invocation
                .key(self.bucket_key(take.scope, take.dim))
                .arg(take.cap)
                .arg(take.need);
        }
        let reply: Vec<i64> = self.call(&invocation).await?;
        match reply.as_slice() {
            [granted, refused, wait, levels @ ..] if levels.len() == takes.len() => {
                let refused =
                    (*granted == 0).then(|| (usize::try_from(*refused - 1).unwrap_or(0), *wait));
                Ok(Outcome {
                    refused,
                    levels: levels.to_vec(),
                })
            }
            _ => Err(format!(
                "unexpected reply from the acquire script: {reply:?}"
            )),
        }
    }

    /// `seeds[i]`: what the ledger says budget `i` spent, once looked up.
    pub(super) async fn reserve(
        &self,
        keys: &[BudgetKey],
        max_cost: Nanos,
        seeds: &[Option<Nanos>],
    ) -> Result<RemoteReserve, String> {
        let id = format!(
            "{:016x}-{}",
            self.tag,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .arg(max_cost)
            .arg(&id)
            .arg(self.lease_ms.load(Ordering::Relaxed));
        for (key, seed) in keys.iter().zip(seeds) {
            let (counters, leases) = self.budget_keys(&key.id);
            let expire_at = if key.end == i64::MAX {
                0
            } else {
                key.end.saturating_add(BUDGET_KEY_SLACK_MS)
            };
            invocation
                .key(counters)
                .key(leases)
                .arg(key.limit)
                .arg(expire_at)
                .arg(seed.map(|spent| spent.to_string()).unwrap_or_default());
        }
        let reply: Vec<i64> = self.call(&invocation).await?;
        let index = |i: i64| {
            usize::try_from(i - 1)
                .unwrap_or(0)
                .min(keys.len().saturating_sub(1))
        };
        match reply.as_slice() {
            [0] => Ok(RemoteReserve::Reserved { id }),
            [1, i, spent, reserved] => Ok(RemoteReserve::Refused {
                index: index(*i),
                spent: *spent,
                reserved: *reserved,
            }),
            [2, missing @ ..] if !missing.is_empty() => Ok(RemoteReserve::Unseeded(
                missing.iter().map(|i| index(*i)).collect(),
            )),
            _ => Err(format!(
                "unexpected reply from the reserve script: {reply:?}"
            )),
        }
    }

    /// Corrects token buckets and settles a budget reservation, in one script call.
    pub(super) async fn settle(&self, settle: Settle<'_>) -> Result<(), String> {
        let mut invocation = self.settle.prepare_invoke();
        let (buckets, delta) = settle.tokens.unwrap_or((&[], 0));
        invocation.arg(buckets.len());
        for (scope, cap) in buckets {
            invocation
                .key(self.bucket_key(scope, Dim::Tokens))
                .arg(*cap)
                .arg(delta);
        }
        let (keys, id, amount, cost) = settle.budget.unwrap_or((&[], "", 0, 0));
        invocation.arg(id).arg(amount).arg(cost);
        for key in keys {
            let (counters, leases) = self.budget_keys(&key.id);
            invocation.key(counters).key(leases);
        }
        self.call::<i64>(&invocation).await.map(|_| ())
    }
}

/// What one settle call corrects: token buckets by `delta` tokens, and a budget reservation
/// (its budgets, id and amount) with the real cost.
#[derive(Default)]
pub(super) struct Settle<'a> {
    pub tokens: Option<(&'a [(Scope, u64)], i64)>,
    pub budget: Option<(&'a [BudgetKey], &'a str, Nanos, Nanos)>,
}

/// Against the Redis at 127.0.0.1:6379 (CI starts it), each test under its own random key
/// prefix (deleted at the end). Without a Redis there, they fail: set `PROXIMA_SKIP_REDIS=1` to
/// skip them on a machine that has none.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::tests::{header, key, ledger, rate, team};
    use super::super::{Budget, Limiter, RedisStatus, Scope, SpendLookup};
    use crate::clock;
    use crate::config::BudgetPeriod;
    use crate::error::ErrorKind;

    const URL: &str = "redis://127.0.0.1:6379";

    /// A fresh prefix and a direct connection for checks, or None without Redis.
    async fn redis() -> Option<(String, redis::aio::MultiplexedConnection)> {
        let client = redis::Client::open(URL).ok()?;
        let connect = client.get_multiplexed_async_connection();
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(conn)) => Some((format!("proxima-test-{:016x}:", fastrand::u64(..)), conn)),
            _ if std::env::var_os("PROXIMA_SKIP_REDIS").is_some() => {
                eprintln!("no Redis at {URL}: skipped (PROXIMA_SKIP_REDIS)");
                None
            }
            _ => panic!("no Redis at {URL}: start one, or set PROXIMA_SKIP_REDIS=1"),
        }
    }

    async fn limiter(prefix: &str, spend: SpendLookup) -> Arc<Limiter> {
        let limiter = Limiter::with_prefix(Some(URL), spend, prefix).await;
        assert_eq!(limiter.redis_status(), RedisStatus::Connected);
        limiter
    }

    async fn cleanup(prefix: &str, conn: &mut redis::aio::MultiplexedConnection) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(conn).await;
        }
    }

    fn daily(scope: Scope, limit: i64) -> Budget {
        Budget {
            scope,
            limit,
            period: BudgetPeriod::Day,
        }
    }

    /// Spent and reserved of a budget in Redis.
    async fn counters(
        limiter: &Limiter,
        budget: &Budget,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> (Option<i64>, Option<i64>) {
        let start = budget.period.bounds(clock::now_ms()).0;
        let remote = limiter.inner.remote.as_ref().unwrap();
        let (hash, _) = remote.budget_keys(&(budget.scope.clone(), budget.period, start));
        redis::cmd("HMGET")
            .arg(hash)
            .arg("spent")
            .arg("reserved")
            .query_async(conn)
            .await
            .unwrap()
    }

    /// Waits for the background settles to land.
    async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
        for _ in 0..100 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the condition never held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_share_one_rpm_limit() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let a = limiter(&prefix, ledger(0).0).await;
        let b = limiter(&prefix, ledger(0).0).await;
        let limits = [
            rate(key("ci-bot"), Some(5), None),
            rate(team("t"), None, Some(10_000)),
        ];
        let mut granted = 0;
        let mut refusal = None;
        for i in 0..10 {
            let replica = if i % 2 == 0 { &a } else { &b };
            match replica.acquire(&limits, 100).await {
                Ok(grant) => {
                    granted += 1;
                    assert_eq!(
                        header(grant.headers(), "x-ratelimit-remaining-requests"),
                        (5 - granted).to_string()
                    );
                }
                Err(refused) => refusal = Some(refused),
            }
        }
        assert_eq!(granted, 5);
        let refused = refusal.unwrap();
        assert_eq!(refused.kind, ErrorKind::RateLimited);
        assert_eq!(
            refused.message,
            "rate limit of key `ci-bot` reached: 5 requests per minute; retry in 12s"
        );
        assert_eq!(refused.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(
            header(&refused.headers, "x-ratelimit-remaining-requests"),
            "0"
        );
        // The refused requests took no tokens.
        assert!(header(&refused.headers, "x-ratelimit-remaining-tokens")
            .parse::<u64>()
            .is_ok_and(|left| (9500..9900).contains(&left)));
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_settles_reach_redis() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let a = limiter(&prefix, ledger(0).0).await;
        let b = limiter(&prefix, ledger(0).0).await;
        let limits = [rate(key("k"), None, Some(1000))];
        a.acquire(&limits, 600).await.unwrap().settle(100);
        // b sees a's refund once the spawned settle ran: 900 fit only then.
        let mut granted = false;
        for _ in 0..50 {
            if let Ok(grant) = b.acquire(&limits, 890).await {
                granted = true;
                // Used more than estimated: the shared bucket goes below zero.
                grant.settle(1890);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(granted);
        let mut refused = None;
        for _ in 0..50 {
            match a.acquire(&limits, 1).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(refused.unwrap().retry_after.unwrap() > Duration::from_secs(50));
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_settle_corrects_the_tokens_and_spends_the_budget() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let a = limiter(&prefix, ledger(0).0).await;
        let b = limiter(&prefix, ledger(0).0).await;
        let limits = [rate(key("k"), None, Some(1000))];
        let budget = daily(key("k"), 1_000);
        let grant = a.acquire(&limits, 600).await.unwrap();
        let reservation = a.reserve(std::slice::from_ref(&budget), 300).await.unwrap();
        assert_eq!(counters(&a, &budget, &mut conn).await, (Some(0), Some(300)));
        // Used 100 of the 600 tokens estimated, and cost 120 of the 300 reserved.
        super::super::settle(Some(grant), Some(reservation), 100, 120);
        eventually(|| {
            let (b, budget, mut conn) = (&b, &budget, conn.clone());
            async move { counters(b, budget, &mut conn).await == (Some(120), Some(0)) }
        })
        .await;
        // The 500 tokens given back are there for the other replica.
        let grant = b.acquire(&limits, 890).await.unwrap();
        let left: u64 = header(grant.headers(), "x-ratelimit-remaining-tokens")
            .parse()
            .unwrap();
        assert!((0..20).contains(&left), "{left}");
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reserves_across_replicas_admit_exactly_what_fits() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let a = limiter(&prefix, ledger(0).0).await;
        let b = limiter(&prefix, ledger(0).0).await;
        let budget = daily(team("platform"), 1000);
        let other = daily(key("roomy"), 1_000_000);
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
                let budgets = [other.clone(), budget.clone()];
                tokio::spawn(async move { replica.reserve(&budgets, 30).await })
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(reservation) => held.push(reservation),
                Err(refused) => {
                    assert_eq!(refused.kind, ErrorKind::BudgetExceeded);
                    assert!(
                        refused.message.contains("team `platform`"),
                        "{}",
                        refused.message
                    );
                }
            }
        }
        assert_eq!(held.len(), 1000 / 30);
        assert_eq!(counters(&a, &budget, &mut conn).await, (Some(0), Some(990)));
        // All or none: the roomy budget holds only what was admitted.
        assert_eq!(counters(&a, &other, &mut conn).await, (Some(0), Some(990)));
        let mut held = held.into_iter();
        held.next().unwrap().settle(7);
        drop(held);
        eventually(|| {
            let (a, budget, mut conn) = (a.clone(), budget.clone(), conn.clone());
            async move { counters(&a, &budget, &mut conn).await == (Some(7), Some(0)) }
        })
        .await;
        assert_eq!(counters(&a, &other, &mut conn).await, (Some(7), Some(0)));
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_are_seeded_only_when_missing_in_redis() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let (lookup_a, calls_a) = ledger(950);
        let (lookup_b, calls_b) = ledger(950);
        let a = limiter(&prefix, lookup_a).await;
        let b = limiter(&prefix, lookup_b).await;
        let budget = daily(key("ci-bot"), 1000);
        a.reserve(std::slice::from_ref(&budget), 30)
            .await
            .unwrap()
            .settle(30);
        assert_eq!(calls_a.load(Ordering::SeqCst), 1);
        eventually(|| {
            let (a, budget, mut conn) = (a.clone(), budget.clone(), conn.clone());
            async move { counters(&a, &budget, &mut conn).await == (Some(980), Some(0)) }
        })
        .await;
        // b has never seen this budget, but Redis has: no ledger lookup.
        let refused = b
            .reserve(std::slice::from_ref(&budget), 30)
            .await
            .unwrap_err();
        assert!(
            refused.message.contains("cannot cover"),
            "{}",
            refused.message
        );
        assert_eq!(calls_b.load(Ordering::SeqCst), 0);
        a.reserve(std::slice::from_ref(&budget), 30)
            .await
            .unwrap_err();
        assert_eq!(calls_a.load(Ordering::SeqCst), 1);

        // Redis lost the counters (restart, eviction): the next request seeds them again.
        let start = budget.period.bounds(clock::now_ms()).0;
        let (hash, _) = a.inner.remote.as_ref().unwrap().budget_keys(&(
            budget.scope.clone(),
            budget.period,
            start,
        ));
        let _: i64 = redis::cmd("DEL")
            .arg(&hash)
            .query_async(&mut conn)
            .await
            .unwrap();
        b.reserve(std::slice::from_ref(&budget), 30)
            .await
            .unwrap()
            .settle(0);
        assert_eq!(calls_b.load(Ordering::SeqCst), 1);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&hash)
            .query_async(&mut conn)
            .await
            .unwrap();
        let end = budget.period.bounds(clock::now_ms()).1;
        assert!(ttl > end - clock::now_ms(), "{ttl}");
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reservations_of_a_dead_replica_run_out() {
        let Some((prefix, mut conn)) = redis().await else {
            return;
        };
        let a = limiter(&prefix, ledger(0).0).await;
        a.inner
            .remote
            .as_ref()
            .unwrap()
            .set_lease(Duration::from_secs(1));
        let budgets = [daily(key("k"), 100)];
        // As if the replica died mid-request: never settled, never dropped.
        std::mem::forget(a.reserve(&budgets, 100).await.unwrap());
        a.reserve(&budgets, 1).await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        a.reserve(&budgets, 100).await.unwrap().settle(40);
        eventually(|| {
            let (a, budget, mut conn) = (a.clone(), budgets[0].clone(), conn.clone());
            async move { counters(&a, &budget, &mut conn).await == (Some(40), Some(0)) }
        })
        .await;
        cleanup(&prefix, &mut conn).await;
    }

    #[tokio::test]
    async fn unreachable_redis_degrades_to_local_limits() {
        let (lookup, calls) = ledger(0);
        let limiter = Limiter::new(Some("redis://127.0.0.1:1"), lookup).await;
        let RedisStatus::Degraded(reason) = limiter.redis_status() else {
            panic!("{:?}", limiter.redis_status());
        };
        assert!(!reason.is_empty());
        let limits = [rate(key("k"), Some(1), None)];
        limiter.acquire(&limits, 1).await.unwrap();
        assert_eq!(
            limiter.acquire(&limits, 1).await.unwrap_err().kind,
            ErrorKind::RateLimited
        );
        let budgets = [daily(key("k"), 100)];
        let held = limiter.reserve(&budgets, 60).await.unwrap();
        assert_eq!(
            limiter.reserve(&budgets, 60).await.unwrap_err().kind,
            ErrorKind::BudgetExceeded
        );
        held.settle(10);
        limiter.reserve(&budgets, 90).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let invalid = Limiter::new(Some("not a url"), ledger(0).0).await;
        assert!(matches!(invalid.redis_status(), RedisStatus::Degraded(_)));
        invalid.acquire(&limits, 1).await.unwrap();
    }

    /// A private redis-server this test starts, stopped when dropped.
    struct PrivateRedis(std::process::Child);

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// None when the binary is missing.
    fn private_redis(port: u16) -> Option<PrivateRedis> {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
            .map(PrivateRedis)
    }

    async fn wait_for(limiter: &Limiter, status: fn(&RedisStatus) -> bool) {
        for _ in 0..200 {
            if status(&limiter.redis_status()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("still {:?}", limiter.redis_status());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_switches_to_local_counters_and_back() {
        // A port the kernel just handed out and took back is free; a random pick in a fixed
        // range could be an ephemeral port another connection holds.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let Some(server) = private_redis(port) else {
            assert!(
                std::env::var_os("PROXIMA_SKIP_REDIS").is_some(),
                "no redis-server binary: install it, or set PROXIMA_SKIP_REDIS=1"
            );
            return;
        };
        let url = format!("redis://127.0.0.1:{port}");
        // Give the server a moment to listen: seconds on a machine busy building.
        let mut limiter = None;
        for _ in 0..200 {
            let candidate = Limiter::new(Some(&url), ledger(0).0).await;
            if candidate.redis_status() == RedisStatus::Connected {
                limiter = Some(candidate);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let limiter = limiter.unwrap();
        let limits = [rate(key("k"), Some(2), None)];
        let first = limiter.acquire(&limits, 1).await.unwrap();
        assert!(first.debit.is_none());

        drop(server);
        // The first request after the outage finds out, and is served by local counters.
        limiter.acquire(&limits, 1).await.unwrap();
        assert!(matches!(limiter.redis_status(), RedisStatus::Degraded(_)));
        limiter.acquire(&limits, 1).await.unwrap();
        limiter.acquire(&limits, 1).await.unwrap_err();

        let Some(_server) = private_redis(port) else {
            return;
        };
        wait_for(&limiter, |status| *status == RedisStatus::Connected).await;
        // Back on Redis (a new, empty one), whose bucket is full.
        limiter.acquire(&limits, 1).await.unwrap();
        limiter.acquire(&limits, 1).await.unwrap();
        limiter.acquire(&limits, 1).await.unwrap_err();
    }
}

//! The shared counters behind rate limits and budgets.
//!
//! Rate limits are token buckets per scope (key, team, model) that refill continuously: `rpm`
//! requests and `tpm` tokens per 60 s. Budgets are `spent` and `reserved` counters per scope and
//! calendar period: a request reserves its worst-case cost up front and settles the real cost
//! after the call, so concurrent requests can overshoot a budget only by what their real costs
//! exceed their reservations.
//!
//! With Redis, one Lua script call checks and debits every bucket or budget of a request, so
//! replicas share one truth. Without Redis, or while it is unreachable, this replica's own
//! counters ([`local`]) stand in; a background task pings Redis every second and switches back.

mod local;
mod remote;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};

use crate::clock;
use crate::config::BudgetPeriod;
use crate::error::{Error, ErrorKind, Result};
use crate::pricing::{usd, Nanos};

use local::{Local, LocalReserve};
use remote::{Remote, RemoteReserve, Settle};

/// Whose limit or budget.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(Arc<str>),
    Team(Arc<str>),
    Model(Arc<str>),
}

impl Scope {
    /// For messages: key `ci-bot`, team `platform`, model `fast`.
    pub fn describe(&self) -> String {
        format!("{} `{}`", self.kind(), self.name())
    }

    fn kind(&self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Team(_) => "team",
            Scope::Model(_) => "model",
        }
    }

    fn name(&self) -> &str {
        match self {
            Scope::Key(name) | Scope::Team(name) | Scope::Model(name) => name,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateLimit {
    pub scope: Scope,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt and output) per minute.
    pub tpm: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Budget {
    pub scope: Scope,
    pub limit: Nanos,
    pub period: BudgetPeriod,
}

/// Looks up what a scope already spent since `period_start_ms` (epoch ms) in the usage ledger.
pub type SpendLookup = Arc<dyn Fn(Scope, i64) -> BoxFuture<'static, Result<Nanos>> + Send + Sync>;

/// Whether the counters are shared through Redis right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisStatus {
    NotConfigured,
    Connected,
    /// Redis is configured but not used right now (this replica counts alone), and why.
    Degraded(String),
}

/// Bucket levels are counted in 1/60 000 of a request or token, so a bucket refilling `cap`
/// per minute gains exactly `cap` per millisecond: integer arithmetic, no rounding drift.
const SCALE: i64 = 60_000;

/// Leases on Redis reservations: a replica that dies before settling holds budget only this
/// long. Longer than any call (retries and fallbacks included) is expected to take.
const LEASE: Duration = Duration::from_secs(15 * 60);

/// Local entries idle this long are dropped (budgets are seeded again from the ledger).
const IDLE: Duration = Duration::from_secs(3600);

/// How often the background task sweeps idle local entries.
const SWEEP_EVERY: u32 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dim {
    Requests,
    Tokens,
}

impl Dim {
    fn label(self) -> &'static str {
        match self {
            Dim::Requests => "requests",
            Dim::Tokens => "tokens",
        }
    }
}

/// One bucket a request takes from: `need` of `cap` per minute.
#[derive(Clone, Copy, Debug)]
struct Take<'a> {
    scope: &'a Scope,
    dim: Dim,
    cap: u64,
    need: u64,
}

/// What a backend answers to an acquire: every bucket's level (scaled, after the debit when
/// granted), and the refusing bucket with its wait in ms.
struct Outcome {
    refused: Option<(usize, i64)>,
    levels: Vec<i64>,
}

fn scaled(units: u64) -> i64 {
    i64::try_from(units)
        .unwrap_or(i64::MAX)
        .saturating_mul(SCALE)
}

/// A bucket's level `now` after refilling since `at` (both ms), never above full.
fn refill(level: i64, at: i64, now: i64, cap: u64) -> i64 {
    let gained = (now - at)
        .max(0)
        .saturating_mul(i64::try_from(cap).unwrap_or(i64::MAX));
    level.saturating_add(gained).min(scaled(cap))
}

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// A budget's counters: which scope, which period.
type BudgetId = (Scope, BudgetPeriod, i64);

/// A budget for one request, its period resolved.
#[derive(Clone, Debug)]
struct BudgetKey {
    id: BudgetId,
    /// When the period ends (epoch ms; `i64::MAX` for `total`).
    end: i64,
    limit: Nanos,
}

fn period_label(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Day => "1d",
        BudgetPeriod::Week => "1w",
        BudgetPeriod::Month => "1mo",
        BudgetPeriod::Total => "total",
    }
}

pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    local: Local,
    remote: Option<Remote>,
    /// Set while Redis is configured but not answering; the reason is in `redis_reason`.
    redis_down: AtomicBool,
    redis_reason: Mutex<Option<String>>,
    spend: SpendLookup,
}

impl Limiter {
    /// Never fails: with Redis unreachable at start it runs on local counters, reports it, and
    /// reconnects in the background.
    pub async fn new(redis_url: Option<&str>, spend: SpendLookup) -> Arc<Limiter> {
        Limiter::with_prefix(redis_url, spend, "proxima:").await
    }

    /// As [`Limiter::new`], with Redis keys under `prefix` instead of `proxima:` (tests, or
    /// several deployments on one Redis).
    pub async fn with_prefix(
        redis_url: Option<&str>,
        spend: SpendLookup,
        prefix: &str,
    ) -> Arc<Limiter> {
        let (remote, failure) = match redis_url {
            None => (None, None),
            Some(url) => match Remote::open(url, prefix) {
                Ok(remote) => {
                    let failure = remote.ping(Duration::from_secs(1)).await.err();
                    (Some(remote), failure)
                }
                Err(reason) => (None, Some(reason)),
            },
        };
        let configured = redis_url.is_some();
        let inner = Arc::new(Inner {
            local: Local::new(),
            remote,
            redis_down: AtomicBool::new(false),
            redis_reason: Mutex::new(None),
            spend,
        });
        if let Some(reason) = failure {
            inner.redis_failed(reason);
        } else if configured {
            tracing::info!("rate limits and budgets are shared through Redis");
        }
        tokio::spawn(background(Arc::downgrade(&inner)));
        Arc::new(Limiter { inner })
    }

    /// Whether the counters are shared through Redis right now: for logs and `/health/ready`.
    pub fn redis_status(&self) -> RedisStatus {
        let reason = self
            .inner
            .redis_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (&*reason, self.inner.redis_down.load(Ordering::Acquire)) {
            (Some(reason), true) => RedisStatus::Degraded(reason.clone()),
            _ if self.inner.remote.is_some() => RedisStatus::Connected,
            _ => RedisStatus::NotConfigured,
        }
    }

    /// This limiter's Redis, lent to other state the replicas share (the response cache), so
    /// that one connection and one health check serve both; `None` without `[storage] redis`.
    pub fn shared_redis(&self) -> Option<SharedRedis> {
        self.inner.remote.as_ref().map(|_| SharedRedis {
            inner: self.inner.clone(),
        })
    }

    /// Takes one request and `tokens` (estimated prompt tokens + max output tokens) from every
    /// limit: all of them or none.
    pub async fn acquire(&self, limits: &[RateLimit], tokens: u64) -> Result<RateGrant> {
        let takes: Vec<Take<'_>> = limits
            .iter()
            .flat_map(|limit| {
                let take = move |dim, cap: Option<u64>, need| {
                    cap.map(|cap| Take {
                        scope: &limit.scope,
                        dim,
                        cap,
                        need,
                    })
                };
                take(Dim::Requests, limit.rpm, 1).into_iter().chain(take(
                    Dim::Tokens,
                    limit.tpm,
                    tokens,
                ))
            })
            .collect();
        if takes.is_empty() {
            return Ok(RateGrant {
                headers: Vec::new(),
                debit: None,
            });
        }
        if let Some(take) = takes.iter().find(|take| take.need > take.cap) {
            return Err(never_passes(take));
        }
        // What waits on Redis or the database is boxed, here and in `reserve`: unboxed, its
        // future would take room in every call's future, which counters in memory never need.
        let (outcome, backend) = match self.inner.redis() {
            Some(remote) => match Box::pin(remote.acquire(&takes)).await {
                Ok(outcome) => (outcome, Backend::Redis),
                Err(reason) => {
                    self.inner.redis_failed(reason);
                    (self.inner.local.acquire(&takes), Backend::Local)
                }
            },
            None => (self.inner.local.acquire(&takes), Backend::Local),
        };
        let headers = rate_headers(&takes, &outcome.levels);
        if let Some((index, wait_ms)) = outcome.refused {
            return Err(rate_refusal(&takes[index], wait_ms).with_headers(headers));
        }
        let buckets: Vec<(Scope, u64)> = takes
            .iter()
            .filter(|take| take.dim == Dim::Tokens)
            .map(|take| (take.scope.clone(), take.cap))
            .collect();
        let debit = (!buckets.is_empty()).then(|| TokenDebit {
            inner: self.inner.clone(),
            backend,
            buckets,
            estimate: tokens,
        });
        Ok(RateGrant { headers, debit })
    }

    /// Reserves `max_cost` against every budget: all or none. The first time a (scope, period)
    /// is seen (by this replica; with Redis, when its counters do not exist there yet) its
    /// `spent` is seeded from the ledger.
    pub async fn reserve(&self, budgets: &[Budget], max_cost: Nanos) -> Result<Reservation> {
        if budgets.is_empty() {
            return Ok(Reservation { held: None });
        }
        let max_cost = max_cost.max(0);
        let now = clock::now_ms();
        let keys: Vec<BudgetKey> = budgets
            .iter()
            .map(|budget| {
                let (start, end) = budget.period.bounds(now);
                BudgetKey {
                    id: (budget.scope.clone(), budget.period, start),
                    end,
                    limit: budget.limit,
                }
            })
            .collect();
        if let Some(remote) = self.inner.redis() {
            match Box::pin(self.reserve_remote(remote, &keys, max_cost)).await {
                Ok(result) => return result,
                Err(reason) => self.inner.redis_failed(reason),
            }
        }
        loop {
            match self.inner.local.try_reserve(&keys, max_cost, now) {
                LocalReserve::Reserved { epoch } => {
                    return Ok(self.held(keys, max_cost, How::Local { epoch }))
                }
                LocalReserve::Refused {
                    index,
                    spent,
                    reserved,
                } => return Err(budget_refusal(&keys[index], spent, reserved, max_cost, now)),
                LocalReserve::Unseeded(index) => {
                    Box::pin(self.inner.local.seed(&keys[index], &self.inner.spend, now)).await?;
                }
            }
        }
    }

    /// The outer error is Redis failing (the caller falls back to local counters); the inner
    /// result is the answer.
    async fn reserve_remote(
        &self,
        remote: &Remote,
        keys: &[BudgetKey],
        max_cost: Nanos,
    ) -> std::result::Result<Result<Reservation>, String> {
        let now = clock::now_ms();
        let mut seeds: Vec<Option<Nanos>> = vec![None; keys.len()];
        // Each round seeds at least one more budget, so this ends; the bound is a safeguard.
        for _ in 0..=keys.len() {
            match remote.reserve(keys, max_cost, &seeds).await? {
                RemoteReserve::Reserved { id } => {
                    return Ok(Ok(self.held(keys.to_vec(), max_cost, How::Redis { id })))
                }
                RemoteReserve::Refused {
                    index,
                    spent,
                    reserved,
                } => {
                    return Ok(Err(budget_refusal(
                        &keys[index],
                        spent,
                        reserved,
                        max_cost,
                        now,
                    )))
                }
                RemoteReserve::Unseeded(missing) => {
                    for index in missing {
                        let (scope, _, start) = &keys[index].id;
                        match (self.inner.spend)(scope.clone(), *start).await {
                            Ok(spent) => seeds[index] = Some(spent),
                            Err(error) => return Ok(Err(error)),
                        }
                    }
                }
            }
        }
        Err("the budget counters in Redis kept disappearing while being seeded".into())
    }

    fn held(&self, keys: Vec<BudgetKey>, max_cost: Nanos, how: How) -> Reservation {
        Reservation {
            held: Some(Held {
                inner: self.inner.clone(),
                keys,
                max_cost,
                how,
            }),
        }
    }
}

/// The limiter's Redis connection, shared: see [`Limiter::shared_redis`].
#[derive(Clone)]
pub struct SharedRedis {
    inner: Arc<Inner>,
}

impl SharedRedis {
    /// The connection and the key prefix (`proxima:`) while Redis answers; `None` while the
    /// limiter counts locally because it does not.
    pub fn connection(&self) -> Option<(redis::aio::ConnectionManager, &str)> {
        self.inner.redis().map(Remote::connection)
    }
}

impl Inner {
    /// Redis, when it is configured and answering.
    fn redis(&self) -> Option<&Remote> {
        self.remote
            .as_ref()
            .filter(|_| !self.redis_down.load(Ordering::Acquire))
    }

    /// Switches to local counters; logs only the first failure of an outage.
    fn redis_failed(&self, reason: String) {
        let mut current = self
            .redis_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.redis_down.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(
            reason = %reason,
            "Redis is not usable: rate limits and budgets count on this replica alone until it answers again"
        );
        // Local budget counters from an earlier outage missed what was spent since: start
        // over from the ledger.
        self.local.forget_budgets();
        *current = Some(reason);
        self.redis_down.store(true, Ordering::Release);
    }

    fn redis_recovered(&self) {
        let mut current = self
            .redis_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.redis_down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis answers again: rate limits and budgets are shared again");
        }
        *current = None;
    }
}

/// Pings Redis every second while it is down, and sweeps idle local entries now and then.
/// Ends with the limiter.
async fn background(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Some(remote) = &inner.remote {
            if inner.redis_down.load(Ordering::Acquire)
                && remote.ping(remote::CALL_TIMEOUT).await.is_ok()
            {
                inner.redis_recovered();
            }
        }
        ticks += 1;
        if ticks % SWEEP_EVERY == 0 {
            inner.local.sweep(clock::now_ms());
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    Redis,
}

/// Runs `work` in the background when there is a runtime to run it on (settles are not async).
fn spawn(work: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(work);
        }
        Err(_) => {
            tracing::debug!("no runtime to settle a limit on Redis; the counter keeps the estimate")
        }
    }
}

/// A request admitted by the rate limits.
#[derive(Debug)]
pub struct RateGrant {
    headers: Vec<(HeaderName, HeaderValue)>,
    debit: Option<TokenDebit>,
}

/// The token estimate taken from the tpm buckets, to correct once the real usage is known.
struct TokenDebit {
    inner: Arc<Inner>,
    backend: Backend,
    buckets: Vec<(Scope, u64)>,
    estimate: u64,
}

impl std::fmt::Debug for TokenDebit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDebit")
            .field("backend", &self.backend)
            .field("buckets", &self.buckets)
            .field("estimate", &self.estimate)
            .finish()
    }
}

impl RateGrant {
    /// OpenAI-style `x-ratelimit-*` headers for the response, of the tightest limit (least
    /// remaining as a share). None when no limit applied.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Corrects the token debit with the real usage (above or below the estimate). A bucket
    /// may go below zero: later requests then wait. Dropping a grant keeps the estimate.
    pub fn settle(self, actual_tokens: u64) {
        settle(Some(self), None, actual_tokens, 0);
    }
}

impl TokenDebit {
    /// Real usage minus the estimate taken.
    fn delta(&self, actual_tokens: u64) -> i64 {
        i64::try_from(actual_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.estimate).unwrap_or(i64::MAX))
    }

    fn settle(self, actual_tokens: u64) {
        let delta = self.delta(actual_tokens);
        if delta == 0 {
            return;
        }
        match self.backend {
            Backend::Local => self.inner.local.adjust_tokens(&self.buckets, delta),
            Backend::Redis => spawn(async move {
                let settle = Settle {
                    tokens: Some((&self.buckets, delta)),
                    budget: None,
                };
                settle_remote(&self.inner, settle).await;
            }),
        }
    }
}

/// Settles a request's rate grant and budget reservation with its real usage and cost (the
/// cost the ledger records). When both are held in Redis, one script call does both.
pub fn settle(
    grant: Option<RateGrant>,
    mut reservation: Option<Reservation>,
    actual_tokens: u64,
    cost: Nanos,
) {
    let cost = cost.max(0);
    let debit = grant.and_then(|grant| grant.debit);
    let held = reservation.as_mut().and_then(|r| r.held.take());
    match (debit, held) {
        (
            Some(debit),
            Some(Held {
                inner,
                keys,
                max_cost,
                how: How::Redis { id },
            }),
        ) if debit.backend == Backend::Redis => spawn(async move {
            let delta = debit.delta(actual_tokens);
            let settle = Settle {
                tokens: (delta != 0).then_some((&debit.buckets, delta)),
                budget: Some((&keys, &id, max_cost, cost)),
            };
            settle_remote(&inner, settle).await;
        }),
        (debit, held) => {
            if let Some(debit) = debit {
                debit.settle(actual_tokens);
            }
            if let Some(held) = held {
                held.finish(cost);
            }
        }
    }
}

/// One settle call to Redis; a failure switches this replica to local counters.
async fn settle_remote(inner: &Inner, settle: Settle<'_>) {
    let Some(remote) = &inner.remote else {
        return;
    };
    if let Err(reason) = remote.settle(settle).await {
        inner.redis_failed(reason);
    }
}

/// Budget held for one request until it settles (or is dropped).
#[derive(Debug)]
pub struct Reservation {
    held: Option<Held>,
}

struct Held {
    inner: Arc<Inner>,
    keys: Vec<BudgetKey>,
    max_cost: Nanos,
    how: How,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("keys", &self.keys)
            .field("max_cost", &self.max_cost)
            .field("how", &self.how)
            .finish()
    }
}

#[derive(Debug)]
enum How {
    /// In this replica's counters of local epoch `epoch`.
    Local { epoch: u64 },
    /// In Redis, under reservation id `id`.
    Redis { id: String },
}

impl Reservation {
    /// Releases the reservation and adds `cost` (exactly what the ledger records) to the spent
    /// counters.
    pub fn settle(self, cost: Nanos) {
        settle(None, Some(self), 0, cost);
    }
}

impl Drop for Reservation {
    /// Not settled: the call cost nothing (the ledger records nothing either).
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.finish(0);
        }
    }
}

impl Held {
    fn finish(self, cost: Nanos) {
        match self.how {
            How::Local { epoch } => {
                self.inner
                    .local
                    .settle(&self.keys, epoch, self.max_cost, cost, clock::now_ms())
            }
            How::Redis { id } => {
                let Held {
                    inner,
                    keys,
                    max_cost,
                    ..
                } = self;
                spawn(async move {
                    let settle = Settle {
                        tokens: None,
                        budget: Some((&keys, &id, max_cost, cost)),
                    };
                    settle_remote(&inner, settle).await;
                });
            }
        }
    }
}

fn never_passes(take: &Take<'_>) -> Error {
    let message = match take.dim {
        Dim::Requests => format!(
            "the rate limit of {} allows no requests (rpm = 0)",
            take.scope.describe()
        ),
        Dim::Tokens => format!(
            "this request needs up to {} tokens (prompt + max output) but the token limit of {} is {} per minute, so it can never pass: lower max_tokens or shorten the prompt",
            take.need,
            take.scope.describe(),
            take.cap
        ),
    };
    // Waiting will not help, so no retry-after.
    Error::new(ErrorKind::RateLimited, message)
}

fn rate_refusal(take: &Take<'_>, wait_ms: i64) -> Error {
    // Whole seconds, rounded up, at least one: retrying earlier would be refused again.
    let secs = u64::try_from(wait_ms.max(1))
        .unwrap_or(1)
        .div_ceil(1000)
        .max(1);
    let what = match take.dim {
        Dim::Requests => format!("{} requests per minute", take.cap),
        Dim::Tokens => format!(
            "{} tokens per minute (this request needs up to {})",
            take.cap, take.need
        ),
    };
    Error::new(
        ErrorKind::RateLimited,
        format!(
            "rate limit of {} reached: {what}; retry in {secs}s",
            take.scope.describe()
        ),
    )
    .with_retry_after(Some(Duration::from_secs(secs)))
}

fn budget_refusal(
    key: &BudgetKey,
    spent: Nanos,
    reserved: Nanos,
    max_cost: Nanos,
    now: i64,
) -> Error {
    let (scope, period, _) = &key.id;
    let reset = if key.end == i64::MAX {
        "it does not reset".to_owned()
    } else {
        format!("it resets at {}", clock::rfc3339(key.end))
    };
    let what = format!("the {} budget of {}", period.adjective(), scope.describe());
    let message = if spent >= key.limit {
        format!(
            "{what} is spent: {} of {} used; {reset}",
            dollars(spent),
            dollars(key.limit)
        )
    } else {
        let in_flight = if reserved > 0 {
            format!(", {} held by requests in flight", dollars(reserved))
        } else {
            String::new()
        };
        format!(
            "{what} cannot cover this request: {} of {} used{in_flight}, and this request may cost up to {}; {reset}",
            dollars(spent),
            dollars(key.limit),
            dollars(max_cost)
        )
    };
    let retry_after = (key.end != i64::MAX)
        .then(|| Duration::from_millis(u64::try_from(key.end - now).unwrap_or(0)));
    Error::new(ErrorKind::BudgetExceeded, message).with_retry_after(retry_after)
}

/// `$5.00`, `$5.0012`, `$0.000003`: cents always, more digits only when they say something.
fn dollars(nanos: Nanos) -> String {
    let mut text = format!("{:.6}", usd(nanos));
    while text.ends_with('0') && text.len() - text.find('.').unwrap_or(0) > 3 {
        text.pop();
    }
    format!("${text}")
}

/// Limit, remaining and reset, per dimension; made at compile time (`from_static` checks
/// every byte when called at run time).
const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// `x-ratelimit-*` headers: per dimension, the bucket with the least remaining share.
fn rate_headers(takes: &[Take<'_>], levels: &[i64]) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(6);
    for dim in [Dim::Requests, Dim::Tokens] {
        let share = |(take, level): &(&Take<'_>, &i64)| {
            if take.cap == 0 {
                0.0
            } else {
                **level as f64 / scaled(take.cap) as f64
            }
        };
        let tightest = takes
            .iter()
            .zip(levels)
            .filter(|(take, _)| take.dim == dim)
            .min_by(|a, b| share(a).total_cmp(&share(b)));
        let Some((take, &level)) = tightest else {
            continue;
        };
        let remaining = u64::try_from(level.max(0) / SCALE).unwrap_or(0);
        let reset_ms = match i64::try_from(take.cap) {
            Ok(cap) if cap > 0 => ceil_div((scaled(take.cap) - level).max(0), cap),
            _ => 0,
        };
        let [limit, left, reset] = match dim {
            Dim::Requests => REQUEST_HEADERS,
            Dim::Tokens => TOKEN_HEADERS,
        };
        headers.push((limit, HeaderValue::from(take.cap)));
        headers.push((left, HeaderValue::from(remaining)));
        if let Ok(value) = HeaderValue::try_from(format_reset(reset_ms)) {
            headers.push((reset, value));
        }
    }
    headers
}

/// A duration as OpenAI writes resets (Go's notation): `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
/// Written digit by digit: every answer under a rate limit carries two, and `format!` cost
/// more than the rest of the headers together.
fn format_reset(ms: i64) -> String {
    let mut text = String::with_capacity(16);
    if ms <= 0 {
        text.push_str("0s");
        return text;
    }
    if ms < 1000 {
        push_number(&mut text, ms);
        text.push_str("ms");
        return text;
    }
    let (hours, minutes, secs, millis) =
        (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if hours > 0 {
        push_number(&mut text, hours);
        text.push('h');
    }
    if hours > 0 || minutes > 0 {
        push_number(&mut text, minutes);
        text.push('m');
    }
    push_number(&mut text, secs);
    if millis > 0 {
        // Three digits, trailing zeros dropped: 250 ms is `.25`.
        text.push('.');
        let all = [millis / 100, millis / 10 % 10, millis % 10];
        let mut digits = all.as_slice();
        while let [rest @ .., 0] = digits {
            digits = rest;
        }
        for &digit in digits {
            text.push(char::from(b'0' + digit as u8));
        }
    }
    text.push('s');
    text
}

/// `n` (not negative) in decimal.
fn push_number(text: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        text.push(char::from(digit));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(super) mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A ledger that says `spent` for every scope and period, and counts how often it is asked.
    pub(crate) fn ledger(spent: Nanos) -> (SpendLookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let lookup: SpendLookup = Arc::new(move |_scope, _start| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                // Slow enough that concurrent first requests overlap.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(spent)
            })
        });
        (lookup, calls)
    }

    pub(crate) fn key(name: &str) -> Scope {
        Scope::Key(name.into())
    }

    pub(crate) fn team(name: &str) -> Scope {
        Scope::Team(name.into())
    }

    pub(crate) fn rate(scope: Scope, rpm: Option<u64>, tpm: Option<u64>) -> RateLimit {
        RateLimit { scope, rpm, tpm }
    }

    pub(crate) fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
            .unwrap_or("")
    }

    const USD: Nanos = 1_000_000_000;

    #[tokio::test(start_paused = true)]
    async fn rpm_refuses_with_retry_after_until_the_bucket_refills() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        assert_eq!(limiter.redis_status(), RedisStatus::NotConfigured);
        let limits = [rate(key("ci-bot"), Some(3), None)];
        for _ in 0..3 {
            limiter.acquire(&limits, 10).await.unwrap();
        }
        let refused = limiter.acquire(&limits, 10).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::RateLimited);
        assert_eq!(
            refused.message,
            "rate limit of key `ci-bot` reached: 3 requests per minute; retry in 20s"
        );
        assert_eq!(refused.retry_after, Some(Duration::from_secs(20)));
        assert_eq!(
            header(&refused.headers, "x-ratelimit-remaining-requests"),
            "0"
        );
        assert_eq!(
            header(&refused.headers, "x-ratelimit-reset-requests"),
            "1m0s"
        );

        tokio::time::advance(Duration::from_millis(19_500)).await;
        let refused = limiter.acquire(&limits, 10).await.unwrap_err();
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.acquire(&limits, 10).await.unwrap();
        limiter.acquire(&limits, 10).await.unwrap_err();
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_is_corrected_by_settle_and_may_go_below_zero() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        let limits = [rate(key("k"), None, Some(1000))];
        let grant = limiter.acquire(&limits, 600).await.unwrap();
        assert_eq!(
            header(grant.headers(), "x-ratelimit-remaining-tokens"),
            "400"
        );
        // Used 500 fewer than estimated: they are given back.
        grant.settle(100);
        let grant = limiter.acquire(&limits, 900).await.unwrap();
        assert_eq!(header(grant.headers(), "x-ratelimit-remaining-tokens"), "0");
        // Used 1000 more than estimated: the bucket owes 1000.
        grant.settle(1900);
        let refused = limiter.acquire(&limits, 1).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::RateLimited);
        // 1001 tokens at 1000 per minute.
        assert_eq!(refused.retry_after, Some(Duration::from_secs(61)));
        assert!(refused
            .message
            .contains("1000 tokens per minute (this request needs up to 1)"));
        tokio::time::advance(Duration::from_secs(61)).await;
        limiter.acquire(&limits, 1).await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;

        // A settle with exactly the estimate changes nothing; dropping keeps the estimate.
        limiter.acquire(&limits, 10).await.unwrap().settle(10);
        drop(limiter.acquire(&limits, 10).await.unwrap());
        let grant = limiter.acquire(&limits, 0).await.unwrap();
        assert_eq!(
            header(grant.headers(), "x-ratelimit-remaining-tokens"),
            "980"
        );

        let never = limiter.acquire(&limits, 1001).await.unwrap_err();
        assert_eq!(never.kind, ErrorKind::RateLimited);
        assert_eq!(never.retry_after, None);
        assert!(
            never.message.contains("can never pass"),
            "{}",
            never.message
        );
        assert!(
            never.message.contains("key `k` is 1000 per minute"),
            "{}",
            never.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_takes_from_no_bucket() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        let model = Scope::Model("fast".into());
        let all = [
            rate(key("ci-bot"), Some(10), Some(10_000)),
            rate(team("platform"), Some(1), None),
            rate(model.clone(), Some(10), None),
        ];
        limiter.acquire(&all, 100).await.unwrap();
        let refused = limiter.acquire(&all, 100).await.unwrap_err();
        assert!(
            refused
                .message
                .starts_with("rate limit of team `platform` reached: 1 requests per minute"),
            "{}",
            refused.message
        );
        // Key and model gave one request and 100 tokens each, not two.
        let grant = limiter
            .acquire(
                &[
                    rate(key("ci-bot"), Some(10), Some(10_000)),
                    rate(model, Some(10), None),
                ],
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            header(grant.headers(), "x-ratelimit-remaining-requests"),
            "8"
        );
        assert_eq!(
            header(grant.headers(), "x-ratelimit-remaining-tokens"),
            "9800"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn headers_report_the_tightest_limit() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        let limits = [
            rate(key("k"), Some(60), Some(1000)),
            rate(team("t"), Some(10), Some(100_000)),
        ];
        let grant = limiter.acquire(&limits, 150).await.unwrap();
        let got: Vec<(String, String)> = grant
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let expected = [
            ("x-ratelimit-limit-requests", "10"),
            ("x-ratelimit-remaining-requests", "9"),
            ("x-ratelimit-reset-requests", "6s"),
            ("x-ratelimit-limit-tokens", "1000"),
            ("x-ratelimit-remaining-tokens", "850"),
            ("x-ratelimit-reset-tokens", "9s"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        assert_eq!(got, expected);

        assert!(limiter
            .acquire(&[], 150)
            .await
            .unwrap()
            .headers()
            .is_empty());
        let unlimited = [rate(key("k"), None, None)];
        assert!(limiter
            .acquire(&unlimited, 150)
            .await
            .unwrap()
            .headers()
            .is_empty());
        // Only requests limited: only request headers.
        let grant = limiter
            .acquire(&[rate(key("r"), Some(5), None)], 1)
            .await
            .unwrap();
        assert_eq!(grant.headers().len(), 3);

        assert_eq!(format_reset(0), "0s");
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1000), "1s");
        assert_eq!(format_reset(1500), "1.5s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_723_250), "1h2m3.25s");
        assert_eq!(format_reset(1_001), "1.001s");
        assert_eq!(format_reset(61_010), "1m1.01s");
        assert_eq!(format_reset(86_400_000), "24h0m0s");
        assert_eq!(format_reset(999), "999ms");
    }

    fn daily(scope: Scope, limit: Nanos) -> Budget {
        Budget {
            scope,
            limit,
            period: BudgetPeriod::Day,
        }
    }

    fn counter(limiter: &Limiter, budget: &Budget) -> Option<(Nanos, Nanos)> {
        let start = budget.period.bounds(clock::now_ms()).0;
        limiter
            .inner
            .local
            .counter(&(budget.scope.clone(), budget.period, start))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reserves_never_pass_the_limit() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        let budget = daily(team("platform"), 1000);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (limiter, budget) = (limiter.clone(), budget.clone());
                tokio::spawn(async move { limiter.reserve(&[budget], 30).await })
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(reservation) => held.push(reservation),
                Err(refused) => assert_eq!(refused.kind, ErrorKind::BudgetExceeded),
            }
        }
        assert_eq!(held.len(), 1000 / 30);
        assert_eq!(counter(&limiter, &budget), Some((0, 990)));
        drop(held);
        assert_eq!(counter(&limiter, &budget), Some((0, 0)));
    }

    #[tokio::test]
    async fn settle_spends_the_real_cost_and_drop_releases() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        let budget = daily(team("platform"), 5 * USD);
        let budgets = [budget.clone()];
        let first = limiter.reserve(&budgets, 3 * USD).await.unwrap();
        let refused = limiter.reserve(&budgets, 3 * USD).await.unwrap_err();
        let end = BudgetPeriod::Day.bounds(clock::now_ms()).1;
        assert_eq!(refused.kind, ErrorKind::BudgetExceeded);
        assert_eq!(
            refused.message,
            format!(
                "the daily budget of team `platform` cannot cover this request: $0.00 of $5.00 used, $3.00 held by requests in flight, and this request may cost up to $3.00; it resets at {}",
                clock::rfc3339(end)
            )
        );
        first.settle(USD + USD / 4);
        assert_eq!(counter(&limiter, &budget), Some((1_250_000_000, 0)));
        drop(limiter.reserve(&budgets, 3 * USD).await.unwrap());
        assert_eq!(counter(&limiter, &budget), Some((1_250_000_000, 0)));
        // Exactly up to the limit is allowed; the real cost may then overshoot it.
        let last = limiter.reserve(&budgets, 3_750_000_000).await.unwrap();
        last.settle(3_751_200_000);
        let refused = limiter.reserve(&budgets, 1).await.unwrap_err();
        assert_eq!(
            refused.message,
            format!(
                "the daily budget of team `platform` is spent: $5.0012 of $5.00 used; it resets at {}",
                clock::rfc3339(end)
            )
        );
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(86_400),
            "{wait:?}"
        );

        let total = Budget {
            scope: key("k"),
            limit: USD,
            period: BudgetPeriod::Total,
        };
        let refused = limiter.reserve(&[total], 2 * USD).await.unwrap_err();
        assert!(
            refused.message.ends_with("; it does not reset"),
            "{}",
            refused.message
        );
        assert_eq!(refused.retry_after, None);
        // No budgets: nothing to hold.
        limiter.reserve(&[], 2 * USD).await.unwrap().settle(USD);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_scope_and_period_is_seeded_from_the_ledger_once() {
        let (lookup, calls) = ledger(4 * USD);
        let limiter = Limiter::new(None, lookup).await;
        let budget = daily(key("ci-bot"), 5 * USD);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (limiter, budget) = (limiter.clone(), budget.clone());
                tokio::spawn(async move {
                    limiter
                        .reserve(&[budget], USD / 100)
                        .await
                        .map(|r| r.settle(USD / 100))
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(counter(&limiter, &budget), Some((4 * USD + USD / 2, 0)));
        let refused = limiter
            .reserve(std::slice::from_ref(&budget), USD)
            .await
            .unwrap_err();
        assert!(
            refused.message.contains("$4.50 of $5.00 used"),
            "{}",
            refused.message
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let weekly = Budget {
            period: BudgetPeriod::Week,
            ..budget.clone()
        };
        limiter.reserve(&[budget, weekly.clone()], 1).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        limiter
            .reserve(&[weekly, daily(key("other"), 5 * USD)], 1)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_ledger_lookup_refuses_and_is_asked_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let lookup: SpendLookup = Arc::new(move |_, _| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Err(Error::internal("the database is down"))
                } else {
                    Ok(0)
                }
            })
        });
        let limiter = Limiter::new(None, lookup).await;
        let budgets = [daily(key("k"), USD)];
        let failed = limiter.reserve(&budgets, 1).await.unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Internal);
        limiter.reserve(&budgets, 1).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_entries_are_swept() {
        let limiter = Limiter::new(None, ledger(0).0).await;
        limiter
            .acquire(&[rate(key("k"), Some(60), Some(1000))], 10)
            .await
            .unwrap();
        let held = limiter.reserve(&[daily(key("k"), USD)], 1).await.unwrap();
        let now = clock::now_ms();
        limiter.inner.local.sweep(now);
        assert_eq!(limiter.inner.local.sizes(), (2, 1));
        tokio::time::advance(Duration::from_secs(60)).await;
        // Buckets full again go; a budget with a reservation in flight stays.
        limiter.inner.local.sweep(now + 2 * 86_400_000);
        assert_eq!(limiter.inner.local.sizes(), (0, 1));
        drop(held);
        limiter.inner.local.sweep(now + 2 * 86_400_000);
        assert_eq!(limiter.inner.local.sizes(), (0, 0));
    }
}

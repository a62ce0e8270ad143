//! Per-target health: the circuit breaker, latency and error figures, and canary guards.
//!
//! The request path only *reads* a target's state to decide whether it may be tried
//! ([`TargetHealth::admit`], a couple of atomic loads while the circuit is closed); outcomes
//! are recorded after each attempt. Health outlives config reloads: the [`HealthRegistry`]
//! hands the same record to the rebuilt router for an unchanged target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{BreakerConfig, CanaryConfig};

/// Weight of the newest sample in the latency average.
const LATENCY_DECAY: f64 = 0.2;

/// A canary is not judged slower for a gap smaller than this: below it, differences between
/// fast upstreams are noise, and no user notices them in an LLM call.
const LATENCY_GAP_FLOOR_US: f64 = 50_000.0;

/// Health records by target, kept across reloads.
#[derive(Default)]
pub struct HealthRegistry {
    targets: Mutex<HashMap<String, Arc<TargetHealth>>>,
}

impl HealthRegistry {
    /// The record for a target, new if its key (which includes its breaker and canary config)
    /// was not seen before. Records of targets no longer configured are dropped.
    pub fn get(
        &self,
        key: &str,
        breaker: &BreakerConfig,
        canary: Option<&CanaryConfig>,
    ) -> Arc<TargetHealth> {
        let key = format!("{key} {breaker:?} {canary:?}");
        lock(&self.targets)
            .entry(key)
            .or_insert_with(|| Arc::new(TargetHealth::new(breaker.clone(), canary.cloned())))
            .clone()
    }

    /// Keeps only the records in `live` (called after a reload built a new router).
    pub fn retain(&self, live: &[Arc<TargetHealth>]) {
        lock(&self.targets).retain(|_, h| live.iter().any(|l| Arc::ptr_eq(l, h)));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the counters inconsistent in a harmful way.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Whether a request may go to a target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe of a half-open circuit.
    Probe,
    No,
}

pub struct TargetHealth {
    breaker: BreakerConfig,
    pub canary: Option<CanaryConfig>,
    epoch: Instant,
    /// Milliseconds since `epoch` until which the circuit is open; 0 while closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    rolled_back: AtomicBool,
    /// Latency average in microseconds (f64 bits).
    latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    window: Mutex<Window>,
}

/// Outcomes in one-second buckets over the breaker window, plus totals since the record began.
struct Window {
    buckets: Vec<(u64, u32, u32)>,
    requests: u64,
    failures: u64,
    /// Sum of the latencies of successful attempts, for a mean that one slow call cannot sway.
    latency_sum_us: f64,
    cooldown: Duration,
    opened: u64,
    last_error: Option<String>,
    /// Why a canary was rolled back.
    rollback_reason: Option<String>,
}

/// A snapshot for `/admin/models`.
#[derive(Debug, Serialize)]
pub struct HealthView {
    pub breaker: BreakerState,
    pub open_for_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub window_requests: u32,
    pub window_error_rate: f64,
    pub requests: u64,
    pub failures: u64,
    pub times_opened: u64,
    pub latency_ms: Option<f64>,
    pub last_error: Option<String>,
    pub canary_rolled_back: Option<bool>,
    pub canary_rollback_reason: Option<String>,
}

impl TargetHealth {
    pub fn new(breaker: BreakerConfig, canary: Option<CanaryConfig>) -> TargetHealth {
        let buckets = breaker.window.0.as_secs().max(1) as usize;
        let cooldown = breaker.cooldown.0;
        TargetHealth {
            breaker,
            canary,
            epoch: Instant::now(),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            rolled_back: AtomicBool::new(false),
            latency_us: AtomicU64::new(0f64.to_bits()),
            consecutive_failures: AtomicU32::new(0),
            window: Mutex::new(Window {
                buckets: vec![(u64::MAX, 0, 0); buckets],
                requests: 0,
                failures: 0,
                latency_sum_us: 0.0,
                cooldown,
                opened: 0,
                last_error: None,
                rollback_reason: None,
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn state(&self) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.now_ms() < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may be sent now. A half-open circuit lets exactly one probe through.
    pub fn admit(&self) -> Admit {
        match self.state() {
            BreakerState::Closed => Admit::Yes,
            BreakerState::Open => Admit::No,
            BreakerState::HalfOpen => {
                if self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    Admit::Probe
                } else {
                    Admit::No
                }
            }
        }
    }

    /// A canary whose guard tripped gets no traffic.
    pub fn is_rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Relaxed)
    }

    /// Average latency in microseconds, `None` before the first sample.
    pub fn latency_us(&self) -> Option<f64> {
        let v = f64::from_bits(self.latency_us.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    pub fn error_rate(&self) -> Option<f64> {
        let w = lock(&self.window);
        (w.requests > 0).then(|| w.failures as f64 / w.requests as f64)
    }

    pub fn requests(&self) -> u64 {
        lock(&self.window).requests
    }

    /// Mean latency of successful attempts since the record began, in microseconds. Canary
    /// guards judge on this rather than the decaying average, which a few slow calls on a
    /// busy machine can swing far for a target that gets little traffic.
    fn mean_latency_us(&self) -> Option<f64> {
        let w = lock(&self.window);
        let successes = w.requests - w.failures;
        (successes > 0).then(|| w.latency_sum_us / successes as f64)
    }

    /// Records an attempt that the target served (even if it refused the request as invalid:
    /// that is the client's fault, not the target's).
    pub fn record_success(&self, latency: Duration, probe: bool) {
        let sample = latency.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.latency_us.load(Ordering::Relaxed));
        let new = if old > 0.0 {
            old + LATENCY_DECAY * (sample - old)
        } else {
            sample
        };
        self.latency_us.store(new.to_bits(), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let mut w = lock(&self.window);
        self.count(&mut w, false);
        w.latency_sum_us += sample;
        if probe || self.open_until.load(Ordering::Acquire) != 0 {
            w.cooldown = self.breaker.cooldown.0;
            self.open_until.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::info!("circuit closed: the target answered its probe");
        }
    }

    /// Records an attempt the target failed (connection, timeout, 5xx, 429).
    pub fn record_failure(&self, error: &str, probe: bool) {
        let consecutive = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut w = lock(&self.window);
        self.count(&mut w, true);
        w.last_error = Some(error.chars().take(300).collect());
        let now = self.now_ms();
        let (window_requests, window_failures) = self.window_counts(&w, now);
        let ratio_tripped = window_requests >= self.breaker.min_requests
            && f64::from(window_failures)
                >= self.breaker.failure_ratio * f64::from(window_requests);
        let open = self.open_until.load(Ordering::Acquire) != 0;
        if probe {
            // The probe failed: stay open, for longer.
            w.cooldown = (w.cooldown * 2).min(self.breaker.max_cooldown.0);
            self.open_for(&mut w, now);
            self.probing.store(false, Ordering::Release);
        } else if !open && (consecutive >= self.breaker.consecutive_failures || ratio_tripped) {
            self.open_for(&mut w, now);
            tracing::warn!(
                consecutive,
                window_requests,
                window_failures,
                cooldown_ms = w.cooldown.as_millis() as u64,
                "circuit opened: {error}"
            );
        }
    }

    fn open_for(&self, w: &mut Window, now: u64) {
        w.opened += 1;
        self.open_until.store(
            now + w.cooldown.as_millis().max(1) as u64,
            Ordering::Release,
        );
    }

    fn count(&self, w: &mut Window, failed: bool) {
        let second = self.now_ms() / 1000;
        let len = w.buckets.len();
        let bucket = &mut w.buckets[(second as usize) % len];
        if bucket.0 != second {
            *bucket = (second, 0, 0);
        }
        bucket.1 += 1;
        bucket.2 += u32::from(failed);
        w.requests += 1;
        w.failures += u64::from(failed);
    }

    /// Requests and failures within the window ending now.
    fn window_counts(&self, w: &Window, now_ms: u64) -> (u32, u32) {
        let second = now_ms / 1000;
        let span = w.buckets.len() as u64;
        w.buckets
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && second.saturating_sub(*s) < span)
            .fold((0, 0), |(r, f), (_, br, bf)| (r + br, f + bf))
    }

    /// Judges a canary; rolls it back at most once. Returns the reason it was rolled back.
    ///
    /// A canary whose circuit breaker has opened is rolled back at once, whatever its sample
    /// count: left alone it would only be paused, and get traffic again once its upstream
    /// answered a probe, however often it fails. Otherwise, with `min_requests` samples, it is
    /// judged against its siblings' error rate and latency.
    pub fn judge_canary(&self, siblings: &[&TargetHealth]) -> Option<String> {
        let guard = self.canary.as_ref()?;
        if self.is_rolled_back() {
            return None;
        }
        let reason = self
            .breaker_opened()
            .or_else(|| self.compare_canary(guard, siblings))?;
        // Concurrent judges may reach a verdict together; only one rolls back (and logs).
        self.rolled_back
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        lock(&self.window).rollback_reason = Some(reason.clone());
        Some(reason)
    }

    /// Why the circuit opened, if it ever did.
    fn breaker_opened(&self) -> Option<String> {
        let w = lock(&self.window);
        (w.opened > 0).then(|| {
            format!(
                "its circuit breaker opened after {} failures in {} requests (last: {})",
                w.failures,
                w.requests,
                w.last_error.as_deref().unwrap_or("unknown error")
            )
        })
    }

    /// The canary's error rate and latency against its siblings', once it has enough samples.
    fn compare_canary(&self, guard: &CanaryConfig, siblings: &[&TargetHealth]) -> Option<String> {
        if self.requests() < u64::from(guard.min_requests) {
            return None;
        }
        let observed: Vec<&&TargetHealth> = siblings.iter().filter(|s| s.requests() > 0).collect();
        if observed.is_empty() {
            return None;
        }
        let (mut requests, mut failures) = (0u64, 0u64);
        for s in &observed {
            let w = lock(&s.window);
            requests += w.requests;
            failures += w.failures;
        }
        let baseline_errors = failures as f64 / requests.max(1) as f64;
        let canary_errors = self.error_rate().unwrap_or(0.0);
        let latencies: Vec<f64> = observed
            .iter()
            .filter_map(|s| s.mean_latency_us())
            .collect();
        if canary_errors > baseline_errors + guard.max_error_rate_increase {
            return Some(format!(
                "error rate {:.1}% against {:.1}% on the other targets",
                canary_errors * 100.0,
                baseline_errors * 100.0
            ));
        }
        match (self.mean_latency_us(), latencies.is_empty()) {
            (Some(mine), false) => {
                let baseline = latencies.iter().sum::<f64>() / latencies.len() as f64;
                (mine > baseline * guard.max_latency_ratio
                    && mine - baseline > LATENCY_GAP_FLOOR_US)
                    .then(|| {
                        format!(
                            "latency {:.1} ms against {:.1} ms on the other targets",
                            mine / 1e3,
                            baseline / 1e3
                        )
                    })
            }
            _ => None,
        }
    }

    pub fn view(&self) -> HealthView {
        let w = lock(&self.window);
        let now = self.now_ms();
        let (window_requests, window_failures) = self.window_counts(&w, now);
        let until = self.open_until.load(Ordering::Acquire);
        HealthView {
            breaker: self.state(),
            open_for_ms: (until > now).then(|| until - now),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            window_requests,
            window_error_rate: if window_requests == 0 {
                0.0
            } else {
                f64::from(window_failures) / f64::from(window_requests)
            },
            requests: w.requests,
            failures: w.failures,
            times_opened: w.opened,
            latency_ms: self.latency_us().map(|us| us / 1e3),
            last_error: w.last_error.clone(),
            canary_rolled_back: self.canary.as_ref().map(|_| self.is_rolled_back()),
            canary_rollback_reason: w.rollback_reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn breaker() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 10,
            window: ConfigDuration::secs(10),
            cooldown: ConfigDuration::secs(5),
            max_cooldown: ConfigDuration::secs(20),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let h = TargetHealth::new(breaker(), None);
        for _ in 0..2 {
            h.record_failure("boom", false);
        }
        assert_eq!(h.admit(), Admit::Yes);
        h.record_failure("boom", false);
        assert_eq!(h.state(), BreakerState::Open);
        assert_eq!(h.admit(), Admit::No);
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert_eq!(h.admit(), Admit::No);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(h.state(), BreakerState::HalfOpen);
        assert_eq!(h.admit(), Admit::Probe);
        // Only one probe at a time.
        assert_eq!(h.admit(), Admit::No);
        h.record_success(Duration::from_millis(10), true);
        assert_eq!(h.state(), BreakerState::Closed);
        assert_eq!(h.admit(), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_doubles_the_cooldown_up_to_the_cap() {
        let h = TargetHealth::new(breaker(), None);
        for _ in 0..3 {
            h.record_failure("boom", false);
        }
        let mut expected = 5_000;
        for _ in 0..4 {
            tokio::time::advance(Duration::from_millis(expected)).await;
            assert_eq!(h.admit(), Admit::Probe);
            h.record_failure("still down", true);
            expected = (expected * 2).min(20_000);
            tokio::time::advance(Duration::from_millis(expected - 1)).await;
            assert_eq!(h.admit(), Admit::No, "open for {expected} ms");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(h.admit(), Admit::Probe);
            h.record_failure("still down", true);
            expected = (expected * 2).min(20_000);
        }
        assert_eq!(h.view().open_for_ms, Some(20_000));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_within_the_window() {
        let h = TargetHealth::new(breaker(), None);
        for i in 0..12 {
            // Alternate, so there are never three failures in a row.
            if i % 2 == 0 {
                h.record_success(Duration::from_millis(5), false);
            } else {
                h.record_failure("flaky", false);
            }
        }
        assert_eq!(h.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn canary_with_more_errors_than_its_siblings_is_rolled_back() {
        let canary = TargetHealth::new(
            breaker(),
            Some(CanaryConfig {
                min_requests: 20,
                ..CanaryConfig::default()
            }),
        );
        let stable = TargetHealth::new(breaker(), None);
        for i in 0..40 {
            stable.record_success(Duration::from_millis(10), false);
            if i % 3 == 0 {
                canary.record_failure("bad build", false);
            } else {
                canary.record_success(Duration::from_millis(10), false);
            }
        }
        let reason = canary.judge_canary(&[&stable]);
        assert!(reason.is_some_and(|r| r.contains("error rate")));
        assert!(canary.is_rolled_back());
        let healthy = TargetHealth::new(
            breaker(),
            Some(CanaryConfig {
                min_requests: 20,
                ..CanaryConfig::default()
            }),
        );
        for _ in 0..40 {
            healthy.record_success(Duration::from_millis(12), false);
        }
        assert_eq!(healthy.judge_canary(&[&stable]), None);
        assert!(!healthy.is_rolled_back());
    }

    #[tokio::test(start_paused = true)]
    async fn a_canary_whose_breaker_opens_is_rolled_back_before_min_requests() {
        let canary = TargetHealth::new(
            breaker(),
            Some(CanaryConfig {
                min_requests: 50,
                ..CanaryConfig::default()
            }),
        );
        let stable = TargetHealth::new(breaker(), None);
        stable.record_success(Duration::from_millis(10), false);
        for _ in 0..2 {
            canary.record_failure("bad build", false);
            assert_eq!(canary.judge_canary(&[&stable]), None);
        }
        canary.record_failure("bad build", false);
        let reason = canary.judge_canary(&[&stable]);
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("circuit breaker opened")),
            "{reason:?}"
        );
        assert!(canary.is_rolled_back());
        assert_eq!(canary.judge_canary(&[&stable]), None, "rolled back once");
        assert!(canary
            .view()
            .canary_rollback_reason
            .is_some_and(|r| r.contains("bad build")));
    }
}

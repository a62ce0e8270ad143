//! Routing: from a public model name to upstream attempts — every target in strategy order
//! (skipping open circuits), retries with backoff, a timeout per attempt, then fallback models —
//! until one attempt succeeds or none is left.
//!
//! Residency: a caller restricted to regions ([`Resolved::regions`]) is only routed to targets
//! whose provider is in one of them — first attempts, retries and fallbacks alike; a target
//! whose provider has no `region` serves only unrestricted callers. Regions are numbered when
//! the router is built, so checking a target is one AND of bit sets ([`RegionSet`]).

pub mod health;
mod strategy;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, ModelConfig, Strategy};
use crate::error::{Error, ErrorKind, Origin, Result};
use crate::pricing::{self, Price};
use crate::providers::Provider;
use crate::telemetry::metrics::{AttemptSeries, ModelSeries};
use crate::telemetry::{self, Telemetry};
use health::{Admit, HealthRegistry, TargetHealth};

pub struct Target {
    pub provider: Arc<Provider>,
    /// Upstream model name; `*` stands for the suffix of a wildcard public name.
    pub model: String,
    pub weight: u32,
    /// The configured price, else (for a concrete model) the built-in list price.
    pub price: Option<Price>,
    pub context_window: Option<u64>,
    pub health: Arc<TargetHealth>,
    /// Its provider's region (empty when the provider has none).
    pub region: RegionSet,
    /// Its attempts' metrics (`None` with metrics off).
    pub metrics: Option<Arc<AttemptSeries>>,
}

/// A set of provider regions, one bit each, numbered by the [`Router`] that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionSet(u64);

impl RegionSet {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn intersects(self, other: RegionSet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn intersection(self, other: RegionSet) -> RegionSet {
        RegionSet(self.0 & other.0)
    }
}

/// Distinct provider regions a config may have: a [`RegionSet`] has a bit for each.
pub const MAX_REGIONS: usize = 64;

/// A public model and how to serve it.
pub struct Model {
    pub name: Arc<str>,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub fallbacks: Vec<String>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// The model's capacity across all callers.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Its calls' metrics (`None` with metrics off).
    pub metrics: Option<Arc<ModelSeries>>,
    next: AtomicUsize,
}

/// How long to wait before a retry.
#[derive(Clone, Copy)]
struct Backoff {
    base: Duration,
    max: Duration,
}

/// Public models by name, built once per config.
pub struct Router {
    models: HashMap<String, Arc<Model>>,
    /// `prefix/` of wildcard names, longest first.
    wildcards: Vec<(String, Arc<Model>)>,
    backoff: Backoff,
    /// The providers' regions, sorted; a region's position is its bit in a [`RegionSet`].
    regions: Vec<String>,
}

/// A public name resolved to its model; `suffix` is what a wildcard matched.
pub struct Resolved {
    pub model: Arc<Model>,
    pub suffix: Option<String>,
    /// The regions the caller may be served from; `None`: any target, with a region or not.
    pub regions: Option<RegionSet>,
}

/// The outcome of routing, with what the client is told about how it was served.
pub struct Routed<T> {
    pub result: Result<T>,
    /// The provider and upstream model of the last attempt.
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<String>,
    pub attempts: u32,
    /// The price of the target that answered, to cost its usage.
    pub price: Option<Price>,
    /// `x-ratelimit-*` headers for the answer, from the caller's rate limits.
    pub limit_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// What a strategy may look at besides the targets.
pub struct RequestShape {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Router {
    pub fn new(
        config: &Config,
        providers: &HashMap<String, Arc<Provider>>,
        registry: &HealthRegistry,
        telemetry: &Telemetry,
    ) -> Router {
        let metrics = telemetry.metrics();
        let mut models = HashMap::new();
        let mut wildcards = Vec::new();
        let breaker = &config.routing.breaker;
        let mut regions: Vec<String> = config
            .providers
            .values()
            .filter_map(|p| p.region.clone())
            .collect();
        regions.sort_unstable();
        regions.dedup();
        // `proxima check` refuses more; past the limit a region would match nothing.
        regions.truncate(MAX_REGIONS);
        for (name, m) in &config.models {
            let targets = m
                .targets
                .iter()
                .filter_map(|t| {
                    let key = format!("{name}/{}/{}", t.provider, t.model);
                    let provider = providers.get(&t.provider)?;
                    Some(Target {
                        region: region_set(&regions, provider.region.as_slice()),
                        provider: provider.clone(),
                        model: t.model.clone(),
                        weight: t.weight,
                        // A concrete model's list price is looked up once, here; a wildcard
                        // target's depends on the name each request fills in.
                        price: t.price.or(m.price).or_else(|| {
                            (!t.model.contains('*'))
                                .then(|| pricing::builtin(&t.model))
                                .flatten()
                        }),
                        context_window: t.context_window.or(m.context_window),
                        health: registry.get(&key, breaker, t.canary.as_ref()),
                        metrics: metrics.map(|r| r.attempt_series(name, &t.provider)),
                    })
                })
                .collect();
            let model = Arc::new(Model {
                name: Arc::from(name.as_str()),
                strategy: m.strategy,
                targets,
                fallbacks: m.fallbacks.clone(),
                retries: m.retries,
                timeout: m.timeout.map(|t| t.0),
                rpm: m.rpm,
                tpm: m.tpm,
                metrics: metrics.map(|r| r.model_series(name, &answering_providers(config, m))),
                next: AtomicUsize::new(0),
            });
            match name.strip_suffix('*') {
                Some(prefix) => wildcards.push((prefix.to_owned(), model)),
                None => {
                    models.insert(name.clone(), model);
                }
            }
        }
        wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let router = Router {
            models,
            wildcards,
            backoff: Backoff {
                base: config.routing.retry_backoff.0,
                max: config.routing.max_retry_wait.0,
            },
            regions,
        };
        registry.retain(
            &router
                .all_models()
                .flat_map(|m| m.targets.iter().map(|t| t.health.clone()))
                .collect::<Vec<_>>(),
        );
        router
    }

    /// Every model, concrete and wildcard.
    pub fn all_models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models
            .values()
            .chain(self.wildcards.iter().map(|(_, m)| m))
    }

    pub fn resolve(&self, name: &str) -> Option<Resolved> {
        if let Some(model) = self.models.get(name) {
            return Some(Resolved {
                model: model.clone(),
                suffix: None,
                regions: None,
            });
        }
        self.wildcards.iter().find_map(|(prefix, model)| {
            let suffix = name.strip_prefix(prefix.as_str())?;
            (!suffix.is_empty()).then(|| Resolved {
                model: model.clone(),
                suffix: Some(suffix.to_owned()),
                regions: None,
            })
        })
    }

    /// The regions named, as a set; a name no provider has adds nothing, since nothing there
    /// could serve.
    pub fn region_set(&self, names: &[String]) -> RegionSet {
        region_set(&self.regions, names)
    }

    /// Whether `resolved` has a target, itself or among its fallbacks, in `regions`.
    pub fn serves_in(&self, resolved: &Resolved, regions: RegionSet) -> bool {
        let in_regions = |model: &Model| model.targets.iter().any(|t| t.region.intersects(regions));
        in_regions(&resolved.model)
            || resolved
                .model
                .fallbacks
                .iter()
                .filter_map(|f| self.resolve(f))
                .any(|f| in_regions(&f.model))
    }

    /// The most a request of `shape` can cost on any target `resolved` may route it to,
    /// fallbacks included: what a budget reserves before the call.
    pub fn max_cost(&self, resolved: &Resolved, shape: &RequestShape) -> pricing::Nanos {
        let most = |model: &Model, suffix: Option<&str>| {
            model
                .targets
                .iter()
                .map(|t| {
                    t.price(&t.upstream_model(suffix)).map_or(0, |p| {
                        pricing::nanos(p.estimate(shape.input_tokens, shape.output_tokens))
                    })
                })
                .max()
                .unwrap_or(0)
        };
        let fallbacks = resolved.model.fallbacks.iter().filter_map(|f| {
            let fallback = self.resolve(f)?;
            Some(most(&fallback.model, fallback.suffix.as_deref()))
        });
        fallbacks.fold(
            most(&resolved.model, resolved.suffix.as_deref()),
            pricing::Nanos::max,
        )
    }

    /// The concrete public model names, sorted (wildcards are not listed).
    pub fn public_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Serves `resolved` with `attempt`, called once per upstream attempt with the provider
    /// and the upstream model name.
    ///
    /// Per model in the chain (the model, then its fallbacks): every target once, in strategy
    /// order, skipping open circuits; then up to `retries` more attempts, cycling through the
    /// targets again in the same order, each after a backoff. A model's `timeout` bounds each
    /// of its attempts (for a stream, until its first chunk), so a hung target leaves the next
    /// one its chance. Errors that another attempt cannot fix end the search at once, except a
    /// prompt too long for the target, which moves on to targets with a larger context window.
    pub async fn execute<T, F, Fut>(
        &self,
        resolved: &Resolved,
        shape: &RequestShape,
        mut attempt: F,
    ) -> Routed<T>
    where
        F: FnMut(Arc<Provider>, String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempts = 0;
        let mut last: Option<(Arc<str>, String, Error)> = None;
        let mut skipped_open = false;
        // After a context-length refusal, only targets with a larger window are worth trying.
        let mut min_window: Option<u64> = None;
        let mut chain = vec![(resolved.model.clone(), resolved.suffix.clone())];
        for fallback in &resolved.model.fallbacks {
            if let Some(r) = self.resolve(fallback) {
                chain.push((r.model, r.suffix));
            }
        }
        for (model, suffix) in chain {
            let order = strategy::order(&model, shape, resolved.regions);
            let mut retries_left = model.retries;
            // Positions in `order` considered so far: the first turn is one attempt per target,
            // every position past it is a retry.
            let mut cursor = 0usize;
            loop {
                let retry = cursor >= order.len();
                if order.is_empty() || (retry && retries_left == 0) {
                    break;
                }
                // The next admitted target; a retry looks at most one full turn ahead.
                let turn_end = if retry {
                    cursor + order.len()
                } else {
                    order.len()
                };
                let mut picked = None;
                while cursor < turn_end {
                    let index = order[cursor % order.len()];
                    cursor += 1;
                    let target = &model.targets[index];
                    if min_window.is_some_and(|min| target.context_window.unwrap_or(0) < min) {
                        continue;
                    }
                    match target.health.admit() {
                        Admit::No => skipped_open = true,
                        admit => {
                            picked = Some((index, admit == Admit::Probe));
                            break;
                        }
                    }
                }
                let Some((index, probe)) = picked else {
                    if retry {
                        break;
                    }
                    continue;
                };
                let target = &model.targets[index];
                if retry {
                    retries_left -= 1;
                    let hint = last.as_ref().and_then(|(_, _, e)| e.retry_after);
                    let wait = self.backoff.wait(model.retries - retries_left, hint);
                    tokio::time::sleep(wait).await;
                }
                attempts += 1;
                let upstream_model = target.upstream_model(suffix.as_deref());
                let started = Instant::now();
                // Boxed once here: a provider call's future takes kilobytes, and unboxed it
                // would be moved whole through each wrapper below (timeout, trace scope).
                let call = Box::pin(attempt(target.provider.clone(), upstream_model.clone()));
                let timed = async {
                    match model.timeout {
                        Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                            Err(Error::new(
                                ErrorKind::UpstreamTimeout,
                                format!(
                                    "provider `{}` did not answer within the timeout of model `{}` ({limit:?})",
                                    target.provider.name, model.name
                                ),
                            ))
                        }),
                        None => call.await,
                    }
                };
                let outcome = telemetry::trace::attempt(
                    target.metrics.as_deref(),
                    &target.provider.name,
                    &upstream_model,
                    timed,
                )
                .await;
                match outcome {
                    Ok(value) => {
                        target.health.record_success(started.elapsed(), probe);
                        self.judge_canary(&model, index);
                        return Routed {
                            result: Ok(value),
                            provider: Some(target.provider.name.clone()),
                            price: target.price(&upstream_model),
                            upstream_model: Some(upstream_model),
                            attempts,
                            limit_headers: Vec::new(),
                        };
                    }
                    Err(error) => {
                        if error.kind.origin() == Origin::Client {
                            // The target worked; the request was at fault.
                            target.health.record_success(started.elapsed(), probe);
                        } else {
                            target.health.record_failure(&error.message, probe);
                        }
                        self.judge_canary(&model, index);
                        tracing::warn!(
                            provider = &*target.provider.name,
                            model = %upstream_model,
                            attempt = attempts,
                            code = error.kind.code(),
                            "upstream attempt failed: {}", error.message
                        );
                        let kind = error.kind;
                        let window = target.context_window;
                        last = Some((target.provider.name.clone(), upstream_model, error));
                        if kind == ErrorKind::ContextTooLong {
                            // Not a retry: the next attempt goes to a larger target, if any.
                            min_window = Some(window.unwrap_or(0) + 1);
                            if retry {
                                retries_left += 1;
                            }
                            continue;
                        }
                        if !kind.is_retryable() {
                            return Routed::failed(last, attempts, false);
                        }
                    }
                }
            }
        }
        Routed::failed(last, attempts, skipped_open)
    }

    fn judge_canary(&self, model: &Model, index: usize) {
        let target = &model.targets[index];
        if target.health.canary.is_none() {
            return;
        }
        let siblings: Vec<&TargetHealth> = model
            .targets
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != index && t.health.canary.is_none())
            .map(|(_, t)| &*t.health)
            .collect();
        if let Some(reason) = target.health.judge_canary(&siblings) {
            tracing::warn!(
                model = %model.name,
                provider = &*target.provider.name,
                upstream_model = %target.model,
                "canary rolled back, its traffic goes to the other targets until its config changes: {reason}"
            );
        }
    }
}

impl Backoff {
    /// Exponential backoff with jitter, or the upstream's `retry-after` when it gave one;
    /// never more than `max`.
    fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or_else(|| {
            let exp = self.base.saturating_mul(1 << retry.min(10));
            exp.mul_f64(0.5 + fastrand::f64())
        });
        wait.min(self.max)
    }
}

impl<T> Routed<T> {
    fn failed(
        last: Option<(Arc<str>, String, Error)>,
        attempts: u32,
        skipped_open: bool,
    ) -> Routed<T> {
        match last {
            Some((provider, model, error)) => Routed {
                result: Err(error),
                provider: Some(provider),
                upstream_model: Some(model),
                attempts,
                price: None,
                limit_headers: Vec::new(),
            },
            None => Routed {
                result: Err(Error::new(
                    ErrorKind::NoHealthyUpstream,
                    if skipped_open {
                        "every target of this model is failing and its circuit is open; try again shortly"
                    } else {
                        "no target of this model can serve this request"
                    },
                )
                .with_retry_after(skipped_open.then_some(Duration::from_secs(1)))),
                provider: None,
                upstream_model: None,
                attempts,
                price: None,
                limit_headers: Vec::new(),
            },
        }
    }
}

/// The bits of the regions in `names`, numbered by their place in `regions`.
fn region_set(regions: &[String], names: &[String]) -> RegionSet {
    RegionSet(
        regions
            .iter()
            .enumerate()
            .filter(|(_, r)| names.contains(r))
            .fold(0, |bits, (i, _)| bits | 1 << i),
    )
}

/// The providers that can answer for model `m`: its targets' and its fallbacks' targets'.
fn answering_providers<'c>(config: &'c Config, m: &'c ModelConfig) -> Vec<&'c str> {
    let fallbacks = m.fallbacks.iter().filter_map(|f| config.models.get(f));
    std::iter::once(m)
        .chain(fallbacks)
        .flat_map(|m| m.targets.iter().map(|t| t.provider.as_str()))
        .collect()
}

impl Target {
    /// The upstream model this target calls for a public name whose wildcard matched `suffix`.
    pub fn upstream_model(&self, suffix: Option<&str>) -> String {
        match suffix {
            Some(suffix) => self.model.replace('*', suffix),
            None => self.model.clone(),
        }
    }

    /// Whether this target may serve a caller restricted to `regions` (`None`: any caller).
    pub fn serves_in(&self, regions: Option<RegionSet>) -> bool {
        regions.is_none_or(|r| self.region.intersects(r))
    }

    /// This target's price: configured, else the built-in list price.
    pub fn price(&self, upstream_model: &str) -> Option<Price> {
        self.price.or_else(|| pricing::builtin(upstream_model))
    }
}

//! Routing: from a public model name to upstream attempts — target choice by strategy,
//! retries, then fallback models — until one attempt succeeds or none is left.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Strategy};
use crate::error::{Error, ErrorKind, Result};
use crate::providers::Provider;

/// Longest wait between two attempts on the same target, whatever `retry-after` says.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const BASE_BACKOFF: Duration = Duration::from_millis(50);

pub struct Target {
    pub provider: Arc<Provider>,
    /// Upstream model name; `*` stands for the suffix of a wildcard public name.
    pub model: String,
    pub weight: u32,
}

/// A public model and how to serve it.
pub struct Model {
    pub name: String,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub fallbacks: Vec<String>,
    pub retries: u32,
    next: AtomicUsize,
}

/// Public models by name, built once per config.
pub struct Router {
    models: HashMap<String, Arc<Model>>,
    /// `prefix/` of wildcard names, longest first.
    wildcards: Vec<(String, Arc<Model>)>,
}

/// A public name resolved to its model; `suffix` is what a wildcard matched.
pub struct Resolved {
    pub model: Arc<Model>,
    pub suffix: Option<String>,
}

/// The outcome of routing, with what the client is told about how it was served.
pub struct Routed<T> {
    pub result: Result<T>,
    /// The provider and upstream model of the last attempt.
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<String>,
    pub attempts: u32,
}

impl Router {
    pub fn new(config: &Config, providers: &HashMap<String, Arc<Provider>>) -> Router {
        let mut models = HashMap::new();
        let mut wildcards = Vec::new();
        for (name, m) in &config.models {
            let model = Arc::new(Model {
                name: name.clone(),
                strategy: m.strategy,
                targets: m
                    .targets
                    .iter()
                    .filter_map(|t| {
                        Some(Target {
                            provider: providers.get(&t.provider)?.clone(),
                            model: t.model.clone(),
                            weight: t.weight,
                        })
                    })
                    .collect(),
                fallbacks: m.fallbacks.clone(),
                retries: m.retries,
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
        Router { models, wildcards }
    }

    pub fn resolve(&self, name: &str) -> Option<Resolved> {
        if let Some(model) = self.models.get(name) {
            return Some(Resolved {
                model: model.clone(),
                suffix: None,
            });
        }
        self.wildcards.iter().find_map(|(prefix, model)| {
            let suffix = name.strip_prefix(prefix.as_str())?;
            (!suffix.is_empty()).then(|| Resolved {
                model: model.clone(),
                suffix: Some(suffix.to_owned()),
            })
        })
    }

    /// The concrete public model names, sorted (wildcards are not listed).
    pub fn public_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Serves `resolved` with `attempt`, called once per upstream attempt with the provider
    /// and the upstream model name. Errors a retry cannot fix end the search at once.
    pub async fn execute<T, F, Fut>(&self, resolved: &Resolved, mut attempt: F) -> Routed<T>
    where
        F: FnMut(Arc<Provider>, String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempts = 0;
        let mut last: Option<(Arc<str>, String, Error)> = None;
        let mut chain = vec![(resolved.model.clone(), resolved.suffix.clone())];
        for fallback in &resolved.model.fallbacks {
            if let Some(r) = self.resolve(fallback) {
                chain.push((r.model, r.suffix));
            }
        }
        for (model, suffix) in chain {
            let order = model.order();
            if order.is_empty() {
                continue;
            }
            let mut previous: Option<usize> = None;
            for k in 0..=model.retries as usize {
                let index = order[k % order.len()];
                let target = &model.targets[index];
                if previous == Some(index) {
                    let hint = last.as_ref().and_then(|(_, _, e)| e.retry_after);
                    tokio::time::sleep(backoff(k as u32, hint)).await;
                }
                previous = Some(index);
                let upstream_model = match &suffix {
                    Some(suffix) => target.model.replace('*', suffix),
                    None => target.model.clone(),
                };
                attempts += 1;
                match attempt(target.provider.clone(), upstream_model.clone()).await {
                    Ok(value) => {
                        return Routed {
                            result: Ok(value),
                            provider: Some(target.provider.name.clone()),
                            upstream_model: Some(upstream_model),
                            attempts,
                        }
                    }
                    Err(error) => {
                        let retryable = error.kind.is_retryable();
                        tracing::warn!(
                            provider = &*target.provider.name,
                            model = %upstream_model,
                            attempt = attempts,
                            code = error.kind.code(),
                            "upstream attempt failed: {}", error.message
                        );
                        last = Some((target.provider.name.clone(), upstream_model, error));
                        if !retryable {
                            return Routed::failed(last, attempts);
                        }
                    }
                }
            }
        }
        Routed::failed(last, attempts)
    }
}

impl<T> Routed<T> {
    fn failed(last: Option<(Arc<str>, String, Error)>, attempts: u32) -> Routed<T> {
        match last {
            Some((provider, model, error)) => Routed {
                result: Err(error),
                provider: Some(provider),
                upstream_model: Some(model),
                attempts,
            },
            None => Routed {
                result: Err(Error::new(
                    ErrorKind::NoHealthyUpstream,
                    "no target of this model is available",
                )),
                provider: None,
                upstream_model: None,
                attempts,
            },
        }
    }
}

impl Model {
    /// Target indices in the order this request should try them.
    fn order(&self) -> Vec<usize> {
        let n = self.targets.len();
        match self.strategy {
            Strategy::Priority => (0..n).collect(),
            Strategy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|i| (start + i) % n).collect()
            }
            Strategy::Weighted => {
                // Weighted sampling without replacement: the first pick follows the weights,
                // and so does each retry among the targets left.
                let mut left: Vec<usize> = (0..n).filter(|&i| self.targets[i].weight > 0).collect();
                let mut order = Vec::with_capacity(left.len());
                while !left.is_empty() {
                    let total: u64 = left
                        .iter()
                        .map(|&i| u64::from(self.targets[i].weight))
                        .sum();
                    let mut pick = fastrand::u64(0..total);
                    let pos = left
                        .iter()
                        .position(|&i| {
                            let w = u64::from(self.targets[i].weight);
                            if pick < w {
                                true
                            } else {
                                pick -= w;
                                false
                            }
                        })
                        .unwrap_or(0);
                    order.push(left.remove(pos));
                }
                order
            }
        }
    }
}

/// Exponential backoff with jitter, or the upstream's `retry-after` when it gave one.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let wait = retry_after.unwrap_or_else(|| {
        let exp = BASE_BACKOFF.saturating_mul(1 << attempt.min(6));
        exp.mul_f64(0.5 + fastrand::f64())
    });
    wait.min(MAX_BACKOFF)
}

//! The order in which one request tries a model's targets, by the model's strategy.

use std::sync::atomic::Ordering;

use super::{Model, RegionSet, RequestShape};
use crate::config::Strategy;

/// Target indices in the order this request should try them. Rolled-back canaries and targets
/// outside the caller's `regions` are left out; open circuits are skipped later, when an
/// attempt is due, so they can recover.
pub fn order(model: &Model, shape: &RequestShape, regions: Option<RegionSet>) -> Vec<usize> {
    let live: Vec<usize> = (0..model.targets.len())
        .filter(|&i| {
            let target = &model.targets[i];
            !target.health.is_rolled_back() && target.serves_in(regions)
        })
        .collect();
    match model.strategy {
        Strategy::Priority => live,
        Strategy::RoundRobin => {
            if live.is_empty() {
                return live;
            }
            let start = model.next.fetch_add(1, Ordering::Relaxed);
            (0..live.len())
                .map(|i| live[(start + i) % live.len()])
                .collect()
        }
        Strategy::Weighted => weighted(model, live),
        Strategy::LeastLatency => least_latency(model, live),
        Strategy::LeastCost => least_cost(model, live, shape),
    }
}

/// Weighted sampling without replacement: the first pick follows the weights, and so does
/// each retry among the targets left.
fn weighted(model: &Model, mut left: Vec<usize>) -> Vec<usize> {
    left.retain(|&i| model.targets[i].weight > 0);
    let mut order = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left
            .iter()
            .map(|&i| u64::from(model.targets[i].weight))
            .sum();
        let mut pick = fastrand::u64(0..total);
        let pos = left
            .iter()
            .position(|&i| {
                let w = u64::from(model.targets[i].weight);
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

/// Power of two choices: of two random targets, the one with the lower latency average goes
/// first (a target without samples counts as fastest, so new targets get measured); the rest
/// follow by latency.
fn least_latency(model: &Model, mut live: Vec<usize>) -> Vec<usize> {
    let latency = |i: usize| model.targets[i].health.latency_us().unwrap_or(0.0);
    if live.len() >= 2 {
        let a = fastrand::usize(0..live.len());
        let mut b = fastrand::usize(0..live.len() - 1);
        if b >= a {
            b += 1;
        }
        let first = if latency(live[a]) <= latency(live[b]) {
            a
        } else {
            b
        };
        let winner = live.remove(first);
        live.sort_by(|&x, &y| latency(x).total_cmp(&latency(y)));
        live.insert(0, winner);
    }
    live
}

/// Cheapest first for this request's estimated tokens; targets without a known price last.
fn least_cost(model: &Model, mut live: Vec<usize>, shape: &RequestShape) -> Vec<usize> {
    let cost = |i: usize| {
        let t = &model.targets[i];
        t.price(&t.model).map_or(f64::INFINITY, |p| {
            p.estimate(shape.input_tokens, shape.output_tokens)
        })
    };
    // Shuffle first so equal prices share the load.
    fastrand::shuffle(&mut live);
    live.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)));
    live
}

//! Phase 3, limit: takes the call's share of every rate limit and budget that applies — the
//! caller's, its team's and the model's — all or none. Fails with 429 `rate_limit_exceeded` or
//! `budget_exceeded`, with `retry-after` when waiting will help and the `x-ratelimit-*` state.
//! What it took is held by the call's meter, which settles it with the real usage.
//!
//! Tokens per minute are charged the prompt plus the `max_tokens` the client asked for (none
//! when it set no limit, as OpenAI counts); the real usage corrects the charge after the call.
//! A budget reserves the most the call could cost, so concurrent calls cannot overspend it.

use super::prepare::{Measure, Prepared};
use super::Exchange;
use crate::config::BudgetConfig;
use crate::error::Result;
use crate::policy::limits::{Budget, RateLimit, Scope};
use crate::pricing;
use crate::router::RequestShape;

/// Output tokens a budget reserves when the client set no limit: a reservation must be an
/// upper bound for most answers, or concurrent requests overshoot the budget.
const DEFAULT_OUTPUT_RESERVE: u32 = 4096;

/// Takes the call's share of its limits and budgets; on success the meter holds it and the
/// answer will carry the `x-ratelimit-*` headers.
pub async fn charge<R: Measure>(exchange: &mut Exchange<'_>, prepared: &Prepared<R>) -> Result<()> {
    let (limits, budgets) = applicable(exchange);
    if limits.is_empty() && budgets.is_empty() {
        return Ok(());
    }
    let prompt = prepared.prompt_tokens().await;
    let max_output = prepared.request.max_output();
    let tokens = if limits.iter().any(|l| l.tpm.is_some()) {
        prompt + u64::from(max_output.unwrap_or(0))
    } else {
        0
    };
    let max_cost = if budgets.is_empty() {
        0
    } else {
        let shape = RequestShape {
            input_tokens: prompt,
            output_tokens: u64::from(max_output.unwrap_or(DEFAULT_OUTPUT_RESERVE)),
        };
        exchange
            .cx
            .gateway
            .router
            .max_cost(&exchange.resolved, &shape)
    };
    let limiter = &exchange.cx.services.limiter;
    // Both at once: with Redis, one round trip of waiting instead of two.
    let (grant, reservation) = tokio::join!(limiter.acquire(&limits, tokens), async {
        if budgets.is_empty() {
            Ok(None)
        } else {
            limiter.reserve(&budgets, max_cost).await.map(Some)
        }
    });
    // A refusal gives back what the other check took: a dropped reservation is released, a
    // grant settled at zero returns its tokens.
    let grant = grant?;
    exchange.headers.extend_from_slice(grant.headers());
    match reservation {
        Ok(reservation) => {
            exchange.meter.hold(grant, reservation);
            Ok(())
        }
        Err(e) => {
            grant.settle(0);
            Err(e)
        }
    }
}

/// Takes what an answer from the response cache takes: one request from every rate limit that
/// counts requests — a flood of repeats is still a flood — but no tokens and no budget, since
/// no model is called.
pub async fn charge_cached(exchange: &mut Exchange<'_>) -> Result<()> {
    let (mut limits, _) = applicable(exchange);
    limits.retain(|l| l.rpm.is_some());
    if limits.is_empty() {
        return Ok(());
    }
    for limit in &mut limits {
        limit.tpm = None;
    }
    let grant = exchange.cx.services.limiter.acquire(&limits, 0).await?;
    exchange.headers.extend_from_slice(grant.headers());
    exchange.meter.hold(grant, None);
    Ok(())
}

/// The rate limits and budgets that apply to the call.
fn applicable(exchange: &Exchange<'_>) -> (Vec<RateLimit>, Vec<Budget>) {
    let cx = exchange.cx;
    let mut limits = Vec::new();
    let mut budgets = Vec::new();
    let mut consider =
        |scope: Scope, rpm: Option<u64>, tpm: Option<u64>, budget: Option<BudgetConfig>| {
            if let Some(budget) = budget {
                budgets.push(Budget {
                    scope: scope.clone(),
                    limit: pricing::nanos(budget.usd),
                    period: budget.period,
                });
            }
            if rpm.is_some() || tpm.is_some() {
                limits.push(RateLimit { scope, rpm, tpm });
            }
        };
    let caller = &cx.caller;
    consider(
        Scope::Key(caller.id.clone()),
        caller.rpm,
        caller.tpm,
        caller.budget,
    );
    if let (Some(team), Some(name)) = (cx.team(), &caller.team) {
        consider(Scope::Team(name.clone()), team.rpm, team.tpm, team.budget);
    }
    let model = &exchange.resolved.model;
    if model.rpm.is_some() || model.tpm.is_some() {
        consider(Scope::Model(model.name.clone()), model.rpm, model.tpm, None);
    }
    (limits, budgets)
}

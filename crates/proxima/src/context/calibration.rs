//! Token counts per target. The gateway counts a prompt with one tokenizer (OpenAI's
//! `o200k_base`, [`crate::tokenizer`]): exact for OpenAI's current models, but Anthropic's,
//! Gemini's and self-hosted models' tokenizers cut the same text into more or fewer pieces. A
//! prompt assembled to fit a window must fit the window as its target counts it, so each
//! target's scale — the tokens its usage reports for a prompt over the tokens the gateway
//! counted for it — is learned from the answers to conversation turns, whose assembled prompt
//! the gateway has counted anyway, and divides that target's room.
//!
//! Until a target has answered, its provider kind's prior stands: 1 where the tokenizer is
//! the gateway's own (OpenAI), a margin where it is known to cut finer (Anthropic). A scale is
//! never below 1: `o200k_base` is among the densest tokenizers, so a target reporting fewer
//! tokens than the gateway counted is more likely adding less overhead than tokenizing
//! coarser, and a prompt counted a little high only leaves some of the window unused, while one
//! counted low is refused by the upstream.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::canonical::{ChatChunk, ChatResponse};
use crate::config::ProviderKind;
use crate::pipeline::finish::{Outcome, Reads, Route, Stage};

/// Prompts shorter than this teach nothing: the per-message overhead an API adds to its count
/// would outweigh the text.
const MIN_COUNTED: u64 = 200;
/// Largest scale believed; a larger ratio is more likely a usage report of something else
/// (a provider-side cache, a hidden system prompt) than a tokenizer.
const MAX_SCALE: f64 = 4.0;
/// Weight of the newest observation in the running average when it is above the average, and
/// when below: a scale rises fast (a prompt counted low is refused upstream) and falls slowly
/// (one that is counted high only leaves part of the window unused).
const RISING: f64 = 0.5;
const FALLING: f64 = 0.125;

/// What each target's answers taught about its tokenizer, by provider and upstream model.
/// Shared by the replicas' requests; kept across reloads.
#[derive(Default)]
pub struct TokenScales {
    learned: RwLock<HashMap<(Arc<str>, String), f64>>,
}

impl TokenScales {
    /// Tokens the target counts per token the gateway counts: learned, else the prior of its
    /// provider's kind.
    pub fn scale(&self, kind: ProviderKind, provider: &Arc<str>, model: &str) -> f64 {
        let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
        learned
            .get(&(provider.clone(), model.to_owned()))
            .copied()
            .unwrap_or_else(|| prior(kind))
    }

    /// Takes in one answer: the gateway counted `counted` prompt tokens, the target reported
    /// `reported`.
    pub fn observe(&self, provider: Arc<str>, model: String, counted: u64, reported: u64) {
        if counted < MIN_COUNTED || reported == 0 {
            return;
        }
        let ratio = (reported as f64 / counted as f64).clamp(1.0, MAX_SCALE);
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        learned
            .entry((provider, model))
            .and_modify(|scale| {
                let weight = if ratio > *scale { RISING } else { FALLING };
                *scale += weight * (ratio - *scale);
            })
            .or_insert(ratio);
    }
}

/// The scale assumed for a target not yet heard from.
fn prior(kind: ProviderKind) -> f64 {
    match kind {
        // Claude's tokenizer makes about a fifth more tokens of English text than o200k_base.
        ProviderKind::Anthropic => 1.2,
        _ => 1.0,
    }
}

/// A turn's finishing stage that reports the answering target's prompt tokens to
/// [`TokenScales`].
pub struct Observe {
    scales: Arc<TokenScales>,
    counted: u64,
    answered_by: Option<(Arc<str>, String)>,
    reported: Option<u64>,
}

impl Observe {
    /// For a prompt the gateway counted as `counted` tokens.
    pub fn new(scales: Arc<TokenScales>, counted: u64) -> Observe {
        Observe {
            scales,
            counted,
            answered_by: None,
            reported: None,
        }
    }
}

impl Stage for Observe {
    /// Only usage.
    fn reads(&self) -> Reads {
        Reads::Outline
    }

    fn routed(&mut self, route: &Route<'_>) {
        self.answered_by = route
            .provider
            .zip(route.upstream_model)
            .map(|(provider, model)| (provider.clone(), model.to_owned()));
    }

    fn chunk(&mut self, chunk: &mut ChatChunk) {
        if let Some(usage) = &chunk.usage {
            self.reported = Some(usage.input_tokens);
        }
    }

    fn complete(&mut self, answer: &mut ChatResponse) {
        self.reported = answer.usage.map(|u| u.input_tokens);
    }

    fn end(&mut self, outcome: Outcome<'_>) {
        if let (Outcome::Complete, Some((provider, model)), Some(reported)) =
            (outcome, self.answered_by.take(), self.reported)
        {
            self.scales.observe(provider, model, self.counted, reported);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> Arc<str> {
        Arc::from("claude-up")
    }

    #[test]
    fn a_target_not_heard_from_has_its_kinds_prior() {
        let scales = TokenScales::default();
        assert_eq!(scales.scale(ProviderKind::Openai, &name(), "m"), 1.0);
        assert_eq!(scales.scale(ProviderKind::Anthropic, &name(), "m"), 1.2);
    }

    #[test]
    fn answers_move_the_scale_towards_what_the_target_counts() {
        let scales = TokenScales::default();
        scales.observe(name(), "m".into(), 1000, 1500);
        assert_eq!(scales.scale(ProviderKind::Anthropic, &name(), "m"), 1.5);
        scales.observe(name(), "m".into(), 1000, 2500);
        assert_eq!(scales.scale(ProviderKind::Anthropic, &name(), "m"), 2.0);
        scales.observe(name(), "m".into(), 1000, 1000);
        assert_eq!(scales.scale(ProviderKind::Anthropic, &name(), "m"), 1.875);
        // Another model of the same provider learns on its own.
        assert_eq!(scales.scale(ProviderKind::Openai, &name(), "other"), 1.0);
    }

    #[test]
    fn small_prompts_fewer_tokens_and_wild_ratios_are_bounded() {
        let scales = TokenScales::default();
        scales.observe(name(), "tiny".into(), 50, 500);
        assert_eq!(scales.scale(ProviderKind::Openai, &name(), "tiny"), 1.0);
        scales.observe(name(), "coarse".into(), 1000, 700);
        assert_eq!(scales.scale(ProviderKind::Openai, &name(), "coarse"), 1.0);
        scales.observe(name(), "wild".into(), 1000, 90_000);
        assert_eq!(
            scales.scale(ProviderKind::Openai, &name(), "wild"),
            MAX_SCALE
        );
    }
}

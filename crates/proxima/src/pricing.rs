//! Prices of models, per million tokens: a built-in table for mainstream models, overridden by
//! `price` in the config. Used to choose the cheapest target and to cost each call.

use serde::{Deserialize, Serialize};

use crate::canonical::Usage;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Input served from the provider's prompt cache; `input_per_mtok` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64, cached: f64) -> Price {
        Price {
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: Some(cached),
        }
    }

    /// The cost of one call in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage
            .cached_input_tokens
            .unwrap_or(0)
            .min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        (fresh as f64 * self.input_per_mtok
            + cached as f64 * self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }

    /// Expected cost of a request with this many input and output tokens, for choosing targets.
    pub fn estimate(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Billionths of a US dollar: money is counted in whole nano-dollars, so budget counters and
/// the ledger add up exactly, whatever the order of additions.
pub type Nanos = i64;

/// Dollars to nano-dollars, rounded.
pub fn nanos(usd: f64) -> Nanos {
    (usd * 1e9).round() as Nanos
}

/// Nano-dollars to dollars, for people.
pub fn usd(nanos: Nanos) -> f64 {
    nanos as f64 / 1e9
}

/// List prices by model-name prefix; the longest matching prefix wins, so dated and suffixed
/// names (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`) find their family.
const BUILTIN: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-4o-mini", Price::new(0.15, 0.60, 0.075)),
    ("gpt-4o", Price::new(2.50, 10.00, 1.25)),
    ("gpt-4.1-nano", Price::new(0.10, 0.40, 0.025)),
    ("gpt-4.1-mini", Price::new(0.40, 1.60, 0.10)),
    ("gpt-4.1", Price::new(2.00, 8.00, 0.50)),
    ("gpt-5-nano", Price::new(0.05, 0.40, 0.005)),
    ("gpt-5-mini", Price::new(0.25, 2.00, 0.025)),
    ("gpt-5", Price::new(1.25, 10.00, 0.125)),
    ("o1-mini", Price::new(1.10, 4.40, 0.55)),
    ("o1", Price::new(15.00, 60.00, 7.50)),
    ("o3-mini", Price::new(1.10, 4.40, 0.55)),
    ("o3", Price::new(2.00, 8.00, 0.50)),
    ("o4-mini", Price::new(1.10, 4.40, 0.275)),
    ("text-embedding-3-small", Price::new(0.02, 0.0, 0.02)),
    ("text-embedding-3-large", Price::new(0.13, 0.0, 0.13)),
    // Anthropic
    ("claude-3-5-haiku", Price::new(0.80, 4.00, 0.08)),
    ("claude-3-haiku", Price::new(0.25, 1.25, 0.03)),
    ("claude-haiku-4-5", Price::new(1.00, 5.00, 0.10)),
    ("claude-3-5-sonnet", Price::new(3.00, 15.00, 0.30)),
    ("claude-3-7-sonnet", Price::new(3.00, 15.00, 0.30)),
    ("claude-sonnet-4", Price::new(3.00, 15.00, 0.30)),
    ("claude-opus-4-5", Price::new(5.00, 25.00, 0.50)),
    ("claude-opus-4", Price::new(15.00, 75.00, 1.50)),
    ("claude-3-opus", Price::new(15.00, 75.00, 1.50)),
    // Google
    ("gemini-2.0-flash-lite", Price::new(0.075, 0.30, 0.075)),
    ("gemini-2.0-flash", Price::new(0.10, 0.40, 0.025)),
    ("gemini-2.5-flash-lite", Price::new(0.10, 0.40, 0.025)),
    ("gemini-2.5-flash", Price::new(0.30, 2.50, 0.075)),
    ("gemini-2.5-pro", Price::new(1.25, 10.00, 0.31)),
    ("gemini-embedding", Price::new(0.15, 0.0, 0.15)),
    // Built in
    ("mock", Price::new(0.0, 0.0, 0.0)),
];

/// The list price of an upstream model, if it is in the table.
pub fn builtin(model: &str) -> Option<Price> {
    // Names like `openai/gpt-4o` or `models/gemini-2.5-pro` carry a prefix the table has not.
    let name = model.rsplit('/').next().unwrap_or(model);
    BUILTIN
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, price)| *price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_costs_add_up() {
        assert_eq!(
            builtin("gpt-4o-mini-2024-07-18"),
            Some(Price::new(0.15, 0.60, 0.075))
        );
        assert_eq!(
            builtin("gpt-4o-2024-08-06").map(|p| p.input_per_mtok),
            Some(2.50)
        );
        assert_eq!(
            builtin("openai/o3-mini").map(|p| p.output_per_mtok),
            Some(4.40)
        );
        assert_eq!(builtin("llama-3-8b"), None);
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_input_tokens: Some(200_000),
            ..Usage::default()
        };
        let cost = Price::new(2.0, 8.0, 0.5).cost(&usage);
        assert!(
            (cost - (0.8 * 2.0 + 0.2 * 0.5 + 0.5 * 8.0)).abs() < 1e-9,
            "{cost}"
        );
    }
}

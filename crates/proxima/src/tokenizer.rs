//! Counting prompt tokens with a real tokenizer (OpenAI's `o200k_base` byte-pair encoding),
//! for rate limits and budget reservations before the call. Other providers' tokenizers
//! differ by a few percent; the real usage corrects the count after the call.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::canonical::{self, ChatRequest};

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| match tiktoken_rs::o200k_base() {
        Ok(bpe) => Some(bpe),
        Err(e) => {
            tracing::error!(error = %e, "cannot load the tokenizer; estimating tokens from bytes");
            None
        }
    })
    .as_ref()
}

/// Loads the tokenizer off the request path (it takes a moment), so the first request that
/// needs it does not wait.
pub fn warm_up() {
    tokio::task::spawn_blocking(|| {
        bpe();
    });
}

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    match bpe() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// A chat request's prompt tokens.
pub fn prompt_tokens(req: &ChatRequest) -> u64 {
    canonical::input_tokens(req, count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_like_openai() {
        // o200k_base: "Hello, world!" is 4 tokens; "hello" repeated is one token each.
        assert_eq!(super::count("Hello, world!"), 4);
        assert_eq!(super::count("hello ".repeat(100).trim_end()), 100);
    }
}

//! Counting prompt tokens with a real tokenizer (OpenAI's `o200k_base` byte-pair encoding),
//! for rate limits and budget reservations before the call, and for fitting conversation
//! context into a window. Other providers' tokenizers differ by a few percent; the real usage
//! corrects the count after the call.
//!
//! The tables take about 60 MB, most of the gateway's memory, so they are loaded only once
//! something counts: [`warm_up`] at start when the configuration or a stored key asks for
//! token limits or budgets, else [`load`] at the first call that needs a count (on the
//! blocking pool: loading takes about 0.2 s).
//!
//! Tokenizing costs about 300 instructions a byte, and most prompt text is sent again and
//! again (system prompts, tool definitions, the history every turn resends), so counts of
//! longer texts are remembered by a hash of the text.

use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

use tiktoken_rs::CoreBPE;

use crate::canonical::{self, ChatRequest, EmbeddingInput};

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| {
        let started = tokio::time::Instant::now();
        match tiktoken_rs::o200k_base() {
            Ok(bpe) => {
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "tokenizer loaded"
                );
                Some(bpe)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the tokenizer; estimating tokens from bytes");
                None
            }
        }
    })
    .as_ref()
}

/// Whether the tables are in memory.
pub fn loaded() -> bool {
    BPE.get().is_some()
}

/// Loads the tokenizer in the background, so that the first request that needs it does not
/// wait.
pub fn warm_up() {
    if loaded() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(bpe);
    }
}

/// Makes sure the tables are loaded before counting on an async worker: loads them on the
/// blocking pool if they are not. (A count without it still works; it would load them inline.)
pub async fn load() {
    if !loaded() {
        // A failed join only happens at shutdown; counting then loads inline, or estimates.
        let _ = tokio::task::spawn_blocking(bpe).await;
    }
}

/// Texts shorter than this are tokenized every time: cheaper than remembering them.
const CACHE_MIN_BYTES: usize = 64;
/// Counts remembered at most; past it the cache starts again.
const CACHE_ENTRIES: usize = 100_000;

struct Cache {
    /// Seeded per process; foldhash reads long texts several times faster than SipHash.
    hasher: foldhash::quality::RandomState,
    counts: Mutex<foldhash::HashMap<u64, u64>>,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache {
        hasher: foldhash::quality::RandomState::default(),
        counts: Mutex::new(foldhash::HashMap::default()),
    })
}

/// Tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.len() < CACHE_MIN_BYTES {
        return tokenize(text);
    }
    let cache = cache();
    // A 64-bit seeded hash: a collision would only misjudge one estimate, which the real
    // usage corrects after the call.
    let key = cache.hasher.hash_one(text);
    let lock = || cache.counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = lock().get(&key) {
        return n;
    }
    let n = tokenize(text);
    let mut counts = lock();
    if counts.len() >= CACHE_ENTRIES {
        counts.clear();
    }
    counts.insert(key, n);
    n
}

/// Tokens in `text`, not remembered: for text seen once, such as a document being chunked.
pub fn count_once(text: &str) -> u64 {
    tokenize(text)
}

fn tokenize(text: &str) -> u64 {
    match bpe() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// A chat request's prompt tokens.
pub fn prompt_tokens(req: &ChatRequest) -> u64 {
    canonical::input_tokens(req, count)
}

/// The tokens of what an embeddings request embeds.
pub fn embedding_tokens(input: &EmbeddingInput) -> u64 {
    match input {
        EmbeddingInput::Text(text) => count(text),
        EmbeddingInput::Texts(texts) => texts.iter().map(|t| count(t)).sum(),
        EmbeddingInput::Tokens(tokens) => tokens.len() as u64,
        EmbeddingInput::TokenLists(lists) => lists.iter().map(|l| l.len() as u64).sum(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_like_openai() {
        // o200k_base: "Hello, world!" is 4 tokens; "hello" repeated is one token each.
        assert_eq!(super::count("Hello, world!"), 4);
        let long = "hello ".repeat(100);
        assert_eq!(super::count(long.trim_end()), 100);
        // Remembered, and still right.
        assert_eq!(super::count(long.trim_end()), 100);
        assert_eq!(super::count(&long[..59]), 10);
    }
}

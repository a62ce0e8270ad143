//! Counting prompt tokens with a real tokenizer (OpenAI's `o200k_base` byte-pair encoding),
//! for rate limits and budget reservations before the call, and for fitting conversation
//! context into a window. Other providers' tokenizers differ by a few percent; the real usage
//! corrects the count after the call.
//!
//! The vocabulary is static data made at build time ([`table`]): 199,998 tokens in 4.3 MB of
//! read-only pages, of which a process touches what it uses, where `tiktoken-rs`'s hash maps
//! took 43 MiB of heap and 0.15 s to build (`bench/tokenizer.sh`). Only the pre-tokenizing
//! pattern is compiled at run time, in about 5 ms: [`warm_up`] at start when
//! the configuration or a stored key asks for token limits or budgets, else [`load`] at the
//! first call that needs a count (on the blocking pool, so that no worker waits for it).
//!
//! Counting splits the text with the pattern into pieces (words with their leading space,
//! runs of up to three digits, punctuation, whitespace), and each piece is one token if it is
//! in the vocabulary, else the number of parts left by [`merged_parts`]. Most prompt text is
//! sent again and again (system prompts, tool definitions, the history every turn resends), so
//! counts of longer texts are remembered by a hash of the text.

mod table;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

use fancy_regex::Regex;

use crate::canonical::{self, ChatRequest, EmbeddingInput};

/// Every token's bytes, in rank order.
static TOKEN_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_bytes"));
/// Per rank, a little-endian `u32`: where its bytes end in [`TOKEN_BYTES`].
static TOKEN_ENDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_ends"));
/// The slots of the index from bytes to rank (see [`table`]).
static INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_index"));
/// The pattern that splits text into pieces before the pieces are encoded.
static PATTERN: &str = include_str!(concat!(env!("OUT_DIR"), "/o200k_pattern"));

fn u32_at(array: &[u8], i: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&array[i * 4..i * 4 + 4]);
    u32::from_le_bytes(word)
}

/// The bytes of the token with this rank.
fn token(rank: u32) -> &'static [u8] {
    let rank = rank as usize;
    let start = if rank == 0 {
        0
    } else {
        u32_at(TOKEN_ENDS, rank - 1)
    };
    &TOKEN_BYTES[start as usize..u32_at(TOKEN_ENDS, rank) as usize]
}

/// The rank of the token whose bytes are `bytes`, if there is one.
fn rank(bytes: &[u8]) -> Option<u32> {
    let (mut slot, tag) = table::locate(bytes);
    loop {
        let (rank, entry_tag) = table::read_entry(u32_at(INDEX, slot))?;
        if entry_tag == tag && token(rank) == bytes {
            return Some(rank);
        }
        slot = table::next_slot(slot);
    }
}

/// A pair that is no token, or a part merged into the one before it.
const NONE: u32 = u32::MAX;

/// Pieces up to this long are merged by [`merged_parts_by_scan`], longer ones by
/// [`merged_parts_by_heap`].
const SCAN_MAX: usize = 64;

/// How many tokens a piece that is not itself a token encodes to: starting from its single
/// bytes, the adjacent pair whose joined bytes are the lowest-ranked token is merged, the
/// leftmost of equals first, until no adjacent pair is a token (the byte-pair encoding's rule).
fn merged_parts(piece: &[u8]) -> u64 {
    if piece.len() <= SCAN_MAX {
        merged_parts_by_scan(piece)
    } else {
        merged_parts_by_heap(piece)
    }
}

/// [`merged_parts`] for a short piece: the parts in a small array on the stack, scanned for
/// the lowest pair before each merge (n² steps, but few, and no allocation).
fn merged_parts_by_scan(piece: &[u8]) -> u64 {
    let n = piece.len();
    // Part `i` starts at `parts[i].0`, and `parts[i].1` is the rank of it joined with the
    // next; the last entry only marks the end.
    let mut parts = [(0, NONE); SCAN_MAX + 1];
    for (i, part) in parts.iter_mut().enumerate().take(n + 1) {
        part.0 = i;
    }
    let mut len = n + 1;
    let pair_rank = |parts: &[(usize, u32)], i: usize| match parts.get(i + 2) {
        Some(&(end, _)) => rank(&piece[parts[i].0..end]).unwrap_or(NONE),
        None => NONE,
    };
    for i in 0..n - 1 {
        parts[i].1 = pair_rank(&parts[..len], i);
    }
    loop {
        let (mut at, mut lowest) = (0, NONE);
        for (i, &(_, pair)) in parts[..len - 1].iter().enumerate() {
            if pair < lowest {
                (at, lowest) = (i, pair);
            }
        }
        if lowest == NONE {
            return (len - 1) as u64;
        }
        parts.copy_within(at + 2..len, at + 1);
        len -= 1;
        parts[at].1 = pair_rank(&parts[..len], at);
        if at > 0 {
            parts[at - 1].1 = pair_rank(&parts[..len], at - 1);
        }
    }
}

/// [`merged_parts`] for a long piece (a run of letters thousands of bytes long): the parts in
/// a linked list, the candidate pairs in a heap, so that it costs n log n, not n².
fn merged_parts_by_heap(piece: &[u8]) -> u64 {
    // A candidate pair is its rank and where it starts in one number, which orders as the rule
    // does: lowest rank, then leftmost. (A piece is part of a request body: far below 4 GB.)
    let candidate = |rank: u32, start: usize| u64::from(rank) << 32 | start as u64;
    let n = piece.len();
    // Parts are kept by where they start: `next[i]` is where the part after part `i` starts
    // (`n` past the last), `prev[i]` where the one before starts, and `pair[i]` the rank of
    // part `i` joined with the next.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
    let mut pair = vec![NONE; n];
    let mut heap = BinaryHeap::with_capacity(n);
    let pair_rank = |next: &[usize], i: usize| match next[i] {
        j if j < n => rank(&piece[i..next[j]]).unwrap_or(NONE),
        _ => NONE,
    };
    for (i, pair) in pair.iter_mut().enumerate() {
        *pair = pair_rank(&next, i);
        if *pair != NONE {
            heap.push(Reverse(candidate(*pair, i)));
        }
    }
    let mut parts = n as u64;
    while let Some(Reverse(lowest)) = heap.pop() {
        let (lowest, i) = ((lowest >> 32) as u32, lowest as u32 as usize);
        // A pair whose parts have changed since it was pushed is stale: a part's pair only
        // ever grows, and a longer token has another rank.
        if pair[i] != lowest {
            continue;
        }
        let merged = next[i];
        next[i] = next[merged];
        if next[i] < n {
            prev[next[i]] = Some(i);
        }
        pair[merged] = NONE;
        parts -= 1;
        for part in std::iter::once(i).chain(prev[i]) {
            pair[part] = pair_rank(&next, part);
            if pair[part] != NONE {
                heap.push(Reverse(candidate(pair[part], part)));
            }
        }
    }
    parts
}

static SPLITTER: OnceLock<Option<Regex>> = OnceLock::new();

fn splitter() -> Option<&'static Regex> {
    SPLITTER
        .get_or_init(|| {
            let started = tokio::time::Instant::now();
            match Regex::new(PATTERN) {
                Ok(regex) => {
                    tracing::info!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "tokenizer loaded"
                    );
                    Some(regex)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot compile the tokenizer's pattern; estimating tokens from bytes");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether the tokenizer is ready to count.
pub fn loaded() -> bool {
    SPLITTER.get().is_some()
}

/// Readies the tokenizer in the background, so that the first request that needs it does not
/// wait.
pub fn warm_up() {
    if loaded() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(splitter);
    }
}

/// Makes sure the tokenizer is ready before counting on an async worker: readies it on the
/// blocking pool if it is not. (A count without it still works; it would ready it inline.)
pub async fn load() {
    if !loaded() {
        // A failed join only happens at shutdown; counting then readies it inline, or estimates.
        let _ = tokio::task::spawn_blocking(splitter).await;
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
    let estimate = |rest: &str| (rest.len() as u64).div_ceil(4);
    let Some(splitter) = splitter() else {
        return estimate(text);
    };
    let mut tokens = 0;
    let mut counted = 0;
    for piece in splitter.find_iter(text) {
        match piece {
            Ok(piece) => {
                let bytes = piece.as_str().as_bytes();
                tokens += if bytes.len() == 1 || rank(bytes).is_some() {
                    1
                } else {
                    merged_parts(bytes)
                };
                counted = piece.end();
            }
            // The pattern's matcher gave up (a backtracking limit): the rest is estimated.
            Err(_) => return tokens + estimate(&text[counted..]),
        }
    }
    tokens
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
    use super::{
        count, count_once, merged_parts, merged_parts_by_heap, merged_parts_by_scan, rank, token,
        SCAN_MAX,
    };

    #[test]
    fn counts_like_openai() {
        // o200k_base: "Hello, world!" is 4 tokens; "hello" repeated is one token each.
        assert_eq!(count("Hello, world!"), 4);
        let long = "hello ".repeat(100);
        assert_eq!(count(long.trim_end()), 100);
        // Remembered, and still right.
        assert_eq!(count(long.trim_end()), 100);
        assert_eq!(count(&long[..59]), 10);
    }

    #[test]
    fn every_token_is_found_by_its_bytes() {
        for r in 0..199_998 {
            assert_eq!(rank(token(r)), Some(r), "rank {r}");
        }
        assert_eq!(rank(b"<|endoftext|>"), None);
        assert_eq!(rank(b"\xff\xfe\xfd\xfc"), None);
    }

    /// Counts agree with `tiktoken-rs`, the reference this replaced, on prose, code, JSON,
    /// many scripts, emoji, and random text that mixes them, including pieces that are not
    /// tokens and must be merged.
    #[test]
    fn counts_agree_with_tiktoken() {
        let reference = tiktoken_rs::o200k_base().unwrap_or_else(|e| panic!("{e}"));
        let mut texts: Vec<String> = vec![
            include_str!("../../../README.md").to_owned(),
            include_str!("pipeline.rs").to_owned(),
            include_str!("config/example.toml").to_owned(),
            "Grüße aus Köln — «naïve» café, ÆØÅ; Привет, как дела? Γειά σου κόσμε".to_owned(),
            "東京都の天気は晴れです。北京欢迎你！ 서울특별시 안녕하세요 สวัสดีครับ".to_owned(),
            "مرحبا بالعالم שלום עולם नमस्ते दुनिया 🙂👍🏽👨‍👩‍👧 \u{200b}zero\u{feff}".to_owned(),
            "  leading\t\ttabs\r\n\r\n\n   trailing   \n\n  ".to_owned(),
            "don't I'LL we've They'RE you'd 12345678901 3.14159 1,000,000 0x1F".to_owned(),
            "Supercalifragilisticexpialidocious antidisestablishmentarianism".repeat(3),
            "a".repeat(5_000),
            "ab".repeat(2_000),
            "zqxj".repeat(700),
        ];
        let alphabet: Vec<char> =
            "aeiouxyzAEQZ 0123456789.,;:!?'\"-_/\\\n\t\réßø中文日本한국😀🎉\u{301}"
                .chars()
                .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let len = rng.usize(1..400);
            texts.push(
                (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
            );
        }
        for text in &texts {
            let expected = reference.encode_ordinary(text).len() as u64;
            assert_eq!(count_once(text), expected, "{text:?}");
        }
    }

    /// The two ways of merging agree, on pieces of letters that are tokens in part.
    #[test]
    fn scan_and_heap_merge_alike() {
        let mut rng = fastrand::Rng::with_seed(11);
        let letters = b"aeinorstlhdcumfpgwybvkxjqz";
        for _ in 0..5_000 {
            let len = rng.usize(2..=SCAN_MAX);
            // Letters from the front of the list, the commonest, merge the most.
            let used = rng.usize(1..=letters.len());
            let piece: Vec<u8> = (0..len).map(|_| letters[rng.usize(..used)]).collect();
            assert_eq!(
                merged_parts_by_scan(&piece),
                merged_parts_by_heap(&piece),
                "{:?}",
                String::from_utf8_lossy(&piece)
            );
        }
    }

    /// A piece thousands of bytes long (a run of letters with no space, such as an encoded
    /// blob) is merged in n log n: the quadratic way takes minutes on this one.
    #[test]
    fn a_long_run_of_letters_is_counted() {
        let run = "abcdefghij".repeat(30_000);
        let n = merged_parts(run.as_bytes());
        assert!(n > 0 && n < 300_000 / 2, "{n}");
        assert_eq!(count_once(&run), n);
    }
}

//! Cutting a document into chunks of at most `max_tokens` tokens, each repeating the last
//! `overlap_tokens` of the one before, so that a fact cut by a boundary is whole in one of
//! them. Chunks end at sentence or line ends where they can; only a sentence longer than a
//! chunk is cut between words.

use crate::store::Chunking;
use crate::tokenizer::count_once;

/// OpenAI's `auto` strategy is 800 tokens with 400 of overlap; Proxima's is smaller, because
/// sentence embedders (all-MiniLM-L6-v2 reads 256 word pieces) see only a chunk's beginning,
/// and a smaller chunk is a more precise hit to put in a prompt.
pub const AUTO: Chunking = Chunking {
    max_tokens: 256,
    overlap_tokens: 64,
};

/// The limits OpenAI puts on a static strategy.
pub const MIN_TOKENS: u32 = 100;
pub const MAX_TOKENS: u32 = 4096;

/// A piece of text that is kept whole when it fits: a sentence or a line, with the
/// whitespace after it.
struct Piece<'a> {
    text: &'a str,
    tokens: u64,
}

/// The document's chunks, in order; none for a document without text.
pub fn chunk(text: &str, chunking: Chunking) -> Vec<String> {
    let max = u64::from(chunking.max_tokens.max(1));
    let overlap = u64::from(chunking.overlap_tokens).min(max / 2);
    let pieces: Vec<Piece> = sentences(text).flat_map(|s| split_long(s, max)).collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < pieces.len() {
        // Fill from `start` up to the limit (at least one piece).
        let mut end = start;
        let mut tokens = 0;
        while end < pieces.len() && (end == start || tokens + pieces[end].tokens <= max) {
            tokens += pieces[end].tokens;
            end += 1;
        }
        let text: String = pieces[start..end].iter().map(|p| p.text).collect();
        if !text.trim().is_empty() {
            chunks.push(text.trim().to_owned());
        }
        if end == pieces.len() {
            break;
        }
        // The next chunk starts with the pieces at the end of this one that fit the overlap,
        // but always moves forward.
        let mut next = end;
        let mut carried = 0;
        while next > start + 1 && carried + pieces[next - 1].tokens <= overlap {
            carried += pieces[next - 1].tokens;
            next -= 1;
        }
        start = next;
    }
    chunks
}

/// Sentences and lines, each with its trailing whitespace.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut ends = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let end_here = match bytes[i] {
            b'\n' => true,
            b'.' | b'!' | b'?' => bytes.get(i + 1).is_some_and(|b| b.is_ascii_whitespace()),
            _ => false,
        };
        i += 1;
        if end_here {
            // Take the whitespace after it along.
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            ends.push((start, i));
            start = i;
        }
    }
    if start < bytes.len() {
        ends.push((start, bytes.len()));
    }
    // Every cut is just after an ASCII byte, so on a char boundary.
    ends.into_iter().filter_map(move |(a, b)| text.get(a..b))
}

/// A sentence as pieces of at most `max` tokens: itself when it fits, else runs of words.
fn split_long(sentence: &str, max: u64) -> Vec<Piece<'_>> {
    let tokens = count_once(sentence);
    if tokens <= max {
        return vec![Piece {
            text: sentence,
            tokens,
        }];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut run = 0;
    for (at, word) in words_with_space(sentence) {
        let word_tokens = count_once(word).max(1);
        if run > 0 && run + word_tokens > max {
            pieces.push(Piece {
                text: &sentence[start..at],
                tokens: run,
            });
            start = at;
            run = 0;
        }
        run += word_tokens;
    }
    if start < sentence.len() {
        pieces.push(Piece {
            text: &sentence[start..],
            tokens: run,
        });
    }
    pieces
}

/// Each word with the whitespace after it, and where it starts.
fn words_with_space(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut starts: Vec<usize> = Vec::new();
    let mut in_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if in_space && !space {
            starts.push(i);
        }
        in_space = space;
    }
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let ends: Vec<usize> = starts.iter().skip(1).copied().chain([text.len()]).collect();
    starts
        .into_iter()
        .zip(ends)
        .filter_map(move |(a, b)| text.get(a..b).map(|w| (a, w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(words: usize, fact_at: usize) -> String {
        let mut text = String::new();
        for i in 0..words {
            if i == fact_at {
                text.push_str("The vault code is 7431-ZETA. ");
            }
            text.push_str(["alpha ", "beta ", "gamma. ", "delta\n", "epsilon "][i % 5]);
        }
        text
    }

    #[test]
    fn chunks_respect_the_limit_and_overlap() {
        let text = document(12_000, 6_000);
        let chunking = Chunking {
            max_tokens: 200,
            overlap_tokens: 50,
        };
        let chunks = chunk(&text, chunking);
        assert!(chunks.len() > 40, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(count_once(c) <= 200 + 2, "{} tokens", count_once(c));
        }
        // Neighbours share text (the overlap), and the fact is whole in a chunk.
        assert!(chunks.windows(2).all(|w| {
            let tail: Vec<char> = w[0].chars().rev().take(12).collect();
            let tail: String = tail.into_iter().rev().collect();
            w[1].contains(tail.trim())
        }));
        assert!(chunks
            .iter()
            .any(|c| c.contains("The vault code is 7431-ZETA.")));
        // Nothing is lost: every word of the document is in some chunk, in order.
        let joined: usize = chunks.iter().map(|c| c.split_whitespace().count()).sum();
        assert!(joined >= text.split_whitespace().count());
    }

    #[test]
    fn a_sentence_longer_than_a_chunk_is_cut_between_words() {
        let sentence = "word ".repeat(1000);
        let chunks = chunk(
            &sentence,
            Chunking {
                max_tokens: 100,
                overlap_tokens: 0,
            },
        );
        assert!(chunks.len() >= 9);
        assert!(chunks.iter().all(|c| c.split(' ').all(|w| w == "word")));
    }

    #[test]
    fn small_and_empty_documents() {
        assert!(chunk("   \n ", AUTO).is_empty());
        assert_eq!(chunk("Just one line.", AUTO), ["Just one line."]);
        // Multi-byte text is cut on character boundaries.
        let text = "Ünïcödé straße… 東京は大きい。 ".repeat(300);
        assert!(!chunk(
            &text,
            Chunking {
                max_tokens: 100,
                overlap_tokens: 20
            }
        )
        .is_empty());
    }
}

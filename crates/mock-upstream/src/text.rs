//! Text helpers shared by every wire format: word counts and stream pieces.

/// Token counts are whitespace-separated words: crude, but predictable in assertions.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits `text` into one piece per word, each carrying the whitespace before it, so the
/// pieces concatenate back to `text` exactly ("hello world" → "hello", " world").
pub(crate) fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut gap_start = 0;
    let mut in_gap = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if !in_gap {
                gap_start = i;
            }
            in_gap = true;
        } else {
            if in_gap && seen_word {
                pieces.push(&text[start..gap_start]);
                start = gap_start;
            }
            seen_word = true;
            in_gap = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits `text` into pieces of at most `size` characters (not bytes, to keep UTF-8 intact).
pub(crate) fn char_pieces(text: &str, size: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = rest.char_indices().nth(size).map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

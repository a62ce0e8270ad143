//! What every API's default behaviour shares: words as tokens, stop and length truncation,
//! word-by-word stream pieces, and deterministic embedding vectors.

use serde::Serialize;
use serde_json::Value;

/// Token counts are whitespace-separated words: crude, but predictable in assertions.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Where the earliest of the `stop` strings starts in `content`, if any occurs.
pub(crate) fn stop_position(content: &str, stop: Option<&Value>) -> Option<usize> {
    let stops: Vec<&str> = match stop? {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    stops
        .into_iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| content.find(s))
        .min()
}

/// The byte offset ending the `max_words`-th word, if `text` has more words than that.
pub(crate) fn truncation_point(text: &str, max_words: u64) -> Option<usize> {
    let mut words = 0;
    let mut end = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let whitespace = c.is_whitespace();
        if !whitespace && !in_word {
            if words == max_words {
                return Some(end);
            }
            words += 1;
        }
        if !whitespace {
            end = i + c.len_utf8();
        }
        in_word = !whitespace;
    }
    None
}

/// Marks a prompt asking for one call: `mock-call: NAME {"json": "input"}`.
const CALL_MARK: &str = "mock-call:";
/// Marks a prompt that wants a text answer even though tools are offered.
const NO_TOOLS_MARK: &str = "mock-no-tools";

/// The call a prompt asks for with `mock-call: NAME {json}`, when `NAME` is among the offered
/// `tools` and the input is a JSON object. Real clients (coding agents) validate a call's
/// arguments against their own tools, so their tests say exactly which call to make.
pub(crate) fn requested_call(text: &str, tools: &[&str]) -> Option<(String, Value)> {
    let rest = text[text.find(CALL_MARK)? + CALL_MARK.len()..].trim_start();
    let name_end = rest.find(char::is_whitespace)?;
    let (name, input) = rest.split_at(name_end);
    let input = serde_json::Deserializer::from_str(input.trim_start())
        .into_iter::<Value>()
        .next()?
        .ok()
        .filter(Value::is_object)?;
    tools.contains(&name).then(|| (name.to_owned(), input))
}

/// Marks a prompt whose streamed text (and tool-call arguments) go out in pieces of N
/// characters, cutting through words: `mock-fragments: N`.
const FRAGMENTS_MARK: &str = "mock-fragments:";

/// The piece size a prompt asks for with `mock-fragments: N` (N at least 1).
pub(crate) fn fragment_size(text: &str) -> Option<usize> {
    let rest = text[text.find(FRAGMENTS_MARK)? + FRAGMENTS_MARK.len()..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok().filter(|&n| n > 0)
}

/// The pieces a streamed text goes out in: a word each, or `fragments` characters each.
pub(crate) fn text_pieces(text: &str, fragments: Option<usize>) -> Vec<&str> {
    match fragments {
        Some(size) => char_pieces(text, size),
        None => word_pieces(text),
    }
}

/// Marks a prompt whose answer is the whole request the mock received.
const REQUEST_MARK: &str = "mock-echo-request";

/// The text an echo answers with: the prompt, or, when it says `mock-echo-request`, the request
/// body as JSON — so that a test behind a separate `mock-upstream` process sees what was sent.
pub(crate) fn echo_text(text: String, request: &impl Serialize) -> String {
    if text.contains(REQUEST_MARK) {
        to_string(request)
    } else {
        text
    }
}

/// Whether the prompt says `mock-no-tools`: answer with text even though tools are offered.
pub(crate) fn declines_tools(text: &str) -> bool {
    text.contains(NO_TOOLS_MARK)
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

/// JSON text of the mock's own small structs, which always serialise (no maps with
/// non-string keys, no I/O).
pub(crate) fn to_string(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// FNV-1a: a stable hash of an input, the seed of its embedding.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Spreads `seed` over `dimensions` components in [-1, 1) with splitmix64, then normalises.
pub(crate) fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed;
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits fit an f32 mantissa exactly.
            (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_pieces_concatenate_back() {
        assert_eq!(word_pieces("hello world"), ["hello", " world"]);
        assert_eq!(word_pieces("  hi  there "), ["  hi", "  there "]);
        assert!(word_pieces("").is_empty());
        for text in ["a", " a b\n c ", "héllo wörld", "   "] {
            assert_eq!(word_pieces(text).concat(), text);
        }
    }

    #[test]
    fn a_prompt_names_the_call_to_make() {
        let text =
            "<reminder>\n</reminder> Read it. mock-call: Read {\"file_path\": \"/t/a b\"} please";
        assert_eq!(
            requested_call(text, &["Bash", "Read"]),
            Some((
                "Read".to_owned(),
                serde_json::json!({"file_path": "/t/a b"})
            ))
        );
        assert_eq!(requested_call(text, &["Bash"]), None);
        assert_eq!(requested_call("mock-call: Read [1]", &["Read"]), None);
        assert_eq!(requested_call("no call here", &["Read"]), None);
        assert!(declines_tools("hi mock-no-tools"));
    }

    #[test]
    fn a_prompt_can_ask_for_fragments() {
        assert_eq!(fragment_size("hi mock-fragments: 3 there"), Some(3));
        assert_eq!(fragment_size("mock-fragments:12"), Some(12));
        assert_eq!(fragment_size("mock-fragments: 0"), None);
        assert_eq!(fragment_size("plain"), None);
        assert_eq!(text_pieces("hello world", Some(4)), ["hell", "o wo", "rld"]);
        assert_eq!(text_pieces("hello world", None), ["hello", " world"]);
    }

    #[test]
    fn a_prompt_can_ask_for_the_request_itself() {
        let request =
            serde_json::json!({"messages": [{"role": "user", "content": "x mock-echo-request"}]});
        assert_eq!(
            echo_text("x mock-echo-request".into(), &request),
            request.to_string()
        );
        assert_eq!(echo_text("plain".into(), &request), "plain");
    }

    #[test]
    fn truncation_keeps_whole_words() {
        assert_eq!(truncation_point("one two three", 2), Some(7));
        assert_eq!(truncation_point("one two three", 3), None);
        assert_eq!(truncation_point("  one", 0), Some(0));
        assert_eq!(truncation_point("", 0), None);
    }

    #[test]
    fn stop_cuts_at_earliest() {
        let stop = serde_json::json!(["c", "b"]);
        assert_eq!(stop_position("abcd", Some(&stop)), Some(1));
        assert_eq!(stop_position("abcd", Some(&serde_json::json!("x"))), None);
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let v = unit_vector(fnv1a(b"hello"), 32);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(v, unit_vector(fnv1a(b"hello"), 32));
        assert_ne!(v, unit_vector(fnv1a(b"world"), 32));
    }
}

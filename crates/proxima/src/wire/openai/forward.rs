//! A chat completions body forwarded as the client wrote it, to an upstream of the same API:
//! only the model is changed (and, in a stream, usage asked for). This saves writing the
//! request anew from the canonical one, which for a same-API call says nothing more.
//!
//! The body has already been parsed whole (into [`super::ChatCompletionRequest`]), so it is
//! valid JSON; this module only finds where its top-level members are, without decoding them.

use std::ops::Range;

use memchr::memchr2;

/// What a stream's body gets when the client did not ask for usage: accounting needs it.
const USAGE_MEMBER: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// `body` for `model`: the top-level `model` value replaced. For a stream whose client did not
/// ask for usage (`include_usage`), `stream_options` is added asking for it. `None` when the
/// body cannot be forwarded by splicing alone — its `model` key written with escapes, a stream
/// with `stream_options` of its own but not asking for usage, or `stream_options` outside a
/// stream (which the request written anew leaves out) — and must be written anew.
pub fn body_for_model(
    body: &[u8],
    model: &str,
    stream: bool,
    include_usage: bool,
) -> Option<Vec<u8>> {
    let mut model_value = None;
    let mut stream_options = false;
    let close = members(body, |key, value| match key {
        b"model" => model_value = Some(value),
        b"stream_options" => stream_options = true,
        _ => {}
    })?;
    let model_value = model_value?;
    let add_usage = stream && !include_usage;
    if stream_options && (add_usage || !stream) {
        return None;
    }
    // The model's quotes, and room to spare for a few escapes.
    let mut out = Vec::with_capacity(body.len() + model.len() + 8 + USAGE_MEMBER.len());
    out.extend_from_slice(&body[..model_value.start]);
    serde_json::to_writer(&mut out, model).ok()?;
    out.extend_from_slice(&body[model_value.end..close]);
    if add_usage {
        out.extend_from_slice(USAGE_MEMBER);
    }
    out.extend_from_slice(&body[close..]);
    Some(out)
}

/// Calls `visit` with each top-level member of the object `body`: its key as written between
/// the quotes, and its value's byte range. Returns the offset of the object's closing brace;
/// `None` if `body` is not an object.
fn members(body: &[u8], mut visit: impl FnMut(&[u8], Range<usize>)) -> Option<usize> {
    let mut i = skip_whitespace(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_whitespace(body, i);
        match body.get(i)? {
            b'}' => return Some(i),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(body, i)?;
        let key = body.get(i + 1..key_end - 1)?;
        i = skip_whitespace(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_whitespace(body, i + 1);
        let end = value_end(body, start)?;
        visit(key, start..end);
        i = end;
    }
}

fn skip_whitespace(body: &[u8], mut i: usize) -> usize {
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The offset just past the string that starts (with its quote) at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr2(b'"', b'\\', body.get(i..)?)?;
        if body[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: the next byte is escaped (a quote, say), whatever it is.
        i = at + 2;
    }
}

/// The offset just past the value that starts at `start`.
fn value_end(body: &[u8], start: usize) -> Option<usize> {
    match body.get(start)? {
        b'"' => string_end(body, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match body.get(i)? {
                    b'"' => {
                        i = string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number, true, false or null.
        _ => {
            let rest = body.get(start..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(start + len)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn forwarded(body: &str, model: &str, stream: bool, include_usage: bool) -> Option<Value> {
        body_for_model(body.as_bytes(), model, stream, include_usage)
            .map(|out| serde_json::from_slice(&out).expect("valid JSON out"))
    }

    #[test]
    fn only_the_model_changes_and_the_rest_stays_as_written() {
        let body = r#"{ "messages" : [{"role":"user","content":"say \"model\": {x} [y]"}],
            "model" : "public-name", "temperature": 0.5, "vendor_extension": {"a": [1, {"b": null}]},
            "logit_bias": {"50256": -100}, "metadata": {"model": "not this one"} }"#;
        let out = body_for_model(body.as_bytes(), "gpt-4o-mini", false, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, body.replace(r#""public-name""#, r#""gpt-4o-mini""#));
    }

    #[test]
    fn the_model_is_escaped_as_json() {
        let out = forwarded(r#"{"model":"m","messages":[]}"#, "a\"b\\c", false, false).unwrap();
        assert_eq!(out["model"], "a\"b\\c");
    }

    #[test]
    fn a_stream_asks_for_usage_unless_the_client_did() {
        let out = forwarded(
            r#"{"model":"m","stream":true,"messages":[]}"#,
            "up",
            true,
            false,
        );
        assert_eq!(
            out.unwrap(),
            json!({"model":"up","stream":true,"messages":[],"stream_options":{"include_usage":true}})
        );
        let asked = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(
            forwarded(asked, "up", true, true).unwrap()["stream_options"],
            json!({"include_usage": true})
        );
    }

    #[test]
    fn bodies_a_splice_cannot_forward_are_written_anew() {
        // Stream options of the client's own, without usage: they would need merging.
        let own = r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#;
        assert!(forwarded(own, "up", true, false).is_none());
        // Stream options outside a stream are left out of a request written anew.
        let stray = r#"{"model":"m","stream_options":{"include_usage":true}}"#;
        assert!(forwarded(stray, "up", false, true).is_none());
        // A key written with escapes is not looked for.
        assert!(forwarded(r#"{"mod\u0065l":"m","messages":[]}"#, "up", false, false).is_none());
        // Not an object.
        assert!(forwarded(r#"["model"]"#, "up", false, false).is_none());
    }

    #[test]
    fn strings_with_escapes_and_brackets_are_skipped_whole() {
        let body = r#"{"messages":[{"content":"\\\"}]{[\\"}],"n":1,"model":"m","x":true}"#;
        let out = forwarded(body, "up", false, false).unwrap();
        assert_eq!(out["model"], "up");
        assert_eq!(out["messages"][0]["content"], "\\\"}]{[\\");
        assert_eq!(out["x"], true);
    }

    #[test]
    fn truncated_input_is_refused_not_a_panic() {
        for body in [
            r#"{"model":"m"#,
            r#"{"model":"m","x":"\"#,
            "{",
            r#"{"a":[1,2"#,
            "",
        ] {
            assert!(body_for_model(body.as_bytes(), "up", false, false).is_none());
        }
    }
}

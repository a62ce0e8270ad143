//! `${VAR}` substitution inside the string values of a TOML document, before it is parsed.
//!
//! Substituting in the text (rather than in parsed values) keeps line numbers for error messages;
//! a small scanner makes sure only strings are touched, never comments or keys, and escapes the
//! value for the kind of string it lands in. `${VAR:-default}` gives a default; `$${` is a
//! literal `${`.

use super::Problem;

#[derive(Clone, Copy, PartialEq)]
enum State {
    Code,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Returns the document with every `${VAR}` in a string replaced, or one problem per missing
/// variable, each naming the variable and its line.
pub fn interpolate(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut state = State::Code;
    let mut line = 1;
    let mut rest = text;
    while !rest.is_empty() {
        let in_string = matches!(
            state,
            State::Basic | State::MultiBasic | State::Literal | State::MultiLiteral
        );
        if in_string && rest.starts_with("$${") {
            out.push_str("${");
            rest = &rest[3..];
            continue;
        }
        if in_string && rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                let expr = &rest[2..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expr, None),
                };
                match env(name).or_else(|| default.map(str::to_owned)) {
                    Some(value) => push_escaped(&mut out, &value, state, name, origin, line, &mut problems),
                    None => problems.push(Problem::at_line(
                        origin,
                        line,
                        format!("environment variable `{name}` is not set (use `${{{name}:-default}}` for an optional value)"),
                    )),
                }
                rest = &rest[end + 1..];
                continue;
            }
        }
        let (next_state, consumed) = step(state, rest);
        out.push_str(&rest[..consumed]);
        line += rest[..consumed].matches('\n').count();
        rest = &rest[consumed..];
        state = next_state;
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Advances the scanner over one token, returning the new state and the bytes consumed.
fn step(state: State, rest: &str) -> (State, usize) {
    let one = rest.chars().next().map_or(1, char::len_utf8);
    match state {
        State::Code => {
            if rest.starts_with("\"\"\"") {
                (State::MultiBasic, 3)
            } else if rest.starts_with("'''") {
                (State::MultiLiteral, 3)
            } else if rest.starts_with('"') {
                (State::Basic, 1)
            } else if rest.starts_with('\'') {
                (State::Literal, 1)
            } else if rest.starts_with('#') {
                (State::Comment, 1)
            } else {
                (State::Code, one)
            }
        }
        State::Comment => {
            if rest.starts_with('\n') {
                (State::Code, 1)
            } else {
                (State::Comment, one)
            }
        }
        State::Basic | State::MultiBasic if rest.starts_with('\\') => {
            // Skip the escaped character so `\"` does not end the string.
            let escaped = rest[1..].chars().next().map_or(0, char::len_utf8);
            (state, 1 + escaped)
        }
        State::Basic if rest.starts_with('"') || rest.starts_with('\n') => (State::Code, 1),
        State::MultiBasic if rest.starts_with("\"\"\"") => (State::Code, 3),
        State::Literal if rest.starts_with('\'') || rest.starts_with('\n') => (State::Code, 1),
        State::MultiLiteral if rest.starts_with("'''") => (State::Code, 3),
        _ => (state, one),
    }
}

fn push_escaped(
    out: &mut String,
    value: &str,
    state: State,
    name: &str,
    origin: &str,
    line: usize,
    problems: &mut Vec<Problem>,
) {
    match state {
        State::Basic | State::MultiBasic => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
        }
        _ => {
            // Literal strings have no escapes: a value that would end the string cannot go in.
            if value.contains('\'') || value.contains('\n') {
                problems.push(Problem::at_line(
                    origin,
                    line,
                    format!("the value of `{name}` contains a quote or newline and cannot go in a '...' string: use \"...\""),
                ));
            } else {
                out.push_str(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1\"x".into()),
            "PLAIN" => Some("abc".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_only_inside_strings_and_escapes() {
        let text = "# uses ${MISSING} in a comment\na = \"${KEY}\"\nb = '${PLAIN}'\nc = \"${NOPE:-dflt}\" # ${MISSING}\nd = \"$${KEY}\"\n";
        let out = interpolate(text, "t.toml", &env).unwrap_or_else(|p| panic!("{p:?}"));
        let parsed: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed["a"].as_str(), Some("sk-1\"x"));
        assert_eq!(parsed["b"].as_str(), Some("abc"));
        assert_eq!(parsed["c"].as_str(), Some("dflt"));
        assert_eq!(parsed["d"].as_str(), Some("${KEY}"));
    }

    #[test]
    fn missing_variable_names_variable_and_line() {
        let text = "a = 1\n\nb = \"x${GONE}y\"\n";
        let problems = interpolate(text, "t.toml", &env).err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        let shown = problems[0].to_string();
        assert!(shown.contains("t.toml:3"), "{shown}");
        assert!(shown.contains("GONE"), "{shown}");
    }
}

//! Prompt templates served as APIs: a stored template — a text, or chat messages, with
//! `{{variables}}` — with its public model and default parameters, which
//! `POST /v1/prompts/{name}/run` ([`crate::surface::prompts`]) renders into a chat completions
//! request and serves like any other. Templates are kept in versions in the store
//! ([`crate::store::PromptRecord`]); [`catalog`] holds them in memory for runs.
//!
//! The syntax is small on purpose: `{{name}}` is a variable (spaces inside are allowed:
//! `{{ name }}`), its name letters, digits and `_`. Every `{{` opens a variable; anything else
//! — single braces, a lone `}}` — is text. A template is checked when it is saved, so a run
//! never meets a malformed one. Rendering is one pass over the template: a value goes in as
//! written and is never read again, so a `{{x}}` inside a value stays as it is — a caller's
//! text cannot reach other variables.

pub mod catalog;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The ledger tags a run's row carries (beside the caller's `x-proxima-metadata`): the prompt's
/// name, and the version that ran.
pub const PROMPT_TAG: &str = "proxima.prompt";
pub const VERSION_TAG: &str = "proxima.prompt_version";

/// Roles a template message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant"];

/// Longest variable name: names go into error messages.
const MAX_NAME: usize = 64;

/// A template as admins write it: a text, sent as one user message, or chat messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a text, or a list of {\"role\", \"content\"} messages with text content"
)]
pub enum Template {
    Text(String),
    Messages(Vec<TemplateMessage>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

/// A run of template text: literal text, or a variable's name.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Variable(&'a str),
}

impl Template {
    /// Checks the template as `POST /admin/prompts` receives it (400 `invalid_request` with
    /// param `template`): not empty, known roles, every `{{` a well-formed variable.
    pub fn check(&self) -> Result<()> {
        let invalid =
            |message: String, param: String| Error::invalid_request(message).with_param(param);
        match self {
            Template::Text(text) if text.trim().is_empty() => Err(invalid(
                "`template` is empty: write the prompt's text, or its messages".into(),
                "template".into(),
            )),
            Template::Text(text) => pieces(text)
                .map(drop)
                .map_err(|problem| invalid(problem, "template".into())),
            Template::Messages(messages) if messages.is_empty() => Err(invalid(
                "`template` has no messages: give at least one {\"role\", \"content\"}".into(),
                "template".into(),
            )),
            Template::Messages(messages) => {
                for (i, message) in messages.iter().enumerate() {
                    if !ROLES.contains(&message.role.as_str()) {
                        return Err(invalid(
                            format!(
                                "template[{i}].role `{}` is not a chat role: use {}",
                                message.role,
                                ROLES.join(", ")
                            ),
                            format!("template[{i}].role"),
                        ));
                    }
                    if message.content.trim().is_empty() {
                        return Err(invalid(
                            format!("template[{i}].content is empty"),
                            format!("template[{i}].content"),
                        ));
                    }
                    pieces(&message.content).map_err(|problem| {
                        invalid(
                            format!("template[{i}].content: {problem}"),
                            format!("template[{i}].content"),
                        )
                    })?;
                }
                Ok(())
            }
        }
    }

    /// The variables the template uses, each once, in order of first use.
    pub fn variables(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for text in self.texts() {
            for piece in pieces(text).unwrap_or_default() {
                if let Piece::Variable(name) = piece {
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_owned());
                    }
                }
            }
        }
        names
    }

    /// The chat messages (`{"role", "content"}`) the template makes with `values`: a string
    /// value goes in as written, any other JSON value as its JSON text. A variable without a
    /// value (absent or `null`) is a 400 `invalid_request` naming every one missing, with
    /// param `variables`; values the template does not use are ignored.
    pub fn render(&self, values: &Map<String, Value>) -> Result<Vec<Value>> {
        let mut missing: Vec<String> = Vec::new();
        let mut fill = |text: &str| {
            let mut out = String::with_capacity(text.len());
            // Checked when saved; a template that no longer parses renders as written.
            let Ok(pieces) = pieces(text) else {
                return text.to_owned();
            };
            for piece in pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Variable(name) => match values.get(name) {
                        Some(Value::String(value)) => out.push_str(value),
                        None | Some(Value::Null) => {
                            if !missing.iter().any(|m| m == name) {
                                missing.push(name.to_owned());
                            }
                        }
                        Some(other) => out.push_str(&other.to_string()),
                    },
                }
            }
            out
        };
        let messages: Vec<Value> = match self {
            Template::Text(text) => vec![message("user", fill(text))],
            Template::Messages(messages) => messages
                .iter()
                .map(|m| message(&m.role, fill(&m.content)))
                .collect(),
        };
        if missing.is_empty() {
            return Ok(messages);
        }
        let names: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
        let (noun, it) = if names.len() == 1 {
            ("variable", "it")
        } else {
            ("variables", "them")
        };
        Err(Error::invalid_request(format!(
            "missing {noun} {}: the prompt needs {it} in `variables`",
            names.join(", ")
        ))
        .with_param("variables"))
    }

    /// The template's texts, one per message.
    fn texts(&self) -> Vec<&str> {
        match self {
            Template::Text(text) => vec![text.as_str()],
            Template::Messages(messages) => messages.iter().map(|m| m.content.as_str()).collect(),
        }
    }
}

fn message(role: &str, content: String) -> Value {
    serde_json::json!({"role": role, "content": content})
}

/// Splits template text into literal text and variables, or says what is malformed.
fn pieces(text: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let inside = &rest[open + 2..];
        let Some(close) = inside.find("}}") else {
            return Err(format!(
                "`{{{{` opens a variable that is never closed with `}}}}`, at `{}`",
                excerpt(&rest[open..])
            ));
        };
        let name = inside[..close].trim();
        if !is_variable_name(name) {
            return Err(format!(
                "`{{{{{}}}}}` is not a variable: write `{{{{name}}}}`, a name of letters, digits and `_` (up to {MAX_NAME})",
                excerpt(&inside[..close])
            ));
        }
        pieces.push(Piece::Variable(name));
        rest = &inside[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The start of `text`, short enough for an error message.
fn excerpt(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn text(template: &str, v: Value) -> Result<String> {
        let rendered = Template::Text(template.into()).render(&values(v))?;
        Ok(rendered[0]["content"].as_str().unwrap().to_owned())
    }

    #[test]
    fn variables_are_filled_with_or_without_spaces_inside_the_braces() {
        let out = text(
            "Hello {{name}}, about {{ topic }} and {{\tname }}.",
            json!({"name": "Ada", "topic": "engines"}),
        )
        .unwrap();
        assert_eq!(out, "Hello Ada, about engines and Ada.");
        let template = Template::Text("{{ b }} {{a}} {{b}}".into());
        assert_eq!(template.variables(), ["b", "a"]);
    }

    #[test]
    fn a_text_template_is_one_user_message_and_messages_keep_their_roles() {
        let template: Template = serde_json::from_value(json!([
            {"role": "system", "content": "You answer in {{lang}}."},
            {"role": "user", "content": "{{question}}"}
        ]))
        .unwrap();
        template.check().unwrap();
        let rendered = template
            .render(&values(json!({"lang": "French", "question": "Why?"})))
            .unwrap();
        assert_eq!(
            Value::Array(rendered),
            json!([
                {"role": "system", "content": "You answer in French."},
                {"role": "user", "content": "Why?"}
            ])
        );
        let rendered = Template::Text("hi".into()).render(&Map::new()).unwrap();
        assert_eq!(rendered, [json!({"role": "user", "content": "hi"})]);
    }

    #[test]
    fn missing_variables_are_named_all_at_once() {
        let error = text(
            "{{a}} {{b}} {{c}} {{a}}",
            json!({"b": "here", "c": null, "unused": 1}),
        )
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("variables"));
        assert!(
            error.message.contains("missing variables `a`, `c`"),
            "{}",
            error.message
        );
        let error = text("{{ who }}", json!({})).unwrap_err();
        assert!(
            error.message.contains("missing variable `who`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn values_go_in_as_written_and_are_never_expanded_again() {
        // A value that looks like a variable, or like a malformed one, stays as it is.
        let out = text(
            "[{{x}}] [{{y}}]",
            json!({"x": "{{y}}", "y": "{{ {{ }} {{x"}),
        )
        .unwrap();
        assert_eq!(out, "[{{y}}] [{{ {{ }} {{x]");
        // Other JSON values go in as their JSON text.
        let out = text(
            "{{n}} {{b}} {{o}}",
            json!({"n": 2.5, "b": true, "o": {"k": [1]}}),
        )
        .unwrap();
        assert_eq!(out, r#"2.5 true {"k":[1]}"#);
    }

    #[test]
    fn single_braces_and_a_lone_closing_pair_are_text() {
        let template = r#"Reply as JSON: {"answer": "{{answer}}"} }} {x}"#;
        Template::Text(template.into()).check().unwrap();
        let out = text(template, json!({"answer": "yes"})).unwrap();
        assert_eq!(out, r#"Reply as JSON: {"answer": "yes"} }} {x}"#);
    }

    #[test]
    fn malformed_templates_are_refused_saying_where() {
        let problem = |template: Value| {
            let template: Template = serde_json::from_value(template).unwrap();
            let e = template.check().unwrap_err();
            (e.param.unwrap_or_default(), e.message)
        };
        let (param, message) = problem(json!("Hello {{name"));
        assert_eq!(param, "template");
        assert!(message.contains("never closed"), "{message}");
        let (_, message) = problem(json!("Hello {{first name}}"));
        assert!(
            message.contains("`{{first name}}` is not a variable"),
            "{message}"
        );
        for bad in ["{{}}", "{{1st}}", "{{a.b}}", "{{{x}}}"] {
            let (_, message) = problem(json!(bad));
            assert!(message.contains("is not a variable"), "{bad}: {message}");
        }
        assert!(problem(json!("  ")).1.contains("empty"));
        assert!(problem(json!([])).1.contains("no messages"));
        let (param, message) = problem(json!([{"role": "tool", "content": "x"}]));
        assert_eq!(param, "template[0].role");
        assert!(message.contains("not a chat role"), "{message}");
        let (param, _) = problem(json!([
            {"role": "system", "content": "ok"},
            {"role": "user", "content": "{{oops"}
        ]));
        assert_eq!(param, "template[1].content");
    }
}

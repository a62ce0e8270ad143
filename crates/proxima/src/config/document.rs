//! Parsing a config so that one run of `check` reports every problem: a key the schema does not
//! know, or a value of the wrong type, is reported and left out, and parsing goes on. The spans
//! of the parsed document also give each validation problem its line.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

use super::{Config, Problem};

/// Deserializing is tried again at most this often (once per problem left out).
const MAX_ATTEMPTS: usize = 100;

/// A parsed config file: its text, and the document with the span of every key and value.
pub struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Parses the TOML of `text`; a syntax error is one problem, with its line.
    pub fn parse(text: &'i str, origin: &str) -> Result<Document<'i>, Problem> {
        DeTable::parse(text)
            .map(|root| Document { text, root })
            .map_err(|e| problem(text, origin, e.span(), e.message()))
    }

    /// The config, with every key unknown to the schema and every value of the wrong type
    /// reported (and left out); `None` when a problem could not be left out.
    pub fn config(&self, origin: &str, problems: &mut Vec<Problem>) -> Option<Config> {
        let mut root = self.root.clone();
        let mut left_out_a_value = false;
        for _ in 0..MAX_ATTEMPTS {
            let error = match Config::deserialize(Deserializer::from(root.clone())) {
                Ok(config) => return Some(config),
                Err(error) => error,
            };
            let message = error.message().trim_end();
            // A field missing once a bad value of it was left out is that same problem.
            if message.starts_with("missing field") && left_out_a_value {
                return None;
            }
            problems.push(problem(self.text, origin, error.span(), message));
            let span = error.span()?;
            if !remove_at(root.get_mut(), &span) {
                return None;
            }
            left_out_a_value |= !message.starts_with("unknown field");
        }
        None
    }

    /// The line of a dotted path such as `models.fast.targets[1].provider` (names may hold
    /// dots: the longest key that fits is taken).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut table = self.root.get_ref();
        let mut rest = path;
        loop {
            let (key, value) = table
                .iter()
                .filter(|(key, _)| {
                    let name: &str = key.get_ref();
                    rest.strip_prefix(name)
                        .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
                })
                .max_by_key(|(key, _)| key.get_ref().len())?;
            rest = &rest[key.get_ref().len()..];
            let mut value = value;
            while let Some(after) = rest.strip_prefix('[') {
                let (index, after) = after.split_once(']')?;
                let DeValue::Array(items) = value.get_ref() else {
                    return None;
                };
                value = items.get(index.parse::<usize>().ok()?)?;
                rest = after;
            }
            match rest.strip_prefix('.') {
                None => {
                    // A table names its header's line; a value, its own.
                    let span = match value.get_ref() {
                        DeValue::Table(_) => key.span(),
                        _ => value.span(),
                    };
                    return Some(line_at(self.text, span.start));
                }
                Some(after) => {
                    let DeValue::Table(inner) = value.get_ref() else {
                        return None;
                    };
                    table = inner;
                    rest = after;
                }
            }
        }
    }
}

fn problem(text: &str, origin: &str, span: Option<Range<usize>>, message: &str) -> Problem {
    let message = message.trim_end().to_owned();
    match span {
        Some(span) => Problem::at_line(origin, line_at(text, span.start), message),
        None => Problem {
            location: origin.to_owned(),
            message,
        },
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Removes the entry whose key or value is at `span` (the whole array, for one of its items);
/// whether one was found.
fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let holds = |value: &Spanned<DeValue<'_>>| value.span() == *span;
    let found = table
        .iter()
        .find(|(key, value)| {
            let item_of = match value.get_ref() {
                DeValue::Array(items) => items.iter().any(holds),
                _ => false,
            };
            key.span() == *span || holds(value) || item_of
        })
        .map(|(key, _)| key.clone());
    if let Some(key) = found {
        table.remove(&key);
        return true;
    }
    table.iter_mut().any(|(_, value)| match value.get_mut() {
        DeValue::Table(inner) => remove_at(inner, span),
        DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
            DeValue::Table(inner) => remove_at(inner, span),
            _ => false,
        }),
        _ => false,
    })
}

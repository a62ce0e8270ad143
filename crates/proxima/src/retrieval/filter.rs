//! Attribute filters of a vector store search, in OpenAI's shape: a comparison
//! (`{"type": "eq", "key": "region", "value": "eu"}`; `eq ne gt gte lt lte in nin`) or a
//! compound (`{"type": "and", "filters": [...]}`, `and`/`or`), nested to any depth.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Compounds nested deeper than this are refused: a filter is evaluated for every candidate.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare { op: Op, key: String, value: Value },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
}

impl Filter {
    /// Reads a filter from a request; `param` names the field in errors.
    pub fn parse(value: &Value, param: &str) -> Result<Filter> {
        parse(value, param, 0)
    }

    /// Whether a file with these attributes passes. A comparison with an attribute the file
    /// lacks fails (also for `ne` and `nin`): the file says nothing about it.
    pub fn matches(&self, attributes: &Map<String, Value>) -> bool {
        match self {
            Filter::And(filters) => filters.iter().all(|f| f.matches(attributes)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(attributes)),
            Filter::Compare { op, key, value } => {
                let Some(actual) = attributes.get(key) else {
                    return false;
                };
                match op {
                    Op::Eq => same(actual, value),
                    Op::Ne => !same(actual, value),
                    Op::In => list(value).any(|v| same(actual, v)),
                    Op::Nin => !list(value).any(|v| same(actual, v)),
                    Op::Gt => order(actual, value) == Some(Ordering::Greater),
                    Op::Gte => matches!(
                        order(actual, value),
                        Some(Ordering::Greater | Ordering::Equal)
                    ),
                    Op::Lt => order(actual, value) == Some(Ordering::Less),
                    Op::Lte => {
                        matches!(order(actual, value), Some(Ordering::Less | Ordering::Equal))
                    }
                }
            }
        }
    }
}

fn parse(value: &Value, param: &str, depth: usize) -> Result<Filter> {
    let invalid =
        |what: &str| Error::invalid_request(format!("`{param}`: {what}")).with_param(param);
    if depth > MAX_DEPTH {
        return Err(invalid("filters nest too deeply"));
    }
    let Some(object) = value.as_object() else {
        return Err(invalid("a filter must be an object"));
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a filter needs a `type`"))?;
    let op = match kind {
        "and" | "or" => {
            let filters = object
                .get("filters")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("a compound filter needs `filters`, an array"))?;
            let filters = filters
                .iter()
                .map(|f| parse(f, param, depth + 1))
                .collect::<Result<Vec<_>>>()?;
            return Ok(if kind == "and" {
                Filter::And(filters)
            } else {
                Filter::Or(filters)
            });
        }
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "in" => Op::In,
        "nin" => Op::Nin,
        other => {
            return Err(invalid(&format!(
                "unknown filter type `{other}` (eq, ne, gt, gte, lt, lte, in, nin, and, or)"
            )))
        }
    };
    let key = object
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a comparison filter needs a `key`, a string"))?;
    let value = object
        .get("value")
        .ok_or_else(|| invalid("a comparison filter needs a `value`"))?;
    let scalar = |v: &Value| v.is_string() || v.is_number() || v.is_boolean();
    let ok = match op {
        Op::In | Op::Nin => value.as_array().is_some_and(|a| a.iter().all(scalar)),
        _ => scalar(value),
    };
    if !ok {
        return Err(invalid(match op {
            Op::In | Op::Nin => {
                "`in` and `nin` compare with an array of strings, numbers or booleans"
            }
            _ => "a comparison's `value` must be a string, a number or a boolean",
        }));
    }
    Ok(Filter::Compare {
        op,
        key: key.to_owned(),
        value: value.clone(),
    })
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Equality across JSON types: numbers by value (1 equals 1.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Numbers by value, strings by their bytes; anything else does not order.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn filter(v: Value) -> Filter {
        match Filter::parse(&v, "filters") {
            Ok(f) => f,
            Err(e) => panic!("{}", e.message),
        }
    }

    #[test]
    fn comparisons_and_compounds() {
        let doc = attrs(json!({"region": "eu", "year": 2024, "draft": false}));
        assert!(filter(json!({"type": "eq", "key": "region", "value": "eu"})).matches(&doc));
        assert!(!filter(json!({"type": "eq", "key": "region", "value": "us"})).matches(&doc));
        assert!(filter(json!({"type": "gte", "key": "year", "value": 2024.0})).matches(&doc));
        assert!(!filter(json!({"type": "lt", "key": "year", "value": 2024})).matches(&doc));
        assert!(
            filter(json!({"type": "in", "key": "region", "value": ["us", "eu"]})).matches(&doc)
        );
        assert!(filter(json!({"type": "nin", "key": "region", "value": ["us"]})).matches(&doc));
        assert!(filter(json!({"type": "eq", "key": "draft", "value": false})).matches(&doc));
        // A missing attribute passes no comparison, not even `ne`.
        assert!(!filter(json!({"type": "ne", "key": "owner", "value": "x"})).matches(&doc));
        let both = json!({"type": "and", "filters": [
            {"type": "eq", "key": "region", "value": "eu"},
            {"type": "or", "filters": [
                {"type": "gt", "key": "year", "value": 2030},
                {"type": "eq", "key": "draft", "value": false}
            ]}
        ]});
        assert!(filter(both).matches(&doc));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for bad in [
            json!("eq"),
            json!({"key": "a", "value": 1}),
            json!({"type": "like", "key": "a", "value": 1}),
            json!({"type": "eq", "value": 1}),
            json!({"type": "eq", "key": "a", "value": {"x": 1}}),
            json!({"type": "in", "key": "a", "value": 1}),
            json!({"type": "and"}),
        ] {
            let error = Filter::parse(&bad, "filters").err();
            assert!(
                error
                    .as_ref()
                    .is_some_and(|e| e.param.as_deref() == Some("filters")),
                "{bad} was accepted"
            );
        }
    }
}

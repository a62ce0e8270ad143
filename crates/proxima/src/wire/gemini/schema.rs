//! JSON Schema (as OpenAI-style clients write it) cut down to the OpenAPI subset Gemini accepts.
//!
//! Gemini's `Schema` is a protobuf message: any key it does not know (`$schema`,
//! `additionalProperties`, `strict`, `$defs` ...) fails the whole request with "Unknown name".
//! So this keeps only known keys, inlines local `$ref`s (pydantic-generated schemas are full of
//! them) and rewrites the few constructs that have a Gemini equivalent.

use serde_json::{Map, Value};

/// The keys of Gemini's `Schema` object.
const KNOWN_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// The `format` values Gemini accepts; others (`email`, `uri` ...) are refused, so they go.
const KNOWN_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

/// How deep `$ref`s are inlined; a recursive schema is cut off below this as a plain object.
const MAX_REF_DEPTH: usize = 8;

/// The schema as Gemini accepts it.
pub fn clean_schema(schema: &Value) -> Value {
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    clean(schema, defs, 0)
}

/// Function parameters as Gemini accepts them, or `None` for a function without any: Gemini
/// refuses an object schema whose `properties` is empty.
pub fn clean_parameters(schema: &Value) -> Option<Value> {
    let cleaned = clean_schema(schema);
    let has_properties = cleaned
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    let is_object = cleaned.get("type").and_then(Value::as_str) == Some("object");
    (has_properties || !is_object && cleaned.get("type").is_some()).then_some(cleaned)
}

fn clean(schema: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Value::Object(map) = schema else {
        // `true` (anything) and other non-object schemas have no Gemini form: accept anything.
        return Value::Object(Map::new());
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"));
        return match name.and_then(|n| defs.get(n)) {
            Some(target) if depth < MAX_REF_DEPTH => {
                let mut inlined = clean(target, defs, depth + 1);
                // A description next to the `$ref` describes this use of the type: keep it.
                if let (Some(description), Value::Object(out)) =
                    (map.get("description"), &mut inlined)
                {
                    out.insert("description".into(), description.clone());
                }
                inlined
            }
            _ => serde_json::json!({"type": "object"}),
        };
    }
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                if let Value::Object(properties) = value {
                    // Keys here are property names, not schema keywords: keep every one.
                    let cleaned: Map<String, Value> = properties
                        .iter()
                        .map(|(name, s)| (name.clone(), clean(s, defs, depth)))
                        .collect();
                    if !cleaned.is_empty() {
                        out.insert(key.clone(), Value::Object(cleaned));
                    }
                }
            }
            "items" => {
                out.insert(key.clone(), clean(value, defs, depth));
            }
            // Gemini reads both as "any of"; `oneOf`'s exclusivity cannot be expressed.
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = value {
                    let options = options.iter().map(|s| clean(s, defs, depth)).collect();
                    out.insert("anyOf".into(), Value::Array(options));
                }
            }
            "const" if value.is_string() => {
                out.insert("enum".into(), Value::Array(vec![value.clone()]));
            }
            // `["string", "null"]` is how JSON Schema says nullable.
            "type" => match value {
                Value::Array(types) => {
                    let mut nullable = false;
                    let mut first = None;
                    for t in types.iter().filter_map(Value::as_str) {
                        if t == "null" {
                            nullable = true;
                        } else if first.is_none() {
                            first = Some(t);
                        }
                    }
                    if let Some(t) = first {
                        out.insert("type".into(), t.into());
                    }
                    if nullable {
                        out.insert("nullable".into(), true.into());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            // Gemini's enum is a list of strings; a numeric one fails the request.
            "enum"
                if value
                    .as_array()
                    .is_some_and(|values| values.iter().all(Value::is_string)) =>
            {
                out.insert(key.clone(), value.clone());
            }
            "format" if value.as_str().is_some_and(|f| KNOWN_FORMATS.contains(&f)) => {
                out.insert(key.clone(), value.clone());
            }
            // Any other enum or format would be refused: leave it out.
            "enum" | "format" => {}
            known if KNOWN_KEYS.contains(&known) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_unknown_keys_recursively_but_keeps_property_names() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "strict": true,
            "properties": {
                "additionalProperties": {"type": "string", "format": "email"},
                "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}},
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "level": {"type": "integer", "enum": [1, 2]},
                "kind": {"const": "point"},
                "shape": {"oneOf": [{"type": "string"}, {"type": "number", "format": "double"}]}
            },
            "required": ["tags"]
        });
        assert_eq!(
            clean_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "additionalProperties": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "unit": {"type": "string", "nullable": true, "enum": ["c", "f"]},
                    "level": {"type": "integer"},
                    "kind": {"enum": ["point"]},
                    "shape": {"anyOf": [{"type": "string"}, {"type": "number", "format": "double"}]}
                },
                "required": ["tags"]
            })
        );
    }

    #[test]
    fn inlines_local_refs_and_cuts_recursion() {
        let schema = json!({
            "type": "object",
            "$defs": {
                "Point": {"type": "object", "properties": {"x": {"type": "number"}}},
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
            },
            "properties": {
                "at": {"$ref": "#/$defs/Point", "description": "where"},
                "list": {"$ref": "#/$defs/Node"},
                "elsewhere": {"$ref": "https://example.com/schema"}
            }
        });
        let cleaned = clean_schema(&schema);
        assert_eq!(
            cleaned["properties"]["at"],
            json!({"type": "object", "properties": {"x": {"type": "number"}}, "description": "where"})
        );
        assert_eq!(
            cleaned["properties"]["elsewhere"],
            json!({"type": "object"})
        );
        // Eight levels deep, then a plain object.
        let mut node = &cleaned["properties"]["list"];
        for _ in 0..MAX_REF_DEPTH {
            node = &node["properties"]["next"];
        }
        assert_eq!(node, &json!({"type": "object"}));
        assert!(cleaned.get("$defs").is_none());
    }

    #[test]
    fn parameters_without_properties_are_left_out() {
        assert_eq!(clean_parameters(&json!({"type": "object"})), None);
        assert_eq!(
            clean_parameters(&json!({"type": "object", "properties": {}})),
            None
        );
        assert_eq!(clean_parameters(&json!({})), None);
        let with = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(clean_parameters(&with), Some(with));
    }
}

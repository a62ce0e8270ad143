//! What the real `generateContent` refuses with 400 INVALID_ARGUMENT, so a gateway that sends
//! it fails here exactly as it would against Google.
//!
//! Field names are checked in their documented camelCase form only. The real API also accepts
//! the snake_case proto names (`system_instruction`); the mock refuses them on purpose, so a
//! gateway keeps to the documented names.

use serde_json::{Map, Value};

const TOP_LEVEL: [&str; 7] = [
    "contents",
    "tools",
    "toolConfig",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "cachedContent",
];

const GENERATION_CONFIG: [&str; 20] = [
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
];

/// Schema keys of JSON Schema that Gemini's OpenAPI-subset `Schema` does not have.
const FOREIGN_SCHEMA_KEYS: [&str; 2] = ["additionalProperties", "$schema"];

const MODES: [&str; 4] = ["AUTO", "ANY", "NONE", "VALIDATED"];

/// `Err` carries Google's message for the first problem found.
pub(super) fn check(request: &Value) -> Result<(), String> {
    let Some(request) = request.as_object() else {
        return Err("Invalid JSON payload received. Expected a JSON object.".into());
    };
    for key in request.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            return Err(unknown(key, None));
        }
    }
    if let Some(config) = request.get("generationConfig") {
        let config = config
            .as_object()
            .ok_or("Invalid value at 'generation_config': expected an object")?;
        if let Some(key) = config
            .keys()
            .find(|k| !GENERATION_CONFIG.contains(&k.as_str()))
        {
            return Err(unknown(key, Some("generation_config")));
        }
    }
    contents(request.get("contents"))?;
    tools(request.get("tools"))?;
    if let Some(mode) = request
        .get("toolConfig")
        .and_then(|c| c.pointer("/functionCallingConfig/mode"))
    {
        if !mode.as_str().is_some_and(|m| MODES.contains(&m)) {
            return Err(format!(
                "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), {mode}"
            ));
        }
    }
    Ok(())
}

fn unknown(name: &str, at: Option<&str>) -> String {
    match at {
        Some(at) => format!(
            "Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field."
        ),
        None => {
            format!("Invalid JSON payload received. Unknown name \"{name}\": Cannot find field.")
        }
    }
}

/// Roles, non-empty parts, and function responses that answer the calls of the turn before.
fn contents(contents: Option<&Value>) -> Result<(), String> {
    let contents = match contents.and_then(Value::as_array) {
        Some(contents) if !contents.is_empty() => contents,
        _ => return Err("* GenerateContentRequest.contents: contents is not specified\n".into()),
    };
    for (i, content) in contents.iter().enumerate() {
        match content.get("role").and_then(Value::as_str) {
            None | Some("user" | "model") => {}
            Some(_) => return Err("Please use a valid role: user, model.".into()),
        }
        let own = parts(content);
        if own.is_empty() {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            ));
        }
        let responses: Vec<&str> = own
            .iter()
            .filter_map(|p| p.pointer("/functionResponse/name")?.as_str())
            .collect();
        if responses.is_empty() {
            continue;
        }
        let previous = i.checked_sub(1).map(|p| &contents[p]);
        let calls: Vec<&str> = previous
            .filter(|c| c.get("role").and_then(Value::as_str) == Some("model"))
            .map(|c| {
                parts(c)
                    .iter()
                    .filter_map(|p| p.pointer("/functionCall/name")?.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if calls.is_empty() {
            return Err("Please ensure that function response turn comes immediately after a function call turn.".into());
        }
        if let Some(name) = responses.iter().find(|name| !calls.contains(name)) {
            return Err(format!(
                "* GenerateContentRequest.contents[{i}]: function response `{name}` does not answer any function call of the preceding turn.\n"
            ));
        }
        if responses.len() != calls.len() {
            return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into());
        }
    }
    Ok(())
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Function parameter schemas: no JSON-Schema-only keys, no object without properties.
fn tools(tools: Option<&Value>) -> Result<(), String> {
    for (t, tool) in tools
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let declarations = tool
            .get("functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (f, declaration) in declarations.enumerate() {
            if let Some(schema) = declaration.get("parameters") {
                let at = format!("tools[{t}].function_declarations[{f}].parameters");
                schema_keys(schema, &at)?;
            }
        }
    }
    Ok(())
}

fn schema_keys(schema: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(key) = schema
        .keys()
        .find(|k| FOREIGN_SCHEMA_KEYS.contains(&k.as_str()))
    {
        return Err(unknown(key, Some(at)));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    if schema.get("type").and_then(Value::as_str) == Some("object")
        && properties.is_some_and(Map::is_empty)
    {
        return Err(format!(
            "* GenerateContentRequest.{at}.properties: should be non-empty for OBJECT type\n"
        ));
    }
    // Keys of `properties` are names, not schema keywords: only their values are schemas.
    for (name, property) in properties.into_iter().flatten() {
        schema_keys(property, &format!("{at}.properties[{name:?}].value"))?;
    }
    if let Some(items) = schema.get("items") {
        schema_keys(items, &format!("{at}.items"))?;
    }
    for (i, option) in schema
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        schema_keys(option, &format!("{at}.any_of[{i}]"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Value {
        json!({"role": "user", "parts": [{"text": text}]})
    }

    #[test]
    fn accepts_a_well_formed_tool_round_trip() {
        let request = json!({
            "contents": [
                user("weather?"),
                {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}}, {"functionCall": {"name": "b", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}, {"functionResponse": {"name": "b", "response": {}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "a", "parameters": {"type": "object",
                "properties": {"additionalProperties": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a"]}},
            "generationConfig": {"temperature": 0.1, "thinkingConfig": {"thinkingBudget": 0}}
        });
        assert_eq!(check(&request), Ok(()));
    }

    #[test]
    fn refusals() {
        let cases = [
            (json!({"contents": [user("x")], "model": "m"}), "Unknown name \"model\""),
            (json!({"contents": [user("x")], "generationConfig": {"max_tokens": 5}}),
             "Unknown name \"max_tokens\" at 'generation_config'"),
            (json!({"contents": []}), "contents is not specified"),
            (json!({}), "contents is not specified"),
            (json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}), "valid role"),
            (json!({"contents": [{"role": "user", "parts": []}]}), "must not be empty"),
            (json!({"contents": [user("x"), {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}]}),
             "immediately after a function call turn"),
            (json!({"contents": [user("x"), {"role": "model", "parts": [{"functionCall": {"name": "a"}}]},
                                 {"role": "user", "parts": [{"functionResponse": {"name": "b", "response": {}}}]}]}),
             "`b` does not answer"),
            (json!({"contents": [user("x"), {"role": "model", "parts": [{"functionCall": {"name": "a"}}, {"functionCall": {"name": "a"}}]},
                                 {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}]}),
             "number of function response parts"),
            (json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "a",
                "parameters": {"type": "object", "properties": {"p": {"type": "object", "additionalProperties": false, "properties": {"q": {"type": "string"}}}}}}]}]}),
             "Unknown name \"additionalProperties\" at 'tools[0].function_declarations[0].parameters.properties[\"p\"].value'"),
            (json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "a",
                "parameters": {"$schema": "x", "type": "object", "properties": {"q": {"type": "string"}}}}]}]}),
             "Unknown name \"$schema\""),
            (json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "a",
                "parameters": {"type": "object", "properties": {}}}]}]}),
             "should be non-empty for OBJECT type"),
            (json!({"contents": [user("x")], "toolConfig": {"functionCallingConfig": {"mode": "required"}}}),
             "function_calling_config.mode"),
        ];
        for (request, expected) in cases {
            match check(&request) {
                Err(message) => assert!(message.contains(expected), "{message} / {expected}"),
                Ok(()) => panic!("should refuse: {request}"),
            }
        }
    }
}

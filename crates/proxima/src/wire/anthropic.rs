//! Anthropic's Messages API format: requests, responses, content blocks, usage.
//!
//! Content blocks are handled as JSON values and matched by `type`, so that block types this
//! gateway does not model (documents, server tool results, search results ...) survive a trip
//! between an Anthropic client and an Anthropic provider untouched.

mod request;
mod response;

pub use request::{MessagesRequest, DEFAULT_MAX_TOKENS};
pub use response::{
    anthropic_id, finish_reason_from_wire, finish_reason_to_wire, tool_input, usage_from_wire,
    usage_to_wire, MessagesResponse, UsageWire,
};

use serde_json::{json, Map, Value};

use crate::canonical::CacheHint;

/// `cache_control` of a block, as a canonical hint.
fn cache_hint(block: &Value) -> Option<CacheHint> {
    let control = block.get("cache_control")?;
    Some(CacheHint {
        ttl: control
            .get("ttl")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Adds `cache_control` to a block being written, when the canonical part carries a hint.
fn with_cache(mut block: Value, cache: &Option<CacheHint>) -> Value {
    if let (Some(hint), Some(object)) = (cache, block.as_object_mut()) {
        let mut control = Map::new();
        control.insert("type".into(), json!("ephemeral"));
        if let Some(ttl) = &hint.ttl {
            control.insert("ttl".into(), json!(ttl));
        }
        object.insert("cache_control".into(), Value::Object(control));
    }
    block
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::MessagesRequest;
    use crate::wire::gemini::GenerateContentRequest;
    use crate::wire::openai::ChatCompletionRequest;

    fn claude_code_request() -> Value {
        json!({
            "model": "sonnet",
            "max_tokens": 32000,
            "stream": true,
            "system": [
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief."}
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "list files"}]},
                // As Claude Code sends its environment: a system turn after the user's.
                {"role": "system", "content": [{"type": "text", "text": "Today is 2026-12-03.", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should run ls", "signature": "sig-1"},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt"}], "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "thanks"}
                ]}
            ],
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
            "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "temperature": 0.5
        })
    }

    fn to_canonical(body: Value, beta: Option<&str>) -> crate::canonical::ChatRequest {
        let wire: MessagesRequest = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        wire.into_canonical(beta.map(str::to_owned))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn anthropic_request_round_trips_to_an_anthropic_provider() {
        let canonical = to_canonical(
            claude_code_request(),
            Some("interleaved-thinking-2025-05-14"),
        );
        let out = serde_json::to_value(
            MessagesRequest::from_canonical(&canonical, "claude-sonnet-4-5")
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_default();
        let mut expected = claude_code_request();
        expected["model"] = json!("claude-sonnet-4-5");
        assert_eq!(out, expected);
        assert_eq!(
            canonical.passthrough.headers,
            vec![(
                "anthropic-beta".to_owned(),
                "interleaved-thinking-2025-05-14".to_owned()
            )]
        );
    }

    #[test]
    fn anthropic_request_translates_to_openai_chat() {
        let canonical = to_canonical(claude_code_request(), Some("beta"));
        let out = serde_json::to_value(ChatCompletionRequest::from_canonical(&canonical, "gpt-4o"))
            .unwrap_or_default();
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be brief."}]},
                    {"role": "user", "content": "list files"},
                    {"role": "system", "content": "Today is 2026-12-03."},
                    {"role": "assistant", "reasoning_content": "I should run ls", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}
                    ]},
                    {"role": "tool", "content": "a.txt", "tool_call_id": "toolu_1"},
                    {"role": "user", "content": "thanks"}
                ],
                "tools": [{"type": "function", "function": {"name": "Bash", "description": "run", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
                "temperature": 0.5,
                "max_tokens": 32000,
                "stream": true,
                "stream_options": {"include_usage": true},
                "user": "u-1"
            })
        );
        // A reasoning model gets the thinking budget as an effort, and the newer limit field.
        let out =
            serde_json::to_value(ChatCompletionRequest::from_canonical(&canonical, "o3-mini"))
                .unwrap_or_default();
        assert_eq!(out["reasoning_effort"], "low");
        assert_eq!(out["max_completion_tokens"], 32000);
        assert!(out.get("max_tokens").is_none());
    }

    #[test]
    fn openai_request_translates_to_anthropic() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "two"},
                {"role": "system", "content": "later"},
                {"role": "user", "content": "go on"}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "END",
            "response_format": {"type": "json_object"},
            "logit_bias": {"1": 2}
        });
        let wire: ChatCompletionRequest =
            serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        let canonical = wire.into_canonical().unwrap_or_else(|e| panic!("{e}"));
        let out = serde_json::to_value(
            MessagesRequest::from_canonical(&canonical, "claude").unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_default();
        assert_eq!(
            out,
            json!({
                "model": "claude",
                "max_tokens": 4096,
                "system": [{"type": "text", "text": "first"}, {"type": "text", "text": "later"}],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
                        {"type": "tool_use", "id": "c2", "name": "g", "input": {"arguments": "not json"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "one"}]},
                        {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "two"}]},
                        {"type": "text", "text": "go on"}
                    ]}
                ],
                "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "stop_sequences": ["END"],
                "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}
            })
        );
    }

    #[test]
    fn other_stream_options_reach_an_openai_upstream() {
        let wire: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "stream": true,
            "stream_options": {"include_usage": false, "include_obfuscation": false},
            "messages": [{"role": "user", "content": "x"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let canonical = wire.into_canonical().unwrap_or_else(|e| panic!("{e}"));
        assert!(!canonical.include_usage);
        let out = serde_json::to_value(ChatCompletionRequest::from_canonical(&canonical, "m"))
            .unwrap_or_default();
        assert_eq!(
            out["stream_options"],
            json!({"include_usage": true, "include_obfuscation": false})
        );
    }

    #[test]
    fn several_choices_are_refused_for_anthropic() {
        let wire: ChatCompletionRequest = serde_json::from_value(
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let canonical = wire.into_canonical().unwrap_or_else(|e| panic!("{e}"));
        let error = MessagesRequest::from_canonical(&canonical, "claude")
            .err()
            .map(|e| e.param);
        assert_eq!(error, Some(Some("n".to_owned())));
    }

    /// Claude Code's first request: the user's turn, then its environment as a system turn.
    fn system_turn_request() -> Value {
        json!({
            "model": "opus", "max_tokens": 100, "system": "You are Claude Code.",
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "system", "content": "Today is 2026-12-03."}
            ]
        })
    }

    #[test]
    fn a_system_turn_keeps_its_place_for_an_anthropic_provider() {
        let canonical = to_canonical(system_turn_request(), None);
        let roles: Vec<&str> = canonical.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "system"]);
        let out = serde_json::to_value(
            MessagesRequest::from_canonical(&canonical, "claude").unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_default();
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "You are Claude Code."}])
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hello"}]},
                {"role": "system", "content": [{"type": "text", "text": "Today is 2026-12-03."}]}
            ])
        );
    }

    #[test]
    fn a_system_turn_reaches_gemini_as_a_user_turn_saying_so() {
        let canonical = to_canonical(system_turn_request(), None);
        let out = serde_json::to_value(
            GenerateContentRequest::from_canonical(&canonical, "gemini-2.5-flash")
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_default();
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "You are Claude Code."}]})
        );
        assert_eq!(
            out["contents"],
            json!([{"role": "user", "parts": [{"text": "hello"}, {"text": "System: Today is 2026-12-03."}]}])
        );
    }

    #[test]
    fn other_roles_are_still_refused() {
        let mut body = system_turn_request();
        body["messages"][1]["role"] = json!("tool");
        let wire: MessagesRequest = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        let error = wire.into_canonical(None).err().map(|e| e.param);
        assert_eq!(error, Some(Some("messages[1].role".to_owned())));
    }
}

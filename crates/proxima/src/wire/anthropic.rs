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

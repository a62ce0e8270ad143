//! The gateway's own tools at `/mcp`, over the caller's own data: `vector_store_search` and
//! `conversation_items`. They run the same code as `POST /v1/vector_stores/{id}/search` and
//! `GET /v1/conversations/{id}/items`, for the caller's tenant, so another team's store or
//! conversation is "not found" here as it is there.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::protocol::{RpcError, INVALID_PARAMS};
use crate::error::{Error, Result};
use crate::pipeline::RequestContext;
use crate::retrieval::{self, SearchRequest};
use crate::store::Order;

pub const VECTOR_STORE_SEARCH: &str = "vector_store_search";
pub const CONVERSATION_ITEMS: &str = "conversation_items";

/// Items `conversation_items` returns when no `limit` is given, and at most.
const DEFAULT_ITEMS: u32 = 20;
const MAX_ITEMS: u32 = 100;

/// The definitions `tools/list` shows.
pub fn definitions() -> [Value; 2] {
    [
        json!({
            "name": VECTOR_STORE_SEARCH,
            "title": "Search a vector store",
            "description": "Searches one of your vector stores (documents uploaded to this gateway) and returns the best-matching chunks of text, each with its file name and score.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "vector_store_id": {"type": "string", "description": "The store to search, e.g. `vs_abc123`."},
                    "query": {"type": "string", "minLength": 1, "description": "What to look for, in words."},
                    "max_num_results": {"type": "integer", "minimum": 1, "maximum": retrieval::MAX_RESULTS, "default": retrieval::DEFAULT_RESULTS, "description": "How many chunks to return."}
                },
                "required": ["vector_store_id", "query"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        json!({
            "name": CONVERSATION_ITEMS,
            "title": "Read a conversation",
            "description": "Returns the most recent items (messages, tool calls and their results) of one of your stored conversations, oldest first.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "conversation_id": {"type": "string", "description": "The conversation, e.g. `conv_abc123`."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS, "default": DEFAULT_ITEMS, "description": "How many of the latest items to return."}
                },
                "required": ["conversation_id"],
                "additionalProperties": false
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
    ]
}

/// Whether `name` is one of the gateway's own tools.
pub fn is_own(name: &str) -> bool {
    name == VECTOR_STORE_SEARCH || name == CONVERSATION_ITEMS
}

/// What a tool call of one of the gateway's own tools came to.
pub enum Outcome {
    /// The tool ran: its result (its text, and the same as structured content).
    Done(Value),
    /// It ran and failed (an unknown store, a bad value): shown to the model as a tool error.
    Failed(Error),
    /// The arguments do not fit the tool's input schema: a protocol error.
    BadArguments(RpcError),
}

/// Runs own tool `name` with `arguments` for the caller of `cx`.
pub async fn call(cx: &Arc<RequestContext>, name: &str, arguments: Value) -> Outcome {
    let ran = match name {
        VECTOR_STORE_SEARCH => match arguments_as(name, arguments) {
            Ok(args) => vector_store_search(cx, args).await,
            Err(e) => return Outcome::BadArguments(e),
        },
        _ => match arguments_as(name, arguments) {
            Ok(args) => conversation_items(cx, args).await,
            Err(e) => return Outcome::BadArguments(e),
        },
    };
    match ran {
        Ok(value) => Outcome::Done(value),
        Err(e) => Outcome::Failed(e),
    }
}

fn arguments_as<T: serde::de::DeserializeOwned>(
    tool: &str,
    arguments: Value,
) -> std::result::Result<T, RpcError> {
    let arguments = if arguments.is_null() {
        json!({})
    } else {
        arguments
    };
    serde_json::from_value(arguments).map_err(|e| {
        RpcError::new(
            INVALID_PARAMS,
            format!("invalid arguments for `{tool}`: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    vector_store_id: String,
    query: String,
    #[serde(default)]
    max_num_results: Option<i64>,
}

async fn vector_store_search(cx: &Arc<RequestContext>, args: SearchArgs) -> Result<Value> {
    if args.query.trim().is_empty() {
        return Err(Error::invalid_request("`query` is empty").with_param("query"));
    }
    let request = SearchRequest {
        query: args.query.clone(),
        max_num_results: crate::surface::vector_stores::results(args.max_num_results)?,
        filter: None,
        score_threshold: None,
    };
    let hits = retrieval::search(cx, &[args.vector_store_id], &request).await?;
    Ok(crate::wire::vector_stores::search_results(
        &args.query,
        &hits,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsArgs {
    conversation_id: String,
    #[serde(default)]
    limit: Option<i64>,
}

async fn conversation_items(cx: &Arc<RequestContext>, args: ItemsArgs) -> Result<Value> {
    let limit = match args.limit {
        None => DEFAULT_ITEMS,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_ITEMS).contains(n))
            .ok_or_else(|| {
                Error::invalid_request(format!("`limit` must be from 1 to {MAX_ITEMS}"))
                    .with_param("limit")
            })?,
    };
    let id = &args.conversation_id;
    crate::surface::conversations::owned(cx, id).await?;
    // The latest `limit` items, then oldest first, as a reader (or a model) takes them in.
    let mut page = cx
        .services
        .store
        .list_items(id, None, Order::Desc, limit + 1)
        .await?;
    let has_more = page.len() > limit as usize;
    page.truncate(limit as usize);
    page.reverse();
    Ok(crate::wire::conversations::item_list(&page, has_more))
}

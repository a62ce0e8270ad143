//! The Conversations API, `/v1/conversations`, in the shape of OpenAI's: the server-side
//! conversation store, read and written directly. Chat turns on a conversation go through
//! the pipeline instead (`x-proxima-conversation`); see [`crate::context`].
//!
//! A conversation belongs to the caller's team, or to the key when it has none: any other
//! caller gets 404 for it and its items, as for an id that never existed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_metadata, json_or_error, read_json, Paging};
use crate::clock::now_ms;
use crate::context::{self, items};
use crate::error::{Error, Result};
use crate::pipeline::RequestContext;
use crate::store::{ConversationRecord, ItemRecord, Order, Store};
use crate::wire::conversations as wire;
use crate::wire::responses::items_to_messages;

/// Most items one request may add, as OpenAI allows.
const MAX_NEW_ITEMS: usize = 20;

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    items: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct UpdateBody {
    metadata: Map<String, Value>,
}

#[derive(Deserialize)]
struct ItemsBody {
    items: Vec<Value>,
}

/// The caller's conversation `id`, or 404.
pub(crate) async fn owned(cx: &RequestContext, id: &str) -> Result<ConversationRecord> {
    context::check_id(id, "conversation_id")?;
    cx.services.conversations.settled(id).await;
    cx.services
        .store
        .get_conversation(id, &cx.tenant())
        .await?
        .ok_or_else(|| context::unknown_conversation(id))
}

/// Parses items and stores them at the end of the conversation.
async fn append(
    store: &Store,
    cx: &Arc<RequestContext>,
    id: &str,
    items: Vec<Value>,
) -> Result<Vec<ItemRecord>> {
    if items.len() > MAX_NEW_ITEMS {
        return Err(Error::invalid_request(format!(
            "at most {MAX_NEW_ITEMS} items can be added at once"
        ))
        .with_param("items"));
    }
    let messages = items_to_messages(items, "items")?;
    let new = items::split(&messages);
    let stored = store
        .append_items(id, &cx.tenant(), &new, now_ms())
        .await?
        .ok_or_else(|| context::unknown_conversation(id))?;
    if let Some(model) = &cx.gateway.config.context.embedding_model {
        context::meaning::index(cx, model, id, &stored);
    }
    Ok(stored)
}

/// `POST /v1/conversations`.
pub async fn create(Extension(cx): Extension<Arc<RequestContext>>, body: Body) -> Response {
    json_or_error(
        async {
            let body: CreateBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            let metadata = body.metadata.unwrap_or_default();
            check_metadata(&metadata)?;
            // Parsed before anything is stored: a bad item creates nothing.
            let items = body.items.unwrap_or_default();
            if items.len() > MAX_NEW_ITEMS {
                return Err(Error::invalid_request(format!(
                    "at most {MAX_NEW_ITEMS} initial items"
                ))
                .with_param("items"));
            }
            items_to_messages(items.clone(), "items")?;
            let store = &cx.services.store;
            let id = format!("conv_{:032x}", fastrand::u128(..));
            let record = store
                .create_conversation(&id, &cx.tenant(), &Value::Object(metadata), now_ms())
                .await?
                .ok_or_else(|| Error::internal("a fresh conversation id was taken"))?;
            if !items.is_empty() {
                append(store, &cx, &id, items).await?;
            }
            Ok(wire::conversation(&record))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}`.
pub async fn get(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(owned(&cx, &id).await.map(|c| wire::conversation(&c)))
}

/// `POST /v1/conversations/{id}`: replaces the metadata.
pub async fn update(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: UpdateBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            check_metadata(&body.metadata)?;
            let mut record = owned(&cx, &id).await?;
            record.metadata = Value::Object(body.metadata);
            cx.services
                .store
                .set_conversation_metadata(&id, &cx.tenant(), &record.metadata, now_ms())
                .await?;
            Ok(wire::conversation(&record))
        }
        .await,
    )
}

/// `DELETE /v1/conversations/{id}`: the conversation and its items.
pub async fn delete(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            context::check_id(&id, "conversation_id")?;
            if cx
                .services
                .store
                .delete_conversation(&id, &cx.tenant())
                .await?
            {
                Ok(wire::deleted(&id))
            } else {
                Err(context::unknown_conversation(&id))
            }
        }
        .await,
    )
}

/// `POST /v1/conversations/{id}/items`: adds up to 20 items at the end.
pub async fn add_items(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: ItemsBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            owned(&cx, &id).await?;
            let stored = append(&cx.services.store, &cx, &id, body.items).await?;
            Ok(wire::item_list(&stored, false))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}/items`: a page of items, newest first unless `order=asc`, as
/// the OpenAI SDK pages them (`after` = the last id of the previous page).
pub async fn list_items(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    json_or_error(
        async {
            let paging = Paging::from_query(raw)?;
            let order = if paging.descending {
                Order::Desc
            } else {
                Order::Asc
            };
            owned(&cx, &id).await?;
            let store = &cx.services.store;
            let after = match &paging.after {
                Some(item) => Some(
                    store
                        .get_item(&id, item)
                        .await?
                        .ok_or_else(|| {
                            Error::invalid_request(format!(
                                "`after`: no item `{item}` in this conversation"
                            ))
                            .with_param("after")
                        })?
                        .seq,
                ),
                None => None,
            };
            let limit = u32::try_from(paging.limit).unwrap_or(100);
            let mut page = store.list_items(&id, after, order, limit + 1).await?;
            let has_more = page.len() > paging.limit;
            page.truncate(paging.limit);
            Ok(wire::item_list(&page, has_more))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}/items/{item_id}`.
pub async fn get_item(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, item)): Path<(String, String)>,
) -> Response {
    json_or_error(
        async {
            owned(&cx, &id).await?;
            let record = cx.services.store.get_item(&id, &item).await?;
            record
                .map(|r| wire::item(&r))
                .ok_or_else(|| unknown_item(&item))
        }
        .await,
    )
}

/// `DELETE /v1/conversations/{id}/items/{item_id}`: answers with the conversation.
pub async fn delete_item(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, item)): Path<(String, String)>,
) -> Response {
    json_or_error(
        async {
            let conversation = owned(&cx, &id).await?;
            if cx.services.store.delete_item(&id, &item).await? {
                Ok(wire::conversation(&conversation))
            } else {
                Err(unknown_item(&item))
            }
        }
        .await,
    )
}

fn unknown_item(id: &str) -> Error {
    Error::new(
        crate::error::ErrorKind::NotFound,
        format!("no item `{id}` in this conversation"),
    )
}

//! Stored responses: keeping a response once its call completed, and the routes that read
//! (`GET /v1/responses/{id}`, `/input_items`), delete or continue (`previous_response_id`) it.
//! Every lookup names the caller's tenant, so another tenant's response reads as unknown (404).
//!
//! A response is stored from two halves that arrive apart: the canonical answer (the turn a
//! chain replays) from a [`Keep`] stage when the call completed, and the response object
//! exactly as the client got it — the JSON answer, or the `response.completed` event's —
//! from the surface, right after. The write runs in the background, off the answer's way; a
//! client that reads its response back at once would race it, so the id is registered as being
//! written from the moment the call completed, before the client can see the end of the
//! answer, and every read of an id waits for its write first. Until its call completed a
//! response is not found: a read while it streams, or of one whose call failed, is a 404.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::canonical::{ChatResponse, Message};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::finish::{Keep, Stage};
use crate::pipeline::RequestContext;
use crate::store::ResponseRecord;
use crate::surface::{json_or_error, Paging};
use crate::wire::responses::{ResponseContext, ResponseObject};

/// How long a read waits for the write of the response it asks for; a database that slow
/// answers the read as it stands.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Responses being written, by id, each with a receiver that learns when the write is over
/// (its sender goes). Ids are unique, so one map serves every gateway in the process.
static WRITING: LazyLock<Mutex<HashMap<String, watch::Receiver<()>>>> =
    LazyLock::new(Mutex::default);

fn writing() -> MutexGuard<'static, HashMap<String, watch::Receiver<()>>> {
    // The map stays consistent whatever panicked while holding it.
    WRITING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A response being written: registered while this lives, so that reads of it wait.
struct Writing {
    id: String,
    _done: watch::Sender<()>,
}

impl Writing {
    fn start(id: String) -> Writing {
        let (done, written) = watch::channel(());
        writing().insert(id.clone(), written);
        Writing { id, _done: done }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        writing().remove(&self.id);
        // `_done` goes next, waking the readers.
    }
}

/// Waits for the write of response `id`, if one is under way (at most [`WRITE_WAIT`]).
async fn written(id: &str) {
    let pending = writing().get(id).cloned();
    if let Some(mut pending) = pending {
        let _ = tokio::time::timeout(WRITE_WAIT, pending.changed()).await;
    }
}

/// The stage that stores the response once its call completed: `input` is the response's new
/// input (no instructions), `input_items` as the client sent them, and `body` gets the
/// response object the client got. A call that fails or is dropped stores nothing, and neither
/// does one whose response object never comes (the stream broke after the call's end).
pub fn keep(
    cx: &RequestContext,
    context: &ResponseContext,
    input: Vec<Message>,
    input_items: Vec<Value>,
    body: oneshot::Receiver<ResponseObject>,
) -> Box<dyn Stage> {
    let store = cx.services.store.clone();
    let mut record = ResponseRecord {
        id: context.id.clone(),
        owner: cx.tenant(),
        previous_id: context.echo.previous_response_id.clone(),
        conversation_id: context.echo.conversation.as_ref().map(|c| c.id.clone()),
        turn: input,
        input_items,
        body: Value::Null,
        created_at: cx.at,
    };
    Box::new(Keep::new(move |answer: ChatResponse| {
        // Registered now, before the client sees the end of the answer.
        let pending = Writing::start(record.id.clone());
        if let Some(output) = answer.choices.into_iter().next().map(|c| c.message) {
            // An empty turn would be refused by some backends when a chain replays it.
            if !output.content.is_empty() {
                record.turn.push(output);
            }
        }
        tokio::runtime::Handle::current().spawn(async move {
            let _pending = pending;
            let Ok(body) = body.await else { return };
            record.body = match serde_json::to_value(&body) {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(response = %record.id, "cannot encode the response to store it: {e}");
                    return;
                }
            };
            if let Err(e) = store.put_response(&record).await {
                tracing::warn!(response = %record.id, "storing the response failed: {}", e.message);
            }
        });
    }))
}

/// The turns of the stored chain ending at `previous` (`previous_response_id`), oldest first.
pub async fn chain(cx: &RequestContext, previous: &str) -> Result<Vec<Message>> {
    written(previous).await;
    cx.services
        .store
        .response_chain(previous, &cx.tenant())
        .await?
        .ok_or_else(|| not_found(previous).with_param("previous_response_id"))
}

fn not_found(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("there is no stored response `{id}`: responses made with `store: false`, deleted, or of another key or team are not found"),
    )
}

/// The caller's stored response `id`, once any write of it is over.
async fn find(cx: &RequestContext, id: &str) -> Result<ResponseRecord> {
    written(id).await;
    cx.services
        .store
        .get_response(id, &cx.tenant())
        .await?
        .ok_or_else(|| not_found(id))
}

/// `GET /v1/responses/{id}`: the response as it was answered.
pub async fn get(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(find(&cx, &id).await.map(|record| record.body))
}

/// `DELETE /v1/responses/{id}`. Responses chained after it keep their own turns; their chain
/// ends where this one was.
pub async fn delete(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            written(&id).await;
            if cx.services.store.delete_response(&id, &cx.tenant()).await? {
                Ok(json!({"id": id, "object": "response", "deleted": true}))
            } else {
                Err(not_found(&id))
            }
        }
        .await,
    )
}

/// `GET /v1/responses/{id}/input_items`: the input items as the client sent them, newest first
/// unless `order=asc`, a page of `limit` (1 to 100, default 20) after the item `after`.
pub async fn input_items(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    json_or_error(
        async {
            let paging = Paging::from_query(raw)?;
            let mut items = find(&cx, &id).await?.input_items;
            if paging.descending {
                items.reverse();
            }
            let start = match &paging.after {
                None => 0,
                Some(after) => {
                    items
                        .iter()
                        .position(|item| item["id"].as_str() == Some(after.as_str()))
                        .ok_or_else(|| {
                            Error::invalid_request(format!(
                                "response `{id}` has no input item `{after}`"
                            ))
                            .with_param("after")
                        })?
                        + 1
                }
            };
            let has_more = items.len() > start + paging.limit;
            let page: Vec<Value> = items.into_iter().skip(start).take(paging.limit).collect();
            Ok(crate::wire::conversations::list(page, has_more))
        }
        .await,
    )
}

/// `POST /v1/responses/{id}/cancel`: only background responses can be cancelled, and this
/// gateway runs none; a stored response is already complete (400), an unknown one is 404.
pub async fn cancel(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            find(&cx, &id).await?;
            Err(Error::invalid_request(format!(
                "response `{id}` is complete and cannot be cancelled: only background responses can be, and this gateway answers every response while its request is open"
            )))
        }
        .await,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_for_the_write_under_way() {
        let id = "resp_waits_for_its_write";
        let pending = Writing::start(id.to_owned());
        let read = tokio::spawn(written(id));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "the read went ahead of the write");
        drop(pending);
        tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .unwrap()
            .unwrap();
        assert!(!writing().contains_key(id));
        // Nothing under way: no wait.
        tokio::time::timeout(Duration::from_millis(100), written(id))
            .await
            .unwrap();
    }
}

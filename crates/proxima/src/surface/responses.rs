//! The Responses API surface: `POST /v1/responses`, served by every provider through the
//! canonical model, streaming and not; responses are stored (`store`, default true) and
//! continued (`previous_response_id`) through [`stored`]. The `file_search` tool is run by the
//! gateway: the prepare phase retrieves passages for the new input, and the answer shows the
//! search and cites the passages (see [`crate::wire::responses::FileSearchCall`]).

mod stored;
mod stream;

use std::cell::Cell;
use std::sync::Arc;

use super::events::sse_events;
use super::{chat_response, headers_and_body, json_response, read_json};
use crate::canonical::{Api, Message};
use crate::context::passages::{query_of, Retrieval, Retrieved};
use crate::pipeline::{self, Directives, RequestContext};
use crate::wire::responses::{
    item_id, Converted, FileSearchCall, FileSearchTool, ResponseObject, ResponsesRequest,
};
use axum::extract::{Extension, Request};
use axum::response::Response;
use tokio::sync::oneshot;

pub use stored::{cancel, delete, get, input_items};
pub use stream::{encode, Event, ResponseEvents};

const API: Api = Api::Responses;

/// `POST /v1/responses`: one model call with the request's instructions, the earlier turns of
/// `previous_response_id` and the new input; stored, unless `store: false`, once it completed.
pub async fn create(Extension(cx): Extension<Arc<RequestContext>>, request: Request) -> Response {
    let (headers, body) = headers_and_body(request);
    let limit = cx.gateway.config.server.max_body_bytes;
    let converted = match read_json::<ResponsesRequest>(body, limit)
        .await
        .and_then(ResponsesRequest::into_canonical)
    {
        Ok(converted) => converted,
        Err(e) => return e.into_response(API),
    };
    let Converted {
        mut request,
        mut context,
        input_start,
        input_items,
        file_search,
    } = converted;
    // The search is for the user's new input; an input of call results alone searches nothing.
    let (retrieval, searched) = match file_search {
        Some(tool) => file_search_retrieval(tool, &request.messages[input_start..]),
        None => (Retrieval::default(), None),
    };
    let echo = &context.echo;
    // Taken before a chain's turns join it: a response's stored turn is only its new input.
    let input = if echo.store {
        request.messages[input_start..].to_vec()
    } else {
        Vec::new()
    };
    if let Some(previous) = &echo.previous_response_id {
        // After the new instructions, never the earlier ones, and before the new input.
        match stored::chain(&cx, previous).await {
            Ok(turns) => drop(request.messages.splice(input_start..input_start, turns)),
            Err(e) => return e.into_response(API),
        }
    }
    let mut directives = Directives {
        conversation: echo.conversation.as_ref().map(|c| c.id.clone()),
        retrieval,
        stages: Vec::new(),
        cache: pipeline::cache::Control::from_headers(&headers),
        ..Directives::default()
    };
    // Gets the response object the client is answered with, for storing.
    let mut sink = None;
    if echo.store {
        let (body, stored_body) = oneshot::channel();
        sink = Some(body);
        directives
            .stages
            .push(stored::keep(&cx, &context, input, input_items, stored_body));
    }
    let routed = pipeline::chat(&cx, request, directives).await;
    // The prepare phase, now over, reported what it retrieved.
    if let Some(Ok(Retrieved { query, hits })) = searched.map(|mut s| s.try_recv()) {
        context.file_search = Some(FileSearchCall {
            id: item_id("fs"),
            query,
            results: hits.into_iter().map(Into::into).collect(),
            include_results: context.file_search_results,
        });
    }
    let keepalive = cx.gateway.config.server.stream_keepalive.0;
    // Whichever way the answer goes out takes the sink.
    let sink = Cell::new(sink);
    chat_response(
        routed,
        API,
        keepalive,
        |answer| {
            // Built once: what the client gets is what is stored, item ids and all.
            let response = ResponseObject::from_canonical(answer, &context);
            if let Some(sink) = sink.take() {
                let _ = sink.send(response.clone());
            }
            json_response(&response)
        },
        |chunks| {
            let machine = ResponseEvents::new(context.clone()).on_completed(sink.take());
            sse_events(chunks, machine)
        },
    )
}

/// What the `file_search` tool retrieves for the new input `input` (the last user message's
/// text), and where the prepare phase reports it; nothing without such text.
fn file_search_retrieval(
    tool: FileSearchTool,
    input: &[Message],
) -> (Retrieval, Option<oneshot::Receiver<Retrieved>>) {
    let Some(query) = query_of(input) else {
        return (Retrieval::default(), None);
    };
    let (report, searched) = oneshot::channel();
    let retrieval = Retrieval {
        stores: tool.vector_store_ids,
        max_results: tool.max_num_results,
        filter: tool.filter,
        score_threshold: tool.score_threshold,
        query: Some(query),
        report: Some(report),
    };
    (retrieval, Some(searched))
}

/// End to end: the real server, in-process, on the built-in mock provider.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::{json, Value};

    use crate::config::Config;
    use crate::server::Server;
    use crate::sse::SseDecoder;

    const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[providers.mock]
kind = "mock"

[models.mock]
targets = [{ provider = "mock", model = "mock" }]
"#;

    /// Starts a gateway; it stops when the returned sender is dropped.
    async fn gateway() -> (String, tokio::sync::oneshot::Sender<()>) {
        gateway_with(CONFIG).await
    }

    /// A gateway whose model `up` is served by an OpenAI-speaking mock upstream.
    async fn gateway_in_front_of(
        upstream: &mock_upstream::MockUpstream,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        let config = format!(
            "{CONFIG}\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n[models.up]\nretries = 0\ntargets = [{{ provider = \"up\", model = \"gpt-5-up\" }}]\n",
            upstream.url()
        );
        gateway_with(&config).await
    }

    async fn gateway_with(config: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
        let mut config = Config::parse(config, "t.toml", &|_| None).unwrap();
        config.storage.database = crate::config::Secret::new("sqlite::memory:");
        let server = Server::bind(config, None).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        (base, stop)
    }

    async fn call(method: http::Method, url: String, body: Option<Value>) -> reqwest::Response {
        // reqwest without a bundled crypto provider needs a process-wide one, even for http://.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let mut req = client.request(method, url);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        req.send().await.unwrap()
    }

    async fn post(base: &str, body: Value) -> reqwest::Response {
        call(
            http::Method::POST,
            format!("{base}/v1/responses"),
            Some(body),
        )
        .await
    }

    fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn answers_in_the_responses_shape() {
        let (base, _stop) = gateway().await;
        let r = post(
            &base,
            json!({"model": "mock", "input": "hello there", "instructions": "Echo."}),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "application/json");
        assert!(!header(&r, "x-request-id").is_empty());
        assert_eq!(header(&r, "x-proxima-provider"), "mock");
        assert_eq!(header(&r, "x-proxima-model"), "mock");
        assert_eq!(header(&r, "x-proxima-attempts"), "1");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["instructions"], "Echo.");
        assert_eq!(body["output"][0]["type"], "message");
        assert_eq!(body["output"][0]["role"], "assistant");
        assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(body["output"][0]["content"][0]["text"], "hello there");
        assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
        assert_eq!(body["usage"]["output_tokens"], 2);
    }

    #[tokio::test]
    async fn streams_the_event_sequence() {
        let (base, _stop) = gateway().await;
        let r = post(
            &base,
            json!({"model": "mock", "input": "one two three", "stream": true, "store": false}),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "text/event-stream");
        assert_eq!(header(&r, "x-proxima-provider"), "mock");
        let body = r.bytes().await.unwrap();
        assert!(!body.windows(6).any(|w| w == b"[DONE]"), "no [DONE] line");
        let events = events(&body);
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], n as u64);
        }
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            &kinds[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert_eq!(
            &kinds[kinds.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "one two three");
        let done = &events.last().unwrap()["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["store"], false);
        assert_eq!(done["output"][0]["content"][0]["text"], "one two three");
        assert_eq!(done["usage"]["output_tokens"], 3);
    }

    /// Parses an SSE body into the data of each event.
    fn events(body: &[u8]) -> Vec<Value> {
        let mut decoder = SseDecoder::default();
        decoder.push(bytes::Bytes::copy_from_slice(body));
        let mut events = Vec::new();
        while let Some(event) = decoder.next_event() {
            let data: Value = serde_json::from_slice(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), data["type"].as_str());
            events.push(data);
        }
        events
    }

    #[tokio::test]
    async fn an_openai_upstream_gets_only_what_chat_completions_accepts() {
        let upstream = mock_upstream::MockUpstream::start().await.unwrap();
        let (base, _stop) = gateway_in_front_of(&upstream).await;
        let r = post(
            &base,
            json!({
                "model": "up",
                "instructions": "You are a coding agent.",
                "input": [
                    {"type": "message", "role": "developer", "content": "sandboxed"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "do these in parallel"}]},
                ],
                "tools": [
                    {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}, "strict": false},
                    {"type": "custom", "name": "apply_patch", "description": "Edit files."},
                    {"type": "web_search"},
                ],
                "tool_choice": "auto",
                "parallel_tool_calls": true,
                "reasoning": {"effort": "medium", "summary": "auto"},
                "store": false,
                "stream": true,
                "include": ["reasoning.encrypted_content"],
                "prompt_cache_key": "session-1",
            }),
        )
        .await;
        assert_eq!(r.status(), 200);
        let events = events(&r.bytes().await.unwrap());
        let sent = upstream.received()[0].json();
        for field in [
            "input",
            "instructions",
            "store",
            "include",
            "prompt_cache_key",
            "reasoning",
            "text",
        ] {
            assert!(
                sent.get(field).is_none(),
                "`{field}` must not reach chat completions"
            );
        }
        assert_eq!(sent["model"], "gpt-5-up");
        let roles: Vec<&str> = sent["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "developer", "user"]);
        let tools: Vec<&str> = sent["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(tools, ["shell", "apply_patch"]);
        assert_eq!(
            sent["tools"][1]["function"]["parameters"]["required"],
            json!(["input"])
        );
        // The upstream model is a reasoning model, so the effort goes along.
        assert_eq!(sent["reasoning_effort"], "medium");
        // The upstream called both tools, streamed in pieces; the client gets a function call
        // and a custom tool call, each its own item.
        let done = &events.last().unwrap()["response"];
        assert_eq!(done["status"], "completed");
        let output = done["output"].as_array().unwrap();
        assert_eq!(output.len(), 2);
        assert_eq!(output[0]["type"], "function_call");
        assert_eq!(output[0]["name"], "shell");
        let arguments: Value =
            serde_json::from_str(output[0]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments["tool"], "shell");
        assert_eq!(output[1]["type"], "custom_tool_call");
        assert_eq!(output[1]["name"], "apply_patch");
        let streamed: String = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(streamed, output[0]["arguments"].as_str().unwrap());
    }

    #[tokio::test]
    async fn a_stream_cut_upstream_ends_with_response_failed() {
        let upstream = mock_upstream::MockUpstream::start().await.unwrap();
        upstream.enqueue(mock_upstream::Reply::default_behaviour().cut_after(3));
        let (base, _stop) = gateway_in_front_of(&upstream).await;
        let r = post(
            &base,
            json!({"model": "up", "input": "a long enough answer to cut", "stream": true}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let events = events(&r.bytes().await.unwrap());
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.last(), Some(&"response.failed"), "{kinds:?}");
        assert!(!kinds.contains(&"response.completed"));
        let failed = &events.last().unwrap()["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["code"], "server_error");
        assert!(!failed["error"]["message"].as_str().unwrap().is_empty());
    }

    #[tokio::test]
    async fn errors_in_the_openai_shape() {
        let (base, _stop) = gateway().await;
        let r = post(
            &base,
            json!({"model": "mock", "input": "hi", "previous_response_id": "resp_1"}),
        )
        .await;
        assert_eq!(r.status(), 404);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["param"], "previous_response_id");

        let r = post(
            &base,
            json!({"model": "mock", "input": "hi", "background": true}),
        )
        .await;
        assert_eq!(r.status(), 400);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "background");

        for (method, path) in [
            (http::Method::GET, "resp_1"),
            (http::Method::DELETE, "resp_1"),
            (http::Method::GET, "resp_1/input_items"),
            (http::Method::POST, "resp_1/cancel"),
        ] {
            let r = call(method, format!("{base}/v1/responses/{path}"), None).await;
            assert_eq!(r.status(), 404, "{path}");
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "not_found");
        }

        let r = post(&base, json!({"model": "nope", "input": "hi"})).await;
        assert_eq!(r.status(), 404);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "model_not_found");

        let r = post(&base, json!({"model": "mock", "input": 7})).await;
        assert_eq!(r.status(), 400);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["param"], "input");
    }

    async fn json_of(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn get(base: &str, path: &str) -> (u16, Value) {
        json_of(
            call(
                http::Method::GET,
                format!("{base}/v1/responses/{path}"),
                None,
            )
            .await,
        )
        .await
    }

    #[tokio::test]
    async fn a_response_is_stored_read_back_and_deleted() {
        let (base, _stop) = gateway().await;
        let (status, answered) = json_of(
            post(
                &base,
                json!({"model": "mock", "input": "keep this", "instructions": "Echo."}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answered["store"], true);
        let id = answered["id"].as_str().unwrap();
        // Read back at once: the same object, item ids and all.
        let (status, stored) = get(&base, id).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored, answered);

        let (status, items) = get(&base, &format!("{id}/input_items")).await;
        assert_eq!(status, 200, "{items}");
        assert_eq!(items["object"], "list");
        assert_eq!(items["data"].as_array().unwrap().len(), 1);
        let item = &items["data"][0];
        assert!(item["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(item["role"], "user");
        assert_eq!(item["content"][0]["text"], "keep this");
        assert_eq!(items["first_id"], item["id"]);
        assert_eq!(items["has_more"], false);

        let r = call(
            http::Method::POST,
            format!("{base}/v1/responses/{id}/cancel"),
            None,
        )
        .await;
        assert_eq!(r.status(), 400);

        let (status, deleted) = json_of(
            call(
                http::Method::DELETE,
                format!("{base}/v1/responses/{id}"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            deleted,
            json!({"id": id, "object": "response", "deleted": true})
        );
        let (status, body) = get(&base, id).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        let r = call(
            http::Method::DELETE,
            format!("{base}/v1/responses/{id}"),
            None,
        )
        .await;
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn a_streamed_response_is_stored_as_it_completed() {
        let (base, _stop) = gateway().await;
        let r = post(
            &base,
            json!({"model": "mock", "input": "one two three", "stream": true}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let events = events(&r.bytes().await.unwrap());
        let created = &events[0]["response"];
        let completed = &events.last().unwrap()["response"];
        assert_eq!(events.last().unwrap()["type"], "response.completed");
        assert_eq!(created["id"], completed["id"]);
        let (status, stored) = get(&base, completed["id"].as_str().unwrap()).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(&stored, completed);
        // The streamed items' ids are the stored ones.
        let added: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "response.output_item.added")
            .map(|e| &e["item"]["id"])
            .collect();
        let kept: Vec<&Value> = stored["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| &item["id"])
            .collect();
        assert_eq!(added, kept);
    }

    #[tokio::test]
    async fn input_items_come_in_pages() {
        let (base, _stop) = gateway().await;
        let input: Vec<Value> = (0..5)
            .map(|i| json!({"type": "message", "role": "user", "content": format!("item {i}")}))
            .chain([
                json!({"type": "message", "id": "msg_mine", "role": "user", "content": "last"}),
            ])
            .collect();
        let (status, answered) =
            json_of(post(&base, json!({"model": "mock", "input": input})).await).await;
        assert_eq!(status, 200, "{answered}");
        let id = answered["id"].as_str().unwrap();
        let text = |page: &Value| -> Vec<String> {
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["content"].as_str().unwrap().to_owned())
                .collect()
        };

        // Newest first by default.
        let (_, page) = get(&base, &format!("{id}/input_items?limit=2")).await;
        assert_eq!(text(&page), ["last", "item 4"]);
        assert_eq!(page["first_id"], "msg_mine");
        assert_eq!(page["has_more"], true);
        let after = page["last_id"].as_str().unwrap();
        let (_, page) = get(&base, &format!("{id}/input_items?limit=3&after={after}")).await;
        assert_eq!(text(&page), ["item 3", "item 2", "item 1"]);
        assert_eq!(page["has_more"], true);
        let after = page["last_id"].as_str().unwrap();
        let (_, page) = get(&base, &format!("{id}/input_items?after={after}")).await;
        assert_eq!(text(&page), ["item 0"]);
        assert_eq!(page["has_more"], false);

        let (_, page) = get(&base, &format!("{id}/input_items?order=asc&limit=4")).await;
        assert_eq!(text(&page), ["item 0", "item 1", "item 2", "item 3"]);
        let ids: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.starts_with("msg_")), "{ids:?}");

        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("order=sideways", "order"),
            ("after=msg_unknown", "after"),
        ] {
            let (status, body) = get(&base, &format!("{id}/input_items?{query}")).await;
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"]["param"], param);
        }
    }

    #[tokio::test]
    async fn store_false_is_not_stored_and_cannot_be_continued() {
        let (base, _stop) = gateway().await;
        let (_, first) = json_of(
            post(
                &base,
                json!({"model": "mock", "input": "hello", "store": false}),
            )
            .await,
        )
        .await;
        let id = first["id"].as_str().unwrap();
        assert_eq!(get(&base, id).await.0, 404);
        let (status, body) = json_of(
            post(
                &base,
                json!({"model": "mock", "input": "again", "previous_response_id": id}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["param"], "previous_response_id");

        // `store: false` may still continue a stored response.
        let (_, stored) =
            json_of(post(&base, json!({"model": "mock", "input": "hello"})).await).await;
        let (status, next) = json_of(
            post(
                &base,
                json!({"model": "mock", "input": "again", "store": false,
                       "previous_response_id": stored["id"]}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(next["previous_response_id"], stored["id"]);
        assert_eq!(get(&base, next["id"].as_str().unwrap()).await.0, 404);
    }

    #[tokio::test]
    async fn a_failed_call_stores_nothing() {
        let upstream = mock_upstream::MockUpstream::start().await.unwrap();
        upstream.enqueue(mock_upstream::Reply::error(500, "boom"));
        upstream.enqueue(mock_upstream::Reply::default_behaviour().cut_after(3));
        let (base, _stop) = gateway_in_front_of(&upstream).await;
        let r = post(&base, json!({"model": "up", "input": "hello"})).await;
        assert_eq!(r.status(), 502);
        let r = post(
            &base,
            json!({"model": "up", "input": "a long enough answer to cut", "stream": true}),
        )
        .await;
        let events = events(&r.bytes().await.unwrap());
        let failed = &events.last().unwrap()["response"];
        assert_eq!(failed["status"], "failed");
        let id = failed["id"].as_str().unwrap();
        assert_eq!(get(&base, id).await.0, 404);
        let (status, body) = json_of(
            post(
                &base,
                json!({"model": "up", "input": "go on", "previous_response_id": id}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 404, "{body}");
    }

    #[tokio::test]
    async fn conversation_is_echoed() {
        let (base, _stop) = gateway().await;
        for conversation in [json!("conv_abc"), json!({"id": "conv_abc"})] {
            let (status, body) = json_of(
                post(
                    &base,
                    json!({"model": "mock", "input": "hi", "conversation": conversation}),
                )
                .await,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["conversation"], json!({"id": "conv_abc"}));
        }
        let (status, body) = json_of(
            post(
                &base,
                json!({"model": "mock", "input": "hi", "conversation": "conv_abc",
                       "previous_response_id": "resp_1"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "conversation");
    }
}

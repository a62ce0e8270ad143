//! Retrieval in use, end to end: vector stores named by `x-proxima-vector-stores` (chat
//! completions and `/v1/messages`), by a conversation's metadata, and by the `file_search` tool
//! of `/v1/responses`, in front of OpenAI-, Anthropic- and Gemini-kind upstreams: what the
//! upstream is sent (the passages and their file names), what the client gets back (the
//! retrieved count, the `file_search_call` item, the citations), and the 404 for a store that
//! is not the caller's, before any upstream call.

use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::files::upload_ok;
use crate::harness::*;

const ALICE: &str = "sk-alice-retrieval-red-0123456789";
const BOB: &str = "sk-bob-retrieval-blue-0123456789";

const HANDBOOK: &str = "Employees get thirty vacation days per year, booked in the HR portal.";
const PARKING: &str = "Visitors park in the north lot behind building C.";
const QUESTION: &str = "How many vacation days do employees get per year?";

/// Provider `up` of `kind` at `mock`, model `chat` on it (with `model_extra` lines), the
/// built-in mock as the embedding model, and two keys in two teams. No safety margin, so that
/// a test can work out the room a prompt leaves exactly.
fn conf(kind: &str, mock: &MockUpstream, model_extra: &str) -> Conf {
    chat_on(kind, mock, model_extra).section(&format!(
        "[keys.alice]\nkey = \"{ALICE}\"\nteam = \"red\"\n\n\
             [keys.bob]\nkey = \"{BOB}\"\nteam = \"blue\"\n\n\
             [providers.m]\nkind = \"mock\"\n\n\
             [models.embed]\ntargets = [{{ provider = \"m\", model = \"mock-embed\" }}]\n\n\
             [context]\nembedding_model = \"embed\"\nsafety_margin = 0\n"
    ))
}

/// A JSON call as `key` that must succeed.
async fn ok(gw: &Gateway, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let answer = gw.admin(key, method, path, body.as_ref()).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.json()
}

/// A vector store of `key`'s with the handbook and the parking note, ingested; its id.
async fn office_store(gw: &Gateway, key: &str) -> String {
    let mut file_ids = Vec::new();
    for (name, text) in [("handbook.txt", HANDBOOK), ("parking.md", PARKING)] {
        let file = upload_ok(gw, key, name, "assistants", text.as_bytes()).await;
        file_ids.push(file["id"].clone());
    }
    let store = ok(
        gw,
        key,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"name": "office", "file_ids": file_ids})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/vector_stores/{id}");
    let done = eventually(Duration::from_secs(10), || async {
        let store = ok(gw, key, Method::GET, &path, None).await;
        store["file_counts"]["completed"] == 2
    })
    .await;
    assert!(
        done.is_some(),
        "the store's files were not ingested in time"
    );
    id
}

/// A mock upstream of `kind`, a gateway in front of it (with `model_extra` for model `chat`),
/// and Alice's office store.
async fn office(kind: &str, model_extra: &str) -> (MockUpstream, Gateway, String) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(kind, &mock, model_extra)).await;
    let store = office_store(&gw, ALICE).await;
    (mock, gw, store)
}

/// A POST of `body` to `path` as `key`, with `headers`.
async fn post(
    gw: &Gateway,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> Answer {
    let mut request = gw
        .request_as(key, Method::POST, path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    gw.send(request.body(body.to_string())).await
}

fn chat(text: &str) -> Value {
    json!({"model": "chat", "messages": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": text},
    ]})
}

/// Everything upstream request `n` carried, as text.
fn sent(mock: &MockUpstream, n: usize) -> String {
    mock.received()[n].json().to_string()
}

fn retrieved(answer: &Answer) -> u64 {
    answer
        .header("x-proxima-retrieved")
        .unwrap_or_else(|| panic!("no x-proxima-retrieved: {}", answer.text()))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_header_gives_every_backend_the_passages_with_their_file_names() {
    for kind in ["openai", "anthropic", "gemini"] {
        let (mock, gw, store) = office(kind, "").await;
        let header = [("x-proxima-vector-stores", store.as_str())];

        let answer = post(&gw, ALICE, "/v1/chat/completions", &header, chat(QUESTION)).await;
        assert_eq!(answer.status, 200, "{kind}: {}", answer.text());
        assert_eq!(retrieved(&answer), 2, "{kind}");
        let upstream = sent(&mock, 0);
        for expected in [
            "handbook.txt",
            HANDBOOK,
            "parking.md",
            PARKING,
            "[1] ",
            "[2] ",
        ] {
            assert!(
                upstream.contains(expected),
                "{kind}: `{expected}` not in {upstream}"
            );
        }
        // The passages follow the request's own instructions (and so come before the question:
        // in the upstream's system field, or, for OpenAI, as the next message).
        let instructions = upstream.find("Answer in one sentence.").unwrap();
        let passages = upstream
            .find("retrieved from the user's documents")
            .unwrap();
        assert!(instructions < passages, "{kind}: {upstream}");
        if kind == "openai" {
            let body = mock.received()[0].json();
            let roles: Vec<&str> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            assert_eq!(roles, ["system", "system", "user"]);
        }
        assert!(!upstream.contains("x-proxima"), "{kind}");

        // The same through the Anthropic surface, streamed.
        let answer = post(
            &gw,
            ALICE,
            "/v1/messages",
            &header,
            json!({"model": "chat", "max_tokens": 100, "stream": true,
                   "messages": [{"role": "user", "content": "Where do visitors park?"}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "{kind}: {}", answer.text());
        assert!(retrieved(&answer) >= 1, "{kind}");
        assert!(answer.text().contains("event: message_stop"), "{kind}");
        let upstream = sent(&mock, 1);
        assert!(
            upstream.contains(PARKING) && upstream.contains("parking.md"),
            "{kind}: {upstream}"
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn passages_that_do_not_fit_the_window_are_left_out_worst_first() {
    use proxima::canonical::{Message, Role};
    use proxima::context::{items, passages};

    // What the prompt takes: the request, the instruction line, each passage (the handbook
    // matches the question best).
    let prompt: u64 = [
        Message::text(Role::System, "Answer in one sentence."),
        Message::text(Role::User, QUESTION),
    ]
    .iter()
    .map(items::tokens)
    .sum();
    let header = passages::instruction_tokens();
    let first = passages::Passage::new(1, "handbook.txt", HANDBOOK).tokens;
    let second = passages::Passage::new(2, "parking.md", PARKING).tokens;
    let answer_tokens = 10;
    for (room, expected) in [
        (header + first - 1, 0),
        (header + first, 1),
        (header + first + second - 1, 1),
        (header + first + second, 2),
    ] {
        let window = format!("context_window = {}", prompt + answer_tokens + room);
        let (mock, gw, store) = office("openai", &window).await;
        let mut body = chat(QUESTION);
        body["max_tokens"] = json!(answer_tokens);
        let header = [("x-proxima-vector-stores", store.as_str())];
        let answer = post(&gw, ALICE, "/v1/chat/completions", &header, body).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(retrieved(&answer), expected, "room {room}");
        let upstream = sent(&mock, 0);
        assert_eq!(upstream.contains(HANDBOOK), expected >= 1, "{upstream}");
        assert_eq!(upstream.contains(PARKING), expected == 2, "{upstream}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_store_that_is_not_the_callers_is_not_found_before_any_upstream_call() {
    let (mock, gw, alices) = office("openai", "").await;
    let bobs = office_store(&gw, BOB).await;
    let both = format!("{alices}, {bobs}");
    for stores in [bobs.as_str(), "vs_does_not_exist", both.as_str()] {
        let header = [("x-proxima-vector-stores", stores)];
        let answer = post(&gw, ALICE, "/v1/chat/completions", &header, chat(QUESTION)).await;
        answer.assert_error(404, "not_found");
        let answer = post(
            &gw,
            ALICE,
            "/v1/responses",
            &[],
            json!({"model": "chat", "input": QUESTION,
                   "tools": [{"type": "file_search", "vector_store_ids": stores.split(", ").collect::<Vec<_>>()}]}),
        )
        .await;
        answer.assert_error(404, "not_found");
    }
    let answer = post(
        &gw,
        ALICE,
        "/v1/chat/completions",
        &[("x-proxima-vector-stores", " , ")],
        chat(QUESTION),
    )
    .await;
    answer.assert_error(400, "invalid_request");
    assert!(mock.received().is_empty(), "no upstream call");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_conversation_gets_passages_each_turn_and_never_stores_them() {
    let (mock, gw, store) = office("anthropic", "").await;

    // With the header, on a conversation: the passages join the stored context.
    let headers = [
        ("x-proxima-conversation", "handbook-chat"),
        ("x-proxima-vector-stores", store.as_str()),
    ];
    let answer = post(&gw, ALICE, "/v1/chat/completions", &headers, chat(QUESTION)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(retrieved(&answer), 2);
    assert!(answer.header("x-proxima-context-tokens").is_some());
    assert!(sent(&mock, 0).contains(HANDBOOK));

    // The next turn without the header gets none: they were not stored.
    let headers = [("x-proxima-conversation", "handbook-chat")];
    let next = json!({"model": "chat", "messages": [{"role": "user", "content": "Thanks!"}]});
    let answer = post(&gw, ALICE, "/v1/chat/completions", &headers, next).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.header("x-proxima-retrieved").is_none());
    let upstream = sent(&mock, 1);
    assert!(
        upstream.contains(QUESTION) && !upstream.contains(HANDBOOK),
        "{upstream}"
    );
    let items = ok(
        &gw,
        ALICE,
        Method::GET,
        "/v1/conversations/handbook-chat/items?order=asc",
        None,
    )
    .await;
    let stored = items.to_string();
    assert_eq!(items["data"].as_array().unwrap().len(), 4, "{stored}");
    assert!(
        !stored.contains(HANDBOOK) && !stored.contains("handbook.txt"),
        "{stored}"
    );

    // A conversation whose metadata names stores retrieves from them on every turn.
    let conversation = ok(
        &gw,
        ALICE,
        Method::POST,
        "/v1/conversations",
        Some(json!({"metadata": {"vector_store_ids": store}})),
    )
    .await;
    let id = conversation["id"].as_str().unwrap();
    for (n, question) in [QUESTION, "And where do visitors park?"].iter().enumerate() {
        let headers = [("x-proxima-conversation", id)];
        let body = json!({"model": "chat", "messages": [{"role": "user", "content": question}]});
        let answer = post(&gw, ALICE, "/v1/chat/completions", &headers, body).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(retrieved(&answer) >= 1);
        let upstream = sent(&mock, 2 + n);
        assert!(
            upstream.contains("handbook.txt") || upstream.contains("parking.md"),
            "{upstream}"
        );
    }
    gw.shutdown().await;
}

/// The data of every event of a Responses stream, in order.
fn response_events(answer: &Answer) -> Vec<Value> {
    let mut decoder = proxima::sse::SseDecoder::default();
    decoder.push(answer.body.clone());
    let mut events = Vec::new();
    while let Some(event) = decoder.next_event() {
        events.push(serde_json::from_slice(&event.data).unwrap());
    }
    events
}

/// A response with the file search of `store` (`include`: its results too), that must succeed.
async fn file_search(gw: &Gateway, store: &str, include: bool, stream: bool) -> Answer {
    // The mock answers with the request it received: the passages, `[1] handbook.txt:` and all,
    // so the answer cites them.
    let mut body = json!({
        "model": "chat",
        "instructions": "Answer from the documents.",
        "input": format!("{QUESTION} mock-echo-request"),
        "tools": [{"type": "file_search", "vector_store_ids": [store], "max_num_results": 4}],
        "stream": stream,
    });
    if include {
        body["include"] = json!(["file_search_call.results"]);
    }
    let answer = post(gw, ALICE, "/v1/responses", &[], body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
}

/// Alice's stored response `id`.
async fn stored(gw: &Gateway, id: &str) -> Value {
    ok(gw, ALICE, Method::GET, &format!("/v1/responses/{id}"), None).await
}

/// Checks a response that ran the file search: the call item first, then the message citing
/// the passage it was given first; returns the message's text.
fn check_searched(response: &Value, include: bool) -> String {
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{response}");
    let call = &output[0];
    assert_eq!(call["type"], "file_search_call");
    assert!(call["id"].as_str().unwrap().starts_with("fs_"));
    assert_eq!(call["status"], "completed");
    assert_eq!(
        call["queries"],
        json!([format!("{QUESTION} mock-echo-request")])
    );
    let message = &output[1];
    assert_eq!(message["type"], "message");
    let part = &message["content"][0];
    let text = part["text"].as_str().unwrap().to_owned();
    let annotations = part["annotations"].as_array().unwrap();
    assert!(!annotations.is_empty(), "{part}");
    let first = &annotations[0];
    assert_eq!(first["type"], "file_citation");
    let index = first["index"].as_u64().unwrap() as usize;
    let cited: String = text.chars().skip(index).take(3).collect();
    assert_eq!(cited, "[1]", "the citation points at its marker");
    if include {
        let results = call["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{call}");
        for result in results {
            assert!(result["file_id"].as_str().unwrap().starts_with("file"));
            assert!(result["score"].as_f64().unwrap() > 0.0);
            assert!(result["attributes"].is_object());
            let text = result["text"].as_str().unwrap();
            assert!(
                text.contains("vacation days") || text.contains("north lot"),
                "{text}"
            );
        }
        assert_eq!(first["file_id"], results[0]["file_id"]);
        assert_eq!(first["filename"], results[0]["filename"]);
    } else {
        assert_eq!(call["results"], Value::Null);
        assert!(["handbook.txt", "parking.md"].contains(&first["filename"].as_str().unwrap()));
    }
    text
}

#[tokio::test]
async fn file_search_runs_for_anthropic_and_gemini_backends() {
    for kind in ["anthropic", "gemini"] {
        let (mock, gw, store) = office(kind, "").await;

        for include in [false, true] {
            let answer = file_search(&gw, &store, include, false).await;
            assert_eq!(retrieved(&answer), 2, "{kind}");
            let response = answer.json();
            let text = check_searched(&response, include);
            // The upstream got the passages with their file names, and no file_search tool.
            let upstream = sent(&mock, mock.received().len() - 1);
            for expected in ["[1] ", "handbook.txt", HANDBOOK, "parking.md", PARKING] {
                assert!(
                    upstream.contains(expected),
                    "{kind}: `{expected}` not in {upstream}"
                );
            }
            assert!(!upstream.contains("file_search"), "{kind}: {upstream}");
            assert!(
                text.contains(HANDBOOK),
                "{kind}: the echo shows what was sent"
            );
            // Stored as answered.
            let id = response["id"].as_str().unwrap();
            assert_eq!(stored(&gw, id).await, response, "{kind}");
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn file_search_streams_its_call_and_the_citations() {
    let (_mock, gw, store) = office("gemini", "").await;
    let answer = file_search(&gw, &store, true, true).await;
    let events = response_events(&answer);
    // The search item opens the stream, and its events name it (the order of all the events
    // is the stream machine's unit tests').
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(events[2]["item"]["type"], "file_search_call");
    assert_eq!(kinds[6], "response.output_item.done");
    assert!(kinds[3..6]
        .iter()
        .all(|kind| kind.starts_with("response.file_search_call.")));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let call_id = &events[2]["item"]["id"];
    for event in &events[3..6] {
        assert_eq!(&event["item_id"], call_id);
        assert_eq!(event["output_index"], 0);
    }
    let annotations: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.annotation.added")
        .collect();
    assert!(!annotations.is_empty(), "{kinds:?}");
    for (n, event) in annotations.iter().enumerate() {
        assert_eq!(event["output_index"], 1);
        assert_eq!(event["annotation_index"], n);
    }
    let completed = &events.last().unwrap()["response"];
    check_searched(completed, true);
    let streamed: Vec<&Value> = annotations.iter().map(|e| &e["annotation"]).collect();
    let kept: Vec<&Value> = completed["output"][1]["content"][0]["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(streamed, kept);
    let id = completed["id"].as_str().unwrap();
    assert_eq!(&stored(&gw, id).await, completed);
    gw.shutdown().await;
}

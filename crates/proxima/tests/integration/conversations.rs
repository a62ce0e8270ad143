//! Server-side conversations: turns on every backend kind with `x-proxima-conversation`, the
//! Conversations API, tenant walls, failed and streamed turns, concurrency, the window, recall
//! and summaries.

use std::time::Duration;

use mock_upstream::{MockUpstream, Reply};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const ALICE: &str = "sk-alice-team-red-0123456789";
const BOB: &str = "sk-bob-team-blue-0123456789";

fn keys() -> &'static str {
    "[keys.alice]\nkey = \"sk-alice-team-red-0123456789\"\nteam = \"red\"\n\n\
     [keys.bob]\nkey = \"sk-bob-team-blue-0123456789\"\nteam = \"blue\"\n"
}

/// Provider `up` of `kind` at `mock`, model `chat` on it, with `model_extra` lines.
fn backend(kind: &str, mock: &MockUpstream, model_extra: &str) -> Conf {
    chat_on(kind, mock, model_extra).section(keys())
}

/// A chat turn on `conversation` as `key`.
async fn turn(gw: &Gateway, key: &str, conversation: &str, messages: Value) -> Answer {
    gw.send(
        gw.request_as(key, Method::POST, "/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-proxima-conversation", conversation)
            .body(json!({"model": "chat", "messages": messages}).to_string()),
    )
    .await
}

async fn say(gw: &Gateway, conversation: &str, text: &str) -> Answer {
    let answer = turn(
        gw,
        ALICE,
        conversation,
        json!([{"role": "user", "content": text}]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
}

async fn api(gw: &Gateway, key: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
    gw.admin(key, method, path, body.as_ref()).await
}

/// Everything the upstream was sent in request `n`, as text.
fn sent(mock: &MockUpstream, n: usize) -> String {
    mock.received()[n].json().to_string()
}

/// The items of a conversation, oldest first.
async fn items(gw: &Gateway, key: &str, conversation: &str) -> Vec<Value> {
    let page = api(
        gw,
        key,
        Method::GET,
        &format!("/v1/conversations/{conversation}/items?order=asc&limit=100"),
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text());
    page.json()["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_backend_kind_gets_the_stored_context_and_only_new_messages_are_sent() {
    for kind in ["openai", "anthropic", "gemini"] {
        let mock = MockUpstream::start().await.unwrap();
        let gw = Gateway::start(backend(kind, &mock, "")).await;
        let first = turn(
            &gw,
            ALICE,
            "trip-1",
            json!([
                {"role": "system", "content": "Answer like a travel agent."},
                {"role": "user", "content": "My name is Zorblax and I fly to Oslo."}
            ]),
        )
        .await;
        assert_eq!(first.status, 200, "{kind}: {}", first.text());
        let tokens: u64 = first
            .header("x-proxima-context-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert!(tokens > 5, "{kind}: {tokens}");

        let second = say(&gw, "trip-1", "Which city do I fly to?").await;
        assert_eq!(second.content(), "Which city do I fly to?", "{kind}");
        let upstream = sent(&mock, 1);
        for expected in [
            "Answer like a travel agent.",
            "My name is Zorblax and I fly to Oslo.",
            "Which city do I fly to?",
        ] {
            assert!(
                upstream.contains(expected),
                "{kind}: `{expected}` not in {upstream}"
            );
        }
        // The mock echoes: the first answer is the first question again, as the assistant.
        assert_eq!(
            upstream.matches("My name is Zorblax").count(),
            2,
            "{kind}: {upstream}"
        );
        assert!(!upstream.contains("x-proxima"), "{kind}");
        assert!(
            !upstream.contains("trip-1"),
            "{kind}: the id stays in the gateway"
        );

        let stored = items(&gw, ALICE, "trip-1").await;
        let roles: Vec<&str> = stored.iter().map(|i| i["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant"], "{kind}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn the_body_field_names_the_conversation_and_never_goes_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "")).await;
    for text in ["remember the number 4711", "what number?"] {
        let answer = gw
            .chat_as(
                ALICE,
                json!({"model": "chat", "conversation": "body-conv", "messages": [{"role": "user", "content": text}]}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let second = mock.received()[1].json();
    assert!(second.get("conversation").is_none());
    assert_eq!(second["messages"].as_array().unwrap().len(), 3);
    assert!(second.to_string().contains("4711"));
    gw.shutdown().await;
}

#[tokio::test]
async fn conversations_are_walled_by_team() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "")).await;
    say(&gw, "secret-plans", "The vault code is 1234.").await;
    let made = api(
        &gw,
        ALICE,
        Method::POST,
        "/v1/conversations",
        Some(json!({"metadata": {"topic": "x"}})),
    )
    .await;
    let id = made.json()["id"].as_str().unwrap().to_owned();

    for conversation in ["secret-plans", id.as_str()] {
        // Bob's turn on Alice's conversation: 404, and nothing of hers reaches the upstream.
        let before = mock.received().len();
        let stolen = turn(
            &gw,
            BOB,
            conversation,
            json!([{"role": "user", "content": "the code?"}]),
        )
        .await;
        stolen.assert_error(404, "not_found");
        assert_eq!(mock.received().len(), before);
        for (method, path, body) in [
            (
                Method::GET,
                format!("/v1/conversations/{conversation}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/conversations/{conversation}"),
                Some(json!({"metadata": {}})),
            ),
            (
                Method::DELETE,
                format!("/v1/conversations/{conversation}"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/conversations/{conversation}/items"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/conversations/{conversation}/items"),
                Some(json!({"items": [{"role": "user", "content": "hi"}]})),
            ),
        ] {
            let answer = api(&gw, BOB, method.clone(), &path, body).await;
            answer.assert_error(404, "not_found");
        }
    }
    // Alice still has both, untouched.
    assert_eq!(items(&gw, ALICE, "secret-plans").await.len(), 2);
    let own = api(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(own.json()["metadata"]["topic"], "x");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_conversations_api_creates_lists_pages_and_deletes() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "")).await;
    let made = api(
        &gw,
        ALICE,
        Method::POST,
        "/v1/conversations",
        Some(json!({
            "metadata": {"project": "apollo"},
            "items": [
                {"type": "message", "role": "user", "content": "Hello there"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
            ]
        })),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let conversation = made.json();
    assert_eq!(conversation["object"], "conversation");
    let id = conversation["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conv_"));

    let path = format!("/v1/conversations/{id}/items");
    let added = api(
        &gw,
        ALICE,
        Method::POST,
        &path,
        Some(json!({"items": [
            {"type": "function_call", "call_id": "call_9", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_9", "output": "rainy"},
        ]})),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json()["data"][0]["type"], "function_call");

    // Newest first by default, two at a time, as the SDK pages.
    let first = api(&gw, ALICE, Method::GET, &format!("{path}?limit=2"), None)
        .await
        .json();
    assert_eq!(first["has_more"], true);
    assert_eq!(first["data"][0]["type"], "function_call_output");
    assert_eq!(first["data"][0]["output"], "rainy");
    let after = first["last_id"].as_str().unwrap();
    let second = api(
        &gw,
        ALICE,
        Method::GET,
        &format!("{path}?limit=2&after={after}"),
        None,
    )
    .await
    .json();
    assert_eq!(second["has_more"], false);
    assert_eq!(second["data"][0]["role"], "assistant");
    assert_eq!(second["data"][0]["content"][0]["text"], "Hi!");
    assert_eq!(second["data"][1]["content"][0]["text"], "Hello there");

    // A turn continues it: the upstream sees the call and its output in order, the answer and
    // the call it made as one assistant turn.
    say(&gw, &id, "And tomorrow?").await;
    let upstream = mock.received()[0].json();
    let roles: Vec<&str> = upstream["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "user"]);
    assert_eq!(upstream["messages"][1]["content"], "Hi!");
    assert_eq!(upstream["messages"][1]["tool_calls"][0]["id"], "call_9");
    assert_eq!(upstream["messages"][2]["tool_call_id"], "call_9");

    let item_id = second["data"][1]["id"].as_str().unwrap();
    let one = api(&gw, ALICE, Method::GET, &format!("{path}/{item_id}"), None).await;
    assert_eq!(one.json()["content"][0]["text"], "Hello there");
    let gone = api(
        &gw,
        ALICE,
        Method::DELETE,
        &format!("{path}/{item_id}"),
        None,
    )
    .await;
    assert_eq!(gone.json()["id"], id);
    api(&gw, ALICE, Method::GET, &format!("{path}/{item_id}"), None)
        .await
        .assert_error(404, "not_found");

    let bad = api(
        &gw,
        ALICE,
        Method::POST,
        &path,
        Some(json!({"items": [{"type": "hologram", "content": "?"}]})),
    )
    .await;
    let error = bad.assert_error(400, "invalid_request");
    assert_eq!(error["param"], "items[0].type");

    let updated = api(
        &gw,
        ALICE,
        Method::POST,
        &format!("/v1/conversations/{id}"),
        Some(json!({"metadata": {"project": "gemini"}})),
    )
    .await;
    assert_eq!(updated.json()["metadata"]["project"], "gemini");
    let deleted = api(
        &gw,
        ALICE,
        Method::DELETE,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.json()["deleted"], true);
    api(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/conversations/{id}"),
        None,
    )
    .await
    .assert_error(404, "not_found");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failed_turn_stores_nothing_and_a_streamed_one_is_stored_whole() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "")).await;
    say(&gw, "flaky", "first question").await;
    mock.enqueue(Reply::error(500, "upstream exploded"));
    let failed = turn(
        &gw,
        ALICE,
        "flaky",
        json!([{"role": "user", "content": "lost question"}]),
    )
    .await;
    assert_eq!(failed.status, 502);
    mock.enqueue(Reply::default_behaviour().cut_after(2));
    let mut cut = gw
        .stream_with(
            gw.request_as(ALICE, Method::POST, "/v1/chat/completions")
                .header("x-proxima-conversation", "flaky"),
            json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "a question cut off midway through"}]}),
        )
        .await;
    cut.data().await;
    assert_eq!(items(&gw, ALICE, "flaky").await.len(), 2);

    let mut stream = gw
        .stream_with(
            gw.request_as(ALICE, Method::POST, "/v1/chat/completions")
                .header("x-proxima-conversation", "flaky"),
            json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "streamed words come back"}]}),
        )
        .await;
    assert!(stream.header("x-proxima-context-tokens").is_some());
    stream.data().await;
    let stored = items(&gw, ALICE, "flaky").await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3]["content"][0]["text"], "streamed words come back");
    // The retried question after the failure went up without the lost one.
    assert!(!sent(&mock, mock.received().len() - 1).contains("lost question"));
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_turns_on_one_conversation_never_interleave() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "")).await;
    let turns = (0..8).map(|n| {
        let gw = &gw;
        async move { say(gw, "busy", &format!("question number {n}")).await }
    });
    futures_util::future::join_all(turns).await;
    let stored = items(&gw, ALICE, "busy").await;
    assert_eq!(stored.len(), 16);
    for pair in stored.chunks(2) {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        assert_eq!(pair[0]["content"][0]["text"], pair[1]["content"][0]["text"]);
    }
    // Each turn saw every turn before it: the last prompt holds all 15 earlier items + 1.
    let longest = mock
        .received()
        .iter()
        .map(|r| r.json()["messages"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert_eq!(longest, 15);
    gw.shutdown().await;
}

/// Forty turns of filler after one that holds a fact, in a window far too small for them all.
async fn long_conversation(gw: &Gateway, conversation: &str) {
    say(
        gw,
        conversation,
        "Note this: the launch code is QX7781 for the falcon project.",
    )
    .await;
    for n in 0..40 {
        say(
            gw,
            conversation,
            &format!("Filler turn {n}: we talk about the weather, clouds, rain and sunshine at length today."),
        )
        .await;
    }
}

#[tokio::test]
async fn the_window_keeps_the_prompt_in_budget_and_recall_brings_back_the_old_fact() {
    for recall in [4, 0] {
        let mock = MockUpstream::start().await.unwrap();
        let conf = backend("openai", &mock, "context_window = 2000")
            .section(&format!("[context]\nrecall = {recall}\n"));
        let gw = Gateway::start(conf).await;
        long_conversation(&gw, "long").await;
        let asked = say(&gw, "long", "What was the launch code again?").await;
        let tokens: u64 = asked
            .header("x-proxima-context-tokens")
            .unwrap()
            .parse()
            .unwrap();
        // window 2000 − answer 500 − margin 512.
        assert!(tokens <= 988, "{tokens}");
        let upstream = mock.received().last().unwrap().json();
        let messages = upstream["messages"].as_array().unwrap();
        assert!(messages.len() < 60, "{}", messages.len());
        assert_eq!(
            messages.last().unwrap()["content"],
            "What was the launch code again?"
        );
        assert_eq!(messages[0]["role"], "user");
        let has_fact = upstream.to_string().contains("QX7781");
        assert_eq!(has_fact, recall > 0, "recall = {recall}");
        gw.shutdown().await;
    }
}

/// The prompt tokens a turn's answer says the gateway assembled.
fn context_tokens(answer: &Answer) -> u64 {
    answer
        .header("x-proxima-context-tokens")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_window_is_fitted_to_the_targets_own_token_count() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(backend("openai", &mock, "context_window = 2000")).await;
    long_conversation(&gw, "counted").await;
    // The mock reports fewer tokens than the gateway counts: the whole room (2000 − answer 500
    // − margin 512) is used.
    let full = context_tokens(&say(&gw, "counted", "And the weather tomorrow?").await);
    assert!((850..=988).contains(&full), "{full}");
    // Then the target reports three times what the gateway counted for a full window, four
    // answers in a row ...
    for day in 1..=4 {
        mock.enqueue(Reply::json(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                   "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "Sunny."}}],
                   "usage": {"prompt_tokens": 3 * full, "completion_tokens": 2,
                             "total_tokens": 3 * full + 2}}),
        ));
        say(&gw, "counted", &format!("And in {day} days?")).await;
    }
    // ... so the next prompts take about a third of the room, as that target counts them.
    let fitted = context_tokens(&say(&gw, "counted", "And next week?").await);
    assert!(fitted <= 988 * 10 / 28, "{fitted}");
    assert!(
        fitted >= 150,
        "the window still holds recent turns: {fitted}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_anthropic_target_not_heard_from_gets_room_for_its_finer_tokenizer() {
    let fitted = |kind: &'static str| async move {
        let mock = MockUpstream::start().await.unwrap();
        let gw = Gateway::start(backend(kind, &mock, "context_window = 2000")).await;
        // A long history stored through the Conversations API: no model has answered yet.
        let created = api(
            &gw,
            ALICE,
            Method::POST,
            "/v1/conversations",
            Some(json!({})),
        )
        .await;
        let id = created.json()["id"].as_str().unwrap().to_owned();
        for batch in 0..4 {
            let items: Vec<Value> = (0..20)
                .map(|n| {
                    let role = if n % 2 == 0 { "user" } else { "assistant" };
                    json!({"type": "message", "role": role, "content":
                        format!("Turn {batch}-{n}: we talk about the weather, clouds, rain and sunshine at length today.")})
                })
                .collect();
            let added = api(
                &gw,
                ALICE,
                Method::POST,
                &format!("/v1/conversations/{id}/items"),
                Some(json!({ "items": items })),
            )
            .await;
            assert_eq!(added.status, 200, "{}", added.text());
        }
        let tokens = context_tokens(&say(&gw, &id, "And the weather tomorrow?").await);
        gw.shutdown().await;
        tokens
    };
    let (openai, anthropic) = (fitted("openai").await, fitted("anthropic").await);
    // The room is 2000 − answer 500 − margin 512 as OpenAI counts; Claude's tokenizer is
    // assumed to cut a fifth finer until its usage says otherwise.
    assert!((850..=988).contains(&openai), "{openai}");
    assert!(anthropic <= 988 * 10 / 12, "{anthropic}");
    assert!(anthropic < openai - 100, "{anthropic} vs {openai}");
}

#[tokio::test]
async fn summaries_fold_old_turns_with_a_call_per_chunk_under_the_callers_key() {
    let mock = MockUpstream::start().await.unwrap();
    let summarizer = MockUpstream::start().await.unwrap();
    let conf = backend("openai", &mock, "context_window = 2000")
        .openai("summ", &summarizer)
        .model("summarizer", "summ", "gpt-summary")
        .section("[context]\nsummarizer_model = \"summarizer\"\ndefault_strategy = \"summarize\"\nrecall = 0\n");
    let gw = Gateway::start(conf).await;
    long_conversation(&gw, "folded").await;
    // Summaries are written after the turns; wait for the last one to land.
    let mut calls = 0;
    for _ in 0..50 {
        calls = summarizer.received().len();
        let stored = items(&gw, ALICE, "folded").await;
        if calls > 0
            && stored
                .iter()
                .filter(|i| i.get("proxima_summary_of").is_some())
                .count()
                == calls
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls >= 2, "{calls} summariser calls");
    // 41 turns push out about 60 items; a call folds 8 or more of them.
    assert!(
        calls <= 14,
        "one call per chunk of turns, not per turn: {calls}"
    );
    // The summariser read the old turns; its (echoed) summary is in the next prompt.
    assert!(sent(&summarizer, 0).contains("QX7781"));
    say(&gw, "folded", "And now?").await;
    let last = mock.received().last().unwrap().json();
    assert_eq!(last["messages"][0]["role"], "system");
    assert!(last["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("Summary of the conversation"));
    // Accounted under Alice's key, like her own calls.
    let store = gw.store().await;
    let filter = proxima::store::LogFilter {
        model: Some("summarizer".into()),
        limit: Some(100),
        ..proxima::store::LogFilter::default()
    };
    let mut summaries = Vec::new();
    for _ in 0..50 {
        calls = summarizer.received().len();
        summaries = store.logs(&filter).await.unwrap().data;
        if summaries.len() == calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(summaries.len(), calls);
    assert!(summaries
        .iter()
        .all(|r| r.key_name.as_deref() == Some("alice")));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_agent_sending_only_tool_results_gets_them_after_their_call() {
    let mock = MockUpstream::start().await.unwrap();
    // A window so small that no stored turn fits beside the new messages.
    let gw = Gateway::start(backend("openai", &mock, "context_window = 1100")).await;
    let tools = weather_tools();
    let called = gw
        .send(
            gw.request_as(ALICE, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header("x-proxima-conversation", "agent")
                .body(
                    json!({"model": "chat", "tools": tools, "messages": [
                        {"role": "user", "content": "mock-call: get_weather {\"city\": \"Oslo\"}"}
                    ]})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(called.status, 200, "{}", called.text());
    let calls = tool_calls(&called.json());
    assert_eq!(calls.len(), 1, "{}", called.text());
    let call_id = calls[0].0.clone();
    let results = gw
        .send(
            gw.request_as(ALICE, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header("x-proxima-conversation", "agent")
                .body(
                    json!({"model": "chat", "tools": tools, "max_tokens": 580, "messages": [
                        {"role": "tool", "tool_call_id": call_id, "content": "rainy"}
                    ]})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(results.status, 200, "{}", results.text());
    let sent = mock.received()[1].json();
    let messages = sent["messages"].as_array().unwrap();
    let call_at = messages
        .iter()
        .position(|m| m["tool_calls"][0]["id"] == call_id.as_str())
        .expect("the call goes with its result");
    assert_eq!(messages[call_at + 1]["tool_call_id"], call_id.as_str());
    // Stored once: user, the call, its result, the answer.
    assert_eq!(items(&gw, ALICE, "agent").await.len(), 4);
    gw.shutdown().await;
}

//! PII as clients and upstreams see it: every kind masked upstream (what the mock received)
//! and restored to the client on chat completions, `/v1/messages` and `/v1/responses`, whole
//! and streamed in fragments that cut through placeholders, on OpenAI, Anthropic and Gemini
//! backends; tool-call arguments; redaction; blocking with nothing sent; key and team
//! overrides; a cached masked answer restored with each caller's own values; the ledger.

use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-pii-41d7";

/// One value of every kind, and its placeholder when it is the first of its kind.
const VALUES: [(&str, &str); 7] = [
    ("ann.lee@example.com", "<EMAIL_1>"),
    ("+44 20 7946 0958", "<PHONE_1>"),
    ("4111 1111 1111 1111", "<CARD_1>"),
    ("DE89 3704 0044 0532 0130 00", "<IBAN_1>"),
    ("123-45-6789", "<SSN_1>"),
    ("192.168.10.24", "<IP_1>"),
    ("sk-proj-4fT9xQ2mN8vB1kL7pR3sZ6wY0", "<SECRET_1>"),
];

/// A prompt carrying every value (the email twice: one placeholder).
fn prompt() -> String {
    let v: Vec<&str> = VALUES.iter().map(|(value, _)| *value).collect();
    format!(
        "Mail {} (again: {}) or call {}. Card {}, IBAN {}, SSN {}, host {}, key {}.",
        v[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6]
    )
}

/// The same prompt as the upstream must see it.
fn masked_prompt() -> String {
    let mut text = prompt();
    for (value, placeholder) in VALUES {
        text = text.replace(value, placeholder);
    }
    text
}

/// The body of the last request upstream, as JSON text.
fn last_sent(mock: &MockUpstream) -> String {
    mock.received()
        .last()
        .expect("a request upstream")
        .json()
        .to_string()
}

/// Asserts the last request upstream carried placeholders and no raw value.
fn assert_masked_upstream(mock: &MockUpstream) {
    let sent = last_sent(mock);
    for (value, placeholder) in VALUES {
        assert!(!sent.contains(value), "{value} went upstream: {sent}");
        assert!(
            sent.contains(placeholder),
            "no {placeholder} upstream: {sent}"
        );
    }
}

fn gateway_conf(kind: &str, mock: &MockUpstream, pii: &str) -> Conf {
    chat_on(kind, mock, "").section(pii)
}

const MASK: &str = "[pii]\nmode = \"mask\"\n";

/// The data payloads of a streamed answer with named events (Anthropic's, the Responses API's).
fn sse_data(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The text of a `/v1/messages` stream.
fn anthropic_stream_text(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// The text deltas of a Responses stream, and its completed response.
fn responses_stream(data: &[String]) -> (String, Value) {
    let events: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    let deltas = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    let completed = events
        .iter()
        .find(|e| e["type"] == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed: {data:?}"))["response"]
        .clone();
    (deltas, completed)
}

fn response_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "message")
        .flat_map(|o| o["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect()
}

async fn every_surface_masks_and_restores(kind: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(gateway_conf(kind, &mock, MASK)).await;
    let text = prompt();

    // Chat completions, whole: the mock echoes what it got, the client gets its values back.
    let answer = gw.chat_ok(chat_body("chat", &text)).await;
    assert_eq!(answer.content(), text, "{kind}");
    assert_masked_upstream(&mock);
    assert_eq!(
        answer.header("x-proxima-pii"),
        Some("email,phone,card,iban,ssn,ip,secret")
    );
    let sent = last_sent(&mock);
    assert!(sent.contains(&masked_prompt()), "{sent}");

    // Streamed in fragments of 1 to 5 characters: placeholders cut across chunks.
    for size in 1..=5 {
        let text = format!("{text} mock-fragments: {size}");
        let data = gw.stream(stream_body("chat", &text)).await.data().await;
        let chunks = chunks_until_done(&data);
        assert_eq!(
            streamed_content(&chunks, 0),
            text,
            "{kind}, pieces of {size}"
        );
        assert_masked_upstream(&mock);
    }

    // /v1/messages, whole and streamed.
    let messages = |stream: bool| {
        json!({"model": "chat", "max_tokens": 1000, "stream": stream,
               "messages": [{"role": "user", "content": format!("{text} mock-fragments: 3")}]})
    };
    let answer = gw.post_json("/v1/messages", &messages(false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json()["content"][0]["text"],
        format!("{text} mock-fragments: 3")
    );
    assert_masked_upstream(&mock);
    let data = sse_data(&gw.post_json("/v1/messages", &messages(true)).await);
    assert_eq!(
        anthropic_stream_text(&data),
        format!("{text} mock-fragments: 3")
    );
    assert_masked_upstream(&mock);

    // An Anthropic upstream counts tokens of the masked prompt too.
    if kind == "anthropic" {
        let before = mock.request_count();
        let counted = gw
            .post_json(
                "/v1/messages/count_tokens",
                &json!({"model": "chat", "messages": [{"role": "user", "content": text}]}),
            )
            .await;
        assert_eq!(counted.status, 200, "{}", counted.text());
        assert_eq!(mock.request_count(), before + 1);
        assert_masked_upstream(&mock);
    }

    // /v1/responses, whole and streamed; the stored response is what the client saw.
    let answer = gw
        .post_json(
            "/v1/responses",
            &json!({"model": "chat", "instructions": format!("The user is {}.", VALUES[0].0),
                    "input": text}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(response_text(&answer.json()), text);
    assert_masked_upstream(&mock);
    let sent = last_sent(&mock);
    assert!(!sent.contains(VALUES[0].0), "instructions unmasked: {sent}");
    let data = sse_data(
        &gw.post_json(
            "/v1/responses",
            &json!({"model": "chat", "stream": true, "input": format!("{text} mock-fragments: 2")}),
        )
        .await,
    );
    let (deltas, completed) = responses_stream(&data);
    assert_eq!(deltas, format!("{text} mock-fragments: 2"));
    assert_eq!(response_text(&completed), deltas);
    let stored = gw
        .get(&format!(
            "/v1/responses/{}",
            completed["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(response_text(&stored.json()), deltas);
}

#[tokio::test]
async fn every_kind_is_masked_upstream_and_restored_on_an_openai_backend() {
    every_surface_masks_and_restores("openai").await;
}

#[tokio::test]
async fn every_kind_is_masked_upstream_and_restored_on_an_anthropic_backend() {
    every_surface_masks_and_restores("anthropic").await;
}

#[tokio::test]
async fn every_kind_is_masked_upstream_and_restored_on_a_gemini_backend() {
    every_surface_masks_and_restores("gemini").await;
}

/// The tool calls of an answer to a prompt that makes the mock call a tool with values in its
/// arguments, whole and streamed in small pieces.
async fn tool_arguments_are_restored(kind: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(gateway_conf(kind, &mock, MASK)).await;
    let email = VALUES[0].0;
    let card = VALUES[2].0;
    let prompt = format!(
        r#"mock-call: get_weather {{"city": "{email}", "card": "{card}"}} mock-fragments: 2"#
    );
    let body = |stream: bool| {
        json!({"model": "chat", "stream": stream, "tools": weather_tools(),
               "messages": [user(&prompt)]})
    };
    let answer = gw.chat_ok(body(false)).await;
    assert_masked_call_upstream(&mock, email);
    let calls = tool_calls(&answer.json());
    let data = gw.stream(body(true)).await.data().await;
    let streamed = streamed_tool_calls(&chunks_until_done(&data));
    for calls in [calls, streamed] {
        assert_eq!(calls.len(), 1, "{kind}: {calls:?}");
        let arguments: Value = serde_json::from_str(&calls[0].2).unwrap();
        let said = arguments.to_string();
        // Gemini's mock calls with the prompt as `text`; the others with the input asked for.
        assert!(
            said.contains(email) && said.contains(card),
            "{kind}: {said}"
        );
        assert!(!said.contains('<'), "{kind}: a placeholder left: {said}");
    }
    // The client's next turn sends the call back with its values: masked again, alike.
    let answer = gw
        .chat_ok(json!({"model": "chat", "tools": weather_tools(), "messages": [
            user(&prompt),
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": json!({"city": email}).to_string()}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": format!("sunny for {email}")},
        ]}))
        .await;
    assert_masked_call_upstream(&mock, email);
    assert!(answer.content().contains(email), "{}", answer.text());
}

fn assert_masked_call_upstream(mock: &MockUpstream, email: &str) {
    let sent = last_sent(mock);
    assert!(!sent.contains(email), "{sent}");
    assert!(sent.contains("<EMAIL_1>"), "{sent}");
}

#[tokio::test]
async fn tool_call_arguments_are_restored_on_every_backend() {
    for kind in ["openai", "anthropic", "gemini"] {
        tool_arguments_are_restored(kind).await;
    }
}

#[tokio::test]
async fn redaction_removes_values_for_good() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        gateway_conf("openai", &mock, "[pii]\nmode = \"redact\"\n")
            .section("[providers.builtin]\nkind = \"mock\"\n")
            .model("embed", "builtin", "mock"),
    )
    .await;
    let answer = gw.chat_ok(chat_body("chat", &prompt())).await;
    let expected = "Mail [EMAIL] (again: [EMAIL]) or call [PHONE]. Card [CARD], IBAN [IBAN], \
                    SSN [SSN], host [IP], key [SECRET].";
    // Nothing is restored: the client sees what the upstream saw.
    assert_eq!(answer.content(), expected);
    let sent = last_sent(&mock);
    assert!(sent.contains(expected), "{sent}");
    assert_eq!(
        answer.header("x-proxima-pii"),
        Some("email,phone,card,iban,ssn,ip,secret")
    );
    // Embeddings inputs too: the mock upstream embeds what it got, and gets no value.
    let embedded = gw
        .post_json(
            "/v1/embeddings",
            &json!({"model": "chat", "input": [prompt(), "plain words"]}),
        )
        .await;
    assert_eq!(embedded.status, 200, "{}", embedded.text());
    let sent = mock.received().last().unwrap().json();
    assert_eq!(sent["input"][0], expected);
    assert_eq!(sent["input"][1], "plain words");
}

#[tokio::test]
async fn block_refuses_naming_the_kinds_and_sends_nothing() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(gateway_conf(
        "openai",
        &mock,
        "[pii]\nmode = \"block\"\nentities = [\"email\", \"card\"]\n",
    ))
    .await;
    let text = format!("I am {} and pay with {}", VALUES[0].0, VALUES[2].0);
    let error = gw
        .chat(chat_body("chat", &text))
        .await
        .assert_error(400, "pii_blocked");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("email") && message.contains("card"),
        "{message}"
    );
    assert!(
        !message.contains(VALUES[0].0) && !message.contains("4111"),
        "{message}"
    );
    // The Anthropic surface says it in its own shape; a stream is refused before it starts.
    let anthropic = gw
        .post_json(
            "/v1/messages",
            &json!({"model": "chat", "max_tokens": 10, "stream": true,
                    "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(anthropic.status, 400, "{}", anthropic.text());
    assert_eq!(anthropic.json()["type"], "error");
    assert_eq!(anthropic.json()["error"]["type"], "invalid_request_error");
    gw.post_json(
        "/v1/embeddings",
        &json!({"model": "chat", "input": VALUES[0].0}),
    )
    .await
    .assert_error(400, "pii_blocked");
    assert_eq!(mock.request_count(), 0, "nothing may go upstream");
    // Kinds not listed pass, and so does text without any.
    let other = format!("call {} from {}", VALUES[1].0, VALUES[5].0);
    let answer = gw.chat_ok(chat_body("chat", &other)).await;
    assert_eq!(answer.content(), other);
    gw.chat_ok(chat_body("chat", "version 1.2.3 shipped on 2024-05-06"))
        .await;
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn keys_and_teams_override_the_policy() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        gateway_conf("openai", &mock, MASK)
            .server(&format!("master_key = \"{MASTER}\""))
            .section("[keys.strict]\nkey = \"sk-pii-strict\"\npii = { mode = \"redact\", entities = [\"email\"] }\n"),
    )
    .await;
    let gw = &gw;
    let admin = |path: &'static str, body: Value| async move {
        let answer = gw.admin(MASTER, Method::POST, path, Some(&body)).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        answer.json()
    };
    admin("/admin/teams", json!({"name": "t", "pii": {"mode": "off"}})).await;
    let member = admin("/admin/keys", json!({"name": "member", "team": "t"})).await;
    let blocked = admin(
        "/admin/keys",
        json!({"name": "blocked", "team": "t", "pii": {"mode": "block"}}),
    )
    .await;
    let text = format!("I am {}, card {}", VALUES[0].0, VALUES[2].0);
    let body = chat_body("chat", &text);

    // The team turned it off: raw values go upstream.
    let answer = gw
        .chat_as(member["key"].as_str().unwrap(), body.clone())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(last_sent(&mock).contains(VALUES[0].0));
    // A key of that team blocks.
    gw.chat_as(blocked["key"].as_str().unwrap(), body.clone())
        .await
        .assert_error(400, "pii_blocked");
    // A static key redacts emails only.
    let answer = gw.chat_as("sk-pii-strict", body.clone()).await;
    assert_eq!(
        answer.content(),
        format!("I am [EMAIL], card {}", VALUES[2].0)
    );
    // Everyone else: `[pii]`, masked.
    let answer = gw.chat_as(MASTER, body).await;
    assert_eq!(answer.content(), text);
    assert!(!last_sent(&mock).contains(VALUES[0].0));
}

#[tokio::test]
async fn a_cached_masked_answer_is_restored_with_each_callers_values() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        gateway_conf("openai", &mock, MASK)
            .section("[cache]\nscope = \"global\"\nexact = { ttl = \"1h\" }\n")
            .section("[keys.a]\nkey = \"sk-pii-a\"\n\n[keys.b]\nkey = \"sk-pii-b\"\n"),
    )
    .await;
    let ask = |email: &str| chat_body("chat", &format!("Please remember my address {email}."));
    let first = gw.chat_as("sk-pii-a", ask("ann@example.com")).await;
    assert_eq!(first.header("x-proxima-cache"), Some("miss"));
    assert_eq!(
        first.content(),
        "Please remember my address ann@example.com."
    );
    // Another caller, another address, the same masked prompt: a hit, with its own value.
    let second = gw.chat_as("sk-pii-b", ask("bob@example.org")).await;
    assert_eq!(second.header("x-proxima-cache"), Some("hit"));
    assert_eq!(
        second.content(),
        "Please remember my address bob@example.org."
    );
    // Streamed, the replayed hit too.
    let data = gw
        .stream_with(
            gw.request_as("sk-pii-a", Method::POST, "/v1/chat/completions"),
            json!({"model": "chat", "stream": true,
                   "messages": [user("Please remember my address carol@example.net.")]}),
        )
        .await
        .data()
        .await;
    assert_eq!(
        streamed_content(&chunks_until_done(&data), 0),
        "Please remember my address carol@example.net."
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn a_conversation_stores_what_the_client_saw_and_sends_it_masked() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(gateway_conf("openai", &mock, MASK)).await;
    let turn = |text: &str| {
        gw.send(
            gw.client()
                .post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .header("x-proxima-conversation", "conv-pii")
                .body(chat_body("chat", text).to_string()),
        )
    };
    let first = turn(&format!("I am {}", VALUES[0].0)).await;
    assert_eq!(first.content(), format!("I am {}", VALUES[0].0));
    let second = turn("and my card is 4111 1111 1111 1111").await;
    assert_eq!(second.status, 200, "{}", second.text());
    // The stored history went upstream masked, numbered as before.
    let sent = last_sent(&mock);
    assert!(
        sent.contains("I am <EMAIL_1>") && sent.contains("<CARD_1>"),
        "{sent}"
    );
    assert!(!sent.contains(VALUES[0].0), "{sent}");
    // The store kept the turns as the client saw them.
    let items = gw.get("/v1/conversations/conv-pii/items").await;
    assert!(items.text().contains(VALUES[0].0), "{}", items.text());
    assert!(!items.text().contains("<EMAIL_1>"), "{}", items.text());
}

#[tokio::test]
async fn the_ledger_holds_no_raw_value() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        gateway_conf("openai", &mock, MASK).server(&format!("master_key = \"{MASTER}\"")),
    )
    .await;
    let body = json!({"model": "chat", "user": VALUES[0].0, "messages": [user("hi")]});
    let answer = gw
        .send(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header(
                    "x-proxima-metadata",
                    json!({"app": "crm", "customer": VALUES[0].0}).to_string(),
                )
                .body(body.to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // `user` goes upstream masked too.
    assert_eq!(mock.received()[0].json()["user"], "<EMAIL_1>");
    let id = answer.header("x-request-id").unwrap().to_owned();
    assert_ledger_rows(&gw.store().await, 1, Duration::from_secs(3)).await;
    let logs = gw
        .admin(
            MASTER,
            Method::GET,
            &format!("/admin/logs?request_id={id}"),
            None,
        )
        .await;
    let text = logs.text();
    assert!(!text.contains(VALUES[0].0), "{text}");
    assert!(text.contains("[EMAIL]") && text.contains("crm"), "{text}");
}

//! The response cache as clients see it: `x-proxima-cache` on every answer of a cached model,
//! exact hits with no upstream call (counted by the mock upstream) for what must not matter and
//! misses for what must, hits replayed as streams in each API, semantic hits for a reworded
//! last question and misses after another history, instructions or tools, scope between
//! teams and keys, `cache-control`, TTL expiry, what is never stored, the ledger rows and
//! limits of hits, and two gateways sharing entries through Redis.

use std::time::Duration;

use mock_upstream::{MockUpstream, Reply};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-cache-5e81c2";

/// Behind the gateway: model `chat` (the mock upstream, priced so that hits save something),
/// `plain` (the same upstream, `cache = false`), `embed` (the built-in mock's word embeddings),
/// and keys in teams alpha (two), beta, and one without a team.
fn conf(mock: &MockUpstream, cache: &str) -> Conf {
    Conf::new()
        .server(&format!("master_key = \"{MASTER}\""))
        .openai("up", mock)
        .model_with(
            "chat",
            "up",
            "gpt-upstream",
            "retries = 0\nprice = { input_per_mtok = 1000.0, output_per_mtok = 1000.0 }",
        )
        .model_with("plain", "up", "gpt-upstream", "cache = false")
        .section("[providers.builtin]\nkind = \"mock\"\n")
        .model("embed", "builtin", "mock")
        .section(
            "[keys.alpha1]\nkey = \"sk-cache-alpha-1\"\nteam = \"alpha\"\n\n\
             [keys.alpha2]\nkey = \"sk-cache-alpha-2\"\nteam = \"alpha\"\n\n\
             [keys.beta]\nkey = \"sk-cache-beta\"\nteam = \"beta\"\n\n\
             [keys.solo]\nkey = \"sk-cache-solo\"\n",
        )
        .section(cache)
}

const EXACT: &str = "[cache]\nexact = { ttl = \"1h\" }\n";
const SEMANTIC: &str =
    "[cache]\nsemantic = { ttl = \"1h\", threshold = 0.9, embedding_model = \"embed\" }\n";

fn verdict(answer: &Answer) -> &str {
    answer.header("x-proxima-cache").unwrap_or("(none)")
}

/// Sends `body` with the master key and returns the answer with how many upstream calls it
/// made.
async fn call(gw: &Gateway, mock: &MockUpstream, body: &Value) -> (Answer, usize) {
    call_as(gw, mock, MASTER, body).await
}

async fn call_as(gw: &Gateway, mock: &MockUpstream, key: &str, body: &Value) -> (Answer, usize) {
    let before = mock.request_count();
    let answer = gw.chat_as(key, body.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    (answer, mock.request_count() - before)
}

fn question(text: &str) -> Value {
    json!({"model": "chat", "messages": [
        {"role": "system", "content": "Answer briefly."},
        user(text),
    ]})
}

#[tokio::test]
async fn an_exact_repeat_is_answered_without_the_upstream_and_what_changes_the_answer_misses() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    let base = question("What is the tallest mountain on Earth?");

    let (first, calls) = call(&gw, &mock, &base).await;
    assert_eq!((verdict(&first), calls), ("miss", 1));
    let (again, calls) = call(&gw, &mock, &base).await;
    assert_eq!((verdict(&again), calls), ("hit", 0));
    assert_eq!(again.content(), first.content());
    assert_eq!(again.header("x-proxima-attempts"), Some("0"));

    // What does not change the answer: the end user, metadata, the stream flag.
    let mut same = base.clone();
    same["user"] = json!("end-user-7");
    same["metadata"] = json!({"app": "search"});
    let (answer, calls) = call(&gw, &mock, &same).await;
    assert_eq!((verdict(&answer), calls), ("hit", 0));
    let mut streamed = base.clone();
    streamed["stream"] = json!(true);
    let sse = gw
        .stream_with(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions"),
            streamed,
        )
        .await;
    assert_eq!(sse.header("x-proxima-cache"), Some("hit"));

    // What does: every one of these is a miss that reaches the upstream.
    let changes: [(&str, Value); 7] = [
        ("temperature", json!(0.2)),
        ("max_tokens", json!(30)),
        ("seed", json!(7)),
        ("n", json!(2)),
        ("response_format", json!({"type": "json_object"})),
        ("tools", weather_tools()),
        ("logprobs", json!(true)),
    ];
    for (field, value) in changes {
        let mut other = base.clone();
        other[field] = value;
        let (answer, calls) = call(&gw, &mock, &other).await;
        assert_eq!((verdict(&answer), calls), ("miss", 1), "{field}");
    }
    let mut other_system = base.clone();
    other_system["messages"][0]["content"] = json!("Answer at length.");
    let (answer, calls) = call(&gw, &mock, &other_system).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));
    let (answer, calls) = call(
        &gw,
        &mock,
        &question("What is the tallest mountain on Mars?"),
    )
    .await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));
    let mut other_model = base.clone();
    other_model["model"] = json!("plain");
    let (answer, calls) = call(&gw, &mock, &other_model).await;
    // A model with `cache = false` has no cache at all.
    assert_eq!((verdict(&answer), calls), ("(none)", 1));
    let (answer, calls) = call(&gw, &mock, &other_model).await;
    assert_eq!((verdict(&answer), calls), ("(none)", 1));

    // The same request through the Anthropic API is the same request.
    let mut bounded = base.clone();
    bounded["max_tokens"] = json!(64);
    let (_, calls) = call(&gw, &mock, &bounded).await;
    assert_eq!(calls, 1);
    let before = mock.request_count();
    let messages = gw
        .send(
            gw.request_as(MASTER, Method::POST, "/v1/messages")
                .header("content-type", "application/json")
                .body(
                    json!({"model": "chat", "max_tokens": 64, "system": "Answer briefly.",
                        "messages": [user("What is the tallest mountain on Earth?")]})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(messages.status, 200, "{}", messages.text());
    assert_eq!(verdict(&messages), "hit");
    assert_eq!(mock.request_count(), before);
    assert_eq!(
        messages.json()["content"][0]["text"],
        "What is the tallest mountain on Earth?"
    );
}

#[tokio::test]
async fn a_hit_is_replayed_as_a_valid_stream_in_every_api() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    let text = "Name three primary colours for me";
    let mut body = question(text);
    body["max_tokens"] = json!(50);
    // Stored from a stream, served whole, and the other way round.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let request = || gw.request_as(MASTER, Method::POST, "/v1/chat/completions");
    let mut first = gw.stream_with(request(), streamed.clone()).await;
    assert_eq!(first.header("x-proxima-cache"), Some("miss"));
    let first = chunks_until_done(&first.data().await);
    assert_eq!(streamed_content(&first, 0), text);
    assert_eq!(mock.request_count(), 1);

    let (whole, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&whole), calls), ("hit", 0));
    assert_eq!(whole.content(), text);
    assert_eq!(whole.json()["choices"][0]["finish_reason"], "stop");

    let mut replay = gw.stream_with(request(), streamed).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("x-proxima-cache"), Some("hit"));
    assert_eq!(replay.header("content-type"), Some("text/event-stream"));
    let chunks = chunks_until_done(&replay.data().await);
    assert_eq!(streamed_content(&chunks, 0), text);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    // The usage the client asked for, as the stored answer reported it.
    assert!(chunks.last().unwrap()["usage"]["completion_tokens"].as_u64() > Some(0));

    // Anthropic's event sequence, and the Responses API's.
    let anthropic = gw
        .send(
            gw.request_as(MASTER, Method::POST, "/v1/messages")
                .header("content-type", "application/json")
                .body(
                    json!({"model": "chat", "max_tokens": 50, "stream": true,
                        "system": "Answer briefly.", "messages": [user(text)]})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(verdict(&anthropic), "hit");
    let events = anthropic.text();
    for event in [
        "event: message_start",
        "event: content_block_delta",
        "event: message_stop",
    ] {
        assert!(events.contains(event), "{event} missing: {events}");
    }
    assert!(events.contains(text), "{events}");
    let responses = gw
        .send(
            gw.request_as(MASTER, Method::POST, "/v1/responses")
                .header("content-type", "application/json")
                .body(
                    json!({"model": "chat", "max_output_tokens": 50, "stream": true,
                        "instructions": "Answer briefly.", "input": text, "store": false})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(verdict(&responses), "hit");
    let events = responses.text();
    assert!(
        events.contains("response.output_text.delta") && events.contains("response.completed"),
        "{events}"
    );
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn semantic_hits_answer_a_reworded_question_but_never_another_conversation() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, SEMANTIC)).await;
    let asked = "Which river flows through the city of Paris in France?";
    let (first, calls) = call(&gw, &mock, &question(asked)).await;
    assert_eq!((verdict(&first), calls), ("miss", 1));

    // The same words in another order and case: the stored answer.
    let reworded = question("Which river flows through Paris, the city in France?");
    let (answer, calls) = call(&gw, &mock, &reworded).await;
    assert_eq!((verdict(&answer), calls), ("semantic-hit", 0));
    assert_eq!(answer.content(), asked);
    // Something else entirely is asked of the model.
    let (answer, calls) = call(
        &gw,
        &mock,
        &question("How long should pasta boil before it is ready?"),
    )
    .await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));

    // The very same question after another history, with other instructions, or with tools
    // is another conversation: never answered from this one.
    let after_history = json!({"model": "chat", "messages": [
        {"role": "system", "content": "Answer briefly."},
        user("We are talking about Paris, Texas."),
        {"role": "assistant", "content": "Understood."},
        user(asked),
    ]});
    let mut other_system = question(asked);
    other_system["messages"][0]["content"] = json!("Answer in French.");
    let mut with_tools = question(asked);
    with_tools["tools"] = weather_tools();
    for (what, body) in [
        ("history", after_history),
        ("system prompt", other_system),
        ("tools", with_tools),
    ] {
        let (answer, calls) = call(&gw, &mock, &body).await;
        assert_eq!((verdict(&answer), calls), ("miss", 1), "{what}");
    }
}

#[tokio::test]
async fn answers_are_shared_within_the_scope_only() {
    let mock = MockUpstream::start().await.unwrap();
    let body = question("What is the boiling point of water at sea level?");

    // team (the default): alpha's keys share, beta and the team-less key do not.
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    for (key, expected) in [
        ("sk-cache-alpha-1", ("miss", 1)),
        ("sk-cache-alpha-2", ("hit", 0)),
        ("sk-cache-beta", ("miss", 1)),
        ("sk-cache-solo", ("miss", 1)),
        ("sk-cache-solo", ("hit", 0)),
    ] {
        let (answer, calls) = call_as(&gw, &mock, key, &body).await;
        assert_eq!((verdict(&answer), calls), expected, "{key}");
    }
    drop(gw);

    // key: not even a teammate.
    let gw = Gateway::start(conf(&mock, "[cache]\nscope = \"key\"\n")).await;
    for (key, expected) in [
        ("sk-cache-alpha-1", ("miss", 1)),
        ("sk-cache-alpha-2", ("miss", 1)),
        ("sk-cache-alpha-1", ("hit", 0)),
    ] {
        let (answer, calls) = call_as(&gw, &mock, key, &body).await;
        assert_eq!((verdict(&answer), calls), expected, "{key}");
    }
    drop(gw);

    // global: everyone.
    let gw = Gateway::start(conf(&mock, "[cache]\nscope = \"global\"\n")).await;
    for (key, expected) in [
        ("sk-cache-alpha-1", ("miss", 1)),
        ("sk-cache-beta", ("hit", 0)),
        ("sk-cache-solo", ("hit", 0)),
    ] {
        let (answer, calls) = call_as(&gw, &mock, key, &body).await;
        assert_eq!((verdict(&answer), calls), expected, "{key}");
    }
}

#[tokio::test]
async fn cache_control_bypasses_the_lookup_or_the_store() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    let with = |body: &Value, control: &'static str| {
        gw.request_as(MASTER, Method::POST, "/v1/chat/completions")
            .header("content-type", "application/json")
            .header("cache-control", control)
            .body(body.to_string())
    };

    let kept_out = question("Spell the word necessary.");
    let answer = gw.send(with(&kept_out, "no-store")).await;
    assert_eq!(verdict(&answer), "miss");
    let (answer, calls) = call(&gw, &mock, &kept_out).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));

    let body = question("Spell the word rhythm.");
    call(&gw, &mock, &body).await;
    let before = mock.request_count();
    let answer = gw.send(with(&body, "no-cache")).await;
    assert_eq!(verdict(&answer), "bypass");
    assert_eq!(mock.request_count(), before + 1);
    let (answer, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&answer), calls), ("hit", 0));
}

#[tokio::test]
async fn errors_and_cut_streams_are_never_stored() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    let body = question("Count from one to five.");
    mock.enqueue(Reply::error(500, "upstream broke"));
    let failed = gw.chat_as(MASTER, body.clone()).await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_eq!(verdict(&failed), "miss");
    let (answer, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));

    let streamed =
        json!({"model": "chat", "stream": true, "messages": [user("Count from six to ten.")]});
    mock.enqueue(Reply::default_behaviour().cut_after(2));
    let mut cut = gw
        .stream_with(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions"),
            streamed.clone(),
        )
        .await;
    let data = cut.data().await;
    assert_ne!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let before = mock.request_count();
    let mut whole = gw
        .stream_with(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions"),
            streamed,
        )
        .await;
    assert_eq!(whole.header("x-proxima-cache"), Some("miss"));
    chunks_until_done(&whole.data().await);
    assert_eq!(mock.request_count(), before + 1);
}

/// An answer passed on as the upstream wrote it is stored as written, having been read only in
/// outline: a refusal in it is found when a hit would serve it, and the call goes upstream
/// instead.
#[tokio::test]
async fn a_refused_answer_is_never_served_again() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT)).await;
    let refused = json!({
        "id": "chatcmpl-refused", "object": "chat.completion", "created": 1,
        "model": "gpt-upstream",
        "choices": [{"index": 0, "finish_reason": "stop", "message":
            {"role": "assistant", "content": null, "refusal": "I cannot help with that."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    });
    let body = question("How do I pick a lock?");
    for _ in 0..2 {
        mock.enqueue(Reply::json(200, refused.clone()));
        let (answer, calls) = call(&gw, &mock, &body).await;
        assert_eq!((verdict(&answer), calls), ("miss", 1), "{}", answer.text());
        assert_eq!(
            answer.json()["choices"][0]["message"]["refusal"],
            "I cannot help with that."
        );
    }
    // A whole answer is kept, and served.
    let body = question("Name a primary colour.");
    call(&gw, &mock, &body).await;
    let (hit, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&hit), calls), ("hit", 0));
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, "[cache]\nexact = { ttl = \"400ms\" }\n")).await;
    let body = question("What day comes after Monday?");
    call(&gw, &mock, &body).await;
    let (answer, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&answer), calls), ("hit", 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (answer, calls) = call(&gw, &mock, &body).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));
}

#[tokio::test]
async fn a_hit_has_its_ledger_row_costs_nothing_and_counts_one_request_toward_rpm() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock, EXACT).section(
        "[keys.limited]\nkey = \"sk-cache-limited\"\nrpm = 3\n\n\
         [keys.thrifty]\nkey = \"sk-cache-thrifty\"\nbudget = { usd = 0.12, period = \"1d\" }\n",
    ))
    .await;
    let mut body = question("Name a prime number.");
    body["max_tokens"] = json!(100);

    // The budget: a miss reserves about $0.11 of $0.12 and spends a little; the next new
    // question cannot reserve again, but a hit needs no budget.
    let (miss, _) = call_as(&gw, &mock, "sk-cache-thrifty", &body).await;
    assert_eq!(verdict(&miss), "miss");
    let (hit, calls) = call_as(&gw, &mock, "sk-cache-thrifty", &body).await;
    assert_eq!((verdict(&hit), calls), ("hit", 0));
    let mut new = body.clone();
    new["messages"][1]["content"] = json!("Name an even number.");
    let refused = gw.chat_as("sk-cache-thrifty", new).await;
    refused.assert_error(429, "budget_exceeded");

    // The rows: the miss with its cost, the hit with none and what it saved.
    let store = gw.store().await;
    let rows = eventually(Duration::from_secs(5), || {
        let store = store.clone();
        async move {
            store
                .logs(&proxima::store::LogFilter {
                    key: Some("thrifty".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .data
                .len()
                >= 3
        }
    })
    .await;
    assert!(rows.is_some(), "the rows never reached the ledger");
    let logs = gw
        .admin(MASTER, Method::GET, "/admin/logs?key=thrifty", None)
        .await
        .json();
    let rows = logs["data"].as_array().unwrap();
    let row = |cache: &str| {
        rows.iter()
            .find(|r| r["cache"] == cache && r["status"] == 200)
            .unwrap_or_else(|| panic!("no {cache} row in {logs}"))
    };
    let (miss_row, hit_row) = (row("miss"), row("hit"));
    let cost = miss_row["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "{miss_row}");
    assert_eq!(hit_row["cost_usd"], 0.0);
    assert_eq!(hit_row["saved_usd"].as_f64(), Some(cost));
    assert_eq!(hit_row["attempts"], 0);
    // Who made the answer, as stored with it.
    assert_eq!(
        (
            hit_row["provider"].as_str(),
            hit_row["upstream_model"].as_str()
        ),
        (Some("up"), Some("gpt-upstream")),
        "{hit_row}"
    );
    assert_eq!(
        (
            hit_row["input_tokens"].as_i64(),
            hit_row["output_tokens"].as_i64()
        ),
        (Some(0), Some(0))
    );
    let usage = gw
        .admin(MASTER, Method::GET, "/admin/usage?by=key", None)
        .await
        .json();
    assert_eq!(usage["total"]["cache_hits"], 1, "{usage}");
    assert_eq!(usage["total"]["saved_usd"].as_f64(), Some(cost), "{usage}");

    // rpm: a hit takes its request like any other (this key has no team: its own scope).
    let (miss, calls) = call_as(&gw, &mock, "sk-cache-limited", &body).await;
    assert_eq!((verdict(&miss), calls), ("miss", 1));
    assert_eq!(miss.header("x-ratelimit-remaining-requests"), Some("2"));
    for remaining in ["1", "0"] {
        let hit = gw.chat_as("sk-cache-limited", body.clone()).await;
        assert_eq!(verdict(&hit), "hit");
        assert_eq!(
            hit.header("x-ratelimit-remaining-requests"),
            Some(remaining)
        );
    }
    gw.chat_as("sk-cache-limited", body)
        .await
        .assert_error(429, "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_entries_through_redis() {
    let mock = MockUpstream::start().await.unwrap();
    let redis = "[storage]\nredis = \"redis://127.0.0.1:6379\"\n";
    let a = Gateway::start(conf(&mock, SEMANTIC).section(redis)).await;
    let b = Gateway::start(conf(&mock, SEMANTIC).section(redis)).await;
    // Entries outlive a run in Redis: each run has instructions of its own (so its own keys
    // and partition), and fixed questions (so a fixed similarity).
    let system = format!("Answer briefly (run {:08x}).", fastrand::u32(..));
    let question = |text: &str| {
        let mut body = question(text);
        body["messages"][0]["content"] = json!(system);
        body
    };
    let asked = "Which river flows through the city of Paris in France?";
    let (answer, calls) = call(&a, &mock, &question(asked)).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));

    // Stored off the request path: B sees it shortly (probes store nothing themselves).
    let probe = || {
        b.send(
            b.request_as(MASTER, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(question(asked).to_string()),
        )
    };
    let shared = eventually(Duration::from_secs(5), || async {
        verdict(&probe().await) == "hit"
    })
    .await;
    assert!(shared.is_some(), "replica B never saw A's answer");
    let (answer, calls) = call(&b, &mock, &question(asked)).await;
    assert_eq!((verdict(&answer), calls), ("hit", 0));
    assert_eq!(answer.content(), asked);

    // The reworded question, on B, from A's embedding.
    let reworded = "Which river flows through Paris, the city in France?";
    let (answer, calls) = call(&b, &mock, &question(reworded)).await;
    assert_eq!((verdict(&answer), calls), ("semantic-hit", 0));
    assert_eq!(answer.content(), asked);

    // Another team on B does not get it.
    let (answer, calls) = call_as(&b, &mock, "sk-cache-beta", &question(asked)).await;
    assert_eq!((verdict(&answer), calls), ("miss", 1));
    let health = b.get("/health/ready").await.json();
    assert_eq!(health["redis"], "ok", "{health}");
}

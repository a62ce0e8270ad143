//! Prompt templates as APIs: kept in versions at `/admin/prompts` (admins only, audited), run
//! at `POST /v1/prompts/{name}/run` through the whole chat pipeline — what the upstream gets,
//! whole and streamed answers, model permissions and limits, clear refusals — and each run's
//! ledger row naming the prompt and version.

use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-prompts-5c21e9";

async fn gateway(mock: &MockUpstream) -> Gateway {
    Gateway::start(
        one_model(mock)
            .model("other", "up", "gpt-other")
            .server(&format!("master_key = \"{MASTER}\""))
            .section("[storage.ledger]\nflush_interval = \"50ms\"\n"),
    )
    .await
}

/// Saves a prompt version with the master key; returns what the admin API answered.
async fn save(gw: &Gateway, body: Value) -> Value {
    let answer = gw
        .admin(MASTER, Method::POST, "/admin/prompts", Some(&body))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.json()
}

/// Runs prompt `name` with `key` and `body`.
async fn run(gw: &Gateway, key: &str, name: &str, body: Value) -> Answer {
    gw.send(gw.post_as(key, &format!("/v1/prompts/{name}/run"), &body))
        .await
}

/// The `/admin/logs` row of request `id`, once the ledger has written it.
async fn log_row(gw: &Gateway, id: &str) -> Value {
    let path = format!("/admin/logs?request_id={id}");
    for _ in 0..120 {
        let page = gw.admin(MASTER, Method::GET, &path, None).await.json();
        if !page["data"][0].is_null() {
            return page["data"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no log row for {id}");
}

/// The tags of a log row, parsed from its `metadata` text.
fn tags(row: &Value) -> Value {
    serde_json::from_str(row["metadata"].as_str().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn prompts_are_kept_in_versions_and_run_as_chat_completions() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway(&mock).await;

    let first = save(
        &gw,
        json!({"name": "greet", "model": "chat", "template": "Say hello to {{name}}.",
               "parameters": {"temperature": 0.2, "max_tokens": 50}}),
    )
    .await;
    assert_eq!(
        (&first["version"], &first["variables"]),
        (&json!(1), &json!(["name"]))
    );
    let second = save(
        &gw,
        json!({"name": "greet", "model": "chat",
               "template": [
                   {"role": "system", "content": "You write in {{ lang }}."},
                   {"role": "user", "content": "Greet {{name}}, in {{lang}}."}
               ],
               "parameters": {"temperature": 0.7, "seed": 7}}),
    )
    .await;
    assert_eq!(second["version"], 2);
    assert_eq!(second["variables"], json!(["lang", "name"]));
    save(
        &gw,
        json!({"name": "summary", "model": "other", "template": "Sum up: {{text}}"}),
    )
    .await;

    let list = gw
        .admin(MASTER, Method::GET, "/admin/prompts", None)
        .await
        .json();
    let latest: Vec<(Value, Value)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["version"].clone()))
        .collect();
    assert_eq!(
        latest,
        [(json!("greet"), json!(2)), (json!("summary"), json!(1))]
    );
    let greet = gw
        .admin(MASTER, Method::GET, "/admin/prompts/greet", None)
        .await
        .json();
    assert_eq!(greet["version"], 2);
    assert_eq!(greet["versions"][0]["template"], "Say hello to {{name}}.");
    assert_eq!(greet["versions"].as_array().unwrap().len(), 2);

    // The latest version, a parameter overridden: a value is inserted as written, never
    // expanded again.
    let answer = gw
        .send(
            gw.post_as(
                MASTER,
                "/v1/prompts/greet/run",
                &json!({"variables": {"name": "Ada {{lang}}", "lang": "French"}, "max_tokens": 20}),
            )
            .header("x-request-id", "req-prompt-latest")
            .header("x-proxima-metadata", r#"{"app": "docs"}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["object"], "chat.completion");
    assert_eq!(answer.content(), "Greet Ada {{lang}}, in French.");
    assert_eq!(answer.header("x-proxima-model"), Some("gpt-upstream"));
    let sent = mock.received()[0].json();
    assert_eq!(sent["model"], "gpt-upstream");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You write in French."},
            {"role": "user", "content": "Greet Ada {{lang}}, in French."}
        ])
    );
    assert_eq!(
        (&sent["temperature"], &sent["seed"], &sent["max_tokens"]),
        (&json!(0.7), &json!(7), &json!(20))
    );

    // A named version, with its own parameters.
    mock.clear();
    let answer = gw
        .send(
            gw.post_as(
                MASTER,
                "/v1/prompts/greet/run",
                &json!({"variables": {"name": "Bob"}, "version": 1}),
            )
            .header("x-request-id", "req-prompt-v1"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content(), "Say hello to Bob.");
    let sent = mock.received()[0].json();
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Say hello to Bob."}])
    );
    assert_eq!(
        (&sent["temperature"], &sent["max_tokens"]),
        (&json!(0.2), &json!(50))
    );
    assert!(sent.get("seed").is_none(), "{sent}");

    // Streamed, as chat completions stream.
    let mut stream = gw
        .stream_with(
            gw.client()
                .post(gw.url("/v1/prompts/greet/run"))
                .bearer_auth(MASTER)
                .header("x-request-id", "req-prompt-stream"),
            json!({"variables": {"name": "Cy", "lang": "Welsh"}, "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(
        stream.header("content-type"),
        Some("text/event-stream"),
        "a prompt run streams as SSE"
    );
    let chunks = chunks_until_done(&stream.data().await);
    assert_eq!(streamed_content(&chunks, 0), "Greet Cy, in Welsh.");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"].as_u64() > Some(0),
        "usage chunk: {chunks:?}"
    );

    // Each run's ledger row names the prompt and the version that ran, beside the caller's tags.
    let row = log_row(&gw, "req-prompt-latest").await;
    assert_eq!(row["model"], "chat");
    assert_eq!(
        tags(&row),
        json!({"app": "docs", "proxima.prompt": "greet", "proxima.prompt_version": 2})
    );
    let row = log_row(&gw, "req-prompt-v1").await;
    assert_eq!(
        tags(&row),
        json!({"proxima.prompt": "greet", "proxima.prompt_version": 1})
    );
    let row = log_row(&gw, "req-prompt-stream").await;
    assert_eq!(row["stream"], true);
    assert_eq!(tags(&row)["proxima.prompt_version"], 2);
    assert!(row["output_tokens"].as_i64() > Some(0), "{row}");
}

#[tokio::test]
async fn runs_obey_the_callers_model_permissions_and_limits() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway(&mock).await;
    save(
        &gw,
        json!({"name": "greet", "model": "chat", "template": "Hi {{name}}"}),
    )
    .await;
    save(
        &gw,
        json!({"name": "summary", "model": "other", "template": "Sum up: {{text}}"}),
    )
    .await;
    let (_, key) = gw
        .create_key(MASTER, json!({"name": "app", "models": ["chat"], "rpm": 2}))
        .await;

    let answer = run(&gw, &key, "greet", json!({"variables": {"name": "Ada"}})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content(), "Hi Ada");
    // The prompt's model is one this key may not use.
    let answer = run(&gw, &key, "summary", json!({"variables": {"text": "x"}})).await;
    answer.assert_error(403, "model_not_allowed");
    // The key's rate limit counts runs like any call.
    let answer = run(&gw, &key, "greet", json!({"variables": {"name": "Bo"}})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = run(&gw, &key, "greet", json!({"variables": {"name": "Cy"}})).await;
    answer.assert_error(429, "rate_limit_exceeded");
    assert!(answer.header("retry-after").is_some());
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn bad_runs_are_refused_saying_what_to_fix() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway(&mock).await;
    save(
        &gw,
        json!({"name": "greet", "model": "chat",
               "template": [{"role": "system", "content": "Speak {{lang}}."},
                            {"role": "user", "content": "Greet {{name}}."}]}),
    )
    .await;

    let error = run(
        &gw,
        MASTER,
        "greet",
        json!({"variables": {"lang": "Irish"}}),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(error["param"], "variables");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("missing variable `name`"),
        "{error}"
    );
    let error = run(&gw, MASTER, "greet", json!({}))
        .await
        .assert_error(400, "invalid_request");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`lang`, `name`"),
        "{error}"
    );
    let error = run(&gw, MASTER, "nope", json!({"variables": {}}))
        .await
        .assert_error(404, "not_found");
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    let error = run(
        &gw,
        MASTER,
        "greet",
        json!({"variables": {"lang": "a", "name": "b"}, "version": 9}),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(error["param"], "version");
    let all = json!({"lang": "a", "name": "b"});
    let error = run(
        &gw,
        MASTER,
        "greet",
        json!({"variables": all, "model": "other"}),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(error["param"], "model");
    let error = run(
        &gw,
        MASTER,
        "greet",
        json!({"variables": all, "temperature": "hot"}),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(error["param"], "temperature");
    let error = run(&gw, MASTER, "greet", json!({"variables": ["a"]}))
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(error["param"], "variables");
    // Without a key, as every /v1 route.
    let answer = gw
        .post_json("/v1/prompts/greet/run", &json!({"variables": all}))
        .await;
    answer.assert_error(401, "invalid_api_key");
    assert_eq!(mock.request_count(), 0, "nothing refused went upstream");
    let answer = run(&gw, MASTER, "greet", json!({"variables": all})).await;
    assert_eq!(answer.content(), "Greet b.");
}

#[tokio::test]
async fn the_admin_api_checks_prompts_and_only_admins_use_it() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = gateway(&mock).await;
    let (_, user) = gw.create_key(MASTER, json!({"name": "user"})).await;
    let (_, ops) = gw
        .create_key(MASTER, json!({"name": "ops", "admin": true}))
        .await;
    let body = json!({"name": "greet", "model": "chat", "template": "Hi {{name}}"});

    // A user key may run prompts, not manage them.
    for (method, path) in [
        (Method::POST, "/admin/prompts"),
        (Method::GET, "/admin/prompts"),
        (Method::GET, "/admin/prompts/greet"),
        (Method::DELETE, "/admin/prompts/greet"),
    ] {
        gw.admin(&user, method.clone(), path, Some(&body))
            .await
            .assert_error(403, "model_not_allowed");
    }
    let made = gw
        .admin(&ops, Method::POST, "/admin/prompts", Some(&body))
        .await;
    assert_eq!(made.status, 201, "{}", made.text());

    let refused = |body: Value, param: &'static str, words: &'static str| {
        let gw = &gw;
        async move {
            let error = gw
                .admin(MASTER, Method::POST, "/admin/prompts", Some(&body))
                .await
                .assert_error(400, "invalid_request");
            assert_eq!(error["param"], param, "{body}: {error}");
            assert!(
                error["message"].as_str().unwrap().contains(words),
                "{body}: {error}"
            );
        }
    };
    refused(
        json!({"name": "a b", "model": "chat", "template": "x"}),
        "name",
        "not allowed",
    )
    .await;
    refused(
        json!({"name": "e", "model": "chat", "template": " "}),
        "template",
        "empty",
    )
    .await;
    refused(
        json!({"name": "e", "model": "chat", "template": "Hi {{name"}),
        "template",
        "never closed",
    )
    .await;
    refused(
        json!({"name": "e", "model": "chat", "template": [{"role": "user", "content": "{{a-b}}"}]}),
        "template[0].content",
        "is not a variable",
    )
    .await;
    refused(
        json!({"name": "e", "model": "nope", "template": "x"}),
        "model",
        "no model named `nope`",
    )
    .await;
    refused(
        json!({"name": "e", "model": "chat", "template": "x", "parameters": {"messages": []}}),
        "parameters.messages",
        "may not set `messages`",
    )
    .await;
    refused(
        json!({"name": "e", "model": "chat", "template": "x", "parameters": {"max_tokens": "many"}}),
        "parameters.max_tokens",
        "do not make a valid chat request",
    )
    .await;
    let error = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/prompts",
            Some(&json!({"name": "e", "template": "x"})),
        )
        .await
        .assert_error(400, "invalid_request");
    assert!(
        error["message"].as_str().unwrap().contains("`model`"),
        "{error}"
    );

    // Deleted: gone for runs and the admin API; saved again, its numbers go on.
    let deleted = gw
        .admin(&ops, Method::DELETE, "/admin/prompts/greet", None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["versions"], 1);
    run(&gw, MASTER, "greet", json!({"variables": {"name": "x"}}))
        .await
        .assert_error(404, "not_found");
    gw.admin(MASTER, Method::GET, "/admin/prompts/greet", None)
        .await
        .assert_error(404, "not_found");
    gw.admin(MASTER, Method::DELETE, "/admin/prompts/greet", None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(save(&gw, body.clone()).await["version"], 2);

    // Every change is in the audit log, the refused ones too.
    let audit = gw
        .admin(MASTER, Method::GET, "/admin/audit?action=prompt", None)
        .await
        .json();
    let actions: Vec<(String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let ok = |a: &str| (a.to_owned(), "ok".to_owned());
    let error = |a: &str| (a.to_owned(), "error".to_owned());
    assert_eq!(actions.first(), Some(&ok("prompt.create")), "{audit}");
    assert!(actions.contains(&error("prompt.create")), "{audit}");
    assert!(actions.contains(&ok("prompt.delete")), "{audit}");
    assert_eq!(actions.last(), Some(&ok("prompt.create")), "{audit}");
    assert_eq!(audit["data"][0]["target"], "greet");
}

//! Rate limits and budgets as clients see them: `x-ratelimit-*` headers, 429s with
//! `retry-after` and a message naming the limit, budgets that stop spending and say when they
//! reset — on one gateway with local counters, and across two gateway processes sharing
//! PostgreSQL and Redis.

use std::sync::Arc;
use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-limits-9d1f27";

/// A name no other test (or earlier run, through Redis) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

fn header(answer: &Answer, name: &str) -> u64 {
    answer
        .header(name)
        .unwrap_or_else(|| panic!("no {name} on {} {}", answer.status, answer.text()))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

#[tokio::test]
async fn a_keys_requests_per_minute_are_counted_in_headers_and_refused_with_retry_after() {
    let mock = MockUpstream::start().await.unwrap();
    let gw =
        Gateway::start(one_model(&mock).section("[keys.ci]\nkey = \"sk-ci-limits\"\nrpm = 3\n"))
            .await;
    for remaining in [2, 1, 0] {
        let answer = gw.chat_as("sk-ci-limits", chat_body("chat", "hi")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(header(&answer, "x-ratelimit-limit-requests"), 3);
        assert_eq!(header(&answer, "x-ratelimit-remaining-requests"), remaining);
        assert!(answer.header("x-ratelimit-reset-requests").is_some());
    }
    let refused = gw.chat_as("sk-ci-limits", chat_body("chat", "hi")).await;
    let error = refused.assert_error(429, "rate_limit_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("key `ci`") && message.contains("3 requests per minute"),
        "{message}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), 0);
    // The upstream saw only the admitted requests.
    assert_eq!(mock.request_count(), 3);

    // The Anthropic surface refuses in Anthropic's shape.
    let answer = gw
        .send(
            gw.client()
                .post(gw.url("/v1/messages"))
                .header("x-api-key", "sk-ci-limits")
                .header("content-type", "application/json")
                .body(
                    json!({"model": "chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                ),
        )
        .await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(answer.header("retry-after").is_some());
}

#[tokio::test]
async fn tokens_per_minute_reserve_the_prompt_and_max_tokens_and_settle_on_real_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let gw =
        Gateway::start(one_model(&mock).section("[keys.tk]\nkey = \"sk-tokens\"\ntpm = 1000\n"))
            .await;
    let body = |max_tokens: u32| json!({"model": "chat", "max_tokens": max_tokens, "messages": [user("count these few words")]});
    // 900 output tokens are reserved, but the echo answers in a handful: the bucket gets the
    // difference back, so the same request passes again and again.
    for _ in 0..3 {
        let answer = gw.chat_as("sk-tokens", body(900)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(header(&answer, "x-ratelimit-limit-tokens"), 1000);
        let remaining = header(&answer, "x-ratelimit-remaining-tokens");
        assert!(remaining < 100, "the reservation shows: {remaining}");
    }
    let answer = gw.chat_as("sk-tokens", body(10)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        header(&answer, "x-ratelimit-remaining-tokens") > 900,
        "settled back to real usage"
    );
    // A request larger than the whole limit can never pass, and says so.
    let refused = gw.chat_as("sk-tokens", body(5000)).await;
    let error = refused.assert_error(429, "rate_limit_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("key `tk` is 1000 per minute") && message.contains("can never pass"),
        "{message}"
    );
}

#[tokio::test]
async fn without_max_tokens_only_the_prompt_is_charged_and_a_refusal_says_when_to_retry() {
    let mock = MockUpstream::start().await.unwrap();
    let gw =
        Gateway::start(one_model(&mock).section("[keys.small]\nkey = \"sk-small\"\ntpm = 100\n"))
            .await;
    // About 60 prompt tokens and no max_tokens: output nobody asked for is not charged
    // up front, so the call fits a limit of 100 tokens a minute.
    let prompt = "alpha beta gamma delta epsilon zeta eta theta iota kappa ".repeat(5);
    let body = json!({"model": "chat", "messages": [user(prompt.trim())]});
    let answer = gw.chat_as("sk-small", body.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(header(&answer, "x-ratelimit-limit-tokens"), 100);
    // The echo's real usage (prompt and answer) settles the bucket; the next calls are refused
    // until it refills, with a retry-after and the limit's state.
    let mut refused = None;
    for _ in 0..5 {
        let answer = gw.chat_as("sk-small", body.clone()).await;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let refused = refused.expect("the limit refuses once the real usage is settled");
    refused.assert_error(429, "rate_limit_exceeded");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&refused, "x-ratelimit-limit-tokens"), 100);
    assert!(refused.header("x-ratelimit-remaining-tokens").is_some());
}

#[tokio::test]
async fn a_models_capacity_and_a_teams_limit_are_shared_by_every_key() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .server(&format!("master_key = \"{MASTER}\""))
            .openai("up", &mock)
            .model_with("capped", "up", "m", "rpm = 2")
            .model("open", "up", "m"),
    )
    .await;
    let team = unique("team");
    let made = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": team, "rpm": 3})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let made = gw
            .admin(
                MASTER,
                Method::POST,
                "/admin/keys",
                Some(&json!({"name": name, "team": team})),
            )
            .await;
        assert_eq!(made.status, 201, "{}", made.text());
        keys.push(made.json()["key"].as_str().unwrap().to_owned());
    }
    // The model takes two requests a minute, whoever sends them.
    assert_eq!(
        gw.chat_as(&keys[0], chat_body("capped", "1")).await.status,
        200
    );
    assert_eq!(
        gw.chat_as(&keys[1], chat_body("capped", "2")).await.status,
        200
    );
    let refused = gw.chat_as(&keys[0], chat_body("capped", "3")).await;
    let error = refused.assert_error(429, "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("model `capped`"),
        "{error}"
    );
    // The team's 3 requests a minute span both keys: the refused request took nothing.
    assert_eq!(
        gw.chat_as(&keys[1], chat_body("open", "4")).await.status,
        200
    );
    let refused = gw.chat_as(&keys[0], chat_body("open", "5")).await;
    let error = refused.assert_error(429, "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("team `{team}`")),
        "{error}"
    );
    // The master key is in no team and has no limit.
    assert_eq!(gw.chat_as(MASTER, chat_body("open", "6")).await.status, 200);
}

#[tokio::test]
async fn a_budget_stops_spending_says_which_and_when_it_resets_and_the_ledger_agrees() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .server(&format!("master_key = \"{MASTER}\""))
            .openai("up", &mock)
            // A thousandth of a dollar per token, so a few requests spend a few cents.
            .model_with(
                "priced",
                "up",
                "m",
                "price = { input_per_mtok = 1000.0, output_per_mtok = 1000.0 }",
            ),
    )
    .await;
    let made = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "spender", "budget": {"usd": 0.1, "period": "1d"}})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let (id, key) = (
        made.json()["id"].as_str().unwrap().to_owned(),
        made.json()["key"].as_str().unwrap().to_owned(),
    );
    let body =
        json!({"model": "priced", "max_tokens": 8, "messages": [user("four words of prompt")]});
    let mut admitted = 0;
    let refusal = loop {
        let answer = gw.chat_as(&key, body.clone()).await;
        match answer.status {
            200 => admitted += 1,
            429 => break answer,
            other => panic!("{other}: {}", answer.text()),
        }
        assert!(admitted < 100, "the budget never ran out");
    };
    assert!(admitted >= 2, "admitted {admitted}");
    let error = refusal.assert_error(429, "budget_exceeded");
    let message = error["message"].as_str().unwrap();
    let tomorrow = proxima::clock::day(proxima::clock::now_ms() + 86_400_000);
    assert!(
        message.contains("daily budget of key")
            && message.contains("$0.10")
            && message.contains(&format!("resets at {tomorrow}T00:00:00Z")),
        "{message}"
    );
    assert!(refusal.header("retry-after").is_some());

    // Spend never passed the budget, and the ledger, the report and the counters agree.
    let store = gw.store().await;
    assert_ledger_rows(&store, admitted + 1, Duration::from_secs(5)).await;
    let report = gw
        .admin(MASTER, Method::GET, "/admin/usage?by=key", None)
        .await
        .json();
    let row = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == id.as_str())
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    let spent = row["cost_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 0.1, "spent {spent}");
    assert_eq!(row["requests"], admitted + 1);
    assert_eq!(row["errors"], 1);
    let ledger = store
        .spent_since(proxima::store::SpendColumn::Key, &id, 0)
        .await
        .unwrap();
    assert_eq!(proxima::pricing::nanos(spent), ledger);
}

/// Starts `proxima serve` on `config`.
fn serve(config: &std::path::Path) -> Served {
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(config);
    Served::start(command)
}

async fn post(client: &reqwest::Client, served: &Served, key: &str, body: &Value) -> u16 {
    Answer::read(
        client
            .post(served.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
    .status
}

/// Sends `n` chat requests at once, alternating between the two gateways.
async fn burst(
    client: &reqwest::Client,
    gateways: [&Served; 2],
    key: &str,
    body: &Value,
    n: usize,
) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let request = client
                .post(gateways[i % 2].url("/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.to_string());
            tokio::spawn(Answer::read(request))
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_on_postgres_and_redis_enforce_one_limit_and_one_budget() {
    let schema = postgres_schema().await;
    let database = postgres_url(&postgres_base(), &schema);
    let config = temp_file(
        "replicas.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"{MASTER}\"\n\n\
             [storage]\ndatabase = \"{database}\"\nredis = \"redis://127.0.0.1:6379\"\nsync_interval = \"200ms\"\n\n\
             [providers.builtin]\nkind = \"mock\"\nlatency = \"100ms\"\n\n\
             [models.priced]\ntargets = [{{ provider = \"builtin\", model = \"mock\" }}]\n\
             price = {{ input_per_mtok = 1000.0, output_per_mtok = 1000.0 }}\n"
        ),
    );
    let a = serve(&config);
    let b = serve(&config);
    let client = http_client();
    let make_key = |body: Value| {
        let client = client.clone();
        let url = a.url("/admin/keys");
        async move {
            let answer = Answer::read(
                client
                    .post(url)
                    .bearer_auth(MASTER)
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            )
            .await;
            assert_eq!(answer.status, 201, "{}", answer.text());
            let made = answer.json();
            (
                made["id"].as_str().unwrap().to_owned(),
                made["key"].as_str().unwrap().to_owned(),
            )
        }
    };
    let body =
        json!({"model": "priced", "max_tokens": 8, "messages": [user("four words of prompt")]});

    // One rpm limit across both: 16 requests at once, half to each, and exactly 10 pass.
    let (_, limited) = make_key(json!({"name": unique("rpm"), "rpm": 10})).await;
    let known = eventually(Duration::from_secs(3), || async {
        post(&client, &b, &limited, &body).await != 401
    })
    .await;
    assert!(known.is_some(), "replica B never learned the key");
    let statuses: Vec<u16> = burst(&client, [&a, &b], &limited, &body, 15)
        .await
        .iter()
        .map(|a| a.status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited_count = statuses.iter().filter(|s| **s == 429).count();
    // The probe on B took one of the ten.
    assert_eq!((ok, limited_count), (9, 6), "{statuses:?}");

    // One budget across both: 100 requests at once, and the spend stays within it.
    let budget = 0.2;
    let (id, spender) =
        make_key(json!({"name": unique("budget"), "budget": {"usd": budget, "period": "1d"}}))
            .await;
    let known = eventually(Duration::from_secs(3), || async {
        let answer = Answer::read(client.get(b.url("/v1/models")).bearer_auth(&spender)).await;
        answer.status == 200
    })
    .await;
    assert!(known.is_some(), "replica B never learned the budget key");
    let answers = burst(&client, [&a, &b], &spender, &body, 100).await;
    let admitted = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(admitted + refused.len(), 100);
    assert!(admitted >= 2 && !refused.is_empty(), "admitted {admitted}");
    for answer in &refused {
        assert_eq!(answer.json()["error"]["code"], "budget_exceeded");
    }
    // Both replicas write their rows; the ledger says what was spent.
    let store = proxima::store::Store::connect(&database).await.unwrap();
    let spent = Arc::new(tokio::sync::Mutex::new(0));
    let settled = eventually(Duration::from_secs(5), || {
        let (store, spent, id) = (store.clone(), spent.clone(), id.clone());
        async move {
            let rows = store
                .logs(&proxima::store::LogFilter {
                    key: Some(id.clone()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await
                .unwrap();
            *spent.lock().await = store
                .spent_since(proxima::store::SpendColumn::Key, &id, 0)
                .await
                .unwrap();
            rows.data.len() == 100
        }
    })
    .await;
    assert!(settled.is_some(), "not every request reached the ledger");
    let spent = proxima::pricing::usd(*spent.lock().await);
    eprintln!("budget ${budget}: {admitted} admitted, ${spent} spent");
    assert!(
        spent > 0.0 && spent <= budget,
        "spent ${spent} of a ${budget} budget with {admitted} admitted"
    );
    a.stop();
    b.stop();
}

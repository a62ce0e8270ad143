//! Routing and resilience: strategies measured over many calls, circuit breakers, timeouts,
//! context-window moves, canary rollback, chaos under load, and reloads under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use futures_util::stream::{self, StreamExt};
use mock_upstream::{MockUpstream, Options, Reply};
use serde_json::{json, Value};

use crate::harness::*;

async fn mock_with_latency(latency: Duration) -> MockUpstream {
    MockUpstream::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Options {
            latency,
            record: true,
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// Sends `n` chat requests, `concurrency` at a time, with the master key (any key passes when
/// none is configured); returns (status, provider) of each.
async fn load(
    gw: &Gateway,
    model: &str,
    n: usize,
    concurrency: usize,
) -> Vec<(u16, Option<String>)> {
    stream::iter(0..n)
        .map(|i| async move {
            let answer = chat_as(gw, "master-secret", &format!("request {i}"), model).await;
            (
                answer.status,
                answer.header("x-proxima-provider").map(str::to_owned),
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

fn count_by_provider(results: &[(u16, Option<String>)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (status, provider) in results {
        assert_eq!(*status, 200, "every request must succeed");
        *counts
            .entry(provider.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
}

fn targets(entries: &[&str]) -> String {
    entries.join(",\n  ")
}

#[tokio::test]
async fn weighted_90_10_splits_1000_calls_within_tolerance() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(
        Conf::new()
            .openai("a", &a)
            .openai("b", &b)
            .section(&format!(
                "[models.chat]\nstrategy = \"weighted\"\ntargets = [\n  {}\n]\n",
                targets(&[
                    r#"{ provider = "a", model = "m", weight = 90 }"#,
                    r#"{ provider = "b", model = "m", weight = 10 }"#
                ])
            )),
    )
    .await;
    let counts = count_by_provider(&load(&gw, "chat", 1000, 32).await);
    let share_a = counts.get("a").copied().unwrap_or(0);
    // Binomial(1000, 0.9): standard deviation ~9.5, so ±40 is more than four of them.
    assert!(
        (860..=940).contains(&share_a),
        "a served {share_a} of 1000: {counts:?}"
    );
}

#[tokio::test]
async fn round_robin_alternates_exactly() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(Conf::new().openai("a", &a).openai("b", &b).section(
        "[models.chat]\nstrategy = \"round-robin\"\ntargets = [{ provider = \"a\", model = \"m\" }, { provider = \"b\", model = \"m\" }]\n",
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(
            gw.chat_ok(chat_body("chat", "hi"))
                .await
                .header("x-proxima-provider")
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin must alternate: {seen:?}");
    }
    assert_eq!((a.request_count(), b.request_count()), (5, 5));
}

#[tokio::test]
async fn least_latency_prefers_the_faster_target() {
    let fast = mock_with_latency(Duration::ZERO).await;
    let slow = mock_with_latency(Duration::from_millis(40)).await;
    let gw = Gateway::start(Conf::new().openai("fast", &fast).openai("slow", &slow).section(
        "[models.chat]\nstrategy = \"least-latency\"\ntargets = [{ provider = \"fast\", model = \"m\" }, { provider = \"slow\", model = \"m\" }]\n",
    ))
    .await;
    let counts = count_by_provider(&load(&gw, "chat", 200, 4).await);
    let fast_share = counts.get("fast").copied().unwrap_or(0);
    assert!(
        fast_share >= 180,
        "the fast target served only {fast_share} of 200: {counts:?}"
    );
}

#[tokio::test]
async fn least_cost_sends_to_the_cheapest_and_falls_back_to_the_next() {
    let (cheap, dear) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(Conf::new().openai("cheap", &cheap).openai("dear", &dear).section(&format!(
        "[models.chat]\nstrategy = \"least-cost\"\nretries = 1\ntargets = [\n  {}\n]\n",
        targets(&[
            r#"{ provider = "dear", model = "m", price = { input_per_mtok = 10.0, output_per_mtok = 30.0 } }"#,
            r#"{ provider = "cheap", model = "m", price = { input_per_mtok = 0.1, output_per_mtok = 0.4 } }"#,
        ])
    )))
    .await;
    let counts = count_by_provider(&load(&gw, "chat", 50, 5).await);
    assert_eq!(counts.get("cheap"), Some(&50), "{counts:?}");
    cheap.enqueue(Reply::error(503, "cheap is down"));
    let answer = gw.chat_ok(chat_body("chat", "still served")).await;
    assert_eq!(answer.header("x-proxima-provider"), Some("dear"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
}

/// `flaky` first, `steady` second, with a breaker that opens after 3 failures for `cooldown`.
async fn breaker_pair(cooldown: &str) -> (MockUpstream, MockUpstream, Gateway) {
    let (flaky, steady) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(
        Conf::new()
            .server("master_key = \"master-secret\"")
            .openai("flaky", &flaky)
            .openai("steady", &steady)
            .section("[models.chat]\nstrategy = \"priority\"\nretries = 1\ntargets = [{ provider = \"flaky\", model = \"m\" }, { provider = \"steady\", model = \"m\" }]\n")
            .section(&format!("[routing]\nretry_backoff = \"1ms\"\n[routing.breaker]\nconsecutive_failures = 3\ncooldown = \"{cooldown}\"\nmax_cooldown = \"2h\"\n")),
    )
    .await;
    (flaky, steady, gw)
}

async fn chat_as(gw: &Gateway, key: &str, text: &str, model: &str) -> Answer {
    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json_body(&chat_body(model, text)),
    )
    .await
}

trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

async fn admin_models(gw: &Gateway) -> Value {
    let answer = gw
        .send(
            gw.client()
                .get(gw.url("/admin/models"))
                .bearer_auth("master-secret"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn target_health<'a>(models: &'a Value, model: &str, provider: &str) -> &'a Value {
    let model = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .unwrap();
    let target = model["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider"] == provider)
        .unwrap();
    &target["health"]
}

#[tokio::test]
async fn breaker_opens_after_consecutive_failures_and_traffic_skips_the_target() {
    let (flaky, steady, gw) = breaker_pair("1h").await;
    for _ in 0..3 {
        flaky.enqueue(Reply::error(500, "flaky is down"));
    }
    for _ in 0..3 {
        let answer = chat_as(&gw, "master-secret", "hi", "chat").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    }
    assert_eq!(
        admin_models(&gw)
            .await
            .pointer("/data/0/targets/0/health/breaker"),
        Some(&json!("open"))
    );
    for _ in 0..5 {
        let answer = chat_as(&gw, "master-secret", "hi", "chat").await;
        assert_eq!(answer.header("x-proxima-provider"), Some("steady"));
        assert_eq!(
            answer.header("x-proxima-attempts"),
            Some("1"),
            "an open circuit is not tried"
        );
    }
    assert_eq!(flaky.request_count(), 3);
    assert_eq!(steady.request_count(), 8);
    let health = admin_models(&gw).await;
    let flaky_health = target_health(&health, "chat", "flaky");
    assert_eq!(flaky_health["failures"], 3);
    assert!(flaky_health["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("flaky is down"));
}

#[tokio::test]
async fn breaker_half_opens_after_the_cooldown_and_closes_on_a_good_probe() {
    let (flaky, _steady, gw) = breaker_pair("300ms").await;
    for _ in 0..3 {
        flaky.enqueue(Reply::error(500, "down"));
        chat_as(&gw, "master-secret", "hi", "chat").await;
    }
    assert_eq!(
        target_health(&admin_models(&gw).await, "chat", "flaky")["breaker"],
        "open"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        target_health(&admin_models(&gw).await, "chat", "flaky")["breaker"],
        "half_open"
    );
    let answer = chat_as(&gw, "master-secret", "probe", "chat").await;
    assert_eq!(
        answer.header("x-proxima-provider"),
        Some("flaky"),
        "the probe goes to the recovering target"
    );
    assert_eq!(
        target_health(&admin_models(&gw).await, "chat", "flaky")["breaker"],
        "closed"
    );
}

#[tokio::test]
async fn every_circuit_open_and_no_fallback_is_503_no_healthy_upstream() {
    let only = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .openai("only", &only)
            .model_with("chat", "only", "m", "retries = 0")
            .section("[routing.breaker]\nconsecutive_failures = 2\ncooldown = \"1h\"\nmax_cooldown = \"1h\"\n"),
    )
    .await;
    for _ in 0..2 {
        only.enqueue(Reply::error(500, "down"));
        gw.chat(chat_body("chat", "hi"))
            .await
            .assert_error(502, "upstream_error");
    }
    let answer = gw.chat(chat_body("chat", "hi")).await;
    answer.assert_error(503, "no_healthy_upstream");
    assert!(answer.header("retry-after").is_some());
    assert_eq!(only.request_count(), 2, "an open circuit gets no request");
}

#[tokio::test]
async fn admin_models_needs_the_master_key() {
    let (_flaky, _steady, gw) = breaker_pair("1s").await;
    gw.get("/admin/models")
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn retry_after_from_the_upstream_is_honoured_before_retrying_the_same_target() {
    let only = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().openai("only", &only).model_with(
        "chat",
        "only",
        "m",
        "retries = 1",
    ))
    .await;
    only.enqueue(Reply::error(429, "slow down").header("retry-after", "1"));
    let started = Instant::now();
    let answer = gw.chat_ok(chat_body("chat", "patience")).await;
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retried after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_prompt_too_long_moves_to_a_target_with_a_larger_window() {
    let (small, large) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(
        Conf::new()
            .openai("small", &small)
            .openai("large", &large)
            .section(&format!(
                "[models.chat]\nstrategy = \"priority\"\nretries = 0\ntargets = [\n  {}\n]\n",
                targets(&[
                    r#"{ provider = "small", model = "m-8k", context_window = 8192 }"#,
                    r#"{ provider = "large", model = "m-128k", context_window = 128000 }"#,
                ])
            )),
    )
    .await;
    small.enqueue(Reply::json(400, json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded", "param": "messages"}})));
    let answer = gw.chat_ok(chat_body("chat", "a very long prompt")).await;
    assert_eq!(answer.header("x-proxima-provider"), Some("large"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    // Without a larger target the client gets the refusal, with its code.
    small.enqueue(Reply::json(400, json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}})));
    large.enqueue(Reply::json(400, json!({"error": {"message": "This model's maximum context length is 128000 tokens.", "code": "context_length_exceeded"}})));
    gw.chat(chat_body("chat", "far too long"))
        .await
        .assert_error(400, "context_length_exceeded");
}

#[tokio::test]
async fn the_model_timeout_cuts_each_hung_attempt_and_the_last_gives_504() {
    let hung = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().openai("hung", &hung).model_with(
        "chat",
        "hung",
        "m",
        "timeout = \"300ms\"\nretries = 1",
    ))
    .await;
    for _ in 0..2 {
        hung.enqueue(Reply::hang());
    }
    let started = Instant::now();
    let answer = gw.chat(chat_body("chat", "hello?")).await;
    answer.assert_error(504, "upstream_timeout");
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert_eq!(hung.request_count(), 2, "the retry got its own 300 ms");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_millis(1500),
        "took {elapsed:?}"
    );
}

/// Scripts `n` replies on `mock`, a random mix of the failures a real provider shows.
fn script_chaos(mock: &MockUpstream, n: usize) {
    for _ in 0..n {
        mock.enqueue(match fastrand::u8(0..6) {
            0 => Reply::error(500, "internal error"),
            1 => Reply::error(503, "overloaded"),
            2 => Reply::error(429, "rate limited").header("retry-after", "0"),
            3 => Reply::drop_connection(),
            4 => Reply::hang(),
            _ => Reply::default_behaviour().delay(Duration::from_millis(600)),
        });
    }
}

#[tokio::test]
async fn chaos_with_one_healthy_target_shows_clients_no_error() {
    let (bad, worse, good) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    const N: usize = 1500;
    script_chaos(&bad, N);
    script_chaos(&worse, N);
    let timeout = "timeout = \"250ms\"";
    let gw = Gateway::start(
        Conf::new()
            .openai_with("bad", &bad, timeout)
            .openai_with("worse", &worse, timeout)
            .openai_with("good", &good, timeout)
            .section(&format!(
                "[models.chat]\nretries = 3\ntargets = [\n  {}\n]\n",
                targets(&[
                    r#"{ provider = "bad", model = "m", weight = 40 }"#,
                    r#"{ provider = "worse", model = "m", weight = 40 }"#,
                    r#"{ provider = "good", model = "m", weight = 20 }"#,
                ])
            ))
            .section("[routing]\nretry_backoff = \"1ms\"\nmax_retry_wait = \"10ms\"\n[routing.breaker]\ncooldown = \"200ms\"\n"),
    )
    .await;
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results: Vec<bool> = stream::iter(0..N)
        .map(|i| {
            let gw = &gw;
            let failures = failures.clone();
            async move {
                let ok = if i % 2 == 0 {
                    let answer = gw.chat(chat_body("chat", &format!("chaos {i}"))).await;
                    answer.status == 200 && answer.content() == format!("chaos {i}")
                } else {
                    let mut sse = gw.stream(stream_body("chat", &format!("chaos {i}"))).await;
                    let chunks = chunks_until_done(&sse.data().await);
                    sse.status == 200 && streamed_content(&chunks, 0) == format!("chaos {i}")
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                ok
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    assert_eq!(results.len(), N);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "clients saw errors");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        bad.request_count() > 0 && worse.request_count() > 0,
        "the faulty targets were exercised"
    );
}

#[tokio::test]
async fn chaos_with_no_healthy_target_gives_the_spec_errors_within_the_deadline() {
    let (a, b) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    for _ in 0..200 {
        a.enqueue(Reply::error(500, "a is down"));
        b.enqueue(Reply::hang());
    }
    let gw = Gateway::start(
        Conf::new()
            .openai("a", &a)
            .openai_with("b", &b, "timeout = \"200ms\"")
            .model_with("errors", "a", "m", "retries = 2")
            .model_with("hangs", "b", "m", "retries = 1\ntimeout = \"1s\"")
            .section("[routing]\nretry_backoff = \"1ms\"\n[routing.breaker]\nconsecutive_failures = 1000\nmin_requests = 1000\n"),
    )
    .await;
    let started = Instant::now();
    let answers: Vec<Answer> = stream::iter(0..40)
        .map(|i| {
            let gw = &gw;
            async move {
                gw.chat(chat_body(if i % 2 == 0 { "errors" } else { "hangs" }, "x"))
                    .await
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    for answer in &answers {
        let code = answer.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match answer.status {
            502 => assert_eq!(code, "upstream_error"),
            504 => assert_eq!(code, "upstream_timeout"),
            other => panic!("unexpected status {other}: {}", answer.text()),
        }
    }
    assert!(answers.iter().any(|a| a.status == 502) && answers.iter().any(|a| a.status == 504));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// `stable` (weight 90) and a canary (weight 10) failing `fail_every`-th request (0: never).
async fn canary_setup(fail_one_in: usize, n: usize) -> (MockUpstream, MockUpstream, Gateway) {
    let (stable, canary) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    for i in 0..n {
        if fail_one_in > 0 && i % fail_one_in == 0 {
            canary.enqueue(Reply::error(500, "canary build is broken"));
        } else {
            canary.enqueue(Reply::default_behaviour());
        }
    }
    let gw = canary_gateway(
        &stable,
        &canary,
        (90, 10, 30),
        "consecutive_failures = 1000\nmin_requests = 100000",
    )
    .await;
    (stable, canary, gw)
}

/// A gateway whose model `chat` is `stable` and a canary on `canary`, with `(stable weight,
/// canary weight, the canary's min_requests)` and the given `[routing.breaker]` settings.
async fn canary_gateway(
    stable: &MockUpstream,
    canary: &MockUpstream,
    (stable_weight, canary_weight, min_requests): (u32, u32, u32),
    breaker: &str,
) -> Gateway {
    Gateway::start(
        Conf::new()
            .server("master_key = \"master-secret\"")
            .openai("stable", stable)
            .openai("canary", canary)
            .section(&format!(
                "[models.chat]\nretries = 1\ntargets = [\n  {}\n]\n",
                targets(&[
                    &format!(r#"{{ provider = "stable", model = "m", weight = {stable_weight} }}"#),
                    &format!(r#"{{ provider = "canary", model = "m-next", weight = {canary_weight}, canary = {{ min_requests = {min_requests} }} }}"#),
                ])
            ))
            .section(&format!("[routing]\nretry_backoff = \"1ms\"\n[routing.breaker]\n{breaker}\n")),
    )
    .await
}

#[tokio::test]
async fn a_canary_failing_30_percent_is_rolled_back_and_gets_no_more_traffic() {
    // Fails every third request: 33%.
    let (_stable, canary, gw) = canary_setup(3, 1000).await;
    let counts = count_by_provider(&load(&gw, "chat", 800, 16).await);
    let health = admin_models(&gw).await;
    assert_eq!(
        target_health(&health, "chat", "canary")["canary_rolled_back"],
        true,
        "{counts:?}"
    );
    let before = canary.request_count();
    count_by_provider(&load(&gw, "chat", 200, 16).await);
    assert_eq!(
        canary.request_count(),
        before,
        "a rolled-back canary gets no traffic"
    );
}

#[tokio::test]
async fn a_canary_whose_breaker_opens_before_min_requests_is_rolled_back_and_stays_out() {
    let (stable, canary) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    for _ in 0..3 {
        canary.enqueue(Reply::error(500, "canary build is broken"));
    }
    let gw = canary_gateway(
        &stable,
        &canary,
        (50, 50, 100),
        "consecutive_failures = 3\ncooldown = \"200ms\"\nmax_cooldown = \"200ms\"",
    )
    .await;
    // Until the canary failed three times in a row and its breaker opened.
    for i in 0..200 {
        if canary.request_count() >= 3 {
            break;
        }
        let answer = chat_as(&gw, "master-secret", &format!("request {i}"), "chat").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(canary.request_count(), 3);
    let health = admin_models(&gw).await;
    let canary_health = target_health(&health, "chat", "canary");
    assert_eq!(canary_health["canary_rolled_back"], true, "{canary_health}");
    assert!(
        canary_health["canary_rollback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("circuit breaker opened")),
        "{canary_health}"
    );
    // Past the cooldown its upstream answers again, but a rolled-back canary stays out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = count_by_provider(&load(&gw, "chat", 100, 8).await);
    assert_eq!(counts.get("stable"), Some(&100), "{counts:?}");
    assert_eq!(
        canary.request_count(),
        3,
        "a rolled-back canary gets no traffic"
    );
}

#[tokio::test]
async fn a_healthy_canary_keeps_its_share() {
    let (_stable, canary, gw) = canary_setup(0, 1000).await;
    let counts = count_by_provider(&load(&gw, "chat", 800, 16).await);
    let share = counts.get("canary").copied().unwrap_or(0);
    assert!(
        (40..=130).contains(&share),
        "canary served {share} of 800: {counts:?}"
    );
    assert_eq!(
        target_health(&admin_models(&gw).await, "chat", "canary")["canary_rolled_back"],
        false
    );
    assert!(canary.request_count() >= 40);
}

#[tokio::test]
async fn ten_reloads_under_load_fail_no_request_and_an_invalid_config_is_refused() {
    let up = MockUpstream::start().await.unwrap();
    let config = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"master-secret\"\n\n[storage]\ndatabase = \"sqlite::memory:\"\n\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n[models.chat]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n{extra}\n",
            up.url()
        )
    };
    let path = temp_file("reload.toml", &config(""));
    let parsed = proxima::config::Config::load(&path).unwrap();
    let server = proxima::server::Server::bind(parsed, Some(path.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let client = http_client();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, base, running, failures, served) = (
                client.clone(),
                base.clone(),
                running.clone(),
                failures.clone(),
                served.clone(),
            );
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth("master-secret")
                        .header("content-type", "application/json")
                        .body(chat_body("chat", "steady").to_string())
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for i in 0..10 {
        std::fs::write(
            &path,
            config(&format!(
                "[models.extra{i}]\ntargets = [{{ provider = \"up\", model = \"m{i}\" }}]\n"
            )),
        )
        .unwrap();
        let reload = client
            .post(format!("{base}/admin/config/reload"))
            .bearer_auth("master-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(
            reload.status(),
            200,
            "{}",
            reload.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last reload is in force.
    let answer = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("master-secret")
        .header("content-type", "application/json")
        .body(chat_body("extra9", "new model").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // An invalid config is refused with its problems, and the running one stays.
    std::fs::write(
        &path,
        config("[models.broken]\ntargets = [{ provider = \"nowhere\", model = \"m\" }]\n"),
    )
    .unwrap();
    let refused = client
        .post(format!("{base}/admin/config/reload"))
        .bearer_auth("master-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nowhere"),
        "{body}"
    );
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(served.load(Ordering::Relaxed) > 50, "the load ran");
    let still = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("master-secret")
        .header("content-type", "application/json")
        .body(chat_body("extra9", "old config kept").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
    let _ = stop.send(());
    let _ = task.await;
}

//! Retries and failover before the first byte; what is not retried.

use std::time::Duration;
use tokio::time::Instant;

use mock_upstream::{MockUpstream, Reply};

use crate::harness::*;

/// Providers `first` and `second` and model `chat` trying them in that order.
async fn two_targets() -> (MockUpstream, MockUpstream, Gateway) {
    two_targets_with("", "").await
}

/// [`two_targets`] with more lines for provider `first`'s table and for the model's table;
/// retries back off 1 ms.
async fn two_targets_with(
    first_extra: &str,
    model_extra: &str,
) -> (MockUpstream, MockUpstream, Gateway) {
    let first = MockUpstream::start().await.unwrap();
    let second = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .openai_with("first", &first, first_extra)
            .openai("second", &second)
            .section(&format!(
                "[models.chat]\nstrategy = \"priority\"\ntargets = [\n  {{ provider = \"first\", model = \"model-one\" }},\n  {{ provider = \"second\", model = \"model-two\" }},\n]\n{model_extra}\n"
            ))
            .section("[routing]\nretry_backoff = \"1ms\"\n"),
    )
    .await;
    (first, second, gw)
}

#[tokio::test]
async fn without_retries_a_500_from_the_first_target_is_still_answered_by_the_second() {
    let (first, second, gw) = two_targets_with("", "retries = 0").await;
    first.enqueue(Reply::error(500, "first is down"));

    let answer = gw.chat_ok(chat_body("chat", "every target first")).await;
    assert_eq!(answer.content(), "every target first");
    assert_eq!(answer.header("x-proxima-provider"), Some("second"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert_eq!((first.request_count(), second.request_count()), (1, 1));
}

#[tokio::test]
async fn without_retries_a_first_target_hung_past_the_model_timeout_leaves_the_second_its_turn() {
    let (first, second, gw) = two_targets_with("", "retries = 0\ntimeout = \"400ms\"").await;
    first.enqueue(Reply::hang());
    first.enqueue(Reply::hang());

    let started = Instant::now();
    let answer = gw.chat_ok(chat_body("chat", "not a 504")).await;
    assert_eq!(answer.content(), "not a 504");
    assert_eq!(answer.header("x-proxima-provider"), Some("second"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    // The model's timeout bounds each attempt, for a stream until its first chunk.
    let mut sse = gw.stream(stream_body("chat", "streamed, not a 504")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("x-proxima-provider"), Some("second"));
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "streamed, not a 504");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5),
        "two hung attempts of 400 ms took {elapsed:?}"
    );
    assert_eq!((first.request_count(), second.request_count()), (2, 2));
}

#[tokio::test]
async fn without_retries_a_first_target_past_its_provider_timeout_is_answered_by_the_second() {
    let (first, second, gw) = two_targets_with("timeout = \"300ms\"", "retries = 0").await;
    first.enqueue(Reply::hang());

    let answer = gw.chat_ok(chat_body("chat", "second is quick")).await;
    assert_eq!(answer.content(), "second is quick");
    assert_eq!(answer.header("x-proxima-provider"), Some("second"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert_eq!(second.request_count(), 1);
}

#[tokio::test]
async fn without_retries_a_stream_failing_before_its_first_chunk_is_served_by_the_second() {
    let (first, second, gw) = two_targets_with("", "retries = 0").await;
    first.enqueue(Reply::default_behaviour().cut_after(0));

    let mut sse = gw.stream(stream_body("chat", "second stream")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("x-proxima-provider"), Some("second"));
    assert_eq!(sse.header("x-proxima-attempts"), Some("2"));
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "second stream");
    assert_eq!((first.request_count(), second.request_count()), (1, 1));
}

#[tokio::test]
async fn retries_add_attempts_after_every_target_had_one() {
    let (first, second, gw) = two_targets_with("", "retries = 2").await;
    for mock in [&first, &second, &first] {
        mock.enqueue(Reply::error(503, "overloaded"));
    }

    let answer = gw.chat_ok(chat_body("chat", "fourth attempt")).await;
    assert_eq!(answer.content(), "fourth attempt");
    assert_eq!(answer.header("x-proxima-provider"), Some("second"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("4"));
    assert_eq!((first.request_count(), second.request_count()), (2, 2));

    // Two targets and one retry: three attempts, then the client gets the last error.
    let (first, second, gw) = two_targets_with("", "retries = 1").await;
    for mock in [&first, &second, &first] {
        mock.enqueue(Reply::error(503, "still overloaded"));
    }
    let answer = gw.chat(chat_body("chat", "x")).await;
    answer.assert_error(502, "upstream_error");
    assert_eq!(answer.header("x-proxima-attempts"), Some("3"));
    assert_eq!((first.request_count(), second.request_count()), (2, 1));
}

#[tokio::test]
async fn a_500_from_the_first_target_is_answered_by_the_second() {
    let (first, second, gw) = two_targets().await;
    first.enqueue(Reply::error(500, "first is down"));

    let answer = gw.chat_ok(chat_body("chat", "fail over")).await;
    assert_eq!(answer.content(), "fail over");
    assert_eq!(answer.header("x-proxima-provider"), Some("second"));
    assert_eq!(answer.header("x-proxima-model"), Some("model-two"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert_eq!(first.request_count(), 1);
    assert_eq!(second.received()[0].json()["model"], "model-two");
}

#[tokio::test]
async fn priority_sends_everything_to_the_first_healthy_target() {
    let (first, second, gw) = two_targets().await;
    for _ in 0..3 {
        let answer = gw.chat_ok(chat_body("chat", "hi")).await;
        assert_eq!(answer.header("x-proxima-provider"), Some("first"));
        assert_eq!(answer.header("x-proxima-attempts"), Some("1"));
    }
    assert_eq!(first.request_count(), 3);
    assert_eq!(second.request_count(), 0);
}

#[tokio::test]
async fn a_stream_whose_first_target_drops_the_connection_is_served_by_the_second() {
    let (first, second, gw) = two_targets().await;
    first.enqueue(Reply::drop_connection());

    let mut sse = gw
        .stream(stream_body("chat", "streamed after failover"))
        .await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("x-proxima-provider"), Some("second"));
    assert_eq!(sse.header("x-proxima-attempts"), Some("2"));
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "streamed after failover");
    assert_eq!(first.request_count(), 1);
    assert_eq!(second.request_count(), 1);
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_fails_over() {
    let (first, _second, gw) = two_targets().await;
    // Headers arrive, then the connection breaks before any event.
    first.enqueue(Reply::default_behaviour().cut_after(0));

    let mut sse = gw.stream(stream_body("chat", "second try")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("x-proxima-provider"), Some("second"));
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "second try");
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_upstream_error_fails_over() {
    let (first, second, gw) = two_targets().await;
    first.enqueue(Reply::sse(vec![serde_json::json!({
        "error": {"message": "first target overloaded", "type": "server_error"}
    })
    .to_string()]));

    let mut sse = gw.stream(stream_body("chat", "served by second")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("x-proxima-provider"), Some("second"));
    assert_eq!(sse.header("x-proxima-attempts"), Some("2"));
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "served by second");
    assert_eq!(second.request_count(), 1);
    assert_eq!(first.request_count(), 1);
}

#[tokio::test]
async fn a_stream_failing_with_an_error_event_on_every_attempt_is_502_with_its_message() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model_with(&mock, "retries = 0")).await;
    mock.enqueue(Reply::sse(vec![serde_json::json!({
        "error": {"message": "model overloaded, try later", "type": "server_error"}
    })
    .to_string()]));
    let answer = gw.chat(stream_body("chat", "x")).await;
    let error = answer.assert_error(502, "upstream_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("model overloaded, try later"),
        "{error}"
    );
}

#[tokio::test]
async fn an_upstream_400_is_not_retried_and_keeps_its_status_and_message() {
    let (first, second, gw) = two_targets().await;
    first.enqueue(Reply::error(
        400,
        "Invalid value for 'temperature': too hot",
    ));

    let answer = gw.chat(chat_body("chat", "bad")).await;
    let error = answer.assert_error(400, "invalid_request");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Invalid value for 'temperature': too hot"),
        "{error}"
    );
    assert_eq!(answer.header("x-proxima-attempts"), Some("1"));
    assert_eq!(first.request_count(), 1);
    assert_eq!(
        second.request_count(),
        0,
        "a 400 must not be retried elsewhere"
    );
}

#[tokio::test]
async fn an_upstream_429_on_the_only_target_gives_429_with_retry_after() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model_with(&mock, "retries = 0")).await;
    mock.enqueue(Reply::error(429, "Rate limit reached for requests").header("retry-after", "7"));

    let answer = gw.chat(chat_body("chat", "hi")).await;
    let error = answer.assert_error(429, "rate_limit_exceeded");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("Rate limit reached"));
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("1"));
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn retries_on_one_target_recover_from_a_transient_503() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model_with(&mock, "retries = 2")).await;
    mock.enqueue(Reply::error(503, "overloaded"));
    mock.enqueue(Reply::error(503, "overloaded"));

    let answer = gw.chat_ok(chat_body("chat", "third time lucky")).await;
    assert_eq!(answer.content(), "third time lucky");
    assert_eq!(answer.header("x-proxima-attempts"), Some("3"));
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn fallback_model_serves_when_every_target_failed() {
    let main = MockUpstream::start().await.unwrap();
    let backup = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .openai("main", &main)
            .openai("backup", &backup)
            .model_with(
                "chat",
                "main",
                "big",
                "retries = 0\nfallbacks = [\"spare\"]",
            )
            .model("spare", "backup", "small"),
    )
    .await;
    main.enqueue(Reply::error(502, "bad gateway upstream"));

    let answer = gw.chat_ok(chat_body("chat", "via fallback")).await;
    assert_eq!(answer.content(), "via fallback");
    assert_eq!(answer.header("x-proxima-provider"), Some("backup"));
    assert_eq!(answer.header("x-proxima-model"), Some("small"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
}

#[tokio::test]
async fn fallback_models_come_after_every_target_of_the_model() {
    let (first, second, spare) = (
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
        MockUpstream::start().await.unwrap(),
    );
    let gw = Gateway::start(
        Conf::new()
            .openai("first", &first)
            .openai("second", &second)
            .openai("spare", &spare)
            .section(
                "[models.chat]\nstrategy = \"priority\"\nretries = 0\nfallbacks = [\"backup\"]\ntargets = [\n  { provider = \"first\", model = \"m\" },\n  { provider = \"second\", model = \"m\" },\n]\n",
            )
            .model_with("backup", "spare", "small", "retries = 0"),
    )
    .await;
    first.enqueue(Reply::error(500, "first is down"));
    second.enqueue(Reply::error(502, "second is down"));

    let answer = gw.chat_ok(chat_body("chat", "third in line")).await;
    assert_eq!(answer.content(), "third in line");
    assert_eq!(answer.header("x-proxima-provider"), Some("spare"));
    assert_eq!(answer.header("x-proxima-model"), Some("small"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("3"));
    assert_eq!(
        (
            first.request_count(),
            second.request_count(),
            spare.request_count()
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn round_robin_alternates_between_targets() {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new().openai("a", &a).openai("b", &b).section(
            "[models.chat]\nstrategy = \"round-robin\"\ntargets = [\n  { provider = \"a\", model = \"ma\" },\n  { provider = \"b\", model = \"mb\" },\n]\n",
        ),
    )
    .await;
    let mut providers = Vec::new();
    for _ in 0..4 {
        let answer = gw.chat_ok(chat_body("chat", "hi")).await;
        providers.push(answer.header("x-proxima-provider").unwrap().to_owned());
    }
    assert_ne!(providers[0], providers[1], "{providers:?}");
    assert_eq!(providers[0], providers[2], "{providers:?}");
    assert_eq!(providers[1], providers[3], "{providers:?}");
    assert_eq!(a.request_count(), 2);
    assert_eq!(b.request_count(), 2);
}

#[tokio::test]
async fn weighted_never_picks_a_zero_weight_target() {
    let live = MockUpstream::start().await.unwrap();
    let idle = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new().openai("live", &live).openai("idle", &idle).section(
            "[models.chat]\nstrategy = \"weighted\"\ntargets = [\n  { provider = \"idle\", model = \"m\", weight = 0 },\n  { provider = \"live\", model = \"m\", weight = 5 },\n]\n",
        ),
    )
    .await;
    for _ in 0..10 {
        gw.chat_ok(chat_body("chat", "hi")).await;
    }
    assert_eq!(live.request_count(), 10);
    assert_eq!(idle.request_count(), 0);
}

#[tokio::test]
async fn a_retry_after_429_waits_as_long_as_the_upstream_asked() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model_with(&mock, "retries = 1")).await;
    mock.enqueue(Reply::error(429, "slow down").header("retry-after", "1"));
    let started = tokio::time::Instant::now();
    let answer = gw.chat_ok(chat_body("chat", "patient")).await;
    assert_eq!(answer.content(), "patient");
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1000),
        "retried after {:?}, before the upstream's retry-after",
        started.elapsed()
    );
}

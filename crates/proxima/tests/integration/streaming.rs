//! Streaming chat completions: SSE framing, reassembly, usage, incremental delivery, and what
//! happens when the upstream or the client goes away mid-stream.

use std::time::Duration;
use tokio::time::Instant;

use mock_upstream::{MockUpstream, Reply};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::harness::*;

#[tokio::test]
async fn stream_is_sse_ending_with_done_and_matches_the_complete_answer() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let text = "the quick brown fox jumps over the lazy dog";

    let mut sse = gw.stream(stream_body("chat", text)).await;
    assert_eq!(sse.status, 200);
    assert!(sse
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(sse.header("x-proxima-provider"), Some("up"));
    assert_eq!(sse.header("x-proxima-model"), Some("gpt-upstream"));
    assert_eq!(sse.header("x-proxima-attempts"), Some("1"));
    assert!(sse.header("x-request-id").is_some());
    let data = sse.data().await;
    assert!(!sse.broken, "the stream must end cleanly");
    let chunks = chunks_until_done(&data);
    assert!(chunks.len() >= 9, "one chunk per word at least: {data:?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
    }
    let streamed = streamed_content(&chunks, 0);

    let complete = gw.chat_ok(chat_body("chat", text)).await.content();
    assert_eq!(streamed, complete);
    assert_eq!(streamed, text);
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(|_| c))
        .collect();
    assert_eq!(finish.len(), 1, "one finish_reason: {data:?}");
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streamed_parallel_tool_calls_reassemble_to_the_complete_arguments() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let request = |stream: bool| {
        json!({
            "model": "chat",
            "messages": [user("weather and time in Lisbon, in parallel")],
            "tools": weather_tools(),
            "stream": stream,
        })
    };

    let complete = tool_calls(&gw.chat_ok(request(false)).await.json());
    assert_eq!(complete.len(), 2);

    let data = gw.stream(request(true)).await.data().await;
    let chunks = chunks_until_done(&data);
    let argument_pieces = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .is_some_and(|a| !a.is_empty())
        })
        .count();
    assert!(
        argument_pieces >= 10,
        "arguments must arrive split over many chunks, got {argument_pieces}"
    );
    let streamed = streamed_tool_calls(&chunks);
    assert_eq!(streamed, complete);
    let last_choice = chunks
        .iter()
        .rev()
        .find(|c| c["choices"][0]["finish_reason"].is_string())
        .expect("a finish chunk");
    assert_eq!(last_choice["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn include_usage_true_ends_with_a_usage_chunk_without_choices() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let mut body = stream_body("chat", "count these four words");
    body["stream_options"] = json!({"include_usage": true});

    let chunks = chunks_until_done(&gw.stream(body).await.data().await);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_eq!(last["usage"]["prompt_tokens"], 5);
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert_eq!(last["usage"]["total_tokens"], 9);
    let with_usage = chunks
        .iter()
        .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
        .count();
    assert_eq!(with_usage, 1, "usage only on the last chunk");
}

#[tokio::test]
async fn without_include_usage_no_usage_chunk_but_upstream_is_asked_for_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    for options in [None, Some(json!({"include_usage": false}))] {
        mock.clear();
        let mut body = stream_body("chat", "no usage for me");
        if let Some(options) = options.clone() {
            body["stream_options"] = options;
        }
        let chunks = chunks_until_done(&gw.stream(body).await.data().await);
        for chunk in &chunks {
            assert!(
                chunk.get("usage").is_none_or(Value::is_null),
                "no usage expected ({options:?}): {chunk}"
            );
            assert!(
                !chunk["choices"].as_array().unwrap().is_empty(),
                "no empty-choices chunk expected ({options:?}): {chunk}"
            );
        }
        assert_eq!(streamed_content(&chunks, 0), "no usage for me");
        let sent = mock.received()[0].json();
        assert_eq!(sent["stream"], true);
        assert_eq!(
            sent["stream_options"]["include_usage"], true,
            "the gateway must always ask upstream for usage: {sent}"
        );
    }
}

#[tokio::test]
async fn chunks_are_delivered_as_they_arrive_not_buffered() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let mut events: Vec<String> = ["a", " b", " c", " d"]
        .iter()
        .map(|c| openai_chunk(c))
        .collect();
    events.push(openai_finish_chunk());
    events.push("[DONE]".into());
    mock.enqueue(Reply::sse(events).chunk_delay(Duration::from_millis(300)));

    let started = Instant::now();
    let mut sse = gw.stream(stream_body("chat", "ignored")).await;
    let events = sse.collect_within(Duration::from_secs(10)).await;
    let data: Vec<&Event> = events.iter().filter(|e| e.data().is_some()).collect();
    assert_eq!(data.last().unwrap().data(), Some("[DONE]"));
    let first = data.first().unwrap().at - started;
    let last = data.last().unwrap().at - started;
    // Five gaps of 300 ms upstream: the last event comes ~1.5 s after the first.
    assert!(
        last >= first + Duration::from_millis(1000),
        "first event at {first:?}, last at {last:?}: the stream was buffered"
    );
    // Every event arrives on its own, spaced like the upstream sent them.
    let distinct: std::collections::BTreeSet<_> = data.iter().map(|e| e.at).collect();
    assert!(
        distinct.len() >= 5,
        "events arrived in {} bursts",
        distinct.len()
    );
}

#[tokio::test]
async fn mid_stream_cut_gives_an_error_event_and_no_done() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    mock.enqueue(Reply::default_behaviour().cut_after(3));

    let mut sse = gw
        .stream(stream_body("chat", "one two three four five six"))
        .await;
    assert_eq!(sse.status, 200);
    let data = tokio::time::timeout(Duration::from_secs(5), sse.data())
        .await
        .expect("the stream must end, not hang");
    assert!(!data.iter().any(|d| d == "[DONE]"), "no [DONE]: {data:?}");
    assert!(data.len() >= 2, "{data:?}");
    let (error, before) = data.split_last().unwrap();
    for chunk in before {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let partial = streamed_content(
        &before
            .iter()
            .map(|c| serde_json::from_str(c).unwrap())
            .collect::<Vec<_>>(),
        0,
    );
    assert_eq!(partial, "one two", "the events before the cut get through");
    let error: Value = serde_json::from_str(error).expect("error event is JSON");
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("up"));
    assert!(sse.ended);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn an_upstream_error_event_mid_stream_reaches_the_client_with_its_message() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    // OpenAI reports failures after the headers as an event carrying an error object.
    mock.enqueue(Reply::sse(vec![
        openai_chunk("partial"),
        json!({"error": {"message": "The server had an error while processing your request", "type": "server_error"}})
            .to_string(),
    ]));

    let mut body = stream_body("chat", "x");
    body["stream_options"] = json!({"include_usage": true});
    let data = gw.stream(body).await.data().await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "no [DONE]: {data:?}");
    assert_eq!(data.len(), 2, "the partial chunk, then the error: {data:?}");
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "partial");
    let error: Value = serde_json::from_str(&data[1]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The server had an error while processing your request"),
        "the upstream's message must reach the client: {error}"
    );
}

#[tokio::test]
async fn upstream_silent_mid_stream_times_out_with_an_error_event() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .openai_with("up", &mock, "timeout = \"500ms\"")
            .model("chat", "up", "gpt-upstream"),
    )
    .await;
    mock.enqueue(
        Reply::sse(vec![
            openai_chunk("first"),
            openai_chunk(" second"),
            openai_finish_chunk(),
            "[DONE]".into(),
        ])
        .chunk_delay(Duration::from_secs(3)),
    );

    let started = Instant::now();
    let mut sse = gw.stream(stream_body("chat", "x")).await;
    let events = sse.collect_within(Duration::from_secs(4)).await;
    let data: Vec<&str> = events.iter().filter_map(Event::data).collect();
    assert_eq!(data.len(), 2, "{data:?}");
    let chunk: Value = serde_json::from_str(data[0]).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["content"], "first");
    let error: Value = serde_json::from_str(data[1]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout", "{error}");
    let error_at = events.last().unwrap().at - started;
    // 500 ms of silence is the limit; the upstream would have spoken again after 3 s.
    assert!(
        error_at < Duration::from_millis(2000),
        "error event only after {error_at:?}"
    );
}

/// A hand-written upstream that streams one event every 100 ms for 30 s and reports, through
/// the receiver, how long after its first byte the gateway's connection to it closed.
async fn slow_stream_upstream() -> (String, oneshot::Receiver<Option<Duration>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (report, closed) = oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (mut read, mut write) = socket.into_split();
        // Read the request head and body.
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let n = read.read(&mut tmp).await.unwrap();
            assert!(n > 0, "gateway closed before sending the request");
            buf.extend_from_slice(&tmp[..n]);
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= head_end + 4 + length {
                break;
            }
        }
        write
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let writer = async {
            for i in 0..300 {
                let event = format!("data: {}\n\n", openai_chunk(&format!("tick{i} ")));
                let frame = format!("{:x}\r\n{event}\r\n", event.len());
                if write.write_all(frame.as_bytes()).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        let eof = async {
            let mut byte = [0u8; 1];
            loop {
                match read.read(&mut byte).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let closed = tokio::select! {
            write_failed = writer => write_failed,
            () = eof => true,
        };
        let _ = report.send(closed.then(|| started.elapsed()));
    });
    (url, closed)
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_connection() {
    let (url, closed) = slow_stream_upstream().await;
    let gw = Gateway::start(Conf::new().section(&format!(
        "[providers.slow]\nkind = \"openai\"\nbase_url = \"{url}\"\n\n[models.chat]\ntargets = [{{ provider = \"slow\", model = \"m\" }}]\n"
    )))
    .await;

    let mut sse = gw.stream(stream_body("chat", "long story")).await;
    let first = tokio::time::timeout(Duration::from_secs(5), sse.next())
        .await
        .unwrap()
        .expect("a first event");
    assert!(first.data().unwrap().contains("tick0"));
    let dropped = Instant::now();
    drop(sse);

    let after = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the upstream connection stayed open after the client left")
        .unwrap();
    let after = after.expect("upstream saw no disconnect");
    assert!(
        after < Duration::from_secs(5),
        "closed {after:?} after the stream began"
    );
    assert!(dropped.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn long_silences_get_keep_alive_comments() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock).server("stream_keepalive = \"200ms\"")).await;
    mock.enqueue(
        Reply::sse(vec![
            openai_chunk("a"),
            openai_chunk(" b"),
            openai_finish_chunk(),
            "[DONE]".into(),
        ])
        .chunk_delay(Duration::from_millis(700)),
    );

    let mut sse = gw.stream(stream_body("chat", "x")).await;
    let events = sse.collect_within(Duration::from_secs(10)).await;
    let comments: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventKind::Comment("keep-alive".into()))
        .map(|(i, _)| i)
        .collect();
    // Three silences of 700 ms with a 200 ms keep-alive: three comments each, when not loaded.
    assert!(comments.len() >= 4, "keep-alive comments: {events:?}");
    let data: Vec<&str> = events.iter().filter_map(Event::data).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(streamed_content(&chunks, 0), "a b");
    // Comments fall between data events, not only at the start or end.
    let first_data = events.iter().position(|e| e.data().is_some()).unwrap();
    let last_data = events.iter().rposition(|e| e.data().is_some()).unwrap();
    assert!(comments.iter().any(|&i| i > first_data && i < last_data));
}

#[tokio::test]
async fn a_long_answer_streams_completely() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let text: String = (0..1000)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let data = gw.stream(stream_body("chat", &text)).await.data().await;
    let chunks = chunks_until_done(&data);
    assert!(chunks.len() > 1000);
    assert_eq!(streamed_content(&chunks, 0), text);
    assert_eq!(gw.chat_ok(chat_body("chat", &text)).await.content(), text);
}

#[tokio::test]
async fn streams_and_answers_work_over_http2_cleartext() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let mut sse = gw
        .stream_with(
            h2.post(gw.url("/v1/chat/completions")),
            stream_body("chat", "over h2c"),
        )
        .await;
    assert_eq!(sse.status, 200);
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "over h2c");
    let answer = gw
        .send(
            h2.post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(chat_body("chat", "plain h2c").to_string()),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content(), "plain h2c");
}

#[tokio::test]
async fn many_concurrent_streams_all_complete() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let url = gw.url("/v1/chat/completions");
    let client = gw.client().clone();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (url, client) = (url.clone(), client.clone());
            tokio::spawn(async move {
                let text = format!("stream number {i} says hello");
                let body = stream_body("chat", &text).to_string();
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (text, response.text().await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let (text, body) = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap();
        let data: Vec<String> = body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
            .collect();
        assert_eq!(streamed_content(&chunks_until_done(&data), 0), text);
    }
}

#[tokio::test]
async fn an_upstream_that_omits_done_after_finishing_still_ends_with_done() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    // Some OpenAI-compatible servers end the body after the finish chunk, without [DONE].
    mock.enqueue(Reply::sse(vec![
        openai_chunk("all"),
        openai_chunk(" there"),
        openai_finish_chunk(),
    ]));
    let mut sse = gw.stream(stream_body("chat", "x")).await;
    let chunks = chunks_until_done(&sse.data().await);
    assert_eq!(streamed_content(&chunks, 0), "all there");
}

#[tokio::test]
async fn a_stream_the_cache_keeps_goes_as_the_upstream_wrote_it_and_is_replayed_whole() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock).section("[cache]\nexact = { ttl = \"1h\" }\n")).await;
    let events = vec![
        r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","x_ext":1,"choices":[{"index":0,"delta":{"role":"assistant","content":"kept "},"logprobs":null,"finish_reason":null}]}"#.to_owned(),
        r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","x_ext":2,"choices":[{"index":0,"delta":{"content":"whole"},"logprobs":null,"finish_reason":null}]}"#.to_owned(),
        r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned(),
        r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#.to_owned(),
    ];
    mock.enqueue(Reply::sse(events.clone()));

    // The fill reads every chunk whole but changes none: they go as they came.
    let mut first = gw.stream(stream_body("chat", "x")).await;
    assert_eq!(first.header("x-proxima-cache"), Some("miss"));
    let data = first.data().await;
    assert_eq!(data[..3], events[..3], "{data:?}");
    assert_eq!(data[3..], ["[DONE]"], "usage was not asked for: {data:?}");

    // The answer kept is the whole text, replayed.
    let mut again = gw.stream(stream_body("chat", "x")).await;
    assert_eq!(again.header("x-proxima-cache"), Some("hit"));
    let replayed = chunks_until_done(&again.data().await);
    assert_eq!(streamed_content(&replayed, 0), "kept whole");
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn openai_stream_events_reach_an_openai_client_as_the_upstream_wrote_them() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    // The usage comes with the last choice, as some compatible servers send it.
    let events = vec![
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"two "},"logprobs":null,"finish_reason":null}]}"#.to_owned(),
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-upstream","choices":[{"index":0,"delta":{"content":"words"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#.to_owned(),
    ];

    for include_usage in [false, true] {
        mock.enqueue(Reply::sse(events.clone()));
        let mut body = stream_body("chat", "x");
        body["stream_options"] = json!({ "include_usage": include_usage });
        let data = gw.stream(body).await.data().await;
        assert_eq!(data.len(), 3, "{data:?}");
        assert_eq!(data[0], events[0], "a chunk nothing reads goes as it came");
        assert_eq!(data[2], "[DONE]");
        let last: Value = serde_json::from_str(&data[1]).unwrap();
        assert_eq!(last["choices"][0]["delta"]["content"], "words", "{last}");
        assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
        if include_usage {
            assert_eq!(last["usage"]["total_tokens"], 5, "{last}");
        } else {
            assert!(
                last.get("usage").is_none_or(Value::is_null),
                "not asked for: {last}"
            );
        }
    }
}

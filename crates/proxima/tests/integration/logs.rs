//! What the gateway's own log tells an operator about a request.

use crate::harness::*;

/// `proxima serve` in its own process on a config of `[server]` and `rest`, and one chat
/// call to it (with `x-request-id: request_id`).
async fn serve_and_chat(rest: &str, request_id: &str) -> (Served, Answer) {
    let config = temp_file(
        "logs.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{rest}"),
    );
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let served = Served::start(command);
    let answer = Answer::read(
        http_client()
            .post(served.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-request-id", request_id)
            .body(chat_body("chat", "hi").to_string()),
    )
    .await;
    (served, answer)
}

#[tokio::test]
async fn every_log_line_of_a_request_names_its_request_id() {
    // A provider nobody listens on: the attempt fails and the router logs why.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let (served, answer) = serve_and_chat(
        &format!(
            "[providers.gone]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\n\
             [models.chat]\nretries = 0\ntargets = [{{ provider = \"gone\", model = \"m\" }}]\n"
        ),
        "req-log-span-7f3a",
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let log = served.stop();
    let failure = log
        .lines()
        .find(|line| line.contains("gone") && line.contains("WARN"))
        .unwrap_or_else(|| panic!("no failure line for provider `gone`:\n{log}"));
    assert!(
        failure.contains("req-log-span-7f3a"),
        "the router's failure line names the request: {failure}"
    );
}

/// The tokenizer is readied (its pattern compiled) only when something counts tokens — here a
/// model's `tpm` — and never for a gateway without token limits.
#[tokio::test]
async fn the_tokenizer_loads_only_for_a_gateway_that_counts_tokens() {
    let mock = mock_upstream::MockUpstream::start().await.unwrap();
    for (limits, loads) in [("", false), ("tpm = 1000000\n", true)] {
        let (served, answer) = serve_and_chat(
            &format!(
                "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
                 [models.chat]\n{limits}targets = [{{ provider = \"up\", model = \"m\" }}]\n",
                mock.url()
            ),
            "req-tokenizer",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        // Readying takes milliseconds in the background.
        tokio::time::sleep(std::time::Duration::from_millis(if loads {
            1500
        } else {
            300
        }))
        .await;
        let log = served.stop();
        assert_eq!(
            log.contains("tokenizer loaded"),
            loads,
            "with `{limits}`:\n{log}"
        );
    }
}

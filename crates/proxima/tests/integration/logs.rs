//! What the gateway's own log tells an operator about a request.

use crate::harness::*;

#[tokio::test]
async fn every_log_line_of_a_request_names_its_request_id() {
    // A provider nobody listens on: the attempt fails and the router logs why.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let config = temp_file(
        "logs.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [providers.gone]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\n\
             [models.chat]\nretries = 0\ntargets = [{{ provider = \"gone\", model = \"m\" }}]\n"
        ),
    );
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let served = Served::start(command);
    let answer = Answer::read(
        http_client()
            .post(served.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-request-id", "req-log-span-7f3a")
            .body(chat_body("chat", "hi").to_string()),
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

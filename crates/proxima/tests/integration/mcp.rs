//! `/mcp` at the protocol level: sessions, version negotiation, the gateway's own tools over
//! the caller's data only, upstream MCP servers re-exposed as `NAME__TOOL` with their own
//! credentials (never the caller's key), `mcp_tools` filtering listing and calling, JSON-RPC
//! errors, and every tool call in `/admin/logs`.

use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::files::upload_ok;
use crate::harness::*;

const MASTER: &str = "sk-master-mcp-0123456789";
const ALICE: &str = "sk-alice-mcp-red-0123456789";
const BOB: &str = "sk-bob-mcp-blue-0123456789";
const LIMITED: &str = "sk-limited-mcp-0123456789";
const UPSTREAM_TOKEN: &str = "Bearer mcp-upstream-token-5d2e";

/// Keys in two teams and one limited to the upstream's tools; the mock as embedder; the mock's
/// MCP server as `up`, and a server nobody listens on as `gone`.
fn conf(mock: &MockUpstream) -> Conf {
    let gone = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    Conf::new().server(&format!("master_key = \"{MASTER}\"")).section(&format!(
        "[keys.alice]\nkey = \"{ALICE}\"\nteam = \"red\"\n\n\
         [keys.bob]\nkey = \"{BOB}\"\nteam = \"blue\"\n\n\
         [keys.limited]\nkey = \"{LIMITED}\"\nmcp_tools = [\"up__*\"]\n\n\
         [providers.m]\nkind = \"mock\"\n\n\
         [models.embed]\ntargets = [{{ provider = \"m\", model = \"mock-embed\" }}]\n\n\
         [context]\nembedding_model = \"embed\"\n\n\
         [mcp.servers.up]\nurl = \"{}/mcp\"\nheaders = {{ authorization = \"{UPSTREAM_TOKEN}\" }}\n\n\
         [mcp.servers.gone]\nurl = \"http://127.0.0.1:{gone}/mcp\"\ntimeout = \"2s\"\n",
        mock.url()
    ))
}

/// An MCP client speaking JSON-RPC over HTTP with one key.
struct Client<'a> {
    gw: &'a Gateway,
    key: String,
    session: Option<String>,
    next_id: u64,
}

impl<'a> Client<'a> {
    fn new(gw: &'a Gateway, key: &str) -> Client<'a> {
        Client {
            gw,
            key: key.to_owned(),
            session: None,
            next_id: 1,
        }
    }

    /// POSTs `body` as it is, with the session once there is one.
    async fn post(&self, body: &str) -> Answer {
        let mut request = self
            .gw
            .request_as(&self.key, Method::POST, "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_owned());
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        self.gw.send(request).await
    }

    /// Initializes, asking for `version`; returns the result.
    async fn initialize(&mut self, version: &str) -> Value {
        let answer = self
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}})
                .to_string(),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        self.session = Some(
            answer
                .header("mcp-session-id")
                .expect("a session id")
                .to_owned(),
        );
        let initialized = self
            .post(r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#)
            .await;
        assert_eq!(initialized.status, 202, "{}", initialized.text());
        assert!(initialized.body.is_empty());
        answer.json()["result"].clone()
    }

    /// Sends request `method`; the whole JSON-RPC answer.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let answer = self
            .post(
                &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
                    .to_string(),
            )
            .await;
        assert_eq!(answer.status, 200, "{method}: {}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{method}"
        );
        let body = answer.json();
        assert_eq!(body["id"], id, "{body}");
        body
    }

    /// The names `tools/list` shows.
    async fn tool_names(&mut self) -> Vec<String> {
        let answer = self.request("tools/list", json!({})).await;
        answer["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools: {answer}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }
}

/// The text of a tool result's first content block.
fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_owned()
}

#[tokio::test]
async fn a_client_lists_and_calls_own_and_upstream_tools() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    let mut client = Client::new(&gw, ALICE);
    let init = client.initialize("2025-06-18").await;
    assert_eq!(init["protocolVersion"], "2025-06-18");
    assert_eq!(init["serverInfo"]["name"], "proxima");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert_eq!(client.request("ping", json!({})).await["result"], json!({}));

    // Own tools first, then the upstream's from both of its pages; the unreachable server's
    // tools are left out and the list still answers.
    let names = client.tool_names().await;
    assert_eq!(
        names,
        [
            "vector_store_search",
            "conversation_items",
            "up__echo",
            "up__add",
            "up__fail"
        ],
        "{names:?}"
    );
    let listed = client.request("tools/list", json!({})).await;
    let search = &listed["result"]["tools"][0];
    assert_eq!(search["inputSchema"]["type"], "object");
    assert_eq!(
        search["inputSchema"]["required"],
        json!(["vector_store_id", "query"])
    );
    assert_eq!(
        search["inputSchema"]["properties"]["max_num_results"]["type"],
        "integer"
    );
    assert_eq!(
        listed["result"]["tools"][3]["inputSchema"]["required"],
        json!(["a", "b"]),
        "the upstream's schema as it gave it"
    );

    // Upstream calls (answered upstream as an event stream) come back as the tool gave them.
    let echoed = client
        .call("up__echo", json!({"text": "hello there"}))
        .await;
    assert_eq!(text(&echoed), "hello there");
    let added = client.call("up__add", json!({"a": 2, "b": 3})).await;
    assert_eq!(added["result"]["structuredContent"]["sum"], 5.0);
    let failed = client.call("up__fail", json!({})).await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    // Unknown tools, here and upstream, are JSON-RPC errors.
    for tool in ["up__nope", "nope", "gone__anything"] {
        let answer = client.call(tool, json!({})).await;
        assert!(answer["error"]["code"].is_i64(), "{tool}: {answer}");
        assert!(answer.get("result").is_none(), "{answer}");
    }
    assert_eq!(
        client.call("up__nope", json!({})).await["error"]["code"],
        -32602
    );
    let gone = client.call("gone__anything", json!({})).await;
    assert_eq!(gone["error"]["code"], -32603, "{gone}");
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{gone}"
    );
    // Bad arguments for an own tool are a protocol error too.
    let bad = client
        .call("vector_store_search", json!({"query": 3}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    // Unknown methods.
    let unknown = client.request("resources/list", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_transport_follows_streamable_http() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    let mut client = Client::new(&gw, ALICE);
    // Versions: as asked when spoken here, else the newest.
    assert_eq!(
        client.initialize("2025-03-26").await["protocolVersion"],
        "2025-03-26"
    );
    let old_session = client.session.clone();
    assert_eq!(
        client.initialize("2099-01-01").await["protocolVersion"],
        "2025-11-25"
    );
    assert_ne!(
        client.session, old_session,
        "each initialize opens a session"
    );

    // Malformed bodies are refused with HTTP 400 and a JSON-RPC error.
    for (body, code) in [
        ("{not json", -32700),
        ("", -32700),
        (r#"{"id": 1, "method": "ping"}"#, -32600),
        ("[]", -32600),
        (r#"{"jsonrpc": "2.0", "id": 1, "method": 7}"#, -32600),
    ] {
        let answer = client.post(body).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text());
        assert_eq!(answer.json()["error"]["code"], code, "{body}");
        assert_eq!(answer.json()["jsonrpc"], "2.0");
    }
    // A batch is answered as a batch.
    let batch = client
        .post(
            r#"[{"jsonrpc": "2.0", "id": "a", "method": "ping"},
                {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}},
                {"jsonrpc": "2.0", "id": "b", "method": "nope"}]"#,
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.text());
    let answers = batch.json();
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(answers[1]["error"]["code"], -32601);

    // A client that takes only an event stream gets the answer as one event.
    let events = gw
        .send(
            gw.post_as(
                ALICE,
                "/mcp",
                &json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
            )
            .header("accept", "text/event-stream")
            .header("mcp-session-id", client.session.as_deref().unwrap()),
        )
        .await;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let event = events.text();
    assert!(event.starts_with("event: message\ndata: "), "{event}");
    let data: Value = serde_json::from_str(
        event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["id"], 5);

    // Requests need the session: 400 without it, 404 with one unknown or another key's.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let without = gw.send(gw.post_as(ALICE, "/mcp", &ping)).await;
    assert_eq!(without.status, 400, "{}", without.text());
    let session = client.session.clone().unwrap();
    for (key, id) in [(ALICE, "mcp-made-up"), (BOB, session.as_str())] {
        let answer = gw
            .send(gw.post_as(key, "/mcp", &ping).header("mcp-session-id", id))
            .await;
        assert_eq!(answer.status, 404, "{key} {id}: {}", answer.text());
    }
    // An unknown protocol version header is refused.
    let versioned = gw
        .send(
            gw.post_as(ALICE, "/mcp", &ping)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "1999-12-31"),
        )
        .await;
    assert_eq!(versioned.status, 400, "{}", versioned.text());

    // No server-initiated stream: GET is 405. DELETE ends the session.
    let get = gw
        .send(
            gw.request_as(ALICE, Method::GET, "/mcp")
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &session),
        )
        .await;
    assert_eq!(get.status, 405);
    let delete = || {
        gw.send(
            gw.request_as(ALICE, Method::DELETE, "/mcp")
                .header("mcp-session-id", &session),
        )
    };
    assert_eq!(delete().await.status, 204);
    assert_eq!(delete().await.status, 404);
    let after = gw
        .send(
            gw.post_as(ALICE, "/mcp", &ping)
                .header("mcp-session-id", &session),
        )
        .await;
    assert_eq!(after.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_key_it_is_401() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}});
    // Refused in JSON-RPC's shape, as every answer of /mcp, with the SPEC code in `data`.
    let anonymous = gw.post_json("/mcp", &init).await;
    let wrong = gw
        .send(gw.post_as("sk-not-a-key-at-all-000000", "/mcp", &init))
        .await;
    for (answer, says) in [(anonymous, "no API key"), (wrong, "not valid")] {
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let body = answer.json();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["error"]["data"]["code"], "invalid_api_key", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    // x-api-key works like Bearer.
    let by_header = gw
        .send(
            gw.client()
                .post(gw.url("/mcp"))
                .header("x-api-key", ALICE)
                .header("content-type", "application/json")
                .body(init.to_string()),
        )
        .await;
    assert_eq!(by_header.status, 200, "{}", by_header.text());
    assert_eq!(mock.request_count(), 0, "nothing reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_gets_the_configured_credentials_and_never_the_callers_key() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    let mut client = Client::new(&gw, ALICE);
    client.initialize("2025-06-18").await;
    client.tool_names().await;
    assert_eq!(
        text(&client.call("up__echo", json!({"text": "x"})).await),
        "x"
    );
    let received: Vec<_> = mock
        .received()
        .into_iter()
        .filter(|r| r.path == "/mcp")
        .collect();
    let methods: Vec<String> = received
        .iter()
        .map(|r| r.json()["method"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/list",
            "tools/call"
        ],
        "one session, the list paged, the call"
    );
    for request in &received {
        assert_eq!(request.header("authorization"), Some(UPSTREAM_TOKEN));
        assert!(request.header("x-api-key").is_none());
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(ALICE),
                "the caller's key went upstream in {name}"
            );
        }
        assert!(!String::from_utf8_lossy(&request.body).contains(ALICE));
    }
    // After initialize, the session and the version agreed ride along.
    assert!(received[0].header("mcp-session-id").is_none());
    for request in &received[1..] {
        assert!(request
            .header("mcp-session-id")
            .unwrap()
            .starts_with("mock-mcp-session-"));
        assert_eq!(request.header("mcp-protocol-version"), Some("2025-11-25"));
    }
    // The list is kept: another caller's listing asks the upstream nothing.
    let before = mock.request_count();
    let mut bob = Client::new(&gw, BOB);
    bob.initialize("2025-06-18").await;
    assert!(bob.tool_names().await.contains(&"up__add".to_owned()));
    assert_eq!(mock.request_count(), before);
    gw.shutdown().await;
}

#[tokio::test]
async fn mcp_tools_globs_filter_listing_and_calling() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    // A static key limited to `up__*`.
    let mut limited = Client::new(&gw, LIMITED);
    limited.initialize("2025-06-18").await;
    assert_eq!(
        limited.tool_names().await,
        ["up__echo", "up__add", "up__fail"]
    );
    let hidden = limited
        .call("conversation_items", json!({"conversation_id": "conv_x"}))
        .await;
    assert_eq!(hidden["error"]["code"], -32602, "{hidden}");
    assert!(
        hidden["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown tool"),
        "as if unknown: {hidden}"
    );

    // A team and a virtual key made over the admin API: both globs apply.
    let team = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": "tools", "mcp_tools": ["up__*"]})),
        )
        .await;
    assert_eq!(team.status, 201, "{}", team.text());
    assert_eq!(team.json()["mcp_tools"], json!(["up__*"]));
    let (id, secret) = gw
        .create_key(
            MASTER,
            json!({"name": "adder", "team": "tools", "mcp_tools": ["*__add", "vector_store_search"]}),
        )
        .await;
    let mut adder = Client::new(&gw, &secret);
    adder.initialize("2025-06-18").await;
    assert_eq!(adder.tool_names().await, ["up__add"], "key ∩ team");
    assert_eq!(
        text(&adder.call("up__add", json!({"a": 1, "b": 1})).await),
        "2"
    );
    assert_eq!(
        adder.call("up__echo", json!({"text": "x"})).await["error"]["code"],
        -32602
    );
    assert_eq!(
        adder
            .call(
                "vector_store_search",
                json!({"vector_store_id": "vs_x", "query": "q"})
            )
            .await["error"]["code"],
        -32602,
        "allowed by the key, not by the team"
    );
    // Lifting the key's globs leaves the team's.
    let patched = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"mcp_tools": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        adder.tool_names().await,
        ["up__echo", "up__add", "up__fail"]
    );
    // Globs are checked, wherever they are given.
    let key = format!("/admin/keys/{id}");
    for (method, path, body) in [
        (
            Method::POST,
            "/admin/keys",
            json!({"name": "bad", "mcp_tools": [""]}),
        ),
        (
            Method::POST,
            "/admin/keys",
            json!({"name": "bad", "mcp_tools": ["up __x"]}),
        ),
        (
            Method::POST,
            "/admin/keys",
            json!({"name": "bad", "mcp_tools": "up__*"}),
        ),
        (Method::PATCH, key.as_str(), json!({"mcp_tools": ["a b"]})),
        (
            Method::POST,
            "/admin/teams",
            json!({"name": "bad", "mcp_tools": [""]}),
        ),
        (
            Method::PATCH,
            "/admin/teams/tools",
            json!({"mcp_tools": [" "]}),
        ),
    ] {
        let answer = gw.admin(MASTER, method, path, Some(&body)).await;
        let error = answer.assert_error(400, "invalid_request");
        assert_eq!(error["param"], "mcp_tools", "{path}: {error}");
    }
    gw.shutdown().await;
}

/// Waits until vector store `id` has no file in progress.
async fn settled(gw: &Gateway, key: &str, id: &str) {
    for _ in 0..200 {
        let store = gw
            .admin(key, Method::GET, &format!("/v1/vector_stores/{id}"), None)
            .await
            .json();
        if store["file_counts"]["in_progress"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ingestion did not finish");
}

#[tokio::test]
async fn own_tools_see_only_the_callers_data() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    // Alice's conversation and vector store.
    let conversation = gw
        .admin(
            ALICE,
            Method::POST,
            "/v1/conversations",
            Some(&json!({"items": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ]})),
        )
        .await;
    assert_eq!(conversation.status, 200, "{}", conversation.text());
    let conversation = conversation.json()["id"].as_str().unwrap().to_owned();
    let file = upload_ok(
        &gw,
        ALICE,
        "keys.txt",
        "assistants",
        b"The spare key to the archive room is kept in the blue Zanzibar box.",
    )
    .await;
    let store = gw
        .admin(
            ALICE,
            Method::POST,
            "/v1/vector_stores",
            Some(&json!({"name": "office", "file_ids": [file["id"]]})),
        )
        .await;
    assert_eq!(store.status, 200, "{}", store.text());
    let store = store.json()["id"].as_str().unwrap().to_owned();
    settled(&gw, ALICE, &store).await;

    let mut alice = Client::new(&gw, ALICE);
    alice.initialize("2025-06-18").await;
    let found = alice
        .call(
            "vector_store_search",
            json!({"vector_store_id": store, "query": "where is the spare key", "max_num_results": 3}),
        )
        .await;
    assert_eq!(found["result"]["isError"], false, "{found}");
    let results = &found["result"]["structuredContent"];
    assert_eq!(results["data"][0]["filename"], "keys.txt", "{results}");
    assert!(text(&found).contains("Zanzibar"), "{found}");

    let items = alice
        .call(
            "conversation_items",
            json!({"conversation_id": conversation, "limit": 2}),
        )
        .await;
    let page = &items["result"]["structuredContent"];
    let texts: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["first answer", "second question"],
        "the latest, oldest first: {page}"
    );
    assert_eq!(page["has_more"], true);

    // Bob is in another team: Alice's store and conversation do not exist for him.
    let mut bob = Client::new(&gw, BOB);
    bob.initialize("2025-06-18").await;
    for (tool, arguments) in [
        (
            "vector_store_search",
            json!({"vector_store_id": store, "query": "spare key"}),
        ),
        (
            "conversation_items",
            json!({"conversation_id": conversation}),
        ),
    ] {
        let answer = bob.call(tool, arguments).await;
        assert_eq!(answer["result"]["isError"], true, "{tool}: {answer}");
        let message = text(&answer);
        assert!(
            message.contains("no ") && !message.contains("Zanzibar"),
            "{tool}: {message}"
        );
    }
    // The 2025-03-26 revision has no structured content: the text carries the same JSON.
    let mut old = Client::new(&gw, ALICE);
    old.initialize("2025-03-26").await;
    let items = old
        .call(
            "conversation_items",
            json!({"conversation_id": conversation}),
        )
        .await;
    assert!(items["result"].get("structuredContent").is_none());
    let page: Value = serde_json::from_str(&text(&items)).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn every_tool_call_is_in_the_admin_logs() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(conf(&mock)).await;
    let mut alice = Client::new(&gw, ALICE);
    alice.initialize("2025-06-18").await;
    alice.call("up__echo", json!({"text": "logged"})).await;
    alice
        .call(
            "conversation_items",
            json!({"conversation_id": "conv_missing"}),
        )
        .await;
    let mut limited = Client::new(&gw, LIMITED);
    limited.initialize("2025-06-18").await;
    limited
        .call(
            "vector_store_search",
            json!({"vector_store_id": "vs_x", "query": "q"}),
        )
        .await;
    // Ledger rows are written in batches: wait for all three.
    let mut rows = Vec::new();
    for _ in 0..100 {
        let logs = gw.admin(MASTER, Method::GET, "/admin/logs", None).await;
        assert_eq!(logs.status, 200, "{}", logs.text());
        rows = logs.json()["data"].as_array().unwrap().clone();
        if rows.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = |model: &str| {
        rows.iter()
            .find(|r| r["model"] == model)
            .unwrap_or_else(|| panic!("no row for {model} in {rows:?}"))
            .clone()
    };
    let echo = row("mcp:up__echo");
    assert_eq!(echo["provider"], "up");
    assert_eq!(echo["upstream_model"], "echo");
    assert_eq!(echo["key_name"], "alice");
    assert_eq!(echo["team"], "red");
    assert_eq!(echo["status"], 200);
    assert!(echo["latency_ms"].is_i64());
    let items = row("mcp:conversation_items");
    assert_eq!(items["provider"], "proxima");
    assert_eq!(items["status"], 404);
    assert_eq!(items["error_code"], "not_found");
    let hidden = row("mcp:vector_store_search");
    assert_eq!(hidden["key_name"], "limited");
    assert_eq!(hidden["status"], 404);
    // The call log filters by tool like by model.
    let filtered = gw
        .admin(MASTER, Method::GET, "/admin/logs?model=mcp:up__echo", None)
        .await
        .json();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1, "{filtered}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_lists_the_servers_again_and_sessions_go_on() {
    let mock = MockUpstream::start().await.unwrap();
    let server = |name: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[keys.alice]\nkey = \"{ALICE}\"\n\n\
             [mcp.servers.{name}]\nurl = \"{}/mcp\"\n",
            mock.url()
        )
    };
    let path = temp_file("mcp-reload.toml", &server("up"));
    let gw = Gateway::start_file(&path).await;
    let mut alice = Client::new(&gw, ALICE);
    alice.initialize("2025-06-18").await;
    assert!(alice.tool_names().await.contains(&"up__echo".to_owned()));
    // The server is renamed in the file, which the gateway watches and reloads.
    std::fs::write(&path, server("tools")).unwrap();
    let mut names = Vec::new();
    for _ in 0..100 {
        names = alice.tool_names().await;
        if names.contains(&"tools__echo".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(names.contains(&"tools__echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("up__")), "{names:?}");
    assert_eq!(
        text(&alice.call("tools__echo", json!({"text": "after"})).await),
        "after"
    );
    gw.shutdown().await;
}

/// A stdio MCP server in Python: `shout`, `environment` (the names it was given) and `exit`.
const STDIO_SERVER: &str = r#"
import json, os, sys
print("ready", file=sys.stderr, flush=True)
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    method, params = message["method"], message.get("params") or {}
    tool = params.get("name")
    if method == "initialize":
        result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "py", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": name, "inputSchema": {"type": "object"}}
                            for name in ("shout", "environment", "exit")]}
    elif method == "tools/call" and tool == "shout":
        result = {"content": [{"type": "text", "text": params["arguments"]["text"].upper()}]}
    elif method == "tools/call" and tool == "environment":
        result = {"content": [{"type": "text", "text": " ".join(sorted(os.environ))}]}
    elif method == "tools/call" and tool == "exit":
        sys.exit(0)
    else:
        error = {"code": -32602, "message": "Unknown tool: %s" % tool}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
"#;

#[tokio::test]
async fn a_stdio_server_is_started_used_and_started_again() {
    let script = temp_file("mcp-server.py", STDIO_SERVER);
    let gw = Gateway::start(Conf::new().section(&format!(
        "[keys.alice]\nkey = \"{ALICE}\"\n\n\
         [mcp.servers.py]\ncommand = \"python3\"\nargs = [\"{}\"]\nenv = {{ MCP_TOKEN = \"t\" }}\ntimeout = \"10s\"\n",
        script.display()
    )))
    .await;
    let mut alice = Client::new(&gw, ALICE);
    alice.initialize("2025-06-18").await;
    let names = alice.tool_names().await;
    assert!(
        names.ends_with(&[
            "py__shout".into(),
            "py__environment".into(),
            "py__exit".into()
        ]),
        "{names:?}"
    );
    assert_eq!(
        text(&alice.call("py__shout", json!({"text": "quiet"})).await),
        "QUIET"
    );
    // PATH, HOME and its own env reach it; nothing else of the gateway's environment (cargo
    // runs this test with CARGO_* variables set).
    let environment = text(&alice.call("py__environment", json!({})).await);
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!environment.contains("CARGO_"), "{environment}");
    assert!(environment.contains("PATH"), "{environment}");
    assert!(environment.contains("MCP_TOKEN"), "{environment}");
    assert_eq!(
        alice.call("py__nope", json!({})).await["error"]["code"],
        -32602
    );
    // It exits mid-call: that call fails, the next starts it again.
    let exited = alice.call("py__exit", json!({})).await;
    assert_eq!(exited["error"]["code"], -32603, "{exited}");
    assert!(
        exited["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{exited}"
    );
    assert_eq!(
        text(&alice.call("py__shout", json!({"text": "again"})).await),
        "AGAIN"
    );
    gw.shutdown().await;
}

#[test]
fn proxima_keys_create_takes_mcp_tools() {
    let dir = temp_path("mcp-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = temp_file(
        "mcp-cli.toml",
        &format!(
            "[storage]\ndatabase = \"sqlite://{}\"\n",
            dir.join("keys.db").display()
        ),
    );
    let create = |globs: &str| {
        proxima()
            .args([
                "keys",
                "create",
                "--name",
                "bot",
                "--json",
                "--mcp-tools",
                globs,
                "--config",
            ])
            .arg(&path)
            .output()
            .unwrap()
    };
    let made = create("up__*,vector_store_search");
    assert!(made.status.success(), "{made:?}");
    let key: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(key["mcp_tools"], json!(["up__*", "vector_store_search"]));
    let refused = create("up __*");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--mcp-tools"));
}

#[tokio::test]
async fn a_server_too_slow_is_a_timeout_in_the_answer_and_the_log() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .server(&format!("master_key = \"{MASTER}\""))
            .section(&format!(
                "[keys.alice]\nkey = \"{ALICE}\"\n\n\
             [mcp.servers.slow]\nurl = \"{}/mcp\"\ntimeout = \"300ms\"\n",
                mock.url()
            )),
    )
    .await;
    let mut alice = Client::new(&gw, ALICE);
    alice.initialize("2025-06-18").await;
    assert!(alice.tool_names().await.contains(&"slow__echo".to_owned()));
    mock.enqueue(mock_upstream::Reply::hang());
    let started = tokio::time::Instant::now();
    let answer = alice.call("slow__echo", json!({"text": "x"})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{answer}"
    );
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = gw
            .admin(
                MASTER,
                Method::GET,
                "/admin/logs?model=mcp:slow__echo",
                None,
            )
            .await
            .json()["data"]
            .as_array()
            .unwrap()
            .clone();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows[0]["status"], 504, "{rows:?}");
    assert_eq!(rows[0]["error_code"], "upstream_timeout");
    // The next call is answered again.
    assert_eq!(
        text(&alice.call("slow__echo", json!({"text": "back"})).await),
        "back"
    );
    gw.shutdown().await;
}

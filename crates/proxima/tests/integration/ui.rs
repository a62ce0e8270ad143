//! The admin web UI at `/ui`, as a browser uses it: signing in with the master key or an
//! admin key (a user key refused), pages behind the session, CSRF tokens on every form, a key
//! made in the UI that works and is audited under the signed-in admin, requests shown on the
//! dashboard and in the logs, the playground streaming as the admin, a team's conversations
//! and vector stores browsed and searched, prompts saved, tried and deleted, the MCP page
//! showing servers, tools and tool calls, and user input escaped.

use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-ui-5c1e93b7d2";

async fn start(mock: &MockUpstream) -> Gateway {
    Gateway::start(one_model(mock).server(&format!("master_key = \"{MASTER}\""))).await
}

/// A browser without cookies of its own: redirects are not followed, so tests see them.
fn browser() -> reqwest::Client {
    let _ = http_client();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser session: its cookie and its CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(gw: &Gateway, key: &str) -> Answer {
    Answer::read(
        browser()
            .post(gw.url("/ui/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={key}")),
    )
    .await
}

async fn signed_in(gw: &Gateway, key: &str) -> Signed {
    let answer = sign_in(gw, key).await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    assert_eq!(answer.header("location"), Some("/ui/dashboard"));
    let set = answer.header("set-cookie").expect("a session cookie");
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = page(gw, &cookie, "/ui/dashboard").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    let csrf = text
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    Signed { cookie, csrf }
}

async fn page(gw: &Gateway, cookie: &str, path: &str) -> Answer {
    Answer::read(browser().get(gw.url(path)).header("cookie", cookie)).await
}

/// POSTs a form (`fields` URL-encoded) as `session`, with its CSRF token unless `csrf` is off.
async fn post_form(
    gw: &Gateway,
    session: &Signed,
    path: &str,
    fields: &[(&str, &str)],
    csrf: bool,
) -> Answer {
    let mut fields: Vec<(&str, &str)> = fields.to_vec();
    if csrf {
        fields.push(("csrf", &session.csrf));
    }
    Answer::read(
        browser()
            .post(gw.url(path))
            .header("cookie", &session.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&fields).unwrap()),
    )
    .await
}

const PAGES: [&str; 11] = [
    "/ui/dashboard",
    "/ui/models",
    "/ui/keys",
    "/ui/teams",
    "/ui/logs",
    "/ui/audit",
    "/ui/conversations",
    "/ui/vector-stores",
    "/ui/prompts",
    "/ui/mcp",
    "/ui/playground",
];

#[tokio::test]
async fn only_the_master_key_or_an_admin_key_signs_in() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;

    // Without a session every page sends the browser to sign in, and a form post is refused.
    for path in PAGES {
        let answer = page(&gw, "", path).await;
        assert_eq!(answer.status, 303, "{path}");
        assert_eq!(answer.header("location"), Some("/ui/sign-in"), "{path}");
    }
    let answer = Answer::read(browser().post(gw.url("/ui/keys")).body("name=x")).await;
    assert_eq!(answer.status, 401);
    let form = page(&gw, "", "/ui/sign-in").await;
    assert_eq!(form.status, 200);
    assert!(form.text().contains("type=\"password\""), "{}", form.text());

    // A user key and a bad key are refused with a message, and get no cookie.
    let (_, user) = gw.create_key(MASTER, json!({"name": "user"})).await;
    let refused = sign_in(&gw, &user).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("not an admin key"),
        "{}",
        refused.text()
    );
    assert!(refused.header("set-cookie").is_none());
    // A sign-in posted from another site's page is refused.
    let cross_site = Answer::read(
        browser()
            .post(gw.url("/ui/sign-in"))
            .header("origin", "https://evil.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={MASTER}")),
    )
    .await;
    assert_eq!(cross_site.status, 403);
    assert!(cross_site.header("set-cookie").is_none());
    let bad = sign_in(&gw, "sk-not-a-key").await;
    assert_eq!(bad.status, 401);
    assert!(bad.text().contains("not valid"), "{}", bad.text());

    // The master key signs in: the cookie is HttpOnly, SameSite=Strict, for /ui only, and
    // holds no key.
    let answer = sign_in(&gw, MASTER).await;
    let set = answer.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains(MASTER), "{set}");
    let master = signed_in(&gw, MASTER).await;
    for path in PAGES {
        let answer = page(&gw, &master.cookie, path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        assert!(answer.text().contains("Sign out"), "{path}");
        assert!(
            !answer.text().contains(MASTER),
            "{path} shows the master key"
        );
    }
    // A forged cookie is no session.
    let forged = master.cookie.replacen("6d6173746572", "6d6173746573", 1);
    assert_eq!(page(&gw, &forged, "/ui/keys").await.status, 303);

    // An admin key signs in too, until it is revoked.
    let (admin_id, admin) = gw
        .create_key(MASTER, json!({"name": "ops", "admin": true}))
        .await;
    let ops = signed_in(&gw, &admin).await;
    assert!(page(&gw, &ops.cookie, "/ui/keys")
        .await
        .text()
        .contains("ops"));
    let revoked = gw
        .admin(
            MASTER,
            Method::DELETE,
            &format!("/admin/keys/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(page(&gw, &ops.cookie, "/ui/keys").await.status, 303);

    // Signing out clears the cookie.
    let out = post_form(&gw, &master, "/ui/sign-out", &[], true).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn a_key_made_in_the_ui_works_and_is_audited_as_the_admin() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;

    // Without the CSRF token (or with another session's) nothing is made.
    let fields = [("name", "made-in-ui"), ("rpm", "100"), ("models", "chat")];
    let refused = post_form(&gw, &master, "/ui/keys", &fields, false).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let other = signed_in(&gw, MASTER).await;
    let stale = Signed {
        cookie: master.cookie.clone(),
        csrf: other.csrf.clone(),
    };
    assert_eq!(
        post_form(&gw, &stale, "/ui/keys", &fields, true)
            .await
            .status,
        403
    );
    let keys = gw.admin(MASTER, Method::GET, "/admin/keys", None).await;
    assert_eq!(keys.json()["data"].as_array().unwrap().len(), 0);

    // With it, the key is made and its secret shown, once.
    let made = post_form(&gw, &master, "/ui/keys", &fields, true).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let text = made.text();
    let secret = text
        .split("id=\"new-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new secret")
        .to_owned();
    assert!(text.contains("data-copy=\"new-secret\""), "a copy button");
    let chat = gw.chat_as(&secret, chat_body("chat", "hello")).await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let listed = page(&gw, &master.cookie, "/ui/keys").await.text();
    assert!(listed.contains("made-in-ui") && !listed.contains(&secret));

    // Its limits are what the form said; the audit log names the master as its maker.
    let keys = gw
        .admin(MASTER, Method::GET, "/admin/keys", None)
        .await
        .json();
    let key = &keys["data"][0];
    assert_eq!(
        (key["rpm"].clone(), key["models"].clone()),
        (json!(100), json!(["chat"]))
    );
    let id = key["id"].as_str().unwrap().to_owned();

    // Limits change and the key is revoked through the UI.
    let changed = post_form(
        &gw,
        &master,
        &format!("/ui/keys/{id}"),
        &[
            ("name", "made-in-ui"),
            ("rpm", ""),
            ("budget_usd", "5"),
            ("budget_period", "1d"),
        ],
        true,
    )
    .await;
    assert_eq!(changed.status, 303, "{}", changed.text());
    let key = gw
        .admin(MASTER, Method::GET, &format!("/admin/keys/{id}"), None)
        .await
        .json();
    assert_eq!(key["rpm"], Value::Null);
    assert_eq!(key["budget"], json!({"usd": 5.0, "period": "1d"}));
    // A bad value is shown on the page, and nothing changes.
    let bad = post_form(
        &gw,
        &master,
        &format!("/ui/keys/{id}"),
        &[("name", "made-in-ui"), ("models", "no-such-model")],
        true,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("no model named"), "{}", bad.text());
    let revoked = post_form(&gw, &master, &format!("/ui/keys/{id}/revoke"), &[], true).await;
    assert_eq!(revoked.status, 303);
    let chat = gw.chat_as(&secret, chat_body("chat", "hello")).await;
    assert_eq!(chat.status, 401);

    let audit = gw
        .admin(MASTER, Method::GET, "/admin/audit?action=key", None)
        .await
        .json();
    let actions: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor_id"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("key.create", "master", "ok"),
        ("key.update", "master", "ok"),
        ("key.update", "master", "error"),
        ("key.revoke", "master", "ok"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(actions, expected);
    let audit_page = page(&gw, &master.cookie, "/ui/audit").await.text();
    assert!(audit_page.contains("key.revoke"), "{audit_page}");
}

#[tokio::test]
async fn requests_show_on_the_dashboard_and_in_the_logs() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;
    let chat = gw.chat_as(MASTER, chat_body("chat", "hello")).await;
    assert_eq!(chat.status, 200);
    let request_id = chat.header("x-request-id").unwrap().to_owned();
    let store = gw.store().await;
    assert_ledger_rows(&store, 1, Duration::from_secs(10)).await;

    let logs = page(&gw, &master.cookie, "/ui/logs?model=chat&status=ok").await;
    assert_eq!(logs.status, 200);
    assert!(logs.text().contains(&request_id[..16]), "{}", logs.text());
    let none = page(&gw, &master.cookie, "/ui/logs?status=error")
        .await
        .text();
    assert!(none.contains("No requests match"), "{none}");
    let detail = page(&gw, &master.cookie, &format!("/ui/logs/{request_id}")).await;
    assert_eq!(detail.status, 200);
    let detail = detail.text();
    for fact in ["Attempts", "Tokens", "Cost", "gpt-upstream"] {
        assert!(detail.contains(fact), "{fact}: {detail}");
    }
    let unknown = page(&gw, &master.cookie, "/ui/logs/req-none").await;
    assert_eq!(unknown.status, 404);

    for window in ["1h", "24h", "7d"] {
        let dashboard = page(
            &gw,
            &master.cookie,
            &format!("/ui/dashboard?window={window}"),
        )
        .await;
        assert_eq!(dashboard.status, 200);
        let text = dashboard.text();
        assert_eq!(text.matches("<svg").count(), 5, "{text}");
        assert!(
            text.contains("<span class=\"value\">1</span><span class=\"label\">requests"),
            "{text}"
        );
    }
    let filtered = page(&gw, &master.cookie, "/ui/dashboard?model=other")
        .await
        .text();
    assert!(
        filtered.contains("<span class=\"value\">0</span><span class=\"label\">requests"),
        "{filtered}"
    );
    let bad = page(&gw, &master.cookie, "/ui/dashboard?window=1y").await;
    assert_eq!(bad.status, 400);

    let models = page(&gw, &master.cookie, "/ui/models").await.text();
    assert!(
        models.contains("gpt-upstream") && models.contains("closed"),
        "{models}"
    );
}

#[tokio::test]
async fn the_playground_streams_as_the_signed_in_admin() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;
    let request = || {
        browser()
            .post(gw.url("/ui/playground/chat"))
            .header("cookie", &master.cookie)
    };
    let refused = Answer::read(
        request()
            .header("content-type", "application/json")
            .body(stream_body("chat", "hi").to_string()),
    )
    .await;
    assert_eq!(refused.status, 403);
    let mut sse = gw
        .stream_with(
            request().header("x-csrf-token", &master.csrf),
            stream_body("chat", "hi"),
        )
        .await;
    assert_eq!(sse.status, 200);
    let chunks = chunks_until_done(&sse.data().await);
    assert!(!streamed_content(&chunks, 0).is_empty());

    let store = gw.store().await;
    assert_ledger_rows(&store, 1, Duration::from_secs(10)).await;
    let logs = gw
        .admin(MASTER, Method::GET, "/admin/logs", None)
        .await
        .json();
    let row = &logs["data"][0];
    assert_eq!(row["key_id"], "master");
    assert_eq!(row["stream"], true);
    assert_eq!(row["metadata"], r#"{"ui":"playground"}"#);
}

#[tokio::test]
async fn user_input_is_escaped_on_every_page() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;
    let evil = "<script>alert(1)</script>";
    let made = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": evil})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    gw.create_key(
        MASTER,
        json!({"name": "<img src=x onerror=alert(2)>", "team": evil}),
    )
    .await;
    // A failed change's message quotes the input: escaped too.
    let refused = post_form(
        &gw,
        &master,
        "/ui/teams",
        &[("name", evil), ("models", "<b>bold</b>")],
        true,
    )
    .await;
    assert_eq!(refused.status, 400);
    let teams_path = format!("/ui/teams/{}", "%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
    for path in [
        "/ui/teams",
        "/ui/keys",
        "/ui/dashboard",
        "/ui/audit",
        &teams_path,
    ] {
        let text = page(&gw, &master.cookie, path).await.text();
        assert!(!text.contains("<script>alert"), "{path}: {text}");
        assert!(!text.contains("<img src=x"), "{path}: {text}");
    }
    assert!(
        refused.text().contains("&lt;b&gt;bold&lt;/b&gt;"),
        "{}",
        refused.text()
    );
    let teams = page(&gw, &master.cookie, "/ui/teams").await.text();
    assert!(
        teams.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{teams}"
    );
}

#[tokio::test]
async fn a_teams_conversations_and_vector_stores_are_browsed_and_searched() {
    const ALICE: &str = "sk-alice-ui-red-0123456789";
    let gw = Gateway::start(
        Conf::new()
            .server(&format!("master_key = \"{MASTER}\""))
            .section(&format!(
                "[keys.alice]\nkey = \"{ALICE}\"\nteam = \"red\"\n\n\
             [providers.m]\nkind = \"mock\"\n\n\
             [models.embed]\ntargets = [{{ provider = \"m\", model = \"mock-embed\" }}]\n\n\
             [context]\nembedding_model = \"embed\"\n"
            )),
    )
    .await;
    let file = crate::files::upload_ok(
        &gw,
        ALICE,
        "facts.txt",
        "assistants",
        b"The launch code is PINEAPPLE-42. Lunch is at noon.",
    )
    .await;
    let store = gw
        .send(gw.post_as(
            ALICE,
            "/v1/vector_stores",
            &json!({"name": "launch <facts>", "file_ids": [file["id"]]}),
        ))
        .await;
    assert_eq!(store.status, 200, "{}", store.text());
    let store_id = store.json()["id"].as_str().unwrap().to_owned();
    let conversation = gw
        .send(gw.post_as(
            ALICE,
            "/v1/conversations",
            &json!({"items": [{"type": "message", "role": "user", "content": "remember <b>tulips</b>"}]}),
        ))
        .await;
    assert_eq!(conversation.status, 200, "{}", conversation.text());
    let conversation_id = conversation.json()["id"].as_str().unwrap().to_owned();
    let master = signed_in(&gw, MASTER).await;

    // The team is offered, and its conversation listed with its items, escaped.
    let list = page(&gw, &master.cookie, "/ui/conversations").await.text();
    assert!(list.contains("value=\"team:red\""), "{list}");
    assert!(list.contains(&conversation_id), "{list}");
    let path = format!("/ui/conversations/{conversation_id}?tenant=team%3Ared");
    let detail = page(&gw, &master.cookie, &path).await;
    assert_eq!(detail.status, 200, "{}", detail.text());
    assert!(
        detail.text().contains("remember &lt;b&gt;tulips&lt;/b&gt;"),
        "{}",
        detail.text()
    );
    // Another tenant has no such conversation.
    let path = format!("/ui/conversations/{conversation_id}?tenant=team%3Ablue");
    assert_eq!(page(&gw, &master.cookie, &path).await.status, 404);

    // The store is listed once ingested, and searched as the team.
    let settled = eventually(Duration::from_secs(10), || async {
        let store = gw
            .send(gw.request_as(ALICE, Method::GET, &format!("/v1/vector_stores/{store_id}")))
            .await;
        store.json()["file_counts"]["completed"] == 1
    })
    .await;
    assert!(settled.is_some(), "the file was not ingested");
    let listed = page(&gw, &master.cookie, "/ui/vector-stores?tenant=team%3Ared")
        .await
        .text();
    assert!(listed.contains("launch &lt;facts&gt;"), "{listed}");
    let path = format!("/ui/vector-stores/{store_id}?tenant=team%3Ared&q=launch+code");
    let searched = page(&gw, &master.cookie, &path).await;
    assert_eq!(searched.status, 200, "{}", searched.text());
    let text = searched.text();
    assert!(
        text.contains("PINEAPPLE-42") && text.contains("facts.txt"),
        "{text}"
    );
    assert!(text.contains("completed"), "{text}");
    let path = format!("/ui/vector-stores/{store_id}?tenant=team%3Ablue&q=launch");
    assert_eq!(page(&gw, &master.cookie, &path).await.status, 404);
}

#[tokio::test]
async fn teams_are_made_changed_and_deleted_in_the_ui() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;
    let made = post_form(
        &gw,
        &master,
        "/ui/teams",
        &[
            ("name", "data science"),
            ("tpm", "5000"),
            ("models", "chat"),
        ],
        true,
    )
    .await;
    assert_eq!(made.status, 303, "{}", made.text());
    assert_eq!(made.header("location"), Some("/ui/teams/data%20science"));
    let team = gw
        .admin(MASTER, Method::GET, "/admin/teams/data%20science", None)
        .await
        .json();
    assert_eq!(
        (team["tpm"].clone(), team["models"].clone()),
        (json!(5000), json!(["chat"]))
    );
    let shown = page(&gw, &master.cookie, "/ui/teams/data%20science").await;
    assert_eq!(shown.status, 200);
    assert!(shown.text().contains("value=\"5000\""), "{}", shown.text());

    // Emptied fields clear the limits.
    let changed = post_form(
        &gw,
        &master,
        "/ui/teams/data%20science",
        &[
            ("tpm", ""),
            ("models", ""),
            ("budget_usd", "20"),
            ("budget_period", "1mo"),
        ],
        true,
    )
    .await;
    assert_eq!(changed.status, 303, "{}", changed.text());
    let team = gw
        .admin(MASTER, Method::GET, "/admin/teams/data%20science", None)
        .await
        .json();
    assert_eq!(team["tpm"], Value::Null);
    assert_eq!(team["models"], Value::Null);
    assert_eq!(team["budget"], json!({"usd": 20.0, "period": "1mo"}));
    let bad = post_form(
        &gw,
        &master,
        "/ui/teams/data%20science",
        &[("rpm", "lots")],
        true,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("rpm must be a whole number"),
        "{}",
        bad.text()
    );

    let deleted = post_form(&gw, &master, "/ui/teams/data%20science/delete", &[], true).await;
    assert_eq!(deleted.status, 303);
    let gone = gw
        .admin(MASTER, Method::GET, "/admin/teams/data%20science", None)
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        page(&gw, &master.cookie, "/ui/teams/data%20science")
            .await
            .status,
        404
    );
    let audit = gw
        .admin(MASTER, Method::GET, "/admin/audit?action=team", None)
        .await
        .json();
    assert_eq!(audit["data"].as_array().unwrap().len(), 3, "{audit}");
}

/// The latest call-log rows, once at least `n` are written (they are written in batches).
async fn logged(gw: &Gateway, query: &str, n: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    for _ in 0..100 {
        let logs = gw.admin(MASTER, Method::GET, query, None).await;
        assert_eq!(logs.status, 200, "{}", logs.text());
        rows = logs.json()["data"].as_array().unwrap().clone();
        if rows.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rows
}

#[tokio::test]
async fn prompts_are_saved_tried_and_deleted_in_the_ui() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock).await;
    let master = signed_in(&gw, MASTER).await;

    // A text template saved through the form is version 1 in the admin API, audited as the
    // signed-in admin.
    let saved = post_form(
        &gw,
        &master,
        "/ui/prompts",
        &[
            ("name", "greet"),
            ("model", "chat"),
            ("kind", "text"),
            ("template", "Say hello to {{who}}.\r\nBriefly."),
            ("parameters", r#"{"temperature": 0.2}"#),
        ],
        true,
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text());
    assert_eq!(saved.header("location"), Some("/ui/prompts/greet"));
    let prompt = gw
        .admin(MASTER, Method::GET, "/admin/prompts/greet", None)
        .await
        .json();
    assert_eq!(prompt["version"], 1);
    assert_eq!(prompt["template"], "Say hello to {{who}}.\nBriefly.");
    assert_eq!(prompt["parameters"], json!({"temperature": 0.2}));
    assert_eq!(prompt["variables"], json!(["who"]));

    // A new version from the prompt's page, as messages.
    let messages = r#"[{"role": "system", "content": "Be kind to <{{who}}>."}, {"role": "user", "content": "Hi {{who}}, about {{topic}}"}]"#;
    let next = post_form(
        &gw,
        &master,
        "/ui/prompts/greet",
        &[
            ("model", "chat"),
            ("kind", "messages"),
            ("template", messages),
        ],
        true,
    )
    .await;
    assert_eq!(next.status, 303, "{}", next.text());
    let prompt = gw
        .admin(MASTER, Method::GET, "/admin/prompts/greet", None)
        .await
        .json();
    assert_eq!(prompt["version"], 2);
    assert_eq!(prompt["template"][1]["role"], "user");
    assert_eq!(prompt["versions"].as_array().unwrap().len(), 2);

    // The list and the prompt's page show it: every version, one field per variable, the
    // template's text escaped.
    let list = page(&gw, &master.cookie, "/ui/prompts").await.text();
    assert!(list.contains("href=\"/ui/prompts/greet\""), "{list}");
    let shown = page(&gw, &master.cookie, "/ui/prompts/greet").await;
    assert_eq!(shown.status, 200);
    let text = shown.text();
    for fact in [
        "Version 1",
        "Version 2",
        "data-variable=\"who\"",
        "data-variable=\"topic\"",
        "Be kind to &lt;{{who}}&gt;.",
    ] {
        assert!(text.contains(fact), "{fact}: {text}");
    }
    assert_eq!(
        page(&gw, &master.cookie, "/ui/prompts/nope").await.status,
        404
    );

    // Bad input is refused with the API's own messages, quoted escaped, and nothing saved.
    for (fields, says) in [
        (
            vec![
                ("name", "bad"),
                ("kind", "text"),
                ("template", "Hello {{name"),
            ],
            "never closed",
        ),
        (
            vec![
                ("name", "bad"),
                ("kind", "text"),
                ("template", "Hi {{<img src=x>}}"),
            ],
            "`{{&lt;img src=x&gt;}}` is not a variable",
        ),
        (
            vec![
                ("name", "bad"),
                ("kind", "messages"),
                ("template", "[{\"role\": "),
            ],
            "not valid JSON",
        ),
        (
            vec![
                ("name", "bad"),
                ("kind", "messages"),
                ("template", r#"[{"role": "tool", "content": "x"}]"#),
            ],
            "not a chat role",
        ),
        (
            vec![
                ("name", "bad"),
                ("kind", "text"),
                ("template", "x"),
                ("parameters", "[1]"),
            ],
            "not a JSON object",
        ),
        (
            vec![
                ("name", "bad"),
                ("kind", "text"),
                ("template", "x"),
                ("parameters", r#"{"temperature": "hot"}"#),
            ],
            "do not make a valid chat request",
        ),
        (
            vec![
                ("name", "bad"),
                ("model", "no-such-model"),
                ("kind", "text"),
                ("template", "x"),
            ],
            "no model named",
        ),
        (
            vec![
                ("name", "bad name!"),
                ("model", "chat"),
                ("kind", "text"),
                ("template", "x"),
            ],
            "is not allowed",
        ),
    ] {
        let mut fields = fields;
        if !fields.iter().any(|(k, _)| *k == "model") {
            fields.push(("model", "chat"));
        }
        let refused = post_form(&gw, &master, "/ui/prompts", &fields, true).await;
        assert_eq!(refused.status, 400, "{fields:?}: {}", refused.text());
        let text = refused.text();
        assert!(text.contains(says), "{says}: {text}");
        assert!(!text.contains("<img src=x"), "{text}");
    }
    // The refused template stays in the form to fix.
    let refused = post_form(
        &gw,
        &master,
        "/ui/prompts",
        &[
            ("name", "bad"),
            ("model", "chat"),
            ("kind", "text"),
            ("template", "Hello {{name"),
        ],
        true,
    )
    .await;
    assert!(
        refused.text().contains(">Hello {{name</textarea>"),
        "{}",
        refused.text()
    );
    let bad = gw
        .admin(MASTER, Method::GET, "/admin/prompts/bad", None)
        .await;
    assert_eq!(bad.status, 404);

    // Try it: without the CSRF token nothing runs; with it the prompt runs as the admin, the
    // answer streamed, and its ledger row names the prompt and version.
    let run = || {
        browser()
            .post(gw.url("/ui/prompts/greet/run"))
            .header("cookie", &master.cookie)
    };
    let body =
        json!({"variables": {"who": "Ada", "topic": "engines"}, "version": 1, "stream": true});
    let refused = Answer::read(
        run()
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(refused.status, 403);
    let mut sse = gw
        .stream_with(run().header("x-csrf-token", &master.csrf), body)
        .await;
    assert_eq!(sse.status, 200);
    let chunks = chunks_until_done(&sse.data().await);
    assert!(!streamed_content(&chunks, 0).is_empty());
    let sent = mock.received();
    let last = sent.last().expect("the run reached the upstream").json();
    assert_eq!(
        last["messages"][0]["content"],
        "Say hello to Ada.\nBriefly."
    );
    assert_eq!(last["temperature"], 0.2);
    let missing = Answer::read(
        run()
            .header("x-csrf-token", &master.csrf)
            .header("content-type", "application/json")
            .body(json!({"variables": {}}).to_string()),
    )
    .await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.text().contains("missing variables `who`, `topic`"),
        "{}",
        missing.text()
    );
    let rows = logged(&gw, "/admin/logs?model=chat&status=ok", 1).await;
    let metadata: Value = serde_json::from_str(rows[0]["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        metadata,
        json!({"ui": "prompts", "proxima.prompt": "greet", "proxima.prompt_version": 1})
    );
    assert_eq!(rows[0]["key_id"], "master");

    // Deleted, with a confirmation in the page; gone from the API.
    let text = page(&gw, &master.cookie, "/ui/prompts/greet").await.text();
    assert!(text.contains("data-confirm="), "{text}");
    let deleted = post_form(&gw, &master, "/ui/prompts/greet/delete", &[], true).await;
    assert_eq!(deleted.status, 303, "{}", deleted.text());
    let gone = gw
        .admin(MASTER, Method::GET, "/admin/prompts/greet", None)
        .await;
    assert_eq!(gone.status, 404);

    // The audit log names the signed-in admin for every save and the deletion.
    let audit = gw
        .admin(MASTER, Method::GET, "/admin/audit?action=prompt", None)
        .await
        .json();
    let actions: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["outcome"] == "ok")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor_id"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("prompt.create", "master", "greet"),
        ("prompt.create", "master", "greet"),
        ("prompt.delete", "master", "greet"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(actions, expected);
}

#[tokio::test]
async fn the_mcp_page_shows_servers_tools_and_tool_calls() {
    let mock = MockUpstream::start().await.unwrap();
    let gone = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let gw = Gateway::start(
        one_model(&mock)
            .server(&format!("master_key = \"{MASTER}\""))
            .section(&format!(
                "[mcp.servers.tools]\nurl = \"{}/mcp?token=secret-in-url\"\n\n\
                 [mcp.servers.gone]\nurl = \"http://127.0.0.1:{gone}/mcp\"\ntimeout = \"2s\"\n",
                mock.url()
            )),
    )
    .await;
    let master = signed_in(&gw, MASTER).await;

    // A tool call through /mcp, beside a chat call.
    let mcp = |body: Value, session: Option<&str>| {
        let mut request = gw
            .request_as(MASTER, Method::POST, "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        gw.send(request)
    };
    let init = mcp(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        None,
    )
    .await;
    assert_eq!(init.status, 200, "{}", init.text());
    let session = init.header("mcp-session-id").unwrap().to_owned();
    let called = mcp(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "tools__echo", "arguments": {"text": "hi"}}}),
        Some(&session),
    )
    .await;
    assert_eq!(called.status, 200, "{}", called.text());
    assert_eq!(
        gw.chat_as(MASTER, chat_body("chat", "hello")).await.status,
        200
    );
    let rows = logged(&gw, "/admin/logs", 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The call log's model filter takes a prefix: only the tool call.
    let tool_rows = logged(&gw, "/admin/logs?model=mcp:*", 1).await;
    assert_eq!(tool_rows.len(), 1, "{tool_rows:?}");
    assert_eq!(tool_rows[0]["model"], "mcp:tools__echo");

    let shown = page(&gw, &master.cookie, "/ui/mcp").await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let text = shown.text();
    // Both servers, one reachable with its three tools, one not, saying why.
    let row = |server: &str| {
        text.split("<tr>")
            .find(|r| r.contains(&format!("<td>{server}</td>")))
            .unwrap_or_else(|| panic!("no row for {server}: {text}"))
            .to_owned()
    };
    let tools = row("tools");
    assert!(
        tools.contains("reachable") && tools.contains(">3<"),
        "{tools}"
    );
    assert!(
        !text.contains("secret-in-url"),
        "the URL's query is shown: {text}"
    );
    let down = row("gone");
    assert!(
        down.contains("unreachable") && down.contains("cannot be reached"),
        "{down}"
    );
    // Every tool served, own and upstream, with its description.
    for tool in [
        "vector_store_search",
        "conversation_items",
        "tools__echo",
        "tools__add",
        "tools__fail",
    ] {
        assert!(
            text.contains(&format!("<code>{tool}</code>")),
            "{tool}: {text}"
        );
    }
    assert!(
        text.contains("Searches one of your vector stores"),
        "{text}"
    );
    // The tool call, with its caller, server and status; not the chat call.
    let call = text
        .split("<tr>")
        .find(|r| r.contains("<code>tools__echo</code>") && r.contains(" ms<"))
        .unwrap_or_else(|| panic!("no tool call row: {text}"));
    assert!(
        call.contains("<td>master</td>") || call.contains(">master<"),
        "{call}"
    );
    assert!(
        call.contains("<td>tools</td>") && call.contains("200"),
        "{call}"
    );
    assert!(!text.contains("gpt-upstream"), "{text}");
    // The logs page offers tool calls as a filter.
    let logs = page(&gw, &master.cookie, "/ui/logs?model=mcp%3A*")
        .await
        .text();
    assert!(
        logs.contains("mcp:tools__echo") && !logs.contains("<td>chat</td>"),
        "{logs}"
    );
}

//! Accounts: virtual keys and teams over the admin API, keys shared by replicas on one database,
//! the usage ledger (one row per request) and its reports, the ledger surviving shutdown and a
//! database outage, the database commands of the CLI, and JWT callers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock_upstream::{MockUpstream, Reply};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::harness::*;

const MASTER: &str = "master-key-accounts-51c2e0";

/// Master key, provider `up` at `mock`, models `m1` (no retries, priced) and `m2`.
fn admin_conf(mock: &MockUpstream) -> Conf {
    Conf::new()
        .server(&format!("master_key = \"{MASTER}\""))
        .openai("up", mock)
        .model_with(
            "m1",
            "up",
            "model-one",
            "retries = 0\nprice = { input_per_mtok = 1000.0, output_per_mtok = 2000.0 }",
        )
        .model("m2", "up", "model-two")
}

/// Two gateways on one database, each reading the other's key changes every 200 ms.
async fn two_replicas(mock: &MockUpstream, database: &str) -> (Gateway, Gateway) {
    two_replicas_syncing_every(mock, database, "200ms").await
}

/// Two gateways on one database, each reading the other's key changes every `interval`.
async fn two_replicas_syncing_every(
    mock: &MockUpstream,
    database: &str,
    interval: &str,
) -> (Gateway, Gateway) {
    let conf = || {
        admin_conf(mock).section(&format!(
            "[storage]\ndatabase = \"{database}\"\nsync_interval = \"{interval}\"\n"
        ))
    };
    (Gateway::start(conf()).await, Gateway::start(conf()).await)
}

/// Makes a key over the admin API; returns `(id, secret)`.
async fn create_key(gw: &Gateway, body: Value) -> (String, String) {
    let answer = gw
        .admin(MASTER, Method::POST, "/admin/keys", Some(&body))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let created = answer.json();
    (
        created["id"].as_str().expect("id").to_owned(),
        created["key"].as_str().expect("key").to_owned(),
    )
}

/// Asserts an OpenAI-shaped error with this status, whatever its code; returns the error.
fn assert_openai_error(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    let error = body.get("error").unwrap_or_else(|| panic!("{body}"));
    assert!(error["code"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(
        !error["message"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    assert!(error.get("param").is_some(), "{body}");
    error.clone()
}

async fn chat_x_api_key(gw: &Gateway, key: &str, model: &str) -> Answer {
    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(chat_body(model, "hi there").to_string()),
    )
    .await
}

// ------------------------------------------------------------------ virtual keys

#[tokio::test]
async fn virtual_key_lifecycle_over_the_admin_api() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock)).await;

    let answer = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "ci-bot", "team": "alpha", "metadata": {"owner": "bob"}})),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let created = answer.json();
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-px-"), "{secret}");
    assert!(secret.len() >= 40, "a short secret: {secret}");
    assert_eq!(created["name"], "ci-bot");
    assert_eq!(created["team"], "alpha");
    assert_eq!(created["metadata"]["owner"], "bob");
    let prefix = created["prefix"].as_str().unwrap().to_owned();
    // The prefix is the start of the secret (shown as `sk-px-1234ab...`), far from all of it.
    let start = prefix.trim_end_matches("...");
    assert!(
        secret.starts_with(start) && start.len() < secret.len() - 16,
        "prefix {prefix:?} of {secret:?}"
    );
    let hash = {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let random_part = &secret["sk-px-".len()..];

    // Shown once: neither the list nor the key itself ever carries the secret (or its hash).
    let list = gw.admin(MASTER, Method::GET, "/admin/keys", None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let one = gw
        .admin(MASTER, Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(one.status, 200, "{}", one.text());
    for body in [list.text(), one.text()] {
        assert!(!body.contains(random_part), "the secret leaked: {body}");
        assert!(!body.contains(&hash), "the hash leaked: {body}");
        assert!(body.contains(&prefix), "no prefix: {body}");
    }
    let listed = list.json();
    let entry = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
    assert_eq!(entry["prefix"], prefix.as_str());
    assert_eq!(one.json()["name"], "ci-bot");

    // The key works, as a Bearer token and as x-api-key.
    let answer = gw.chat_as(&secret, chat_body("m2", "hello")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content(), "hello");
    assert_eq!(chat_x_api_key(&gw, &secret, "m1").await.status, 200);

    // Restricted to m1: m2 is refused, m1 still works.
    let patched = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"models": ["m1"]})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["models"], json!(["m1"]));
    assert!(!patched.text().contains(random_part));
    let error = gw
        .chat_as(&secret, chat_body("m2", "x"))
        .await
        .assert_error(403, "model_not_allowed");
    assert!(error["message"].as_str().unwrap().contains("m2"), "{error}");
    assert_eq!(gw.chat_as(&secret, chat_body("m1", "x")).await.status, 200);
    // A model that does not exist cannot be granted.
    let error = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"models": ["m1", "no-such-model"]})),
        )
        .await
        .assert_error(400, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("no-such-model"));
    // `null` lifts the restriction.
    let patched = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"models": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(gw.chat_as(&secret, chat_body("m2", "x")).await.status, 200);

    // A virtual key is no admin key.
    let error = assert_openai_error(
        &gw.admin(&secret, Method::GET, "/admin/keys", None).await,
        403,
    );
    assert!(
        error["message"].as_str().unwrap().contains("master key"),
        "{error}"
    );
    assert_eq!(
        gw.admin(
            &secret,
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "escalate"}))
        )
        .await
        .status,
        403
    );
    // No key at all, or a wrong one: 401.
    gw.send(gw.client().get(gw.url("/admin/keys")))
        .await
        .assert_error(401, "invalid_api_key");
    gw.admin("sk-px-0000", Method::GET, "/admin/keys", None)
        .await
        .assert_error(401, "invalid_api_key");

    // Bad bodies: 400 in OpenAI's shape, saying what is wrong.
    let post_raw = |body: &'static str| {
        gw.send(
            gw.request_as(MASTER, Method::POST, "/admin/keys")
                .header("content-type", "application/json")
                .body(body),
        )
    };
    post_raw("{\"name\": ")
        .await
        .assert_error(400, "invalid_request");
    let error = post_raw("{\"name\": \"x\", \"colour\": \"red\"}")
        .await
        .assert_error(400, "invalid_request");
    assert!(
        error["message"].as_str().unwrap().contains("colour"),
        "{error}"
    );
    post_raw("{\"name\": 5}")
        .await
        .assert_error(400, "invalid_request");
    post_raw("{}").await.assert_error(400, "invalid_request");
    post_raw("{\"name\": \"  \"}")
        .await
        .assert_error(400, "invalid_request");
    post_raw("{\"name\": \"x\", \"rpm\": -1}")
        .await
        .assert_error(400, "invalid_request");
    gw.admin(
        MASTER,
        Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(&json!({"secret": "mine"})),
    )
    .await
    .assert_error(400, "invalid_request");
    gw.admin(MASTER, Method::GET, "/admin/keys?bogus=1", None)
        .await
        .assert_error(400, "invalid_request");

    // Unknown ids: 404 not_found on every verb.
    for method in [Method::GET, Method::DELETE] {
        let error = gw
            .admin(MASTER, method, "/admin/keys/key_nope", None)
            .await
            .assert_error(404, "not_found");
        assert!(error["message"].as_str().unwrap().contains("key_nope"));
    }
    gw.admin(
        MASTER,
        Method::PATCH,
        "/admin/keys/key_nope",
        Some(&json!({"name": "n"})),
    )
    .await
    .assert_error(404, "not_found");

    // Revoked: refused at once, with either header.
    let revoked = gw
        .admin(MASTER, Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(revoked.json()["revoked_at"].is_i64(), "{}", revoked.text());
    gw.chat_as(&secret, chat_body("m1", "x"))
        .await
        .assert_error(401, "invalid_api_key");
    chat_x_api_key(&gw, &secret, "m1")
        .await
        .assert_error(401, "invalid_api_key");
    // Listed no more, unless asked; still readable by id.
    let list = gw
        .admin(MASTER, Method::GET, "/admin/keys", None)
        .await
        .json();
    assert!(
        !list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str()),
        "{list}"
    );
    let all = gw
        .admin(
            MASTER,
            Method::GET,
            "/admin/keys?include_revoked=true",
            None,
        )
        .await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert!(!all.text().contains(random_part));
    assert!(all.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == id.as_str() && k["revoked_at"].is_i64()));
    // A revoked key stays revoked: patching it does not bring it back.
    let _ = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"name": "renamed"})),
        )
        .await;
    gw.chat_as(&secret, chat_body("m1", "x"))
        .await
        .assert_error(401, "invalid_api_key");

    // The master key still works; the gateway is unharmed.
    assert_eq!(gw.chat_as(MASTER, chat_body("m1", "x")).await.status, 200);
}

#[tokio::test]
async fn an_admin_key_uses_the_admin_api_and_a_plain_key_does_not() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock)).await;
    let (_, admin) = create_key(&gw, json!({"name": "ops", "admin": true})).await;
    let (plain_id, plain) = create_key(&gw, json!({"name": "app"})).await;
    let listed = gw.admin(&admin, Method::GET, "/admin/keys", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["data"].as_array().unwrap().len(), 2);
    assert!(listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["admin"] == true));
    let refused = gw.admin(&plain, Method::GET, "/admin/keys", None).await;
    assert_openai_error(&refused, 403);
    // Made an admin by an admin key, the plain key may then use the admin API too.
    let patched = gw
        .admin(
            &admin,
            Method::PATCH,
            &format!("/admin/keys/{plain_id}"),
            Some(&json!({"admin": true})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        gw.admin(&plain, Method::GET, "/admin/teams", None)
            .await
            .status,
        200
    );
    // And an admin key is still a client key.
    assert_eq!(gw.chat_as(&admin, chat_body("m2", "hi")).await.status, 200);
}

#[tokio::test]
async fn keys_and_teams_carry_regions_and_a_pii_policy() {
    let mock = MockUpstream::start().await.unwrap();
    let conf = Conf::new()
        .server(&format!("master_key = \"{MASTER}\""))
        .openai_with("up", &mock, "region = \"eu\"")
        .model("m1", "up", "model-one");
    let gw = Gateway::start(conf).await;
    let answer = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/keys",
            Some(&json!({"name": "eu-app", "regions": ["eu"], "pii": {"mode": "mask"}})),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let key = answer.json();
    assert_eq!(key["regions"], json!(["eu"]));
    assert_eq!(key["pii"], json!({"mode": "mask"}));
    // A region no provider is in is a typo, refused with the field named.
    let typo = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": "t", "regions": ["ue"]})),
        )
        .await;
    assert_eq!(assert_openai_error(&typo, 400)["param"], "regions");
    let bad_mode = gw
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{}", key["id"].as_str().unwrap()),
            Some(&json!({"pii": {"mode": "scramble"}})),
        )
        .await;
    assert_openai_error(&bad_mode, 400);
    let team = gw
        .admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": "t", "regions": ["eu"], "pii": {"entities": ["email"]}})),
        )
        .await;
    assert_eq!(team.status, 201, "{}", team.text());
    let read = gw.admin(MASTER, Method::GET, "/admin/teams/t", None).await;
    assert_eq!(read.json()["pii"], json!({"entities": ["email"]}));
    assert_eq!(read.json()["regions"], json!(["eu"]));
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock)).await;
    let now = proxima::clock::now_ms();
    let (_, past) = create_key(&gw, json!({"name": "old", "expires_at": now - 1000})).await;
    gw.chat_as(&past, chat_body("m1", "x"))
        .await
        .assert_error(401, "invalid_api_key");

    // A key that expires while in use: works, then stops.
    let (_, soon) = create_key(&gw, json!({"name": "soon", "expires_at": now + 1500})).await;
    let answer = gw.chat_as(&soon, chat_body("m1", "x")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let wait = (now + 1600 - proxima::clock::now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    gw.chat_as(&soon, chat_body("m1", "x"))
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_master_key() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock).section("[keys.a]\nkey = \"k-static-a\"\n")).await;
    for (method, path) in [
        (Method::GET, "/admin/keys"),
        (Method::POST, "/admin/keys"),
        (Method::GET, "/admin/teams"),
        (Method::GET, "/admin/usage"),
        (Method::GET, "/admin/logs"),
    ] {
        let body = json!({"name": "x"});
        let answer = gw.admin("k-static-a", method, path, Some(&body)).await;
        let error = answer.assert_error(404, "not_found");
        assert!(
            error["message"].as_str().unwrap().contains("master_key"),
            "{error}"
        );
    }
    // The static key still serves chat.
    assert_eq!(
        gw.chat_as("k-static-a", chat_body("chat", "x"))
            .await
            .status,
        200
    );
}

// ------------------------------------------------------------------ replicas

/// Two gateways on one database: keys made, changed and revoked on one reach the other.
async fn replicas_share_keys(database: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let (a, b) = two_replicas(&mock, database).await;

    let (id, secret) = create_key(&a, json!({"name": "shared"})).await;
    assert_eq!(a.chat_as(&secret, chat_body("m1", "x")).await.status, 200);
    let took = eventually(Duration::from_millis(1500), || async {
        b.chat_as(&secret, chat_body("m1", "x")).await.status == 200
    })
    .await;
    assert!(took.is_some(), "replica B never accepted the new key");

    // A change on A applies on B.
    let patched = a
        .admin(
            MASTER,
            Method::PATCH,
            &format!("/admin/keys/{id}"),
            Some(&json!({"models": ["m1"]})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let took = eventually(Duration::from_secs(2), || async {
        b.chat_as(&secret, chat_body("m2", "x")).await.status == 403
    })
    .await;
    assert!(took.is_some(), "replica B still lets the key use m2");
    assert_eq!(b.chat_as(&secret, chat_body("m1", "x")).await.status, 200);

    // Revoked on A: refused on A at once, on B within two sync intervals or so.
    let revoked = a
        .admin(MASTER, Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    a.chat_as(&secret, chat_body("m1", "x"))
        .await
        .assert_error(401, "invalid_api_key");
    let took = eventually(Duration::from_secs(2), || async {
        b.chat_as(&secret, chat_body("m1", "x")).await.status == 401
    })
    .await;
    assert!(
        took.is_some(),
        "replica B still accepts a revoked key after 2 s"
    );
    // And it stays refused.
    for _ in 0..5 {
        b.chat_as(&secret, chat_body("m1", "x"))
            .await
            .assert_error(401, "invalid_api_key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's admin API sees A's key as revoked.
    let seen = b
        .admin(MASTER, Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert!(seen.json()["revoked_at"].is_i64(), "{}", seen.text());
}

#[tokio::test]
async fn revocation_reaches_a_replica_on_the_same_sqlite_file() {
    let dir = temp_path("replicas");
    std::fs::create_dir_all(&dir).unwrap();
    replicas_share_keys(&format!("sqlite://{}", dir.join("shared.db").display())).await;
}

#[tokio::test]
async fn revocation_reaches_a_replica_on_the_same_postgres() {
    let schema = postgres_schema().await;
    replicas_share_keys(&postgres_url(&postgres_base(), &schema)).await;
}

/// A key made on one replica works on another at once, long before its next sync. A key
/// unknown everywhere is not looked up again for a while, so a flood of bad keys does not reach
/// the database; one made since works once that while is over.
#[tokio::test]
async fn a_new_key_works_on_another_replica_before_its_next_sync() {
    use proxima::policy::directory::UNKNOWN_KEY_TTL;
    use sqlx::Connection;
    let dir = temp_path("lookup");
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.join("shared.db").display());
    let mock = MockUpstream::start().await.unwrap();
    let (a, b) = two_replicas_syncing_every(&mock, &database, "1h").await;

    let (_, secret) = create_key(&a, json!({"name": "fresh"})).await;
    assert_eq!(b.chat_as(&secret, chat_body("m1", "x")).await.status, 200);

    // A flood of one key that does not exist yet.
    let later = "sk-px-made-later-4f6b0c2d9e8a7b1c3d5e7f9a0b2c4d6e";
    let first_refusal = Instant::now();
    for _ in 0..20 {
        b.chat_as(later, chat_body("m1", "x"))
            .await
            .assert_error(401, "invalid_api_key");
    }
    // Another replica makes that key now (written directly, as by a third gateway).
    let mut db = sqlx::SqliteConnection::connect(&database).await.unwrap();
    let now = proxima::clock::now_ms();
    sqlx::query(
        "INSERT INTO keys (id, name, hash, prefix, metadata, created_at, updated_at) \
         VALUES ('key_later', 'later', $1, 'sk-px-made-l...', '{}', $2, $2)",
    )
    .bind(proxima::store::hex(&proxima::store::secret_digest(later)))
    .bind(now)
    .execute(&mut db)
    .await
    .unwrap();
    let _ = db.close().await;
    // Still refused without a lookup while the refusal is remembered...
    let answer = b.chat_as(later, chat_body("m1", "x")).await;
    if first_refusal.elapsed() < UNKNOWN_KEY_TTL {
        answer.assert_error(401, "invalid_api_key");
    }
    // ...and looked up again once it is forgotten.
    let took = eventually(UNKNOWN_KEY_TTL + Duration::from_secs(2), || async {
        b.chat_as(later, chat_body("m1", "x")).await.status == 200
    })
    .await;
    assert!(took.is_some(), "the key made later never worked on B");
}

/// Replicas' clocks disagree. A change stamped by a replica whose clock runs ahead must not
/// hide a later revocation from a replica that saw that change.
#[tokio::test]
async fn revocation_reaches_a_replica_after_a_change_stamped_by_a_fast_clock() {
    use sqlx::Connection;
    let dir = temp_path("skew");
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.join("shared.db").display());
    let mock = MockUpstream::start().await.unwrap();
    let (a, b) = two_replicas(&mock, &database).await;
    let (id, secret) = create_key(&a, json!({"name": "skewed"})).await;
    let seen = eventually(Duration::from_secs(2), || async {
        b.chat_as(&secret, chat_body("m2", "x")).await.status == 200
    })
    .await;
    assert!(seen.is_some(), "replica B never accepted the key");

    // A third replica, its clock a minute fast, restricts the key to m1: the row it writes
    // is stamped a minute ahead. B applies the change.
    let mut db = sqlx::SqliteConnection::connect(&database).await.unwrap();
    sqlx::query(
        "UPDATE keys SET models = '[\"m1\"]', updated_at = updated_at + 60000 WHERE id = $1",
    )
    .bind(&id)
    .execute(&mut db)
    .await
    .unwrap();
    let _ = db.close().await;
    let applied = eventually(Duration::from_secs(2), || async {
        b.chat_as(&secret, chat_body("m2", "x")).await.status == 403
    })
    .await;
    assert!(applied.is_some(), "replica B never saw the change");

    // Revoked on A, whose clock is right: B must refuse it too.
    let revoked = a
        .admin(MASTER, Method::DELETE, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let refused = eventually(Duration::from_secs(2), || async {
        b.chat_as(&secret, chat_body("m1", "x")).await.status == 401
    })
    .await;
    assert!(
        refused.is_some(),
        "replica B still accepts the revoked key: the revocation was stamped earlier than a change it had seen"
    );
}

// ------------------------------------------------------------------ teams

#[tokio::test]
async fn teams_over_the_admin_api_restrict_their_keys() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock)).await;
    let team = |method: Method, path: &str, body: Option<Value>| {
        let path = path.to_owned();
        let gw = &gw;
        async move { gw.admin(MASTER, method, &path, body.as_ref()).await }
    };

    let created = team(
        Method::POST,
        "/admin/teams",
        Some(json!({"name": "alpha", "models": ["m1"], "metadata": {"cost_center": "42"}})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["name"], "alpha");
    assert_eq!(created.json()["models"], json!(["m1"]));
    // Same name again, unknown models, unknown fields, no name: 400.
    team(Method::POST, "/admin/teams", Some(json!({"name": "alpha"})))
        .await
        .assert_error(400, "invalid_request");
    team(
        Method::POST,
        "/admin/teams",
        Some(json!({"name": "beta", "models": ["nope"]})),
    )
    .await
    .assert_error(400, "invalid_request");
    team(
        Method::POST,
        "/admin/teams",
        Some(json!({"name": "beta", "colour": "red"})),
    )
    .await
    .assert_error(400, "invalid_request");
    team(Method::POST, "/admin/teams", Some(json!({"name": ""})))
        .await
        .assert_error(400, "invalid_request");

    let list = team(Method::GET, "/admin/teams", None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let names: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alpha"]);
    let one = team(Method::GET, "/admin/teams/alpha", None).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["metadata"]["cost_center"], "42");
    team(Method::GET, "/admin/teams/nope", None)
        .await
        .assert_error(404, "not_found");

    // A key of the team may use only the team's models, even with no list of its own.
    let (_, secret) = create_key(&gw, json!({"name": "member", "team": "alpha"})).await;
    let (_, outsider) = create_key(&gw, json!({"name": "outsider"})).await;
    assert_eq!(gw.chat_as(&secret, chat_body("m1", "x")).await.status, 200);
    let error = gw
        .chat_as(&secret, chat_body("m2", "x"))
        .await
        .assert_error(403, "model_not_allowed");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("alpha") && message.contains("m2"),
        "{message}"
    );
    assert_eq!(
        gw.chat_as(&outsider, chat_body("m2", "x")).await.status,
        200
    );
    // `/v1/models` lists what each may call, by the same check.
    let listed = |key: String| {
        let gw = &gw;
        async move {
            let answer = gw
                .send(gw.request_as(&key, Method::GET, "/v1/models"))
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            let body = answer.json();
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(secret.clone()).await, ["m1"]);
    assert_eq!(listed(outsider.clone()).await, ["m1", "m2"]);

    // Widened: applies at once.
    let patched = team(
        Method::PATCH,
        "/admin/teams/alpha",
        Some(json!({"models": ["m1", "m2"]})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(gw.chat_as(&secret, chat_body("m2", "x")).await.status, 200);
    // Narrowed the other way.
    team(
        Method::PATCH,
        "/admin/teams/alpha",
        Some(json!({"models": ["m2"]})),
    )
    .await;
    gw.chat_as(&secret, chat_body("m1", "x"))
        .await
        .assert_error(403, "model_not_allowed");
    team(
        Method::PATCH,
        "/admin/teams/alpha",
        Some(json!({"bogus": 1})),
    )
    .await
    .assert_error(400, "invalid_request");
    team(
        Method::PATCH,
        "/admin/teams/nope",
        Some(json!({"models": null})),
    )
    .await
    .assert_error(404, "not_found");

    // Deleted: gone from the API, and its keys work without its restriction.
    let deleted = team(Method::DELETE, "/admin/teams/alpha", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    team(Method::GET, "/admin/teams/alpha", None)
        .await
        .assert_error(404, "not_found");
    let list = team(Method::GET, "/admin/teams", None).await.json();
    assert_eq!(list["data"], json!([]), "{list}");
    assert_eq!(gw.chat_as(&secret, chat_body("m1", "x")).await.status, 200);
    team(Method::DELETE, "/admin/teams/alpha", None)
        .await
        .assert_error(404, "not_found");
    // The name can be used again, and the new team's rules apply to the old members.
    let again = team(
        Method::POST,
        "/admin/teams",
        Some(json!({"name": "alpha", "models": ["m2"]})),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text());
    gw.chat_as(&secret, chat_body("m1", "x"))
        .await
        .assert_error(403, "model_not_allowed");
}

// ------------------------------------------------------------------ the ledger

/// What one request should have left in the ledger.
#[derive(Debug, Clone)]
struct Expect {
    status: i64,
    code: Option<&'static str>,
    key: String,
    team: Option<&'static str>,
    model: &'static str,
    provider: Option<&'static str>,
    stream: bool,
    user: Option<String>,
    metadata: Option<Value>,
    /// `(input, output)`, when known.
    tokens: Option<(i64, i64)>,
    /// Sent before the `from` mark of the time filter test.
    early: bool,
}

/// Every page of `/admin/logs?{query}`, `limit` rows at a time.
async fn all_logs(gw: &Gateway, query: &[(&str, String)], limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("limit", limit.to_string()));
        if let Some(after) = &after {
            q.push(("after", after.clone()));
        }
        let page = gw
            .admin(
                MASTER,
                Method::GET,
                &format!("/admin/logs?{}", serde_urlencoded::to_string(&q).unwrap()),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "page over the limit");
        rows.extend(data.iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(data.len(), limit, "a short page with a `next`");
                after = Some(next.to_owned());
            }
            None => return rows,
        }
    }
    panic!("paging never ended");
}

async fn usage_report(gw: &Gateway, query: &str) -> Value {
    let answer = gw
        .admin(MASTER, Method::GET, &format!("/admin/usage?{query}"), None)
        .await;
    assert_eq!(answer.status, 200, "{query}: {}", answer.text());
    answer.json()
}

/// A `cost_usd` of the admin API in nano-dollars, rounded.
fn nanos(cost_usd: &Value) -> i64 {
    let usd = cost_usd
        .as_f64()
        .unwrap_or_else(|| panic!("cost_usd is not a number: {cost_usd}"));
    (usd * 1e9).round() as i64
}

/// Asserts `/admin/usage?by=BY` agrees with the log rows grouped by `group`.
async fn assert_usage_matches(
    gw: &Gateway,
    by: &str,
    rows: &[Value],
    group: impl Fn(&Value) -> Value,
) {
    #[derive(Default, Debug, PartialEq)]
    struct Sums {
        requests: i64,
        errors: i64,
        input: i64,
        output: i64,
        cost_nanos: i64,
    }
    let mut expected: BTreeMap<String, Sums> = BTreeMap::new();
    for row in rows {
        let sums = expected.entry(group(row).to_string()).or_default();
        sums.requests += 1;
        sums.errors += i64::from(row["status"].as_i64().unwrap() >= 400);
        sums.input += row["input_tokens"].as_i64().unwrap();
        sums.output += row["output_tokens"].as_i64().unwrap();
        sums.cost_nanos += nanos(&row["cost_usd"]);
    }
    let report = usage_report(gw, &format!("by={by}")).await;
    assert_eq!(report["by"], by);
    let mut got: BTreeMap<String, Sums> = BTreeMap::new();
    for g in report["data"].as_array().unwrap() {
        let cost = nanos(&g["cost_usd"]);
        let previous = got.insert(
            g["group"].to_string(),
            Sums {
                requests: g["requests"].as_i64().unwrap(),
                errors: g["errors"].as_i64().unwrap(),
                input: g["input_tokens"].as_i64().unwrap(),
                output: g["output_tokens"].as_i64().unwrap(),
                cost_nanos: cost,
            },
        );
        assert!(previous.is_none(), "group {} twice: {report}", g["group"]);
    }
    // Dollars are floats in the report: compare them to the nano-dollar, the rest exactly.
    for (name, sums) in &mut got {
        if let Some(want) = expected.get(name) {
            if (sums.cost_nanos - want.cost_nanos).abs() <= 2 {
                sums.cost_nanos = want.cost_nanos;
            }
        }
    }
    assert_eq!(got, expected, "by={by}: {report}");
    assert_eq!(
        report["total"]["requests"].as_i64().unwrap(),
        rows.len() as i64
    );
}

#[tokio::test]
async fn the_ledger_has_exactly_one_row_per_request_and_reports_add_up() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        admin_conf(&mock).section("[storage.ledger]\nflush_interval = \"50ms\"\nbatch_size = 64\n"),
    )
    .await;
    let (team_key, team_secret) =
        create_key(&gw, json!({"name": "team-key", "team": "alpha"})).await;
    let (solo_key, solo_secret) = create_key(&gw, json!({"name": "solo-key"})).await;
    let keys = [
        (MASTER.to_owned(), "master".to_owned(), None),
        (team_secret.clone(), team_key.clone(), Some("alpha")),
        (solo_secret.clone(), solo_key.clone(), None),
    ];

    // What the upstream reports for a three-word message: every request below sends one.
    let calibration = gw.chat_as(MASTER, chat_body("m1", "one two three")).await;
    assert_eq!(calibration.status, 200);
    let usage = &calibration.json()["usage"];
    let tokens = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    assert!(tokens.0 > 0 && tokens.1 > 0, "{usage}");
    let mut expected: HashMap<String, Expect> = HashMap::new();
    expected.insert(
        calibration.header("x-request-id").unwrap().to_owned(),
        Expect {
            status: 200,
            code: None,
            key: "master".into(),
            team: None,
            model: "m1",
            provider: Some("up"),
            stream: false,
            user: None,
            metadata: None,
            tokens: Some(tokens),
            early: true,
        },
    );

    let post = |secret: &str, id: &str, body: &Value| {
        gw.request_as(secret, Method::POST, "/v1/chat/completions")
            .header("content-type", "application/json")
            .header("x-request-id", id)
            .body(body.to_string())
    };
    let sequential = 160;
    let mut mark = 0;
    for i in 0..sequential {
        if i == sequential / 2 {
            // Everything before this instant is "early" for the time filter.
            tokio::time::sleep(Duration::from_millis(20)).await;
            mark = proxima::clock::now_ms();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let early = i < sequential / 2;
        let (secret, key, team) = keys[i % 3].clone();
        let id = format!("led-{i:03}");
        let text = format!("request {i} here");
        let mut expect = Expect {
            status: 200,
            code: None,
            key,
            team,
            model: "m1",
            provider: Some("up"),
            stream: false,
            user: None,
            metadata: None,
            tokens: Some(tokens),
            early,
        };
        match i % 10 {
            0 => {
                // The upstream fails; m1 has no retries: 502.
                mock.enqueue(Reply::error(500, "upstream exploded"));
                let answer = gw.send(post(&secret, &id, &chat_body("m1", &text))).await;
                answer.assert_error(502, "upstream_error");
                expect.status = 502;
                expect.code = Some("upstream_error");
                expect.tokens = Some((0, 0));
            }
            1 => {
                gw.send(post(&secret, &id, &chat_body("no-such-model", &text)))
                    .await
                    .assert_error(404, "model_not_found");
                expect.status = 404;
                expect.code = Some("model_not_found");
                expect.model = "no-such-model";
                expect.provider = None;
                expect.tokens = Some((0, 0));
            }
            2 | 3 => {
                // Streams, with and without usage asked for: both are metered.
                let mut body = stream_body("m2", &text);
                if i % 10 == 2 {
                    body["stream_options"] = json!({"include_usage": true});
                }
                let mut sse = gw
                    .stream_with(
                        gw.request_as(&secret, Method::POST, "/v1/chat/completions")
                            .header("x-request-id", &id),
                        body,
                    )
                    .await;
                assert_eq!(sse.status, 200);
                let chunks = chunks_until_done(&sse.data().await);
                assert_eq!(streamed_content(&chunks, 0), text);
                if i % 10 == 2 {
                    let usage = &chunks.last().unwrap()["usage"];
                    assert_eq!(
                        (
                            usage["prompt_tokens"].as_i64().unwrap(),
                            usage["completion_tokens"].as_i64().unwrap()
                        ),
                        tokens,
                        "{usage}"
                    );
                }
                expect.model = "m2";
                expect.stream = true;
            }
            4 if i % 20 == 4 => {
                // The client goes away mid-stream: recorded as 499.
                mock.enqueue(Reply::default_behaviour().chunk_delay(Duration::from_millis(30)));
                let long = "word ".repeat(60);
                let mut sse = gw
                    .stream_with(
                        gw.request_as(&secret, Method::POST, "/v1/chat/completions")
                            .header("x-request-id", &id),
                        stream_body("m1", &long),
                    )
                    .await;
                assert_eq!(sse.status, 200);
                let _first = sse.next().await.expect("a first event");
                drop(sse);
                expect.status = 499;
                expect.code = Some("client_closed");
                expect.stream = true;
                expect.tokens = None;
            }
            5 => {
                // End user and tags are recorded.
                let mut body = chat_body("m1", &text);
                body["user"] = json!(format!("end-user-{i}"));
                let tags = json!({"app": "search", "n": i, "env": "test"});
                let answer = gw
                    .send(post(&secret, &id, &body).header("x-proxima-metadata", tags.to_string()))
                    .await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                expect.user = Some(format!("end-user-{i}"));
                expect.metadata = Some(tags);
            }
            _ => {
                let answer = gw.send(post(&secret, &id, &chat_body("m1", &text))).await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                assert_eq!(answer.header("x-request-id"), Some(id.as_str()));
                assert_eq!(answer.content(), text);
            }
        }
        expected.insert(id, expect);
    }
    // And a burst at once.
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let (secret, key, team) = keys[i % 3].clone();
            let id = format!("burst-{i:02}");
            let request = post(&secret, &id, &chat_body("m2", "all at once"));
            expected.insert(
                id,
                Expect {
                    status: 200,
                    code: None,
                    key,
                    team,
                    model: "m2",
                    provider: Some("up"),
                    stream: false,
                    user: None,
                    metadata: None,
                    tokens: Some(tokens),
                    early: false,
                },
            );
            Answer::read(request)
        })
        .collect();
    for answer in futures_util::future::join_all(burst).await {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let n = expected.len();
    assert_eq!(n, 201);

    let store = gw.store().await;
    assert_ledger_rows(&store, n as i64, Duration::from_secs(5)).await;

    // The log, paged, holds each request once, as it happened.
    let rows = all_logs(&gw, &[], 37).await;
    assert_eq!(rows.len(), n);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "row ids repeat");
    let mut seen = HashSet::new();
    for row in &rows {
        let request_id = row["request_id"].as_str().unwrap();
        assert!(seen.insert(request_id), "{request_id} logged twice");
        let want = expected
            .get(request_id)
            .unwrap_or_else(|| panic!("a row for a request never made: {row}"));
        assert_eq!(row["status"], want.status, "{row}");
        assert_eq!(row["error_code"].as_str(), want.code, "{row}");
        assert_eq!(row["key_id"], want.key.as_str(), "{row}");
        assert_eq!(row["team"].as_str(), want.team, "{row}");
        assert_eq!(row["model"], want.model, "{row}");
        assert_eq!(row["provider"].as_str(), want.provider, "{row}");
        assert_eq!(row["stream"], want.stream, "{row}");
        assert_eq!(row["user"].as_str(), want.user.as_deref(), "{row}");
        let metadata: Option<Value> = row["metadata"]
            .as_str()
            .map(|m| serde_json::from_str(m).unwrap());
        assert_eq!(metadata, want.metadata, "{row}");
        if let Some((input, output)) = want.tokens {
            assert_eq!(row["input_tokens"], input, "{row}");
            assert_eq!(row["output_tokens"], output, "{row}");
        }
        if want.status == 200 {
            let upstream = if want.model == "m1" {
                "model-one"
            } else {
                "model-two"
            };
            assert_eq!(row["upstream_model"], upstream, "{row}");
            assert!(row["attempts"].as_i64().unwrap() >= 1, "{row}");
        }
        // m1 is priced at $1000 / $2000 per million tokens: a nano-dollar per milli-token.
        if want.model == "m1" && want.status == 200 {
            let (input, output) = want.tokens.unwrap();
            let cost = nanos(&row["cost_usd"]);
            let exact = input * 1_000_000 + output * 2_000_000;
            assert!(
                (cost - exact).abs() <= 2,
                "cost {cost}, expected {exact}: {row}"
            );
        }
        if want.status == 404 {
            assert_eq!(row["cost_usd"].as_f64(), Some(0.0), "{row}");
        }
        // Dollars, as every peer shows them; nano-dollars stay inside.
        assert!(row.get("cost_nanos").is_none(), "{row}");
        assert!(row["latency_ms"].as_i64().unwrap() >= 0);
    }

    // Reports agree with the log, however grouped.
    assert_usage_matches(&gw, "key", &rows, |r| r["key_id"].clone()).await;
    assert_usage_matches(&gw, "model", &rows, |r| r["model"].clone()).await;
    assert_usage_matches(&gw, "team", &rows, |r| r["team"].clone()).await;
    assert_usage_matches(&gw, "day", &rows, |r| {
        Value::String(proxima::clock::day(r["at"].as_i64().unwrap()))
    })
    .await;
    let by_key = usage_report(&gw, "by=key").await;
    let team_group = by_key["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == team_key.as_str())
        .unwrap();
    assert_eq!(team_group["name"], "team-key", "{by_key}");
    // A window that ends before the requests holds none of them.
    let empty = usage_report(&gw, "by=model&from=2020-01-01&to=2020-01-02").await;
    assert_eq!(empty["total"]["requests"], 0, "{empty}");

    // Filters.
    let count = |f: &dyn Fn(&Expect) -> bool| expected.values().filter(|e| f(e)).count();
    let by_key = all_logs(&gw, &[("key", solo_key.clone())], 50).await;
    assert_eq!(by_key.len(), count(&|e| e.key == solo_key));
    assert!(by_key.iter().all(|r| r["key_id"] == solo_key.as_str()));
    let by_model = all_logs(&gw, &[("model", "m2".into())], 50).await;
    assert_eq!(by_model.len(), count(&|e| e.model == "m2"));
    let by_team = all_logs(&gw, &[("team", "alpha".into())], 50).await;
    assert_eq!(by_team.len(), count(&|e| e.team == Some("alpha")));
    let errors = all_logs(&gw, &[("status", "error".into())], 10).await;
    assert_eq!(errors.len(), count(&|e| e.status >= 400));
    assert!(errors.iter().all(|r| r["status"].as_i64().unwrap() >= 400));
    let ok = all_logs(&gw, &[("status", "ok".into())], 100).await;
    assert_eq!(ok.len(), count(&|e| e.status < 400));
    let closed = all_logs(&gw, &[("status", "499".into())], 100).await;
    assert_eq!(closed.len(), count(&|e| e.status == 499));
    assert!(!closed.is_empty());
    let late = all_logs(&gw, &[("from", mark.to_string())], 30).await;
    assert_eq!(late.len(), count(&|e| !e.early));
    let early = all_logs(&gw, &[("to", mark.to_string())], 30).await;
    assert_eq!(early.len(), count(&|e| e.early));
    let combined = all_logs(
        &gw,
        &[
            ("key", "master".into()),
            ("model", "m1".into()),
            ("status", "error".into()),
            ("to", proxima::clock::rfc3339(mark)),
        ],
        3,
    )
    .await;
    assert_eq!(
        combined.len(),
        count(&|e| e.key == "master" && e.model == "m1" && e.status >= 400 && e.early)
    );
    let one = all_logs(&gw, &[("request_id", "led-005".into())], 10).await;
    assert_eq!(one.len(), 1);
    // Newest first.
    let ats: Vec<i64> = rows.iter().map(|r| r["at"].as_i64().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] >= w[1]), "not newest first");

    // Bad queries: 400 in OpenAI's shape.
    for path in [
        "/admin/usage?by=week",
        "/admin/usage?from=last-tuesday",
        "/admin/usage?to=2026-13-45",
        "/admin/usage?colour=red",
        "/admin/logs?from=yesterday-ish",
        "/admin/logs?status=bad",
        "/admin/logs?after=garbage",
        "/admin/logs?limit=many",
        "/admin/logs?colour=red",
    ] {
        let answer = gw.admin(MASTER, Method::GET, path, None).await;
        answer.assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn invalid_metadata_is_refused_and_tags_are_kept() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock)).await;
    let send = |tags: &'static str| {
        gw.send(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .header("x-proxima-metadata", tags)
                .body(chat_body("m1", "tagged").to_string()),
        )
    };
    for bad in ["not json", "[1, 2]", "\"app\"", "{\"app\": "] {
        let error = send(bad).await.assert_error(400, "invalid_request");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("x-proxima-metadata"),
            "{error}"
        );
    }
    let answer = send("{\"app\": \"search\", \"nested\": {\"a\": [1, 2]}}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let id = answer.header("x-request-id").unwrap().to_owned();
    // A body that is not JSON is refused as well.
    let malformed = gw
        .send(
            gw.request_as(MASTER, Method::POST, "/v1/chat/completions")
                .header("content-type", "application/json")
                .body("{\"model\": "),
        )
        .await;
    malformed.assert_error(400, "invalid_request");
    // The five refusals are in the ledger too, with what their callers were told.
    let store = gw.store().await;
    assert_ledger_rows(&store, 6, Duration::from_secs(3)).await;
    let refused = all_logs(&gw, &[("status", "400".into())], 10).await;
    assert_eq!(refused.len(), 5);
    assert!(
        refused
            .iter()
            .all(|r| r["error_code"] == "invalid_request" && r["key_id"] == "master"),
        "{refused:?}"
    );
    let rows = all_logs(&gw, &[("request_id", id)], 10).await;
    let tags: Value = serde_json::from_str(rows[0]["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(tags, json!({"app": "search", "nested": {"a": [1, 2]}}));
}

// ------------------------------------------------------------------ the real binary

fn served_config(database: &str, extra: &str) -> std::path::PathBuf {
    temp_file(
        "ledger.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"{MASTER}\"\nshutdown_grace = \"10s\"\n\n\
             [storage]\ndatabase = \"{database}\"\nsync_interval = \"200ms\"\n{extra}\n\n\
             [providers.builtin]\nkind = \"mock\"\nlatency = \"15ms\"\n\n\
             [models.mock]\ntargets = [{{ provider = \"builtin\", model = \"mock\" }}]\n"
        ),
    )
}

fn run_cli(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let output = proxima()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run proxima");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sigterm_under_load_loses_no_usage_record_and_the_cli_reads_the_ledger() {
    let dir = temp_path("served-db");
    std::fs::create_dir_all(&dir).unwrap();
    let db_file = dir.join("ledger.db");
    let database = format!("sqlite://{}", db_file.display());
    // Rows reach the database in batches of 64, and the rest only at shutdown.
    let config = served_config(
        &database,
        "\n[storage.ledger]\nflush_interval = \"1h\"\nbatch_size = 64\n",
    );
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let served = Served::start(command);

    // 400 requests, 32 at a time; SIGTERM once 200 are answered.
    let total = 400;
    let answered = Arc::new(Mutex::new(Vec::<u16>::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = http_client();
    let url = served.url("/v1/chat/completions");
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (answered, next, client, url) =
                (answered.clone(), next.clone(), client.clone(), url.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let body = if i % 4 == 0 {
                        stream_body("mock", "streamed under load")
                    } else {
                        chat_body("mock", "under load")
                    };
                    let sent = client
                        .post(&url)
                        .bearer_auth(MASTER)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await;
                    let Ok(response) = sent else { continue };
                    let status = response.status().as_u16();
                    // An answer counts once its body has arrived whole.
                    if response.bytes().await.is_ok() {
                        answered.lock().unwrap().push(status);
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().unwrap().len() < total / 2 {
        assert!(Instant::now() < deadline, "the gateway is too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.terminate();
    for worker in workers {
        worker.await.unwrap();
    }
    let (status, served) = served.exit_within(Duration::from_secs(15)).await;
    let status = status.expect("proxima did not exit");
    let logs = served.stop();
    assert!(status.success(), "exit {status:?}; stderr:\n{logs}");
    let statuses = answered.lock().unwrap().clone();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "answers other than 200: {statuses:?}"
    );
    let n = statuses.len() as i64;
    assert!(n >= (total / 2) as i64);

    // Every answered request is in the database, once.
    let store = proxima::store::Store::connect(&database).await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), n, "stderr:\n{logs}");
    store.close().await;
    assert!(
        !std::path::Path::new(&format!("{}.ledger.spill", db_file.display())).exists(),
        "records were spilled although the database was there"
    );

    // The CLI, on the same database.
    let (ok, out, err) = run_cli(&["usage", "--json"], &config);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let requests: i64 = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(requests, n, "{report}");
    let (ok, out, err) = run_cli(&["usage", "--by", "key"], &config);
    assert!(ok, "{err}");
    assert!(
        out.contains("master") && out.contains(&n.to_string()),
        "{out}"
    );

    let (ok, out, err) = run_cli(&["migrate"], &config);
    assert!(ok, "{err}");
    assert!(out.contains("up to date"), "{out}");

    let (ok, out, err) = run_cli(
        &["keys", "create", "--name", "from-cli", "--models", "mock"],
        &config,
    );
    assert!(ok, "{err}");
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("sk-px-"))
        .unwrap_or_else(|| panic!("no secret printed: {out}"))
        .to_owned();
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap_or_else(|| panic!("no id printed: {out}"))
        .to_owned();
    let (ok, list, err) = run_cli(&["keys", "list"], &config);
    assert!(ok, "{err}");
    assert!(list.contains(&id) && list.contains("from-cli"), "{list}");
    assert!(
        !list.contains(&secret[6..]),
        "the list shows the secret: {list}"
    );
    let (ok, json_list, err) = run_cli(&["keys", "list", "--json"], &config);
    assert!(ok, "{err}");
    assert!(!json_list.contains(&secret[6..]));
    let keys: Value = serde_json::from_str(&json_list).unwrap();
    let prefix = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()["prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        secret.starts_with(prefix.trim_end_matches("...")) && list.contains(&prefix),
        "{prefix}: {list}"
    );

    // The key made offline works on a gateway started on that database; revoked from the
    // CLI while it runs, it stops working there.
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&config);
    let served = Served::start(command);
    let chat = |key: &str| {
        Answer::read(
            client
                .post(served.url("/v1/chat/completions"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(chat_body("mock", "cli key").to_string()),
        )
    };
    assert_eq!(chat(&secret).await.status, 200);
    let (ok, out, err) = run_cli(&["keys", "revoke", &id], &config);
    assert!(ok, "{err}");
    assert!(out.contains(&id), "{out}");
    let took = eventually(Duration::from_secs(2), || async {
        chat(&secret).await.status == 401
    })
    .await;
    assert!(
        took.is_some(),
        "the running gateway still takes a key revoked by the CLI"
    );
    let (ok, list, _) = run_cli(&["keys", "list"], &config);
    assert!(ok);
    assert!(!list.contains(&id), "{list}");
    let (ok, list, _) = run_cli(&["keys", "list", "--all"], &config);
    assert!(ok);
    assert!(list.contains(&id) && list.contains("revoked"), "{list}");
    let (ok, _, err) = run_cli(&["keys", "revoke", "key_nope"], &config);
    assert!(!ok);
    assert!(err.contains("key_nope"), "{err}");
    served.stop();
    let _ = std::fs::remove_file(&config);
}

// ------------------------------------------------------------------ the database going away

/// A TCP proxy in front of PostgreSQL that can be cut (every connection closed, new ones
/// dropped at once) and restored.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: &str) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let target = target.to_owned();
        let accept = {
            let (cut, connections) = (cut.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        CuttableProxy {
            addr,
            cut,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn with_the_database_away_requests_succeed_and_every_record_arrives_later() {
    let base = postgres_base();
    let schema = postgres_schema().await;
    let target = base
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let proxy = CuttableProxy::start(&target).await;
    let through_proxy = base.replacen(&target, &proxy.addr.to_string(), 1);
    let spill = temp_path("ledger.spill");
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock).section(&format!(
        "[storage]\ndatabase = \"{}\"\n\n[storage.ledger]\nflush_interval = \"50ms\"\nmax_buffered = 50\nspill_file = \"{}\"\n",
        postgres_url(&through_proxy, &schema),
        spill.display()
    )))
    .await;
    let (_, secret) = create_key(&gw, json!({"name": "during-outage"})).await;
    let direct = proxima::store::Store::connect(&postgres_url(&base, &schema))
        .await
        .unwrap();
    let ready = || async {
        let answer = gw.get("/health/ready").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    };
    assert_eq!(ready().await["database"], "ok");

    // A few requests before, most during the outage.
    let mut n = 0;
    for _ in 0..10 {
        assert_eq!(
            gw.chat_as(&secret, chat_body("m1", "before")).await.status,
            200
        );
        n += 1;
    }
    assert_ledger_rows(&direct, 10, Duration::from_secs(3)).await;

    proxy.cut();
    for i in 0..150 {
        let key = if i % 2 == 0 { secret.as_str() } else { MASTER };
        let answer = gw
            .chat_as(key, chat_body("m2", "while the database is away"))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        n += 1;
    }
    let health = eventually(Duration::from_secs(12), || async {
        let health = ready().await;
        health["database"] == "unreachable" && health["usage_records_spilled"].as_u64() > Some(0)
    })
    .await;
    let status = ready().await;
    assert!(
        health.is_some(),
        "/health/ready never said the database was unreachable and records spilled: {status}"
    );
    assert!(spill.exists(), "no spill file at {}", spill.display());
    // Still serving, with the virtual key known from before.
    for _ in 0..10 {
        assert_eq!(
            gw.chat_as(&secret, chat_body("m1", "still")).await.status,
            200
        );
        n += 1;
    }
    assert_eq!(
        direct.count_usage().await.unwrap(),
        10,
        "nothing got through the cut"
    );

    proxy.restore();
    assert_ledger_rows(&direct, n, Duration::from_secs(15)).await;
    let took = eventually(Duration::from_secs(3), || async { !spill.exists() }).await;
    assert!(took.is_some(), "the spill file is still there");
    let took = eventually(Duration::from_secs(3), || async {
        let health = ready().await;
        health["database"] == "ok" && health["usage_records_spilled"] == 0
    })
    .await;
    assert!(took.is_some(), "{}", ready().await);
    direct.close().await;
    gw.shutdown().await;
}

// ------------------------------------------------------------------ JWT callers

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "proxima-gateway";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn sign(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("jwt_rsa_test_key.pem").as_bytes())
        .unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .unwrap()
}

fn claims(subject: &str) -> Value {
    let now = proxima::clock::now_ms() / 1000;
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 600,
        "team": "research",
    })
}

#[tokio::test]
async fn jwt_callers_are_authenticated_restricted_and_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(admin_conf(&mock).section(&format!(
        "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\npublic_key = '''\n{}'''\n",
        fixture("jwt_rsa_test_key.pub.pem")
    )))
    .await;

    let token = sign(&claims("alice"));
    let answer = gw.chat_as(&token, chat_body("m1", "from alice")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content(), "from alice");
    let answer = chat_x_api_key(&gw, &token, "m2").await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // The models claim restricts.
    let mut limited = claims("bob");
    limited["models"] = json!(["m1"]);
    let limited = sign(&limited);
    assert_eq!(gw.chat_as(&limited, chat_body("m1", "x")).await.status, 200);
    gw.chat_as(&limited, chat_body("m2", "x"))
        .await
        .assert_error(403, "model_not_allowed");

    // Refused: expired, another audience, another issuer, a forged signature, no subject.
    let mut expired = claims("alice");
    expired["exp"] = json!(proxima::clock::now_ms() / 1000 - 3600);
    let mut audience = claims("alice");
    audience["aud"] = json!("someone-else");
    let mut issuer = claims("alice");
    issuer["iss"] = json!("https://evil.example.test");
    let mut no_subject = claims("alice");
    no_subject.as_object_mut().unwrap().remove("sub");
    let forged = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload = claims("mallory");
        payload["models"] = Value::Null;
        use base64_like::encode;
        parts[1] = encode(payload.to_string().as_bytes());
        parts.join(".")
    };
    for (what, bad) in [
        ("expired", sign(&expired)),
        ("audience", sign(&audience)),
        ("issuer", sign(&issuer)),
        ("no subject", sign(&no_subject)),
        ("forged", forged),
    ] {
        let answer = gw.chat_as(&bad, chat_body("m1", "x")).await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        answer.assert_error(401, "invalid_api_key");
    }
    // A JWT caller is no admin.
    assert_eq!(
        gw.admin(&token, Method::GET, "/admin/keys", None)
            .await
            .status,
        403
    );

    // The ledger names the subject and the team from the claim.
    let store = gw.store().await;
    assert_ledger_rows(&store, 4, Duration::from_secs(3)).await;
    let alice = all_logs(&gw, &[("key", "jwt:alice".into())], 10).await;
    assert_eq!(alice.len(), 2, "{alice:?}");
    for row in &alice {
        assert_eq!(row["team"], "research", "{row}");
        assert_eq!(row["key_name"], "alice", "{row}");
        assert_eq!(row["status"], 200, "{row}");
    }
    let bob = all_logs(&gw, &[("key", "jwt:bob".into())], 10).await;
    let mut statuses: Vec<i64> = bob.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 403]);
    let by_team = usage_report(&gw, "by=team").await;
    let research = by_team["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "research")
        .unwrap_or_else(|| panic!("{by_team}"));
    assert_eq!(research["requests"], 4);
}

/// Unpadded base64url, enough to forge a JWT payload.
mod base64_like {
    pub fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

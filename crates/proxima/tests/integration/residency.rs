//! Residency: a caller with regions (its key's, its team's, or both intersected) is routed only
//! to targets whose provider is in them — first attempts, retries and fallbacks — and a model
//! with no such target is `403 model_not_allowed`.

use mock_upstream::{MockUpstream, Reply};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-residency-3b7e";

struct Regions {
    gw: Gateway,
    eu: MockUpstream,
    us: MockUpstream,
    /// A provider with no region.
    nowhere: MockUpstream,
}

/// Providers `eu`, `us` and `nowhere` (no region), each at its own mock. Model `chat` has a
/// target at each, round robin, and falls back to `us-chat` (only in us); `us-only` has only a
/// us target.
async fn regions() -> Regions {
    let eu = MockUpstream::start().await.unwrap();
    let us = MockUpstream::start().await.unwrap();
    let nowhere = MockUpstream::start().await.unwrap();
    let conf = Conf::new()
        .server(&format!("master_key = \"{MASTER}\""))
        .openai_with("eu", &eu, "region = \"eu\"")
        .openai_with("us", &us, "region = \"us\"")
        .openai("nowhere", &nowhere)
        .section(
            "[models.chat]\nstrategy = \"round-robin\"\nretries = 2\nfallbacks = [\"us-chat\"]\n\
             targets = [{ provider = \"us\", model = \"m\" }, { provider = \"eu\", model = \"m\" }, { provider = \"nowhere\", model = \"m\" }]\n",
        )
        .model("us-chat", "us", "m")
        .model("us-only", "us", "m")
        .section(
            "[keys.eu]\nkey = \"sk-residency-eu-0000000000\"\nregions = [\"eu\"]\n\
             [keys.anywhere]\nkey = \"sk-residency-any-0000000000\"\n",
        );
    Regions {
        gw: Gateway::start(conf).await,
        eu,
        us,
        nowhere,
    }
}

const EU_KEY: &str = "sk-residency-eu-0000000000";
const ANY_KEY: &str = "sk-residency-any-0000000000";

fn counts(r: &Regions) -> (usize, usize, usize) {
    (
        r.eu.request_count(),
        r.us.request_count(),
        r.nowhere.request_count(),
    )
}

fn model_ids(answer: &Answer) -> Vec<String> {
    answer.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_eu_key_is_only_ever_served_in_the_eu() {
    let r = regions().await;
    for i in 0..30 {
        let answer =
            r.gw.chat_as(EU_KEY, chat_body("chat", &format!("hi {i}")))
                .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(counts(&r), (30, 0, 0), "(eu, us, no region)");
    let mut sse =
        r.gw.stream_with(
            r.gw.request_as(EU_KEY, Method::POST, "/v1/chat/completions"),
            stream_body("chat", "streamed"),
        )
        .await;
    assert_eq!(sse.status, 200);
    sse.data().await;
    assert_eq!(counts(&r), (31, 0, 0));
    // A key without regions uses every target, the one without a region too.
    for i in 0..6 {
        let answer =
            r.gw.chat_as(ANY_KEY, chat_body("chat", &format!("hi {i}")))
                .await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(counts(&r), (33, 2, 2));
}

#[tokio::test]
async fn when_the_eu_target_fails_an_eu_key_does_not_fail_over_to_the_us() {
    let r = regions().await;
    for _ in 0..3 {
        r.eu.enqueue(Reply::error(500, "eu is down"));
    }
    let answer = r.gw.chat_as(EU_KEY, chat_body("chat", "hi")).await;
    let error = answer.assert_error(502, "upstream_error");
    assert!(
        error["message"].as_str().unwrap().contains("eu is down"),
        "{error}"
    );
    // The first attempt and two retries, all in the eu; no target or fallback elsewhere.
    assert_eq!(counts(&r), (3, 0, 0));
    // The same failure for a caller without regions falls over to the other targets.
    r.eu.enqueue(Reply::error(500, "eu is down"));
    for _ in 0..3 {
        assert_eq!(
            r.gw.chat_as(ANY_KEY, chat_body("chat", "hi")).await.status,
            200
        );
    }
    assert!(r.us.request_count() + r.nowhere.request_count() >= 2);
}

#[tokio::test]
async fn a_model_with_no_target_in_the_callers_regions_is_not_allowed() {
    let r = regions().await;
    let answer = r.gw.chat_as(EU_KEY, chat_body("us-only", "hi")).await;
    let error = answer.assert_error(403, "model_not_allowed");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`us-only`") && message.contains("(eu)") && message.contains("region"),
        "{message}"
    );
    assert_eq!(error["param"], "model");
    assert_eq!(counts(&r), (0, 0, 0));
    // On /v1/messages in the Anthropic shape.
    let answer =
        r.gw.send(r.gw.post_as(
            EU_KEY,
            "/v1/messages",
            &json!({"model": "us-only", "max_tokens": 10,
                        "messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["error"]["type"], "permission_error");
    // The model list shows what the key can use.
    let listed = model_ids(
        &r.gw
            .send(r.gw.request_as(EU_KEY, Method::GET, "/v1/models"))
            .await,
    );
    assert_eq!(listed, vec!["chat".to_string()]);
    let listed = model_ids(
        &r.gw
            .send(r.gw.request_as(ANY_KEY, Method::GET, "/v1/models"))
            .await,
    );
    assert_eq!(listed, vec!["chat", "us-chat", "us-only"]);
}

/// A virtual key made through the admin API with `body`; its secret.
async fn virtual_key(gw: &Gateway, body: Value) -> String {
    let created = gw
        .admin(MASTER, Method::POST, "/admin/keys", Some(&body))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    created.json()["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn team_regions_apply_to_its_keys_and_meet_the_keys_own() {
    let r = regions().await;
    let team =
        r.gw.admin(
            MASTER,
            Method::POST,
            "/admin/teams",
            Some(&json!({"name": "eu-team", "regions": ["eu"]})),
        )
        .await;
    assert_eq!(team.status, 201, "{}", team.text());
    let plain = virtual_key(&r.gw, json!({"name": "plain", "team": "eu-team"})).await;
    let both = virtual_key(
        &r.gw,
        json!({"name": "both", "team": "eu-team", "regions": ["eu", "us"]}),
    )
    .await;
    let apart = virtual_key(
        &r.gw,
        json!({"name": "apart", "team": "eu-team", "regions": ["us"]}),
    )
    .await;
    for key in [&plain, &both] {
        for i in 0..6 {
            let answer = r.gw.chat_as(key, chat_body("chat", &format!("{i}"))).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        // The team's eu and the key's eu+us meet in the eu.
        let refused = r.gw.chat_as(key, chat_body("us-only", "hi")).await;
        refused.assert_error(403, "model_not_allowed");
    }
    assert_eq!(counts(&r), (12, 0, 0));
    // A key in us in an eu team has no region left: nothing can serve it.
    let refused = r.gw.chat_as(&apart, chat_body("chat", "hi")).await;
    let error = refused.assert_error(403, "model_not_allowed");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("none in common"),
        "{error}"
    );
    assert_eq!(counts(&r), (12, 0, 0));
}

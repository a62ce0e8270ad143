//! `/v1/vector_stores`: stores made from uploaded files, ingestion in the background with
//! true counts, hybrid search that returns chunks (not files), attribute filters, the wall
//! between teams, ledger rows for the embedding calls, and replicas sharing one database.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::files::upload_ok;
use crate::harness::*;

const ALICE: &str = "sk-alice-vectors-red-0123456789";
const BOB: &str = "sk-bob-vectors-blue-0123456789";

/// Two keys in two teams, and the built-in mock as the embedding model.
fn conf(extra: &str) -> Conf {
    Conf::new().section(&format!(
        "[keys.alice]\nkey = \"{ALICE}\"\nteam = \"red\"\n\n\
         [keys.bob]\nkey = \"{BOB}\"\nteam = \"blue\"\n\n\
         [providers.m]\nkind = \"mock\"\n\n\
         [models.embed]\ntargets = [{{ provider = \"m\", model = \"mock-embed\" }}]\n\n\
         [context]\nembedding_model = \"embed\"\n\n{extra}"
    ))
}

async fn call(gw: &Gateway, key: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = gw.request_as(key, method, path);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    gw.send(request).await
}

async fn ok(gw: &Gateway, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let answer = call(gw, key, method, path, body).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    answer.json()
}

/// Waits until the store has no file in progress; returns it.
async fn settled(gw: &Gateway, key: &str, store: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = ok(
            gw,
            key,
            Method::GET,
            &format!("/v1/vector_stores/{store}"),
            None,
        )
        .await;
        if last["file_counts"]["in_progress"] == 0 {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ingestion did not finish: {last}");
}

/// A 12,000-word document with one fact in its middle.
fn long_document() -> String {
    let filler = [
        "The committee reviewed the quarterly figures and found them in order.",
        "Several members asked about travel expenses and the new office lease.",
        "A long discussion followed on the merits of the proposed software upgrade.",
        "Minutes of the previous meeting were approved without amendment.",
    ];
    let mut text = String::new();
    let mut words = 0;
    let mut i = 0;
    while words < 12_000 {
        if words >= 6_000 && !text.contains("Zanzibar") {
            text.push_str("The spare key to the archive room is kept in the blue Zanzibar box. ");
        }
        let sentence = filler[i % filler.len()];
        text.push_str(sentence);
        text.push(if i % 5 == 4 { '\n' } else { ' ' });
        words += sentence.split_whitespace().count();
        i += 1;
    }
    text
}

fn search_body(query: &str) -> Value {
    json!({"query": query})
}

#[tokio::test]
async fn a_fact_in_the_middle_of_a_long_file_is_found_as_a_chunk() {
    let gw = Gateway::start(conf("")).await;
    let document = long_document();
    let file = upload_ok(&gw, ALICE, "minutes.txt", "assistants", document.as_bytes()).await;
    let other = upload_ok(
        &gw,
        ALICE,
        "recipes.md",
        "assistants",
        b"# Bread\nMix flour, water, salt and yeast. Bake at 230 degrees.",
    )
    .await;
    let store = ok(
        &gw,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"name": "office", "file_ids": [file["id"], other["id"]], "metadata": {"dept": "ops"}})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("vs_"), "{store}");
    assert_eq!(store["object"], "vector_store");
    assert_eq!(store["name"], "office");
    assert_eq!(store["metadata"]["dept"], "ops");
    assert_eq!(store["file_counts"]["total"], 2);
    // Counts are true at every moment: in progress plus done is always the total.
    let counts = &store["file_counts"];
    assert_eq!(
        counts["in_progress"].as_i64().unwrap() + counts["completed"].as_i64().unwrap(),
        2,
        "{store}"
    );

    let store = settled(&gw, ALICE, &id).await;
    assert_eq!(store["status"], "completed", "{store}");
    assert_eq!(store["file_counts"]["completed"], 2, "{store}");
    assert!(store["usage_bytes"].as_i64().unwrap() > document.len() as i64 / 2);

    let results = ok(
        &gw,
        ALICE,
        Method::POST,
        &format!("/v1/vector_stores/{id}/search"),
        Some(json!({"query": "Where is the spare key to the archive room kept?", "max_num_results": 3})),
    )
    .await;
    assert_eq!(results["object"], "vector_store.search_results.page");
    let data = results["data"].as_array().unwrap();
    assert!(!data.is_empty() && data.len() <= 3, "{results}");
    let top = &data[0];
    assert_eq!(top["file_id"], file["id"]);
    assert_eq!(top["filename"], "minutes.txt");
    let text = top["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("blue Zanzibar box"), "{text}");
    assert!(
        text.len() < document.len() / 20,
        "a chunk, not the file: {} bytes",
        text.len()
    );
    let scores: Vec<f64> = data.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));

    // The embedding calls of ingestion and search are the caller's, in the ledger.
    let store_db = gw.store().await;
    let rows = eventually(Duration::from_secs(5), || {
        let store_db = store_db.clone();
        async move {
            let filter = proxima::store::LogFilter {
                model: Some("embed".into()),
                ..Default::default()
            };
            let page = store_db.logs(&filter).await.unwrap();
            page.data
                .iter()
                .any(|r| r.key_name.as_deref() == Some("alice") && r.status == 200)
        }
    })
    .await;
    assert!(rows.is_some(), "no ledger row for the embedding calls");
}

/// A store of two policy files tagged by region, settled.
async fn regional_store(gw: &Gateway) -> (String, String, String) {
    let eu = upload_ok(
        gw,
        ALICE,
        "eu-policy.txt",
        "assistants",
        b"Refunds are paid within 14 days of the return arriving at the warehouse.",
    )
    .await;
    let us = upload_ok(
        gw,
        ALICE,
        "us-policy.txt",
        "assistants",
        b"Refunds are paid within 30 days once the returned parcel is scanned.",
    )
    .await;
    let store = ok(
        gw,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"name": "policies"})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    for (file, region, year) in [(&eu, "eu", 2024), (&us, "us", 2023)] {
        let added = ok(
            gw,
            ALICE,
            Method::POST,
            &format!("/v1/vector_stores/{id}/files"),
            Some(json!({"file_id": file["id"], "attributes": {"region": region, "year": year}})),
        )
        .await;
        assert_eq!(added["object"], "vector_store.file");
        assert_eq!(added["vector_store_id"], id.as_str());
        assert_eq!(added["attributes"]["region"], region);
        assert_eq!(added["chunking_strategy"]["type"], "static");
    }
    settled(gw, ALICE, &id).await;
    (
        id,
        eu["id"].as_str().unwrap().to_owned(),
        us["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn filters_and_result_counts_shape_the_search() {
    let gw = Gateway::start(conf("")).await;
    let (id, eu, us) = regional_store(&gw).await;
    let search = |body: Value| {
        let gw = &gw;
        let id = id.clone();
        async move {
            ok(
                gw,
                ALICE,
                Method::POST,
                &format!("/v1/vector_stores/{id}/search"),
                Some(body),
            )
            .await
        }
    };
    let files = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["file_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let both = search(search_body("how long until refunds are paid")).await;
    assert_eq!(files(&both).len(), 2, "{both}");
    let one =
        search(json!({"query": "how long until refunds are paid", "max_num_results": 1})).await;
    assert_eq!(files(&one).len(), 1);

    let eu_only = search(json!({
        "query": "how long until refunds are paid",
        "filters": {"type": "eq", "key": "region", "value": "eu"}
    }))
    .await;
    assert_eq!(files(&eu_only), [eu.as_str()]);
    assert_eq!(eu_only["data"][0]["attributes"]["region"], "eu");
    let recent_or_us = search(json!({
        "query": "refunds",
        "filters": {"type": "or", "filters": [
            {"type": "gte", "key": "year", "value": 2025},
            {"type": "eq", "key": "region", "value": "us"}
        ]}
    }))
    .await;
    assert_eq!(files(&recent_or_us), [us.as_str()]);

    // Changed attributes filter at once.
    ok(
        &gw,
        ALICE,
        Method::POST,
        &format!("/v1/vector_stores/{id}/files/{us}"),
        Some(json!({"attributes": {"region": "eu", "year": 2023}})),
    )
    .await;
    let eu_now = search(json!({
        "query": "refunds",
        "filters": {"type": "eq", "key": "region", "value": "eu"}
    }))
    .await;
    assert_eq!(files(&eu_now).len(), 2, "{eu_now}");

    // A removed file is no longer found; the upload itself stays.
    let removed = ok(
        &gw,
        ALICE,
        Method::DELETE,
        &format!("/v1/vector_stores/{id}/files/{eu}"),
        None,
    )
    .await;
    assert_eq!(removed["deleted"], true);
    let after = search(search_body("refunds paid")).await;
    assert_eq!(files(&after), [us.as_str()]);
    assert_eq!(
        call(&gw, ALICE, Method::GET, &format!("/v1/files/{eu}"), None)
            .await
            .status,
        200
    );

    // Bad searches say what is wrong.
    for (body, param) in [
        (
            json!({"query": "x", "max_num_results": 0}),
            "max_num_results",
        ),
        (
            json!({"query": "x", "filters": {"type": "like"}}),
            "filters",
        ),
        (json!({"query": 7}), "query"),
        (
            json!({"query": "x", "ranking_options": {"score_threshold": 2}}),
            "ranking_options.score_threshold",
        ),
    ] {
        let answer = call(
            &gw,
            ALICE,
            Method::POST,
            &format!("/v1/vector_stores/{id}/search"),
            Some(body),
        )
        .await;
        let error = answer.assert_error(400, "invalid_request");
        assert_eq!(error["param"], param, "{error}");
    }
}

#[tokio::test]
async fn another_team_sees_no_store_file_or_search() {
    let gw = Gateway::start(conf("")).await;
    let (id, eu, _) = regional_store(&gw).await;
    for (method, path, body) in [
        (Method::GET, format!("/v1/vector_stores/{id}"), None),
        (
            Method::POST,
            format!("/v1/vector_stores/{id}"),
            Some(json!({"name": "mine"})),
        ),
        (Method::GET, format!("/v1/vector_stores/{id}/files"), None),
        (
            Method::GET,
            format!("/v1/vector_stores/{id}/files/{eu}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/vector_stores/{id}/files/{eu}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/vector_stores/{id}/search"),
            Some(search_body("refunds")),
        ),
        (Method::DELETE, format!("/v1/vector_stores/{id}"), None),
    ] {
        let answer = call(&gw, BOB, method.clone(), &path, body).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text());
    }
    let bobs = ok(&gw, BOB, Method::GET, "/v1/vector_stores", None).await;
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);
    // Bob cannot put Alice's file in a store of his.
    let made = call(
        &gw,
        BOB,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"file_ids": [eu]})),
    )
    .await;
    assert_eq!(made.status, 404, "{}", made.text());
    assert_eq!(
        ok(&gw, BOB, Method::GET, "/v1/vector_stores", None).await["data"],
        json!([])
    );
    // Alice still has everything.
    let mine = ok(&gw, ALICE, Method::GET, "/v1/vector_stores", None).await;
    assert_eq!(mine["data"][0]["id"], id.as_str());
    assert_eq!(mine["data"][0]["file_counts"]["completed"], 2);
}

#[tokio::test]
async fn a_file_without_text_fails_with_its_reason_and_the_store_can_be_deleted() {
    let gw = Gateway::start(conf("")).await;
    let good = upload_ok(
        &gw,
        ALICE,
        "good.txt",
        "assistants",
        b"Plain words to index.",
    )
    .await;
    let bad = upload_ok(
        &gw,
        ALICE,
        "noise.bin",
        "assistants",
        &[0u8, 159, 146, 150, 0, 255, 1, 2],
    )
    .await;
    let store = ok(
        &gw,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"file_ids": [good["id"], bad["id"]], "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    let store = settled(&gw, ALICE, &id).await;
    assert_eq!(store["file_counts"]["completed"], 1, "{store}");
    assert_eq!(store["file_counts"]["failed"], 1, "{store}");
    let failed = ok(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/vector_stores/{id}/files?filter=failed"),
        None,
    )
    .await;
    let file = &failed["data"][0];
    assert_eq!(file["id"], bad["id"]);
    assert_eq!(file["status"], "failed");
    assert!(
        !file["last_error"]["message"].as_str().unwrap().is_empty(),
        "{file}"
    );
    let good_file = ok(
        &gw,
        ALICE,
        Method::GET,
        &format!(
            "/v1/vector_stores/{id}/files/{}",
            good["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        good_file["chunking_strategy"]["static"]["max_chunk_size_tokens"],
        200
    );

    let bad_chunking = call(
        &gw,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}})),
    )
    .await;
    bad_chunking.assert_error(400, "invalid_request");

    let deleted = ok(
        &gw,
        ALICE,
        Method::DELETE,
        &format!("/v1/vector_stores/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted["object"], "vector_store.deleted");
    assert_eq!(
        call(
            &gw,
            ALICE,
            Method::GET,
            &format!("/v1/vector_stores/{id}"),
            None
        )
        .await
        .status,
        404
    );
    let search = call(
        &gw,
        ALICE,
        Method::POST,
        &format!("/v1/vector_stores/{id}/search"),
        Some(search_body("words")),
    )
    .await;
    assert_eq!(search.status, 404);
}

#[tokio::test]
async fn file_batches_report_their_files() {
    let gw = Gateway::start(conf("")).await;
    let a = upload_ok(&gw, ALICE, "a.txt", "assistants", b"Apples grow on trees.").await;
    let b = upload_ok(
        &gw,
        ALICE,
        "b.txt",
        "assistants",
        b"Bananas grow in bunches.",
    )
    .await;
    let store = ok(
        &gw,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    let batch = ok(
        &gw,
        ALICE,
        Method::POST,
        &format!("/v1/vector_stores/{id}/file_batches"),
        Some(json!({"file_ids": [a["id"], b["id"]], "attributes": {"fruit": true}})),
    )
    .await;
    assert_eq!(batch["object"], "vector_store.files_batch");
    assert_eq!(batch["file_counts"]["total"], 2);
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    settled(&gw, ALICE, &id).await;
    let batch = ok(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/vector_stores/{id}/file_batches/{batch_id}"),
        None,
    )
    .await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["file_counts"]["completed"], 2);
    let files = ok(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/vector_stores/{id}/file_batches/{batch_id}/files"),
        None,
    )
    .await;
    assert_eq!(files["data"].as_array().unwrap().len(), 2);
    assert!(files["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["attributes"]["fruit"] == true));
    let missing = call(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/vector_stores/{id}/file_batches/vsfb_nope"),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn replicas_on_one_postgres_search_the_same_stores() {
    let schema = postgres_schema().await;
    let url = postgres_url(&postgres_base(), &schema);
    let storage = format!("[storage]\ndatabase = \"{url}\"\nsync_interval = \"200ms\"\n");
    let a = Gateway::start(conf(&storage)).await;
    let b = Gateway::start(conf(&storage)).await;
    let file = upload_ok(
        &a,
        ALICE,
        "faq.txt",
        "assistants",
        b"The gateway listens on port 8080 by default.",
    )
    .await;
    let store = ok(
        &a,
        ALICE,
        Method::POST,
        "/v1/vector_stores",
        Some(json!({"file_ids": [file["id"]]})),
    )
    .await;
    let id = store["id"].as_str().unwrap().to_owned();
    // Replica B searches before and after the file is ingested on A.
    let path = format!("/v1/vector_stores/{id}/search");
    let before = ok(
        &b,
        ALICE,
        Method::POST,
        &path,
        Some(search_body("which port")),
    )
    .await;
    settled(&a, ALICE, &id).await;
    let found = eventually(Duration::from_secs(5), || {
        let (b, path) = (&b, path.clone());
        async move {
            let page = ok(
                b,
                ALICE,
                Method::POST,
                &path,
                Some(search_body("which port")),
            )
            .await;
            page["data"][0]["filename"] == "faq.txt"
        }
    })
    .await;
    assert!(
        found.is_some(),
        "replica B never saw the file (before: {before})"
    );
    // Removed on B, gone on A.
    ok(
        &b,
        ALICE,
        Method::DELETE,
        &format!(
            "/v1/vector_stores/{id}/files/{}",
            file["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let gone = eventually(Duration::from_secs(5), || {
        let (a, path) = (&a, path.clone());
        async move {
            let page = ok(
                a,
                ALICE,
                Method::POST,
                &path,
                Some(search_body("which port")),
            )
            .await;
            page["data"].as_array().unwrap().is_empty()
        }
    })
    .await;
    assert!(gone.is_some(), "replica A still finds a removed file");
}

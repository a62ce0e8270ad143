//! `/v1/files`: multipart uploads, the list with its paging, the exact bytes back, deletion,
//! the upload limit of `[files] max_bytes`, bad forms, and the wall between teams.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const ALICE: &str = "sk-alice-team-red-0123456789";
const BOB: &str = "sk-bob-team-blue-0123456789";

/// Two keys in two teams, and `extra` config.
fn conf(extra: &str) -> Conf {
    Conf::new().section(&format!(
        "[keys.alice]\nkey = \"{ALICE}\"\nteam = \"red\"\n\n\
         [keys.bob]\nkey = \"{BOB}\"\nteam = \"blue\"\n\n{extra}"
    ))
}

/// The small two-page PDF of the extraction tests: binary, with compressed streams.
fn pdf() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/report.pdf"
    ))
    .unwrap()
}

/// A multipart/form-data body of `parts` (name, file name, content); returns its content
/// type and bytes, as an SDK sends them.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "proxima-test-boundary-7Hq2";
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(filename) => {
                format!("form-data; name=\"{name}\"; filename=\"{filename}\"\r\ncontent-type: application/octet-stream")
            }
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(format!("content-disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(gw: &Gateway, key: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Answer {
    let (content_type, body) = form(parts);
    gw.send(
        gw.request_as(key, Method::POST, "/v1/files")
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// Uploads `content` as `filename` for `purpose`.
async fn upload(gw: &Gateway, key: &str, filename: &str, purpose: &str, content: &[u8]) -> Answer {
    post_form(
        gw,
        key,
        &[
            ("purpose", None, purpose.as_bytes()),
            ("file", Some(filename), content),
        ],
    )
    .await
}

pub(crate) async fn upload_ok(
    gw: &Gateway,
    key: &str,
    filename: &str,
    purpose: &str,
    content: &[u8],
) -> Value {
    let answer = upload(gw, key, filename, purpose, content).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

async fn call(gw: &Gateway, key: &str, method: Method, path: &str) -> Answer {
    gw.send(gw.request_as(key, method, path)).await
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn uploaded_files_list_and_come_back_byte_for_byte_until_deleted() {
    let gw = Gateway::start(conf("")).await;
    let text = "Ada Lovelace wrote the first program.\n".as_bytes();
    let pdf = pdf();
    let before = proxima::clock::unix_now();
    let notes = upload_ok(&gw, ALICE, "notes.txt", "assistants", text).await;
    let report = upload_ok(&gw, ALICE, "dir/report.pdf", "user_data", &pdf).await;

    let id = notes["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("file-"), "{notes}");
    assert_eq!(notes["object"], "file");
    assert_eq!(notes["bytes"], text.len());
    assert_eq!(notes["filename"], "notes.txt");
    assert_eq!(notes["purpose"], "assistants");
    assert_eq!(notes["status"], "processed");
    assert!(notes["expires_at"].is_null() && notes["status_details"].is_null());
    let created = notes["created_at"].as_u64().unwrap();
    assert!(created >= before && created <= proxima::clock::unix_now());
    assert_eq!(report["bytes"], pdf.len());
    assert_eq!(report["filename"], "report.pdf", "the directory is dropped");
    let report_id = report["id"].as_str().unwrap().to_owned();

    // Retrieved as uploaded.
    let got = call(&gw, ALICE, Method::GET, &format!("/v1/files/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), notes);
    for (file, bytes, content_type) in [
        (&id, text, "text/plain; charset=utf-8"),
        (&report_id, pdf.as_slice(), "application/pdf"),
    ] {
        let content = call(
            &gw,
            ALICE,
            Method::GET,
            &format!("/v1/files/{file}/content"),
        )
        .await;
        assert_eq!(content.status, 200, "{}", content.text());
        assert_eq!(content.body.as_ref(), bytes);
        assert_eq!(content.header("content-type"), Some(content_type));
    }

    // Listed newest first by default; by purpose; a page at a time.
    let all = call(&gw, ALICE, Method::GET, "/v1/files").await.json();
    assert_eq!(all["object"], "list");
    assert_eq!(ids(&all), [report_id.clone(), id.clone()]);
    assert_eq!(
        (&all["first_id"], &all["last_id"]),
        (&json!(report_id), &json!(id))
    );
    assert_eq!(all["has_more"], false);
    let assistants = call(&gw, ALICE, Method::GET, "/v1/files?purpose=assistants").await;
    assert_eq!(ids(&assistants.json()), std::slice::from_ref(&id));
    let first = call(&gw, ALICE, Method::GET, "/v1/files?limit=1&order=asc")
        .await
        .json();
    assert_eq!(
        (ids(&first), &first["has_more"]),
        (vec![id.clone()], &json!(true))
    );
    let second = call(
        &gw,
        ALICE,
        Method::GET,
        &format!("/v1/files?limit=1&order=asc&after={id}"),
    )
    .await
    .json();
    assert_eq!(
        (ids(&second), &second["has_more"]),
        (vec![report_id.clone()], &json!(false))
    );
    call(&gw, ALICE, Method::GET, "/v1/files?limit=10001")
        .await
        .assert_error(400, "invalid_request");

    // Deleted: gone from every route.
    let deleted = call(&gw, ALICE, Method::DELETE, &format!("/v1/files/{id}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(
        deleted.json(),
        json!({"id": id, "object": "file", "deleted": true})
    );
    for (method, path) in [
        (Method::GET, format!("/v1/files/{id}")),
        (Method::GET, format!("/v1/files/{id}/content")),
        (Method::DELETE, format!("/v1/files/{id}")),
    ] {
        call(&gw, ALICE, method, &path)
            .await
            .assert_error(404, "not_found");
    }
    let left = call(&gw, ALICE, Method::GET, "/v1/files").await.json();
    assert_eq!(ids(&left), [report_id]);
    gw.shutdown().await;
}

#[tokio::test]
async fn uploads_are_limited_by_files_max_bytes_not_the_body_limit() {
    // The JSON routes' limit is below the file limit: uploads are not held to it.
    let gw =
        Gateway::start(conf("[files]\nmax_bytes = 1000\n").server("max_body_bytes = 500")).await;
    let exactly = vec![b'a'; 1000];
    let made = upload_ok(&gw, ALICE, "full.txt", "assistants", &exactly).await;
    assert_eq!(made["bytes"], 1000);

    // One byte over, and far over (refused from its content-length before it is read).
    for size in [1001, 80_000] {
        let answer = upload(&gw, ALICE, "big.txt", "assistants", &vec![b'a'; size]).await;
        let error = answer.assert_error(413, "request_too_large");
        assert!(
            error["message"].as_str().unwrap().contains("1000 bytes"),
            "{error}"
        );
    }
    let list = call(&gw, ALICE, Method::GET, "/v1/files").await.json();
    assert_eq!(ids(&list), [made["id"].as_str().unwrap()]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_form_gets_400_naming_the_part() {
    let gw = Gateway::start(conf("")).await;
    let no_purpose = post_form(&gw, ALICE, &[("file", Some("a.txt"), b"hi")]).await;
    assert_eq!(
        no_purpose.assert_error(400, "invalid_request")["param"],
        "purpose"
    );
    let no_file = post_form(&gw, ALICE, &[("purpose", None, b"assistants")]).await;
    assert_eq!(
        no_file.assert_error(400, "invalid_request")["param"],
        "file"
    );
    let unnamed = post_form(
        &gw,
        ALICE,
        &[("purpose", None, b"assistants"), ("file", None, b"hi")],
    )
    .await;
    assert_eq!(
        unnamed.assert_error(400, "invalid_request")["param"],
        "file"
    );
    let wrong = upload(&gw, ALICE, "a.txt", "memories", b"hi").await;
    let error = wrong.assert_error(400, "invalid_request");
    assert_eq!(error["param"], "purpose");
    assert!(
        error["message"].as_str().unwrap().contains("user_data"),
        "{error}"
    );
    let json = gw
        .send(
            gw.request_as(ALICE, Method::POST, "/v1/files")
                .header("content-type", "application/json")
                .body(r#"{"purpose": "assistants"}"#),
        )
        .await;
    let error = json.assert_error(400, "invalid_request");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data"),
        "{error}"
    );
    // An SDK's extra fields are read past.
    let extra = post_form(
        &gw,
        ALICE,
        &[
            ("purpose", None, b"batch"),
            ("expires_after[anchor]", None, b"created_at"),
            ("file", Some("a.jsonl"), b"{}"),
        ],
    )
    .await;
    assert_eq!(extra.status, 200, "{}", extra.text());
    assert!(ids(&call(&gw, BOB, Method::GET, "/v1/files").await.json()).is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn files_are_walled_by_team() {
    let gw = Gateway::start(conf("")).await;
    let secret = upload_ok(
        &gw,
        ALICE,
        "plans.md",
        "assistants",
        b"# The vault code is 1234",
    )
    .await;
    let id = secret["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v1/files/{id}")),
        (Method::GET, format!("/v1/files/{id}/content")),
        (Method::DELETE, format!("/v1/files/{id}")),
    ] {
        call(&gw, BOB, method, &path)
            .await
            .assert_error(404, "not_found");
    }
    assert!(ids(&call(&gw, BOB, Method::GET, "/v1/files").await.json()).is_empty());
    let paged = call(&gw, BOB, Method::GET, &format!("/v1/files?after={id}")).await;
    assert_eq!(paged.assert_error(400, "invalid_request")["param"], "after");

    // Alice still has it, untouched.
    let content = call(&gw, ALICE, Method::GET, &format!("/v1/files/{id}/content")).await;
    assert_eq!(content.body.as_ref(), b"# The vault code is 1234");
    assert_eq!(
        content.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    gw.shutdown().await;
}

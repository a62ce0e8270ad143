//! The audit log: every admin action — keys and teams over the admin API and the command line,
//! config reloads by the API, a changed file and SIGHUP — with its actor, target, values and
//! outcome and never a secret, at `GET /admin/audit` with filters and pages, on SQLite and
//! PostgreSQL.

use std::path::Path;
use std::time::Duration;

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-audit-8d41f7a2c9";

/// A config file on `database` with the master key and one model, `extra` appended.
fn config_text(mock: &MockUpstream, database: &str, extra: &str) -> String {
    let mut text = one_model(mock)
        .server(&format!("master_key = \"{MASTER}\""))
        .section(&format!("[storage]\ndatabase = \"{database}\"\n"))
        .text();
    text.push_str(extra);
    text
}

/// Every audit entry matching `query` (`actor=ops`, say), newest first, read `limit` at a time.
async fn audit_entries(gw: &Gateway, query: &str, limit: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    for _page in 0..100 {
        let mut path = format!("/admin/audit?limit={limit}&{query}");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let answer = gw.admin(MASTER, Method::GET, &path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let page = answer.json();
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{page}");
        entries.extend(data.iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return entries,
        }
    }
    panic!("paging never ended");
}

/// `(action, actor_id, target, outcome)` of each entry, oldest first.
fn summary(entries: &[Value]) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    entries
        .iter()
        .rev()
        .map(|e| {
            (
                text(&e["action"]),
                text(&e["actor_id"]),
                text(&e["target"]),
                text(&e["outcome"]),
            )
        })
        .collect()
}

fn run_cli(args: &[&str], config: &Path) -> String {
    let output = proxima()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run proxima");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A word of `text` starting with `prefix`.
fn word<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}... in {text}"))
}

async fn every_admin_action_is_audited(database: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let path = temp_file("audit.toml", &config_text(&mock, database, ""));
    let gw = Gateway::start_file(&path).await;

    // The master key makes an admin key; the admin key does the rest.
    let (ops_id, ops_secret) = gw
        .create_key(MASTER, json!({"name": "ops", "admin": true}))
        .await;
    let ops = ops_secret.as_str();
    let made = gw
        .send(
            gw.request_as(ops, Method::POST, "/admin/keys")
                .header("x-request-id", "req-audit-ci")
                .header("content-type", "application/json")
                .body(
                    json!({"name": "ci", "models": ["chat"], "rpm": 60,
                           "metadata": {"owner": "build", "deploy_token": "tok-hidden-42"}})
                    .to_string(),
                ),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let (ci_id, ci_secret) = (
        made.json()["id"].as_str().unwrap().to_owned(),
        made.json()["key"].as_str().unwrap().to_owned(),
    );
    let patched = gw
        .admin(
            ops,
            Method::PATCH,
            &format!("/admin/keys/{ci_id}"),
            Some(&json!({"rpm": 5, "models": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let missing = gw
        .admin(
            ops,
            Method::PATCH,
            "/admin/keys/key_nope",
            Some(&json!({"rpm": 1})),
        )
        .await;
    assert_eq!(missing.status, 404);
    for (method, path, body, status) in [
        (
            Method::POST,
            "/admin/teams",
            Some(json!({"name": "platform", "rpm": 100})),
            201,
        ),
        (
            Method::PATCH,
            "/admin/teams/platform",
            Some(json!({"tpm": 1000})),
            200,
        ),
        (Method::DELETE, "/admin/teams/platform", None, 200),
    ] {
        let answer = gw.admin(ops, method, path, body.as_ref()).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text());
    }

    // A key that is not an admin's may not read the log.
    let refused = gw
        .send(gw.request_as(&ci_secret, Method::GET, "/admin/audit"))
        .await;
    refused.assert_error(403, "model_not_allowed");

    let revoked = gw
        .admin(
            MASTER,
            Method::DELETE,
            &format!("/admin/keys/{ci_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200);

    // A reload by the API, one refused, and one by the changed file (the system's).
    let reloaded = gw
        .admin(MASTER, Method::POST, "/admin/config/reload", None)
        .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    std::fs::write(
        &path,
        config_text(
            &mock,
            database,
            "\n[models.broken]\ntargets = [{ provider = \"nowhere\", model = \"m\" }]\n",
        ),
    )
    .unwrap();
    let broken = gw
        .admin(MASTER, Method::POST, "/admin/config/reload", None)
        .await;
    assert_eq!(broken.status, 400);
    std::fs::write(
        &path,
        config_text(
            &mock,
            database,
            "\n[models.more]\ntargets = [{ provider = \"up\", model = \"m\" }]\n",
        ),
    )
    .unwrap();
    let by_file = eventually(Duration::from_secs(10), || async {
        let entries = audit_entries(&gw, "actor=system", 50).await;
        entries.iter().any(|e| e["outcome"] == "ok")
    })
    .await;
    assert!(by_file.is_some(), "the changed file was not reloaded");

    // The command line's key changes.
    let out = run_cli(
        &["keys", "create", "--name", "from-cli", "--rpm", "7"],
        &path,
    );
    let (cli_id, cli_secret) = (
        word(&out, "key_").to_owned(),
        word(&out, "sk-px-").to_owned(),
    );
    run_cli(&["keys", "revoke", &cli_id], &path);

    let entries = audit_entries(&gw, "", 3).await;
    let config = path.display().to_string();
    let s = |v: &str| v.to_owned();
    let mut expected = vec![
        (s("key.create"), s("master"), ops_id.clone(), s("ok")),
        (s("key.create"), ops_id.clone(), ci_id.clone(), s("ok")),
        (s("key.update"), ops_id.clone(), ci_id.clone(), s("ok")),
        (s("key.update"), ops_id.clone(), s("key_nope"), s("error")),
        (s("team.create"), ops_id.clone(), s("platform"), s("ok")),
        (s("team.update"), ops_id.clone(), s("platform"), s("ok")),
        (s("team.delete"), ops_id.clone(), s("platform"), s("ok")),
        (s("key.revoke"), s("master"), ci_id.clone(), s("ok")),
        (s("config.reload"), s("master"), config.clone(), s("ok")),
        (s("config.reload"), s("master"), config.clone(), s("error")),
    ];
    // The file watcher may also have seen the broken file before the API did: its refusals
    // are the system's, and only its success is certain.
    let seen = summary(&entries);
    let (system, seen): (Vec<_>, Vec<_>) = seen.into_iter().partition(|e| e.1 == "system");
    assert!(system
        .iter()
        .all(|e| e.0 == "config.reload" && e.2 == config));
    assert!(system.iter().any(|e| e.3 == "ok"), "{system:?}");
    expected.extend([
        (s("key.create"), s("cli"), cli_id.clone(), s("ok")),
        (s("key.revoke"), s("cli"), cli_id.clone(), s("ok")),
    ]);
    assert_eq!(seen, expected);

    // What each entry says: names, request ids, the values set, how a refusal ended.
    let find = |action: &str, target: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} on {target}"))
            .clone()
    };
    let ci_made = find("key.create", &ci_id);
    assert_eq!(ci_made["actor_name"], "ops");
    assert_eq!(ci_made["request_id"], "req-audit-ci");
    assert_eq!(
        ci_made["detail"],
        json!({"name": "ci", "models": ["chat"], "rpm": 60,
               "metadata": {"owner": "build", "deploy_token": "[redacted]"}})
    );
    assert!(ci_made["at"].as_i64().unwrap() > 1_700_000_000_000);
    let ci_patched = find("key.update", &ci_id);
    assert_eq!(ci_patched["detail"], json!({"rpm": 5, "models": null}));
    assert!(ci_patched["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    let nope = find("key.update", "key_nope");
    assert_eq!(
        (nope["status"].as_i64(), nope["error_code"].as_str()),
        (Some(404), Some("not_found"))
    );
    let from_cli = find("key.create", &cli_id);
    assert_eq!(from_cli["detail"]["rpm"], 7);
    assert_eq!(from_cli["request_id"], Value::Null);

    // No secret anywhere: not the keys made, not their hashes, not the master key.
    let everything = serde_json::to_string(&entries).unwrap();
    for secret in [&ops_secret, &ci_secret, &cli_secret, &MASTER.to_owned()] {
        let hash = proxima::store::hex(&proxima::store::secret_digest(secret));
        assert!(
            !everything.contains(secret.as_str()),
            "a secret in {everything}"
        );
        assert!(!everything.contains(&hash), "a key hash in {everything}");
    }
    assert!(!everything.contains("tok-hidden-42"), "{everything}");

    // Filters: an actor by name or id, a kind of action, a target, a time window.
    assert_eq!(
        audit_entries(&gw, "actor=ops", 50).await.len(),
        audit_entries(&gw, &format!("actor={ops_id}"), 50)
            .await
            .len()
    );
    assert_eq!(audit_entries(&gw, "actor=ops", 50).await.len(), 6);
    let teams = audit_entries(&gw, "action=team", 50).await;
    assert_eq!(
        summary(&teams)
            .iter()
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>(),
        ["team.create", "team.update", "team.delete"]
    );
    let on_ci = audit_entries(&gw, &format!("target={ci_id}"), 50).await;
    assert_eq!(
        summary(&on_ci)
            .iter()
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>(),
        ["key.create", "key.update", "key.revoke"]
    );
    let revokes = audit_entries(&gw, "action=key.revoke&actor=cli", 50).await;
    assert_eq!(revokes.len(), 1);
    assert!(audit_entries(&gw, "since=2099-01-01", 50).await.is_empty());
    assert_eq!(
        audit_entries(&gw, "from=1h&until=2099-01-01", 50)
            .await
            .len(),
        entries.len()
    );
    assert!(audit_entries(&gw, "until=2020-01-01", 50).await.is_empty());
    for bad in ["after=nope", "since=someday", "colour=red"] {
        gw.admin(MASTER, Method::GET, &format!("/admin/audit?{bad}"), None)
            .await
            .assert_error(400, "invalid_request");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn every_admin_action_is_audited_on_sqlite() {
    every_admin_action_is_audited(&sqlite_url("audit.db")).await;
}

#[tokio::test]
async fn every_admin_action_is_audited_on_postgres() {
    let schema = postgres_schema().await;
    every_admin_action_is_audited(&postgres_url(&postgres_base(), &schema)).await;
}

#[tokio::test]
async fn a_sighup_reload_is_audited_as_the_system() {
    let mock = MockUpstream::start().await.unwrap();
    let database = sqlite_url("sighup.db");
    let path = temp_file("sighup.toml", &config_text(&mock, &database, ""));
    let mut command = proxima();
    command.args(["serve", "--config"]).arg(&path);
    let served = Served::start(command);
    let client = http_client();
    // Serving: the signal handler is in place (it is set up as the server starts).
    let live = Answer::read(client.get(served.url("/health/live"))).await;
    assert_eq!(live.status, 200);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let entries = || async {
        let answer = Answer::read(
            client
                .get(served.url("/admin/audit?actor=system"))
                .bearer_auth(MASTER),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()["data"].as_array().unwrap().clone()
    };
    // The row is written before the reload (`pending`) and completed after it.
    let seen = eventually(Duration::from_secs(10), || async {
        entries()
            .await
            .first()
            .is_some_and(|e| e["outcome"] != "pending")
    })
    .await;
    assert!(seen.is_some(), "no reload recorded as done");
    let entry = entries().await[0].clone();
    assert_eq!(
        (&entry["action"], &entry["actor_name"], &entry["outcome"]),
        (&json!("config.reload"), &json!("SIGHUP"), &json!("ok"))
    );
    assert_eq!(entry["target"], path.display().to_string());
    served.stop();
}

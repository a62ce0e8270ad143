//! `[storage] log_retention`: a purge pass moves ledger rows past retention into daily
//! rollups while the gateway serves and writes its ledger, and the usage reports and the
//! budgets seeded from the ledger stay the same, on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use mock_upstream::MockUpstream;
use proxima::store::{ledger_id, LedgerRow, LogFilter, DAY_MS};
use proxima::usage::retention::{purge, purge_before, Purge, BATCH_PAUSE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const MASTER: &str = "master-key-retention-3b9e51";
const RETENTION: Duration = Duration::from_secs(3 * 86_400);

/// A ledger row of `key` at `at` costing `cost_nanos`.
fn old_row(key: &str, team: Option<&str>, at: i64, cost_nanos: i64, n: i64) -> LedgerRow {
    LedgerRow {
        id: ledger_id(at),
        request_id: format!("req-old-{key}-{at}-{n}").into(),
        at,
        key_id: Some(key.into()),
        key_name: Some(format!("{key}-name").into()),
        team: team.map(Arc::from),
        user: None,
        model: if n % 3 == 0 { "chat" } else { "other" }.into(),
        provider: Some("up".into()),
        upstream_model: Some("gpt-upstream".into()),
        input_tokens: 100 + n % 17,
        output_tokens: 20 + n % 5,
        cached_tokens: n % 2,
        cost_nanos,
        latency_ms: 40 + n % 30,
        ttft_ms: None,
        status: if n % 11 == 0 { 502 } else { 200 },
        error_code: (n % 11 == 0).then(|| "upstream_error".into()),
        cache: None,
        saved_nanos: 0,
        attempts: 1,
        stream: false,
        metadata: None,
    }
}

/// A call that may cost a fraction of a cent at most.
fn small_call() -> Value {
    json!({"model": "chat", "max_tokens": 16, "messages": [user("hi")]})
}

/// Every usage report over whole days up to today's midnight (so calls made today stay out).
async fn reports(gw: &Gateway, now: i64) -> Vec<Value> {
    let from = proxima::clock::day(now - 20 * DAY_MS);
    let to = proxima::clock::day(now);
    let mut all = Vec::new();
    for by in ["key", "team", "model", "day"] {
        let path = format!("/admin/usage?by={by}&from={from}&to={to}");
        let answer = gw.admin(MASTER, Method::GET, &path, None).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let mut report = answer.json();
        // Where raw rows begin is said apart (it changes with a purge, the totals do not).
        let raw_from = report["rolled_up_before"].take();
        all.push(json!({"raw_from": raw_from}));
        all.push(report);
    }
    all
}

async fn a_purge_keeps_reports_and_budgets(database: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let conf = || {
        one_model_with(
            &mock,
            "price = { input_per_mtok = 1.0, output_per_mtok = 1.0 }",
        )
        .server(&format!("master_key = \"{MASTER}\""))
        .section(&format!(
            "[storage]\ndatabase = \"{database}\"\nlog_retention = \"3d\"\n"
        ))
    };
    let gw = Gateway::start(conf()).await;
    // Two keys with total budgets of 1 cent: one spent past it, one not, over twelve days.
    let (over, over_secret) = gw
        .create_key(
            MASTER,
            json!({"name": "over", "budget": {"usd": 0.01, "period": "total"}}),
        )
        .await;
    let (under, under_secret) = gw
        .create_key(
            MASTER,
            json!({"name": "under", "team": "blue", "budget": {"usd": 0.01, "period": "total"}}),
        )
        .await;
    let now = proxima::clock::now_ms();
    let mut rows = Vec::new();
    for day in 1..=12 {
        let at = now - day * DAY_MS - 3_600_000;
        rows.push(old_row(&over, None, at, 1_000_000, day));
        rows.push(old_row(&under, Some("blue"), at + 1, 500_000, day));
    }
    // And 20,000 rows of other traffic over days 4 to 12, so that the purge takes a while.
    for n in 0..20_000 {
        let at = now - 4 * DAY_MS - (n * 97_003) % (8 * DAY_MS);
        let team = ["red", "blue"][(n % 2) as usize];
        rows.push(old_row("filler", Some(team), at, 1_000 + n % 7, n));
    }
    let store = gw.store().await;
    for batch in rows.chunks(1_000) {
        store.insert_usage(batch).await.unwrap();
    }

    let before = reports(&gw, now).await;
    let refusal = gw.chat_as(&over_secret, chat_body("chat", "hi")).await;
    let over_message = refusal.assert_error(429, "budget_exceeded")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(over_message.contains("is spent"), "{over_message}");
    let under_call = gw.chat_as(&under_secret, small_call()).await;
    assert_eq!(under_call.status, 200, "{}", under_call.text());

    // The purge runs while the gateway serves calls and writes their ledger rows.
    let cutoff = purge_before(now, RETENTION);
    let to_purge = rows.iter().filter(|r| r.at < cutoff).count();
    let kept = rows.len() - to_purge;
    let purging = {
        let store = store.clone();
        tokio::spawn(async move { purge(&store, RETENTION, now, BATCH_PAUSE).await })
    };
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let (base, client) = (gw.url("/v1/chat/completions"), http_client());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                Answer::read(
                    client
                        .post(base)
                        .bearer_auth(MASTER)
                        .header("content-type", "application/json")
                        .body(chat_body("chat", "during the purge").to_string()),
                )
                .await
                .status
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let done = purging.await.unwrap().unwrap();
    assert_eq!(
        done,
        Purge::Done {
            rows: to_purge,
            before: cutoff
        }
    );
    // Raw rows older than retention are gone; the rest, and every call's row, are there.
    let old = LogFilter {
        to: Some(cutoff),
        ..LogFilter::default()
    };
    assert!(store.logs(&old).await.unwrap().data.is_empty());
    assert_ledger_rows(&store, (kept + 2 + 30) as i64, Duration::from_secs(5)).await;
    assert!(store.count_rollups().await.unwrap() > 0);
    assert_eq!(store.purged_before().await.unwrap(), Some(cutoff));
    let after = reports(&gw, now).await;
    assert_eq!(before[0], json!({"raw_from": null}));
    let raw_from = json!({"raw_from": proxima::clock::day(cutoff)});
    assert_eq!(after[0], raw_from);
    let totals = |reports: &[Value]| {
        reports
            .iter()
            .skip(1)
            .step_by(2)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(totals(&after), totals(&before));
    gw.shutdown().await;

    // A new gateway seeds the budgets from rollups and raw rows: the same spend as before.
    let gw = Gateway::start(conf()).await;
    let refusal = gw.chat_as(&over_secret, chat_body("chat", "hi")).await;
    let message = refusal.assert_error(429, "budget_exceeded")["message"].clone();
    assert_eq!(message, over_message.as_str());
    let under_call = gw.chat_as(&under_secret, small_call()).await;
    assert_eq!(under_call.status, 200, "{}", under_call.text());
    let spent = |key: String| {
        let store = store.clone();
        async move {
            store
                .spent_since(proxima::store::SpendColumn::Key, &key, 0)
                .await
                .unwrap()
        }
    };
    assert_eq!(spent(over).await, 12 * 1_000_000);
    assert!(spent(under).await > 12 * 500_000);
    assert_eq!(reports(&gw, now).await, after);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_purge_keeps_reports_and_budgets_on_sqlite() {
    a_purge_keeps_reports_and_budgets(&sqlite_url("r.db")).await;
}

#[tokio::test]
async fn a_purge_keeps_reports_and_budgets_on_postgres() {
    let schema = postgres_schema().await;
    a_purge_keeps_reports_and_budgets(&postgres_url(&postgres_base(), &schema)).await;
}

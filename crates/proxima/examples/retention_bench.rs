//! Ledger retention benchmark (run by `bench/retention.sh`): how long the usage ledger's batch
//! inserts take while a purge pass moves old rows into daily rollups, against the same inserts
//! without a purge, and how fast the purge moves rows — on the real store, SQLite or
//! PostgreSQL.
//!
//! The database is filled with `DAYS` days of `ROWS_PER_DAY` old rows (200 keys in 20 teams,
//! 6 models). Then the ledger writer is emulated as the gateway runs it at `RPS` requests a
//! second: a batch of `RPS / 5` rows every 200 ms (`[storage.ledger]`'s default flush
//! interval), first for `QUIET` seconds alone, then for as long as a purge pass with the
//! gateway's own batch size and pause runs beside it. Reported: insert-batch latency p50, p99
//! and max in each phase, and the purge's rows per second.
//!
//! `PROXIMA_BENCH_DATABASE=postgres://...` runs it in a fresh schema of that database; the
//! default is a SQLite file in a temp dir.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proxima::store::{ledger_id, LedgerRow, Store, DAY_MS};
use proxima::usage::retention::{purge, Purge, BATCH_PAUSE, BATCH_ROWS};
use tokio::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A ledger row at `at`, like the gateway writes them.
fn row(at: i64) -> LedgerRow {
    let key = fastrand::u32(..200);
    let model = ["fast", "smart", "embed", "mini", "claude", "gemini"][fastrand::usize(..6)];
    let input = fastrand::i64(20..4_000);
    let output = fastrand::i64(1..800);
    LedgerRow {
        id: ledger_id(at),
        request_id: format!("req_{:032x}", fastrand::u128(..)).into(),
        at,
        key_id: Some(format!("key_{key:08}").into()),
        key_name: Some(format!("service-{key}").into()),
        team: Some(format!("team-{}", key % 20).into()),
        user: (key % 3 == 0).then(|| format!("user-{}", fastrand::u32(..10_000)).into()),
        model: model.into(),
        provider: Some("openai".into()),
        upstream_model: Some(format!("{model}-2026-01-01").into()),
        input_tokens: input,
        output_tokens: output,
        cached_tokens: input / 4,
        cost_nanos: input * 150 + output * 600,
        latency_ms: fastrand::i64(80..3_000),
        ttft_ms: Some(fastrand::i64(50..600)),
        status: if fastrand::u8(..100) < 2 { 502 } else { 200 },
        error_code: None,
        cache: Some("miss".into()),
        saved_nanos: 0,
        attempts: 1,
        stream: fastrand::bool(),
        metadata: Some(r#"{"app":"search","env":"prod"}"#.into()),
    }
}

/// Bytes the ledger table takes on disk (PostgreSQL: with its index and TOAST; SQLite: the whole
/// file, which holds little else here).
async fn ledger_bytes(url: &str) -> i64 {
    use sqlx::{Connection, Row};
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let row = sqlx::query("SELECT pg_total_relation_size('usage_ledger') AS n")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        row.get("n")
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let row = sqlx::query(
            "SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        row.get("n")
    }
}

/// The store, its URL, and what it is.
async fn open() -> (Store, String, String) {
    match std::env::var("PROXIMA_BENCH_DATABASE") {
        Ok(base) if base.starts_with("postgres") => {
            use sqlx::Connection;
            let schema = format!("proxima_bench_{:08x}", fastrand::u32(..));
            let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let url = format!("{base}?options=-c%20search_path%3D{schema}");
            let store = Store::open(&url).await.unwrap();
            (store, url, format!("PostgreSQL (schema {schema})"))
        }
        _ => {
            let dir =
                std::env::temp_dir().join(format!("proxima-retention-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            let store = Store::open(&url).await.unwrap();
            (store, url.clone(), format!("SQLite ({url})"))
        }
    }
}

/// Writes a batch of `rows_per_batch` new rows every 200 ms until `stop`; returns each
/// insert's latency.
async fn ledger_writer(
    store: Store,
    rows_per_batch: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = proxima::clock::now_ms();
        let batch: Vec<LedgerRow> = (0..rows_per_batch).map(|_| row(now)).collect();
        let started = Instant::now();
        store.insert_usage(&batch).await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn line(database: &str, phase: &str, mut latencies: Vec<Duration>, purge: &str) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "| {database} | {phase} | {} | {} | {} | {} | {purge} |",
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap())
    )
}

#[tokio::main]
async fn main() {
    let days = env("DAYS", 5) as i64;
    let per_day = env("ROWS_PER_DAY", 200_000) as i64;
    let rps = env("RPS", 2_000) as usize;
    let quiet = Duration::from_secs(env("QUIET", 20));
    let (store, url, described) = open().await;
    let database = if described.starts_with("SQLite") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    eprintln!("{described}: filling {days} days of {per_day} rows");

    // Old rows, two days and more before now: a retention of one day purges all of them.
    let now = proxima::clock::now_ms();
    let oldest = now - (days + 2) * DAY_MS;
    let filled = Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..days * per_day {
        batch.push(row(oldest + i * (DAY_MS / per_day)));
        if batch.len() == 5_000 {
            store.insert_usage(&batch).await.unwrap();
            batch.clear();
        }
    }
    store.insert_usage(&batch).await.unwrap();
    let rows = store.count_usage().await.unwrap();
    let bytes = ledger_bytes(&url).await;
    let per_row = bytes / rows.max(1);
    eprintln!("filled {rows} rows in {:.0?}", filled.elapsed());
    // What a day of raw rows costs at this size: the case for `log_retention`.
    let per_hour = per_row as f64 * rps as f64 * 3_600.0 / 1e9;
    let size = format!(
        "{database}: the ledger takes {per_row} bytes a row on disk: {per_hour:.1} GB an hour at {rps} requests a second"
    );

    let per_batch = rps / 5;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(store.clone(), per_batch, stop.clone()));
    tokio::time::sleep(quiet).await;
    stop.store(true, Ordering::Relaxed);
    let alone = writer.await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(ledger_writer(store.clone(), per_batch, stop.clone()));
    let started = Instant::now();
    let done = purge(&store, Duration::from_secs(86_400), now, BATCH_PAUSE)
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    let Purge::Done { rows, .. } = done else {
        panic!("another purge holds the lock")
    };
    let rate = rows as f64 / took.as_secs_f64();
    eprintln!(
        "purged {rows} rows in {took:.1?} into {} rollup rows",
        store.count_rollups().await.unwrap()
    );

    println!(
        "| database | ledger writer ({rps} rows/s, a batch of {per_batch} every 200 ms) | batches | p50 ms | p99 ms | max ms | purge |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!("{}", line(database, "alone", alone, ""));
    println!(
        "{}",
        line(
            database,
            "during a purge",
            during,
            &format!(
                "{rows} rows in {:.1} s: {rate:.0} rows/s ({BATCH_ROWS} a transaction, {} ms pause)",
                took.as_secs_f64(),
                BATCH_PAUSE.as_millis()
            )
        )
    );
    println!();
    println!("{size}.");
    store.close().await;
}

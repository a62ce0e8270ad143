//! Conversation-context benchmark (run by `bench/context.sh`): how long building a turn's
//! prompt and storing a turn take as the history grows, and how many tokens a long
//! conversation sends upstream with the `summarize` strategy against resending the whole
//! history.
//!
//! Both use the real store (a SQLite file, or PostgreSQL with `PROXIMA_BENCH_POSTGRES=URL`)
//! and the real prompt builder, `proxima::context::build_prompt`: the same reads, recall
//! search and assembly a turn does on the request path. With `PROXIMA_MINILM_DIR=DIR` the
//! LoCoMo table also recalls by meaning, the items and questions embedded by the local
//! all-MiniLM-L6-v2 run directly (the gateway makes the same vectors through its `local`
//! provider).
#![allow(clippy::expect_used)]

use std::time::Duration;

use tokio::time::Instant;

use proxima::canonical::{Message, Role};
use proxima::config::ContextStrategy;
use proxima::context::{build_prompt, items, meaning, Budgeted};
use proxima::store::Store;

/// The gateway's allocator, so that a turn costs what it costs in the gateway (SQLite's own
/// allocations included: they go through the system's malloc in both).
#[global_allocator]
static GLOBAL: proxima::allocator::MiMalloc = proxima::allocator::MiMalloc;

const TOPICS: &[&str] = &[
    "weather",
    "garden",
    "invoice",
    "kernel",
    "recipe",
    "holiday",
    "budget",
    "football",
    "piano",
    "database",
    "mortgage",
    "camera",
    "bicycle",
    "novel",
    "vaccine",
    "harbour",
    "telescope",
];

/// A sentence of `words` words on a topic, varied enough that recall has something to rank.
fn sentence(rng: &mut fastrand::Rng, words: usize) -> String {
    let mut text = String::from("Well,");
    for _ in 0..words {
        text.push(' ');
        // Words drawn with a Zipf-like skew, as in real text: a few common, most rare.
        if rng.u8(..30) == 0 {
            text.push_str(TOPICS[rng.usize(..TOPICS.len())]);
        } else {
            let rank = (rng.f64().powi(3) * 20_000.0) as u32;
            text.push_str(&format!("w{rank}"));
        }
    }
    text
}

/// The local all-MiniLM-L6-v2, run directly: what recall by meaning embeds with here.
struct MiniLm(std::sync::Arc<proxima::providers::local::Embedder>);

impl meaning::Embed for MiniLm {
    fn embed(
        &self,
        texts: Vec<String>,
    ) -> futures_util::future::BoxFuture<'_, proxima::error::Result<Vec<Vec<f32>>>> {
        Box::pin(async move { self.0.embed(texts).await.map(|e| e.vectors) })
    }
}

/// The store: PostgreSQL with `PROXIMA_BENCH_POSTGRES=URL`; else the SQLite file
/// `PROXIMA_BENCH_SQLITE=PATH`, whose stored histories later runs use again (storing 100,000
/// items takes minutes); else a new SQLite file in a temporary folder.
async fn open_store() -> Store {
    let url = std::env::var("PROXIMA_BENCH_POSTGRES").unwrap_or_else(|_| {
        if let Ok(path) = std::env::var("PROXIMA_BENCH_SQLITE") {
            return format!("sqlite://{path}");
        }
        let dir = std::env::temp_dir().join(format!("proxima-bench-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        format!("sqlite://{}", dir.join("bench.db").display())
    });
    Store::open(&url).await.expect("store")
}

/// On PostgreSQL, what autovacuum does after many inserts: statistics for the planner (without
/// them it takes a conversation for a few rows and sorts the whole of it to read the newest),
/// and the visibility map that lets postings be read from the index alone. Autovacuum may be
/// off on a test server, or not have come round yet.
async fn analyze_postgres() {
    let Ok(url) = std::env::var("PROXIMA_BENCH_POSTGRES") else {
        return;
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(
        "VACUUM ANALYZE conversations, conversation_items, conversation_terms, \
         conversation_term_counts",
    )
    .execute(&mut conn)
    .await
    .expect("vacuum");
}

/// A conversation of `n` items, stored in batches as turns would store them: the same for the
/// same `n` (its own seed), and used again when the store holds it already. `true` when it
/// was stored now.
async fn history(store: &Store, n: usize) -> (String, bool) {
    let id = format!("bench-{n}");
    let created = store
        .create_conversation(&id, "team:bench", &serde_json::json!({}), 1)
        .await
        .expect("create");
    if created.is_none() {
        return (id, false);
    }
    let rng = &mut fastrand::Rng::with_seed(n as u64);
    let mut left = n;
    while left > 0 {
        let batch: Vec<_> = (0..left.min(500))
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                let words = if role == Role::User { 30 } else { 80 };
                items::new_item("message", Message::text(role, sentence(rng, words)))
            })
            .collect();
        left -= batch.len();
        store
            .append_items(&id, "team:bench", &batch, 2)
            .await
            .expect("append")
            .expect("owned");
    }
    (id, true)
}

/// Turns timed at each size (`TURNS=`, default 300): more, to profile a run.
fn timed_turns() -> usize {
    std::env::var("TURNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

async fn assembly_latency(store: &Store) {
    println!("## Building a turn's prompt against history length\n");
    println!(
        "budget 8,000 tokens, strategy window, recall off (0) and 4 turns; {} turns timed after 20 warm-up ones\n",
        timed_turns()
    );
    println!("| items in history | recall | p50 | p99 | max | prompt tokens (p50) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut rng = fastrand::Rng::with_seed(7);
    let sizes: Vec<usize> = std::env::var("SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![20, 1_000, 10_000, 100_000]);
    let mut histories = Vec::new();
    for n in sizes {
        let loading = Instant::now();
        let (id, fresh) = history(store, n).await;
        eprintln!("{n} items stored in {:?}", loading.elapsed());
        analyze_postgres().await;
        for recall in [0, 4] {
            let how = Budgeted {
                strategy: ContextStrategy::Window,
                recall,
                embedder: None,
                budget: 8_000,
            };
            let mut times = Vec::new();
            let mut tokens = Vec::new();
            for turn in 0..20 + timed_turns() {
                let new = [Message::text(Role::User, sentence(&mut rng, 20))];
                let started = Instant::now();
                let built = build_prompt(store, &id, &how, &[], &new, &[])
                    .await
                    .expect("build");
                let took = started.elapsed();
                if turn >= 20 {
                    times.push(took);
                    tokens.push(built.assembled.tokens);
                }
            }
            times.sort();
            tokens.sort_unstable();
            println!(
                "| {n} | {recall} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
                times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
                tokens[tokens.len() / 2],
            );
        }
        if fresh {
            histories.push((n, id));
        }
    }
    println!();
    // Storing is timed after all the prompts: its writes leave pages in SQLite's write-ahead
    // log that the prompts of the next history length would read through. Only on histories
    // stored in this run: each store-and-delete leaves the tables a little less tidy, and
    // runs that use the histories again should find them as stored.
    let mut stored = Vec::new();
    for (n, id) in histories {
        stored.push((n, storing_turns(store, &id).await));
    }
    println!("## Storing a turn against history length\n");
    if stored.is_empty() {
        println!("not timed: every history was stored by an earlier run\n");
        return;
    }
    println!(
        "a user message of 30 words and an answer of 80, their words indexed for recall; {APPENDS} turns timed\n"
    );
    println!("| items in history | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|");
    for (n, times) in stored {
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    println!();
}

/// Turns timed by `storing_turns`.
const APPENDS: usize = 200;

/// How long storing a turn (a question and its answer, as a turn's end stores them) takes on
/// conversation `id`, sorted: each timed from making the items (their words and tokens) to
/// the commit. The turns are deleted after, so that the history is of its length again when
/// a later run uses it.
async fn storing_turns(store: &Store, id: &str) -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(13);
    let mut times = Vec::with_capacity(APPENDS);
    let mut added = Vec::new();
    for _ in 0..APPENDS {
        let question = sentence(&mut rng, 30);
        let answer = sentence(&mut rng, 80);
        let started = Instant::now();
        let turn = [
            items::new_item("message", Message::text(Role::User, question)),
            items::new_item("message", Message::text(Role::Assistant, answer)),
        ];
        let records = store
            .append_items(id, "team:bench", &turn, 3)
            .await
            .expect("append")
            .expect("owned");
        times.push(started.elapsed());
        added.extend(records.into_iter().map(|r| r.id));
    }
    for item in added {
        store.delete_item(id, &item).await.expect("delete");
    }
    times.sort();
    times
}

/// A 200-turn conversation with `summarize`: after each turn, the items that left the
/// window are folded into a summary the way the summariser stores one (here a fixed text of
/// the summariser's maximum length, 800 words, so no model is needed).
async fn tokens_per_turn(store: &Store) {
    const TURNS: usize = 200;
    let mut rng = fastrand::Rng::with_seed(11);
    // The id draws from `rng` as it always has, so the turns are the ones reported before.
    let id = format!("bench-summarize-{}", rng.u64(..));
    store
        .create_conversation(&id, "team:bench", &serde_json::json!({}), 1)
        .await
        .expect("create")
        .expect("new id");
    let how = Budgeted {
        strategy: ContextStrategy::Summarize,
        recall: 4,
        embedder: None,
        // A 16k-token window, less a 4k answer and the safety margin.
        budget: 16_000 - 4_096 - 512,
    };
    let (mut sent, mut full, mut history_tokens) = (0u64, 0u64, 0u64);
    for _ in 0..TURNS {
        let words = rng.usize(40..160);
        let question = Message::text(Role::User, sentence(&mut rng, words));
        let new_tokens = items::tokens(&question);
        let built = build_prompt(store, &id, &how, &[], std::slice::from_ref(&question), &[])
            .await
            .expect("build");
        sent += built.assembled.tokens;
        full += history_tokens + new_tokens;
        let words = rng.usize(150..450);
        let answer = Message::text(Role::Assistant, sentence(&mut rng, words));
        let stored = items::split(&[question, answer]);
        history_tokens += stored.iter().map(|i| i.tokens).sum::<u64>();
        store
            .append_items(&id, "team:bench", &stored, 3)
            .await
            .expect("append")
            .expect("owned");
        let window_start = built.assembled.window_start.unwrap_or(built.next_seq);
        if window_start - (built.covers + 1) >= 8 {
            let summary = Message::text(Role::System, sentence(&mut rng, 800));
            let mut item = items::new_item(items::SUMMARY, summary);
            item.covers = Some(window_start - 1);
            store
                .append_items(&id, "team:bench", &[item], 4)
                .await
                .expect("append")
                .expect("owned");
        }
    }
    println!("## Tokens sent upstream over a {TURNS}-turn conversation\n");
    println!("16k-token window (budget {} tokens), strategy summarize, recall 4; user turns of 40–160 words, answers of 150–450\n", how.budget);
    println!("| | prompt tokens over all turns | per turn |");
    println!("|---|---:|---:|");
    println!(
        "| whole history resent every turn | {full} | {} |",
        full / TURNS as u64
    );
    println!(
        "| Proxima context (summary + recall + window) | {sent} | {} |",
        sent / TURNS as u64
    );
    println!(
        "\nratio: **{:.1}×** fewer tokens; on the last turn the whole history is {} tokens\n",
        full as f64 / sent as f64,
        history_tokens
    );
}

/// One LoCoMo conversation stored as a conversation: speaker A as the user, B as the
/// assistant. Returns its id, each dialogue id's text, and the whole history's tokens.
async fn store_locomo(
    store: &Store,
    sample: &serde_json::Value,
    embedder: Option<&MiniLm>,
) -> (String, std::collections::HashMap<String, String>, u64) {
    // locomo10.json nests the dialogue under `conversation`; the per-conversation files of
    // the repository's zip have it at the top.
    let conversation = if sample["conversation"].is_object() {
        &sample["conversation"]
    } else {
        sample
    };
    let speaker_a = conversation["speaker_a"].as_str().unwrap_or_default();
    let id = format!("locomo-{}", fastrand::u64(..));
    store
        .create_conversation(&id, "team:bench", &serde_json::json!({}), 1)
        .await
        .expect("create")
        .expect("new id");
    let mut texts = std::collections::HashMap::new();
    let mut tokens = 0;
    for session in 1.. {
        let Some(turns) = conversation[format!("session_{session}")].as_array() else {
            break;
        };
        let date = conversation[format!("session_{session}_date_time")]
            .as_str()
            .unwrap_or_default();
        let mut batch = Vec::new();
        for turn in turns {
            let speaker = turn["speaker"].as_str().unwrap_or_default();
            let text = format!(
                "[{date}] {speaker}: {}",
                turn["text"].as_str().unwrap_or_default()
            );
            let role = if speaker == speaker_a {
                Role::User
            } else {
                Role::Assistant
            };
            texts.insert(
                turn["dia_id"].as_str().unwrap_or_default().to_owned(),
                text.clone(),
            );
            let item = items::new_item("message", Message::text(role, text));
            tokens += item.tokens;
            batch.push(item);
        }
        let stored = store
            .append_items(&id, "team:bench", &batch, 2)
            .await
            .expect("append")
            .expect("owned");
        if let Some(embedder) = embedder {
            meaning::keep(embedder, store, &id, &stored)
                .await
                .expect("embed");
        }
    }
    (id, texts, tokens)
}

/// How often the assembled prompt holds a turn that answers the question, on the LoCoMo
/// long-conversation memory dataset (`LOCOMO=` the `locomo10.json` file, or the folder of
/// per-conversation files in the repository's `data/locomo10.zip`), and at what share of the
/// whole history's tokens.
async fn locomo_recall(store: &Store, path: &str) {
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).expect("LOCOMO file"))
            .expect("LOCOMO json")
    };
    let path = std::path::Path::new(path);
    let samples: Vec<serde_json::Value> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .expect("LOCOMO folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files.iter().map(|f| read(f)).collect()
    } else {
        match read(path) {
            serde_json::Value::Array(samples) => samples,
            one => vec![one],
        }
    };
    let embedder = std::env::var_os("PROXIMA_MINILM_DIR").map(|dir| {
        MiniLm(
            proxima::providers::local::Embedder::shared(std::path::Path::new(&dir))
                .expect("MiniLM"),
        )
    });
    let mut stored = Vec::new();
    let started = Instant::now();
    for sample in &samples {
        stored.push(store_locomo(store, sample, embedder.as_ref()).await);
    }
    let took = started.elapsed();
    println!("## Recall on LoCoMo ({} conversations)\n", samples.len());
    println!("Each conversation stored whole (speaker A as user, B as assistant), then every question with evidence asked as a new turn; a hit is a prompt that holds an evidence turn.\n");
    if embedder.is_some() {
        println!(
            "Stored and embedded in {:.1} s ({} items).\n",
            took.as_secs_f64(),
            stored.iter().map(|s| s.1.len()).sum::<usize>()
        );
    }
    println!("| budget | recall | by meaning | questions | any evidence in prompt | all evidence | prompt tokens / history tokens | p50 build time |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    let mut runs = vec![
        (2_000, 0, None),
        (2_000, 4, None),
        (4_000, 8, None),
        (8_000, 16, None),
    ];
    if let Some(embedder) = &embedder {
        runs.extend([
            (2_000, 4, Some(embedder)),
            (4_000, 8, Some(embedder)),
            (8_000, 16, Some(embedder)),
        ]);
    }
    for (budget, recall, by_meaning) in runs {
        let how = Budgeted {
            strategy: ContextStrategy::Window,
            recall,
            embedder: by_meaning.map(|e| e as &dyn meaning::Embed),
            budget,
        };
        let (mut asked, mut any, mut all) = (0u32, 0u32, 0u32);
        let (mut prompt_tokens, mut history_tokens) = (0u64, 0u64);
        let mut times = Vec::new();
        for (sample, (id, texts, tokens)) in samples.iter().zip(&stored) {
            for qa in sample["qa"].as_array().into_iter().flatten() {
                let evidence: Vec<&String> = qa["evidence"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str())
                    .filter_map(|e| texts.get(e))
                    .collect();
                let Some(question) = qa["question"].as_str() else {
                    continue;
                };
                if evidence.is_empty() {
                    continue;
                }
                let new = [Message::text(Role::User, question)];
                let started = Instant::now();
                let built = build_prompt(store, id, &how, &[], &new, &[])
                    .await
                    .expect("build");
                times.push(started.elapsed());
                let prompt: Vec<String> = built
                    .assembled
                    .messages
                    .iter()
                    .map(Message::joined_text)
                    .collect();
                let found = evidence
                    .iter()
                    .filter(|e| prompt.iter().any(|m| m.contains(e.as_str())))
                    .count();
                asked += 1;
                any += u32::from(found > 0);
                all += u32::from(found == evidence.len());
                prompt_tokens += built.assembled.tokens;
                history_tokens += tokens;
            }
        }
        times.sort();
        println!(
            "| {budget} | {recall} | {} | {asked} | {:.1} % | {:.1} % | {:.1} % | {:.2} ms |",
            if by_meaning.is_some() { "yes" } else { "no" },
            f64::from(any) * 100.0 / f64::from(asked.max(1)),
            f64::from(all) * 100.0 / f64::from(asked.max(1)),
            prompt_tokens as f64 * 100.0 / history_tokens.max(1) as f64,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
        );
    }
    println!();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = open_store().await;
    if let Ok(path) = std::env::var("LOCOMO") {
        locomo_recall(&store, &path).await;
        if std::env::var("ONLY_LOCOMO").is_ok() {
            return;
        }
    }
    assembly_latency(&store).await;
    tokens_per_turn(&store).await;
}

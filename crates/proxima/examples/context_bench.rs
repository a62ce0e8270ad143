//! Conversation-context benchmark (run by `bench/context.sh`): how long building a turn's
//! prompt takes as the history grows, and how many tokens a long conversation sends upstream
//! with the `summarize` strategy against resending the whole history.
//!
//! Both use the real store (a SQLite file, or PostgreSQL with `PROXIMA_BENCH_POSTGRES=URL`)
//! and the real prompt builder, `proxima::context::build_prompt`: the same reads, recall
//! search and assembly a turn does on the request path.

use std::time::{Duration, Instant};

use proxima::canonical::{Message, Role};
use proxima::config::ContextStrategy;
use proxima::context::{build_prompt, items, Budgeted};
use proxima::store::Store;

const TOPICS: &[&str] = &[
    "weather", "garden", "invoice", "kernel", "recipe", "holiday", "budget", "football", "piano",
    "database", "mortgage", "camera", "bicycle", "novel", "vaccine", "harbour", "telescope",
];

/// A sentence of `words` words on a topic, varied enough that recall has something to rank.
fn sentence(rng: &mut fastrand::Rng, words: usize) -> String {
    let topic = TOPICS[rng.usize(..TOPICS.len())];
    let mut text = format!("About the {topic}:");
    for _ in 0..words {
        text.push(' ');
        if rng.u8(..10) == 0 {
            text.push_str(TOPICS[rng.usize(..TOPICS.len())]);
        } else {
            text.push_str(&format!("w{}", rng.u32(..5000)));
        }
    }
    text
}

async fn open_store() -> Store {
    let url = std::env::var("PROXIMA_BENCH_POSTGRES").unwrap_or_else(|_| {
        let dir = std::env::temp_dir().join(format!("proxima-bench-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        format!("sqlite://{}", dir.join("bench.db").display())
    });
    Store::open(&url).await.expect("store")
}

/// A conversation of `n` items, stored in batches as turns would store them.
async fn history(store: &Store, rng: &mut fastrand::Rng, n: usize) -> String {
    let id = format!("bench-{n}-{}", rng.u64(..));
    store
        .create_conversation(&id, "team:bench", &serde_json::json!({}), 1)
        .await
        .expect("create")
        .expect("new id");
    let mut left = n;
    while left > 0 {
        let batch: Vec<_> = (0..left.min(500))
            .map(|i| {
                let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
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
    id
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

async fn assembly_latency(store: &Store) {
    println!("## Building a turn's prompt against history length\n");
    println!("budget 8,000 tokens, recall 4, strategy window; 300 turns timed after 20 warm-up ones\n");
    println!("| items in history | p50 | p99 | max | prompt tokens (p50) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut rng = fastrand::Rng::with_seed(7);
    for n in [20, 1_000, 10_000, 100_000] {
        let id = history(store, &mut rng, n).await;
        let how = Budgeted {
            strategy: ContextStrategy::Window,
            recall: 4,
            budget: 8_000,
        };
        let mut times = Vec::new();
        let mut tokens = Vec::new();
        for turn in 0..320 {
            let new = [Message::text(Role::User, sentence(&mut rng, 20))];
            let started = Instant::now();
            let built = build_prompt(store, &id, &how, &[], &new).await.expect("build");
            let took = started.elapsed();
            if turn >= 20 {
                times.push(took);
                tokens.push(built.assembled.tokens);
            }
        }
        times.sort();
        tokens.sort_unstable();
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            tokens[tokens.len() / 2],
        );
    }
    println!();
}

/// A 200-turn conversation with `summarize`: after each turn, the items that left the
/// window are folded into a summary the way the summariser stores one (here a fixed text of
/// the summariser's maximum length, 800 words, so no model is needed).
async fn tokens_per_turn(store: &Store) {
    const TURNS: usize = 200;
    let mut rng = fastrand::Rng::with_seed(11);
    let id = history(store, &mut rng, 0).await;
    let how = Budgeted {
        strategy: ContextStrategy::Summarize,
        recall: 4,
        // A 16k-token window, less a 4k answer and the safety margin.
        budget: 16_000 - 4_096 - 512,
    };
    let (mut sent, mut full, mut history_tokens) = (0u64, 0u64, 0u64);
    for _ in 0..TURNS {
        let question = Message::text(Role::User, sentence(&mut rng, rng.usize(40..160)));
        let new_tokens = items::tokens(&question);
        let built = build_prompt(store, &id, &how, &[], std::slice::from_ref(&question))
            .await
            .expect("build");
        sent += built.assembled.tokens;
        full += history_tokens + new_tokens;
        let answer = Message::text(Role::Assistant, sentence(&mut rng, rng.usize(150..450)));
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
    println!("| whole history resent every turn | {full} | {} |", full / TURNS as u64);
    println!("| Proxima context (summary + recall + window) | {sent} | {} |", sent / TURNS as u64);
    println!("\nratio: **{:.1}×** fewer tokens; on the last turn the whole history is {} tokens\n", full as f64 / sent as f64, history_tokens);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = open_store().await;
    assembly_latency(&store).await;
    tokens_per_turn(&store).await;
}

//! Speed of the `local` provider's model (all-MiniLM-L6-v2): embeddings per second for chunks
//! of about 200 word pieces sent 32 at a time, and the latency of one short sentence.
//!
//!     scripts/fetch-minilm
//!     cargo run --release -p proxima --example minilm_bench [-- MODEL_DIR]
//!
//! MODEL_DIR defaults to $PROXIMA_MINILM_DIR, else models/all-minilm-l6-v2. It calls the same
//! worker the provider does (tokenizer, batching, forward pass), without HTTP.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use proxima::providers::local::{Embedder, BATCH};

/// The allocator of the `proxima` binary, so that the model's large buffers cost the same.
#[global_allocator]
static GLOBAL: proxima::allocator::MiMalloc = proxima::allocator::MiMalloc;

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "retries",
    "a",
    "request",
    "on",
    "another",
    "provider",
    "when",
    "its",
    "budget",
    "allows",
    "and",
    "records",
    "latency",
    "for",
    "every",
    "team",
    "tokens",
    "are",
    "counted",
    "before",
    "after",
    "model",
    "answers",
    "stream",
    "vector",
    "store",
    "search",
    "document",
    "chunk",
    "embedding",
    "similarity",
    "invoice",
    "customer",
    "password",
    "reset",
    "account",
    "weather",
    "configuration",
    "deployment",
    "kubernetes",
    "database",
    "replica",
];

/// CPU time this process has used (Linux), so that runs on a shared machine compare: the
/// wall clock there depends on what else runs.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ, which Linux fixes at 100 for /proc.
    Some(Duration::from_millis(ticks * 10))
}

/// A text of `words` words drawn from [`WORDS`].
fn text(rng: &mut fastrand::Rng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PROXIMA_MINILM_DIR").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/all-minilm-l6-v2"));
    let started = Instant::now();
    let embedder = Embedder::shared(&dir).expect("the model loads");
    println!("loaded {} in {:?}", dir.display(), started.elapsed());

    let mut rng = fastrand::Rng::with_seed(7);
    // Warm-up: the first pass pays for allocations and the thread pool's start.
    embedder
        .embed((0..BATCH).map(|_| text(&mut rng, 150)).collect())
        .await
        .expect("embeds");

    let rounds = 8;
    let (mut pieces, mut took) = (0, Duration::ZERO);
    let cpu_before = cpu_time();
    for _ in 0..rounds {
        let texts: Vec<String> = (0..BATCH).map(|_| text(&mut rng, 150)).collect();
        let started = Instant::now();
        let embedded = embedder.embed(texts).await.expect("embeds");
        took += started.elapsed();
        pieces += embedded.tokens;
    }
    let texts = rounds * BATCH;
    println!(
        "throughput: {texts} texts of {} word pieces on average, {BATCH} a batch: {:.1} embeddings/s ({:.0} word pieces/s)",
        pieces / texts as u64,
        texts as f64 / took.as_secs_f64(),
        pieces as f64 / took.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_time()) {
        let cpu = (after - before).as_secs_f64();
        println!(
            "  CPU: {:.1} embeddings per CPU-second; {:.2} CPUs busy on average",
            texts as f64 / cpu,
            cpu / took.as_secs_f64()
        );
    }

    let mut latencies: Vec<Duration> = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        embedder
            .embed(vec!["How do I reset my password?".into()])
            .await
            .expect("embeds");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "one short sentence: p50 {:?}, p95 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 95 / 100]
    );
}

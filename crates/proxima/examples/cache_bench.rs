//! Response-cache benchmark (run by `bench/cache.sh`): what a hit costs and what a miss adds,
//! through the real server over loopback HTTP, one request at a time.
//!
//! In one process: the in-repo mock upstream (no latency, no recording), and a gateway with
//! two public models on it — `cached` (`[cache]` exact, and semantic with the built-in mock's
//! word embeddings) and `plain` (`cache = false`) — on a temporary SQLite ledger, no keys.
//! The mock's embeddings have 16 dimensions, where two unrelated texts are 0.9 similar about
//! once in 50,000 comparisons: the threshold is 0.99 so that misses stay misses (the semantic
//! case asks its questions with the same words in another order, similarity 1).
//! With `PROXIMA_BENCH_REDIS=redis://...` the entries live in Redis instead of memory.
//! With `PROXIMA_MINILM_DIR=DIR` the semantic cache embeds with the built-in `local` provider
//! (all-MiniLM-L6-v2 from DIR, as `scripts/fetch-minilm` puts it) at threshold 0.95, and the
//! semantic case asks each stored question again with other casing and punctuation.
//!
//! It reports latency p50/p99 (client-observed: includes the HTTP client and loopback, so an
//! upper bound of the gateway's time) and the process's CPU time per request (client
//! included) for: a call of the uncached model (the upstream answers), a miss (lookup, then
//! the upstream, then the store), an exact hit, an exact hit streamed, and a semantic hit
//! (the embedding call included) among `PARTITION` stored questions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

/// Requests per measured case.
const N: usize = 2000;
/// Questions stored in the semantic case's partition before it is measured.
const PARTITION: usize = 200;

/// Utime + stime of this process, in clock ticks of 10 ms (Linux `/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    field(11) + field(12)
}

struct Case {
    name: &'static str,
    latencies: Vec<Duration>,
    cpu_ticks: u64,
    verdicts: Vec<String>,
}

impl Case {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[at]
    }

    fn row(&self) -> String {
        let cpu_us = self.cpu_ticks as f64 * 10_000.0 / self.latencies.len() as f64;
        let mut verdicts = self.verdicts.clone();
        verdicts.sort();
        verdicts.dedup();
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} |",
            self.name,
            self.latencies.len(),
            self.percentile(0.5).as_secs_f64() * 1e6,
            self.percentile(0.99).as_secs_f64() * 1e6,
            cpu_us,
            verdicts.join(", ")
        )
    }
}

/// Sends `bodies` one after another and measures each.
async fn run(
    client: &reqwest::Client,
    url: &str,
    name: &'static str,
    bodies: impl Iterator<Item = Value>,
) -> Case {
    let bodies: Vec<String> = bodies.map(|b| b.to_string()).collect();
    let ticks = cpu_ticks();
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut verdicts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let start = Instant::now();
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let verdict = response
            .headers()
            .get("x-proxima-cache")
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
        latencies.push(start.elapsed());
        verdicts.push(verdict);
    }
    Case {
        name,
        latencies,
        cpu_ticks: cpu_ticks() - ticks,
        verdicts,
    }
}

fn body(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [
        {"role": "system", "content": "You answer questions about the company's travel policy in two sentences."},
        {"role": "user", "content": text},
    ]})
}

/// Question `i` of a run: a travel-policy question whose action, topic and place all change from
/// one `i` to the next (20 × 25 × 24 different ones; the run picks where it starts).
fn natural_question(run: u32, i: usize) -> String {
    const ACTIONS: [&str; 20] = [
        "book",
        "cancel",
        "pay for",
        "get refunded for",
        "expense",
        "upgrade",
        "change",
        "extend",
        "share",
        "insure",
        "report a problem with",
        "find",
        "approve",
        "split",
        "reserve",
        "reschedule",
        "claim",
        "compare prices for",
        "get a receipt for",
        "pick up",
    ];
    const TOPICS: [&str; 25] = [
        "a hotel room",
        "a rental car",
        "a train ticket",
        "a flight",
        "a taxi ride",
        "a dinner with clients",
        "a conference pass",
        "airport parking",
        "a visa",
        "travel insurance",
        "a hostel bed",
        "a ferry crossing",
        "excess baggage",
        "a business class seat",
        "a laptop repair",
        "a mobile data plan",
        "a museum ticket for a client",
        "a coworking desk",
        "a bike rental",
        "a night bus",
        "an apartment for a month",
        "a team offsite venue",
        "a language course",
        "a medical check-up",
        "a gym pass",
    ];
    const PLACES: [&str; 24] = [
        "Paris",
        "Tokyo",
        "Nairobi",
        "Lima",
        "Oslo",
        "Toronto",
        "Mumbai",
        "Sydney",
        "Cairo",
        "Berlin",
        "Seoul",
        "Mexico City",
        "Lagos",
        "Istanbul",
        "Vancouver",
        "Bangkok",
        "Dublin",
        "Buenos Aires",
        "Warsaw",
        "Singapore",
        "Lisbon",
        "Reykjavik",
        "Chicago",
        "Manila",
    ];
    let n = (run as usize)
        .wrapping_mul(7_919)
        .wrapping_add(i.wrapping_mul(4_447));
    format!(
        "How do I {} {} in {} under the travel policy?",
        ACTIONS[n % ACTIONS.len()],
        TOPICS[(n / ACTIONS.len()) % TOPICS.len()],
        PLACES[(n / (ACTIONS.len() * TOPICS.len())) % PLACES.len()],
    )
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = mock_upstream::MockUpstream::start_on(
        ([127, 0, 0, 1], 0).into(),
        mock_upstream::Options {
            latency: Duration::ZERO,
            event_gap: Duration::ZERO,
            record: false,
        },
    )
    .await
    .expect("mock upstream");
    let dir = std::env::temp_dir().join(format!("proxima-cache-bench-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let redis = std::env::var("PROXIMA_BENCH_REDIS").ok();
    let minilm = std::env::var("PROXIMA_MINILM_DIR").ok();
    let (embedder, embedding, threshold) = match &minilm {
        Some(dir) => (
            format!("kind = \"local\"\npath = \"{dir}\""),
            "all-minilm-l6-v2",
            0.95,
        ),
        None => ("kind = \"mock\"".to_owned(), "mock", 0.99),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\ndatabase = \"sqlite://{}\"\n{}\n\
         [providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n\
         [providers.builtin]\n{embedder}\n\n\
         [models.cached]\ntargets = [{{ provider = \"up\", model = \"gpt-bench\" }}]\n\n\
         [models.plain]\ntargets = [{{ provider = \"up\", model = \"gpt-bench\" }}]\ncache = false\n\n\
         [models.embed]\ntargets = [{{ provider = \"builtin\", model = \"{embedding}\" }}]\n\n\
         [cache]\nexact = {{ ttl = \"1h\" }}\n\
         semantic = {{ ttl = \"1h\", threshold = {threshold}, embedding_model = \"embed\" }}\n",
        dir.join("bench.db").display(),
        redis
            .as_ref()
            .map(|url| format!("redis = \"{url}\"\n"))
            .unwrap_or_default(),
        mock.url(),
    );
    let config = proxima::config::Config::parse(&text, "bench.toml", &|_| None).expect("config");
    let server = proxima::server::Server::bind(config, None)
        .await
        .expect("bind");
    let url = format!("http://{}/v1/chat/completions", server.local_addr());
    tokio::spawn(server.run(std::future::pending::<()>()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // Each run its own questions (Redis keeps entries between runs), and each question its own
    // words, so that the mock's word embeddings find no two of them alike.
    let run_id = fastrand::u32(..);
    let question = |i: usize| match minilm {
        // Real questions, as users ask them, differing in what they are about: MiniLM reads
        // meaning, and rare made-up words would all look alike to it (and cost it word pieces).
        Some(_) => natural_question(run_id, i),
        None => {
            let mut rng = fastrand::Rng::with_seed(u64::from(run_id) << 32 | i as u64);
            let words: Vec<String> = (0..24).map(|_| format!("w{:x}", rng.u32(..))).collect();
            format!("Question {i}: {}?", words.join(" "))
        }
    };

    // Warm-up: connections, the tokenizer, the allocator.
    run(
        &client,
        &url,
        "warm-up",
        (0..200).map(|i| body("plain", &question(i))),
    )
    .await;

    let mut cases = Vec::new();
    cases.push(
        run(
            &client,
            &url,
            "uncached model (upstream call)",
            (0..N).map(|i| body("plain", &question(i))),
        )
        .await,
    );
    cases.push(
        run(
            &client,
            &url,
            "miss (lookup + upstream call + store)",
            (0..N).map(|i| body("cached", &question(10_000 + i))),
        )
        .await,
    );
    // Stores are written off the path in Redis: give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cases.push(
        run(
            &client,
            &url,
            "exact hit",
            (0..N).map(|i| body("cached", &question(10_000 + i % 100))),
        )
        .await,
    );
    cases.push(
        run(
            &client,
            &url,
            "exact hit, streamed",
            (0..N).map(|i| {
                let mut b = body("cached", &question(10_000 + i % 100));
                b["stream"] = json!(true);
                b
            }),
        )
        .await,
    );
    // A partition of PARTITION stored questions (one system prompt, no history), then the
    // same questions reworded, so that the exact key differs: for the mock's word embeddings
    // the words in another order; for MiniLM, whose vectors see order, other casing and
    // punctuation (distinct random words keep the stored questions apart).
    let stored = |i: usize| match minilm {
        Some(_) => question(20_000 + i),
        None => format!("travel policy topic {i} run {run_id} hotel taxi rules"),
    };
    let reworded = |i: usize| match minilm {
        Some(_) => question(20_000 + i).to_lowercase().replace('?', " ?!"),
        None => format!("rules taxi hotel run {run_id} topic {i} travel policy"),
    };
    run(
        &client,
        &url,
        "fill",
        (0..PARTITION).map(|i| body("cached", &stored(i))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cases.push(
        run(
            &client,
            &url,
            "semantic hit (embedding + scan of 256)",
            (0..N).map(|i| body("cached", &reworded(i % PARTITION))),
        )
        .await,
    );

    println!(
        "Response cache, {} entries, one request at a time, {N} requests per case, \
         semantic cache embedding with {}.\n",
        if redis.is_some() {
            "Redis"
        } else {
            "in-memory"
        },
        if minilm.is_some() {
            "the local all-MiniLM-L6-v2"
        } else {
            "the built-in mock's word vectors"
        }
    );
    println!("| case | requests | p50 µs | p99 µs | CPU µs/request (process) | x-proxima-cache |");
    println!("|---|---|---|---|---|---|");
    for case in &cases {
        println!("{}", case.row());
    }
}

//! Retrieval benchmark (run by `bench/retrieval.sh`): how well the vector-store index finds
//! the paragraph that answers a question, how fast it ranks 100,000 chunks, and how many
//! chunks a second the built-in embedder turns into vectors.
//!
//! Quality is measured on SQuAD v1.1 dev (`SQUAD=` its `dev-v1.1.json`): every paragraph is a
//! file, chunked as ingestion chunks it (`chunk::AUTO`), and a seeded sample of the
//! crowd-written questions are the queries; a hit is a chunk of the question's own paragraph.
//! Vectors come from the `local` provider's model, all-MiniLM-L6-v2 (`PROXIMA_MINILM_DIR`, else
//! `models/all-minilm-l6-v2`), and are cached under `BENCH_DATA` (default `bench/data`) by
//! model and text, so that a rerun does not embed the corpus again.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use proxima::providers::local::Embedder;
use proxima::retrieval::chunk;
use proxima::retrieval::index::{self, FileChunks, FileIndex, Found, Mode, Searched, StoreIndex};
use proxima::store::{hex, IndexedFile};

/// The gateway's allocator, so that memory is measured as the gateway would hold it.
#[global_allocator]
static GLOBAL: proxima::allocator::MiMalloc = proxima::allocator::MiMalloc;

/// Chunks each ranking hands to the fusion: what a search for up to 12 results uses.
const DEPTH: usize = 50;
/// Texts per embedding call, as ingestion sends them.
const BATCH: usize = 32;

/// SQuAD's articles: each a list of paragraphs, each with its questions.
type Articles = Vec<Vec<(String, Vec<String>)>>;

fn load_squad(path: &str) -> Articles {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read SQUAD")).expect("json");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    json["data"]
        .as_array()
        .expect("SQuAD's `data`")
        .iter()
        .map(|article| {
            article["paragraphs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let questions = p["qas"].as_array().into_iter().flatten();
                    (
                        text(&p["context"]),
                        questions.map(|q| text(&q["question"])).collect(),
                    )
                })
                .collect()
        })
        .collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn file(id: usize, chunks: &[String], vectors: &[Vec<f32>]) -> (Arc<FileIndex>, FileChunks) {
    let meta = IndexedFile {
        file_id: format!("file-{id}"),
        filename: format!("{id}.txt"),
        attributes: serde_json::json!({}),
        generation: 1,
    };
    let chunks = chunks.iter().zip(vectors);
    let (file, words) =
        FileIndex::build(meta, chunks.map(|(t, v)| (t.as_str(), Some(v.as_slice()))));
    (Arc::new(file), words)
}

/// The words a search ranks by, as `retrieval::search` takes them from the query.
fn query_words(query: &str) -> Vec<String> {
    proxima::words::terms(query, 64)
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e3
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Vectors already computed, by SHA-256 of the text, in a file named by the model's hash:
/// records of 32 bytes of key and `dims` little-endian floats.
struct VectorCache {
    path: PathBuf,
    dims: usize,
    vectors: HashMap<[u8; 32], Vec<f32>>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().try_into().expect("32 bytes")
}

impl VectorCache {
    fn open(data: &Path, model_dir: &Path, dims: usize) -> VectorCache {
        let weights = std::fs::read(model_dir.join("model.safetensors")).expect("weights");
        let path = data.join(format!("vectors-{}.bin", &hex(&sha256(&weights))[..16]));
        let bytes = std::fs::read(&path).unwrap_or_default();
        let vectors = bytes
            .chunks_exact(32 + 4 * dims)
            .map(|r| {
                let key: [u8; 32] = r[..32].try_into().expect("32 bytes");
                (key, index::floats(&r[32..]))
            })
            .collect();
        VectorCache {
            path,
            dims,
            vectors,
        }
    }

    /// The vectors of `texts`, embedding (in batches, as ingestion does) those not cached;
    /// with the time embedding took and how many texts it embedded.
    async fn embed(
        &mut self,
        embedder: &Embedder,
        texts: &[String],
    ) -> (Vec<Vec<f32>>, Duration, usize) {
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<&String> = texts
            .iter()
            .filter(|t| !self.vectors.contains_key(&sha256(t.as_bytes())) && seen.insert(*t))
            .collect();
        let started = Instant::now();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .expect("vector cache");
        for batch in missing.chunks(BATCH) {
            let batch: Vec<String> = batch.iter().map(|t| t.to_string()).collect();
            let embedded = embedder.embed(batch.clone()).await.expect("embed");
            for (text, vector) in batch.iter().zip(embedded.vectors) {
                assert_eq!(vector.len(), self.dims);
                let key = sha256(text.as_bytes());
                let mut record = key.to_vec();
                record.extend(vector.iter().flat_map(|x| x.to_le_bytes()));
                out.write_all(&record).expect("write vector cache");
                self.vectors.insert(key, vector);
            }
        }
        let took = started.elapsed();
        let vectors = texts
            .iter()
            .map(|t| self.vectors[&sha256(t.as_bytes())].clone())
            .collect();
        (vectors, took, missing.len())
    }
}

/// Recall@1, recall@5 and MRR@10 of each ranking mode, over a seeded sample of questions.
async fn quality(articles: &Articles, embedder: &Embedder, cache: &mut VectorCache) {
    let paragraphs: Vec<&(String, Vec<String>)> = articles.iter().flatten().collect();
    let chunks: Vec<Vec<String>> = paragraphs
        .iter()
        .map(|(text, _)| chunk::chunk(text, chunk::AUTO))
        .collect();
    let all_chunks: Vec<String> = chunks.iter().flatten().cloned().collect();
    let (vectors, took, embedded) = cache.embed(embedder, &all_chunks).await;
    let mut vectors = vectors.into_iter();
    let files = chunks
        .iter()
        .enumerate()
        .map(|(p, c)| file(p, c, &vectors.by_ref().take(c.len()).collect::<Vec<_>>()));
    let store = StoreIndex::new("squad", Some("minilm".into()), files);

    let mut questions: Vec<(usize, &String)> = paragraphs
        .iter()
        .enumerate()
        .flat_map(|(p, (_, qs))| qs.iter().map(move |q| (p, q)))
        .collect();
    fastrand::Rng::with_seed(2026).shuffle(&mut questions);
    questions.truncate(env_usize("QUESTIONS", 1_000));
    let texts: Vec<String> = questions.iter().map(|(_, q)| q.to_string()).collect();
    let (query_vectors, _, _) = cache.embed(embedder, &texts).await;

    println!("## Retrieval quality on SQuAD v1.1 dev\n");
    println!(
        "{} paragraphs as {} files of {} chunks (chunk::AUTO), {} questions sampled (seed 2026); \
         a hit is a chunk of the question's own paragraph; each ranking {DEPTH} deep.\n",
        paragraphs.len(),
        paragraphs.len(),
        all_chunks.len(),
        questions.len()
    );
    println!("| ranking | recall@1 | recall@5 | MRR@10 | p50 search |");
    println!("|---|---:|---:|---:|---:|");
    let everything = |_: &FileIndex| true;
    for (name, mode) in [
        ("BM25 alone", Mode::Words),
        ("vectors alone (MiniLM)", Mode::Vectors),
        ("hybrid", Mode::Hybrid),
    ] {
        let (mut at1, mut at5, mut reciprocal) = (0, 0, 0.0);
        let mut times = Vec::new();
        for ((paragraph, question), vector) in questions.iter().zip(&query_vectors) {
            let searched = [Searched {
                index: &store,
                query_vector: Some(vector),
            }];
            let started = Instant::now();
            let found: Vec<Found> =
                index::rank(&searched, &query_words(question), mode, DEPTH, &everything);
            times.push(started.elapsed());
            if let Some(rank) = found.iter().position(|f| f.file == *paragraph) {
                at1 += usize::from(rank == 0);
                at5 += usize::from(rank < 5);
                if rank < 10 {
                    reciprocal += 1.0 / (rank + 1) as f64;
                }
            }
        }
        times.sort();
        let n = questions.len() as f64;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.2} ms |",
            at1 as f64 / n,
            at5 as f64 / n,
            reciprocal / n,
            percentile(&times, 0.5)
        );
    }
    if embedded > 0 {
        println!(
            "\nEmbedding the corpus: {embedded} chunks in {:.1} s ({:.1} chunks/s).\n",
            took.as_secs_f64(),
            embedded as f64 / took.as_secs_f64()
        );
    } else {
        println!(
            "\nCorpus vectors from the cache ({}); delete it to time the embedding.\n",
            cache.path.display()
        );
    }
}

/// A random unit vector: timing does not depend on what the vectors mean.
fn random_unit(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// p50/p99 of a hybrid ranking over about `target` chunks of real text: the dev set's
/// paragraphs, copied until there are enough, each copy with a fifth of its words replaced
/// by words drawn from the whole text (so word frequencies stay those of the text).
fn speed(articles: &Articles) {
    let target = env_usize("CHUNKS", 100_000);
    let dims = 384;
    let mut rng = fastrand::Rng::with_seed(7);
    let words: Vec<&str> = articles
        .iter()
        .flatten()
        .flat_map(|(p, _)| p.split_whitespace())
        .collect();
    // Articles as files, as a store of documents would hold them.
    let mut documents: Vec<Vec<String>> = Vec::new();
    let mut total = 0;
    'copies: for copy in 0.. {
        for article in articles {
            let mut chunks = Vec::new();
            for (paragraph, _) in article {
                let text: Vec<&str> = paragraph
                    .split_whitespace()
                    .map(|w| {
                        if copy > 0 && rng.u8(..5) == 0 {
                            words[rng.usize(..words.len())]
                        } else {
                            w
                        }
                    })
                    .collect();
                chunks.extend(chunk::chunk(&text.join(" "), chunk::AUTO));
            }
            total += chunks.len();
            documents.push(chunks);
            if total >= target {
                break 'copies;
            }
        }
    }
    let queries: Vec<Vec<String>> = articles
        .iter()
        .flatten()
        .flat_map(|(_, qs)| qs)
        .step_by(10)
        .map(|q| query_words(q))
        .collect();
    println!("## Search speed over {total} chunks\n");
    println!(
        "`index::rank`, hybrid, each ranking {DEPTH} deep, on one thread; BM25 over SQuAD dev \
         paragraphs copied with a fifth of their words swapped per copy; {dims}-dimension \
         random unit vectors (timing does not depend on what they mean); queries: {} SQuAD \
         questions, after 50 warm-up.\n",
        queries.len()
    );
    println!("| files | chunks a file | p50 | p99 | max | index memory (StoreIndex::memory) | RSS growth |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let one_file_per_chunk: Vec<Vec<String>> = documents
        .iter()
        .flatten()
        .map(|c| vec![c.clone()])
        .collect();
    for layout in [documents, one_file_per_chunk] {
        let before = rss_kib();
        // Each file indexed and merged into the store before the next, as a reload does.
        let files = layout.iter().enumerate().map(|(i, chunks)| {
            let vectors: Vec<Vec<f32>> =
                chunks.iter().map(|_| random_unit(&mut rng, dims)).collect();
            file(i, chunks, &vectors)
        });
        let store = StoreIndex::new("speed", Some("random".into()), files);
        let grown = rss_kib().saturating_sub(before);
        let memory = store.memory();
        let everything = |_: &FileIndex| true;
        let mut times = Vec::new();
        for (i, words) in queries.iter().enumerate() {
            let vector = random_unit(&mut rng, dims);
            let searched = [Searched {
                index: &store,
                query_vector: Some(&vector),
            }];
            let started = Instant::now();
            let found = index::rank(&searched, words, Mode::Hybrid, DEPTH, &everything);
            let took = started.elapsed();
            assert!(!found.is_empty());
            if i >= 50 {
                times.push(took);
            }
        }
        times.sort();
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} MiB | {:.0} MiB |",
            layout.len(),
            total as f64 / layout.len() as f64,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0),
            memory as f64 / 1048576.0,
            grown as f64 / 1024.0,
        );
    }
    println!();
}

/// Chunks a second through the embedder: `CHUNKS_EMBEDDED` full-size chunks (the dev set's
/// articles cut by chunk::AUTO), in batches one after another, as ingestion sends them.
async fn ingestion(articles: &Articles, embedder: &Embedder) {
    let count = env_usize("CHUNKS_EMBEDDED", 512);
    let chunks: Vec<String> = articles
        .iter()
        .flat_map(|article| {
            let text: Vec<&str> = article.iter().map(|(p, _)| p.as_str()).collect();
            chunk::chunk(&text.join("\n\n"), chunk::AUTO)
        })
        .take(count)
        .collect();
    let tokens: u64 = chunks
        .iter()
        .map(|c| proxima::tokenizer::count_once(c))
        .sum();
    embedder.embed(vec!["warm-up".into()]).await.expect("embed");
    let started = Instant::now();
    let mut pieces = 0;
    for batch in chunks.chunks(BATCH) {
        pieces += embedder.embed(batch.to_vec()).await.expect("embed").tokens;
    }
    let took = started.elapsed().as_secs_f64();
    println!("## Ingestion: embedding with the local model\n");
    println!(
        "all-MiniLM-L6-v2 in-process (candle, {} cores), {} chunks of chunk::AUTO size (mean {} \
         tokens, {} word pieces read: the model reads at most 256), batches of {BATCH} one \
         after another.\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        chunks.len(),
        tokens / chunks.len().max(1) as u64,
        pieces / chunks.len().max(1) as u64,
    );
    println!("| chunks | seconds | chunks/s | word pieces/s |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} | {took:.1} | {:.1} | {:.0} |\n",
        chunks.len(),
        chunks.len() as f64 / took,
        pieces as f64 / took
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Ok(squad) = std::env::var("SQUAD") else {
        eprintln!("SQUAD= names SQuAD v1.1's dev-v1.1.json; see bench/README.md");
        std::process::exit(2);
    };
    let articles = load_squad(&squad);
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "quality,speed,ingestion".into());
    let wants = |part: &str| parts.split(',').any(|p| p == part);
    let model_dir =
        std::env::var("PROXIMA_MINILM_DIR").unwrap_or_else(|_| "models/all-minilm-l6-v2".into());
    let model_dir = Path::new(&model_dir);
    let missing = proxima::providers::local::missing_files(model_dir);
    if missing.is_empty() && (wants("quality") || wants("ingestion")) {
        let data =
            PathBuf::from(std::env::var("BENCH_DATA").unwrap_or_else(|_| "bench/data".into()));
        std::fs::create_dir_all(&data).expect("BENCH_DATA");
        let loading = Instant::now();
        let embedder = Embedder::shared(model_dir).expect("load the model");
        eprintln!("model loaded in {:?}", loading.elapsed());
        let mut cache = VectorCache::open(&data, model_dir, embedder.dimensions());
        if wants("quality") {
            quality(&articles, &embedder, &mut cache).await;
        }
        if wants("ingestion") {
            ingestion(&articles, &embedder).await;
        }
    } else if !missing.is_empty() {
        println!(
            "_No model in {} (missing {}): run scripts/fetch-minilm for the quality and \
             ingestion tables._\n",
            model_dir.display(),
            missing.join(", ")
        );
    }
    if wants("speed") {
        speed(&articles);
    }
}

//! The in-memory index of the vector stores this replica searches: per file, the BM25
//! postings of its chunks' words and its chunks' embeddings quantised to one byte a dimension
//! (a quarter of the memory, and a dot product the CPU does 16 or 32 lanes at a time; the
//! error, under 1% of a cosine, does not change a ranking that matters).
//!
//! The database is the truth. An index is loaded on a store's first search and checked against
//! the store's `version` at most every `[storage] sync_interval` (one primary-key read), so a
//! file added on another replica is searchable here within that time; a change made through
//! this replica is seen at once ([`Indexes::invalidate`]). Only files whose chunks changed are
//! read again. Chunk texts stay in the database: a search reads the few it returns.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::Result;
use crate::store::{IndexedFile, Store};

/// The score of the weakest chunk a search returns.
const FLOOR: f32 = 0.01;

/// BM25's term-frequency saturation and length normalisation.
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// One file's chunks, indexed.
pub struct FileIndex {
    pub file_id: String,
    pub filename: String,
    pub attributes: Map<String, Value>,
    generation: i64,
    /// Words per chunk.
    lens: Vec<u32>,
    /// Word → (chunk, occurrences), by chunk.
    postings: HashMap<Box<str>, Vec<(u32, u32)>>,
    /// Dimensions of the embeddings; 0 when the chunks have none.
    dims: usize,
    /// Chunk after chunk, `dims` bytes each.
    vectors: Vec<i8>,
    /// Per chunk: the value of one quantisation step.
    scales: Vec<f32>,
}

impl FileIndex {
    /// Indexes a file's chunks: `(text, embedding)` in order.
    pub fn build<'a>(
        file: IndexedFile,
        chunks: impl IntoIterator<Item = (&'a str, Option<&'a [f32]>)>,
    ) -> FileIndex {
        let mut index = FileIndex {
            file_id: file.file_id,
            filename: file.filename,
            attributes: match file.attributes {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            generation: file.generation,
            lens: Vec::new(),
            postings: HashMap::new(),
            dims: 0,
            vectors: Vec::new(),
            scales: Vec::new(),
        };
        for (seq, (text, embedding)) in chunks.into_iter().enumerate() {
            let seq = seq as u32;
            let terms = crate::words::terms(text, usize::MAX);
            index.lens.push(terms.iter().map(|(_, n)| n).sum());
            for (term, n) in terms {
                index
                    .postings
                    .entry(term.into_boxed_str())
                    .or_default()
                    .push((seq, n));
            }
            match embedding {
                Some(v) if seq == 0 || v.len() == index.dims => {
                    index.dims = v.len();
                    let (q, scale) = quantise(v);
                    index.vectors.extend(q);
                    index.scales.push(scale);
                }
                // A chunk without (or with a mismatched) embedding: the file is searched by
                // its words only.
                _ => {
                    index.dims = 0;
                    index.vectors.clear();
                    index.scales.clear();
                }
            }
        }
        if index.scales.len() != index.lens.len() {
            index.dims = 0;
            index.vectors = Vec::new();
            index.scales = Vec::new();
        }
        index.postings.shrink_to_fit();
        index
    }

    pub fn chunks(&self) -> usize {
        self.lens.len()
    }

    /// Bytes this file's index holds, roughly.
    pub fn memory(&self) -> usize {
        let postings: usize = self
            .postings
            .iter()
            .map(|(k, v)| k.len() + 16 + 8 * v.capacity() + 24)
            .sum();
        postings + 4 * self.lens.capacity() + self.vectors.capacity() + 4 * self.scales.capacity()
    }
}

/// A vector store's index at one version.
pub struct StoreIndex {
    pub id: String,
    pub owner: String,
    pub version: i64,
    pub embedding_model: Option<String>,
    pub files: Vec<Arc<FileIndex>>,
}

impl StoreIndex {
    /// An index of files built elsewhere (benchmarks, tests).
    pub fn new(
        id: &str,
        embedding_model: Option<String>,
        files: Vec<Arc<FileIndex>>,
    ) -> StoreIndex {
        StoreIndex {
            id: id.to_owned(),
            owner: String::new(),
            version: 0,
            embedding_model,
            files,
        }
    }
}

/// What a ranking uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Words,
    Vectors,
}

/// A store to search, with the query's embedding by the store's model (if it has one).
pub struct Searched<'a> {
    pub index: &'a StoreIndex,
    pub query_vector: Option<&'a [f32]>,
}

/// A chunk found: which store (position in the searched list), file and chunk; its fused
/// score, 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub store: usize,
    pub file: usize,
    pub seq: u32,
    pub score: f32,
}

/// Ranks the chunks of `stores` for a query: BM25 over `words` and cosine similarity to each
/// store's query vector, each list `depth` deep, fused by the mean of their scores scaled to
/// 0..1 within each list. Only files `allowed` are searched. Best first, at most `depth`.
pub fn rank(
    stores: &[Searched<'_>],
    words: &[String],
    mode: Mode,
    depth: usize,
    allowed: &dyn Fn(&FileIndex) -> bool,
) -> Vec<Found> {
    // Every chunk of every allowed file gets a slot: (store, file, first slot).
    let mut files: Vec<FileSlots> = Vec::new();
    let mut slots = 0;
    for (s, searched) in stores.iter().enumerate() {
        for (f, file) in searched.index.files.iter().enumerate() {
            if allowed(file) {
                files.push((s, f, slots));
                slots += file.chunks();
            }
        }
    }
    let mut lists: Vec<Vec<(usize, f32)>> = Vec::new();
    if mode != Mode::Vectors && !words.is_empty() {
        lists.push(bm25(stores, &files, slots, words, depth));
    }
    if mode != Mode::Words {
        let by_vector = cosine(stores, &files, depth);
        if !by_vector.is_empty() {
            lists.push(by_vector);
        }
    }
    if lists.is_empty() {
        return Vec::new();
    }
    // Each list's scores scaled to 0..1 (its first 1, its last 0), then averaged: unlike
    // reciprocal rank fusion, a clear lead in one list (a rare word matched, a near-identical
    // meaning) keeps its weight instead of being flattened to a rank that the other list's
    // guesses outvote. First place in every list scores 1.
    let share = 1.0 / lists.len() as f32;
    let mut fused: HashMap<usize, f32> = HashMap::new();
    for list in &lists {
        let first = list.first().map_or(0.0, |&(_, score)| score);
        let last = list.last().map_or(0.0, |&(_, score)| score);
        for &(slot, score) in list {
            let scaled = if first > last {
                (score - last) / (first - last)
            } else {
                1.0
            };
            *fused.entry(slot).or_default() += share * scaled;
        }
    }
    // The last of a list scales to 0; every chunk found matched something, so scores are
    // lifted into (0, 1] (the order is unchanged): 0 would read as "not relevant at all".
    let mut found: Vec<(usize, f32)> = fused
        .into_iter()
        .map(|(slot, score)| (slot, FLOOR + (1.0 - FLOOR) * score))
        .collect();
    found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    found.truncate(depth);
    found
        .into_iter()
        .filter_map(|(slot, score)| {
            let at = files
                .partition_point(|&(_, _, first)| first <= slot)
                .checked_sub(1)?;
            let (s, f, first) = files[at];
            Some(Found {
                store: s,
                file: f,
                seq: (slot - first) as u32,
                score,
            })
        })
        .collect()
}

/// A searched file: its store and position there, and its first chunk's slot.
type FileSlots = (usize, usize, usize);

fn file_of<'a>(stores: &[Searched<'a>], &(store, file, _): &FileSlots) -> &'a FileIndex {
    &stores[store].index.files[file]
}

/// Slots ranked by BM25 (best first, at most `depth`) with their scores, over the union of
/// the searched files.
fn bm25(
    stores: &[Searched<'_>],
    files: &[FileSlots],
    slots: usize,
    words: &[String],
    depth: usize,
) -> Vec<(usize, f32)> {
    let n = slots as f32;
    let total_words: u64 = files
        .iter()
        .map(|f| {
            file_of(stores, f)
                .lens
                .iter()
                .map(|&l| u64::from(l))
                .sum::<u64>()
        })
        .sum();
    let average = (total_words as f32 / n.max(1.0)).max(1.0);
    let mut scores = vec![0f32; slots];
    let mut touched: Vec<usize> = Vec::new();
    for word in words {
        let df: usize = files
            .iter()
            .map(|f| {
                file_of(stores, f)
                    .postings
                    .get(word.as_str())
                    .map_or(0, Vec::len)
            })
            .sum();
        if df == 0 {
            continue;
        }
        let idf = (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        for entry in files {
            let file = file_of(stores, entry);
            let Some(postings) = file.postings.get(word.as_str()) else {
                continue;
            };
            for &(seq, tf) in postings {
                let slot = entry.2 + seq as usize;
                let tf = tf as f32;
                let len = file.lens[seq as usize] as f32;
                let weight = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / average));
                if scores[slot] == 0.0 {
                    touched.push(slot);
                }
                scores[slot] += weight;
            }
        }
    }
    top(touched.into_iter().map(|slot| (scores[slot], slot)), depth)
}

/// Slots ranked by the cosine of their embedding with their store's query vector, with it.
fn cosine(stores: &[Searched<'_>], files: &[FileSlots], depth: usize) -> Vec<(usize, f32)> {
    let queries: Vec<Option<(Vec<i8>, f32)>> = stores
        .iter()
        .map(|s| s.query_vector.map(quantise))
        .collect();
    let mut heap: BinaryHeap<Reverse<(Score, usize)>> = BinaryHeap::with_capacity(depth + 1);
    for entry in files {
        let Some((query, query_scale)) = &queries[entry.0] else {
            continue;
        };
        let file = file_of(stores, entry);
        if file.dims != query.len() || file.dims == 0 {
            continue;
        }
        for (seq, vector) in file.vectors.chunks_exact(file.dims).enumerate() {
            let similarity = dot(query, vector) as f32 * query_scale * file.scales[seq];
            let item = Reverse((Score(similarity), entry.2 + seq));
            if heap.len() < depth {
                heap.push(item);
            } else if heap.peek().is_some_and(|low| item < *low) {
                heap.pop();
                heap.push(item);
            }
        }
    }
    let mut ranked: Vec<(Score, usize)> = heap.into_iter().map(|Reverse(x)| x).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked
        .into_iter()
        .map(|(score, slot)| (slot, score.0))
        .collect()
}

/// The `depth` best of (score, slot), best first, as (slot, score).
fn top(scored: impl Iterator<Item = (f32, usize)>, depth: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(Score, usize)> = scored.map(|(s, slot)| (Score(s), slot)).collect();
    if all.len() > depth && depth > 0 {
        all.select_nth_unstable_by(depth - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(depth);
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter()
        .map(|(score, slot)| (slot, score.0))
        .collect()
}

/// An f32 that orders totally, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A vector as bytes, and the value of one step: `v[i] ≈ q[i] * scale`.
fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    let q = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

/// Written so that the compiler vectorises it: widen, multiply, add in lanes.
fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Reads little-endian f32s.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// How often a store's `last_active_at` is written while it is searched: expiry is counted
/// in days, and a write per search would put a database round trip behind every call.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The indexes of the stores this replica has searched.
pub struct Indexes {
    stores: Mutex<HashMap<String, Cached>>,
    /// When each store's use was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// One reload at a time: two searches of a stale store read it once.
    loading: tokio::sync::Mutex<()>,
    sync_interval: Duration,
}

#[derive(Clone)]
struct Cached {
    index: Arc<StoreIndex>,
    /// When the version was last compared with the database's; `None`: compare now.
    checked: Option<Instant>,
}

impl Indexes {
    pub fn new(sync_interval: Duration) -> Indexes {
        Indexes {
            stores: Mutex::default(),
            touched: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
            sync_interval,
        }
    }

    fn cached(&self, id: &str) -> Option<Cached> {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The store changed through this replica: the next search compares versions.
    pub fn invalidate(&self, id: &str) {
        if let Some(cached) = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            cached.checked = None;
        }
    }

    /// Whether the store's use should be written now (at most once a minute per store).
    pub fn should_touch(&self, id: &str) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match touched.get(id) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                touched.insert(id.to_owned(), now);
                true
            }
        }
    }

    /// The store was deleted through this replica.
    pub fn forget(&self, id: &str) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Store `id`'s current index (whoever owns it), or `None` when there is no such store.
    pub async fn current(&self, store: &Store, id: &str) -> Result<Option<Arc<StoreIndex>>> {
        let fresh = |c: &Cached| {
            c.checked
                .is_some_and(|at| at.elapsed() < self.sync_interval)
        };
        if let Some(cached) = self.cached(id).filter(fresh) {
            return Ok(Some(cached.index));
        }
        let _loading = self.loading.lock().await;
        if let Some(cached) = self.cached(id).filter(fresh) {
            return Ok(Some(cached.index));
        }
        let Some((owner, version, embedding_model)) = store.vector_store_version(id).await? else {
            self.forget(id);
            return Ok(None);
        };
        let previous = self.cached(id).map(|c| c.index);
        let index = match previous {
            Some(index) if index.version == version => index,
            previous => {
                let index = load(store, id, owner, version, embedding_model, previous).await?;
                Arc::new(index)
            }
        };
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.to_owned(),
                Cached {
                    index: index.clone(),
                    checked: Some(Instant::now()),
                },
            );
        Ok(Some(index))
    }
}

/// Reads a store's index at `version`, keeping the files of `previous` that did not change.
async fn load(
    store: &Store,
    id: &str,
    owner: String,
    version: i64,
    embedding_model: Option<String>,
    previous: Option<Arc<StoreIndex>>,
) -> Result<StoreIndex> {
    let kept: HashMap<&str, &Arc<FileIndex>> = previous
        .as_ref()
        .map(|p| p.files.iter().map(|f| (f.file_id.as_str(), f)).collect())
        .unwrap_or_default();
    let mut files = Vec::new();
    for file in store.indexed_files(id).await? {
        let attributes = match &file.attributes {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        match kept.get(file.file_id.as_str()) {
            Some(old) if old.generation == file.generation && old.attributes == attributes => {
                files.push(Arc::clone(old));
            }
            _ => {
                let rows = store.file_chunks(id, &file.file_id).await?;
                // Indexing is CPU work (a few ms per hundred chunks): off the async workers.
                let built = tokio::task::spawn_blocking(move || {
                    let vectors: Vec<Option<Vec<f32>>> = rows
                        .iter()
                        .map(|r| r.embedding.as_deref().map(floats))
                        .collect();
                    FileIndex::build(
                        file,
                        rows.iter()
                            .zip(&vectors)
                            .map(|(r, v)| (r.text.as_str(), v.as_deref())),
                    )
                })
                .await
                .map_err(|e| crate::error::Error::internal(format!("indexing failed: {e}")))?;
                files.push(Arc::new(built));
            }
        }
    }
    Ok(StoreIndex {
        id: id.to_owned(),
        owner,
        version,
        embedding_model,
        files,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(id: &str, chunks: &[(&str, [f32; 3])]) -> Arc<FileIndex> {
        let meta = IndexedFile {
            file_id: id.to_owned(),
            filename: format!("{id}.txt"),
            attributes: json!({"name": id}),
            generation: 1,
        };
        Arc::new(FileIndex::build(
            meta,
            chunks.iter().map(|(t, v)| (*t, Some(&v[..]))),
        ))
    }

    fn words(q: &str) -> Vec<String> {
        crate::words::terms(q, 16)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn words_find_exact_codes_and_vectors_find_meaning() {
        let a = file(
            "a",
            &[
                (
                    "The invoice code is XK-2291 for the March order.",
                    [1.0, 0.0, 0.0],
                ),
                ("Cats sleep most of the day.", [0.0, 1.0, 0.0]),
            ],
        );
        let b = file("b", &[("Felines nap for many hours.", [0.0, 0.9, 0.1])]);
        let store = StoreIndex::new("vs", Some("m".into()), vec![a, b]);
        let query = [0.0f32, 1.0, 0.0];
        let searched = [Searched {
            index: &store,
            query_vector: Some(&query),
        }];
        let everything = |_: &FileIndex| true;
        // The exact code, by words.
        let found = rank(
            &searched,
            &words("XK-2291 invoice"),
            Mode::Words,
            10,
            &everything,
        );
        assert_eq!((found[0].file, found[0].seq), (0, 0));
        // A paraphrase with no shared word, by vectors: both cat chunks, nearest first.
        let found = rank(
            &searched,
            &words("kitty dozing"),
            Mode::Vectors,
            2,
            &everything,
        );
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].file, found[0].seq), (0, 1));
        assert_eq!(found[1].file, 1);
        // Hybrid: the chunk first in both lists scores 1 and comes first.
        let found = rank(
            &searched,
            &words("cats sleep"),
            Mode::Hybrid,
            3,
            &everything,
        );
        assert_eq!((found[0].file, found[0].seq), (0, 1));
        assert!((found[0].score - 1.0).abs() < 1e-6);
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score));
        // A filter keeps a file out entirely.
        let only_b = |f: &FileIndex| f.file_id == "b";
        let found = rank(&searched, &words("cats sleep"), Mode::Hybrid, 3, &only_b);
        assert!(found.iter().all(|f| f.file == 1));
    }

    #[test]
    fn quantised_cosine_is_close() {
        let v: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let v: Vec<f32> = v.iter().map(|x| x / norm).collect();
        let (q, s) = quantise(&v);
        let approx = dot(&q, &q) as f32 * s * s;
        assert!((approx - 1.0).abs() < 0.01, "{approx}");
        assert_eq!(floats(&1.5f32.to_le_bytes()), [1.5]);
    }
}

//! The in-memory index of the vector stores this replica searches: per store, the BM25
//! postings of its chunks' words (one list per word for the whole store, so a search looks each
//! word up once however many files there are), and per file its chunks' embeddings quantised
//! to one byte a dimension (a quarter of the memory, and a dot product the CPU does 16 or 32
//! lanes at a time; the error, under 1% of a cosine, does not change a ranking that matters).
//!
//! The database is the truth. An index is loaded on a store's first search and checked against
//! the store's `version` at most every `[storage] sync_interval` (one primary-key read), so a
//! file added on another replica is searchable here within that time; a change made through
//! this replica is seen at once ([`Indexes::invalidate`]). Only files whose chunks changed are
//! read again; the words of the others move over from the previous index. Chunk texts stay in
//! the database: a search reads the few it returns.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::Result;
use crate::store::{ChunkRow, IndexedFile, Store};

/// The score of the weakest chunk a search returns.
const FLOOR: f32 = 0.01;

/// BM25's term-frequency saturation and length normalisation.
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// One file of a store's index: what it is, and how much it holds. Its chunks' words and
/// embeddings are kept by the store, with every other file's.
pub struct FileIndex {
    pub file_id: String,
    pub filename: String,
    pub attributes: Map<String, Value>,
    generation: i64,
    chunks: usize,
    /// Words in all its chunks.
    words: u64,
}

/// A file's chunks as indexing found them, until they join its store's index.
pub struct FileChunks {
    /// Words per chunk.
    lens: Vec<u32>,
    /// Word → (chunk, occurrences), by chunk.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Dimensions of the embeddings; 0 when some chunk has none.
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
    ) -> (FileIndex, FileChunks) {
        let mut index = FileIndex {
            file_id: file.file_id,
            filename: file.filename,
            attributes: match file.attributes {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            generation: file.generation,
            chunks: 0,
            words: 0,
        };
        let mut found = FileChunks {
            lens: Vec::new(),
            postings: HashMap::new(),
            dims: 0,
            vectors: Vec::new(),
            scales: Vec::new(),
        };
        let mut embedded = true;
        for (seq, (text, embedding)) in chunks.into_iter().enumerate() {
            let terms = crate::words::terms(text, usize::MAX);
            let len: u32 = terms.iter().map(|(_, n)| n).sum();
            found.lens.push(len);
            index.words += u64::from(len);
            for (term, n) in terms {
                found
                    .postings
                    .entry(term)
                    .or_default()
                    .push((seq as u32, n));
            }
            match embedding {
                Some(v) if embedded && !v.is_empty() && (seq == 0 || v.len() == found.dims) => {
                    found.dims = v.len();
                    let (q, scale) = quantise(v);
                    found.vectors.extend(q);
                    found.scales.push(scale);
                }
                // A chunk without (or with a mismatched) embedding: the file is searched by
                // its words only.
                _ => embedded = false,
            }
        }
        index.chunks = found.lens.len();
        if !embedded {
            found.dims = 0;
            found.vectors = Vec::new();
            found.scales = Vec::new();
        }
        (index, found)
    }

    pub fn chunks(&self) -> usize {
        self.chunks
    }
}

/// A vector store's index at one version. Its chunks are numbered by slot: the first file's,
/// then the next file's, and so on; words and embeddings are kept by slot for the whole
/// store, so that a search looks each word up once and scans the embeddings in one run of
/// memory, however many files there are.
pub struct StoreIndex {
    pub id: String,
    pub owner: String,
    pub version: i64,
    pub embedding_model: Option<String>,
    pub files: Vec<Arc<FileIndex>>,
    /// Each file's first slot, and the number of slots at the end.
    starts: Vec<u32>,
    /// Per slot: its file.
    slot_file: Vec<u32>,
    /// Per slot: its chunk's length in words.
    lens: Vec<u32>,
    /// Word → (slot, occurrences).
    postings: HashMap<Box<str>, Vec<(u32, u32)>>,
    /// Dimensions of the embeddings; 0 when no file has any.
    dims: usize,
    /// Per file: whether its chunks have embeddings of `dims` dimensions.
    embedded: Vec<bool>,
    /// Slot after slot, `dims` bytes each (zeros for a file without embeddings).
    vectors: Vec<i8>,
    /// Per slot: the value of one quantisation step.
    scales: Vec<f32>,
}

impl StoreIndex {
    /// An index of files built elsewhere (benchmarks, tests), each merged in as it comes.
    pub fn new(
        id: &str,
        embedding_model: Option<String>,
        files: impl IntoIterator<Item = (Arc<FileIndex>, FileChunks)>,
    ) -> StoreIndex {
        let mut builder = Builder::new(None);
        for (file, chunks) in files {
            builder.add(file, Some(chunks));
        }
        builder.finish(id.to_owned(), String::new(), 0, embedding_model)
    }

    fn range(&self, file: usize) -> std::ops::Range<usize> {
        self.starts[file] as usize..self.starts[file + 1] as usize
    }

    /// Chunks in the store.
    pub fn chunks(&self) -> usize {
        self.lens.len()
    }

    /// Bytes the index holds, roughly.
    pub fn memory(&self) -> usize {
        let postings: usize = self
            .postings
            .iter()
            .map(|(word, list)| word.len() + 16 + 24 + 8 * list.capacity() + 8)
            .sum();
        let files: usize = self
            .files
            .iter()
            .map(|f| 160 + f.file_id.len() + f.filename.len())
            .sum();
        let slots = 4 * (self.slot_file.len() + self.lens.len() + self.scales.len());
        postings + files + slots + self.vectors.capacity()
    }
}

/// Puts a store's index together file by file, in slot order: a file indexed now brings its
/// chunks, which join the store's at once (so a reload holds one file's words twice at most);
/// a file unchanged since the previous index has its words and embeddings moved over.
struct Builder<'p> {
    previous: Option<&'p StoreIndex>,
    /// The previous index's files by id.
    before: HashMap<&'p str, usize>,
    /// Per file of the previous index: where it starts now, if it was kept.
    moved: Vec<Option<u32>>,
    /// The index so far (its `slot_file` and names are set at the end).
    index: StoreIndex,
}

impl<'p> Builder<'p> {
    fn new(previous: Option<&'p StoreIndex>) -> Builder<'p> {
        Builder {
            previous,
            before: previous.map_or_else(HashMap::new, |p| {
                p.files
                    .iter()
                    .enumerate()
                    .map(|(f, file)| (file.file_id.as_str(), f))
                    .collect()
            }),
            moved: vec![None; previous.map_or(0, |p| p.files.len())],
            index: StoreIndex {
                id: String::new(),
                owner: String::new(),
                version: 0,
                embedding_model: None,
                files: Vec::new(),
                starts: Vec::new(),
                slot_file: Vec::new(),
                lens: Vec::new(),
                postings: HashMap::new(),
                dims: 0,
                embedded: Vec::new(),
                vectors: Vec::new(),
                scales: Vec::new(),
            },
        }
    }

    /// Adds the next file: with its chunks, or without when it is unchanged since the previous
    /// index (whose words and embeddings it then gets).
    fn add(&mut self, file: Arc<FileIndex>, chunks: Option<FileChunks>) {
        let start = self.index.lens.len() as u32;
        let (lens, dims, vectors, scales) = match chunks {
            Some(chunks) => {
                for (word, list) in chunks.postings {
                    self.index
                        .postings
                        .entry(word.into_boxed_str())
                        .or_default()
                        .extend(list.into_iter().map(|(seq, tf)| (start + seq, tf)));
                }
                (chunks.lens, chunks.dims, chunks.vectors, chunks.scales)
            }
            None => {
                let old = self
                    .previous
                    .and_then(|p| Some((p, *self.before.get(file.file_id.as_str())?)));
                match old {
                    Some((previous, old)) => {
                        self.moved[old] = Some(start);
                        let range = previous.range(old);
                        let (dims, vectors, scales) = if previous.embedded[old] {
                            let bytes = range.start * previous.dims..range.end * previous.dims;
                            (
                                previous.dims,
                                previous.vectors[bytes].to_vec(),
                                previous.scales[range.clone()].to_vec(),
                            )
                        } else {
                            (0, Vec::new(), Vec::new())
                        };
                        (previous.lens[range].to_vec(), dims, vectors, scales)
                    }
                    // Not in the previous index after all: no words, no chunks.
                    None => (vec![0; file.chunks], 0, Vec::new(), Vec::new()),
                }
            }
        };
        let slots = lens.len();
        self.index.lens.extend(lens);
        if dims > 0 && self.index.dims == 0 {
            // The first file with embeddings sets the store's dimensions; the files before it
            // get zeros.
            self.index.dims = dims;
            self.index.vectors = vec![0; start as usize * dims];
            self.index.scales = vec![0.0; start as usize];
        }
        let embedded = dims > 0 && dims == self.index.dims;
        if embedded {
            self.index.vectors.extend(vectors);
            self.index.scales.extend(scales);
        } else if self.index.dims > 0 {
            self.index
                .vectors
                .resize(self.index.vectors.len() + slots * self.index.dims, 0);
            self.index
                .scales
                .resize(self.index.scales.len() + slots, 0.0);
        }
        self.index.embedded.push(embedded);
        self.index.starts.push(start);
        self.index.files.push(file);
    }

    fn finish(
        mut self,
        id: String,
        owner: String,
        version: i64,
        embedding_model: Option<String>,
    ) -> StoreIndex {
        let slots = self.index.lens.len();
        self.index.starts.push(slots as u32);
        let mut slot_file = vec![0u32; slots];
        for f in 0..self.index.files.len() {
            slot_file[self.index.range(f)].fill(f as u32);
        }
        if let Some(previous) = self.previous {
            for (word, list) in &previous.postings {
                let kept = list.iter().filter_map(|&(slot, tf)| {
                    let old = previous.slot_file[slot as usize] as usize;
                    self.moved[old].map(|start| (start + slot - previous.starts[old], tf))
                });
                let mut kept = kept.peekable();
                if kept.peek().is_some() {
                    self.index
                        .postings
                        .entry(word.clone())
                        .or_default()
                        .extend(kept);
                }
            }
        }
        self.index
            .postings
            .values_mut()
            .for_each(Vec::shrink_to_fit);
        self.index.postings.shrink_to_fit();
        StoreIndex {
            id,
            owner,
            version,
            embedding_model,
            slot_file,
            ..self.index
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

/// The searched stores, with which of their files a search may return. A chunk's slot in a
/// search is its store's first slot plus its slot in the store.
struct Scope<'s, 'a> {
    stores: &'s [Searched<'a>],
    /// Each store's first slot.
    bases: Vec<usize>,
    /// Per store, per file: whether it is searched (`None`: all are).
    allowed: Vec<Option<Vec<bool>>>,
    /// Slots of all the stores.
    slots: usize,
}

impl Scope<'_, '_> {
    fn allows(&self, store: usize, slot: u32) -> bool {
        match &self.allowed[store] {
            None => true,
            Some(files) => files[self.stores[store].index.slot_file[slot as usize] as usize],
        }
    }

    fn allows_file(&self, store: usize, file: usize) -> bool {
        self.allowed[store].as_ref().is_none_or(|files| files[file])
    }
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
    let mut bases = Vec::with_capacity(stores.len());
    let mut slots = 0;
    for searched in stores {
        bases.push(slots);
        slots += searched.index.chunks();
    }
    let allowed = stores
        .iter()
        .map(|s| {
            let files: Vec<bool> = s.index.files.iter().map(|f| allowed(f)).collect();
            (!files.iter().all(|&a| a)).then_some(files)
        })
        .collect();
    let scope = Scope {
        stores,
        bases,
        allowed,
        slots,
    };
    let mut lists: Vec<Vec<(usize, f32)>> = Vec::new();
    if mode != Mode::Vectors && !words.is_empty() {
        lists.push(bm25(&scope, words, depth));
    }
    if mode != Mode::Words {
        let by_vector = cosine(&scope, depth);
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
            let store = scope
                .bases
                .partition_point(|&base| base <= slot)
                .checked_sub(1)?;
            let index = stores[store].index;
            let local = slot - scope.bases[store];
            let file = *index.slot_file.get(local)? as usize;
            Some(Found {
                store,
                file,
                seq: (local - index.starts[file] as usize) as u32,
                score,
            })
        })
        .collect()
}

/// Slots ranked by BM25 (best first, at most `depth`) with their scores, over the chunks of the
/// searched files.
fn bm25(scope: &Scope<'_, '_>, words: &[String], depth: usize) -> Vec<(usize, f32)> {
    let mut n = 0usize;
    let mut total_words = 0u64;
    for (s, searched) in scope.stores.iter().enumerate() {
        for (f, file) in searched.index.files.iter().enumerate() {
            if scope.allows_file(s, f) {
                n += file.chunks;
                total_words += file.words;
            }
        }
    }
    let average = (total_words as f32 / (n as f32).max(1.0)).max(1.0);
    let n = n as f32;
    let mut scores = vec![0f32; scope.slots];
    let mut touched: Vec<usize> = Vec::new();
    for word in words {
        let lists: Vec<(usize, &[(u32, u32)])> = scope
            .stores
            .iter()
            .enumerate()
            .filter_map(|(s, searched)| {
                let list = searched.index.postings.get(word.as_str())?;
                Some((s, list.as_slice()))
            })
            .collect();
        let df: usize = lists
            .iter()
            .map(|&(s, list)| match scope.allowed[s] {
                None => list.len(),
                Some(_) => list
                    .iter()
                    .filter(|&&(slot, _)| scope.allows(s, slot))
                    .count(),
            })
            .sum();
        if df == 0 {
            continue;
        }
        let idf = (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        for (s, list) in lists {
            let index = scope.stores[s].index;
            for &(slot, tf) in list {
                if !scope.allows(s, slot) {
                    continue;
                }
                let tf = tf as f32;
                let len = index.lens[slot as usize] as f32;
                let weight = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / average));
                let at = scope.bases[s] + slot as usize;
                if scores[at] == 0.0 {
                    touched.push(at);
                }
                scores[at] += weight;
            }
        }
    }
    top(touched.into_iter().map(|slot| (scores[slot], slot)), depth)
}

/// Slots ranked by the cosine of their embedding with their store's query vector, with it.
fn cosine(scope: &Scope<'_, '_>, depth: usize) -> Vec<(usize, f32)> {
    let mut heap: BinaryHeap<Reverse<(Score, usize)>> = BinaryHeap::with_capacity(depth + 1);
    let mut products = Vec::new();
    for (s, searched) in scope.stores.iter().enumerate() {
        let index = searched.index;
        let Some((query, query_scale)) = searched.query_vector.map(quantise) else {
            continue;
        };
        if index.dims == 0 || index.dims != query.len() {
            continue;
        }
        // Runs of consecutive files to scan, each in one pass over its memory: every file
        // with embeddings, unless a filter leaves some out.
        let mut f = 0;
        while f < index.files.len() {
            let searched = |f: usize| index.embedded[f] && scope.allows_file(s, f);
            if !searched(f) {
                f += 1;
                continue;
            }
            let first = f;
            while f < index.files.len() && searched(f) {
                f += 1;
            }
            let slots = index.starts[first] as usize..index.starts[f] as usize;
            let bytes = slots.start * index.dims..slots.end * index.dims;
            dots(&query, &index.vectors[bytes], &mut products);
            for (&product, slot) in products.iter().zip(slots) {
                let similarity = product as f32 * query_scale * index.scales[slot];
                let item = Reverse((Score(similarity), scope.bases[s] + slot));
                if heap.len() < depth {
                    heap.push(item);
                } else if heap.peek().is_some_and(|low| item < *low) {
                    heap.pop();
                    heap.push(item);
                }
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
pub(crate) fn quantise(v: &[f32]) -> (Vec<i8>, f32) {
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

/// The dot products of `query` with each of `vectors` (one after another, `query.len()` bytes
/// each), into `products`. A build for baseline x86-64 may use only SSE2; this loop is also
/// compiled for AVX2 (twice the lanes) and the CPU's best is picked at run time.
pub(crate) fn dots(query: &[i8], vectors: &[i8], products: &mut Vec<i32>) {
    struct Dots<'a> {
        query: &'a [i8],
        vectors: &'a [i8],
        products: &'a mut Vec<i32>,
    }
    impl pulp::WithSimd for Dots<'_> {
        type Output = ();
        // Inlined into pulp's per-instruction-set entry points, so the loop is vectorised for
        // each of them.
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            self.products.clear();
            let vectors = self.vectors.chunks_exact(self.query.len().max(1));
            self.products
                .extend(vectors.map(|vector| dot(self.query, vector)));
        }
    }
    static ARCH: std::sync::OnceLock<pulp::Arch> = std::sync::OnceLock::new();
    ARCH.get_or_init(pulp::Arch::new).dispatch(Dots {
        query,
        vectors,
        products,
    });
}

/// Written so that the compiler vectorises it: widen, multiply, add in lanes.
#[inline(always)]
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
    /// One reload of a store at a time: two searches of a stale store read it once, while
    /// other stores load and serve as they need.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
            loading: Mutex::default(),
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
        let lock = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        let loaded = async {
            let _loading = lock.lock().await;
            if let Some(cached) = self.cached(id).filter(fresh) {
                return Ok(Some(cached.index));
            }
            self.reload(store, id).await
        }
        .await;
        // The last one out removes the store's lock (the map holds one reference).
        let mut locks = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(id);
        }
        loaded
    }

    /// Reads store `id`'s version, and its index again if that changed.
    async fn reload(&self, store: &Store, id: &str) -> Result<Option<Arc<StoreIndex>>> {
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

/// Where a file's part of a reloaded index comes from.
enum Source {
    /// Unchanged: its words and embeddings move over from the previous index.
    Kept(Arc<FileIndex>),
    /// New or changed: its chunks, read again.
    Read(Vec<ChunkRow>),
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
    // Each file: kept from the previous index, or its chunks read again.
    let mut plan: Vec<(IndexedFile, Source)> = Vec::new();
    {
        let kept: HashMap<&str, &Arc<FileIndex>> = previous
            .as_ref()
            .map(|p| p.files.iter().map(|f| (f.file_id.as_str(), f)).collect())
            .unwrap_or_default();
        for file in store.indexed_files(id).await? {
            let source = match kept.get(file.file_id.as_str()) {
                Some(old) if unchanged(old, &file) => Source::Kept(Arc::clone(old)),
                _ => Source::Read(store.file_chunks(id, &file.file_id).await?),
            };
            plan.push((file, source));
        }
    }
    let id = id.to_owned();
    // Indexing chunks and merging the store's words is CPU work (a few ms per hundred
    // chunks): off the async workers.
    tokio::task::spawn_blocking(move || {
        let mut builder = Builder::new(previous.as_deref());
        for (file, source) in plan {
            match source {
                Source::Kept(old) => builder.add(old, None),
                Source::Read(rows) => {
                    let vectors: Vec<Option<Vec<f32>>> = rows
                        .iter()
                        .map(|r| r.embedding.as_deref().map(floats))
                        .collect();
                    let (built, chunks) = FileIndex::build(
                        file,
                        rows.iter()
                            .zip(&vectors)
                            .map(|(r, v)| (r.text.as_str(), v.as_deref())),
                    );
                    builder.add(Arc::new(built), Some(chunks));
                }
            }
        }
        builder.finish(id, owner, version, embedding_model)
    })
    .await
    .map_err(|e| crate::error::Error::internal(format!("indexing failed: {e}")))
}

/// Whether `file` is as the previous index has it, so that its chunks need not be read again.
fn unchanged(old: &FileIndex, file: &IndexedFile) -> bool {
    old.generation == file.generation
        && match &file.attributes {
            Value::Object(map) => &old.attributes == map,
            _ => old.attributes.is_empty(),
        }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(id: &str, chunks: &[(&str, [f32; 3])]) -> (Arc<FileIndex>, FileChunks) {
        let meta = IndexedFile {
            file_id: id.to_owned(),
            filename: format!("{id}.txt"),
            attributes: json!({"name": id}),
            generation: 1,
        };
        let (file, words) = FileIndex::build(meta, chunks.iter().map(|(t, v)| (*t, Some(&v[..]))));
        (Arc::new(file), words)
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
    fn a_reload_moves_kept_files_words_and_ranks_as_a_fresh_index() {
        let chunks_a = [
            ("alpha river boats", [1.0, 0.0, 0.0]),
            ("beta mountain", [0.0, 1.0, 0.0]),
        ];
        let chunks_b = [("gamma river delta", [0.0, 0.0, 1.0])];
        let chunks_c = [
            ("river alpha again", [1.0, 0.1, 0.0]),
            ("mountain beta river", [0.1, 1.0, 0.0]),
        ];
        let (a, a_chunks) = file("a", &chunks_a);
        let (b, b_chunks) = file("b", &chunks_b);
        let first = StoreIndex::new("vs", None, vec![(a.clone(), a_chunks), (b, b_chunks)]);
        // b goes, c comes before a: a's words and embeddings move to new slots.
        let (c, c_chunks) = file("c", &chunks_c);
        let mut builder = Builder::new(Some(&first));
        builder.add(c, Some(c_chunks));
        builder.add(a, None);
        let reloaded = builder.finish("vs".into(), String::new(), 1, None);
        let fresh = StoreIndex::new("vs", None, vec![file("c", &chunks_c), file("a", &chunks_a)]);
        assert_eq!(reloaded.chunks(), 4);
        assert_eq!(reloaded.lens, fresh.lens);
        assert_eq!(reloaded.vectors, fresh.vectors);
        assert_eq!(reloaded.scales, fresh.scales);
        let everything = |_: &FileIndex| true;
        for (query, vector) in [
            ("river", [1.0, 0.0, 0.0]),
            ("alpha", [0.0, 1.0, 0.0]),
            ("mountain beta", [0.5, 0.5, 0.0]),
            ("gamma", [0.0, 0.0, 1.0]),
        ] {
            let ranked = |index: &StoreIndex| {
                let searched = [Searched {
                    index,
                    query_vector: Some(&vector),
                }];
                rank(&searched, &words(query), Mode::Hybrid, 10, &everything)
            };
            assert_eq!(ranked(&reloaded), ranked(&fresh), "{query}");
        }
        assert!(
            !reloaded.postings.contains_key("gamma"),
            "b's words left with it"
        );
    }

    #[test]
    fn files_without_embeddings_are_searched_by_words_only() {
        let meta = |id: &str| IndexedFile {
            file_id: id.to_owned(),
            filename: format!("{id}.txt"),
            attributes: json!({}),
            generation: 1,
        };
        let (plain, plain_chunks) = FileIndex::build(meta("plain"), [("cats sleep all day", None)]);
        let (cats, cats_chunks) = file("cats", &[("cats purr", [0.0, 1.0, 0.0])]);
        let store = StoreIndex::new(
            "vs",
            None,
            vec![(Arc::new(plain), plain_chunks), (cats, cats_chunks)],
        );
        assert_eq!(store.dims, 3);
        assert_eq!(
            store.vectors.len(),
            2 * 3,
            "zeros stand in for the plain file"
        );
        let query = [0.0f32, 1.0, 0.0];
        let searched = [Searched {
            index: &store,
            query_vector: Some(&query),
        }];
        let found = rank(&searched, &[], Mode::Vectors, 10, &|_: &FileIndex| true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].file, 1);
        let found = rank(
            &searched,
            &words("cats"),
            Mode::Words,
            10,
            &|_: &FileIndex| true,
        );
        assert_eq!(found.len(), 2);
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
        // The dispatched loop computes the same products as the plain one.
        let (r, _) = quantise(&v.iter().rev().copied().collect::<Vec<_>>());
        let mut products = Vec::new();
        dots(&q, &[q.clone(), r.clone()].concat(), &mut products);
        assert_eq!(products, [dot(&q, &q), dot(&q, &r)]);
        assert_eq!(floats(&1.5f32.to_le_bytes()), [1.5]);
    }
}

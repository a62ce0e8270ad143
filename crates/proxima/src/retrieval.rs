//! Retrieval: documents a team uploaded once (`/v1/files`), chunked, embedded and indexed in
//! vector stores (`/v1/vector_stores`), searched for every model through every API.
//!
//! A search is hybrid: BM25 over the chunks' words finds exact names and codes, cosine
//! similarity of embeddings finds paraphrases, and the two rankings are merged by the mean of
//! their scores, each scaled to 0..1. Chunks and vectors live in the database, so every
//! replica searches the same data; each replica keeps an in-memory index of the stores it has
//! searched, kept in sync.
//!
//! Searches are made by `POST /v1/vector_stores/{id}/search`, by the `file_search` tool of
//! `/v1/responses`, and for the new message of a chat call that names stores
//! (`x-proxima-vector-stores`, or a conversation's metadata `vector_store_ids`).

pub mod chunk;
pub mod extract;
pub mod filter;
pub mod index;
pub mod ingest;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use filter::Filter;
use index::{Mode, Searched, StoreIndex};

use crate::canonical::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest};
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;
use crate::store::ChunkKey;

/// Stores one search may cover at most.
pub const MAX_STORES: usize = 10;

/// Chunks each ranking (words, vectors) hands to the fusion, at least.
const MIN_DEPTH: usize = 50;

/// Searches over more chunks than this run on the blocking pool (a scan costs about 25 ns a
/// chunk); smaller ones run in place.
const INLINE_CHUNKS: usize = 20_000;

/// Results a search returns when the caller does not say: OpenAI's default.
pub const DEFAULT_RESULTS: usize = 10;
/// Results a search returns at most: OpenAI's limit.
pub const MAX_RESULTS: usize = 50;

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    /// 1 to [`MAX_RESULTS`].
    pub max_num_results: usize,
    /// Only chunks of files whose attributes pass.
    pub filter: Option<Filter>,
    /// Results scoring below this (0 to 1) are left out.
    pub score_threshold: Option<f32>,
}

/// One chunk found, with what its file is.
#[derive(Debug, Clone)]
pub struct Hit {
    pub vector_store_id: String,
    pub file_id: String,
    pub filename: String,
    /// 0 to 1, higher is more relevant; results come in descending order.
    pub score: f32,
    pub attributes: Map<String, Value>,
    /// The chunk's text.
    pub text: String,
}

impl Hit {
    /// The score as answers print it: rounded to six decimals, so that a stored answer read
    /// back (serde_json reads long decimals up to an ulp off) prints the same number.
    pub fn wire_score(&self) -> f64 {
        (f64::from(self.score) * 1e6).round() / 1e6
    }
}

/// Searches the caller's vector stores `store_ids` (merged, best first). A store that does not
/// exist or belongs to another tenant is a 404, as if it did not exist.
pub async fn search(
    cx: &Arc<RequestContext>,
    store_ids: &[String],
    req: &SearchRequest,
) -> Result<Vec<Hit>> {
    let stores = owned_indexes(cx, store_ids).await?;
    let vectors = query_vectors(cx, &stores, &req.query).await;
    let words: Vec<String> = crate::words::terms(&req.query, 64)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let chunks: usize = stores.iter().map(|s| s.chunks()).sum();
    let filter = req.filter.clone();
    let depth = MIN_DEPTH.max(4 * req.max_num_results);
    let rank = {
        let stores = stores.clone();
        move || {
            let searched: Vec<Searched> = stores
                .iter()
                .map(|s| Searched {
                    index: s,
                    query_vector: s
                        .embedding_model
                        .as_ref()
                        .and_then(|m| vectors.get(m))
                        .map(Vec::as_slice),
                })
                .collect();
            let allowed = |file: &index::FileIndex| {
                filter.as_ref().is_none_or(|f| f.matches(&file.attributes))
            };
            index::rank(&searched, &words, Mode::Hybrid, depth, &allowed)
        }
    };
    let found = if chunks > INLINE_CHUNKS {
        tokio::task::spawn_blocking(rank)
            .await
            .map_err(|e| Error::internal(format!("search failed: {e}")))?
    } else {
        rank()
    };
    let threshold = req.score_threshold.unwrap_or(0.0);
    let found: Vec<_> = found
        .into_iter()
        .filter(|f| f.score >= threshold)
        .take(req.max_num_results)
        .collect();
    let keys: Vec<ChunkKey> = found
        .iter()
        .map(|f| ChunkKey {
            store_id: stores[f.store].id.clone(),
            file_id: stores[f.store].files[f.file].file_id.clone(),
            seq: i64::from(f.seq),
        })
        .collect();
    let texts = cx.services.store.chunk_texts(&keys).await?;
    touch(cx, &stores);
    Ok(found
        .into_iter()
        .zip(texts)
        .map(|(f, text)| {
            let file = &stores[f.store].files[f.file];
            Hit {
                vector_store_id: stores[f.store].id.clone(),
                file_id: file.file_id.clone(),
                filename: file.filename.clone(),
                score: f.score,
                attributes: file.attributes.clone(),
                text,
            }
        })
        .collect())
}

/// The 404 for a store the caller cannot see.
pub fn unknown_store(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no vector store `{id}`: it does not exist, or belongs to another team or key"),
    )
}

/// The indexes of the caller's stores `ids`, each once; 404 for any other.
async fn owned_indexes(cx: &RequestContext, ids: &[String]) -> Result<Vec<Arc<StoreIndex>>> {
    if ids.len() > MAX_STORES {
        return Err(Error::invalid_request(format!(
            "a search covers at most {MAX_STORES} vector stores"
        ))
        .with_param("vector_store_ids"));
    }
    let tenant = cx.tenant();
    let mut stores: Vec<Arc<StoreIndex>> = Vec::with_capacity(ids.len());
    for id in ids {
        if stores.iter().any(|s| s.id == *id) {
            continue;
        }
        let index = cx
            .services
            .indexes
            .current(&cx.services.store, id)
            .await?
            .filter(|index| index.owner == tenant)
            .ok_or_else(|| unknown_store(id))?;
        stores.push(index);
    }
    Ok(stores)
}

/// The query embedded by each model the stores were embedded with. A model that fails leaves
/// its stores to word search (the failure is in the ledger and the log): a search answers
/// even while the embedding upstream is down.
async fn query_vectors(
    cx: &RequestContext,
    stores: &[Arc<StoreIndex>],
    query: &str,
) -> HashMap<String, Vec<f32>> {
    let mut vectors = HashMap::new();
    for model in stores.iter().filter_map(|s| s.embedding_model.as_ref()) {
        if vectors.contains_key(model) {
            continue;
        }
        match embed(cx, model, vec![query.to_owned()], "search").await {
            Ok(mut v) if v.len() == 1 => {
                vectors.insert(model.clone(), v.remove(0));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                model = %model,
                error = %e.message,
                "could not embed a search query; searching by words only"
            ),
        }
    }
    vectors
}

/// Embeds `texts` with public model `model` through the pipeline, on the caller's behalf:
/// limits apply and the call has its ledger row.
pub async fn embed(
    cx: &RequestContext,
    model: &str,
    texts: Vec<String>,
    purpose: &str,
) -> Result<Vec<Vec<f32>>> {
    let n = texts.len();
    let request = EmbeddingsRequest {
        model: model.to_owned(),
        input: EmbeddingInput::Texts(texts),
        dimensions: None,
        encoding_format: None,
        user: None,
        passthrough: Default::default(),
    };
    let answer = crate::pipeline::embed(&cx.derived(purpose), request)
        .await
        .result?;
    let vectors: Vec<Vec<f32>> = answer
        .data
        .into_iter()
        .map(|v| match v {
            EmbeddingVector::Float(v) => Ok(v),
            EmbeddingVector::Base64(_) => Err(Error::upstream(
                "the embedding model answered base64 when floats were asked for",
            )),
        })
        .collect::<Result<_>>()?;
    if vectors.len() != n {
        return Err(Error::upstream(format!(
            "the embedding model answered {} vectors for {n} texts",
            vectors.len()
        )));
    }
    Ok(vectors)
}

/// Marks the searched stores used (their expiry counts from their last use), off the path
/// and at most once a minute each.
fn touch(cx: &RequestContext, stores: &[Arc<StoreIndex>]) {
    let store = cx.services.store.clone();
    let ids: Vec<String> = stores
        .iter()
        .filter(|s| cx.services.indexes.should_touch(&s.id))
        .map(|s| s.id.clone())
        .collect();
    if ids.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let now = now_ms();
        for id in ids {
            if let Err(e) = store.touch_vector_store(&id, now).await {
                tracing::debug!(error = %e.message, "could not mark a vector store used");
            }
        }
    });
}

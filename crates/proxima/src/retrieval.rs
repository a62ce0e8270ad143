//! Retrieval: documents a team uploaded once (`/v1/files`), chunked, embedded and indexed in
//! vector stores (`/v1/vector_stores`), searched for every model through every API.
//!
//! A search is hybrid: BM25 over the chunks' words finds exact names and codes, cosine
//! similarity of embeddings finds paraphrases, and reciprocal rank fusion merges the two
//! rankings. Chunks and vectors live in the database, so every replica searches the same
//! data; each replica keeps an in-memory index of the stores it has searched, kept in sync.
//!
//! Searches are made by `POST /v1/vector_stores/{id}/search`, by the `file_search` tool of
//! `/v1/responses`, and for the new message of a chat call that names stores
//! (`x-proxima-vector-stores`, or a conversation's metadata `vector_store_ids`).

pub mod extract;
pub mod filter;

use std::sync::Arc;

use serde_json::{Map, Value};

pub use filter::Filter;

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;

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

/// Searches the caller's vector stores `store_ids` (merged, best first). A store that does not
/// exist or belongs to another tenant is a 404, as if it did not exist.
pub async fn search(
    cx: &Arc<RequestContext>,
    store_ids: &[String],
    req: &SearchRequest,
) -> Result<Vec<Hit>> {
    let _ = (cx, store_ids, req);
    Err(Error::new(
        ErrorKind::Unavailable,
        "vector store search is being built",
    ))
}

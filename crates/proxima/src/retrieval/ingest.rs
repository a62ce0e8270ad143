//! Ingestion: a file added to a vector store is read, its text extracted, chunked, embedded
//! and written, in the background. The file's row says where it is at every moment
//! (`in_progress`, then `completed` or `failed` with the reason), and the store's file counts
//! are counted from those rows, so they are true whenever they are read.
//!
//! Embedding calls go through the pipeline on the caller's behalf, like any call: the
//! caller's limits apply (a rate-limited batch waits and tries again) and each call has its
//! ledger row.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::chunk;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;
use crate::store::{NewChunk, StoreFileRecord};

/// Chunks embedded per call: enough to batch well, few enough that a call on a busy CPU
/// (the local embedder reads a few dozen chunks a second) ends well within a provider timeout.
const EMBED_BATCH: usize = 32;

/// Times a rate-limited embedding call is tried again, waiting as the limit says.
const RATE_LIMIT_RETRIES: u32 = 20;
/// Longest wait for a rate limit before the file fails.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Files ingested at once by this replica; more wait their turn (still `in_progress`).
pub const CONCURRENT_FILES: usize = 2;

/// Starts ingesting `file` into the store in the background.
pub fn start(
    cx: &Arc<RequestContext>,
    permits: &Arc<Semaphore>,
    file: StoreFileRecord,
    embedding_model: Option<String>,
) {
    let cx = cx.clone();
    let permits = permits.clone();
    tokio::spawn(async move {
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        let store = &cx.services.store;
        let outcome = ingest(&cx, &file, embedding_model.as_deref()).await;
        let written = match outcome {
            Ok(chunks) => store
                .complete_store_file(&file.store_id, &file.file_id, &chunks)
                .await
                .map(drop),
            Err(e) => {
                let code = match e.kind {
                    ErrorKind::InvalidRequest => "invalid_file",
                    ErrorKind::NotFound => "invalid_file",
                    _ => "server_error",
                };
                tracing::info!(
                    vector_store = %file.store_id,
                    file = %file.file_id,
                    error = %e.message,
                    "a file could not be added to a vector store"
                );
                store
                    .end_store_file(&file.store_id, &file.file_id, Some((code, &e.message)))
                    .await
            }
        };
        match written {
            Ok(()) => cx.services.indexes.invalidate(&file.store_id),
            Err(e) => tracing::warn!(
                vector_store = %file.store_id,
                file = %file.file_id,
                error = %e.message,
                "could not record the outcome of an ingestion; the file stays in progress"
            ),
        }
    });
}

/// The file's chunks with their embeddings.
async fn ingest(
    cx: &Arc<RequestContext>,
    file: &StoreFileRecord,
    embedding_model: Option<&str>,
) -> Result<Vec<NewChunk>> {
    let content = cx
        .services
        .store
        .file_content(&cx.tenant(), &file.file_id)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "the file was deleted"))?;
    let filename = file.filename.clone();
    let chunking = file.chunking;
    // Extraction (a PDF's text) and chunking are CPU work: off the async workers.
    let texts = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let text = super::extract::extract_text(&filename, &content)?;
        Ok(chunk::chunk(&text, chunking))
    })
    .await
    .map_err(|e| Error::internal(format!("text extraction failed: {e}")))??;
    if texts.is_empty() {
        return Err(Error::invalid_request("the file holds no text to search"));
    }
    let mut chunks = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let embeddings = match embedding_model {
            Some(model) => embed_patiently(cx, model, batch)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; batch.len()],
        };
        chunks.extend(
            batch
                .iter()
                .zip(embeddings)
                .map(|(text, embedding)| NewChunk {
                    text: text.clone(),
                    embedding,
                }),
        );
    }
    Ok(chunks)
}

/// Embeds a batch, waiting out the caller's rate limits.
async fn embed_patiently(
    cx: &RequestContext,
    model: &str,
    batch: &[String],
) -> Result<Vec<Vec<f32>>> {
    let mut tries = 0;
    loop {
        match super::embed(cx, model, batch.to_vec(), "ingest").await {
            Err(e)
                if e.kind == ErrorKind::RateLimited
                    && tries < RATE_LIMIT_RETRIES
                    && e.retry_after.is_some_and(|d| d <= MAX_RATE_LIMIT_WAIT) =>
            {
                tries += 1;
                tokio::time::sleep(e.retry_after.unwrap_or(MAX_RATE_LIMIT_WAIT)).await;
            }
            other => return other,
        }
    }
}

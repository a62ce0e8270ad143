//! The vector stores API's objects, in OpenAI's shape: a store, a file in a store, a file
//! batch, a page of search results. Times are epoch seconds, as OpenAI writes them.

use serde_json::{json, Value};

use crate::retrieval::Hit;
use crate::store::{Chunking, FileCounts, StoreFileRecord, VectorStoreRecord};

const DAY_MS: i64 = 86_400_000;

fn counts(counts: &FileCounts) -> Value {
    json!({
        "in_progress": counts.in_progress,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "total": counts.total(),
    })
}

/// When a store expires (epoch ms), if it has `expires_after`.
pub fn expires_at(record: &VectorStoreRecord) -> Option<i64> {
    let days = record.expires_after.as_ref()?.get("days")?.as_i64()?;
    Some(record.last_active_at + days * DAY_MS)
}

/// A vector store object.
pub fn vector_store(record: &VectorStoreRecord, files: &FileCounts, now: i64) -> Value {
    let expires_at = expires_at(record);
    let status = if expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if files.in_progress > 0 {
        "in_progress"
    } else {
        "completed"
    };
    json!({
        "id": record.id,
        "object": "vector_store",
        "created_at": record.created_at / 1000,
        "name": record.name,
        "description": Value::Null,
        "usage_bytes": files.usage_bytes,
        "file_counts": counts(files),
        "status": status,
        "expires_after": record.expires_after,
        "expires_at": expires_at.map(|at| at / 1000),
        "last_active_at": record.last_active_at / 1000,
        "metadata": if record.metadata.is_object() { record.metadata.clone() } else { json!({}) },
    })
}

/// The chunking strategy as OpenAI reports it: always the static sizes used.
pub fn chunking_strategy(chunking: &Chunking) -> Value {
    json!({
        "type": "static",
        "static": {
            "max_chunk_size_tokens": chunking.max_tokens,
            "chunk_overlap_tokens": chunking.overlap_tokens,
        }
    })
}

/// A file in a store.
pub fn store_file(record: &StoreFileRecord) -> Value {
    json!({
        "id": record.file_id,
        "object": "vector_store.file",
        "usage_bytes": record.usage_bytes,
        "created_at": record.created_at / 1000,
        "vector_store_id": record.store_id,
        "status": record.status,
        "last_error": record.last_error,
        "chunking_strategy": chunking_strategy(&record.chunking),
        "attributes": if record.attributes.is_object() { record.attributes.clone() } else { json!({}) },
    })
}

/// A file batch: the counts of the files added with it.
pub fn batch(id: &str, store_id: &str, files: &FileCounts) -> Value {
    let status = if files.in_progress > 0 {
        "in_progress"
    } else if files.cancelled > 0 {
        "cancelled"
    } else if files.completed == 0 && files.failed > 0 {
        "failed"
    } else {
        "completed"
    };
    json!({
        "id": id,
        "object": "vector_store.files_batch",
        "created_at": files.newest / 1000,
        "vector_store_id": store_id,
        "status": status,
        "file_counts": counts(files),
    })
}

/// A page of search results. All results come in one page.
pub fn search_results(query: &str, hits: &[Hit]) -> Value {
    let data: Vec<Value> = hits
        .iter()
        .map(|hit| {
            json!({
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.wire_score(),
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.text}],
            })
        })
        .collect();
    json!({
        "object": "vector_store.search_results.page",
        "search_query": [query],
        "data": data,
        "has_more": false,
        "next_page": Value::Null,
    })
}

/// What deleting a store or removing a file answers.
pub fn deleted(id: &str, object: &str) -> Value {
    json!({"id": id, "object": object, "deleted": true})
}

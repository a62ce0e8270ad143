//! The vector stores API, `/v1/vector_stores`, in the shape of OpenAI's: stores, the files in
//! them (added one by one or in batches, ingested in the background by
//! [`crate::retrieval::ingest`]), and search ([`crate::retrieval::search`]).
//!
//! A store belongs to the caller's team, or to the key when it has none; its files must be the
//! same tenant's uploads. Any other caller gets 404 for the store, its files and its search.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_metadata, json_or_error, query, read_json, Paging};
use crate::clock::now_ms;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::RequestContext;
use crate::retrieval::{self, chunk, ingest, Filter, SearchRequest};
use crate::store::{Chunking, FileListing, StoreFileRecord, VectorStoreRecord};
use crate::wire::conversations::list;
use crate::wire::vector_stores as wire;

/// Files one request may add, as OpenAI allows in a batch.
const MAX_FILES: usize = 500;

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    file_ids: Option<Vec<String>>,
    #[serde(default)]
    chunking_strategy: Option<Value>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    expires_after: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// `null` removes the expiry; absent keeps it.
    #[serde(default, with = "present")]
    expires_after: Option<Value>,
}

#[derive(Deserialize)]
struct AddFileBody {
    file_id: String,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    chunking_strategy: Option<Value>,
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(default)]
    file_ids: Option<Vec<String>>,
    /// The newer form: each file with its own attributes and chunking.
    #[serde(default)]
    files: Option<Vec<AddFileBody>>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    chunking_strategy: Option<Value>,
}

#[derive(Deserialize)]
struct AttributesBody {
    attributes: Map<String, Value>,
}

#[derive(Deserialize)]
struct SearchBody {
    query: Value,
    #[serde(default)]
    max_num_results: Option<i64>,
    #[serde(default)]
    filters: Option<Value>,
    #[serde(default)]
    ranking_options: Option<RankingOptions>,
    /// Accepted; the query is searched as written.
    #[serde(default)]
    #[allow(dead_code)]
    rewrite_query: Option<bool>,
}

#[derive(Deserialize)]
struct RankingOptions {
    #[serde(default)]
    #[allow(dead_code)]
    ranker: Option<String>,
    #[serde(default)]
    score_threshold: Option<f64>,
}

/// Tells an explicit `null` (Some(Null)) from an absent field (None).
mod present {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
}

/// Attributes as OpenAI limits them: at most 16, values strings (up to 512), numbers or
/// booleans.
fn check_attributes(attributes: &Map<String, Value>) -> Result<()> {
    let ok = attributes.len() <= 16
        && attributes.iter().all(|(k, v)| {
            k.len() <= 64
                && match v {
                    Value::String(s) => s.len() <= 512,
                    Value::Number(_) | Value::Bool(_) => true,
                    _ => false,
                }
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(
            "`attributes` takes at most 16 pairs, keys of up to 64 characters, values strings of up to 512, numbers or booleans",
        )
        .with_param("attributes"))
    }
}

/// Reads `chunking_strategy`: `auto` (or absent) or `static` within OpenAI's bounds.
fn chunking(value: Option<&Value>) -> Result<Chunking> {
    let invalid = |what: &str| {
        Error::invalid_request(format!("`chunking_strategy`: {what}"))
            .with_param("chunking_strategy")
    };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(chunk::AUTO);
    };
    match value.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(chunk::AUTO),
        Some("static") => {
            let sizes = value
                .get("static")
                .ok_or_else(|| invalid("a static strategy needs `static`"))?;
            let number = |name: &str| sizes.get(name).and_then(Value::as_u64);
            let max = number("max_chunk_size_tokens")
                .filter(|n| {
                    (u64::from(chunk::MIN_TOKENS)..=u64::from(chunk::MAX_TOKENS)).contains(n)
                })
                .ok_or_else(|| {
                    invalid(&format!(
                        "`max_chunk_size_tokens` must be from {} to {}",
                        chunk::MIN_TOKENS,
                        chunk::MAX_TOKENS
                    ))
                })?;
            let overlap = number("chunk_overlap_tokens")
                .filter(|n| *n <= max / 2)
                .ok_or_else(|| {
                    invalid(
                        "`chunk_overlap_tokens` must be at most half of `max_chunk_size_tokens`",
                    )
                })?;
            Ok(Chunking {
                max_tokens: max as u32,
                overlap_tokens: overlap as u32,
            })
        }
        _ => Err(invalid("`type` must be `auto` or `static`")),
    }
}

/// Reads `expires_after`: `{"anchor": "last_active_at", "days": 1..=365}`.
fn expiry(value: &Value) -> Result<Value> {
    let days = value.get("days").and_then(Value::as_i64);
    let anchor = value.get("anchor").and_then(Value::as_str);
    match (anchor, days) {
        (Some("last_active_at"), Some(days)) if (1..=365).contains(&days) => Ok(value.clone()),
        _ => Err(Error::invalid_request(
            "`expires_after` must be {\"anchor\": \"last_active_at\", \"days\": 1 to 365}",
        )
        .with_param("expires_after")),
    }
}

/// The caller's store `id`, or 404.
async fn owned(cx: &RequestContext, id: &str) -> Result<VectorStoreRecord> {
    cx.services
        .store
        .get_vector_store(id, &cx.tenant())
        .await?
        .ok_or_else(|| retrieval::unknown_store(id))
}

/// The store object, with its file counts as they are now.
async fn store_object(cx: &RequestContext, record: &VectorStoreRecord) -> Result<Value> {
    let counts = cx.services.store.file_counts(&record.id, None).await?;
    Ok(wire::vector_store(record, &counts, now_ms()))
}

/// A file to add: which, with what attributes and chunking.
struct NewFile {
    file_id: String,
    attributes: Map<String, Value>,
    chunking: Chunking,
}

/// Adds the caller's files to a store and starts their ingestion. Every file is checked first:
/// one that is not the caller's adds nothing. A file already in the store is left as it is.
async fn add_files(
    cx: &Arc<RequestContext>,
    store: &VectorStoreRecord,
    files: Vec<NewFile>,
    batch_id: Option<&str>,
) -> Result<Vec<StoreFileRecord>> {
    if files.len() > MAX_FILES {
        return Err(Error::invalid_request(format!(
            "at most {MAX_FILES} files can be added at once"
        ))
        .with_param("file_ids"));
    }
    let tenant = cx.tenant();
    let mut records = Vec::with_capacity(files.len());
    for file in files {
        check_attributes(&file.attributes)?;
        let uploaded = cx
            .services
            .store
            .get_file(&tenant, &file.file_id)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no file `{}`: it does not exist, or belongs to another team or key",
                        file.file_id
                    ),
                )
                .with_param("file_id")
            })?;
        records.push(StoreFileRecord {
            store_id: store.id.clone(),
            file_id: uploaded.id,
            filename: uploaded.filename,
            attributes: Value::Object(file.attributes),
            chunking: file.chunking,
            status: "in_progress".to_owned(),
            last_error: None,
            usage_bytes: 0,
            batch_id: batch_id.map(str::to_owned),
            created_at: now_ms(),
        });
    }
    let mut added = Vec::with_capacity(records.len());
    for record in records {
        if cx.services.store.add_store_file(&record).await? {
            ingest::start(
                cx,
                &cx.services.ingestion,
                record.clone(),
                store.embedding_model.clone(),
            );
            added.push(record);
        } else if let Some(existing) = cx
            .services
            .store
            .get_store_file(&store.id, &record.file_id)
            .await?
        {
            added.push(existing);
        }
    }
    Ok(added)
}

/// `POST /v1/vector_stores`.
pub async fn create(Extension(cx): Extension<Arc<RequestContext>>, body: Body) -> Response {
    json_or_error(
        async {
            let body: CreateBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            let metadata = body.metadata.unwrap_or_default();
            check_metadata(&metadata)?;
            let chunking = chunking(body.chunking_strategy.as_ref())?;
            let expires_after = body.expires_after.as_ref().map(expiry).transpose()?;
            let _ = body.description;
            let now = now_ms();
            let record = VectorStoreRecord {
                id: format!("vs_{:032x}", fastrand::u128(..)),
                owner: cx.tenant(),
                name: body.name,
                metadata: Value::Object(metadata),
                expires_after,
                embedding_model: cx.gateway.config.context.embedding_model.clone(),
                created_at: now,
                last_active_at: now,
            };
            cx.services.store.create_vector_store(&record).await?;
            let files = body
                .file_ids
                .unwrap_or_default()
                .into_iter()
                .map(|file_id| NewFile {
                    file_id,
                    attributes: Map::new(),
                    chunking,
                })
                .collect();
            if let Err(e) = add_files(&cx, &record, files, None).await {
                // A store made with a file it may not use is not made at all.
                cx.services
                    .store
                    .delete_vector_store(&record.id, &record.owner)
                    .await?;
                return Err(e);
            }
            store_object(&cx, &record).await
        }
        .await,
    )
}

/// `GET /v1/vector_stores`.
pub async fn list_stores(
    Extension(cx): Extension<Arc<RequestContext>>,
    RawQuery(raw): RawQuery,
) -> Response {
    json_or_error(
        async {
            let paging = Paging::from_query(raw)?;
            let (stores, more) = cx
                .services
                .store
                .list_vector_stores(
                    &cx.tenant(),
                    paging.limit,
                    paging.descending,
                    paging.after.as_deref(),
                )
                .await?;
            let mut data = Vec::with_capacity(stores.len());
            for record in &stores {
                data.push(store_object(&cx, record).await?);
            }
            Ok(list(data, more))
        }
        .await,
    )
}

/// `GET /v1/vector_stores/{id}`.
pub async fn get(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            let record = owned(&cx, &id).await?;
            store_object(&cx, &record).await
        }
        .await,
    )
}

/// `POST /v1/vector_stores/{id}`: changes the name, metadata or expiry.
pub async fn update(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: UpdateBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            if let Some(metadata) = &body.metadata {
                check_metadata(metadata)?;
            }
            let expires_after = match &body.expires_after {
                None => None,
                Some(Value::Null) => Some(None),
                Some(value) => Some(Some(expiry(value)?)),
            };
            let metadata = body.metadata.map(Value::Object);
            let updated = cx
                .services
                .store
                .update_vector_store(
                    &id,
                    &cx.tenant(),
                    body.name.as_deref(),
                    metadata.as_ref(),
                    expires_after.as_ref().map(Option::as_ref),
                    now_ms(),
                )
                .await?;
            if !updated {
                return Err(retrieval::unknown_store(&id));
            }
            let record = owned(&cx, &id).await?;
            store_object(&cx, &record).await
        }
        .await,
    )
}

/// `DELETE /v1/vector_stores/{id}`.
pub async fn delete(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
) -> Response {
    json_or_error(
        async {
            if !cx
                .services
                .store
                .delete_vector_store(&id, &cx.tenant())
                .await?
            {
                return Err(retrieval::unknown_store(&id));
            }
            cx.services.indexes.forget(&id);
            Ok(wire::deleted(&id, "vector_store.deleted"))
        }
        .await,
    )
}

/// `POST /v1/vector_stores/{id}/files`.
pub async fn add_file(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: AddFileBody =
                read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            let store = owned(&cx, &id).await?;
            let file = NewFile {
                file_id: body.file_id,
                attributes: body.attributes.unwrap_or_default(),
                chunking: chunking(body.chunking_strategy.as_ref())?,
            };
            let added = add_files(&cx, &store, vec![file], None).await?;
            added
                .first()
                .map(wire::store_file)
                .ok_or_else(|| Error::internal("the file was not added"))
        }
        .await,
    )
}

/// Paging of a store's files, with `filter` (a status).
fn file_listing_query(raw: Option<String>) -> Result<(Paging, Option<String>)> {
    #[derive(Deserialize)]
    struct Filter {
        #[serde(default)]
        filter: Option<String>,
    }
    let filter: Filter = query(raw.as_deref())?;
    if let Some(status) = &filter.filter {
        if !["in_progress", "completed", "failed", "cancelled"].contains(&status.as_str()) {
            return Err(Error::invalid_request(
                "`filter` must be in_progress, completed, failed or cancelled",
            )
            .with_param("filter"));
        }
    }
    Ok((Paging::from_query(raw)?, filter.filter))
}

async fn list_files_of(
    cx: &RequestContext,
    store_id: &str,
    batch_id: Option<&str>,
    raw: Option<String>,
) -> Result<Value> {
    let (paging, status) = file_listing_query(raw)?;
    owned(cx, store_id).await?;
    let listing = FileListing {
        status: status.as_deref(),
        batch_id,
        limit: paging.limit,
        descending: paging.descending,
        after: paging.after.as_deref(),
    };
    let (files, more) = cx
        .services
        .store
        .list_store_files(store_id, &listing)
        .await?;
    Ok(list(files.iter().map(wire::store_file).collect(), more))
}

/// `GET /v1/vector_stores/{id}/files`.
pub async fn list_files(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    json_or_error(list_files_of(&cx, &id, None, raw).await)
}

/// The store's file, or 404.
async fn owned_file(cx: &RequestContext, id: &str, file_id: &str) -> Result<StoreFileRecord> {
    owned(cx, id).await?;
    cx.services
        .store
        .get_store_file(id, file_id)
        .await?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("vector store `{id}` has no file `{file_id}`"),
            )
        })
}

/// `GET /v1/vector_stores/{id}/files/{file_id}`.
pub async fn get_file(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, file_id)): Path<(String, String)>,
) -> Response {
    json_or_error(
        owned_file(&cx, &id, &file_id)
            .await
            .map(|f| wire::store_file(&f)),
    )
}

/// `POST /v1/vector_stores/{id}/files/{file_id}`: replaces the file's attributes.
pub async fn update_file(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, file_id)): Path<(String, String)>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: AttributesBody =
                read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            check_attributes(&body.attributes)?;
            owned_file(&cx, &id, &file_id).await?;
            cx.services
                .store
                .set_store_file_attributes(&id, &file_id, &Value::Object(body.attributes))
                .await?;
            cx.services.indexes.invalidate(&id);
            owned_file(&cx, &id, &file_id)
                .await
                .map(|f| wire::store_file(&f))
        }
        .await,
    )
}

/// `DELETE /v1/vector_stores/{id}/files/{file_id}`: the file leaves the store (the upload
/// stays).
pub async fn remove_file(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, file_id)): Path<(String, String)>,
) -> Response {
    json_or_error(
        async {
            owned_file(&cx, &id, &file_id).await?;
            cx.services.store.remove_store_file(&id, &file_id).await?;
            cx.services.indexes.invalidate(&id);
            Ok(wire::deleted(&file_id, "vector_store.file.deleted"))
        }
        .await,
    )
}

/// `POST /v1/vector_stores/{id}/file_batches`.
pub async fn create_batch(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: BatchBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            let store = owned(&cx, &id).await?;
            let chunking_all = chunking(body.chunking_strategy.as_ref())?;
            let attributes = body.attributes.unwrap_or_default();
            let mut files: Vec<NewFile> = body
                .file_ids
                .unwrap_or_default()
                .into_iter()
                .map(|file_id| NewFile {
                    file_id,
                    attributes: attributes.clone(),
                    chunking: chunking_all,
                })
                .collect();
            for file in body.files.unwrap_or_default() {
                files.push(NewFile {
                    file_id: file.file_id,
                    attributes: file.attributes.unwrap_or_else(|| attributes.clone()),
                    chunking: match &file.chunking_strategy {
                        Some(value) => chunking(Some(value))?,
                        None => chunking_all,
                    },
                });
            }
            if files.is_empty() {
                return Err(
                    Error::invalid_request("a batch needs `file_ids` or `files`")
                        .with_param("file_ids"),
                );
            }
            let batch_id = format!("vsfb_{:032x}", fastrand::u128(..));
            add_files(&cx, &store, files, Some(&batch_id)).await?;
            let counts = cx.services.store.file_counts(&id, Some(&batch_id)).await?;
            Ok(wire::batch(&batch_id, &id, &counts))
        }
        .await,
    )
}

/// The store's batch, or 404.
async fn batch_object(cx: &RequestContext, id: &str, batch_id: &str) -> Result<Value> {
    owned(cx, id).await?;
    let counts = cx.services.store.file_counts(id, Some(batch_id)).await?;
    if counts.total() == 0 {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("vector store `{id}` has no file batch `{batch_id}`"),
        ));
    }
    Ok(wire::batch(batch_id, id, &counts))
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}`.
pub async fn get_batch(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, batch_id)): Path<(String, String)>,
) -> Response {
    json_or_error(batch_object(&cx, &id, &batch_id).await)
}

/// `POST /v1/vector_stores/{id}/file_batches/{batch_id}/cancel`: files not yet ingested are
/// cancelled.
pub async fn cancel_batch(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, batch_id)): Path<(String, String)>,
) -> Response {
    json_or_error(
        async {
            batch_object(&cx, &id, &batch_id).await?;
            cx.services.store.cancel_batch(&id, &batch_id).await?;
            batch_object(&cx, &id, &batch_id).await
        }
        .await,
    )
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}/files`.
pub async fn list_batch_files(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path((id, batch_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    json_or_error(
        async {
            batch_object(&cx, &id, &batch_id).await?;
            list_files_of(&cx, &id, Some(&batch_id), raw).await
        }
        .await,
    )
}

/// `POST /v1/vector_stores/{id}/search`.
pub async fn search(
    Extension(cx): Extension<Arc<RequestContext>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    json_or_error(
        async {
            let body: SearchBody = read_json(body, cx.gateway.config.server.max_body_bytes).await?;
            let query = match &body.query {
                Value::String(q) => q.clone(),
                Value::Array(parts) if parts.iter().all(Value::is_string) => parts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => {
                    return Err(Error::invalid_request(
                        "`query` must be a string or an array of strings",
                    )
                    .with_param("query"))
                }
            };
            if query.trim().is_empty() {
                return Err(Error::invalid_request("`query` is empty").with_param("query"));
            }
            let request = SearchRequest {
                query: query.clone(),
                max_num_results: results(body.max_num_results)?,
                filter: body
                    .filters
                    .as_ref()
                    .map(|f| Filter::parse(f, "filters"))
                    .transpose()?,
                score_threshold: threshold(body.ranking_options.as_ref())?,
            };
            let hits = retrieval::search(&cx, &[id], &request).await?;
            Ok(wire::search_results(&query, &hits))
        }
        .await,
    )
}

/// `max_num_results`: 1 to 50, 10 when absent.
pub fn results(value: Option<i64>) -> Result<usize> {
    match value {
        None => Ok(retrieval::DEFAULT_RESULTS),
        Some(n) if (1..=retrieval::MAX_RESULTS as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(Error::invalid_request(format!(
            "`max_num_results` must be from 1 to {}",
            retrieval::MAX_RESULTS
        ))
        .with_param("max_num_results")),
    }
}

fn threshold(options: Option<&RankingOptions>) -> Result<Option<f32>> {
    match options.and_then(|o| o.score_threshold) {
        None => Ok(None),
        Some(t) if (0.0..=1.0).contains(&t) => Ok(Some(t as f32)),
        Some(_) => Err(
            Error::invalid_request("`score_threshold` must be from 0 to 1")
                .with_param("ranking_options.score_threshold"),
        ),
    }
}

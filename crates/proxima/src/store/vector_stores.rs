//! Vector stores: the stores, the files added to them with their ingestion status, and the
//! files' chunks with their embeddings. The surface checks a store's owner before touching its
//! files; reads by owner return `None` for another tenant's store.
//!
//! Writing a file's chunks also moves its store's `version`: every replica's in-memory index
//! ([`crate::retrieval::index`]) notices and reloads what changed.

use serde_json::Value;

use super::{col, db_error, json_column, value_rows, Row, Store};
use crate::error::Result;

/// A vector store's row.
#[derive(Debug, Clone)]
pub struct VectorStoreRecord {
    pub id: String,
    pub owner: String,
    pub name: Option<String>,
    pub metadata: Value,
    /// OpenAI's `expires_after` (`{"anchor": "last_active_at", "days": N}`), when set.
    pub expires_after: Option<Value>,
    /// The public model the chunks are embedded with; `None`: searched by words only.
    pub embedding_model: Option<String>,
    pub created_at: i64,
    pub last_active_at: i64,
}

/// A file in a store.
#[derive(Debug, Clone)]
pub struct StoreFileRecord {
    pub store_id: String,
    pub file_id: String,
    pub filename: String,
    pub attributes: Value,
    pub chunking: Chunking,
    /// in_progress, completed, failed or cancelled.
    pub status: String,
    /// `{code, message}` of a failed file.
    pub last_error: Option<Value>,
    pub usage_bytes: i64,
    pub batch_id: Option<String>,
    pub created_at: i64,
}

/// How a file is cut into chunks, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    pub max_tokens: u32,
    pub overlap_tokens: u32,
}

/// How many of a store's (or a batch's) files are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub usage_bytes: i64,
    /// The newest file's `created_at`, to date a batch.
    pub newest: i64,
}

impl FileCounts {
    pub fn total(&self) -> i64 {
        self.in_progress + self.completed + self.failed + self.cancelled
    }
}

/// A completed file, as an index loads it.
#[derive(Debug, Clone)]
pub struct IndexedFile {
    pub file_id: String,
    pub filename: String,
    pub attributes: Value,
    /// The store version its chunks were written at: unchanged while this is.
    pub generation: i64,
}

/// A chunk to store: its text and embedding.
pub struct NewChunk {
    pub text: String,
    pub embedding: Option<Vec<f32>>,
}

/// A stored chunk, as an index loads it.
pub struct ChunkRow {
    pub seq: i64,
    pub text: String,
    /// Little-endian f32s.
    pub embedding: Option<Vec<u8>>,
}

/// A chunk's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    pub store_id: String,
    pub file_id: String,
    pub seq: i64,
}

/// Moves a store's version on, inside transaction `$tx`; evaluates to the new version.
macro_rules! bump_version {
    ($tx:expr, $store_id:expr) => {{
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE vector_stores SET version = version + 1 WHERE id = $1 RETURNING version",
        )
        .bind($store_id)
        .fetch_optional(&mut *$tx)
        .await
        .map_err(db_error)?;
        version.unwrap_or(0)
    }};
}

const STORE_COLUMNS: &str =
    "id, owner, name, metadata, expires_after, embedding_model, created_at, last_active_at";
const FILE_COLUMNS: &str = "store_id, file_id, filename, attributes, chunking, status, \
                            last_error, usage_bytes, batch_id, created_at";

/// A day in epoch milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Chunks written per statement (four parameters each).
const CHUNK_ROWS: usize = 64;

fn store_from_row(row: &impl Row) -> Result<VectorStoreRecord> {
    Ok(VectorStoreRecord {
        id: col(row, "id")?,
        owner: col(row, "owner")?,
        name: col(row, "name")?,
        metadata: json_column::<Value>(col(row, "metadata")?).unwrap_or(Value::Null),
        expires_after: json_column::<Value>(col(row, "expires_after")?),
        embedding_model: col(row, "embedding_model")?,
        created_at: col(row, "created_at")?,
        last_active_at: col(row, "last_active_at")?,
    })
}

fn file_from_row(row: &impl Row) -> Result<StoreFileRecord> {
    let chunking: String = col(row, "chunking")?;
    Ok(StoreFileRecord {
        store_id: col(row, "store_id")?,
        file_id: col(row, "file_id")?,
        filename: col(row, "filename")?,
        attributes: json_column::<Value>(col(row, "attributes")?).unwrap_or(Value::Null),
        chunking: serde_json::from_str(&chunking).map_err(|e| {
            crate::error::Error::internal(format!("a stored chunking strategy is unreadable: {e}"))
        })?,
        status: col(row, "status")?,
        last_error: json_column::<Value>(col(row, "last_error")?),
        usage_bytes: col(row, "usage_bytes")?,
        batch_id: col(row, "batch_id")?,
        created_at: col(row, "created_at")?,
    })
}

/// Which files a listing shows, and from where.
pub struct FileListing<'a> {
    pub status: Option<&'a str>,
    pub batch_id: Option<&'a str>,
    pub limit: usize,
    pub descending: bool,
    pub after: Option<&'a str>,
}

impl Store {
    pub async fn create_vector_store(&self, record: &VectorStoreRecord) -> Result<()> {
        let sql = sql!(
            "INSERT INTO vector_stores ({STORE_COLUMNS}, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)"
        );
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(&record.id)
            .bind(&record.owner)
            .bind(&record.name)
            .bind(record.metadata.to_string())
            .bind(record.expires_after.as_ref().map(Value::to_string))
            .bind(&record.embedding_model)
            .bind(record.created_at)
            .bind(record.last_active_at)
            .execute(pool)
            .await
            .map(drop))
        .map_err(db_error)
    }

    /// The owner's store `id`.
    pub async fn get_vector_store(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<Option<VectorStoreRecord>> {
        let sql = sql!("SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = $1 AND owner = $2");
        fetch_owned!(self, sql, id, owner, store_from_row)
    }

    /// A page of the owner's stores, newest first when `descending`; and whether more follow.
    pub async fn list_vector_stores(
        &self,
        owner: &str,
        limit: usize,
        descending: bool,
        after: Option<&str>,
    ) -> Result<(Vec<VectorStoreRecord>, bool)> {
        let (cmp, order) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        // Paged by (created_at, id) of the `after` store, so equal times page correctly.
        let sql = sql!(
            "SELECT {STORE_COLUMNS} FROM vector_stores WHERE owner = $1 AND ($2 IS NULL OR \
             (created_at, id) {cmp} (SELECT created_at, id FROM vector_stores WHERE id = $2 AND owner = $1)) \
             ORDER BY created_at {order}, id {order} LIMIT $3"
        );
        let fetch = i64::try_from(limit).unwrap_or(100) + 1;
        let mut stores = on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(owner)
                .bind(after)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(store_from_row).collect::<Result<Vec<_>>>()
        })?;
        let more = stores.len() > limit;
        stores.truncate(limit);
        Ok((stores, more))
    }

    /// Changes the owner's store: each `Some` replaces that field. `false` when it has none.
    pub async fn update_vector_store(
        &self,
        id: &str,
        owner: &str,
        name: Option<&str>,
        metadata: Option<&Value>,
        expires_after: Option<Option<&Value>>,
        now: i64,
    ) -> Result<bool> {
        let sql = "UPDATE vector_stores SET name = CASE WHEN $3 THEN $4 ELSE name END, \
                   metadata = COALESCE($5, metadata), \
                   expires_after = CASE WHEN $6 THEN $7 ELSE expires_after END, \
                   last_active_at = $8 WHERE id = $1 AND owner = $2";
        let updated = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .bind(name.is_some())
            .bind(name)
            .bind(metadata.map(Value::to_string))
            .bind(expires_after.is_some())
            .bind(expires_after.flatten().map(Value::to_string))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(updated == 1)
    }

    /// Marks the store used now (its expiry counts from here).
    pub async fn touch_vector_store(&self, id: &str, now: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE vector_stores SET last_active_at = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// Deletes the owner's store with its files and chunks; `false` when it has none.
    pub async fn delete_vector_store(&self, id: &str, owner: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let deleted = sqlx::query("DELETE FROM vector_stores WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if deleted == 1 {
                for table in ["vector_store_chunks", "vector_store_files"] {
                    sqlx::query(sql!("DELETE FROM {table} WHERE store_id = $1"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(deleted == 1)
        })
    }

    /// How many of the store's files (or of one batch's) are in each state.
    pub async fn file_counts(&self, store_id: &str, batch_id: Option<&str>) -> Result<FileCounts> {
        let sql = "SELECT status, COUNT(*) AS n, CAST(COALESCE(SUM(usage_bytes), 0) AS BIGINT) AS bytes, \
                   CAST(COALESCE(MAX(created_at), 0) AS BIGINT) AS newest \
                   FROM vector_store_files WHERE store_id = $1 AND ($2 IS NULL OR batch_id = $2) \
                   GROUP BY status";
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(store_id)
                .bind(batch_id)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        col(r, "status")?,
                        col(r, "n")?,
                        col(r, "bytes")?,
                        col(r, "newest")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut counts = FileCounts::default();
        for (status, n, bytes, newest) in rows {
            match status.as_str() {
                "in_progress" => counts.in_progress = n,
                "completed" => counts.completed = n,
                "failed" => counts.failed = n,
                _ => counts.cancelled += n,
            }
            counts.usage_bytes += bytes;
            counts.newest = counts.newest.max(newest);
        }
        Ok(counts)
    }

    /// Adds a file to a store, in progress. `false` when the store already has it.
    pub async fn add_store_file(&self, record: &StoreFileRecord) -> Result<bool> {
        let sql = sql!(
            "INSERT INTO vector_store_files ({FILE_COLUMNS}, generation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0) \
             ON CONFLICT (store_id, file_id) DO NOTHING"
        );
        let chunking = serde_json::to_string(&record.chunking).unwrap_or_default();
        let inserted = on_pool!(self, |pool| sqlx::query(sql)
            .bind(&record.store_id)
            .bind(&record.file_id)
            .bind(&record.filename)
            .bind(record.attributes.to_string())
            .bind(&chunking)
            .bind(&record.status)
            .bind(record.last_error.as_ref().map(Value::to_string))
            .bind(record.usage_bytes)
            .bind(&record.batch_id)
            .bind(record.created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(inserted == 1)
    }

    pub async fn get_store_file(
        &self,
        store_id: &str,
        file_id: &str,
    ) -> Result<Option<StoreFileRecord>> {
        let sql = sql!(
            "SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 AND file_id = $2"
        );
        // Keyed by the store, which the caller has checked is its own.
        fetch_owned!(self, sql, store_id, file_id, file_from_row)
    }

    /// A page of a store's files; and whether more follow.
    pub async fn list_store_files(
        &self,
        store_id: &str,
        listing: &FileListing<'_>,
    ) -> Result<(Vec<StoreFileRecord>, bool)> {
        let (cmp, order) = if listing.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = sql!(
            "SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 \
             AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR batch_id = $3) \
             AND ($4 IS NULL OR (created_at, file_id) {cmp} \
                 (SELECT created_at, file_id FROM vector_store_files WHERE store_id = $1 AND file_id = $4)) \
             ORDER BY created_at {order}, file_id {order} LIMIT $5"
        );
        let fetch = i64::try_from(listing.limit).unwrap_or(100) + 1;
        let mut files = on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(store_id)
                .bind(listing.status)
                .bind(listing.batch_id)
                .bind(listing.after)
                .bind(fetch)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(file_from_row).collect::<Result<Vec<_>>>()
        })?;
        let more = files.len() > listing.limit;
        files.truncate(listing.limit);
        Ok((files, more))
    }

    /// Replaces a file's attributes (searches filter on them at once: the store's version
    /// moves). `false` when the store has no such file.
    pub async fn set_store_file_attributes(
        &self,
        store_id: &str,
        file_id: &str,
        attributes: &Value,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let updated = sqlx::query(
                "UPDATE vector_store_files SET attributes = $3 WHERE store_id = $1 AND file_id = $2",
            )
            .bind(store_id)
            .bind(file_id)
            .bind(attributes.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            bump_version!(tx, store_id);
            tx.commit().await.map_err(db_error)?;
            Ok(updated == 1)
        })
    }

    /// Removes a file and its chunks from a store. `false` when the store has no such file.
    pub async fn remove_store_file(&self, store_id: &str, file_id: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let deleted =
                sqlx::query("DELETE FROM vector_store_files WHERE store_id = $1 AND file_id = $2")
                    .bind(store_id)
                    .bind(file_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
            sqlx::query("DELETE FROM vector_store_chunks WHERE store_id = $1 AND file_id = $2")
                .bind(store_id)
                .bind(file_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            bump_version!(tx, store_id);
            tx.commit().await.map_err(db_error)?;
            Ok(deleted == 1)
        })
    }

    /// Writes an in-progress file's chunks and marks it completed, in one transaction.
    /// `false` (nothing written) when the file was removed or cancelled meanwhile.
    pub async fn complete_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        chunks: &[NewChunk],
    ) -> Result<bool> {
        let usage: usize = chunks
            .iter()
            .map(|c| c.text.len() + c.embedding.as_ref().map_or(0, |e| 4 * e.len()))
            .sum();
        let usage = i64::try_from(usage).unwrap_or(i64::MAX);
        let backend = self.backend();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            // Taken first: the file row's write lock keeps a concurrent remove or cancel out.
            let claimed = sqlx::query(
                "UPDATE vector_store_files SET status = 'completed', usage_bytes = $3 \
                 WHERE store_id = $1 AND file_id = $2 AND status = 'in_progress'",
            )
            .bind(store_id)
            .bind(file_id)
            .bind(usage)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if claimed == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM vector_store_chunks WHERE store_id = $1 AND file_id = $2")
                .bind(store_id)
                .bind(file_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            for (batch_no, batch) in chunks.chunks(CHUNK_ROWS).enumerate() {
                let sql = sql!(
                    "INSERT INTO vector_store_chunks (store_id, file_id, seq, text, embedding) VALUES {}",
                    value_rows(backend, batch.len(), 5)
                );
                let mut query = sqlx::query(sql);
                for (i, chunk) in batch.iter().enumerate() {
                    let seq = (batch_no * CHUNK_ROWS + i) as i64;
                    let bytes: Option<Vec<u8>> = chunk
                        .embedding
                        .as_ref()
                        .map(|e| e.iter().flat_map(|x| x.to_le_bytes()).collect());
                    query = query
                        .bind(store_id)
                        .bind(file_id)
                        .bind(seq)
                        .bind(&chunk.text)
                        .bind(bytes);
                }
                query.execute(&mut *tx).await.map_err(db_error)?;
            }
            let version = bump_version!(tx, store_id);
            sqlx::query(
                "UPDATE vector_store_files SET generation = $3 WHERE store_id = $1 AND file_id = $2",
            )
            .bind(store_id)
            .bind(file_id)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    /// Marks an in-progress file failed (`code`: server_error, unsupported_file, invalid_file)
    /// or, with `code` None, cancelled.
    pub async fn end_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        error: Option<(&str, &str)>,
    ) -> Result<()> {
        let (status, last_error) = match error {
            Some((code, message)) => (
                "failed",
                Some(serde_json::json!({"code": code, "message": message}).to_string()),
            ),
            None => ("cancelled", None),
        };
        on_pool!(self, |pool| sqlx::query(
            "UPDATE vector_store_files SET status = $3, last_error = $4 \
             WHERE store_id = $1 AND file_id = $2 AND status = 'in_progress'"
        )
        .bind(store_id)
        .bind(file_id)
        .bind(status)
        .bind(last_error)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// Cancels a batch's files still in progress.
    pub async fn cancel_batch(&self, store_id: &str, batch_id: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE vector_store_files SET status = 'cancelled' \
             WHERE store_id = $1 AND batch_id = $2 AND status = 'in_progress'"
        )
        .bind(store_id)
        .bind(batch_id)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// Deletes the stores whose `expires_after` days have passed since their last use;
    /// returns how many.
    pub async fn expire_vector_stores(&self, now: i64) -> Result<u64> {
        let rows: Vec<(String, String, Option<String>, i64)> = on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, owner, expires_after, last_active_at FROM vector_stores \
                 WHERE expires_after IS NOT NULL",
            )
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        col(r, "id")?,
                        col(r, "owner")?,
                        col(r, "expires_after")?,
                        col(r, "last_active_at")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut deleted = 0;
        for (id, owner, expires_after, last_active_at) in rows {
            let days = json_column::<Value>(expires_after)
                .and_then(|e| e.get("days").and_then(Value::as_i64))
                .unwrap_or(i64::MAX / DAY_MS);
            if last_active_at.saturating_add(days.saturating_mul(DAY_MS)) <= now
                && self.delete_vector_store(&id, &owner).await?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// A store's owner, version and embedding model, without its owner check: what an index
    /// checks to know whether it is current.
    pub async fn vector_store_version(
        &self,
        id: &str,
    ) -> Result<Option<(String, i64, Option<String>)>> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT owner, version, embedding_model FROM vector_stores WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
            row.map(|r| {
                Ok((
                    col(&r, "owner")?,
                    col(&r, "version")?,
                    col(&r, "embedding_model")?,
                ))
            })
            .transpose()
        })
    }

    /// A store's completed files.
    pub async fn indexed_files(&self, store_id: &str) -> Result<Vec<IndexedFile>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT file_id, filename, attributes, generation FROM vector_store_files \
                 WHERE store_id = $1 AND status = 'completed'",
            )
            .bind(store_id)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    Ok(IndexedFile {
                        file_id: col(r, "file_id")?,
                        filename: col(r, "filename")?,
                        attributes: json_column::<Value>(col(r, "attributes")?)
                            .unwrap_or(Value::Null),
                        generation: col(r, "generation")?,
                    })
                })
                .collect()
        })
    }

    /// A file's chunks in order, with their embeddings.
    pub async fn file_chunks(&self, store_id: &str, file_id: &str) -> Result<Vec<ChunkRow>> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, text, embedding FROM vector_store_chunks \
                 WHERE store_id = $1 AND file_id = $2 ORDER BY seq",
            )
            .bind(store_id)
            .bind(file_id)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    Ok(ChunkRow {
                        seq: col(r, "seq")?,
                        text: col(r, "text")?,
                        embedding: col(r, "embedding")?,
                    })
                })
                .collect()
        })
    }

    /// The texts of chunks, in the order asked (an empty text for one that is gone).
    pub async fn chunk_texts(&self, keys: &[ChunkKey]) -> Result<Vec<String>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let conditions: Vec<String> = (0..keys.len())
            .map(|i| {
                format!(
                    "(store_id = ${} AND file_id = ${} AND seq = ${})",
                    3 * i + 1,
                    3 * i + 2,
                    3 * i + 3
                )
            })
            .collect();
        let sql = sql!(
            "SELECT store_id, file_id, seq, text FROM vector_store_chunks WHERE {}",
            conditions.join(" OR ")
        );
        let found: Vec<(ChunkKey, String)> = on_pool!(self, |pool| {
            let mut query = sqlx::query(sql);
            for key in keys {
                query = query.bind(&key.store_id).bind(&key.file_id).bind(key.seq);
            }
            let rows = query.fetch_all(pool).await.map_err(db_error)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        ChunkKey {
                            store_id: col(r, "store_id")?,
                            file_id: col(r, "file_id")?,
                            seq: col(r, "seq")?,
                        },
                        col(r, "text")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut by_key: std::collections::HashMap<ChunkKey, String> = found.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| by_key.remove(k).unwrap_or_default())
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testing::on_both;

    fn store_record(id: &str, owner: &str, days: Option<i64>, at: i64) -> VectorStoreRecord {
        VectorStoreRecord {
            id: id.to_owned(),
            owner: owner.to_owned(),
            name: Some("docs".into()),
            metadata: json!({}),
            expires_after: days.map(|d| json!({"anchor": "last_active_at", "days": d})),
            embedding_model: Some("embed".into()),
            created_at: at,
            last_active_at: at,
        }
    }

    fn file_record(store: &str, file: &str) -> StoreFileRecord {
        StoreFileRecord {
            store_id: store.to_owned(),
            file_id: file.to_owned(),
            filename: format!("{file}.txt"),
            attributes: json!({"lang": "en"}),
            chunking: Chunking {
                max_tokens: 256,
                overlap_tokens: 64,
            },
            status: "in_progress".into(),
            last_error: None,
            usage_bytes: 0,
            batch_id: Some("vsfb_1".into()),
            created_at: 1,
        }
    }

    on_both!(
        files_move_from_progress_to_indexed_chunks,
        |store: Store| async move {
            store
                .create_vector_store(&store_record("vs_1", "team:a", None, 10))
                .await
                .unwrap();
            assert!(store
                .get_vector_store("vs_1", "team:b")
                .await
                .unwrap()
                .is_none());
            assert!(store
                .add_store_file(&file_record("vs_1", "f1"))
                .await
                .unwrap());
            assert!(
                !store
                    .add_store_file(&file_record("vs_1", "f1"))
                    .await
                    .unwrap(),
                "added twice"
            );
            assert!(store
                .add_store_file(&file_record("vs_1", "f2"))
                .await
                .unwrap());
            let (_, v0, model) = store.vector_store_version("vs_1").await.unwrap().unwrap();
            assert_eq!(model.as_deref(), Some("embed"));

            let chunks = vec![
                NewChunk {
                    text: "first chunk".into(),
                    embedding: Some(vec![0.5, -0.25]),
                },
                NewChunk {
                    text: "second chunk".into(),
                    embedding: None,
                },
            ];
            assert!(store
                .complete_store_file("vs_1", "f1", &chunks)
                .await
                .unwrap());
            // Completing again (a second replica finishing late) writes nothing.
            assert!(!store
                .complete_store_file("vs_1", "f1", &chunks)
                .await
                .unwrap());
            store
                .end_store_file("vs_1", "f2", Some(("invalid_file", "no text")))
                .await
                .unwrap();
            let (_, v1, _) = store.vector_store_version("vs_1").await.unwrap().unwrap();
            assert!(v1 > v0);

            let counts = store.file_counts("vs_1", None).await.unwrap();
            assert_eq!(
                (
                    counts.completed,
                    counts.failed,
                    counts.in_progress,
                    counts.total()
                ),
                (1, 1, 0, 2)
            );
            assert!(counts.usage_bytes > 0);
            assert_eq!(
                store
                    .file_counts("vs_1", Some("vsfb_1"))
                    .await
                    .unwrap()
                    .total(),
                2
            );
            let failed = store.get_store_file("vs_1", "f2").await.unwrap().unwrap();
            assert_eq!(failed.last_error.unwrap()["code"], "invalid_file");

            let indexed = store.indexed_files("vs_1").await.unwrap();
            assert_eq!(indexed.len(), 1);
            assert_eq!(indexed[0].generation, v1);
            let rows = store.file_chunks("vs_1", "f1").await.unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(
                rows[0]
                    .embedding
                    .as_deref()
                    .map(crate::retrieval::index::floats),
                Some(vec![0.5, -0.25])
            );
            assert!(rows[1].embedding.is_none());
            let key = |seq| ChunkKey {
                store_id: "vs_1".into(),
                file_id: "f1".into(),
                seq,
            };
            assert_eq!(
                store.chunk_texts(&[key(1), key(7), key(0)]).await.unwrap(),
                ["second chunk", "", "first chunk"]
            );

            let listing = FileListing {
                status: Some("failed"),
                batch_id: None,
                limit: 10,
                descending: true,
                after: None,
            };
            let (failed, more) = store.list_store_files("vs_1", &listing).await.unwrap();
            assert_eq!((failed.len(), more), (1, false));

            assert!(store.remove_store_file("vs_1", "f1").await.unwrap());
            assert!(store.file_chunks("vs_1", "f1").await.unwrap().is_empty());
            assert!(store.delete_vector_store("vs_1", "team:a").await.unwrap());
            assert!(store.vector_store_version("vs_1").await.unwrap().is_none());
        }
    );

    on_both!(
        stores_expire_after_their_days_unused,
        |store: Store| async move {
            let day = DAY_MS;
            store
                .create_vector_store(&store_record("vs_old", "k", Some(1), 0))
                .await
                .unwrap();
            store
                .create_vector_store(&store_record("vs_kept", "k", None, 0))
                .await
                .unwrap();
            store
                .create_vector_store(&store_record("vs_used", "k", Some(1), 0))
                .await
                .unwrap();
            store.touch_vector_store("vs_used", day).await.unwrap();
            assert_eq!(store.expire_vector_stores(day + 1).await.unwrap(), 1);
            assert!(store
                .get_vector_store("vs_old", "k")
                .await
                .unwrap()
                .is_none());
            assert!(store
                .get_vector_store("vs_kept", "k")
                .await
                .unwrap()
                .is_some());
            assert!(store
                .get_vector_store("vs_used", "k")
                .await
                .unwrap()
                .is_some());
            let (page, more) = store.list_vector_stores("k", 1, false, None).await.unwrap();
            assert!(more && page.len() == 1);
            let (rest, _) = store
                .list_vector_stores("k", 10, false, Some(&page[0].id))
                .await
                .unwrap();
            assert_eq!(rest.len(), 1);
            assert_ne!(rest[0].id, page[0].id);
        }
    );
}

//! The conversation store: conversations, their items in order with a full-text index for
//! recall, and stored Responses-API responses. Every query names the owner (the tenant), so
//! another tenant's id reads as unknown.
//!
//! A turn appends its items in one transaction that also takes their positions from the
//! conversation's row, so appending costs the same on a conversation of 20 items as on one
//! of 100,000, and two replicas appending at once never interleave or lose a turn.

use serde_json::Value;

use super::{col, db_error, Row, Store};
use crate::canonical::Message;
use crate::error::Result;

/// A conversation's row.
#[derive(Debug, Clone)]
pub struct ConversationRecord {
    pub id: String,
    pub owner: String,
    pub metadata: Value,
    pub created_at: i64,
    pub used_at: i64,
    /// The instructions turns are sent with.
    pub system: Vec<Message>,
}

/// An item to append.
pub struct NewItem {
    pub id: String,
    /// The Conversations API item type: message, function_call, function_call_output,
    /// reasoning, summary.
    pub kind: &'static str,
    pub message: Message,
    /// The text recall searches.
    pub text: String,
    pub tokens: u64,
    /// For a summary: the last position it covers.
    pub covers: Option<i64>,
}

/// A stored item.
#[derive(Debug, Clone)]
pub struct ItemRecord {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub message: Message,
    pub tokens: u64,
    pub covers: Option<i64>,
    pub created_at: i64,
}

/// A stored response.
#[derive(Debug, Clone)]
pub struct ResponseRecord {
    pub id: String,
    pub owner: String,
    pub previous_id: Option<String>,
    pub conversation_id: Option<String>,
    /// This response's new input and its output, as canonical messages.
    pub turn: Vec<Message>,
    /// The input as the client sent it, as its items.
    pub input_items: Vec<Value>,
    /// The response object as answered.
    pub body: Value,
    pub created_at: i64,
}

const CONVERSATION_COLUMNS: &str = "id, owner, metadata, created_at, used_at, system";
const ITEM_COLUMNS: &str = "id, seq, kind, message, tokens, covers, created_at";
const RESPONSE_COLUMNS: &str =
    "id, owner, previous_id, conversation_id, turn, input_items, body, created_at";

fn conversation_from_row(row: &impl Row) -> Result<ConversationRecord> {
    Ok(ConversationRecord {
        id: col(row, "id")?,
        owner: col(row, "owner")?,
        metadata: serde_json::from_str(&col::<String>(row, "metadata")?).unwrap_or(Value::Null),
        created_at: col(row, "created_at")?,
        used_at: col(row, "used_at")?,
        system: col::<Option<String>>(row, "system")?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
    })
}

fn item_from_row(row: &impl Row) -> Result<ItemRecord> {
    let message: String = col(row, "message")?;
    Ok(ItemRecord {
        id: col(row, "id")?,
        seq: col(row, "seq")?,
        kind: col(row, "kind")?,
        message: serde_json::from_str(&message).map_err(|e| {
            crate::error::Error::internal(format!("a stored conversation item is unreadable: {e}"))
        })?,
        tokens: u64::try_from(col::<i64>(row, "tokens")?).unwrap_or(0),
        covers: col(row, "covers")?,
        created_at: col(row, "created_at")?,
    })
}

fn response_from_row(row: &impl Row) -> Result<ResponseRecord> {
    let json = |name: &str| -> Result<Value> {
        Ok(serde_json::from_str(&col::<String>(row, name)?).unwrap_or(Value::Null))
    };
    let turn: String = col(row, "turn")?;
    let input_items = match json("input_items")? {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    Ok(ResponseRecord {
        id: col(row, "id")?,
        owner: col(row, "owner")?,
        previous_id: col(row, "previous_id")?,
        conversation_id: col(row, "conversation_id")?,
        turn: serde_json::from_str(&turn).map_err(|e| {
            crate::error::Error::internal(format!("a stored response is unreadable: {e}"))
        })?,
        input_items,
        body: json("body")?,
        created_at: col(row, "created_at")?,
    })
}

/// The one full-text token standing for a conversation in the search index: ids are the
/// client's choice, so they are hashed into a word the tokenizer keeps whole.
fn search_token(conversation: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, conversation.as_bytes());
    format!("k{}", super::hex(&digest.as_ref()[..10]))
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Store {
    /// Creates a conversation. `Ok(None)` when the id is taken (by anyone).
    pub async fn create_conversation(
        &self,
        id: &str,
        owner: &str,
        metadata: &Value,
        now: i64,
    ) -> Result<Option<ConversationRecord>> {
        let sql = sql!(
            "INSERT INTO conversations ({CONVERSATION_COLUMNS}, next_seq) \
             VALUES ($1, $2, $3, $4, $4, NULL, 0) ON CONFLICT (id) DO NOTHING"
        );
        let metadata_text = metadata.to_string();
        let inserted = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .bind(&metadata_text)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok((inserted == 1).then(|| ConversationRecord {
            id: id.to_owned(),
            owner: owner.to_owned(),
            metadata: metadata.clone(),
            created_at: now,
            used_at: now,
            system: Vec::new(),
        }))
    }

    /// Replaces the instructions a conversation's turns are sent with.
    pub async fn set_conversation_system(&self, id: &str, system: &[Message]) -> Result<()> {
        let text = serde_json::to_string(system).unwrap_or_default();
        on_pool!(self, |pool| sqlx::query(
            "UPDATE conversations SET system = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(&text)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)
    }

    /// The owner's conversation `id`.
    pub async fn get_conversation(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<Option<ConversationRecord>> {
        let sql =
            sql!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND owner = $2");
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(owner)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(conversation_from_row).transpose()
        })
    }

    /// Replaces a conversation's metadata; `false` when the owner has no such conversation.
    pub async fn set_conversation_metadata(
        &self,
        id: &str,
        owner: &str,
        metadata: &Value,
        now: i64,
    ) -> Result<bool> {
        let sql = sql!(
            "UPDATE conversations SET metadata = $3, used_at = $4 WHERE id = $1 AND owner = $2"
        );
        let text = metadata.to_string();
        let updated = on_pool!(self, |pool| sqlx::query(sql)
            .bind(id)
            .bind(owner)
            .bind(&text)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(updated == 1)
    }

    /// Deletes a conversation and its items; `false` when the owner has no such conversation.
    pub async fn delete_conversation(&self, id: &str, owner: &str) -> Result<bool> {
        match &self.pool {
            super::Pool::Sqlite { pool, .. } => {
                let mut tx = pool.begin().await.map_err(db_error)?;
                let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND owner = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                if deleted == 1 {
                    sqlx::query(
                        "DELETE FROM conversation_search WHERE rowid IN \
                         (SELECT rowid FROM conversation_items WHERE conversation_id = $1)",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    sqlx::query("DELETE FROM conversation_items WHERE conversation_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(deleted == 1)
            }
            // Items go with their conversation (ON DELETE CASCADE).
            super::Pool::Postgres(pool) => {
                let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND owner = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                Ok(deleted == 1)
            }
        }
    }

    /// Appends items to the owner's conversation, in order, in one transaction; returns them
    /// stored, or `None` when the owner has no such conversation.
    pub async fn append_items(
        &self,
        conversation: &str,
        owner: &str,
        items: &[NewItem],
        now: i64,
    ) -> Result<Option<Vec<ItemRecord>>> {
        let n = i64::try_from(items.len()).unwrap_or(i64::MAX);
        let take = "UPDATE conversations SET next_seq = next_seq + $3, used_at = $4 \
                    WHERE id = $1 AND owner = $2 RETURNING next_seq";
        let mut stored = Vec::with_capacity(items.len());
        let records = |end: i64, stored: &mut Vec<ItemRecord>| {
            for (i, item) in items.iter().enumerate() {
                stored.push(ItemRecord {
                    id: item.id.clone(),
                    seq: end - n + i as i64,
                    kind: item.kind.to_owned(),
                    message: item.message.clone(),
                    tokens: item.tokens,
                    covers: item.covers,
                    created_at: now,
                });
            }
        };
        let message_json =
            |item: &NewItem| serde_json::to_string(&item.message).unwrap_or_default();
        let tokens = |item: &NewItem| i64::try_from(item.tokens).unwrap_or(i64::MAX);
        match &self.pool {
            super::Pool::Sqlite { pool, .. } => {
                let mut tx = pool.begin().await.map_err(db_error)?;
                let end: Option<i64> = sqlx::query_scalar(take)
                    .bind(conversation)
                    .bind(owner)
                    .bind(n)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let Some(end) = end else { return Ok(None) };
                records(end, &mut stored);
                let token = search_token(conversation);
                for (item, record) in items.iter().zip(&stored) {
                    let rowid: i64 = sqlx::query_scalar(
                        "INSERT INTO conversation_items \
                         (conversation_id, seq, id, kind, role, message, tokens, covers, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING rowid",
                    )
                    .bind(conversation)
                    .bind(record.seq)
                    .bind(&item.id)
                    .bind(item.kind)
                    .bind(item.message.role.as_str())
                    .bind(message_json(item))
                    .bind(tokens(item))
                    .bind(item.covers)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    if !item.text.is_empty() {
                        sqlx::query(
                            "INSERT INTO conversation_search (rowid, conv, body) VALUES ($1, $2, $3)",
                        )
                        .bind(rowid)
                        .bind(&token)
                        .bind(&item.text)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
                tx.commit().await.map_err(db_error)?;
            }
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db_error)?;
                let end: Option<i64> = sqlx::query_scalar(take)
                    .bind(conversation)
                    .bind(owner)
                    .bind(n)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let Some(end) = end else { return Ok(None) };
                records(end, &mut stored);
                for (item, record) in items.iter().zip(&stored) {
                    sqlx::query(
                        "INSERT INTO conversation_items \
                         (conversation_id, seq, id, kind, role, message, tokens, covers, created_at, search) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_tsvector('english', $10))",
                    )
                    .bind(conversation)
                    .bind(record.seq)
                    .bind(&item.id)
                    .bind(item.kind)
                    .bind(item.message.role.as_str())
                    .bind(message_json(item))
                    .bind(tokens(item))
                    .bind(item.covers)
                    .bind(now)
                    .bind(&item.text)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
            }
        }
        Ok(Some(stored))
    }

    /// Items of a conversation (whose owner the caller has checked) in `order`, after the
    /// position `after` when given, at most `limit`.
    pub async fn list_items(
        &self,
        conversation: &str,
        after: Option<i64>,
        order: Order,
        limit: u32,
    ) -> Result<Vec<ItemRecord>> {
        let sql = match order {
            Order::Asc => sql!(
                "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 \
                 AND seq > $2 ORDER BY seq ASC LIMIT $3"
            ),
            Order::Desc => sql!(
                "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 \
                 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            ),
        };
        let after = after.unwrap_or(match order {
            Order::Asc => -1,
            Order::Desc => i64::MAX,
        });
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(conversation)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(item_from_row).collect()
        })
    }

    /// The items at positions `from..=to`, in order.
    pub async fn items_between(
        &self,
        conversation: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ItemRecord>> {
        let sql = sql!(
            "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 \
             AND seq >= $2 AND seq <= $3 ORDER BY seq"
        );
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(conversation)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter().map(item_from_row).collect()
        })
    }

    /// One item by its id.
    pub async fn get_item(&self, conversation: &str, id: &str) -> Result<Option<ItemRecord>> {
        let sql = sql!(
            "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 AND id = $2"
        );
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(conversation)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(item_from_row).transpose()
        })
    }

    /// Deletes one item; `false` when there is none with that id.
    pub async fn delete_item(&self, conversation: &str, id: &str) -> Result<bool> {
        match &self.pool {
            super::Pool::Sqlite { pool, .. } => {
                let mut tx = pool.begin().await.map_err(db_error)?;
                sqlx::query(
                    "DELETE FROM conversation_search WHERE rowid IN (SELECT rowid FROM \
                     conversation_items WHERE conversation_id = $1 AND id = $2)",
                )
                .bind(conversation)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                let deleted = sqlx::query(
                    "DELETE FROM conversation_items WHERE conversation_id = $1 AND id = $2",
                )
                .bind(conversation)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
                tx.commit().await.map_err(db_error)?;
                Ok(deleted == 1)
            }
            super::Pool::Postgres(pool) => Ok(sqlx::query(
                "DELETE FROM conversation_items WHERE conversation_id = $1 AND id = $2",
            )
            .bind(conversation)
            .bind(id)
            .execute(pool)
            .await
            .map_err(db_error)?
            .rows_affected()
                == 1),
        }
    }

    /// The newest summary of a conversation.
    pub async fn latest_summary(&self, conversation: &str) -> Result<Option<ItemRecord>> {
        let sql = sql!(
            "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 \
             AND kind = 'summary' ORDER BY seq DESC LIMIT 1"
        );
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(conversation)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(item_from_row).transpose()
        })
    }

    /// Positions of the items before `before` that best match any of `words` (plain
    /// alphanumeric words), best first: BM25 on SQLite, `ts_rank` on PostgreSQL.
    pub async fn search_items(
        &self,
        conversation: &str,
        words: &[String],
        before: i64,
        limit: u32,
    ) -> Result<Vec<i64>> {
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        match &self.pool {
            super::Pool::Sqlite { pool, .. } => {
                let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
                let query = format!(
                    "conv : {} AND body : ({})",
                    search_token(conversation),
                    quoted.join(" OR ")
                );
                // The ranking reads a few more rows than asked for: some may be after `before`.
                sqlx::query_scalar(
                    "SELECT i.seq FROM conversation_search s JOIN conversation_items i \
                     ON i.rowid = s.rowid WHERE conversation_search MATCH $1 \
                     AND i.conversation_id = $2 AND i.seq < $3 \
                     ORDER BY bm25(conversation_search, 0.0, 1.0) LIMIT $4",
                )
                .bind(query)
                .bind(conversation)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db_error)
            }
            super::Pool::Postgres(pool) => {
                let query = words.join(" | ");
                sqlx::query_scalar(
                    "SELECT seq FROM conversation_items, to_tsquery('english', $1) q \
                     WHERE conversation_id = $2 AND seq < $3 AND search @@ q \
                     ORDER BY ts_rank(search, q) DESC, seq DESC LIMIT $4",
                )
                .bind(query)
                .bind(conversation)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db_error)
            }
        }
    }

    /// Deletes conversations unused since `before` (epoch ms), and responses made before it;
    /// returns how many conversations went.
    pub async fn expire_conversations(&self, before: i64) -> Result<u64> {
        let ids: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM conversations WHERE used_at < $1"
        )
        .bind(before)
        .fetch_all(pool)
        .await)
        .map_err(db_error)?;
        let mut deleted = 0;
        for id in &ids {
            let owner: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT owner FROM conversations WHERE id = $1"
            )
            .bind(id)
            .fetch_optional(pool)
            .await)
            .map_err(db_error)?;
            if let Some(owner) = owner {
                deleted += u64::from(self.delete_conversation(id, &owner).await?);
            }
        }
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM responses WHERE created_at < $1"
        )
        .bind(before)
        .execute(pool)
        .await
        .map(drop))
        .map_err(db_error)?;
        Ok(deleted)
    }

    /// Stores a response.
    pub async fn put_response(&self, response: &ResponseRecord) -> Result<()> {
        let sql = sql!(
            "INSERT INTO responses ({RESPONSE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let turn = serde_json::to_string(&response.turn).unwrap_or_default();
        let input_items = Value::Array(response.input_items.clone()).to_string();
        let body = response.body.to_string();
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(&response.id)
            .bind(&response.owner)
            .bind(&response.previous_id)
            .bind(&response.conversation_id)
            .bind(&turn)
            .bind(&input_items)
            .bind(&body)
            .bind(response.created_at)
            .execute(pool)
            .await
            .map(drop))
        .map_err(db_error)
    }

    /// The owner's response `id`.
    pub async fn get_response(&self, id: &str, owner: &str) -> Result<Option<ResponseRecord>> {
        let sql = sql!("SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = $1 AND owner = $2");
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(id)
                .bind(owner)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(response_from_row).transpose()
        })
    }

    /// Deletes the owner's response `id`; `false` when there is none.
    pub async fn delete_response(&self, id: &str, owner: &str) -> Result<bool> {
        let deleted = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM responses WHERE id = $1 AND owner = $2"
        )
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .map_err(db_error)?;
        Ok(deleted == 1)
    }

    /// The turns of the chain of responses ending at `id` (following `previous_id`), oldest
    /// first; `None` when the owner has no response `id`. A response deleted mid-chain ends
    /// the chain there.
    pub async fn response_chain(&self, id: &str, owner: &str) -> Result<Option<Vec<Message>>> {
        let sql = "WITH RECURSIVE chain(id, previous_id, turn, depth) AS ( \
                   SELECT id, previous_id, turn, 0 FROM responses WHERE id = $1 AND owner = $2 \
                   UNION ALL \
                   SELECT r.id, r.previous_id, r.turn, c.depth + 1 FROM responses r \
                   JOIN chain c ON r.id = c.previous_id WHERE r.owner = $2 AND c.depth < 100000) \
                   SELECT turn FROM chain ORDER BY depth DESC";
        let turns: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(id)
            .bind(owner)
            .fetch_all(pool)
            .await)
        .map_err(db_error)?;
        if turns.is_empty() {
            return Ok(None);
        }
        let mut messages = Vec::new();
        for turn in turns {
            let turn: Vec<Message> = serde_json::from_str(&turn).map_err(|e| {
                crate::error::Error::internal(format!("a stored response is unreadable: {e}"))
            })?;
            messages.extend(turn);
        }
        Ok(Some(messages))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::Role;
    use crate::store::testing::on_both;

    fn item(id: &str, role: Role, text: &str) -> NewItem {
        NewItem {
            id: id.into(),
            kind: "message",
            message: Message::text(role, text),
            text: text.into(),
            tokens: 5,
            covers: None,
        }
    }

    on_both!(
        conversations_belong_to_their_owner,
        |store: Store| async move {
            let made = store
                .create_conversation("conv_1", "team:a", &json!({"topic": "x"}), 1)
                .await
                .unwrap();
            assert!(made.is_some());
            assert!(store
                .create_conversation("conv_1", "team:b", &json!({}), 2)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .get_conversation("conv_1", "team:b")
                .await
                .unwrap()
                .is_none());
            let got = store
                .get_conversation("conv_1", "team:a")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.metadata["topic"], "x");
            assert!(store
                .append_items("conv_1", "team:b", &[item("m0", Role::User, "hi")], 3)
                .await
                .unwrap()
                .is_none());
            assert!(!store.delete_conversation("conv_1", "team:b").await.unwrap());
            assert!(!store
                .set_conversation_metadata("conv_1", "team:b", &json!({}), 3)
                .await
                .unwrap());
            assert!(store.delete_conversation("conv_1", "team:a").await.unwrap());
            assert!(store
                .get_conversation("conv_1", "team:a")
                .await
                .unwrap()
                .is_none());
        }
    );

    on_both!(items_append_in_order_and_page, |store: Store| async move {
        store
            .create_conversation("conv_2", "key:k", &json!({}), 1)
            .await
            .unwrap();
        let first = store
            .append_items(
                "conv_2",
                "key:k",
                &[
                    item("m0", Role::User, "the launch code is falcon"),
                    item("m1", Role::Assistant, "noted"),
                ],
                2,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.iter().map(|i| i.seq).collect::<Vec<_>>(), [0, 1]);
        for n in 2..40 {
            store
                .append_items(
                    "conv_2",
                    "key:k",
                    &[item(&format!("m{n}"), Role::User, "weather chatter")],
                    3,
                )
                .await
                .unwrap()
                .unwrap();
        }
        let page = store
            .list_items("conv_2", None, Order::Desc, 5)
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [39, 38, 37, 36, 35]
        );
        let next = store
            .list_items("conv_2", Some(35), Order::Desc, 2)
            .await
            .unwrap();
        assert_eq!(next.iter().map(|i| i.seq).collect::<Vec<_>>(), [34, 33]);
        let asc = store
            .list_items("conv_2", Some(0), Order::Asc, 2)
            .await
            .unwrap();
        assert_eq!(asc[0].id, "m1");
        assert_eq!(asc[0].message.joined_text(), "noted");

        // Recall finds the old fact by its words, stemmed, and not past `before`.
        let words = vec!["launching".to_owned(), "codes".to_owned()];
        let found = store.search_items("conv_2", &words, 40, 4).await.unwrap();
        assert_eq!(found, [0]);
        assert!(store
            .search_items("conv_2", &words, 0, 4)
            .await
            .unwrap()
            .is_empty());

        assert!(store.delete_item("conv_2", "m0").await.unwrap());
        assert!(store.get_item("conv_2", "m0").await.unwrap().is_none());
        assert!(store
            .search_items("conv_2", &words, 40, 4)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.items_between("conv_2", 1, 3).await.unwrap().len(), 3);

        assert_eq!(store.expire_conversations(4).await.unwrap(), 1);
        assert!(store
            .list_items("conv_2", None, Order::Asc, 5)
            .await
            .unwrap()
            .is_empty());
    });

    on_both!(response_chains_replay_in_order, |store: Store| async move {
        let response = |id: &str, previous: Option<&str>, text: &str| ResponseRecord {
            id: id.into(),
            owner: "team:a".into(),
            previous_id: previous.map(str::to_owned),
            conversation_id: None,
            turn: vec![Message::text(Role::User, text)],
            input_items: vec![json!({"type": "message"})],
            body: json!({"id": id}),
            created_at: 1,
        };
        store
            .put_response(&response("resp_1", None, "one"))
            .await
            .unwrap();
        store
            .put_response(&response("resp_2", Some("resp_1"), "two"))
            .await
            .unwrap();
        store
            .put_response(&response("resp_3", Some("resp_2"), "three"))
            .await
            .unwrap();
        let chain = store
            .response_chain("resp_3", "team:a")
            .await
            .unwrap()
            .unwrap();
        let texts: Vec<String> = chain.iter().map(Message::joined_text).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert!(store
            .response_chain("resp_3", "team:b")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_response("resp_2", "team:b")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store
                .get_response("resp_2", "team:a")
                .await
                .unwrap()
                .unwrap()
                .body["id"],
            "resp_2"
        );
        assert!(store.delete_response("resp_2", "team:a").await.unwrap());
        let chain = store
            .response_chain("resp_3", "team:a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chain.len(), 1);
    });
}

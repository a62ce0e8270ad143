//! The conversation store: conversations, their items in order with a full-text index for
//! recall, and stored Responses-API responses. Every query names the owner (the tenant), so
//! another tenant's id reads as unknown.
//!
//! A turn appends its items in one transaction that also takes their positions from the
//! conversation's row, so appending costs the same on a conversation of 20 items as on one
//! of 100,000, and two replicas appending at once never interleave or lose a turn.

use serde_json::Value;

use super::{col, db_error, value_rows, Pool, Row, Store};
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
    /// The words recall finds it by, with their counts.
    pub terms: Vec<(String, u32)>,
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
    Ok(ItemRecord {
        id: col(row, "id")?,
        seq: col(row, "seq")?,
        kind: col(row, "kind")?,
        message: stored_message(&col::<String>(row, "message")?)?,
        tokens: u64::try_from(col::<i64>(row, "tokens")?).unwrap_or(0),
        covers: col(row, "covers")?,
        created_at: col(row, "created_at")?,
    })
}

/// An item's message as stored (canonical JSON).
fn stored_message(json: &str) -> Result<Message> {
    serde_json::from_str(json).map_err(|e| {
        crate::error::Error::internal(format!("a stored conversation item is unreadable: {e}"))
    })
}

/// A posting's count of its word is kept capped below this, as BM25 saturates long before.
const TF_LIMIT: i64 = 1024;

/// Most items a word's postings are kept for in `conversation_term_counts.postings`. A word in
/// more of the conversation's items says little about which turn is meant (its BM25 weight is
/// low): it is counted, its postings are no longer kept there, and recall leaves it out. So a
/// search reads at most this many postings a word, on a conversation of 100,000 items as on
/// one of 100. Migration 12 filled the column with this value: changing it needs a migration
/// that fills the column again.
pub const POSTINGS_PER_TERM: i64 = 128;

/// A posting as kept in the postings text: position × [`TF_LIMIT`] + count, the count capped.
fn packed_posting(seq: i64, tf: i64) -> i64 {
    seq * TF_LIMIT + tf.min(TF_LIMIT - 1)
}

/// The postings text of the word of the `conversation_term_counts` row being updated (of
/// conversation `$1`), rebuilt from `conversation_terms` without position `$2`.
fn rebuilt_postings() -> String {
    format!(
        "COALESCE((SELECT string_agg(CAST(t.seq * {TF_LIMIT} + CASE WHEN t.tf < {TF_LIMIT} \
         THEN t.tf ELSE {TF_LIMIT} - 1 END AS TEXT), ',' ORDER BY t.seq) \
         FROM conversation_terms t WHERE t.conversation_id = $1 \
         AND t.term = conversation_term_counts.term AND t.seq <> $2), '')"
    )
}

/// Items read as one text rather than a row each: crossing sqlx's SQLite worker thread cost
/// more per row than the query did. The aggregate, over the columns of `conversation_items`
/// named `i`: fields end in U+001F and items in U+001E, which JSON text never holds raw.
/// `string_agg` is PostgreSQL's and, since 3.44, SQLite's; it keeps no order.
const JOINED_ITEMS: &str = "string_agg(i.id || '\u{1f}' || CAST(i.seq AS TEXT) || '\u{1f}' \
    || i.kind || '\u{1f}' || CAST(i.tokens AS TEXT) || '\u{1f}' \
    || COALESCE(CAST(i.covers AS TEXT), '') || '\u{1f}' || CAST(i.created_at AS TEXT) \
    || '\u{1f}' || i.message, '\u{1e}')";

/// The items of a [`JOINED_ITEMS`] text (none for none), in `order` of position.
fn items_from_joined(joined: Option<String>, order: Order) -> Result<Vec<ItemRecord>> {
    let mut items = joined
        .as_deref()
        .unwrap_or_default()
        .split('\u{1e}')
        .filter(|item| !item.is_empty())
        .map(item_from_joined)
        .collect::<Result<Vec<_>>>()?;
    match order {
        Order::Asc => items.sort_unstable_by_key(|item| item.seq),
        Order::Desc => items.sort_unstable_by_key(|item| std::cmp::Reverse(item.seq)),
    }
    Ok(items)
}

/// One item of a [`JOINED_ITEMS`] text: id, seq, kind, tokens, covers (empty for none),
/// created_at and message.
fn item_from_joined(text: &str) -> Result<ItemRecord> {
    let unreadable =
        || crate::error::Error::internal("a stored conversation item is unreadable".to_owned());
    let mut fields = text.splitn(7, '\u{1f}');
    let mut field = || fields.next().ok_or_else(unreadable);
    let (id, seq, kind, tokens, covers, created_at, message) = (
        field()?,
        field()?,
        field()?,
        field()?,
        field()?,
        field()?,
        field()?,
    );
    let number = |text: &str| text.parse::<i64>().map_err(|_| unreadable());
    Ok(ItemRecord {
        id: id.to_owned(),
        seq: number(seq)?,
        kind: kind.to_owned(),
        message: stored_message(message)?,
        tokens: u64::try_from(number(tokens)?).unwrap_or(0),
        covers: (!covers.is_empty()).then(|| number(covers)).transpose()?,
        created_at: number(created_at)?,
    })
}

/// The `columns` of a conversation's (`$1`) newest summary, as a query.
fn newest_summary(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM conversation_items WHERE conversation_id = $1 \
         AND kind = 'summary' ORDER BY seq DESC LIMIT 1"
    )
}

/// What [`Store::read_turn`] reads.
pub struct TurnRead<'a> {
    /// The newest summary, and the window only after the items it covers.
    pub summary: bool,
    /// Most items of the window read.
    pub window: u32,
    /// The words recall searches for.
    pub terms: &'a [String],
}

/// What [`Store::read_turn`] found.
pub struct TurnSnapshot {
    pub summary: Option<ItemRecord>,
    /// The newest items (after the summary's), newest first.
    pub newest: Vec<ItemRecord>,
    /// For each of the terms: how many of the conversation's items hold it and, when that is
    /// at most [`POSTINGS_PER_TERM`], the items that do (position, count in the item), newest
    /// first.
    pub postings: Vec<Postings>,
}

/// A word's count of items holding it, and its postings (position, count), newest first.
pub type Postings = (i64, Vec<(i64, i64)>);

/// The scalar subquery that reads the postings of `terms` words (bound from `$2` on), as one
/// text: for each word, the word, the count of items holding it and its postings text. That
/// text is kept with the count as items are stored, so a search reads one row a word: reading
/// a posting a row, SQLite spent most of a search turning numbers into text and joining them.
fn postings_of(terms: usize) -> String {
    if terms == 0 {
        return "CAST(NULL AS TEXT)".to_owned();
    }
    let list: Vec<String> = (0..terms).map(|i| format!("${}", i + 2)).collect();
    format!(
        "(SELECT string_agg(c.term || '\u{1f}' || CAST(c.df AS TEXT) || '\u{1f}' \
         || COALESCE(c.postings, ''), '\u{1e}') \
         FROM conversation_term_counts c WHERE c.conversation_id = $1 AND c.term IN ({}))",
        list.join(", ")
    )
}

/// The postings of a [`postings_of`] text, in the order of `terms`.
fn postings_from_joined(joined: Option<String>, terms: &[String]) -> Vec<Postings> {
    let mut found: Vec<Postings> = vec![(0, Vec::new()); terms.len()];
    for word in joined.as_deref().unwrap_or_default().split('\u{1e}') {
        let mut fields = word.splitn(3, '\u{1f}');
        let (Some(term), Some(df), Some(postings)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(at) = terms.iter().position(|t| t == term) else {
            continue;
        };
        found[at].0 = df.parse().unwrap_or(0);
        let list = &mut found[at].1;
        for posting in postings.split(',') {
            if let Ok(packed) = posting.parse::<i64>() {
                list.push((packed / TF_LIMIT, packed % TF_LIMIT));
            }
        }
        list.sort_unstable_by_key(|&(seq, _)| std::cmp::Reverse(seq));
    }
    found
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

/// Rows of recall's index written per statement (four parameters each, well under either
/// database's limit).
const TERM_ROWS: usize = 256;

/// The positions an exchanges read takes on PostgreSQL are padded to a multiple of this (see
/// `Store::items_in_exchanges`): a recall of up to 8 turns searches 16 hits.
const EXCHANGE_ROWS: usize = 16;

/// Items inserted per statement (nine parameters each).
const ITEM_ROWS: usize = 100;

/// Vectors inserted per statement (four parameters each).
const VECTOR_ROWS: usize = 200;

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
        fetch_owned!(self, sql, id, owner, conversation_from_row)
    }

    /// The owner's conversations, the most recently used first, at most `limit`: the admin
    /// UI's listing (the Conversations API has none).
    pub async fn list_conversations(
        &self,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<ConversationRecord>> {
        let sql = sql!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner = $1 \
             ORDER BY used_at DESC, id DESC LIMIT $2"
        );
        on_pool!(self, |pool| {
            let rows = sqlx::query(sql)
                .bind(owner)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(conversation_from_row)
                .collect::<Result<Vec<_>>>()
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
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND owner = $2")
                .bind(id)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            if deleted == 1 {
                for table in [
                    "conversation_term_counts",
                    "conversation_terms",
                    "conversation_vectors",
                    "conversation_items",
                ] {
                    sqlx::query(sql!("DELETE FROM {table} WHERE conversation_id = $1"))
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
        let backend = self.backend();
        on_pool!(self, |pool| {
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
            // The items go in one statement (a turn's two or three), or a few for many.
            let rows: Vec<(&NewItem, &ItemRecord)> = items.iter().zip(&stored).collect();
            for chunk in rows.chunks(ITEM_ROWS) {
                let sql = sql!(
                    "INSERT INTO conversation_items \
                     (conversation_id, seq, id, kind, role, message, tokens, covers, created_at) \
                     VALUES {}",
                    value_rows(backend, chunk.len(), 9)
                );
                let mut query = sqlx::query(sql);
                for (item, record) in chunk {
                    query = query
                        .bind(conversation)
                        .bind(record.seq)
                        .bind(&item.id)
                        .bind(item.kind)
                        .bind(item.message.role.as_str())
                        .bind(message_json(item))
                        .bind(tokens(item))
                        .bind(item.covers)
                        .bind(now);
                }
                query.execute(&mut *tx).await.map_err(db_error)?;
            }
            // The index rows go in a few statements of many rows: an item has dozens.
            let postings: Vec<(&str, i64, i64)> = items
                .iter()
                .zip(&stored)
                .flat_map(|(item, record)| {
                    item.terms
                        .iter()
                        .map(move |(term, tf)| (term.as_str(), record.seq, i64::from(*tf)))
                })
                .collect();
            for chunk in postings.chunks(TERM_ROWS) {
                let sql = sql!(
                    "INSERT INTO conversation_terms (conversation_id, term, seq, tf) VALUES {}",
                    value_rows(backend, chunk.len(), 4)
                );
                let mut query = sqlx::query(sql);
                for (term, seq, tf) in chunk {
                    query = query.bind(conversation).bind(*term).bind(*seq).bind(*tf);
                }
                query.execute(&mut *tx).await.map_err(db_error)?;
            }
            // Each word's item count grows by the items of this batch that hold it, and its
            // postings text by their postings while the count stays within the cap (past it,
            // the text is dropped for good: `NULL ||` anything is `NULL`).
            let mut words: std::collections::HashMap<&str, (i64, String)> = Default::default();
            for (term, seq, tf) in &postings {
                let (df, text) = words.entry(term).or_default();
                *df += 1;
                // Past the cap within this batch, the text is not kept: not written either.
                if *df > POSTINGS_PER_TERM {
                    continue;
                }
                if !text.is_empty() {
                    text.push(',');
                }
                text.push_str(&packed_posting(*seq, *tf).to_string());
            }
            let mut words: Vec<(&str, (i64, String))> = words.into_iter().collect();
            // In key order, as the B-tree takes them best.
            words.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for chunk in words.chunks(TERM_ROWS) {
                let sql = sql!(
                    "INSERT INTO conversation_term_counts (conversation_id, term, df, postings) \
                     VALUES {} ON CONFLICT (conversation_id, term) DO UPDATE \
                     SET df = conversation_term_counts.df + excluded.df, \
                     postings = CASE WHEN conversation_term_counts.df + excluded.df \
                     <= {POSTINGS_PER_TERM} \
                     THEN conversation_term_counts.postings || ',' || excluded.postings END",
                    value_rows(backend, chunk.len(), 4)
                );
                let mut query = sqlx::query(sql);
                for (term, (df, text)) in chunk {
                    let text = (*df <= POSTINGS_PER_TERM).then_some(text.as_str());
                    query = query.bind(conversation).bind(*term).bind(*df).bind(text);
                }
                query.execute(&mut *tx).await.map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok::<(), crate::error::Error>(())
        })?;
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
        // The limit is written in, not bound: SQLite plans a bound LIMIT by its value, so it
        // would prepare the statement again on every run (a turn reads its window this way).
        let sql = match order {
            Order::Asc => sql!(
                "SELECT {JOINED_ITEMS} FROM (SELECT {ITEM_COLUMNS} FROM conversation_items \
                 WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT {limit}) AS i"
            ),
            Order::Desc => sql!(
                "SELECT {JOINED_ITEMS} FROM (SELECT {ITEM_COLUMNS} FROM conversation_items \
                 WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT {limit}) AS i"
            ),
        };
        let after = after.unwrap_or(match order {
            Order::Asc => -1,
            Order::Desc => i64::MAX,
        });
        let joined: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(conversation)
            .bind(after)
            .fetch_one(pool)
            .await)
        .map_err(db_error)?;
        items_from_joined(joined, order)
    }

    /// The items at positions `from..=to`, in order.
    pub async fn items_between(
        &self,
        conversation: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ItemRecord>> {
        self.items_in_ranges(conversation, &[(from, to)]).await
    }

    /// The items in any of the position ranges (inclusive), in order, in one round trip.
    pub async fn items_in_ranges(
        &self,
        conversation: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<ItemRecord>> {
        // Overlapping ranges merged, so that no item is read twice; each range is then its own
        // primary-key range scan (a plain OR of ranges would scan the whole conversation).
        let mut merged: Vec<(i64, i64)> = ranges.to_vec();
        merged.sort_unstable();
        merged.dedup_by(|next, last| {
            let overlaps = next.0 <= last.1 + 1;
            if overlaps {
                last.1 = last.1.max(next.1);
            }
            overlaps
        });
        if merged.is_empty() {
            return Ok(Vec::new());
        }
        let selects: Vec<String> = (0..merged.len())
            .map(|i| {
                format!(
                    "SELECT {ITEM_COLUMNS} FROM conversation_items WHERE conversation_id = $1 \
                     AND seq >= ${} AND seq <= ${}",
                    2 * i + 2,
                    2 * i + 3
                )
            })
            .collect();
        let sql = sql!("{} ORDER BY seq", selects.join(" UNION ALL "));
        on_pool!(self, |pool| {
            let mut query = sqlx::query(sql).bind(conversation);
            for (from, to) in &merged {
                query = query.bind(*from).bind(*to);
            }
            let rows = query.fetch_all(pool).await.map_err(db_error)?;
            rows.iter().map(item_from_row).collect()
        })
    }

    /// The exchanges around positions, in one round trip, in order: for each `(at, from, to)`,
    /// the items from the last user message in `from..=at` up to the one before the next user
    /// message in `at..=to` (or `to`); nothing for a position with no user message in
    /// `from..=at`. Only those items are read, not the whole of each `from..=to`. A stored user
    /// message never holds a tool result (those are items of their own), so a user message is
    /// what opens an exchange.
    pub async fn items_in_exchanges(
        &self,
        conversation: &str,
        around: &[(i64, i64, i64)],
    ) -> Result<Vec<ItemRecord>> {
        if around.is_empty() {
            return Ok(Vec::new());
        }
        // Exchanges sharing their first item are one (the longest); others never overlap, as
        // each holds one user message, its first. Each is its own primary-key range scan, a
        // subquery per exchange: as a join, PostgreSQL may take the conversation's items as the
        // outer side (its estimate for a new conversation is one row) and run the exchanges'
        // subqueries once per item. The items come back as one text (see `JOINED_ITEMS`).
        let exchanges = |positions: &str| {
            format!(
                "WITH h (at, lo, hi) AS ({positions}), \
                 r AS (SELECT (SELECT MAX(seq) FROM conversation_items \
                 WHERE conversation_id = $1 AND seq >= h.lo AND seq <= h.at AND role = 'user') \
                 AS lo, \
                 COALESCE((SELECT MIN(seq) FROM conversation_items \
                 WHERE conversation_id = $1 AND seq > h.at AND seq <= h.hi AND role = 'user') - 1, \
                 h.hi) AS hi FROM h), \
                 g AS (SELECT lo, MAX(hi) AS hi FROM r WHERE lo IS NOT NULL GROUP BY lo) \
                 SELECT string_agg((SELECT {JOINED_ITEMS} FROM conversation_items i \
                 WHERE i.conversation_id = $1 AND i.seq >= g.lo AND i.seq <= g.hi), '\u{1e}') \
                 FROM g"
            )
        };
        let joined: Option<String> = match &self.pool {
            Pool::Sqlite { pool, .. } => {
                let values: Vec<String> = (0..around.len())
                    .map(|i| format!("(${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                    .collect();
                let sql = sql!("{}", exchanges(&format!("VALUES {}", values.join(", "))));
                let mut query = sqlx::query_scalar(sql).bind(conversation);
                for (at, from, to) in around {
                    query = query.bind(*at).bind(*from).bind(*to);
                }
                query.fetch_one(pool).await
            }
            Pool::Postgres(pool) => {
                // Planning this statement took longer than running it, and PostgreSQL planned
                // it on every run: the plan it would keep (generic, for any positions) looked
                // costlier than one made for the positions given, as it expects 100 rows of an
                // array of unknown length. Padded to a fixed length, under a LIMIT of that
                // length, the positions are as many for either plan, so after its first five
                // runs on a connection PostgreSQL keeps the generic plan. The padding
                // (a hit at -1) opens no exchange.
                let length = around.len().div_ceil(EXCHANGE_ROWS) * EXCHANGE_ROWS;
                let column = |pick: fn(&(i64, i64, i64)) -> i64, pad: i64| {
                    let mut values: Vec<i64> = around.iter().map(pick).collect();
                    values.resize(length, pad);
                    values
                };
                let sql = sql!(
                    "{}",
                    exchanges(&format!(
                        "SELECT * FROM unnest($2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) \
                         LIMIT {length}"
                    ))
                );
                sqlx::query_scalar(sql)
                    .bind(conversation)
                    .bind(column(|h| h.0, -1))
                    .bind(column(|h| h.1, 0))
                    .bind(column(|h| h.2, -1))
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(db_error)?;
        items_from_joined(joined, Order::Asc)
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
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(db_error)?;
            let seq: Option<i64> = sqlx::query_scalar(
                "DELETE FROM conversation_items WHERE conversation_id = $1 AND id = $2 \
                 RETURNING seq",
            )
            .bind(conversation)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(seq) = seq {
                // A word back within the cap gets its postings text again, from the index.
                sqlx::query(sql!(
                    "UPDATE conversation_term_counts SET df = df - 1, \
                     postings = CASE WHEN df - 1 <= {POSTINGS_PER_TERM} THEN {} END \
                     WHERE conversation_id = $1 AND term IN (SELECT term FROM conversation_terms \
                     WHERE conversation_id = $1 AND seq = $2)",
                    rebuilt_postings()
                ))
                .bind(conversation)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                for table in ["conversation_terms", "conversation_vectors"] {
                    sqlx::query(sql!(
                        "DELETE FROM {table} WHERE conversation_id = $1 AND seq = $2"
                    ))
                    .bind(conversation)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
            }
            tx.commit().await.map_err(db_error)?;
            Ok(seq.is_some())
        })
    }

    /// The newest summary of a conversation.
    pub async fn latest_summary(&self, conversation: &str) -> Result<Option<ItemRecord>> {
        let sql = sql!("{}", newest_summary(ITEM_COLUMNS));
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(conversation)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            row.as_ref().map(item_from_row).transpose()
        })
    }

    /// What building a turn's prompt reads first, in one round trip and one snapshot: the
    /// newest summary (when `what.summary`), the newest items after the part it covers (at
    /// most `what.window`, newest first) and recall's postings of `what.terms`. Each statement
    /// costs a crossing to SQLite's worker thread and back, and a ping when its connection
    /// returns to the pool: three reads in one statement cost what one did.
    pub async fn read_turn(&self, conversation: &str, what: &TurnRead<'_>) -> Result<TurnSnapshot> {
        let summary = if what.summary {
            format!(
                "(SELECT {JOINED_ITEMS} FROM ({}) AS i)",
                newest_summary(ITEM_COLUMNS)
            )
        } else {
            "CAST(NULL AS TEXT)".to_owned()
        };
        let covers = if what.summary {
            format!("COALESCE(({}), -1)", newest_summary("covers"))
        } else {
            "-1".to_owned()
        };
        let postings = postings_of(what.terms.len());
        // The limit is written in, not bound, as in `list_items`.
        let window = what.window;
        let sql = sql!(
            "SELECT {summary}, (SELECT {JOINED_ITEMS} FROM (SELECT {ITEM_COLUMNS} \
             FROM conversation_items WHERE conversation_id = $1 AND seq > {covers} \
             ORDER BY seq DESC LIMIT {window}) AS i), {postings}"
        );
        let (summary, window, postings): (Option<String>, Option<String>, Option<String>) =
            on_pool!(self, |pool| {
                let mut query = sqlx::query_as(sql).bind(conversation);
                for term in what.terms {
                    query = query.bind(term);
                }
                query.fetch_one(pool).await
            })
            .map_err(db_error)?;
        Ok(TurnSnapshot {
            summary: items_from_joined(summary, Order::Desc)?.pop(),
            newest: items_from_joined(window, Order::Desc)?,
            postings: postings_from_joined(postings, what.terms),
        })
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

    /// Keeps the sentence vectors of items (by position): int8 components and the value of one
    /// step. An item deleted meanwhile gets none; one that has one keeps it.
    pub async fn put_item_vectors(
        &self,
        conversation: &str,
        vectors: &[(i64, Vec<i8>, f32)],
    ) -> Result<()> {
        for chunk in vectors.chunks(VECTOR_ROWS) {
            // Only for items still there, and once.
            let sql = sql!(
                "WITH v (conversation_id, seq, vector, scale) AS (VALUES {}) \
                 INSERT INTO conversation_vectors (conversation_id, seq, vector, scale) \
                 SELECT v.conversation_id, v.seq, v.vector, v.scale FROM v \
                 WHERE EXISTS (SELECT 1 FROM conversation_items i \
                 WHERE i.conversation_id = v.conversation_id AND i.seq = v.seq) \
                 ON CONFLICT (conversation_id, seq) DO NOTHING",
                value_rows(self.backend(), chunk.len(), 4)
            );
            on_pool!(self, |pool| {
                let mut query = sqlx::query(sql);
                for (seq, vector, scale) in chunk {
                    let bytes: Vec<u8> = vector.iter().map(|&x| x as u8).collect();
                    query = query.bind(conversation).bind(*seq).bind(bytes).bind(*scale);
                }
                query.execute(pool).await.map(drop)
            })
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// The sentence vectors of the items at positions `from..before`, newest first.
    pub async fn item_vectors(
        &self,
        conversation: &str,
        from: i64,
        before: i64,
    ) -> Result<Vec<(i64, Vec<i8>, f32)>> {
        let rows: Vec<(i64, Vec<u8>, f32)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT seq, vector, scale FROM conversation_vectors \
             WHERE conversation_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq DESC"
        )
        .bind(conversation)
        .bind(from)
        .bind(before)
        .fetch_all(pool)
        .await)
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(seq, bytes, scale)| (seq, bytes.into_iter().map(|b| b as i8).collect(), scale))
            .collect())
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
        fetch_owned!(self, sql, id, owner, response_from_row)
    }

    /// Deletes the owner's response `id`; `false` when there is none.
    pub async fn delete_response(&self, id: &str, owner: &str) -> Result<bool> {
        self.delete_owned("responses", id, owner).await
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
            terms: text.split_whitespace().map(|w| (w.to_owned(), 1)).collect(),
            tokens: 5,
            covers: None,
        }
    }

    on_both!(
        item_vectors_are_kept_for_items_still_there_and_go_with_them,
        |store: Store| async move {
            store
                .create_conversation("conv_v", "team:a", &json!({}), 1)
                .await
                .unwrap();
            let items: Vec<NewItem> = (0..4)
                .map(|n| item(&format!("msg_{n}"), Role::User, &format!("turn {n}")))
                .collect();
            store
                .append_items("conv_v", "team:a", &items, 2)
                .await
                .unwrap();
            assert!(store.delete_item("conv_v", "msg_3").await.unwrap());
            let vectors: Vec<(i64, Vec<i8>, f32)> = (0..4)
                .map(|seq| (seq, vec![seq as i8, -127, 127], 0.5))
                .collect();
            store.put_item_vectors("conv_v", &vectors).await.unwrap();
            // Again: kept once.
            store
                .put_item_vectors("conv_v", &vectors[..1])
                .await
                .unwrap();
            let read = store.item_vectors("conv_v", 0, 10).await.unwrap();
            // Newest first, and none for the deleted item.
            assert_eq!(read, vectors[..3].iter().rev().cloned().collect::<Vec<_>>());
            assert_eq!(store.item_vectors("conv_v", 1, 2).await.unwrap().len(), 1);
            assert!(store.delete_item("conv_v", "msg_2").await.unwrap());
            assert_eq!(store.item_vectors("conv_v", 0, 10).await.unwrap().len(), 2);
            assert!(store.delete_conversation("conv_v", "team:a").await.unwrap());
            assert!(store
                .item_vectors("conv_v", 0, 10)
                .await
                .unwrap()
                .is_empty());
        }
    );

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

        // The index finds the old fact by its words, newest first; the turn's first read
        // brings the window with it.
        let terms = vec!["code".to_owned(), "chatter".to_owned()];
        let read = |window| {
            let (store, terms) = (&store, &terms);
            async move {
                let what = TurnRead {
                    summary: false,
                    window,
                    terms,
                };
                store.read_turn("conv_2", &what).await.unwrap()
            }
        };
        let turn = read(3).await;
        assert_eq!(
            turn.newest.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [39, 38, 37]
        );
        assert!(turn.summary.is_none());
        assert_eq!(turn.postings[0], (1, vec![(0, 1)]));
        assert_eq!(turn.postings[1].0, 38);
        assert_eq!(turn.postings[1].1.len(), 38);
        assert_eq!(turn.postings[1].1[0], (39, 1));

        assert!(store.delete_item("conv_2", "m0").await.unwrap());
        assert!(store.get_item("conv_2", "m0").await.unwrap().is_none());
        assert_eq!(read(1).await.postings[0], (0, vec![]));
        // With the summary, the window starts after what the newest one covers.
        let summary = NewItem {
            kind: "summary",
            covers: Some(36),
            ..item("s0", Role::System, "earlier: weather")
        };
        store
            .append_items("conv_2", "key:k", &[summary], 3)
            .await
            .unwrap()
            .unwrap();
        let what = TurnRead {
            summary: true,
            window: 10,
            terms: &[],
        };
        let turn = store.read_turn("conv_2", &what).await.unwrap();
        assert_eq!(
            turn.summary.map(|s| (s.id, s.covers)),
            Some(("s0".into(), Some(36)))
        );
        assert_eq!(
            turn.newest.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [40, 39, 38, 37]
        );
        assert_eq!(store.items_between("conv_2", 1, 3).await.unwrap().len(), 3);
        let near = store
            .items_in_ranges("conv_2", &[(10, 12), (30, 31), (11, 14)])
            .await
            .unwrap();
        let seqs: Vec<i64> = near.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [10, 11, 12, 13, 14, 30, 31]);

        assert_eq!(store.expire_conversations(4).await.unwrap(), 1);
        assert!(store
            .list_items("conv_2", None, Order::Asc, 5)
            .await
            .unwrap()
            .is_empty());
    });

    on_both!(
        a_word_in_more_items_than_the_cap_keeps_no_postings_until_deletes_bring_it_back,
        |store: Store| async move {
            store
                .create_conversation("conv_c", "key:k", &json!({}), 1)
                .await
                .unwrap();
            let cap = usize::try_from(POSTINGS_PER_TERM).unwrap();
            let batch = |from: usize, n: usize, text: &'static str| {
                (from..from + n)
                    .map(|i| item(&format!("c{i}"), Role::User, text))
                    .collect::<Vec<_>>()
            };
            let append = |items: Vec<NewItem>| {
                let store = &store;
                async move {
                    store
                        .append_items("conv_c", "key:k", &items, 2)
                        .await
                        .unwrap()
                        .unwrap()
                }
            };
            let terms = vec!["common".to_owned(), "bulk".to_owned()];
            let postings = || {
                let (store, terms) = (&store, &terms);
                async move {
                    let what = TurnRead {
                        summary: false,
                        window: 1,
                        terms,
                    };
                    store.read_turn("conv_c", &what).await.unwrap().postings
                }
            };
            // Up to the cap, over several batches, every posting is kept, newest first.
            append(batch(0, cap - 1, "common")).await;
            append(batch(cap - 1, 1, "common")).await;
            let kept = postings().await;
            assert_eq!(kept[0].0, POSTINGS_PER_TERM);
            assert_eq!(kept[0].1.len(), cap);
            assert_eq!(kept[0].1[0], (POSTINGS_PER_TERM - 1, 1));
            assert_eq!(kept[0].1[cap - 1], (0, 1));
            // One more item: counted, its postings no longer read.
            append(batch(cap, 1, "common")).await;
            assert_eq!(postings().await[0], (POSTINGS_PER_TERM + 1, vec![]));
            // A word past the cap within one batch is never kept.
            append(batch(cap + 1, cap + 1, "bulk")).await;
            assert_eq!(postings().await[1], (POSTINGS_PER_TERM + 1, vec![]));
            // Deleting an item brings the word back within the cap: its postings are rebuilt,
            // without the deleted one.
            assert!(store.delete_item("conv_c", "c5").await.unwrap());
            let rebuilt = postings().await;
            assert_eq!(rebuilt[0].0, POSTINGS_PER_TERM);
            let seqs: Vec<i64> = rebuilt[0].1.iter().map(|&(seq, _)| seq).collect();
            let expected: Vec<i64> = (0..=POSTINGS_PER_TERM).rev().filter(|&s| s != 5).collect();
            assert_eq!(seqs, expected);
            // And appending goes on from the rebuilt text.
            append(batch(2 * cap + 2, 1, "common")).await;
            assert_eq!(postings().await[0], (POSTINGS_PER_TERM + 1, vec![]));
        }
    );

    on_both!(
        migration_12_fills_the_postings_of_a_conversation_stored_before_it,
        |store: Store| async move {
            store
                .create_conversation("conv_m", "key:k", &json!({}), 1)
                .await
                .unwrap();
            let items: Vec<NewItem> = (0..5)
                .map(|i| item(&format!("x{i}"), Role::User, "rare word"))
                .chain(
                    (5..=POSTINGS_PER_TERM + 5).map(|i| item(&format!("x{i}"), Role::User, "word")),
                )
                .collect();
            store
                .append_items("conv_m", "key:k", &items, 2)
                .await
                .unwrap()
                .unwrap();
            let terms = vec!["rare".to_owned(), "word".to_owned()];
            let what = TurnRead {
                summary: false,
                window: 1,
                terms: &terms,
            };
            let before = store.read_turn("conv_m", &what).await.unwrap().postings;
            // The database as version 11 left it: no postings column, nothing recorded of 12.
            on_pool!(store, |pool| sqlx::raw_sql(
                "ALTER TABLE conversation_term_counts DROP COLUMN postings; \
                 DELETE FROM proxima_migrations WHERE version = 12"
            )
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
            assert_eq!(store.migrate().await.unwrap(), vec![12]);
            let after = store.read_turn("conv_m", &what).await.unwrap().postings;
            assert_eq!(after, before);
            assert_eq!(after[0].1.len(), 5);
            assert_eq!(after[1], (POSTINGS_PER_TERM + 6, vec![]));
        }
    );

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

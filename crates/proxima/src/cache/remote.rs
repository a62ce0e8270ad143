//! The cache in Redis, shared by every replica, on the rate limiter's connection.
//!
//! Keys, under the prefix (`proxima:`):
//! `cache:answer:{key}` (string: the entry as JSON, expiring when no hit may serve it any
//! more) and `cache:near:{partition}` (list, newest first, at most [`PARTITION_CAP`]: each item
//! the time it was stored, the answer's key and the unit embedding, in bytes; expiring a
//! semantic ttl after its last push). A store is one atomic pipeline; a lookup one round trip
//! for an exact hit, two for a semantic one.
//!
//! A Redis failure is a miss (or an answer not stored): the cache is an optimisation, and the
//! limiter that owns the connection notices an outage and switches everyone to memory.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{similarity, Digest, Entry, Near, Terms, PARTITION_CAP};
use crate::store::hex;

/// Longest wait for Redis on a request's path, as for the limits; slower counts as a miss.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// Bytes before the vector in a partition item: the time stored (8) and the answer's key (32).
const ITEM_HEAD: usize = 8 + 32;

fn answer_key(prefix: &str, key: &Digest) -> String {
    [prefix, "cache:answer:", &hex(key)].concat()
}

fn partition_key(prefix: &str, partition: &Digest) -> String {
    [prefix, "cache:near:", &hex(partition)].concat()
}

/// Runs one command or pipeline within [`CALL_TIMEOUT`]; a failure is logged and is `None`.
async fn call<T: redis::FromRedisValue>(
    conn: &mut ConnectionManager,
    what: &str,
    run: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
) -> Option<T> {
    match tokio::time::timeout(CALL_TIMEOUT, run(conn)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the response cache could not {what} in Redis");
            None
        }
        Err(_) => {
            tracing::warn!("the response cache could not {what} in Redis within {CALL_TIMEOUT:?}");
            None
        }
    }
}

pub async fn get(mut conn: ConnectionManager, prefix: &str, key: &Digest) -> Option<Entry> {
    let name = answer_key(prefix, key);
    let bytes: Option<Vec<u8>> = call(&mut conn, "read an answer", async |conn| {
        redis::cmd("GET").arg(&name).query_async(conn).await
    })
    .await?;
    Entry::decode(&bytes?)
}

/// The key of the answer whose embedding in `near`'s partition, stored after `since`, is the
/// most similar to `near`'s and at least `threshold`; with the similarity.
pub async fn nearest(
    mut conn: ConnectionManager,
    prefix: &str,
    near: &Near,
    threshold: f32,
    since: i64,
) -> Option<(Digest, f32)> {
    let name = partition_key(prefix, &near.partition);
    let items: Vec<Vec<u8>> = call(&mut conn, "read embeddings", async |conn| {
        redis::cmd("LRANGE")
            .arg(&name)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
    })
    .await?;
    let mut vector = Vec::with_capacity(near.vector.len());
    let mut best: Option<(Digest, f32)> = None;
    for item in &items {
        let Some((stored_at, key)) = parse_head(item) else {
            continue;
        };
        if stored_at <= since {
            continue;
        }
        vector.clear();
        vector.extend(
            item[ITEM_HEAD..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        let score = similarity(&near.vector, &vector);
        if score >= threshold && best.is_none_or(|(_, s)| score > s) {
            best = Some((key, score));
        }
    }
    best
}

fn parse_head(item: &[u8]) -> Option<(i64, Digest)> {
    let stored_at = i64::from_le_bytes(item.get(..8)?.try_into().ok()?);
    let key: Digest = item.get(8..ITEM_HEAD)?.try_into().ok()?;
    Some((stored_at, key))
}

pub async fn put(
    mut conn: ConnectionManager,
    prefix: &str,
    key: Digest,
    entry: &Entry,
    near: Option<Near>,
    terms: Terms,
) {
    let Some(json) = entry.encode() else {
        return;
    };
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(answer_key(prefix, &key))
        .arg(json)
        .arg("PX")
        .arg(terms.keep().max(1))
        .ignore();
    if let Some(near) = near {
        let mut item = Vec::with_capacity(ITEM_HEAD + 4 * near.vector.len());
        item.extend_from_slice(&entry.stored_at.to_le_bytes());
        item.extend_from_slice(&key);
        near.vector
            .iter()
            .for_each(|x| item.extend_from_slice(&x.to_le_bytes()));
        let name = partition_key(prefix, &near.partition);
        pipe.cmd("LPUSH")
            .arg(&name)
            .arg(item)
            .ignore()
            .cmd("LTRIM")
            .arg(&name)
            .arg(0)
            .arg(PARTITION_CAP - 1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&name)
            .arg(terms.semantic_ttl.max(1))
            .ignore();
    }
    let _: Option<()> = call(&mut conn, "store an answer", async |conn| {
        pipe.query_async(conn).await
    })
    .await;
}

//! Where the response cache keeps its entries: answers by the digest of the request that got
//! them, and — for semantic lookups — the embeddings of last user messages, grouped in
//! partitions by the digest of everything else in their request, each pointing at its answer.
//!
//! Entries live in Redis while `[storage] redis` is set and answering, so every replica shares
//! them ([`remote`], on the rate limiter's connection); otherwise in this replica's memory
//! ([`memory`], bounded in bytes, oldest out first). What a request's digests are, and when to
//! look or store, is the pipeline's business ([`crate::pipeline::cache`]): this module keeps and
//! finds.

mod memory;
mod remote;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::canonical::ChatResponse;
use crate::clock::now_ms;
use crate::policy::limits::SharedRedis;
use crate::pricing::Nanos;
use crate::wire::openai::ChatCompletion;
use memory::Memory;

/// A SHA-256 digest: of a request (an answer's key) or of a request without its last user
/// message (a partition of embeddings).
pub type Digest = [u8; 32];

/// Embeddings a partition keeps at most, newest first: a semantic lookup compares the new
/// message with each of them.
pub const PARTITION_CAP: usize = 256;

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    /// With [`ChatResponse::raw`] when the answer came as an OpenAI chat completion to pass on
    /// as written: it is then kept as written, and nothing else of it is read.
    pub answer: ChatResponse,
    /// Who answered it.
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<String>,
    /// What it cost when it was made: what each hit saves.
    pub cost: Nanos,
    /// When it was stored, epoch ms.
    pub stored_at: i64,
}

/// An entry as it is read: the answer in the canonical model's JSON, or under `openai` as the
/// upstream wrote it ([`Entry::encode`] writes it).
#[derive(Deserialize)]
struct Read {
    answer: Option<ChatResponse>,
    openai: Option<ChatCompletion>,
    provider: Option<Arc<str>>,
    upstream_model: Option<String>,
    cost: Nanos,
    stored_at: i64,
}

impl Entry {
    /// As it is kept, in memory or in Redis: JSON, which takes a few times less memory than
    /// the entry's own strings and vectors, and counts exactly against the memory bound. An
    /// answer passed on as the upstream wrote it is kept so, which costs a copy, not an
    /// encoding, and is read whole only when a hit is served from it. `None` if it cannot be
    /// written (it always can: no maps with other keys than strings).
    ///
    /// Written field by field into one buffer: serde's struct machinery cost more than the
    /// fields, on every miss.
    fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let answer = match &self.answer.raw {
            // Read as one JSON value (its outline), so it is one.
            Some(raw) => {
                let names = self.provider.as_deref().map_or(0, str::len)
                    + self.upstream_model.as_ref().map_or(0, String::len);
                out.reserve_exact(raw.len() + names + 96);
                out.extend_from_slice(b"{\"openai\":");
                out.extend_from_slice(raw);
                Ok(())
            }
            None => {
                out.extend_from_slice(b"{\"answer\":");
                serde_json::to_writer(&mut out, &self.answer)
            }
        };
        answer
            .and_then(|()| field(&mut out, "provider", &self.provider))
            .and_then(|()| field(&mut out, "upstream_model", &self.upstream_model))
            .and_then(|()| field(&mut out, "cost", &self.cost))
            .and_then(|()| field(&mut out, "stored_at", &self.stored_at))
            .inspect_err(
                |e| tracing::warn!(error = %e, "an answer could not be encoded for the cache"),
            )
            .ok()?;
        out.push(b'}');
        Some(out)
    }

    /// An entry as [`encode`](Entry::encode) wrote it; `None`, said in the log, for bytes that
    /// are not one (written by another version, say).
    fn decode(bytes: &[u8]) -> Option<Entry> {
        let read: Read = serde_json::from_slice(bytes)
            .inspect_err(|e| tracing::warn!(error = %e, "a cached answer is unreadable; ignored"))
            .ok()?;
        let answer = match (read.answer, read.openai) {
            (Some(answer), _) => answer,
            (None, Some(openai)) => openai.into_canonical(),
            (None, None) => {
                tracing::warn!("a cached answer has no answer; ignored");
                return None;
            }
        };
        Some(Entry {
            answer,
            provider: read.provider,
            upstream_model: read.upstream_model,
            cost: read.cost,
            stored_at: read.stored_at,
        })
    }
}

/// `,"name":value`, the value as JSON.
fn field(out: &mut Vec<u8>, name: &str, value: &impl Serialize) -> serde_json::Result<()> {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(out, value)
}

/// A last user message's embedding, in the partition of its request.
#[derive(Debug, Clone)]
pub struct Near {
    pub partition: Digest,
    /// Scaled to unit length, so that cosine similarity is a dot product.
    pub vector: Vec<f32>,
}

impl Near {
    pub fn new(partition: Digest, vector: Vec<f32>) -> Near {
        Near {
            partition,
            vector: unit(vector),
        }
    }
}

/// How long entries serve, and how much memory they may take here.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// Exact hits, ms.
    pub exact_ttl: i64,
    /// Semantic hits, ms.
    pub semantic_ttl: i64,
    /// The memory bound, when entries are kept in this replica.
    pub max_bytes: usize,
}

impl Terms {
    /// How long an answer is kept: as long as either kind of hit may serve it.
    fn keep(&self) -> i64 {
        self.exact_ttl.max(self.semantic_ttl)
    }
}

/// The entries: in Redis while it answers, else in memory.
pub struct Cache {
    memory: Memory,
    redis: Option<SharedRedis>,
}

impl Cache {
    /// `redis`: the rate limiter's, when `[storage] redis` is set.
    pub fn new(redis: Option<SharedRedis>) -> Cache {
        Cache {
            memory: Memory::default(),
            redis,
        }
    }

    /// The answer stored under `key` less than `ttl` ms ago.
    pub async fn get(&self, key: &Digest, ttl: i64) -> Option<Entry> {
        let now = now_ms();
        let entry = match self.shared() {
            // Boxed: unboxed, a round trip's future would take room in every call's future.
            Some((conn, prefix)) => Box::pin(remote::get(conn, prefix, key)).await,
            None => self.memory.get(key),
        }?;
        (entry.stored_at + ttl > now).then_some(entry)
    }

    /// The answer whose embedding in `near`'s partition is the most similar to `near`'s, if it
    /// is at least `threshold` and was stored less than `ttl` ms ago; with its similarity.
    pub async fn nearest(&self, near: &Near, threshold: f32, ttl: i64) -> Option<(Entry, f32)> {
        let since = now_ms() - ttl;
        match self.shared() {
            Some((conn, prefix)) => {
                let (key, similarity) =
                    remote::nearest(conn.clone(), prefix, near, threshold, since).await?;
                let entry = remote::get(conn, prefix, &key).await?;
                Some((entry, similarity))
            }
            None => self.memory.nearest(near, threshold, since),
        }
    }

    /// Stores `entry` under `key`, and its embedding when given. In memory it is there when
    /// this returns (so the next call is a hit); the write to Redis goes on in a task of its
    /// own, off the request's path.
    pub fn put(&self, key: Digest, entry: Entry, near: Option<Near>, terms: Terms) {
        match self.shared() {
            Some((conn, prefix)) => {
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    remote::put(conn, &prefix, key, &entry, near, terms).await;
                });
            }
            None => self.memory.put(key, entry, near, terms),
        }
    }

    fn shared(&self) -> Option<(redis::aio::ConnectionManager, &str)> {
        self.redis.as_ref().and_then(SharedRedis::connection)
    }
}

/// `vector` scaled to unit length (a zero vector stays zero: similar to nothing).
fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Cosine similarity of two unit vectors; vectors of other lengths (another embedding model)
/// are not similar.
fn similarity(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::MIN;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::canonical::{Choice, FinishReason, Message, Role};

    pub fn entry(text: &str, stored_at: i64) -> Entry {
        Entry {
            answer: ChatResponse {
                id: "c1".into(),
                model: "m".into(),
                created: 1,
                choices: vec![Choice {
                    index: 0,
                    message: Message::text(Role::Assistant, text),
                    finish_reason: Some(FinishReason::Stop),
                    extra: Default::default(),
                }],
                usage: None,
                extra: Default::default(),
                extra_api: None,
                raw: None,
            },
            provider: Some("p".into()),
            upstream_model: Some("u".into()),
            cost: 1_000,
            stored_at,
        }
    }

    pub const TERMS: Terms = Terms {
        exact_ttl: 60_000,
        semantic_ttl: 120_000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn entries_read_back_as_they_were_written_in_either_form() {
        let mut canonical = entry("kept in the canonical model", 7);
        canonical.provider = Some(r#"a "quoted" \ name"#.into());
        canonical.upstream_model = None;
        let back = Entry::decode(&canonical.encode().unwrap()).unwrap();
        assert_eq!(
            back.answer.choices[0].message.joined_text(),
            "kept in the canonical model"
        );
        assert_eq!((back.cost, back.stored_at), (1_000, 7));
        assert_eq!(back.provider.as_deref(), Some(r#"a "quoted" \ name"#));
        assert_eq!(back.upstream_model, None);

        // Passed on as the upstream wrote it: kept so, and read whole at a hit.
        let body = r#"{"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"up-model","choices":[{"index":0,"message":{"role":"assistant","content":"kept as written"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"system_fingerprint":"fp_1"}"#;
        let mut written = entry("", 9);
        written.answer.choices[0].message.content.clear();
        written.answer.raw = Some(bytes::Bytes::from_static(body.as_bytes()));
        let encoded = written.encode().unwrap();
        assert!(
            encoded.windows(body.len()).any(|w| w == body.as_bytes()),
            "the body is kept as written"
        );
        let back = Entry::decode(&encoded).unwrap();
        assert_eq!(
            back.answer.choices[0].message.joined_text(),
            "kept as written"
        );
        assert_eq!(back.answer.id, "chatcmpl-9");
        assert_eq!(back.answer.model, "up-model");
        assert_eq!(back.answer.usage.as_ref().map(|u| u.output_tokens), Some(4));
        assert_eq!(
            back.answer.extra.get("system_fingerprint"),
            Some(&"fp_1".into())
        );
        assert_eq!((back.cost, back.stored_at), (1_000, 9));
        assert_eq!(back.upstream_model.as_deref(), Some("u"));

        assert!(Entry::decode(
            b"{\"provider\":null,\"upstream_model\":null,\"cost\":0,\"stored_at\":1}"
        )
        .is_none());
        assert!(Entry::decode(b"not json").is_none());
    }

    #[test]
    fn similarity_is_cosine_of_unit_vectors() {
        let a = unit(vec![3.0, 4.0]);
        assert!((similarity(&a, &unit(vec![6.0, 8.0])) - 1.0).abs() < 1e-6);
        assert!(similarity(&a, &unit(vec![-4.0, 3.0])).abs() < 1e-6);
        assert_eq!(similarity(&a, &[1.0]), f32::MIN);
    }
}

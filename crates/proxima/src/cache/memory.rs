//! The cache in this replica's memory, bounded in bytes. Every answer and every embedding
//! stored takes a slot at the back of one queue; the front of the queue is the oldest, so it
//! goes first when the bound is passed, and expired items are dropped from the front as new ones
//! come in. An answer stored again under the same key gets a new slot; the old one is skipped
//! when it reaches the front.
//!
//! Answers are kept encoded ([`Entry::encode`], as in Redis), one allocation each, and decoded
//! for a hit. As the entry's own strings and vectors, a short answer took four times the bytes
//! the bound counted (2.4 KB against 0.6: `bench/results/cache-miss-2026-12-07.md`), so a
//! bound of 256 MiB could hold 1 GiB; encoded, what is counted is what is held.

use std::collections::{hash_map, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use foldhash::HashMap;

use super::{similarity, Digest, Entry, Near, Terms, PARTITION_CAP};
use crate::clock::now_ms;

/// What a slot of the queue costs besides its item.
const SLOT_BYTES: usize = 64;

/// What an answer costs besides its encoding: its place in the map and its allocation's header.
const ANSWER_BYTES: usize = 96;

#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

/// Keyed by digests, which no caller can aim at one bucket: foldhash, not SipHash, which cost
/// more than a thousand instructions for a lookup and a store.
#[derive(Default)]
struct Inner {
    answers: HashMap<Digest, Answer>,
    partitions: HashMap<Digest, VecDeque<Vector>>,
    /// Every item in the order it was stored.
    order: VecDeque<Slot>,
    bytes: usize,
    /// Numbers the items, so that a slot knows whether its item is still the one it stored.
    next: u64,
}

struct Answer {
    /// [`Entry::encode`]'s bytes, shared with the hits being decoded from them.
    encoded: Bytes,
    /// When it stops serving any hit, epoch ms.
    expires: i64,
    bytes: usize,
    seq: u64,
}

#[derive(Clone)]
struct Vector {
    key: Digest,
    stored_at: i64,
    vector: Arc<[f32]>,
    seq: u64,
}

#[derive(Clone, Copy)]
enum Slot {
    Answer(Digest, u64),
    Vector(Digest, u64),
}

impl Memory {
    pub fn get(&self, key: &Digest) -> Option<Entry> {
        // Decoded without the lock held.
        let encoded = self.lock().answers.get(key)?.encoded.clone();
        Entry::decode(&encoded)
    }

    /// The most similar embedding of `near`'s partition stored since `since`, at least
    /// `threshold` similar, and its answer.
    pub fn nearest(&self, near: &Near, threshold: f32, since: i64) -> Option<(Entry, f32)> {
        // The vectors are taken out (shared, not copied) and compared without the lock held.
        let candidates: Vec<Vector> = {
            let inner = self.lock();
            let partition = inner.partitions.get(&near.partition)?;
            partition
                .iter()
                .filter(|v| v.stored_at > since)
                .cloned()
                .collect()
        };
        let (best, score) = candidates
            .iter()
            .map(|v| (v, similarity(&near.vector, &v.vector)))
            .filter(|(_, score)| *score >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        self.get(&best.key).map(|entry| (entry, score))
    }

    pub fn put(&self, key: Digest, entry: Entry, near: Option<Near>, terms: Terms) {
        let now = now_ms();
        let Some(encoded) = entry.encode() else {
            return;
        };
        // The encoding's own buffer, not a copy.
        let encoded = Bytes::from(encoded);
        let bytes = encoded.len() + ANSWER_BYTES + SLOT_BYTES;
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.next += 1;
        let seq = inner.next;
        let answer = Answer {
            encoded,
            expires: now + terms.keep(),
            bytes,
            seq,
        };
        if let Some(old) = inner.answers.insert(key, answer) {
            // Its slot stays in the queue, and is skipped when it comes to the front.
            inner.bytes -= old.bytes - SLOT_BYTES;
        }
        inner.bytes += bytes;
        inner.order.push_back(Slot::Answer(key, seq));
        if let Some(near) = near {
            inner.next += 1;
            let seq = inner.next;
            let vector = Vector {
                key,
                stored_at: now,
                vector: Arc::from(near.vector),
                seq,
            };
            inner.bytes += vector_bytes(&vector) + SLOT_BYTES;
            let partition = inner.partitions.entry(near.partition).or_default();
            partition.push_back(vector);
            if partition.len() > PARTITION_CAP {
                if let Some(dropped) = partition.pop_front() {
                    inner.bytes -= vector_bytes(&dropped);
                }
            }
            inner.order.push_back(Slot::Vector(near.partition, seq));
        }
        inner.shrink(now, terms.max_bytes, terms.semantic_ttl);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn vector_bytes(vector: &Vector) -> usize {
    vector.vector.len() * 4 + 48
}

impl Inner {
    /// Drops items from the front of the queue while they are expired or the bound is passed.
    /// One map lookup per slot: at the bound, every store evicts.
    fn shrink(&mut self, now: i64, max_bytes: usize, semantic_ttl: i64) {
        while let Some(&slot) = self.order.front() {
            let over = self.bytes > max_bytes;
            // The bytes its item took, when the slot still holds it.
            let freed = match slot {
                Slot::Answer(key, seq) => match self.answers.entry(key) {
                    hash_map::Entry::Occupied(held) if held.get().seq == seq => {
                        if !over && held.get().expires > now {
                            break;
                        }
                        held.remove().bytes - SLOT_BYTES
                    }
                    // Stored again since: this slot no longer holds it.
                    _ => 0,
                },
                Slot::Vector(partition_key, seq) => match self.partitions.get_mut(&partition_key) {
                    Some(partition) if partition.front().is_some_and(|v| v.seq == seq) => {
                        let expired = partition
                            .front()
                            .is_some_and(|v| v.stored_at + semantic_ttl <= now);
                        if !over && !expired {
                            break;
                        }
                        let freed = partition.pop_front().map_or(0, |v| vector_bytes(&v));
                        if partition.is_empty() {
                            self.partitions.remove(&partition_key);
                        }
                        freed
                    }
                    // Pushed out of a full partition already.
                    _ => 0,
                },
            };
            self.order.pop_front();
            self.bytes -= SLOT_BYTES + freed;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{entry, TERMS};
    use super::*;

    fn key(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn the_oldest_entries_go_first_past_the_bound() {
        let memory = Memory::default();
        let terms = Terms {
            max_bytes: 4_000,
            ..TERMS
        };
        for n in 0..40 {
            memory.put(key(n), entry(&"x".repeat(100), now_ms()), None, terms);
            assert!(memory.bytes() <= 4_000, "{} bytes", memory.bytes());
        }
        assert!(memory.get(&key(0)).is_none());
        assert!(memory.get(&key(39)).is_some());
        // Stored again: the newest copy is the one served, and counted once.
        let before = memory.bytes();
        memory.put(key(39), entry("again", now_ms()), None, terms);
        assert_eq!(
            memory.get(&key(39)).unwrap().answer.choices[0]
                .message
                .joined_text(),
            "again"
        );
        assert!(memory.bytes() <= before + SLOT_BYTES);
    }

    #[test]
    fn expired_items_are_dropped_as_new_ones_come() {
        let memory = Memory::default();
        let terms = Terms {
            exact_ttl: 1,
            semantic_ttl: 1,
            ..TERMS
        };
        let near = || Near::new(key(9), vec![1.0, 0.0]);
        memory.put(key(1), entry("a", now_ms()), Some(near()), terms);
        std::thread::sleep(std::time::Duration::from_millis(5));
        memory.put(key(2), entry("b", now_ms()), None, terms);
        let inner = memory.lock();
        assert!(!inner.answers.contains_key(&key(1)));
        assert!(!inner.partitions.contains_key(&key(9)));
        assert_eq!(inner.order.len(), 1);
    }

    #[test]
    fn the_nearest_answer_above_the_threshold_is_found_within_its_partition() {
        let memory = Memory::default();
        memory.put(
            key(1),
            entry("north", now_ms()),
            Some(Near::new(key(7), vec![1.0, 0.1])),
            TERMS,
        );
        memory.put(
            key(2),
            entry("east", now_ms()),
            Some(Near::new(key(7), vec![0.1, 1.0])),
            TERMS,
        );
        let query = Near::new(key(7), vec![1.0, 0.0]);
        let (found, score) = memory.nearest(&query, 0.9, 0).unwrap();
        assert_eq!(found.answer.choices[0].message.joined_text(), "north");
        assert!(score > 0.99);
        assert!(memory.nearest(&query, 0.999, 0).is_none());
        assert!(memory
            .nearest(&Near::new(key(8), vec![1.0, 0.0]), 0.5, 0)
            .is_none());
        // Stored too long ago for the semantic ttl.
        assert!(memory.nearest(&query, 0.9, now_ms() + 1).is_none());
    }
}

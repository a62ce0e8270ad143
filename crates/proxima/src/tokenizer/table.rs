//! The layout of the compact vocabulary, shared by the build script that writes it and the
//! tokenizer that reads it, so that both place a token in the same slot. Nothing here may use
//! the crate: `build.rs` includes this file on its own.
//!
//! Three little-endian arrays, made at build time and compiled into the binary:
//! - `o200k_bytes`: every token's bytes, one after another in rank order;
//! - `o200k_ends`: per rank, a `u32` where its bytes end (a rank's start is the previous end);
//! - `o200k_index`: `1 << INDEX_BITS` `u32` slots, each empty (0) or a token's [`entry`]: its
//!   rank plus one, with a tag of its hash above. A lookup starts at the slot [`locate`] gives
//!   and goes on to the next slots in turn (open addressing, linear probing) until an empty
//!   one; only a slot with the right tag costs a look at the token's bytes.

// The build script writes entries and the tokenizer reads them: each uses a part of this.
#![allow(dead_code)]

/// The index has `1 << INDEX_BITS` slots: 524,288 for 199,998 tokens, so a lookup of a piece
/// that is not a token stops at an empty slot after a probe or two.
pub const INDEX_BITS: u32 = 19;

/// Bits of a slot that hold the rank plus one; the rest hold the tag.
pub const RANK_BITS: u32 = 18;

/// Where looking up `bytes` starts, and the tag its entry has. The hash takes the bytes eight
/// at a time (the last word padded with zeros), each word mixed in by a multiplication and a
/// rotation, and the length last; the slot is its top bits, the tag the bits below. Fixed, not
/// seeded: the table is made once at build time, and its longest run of full slots bounds any
/// lookup (the build checks it).
pub fn locate(bytes: &[u8]) -> (usize, u32) {
    let mix = |hash: u64, word: u64| {
        (hash ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31)
    };
    let mut hash: u64 = 0x243f_6a88_85a3_08d3;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    // The last bytes as a little-endian word, built up rather than copied: a copy of a length
    // not known in advance is a call to `memcpy`, for every lookup.
    let rest = words.remainder();
    if !rest.is_empty() {
        hash = mix(
            hash,
            rest.iter()
                .rev()
                .fold(0, |word, &b| word << 8 | u64::from(b)),
        );
    }
    hash = (hash ^ bytes.len() as u64).wrapping_mul(0xd6e8_feb8_6659_fd93);
    let slot = (hash >> (64 - INDEX_BITS)) as usize;
    let tag = (hash >> (64 - INDEX_BITS - (32 - RANK_BITS))) as u32 & ((1 << (32 - RANK_BITS)) - 1);
    (slot, tag)
}

/// The slot's value for the token of rank `rank` whose tag is `tag`.
pub fn entry(rank: u32, tag: u32) -> u32 {
    (rank + 1) | tag << RANK_BITS
}

/// The rank an entry holds, and its tag; `None` for an empty slot.
pub fn read_entry(entry: u32) -> Option<(u32, u32)> {
    (entry != 0).then(|| ((entry & ((1 << RANK_BITS) - 1)) - 1, entry >> RANK_BITS))
}

/// The slot after `slot`, wrapping around.
pub fn next_slot(slot: usize) -> usize {
    (slot + 1) & ((1 << INDEX_BITS) - 1)
}

//! Writes the token counter's vocabulary (OpenAI's `o200k_base`, as the `tiktoken-rs` crate
//! ships it) into `OUT_DIR` in the compact layout of `src/tokenizer/table.rs`, with its
//! pre-tokenizing pattern. The binary compiles them in as static data: counting needs no heap
//! for the vocabulary (4.3 MB of read-only pages, touched as used, against 43 MiB of hash maps
//! built at start by `tiktoken-rs`), and nothing to load.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

#[path = "src/tokenizer/table.rs"]
mod table;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/tokenizer/table.rs");
    let bpe = tiktoken_rs::o200k_base().expect("tiktoken-rs's o200k_base vocabulary");

    // Ranks run from 0 without gaps up to the special tokens, the first of which is past a
    // gap: the ordinary tokens are those decoded before the first rank that decodes to nothing.
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    while let Ok(token) = bpe.decode_bytes(&[tokens.len() as u32]) {
        bytes.extend_from_slice(&token);
        ends.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        tokens.push(token);
    }
    assert!(
        tokens.len() > 190_000,
        "o200k_base has 199,998 ordinary tokens"
    );
    assert!(
        tokens.len() * 2 < 1 << table::INDEX_BITS,
        "the index is too small"
    );
    assert!(
        tokens.len() < (1 << table::RANK_BITS) - 1,
        "ranks need more bits"
    );
    // The first special token (`<|endoftext|>`, 199,999) decodes: stop before it.
    let special = b"<|endoftext|>";
    assert!(
        tokens.iter().all(|t| t != special),
        "a special token was read as ordinary"
    );

    let mut index = vec![0u32; 1 << table::INDEX_BITS];
    let mut longest_probe = 0;
    for (rank, token) in tokens.iter().enumerate() {
        let (mut slot, tag) = table::locate(token);
        let mut probe = 0;
        while index[slot] != 0 {
            slot = table::next_slot(slot);
            probe += 1;
        }
        longest_probe = longest_probe.max(probe);
        index[slot] = table::entry(rank as u32, tag);
    }
    // A hash that spread the tokens badly would make lookups slow, not wrong.
    assert!(
        longest_probe < 64,
        "a run of {longest_probe} full slots: change the hash"
    );
    let index: Vec<u8> = index.iter().flat_map(|v| v.to_le_bytes()).collect();

    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    std::fs::write(out.join("o200k_bytes"), bytes).unwrap();
    std::fs::write(out.join("o200k_ends"), ends).unwrap();
    std::fs::write(out.join("o200k_index"), index).unwrap();
    std::fs::write(out.join("o200k_pattern"), tiktoken_rs::O200K_BASE_PAT_STR).unwrap();
}

//! Writes the token counter's vocabulary (OpenAI's `o200k_base`, as the `tiktoken-rs` crate
//! ships it) into `OUT_DIR` in the compact layout of `src/tokenizer/table.rs`, with its
//! pre-tokenizing pattern. The binary compiles them in as static data: counting needs no heap
//! for the vocabulary (4.3 MB of read-only pages, touched as used, against 43 MiB of hash maps
//! built at start by `tiktoken-rs`), and nothing to load.
//!
//! Also gives the linker of a release build the order of the binary's functions
//! (`link-order.txt`): see [`link_order`].

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

#[path = "src/tokenizer/table.rs"]
mod table;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/tokenizer/table.rs");
    link_order();
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

/// Lays out the functions a running gateway executes (at start, and on plain and streamed
/// requests, as `bench/link-order.sh` records them in `link-order.txt`) side by side at the
/// head of the binary's code, hottest first. The kernel maps code into the process 64 KiB at a
/// time around each page it runs: scattered through the binary's 19 MB of code, these 3 MB of
/// functions kept 12 MiB of it resident under load; side by side, 5 to 6. A request also runs
/// from fewer pages, which a cold one feels (`bench/results/memory-2026-12-06.md`).
///
/// Also packs the relative relocations (DT_RELR): the loader reads 41,000 of them at start,
/// 1 MB in the usual form, 12 KB packed.
///
/// Only for release builds of the `proxima` binary, made on x86_64 Linux for itself, and not
/// with `PROXIMA_LINK_ORDER=0`. Not every linker reads an ordering file (LLD, Rust's default
/// there since 1.90, does; GNU ld does not), and a packed binary needs glibc 2.36 or later:
/// a small program is linked with the flags and run first, and a flag it fails with is left
/// out. A function the file names that a build no longer has is skipped, so a stale file costs
/// only memory, never a build.
fn link_order() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=PROXIMA_LINK_ORDER");
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("HOST") != var("TARGET")
        || var("PROXIMA_LINK_ORDER") == "0"
    {
        return;
    }
    let Some((symbols, script)) = ordering_files() else {
        println!("cargo:warning=cannot read link-order.txt: the release binary's code is not laid out by use");
        return;
    };
    let order = [
        format!("-Wl,--symbol-ordering-file={}", symbols.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
        format!("-Wl,-T,{}", script.display()),
    ];
    let mut packed = order.to_vec();
    packed.push("-Wl,-z,pack-relative-relocs".to_string());
    let flags = if links_and_runs(&packed) {
        packed
    } else if links_and_runs(&order) {
        order.to_vec()
    } else {
        println!("cargo:warning=the linker takes no ordering file: the release binary's code is not laid out by use");
        return;
    };
    for flag in flags {
        println!("cargo:rustc-link-arg-bin=proxima={flag}");
    }
}

/// `link-order.txt` as the linker takes it, written into `OUT_DIR`: a symbol ordering file and
/// a linker script. ThinLTO renames a function it makes visible to other modules `NAME.llvm.N`,
/// N a hash of the whole module, which any change to the module (one to a test, even) changes:
/// a symbol ordering file, which names symbols exactly, lost 200 of 3,700 names to an edit
/// elsewhere in the crate. Those functions go instead into the script, whose patterns leave N
/// out, in the order listed. The script's output section is `.text`, where the others join
/// them, so that tools that take only `.text` for code (valgrind) still see every function.
fn ordering_files() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let list =
        std::fs::read_to_string(Path::new(&var("CARGO_MANIFEST_DIR")).join("link-order.txt"))
            .ok()?;
    let mut symbols = String::new();
    let mut script = String::from("SECTIONS {\n  .text : {\n");
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let renamed = name
            .rsplit_once(".llvm.")
            .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()));
        match renamed {
            // Glob characters never occur in mangled names; a name with one is left out.
            Some((base, _)) if !base.contains(['*', '?', '[', ']', '\\', '(', ')', ' ']) => {
                script.push_str(&format!("    *(.text.{base}.llvm.*)\n"));
            }
            Some(_) => {}
            None => {
                symbols.push_str(name);
                symbols.push('\n');
            }
        }
    }
    script.push_str("  }\n}\nINSERT BEFORE .init;\n");
    let out = std::path::PathBuf::from(var("OUT_DIR"));
    let (symbols_file, script_file) = (out.join("link-order.symbols"), out.join("link-order.ld"));
    std::fs::write(&symbols_file, symbols).ok()?;
    std::fs::write(&script_file, script).ok()?;
    Some((symbols_file, script_file))
}

/// A variable cargo gives the build script, or "" when it is not set.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Whether `fn main() {}`, linked with these flags by the linker this build uses, runs.
fn links_and_runs(flags: &[String]) -> bool {
    let out = Path::new(&var("OUT_DIR")).join("link-probe");
    let source = out.with_extension("rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut rustc = std::process::Command::new(var("RUSTC"));
    rustc.arg("--target").arg(var("TARGET")).arg("-o").arg(&out);
    rustc.arg(&source);
    let linker = var("RUSTC_LINKER");
    if !linker.is_empty() {
        rustc.arg(format!("-Clinker={linker}"));
    }
    // The build's own flags (a linker chosen there, say), as cargo hands them to rustc.
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    rustc.args(rustflags.split('\x1f').filter(|f| !f.is_empty()));
    for flag in flags {
        rustc.arg(format!("-Clink-arg={flag}"));
    }
    let linked = rustc
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    linked
        && std::process::Command::new(&out)
            .status()
            .is_ok_and(|s| s.success())
}

#!/usr/bin/env bash
# Counting tokens: microseconds per text (prose, code, other scripts, one long run of letters)
# with the gateway's tokenizer and with tiktoken-rs, and the memory each takes once ready
# (crates/proxima/examples/tokenizer_bench.rs). Prints Markdown; OUT=FILE also writes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p proxima --example tokenizer_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/tokenizer_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

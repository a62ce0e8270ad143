#!/usr/bin/env bash
# PII masking: microseconds to find and mask every kind in an ordinary prompt without personal
# data (2 KB and 20 KB), in one with several values, and to restore an answer whole and
# streamed (crates/proxima/examples/pii_bench.rs). Prints Markdown; OUT=FILE also writes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p proxima --example pii_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/pii_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

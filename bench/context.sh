#!/usr/bin/env bash
# Conversation context: how long building a turn's prompt takes against the history's length
# (20 to 100,000 items), tokens sent upstream over a 200-turn conversation with `summarize`
# against resending the whole history, and (with LOCOMO=) recall on the LoCoMo dataset.
#   bench/context.sh                       # SQLite file in a temp dir
#   PROXIMA_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432/test bench/context.sh
#   LOCOMO=path/to/locomo10.json bench/context.sh    # adds the recall-quality table
#   SIZES=20,1000 bench/context.sh        # fewer history lengths (100,000 takes minutes to store)
# Prints Markdown; OUT=FILE also writes it there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p proxima --example context_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/context_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

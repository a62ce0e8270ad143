#!/usr/bin/env bash
# Guardrails: the built-in prompt-injection rules on prompts of 50 B to 100 KB, and deny_output
# on a streamed answer, per chunk (crates/proxima/examples/guardrails_bench.rs).
#   bench/guardrails.sh            # prints Markdown; OUT=FILE also writes it there
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p proxima --example guardrails_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/guardrails_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

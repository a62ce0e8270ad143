#!/usr/bin/env bash
# Response cache: latency p50/p99 and CPU per request of exact hits (whole and streamed),
# semantic hits, misses and uncached calls, through the real server one request at a time
# (crates/proxima/examples/cache_bench.rs).
#   bench/cache.sh                                            # entries in memory
#   PROXIMA_BENCH_REDIS=redis://127.0.0.1:6379 bench/cache.sh # entries in Redis
# Prints Markdown; OUT=FILE also writes it there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p proxima --example cache_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/cache_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

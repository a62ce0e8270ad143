#!/usr/bin/env bash
# Ledger retention: insert-batch latency of the usage ledger writer (2,000 rows/s, a batch
# every 200 ms) alone and while a purge pass moves old rows into daily rollups, and the purge's
# rows per second, on SQLite and on PostgreSQL (crates/proxima/examples/retention_bench.rs).
#   bench/retention.sh                                   # SQLite file in a temp dir, then PostgreSQL
#   PROXIMA_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432/test bench/retention.sh
#   DAYS=5 ROWS_PER_DAY=200000 RPS=2000 QUIET=20 SKIP_POSTGRES=1 bench/retention.sh
# Prints Markdown; OUT=FILE also writes it there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p proxima --example retention_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/retention_bench"
POSTGRES="${PROXIMA_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
run() {
    PROXIMA_BENCH_DATABASE="" "$BIN"
    [ -n "${SKIP_POSTGRES:-}" ] || { echo; PROXIMA_BENCH_DATABASE="$POSTGRES" "$BIN"; }
}
if [ -n "${OUT:-}" ]; then run | tee "$OUT"; else run; fi

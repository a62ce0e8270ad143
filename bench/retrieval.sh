#!/usr/bin/env bash
# Retrieval: recall@1/@5 and MRR@10 of BM25, vectors (all-MiniLM-L6-v2, the `local` provider)
# and hybrid search on SQuAD v1.1 dev; p50/p99 of a hybrid ranking over 100,000 chunks and the
# index's memory; chunks a second through the local embedder.
#   bench/retrieval.sh                               # SQuAD at bench/data/dev-v1.1.json
#   SQUAD=path/to/dev-v1.1.json bench/retrieval.sh
#   QUESTIONS=1000 CHUNKS=100000 CHUNKS_EMBEDDED=512 bench/retrieval.sh   # the defaults
# The model comes from $PROXIMA_MINILM_DIR, else models/all-minilm-l6-v2 (scripts/fetch-minilm);
# corpus vectors are cached in bench/data/ (BENCH_DATA=), so only the first run embeds them.
# Prints Markdown; OUT=FILE also writes it there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SQUAD="${SQUAD:-bench/data/dev-v1.1.json}"
if [ ! -s "$SQUAD" ]; then
    cat >&2 <<MSG
retrieval.sh: no SQuAD v1.1 dev set at $SQUAD.
  Put dev-v1.1.json (the SQuAD v1.1 dev set, 4.8 MB, from the dataset's site) there, or name
  it with SQUAD=path. Without a download, bench/squad-from-explorer.py rebuilds it from the
  dataset's explorer pages: see "bench/retrieval.sh" in bench/README.md.
MSG
    exit 2
fi
MODEL="${PROXIMA_MINILM_DIR:-models/all-minilm-l6-v2}"
if [ ! -s "$MODEL/model.safetensors" ]; then
    echo "retrieval.sh: no all-MiniLM-L6-v2 in $MODEL (scripts/fetch-minilm fetches it):" \
        "only the search-speed table will be measured" >&2
fi
cargo build --release -p proxima --example retrieval_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/retrieval_bench"
if [ -n "${OUT:-}" ]; then "$BIN" | tee "$OUT"; else "$BIN"; fi

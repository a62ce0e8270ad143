#!/usr/bin/env bash
# The two-core goal (with two cores for the gateway, throughput at least 1.8x one core's) on a
# machine of two cores, where the load generator and the mock upstream cannot have cores of
# their own. What it measures instead is the gateway's CPU per request:
#   one  the gateway pinned to core 0 (one worker thread), oha and the mock on core 1;
#   two  the gateway on cores 0 and 1 (two worker threads), oha beside it on both, the
#        mock on core 1 (as in "one").
# A CPU-bound gateway with two cores of its own would serve 2 x one / two times one core's
# throughput: the "projected scaling" printed last. Sharing its cores with the load makes
# "two" pessimistic (more cache misses, more migrations), never optimistic.
# Non-streaming chat, no keys, ledger on (SQLite). ROUNDS alternating rounds (3), DURATION per
# run (8s), CONCURRENCY (32); SKIP_BUILD=1 uses the binaries already built; PROXIMA_BINARY
# measures another build of the gateway.
# Unpaced, "one" is saturated and "two" is not (oha takes part of its cores), and a worker that
# runs out of work sleeps and must be woken, which costs CPU per request by itself. RATE=N
# paces oha instead: "two" at N req/s and "one" at N/2, the same load per worker (N must be
# below what "two" can serve: each run says how close it came).
#   bench/scaling.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION="${DURATION:-8s}"
# shellcheck source=bench/common.sh
source bench/common.sh
PROXIMA="${PROXIMA_BINARY:-$BIN/proxima}"
PORT="$(free_port)"
printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndatabase = "sqlite://%s/ledger.db"\n' "$PORT" "$WORK" >"$WORK/proxima.toml"
printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT" >>"$WORK/proxima.toml"
printf '[models.bench]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n' >>"$WORK/proxima.toml"
printf '{"model":"bench","messages":[{"role":"user","content":"%s"}]}' \
    "Proxima benchmark request: a short user message of about one hundred and seventy characters, echoed back by the mock upstream so that the answer is a typical small reply." \
    >"$WORK/body.json"
URL="http://127.0.0.1:$PORT/v1/chat/completions"

# run CONFIG GATEWAY_CORES LOAD_CORES: one measured run; appends "CONFIG req/s cpu_us" to results.
run() {
    local config=$1 cores=$2 load=$3 rate=${4:-} pid t0 t1
    taskset -c "$cores" "$PROXIMA" serve --config "$WORK/proxima.toml" >"$WORK/proxima.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health/live" && break; sleep 0.1; done
    taskset -c "$load" oha --no-tui -z 3s -c 64 -m POST -H 'content-type: application/json' \
        -D "$WORK/body.json" "$URL" >/dev/null 2>&1
    t0="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    taskset -c "$load" oha --no-tui -z "$DURATION" -c "$CONCURRENCY" ${rate:+-q "$rate"} --output-format json -m POST \
        -H 'content-type: application/json' -D "$WORK/body.json" "$URL" >"$WORK/run.json" 2>/dev/null
    t1="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$WORK/run.json" "$config" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY' | tee -a "$WORK/results"
import json, sys
r = json.load(open(sys.argv[1]))
config, t0, t1, tck = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
codes = r["statusCodeDistribution"]
n = sum(codes.values())
if set(codes) != {"200"}:
    sys.exit(f"{config}: answers other than 200: {codes}")
print(config, round(r["summary"]["requestsPerSec"]), round((t1 - t0) / tck * 1e6 / n, 1))
PY
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round" >&2
    run one 0 1 "${RATE:+$((RATE / 2))}"
    run two 0,1 0,1 "${RATE:-}"
done
RATE="${RATE:-}" python3 - "$WORK/results" <<'PY'
import os, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def median(config, column):
    return statistics.median(float(r[column]) for r in rows if r[0] == config)
one, two = median("one", 2), median("two", 2)
print("| gateway | throughput (req/s, median) | gateway CPU per request (median) |")
print("|---|---:|---:|")
print(f"| one core (load on the other) | {median('one', 1):,.0f} | {one:.1f} µs |")
print(f"| two cores (shared with the load) | {median('two', 1):,.0f} | {two:.1f} µs |")
rate = os.environ.get("RATE")
paced = f", paced: two at {rate} req/s, one at half" if rate else ""
print(f"\nprojected scaling with two cores of its own: {2 * one / two:.2f}x (goal: 1.8x){paced}")
PY

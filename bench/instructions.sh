#!/usr/bin/env bash
# User-space instructions per chat request under callgrind: repeatable whatever else the machine
# is doing, unlike throughput. The gateway serves 300 warm-up requests, then 2000 counted ones
# (c=16) against mock-upstream; every thread counts (the ledger writer and SQLite's included).
#   bench/instructions.sh core|accounts [PROXIMA_BINARY]
#     core      no keys (anonymous caller), ledger on (SQLite)
#     accounts  a virtual key with rpm, tpm and a daily budget, in a team with its own rpm, tpm
#               and budget, on a model with rpm/tpm; ledger on
#     redis     as accounts, with the counters in Redis (REDIS_URL, default redis://127.0.0.1:6379)
#     before    the config `core` uses, without [storage], for a gateway older than issue 5
# Binaries from ${CARGO_TARGET_DIR:-target}/release unless PROXIMA_BINARY is given.
# KEEP_PROFILE=FILE keeps the callgrind profile, for callgrind_annotate.
# STREAM=1 streams the answers (one SSE event per word of the echoed message, about 30), all at
# once unless EVENT_GAP=DURATION spaces them as a model writes tokens (EVENT_GAP=5ms, say).
# FEATURES=a,b,... switches features on over the mode's config (bench/features.sh).
# NUMBERED=1 sends FEATURES=cache's numbered bodies without the cache: what a miss is compared with.
# CONCURRENCY=16 connections oha keeps busy.
# CALLGRIND_ARGS="..." more options for callgrind: --dump-instr=yes, say, with KEEP_PROFILE, for
# bench/footprint.py (the code a request runs, in distinct 64-byte lines).
# CACHE_SIM=1 also simulates the data and instruction caches of one core (32 KiB L1, and a 1 MiB
# L2 as the last level: on a shared host the L3 is other tenants' too) and prints misses per
# request: how much of what a request touches has left the caches since, which grows with the
# requests in flight and which instructions do not show.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/features.sh
source bench/features.sh
# shellcheck source=bench/keys.sh
source bench/keys.sh
MODE="${1:-core}"
BIN="${CARGO_TARGET_DIR:-target}/release"
PROXIMA="${2:-$BIN/proxima}"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT="$(free_port)"; PORT="$(free_port)"
"$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --latency 0ms --event-gap "${EVENT_GAP:-0ms}" \
    --no-record >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
{
    printf '[server]\nlisten = "127.0.0.1:%s"\n' "$PORT"
    [ "$MODE" = accounts ] || [ "$MODE" = redis ] && printf 'master_key = "bench-master-key"\n'
    [ "$MODE" != before ] && printf '[storage]\ndatabase = "sqlite://%s/ledger.db"\n' "$WORK"
    [ "$MODE" = redis ] && printf 'redis = "%s"\n' "${REDIS_URL:-redis://127.0.0.1:6379}"
    printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT"
    printf '[models.bench]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
    [ "$MODE" = accounts ] || [ "$MODE" = redis ] && printf 'rpm = 100000000\ntpm = 100000000000\n'
    feature_toml
} >"$WORK/proxima.toml"
SIM=()
[ "${CACHE_SIM:-0}" = 1 ] && SIM=(--cache-sim=yes --D1=32768,8,64 --I1=32768,8,64 --LL=1048576,8,64)
# shellcheck disable=SC2206 # split on purpose: several options
[ -n "${CALLGRIND_ARGS:-}" ] && SIM+=($CALLGRIND_ARGS)
valgrind --tool=callgrind "${SIM[@]}" --callgrind-out-file="$WORK/cg.%p.out" \
    "$PROXIMA" serve --config "$WORK/proxima.toml" >"$WORK/cg.log" 2>&1 &
CG_PID=$!
PIDS+=("$CG_PID")
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health/live" && break; sleep 0.2; done
# With token limits the tokenizer loads in the background at start (hundreds of millions of
# instructions under callgrind): let it finish before counting. Without them it never loads.
if [ "$MODE" = accounts ] || [ "$MODE" = redis ]; then
    for _ in $(seq 1 600); do grep -q "tokenizer loaded" "$WORK/cg.log" && break; sleep 0.2; done
fi
AUTH=()
if [ "$MODE" = accounts ] || [ "$MODE" = redis ]; then
    AUTH=(-H "authorization: Bearer $(bench_key "$PORT" bench-master-key)")
fi
TEXT="Proxima benchmark request: a short user message of about one hundred and seventy characters, echoed back by the mock upstream so that the answer is a typical small reply."
STREAM_FIELD=""
[ "${STREAM:-0}" = 1 ] && STREAM_FIELD=',"stream":true'
URL="http://127.0.0.1:$PORT/v1/chat/completions"
if numbered_bodies; then
    cache_bodies "$TEXT" "$STREAM_FIELD" >"$WORK/bodies"
    BODY=(-Z "$WORK/bodies")
else
    printf '{"model":"bench","messages":[{"role":"user","content":"%s"}]%s}' "$TEXT" "$STREAM_FIELD" >"$WORK/body.json"
    BODY=(-D "$WORK/body.json")
fi
load() { oha --no-tui -m POST -H 'content-type: application/json' "${AUTH[@]}" "${BODY[@]}" -n "$1" -c "${CONCURRENCY:-16}" "$URL" 2>&1; }
load 300 >/dev/null
callgrind_control -z "$CG_PID" >/dev/null
# The status line, `[200] N responses`: not a histogram line such as `1.2 ms [200] |■■`, whose
# bucket happens to hold 200 requests.
OK="$(load 2000 | awk '$1 == "[200]" && $3 == "responses" {print $2}')"
sleep 1
callgrind_control -d "$CG_PID" >/dev/null
sleep 1
IR="$(grep -hE '^(summary|totals):' "$WORK"/cg."$CG_PID".out.1 | head -1 | awk '{print $2}')"
cached && cache_verdicts "$WORK/ledger.db"
[ -n "${KEEP_PROFILE:-}" ] && cp "$WORK"/cg."$CG_PID".out.1 "$KEEP_PROFILE"
echo "$MODE$([ "${STREAM:-0}" = 1 ] && echo ', streamed')${EVENT_GAP:+, events $EVENT_GAP apart}${FEATURES:+, $FEATURES}${CONCURRENCY:+, c=$CONCURRENCY}: $((IR / OK)) instructions per request ($OK answered)"
if [ "${CACHE_SIM:-0}" = 1 ]; then
    # The events line names the summary's columns: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw.
    awk -v n="$OK" '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^(summary|totals):/ && !done {
            done = 1
            printf "  per request: L1 data misses %.0f, L2 data misses %.0f, L1 instruction misses %.0f, L2 instruction misses %.0f\n",
                ($(col["D1mr"] + 1) + $(col["D1mw"] + 1)) / n, ($(col["DLmr"] + 1) + $(col["DLmw"] + 1)) / n,
                $(col["I1mr"] + 1) / n, $(col["ILmr"] + 1) / n
        }' "$WORK"/cg."$CG_PID".out.1
fi

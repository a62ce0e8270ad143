#!/usr/bin/env bash
# What a gateway adds to the first byte of a stream, one request at a time: through the gateway,
# through nginx's `proxy_pass`, and straight to the mock upstream, each a new curl (a new
# connection), as bench/run.sh's first-chunk figure.
#
# One request at a time, the gateway runs from cold caches, and one binary's runs on this kind
# of VM move by more than two builds differ. So up to two builds run side by side (both on core
# 0, with nginx; the mock and curl on core 1) and the requests go to each in turn, ROUNDS times:
# A, B, nginx, direct. Default config: no keys, the ledger on.
#
#   bench/first-chunk.sh [BINARY_A [BINARY_B]]   # default: this tree's release build alone
#   ROUNDS=300 SKIP_BUILD=1 OUT=FILE
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[first-chunk %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
ROUNDS="${ROUNDS:-300}" # before common.sh, whose default is for other scripts
# shellcheck source=bench/common.sh
source bench/common.sh
SIDES=(A)
BINARY_A="${1:-$BIN/proxima}"
BINARY_B="${2:-}"
[ -n "$BINARY_B" ] && SIDES+=(B)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$MOCK_PORT/" && break; sleep 0.1; done

# shellcheck source=bench/nginx.sh
source bench/nginx.sh
NGINX_PORT="$(free_port)"
nginx_conf "$NGINX_PORT" on >"$WORK/nginx.conf"
taskset -c 0 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)

declare -A URL
URL[direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
URL[nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
for side in "${SIDES[@]}"; do
    binary="BINARY_$side"
    port="$(free_port)"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n' "$port"
        printf '[storage]\ndatabase = "sqlite://%s/ledger-%s.db"\n' "$WORK" "$side"
        printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT"
        printf '[models.bench]\ntargets = [{ provider = "up", model = "bench-upstream" }]\n'
    } >"$WORK/$side.toml"
    taskset -c 0 "${!binary}" serve --config "$WORK/$side.toml" >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
    URL[$side]="http://127.0.0.1:$port/v1/chat/completions"
done
printf '{"model":"bench","stream":true,"messages":[{"role":"user","content":"%s"}]}' \
    "Proxima benchmark request: please summarise the following sentence in one short line. The quick brown fox jumps over the lazy dog while the gateway forwards each byte fast." \
    >"$WORK/stream.json"
ORDER=("${SIDES[@]}" nginx direct)
for side in "${ORDER[@]}"; do
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            --data-binary @"$WORK/stream.json" "${URL[$side]}")" = 200 ] && break
        sleep 0.1
    done
done

first_byte() { # side -> "side seconds"
    taskset -c 1 curl -N -s -o /dev/null -w "$1 %{time_starttransfer}\n" \
        -H 'content-type: application/json' --data-binary @"$WORK/stream.json" "${URL[$1]}"
}
log "warm-up: 50 requests each"
for _ in $(seq 1 50); do for side in "${ORDER[@]}"; do first_byte "$side"; done; done >/dev/null
log "$ROUNDS rounds of ${ORDER[*]}"
for _ in $(seq 1 "$ROUNDS"); do for side in "${ORDER[@]}"; do first_byte "$side"; done; done >"$WORK/times.txt"

python3 - "$WORK/times.txt" "$BINARY_A" "$BINARY_B" <<'PY' | tee "${OUT:-/dev/null}"
import collections, sys
times = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, seconds = line.split()
    times[side].append(float(seconds) * 1e6)
def q(side, p):
    v = sorted(times[side])
    return v[min(len(v) - 1, int(len(v) * p))]
names = {"A": f"proxima A (`{sys.argv[2]}`)", "B": f"proxima B (`{sys.argv[3]}`)",
         "nginx": "nginx `proxy_pass`", "direct": "direct (the mock)"}
print(f"| {len(times['direct'])} rounds | first byte p50 | p90 | added p50 over direct |")
print("|---|---:|---:|---:|")
for side in ("A", "B", "nginx", "direct"):
    if times[side]:
        print(f"| {names[side]} | {q(side, .5):,.0f} µs | {q(side, .9):,.0f} µs | "
              f"{q(side, .5) - q('direct', .5):+,.0f} µs |")
PY

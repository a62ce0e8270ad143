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
# A second table sends the same requests from one client process, one after another (each on a
# new connection), and times both the first byte (the response head) and the first `data:`
# event. A new curl for each request leaves the gateway idle for milliseconds in between; one
# process keeps requests about half a millisecond apart, so the gateway's caches stay warmer.
#
#   bench/first-chunk.sh [BINARY_A [BINARY_B]]   # default: this tree's release build alone
#   ROUNDS=300 SKIP_BUILD=1 OUT=FILE
#   GATEWAY_CORES=0,1 runs the gateways on both cores (one worker each per core; nginx and the
#   mock stay where they are), for what a second core changes
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
    taskset -c "${GATEWAY_CORES:-0}" "${!binary}" serve --config "$WORK/$side.toml" >"$WORK/$side.log" 2>&1 &
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

log "$ROUNDS rounds of ${ORDER[*]}, from one client process"
PORTS=()
for side in "${ORDER[@]}"; do PORTS+=("$side=$(sed -E 's#.*:([0-9]+)/.*#\1#' <<<"${URL[$side]}")"); done
taskset -c 1 python3 - "$WORK/stream.json" "$ROUNDS" "${PORTS[@]}" <<'PY' | tee -a "${OUT:-/dev/null}"
import socket, statistics, sys, time
body = open(sys.argv[1], "rb").read()
rounds, sides = int(sys.argv[2]), [a.split("=") for a in sys.argv[3:]]
request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)) + body
def stream(port):
    start = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(request)
    seen, head, data = b"", None, None
    while data is None:
        piece = s.recv(65536)
        if not piece:
            raise SystemExit(f"port {port} closed before a data: event")
        head = head or time.perf_counter()
        seen += piece
        if b"data:" in seen:
            data = time.perf_counter()
    while s.recv(65536):
        pass
    s.close()
    return (head - start) * 1e6, (data - start) * 1e6
times = {name: ([], []) for name, _ in sides}
for i in range(20 + rounds):
    for name, port in sides:
        head, data = stream(port)
        if i >= 20:
            times[name][0].append(head)
            times[name][1].append(data)
direct = statistics.median(times["direct"][1])
print()
print(f"| {rounds} rounds, one client process | first byte p50 | first event p50 | first event added over direct |")
print("|---|---:|---:|---:|")
for name, _ in sides:
    head, data = statistics.median(times[name][0]), statistics.median(times[name][1])
    print(f"| {name} | {head:,.0f} µs | {data:,.0f} µs | {data - direct:+,.0f} µs |")
PY

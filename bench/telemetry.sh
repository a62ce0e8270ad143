#!/usr/bin/env bash
# The cost of metrics and tracing (issue 14: "within 5 %"), measured back to back on three
# gateways of one binary, so machine noise hits all alike:
#   off       [telemetry] metrics = false, no otlp_endpoint              (the baseline)
#   metrics   metrics on (the default), no traces
#   traced    metrics on and every call traced (sample_ratio = 1): two spans per call, exported
#             over OTLP/HTTP protobuf to mock-upstream's /v1/traces (a collector that takes all)
# Set-up as bench/run.sh: the gateways pinned to core 0 (one at a time under load), mock-upstream
# and the load generator on core 1. Load: wrk (Debian package; installed when missing), one
# connection per client, the same 172-character chat request as bench/run.sh.
# Then, unless CALLGRIND=0, user-space instructions per request of each gateway under
# callgrind (every thread, the exporter's included), which do not depend on the machine's load.
#   ROUNDS=5 DURATION=10s CONCURRENCY=32 SKIP_BUILD=1 bench/telemetry.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-32}"
ROUNDS="${ROUNDS:-5}"
BIN="${CARGO_TARGET_DIR:-target}/release"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p proxima -p mock-upstream
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_live() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/health/live" >/dev/null && return; sleep 0.2; done; echo "gateway on $1 did not start" >&2; exit 1; }

MOCK_PORT="$(free_port)"
taskset -c 1 "$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --latency 0ms --no-record >"$WORK/mock.log" 2>&1 &
PIDS+=($!)

VARIANTS=(off metrics traced)
declare -A PORT
config() { # variant port
    printf '[server]\nlisten = "127.0.0.1:%s"\n' "$2"
    printf '[storage]\ndatabase = "sqlite://%s/%s.db"\n' "$WORK" "$1"
    printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT"
    printf '[models.bench]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
    case "$1" in
        off) printf '[telemetry]\nmetrics = false\n' ;;
        metrics) ;;
        traced) printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 1.0\n' "$MOCK_PORT" ;;
    esac
}
for v in "${VARIANTS[@]}"; do
    PORT[$v]="$(free_port)"
    config "$v" "${PORT[$v]}" >"$WORK/$v.toml"
    taskset -c 0 "$BIN/proxima" serve --config "$WORK/$v.toml" >"$WORK/$v.log" 2>&1 &
    PIDS+=($!)
done
for v in "${VARIANTS[@]}"; do wait_live "${PORT[$v]}"; done

TEXT="Proxima benchmark request: a short user message of about one hundred and seventy characters, echoed back by the mock upstream so that the answer is a typical small reply."
cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"$TEXT"}]}'
done = function(summary, latency, requests)
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d\n", summary.requests, failed, summary.duration))
end
EOF
load() { # port duration connections -> "requests failed duration_us"
    taskset -c 1 wrk -t1 -c"$3" -d"$2" -s "$WORK/post.lua" "http://127.0.0.1:$1/v1/chat/completions" |
        awk '/^RESULT/ {print $2, $3, $4}'
}
rps() { # port -> answered requests per second
    read -r requests failed duration < <(load "$1" "$DURATION" "$CONCURRENCY")
    [ "$failed" = 0 ] || echo "warning: $failed failed requests on port $1" >&2
    echo $(((requests - failed) * 1000000 / duration))
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for v in "${VARIANTS[@]}"; do load "${PORT[$v]}" 3s "$CONCURRENCY" >/dev/null; done

echo
echo "| round | off (req/s) | metrics | metrics + traces |"
echo "|---:|---:|---:|---:|"
declare -A SUM
for v in "${VARIANTS[@]}"; do SUM[$v]=0; done
for round in $(seq "$ROUNDS"); do
    declare -A R
    # Rotate the order each round, so no variant always runs first.
    for i in 0 1 2; do
        v="${VARIANTS[$(((i + round) % 3))]}"
        R[$v]="$(rps "${PORT[$v]}")"
        SUM[$v]=$((SUM[$v] + R[$v]))
    done
    echo "| $round | ${R[off]} | ${R[metrics]} ($((100 * R[metrics] / R[off])) %) | ${R[traced]} ($((100 * R[traced] / R[off])) %) |"
done
echo "| mean | $((SUM[off] / ROUNDS)) | $((SUM[metrics] / ROUNDS)) ($((100 * SUM[metrics] / SUM[off])) %) | $((SUM[traced] / ROUNDS)) ($((100 * SUM[traced] / SUM[off])) %) |"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
# The exporter kept up: every span of the traced gateway reached the collector.
curl -sf "http://127.0.0.1:${PORT[traced]}/metrics" | grep -E '^proxima_trace_(spans|queue)' || true
curl -sf "http://127.0.0.1:${PORT[traced]}/metrics" | grep -E '^proxima_requests_total' || true

[ "${CALLGRIND:-1}" = 1 ] || exit 0
command -v valgrind >/dev/null || { echo "callgrind part skipped: needs valgrind" >&2; exit 0; }
echo
echo "| gateway | instructions per request (callgrind, all threads) |"
echo "|---|---:|"
for v in "${VARIANTS[@]}"; do
    port="$(free_port)"
    config "$v" "$port" | sed "s/$v.db/cg-$v.db/" >"$WORK/cg-$v.toml"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$v.%p.out" \
        "$BIN/proxima" serve --config "$WORK/cg-$v.toml" >"$WORK/cg-$v.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_live "$port"
    load "$port" 5s 16 >/dev/null
    callgrind_control -z "$pid" >/dev/null
    read -r requests failed _ < <(load "$port" 20s 16)
    sleep 2 # the last spans' export, counted too
    callgrind_control -d "$pid" >/dev/null
    for _ in $(seq 150); do [ -s "$WORK/cg-$v.$pid.out.1" ] && break; sleep 0.2; done
    sleep 1
    ir="$(grep -hE '^(summary|totals):' "$WORK"/cg-"$v"."$pid".out.1 | head -1 | awk '{print $2}')"
    echo "| $v | $((ir / (requests - failed))) ($((requests - failed)) requests) |"
    kill "$pid" 2>/dev/null || true
done

#!/usr/bin/env bash
# What the kernel does for the gateway per request: CPU time split into user and system (from
# /proc), and with `perf` (Debian's linux-perf) the syscalls that matter on the request path,
# counted while oha sends N requests (c=32) from core 1 to the gateway alone on core 0, with
# the default config (no keys, ledger on). callgrind (bench/instructions.sh) sees only user
# space; this is where a request that opens a new upstream connection, or writes each event
# on its own, shows.
#   bench/syscalls.sh [PROXIMA_BINARY]
#   STREAM=1   streamed answers (31 events, sent at once)
#   N=20000    requests counted (after 3000 to warm up)
#   CONCURRENCY=32  connections oha keeps busy
#   FEATURES=a,b,...  features switched on (bench/features.sh): what each costs in CPU time,
#              where bench/instructions.sh counts only user-space instructions
#   NUMBERED=1  numbered bodies as FEATURES=cache sends, without the cache: what a miss is
#              compared with (bench/features.sh, numbered_bodies)
#   KEYS=1     a virtual key with rpm, tpm and a daily budget, in a team with its own, as
#              bench/run.sh's KEYS=1 (default: no keys)
#   EXTRA_EVENTS=a,b  more perf events to count (syscalls:sys_enter_futex, say)
#   PERF_RECORD=FILE  also samples the gateway's CPU (user and kernel) over the counted load,
#              for `perf report -i FILE`: where CPU time goes that instructions do not show;
#              with PERF_GRAPH=1 the call stacks too (DWARF), for `perf report --children`: the
#              share of the gateway's CPU under a function, which machine load moves less than
#              CPU time; PERF_GRAPH=fp records frame-pointer stacks instead, complete in the
#              kernel (which thread wakes whom, what a write costs) at a fraction of the size
# Builds the release binaries unless SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
# shellcheck source=bench/features.sh
source bench/features.sh
PROXIMA="${1:-$BIN/proxima}"
N="${N:-20000}"
STREAMED=false
[ "${STREAM:-0}" = 1 ] && STREAMED=true

PORT="$(free_port)"
MASTER_KEY="bench-master-key"
{
    printf '[server]\nlisten = "127.0.0.1:%s"\n' "$PORT"
    [ "${KEYS:-0}" = 1 ] && printf 'master_key = "%s"\n' "$MASTER_KEY"
    printf '[storage]\ndatabase = "sqlite://%s/ledger.db"\n' "$WORK"
} >"$WORK/proxima.toml"
printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' \
    "$MOCK_PORT" >>"$WORK/proxima.toml"
printf '[models.bench]\ntargets = [{ provider = "up", model = "bench-upstream" }]\n' \
    >>"$WORK/proxima.toml"
feature_toml >>"$WORK/proxima.toml"
taskset -c 0 "$PROXIMA" serve --config "$WORK/proxima.toml" >"$WORK/proxima.log" 2>&1 &
GATEWAY=$!
PIDS+=("$GATEWAY")
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health/live" && break; sleep 0.1; done
AUTH=()
if [ "${KEYS:-0}" = 1 ]; then
    AUTH=(-H "authorization: Bearer $(bench_key "$PORT" "$MASTER_KEY")")
fi

# 28 words: the mock echoes one event per word, plus the role and the end.
words="one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
words="$words fifteen sixteen seventeen eighteen nineteen twenty twentyone twentytwo"
words="$words twentythree twentyfour twentyfive twentysix twentyseven twentyeight"
printf '{"model":"bench","stream":%s,"messages":[{"role":"user","content":"%s"}]}' \
    "$STREAMED" "$words" >"$WORK/body.json"
BODY=(-D "$WORK/body.json")
if numbered_bodies; then
    cache_bodies "$words" ",\"stream\":$STREAMED" >"$WORK/bodies"
    BODY=(-Z "$WORK/bodies")
fi
load() { # requests
    taskset -c 1 oha --no-tui -n "$1" -c "${CONCURRENCY:-32}" -m POST -H 'content-type: application/json' \
        "${AUTH[@]}" "${BODY[@]}" "http://127.0.0.1:$PORT/v1/chat/completions"
}
load 3000 >/dev/null

cpu() { awk '{ print $14, $15 }' "/proc/$GATEWAY/stat"; } # user and system ticks
read -r user0 sys0 < <(cpu)
PERF=""
if command -v perf >/dev/null; then
    events=task-clock,context-switches,page-faults,raw_syscalls:sys_enter${EXTRA_EVENTS:+,$EXTRA_EVENTS}
    for call in connect close recvfrom writev epoll_wait; do
        events="$events,syscalls:sys_enter_$call"
    done
    perf stat -x, -e "$events" -p "$GATEWAY" -o "$WORK/perf.txt" &
    PERF=$!
    sleep 0.3
fi
RECORD=""
if [ -n "${PERF_RECORD:-}" ]; then
    graph=()
    [ "${PERF_GRAPH:-0}" = 1 ] && graph=(--call-graph dwarf,16384)
    [ "${PERF_GRAPH:-0}" = fp ] && graph=(-g)
    perf record -q -F 4999 "${graph[@]}" -p "$GATEWAY" -o "$PERF_RECORD" &
    RECORD=$!
    sleep 0.3
fi
load "$N" >"$WORK/oha.txt"
for recorder in $PERF $RECORD; do
    kill -INT "$recorder"
    wait "$recorder" || true
done
read -r user1 sys1 < <(cpu)
sleep 1
cached && cache_verdicts "$WORK/ledger.db"

hz="$(getconf CLK_TCK)"
echo "$(basename "$PROXIMA"), stream=$STREAMED${FEATURES:+, $FEATURES}$([ "${KEYS:-0}" = 1 ] && echo ", a virtual key"), $N requests: $(grep -E 'Requests/sec' "$WORK/oha.txt" | tr -s ' ')"
awk -v u=$((user1 - user0)) -v s=$((sys1 - sys0)) -v hz="$hz" -v n="$N" \
    'BEGIN { printf "  CPU per request: user %.1f µs, system %.1f µs\n", u / hz / n * 1e6, s / hz / n * 1e6 }'
[ -z "$PERF" ] || awk -F, -v n="$N" '
    /task-clock/ { printf "  task-clock: %.1f µs per request\n", $1 * 1000 / n; next }
    /^[0-9]/     { sub("syscalls:sys_enter_", "", $3); printf "  %s: %.2f per request\n", $3, $1 / n }
' "$WORK/perf.txt"

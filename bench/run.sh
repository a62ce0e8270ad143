#!/usr/bin/env bash
# Proxima gateway benchmark: the same load straight at the mock upstream (DIRECT), through
# nginx's `proxy_pass` (NGINX, the reference: what a plain reverse proxy costs) and through the
# gateway (PROXIMA), with the proxy under test alone on core 0 and mock + load generator on
# core 1. Every proxy figure is also given as a ratio to nginx's, measured in the same run.
# See bench/README.md for what each number means. Usage: bench/run.sh
#
# Knobs (environment):
#   DURATION=10s      length of each oha run
#   STREAM_N=200      sequential streaming requests per side
#   RATES="500 2000 5000"   fixed rates for the latency runs
#   CONCURRENCY="32 128"    concurrency levels for the max-throughput runs
#   STREAM_CONCURRENCY=32   concurrency of the streaming throughput run (CPU per streamed request)
#   EVENT_GAP=0ms     time between a streamed answer's events (0ms: all at once; 1ms or more is
#                     how a model writes tokens, one wake-up per event)
#   KEYS=1            the gateway serves a virtual key with key and team rate limits and daily
#                     budgets, ledger on (SQLite); KEYS=0: anonymous caller, ledger still on
#   QUIET_LOAD=0.5    wait until the 1-minute load average is below this before measuring ...
#   QUIET_WAIT=600    ... but at most this many seconds (then measure anyway, and say so)
#   SKIP_BUILD=1      use the binaries already in $CARGO_TARGET_DIR/release
#   PROXIMA_BINARY=PATH  measure this gateway binary instead (an older build, for before/after)
#   OUT=bench/results/latest.md   where the Markdown table goes
#   BENCH_PRIORITY=1  (root) run in a session of its own whose autogroup has nice -20, so that
#                     other work on the machine (builds) takes CPU from the benchmark only when
#                     it is idle. Plain `nice` does not help: with autogroup scheduling, nice
#                     only ranks processes inside one session.
#   CALLGRIND=0       skip the instruction counts (needs valgrind; takes ~1 min)
#   NGINX=/usr/sbin/nginx   the reference proxy (Debian's `nginx`, installed when missing)
set -euo pipefail

if [ "${BENCH_PRIORITY:-0}" = 1 ] && [ -z "${_BENCH_IN_SESSION:-}" ]; then
    export _BENCH_IN_SESSION=1
    exec setsid --wait "$0" "$@"
fi
PRIORITY_NOTE="normal priority"
if [ "${BENCH_PRIORITY:-0}" = 1 ]; then
    if echo -20 >/proc/self/autogroup 2>/dev/null; then
        PRIORITY_NOTE="own session, autogroup nice -20 (BENCH_PRIORITY=1)"
    else
        PRIORITY_NOTE="BENCH_PRIORITY=1 asked, but the autogroup nice could not be set"
    fi
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10s}"
STREAM_N="${STREAM_N:-200}"
RATES="${RATES:-500 2000 5000}"
CONCURRENCY="${CONCURRENCY:-32 128}"
EVENT_GAP="${EVENT_GAP:-0ms}"
QUIET_LOAD="${QUIET_LOAD:-0.5}"
QUIET_WAIT="${QUIET_WAIT:-600}"
OUT="${OUT:-$ROOT/bench/results/latest.md}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release"
GW_CORE=0
LOAD_CORE=1

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in taskset curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (gateway on core $GW_CORE, load on core $LOAD_CORE)"

# ---------------------------------------------------------------- build and tools
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries (CARGO_TARGET_DIR=$TARGET_DIR)"
    CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p proxima -p mock-upstream
fi
PROXIMA="${PROXIMA_BINARY:-$BIN/proxima}"
[ -x "$PROXIMA" ] && [ -x "$BIN/mock-upstream" ] || die "binaries missing in $BIN"

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
    log "installing oha (first time only, takes a few minutes)"
    cargo install oha --locked
fi
OHA_VERSION="$(oha --version | head -1)"
# oha >= 1.5 has --output-format json; older ones had --json.
if oha --help | grep -q -- '--output-format'; then
    OHA_JSON=(--output-format json)
else
    OHA_JSON=(--json)
fi

# ---------------------------------------------------------------- scratch space and cleanup
WORK="$(mktemp -d /tmp/proxima-bench.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url
    local i
    for i in $(seq 1 100); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "nothing answers at $1"
}

# ---------------------------------------------------------------- start the servers

MOCK_PORT="$(free_port)"
taskset -c "$LOAD_CORE" "$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --latency 0ms \
    --event-gap "$EVENT_GAP" --no-record >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 1 100); do grep -q '^listening on' "$WORK/mock.out" && break; sleep 0.1; done
grep -q '^listening on' "$WORK/mock.out" || die "mock-upstream did not start: $(cat "$WORK/mock.err")"

# shellcheck source=bench/nginx.sh
source "$ROOT/bench/nginx.sh"
# shellcheck source=bench/keys.sh
source "$ROOT/bench/keys.sh"
NGINX_PORT="$(free_port)"
nginx_conf "$NGINX_PORT" on >"$WORK/nginx.conf"
taskset -c "$GW_CORE" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

GW_PORT="$(free_port)"
MASTER_KEY="bench-master-key-$RANDOM$RANDOM"
{
    printf '[server]\nlisten = "127.0.0.1:%s"\n' "$GW_PORT"
    [ "${KEYS:-1}" = 1 ] && printf 'master_key = "%s"\n' "$MASTER_KEY"
    printf '\n[storage]\ndatabase = "sqlite://%s/ledger.db"\n' "$WORK"
    printf '\n[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT"
    printf '\n[models.bench]\ntargets = [{ provider = "up", model = "bench-upstream" }]\n'
} >"$WORK/proxima.toml"
taskset -c "$GW_CORE" "$PROXIMA" serve --config "$WORK/proxima.toml" \
    >"$WORK/proxima.out" 2>"$WORK/proxima.err" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health/live"
wait_http "http://127.0.0.1:$NGINX_PORT/"
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | xargs)"

# The caller: a virtual key in a team, both with rate limits and a daily budget (high enough
# never to refuse), so that every request takes and settles its share of each.
AUTH=()
CALLER_NOTE="anonymous caller (no keys)"
if [ "${KEYS:-1}" = 1 ]; then
    KEY="$(bench_key "$GW_PORT" "$MASTER_KEY")" || die "cannot create the bench key"
    AUTH=(-H "authorization: Bearer $KEY")
    CALLER_NOTE="a virtual key with rpm, tpm and a daily budget, in a team with its own rpm, tpm and budget"
fi

DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
PROXIMA_URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
log "mock-upstream pid $MOCK_PID on core $LOAD_CORE at :$MOCK_PORT; nginx pids $NGINX_PIDS and proxima pid $GW_PID on core $GW_CORE at :$NGINX_PORT and :$GW_PORT"

# ---------------------------------------------------------------- the request
# The mock echoes the last user message, so the user text sets both sizes: a ~230-byte request
# whose answer is ~612 bytes. 172 characters of text give both (checked below with curl).
USER_TEXT="Proxima benchmark request: please summarise the following sentence in one short line. The quick brown fox jumps over the lazy dog while the gateway forwards each byte fast."
python3 - "$USER_TEXT" "$WORK" <<'PY'
import json, sys
text, work = sys.argv[1], sys.argv[2]
msgs = [{"role": "user", "content": text}]
open(f"{work}/body.json", "w").write(json.dumps({"model": "bench", "messages": msgs}, separators=(",", ":")))
open(f"{work}/stream.json", "w").write(json.dumps({"model": "bench", "messages": msgs, "stream": True}, separators=(",", ":")))
PY
REQ_BYTES="$(wc -c <"$WORK/body.json")"
post() { # body url [curl args...]
    local body=$1 url=$2
    shift 2
    curl -s "${AUTH[@]}" -H 'content-type: application/json' --data-binary @"$body" "$@" "$url"
}
size_of() { post "$1" "$2" -o /dev/null -w '%{size_download}'; }
check_ok() {
    local code
    code="$(post "$1" "$2" -o "$WORK/check.out" -w '%{http_code}')"
    [ "$code" = 200 ] || die "$2 answered $code: $(cat "$WORK/check.out")"
}
for url in "$DIRECT_URL" "$NGINX_URL" "$PROXIMA_URL"; do
    check_ok "$WORK/body.json" "$url"
    check_ok "$WORK/stream.json" "$url"
done
RESP_DIRECT="$(size_of "$WORK/body.json" "$DIRECT_URL")"
RESP_PROXIMA="$(size_of "$WORK/body.json" "$PROXIMA_URL")"
STREAM_DIRECT="$(size_of "$WORK/stream.json" "$DIRECT_URL")"
STREAM_PROXIMA="$(size_of "$WORK/stream.json" "$PROXIMA_URL")"
STREAM_EVENTS="$(post "$WORK/stream.json" "$DIRECT_URL" | grep -c '^data:')"
log "request $REQ_BYTES B; answer $RESP_DIRECT B direct / $RESP_PROXIMA B through proxima; stream of $STREAM_EVENTS events, $STREAM_DIRECT / $STREAM_PROXIMA B"

# ---------------------------------------------------------------- measuring helpers
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # pids... -> their utime and stime summed, in clock ticks (fields 14 and 15)
    local pid user=0 system=0 times
    for pid in "$@"; do
        read -ra times < <(awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$pid/stat")
        user=$((user + times[0])); system=$((system + times[1]))
    done
    echo "$user $system"
}
core_busy() { # core -> busy ticks (user+nice+system+irq+softirq) of that core
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}
status_kb() { # field pids... -> the field from /proc/PID/status in kB, summed over the pids
    local field=$1 pid total=0
    shift
    for pid in "$@"; do
        total=$((total + $(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
side_pids() { # side -> the pids whose CPU is the side's (none for direct)
    case "$1" in
        nginx) echo "$NGINX_PIDS" ;;
        proxima) echo "$GW_PID" ;;
    esac
}
side_url() {
    case "$1" in
        direct) echo "$DIRECT_URL" ;;
        nginx) echo "$NGINX_URL" ;;
        proxima) echo "$PROXIMA_URL" ;;
    esac
}

wait_quiet() {
    local waited=0 load
    while :; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        if python3 -c "import sys; sys.exit(0 if $load < $QUIET_LOAD else 1)"; then
            log "machine quiet: load $load after ${waited}s"
            QUIET_NOTE="1-min load $load (< $QUIET_LOAD) after waiting ${waited}s"
            return
        fi
        if [ "$waited" -ge "$QUIET_WAIT" ]; then
            log "machine NOT quiet after ${waited}s (load $load): measuring anyway"
            QUIET_NOTE="NOT quiet: 1-min load $load after waiting ${waited}s (limit $QUIET_WAIT s)"
            return
        fi
        sleep 10
        waited=$((waited + 10))
    done
}

# run_oha NAME SIDE BODY ARGS... : runs oha against SIDE on the load core, stores its JSON in
# $WORK/NAME.json, and the side's CPU ticks and core-0 busy ticks around the run in NAME.cpu.
run_oha() {
    local name=$1 side=$2 body=$3
    shift 3
    local pids gw0 gw1 core0 core1
    # shellcheck disable=SC2207
    pids=($(side_pids "$side"))
    read -ra gw0 < <(cpu_ticks "${pids[@]}"); core0="$(core_busy "$GW_CORE")"
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        "${AUTH[@]}" -D "$WORK/$body" "$@" "$(side_url "$side")" >"$WORK/$name.json"
    read -ra gw1 < <(cpu_ticks "${pids[@]}"); core1="$(core_busy "$GW_CORE")"
    local user=$((gw1[0] - gw0[0])) system=$((gw1[1] - gw0[1]))
    echo "$((user + system)) $((core1 - core0)) $user $system" >"$WORK/$name.cpu"
    python3 - "$WORK/$name.json" "$name" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]; codes = r.get("statusCodeDistribution", {})
print(f"  {sys.argv[2]:<26} {s['requestsPerSec']:>9.0f} req/s  p50 {r['latencyPercentiles']['p50']*1e3:7.3f} ms"
      f"  p99 {r['latencyPercentiles']['p99']*1e3:7.3f} ms  codes {codes}  errors {r.get('errorDistribution', {})}")
PY
}

# stream_run SIDE : STREAM_N sequential streaming requests with curl on the load core; one line
# per request: time to first byte, total time (seconds), status.
stream_run() {
    local side=$1 i
    : >"$WORK/stream_$side.txt"
    for i in $(seq 1 "$STREAM_N"); do
        taskset -c "$LOAD_CORE" curl -N -s -o /dev/null -w '%{time_starttransfer} %{time_total} %{http_code}\n' \
            "${AUTH[@]}" -H 'content-type: application/json' --data-binary @"$WORK/stream.json" \
            "$(side_url "$side")" >>"$WORK/stream_$side.txt"
    done
}

# ---------------------------------------------------------------- runs
SIDES="direct nginx proxima"
RSS_START="$(status_kb VmRSS "$GW_PID")"
log "warm-up (3s each side)"
for side in $SIDES; do
    run_oha "warmup_$side" "$side" body.json -z 3s -c 128 2>/dev/null
done
RSS_WARM="$(status_kb VmRSS "$GW_PID")"

QUIET_NOTE=""
wait_quiet
LOAD_BEFORE="$(loadavg)"
START_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

for c in $CONCURRENCY; do
    log "max throughput, concurrency $c"
    for side in $SIDES; do
        run_oha "tp_${side}_c$c" "$side" body.json -z "$DURATION" -c "$c"
    done
done
RSS_AFTER_TP="$(status_kb VmRSS "$GW_PID")"

STREAM_C="${STREAM_CONCURRENCY:-32}"
log "streaming throughput, concurrency $STREAM_C"
for side in $SIDES; do
    run_oha "stp_$side" "$side" stream.json -z "$DURATION" -c "$STREAM_C"
done

for q in $RATES; do
    log "fixed rate $q req/s"
    for side in $SIDES; do
        run_oha "rate_${side}_q$q" "$side" body.json -z "$DURATION" -c 64 -q "$q" --latency-correction
    done
done

log "streaming latency: $STREAM_N sequential requests each side"
for side in $SIDES; do
    stream_run "$side"
done

LOAD_AFTER="$(loadavg)"
RSS_END="$(status_kb VmRSS "$GW_PID")"
HWM_END="$(status_kb VmHWM "$GW_PID")"
# shellcheck disable=SC2086
NGINX_HWM="$(status_kb VmHWM $NGINX_PIDS)"
GW_THREADS="$(status_kb Threads "$GW_PID")"

# ---------------------------------------------------------------- instructions per request
# Wall-clock CPU depends on what else the machine runs; instructions do not. Each proxy runs
# again under callgrind and serves 300 warm-up requests, then 2000 counted ones (user space
# only: the kernel's share, ~1/3 of the CPU time in perf, is not in this number). nginx runs
# as a single process there (master_process off), so one profile holds all of its work.
callgrind_count() { # side port command... -> instructions per answered request, or nothing
    local side=$1 port=$2 pid out ok ir
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$side.%p.out" "$@" \
        >"$WORK/cg-$side.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
    # The gateway's tokenizer loads in the background (hundreds of millions of instructions
    # under callgrind): let it finish before counting.
    if [ "$side" = proxima ]; then
        for _ in $(seq 1 600); do grep -q "tokenizer loaded" "$WORK/cg-$side.log" && break; sleep 0.2; done
    fi
    local url="http://127.0.0.1:$port/v1/chat/completions"
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        "${AUTH[@]}" -D "$WORK/body.json" -n 300 -c 16 "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        "${AUTH[@]}" -D "$WORK/body.json" -n 2000 -c 16 "$url" >"$WORK/cg-$side.json"
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    ok="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['statusCodeDistribution'].get('200', 0))" "$WORK/cg-$side.json")"
    ir="$(grep -hE '^(summary|totals):' "$WORK"/cg-"$side"."$pid".out.1 2>/dev/null | head -1 | awk '{print $2}')"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -n "$ir" ] && [ "$ok" -gt 0 ]; then
        echo "$((ir / ok))"
    fi
}
IR_PROXIMA=""
IR_NGINX=""
if [ "${CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    log "instruction counts under callgrind (2000 requests each)"
    CG_PORT="$(free_port)"
    # The same gateway and database, so the key made above works.
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$CG_PORT/" "$WORK/proxima.toml" >"$WORK/cg.toml"
    IR_PROXIMA="$(callgrind_count proxima "$CG_PORT" "$PROXIMA" serve --config "$WORK/cg.toml")"
    CG_NGINX_PORT="$(free_port)"
    nginx_conf "$CG_NGINX_PORT" off >"$WORK/cg-nginx.conf"
    IR_NGINX="$(callgrind_count nginx "$CG_NGINX_PORT" "$NGINX" -p "$WORK/nginx" -c "$WORK/cg-nginx.conf")"
fi

# ---------------------------------------------------------------- the table
mkdir -p "$(dirname "$OUT")"
python3 - "$WORK" "$OUT" <<PY
import json, statistics, sys
work, out = sys.argv[1], sys.argv[2]
clk = $CLK_TCK
conc = "$CONCURRENCY".split()
rates = "$RATES".split()

def oha(name):
    r = json.load(open(f"{work}/{name}.json"))
    codes = r.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k == "200")
    # Requests still in flight when a timed run ends are cut off by oha: not errors.
    errors = {k: v for k, v in r.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    bad = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
    lp = r["latencyPercentiles"]
    return {"rps": r["summary"]["requestsPerSec"], "ok": ok, "bad": bad,
            "p50": lp["p50"] * 1e6, "p99": lp["p99"] * 1e6}

def cpu_per_request(name):
    """The side's CPU per answered request (µs), and the other work on its core (s)."""
    gw, core, _, _ = map(int, open(f"{work}/{name}.cpu").read().split())
    ok = oha(name)["ok"]
    return (gw / clk * 1e6 / ok if ok else float("nan")), max(core - gw, 0) / clk

def split(name):
    """The side's CPU per answered request as user and system time (µs): the kernel's share."""
    _, _, user, system = map(int, open(f"{work}/{name}.cpu").read().split())
    ok = oha(name)["ok"] or float("nan")
    return f"user {user / clk * 1e6 / ok:.1f} + system {system / clk * 1e6 / ok:.1f} µs"

def ratio(a, b):
    return f"{a / b:.2f}×" if b else "n/a"

def us(x):
    return f"{x:,.0f} µs"

rows = ["| measurement | direct (oha → mock) | nginx proxy_pass | proxima | proxima ÷ nginx |",
        "|---|---:|---:|---:|---:|"]
notes = []
for c in conc:
    d, n, p = (oha(f"tp_{s}_c{c}") for s in ("direct", "nginx", "proxima"))
    rows.append(f"| max throughput, c={c} (req/s) | {d['rps']:,.0f} | {n['rps']:,.0f} | {p['rps']:,.0f} | {ratio(p['rps'], n['rps'])} |")
    rows.append(f"| &nbsp;&nbsp;latency p50 / p99 at c={c} | {us(d['p50'])} / {us(d['p99'])} | {us(n['p50'])} / {us(n['p99'])} | {us(p['p50'])} / {us(p['p99'])} | {ratio(p['p50'], n['p50'])} / {ratio(p['p99'], n['p99'])} |")
    (ncpu, nother), (pcpu, pother) = cpu_per_request(f"tp_nginx_c{c}"), cpu_per_request(f"tp_proxima_c{c}")
    rows.append(f"| &nbsp;&nbsp;**CPU per request** at c={c} | – | {ncpu:.1f} µs | {pcpu:.1f} µs | **{ratio(pcpu, ncpu)}** |")
    notes.append(f"c={c}: CPU per request nginx {split(f'tp_nginx_c{c}')}, proxima {split(f'tp_proxima_c{c}')}; "
                 f"other work on core $GW_CORE during the runs: nginx {nother:.2f} s, proxima {pother:.2f} s; "
                 f"errors/non-200: direct {d['bad']}, nginx {n['bad']}, proxima {p['bad']}")

d, n, p = (oha(f"stp_{s}") for s in ("direct", "nginx", "proxima"))
(ncpu, _), (pcpu, _) = cpu_per_request("stp_nginx"), cpu_per_request("stp_proxima")
rows.append(f"| streamed ($STREAM_EVENTS events), c=$STREAM_C (req/s) | {d['rps']:,.0f} | {n['rps']:,.0f} | {p['rps']:,.0f} | {ratio(p['rps'], n['rps'])} |")
rows.append(f"| &nbsp;&nbsp;**CPU per streamed request** | – | {ncpu:.1f} µs | {pcpu:.1f} µs | **{ratio(pcpu, ncpu)}** |")
notes.append(f"streamed throughput: CPU per request nginx {split('stp_nginx')}, proxima {split('stp_proxima')}; errors/non-200: direct {d['bad']}, nginx {n['bad']}, proxima {p['bad']}")

for q in rates:
    d, n, p = (oha(f"rate_{s}_q{q}") for s in ("direct", "nginx", "proxima"))
    sat = lambda x: "" if x["rps"] >= 0.95 * float(q) else f" (saturated: {x['rps']:,.0f} req/s)"
    rows.append(f"| latency p50 / p99 at {q} req/s | {us(d['p50'])} / {us(d['p99'])}{sat(d)} | {us(n['p50'])} / {us(n['p99'])}{sat(n)} | {us(p['p50'])} / {us(p['p99'])}{sat(p)} | {p['p50']-n['p50']:+,.0f} / {p['p99']-n['p99']:+,.0f} µs |")
    (ncpu, _), (pcpu, _) = cpu_per_request(f"rate_nginx_q{q}"), cpu_per_request(f"rate_proxima_q{q}")
    notes.append(f"{q} req/s: CPU per request nginx {ncpu:.1f} µs, proxima {pcpu:.1f} µs; "
                 f"errors/non-200: direct {d['bad']}, nginx {n['bad']}, proxima {p['bad']}")

def stream(side):
    first, total, bad = [], [], 0
    for line in open(f"{work}/stream_{side}.txt"):
        a, b, code = line.split()
        if code != "200":
            bad += 1
            continue
        first.append(float(a) * 1e6); total.append(float(b) * 1e6)
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1]
    return {"f50": q(first, 50), "f99": q(first, 99), "t50": q(total, 50), "t99": q(total, 99), "n": len(first), "bad": bad}
sd, sn, sp = stream("direct"), stream("nginx"), stream("proxima")
rows.append(f"| stream: first chunk p50 / p99 | {us(sd['f50'])} / {us(sd['f99'])} | {us(sn['f50'])} / {us(sn['f99'])} | {us(sp['f50'])} / {us(sp['f99'])} | {sp['f50']-sn['f50']:+,.0f} / {sp['f99']-sn['f99']:+,.0f} µs |")
rows.append(f"| &nbsp;&nbsp;added to the first chunk over direct, p50 | – | {sn['f50']-sd['f50']:+,.0f} µs | {sp['f50']-sd['f50']:+,.0f} µs | – |")
rows.append(f"| stream: last chunk p50 / p99 | {us(sd['t50'])} / {us(sd['t99'])} | {us(sn['t50'])} / {us(sn['t99'])} | {us(sp['t50'])} / {us(sp['t99'])} | {sp['t50']-sn['t50']:+,.0f} / {sp['t99']-sn['t99']:+,.0f} µs |")
notes.append(f"streams: {sd['n']} direct / {sn['n']} nginx / {sp['n']} proxima answered 200 (failed: {sd['bad']} / {sn['bad']} / {sp['bad']}); "
             f"times are curl's time_starttransfer and time_total, including curl's connect")
mib = lambda kb: f"{int(kb)/1024:.1f} MiB"
rows.append(f"| RSS: start / after warm-up / after throughput / end | – | – | {mib($RSS_START)} / {mib($RSS_WARM)} / {mib($RSS_AFTER_TP)} / {mib($RSS_END)} | – |")
rows.append(f"| **peak RSS** (VmHWM; nginx: master + worker) | – | {mib($NGINX_HWM)} | {mib($HWM_END)} | {ratio($HWM_END, $NGINX_HWM)} |")
ir_n, ir_p = "$IR_NGINX", "$IR_PROXIMA"
if ir_p:
    n_cell = f"{int(ir_n):,}" if ir_n else "–"
    rows.append(f"| user-space instructions per request (callgrind, c=16) | – | {n_cell} | {int(ir_p):,} | {ratio(int(ir_p), int(ir_n)) if ir_n else 'n/a'} |")

head = f"""# Proxima benchmark — $START_TIME

- proxy under test pinned to core $GW_CORE (proxima: $GW_THREADS threads; nginx: 1 worker); mock-upstream (no latency, stream events $EVENT_GAP apart, no recording), oha and curl on core $LOAD_CORE
- proxima: $CALLER_NOTE; ledger on (SQLite)
- request $REQ_BYTES B, answer $RESP_DIRECT B direct / $RESP_PROXIMA B through proxima; streamed answer $STREAM_EVENTS events, $STREAM_DIRECT / $STREAM_PROXIMA B
- $OHA_VERSION, {"$DURATION"} per run; fixed-rate runs with -c 64 and --latency-correction; $STREAM_N sequential streams per side
- $("$NGINX" -v 2>&1 | sed 's/.*: //'), proxy_pass with keep-alive upstream connections, proxy_buffering off, access log off
- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), VM), $(uname -r); quietness: $QUIET_NOTE; load average before / after: $LOAD_BEFORE / $LOAD_AFTER
- scheduling: $PRIORITY_NOTE
- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'); gateway binary: $PROXIMA

"""
text = head + "\n".join(rows) + "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes) + "\n"
open(out, "w").write(text)
print(text)
PY
log "written to $OUT"

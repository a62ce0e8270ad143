#!/usr/bin/env bash
# Proxima gateway benchmark: the same load straight at the mock upstream (DIRECT) and through
# the gateway (PROXIMA), with the gateway alone on core 0 and mock + load generator on core 1.
# See bench/README.md for what each number means. Usage: bench/run.sh
#
# Knobs (environment):
#   DURATION=10s      length of each oha run
#   STREAM_N=200      sequential streaming requests per side
#   RATES="500 2000 5000"   fixed rates for the latency runs
#   CONCURRENCY="32 128"    concurrency levels for the max-throughput runs
#   QUIET_LOAD=0.5    wait until the 1-minute load average is below this before measuring ...
#   QUIET_WAIT=600    ... but at most this many seconds (then measure anyway, and say so)
#   SKIP_BUILD=1      use the binaries already in $CARGO_TARGET_DIR/release
#   OUT=bench/results/latest.md   where the Markdown table goes
#   BENCH_PRIORITY=1  (root) run in a session of its own whose autogroup has nice -20, so that
#                     other work on the machine (builds) takes CPU from the benchmark only when
#                     it is idle. Plain `nice` does not help: with autogroup scheduling, nice
#                     only ranks processes inside one session.
#   CALLGRIND=0       skip the instruction count (needs valgrind; takes ~30 s)
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
[ -x "$BIN/proxima" ] && [ -x "$BIN/mock-upstream" ] || die "binaries missing in $BIN"

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

# ---------------------------------------------------------------- start the two servers
MOCK_PORT="$(free_port)"
taskset -c "$LOAD_CORE" "$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --latency 0ms --no-record \
    >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 1 100); do grep -q '^listening on' "$WORK/mock.out" && break; sleep 0.1; done
grep -q '^listening on' "$WORK/mock.out" || die "mock-upstream did not start: $(cat "$WORK/mock.err")"

GW_PORT="$(free_port)"
cat >"$WORK/proxima.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"

[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"

[models.bench]
targets = [{ provider = "up", model = "bench-upstream" }]
EOF
taskset -c "$GW_CORE" "$BIN/proxima" serve --config "$WORK/proxima.toml" \
    >"$WORK/proxima.out" 2>"$WORK/proxima.err" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health/live"

DIRECT_URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
PROXIMA_URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
log "mock-upstream pid $MOCK_PID on core $LOAD_CORE at :$MOCK_PORT; proxima pid $GW_PID on core $GW_CORE at :$GW_PORT"

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
size_of() { curl -s -o /dev/null -w '%{size_download}' -H 'content-type: application/json' --data-binary @"$1" "$2"; }
check_ok() {
    local code
    code="$(curl -s -o "$WORK/check.out" -w '%{http_code}' -H 'content-type: application/json' --data-binary @"$1" "$2")"
    [ "$code" = 200 ] || die "$2 answered $code: $(cat "$WORK/check.out")"
}
check_ok "$WORK/body.json" "$DIRECT_URL"
check_ok "$WORK/body.json" "$PROXIMA_URL"
RESP_DIRECT="$(size_of "$WORK/body.json" "$DIRECT_URL")"
RESP_PROXIMA="$(size_of "$WORK/body.json" "$PROXIMA_URL")"
STREAM_DIRECT="$(size_of "$WORK/stream.json" "$DIRECT_URL")"
STREAM_PROXIMA="$(size_of "$WORK/stream.json" "$PROXIMA_URL")"
log "request $REQ_BYTES B; answer $RESP_DIRECT B direct / $RESP_PROXIMA B through proxima; stream $STREAM_DIRECT / $STREAM_PROXIMA B"

# ---------------------------------------------------------------- measuring helpers
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # pid -> utime+stime in clock ticks (fields 14 and 15, after the ")" of comm)
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
core_busy() { # core -> busy ticks (user+nice+system+irq+softirq) of that core
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}
status_kb() { # pid field -> value in kB from /proc/PID/status
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

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

# oha RESULT_NAME ARGS... : runs oha on the load core, stores its JSON in $WORK/RESULT_NAME.json,
# and the gateway's CPU ticks and core-0 busy ticks around the run in $WORK/RESULT_NAME.cpu.
run_oha() {
    local name="$1"; shift
    local gw0 gw1 core0 core1
    gw0="$(cpu_ticks "$GW_PID")"; core0="$(core_busy "$GW_CORE")"
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        -D "$WORK/body.json" "$@" >"$WORK/$name.json"
    gw1="$(cpu_ticks "$GW_PID")"; core1="$(core_busy "$GW_CORE")"
    echo "$((gw1 - gw0)) $((core1 - core0))" >"$WORK/$name.cpu"
    python3 - "$WORK/$name.json" "$name" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]; codes = r.get("statusCodeDistribution", {})
print(f"  {sys.argv[2]:<24} {s['requestsPerSec']:>9.0f} req/s  p50 {r['latencyPercentiles']['p50']*1e3:7.3f} ms"
      f"  p99 {r['latencyPercentiles']['p99']*1e3:7.3f} ms  codes {codes}  errors {r.get('errorDistribution', {})}")
PY
}

# stream_run NAME URL : STREAM_N sequential streaming requests with curl on the load core;
# one line per request: time to first byte, total time (seconds).
stream_run() {
    local name="$1" url="$2" i
    : >"$WORK/$name.txt"
    for i in $(seq 1 "$STREAM_N"); do
        taskset -c "$LOAD_CORE" curl -N -s -o /dev/null -w '%{time_starttransfer} %{time_total} %{http_code}\n' \
            -H 'content-type: application/json' --data-binary @"$WORK/stream.json" "$url" >>"$WORK/$name.txt"
    done
}

# ---------------------------------------------------------------- runs
RSS_START="$(status_kb "$GW_PID" VmRSS)"
log "warm-up (3s each side)"
taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
    -D "$WORK/body.json" -z 3s -c 32 "$DIRECT_URL" >/dev/null
taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
    -D "$WORK/body.json" -z 3s -c 128 "$PROXIMA_URL" >/dev/null
RSS_WARM="$(status_kb "$GW_PID" VmRSS)"

QUIET_NOTE=""
wait_quiet
LOAD_BEFORE="$(loadavg)"
START_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

for c in $CONCURRENCY; do
    log "max throughput, concurrency $c"
    run_oha "tp_direct_c$c" -z "$DURATION" -c "$c" "$DIRECT_URL"
    run_oha "tp_proxima_c$c" -z "$DURATION" -c "$c" "$PROXIMA_URL"
done
RSS_AFTER_TP="$(status_kb "$GW_PID" VmRSS)"

for q in $RATES; do
    log "fixed rate $q req/s"
    run_oha "rate_direct_q$q" -z "$DURATION" -c 64 -q "$q" --latency-correction "$DIRECT_URL"
    run_oha "rate_proxima_q$q" -z "$DURATION" -c 64 -q "$q" --latency-correction "$PROXIMA_URL"
done

log "streaming: $STREAM_N sequential requests each side"
stream_run stream_direct "$DIRECT_URL"
stream_run stream_proxima "$PROXIMA_URL"

LOAD_AFTER="$(loadavg)"
RSS_END="$(status_kb "$GW_PID" VmRSS)"
HWM_END="$(status_kb "$GW_PID" VmHWM)"
GW_THREADS="$(status_kb "$GW_PID" Threads)"

# ---------------------------------------------------------------- instructions per request
# Wall-clock CPU depends on what else the machine runs; instructions do not. A second gateway
# under callgrind serves 300 warm-up requests, then 2000 counted ones (user space only: the
# kernel's share, ~1/3 of the CPU time in perf, is not in this number).
IR_PER_REQ=""
if [ "${CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    log "instruction count under callgrind (2000 requests)"
    CG_PORT="$(free_port)"
    sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$CG_PORT/" "$WORK/proxima.toml" >"$WORK/cg.toml"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p.out" \
        "$BIN/proxima" serve --config "$WORK/cg.toml" >"$WORK/cg.log" 2>&1 &
    CG_PID=$!
    PIDS+=("$CG_PID")
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$CG_PORT/health/live" && break; sleep 0.2; done
    CG_URL="http://127.0.0.1:$CG_PORT/v1/chat/completions"
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        -D "$WORK/body.json" -n 300 -c 16 "$CG_URL" >/dev/null
    callgrind_control -z "$CG_PID" >/dev/null
    taskset -c "$LOAD_CORE" oha --no-tui "${OHA_JSON[@]}" -m POST -H 'content-type: application/json' \
        -D "$WORK/body.json" -n 2000 -c 16 "$CG_URL" >"$WORK/cg.json"
    callgrind_control -d "$CG_PID" >/dev/null
    sleep 1
    CG_OK="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['statusCodeDistribution'].get('200', 0))" "$WORK/cg.json")"
    CG_IR="$(grep -hE '^(summary|totals):' "$WORK"/cg."$CG_PID".out.1 2>/dev/null | head -1 | awk '{print $2}')"
    if [ -n "$CG_IR" ] && [ "$CG_OK" -gt 0 ]; then
        IR_PER_REQ="$((CG_IR / CG_OK))"
    fi
    kill "$CG_PID" 2>/dev/null || true
fi

# ---------------------------------------------------------------- the table
mkdir -p "$(dirname "$OUT")"
python3 - "$WORK" "$OUT" <<PY
import json, os, statistics, sys
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

def cpu(name):
    gw, core = map(int, open(f"{work}/{name}.cpu").read().split())
    return gw, core

def pct(a, b):
    return f"{100 * a / b:.0f} %" if b else "n/a"

def us(x):
    return f"{x:,.0f} µs"

rows = []
rows.append("| measurement | direct (oha → mock) | through proxima | proxima vs direct |")
rows.append("|---|---:|---:|---:|")
notes = []
for c in conc:
    d, p = oha(f"tp_direct_c{c}"), oha(f"tp_proxima_c{c}")
    rows.append(f"| max throughput, c={c} (req/s) | {d['rps']:,.0f} | {p['rps']:,.0f} | {pct(p['rps'], d['rps'])} |")
    rows.append(f"| &nbsp;&nbsp;latency p50 / p99 at c={c} | {us(d['p50'])} / {us(d['p99'])} | {us(p['p50'])} / {us(p['p99'])} | {p['p50']-d['p50']:+,.0f} / {p['p99']-d['p99']:+,.0f} µs |")
    gw, core = cpu(f"tp_proxima_c{c}")
    per_req = gw / clk * 1e6 / p["ok"] if p["ok"] else float("nan")
    other = max(core - gw, 0)
    rows.append(f"| &nbsp;&nbsp;gateway CPU per request at c={c} | – | {per_req:.1f} µs | – |")
    notes.append(f"c={c}: gateway used {gw/clk:.2f} s CPU for {p['ok']:,} answered requests; "
                 f"other work on core $GW_CORE meanwhile {other/clk:.2f} s; errors/non-200: direct {d['bad']}, proxima {p['bad']}")
for q in rates:
    d, p = oha(f"rate_direct_q{q}"), oha(f"rate_proxima_q{q}")
    sat = lambda x: "" if x["rps"] >= 0.95 * float(q) else f" (saturated: {x['rps']:,.0f} req/s)"
    rows.append(f"| latency p50 at {q} req/s | {us(d['p50'])}{sat(d)} | {us(p['p50'])}{sat(p)} | {p['p50']-d['p50']:+,.0f} µs |")
    rows.append(f"| latency p99 at {q} req/s | {us(d['p99'])} | {us(p['p99'])} | {p['p99']-d['p99']:+,.0f} µs |")
    gw, _ = cpu(f"rate_proxima_q{q}")
    per_req = gw / clk * 1e6 / p["ok"] if p["ok"] else float("nan")
    notes.append(f"{q} req/s: achieved {d['rps']:,.0f} direct / {p['rps']:,.0f} proxima; gateway CPU {per_req:.1f} µs/request; "
                 f"errors/non-200: direct {d['bad']}, proxima {p['bad']}")

def stream(name):
    first, total, bad = [], [], 0
    for line in open(f"{work}/{name}.txt"):
        a, b, code = line.split()
        if code != "200":
            bad += 1
            continue
        first.append(float(a) * 1e6); total.append(float(b) * 1e6)
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1]
    return {"f50": q(first, 50), "f99": q(first, 99), "t50": q(total, 50), "t99": q(total, 99), "n": len(first), "bad": bad}
sd, sp = stream("stream_direct"), stream("stream_proxima")
rows.append(f"| stream: first chunk p50 / p99 | {us(sd['f50'])} / {us(sd['f99'])} | {us(sp['f50'])} / {us(sp['f99'])} | {sp['f50']-sd['f50']:+,.0f} / {sp['f99']-sd['f99']:+,.0f} µs |")
rows.append(f"| stream: last chunk p50 / p99 | {us(sd['t50'])} / {us(sd['t99'])} | {us(sp['t50'])} / {us(sp['t99'])} | {sp['t50']-sd['t50']:+,.0f} / {sp['t99']-sd['t99']:+,.0f} µs |")
notes.append(f"streams: {sd['n']} direct / {sp['n']} proxima answered 200 (failed: {sd['bad']} / {sp['bad']}); "
             f"times are curl's time_starttransfer and time_total, including curl's connect")
rss = lambda kb: f"{int(kb)/1024:.1f} MiB"
rows.append(f"| gateway RSS: start / after warm-up / after throughput / end | – | {rss($RSS_START)} / {rss($RSS_WARM)} / {rss($RSS_AFTER_TP)} / {rss($RSS_END)} | – |")
rows.append(f"| gateway peak RSS (VmHWM) | – | {rss($HWM_END)} | – |")
if "$IR_PER_REQ":
    rows.append(f"| gateway user-space instructions per request (callgrind, c=16) | – | {int('$IR_PER_REQ'):,} | – |")

head = f"""# Proxima benchmark — $START_TIME

- gateway pinned to core $GW_CORE ($GW_THREADS threads); mock-upstream (no latency, no recording), oha and curl on core $LOAD_CORE
- request $REQ_BYTES B, answer $RESP_DIRECT B direct / $RESP_PROXIMA B through proxima; streamed answer $STREAM_DIRECT / $STREAM_PROXIMA B
- $OHA_VERSION, {"$DURATION"} per run; fixed-rate runs with -c 64 and --latency-correction; {len(conc)*2 + len(rates)*2} oha runs, $STREAM_N streams per side
- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), VM), $(uname -r); quietness: $QUIET_NOTE; load average before / after: $LOAD_BEFORE / $LOAD_AFTER
- scheduling: $PRIORITY_NOTE
- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')

"""
text = head + "\n".join(rows) + "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes) + "\n"
open(out, "w").write(text)
print(text)
PY
log "written to $OUT"

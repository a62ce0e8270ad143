#!/usr/bin/env bash
# The cost of identity and accounting (issue 5), as throughput ratios measured back to back
# (so machine noise hits all alike). Every gateway below writes the usage ledger (SQLite).
#   core       no keys: anonymous caller, no limits                     (the baseline)
#   accounts   a virtual key (from the admin API) with rpm, tpm and a daily budget, in a team
#              with its own rpm, tpm and budget, on a model with its own rpm/tpm — local counters
#   redis      the same, with the counters in Redis (one script per check)
#   before     optional: BASELINE_BIN=path/to/old/proxima, the gateway before issue 5, same config
#              as `core` (its config has no [storage])
# Set-up as bench/run.sh: gateway pinned to core 0, mock-upstream and oha on core 1.
#   ROUNDS=3 DURATION=10s CONCURRENCY=32 SKIP_BUILD=1 [BASELINE_BIN=...] bench/accounts.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
source bench/common.sh

MASTER="bench-master-key"
config() { # name port storage-lines model-lines
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n%s\n' "$2" "$3"
        printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n\n' "$MOCK_PORT"
        printf '[models.bench]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n%s\n' "$4"
    } >"$WORK/$1.toml"
}
start() { # name port binary
    taskset -c 0 "$3" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/health/live" >/dev/null && break; sleep 0.1; done
}
stop_all_gateways() { for pid in "${PIDS[@]:1}"; do kill "$pid" 2>/dev/null || true; done; PIDS=("${PIDS[0]}"); sleep 0.5; }

# Generous limits: the point is the cost of checking them, not refusals.
LIMITS='rpm = 100000000
tpm = 100000000000'

TEXT="Proxima benchmark request: a short user message of about one hundred and seventy characters, echoed back by the mock upstream so that the answer is a typical small reply."
printf '{"model":"bench","messages":[{"role":"user","content":"%s"}]}' "$TEXT" >"$WORK/body.json"

rps() { # name port [key] -> requests per second (only 200s count)
    local auth=()
    [ -n "${3:-}" ] && auth=(-H "authorization: Bearer $3")
    taskset -c 1 oha --no-tui --output-format json -z "$DURATION" -c "$CONCURRENCY" -m POST \
        -H 'content-type: application/json' "${auth[@]}" -D "$WORK/body.json" \
        "http://127.0.0.1:$2/v1/chat/completions" >"$WORK/$1.json"
    python3 - "$WORK/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r.get("statusCodeDistribution", {}).get("200", 0)
print(f"{ok / r['summary']['total']:.0f}")
PY
}

PORT="$(free_port)"
config core "$PORT" "[storage]
database = \"sqlite://$WORK/core.db\"
" ""
config accounts "$PORT" "master_key = \"$MASTER\"
[storage]
database = \"sqlite://$WORK/accounts.db\"
" "$LIMITS"
config redis "$PORT" "master_key = \"$MASTER\"
[storage]
database = \"sqlite://$WORK/redis.db\"
redis = \"$REDIS_URL\"
" "$LIMITS"
config before "$PORT" "" ""

# Keys are made once per database; each round restarts the gateways on the same files.
start accounts "$PORT" "$BIN/proxima"; KEY_ACCOUNTS="$(bench_key "$PORT" "$MASTER")"; stop_all_gateways
start redis "$PORT" "$BIN/proxima"; KEY_REDIS="$(bench_key "$PORT" "$MASTER")"; stop_all_gateways

measure() { # name binary [key]
    start "$1" "$PORT" "$2"
    DURATION=2s rps "warm-$1" "$PORT" "${3:-}" >/dev/null
    rps "$1-$round" "$PORT" "${3:-}"
    stop_all_gateways
}

header="| round | core (req/s) | accounts, local counters | accounts, Redis counters |"
rule="|---:|---:|---:|---:|"
if [ -n "${BASELINE_BIN:-}" ]; then header="$header before issue 5 |"; rule="$rule---:|"; fi
echo "$header"; echo "$rule"
sum_c=0; sum_a=0; sum_r=0; sum_b=0
C=(); A=(); R=(); BB=()
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : int((v[NR/2] + v[NR/2+1]) / 2)}'; }
for round in $(seq "$ROUNDS"); do
    c="$(measure core "$BIN/proxima")"
    a="$(measure accounts "$BIN/proxima" "$KEY_ACCOUNTS")"
    r="$(measure redis "$BIN/proxima" "$KEY_REDIS")"
    sum_c=$((sum_c + c)); sum_a=$((sum_a + a)); sum_r=$((sum_r + r)); C+=("$c"); A+=("$a"); R+=("$r")
    line="| $round | $c | $a ($((100 * a / c)) %) | $r ($((100 * r / c)) %) |"
    if [ -n "${BASELINE_BIN:-}" ]; then
        b="$(measure before "$BASELINE_BIN")"; sum_b=$((sum_b + b)); BB+=("$b")
        line="$line $b (core is $((100 * c / b)) % of it) |"
    fi
    echo "$line"
done
line="| mean | $((sum_c / ROUNDS)) | $((sum_a / ROUNDS)) ($((100 * sum_a / sum_c)) %) | $((sum_r / ROUNDS)) ($((100 * sum_r / sum_c)) %) |"
if [ -n "${BASELINE_BIN:-}" ]; then line="$line $((sum_b / ROUNDS)) (core is $((100 * sum_c / sum_b)) % of it) |"; fi
echo "$line"
mc="$(median "${C[@]}")"; ma="$(median "${A[@]}")"; mr="$(median "${R[@]}")"
line="| median | $mc | $ma ($((100 * ma / mc)) %) | $mr ($((100 * mr / mc)) %) |"
if [ -n "${BASELINE_BIN:-}" ]; then
    mb="$(median "${BB[@]}")"
    line="$line $mb (core is $((100 * mc / mb)) %, accounts $((100 * ma / mb)) % of it) |"
fi
echo "$line"
for db in accounts redis; do
    rows="$(python3 -c "import sqlite3; print(sqlite3.connect('$WORK/$db.db').execute('select count(*) from usage_ledger').fetchone()[0])")"
    echo "ledger rows written by the $db gateway: $rows"
done

#!/usr/bin/env bash
# The cost of translation and of routing, as throughput ratios against plain pass-through,
# measured back to back on one gateway (so machine noise hits all three alike):
#   pass-through  OpenAI chat surface -> one OpenAI-kind target            (the baseline)
#   translated    Anthropic /v1/messages surface -> the same OpenAI target  (issue: within 15%)
#   routed        OpenAI chat surface -> a model of 10 weighted targets, breakers on (>= 95%)
# Set-up as bench/run.sh: gateway pinned to core 0, mock-upstream and oha on core 1.
#   ROUNDS=3 DURATION=10s CONCURRENCY=32 SKIP_BUILD=1 bench/ratios.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source bench/common.sh
GW_PORT="$(free_port)"

{
    printf '[server]\nlisten = "127.0.0.1:%s"\n\n' "$GW_PORT"
    for i in $(seq 0 9); do
        printf '[providers.up%s]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n\n' "$i" "$MOCK_PORT"
    done
    printf '[models.bench]\ntargets = [{ provider = "up0", model = "bench-upstream" }]\n\n'
    printf '[models.routed]\nstrategy = "weighted"\nretries = 2\ntargets = [\n'
    for i in $(seq 0 9); do
        printf '  { provider = "up%s", model = "bench-upstream", weight = %s },\n' "$i" "$((i + 1))"
    done
    printf ']\n'
} >"$WORK/proxima.toml"
taskset -c 0 "$BIN/proxima" serve --config "$WORK/proxima.toml" >"$WORK/proxima.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$GW_PORT/health/ready" >/dev/null && break; sleep 0.1; done

TEXT="Proxima benchmark request: a short user message of about one hundred and seventy characters, echoed back by the mock upstream so that the answer is a typical small reply."
chat_body() { printf '{"model":"%s","messages":[{"role":"user","content":"%s"}]}' "$1" "$TEXT"; }
printf '%s' "$(chat_body bench)" >"$WORK/pass.json"
printf '%s' "$(chat_body routed)" >"$WORK/routed.json"
printf '{"model":"bench","max_tokens":256,"messages":[{"role":"user","content":"%s"}]}' "$TEXT" >"$WORK/messages.json"

rps() { # name path body -> requests per second (only 200s count)
    taskset -c 1 oha --no-tui --output-format json -z "$DURATION" -c "$CONCURRENCY" -m POST \
        -H 'content-type: application/json' -D "$WORK/$3" "http://127.0.0.1:$GW_PORT$2" >"$WORK/$1.json"
    python3 - "$WORK/$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r.get("statusCodeDistribution", {}).get("200", 0)
total = r["summary"]["total"]
print(f"{ok / total:.0f}")
PY
}

# Warm up every path once.
DURATION=2s rps warm1 /v1/chat/completions pass.json >/dev/null
DURATION=2s rps warm2 /v1/messages messages.json >/dev/null
DURATION=2s rps warm3 /v1/chat/completions routed.json >/dev/null

echo "| round | pass-through (req/s) | Anthropic surface -> OpenAI backend | 10 targets + breakers |"
echo "|---:|---:|---:|---:|"
sum_p=0; sum_t=0; sum_r=0
for round in $(seq "$ROUNDS"); do
    p="$(rps "p$round" /v1/chat/completions pass.json)"
    t="$(rps "t$round" /v1/messages messages.json)"
    r="$(rps "r$round" /v1/chat/completions routed.json)"
    sum_p=$((sum_p + p)); sum_t=$((sum_t + t)); sum_r=$((sum_r + r))
    echo "| $round | $p | $t ($((100 * t / p)) %) | $r ($((100 * r / p)) %) |"
done
echo "| mean | $((sum_p / ROUNDS)) | $((sum_t / ROUNDS)) ($((100 * sum_t / sum_p)) %) | $((sum_r / ROUNDS)) ($((100 * sum_r / sum_p)) %) |"

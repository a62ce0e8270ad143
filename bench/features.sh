# Sourced by bench/instructions.sh and bench/syscalls.sh: FEATURES=a,b,... switches features on
# (or off) over the script's config, to measure what each costs on a call it does not change:
#   no-metrics  [telemetry] metrics = false (metrics are on by default)
#   cache       [cache] exact, and every request a new prompt: each lookup misses, each answer
#               is stored (the script sends numbered bodies, see cache_bodies)
#   cache-full  as cache, with the memory bound at 256 KiB: about 300 entries, full after
#               syscalls.sh's warm-up and a few requests into instructions.sh's count. Each
#               answer stored evicts the oldest, as in a cache that has run long enough
#               (cache measures one filling from empty: fresh memory, its map growing)
#   cache-hit   [cache] exact, and every request the same prompt: each lookup after the first
#               hits, and is answered from the stored entry
#   pii         [pii] mode = "mask", on a prompt with nothing to mask
#   guardrails  [guardrails] prompt_injection = "block" and one deny rule, on a clean prompt

# feature_toml: the config sections of $FEATURES, on stdout.
feature_toml() {
    local feature
    for feature in $(tr , " " <<<"${FEATURES:-}"); do
        case "$feature" in
        no-metrics) printf '[telemetry]\nmetrics = false\n' ;;
        cache | cache-hit) printf '[cache]\nexact = { ttl = "1h" }\n' ;;
        cache-full) printf '[cache]\nexact = { ttl = "1h" }\nmax_bytes = 262144\n' ;;
        pii) printf '[pii]\nmode = "mask"\n' ;;
        guardrails) printf '[guardrails]\nprompt_injection = "block"\ndeny = ["(?i)project falcon"]\n' ;;
        *) echo "unknown feature: $feature" >&2; return 2 ;;
        esac
    done
}

# wants_feature NAME: whether $FEATURES names it.
wants_feature() { [[ ",${FEATURES:-}," == *",$1,"* ]]; }

# numbered_bodies: whether the load sends cache_bodies' numbered bodies: with FEATURES=cache, and
# with NUMBERED=1 without it. That is the baseline a miss is measured against: the same bodies
# cost oha more to send than one repeated body, and a load generator that sends fewer requests a
# second leaves the gateway more wake-ups per request.
numbered_bodies() { wants_feature cache || wants_feature cache-full || [ "${NUMBERED:-0}" = 1 ]; }

# cached: whether $FEATURES switches the cache on, for the ledger's verdicts after the run.
cached() { wants_feature cache || wants_feature cache-full || wants_feature cache-hit; }

# cache_bodies TEXT STREAM_FIELD: a body per line, each with its own number, many more than are
# sent, so that every cache lookup misses whether oha takes the lines in turn or at random.
cache_bodies() {
    local i
    for i in $(seq 1 200000); do
        printf '{"model":"bench","messages":[{"role":"user","content":"%s (%d)"}]%s}\n' "$1" "$i" "$2"
    done
}

# cache_verdicts LEDGER_DB: the ledger's cache verdicts, to show the lookups really missed (rows
# are written within 200 ms of their answers).
cache_verdicts() {
    python3 -c 'import sqlite3,sys; print("cache verdicts:", dict(sqlite3.connect(sys.argv[1]).execute("SELECT cache, count(*) FROM usage_ledger GROUP BY cache").fetchall()))' "$1"
}

#!/usr/bin/env bash
# Writes crates/proxima/link-order.txt: the functions a running gateway executes, hottest
# first, which the linker of a release build lays out side by side (crates/proxima/build.rs,
# `link_order`). Runs the release binary under callgrind twice, each time from start to stop:
#   core      no keys, ledger on (the default config): plain and streamed requests
#   accounts  a virtual key with rpm, tpm and a daily budget, in a team: the same requests
# Run it again after changing the request path, a dependency or the release profile: the linker
# skips names a build no longer has (what LTO inlines changes with the code; ThinLTO, in a
# profile that uses it, renames some functions whenever their module changes), and puts the
# functions the file lacks after those it lists.
#   bench/link-order.sh [PROXIMA_BINARY]     (builds the release binaries first unless SKIP_BUILD=1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in valgrind callgrind_control curl python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
OUT=crates/proxima/link-order.txt
# Builds the release binaries unless SKIP_BUILD=1; $WORK, free_port, mock-upstream at $MOCK_PORT.
# shellcheck source=bench/common.sh
source bench/common.sh
PROXIMA="${1:-$BIN/proxima}"
TEXT="Proxima link order: a short user message, echoed back by the mock upstream as a small reply."

# profile MODE : one run under callgrind, from start to a clean stop, into $WORK/MODE.out
profile() {
    local mode=$1 port auth=() pid
    port="$(free_port)"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n' "$port"
        [ "$mode" = accounts ] && printf 'master_key = "link-order-master-key"\n'
        printf '[storage]\ndatabase = "sqlite://%s/%s.db"\n' "$WORK" "$mode"
        printf '[providers.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT"
        printf '[models.bench]\ntargets = [{ provider = "up", model = "gpt-4o-mini" }]\n'
        [ "$mode" = accounts ] && printf 'rpm = 100000000\ntpm = 100000000000\n'
    } >"$WORK/$mode.toml"
    # Mangled names, as the linker knows them.
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$mode.out" \
        "$PROXIMA" serve --config "$WORK/$mode.toml" >"$WORK/$mode.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$port/health/live" && break; sleep 0.2; done
    if [ "$mode" = accounts ]; then
        for _ in $(seq 1 600); do grep -q "tokenizer loaded" "$WORK/$mode.log" && break; sleep 0.2; done
        auth=(-H "authorization: Bearer $(bench_key "$port" link-order-master-key)")
    fi
    # What the start ran goes in a file of its own (MODE.out.1), the requests in MODE.out.
    callgrind_control -d "$pid" >/dev/null 2>&1
    for stream in false true; do
        oha --no-tui -m POST -H 'content-type: application/json' "${auth[@]}" -n 500 -c 16 \
            -d "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"$TEXT\"}],\"stream\":$stream}" \
            "http://127.0.0.1:$port/v1/chat/completions" |
            awk -v run="$mode, stream $stream" '$1 == "[200]" && $3 == "responses" {print run ": " $2 " answered"}' >&2
    done
    kill -INT "$pid"
    wait "$pid" || true
}
profile core
profile accounts

# Self cost of every function of the binary, the hottest first.
python3 - "$(readlink -f "$PROXIMA")" "$WORK" >"$WORK/order" <<'PY'
import collections, re, sys
binary, work = sys.argv[1], sys.argv[2]

def costs(paths):
    """Self cost of each function of the binary in these callgrind files."""
    cost = collections.Counter()
    for path in paths:
        objects, names = {}, {}
        obj = fn = None
        in_call = False
        for line in open(path, errors="replace"):
            m = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                table = objects if kind.endswith("ob") else names
                if name is not None:
                    table[ident] = name
                if kind == "ob":
                    obj = objects[ident]
                elif kind == "fn":
                    # callgrind marks a recursive function's deeper levels with 'N
                    fn, in_call = re.sub(r"'\d+$", "", names[ident]), False
                continue
            if line.startswith("calls="):
                in_call = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if in_call:
                    in_call = False
                elif obj == binary and fn:
                    parts = line.split()
                    if len(parts) > 1:
                        cost[fn] += int(parts[1])
    return cost

# The default config's requests first, so that they run from as few pages as can be; then
# what only a virtual key's requests ran; then what only the start ran.
listed = set()
for cost in (
    costs([f"{work}/core.out"]),
    costs([f"{work}/accounts.out"]),
    costs([f"{work}/{mode}.out.1" for mode in ("core", "accounts")]),
):
    for name, _ in cost.most_common():
        if name not in listed:
            listed.add(name)
            print(name)
PY
{
    echo "# The functions a running gateway executes, hottest first: written by bench/link-order.sh"
    echo "# from $(git rev-parse --short HEAD), read by crates/proxima/build.rs. Do not edit."
    cat "$WORK/order"
} >"$OUT"
echo "$OUT: $(wc -l <"$WORK/order") functions"

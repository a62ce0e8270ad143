# Shared by bench/ratios.sh, bench/accounts.sh and bench/link-order.sh (sourced, from the
# repository root): builds the release binaries unless SKIP_BUILD=1, makes sure oha is there,
# gives a scratch directory whose processes are killed on exit, and starts mock-upstream on
# core 1 at $MOCK_PORT.
DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-32}"
ROUNDS="${ROUNDS:-3}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p proxima -p mock-upstream
command -v oha >/dev/null || cargo install oha --locked

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck source=bench/keys.sh
source bench/keys.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT="$(free_port)"
taskset -c 1 "$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --latency 0ms --no-record >"$WORK/mock.log" 2>&1 &
PIDS+=($!)

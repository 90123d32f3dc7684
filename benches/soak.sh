#!/usr/bin/env bash
# Soak test of `mistral-run serve`: SOAK_SECONDS (600) of mixed load on
# loopback with --parallel 8 (benches/soak.py: chat and completions, streamed
# or not, embeddings, streams dropped mid-way, bad requests that must get a
# 4xx), then the verdict: no failed request, the server alive, and its RSS at
# the end at most 5% above its RSS after a 60 s warm-up. Also reports TTFT
# p50/p95 and aggregate tok/s. Writes benches/results/serve/soak.json; exits
# non-zero when a criterion fails.
#
#   bash benches/soak.sh                     # 10 minutes
#   SOAK_SECONDS=30 bash benches/soak.sh     # a smoke run
#
# Environment: BIN (target/release/mistral-run, else target/debug/), MODEL (a
# GGUF; default: the server's default model), SOAK_SECONDS, WARMUP_SECONDS
# (60), PARALLEL (8), CONCURRENCY (clients, = PARALLEL), CTX_SIZE (8192),
# THREADS (the server's default), MAX_RSS_GROWTH (0.05), SOAK_JSON (the output
# file). The Python side runs in the venv of tests/server-clients.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/wait-port.sh

if [ -z "${BIN:-}" ]; then
    BIN=target/release/mistral-run
    [ -x "$BIN" ] || BIN=target/debug/mistral-run
fi
SOAK_SECONDS=${SOAK_SECONDS:-600}
WARMUP_SECONDS=${WARMUP_SECONDS:-60}
PARALLEL=${PARALLEL:-8}
CONCURRENCY=${CONCURRENCY:-$PARALLEL}
CTX_SIZE=${CTX_SIZE:-8192}
MAX_RSS_GROWTH=${MAX_RSS_GROWTH:-0.05}
SOAK_JSON=${SOAK_JSON:-benches/results/serve/soak.json}
VENV=${CLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run/venv-clients}
STARTUP_SECONDS=${STARTUP_SECONDS:-600}

[ -x "$BIN" ] || { echo "soak.sh: $BIN not found (cargo build --release -p mistral-run, or set BIN)" >&2; exit 1; }
if ! "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai>=3,<4"
fi

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

key=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')
args=(serve --host 127.0.0.1 --port 0 --port-file "$tmp/port" --parallel "$PARALLEL"
      --ctx-size "$CTX_SIZE" --api-key "$key")
[ -n "${MODEL:-}" ] && args+=(-m "$MODEL")
[ -n "${THREADS:-}" ] && args+=(-t "$THREADS")
log=$tmp/server.log
"$BIN" "${args[@]}" >"$log" 2>&1 &
pid=$!
port=$(wait_port soak.sh "$pid" "$tmp/port" "$log" "$STARTUP_SECONDS") || exit 1
echo "soak.sh: $BIN serve (pid $pid) on 127.0.0.1:$port, $SOAK_SECONDS s of load, $CONCURRENCY clients"

rc=0
"$VENV/bin/python" benches/soak.py --port "$port" --pid "$pid" --api-key "$key" \
    --seconds "$SOAK_SECONDS" --warmup "$WARMUP_SECONDS" --concurrency "$CONCURRENCY" \
    --max-rss-growth "$MAX_RSS_GROWTH" --json "$SOAK_JSON" || rc=$?
if [ "$rc" != 0 ]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -n 40 "$log" >&2
fi
exit "$rc"

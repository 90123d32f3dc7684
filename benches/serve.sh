#!/usr/bin/env bash
# The HTTP server under load, side by side with llama.cpp's llama-server in one
# sitting on one machine: for each model, `mistral-run serve` and then
# llama-server, each alone on the machine (one server up at a time), the same
# streamed chat requests from benches/serve-load.py: CLIENTS concurrent
# clients (8) x REQUESTS requests (4) x TOKENS tokens (64) at temperature 0,
# then one client alone (REQUESTS_1 requests) for reference.
#
#   bash benches/serve.sh                  # both models, both engines
#   MODELS=path/to.gguf ENGINES=ours CLIENTS=2 TOKENS=8 bash benches/serve.sh
#
# Both servers get the same settings: THREADS threads (2), PARALLEL slots (8),
# CTX_SIZE context in all (8192; llama-server's -c is shared by its slots,
# ours is per session, so ours gets CTX_SIZE / PARALLEL):
#   ours:  $BIN serve -m FILE -t 2 --parallel 8 --ctx-size 1024
#   llama: llama-server -m FILE -t 2 -np 8 -c 8192
# Environment:
#   BIN           our binary (target/release/mistral-run; build it first with
#                 cargo build --release -p mistral-run)
#   LLAMA_SERVER  llama-server, built from the source that the llama-cpp-python
#                 0.3.16 sdist vendors (default below); skipped when missing
#   LLAMA_SERVER_NOAMX  the same built without AMX (-DGGML_NATIVE=OFF with the
#                 AVX-512 flags), used for Q4_0/Q4_1 files when it exists: on
#                 AMX CPUs llama.cpp's Q4_0/Q4_1 AMX path computes garbage (see
#                 benches/engine.sh); k-quants use LLAMA_SERVER
#   LLAMA_ARGS    more llama-server options (default --jinja: the GGUF's own
#                 chat template, as ours uses, so both engines see the same
#                 prompt tokens; without it llama-server's built-in ChatML
#                 drops SmolLM2's default system message)
#   MODELS        space-separated GGUF files (default: SmolLM2-135M-Instruct
#                 Q4_1 from models/fetch-smollm2.sh and $SYNTH_1B)
#   SYNTH_1B      (~/.cache/mistral-run/models/synth-1b-Q4_K_M.gguf; made with
#                 `$BIN synth --preset 1b --type q4_k_m --sliding-window 0`
#                 when missing, as benches/engine.sh does)
#   ENGINES       "ours llama" (the order within a model); ROUNDS (1) repeats
#                 the whole alternation, and the tables take the median
#   IGNORE_EOS    auto (default: send "ignore_eos": true to both engines when
#                 ours accepts it, to neither otherwise), 1 or 0
#   MAX_SECONDS   bound on one load run (900)
#   OUT           benches/results/serve
# Results: OUT/<model>-<engine>-c<clients>-r<round>.json (serve-load.py's
# output), OUT/<model>-<engine>.log (server logs and uptime), and then
# benches/plot_serve.py writes OUT/serve.md (the table) and OUT/serve.png.
# The Python side runs in the venv of tests/server-clients.sh (openai and
# matplotlib are added to it when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/wait-port.sh

BIN=${BIN:-target/release/mistral-run}
LLAMA_DIR=$HOME/.cache/llama-cpp/llama_cpp_python-0.3.16/vendor/llama.cpp
LLAMA_SERVER=${LLAMA_SERVER:-$LLAMA_DIR/build/bin/llama-server}
LLAMA_SERVER_NOAMX=${LLAMA_SERVER_NOAMX:-$LLAMA_DIR/build-noamx/bin/llama-server}
LLAMA_ARGS=${LLAMA_ARGS:---jinja}
SYNTH_1B=${SYNTH_1B:-$HOME/.cache/mistral-run/models/synth-1b-Q4_K_M.gguf}
THREADS=${THREADS:-2}
PARALLEL=${PARALLEL:-8}
CTX_SIZE=${CTX_SIZE:-8192}
CLIENTS=${CLIENTS:-8}
REQUESTS=${REQUESTS:-4}
REQUESTS_1=${REQUESTS_1:-2}
TOKENS=${TOKENS:-64}
MAX_SECONDS=${MAX_SECONDS:-900}
ROUNDS=${ROUNDS:-1}
ENGINES=${ENGINES:-ours llama}
IGNORE_EOS=${IGNORE_EOS:-auto}
OUT=${OUT:-benches/results/serve}
VENV=${CLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run/venv-clients}
STARTUP_SECONDS=${STARTUP_SECONDS:-600}

[ -x "$BIN" ] || { echo "serve.sh: $BIN not found (cargo build --release -p mistral-run, or set BIN)" >&2; exit 1; }
mkdir -p "$OUT"

# --- Python with openai and matplotlib ---------------------------------------
if ! "$VENV/bin/python" -c 'import openai, matplotlib' 2>/dev/null; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai>=3,<4" matplotlib
fi
PY=$VENV/bin/python

# --- models ----------------------------------------------------------------
if [ -z "${MODELS:-}" ]; then
    smol=$(bash models/fetch-smollm2.sh)
    if [ ! -f "$SYNTH_1B" ]; then
        mkdir -p "$(dirname "$SYNTH_1B")"
        "$BIN" synth --preset 1b --type q4_k_m --sliding-window 0 -o "$SYNTH_1B"
    fi
    MODELS="$smol $SYNTH_1B"
fi
for m in $MODELS; do [ -f "$m" ] || { echo "serve.sh: model $m not found" >&2; exit 1; }; done
case " $ENGINES " in *" llama "*)
    [ -x "$LLAMA_SERVER" ] || { echo "serve.sh: $LLAMA_SERVER not found: llama-server runs skipped" >&2
                                ENGINES=${ENGINES//llama/}; } ;;
esac

# --- one server at a time ----------------------------------------------------
pid=
stop_server() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    pid=
}
tmp=$(mktemp -d)
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

health_code() { # port -> the HTTP status of GET /health (0 when none)
    "$PY" - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=5) as r:
        print(r.status)
except Exception as e:
    print(getattr(e, "code", 0))
PY
}

wait_health() { # port log
    local deadline=$((SECONDS + STARTUP_SECONDS))
    until [ "$(health_code "$1")" = 200 ]; do
        kill -0 "$pid" 2>/dev/null || { echo "serve.sh: the server exited; see $2" >&2; tail -n 20 "$2" >&2; exit 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "serve.sh: no healthy server after ${STARTUP_SECONDS}s; see $2" >&2; exit 1; }
        sleep 0.5
    done
}

start_server() { # engine model log -> sets pid and port
    local engine=$1 model=$2 log=$3
    if [ "$engine" = ours ]; then
        rm -f "$tmp/port"
        "$BIN" serve -m "$model" -t "$THREADS" --parallel "$PARALLEL" --ctx-size "$((CTX_SIZE / PARALLEL))" \
            --host 127.0.0.1 --port 0 --port-file "$tmp/port" >>"$log" 2>&1 &
        pid=$!
        port=$(wait_port serve.sh "$pid" "$tmp/port" "$log" "$STARTUP_SECONDS") || exit 1
        cmd="$BIN serve -m $(basename "$model") -t $THREADS --parallel $PARALLEL --ctx-size $((CTX_SIZE / PARALLEL))"
    else
        port=$(free_port)
        local exe=$LLAMA_SERVER
        case "$(basename "$model" | tr a-z A-Z)" in
            *Q4_0*|*Q4_1*)
                if [ -x "$LLAMA_SERVER_NOAMX" ]; then exe=$LLAMA_SERVER_NOAMX
                else echo "serve.sh: warning: $LLAMA_SERVER_NOAMX not found; llama-server's AMX Q4_0/Q4_1 path may compute garbage" >&2
                fi ;;
        esac
        # shellcheck disable=SC2086
        "$exe" -m "$model" -t "$THREADS" -np "$PARALLEL" -c "$CTX_SIZE" $LLAMA_ARGS \
            --host 127.0.0.1 --port "$port" >>"$log" 2>&1 &
        pid=$!
        cmd="$exe -m $(basename "$model") -t $THREADS -np $PARALLEL -c $CTX_SIZE $LLAMA_ARGS"
    fi
    wait_health "$port" "$log"
}

# Does ours take "ignore_eos"? (It decides for both engines, so that both get
# the same requests.)
probe_ignore_eos() { # port
    "$PY" - "$1" <<'PY'
import json, sys, urllib.request, urllib.error
body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                   "ignore_eos": True}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=300) as r:
        print(1 if r.status == 200 else 0)
except urllib.error.HTTPError:
    print(0)
PY
}

load() { # port label json clients requests
    local eos=()
    [ "$IGNORE_EOS" = 1 ] && eos=(--ignore-eos)
    "$PY" benches/serve-load.py --base-url "http://127.0.0.1:$1/v1" --label "$2" --json "$3" \
        --clients "$4" --requests "$5" --tokens "$TOKENS" --max-seconds "$MAX_SECONDS" "${eos[@]}" \
        --meta "server=${cmd/#$HOME/\~}" --meta "uptime=$(uptime)" \
        || echo "serve.sh: $2 had failures (see $3)" >&2
}

echo "serve.sh: models: $MODELS; engines: $ENGINES; $CLIENTS clients x $REQUESTS x $TOKENS tokens"
for round in $(seq "$ROUNDS"); do
    for model in $MODELS; do
        name=$(basename "$model" .gguf)
        for engine in $ENGINES; do
            log=$OUT/$name-$engine.log
            { echo "=== round $round $(date -u +%FT%TZ)"; uptime; } >>"$log"
            start_server "$engine" "$model" "$log"
            if [ "$IGNORE_EOS" = auto ]; then
                if [ "$engine" = ours ]; then
                    IGNORE_EOS=$(probe_ignore_eos "$port")
                else
                    echo "serve.sh: IGNORE_EOS=auto needs ours first: sending no ignore_eos" >&2
                    IGNORE_EOS=0
                fi
                if [ "$IGNORE_EOS" = 1 ]; then echo "serve.sh: ignore_eos sent to both engines"
                else echo "serve.sh: ignore_eos sent to neither engine (ours rejects it)"; fi
            fi
            echo "--- $name / $engine (round $round) on port $port"
            load "$port" "$name/$engine c$CLIENTS" "$OUT/$name-$engine-c$CLIENTS-r$round.json" "$CLIENTS" "$REQUESTS"
            [ "$CLIENTS" = 1 ] ||
                load "$port" "$name/$engine c1" "$OUT/$name-$engine-c1-r$round.json" 1 "$REQUESTS_1"
            stop_server
            uptime >>"$log"
        done
    done
done

"$PY" benches/plot_serve.py "$OUT"

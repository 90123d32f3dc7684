#!/usr/bin/env bash
# `mistral-run serve` driven by the real Python client libraries, `openai` and
# `mistralai` from PyPI, on the default model (SmolLM2-135M-Instruct Q4_1).
#
#   BIN=target/debug/mistral-run tests/server-clients.sh
#
# Needs python3 (3.9 or later) with venv and pip. The clients go into a venv
# outside the repository, installed only when missing or when the pins below
# change:
#   ${XDG_CACHE_HOME:-~/.cache}/mistral-run/venv-clients   (CLIENTS_VENV overrides)
# The servers (the default model, and a tiny synthetic Mistral-v3-vocabulary
# model for fill-in-the-middle) listen on 127.0.0.1 only, on ports the OS
# picks, with a random API key, and are killed on exit. Their logs are
# printed when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/wait-port.sh

BIN=${BIN:-target/debug/mistral-run}
VENV=${CLIENTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run/venv-clients}
# Major versions pinned: both SDKs are generated from their vendors' API specs
# and change shape across majors.
REQS=("openai>=3,<4" "mistralai>=3,<4" "jsonschema>=4,<5")
STARTUP_SECONDS=${STARTUP_SECONDS:-600} # the first run may fetch the model

[ -x "$BIN" ] || { echo "server-clients: $BIN not found (build it first: cargo build)" >&2; exit 1; }

# --- the client venv -------------------------------------------------------
stamp="$VENV/.mistral-run-reqs"
want="${REQS[*]}"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || ! "$VENV/bin/python" -c 'import openai, mistralai.client' 2>/dev/null; then
    py=$(command -v python3) || { echo "server-clients: python3 is needed" >&2; exit 1; }
    mkdir -p "$(dirname "$VENV")"
    if ! "$py" -m venv --clear "$VENV" 2>/dev/null; then
        # Debian splits ensurepip out of python3 into python3-venv.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "server-clients: installing python3-venv" >&2
            apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$py" -m venv --clear "$VENV"
        else
            echo "server-clients: '$py -m venv' failed (on Debian: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    echo "server-clients: installing ${REQS[*]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" >&2
    echo "$want" > "$stamp"
fi
"$VENV/bin/python" - <<'PY'
import openai, importlib.metadata as m
print("server-clients: openai", openai.__version__, "mistralai", m.version("mistralai"))
PY

# --- the servers -----------------------------------------------------------
# The default model, and a tiny random-weight Mistral with the v3 tokenizer
# (SmolLM2's vocabulary has no fill-in-the-middle tokens; Mistral v3's has
# [PREFIX]/[SUFFIX]) for /v1/fim/completions.
tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

key=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')
show_logs() {
    local f
    for f in "$tmp"/*.log; do
        echo "--- $(basename "$f") (last 60 lines) ---" >&2
        tail -n 60 "$f" >&2 || true
    done
}

start() { # name args... -> prints the port once it listens
    local name=$1 pid
    shift
    "$BIN" serve --host 127.0.0.1 --port 0 --port-file "$tmp/$name.port" --api-key "$key" "$@" \
        >"$tmp/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "server-clients ($name)" "$pid" "$tmp/$name.port" "$tmp/$name.log" "$STARTUP_SECONDS" \
        || { show_logs; exit 1; }
}

fim_model=$tmp/fim-tiny.gguf
"$BIN" synth --preset tiny --type q8_0 --vocab "$(bash models/fetch-vocab.sh)/ggml-vocab-mistral-v3.gguf" \
    -o "$fim_model" >"$tmp/synth.out" 2>&1 || { cat "$tmp/synth.out" >&2; exit 1; }

# (not in $(...): the pids must be recorded in this shell)
# Every prompt whole in an empty context: the checks compare repeated
# requests at temperature 0, which a reused context may round differently.
start default --parallel 4 --ctx-size 2048 --no-cache-prompt >"$tmp/default.p"
port=$(cat "$tmp/default.p")
start fim -m "$fim_model" --parallel 2 --ctx-size 1024 >"$tmp/fim.p"
fim_port=$(cat "$tmp/fim.p")
echo "server-clients: default model on 127.0.0.1:$port, FIM model on 127.0.0.1:$fim_port"

# The model id /v1/models should report: the file name without .gguf.
expect_id=
[ -z "${MISTRAL_RUN_MODEL:-}" ] && expect_id=SmolLM2-135M-Instruct.Q4_1

if ! SERVER_PORT=$port FIM_PORT=$fim_port SERVER_API_KEY=$key EXPECT_MODEL_ID=$expect_id \
    "$VENV/bin/python" tests/server_clients.py; then
    show_logs
    exit 1
fi
# Structured output: 200 generated JSON Schemas at temperature 1, each
# output validated by the jsonschema package.
if ! "$VENV/bin/python" tests/server_structured.py "$port" "$key" "${STRUCTURED_CASES:-200}"; then
    show_logs
    exit 1
fi
for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "server-clients: a server died during the run" >&2; show_logs; exit 1; }
done

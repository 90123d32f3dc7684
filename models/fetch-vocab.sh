#!/usr/bin/env bash
# Fetches or rebuilds the tokenizer test vocabularies (vocab-only GGUFs, no
# weights) into a git-ignored cache and prints the folder. Idempotent: files
# already there with the right SHA-256 are kept. Used by the tests and benches.
#
# - ggml-vocab-llama-spm.gguf: llama.cpp's own test file, from the llama.cpp
#   sources vendored in the PyPI sdist of llama-cpp-python 0.3.16.
# - ggml-vocab-mistral-v1.gguf / -v3.gguf: built from the SentencePiece models
#   shipped in the PyPI package mistral-common 1.13.1, with the `gguf` package's
#   writer (the same bytes as tests/data/REFERENCE.md's files; checked below).
#
#   MISTRAL_RUN_CACHE  cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/mistral-run)
set -euo pipefail

cache="${MISTRAL_RUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run}"
dest="$cache/vocab"
declare -A sha=(
  [ggml-vocab-llama-spm.gguf]=16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69
  [ggml-vocab-mistral-v1.gguf]=c4b15062c678b312c37df5067ea65523b808b459f8b4371ad89bd81fca049155
  [ggml-vocab-mistral-v3.gguf]=3123d3a1ce4dd7ed8de1494e00181aff10cec3f7410ea91aef074c51b52695b8
)
ok() { [ -f "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "${sha[$1]}" ]; }
if ok ggml-vocab-llama-spm.gguf && ok ggml-vocab-mistral-v1.gguf && ok ggml-vocab-mistral-v3.gguf; then
  echo "$dest"
  exit 0
fi

mkdir -p "$dest"
tmp="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
py="$(command -v python3 || command -v python)" || { echo "fetch-vocab: python3 with pip is needed" >&2; exit 1; }

if ! ok ggml-vocab-llama-spm.gguf; then
  echo "fetch-vocab: downloading the llama-cpp-python 0.3.16 sources from PyPI (about 48 MB)..." >&2
  url=https://files.pythonhosted.org/packages/e4/b4/c8cd17629ced0b9644a71d399a91145aedef109c0333443bef015e45b704/llama_cpp_python-0.3.16.tar.gz
  curl -sSfL --retry 3 -o "$tmp/src.tgz" "$url"
  echo "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6  $tmp/src.tgz" | sha256sum -c --quiet
  tar xzf "$tmp/src.tgz" -C "$tmp" --strip-components=4 \
    llama_cpp_python-0.3.16/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf
  mv "$tmp/ggml-vocab-llama-spm.gguf" "$tmp/llama-spm.part"
  rm "$tmp/src.tgz"
fi

if ! ok ggml-vocab-mistral-v1.gguf || ! ok ggml-vocab-mistral-v3.gguf; then
  echo "fetch-vocab: installing mistral-common, gguf and sentencepiece from PyPI into a scratch folder..." >&2
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check mistral-common==1.13.1 -d "$tmp" >&2
  "$py" -m pip install --quiet --disable-pip-version-check --target "$tmp/py" \
    gguf==0.19.0 sentencepiece==0.2.1 numpy >&2
  PYTHONPATH="$tmp/py" "$py" - "$tmp" "$(ls "$tmp"/mistral_common-*.whl)" <<'PY'
import sys, zipfile, gguf, sentencepiece as spm
tmp, whl = sys.argv[1:]
TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")
for model, out in [("tokenizer.model.v1", "mistral-v1"),
                   ("mistral_instruct_tokenizer_240323.model.v3", "mistral-v3")]:
    with zipfile.ZipFile(whl) as z:
        proto = z.read("mistral_common/data/" + model)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    w = gguf.GGUFWriter(f"{tmp}/{out}.part", "llama")
    w.add_name("mistral-vocab-" + model)
    w.add_tokenizer_model("llama")
    n = sp.vocab_size()
    w.add_token_list([sp.id_to_piece(i).encode() for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    def kind(i):
        if sp.is_unknown(i): return 2
        if sp.is_control(i): return 3
        if sp.is_unused(i): return 5
        if sp.is_byte(i): return 6
        return 1
    w.add_token_types([kind(i) for i in range(n)])
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0)
    w.add_add_bos_token(True); w.add_add_eos_token(False)
    w.add_chat_template(TEMPLATE)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PY
fi

for f in llama-spm mistral-v1 mistral-v3; do
  [ -f "$tmp/$f.part" ] || continue
  got="$(sha256sum "$tmp/$f.part" | cut -d' ' -f1)"
  [ "$got" = "${sha[ggml-vocab-$f.gguf]}" ] || { echo "fetch-vocab: ggml-vocab-$f.gguf has SHA-256 $got, expected ${sha[ggml-vocab-$f.gguf]}" >&2; exit 1; }
  mv "$tmp/$f.part" "$dest/ggml-vocab-$f.gguf"
done
echo "$dest"

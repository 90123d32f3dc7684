#!/usr/bin/env bash
# The engine-core figures of BENCHMARKS.md, side by side with llama.cpp in one
# sitting on one machine: decode and prefill at several depths (tokens already
# in the KV cache), and aggregate throughput with several sessions at once.
#
#   LLAMA_BIN=DIR LLAMA_NOAMX_BIN=DIR bash benches/engine.sh
#
# Both directories hold llama-bench and llama-batched-bench built from the
# source that the llama-cpp-python 0.3.16 sdist vendors (outside this
# repository): LLAMA_BIN with cmake's defaults (-DGGML_NATIVE=ON),
# LLAMA_NOAMX_BIN without AMX (-DGGML_NATIVE=OFF with the AVX-512 flags).
# On AMX CPUs llama.cpp's Q4_0/Q4_1 path computes garbage (SmolLM2 Q4_1
# perplexity 357 against 18.35 without AMX), so SmolLM2 Q4_1 is raced against
# the build without AMX; its k-quant path is right on AMX (perplexity within
# 0.3% of the build without), so the Q4_K_M model is raced against the
# default build. Each llama.cpp cell is the better of -fa 0 and -fa 1 (at the
# deepest depth only -fa 1 runs: llama-bench prefills the depth again for
# every repetition, which makes -fa 0 there take most of an hour).
#
# Logs go to benches/results/engine/; plot_engine.py draws the charts.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
OUT=benches/results/engine
CACHE=models/cache
mkdir -p "$OUT" "$CACHE"
: "${LLAMA_BIN:?set LLAMA_BIN to the directory holding llama-bench}"
: "${LLAMA_NOAMX_BIN:?set LLAMA_NOAMX_BIN to llama.cpp built without AMX}"

cargo build --release -p mistral-run
BIN=target/release/mistral-run
smol=$(bash models/fetch-smollm2.sh)
synth=$CACHE/synth-1b-Q4_K_M.gguf
# No sliding window (as Mistral 7B v0.2 and later): llama.cpp's llama
# architecture ignores it, so with one the two engines would attend over
# different spans at depth.
[ -f "$synth" ] || "$BIN" synth --preset 1b --type q4_k_m --sliding-window 0 -o "$synth"

depth() { # model llama-dir reps
    local m=$1 l=$2 reps=$3 name
    name=$(basename "$m" .gguf)
    uptime | tee "$OUT/$name-depth-ours.log"
    "$BIN" bench -m "$m" -p 512 -n 64 -d 0,512,2048,4096,16384 -r "$reps" -t "$THREADS" \
        --save-json "$OUT/$name-depth-ours.json" | tee -a "$OUT/$name-depth-ours.log"
    uptime | tee "$OUT/$name-depth-llama.log"
    "$l/llama-bench" -m "$m" -p 512 -n 64 -d 0,512,2048,4096 -r "$reps" -t "$THREADS" -fa 0,1 \
        -o json > "$OUT/$name-depth-llama.json" 2>>"$OUT/$name-depth-llama.log"
    "$l/llama-bench" -m "$m" -p 512 -n 64 -d 16384 -r 1 -t "$THREADS" -fa 1 \
        -o json > "$OUT/$name-depth-llama-16k.json" 2>>"$OUT/$name-depth-llama.log"
    uptime | tee -a "$OUT/$name-depth-llama.log"
}

batched() { # model n_gen llama-dir...
    local m=$1 ntg=$2 name l
    shift 2
    name=$(basename "$m" .gguf)
    uptime | tee "$OUT/$name-batched-ours.log"
    "$BIN" batched-bench -m "$m" -p 128 -n "$ntg" --parallel 1,4,8,16 -t "$THREADS" --json \
        > "$OUT/$name-batched-ours.json" 2>>"$OUT/$name-batched-ours.log"
    for l in "$@"; do
        local tag
        tag=$(basename "$(dirname "$l")")
        uptime | tee "$OUT/$name-batched-$tag.log"
        "$l/llama-batched-bench" -m "$m" -c 4096 -b 2048 -ub 512 -npp 128 -ntg "$ntg" \
            -npl 1,4,8,16 -t "$THREADS" 2>&1 | tee -a "$OUT/$name-batched-$tag.log"
    done
}

batched "$smol" 64 "$LLAMA_NOAMX_BIN" "$LLAMA_BIN"
batched "$synth" 32 "$LLAMA_BIN" "$LLAMA_NOAMX_BIN"
depth "$smol" "$LLAMA_NOAMX_BIN" 3
depth "$synth" "$LLAMA_BIN" 2
uptime

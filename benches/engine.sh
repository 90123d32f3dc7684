#!/usr/bin/env bash
# The engine-core figures of BENCHMARKS.md, side by side with llama.cpp in one
# sitting on one machine: decode and prefill at several depths (tokens already
# in the KV cache), and aggregate throughput with several sessions at once.
#
#   LLAMA_BIN=DIR [LLAMA_NOAMX_BIN=DIR] bash benches/engine.sh
#
# LLAMA_BIN holds llama-bench and llama-batched-bench built from the source
# that the llama-cpp-python 0.3.16 sdist vendors (outside this repository);
# LLAMA_NOAMX_BIN, optionally, the same built without AMX (-DGGML_NATIVE=OFF
# and the AVX-512 flags only), since on AMX CPUs llama.cpp's Q4_0/Q4_1 path
# computes garbage (SmolLM2 Q4_1 perplexity 357 instead of 18.4): both are
# measured and the note says which is which. Logs go to benches/results/engine/;
# plot_engine.py draws the charts from them.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
DEPTHS=${DEPTHS:-0,512,2048,4096,16384}
REPS=${REPS:-3}
OUT=benches/results/engine
CACHE=models/cache
mkdir -p "$OUT" "$CACHE"
: "${LLAMA_BIN:?set LLAMA_BIN to the directory holding llama-bench}"

cargo build --release -p mistral-run
BIN=target/release/mistral-run
smol=$(bash models/fetch-smollm2.sh)
synth=$CACHE/synth-1b-Q4_K_M.gguf
# No sliding window (as Mistral 7B v0.2 and later): llama.cpp's llama
# architecture ignores it, so with one the two engines would attend over
# different spans at depth.
[ -f "$synth" ] || "$BIN" synth --preset 1b --type q4_k_m --sliding-window 0 -o "$synth"

llamas=("$LLAMA_BIN")
[ -n "${LLAMA_NOAMX_BIN:-}" ] && llamas+=("$LLAMA_NOAMX_BIN")

for m in "$smol" "$synth"; do
    name=$(basename "$m" .gguf)
    uptime | tee "$OUT/$name-depth-ours.log"
    "$BIN" bench -m "$m" -p 512 -n 64 -d "$DEPTHS" -r "$REPS" -t "$THREADS" \
        --save-json "$OUT/$name-depth-ours.json" | tee -a "$OUT/$name-depth-ours.log"
    for l in "${llamas[@]}"; do
        tag=$(basename "$(dirname "$l")")
        uptime | tee "$OUT/$name-depth-$tag.log"
        "$l/llama-bench" -m "$m" -p 512 -n 64 -d "$DEPTHS" -r "$REPS" -t "$THREADS" -fa 0,1 \
            -o json > "$OUT/$name-depth-$tag.json" 2>>"$OUT/$name-depth-$tag.log"
    done
done

# Several sessions at once: llama-batched-bench's settings from the issue.
for m in "$smol" "$synth"; do
    name=$(basename "$m" .gguf)
    ntg=32
    [ "$m" = "$smol" ] && ntg=64
    uptime | tee "$OUT/$name-batched-ours.log"
    "$BIN" batched-bench -m "$m" -p 128 -n "$ntg" --parallel 1,4,8,16 -t "$THREADS" --json \
        > "$OUT/$name-batched-ours.json" 2>>"$OUT/$name-batched-ours.log"
    for l in "${llamas[@]}"; do
        tag=$(basename "$(dirname "$l")")
        uptime | tee "$OUT/$name-batched-$tag.log"
        "$l/llama-batched-bench" -m "$m" -c 4096 -b 2048 -ub 512 -npp 128 -ntg "$ntg" \
            -npl 1,4,8,16 -t "$THREADS" 2>&1 | tee -a "$OUT/$name-batched-$tag.log"
    done
done
uptime

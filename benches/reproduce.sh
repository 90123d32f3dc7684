#!/usr/bin/env bash
# Reproduces the figures of BENCHMARKS.md: builds the release binary, writes the
# synthetic models and the requantized SmolLM2 files into models/cache/
# (git-ignored), runs `mistral-run bench` (2 threads, both kernel choices side by
# side), perplexity on SmolLM2, and draws the charts into benches/results/.
#
#   bash benches/reproduce.sh            # everything
#   THREADS=4 bash benches/reproduce.sh  # another thread count
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
REPS=${REPS:-5}
OUT=benches/results
CACHE=models/cache
mkdir -p "$OUT" "$CACHE"

cargo build --release -p mistral-run
BIN=target/release/mistral-run

# Synthetic models: REFERENCE.md's synth-1b (2048 / 5632, 16 layers, 16 heads,
# 4 KV heads) in four types, and synth-moe (8 experts, top-2, 1024 / 3584, 8 layers).
for t in F16 Q8_0 Q4_K_M Q2_K; do
    f=$CACHE/synth-1b-$t.gguf
    [ -f "$f" ] || "$BIN" synth --preset 1b --type "${t,,}" -o "$f"
done
moe=$CACHE/synth-moe-Q4_K_M.gguf
[ -f "$moe" ] || "$BIN" synth --arch mixtral --preset 1b --n-embd 1024 --n-ff 3584 --n-layer 8 \
    --n-head 8 --n-head-kv 2 --type q4_k_m -o "$moe"

# SmolLM2-135M-Instruct as shipped (Q4_1) and requantized like REFERENCE.md's smollm2-135m-* files.
smol=$(bash models/fetch-smollm2.sh)
for t in F16 Q8_0 Q4_K_M Q2_K; do
    f=$CACHE/smollm2-135m-$t.gguf
    [ -f "$f" ] || "$BIN" quantize "$smol" "$f" "${t,,}"
done

synth_models=$CACHE/synth-1b-F16.gguf,$CACHE/synth-1b-Q8_0.gguf,$CACHE/synth-1b-Q4_K_M.gguf,$CACHE/synth-1b-Q2_K.gguf,$moe
smol_models=$CACHE/smollm2-135m-F16.gguf,$CACHE/smollm2-135m-Q8_0.gguf,$CACHE/smollm2-135m-Q4_K_M.gguf,$CACHE/smollm2-135m-Q2_K.gguf,$smol

uptime
"$BIN" bench -m "$synth_models" -p 64 -n 32 -r "$REPS" -t "$THREADS" --kernels native,candle --bandwidth \
    --save-json "$OUT/synth-1b.json" | tee "$OUT/synth-1b.md"
uptime
# candle cannot run the Q2_K file (its 576-wide rows fall back to IQ4_NL): that one
# run fails, bench says so and exits 1 after the others; carry on.
{ "$BIN" bench -m "$smol_models" -p 128 -n 64 -r "$REPS" -t "$THREADS" --kernels native,candle \
    --save-json "$OUT/smollm2.json" || true; } | tee "$OUT/smollm2.md"
uptime

# Each call draws the chart and prints the summary relative to F16.
"$BIN" bench-plot "$OUT/synth-1b.json" -o "$OUT/synth-1b.png" --summary \
    --title "Synthetic 1B-shaped Mistral and 8-expert MoE: speed and memory per type" \
    > "$OUT/synth-1b-summary.md"
"$BIN" bench-plot "$OUT/smollm2.json" -o "$OUT/smollm2.png" --summary \
    --title "SmolLM2-135M-Instruct: speed and memory per type" > "$OUT/smollm2-summary.md"

# Perplexity cost of each quantization (llama.cpp's llama-perplexity -c 512 method).
for f in "$smol" $CACHE/smollm2-135m-F16.gguf $CACHE/smollm2-135m-Q8_0.gguf $CACHE/smollm2-135m-Q4_K_M.gguf $CACHE/smollm2-135m-Q2_K.gguf; do
    echo "== $f"
    "$BIN" perplexity -m "$f" -f tests/data/text/gpl-3.txt -c 512 -t "$THREADS"
done 2>&1 | tee "$OUT/perplexity.txt"

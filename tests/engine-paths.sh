#!/usr/bin/env bash
# The engine's batch tests (crates/transformer/tests/batch.rs: a batched step
# gives each session its logits alone, bit for bit where the kernels promise
# it) on every x86 kernel path this CPU has besides the one it picks: the
# engine takes its path once per process (MISTRAL_KERNELS_ISA), so
# `cargo test` alone exercises only the best one. Reuses the test binary that
# `cargo test --workspace` built. Prints which paths ran.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$(uname -m)" in
    x86_64) ;;
    *) echo "engine-paths: not an x86-64 machine: nothing to add"; exit 0 ;;
esac
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { case " $flags " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
paths="scalar"
has avx2 && has fma && has f16c && paths="$paths avx2"
has avx512f && has avx512bw && has avx512vl && has avx512_vnni && has amx_int8 && paths="$paths avx512"
ran=""
for p in $paths; do
    MISTRAL_KERNELS_ISA=$p cargo test -q -p mistral-transformer --test batch >/dev/null
    ran="$ran $p"
done
echo "engine-paths: crates/transformer/tests/batch.rs passed with MISTRAL_KERNELS_ISA =$ran (and the default path in cargo test)"

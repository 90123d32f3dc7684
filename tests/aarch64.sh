#!/usr/bin/env bash
# The kernels crate's tests cross-compiled for AArch64 and run under qemu's
# user-mode emulation, so the NEON paths are checked on every run:
#   - qemu's default CPU ("max", with the dot-product extension): the Scalar,
#     Neon and NeonDot paths;
#   - a Cortex-A72 (no dot product, as a Raspberry Pi 4): Scalar and Neon.
# Correctness only: emulated timings say nothing about ARM speed.
# Installs what it lacks: the Rust target (rustup), and Debian's qemu-user and
# AArch64 cross gcc (apt-get, as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Without the candle feature (candle's own NEON code executes `sdot`
# unconditionally and so cannot run on the Cortex-A72 model).
args=(--profile emu --target "$target" --target-dir target/emu -p mistral-kernels --no-default-features)
for cpu in max cortex-a72; do
    echo "== mistral-kernels tests on AArch64 (qemu -cpu $cpu)"
    QEMU_CPU=$cpu cargo test "${args[@]}"
    ISA_PATHS_DIR=target/emu/$target/tmp/isa-paths tests/isa-report.sh "aarch64 under qemu -cpu $cpu"
done

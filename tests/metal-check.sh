#!/usr/bin/env bash
# The Metal build type-checked on Linux: the library crates with candle's
# `metal` feature for Apple Silicon (aarch64-apple-darwin). Nothing runs; it
# keeps Metal-gated code compiling where no Mac is at hand. The CLI crate is
# left out: its `ring` dependency (through rustls) needs Apple's SDK to build
# its C code, so nothing Metal-specific may live there.
# Installs the Rust target if it lacks it (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-apple-darwin
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
echo "== cargo check --target $target --features metal -p mistral-transformer"
cargo check --target "$target" --target-dir target/metal-check --features metal -p mistral-transformer

#!/usr/bin/env bash
# Which instruction-set paths the kernel tests ran on this machine, and which
# they could not (the CPU lacks them), printed where CI's log shows it:
# `cargo test` hides what passing tests print. The tests write one file per
# test into target/tmp/isa-paths/ (crates/kernels/tests/common: Coverage);
# this script reads and then removes them, so each run reports its own.
# Fails when no test reported, or when the scalar reference path never ran.
# Usage: tests/isa-report.sh [LABEL] (LABEL names the machine; default: this
# CPU); ISA_PATHS_DIR the directory (a cross build's: tests/aarch64.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ISA_PATHS_DIR:-target/tmp/isa-paths}
if [ ! -d "$dir" ] || [ -z "$(ls -A "$dir")" ]; then
    echo "isa-report: no kernel test reported its paths (run cargo test first)" >&2
    exit 1
fi
ran=$(cat "$dir"/* | sed -n 's/^ran: //p' | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
skipped=$(cat "$dir"/* | sed -n 's/^skipped: //p' | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
machine=${1:-$(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown CPU)}
echo "isa-report: $(ls "$dir" | wc -l) kernel tests reported ($machine)"
for f in "$dir"/*; do
    printf '  %-75s %s | %s\n' "$(basename "$f")" "$(sed -n 's/^ran: /ran: /p' "$f")" "$(sed -n 's/^skipped: /not here: /p' "$f")"
done
echo "isa-report: paths exercised: ${ran:-none}"
missing=""
for p in $skipped; do
    case " $ran " in *" $p "*) ;; *) missing="$missing $p" ;; esac
done
echo "isa-report: paths NOT exercised (this CPU lacks them):${missing:- none}"
case " $ran " in
    *" scalar "*) ;;
    *) echo "isa-report: the scalar reference path never ran" >&2; exit 1 ;;
esac
rm -rf "$dir"

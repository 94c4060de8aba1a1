#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that sees outside input (cargo-fuzz, libFuzzer).
#   bash scripts/fuzz.sh [seconds-per-target] [target ...]     (default 60 s, every target)
# Needs a nightly toolchain (cargo-fuzz instruments with -Z flags); installs cargo-fuzz if missing.
# Seeds live in fuzz/corpus/<target>; the growing corpus in target/fuzz-corpus/<target>; crashes
# land in fuzz/artifacts/<target> (replay one: cargo +nightly fuzz run <target> <file>).
# The stable test command runs the same oracles as proptests (tests/tests/suite/properties.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
toolchain=${FUZZ_TOOLCHAIN:-nightly}
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
  echo "error: the $toolchain toolchain is not installed (rustup toolchain install $toolchain)" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The workspace's release profile is tuned for small Lambda zips (fat LTO, one codegen unit); for
# fuzz builds that only makes every link take minutes.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo "+$toolchain" fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$target"
  echo "== $target ($secs s)"
  cargo "+$toolchain" fuzz run "$target" "target/fuzz-corpus/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
    grep -E '^(stat::|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
  if compgen -G "fuzz/artifacts/$target/crash-*" >/dev/null; then
    echo "error: $target found a crash; see fuzz/artifacts/$target" >&2
    exit 1
  fi
done

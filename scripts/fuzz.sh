#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target (fuzz/fuzz_targets/), minutes rather than hours.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     # default 20
#
# Uses the stable toolchain: RUSTC_BOOTSTRAP=1 lets it accept the -Z flags cargo-fuzz passes
# (no nightly needed). Installs cargo-fuzz from crates.io when missing. Builds without a
# sanitizer (FUZZ_SANITIZER=address to change that): the workspace forbids unsafe code, and
# what the fuzzer hunts here is panics (slicing, overflow, unwrap) and broken round trips.
#
# Each target starts from its committed seeds (fuzz/corpus/<target>/, never written to);
# what libFuzzer finds goes to fuzz/target/corpus/<target>/ and crashes to
# fuzz/artifacts/<target>/. Exit status 1 when any target crashed: fix the parser, copy the
# crash file into fuzz/corpus/<target>/ as a regression seed (the test suite runs every seed,
# tests/tests/fuzz.rs) and add a unit test named for the behaviour.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0
# Its own target dir, whatever the caller's CARGO_TARGET_DIR (the workspace's build is not
# instrumented and must not be mixed with this one).
export CARGO_TARGET_DIR="$PWD/target"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Temporary folders (the tar staging target makes one per input, and staging fsyncs) on
# tmpfs when there is one: fsync on a disk made that target ~50 times slower.
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]]; then
  export TMPDIR=/dev/shm
fi

# One set of build flags for build and run, so `run` never rebuilds with others.
flags=(--sanitizer "$sanitizer" --codegen-units 16)

echo "== building the fuzz targets"
cargo fuzz build "${flags[@]}"

mapfile -t targets < <(cargo fuzz list)
failed=()
summary=()
for target in "${targets[@]}"; do
  work="target/corpus/$target"
  mkdir -p "$work" "artifacts/$target"
  log="target/fuzz-$target.log"
  echo "== $target (${seconds}s)"
  if cargo fuzz run "${flags[@]}" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$target")
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  summary+=("$(printf '%-14s %-6s %10s runs  %s' "$target" "$status" "${runs:-?}" "$cov")")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi

#!/usr/bin/env bash
# The README's test command: sets up this machine and runs every check and test.
#
#   scripts/test.sh
#
# 1. installs the Debian packages the tests need (systemd, dbus, promtool, etcd, ...);
# 2. checks formatting and clippy (warnings are errors);
# 3. builds every binary (the end-to-end tests run the real rke2-node-agent and the
#    simulated rke2 from target/debug);
# 4. runs every test of the workspace, the end-to-end ones included: they need root and a
#    real systemd, and fail loudly, never skip, when something is missing. The end-to-end
#    targets run one after another while the light ones run beside them.
#
# End-to-end targets (`e2e_*`: they boot proving-ground nodes) are built only with the cargo
# feature `e2e`, which every step below enables (the same features throughout, so each step
# reuses the previous one's build). A plain `cargo test --workspace` leaves them out and its
# `e2e_gate` test fails once, naming them and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found (install the Rust toolchain with rustup)" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# rke2ops-tests, rke2ops-sim and rke2ops-ground have end-to-end targets.
features=(--features e2e)

# One-shot builds gain nothing from incremental state (it was ~11 GB of the target dir).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk free for the build: $(df -h --output=avail . | tail -1 | tr -d ' ')"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
echo "== cargo build (binaries used by end-to-end tests)"
cargo build --workspace --bins --locked "${features[@]}"
echo "== cargo test: building every test target"
cargo test --workspace --locked "${features[@]}" --no-run
# Two lanes at once: the end-to-end targets (`e2e_*`: proving grounds, one binary after
# another, as always) and everything else (unit, fake-fleet and doc tests, light on the
# machine) beside them. Cargo holds its build lock only while building, so both run
# together; the light lane's output is printed after the end-to-end lane's.
threads=(--test-threads="${TEST_THREADS:-2}")
light_log="$(mktemp)"
trap 'rm -f "$light_log"' EXIT
(
  status=0
  cargo test --workspace --locked "${features[@]}" --no-fail-fast --lib --bins -- "${threads[@]}" || status=1
  cargo test --workspace --locked "${features[@]}" --no-fail-fast --test '[!e]*' -- "${threads[@]}" || status=1
  cargo test --workspace --locked "${features[@]}" --doc || status=1
  exit "$status"
) >"$light_log" 2>&1 &
light_pid=$!
echo "== cargo test: end-to-end targets (the other tests run beside them; their output follows)"
e2e_status=0
cargo test --workspace --locked "${features[@]}" --no-fail-fast --test 'e2e_*' -- "${threads[@]}" || e2e_status=1
light_status=0
wait "$light_pid" || light_status=1
echo "== cargo test: unit, fake-fleet and doc tests"
cat "$light_log"
if [ "$e2e_status" -ne 0 ] || [ "$light_status" -ne 0 ]; then
  echo "test.sh: tests failed (end-to-end lane: $([ "$e2e_status" -eq 0 ] && echo ok || echo FAILED), other tests: $([ "$light_status" -eq 0 ] && echo ok || echo FAILED))" >&2
  echo "== target dir after the run: $(du -sh target 2>/dev/null | cut -f1)"
  exit 1
fi
echo "== target dir after the run: $(du -sh target 2>/dev/null | cut -f1)"

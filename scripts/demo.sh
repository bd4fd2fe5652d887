#!/usr/bin/env bash
# The README's demo command: sets up this machine and runs the demo on simulated RKE2 nodes.
#
#   scripts/demo.sh [--hold-secs N]
#
# Needs root (each simulated node is a real systemd in its own namespaces). Installs the
# Debian packages it needs, builds the binaries, then runs `rke2-demo` (package
# scripts/demo/). Built with the features scripts/test.sh uses, so the two share one build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (simulated nodes boot a real systemd in namespaces)" >&2
  exit 1
fi
scripts/install-test-deps.sh
cargo build --workspace --bins --locked --features e2e
exec target/debug/rke2-demo "$@"

#!/usr/bin/env bash
# Installs what the proving ground (tests/ground) and the end-to-end tests need on a Debian
# machine: a real systemd and D-Bus to boot simulated nodes, util-linux for unshare/nsenter,
# iproute2 and nftables (a network per node, and partitions), promtool (metrics lint), etcd (real etcd members), openssl and curl,
# rpm, createrepo-c, gnupg, dnf and zypper (RKE2's RPM install method).
#
# Idempotent: exits at once when every tool is already present; otherwise runs
# `apt-get update` once and installs only the missing packages. Must run as root.
set -euo pipefail

# package -> a file that proves it is installed
declare -A probe=(
  [systemd]=/lib/systemd/systemd
  [dbus]=/usr/bin/dbus-daemon
  [util-linux]=/usr/bin/nsenter
  [iproute2]=/usr/bin/ip
  [prometheus]=/usr/bin/promtool
  [etcd-server]=/usr/bin/etcd
  [etcd-client]=/usr/bin/etcdctl
  [openssl]=/usr/bin/openssl
  [curl]=/usr/bin/curl
  # cuts a proving-ground node off the network (tests/ground/src/net.rs)
  [nftables]=/usr/sbin/nft
  # etcd-client generates its gRPC code at build time with protoc
  [protobuf-compiler]=/usr/bin/protoc
  # ... and needs the well-known types (descriptor.proto), which --no-install-recommends
  # leaves out
  [libprotobuf-dev]=/usr/include/google/protobuf/descriptor.proto
  # the Python Kubernetes client the stand-in API is checked with (tests/sim/tests/e2e_sim_kubectl.rs);
  # Debian's, for /usr/bin/python3
  [python3-kubernetes]=/usr/lib/python3/dist-packages/kubernetes/__init__.py
  # libfaketime: one node's clock ahead of the hub's (tests/tests/e2e_doctor.rs, clock-skew)
  [faketime]=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
  # RKE2's RPM packages and repositories (tests/sim/src/rpm.rs, tests/sim/tests/e2e_sim_rpm.rs):
  # rpmbuild builds them, createrepo_c writes the repository metadata, and the proving-ground
  # nodes install them with dnf or zypper; gnupg makes the throwaway key that signs them
  # (rpmsign, in the rpm package) and their repository metadata; signing needs gpg-agent
  [rpm]=/usr/bin/rpmbuild
  [gnupg]=/usr/bin/gpg-agent
  [createrepo-c]=/usr/bin/createrepo_c
  [dnf]=/usr/bin/dnf
  [zypper]=/usr/bin/zypper
)

# kubectl comes with the machine image (/usr/bin/kubectl); it is not a Debian package, so
# it is checked, never installed from elsewhere.
if [ ! -x /usr/bin/kubectl ]; then
  echo "install-test-deps: /usr/bin/kubectl is missing; it comes with the machine image" \
    "(tests/sim/tests/e2e_sim_kubectl.rs runs it); install kubectl there by hand" >&2
  kubectl_missing=1
fi

missing=()
for pkg in "${!probe[@]}"; do
  [ -e "${probe[$pkg]}" ] || missing+=("$pkg")
done
# unshare ships in util-linux too; check it separately so a partial install is caught.
[ -x /usr/bin/unshare ] || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  if [ -n "${kubectl_missing:-}" ]; then
    exit 1
  fi
  echo "install-test-deps: all present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${missing[*]}; run as root to install" >&2
  exit 1
fi

# sort -u: util-linux may be listed twice
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

# Packages installed, but kubectl still has to come from the machine image.
[ -z "${kubectl_missing:-}" ] || exit 1

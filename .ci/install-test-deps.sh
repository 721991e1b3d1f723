#!/usr/bin/env bash
# Installs what the real-host test harness (tests/harness/) needs on the controller:
# systemd-nspawn and debootstrap for test hosts, PostgreSQL 15 standing in for RDS, the
# ssh client. Debian 12, run as root. Idempotent: apt runs only when something is missing.
set -euo pipefail

PACKAGES=(
  systemd-container debootstrap debian-archive-keyring gpgv arch-test wget
  postgresql postgresql-contrib postgresql-client
  openssh-client ca-certificates util-linux mount
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Overlay mounts for the hosts' root filesystems (built into most kernels).
grep -qw overlay /proc/filesystems || modprobe overlay || true
echo "install-test-deps: ok"

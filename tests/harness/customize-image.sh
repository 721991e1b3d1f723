#!/bin/bash
# Runs INSIDE the image being built (systemd-nspawn, not booted), after
# image.py has written the static files. Arguments: packages whose .debs are
# pre-downloaded (not installed) into /var/cache/apt/archives.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
build=/var/tmp/tpe-build

# Login user with passwordless sudo (the sudoers drop-in is written by image.py).
id ubuntu >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --uid 1000 --user-group ubuntu
install -d -m 0700 -o ubuntu -g ubuntu /home/ubuntu/.ssh
install -m 0600 -o ubuntu -g ubuntu "$build/authorized_keys" /home/ubuntu/.ssh/authorized_keys
visudo -c -q

# Trust the controller's extra CAs (TLS-inspecting proxy) in the system bundle.
update-ca-certificates >/dev/null

# Keep downloaded .debs: no docker-clean style hook may delete them.
rm -f /etc/apt/apt.conf.d/docker-clean
if grep -rqs 'archives/\*\.deb' /etc/apt/apt.conf.d/; then
    echo "an apt hook still deletes downloaded packages" >&2
    exit 1
fi
apt-get update -q
apt-get upgrade -y -q
apt-get install -y -q --download-only "$@"
ls /var/cache/apt/archives/*.deb >/dev/null

# Units that only slow a container's boot or fail under nspawn.
systemctl mask --quiet \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    getty@tty1.service systemd-pstore.service

# Each host gets its own host key and machine id at boot.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

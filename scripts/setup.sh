#!/bin/sh
# Installs what the daemon and its tests need and is missing: Debian's dbus and udev (for the
# private dbus-daemon, udevadm and systemd-udevd the tests run), then npm packages from the
# lockfile. Safe to run again: it only installs what is absent or stale.
set -eu
cd "$(dirname "$0")/.."

need=""
command -v dbus-daemon >/dev/null 2>&1 || need="$need dbus"
command -v udevadm >/dev/null 2>&1 || need="$need udev"
[ -x /lib/systemd/systemd-udevd ] || [ -x /usr/lib/systemd/systemd-udevd ] || case "$need" in *udev*) ;; *) need="$need udev" ;; esac
if [ -n "$need" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages:$need (run as root, or: apt-get install$need)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages:$need" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

# npm ci only when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages from package-lock.json" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

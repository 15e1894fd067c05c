# Shell functions shared by scripts/install.sh and the .deb maintainer scripts (build-deb.sh
# copies this file into them, since postrm runs after the package's files are gone).
# POSIX sh; every function only touches the running system when its caller decided it may.

# Test seams: where "systemd is PID 1" and "a system bus is up" are detected.
: "${HMD_SYSTEMD_RUNDIR:=/run/systemd/system}"
: "${HMD_DBUS_SOCKET:=/run/dbus/system_bus_socket}"

HMD_UNIT=veea-hmd.service
HMD_DEFAULT_SUBSYSTEMS="usb tty block hidraw video4linux sound"

hmd_say() { printf 'veea-hmd: %s\n' "$*" >&2; }
hmd_have() { command -v "$1" >/dev/null 2>&1; }
hmd_systemd_running() { [ -d "$HMD_SYSTEMD_RUNDIR" ] && hmd_have systemctl; }

# hmd_make_key FILE: 32 random bytes, mode 0600, in a 0700 folder. An existing key is never
# replaced: it seals every saved keystore. Written whole, synced, then hard-linked into place,
# which fails rather than replace a key the daemon created meanwhile.
hmd_make_key() {
  _key=$1
  _dir=$(dirname "$_key")
  mkdir -p "$_dir"
  chmod 0700 "$_dir"
  if [ -e "$_key" ] || [ -L "$_key" ]; then
    return 0
  fi
  _tmp="$_dir/.keystore.key.$$"
  rm -f "$_tmp"
  (umask 077 && head -c 32 /dev/urandom >"$_tmp")
  if [ "$(wc -c <"$_tmp")" -ne 32 ]; then
    rm -f "$_tmp"
    hmd_say "error: could not read 32 random bytes for $_key"
    return 1
  fi
  sync "$_tmp" 2>/dev/null || sync
  if ln "$_tmp" "$_key" 2>/dev/null; then
    hmd_say "created keystore key $_key"
  fi
  rm -f "$_tmp"
}

# hmd_subsystems CONFIG: the configured devices.subsystems, one a line; the defaults when the
# file is missing, unreadable or does not name them.
hmd_subsystems() {
  node -e '
    const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const s = c && c.devices && c.devices.subsystems;
    if (!Array.isArray(s)) process.exit(1);
    for (const x of s) if (/^[a-z0-9_-]+$/.test(x)) console.log(x);
  ' "$1" 2>/dev/null || printf '%s\n' $HMD_DEFAULT_SUBSYSTEMS
}

# hmd_create_spool: the spool folder the udev helper writes into, from the installed tmpfiles.d
# entry (so events are kept from now on, even before the daemon first starts).
hmd_create_spool() {
  if hmd_have systemd-tmpfiles; then
    systemd-tmpfiles --create veea-hmd.conf || hmd_say "warning: systemd-tmpfiles --create failed"
  else
    mkdir -p /run/veea-hmd/spool && chmod 0700 /run/veea-hmd/spool
  fi
}

# hmd_reload_host CONFIG [--no-trigger]: make the running system pick up installed (or removed)
# files: udev rules (then, unless --no-trigger, replay "add" for the present devices of the
# configured subsystems), the D-Bus policy and the systemd unit. Each step is skipped, with a
# message, when its tool or service is absent; none of them is fatal.
hmd_reload_host() {
  if ! hmd_have udevadm; then
    hmd_say "udevadm not found: skipping udev reload"
  elif ! udevadm control --reload; then
    hmd_say "udevd is not running: the rules apply when it starts"
  elif [ "${2:-}" != "--no-trigger" ]; then
    _match=""
    for _s in $(hmd_subsystems "$1"); do _match="$_match --subsystem-match=$_s"; done
    # shellcheck disable=SC2086 # one argument per subsystem
    udevadm trigger --action=add $_match || hmd_say "warning: udevadm trigger failed"
  fi

  if [ ! -S "$HMD_DBUS_SOCKET" ]; then
    hmd_say "no system bus at $HMD_DBUS_SOCKET: skipping D-Bus reload"
  elif hmd_have busctl && DBUS_SYSTEM_BUS_ADDRESS="unix:path=$HMD_DBUS_SOCKET" busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null; then
    :
  elif hmd_have dbus-send && DBUS_SYSTEM_BUS_ADDRESS="unix:path=$HMD_DBUS_SOCKET" dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.ReloadConfig >/dev/null; then
    :
  else
    hmd_say "warning: could not ask dbus-daemon to reload its policy"
  fi

  if hmd_systemd_running; then
    systemctl daemon-reload || hmd_say "warning: systemctl daemon-reload failed"
  else
    hmd_say "systemd is not running: skipping daemon-reload"
  fi
}

# hmd_service start|stop|restart: honours policy-rc.d (chroots, image builds) when Debian's
# deb-systemd-invoke is there; no-op without a running systemd.
hmd_service() {
  hmd_systemd_running || return 0
  if hmd_have deb-systemd-invoke; then
    deb-systemd-invoke "$1" "$HMD_UNIT" || hmd_say "warning: could not $1 $HMD_UNIT"
  else
    systemctl "$1" "$HMD_UNIT" || hmd_say "warning: could not $1 $HMD_UNIT"
  fi
}

#!/bin/sh
# Installs or removes veea-hmd: `install.sh install [--package]` / `install.sh uninstall`.
#
# Environment (as `make install` passes it):
#   DESTDIR     staging root; empty means this machine, which is then told to reload udev rules,
#               the D-Bus policy and systemd units
#   PREFIX      /usr      program files: bin/hmd, lib/veea-hmd, libexec/veea-hmd, share/doc
#   SYSCONFDIR  /etc      veea-hmd/config.json and veea-hmd/keystore.key
#   UDEVRULESDIR, DBUSDIR, SYSTEMDUNITDIR, TMPFILESDIR: where udev, dbus-daemon and systemd look
#               (under /usr whatever PREFIX is: they do not search /usr/local)
#   PURGE=1     uninstall also deletes the config, the key, the state and the spool
# --package: staging for the .deb: no key (postinst makes one per hub) and no host reloads.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../packaging/host.sh
. "$repo/packaging/host.sh"

action=${1:-}
package=false
[ "${2:-}" = "--package" ] && package=true

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UDEVRULESDIR=${UDEVRULESDIR:-/usr/lib/udev/rules.d}
DBUSDIR=${DBUSDIR:-/usr/share/dbus-1}
SYSTEMDUNITDIR=${SYSTEMDUNITDIR:-/usr/lib/systemd/system}
TMPFILESDIR=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
case "$DESTDIR" in /* | "") ;; *) DESTDIR="$(pwd)/$DESTDIR" ;; esac
D=${DESTDIR%/}

libdir=$PREFIX/lib/veea-hmd
libexecdir=$PREFIX/libexec/veea-hmd
docdir=$PREFIX/share/doc/veea-hmd
confdir=$SYSCONFDIR/veea-hmd
policy=io.veea.VeeaHub.HardwareMonitoringDaemon.conf

die() { hmd_say "error: $*"; exit 1; }

# The paths compiled into the rules, the unit and the config are the default layout's; another
# PREFIX or SYSCONFDIR rewrites them.
subst() {
  sed -e "s#/usr/libexec/veea-hmd/#$libexecdir/#g" \
      -e "s#/usr/bin/hmd#$PREFIX/bin/hmd#g" \
      -e "s#/etc/veea-hmd#$confdir#g" "$1"
}

# put MODE SRC DEST: one file, with its folders, mode set whatever the umask.
put() {
  mkdir -p "$(dirname "$2")"
  install -m "$1" "$3" "$2.tmp.$$"
  mv "$2.tmp.$$" "$2"
}
put_subst() {
  mkdir -p "$(dirname "$2")"
  subst "$3" >"$2.tmp.$$"
  chmod "$1" "$2.tmp.$$"
  mv "$2.tmp.$$" "$2"
}

# relink TARGET LINK: LINK becomes a relative symlink to TARGET (both paths as on the hub), so
# it holds under DESTDIR as well.
relink() {
  mkdir -p "$D$(dirname "$2")"
  rel=$(node -p 'const p = require("path"); p.relative(p.dirname(process.argv[2]), process.argv[1])' "$1" "$2")
  ln -sfn "$rel" "$D$2"
}

# copy_node_modules LIBDIR: the production dependency tree, copied from the local node_modules
# into LIBDIR/node_modules (no network): every package `npm ls` lists, without its own nested
# node_modules, which npm lists separately.
copy_node_modules() {
  list=$(cd "$repo" && npm ls --omit=dev --parseable --all) ||
    die "npm ls reports a broken or incomplete node_modules; run \`make setup\` first"
  printf '%s\n' "$list" | tail -n +2 | while IFS= read -r pkg; do
    rel=${pkg#"$repo"/}
    mkdir -p "$1/$rel"
    tar -C "$pkg" --anchored --exclude=./node_modules -cf - . | tar -C "$1/$rel" --no-same-owner -xf -
  done
}

install_lib() {
  stage="$D$libdir.new.$$"
  rm -rf "$stage"
  mkdir -p "$stage"
  cp -R "$repo/dist" "$stage/dist"
  cp "$repo/package.json" "$stage/package.json"
  if [ -d "$repo/fixtures" ] && [ -n "$(ls -A "$repo/fixtures")" ]; then
    cp -R "$repo/fixtures" "$stage/fixtures"
  fi
  copy_node_modules "$stage"
  chmod -R u+rwX,go+rX,go-w "$stage"
  chmod 0755 "$stage/dist/main.js"
  # Swap in the complete tree: a running daemon keeps the files it has open.
  rm -rf "$D$libdir"
  mv "$stage" "$D$libdir"
}

do_install() {
  [ -f "$repo/dist/main.js" ] || die "dist/main.js is missing: run \`make build\` first"
  [ -f "$repo/udev-rules/hmd-uevent" ] || die "udev-rules/hmd-uevent is missing"
  set -- "$repo"/udev-rules/*.rules
  [ -f "$1" ] || die "no udev-rules/*.rules to install"

  install_lib
  put_subst 0755 "$D$PREFIX/bin/hmd" "$repo/packaging/hmd.sh"
  put 0755 "$D$libexecdir/hmd-uevent" "$repo/udev-rules/hmd-uevent"
  for rules in "$@"; do
    put_subst 0644 "$D$UDEVRULESDIR/$(basename "$rules")" "$rules"
  done
  put 0644 "$D$DBUSDIR/system.d/$policy" "$repo/dbus/$policy"
  for xml in "$repo"/dbus/*.xml; do
    put 0644 "$D$DBUSDIR/interfaces/$(basename "$xml")" "$xml"
  done
  put_subst 0644 "$D$SYSTEMDUNITDIR/$HMD_UNIT" "$repo/systemd/$HMD_UNIT"
  put 0644 "$D$TMPFILESDIR/veea-hmd.conf" "$repo/systemd/veea-hmd.tmpfiles"
  # The program reads its interface XML (introspection) and finds its helper under its own
  # folder first, as in the repository: point there, so any installed tree is self-contained.
  relink "$DBUSDIR/system.d/$policy" "$libdir/dbus/$policy"
  for xml in "$repo"/dbus/*.xml; do
    relink "$DBUSDIR/interfaces/$(basename "$xml")" "$libdir/dbus/$(basename "$xml")"
  done
  relink "$libexecdir/hmd-uevent" "$libdir/udev-rules/hmd-uevent"
  for doc in "$repo/README.md" "$repo/CHANGELOG.md" "$repo"/docs/*.md; do
    [ -f "$doc" ] && put 0644 "$D$docdir/$(basename "$doc")" "$doc"
  done

  mkdir -p "$D$confdir"
  chmod 0700 "$D$confdir"
  if [ -e "$D$confdir/config.json" ]; then
    hmd_say "kept the existing $confdir/config.json"
  else
    put_subst 0644 "$D$confdir/config.json" "$repo/packaging/config.json"
  fi
  $package || hmd_make_key "$D$confdir/keystore.key"

  if $package; then
    return 0
  elif [ -n "$D" ]; then
    hmd_say "installed into $D; DESTDIR is set, so udev, D-Bus and systemd were not reloaded"
  else
    hmd_create_spool
    hmd_reload_host "$confdir/config.json"
    if hmd_systemd_running && systemctl is-active --quiet "$HMD_UNIT"; then
      hmd_service restart
    else
      hmd_say "installed; start it with: systemctl enable --now $HMD_UNIT"
    fi
  fi
}

do_uninstall() {
  if [ -z "$D" ] && hmd_systemd_running; then
    systemctl disable --now "$HMD_UNIT" || hmd_say "warning: could not stop and disable $HMD_UNIT"
  fi
  rm -rf "$D$libdir" "$D$libexecdir" "$D$docdir"
  rm -f "$D$PREFIX/bin/hmd" "$D$DBUSDIR/system.d/$policy" \
    "$D$SYSTEMDUNITDIR/$HMD_UNIT" "$D$TMPFILESDIR/veea-hmd.conf"
  for rules in "$repo"/udev-rules/*.rules; do
    [ -f "$rules" ] && rm -f "$D$UDEVRULESDIR/$(basename "$rules")"
  done
  for xml in "$repo"/dbus/*.xml; do
    rm -f "$D$DBUSDIR/interfaces/$(basename "$xml")"
  done
  if [ "${PURGE:-0}" = 1 ]; then
    rm -rf "$D$confdir" "$D/var/lib/veea-hmd" "$D/run/veea-hmd"
  else
    hmd_say "kept $confdir (config, keystore key) and /var/lib/veea-hmd; PURGE=1 deletes them"
  fi

  if [ -n "$D" ]; then
    hmd_say "removed from $D; DESTDIR is set, so udev, D-Bus and systemd were not reloaded"
  else
    hmd_reload_host "$confdir/config.json" --no-trigger
  fi
}

case "$action" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) die "usage: $0 install [--package] | uninstall" ;;
esac

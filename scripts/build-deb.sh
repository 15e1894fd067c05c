#!/bin/sh
# Builds OUTDIR/veea-hmd_<version>_<arch>.deb (OUTDIR defaults to build/) with dpkg-deb alone:
# scripts/install.sh fills a staging tree exactly as `make install` would, then DEBIAN/ is added.
# Needs a built dist/ and the local node_modules; no network.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/build}
mkdir -p "$out"
out=$(cd "$out" && pwd)

pkgjson="$repo/package.json"
version=$(node -p 'require(process.argv[1]).version' "$pkgjson")
description=$(node -p 'require(process.argv[1]).description' "$pkgjson")
# engines.node ">=20.19" -> "20.19": what preinst checks for.
node_min=$(node -p '
  const m = /(\d+)(?:\.(\d+))?/.exec(require(process.argv[1]).engines?.node ?? "20");
  `${m[1]}.${m[2] ?? 0}`' "$pkgjson")
debversion=$(printf '%s' "$version" | tr '-' '~')
arch=$(dpkg --print-architecture)
deb="$out/veea-hmd_${debversion}_${arch}.deb"

stage=$(mktemp -d "$out/.deb-staging.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

# The package's own layout, whatever the caller's environment says.
DESTDIR=$stage PREFIX=/usr SYSCONFDIR=/etc UDEVRULESDIR='' DBUSDIR='' SYSTEMDUNITDIR='' TMPFILESDIR='' \
  "$repo/scripts/install.sh" install --package

installed_kb=$(du -sk "$stage" | cut -f1)
mkdir -m 0755 "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<EOF
Package: veea-hmd
Version: $debversion
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-veea-hmd maintainers <root@localhost>}
Installed-Size: $installed_kb
Depends: dbus, udev
Recommends: nodejs (>= $node_min), systemd
Section: admin
Priority: optional
Description: $description
 A host daemon that hands every udev device insert and remove to the Docker
 containers that registered for them over the system D-Bus, in order and
 acknowledged, and saves container keystores into sealed host storage.
 Needs Node.js >= $node_min (checked before installation).
EOF
echo /etc/veea-hmd/config.json >"$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"

# Maintainer scripts get packaging/host.sh pasted in: postrm runs after our files are gone.
for script in preinst postinst prerm postrm; do
  awk -v host="$repo/packaging/host.sh" -v node_min="$node_min" '
    $0 == "#@HOST_FUNCTIONS@" { while ((getline line < host) > 0) print line; close(host); next }
    { gsub(/@NODE_MIN@/, node_min); print }
  ' "$repo/packaging/deb/$script" >"$stage/DEBIAN/$script"
  chmod 0755 "$stage/DEBIAN/$script"
done

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"

#!/bin/sh
# hmd: runs veea-hmd on the system's Node.js (or $HMD_NODE). The library is found next to this
# launcher (../lib/veea-hmd), so a staged copy (make install DESTDIR=...) runs as well as the
# installed one, and a symlink to the launcher works too.
node=${HMD_NODE:-node}
if ! command -v "$node" >/dev/null 2>&1; then
  echo "hmd: Node.js >= 20 is needed and \"$node\" is not in PATH (set HMD_NODE to its path)" >&2
  exit 127
fi
here=$(dirname "$(readlink -f "$0")")
exec "$node" "$here/../lib/veea-hmd/dist/main.js" "$@"

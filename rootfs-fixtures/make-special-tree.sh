#!/usr/bin/env bash
# Adds to DIR what git cannot store: hardlinks, a fifo, setuid and sticky
# modes, an empty directory, a user xattr, a long path and, when run as
# root, a device node and foreign ownership. Mtimes are fixed so the tree
# is the same whenever it is made.
#
# usage: make-special-tree.sh DIR
set -euo pipefail
dir=${1:?usage: make-special-tree.sh DIR}
mkdir -p "$dir/usr/bin" "$dir/var/spool" "$dir/tmp" "$dir/srv/empty"
printf 'binary\n' >"$dir/usr/bin/tool"
chmod 4755 "$dir/usr/bin/tool"
ln -f "$dir/usr/bin/tool" "$dir/usr/bin/tool-alias"
chmod 1777 "$dir/tmp"
[ -p "$dir/var/spool/pipe" ] || mkfifo -m 0640 "$dir/var/spool/pipe"
long="$dir/srv/$(printf 'd%.0s' $(seq 1 120))/$(printf 'f%.0s' $(seq 1 120))"
mkdir -p "$(dirname "$long")"
printf 'deep\n' >"$long"
if command -v setfattr >/dev/null; then
    setfattr -n user.shipyard.fixture -v demo "$dir/usr/bin/tool" 2>/dev/null || true
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$dir/dev" "$dir/home/app"
    [ -e "$dir/dev/null" ] || mknod -m 0666 "$dir/dev/null" c 1 3
    chown -R 1000:1000 "$dir/home/app"
fi
find "$dir" -depth -exec touch -h -d @1600000000 {} +

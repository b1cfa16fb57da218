#!/usr/bin/env bash
# Makes ./base: a small builder rootfs from the host's dash and coreutils
# (with the libraries they need) plus an /etc/motd the build deletes.
# usage: examples/two-images/make-base.sh [DIR]   (default: beside this script)
set -euo pipefail
dest=${1:-$(dirname "$0")/base}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/etc" "$dest/tmp"
for tool in /bin/sh /bin/mkdir /bin/rm /bin/cat /bin/ls /bin/chmod /bin/ln /usr/bin/head; do
    real=$(readlink -f "$tool")
    cp "$real" "$dest/bin/$(basename "$tool")"
    for lib in $(ldd "$real" | grep -o '/[^ ]*'); do
        mkdir -p "$dest$(dirname "$lib")"
        cp -L "$lib" "$dest$lib"
    done
done
printf 'welcome to the builder\n' >"$dest/etc/motd"
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/opt/app:/bin/sh\n' >"$dest/etc/passwd"

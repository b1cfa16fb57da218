#!/usr/bin/env bash
# Step-cache fast paths, as the current (unprivileged) user:
# - tapeout through the overlay upper dir of a 1 MiB change on a builder
#   of ~100k files (the "many" tree of compare.sh as a rootfs: base);
#   the tapeout's own time comes from the build log ("done in");
# - peak RSS of a build whose image layer is 2 GiB.
# usage: cache.sh SHIPYARD_BIN WORKDIR RESULTS_TSV MAKE_BASE_SH
set -euo pipefail
sy=$1 w=$2 results=$3 make_base=$4
runs=${RUNS:-3}
source "$(dirname "$0")/lib.sh"
c="$w/cachebench"
rm -rf "$c" && mkdir -p "$c/tap" "$c/big"
# A cache of its own, removed at the end: the 2 GiB build would otherwise
# leave its layers in the user's cache after every run.
export XDG_CACHE_HOME="$c/cache"
[ -d "$w/many" ] || { echo "error: $w/many missing (compare.sh makes it)" >&2; exit 1; }

# The builder: a shell and coreutils plus the many tree (hard links).
bash "$make_base" "$c/tapbase" >/dev/null
cp -al "$w/many" "$c/tapbase/data"
cat >"$c/tap/shipyard.toml" <<TOML
[builder]
from = "rootfs:$c/tapbase"

[build.change]
run = "mkdir -p /out && head -c 1048576 /dev/urandom > /out/blob"

[tapeout.t]
after = ["build.change"]
include = ["/out"]

[image.i]
from = "scratch"
tapeouts = ["t"]
TOML
echo "==> tapeout of a 1 MiB change on a $(find "$c/tapbase" | wc -l)-entry builder" >&2
# Warm: the base's identity (content digests) is computed once.
"$sy" build "$c/tap" --output "oci:$c/tout" >/dev/null 2>&1
for i in $(seq 1 "$runs"); do
    once cache.tapeout.build "rm -rf $c/tout" "$sy build --no-cache-rule build.change $c/tap --output oci:$c/tout"
    t=$(sed -n 's/^==> tapeout.t: done in \([0-9.]*\) s$/\1/p' "$w/err.out")
    printf 'cache.tapeout.alone\t%s 0\n' "$t" >>"$results"
    echo "  tapeout alone: $t s" >&2
done

echo "==> peak RSS of a build with a 2 GiB layer" >&2
bash "$make_base" "$c/base-tree" >/dev/null
"$sy" diff "$c/base-tree" --against scratch --output "oci:$c/base:v1" >/dev/null
cat >"$c/big/shipyard.toml" <<TOML
[builder]
from = "oci:$c/base:v1"

[build.big]
run = "mkdir -p /out && head -c 2147483648 /dev/urandom > /out/big"

[tapeout.t]
after = ["build.big"]
include = ["/out"]

[image.i]
from = "oci:$c/base:v1"
tapeouts = ["t"]
TOML
once cache.bigbuild "rm -rf $c/bout" "$sy build --no-cache $c/big --output oci:$c/bout"
"$sy" inspect "oci:$c/bout:i" | sed -n '/layers/,$p' | head -5 >&2 || true
rm -rf "$c/bout" "$c/big"
"$sy" cache prune >/dev/null 2>&1 || true
rm -rf "$c/cache" 2>/dev/null || true

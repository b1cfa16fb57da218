#!/usr/bin/env bash
# The workloads of benches/run, as the current (unprivileged) user.
# usage: compare.sh SHIPYARD_BIN WORKDIR
set -euo pipefail
sy=$1
w=$2
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-3}
mkdir -p "$w"
results="$w/results.tsv"
: >"$results"
for t in buildah umoci /usr/bin/time python3; do
    command -v "$t" >/dev/null || { echo "error: $t not found (run benches/run as root once)" >&2; exit 1; }
done

source "$(dirname "$0")/lib.sh"

# pair A_NAME A_PREP A_CMD B_NAME B_PREP B_CMD: RUNS rounds, alternating
# shipyard and its peer, so both see the same machine (it is shared).
pair() {
    local i
    for i in $(seq 1 "$runs"); do
        once "$1" "$2" "$3"
        once "$4" "$5" "$6"
    done
}

make_base="$here/make-base.sh"
[ -f "$make_base" ] || make_base="$here/../examples/two-images/make-base.sh"
if [ "${ONLY:-}" = multistage ]; then
    bash "$here/multistage.sh" "$sy" "$w" "$results" "$make_base"
    bash "$here/cache.sh" "$sy" "$w" "$results" "$make_base"
    python3 "$here/report.py" "$results"
    exit 0
fi
examples="$here/examples"
[ -d "$examples" ] || examples="$here/../examples"
if [ "${ONLY:-}" = grocker ]; then
    bash "$here/grocker.sh" "$sy" "$w" "$results" "$examples"
    python3 "$here/report.py" "$results"
    exit 0
fi
if [ "${ONLY:-}" = cache ]; then
    bash "$here/cache.sh" "$sy" "$w" "$results" "$make_base"
    python3 "$here/report.py" "$results"
    exit 0
fi
if [ "${ONLY:-}" = registry ]; then
    bash "$here/registry.sh" "$sy" "$w" "$results"
    python3 "$here/report.py" "$results"
    exit 0
fi

echo "==> preparing trees in $w" >&2
if [ ! -d "$w/big" ]; then
    cp -a /usr/lib/x86_64-linux-gnu "$w/big.tmp" && mv "$w/big.tmp" "$w/big"
fi
if [ "${ONLY:-}" != big ] && [ ! -d "$w/many" ]; then
    python3 - "$w/many.tmp" <<'PY'
import os, sys, random
root = sys.argv[1]
rnd = random.Random(42)
for d in range(1000):
    dd = os.path.join(root, f"d{d:03}", f"sub{d % 7}")
    os.makedirs(dd, exist_ok=True)
    for f in range(100):
        with open(os.path.join(dd, f"f{f:03}.txt"), "wb") as fh:
            fh.write(rnd.randbytes(rnd.randint(200, 2000)))
PY
    mv "$w/many.tmp" "$w/many"
fi
echo "  big: $(du -sh "$w/big" | cut -f1) in $(find "$w/big" | wc -l) entries" >&2
[ -d "$w/many" ] && echo "  many: $(du -sh "$w/many" | cut -f1) in $(find "$w/many" | wc -l) entries" >&2

B="buildah --root $w/bstore --runroot $XDG_RUNTIME_DIR/shipyard-bench-run --storage-driver overlay"
trees="big many"
[ "${ONLY:-}" = big ] && trees=big
for tree in $trees; do
    echo "==> $tree: diff + gzip layer vs buildah commit" >&2
    # buildah: a working container from scratch holding the tree (copied in
    # untimed), then `buildah commit` (gzip, like shipyard's default).
    $B rm -a >/dev/null 2>&1 || true
    ctr=$($B from scratch)
    $B unshare sh -c "m=\$($B mount $ctr) && cp -a $w/$tree/. \$m/"
    pair "$tree.shipyard.diff" "rm -rf $w/sout" "$sy diff $w/$tree --against scratch --output oci:$w/sout:t" \
        "$tree.buildah.commit" "rm -rf $w/bout" "$B commit --disable-compression=false --quiet $ctr oci:$w/bout:t"
    echo "  layer sizes: shipyard $(du -b "$w"/sout/blobs/sha256/* | sort -n | tail -1 | cut -f1), buildah $(du -b "$w"/bout/blobs/sha256/* | sort -n | tail -1 | cut -f1)" >&2
    printf '%s\t%s\n' "$tree.sizes" "$(du -b "$w"/sout/blobs/sha256/* | sort -n | tail -1 | cut -f1) $(du -b "$w"/bout/blobs/sha256/* | sort -n | tail -1 | cut -f1)" >>"$results"
    $B rm -a >/dev/null 2>&1 || true

    echo "==> $tree: re-diff with nothing changed vs umoci repack" >&2
    rm -rf "$w/ulayout" "$w/ubundle"
    "$sy" diff "$w/$tree" --against scratch --output "oci:$w/ulayout:base" --keep-mtimes >/dev/null
    umoci unpack --rootless --image "$w/ulayout:base" "$w/ubundle" >/dev/null
    # umoci compares against the mtree it wrote at unpack; shipyard against
    # the manifest taken at the same point. Both untimed.
    "$sy" manifest "$w/ubundle/rootfs" -o "$w/rootfs.mf"
    pair "$tree.shipyard.rediff" "true" "$sy diff $w/ubundle/rootfs --against $w/rootfs.mf --output oci:$w/ulayout:same" \
        "$tree.umoci.repack" "true" "umoci repack --image $w/ulayout:same-umoci $w/ubundle"
    if [ "$tree" = big ]; then
        # Both unpack the same image (the layout made above, one gzip
        # layer) into a fresh directory, rootless.
        echo "==> $tree: unpack vs umoci unpack --rootless" >&2
        pair "$tree.shipyard.unpack" "rm -rf $w/sunpack" "$sy unpack oci:$w/ulayout:base $w/sunpack" \
            "$tree.umoci.unpack" "rm -rf $w/uunpack" "umoci unpack --rootless --image $w/ulayout:base $w/uunpack"
        rm -rf "$w/sunpack" "$w/uunpack"
    fi
    rm -rf "$w/sout" "$w/bout"
done
if [ "${ONLY:-}" = big ]; then
    python3 "$here/report.py" "$results"
    exit 0
fi
echo "==> multi-stage reference workload: shipyard build vs buildah bud" >&2
bash "$here/multistage.sh" "$sy" "$w" "$results" "$make_base"
echo "==> the Grocker example: shipyard build vs BuildKit" >&2
bash "$here/grocker.sh" "$sy" "$w" "$results" "$examples"
bash "$here/cache.sh" "$sy" "$w" "$results" "$make_base"
bash "$here/registry.sh" "$sy" "$w" "$results"
python3 "$here/report.py" "$results"

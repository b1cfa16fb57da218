#!/usr/bin/env bash
# Registry workloads, side by side with skopeo in one run, against a fresh
# docker-registry on 127.0.0.1: push of a ~500 MiB, 4-layer image
# (vs `skopeo copy --preserve-digests`), re-push with every blob present,
# and pull into an empty cache (vs `skopeo copy` to an OCI layout).
# usage: registry.sh SHIPYARD_BIN WORKDIR RESULTS_TSV
set -euo pipefail
sy=$1
w=$2
results=$3
runs=${RUNS:-3}
source "$(dirname "$0")/lib.sh"
for t in skopeo docker-registry python3; do
    command -v "$t" >/dev/null || { echo "error: $t not found (run benches/run as root once)" >&2; exit 1; }
done

img="$w/rimg"
if [ ! -f "$img/index.json" ] || ! grep -q '"l4"' "$img/index.json"; then
    echo "==> registry: making a ~500 MiB image in 4 layers" >&2
    rm -rf "$img" "$w/rtree"
    prev=scratch
    for i in 1 2 3 4; do
        mkdir -p "$w/rtree/layer$i"
        python3 - "$w/rtree/layer$i" "$i" <<'PY'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
# Half random (incompressible), half text-like, like real binaries + data.
for f in range(8):
    with open(os.path.join(d, f"blob{f}.bin"), "wb") as fh:
        fh.write(rnd.randbytes(8 << 20))
    with open(os.path.join(d, f"text{f}.txt"), "wb") as fh:
        words = [rnd.choice([b"alpha", b"beta", b"gamma", b"delta", b"\n"]) for _ in range(1 << 20)]
        fh.write(b" ".join(words)[: 8 << 20])
PY
        if [ "$prev" = scratch ]; then
            "$sy" diff "$w/rtree" --against scratch --output "oci:$img:l$i" >/dev/null
        else
            "$sy" diff "$w/rtree" --against "oci:$img:$prev" --base "oci:$img:$prev" --output "oci:$img:l$i" >/dev/null
        fi
        prev=l$i
    done
fi
echo "  image: $(du -sh "$img/blobs" | cut -f1) of blobs" >&2

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$w/regdata"
cat >"$w/reg.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $w/regdata
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$w/reg.yml" >/dev/null 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
    sleep 0.1
done
R="127.0.0.1:$port"
SY_ENV="XDG_CACHE_HOME=$w/sycache"
SK="skopeo copy --quiet --preserve-digests"

echo "==> registry: push to an empty repository" >&2
for i in $(seq 1 "$runs"); do
    # Fresh caches each round, so neither tool can mount from an earlier one.
    once "registry.shipyard.push" "rm -rf $w/sycache" \
        "$SY_ENV $sy push --quiet --tls-verify=false oci:$img:l4 docker://$R/sy$i/img:v1"
    once "registry.skopeo.push" "rm -rf $w/skhome" \
        "HOME=$w/skhome $SK --dest-tls-verify=false oci:$img:l4 docker://$R/sk$i/img:v1"
done
echo "==> registry: re-push, every blob present" >&2
for i in $(seq 1 "$runs"); do
    once "registry.shipyard.repush" "true" \
        "$SY_ENV $sy push --quiet --tls-verify=false oci:$img:l4 docker://$R/sy1/img:v1"
    once "registry.skopeo.repush" "true" \
        "HOME=$w/skhome $SK --dest-tls-verify=false oci:$img:l4 docker://$R/sk1/img:v1"
done
echo "==> registry: pull into an empty cache / layout" >&2
for i in $(seq 1 "$runs"); do
    once "registry.shipyard.pull" "rm -rf $w/sycache $w/sypull" \
        "$SY_ENV $sy pull --quiet --tls-verify=false docker://$R/sy1/img:v1 oci:$w/sypull:v1"
    once "registry.skopeo.pull" "rm -rf $w/skhome $w/skpull" \
        "HOME=$w/skhome skopeo copy --quiet --src-tls-verify=false docker://$R/sk1/img:v1 oci:$w/skpull:v1"
done
# Both pulled the same image, byte for byte.
a=$(python3 -c "import json;print(json.load(open('$w/sypull/index.json'))['manifests'][0]['digest'])")
b=$(python3 -c "import json;print(json.load(open('$w/skpull/index.json'))['manifests'][0]['digest'])")
[ "$a" = "$b" ] || { echo "error: pulled digests differ: $a vs $b" >&2; exit 1; }

#!/usr/bin/env bash
# The multi-stage reference workload, shipyard build vs buildah bud and
# BuildKit (`DOCKER_BUILDKIT=1 docker build`), as the current
# (unprivileged) user. A base image; a builder stage that writes 2000
# small files, a 50 MiB file, a symlink, a hardlink and a non-default mode
# under /out and deletes a base file; a final image = base + /out.
# BuildKit needs a dockerd this user may use, named by DOCKER_HOST
# (benches/run starts one as root); without one its rows are skipped.
# usage: multistage.sh SHIPYARD_BIN WORKDIR RESULTS_TSV MAKE_BASE_SH
set -euo pipefail
sy=$1 w=$2 results=$3 make_base=$4
runs=${RUNS:-3}
m="$w/multistage"
# buildah's store holds files of subordinate ids: only its namespace can
# remove them.
[ -d "$m/bstore" ] && buildah unshare rm -rf "$m/bstore"
rm -rf "$m"
mkdir -p "$m/ctx/src"
echo v0 >"$m/ctx/src/input"
bash "$make_base" "$m/base-tree" >/dev/null
"$sy" diff "$m/base-tree" --against scratch --output "oci:$m/base:v1" >/dev/null
step='mkdir -p /out/small && cat /src/input > /out/input && i=0 && while [ $i -lt 2000 ]; do echo $i > /out/small/f$i; i=$((i+1)); done && head -c 52428800 /dev/zero > /out/big && ln -s big /out/link && ln /out/big /out/hard && chmod 0750 /out/small && rm /etc/motd'
cat >"$m/ctx/shipyard.toml" <<TOML
[builder]
from = "oci:$m/base:v1"
sources = { "/src" = "src" }

[build.out]
run = "$step"

[tapeout.out]
after = ["build.out"]
include = ["/out"]

[image.final]
from = "oci:$m/base:v1"
tapeouts = ["out"]
TOML
cat >"$m/ctx/Containerfile" <<DOCKER
FROM oci:$m/base:v1 AS builder
COPY src /src
RUN $step
FROM oci:$m/base:v1
COPY --from=builder /out /out
DOCKER
B="buildah --root $m/bstore --runroot $XDG_RUNTIME_DIR/shipyard-ms-run --storage-driver overlay"
# BuildKit through Debian's docker.io client (20.10, whose `docker build`
# has BuildKit built in; a newer client elsewhere on PATH would want the
# buildx plugin). The daemon has no registry to pull from: the base goes
# in by `docker load` of a docker-archive that skopeo makes of the same
# OCI layout, and the Dockerfile's FROM names the loaded tag.
D=/usr/bin/docker
bk=
if [ -z "${DOCKER_HOST:-}" ]; then
    echo "  BuildKit skipped: no dockerd (DOCKER_HOST unset; benches/run starts one when run as root)" >&2
elif ! $D version --format '{{.Server.Version}}' >/dev/null 2>"$m/docker.err"; then
    echo "  BuildKit skipped: $(head -1 "$m/docker.err")" >&2
else
    bk="DOCKER_BUILDKIT=1 $D build --network none --progress plain -f $m/Dockerfile -t shipyard-bench-final"
    bkbase=shipyard-bench-base:v1
    skopeo copy --quiet "oci:$m/base:v1" "docker-archive:$m/base.tar:$bkbase" >/dev/null
    $D load -q -i "$m/base.tar" >/dev/null
    rm -f "$m/base.tar"
    sed "s|^FROM oci:$m/base:v1|FROM $bkbase|" "$m/ctx/Containerfile" >"$m/Dockerfile"
fi
[ -n "$bk" ] || printf 'multistage.buildkit\tskipped 0\n' >>"$results"
# Warm all: the base pulled/unpacked once, as on a CI runner's second build.
"$sy" build "$m/ctx" --output "oci:$m/sout" >/dev/null 2>&1
"$sy" build -f "$m/ctx/Containerfile" "$m/ctx" --output "oci:$m/fout" >/dev/null 2>&1
$B bud --network none --layers=false -f "$m/ctx/Containerfile" -t final "$m/ctx" >/dev/null 2>&1
[ -z "$bk" ] || bash -c "$bk $m/ctx" >/dev/null 2>&1
source "$(dirname "$0")/lib.sh"
# First build: every step runs (--no-cache: shipyard still stores its
# results, as a first build does, and so does BuildKit; buildah without
# --layers).
for i in $(seq 1 "$runs"); do
    once multistage.shipyard.build "rm -rf $m/sout" "$sy build --no-cache $m/ctx --output oci:$m/sout"
    once multistage.shipyardf.build "rm -rf $m/fout" "$sy build --no-cache -f $m/ctx/Containerfile $m/ctx --output oci:$m/fout"
    once multistage.buildah.bud "$B rmi -f final" "$B bud --network none --layers=false -f $m/ctx/Containerfile -t final $m/ctx"
    [ -z "$bk" ] || once multistage.buildkit.build "$D rmi -f shipyard-bench-final" "$bk --no-cache $m/ctx"
done
# Rebuild with nothing changed: all with their step caches warm.
$B bud --network none --layers -f "$m/ctx/Containerfile" -t final "$m/ctx" >/dev/null 2>&1
[ -z "$bk" ] || bash -c "$bk $m/ctx" >/dev/null 2>&1
for i in $(seq 1 "$runs"); do
    once multistage.shipyard.rebuild "rm -rf $m/sout" "$sy build $m/ctx --output oci:$m/sout"
    once multistage.shipyardf.rebuild "rm -rf $m/fout" "$sy build -f $m/ctx/Containerfile $m/ctx --output oci:$m/fout"
    once multistage.buildah.rebuild "true" "$B bud --network none --layers -f $m/ctx/Containerfile -t final $m/ctx"
    [ -z "$bk" ] || once multistage.buildkit.rebuild "true" "$bk $m/ctx"
done
# Rebuild after one source file the rule reads changed: a new value each
# round, so neither cache has it. shipyard's overhead is its total minus
# the rule's own run time (its log says "done in").
for i in $(seq 1 "$runs"); do
    once multistage.shipyard.onechange "rm -rf $m/sout; date +%s%N >$m/ctx/src/input" "$sy build $m/ctx --output oci:$m/sout"
    rule=$(sed -n 's/^==> build.out: done in \([0-9.]*\) s$/\1/p' "$w/err.out")
    total=$(tail -1 "$results" | cut -f2 | cut -d' ' -f1)
    printf 'multistage.shipyard.onechange.rule\t%s 0\n' "$rule" >>"$results"
    echo "  rule alone: $rule s of $total s" >&2
    once multistage.shipyardf.onechange "rm -rf $m/fout; date +%s%N >$m/ctx/src/input" "$sy build -f $m/ctx/Containerfile $m/ctx --output oci:$m/fout"
    once multistage.buildah.onechange "date +%s%N >$m/ctx/src/input" "$B bud --network none --layers -f $m/ctx/Containerfile -t final $m/ctx"
    [ -z "$bk" ] || once multistage.buildkit.onechange "date +%s%N >$m/ctx/src/input" "$bk $m/ctx"
done
# The same input for both, untimed, for the comparison below.
echo final >"$m/ctx/src/input"
rm -rf "$m/sout" "$m/fout"
"$sy" build "$m/ctx" --output "oci:$m/sout" >/dev/null 2>&1
"$sy" build -f "$m/ctx/Containerfile" "$m/ctx" --output "oci:$m/fout" >/dev/null 2>&1
$B bud --network none --layers -f "$m/ctx/Containerfile" -t final "$m/ctx" >/dev/null 2>&1
# Same final contents: compare shipyard's manifests of the results
# (buildah's pushed to a layout, BuildKit's saved as a docker-archive,
# both untimed; mtimes differ by design).
$B push final "oci:$m/bout:final" >/dev/null 2>&1
strip() { sed -E 's/ mtime=[0-9.]+//'; }
if diff <("$sy" manifest "oci:$m/sout:final" | strip) <("$sy" manifest "oci:$m/bout:final" | strip) >"$m/contents.diff"; then
    echo "  final contents: identical" >&2
    printf 'multistage.contents\tsame 0\n' >>"$results"
else
    echo "  final contents differ:" >&2
    head -20 "$m/contents.diff" >&2
    printf 'multistage.contents\tdiffer 0\n' >>"$results"
fi
# The Containerfile built by shipyard: the same tree as the spec's image.
if diff <("$sy" manifest "oci:$m/sout:final" | strip) <("$sy" manifest "oci:$m/fout:image" | strip) >"$m/contents-f.diff"; then
    echo "  final contents (build -f): identical" >&2
    printf 'multistage.shipyardf.contents\tsame 0\n' >>"$results"
else
    echo "  final contents (build -f) differ:" >&2
    head -20 "$m/contents-f.diff" >&2
    printf 'multistage.shipyardf.contents\tdiffer 0\n' >>"$results"
fi
if [ -n "$bk" ]; then
    bash -c "$bk $m/ctx" >/dev/null 2>&1
    $D save -o "$m/dout.tar" shipyard-bench-final
    if diff <("$sy" manifest "oci:$m/sout:final" | strip) <("$sy" manifest "docker-archive:$m/dout.tar" | strip) >"$m/contents-bk.diff"; then
        echo "  final contents (BuildKit): identical" >&2
        printf 'multistage.buildkit.contents\tsame 0\n' >>"$results"
    else
        echo "  final contents (BuildKit) differ:" >&2
        head -20 "$m/contents-bk.diff" >&2
        printf 'multistage.buildkit.contents\tdiffer 0\n' >>"$results"
    fi
    rm -f "$m/dout.tar"
    # Every --no-cache round left its layers in BuildKit's cache (about
    # 0.5 GiB a round): give the space back, the next run starts cold.
    $D rmi -f shipyard-bench-final "$bkbase" >/dev/null 2>&1 || true
    $D builder prune -af >/dev/null 2>&1 || true
fi

#!/usr/bin/env bash
# The Grocker example (examples/grocker: a compiler builder makes a wheel
# of a Python package with a C extension; a clean runtime pip-installs
# it) against BuildKit building the equivalent Dockerfile, on the real
# Debian base the tests make (debootstrap --variant=minbase bookworm).
# Timed: the rebuild after one C source of the app changed, which reruns
# the wheel and the install in both; and the rebuild with nothing
# changed. The first build is only the warm-up: apt fetches packages
# over the network, which says nothing about either tool.
# Needs the base (scripts/test makes it; SHIPYARD_DISTRO_BASES names its
# layout) and a dockerd this user may use (DOCKER_HOST); without either
# its rows are skipped.
# usage: grocker.sh SHIPYARD_BIN WORKDIR RESULTS_TSV EXAMPLES_DIR
set -euo pipefail
sy=$1 w=$2 results=$3 examples=$4
runs=${RUNS:-3}
g="$w/grocker"
bases=${SHIPYARD_DISTRO_BASES:-/var/cache/shipyard-tests/images}
D=/usr/bin/docker
skip() {
    echo "  grocker skipped: $1" >&2
    printf 'grocker.buildkit\tskipped 0\n' >>"$results"
    exit 0
}
[ -f "$bases/index.json" ] || skip "no Debian base at $bases (bash scripts/test makes it)"
[ -n "${DOCKER_HOST:-}" ] || skip "no dockerd (DOCKER_HOST unset; benches/run starts one when run as root)"
$D version --format '{{.Server.Version}}' >/dev/null 2>&1 || skip "dockerd at $DOCKER_HOST does not answer"
rm -rf "$g"
mkdir -p "$g"
cp -r "$examples/grocker" "$g/ctx"
base="oci:$bases:bookworm-merged"
sed -i "s|docker://docker.io/library/debian:bookworm-slim|$base|" "$g/ctx/shipyard.toml"
bkbase=shipyard-bench-bookworm:merged
skopeo copy --quiet "$base" "docker-archive:$g/base.tar:$bkbase" >/dev/null
$D load -q -i "$g/base.tar" >/dev/null
rm -f "$g/base.tar"
# The same three phases as the spec, step for step (apt through the host's
# network in the two apt steps, as the spec's builders have it).
apt='apt-get -q -o APT::Sandbox::User=root'
cat >"$g/Dockerfile" <<DOCKER
FROM $bkbase AS compiler
RUN $apt update && DEBIAN_FRONTEND=noninteractive $apt install -y --no-install-recommends gcc libc6-dev python3-dev python3-pip python3-setuptools python3-wheel
FROM compiler AS wheels
ENV PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY app /src
RUN --mount=type=cache,target=/root/.cache/pip cp -r /src /tmp/app && pip wheel --no-deps --no-index --no-build-isolation --wheel-dir /wheels /tmp/app && rm -rf /tmp/app
FROM $bkbase
RUN $apt update && DEBIAN_FRONTEND=noninteractive $apt install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*
RUN --mount=from=wheels,source=/wheels,target=/wheels pip install --no-index --no-cache-dir --break-system-packages --root-user-action=ignore /wheels/*.whl
CMD ["python3", "-m", "greet"]
DOCKER
bk="DOCKER_BUILDKIT=1 $D build --network host --progress plain -f $g/Dockerfile -t shipyard-bench-grocker $g/ctx"
export XDG_CACHE_HOME="$g/cache"
# Warm-up: both build everything once (apt downloads, untimed).
"$sy" build "$g/ctx" --output "oci:$g/sout" >"$g/warm.log" 2>&1 || { cat "$g/warm.log" >&2; exit 1; }
bash -c "$bk" >"$g/warm-bk.log" 2>&1 || { tail -30 "$g/warm-bk.log" >&2; exit 1; }
source "$(dirname "$0")/lib.sh"
src="$g/ctx/app/greet/_native.c"
cp "$src" "$g/native.c.orig"
for i in $(seq 1 "$runs"); do
    once grocker.shipyard.rebuild "true" "$sy build $g/ctx --output oci:$g/sout"
    once grocker.buildkit.rebuild "true" "$bk"
done
# One C source changed: a new comment each round, so neither cache has it.
for i in $(seq 1 "$runs"); do
    once grocker.shipyard.onechange "{ cat $g/native.c.orig; echo \"/* \$(date +%s%N) */\"; } >$src" "$sy build $g/ctx --output oci:$g/sout"
    for step in build.wheels build.install; do
        grep -q "^==> $step ([^)]*): done in" "$w/err.out" ||
            { echo "error: $step did not run after the source changed" >&2; cat "$w/err.out" >&2; exit 1; }
    done
    # The two rerun steps' own run time, as shipyard's log gives it: what
    # is left once the tool's own overhead is taken away.
    steps=$(sed -n 's/^==> build\.\(wheels\|install\) ([^)]*): done in \([0-9.]*\) s$/\2/p' "$w/err.out" |
        awk '{ s += $1 } END { print s }')
    printf 'grocker.shipyard.onechange.steps\t%s 0\n' "$steps" >>"$results"
    once grocker.buildkit.onechange "{ cat $g/native.c.orig; echo \"/* \$(date +%s%N) */\"; } >$src" "$bk"
    # The same two steps' run time in BuildKit's plain progress log.
    steps=$(awk '
        match($0, /^#[0-9]+ \[[^]]*\] RUN .*pip (wheel|install)/) { split($1, a, "#"); want[a[2]] = 1 }
        $2 == "DONE" { split($1, a, "#"); if (a[2] in want) { t = $3; sub(/s$/, "", t); s += t } }
        END { print s + 0 }' "$w/err.out")
    printf 'grocker.buildkit.onechange.steps\t%s 0\n' "$steps" >>"$results"
    echo "  steps alone: shipyard $(tail -3 "$results" | head -1 | cut -f2 | cut -d' ' -f1) s, BuildKit $steps s" >&2
done
cp "$g/native.c.orig" "$src"
$D rmi -f shipyard-bench-grocker "$bkbase" >/dev/null 2>&1 || true
$D builder prune -af >/dev/null 2>&1 || true

# A dockerd of our own (Debian's docker.io), sourced by scripts/test (for
# the tests that build in a Docker container) and benches/run (BuildKit
# as a peer of the multi-stage workload). As root. No iptables and no
# bridge (containers and builds run with --network none); the host's hard
# nofile limit as the containers' (dockerd's default is above it here);
# its own data root, exec root, pidfile and socket, so it never meets the
# machine's own dockerd or another run's; the socket belongs to group
# docker, which the test users are in (scripts/setup-users).

DOCKERD_PID=

# dockerd_start STATE_DIR RUN_DIR: data root STATE_DIR/data and log
# STATE_DIR/dockerd.log; exec root, pidfile and socket in RUN_DIR. Exports
# DOCKER_HOST; returns once the daemon answers, or exits with its log.
# The exec root holds containerd's socket: RUN_DIR must stay short (a
# unix socket path is at most 107 bytes).
dockerd_start() {
    local state=$1 run=$2
    command -v dockerd >/dev/null || { echo "error: dockerd not found (docker.io)" >&2; exit 1; }
    install -d -m 0755 "$state" "$run"
    export DOCKER_HOST=unix://$run/docker.sock
    # A dockerd left by a run that was killed holds the data root.
    local old
    if [ -f "$run/dockerd.pid" ] && old=$(cat "$run/dockerd.pid") &&
        [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
        printf '\n==> %s\n' "stopping the dockerd a previous run left ($old)" >&2
        kill "$old"
        while kill -0 "$old" 2>/dev/null; do sleep 0.2; done
    fi
    local n
    n=$(ulimit -Hn)
    printf '\n==> %s\n' "starting dockerd ($DOCKER_HOST)" >&2
    dockerd --iptables=false --ip6tables=false --bridge=none \
        --default-ulimit "nofile=$n:$n" \
        --data-root "$state/data" --exec-root "$run/exec" \
        --pidfile "$run/dockerd.pid" \
        -H "$DOCKER_HOST" --group docker \
        >"$state/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for i in $(seq 1 120); do
        # Debian's client: the one that speaks to this daemon's version.
        /usr/bin/docker info >/dev/null 2>&1 && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "error: dockerd did not come up; its log:" >&2
    tail -30 "$state/dockerd.log" >&2
    exit 1
}

# dockerd_stop: stops the dockerd that dockerd_start started, if any, and
# waits for it (it unmounts and removes its exec root on the way out).
dockerd_stop() {
    [ -n "$DOCKERD_PID" ] || return 0
    kill "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
}

# Shared by the benchmark scripts. Expects $w (a scratch dir) and $results
# (the TSV that report.py reads).

# once NAME PREPARE CMD: one timed run of CMD (after PREPARE, untimed),
# recording wall seconds and peak RSS (KiB).
once() {
    local name=$1 prep=$2 cmd=$3
    bash -c "$prep" >/dev/null 2>&1
    /usr/bin/time -f "%e %M" -o "$w/time.out" bash -c "$cmd" >/dev/null 2>"$w/err.out" ||
        { echo "error: $name failed:" >&2; cat "$w/err.out" >&2; exit 1; }
    printf '%s\t%s\n' "$name" "$(cat "$w/time.out")" >>"$results"
    echo "  $name: $(cat "$w/time.out")" >&2
}

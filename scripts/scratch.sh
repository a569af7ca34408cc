# Sourced by the benchmark scripts: a scratch directory $work and a list $pids of the
# background processes they start, killed and removed when the script exits.
#
#   . scripts/scratch.sh NAME        # $work is ${TMPDIR:-/tmp}/mmaudit-NAME.XXXXXX
work=$(mktemp -d "${TMPDIR:-/tmp}/mmaudit-$1.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

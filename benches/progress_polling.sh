#!/usr/bin/env bash
# Benchmark (not a test): what asking the servers about the stages' sessions costs. The same
# `pgshift run` (backup to verify with checksums) on one generated database, alternately with the
# server watcher on and off (PGSHIFT_SERVER_WATCH=off), RUNS times each, in one invocation; prints
# each time, the medians and the ratio on/off (the issue's target: at most 1.01).
# Usage: bash benches/progress_polling.sh [ROWS] [RUNS]   (default 500,000 rows, 3 runs each)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-500000}
runs=${2:-3}
bench_env bc jq

bench_source bench_watch_src "$rows"
psql17 -p "$SOURCE_PORT" -d bench_watch_src -c 'CREATE INDEX ON wide (at, body)' -c 'ANALYZE wide'

work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

one_run() { # $1 = on|off; prints seconds
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_watch WITH (FORCE)'
    rm -rf "$work/backups"
    cat > "$work/plan.toml" <<PLAN
[source]
connection = "postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_watch_src"
[target]
connection = "postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_watch"
[backup]
dir = "$work/backups"
bin_dir = "$bin"
PLAN
    local start
    start=$(now)
    PGSHIFT_SERVER_WATCH=$1 ./target/release/pgshift run --plan "$work/plan.toml" --yes --json > "$work/events-$1.jsonl" \
        || { grep -v '"output"' "$work/events-$1.jsonl" | tail -5; die "pgshift run failed"; }
    echo "$(now) - $start" | bc
}

: > "$work/on"; : > "$work/off"
for i in $(seq 1 "$runs"); do
    # alternate which goes first, so a drift of the shared machine weighs on both
    if [ $((i % 2)) = 1 ]; then order="on off"; else order="off on"; fi
    for mode in $order; do
        t=$(one_run "$mode")
        echo "$t" >> "$work/$mode"
        echo "run $i, watcher $mode: ${t}s"
    done
done
on=$(median < "$work/on")
off=$(median < "$work/off")
polls=$(jq -s '[.[] | select(.event == "progress" and (.item | test("^(source|target) [0-9]+: ")))] | length' "$work/events-on.jsonl")
echo "rows in the hypertable:        $rows (+ $((rows / 20)) wide rows, 40 small tables)"
echo "median run, watcher on:        ${on}s"
echo "median run, watcher off:       ${off}s"
echo "ratio on / off:                $(echo "scale=3; $on / $off" | bc)"
echo "server progress events (last run with the watcher): $polls"
psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_watch WITH (FORCE)'
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_watch_src WITH (FORCE)'

#!/usr/bin/env bash
# Benchmark (not a test): the whole `pgshift run` against the classic runbook path on the same
# generated database, in one invocation. Classic: pg_dump --schema-only --no-owner --no-privileges
# | psql, then pg_dump --data-only | psql (triggers off). pgshift: backup (schema archive, roles,
# inventory with row counts, then the full archive beside the next stages), schema, data,
# post-data (indexes in parallel), tuning (ANALYZE in parallel) and a verify with checksums.
# ROUNDS rounds, classic and pgshift alternately; prints each time, the medians and their ratio,
# pgshift's time per stage and its timeline (overlap) from the last round's run.md, and its peak
# memory.
# Usage: bash benches/run_vs_classic.sh [ROWS] [ROUNDS]   (default 1,000,000 hypertable rows, 3 rounds)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-1000000}
rounds=${2:-3}
bench_env bc jq
bench_source bench_src "$rows"

reset_target() { psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }
work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

classic_run() { # prints seconds
    reset_target bench_classic
    local start
    start=$(now)
    "$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --schema-only --no-owner --no-privileges bench_src \
        | psql17 -p "$TARGET_PORT" -d bench_classic > /dev/null 2>&1 || true
    "$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --data-only --no-owner --no-privileges bench_src \
        | PGOPTIONS='-c session_replication_role=replica' "$bin/psql" -X -q -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d bench_classic > /dev/null 2>&1 || true
    echo "$(now) - $start" | bc
}

pgshift_run() { # prints seconds; leaves the run in $work/backups and its events in $work/events.jsonl
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_pgshift WITH (FORCE)'
    rm -rf "$work/backups"
    cat > "$work/plan.toml" <<PLAN
[source]
connection = "postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_src"
[target]
connection = "postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_pgshift"
[backup]
dir = "$work/backups"
bin_dir = "$bin"
PLAN
    local start
    start=$(now)
    /usr/bin/time -f '%M' -o "$work/rss" ./target/release/pgshift run --plan "$work/plan.toml" --yes --json > "$work/events.jsonl" \
        || { grep -v '"output"' "$work/events.jsonl" | tail -5; die "pgshift run failed"; }
    echo "$(now) - $start" | bc
}

: > "$work/classic"; : > "$work/pgshift"; : > "$work/rss-all"
for i in $(seq 1 "$rounds"); do
    # alternate which goes first, so a drift of the shared machine weighs on both
    if [ $((i % 2)) = 1 ]; then order="classic pgshift"; else order="pgshift classic"; fi
    for what in $order; do
        t=$("${what}_run")
        echo "$t" >> "$work/$what"
        [ "$what" = pgshift ] && cat "$work/rss" >> "$work/rss-all"
        echo "round $i, $what: ${t}s"
    done
done
classic=$(median < "$work/classic")
total=$(median < "$work/pgshift")

echo "rows in the hypertable:             $rows (+ $((rows / 20)) wide rows, 40 small tables)"
echo "classic pg_dump | psql (2 passes):  ${classic}s median of $rounds   (copies; proves nothing)"
echo "pgshift run (all stages):           ${total}s median of $rounds"
echo "ratio pgshift run / classic:        $(echo "scale=2; $total / $classic" | bc)"
echo "last pgshift run, per stage:"
jq -r 'select(.event == "stage_finished") | "  \(.stage):\t\(.elapsed_ms / 1000)s"' "$work/events.jsonl"
sed -n '/^Wall time/,$p' "$work"/backups/*/run.md
echo "pgshift peak memory (max RSS):      $(( $(sort -n "$work/rss-all" | tail -1) / 1024 )) MiB"
for db in bench_classic bench_pgshift; do psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_src WITH (FORCE)'

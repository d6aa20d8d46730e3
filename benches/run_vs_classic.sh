#!/usr/bin/env bash
# Benchmark (not a test): the whole `pgshift run` against the classic runbook path on the same
# generated database, in one invocation. Classic: pg_dump --schema-only --no-owner --no-privileges
# | psql, then pg_dump --data-only | psql (triggers off). pgshift: backup (schema, data, archive,
# roles, inventory with row counts), schema, data, post-data, and a verify with checksums.
# Prints both times, the ratio, and pgshift's time per stage (from its events), so the migration
# proper (schema + data + post-data) can be compared with the classic copy, which proves nothing.
# Usage: bash benches/run_vs_classic.sh [ROWS]   (default 1,000,000 rows in a hypertable)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-1000000}
bench_env bc jq

psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_src WITH (FORCE)' -c 'CREATE DATABASE bench_src'
psql17 -p "$SOURCE_PORT" -d bench_src -c "
    CREATE EXTENSION timescaledb;
    CREATE TABLE devices (id int PRIMARY KEY, name text NOT NULL);
    INSERT INTO devices SELECT i, 'device ' || i FROM generate_series(0, 499) i;
    CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL REFERENCES devices, value double precision, note text);
    SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
    INSERT INTO readings SELECT '2026-01-01'::timestamptz + make_interval(secs => i), i % 500, sin(i) * 1000,
                                CASE WHEN i % 7 = 0 THEN 'check ' || i END FROM generate_series(1, $rows) AS i;
    CREATE INDEX ON readings (device, ts);
    CREATE TABLE wide AS SELECT i AS id, repeat(md5(i::text), 20) AS body, now() AS at FROM generate_series(1, $((rows / 20))) i;
    ALTER TABLE wide ADD PRIMARY KEY (id);
    DO \$\$ BEGIN FOR i IN 1..40 LOOP
        EXECUTE format('CREATE TABLE small_%s AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g', i);
    END LOOP; END \$\$;" -c 'VACUUM ANALYZE'

reset_target() { psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"; }
work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# classic
reset_target bench_classic
start=$(date +%s.%N)
"$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --schema-only --no-owner --no-privileges bench_src \
    | psql17 -p "$TARGET_PORT" -d bench_classic > /dev/null 2>&1 || true
"$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --data-only --no-owner --no-privileges bench_src \
    | PGOPTIONS='-c session_replication_role=replica' "$bin/psql" -X -q -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d bench_classic > /dev/null 2>&1 || true
classic=$(echo "$(date +%s.%N) - $start" | bc)

# pgshift
cd "$repo"
cargo build --release --locked -q
psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_pgshift WITH (FORCE)'
cat > "$work/plan.toml" <<PLAN
[source]
connection = "postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_src"
[target]
connection = "postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_pgshift"
[backup]
dir = "$work/backups"
bin_dir = "$bin"
PLAN
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/rss" ./target/release/pgshift run --plan "$work/plan.toml" --yes --json > "$work/events.jsonl" \
    || { grep -v '"output"' "$work/events.jsonl" | tail -5; die "pgshift run failed"; }
total=$(echo "$(date +%s.%N) - $start" | bc)

echo "rows in the hypertable:             $rows (+ $((rows / 20)) wide rows, 40 small tables)"
echo "classic pg_dump | psql (2 passes):  ${classic}s   (copies; proves nothing)"
echo "pgshift run (all stages):           ${total}s"
echo "ratio pgshift run / classic:        $(echo "scale=2; $total / $classic" | bc)"
jq -r 'select(.event == "stage_finished") | "  \(.stage):\t\(.elapsed_ms / 1000)s"' "$work/events.jsonl"
migrate=$(jq -s '[.[] | select(.event == "stage_finished" and (.stage == "schema" or .stage == "data" or .stage == "post-data")) | .elapsed_ms] | add / 1000' "$work/events.jsonl")
echo "pgshift schema + data + post-data:  ${migrate}s   ratio to classic: $(echo "scale=2; $migrate / $classic" | bc)"
echo "pgshift peak memory (max RSS):      $(( $(cat "$work/rss") / 1024 )) MiB"
for db in bench_classic bench_pgshift; do psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE $db WITH (FORCE)"; done
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_src WITH (FORCE)'

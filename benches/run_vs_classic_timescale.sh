#!/usr/bin/env bash
# Benchmark (not a test): the whole `pgshift run` of a TimescaleDB source against the classic
# TimescaleDB runbook, on the same generated database, in one invocation. The source (Timescale
# License): a hypertable of ROWS readings in daily chunks, about two thirds of them compressed, two
# continuous aggregates (an hourly one, real time, and a daily one on top of it), a compression and
# a refresh policy. Twice: with a text column set in every compressed batch ("dense"), and set
# rarely ("sparse": TimescaleDB 2.19 then stores all-NULL blocks, which its own dump cannot load). Classic: CREATE EXTENSION timescaledb; SELECT timescaledb_pre_restore();
# pg_dump | psql; SELECT timescaledb_post_restore() (the documented path: same TimescaleDB version
# only, proves nothing). pgshift: backup, schema, data (compressed chunks copied as they are),
# post-data, TimescaleDB (attach, aggregates' state, jobs), tuning, verify with checksums.
# Prints both times, the ratio, each stage's time, the timescaledb stage beside the time it takes
# to copy the aggregates' materialized rows, the timeline (stages beside each other) and pgshift's peak memory.
# Usage: bash benches/run_vs_classic_timescale.sh [ROWS]   (default 2,000,000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-2000000}
bench_env bc jq

# 50 devices, one reading per device every (86400 * 50 * days / rows) seconds over `days` days
days=90
step=$(( 86400 * 50 * days / rows ))
[ "$step" -ge 1 ] || die "too many rows for $days days"
work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

# bench_case NAME NOTE: the source with `note` = NOTE (an SQL expression of s), classic, pgshift
bench_case() {
    local name=$1 note=$2
    psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_ts_src WITH (FORCE)' -c 'CREATE DATABASE bench_ts_src'
    psql17 -p "$SOURCE_PORT" -d bench_ts_src > /dev/null <<SQL
CREATE EXTENSION timescaledb;
CREATE TABLE devices (id int PRIMARY KEY, site text NOT NULL);
INSERT INTO devices SELECT i, 'site ' || (i % 7) FROM generate_series(0, 49) i;
CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL REFERENCES devices, value double precision,
                       status smallint NOT NULL DEFAULT 0, note text, PRIMARY KEY (device, ts));
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
INSERT INTO readings
SELECT '2026-01-01'::timestamptz + make_interval(secs => s * $step), d, sin(s / 100.0 + d) * 1000, (s + d) % 3, $note
FROM generate_series(0, $rows / 50 - 1) s, generate_series(0, 49) d;
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device', timescaledb.compress_orderby = 'ts DESC');
SELECT count(compress_chunk(c)) FROM show_chunks('readings', older_than => '2026-01-01'::timestamptz + INTERVAL '60 days') c;
CREATE MATERIALIZED VIEW readings_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
  SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, device, avg(value) AS avg_value, max(value) AS max_value, count(*) AS n
  FROM readings GROUP BY 1, 2 WITH NO DATA;
CALL refresh_continuous_aggregate('readings_hourly', NULL, '2026-01-01'::timestamptz + INTERVAL '85 days');
CREATE MATERIALIZED VIEW readings_daily WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
  SELECT time_bucket(INTERVAL '1 day', bucket) AS day, device, avg(avg_value) AS avg_value, sum(n) AS n
  FROM readings_hourly GROUP BY 1, 2 WITH NO DATA;
CALL refresh_continuous_aggregate('readings_daily', NULL, '2026-01-01'::timestamptz + INTERVAL '84 days');
SELECT add_compression_policy('readings', compress_after => INTERVAL '30 days', initial_start => '2030-01-01');
SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '1 hour', initial_start => '2030-01-01');
VACUUM ANALYZE;
SQL
    local chunks buckets source_rows
    chunks=$(psql17 -p "$SOURCE_PORT" -d bench_ts_src -At -c "SELECT format('%s of %s chunks compressed', count(*) FILTER (WHERE is_compressed), count(*)) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'")
    buckets=$(psql17 -p "$SOURCE_PORT" -d bench_ts_src -At -c "SELECT (SELECT count(*) FROM readings_hourly) + (SELECT count(*) FROM readings_daily)")
    source_rows=$(psql17 -p "$SOURCE_PORT" -d bench_ts_src -At -c 'SELECT count(*) FROM readings')

    # classic, as TimescaleDB documents it for the same version on both sides
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_ts_classic WITH (FORCE)' -c 'CREATE DATABASE bench_ts_classic'
    local start classic classic_rows classic_errors total pgshift_rows
    start=$(now)
    psql17 -p "$TARGET_PORT" -d bench_ts_classic -c 'CREATE EXTENSION timescaledb' -c 'SELECT timescaledb_pre_restore()' > /dev/null
    "$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres bench_ts_src 2> "$work/classic-dump.log" \
        | "$bin/psql" -X -q -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d bench_ts_classic > /dev/null 2> "$work/classic.log" || true
    psql17 -p "$TARGET_PORT" -d bench_ts_classic -c 'SELECT timescaledb_post_restore()' > /dev/null
    classic=$(echo "$(now) - $start" | bc)
    classic_rows=$(psql17 -p "$TARGET_PORT" -d bench_ts_classic -At -c 'SELECT count(*) FROM readings')
    classic_errors=$(grep -c '^ERROR' "$work/classic.log" || true)

    # pgshift
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_ts_pgshift WITH (FORCE)'
    rm -rf "$work/backups"
    cat > "$work/plan.toml" <<PLAN
[source]
connection = "postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_ts_src"
[target]
connection = "postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_ts_pgshift"
[backup]
dir = "$work/backups"
bin_dir = "$bin"
PLAN
    start=$(now)
    /usr/bin/time -f '%M' -o "$work/rss" ./target/release/pgshift run --plan "$work/plan.toml" --yes --json > "$work/events.jsonl" \
        || { grep -v '"output"' "$work/events.jsonl" | tail -5; die "pgshift run failed"; }
    total=$(echo "$(now) - $start" | bc)
    pgshift_rows=$(psql17 -p "$TARGET_PORT" -d bench_ts_pgshift -At -c 'SELECT count(*) FROM readings')

    echo "== $name: $rows readings ($chunks), $buckets aggregate buckets in 2 aggregates"
    echo "classic pre_restore, pg_dump | psql, post_restore: ${classic}s   (same version only, proves nothing)"
    echo "  classic result:                   $classic_rows of $source_rows readings, $classic_errors statement(s) failed$( [ "$classic_errors" -gt 0 ] && printf ', first: %s' "$(grep -m1 -A1 '^ERROR' "$work/classic.log" | tr '\n' ' ')")"
    echo "pgshift run (all stages):           ${total}s   ($pgshift_rows of $source_rows readings, verified with checksums)"
    echo "ratio pgshift run / classic:        $(echo "scale=2; $total / $classic" | bc)"
    jq -r 'select(.event == "stage_finished") | "  \(.stage):\t\(.elapsed_ms / 1000)s\t\(.summary // "" | .[0:150])"' "$work/events.jsonl"
    echo "pgshift peak memory (max RSS):      $(( $(cat "$work/rss") / 1024 )) MiB"
    sed -n '/^Wall time/,$p' "$work"/backups/*/run.md
}

# what copying the aggregates' materialized rows alone costs: COPY out of the source's
# materializations into fresh tables on the target (the timescaledb stage's yardstick)
mat_copy() {
    local mats m cols i=0 start
    mats=$(psql17 -p "$SOURCE_PORT" -d bench_ts_src -At -c "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates")
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_ts_mat WITH (FORCE)' -c 'CREATE DATABASE bench_ts_mat'
    start=$(now)
    for m in $mats; do
        i=$((i + 1))
        cols=$(psql17 -p "$SOURCE_PORT" -d bench_ts_src -At -c "SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '$m'::regclass AND attnum > 0 AND NOT attisdropped")
        psql17 -p "$TARGET_PORT" -d bench_ts_mat -c "CREATE TABLE mat_$i ($cols)"
        "$bin/psql" -X -q -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres -d bench_ts_src -c "COPY (SELECT * FROM $m) TO STDOUT (FORMAT binary)" \
            | "$bin/psql" -X -q -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d bench_ts_mat -c "COPY mat_$i FROM STDIN (FORMAT binary)"
    done
    echo "timescaledb stage:                  $(jq -s '[.[] | select(.event == "stage_finished" and .stage == "timescaledb") | .elapsed_ms] | add / 1000' "$work/events.jsonl")s   copying the aggregates' materialized rows alone: $(echo "$(now) - $start" | bc)s"
}

bench_case dense "'check ' || (s % 7)"
mat_copy
bench_case sparse "CASE WHEN s % 997 = 0 THEN 'check ' || s END"
for db in bench_ts_classic bench_ts_pgshift bench_ts_mat; do psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_ts_src WITH (FORCE)'

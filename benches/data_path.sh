#!/usr/bin/env bash
# Benchmark (not a test): the data path, in one invocation on one generated database (about 500 MB
# at the default size: a 2,000,000-row hypertable, a wide table, 100 small tables):
#   (a) classic  pg_dump --data-only | psql           (into the classic schema, indexes present)
#   (b) raw      COPY TO STDOUT | COPY FROM STDIN per table, JOBS pipes at a time (no indexes)
#   (c) pgshift  pgshift copy --jobs JOBS              (into the schema as pgshift's schema stage
#                makes it: hypertables without their default index; indexes come after, in post-data,
#                and their build is timed too, as (c+))
#   (d) verify   pgshift verify --checksums, source against (c)'s target
# Prints each time, the ratios c/a, c/b and d/c, and pgshift's peak memory.
# Usage: bash benches/data_path.sh [HYPERTABLE_ROWS] [JOBS]   (run it at two sizes: memory stays flat)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-2000000}
jobs=${2:-2}
bench_env bc
now() { date +%s.%N; }

# $1: more create_hypertable arguments
ddl() { echo "CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, value double precision, note text);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day'${1:-});
CREATE TABLE wide (id int NOT NULL, body text, at timestamptz);
DO \$\$ BEGIN FOR i IN 1..100 LOOP EXECUTE format('CREATE TABLE small_%s (id int NOT NULL, v text)', i); END LOOP; END \$\$;"; }
# pgshift's schema stage creates hypertables without their default time index: it is built after the
# data, in post-data, with every other index
no_default_index=", create_default_indexes => false"
indexes="CREATE INDEX ON readings (device, ts); ALTER TABLE wide ADD PRIMARY KEY (id);"

psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_src WITH (FORCE)' -c 'CREATE DATABASE bench_src'
psql17 -p "$SOURCE_PORT" -d bench_src -c "$(ddl)" >/dev/null
psql17 -p "$SOURCE_PORT" -d bench_src -c "
    INSERT INTO readings SELECT '2026-01-01'::timestamptz + make_interval(secs => i * 2), i % 500, sin(i) * 1000,
        CASE WHEN i % 7 = 0 THEN 'check ' || i END FROM generate_series(1, $rows) AS i;
    INSERT INTO wide SELECT i, repeat(md5(i::text), 32), now() FROM generate_series(1, $((rows / 10))) i;
    DO \$\$ BEGIN FOR i IN 1..100 LOOP EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text) FROM generate_series(1, 1000) g', i); END LOOP; END \$\$;
    $indexes" >/dev/null
psql17 -p "$SOURCE_PORT" -d bench_src -c 'VACUUM ANALYZE' >/dev/null
size=$(psql17 -p "$SOURCE_PORT" -d bench_src -At -c "SELECT pg_size_pretty(pg_database_size(current_database()))")

fresh() { psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null; }
work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

# (a) classic
fresh bench_a
"$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --schema-only --no-owner --no-privileges bench_src \
    | psql17 -p "$TARGET_PORT" -d bench_a >/dev/null 2>&1 || true
t0=$(now)
"$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --data-only --no-owner --no-privileges bench_src 2>/dev/null \
    | PGOPTIONS='-c session_replication_role=replica' "$bin/psql" -X -q -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d bench_a >/dev/null 2>&1 || true
a=$(echo "$(now) - $t0" | bc)

# (b) raw pipes, JOBS at a time
fresh bench_b
psql17 -p "$TARGET_PORT" -d bench_b -c "$(ddl "$no_default_index")" >/dev/null
tables="readings wide $(seq -f 'small_%g' 1 100)"
t0=$(now)
printf '%s\n' $tables | xargs -P "$jobs" -I{} sh -c \
    "'$bin/psql' -X -q -h 127.0.0.1 -p $SOURCE_PORT -U postgres -d bench_src -c 'COPY (SELECT * FROM {}) TO STDOUT' \
     | '$bin/psql' -X -q -h 127.0.0.1 -p $TARGET_PORT -U postgres -d bench_b -c 'COPY {} FROM STDIN'"
b=$(echo "$(now) - $t0" | bc)

# (c) pgshift copy
fresh bench_c
psql17 -p "$TARGET_PORT" -d bench_c -c "$(ddl "$no_default_index")" >/dev/null
src="postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_src"
tgt="postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_c"
t0=$(now)
/usr/bin/time -f '%M' -o "$work/rss_c" ./target/release/pgshift copy --source "$src" --target "$tgt" --jobs "$jobs" --dir "$work/copy" 2>"$work/copy.err" \
    || { cat "$work/copy.err"; die "pgshift copy failed"; }
c=$(echo "$(now) - $t0" | bc)

# (d) verify with checksums of what (c) copied (the indexes are not there yet: differences expected)
t0=$(now)
/usr/bin/time -f '%M' -o "$work/rss_d" ./target/release/pgshift verify --source "$src" --target "$tgt" --checksums --jobs "$jobs" > "$work/verify.out" || true
d=$(echo "$(now) - $t0" | bc)
grep -q "rows: .* tables compared, .* identical, 0 different" "$work/verify.out" || { grep -A5 "^rows:" "$work/verify.out"; die "rows differ after pgshift copy"; }

# (c+) the indexes (a) maintained while loading, built after the data as pgshift's post-data does:
# one after another in one session, with the maintenance settings post-data passes
t0=$(now)
PGOPTIONS='-c maintenance_work_mem=512MB -c max_parallel_maintenance_workers=2' psql17 -p "$TARGET_PORT" -d bench_c \
    -c "CREATE INDEX readings_ts_idx ON readings (ts DESC); $indexes" >/dev/null
cidx=$(echo "$(now) - $t0" | bc)

echo "database: $size on the source; hypertable rows: $rows; connections: $jobs"
echo "(a) classic pg_dump --data-only | psql:  ${a}s"
echo "(b) raw COPY pipes ($jobs at a time):       ${b}s"
echo "(c) pgshift copy --jobs $jobs:              ${c}s"
echo "(c+) then its indexes, built after:     ${cidx}s"
echo "(d) pgshift verify --checksums:           ${d}s  (rows and checksums of every table equal)"
echo "c/a = $(echo "scale=2; $c / $a" | bc)   c/b = $(echo "scale=2; $c / $b" | bc)   d/c = $(echo "scale=2; $d / $c" | bc)   (c + c+)/a = $(echo "scale=2; ($c + $cidx) / $a" | bc)"
echo "pgshift copy peak memory (max RSS): $(( $(tail -1 "$work/rss_c") / 1024 )) MiB; verify: $(( $(tail -1 "$work/rss_d") / 1024 )) MiB"
for db in bench_a bench_b bench_c; do psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null; done
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_src WITH (FORCE)' >/dev/null

#!/usr/bin/env bash
# Benchmark (not a test): the data stage from an older source, in one invocation. The same generated
# database (a hypertable of ROWS rows in daily chunks, a wide plain table of ROWS/10 rows, 40 small
# tables) is loaded into the PostgreSQL 17 + TimescaleDB 2.19 source and into the PostgreSQL 15 +
# TimescaleDB 2.15 old source; `pgshift copy --jobs JOBS` then copies each into a fresh database on
# the PostgreSQL 17 target, ROUNDS times alternating, and the best time of each is compared.
# Prints both times, the old source's speed as a share of the new one's, and both peak memories.
# Usage: bash benches/older_source_data.sh [ROWS] [JOBS] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-1000000}
jobs=${2:-2}
rounds=${3:-3}
bench_env bc

ddl() { echo "CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, value double precision, note text);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
CREATE TABLE wide (id int NOT NULL, body text, at timestamptz);
DO \$\$ BEGIN FOR i IN 1..40 LOOP EXECUTE format('CREATE TABLE small_%s (id int NOT NULL, v text)', i); END LOOP; END \$\$;"; }
data="INSERT INTO readings SELECT '2026-01-01'::timestamptz + make_interval(secs => i * 2), i % 500, sin(i) * 1000,
        CASE WHEN i % 7 = 0 THEN 'check ' || i END FROM generate_series(1, $rows) AS i;
    INSERT INTO wide SELECT i, repeat(md5(i::text), 32), '2026-01-01' FROM generate_series(1, $((rows / 10))) i;
    DO \$\$ BEGIN FOR i IN 1..40 LOOP EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text) FROM generate_series(1, 1000) g', i); END LOOP; END \$\$;"

for port in "$SOURCE_PORT" "$OLD_PORT"; do
    psql17 -p "$port" -d postgres -c 'DROP DATABASE IF EXISTS bench_old_src WITH (FORCE)' -c 'CREATE DATABASE bench_old_src' >/dev/null
    psql17 -p "$port" -d bench_old_src -c "$(ddl)" -c "$data" -c 'VACUUM ANALYZE' >/dev/null
done
version() { psql17 -p "$1" -d bench_old_src -At -c "SELECT current_setting('server_version') || ', TimescaleDB ' || extversion FROM pg_extension WHERE extname = 'timescaledb'"; }
size=$(psql17 -p "$SOURCE_PORT" -d bench_old_src -At -c "SELECT pg_size_pretty(pg_database_size(current_database()))")

work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

# copy PORT LABEL: one timed `pgshift copy` into a fresh target database; appends the seconds to
# $work/LABEL.times and keeps the peak memory in $work/LABEL.rss
copy() {
    psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_old_tgt WITH (FORCE)' \
        -c 'CREATE DATABASE bench_old_tgt' >/dev/null
    psql17 -p "$TARGET_PORT" -d bench_old_tgt -c "$(ddl)" >/dev/null
    rm -rf "$work/dir"
    local t0 t
    t0=$(now)
    /usr/bin/time -f '%M' -o "$work/$2.rss" ./target/release/pgshift copy \
        --source "postgresql://postgres@127.0.0.1:$1/bench_old_src" \
        --target "postgresql://postgres@127.0.0.1:$TARGET_PORT/bench_old_tgt" \
        --jobs "$jobs" --dir "$work/dir" >"$work/$2.out" 2>&1 || { cat "$work/$2.out"; die "pgshift copy from $2 failed"; }
    t=$(echo "$(now) - $t0" | bc)
    echo "$t" >>"$work/$2.times"
}
for _ in $(seq "$rounds"); do
    copy "$SOURCE_PORT" new
    copy "$OLD_PORT" old
done
best() { sort -n "$work/$1.times" | head -1; }
new=$(best new)
old=$(best old)
echo
echo "database: $size; $rows hypertable rows, $((rows / 10)) wide rows, 40 small tables; jobs $jobs; best of $rounds"
printf '  %-48s %8.2f s   peak %s KiB\n' "from PostgreSQL $(version "$SOURCE_PORT")" "$new" "$(cat "$work/new.rss")"
printf '  %-48s %8.2f s   peak %s KiB\n' "from PostgreSQL $(version "$OLD_PORT")" "$old" "$(cat "$work/old.rss")"
printf '  old source speed / new source speed: %.2f   (target: >= 0.80)\n' "$(echo "$new / $old" | bc -l)"
echo "  every time (s): new $(tr '\n' ' ' <"$work/new.times")| old $(tr '\n' ' ' <"$work/old.times")"
for p in "$SOURCE_PORT" "$OLD_PORT"; do
    psql17 -p "$p" -d postgres -c 'DROP DATABASE IF EXISTS bench_old_src WITH (FORCE)' >/dev/null
done
psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_old_tgt WITH (FORCE)' >/dev/null

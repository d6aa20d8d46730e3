#!/usr/bin/env bash
# Benchmark (not a test): `pgshift verify --checksums` on a table of ROWS rows (default 2,000,000)
# held by both test servers, against a baseline measured in the same run: reading the same table
# from both servers at once with psql's COPY TO STDOUT into /dev/null (the least any checksum must do).
# Prints seconds, rows per second, the ratio verify/baseline and pgshift's peak memory (max RSS).
# Usage: bash benches/verify_checksums.sh [ROWS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-2000000}
bench_env time bc

for port in "$SOURCE_PORT" "$TARGET_PORT"; do
    psql17 -p "$port" -d postgres -c 'DROP DATABASE IF EXISTS pgshift_bench WITH (FORCE)' -c 'CREATE DATABASE pgshift_bench'
    psql17 -p "$port" -d pgshift_bench -c "
        CREATE TABLE readings (id bigint PRIMARY KEY, ts timestamptz NOT NULL, device int NOT NULL,
                               value double precision, note text);
        INSERT INTO readings SELECT i, '2026-01-01'::timestamptz + make_interval(secs => i), i % 500,
                                    sin(i) * 1000, CASE WHEN i % 7 = 0 THEN 'check ' || i END
        FROM generate_series(1, $rows) AS i;" -c 'VACUUM ANALYZE readings' &
done
wait

cd "$repo"
cargo build --release --locked -q
src="postgresql://postgres@127.0.0.1:$SOURCE_PORT/pgshift_bench"
tgt="postgresql://postgres@127.0.0.1:$TARGET_PORT/pgshift_bench"

start=$(date +%s.%N)
psql17 -p "$SOURCE_PORT" -d pgshift_bench -c 'COPY readings TO STDOUT' > /dev/null &
psql17 -p "$TARGET_PORT" -d pgshift_bench -c 'COPY readings TO STDOUT' > /dev/null &
wait
baseline=$(echo "$(date +%s.%N) - $start" | bc)

/usr/bin/time -f '%e %M' -o /tmp/pgshift-bench.time \
    ./target/release/pgshift verify --source "$src" --target "$tgt" --checksums > /tmp/pgshift-bench.out \
    || { cat /tmp/pgshift-bench.out; die "verify did not report the copies equal"; }
read -r secs rss_kb < /tmp/pgshift-bench.time

echo "rows per side:                      $rows"
echo "baseline (raw COPY, both sides):    ${baseline}s"
echo "pgshift verify --checksums:         ${secs}s  ($(echo "$rows / $secs" | bc) rows/s per side)"
echo "ratio verify / baseline:            $(echo "scale=2; $secs / $baseline" | bc)"
echo "pgshift peak memory (max RSS):      $((rss_kb / 1024)) MiB"
for port in "$SOURCE_PORT" "$TARGET_PORT"; do
    psql17 -p "$port" -d postgres -c 'DROP DATABASE pgshift_bench WITH (FORCE)'
done

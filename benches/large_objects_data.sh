#!/usr/bin/env bash
# Benchmark (not a test): large objects against a table of the same bytes, in one invocation. One
# source database holds LARGE large objects of 1 MiB and SMALL of 16 KiB (incompressible bytes);
# another holds a bytea table with the very same values, row for row. `pgshift copy --jobs JOBS`
# copies each into a fresh target database, and `pg_dump --data-only | psql` copies the large
# objects the classic way, ROUNDS times alternating; the best time of each is compared.
# Prints the times, the large objects' throughput as a share of the table's (target: >= 0.50) and
# against the classic path, and pgshift's peak memory for each.
# Usage: bash benches/large_objects_data.sh [LARGE] [SMALL] [JOBS] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
large=${1:-128}
small=${2:-4096}
jobs=${3:-2}
rounds=${4:-3}
bench_env bc

# the same value for row/object i of each size: its number, then a MiB (or 16 KiB) of md5 bytes
block="(SELECT string_agg(decode(md5(g::text), 'hex'), ''::bytea) FROM generate_series(1, 65536) g)"
values="WITH b AS MATERIALIZED (SELECT $block AS mib)
    SELECT int4send(i) || CASE WHEN i <= $large THEN b.mib ELSE substring(b.mib FROM (i % 64) * 16384 + 1 FOR 16384) END AS v
    FROM b, generate_series(1, $large + $small) i"
for db in bench_lo_src bench_tab_src bench_lo_tgt bench_tab_tgt bench_lo_classic; do
    p=$TARGET_PORT; case $db in *_src) p=$SOURCE_PORT ;; esac
    psql17 -p "$p" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
done
psql17 -p "$SOURCE_PORT" -d postgres -c 'CREATE DATABASE bench_lo_src' -c 'CREATE DATABASE bench_tab_src' >/dev/null
psql17 -p "$SOURCE_PORT" -d bench_lo_src -c "SELECT count(lo_from_bytea(0, v)) FROM ($values) q" >/dev/null
psql17 -p "$SOURCE_PORT" -d bench_tab_src -c "CREATE TABLE blobs (body bytea); ALTER TABLE blobs ALTER body SET STORAGE EXTERNAL" \
    -c "INSERT INTO blobs SELECT v FROM ($values) q" -c 'VACUUM ANALYZE blobs' >/dev/null
lo_bytes=$(psql17 -p "$SOURCE_PORT" -d bench_lo_src -At -c \
    "SELECT sum(length(lo_get(oid))) FROM pg_largeobject_metadata")
tab_bytes=$(psql17 -p "$SOURCE_PORT" -d bench_tab_src -At -c "SELECT sum(length(body)) FROM blobs")
[ "$lo_bytes" = "$tab_bytes" ] || die "the two sources differ: $lo_bytes bytes of large objects, $tab_bytes in the table"

work=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

fresh() {
    psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}
# copy SRC TGT LABEL: one timed `pgshift copy`; appends the seconds to $work/LABEL.times
copy() {
    fresh "$2"
    [ "$3" = table ] && psql17 -p "$TARGET_PORT" -d "$2" -c 'CREATE TABLE blobs (body bytea)' >/dev/null
    rm -rf "$work/dir"
    local t0
    t0=$(now)
    /usr/bin/time -f '%M' -o "$work/$3.rss" ./target/release/pgshift copy \
        --source "postgresql://postgres@127.0.0.1:$SOURCE_PORT/$1" \
        --target "postgresql://postgres@127.0.0.1:$TARGET_PORT/$2" \
        --jobs "$jobs" --dir "$work/dir" >"$work/$3.out" 2>&1 || { cat "$work/$3.out"; die "pgshift copy ($3) failed"; }
    echo "$(now) - $t0" | bc >>"$work/$3.times"
}
classic() {
    fresh bench_lo_classic
    local t0
    t0=$(now)
    "$bin/pg_dump" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres --data-only -d bench_lo_src \
        | psql17 -p "$TARGET_PORT" -d bench_lo_classic >/dev/null
    echo "$(now) - $t0" | bc >>"$work/classic.times"
}
for _ in $(seq "$rounds"); do
    copy bench_tab_src bench_tab_tgt table
    copy bench_lo_src bench_lo_tgt objects
    classic
done
got=$(psql17 -p "$TARGET_PORT" -d bench_lo_tgt -At -c "SELECT count(*) || ' ' || sum(length(lo_get(oid))) FROM pg_largeobject_metadata")
[ "$got" = "$((large + small)) $lo_bytes" ] || die "the target holds $got (objects, bytes), not $((large + small)) $lo_bytes"
best() { sort -n "$work/$1.times" | head -1; }
table=$(best table)
objects=$(best objects)
classic=$(best classic)
mib=$(echo "$lo_bytes / 1048576" | bc -l)
echo
printf 'data: %.0f MiB: %s large objects of 1 MiB and %s of 16 KiB, or as many bytea rows; jobs %s; best of %s\n' \
    "$mib" "$large" "$small" "$jobs" "$rounds"
printf '  %-44s %8.2f s  %7.1f MiB/s  peak %s KiB\n' "pgshift copy, the bytea table" "$table" "$(echo "$mib / $table" | bc -l)" "$(cat "$work/table.rss")"
printf '  %-44s %8.2f s  %7.1f MiB/s  peak %s KiB\n' "pgshift copy, the large objects" "$objects" "$(echo "$mib / $objects" | bc -l)" "$(cat "$work/objects.rss")"
printf '  %-44s %8.2f s  %7.1f MiB/s\n' "pg_dump --data-only | psql, the large objects" "$classic" "$(echo "$mib / $classic" | bc -l)"
printf '  large objects / table throughput: %.2f   (target: >= 0.50)\n' "$(echo "$table / $objects" | bc -l)"
printf '  large objects, pgshift / classic speed: %.2f\n' "$(echo "$classic / $objects" | bc -l)"
echo "  every time (s): table $(tr '\n' ' ' <"$work/table.times")| objects $(tr '\n' ' ' <"$work/objects.times")| classic $(tr '\n' ' ' <"$work/classic.times")"
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_lo_src WITH (FORCE)' -c 'DROP DATABASE bench_tab_src WITH (FORCE)' >/dev/null
for db in bench_lo_tgt bench_tab_tgt bench_lo_classic; do
    psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
done

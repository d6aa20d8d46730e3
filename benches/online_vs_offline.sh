#!/usr/bin/env bash
# Benchmark (not a test): an online migration against the offline run on the same generated
# database, in one invocation. Offline: `pgshift run` with the source quiet. Online: `pgshift run
# --online` while pgbench inserts into the hypertable at a fixed rate (new chunks included) through
# the backup, the copy and the first part of the catch-up; then the writer stops, one transaction
# inserts BULK rows (the insert-heavy apply rate, and memory whatever a transaction's size), and
# once they are applied the DBA asks for a read-only cutover (`pgshift online cutover --read-only`:
# "writes stopped");
# the run drains, cuts over and verifies with checksums. Prints rows written and applied, the
# catch-up's apply rate and lag (p50/p99, backlog of the copy included), the bulk apply rate, the
# window (writes stopped → verified), the offline run's time and their ratio, and pgshift's peak
# memory.
# Usage: bash benches/online_vs_offline.sh [ROWS] [ROWS_PER_SECOND] [CATCH_UP_SECONDS] [BULK]
#        (default 2,000,000 hypertable rows, 10,000 rows/s, 15 s of catch-up under writes,
#        1,000,000 rows in the one transaction)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/lib.sh"
rows=${1:-2000000}
rate=${2:-10000}
catch_up=${3:-15}
bulk=${4:-1000000}
bench_env bc jq
bench_source bench_online "$rows"
# the publication would break UPDATE and DELETE on tables without a key: give them an identity
psql17 -p "$SOURCE_PORT" -d bench_online -c "ALTER TABLE readings REPLICA IDENTITY FULL" \
    -c "DO \$\$ BEGIN FOR i IN 1..40 LOOP EXECUTE format('ALTER TABLE small_%s ADD PRIMARY KEY (id)', i); END LOOP; END \$\$" > /dev/null

work=$(mktemp -d /tmp/pgshift-online-bench.XXXXXX)
trap 'kill "${writer:-0}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$repo"
cargo build --release --locked -q

plan() { # plan DB ONLINE
    cat > "$work/plan-$1.toml" <<PLAN
[source]
connection = "postgresql://postgres@127.0.0.1:$SOURCE_PORT/bench_online"
[target]
connection = "postgresql://postgres@127.0.0.1:$TARGET_PORT/$1"
[backup]
dir = "$work/backups-$1"
bin_dir = "$bin"
[online]
enabled = $2
# the cutover comes on request (pgshift online cutover), not after a quiet time
quiet_seconds = 3600
PLAN
}

psql17 -p "$TARGET_PORT" -d postgres -c 'DROP DATABASE IF EXISTS bench_offline WITH (FORCE)' -c 'DROP DATABASE IF EXISTS bench_online_dst WITH (FORCE)'
plan bench_offline false
plan bench_online_dst true

start=$(now)
./target/release/pgshift run --plan "$work/plan-bench_offline.toml" --yes --json > "$work/offline.jsonl" \
    || { tail -5 "$work/offline.jsonl"; die "offline run failed"; }
offline=$(echo "$(now) - $start" | bc)
echo "offline run: ${offline}s"

# the writer: 10 rows a transaction, RATE/10 transactions a second, after the copied range
cat > "$work/insert.sql" <<'SQL'
\set n random(1, 1000000000)
INSERT INTO readings SELECT '2027-01-01'::timestamptz + make_interval(secs => (:n + g) % 2592000), (:n + g) % 500, g, NULL FROM generate_series(1, 10) g;
SQL
before=$(psql17 -p "$SOURCE_PORT" -d bench_online -Atc 'SELECT count(*) FROM readings')
"$bin/pgbench" -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres -n -c 2 -j 2 -R $((rate / 10)) -T 3600 -f "$work/insert.sql" bench_online \
    > "$work/pgbench.log" 2>&1 &
writer=$!
start=$(now)
/usr/bin/time -f '%M' -o "$work/rss" ./target/release/pgshift run --plan "$work/plan-bench_online_dst.toml" --yes --json \
    > "$work/online.jsonl" 2> "$work/online.err" &
run=$!
# writes go on through the backup and the copy, then CATCH_UP seconds into the catch-up
until grep -q '"stage":"catch-up"' "$work/online.jsonl" 2>/dev/null; do
    kill -0 $run 2>/dev/null || { tail -5 "$work/online.err"; die "online run ended before its catch-up"; }
    sleep 0.2
done
sleep "$catch_up"
# a background job of a script ignores SIGINT: TERM stops pgbench
kill -TERM $writer; wait $writer || true
stopped_writer=$(now)
# the writer's and the bulk's rows are after the copied range: counting them is cheap
count_since() { psql17 -p "$1" -d "$2" -Atc "SELECT count(*) FROM readings WHERE ts >= '$3'"; }
written=$(count_since "$SOURCE_PORT" bench_online 2027-01-01)
count_target() { count_since "$TARGET_PORT" bench_online_dst 2027-01-01; }
until [ "$(count_target)" = "$written" ]; do kill -0 $run 2>/dev/null || die "online run ended during the catch-up"; sleep 0.2; done
caught=$(now)
# one large transaction: the insert-heavy stream
psql17 -p "$SOURCE_PORT" -d bench_online -c "INSERT INTO readings SELECT '2027-03-01'::timestamptz + make_interval(secs => g), g % 500, g, NULL FROM generate_series(1, $bulk) g"
bulk_done=$(now)
after=$((written + bulk))
until [ "$(count_target)" = "$after" ]; do kill -0 $run 2>/dev/null || die "online run ended during the bulk apply"; sleep 0.2; done
bulk_applied=$(now)
stopped=$(now)
# read-only: the source provably quiet after the drain, so verify may use live verification's measurements
./target/release/pgshift online cutover --plan "$work/plan-bench_online_dst.toml" --read-only
wait $run || { tail -5 "$work/online.err"; grep -v '"output"' "$work/online.jsonl" | tail -5; die "online run failed"; }
ended=$(now)
after=$(psql17 -p "$SOURCE_PORT" -d bench_online -Atc 'SELECT count(*) FROM readings')
applied=$(psql17 -p "$TARGET_PORT" -d bench_online_dst -Atc 'SELECT count(*) FROM readings')
window=$(echo "$ended - $stopped" | bc)
total=$(echo "$ended - $start" | bc)
summary=$(jq -r 'select(.event == "stage_finished" and .stage == "catch-up") | .summary' "$work/online.jsonl")

echo "hypertable rows before the run:     $before (+ $((rows / 20)) wide rows, 40 small tables)"
echo "writer:                             $rate rows/s asked; $written rows written during the run, then $bulk in one transaction"
echo "rows in the target's hypertable:    $applied (source: $after)"
echo "catch-up:                           $summary"
echo "bulk: $bulk rows in one transaction, applied $(echo "scale=1; $bulk_applied - $bulk_done" | bc)s after its commit: $(echo "$bulk / ($bulk_applied - $bulk_done)" | bc) rows/s"
echo "behind the source when the writer stopped: $(echo "$caught - $stopped_writer" | bc)s to catch up"
echo "online run, start to verified:      ${total}s"
echo "window (writes stopped → verified): ${window}s"
echo "offline run (source quiet):         ${offline}s"
echo "ratio window / offline run:         $(echo "scale=3; $window / $offline" | bc)"
verify_json=$(ls "$work"/backups-bench_online_dst/*/verify.json | tail -1)
echo "live verification:                  $(jq '.reused | length' "$verify_json") tables and chunks measured during the catch-up, not read again; $(jq '.tables | length' "$verify_json") tables compared"
echo "online run, per stage:"
jq -r 'select(.event == "stage_finished") | "  \(.stage):\t\(.elapsed_ms / 1000)s"' "$work/online.jsonl"
echo "pgshift peak memory (max RSS):      $(( $(cat "$work/rss") / 1024 )) MiB"
[ "$applied" = "$after" ] || die "the target holds $applied rows where the source holds $after"
# KEEP=1 keeps the run directory and the databases, to look into afterwards
[ -n "${KEEP:-}" ] && exit 0
for db in bench_offline bench_online_dst; do psql17 -p "$TARGET_PORT" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
psql17 -p "$SOURCE_PORT" -d postgres -c 'DROP DATABASE bench_online WITH (FORCE)'

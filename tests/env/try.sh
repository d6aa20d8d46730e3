#!/usr/bin/env bash
# pgshift's main job on the test servers: loads a rich sample database (TimescaleDB hypertable,
# pgvector index, RLS for a tenant role, grants, audit trigger...) into the source and a copy into the
# target, then runs `pgshift inventory` on the source and `pgshift verify --checksums` on the pair.
# Then changes one row on the target, as a lossy migration would, and shows verify catching it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
bash "$here/up.sh"
. "$ENV_FILE"
export PGPASSWORD="$PGSHIFT_TEST_PASSWORD"
psql17() { chroot "$ROOT" env PGPASSWORD="$PGPASSWORD" /usr/lib/postgresql/17/bin/psql -X -q -v ON_ERROR_STOP=1 "$@"; }

for port in "$SOURCE_PORT" "$TARGET_PORT"; do
    psql17 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'DROP DATABASE IF EXISTS pgshift_try WITH (FORCE)' -c 'CREATE DATABASE pgshift_try'
    psql17 -h 127.0.0.1 -p "$port" -U postgres -d postgres < "$repo/tests/fixtures/roles.sql" 2>/dev/null
    psql17 -h 127.0.0.1 -p "$port" -U postgres -d pgshift_try < "$repo/tests/fixtures/rich_source.sql" >/dev/null
done

cd "$repo"
cargo build --release --locked -q
src="postgresql://postgres@127.0.0.1:$SOURCE_PORT/pgshift_try"
tgt="postgresql://postgres@127.0.0.1:$TARGET_PORT/pgshift_try"
echo "== pgshift inventory --db $src"
./target/release/pgshift inventory --db "$src"
echo
echo "== pgshift verify --checksums (equal copies)"
./target/release/pgshift verify --source "$src" --target "$tgt" --checksums --markdown pgshift-try-report.md
echo
echo "== the target loses one audit row's content (count unchanged), verify again"
psql17 -h 127.0.0.1 -p "$TARGET_PORT" -U postgres -d pgshift_try -c "UPDATE energy.audit_log SET op = 'UPDATE' WHERE id = 3"
./target/release/pgshift verify --source "$src" --target "$tgt" --checksums && status=0 || status=$?
echo "exit code $status (1 = differences found); full report of the clean run: pgshift-try-report.md"

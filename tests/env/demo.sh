#!/usr/bin/env bash
# `pgshift demo` on this machine: starts the test servers (a PostgreSQL 17 source and a TimescaleDB +
# pgvector target, see up.sh) and opens the console on the demo's sample database, migrating it from
# the one to the other. Extra arguments go to pgshift demo (--lang ko, --headless, --reset...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
bash "$here/up.sh"
. "$ENV_FILE"
cd "$repo"
cargo build --release --locked -q
export PGPASSWORD="$PGSHIFT_TEST_PASSWORD"   # the environment, never an argument
exec ./target/release/pgshift demo --source "$PGSHIFT_TEST_SOURCE" --target "$PGSHIFT_TEST_TARGET" \
    --bin-dir "$PGSHIFT_TEST_BIN_DIR" --dir "${PGSHIFT_DEMO_DIR:-/tmp/pgshift-demo}" --reset "$@"

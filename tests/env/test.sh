#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root): builds the cached PostgreSQL 17 +
# TimescaleDB + pgvector root (and its Docker image where an engine answers), starts the source and
# target test servers, runs every test against them, and stops the servers again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
# an older pg_dump than the test servers', for the "pg_dump older than the server" test
if [ ! -x /usr/lib/postgresql/15/bin/pg_dump ]; then
    log "installing postgresql-client-15"
    apt-get install -y -q postgresql-client-15 >/dev/null
fi
bash "$here/up.sh"
trap 'bash "$here/down.sh"' EXIT
. "$ENV_FILE"
cd "$repo"
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --locked --all-targets -q -- -D warnings; fi
cargo test --locked "$@"

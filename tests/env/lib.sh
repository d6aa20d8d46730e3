# Shared settings for the test-server scripts (sourced, not run).
# Everything lives under PGSHIFT_TEST_HOME; the Debian trixie root is cached there between runs.

PGSHIFT_TEST_HOME=${PGSHIFT_TEST_HOME:-/var/cache/pgshift-test}
ROOT="$PGSHIFT_TEST_HOME/trixie-pg17"
STATE="$PGSHIFT_TEST_HOME/state"
ENV_FILE="$STATE/env.sh"
IMAGE=${PGSHIFT_TEST_IMAGE:-pgshift-test/timescaledb-pgvector:17}
PGBIN=/usr/lib/postgresql/17/bin
SOURCE_PORT=${PGSHIFT_TEST_SOURCE_PORT:-55417}
TARGET_PORT=${PGSHIFT_TEST_TARGET_PORT:-55418}
APACHE_PORT=${PGSHIFT_TEST_APACHE_PORT:-55419}
# the old source (the host's PostgreSQL 15 with TimescaleDB 2.15.3, see old-source.sh)
OLD_PORT=${PGSHIFT_TEST_OLD_PORT:-55420}
# source and target run the Timescale License; "apache" runs the same build started with
# timescaledb.license = apache (as Debian's Apache-only package behaves), for the license checks
CLUSTERS="source:$SOURCE_PORT target:$TARGET_PORT apache:$APACHE_PORT"
# the TimescaleDB built into the root from the vendored source (shared/vendor beside the checkout)
TSL_VERSION=2.19.3
TSL_MARKER="$ROOT/.pgshift-timescaledb-$TSL_VERSION-tsl"
VENDOR_DIR=${PGSHIFT_VENDOR_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/shared/vendor}

log() { printf '[test-env] %s\n' "$*" >&2; }
die() { printf '[test-env] error: %s\n' "$*" >&2; exit 1; }

# Run a command inside the root as the postgres user.
as_postgres() { chroot --userspec=postgres:postgres "$ROOT" env HOME=/var/lib/postgresql LANG=C.UTF-8 "$@"; }

mount_root() {
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/shm" || mount --bind /dev/shm "$ROOT/dev/shm"
    # the host's /tmp at the same path, so the chrooted tools can read files pgshift names there
    mountpoint -q "$ROOT/tmp" || mount --bind /tmp "$ROOT/tmp"
}

umount_root() {
    for m in tmp dev/shm dev proc; do
        if mountpoint -q "$ROOT/$m"; then umount "$ROOT/$m" || umount -l "$ROOT/$m"; fi
    done
}

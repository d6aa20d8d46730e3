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
CLUSTERS="source:$SOURCE_PORT target:$TARGET_PORT"

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

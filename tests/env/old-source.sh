#!/usr/bin/env bash
# Starts the *old source* test server: the host's PostgreSQL 15 (Debian bookworm) with TimescaleDB
# 2.15.3 (Timescale License) built from the vendored source — older than the targets on both
# counts, as a DBA who upgrades while moving has it. The build is cached under PGSHIFT_TEST_HOME
# (about a minute, once); its files are copied into the host's PostgreSQL 15 on every start. The
# cluster runs as the host's postgres user on 127.0.0.1:$OLD_PORT with the other servers' password.
# Called by up.sh; writes nothing but its cluster and cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

OLD_VERSION=2.15.3
PG15=/usr/lib/postgresql/15
tree="$PGSHIFT_TEST_HOME/timescaledb-$OLD_VERSION-pg15"
data="$PGSHIFT_TEST_HOME/old-source/data"
export DEBIAN_FRONTEND=noninteractive

if [ ! -x "$PG15/bin/postgres" ]; then
    log "installing PostgreSQL 15 (server) for the old source"
    apt-get install -y -q --no-install-recommends postgresql-15 > "$PGSHIFT_TEST_HOME/old-source-apt.log" 2>&1 \
        || { tail -n 20 "$PGSHIFT_TEST_HOME/old-source-apt.log" >&2; die "apt-get install postgresql-15 failed"; }
fi

if [ ! -f "$tree/.complete" ]; then
    tarball="$VENDOR_DIR/timescaledb-$OLD_VERSION.tar.gz"
    [ -f "$tarball" ] || die "$tarball not found: the vendored TimescaleDB source (set PGSHIFT_VENDOR_DIR to its folder)"
    (cd "$VENDOR_DIR" && grep " timescaledb-$OLD_VERSION.tar.gz\$" SHA256SUMS | sha256sum -c --quiet -) \
        || die "$tarball does not match $VENDOR_DIR/SHA256SUMS"
    log "building TimescaleDB $OLD_VERSION for PostgreSQL 15 (about a minute)"
    build_log="$PGSHIFT_TEST_HOME/timescaledb-$OLD_VERSION-build.log"
    work=$(mktemp -d /tmp/pgshift-ts-old.XXXXXX)
    (
        set -e
        apt-get install -y -q --no-install-recommends postgresql-15 postgresql-server-dev-15 cmake gcc make libssl-dev libkrb5-dev
        tar -C "$work" -xzf "$tarball"
        cd "$work/timescaledb-$OLD_VERSION"
        ./bootstrap -DPG_CONFIG="$PG15/bin/pg_config" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
            -DLINTER=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF -DSEND_TELEMETRY_DEFAULT=NO
        make -C build -j"$(nproc)"
        rm -rf "$tree"
        make -C build install DESTDIR="$tree"
    ) > "$build_log" 2>&1 || { tail -n 30 "$build_log" >&2; die "TimescaleDB $OLD_VERSION build failed (log: $build_log)"; }
    rm -rf "$work"
    touch "$tree/.complete"
fi
if ! cmp -s "$tree$PG15/lib/timescaledb-$OLD_VERSION.so" "$PG15/lib/timescaledb-$OLD_VERSION.so"; then
    cp -a "$tree/usr/." /usr/
fi

id postgres >/dev/null 2>&1 || die "no postgres user: the postgresql-15 package creates it"
mkdir -p "$(dirname "$data")"
chown postgres:postgres "$(dirname "$data")"
as_host_postgres() { runuser -u postgres -- "$@"; }
if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb old source"
    pw=$(mktemp)
    cat "$ROOT/srv/pgshift/superuser.pw" > "$pw"
    chown postgres "$pw"
    as_host_postgres "$PG15/bin/initdb" -D "$data" -U postgres --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pw"
    cat >> "$data/postgresql.conf" <<CONF
# pgshift test server (old source: PostgreSQL 15, TimescaleDB $OLD_VERSION)
listen_addresses = '127.0.0.1'
port = $OLD_PORT
unix_socket_directories = '$data'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
fi
# logical decoding: an online migration from an older major (a restart if the server runs)
if ! grep -q '^# pgshift test logical decoding' "$data/postgresql.conf"; then
    cat >> "$data/postgresql.conf" <<CONF
# pgshift test logical decoding: the online migration's slots
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
CONF
    if as_host_postgres "$PG15/bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_host_postgres "$PG15/bin/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >/dev/null \
            || { tail -n 20 "$data/server.log" >&2; die "old source server did not restart"; }
        log "old source restarted (logical decoding added)"
    fi
fi
if as_host_postgres "$PG15/bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "old source already running on 127.0.0.1:$OLD_PORT"
else
    as_host_postgres "$PG15/bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$data/server.log" >&2; die "old source server did not start"; }
    log "old source started on 127.0.0.1:$OLD_PORT (PostgreSQL 15, TimescaleDB $OLD_VERSION)"
fi

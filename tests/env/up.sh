#!/usr/bin/env bash
# Starts the test servers: a *source* and a *target* PostgreSQL 17 cluster (TimescaleDB with the
# Timescale License preloaded, pgvector available, the test security label provider pgshift_test
# loaded) and an *apache* one (the same TimescaleDB started
# with timescaledb.license = apache) from the cached trixie root, on loopback only. Writes $ENV_FILE:
#   PGSHIFT_TEST_SOURCE / PGSHIFT_TEST_TARGET  libpq URLs without password (superuser postgres)
#   PGSHIFT_TEST_APACHE                        the Apache-licensed server's URL
#   PGSHIFT_TEST_OLD_SOURCE                    an older source: PostgreSQL 15, TimescaleDB 2.15.3
#                                              (the host's PostgreSQL, see old-source.sh)
#   PGSHIFT_TEST_PASSWORD                      the superuser password (same on both clusters)
#   PGSHIFT_TEST_ROOT, PGSHIFT_TEST_IMAGE      the root (PostgreSQL 17 tools run from it) and image
#   PGSHIFT_TEST_BIN_DIR                       pg_dump, pg_dumpall, pg_restore, psql, pgbench 17 for the host
#   PGSHIFT_TEST_CA                            the CA that signed both servers' certificate
#                                              (for sslmode=verify-ca/verify-full; readable by the
#                                              chrooted tools at the same path)
# Both servers accept TLS (certificate for 127.0.0.1 and localhost) and plain connections alike.
# Usage: bash tests/env/up.sh && . /var/cache/pgshift-test/state/env.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (it builds a chroot and starts servers in it)"
bash "$here/build-root.sh"
mkdir -p "$STATE"
chmod 700 "$STATE"
mount_root

pwfile="$ROOT/srv/pgshift/superuser.pw"
mkdir -p "$ROOT/srv/pgshift"
if [ ! -s "$pwfile" ]; then
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$pwfile"
fi
chroot "$ROOT" chown postgres:postgres /srv/pgshift "/srv/pgshift/superuser.pw"
chmod 600 "$pwfile"

# TLS: a small CA and one server certificate (SAN localhost and 127.0.0.1), made once with the host's
# openssl. The server's files live in the root, owned by postgres, 0600; the CA's key is not kept.
tlsdir=/srv/pgshift/tls
ca="$STATE/tls/ca.crt"
if [ ! -s "$ROOT$tlsdir/server.crt" ] || [ ! -s "$ROOT$tlsdir/server.key" ] || [ ! -s "$ca" ]; then
    if ! command -v openssl >/dev/null; then
        log "installing openssl"
        apt-get update -qq && apt-get install -y -qq openssl >/dev/null
    fi
    log "making the test CA and server certificate"
    work=$(mktemp -d "$STATE/tls-new.XXXXXX")
    ossl() { openssl "$@" >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; die "openssl $1 failed"; }; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    ossl req -x509 -new "${ec[@]}" -keyout "$work/ca.key" -out "$work/ca.crt" -days 3650 \
        -subj "/CN=pgshift test CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
    ossl req -new "${ec[@]}" -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=localhost"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" > "$work/server.ext"
    ossl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
        -out "$work/server.crt" -days 3650 -extfile "$work/server.ext"
    mkdir -p "$ROOT$tlsdir" "$STATE/tls"
    install -m 600 "$work/server.crt" "$work/server.key" "$ROOT$tlsdir/"
    install -m 644 "$work/ca.crt" "$ca"
    rm -rf "$work"
fi
chroot "$ROOT" chown -R postgres:postgres "$tlsdir"
chmod 700 "$ROOT$tlsdir"
chmod 600 "$ROOT$tlsdir/server.crt" "$ROOT$tlsdir/server.key"
chmod 755 "$STATE/tls"
# the chrooted client tools see the CA at the host's path
mkdir -p "$ROOT$STATE/tls"
install -m 644 "$ca" "$ROOT$ca"

for c in $CLUSTERS; do
    name=${c%%:*}
    port=${c##*:}
    data=/srv/pgshift/$name
    if [ ! -f "$ROOT$data/PG_VERSION" ]; then
        log "initdb $name"
        as_postgres "$PGBIN/initdb" -D "$data" -U postgres --pwfile=/srv/pgshift/superuser.pw \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >> "$ROOT$data/postgresql.conf" <<CONF
# pgshift test server ($name)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = 256MB
maintenance_work_mem = 512MB
max_parallel_maintenance_workers = 2
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
CONF
        if [ "$name" = apache ]; then
            # as if started with -c timescaledb.license=apache: only the server's configuration sets it
            echo "timescaledb.license = apache" >> "$ROOT$data/postgresql.conf"
        fi
    fi
    # TLS on (also for a cluster made before TLS was added: reloaded below if it runs)
    tls_added=false
    if ! grep -q '^# pgshift test TLS' "$ROOT$data/postgresql.conf"; then
        cat >> "$ROOT$data/postgresql.conf" <<CONF
# pgshift test TLS: plain connections stay allowed (pg_hba has host, not hostssl, lines)
ssl = on
ssl_cert_file = '$tlsdir/server.crt'
ssl_key_file = '$tlsdir/server.key'
CONF
        tls_added=true
    fi
    # the test security label provider (build-root.sh) on source and target; "apache" stands for a
    # target without it. Preloaded: a restart if the server runs.
    labels_added=false
    if [ "$name" != apache ] && ! grep -q '^# pgshift test labels' "$ROOT$data/postgresql.conf"; then
        cat >> "$ROOT$data/postgresql.conf" <<CONF
# pgshift test labels: the security label provider pgshift_test
shared_preload_libraries = 'timescaledb,pgshift_test_label'
CONF
        labels_added=true
    fi
    # logical decoding for the online migration's slots (a restart if the server runs)
    wal_added=false
    if ! grep -q '^# pgshift test logical decoding' "$ROOT$data/postgresql.conf"; then
        cat >> "$ROOT$data/postgresql.conf" <<CONF
# pgshift test logical decoding: the online migration's slots
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
CONF
        wal_added=true
    fi
    if as_postgres "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1 && { $labels_added || $wal_added; }; then
        as_postgres "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >/dev/null \
            || { tail -n 20 "$ROOT$data/server.log" >&2; die "$name server did not restart"; }
        log "$name restarted (security label provider or logical decoding added)"
    fi
    if as_postgres "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "$name already running on 127.0.0.1:$port"
        if $tls_added; then
            as_postgres "$PGBIN/pg_ctl" -D "$data" reload >/dev/null
            log "$name: TLS turned on (configuration reloaded)"
        fi
    else
        as_postgres "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
            || { tail -n 20 "$ROOT$data/server.log" >&2; die "$name server did not start"; }
        log "$name started on 127.0.0.1:$port"
    fi
done

bash "$here/old-source.sh"

# PostgreSQL 17 client tools for the host: the root's glibc is newer than the host's, so each tool
# runs chrooted. They see the host's network and its /tmp (bind-mounted), not its other files.
bindir="$STATE/bin"
mkdir -p "$bindir"
for tool in pg_dump pg_dumpall pg_restore psql pg_isready pgbench; do
    printf '#!/bin/sh\nexec chroot %s %s/%s "$@"\n' "$ROOT" "$PGBIN" "$tool" > "$bindir/$tool"
    chmod 755 "$bindir/$tool"
done

pw=$(cat "$pwfile")
umask 077
cat > "$ENV_FILE" <<ENV
export PGSHIFT_TEST_SOURCE='postgresql://postgres@127.0.0.1:$SOURCE_PORT/postgres'
export PGSHIFT_TEST_TARGET='postgresql://postgres@127.0.0.1:$TARGET_PORT/postgres'
export PGSHIFT_TEST_APACHE='postgresql://postgres@127.0.0.1:$APACHE_PORT/postgres'
export PGSHIFT_TEST_OLD_SOURCE='postgresql://postgres@127.0.0.1:$OLD_PORT/postgres'
export PGSHIFT_TEST_PASSWORD='$pw'
export PGSHIFT_TEST_ROOT='$ROOT'
export PGSHIFT_TEST_IMAGE='$IMAGE'
export PGSHIFT_TEST_BIN_DIR='$bindir'
export PGSHIFT_TEST_CA='$ca'
ENV
log "environment written to $ENV_FILE"

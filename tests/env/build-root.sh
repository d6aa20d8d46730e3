#!/usr/bin/env bash
# Builds (once) a Debian trixie root holding PostgreSQL 17, TimescaleDB and pgvector, and imports it
# as a local Docker image when a Docker engine answers. Safe to run again: a finished root is reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

debian_mirror() {
    # The mirror this machine's apt already uses (deb822 or one-line format).
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hsE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
            | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt sources; set PGSHIFT_DEBIAN_MIRROR"
    echo "$uri"
}

if [ ! -f "$ROOT/.pgshift-complete" ]; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
    mirror=${PGSHIFT_DEBIAN_MIRROR:-$(debian_mirror)}
    log "building trixie root in $ROOT (about a minute)"
    umount_root 2>/dev/null || true
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --variant=minbase \
        --include=postgresql-17,postgresql-17-timescaledb,postgresql-17-pgvector \
        trixie "$ROOT" "$mirror" > "$PGSHIFT_TEST_HOME/debootstrap.log" 2>&1 \
        || { tail -n 30 "$PGSHIFT_TEST_HOME/debootstrap.log" >&2; die "debootstrap failed (log: $PGSHIFT_TEST_HOME/debootstrap.log)"; }
    # The package's own cluster is not ours; remove it so the image starts clean.
    rm -rf "$ROOT/var/lib/postgresql/17/main" "$ROOT/etc/postgresql/17/main"
    rm -rf "$ROOT/var/cache/apt/archives/"*.deb
    touch "$ROOT/.pgshift-complete"
fi
log "root ready: $ROOT"

if docker_ok=$(timeout 10 docker info --format '{{.ServerVersion}}' 2>/dev/null) && [ -n "$docker_ok" ]; then
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        log "importing $IMAGE into Docker engine $docker_ok"
        umount_root 2>/dev/null || true
        tar -C "$ROOT" --exclude=./proc/* --exclude=./dev/* --exclude=./tmp/* --exclude=./srv/pgshift --exclude=".$STATE" -c . \
            | docker import \
                --change 'ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'ENV LANG=C.UTF-8' \
                - "$IMAGE" >/dev/null
    fi
    log "docker image $IMAGE present"
else
    log "no Docker engine answers: image not imported (container tests need one)"
fi

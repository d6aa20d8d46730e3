#!/usr/bin/env bash
# Builds (once) a Debian trixie root holding PostgreSQL 17, TimescaleDB (the Timescale-licensed build,
# from the vendored source) and pgvector, and imports it as a local Docker image when a Docker engine
# answers. Safe to run again: a finished root is reused.
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

# Debian's TimescaleDB is the Apache-only build (compression, continuous aggregates and jobs refused).
# Users run the Timescale-licensed one, so the root gets it: the same release built from the vendored
# upstream source (with tsl/) and installed over the packaged extension. Built once; the root is
# cached with it. Build tools are removed again so the root (and the image made from it) stays small.
if [ ! -f "$TSL_MARKER" ]; then
    tarball="$VENDOR_DIR/timescaledb-$TSL_VERSION.tar.gz"
    [ -f "$tarball" ] || die "$tarball not found: the vendored TimescaleDB source (set PGSHIFT_VENDOR_DIR to its folder)"
    (cd "$VENDOR_DIR" && grep " timescaledb-$TSL_VERSION.tar.gz\$" SHA256SUMS | sha256sum -c --quiet -) \
        || die "$tarball does not match $VENDOR_DIR/SHA256SUMS"
    # a server running from the root keeps the old module mapped: stop the test clusters first
    for c in $CLUSTERS; do
        data=/srv/pgshift/${c%%:*}
        if [ -f "$ROOT$data/postmaster.pid" ]; then
            mount_root
            as_postgres "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
        fi
    done
    log "building TimescaleDB $TSL_VERSION with the Timescale License in the root (a few minutes)"
    mount_root
    build_log="$PGSHIFT_TEST_HOME/timescaledb-build.log"
    deps="postgresql-server-dev-17 cmake gcc make libssl-dev libkrb5-dev"
    src=/usr/src/pgshift-timescaledb
    rm -rf "$ROOT$src"
    mkdir -p "$ROOT$src"
    tar -C "$ROOT$src" -xzf "$tarball"
    {
        chroot "$ROOT" apt-get update -q
        chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $deps
        chroot "$ROOT" sh -ec "cd $src/timescaledb-$TSL_VERSION
            ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF \
                -DGENERATE_DOWNGRADE_SCRIPT=OFF -DSEND_TELEMETRY_DEFAULT=NO
            make -C build -j$(nproc)
            make -C build install"
    } > "$build_log" 2>&1 || { tail -n 30 "$build_log" >&2; die "TimescaleDB build failed (log: $build_log)"; }
    [ -f "$ROOT$PGBIN/../lib/timescaledb-tsl-$TSL_VERSION.so" ] || die "no timescaledb-tsl-$TSL_VERSION.so after the build (log: $build_log)"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --auto-remove $deps >> "$build_log" 2>&1 \
        || log "build tools not removed (see $build_log)"
    chroot "$ROOT" apt-get clean
    rm -rf "$ROOT$src" "$ROOT/var/lib/apt/lists/"*
    touch "$TSL_MARKER"
    # an image imported before the build lacks the module
    docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
fi
log "TimescaleDB $TSL_VERSION (Timescale License) in the root"

# A security label provider for the test servers (label-provider/, like PostgreSQL's dummy_seclabel):
# without one no security label can exist here. Built once per version of its source; the build
# tools are removed again.
LABEL_SRC="$here/label-provider"
LABEL_MARKER="$ROOT/.pgshift-test-label-$(cat "$LABEL_SRC"/*.c "$LABEL_SRC/Makefile" | sha256sum | cut -c1-12)"
if [ ! -f "$LABEL_MARKER" ]; then
    log "building the test security label provider in the root"
    mount_root
    build_log="$PGSHIFT_TEST_HOME/label-provider-build.log"
    deps="postgresql-server-dev-17 gcc make"
    src=/usr/src/pgshift-test-label
    rm -rf "$ROOT$src"
    mkdir -p "$ROOT$src"
    cp "$LABEL_SRC"/*.c "$LABEL_SRC/Makefile" "$ROOT$src/"
    {
        chroot "$ROOT" apt-get update -q
        chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $deps
        chroot "$ROOT" sh -ec "cd $src && make && make install"
    } > "$build_log" 2>&1 || { tail -n 30 "$build_log" >&2; die "label provider build failed (log: $build_log)"; }
    [ -f "$ROOT$PGBIN/../lib/pgshift_test_label.so" ] || die "no pgshift_test_label.so after the build (log: $build_log)"
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --auto-remove $deps >> "$build_log" 2>&1 \
        || log "build tools not removed (see $build_log)"
    chroot "$ROOT" apt-get clean
    rm -rf "$ROOT$src" "$ROOT/var/lib/apt/lists/"*
    rm -f "$ROOT"/.pgshift-test-label-*
    touch "$LABEL_MARKER"
fi
log "test security label provider in the root"

if docker_ok=$(timeout 10 docker info --format '{{.ServerVersion}}' 2>/dev/null) && [ -n "$docker_ok" ]; then
    if [ "$(docker image inspect --format '{{index .Config.Labels "org.pgshift.timescaledb"}}' "$IMAGE" 2>/dev/null)" != "$TSL_VERSION-tsl" ]; then
        log "importing $IMAGE into Docker engine $docker_ok"
        umount_root 2>/dev/null || true
        tar -C "$ROOT" --exclude=./proc/* --exclude=./dev/* --exclude=./tmp/* --exclude=./srv/pgshift --exclude=".$STATE" -c . \
            | docker import \
                --change 'ENV PATH=/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'ENV LANG=C.UTF-8' \
                --change "LABEL org.pgshift.timescaledb=$TSL_VERSION-tsl" \
                - "$IMAGE" >/dev/null
    fi
    log "docker image $IMAGE present"
else
    log "no Docker engine answers: image not imported (container tests need one)"
fi

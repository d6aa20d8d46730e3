#!/usr/bin/env bash
# Stops the test servers cleanly and unmounts the root's proc/dev. The cached root is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

old="$PGSHIFT_TEST_HOME/old-source/data"
if [ -f "$old/postmaster.pid" ]; then
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$old" -m fast -w stop >/dev/null \
        && log "old source stopped" || log "old source: stop failed"
fi
[ -d "$ROOT/srv/pgshift" ] || exit 0
mount_root
for c in $CLUSTERS; do
    name=${c%%:*}
    data=/srv/pgshift/$name
    if [ -f "$ROOT$data/postmaster.pid" ]; then
        as_postgres "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "$name stopped" || log "$name: stop failed"
    fi
done
umount_root

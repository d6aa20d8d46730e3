# Shared by the benchmark scripts (sourced after setting `repo`): the tools they need, the test
# servers started, their environment, `psql17` and a clock.
. "$repo/tests/env/lib.sh"

# bench_env TOOL...: installs the Debian packages of the tools missing, starts the test servers
bench_env() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || [ -x "/usr/bin/$tool" ] || apt-get install -y -qq "$tool" >/dev/null \
            || die "install $tool (apt-get install $tool)"
    done
    bash "$repo/tests/env/up.sh"
    . "$ENV_FILE"
    export PGPASSWORD="$PGSHIFT_TEST_PASSWORD"
    bin="$PGSHIFT_TEST_BIN_DIR"
}

psql17() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }
now() { date +%s.%N; }

# bench_source DB ROWS: a new source database DB on the source server — a hypertable of ROWS
# readings in daily chunks with an index and a foreign key, a wide table of ROWS/20 rows with a
# primary key, and 40 small tables — vacuumed and analyzed.
bench_source() {
    local db=$1 rows=$2
    psql17 -p "$SOURCE_PORT" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    psql17 -p "$SOURCE_PORT" -d "$db" -c "
        CREATE EXTENSION timescaledb;
        CREATE TABLE devices (id int PRIMARY KEY, name text NOT NULL);
        INSERT INTO devices SELECT i, 'device ' || i FROM generate_series(0, 499) i;
        CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL REFERENCES devices, value double precision, note text);
        SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
        INSERT INTO readings SELECT '2026-01-01'::timestamptz + make_interval(secs => i), i % 500, sin(i) * 1000,
                                    CASE WHEN i % 7 = 0 THEN 'check ' || i END FROM generate_series(1, $rows) AS i;
        CREATE INDEX ON readings (device, ts);
        CREATE TABLE wide AS SELECT i AS id, repeat(md5(i::text), 20) AS body, now() AS at FROM generate_series(1, $((rows / 20))) i;
        ALTER TABLE wide ADD PRIMARY KEY (id);
        DO \$\$ BEGIN FOR i IN 1..40 LOOP
            EXECUTE format('CREATE TABLE small_%s AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g', i);
        END LOOP; END \$\$;" -c 'VACUUM ANALYZE' > /dev/null
}

# median: the median of the numbers on stdin, one per line
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

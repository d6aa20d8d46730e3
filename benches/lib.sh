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

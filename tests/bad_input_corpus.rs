//! The bad-input corpus, in one place: every mistake a user can make at pgshift's door — connection
//! strings, passwords, hosts, databases, plan files, plan entries the source or the target cannot
//! honour, tools, directories, the Docker engine, images and ports. Each case must give exactly one
//! error line on stderr (`pgshift: ... (fix: ...)`), its documented exit code (2 refused, 3 a stage
//! failed) and leave the target as it was — checked on the real target server and the real Docker
//! engine after the case ran. The cases run against the shared test servers with their own
//! databases; a summary table (case, exit code, message) is printed and written to
//! `target/tmp/bad_input_corpus.txt`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const BASE_IMAGE: &str = "pgshift-test/timescaledb-pgvector:17";
const SOURCE_DB: &str = "corpus_src";
const LO_DB: &str = "corpus_lo";
const BUSY_DB: &str = "corpus_busy";
/// A source whose table carries a security label of the test servers' provider `pgshift_test`.
const LABELLED_DB: &str = "corpus_labelled";
const PASSWORD_IN_INPUT: &str = "s3cr3t-in-the-input";

/// What must still hold after a case ran: nothing was written to the target.
enum Check {
    /// This database does not exist on the target server.
    NoDatabase(String),
    /// This database does not exist on that server (URL).
    NoDatabaseOn(String, String),
    /// This database (URL) holds exactly these user tables.
    OnlyTables(String, Vec<&'static str>),
    /// No container of this name and no volume NAME-data exist on the Docker engine.
    NoContainer(String),
    /// No run directory was left in this backup directory.
    NoRunDir(PathBuf),
    /// The command only reads (inventory, verify): it opens no session that could write.
    ReadOnly,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    needle: String,
    checks: Vec<Check>,
}

fn case(name: &'static str, args: Vec<String>, code: i32, needle: &str, checks: Vec<Check>) -> Case {
    Case { name, args, env: Vec::new(), code, needle: needle.into(), checks }
}

impl Case {
    fn env(mut self, key: &'static str, value: &str) -> Self {
        self.env.push((key, value.into()));
        self
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Plan files and directories of the cases, one directory per case.
struct Plans {
    root: tempfile::TempDir,
    source: String,
    target_server: String,
    bin_dir: String,
}

impl Plans {
    fn dir(&self, case: &str) -> PathBuf {
        let d = self.root.path().join(case);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `dir/plan.toml` with the given source, `[target]` body, backup directory and bin_dir.
    fn write(&self, case: &str, source: &str, target: &str, backup_dir: &Path, bin_dir: &str, extra: &str) -> PathBuf {
        let path = self.dir(case).join("plan.toml");
        let text = format!(
            "[source]\nconnection = \"{source}\"\n[target]\n{target}\n[backup]\ndir = \"{}\"\nbin_dir = \"{bin_dir}\"\n{extra}",
            backup_dir.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn backups(&self, case: &str) -> PathBuf {
        self.dir(case).join("backups")
    }

    /// The target database of a case: never created by it.
    fn target_db(case: &str) -> String {
        format!("corpus_t_{}", case.replace('-', "_"))
    }

    /// A plan whose target is an existing server (database named after the case); `extra` added.
    fn existing(&self, case: &'static str, extra: &str) -> (PathBuf, Vec<Check>) {
        self.existing_from(case, &self.source, extra)
    }

    /// A plan whose target is a database on `server` (not the usual target server).
    fn existing_on(&self, case: &'static str, server: &str, extra: &str) -> (PathBuf, Vec<Check>) {
        let db = Self::target_db(case);
        let target = format!("connection = \"{}\"", common::url_for(server, &db));
        let plan = self.write(case, &self.source, &target, &self.backups(case), &self.bin_dir, extra);
        (plan, vec![Check::NoDatabaseOn(server.to_string(), db), Check::NoRunDir(self.backups(case))])
    }

    fn existing_from(&self, case: &'static str, source: &str, extra: &str) -> (PathBuf, Vec<Check>) {
        let db = Self::target_db(case);
        let target = format!("connection = \"{}\"", common::url_for(&self.target_server, &db));
        let plan = self.write(case, source, &target, &self.backups(case), &self.bin_dir, extra);
        (plan, vec![Check::NoDatabase(db), Check::NoRunDir(self.backups(case))])
    }

    /// A plan whose target is a container pgshift would build and run (never created by the case).
    fn container(&self, case: &'static str, container_extra: &str, extra: &str) -> (PathBuf, Vec<Check>, String) {
        self.container_from(case, &self.source, container_extra, extra)
    }

    fn container_from(
        &self,
        case: &'static str,
        source: &str,
        container_extra: &str,
        extra: &str,
    ) -> (PathBuf, Vec<Check>, String) {
        let name = format!("pgshift-corpus-{case}");
        let dir = self.dir(case);
        let target = format!(
            "database = \"corpus_c\"\n[target.container]\nname = \"{name}\"\nimage = \"pgshift-test/corpus:{case}\"\n\
             password_file = \"{}\"\ntimeout_seconds = 60\n{container_extra}",
            dir.join("target.pgpass").display()
        );
        let plan = self.write(case, source, &target, &self.backups(case), &self.bin_dir, extra);
        (plan, vec![Check::NoContainer(name.clone())], name)
    }
}

fn run(plan: &Path) -> Vec<String> {
    strings(&["run", "--plan", plan.to_str().unwrap(), "--yes"])
}

fn run_json(plan: &Path) -> Vec<String> {
    strings(&["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn docker_has(kind: &str, name: &str) -> bool {
    Command::new("docker").args([kind, "inspect", name]).output().expect("docker CLI").status.success()
}

/// Removes the containers, volumes and images the cases name, however the test ends.
struct DockerCleanup(Vec<String>);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", "-v", name]).output();
            let _ = Command::new("docker").args(["volume", "rm", "-f", &format!("{name}-data")]).output();
            let tag = name.replacen("pgshift-corpus-", "pgshift-test/corpus:", 1);
            let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
        }
    }
}

/// A read-only tmpfs for one case, unmounted when dropped (the suite runs as root, as CI does).
struct ReadOnlyMount(tempfile::TempDir);

impl ReadOnlyMount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"]).arg(dir.path()).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "mount -t tmpfs failed: the corpus needs root (as tests/env/test.sh runs)"
        );
        Self(dir)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

async fn user_tables(url: &str) -> Vec<String> {
    common::connect(url)
        .await
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               AND n.nspname !~ '^_timescaledb|^timescaledb_|^pg_temp' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The one error line, or why the output breaks the rule. Text mode may narrate the stages
/// (`[stage] ...` lines) before the error; JSON mode writes nothing else on stderr.
fn error_line(case: &Case, out: &Output) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") || stderr.contains("stack backtrace") {
        return Err(format!("a panic or a backtrace: {stderr}"));
    }
    let json = case.args.iter().any(|a| a == "--json");
    let errors: Vec<&str> = lines.iter().copied().filter(|l| json || !l.starts_with('[')).collect();
    let [line] = errors.as_slice() else {
        return Err(format!("{} error lines, want exactly one: {stderr}", errors.len()));
    };
    if !line.starts_with("pgshift: ") || !line.contains("(fix: ") {
        return Err(format!("not a `pgshift: ... (fix: ...)` line: {line}"));
    }
    if !line.contains(&case.needle) {
        return Err(format!("expected {:?} in: {line}", case.needle));
    }
    if out.status.code() != Some(case.code) {
        return Err(format!("exit code {:?}, want {}: {line}", out.status.code(), case.code));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains(PASSWORD_IN_INPUT) || stderr.contains(PASSWORD_IN_INPUT) {
        return Err("the password given in the input was echoed".into());
    }
    Ok(line.to_string())
}

/// Whether the target was left alone; the first thing that was not.
async fn untouched(checks: &[Check], target_server: &str) -> Result<(), String> {
    for check in checks {
        match check {
            Check::NoDatabase(db) | Check::NoDatabaseOn(_, db) => {
                let server = match check {
                    Check::NoDatabaseOn(server, _) => server.as_str(),
                    _ => target_server,
                };
                let n: i64 = common::connect(server)
                    .await
                    .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[db])
                    .await
                    .unwrap()
                    .get(0);
                if n != 0 {
                    return Err(format!("database {db} was created on the target"));
                }
            }
            Check::OnlyTables(url, want) => {
                let have = user_tables(url).await;
                if have != *want {
                    return Err(format!("{url} holds {have:?}, not {want:?}"));
                }
            }
            Check::NoContainer(name) => {
                if docker_has("container", name) || docker_has("volume", &format!("{name}-data")) {
                    return Err(format!("container {name} or its volume was created"));
                }
            }
            Check::NoRunDir(dir) => {
                let left = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
                if left != 0 {
                    return Err(format!("{left} run director(ies) left in {}", dir.display()));
                }
            }
            Check::ReadOnly => {}
        }
    }
    Ok(())
}

fn describe(checks: &[Check]) -> String {
    let parts: Vec<&str> = checks
        .iter()
        .map(|c| match c {
            Check::NoDatabase(_) | Check::NoDatabaseOn(..) => "no target db",
            Check::OnlyTables(..) => "db unchanged",
            Check::NoContainer(_) => "no container/volume",
            Check::NoRunDir(_) => "no run dir",
            Check::ReadOnly => "read-only command",
        })
        .collect();
    parts.join(", ")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_refused_with_one_line_its_exit_code_and_nothing_written() {
    let s = common::servers();
    let bin_dir = std::env::var("PGSHIFT_TEST_BIN_DIR").expect("PGSHIFT_TEST_BIN_DIR: source tests/env state/env.sh");
    let old_bin = "/usr/lib/postgresql/15/bin";
    assert!(
        Path::new(old_bin).join("pg_dump").exists(),
        "the corpus needs the host's PostgreSQL 15 client (older than the 17 servers) at {old_bin}"
    );
    let image = Command::new("docker").args(["image", "inspect", BASE_IMAGE]).output().expect("docker CLI");
    assert!(image.status.success(), "the Docker engine must answer and hold {BASE_IMAGE} (tests/env/build-root.sh)");

    // the source: a time series with a nullable and a text column, a key without the time column,
    // a documents table; a source with a large object; a target database that holds a table
    let src = common::fresh_db(&s.source, SOURCE_DB).await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE public.meter (id bigint NOT NULL, taken_at timestamptz NOT NULL, noted_at timestamptz, \
               label text, kwh real, PRIMARY KEY (id, taken_at)); \
             INSERT INTO public.meter SELECT i, '2026-01-01'::timestamptz + make_interval(mins => i), NULL, 'm', i \
               FROM generate_series(1, 200) i; \
             CREATE TABLE public.keyed (id int PRIMARY KEY, at timestamptz NOT NULL); \
             CREATE TABLE public.docs (id int PRIMARY KEY, body text); INSERT INTO public.docs VALUES (1, 'a')",
        )
        .await
        .unwrap();
    // a large object its owner kept to itself, read by a role that is not a superuser
    let lo = common::fresh_db(&s.source, LO_DB).await;
    common::connect(&lo)
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE pgshift_corpus_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER ROLE pgshift_corpus_reader PASSWORD {}; \
             DO $$ BEGIN CREATE ROLE pgshift_corpus_keeper; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT pg_read_all_data TO pgshift_corpus_reader; \
             SELECT lo_from_bytea(0, 'a large object'); \
             DO $$ BEGIN EXECUTE format('ALTER LARGE OBJECT %s OWNER TO pgshift_corpus_keeper', \
               (SELECT min(oid) FROM pg_largeobject_metadata)); END $$",
            pgshift::postgres::sql::quote_literal(&s.password)
        ))
        .await
        .unwrap();
    let lo = lo.replacen("postgres@", "pgshift_corpus_reader@", 1);
    assert!(lo.contains("pgshift_corpus_reader@"), "{lo}");
    let labelled = common::db_with(
        &s.source,
        LABELLED_DB,
        "CREATE TABLE public.cases (id int); SECURITY LABEL FOR pgshift_test ON TABLE public.cases IS 'internal'",
    )
    .await;
    let busy = common::fresh_db(&s.target, BUSY_DB).await;
    common::connect(&busy).await.batch_execute("CREATE TABLE public.precious (id int)").await.unwrap();

    let p = Plans {
        root: tempfile::tempdir().unwrap(),
        source: src.clone(),
        target_server: s.target.clone(),
        bin_dir: bin_dir.clone(),
    };
    let source_tables = vec!["public.docs", "public.keyed", "public.meter"];
    let mut cases = Vec::new();

    // --- connection strings, passwords, hosts, databases (inventory and verify only read) ---
    for (name, conn) in [
        ("conn-unterminated-ipv6", "postgresql://[::1".to_string()),
        ("conn-port-not-a-number", "host=127.0.0.1 port=notaport".into()),
        ("conn-unknown-option", "host=127.0.0.1 bogus_option=1".into()),
        ("conn-port-out-of-range", format!("postgresql://u:{PASSWORD_IN_INPUT}@127.0.0.1:99999/db")),
    ] {
        let args = vec!["inventory".into(), "--db".into(), conn];
        cases.push(case(name, args, 2, "malformed connection string", vec![Check::ReadOnly]));
    }
    cases.push(case(
        "conn-bad-sslmode",
        strings(&["inventory", "--db", "host=127.0.0.1 sslmode=sometimes"]),
        2,
        "sslmode=sometimes is not an sslmode",
        vec![Check::ReadOnly],
    ));
    cases.push(
        case(
            "env-pgport-not-a-number",
            strings(&["inventory", "--db", "host=127.0.0.1"]),
            2,
            "PGPORT=fivefourthreetwo is not a port number",
            vec![Check::ReadOnly],
        )
        .env("PGPORT", "fivefourthreetwo"),
    );
    let url_as_argument = format!("postgresql://alice:{PASSWORD_IN_INPUT}@db.example/app");
    cases.push(case(
        "mistyped-argument-with-password",
        strings(&["inventory", &url_as_argument]),
        2,
        "unexpected argument",
        vec![Check::ReadOnly],
    ));
    cases.push(
        case(
            "wrong-password",
            strings(&["inventory", "--db", &src]),
            2,
            "password authentication failed",
            vec![Check::ReadOnly],
        )
        .env("PGPASSWORD", PASSWORD_IN_INPUT),
    );
    cases.push(case(
        "unreachable-host",
        strings(&["inventory", "--db", "postgresql://postgres@127.0.0.1:1/postgres"]),
        2,
        "connection refused",
        vec![Check::ReadOnly],
    ));
    cases.push(case(
        "missing-database",
        strings(&["inventory", "--db", &common::url_for(&s.source, "corpus_no_such_db")]),
        2,
        "database \"corpus_no_such_db\" does not exist",
        vec![Check::ReadOnly],
    ));
    let allow = p.dir("verify-unknown-allow-class").join("allow.toml");
    std::fs::write(&allow, "[[allow]]\nclass = \"tabels\"\nname = \"x\"\n").unwrap();
    let verify =
        |allow: &Path| strings(&["verify", "--source", &src, "--target", &busy, "--allow", allow.to_str().unwrap()]);
    cases.push(case(
        "verify-unknown-allow-class",
        verify(&allow),
        2,
        "unknown class \"tabels\"",
        vec![Check::ReadOnly],
    ));
    let allow = p.dir("verify-malformed-allow-file").join("allow.toml");
    std::fs::write(&allow, "[[allow]]\nclass = \"tables\"\nname = \"x\"\nchange = \"sometimes\"\n").unwrap();
    cases.push(case("verify-malformed-allow-file", verify(&allow), 2, "line 4", vec![Check::ReadOnly]));
    cases.push(case(
        "verify-unwritable-report",
        strings(&["verify", "--source", &src, "--target", &busy, "--json", "/nonexistent/dir/report.json"]),
        2,
        "cannot write /nonexistent/dir/report.json",
        vec![Check::ReadOnly],
    ));
    let backups = p.backups("backup-old-pg-dump");
    cases.push(case(
        "backup-old-pg-dump",
        strings(&["backup", "--source", &src, "--bin-dir", old_bin, "--dir", backups.to_str().unwrap()]),
        2,
        "pg_dump 15 is older than the source server (PostgreSQL 17)",
        vec![Check::NoRunDir(backups)],
    ));

    // --- the plan file itself ---
    let (plan, checks) = p.existing("run-without-yes", "");
    cases.push(case("run-without-yes", strings(&["run", "--plan", plan.to_str().unwrap()]), 2, "add --yes", checks));
    let missing = p.dir("run-missing-plan").join("nowhere.toml");
    cases.push(case("run-missing-plan", run(&missing), 2, "cannot read plan", vec![Check::ReadOnly]));
    for (name, extra, needle) in [
        ("plan-toml-syntax", "[verify\nchecksums = true\n", "invalid table header"),
        ("plan-unknown-field", "[verify]\nchecksum = true\n", "unknown field `checksum`"),
        ("plan-wrong-type", "[data]\njobs = \"two\"\n", "line 9"),
        ("plan-unknown-allow-class", "[[allow]]\nclass = \"tabels\"\nname = \"x\"\n", "[[allow]]: unknown class"),
        ("plan-zero-jobs", "[data]\njobs = 0\n", "[data] jobs must be at least 1"),
        ("plan-bad-memory-size", "[tuning]\nmaintenance_work_mem = \"lots\"\n", "is not a memory size"),
    ] {
        let (plan, checks) = p.existing(name, extra);
        cases.push(case(name, run(&plan), 2, needle, checks));
    }
    let no_target = p.write("plan-no-target", &src, "", &p.backups("plan-no-target"), &bin_dir, "");
    cases.push(case(
        "plan-no-target",
        run(&no_target),
        2,
        "[target] needs exactly one of",
        vec![Check::NoRunDir(p.backups("plan-no-target"))],
    ));
    let (plan, checks) = p.existing_from("plan-malformed-source", "postgresql://[::1", "");
    cases.push(case("plan-malformed-source", run(&plan), 2, "[source] connection", checks));

    // --- servers named by the plan ---
    let (plan, checks) = p.existing_from("run-source-unreachable", "postgresql://postgres@127.0.0.1:1/x", "");
    cases.push(case(
        "run-source-unreachable",
        run(&plan),
        2,
        "source postgres@127.0.0.1:1/x: connection refused",
        checks,
    ));
    let (plan, checks) = p.existing_from("run-source-missing-database", &common::url_for(&s.source, "corpus_nodb"), "");
    cases.push(case("run-source-missing-database", run(&plan), 2, "database \"corpus_nodb\" does not exist", checks));
    let unreachable = p.write(
        "run-target-unreachable",
        &src,
        "connection = \"postgresql://postgres@127.0.0.1:1/corpus_t\"",
        &p.backups("run-target-unreachable"),
        &bin_dir,
        "",
    );
    cases.push(case(
        "run-target-unreachable",
        run(&unreachable),
        2,
        "target postgres@127.0.0.1:1/postgres: connection refused",
        vec![Check::NoRunDir(p.backups("run-target-unreachable"))],
    ));
    let db = Plans::target_db("run-target-wrong-password");
    let wrong = common::url_for(&s.target, &db).replacen("postgres@", &format!("postgres:{PASSWORD_IN_INPUT}@"), 1);
    let backups = p.backups("run-target-wrong-password");
    let plan = p.write("run-target-wrong-password", &src, &format!("connection = \"{wrong}\""), &backups, &bin_dir, "");
    cases.push(case(
        "run-target-wrong-password",
        run_json(&plan),
        2,
        "target postgres@127.0.0.1:55418/postgres: password authentication failed",
        vec![Check::NoDatabase(db), Check::NoRunDir(backups)],
    ));
    let backups = p.backups("run-non-empty-target");
    let plan = p.write("run-non-empty-target", &src, &format!("connection = \"{busy}\""), &backups, &bin_dir, "");
    cases.push(case(
        "run-non-empty-target",
        run(&plan),
        2,
        "is not empty: 1 objects (e.g. public.precious)",
        vec![Check::OnlyTables(busy.clone(), vec!["public.precious"]), Check::NoRunDir(backups)],
    ));
    let backups = p.backups("run-target-is-the-source");
    let target = format!("connection = \"{src}\"\nforce = true");
    let plan = p.write("run-target-is-the-source", &src, &target, &backups, &bin_dir, "");
    cases.push(case(
        "run-target-is-the-source",
        run(&plan),
        2,
        "is the source database itself",
        vec![Check::OnlyTables(src.clone(), source_tables.clone()), Check::NoRunDir(backups)],
    ));

    // --- tools and directories ---
    let db = Plans::target_db("run-old-pg-dump");
    let backups = p.backups("run-old-pg-dump");
    let target = format!("connection = \"{}\"", common::url_for(&s.target, &db));
    let plan = p.write("run-old-pg-dump", &src, &target, &backups, old_bin, "");
    cases.push(case(
        "run-old-pg-dump",
        run(&plan),
        2,
        "pg_dump 15 is older than the source server (PostgreSQL 17)",
        vec![Check::NoDatabase(db), Check::NoRunDir(backups)],
    ));
    let db = Plans::target_db("run-no-tools-in-bin-dir");
    let target = format!("connection = \"{}\"", common::url_for(&s.target, &db));
    let backups = p.backups("run-no-tools-in-bin-dir");
    let plan = p.write("run-no-tools-in-bin-dir", &src, &target, &backups, "/nonexistent/bin", "");
    cases.push(case(
        "run-no-tools-in-bin-dir",
        run(&plan),
        2,
        "no working pg_dump found in /nonexistent/bin",
        vec![Check::NoDatabase(db), Check::NoRunDir(backups)],
    ));
    let read_only = ReadOnlyMount::new();
    let db = Plans::target_db("run-backup-dir-read-only");
    let target = format!("connection = \"{}\"", common::url_for(&s.target, &db));
    let backups = read_only.0.path().join("backups");
    let plan = p.write("run-backup-dir-read-only", &src, &target, &backups, &bin_dir, "");
    cases.push(case(
        "run-backup-dir-read-only",
        run(&plan),
        2,
        "the filesystem is read-only",
        vec![Check::NoDatabase(db), Check::NoRunDir(backups)],
    ));
    let db = Plans::target_db("run-backup-dir-is-a-file");
    let target = format!("connection = \"{}\"", common::url_for(&s.target, &db));
    let file = p.dir("run-backup-dir-is-a-file").join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let plan = p.write("run-backup-dir-is-a-file", &src, &target, &file.join("backups"), &bin_dir, "");
    cases.push(case("run-backup-dir-is-a-file", run(&plan), 2, "a file is in the way", vec![Check::NoDatabase(db)]));

    // --- plan entries the source or the target cannot honour ---
    let hypertable = |table: &str, column: &str, more: &str| {
        format!("[[hypertables]]\ntable = \"{table}\"\ntime_column = \"{column}\"\n{more}")
    };
    let vector = |table: &str, column: &str, more: &str| {
        format!("[[vectors]]\ntable = \"{table}\"\ncolumn = \"{column}\"\n{more}")
    };
    // the server started with timescaledb.license = apache, as Debian's Apache-only package runs
    let (plan, checks) = p.existing_on(
        "apache-license-with-compression",
        &s.apache,
        &hypertable("public.meter", "taken_at", "compress = true\nsegment_by = \"label\"\n"),
    );
    cases.push(case(
        "apache-license-with-compression",
        run(&plan),
        2,
        "Apache-only build and cannot hold the source's planned compression of public.meter",
        checks,
    ));
    for (name, extra, needle) in [
        (
            "vector-3000-dimensions-hnsw",
            vector("public.docs", "embedding", "dimensions = 3000\nindex = \"hnsw\"\n"),
            "hnsw indexes on vector take at most 2000 dimensions, not 3000",
        ),
        (
            "vector-unknown-type",
            vector("public.docs", "embedding", "dimensions = 3\ntype = \"floatvec\"\n"),
            "type \"floatvec\" is not vector or halfvec",
        ),
        (
            "vector-unknown-table",
            vector("public.nope", "embedding", "dimensions = 384\n"),
            "[[vectors]] public.nope.embedding: no such table on the source",
        ),
        (
            "vector-column-exists-as-text",
            vector("public.docs", "body", "dimensions = 384\n"),
            "the source's column is text, the plan says vector(384)",
        ),
        (
            "hypertable-unknown-table",
            hypertable("public.nope", "taken_at", ""),
            "[[hypertables]] public.nope: no such table on the source",
        ),
        (
            "hypertable-missing-time-column",
            hypertable("public.meter", "measured_at", ""),
            "the table has no column measured_at",
        ),
        ("hypertable-nullable-time-column", hypertable("public.meter", "noted_at", ""), "noted_at may be NULL"),
        (
            "hypertable-text-time-column",
            hypertable("public.meter", "label", ""),
            "label is text, not a timestamp or date column",
        ),
        (
            "hypertable-key-without-time",
            hypertable("public.keyed", "at", ""),
            "unique key(s) keyed_pkey do not include at",
        ),
        (
            "hypertable-bad-interval",
            hypertable("public.meter", "taken_at", "chunk_interval = \"fortnight-ish\"\n"),
            "chunk_interval = \"fortnight-ish\" is not an interval",
        ),
    ] {
        let (plan, checks) = p.existing(name, &extra);
        cases.push(case(name, run(&plan), 2, needle, checks));
    }
    let (plan, checks) = p.existing_from("source-with-large-objects", &lo, "");
    cases.push(case(
        "source-with-large-objects",
        run(&plan),
        2,
        "the connecting role may not read 1 of the source's large objects",
        checks,
    ));

    // --- the Docker engine, images and ports (container targets) ---
    let mut containers = Vec::new();
    let port = free_port();
    let (plan, checks, name) = p.container("no-docker-engine", &format!("port = {port}"), "");
    containers.push(name);
    cases.push(
        case("no-docker-engine", run(&plan), 2, "no Docker engine answers at tcp://127.0.0.1:1", checks)
            .env("DOCKER_HOST", "tcp://127.0.0.1:1"),
    );
    let busy_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy_port.local_addr().unwrap().port();
    let (plan, checks, name) = p.container("container-port-in-use", &format!("port = {port}"), "");
    containers.push(name);
    cases.push(case("container-port-in-use", run(&plan), 2, &format!("port {port} is already in use"), checks));
    let more = format!("port = {}\ndockerfile = \"/nonexistent/Dockerfile\"", free_port());
    let (plan, checks, name) = p.container("container-missing-dockerfile", &more, "");
    containers.push(name);
    cases.push(case(
        "container-missing-dockerfile",
        run(&plan),
        2,
        "the Dockerfile /nonexistent/Dockerfile does not exist",
        checks,
    ));
    let (plan, checks, name) = p.container(
        "container-hypertable-missing-column",
        &format!("port = {}", free_port()),
        &hypertable("public.meter", "measured_at", ""),
    );
    containers.push(name);
    cases.push(case("container-hypertable-missing-column", run(&plan), 2, "has no column measured_at", checks));
    // a container loads no security label provider the plan does not name: refused before it is made
    let (plan, checks, name) =
        p.container_from("container-label-provider", &labelled, &format!("port = {}", free_port()), "");
    containers.push(name);
    cases.push(case(
        "container-label-provider",
        run(&plan),
        2,
        "the source's security labels need the provider pgshift_test, which the container pgshift makes would not load",
        checks,
    ));
    let build = p.dir("container-image-build-fails");
    std::fs::write(build.join("Dockerfile"), format!("FROM {BASE_IMAGE}\nRUN echo about to fail && false\n")).unwrap();
    let more = format!("port = {}\ndockerfile = \"{}\"", free_port(), build.join("Dockerfile").display());
    let (plan, checks, name) = p.container("container-image-build-fails", &more, "");
    containers.push(name);
    cases.push(case(
        "container-image-build-fails",
        run(&plan),
        3,
        "image build failed at Step 2/2 : RUN echo about to fail && false",
        checks,
    ));
    let name = "pgshift-corpus-env-no-engine".to_string();
    containers.push(name.clone());
    cases.push(
        case(
            "env-up-no-docker-engine",
            strings(&["env", "up", "--name", &name, "--json"]),
            2,
            "no Docker engine answers",
            vec![Check::NoContainer(name)],
        )
        .env("DOCKER_HOST", "tcp://127.0.0.1:1"),
    );
    let name = "pgshift-corpus-env-bad-arg".to_string();
    containers.push(name.clone());
    cases.push(case(
        "env-up-bad-build-arg",
        strings(&["env", "up", "--name", &name, "--build-arg", "PG_MAJOR"]),
        2,
        "--build-arg PG_MAJOR is not KEY=VALUE",
        vec![Check::NoContainer(name)],
    ));
    let name = "pgshift-corpus-env-psql".to_string();
    cases.push(case(
        "env-psql-no-container",
        strings(&["env", "psql", "--name", &name, "-c", "SELECT 1"]),
        2,
        "no container named pgshift-corpus-env-psql",
        vec![Check::NoContainer(name)],
    ));
    let _cleanup = DockerCleanup(containers);

    // --- run every case, then check that the target was left alone ---
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for c in &cases {
        for check in &c.checks {
            if let Check::NoDatabase(db) = check {
                common::drop_db(&s.target, db).await; // left by an earlier, interrupted run of the corpus
            }
        }
        let started = Instant::now();
        let mut cmd = common::pgshift();
        cmd.env_remove("DOCKER_HOST").args(&c.args);
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let verdict = match error_line(c, &out) {
            Ok(line) => untouched(&c.checks, &s.target).await.map(|()| line),
            Err(e) => Err(e),
        };
        let code = out.status.code().map_or("signal".to_string(), |c| c.to_string());
        match verdict {
            Ok(line) => rows.push(format!(
                "| {} | {code} | {seconds:.1}s | {} | {} |",
                c.name,
                describe(&c.checks),
                line.trim_start_matches("pgshift: ")
            )),
            Err(e) => {
                rows.push(format!("| {} | {code} | {seconds:.1}s | FAILED | {e} |", c.name));
                failures.push(format!("{}: {e}", c.name));
            }
        }
    }
    drop(busy_port);
    drop(read_only);

    let refused = cases.len() - failures.len();
    let mut table = format!(
        "{refused} bad inputs tried and refused (of {}), each with one error line, its exit code and nothing \
         written to the target\n\n| case | exit | time | target left alone | error line |\n|---|---|---|---|---|\n",
        cases.len()
    );
    for r in &rows {
        table.push_str(r);
        table.push('\n');
    }
    println!("{table}");
    let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_input_corpus.txt"), &table);
    assert!(cases.len() >= 24, "the corpus holds {} cases", cases.len());
    assert!(failures.is_empty(), "{} case(s) broke the rule:\n{}", failures.len(), failures.join("\n"));

    tokio::join!(
        common::drop_db(&s.source, SOURCE_DB),
        common::drop_db(&s.source, LO_DB),
        common::drop_db(&s.source, LABELLED_DB),
        common::drop_db(&s.target, BUSY_DB)
    );
}

//! Shared helpers for the integration tests: the real source and target servers started by
//! `tests/env/up.sh`, fresh databases on them, and the fixture. A test that cannot reach the
//! servers fails with the command that starts them.
#![allow(dead_code)]

pub mod mutations;

use std::sync::OnceLock;

use pgshift::postgres::conn::ConnSpec;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

pub const ROLES_SQL: &str = include_str!("../fixtures/roles.sql");
pub const RICH_SOURCE_SQL: &str = include_str!("../fixtures/rich_source.sql");
pub const TIMESCALE_SOURCE_SQL: &str = include_str!("../fixtures/timescale_source.sql");

pub struct Servers {
    /// libpq URLs without password, database `postgres`.
    pub source: String,
    pub target: String,
    /// The same TimescaleDB started with `timescaledb.license = apache` (as Debian's package).
    pub apache: String,
    /// An older source: PostgreSQL 15 with TimescaleDB 2.15.3.
    pub old_source: String,
    pub password: String,
}

pub fn servers() -> Servers {
    let get = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: start the test servers with `bash tests/env/up.sh && . /var/cache/pgshift-test/state/env.sh` (or run `bash tests/env/test.sh`)")
        })
    };
    Servers {
        source: get("PGSHIFT_TEST_SOURCE"),
        target: get("PGSHIFT_TEST_TARGET"),
        apache: get("PGSHIFT_TEST_APACHE"),
        old_source: get("PGSHIFT_TEST_OLD_SOURCE"),
        password: get("PGSHIFT_TEST_PASSWORD"),
    }
}

/// The same server, database `db`.
pub fn url_for(server_url: &str, db: &str) -> String {
    let base = server_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(server_url);
    format!("{base}/{db}")
}

pub async fn connect(url: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().expect("test URL");
    config.password(servers().password);
    let (client, conn) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach test server {url}: {e} — run `bash tests/env/up.sh`"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A ConnSpec as a user would give it: URL without password, password from the environment.
pub fn spec(role: &'static str, url: &str) -> ConnSpec {
    let mut spec = ConnSpec::parse(role, url).expect("test URL parses");
    spec.config.password(servers().password);
    spec
}

static ROLES_LOADED: OnceLock<Mutex<[bool; 3]>> = OnceLock::new();

async fn ensure_roles(server_url: &str) {
    let s = servers();
    let index = if server_url == s.source {
        0
    } else if server_url == s.target {
        1
    } else {
        2
    };
    let lock = ROLES_LOADED.get_or_init(|| Mutex::new([false, false, false]));
    let mut done = lock.lock().await;
    if !done[index] {
        connect(server_url).await.batch_execute(ROLES_SQL).await.expect("roles.sql loads");
        done[index] = true;
    }
}

/// Creates (or re-creates) an empty database `db` on the server and returns its URL.
pub async fn fresh_db(server_url: &str, db: &str) -> String {
    let admin = connect(server_url).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await.expect("drop test db");
    admin.batch_execute(&format!("CREATE DATABASE \"{db}\"")).await.expect("create test db");
    url_for(server_url, db)
}

/// A fresh database `db` holding `sql` (run as one script), with the fixture's roles on the server.
pub async fn db_with(server_url: &str, db: &str, sql: &str) -> String {
    ensure_roles(server_url).await;
    let url = fresh_db(server_url, db).await;
    connect(&url).await.batch_execute(sql).await.unwrap_or_else(|e| panic!("fixture loads into {db}: {e:?}"));
    url
}

/// The rich fixture without pgvector, for servers that lack it (the older source's major has no
/// package of it): the vector column becomes a `real[]`, its HNSW index is left out.
pub fn rich_source_sql_without_pgvector() -> String {
    let sql = RICH_SOURCE_SQL
        .replace("CREATE EXTENSION IF NOT EXISTS vector;\n", "")
        .replace("embedding vector(3)", "embedding real[]")
        .replace(
            "CREATE INDEX kb_documents_embedding_idx ON public.kb_documents\n    USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);",
            "",
        )
        .replace("ARRAY[i, i * 0.5, 1.0 / i]::vector(3)", "ARRAY[i, i * 0.5, 1.0 / i]::real[]");
    assert!(!sql.contains("vector"), "every pgvector statement replaced");
    sql
}

/// A fresh database `db` holding the rich fixture.
pub async fn rich_db(server_url: &str, db: &str) -> String {
    db_with(server_url, db, RICH_SOURCE_SQL).await
}

/// Runs `sql` through the test environment's psql (statements one by one, as a DBA's script runs:
/// some TimescaleDB calls refuse to run inside the one transaction of a multi-statement query).
pub fn psql(url: &str, sql: &str) {
    use std::io::Write;
    let bin = std::env::var("PGSHIFT_TEST_BIN_DIR")
        .expect("PGSHIFT_TEST_BIN_DIR is not set: run `bash tests/env/up.sh` and source its env.sh");
    let mut child = std::process::Command::new(std::path::Path::new(&bin).join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", url])
        .env("PGPASSWORD", servers().password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql starts");
    child.stdin.take().expect("stdin").write_all(sql.as_bytes()).expect("psql reads the script");
    let out = child.wait_with_output().expect("psql ends");
    assert!(out.status.success(), "psql on {url} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh database `db` holding the TimescaleDB fixture (compressed hypertables, continuous
/// aggregates, jobs); on a server with the Timescale License.
pub async fn timescale_db(server_url: &str, db: &str) -> String {
    ensure_roles(server_url).await;
    let url = fresh_db(server_url, db).await;
    let script = url.clone();
    tokio::task::spawn_blocking(move || psql(&script, TIMESCALE_SOURCE_SQL)).await.expect("fixture loads");
    url
}

pub async fn drop_db(server_url: &str, db: &str) {
    let admin = connect(server_url).await;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
}

/// The pgshift binary with the test password in its environment (never in its arguments).
pub fn pgshift() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("pgshift").expect("binary built");
    cmd.env("PGPASSWORD", servers().password);
    cmd.env_remove("PGSHIFT_SOURCE").env_remove("PGSHIFT_TARGET").env_remove("PGSHIFT_DB");
    cmd
}

/// Writes `dir/plan.toml`: source, an existing-server target, backups in `dir/backups` made with
/// the PostgreSQL 17 tools of the test environment, then `extra` (more sections).
pub fn write_plan(dir: &std::path::Path, source: &str, target: &str, extra: &str) -> std::path::PathBuf {
    let bin = std::env::var("PGSHIFT_TEST_BIN_DIR")
        .expect("PGSHIFT_TEST_BIN_DIR is not set: run `bash tests/env/up.sh` and source its env.sh");
    let plan = dir.join("plan.toml");
    let text = format!(
        "[source]\nconnection = \"{source}\"\n[target]\nconnection = \"{target}\"\n\
         [backup]\ndir = \"{}\"\nbin_dir = \"{bin}\"\n{extra}",
        dir.join("backups").display()
    );
    std::fs::write(&plan, text).expect("plan written");
    plan
}

/// pg_ctl for the target cluster, run inside the test root as postgres.
pub fn target_ctl(args: &[&str]) {
    let root = std::env::var("PGSHIFT_TEST_ROOT").expect("PGSHIFT_TEST_ROOT: source tests/env state/env.sh");
    let st = std::process::Command::new("chroot")
        .args(["--userspec=postgres:postgres", &root, "/usr/lib/postgresql/17/bin/pg_ctl", "-D", "/srv/pgshift/target"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pg_ctl {args:?} for the target failed");
}

/// A `pgshift run --json` that the data stage is made to wait in: once the schema stage starts,
/// `table` (small, so copied late) is locked on the source, and this returns when a data worker
/// waits for it. The lock is held by the returned client's open transaction.
pub struct HeldRun {
    pub child: std::process::Child,
    pub lines: Vec<String>,
    pub holder: Client,
}

pub async fn run_held_at(plan: &std::path::Path, source_db_url: &str, db: &str, table: &str) -> HeldRun {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let s = servers();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"])
        .env("PGPASSWORD", &s.password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let holder = connect(source_db_url).await;
    let admin = connect(&url_for(source_db_url, "postgres")).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    let mut held = false;
    loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if !held && lines.iter().any(|l| l.contains("\"stage_started\",\"stage\":\"schema\"")) {
            holder.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
            held = true;
        }
        if held {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND application_name LIKE 'pgshift data %' AND wait_event_type = 'Lock'",
                    &[&db],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early: {lines:#?}");
        assert!(Instant::now() < deadline, "the data stage never reached the held table: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    HeldRun { child, lines, holder }
}

impl HeldRun {
    /// The target dies while the run waits; the table is released so the copy runs into the dead
    /// target; the target starts again. Returns the run's exit code and stderr.
    pub async fn kill_the_target(mut self) -> (Option<i32>, String) {
        target_ctl(&["stop", "-m", "immediate", "-w"]);
        self.holder.batch_execute("ROLLBACK").await.unwrap();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        target_ctl(&["start", "-w", "-t", "60", "-l", "/srv/pgshift/target/server.log"]);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status.code(), stderr)
    }
}

/// The first column of every row of `sql`, as text.
pub async fn strings(url: &str, sql: &str) -> Vec<String> {
    connect(url).await.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

/// Per hypertable (and continuous aggregate): its chunks, how many are compressed, and (with
/// `partial`) how many of those partially.
pub async fn chunk_states(url: &str, partial: bool) -> Vec<String> {
    let sql = format!(
        "SELECT format('%s: %s chunks, %s compressed{}',
            coalesce((SELECT format('%I.%I', ca.user_view_schema, ca.user_view_name) FROM _timescaledb_catalog.continuous_agg ca
                      WHERE ca.mat_hypertable_id = h.id), format('%I.%I', h.schema_name, h.table_name)),
            count(*), count(*) FILTER (WHERE c.status & 1 = 1), count(*) FILTER (WHERE c.status & 9 = 9))
         FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
         WHERE NOT c.dropped
           AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable p WHERE p.compressed_hypertable_id = h.id)
         GROUP BY h.id ORDER BY 1",
        if partial { ", %s partially" } else { "" }
    );
    strings(url, &sql).await
}

/// Per continuous aggregate: the watermark its refreshes reached.
pub async fn watermarks(url: &str) -> Vec<String> {
    strings(
        url,
        "SELECT format('%s up to %s', a.view_name,
                _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(ca.mat_hypertable_id)))
         FROM timescaledb_information.continuous_aggregates a
         JOIN _timescaledb_catalog.continuous_agg ca ON ca.user_view_schema = a.view_schema AND ca.user_view_name = a.view_name
         ORDER BY 1",
    )
    .await
}

/// `pgshift run --plan PLAN --yes`: its exit code and its output (stdout then stderr).
pub fn run_plan(plan: &std::path::Path) -> (i32, String) {
    let out = pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes"]).output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), all)
}

/// `pgshift verify --json`: its exit code and the report it wrote.
pub fn verify_cli(source: &str, target: &str) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    let out = pgshift()
        .args(["verify", "--source", source, "--target", target, "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|_| panic!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), serde_json::from_str(&text).unwrap())
}

/// `class name change` of every difference in a verify report, with `(planned)` after the allowed.
pub fn differences(report: &serde_json::Value) -> Vec<String> {
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {} {}{}",
                d["class"].as_str().unwrap(),
                d["name"].as_str().unwrap(),
                d["change"].as_str().unwrap(),
                if d["allowed"].is_null() { "" } else { " (planned)" }
            )
        })
        .collect()
}

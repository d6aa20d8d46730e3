//! `pgshift backup` against the real source server with the real PostgreSQL 17 tools: a complete,
//! checksummed backup that restores with psql to a clean verify; cancelling mid-pg_dump leaves no
//! process, no server session and no manifest; an old pg_dump, an unwritable directory and a full
//! disk each give one error line.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgshift::engine::{Event, StageStatus};
use pgshift::pgtools::manifest::Manifest;
use pgshift::verify::{verify, VerifyOptions};

fn bin_dir() -> String {
    std::env::var("PGSHIFT_TEST_BIN_DIR").expect(
        "PGSHIFT_TEST_BIN_DIR is not set: start the test servers with `bash tests/env/up.sh && . /var/cache/pgshift-test/state/env.sh`",
    )
}

/// The one directory `pgshift backup` made under `base`.
fn run_dir(base: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(base).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
    dirs[0].clone()
}

fn events(stdout: &[u8]) -> Vec<Event> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect()
}

/// Feeds `file` to the PostgreSQL 17 psql on stdin (the dumps carry `\restrict`, which older psql
/// does not know). Returns psql's stderr.
fn psql_file(url: &str, file: &Path, replica: bool) -> String {
    let mut cmd = Command::new(Path::new(&bin_dir()).join("psql"));
    cmd.args(["-X", "-q", "-d", url])
        .env("PGPASSWORD", common::servers().password)
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(Stdio::null());
    if replica {
        // what pg_dump's own hint asks for: a data-only restore must not fire user triggers
        cmd.env("PGOPTIONS", "-c session_replication_role=replica");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "psql {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum (coreutils)");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_is_complete_checksummed_and_restores_to_a_clean_verify() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "bk_rich").await;
    let base = tempfile::tempdir().unwrap();
    let out = common::pgshift()
        .args(["backup", "--source", &src, "--json", "--bin-dir", &bin_dir(), "--data-sql", "--dir"])
        .arg(base.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = events(&out.stdout);
    let dir = run_dir(base.path());

    // events: started, pg_dump's own verbose lines, byte and table progress, finished done
    assert!(events.iter().any(|e| matches!(e, Event::StageStarted { stage, .. } if stage == "backup")));
    assert!(events.iter().any(|e| matches!(e, Event::Output { source, line, .. }
        if source == "pg_dump data.sql" && line.contains("dumping contents of table \"energy.sites\""))));
    assert!(events.iter().any(|e| matches!(e, Event::Progress { item, done, total: Some(t), .. }
        if item == "data.sql tables" && done == t)));
    assert!(events.iter().any(|e| matches!(e, Event::Progress { item, done, .. } if item == "full.dump" && *done > 0)));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Warning { .. })),
        "TimescaleDB's circular-FK notices are not warnings: {events:?}"
    );
    match events.last().unwrap() {
        Event::StageFinished { status, .. } => assert_eq!(*status, StageStatus::Done),
        e => panic!("last event {e:?}"),
    }

    // manifest: every file, its size and sha256 as an independent sha256sum computes them
    let manifest = Manifest::load(&dir).unwrap();
    assert!(manifest.complete);
    let names: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let expected =
        ["after-data.sql", "data.sql", "full.dump", "inventory.json", "roles.sql", "schema.dump", "schema.sql"];
    assert_eq!(names, expected.into_iter().collect());
    for f in &manifest.files {
        let path = dir.join(&f.name);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), f.bytes, "{}", f.name);
        assert_eq!(sha256sum(&path), f.sha256, "{}", f.name);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{} is private", f.name);
    }
    assert!(manifest.check(&dir).is_empty());
    let archive = manifest.files.iter().find(|f| f.name == "full.dump").unwrap();
    assert!(archive.command.as_deref().unwrap_or("").contains("--compress=lz4"), "cheap compression: {archive:?}");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(manifest.source.server_version_num / 10000, 17);
    assert_eq!(manifest.source.extensions.get("timescaledb").map(String::as_str), Some("2.19.3"));
    assert!(manifest.source.extensions.contains_key("vector"));
    assert!(manifest.snapshot.is_some(), "the dumps share the inventory's snapshot");
    assert!(manifest.tools.iter().all(|t| t.major >= 17));
    let roles = std::fs::read_to_string(dir.join("roles.sql")).unwrap();
    assert!(roles.contains("CREATE ROLE pgshift_tenant"), "{roles}");
    assert!(!roles.contains("SCRAM-SHA-256") && !roles.contains("PASSWORD '"), "no passwords unless asked");
    // the password appears nowhere in the backup (files, log, journal) nor in the events
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&s.password));
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&s.password) && !stderr.contains(&s.password));
    let journal = std::fs::read_to_string(dir.join("journal.json")).unwrap();
    assert!(journal.contains("\"done\""), "{journal}");

    // restore the classic way: roles, schema, data (triggers off), into an empty database
    let tgt = common::fresh_db(&s.target, "bk_rich").await;
    psql_file(&s.target, &dir.join("roles.sql"), false);
    let schema_errors = psql_file(&tgt, &dir.join("schema.sql"), false);
    assert!(!schema_errors.contains("ERROR"), "schema.sql restores cleanly: {schema_errors}");
    psql_file(&tgt, &dir.join("data.sql"), true);

    // verify: exactly what --no-owner --no-privileges and split dumps lose, and nothing else
    let (source, target) = (common::spec("source", &src), common::spec("target", &tgt));
    let opts = VerifyOptions { checksums: true, workers: 2 };
    let r = verify(&source, &target, &Default::default(), opts).await.unwrap();
    let lost: BTreeSet<&str> = r.differences.iter().map(|d| d.class.as_str()).collect();
    let implied: BTreeSet<&str> =
        // (a large object's owner and grants are lost with the others; its bytes are not)
        ["owners", "grants", "default_privileges", "roles", "materialized_views", "rows", "large_objects"]
            .into_iter()
            .collect();
    assert!(lost.is_subset(&implied), "unexpected losses: {:#?}", r.differences);
    assert!(lost.contains("owners") && lost.contains("grants"), "{lost:?}");
    for d in r.differences.iter().filter(|d| ["materialized_views", "rows"].contains(&d.class.as_str())) {
        assert_eq!(d.name, "energy.daily_energy", "only the never-refreshed materialized view: {d:?}");
    }
    for d in r.differences.iter().filter(|d| d.class == "roles") {
        // a role only the lost owners used: it exists on the target but nothing there uses it
        assert_eq!(d.name, "pgshift_owner", "{d:?}");
    }

    // after-data.sql (owners, privileges, refreshes from the archive): nothing left
    psql_file(&tgt, &dir.join("after-data.sql"), false);
    let r = verify(&source, &target, &Default::default(), opts).await.unwrap();
    assert!(r.clean, "after after-data.sql: {:#?}", r.differences);
    tokio::join!(common::drop_db(&s.source, "bk_rich"), common::drop_db(&s.target, "bk_rich"));
}

fn environ_has(pid: &str, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle))
}

/// Processes whose environment names this database: pgshift's children carry it in PGDATABASE.
fn processes_for(db: &str) -> Vec<String> {
    let needle = format!("PGDATABASE={db}").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()) && environ_has(pid, &needle))
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok().map(|c| format!("{pid}: {c:?}")))
        .collect()
}

/// A database with a table and one large object, and a session holding pg_largeobject: the
/// inventory never reads it, but pg_dump's data dumps wait for it when they save the large object,
/// so pg_dump is surely running, server-side, until the holder lets go (ROLLBACK).
async fn source_with_held_large_object(server: &str, db: &str) -> (String, tokio_postgres::Client) {
    let src = common::fresh_db(server, db).await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000); \
             SELECT lo_from_bytea(0, 'a large object')",
        )
        .await
        .unwrap();
    let holder = common::connect(&src).await;
    holder.batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_largeobject IN ACCESS EXCLUSIVE MODE").await.unwrap();
    (src, holder)
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_during_pg_dump_leaves_no_process_no_session_and_no_manifest() {
    let s = common::servers();
    let db = "bk_cancel";
    let (src, holder) = source_with_held_large_object(&s.source, db).await;

    let base = tempfile::tempdir().unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["backup", "--source", &src, "--json", "--bin-dir", &bin_dir(), "--dir"])
        .arg(base.path())
        .env("PGPASSWORD", &s.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // wait until a pg_dump of this run is blocked on the lock, server-side
    let admin = common::connect(&s.source).await;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                   AND application_name LIKE 'pgshift backup %' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        let n: i64 = admin.query_one(waiting, &[&db]).await.unwrap().get(0);
        if n > 0 && lines.iter().any(|l| l.contains("saving large objects")) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "pgshift ended before pg_dump blocked: {lines:#?}");
        assert!(Instant::now() < deadline, "pg_dump never blocked on the lock: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!processes_for(db).is_empty(), "pg_dump processes are visible while running");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "pgshift did not stop within 30 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");

    assert!(processes_for(db).is_empty(), "child processes left: {:?}", processes_for(db));
    // pgshift waits for the sessions it ended; a short grace covers the server's own bookkeeping
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'pgshift%'";
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n: i64 = admin.query_one(sessions, &[&db]).await.unwrap().get(0);
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} server session(s) of the cancelled run are left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = run_dir(base.path());
    assert!(!dir.join("manifest.json").exists(), "no manifest claims completeness");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".partial"), "partial file left: {name}");
        assert_ne!(name, "data.sql");
        assert_ne!(name, "full.dump");
    }
    let journal = std::fs::read_to_string(dir.join("journal.json")).unwrap();
    assert!(journal.contains("\"cancelled\""), "{journal}");

    holder.batch_execute("ROLLBACK").await.unwrap();
    common::drop_db(&s.source, db).await;
}

fn assert_one_error_line(out: &std::process::Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr}");
    assert!(lines[0].starts_with("pgshift: ") && lines[0].contains(needle), "expected {needle:?}: {stderr}");
    assert!(lines[0].contains("(fix: "), "a fix is given: {stderr}");
    stderr
}

#[test]
fn a_pg_dump_older_than_the_server_is_refused_before_anything_is_written() {
    let s = common::servers();
    let old = Path::new("/usr/lib/postgresql/15/bin");
    assert!(
        old.join("pg_dump").exists(),
        "this test needs the host's PostgreSQL 15 client (apt install postgresql-client-15), older than the 17 test server"
    );
    let base = tempfile::tempdir().unwrap();
    for json in [false, true] {
        let mut cmd = common::pgshift();
        cmd.args(["backup", "--source", &s.source, "--bin-dir"]).arg(old).arg("--dir").arg(base.path());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_one_error_line(&out, 2, "older than the source server (PostgreSQL 17)");
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0, "no backup directory left behind");
    }
}

/// A tmpfs mounted for one test and unmounted when dropped (tests run as root, as CI does).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir.path()).status().unwrap();
        assert!(st.success(), "mount -t tmpfs failed: these tests need root (as `bash tests/env/test.sh` runs)");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_read_only_directory_is_one_clear_error() {
    let s = common::servers();
    let ro = Tmpfs::mount("ro,size=1m");
    let out = common::pgshift()
        .args(["backup", "--source", &s.source, "--bin-dir", &bin_dir(), "--dir"])
        .arg(ro.0.path().join("backups"))
        .output()
        .unwrap();
    assert_one_error_line(&out, 2, "read-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_one_clear_error_and_leaves_nothing_that_looks_complete() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "bk_full").await;
    let small = Tmpfs::mount("size=96k");
    let out = common::pgshift()
        .args(["backup", "--source", &src, "--json", "--bin-dir", &bin_dir(), "--dir"])
        .arg(small.0.path())
        .output()
        .unwrap();
    assert_one_error_line(&out, 3, "no space left writing");
    let dir = run_dir(small.0.path());
    assert!(!dir.join("manifest.json").exists());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".partial"), "partial file left: {name}");
    }
    let journal = std::fs::read_to_string(dir.join("journal.json")).unwrap();
    assert!(journal.contains("\"failed\"") && journal.contains("no space left"), "{journal}");
    common::drop_db(&s.source, "bk_full").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_source_connection_dropped_mid_backup_fails_clearly_with_no_manifest() {
    let s = common::servers();
    let db = "bk_dropped";
    let (src, holder) = source_with_held_large_object(&s.source, db).await;
    let base = tempfile::tempdir().unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["backup", "--source", &src, "--bin-dir", &bin_dir(), "--dir"])
        .arg(base.path())
        .env("PGPASSWORD", &s.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let admin = common::connect(&s.source).await;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                   AND application_name LIKE 'pgshift backup %' AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while admin.query_one(waiting, &[&db]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "pg_dump never blocked on the lock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the network drops the source: every session of the backup ends, server-side
    let dropped: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name LIKE 'pgshift backup %') t",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dropped > 0);
    holder.batch_execute("ROLLBACK").await.unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pgshift: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("(fix: "), "{stderr}");
    let dir = run_dir(base.path());
    assert!(!dir.join("manifest.json").exists(), "no manifest claims a complete backup");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".partial"), "partial file left: {name}");
    }
    let journal = std::fs::read_to_string(dir.join("journal.json")).unwrap();
    assert!(journal.contains("\"failed\""), "{journal}");
    common::drop_db(&s.source, db).await;
}

//! Faults injected into a headless `pgshift run` on the real servers and the real Docker engine:
//! Ctrl-C while a stage's child tool runs (checked against the process table and the servers'
//! sessions, then resumed to a clean verify), and the target container stopped during the schema
//! stage. Each fault is made deterministic with a lock that holds the stage at a known point.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BASE_IMAGE: &str = "pgshift-test/timescaledb-pgvector:17";

fn spawn_run(plan: &Path) -> (Child, Receiver<String>) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"])
        .env("PGPASSWORD", common::servers().password)
        .env_remove("PGSHIFT_SOURCE")
        .env_remove("PGSHIFT_TARGET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn drain(rx: &Receiver<String>, lines: &mut Vec<String>) {
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
}

fn started(lines: &[String], stage: &str) -> bool {
    let needle = format!("\"event\":\"stage_started\",\"stage\":\"{stage}\"");
    lines.iter().any(|l| l.contains(&needle))
}

/// Waits for the child to exit (at most `limit`); returns its exit code and stderr.
fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgshift did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// Sessions of `db` on the server whose application name matches `like` and that wait on a lock.
async fn waiting_on_lock(admin: &tokio_postgres::Client, db: &str, like: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2 \
             AND wait_event_type = 'Lock'",
            &[&db, &like],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every process as (pid, parent, start time in clock ticks), from /proc/*/stat.
fn process_table() -> Vec<(u32, u32, u64)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // after the command name (which may hold spaces and parentheses): state, ppid, ...
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some((pid, fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
        })
        .collect()
}

/// The processes whose parent chain leads to `root`, as (pid, start time).
fn descendants(root: u32) -> BTreeSet<(u32, u64)> {
    let table = process_table();
    let mut found: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, start) in &table {
            if ppid == parent && found.insert((pid, start)) {
                parents.push(pid);
            }
        }
    }
    found
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes whose environment carries one of these libpq settings (pgshift's children carry the
/// database and the stage's application name there).
fn processes_with_env(entries: &[String]) -> Vec<String> {
    process_table()
        .into_iter()
        .filter(|(pid, ..)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| entries.iter().any(|e| e.as_bytes() == v)))
        })
        .map(|(pid, ..)| format!("{pid}: {}", command_line(pid)))
        .collect()
}

/// The one run directory under the plan's backup directory.
fn run_dir(backups: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(backups).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
    dirs[0].clone()
}

fn journal_status(dir: &Path, stage: &str) -> String {
    let text = std::fs::read_to_string(dir.join("journal.json")).unwrap();
    let journal: serde_json::Value = serde_json::from_str(&text).unwrap();
    journal["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {stage} in the journal: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_pg_restore_runs_leaves_no_process_no_session_and_the_rerun_resumes_clean() {
    let s = common::servers();
    let (src_db, tgt_db) = ("fault_ctrlc", "fault_ctrlc_target");
    let src = common::fresh_db(&s.source, src_db).await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE public.big (id int PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO public.big SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 20000) i; \
             CREATE INDEX big_payload_idx ON public.big (payload); \
             CREATE TABLE public.small (id int PRIMARY KEY); INSERT INTO public.small VALUES (1)",
        )
        .await
        .unwrap();
    common::drop_db(&s.target, tgt_db).await;
    let tgt = common::url_for(&s.target, tgt_db);
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[data]\njobs = 1\n");
    let (mut child, rx) = spawn_run(&plan);
    let pid = child.id();

    // Hold the stages at a known point. Once the backup is done, a lock on the source's small
    // table stalls the data stage after it committed the big table (one worker, largest first);
    // then a lock on the target's big table makes the post-data stage's pg_restore wait on its
    // first index of it: pg_restore is surely running when Ctrl-C comes.
    let source_admin = common::connect(&s.source).await;
    let target_admin = common::connect(&s.target).await;
    let source_holder = common::connect(&src).await;
    // asked before they lock: the holders' last statement is what the waits must show
    let pid_sql = "SELECT pg_backend_pid()";
    let source_pid: i32 = source_holder.query_one(pid_sql, &[]).await.unwrap().get(0);
    let mut target_pid = 0;
    let mut target_holder = None;
    // each wait is reported as it happens, with the session that holds the lock (pid, statement)
    let reported = |lines: &[String], stage: &str, pid: i32, statement: &str| {
        lines.iter().any(|l| {
            l.contains("\"event\":\"waits\"")
                && l.contains(&format!("\"stage\":\"{stage}\""))
                && l.contains(&format!("\"blocker\":\"pid {pid} ("))
                && l.contains(statement)
        })
    };
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut source_held = false;
    loop {
        drain(&rx, &mut lines);
        assert!(child.try_wait().unwrap().is_none(), "the run ended early: {lines:#?}");
        assert!(Instant::now() < deadline, "the run never reached pg_restore of the post-data stage: {lines:#?}");
        if !source_held && started(&lines, "schema") {
            source_holder.batch_execute("BEGIN; LOCK TABLE public.small IN ACCESS EXCLUSIVE MODE").await.unwrap();
            source_held = true;
        }
        if source_held && target_holder.is_none() {
            let progress = std::fs::read_dir(dir.path().join("backups"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("data-progress.json")).ok())
                .unwrap_or_default();
            if progress.contains("public.big")
                && waiting_on_lock(&source_admin, src_db, "pgshift data %").await > 0
                && reported(&lines, "data", source_pid, "LOCK TABLE public.small")
            {
                let holder = common::connect(&tgt).await;
                target_pid = holder.query_one(pid_sql, &[]).await.unwrap().get(0);
                holder.batch_execute("BEGIN; LOCK TABLE public.big IN ACCESS EXCLUSIVE MODE").await.unwrap();
                target_holder = Some(holder);
                source_holder.batch_execute("ROLLBACK").await.unwrap();
            }
        }
        if target_holder.is_some() && waiting_on_lock(&target_admin, tgt_db, "pgshift post-data %").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reported(&lines, "post-data", target_pid, "LOCK TABLE public.big IN ACCESS EXCLUSIVE MODE") {
        assert!(Instant::now() < deadline, "the post-data wait was not reported: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drain(&rx, &mut lines);
    }
    assert!(lines.iter().any(|l| l.contains("\"event\":\"waits\"") && l.contains("\"wait\":\"Lock relation\"")));
    let children = descendants(pid);
    let tools: Vec<String> = children.iter().map(|(p, _)| command_line(*p)).collect();
    assert!(tools.iter().any(|c| c.contains("pg_restore")), "pg_restore runs under pgshift: {tools:#?}");
    let env_marks = vec![format!("PGDATABASE={src_db}"), format!("PGDATABASE={tgt_db}")];
    assert!(!processes_with_env(&env_marks).is_empty(), "the tool carries the target database in its environment");

    // Ctrl-C
    let signalled = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(30));
    println!(
        "Ctrl-C during post-data: exit {code:?} after {:.1}s; {} child process(es) of pgshift before: {tools:?}",
        signalled.elapsed().as_secs_f64(),
        children.len()
    );
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("cancelled; run it again to resume"), "{stderr}");

    // the process table: none of pgshift's children (same pid and start time) is left, and no
    // process carries the test databases in its environment
    let table: BTreeSet<(u32, u64)> = process_table().into_iter().map(|(p, _, t)| (p, t)).collect();
    let left: Vec<String> =
        children.iter().filter(|c| table.contains(c)).map(|(p, _)| format!("{p}: {}", command_line(*p))).collect();
    assert!(left.is_empty(), "children of the cancelled run are left: {left:#?}");
    assert!(processes_with_env(&env_marks).is_empty(), "{:#?}", processes_with_env(&env_marks));
    // the servers: no session of the run is left (a short grace for the server's bookkeeping)
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'pgshift %'";
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a: i64 = source_admin.query_one(sessions, &[&src_db]).await.unwrap().get(0);
        let b: i64 = target_admin.query_one(sessions, &[&tgt_db]).await.unwrap().get(0);
        if a + b == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{a} source and {b} target session(s) of the cancelled run are left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the journal: the stages before are done, post-data cancelled
    let run = run_dir(&dir.path().join("backups"));
    for stage in ["backup", "environment", "schema", "data"] {
        assert_eq!(journal_status(&run, stage), "done", "{stage}");
    }
    assert_eq!(journal_status(&run, "post-data"), "cancelled");

    // the rerun resumes at post-data and ends verified clean
    target_holder.unwrap().batch_execute("ROLLBACK").await.unwrap();
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for stage in ["backup", "environment", "schema", "data"] {
        assert!(stdout.contains(&format!("\"stage\":\"{stage}\",\"status\":\"skipped\"")), "{stage} skipped: {stdout}");
    }
    assert!(stdout.contains("\"stage\":\"verify\",\"status\":\"done\""), "{stdout}");
    let r = pgshift::verify::verify(
        &common::spec("source", &src),
        &common::spec("target", &tgt),
        &Default::default(),
        pgshift::verify::VerifyOptions { checksums: true, workers: 2 },
    )
    .await
    .unwrap();
    assert!(r.clean, "{:#?}", r.differences);
    tokio::join!(common::drop_db(&s.source, src_db), common::drop_db(&s.target, tgt_db));
}

/// Removes the test's container, its volume and image however the test ends.
struct ContainerCleanup {
    name: String,
    image: String,
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.name]).output();
        let _ = Command::new("docker").args(["volume", "rm", "-f", &format!("{}-data", self.name)]).output();
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_target_container_stopped_during_the_schema_stage_is_one_clear_error() {
    let image = Command::new("docker").args(["image", "inspect", BASE_IMAGE]).output().expect("docker CLI");
    assert!(image.status.success(), "the Docker engine must answer and hold {BASE_IMAGE} (tests/env/build-root.sh)");
    let s = common::servers();
    let src_db = "fault_stop";
    let src = common::fresh_db(&s.source, src_db).await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE public.meter (id bigint NOT NULL, taken_at timestamptz NOT NULL, kwh real, \
               PRIMARY KEY (id, taken_at)); \
             INSERT INTO public.meter SELECT i, '2026-01-01'::timestamptz + make_interval(mins => i), i \
               FROM generate_series(1, 500) i",
        )
        .await
        .unwrap();
    let name = "pgshift-test-fault-stop";
    let image = "pgshift-test/target:faultstop";
    let _cleanup = ContainerCleanup { name: name.into(), image: image.into() };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/docker/Dockerfile");
    let plan = dir.path().join("plan.toml");
    // the planned hypertable has no chunk interval: the schema stage measures the source table
    // after the schema is restored — where a lock on it holds the stage
    std::fs::write(
        &plan,
        format!(
            "[source]\nconnection = \"{src}\"\n[target]\ndatabase = \"fault_stop\"\n[target.container]\n\
             name = \"{name}\"\nimage = \"{image}\"\ndockerfile = \"{}\"\nport = {port}\npassword_file = \"{}\"\n\
             timeout_seconds = 120\n[backup]\ndir = \"{}\"\nbin_dir = \"{}\"\n\
             [[hypertables]]\ntable = \"public.meter\"\ntime_column = \"taken_at\"\n",
            dockerfile.display(),
            dir.path().join("target.pgpass").display(),
            dir.path().join("backups").display(),
            std::env::var("PGSHIFT_TEST_BIN_DIR").expect("PGSHIFT_TEST_BIN_DIR: source tests/env state/env.sh"),
        ),
    )
    .unwrap();

    let (mut child, rx) = spawn_run(&plan);
    let source_admin = common::connect(&s.source).await;
    let holder = common::connect(&src).await;
    let mut lines = Vec::new();
    let mut held = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        drain(&rx, &mut lines);
        assert!(child.try_wait().unwrap().is_none(), "the run ended early: {lines:#?}");
        assert!(Instant::now() < deadline, "the schema stage never reached the held table: {lines:#?}");
        // the backup has read the table; nothing reads it again before the schema stage measures it
        if !held && started(&lines, "environment") {
            holder.batch_execute("BEGIN; LOCK TABLE public.meter IN ACCESS EXCLUSIVE MODE").await.unwrap();
            held = true;
        }
        if held && started(&lines, "schema") && waiting_on_lock(&source_admin, src_db, "pgshift schema %").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // the container stops while the schema stage runs; then the stage goes on into it
    docker(&["stop", "--time", "10", name]);
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", name]), "false");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(60));
    drain(&rx, &mut lines);
    assert_eq!(code, Some(3), "{stderr}\n{lines:#?}");
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let line = errors[0];
    println!("container stopped during the schema stage: {line}");
    assert!(line.starts_with("pgshift: ") && line.contains("(fix: "), "{line}");
    assert!(
        line.contains(&format!("target postgres@127.0.0.1:{port}/fault_stop was lost")),
        "names the target: {line}"
    );
    assert!(line.contains("pgshift env status"), "the fix says how to look at the container: {line}");
    let run = run_dir(&dir.path().join("backups"));
    assert_eq!(journal_status(&run, "schema"), "failed");
    assert_eq!(journal_status(&run, "environment"), "done");
    assert!(
        lines.iter().any(|l| l.contains("\"stage\":\"schema\",\"status\":\"failed\"")),
        "the schema stage's own event says failed: {lines:#?}"
    );

    // the container started again, the rerun resumes at the schema stage and ends verified clean
    docker(&["start", name]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while docker(&["inspect", "--format", "{{.State.Health.Status}}", name]) != "healthy" {
        assert!(Instant::now() < deadline, "the restarted container never became healthy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"stage\":\"environment\",\"status\":\"skipped\""), "{stdout}");
    assert!(stdout.contains("\"stage\":\"verify\",\"status\":\"done\""), "{stdout}");

    // clean up through pgshift itself: the container and its volume go with the flags
    let out = common::pgshift().args(["env", "down", "--name", name, "--yes", "--remove-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let gone = Command::new("docker").args(["container", "inspect", name]).output().unwrap();
    assert!(!gone.status.success(), "the container was removed");
    common::drop_db(&s.source, src_db).await;
}

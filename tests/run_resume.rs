//! The target server dies during the data stage: the run fails with a clear message, the next run
//! resumes where it stopped and ends verified clean — no row lost, none twice. Alone in its test
//! binary because it stops the shared target server (cargo runs test binaries one at a time).

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// pg_ctl for the target cluster, run inside the test root as postgres.
fn target_ctl(args: &[&str]) {
    let root = std::env::var("PGSHIFT_TEST_ROOT").expect("PGSHIFT_TEST_ROOT: source tests/env state/env.sh");
    let st = Command::new("chroot")
        .args(["--userspec=postgres:postgres", &root, "/usr/lib/postgresql/17/bin/pg_ctl", "-D", "/srv/pgshift/target"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pg_ctl {args:?} for the target failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_target_during_the_data_stage_fails_clearly_and_the_rerun_resumes_clean() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "resume_src").await;
    common::drop_db(&s.target, "resume_tgt").await;
    let tgt = common::url_for(&s.target, "resume_tgt");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[data]\njobs = 1\n");

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"])
        .env("PGPASSWORD", &s.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // once the schema stage starts (the backup is done), hold the smallest table on the source: one
    // worker copies the largest first (the hypertable, chunk by chunk), so by the time it waits on
    // this one the hypertable's chunks and most tables are committed — mid-stage
    let holder = common::connect(&src).await;
    let admin = common::connect(&s.source).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    let mut held = false;
    loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if !held && lines.iter().any(|l| l.contains("\"stage_started\",\"stage\":\"schema\"")) {
            holder.batch_execute("BEGIN; LOCK TABLE energy.tariffs_kr IN ACCESS EXCLUSIVE MODE").await.unwrap();
            held = true;
        }
        if held {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'resume_src' \
                     AND application_name LIKE 'pgshift data %' AND wait_event_type = 'Lock'",
                    &[],
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

    // the target dies; the held table is released so the copy runs into the dead target
    target_ctl(&["stop", "-m", "immediate", "-w"]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    target_ctl(&["start", "-w", "-t", "60", "-l", "/srv/pgshift/target/server.log"]);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.contains("copying energy.tariffs_kr failed"), "{stderr}");
    let progress_file = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("data-progress.json");
    let done = std::fs::read_to_string(&progress_file).unwrap();
    assert!(
        done.contains("energy.readings#_timescaledb_internal."),
        "hypertable chunks were committed piece by piece: {done}"
    );
    assert!(line.contains("run again to resume"), "the message says how to go on: {stderr}");

    // the rerun resumes: finished tables are kept, the interrupted one is loaded again from scratch
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"stage\":\"backup\",\"status\":\"skipped\""), "the backup is not redone: {text}");
    assert!(text.contains("resuming: "), "{text}");
    assert!(!text.contains("energy.readings chunk"), "no committed chunk is copied twice: {text}");

    // no row lost, none twice: exact counts and the checksummed verify the run ended with
    let count = "SELECT count(*) FROM energy.readings";
    let (a, b) = tokio::join!(common::connect(&src), common::connect(&tgt));
    let (na, nb): (i64, i64) =
        (a.query_one(count, &[]).await.unwrap().get(0), b.query_one(count, &[]).await.unwrap().get(0));
    assert_eq!(na, nb);
    assert!(text.contains("\"stage\":\"verify\",\"status\":\"done\""));
    tokio::join!(common::drop_db(&s.source, "resume_src"), common::drop_db(&s.target, "resume_tgt"));
}

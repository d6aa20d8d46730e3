//! The target server dies during the data stage: the run fails with a clear message, the next run
//! resumes where it stopped and ends verified clean — no row lost, none twice. Alone in its test
//! binary because it stops the shared target server (cargo runs test binaries one at a time).

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_target_during_the_data_stage_fails_clearly_and_the_rerun_resumes_clean() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "resume_src").await;
    common::drop_db(&s.target, "resume_tgt").await;
    let tgt = common::url_for(&s.target, "resume_tgt");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[data]\njobs = 1\n");

    // once the schema stage starts (the backup is done), hold the smallest table on the source: one
    // worker copies the largest first (the hypertable, chunk by chunk), so by the time it waits on
    // this one the hypertable's chunks and most tables are committed — mid-stage
    let run = common::run_held_at(&plan, &src, "resume_src", "energy.tariffs_kr").await;
    // the target dies; the held table is released so the copy runs into the dead target
    let (code, stderr) = run.kill_the_target().await;
    assert_eq!(code, Some(3), "{stderr}");
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

//! The target server dies during the data stage of a TimescaleDB source: chunks already committed
//! (their compressed rows staged as they are) are kept, the rerun copies only the rest, and the
//! TimescaleDB stage attaches every staged compressed part — from both runs — ending verified clean
//! with the source's chunks compressed alike. Alone in its test binary because it stops the shared
//! target server (cargo runs test binaries one at a time).

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn a_timescaledb_copy_cut_off_by_the_target_resumes_and_attaches_every_staged_chunk() {
    let s = common::servers();
    let src = common::timescale_db(&s.source, "resume_ts").await;
    common::drop_db(&s.target, "resume_ts_target").await;
    let tgt = common::url_for(&s.target, "resume_ts_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[data]\njobs = 1\n");

    // the devices (a small table, copied after the chunks) held on the source; the target dies
    let run = common::run_held_at(&plan, &src, "resume_ts", "metrics.devices").await;
    let (code, stderr) = run.kill_the_target().await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.lines().last().unwrap_or_default().contains("run again to resume"), "{stderr}");
    let run_dir = std::fs::read_dir(dir.path().join("backups")).unwrap().next().unwrap().unwrap().path();
    let staged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("compressed-chunks.json")).unwrap()).unwrap();
    let before = staged["chunks"].as_array().unwrap().iter().filter(|c| c["staged"].is_object()).count();
    assert!(before > 0, "compressed chunks were staged before the target died: {staged}");

    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("resuming: "), "{text}");
    // the rerun copies only what was not committed, and attaches every staged compressed part
    let copied_again = text.lines().filter(|l| l.contains("compressed part copied as it is")).count();
    assert_eq!(copied_again + before, 33, "each compressed chunk staged once: {text}");
    assert!(text.contains("33 chunk(s) attached compressed as copied, 2 compressed again"), "{text}");
    assert!(text.contains("migration complete and verified clean"), "{text}");
    assert_eq!(common::chunk_states(&src, false).await, common::chunk_states(&tgt, false).await);
    tokio::join!(common::drop_db(&s.source, "resume_ts"), common::drop_db(&s.target, "resume_ts_target"));
}

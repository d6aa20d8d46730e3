//! TimescaleDB as its users run it (the Timescale-licensed build on both test servers): `pgshift
//! run` of a source with compressed hypertables (some chunks partially compressed after late
//! writes), a space-partitioned compressed hypertable, real-time, hierarchical and compressed
//! continuous aggregates, history kept only in an aggregate after drop_chunks, and policies and
//! user jobs (one paused). Nothing may be lost: every row, every chunk compressed as on the source,
//! every bucket, the aggregates' refresh state, every job as it was. Compressed chunks travel in
//! their compressed form, or (`compressed_chunks = "recompress"`) through decompression; verify
//! names a compressed chunk that arrived empty. The server started with the Apache license refuses
//! such a source in the pre-flight.

mod common;

use std::path::{Path, PathBuf};

use pgshift::engine::{Engine, Event, Stage};
use pgshift::stages::timescaledb::TimescaleStage;
use pgshift::timescaledb::jobs::release_jobs;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn one(url: &str, sql: &str) -> String {
    common::strings(url, sql).await.into_iter().next().unwrap_or_default()
}

/// Every job as a DBA reads it (ids aside).
const JOBS: &str = "SELECT format('%s on %s every %s, %s, owner %s, fixed %s from %s, tz %s, config %s',
        j.proc_name, coalesce((SELECT a.view_name::text FROM timescaledb_information.continuous_aggregates a
                               WHERE a.materialization_hypertable_name = j.hypertable_name), j.hypertable_name::text, '-'),
        j.schedule_interval,
        CASE WHEN j.scheduled THEN 'scheduled' ELSE 'paused' END, j.owner, j.fixed_schedule, j.initial_start,
        coalesce(b.timezone, '-'), j.config - 'hypertable_id' - 'mat_hypertable_id')
    FROM timescaledb_information.jobs j JOIN _timescaledb_config.bgw_job b ON b.id = j.job_id
    WHERE j.job_id >= 1000 ORDER BY 1";

/// `pgshift run`: its exit code, all it printed (the stages' lines go to stderr), and stderr alone.
fn run(plan: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = common::pgshift();
    cmd.args(["run", "--plan", plan.to_str().unwrap(), "--yes"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)), stderr)
}

fn run_dir(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("backups")).unwrap().flatten().map(|e| e.path()).next().expect("a run directory")
}

/// The source and its migrated target hold the same chunks in the same states, the same rows,
/// aggregates at the same watermark and the same jobs.
async fn assert_same_timescaledb(src: &str, tgt: &str) {
    let states = common::chunk_states(src, true).await;
    assert_eq!(states, common::chunk_states(tgt, true).await, "chunk states");
    assert!(
        states.iter().any(|s| s.starts_with("metrics.readings: 30 chunks, 20 compressed, 4 partially")),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s.starts_with("metrics.flows: 24 chunks, 12 compressed")), "{states:?}");
    assert!(states.iter().any(|s| s.starts_with("metrics.readings_hourly: 4 chunks, 1 compressed")), "{states:?}");
    for sql in [
        // sums of floats rounded: their last digits depend on the order rows are added in
        "SELECT format('%s %s %s', count(*), round(sum(value)::numeric, 6), sum(status)) FROM metrics.readings",
        "SELECT format('%s %s', count(*), round(sum(litres)::numeric, 2)) FROM metrics.flows",
        "SELECT format('%s %s %s', count(*), sum(samples), max(max_value)) FROM metrics.readings_hourly",
        "SELECT format('%s %s', count(*), sum(samples)) FROM metrics.readings_daily",
        "SELECT format('%s %s %s', count(*), min(day), sum(events)) FROM metrics.events_daily",
        "SELECT note FROM metrics.readings WHERE device_id = 5 AND time = '2026-01-05 10:00:00+00'",
        "SELECT format('%s %s', count(alarm), count(*) FILTER (WHERE alarm IS NULL)) FROM metrics.readings",
        "SELECT format('%s %s', count(*), string_agg(DISTINCT coalesce(unit, 'NULL'), ',')) FROM metrics.meters",
    ] {
        assert_eq!(one(src, sql).await, one(tgt, sql).await, "{sql}");
    }
    assert_eq!(common::watermarks(src).await, common::watermarks(tgt).await, "watermarks");
    assert_eq!(common::strings(src, JOBS).await, common::strings(tgt, JOBS).await, "jobs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timescale_source_arrives_whole_with_compressed_chunks_copied_as_they_are() {
    let s = common::servers();
    let src = common::timescale_db(&s.source, "tsl_as_is").await;
    common::drop_db(&s.target, "tsl_as_is_target").await;
    let tgt = common::url_for(&s.target, "tsl_as_is_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");

    let (code, stdout, stderr) = run(&plan, false);
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    let compressed: i64 = one(&src, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE is_compressed")
        .await
        .parse()
        .unwrap();
    assert_eq!(compressed, 35, "20 readings, 12 flows, 2 meters, 1 hourly aggregate chunk");
    // the meters' chunks hold a "missing" value (a column added with a default after compression):
    // their compressed rows mean it only there, so they come through decompression
    assert!(stdout.contains("compressed chunks: 33 copied as they are, 2 read through decompression"), "{stdout}");
    assert!(stdout.contains("33 chunk(s) attached compressed as copied, 2 compressed again"), "{stdout}");
    assert!(stdout.contains("3 continuous aggregate(s) with their refresh state"), "{stdout}");
    assert!(stdout.contains("6 job(s), 5 held until verify passes"), "{stdout}");
    assert!(stdout.contains("5 TimescaleDB job(s) released"), "{stdout}");
    assert!(stdout.contains("migration complete and verified clean"), "{stdout}");
    assert!(!stdout.contains("CALL refresh_continuous_aggregate"), "aggregates are copied, never recomputed: {stdout}");

    assert_same_timescaledb(&src, &tgt).await;

    // the TimescaleDB stage run again (a resumed run whose stage failed late) changes nothing:
    // settings found set, chunks found compressed, the refresh state written again, the jobs it
    // made taken over rather than made twice
    let jobs_before = common::strings(&tgt, JOBS).await;
    let stage = TimescaleStage::new(common::spec("source", &src), common::spec("target", &tgt), true, vec![]);
    let (tx, mut rx) = mpsc::channel(10_000);
    let mut engine = Engine::new(tx, CancellationToken::new());
    engine.set_run_dir(run_dir(dir.path()));
    let stages: [&dyn Stage; 1] = [&stage];
    let outcome = engine.run(&stages, None).await;
    drop(engine);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert!(outcome.succeeded(), "{:?} {events:#?}", outcome.error);
    let taken_over = events
        .iter()
        .filter(|e| matches!(e, Event::Output { line, .. } if line.contains("made by an earlier attempt")))
        .count();
    assert_eq!(taken_over, 6, "{events:#?}");
    assert_eq!(common::strings(&tgt, JOBS).await, jobs_before);
    // held again until a verify passes: released here as the verify stage would
    let released = release_jobs(&common::spec("target", &tgt), &run_dir(dir.path())).await.unwrap();
    assert_eq!(released, 5);
    assert_same_timescaledb(&src, &tgt).await;
    // the history only the aggregate holds: its buckets start before the oldest raw row
    let (first_bucket, first_raw) = (
        one(&tgt, "SELECT min(day)::text FROM metrics.events_daily").await,
        one(&tgt, "SELECT min(at)::text FROM metrics.events").await,
    );
    assert!(first_bucket < first_raw, "{first_bucket} vs {first_raw}");
    // nothing ran on the target during the run; released jobs run when the source's would
    assert_eq!(
        one(
            &tgt,
            "SELECT coalesce(sum(total_runs), 0)::text FROM timescaledb_information.job_stats WHERE job_id >= 1000"
        )
        .await,
        "0"
    );
    assert_eq!(
        common::strings(&tgt, "SELECT next_start::text FROM timescaledb_information.job_stats WHERE job_id >= 1000 AND next_start IS NOT NULL ORDER BY 1").await,
        common::strings(&src, "SELECT next_start::text FROM timescaledb_information.job_stats WHERE job_id >= 1000 AND next_start IS NOT NULL ORDER BY 1").await
    );
    // the verify report compared the chunks one by one
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir(dir.path()).join("verify.json")).unwrap()).unwrap();
    let chunks = report["classes"].as_array().unwrap().iter().find(|c| c["class"] == "chunks").expect("chunks class");
    assert_eq!(chunks["source"], 76);
    assert_eq!(chunks["target"], 76);

    // the same refresh on both sides does the same work: the pending invalidation (a row updated
    // after the last refresh) is applied on both, nothing else is recomputed away
    for url in [&src, &tgt] {
        common::connect(url)
            .await
            .batch_execute(
                "CALL refresh_continuous_aggregate('metrics.readings_hourly', NULL, '2026-01-28 00:00:00+00')",
            )
            .await
            .unwrap();
    }
    let hourly = "SELECT format('%s %s %s', count(*), sum(samples), max(max_value)) FROM metrics.readings_hourly";
    assert_eq!(one(&src, hourly).await, one(&tgt, hourly).await);
    assert!(one(&tgt, hourly).await.ends_with(" 1000"), "the late update is in: {}", one(&tgt, hourly).await);

    // a compressed chunk whose compressed rows went missing is named by verify, not only counted
    let chunk = one(
        &tgt,
        "SELECT format('%I.%I', cc.schema_name, cc.table_name) FROM _timescaledb_catalog.chunk c
         JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
         JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
         WHERE h.table_name = 'readings' ORDER BY c.id LIMIT 1 OFFSET 7",
    )
    .await;
    common::connect(&tgt).await.batch_execute(&format!("DELETE FROM {chunk}")).await.unwrap();
    let json = dir.path().join("lossy.json");
    let out = common::pgshift()
        .args(["verify", "--source", &src, "--target", &tgt, "--checksums", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let named: Vec<String> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "rows")
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or("").to_string();
            format!("{} | {} | {}", text("name"), text("source"), text("target"))
        })
        .collect();
    assert!(
        named
            .iter()
            .any(|d| d.contains("metrics.readings chunk \"time\" [2026-01-08 00:00:00+00, 2026-01-09 00:00:00+00)")
                && d.contains("5760 rows")
                && d.contains("| 0 rows")),
        "the emptied chunk is named with both counts: {named:#?}"
    );
    tokio::join!(common::drop_db(&s.source, "tsl_as_is"), common::drop_db(&s.target, "tsl_as_is_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_chunks_can_travel_through_decompression_and_are_compressed_again() {
    let s = common::servers();
    let src = common::timescale_db(&s.source, "tsl_recompress").await;
    common::drop_db(&s.target, "tsl_recompress_target").await;
    let tgt = common::url_for(&s.target, "tsl_recompress_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "[data]\ncompressed_chunks = \"recompress\"\n");

    let (code, stdout, stderr) = run(&plan, false);
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    assert!(stdout.contains("compressed chunks: 0 copied as they are, 35 read through decompression"), "{stdout}");
    assert!(stdout.contains("0 chunk(s) attached compressed as copied, 35 compressed again"), "{stdout}");
    assert!(
        stdout.contains("read through decompression (compressed again later)"),
        "each chunk says its path: {stdout}"
    );
    // compressed again on the target, a partially compressed chunk is whole again: the states
    // differ only there (rows and everything else are the same)
    assert_eq!(common::chunk_states(&src, false).await, common::chunk_states(&tgt, false).await);
    assert_eq!(common::watermarks(&src).await, common::watermarks(&tgt).await, "watermarks");
    assert_eq!(common::strings(&src, JOBS).await, common::strings(&tgt, JOBS).await, "jobs");
    tokio::join!(common::drop_db(&s.source, "tsl_recompress"), common::drop_db(&s.target, "tsl_recompress_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apache_licensed_target_is_refused_for_a_timescale_source_before_anything_is_written() {
    let s = common::servers();
    let src = common::timescale_db(&s.source, "tsl_to_apache").await;
    common::drop_db(&s.apache, "tsl_to_apache_target").await;
    let tgt = common::url_for(&s.apache, "tsl_to_apache_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");
    let (code, _, stderr) = run(&plan, true);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Apache-only build and cannot hold the source's compression on 4 hypertable(s), 3 continuous aggregate(s), 6 policy/job(s)"),
        "{stderr}"
    );
    let exists = one(&s.apache, "SELECT count(*)::text FROM pg_database WHERE datname = 'tsl_to_apache_target'").await;
    assert_eq!(exists, "0", "nothing written to the target");
    assert!(
        std::fs::read_dir(dir.path().join("backups")).map(|d| d.count()).unwrap_or(0) == 0,
        "no run directory left"
    );
    common::drop_db(&s.source, "tsl_to_apache").await;
}

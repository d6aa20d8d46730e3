//! A source older than the target on both counts, as a DBA who upgrades while moving has it:
//! PostgreSQL 15 with TimescaleDB 2.15.3 (the test environment's old source) into PostgreSQL 17
//! with TimescaleDB 2.19.3. Compressed chunks cannot keep their form across versions: they come
//! through decompression and are compressed again; the aggregates keep their history and refresh
//! state, the jobs stay as they were. Verify compares across the majors without false alarms: the
//! newer TimescaleDB is an upgrade, PostgreSQL 17's MAINTAIN privilege is part of the source's
//! "all privileges", and a view's query is compared as the target deparses it.

mod common;

use std::path::Path;

/// The run's verify report.
fn verify_report(dir: &Path) -> serde_json::Value {
    let run =
        std::fs::read_dir(dir.join("backups")).unwrap().flatten().map(|e| e.path()).next().expect("a run directory");
    serde_json::from_str(&std::fs::read_to_string(run.join("verify.json")).unwrap()).unwrap()
}

/// The only planned difference of a run between these servers: TimescaleDB upgraded.
fn assert_only_the_upgrade(report: &serde_json::Value) {
    let differences = report["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{differences:#?}");
    assert_eq!(differences[0]["class"], "extensions");
    assert_eq!(differences[0]["name"], "timescaledb");
    assert_eq!(differences[0]["allowed"], "upgraded on the target: 2.15.3 → 2.19.3");
    assert_eq!(report["clean"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timescaledb_2_15_source_on_postgresql_15_arrives_whole_on_2_19_and_17() {
    let s = common::servers();
    let src = common::timescale_db(&s.old_source, "old_ts").await;
    assert!(common::strings(&src, "SELECT version()").await[0].starts_with("PostgreSQL 15"));
    common::drop_db(&s.target, "old_ts_target").await;
    let tgt = common::url_for(&s.target, "old_ts_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");

    let (code, out) = common::run_plan(&plan);
    assert_eq!(code, 0, "{out}");
    // another TimescaleDB version: no compressed chunk can keep its form
    assert!(out.contains("compressed chunks: 0 copied as they are, 35 read through decompression"), "{out}");
    assert!(out.contains("0 chunk(s) attached compressed as copied, 35 compressed again"), "{out}");
    assert!(out.contains("checksums (computed here, from COPY text)"), "across majors, rows hashed from text: {out}");
    // the pre-flight says what the move upgrades
    assert!(out.contains("[schema] upgrades PostgreSQL: 15."), "{out}");
    assert!(out.contains("[schema] upgrades timescaledb: 2.15.3 → 2.19.3"), "{out}");
    assert_only_the_upgrade(&verify_report(dir.path()));
    assert_eq!(common::chunk_states(&src, false).await, common::chunk_states(&tgt, false).await);
    assert_eq!(common::watermarks(&src).await, common::watermarks(&tgt).await);
    for sql in [
        "SELECT format('%s %s', count(*), sum(events)) FROM metrics.events_daily",
        "SELECT format('%s %s', count(*), sum(samples)) FROM metrics.readings_hourly",
        "SELECT format('%s %s', count(*), string_agg(DISTINCT coalesce(unit, 'NULL'), ',')) FROM metrics.meters",
        "SELECT string_agg(j, ', ' ORDER BY j) FROM (SELECT format('%s %s %s %s', proc_name, scheduled, schedule_interval, owner) AS j
         FROM timescaledb_information.jobs WHERE job_id >= 1000) x",
    ] {
        assert_eq!(common::strings(&src, sql).await, common::strings(&tgt, sql).await, "{sql}");
    }
    tokio::join!(common::drop_db(&s.old_source, "old_ts"), common::drop_db(&s.target, "old_ts_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rich_fixture_from_postgresql_15_verifies_without_false_alarms() {
    let sql = common::rich_source_sql_without_pgvector();
    let s = common::servers();
    let src = common::db_with(&s.old_source, "old_rich", &sql).await;
    common::drop_db(&s.target, "old_rich_target").await;
    let tgt = common::url_for(&s.target, "old_rich_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");

    let (code, out) = common::run_plan(&plan);
    assert_eq!(code, 0, "{out}");
    let report = verify_report(dir.path());
    assert_only_the_upgrade(&report);
    // what the newer major spells or grants differently was compared, and found equal
    let count = |class: &str| {
        report["classes"].as_array().unwrap().iter().find(|c| c["class"] == class).unwrap()["source"].clone()
    };
    assert_eq!(count("views"), 2);
    assert_eq!(count("materialized_views"), 1);
    assert!(count("grants").as_u64().unwrap() > 20);
    let maintain = common::strings(
        &tgt,
        "SELECT count(*)::text FROM pg_class c, aclexplode(c.relacl) a WHERE a.privilege_type = 'MAINTAIN'",
    )
    .await;
    assert_ne!(maintain, ["0"], "the target's grants do include MAINTAIN: {maintain:?}");
    // and the report says which comparisons were normalized, and how
    let normalized = report["normalized"].as_array().expect("normalized comparisons listed");
    let how = |class: &str| -> Vec<String> {
        normalized.iter().filter(|n| n["class"] == class).map(|n| n["how"].as_str().unwrap().to_string()).collect()
    };
    assert!(how("views").iter().any(|h| h.contains("as the PostgreSQL 17 target deparses")), "{normalized:#?}");
    assert!(how("grants").iter().all(|h| h.contains("MAINTAIN")) && how("grants").len() > 5, "{normalized:#?}");
    let run_dir = std::fs::read_dir(dir.path().join("backups")).unwrap().flatten().next().unwrap().path();
    let markdown = std::fs::read_to_string(run_dir.join("verify.md")).unwrap();
    assert!(markdown.contains("## Compared across versions"), "{markdown}");
    tokio::join!(common::drop_db(&s.old_source, "old_rich"), common::drop_db(&s.target, "old_rich_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_on_the_target_is_named_across_majors() {
    // the source on PostgreSQL 15 + TimescaleDB 2.15, each damaged copy on 17 + 2.19: what the
    // normalizations forgive (MAINTAIN, the deparser's spelling, the extension's upgrade) must not
    // hide a real change
    let s = common::servers();
    let sql = common::rich_source_sql_without_pgvector();
    let src = common::db_with(&s.old_source, "old_mut_src", &sql).await;
    let skip = common::mutations::PGVECTOR_CLASSES;
    let failures = common::mutations::uncaught(&src, &s.target, &sql, "old_mut", skip).await;
    assert!(failures.is_empty(), "changes not named across majors:\n{}", failures.join("\n"));
    common::drop_db(&s.old_source, "old_mut_src").await;
}

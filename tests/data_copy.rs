//! The data stage's fast path on the real servers (`pgshift copy`): hypertable chunks are written
//! straight into the target's chunks when those cover the source's ranges, and routed through the
//! hypertable when they do not; rows land frozen; a second load into the same target replaces
//! rather than doubles. Every case ends with `verify --checksums` rows equal on both sides.

mod common;

/// Two hypertables over five days in one-day chunks: one with built-in types only (binary COPY),
/// one with an enum column (text COPY), plus a plain table.
fn schema(chunk_interval: &str) -> String {
    format!(
        "CREATE EXTENSION IF NOT EXISTS timescaledb;
         CREATE TYPE level AS ENUM ('low', 'high');
         CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, value double precision, note text);
         SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '{chunk_interval}');
         CREATE TABLE alarms (at timestamptz NOT NULL, lvl level, msg text);
         SELECT create_hypertable('alarms', 'at', chunk_time_interval => INTERVAL '{chunk_interval}');
         CREATE TABLE sites (id int PRIMARY KEY, name text);
         CREATE TABLE events (id bigint, body text);"
    )
}

const ROWS: &str = "INSERT INTO readings SELECT '2026-05-01'::timestamptz + make_interval(secs => i * 30), i % 9,
                        i * 0.5, CASE WHEN i % 5 = 0 THEN E'tab\\there, newline\\nthere' END
                      FROM generate_series(0, 14399) i;
                    INSERT INTO alarms SELECT '2026-05-01'::timestamptz + make_interval(mins => i * 7),
                        CASE WHEN i % 2 = 0 THEN 'low' ELSE 'high' END::level, 'alarm ' || i
                      FROM generate_series(0, 1000) i;
                    INSERT INTO sites SELECT i, 'site ' || i FROM generate_series(1, 300) i;
                    INSERT INTO events SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 40000) i;";

async fn source(db: &str) -> String {
    let s = common::servers();
    let url = common::fresh_db(&s.source, db).await;
    common::connect(&url).await.batch_execute(&format!("{}\n{ROWS}", schema("1 day"))).await.unwrap();
    url
}

async fn target(db: &str, chunk_interval: &str) -> String {
    let s = common::servers();
    let url = common::fresh_db(&s.target, db).await;
    common::connect(&url).await.batch_execute(&schema(chunk_interval)).await.unwrap();
    url
}

/// `pgshift copy` with 1 MiB block ranges (`events`, about 5 MiB, goes in pieces); returns its
/// output and its summary line (the stage's "done" line).
fn copy(src: &str, tgt: &str, dir: &std::path::Path) -> (String, String) {
    copy_with_ranges(src, tgt, dir, "1")
}

fn copy_with_ranges(src: &str, tgt: &str, dir: &std::path::Path, range_mib: &str) -> (String, String) {
    let out = common::pgshift()
        .args(["copy", "--source", src, "--target", tgt, "--jobs", "3", "--range-mib", range_mib])
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    let summary = all.lines().find(|l| l.contains("done after")).unwrap_or_else(|| panic!("no summary: {all}"));
    (summary.to_string(), all)
}

/// `verify --checksums --json`: every table's rows and checksum equal on both sides.
fn assert_rows_equal(src: &str, tgt: &str) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    let out = common::pgshift()
        .args(["verify", "--source", src, "--target", tgt, "--checksums", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("verify JSON: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let tables = report["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 4, "{tables:?}");
    for t in tables {
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
        assert!(t["source_checksum"].is_string() && t["source_checksum"] == t["target_checksum"], "{t}");
    }
}

async fn scalar(url: &str, sql: &str) -> i64 {
    common::connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn chunks(url: &str, hypertable: &str) -> i64 {
    scalar(url, &format!("SELECT count(*) FROM show_chunks('{hypertable}')")).await
}

/// Drops the source database `db` and its target `db_target`.
async fn drop_pair(db: &str) {
    let s = common::servers();
    common::drop_db(&s.source, db).await;
    common::drop_db(&s.target, &format!("{db}_target")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_go_straight_into_the_targets_chunks_frozen_and_a_second_load_replaces() {
    let src = source("copy_direct").await;
    let tgt = target("copy_direct_target", "1 day").await;
    let dir = tempfile::tempdir().unwrap();

    let (summary, output) = copy(&src, &tgt, dir.path());
    // the plain table larger than two block ranges went in several, each a line of its own
    let ranges = output.lines().filter(|l| l.contains("public.events blocks ")).count();
    assert!(ranges >= 2, "{output}");
    // 14,400 readings every 30 s span 5 days; 1,001 alarms every 7 min span 5 days (+ a bit)
    let total = chunks(&src, "readings").await + chunks(&src, "alarms").await;
    assert!(
        summary.contains(&format!("hypertable chunks: {total} written directly, 0 through the hypertable")),
        "{summary}"
    );
    assert_rows_equal(&src, &tgt);
    // the parents hold nothing; the target has exactly the source's chunk count
    assert_eq!(scalar(&tgt, "SELECT count(*) FROM ONLY readings").await, 0);
    assert_eq!(chunks(&tgt, "readings").await, chunks(&src, "readings").await);
    // loaded frozen: the visibility map marks the pages of the plain table and of the chunks
    let t = common::connect(&tgt).await;
    t.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_visibility").await.unwrap();
    for rel in ["'sites'::regclass", "(SELECT c FROM show_chunks('readings') c ORDER BY 1 LIMIT 1 OFFSET 2)"] {
        let row = t
            .query_one(
                &format!("SELECT count(*), count(*) FILTER (WHERE all_frozen) FROM pg_visibility_map({rel})"),
                &[],
            )
            .await
            .unwrap();
        let (pages, frozen): (i64, i64) = (row.get(0), row.get(1));
        // COPY FREEZE marks a page all-frozen when it starts filling it empty; the page a batch of
        // rows ends on is continued by the next batch and stays unmarked (its rows are frozen too),
        // so most pages, not all. A load without FREEZE marks none.
        assert!(pages > 0 && frozen * 2 > pages, "{rel}: {frozen} of {pages} pages frozen");
    }

    // a second load with a fresh progress file: every piece empties what it writes, then writes
    // into the chunks that are already there
    let again = tempfile::tempdir().unwrap();
    let (summary, _) = copy(&src, &tgt, again.path());
    assert!(summary.contains(&format!("{total} written directly")), "{summary}");
    assert_rows_equal(&src, &tgt);

    drop_pair("copy_direct").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smaller_target_chunks_take_the_rows_through_the_hypertable() {
    let src = source("copy_routed").await;
    // 12-hour chunks on the target: none covers a source day, so nothing is written directly
    let tgt = target("copy_routed_target", "12 hours").await;
    let dir = tempfile::tempdir().unwrap();

    let (summary, _) = copy(&src, &tgt, dir.path());
    assert!(summary.contains(" 0 written directly"), "{summary}");
    assert_rows_equal(&src, &tgt);
    assert_eq!(scalar(&tgt, "SELECT count(*) FROM ONLY readings").await, 0);
    assert!(chunks(&tgt, "readings").await > chunks(&src, "readings").await);

    drop_pair("copy_routed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_with_a_space_dimension_takes_that_hypertables_rows_through_the_hypertable() {
    let src = source("copy_space").await;
    let tgt = target("copy_space_target", "1 day").await;
    // the target's readings are also partitioned by device: the chunk made for one row holds only
    // that row's partition, so none of readings' chunks may be written directly; alarms' may
    common::connect(&tgt).await.batch_execute("SELECT add_dimension('readings', by_hash('device', 3))").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let (summary, _) = copy(&src, &tgt, dir.path());
    let readings = chunks(&src, "readings").await;
    let alarms = chunks(&src, "alarms").await;
    assert!(summary.contains(&format!("{alarms} written directly, {readings} through the hypertable")), "{summary}");
    assert_rows_equal(&src, &tgt);
    assert!(chunks(&tgt, "readings").await > readings, "split by device too");

    drop_pair("copy_space").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wider_target_chunks_take_several_source_chunks_written_directly_by_several_workers() {
    let src = source("copy_wide").await;
    // 7-day chunks on the target: each holds several source days, written by different workers;
    // only the worker whose transaction made a chunk may load it frozen
    let tgt = target("copy_wide_target", "7 days").await;
    let dir = tempfile::tempdir().unwrap();

    let (summary, _) = copy(&src, &tgt, dir.path());
    let total = chunks(&src, "readings").await + chunks(&src, "alarms").await;
    assert!(summary.contains(&format!("{total} written directly, 0 through")), "{summary}");
    assert_rows_equal(&src, &tgt);
    assert!(chunks(&tgt, "readings").await < total);

    drop_pair("copy_wide").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn from_the_older_source_plain_tables_go_in_ranges_or_with_ranges_off_in_one_piece_said_so() {
    // PostgreSQL 15 has TID range scans (from 14): block ranges; with ranges off, as a source
    // before 14 is read, each plain table goes whole, and the output says why
    let s = common::servers();
    let src = common::fresh_db(&s.old_source, "copy_old_ranges").await;
    common::connect(&src).await.batch_execute(&format!("{}\n{ROWS}", schema("1 day"))).await.unwrap();
    for (range_mib, db) in [("1", "copy_old_ranges_target"), ("0", "copy_old_whole_target")] {
        let tgt = target(db, "1 day").await;
        let dir = tempfile::tempdir().unwrap();
        let (_, output) = copy_with_ranges(&src, &tgt, dir.path(), range_mib);
        let ranges = output.lines().filter(|l| l.contains("public.events blocks ")).count();
        if range_mib == "1" {
            assert!(ranges >= 2, "{output}");
            assert!(!output.contains("in one piece"), "{output}");
        } else {
            assert_eq!(ranges, 0, "{output}");
            assert!(output.contains("every plain table in one piece: block ranges are off"), "{output}");
        }
        assert_rows_equal(&src, &tgt);
        common::drop_db(&s.target, db).await;
    }
    common::drop_db(&s.old_source, "copy_old_ranges").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_objects_arrive_with_their_oids_owners_grants_and_bytes_and_a_second_load_replaces() {
    let s = common::servers();
    let src = common::db_with(
        &s.source,
        "copy_lo",
        "CREATE TABLE docs (id int PRIMARY KEY, doc oid);
         SELECT lo_from_bytea(0, convert_to('document ' || i, 'UTF8')) FROM generate_series(1, 1200) i;
         SELECT lo_from_bytea(7000000, (SELECT string_agg(decode(md5(i::text), 'hex'), ''::bytea) FROM generate_series(1, 200000) i));
         ALTER LARGE OBJECT 7000000 OWNER TO pgshift_owner;
         GRANT SELECT ON LARGE OBJECT 7000000 TO pgshift_app WITH GRANT OPTION;
         COMMENT ON LARGE OBJECT 7000000 IS 'a drawing';
         INSERT INTO docs SELECT row_number() OVER (ORDER BY oid), oid FROM pg_largeobject_metadata;",
    )
    .await;
    let tgt = common::db_with(&s.target, "copy_lo_target", "CREATE TABLE docs (id int PRIMARY KEY, doc oid);").await;
    let same = "SELECT format('%s|%s|%s|%s|%s', oid, pg_get_userbyid(lomowner), lomacl, \
                obj_description(oid, 'pg_largeobject'), md5(lo_get(oid))) FROM pg_largeobject_metadata ORDER BY oid";
    for _ in 0..2 {
        // a fresh progress directory each time: the second load finds every object on the target
        let dir = tempfile::tempdir().unwrap();
        let (summary, output) = copy(&src, &tgt, dir.path());
        assert!(summary.contains("1201 large objects"), "{summary}");
        // more than a piece's 1,000 objects: in several pieces
        assert!(
            output.lines().filter(|l| l.contains("large objects ") && l.contains(" objects, ")).count() >= 2,
            "{output}"
        );
        let (a, b) = (common::connect(&src).await, common::connect(&tgt).await);
        let strings = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>();
        let (a, b) = (strings(a.query(same, &[]).await.unwrap()), strings(b.query(same, &[]).await.unwrap()));
        assert_eq!(a.len(), 1201);
        assert_eq!(a, b);
    }
    common::drop_db(&s.source, "copy_lo").await;
    common::drop_db(&s.target, "copy_lo_target").await;
}

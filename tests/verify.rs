//! `pgshift verify` against real servers: equal databases compare clean; one change per class is
//! named; planned changes pass with an allow file.

mod common;

use pgshift::plan::allow::AllowList;
use pgshift::verify::diff::RowStatus;
use pgshift::verify::{verify, VerifyOptions, VerifyReport};

const CHECKSUMS: VerifyOptions = VerifyOptions { checksums: true, workers: 2 };

async fn run_verify(source_url: &str, target_url: &str, allow: &AllowList) -> VerifyReport {
    verify(&common::spec("source", source_url), &common::spec("target", target_url), allow, CHECKSUMS)
        .await
        .expect("verify runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn equal_databases_are_clean_and_the_cli_exits_zero() {
    let s = common::servers();
    let (src, tgt) = tokio::join!(common::rich_db(&s.source, "vfy_equal"), common::rich_db(&s.target, "vfy_equal"));
    let r = run_verify(&src, &tgt, &AllowList::default()).await;
    let unexpected: Vec<_> = r.unexpected_differences().collect();
    assert!(r.clean, "equal databases differ: {unexpected:#?}");
    assert!(r.classes.len() >= 25, "every class compared");
    assert!(r.tables.len() >= 9 && r.tables.iter().all(|t| t.status == RowStatus::Same));
    assert!(r.tables.iter().all(|t| t.source_checksum.is_some()), "checksums computed");

    let dir = tempfile::tempdir().unwrap();
    let (json, md) = (dir.path().join("r.json"), dir.path().join("r.md"));
    let out = common::pgshift()
        .args(["verify", "--source", &src, "--target", &tgt, "--checksums", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CLEAN"), "{stdout}");
    assert!(stdout.contains("classic check"), "the six classic counts are shown: {stdout}");
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.contains("| policies"), "{markdown}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["clean"], true);
    for file in [&json, &md] {
        assert!(!std::fs::read_to_string(file).unwrap().contains(&s.password));
    }
    tokio::join!(common::drop_db(&s.source, "vfy_equal"), common::drop_db(&s.target, "vfy_equal"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_on_the_target_is_named() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "vfy_mut_src").await;
    let failures = common::mutations::uncaught(&src, &s.target, common::RICH_SOURCE_SQL, "vfy_mut", &[]).await;
    assert!(failures.is_empty(), "changes not named:\n{}", failures.join("\n"));
    common::drop_db(&s.source, "vfy_mut_src").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_hypertable_conversion_passes_with_an_allow_file() {
    let s = common::servers();
    let src = common::fresh_db(&s.source, "vfy_plan").await;
    let tgt = common::fresh_db(&s.target, "vfy_plan").await;
    let table = "CREATE EXTENSION timescaledb; CREATE TABLE metrics (ts timestamptz NOT NULL, v int);
                 INSERT INTO metrics SELECT '2026-01-01'::timestamptz + make_interval(hours => i), i FROM generate_series(1, 200) i;";
    common::connect(&src).await.batch_execute(table).await.unwrap();
    let t = common::connect(&tgt).await;
    t.batch_execute(table).await.unwrap();
    t.batch_execute("SELECT create_hypertable('metrics', 'ts', migrate_data => true)").await.unwrap();

    let r = run_verify(&src, &tgt, &AllowList::default()).await;
    assert!(!r.clean, "the conversion is a difference when not planned");
    assert!(r.differences.iter().any(|d| d.class == "hypertables" && d.name == "public.metrics"));
    let metrics = r.tables.iter().find(|t| t.name == "public.metrics").unwrap();
    assert_eq!(metrics.source_checksum, metrics.target_checksum, "same rows through the hypertable");

    let allow = AllowList::parse(
        r#"
        [[allow]]
        class = "hypertables"
        name = "public.metrics"
        change = "extra"
        reason = "converted to a hypertable by the plan"
        [[allow]]
        class = "indexes"
        name = "public.metrics_ts_idx"
        change = "extra"
        reason = "create_hypertable's time index"
        "#,
    )
    .unwrap();
    let r = run_verify(&src, &tgt, &allow).await;
    let unexpected: Vec<_> = r.unexpected_differences().collect();
    assert!(r.clean, "{unexpected:#?}");
    // the hypertable's chunks are part of its planned difference
    let chunks: Vec<_> = r.differences.iter().filter(|d| d.class == "chunks").collect();
    assert_eq!(chunks.len(), 2, "200 hours in two 7-day chunks: {chunks:#?}");
    assert!(chunks
        .iter()
        .all(|d| d.allowed.as_deref() == Some("converted to a hypertable by the plan (one of its chunks)")));
    assert_eq!(r.planned, 2 + chunks.len());
    tokio::join!(common::drop_db(&s.source, "vfy_plan"), common::drop_db(&s.target, "vfy_plan"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_exits_one_on_differences() {
    let s = common::servers();
    let (src, tgt) = tokio::join!(common::rich_db(&s.source, "vfy_cli1"), common::rich_db(&s.target, "vfy_cli1"));
    common::connect(&tgt).await.batch_execute("DROP POLICY readonly_all ON energy.sites").await.unwrap();
    let out = common::pgshift().args(["verify", "--source", &src, "--target", &tgt]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOT CLEAN") && stdout.contains("energy.sites.readonly_all"), "{stdout}");
    assert!(stdout.contains("equal counts hide") || stdout.contains("policies"), "{stdout}");
    tokio::join!(common::drop_db(&s.source, "vfy_cli1"), common::drop_db(&s.target, "vfy_cli1"));
}

/// Tables equal on both sides but for one value whose type calls it equal while its text differs
/// (or two rows trading a value): the in-server checksum must tell each apart. An enum table, whose
/// values have other OIDs on the other server, must still compare equal.
const IN_SERVER_CASES: &str = "
    CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE swap (id int, v text);       INSERT INTO swap VALUES (1, 'x'), (2, 'y');
    CREATE TABLE scale (id int, n numeric);   INSERT INTO scale VALUES (1, 1.0);
    CREATE TABLE span (id int, i interval);   INSERT INTO span VALUES (1, '1 day');
    CREATE TABLE zero (id int, f float8);     INSERT INTO zero VALUES (1, 0);
    CREATE TABLE casing (id int, c text COLLATE ci); INSERT INTO casing VALUES (1, 'abc');
    CREATE TABLE padded (id int, b bpchar);   INSERT INTO padded VALUES (1, 'a');
    CREATE TABLE moods (id int, m mood);      INSERT INTO moods VALUES (1, 'happy'), (2, 'sad');
    CREATE TABLE same (id int, n numeric, i interval, f real, t timestamptz, j jsonb, a int[]);
    INSERT INTO same VALUES (1, 2.50, '1 mon 2 days', 1.5, '2026-01-01 10:00+02', '{\"k\": [1, 2.0]}', '{1,2}');";

#[tokio::test(flavor = "multi_thread")]
async fn in_server_checksums_tell_apart_values_their_types_call_equal() {
    let s = common::servers();
    let src = common::fresh_db(&s.source, "vfy_in_server").await;
    // the target's enum is made with another value first, so its labels have other OIDs
    let tgt = common::fresh_db(&s.target, "vfy_in_server").await;
    common::connect(&src).await.batch_execute(IN_SERVER_CASES).await.unwrap();
    common::connect(&tgt)
        .await
        .batch_execute(&format!("CREATE TYPE filler AS ENUM ('a', 'b'); {IN_SERVER_CASES}"))
        .await
        .unwrap();
    common::connect(&tgt)
        .await
        .batch_execute(
            "UPDATE swap SET v = CASE id WHEN 1 THEN 'y' ELSE 'x' END;
             UPDATE scale SET n = 1.00; UPDATE span SET i = '24 hours'; UPDATE zero SET f = '-0';
             UPDATE casing SET c = 'ABC'; UPDATE padded SET b = 'a ';",
        )
        .await
        .unwrap();

    let r = run_verify(&src, &tgt, &AllowList::default()).await;
    assert_eq!(r.checksum_form.as_deref(), Some("in each server"), "both servers are PostgreSQL 17 on one machine");
    let status = |name: &str| r.tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name}")).status;
    for t in ["swap", "scale", "span", "zero", "casing", "padded"] {
        assert_eq!(status(&format!("public.{t}")), RowStatus::ContentDiffers, "{t}: {:#?}", r.tables);
    }
    for t in ["moods", "same"] {
        assert_eq!(status(&format!("public.{t}")), RowStatus::Same, "{t}: {:#?}", r.tables);
    }
    tokio::join!(common::drop_db(&s.source, "vfy_in_server"), common::drop_db(&s.target, "vfy_in_server"));
}

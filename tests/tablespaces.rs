//! Tablespaces: a source that keeps tables, indexes, a materialized view, a hypertable's chunks and
//! the database's own default in other tablespaces. A target that lacks them is refused by the
//! pre-flight with one line naming each and the fix, nothing written; `[target] tablespaces =
//! "default"` migrates into the default tablespace with the placements as planned differences;
//! a target that has them gets every placement, verified, and a placement changed there is named.

mod common;

use std::path::Path;

const ARCHIVE: &str = "pgshift_tspace_archive";
const DBDEFAULT: &str = "pgshift_tspace_dbdefault";

/// An empty directory for a tablespace of the cluster `cluster`, inside the test root the servers
/// run in (owned by their postgres user); returns the path as the servers see it.
fn tablespace_dir(cluster: &str, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let root = std::env::var("PGSHIFT_TEST_ROOT").expect("PGSHIFT_TEST_ROOT: source tests/env state/env.sh");
    let base = Path::new(&root).join("srv/pgshift");
    let owner = std::fs::metadata(&base).expect("the test root's /srv/pgshift");
    let inside = format!("/srv/pgshift/tablespaces/{cluster}-{name}");
    let dir = Path::new(&root).join(inside.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tablespace directory");
    for d in [dir.parent().unwrap(), dir.as_path()] {
        std::os::unix::fs::chown(d, Some(owner.uid()), Some(owner.gid())).expect("chown to the servers' user");
    }
    inside
}

/// Drops the test's tablespaces on `server` (after the databases using them) and creates them again
/// in fresh directories, each granting CREATE to the fixture's tenant role.
async fn fresh_tablespaces(server: &str, cluster: &str, dbs: &[&str]) {
    for db in dbs {
        common::drop_db(server, db).await;
    }
    let admin = common::connect(server).await;
    for name in [ARCHIVE, DBDEFAULT] {
        admin.batch_execute(&format!("DROP TABLESPACE IF EXISTS {name}")).await.expect("drop tablespace");
        let dir = tablespace_dir(cluster, name);
        admin
            .batch_execute(&format!("CREATE TABLESPACE {name} LOCATION '{dir}' WITH (random_page_cost = 1.5)"))
            .await
            .expect("create tablespace");
        admin.batch_execute(&format!("GRANT CREATE ON TABLESPACE {name} TO pgshift_tenant")).await.expect("grant");
    }
}

async fn drop_tablespaces(server: &str) {
    let admin = common::connect(server).await;
    for name in [ARCHIVE, DBDEFAULT] {
        let _ = admin.batch_execute(&format!("DROP TABLESPACE IF EXISTS {name}")).await;
    }
}

async fn placements(url: &str) -> Vec<String> {
    common::strings(
        url,
        "SELECT c.relname || ' ' || coalesce(t.spcname, 'default')
           FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
          WHERE c.relnamespace = 'shop'::regnamespace AND c.relkind IN ('r', 'm', 'i')
         UNION ALL
         SELECT 'database ' || t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
          WHERE d.datname = current_database()
         UNION ALL
         SELECT 'chunks of ' || hypertable_name || ' ' || array_to_string(tablespaces, ',')
           FROM timescaledb_information.hypertables WHERE tablespaces IS NOT NULL
         ORDER BY 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tablespaces_are_checked_before_anything_is_written_then_kept_and_verified() {
    let s = common::servers();
    let (flat, kept) = ("tspace_dst_flat", "tspace_dst_kept");
    let src = common::db_with(&s.source, "tspace_src", "").await; // the fixture's roles
    fresh_tablespaces(&s.source, "source", &["tspace_src"]).await;
    for db in [flat, kept] {
        common::drop_db(&s.target, db).await;
    }
    drop_tablespaces(&s.target).await;
    let admin = common::connect(&s.source).await;
    admin.batch_execute(&format!("CREATE DATABASE tspace_src TABLESPACE {DBDEFAULT}")).await.unwrap();
    common::connect(&src)
        .await
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS timescaledb;
             CREATE SCHEMA shop;
             CREATE TABLE shop.orders (id int PRIMARY KEY USING INDEX TABLESPACE {ARCHIVE}, placed date NOT NULL,
                                       note text) TABLESPACE {ARCHIVE};
             INSERT INTO shop.orders SELECT i, DATE '2024-01-01' + i % 300, 'order ' || i FROM generate_series(1, 2000) i;
             CREATE INDEX orders_placed ON shop.orders (placed) TABLESPACE {ARCHIVE};
             CREATE TABLE shop.carts (id int PRIMARY KEY, opened timestamptz NOT NULL DEFAULT now());
             INSERT INTO shop.carts SELECT i, now() FROM generate_series(1, 50) i;
             CREATE MATERIALIZED VIEW shop.order_days TABLESPACE {ARCHIVE} AS
               SELECT placed, count(*) AS orders FROM shop.orders GROUP BY placed;
             CREATE TABLE shop.readings (at timestamptz NOT NULL, value float8);
             SELECT create_hypertable('shop.readings', 'at', chunk_time_interval => INTERVAL '7 days');
             SELECT attach_tablespace('{ARCHIVE}', 'shop.readings');
             INSERT INTO shop.readings SELECT TIMESTAMPTZ '2024-01-01' + i * INTERVAL '1 hour', i
               FROM generate_series(1, 1000) i;"
        ))
        .await
        .unwrap();
    let source_placements = placements(&src).await;
    assert!(source_placements.contains(&format!("orders_placed {ARCHIVE}")), "{source_placements:?}");
    assert!(source_placements.contains(&format!("database {DBDEFAULT}")), "{source_placements:?}");
    assert!(source_placements.contains(&format!("chunks of readings {ARCHIVE}")), "{source_placements:?}");

    // a target without them: refused before anything is written, both named with the fix
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &common::url_for(&s.target, kept), "");
    let (code, out) = common::run_plan(&plan);
    assert_ne!(code, 0, "{out}");
    let line = out.lines().find(|l| l.contains("lacks tablespaces")).unwrap_or_else(|| panic!("{out}"));
    for needed in [ARCHIVE, DBDEFAULT, "shop.orders", "and 3 more", "CREATE TABLESPACE", "default"] {
        assert!(line.contains(needed), "{needed} in: {line}");
    }
    assert!(!out.contains("panicked"), "{out}");
    let exists = common::strings(&s.target, &format!("SELECT datname FROM pg_database WHERE datname = '{kept}'")).await;
    assert!(exists.is_empty(), "nothing written on the target: {exists:?}");

    // [target] tablespaces = "default": migrated into the default tablespace, placements planned
    let dir_flat = tempfile::tempdir().unwrap();
    let flat_url = common::url_for(&s.target, flat);
    let plan = common::write_plan(dir_flat.path(), &src, &flat_url, "");
    let text = std::fs::read_to_string(&plan).unwrap().replacen("[backup]", "tablespaces = \"default\"\n[backup]", 1);
    std::fs::write(&plan, text).unwrap();
    let (code, out) = common::run_plan(&plan);
    assert_eq!(code, 0, "{out}");
    let flat_placements = placements(&flat_url).await;
    assert!(flat_placements.iter().all(|p| !p.contains("pgshift_tspace")), "{flat_placements:?}");
    let run_dir = std::fs::read_dir(dir_flat.path().join("backups")).unwrap().flatten().next().unwrap().path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("verify.json")).unwrap()).unwrap();
    assert_eq!(report["clean"], true, "{out}");
    let diffs = common::differences(&report);
    assert!(diffs.iter().all(|d| d.starts_with("tablespaces ") && d.ends_with("(planned)")), "{diffs:?}");
    assert!(diffs.contains(&"tablespaces shop.orders missing (planned)".to_string()), "{diffs:?}");
    assert_eq!(
        common::strings(&flat_url, "SELECT count(*)::text FROM shop.readings").await,
        ["1000"],
        "every row there"
    );

    // a target that has them (the run above brought the roles): every placement kept, verified clean
    fresh_tablespaces(&s.target, "target", &[kept]).await;
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &common::url_for(&s.target, kept), ""));
    assert_eq!(code, 0, "{out}");
    let kept_url = common::url_for(&s.target, kept);
    assert_eq!(placements(&kept_url).await, source_placements);
    let report = common::verify_cli(&src, &kept_url).1;
    assert_eq!(common::differences(&report), Vec::<String>::new());
    let class = report["classes"].as_array().unwrap().iter().find(|c| c["class"] == "tablespaces").unwrap().clone();
    assert!(class["source"].as_i64().unwrap() >= 7, "placements and tablespaces listed: {class}");

    // a placement changed on the target is named
    let target = common::connect(&kept_url).await;
    target
        .batch_execute(&format!(
            "ALTER INDEX shop.orders_placed SET TABLESPACE pg_default;
             SELECT detach_tablespace('{ARCHIVE}', 'shop.readings');
             REVOKE CREATE ON TABLESPACE {DBDEFAULT} FROM pgshift_tenant;"
        ))
        .await
        .unwrap();
    let diffs = common::differences(&common::verify_cli(&src, &kept_url).1);
    for expected in [
        "tablespaces shop.orders_placed changed", // now in pg_default, not the database's default
        "tablespaces hypertable shop.readings missing",
        &format!("tablespaces tablespace {DBDEFAULT} changed"),
    ] {
        assert!(diffs.contains(&expected.to_string()), "{expected} in {diffs:?}");
    }

    drop(target);
    for db in [flat, kept] {
        common::drop_db(&s.target, db).await;
    }
    common::drop_db(&s.source, "tspace_src").await;
    drop_tablespaces(&s.target).await;
    drop_tablespaces(&s.source).await;
}

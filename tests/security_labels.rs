//! Security labels, with the test servers' label provider `pgshift_test` (tests/env/label-provider,
//! loaded on source and target, not on the "apache" server): labels on a schema, a table, a column,
//! a view, a function, a sequence, a type, a large object, a role and the database itself arrive and
//! verify clean (the role's comment too); each one changed or removed on the target is named; a target that has not loaded
//! the provider is refused by the pre-flight with the fix, nothing written.

mod common;

use std::path::Path;

const ROLE: &str = "pgshift_label_clerk";

const LABELS: &str = "SELECT l.provider || ' ' || o.type || ' ' || o.identity || ' = ' || l.label
       FROM pg_seclabel l, LATERAL pg_identify_object(l.classoid, l.objoid, l.objsubid) o
     UNION ALL
     SELECT l.provider || ' database = ' || l.label FROM pg_shseclabel l
      WHERE l.classoid = 'pg_database'::regclass AND l.objoid = (SELECT oid FROM pg_database WHERE datname = current_database())
     UNION ALL
     SELECT l.provider || ' role ' || r.rolname || ' = ' || l.label FROM pg_shseclabel l JOIN pg_roles r ON r.oid = l.objoid
      WHERE l.classoid = 'pg_authid'::regclass AND r.rolname = 'pgshift_label_clerk'
     ORDER BY 1";

/// The labelled role is cluster-wide and every migration's roles.sql carries it, so it must not
/// outlive the test (a later run onto a server without the provider would be refused for it).
struct DropRole(Vec<String>);

impl Drop for DropRole {
    fn drop(&mut self) {
        // no assertion here: this also runs while a failed assertion unwinds
        let bin = std::env::var("PGSHIFT_TEST_BIN_DIR").unwrap_or_default();
        for server in &self.0 {
            let _ = std::process::Command::new(Path::new(&bin).join("psql"))
                .args(["-X", "-q", "--no-password", "-d", server, "-c", &format!("DROP ROLE IF EXISTS {ROLE}")])
                .env("PGPASSWORD", common::servers().password)
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn security_labels_arrive_and_a_target_without_their_provider_is_refused() {
    let s = common::servers();
    let (dst, refused) = ("labels_dst", "labels_dst_refused");
    common::drop_db(&s.target, dst).await;
    common::drop_db(&s.apache, refused).await;
    for server in [&s.target, &s.apache] {
        // roles.sql brings the role (and its label) again; a role left by an earlier run is dropped
        let _ = common::connect(server).await.batch_execute(&format!("DROP ROLE IF EXISTS {ROLE}")).await;
    }
    let _cleanup = DropRole(vec![s.source.clone(), s.target.clone(), s.apache.clone()]);
    let src = common::db_with(&s.source, "labels_src", "").await;
    common::connect(&src)
        .await
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             SECURITY LABEL FOR pgshift_test ON ROLE {ROLE} IS 'internal';
             COMMENT ON ROLE {ROLE} IS 'reads the customers of crm';
             SECURITY LABEL FOR pgshift_test ON DATABASE labels_src IS 'internal';
             CREATE SCHEMA crm;
             SECURITY LABEL FOR pgshift_test ON SCHEMA crm IS 'internal';
             GRANT USAGE ON SCHEMA crm TO {ROLE};
             CREATE TYPE crm.tier AS ENUM ('free', 'paid');
             SECURITY LABEL FOR pgshift_test ON TYPE crm.tier IS 'public';
             CREATE TABLE crm.customers (id int PRIMARY KEY, email text, tier crm.tier);
             INSERT INTO crm.customers SELECT i, 'c' || i || '@example.org', 'free' FROM generate_series(1, 100) i;
             SECURITY LABEL FOR pgshift_test ON TABLE crm.customers IS 'internal';
             SECURITY LABEL FOR pgshift_test ON COLUMN crm.customers.email IS 'secret';
             CREATE SEQUENCE crm.ticket_no;
             SECURITY LABEL FOR pgshift_test ON SEQUENCE crm.ticket_no IS 'public';
             CREATE VIEW crm.customer_tiers AS SELECT id, tier FROM crm.customers;
             SECURITY LABEL FOR pgshift_test ON VIEW crm.customer_tiers IS 'public';
             CREATE FUNCTION crm.mask(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT left(t, 1) || '***' $$;
             SECURITY LABEL FOR pgshift_test ON FUNCTION crm.mask(text) IS 'public';
             SELECT lo_from_bytea(424242, 'a contract'::bytea);
             SECURITY LABEL FOR pgshift_test ON LARGE OBJECT 424242 IS 'secret';"
        ))
        .await
        .expect("labels on the source");
    let source_labels = common::strings(&src, LABELS).await;
    assert_eq!(source_labels.len(), 10, "{source_labels:?}");

    // a target that has not loaded the provider: refused before anything is written
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &common::url_for(&s.apache, refused), "");
    let (code, out) = common::run_plan(&plan);
    assert_eq!(code, 2, "{out}");
    let line = out.lines().find(|l| l.contains("security label provider")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("pgshift_test (labels 10 objects)"), "{line}");
    assert!(out.contains("shared_preload_libraries"), "the fix: {out}");
    assert!(!out.contains("panicked"), "{out}");
    let exists =
        common::strings(&s.apache, &format!("SELECT datname FROM pg_database WHERE datname = '{refused}'")).await;
    assert!(exists.is_empty(), "nothing written on the target: {exists:?}");

    // a target with the provider: every label there, verify clean
    let dir = tempfile::tempdir().unwrap();
    let dst_url = common::url_for(&s.target, dst);
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &dst_url, ""));
    assert_eq!(code, 0, "{out}");
    let target_labels = common::strings(&dst_url, LABELS).await;
    assert_eq!(target_labels, source_labels.iter().map(|l| l.replace("labels_src", dst)).collect::<Vec<_>>());
    let report = common::verify_cli(&src, &dst_url).1;
    assert_eq!(common::differences(&report), Vec::<String>::new());
    let class = report["classes"].as_array().unwrap().iter().find(|c| c["class"] == "security_labels").unwrap().clone();
    assert_eq!((class["source"].as_i64(), class["target"].as_i64()), (Some(10), Some(10)), "{class}");

    // each changed or removed on the target is named
    common::connect(&dst_url)
        .await
        .batch_execute(&format!(
            "SECURITY LABEL FOR pgshift_test ON COLUMN crm.customers.email IS NULL;
             SECURITY LABEL FOR pgshift_test ON TABLE crm.customers IS 'public';
             SECURITY LABEL FOR pgshift_test ON LARGE OBJECT 424242 IS NULL;
             SECURITY LABEL FOR pgshift_test ON DATABASE {dst} IS 'secret';
             COMMENT ON ROLE {ROLE} IS 'changed on the target';"
        ))
        .await
        .unwrap();
    let diffs = common::differences(&common::verify_cli(&src, &dst_url).1);
    for expected in [
        "security_labels pgshift_test on table column crm.customers.email missing",
        "security_labels pgshift_test on table crm.customers changed",
        "security_labels pgshift_test on large object 424242 missing",
        "security_labels pgshift_test on the database changed",
        "comments role pgshift_label_clerk changed",
    ] {
        assert!(diffs.contains(&expected.to_string()), "{expected} in {diffs:?}");
    }
    common::drop_db(&s.target, dst).await;
    common::drop_db(&s.source, "labels_src").await;
    common::drop_db(&s.apache, refused).await;
}

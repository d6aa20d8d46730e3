//! The database's own properties, which pg_dump writes only with `--create`: its settings, the
//! settings of roles in it, its privileges (CONNECT revoked from PUBLIC), comment, connection limit
//! and locale (ICU here). A run carries each and verify is clean; each one then changed on the
//! target is named by verify.

mod common;

fn unexpected(report: &serde_json::Value) -> Vec<String> {
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["allowed"].is_null())
        .map(|d| format!("{} {} {}", d["class"].as_str().unwrap(), d["name"].as_str().unwrap(), d["change"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_databases_settings_privileges_comment_limit_and_locale_travel_and_are_verified() {
    let s = common::servers();
    let src = common::db_with(&s.source, "dbprops_src", "").await; // with the fixture's roles
                                                                   // the database itself, made again with an ICU locale and its properties
    let admin = common::connect(&s.source).await;
    admin.batch_execute("DROP DATABASE dbprops_src WITH (FORCE)").await.unwrap();
    admin
        .batch_execute(
            "CREATE DATABASE dbprops_src TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8'",
        )
        .await
        .unwrap();
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO shop.items SELECT i, 'item ' || i FROM generate_series(1, 100) i;
             GRANT USAGE ON SCHEMA shop TO pgshift_tenant;
             GRANT SELECT ON shop.items TO pgshift_tenant;",
        )
        .await
        .unwrap();
    admin
        .batch_execute(
            "ALTER DATABASE dbprops_src SET search_path = shop, public;
             ALTER DATABASE dbprops_src SET work_mem = '24MB';
             ALTER ROLE pgshift_tenant IN DATABASE dbprops_src SET statement_timeout = '45s';
             REVOKE CONNECT, TEMPORARY ON DATABASE dbprops_src FROM PUBLIC;
             GRANT CONNECT ON DATABASE dbprops_src TO pgshift_tenant;
             GRANT TEMPORARY ON DATABASE dbprops_src TO pgshift_tenant WITH GRANT OPTION;
             SET ROLE pgshift_tenant;
             GRANT TEMPORARY ON DATABASE dbprops_src TO pgshift_readonly;
             RESET ROLE;
             COMMENT ON DATABASE dbprops_src IS 'the shop''s items';
             ALTER DATABASE dbprops_src CONNECTION LIMIT 42;",
        )
        .await
        .unwrap();

    common::drop_db(&s.target, "dbprops_target").await;
    let tgt = common::url_for(&s.target, "dbprops_target");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = common::run_plan(&common::write_plan(dir.path(), &src, &tgt, ""));
    assert_eq!(code, 0, "{out}");

    // each property on the target, as the application meets it
    let t = common::connect(&common::url_for(&s.target, "postgres")).await;
    let row = t
        .query_one(
            "SELECT datlocprovider::text, datlocale, datcollate, datconnlimit, shobj_description(oid, 'pg_database'),
                    has_database_privilege('public', oid, 'CONNECT'), has_database_privilege('public', oid, 'TEMPORARY'),
                    has_database_privilege('pgshift_tenant', oid, 'CONNECT')
             FROM pg_database WHERE datname = 'dbprops_target'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "i", "ICU provider");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("de-DE"));
    assert_eq!(row.get::<_, String>(2), "C.UTF-8");
    assert_eq!(row.get::<_, i32>(3), 42);
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("the shop's items"));
    assert!(!row.get::<_, bool>(5) && !row.get::<_, bool>(6), "PUBLIC's CONNECT and TEMPORARY stay revoked");
    assert!(row.get::<_, bool>(7));
    // a privilege passed on with a grant option keeps its grantor
    let grantors = common::strings(
        &common::url_for(&s.target, "postgres"),
        "SELECT pg_get_userbyid(a.grantee) || ' ' || a.privilege_type || ' from ' || pg_get_userbyid(a.grantor)
         FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = 'dbprops_target' AND a.privilege_type = 'TEMPORARY'
         ORDER BY 1",
    )
    .await;
    assert_eq!(
        grantors,
        [
            "pgshift_readonly TEMPORARY from pgshift_tenant",
            "pgshift_tenant TEMPORARY from postgres",
            "postgres TEMPORARY from postgres"
        ]
    );
    let settings = common::strings(
        &common::url_for(&s.target, "postgres"),
        "SELECT coalesce(r.rolname, '-') || ' ' || array_to_string(rs.setconfig, ';')
         FROM pg_db_role_setting rs JOIN pg_database d ON d.oid = rs.setdatabase LEFT JOIN pg_roles r ON r.oid = rs.setrole
         WHERE d.datname = 'dbprops_target' ORDER BY 1",
    )
    .await;
    assert_eq!(settings, ["- search_path=shop, public;work_mem=24MB", "pgshift_tenant statement_timeout=45s"]);
    // an unqualified name resolves on the target as it did on the source
    assert_eq!(common::strings(&tgt, "SELECT count(*)::text FROM items").await, ["100"]);

    let (code, report) = common::verify_cli(&src, &tgt);
    assert_eq!(unexpected(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    let database = report["classes"].as_array().unwrap().iter().find(|c| c["class"] == "database").unwrap();
    assert!(database["source"].as_u64().unwrap() >= 5, "settings, comment, limit, locale compared: {database}");

    // each property changed on the target (then put back): named by verify
    let mutations = [
        (
            "ALTER DATABASE dbprops_target RESET search_path",
            "ALTER DATABASE dbprops_target SET search_path = shop, public",
            "database",
            "setting search_path",
        ),
        (
            "ALTER DATABASE dbprops_target SET work_mem = '4MB'",
            "ALTER DATABASE dbprops_target SET work_mem = '24MB'",
            "database",
            "setting work_mem",
        ),
        (
            "COMMENT ON DATABASE dbprops_target IS NULL",
            "COMMENT ON DATABASE dbprops_target IS 'the shop''s items'",
            "database",
            "comment",
        ),
        (
            "ALTER DATABASE dbprops_target CONNECTION LIMIT -1",
            "ALTER DATABASE dbprops_target CONNECTION LIMIT 42",
            "database",
            "connection limit",
        ),
        (
            "GRANT CONNECT ON DATABASE dbprops_target TO PUBLIC",
            "REVOKE CONNECT ON DATABASE dbprops_target FROM PUBLIC",
            "grants",
            "",
        ),
        (
            "REVOKE CONNECT ON DATABASE dbprops_target FROM pgshift_tenant",
            "GRANT CONNECT ON DATABASE dbprops_target TO pgshift_tenant",
            "grants",
            "",
        ),
        (
            "ALTER ROLE pgshift_tenant IN DATABASE dbprops_target RESET statement_timeout",
            "ALTER ROLE pgshift_tenant IN DATABASE dbprops_target SET statement_timeout = '45s'",
            "roles",
            "pgshift_tenant",
        ),
    ];
    let mut missed = Vec::new();
    for (damage, undo, class, name) in mutations {
        t.batch_execute(damage).await.unwrap();
        let (code, report) = common::verify_cli(&src, &tgt);
        let named =
            report["differences"].as_array().unwrap().iter().any(|d| {
                d["class"] == class && d["allowed"].is_null() && d["name"].as_str().unwrap_or("").contains(name)
            });
        if !named || code == 0 {
            missed.push(format!("{damage}: {:?}", unexpected(&report)));
        }
        t.batch_execute(undo).await.unwrap();
    }
    assert!(missed.is_empty(), "not caught:\n{}", missed.join("\n"));
    common::drop_db(&s.source, "dbprops_src").await;
    common::drop_db(&s.target, "dbprops_target").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locale_the_target_server_lacks_is_found_before_anything_is_written() {
    use pgshift::catalog::database::missing_locale;
    let s = common::servers();
    let target = common::connect(&s.target).await;
    // the test servers know C, POSIX and C.UTF-8 (spelled C.utf8 by `locale -a`) only
    for known in ["provider libc, collate C, ctype C", "provider libc, collate C.UTF-8, ctype C.UTF-8"] {
        assert_eq!(missing_locale(&target, known).await.unwrap(), None, "{known}");
    }
    assert_eq!(
        missing_locale(&target, "provider icu, collate C, ctype C, locale de-DE").await.unwrap(),
        None,
        "the servers are built with ICU"
    );
    let lacking = missing_locale(&target, "provider libc, collate fr_CA.UTF-8, ctype fr_CA.UTF-8").await.unwrap();
    assert_eq!(lacking.as_deref(), Some("the locale fr_CA.UTF-8"));
    let old = common::connect(&s.old_source).await;
    let builtin = missing_locale(&old, "provider builtin, collate C, ctype C, locale C.UTF-8").await.unwrap();
    assert!(builtin.unwrap().contains("new in PostgreSQL 17"));
}

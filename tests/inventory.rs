//! `pgshift inventory` against a real PostgreSQL 17 + TimescaleDB + pgvector server.

mod common;

use pgshift::catalog::{self, rows::RowMode, Class};

#[tokio::test(flavor = "multi_thread")]
async fn inventory_sees_every_class_of_the_rich_source() {
    let s = common::servers();
    let url = common::rich_db(&s.source, "inv_rich").await;
    let inv = catalog::collect(&common::spec("database", &url), Some(RowMode::Count), 2).await.expect("inventory");

    let expect = [
        (Class::Schemas, "energy"),
        (Class::Tables, "energy.sites"),
        (Class::Tables, "energy.tariffs"),
        (Class::Tables, "energy.tariffs_kr"),
        (Class::Columns, "energy.devices.label"),
        (Class::Views, "energy.meter_counts"),
        (Class::MaterializedViews, "energy.daily_energy"),
        (Class::Functions, "energy.kwh(watts double precision, hours double precision)"),
        (Class::Procedures, "energy.purge_audit(IN keep_days integer)"),
        (Class::Aggregates, "energy.sum_kwh(double precision)"),
        (Class::Triggers, "energy.devices.devices_audit"),
        (Class::Policies, "energy.sites.tenant_isolation"),
        (Class::RlsFlags, "energy.sites"),
        (Class::Indexes, "energy.devices_site_idx"),
        (Class::PrimaryKeys, "energy.sites.sites_pkey"),
        (Class::ForeignKeys, "energy.devices.devices_site_id_fkey"),
        (Class::UniqueConstraints, "energy.sites.sites_name_key"),
        (Class::CheckConstraints, "energy.sites.sites_capacity_kw_check"),
        (Class::ExclusionConstraints, "energy.maintenance.maintenance_device_id_during_excl"),
        (Class::Sequences, "energy.device_serial"),
        (Class::Types, "energy.device_kind"),
        (Class::Types, "energy.percent"),
        (Class::Types, "energy.reading_pair"),
        (Class::Extensions, "timescaledb"),
        (Class::Extensions, "vector"),
        (Class::Roles, "pgshift_tenant"),
        (Class::Grants, "table energy.sites to pgshift_app"),
        (Class::Grants, "column public.kb_documents.title to pgshift_readonly"),
        (Class::DefaultPrivileges, "for role postgres in schema energy on tables to pgshift_readonly"),
        (Class::Owners, "table energy.sites"),
        (Class::Comments, "table energy.sites"),
        (Class::Hypertables, "energy.readings"),
        (Class::VectorColumns, "public.kb_documents.embedding"),
        (Class::VectorIndexes, "public.kb_documents_embedding_idx"),
        (Class::Rules, "energy.site_notes.site_notes_keep"),
        (Class::ExtendedStatistics, "energy.devices_site_kind"),
        (Class::EventTriggers, "pgshift_note_schema_drop"),
        (Class::Publications, "pgshift_sites"),
        (Class::ForeignDataWrappers, "pgshift_files"),
        (Class::ForeignServers, "pgshift_archive"),
        (Class::UserMappings, "for pgshift_app server pgshift_archive"),
        (Class::Collations, "energy.names_ci"),
        (Class::Casts, "energy.meter_id AS text"),
        (Class::Operators, "energy.~=(double precision, double precision)"),
        (Class::OperatorClasses, "energy.int4_rev_ops using btree"),
        (Class::OperatorFamilies, "energy.int4_rev_fam using btree"),
        (Class::TextSearchConfigurations, "energy.notes"),
        (Class::TextSearchDictionaries, "energy.simple_strict"),
    ];
    for (class, name) in expect {
        assert!(
            inv.class(class).contains_key(name),
            "{} lacks {name}: {:?}",
            class.key(),
            inv.class(class).keys().collect::<Vec<_>>()
        );
    }

    // definitions carry what matters
    assert_eq!(inv.class(Class::Owners)["table energy.sites"], "pgshift_owner");
    assert!(inv.class(Class::Sequences)["energy.device_serial"].contains("last value 5000"));
    assert!(inv.class(Class::RlsFlags)["energy.sites"].contains("enabled, forced"));
    assert!(inv.class(Class::Policies)["energy.sites.tenant_isolation"].contains("TO pgshift_tenant"));
    assert!(inv.class(Class::Grants)["table energy.sites to pgshift_app"].contains("INSERT"));
    assert!(inv.class(Class::Roles)["pgshift_tenant"].contains("member of: pgshift_app"));
    assert!(inv.class(Class::Hypertables)["energy.readings"].contains("every 1 day"));
    assert!(inv.class(Class::VectorIndexes)["public.kb_documents_embedding_idx"].contains("hnsw"));
    assert!(inv.class(Class::VectorIndexes)["public.kb_documents_embedding_idx"].contains("vector_cosine_ops"));
    assert!(inv.class(Class::VectorColumns)["public.kb_documents.embedding"].contains("vector(3)"));
    let mapping = &inv.class(Class::UserMappings)["for pgshift_app server pgshift_archive"];
    assert!(mapping.contains("password (set)") && !mapping.contains("fixture-only"), "{mapping}");
    assert!(inv.class(Class::EventTriggers)["pgshift_note_schema_drop"].contains("enabled"));
    assert!(inv.class(Class::Publications)["pgshift_sites"].contains("tables energy.sites"));
    assert!(inv.class(Class::Collations)["energy.names_ci"].contains("nondeterministic"));
    assert!(inv.class(Class::TextSearchConfigurations)["energy.notes"].contains("asciiword: energy.simple_strict"));
    let notes = &inv.class(Class::Tables)["energy.site_notes"];
    assert!(notes.contains("fillfactor=80") && notes.contains("replica identity full"), "{notes}");
    let note = &inv.class(Class::Columns)["energy.site_notes.note"];
    assert!(note.contains("STATISTICS 500") && note.contains("STORAGE EXTERNAL"), "{note}");

    // TimescaleDB and pgvector state
    let ts = inv.timescaledb.as_ref().expect("timescaledb seen");
    assert_eq!(ts.license, "timescale", "the source test server runs the Timescale-licensed build");
    assert!(inv.pgvector.is_some());

    // internals are kept out of the user counts but shown
    assert_eq!(inv.class(Class::Triggers).len(), 1, "only the audit trigger is a user trigger");
    assert!(inv.naive.triggers > 1, "the naive count includes TimescaleDB's triggers");
    assert!(inv.excluded.iter().any(|e| e.owner == "TimescaleDB internal" && e.what.starts_with("tables")));
    assert!(inv.excluded.iter().any(|e| e.owner == "extension timescaledb" && e.what == "functions"));
    assert!(
        !inv.class(Class::Functions).keys().any(|k| k.contains("time_bucket")),
        "extension functions are not user functions"
    );
    assert!(!inv.class(Class::Tables).keys().any(|k| k.contains("_timescaledb")), "chunks are not user tables");

    // exact rows; the hypertable is counted through its chunks
    let rows = |name: &str| inv.table(name).and_then(|t| t.rows).unwrap_or(-1);
    assert_eq!(rows("energy.readings"), 1441);
    assert_eq!(inv.table("energy.readings").unwrap().kind, "hypertable");
    assert_eq!(rows("energy.devices"), 12);
    assert_eq!(rows("energy.audit_log"), 12, "one audit row per device insert");
    assert_eq!(rows("energy.tariffs_kr"), 1);
    assert!(inv.table("energy.tariffs").is_none(), "a partitioned parent holds no rows of its own");
    common::drop_db(&s.source, "inv_rich").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_cli_writes_json() {
    let s = common::servers();
    let url = common::rich_db(&s.source, "inv_cli").await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("inv.json");
    let out = common::pgshift().args(["inventory", "--list", "--db", &url, "--json"]).arg(&json).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("energy.readings") && stdout.contains("hypertable"), "{stdout}");
    assert!(
        stdout.contains("== policies (2)") && stdout.contains("    TO pgshift_tenant"),
        "--list shows definitions: {stdout}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["timescaledb"]["license"], "timescale");
    assert!(v["objects"]["policies"]["energy.sites.tenant_isolation"].is_string());
    assert!(!std::fs::read_to_string(&json).unwrap().contains(&s.password), "no password in the inventory");
    common::drop_db(&s.source, "inv_cli").await;
}

/// A role that is not a superuser sees a user mapping's options only for its own mapping (or as
/// the foreign server's owner): the others are said not compared, never "no options", and role
/// passwords likewise.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_connecting_role_may_not_read_is_said_not_compared() {
    let s = common::servers();
    let reader = "pgshift_inv_reader";
    let admin = common::connect(&s.source).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {reader} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {reader} PASSWORD '{}'",
            s.password.replace('\'', "''")
        ))
        .await
        .expect("reader role");
    let url = common::db_with(
        &s.source,
        "inv_hidden",
        &format!(
            "CREATE FOREIGN DATA WRAPPER hidden_fdw;
             CREATE SERVER hidden_srv FOREIGN DATA WRAPPER hidden_fdw OPTIONS (region 'kr');
             GRANT USAGE ON FOREIGN SERVER hidden_srv TO {reader};
             CREATE USER MAPPING FOR pgshift_app SERVER hidden_srv OPTIONS (user 'archive', password 'not-shown');
             CREATE USER MAPPING FOR PUBLIC SERVER hidden_srv OPTIONS (user 'anyone');
             CREATE USER MAPPING FOR {reader} SERVER hidden_srv OPTIONS (user 'mine');"
        ),
    )
    .await;
    let as_reader = url.replacen("postgres@", &format!("{reader}@"), 1);
    let inv =
        catalog::collect(&common::spec("database", &as_reader), None, 1).await.expect("inventory as a non-superuser");
    let mappings = inv.class(Class::UserMappings);
    assert_eq!(mappings["for pgshift_app server hidden_srv"], "options not readable", "{mappings:?}");
    assert_eq!(mappings["for PUBLIC server hidden_srv"], "options not readable", "{mappings:?}");
    assert_eq!(mappings[&format!("for {reader} server hidden_srv")], "options user=mine", "its own mapping is read");
    let hidden = inv.not_compared.iter().find(|n| n.starts_with("user mappings' options")).expect("said not compared");
    assert!(
        hidden.contains("for PUBLIC server hidden_srv, for pgshift_app server hidden_srv") && hidden.contains(reader),
        "{hidden}"
    );
    assert!(inv.not_compared.iter().any(|n| n.starts_with("role passwords")), "{:?}", inv.not_compared);
    // verify against a side that reads them: named not compared, not reported as changed
    let r = pgshift::verify::verify(
        &common::spec("source", &as_reader),
        &common::spec("target", &url),
        &Default::default(),
        pgshift::verify::VerifyOptions { checksums: false, workers: 1 },
    )
    .await
    .expect("verify");
    assert!(!r.differences.iter().any(|d| d.class == "user_mappings"), "{:#?}", r.differences);
    assert!(r.not_compared.iter().any(|n| n.starts_with("source: user mappings' options")), "{:?}", r.not_compared);

    // as a superuser every option is read and nothing is said
    let inv = catalog::collect(&common::spec("database", &url), None, 1).await.expect("inventory");
    assert_eq!(inv.class(Class::UserMappings)["for PUBLIC server hidden_srv"], "options user=anyone");
    assert!(inv.not_compared.is_empty(), "{:?}", inv.not_compared);
    common::drop_db(&s.source, "inv_hidden").await;
}

/// The schema pre-flight's probe for security label providers: the target loads only the test
/// provider `pgshift_test`, the "apache" server none (no sepgsql without SELinux, no PostgreSQL
/// Anonymizer package here); each provider not loaded is named, and the probe leaves no label behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_security_label_provider_the_target_has_not_loaded_is_named() {
    let s = common::servers();
    let target = common::connect(&s.target).await;
    let labels = "SELECT count(*) FROM pg_shseclabel";
    let before: i64 = target.query_one(labels, &[]).await.unwrap().get(0);
    let asked = vec!["anon".to_string(), "pgshift_test".to_string(), "selinux".to_string()];
    let missing = catalog::security_labels::not_loaded(&target, &asked).await.expect("probe");
    assert_eq!(missing, ["anon", "selinux"]);
    let apache = common::connect(&s.apache).await;
    assert_eq!(catalog::security_labels::not_loaded(&apache, &asked).await.expect("probe"), asked);
    let after: i64 = target.query_one(labels, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
    // the class is read (the rich fixture holds no label: it loads where no provider is)
    let url = common::rich_db(&s.source, "inv_labels").await;
    let inv = catalog::collect(&common::spec("database", &url), None, 1).await.expect("inventory");
    assert!(inv.objects.contains_key(&Class::SecurityLabels), "security labels listed");
    common::drop_db(&s.source, "inv_labels").await;
}

/// A session can read at another's exported snapshot while that one's transaction is open (the
/// data stage at the backup's), and takes its own once it has ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_reads_at_another_sessions_snapshot_while_it_is_held() {
    let s = common::servers();
    let url = common::db_with(&s.source, "inv_snapshot", "CREATE TABLE t (i int); INSERT INTO t VALUES (1)").await;
    let spec = common::spec("source", &url);
    let holder = catalog::Session::open(&spec).await.expect("the exporting session");
    let id = holder.snapshot().expect("exported").to_string();
    // a row written after the snapshot: not seen at it
    common::connect(&url).await.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let count = "SELECT count(*)::text FROM public.t";
    let (at, shared) = catalog::Session::open_at(&spec, Some(&id)).await.expect("open at the snapshot");
    assert!(shared);
    assert_eq!(at.strings("rows", count).await.unwrap(), vec!["1".to_string()]);
    assert!(at.snapshot().is_some(), "and exports it again for its own readers");
    holder.close().await;
    at.close().await;
    let (own, shared) = catalog::Session::open_at(&spec, Some(&id)).await.expect("open, on its own");
    assert!(!shared, "the exporting transaction ended");
    assert_eq!(own.strings("rows", count).await.unwrap(), vec!["2".to_string()]);
    own.close().await;
    common::drop_db(&s.source, "inv_snapshot").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classes_that_start_from_the_roles_in_use_read_them_once_and_alike() {
    let s = common::servers();
    let url = common::rich_db(&s.source, "inv_roles_once").await;
    let session = catalog::Session::open(&common::spec("source", &url)).await.expect("session");
    let inv = session.inventory().await.expect("inventory");
    session.close().await;
    // each class's own query, with the role search written out in full, on a plain session
    let client = common::connect(&url).await;
    client.batch_execute("SET search_path = pg_catalog").await.unwrap();
    let classes = [
        (Class::Roles, catalog::queries::class_query(Class::Roles).unwrap()),
        (Class::Comments, catalog::queries::class_query(Class::Comments).unwrap()),
        (Class::RolePasswords, catalog::queries::role_passwords()),
        (Class::SecurityLabels, catalog::queries::class_query(Class::SecurityLabels).unwrap()),
    ];
    for (class, sql) in classes {
        assert!(sql.contains(&catalog::queries::used_roles_cte()), "{class:?} starts from the roles in use");
        let full: catalog::Definitions = client
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{class:?}: {e}"))
            .iter()
            .map(|r| (r.get::<_, String>(0), catalog::normalize(r.get(1))))
            .collect();
        assert_eq!(inv.class(class), &full, "{class:?}");
    }
    assert!(inv.class(Class::Roles).contains_key("pgshift_tenant"), "the fixture's roles are there");
    assert!(inv.class(Class::RolePasswords).contains_key("pgshift_tenant"), "and its login roles");
    common::drop_db(&s.source, "inv_roles_once").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row_readers_stopped_midway_stop_on_the_server_too() {
    use pgshift::catalog::rows::{self, HashForm, RowJob};
    let s = common::servers();
    let url = common::db_with(&s.source, "inv_readers_stop", "CREATE TABLE t (i int)").await;
    let spec = common::spec("source", &url);
    // four jobs that each take 30 s on the server, for two readers
    let jobs: Vec<RowJob> = (0..4)
        .map(|i| RowJob {
            name: format!("slow {i}"),
            from: "(SELECT pg_sleep(30)) s".into(),
            columns: vec![],
            form: HashForm::Text,
        })
        .collect();
    let measuring = tokio::spawn(async move { rows::measure(&spec, None, jobs, RowMode::Count, 2, None).await });
    let watcher = common::connect(&url).await;
    let sleeping = || async {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' \
                 AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // the count of sleeping readers once it is `want`, or after `tries` tenths of a second
    let until = |want: i64, tries: u32| async move {
        let mut seen = sleeping().await;
        for _ in 0..tries {
            if seen == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            seen = sleeping().await;
        }
        seen
    };
    assert_eq!(until(2, 100).await, 2, "both readers are on a job");
    // what a cutover does to a live pass in flight, or Ctrl-C to a verify: the future is dropped
    measuring.abort();
    assert_eq!(until(0, 50).await, 0, "the servers' queries were cancelled");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sleeping().await, 0, "and no reader took the next job");
    common::drop_db(&s.source, "inv_readers_stop").await;
}

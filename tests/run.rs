//! `pgshift run` end to end on the real servers: a rich source (RLS with roles, grants, non-default
//! owners, an audit trigger, sequences, a hypertable) migrates with zero differences; a non-empty
//! target is refused with nothing written; `plan init` writes a plan that reads back.

mod common;

async fn rows_of(url: &str, sql: &str) -> Vec<String> {
    let c = common::connect(url).await;
    c.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rich_source_migrates_with_zero_differences() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "run_rich").await;
    // keys on the hypertable: pg_dump writes them as ALTER TABLE ONLY, which TimescaleDB refuses
    common::connect(&src)
        .await
        .batch_execute(
            "ALTER TABLE energy.readings ADD CONSTRAINT readings_pkey PRIMARY KEY (device_id, time); \
             ALTER TABLE energy.readings ADD CONSTRAINT readings_device_fk FOREIGN KEY (device_id) REFERENCES energy.devices (id); \
             CREATE SEQUENCE energy.ticket START 1; ALTER SEQUENCE energy.ticket RESTART WITH 700",
        )
        .await
        .unwrap();
    common::drop_db(&s.target, "run_rich_target").await;
    let tgt = common::url_for(&s.target, "run_rich_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");

    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for stage in ["backup", "environment", "schema", "data", "post-data", "verify"] {
        assert!(
            stdout.contains(&format!("\"event\":\"stage_finished\",\"stage\":\"{stage}\",\"status\":\"done\"")),
            "{stage} done: {stdout}"
        );
    }
    assert!(!stdout.contains(&s.password));
    // the backup released the next stages once its schema archive was written and went on
    // dumping the rows beside them; post-data waited for it to be complete
    let at = |needle: &str| stdout.find(needle).unwrap_or_else(|| panic!("{needle}: {stdout}"));
    let backup_done = at("\"event\":\"stage_finished\",\"stage\":\"backup\"");
    assert!(at("\"event\":\"stage_started\",\"stage\":\"environment\"") < backup_done, "{stdout}");
    assert!(backup_done < at("\"event\":\"stage_started\",\"stage\":\"post-data\""), "{stdout}");
    // the steps pgshift meters itself end full: rows counted, entries restored, tables hashed
    let mut last: std::collections::BTreeMap<(String, String), (u64, u64)> = Default::default();
    for e in stdout.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if e["event"] == "progress" {
            let key = (e["stage"].as_str().unwrap().to_string(), e["item"].as_str().unwrap().to_string());
            last.insert(key, (e["done"].as_u64().unwrap(), e["total"].as_u64().unwrap_or(0)));
        }
    }
    for (stage, item) in [
        ("backup", "tables counted"),
        ("schema", "pg_restore schema"),
        ("post-data", "pg_restore post-data"),
        ("verify", "tables counted and hashed"),
    ] {
        let (done, total) = last
            .get(&(stage.to_string(), item.to_string()))
            .copied()
            .unwrap_or_else(|| panic!("{stage} {item}: {last:#?}"));
        assert!(total > 0 && done == total, "{stage} {item}: {done} of {total}");
    }

    // the proof, again and independently of the run: zero differences with checksums
    let r = pgshift::verify::verify(
        &common::spec("source", &src),
        &common::spec("target", &tgt),
        &Default::default(),
        pgshift::verify::VerifyOptions { checksums: true, workers: 2 },
    )
    .await
    .unwrap();
    assert!(r.clean, "{:#?}", r.differences);
    assert!(r.classes.iter().any(|c| c.class == pgshift::catalog::Class::Policies && c.source > 0));
    assert!(
        stdout.contains("readings_pkey") && stdout.contains("created on the hypertable (without ONLY)"),
        "{stdout}"
    );
    // the audit table: the same rows, not rows the trigger wrote during the load
    let audit = "SELECT format('%s|%s|%s|%s|%s', id, table_name, op, row_data, at) FROM energy.audit_log ORDER BY id";
    let (a, b) = tokio::join!(rows_of(&src, audit), rows_of(&tgt, audit));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    // sequences continue where the source's stopped; the hypertable is one on the target
    for seq in ["energy.device_serial", "energy.ticket"] {
        // energy.ticket was restarted and not used since: is_called is false, which pg_sequences hides
        let q = format!("SELECT format('%s %s', last_value, is_called) FROM {seq}");
        assert_eq!(rows_of(&src, &q).await, rows_of(&tgt, &q).await, "{seq}");
    }
    // large objects: the same OIDs with the same bytes, owners, grants and comments, compared by
    // SQL of this test's own as well as by verify's classes
    let lo = "SELECT format('%s|%s|%s|%s|%s', oid, pg_get_userbyid(lomowner), lomacl, \
              obj_description(oid, 'pg_largeobject'), md5(lo_get(oid))) FROM pg_largeobject_metadata ORDER BY oid";
    let (a, b) = tokio::join!(rows_of(&src, lo), rows_of(&tgt, lo));
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a, b);
    for class in [pgshift::catalog::Class::LargeObjects, pgshift::catalog::Class::LargeObjectContents] {
        assert!(r.classes.iter().any(|c| c.class == class && c.source == 4 && c.target == 4), "{class:?}");
    }
    assert!(stdout.contains("4 large objects"), "{stdout}");
    let ht = "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables";
    assert_eq!(rows_of(&tgt, ht).await, vec!["energy.readings".to_string()]);

    // run again: the journal says every stage is done, so nothing is redone without --restart
    let again = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to redo"));
    assert_eq!(std::fs::read_dir(dir.path().join("backups")).unwrap().count(), 1);
    // the backup dumped every row once, into the archive; data.sql only when the plan asks
    let run_dir = std::fs::read_dir(dir.path().join("backups")).unwrap().next().unwrap().unwrap().path();
    let manifest = pgshift::pgtools::manifest::Manifest::load(&run_dir).unwrap();
    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"full.dump") && names.contains(&"schema.sql"), "{names:?}");
    assert!(!names.contains(&"data.sql") && !run_dir.join("data.sql").exists(), "{names:?}");
    assert!(manifest.complete && names.contains(&"schema.dump"), "{names:?}");
    // run.md: each stage's result and the timeline, the backup beside the stages after it
    let report = std::fs::read_to_string(run_dir.join("run.md")).unwrap();
    assert!(report.contains("## Timeline") && report.contains("| backup | done |"), "{report}");
    tokio::join!(common::drop_db(&s.source, "run_rich"), common::drop_db(&s.target, "run_rich_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_target_is_refused_with_nothing_written() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "run_busy").await;
    let tgt = common::fresh_db(&s.target, "run_busy_target").await;
    common::connect(&tgt).await.batch_execute("CREATE TABLE public.precious (id int)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");
    let backups = dir.path().join("backups");

    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("is not empty") && lines[0].contains("public.precious") && lines[0].contains("force = true")
    );
    let objects = rows_of(
        &tgt,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname !~ '^_timescaledb|^timescaledb_'",
    )
    .await;
    assert_eq!(objects, vec!["public.precious".to_string()], "nothing written to the target");
    assert!(std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0) == 0, "no run directory left");

    // without --yes nothing runs at all
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    tokio::join!(common::drop_db(&s.source, "run_busy"), common::drop_db(&s.target, "run_busy_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_init_writes_a_plan_that_reads_back_and_a_bad_plan_names_its_line() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "run_init").await;
    common::connect(&src)
        .await
        .batch_execute("CREATE TABLE public.meter (taken_at timestamptz NOT NULL, kwh real); CREATE INDEX ON public.meter (taken_at)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("pgshift.toml");
    let out = common::pgshift()
        .args(["plan", "init", "--source", &src, "--out", out_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("# table = \"public.meter\"") && text.contains("# time_column = \"taken_at\""), "{text}");
    assert!(text.contains("#   energy.readings"), "existing hypertables are listed: {text}");
    assert!(!text.contains(&s.password));
    let plan = pgshift::plan::Plan::load(&out_file).unwrap();
    assert!(plan.target.container.is_some());

    // a second init does not overwrite; a malformed plan gives the file, line and fix
    let again = common::pgshift()
        .args(["plan", "init", "--source", &src, "--out", out_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    std::fs::write(&out_file, text.replace("jobs = 2", "jobs = \"two\"")).unwrap();
    let bad = common::pgshift().args(["run", "--plan", out_file.to_str().unwrap(), "--yes"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pgshift.toml: line ") && stderr.contains("(fix: "), "{stderr}");
    common::drop_db(&s.source, "run_init").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_init_offers_no_hypertable_and_a_plan_for_another_target_does_not_resume_the_run() {
    let s = common::servers();
    let src = common::db_with(
        &s.source,
        "run_for_src",
        "CREATE EXTENSION IF NOT EXISTS timescaledb;
         CREATE TABLE metrics (at timestamptz NOT NULL, v real);
         SELECT create_hypertable('metrics', 'at');
         CREATE TABLE meter (taken_at timestamptz NOT NULL, kwh real); CREATE INDEX ON meter (taken_at);
         INSERT INTO metrics SELECT '2026-01-01'::timestamptz + i * interval '1 minute', i FROM generate_series(1, 500) i;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.toml");
    let out =
        common::pgshift().args(["plan", "init", "--source", &src, "--out", init.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&init).unwrap();
    assert!(text.contains("# table = \"public.meter\""), "a plain time series is a candidate: {text}");
    assert!(!text.contains("# table = \"public.metrics\""), "a hypertable already is not: {text}");
    assert!(text.contains("#   public.metrics"), "it is listed as recreated: {text}");

    // a run for one target, then the plan names another: refused, with --restart as the fix
    common::drop_db(&s.target, "run_for_a").await;
    common::drop_db(&s.target, "run_for_b").await;
    let plan = common::write_plan(dir.path(), &src, &common::url_for(&s.target, "run_for_a"), "");
    let run = |restart: bool| {
        let mut cmd = common::pgshift();
        cmd.args(["run", "--plan", plan.to_str().unwrap(), "--yes"]);
        if restart {
            cmd.arg("--restart");
        }
        let out = cmd.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, out) = run(false);
    assert_eq!(code, Some(0), "{out}");
    common::write_plan(dir.path(), &src, &common::url_for(&s.target, "run_for_b"), "");
    let (code, out) = run(false);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("run_for_a") && out.contains("run_for_b") && out.contains("--restart"), "{out}");
    let made = common::strings(&s.target, "SELECT count(*)::text FROM pg_database WHERE datname = 'run_for_b'").await;
    assert_eq!(made, ["0"], "nothing made for the new target");
    let (code, out) = run(true);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        common::strings(&common::url_for(&s.target, "run_for_b"), "SELECT count(*)::text FROM metrics").await,
        ["500"]
    );
    tokio::join!(
        common::drop_db(&s.source, "run_for_src"),
        common::drop_db(&s.target, "run_for_a"),
        common::drop_db(&s.target, "run_for_b")
    );
}

/// Drops the subscriptions of the database at `url`, if it exists (DROP DATABASE refuses a
/// database that has one): disabled and detached from their slot first, so nothing connects.
async fn drop_subscriptions(url: &str) {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.password(common::servers().password);
    let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await else { return };
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT quote_ident(subname) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid \
                             WHERE d.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let name: String = r.get(0);
        client
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}"
            ))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_arrives_disabled_said_so_and_its_password_appears_nowhere() {
    let s = common::servers();
    let (src, tgt) = (common::url_for(&s.source, "run_sub"), common::url_for(&s.target, "run_sub_target"));
    tokio::join!(drop_subscriptions(&src), drop_subscriptions(&tgt));
    common::drop_db(&s.target, "run_sub_target").await;
    let secret = "sub-secret-4711";
    // enabled on the source, its publisher nowhere (port 1): its worker retries, harmlessly
    let src = common::db_with(
        &s.source,
        "run_sub",
        &format!(
            "CREATE TABLE sites (id int PRIMARY KEY, name text); INSERT INTO sites VALUES (1, 'Seoul');
             CREATE SUBSCRIPTION pgshift_feed CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere user=app password={secret}'
                 PUBLICATION sites_pub WITH (connect = false, create_slot = false, slot_name = 'pgshift_feed_slot');
             ALTER SUBSCRIPTION pgshift_feed ENABLE;"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // a planned difference, not a loss: the run is clean
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(stdout.contains("subscription pgshift_feed was created disabled on the target"), "{stdout}");
    assert!(stdout.contains("created disabled on the target (two active subscribers"), "{stdout}");
    let state = "SELECT format('%s %s %s', subname, subenabled, subslotname) FROM pg_subscription s \
                 JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = current_database()";
    assert_eq!(rows_of(&src, state).await, vec!["pgshift_feed t pgshift_feed_slot".to_string()]);
    assert_eq!(rows_of(&tgt, state).await, vec!["pgshift_feed f pgshift_feed_slot".to_string()]);
    // its connection string (and password) travels in the archive only: not in output, log or report
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let mut files = vec![dir.path().to_path_buf()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if ["full.dump", "schema.dump", "schema.sql"].contains(&name.as_str()) {
            continue; // the backup: the database as pg_dump writes it
        }
        assert!(!String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains(secret), "{}", p.display());
    }
    // and a real change still counts: another publication on the target is named
    common::connect(&tgt)
        .await
        .batch_execute("ALTER SUBSCRIPTION pgshift_feed SET PUBLICATION devices_pub WITH (refresh = false)")
        .await
        .unwrap();
    let r = pgshift::verify::verify(
        &common::spec("source", &src),
        &common::spec("target", &tgt),
        &Default::default(),
        pgshift::verify::VerifyOptions { checksums: false, workers: 2 },
    )
    .await
    .unwrap();
    assert!(!r.clean);
    assert!(
        r.unexpected_differences().any(|d| d.class == "subscriptions" && d.name == "pgshift_feed"),
        "{:#?}",
        r.differences
    );
    tokio::join!(drop_subscriptions(&src), drop_subscriptions(&tgt));
    tokio::join!(common::drop_db(&s.source, "run_sub"), common::drop_db(&s.target, "run_sub_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ddl_guard_event_trigger_does_not_stop_the_run_and_guards_the_target_after_it() {
    let s = common::servers();
    let src = common::timescale_db(&s.source, "run_guard").await;
    // a DBA's guard: no DDL on this server (created last, so the fixture itself was not refused)
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE FUNCTION public.freeze_ddl() RETURNS event_trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'DDL is frozen on this server (%)', tg_tag; END $$;
             CREATE EVENT TRIGGER pgshift_ddl_freeze ON ddl_command_start
                 WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX', 'CREATE TABLE') EXECUTE FUNCTION public.freeze_ddl();
             CREATE EVENT TRIGGER pgshift_ddl_note ON ddl_command_end EXECUTE FUNCTION public.freeze_ddl();
             ALTER EVENT TRIGGER pgshift_ddl_note ENABLE REPLICA;",
        )
        .await
        .unwrap();
    common::drop_db(&s.target, "run_guard_target").await;
    let tgt = common::url_for(&s.target, "run_guard_target");
    let dir = tempfile::tempdir().unwrap();
    let plan = common::write_plan(dir.path(), &src, &tgt, "");
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(stdout.contains("2 event trigger(s) held disabled until the tuning stage"), "{stdout}");
    let states = "SELECT format('%s %s', evtname, evtenabled) FROM pg_event_trigger ORDER BY 1";
    // TimescaleDB's own event triggers (its DDL handling) enabled throughout, never held
    let expected: Vec<String> =
        ["pgshift_ddl_freeze O", "pgshift_ddl_note R", "timescaledb_ddl_command_end O", "timescaledb_ddl_sql_drop O"]
            .map(String::from)
            .to_vec();
    assert_eq!(rows_of(&tgt, states).await, expected);
    // and it guards the target as it did the source
    let refused = common::connect(&tgt).await.batch_execute("CREATE TABLE public.after_cutover (id int)").await;
    let err = refused.expect_err("the guard refuses DDL on the target");
    assert!(err.as_db_error().is_some_and(|e| e.message().contains("DDL is frozen")), "{err:?}");
    tokio::join!(common::drop_db(&s.source, "run_guard"), common::drop_db(&s.target, "run_guard_target"));
}

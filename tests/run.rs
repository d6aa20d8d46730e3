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
    let ht = "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables";
    assert_eq!(rows_of(&tgt, ht).await, vec!["energy.readings".to_string()]);

    // run again: the journal says every stage is done, so nothing is redone without --restart
    let again = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to redo"));
    assert_eq!(std::fs::read_dir(dir.path().join("backups")).unwrap().count(), 1);
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

//! Stages 6–8 on the real servers: a plain table becomes a hypertable with its data; a hypertable
//! keeps its dimensions and chunk intervals; the server started with the Apache license refuses
//! planned compression in the pre-flight, and recognises every statement pgshift generates for the
//! Timescale-licensed features (it answers with its license error, not a syntax error); an HNSW
//! index on 10,000 random 1536-dimension vectors reports its progress while it builds.

mod common;

use pgshift::engine::{Engine, Event, Stage};
use pgshift::plan::{TuningPlan, VectorPlan};
use pgshift::stages::vectors::VectorStage;
use pgshift::timescaledb::{caggs, jobs, CompressionSetting, ContinuousAggregate, Features, Job};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn strings(url: &str, sql: &str) -> Vec<String> {
    common::connect(url).await.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

const DIMENSIONS: &str =
    "SELECT format('%s.%s %s %s %s %s', hypertable_schema, hypertable_name, column_name, dimension_type, \
     coalesce(time_interval::text, integer_interval::text, '-'), coalesce(num_partitions::text, '-')) \
     FROM timescaledb_information.dimensions ORDER BY 1";

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_table_becomes_a_hypertable_and_hypertables_keep_their_dimensions() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "ts_convert").await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE energy.meter (id bigint NOT NULL, taken_at timestamptz NOT NULL, kwh real, \
               PRIMARY KEY (id, taken_at)); \
             CREATE INDEX meter_taken_idx ON energy.meter (taken_at); \
             INSERT INTO energy.meter SELECT i, '2026-03-01'::timestamptz + make_interval(mins => i), i / 10.0 \
               FROM generate_series(1, 5000) i; \
             CREATE TABLE energy.flows (t timestamptz NOT NULL, pipe int NOT NULL, litres real); \
             SELECT create_hypertable('energy.flows', 't', chunk_time_interval => INTERVAL '6 hours'); \
             SELECT add_dimension('energy.flows', 'pipe', number_partitions => 3); \
             INSERT INTO energy.flows SELECT '2026-03-01'::timestamptz + make_interval(mins => i), i % 7, i \
               FROM generate_series(1, 3000) i;",
        )
        .await
        .unwrap();
    common::drop_db(&s.target, "ts_convert_target").await;
    let tgt = common::url_for(&s.target, "ts_convert_target");
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[hypertables]]\ntable = \"energy.meter\"\ntime_column = \"taken_at\"\n";
    let plan = common::write_plan(dir.path(), &src, &tgt, extra);

    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("chunk interval") && stdout.contains("suggested from its span and size"), "{stdout}");
    let planned: usize = stdout
        .split("no differences beyond ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a clean verify: {stdout}"));

    let dims = strings(&tgt, DIMENSIONS).await;
    let source_dims = strings(&src, DIMENSIONS).await;
    for d in &source_dims {
        assert!(dims.contains(d), "source dimension {d} kept on the target: {dims:?}");
    }
    assert!(dims.iter().any(|d| d.starts_with("energy.meter taken_at Time")), "{dims:?}");
    let count = "SELECT count(*)::text FROM energy.meter";
    assert_eq!(strings(&src, count).await, strings(&tgt, count).await);
    let chunks = strings(&tgt, "SELECT count(*)::text FROM show_chunks('energy.meter')").await;
    assert_ne!(chunks, vec!["0".to_string()], "the rows went into chunks");
    let chunks: usize = chunks[0].parse().unwrap();
    assert_eq!(planned, 1 + chunks, "the conversion and the chunks it made are the planned differences: {stdout}");
    tokio::join!(common::drop_db(&s.source, "ts_convert"), common::drop_db(&s.target, "ts_convert_target"));
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_compression_is_refused_by_the_license_preflight_with_nothing_written() {
    let s = common::servers();
    let src = common::rich_db(&s.source, "ts_license").await;
    common::drop_db(&s.apache, "ts_license_target").await;
    let tgt = common::url_for(&s.apache, "ts_license_target");
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[hypertables]]\ntable = \"energy.audit_log\"\ntime_column = \"at\"\ncompress = true\n\
                 segment_by = \"table_name\"\ncompress_after = \"7 days\"\n";
    let plan = common::write_plan(dir.path(), &src, &tgt, extra);
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Apache-only") && stderr.contains("planned compression of energy.audit_log"), "{stderr}");
    assert!(stderr.contains("Timescale-licensed"), "{stderr}");
    let exists = strings(&s.apache, "SELECT count(*)::text FROM pg_database WHERE datname = 'ts_license_target'").await;
    assert_eq!(exists, vec!["0".to_string()], "nothing written to the target");
    common::drop_db(&s.source, "ts_license").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apache_license_refuses_every_generated_statement_with_its_license_error() {
    // The Apache build cannot run compression, continuous aggregates or jobs, but it parses and
    // resolves them: each statement must fail with the license error, not a syntax or lookup error.
    let s = common::servers();
    let db = common::fresh_db(&s.apache, "ts_sql").await;
    let c = common::connect(&db).await;
    c.batch_execute(
        "CREATE EXTENSION timescaledb; CREATE SCHEMA energy; \
         CREATE TABLE energy.readings (time timestamptz NOT NULL, device_id int NOT NULL, value float8); \
         SELECT create_hypertable('energy.readings', 'time'); \
         INSERT INTO energy.readings VALUES ('2026-01-01', 1, 1.0); \
         CREATE TABLE energy.events (at timestamptz NOT NULL, kind text); SELECT create_hypertable('energy.events', 'at'); \
         CREATE PROCEDURE energy.archive(job_id int, config jsonb) LANGUAGE sql AS $$ SELECT 1 $$",
    )
    .await
    .unwrap();
    let license: String = c.query_one("SHOW timescaledb.license", &[]).await.unwrap().get(0);
    assert_eq!(license, "apache", "the server started with timescaledb.license = apache");
    let job = |proc: &str, hypertable: Option<&str>, config: serde_json::Value| Job {
        proc: proc.into(),
        hypertable: hypertable.map(String::from),
        schedule_interval: "12:00:00".into(),
        config,
        scheduled: true,
        ..Default::default()
    };
    let f = Features {
        compression: vec![CompressionSetting {
            hypertable: "energy.readings".into(),
            segment_by: vec!["device_id".into()],
            order_by: vec!["\"time\" DESC".into()],
            cagg: false,
        }],
        continuous_aggregates: vec![ContinuousAggregate {
            view: "energy.hourly".into(),
            definition: "SELECT time_bucket('1 hour'::interval, \"time\") AS bucket, device_id, avg(value) AS avg \
                         FROM energy.readings GROUP BY 1, 2;"
                .into(),
            materialized_only: true,
            materialization: "_timescaledb_internal._materialized_hypertable_9".into(),
            source: "energy.readings".into(),
            chunk_interval: Some("10 days".into()),
            ..Default::default()
        }],
        jobs: vec![
            job(
                "_timescaledb_functions.policy_compression",
                Some("energy.readings"),
                serde_json::json!({"compress_after": "7 days"}),
            ),
            job(
                "_timescaledb_functions.policy_retention",
                Some("energy.events"),
                serde_json::json!({"drop_after": "1 year"}),
            ),
            job("energy.archive", None, serde_json::json!({"keep": 30})),
        ],
        compressed_until: vec![],
    };
    let mut statements = caggs::compression_statements(&f.compression);
    statements.extend(caggs::create_statements(&f));
    let (plans, unknown) = jobs::plans(&f.jobs);
    assert!(unknown.is_empty(), "{unknown:?}");
    statements.extend(plans.into_iter().map(|p| (p.what, p.create)));
    for (what, sql) in &statements {
        let err = c.batch_execute(sql).await.expect_err(&format!("{what} must be refused on the Apache build: {sql}"));
        let msg = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| err.to_string());
        assert!(msg.contains("not supported under the current \"apache\" license"), "{what}: {sql}\n→ {msg}");
    }
    assert_eq!(statements.len(), 5, "compression, an aggregate, three jobs: {statements:#?}");
    common::drop_db(&s.apache, "ts_sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hnsw_index_on_ten_thousand_1536_dimension_vectors_reports_progress() {
    let s = common::servers();
    let db = common::fresh_db(&s.target, "vec_build").await;
    common::connect(&db)
        .await
        .batch_execute(
            "CREATE EXTENSION vector; CREATE TABLE public.docs (id int PRIMARY KEY, embedding vector(1536)); \
             INSERT INTO public.docs SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 1536) d \
                                              WHERE i > 0)::vector FROM generate_series(1, 10000) i",
        )
        .await
        .unwrap();
    let plan = VectorPlan {
        table: "public.docs".into(),
        column: "embedding".into(),
        dimensions: 1536,
        kind: None,
        index: Some("hnsw".into()),
        opclass: None,
        m: Some(8),
        ef_construction: Some(32),
        lists: None,
    };
    let stage = VectorStage::new(common::spec("target", &db), vec![plan], TuningPlan::default(), Some(64 << 20));
    let (tx, mut rx) = mpsc::channel(100_000);
    let engine = Engine::new(tx, CancellationToken::new());
    let stages: [&dyn Stage; 1] = [&stage];
    engine.preflight(&stages).await.unwrap();
    let outcome = engine.run(&stages, None).await;
    drop(engine);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert!(outcome.succeeded(), "{:?} {events:#?}", outcome.error);
    let progress: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { item, done, .. } if item == "docs_embedding_hnsw_idx" && *done > 0))
        .collect();
    assert!(!progress.is_empty(), "progress events during the build: {events:#?}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Output { line, .. } if line.contains("docs_embedding_hnsw_idx: building index"))));
    assert!(events.iter().any(|e| matches!(e, Event::Warning { message, .. } if message.contains("/dev/shm"))));
    let valid = strings(
        &db,
        "SELECT format('%s %s', am.amname, i.indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'docs_embedding_hnsw_idx'",
    )
    .await;
    assert_eq!(valid, vec!["hnsw t".to_string()], "an HNSW index, valid");
    common::drop_db(&s.target, "vec_build").await;
}

#[test]
fn a_3000_dimension_vector_hnsw_request_is_refused_with_the_halfvec_hint() {
    let s = common::servers();
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[vectors]]\ntable = \"public.kb_documents\"\ncolumn = \"big\"\ndimensions = 3000\nindex = \"hnsw\"\n";
    let plan = common::write_plan(dir.path(), &s.source, &common::url_for(&s.target, "never_made"), extra);
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("at most 2000 dimensions, not 3000") && stderr.contains("halfvec"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_postgresql_source_gets_its_planned_hypertable_and_vector_column() {
    // no TimescaleDB and no pgvector on the source: the target gets both extensions for the plan
    let s = common::servers();
    let src = common::fresh_db(&s.source, "ts_plain").await;
    common::connect(&src)
        .await
        .batch_execute(
            "CREATE TABLE public.meter (id bigint NOT NULL, taken_at timestamptz NOT NULL, kwh real, \
               PRIMARY KEY (id, taken_at)); \
             INSERT INTO public.meter SELECT i, '2026-01-01'::timestamptz + make_interval(mins => i), i \
               FROM generate_series(1, 2000) i; \
             CREATE TABLE public.docs (id int PRIMARY KEY, body text); INSERT INTO public.docs VALUES (1, 'a')",
        )
        .await
        .unwrap();
    common::drop_db(&s.target, "ts_plain_target").await;
    let tgt = common::url_for(&s.target, "ts_plain_target");
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[hypertables]]\ntable = \"public.meter\"\ntime_column = \"taken_at\"\n\
                 [[vectors]]\ntable = \"public.docs\"\ncolumn = \"embedding\"\ndimensions = 3\n";
    let plan = common::write_plan(dir.path(), &src, &tgt, extra);
    let out = common::pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"stage\":\"verify\",\"status\":\"done\""), "{stdout}");
    let extensions = strings(&tgt, "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension").await;
    assert_eq!(extensions, vec!["plpgsql,timescaledb,vector".to_string()]);
    let hypertables = strings(&tgt, "SELECT hypertable_name::text FROM timescaledb_information.hypertables").await;
    assert_eq!(hypertables, vec!["meter".to_string()]);
    tokio::join!(common::drop_db(&s.source, "ts_plain"), common::drop_db(&s.target, "ts_plain_target"));
}

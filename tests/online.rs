//! Online migration against the real test servers (the source runs with `wal_level = logical`):
//! a writer changes the source through the backup, the copy and the catch-up; the cutover drains,
//! verify proves the two equal, and nothing is left on the source. A table the publication would
//! break is refused before anything is made.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Plain tables (a key, REPLICA IDENTITY FULL with equal rows, a user trigger writing an audit
/// table, a sequence) and a compressed hypertable whose new chunks appear during the catch-up.
const ONLINE_SOURCE: &str = r#"
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE public.accounts (id bigserial PRIMARY KEY, name text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0,
                              note text, tags text[], opened timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.audit (id bigserial PRIMARY KEY, account bigint, what text NOT NULL);
CREATE FUNCTION public.audit_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit (account, what) VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
CREATE TRIGGER accounts_audit AFTER INSERT OR UPDATE ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.audit_accounts();
CREATE TABLE public.events_full (k int, v text);
ALTER TABLE public.events_full REPLICA IDENTITY FULL;
CREATE SEQUENCE public.tickets;
-- its changes are not in the WAL: copied again at cutover (a generated column it must not write)
CREATE UNLOGGED TABLE public.cache (id int PRIMARY KEY, hits int NOT NULL, twice int GENERATED ALWAYS AS (hits * 2) STORED);
INSERT INTO public.cache (id, hits) SELECT i, i FROM generate_series(1, 100) i;
CREATE TABLE public.metrics (ts timestamptz NOT NULL, device int NOT NULL, value double precision, PRIMARY KEY (device, ts));
SELECT create_hypertable('public.metrics', 'ts', chunk_time_interval => interval '1 day');
ALTER TABLE public.metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device');
INSERT INTO public.accounts (name, balance, note, tags)
  SELECT 'a' || i, i, CASE WHEN i % 3 = 0 THEN E'tab\there\nline' END, ARRAY['x', 'y' || i] FROM generate_series(1, 2000) i;
INSERT INTO public.events_full SELECT i % 50, 'v' || (i % 7) FROM generate_series(1, 1000) i;
INSERT INTO public.metrics SELECT t, d, d * 1.5 FROM generate_series('2026-01-01'::timestamptz, '2026-01-02 23:00', '10 minutes') t,
  generate_series(1, 5) d;
SELECT compress_chunk(c) FROM show_chunks('public.metrics', older_than => '2026-01-02'::timestamptz) c;
CREATE MATERIALIZED VIEW public.metrics_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
  SELECT time_bucket('1 hour', ts) AS bucket, device, count(*) AS n, sum(value) AS total FROM public.metrics GROUP BY 1, 2
  WITH NO DATA;
SELECT add_compression_policy('public.metrics', compress_after => interval '1 day', initial_start => now() + interval '1 day');
"#;

/// A source database of `ONLINE_SOURCE`, its aggregate refreshed (a refresh cannot run in the
/// fixture's transaction).
async fn online_source(server: &str, name: &str) -> String {
    let src = db_with(server, name, ONLINE_SOURCE).await;
    connect(&src)
        .await
        .batch_execute("CALL refresh_continuous_aggregate('public.metrics_hourly', NULL, '2026-01-02')")
        .await
        .unwrap();
    src
}

/// The fixture's continuous aggregate's materialization hypertable, as a `regclass` text.
const MATERIALIZATION: &str =
    "(SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) \
     FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_hourly')";

async fn one(url: &str, sql: &str) -> String {
    strings(url, sql).await.into_iter().next().unwrap_or_default()
}

/// Changes of every kind, a round at a time, until told to stop; returns the rounds written.
async fn write_until(url: String, stop: Arc<AtomicBool>) -> u64 {
    let c = connect(&url).await;
    let mut round: u64 = 0;
    while !stop.load(Ordering::SeqCst) && round < 2000 {
        round += 1;
        let r = round as i64;
        c.batch_execute(&format!(
            "BEGIN;
             INSERT INTO public.accounts (name, balance, note) VALUES ('w{r}', {r}, 'quote '' and \\ backslash');
             UPDATE public.accounts SET balance = balance + 1, note = 'upd {r}' WHERE id = {};
             DELETE FROM public.accounts WHERE id = {};
             INSERT INTO public.events_full VALUES ({}, 'dup'), ({}, 'dup');
             DELETE FROM public.events_full WHERE ctid = (SELECT ctid FROM public.events_full WHERE k = {} LIMIT 1);
             UPDATE public.events_full SET v = 'changed {r}' WHERE ctid = (SELECT ctid FROM public.events_full WHERE v <> 'dup' LIMIT 1);
             INSERT INTO public.metrics VALUES ('2026-01-03'::timestamptz + interval '1 minute' * {r}, {}, {r});
             UPDATE public.metrics SET value = value + 1000 WHERE device = 1 AND ts = '2026-01-01'::timestamptz + interval '10 minutes' * {};
             SELECT nextval('public.tickets');
             INSERT INTO public.cache (id, hits) VALUES ({r} + 100, {r});
             UPDATE public.cache SET hits = hits + 1 WHERE id = {r} % 100 + 1;
             COMMIT;",
            r * 7 % 2000 + 1,
            r * 13 % 2000 + 1,
            r % 50,
            r % 50,
            (r + 1) % 50,
            r % 5 + 1,
            r % 100,
        ))
        .await
        .unwrap_or_else(|e| panic!("writer round {round}: {e:?}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    round
}

async fn leftovers(source_db: &str) -> Vec<String> {
    let mut left =
        strings(source_db, "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()")
            .await;
    left.extend(strings(source_db, "SELECT pubname::text FROM pg_publication").await);
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_run_carries_every_change_made_during_the_copy_and_leaves_no_slot() {
    let s = servers();
    let src = online_source(&s.source, "online_src").await;
    drop_db(&s.target, "online_dst").await;
    let dst = url_for(&s.target, "online_dst");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &src, &dst, "[online]\nenabled = true\nquiet_seconds = 3\n");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(src.clone(), stop.clone()));
    let run = tokio::task::spawn_blocking(move || run_plan(&plan));
    // the writer goes on through the backup and the copy into the catch-up, then stops
    let stopper = {
        let stop = stop.clone();
        let dir = dir.path().to_path_buf();
        let src = src.clone();
        tokio::spawn(async move {
            until_journal_names_catch_up(&dir).await;
            // the source's own jobs go on during the catch-up: a refresh (its DELETE would fail on a
            // published materialization without an identity) and a compression (between its markers)
            let c = connect(&src).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.batch_execute("CALL refresh_continuous_aggregate('public.metrics_hourly', NULL, NULL)").await.unwrap();
            let job = one(
                &src,
                "SELECT job_id::text FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'",
            )
            .await;
            // the writer updates rows of the chunk it compresses: a deadlock between the two (or
            // the policy's "Failed to compress '1' chunks" over one) is the source's own business
            // (its scheduler retries the job), so is this
            for attempt in 1.. {
                match c.batch_execute(&format!("CALL run_job({job})")).await {
                    Ok(()) => break,
                    Err(e)
                        if attempt < 5
                            && ["deadlock", "compression policy failure"]
                                .iter()
                                .any(|m| format!("{e:?}").contains(m)) => {}
                    Err(e) => panic!("run_job({job}): {e:?}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.batch_execute("CALL refresh_continuous_aggregate('public.metrics_hourly', NULL, NULL)").await.unwrap();
            // retention: the oldest chunk goes on the source (DDL, not in the stream)
            c.batch_execute("SELECT drop_chunks('public.metrics', older_than => '2026-01-02'::timestamptz)")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (code, out) = run.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    stopper.abort();
    assert_eq!(code, 0, "the online run ends verified clean:\n{out}");
    // writes stopped on the DBA's word (no --read-only): verify reads every table again
    assert!(out.contains("every table is read again"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir_of(dir.path()).join("verify.json")).unwrap()).unwrap();
    assert!(report.get("reused").is_none(), "{report}");
    assert!(rounds > 20, "the writer wrote during the run ({rounds} rounds)");
    assert!(out.contains("catch-up") && out.contains("cutover"), "{out}");

    same_rows(&src, &dst).await;
    assert!(out.contains("unlogged table(s) copied again"), "{out}");
    let cache = "SELECT count(*)::text || ' ' || sum(hits)::text || ' ' || sum(twice)::text FROM public.cache";
    assert_eq!(one(&src, cache).await, one(&dst, cache).await, "the unlogged table's changes reach the target");
    assert_ne!(one(&dst, cache).await, "100 5050 10100", "the writer changed the unlogged table");
    let written = one(&src, "SELECT count(*)::text FROM public.accounts WHERE name LIKE 'w%'").await;
    assert!(written.parse::<u64>().unwrap() > 0);
    assert_eq!(
        one(&src, "SELECT last_value::text FROM public.tickets").await,
        one(&dst, "SELECT last_value::text FROM public.tickets").await,
        "the sequence is set at cutover"
    );
    assert!(
        one(&dst, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND range_start >= '2026-01-03'")
            .await
            != "0",
        "the chunk made during the catch-up is on the target"
    );
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "no slot or publication is left on the source");
    assert_eq!(one(&dst, "SELECT count(*)::text FROM pg_namespace WHERE nspname = 'pgshift'").await, "0");
    assert_eq!(
        one(&src, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed").await,
        one(&dst, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed").await,
        "the chunks the source's job compressed during the catch-up"
    );
    assert_eq!(
        one(&dst, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND range_end <= '2026-01-02'").await,
        "0",
        "the chunk the source dropped during the catch-up is dropped on the target"
    );
    assert_eq!(
        one(&src, "SELECT coalesce(string_agg(relname, ', '), '') FROM pg_class WHERE relreplident = 'f' AND relname <> 'events_full'")
            .await,
        "",
        "the materialization's replica identity is put back"
    );
}

/// From an older major (PostgreSQL 15 with TimescaleDB 2.15.3, onto 17 with 2.19.3). TimescaleDB
/// before 2.16 writes no compression markers: a source with compression is refused, nothing made
/// on it. Without compression it runs; before 17 no logical message can ask for its own flush, so
/// each of the stream's markers (the quiet time's, the cutover's drain) is flushed by a small
/// transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_run_from_an_older_major_carries_every_change() {
    let s = servers();
    let src = online_source(&s.old_source, "online_old_src").await;
    drop_db(&s.target, "online_old_dst").await;
    let dst = url_for(&s.target, "online_old_dst");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &src, &dst, "[online]\nenabled = true\nquiet_seconds = 3\n");
    let identities = "SELECT string_agg(relname::text || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r'";
    let before = one(&src, identities).await;
    let (code, out) = run_plan(&plan);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("enable_compression_wal_markers is unknown (TimescaleDB before 2.16)"), "{out}");
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "refused before anything was made");
    assert_eq!(one(&src, identities).await, before);
    // what a DBA on 2.15 can do for the window: no compression during it
    connect(&src)
        .await
        .batch_execute(
            "SELECT decompress_chunk(c) FROM show_chunks('public.metrics') c WHERE c IN \
               (SELECT format('%I.%I', chunk_schema, chunk_name)::regclass FROM timescaledb_information.chunks WHERE is_compressed);
             SELECT remove_compression_policy('public.metrics');
             ALTER TABLE public.metrics SET (timescaledb.compress = false);",
        )
        .await
        .unwrap();
    drop_db(&s.target, "online_old_dst").await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(src.clone(), stop.clone()));
    let run = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || run_plan(&plan))
    };
    // the writer goes on into the catch-up, then stops: the quiet time ends the catch-up
    let stopper = {
        let stop = stop.clone();
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move {
            until_journal_names_catch_up(&dir).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (code, out) = run.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    stopper.abort();
    assert_eq!(code, 0, "the online run from PostgreSQL 15 ends verified clean:\n{out}");
    assert!(rounds > 20, "the writer wrote during the run ({rounds} rounds)");
    assert!(out.contains("catch-up") && out.contains("cutover"), "{out}");
    same_rows(&src, &dst).await;
    assert_eq!(
        one(&src, "SELECT last_value::text FROM public.tickets").await,
        one(&dst, "SELECT last_value::text FROM public.tickets").await,
        "the sequence is set at cutover"
    );
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "no slot or publication is left on the source");
    drop_db(&s.old_source, "online_old_src").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_replica_identity_is_refused_with_nothing_made_on_the_source() {
    let s = servers();
    let src = db_with(
        &s.source,
        "online_noid",
        "CREATE TABLE public.keyed (id int PRIMARY KEY); CREATE TABLE public.loose (a int, b text);
         INSERT INTO public.loose VALUES (1, 'x');",
    )
    .await;
    drop_db(&s.target, "online_noid_dst").await;
    let dst = url_for(&s.target, "online_noid_dst");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &src, &dst, "");
    let out = pgshift().args(["run", "--plan", plan.to_str().unwrap(), "--yes", "--online"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("public.loose") && text.contains("ALTER TABLE public.loose REPLICA IDENTITY FULL"),
        "one line naming the table and the fix:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "nothing made on the source");
    assert_eq!(one(&s.target, "SELECT count(*)::text FROM pg_database WHERE datname = 'online_noid_dst'").await, "0");
}

/// `pgshift run --plan PLAN --yes` as a child process, its output to a file in `dir`.
fn spawn_run(plan: &std::path::Path, dir: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    std::process::Command::new(assert_cmd::cargo::cargo_bin("pgshift"))
        .args(["run", "--plan", plan.to_str().unwrap(), "--yes"])
        .env("PGPASSWORD", servers().password)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The (only) run directory under `dir/backups`.
fn run_dir_of(dir: &std::path::Path) -> std::path::PathBuf {
    let mut runs: Vec<_> = std::fs::read_dir(dir.join("backups")).unwrap().flatten().map(|d| d.path()).collect();
    runs.sort();
    runs.pop().expect("a run directory")
}

/// Waits (up to two minutes) until a run's journal under `dir/backups` names the catch-up stage.
async fn until_journal_names_catch_up(dir: &std::path::Path) {
    for _ in 0..600 {
        let catching =
            std::fs::read_dir(dir.join("backups")).into_iter().flatten().flatten().any(|d| {
                std::fs::read_to_string(d.path().join("journal.json")).unwrap_or_default().contains("catch-up")
            });
        if catching {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the catch-up has stored a position on the target (it applies changes).
async fn until_catching_up(dst: &str, dir: &std::path::Path) {
    let mut config: tokio_postgres::Config = dst.parse().unwrap();
    config.password(servers().password);
    for _ in 0..900 {
        // the target database appears during the run
        if let Ok((c, conn)) = config.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            if c.query_one("SELECT count(*) FROM pgshift.online_position", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) > 0)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the catch-up never stored a position:\n{}",
        std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
    );
}

/// An online run of the fixture into database `NAME_dst`, with the writer on, caught up to the
/// point where the catch-up has stored a position.
struct Catching {
    src: String,
    dst: String,
    dir: tempfile::TempDir,
    plan: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<u64>,
    child: std::process::Child,
}

impl Catching {
    async fn start(name: &str) -> Self {
        Self::start_quiet(name, 3).await
    }

    /// With the catch-up ending after `quiet` seconds without a write.
    async fn start_quiet(name: &str, quiet: u64) -> Self {
        Self::start_with(name, quiet, "").await
    }

    /// With `setup` run on the source before the run.
    async fn start_with(name: &str, quiet: u64, setup: &str) -> Self {
        let s = servers();
        let src = online_source(&s.source, name).await;
        connect(&src).await.batch_execute(setup).await.unwrap();
        drop_db(&s.target, &format!("{name}_dst")).await;
        let dst = url_for(&s.target, &format!("{name}_dst"));
        let dir = tempfile::tempdir().unwrap();
        let plan = write_plan(dir.path(), &src, &dst, &format!("[online]\nenabled = true\nquiet_seconds = {quiet}\n"));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_until(src.clone(), stop.clone()));
        let child = spawn_run(&plan, dir.path());
        until_catching_up(&dst, dir.path()).await;
        Self { src, dst, dir, plan, stop, writer, child }
    }
}

async fn same_rows(src: &str, dst: &str) {
    for table in [
        "public.accounts",
        "public.audit",
        "public.events_full",
        "public.cache",
        "public.metrics",
        "public.metrics_hourly",
    ] {
        let sql = format!("SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t");
        assert_eq!(one(src, &sql).await, one(dst, &sql).await, "{table} is the same on both sides");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_killed_mid_stream_resumes_with_nothing_lost_or_twice() {
    let Catching { src, dst, dir: _dir, plan, stop, writer, mut child } = Catching::start("online_kill").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // the application goes on writing while pgshift is down
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    let (code, out) = run_plan(&plan);
    assert_eq!(code, 0, "the rerun resumes the catch-up and ends verified clean:\n{out}");
    assert!(out.contains("resuming the run"), "{out}");
    assert!(rounds > 20, "{rounds} rounds written");
    same_rows(&src, &dst).await;
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "no slot or publication is left on the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_during_the_catch_up_stops_it_with_the_fix_and_keeps_the_slot() {
    let Catching { src, dst, dir, plan, stop, writer, mut child } = Catching::start("online_ddl").await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    connect(&src)
        .await
        .batch_execute("ALTER TABLE public.accounts ADD COLUMN region text; INSERT INTO public.accounts (name, region) VALUES ('after', 'eu')")
        .await
        .unwrap();
    let status = child.wait().unwrap();
    let out = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert_ne!(status.code(), Some(0), "{out}");
    assert!(
        out.contains("public.accounts changed shape") && out.contains("column region is not on the target"),
        "one line naming the table, the column and the fix:\n{out}"
    );
    assert!(!leftovers(&src).await.is_empty(), "the slot is kept for the rerun");
    // the DBA applies the change on the target; the rerun goes on from where it stopped
    connect(&dst).await.batch_execute("ALTER TABLE public.accounts ADD COLUMN region text").await.unwrap();
    let (code, out) = run_plan(&plan);
    assert_eq!(code, 0, "{out}");
    same_rows(&src, &dst).await;
    assert_eq!(one(&dst, "SELECT region FROM public.accounts WHERE name = 'after'").await, "eu");
    assert_eq!(leftovers(&src).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_abort_leaves_no_slot_publication_or_identity_behind() {
    // the materialization had REPLICA IDENTITY NOTHING: it gets it back, not DEFAULT
    let Catching { src, dst, dir: _dir, plan, stop, writer, mut child } = Catching::start_with(
        "online_abort",
        3,
        &format!("DO $$ BEGIN EXECUTE format('ALTER TABLE %s REPLICA IDENTITY NOTHING', {MATERIALIZATION}); END $$"),
    )
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(leftovers(&src).await.len(), 2, "the killed run left its slot and publication");
    let out = pgshift().args(["online", "abort", "--plan", plan.to_str().unwrap()]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("dropped on the source") && text.contains("replica identity back to NOTHING"), "{text}");
    // the application goes on: its refresh and its writes work without the publication
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    connect(&src)
        .await
        .batch_execute("CALL refresh_continuous_aggregate('public.metrics_hourly', NULL, NULL)")
        .await
        .unwrap();
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "no slot or publication is left on the source");
    assert_eq!(
        one(&src, "SELECT coalesce(string_agg(relname, ', '), '') FROM pg_class WHERE relreplident = 'f' AND relname <> 'events_full'")
            .await,
        "",
        "the materialization's replica identity is put back"
    );
    assert_eq!(
        one(&src, &format!("SELECT relreplident::text FROM pg_class WHERE oid = {MATERIALIZATION}::regclass")).await,
        "n"
    );
    assert_eq!(one(&dst, "SELECT count(*)::text FROM pg_namespace WHERE nspname = 'pgshift'").await, "0");
    let again = pgshift().args(["online", "abort", "--plan", plan.to_str().unwrap()]).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("no pgshift slot or publication"),
        "a second abort finds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_request_ends_the_catch_up_at_once_and_can_make_the_source_read_only() {
    // a quiet time no test waits for: only the request can end the catch-up
    let Catching { src, dst, dir, plan, stop, writer, mut child } = Catching::start_with(
        "online_request",
        3600,
        "CREATE TABLE public.quiet_ref (k int PRIMARY KEY, v text); \
         INSERT INTO public.quiet_ref SELECT i, 'r' || i FROM generate_series(1, 500) i;",
    )
    .await;
    // live verification measures both sides while the writer goes on; once the writer stops, a
    // later pass measures again what it wrote (cooled)
    let log_path = dir.path().join("run.log");
    let passes = || std::fs::read_to_string(&log_path).unwrap_or_default().matches("tables and chunks (").count();
    for _ in 0..600 {
        if passes() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // DDL the stream does not carry is shown at the next pass, and no false alarm before it
    let log_has = |what: &str| std::fs::read_to_string(&log_path).unwrap_or_default().contains(what);
    assert!(!log_has("the catalogs differ"), "{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    connect(&src).await.batch_execute("CREATE INDEX quiet_ref_v ON public.quiet_ref (v)").await.unwrap();
    for _ in 0..300 {
        if log_has("the catalogs differ now") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.contains("the catalogs differ now (1 difference(s): indexes public.quiet_ref_v: missing on target"),
        "{log}"
    );
    connect(&dst).await.batch_execute("CREATE INDEX quiet_ref_v ON public.quiet_ref (v)").await.unwrap();
    for _ in 0..300 {
        if log_has("the catalogs agree again") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log_has("the catalogs agree again"), "{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    // the application stops, a session of it stays open
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for _ in 0..600 {
        if passes() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a last change reaches a chunk measured already (it must be read again); the DBA asks for a
    // read-only cutover
    connect(&src)
        .await
        .batch_execute("DELETE FROM public.metrics WHERE ts = '2026-01-02 12:00+00' AND device = 3")
        .await
        .unwrap();
    // a table taken out of the publication after it was measured: its changes would not be
    // streamed, so its measurement is not used
    let publication: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir_of(dir.path()).join("online.json")).unwrap()).unwrap();
    let publication = publication["publication"].as_str().unwrap().to_string();
    connect(&src)
        .await
        .batch_execute(&format!("ALTER PUBLICATION {publication} DROP TABLE public.quiet_ref"))
        .await
        .unwrap();
    let idle = connect(&src).await;
    let out = pgshift().args(["online", "cutover", "--plan", plan.to_str().unwrap(), "--read-only"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let mut code = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(0), "the run cuts over and verifies within a minute of the request:\n{log}");
    assert!(log.contains("cutover requested") && log.contains("read-only now"), "{log}");
    assert!(log.contains("online window"), "verify reports the window:\n{log}");
    assert!(log.contains("live verification:"), "{log}");
    same_rows(&src, &dst).await;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir_of(dir.path()).join("verify.json")).unwrap()).unwrap();
    let reused: Vec<&str> = report["reused"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(reused.contains(&"public.events_full"), "the FULL-identity table, measured again once cooled: {reused:?}");
    assert!(!reused.contains(&"public.quiet_ref"), "no longer published: read again: {reused:?}");
    assert!(reused.iter().any(|n| n.starts_with("public.metrics_hourly (materialization) [")), "{reused:?}");
    assert!(reused.contains(&"public.accounts"), "the writer's table, measured again once it cooled: {reused:?}");
    assert!(
        !reused.iter().any(|n| n.starts_with("public.metrics [ts [2026-01-02")),
        "what the stream touched after the measuring is read again: {reused:?}"
    );
    assert_eq!(leftovers(&src).await, Vec::<String>::new(), "no slot or publication is left on the source");
    assert!(idle.simple_query("SELECT 1").await.is_err(), "the application's session was ended");
    assert_eq!(one(&src, "SHOW default_transaction_read_only").await, "on", "new sessions are read-only");
    let c = connect(&src).await;
    assert!(
        c.batch_execute("INSERT INTO public.audit (what) VALUES ('late')").await.is_err(),
        "no write after the cutover"
    );
    assert!(!dir.path().join("cutover.request").exists(), "the request was consumed");
    // the catch-up is over: a new request is refused, and abort leaves the finished run as it is
    let again = pgshift().args(["online", "cutover", "--plan", plan.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&again.stderr);
    assert_ne!(again.status.code(), Some(0), "{text}");
    assert!(text.contains("is not running (it is done)"), "{text}");
    assert!(!dir.path().join("cutover.request").exists());
    let abort = pgshift().args(["online", "abort", "--plan", plan.to_str().unwrap()]).output().unwrap();
    assert_eq!(abort.status.code(), Some(0));
    assert_eq!(one(&src, "SHOW default_transaction_read_only").await, "on", "a finished cutover is not undone");
}

/// The identities a run gave are put back as they were, and only once no publication publishes
/// the table's updates or deletes (another online run's, here a publication of the application's;
/// one of inserts only needs no identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identities_go_back_as_they_were_once_nothing_publishes_them() {
    let s = servers();
    let src = db_with(
        &s.source,
        "online_identity",
        "CREATE EXTENSION IF NOT EXISTS timescaledb;
         CREATE TABLE public.a (k int); CREATE TABLE public.b (k int);
         ALTER TABLE public.a REPLICA IDENTITY FULL; ALTER TABLE public.b REPLICA IDENTITY FULL;
         CREATE PUBLICATION app_changes FOR TABLE public.a;
         CREATE PUBLICATION app_inserts FOR TABLE public.b WITH (publish = 'insert');",
    )
    .await;
    let spec = spec("source", &src);
    let tables = ["public.a".to_string(), "public.b".to_string()];
    let was_nothing = ["public.b".to_string()];
    let kept = pgshift::online::slot::reset_identities(&spec, &tables, &was_nothing).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, "public.a");
    assert!(kept[0].1.contains("publication app_changes still publishes it"), "{}", kept[0].1);
    assert!(kept[0].1.contains("ALTER TABLE public.a REPLICA IDENTITY DEFAULT"), "the fix: {}", kept[0].1);
    let ident = "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relname IN ('a', 'b')";
    assert_eq!(one(&src, ident).await, "a=f,b=n");
    connect(&src).await.batch_execute("DROP PUBLICATION app_changes").await.unwrap();
    assert_eq!(pgshift::online::slot::reset_identities(&spec, &tables, &was_nothing).await, vec![]);
    assert_eq!(one(&src, ident).await, "a=d,b=n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_plan_makes_a_hypertable_receives_the_plain_tables_changes() {
    let s = servers();
    let src = db_with(
        &s.source,
        "online_convert",
        "CREATE TABLE public.samples (taken_at timestamptz NOT NULL, sensor int NOT NULL, v double precision,
                                      PRIMARY KEY (sensor, taken_at));
         INSERT INTO public.samples SELECT '2026-01-01'::timestamptz + i * interval '1 minute', i % 4, i
           FROM generate_series(1, 3000) i;",
    )
    .await;
    drop_db(&s.target, "online_convert_dst").await;
    let dst = url_for(&s.target, "online_convert_dst");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        &src,
        &dst,
        "[online]\nenabled = true\nquiet_seconds = 2\n[[hypertables]]\ntable = \"public.samples\"\ntime_column = \"taken_at\"\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (src, stop) = (src.clone(), stop.clone());
        tokio::spawn(async move {
            let c = connect(&src).await;
            let mut round = 0i64;
            while !stop.load(Ordering::SeqCst) && round < 3000 {
                round += 1;
                // new rows weeks later (new chunks on the target), an update and a delete of copied ones
                c.batch_execute(&format!(
                    "INSERT INTO public.samples VALUES ('2026-03-01'::timestamptz + interval '1 hour' * {round}, {}, {round});
                     UPDATE public.samples SET v = -v WHERE sensor = {} AND taken_at = '2026-01-01'::timestamptz + interval '1 minute' * {};
                     DELETE FROM public.samples WHERE sensor = {} AND taken_at = '2026-01-01'::timestamptz + interval '1 minute' * {};",
                    round % 4,
                    (round * 4) % 4,
                    round * 4,
                    (round * 4 + 1) % 4,
                    round * 4 + 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            round
        })
    };
    let stopper = {
        let (stop, dir) = (stop.clone(), dir.path().to_path_buf());
        tokio::spawn(async move {
            until_journal_names_catch_up(&dir).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let (code, out) = tokio::task::spawn_blocking(move || run_plan(&plan)).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    stopper.abort();
    assert_eq!(code, 0, "the online run into a new hypertable ends verified clean:\n{out}");
    assert!(rounds > 20, "{rounds} rounds written");
    let sql = "SELECT count(*)::text || ' ' || md5(string_agg(t::text, ',' ORDER BY t::text)) FROM public.samples t";
    assert_eq!(one(&src, sql).await, one(&dst, sql).await, "the same rows on both sides");
    let chunks = one(&dst, "SELECT count(*)::text FROM timescaledb_information.chunks WHERE hypertable_name = 'samples' AND range_start >= '2026-03-01'").await;
    assert_ne!(chunks, "0", "the rows written during the catch-up went into new chunks of the target's hypertable");
    assert_eq!(leftovers(&src).await, Vec::<String>::new());
}

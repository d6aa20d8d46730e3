//! The console's views in their key states, drawn on ratatui's TestBackend and compared with insta
//! snapshots (tests/snapshots/). The app is driven the way the real console drives it: engine
//! events in, keys in, commands out. The last test runs real stages through the console's runner
//! and waits for its events (no sleeping).

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use futures_util::future::BoxFuture;
use insta::assert_snapshot;
use pgshift::engine::{Event, Stage, StageContext, StageError, StageStatus, Stream, Unit};
use pgshift::pgtools::process::{run_tool, Discard, LineClass, ToolCommand};
use pgshift::tui::app::{App, Command, Msg, View};
use pgshift::tui::keymap::Keymap;
use pgshift::tui::runner::Runner;
use pgshift::tui::text::Lang;
use pgshift::tui::ui;
use pgshift::verify::VerifyReport;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const STAGES: [(&str, &str); 9] = [
    ("backup", "Backup: inventory, pg_dump schema and data, roles, manifest"),
    ("environment", "Environment: the TimescaleDB + pgvector server"),
    ("schema", "Schema: roles, then the schema in dependency order"),
    ("data", "Data: parallel binary COPY, triggers off, sequences set"),
    ("post-data", "Post-data: indexes, constraints, triggers, grants"),
    ("timescaledb", "TimescaleDB: compression, continuous aggregates, policies"),
    ("pgvector", "pgvector: vector columns and indexes"),
    ("tuning", "Tuning: ANALYZE, unused indexes"),
    ("verify", "Verify: objects, definitions, grants, rows and checksums, source against target"),
];

fn app(lang: Lang) -> App {
    let plan = vec![
        ("source".to_string(), "postgres@10.0.0.5:5432/ecoanp".to_string()),
        ("target".to_string(), "container pgshift-timescaledb (postgres@127.0.0.1:55432/ecoanp)".to_string()),
        ("hypertable".to_string(), "energy.readings by ts".to_string()),
        ("vector".to_string(), "kb.articles.embedding vector(384) · hnsw".to_string()),
    ];
    let mut app = App::new(
        lang.text(),
        Keymap::defaults(),
        "demo.toml → container pgshift-timescaledb".into(),
        "postgres@127.0.0.1:55432/ecoanp".into(),
        &STAGES,
        plan,
        Duration::from_secs(30),
    );
    app.freeze_clock();
    app
}

fn render(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(110, 32)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    terminal.backend().to_string()
}

fn key(c: char) -> KeyEvent {
    let m = if c.is_ascii_uppercase() { KeyModifiers::SHIFT } else { KeyModifiers::NONE };
    KeyEvent::new(KeyCode::Char(c), m)
}

fn press(app: &mut App, keys: &str) -> Vec<Command> {
    keys.chars().flat_map(|c| app.on_key(key(c))).collect()
}

fn ev(app: &mut App, e: Event) {
    app.on_msg(Msg::Engine(e));
}

fn started(app: &mut App, stage: &str) {
    let title = STAGES.iter().find(|(id, _)| *id == stage).unwrap().1.to_string();
    ev(app, Event::StageStarted { stage: stage.into(), title });
}

fn finished(
    app: &mut App,
    stage: &str,
    status: StageStatus,
    ms: u64,
    summary: Option<&str>,
    error: Option<(&str, &str)>,
) {
    ev(
        app,
        Event::StageFinished {
            stage: stage.into(),
            status,
            elapsed_ms: ms,
            summary: summary.map(Into::into),
            error: error.map(|e| e.0.into()),
            fix: error.map(|e| e.1.into()),
        },
    );
}

fn out(app: &mut App, stage: &str, source: &str, stream: Stream, line: &str) {
    ev(app, Event::Output { stage: stage.into(), source: source.into(), stream, line: line.into() });
}

fn progress(app: &mut App, stage: &str, item: &str, done: u64, total: u64, unit: Unit) {
    ev(app, Event::Progress { stage: stage.into(), item: item.into(), done, total: Some(total), unit });
}

/// Backup and environment done, data running with output and progress.
fn mid_run(app: &mut App) {
    started(app, "backup");
    out(app, "backup", "pg_dump schema.sql", Stream::Info, "wrote schema.sql (212 KiB)");
    app.advance(Duration::from_millis(2500));
    finished(app, "backup", StageStatus::Done, 2500, Some("8 files, 41.2 MiB, manifest.json"), None);
    started(app, "environment");
    app.advance(Duration::from_secs(9));
    finished(
        app,
        "environment",
        StageStatus::Done,
        9100,
        Some("PostgreSQL 17.6, TimescaleDB 2.19.3 (apache), pgvector 0.8.0"),
        None,
    );
    started(app, "schema");
    finished(app, "schema", StageStatus::Done, 3200, Some("412 entries restored in 1 round"), None);
    started(app, "data");
    for i in 0..30 {
        out(app, "data", "copy", Stream::Info, &format!("energy.readings chunk {i}: 65536 rows"));
    }
    out(app, "data", "copy", Stream::Stderr, "NOTICE: table \"audit_log\" has triggers disabled for the load");
    progress(app, "data", "energy.readings", 400_000, 2_000_000, Unit::Rows);
    progress(app, "data", "public.devices", 1200, 1200, Unit::Rows);
    app.advance(Duration::from_secs(10));
    progress(app, "data", "energy.readings", 1_200_000, 2_000_000, Unit::Rows);
    progress(app, "data", "kb.articles", 30 << 20, 120 << 20, Unit::Bytes);
    app.advance(Duration::from_secs(2));
}

fn report(json: &str) -> VerifyReport {
    serde_json::from_str(json).unwrap()
}

fn side(port: u16) -> String {
    format!(
        r#"{{"connection":"postgres@127.0.0.1:{port}/ecoanp","server":{{"version":"17.6","version_num":170006,"database":"ecoanp","user":"postgres"}},
        "timescaledb":{{"version":"2.19.3","license":"apache"}},"pgvector":"0.8.0","excluded":[]}}"#
    )
}

fn verify_report(extra_diff: bool) -> VerifyReport {
    let extra = if extra_diff {
        r#",{"class":"policies","name":"energy.readings.tenant_isolation","change":"missing","source":"USING (tenant = current_setting('app.tenant'))"}"#
    } else {
        ""
    };
    let policies_target = if extra_diff { 3 } else { 4 };
    report(&format!(
        r#"{{"pgshift_version":"0.1.0","source":{},"target":{},"checksums":true,
        "classes":[
          {{"class":"schemas","source":3,"target":3,"difference":0,"missing":0,"extra":0,"changed":0}},
          {{"class":"tables","source":9,"target":9,"difference":0,"missing":0,"extra":0,"changed":0}},
          {{"class":"columns","source":61,"target":62,"difference":1,"missing":0,"extra":1,"changed":0}},
          {{"class":"functions","source":7,"target":7,"difference":0,"missing":0,"extra":0,"changed":1}},
          {{"class":"policies","source":4,"target":{policies_target},"difference":{},"missing":{},"extra":0,"changed":0}},
          {{"class":"hypertables","source":0,"target":1,"difference":1,"missing":0,"extra":1,"changed":0}},
          {{"class":"jobs","source":0,"target":0,"difference":0,"missing":0,"extra":0,"changed":0}}
        ],
        "differences":[
          {{"class":"columns","name":"kb.articles.embedding","change":"extra","target":"vector(384)","allowed":"vector column added by the plan"}},
          {{"class":"functions","name":"public.touch_updated()","change":"changed","source":"BEGIN NEW.updated := now(); END","target":"BEGIN NEW.updated := clock_timestamp(); END"}},
          {{"class":"hypertables","name":"energy.readings","change":"extra","allowed":"converted to a hypertable by the plan"}}{extra}
        ],
        "tables":[
          {{"name":"energy.readings","kind":"hypertable","source_rows":2000000,"target_rows":2000000,"source_checksum":"9f1c2e77aa01","target_checksum":"9f1c2e77aa01","status":"same"}},
          {{"name":"public.devices","kind":"table","source_rows":1200,"target_rows":1199,"source_checksum":"11aa","target_checksum":"22bb","status":"count_differs"}},
          {{"name":"kb.articles","kind":"table","source_rows":500,"target_rows":500,"source_checksum":"77ee00aa1234","target_checksum":"77ee00aa1234","status":"same"}}
        ],
        "naive":[],"warnings":[],"unexpected":{},"planned":2,"clean":false}}"#,
        side(5432),
        side(55432),
        policies_target - 4,
        4 - policies_target,
        if extra_diff { 3 } else { 2 },
    ))
}

fn clean_report() -> VerifyReport {
    report(&format!(
        r#"{{"pgshift_version":"0.1.0","source":{},"target":{},"checksums":true,
        "classes":[
          {{"class":"tables","source":9,"target":9,"difference":0,"missing":0,"extra":0,"changed":0}},
          {{"class":"policies","source":4,"target":4,"difference":0,"missing":0,"extra":0,"changed":0}}
        ],
        "differences":[],
        "tables":[{{"name":"energy.readings","kind":"hypertable","source_rows":2000000,"target_rows":2000000,"source_checksum":"9f1c2e77aa01","target_checksum":"9f1c2e77aa01","status":"same"}}],
        "naive":[],"warnings":[],"unexpected":0,"planned":0,"clean":true}}"#,
        side(5432),
        side(55432)
    ))
}

#[test]
fn stages_view_before_anything_ran() {
    let app = app(Lang::En);
    assert_snapshot!(render(&app));
}

#[test]
fn stages_view_while_data_streams_with_progress_and_eta() {
    let mut app = app(Lang::En);
    mid_run(&mut app);
    ev(&mut app, Event::Sessions { stage: "data".into(), busy: 4 });
    let screen = render(&app);
    assert!(screen.contains("ETA"), "a moving item shows its time left");
    // how many server sessions work, the rate and a sparkline of the last minute
    assert!(screen.contains("Progress · 4 server session(s) busy · 80000 rows/s"), "{screen}");
    assert!(screen.contains('█'), "{screen}");
    assert_snapshot!(screen);
    // once the stage is done, neither is shown
    finished(&mut app, "data", StageStatus::Done, 14_000, Some("43 tables"), None);
    press(&mut app, "4");
    assert!(!render(&app).contains("session(s) busy"));
}

#[test]
fn a_stage_held_on_a_lock_names_the_wait_and_the_session_holding_it() {
    let mut app = app(Lang::En);
    mid_run(&mut app);
    finished(&mut app, "data", StageStatus::Done, 14_000, Some("43 tables, 2,001,200 rows"), None);
    started(&mut app, "post-data");
    progress(&mut app, "post-data", "target 4241: create index on energy.readings", 96 << 20, 160 << 20, Unit::Bytes);
    let wait = pgshift::engine::activity::SessionWait {
        server: "target".into(),
        pid: 4242,
        statement: "ALTER TABLE ONLY energy.sites ADD CONSTRAINT sites_pkey PRIMARY KEY (id);".into(),
        wait: "Lock relation".into(),
        seconds: 12,
        blocker: Some(
            "pid 4343 (psql, user dba, idle in transaction, transaction open 95 s: LOCK TABLE energy.sites)".into(),
        ),
    };
    ev(&mut app, Event::Waits { stage: "post-data".into(), waits: vec![wait] });
    let screen = render(&app);
    assert!(screen.contains("waiting 12 s · Lock relation, held by pid 4343 (psql"), "{screen}");
    assert!(screen.contains("target 4241: create index on energy.readings"), "{screen}");
    assert_snapshot!(screen);
    // the wait ended: gone from the pane
    ev(&mut app, Event::Waits { stage: "post-data".into(), waits: vec![] });
    assert!(!render(&app).contains("held by"));
}

/// Each kind of progress the stages show, in the pane of the stage that has it: pgshift's own
/// counts (tables counted, pg_restore's entries per session, chunks compressed, tables analyzed,
/// tables hashed), the servers' progress views (an index build, an ANALYZE, a VACUUM, a COPY),
/// and a wait in Korean.
#[test]
fn every_kind_of_progress_shows_in_its_stage_pane() {
    let mut app = app(Lang::En);
    started(&mut app, "backup");
    progress(&mut app, "backup", "tables counted", 31, 43, Unit::Tables);
    progress(&mut app, "backup", "full.dump", 300 << 20, 900 << 20, Unit::Bytes);
    let screen = render(&app);
    assert!(screen.contains("tables counted") && screen.contains("31 tables / 43 tables"), "{screen}");
    assert_snapshot!("progress_backup", screen);
    finished(&mut app, "backup", StageStatus::Done, 9_000, Some("7 files"), None);

    for stage in ["environment", "schema", "data"] {
        started(&mut app, stage);
        finished(&mut app, stage, StageStatus::Done, 1_000, Some("done"), None);
    }
    started(&mut app, "post-data");
    progress(&mut app, "post-data", "pg_restore indexes (session 1/2)", 3, 5, Unit::Steps);
    progress(&mut app, "post-data", "pg_restore indexes (session 2/2)", 5, 5, Unit::Steps);
    progress(&mut app, "post-data", "target 4241: create index on energy.readings", 96 << 20, 160 << 20, Unit::Bytes);
    progress(&mut app, "post-data", "target 4250: copy energy.staging", 120_000, 0, Unit::Rows);
    let screen = render(&app);
    assert!(screen.contains("pg_restore indexes (session 1/2)") && screen.contains("create index on"), "{screen}");
    assert_snapshot!("progress_post_data", screen);
    finished(&mut app, "post-data", StageStatus::Done, 4_000, Some("412 entries restored"), None);

    started(&mut app, "timescaledb");
    progress(&mut app, "timescaledb", "compressed chunks", 7, 12, Unit::Steps);
    assert_snapshot!("progress_timescaledb", render(&app));
    finished(&mut app, "timescaledb", StageStatus::Done, 3_000, Some("done"), None);
    started(&mut app, "pgvector");
    finished(&mut app, "pgvector", StageStatus::Done, 0, Some("nothing planned"), None);

    started(&mut app, "tuning");
    progress(&mut app, "tuning", "tables analyzed", 40, 139, Unit::Tables);
    progress(&mut app, "tuning", "target 4301: analyze energy.readings", 24 << 20, 80 << 20, Unit::Bytes);
    progress(&mut app, "tuning", "target 4302: vacuum energy.sites", 1 << 20, 4 << 20, Unit::Bytes);
    let screen = render(&app);
    assert!(screen.contains("analyze energy.readings") && screen.contains("vacuum energy.sites"), "{screen}");
    assert_snapshot!("progress_tuning", screen);
    finished(&mut app, "tuning", StageStatus::Done, 2_000, Some("done"), None);

    started(&mut app, "verify");
    progress(&mut app, "verify", "tables counted and hashed", 60, 86, Unit::Tables);
    assert_snapshot!("progress_verify", render(&app));

    // a wait, in Korean: the words are the console's, the statement and the holder the server's
    let mut app = self::app(Lang::Ko);
    started(&mut app, "post-data");
    let wait = pgshift::engine::activity::SessionWait {
        server: "target".into(),
        pid: 4242,
        statement: "CREATE INDEX readings_ts_idx ON energy.readings (ts);".into(),
        wait: "Lock relation".into(),
        seconds: 12,
        blocker: Some(
            "pid 4343 (psql, user dba, idle in transaction, transaction open 95 s: LOCK TABLE energy.readings)".into(),
        ),
    };
    ev(&mut app, Event::Waits { stage: "post-data".into(), waits: vec![wait] });
    let screen = render(&app);
    assert!(screen.contains("12초째 대기 중 · Lock relation, 잡고 있는 세션: pid 4343"), "{screen}");
    assert!(screen.contains("· 대상 pid"), "the server in Korean: {screen}");
    assert_snapshot!("progress_wait_korean", screen);
}

#[test]
fn a_gauge_that_stands_still_turns_amber_and_says_for_how_long() {
    let mut app = app(Lang::En);
    mid_run(&mut app);
    // kb.articles moves on; energy.readings (last moved 2 s before) is reported again at the same
    // figure: not progress
    app.advance(Duration::from_secs(20));
    progress(&mut app, "data", "kb.articles", 60 << 20, 120 << 20, Unit::Bytes);
    progress(&mut app, "data", "energy.readings", 1_200_000, 2_000_000, Unit::Rows);
    app.advance(Duration::from_secs(15));
    let screen = render(&app);
    let gauge = |name: &str, says: &str| screen.lines().any(|l| l.contains(name) && l.contains(says));
    assert!(gauge("energy.readings", "60% · no progress for 37 s"), "{screen}");
    assert!(!gauge("kb.articles", "no progress"), "{screen}");
    assert!(!gauge("public.devices", "no progress"), "a finished gauge is not stalled: {screen}");
    assert_eq!(screen.matches("no progress for").count(), 1, "{screen}");
    // the threshold is the console's --stall-after
    app.stall_after = Duration::from_secs(60);
    assert!(!render(&app).contains("no progress for"));
}

#[test]
fn a_failed_stage_shows_its_error_and_fix() {
    let mut app = app(Lang::En);
    started(&mut app, "backup");
    out(&mut app, "backup", "pg_dump", Stream::Stderr, "pg_dump: error: aborting because of server version mismatch");
    finished(
        &mut app,
        "backup",
        StageStatus::Failed,
        800,
        None,
        Some((
            "pg_dump 15.18 is older than the source server (17.6)",
            "install PostgreSQL 17's client tools or give --bin-dir",
        )),
    );
    assert_snapshot!(render(&app));
    assert_eq!(app.exit_code(), 3);
}

#[test]
fn run_all_asks_first_and_then_commands_the_runner() {
    let mut app = app(Lang::En);
    assert!(press(&mut app, "a").is_empty(), "nothing runs before the answer");
    assert_snapshot!(render(&app));
    assert_eq!(press(&mut app, "y"), vec![Command::RunAll]);
    assert!(app.running);
    // a second command while one runs is refused in the log
    assert!(press(&mut app, "a").is_empty());
    assert!(app.log.back().unwrap().text.contains("a stage is running"));
}

#[test]
fn a_stage_runs_only_after_the_stages_before_it() {
    let mut app = app(Lang::En);
    press(&mut app, "jjj"); // data
    assert!(press(&mut app, "r").is_empty());
    assert!(app.overlay.is_none());
    assert!(app.log.back().unwrap().text.contains("run the stages before Data first"));
    press(&mut app, "kkk"); // backup
    press(&mut app, "r");
    assert_eq!(press(&mut app, "y"), vec![Command::RunStage(0)]);
}

#[test]
fn retry_skip_and_cancel() {
    let mut app = app(Lang::En);
    assert!(press(&mut app, "x").is_empty());
    assert!(app.log.back().unwrap().text.contains("has not failed"));
    started(&mut app, "backup");
    finished(&mut app, "backup", StageStatus::Failed, 10, None, Some(("disk full", "free space")));
    app.on_msg(Msg::Idle);
    press(&mut app, "x");
    assert_eq!(press(&mut app, "y"), vec![Command::RunStage(0)]);
    press(&mut app, "c");
    assert_eq!(press(&mut app, "y"), vec![Command::Cancel]);
    app.on_msg(Msg::Idle);
    press(&mut app, "s");
    assert_eq!(press(&mut app, "n"), vec![], "n declines");
    press(&mut app, "s");
    assert_eq!(press(&mut app, "y"), vec![Command::Skip(0)]);
}

#[test]
fn quitting_while_a_stage_runs_asks_then_cancels_and_waits() {
    let mut app = app(Lang::En);
    press(&mut app, "a");
    press(&mut app, "y");
    assert!(press(&mut app, "q").is_empty());
    assert_snapshot!(render(&app));
    assert_eq!(press(&mut app, "y"), vec![Command::Cancel]);
    assert!(!app.should_quit(), "it waits for the stage to stop");
    app.on_msg(Msg::Idle);
    assert!(app.should_quit());
}

#[test]
fn ctrl_c_cancels_at_once_and_quits_when_stopped() {
    let mut app = app(Lang::En);
    press(&mut app, "a");
    press(&mut app, "y");
    let cmds = app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(cmds, vec![Command::Cancel]);
    app.on_msg(Msg::Idle);
    assert!(app.should_quit());
    assert_eq!(app.exit_code(), 130);
}

#[test]
fn help_lists_every_key() {
    let mut app = app(Lang::En);
    press(&mut app, "?");
    let screen = render(&app);
    for action in ["run every remaining stage", "cancel the running stage", "cut over now", "search the output", "quit"]
    {
        assert!(screen.contains(action), "{action} in help");
    }
    assert_snapshot!(screen);
    press(&mut app, "z");
    assert!(app.overlay.is_none(), "any key closes the help");
}

#[test]
fn search_finds_and_highlights_output_lines() {
    let mut app = app(Lang::En);
    mid_run(&mut app);
    render(&app); // the pane learns its height
    press(&mut app, "/");
    press(&mut app, "chunk 1");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let s = app.search.clone().unwrap();
    assert_eq!(s.hits.len(), 11, "chunk 1 and chunk 10..19");
    press(&mut app, "N");
    let screen = render(&app);
    assert!(screen.contains("match 10 of 11"), "{screen}");
    assert_snapshot!(screen);
}

#[test]
fn verify_view_side_by_side_with_drill_down() {
    let mut app = app(Lang::En);
    app.on_msg(Msg::Verified(Box::new(verify_report(false))));
    press(&mut app, "2");
    assert_eq!(app.view, View::Verify);
    press(&mut app, "jjj"); // functions
    let functions = render(&app);
    assert!(functions.contains("public.touch_updated()"));
    assert_snapshot!("verify_functions_drilled", functions);
    press(&mut app, "jjjjjjj"); // the last row: table rows
    let rows = render(&app);
    assert!(rows.contains("1200 → 1199"));
    assert_snapshot!("verify_table_rows", rows);
}

#[test]
fn live_verify_shows_what_changed_since_the_previous_one() {
    let mut app = app(Lang::En);
    press(&mut app, "l");
    assert_eq!(app.tick(), vec![Command::Verify], "due at once");
    app.on_msg(Msg::Verified(Box::new(verify_report(false))));
    app.on_msg(Msg::Idle);
    app.advance(Duration::from_secs(10));
    assert!(app.tick().is_empty(), "not due before 30 s");
    app.advance(Duration::from_secs(21));
    assert_eq!(app.tick(), vec![Command::Verify]);
    app.on_msg(Msg::Verified(Box::new(verify_report(true))));
    app.on_msg(Msg::Idle);
    press(&mut app, "2");
    let screen = render(&app);
    assert!(screen.contains("1 new, 0 resolved"), "{screen}");
    assert_snapshot!(screen);
    app.on_msg(Msg::Verified(Box::new(clean_report())));
    let screen = render(&app);
    assert!(screen.contains("CLEAN"));
}

#[test]
fn plan_view() {
    let mut app = app(Lang::En);
    mid_run(&mut app);
    press(&mut app, "3");
    let screen = render(&app);
    // the stages that ran, each a bar on the run's clock: data, still running, reaches now
    assert!(screen.contains("timeline: ") && screen.contains("  Data         ·"), "{screen}");
    assert_snapshot!(screen);
}

#[test]
fn the_plan_view_names_what_the_move_upgrades() {
    let mut app = app(Lang::En);
    let up = |what: &str, from: &str, to: &str| Event::Upgrade {
        stage: "schema".into(),
        what: what.into(),
        from: from.into(),
        to: to.into(),
    };
    ev(&mut app, up("PostgreSQL", "15.14", "17.6"));
    ev(&mut app, up("timescaledb", "2.15.3", "2.19.3"));
    ev(&mut app, up("PostgreSQL", "15.14", "17.6")); // the pre-flight again: named once
    press(&mut app, "3");
    let screen = render(&app);
    let line = screen.lines().find(|l| l.contains("upgrades")).unwrap_or_else(|| panic!("{screen}"));
    assert!(line.contains("PostgreSQL 15.14 → 17.6, timescaledb 2.15.3 → 2.19.3"), "{screen}");
    assert_eq!(screen.matches("PostgreSQL 15.14").count(), 1, "{screen}");
}

#[test]
fn korean_console_aligns_wide_characters() {
    let mut app = app(Lang::Ko);
    mid_run(&mut app);
    let screen = render(&app);
    assert!(screen.contains("체크리스트") && screen.contains("데이터"));
    // every row of the screen is exactly as wide as the terminal: wide characters take two cells
    let width = |l: &str| ratatui::text::Line::raw(l.to_string()).width();
    for line in screen.lines() {
        // TestBackend notes the cells hidden behind wide characters after the closing quote
        let inner = line.split("\" Hidden by").next().unwrap().trim_matches('"');
        assert_eq!(width(inner), 110, "{inner}");
    }
    assert_snapshot!(screen);
    app.on_msg(Msg::Verified(Box::new(verify_report(false))));
    press(&mut app, "2");
    assert_snapshot!("korean_verify", render(&app));
}

/// A real stage: a child process that prints numbered lines, then reports progress.
struct Printer(&'static str, usize);

impl Stage for Printer {
    fn id(&self) -> &'static str {
        self.0
    }
    fn title(&self) -> &'static str {
        "prints lines through a real child process"
    }
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let cmd = ToolCommand {
                label: "seq".into(),
                program: "sh".into(),
                args: vec!["-c".into(), format!("seq 1 {} | sed 's/^/line /' >&2", self.1)],
                env: vec![],
                stdin: None,
            };
            run_tool(ctx, &cmd, &mut Discard, &mut |_| LineClass::Plain).await?;
            ctx.progress("lines", self.1 as u64, Some(self.1 as u64), Unit::Steps).await;
            Ok(format!("printed {} lines", self.1))
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_drives_the_console_with_real_engine_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("pgshift.log")).unwrap();
    let stages: Vec<Box<dyn Stage>> = vec![Box::new(Printer("backup", 5)), Box::new(Printer("environment", 3))];
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let runner = Runner::spawn(stages, dir.path().to_path_buf(), log, tx);
    let mut app = app(Lang::En);
    runner.send(Command::RunAll);
    app.running = true;
    // wait on the runner's messages until it is idle
    while app.running {
        let m = rx.recv().await.expect("runner alive");
        app.on_msg(m);
    }
    assert_eq!(app.stages[0].status, StageStatus::Done);
    assert_eq!(app.stages[1].status, StageStatus::Done);
    let lines: Vec<_> = app.stages[0].output.visible(10).collect();
    assert_eq!(app.stages[0].output.len(), 6, "the command and its five lines: {lines:?}");
    assert_eq!(app.stages[1].summary.as_deref(), Some("printed 3 lines"));
    // the journal and the log recorded both
    let journal = pgshift::engine::journal::Journal::open(dir.path()).unwrap();
    assert_eq!(journal.status("environment"), Some(StageStatus::Done));
    let log = std::fs::read_to_string(dir.path().join("pgshift.log")).unwrap();
    assert!(log.contains("[backup] ! seq: line 5"), "{log}");
    runner.shutdown().await;
}

#[test]
fn ctrl_c_works_inside_a_dialog_and_the_search_line() {
    let mut app = app(Lang::En);
    press(&mut app, "a");
    press(&mut app, "y");
    press(&mut app, "c"); // the cancel dialog is open
    let cmds = app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(cmds, vec![Command::Cancel]);
    assert!(app.overlay.is_none());
    let mut app = self::app(Lang::En);
    press(&mut app, "/");
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.should_quit(), "idle: Ctrl-C quits from the search line too");
}

#[test]
fn a_verify_now_reports_apart_from_the_checklist() {
    let mut app = app(Lang::En);
    app.restore("verify", StageStatus::Done, Some("clean".into()));
    press(&mut app, "v");
    let verify_event = |e: Event| Msg::VerifyEvent(e);
    app.on_msg(verify_event(Event::StageStarted { stage: "verify".into(), title: "Verify".into() }));
    app.on_msg(verify_event(Event::StageFinished {
        stage: "verify".into(),
        status: StageStatus::Failed,
        elapsed_ms: 5,
        summary: None,
        error: Some("target: connection refused".into()),
        fix: Some("start the target server".into()),
    }));
    app.on_msg(Msg::Idle);
    assert_eq!(app.stages[8].status, StageStatus::Done, "the checklist keeps the run's verify");
    let screen = render(&app);
    assert!(
        screen.contains("could not compare: target: connection refused (fix: start the target server)"),
        "{screen}"
    );
}

#[test]
fn a_refusing_preflight_does_not_undo_done_stages_and_exits_2() {
    let mut app = app(Lang::En);
    app.restore("backup", StageStatus::Done, Some("8 files".into()));
    app.restore("environment", StageStatus::Failed, Some("no engine (fix: start Docker)".into()));
    assert_eq!(app.stages[1].fix.as_deref(), Some("start Docker"), "the journal's fix is shown as the fix");
    finished(&mut app, "backup", StageStatus::Failed, 0, None, Some(("source unreachable", "start it")));
    assert_eq!(app.stages[0].status, StageStatus::Done);
    assert!(app.log.back().unwrap().text.contains("source unreachable"));
    app.on_msg(Msg::Refused);
    assert_eq!(app.exit_code(), 2, "a refusal is bad input, as for run");
    let mut fresh = self::app(Lang::En);
    assert_eq!(fresh.exit_code(), 4, "left before verifying: incomplete");
    for (id, _) in STAGES {
        fresh.restore(id, StageStatus::Done, None);
    }
    assert_eq!(fresh.exit_code(), 0);
}

#[test]
fn a_crash_in_the_work_ends_the_console() {
    let mut app = app(Lang::En);
    press(&mut app, "a");
    press(&mut app, "y");
    app.on_msg(Msg::Crashed("task panicked".into()));
    app.on_msg(Msg::Idle);
    assert!(app.should_quit());
    assert_eq!(app.exit_code(), 3);
}

#[test]
fn a_long_error_keeps_its_fix_in_view() {
    let mut app = app(Lang::En);
    started(&mut app, "schema");
    let long = "pg_restore failed for 3 entries: CREATE POLICY tenant_isolation ON energy.readings: role \"tenant_app\" does not exist | CREATE FUNCTION energy.site_energy: language \"plpython3u\" does not exist | GRANT SELECT ON kb.articles TO analyst: role \"analyst\" does not exist";
    finished(
        &mut app,
        "schema",
        StageStatus::Failed,
        100,
        None,
        Some((long, "create the missing roles and the plpython3u extension on the target, then retry")),
    );
    let screen = render(&app);
    assert!(screen.contains("fix: create the missing roles"), "{screen}");
    assert!(screen.contains("kb.articles TO analyst") && screen.contains("retry"), "the whole error and fix: {screen}");
}

#[test]
fn the_cutover_key_asks_while_a_catch_up_runs_and_says_why_not_otherwise() {
    // an offline checklist: no catch-up, the key says so and the bar does not offer it
    let mut app = app(Lang::En);
    assert_eq!(press(&mut app, "C"), vec![]);
    let screen = render(&app);
    assert!(screen.contains("no catch-up is running"), "{screen}");
    assert!(!screen.contains("cut over"), "offline: no cutover key in the bar\n{screen}");

    // an online one, its catch-up running: C asks, y requests the cutover beside the running stage
    const ONLINE: [(&str, &str); 3] =
        [("tuning", "Tuning"), ("catch-up", "Online catch-up"), ("cutover", "Online cutover")];
    let mut app = App::new(
        Lang::En.text(),
        Keymap::defaults(),
        "online.toml".into(),
        "postgres@127.0.0.1:55432/ecoanp".into(),
        &ONLINE,
        Vec::new(),
        Duration::from_secs(30),
    );
    app.freeze_clock();
    ev(&mut app, Event::StageStarted { stage: "catch-up".into(), title: "Online catch-up".into() });
    assert!(render(&app).contains("cut over"), "the bar offers the key");
    ev(
        &mut app,
        Event::Progress {
            stage: "catch-up".into(),
            item: "changes applied".into(),
            done: 5000,
            total: None,
            unit: Unit::Rows,
        },
    );
    for ms in [3000, 2500, 1500] {
        ev(&mut app, Event::Lag { stage: "catch-up".into(), bytes: 2 * 1024 * 1024, millis: ms });
    }
    let screen = render(&app);
    assert!(screen.contains("lag 1.5 s · 2.0 MiB"), "the lag now, beside its sparkline:\n{screen}");
    assert!(screen.contains("lag 1.5 s · 2.0 MiB █▆▄"), "the sparkline falls with the lag:\n{screen}");
    assert_eq!(press(&mut app, "C"), vec![]);
    assert!(render(&app).contains("application must have stopped writing"), "it asks first");
    assert_eq!(press(&mut app, "y"), vec![Command::Cutover]);
}

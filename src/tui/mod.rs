//! The console: the interactive view of a run. The engine does the work (through [`runner`]); this
//! module only shows its events and turns keys into commands. `pgshift run --yes` is the other,
//! headless view of the same engine.
//! It may use the checklist, the engine's events and everything below; only the commands use it.

pub mod app;
pub mod keymap;
pub mod output;
pub mod plan_view;
pub mod runner;
pub mod stages_view;
pub mod style;
pub mod terminal;
pub mod text;
pub mod ui;
pub mod verify_view;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{Event as TermEvent, KeyEventKind};
use tokio::sync::mpsc;

use app::{App, Command, Msg};
use keymap::{Action, Keymap};
use runner::Runner;
use terminal::TerminalGuard;
use text::Lang;

use crate::checklist::Prepared;
use crate::engine::journal::{Journal, JOURNAL_FILE};
use crate::error::UserError;
use crate::plan::Plan;

pub struct ConsoleOptions {
    pub lang: Lang,
    pub keys: Option<PathBuf>,
    /// Live verification: on from the start, and its interval.
    pub live: bool,
    pub live_every: Duration,
    /// An unfinished gauge that has not moved this long turns amber and says so.
    pub stall_after: Duration,
}

/// How often the clock, the durations and live verification are looked at.
const TICK: Duration = Duration::from_millis(250);
/// At most this many frames a second while output streams.
const FRAME: Duration = Duration::from_millis(40);
/// Messages applied before a frame is drawn.
const BATCH: usize = 2048;

/// Opens the console on a prepared run; returns the exit code once the user quits.
pub async fn open(prepared: Prepared, plan_path: &Path, options: ConsoleOptions) -> Result<i32, UserError> {
    let keymap = Keymap::load(options.keys.as_deref())?;
    let Prepared { plan, dir, resuming, complete, stages, log } = prepared;
    let list: Vec<(&str, &str)> = stages.iter().map(|s| (s.id(), s.title())).collect();
    let target_label = target_label(&plan);
    let title = format!("{} → {}", plan_path.display(), target_label);
    let mut app = App::new(
        options.lang.text(),
        keymap,
        title,
        target_label,
        &list,
        plan_lines(&plan, &dir, resuming, options.lang.text()),
        options.live_every,
    );
    drop(list);
    app.stall_after = options.stall_after;
    if let Ok(journal) = Journal::open(&dir) {
        for e in &journal.data().stages {
            app.restore(&e.stage, e.status, e.detail.clone());
        }
    }
    if let Some((report, written)) = runner::read_report(&dir, SystemTime::UNIX_EPOCH) {
        let at = chrono::DateTime::<chrono::Local>::from(written).format("%Y-%m-%d %H:%M:%S").to_string();
        app.restore_verify(report, at);
    }
    if options.live {
        app.on_action(Action::LiveVerify);
    }

    let mut guard = TerminalGuard::enter()?; // no terminal, no work started
    let (msg_tx, mut msgs) = mpsc::channel(4 * BATCH);
    let runner = Runner::spawn(stages, dir.clone(), log, msg_tx);
    if !complete {
        app.running = true;
        runner.send(Command::Preflight); // shows at once what would refuse, before anything is written
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut keys = spawn_input(stop.clone());
    let result = event_loop(&mut guard, &mut app, &mut msgs, &mut keys, &runner).await;
    stop.store(true, Ordering::Relaxed);
    drop(guard); // the terminal is back before anything is printed
                 // stopping what runs still sends events: keep reading them, or a full channel would hold it up
    let drain = async {
        while let Some(m) = msgs.recv().await {
            app.on_msg(m);
        }
    };
    tokio::join!(runner.shutdown(), drain);
    result?;
    let only_log =
        std::fs::read_dir(&dir).map(|rd| rd.flatten().all(|e| e.file_name() == "pgshift.log")).unwrap_or(false);
    if only_log && !resuming && !dir.join(JOURNAL_FILE).exists() {
        let _ = std::fs::remove_dir_all(&dir); // nothing ran: leave no empty run directory
    }
    println!("pgshift: {}; run directory {}", app.farewell(), dir.display());
    Ok(app.exit_code())
}

async fn event_loop(
    guard: &mut TerminalGuard,
    app: &mut App,
    msgs: &mut mpsc::Receiver<Msg>,
    keys: &mut mpsc::Receiver<TermEvent>,
    runner: &Runner,
) -> Result<(), UserError> {
    let draw_error = |e: std::io::Error| {
        UserError::new(format!("drawing the console failed: {e}"), "resize or restart the terminal")
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    // a dropped SSH session: stop the work rather than leave its children running unattended
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut first = true;
    loop {
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            guard.terminal.draw(|f| ui::draw(f, app)).map_err(draw_error)?;
            last_draw = Some(Instant::now());
            dirty = false;
            if first && std::env::var_os("PGSHIFT_TEST_PANIC").is_some() {
                panic!("PGSHIFT_TEST_PANIC: a panic requested by the terminal-restore test");
            }
            first = false;
        }
        if app.should_quit() {
            return Ok(());
        }
        let terminated = async {
            match (term.as_mut(), hangup.as_mut()) {
                (Some(t), Some(h)) => tokio::select! { r = t.recv() => r, r = h.recv() => r },
                (Some(t), None) => t.recv().await,
                _ => std::future::pending().await,
            }
        };
        let next_frame = tokio::time::Instant::from_std(last_draw.map_or_else(Instant::now, |t| t + FRAME));
        tokio::select! {
            // a frame that was held back to keep the rate down is drawn when its time comes
            _ = tokio::time::sleep_until(next_frame), if dirty => {}
            m = msgs.recv() => {
                let Some(m) = m else { return Ok(()) };
                app.on_msg(m);
                // the whole batch, then one frame: a chatty tool must not cost a frame per line
                for _ in 0..BATCH {
                    match msgs.try_recv() {
                        Ok(m) => app.on_msg(m),
                        Err(_) => break,
                    }
                }
                dirty = true;
            }
            k = keys.recv() => {
                match k {
                    Some(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
                        for c in app.on_key(key) {
                            runner.send(c);
                        }
                        last_draw = None; // a key is answered at once
                    }
                    Some(_) => last_draw = None,
                    None => return Ok(()),
                }
                dirty = true;
            }
            _ = tick.tick() => {
                for c in app.tick() {
                    runner.send(c);
                }
                dirty = true;
            }
            _ = terminated => {
                for c in app.on_action(Action::Interrupt) {
                    runner.send(c);
                }
                dirty = true;
            }
            _ = tokio::signal::ctrl_c() => {
                for c in app.on_action(Action::Interrupt) {
                    runner.send(c);
                }
                dirty = true;
            }
        }
    }
}

/// Terminal input on its own thread (reading blocks), handed to the loop through a channel.
fn spawn_input(stop: Arc<AtomicBool>) -> mpsc::Receiver<TermEvent> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(true) => match crossterm::event::read() {
                    Ok(e) => {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

fn target_label(plan: &Plan) -> String {
    let source = plan.source().ok();
    match (&plan.target.container, source.and_then(|s| plan.target(&s).ok())) {
        (Some(c), Some(t)) => format!("container {} ({})", c.name, t.label()),
        (None, Some(t)) => t.label(),
        (Some(c), None) => format!("container {}", c.name),
        (None, None) => "?".into(),
    }
}

/// The plan view's lines: what this run will do.
fn plan_lines(plan: &Plan, dir: &Path, resuming: bool, t: &text::Text) -> Vec<(String, String)> {
    use text::fill;
    let (k, v) = (&t.plan_rows, &t.plan_values);
    let mut lines = Vec::new();
    let mut add = |key: &str, value: String| lines.push((key.to_string(), value));
    add(k[0], plan.source().map(|s| s.label()).unwrap_or_else(|e| e.message));
    add(k[1], target_label(plan));
    let dir_text = dir.display().to_string();
    add(k[2], fill(if resuming { v.resumed_dir } else { v.new_dir }, &[("dir", &dir_text)]));
    add(k[3], fill(v.data, &[("n", &plan.data.jobs)]));
    add(k[4], (if plan.verify.checksums { v.verify_checksums } else { v.verify }).to_string());
    if plan.hypertables.is_empty() {
        add(k[5], v.no_hypertables.to_string());
    }
    for h in &plan.hypertables {
        let compress = if h.compress { v.compressed } else { "" };
        add(k[6], fill(v.hypertable, &[("table", &h.table), ("column", &h.time_column)]) + compress);
    }
    for x in &plan.vectors {
        let index = x.index.as_deref().unwrap_or(v.no_index);
        add(k[7], format!("{}.{} vector({}) · {index}", x.table, x.column, x.dimensions));
    }
    add(k[8], fill(v.allow, &[("n", &plan.allow.len())]));
    lines
}

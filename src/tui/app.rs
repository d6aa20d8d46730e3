//! The console's state and how it changes: engine events and keys in, commands for the runner out.
//! Pure: no terminal, no I/O, no clock of its own (tests set it), so every view can be driven and
//! snapshot-tested without a server.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::keymap::{Action, Keymap};
use super::output::OutputBuffer;
use super::text::{fill, Text};
use crate::engine::{Event, StageStatus, Unit};
use crate::error::{EXIT_CANCELLED, EXIT_DIFFERENCES, EXIT_INCOMPLETE, EXIT_STAGE_FAILED, EXIT_USER_ERROR};
use crate::verify::VerifyReport;

/// What the console asks the runner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Every stage's pre-flight checks (nothing is written).
    Preflight,
    RunAll,
    /// One stage, by index in the checklist.
    RunStage(usize),
    Skip(usize),
    Cancel,
    /// The verify stage again, outside the journal (verify now, live verify).
    Verify,
    /// Online: the DBA says the application stopped writing; the running catch-up drains now.
    Cutover,
}

/// What reaches the console.
#[derive(Debug, Clone)]
pub enum Msg {
    Engine(Event),
    /// A verify finished and wrote its report.
    Verified(Box<VerifyReport>),
    /// The runner finished a command and waits for the next.
    Idle,
    /// A line for the log from the runner (a refused command, a journal problem).
    Notice(String),
    /// Every stage's pre-flight passed.
    PreflightPassed,
    /// A pre-flight refused: nothing was written.
    Refused,
    /// A command came while another runs.
    Busy,
    /// The work panicked (a bug): the console stops.
    Crashed(String),
    /// An event of a verify asked for outside the checklist (verify now, live verify): it shows in
    /// the verification view, never as the checklist's verify stage.
    VerifyEvent(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Stages,
    Verify,
    Plan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    Confirm {
        question: String,
        then: Vec<Command>,
        quit: bool,
    },
    /// Typing a search.
    Search(String),
}

#[derive(Debug, Clone)]
pub struct ProgressItem {
    pub item: String,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: Unit,
    first_seen: Instant,
    first_done: u64,
    pub updated: Instant,
    /// When `done` last changed (a report of the same figure is not progress).
    moved: Instant,
}

impl ProgressItem {
    pub fn finished(&self) -> bool {
        self.total.is_some_and(|t| self.done >= t)
    }

    /// How long an unfinished item has not moved, once that is at least `after`.
    pub fn stalled(&self, now: Instant, after: Duration) -> Option<Duration> {
        let still = now.saturating_duration_since(self.moved);
        (!self.finished() && still >= after).then_some(still)
    }

    /// Time left at the rate seen since the item first showed, up to `now` (a stall slows the rate,
    /// so the time left grows while nothing moves).
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let total = self.total?;
        let seconds = now.saturating_duration_since(self.first_seen).as_secs_f64();
        let moved = self.done.saturating_sub(self.first_done) as f64;
        if self.finished() || seconds < 0.5 || moved <= 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(total.saturating_sub(self.done) as f64 * seconds / moved).ok()
    }
}

#[derive(Debug, Clone)]
pub struct StageView {
    pub id: String,
    pub title: String,
    pub status: StageStatus,
    pub started: Option<Instant>,
    pub elapsed: Option<Duration>,
    pub summary: Option<String>,
    pub error: Option<String>,
    pub fix: Option<String>,
    pub output: OutputBuffer,
    pub progress: Vec<ProgressItem>,
    /// Its server sessions that wait for another session, as the last report said.
    pub waits: Vec<crate::engine::activity::SessionWait>,
    /// How many of its server sessions run a statement, as the watcher last counted.
    pub busy: Option<u32>,
    /// Bytes and rows its gauges moved, second by second.
    pub throughput: Throughput,
    /// An online catch-up's lag samples (bytes, milliseconds), oldest first, at most [`LAG_SAMPLES`].
    pub lag: std::collections::VecDeque<(u64, u64)>,
    pub runs: u32,
}

/// How much a stage's gauges moved in each of its last seconds, in bytes and in rows (other units
/// are not throughput): the progress pane's rate and sparkline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throughput {
    /// (second since the stage started, bytes, rows), oldest first, at most [`THROUGHPUT_SECONDS`].
    seconds: std::collections::VecDeque<(u64, u64, u64)>,
}

/// Lag samples kept (2 s apart: the last two minutes).
pub const LAG_SAMPLES: usize = 60;

/// Seconds of throughput kept (the sparkline's width).
pub const THROUGHPUT_SECONDS: u64 = 60;

impl Throughput {
    fn add(&mut self, unit: crate::engine::Unit, second: u64, amount: u64) {
        use crate::engine::Unit;
        if amount == 0 || !matches!(unit, Unit::Bytes | Unit::Rows) {
            return;
        }
        if self.seconds.back().is_none_or(|(s, _, _)| *s < second) {
            self.seconds.push_back((second, 0, 0));
        }
        let last = self.seconds.back_mut().expect("pushed");
        match unit {
            Unit::Bytes => last.1 += amount,
            _ => last.2 += amount,
        }
        while self.seconds.front().is_some_and(|(s, _, _)| s + THROUGHPUT_SECONDS <= second) {
            self.seconds.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Per second up to `now_second` (the last [`THROUGHPUT_SECONDS`], zeros where nothing moved),
    /// in bytes when any moved, else rows; and which.
    pub fn per_second(&self, now_second: u64) -> Option<(Vec<u64>, crate::engine::Unit)> {
        use crate::engine::Unit;
        let bytes = self.seconds.iter().any(|(_, b, _)| *b > 0);
        if !bytes && !self.seconds.iter().any(|(_, _, r)| *r > 0) {
            return None;
        }
        let from = (now_second + 1).saturating_sub(THROUGHPUT_SECONDS);
        let values = (from..=now_second)
            .map(|sec| {
                self.seconds
                    .iter()
                    .find(|(s, _, _)| *s == sec)
                    .map(|(_, b, r)| if bytes { *b } else { *r })
                    .unwrap_or(0)
            })
            .collect();
        Some((values, if bytes { Unit::Bytes } else { Unit::Rows }))
    }
}

/// An unfinished gauge still this long is said to be stalled (the console's `--stall-after`).
pub const DEFAULT_STALL_AFTER: Duration = crate::engine::DEFAULT_STALL_AFTER;
/// Progress items kept per stage (finished ones go first).
const KEEP_PROGRESS: usize = 200;
/// Log lines kept.
const KEEP_LOG: usize = 500;

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: Duration,
    pub warning: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct VerifyState {
    pub report: VerifyReport,
    pub at: Duration,
    pub runs: u32,
    /// Unexpected differences that appeared / went away since the previous verify.
    pub appeared: Vec<String>,
    pub resolved: Vec<String>,
    pub compared: bool,
    /// When the report comes from an earlier session: the time its file was written.
    pub earlier: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchState {
    pub query: String,
    pub hits: Vec<usize>,
    pub current: usize,
}

pub struct App {
    pub text: &'static Text,
    pub keymap: Keymap,
    /// `plan.toml → user@host:port/db`
    pub title: String,
    pub target_label: String,
    pub stages: Vec<StageView>,
    pub selected: usize,
    /// Selection moves to the stage that starts until the user moves it.
    follow_stage: bool,
    pub view: View,
    pub overlay: Option<Overlay>,
    pub log: VecDeque<LogLine>,
    pub verify: Option<VerifyState>,
    /// The last verify that could not compare (its error and fix), shown over the last report.
    pub verify_failure: Option<(String, Option<String>)>,
    pub verify_running: bool,
    pub verify_selected: usize,
    pub detail_scroll: usize,
    pub plan_lines: Vec<(String, String)>,
    pub plan_scroll: usize,
    pub running: bool,
    pub live: Option<Duration>,
    live_interval: Duration,
    /// An unfinished gauge that has not moved this long turns amber and says so.
    pub stall_after: Duration,
    last_verify: Option<Instant>,
    pub search: Option<SearchState>,
    quit: bool,
    quit_when_idle: bool,
    interrupted: bool,
    /// A pre-flight refused, and nothing ran since.
    refused: bool,
    crashed: bool,
    /// Height of the output pane at the last draw (page size for scrolling).
    pub output_height: std::cell::Cell<usize>,
    clock: Option<Instant>,
    started: Instant,
}

impl App {
    pub fn new(
        text: &'static Text,
        keymap: Keymap,
        title: String,
        target_label: String,
        stages: &[(&str, &str)],
        plan_lines: Vec<(String, String)>,
        live_interval: Duration,
    ) -> App {
        let stages = stages
            .iter()
            .map(|(id, title)| StageView {
                id: id.to_string(),
                title: title.to_string(),
                status: StageStatus::Pending,
                started: None,
                elapsed: None,
                summary: None,
                error: None,
                fix: None,
                output: OutputBuffer::new(),
                progress: Vec::new(),
                waits: Vec::new(),
                busy: None,
                throughput: Throughput::default(),
                lag: Default::default(),
                runs: 0,
            })
            .collect();
        let now = Instant::now();
        App {
            text,
            keymap,
            title,
            target_label,
            stages,
            selected: 0,
            follow_stage: true,
            view: View::Stages,
            overlay: None,
            log: VecDeque::new(),
            verify: None,
            verify_failure: None,
            verify_running: false,
            verify_selected: 0,
            detail_scroll: 0,
            plan_lines,
            plan_scroll: 0,
            running: false,
            live: None,
            live_interval,
            stall_after: DEFAULT_STALL_AFTER,
            last_verify: None,
            search: None,
            quit: false,
            quit_when_idle: false,
            interrupted: false,
            refused: false,
            crashed: false,
            output_height: std::cell::Cell::new(10),
            clock: None,
            started: now,
        }
    }

    /// The stages that ran, on the clock of the first one's start (the plan view's timeline).
    pub fn timeline(&self) -> Vec<crate::engine::timeline::Span> {
        let Some(origin) = self.stages.iter().filter_map(|s| s.started).min() else { return Vec::new() };
        self.stages
            .iter()
            .filter_map(|s| {
                let start = s.started?.duration_since(origin);
                let end = (s.status != StageStatus::Running).then(|| start + s.elapsed.unwrap_or_default());
                Some(crate::engine::timeline::Span { stage: s.id.clone(), status: s.status, start, end })
            })
            .collect()
    }

    /// The run clock's now, on the timeline's origin.
    pub fn timeline_now(&self) -> Duration {
        let origin = self.stages.iter().filter_map(|s| s.started).min();
        origin.map(|o| self.now().saturating_duration_since(o)).unwrap_or_default()
    }

    /// Freezes the clock (tests): time moves only through [`App::advance`].
    pub fn freeze_clock(&mut self) {
        self.clock = Some(self.started);
    }

    pub fn advance(&mut self, by: Duration) {
        if let Some(c) = self.clock.as_mut() {
            *c += by;
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.unwrap_or_else(Instant::now)
    }

    /// Time since the console opened.
    pub fn uptime(&self) -> Duration {
        self.now().duration_since(self.started)
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Statuses the journal recorded before the console opened.
    pub fn restore(&mut self, id: &str, status: StageStatus, detail: Option<String>) {
        if let Some(s) = self.stages.iter_mut().find(|s| s.id == id) {
            // a stage the journal saw running was interrupted
            s.status = if status == StageStatus::Running { StageStatus::Cancelled } else { status };
            if matches!(status, StageStatus::Done | StageStatus::Skipped) {
                s.summary = detail;
            } else if let Some((error, fix)) = detail.as_deref().and_then(|d| d.rsplit_once(" (fix: ")) {
                s.error = Some(error.to_string());
                s.fix = Some(fix.trim_end_matches(')').to_string());
            } else {
                s.error = detail;
            }
        }
        self.follow_stage = true;
        self.selected = self.next_to_run().unwrap_or(self.stages.len().saturating_sub(1));
    }

    fn next_to_run(&self) -> Option<usize> {
        self.stages.iter().position(|s| !matches!(s.status, StageStatus::Done | StageStatus::Skipped))
    }

    fn note(&mut self, warning: bool, text: String) {
        if self.log.len() == KEEP_LOG {
            self.log.pop_front();
        }
        let at = self.uptime();
        self.log.push_back(LogLine { at, warning, text });
    }

    fn stage_index(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.id == id)
    }

    pub fn status_text(&self, status: StageStatus) -> &'static str {
        let t = self.text;
        match status {
            StageStatus::Pending => t.status_pending,
            StageStatus::Running => t.status_running,
            StageStatus::Done => t.status_done,
            StageStatus::Failed => t.status_failed,
            StageStatus::Cancelled => t.status_cancelled,
            StageStatus::Skipped => t.status_skipped,
        }
    }

    /// Applies what the runner reports.
    pub fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Engine(e) => self.on_event(e),
            Msg::Verified(report) => self.on_verified(*report),
            Msg::Idle => {
                self.running = false;
                if self.quit_when_idle {
                    self.quit = true;
                }
            }
            Msg::Notice(text) => self.note(true, text),
            Msg::Refused => self.refused = true,
            Msg::Busy => self.note(true, self.busy_text()),
            Msg::Crashed(e) => {
                self.crashed = true;
                self.quit_when_idle = true;
                self.note(true, format!("internal error (a bug in pgshift, please report it): {e}"));
            }
            Msg::VerifyEvent(e) => self.on_verify_event(e),
            Msg::PreflightPassed => {
                let key = self.keymap.keys_of(Action::RunAll);
                let line = fill(self.text.msg_preflight_ok, &[("key", &key)]);
                self.note(false, line);
            }
        }
    }

    fn busy_text(&self) -> String {
        fill(self.text.msg_busy, &[("key", &self.keymap.keys_of(Action::Cancel))])
    }

    /// A verify outside the checklist: its end shows in the verification view and the log.
    fn on_verify_event(&mut self, event: Event) {
        match event {
            Event::StageStarted { .. } => self.verify_running = true,
            Event::Warning { message, .. } => {
                let line = fill(self.text.msg_warning, &[("stage", &self.text.view_verify), ("message", &message)]);
                self.note(true, line);
            }
            Event::StageFinished { status, error, fix, .. } => {
                self.verify_running = false;
                match status {
                    StageStatus::Done => self.verify_failure = None,
                    StageStatus::Failed => {
                        let error = error.unwrap_or_default();
                        // differences are a result, shown by the report; anything else is a failure to compare
                        if !error.starts_with("verify found") {
                            self.note(true, format!("{}: {error}", self.text.view_verify));
                            self.verify_failure = Some((error, fix));
                        } else {
                            self.verify_failure = None;
                        }
                    }
                    other => {
                        let line = fill(
                            self.text.msg_finished,
                            &[("stage", &self.text.view_verify), ("status", &self.status_text(other))],
                        );
                        self.note(true, line);
                    }
                }
            }
            Event::Output { .. }
            | Event::Progress { .. }
            | Event::Upgrade { .. }
            | Event::Waits { .. }
            | Event::Sessions { .. }
            | Event::Lag { .. } => {}
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::StageStarted { stage, title } => {
                let Some(i) = self.stage_index(&stage) else { return };
                self.refused = false;
                let name = self.text.stage_name(&stage).to_string();
                let s = &mut self.stages[i];
                s.status = StageStatus::Running;
                s.title = title;
                s.started = Some(now);
                s.elapsed = None;
                s.error = None;
                s.fix = None;
                s.summary = None;
                s.runs += 1;
                if s.runs > 1 {
                    s.output.push("pgshift", crate::engine::Stream::Info, &format!("──── run {} ────", s.runs));
                }
                s.progress.clear();
                s.waits.clear();
                s.busy = None;
                s.throughput = Throughput::default();
                if self.follow_stage {
                    self.selected = i;
                }
                let line = fill(self.text.msg_started, &[("stage", &name)]);
                self.note(false, line);
            }
            Event::Output { stage, source, stream, line } => {
                if let Some(i) = self.stage_index(&stage) {
                    self.stages[i].output.push(&source, stream, &line);
                }
            }
            Event::Progress { stage, item, done, total, unit } => {
                let Some(i) = self.stage_index(&stage) else { return };
                let second = self.stages[i].started.map(|t| now.saturating_duration_since(t).as_secs()).unwrap_or(0);
                let view = &mut self.stages[i];
                let list = &mut view.progress;
                match list.iter_mut().find(|p| p.item == item) {
                    Some(p) => {
                        if p.done != done {
                            p.moved = now;
                        }
                        view.throughput.add(unit, second, done.saturating_sub(p.done));
                        p.done = done;
                        p.total = total;
                        p.updated = now;
                    }
                    None => {
                        if list.len() == KEEP_PROGRESS {
                            let gone = list.iter().position(|p| p.finished()).unwrap_or(0);
                            list.remove(gone);
                        }
                        list.push(ProgressItem {
                            item,
                            done,
                            total,
                            unit,
                            first_seen: now,
                            first_done: done,
                            updated: now,
                            moved: now,
                        });
                    }
                }
            }
            Event::Waits { stage, waits } => {
                if let Some(i) = self.stage_index(&stage) {
                    self.stages[i].waits = waits;
                }
            }
            Event::Sessions { stage, busy } => {
                if let Some(i) = self.stage_index(&stage) {
                    self.stages[i].busy = Some(busy);
                }
            }
            Event::Lag { stage, bytes, millis } => {
                if let Some(i) = self.stage_index(&stage) {
                    let lag = &mut self.stages[i].lag;
                    lag.push_back((bytes, millis));
                    while lag.len() > LAG_SAMPLES {
                        lag.pop_front();
                    }
                }
            }
            Event::Warning { stage, message } => {
                let name = self.text.stage_name(&stage).to_string();
                let line = fill(self.text.msg_warning, &[("stage", &name), ("message", &message)]);
                self.note(true, line);
            }
            Event::Upgrade { what, from, to, .. } => {
                // the plan view's "upgrades" line, one entry per thing the move upgrades
                let entry = format!("{what} {from} → {to}");
                let key = self.text.plan_upgrades.to_string();
                match self.plan_lines.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) if v.split(", ").any(|e| e.starts_with(&format!("{what} "))) => {}
                    Some((_, v)) => *v = format!("{v}, {entry}"),
                    None => self.plan_lines.push((key, entry)),
                }
            }
            Event::StageFinished { stage, status, elapsed_ms, summary, error, fix } => {
                let Some(i) = self.stage_index(&stage) else { return };
                self.stages[i].waits.clear();
                self.stages[i].busy = None;
                let finished = matches!(self.stages[i].status, StageStatus::Done | StageStatus::Skipped);
                if status == StageStatus::Skipped && self.stages[i].status == StageStatus::Done {
                    return; // a rerun passes over what an earlier run finished: it stays done
                }
                if finished && matches!(status, StageStatus::Failed | StageStatus::Cancelled) {
                    // a pre-flight refusing (or cancelled) now does not undo what an earlier run did
                    let name = self.text.stage_name(&stage).to_string();
                    let detail = error.unwrap_or_else(|| self.status_text(status).to_string());
                    let line = fill(self.text.msg_warning, &[("stage", &name), ("message", &detail)]);
                    self.note(true, line);
                    return;
                }
                let name = self.text.stage_name(&stage).to_string();
                let label = self.status_text(status);
                let s = &mut self.stages[i];
                s.status = status;
                if status != StageStatus::Skipped || s.elapsed.is_none() {
                    s.elapsed = Some(Duration::from_millis(elapsed_ms));
                }
                s.summary = summary.clone();
                s.error = error.clone();
                s.fix = fix;
                let mut line = fill(self.text.msg_finished, &[("stage", &name), ("status", &label)]);
                if let Some(detail) = summary.or(error) {
                    line.push_str(": ");
                    line.push_str(&detail);
                }
                let warn = matches!(status, StageStatus::Failed | StageStatus::Cancelled);
                self.note(warn, line);
            }
        }
    }

    /// A report from an earlier session, written at `at` (shown as such, not as a new verify).
    pub fn restore_verify(&mut self, report: VerifyReport, at: String) {
        self.on_verified(report);
        if let Some(v) = self.verify.as_mut() {
            v.earlier = Some(at);
        }
    }

    fn on_verified(&mut self, report: VerifyReport) {
        let key = |d: &crate::verify::diff::Difference| format!("{} {} ({:?})", d.class, d.name, d.change);
        let now_set: BTreeSet<String> = report.unexpected_differences().map(key).collect();
        let (appeared, resolved, runs, compared) = match &self.verify {
            Some(prev) => {
                let before: BTreeSet<String> = prev.report.unexpected_differences().map(key).collect();
                (
                    now_set.difference(&before).cloned().collect(),
                    before.difference(&now_set).cloned().collect(),
                    prev.runs + 1,
                    true,
                )
            }
            None => (Vec::new(), Vec::new(), 1, false),
        };
        let n = report.unexpected;
        if self.verify.is_none() && self.view == View::Stages {
            self.view = View::Verify; // the run ends on its proof
        }
        self.verify =
            Some(VerifyState { report, at: self.uptime(), runs, appeared, resolved, compared, earlier: None });
        self.verify_failure = None;
        self.last_verify = Some(self.now());
        let line = fill(self.text.msg_verified, &[("n", &n)]);
        self.note(n > 0, line);
        let rows = self.verify_rows().len();
        self.verify_selected = self.verify_selected.min(rows.saturating_sub(1));
    }

    /// The verification view's rows: object classes present on either side, then table rows.
    pub fn verify_rows(&self) -> Vec<VerifyRow> {
        let Some(v) = &self.verify else { return Vec::new() };
        let mut rows: Vec<VerifyRow> = v
            .report
            .classes
            .iter()
            .filter(|c| c.source > 0 || c.target > 0 || c.missing + c.extra + c.changed > 0)
            .map(|c| VerifyRow::Class(c.class.key()))
            .collect();
        rows.push(VerifyRow::TableRows);
        rows
    }

    /// Called every tick: asks for a verify when live verification is due.
    pub fn tick(&mut self) -> Vec<Command> {
        let Some(every) = self.live else { return Vec::new() };
        let due = self.last_verify.is_none_or(|t| self.now().duration_since(t) >= every);
        if due && !self.running && self.overlay.is_none() {
            self.running = true;
            self.last_verify = Some(self.now());
            return vec![Command::Verify];
        }
        Vec::new()
    }

    /// Applies a key; returns what the runner must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if self.keymap.action(&key) == Some(Action::Interrupt) {
            self.overlay = None; // Ctrl-C works in every dialog
            return self.on_action(Action::Interrupt);
        }
        if let Some(overlay) = self.overlay.take() {
            return self.on_overlay_key(overlay, key);
        }
        let Some(action) = self.keymap.action(&key) else { return Vec::new() };
        self.on_action(action)
    }

    fn on_overlay_key(&mut self, overlay: Overlay, key: KeyEvent) -> Vec<Command> {
        match overlay {
            Overlay::Help => Vec::new(), // any key closes it
            Overlay::Confirm { question, then, quit } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    if quit {
                        self.quit_when_idle = true;
                        if !self.running {
                            self.quit = true;
                        }
                    }
                    self.start(then)
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => Vec::new(),
                _ => {
                    self.overlay = Some(Overlay::Confirm { question, then, quit });
                    Vec::new()
                }
            },
            Overlay::Search(mut query) => {
                match key.code {
                    KeyCode::Enter => self.run_search(query),
                    KeyCode::Esc => {}
                    KeyCode::Backspace => {
                        query.pop();
                        self.overlay = Some(Overlay::Search(query));
                    }
                    KeyCode::Char(c) if !key.modifiers.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {
                        query.push(c);
                        self.overlay = Some(Overlay::Search(query));
                    }
                    _ => self.overlay = Some(Overlay::Search(query)),
                }
                Vec::new()
            }
        }
    }

    /// Commands that start work mark the console busy until the runner says it is idle.
    fn start(&mut self, commands: Vec<Command>) -> Vec<Command> {
        if commands.iter().any(|c| !matches!(c, Command::Cancel)) {
            self.running = true;
            self.follow_stage = true;
        }
        if commands.contains(&Command::Cancel) {
            self.note(true, self.text.msg_cancelling.to_string());
        }
        commands
    }

    fn confirm(&mut self, question: String, then: Vec<Command>) {
        self.overlay = Some(Overlay::Confirm { question, then, quit: false });
    }

    fn selected_name(&self) -> String {
        self.text.stage_name(&self.stages[self.selected].id).to_string()
    }

    /// Why the selected stage cannot run now, if it cannot.
    fn blocked(&self, i: usize) -> Option<String> {
        let name = self.text.stage_name(&self.stages[i].id).to_string();
        if self.running {
            return Some(self.busy_text());
        }
        if matches!(self.stages[i].status, StageStatus::Done | StageStatus::Skipped) {
            return Some(fill(self.text.msg_already_done, &[("stage", &name)]));
        }
        if self.stages[..i].iter().any(|s| !matches!(s.status, StageStatus::Done | StageStatus::Skipped)) {
            let key = self.keymap.keys_of(Action::RunAll);
            return Some(fill(self.text.msg_before_first, &[("stage", &name), ("key", &key)]));
        }
        None
    }

    pub fn on_action(&mut self, action: Action) -> Vec<Command> {
        let page = self.output_height.get().max(1);
        let t = self.text;
        match action {
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                match self.view {
                    View::Stages => {
                        self.follow_stage = false;
                        self.selected = step(self.selected, down, self.stages.len());
                        self.search = None;
                    }
                    View::Verify => {
                        self.verify_selected = step(self.verify_selected, down, self.verify_rows().len());
                        self.detail_scroll = 0;
                    }
                    View::Plan => self.plan_scroll = step(self.plan_scroll, down, self.plan_lines.len()),
                }
            }
            Action::PageUp | Action::PageDown => {
                let delta = if action == Action::PageUp { -(page as isize) } else { page as isize };
                match self.view {
                    View::Stages => self.stages[self.selected].output.scroll(delta, page),
                    View::Verify => self.detail_scroll = self.detail_scroll.saturating_add_signed(delta),
                    View::Plan => self.plan_scroll = self.plan_scroll.saturating_add_signed(delta),
                }
            }
            Action::Top => match self.view {
                View::Stages => self.stages[self.selected].output.scroll_to_top(),
                View::Verify => self.detail_scroll = 0,
                View::Plan => self.plan_scroll = 0,
            },
            Action::Bottom | Action::Follow => self.stages[self.selected].output.follow(),
            Action::RunSelected | Action::Retry => {
                let i = self.selected;
                let name = self.selected_name();
                if action == Action::Retry
                    && !matches!(self.stages[i].status, StageStatus::Failed | StageStatus::Cancelled)
                {
                    self.note(true, fill(t.msg_not_failed, &[("stage", &name)]));
                } else if let Some(why) = self.blocked(i) {
                    self.note(true, why);
                } else {
                    let q = if action == Action::Retry { t.confirm_retry } else { t.confirm_run_stage };
                    let q = fill(q, &[("stage", &name), ("target", &self.target_label)]);
                    self.confirm(q, vec![Command::RunStage(i)]);
                }
            }
            Action::RunAll => {
                if self.running {
                    self.note(true, self.busy_text());
                } else if let Some(i) = self.next_to_run() {
                    self.selected = i;
                    let q = fill(t.confirm_run_all, &[("target", &self.target_label)]);
                    self.confirm(q, vec![Command::RunAll]);
                } else {
                    let name = t.stage_name("verify").to_string();
                    self.note(true, fill(t.msg_already_done, &[("stage", &name)]));
                }
            }
            Action::Skip => {
                let i = self.selected;
                let name = self.selected_name();
                if self.running {
                    self.note(true, self.busy_text());
                } else if matches!(self.stages[i].status, StageStatus::Done | StageStatus::Skipped) {
                    self.note(true, fill(t.msg_already_done, &[("stage", &name)]));
                } else {
                    self.confirm(fill(t.confirm_skip, &[("stage", &name)]), vec![Command::Skip(i)]);
                }
            }
            Action::Cancel => {
                if self.running {
                    self.confirm(t.confirm_cancel.to_string(), vec![Command::Cancel]);
                } else {
                    self.note(false, t.msg_not_running.to_string());
                }
            }
            Action::Interrupt => {
                self.quit_when_idle = true;
                if self.running {
                    self.interrupted = true;
                    return self.start(vec![Command::Cancel]);
                }
                self.quit = true;
            }
            Action::Quit => {
                if self.running {
                    self.overlay = Some(Overlay::Confirm {
                        question: t.confirm_quit_running.to_string(),
                        then: vec![Command::Cancel],
                        quit: true,
                    });
                } else {
                    self.quit = true;
                }
            }
            Action::Cutover => {
                if self.stages.iter().any(|s| s.id == "catch-up" && s.status == StageStatus::Running) {
                    self.confirm(t.confirm_cutover.to_string(), vec![Command::Cutover]);
                } else {
                    self.note(true, t.msg_no_catch_up.to_string());
                }
            }
            Action::VerifyNow => {
                if self.running {
                    self.note(true, self.busy_text());
                } else {
                    self.view = View::Verify;
                    self.last_verify = Some(self.now());
                    return self.start(vec![Command::Verify]);
                }
            }
            Action::LiveVerify => {
                self.live = match self.live {
                    Some(_) => {
                        self.note(false, t.msg_live_off.to_string());
                        None
                    }
                    None => {
                        let n = self.live_interval.as_secs();
                        self.note(false, fill(t.msg_live_on, &[("n", &n)]));
                        Some(self.live_interval)
                    }
                };
            }
            Action::NextView => {
                self.view = match self.view {
                    View::Stages => View::Verify,
                    View::Verify => View::Plan,
                    View::Plan => View::Stages,
                }
            }
            Action::ViewStages => self.view = View::Stages,
            Action::ViewVerify => self.view = View::Verify,
            Action::ViewPlan => self.view = View::Plan,
            Action::Search => {
                self.view = View::Stages;
                self.overlay = Some(Overlay::Search(String::new()));
            }
            Action::NextMatch | Action::PreviousMatch => {
                let forward = action == Action::NextMatch;
                if let Some(s) = self.search.as_mut() {
                    if !s.hits.is_empty() {
                        let n = s.hits.len();
                        s.current = if forward { (s.current + 1) % n } else { (s.current + n - 1) % n };
                        let line = s.hits[s.current];
                        self.stages[self.selected].output.show(line, page);
                    }
                }
            }
            Action::Help => self.overlay = Some(Overlay::Help),
        }
        Vec::new()
    }

    fn run_search(&mut self, query: String) {
        let page = self.output_height.get().max(1);
        let output = &mut self.stages[self.selected].output;
        let hits = output.find(&query);
        // the newest match first: the end of the output is where one looks first
        let current = hits.len().saturating_sub(1);
        if let Some(&line) = hits.get(current) {
            output.show(line, page);
        } else {
            let line = fill(self.text.search_none, &[("q", &format!("{query:?}"))]);
            self.note(true, line);
        }
        self.search = Some(SearchState { query, hits, current });
    }

    /// The process exit code for how the console leaves the run.
    pub fn exit_code(&self) -> i32 {
        if self.crashed {
            return EXIT_STAGE_FAILED;
        }
        if self.interrupted || self.stages.iter().any(|s| s.status == StageStatus::Cancelled) {
            return EXIT_CANCELLED;
        }
        if let Some(failed) = self.stages.iter().find(|s| s.status == StageStatus::Failed) {
            if self.refused {
                return EXIT_USER_ERROR;
            }
            let differences =
                failed.id == "verify" && failed.error.as_deref().is_some_and(|e| e.starts_with("verify found"));
            return if differences { EXIT_DIFFERENCES } else { EXIT_STAGE_FAILED };
        }
        // clean only when the checklist's verify ran and passed
        if self.stages.last().is_some_and(|s| s.status == StageStatus::Done) {
            0
        } else {
            EXIT_INCOMPLETE
        }
    }

    /// One line for the terminal after the console closes.
    pub fn farewell(&self) -> String {
        let count = |st: StageStatus| self.stages.iter().filter(|s| s.status == st).count();
        let mut s = format!("{} of {} stages done", count(StageStatus::Done), self.stages.len());
        if count(StageStatus::Skipped) > 0 {
            s.push_str(&format!(", {} skipped", count(StageStatus::Skipped)));
        }
        if self.stages.last().is_some_and(|s| s.status != StageStatus::Done) {
            s.push_str("; not verified: run it again to go on");
        }
        if let Some(f) = self.stages.iter().find(|s| s.status == StageStatus::Failed) {
            s.push_str(&format!(
                "; {} failed: {} (fix: {})",
                f.id,
                f.error.as_deref().unwrap_or("?"),
                f.fix.as_deref().unwrap_or("see the run's pgshift.log")
            ));
        }
        if let Some(v) = &self.verify {
            s.push_str(&format!("; last verify: {} unexpected difference(s)", v.report.unexpected));
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyRow {
    Class(&'static str),
    TableRows,
}

fn step(i: usize, down: bool, len: usize) -> usize {
    if down {
        (i + 1).min(len.saturating_sub(1))
    } else {
        i.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_keeps_the_last_minute_in_bytes_when_any_moved() {
        use crate::engine::Unit;
        let mut t = Throughput::default();
        assert!(t.per_second(0).is_none());
        t.add(Unit::Rows, 0, 500);
        t.add(Unit::Tables, 0, 3); // not throughput
        t.add(Unit::Rows, 2, 700);
        let (v, unit) = t.per_second(2).unwrap();
        assert_eq!(unit, Unit::Rows);
        assert_eq!(&v[v.len() - 3..], &[500, 0, 700]);
        t.add(Unit::Bytes, 70, 4096); // a minute later: bytes, and the old seconds dropped
        let (v, unit) = t.per_second(70).unwrap();
        assert_eq!((unit, v.len(), *v.last().unwrap()), (Unit::Bytes, 60, 4096));
        assert_eq!(v.iter().sum::<u64>(), 4096);
    }
}

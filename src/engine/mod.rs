//! The stage engine: runs stages in order, streams their events on a bounded channel, cancels them
//! (child processes and server-side queries), and keeps a journal so a later run can resume.
//! It never touches the terminal: the headless CLI and the TUI are two consumers of its events.
//! Core: it may use `postgres` (to cancel queries), `files` and `error`; stages implement its
//! `Stage`, the checklist and the console consume its events.

/// An unfinished gauge that stood still this long is said to be stalled (the console's
/// `--stall-after`, the plain output's line); nothing is cancelled for it.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(30);

/// For [`Stage::beside_until`]: no later stage waits; the run's end does.
pub const RUN_END: &str = "(the end of the run)";

pub mod activity;
pub mod journal;
pub mod run_files;
pub mod status;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::journal::Journal;
pub use crate::engine::status::StageStatus;
use crate::error::UserError;
use crate::postgres::conn::ConnSpec;

/// Which stream an output line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// pgshift's own account of what it is doing.
    Info,
}

/// What a progress count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Rows,
    Tables,
    Steps,
    Seconds,
}

/// Everything a consumer (the headless printer, the TUI, a test) learns about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    StageStarted {
        stage: String,
        title: String,
    },
    /// One line of a child process or of pgshift's own narration; `source` names the producer
    /// (`pg_dump data.sql`, `inventory`, ...).
    Output {
        stage: String,
        source: String,
        stream: Stream,
        line: String,
    },
    Progress {
        stage: String,
        item: String,
        done: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        unit: Unit,
    },
    Warning {
        stage: String,
        message: String,
    },
    /// The stage's server sessions that wait for another session, each with the one it waits
    /// for (sent when that changes and every 10 s while it lasts; empty: none waits any more).
    Waits {
        stage: String,
        waits: Vec<activity::SessionWait>,
    },
    /// How many of the stage's server sessions run a statement now, as the watcher counted them
    /// (sent when the count changes).
    Sessions {
        stage: String,
        busy: u32,
    },
    /// How far an online catch-up is behind the source (every 2 s while it follows): the WAL not yet
    /// applied, and the age of the oldest source commit received but not yet committed on the target.
    Lag {
        stage: String,
        bytes: u64,
        millis: u64,
    },
    /// What the move upgrades, found by a pre-flight: the server's major, or an extension the
    /// target installs at a newer version (`what` = `PostgreSQL`, `timescaledb`, ...).
    Upgrade {
        stage: String,
        what: String,
        from: String,
        to: String,
    },
    StageFinished {
        stage: String,
        status: StageStatus,
        elapsed_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fix: Option<String>,
    },
}

/// Why a stage did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageError {
    /// Something the user can fix: bad input, a refusing server, a full disk, a failing tool.
    Failed(UserError),
    Cancelled,
}

impl From<UserError> for StageError {
    fn from(e: UserError) -> Self {
        StageError::Failed(e)
    }
}

/// One step of the checklist.
pub trait Stage: Send + Sync {
    /// Stable id used in events and the journal (`backup`, `environment`, ...).
    fn id(&self) -> &'static str;
    fn title(&self) -> &'static str;
    /// Checks that must pass before anything is written anywhere (tools, versions, reachability).
    fn preflight<'a>(&'a self, _ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async { Ok(()) })
    }
    /// Does the work; returns a one-line summary.
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>>;
    /// A stage whose later part may run beside the stages after it, up to the stage of this id,
    /// which starts only once this one is complete ([`RUN_END`]: the run's end). The stage says when the next may start with
    /// [`StageContext::release`].
    fn beside_until(&self) -> Option<&'static str> {
        None
    }
}

/// What a running stage gets: where to send events, the cancellation signal, and a tag for the
/// server sessions it opens so that cancelling can end them on the server too.
pub struct StageContext {
    stage: &'static str,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    application_name: String,
    servers: Mutex<Vec<ConnSpec>>,
    run_dir: Option<PathBuf>,
    /// Told when the stages after this one may start (see [`Stage::beside_until`]).
    release: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl StageContext {
    pub fn new(
        stage: &'static str,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
        run_id: &str,
        run_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            stage,
            events,
            cancel,
            application_name: format!("pgshift {stage} {run_id}"),
            servers: Mutex::new(Vec::new()),
            run_dir,
            release: Mutex::new(None),
        }
    }

    /// The stages after this one may start now; this one goes on beside them. Nothing happens
    /// unless the engine runs a stage after it.
    pub fn release(&self) {
        if let Some(tx) = self.release.lock().expect("release lock").take() {
            let _ = tx.send(());
        }
    }

    fn on_release(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.release.lock().expect("release lock") = Some(tx);
        rx
    }

    pub fn stage(&self) -> &'static str {
        self.stage
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The `application_name` every session of this stage carries (also given to child tools).
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// `spec` tagged with this stage's application name, remembered so cancelling can end its
    /// server sessions (queries in flight, a pg_dump waiting for a lock).
    pub fn tagged(&self, spec: &ConnSpec) -> ConnSpec {
        let mut tagged = spec.clone();
        tagged.config.application_name(&self.application_name);
        self.servers.lock().expect("servers lock").push(tagged.clone());
        tagged
    }

    pub async fn send(&self, event: Event) {
        // A consumer that went away must not stop the work; the journal still records it.
        let _ = self.events.send(event).await;
    }

    pub async fn output(&self, source: &str, stream: Stream, line: impl Into<String>) {
        let line = line.into();
        self.send(Event::Output { stage: self.stage.into(), source: source.into(), stream, line }).await;
    }

    pub async fn info(&self, source: &str, line: impl Into<String>) {
        self.output(source, Stream::Info, line).await;
    }

    pub async fn progress(&self, item: &str, done: u64, total: Option<u64>, unit: Unit) {
        self.send(Event::Progress { stage: self.stage.into(), item: item.into(), done, total, unit }).await;
    }

    /// Runs `work`, showing `item` at the figure `read` gives (done, total) every half second
    /// meanwhile and once more at the end: for work that counts as it goes (rows read, tables hashed).
    pub async fn metered<T>(
        &self,
        item: &str,
        unit: Unit,
        read: impl Fn() -> (u64, Option<u64>),
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // nothing counted of nothing known: the work has not reached its counting yet (a gauge
        // of 0 of 0 would say nothing, and stand still long enough to be called stalled)
        let show =
            |(done, total): (u64, Option<u64>)| (done > 0 || total.is_some_and(|t| t > 0)).then_some((done, total));
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = tick.tick() => {
                    if let Some((done, total)) = show(read()) {
                        self.progress(item, done, total, unit).await;
                    }
                }
            }
        };
        if let Some((done, total)) = show(read()) {
            self.progress(item, done, total, unit).await;
        }
        out
    }

    /// Progress from synchronous code (a stdout sink): dropped when the consumer lags, since a
    /// newer count follows anyway.
    pub fn try_progress(&self, item: &str, done: u64, total: Option<u64>, unit: Unit) {
        let _ =
            self.events.try_send(Event::Progress { stage: self.stage.into(), item: item.into(), done, total, unit });
    }

    /// A sender for events from synchronous callbacks (`try_send`: output may be dropped when the
    /// consumer lags far behind).
    pub fn events_sender(&self) -> mpsc::Sender<Event> {
        self.events.clone()
    }

    /// The directory of this run (backup files, journal), when the run has one.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref()
    }

    pub async fn upgrade(&self, what: &str, from: &str, to: &str) {
        let (what, from, to) = (what.into(), from.into(), to.into());
        self.send(Event::Upgrade { stage: self.stage.into(), what, from, to }).await;
    }

    pub async fn warning(&self, message: impl Into<String>) {
        self.send(Event::Warning { stage: self.stage.into(), message: message.into() }).await;
    }

    /// Ends, on every server this stage touched, the sessions that carry its application name.
    async fn end_server_sessions(&self) {
        let servers: Vec<ConnSpec> = self.servers.lock().expect("servers lock").clone();
        let mut seen = Vec::new();
        for spec in servers {
            let key = spec.label();
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let mut admin = spec.clone();
            admin.config.application_name("pgshift cancel");
            admin.config.connect_timeout(Duration::from_secs(5));
            let Ok(client) = admin.connect().await else { continue };
            let ended = client
                .query(
                    // waits up to 5 s for each session to be gone (PostgreSQL 14+)
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    &[&self.application_name],
                )
                .await
                .map(|rows| rows.len())
                .unwrap_or(0);
            if ended > 0 {
                self.info("cancel", format!("ended {ended} server session(s) on {}", spec.label())).await;
            }
        }
    }
}

/// How long a cancelled stage may take to stop its children before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The result of a run: each stage's final status, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub statuses: Vec<(&'static str, StageStatus)>,
    /// The error of the stage that failed, if one did.
    pub error: Option<UserError>,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.statuses.iter().all(|(_, s)| matches!(s, StageStatus::Done | StageStatus::Skipped))
    }

    /// Cancelled, and not because a stage failed (a stage beside a failed one is cancelled too).
    pub fn cancelled(&self) -> bool {
        self.statuses.iter().any(|(_, s)| *s == StageStatus::Cancelled)
            && !self.statuses.iter().any(|(_, s)| *s == StageStatus::Failed)
    }
}

/// Runs stages in order with one event channel, one cancellation token and an optional journal.
pub struct Engine {
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    run_id: String,
    run_dir: Option<PathBuf>,
}

impl Engine {
    pub fn new(events: mpsc::Sender<Event>, cancel: CancellationToken) -> Self {
        let run_id = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), std::process::id());
        Self { events, cancel, run_id, run_dir: None }
    }

    /// The directory stages write into (backup files) and where the journal lives.
    pub fn set_run_dir(&mut self, dir: PathBuf) {
        self.run_dir = Some(dir);
    }

    pub fn context(&self, stage: &dyn Stage) -> StageContext {
        StageContext::new(stage.id(), self.events.clone(), self.cancel.clone(), &self.run_id, self.run_dir.clone())
    }

    /// Runs every stage's pre-flight; the first refusal is reported as that stage failing.
    pub async fn preflight(&self, stages: &[&dyn Stage]) -> Result<(), StageError> {
        for stage in stages {
            let ctx = self.context(*stage);
            let result = tokio::select! {
                r = stage.preflight(&ctx) => r.map_err(StageError::Failed),
                _ = self.cancel.cancelled() => Err(StageError::Cancelled),
            };
            if let Err(e) = result {
                let (status, err) = match &e {
                    StageError::Failed(u) => (StageStatus::Failed, Some(u)),
                    StageError::Cancelled => (StageStatus::Cancelled, None),
                };
                ctx.send(finished(stage.id(), status, Duration::ZERO, None, err)).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs the stages in order, skipping those the journal records as done or skipped; stops at the first
    /// stage that fails or is cancelled (the rest stay pending). A stage with
    /// [`Stage::beside_until`] that releases goes on beside the next stages; should it fail, the
    /// stage running beside it is cancelled, and should that one fail, it is still awaited.
    pub async fn run(&self, stages: &[&dyn Stage], mut journal: Option<&mut Journal>) -> RunOutcome {
        let mut statuses: Vec<(&'static str, StageStatus)> =
            stages.iter().map(|s| (s.id(), StageStatus::Pending)).collect();
        let mut error = None;
        let mut beside: Option<Beside<'_>> = None;
        for (i, stage) in stages.iter().enumerate() {
            // the stage that waits for the one running beside
            if beside.as_ref().is_some_and(|b| b.until == stage.id()) {
                let mut b = beside.take().expect("checked");
                let result = (&mut b.work).await;
                if !self.settle(stages, b, result, &mut statuses, &mut error, &mut journal).await {
                    break;
                }
            }
            let ctx = self.context(*stage);
            let recorded = journal.as_ref().and_then(|j| j.status(stage.id()));
            if matches!(recorded, Some(StageStatus::Done | StageStatus::Skipped)) {
                statuses[i].1 = StageStatus::Skipped;
                let summary = if recorded == Some(StageStatus::Done) {
                    "done in an earlier run (journal)".to_string()
                } else {
                    "skipped by the user (journal)".to_string()
                };
                ctx.send(finished(stage.id(), StageStatus::Skipped, Duration::ZERO, Some(summary), None)).await;
                continue;
            }
            if self.cancel.is_cancelled() {
                statuses[i].1 = StageStatus::Cancelled;
                break;
            }
            ctx.send(Event::StageStarted { stage: stage.id().into(), title: stage.title().into() }).await;
            if let Some(j) = journal.as_deref_mut() {
                if let Err(e) = j.record(stage.id(), StageStatus::Running, None) {
                    ctx.warning(e).await;
                }
            }
            // beside another stage, this one is cancelled should that one fail
            let token = if beside.is_some() { self.cancel.child_token() } else { self.cancel.clone() };
            let ctx = std::sync::Arc::new(StageContext::new(
                stage.id(),
                self.events.clone(),
                token.clone(),
                &self.run_id,
                self.run_dir.clone(),
            ));
            let until = stage.beside_until().filter(|_| beside.is_none() && i + 1 < stages.len());
            let mut released = until.map(|_| ctx.on_release());
            let started = Instant::now();
            let mut work: Work<'_> = Box::pin(run_owned(*stage, ctx.clone(), token.clone()));
            let result = loop {
                let step = tokio::select! {
                    r = &mut work => Step::Done(r),
                    r = async {
                        match released.as_mut() {
                            Some(rx) => rx.await.is_ok(),
                            None => std::future::pending().await,
                        }
                    } => Step::Released(r),
                    r = async {
                        match beside.as_mut() {
                            Some(b) => (&mut b.work).await,
                            None => std::future::pending().await,
                        }
                    } => Step::Beside(r),
                };
                match step {
                    Step::Done(r) => break Some(r),
                    Step::Released(true) => break None,
                    Step::Released(false) => released = None, // it ended without releasing
                    Step::Beside(r) => {
                        let b = beside.take().expect("polled");
                        if !self.settle(stages, b, r, &mut statuses, &mut error, &mut journal).await {
                            token.cancel();
                        }
                    }
                }
            };
            let Some(result) = result else {
                statuses[i].1 = StageStatus::Running;
                beside = Some(Beside { index: i, until: until.expect("released"), ctx, started, work });
                continue;
            };
            let (status, err) = self.finish(*stage, &ctx, started, result, &mut journal).await;
            statuses[i].1 = status;
            if status != StageStatus::Done {
                if status == StageStatus::Failed {
                    error = err;
                }
                break;
            }
        }
        // a stage still beside the last one (or the one that stopped): complete it
        if let Some(mut b) = beside.take() {
            let result = (&mut b.work).await;
            self.settle(stages, b, result, &mut statuses, &mut error, &mut journal).await;
        }
        if let Some(j) = journal.as_deref() {
            let path = j.dir().join(run_files::RUN_REPORT);
            if let Err(e) = crate::files::write_atomic(&path, j.data().report_markdown().as_bytes()) {
                let ctx = StageContext::new("run", self.events.clone(), self.cancel.clone(), &self.run_id, None);
                ctx.warning(format!("{} not written: {e}", path.display())).await;
            }
        }
        RunOutcome { statuses, error }
    }

    /// Records how the stage that ran beside the others ended, its status in `statuses` and its
    /// error in `error` (unless a failure came first); true when it is done.
    async fn settle(
        &self,
        stages: &[&dyn Stage],
        b: Beside<'_>,
        result: Result<String, StageError>,
        statuses: &mut [(&'static str, StageStatus)],
        error: &mut Option<UserError>,
        journal: &mut Option<&mut Journal>,
    ) -> bool {
        let (status, err) = self.finish(stages[b.index], &b.ctx, b.started, result, journal).await;
        statuses[b.index].1 = status;
        if status == StageStatus::Failed && error.is_none() {
            *error = err;
        }
        status == StageStatus::Done
    }

    /// Records how a stage ended (journal, event; its server sessions ended unless it is done).
    async fn finish(
        &self,
        stage: &dyn Stage,
        ctx: &StageContext,
        started: Instant,
        result: Result<String, StageError>,
        journal: &mut Option<&mut Journal>,
    ) -> (StageStatus, Option<UserError>) {
        let (status, summary, err) = match result {
            Ok(summary) => (StageStatus::Done, Some(summary), None),
            Err(StageError::Cancelled) => {
                ctx.end_server_sessions().await;
                (StageStatus::Cancelled, None, Some(UserError::new("cancelled", "run it again")))
            }
            Err(StageError::Failed(e)) => {
                ctx.end_server_sessions().await;
                (StageStatus::Failed, None, Some(e))
            }
        };
        if let Some(j) = journal.as_deref_mut() {
            let detail = summary.clone().or_else(|| err.as_ref().map(|e| e.to_string()));
            if let Err(e) = j.record(stage.id(), status, detail) {
                ctx.warning(e).await;
            }
        }
        ctx.send(finished(stage.id(), status, started.elapsed(), summary, err.as_ref())).await;
        (status, err)
    }
}

/// A stage's work, owning its context.
type Work<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, StageError>> + Send + 'a>>;

/// A stage that released the ones after it and goes on beside them.
struct Beside<'a> {
    index: usize,
    /// The stage that may not start before this one is complete.
    until: &'static str,
    ctx: std::sync::Arc<StageContext>,
    started: Instant,
    work: Work<'a>,
}

/// What happened first while a stage ran.
enum Step {
    Done(Result<String, StageError>),
    /// The stage released the next (true), or ended its chance to (false).
    Released(bool),
    /// The stage running beside it ended.
    Beside(Result<String, StageError>),
}

async fn run_owned(
    stage: &dyn Stage,
    ctx: std::sync::Arc<StageContext>,
    cancel: CancellationToken,
) -> Result<String, StageError> {
    run_cancellable(stage, &ctx, &cancel).await
}

/// Runs a stage; on cancellation it gets a grace period to stop its children, then is dropped
/// (dropping kills whatever children are left: they are spawned with kill-on-drop).
async fn run_cancellable(
    stage: &dyn Stage,
    ctx: &StageContext,
    cancel: &CancellationToken,
) -> Result<String, StageError> {
    // the stage, and beside it what its server sessions do (dropped when the stage ends)
    let open = activity::OpenItems::default();
    let work = async {
        tokio::select! {
            r = stage.run(ctx) => r,
            never = activity::watch(ctx, &open) => match never {},
        }
    };
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r,
        _ = cancel.cancelled() => match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
            Ok(Ok(summary)) => Ok(summary), // it finished before it saw the cancel: it is complete
            Err(_) => Err(StageError::Cancelled),
            Ok(Err(e)) => Err(match e { StageError::Failed(_) => StageError::Cancelled, c => c }),
        },
    };
    // the server gauges still open when the stage completed: their statements ended with it
    let left: Vec<_> =
        if result.is_ok() { open.lock().expect("open items lock").drain().collect() } else { Vec::new() };
    for (item, last) in left {
        activity::close(ctx, &item, last).await;
    }
    result
}

fn finished(
    stage: &str,
    status: StageStatus,
    elapsed: Duration,
    summary: Option<String>,
    error: Option<&UserError>,
) -> Event {
    Event::StageFinished {
        stage: stage.into(),
        status,
        elapsed_ms: elapsed.as_millis() as u64,
        summary,
        error: error.map(|e| e.message.clone()),
        fix: error.map(|e| e.fix.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::journal::Journal;
    use crate::pgtools::process::{run_tool, Discard, LineClass, ToolCommand};

    struct Fixed(&'static str, Result<&'static str, &'static str>);

    impl Stage for Fixed {
        fn id(&self) -> &'static str {
            self.0
        }
        fn title(&self) -> &'static str {
            "fixed"
        }
        fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
            Box::pin(async move {
                ctx.info("test", "working").await;
                match self.1 {
                    Ok(s) => Ok(s.to_string()),
                    Err(e) => Err(StageError::Failed(UserError::new(e, "fix it"))),
                }
            })
        }
    }

    /// Runs a real child (`sleep 30`) that only a cancel can end.
    struct Sleeper;

    impl Stage for Sleeper {
        fn id(&self) -> &'static str {
            "sleeper"
        }
        fn title(&self) -> &'static str {
            "sleeps"
        }
        fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
            Box::pin(async move {
                let cmd = ToolCommand {
                    label: "sleep".into(),
                    program: "sh".into(),
                    // the shell's child `sleep` is in the same process group and must die too
                    args: vec!["-c".into(), "echo started >&2; sleep 30; echo never".into()],
                    env: vec![],
                    stdin: None,
                };
                run_tool(ctx, &cmd, &mut Discard, &mut |_| LineClass::Plain).await?;
                Ok("slept".into())
            })
        }
    }

    /// Releases the stages after it at once, then works `ms` more and ends with `result`.
    struct Releasing(u64, Result<&'static str, &'static str>);

    impl Stage for Releasing {
        fn id(&self) -> &'static str {
            "early"
        }
        fn title(&self) -> &'static str {
            "releases"
        }
        fn beside_until(&self) -> Option<&'static str> {
            Some("gate")
        }
        fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
            Box::pin(async move {
                ctx.release();
                tokio::time::sleep(Duration::from_millis(self.0)).await;
                self.1.map(String::from).map_err(|e| StageError::Failed(UserError::new(e, "fix it")))
            })
        }
    }

    /// Works until cancelled (or `ms` passed).
    struct Busy(&'static str, u64);

    impl Stage for Busy {
        fn id(&self) -> &'static str {
            self.0
        }
        fn title(&self) -> &'static str {
            "busy"
        }
        fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
            Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.1)) => Ok("worked".into()),
                    _ = ctx.cancel_token().cancelled() => Err(StageError::Cancelled),
                }
            })
        }
    }

    /// (stage, started or the status it finished with), in the order the engine said them.
    fn changes(events: &[Event]) -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::StageStarted { stage, .. } => Some((stage.clone(), "started".into())),
                Event::StageFinished { stage, status, .. } => Some((stage.clone(), status.label().into())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_stage_that_releases_runs_beside_the_next_and_the_gate_waits_for_it() {
        let (tx, rx) = mpsc::channel(100);
        let engine = Engine::new(tx, CancellationToken::new());
        let (early, next, gate) = (Releasing(300, Ok("archived")), Busy("next", 50), Fixed("gate", Ok("fine")));
        let out = engine.run(&[&early, &next, &gate], None).await;
        assert!(out.succeeded(), "{out:?}");
        let order = changes(&collect(rx));
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(
            order,
            pairs(&[
                ("early", "started"),
                ("next", "started"),
                ("next", "done"),
                ("early", "done"),
                ("gate", "started"),
                ("gate", "done")
            ])
        );
    }

    #[tokio::test]
    async fn a_failing_stage_beside_another_cancels_it_and_the_run_fails() {
        let (tx, rx) = mpsc::channel(100);
        let engine = Engine::new(tx, CancellationToken::new());
        let (early, next, gate) = (Releasing(100, Err("dump failed")), Busy("next", 60_000), Fixed("gate", Ok("fine")));
        let started = Instant::now();
        let out = engine.run(&[&early, &next, &gate], None).await;
        assert!(started.elapsed() < Duration::from_secs(10), "the stage beside it was stopped");
        assert_eq!(
            out.statuses,
            vec![("early", StageStatus::Failed), ("next", StageStatus::Cancelled), ("gate", StageStatus::Pending)]
        );
        assert!(!out.succeeded() && !out.cancelled(), "failed, not cancelled by the user");
        assert_eq!(out.error.unwrap().message, "dump failed");
        assert!(!changes(&collect(rx)).iter().any(|(s, _)| s == "gate"));
    }

    fn collect(mut rx: mpsc::Receiver<Event>) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    #[tokio::test]
    async fn a_failing_stage_stops_the_run_and_the_journal_resumes_after_done_stages() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(100);
        let engine = Engine::new(tx, CancellationToken::new());
        let (a, b, c) = (Fixed("a", Ok("fine")), Fixed("b", Err("broken")), Fixed("c", Ok("fine")));
        let mut journal = Journal::open(dir.path()).unwrap();
        let out = engine.run(&[&a, &b, &c], Some(&mut journal)).await;
        assert_eq!(
            out.statuses,
            vec![("a", StageStatus::Done), ("b", StageStatus::Failed), ("c", StageStatus::Pending)]
        );
        assert_eq!(out.error.unwrap().message, "broken");
        let events = collect(rx);
        assert!(events.iter().any(|e| matches!(e, Event::StageFinished { stage, error: Some(m), fix: Some(_), .. }
            if stage == "b" && m == "broken")));

        // a new run over the same journal skips `a` and runs `b` again
        let (tx, rx) = mpsc::channel(100);
        let engine = Engine::new(tx, CancellationToken::new());
        let fixed_b = Fixed("b", Ok("repaired"));
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.status("b"), Some(StageStatus::Failed));
        let out = engine.run(&[&a, &fixed_b, &c], Some(&mut journal)).await;
        assert_eq!(out.statuses, vec![("a", StageStatus::Skipped), ("b", StageStatus::Done), ("c", StageStatus::Done)]);
        assert!(out.succeeded());
        assert!(!collect(rx).iter().any(|e| matches!(e, Event::StageStarted { stage, .. } if stage == "a")));
        let reread = Journal::open(dir.path()).unwrap();
        assert_eq!(reread.status("c"), Some(StageStatus::Done));
        // run.md: each stage's result and, for those that ran, their place on the timeline
        let report = std::fs::read_to_string(dir.path().join(run_files::RUN_REPORT)).unwrap();
        assert!(report.contains("| b | done | repaired |") && report.contains("## Timeline"), "{report}");
        let spans = reread.data().spans();
        assert_eq!(spans.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(spans.windows(2).all(|w| w[0].start <= w[1].start && w[0].end.is_some()), "{spans:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cancelling_kills_the_whole_process_group() {
        let (tx, mut rx) = mpsc::channel(100);
        let cancel = CancellationToken::new();
        let engine = Engine::new(tx, cancel.clone());
        let run = tokio::spawn(async move { engine.run(&[&Sleeper], None).await });
        // wait for the child to speak, then find its `sleep`
        loop {
            match rx.recv().await.expect("events") {
                Event::Output { line, .. } if line == "started" => break,
                _ => {}
            }
        }
        let sleepers = || -> Vec<String> {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                // the shell (`sh -c ...; sleep 30; ...`) and its `sleep 30`, nothing else
                .filter(|c| c.contains("sleep 30;") || c.trim_end() == "sleep 30")
                .collect()
        };
        // the shell has printed; wait until it has also started its `sleep`
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sleepers().iter().any(|c| c.trim_end() == "sleep 30") {
            assert!(Instant::now() < deadline, "the child's sleep never started: {:?}", sleepers());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        cancel.cancel();
        let out = run.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "stopped promptly");
        assert_eq!(out.statuses, vec![("sleeper", StageStatus::Cancelled)]);
        assert!(out.cancelled());
        // a killed grandchild is reaped by init a moment later: its /proc entry may linger
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut left = sleepers();
        while !left.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = sleepers();
        }
        assert!(left.is_empty(), "no process left: {left:?}");
    }
}

//! The console's worker: it owns the stages and runs what the console asks, one command at a time,
//! through the same engine the headless run uses. Events go to the console (and the run's log);
//! a cancel reaches the running command at once. The console itself never runs work.

use crate::online::slot::CutoverRequest;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::app::{Command, Msg};
use crate::engine::journal::Journal;
use crate::engine::{Engine, Event, Stage, StageStatus};
use crate::verify::VerifyReport;

/// Events buffered between the engine and the console; beyond it, the work waits.
const EVENT_BUFFER: usize = 1024;

pub struct Runner {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

struct Shared {
    stages: Vec<Box<dyn Stage>>,
    dir: PathBuf,
    log: Mutex<std::fs::File>,
    msgs: mpsc::Sender<Msg>,
}

impl Runner {
    pub fn spawn(stages: Vec<Box<dyn Stage>>, dir: PathBuf, log: std::fs::File, msgs: mpsc::Sender<Msg>) -> Runner {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { stages, dir, log: Mutex::new(log), msgs });
        Runner { commands: tx, task: tokio::spawn(serve(shared, rx)) }
    }

    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Cancels what runs and waits until it has stopped (children and server sessions included).
    pub async fn shutdown(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

async fn serve(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let current: Arc<Mutex<Option<CancellationToken>>> = Arc::new(Mutex::new(None));
    let mut last: Option<JoinHandle<()>> = None;
    while let Some(command) = commands.recv().await {
        let running = current.lock().expect("current lock").clone();
        match (command, running) {
            (Command::Cancel, Some(cancel)) => cancel.cancel(),
            (Command::Cancel, None) => {}
            // beside what runs: the catch-up reads the request
            (Command::Cutover, _) => {
                let text = match CutoverRequest::now(false).save(&shared.dir) {
                    Ok(()) => "cutover requested: the catch-up drains to the source's current position".to_string(),
                    Err(e) => format!("cutover request not written: {} ({})", e.message, e.fix),
                };
                notice(&shared, text).await;
            }
            (_, Some(_)) => {
                let _ = shared.msgs.send(Msg::Busy).await;
            }
            (command, None) => {
                let cancel = CancellationToken::new();
                *current.lock().expect("current lock") = Some(cancel.clone());
                let (shared, current) = (shared.clone(), current.clone());
                last = Some(tokio::spawn(async move {
                    // the work in its own task: a bug that panics in a stage must not leave the
                    // console waiting for an end that never comes
                    let outcome = tokio::spawn(work(shared.clone(), command, cancel)).await;
                    *current.lock().expect("current lock") = None;
                    if let Err(e) = outcome {
                        let _ = shared.msgs.send(Msg::Crashed(e.to_string())).await;
                    }
                    let _ = shared.msgs.send(Msg::Idle).await;
                }));
            }
        }
    }
    // the console closed: stop what runs and wait for it
    if let Some(cancel) = current.lock().expect("current lock").clone() {
        cancel.cancel();
    }
    if let Some(handle) = last {
        let _ = handle.await;
    }
}

async fn work(shared: Arc<Shared>, command: Command, cancel: CancellationToken) {
    let shared = shared.as_ref();
    // a verify asked for outside the checklist (verify now, live verify) reports apart from it
    let apart = command == Command::Verify;
    let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
    let forward = {
        let msgs = shared.msgs.clone();
        let log = &shared.log;
        async move {
            while let Some(event) = rx.recv().await {
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{}", crate::checklist::headless::line(&event));
                }
                let msg = if apart { Msg::VerifyEvent(event) } else { Msg::Engine(event) };
                let _ = msgs.send(msg).await;
            }
        }
    };
    let started = SystemTime::now();
    let job = async {
        let mut engine = Engine::new(tx.clone(), cancel);
        engine.set_run_dir(shared.dir.clone());
        let all: Vec<&dyn Stage> = shared.stages.iter().map(|s| s.as_ref()).collect();
        let journal = || Journal::open(&shared.dir);
        match command {
            Command::Preflight => {
                if preflight(shared, &engine, &all).await {
                    let _ = shared.msgs.send(Msg::PreflightPassed).await;
                }
            }
            Command::RunAll | Command::RunStage(_) => {
                let chosen: Vec<&dyn Stage> = match command {
                    Command::RunStage(i) => vec![all[i]],
                    _ => all.clone(),
                };
                if preflight(shared, &engine, &chosen).await {
                    match journal() {
                        Ok(mut j) => {
                            engine.run(&chosen, Some(&mut j)).await;
                        }
                        Err(e) => notice(shared, e).await,
                    }
                }
            }
            Command::Skip(i) => {
                let id = all[i].id();
                let summary = "skipped by the user".to_string();
                match journal().and_then(|mut j| j.record(id, StageStatus::Skipped, Some(summary.clone()))) {
                    Ok(()) => {
                        let _ = tx
                            .send(Event::StageFinished {
                                stage: id.into(),
                                status: StageStatus::Skipped,
                                elapsed_ms: 0,
                                summary: Some(summary),
                                error: None,
                                fix: None,
                            })
                            .await;
                    }
                    Err(e) => notice(shared, e).await,
                }
            }
            Command::Verify => {
                if let Some(verify) = all.iter().find(|s| s.id() == "verify") {
                    engine.run(&[*verify], None).await;
                }
            }
            Command::Cancel | Command::Cutover => {}
        }
        drop(engine);
        drop(tx);
    };
    tokio::join!(job, forward);
    // a verify that ran wrote its report: the console shows it
    if let Some((report, _)) = read_report(&shared.dir, started) {
        let _ = shared.msgs.send(Msg::Verified(Box::new(report))).await;
    }
}

/// Runs the pre-flights; a refusal is reported as such (nothing was written).
async fn preflight(shared: &Shared, engine: &Engine, stages: &[&dyn Stage]) -> bool {
    match engine.preflight(stages).await {
        Ok(()) => true,
        Err(crate::engine::StageError::Failed(_)) => {
            let _ = shared.msgs.send(Msg::Refused).await;
            false
        }
        Err(crate::engine::StageError::Cancelled) => false,
    }
}

async fn notice(shared: &Shared, text: String) {
    let _ = shared.msgs.send(Msg::Notice(text)).await;
}

/// The run directory's verify.json and when it was written, when a verify wrote it after `since`.
pub fn read_report(dir: &std::path::Path, since: SystemTime) -> Option<(VerifyReport, SystemTime)> {
    let path = dir.join(crate::engine::run_files::VERIFY_JSON);
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    Some((serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?, modified))
}

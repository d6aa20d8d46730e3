//! The headless view of a run: engine events printed as lines (or JSON lines), and every event
//! kept in the run's log file. The TUI is the other view of the same events.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::journal::Journal;
use crate::engine::{Engine, Event, Stage, StageError, StageStatus, Stream, Unit, DEFAULT_STALL_AFTER};
use crate::error::UserError;
use crate::human::human_bytes;

/// How events reach the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stage changes, warnings, pgshift's own lines and throttled progress on stderr.
    Text { verbose: bool },
    /// Every event as one JSON object per line on stdout.
    Json,
}

/// Events buffered between the engine and a slow consumer; beyond it, the work waits.
const EVENT_BUFFER: usize = 1024;

/// How a headless run ended.
#[derive(Debug)]
pub enum Ended {
    Done,
    /// A pre-flight refused: nothing was done.
    Refused(UserError),
    /// A stage failed (its id and error).
    Failed(&'static str, UserError),
    Cancelled,
}

/// Runs one stage; see [`run_stages`].
pub async fn run_stage(
    stage: &dyn Stage,
    run_dir: Option<&std::path::Path>,
    log: Option<std::fs::File>,
    mode: Mode,
) -> Result<Ended, UserError> {
    run_stages(&[stage], run_dir, log, mode).await
}

/// Runs stages through the engine with this view attached: every pre-flight first, then the
/// stages in order; events printed (and logged to `log`); Ctrl-C/SIGTERM cancel; the journal kept
/// in `run_dir` when there is one (stages it records as done are skipped).
pub async fn run_stages(
    stages: &[&dyn Stage],
    run_dir: Option<&std::path::Path>,
    log: Option<std::fs::File>,
    mode: Mode,
) -> Result<Ended, UserError> {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let printer = tokio::spawn(consume(rx, mode, log));
    let cancel = CancellationToken::new();
    let signals = cancel_on_signals(cancel.clone());
    let mut engine = Engine::new(tx, cancel);
    if let Some(dir) = run_dir {
        engine.set_run_dir(dir.to_path_buf());
    }
    let ended = match engine.preflight(stages).await {
        Err(StageError::Failed(e)) => Ended::Refused(e),
        Err(StageError::Cancelled) => Ended::Cancelled,
        Ok(()) => {
            let mut journal = match run_dir {
                Some(dir) => Some(Journal::open(dir).map_err(|m| UserError::new(m, "use a new directory"))?),
                None => None,
            };
            let outcome = engine.run(stages, journal.as_mut()).await;
            if outcome.succeeded() {
                Ended::Done
            } else if outcome.cancelled() {
                Ended::Cancelled
            } else {
                let failed = outcome.statuses.iter().find(|(_, s)| *s == StageStatus::Failed);
                Ended::Failed(
                    failed.map(|(id, _)| *id).unwrap_or("?"),
                    outcome.error.unwrap_or_else(|| UserError::new("the stage failed", "see the output above")),
                )
            }
        }
    };
    signals.abort();
    drop(engine);
    let _ = printer.await;
    Ok(ended)
}

/// Cancels the run on Ctrl-C or SIGTERM.
fn cancel_on_signals(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        let _ = writeln!(std::io::stderr(), "pgshift: cancelling: stopping child processes and ending server sessions");
        cancel.cancel();
    })
}

/// Prints events until the channel closes; writes every event to `log` as text. In the plain
/// output, a gauge that stood still for [`DEFAULT_STALL_AFTER`] says so, again as long as it does.
pub async fn consume(mut events: mpsc::Receiver<Event>, mode: Mode, mut log: Option<std::fs::File>) {
    let mut last_progress: HashMap<String, (Instant, u64)> = HashMap::new();
    let mut stalls = Stalls::default();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let event = tokio::select! {
            e = events.recv() => match e {
                Some(e) => e,
                None => break,
            },
            _ = tick.tick() => {
                if let Mode::Text { .. } = mode {
                    for text in stalls.due(Instant::now(), DEFAULT_STALL_AFTER) {
                        let _ = writeln!(std::io::stderr(), "{text}");
                    }
                }
                continue;
            }
        };
        stalls.event(&event, Instant::now());
        if let Some(f) = log.as_mut() {
            if writeln!(f, "{}", line(&event)).is_err() {
                log = None; // a full disk must not stop the run; the journal says how it ended
            }
        }
        match mode {
            Mode::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", serde_json::to_string(&event).expect("events serialize"));
            }
            Mode::Text { verbose } => {
                if let Some(text) = terminal_line(&event, verbose, &mut last_progress) {
                    let _ = writeln!(std::io::stderr(), "{text}"); // a closed terminal must not stop the run
                }
            }
        }
    }
}

/// The unfinished gauges of running stages: (stage, item) → (done, when it last moved, when its
/// stall was last said).
#[derive(Default)]
struct Stalls(HashMap<(String, String), (u64, Instant, Option<Instant>)>);

impl Stalls {
    fn event(&mut self, event: &Event, now: Instant) {
        match event {
            Event::Progress { stage, item, done, total, .. } => {
                let key = (stage.clone(), item.clone());
                if total.is_some_and(|t| *done >= t) {
                    self.0.remove(&key);
                } else {
                    let entry = self.0.entry(key).or_insert((*done, now, None));
                    if entry.0 != *done {
                        *entry = (*done, now, None);
                    }
                }
            }
            Event::StageFinished { stage, .. } => self.0.retain(|(s, _), _| s != stage),
            _ => {}
        }
    }

    /// The lines to print now: each gauge still for `after`, once per `after`.
    fn due(&mut self, now: Instant, after: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        for ((stage, item), (_, moved, said)) in self.0.iter_mut() {
            let still = now.saturating_duration_since(*moved);
            if still >= after && said.is_none_or(|s| now.saturating_duration_since(s) >= after) {
                *said = Some(now);
                lines.push(format!(
                    "{stage}: {item}: no progress for {} s (nothing is cancelled; a wait, if any, is named above)",
                    still.as_secs()
                ));
            }
        }
        lines.sort();
        lines
    }
}

/// One event as a log line.
pub fn line(event: &Event) -> String {
    match event {
        Event::StageStarted { stage, title } => format!("[{stage}] started: {title}"),
        Event::Output { stage, source, stream, line } => {
            let mark = match stream {
                Stream::Stdout => ">",
                Stream::Stderr => "!",
                Stream::Info => "-",
            };
            format!("[{stage}] {mark} {source}: {line}")
        }
        Event::Progress { stage, item, done, total, unit } => {
            format!("[{stage}] {item}: {}", progress(*done, *total, *unit))
        }
        Event::Warning { stage, message } => format!("[{stage}] warning: {message}"),
        Event::Waits { stage, waits } if waits.is_empty() => format!("[{stage}] no session waits any more"),
        Event::Waits { stage, waits } => {
            let lines: Vec<String> = waits.iter().map(|w| format!("[{stage}] waiting: {}", w.describe())).collect();
            lines.join("\n")
        }
        Event::Upgrade { stage, what, from, to } => format!("[{stage}] upgrades {what}: {from} → {to}"),
        Event::Sessions { stage, busy } => format!("[{stage}] {busy} server session(s) busy"),
        Event::Lag { stage, bytes, millis } => {
            format!(
                "[{stage}] behind the source: {} of WAL, {:.1} s",
                crate::human::human_bytes(*bytes),
                *millis as f64 / 1000.0
            )
        }
        Event::StageFinished { stage, status, elapsed_ms, summary, error, fix } => {
            let mut s = format!("[{stage}] {} after {:.1}s", status.label(), *elapsed_ms as f64 / 1000.0);
            if let Some(summary) = summary {
                s.push_str(&format!(": {summary}"));
            }
            if let Some(error) = error {
                s.push_str(&format!(": {error}"));
            }
            if let Some(fix) = fix {
                s.push_str(&format!(" (fix: {fix})"));
            }
            s
        }
    }
}

/// A progress item whose end was printed (beyond any tenth).
const ENDED: u64 = 11;

/// Each item's progress is printed when it starts, at each tenth of its total, every 10 s
/// otherwise, and when it ends: legible under `nohup` or in CI without flooding.
fn terminal_line(event: &Event, verbose: bool, last: &mut HashMap<String, (Instant, u64)>) -> Option<String> {
    match event {
        Event::Output { stream: Stream::Info, .. }
        | Event::StageStarted { .. }
        | Event::Warning { .. }
        | Event::Waits { .. }
        | Event::Upgrade { .. } => Some(line(event)),
        Event::Output { .. } => verbose.then(|| line(event)),
        // the console's figure; in the plain output only with -v (it changes often)
        Event::Sessions { .. } | Event::Lag { .. } => verbose.then(|| line(event)),
        Event::Progress { stage, item, done, total, .. } => {
            let finished = total.is_some_and(|t| *done >= t);
            let tenth = total.filter(|t| *t > 0).map(|t| done.saturating_mul(10) / t).unwrap_or(0);
            let key = format!("{stage}\u{0}{item}");
            let due = match last.get(&key) {
                None => true,
                Some((_, ENDED)) => !finished, // the same item again, from its start
                Some((at, seen)) => tenth > *seen || at.elapsed() >= Duration::from_secs(10),
            };
            if finished && last.get(&key).is_some_and(|(_, seen)| *seen == ENDED) {
                return None; // its end was printed already
            }
            if finished || due {
                last.insert(key, (Instant::now(), if finished { ENDED } else { tenth }));
                Some(line(event))
            } else {
                None
            }
        }
        // a failure's message is printed once, by the command, as its one error line
        Event::StageFinished { status: StageStatus::Failed, .. } => None,
        Event::StageFinished { .. } => Some(line(event)),
    }
}

fn progress(done: u64, total: Option<u64>, unit: Unit) -> String {
    let fmt = |n: u64| match unit {
        Unit::Bytes => human_bytes(n),
        Unit::Rows => format!("{n} rows"),
        Unit::Tables => format!("{n} tables"),
        Unit::Steps => format!("{n} steps"),
        Unit::Seconds => format!("{n} s"),
    };
    match total {
        Some(t) if t > 0 => format!("{} of {} ({:.0}%)", fmt(done), fmt(t), done as f64 * 100.0 / t as f64),
        _ => fmt(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Unit;

    #[test]
    fn a_gauge_that_stands_still_is_said_stalled_once_per_period_until_it_moves_or_ends() {
        let mut stalls = Stalls::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ev = |item: &str, done: u64| Event::Progress {
            stage: "post-data".into(),
            item: item.into(),
            done,
            total: Some(10),
            unit: Unit::Steps,
        };
        let after = Duration::from_secs(30);
        stalls.event(&ev("pg_restore post-data", 3), at(0));
        stalls.event(&ev("tables analyzed", 10), at(0)); // finished: never stalled
        assert!(stalls.due(at(29), after).is_empty());
        let lines = stalls.due(at(31), after);
        assert_eq!(lines, vec!["post-data: pg_restore post-data: no progress for 31 s (nothing is cancelled; a wait, if any, is named above)"]);
        assert!(stalls.due(at(45), after).is_empty(), "said once per period");
        assert_eq!(stalls.due(at(62), after).len(), 1);
        stalls.event(&ev("pg_restore post-data", 4), at(70)); // it moved
        assert!(stalls.due(at(80), after).is_empty());
        stalls.event(
            &Event::StageFinished {
                stage: "post-data".into(),
                status: StageStatus::Done,
                elapsed_ms: 0,
                summary: None,
                error: None,
                fix: None,
            },
            at(81),
        );
        assert!(stalls.due(at(200), after).is_empty(), "its stage ended");
    }

    #[test]
    fn plain_progress_prints_each_tenth_and_the_end_once() {
        let mut last = HashMap::new();
        let ev = |done: u64| Event::Progress {
            stage: "data".into(),
            item: "shop.orders".into(),
            done,
            total: Some(1000),
            unit: Unit::Rows,
        };
        let printed: Vec<u64> = (0..=1000)
            .step_by(7)
            .chain([1000, 1000])
            .filter(|d| terminal_line(&ev(*d), false, &mut last).is_some())
            .collect();
        assert_eq!(printed, [0, 105, 203, 301, 406, 504, 602, 700, 805, 903, 1000]);
        // the same item again from its start (a rerun's): printed anew
        assert!(terminal_line(&ev(0), false, &mut last).is_some());
    }
}

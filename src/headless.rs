//! The headless view of a run: engine events printed as lines (or JSON lines), and every event
//! kept in the run's log file. The TUI is the other view of the same events.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::engine::{Event, StageStatus, Stream, Unit};
use crate::stages::backup::human_bytes;

/// How events reach the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stage changes, warnings, pgshift's own lines and throttled progress on stderr.
    Text { verbose: bool },
    /// Every event as one JSON object per line on stdout.
    Json,
}

/// Prints events until the channel closes; writes every event to `log` as text.
pub async fn consume(mut events: mpsc::Receiver<Event>, mode: Mode, mut log: Option<std::fs::File>) {
    let mut last_progress: HashMap<String, Instant> = HashMap::new();
    while let Some(event) = events.recv().await {
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

fn terminal_line(event: &Event, verbose: bool, last: &mut HashMap<String, Instant>) -> Option<String> {
    match event {
        Event::Output { stream: Stream::Info, .. } | Event::StageStarted { .. } | Event::Warning { .. } => {
            Some(line(event))
        }
        Event::Output { .. } => verbose.then(|| line(event)),
        Event::Progress { item, done, total, .. } => {
            let finished = total.is_some_and(|t| *done >= t);
            let due = last.get(item).is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            if finished || due {
                last.insert(item.clone(), Instant::now());
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
    };
    match total {
        Some(t) if t > 0 => format!("{} of {} ({:.0}%)", fmt(done), fmt(t), done as f64 * 100.0 / t as f64),
        _ => fmt(done),
    }
}

//! The run journal: `journal.json` in the run's directory, rewritten atomically on every stage
//! change, so a later run knows what finished and an interrupted run says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::status::StageStatus;
use crate::engine::timeline::Span;
use crate::files::write_atomic;

pub const JOURNAL_FILE: &str = "journal.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    pub stage: String,
    pub status: StageStatus,
    /// When it last started running (absent for a stage skipped without running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JournalData {
    pub pgshift_version: String,
    pub stages: Vec<JournalEntry>,
}

pub struct Journal {
    path: PathBuf,
    data: JournalData,
}

impl Journal {
    /// Opens the journal of `dir`, continuing an existing one (resume) or starting a new one.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join(JOURNAL_FILE);
        let data = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!("{} is not a pgshift journal ({e}); move it away to start over", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                JournalData { pgshift_version: env!("CARGO_PKG_VERSION").into(), stages: Vec::new() }
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self { path, data })
    }

    /// The run directory the journal lives in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn data(&self) -> &JournalData {
        &self.data
    }

    pub fn status(&self, stage: &str) -> Option<StageStatus> {
        self.data.stages.iter().find(|e| e.stage == stage).map(|e| e.status)
    }

    /// Records a stage's new status and writes the journal (write to a temporary file, then rename).
    pub fn record(&mut self, stage: &str, status: StageStatus, detail: Option<String>) -> Result<(), String> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let earlier = self.data.stages.iter().find(|e| e.stage == stage).and_then(|e| e.started_at.clone());
        let started_at = if status == StageStatus::Running { Some(now.clone()) } else { earlier };
        let entry = JournalEntry { stage: stage.into(), status, started_at, updated_at: now, detail };
        match self.data.stages.iter_mut().find(|e| e.stage == stage) {
            Some(e) => *e = entry,
            None => self.data.stages.push(entry),
        }
        let text = serde_json::to_string_pretty(&self.data).expect("journal serializes");
        match write_atomic(&self.path, text.as_bytes()) {
            // a full disk has no room for the new copy: the journal's own blocks still hold it, so
            // a failure is recorded (rewritten in place, not atomically) rather than left "running"
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull && self.path.exists() => {
                rewrite_in_place(&self.path, text.as_bytes())
            }
            other => other,
        }
        .map_err(|e| format!("journal not written to {}: {e}", self.path.display()))
    }
}

impl JournalData {
    /// `run.md`: each stage's status and what it said, then the timeline.
    pub fn report_markdown(&self) -> String {
        let mut out = String::from("# pgshift run\n\n| stage | status | result |\n|---|---|---|\n");
        for e in &self.stages {
            let detail = e.detail.as_deref().unwrap_or("").replace('|', "\\|").replace('\n', " ");
            out.push_str(&format!("| {} | {} | {detail} |\n", e.stage, e.status.label()));
        }
        out.push('\n');
        out.push_str(&crate::engine::timeline::markdown(&self.spans()));
        out
    }

    /// The stages that ran, on the clock of the first one's start: a finished stage ends at its
    /// last update, a running one has no end yet.
    pub fn spans(&self) -> Vec<Span> {
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&chrono::Utc));
        let times: Vec<(&JournalEntry, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = self
            .stages
            .iter()
            .filter_map(|e| Some((e, parse(e.started_at.as_deref()?)?, parse(&e.updated_at)?)))
            .collect();
        let Some(origin) = times.iter().map(|(_, s, _)| *s).min() else { return Vec::new() };
        let offset = |t: chrono::DateTime<chrono::Utc>| (t - origin).to_std().unwrap_or_default();
        times
            .into_iter()
            .map(|(e, start, end)| Span {
                stage: e.stage.clone(),
                status: e.status,
                start: offset(start),
                end: (e.status != StageStatus::Running).then(|| offset(end)),
            })
            .collect()
    }
}

fn rewrite_in_place(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes)?;
    let end = f.stream_position()?;
    f.set_len(end)?;
    f.sync_all()
}

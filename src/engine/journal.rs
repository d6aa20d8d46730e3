//! The run journal: `journal.json` in the run's directory, rewritten atomically on every stage
//! change, so a later run knows what finished and an interrupted run says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::status::StageStatus;
use crate::files::write_atomic;

pub const JOURNAL_FILE: &str = "journal.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    pub stage: String,
    pub status: StageStatus,
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

    pub fn data(&self) -> &JournalData {
        &self.data
    }

    pub fn status(&self, stage: &str) -> Option<StageStatus> {
        self.data.stages.iter().find(|e| e.stage == stage).map(|e| e.status)
    }

    /// Records a stage's new status and writes the journal (write to a temporary file, then rename).
    pub fn record(&mut self, stage: &str, status: StageStatus, detail: Option<String>) -> Result<(), String> {
        let entry = JournalEntry {
            stage: stage.into(),
            status,
            updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            detail,
        };
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

fn rewrite_in_place(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes)?;
    let end = f.stream_position()?;
    f.set_len(end)?;
    f.sync_all()
}

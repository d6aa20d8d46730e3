//! What the data stage has committed on the target, kept in the run directory as it goes: the
//! pieces loaded (`data-progress.json`: a rerun skips them), and the chunks the TimescaleDB stage
//! must compress (`compressed-chunks.json`). Both are written atomically after each piece commits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::run_files::{COMPRESSED_CHUNKS, DATA_PROGRESS};
use crate::timescaledb::chunks::{CompressionWork, ToCompress};

pub struct Progress {
    dir: PathBuf,
    done: Mutex<BTreeSet<String>>,
    work: Mutex<CompressionWork>,
}

fn read<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

fn save<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), UserError> {
    let text = serde_json::to_string_pretty(value).expect("progress serializes");
    write_atomic(path, text.as_bytes()).map_err(|e| write_error(path, &e))
}

impl Progress {
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            done: Mutex::new(read(&dir.join(DATA_PROGRESS))),
            work: Mutex::new(read(&dir.join(COMPRESSED_CHUNKS))),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.done.lock().expect("progress lock").contains(key)
    }

    pub fn loaded(&self) -> usize {
        self.done.lock().expect("progress lock").len()
    }

    /// Whether some piece of `table` (a chunk, a block range) was loaded by an earlier run.
    pub fn contains_any_chunk(&self, table: &str) -> bool {
        let prefix = format!("{table}#");
        self.done.lock().expect("progress lock").iter().any(|k| k.starts_with(&prefix))
    }

    pub fn mark(&self, key: &str) -> Result<(), UserError> {
        let mut done = self.done.lock().expect("progress lock");
        done.insert(key.to_string());
        save(&self.dir.join(DATA_PROGRESS), &*done)
    }

    /// A chunk to compress later (replacing what an interrupted earlier attempt noted for it).
    pub fn to_compress(&self, c: ToCompress) -> Result<(), UserError> {
        let mut work = self.work.lock().expect("work lock");
        work.chunks.retain(|x| x.chunk != c.chunk);
        work.chunks.push(c);
        save(&self.dir.join(COMPRESSED_CHUNKS), &*work)
    }

    /// Hypertables whose compressed source chunks arrived through the target's own chunking.
    pub fn compress_by_range(&self, tables: &[String]) -> Result<(), UserError> {
        let mut work = self.work.lock().expect("work lock");
        for t in tables {
            if !work.by_range.contains(t) {
                work.by_range.push(t.clone());
            }
        }
        save(&self.dir.join(COMPRESSED_CHUNKS), &*work)
    }
}

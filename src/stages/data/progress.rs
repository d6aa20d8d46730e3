//! What the data stage has committed on the target, kept in the run directory as it goes: the
//! pieces loaded (`data-progress.json`: a rerun skips them), and the chunks the TimescaleDB stage
//! must compress (`compressed-chunks.json`). A source with thousands of chunks commits thousands of
//! pieces, so the files are rewritten (atomically) at most about twice a second — the stage
//! flushes them on a timer, also while its workers wait — and when the stage ends, not after every
//! piece: a piece whose record was not written yet is simply copied again by a rerun (each piece
//! empties what it writes). The chunks to compress are always written before the
//! pieces that produced them are recorded as loaded, so no staged compressed part is forgotten.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::run_files::{COMPRESSED_CHUNKS, DATA_PROGRESS};
use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::timescaledb::chunks::{CompressionWork, ToCompress};

/// How often the files are rewritten while pieces commit.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    done: BTreeSet<String>,
    work: CompressionWork,
    /// What changed since the files were last written.
    dirty: bool,
    flushed: Instant,
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
        let state = State {
            done: read(&dir.join(DATA_PROGRESS)),
            work: read(&dir.join(COMPRESSED_CHUNKS)),
            dirty: false,
            flushed: Instant::now(),
        };
        Self { dir: dir.to_path_buf(), state: Mutex::new(state) }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.state.lock().expect("progress lock").done.contains(key)
    }

    pub fn loaded(&self) -> usize {
        self.state.lock().expect("progress lock").done.len()
    }

    /// Whether some piece of `table` (a chunk, a block range) was loaded by an earlier run.
    pub fn contains_any_chunk(&self, table: &str) -> bool {
        let prefix = format!("{table}#");
        self.state.lock().expect("progress lock").done.iter().any(|k| k.starts_with(&prefix))
    }

    /// A piece committed on the target, and what it leaves the TimescaleDB stage to compress
    /// (`Some(None)`: a chunk loaded uncompressed, so whatever an earlier attempt noted for it no
    /// longer holds).
    pub fn committed(&self, keys: &[&str], chunk: Option<(&str, Option<ToCompress>)>) -> Result<(), UserError> {
        let mut state = self.state.lock().expect("progress lock");
        if let Some((name, compress)) = chunk {
            state.work.chunks.retain(|x| x.chunk != name);
            state.work.chunks.extend(compress);
        }
        for key in keys {
            state.done.insert(key.to_string());
        }
        state.dirty = true;
        if state.flushed.elapsed() >= FLUSH_EVERY {
            self.write(&mut state)?;
        }
        Ok(())
    }

    /// Hypertables whose compressed source chunks arrived through the target's own chunking.
    pub fn compress_by_range(&self, tables: &[String]) -> Result<(), UserError> {
        let mut state = self.state.lock().expect("progress lock");
        for t in tables {
            if !state.work.by_range.contains(t) {
                state.work.by_range.push(t.clone());
                state.dirty = true;
            }
        }
        self.write(&mut state)
    }

    /// Writes what is not written yet (when the stage ends, or stops).
    pub fn flush(&self) -> Result<(), UserError> {
        let mut state = self.state.lock().expect("progress lock");
        self.write(&mut state)
    }

    fn write(&self, state: &mut State) -> Result<(), UserError> {
        if state.dirty {
            // the chunks to compress first: a piece recorded as loaded has its compression noted
            save(&self.dir.join(COMPRESSED_CHUNKS), &state.work)?;
            save(&self.dir.join(DATA_PROGRESS), &state.done)?;
            state.dirty = false;
        }
        state.flushed = Instant::now();
        Ok(())
    }
}

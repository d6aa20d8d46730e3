//! Stage 4 — Data: every table's rows streamed from the source (`COPY (SELECT ...) TO STDOUT`,
//! one exported snapshot for all readers) into the target (`COPY ... FROM STDIN`), several pieces
//! at a time, largest first (`plan.rs`): a hypertable or a continuous aggregate's materialization
//! in pieces of one source chunk each, a plain table larger than two block ranges in `ctid`
//! ranges, other tables whole.
//!
//! A source chunk is recreated on the target with its very slices when both hypertables are
//! partitioned alike, and its rows written straight into it; a compressed chunk's compressed rows
//! are copied as they are (same TimescaleDB on both sides), into a table the TimescaleDB stage
//! attaches as the chunk's compressed part, or read through decompression elsewhere. Where the
//! target's hypertable is partitioned differently, a chunk's first row goes through the hypertable
//! and the rest straight into the target chunk that covers it, if one does (`copy.rs`).
//!
//! Binary COPY where every column has a built-in type (user types carry server-specific OIDs),
//! text otherwise. It runs after the schema and before indexes, constraints and triggers, so no
//! user trigger fires and foreign keys are checked once, at the end; the target session also runs
//! with `session_replication_role = replica`. The source's chunks are locked (ACCESS SHARE) for the
//! stage right after its snapshot is taken, as pg_dump locks what it dumps: a compression or
//! retention job on the source cannot rewrite a chunk under the copy. Each piece is
//! loaded in one transaction that first empties what it writes (a table in block ranges is emptied
//! once, when planned) and is recorded in `data-progress.json` once committed (`progress.rs`): a
//! rerun skips finished pieces and redoes an interrupted one from the start — no row lost, none
//! twice. Rows land frozen where the table was emptied or the chunk created in the piece's
//! transaction.
//! Sequences are set to the source's values at the end. Memory stays flat: rows pass through in
//! COPY chunks.

mod copy;
mod errors;
mod large_objects;
mod plan;
mod progress;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;

use crate::catalog::{self, Inventory, Session, TableInfo};
use crate::engine::{Stage, StageContext, StageError};
use crate::error::UserError;
use crate::human::human_bytes;
use crate::plan::CompressedChunks;
use crate::postgres::conn::ConnSpec;
use copy::{copy_piece, open_reader, open_writer, Worker};
use errors::copy_error;
use progress::Progress;

/// A plain table larger than two of these is copied in block ranges of about this size.
pub const RANGE_BYTES: i64 = 64 << 20;

pub struct DataStage {
    source: ConnSpec,
    target: ConnSpec,
    jobs: usize,
    range_bytes: i64,
    compressed: CompressedChunks,
    /// An online migration's slot, whose snapshot the copy reads at.
    online: Option<crate::online::OnlineSlot>,
}

impl DataStage {
    pub fn new(source: ConnSpec, target: ConnSpec, jobs: usize) -> Self {
        Self {
            source,
            target,
            jobs: jobs.max(1),
            range_bytes: RANGE_BYTES,
            compressed: CompressedChunks::AsIs,
            online: None,
        }
    }

    /// Plain tables larger than twice `bytes` are copied in block ranges of about `bytes`; 0 copies
    /// every table in one piece (as from a source before PostgreSQL 14, which has no TID range scans).
    pub fn with_range_bytes(mut self, bytes: i64) -> Self {
        self.range_bytes = bytes.clamp(0, i64::MAX / 4);
        self
    }

    /// How compressed chunks travel.
    pub fn with_compressed(mut self, mode: CompressedChunks) -> Self {
        self.compressed = mode;
        self
    }

    /// Reads at the online migration's slot snapshot, and lets it go once the copy holds it.
    pub fn with_online(mut self, slot: crate::online::OnlineSlot) -> Self {
        self.online = Some(slot);
        self
    }
}

/// The tables whose rows are data: not views, materialized views or the views of continuous
/// aggregates (their materializations are copied, as hypertables).
fn data_tables(inv: &Inventory) -> Vec<TableInfo> {
    inv.tables
        .iter()
        .filter(|t| matches!(t.kind.as_str(), "table" | "partition" | "hypertable" | "materialization"))
        .cloned()
        .collect()
}

#[derive(Default)]
struct Totals {
    rows: u64,
    large_objects: u64,
    bytes: u64,
    /// Hypertable chunks written straight into the target's chunk, and those routed through the
    /// hypertable (the target's chunks do not cover the source's ranges).
    direct_chunks: u64,
    routed_chunks: u64,
    /// Compressed chunks copied in their compressed form, and read through decompression.
    compressed_as_is: u64,
    decompressed: u64,
}

impl Totals {
    fn chunks_summary(&self) -> String {
        let mut s = String::new();
        if self.large_objects > 0 {
            s.push_str(&format!("; {} large objects", self.large_objects));
        }
        if self.direct_chunks + self.routed_chunks > 0 {
            s.push_str(&format!(
                "; hypertable chunks: {} written directly, {} through the hypertable",
                self.direct_chunks, self.routed_chunks
            ));
        }
        if self.compressed_as_is + self.decompressed > 0 {
            s.push_str(&format!(
                "; compressed chunks: {} copied as they are, {} read through decompression",
                self.compressed_as_is, self.decompressed
            ));
        }
        s
    }
}

/// Locks every chunk of the source (with its compressed part) ACCESS SHARE in the snapshot's
/// transaction until the stage ends, right after the snapshot is taken, as pg_dump locks what it
/// dumps: TimescaleDB's jobs rewrite chunks the way TRUNCATE does (compressing, decompressing,
/// dropping one), which an older snapshot would read as empty; they wait for the copy instead.
/// (Plain tables change through MVCC-safe writes; their reads take their own lock.)
async fn lock_chunks(session: &Session, timescaledb: bool) -> Result<(), UserError> {
    use tokio_postgres::error::SqlState;
    if !timescaledb {
        return Ok(());
    }
    let relations = session
        .strings(
            "chunks",
            "SELECT format('%I.%I', schema_name, table_name) FROM _timescaledb_catalog.chunk WHERE NOT dropped",
        )
        .await?;
    for batch in relations.chunks(500) {
        session.execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", batch.join(", "))).await.map_err(|e| {
            let waited = [SqlState::LOCK_NOT_AVAILABLE, SqlState::QUERY_CANCELED].iter().any(|c| e.code() == Some(c));
            let fix = if waited {
                "a job on the source holds a chunk (compressing, decompressing or dropping it): wait for it to end, \
                 or pause the source's TimescaleDB jobs (alter_job(id, scheduled => false)), then run again"
            } else if e.code() == Some(&SqlState::OUT_OF_MEMORY) {
                "the source holds one lock per chunk while it is copied: raise max_locks_per_transaction on the \
                 source (a restart), then run again"
            } else {
                "a chunk was dropped on the source while the copy started (a retention job?): run again"
            };
            UserError::new(
                format!(
                    "source {}: cannot lock the chunks to copy ({})",
                    session.spec.label(),
                    catalog::db_message(&e)
                ),
                fix,
            )
        })?;
    }
    Ok(())
}

impl Stage for DataStage {
    fn id(&self) -> &'static str {
        "data"
    }

    fn title(&self) -> &'static str {
        "Data: every table streamed source → target, sequences set"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let dir = ctx.run_dir().ok_or_else(|| UserError::new("no run directory", "run through pgshift run"))?;
            let source = ctx.tagged(&self.source);
            let target = ctx.tagged(&self.target);
            let inv: Inventory = match std::fs::read_to_string(dir.join(crate::engine::run_files::INVENTORY)) {
                Ok(text) => serde_json::from_str(&text).map_err(|e| {
                    UserError::new(
                        format!("the backup's inventory.json is unreadable: {e}"),
                        "run again with --restart",
                    )
                })?,
                // `pgshift copy` without a backup: read the source's tables now
                Err(_) => catalog::collect(&source, None, 1).await?,
            };
            let progress = Arc::new(Progress::open(dir));
            let all = data_tables(&inv);
            let resumed = progress.loaded();
            if resumed > 0 {
                ctx.info("data", format!("resuming: {resumed} table(s) or chunk(s) were loaded by an earlier run"))
                    .await;
            }

            // the backup's snapshot while the backup still holds it (it dumps the rows beside
            // this stage): the archive and the copy then show the same moment of the source
            let backup_snapshot = crate::pgtools::manifest::Manifest::load(dir).ok().and_then(|m| m.snapshot);
            let (session, shared) = match &self.online {
                Some(slot) => {
                    let snapshot = slot.snapshot(dir).await?;
                    let session = Session::open_exactly_at(&source, &snapshot).await?;
                    ctx.info("data", "reading at the online slot's snapshot: the changes after it are streamed").await;
                    (session, false)
                }
                None => Session::open_at(&source, backup_snapshot.as_deref()).await?,
            };
            if let Some(slot) = &self.online {
                // this session holds the snapshot now (its workers import this session's own)
                slot.release().await;
            }
            if shared {
                ctx.info("data", "reading at the backup's snapshot: the archive and the copy show the same moment")
                    .await;
            } else if backup_snapshot.is_some() && self.online.is_none() {
                ctx.info(
                    "data",
                    "reading at a snapshot of its own (the backup had ended): the source must not change between them",
                )
                .await;
            }
            lock_chunks(&session, inv.timescaledb.is_some()).await?;
            let snapshot = session.snapshot().map(str::to_string);
            let planner = open_writer(&target).await?;
            let planned =
                plan::plan_pieces(&session, &planner, &all, &progress, self.range_bytes, self.compressed).await?;
            progress.compress_by_range(&planned.by_range)?;
            let large = large_objects::pieces(&session, &progress).await?;
            if let Some(why) = &planned.no_ranges {
                ctx.info("data", format!("every plain table in one piece: {why}")).await;
                for (table, bytes) in &planned.whole {
                    let size = human_bytes(*bytes as u64);
                    ctx.info("data", format!("{table} ({size}) copied in one piece, by one connection")).await;
                }
            }
            let mut pieces = planned.pieces;
            pieces.extend(large);
            pieces.sort_by_key(|p| std::cmp::Reverse(p.bytes));
            let binary = pieces.iter().filter(|p| p.binary).count();
            ctx.info(
                "data",
                format!(
                    "{} piece(s) to copy with {} connection(s), {binary} in binary format",
                    pieces.len(),
                    self.jobs
                ),
            )
            .await;
            let mut remaining: HashMap<String, usize> = HashMap::new();
            for p in &pieces {
                *remaining.entry(p.table.name.clone()).or_default() += 1;
            }
            let remaining = Arc::new(Mutex::new(remaining));
            let started = Instant::now();
            let queue = Arc::new(Mutex::new(pieces.into_iter().collect::<VecDeque<_>>()));
            let totals = Arc::new(Mutex::new(Totals::default()));
            let copied: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
            let workers = self.jobs.min(queue.lock().expect("queue").len()).max(1);
            let mut tasks = Vec::new();
            for _ in 0..workers {
                let (queue, progress, totals, remaining, copied) =
                    (queue.clone(), progress.clone(), totals.clone(), remaining.clone(), copied.clone());
                let (source, target, snapshot) = (source.clone(), target.clone(), snapshot.clone());
                tasks.push(async move {
                    let src = open_reader(&source, snapshot.as_deref()).await?;
                    let dst = open_writer(&target).await?;
                    let mut worker = Worker::default();
                    loop {
                        let next = queue.lock().expect("queue").pop_front();
                        let Some(piece) = next else { break };
                        let out = copy_piece(ctx, &src, &dst, &mut worker, &piece, &copied).await.map_err(|e| {
                            let done = progress.loaded();
                            UserError::new(
                                format!("copying {} failed: {}", piece.table.name, e.message),
                                format!(
                                    "{}; run again to resume ({done} tables or chunks already loaded are kept)",
                                    e.fix
                                ),
                            )
                        })?;
                        // a table is done when its last piece is
                        let table_done = {
                            let mut r = remaining.lock().expect("remaining");
                            let left = r.get_mut(&piece.table.name).expect("counted");
                            *left -= 1;
                            *left == 0
                        };
                        let mut keys = vec![piece.key.as_str()];
                        if table_done && piece.key != piece.table.name {
                            keys.push(&piece.table.name);
                        }
                        progress.committed(&keys, out.chunk.as_deref().map(|c| (c, out.compress.clone())))?;
                        let mut t = totals.lock().expect("totals");
                        t.rows += out.rows;
                        t.large_objects += out.objects;
                        t.bytes += out.bytes;
                        if piece.is_chunk() {
                            if out.direct {
                                t.direct_chunks += 1;
                            } else {
                                t.routed_chunks += 1;
                            }
                        }
                        t.compressed_as_is += u64::from(out.compressed_as_is);
                        t.decompressed += u64::from(out.decompressed);
                    }
                    Ok::<(), UserError>(())
                });
            }
            // what committed is recorded within half a second, also while every worker waits
            // (a lock on the source): a piece whose record was not written is copied again
            let work = futures_util::future::join_all(tasks);
            futures_util::pin_mut!(work);
            let results = loop {
                tokio::select! {
                    results = &mut work => break results,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                        let _ = progress.flush(); // a failure to write shows in the final flush
                    }
                }
            };
            // what committed is recorded, whatever else failed
            let flushed = progress.flush();
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e.into());
            }
            flushed?;
            let sequences = set_sequences(ctx, &session, &target).await?;
            session.close().await;
            let t = totals.lock().expect("totals");
            let secs = started.elapsed().as_secs_f64().max(0.001);
            Ok(format!(
                "{} tables, {} rows, {} in {secs:.1}s ({}/s); {sequences} sequences set{}",
                all.len(),
                t.rows,
                human_bytes(t.bytes),
                human_bytes((t.bytes as f64 / secs) as u64),
                t.chunks_summary()
            ))
        })
    }
}

/// Sets every user sequence of the target to the source's value at the snapshot.
async fn set_sequences(ctx: &StageContext, session: &Session, target: &ConnSpec) -> Result<usize, StageError> {
    let values = catalog::sequences::setvals(session).await?;
    let dst = target.connect().await?;
    for sql in &values {
        dst.batch_execute(sql).await.map_err(|e| copy_error("target", &target.label(), &e))?;
    }
    ctx.info("data", format!("{} sequences set to the source's values", values.len())).await;
    Ok(values.len())
}

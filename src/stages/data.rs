//! Stage 4 — Data: every table's rows streamed from the source (`COPY (SELECT ...) TO STDOUT`,
//! one exported snapshot for all readers) into the target (`COPY ... FROM STDIN`), several tables
//! at a time. It runs after the schema and before indexes, constraints and triggers, so no user
//! trigger fires and foreign keys are checked once, at the end; the target session also runs with
//! `session_replication_role = replica`. Each table is loaded in one transaction that first
//! empties it, and recorded in `data-progress.json` when committed: a rerun skips finished tables
//! and redoes an interrupted one from the start — no row lost, none twice. Sequences are set to the
//! source's values at the end. Memory stays flat: rows pass through in COPY chunks.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::catalog::{self, Inventory, Session, TableInfo};
use crate::conn::ConnSpec;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::stages::backup::human_bytes;

const PROGRESS_FILE: &str = "data-progress.json";
/// Bytes gathered before one write to the target (memory per copying table stays near this).
const BATCH_BYTES: usize = 256 << 10;

pub struct DataStage {
    source: ConnSpec,
    target: ConnSpec,
    jobs: usize,
}

impl DataStage {
    pub fn new(source: ConnSpec, target: ConnSpec, jobs: usize) -> Self {
        Self { source, target, jobs: jobs.max(1) }
    }
}

/// Tables already committed on the target, kept in the run directory.
struct Progress {
    path: PathBuf,
    done: Mutex<BTreeSet<String>>,
}

impl Progress {
    fn open(dir: &Path) -> Self {
        let path = dir.join(PROGRESS_FILE);
        let done = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Self { path, done: Mutex::new(done) }
    }

    fn contains(&self, table: &str) -> bool {
        self.done.lock().expect("progress lock").contains(table)
    }

    fn mark(&self, table: &str) -> Result<(), UserError> {
        let mut done = self.done.lock().expect("progress lock");
        done.insert(table.to_string());
        let text = serde_json::to_string_pretty(&*done).expect("progress serializes");
        write_atomic(&self.path, text.as_bytes()).map_err(|e| write_error(&self.path, &e))
    }
}

/// The tables whose rows are data: not views, materialized views or continuous aggregates (those
/// are refreshed after the data).
fn data_tables(inv: &Inventory) -> Vec<TableInfo> {
    inv.tables.iter().filter(|t| matches!(t.kind.as_str(), "table" | "partition" | "hypertable")).cloned().collect()
}

struct Totals {
    rows: u64,
    bytes: u64,
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
            let inv: Inventory = std::fs::read_to_string(dir.join("inventory.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| {
                    UserError::new("the backup's inventory.json is missing or unreadable", "run again with --restart")
                })?;
            let progress = Arc::new(Progress::open(dir));
            let all = data_tables(&inv);
            let skipped = all.iter().filter(|t| progress.contains(&t.name)).count();
            if skipped > 0 {
                ctx.info("data", format!("resuming: {skipped} of {} tables were loaded by an earlier run", all.len()))
                    .await;
            }
            let todo: VecDeque<TableInfo> = all.iter().filter(|t| !progress.contains(&t.name)).cloned().collect();

            let source = ctx.tagged(&self.source);
            let target = ctx.tagged(&self.target);
            let session = Session::open(&source).await?;
            let snapshot = session.snapshot().map(str::to_string);
            let started = Instant::now();
            let queue = Arc::new(Mutex::new(todo));
            let totals = Arc::new(Mutex::new(Totals { rows: 0, bytes: 0 }));
            let workers = self.jobs.min(queue.lock().expect("queue").len()).max(1);
            let mut tasks = Vec::new();
            for _ in 0..workers {
                let (queue, progress, totals) = (queue.clone(), progress.clone(), totals.clone());
                let (source, target, snapshot) = (source.clone(), target.clone(), snapshot.clone());
                tasks.push(async move {
                    let src = open_reader(&source, snapshot.as_deref()).await?;
                    let dst = open_writer(&target).await?;
                    loop {
                        let next = queue.lock().expect("queue").pop_front();
                        let Some(table) = next else { break };
                        let (rows, bytes) = copy_table(ctx, &src, &dst, &table).await.map_err(|e| {
                            let done = progress.done.lock().expect("progress lock").len();
                            UserError::new(
                                format!("copying {} failed: {}", table.name, e.message),
                                format!("{}; run again to resume ({done} tables already loaded are kept)", e.fix),
                            )
                        })?;
                        progress.mark(&table.name)?;
                        let mut t = totals.lock().expect("totals");
                        t.rows += rows;
                        t.bytes += bytes;
                    }
                    Ok::<(), UserError>(())
                });
            }
            let results = futures_util::future::join_all(tasks).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e.into());
            }
            let sequences = set_sequences(ctx, &session, &target).await?;
            session.close().await;
            let t = totals.lock().expect("totals");
            let secs = started.elapsed().as_secs_f64().max(0.001);
            Ok(format!(
                "{} tables ({} skipped as done), {} rows, {} in {secs:.1}s ({}/s); {sequences} sequences set",
                all.len(),
                skipped,
                t.rows,
                human_bytes(t.bytes),
                human_bytes((t.bytes as f64 / secs) as u64)
            ))
        })
    }
}

fn copy_error(side: &str, spec_label: &str, e: &tokio_postgres::Error) -> UserError {
    let text = e.to_string();
    let closed = e.is_closed() || text.contains("connection") || text.contains("unexpected EOF");
    let fix = if closed {
        format!("the connection to the {side} ({spec_label}) was lost: check that the server runs")
    } else {
        format!("fix the cause on the {side} ({spec_label})")
    };
    UserError::new(format!("{side}: {}", catalog::db_message(e)), fix)
}

/// A source connection reading at the shared snapshot.
async fn open_reader(source: &ConnSpec, snapshot: Option<&str>) -> Result<Client, UserError> {
    let c = source.connect().await?;
    let mut sql = format!("{}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;", catalog::rows::CANONICAL_SETTINGS);
    if let Some(id) = snapshot {
        sql.push_str(&format!(" SET TRANSACTION SNAPSHOT '{}';", id.replace('\'', "")));
    }
    c.batch_execute(&sql).await.map_err(|e| copy_error("source", &source.label(), &e))?;
    Ok(c)
}

/// A target connection that fires no user trigger.
async fn open_writer(target: &ConnSpec) -> Result<Client, UserError> {
    let c = target.connect().await?;
    c.batch_execute(
        "SET session_replication_role = replica; SET statement_timeout = 0; \
         SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; \
         SET extra_float_digits = 3; SET bytea_output = 'hex'",
    )
    .await
    .map_err(|e| {
        UserError::new(
            format!("target {}: cannot prepare the load session ({})", target.label(), catalog::db_message(&e)),
            "connect to the target as a superuser (session_replication_role needs one)",
        )
    })?;
    Ok(c)
}

/// Columns the target accepts in COPY: all but generated ones.
async fn target_columns(dst: &Client, table: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = dst
        .query(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 \
             AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Empties the table on the target and streams the source's rows into it, in one transaction.
async fn copy_table(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    table: &TableInfo,
) -> Result<(u64, u64), UserError> {
    let tgt = |e: tokio_postgres::Error| copy_error("target", "the target server", &e);
    let srcerr = |e: tokio_postgres::Error| copy_error("source", "the source server", &e);
    let columns = target_columns(dst, &table.name).await.map_err(tgt)?.join(", ");
    // a hypertable (on the source, or made one by the plan) is emptied with its chunks
    let has_timescaledb: bool = dst
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", &[])
        .await
        .map_err(tgt)?
        .get(0);
    let hypertable = table.kind == "hypertable"
        || (has_timescaledb
            && dst
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables \
                     WHERE format('%I.%I', hypertable_schema, hypertable_name) = $1)",
                    &[&table.name],
                )
                .await
                .map_err(tgt)?
                .get::<_, bool>(0));
    let truncate =
        if hypertable { format!("TRUNCATE {}", table.name) } else { format!("TRUNCATE ONLY {}", table.name) };
    dst.batch_execute(&format!("BEGIN; {truncate}")).await.map_err(tgt)?;
    let sink =
        dst.copy_in::<_, bytes::Bytes>(&format!("COPY {} ({columns}) FROM STDIN", table.name)).await.map_err(tgt)?;
    let stream = src
        .copy_out(&format!("COPY (SELECT {columns} FROM {}) TO STDOUT", table.from_clause()))
        .await
        .map_err(srcerr)?;
    pin_mut!(sink);
    pin_mut!(stream);
    let (mut rows, mut bytes) = (0u64, 0u64);
    let total = table.rows.map(|r| r.max(0) as u64);
    let mut last = Instant::now();
    // the source sends one COPY message per row: gather them into large writes, so the target
    // connection is flushed once per batch rather than once per row
    let mut batch = bytes::BytesMut::with_capacity(BATCH_BYTES);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(srcerr)?;
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH_BYTES {
            sink.send(batch.split().freeze()).await.map_err(tgt)?;
        }
        if last.elapsed() >= Duration::from_millis(250) {
            last = Instant::now();
            ctx.try_progress(&table.name, rows, total, Unit::Rows);
        }
    }
    if !batch.is_empty() {
        sink.send(batch.freeze()).await.map_err(tgt)?;
    }
    let written = sink.finish().await.map_err(tgt)?;
    dst.batch_execute("COMMIT").await.map_err(tgt)?;
    ctx.progress(&table.name, written, total.or(Some(written)), Unit::Rows).await;
    ctx.info("data", format!("{}: {written} rows, {}", table.name, human_bytes(bytes))).await;
    debug_assert_eq!(rows, written);
    Ok((written, bytes))
}

/// Sets every user sequence of the target to the source's value at the snapshot.
async fn set_sequences(ctx: &StageContext, session: &Session, target: &ConnSpec) -> Result<usize, StageError> {
    let values = session
        .strings(
            "sequences",
            &format!(
                "SELECT format('SELECT pg_catalog.setval(%L, %s, true)', format('%I.%I', schemaname, sequencename), last_value)
                 FROM pg_sequences s WHERE last_value IS NOT NULL AND {}",
                catalog::queries::user_ns_name("s.schemaname")
            ),
        )
        .await?;
    let dst = target.connect().await?;
    for sql in &values {
        dst.batch_execute(sql).await.map_err(|e| copy_error("target", &target.label(), &e))?;
    }
    ctx.info("data", format!("{} sequences set to the source's values", values.len())).await;
    Ok(values.len())
}

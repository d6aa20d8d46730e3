//! Stage 4 — Data: every table's rows streamed from the source (`COPY (SELECT ...) TO STDOUT`,
//! one exported snapshot for all readers) into the target (`COPY ... FROM STDIN`), several pieces
//! at a time, largest first: a hypertable in pieces of one source chunk each, a plain table larger
//! than two block ranges in `ctid` ranges, other tables whole. A chunk's first row goes through the
//! hypertable (creating the target's chunk); when that chunk covers the source chunk's range the
//! rest is written straight into it, skipping TimescaleDB's per-row routing. Binary COPY where
//! every column has a built-in type (user types carry server-specific OIDs), text otherwise. It
//! runs after the schema and before indexes, constraints and triggers, so no user trigger fires
//! and foreign keys are checked once, at the end; the target session also runs with
//! `session_replication_role = replica`. Each piece is loaded in one transaction that first
//! empties what it writes (the table, or the chunk's time range; a table in block ranges is
//! emptied once, when planned) and is recorded in `data-progress.json` when committed: a rerun
//! skips finished pieces and redoes an interrupted one from the start — no row lost, none twice.
//! Rows land frozen where the table was emptied or the chunk created in the piece's transaction.
//! Sequences are set to the source's values at the end. Memory stays flat: rows pass through in
//! COPY chunks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::{Client, Statement};

use crate::catalog::{self, Inventory, Session, TableInfo};
use crate::conn::ConnSpec;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::stages::backup::human_bytes;

const PROGRESS_FILE: &str = "data-progress.json";
/// Bytes gathered before one write to the target (memory per copying table stays near this).
const BATCH_BYTES: usize = 256 << 10;
/// A plain table larger than two of these is copied in block ranges of about this size.
pub const RANGE_BYTES: i64 = 64 << 20;

pub struct DataStage {
    source: ConnSpec,
    target: ConnSpec,
    jobs: usize,
    range_bytes: i64,
}

impl DataStage {
    pub fn new(source: ConnSpec, target: ConnSpec, jobs: usize) -> Self {
        Self { source, target, jobs: jobs.max(1), range_bytes: RANGE_BYTES }
    }

    /// Plain tables larger than twice `bytes` are copied in block ranges of about `bytes`.
    pub fn with_range_bytes(mut self, bytes: i64) -> Self {
        self.range_bytes = bytes.clamp(1, i64::MAX / 4);
        self
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

#[derive(Default)]
struct Totals {
    rows: u64,
    bytes: u64,
    /// Hypertable chunks written straight into the target's chunk, and those routed through the
    /// hypertable (the target's chunks do not cover the source's ranges).
    direct_chunks: u64,
    routed_chunks: u64,
}

/// A unit of copying: a whole table, or one source chunk of a hypertable.
#[derive(Debug, Clone)]
struct Piece {
    /// Its name in `data-progress.json`: the table, or `table#chunk`.
    key: String,
    table: TableInfo,
    /// What follows FROM on the source.
    from: String,
    /// Empties on the target what this piece writes, in the piece's transaction.
    clear: String,
    columns: String,
    binary: bool,
    /// A source chunk's time range (start, end as text): its rows are written straight into the
    /// target's chunk for that range rather than routed row by row through the hypertable.
    chunk_range: Option<(String, String)>,
    /// On-disk size on the source, to start the largest pieces first.
    bytes: i64,
    /// `clear` empties the table itself (TRUNCATE ONLY): COPY can write its rows frozen.
    freeze: bool,
    /// One source chunk of a hypertable.
    chunk: bool,
}

/// The pieces of every table not yet loaded, largest first: the longest piece starts at once and
/// the small ones fill in around it, so no worker is left alone with a big table at the end.
async fn plan_pieces(
    session: &Session,
    dst: &Client,
    tables: &[TableInfo],
    progress: &Progress,
    range_bytes: i64,
) -> Result<Vec<Piece>, UserError> {
    let tgt = |e: tokio_postgres::Error| copy_error("target", "the target server", &e);
    let target_hypertables = crate::stages::timescale::hypertables(dst).await.map_err(tgt)?;
    // reading a block range costs only its blocks from 14 on (TID range scans)
    let tid_ranges = session
        .strings("server version", "SELECT current_setting('server_version_num')")
        .await?
        .first()
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|v| v >= 140000);
    let mut pieces = Vec::new();
    for table in tables {
        if progress.contains(&table.name) {
            continue;
        }
        let cols = target_columns(dst, &table.name).await.map_err(tgt)?;
        let binary = binary_safe(dst, &table.name).await.map_err(tgt)?;
        let target_hypertable = table.kind == "hypertable" || target_hypertables.contains(&table.name);
        let columns = cols.join(", ");
        if table.kind == "hypertable" {
            // one piece per source chunk, when the hypertable has a single time dimension; its rows
            // go straight into the target's chunk only when the target's hypertable has a single
            // dimension too (a chunk found for one row holds only that row's space partition)
            let direct = target_hypertables.contains(&table.name)
                && dst
                    .query_one(
                        "SELECT count(*) = 1 FROM timescaledb_information.dimensions
                         WHERE format('%I.%I', hypertable_schema, hypertable_name) = $1",
                        &[&table.name],
                    )
                    .await
                    .map_err(tgt)?
                    .get::<_, bool>(0);
            let chunks = session
                .strings(
                    "hypertable chunks",
                    &format!(
                        "SELECT format('%I.%I', c.chunk_schema, c.chunk_name) || E'\\t' ||
                                format('DELETE FROM %s WHERE %I >= %L AND %I < %L', {lit}::regclass, d.column_name,
                                       c.range_start, d.column_name, c.range_end)
                                || E'\\t' || pg_total_relation_size(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass)
                                || E'\\t' || c.range_start::text || E'\\t' || c.range_end::text
                         FROM timescaledb_information.chunks c
                         JOIN timescaledb_information.dimensions d
                           ON d.hypertable_schema = c.hypertable_schema AND d.hypertable_name = c.hypertable_name
                         WHERE format('%I.%I', c.hypertable_schema, c.hypertable_name) = {lit}
                           AND c.range_start IS NOT NULL
                           AND (SELECT count(*) FROM timescaledb_information.dimensions x
                                WHERE x.hypertable_schema = c.hypertable_schema AND x.hypertable_name = c.hypertable_name) = 1
                         ORDER BY c.range_start",
                        lit = crate::stages::schema::quote_literal(&table.name)
                    ),
                )
                .await?;
            if !chunks.is_empty() {
                for line in chunks {
                    // chunk, DELETE, bytes, range start, range end (split from the right: the DELETE
                    // holds names)
                    let mut fields = line.rsplitn(4, '\t');
                    let (end, start) = (fields.next(), fields.next());
                    let bytes = fields.next().and_then(|b| b.parse().ok()).unwrap_or(0);
                    let rest = fields.next().unwrap_or("");
                    let (chunk, clear) = rest.split_once('\t').unwrap_or((rest, ""));
                    let chunk_range = start.zip(end).filter(|_| direct).map(|(s, e)| (s.to_string(), e.to_string()));
                    let key = format!("{}#{chunk}", table.name);
                    if progress.contains(&key) {
                        continue;
                    }
                    pieces.push(Piece {
                        key,
                        table: table.clone(),
                        from: format!("ONLY {chunk}"),
                        clear: clear.to_string(),
                        columns: columns.clone(),
                        binary,
                        chunk_range,
                        bytes,
                        freeze: false,
                        chunk: true,
                    });
                }
                continue;
            }
        }
        if tid_ranges && !target_hypertable && table.bytes > 2 * range_bytes {
            pieces.extend(block_ranges(session, dst, table, &columns, binary, range_bytes).await?);
            continue;
        }
        // through a hypertable, rows are routed to chunks: no FREEZE there
        let clear = if target_hypertable {
            format!("TRUNCATE {}", table.name)
        } else {
            format!("TRUNCATE ONLY {}", table.name)
        };
        pieces.push(Piece {
            key: table.name.clone(),
            table: table.clone(),
            from: table.from_clause(),
            clear,
            columns,
            binary,
            chunk_range: None,
            bytes: table.bytes,
            freeze: !target_hypertable,
            chunk: false,
        });
    }
    pieces.sort_by_key(|p| std::cmp::Reverse(p.bytes));
    Ok(pieces)
}

/// A large plain table in pieces of consecutive source blocks (`ctid` ranges: at one snapshot each
/// row is in exactly one), copied in parallel. Target rows have no source blocks, so a piece cannot
/// be redone alone: the table is emptied once here, and a rerun that finds it unfinished empties it
/// again and copies every range.
async fn block_ranges(
    session: &Session,
    dst: &Client,
    table: &TableInfo,
    columns: &str,
    binary: bool,
    range_bytes: i64,
) -> Result<Vec<Piece>, UserError> {
    let lit = crate::stages::schema::quote_literal(&table.name);
    let blocks: i64 = session
        .strings(
            "table size",
            &format!("SELECT (pg_relation_size({lit}::regclass) / current_setting('block_size')::int)::text"),
        )
        .await?
        .first()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let count = (table.bytes / range_bytes).clamp(2, 64);
    let step = (blocks / count).max(1);
    dst.batch_execute(&format!("TRUNCATE ONLY {}", table.name))
        .await
        .map_err(|e| copy_error("target", "the target server", &e))?;
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 0..count {
        // the last range is open: the table may have grown since its size was read
        let range = if i + 1 == count {
            format!("ctid >= '({start},0)'")
        } else {
            format!("ctid >= '({start},0)' AND ctid < '({},0)'", start + step)
        };
        pieces.push(Piece {
            key: format!("{}#blocks {start}-", table.name),
            table: table.clone(),
            from: format!("{} WHERE {range}", table.from_clause()),
            clear: String::new(),
            columns: columns.to_string(),
            binary,
            chunk_range: None,
            bytes: table.bytes / count,
            freeze: false,
            chunk: false,
        });
        start += step;
    }
    Ok(pieces)
}

/// Binary COPY carries a type's OID for composite and array values, and those of user-defined
/// types differ between servers: binary only when every column's type is built in.
async fn binary_safe(dst: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let row = dst
        .query_one(
            "SELECT coalesce(bool_and(t.oid < 16384 AND t.typtype <> 'c'), true) FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''",
            &[&table],
        )
        .await?;
    Ok(row.get(0))
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
            let inv: Inventory = match std::fs::read_to_string(dir.join("inventory.json")) {
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
            let resumed = progress.done.lock().expect("progress lock").len();
            if resumed > 0 {
                ctx.info("data", format!("resuming: {resumed} table(s) or chunk(s) were loaded by an earlier run"))
                    .await;
            }

            let session = Session::open(&source).await?;
            let snapshot = session.snapshot().map(str::to_string);
            let planner = open_writer(&target).await?;
            let pieces = plan_pieces(&session, &planner, &all, &progress, self.range_bytes).await?;
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
            // a table is done when its last piece is
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
                    let mut chunk_lookup = None;
                    loop {
                        let next = queue.lock().expect("queue").pop_front();
                        let Some(piece) = next else { break };
                        let (rows, bytes, direct) =
                            copy_piece(ctx, &src, &dst, &mut chunk_lookup, &piece, &copied).await.map_err(|e| {
                                let done = progress.done.lock().expect("progress lock").len();
                                UserError::new(
                                    format!("copying {} failed: {}", piece.table.name, e.message),
                                    format!(
                                        "{}; run again to resume ({done} tables or chunks already loaded are kept)",
                                        e.fix
                                    ),
                                )
                            })?;
                        progress.mark(&piece.key)?;
                        let table_done = {
                            let mut r = remaining.lock().expect("remaining");
                            let left = r.get_mut(&piece.table.name).expect("counted");
                            *left -= 1;
                            *left == 0
                        };
                        if table_done && piece.key != piece.table.name {
                            progress.mark(&piece.table.name)?;
                        }
                        let mut t = totals.lock().expect("totals");
                        t.rows += rows;
                        t.bytes += bytes;
                        if piece.chunk {
                            if direct {
                                t.direct_chunks += 1;
                            } else {
                                t.routed_chunks += 1;
                            }
                        }
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
            let chunks = if t.direct_chunks + t.routed_chunks > 0 {
                format!(
                    "; hypertable chunks: {} written directly, {} through the hypertable",
                    t.direct_chunks, t.routed_chunks
                )
            } else {
                String::new()
            };
            Ok(format!(
                "{} tables, {} rows, {} in {secs:.1}s ({}/s); {sequences} sequences set{chunks}",
                all.len(),
                t.rows,
                human_bytes(t.bytes),
                human_bytes((t.bytes as f64 / secs) as u64)
            ))
        })
    }
}

fn copy_error(side: &str, spec_label: &str, e: &tokio_postgres::Error) -> UserError {
    let text = e.to_string();
    let closed = catalog::connection_lost(e) || text.contains("connection") || text.contains("unexpected EOF");
    let fix = if closed {
        format!(
            "the connection to the {side} ({spec_label}) was lost: check that the server runs (a container: \
             pgshift env status), then run again to resume"
        )
    } else {
        format!("fix the cause on the {side} ({spec_label})")
    };
    UserError::new(format!("{side}: {}", catalog::db_message(e)), fix)
}

/// A source connection reading at the shared snapshot.
async fn open_reader(source: &ConnSpec, snapshot: Option<&str>) -> Result<Client, UserError> {
    let c = source.connect().await?;
    // no JIT: a plain SELECT of a large table passes jit_above_cost and gains nothing from it
    let mut sql = format!(
        "{}; SET jit = off; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
        catalog::rows::CANONICAL_SETTINGS
    );
    if let Some(id) = snapshot {
        sql.push_str(&format!(" SET TRANSACTION SNAPSHOT '{}';", id.replace('\'', "")));
    }
    c.batch_execute(&sql).await.map_err(|e| copy_error("source", &source.label(), &e))?;
    Ok(c)
}

/// A target connection that fires no user trigger. Its prepared statements are planned once
/// (`plan_cache_mode`): the chunk lookup runs once per chunk. No JIT: its catalog estimates are
/// untrustworthy on a freshly loaded target (a catalog query compiled for 0.8 s there).
async fn open_writer(target: &ConnSpec) -> Result<Client, UserError> {
    let c = target.connect().await?;
    c.batch_execute(
        "SET session_replication_role = replica; SET statement_timeout = 0; SET plan_cache_mode = force_generic_plan; SET jit = off; \
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

/// Empties on the target what the piece writes and streams the source's rows into it, in one
/// transaction. Returns rows, bytes, and whether a chunk was written directly.
async fn copy_piece(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    chunk_lookup: &mut Option<Statement>,
    piece: &Piece,
    copied: &Mutex<HashMap<String, u64>>,
) -> Result<(u64, u64, bool), UserError> {
    let tgt = |e: tokio_postgres::Error| copy_error("target", "the target server", &e);
    let srcerr = |e: tokio_postgres::Error| copy_error("source", "the source server", &e);
    let format = if piece.binary { " (FORMAT binary)" } else { "" };
    // a table emptied (or a chunk created) in this transaction takes its rows frozen: nothing left
    // for VACUUM to rewrite on the new server
    let mut freeze = piece.freeze;
    dst.batch_execute(&format!("BEGIN; {};", piece.clear)).await.map_err(tgt)?;
    let stream = src
        .copy_out(&format!("COPY (SELECT {} FROM {}) TO STDOUT{format}", piece.columns, piece.from))
        .await
        .map_err(srcerr)?;
    pin_mut!(stream);
    let mut bytes = 0u64;
    let mut rows = 0u64;
    // the source sends one COPY message per row: gather them into large writes, so the target
    // connection is flushed once per batch rather than once per row
    let mut batch = bytes::BytesMut::with_capacity(BATCH_BYTES);
    let mut into = piece.table.name.clone();
    if let Some(range) = &piece.chunk_range {
        // TimescaleDB routes each row written through the hypertable to its chunk, which made a
        // hypertable load 2-3 times slower than a plain table's. The source chunk's first row goes
        // through the hypertable (creating the target's chunk, by TimescaleDB's own rules); when
        // that chunk covers the source chunk's whole range, the rest is written into it directly.
        if let Some((chunk, _)) = target_chunk(dst, chunk_lookup, &piece.table.name, range).await.map_err(tgt)? {
            // the chunk is there already (a resumed load): all of it goes straight in
            into = chunk;
        } else if let Some(first) = stream.next().await {
            let first = first.map_err(srcerr)?;
            bytes += first.len() as u64;
            match single_row_message(&first, piece.binary) {
                Some(header_len) => {
                    let mut one = bytes::BytesMut::from(&first[..]);
                    if piece.binary {
                        one.extend_from_slice(&BINARY_TRAILER);
                    }
                    let sql = format!("COPY {} ({}) FROM STDIN{format}", piece.table.name, piece.columns);
                    let sink = dst.copy_in::<_, bytes::Bytes>(&sql).await.map_err(tgt)?;
                    pin_mut!(sink);
                    sink.send(one.freeze()).await.map_err(tgt)?;
                    rows += sink.finish().await.map_err(tgt)?;
                    if let Some((chunk, created_here)) =
                        target_chunk(dst, chunk_lookup, &piece.table.name, range).await.map_err(tgt)?
                    {
                        into = chunk;
                        // another worker may have made it (a target chunk wider than this one's
                        // range): COPY FREEZE only into a chunk this transaction created
                        freeze = created_here;
                    }
                    batch.extend_from_slice(&first[..header_len]);
                }
                // not exactly one row: all of it goes through the hypertable
                None => batch.extend_from_slice(&first),
            }
        }
    }
    let options = match (piece.binary, freeze) {
        (true, true) => " (FORMAT binary, FREEZE)",
        (true, false) => " (FORMAT binary)",
        (false, true) => " (FREEZE)",
        (false, false) => "",
    };
    let sink = dst
        .copy_in::<_, bytes::Bytes>(&format!("COPY {into} ({}) FROM STDIN{options}", piece.columns))
        .await
        .map_err(tgt)?;
    pin_mut!(sink);
    let total = Some(piece.table.bytes.max(0) as u64).filter(|b| *b > 0);
    let mut last = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(srcerr)?;
        bytes += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH_BYTES {
            sink.send(batch.split().freeze()).await.map_err(tgt)?;
            // progress at most every 250 ms, checked per batch (reading the clock per row showed in profiles)
            if last.elapsed() >= Duration::from_millis(250) {
                last = Instant::now();
                let so_far = copied.lock().expect("copied").get(&piece.table.name).copied().unwrap_or(0) + bytes;
                ctx.try_progress(&piece.table.name, so_far, total.map(|t| t.max(so_far)), Unit::Bytes);
            }
        }
    }
    if !batch.is_empty() {
        sink.send(batch.freeze()).await.map_err(tgt)?;
    }
    rows += sink.finish().await.map_err(tgt)?;
    dst.batch_execute("COMMIT").await.map_err(tgt)?;
    let so_far = {
        let mut c = copied.lock().expect("copied");
        let v = c.entry(piece.table.name.clone()).or_default();
        *v += bytes;
        *v
    };
    ctx.progress(&piece.table.name, so_far, total.map(|t| t.max(so_far)), Unit::Bytes).await;
    let table = &piece.table.name;
    let what = match piece.key.strip_prefix(table.as_str()).and_then(|rest| rest.strip_prefix('#')) {
        None => table.clone(),
        Some(blocks) if !piece.chunk => format!("{table} {blocks}"),
        Some(chunk) => format!("{table} chunk {chunk}"),
    };
    ctx.info("data", format!("{what}: {rows} rows, {}", human_bytes(bytes))).await;
    Ok((rows, bytes, into != piece.table.name))
}

/// The end of a binary COPY stream.
const BINARY_TRAILER: [u8; 2] = [0xff, 0xff];

/// When a COPY message holds exactly one row (after the binary header, in the first message),
/// the header's length (0 for text). PostgreSQL sends one message per row; anything else is not
/// split.
fn single_row_message(message: &[u8], binary: bool) -> Option<usize> {
    if !binary {
        let newlines = message.iter().filter(|&&b| b == b'\n').count();
        return (newlines == 1 && message.ends_with(b"\n")).then_some(0);
    }
    let header = catalog::rows::binary_header_len(message)?;
    let row = catalog::rows::tuple_len(&message[header..])?;
    (header + row == message.len() && message[header..] != BINARY_TRAILER).then_some(header)
}

/// The target's uncompressed chunk of `hypertable` that covers the whole `range` (start, end), if
/// there is one, and whether this transaction created it. Compressed chunks are left to the
/// hypertable's routing. Prepared once per connection: planning the view took 23 ms a chunk.
async fn target_chunk(
    dst: &Client,
    lookup: &mut Option<Statement>,
    hypertable: &str,
    (start, end): &(String, String),
) -> Result<Option<(String, bool)>, tokio_postgres::Error> {
    let statement = match lookup {
        Some(s) => s.clone(),
        None => {
            let s = dst
                .prepare(
                    "SELECT format('%I.%I', c.chunk_schema, c.chunk_name),
                            k.xmin::text::bigint = txid_current() % 4294967296
                     FROM timescaledb_information.chunks c
                     JOIN pg_class k ON k.oid = to_regclass(format('%I.%I', c.chunk_schema, c.chunk_name))
                     WHERE format('%I.%I', c.hypertable_schema, c.hypertable_name) = $1 AND NOT c.is_compressed
                       AND c.range_start <= $2::text::timestamptz AND c.range_end >= $3::text::timestamptz
                     LIMIT 1",
                )
                .await?;
            lookup.insert(s).clone()
        }
    };
    let row = dst.query_opt(&statement, &[&hypertable, start, end]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Sets every user sequence of the target to the source's value at the snapshot.
async fn set_sequences(ctx: &StageContext, session: &Session, target: &ConnSpec) -> Result<usize, StageError> {
    let values = session
        .strings(
            "sequences",
            &format!(
                // the sequence's own row: pg_sequences hides last_value when is_called is false
                "SELECT format('SELECT pg_catalog.setval(%L, %s, %s)', seq, v.last_value, v.is_called)
                 FROM (SELECT format('%I.%I', schemaname, sequencename) AS seq FROM pg_sequences s WHERE {}) q,
                 LATERAL (SELECT (xpath('/row/last_value/text()', x))[1]::text AS last_value,
                                 (xpath('/row/is_called/text()', x))[1]::text AS is_called
                          FROM query_to_xml(format('SELECT last_value, is_called FROM %s', q.seq), false, true, '') x) v",
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

    /// A binary tuple of int4 fields.
    fn tuple(values: &[i32]) -> Vec<u8> {
        let mut t = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            t.extend_from_slice(&4i32.to_be_bytes());
            t.extend_from_slice(&v.to_be_bytes());
        }
        t
    }

    #[test]
    fn only_a_message_of_exactly_one_row_is_split_off() {
        let one = [HEADER, &tuple(&[1, 2])].concat();
        assert_eq!(single_row_message(&one, true), Some(HEADER.len()));
        // two rows, a cut row, the header with the trailer only, no header: not split
        assert_eq!(single_row_message(&[one.clone(), tuple(&[3, 4])].concat(), true), None);
        assert_eq!(single_row_message(&one[..one.len() - 1], true), None);
        assert_eq!(single_row_message(&[HEADER, &BINARY_TRAILER[..]].concat(), true), None);
        assert_eq!(single_row_message(&tuple(&[1, 2]), true), None);

        assert_eq!(single_row_message(b"1\tnote\n", false), Some(0));
        assert_eq!(single_row_message(b"1\ta\\nb\n", false), Some(0), "an escaped newline is inside the row");
        assert_eq!(single_row_message(b"1\ta\n2\tb\n", false), None);
        assert_eq!(single_row_message(b"1\ta", false), None);
    }
}

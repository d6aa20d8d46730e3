//! Copying one piece: in one target transaction, empty what it writes, stream the source's rows
//! (`COPY (SELECT ...) TO STDOUT`) into the target (`COPY ... FROM STDIN`) in large batches, and
//! for a compressed chunk copied as it is, its compressed rows into a table of the source's
//! compressed layout. Sessions on both sides use fixed output settings; the target's fires no user
//! trigger.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::{Client, Statement};

use super::errors::{copy_error, srcerr, tgt};
use super::plan::{Compressed, Piece, Route};
use crate::catalog;
use crate::engine::{StageContext, Unit};
use crate::error::UserError;
use crate::human::human_bytes;
use crate::postgres::conn::ConnSpec;
use crate::timescaledb::chunks::{self, Layout, LayoutColumn, Staged, ToCompress};

/// Bytes gathered before one write to the target (memory per copying table stays near this).
const BATCH_BYTES: usize = 256 << 10;

/// A source connection reading at the shared snapshot.
pub async fn open_reader(source: &ConnSpec, snapshot: Option<&str>) -> Result<Client, UserError> {
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
/// untrustworthy on a freshly loaded target (a catalog query compiled for 0.8 s there). Its commits
/// are synchronous whatever the server's default: a piece is recorded as loaded once its COMMIT
/// returns, and with `synchronous_commit = off` a crash of the target can lose a commit already
/// acknowledged (seen here: a chunk recorded as loaded, gone after the restart).
pub async fn open_writer(target: &ConnSpec) -> Result<Client, UserError> {
    let c = target.connect().await?;
    c.batch_execute(
        "SET session_replication_role = replica; SET statement_timeout = 0; SET plan_cache_mode = force_generic_plan; SET jit = off; \
         SET synchronous_commit = on; \
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

/// What copying a piece did.
#[derive(Debug, Default)]
pub struct Copied {
    pub rows: u64,
    /// Large objects copied (a piece of large objects has no rows).
    pub objects: u64,
    pub bytes: u64,
    /// A chunk written straight into the target's chunk (not routed row by row).
    pub direct: bool,
    /// A compressed chunk copied in its compressed form.
    pub compressed_as_is: bool,
    /// A compressed chunk read through decompression.
    pub decompressed: bool,
    /// What the TimescaleDB stage must compress.
    pub compress: Option<ToCompress>,
    /// The target chunk written, made with the source chunk's slices.
    pub chunk: Option<String>,
}

/// Per worker: the prepared chunk lookup of the routed path.
#[derive(Default)]
pub struct Worker {
    chunk_lookup: Option<Statement>,
}

/// Empties on the target what the piece writes and streams the source's rows into it, in one
/// transaction.
pub async fn copy_piece(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    worker: &mut Worker,
    piece: &Piece,
    copied: &Mutex<HashMap<String, u64>>,
) -> Result<Copied, UserError> {
    dst.batch_execute("BEGIN").await.map_err(tgt)?;
    if !piece.clear.is_empty() {
        dst.batch_execute(&piece.clear).await.map_err(tgt)?;
    }
    let out = match &piece.route {
        Route::Exact { slices, compressed } => {
            copy_exact(ctx, src, dst, piece, slices, compressed.as_ref(), copied).await?
        }
        Route::Routed { range } => copy_routed(ctx, src, dst, worker, piece, range.as_ref(), copied).await?,
        Route::LargeObjects { objects } => {
            let (objects, bytes) = super::large_objects::copy(ctx, src, dst, piece, objects, copied).await?;
            Copied { objects, bytes, ..Default::default() }
        }
        Route::Table => {
            let (rows, bytes) = pump(
                ctx,
                src,
                dst,
                piece,
                &source_copy(piece),
                &target_copy(&piece.into, piece, piece.freeze),
                copied,
                None,
            )
            .await?;
            Copied { rows, bytes, ..Default::default() }
        }
    };
    dst.batch_execute("COMMIT").await.map_err(tgt)?;
    let table = &piece.table.name;
    let what = match piece.key.strip_prefix(table.as_str()).and_then(|rest| rest.strip_prefix('#')) {
        None => table.clone(),
        Some(blocks) if !piece.is_chunk() => format!("{table} {blocks}"),
        Some(chunk) => format!("{table} chunk {chunk}"),
    };
    let how = if out.compressed_as_is {
        ", compressed part copied as it is"
    } else if out.decompressed {
        ", read through decompression (compressed again later)"
    } else {
        ""
    };
    let count = if matches!(piece.route, Route::LargeObjects { .. }) {
        format!("{} objects", out.objects)
    } else {
        format!("{} rows", out.rows)
    };
    ctx.info("data", format!("{what}: {count}, {}{how}", human_bytes(out.bytes))).await;
    Ok(out)
}

fn source_copy(piece: &Piece) -> String {
    let format = if piece.binary { " (FORMAT binary)" } else { "" };
    format!("COPY (SELECT {} FROM {}) TO STDOUT{format}", piece.columns, piece.from)
}

fn target_copy(into: &str, piece: &Piece, freeze: bool) -> String {
    let options = match (piece.binary, freeze) {
        (true, true) => " (FORMAT binary, FREEZE)",
        (true, false) => " (FORMAT binary)",
        (false, true) => " (FREEZE)",
        (false, false) => "",
    };
    format!("COPY {into} ({}) FROM STDIN{options}", piece.columns)
}

/// A chunk made on the target with the source chunk's slices (or found, on a rerun, and emptied):
/// its own rows written straight into it, frozen; a compressed chunk's compressed rows into a table
/// of the source's compressed layout, attached later, or its rows decompressed and compressed later.
async fn copy_exact(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    piece: &Piece,
    slices: &str,
    compressed: Option<&Compressed>,
    copied: &Mutex<HashMap<String, u64>>,
) -> Result<Copied, UserError> {
    let row = dst.query_one(chunks::CREATE_CHUNK, &[&piece.into, &slices]).await.map_err(tgt)?;
    let (chunk, created): (String, bool) = (row.get(0), row.get(1));
    if !created {
        dst.batch_execute(&format!("TRUNCATE ONLY {chunk}")).await.map_err(tgt)?;
    }
    let (mut rows, mut bytes) =
        pump(ctx, src, dst, piece, &source_copy(piece), &target_copy(&chunk, piece, true), copied, None).await?;
    let mut out = Copied { direct: true, chunk: Some(chunk.clone()), ..Default::default() };
    if let Some(c) = compressed {
        let staged = if c.as_is {
            let layout = read_layout(src, &c.part.table).await.map_err(srcerr)?;
            let staging = chunks::staging_name(&chunk);
            for sql in chunks::staging_table_sql(&staging, &layout) {
                dst.batch_execute(&sql).await.map_err(tgt)?;
            }
            let cols: Vec<&str> = layout.columns.iter().map(|c| c.name.as_str()).collect();
            let cols = cols.join(", ");
            let (_, b) = pump(
                ctx,
                src,
                dst,
                piece,
                &format!(
                    "COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT binary)",
                    chunks::compressed_select_list(&layout),
                    c.part.table
                ),
                &format!("COPY {staging} ({cols}) FROM STDIN (FORMAT binary, FREEZE)"),
                copied,
                None,
            )
            .await?;
            bytes += b;
            let inside: i64 = src
                .query_one(&format!("SELECT coalesce(sum(_ts_meta_count), 0)::bigint FROM ONLY {}", c.part.table), &[])
                .await
                .map_err(srcerr)?
                .get(0);
            rows += inside.max(0) as u64;
            for sql in chunks::staging_index_sql(&staging, &layout) {
                dst.batch_execute(&sql).await.map_err(tgt)?;
            }
            out.compressed_as_is = true;
            Some(Staged { table: staging, sizes: c.part.sizes })
        } else {
            out.decompressed = true;
            None
        };
        out.compress = Some(ToCompress { hypertable: piece.into.clone(), chunk, staged });
    }
    out.rows = rows;
    out.bytes = bytes;
    Ok(out)
}

/// A compressed chunk's table on the source, as the staging table copies it.
async fn read_layout(src: &Client, table: &str) -> Result<Layout, tokio_postgres::Error> {
    let columns = src
        .query(chunks::LAYOUT_COLUMNS, &[&table])
        .await?
        .iter()
        .map(|r| LayoutColumn {
            name: r.get(0),
            type_sql: r.get(1),
            storage: r.get::<_, String>(2).chars().next().unwrap_or('x'),
            statistics: r.get(3),
            collation: r.get(4),
        })
        .collect();
    let options: String = src.query_one(chunks::LAYOUT_OPTIONS, &[&table]).await?.get(0);
    let indexes = src.query(chunks::LAYOUT_INDEXES, &[&table]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let constraints =
        src.query(chunks::LAYOUT_CONSTRAINTS, &[&table]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Layout {
        columns,
        options: options.lines().filter(|l| !l.is_empty()).map(String::from).collect(),
        indexes,
        constraints,
    })
}

/// A source chunk routed through the target's hypertable, partitioned differently: its first row
/// goes through the hypertable (creating the target's chunk, by TimescaleDB's own rules); when
/// that chunk covers the source chunk's whole range, the rest is written into it directly.
async fn copy_routed(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    worker: &mut Worker,
    piece: &Piece,
    range: Option<&(String, String)>,
    copied: &Mutex<HashMap<String, u64>>,
) -> Result<Copied, UserError> {
    let mut into = piece.into.clone();
    let mut freeze = false;
    let mut first_bytes = 0u64;
    let mut rows = 0u64;
    let mut prefill = bytes::BytesMut::new();
    let stream = src.copy_out(&source_copy(piece)).await.map_err(srcerr)?;
    pin_mut!(stream);
    if let Some(range) = range {
        if let Some((chunk, _)) = target_chunk(dst, &mut worker.chunk_lookup, &piece.into, range).await.map_err(tgt)? {
            // the chunk is there already (a resumed load): all of it goes straight in
            into = chunk;
        } else if let Some(first) = stream.next().await {
            let first = first.map_err(srcerr)?;
            first_bytes += first.len() as u64;
            match single_row_message(&first, piece.binary) {
                Some(header_len) => {
                    let mut one = bytes::BytesMut::from(&first[..]);
                    if piece.binary {
                        one.extend_from_slice(&BINARY_TRAILER);
                    }
                    let sink =
                        dst.copy_in::<_, bytes::Bytes>(&target_copy(&piece.into, piece, false)).await.map_err(tgt)?;
                    pin_mut!(sink);
                    sink.send(one.freeze()).await.map_err(tgt)?;
                    rows += sink.finish().await.map_err(tgt)?;
                    if let Some((chunk, created_here)) =
                        target_chunk(dst, &mut worker.chunk_lookup, &piece.into, range).await.map_err(tgt)?
                    {
                        into = chunk;
                        // another worker may have made it (a target chunk wider than this one's
                        // range): COPY FREEZE only into a chunk this transaction created
                        freeze = created_here;
                    }
                    prefill.extend_from_slice(&first[..header_len]);
                }
                // not exactly one row: all of it goes through the hypertable
                None => prefill.extend_from_slice(&first),
            }
        }
    }
    let direct = into != piece.into;
    let (more, bytes) =
        drain(ctx, stream, dst, piece, &target_copy(&into, piece, freeze), copied, prefill, first_bytes).await?;
    Ok(Copied { rows: rows + more, bytes, direct, ..Default::default() })
}

/// Streams `copy_out` on the source into `copy_in` on the target.
#[allow(clippy::too_many_arguments)]
async fn pump(
    ctx: &StageContext,
    src: &Client,
    dst: &Client,
    piece: &Piece,
    copy_out: &str,
    copy_in: &str,
    copied: &Mutex<HashMap<String, u64>>,
    prefill: Option<bytes::BytesMut>,
) -> Result<(u64, u64), UserError> {
    let stream = src.copy_out(copy_out).await.map_err(srcerr)?;
    drain(ctx, stream, dst, piece, copy_in, copied, prefill.unwrap_or_default(), 0).await
}

/// The rest of a COPY stream into `copy_in`, gathered into large writes (the source sends one COPY
/// message per row), progress at most every 250 ms. Returns rows and bytes.
#[allow(clippy::too_many_arguments)]
async fn drain(
    ctx: &StageContext,
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
    dst: &Client,
    piece: &Piece,
    copy_in: &str,
    copied: &Mutex<HashMap<String, u64>>,
    mut batch: bytes::BytesMut,
    mut bytes: u64,
) -> Result<(u64, u64), UserError> {
    pin_mut!(stream);
    batch.reserve(BATCH_BYTES);
    let sink = dst.copy_in::<_, bytes::Bytes>(copy_in).await.map_err(tgt)?;
    pin_mut!(sink);
    let name = &piece.table.name;
    let total = Some(piece.table.bytes.max(0) as u64).filter(|b| *b > 0);
    let mut last = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(srcerr)?;
        bytes += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH_BYTES {
            sink.send(batch.split().freeze()).await.map_err(tgt)?;
            // checked per batch (reading the clock per row showed in profiles)
            if last.elapsed() >= Duration::from_millis(250) {
                last = Instant::now();
                let so_far = copied.lock().expect("copied").get(name).copied().unwrap_or(0) + bytes;
                ctx.try_progress(name, so_far, total.map(|t| t.max(so_far)), Unit::Bytes);
            }
        }
    }
    if !batch.is_empty() {
        sink.send(batch.freeze()).await.map_err(tgt)?;
    }
    let rows = sink.finish().await.map_err(tgt)?;
    let so_far = {
        let mut c = copied.lock().expect("copied");
        let v = c.entry(name.clone()).or_default();
        *v += bytes;
        *v
    };
    ctx.progress(name, so_far, total.map(|t| t.max(so_far)), Unit::Bytes).await;
    Ok((rows, bytes))
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

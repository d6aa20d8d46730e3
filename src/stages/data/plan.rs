//! The pieces the data stage copies, largest first: a plain table whole or, when larger than two
//! block ranges, in `ctid` ranges; a hypertable (or an aggregate's materialization) one source
//! chunk at a time — recreated on the target with the source chunk's slices when both hypertables
//! are partitioned alike, else routed through the target's hypertable. A compressed chunk is copied
//! in its compressed form where both TimescaleDBs share the format, or read through decompression.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::errors::tgt;
use super::progress::Progress;
use crate::catalog::{Session, TableInfo};
use crate::error::UserError;
use crate::plan::CompressedChunks;
use crate::postgres::sql::quote_literal;
use crate::timescaledb::chunks::{self, CompressedPart, SourceChunk};

/// Where a piece's rows go.
#[derive(Debug, Clone)]
pub enum Route {
    /// A table, whole or a block range of it (or a hypertable that has no chunks to split by).
    Table,
    /// A source chunk recreated on the target with its slices.
    Exact { slices: String, compressed: Option<Compressed> },
    /// A source chunk routed through the target's hypertable (partitioned differently): written
    /// straight into the target's chunk when that covers the source chunk's whole time range.
    Routed { range: Option<(String, String)> },
    /// Large objects, by OID (`large_objects.rs`).
    LargeObjects { objects: Vec<(u32, i64)> },
}

#[derive(Debug, Clone)]
pub struct Compressed {
    pub part: CompressedPart,
    /// Copied in its compressed form (else read through decompression).
    pub as_is: bool,
}

/// A unit of copying.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Its name in `data-progress.json`: the table, `table#chunk`, or `table#blocks N-`.
    pub key: String,
    pub table: TableInfo,
    /// The relation written on the target: the table, or the target's materialization of an
    /// aggregate.
    pub into: String,
    /// What follows FROM on the source.
    pub from: String,
    /// Empties on the target what this piece writes, in the piece's transaction.
    pub clear: String,
    pub columns: String,
    pub binary: bool,
    /// On-disk size on the source, to start the largest pieces first.
    pub bytes: i64,
    /// `clear` empties the table itself (TRUNCATE ONLY): COPY can write its rows frozen.
    pub freeze: bool,
    pub route: Route,
}

impl Piece {
    pub fn is_chunk(&self) -> bool {
        matches!(self.route, Route::Exact { .. } | Route::Routed { .. })
    }
}

/// Everything planned: the pieces, largest first, the source relations to hold locks on while
/// they are read, and the hypertables whose compressed chunks are compressed again by range.
pub struct Planned {
    pub pieces: Vec<Piece>,
    pub locks: Vec<String>,
    pub by_range: Vec<String>,
    /// Why no plain table is copied in block ranges, if none is.
    pub no_ranges: Option<String>,
    /// Plain tables large enough for block ranges but copied in one piece: (table, bytes).
    pub whole: Vec<(String, i64)>,
}

/// Why plain tables go in one piece each: block ranges turned off (a range size of 0), or a source
/// before PostgreSQL 14, where a block range's `ctid` condition reads the whole table anyway.
pub fn whole_tables_reason(range_bytes: i64, server_version_num: i64) -> Option<String> {
    if range_bytes == 0 {
        Some("block ranges are off (a range size of 0)".to_string())
    } else if server_version_num < 140000 {
        Some(format!(
            "the source runs PostgreSQL {}, before TID range scans (14): a block range would read the whole table",
            server_version_num / 10000
        ))
    } else {
        None
    }
}

/// What the target offers that the chunk routes need.
struct TargetFeatures {
    hypertables: std::collections::BTreeSet<String>,
    materializations: BTreeMap<String, String>,
    create_chunk: bool,
    /// Compressed chunks can be copied as they are (same TimescaleDB version, the API to attach).
    as_is: bool,
}

async fn target_features(session: &Session, dst: &Client, mode: CompressedChunks) -> Result<TargetFeatures, UserError> {
    let hypertables = crate::timescaledb::hypertables(dst).await.map_err(tgt)?;
    let materializations = crate::timescaledb::materializations(dst).await.map_err(tgt)?;
    let has = |f: &str| {
        let sql = format!("SELECT to_regproc({}) IS NOT NULL", quote_literal(f));
        async move { dst.query_one(&sql, &[]).await.map(|r| r.get::<_, bool>(0)) }
    };
    let create_chunk = !hypertables.is_empty() && has("_timescaledb_functions.create_chunk").await.map_err(tgt)?;
    let attach = create_chunk && has("_timescaledb_functions.create_compressed_chunk").await.map_err(tgt)?;
    let source_version = session
        .strings("TimescaleDB version", "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        .await?;
    let target_version = crate::timescaledb::version(dst).await.map_err(tgt)?;
    let as_is = mode == CompressedChunks::AsIs
        && attach
        && !source_version.is_empty()
        && source_version.first() == target_version.as_ref();
    Ok(TargetFeatures { hypertables, materializations, create_chunk, as_is })
}

/// The pieces of every table not yet loaded.
pub async fn plan_pieces(
    session: &Session,
    dst: &Client,
    tables: &[TableInfo],
    progress: &Progress,
    range_bytes: i64,
    mode: CompressedChunks,
) -> Result<Planned, UserError> {
    let features = target_features(session, dst, mode).await?;
    // reading a block range costs only its blocks from 14 on (TID range scans)
    let version = session
        .strings("server version", "SELECT current_setting('server_version_num')")
        .await?
        .first()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let no_ranges = whole_tables_reason(range_bytes, version);
    let range_bytes = range_bytes.max(1);
    let mut planned =
        Planned { pieces: Vec::new(), locks: Vec::new(), by_range: Vec::new(), no_ranges: None, whole: Vec::new() };
    for table in tables {
        if progress.contains(&table.name) {
            continue;
        }
        let into = match table.aggregate() {
            Some(view) => features.materializations.get(view).cloned().ok_or_else(|| {
                UserError::new(
                    format!("the target has no continuous aggregate {view} to copy its materialized rows into"),
                    "run the schema stage again (it creates the source's continuous aggregates), then resume",
                )
            })?,
            None => table.name.clone(),
        };
        let cols = target_columns(dst, &into).await.map_err(tgt)?;
        let binary = binary_safe(dst, &into).await.map_err(tgt)?;
        let columns = cols.join(", ");
        let base = Piece {
            key: table.name.clone(),
            table: table.clone(),
            into: into.clone(),
            from: table.from_clause(),
            clear: String::new(),
            columns,
            binary,
            bytes: table.bytes,
            freeze: false,
            route: Route::Table,
        };
        if matches!(table.kind.as_str(), "hypertable" | "materialization") {
            let source_rel = table.relation.clone().unwrap_or_else(|| table.name.clone());
            let n = planned.pieces.len();
            if features.create_chunk && same_dimensions(session, dst, &source_rel, &into).await? {
                exact_pieces(session, &base, &source_rel, features.as_is, progress, &mut planned).await?;
            } else {
                routed_pieces(session, dst, &base, &source_rel, progress, &mut planned).await?;
            }
            if planned.pieces.len() > n || progress.contains_any_chunk(&table.name) {
                continue;
            }
        }
        let target_hypertable =
            features.hypertables.contains(&into) || table.kind != "table" && table.kind != "partition";
        if !target_hypertable && table.bytes > 2 * range_bytes {
            if no_ranges.is_none() {
                planned.pieces.extend(block_ranges(session, dst, &base, range_bytes).await?);
                continue;
            }
            if range_bytes > 1 {
                // (with ranges off every table would be listed: the reason line says it for all)
                planned.whole.push((table.name.clone(), table.bytes));
            }
        }
        // through a hypertable, rows are routed to chunks: no FREEZE there
        let clear = if target_hypertable { format!("TRUNCATE {into}") } else { format!("TRUNCATE ONLY {into}") };
        planned.pieces.push(Piece { clear, freeze: !target_hypertable, ..base });
    }
    planned.pieces.sort_by_key(|p| std::cmp::Reverse(p.bytes));
    planned.no_ranges = no_ranges;
    Ok(planned)
}

async fn same_dimensions(session: &Session, dst: &Client, source: &str, target: &str) -> Result<bool, UserError> {
    let s = session.strings("hypertable dimensions", &chunks::dimensions_sql(source)).await?;
    let t: String = dst.query_one(&chunks::dimensions_sql(target), &[]).await.map_err(tgt)?.get(0);
    Ok(s.first().is_some_and(|s| !s.is_empty() && *s == t))
}

/// One piece per source chunk, each recreated on the target with its slices.
async fn exact_pieces(
    session: &Session,
    base: &Piece,
    source_rel: &str,
    as_is: bool,
    progress: &Progress,
    planned: &mut Planned,
) -> Result<(), UserError> {
    let rows = session.rows("hypertable chunks", &chunks::source_chunks_sql(source_rel)).await?;
    // which compressed chunks were compressed under the current settings (unknown before 2.14:
    // then all are read through decompression)
    let current = if as_is {
        session.try_strings(&chunks::current_settings_sql(source_rel)).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let portable = as_is
        && session
            .strings("column types", &format!("SELECT ({})::text", chunks::portable_columns_sql(source_rel)))
            .await?
            .first()
            .map(String::as_str)
            == Some("true");
    for r in rows {
        let sizes: Vec<Option<i64>> = r.get(4);
        let compressed_table: Option<String> = r.get(3);
        let chunk = SourceChunk {
            name: r.get(0),
            slices: r.get::<_, Option<String>>(1).unwrap_or_default(),
            bytes: r.get(2),
            compressed: compressed_table.map(|table| CompressedPart {
                current_settings: current.contains(&table),
                has_missing: r.get(5),
                table,
                sizes: std::array::from_fn(|i| sizes.get(i).copied().flatten().unwrap_or(0)),
            }),
        };
        let key = format!("{}#{}", base.table.name, chunk.name);
        if progress.contains(&key) {
            continue;
        }
        planned.locks.push(chunk.name.clone());
        let compressed = chunk.compressed.map(|part| {
            planned.locks.push(part.table.clone());
            Compressed { as_is: portable && part.portable(), part }
        });
        // a compressed chunk's own table holds only the rows written after compression; read
        // without ONLY, TimescaleDB decompresses the rest on the fly
        let from = match &compressed {
            Some(c) if !c.as_is => chunk.name.clone(),
            _ => format!("ONLY {}", chunk.name),
        };
        planned.pieces.push(Piece {
            key,
            from,
            bytes: chunk.bytes,
            freeze: true,
            route: Route::Exact { slices: chunk.slices, compressed },
            ..base.clone()
        });
    }
    Ok(())
}

/// One piece per source chunk whose rows go through the target's hypertable, when the source's
/// hypertable has a single (time) dimension; none otherwise (the table is copied whole).
async fn routed_pieces(
    session: &Session,
    dst: &Client,
    base: &Piece,
    source_rel: &str,
    progress: &Progress,
    planned: &mut Planned,
) -> Result<(), UserError> {
    // its rows go straight into the target's chunk only when the target's hypertable has a single
    // dimension too (a chunk found for one row holds only that row's space partition)
    let single: bool = dst
        .query_one(
            "SELECT count(*) = 1 FROM timescaledb_information.dimensions
             WHERE format('%I.%I', hypertable_schema, hypertable_name) = $1",
            &[&base.into],
        )
        .await
        .map_err(tgt)?
        .get(0);
    let rows = session
        .rows(
            "hypertable chunks",
            &format!(
                "SELECT format('%I.%I', c.chunk_schema, c.chunk_name), quote_ident(d.column_name::text),
                        c.range_start::text, c.range_end::text,
                        pg_total_relation_size(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass)
                 FROM timescaledb_information.chunks c
                 JOIN timescaledb_information.dimensions d
                   ON d.hypertable_schema = c.hypertable_schema AND d.hypertable_name = c.hypertable_name
                 WHERE format('%I.%I', c.hypertable_schema, c.hypertable_name) = {lit}
                   AND c.range_start IS NOT NULL
                   AND (SELECT count(*) FROM timescaledb_information.dimensions x
                        WHERE x.hypertable_schema = c.hypertable_schema AND x.hypertable_name = c.hypertable_name) = 1
                 ORDER BY c.range_start",
                lit = quote_literal(source_rel)
            ),
        )
        .await?;
    for r in rows {
        let (chunk, column, start, end): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let key = format!("{}#{chunk}", base.table.name);
        if progress.contains(&key) {
            continue;
        }
        planned.locks.push(chunk.clone());
        planned.pieces.push(Piece {
            key,
            clear: format!(
                "DELETE FROM {} WHERE {column} >= {} AND {column} < {}",
                base.into,
                quote_literal(&start),
                quote_literal(&end)
            ),
            // without ONLY: a compressed chunk's rows come through decompression
            from: chunk,
            bytes: r.get(4),
            route: Route::Routed { range: single.then_some((start, end)) },
            ..base.clone()
        });
    }
    // compressed on the source: compressed again on the target, by the source's ranges
    let compressed = session
        .strings(
            "compressed chunks",
            &format!(
                "SELECT count(*)::text FROM timescaledb_information.chunks
                 WHERE format('%I.%I', hypertable_schema, hypertable_name) = {} AND is_compressed",
                quote_literal(source_rel)
            ),
        )
        .await?;
    if compressed.first().is_some_and(|n| n != "0") {
        planned.by_range.push(base.table.aggregate().unwrap_or(&base.table.name).to_string());
    }
    Ok(())
}

/// A large plain table in pieces of consecutive source blocks (`ctid` ranges: at one snapshot each
/// row is in exactly one), copied in parallel. Target rows have no source blocks, so a piece cannot
/// be redone alone: the table is emptied once here, and a rerun that finds it unfinished empties it
/// again and copies every range.
async fn block_ranges(
    session: &Session,
    dst: &Client,
    base: &Piece,
    range_bytes: i64,
) -> Result<Vec<Piece>, UserError> {
    let table = &base.table;
    let lit = quote_literal(&table.name);
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
    dst.batch_execute(&format!("TRUNCATE ONLY {}", table.name)).await.map_err(tgt)?;
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
            from: format!("{} WHERE {range}", table.from_clause()),
            bytes: table.bytes / count,
            ..base.clone()
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

#[cfg(test)]
mod tests {
    use super::whole_tables_reason;

    #[test]
    fn plain_tables_go_whole_from_a_source_before_14_or_with_ranges_off() {
        assert_eq!(whole_tables_reason(64 << 20, 170006), None);
        assert_eq!(whole_tables_reason(64 << 20, 140000), None, "14 has TID range scans");
        let old = whole_tables_reason(64 << 20, 130016).expect("13 reads a block range whole");
        assert!(old.contains("PostgreSQL 13") && old.contains("TID range scans"), "{old}");
        assert!(whole_tables_reason(0, 170006).unwrap().contains("off"));
    }
}

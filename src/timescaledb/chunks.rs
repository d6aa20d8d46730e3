//! Chunks copied one by one: a source chunk is recreated on the target with the very same
//! dimension slices (`_timescaledb_functions.create_chunk`), its rows written straight into it. A
//! compressed chunk is copied in its compressed form where both servers' TimescaleDB use the same
//! format (same version, the chunk compressed under the hypertable's current settings): its
//! compressed rows go into a table of the source's compressed layout, which the TimescaleDB stage
//! attaches as the chunk's compressed part (`create_compressed_chunk`, as timescaledb-backfill
//! does) once the hypertable's compression settings exist. Elsewhere the rows are read through
//! TimescaleDB's decompression and the chunk is compressed again on the target.

use serde::{Deserialize, Serialize};

use crate::postgres::sql::{quote_ident, quote_literal};

/// The sizes TimescaleDB recorded when it compressed a chunk (`compression_chunk_size`): uncompressed
/// heap, toast and index bytes, compressed heap, toast and index bytes, rows before and after.
pub type CompressionSizes = [i64; 8];

/// A compressed chunk's compressed part on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedPart {
    /// `_timescaledb_internal.compress_hyper_2_31_chunk`
    pub table: String,
    pub sizes: CompressionSizes,
    /// It was compressed under the hypertable's current settings (segment by, order by): the
    /// settings the target attaches it with.
    pub current_settings: bool,
    /// A column of the chunk has a "missing" value (added with a default after rows existed): its
    /// compressed rows leave it out (SQL NULL), which only the source's chunk reads as the default.
    pub has_missing: bool,
}

impl CompressedPart {
    /// Whether its compressed rows mean the same in a chunk made afresh on the target.
    pub fn portable(&self) -> bool {
        self.current_settings && !self.has_missing
    }
}

/// One chunk of a hypertable on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChunk {
    /// `_timescaledb_internal._hyper_1_1_chunk`
    pub name: String,
    /// Its dimension slices as `create_chunk` takes them: `{"time": [start, end], ...}`.
    pub slices: String,
    /// Heap, indexes and toast, with its compressed part.
    pub bytes: i64,
    pub compressed: Option<CompressedPart>,
}

/// The chunks of `hypertable` (not dropped ones whose metadata a continuous aggregate keeps), with
/// their slices built from the catalog as `show_chunk` reports them, oldest first. Read at the
/// data stage's snapshot.
pub fn source_chunks_sql(hypertable: &str) -> String {
    format!(
        "SELECT format('%I.%I', c.schema_name, c.table_name),
                (SELECT jsonb_object_agg(d.column_name, jsonb_build_array(ds.range_start, ds.range_end))
                 FROM _timescaledb_catalog.chunk_constraint k
                 JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = k.dimension_slice_id
                 JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
                 WHERE k.chunk_id = c.id)::text,
                pg_total_relation_size(format('%I.%I', c.schema_name, c.table_name)::regclass)
                  + coalesce(CASE WHEN cc.id IS NOT NULL THEN pg_total_relation_size(to_regclass(format('%I.%I', cc.schema_name, cc.table_name))) END, 0),
                CASE WHEN c.status & 1 = 1 AND cc.id IS NOT NULL THEN format('%I.%I', cc.schema_name, cc.table_name) END,
                ARRAY[z.uncompressed_heap_size, z.uncompressed_toast_size, z.uncompressed_index_size,
                      z.compressed_heap_size, z.compressed_toast_size, z.compressed_index_size,
                      coalesce(z.numrows_pre_compression, 0), coalesce(z.numrows_post_compression, 0)]::bigint[],
                EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = format('%I.%I', c.schema_name, c.table_name)::regclass
                          AND a.attnum > 0 AND NOT a.attisdropped AND a.atthasmissing)
         FROM _timescaledb_catalog.chunk c
         JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
         LEFT JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
         LEFT JOIN _timescaledb_catalog.compression_chunk_size z ON z.chunk_id = c.id
         WHERE format('%I.%I', h.schema_name, h.table_name) = {lit} AND NOT c.dropped
         ORDER BY c.id",
        lit = quote_literal(hypertable)
    )
}

/// The compressed chunks (by their compressed table) of `hypertable` compressed under its current
/// settings. Per-chunk settings exist from TimescaleDB 2.14 (keyed by the compressed table, later by
/// the chunk with the compressed table beside it); older versions fail this query, and their
/// chunks are then read through decompression.
pub fn current_settings_sql(hypertable: &str) -> String {
    format!(
        "SELECT coalesce(to_jsonb(cs) ->> 'compress_relid', cs.relid::text)
         FROM _timescaledb_catalog.compression_settings cs, _timescaledb_catalog.compression_settings hs
         WHERE hs.relid = {lit}::regclass AND cs.relid <> hs.relid
           AND (cs.segmentby, cs.orderby, cs.orderby_desc, cs.orderby_nullsfirst)
               IS NOT DISTINCT FROM (hs.segmentby, hs.orderby, hs.orderby_desc, hs.orderby_nullsfirst)",
        lit = quote_literal(hypertable)
    )
}

/// Whether every column of `hypertable` has a type whose compressed form holds no server-specific
/// OIDs: built-in types, and user types that are neither composite nor arrays (enums, pgvector's
/// vectors). Composite values and arrays of user types carry OIDs of the source.
pub fn portable_columns_sql(hypertable: &str) -> String {
    format!(
        "SELECT coalesce(bool_and(t.oid < 16384 OR (t.typtype IN ('b', 'e') AND t.typelem = 0 AND t.typrelid = 0)), true)
         FROM pg_attribute a JOIN pg_type t0 ON t0.oid = a.atttypid
         JOIN pg_type t ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END
         WHERE a.attrelid = {lit}::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        lit = quote_literal(hypertable)
    )
}

/// A column of a compressed chunk's table as the source has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutColumn {
    /// Quoted where needed.
    pub name: String,
    /// `format_type`: `_timescaledb_internal.compressed_data`, `integer`, ...
    pub type_sql: String,
    /// `p`lain, `e`xternal, e`x`tended, `m`ain.
    pub storage: char,
    /// -1 when unset.
    pub statistics: i32,
    pub collation: Option<String>,
}

/// A compressed chunk's table on the source: columns (in order), storage options, and the
/// definitions of its indexes (after `USING`) and constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub columns: Vec<LayoutColumn>,
    pub options: Vec<String>,
    /// `(unique, "btree (device_id, _ts_meta_min_1 DESC, _ts_meta_max_1 DESC)")`
    pub indexes: Vec<(bool, String)>,
    /// `(name, definition)` as pg_get_constraintdef gives it.
    pub constraints: Vec<(String, String)>,
}

pub const LAYOUT_COLUMNS: &str =
    "SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attstorage::text,
        coalesce(a.attstattarget::int, -1),
        CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
             THEN format('%I.%I', cn.nspname, co.collname) END
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
     LEFT JOIN pg_collation co ON co.oid = a.attcollation
     LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
     WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

pub const LAYOUT_OPTIONS: &str =
    "SELECT coalesce(array_to_string(reloptions, E'\\n'), '') FROM pg_class WHERE oid = $1::text::regclass";

pub const LAYOUT_INDEXES: &str = "SELECT i.indisunique, substr(d.def, strpos(d.def, ' USING ') + 7)
     FROM pg_index i, LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def) d
     WHERE i.indrelid = $1::text::regclass ORDER BY i.indexrelid";

pub const LAYOUT_CONSTRAINTS: &str = "SELECT quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint
     WHERE conrelid = $1::text::regclass AND contype IN ('c', 'f') ORDER BY conname";

/// The table that receives a compressed chunk's compressed rows on the target, named as TimescaleDB
/// names compressed chunks (`compress` + the chunk's name: `_hyper_1_1_chunk` →
/// `compress_hyper_1_1_chunk`, never one TimescaleDB makes, whose numbers are the compressed
/// hypertable's), shortened from the front to fit 63 bytes.
pub fn staging_name(target_chunk: &str) -> String {
    let (schema, table) = target_chunk.rsplit_once('.').unwrap_or(("_timescaledb_internal", target_chunk));
    let mut name = format!("compress{}", table.trim_matches('"'));
    while name.len() > 63 {
        name.remove(0);
    }
    format!("{schema}.{}", quote_ident(&name))
}

/// What to read of a compressed chunk's table: its columns, a compressed one's "all NULL" marker
/// block (TimescaleDB's NULL compression: its binary form has no receive, so COPY cannot load it)
/// as SQL NULL, which TimescaleDB reads the same way in a chunk without "missing" values — as a
/// chunk made afresh on the target is.
pub fn compressed_select_list(layout: &Layout) -> String {
    layout
        .columns
        .iter()
        .map(|c| {
            if c.type_sql.ends_with("compressed_data") {
                format!(
                    "CASE WHEN pg_column_size({n}) < 16 AND octet_length(_timescaledb_functions.compressed_data_send({n})) = 1 \
                     THEN NULL ELSE {n} END",
                    n = c.name
                )
            } else {
                c.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates the staging table of `layout` (columns, storage, statistics targets, options); the rows
/// are copied into it next, then [`staging_index_sql`] runs.
pub fn staging_table_sql(table: &str, layout: &Layout) -> Vec<String> {
    let columns: Vec<String> = layout
        .columns
        .iter()
        .map(|c| match &c.collation {
            Some(coll) => format!("{} {} COLLATE {coll}", c.name, c.type_sql),
            None => format!("{} {}", c.name, c.type_sql),
        })
        .collect();
    let with = if layout.options.is_empty() { String::new() } else { format!(" WITH ({})", layout.options.join(", ")) };
    let mut out =
        vec![format!("DROP TABLE IF EXISTS {table}"), format!("CREATE TABLE {table} ({}){with}", columns.join(", "))];
    let mut alter = Vec::new();
    for c in &layout.columns {
        let storage = match c.storage {
            'p' => "PLAIN",
            'e' => "EXTERNAL",
            'm' => "MAIN",
            _ => "EXTENDED",
        };
        alter.push(format!("ALTER COLUMN {} SET STORAGE {storage}", c.name));
        if c.statistics >= 0 {
            alter.push(format!("ALTER COLUMN {} SET STATISTICS {}", c.name, c.statistics));
        }
    }
    if !alter.is_empty() {
        out.push(format!("ALTER TABLE {table} {}", alter.join(", ")));
    }
    out
}

/// The indexes and constraints of the source's compressed table, on the filled staging table.
pub fn staging_index_sql(table: &str, layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = layout
        .indexes
        .iter()
        .map(|(unique, using)| format!("CREATE {}INDEX ON {table} USING {using}", if *unique { "UNIQUE " } else { "" }))
        .collect();
    out.extend(layout.constraints.iter().map(|(name, def)| format!("ALTER TABLE {table} ADD CONSTRAINT {name} {def}")));
    out
}

/// A chunk of the target to compress in the TimescaleDB stage, once compression is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToCompress {
    /// The hypertable (or materialization hypertable) on the target.
    pub hypertable: String,
    pub chunk: String,
    /// Its compressed rows, copied as they are: attached rather than compressed again.
    pub staged: Option<Staged>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub table: String,
    pub sizes: CompressionSizes,
}

/// What the data stage leaves for the TimescaleDB stage to compress (`compressed-chunks.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionWork {
    /// Chunks made with the source's slices: attached or compressed one by one.
    pub chunks: Vec<ToCompress>,
    /// Hypertables whose rows went through TimescaleDB's routing (the target's dimensions differ
    /// from the source's): compressed up to where the source's compressed chunks end.
    pub by_range: Vec<String>,
}

/// The statement that makes the chunk compressed: the staged table attached as its compressed part
/// (rows already in the chunk's own table make it partially compressed, as on the source), or
/// TimescaleDB compressing its rows again.
pub fn compress_sql(c: &ToCompress) -> String {
    match &c.staged {
        Some(s) => format!(
            "SELECT _timescaledb_functions.create_compressed_chunk({}::regclass, {}::regclass, {})",
            quote_literal(&c.chunk),
            quote_literal(&s.table),
            s.sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
        ),
        None => format!("SELECT compress_chunk({}::regclass, if_not_compressed => true)", quote_literal(&c.chunk)),
    }
}

/// Creates (or finds, on a rerun) the target's chunk with exactly these slices; returns its name and
/// whether this call created it.
pub const CREATE_CHUNK: &str = "SELECT format('%I.%I', schema_name, table_name), created
     FROM _timescaledb_functions.create_chunk($1::text::regclass, $2::text::jsonb)";

/// What a hypertable's dimensions are, for comparing two servers' (names, types, kinds, partition
/// counts, intervals). Where they agree, the target's chunks are made with the source's slices;
/// where they differ (a target partitioned on purpose another way) the rows follow the target's.
pub fn dimensions_sql(hypertable: &str) -> String {
    format!(
        "SELECT coalesce(string_agg(format('%s %s %s %s %s', d.column_name, d.column_type, d.dimension_type,
                                          coalesce(d.num_partitions::text, '-'),
                                          coalesce(d.time_interval::text, d.integer_interval::text, '-')),
                                   ', ' ORDER BY d.dimension_number), '')
         FROM timescaledb_information.dimensions d
         WHERE format('%I.%I', d.hypertable_schema, d.hypertable_name) = {}",
        quote_literal(hypertable)
    )
}

/// Every chunk of every hypertable (named as users name it: an aggregate's materialization by its
/// view), with its slices and whether it is compressed: `(hypertable, slices, chunk, compressed)`.
/// Two servers' chunks with the same hypertable and slices are the same chunk.
pub const CHUNK_STATES: &str = "SELECT coalesce((SELECT format('%I.%I', a.user_view_schema, a.user_view_name)
                 FROM _timescaledb_catalog.continuous_agg a WHERE a.mat_hypertable_id = h.id),
                format('%I.%I', h.schema_name, h.table_name)),
        (SELECT jsonb_object_agg(d.column_name, jsonb_build_array(ds.range_start, ds.range_end))
         FROM _timescaledb_catalog.chunk_constraint k
         JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = k.dimension_slice_id
         JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
         WHERE k.chunk_id = c.id)::text,
        format('%I.%I', c.schema_name, c.table_name), c.status & 1 = 1
     FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
     WHERE NOT c.dropped AND h.compression_state <> 2
     ORDER BY c.id";

/// One row of `CHUNK_STATES`.
pub type ChunkState = (String, String, String, bool);

/// The target's chunks whose compression differs from the same chunk's on the source, each with the
/// statement that makes it as the source's (compress, or decompress).
pub fn compression_to_match(source: &[ChunkState], target: &[ChunkState]) -> Vec<(String, String)> {
    let on_source: std::collections::HashMap<(&str, &str), bool> =
        source.iter().map(|(h, slices, _, compressed)| ((h.as_str(), slices.as_str()), *compressed)).collect();
    target
        .iter()
        .filter_map(|(h, slices, chunk, compressed)| {
            let wanted = *on_source.get(&(h.as_str(), slices.as_str()))?;
            (wanted != *compressed).then(|| {
                let f = if wanted { "compress_chunk" } else { "decompress_chunk" };
                let flag = if wanted { "if_not_compressed" } else { "if_compressed" };
                (chunk.clone(), format!("SELECT {f}({}::regclass, {flag} => true)", quote_literal(chunk)))
            })
        })
        .collect()
}

/// The target's chunks whose slices the source no longer has (dropped there since the copy: a
/// retention job, `drop_chunks`), each with its `DROP TABLE`. Only for a hypertable chunked alike on
/// both sides — every source chunk of it has a target chunk with the same slices — so a target
/// partitioned another way on purpose loses nothing.
pub fn dropped_on_source(source: &[ChunkState], target: &[ChunkState]) -> Vec<(String, String)> {
    use std::collections::HashSet;
    let on_source: HashSet<(&str, &str)> = source.iter().map(|(h, sl, _, _)| (h.as_str(), sl.as_str())).collect();
    let on_target: HashSet<(&str, &str)> = target.iter().map(|(h, sl, _, _)| (h.as_str(), sl.as_str())).collect();
    let alike = |h: &str| {
        source.iter().any(|(sh, _, _, _)| sh == h)
            && source
                .iter()
                .filter(|(sh, _, _, _)| sh == h)
                .all(|(sh, sl, _, _)| on_target.contains(&(sh.as_str(), sl.as_str())))
    };
    target
        .iter()
        .filter(|(h, sl, _, _)| !on_source.contains(&(h.as_str(), sl.as_str())) && alike(h))
        .map(|(_, _, chunk, _)| (chunk.clone(), format!("DROP TABLE {chunk}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_dropped_on_source_go_only_where_both_sides_chunk_alike() {
        let c = |h: &str, s: &str, chunk: &str| (h.to_string(), s.to_string(), chunk.to_string(), false);
        let source = [c("m", "b", "s2"), c("m", "c", "s3"), c("p", "x", "s9")];
        let target = [
            c("m", "a", "t1"), // dropped on the source
            c("m", "b", "t2"),
            c("m", "c", "t3"),
            c("p", "y", "t8"), // chunked otherwise on the target: kept
            c("q", "z", "t7"), // no chunk left on the source at all: kept (not known alike)
        ];
        assert_eq!(dropped_on_source(&source, &target), vec![("t1".to_string(), "DROP TABLE t1".to_string())]);
    }

    #[test]
    fn the_target_compresses_and_decompresses_what_the_source_did_since_the_copy() {
        let c = |h: &str, s: &str, chunk: &str, z: bool| (h.to_string(), s.to_string(), chunk.to_string(), z);
        let source =
            [c("m", "a", "s1", true), c("m", "b", "s2", false), c("m", "c", "s3", true), c("n", "a", "s4", true)];
        let target =
            [c("m", "a", "t1", false), c("m", "b", "t2", true), c("m", "c", "t3", true), c("m", "d", "t4", false)];
        assert_eq!(
            compression_to_match(&source, &target),
            vec![
                ("t1".to_string(), "SELECT compress_chunk('t1'::regclass, if_not_compressed => true)".to_string()),
                ("t2".to_string(), "SELECT decompress_chunk('t2'::regclass, if_compressed => true)".to_string()),
            ]
        );
    }

    fn layout() -> Layout {
        Layout {
            columns: vec![
                LayoutColumn {
                    name: "_ts_meta_count".into(),
                    type_sql: "integer".into(),
                    storage: 'p',
                    statistics: 1000,
                    collation: None,
                },
                LayoutColumn {
                    name: "\"time\"".into(),
                    type_sql: "_timescaledb_internal.compressed_data".into(),
                    storage: 'e',
                    statistics: 0,
                    collation: None,
                },
                LayoutColumn {
                    name: "site".into(),
                    type_sql: "text".into(),
                    storage: 'x',
                    statistics: -1,
                    collation: Some("pg_catalog.\"C\"".into()),
                },
            ],
            options: vec!["toast_tuple_target=128".into()],
            indexes: vec![(false, "btree (site, _ts_meta_min_1 DESC, _ts_meta_max_1 DESC)".into())],
            constraints: vec![],
        }
    }

    #[test]
    fn the_staging_table_has_the_source_layout() {
        let t = "_timescaledb_internal.compress_hyper_1_5_chunk";
        let sql = staging_table_sql(t, &layout());
        assert_eq!(sql[0], format!("DROP TABLE IF EXISTS {t}"));
        assert_eq!(
            sql[1],
            format!(
                "CREATE TABLE {t} (_ts_meta_count integer, \"time\" _timescaledb_internal.compressed_data, \
                 site text COLLATE pg_catalog.\"C\") WITH (toast_tuple_target=128)"
            )
        );
        assert_eq!(
            sql[2],
            format!(
                "ALTER TABLE {t} ALTER COLUMN _ts_meta_count SET STORAGE PLAIN, ALTER COLUMN _ts_meta_count SET \
                 STATISTICS 1000, ALTER COLUMN \"time\" SET STORAGE EXTERNAL, ALTER COLUMN \"time\" SET STATISTICS 0, \
                 ALTER COLUMN site SET STORAGE EXTENDED"
            )
        );
        assert_eq!(
            staging_index_sql(t, &layout()),
            [format!("CREATE INDEX ON {t} USING btree (site, _ts_meta_min_1 DESC, _ts_meta_max_1 DESC)")]
        );
    }

    #[test]
    fn an_all_null_block_is_read_as_sql_null() {
        let select = compressed_select_list(&layout());
        assert_eq!(
            select,
            "_ts_meta_count, CASE WHEN pg_column_size(\"time\") < 16 AND \
             octet_length(_timescaledb_functions.compressed_data_send(\"time\")) = 1 THEN NULL ELSE \"time\" END, site"
        );
    }

    #[test]
    fn staging_names_follow_timescaledb_and_fit() {
        assert_eq!(
            staging_name("_timescaledb_internal._hyper_1_5_chunk"),
            "_timescaledb_internal.compress_hyper_1_5_chunk"
        );
        let long = format!("_timescaledb_internal.{}", "x".repeat(60));
        let name = staging_name(&long);
        assert_eq!(name.len(), "_timescaledb_internal.".len() + 63);
        assert!(name.ends_with(&"x".repeat(55)));
    }

    #[test]
    fn a_staged_chunk_is_attached_and_another_compressed_again() {
        let staged = ToCompress {
            hypertable: "metrics.readings".into(),
            chunk: "_timescaledb_internal._hyper_1_5_chunk".into(),
            staged: Some(Staged {
                table: "_timescaledb_internal.compress_hyper_1_5_chunk".into(),
                sizes: [1, 2, 3, 4, 5, 6, 5760, 20],
            }),
        };
        assert_eq!(
            compress_sql(&staged),
            "SELECT _timescaledb_functions.create_compressed_chunk('_timescaledb_internal._hyper_1_5_chunk'::regclass, \
             '_timescaledb_internal.compress_hyper_1_5_chunk'::regclass, 1, 2, 3, 4, 5, 6, 5760, 20)"
        );
        let again = ToCompress { staged: None, ..staged };
        assert_eq!(
            compress_sql(&again),
            "SELECT compress_chunk('_timescaledb_internal._hyper_1_5_chunk'::regclass, if_not_compressed => true)"
        );
    }
}

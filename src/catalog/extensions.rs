//! TimescaleDB and pgvector: the classes that exist only where those extensions are installed.
//! TimescaleDB objects are read from `timescaledb_information`, pgvector objects from the catalog.

use serde::{Deserialize, Serialize};

use super::class::Class;
use super::queries::TS_SCHEMAS;

/// What the TimescaleDB extension says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimescaleInfo {
    pub version: String,
    /// `apache` (community features only) or `timescale` (compression, continuous aggregates, jobs).
    pub license: String,
}

pub const TIMESCALE_VERSION: &str =
    "SELECT e.extversion, coalesce(current_setting('timescaledb.license', true), 'unknown')
    FROM pg_extension e WHERE e.extname = 'timescaledb'";

pub const VECTOR_VERSION: &str = "SELECT e.extversion FROM pg_extension e WHERE e.extname = 'vector'";

/// A TimescaleDB internal time value (`value`, bigint) as text: a time for time types (microseconds
/// since the Unix epoch inside TimescaleDB, `-infinity`/`infinity` at the ends), the number itself
/// for integer time. `ty` is the column's regtype. Both servers print it alike (UTC, ISO).
pub fn internal_time(value: &str, ty: &str) -> String {
    format!(
        "CASE WHEN {value} IS NULL THEN NULL
              WHEN {ty} NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN {value}::text
              WHEN {value} = -9223372036854775808 THEN '-infinity'
              WHEN {value} = 9223372036854775807 THEN 'infinity'
              ELSE (timestamptz 'epoch' + {value} * interval '1 microsecond')::text END"
    )
}

/// A chunk (alias `c` of `_timescaledb_catalog.chunk`) named by its slices in dimension order,
/// the same on any server that holds the same chunk: `time [2026-01-01 00:00:00+00, 2026-01-02
/// 00:00:00+00), pipe partition [0, 715827882)`.
fn chunk_label() -> String {
    format!(
        "(SELECT string_agg(CASE WHEN d.interval_length IS NOT NULL
                  THEN format('%s [%s, %s)', quote_ident(d.column_name), {start}, {end})
                  ELSE format('%s partition [%s, %s)', quote_ident(d.column_name), ds.range_start, ds.range_end) END,
                ', ' ORDER BY d.id)
          FROM _timescaledb_catalog.chunk_constraint k
          JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = k.dimension_slice_id
          JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
          WHERE k.chunk_id = c.id)",
        start = internal_time("ds.range_start", "d.column_type"),
        end = internal_time("ds.range_end", "d.column_type")
    )
}

/// The chunks of user hypertables and of continuous aggregates' materializations (not those of
/// compressed hypertables, nor dropped ones whose metadata an aggregate keeps), as (hypertable as
/// users name it, chunk label, chunk relation, compressed, partially compressed).
pub fn chunks_query() -> String {
    format!(
        "SELECT coalesce((SELECT format('%I.%I', ca.user_view_schema, ca.user_view_name)
                          FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id),
                         format('%I.%I', h.schema_name, h.table_name)),
                {label}, format('%I.%I', c.schema_name, c.table_name), c.status & 1 = 1, c.status & 8 = 8
         FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
         WHERE NOT c.dropped
           AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable p WHERE p.compressed_hypertable_id = h.id)
         ORDER BY 1, c.id",
        label = chunk_label()
    )
}

/// Continuous aggregates' materialization hypertables: view, relation, quoted columns. Not those of
/// aggregates in TimescaleDB's old (not finalized) form, whose materialization holds partial
/// states no newer TimescaleDB makes: they are refreshed on the target, and compared through
/// their views.
pub const MATERIALIZATIONS: &str = "SELECT format('%I.%I', a.view_schema, a.view_name),
        format('%I.%I', a.materialization_hypertable_schema, a.materialization_hypertable_name),
        coalesce(array_agg(quote_ident(att.attname::text) ORDER BY att.attnum), '{}')
     FROM timescaledb_information.continuous_aggregates a
     LEFT JOIN pg_attribute att ON att.attrelid = format('%I.%I', a.materialization_hypertable_schema,
                                                        a.materialization_hypertable_name)::regclass
                              AND att.attnum > 0 AND NOT att.attisdropped
     WHERE (to_jsonb(a) ->> 'finalized') IS DISTINCT FROM 'false'
     GROUP BY 1, 2 ORDER BY 1";

/// Queries returning `(name, definition)` for the TimescaleDB classes.
pub fn timescale_query(class: Class) -> Option<String> {
    Some(match class {
        Class::Hypertables => format!(
            r#"SELECT {ht},
                 coalesce((SELECT string_agg(format('%s dimension %s (%s)%s%s', lower(d.dimension_type), quote_ident(d.column_name),
                               d.column_type, coalesce(' every ' || d.time_interval::text, ' every ' || d.integer_interval::text, ''),
                               coalesce(' in ' || d.num_partitions || ' partitions', '')), E'\n' ORDER BY d.dimension_number)
                           FROM timescaledb_information.dimensions d
                           WHERE d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name), '')
                 || E'\ncompression ' || CASE WHEN h.compression_enabled THEN 'enabled' ELSE 'disabled' END
               FROM timescaledb_information.hypertables h"#,
            ht = super::queries::user_hypertable_sql("h.hypertable_schema", "h.hypertable_name")
        ),
        Class::CompressionSettings => format!(
            r#"SELECT {ht},
                 concat_ws('; ',
                   'segment by ' || coalesce(string_agg(quote_ident(s.attname), ', ' ORDER BY s.segmentby_column_index)
                                             FILTER (WHERE s.segmentby_column_index IS NOT NULL), '(none)'),
                   'order by ' || coalesce(string_agg(quote_ident(s.attname)
                                  || CASE WHEN s.orderby_asc THEN ' ASC' ELSE ' DESC' END
                                  || CASE WHEN s.orderby_nullsfirst THEN ' NULLS FIRST' ELSE ' NULLS LAST' END,
                                  ', ' ORDER BY s.orderby_column_index) FILTER (WHERE s.orderby_column_index IS NOT NULL), '(none)'))
               FROM timescaledb_information.compression_settings s
               GROUP BY s.hypertable_schema, s.hypertable_name"#,
            ht = super::queries::user_hypertable_sql("s.hypertable_schema", "s.hypertable_name")
        ),
        // with what a reader cannot see: how far it is refreshed (watermark, the aggregated
        // hypertable's invalidation threshold, ranges waiting for a refresh) and its indexes
        Class::ContinuousAggregates => format!(
            r#"SELECT format('%I.%I', a.view_schema, a.view_name),
                 format('on %s, materialized_only %s, compression %s', {ht}, a.materialized_only, a.compression_enabled)
                 || E'\n' || a.view_definition
                 || E'\nrefreshed up to ' || coalesce({watermark}, 'never')
                 || ', invalidation threshold ' || coalesce({threshold}, 'none')
                 || ', ' || ((SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
                              WHERE l.materialization_id = ca.mat_hypertable_id)
                           + (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l
                              WHERE l.hypertable_id = ca.raw_hypertable_id)) || ' invalidated range(s)'
                 || E'\nindexes: ' || coalesce((SELECT string_agg(substr(x.def, strpos(x.def, ' USING ') + 7), '; ' ORDER BY 1)
                              FROM pg_index i, LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def) x
                              WHERE i.indrelid = format('%I.%I', a.materialization_hypertable_schema,
                                                        a.materialization_hypertable_name)::regclass), 'none')
               FROM timescaledb_information.continuous_aggregates a
               JOIN _timescaledb_catalog.continuous_agg ca
                 ON ca.user_view_schema = a.view_schema AND ca.user_view_name = a.view_name
               LEFT JOIN _timescaledb_catalog.continuous_aggs_watermark w ON w.mat_hypertable_id = ca.mat_hypertable_id
               LEFT JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold t ON t.hypertable_id = ca.raw_hypertable_id
               LEFT JOIN _timescaledb_catalog.dimension md ON md.hypertable_id = ca.mat_hypertable_id
               LEFT JOIN _timescaledb_catalog.dimension rd ON rd.hypertable_id = ca.raw_hypertable_id AND rd.interval_length IS NOT NULL"#,
            ht = super::queries::user_hypertable_sql("a.hypertable_schema", "a.hypertable_name"),
            watermark = internal_time("w.watermark", "md.column_type"),
            threshold = internal_time("t.watermark", "rd.column_type"),
        ),
        // one per chunk, named by its slices: the same chunks, compressed alike on both sides
        Class::Chunks => format!(
            "SELECT h || ' ' || coalesce(label, '(no slices)'), CASE WHEN compressed THEN 'compressed' ELSE 'uncompressed' END
             FROM ({}) x(h, label, rel, compressed, partial)",
            chunks_query()
        ),
        // Job ids and the internal hypertable ids in a job's config follow creation order: a job is
        // named by its procedure and hypertable, its config compared without those ids.
        Class::Jobs => format!(
            r#"SELECT format('%I.%I on %s', j.proc_schema, j.proc_name, coalesce({ht}, 'no hypertable'))
                 || CASE WHEN count(*) OVER w > 1 THEN ' #' || row_number() OVER w ELSE '' END,
                 format('every %s, %s, owner %s, max runtime %s, %s retries every %s%s%s%s, config %s', j.schedule_interval,
                        CASE WHEN j.scheduled THEN 'scheduled' ELSE 'paused' END, j.owner, j.max_runtime,
                        j.max_retries, j.retry_period,
                        CASE WHEN j.fixed_schedule THEN ', fixed schedule from ' || coalesce(j.initial_start::text, '-')
                             ELSE ', drifting schedule' END,
                        coalesce(', time zone ' || (SELECT to_jsonb(b) ->> 'timezone' FROM _timescaledb_config.bgw_job b
                                                   WHERE b.id = j.job_id), ''),
                        CASE WHEN j.check_name IS NOT NULL THEN format(', checked by %I.%I', j.check_schema, j.check_name) ELSE '' END,
                        coalesce((j.config - 'hypertable_id' - 'mat_hypertable_id')::text, '{{}}'))
               FROM timescaledb_information.jobs j
               WHERE j.job_id >= 1000
               WINDOW w AS (PARTITION BY j.proc_schema, j.proc_name, j.hypertable_schema, j.hypertable_name
                            ORDER BY j.schedule_interval, j.config::text)"#,
            ht = super::queries::user_hypertable_sql("j.hypertable_schema", "j.hypertable_name")
        ),
        _ => return None,
    })
}

/// Chunks and on-disk bytes per hypertable (its own relation is empty), compressed parts included
/// (the bytes order the copy and size its progress). A chunk dropped since the snapshot (a
/// retention job) counts 0 rather than failing.
pub const HYPERTABLE_CHUNKS: &str = "SELECT format('%I.%I', h.hypertable_schema, h.hypertable_name), h.num_chunks,
        (SELECT coalesce(sum(coalesce(pg_total_relation_size(to_regclass(format('%I.%I', c.schema_name, c.table_name))), 0)
                             + coalesce(CASE WHEN cc.id IS NOT NULL THEN pg_total_relation_size(to_regclass(format('%I.%I', cc.schema_name, cc.table_name))) END, 0)), 0)::bigint
         FROM _timescaledb_catalog.chunk c
         JOIN _timescaledb_catalog.hypertable hh ON hh.id = c.hypertable_id
         LEFT JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
         WHERE hh.schema_name = h.hypertable_schema AND hh.table_name = h.hypertable_name AND NOT c.dropped)
     FROM timescaledb_information.hypertables h";

/// Continuous aggregates are views in user schemas; this lists them so the views class leaves them
/// out (from the catalog table, alike in every TimescaleDB 2.x, as `user_hypertable_sql`).
pub const CAGG_VIEWS: &str =
    "SELECT format('%I.%I', user_view_schema, user_view_name) FROM _timescaledb_catalog.continuous_agg";

/// Hypertables, whose rows live in chunks and are counted through the hypertable itself.
pub const HYPERTABLE_NAMES: &str =
    "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables";

/// Queries returning `(name, definition)` for the pgvector classes.
pub fn vector_query(class: Class) -> Option<String> {
    Some(match class {
        Class::VectorColumns => {
            format!(
                r#"SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname), format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_type t ON t.oid = a.atttypid
               JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'vector'
               WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm')
                 AND n.nspname !~ '^pg_toast' AND n.nspname !~ '{TS_SCHEMAS}'"#
            )
        }
        Class::VectorIndexes => {
            format!(
                r#"SELECT format('%I.%I', n.nspname, ic.relname),
                 format('%s on %s (%s) operator class %s%s', am.amname, i.indrelid::regclass,
                        pg_get_indexdef(i.indexrelid, 1, true), opc.opcname,
                        coalesce(' with ' || array_to_string(ic.reloptions, ', '), ''))
               FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = ic.relnamespace
               JOIN pg_am am ON am.oid = ic.relam
               JOIN pg_opclass opc ON opc.oid = i.indclass[0]
               WHERE am.amname IN ('hnsw', 'ivfflat') AND n.nspname !~ '^pg_toast' AND n.nspname !~ '{TS_SCHEMAS}'"#
            )
        }
        _ => return None,
    })
}

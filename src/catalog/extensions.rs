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

/// A hypertable's name as users know it: a continuous aggregate's materialization hypertable
/// (`_timescaledb_internal._materialized_hypertable_N`, numbered by creation order) is named by
/// its aggregate's view.
fn user_hypertable(schema: &str, name: &str) -> String {
    format!(
        "CASE WHEN {name} IS NULL THEN NULL ELSE coalesce(
            (SELECT format('%I.%I', m.view_schema, m.view_name) FROM timescaledb_information.continuous_aggregates m
             WHERE m.materialization_hypertable_schema = {schema} AND m.materialization_hypertable_name = {name}),
            format('%I.%I', {schema}, {name})) END"
    )
}

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
            ht = user_hypertable("h.hypertable_schema", "h.hypertable_name")
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
            ht = user_hypertable("s.hypertable_schema", "s.hypertable_name")
        ),
        Class::ContinuousAggregates => format!(
            r#"SELECT format('%I.%I', a.view_schema, a.view_name),
                 format('on %s, materialized_only %s, compression %s', {ht}, a.materialized_only, a.compression_enabled)
                 || E'\n' || a.view_definition
               FROM timescaledb_information.continuous_aggregates a"#,
            ht = user_hypertable("a.hypertable_schema", "a.hypertable_name")
        ),
        // Job ids and the internal hypertable ids in a job's config follow creation order: a job is
        // named by its procedure and hypertable, its config compared without those ids.
        Class::Jobs => format!(
            r#"SELECT format('%I.%I on %s', j.proc_schema, j.proc_name, coalesce({ht}, 'no hypertable'))
                 || CASE WHEN count(*) OVER w > 1 THEN ' #' || row_number() OVER w ELSE '' END,
                 format('every %s, %s, config %s', j.schedule_interval,
                        CASE WHEN j.scheduled THEN 'scheduled' ELSE 'paused' END,
                        coalesce((j.config - 'hypertable_id' - 'mat_hypertable_id')::text, '{{}}'))
               FROM timescaledb_information.jobs j
               WHERE j.job_id >= 1000
               WINDOW w AS (PARTITION BY j.proc_schema, j.proc_name, j.hypertable_schema, j.hypertable_name
                            ORDER BY j.schedule_interval, j.config::text)"#,
            ht = user_hypertable("j.hypertable_schema", "j.hypertable_name")
        ),
        _ => return None,
    })
}

/// Chunks per hypertable (information only: a different chunk history is not a loss).
/// Chunks and on-disk bytes per hypertable (its own relation is empty). Through the information
/// views, whose schema is fixed: `hypertable_size()` lives in the extension's schema, which the
/// collecting session's `search_path = pg_catalog` does not see. A chunk dropped since the snapshot
/// (a retention job) counts 0 rather than failing; compressed chunks count their uncompressed
/// part only (the bytes order the copy and size its progress, nothing more).
pub const HYPERTABLE_CHUNKS: &str = "SELECT format('%I.%I', h.hypertable_schema, h.hypertable_name), h.num_chunks,
        (SELECT coalesce(sum(pg_total_relation_size(to_regclass(format('%I.%I', c.chunk_schema, c.chunk_name)))), 0)::bigint
         FROM timescaledb_information.chunks c
         WHERE c.hypertable_schema = h.hypertable_schema AND c.hypertable_name = h.hypertable_name)
     FROM timescaledb_information.hypertables h";

/// Continuous aggregates are views in user schemas; this lists them so the views class leaves them out.
pub const CAGG_VIEWS: &str =
    "SELECT format('%I.%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates";

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

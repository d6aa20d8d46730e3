//! Continuous aggregates recreated with their history: the view is created empty before the data
//! (in dependency order: an aggregate on an aggregate after it), its materialized rows are copied
//! by the data stage like any hypertable's, and then its indexes and the state its refreshes
//! reached are written as the source has them — the invalidation threshold (keyed by the aggregated
//! hypertable), the watermark, and both invalidation logs. Without that state the first refresh on
//! the target would redo the whole window (and drop the buckets whose raw rows are gone).

use serde::{Deserialize, Serialize};

use super::features::{CompressionSetting, ContinuousAggregate, Features};
use crate::postgres::sql::quote_literal;

/// The statements that create the source's aggregates, empty, on a target whose hypertables exist:
/// each with its `materialized_only`, its materialization's chunk interval, no default indexes (the
/// source's own are created after the data) and its owner.
pub fn create_statements(f: &Features) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in f.caggs_in_dependency_order() {
        let body = a.definition.trim().trim_end_matches(';');
        let mut with = vec![
            "timescaledb.continuous".to_string(),
            format!("timescaledb.materialized_only = {}", a.materialized_only),
            "timescaledb.create_group_indexes = false".to_string(),
        ];
        if let Some(i) = &a.chunk_interval {
            with.push(format!("timescaledb.chunk_time_interval = {}", quote_literal(i)));
        }
        out.push((
            format!("continuous aggregate {}", a.view),
            format!("CREATE MATERIALIZED VIEW {} WITH ({}) AS {body} WITH NO DATA", a.view, with.join(", ")),
        ));
        if let Some(owner) = &a.owner {
            out.push((format!("owner of {}", a.view), format!("ALTER MATERIALIZED VIEW {} OWNER TO {owner}", a.view)));
        }
    }
    out
}

/// Compression settings, in TimescaleDB's API: `ALTER TABLE` for a hypertable, `ALTER MATERIALIZED
/// VIEW` for an aggregate (whose materialization must exist).
pub fn compression_statements(settings: &[CompressionSetting]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|c| {
            let mut opts =
                vec![if c.cagg { "timescaledb.compress = true".to_string() } else { "timescaledb.compress".into() }];
            if !c.segment_by.is_empty() {
                opts.push(format!("timescaledb.compress_segmentby = {}", quote_literal(&c.segment_by.join(", "))));
            }
            if !c.order_by.is_empty() {
                opts.push(format!("timescaledb.compress_orderby = {}", quote_literal(&c.order_by.join(", "))));
            }
            let what = if c.cagg { "MATERIALIZED VIEW" } else { "TABLE" };
            (
                format!("compression settings of {}", c.hypertable),
                format!("ALTER {what} {} SET ({})", c.hypertable, opts.join(", ")),
            )
        })
        .collect()
}

/// An index of an aggregate's materialization on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaggIndex {
    pub view: String,
    /// Its name; TimescaleDB's own indexes are named after the materialization table.
    pub name: String,
    pub unique: bool,
    /// What follows `USING`: `btree (device_id, bucket DESC)`.
    pub using: String,
}

/// Every index of every aggregate's materialization, with the view it belongs to.
pub const CAGG_INDEXES: &str = "SELECT format('%I.%I', a.view_schema, a.view_name), ic.relname::text, i.indisunique,
        substr(d.def, strpos(d.def, ' USING ') + 7), a.materialization_hypertable_name::text
     FROM timescaledb_information.continuous_aggregates a
     JOIN pg_index i ON i.indrelid = format('%I.%I', a.materialization_hypertable_schema, a.materialization_hypertable_name)::regclass
     JOIN pg_class ic ON ic.oid = i.indexrelid,
     LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def) d
     ORDER BY 1, 2";

/// `CREATE INDEX` for each source index on the target's materialization (`view` → its
/// materialization there). TimescaleDB's names keep its pattern with the target's table name.
pub fn index_statements(
    indexes: &[(CaggIndex, String)],
    target_materialization: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (ix, source_table) in indexes {
        let Some(target) = target_materialization(&ix.view) else { continue };
        let target_table = target.rsplit_once('.').map(|(_, t)| t.trim_matches('"')).unwrap_or(&target);
        let name = match ix.name.strip_prefix(source_table.as_str()) {
            Some(rest) => format!("{target_table}{rest}"),
            None => ix.name.clone(),
        };
        out.push((
            format!("index {name} of {}", ix.view),
            format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {target} USING {}",
                if ix.unique { "UNIQUE " } else { "" },
                crate::postgres::sql::quote_ident(&name),
                ix.using
            ),
        ));
    }
    out
}

/// How far the source's refreshes got, in TimescaleDB's internal time (microseconds since the Unix
/// epoch for time types; the value itself for integer time). Hypertables are named as users name
/// them (an aggregate's materialization by its view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    /// Per aggregate: the end of what is materialized (real-time aggregates read raw rows above it).
    pub watermarks: Vec<(String, i64)>,
    /// Per aggregated hypertable: below it, changes are logged as invalidations.
    pub thresholds: Vec<(String, i64)>,
    /// Per aggregated hypertable: ranges changed below the threshold, not yet moved to aggregates.
    pub hypertable_log: Vec<(String, i64, i64)>,
    /// Per aggregate: ranges to refresh again.
    pub materialization_log: Vec<(String, i64, i64)>,
}

impl RefreshState {
    /// The state the server's refreshes reached (read on a source).
    pub async fn read(client: &tokio_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        let pairs = |sql: String| async move {
            client.query(&sql, &[]).await.map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        };
        let triples = |sql: String| async move {
            client.query(&sql, &[]).await.map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
        };
        Ok(Self {
            watermarks: pairs(watermarks_sql()).await?,
            thresholds: pairs(thresholds_sql()).await?,
            hypertable_log: triples(hypertable_log_sql()).await?,
            materialization_log: triples(materialization_log_sql()).await?,
        })
    }
}

/// A hypertable's catalog id named as users name it.
const USER_NAME: &str = "coalesce((SELECT format('%I.%I', ca.user_view_schema, ca.user_view_name)
      FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id), format('%I.%I', h.schema_name, h.table_name))";

pub fn watermarks_sql() -> String {
    "SELECT format('%I.%I', ca.user_view_schema, ca.user_view_name), w.watermark
     FROM _timescaledb_catalog.continuous_agg ca
     JOIN _timescaledb_catalog.continuous_aggs_watermark w ON w.mat_hypertable_id = ca.mat_hypertable_id"
        .into()
}

pub fn thresholds_sql() -> String {
    format!(
        "SELECT {USER_NAME}, t.watermark FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold t
         JOIN _timescaledb_catalog.hypertable h ON h.id = t.hypertable_id"
    )
}

pub fn hypertable_log_sql() -> String {
    format!(
        "SELECT {USER_NAME}, l.lowest_modified_value, l.greatest_modified_value
         FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l
         JOIN _timescaledb_catalog.hypertable h ON h.id = l.hypertable_id
         ORDER BY 1, 2, 3"
    )
}

pub fn materialization_log_sql() -> String {
    "SELECT format('%I.%I', ca.user_view_schema, ca.user_view_name), l.lowest_modified_value, l.greatest_modified_value
     FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
     JOIN _timescaledb_catalog.continuous_agg ca ON ca.mat_hypertable_id = l.materialization_id
     ORDER BY 1, 2, 3"
        .into()
}

/// The target's catalog id of a hypertable named as users name it.
fn hypertable_id(name: &str) -> String {
    let lit = quote_literal(name);
    format!(
        "coalesce((SELECT ca.mat_hypertable_id FROM _timescaledb_catalog.continuous_agg ca
                   WHERE format('%I.%I', ca.user_view_schema, ca.user_view_name) = {lit}),
                  (SELECT h.id FROM _timescaledb_catalog.hypertable h WHERE format('%I.%I', h.schema_name, h.table_name) = {lit}))"
    )
}

fn materialization_id(view: &str) -> String {
    format!(
        "(SELECT ca.mat_hypertable_id FROM _timescaledb_catalog.continuous_agg ca
          WHERE format('%I.%I', ca.user_view_schema, ca.user_view_name) = {})",
        quote_literal(view)
    )
}

/// Rows of ranges as a VALUES list, in batches of at most 1,000.
fn ranges(rows: &[(i64, i64)]) -> Vec<String> {
    rows.chunks(1000).map(|b| b.iter().map(|(lo, hi)| format!("({lo}, {hi})")).collect::<Vec<_>>().join(", ")).collect()
}

/// The refreshes of the aggregates in TimescaleDB's old (not finalized) form, `(view, CALL ...)`:
/// their materialization holds partial states no newer TimescaleDB makes, so the target's is
/// refreshed from its raw rows instead of copied (or replicated).
pub fn old_form_refreshes(aggs: &[ContinuousAggregate]) -> Vec<(String, String)> {
    aggs.iter()
        .filter(|a| !a.finalized)
        .map(|a| (a.view.clone(), format!("CALL refresh_continuous_aggregate({}, NULL, NULL)", quote_literal(&a.view))))
        .collect()
}

/// What the DBA is told about such a refresh.
pub fn old_form_warning(view: &str) -> String {
    format!(
        "{view} is a continuous aggregate in TimescaleDB's old (not finalized) form: refreshed from its raw rows on \
         the target; buckets whose raw rows were dropped on the source are not kept"
    )
}

/// The statements that give the target's aggregates of `aggs` the source's refresh state, replacing
/// what creating them (and loading their hypertables) logged there.
pub fn state_statements(aggs: &[ContinuousAggregate], state: &RefreshState) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut hypertables: Vec<&str> = aggs.iter().map(|a| a.source.as_str()).collect();
    hypertables.sort_unstable();
    hypertables.dedup();
    for ht in hypertables {
        let id = hypertable_id(ht);
        let mut sql = format!(
            "DELETE FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold WHERE hypertable_id = {id};
             DELETE FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log WHERE hypertable_id = {id};"
        );
        if let Some((_, w)) = state.thresholds.iter().find(|(h, _)| h == ht) {
            sql.push_str(&format!(
                "\nINSERT INTO _timescaledb_catalog.continuous_aggs_invalidation_threshold (hypertable_id, watermark) VALUES ({id}, {w});"
            ));
        }
        let log: Vec<(i64, i64)> =
            state.hypertable_log.iter().filter(|(h, _, _)| h == ht).map(|(_, lo, hi)| (*lo, *hi)).collect();
        for values in ranges(&log) {
            sql.push_str(&format!(
                "\nINSERT INTO _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log
                   (hypertable_id, lowest_modified_value, greatest_modified_value)
                 SELECT {id}, lo, hi FROM (VALUES {values}) v(lo, hi);"
            ));
        }
        out.push((format!("invalidation threshold and log of {ht}"), sql));
    }
    for a in aggs {
        let id = materialization_id(&a.view);
        let mut sql = format!(
            "DELETE FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log WHERE materialization_id = {id};
             DELETE FROM _timescaledb_catalog.continuous_aggs_watermark WHERE mat_hypertable_id = {id};"
        );
        if let Some((_, w)) = state.watermarks.iter().find(|(v, _)| v == &a.view) {
            sql.push_str(&format!(
                "\nINSERT INTO _timescaledb_catalog.continuous_aggs_watermark (mat_hypertable_id, watermark) VALUES ({id}, {w});"
            ));
        }
        let log: Vec<(i64, i64)> =
            state.materialization_log.iter().filter(|(v, _, _)| v == &a.view).map(|(_, lo, hi)| (*lo, *hi)).collect();
        for values in ranges(&log) {
            sql.push_str(&format!(
                "\nINSERT INTO _timescaledb_catalog.continuous_aggs_materialization_invalidation_log
                   (materialization_id, lowest_modified_value, greatest_modified_value)
                 SELECT {id}, lo, hi FROM (VALUES {values}) v(lo, hi);"
            ));
        }
        out.push((format!("watermark and invalidations of {}", a.view), sql));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(view: &str, source: &str) -> ContinuousAggregate {
        ContinuousAggregate {
            view: view.into(),
            source: source.into(),
            definition: format!(
                " SELECT time_bucket('1 day'::interval, bucket) AS day\n   FROM {source}\n  GROUP BY 1;"
            ),
            materialized_only: true,
            materialization: "_timescaledb_internal._materialized_hypertable_6".into(),
            owner: Some("pgshift_ingest".into()),
            chunk_interval: Some("10 days".into()),
            finalized: true,
        }
    }

    #[test]
    fn only_old_form_aggregates_are_refreshed_from_raw_rows() {
        let old = ContinuousAggregate { finalized: false, ..agg("m.legacy", "m.readings") };
        let r = old_form_refreshes(&[agg("m.hourly", "m.readings"), old]);
        assert_eq!(
            r,
            vec![("m.legacy".to_string(), "CALL refresh_continuous_aggregate('m.legacy', NULL, NULL)".to_string())]
        );
    }

    #[test]
    fn aggregates_are_created_empty_in_dependency_order_with_their_owner() {
        let f = Features {
            continuous_aggregates: vec![agg("m.daily", "m.hourly"), agg("m.hourly", "m.readings")],
            ..Default::default()
        };
        let s: Vec<String> = create_statements(&f).into_iter().map(|(_, sql)| sql).collect();
        assert!(s[0].starts_with("CREATE MATERIALIZED VIEW m.hourly WITH (timescaledb.continuous, timescaledb.materialized_only = true, \
             timescaledb.create_group_indexes = false, timescaledb.chunk_time_interval = '10 days') AS SELECT"), "{}", s[0]);
        assert!(s[0].ends_with("GROUP BY 1 WITH NO DATA"), "{}", s[0]);
        assert_eq!(s[1], "ALTER MATERIALIZED VIEW m.hourly OWNER TO pgshift_ingest");
        assert!(s[2].starts_with("CREATE MATERIALIZED VIEW m.daily "), "{}", s[2]);
    }

    #[test]
    fn compression_of_an_aggregate_goes_through_its_view() {
        let s = compression_statements(&[
            CompressionSetting {
                hypertable: "m.readings".into(),
                segment_by: vec!["device_id".into()],
                order_by: vec!["\"time\" DESC".into()],
                cagg: false,
            },
            CompressionSetting {
                hypertable: "m.hourly".into(),
                segment_by: vec!["device_id".into()],
                order_by: vec!["bucket".into()],
                cagg: true,
            },
        ]);
        assert_eq!(
            s[0].1,
            "ALTER TABLE m.readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', \
             timescaledb.compress_orderby = '\"time\" DESC')"
        );
        assert_eq!(
            s[1].1,
            "ALTER MATERIALIZED VIEW m.hourly SET (timescaledb.compress = true, timescaledb.compress_segmentby = 'device_id', \
             timescaledb.compress_orderby = 'bucket')"
        );
    }

    #[test]
    fn indexes_keep_their_names_on_the_target_materialization() {
        let ix = |name: &str, using: &str| {
            (
                CaggIndex { view: "m.hourly".into(), name: name.into(), unique: false, using: using.into() },
                "_materialized_hypertable_5".to_string(),
            )
        };
        let target =
            |v: &str| (v == "m.hourly").then(|| "_timescaledb_internal._materialized_hypertable_2".to_string());
        let s = index_statements(
            &[
                ix("_materialized_hypertable_5_device_id_bucket_idx", "btree (device_id, bucket DESC)"),
                ix("hourly_max_idx", "btree (max_value)"),
            ],
            &target,
        );
        assert_eq!(
            s[0].1,
            "CREATE INDEX IF NOT EXISTS _materialized_hypertable_2_device_id_bucket_idx ON \
             _timescaledb_internal._materialized_hypertable_2 USING btree (device_id, bucket DESC)"
        );
        assert_eq!(
            s[1].1,
            "CREATE INDEX IF NOT EXISTS hourly_max_idx ON _timescaledb_internal._materialized_hypertable_2 USING btree (max_value)"
        );
    }

    #[test]
    fn the_refresh_state_replaces_the_targets_and_is_keyed_by_name() {
        let aggs = [agg("m.hourly", "m.readings"), agg("m.daily", "m.hourly")];
        let state = RefreshState {
            watermarks: vec![("m.hourly".into(), 1769558400000000), ("m.daily".into(), 1769299200000000)],
            thresholds: vec![("m.readings".into(), 1769558400000000)],
            hypertable_log: vec![("m.readings".into(), 5, 6)],
            materialization_log: vec![
                ("m.hourly".into(), i64::MIN, -210866803200000001),
                ("m.hourly".into(), 1769558400000000, i64::MAX),
            ],
        };
        let s = state_statements(&aggs, &state);
        assert_eq!(s.len(), 4, "two aggregated hypertables, two aggregates: {s:#?}");
        let hourly_ht = &s.iter().find(|(w, _)| w == "invalidation threshold and log of m.hourly").unwrap().1;
        assert!(
            hourly_ht.contains("DELETE FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold"),
            "{hourly_ht}"
        );
        assert!(!hourly_ht.contains("INSERT"), "no threshold on the source: none on the target: {hourly_ht}");
        let readings = &s.iter().find(|(w, _)| w == "invalidation threshold and log of m.readings").unwrap().1;
        assert!(readings.contains("VALUES (coalesce((SELECT ca.mat_hypertable_id"), "{readings}");
        assert!(readings.contains("= 'm.readings'"));
        assert!(readings.contains(", 1769558400000000);") && readings.contains("(VALUES (5, 6))"), "{readings}");
        let hourly = &s.iter().find(|(w, _)| w == "watermark and invalidations of m.hourly").unwrap().1;
        assert!(
            hourly.contains(&format!("({}, -210866803200000001), (1769558400000000, {})", i64::MIN, i64::MAX)),
            "{hourly}"
        );
        assert!(hourly
            .contains("continuous_aggs_watermark (mat_hypertable_id, watermark) VALUES ((SELECT ca.mat_hypertable_id"));
    }
}

//! Stage 6a — TimescaleDB, version-independent: what the source's TimescaleDB catalog says is
//! recreated on the target through TimescaleDB's documented API — compression settings (segment by,
//! order by), continuous aggregates (definition, `materialized_only`, created after the data and
//! refreshed), compression, retention, reorder and refresh policies, user jobs — and the chunks that
//! were compressed on the source are compressed again. Hypertables themselves are created by the
//! schema stage, before the data. None of this runs under the Apache license: the license
//! pre-flight refuses such a migration before anything is written.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::catalog;
use crate::conn::ConnSpec;
use crate::engine::{Stage, StageContext, StageError};
use crate::error::UserError;
use crate::plan::HypertablePlan;
use crate::stages::schema::quote_literal;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionSetting {
    pub hypertable: String,
    pub segment_by: Vec<String>,
    /// `col`, `col DESC`, `col NULLS FIRST`, ...
    pub order_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuousAggregate {
    pub view: String,
    pub definition: String,
    pub materialized_only: bool,
    /// Its internal materialization hypertable on the source (jobs refer to it).
    pub materialization: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `_timescaledb_functions.policy_compression`, or a user procedure.
    pub proc: String,
    pub hypertable: Option<String>,
    pub schedule_interval: String,
    pub config: serde_json::Value,
}

/// Everything TimescaleDB-specific a source holds beyond its hypertables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub compression: Vec<CompressionSetting>,
    pub continuous_aggregates: Vec<ContinuousAggregate>,
    pub jobs: Vec<Job>,
    /// Per hypertable, the end of the newest chunk that was compressed on the source.
    pub compressed_until: Vec<(String, String)>,
}

impl Features {
    pub fn is_empty(&self) -> bool {
        self.compression.is_empty() && self.continuous_aggregates.is_empty() && self.jobs.is_empty()
    }

    /// What needs the Timescale License (compression, continuous aggregates, jobs and policies).
    pub fn licensed(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.compression.is_empty() {
            v.push(format!("compression on {} hypertable(s)", self.compression.len()));
        }
        if !self.continuous_aggregates.is_empty() {
            v.push(format!("{} continuous aggregate(s)", self.continuous_aggregates.len()));
        }
        if !self.jobs.is_empty() {
            v.push(format!("{} policy/job(s)", self.jobs.len()));
        }
        v
    }
}

/// Whether the database has the timescaledb extension.
pub async fn has_timescaledb(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let row = client.query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", &[]).await?;
    Ok(row.get(0))
}

/// The database's hypertables as `schema.table` (quoted where needed); none without TimescaleDB.
pub async fn hypertables(client: &Client) -> Result<std::collections::BTreeSet<String>, tokio_postgres::Error> {
    if !has_timescaledb(client).await? {
        return Ok(Default::default());
    }
    let rows = client
        .query(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads the source's TimescaleDB features (an empty set without TimescaleDB).
pub async fn read_features(client: &Client) -> Result<Features, UserError> {
    let q = |what: &str, e: tokio_postgres::Error| {
        UserError::new(format!("reading the source's {what}: {}", catalog::db_message(&e)), "connect as a superuser")
    };
    if !has_timescaledb(client).await.map_err(|e| q("extensions", e))? {
        return Ok(Features::default());
    }
    let mut f = Features::default();
    let rows = client
        .query(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name), quote_ident(attname::text),
                    segmentby_column_index, orderby_column_index, orderby_asc, orderby_nullsfirst
             FROM timescaledb_information.compression_settings
             ORDER BY 1, segmentby_column_index NULLS LAST, orderby_column_index NULLS LAST",
            &[],
        )
        .await
        .map_err(|e| q("compression settings", e))?;
    for r in rows {
        let table: String = r.get(0);
        if f.compression.last().map(|c| &c.hypertable) != Some(&table) {
            f.compression.push(CompressionSetting { hypertable: table, ..Default::default() });
        }
        let c = f.compression.last_mut().expect("just pushed");
        let col: String = r.get(1);
        if r.get::<_, Option<i16>>(2).is_some() {
            c.segment_by.push(col.clone());
        }
        if r.get::<_, Option<i16>>(3).is_some() {
            let asc: Option<bool> = r.get(4);
            let nulls_first: Option<bool> = r.get(5);
            c.order_by.push(order_term(&col, asc.unwrap_or(true), nulls_first.unwrap_or(false)));
        }
    }
    for r in client
        .query(
            "SELECT format('%I.%I', view_schema, view_name), view_definition, materialized_only,
                    format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
             FROM timescaledb_information.continuous_aggregates ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| q("continuous aggregates", e))?
    {
        f.continuous_aggregates.push(ContinuousAggregate {
            view: r.get(0),
            definition: r.get(1),
            materialized_only: r.get(2),
            materialization: r.get(3),
        });
    }
    for r in client
        .query(
            "SELECT format('%I.%I', proc_schema, proc_name), schedule_interval::text, config::text,
                    CASE WHEN hypertable_name IS NOT NULL THEN format('%I.%I', hypertable_schema, hypertable_name) END
             FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id",
            &[],
        )
        .await
        .map_err(|e| q("jobs", e))?
    {
        let config: Option<String> = r.get(2);
        f.jobs.push(Job {
            proc: r.get(0),
            schedule_interval: r.get(1),
            config: config.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(serde_json::Value::Null),
            hypertable: r.get(3),
        });
    }
    for r in client
        .query(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name), max(range_end)::text
             FROM timescaledb_information.chunks WHERE is_compressed AND range_end IS NOT NULL GROUP BY 1",
            &[],
        )
        .await
        .map_err(|e| q("compressed chunks", e))?
    {
        f.compressed_until.push((r.get(0), r.get(1)));
    }
    Ok(f)
}

fn order_term(col: &str, asc: bool, nulls_first: bool) -> String {
    let mut t = col.to_string();
    if !asc {
        t.push_str(" DESC");
    }
    // PostgreSQL's defaults: NULLS LAST for ASC, NULLS FIRST for DESC
    if nulls_first == asc {
        t.push_str(if nulls_first { " NULLS FIRST" } else { " NULLS LAST" });
    }
    t
}

/// `'7 days'` from a job config value: an interval string, or an integer for integer time.
fn interval_arg(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("INTERVAL {}", quote_literal(s)),
        serde_json::Value::Number(n) => n.to_string(),
        _ => "NULL".into(),
    }
}

/// The statements that recreate `f` on a target whose hypertables exist and hold the data, in
/// order: compression settings, continuous aggregates and their first refresh, policies and jobs,
/// compression of the chunks compressed on the source. Each with what it does, for messages.
pub fn statements(f: &Features, compress_chunks: bool) -> Vec<(String, String)> {
    // a continuous aggregate's own materialization hypertable is named through its view
    let view_of =
        |name: &str| f.continuous_aggregates.iter().find(|a| a.materialization == name).map(|a| a.view.clone());
    let mut out = Vec::new();
    for c in f.compression.iter().filter(|c| view_of(&c.hypertable).is_some()) {
        let view = view_of(&c.hypertable).expect("filtered");
        out.push((
            format!("compression of continuous aggregate {view}"),
            format!("ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true)"),
        ));
    }
    for c in f.compression.iter().filter(|c| view_of(&c.hypertable).is_none()) {
        let mut opts = vec!["timescaledb.compress".to_string()];
        if !c.segment_by.is_empty() {
            opts.push(format!("timescaledb.compress_segmentby = {}", quote_literal(&c.segment_by.join(", "))));
        }
        if !c.order_by.is_empty() {
            opts.push(format!("timescaledb.compress_orderby = {}", quote_literal(&c.order_by.join(", "))));
        }
        out.push((
            format!("compression settings of {}", c.hypertable),
            format!("ALTER TABLE {} SET ({})", c.hypertable, opts.join(", ")),
        ));
    }
    for a in &f.continuous_aggregates {
        let body = a.definition.trim().trim_end_matches(';');
        out.push((
            format!("continuous aggregate {}", a.view),
            format!(
                "CREATE MATERIALIZED VIEW {} WITH (timescaledb.continuous, timescaledb.materialized_only = {}) AS {body} WITH NO DATA",
                a.view, a.materialized_only
            ),
        ));
        out.push((
            format!("first refresh of {}", a.view),
            format!("CALL refresh_continuous_aggregate({}, NULL, NULL)", quote_literal(&a.view)),
        ));
    }
    for j in &f.jobs {
        let cfg = |k: &str| j.config.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let every = format!("schedule_interval => INTERVAL {}", quote_literal(&j.schedule_interval));
        let target = j.hypertable.clone().unwrap_or_default();
        let cagg = view_of(&target);
        let sql = match j.proc.rsplit('.').next().unwrap_or("") {
            "policy_compression" => format!(
                "SELECT add_compression_policy({}, compress_after => {}, {every})",
                quote_literal(cagg.as_ref().unwrap_or(&target)),
                interval_arg(&cfg("compress_after"))
            ),
            "policy_retention" => format!(
                "SELECT add_retention_policy({}, drop_after => {}, {every})",
                quote_literal(cagg.as_ref().unwrap_or(&target)),
                interval_arg(&cfg("drop_after"))
            ),
            "policy_reorder" => format!(
                "SELECT add_reorder_policy({}, {})",
                quote_literal(&target),
                quote_literal(cfg("index_name").as_str().unwrap_or(""))
            ),
            "policy_refresh_continuous_aggregate" => format!(
                "SELECT add_continuous_aggregate_policy({}, start_offset => {}, end_offset => {}, {every})",
                quote_literal(cagg.as_ref().unwrap_or(&target)),
                interval_arg(&cfg("start_offset")),
                interval_arg(&cfg("end_offset"))
            ),
            _ => format!(
                "SELECT add_job({}::regproc, INTERVAL {}, config => {}::jsonb)",
                quote_literal(&j.proc),
                quote_literal(&j.schedule_interval),
                quote_literal(&j.config.to_string())
            ),
        };
        out.push((format!("job {}", j.proc), sql));
    }
    if compress_chunks {
        for (table, until) in &f.compressed_until {
            let table = &view_of(table).unwrap_or_else(|| table.clone());
            out.push((
                format!("compression of {table}'s chunks up to {until}"),
                format!(
                    "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks({}, older_than => {}::timestamptz) c",
                    quote_literal(table),
                    quote_literal(until)
                ),
            ));
        }
    }
    out
}

pub struct TimescaleStage {
    source: ConnSpec,
    target: ConnSpec,
    compress_chunks: bool,
    planned: Vec<HypertablePlan>,
}

impl TimescaleStage {
    pub fn new(source: ConnSpec, target: ConnSpec, compress_chunks: bool, planned: Vec<HypertablePlan>) -> Self {
        Self { source, target, compress_chunks, planned }
    }
}

/// Adds the plan's compression requests (for tables it turns into hypertables) to `f`.
pub fn with_planned(mut f: Features, planned: &[HypertablePlan]) -> Features {
    let split = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|t| t.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    };
    for h in planned.iter().filter(|h| h.licensed().is_some()) {
        f.compression.push(CompressionSetting {
            hypertable: h.table.clone(),
            segment_by: split(&h.segment_by),
            order_by: split(&h.order_by),
        });
        if let Some(after) = &h.compress_after {
            f.jobs.push(Job {
                proc: "_timescaledb_functions.policy_compression".into(),
                hypertable: Some(h.table.clone()),
                schedule_interval: "12:00:00".into(),
                config: serde_json::json!({ "compress_after": after }),
            });
        }
    }
    f
}

impl Stage for TimescaleStage {
    fn id(&self) -> &'static str {
        "timescaledb"
    }

    fn title(&self) -> &'static str {
        "TimescaleDB: compression, continuous aggregates, policies and jobs"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let source = ctx.tagged(&self.source).connect().await?;
            let f = with_planned(read_features(&source).await?, &self.planned);
            if f.is_empty() {
                return Ok("no compression, continuous aggregates or jobs on the source".into());
            }
            let target = ctx.tagged(&self.target).connect().await?;
            let all = statements(&f, self.compress_chunks);
            for (what, sql) in &all {
                ctx.info("timescaledb", format!("{what}: {sql}")).await;
                target.batch_execute(sql).await.map_err(|e| {
                    catalog::failed_query(
                        &self.target,
                        &format!("{what} failed on the target"),
                        &e,
                        "check the target's TimescaleDB version and license (pgshift env status)",
                    )
                })?;
            }
            Ok(format!("{} statement(s): {}", all.len(), f.licensed().join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_follow_the_documented_api() {
        let f = Features {
            compression: vec![CompressionSetting {
                hypertable: "energy.readings".into(),
                segment_by: vec!["device_id".into()],
                order_by: vec![order_term("\"time\"", false, true)],
            }],
            continuous_aggregates: vec![ContinuousAggregate {
                view: "energy.hourly".into(),
                definition: " SELECT time_bucket('01:00:00'::interval, \"time\") AS bucket, avg(value) AS avg\n   FROM energy.readings\n  GROUP BY 1;".into(),
                materialized_only: true,
                materialization: "_timescaledb_internal._materialized_hypertable_2".into(),
            }],
            jobs: vec![
                Job {
                    proc: "_timescaledb_functions.policy_compression".into(),
                    hypertable: Some("energy.readings".into()),
                    schedule_interval: "12:00:00".into(),
                    config: serde_json::json!({"hypertable_id": 1, "compress_after": "7 days"}),
                },
                Job {
                    proc: "_timescaledb_functions.policy_refresh_continuous_aggregate".into(),
                    hypertable: Some("_timescaledb_internal._materialized_hypertable_2".into()),
                    schedule_interval: "01:00:00".into(),
                    config: serde_json::json!({"mat_hypertable_id": 2, "start_offset": "1 mon", "end_offset": null}),
                },
                Job {
                    proc: "energy.archive".into(),
                    hypertable: None,
                    schedule_interval: "1 day".into(),
                    config: serde_json::json!({"keep": 30}),
                },
            ],
            compressed_until: vec![("energy.readings".into(), "2026-01-08 00:00:00+00".into())],
        };
        let s: Vec<String> = statements(&f, true).into_iter().map(|(_, sql)| sql).collect();
        assert_eq!(
            s[0],
            "ALTER TABLE energy.readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', \
             timescaledb.compress_orderby = '\"time\" DESC')"
        );
        assert!(s[1].starts_with("CREATE MATERIALIZED VIEW energy.hourly WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS SELECT time_bucket"));
        assert!(s[1].ends_with("GROUP BY 1 WITH NO DATA"), "{}", s[1]);
        assert_eq!(s[2], "CALL refresh_continuous_aggregate('energy.hourly', NULL, NULL)");
        assert_eq!(s[3], "SELECT add_compression_policy('energy.readings', compress_after => INTERVAL '7 days', schedule_interval => INTERVAL '12:00:00')");
        assert_eq!(
            s[4],
            "SELECT add_continuous_aggregate_policy('energy.hourly', start_offset => INTERVAL '1 mon', end_offset => NULL, schedule_interval => INTERVAL '01:00:00')"
        );
        assert_eq!(
            s[5],
            "SELECT add_job('energy.archive'::regproc, INTERVAL '1 day', config => '{\"keep\":30}'::jsonb)"
        );
        assert!(
            s[6].contains("compress_chunk(c, if_not_compressed => true)")
                && s[6].contains("older_than => '2026-01-08 00:00:00+00'")
        );
        assert_eq!(f.licensed().len(), 3);
    }

    #[test]
    fn a_continuous_aggregate_is_named_through_its_view() {
        let mat = "_timescaledb_internal._materialized_hypertable_2".to_string();
        let f = Features {
            compression: vec![CompressionSetting { hypertable: mat.clone(), ..Default::default() }],
            continuous_aggregates: vec![ContinuousAggregate {
                view: "energy.hourly".into(),
                definition: "SELECT 1".into(),
                materialized_only: false,
                materialization: mat.clone(),
            }],
            jobs: vec![Job {
                proc: "_timescaledb_functions.policy_compression".into(),
                hypertable: Some(mat.clone()),
                schedule_interval: "1 day".into(),
                config: serde_json::json!({"compress_after": "30 days"}),
            }],
            compressed_until: vec![(mat, "2026-01-01 00:00:00+00".into())],
        };
        let all: Vec<String> = statements(&f, true).into_iter().map(|(_, sql)| sql).collect();
        assert!(all.iter().all(|s| !s.contains("_materialized_hypertable")), "{all:#?}");
        assert!(all.contains(&"ALTER MATERIALIZED VIEW energy.hourly SET (timescaledb.compress = true)".to_string()));
        assert!(all.iter().any(|s| s.starts_with("SELECT add_compression_policy('energy.hourly'")));
    }

    #[test]
    fn order_terms_state_only_what_differs_from_the_default() {
        assert_eq!(order_term("t", true, false), "t");
        assert_eq!(order_term("t", true, true), "t NULLS FIRST");
        assert_eq!(order_term("t", false, true), "t DESC");
        assert_eq!(order_term("t", false, false), "t DESC NULLS LAST");
    }
}

//! What a source's TimescaleDB holds beyond its hypertables' dimensions: compression settings,
//! continuous aggregates, jobs and policies, and how far its chunks were compressed. Read from
//! `timescaledb_information` (and, for a job's time zone, its catalog row), named as users name
//! things: a continuous aggregate's materialization hypertable by its view.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::installed::has_timescaledb;
use crate::catalog;
use crate::catalog::queries::user_hypertable_sql;
use crate::error::UserError;
use crate::plan::HypertablePlan;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionSetting {
    /// The hypertable, or the continuous aggregate's view for its materialization.
    pub hypertable: String,
    pub segment_by: Vec<String>,
    /// `col`, `col DESC`, `col NULLS FIRST`, ...
    pub order_by: Vec<String>,
    /// The settings of a continuous aggregate (set with ALTER MATERIALIZED VIEW).
    #[serde(default)]
    pub cagg: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContinuousAggregate {
    pub view: String,
    pub definition: String,
    pub materialized_only: bool,
    /// Its internal materialization hypertable on the source.
    pub materialization: String,
    /// What it aggregates: a hypertable, or (hierarchical) another aggregate's view.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub owner: Option<String>,
    /// The materialization's chunk interval (`10 days`).
    #[serde(default)]
    pub chunk_interval: Option<String>,
    /// Finalized form (every aggregate made by TimescaleDB 2.7 and later); the old partial form
    /// cannot be recreated.
    #[serde(default = "yes")]
    pub finalized: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The source's job id (for messages; the target's differs).
    #[serde(default)]
    pub id: i32,
    /// `_timescaledb_functions.policy_compression`, or a user procedure.
    pub proc: String,
    /// The hypertable or continuous aggregate a policy works on.
    pub hypertable: Option<String>,
    pub schedule_interval: String,
    pub config: serde_json::Value,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub max_runtime: Option<String>,
    #[serde(default)]
    pub max_retries: Option<i32>,
    #[serde(default)]
    pub retry_period: Option<String>,
    #[serde(default = "yes")]
    pub scheduled: bool,
    #[serde(default)]
    pub fixed_schedule: Option<bool>,
    #[serde(default)]
    pub initial_start: Option<String>,
    /// When the source would run it next (a paused job has none).
    #[serde(default)]
    pub next_start: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The procedure that checks its config, `schema.name`.
    #[serde(default)]
    pub check: Option<String>,
}

/// Everything TimescaleDB-specific a source holds beyond its hypertables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub compression: Vec<CompressionSetting>,
    pub continuous_aggregates: Vec<ContinuousAggregate>,
    pub jobs: Vec<Job>,
    /// Per hypertable (or aggregate), the end of the newest chunk that was compressed on the
    /// source: what a target whose chunks differ from the source's compresses up to.
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

    /// The aggregates in an order each can be created in: one built on another aggregate
    /// (hierarchical) after it.
    pub fn caggs_in_dependency_order(&self) -> Vec<&ContinuousAggregate> {
        let mut done: Vec<&ContinuousAggregate> = Vec::new();
        let mut left: Vec<&ContinuousAggregate> = self.continuous_aggregates.iter().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|a| {
                let waits = self.continuous_aggregates.iter().any(|p| p.view == a.source)
                    && !done.iter().any(|d| d.view == a.source);
                if !waits {
                    done.push(a);
                }
                waits
            });
            if left.len() == before {
                done.append(&mut left); // a cycle cannot exist; keep whatever remains in its order
            }
        }
        done
    }

    pub fn cagg(&self, view: &str) -> Option<&ContinuousAggregate> {
        self.continuous_aggregates.iter().find(|a| a.view == view)
    }
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
            &format!(
                "SELECT {ht}, quote_ident(s.attname::text), s.segmentby_column_index, s.orderby_column_index,
                        s.orderby_asc, s.orderby_nullsfirst, s.hypertable_schema = '_timescaledb_internal'
                 FROM timescaledb_information.compression_settings s
                 ORDER BY 1, s.segmentby_column_index NULLS LAST, s.orderby_column_index NULLS LAST",
                ht = user_hypertable_sql("s.hypertable_schema", "s.hypertable_name")
            ),
            &[],
        )
        .await
        .map_err(|e| q("compression settings", e))?;
    for r in rows {
        let table: String = r.get(0);
        if f.compression.last().map(|c| &c.hypertable) != Some(&table) {
            f.compression.push(CompressionSetting { hypertable: table, cagg: r.get(6), ..Default::default() });
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
    f.continuous_aggregates = read_aggregates(client).await?;
    for r in client
        .query(
            &format!(
                "SELECT j.job_id, format('%I.%I', j.proc_schema, j.proc_name), j.schedule_interval::text, j.config::text,
                        {ht}, j.owner::text, j.max_runtime::text, j.max_retries, j.retry_period::text, j.scheduled,
                        j.fixed_schedule, j.initial_start::text, j.next_start::text,
                        (SELECT to_jsonb(b) ->> 'timezone' FROM _timescaledb_config.bgw_job b WHERE b.id = j.job_id),
                        CASE WHEN j.check_name IS NOT NULL THEN format('%I.%I', j.check_schema, j.check_name) END
                 FROM timescaledb_information.jobs j WHERE j.job_id >= 1000 ORDER BY j.job_id",
                ht = user_hypertable_sql("j.hypertable_schema", "j.hypertable_name")
            ),
            &[],
        )
        .await
        .map_err(|e| q("jobs", e))?
    {
        let config: Option<String> = r.get(3);
        f.jobs.push(Job {
            id: r.get(0),
            proc: r.get(1),
            schedule_interval: r.get(2),
            config: config.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(serde_json::Value::Null),
            hypertable: r.get(4),
            owner: r.get(5),
            max_runtime: r.get(6),
            max_retries: r.get(7),
            retry_period: r.get(8),
            scheduled: r.get::<_, Option<bool>>(9).unwrap_or(true),
            fixed_schedule: r.get(10),
            initial_start: r.get(11),
            next_start: r.get(12),
            timezone: r.get(13),
            check: r.get(14),
        });
    }
    for r in client
        .query(
            &format!(
                "SELECT {ht}, max(c.range_end)::text FROM timescaledb_information.chunks c
                 WHERE c.is_compressed AND c.range_end IS NOT NULL GROUP BY 1",
                ht = user_hypertable_sql("c.hypertable_schema", "c.hypertable_name")
            ),
            &[],
        )
        .await
        .map_err(|e| q("compressed chunks", e))?
    {
        f.compressed_until.push((r.get(0), r.get(1)));
    }
    Ok(f)
}

/// The source's continuous aggregates, by view name (none without TimescaleDB).
pub async fn read_aggregates(client: &Client) -> Result<Vec<ContinuousAggregate>, UserError> {
    let q = |what: &str, e: tokio_postgres::Error| {
        UserError::new(format!("reading the source's {what}: {}", catalog::db_message(&e)), "connect as a superuser")
    };
    let mut aggregates = Vec::new();
    if !has_timescaledb(client).await.map_err(|e| q("extensions", e))? {
        return Ok(aggregates);
    }
    for r in client
        .query(
            &format!(
                "SELECT format('%I.%I', a.view_schema, a.view_name), a.view_definition, a.materialized_only,
                        format('%I.%I', a.materialization_hypertable_schema, a.materialization_hypertable_name),
                        {raw}, quote_ident(a.view_owner::text), (to_jsonb(a) ->> 'finalized')::bool,
                        (SELECT d.time_interval::text FROM timescaledb_information.dimensions d
                         WHERE d.hypertable_schema = a.materialization_hypertable_schema
                           AND d.hypertable_name = a.materialization_hypertable_name AND d.dimension_number = 1)
                 FROM timescaledb_information.continuous_aggregates a ORDER BY 1",
                raw = user_hypertable_sql("a.hypertable_schema", "a.hypertable_name")
            ),
            &[],
        )
        .await
        .map_err(|e| q("continuous aggregates", e))?
    {
        aggregates.push(ContinuousAggregate {
            view: r.get(0),
            definition: r.get(1),
            materialized_only: r.get(2),
            materialization: r.get(3),
            source: r.get(4),
            owner: r.get(5),
            finalized: r.get::<_, Option<bool>>(6).unwrap_or(true),
            chunk_interval: r.get(7),
        });
    }
    Ok(aggregates)
}

pub fn order_term(col: &str, asc: bool, nulls_first: bool) -> String {
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
            cagg: false,
        });
        if let Some(after) = &h.compress_after {
            f.jobs.push(Job {
                proc: "_timescaledb_functions.policy_compression".into(),
                hypertable: Some(h.table.clone()),
                schedule_interval: "12:00:00".into(),
                config: serde_json::json!({ "compress_after": after }),
                scheduled: true,
                ..Default::default()
            });
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_terms_state_only_what_differs_from_the_default() {
        assert_eq!(order_term("t", true, false), "t");
        assert_eq!(order_term("t", true, true), "t NULLS FIRST");
        assert_eq!(order_term("t", false, true), "t DESC");
        assert_eq!(order_term("t", false, false), "t DESC NULLS LAST");
    }

    #[test]
    fn an_aggregate_on_an_aggregate_comes_after_it() {
        let agg = |view: &str, source: &str| ContinuousAggregate {
            view: view.into(),
            source: source.into(),
            ..Default::default()
        };
        // alphabetical order would create the daily one (on the hourly one) first
        let f = Features {
            continuous_aggregates: vec![
                agg("m.a_daily", "m.b_hourly"),
                agg("m.b_hourly", "m.readings"),
                agg("m.c_weekly", "m.a_daily"),
                agg("m.events_daily", "m.events"),
            ],
            ..Default::default()
        };
        let order: Vec<&str> = f.caggs_in_dependency_order().iter().map(|a| a.view.as_str()).collect();
        assert_eq!(order, ["m.b_hourly", "m.events_daily", "m.a_daily", "m.c_weekly"]);
    }
}

//! TimescaleDB as pgshift reads it on the source and recreates it on the target: through
//! TimescaleDB's documented API where it has one (hypertables, compression settings, continuous
//! aggregates, policies, jobs), and through its catalog where it has none (a compressed chunk copied
//! as it is, the refresh state of a continuous aggregate). Pure planning (`statements`-style
//! functions) is kept apart from the few queries that feed it, so the plans are unit-tested.

pub mod caggs;
pub mod chunks;
pub mod features;
pub mod jobs;

use std::collections::BTreeSet;

use tokio_postgres::Client;

pub use features::{read_features, with_planned, CompressionSetting, ContinuousAggregate, Features, Job};

/// Whether the database has the timescaledb extension.
pub async fn has_timescaledb(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let row = client.query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", &[]).await?;
    Ok(row.get(0))
}

/// The installed TimescaleDB version (`2.19.3`), if any.
pub async fn version(client: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client.query_opt("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The database's user hypertables as `schema.table` (quoted where needed), without continuous
/// aggregates' materializations; none without TimescaleDB.
pub async fn hypertables(client: &Client) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    if !has_timescaledb(client).await? {
        return Ok(Default::default());
    }
    let rows = client
        .query(
            "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables
             WHERE hypertable_schema <> '_timescaledb_internal'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// SQL for a hypertable's name as users know it: a continuous aggregate's materialization
/// hypertable (`_timescaledb_internal._materialized_hypertable_N`, numbered by creation order, so
/// different on each server) is named by its aggregate's view.
pub fn user_hypertable_sql(schema: &str, name: &str) -> String {
    format!(
        "CASE WHEN {name} IS NULL THEN NULL ELSE coalesce(
            (SELECT format('%I.%I', m.view_schema, m.view_name) FROM timescaledb_information.continuous_aggregates m
             WHERE m.materialization_hypertable_schema = {schema} AND m.materialization_hypertable_name = {name}),
            format('%I.%I', {schema}, {name})) END"
    )
}

/// The materialization hypertable of each continuous aggregate: view → `schema.table`.
pub async fn materializations(
    client: &Client,
) -> Result<std::collections::BTreeMap<String, String>, tokio_postgres::Error> {
    if !has_timescaledb(client).await? {
        return Ok(Default::default());
    }
    let rows = client
        .query(
            "SELECT format('%I.%I', view_schema, view_name),
                    format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
             FROM timescaledb_information.continuous_aggregates",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

//! What a database has of TimescaleDB: whether the extension is there, its version, its user
//! hypertables and the materialization hypertable of each continuous aggregate.

use std::collections::BTreeSet;

use tokio_postgres::Client;

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

//! What a server offers, read over a normal connection: its version, and whether TimescaleDB
//! (with its license and preload) and pgvector can be created there; and the warnings a DBA
//! should hear about a target before migrating onto it.

use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::postgres::conn::ConnSpec;

/// What the target server offers, read over a normal connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerReport {
    pub connection: String,
    pub version: String,
    pub version_num: i32,
    /// Installable TimescaleDB version (`pg_available_extensions`), if any.
    pub timescaledb_available: Option<String>,
    /// `timescaledb` is in `shared_preload_libraries` (it must be, to be created); None when this
    /// role may not read the setting.
    pub timescaledb_preloaded: Option<bool>,
    /// `apache` or `timescale`, as a session with the extension sees it; None when unknown.
    pub timescaledb_license: Option<String>,
    pub vector_available: Option<String>,
}

impl ServerReport {
    pub fn summary(&self) -> String {
        let short = self.version.split(" on ").next().unwrap_or(&self.version);
        let ts = match (&self.timescaledb_available, self.timescaledb_preloaded, &self.timescaledb_license) {
            (Some(v), _, Some(l)) => format!("TimescaleDB {v} ({l} license)"),
            (Some(v), Some(false), _) => format!("TimescaleDB {v} (not preloaded)"),
            (Some(v), _, None) => format!("TimescaleDB {v} (license unknown)"),
            (None, _, _) => "no TimescaleDB".into(),
        };
        let vector = match &self.vector_available {
            Some(v) => format!("pgvector {v}"),
            None => "no pgvector".into(),
        };
        format!("{short}, {ts}, {vector}")
    }
}

pub async fn check_server(spec: &ConnSpec) -> Result<ServerReport, UserError> {
    let client = spec.connect().await?;
    let fail = |e: tokio_postgres::Error| {
        UserError::new(
            format!("{} {}: {}", spec.role, spec.label(), crate::catalog::db_message(&e)),
            "check that it is a PostgreSQL server you may query",
        )
    };
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version_num')::int,
                    (SELECT 'timescaledb' = ANY (string_to_array(replace(setting, ' ', ''), ','))
                     FROM pg_settings WHERE name = 'shared_preload_libraries'),
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')",
            &[],
        )
        .await
        .map_err(fail)?;
    let mut report = ServerReport {
        connection: spec.label(),
        version: row.get(0),
        version_num: row.get(1),
        timescaledb_preloaded: row.get(2),
        timescaledb_license: None,
        timescaledb_available: row.get(3),
        vector_available: row.get(4),
    };
    if report.timescaledb_preloaded != Some(false) && report.timescaledb_available.is_some() {
        report.timescaledb_license = license_probe(&client).await;
    }
    Ok(report)
}

/// The license a session with TimescaleDB sees: its setting exists only once the extension's
/// library is loaded, so the extension is created inside a transaction that is rolled back.
async fn license_probe(client: &tokio_postgres::Client) -> Option<String> {
    client.batch_execute("BEGIN; CREATE EXTENSION IF NOT EXISTS timescaledb").await.ok()?;
    let license = client
        .query_one("SELECT current_setting('timescaledb.license', true)", &[])
        .await
        .ok()
        .and_then(|r| r.get::<_, Option<String>>(0));
    let _ = client.batch_execute("ROLLBACK").await;
    license
}

/// Warnings a DBA should see about a target before migrating onto it.
pub fn report_warnings(r: &ServerReport) -> Vec<String> {
    let mut w = Vec::new();
    if r.timescaledb_available.is_none() {
        w.push("the target has no TimescaleDB extension available: hypertables cannot be created".to_string());
    } else if r.timescaledb_preloaded == Some(false) {
        w.push("TimescaleDB is installed but not in shared_preload_libraries: add it and restart".to_string());
    } else if r.timescaledb_license.as_deref() == Some("apache") {
        w.push(
            "TimescaleDB runs the Apache-only build: compression, continuous aggregates and policies are unavailable \
             (use the Timescale-licensed image for them)"
                .to_string(),
        );
    }
    if r.vector_available.is_none() {
        w.push(
            "the target has no pgvector extension available: vector columns and indexes cannot be created".to_string(),
        );
    }
    w
}

//! What an online migration needs of the source, checked before anything is written: logical
//! decoding, a free slot and WAL sender, the REPLICATION right, a replica identity on every table
//! the publication will hold (else the application's own UPDATE and DELETE fail once it exists),
//! TimescaleDB's compression markers, and no slot left by an earlier run. Read only.

use tokio_postgres::Client;

use crate::catalog::{db_message, queries};
use crate::error::UserError;
use crate::postgres::conn::ConnSpec;

/// The first problem found, as one line with its fix; `Ok` with notes a DBA should read (jobs that
/// will run during the catch-up).
pub async fn check(source: &ConnSpec, own_slot: Option<&str>) -> Result<Vec<String>, UserError> {
    let c = source.connect().await?;
    let label = source.label();
    let one = |sql: &'static str| {
        let c = &c;
        let label = &label;
        async move {
            c.query_one(sql, &[]).await.map_err(|e| {
                UserError::new(
                    format!("source {label}: the online pre-flight could not read the server ({})", db_message(&e)),
                    "check the source",
                )
            })
        }
    };
    let wal_level: String = one("SELECT current_setting('wal_level')").await?.get(0);
    if wal_level != "logical" {
        return Err(UserError::new(
            format!("source {label}: wal_level is {wal_level}; an online migration needs logical decoding"),
            "ALTER SYSTEM SET wal_level = logical on the source and restart it (or run without --online)",
        ));
    }
    let row = one(
        "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, \
                (SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user), \
                (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
    )
    .await?;
    let (slots, senders, replication, superuser): (i32, i32, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if slots < 1 {
        return Err(UserError::new(
            format!("source {label}: every replication slot is taken (max_replication_slots)"),
            "raise max_replication_slots on the source (a restart), or drop a slot no longer used",
        ));
    }
    if senders < 1 {
        return Err(UserError::new(
            format!("source {label}: every WAL sender is busy (max_wal_senders)"),
            "raise max_wal_senders on the source (a restart)",
        ));
    }
    if !replication {
        return Err(UserError::new(
            format!(
                "source {label}: role {} may not open a replication connection",
                source.config.get_user().unwrap_or("?")
            ),
            "ALTER ROLE ... REPLICATION on the source (or connect as a superuser)",
        ));
    }
    let (slots, pubs) = crate::online::slot::leftovers(source).await?;
    if let Some(s) = slots.iter().chain(pubs.iter()).find(|s| Some(s.as_str()) != own_slot) {
        return Err(UserError::new(
            format!(
                "source {label}: {s} was left by an earlier pgshift run (a slot keeps WAL on the source until dropped)"
            ),
            "drop it with pgshift online abort --plan FILE (or resume the run that made it)",
        ));
    }
    let timescaledb = has_timescaledb(&c).await;
    if timescaledb && !superuser {
        return Err(UserError::new(
            format!("source {label}: publishing new chunks (TABLES IN SCHEMA _timescaledb_internal) needs a superuser"),
            "connect to the source as a superuser for an online migration of a TimescaleDB database",
        ));
    }
    let missing = without_identity(&c, timescaledb).await.map_err(|e| {
        UserError::new(
            format!("source {label}: reading replica identities failed ({})", db_message(&e)),
            "check the source",
        )
    })?;
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() };
        return Err(UserError::new(
            format!(
                "source {label}: {first}{more} has no primary key or replica identity: once published, the application's \
                 UPDATE and DELETE on it would fail on the source"
            ),
            format!("ALTER TABLE {first} REPLICA IDENTITY FULL (or add a primary key) on the source, then run again"),
        ));
    }
    let mut notes = Vec::new();
    if timescaledb {
        let compressed: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable WHERE compression_state = 1)", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        let markers: Option<String> = c
            .query_one("SELECT current_setting('timescaledb.enable_compression_wal_markers', true)", &[])
            .await
            .ok()
            .and_then(|r| r.get(0));
        if compressed && markers.as_deref() != Some("on") {
            return Err(UserError::new(
                format!(
                    "source {label}: timescaledb.enable_compression_wal_markers is {}: compression on the source would \
                     reach the target as deletes and inserts",
                    markers.as_deref().unwrap_or("unknown (TimescaleDB before 2.16)")
                ),
                "ALTER SYSTEM SET timescaledb.enable_compression_wal_markers = on; SELECT pg_reload_conf(); on the source \
                 (TimescaleDB 2.16 or later)",
            ));
        }
        let aggregates: i64 = c
            .query_one("SELECT count(*) FROM _timescaledb_catalog.continuous_agg", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if aggregates > 0 {
            notes.push(format!(
                "the materializations of {aggregates} continuous aggregates get REPLICA IDENTITY FULL while the slot \
                 lives (published without one, the source's refreshes would fail), and back at cutover or abort; \
                 refreshes on the source during the catch-up reach the target"
            ));
        }
        if let Ok(rows) = c
            .query(
                "SELECT format('%s (job %s, every %s)', proc_name, id, schedule_interval) FROM _timescaledb_config.bgw_job \
                 WHERE scheduled AND proc_name IN ('policy_retention', 'policy_refresh_continuous_aggregate', \
                 'policy_compression', 'policy_recompression') ORDER BY id",
                &[],
            )
            .await
        {
            for r in rows {
                let job: String = r.get(0);
                notes.push(format!("{job} may run on the source during the catch-up"));
            }
        }
    }
    for t in super::unlogged::names(&c).await.unwrap_or_default() {
        notes.push(format!(
            "{t} is unlogged: its changes are not in the WAL, so the stream does not carry them; the cutover \
             copies it again, whole, after the drain (inside the window)"
        ));
    }
    Ok(notes)
}

async fn has_timescaledb(c: &Client) -> bool {
    c.query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(false)
}

/// The tables the publication holds (user tables, partitions, chunks of every hypertable but the
/// compressed ones and the aggregates' materializations, which the slot's maker gives an identity) whose UPDATE and DELETE would fail once published; a chunk is named by its
/// hypertable, where the fix goes.
async fn without_identity(c: &Client, timescaledb: bool) -> Result<Vec<String>, tokio_postgres::Error> {
    let chunk_owner = if timescaledb {
        "(SELECT format('%I.%I', h.schema_name, h.table_name) FROM _timescaledb_catalog.chunk ch \
          JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id \
          WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname AND h.compression_state <> 2 \
            AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a WHERE a.mat_hypertable_id = h.id))"
    } else {
        "NULL::text"
    };
    let in_chunks = if timescaledb { "OR n.nspname = '_timescaledb_internal'" } else { "" };
    let sql = format!(
        "SELECT DISTINCT coalesce(owner, name) FROM ( \
           SELECT format('%I.%I', n.nspname, c.relname) AS name, {chunk_owner} AS owner, n.nspname AS ns \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND (({} AND {}) {in_chunks}) \
             AND NOT (c.relreplident = 'f' \
                  OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) \
                  OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) \
         ) t WHERE ns <> '_timescaledb_internal' OR owner IS NOT NULL ORDER BY 1",
        queries::user_ns("n"),
        queries::not_ext("pg_class", "c.oid")
    );
    Ok(c.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

//! The source's side of an online migration: the publication and the logical replication slot,
//! made over a replication connection that exports the slot's snapshot; the holder that keeps that
//! connection idle (the snapshot lives as long as it does) until the backup and the copy have
//! imported it; and dropping both at cutover or on abort. The run directory's `online.json` says
//! which slot a run made.

use std::path::Path;
use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, SslMode as WireSsl, TlsConfig};
use serde::{Deserialize, Serialize};
use tokio_postgres::config::Host;

use crate::catalog::{db_message, queries};
use crate::error::UserError;
use crate::files;
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::{quote_ident, quote_literal};
use crate::postgres::tls::{RootCert, SslMode};
use crate::postgres::transient;

/// The run-directory file naming the slot, the publication and the snapshot's position.
pub const ONLINE_STATE: &str = "online.json";

/// Prefix of every slot and publication pgshift makes.
pub const PREFIX: &str = "pgshift_";

/// Session settings of the replication connection, so that values decode as the target reads them.
const DECODE_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex";

/// What a run's online migration made on the source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OnlineState {
    pub slot: String,
    pub publication: String,
    /// Where the slot's snapshot stands: every change after it is streamed.
    pub consistent_lsn: String,
    /// Tables given REPLICA IDENTITY FULL for the publication (continuous aggregates'
    /// materializations), put back once the publication is gone: to NOTHING for those in
    /// `identity_was_nothing`, to DEFAULT for the others. Recorded before the first change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_full: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_was_nothing: Vec<String>,
    /// The cutover made the source database read-only (on the DBA's request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_read_only: bool,
    /// When the catch-up saw the last write (RFC 3339), once writes stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_stopped_at: Option<String>,
}

impl OnlineState {
    pub fn load(dir: &Path) -> Option<Self> {
        std::fs::read_to_string(dir.join(ONLINE_STATE)).ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    pub fn save(&self, dir: &Path) -> Result<(), UserError> {
        let path = dir.join(ONLINE_STATE);
        let text = serde_json::to_string_pretty(self).expect("online state json");
        files::write_atomic(&path, text.as_bytes()).map_err(|e| files::write_error(&path, &e))
    }
}

/// The run-directory file by which the DBA (`pgshift online cutover`, the console's key) says the
/// application has stopped writing.
pub const CUTOVER_REQUEST: &str = "cutover.request";

/// A request to cut over now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CutoverRequest {
    /// When it was asked (RFC 3339): the window starts then.
    pub requested_at: String,
    /// Make the source database read-only and end its other sessions first.
    #[serde(default)]
    pub read_only: bool,
}

impl CutoverRequest {
    pub fn now(read_only: bool) -> Self {
        Self { requested_at: chrono::Utc::now().to_rfc3339(), read_only }
    }

    pub fn load(dir: &Path) -> Option<Self> {
        std::fs::read_to_string(dir.join(CUTOVER_REQUEST)).ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    pub fn save(&self, dir: &Path) -> Result<(), UserError> {
        let path = dir.join(CUTOVER_REQUEST);
        let text = serde_json::to_string_pretty(self).expect("cutover request json");
        files::write_atomic(&path, text.as_bytes()).map_err(|e| files::write_error(&path, &e))
    }

    pub fn clear(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(CUTOVER_REQUEST));
    }
}

/// Makes the source database read-only for new transactions and ends its other client sessions
/// (pgshift's own, named `pgshift...`, stay), waiting until they are gone: no write can come after
/// the drain. Returns the sessions ended, or `None` when the database's own settings already made
/// it read-only (nothing changed then). `record(true)` runs before the change, `record(false)` if
/// it is taken back: ending a session failed (a superuser's, for a role that is not one).
pub async fn freeze_source(
    spec: &ConnSpec,
    record: impl Fn(bool) -> Result<(), UserError>,
) -> Result<Option<i64>, UserError> {
    let fail = |e: &tokio_postgres::Error| {
        UserError::new(
            format!("source {}: making the database read-only failed ({})", spec.label(), db_message(e)),
            "connect as a superuser (or the database's owner with pg_signal_backend), or stop the application and \
             request the cutover without --read-only",
        )
    };
    let c = spec.connect().await?;
    let db = quote_ident(spec.dbname());
    let already: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) AS g(v) \
             WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
               AND s.setrole = 0 AND lower(g.v) ~ '^default_transaction_read_only=(on|true|yes|1|t|y|tr|tru|ye)$')",
            &[],
        )
        .await
        .map_err(|e| fail(&e))?
        .get(0);
    if already {
        return Ok(None);
    }
    record(true)?;
    c.batch_execute(&format!("ALTER DATABASE {db} SET default_transaction_read_only = on"))
        .await
        .map_err(|e| fail(&e))?;
    let others = "FROM pg_catalog.pg_stat_activity WHERE datname = current_database() \
                  AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend' \
                  AND application_name NOT LIKE 'pgshift%'";
    let ended = c
        .query_one(&format!("SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) {others}"), &[])
        .await;
    // a session is gone only once its backend has ended: up to 5 s
    let mut left = 0i64;
    if ended.is_ok() {
        for _ in 0..50 {
            left = match c.query_one(&format!("SELECT count(*) {others}"), &[]).await {
                Ok(r) => r.get(0),
                Err(_) => -1,
            };
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    match ended {
        Ok(r) if left == 0 => Ok(Some(r.get(0))),
        outcome => {
            // the database is writable again, as before the request
            if c.batch_execute(&format!("ALTER DATABASE {db} RESET default_transaction_read_only")).await.is_ok() {
                record(false)?;
            }
            Err(match outcome {
                Err(e) => fail(&e),
                Ok(_) => UserError::new(
                    format!(
                        "source {}: {left} session(s) of the database were still there 5 s after they were ended: the \
                         database is writable again",
                        spec.label()
                    ),
                    "end them (pg_terminate_backend), or stop the application and request the cutover without \
                     --read-only",
                ),
            })
        }
    }
}

/// The slot's (and publication's) name for a run directory: `pgshift_`, the directory's name in
/// the letters a slot name may hold, and a tag of this run (slot names are cluster-wide: two runs
/// started in the same second, on two databases, must not meet). `online.json` keeps it.
pub fn name_for(dir: &Path) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tag = xxhash_rust::xxh3::xxh3_64(format!("{}:{nanos}:{}", dir.display(), std::process::id()).as_bytes());
    let mut name = format!("{PREFIX}{base}");
    name.truncate(63 - 9);
    format!("{name}_{:08x}", tag as u32)
}

/// A replication connection's settings from a pgshift connection (same host, port, user, password,
/// database and TLS rules).
pub fn replication_config(spec: &ConnSpec, slot: &str, publication: &str) -> Result<ReplicationConfig, UserError> {
    let c = &spec.config;
    let user = c.get_user().unwrap_or("postgres").to_string();
    let password = c.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let tls = if host.starts_with('/') {
        TlsConfig::disabled()
    } else {
        let root = match &spec.tls.root {
            Some(RootCert::File(p)) => Some(p.clone()),
            Some(RootCert::System) => {
                return Err(UserError::new(
                    format!("{}: the replication connection cannot use sslrootcert=system", spec.role),
                    "give the CA file: sslrootcert=FILE",
                ))
            }
            None => None,
        };
        let mut t = match spec.tls.mode {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => TlsConfig { mode: WireSsl::Prefer, ..TlsConfig::require() },
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyCa => TlsConfig::verify_ca(root),
            SslMode::VerifyFull => TlsConfig::verify_full(root),
        };
        if t.mode == WireSsl::Prefer {
            t.ca_pem_path = None;
        }
        t
    };
    let config = if host.starts_with('/') {
        ReplicationConfig::unix(host, port, user, password, spec.dbname(), slot, publication)
    } else {
        ReplicationConfig::new(host, user, password, spec.dbname(), slot, publication).with_port(port).with_tls(tls)
    };
    Ok(config
        .with_options(DECODE_OPTIONS)
        .with_application_name("pgshift online")
        .with_status_interval(Duration::from_secs(1)))
}

fn repl_error(spec: &ConnSpec, what: &str, e: &pgwire_replication::PgWireError) -> UserError {
    let text = crate::postgres::conn::scrub(&e.to_string());
    let fix = if text.contains("already exists") {
        "drop the earlier run's slot with pgshift online abort --plan FILE, then run again"
    } else {
        "check that the source's pg_hba.conf allows replication connections for this role and that it has REPLICATION"
    };
    UserError::new(format!("source {}: {what} failed on the replication connection ({text})", spec.label()), fix)
}

/// The tables the publication names: every user table the migration copies (partitioned ones by
/// their root, whose partitions follow), and TimescaleDB's chunk schema where hypertables exist.
pub const PUBLISHED_TABLES: &str = "published tables";

fn published_tables_sql() -> String {
    format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition AND {} AND {} \
         ORDER BY 1",
        queries::user_ns("n"),
        queries::not_ext("pg_class", "c.oid")
    )
}

/// Makes the publication and the slot, exporting the slot's snapshot on a connection held open.
pub struct SlotHolder {
    spec: ConnSpec,
    held: tokio::sync::Mutex<Held>,
}

enum Held {
    Nothing,
    Holding { client: ReplicationClient, snapshot: String },
    Released,
}

impl SlotHolder {
    pub fn new(spec: ConnSpec) -> Self {
        Self { spec, held: tokio::sync::Mutex::new(Held::Nothing) }
    }

    /// The slot's exported snapshot, making the publication and the slot on the first call.
    pub async fn snapshot(&self, dir: &Path) -> Result<String, UserError> {
        let mut held = self.held.lock().await;
        match &*held {
            Held::Holding { snapshot, .. } => return Ok(snapshot.clone()),
            Held::Released => {
                return Err(UserError::new(
                    "online: the slot's snapshot was already let go",
                    "start the migration again: pgshift online abort --plan FILE, then pgshift run --restart",
                ))
            }
            Held::Nothing => {}
        }
        if let Some(earlier) = OnlineState::load(dir) {
            return Err(UserError::new(
                format!(
                    "online: the run stopped before its copy was done, and slot {}'s snapshot ended with it: \
                     the copy cannot resume without a gap",
                    earlier.slot
                ),
                "drop it with pgshift online abort --plan FILE, then start again with pgshift run --online --restart",
            ));
        }
        let name = name_for(dir);
        let source = self.spec.connect().await?;
        let tables = source.query(&published_tables_sql(), &[]).await.map_err(|e| {
            UserError::new(
                format!("source: reading the {PUBLISHED_TABLES} failed ({})", db_message(&e)),
                "check the source",
            )
        })?;
        let mut members: Vec<String> = tables.iter().map(|r| format!("TABLE {}", r.get::<_, String>(0))).collect();
        let chunks: bool = source
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '_timescaledb_internal')",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        if members.is_empty() && !chunks {
            return Err(UserError::new("online: the source has no table to replicate", "run without --online"));
        }
        let mut state = OnlineState {
            slot: name.clone(),
            publication: name.clone(),
            consistent_lsn: String::new(),
            identity_full: Vec::new(),
            identity_was_nothing: Vec::new(),
            source_read_only: false,
            writes_stopped_at: None,
        };
        if chunks {
            // new chunks made during the catch-up are in it too
            members.push("TABLES IN SCHEMA _timescaledb_internal".into());
            (state.identity_full, state.identity_was_nothing) =
                materializations_without_identity(&self.spec, &source).await?;
        }
        // recorded before anything changes on the source: after a crash from here on, online
        // abort finds what to take back
        state.save(dir)?;
        if let Err(e) = give_identity(&self.spec, &source, &state.identity_full).await {
            take_back(&self.spec, &source, &state, dir).await;
            return Err(e);
        }
        // it locks every member: the application's writes (a new chunk's creation) can deadlock
        // with it, and the victim's statement is rolled back whole
        let create = format!(
            "CREATE PUBLICATION {} FOR {} WITH (publish_via_partition_root = true)",
            quote_ident(&name),
            members.join(", ")
        );
        let made = transient::execute_through_lock_conflicts(&source, &create).await.map_err(|e| {
            let fix = if transient::is_lock_conflict(&e) {
                "the application's writes took the tables' locks each time: run again, or when fewer sessions write"
            } else {
                "connect to the source as a superuser or as the owner of every table"
            };
            UserError::new(format!("source {}: CREATE PUBLICATION failed ({})", self.spec.label(), db_message(&e)), fix)
        });
        if let Err(e) = made {
            take_back(&self.spec, &source, &state, dir).await;
            return Err(e);
        }
        let config = replication_config(&self.spec, &name, &name)?;
        let made = async {
            let mut client =
                ReplicationClient::connect_gated(config).await.map_err(|e| repl_error(&self.spec, "connecting", &e))?;
            let rows = client
                .simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                    quote_ident(&name)
                ))
                .await
                .map_err(|e| repl_error(&self.spec, "CREATE_REPLICATION_SLOT", &e))?;
            let text = |i: usize| {
                rows.first()
                    .and_then(|r| r.get(i))
                    .and_then(|v| v.as_ref())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            Ok::<_, UserError>((client, text(1), text(2)))
        }
        .await;
        let (client, lsn, snapshot) = match made {
            Ok(m) => m,
            Err(e) => {
                take_back(&self.spec, &source, &state, dir).await;
                return Err(e);
            }
        };
        state.consistent_lsn = lsn;
        state.save(dir)?;
        *held = Held::Holding { client, snapshot: snapshot.clone() };
        Ok(snapshot)
    }

    /// Closes the exporting connection: every reader has imported the snapshot (the slot stays).
    pub async fn release(&self) {
        let mut held = self.held.lock().await;
        if let Held::Holding { client, .. } = &mut *held {
            client.abort();
        }
        if !matches!(*held, Held::Nothing) {
            *held = Held::Released;
        }
    }
}

/// The continuous aggregates' materializations without a usable replica identity (none, or
/// DEFAULT without a primary key): published like that, the DELETE of the source's own refreshes
/// would fail. Returns them all, and those of them that were REPLICA IDENTITY NOTHING.
async fn materializations_without_identity(
    spec: &ConnSpec,
    source: &tokio_postgres::Client,
) -> Result<(Vec<String>, Vec<String>), UserError> {
    let rows = source
        .query(
            "SELECT format('%I.%I', h.schema_name, h.table_name), c.relreplident = 'n' \
             FROM _timescaledb_catalog.continuous_agg a \
             JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id \
             JOIN pg_catalog.pg_class c ON c.oid = format('%I.%I', h.schema_name, h.table_name)::regclass \
             WHERE c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
                   (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| identity_error(spec, &e))?;
    let all = rows.iter().map(|r| r.get(0)).collect();
    let nothing = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
    Ok((all, nothing))
}

fn identity_error(spec: &ConnSpec, e: &tokio_postgres::Error) -> UserError {
    UserError::new(
        format!(
            "source {}: giving the continuous aggregates' materializations a replica identity failed ({})",
            spec.label(),
            db_message(e)
        ),
        "run again when no refresh of a continuous aggregate runs on the source (it holds the lock)",
    )
}

/// Gives `tables` REPLICA IDENTITY FULL (which reaches their chunks, and new ones).
async fn give_identity(spec: &ConnSpec, source: &tokio_postgres::Client, tables: &[String]) -> Result<(), UserError> {
    for t in tables {
        let sql = format!("SET lock_timeout = '10s'; ALTER TABLE {t} REPLICA IDENTITY FULL");
        transient::execute_through_lock_conflicts(source, &sql).await.map_err(|e| identity_error(spec, &e))?;
    }
    Ok(())
}

/// Takes back what a failed slot creation made on the source: the publication, then (once nothing
/// of this run publishes them) the identities, then the record, if nothing was left behind.
async fn take_back(spec: &ConnSpec, source: &tokio_postgres::Client, state: &OnlineState, dir: &Path) {
    if source.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&state.publication))).await.is_err() {
        return;
    }
    if reset_identities(spec, &state.identity_full, &state.identity_was_nothing).await.is_empty() {
        let _ = std::fs::remove_file(dir.join(ONLINE_STATE));
    }
}

/// Puts the tables given REPLICA IDENTITY FULL back as they were (NOTHING for those in
/// `was_nothing`, else DEFAULT) once no publication that publishes updates or deletes publishes
/// them or their chunks any more (two online runs on one database: without an identity, the
/// source's refreshes would fail); a table dropped since is skipped. Best effort: returns, for each
/// table left FULL (which costs WAL but breaks nothing), one line saying why, with the fix.
pub async fn reset_identities(spec: &ConnSpec, tables: &[String], was_nothing: &[String]) -> Vec<(String, String)> {
    if tables.is_empty() {
        return Vec::new();
    }
    match writable_session(spec).await {
        Ok(c) => reset_identities_on(&c, tables, was_nothing).await,
        Err(_) => tables
            .iter()
            .map(|t| {
                let sql = format!("ALTER TABLE {t} REPLICA IDENTITY {}", identity_before(t, was_nothing));
                (t.clone(), format!("{t} keeps REPLICA IDENTITY FULL on the source (no session to put it back): {sql}"))
            })
            .collect(),
    }
}

/// The replica identity `table` goes back to: NOTHING where it had none before the run, else DEFAULT.
pub fn identity_before(table: &str, was_nothing: &[String]) -> &'static str {
    if was_nothing.iter().any(|t| t == table) {
        "NOTHING"
    } else {
        "DEFAULT"
    }
}

/// [`reset_identities`] on a writable source session (the cutover's).
pub async fn reset_identities_on(
    c: &tokio_postgres::Client,
    tables: &[String],
    was_nothing: &[String],
) -> Vec<(String, String)> {
    let undo = |t: &String| {
        let to = identity_before(t, was_nothing);
        (to, format!("ALTER TABLE {t} REPLICA IDENTITY {to}"))
    };
    let mut left = Vec::new();
    for t in tables {
        let (_, sql) = undo(t);
        let still = c
            .query_one(
                "SELECT string_agg(DISTINCT p.pubname::text, ', ') FROM pg_catalog.pg_publication_tables p \
                 JOIN pg_catalog.pg_publication b ON b.pubname = p.pubname AND (b.pubupdate OR b.pubdelete) \
                 WHERE (format('%I.%I', p.schemaname, p.tablename) = $1 \
                    OR EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk k \
                               JOIN _timescaledb_catalog.hypertable h ON h.id = k.hypertable_id \
                               WHERE format('%I.%I', h.schema_name, h.table_name) = $1 \
                                 AND k.schema_name = p.schemaname AND k.table_name = p.tablename))",
                &[t],
            )
            .await
            .map(|r| r.get::<_, Option<String>>(0));
        match still {
            Ok(Some(publications)) => left.push((
                t.clone(),
                format!(
                "{t} keeps REPLICA IDENTITY FULL on the source: publication {publications} still publishes it (once \
                 it is gone: {sql})"
            ),
            )),
            Ok(None) => {
                if let Err(e) =
                    c.batch_execute(&format!("ALTER TABLE IF EXISTS {t} REPLICA IDENTITY {}", undo(t).0)).await
                {
                    left.push((
                        t.clone(),
                        format!(
                            "{t} keeps REPLICA IDENTITY FULL on the source (putting it back failed: {}): {sql}",
                            db_message(&e)
                        ),
                    ));
                }
            }
            Err(e) => left.push((
                t.clone(),
                format!(
                    "{t} keeps REPLICA IDENTITY FULL on the source (reading its publications failed: {}): {sql}",
                    db_message(&e)
                ),
            )),
        }
    }
    left
}

/// A source session that may write even where the database was made read-only for the cutover.
pub async fn writable_session(spec: &ConnSpec) -> Result<tokio_postgres::Client, UserError> {
    let c = spec.connect().await?;
    c.batch_execute("SET default_transaction_read_only = off").await.map_err(|e| {
        UserError::new(
            format!("source {}: a session setting failed ({})", spec.label(), db_message(&e)),
            "check the source",
        )
    })?;
    Ok(c)
}

/// Drops the slot and the publication, waiting a little for a walsender that is still ending.
pub async fn drop_slot(spec: &ConnSpec, slot: &str, publication: &str) -> Result<(), UserError> {
    drop_slot_on(&writable_session(spec).await?, spec, slot, publication).await
}

/// [`drop_slot`] on a writable session of `spec` (the cutover's).
pub async fn drop_slot_on(
    c: &tokio_postgres::Client,
    spec: &ConnSpec,
    slot: &str,
    publication: &str,
) -> Result<(), UserError> {
    for attempt in 0.. {
        let r = c
            .batch_execute(&format!(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = {}",
                quote_literal(slot)
            ))
            .await;
        match r {
            Ok(()) => break,
            Err(e) if attempt < 50 && db_message(&e).contains("is active") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(UserError::new(
                    format!("source {}: dropping slot {slot} failed ({})", spec.label(), db_message(&e)),
                    format!("drop it by hand: SELECT pg_drop_replication_slot('{slot}')"),
                ))
            }
        }
    }
    c.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(publication))).await.map_err(|e| {
        UserError::new(
            format!("source {}: dropping publication {publication} failed ({})", spec.label(), db_message(&e)),
            format!("drop it by hand: DROP PUBLICATION {publication}"),
        )
    })
}

/// The slots pgshift left in the source database (any run's), and the publications named after them.
pub async fn leftovers(spec: &ConnSpec) -> Result<(Vec<String>, Vec<String>), UserError> {
    let c = spec.connect().await?;
    let q = |sql: &'static str| {
        let c = &c;
        async move {
            c.query(sql, &[]).await.map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()).map_err(
                |e| {
                    UserError::new(
                        format!("source {}: reading slots failed ({})", spec.label(), db_message(&e)),
                        "check the source",
                    )
                },
            )
        }
    };
    let slots = q("SELECT slot_name::text FROM pg_catalog.pg_replication_slots \
                   WHERE slot_name LIKE 'pgshift\\_%' AND database = current_database() ORDER BY 1")
    .await?;
    // a user's publication may start with pgshift_ too: only those named after a pgshift slot
    let pubs = q("SELECT pubname::text FROM pg_catalog.pg_publication WHERE pubname IN \
                  (SELECT slot_name FROM pg_catalog.pg_replication_slots \
                   WHERE slot_name LIKE 'pgshift\\_%' AND database = current_database()) ORDER BY 1")
    .await?;
    Ok((slots, pubs))
}

/// Whether the source database has a publication of this name.
pub async fn publication_exists(spec: &ConnSpec, name: &str) -> Result<bool, UserError> {
    let c = spec.connect().await?;
    c.query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)", &[&name])
        .await
        .map(|r| r.get(0))
        .map_err(|e| {
            UserError::new(
                format!("source {}: reading publications failed ({})", spec.label(), db_message(&e)),
                "check the source",
            )
        })
}

/// Parses an LSN as the server prints it (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    Lsn::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_name_is_made_of_the_run_directory_in_slot_letters() {
        let name = name_for(Path::new("/b/2026-12-07T05-27-00Z"));
        assert!(name.starts_with("pgshift_2026_12_07t05_27_00z_"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        assert_ne!(name, name_for(Path::new("/b/2026-12-07T05-27-00Z")), "each run its own");
        assert!(name_for(Path::new(&"x".repeat(100))).len() <= 63);
    }
}

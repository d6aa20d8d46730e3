//! Following the slot: the replication stream decoded (pgoutput) and applied in source commit
//! order, until the source has been quiet for a while or the DBA asked for the cutover (the
//! catch-up), or until a marker written now has come through (the cutover's drain). Chunks' changes
//! go to their hypertable, a continuous aggregate's materialization to the target's; what
//! TimescaleDB writes between its compression markers, and its compressed tables, are not replayed.
//! A relation whose shape no longer matches the target stops the stream with its fix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pg_walstream::{LogicalReplicationMessage, LogicalReplicationParser};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio_postgres::Client;

use crate::catalog::db_message;
use crate::engine::{Event, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::human::human_bytes;
use crate::online::apply::{Applier, Column, Route};
use crate::online::slot::{
    freeze_source, replication_config, writable_session, CutoverRequest, OnlineState, CUTOVER_REQUEST,
};
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::quote_ident;

/// Changes applied in one target transaction, at most (a source transaction is never split).
const GROUP_CHANGES: u64 = 20_000;
/// The longest a committed source transaction waits for its target commit while the stream is busy.
const GROUP_TIME: Duration = Duration::from_millis(500);
/// Retained WAL past which the console and the run warn.
const RETAINED_WARNING: i64 = 1 << 30;
/// The prefix of pgshift's own marker messages.
const SYNC_PREFIX: &str = "pgshift-sync";

/// When following stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// No write for this long, and a marker written then has come through: writes stopped.
    Quiet(Duration),
    /// A marker written at the start has come through: every change before it is applied.
    Drained,
}

/// What a follow applied.
#[derive(Debug, Default)]
pub struct Followed {
    pub changes: u64,
    pub transactions: u64,
    /// When the last applied change was received (writes stopped then).
    pub last_write: Option<SystemTime>,
    /// The source position stored as applied.
    pub position: String,
    /// From a source commit to its target commit, in milliseconds.
    pub lag: LagHistogram,
    /// Time from the first change received to the last target commit.
    pub busy: Duration,
    /// The DBA's cutover request that ended the catch-up, if one did.
    pub requested: Option<CutoverRequest>,
}

impl Followed {
    /// Changes applied per second of streaming.
    pub fn rate(&self) -> f64 {
        self.changes as f64 / self.busy.as_secs_f64().max(0.001)
    }
}

/// Lags in 1 ms buckets up to a minute (memory does not grow with the stream).
#[derive(Debug)]
pub struct LagHistogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        Self { buckets: vec![0; 60_001], count: 0 }
    }
}

impl LagHistogram {
    pub fn record(&mut self, ms: i64, times: u64) {
        let i = ms.clamp(0, 60_000) as usize;
        self.buckets[i] += times;
        self.count += times;
    }

    /// The lag `p` (0..=1) of the recorded ones are at or under, in ms; `None` if none recorded.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = ((self.count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(ms as u64);
            }
        }
        Some(60_000)
    }
}

/// Microseconds since 2000-01-01, the epoch of the protocol's timestamps.
fn pg_now_micros() -> i64 {
    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros() as i64;
    unix - 946_684_800_000_000
}

/// Source transactions waiting for their target commit: how many, and the oldest one's commit time.
#[derive(Default)]
struct Group {
    transactions: u64,
    oldest_micros: Option<i64>,
}

fn stream_error(source: &ConnSpec, e: &pgwire_replication::PgWireError) -> UserError {
    UserError::new(
        format!(
            "source {}: the replication stream failed ({})",
            source.label(),
            crate::postgres::conn::scrub(&e.to_string())
        ),
        "run again: the catch-up resumes from the last position stored on the target (the slot is kept)",
    )
}

/// A source relation as its Relation message describes it.
struct Described<'a> {
    id: u32,
    namespace: &'a str,
    name: &'a str,
    columns: &'a [pg_walstream::ColumnInfo],
}

/// A stream stopped at one of pgshift's markers, between transactions, still connected: the
/// catch-up hands it to the cutover, whose drain then goes on where it stopped — no new walsender
/// decoding again from the slot's restart position (a large transaction's WAL again), no wait for
/// the old one to end.
pub struct Live {
    client: ReplicationClient,
    parser: LogicalReplicationParser,
    routes: Routes,
}

impl Live {
    /// Closes the stream (the slot stays).
    pub fn close(mut self) {
        self.client.abort();
    }
}

/// The stream a run's catch-up leaves for its cutover (empty in a run resumed at the cutover).
pub type Handover = std::sync::Arc<tokio::sync::Mutex<Option<Live>>>;

/// Where source relations' changes go, learnt from their Relation messages.
struct Routes {
    by_id: HashMap<u32, Option<Arc<Route>>>,
    types: HashMap<u32, HashMap<String, u32>>,
    timescaledb: bool,
}

impl Routes {
    async fn learn(
        &mut self,
        ctx: &StageContext,
        catalog: &Client,
        applier: &Applier,
        relation: Described<'_>,
    ) -> Result<(), UserError> {
        let Described { id, namespace, name, columns } = relation;
        let source = format!("{namespace}.{name}");
        let types: HashMap<String, u32> = columns.iter().map(|c| (c.name.to_string(), c.type_id)).collect();
        if let Some(before) = self.types.get(&id) {
            if let Some(changed) = before.iter().find(|(n, t)| types.get(*n).is_some_and(|now| now != *t)) {
                return Err(shape_error(&source, &format!("column {}'s type changed", changed.0)));
            }
        }
        self.types.insert(id, types);
        let mut target = format!("{}.{}", quote_ident(namespace), quote_ident(name));
        if self.timescaledb && namespace == "_timescaledb_internal" {
            let lookup = |e: tokio_postgres::Error| {
                UserError::new(
                    format!("source: looking up chunk {source} failed ({})", db_message(&e)),
                    "check the source",
                )
            };
            // a chunk's hypertable; a compressed chunk's batches are TimescaleDB's own (its markers
            // bracket the compression), an aggregate's materialization goes to the target's; one of
            // the old (not finalized) form holds partial states the target's has not: the cutover
            // refreshes it from the raw rows instead
            let row = catalog
                .query_opt(
                    "SELECT format('%I.%I', h.schema_name, h.table_name), h.compression_state = 2, \
                            (SELECT format('%I.%I', a.user_view_schema, a.user_view_name) \
                             FROM _timescaledb_catalog.continuous_agg a WHERE a.mat_hypertable_id = h.id), \
                            EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a \
                                    WHERE a.mat_hypertable_id = h.id AND (to_jsonb(a) ->> 'finalized') = 'false') \
                     FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id \
                     WHERE c.schema_name = $1 AND c.table_name = $2",
                    &[&namespace, &name],
                )
                .await
                .map_err(lookup)?;
            match row {
                Some(r) if r.get::<_, bool>(1) || r.get::<_, bool>(3) => {
                    self.by_id.insert(id, None);
                    return Ok(());
                }
                Some(r) => {
                    match r.get::<_, Option<String>>(2) {
                        Some(view) => {
                            let Some(m) = applier.materialization_of(&view).await? else {
                                return Err(UserError::new(
                                format!("catch-up: the continuous aggregate {view} is not on the target"),
                                format!("create {view} on the target as on the source, then run again (the slot is kept)"),
                            ));
                            };
                            target = m;
                        }
                        None => target = r.get(0),
                    }
                }
                None => {
                    // TimescaleDB's own tables there (job statistics) are not the user's
                    let extension: bool = catalog
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend WHERE classid = 'pg_catalog.pg_class'::regclass \
                             AND objid = $1 AND deptype = 'e')",
                            &[&id],
                        )
                        .await
                        .map_err(lookup)?
                        .get(0);
                    if !extension {
                        ctx.warning(format!(
                            "catch-up: chunk {source} is no longer on the source; its changes are not applied"
                        ))
                        .await;
                    }
                    self.by_id.insert(id, None);
                    return Ok(());
                }
            }
        }
        let Some(on_target) = applier.target_columns(&target).await? else {
            return Err(UserError::new(
                format!("catch-up: the source's table {source} is not on the target (made during the catch-up?)"),
                format!("create {target} on the target as on the source, then run again (the slot is kept)"),
            ));
        };
        let mut cols = Vec::with_capacity(columns.len());
        for c in columns {
            let Some(type_sql) = on_target.get(&*c.name) else {
                return Err(shape_error(&source, &format!("column {} is not on the target", c.name)));
            };
            cols.push(Column { name: quote_ident(&c.name), type_sql: type_sql.clone(), key: c.is_key() });
        }
        self.by_id.insert(id, Some(Arc::new(Route { source, target, columns: cols })));
        Ok(())
    }

    fn get(&self, id: u32) -> Result<Option<Arc<Route>>, UserError> {
        match self.by_id.get(&id) {
            Some(r) => Ok(r.clone()),
            None => Err(UserError::new(
                format!("catch-up: a change for relation {id} came before its description"),
                "run again: the stream restarts from the last stored position",
            )),
        }
    }
}

fn shape_error(table: &str, what: &str) -> UserError {
    UserError::new(
        format!("catch-up stopped: the source's table {table} changed shape during the catch-up ({what})"),
        format!("apply the same ALTER TABLE to {table} on the target, then run again: the slot is kept and the catch-up goes on"),
    )
}

/// How long the stream may be silent before what was received is committed and the cutover
/// request looked for: the request's pickup waits at most this.
const IDLE: Duration = Duration::from_millis(50);

/// Streams from `start` and applies every change after the stored position, until `until`.
pub async fn follow(
    ctx: &StageContext,
    source: &ConnSpec,
    state: &OnlineState,
    applier: &mut Applier,
    start: Lsn,
    until: Until,
    live: Option<Live>,
) -> Result<(Followed, Live), StageError> {
    let catalog = writable_session(&ctx.tagged(source)).await?;
    let Live { mut client, mut parser, mut routes } = match live {
        Some(live) => live,
        None => {
            let config = replication_config(source, &state.slot, &state.publication)?.with_start_lsn(start);
            let timescaledb = catalog
                .query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')", &[])
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false);
            Live {
                client: start_stream(source, config).await?,
                parser: LogicalReplicationParser::with_protocol_version(1),
                routes: Routes { by_id: HashMap::new(), types: HashMap::new(), timescaledb },
            }
        }
    };
    let mut done = Followed { position: start.to_pg_string(), ..Default::default() };

    let mut skip_tx = false;
    let mut in_tx = false;
    // changes applied when the open transaction began
    let mut tx_first = 0u64;
    let mut in_marker = 0u32;
    let mut pending: Option<Lsn> = None;
    let mut last_change = Instant::now();
    // (marker's sequence number, changes applied when it was written)
    let mut marker: Option<(u64, u64)> = None;
    let mut markers = 0u64;
    let mut last_report = Instant::now();
    let mut warned = false;
    let mut applied = start;
    let mut last_commit = Instant::now();
    let mut group = Group::default();
    let mut first_change: Option<Instant> = None;

    // the walsender sends only flushed WAL: a marker left to the WAL writer would arrive up to
    // `wal_writer_delay` (200 ms by default) late, and the drain is inside the DBA's window
    let flush = catalog
        .query_one("SELECT current_setting('server_version_num')::int >= 170000", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let send_marker = |seq: u64| {
        let token = format!("{}:{seq}", state.slot);
        let c = &catalog;
        async move {
            let sent = if flush {
                c.execute("SELECT pg_catalog.pg_logical_emit_message(false, $1, $2, true)", &[&SYNC_PREFIX, &token])
                    .await
            } else {
                // before 17 no flush argument: a transactional message's commit flushes the WAL
                // (in the stream, an empty transaction with a message nobody reads)
                match c
                    .execute("SELECT pg_catalog.pg_logical_emit_message(false, $1, $2)", &[&SYNC_PREFIX, &token])
                    .await
                {
                    Ok(_) => c
                        .batch_execute(
                            "BEGIN; SET LOCAL synchronous_commit = local; \
                             SELECT pg_catalog.pg_logical_emit_message(true, 'pgshift-flush', ''); COMMIT",
                        )
                        .await
                        .map(|_| 0),
                    Err(e) => Err(e),
                }
            };
            sent.map_err(|e| {
                UserError::new(
                    format!("source: writing the catch-up's marker failed ({})", db_message(&e)),
                    "connect to the source as a role with REPLICATION (or a superuser)",
                )
            })
        }
    };
    let request_file = ctx.run_dir().map(|d| d.join(CUTOVER_REQUEST));
    if matches!(until, Until::Drained) {
        markers += 1;
        send_marker(markers).await?;
        marker = Some((markers, 0));
    }

    loop {
        if ctx.is_cancelled() {
            client.abort();
            return Err(StageError::Cancelled);
        }
        let event = match tokio::time::timeout(IDLE, client.recv()).await {
            Err(_) => None,
            Ok(Ok(Some(ev))) => Some(ev),
            Ok(Ok(None)) => {
                return Err(UserError::new(
                    format!("source {}: the replication stream ended", source.label()),
                    "run again: the catch-up resumes from the last position stored on the target",
                )
                .into())
            }
            Ok(Err(e)) => return Err(stream_error(source, &e).into()),
        };
        match event {
            Some(ReplicationEvent::Begin { final_lsn, .. }) => {
                in_tx = true;
                tx_first = done.changes;
                // committed and stored by an earlier run: applied once already
                skip_tx = final_lsn < start;
                in_marker = 0;
            }
            Some(ReplicationEvent::XLogData { data, .. }) if !skip_tx => {
                let msg = parser.parse_wal_message(&data).map_err(|e| {
                    UserError::new(
                        format!("catch-up: a change could not be decoded ({e})"),
                        "report this with the source's version; the slot is kept",
                    )
                })?;
                let before = done.changes;
                match &msg.message {
                    LogicalReplicationMessage::Insert { relation_id, .. }
                    | LogicalReplicationMessage::Update { relation_id, .. }
                    | LogicalReplicationMessage::Delete { relation_id, .. } => applier.touch(*relation_id),
                    LogicalReplicationMessage::Truncate { relation_ids, .. } => {
                        relation_ids.iter().for_each(|id| applier.touch(*id))
                    }
                    _ => {}
                }
                match msg.message {
                    LogicalReplicationMessage::Relation { relation_id, namespace, relation_name, columns, .. } => {
                        let described = Described {
                            id: relation_id,
                            namespace: &namespace,
                            name: &relation_name,
                            columns: &columns,
                        };
                        routes.learn(ctx, &catalog, applier, described).await?;
                    }
                    _ if in_marker > 0 => {}
                    LogicalReplicationMessage::Insert { relation_id, tuple } => {
                        if let Some(r) = routes.get(relation_id)? {
                            applier.insert(&r, &tuple).await?;
                            done.changes += 1;
                        }
                    }
                    LogicalReplicationMessage::Update { relation_id, old_tuple, new_tuple, key_type } => {
                        if let Some(r) = routes.get(relation_id)? {
                            let old = old_tuple.as_ref().map(|t| (t, key_type.unwrap_or('K')));
                            applier.update(&r, old, &new_tuple).await?;
                            done.changes += 1;
                        }
                    }
                    LogicalReplicationMessage::Delete { relation_id, old_tuple, key_type } => {
                        if let Some(r) = routes.get(relation_id)? {
                            applier.delete(&r, &old_tuple, key_type).await?;
                            done.changes += 1;
                        }
                    }
                    LogicalReplicationMessage::Truncate { relation_ids, .. } => {
                        let mut targets = Vec::new();
                        for id in relation_ids {
                            if let Some(r) = routes.get(id)? {
                                if r.source.starts_with("_timescaledb_internal.") {
                                    return Err(UserError::new(
                                        format!("catch-up stopped: chunk {} was truncated on the source", r.source),
                                        "truncating a hypertable's chunks is not replicated: start the migration again with --restart",
                                    )
                                    .into());
                                }
                                targets.push(r);
                            }
                        }
                        done.changes += targets.len() as u64;
                        applier.truncate(&targets).await?;
                    }
                    _ => {}
                }
                // only the application's writes count: TimescaleDB's own (job statistics, a
                // failing job retried every second) must not keep the source from being quiet
                if done.changes > before {
                    first_change.get_or_insert_with(Instant::now);
                    last_change = Instant::now();
                    done.last_write = Some(SystemTime::now());
                }
            }
            Some(ReplicationEvent::XLogData { .. }) => {}
            Some(ReplicationEvent::Message { prefix, content, lsn, .. }) => match prefix.as_str() {
                "::timescaledb-compression-start" | "::timescaledb-decompression-start" if !skip_tx => in_marker += 1,
                "::timescaledb-compression-end" | "::timescaledb-decompression-end" if !skip_tx => {
                    in_marker = in_marker.saturating_sub(1)
                }
                SYNC_PREFIX => {
                    let token = String::from_utf8_lossy(&content);
                    if let Some((seq, at)) = marker {
                        if token == format!("{}:{seq}", state.slot) {
                            marker = None;
                            if matches!(until, Until::Drained) || done.requested.is_some() || done.changes == at {
                                // everything before the marker has come through: store it as applied
                                let to = if pending.is_some_and(|p| p > lsn) { pending.expect("pending") } else { lsn };
                                applier.commit(&to.to_pg_string()).await?;
                                client.update_applied_lsn(to);
                                done.position = to.to_pg_string();
                                return Ok((done, Live { client, parser, routes }));
                            }
                        }
                    }
                }
                _ => {}
            },
            Some(ReplicationEvent::Commit { end_lsn, commit_time_micros, .. }) => {
                in_tx = false;
                if !skip_tx {
                    // the position moves on past every transaction; only those applied count
                    pending = Some(end_lsn);
                    if done.changes > tx_first {
                        done.transactions += 1;
                        group.transactions += 1;
                        group.oldest_micros.get_or_insert(commit_time_micros);
                    }
                    if applier.pending_changes >= GROUP_CHANGES || last_commit.elapsed() >= GROUP_TIME {
                        commit(applier, &client, &mut pending, &mut applied).await?;
                        last_commit = Instant::now();
                        settle(&mut group, &mut done, first_change);
                    }
                }
                skip_tx = false;
            }
            Some(ReplicationEvent::KeepAlive { .. }) => {}
            Some(ReplicationEvent::StoppedAt { .. }) => break,
            None => {
                // the stream is idle: what was received is committed at once
                if !in_tx && pending.is_some() {
                    commit(applier, &client, &mut pending, &mut applied).await?;
                    last_commit = Instant::now();
                    settle(&mut group, &mut done, first_change);
                }
            }
        }
        if let Until::Quiet(quiet) = until {
            if done.requested.is_none() && request_file.as_deref().is_some_and(Path::exists) {
                // the DBA says writes stopped: drain to a marker written now, whatever is in flight
                let request =
                    ctx.run_dir().and_then(CutoverRequest::load).unwrap_or_else(|| CutoverRequest::now(false));
                ctx.info("catch-up", format!("cutover requested at {}: draining", request.requested_at)).await;
                // consumed: a rerun after a failure from here on waits for a new request
                if let Some(dir) = ctx.run_dir() {
                    CutoverRequest::clear(dir);
                }
                if request.read_only {
                    let record = |on: bool| match ctx.run_dir() {
                        Some(dir) => OnlineState { source_read_only: on, ..state.clone() }.save(dir),
                        None => Ok(()),
                    };
                    let line = match freeze_source(source, record).await? {
                        Some(ended) => format!(
                            "source database {} is read-only now ({ended} sessions ended); undo on the source: \
                             ALTER DATABASE {} RESET default_transaction_read_only",
                            source.dbname(),
                            quote_ident(source.dbname())
                        ),
                        None => format!(
                            "source database {} is read-only already (its own default_transaction_read_only): \
                             left as it is",
                            source.dbname()
                        ),
                    };
                    ctx.info("catch-up", line).await;
                }
                done.requested = Some(request);
                markers += 1;
                send_marker(markers).await?;
                marker = Some((markers, done.changes));
            }
            if marker.is_none() && !in_tx && pending.is_none() && last_change.elapsed() >= quiet {
                markers += 1;
                send_marker(markers).await?;
                marker = Some((markers, done.changes));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            ctx.progress("changes applied", done.changes, None, Unit::Rows).await;
            if let Some((lag, retained)) = lag(&catalog, &state.slot, applied).await {
                // the oldest source commit received and not yet committed on the target
                let millis = group.oldest_micros.map(|t| ((pg_now_micros() - t) / 1000).max(0) as u64).unwrap_or(0);
                ctx.send(Event::Lag { stage: ctx.stage().into(), bytes: lag.max(0) as u64, millis }).await;
                ctx.info(
                    "catch-up",
                    format!(
                        "{} changes in {} transactions applied; {} and {:.1} s behind the source; the slot holds {} \
                         of WAL",
                        done.changes,
                        done.transactions,
                        human_bytes(lag.max(0) as u64),
                        millis as f64 / 1000.0,
                        human_bytes(retained.max(0) as u64)
                    ),
                )
                .await;
                if retained > RETAINED_WARNING && !warned {
                    warned = true;
                    ctx.warning(format!(
                        "slot {} holds {} of WAL on the source: it keeps growing until the cutover or pgshift online abort",
                        state.slot,
                        human_bytes(retained as u64)
                    ))
                    .await;
                }
            }
        }
    }
    if pending.is_some() {
        commit(applier, &client, &mut pending, &mut applied).await?;
        settle(&mut group, &mut done, first_change);
    }
    done.position = applied.to_pg_string();
    Ok((done, Live { client, parser, routes }))
}

/// Starts streaming; a slot still held by the walsender of a session that just ended (a run killed
/// a moment ago) is waited for a little.
async fn start_stream(
    source: &ConnSpec,
    config: pgwire_replication::ReplicationConfig,
) -> Result<ReplicationClient, UserError> {
    let mut attempt = 0;
    loop {
        let mut client = ReplicationClient::connect(config.clone()).await.map_err(|e| stream_error(source, &e))?;
        match client.wait_started().await {
            Ok(()) => return Ok(client),
            Err(e) if attempt < 50 && e.to_string().contains("is active") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(stream_error(source, &e)),
        }
    }
}

/// A target commit made: its transactions' lag (the oldest one's, for all) and the busy time.
fn settle(group: &mut Group, done: &mut Followed, first_change: Option<Instant>) {
    if let Some(oldest) = group.oldest_micros.take() {
        done.lag.record((pg_now_micros() - oldest) / 1000, group.transactions);
    }
    group.transactions = 0;
    if let Some(first) = first_change {
        done.busy = first.elapsed();
    }
}

async fn commit(
    applier: &mut Applier,
    client: &ReplicationClient,
    pending: &mut Option<Lsn>,
    applied: &mut Lsn,
) -> Result<(), UserError> {
    if let Some(lsn) = pending.take() {
        applier.commit(&lsn.to_pg_string()).await?;
        // the source may recycle its WAL only once the target has committed
        client.update_applied_lsn(lsn);
        *applied = lsn;
    }
    Ok(())
}

/// How far the applied position is behind the source's WAL, and how much WAL the slot retains.
async fn lag(catalog: &Client, slot: &str, applied: Lsn) -> Option<(i64, i64)> {
    let row = catalog
        .query_opt(
            "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), $2::text::pg_lsn)::bigint, \
                    pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot, &applied.to_pg_string()],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get::<_, Option<i64>>(1).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_percentiles_come_from_the_buckets() {
        let mut h = LagHistogram::default();
        assert_eq!(h.percentile(0.5), None);
        h.record(10, 98);
        h.record(250, 1);
        h.record(90_000, 1);
        assert_eq!(h.percentile(0.5), Some(10));
        assert_eq!(h.percentile(0.99), Some(250));
        assert_eq!(h.percentile(1.0), Some(60_000));
    }
}

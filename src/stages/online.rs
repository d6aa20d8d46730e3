//! Online migration's two stages: the catch-up, which applies the source's changes since the
//! copy's snapshot while the application still writes, until writes have stopped; and the cutover,
//! which drains what is left, sets the sequences and drops the slot and the publication, so that
//! verify (the stage after) proves two quiet databases equal. The window is from writes stopped to
//! verified.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;

use crate::catalog;
use crate::engine::{Stage, StageContext, StageError};
use crate::error::UserError;
use crate::online::apply::Applier;
use crate::online::live_hashes::LiveHashes;
use crate::online::slot::{self, parse_lsn, CutoverRequest, OnlineState};
use crate::online::stream::{follow, Handover, Until};
use crate::online::{preflight, unlogged, OnlineSlot};
use crate::plan::allow::AllowList;
use crate::postgres::conn::ConnSpec;
use crate::timescaledb::caggs::{self, RefreshState};
use crate::timescaledb::chunks::{self, ChunkState};
use crate::timescaledb::features::read_aggregates;
use crate::verify::VerifyOptions;

fn run_dir(ctx: &StageContext) -> Result<&Path, UserError> {
    ctx.run_dir().ok_or_else(|| UserError::new("online: no run directory", "run it with pgshift run --online"))
}

fn state_of(dir: &Path) -> Result<OnlineState, UserError> {
    OnlineState::load(dir).ok_or_else(|| {
        UserError::new(
            format!("online: {} names no slot: the backup did not make one", dir.join(slot::ONLINE_STATE).display()),
            "start the migration again: pgshift run --online --restart",
        )
    })
}

/// Where streaming starts: the position stored on the target by an earlier catch-up, else the
/// slot's snapshot.
async fn start_of(applier: &Applier, state: &OnlineState) -> Result<pgwire_replication::Lsn, UserError> {
    let stored = applier.stored_position().await?;
    let text = stored.as_deref().unwrap_or(&state.consistent_lsn);
    parse_lsn(text).ok_or_else(|| UserError::new(format!("online: {text} is not a WAL position"), "run with --restart"))
}

/// Stage: apply the changes made on the source since the snapshot, until writes stop.
pub struct CatchUpStage {
    source: ConnSpec,
    target: ConnSpec,
    quiet: Duration,
    holder: OnlineSlot,
    handover: Handover,
    live: Option<(Arc<LiveHashes>, VerifyOptions, AllowList)>,
}

/// How long the catch-up applies before it measures both sides for live verification, and the
/// pause between two passes.
const LIVE_HASH_AFTER: Duration = Duration::from_secs(2);
const LIVE_PASS_PAUSE: Duration = Duration::from_secs(3);

impl CatchUpStage {
    /// `handover` is shared with the run's cutover stage.
    pub fn new(source: ConnSpec, target: ConnSpec, quiet: Duration, holder: OnlineSlot, handover: Handover) -> Self {
        Self { source, target, quiet, holder, handover, live: None }
    }

    /// Measures both sides during the catch-up (as verify would, with `options` and the plan's
    /// planned differences `allow`) into `live`.
    pub fn with_live(mut self, live: Arc<LiveHashes>, options: VerifyOptions, allow: AllowList) -> Self {
        self.live = Some((live, options, allow));
        self
    }

    /// Live verification: both sides measured while the stream applies, in passes; what it leaves
    /// alone until the cutover is not read again inside the window. Never fails the catch-up, and
    /// ends with it.
    async fn measure_live(&self, ctx: &StageContext) {
        let Some((live, options, allow)) = &self.live else { return std::future::pending().await };
        let Some(state) = ctx.run_dir().and_then(OnlineState::load) else { return std::future::pending().await };
        let (source, target) = (ctx.tagged(&self.source), ctx.tagged(&self.target));
        tokio::time::sleep(LIVE_HASH_AFTER).await;
        let mut drift_seen: Vec<String> = Vec::new();
        loop {
            let pass = live.pass(&source, &target, &state.publication, *options, allow).await;
            if let Ok(p) = &pass {
                // said when it changes: red in the console at once, not at the cutover's verify
                if p.drift != drift_seen {
                    if p.drift.is_empty() {
                        ctx.info("catch-up", "live verification: the catalogs agree again").await;
                    } else {
                        ctx.warning(format!(
                            "live verification: the catalogs differ now ({} difference(s): {}{}): a schema change \
                             on one side? The stream does not carry DDL: make the same change on the other side, or \
                             the cutover's verify fails",
                            p.drift.len(),
                            p.drift.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
                            if p.drift.len() > 5 { "; ..." } else { "" }
                        ))
                        .await;
                    }
                    drift_seen = p.drift.clone();
                }
            }
            match pass {
                Ok(p) if p.first || p.measured > 0 => {
                    ctx.info(
                        "catch-up",
                        format!(
                            "live verification: {} tables and chunks ({} source rows) {} on both sides in {:.1} s ({} \
                             agree now, the rest differ by the lag); {} of {} current, {} still being written (left \
                             for a later pass or the cutover)",
                            p.measured,
                            p.rows,
                            if options.checksums { "counted and hashed" } else { "counted" },
                            p.seconds,
                            p.agree,
                            p.current,
                            p.candidates,
                            p.hot
                        ),
                    )
                    .await
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.info(
                        "catch-up",
                        format!("live verification left out: {} (the cutover's verify reads everything)", e.message),
                    )
                    .await;
                    return std::future::pending().await;
                }
            }
            tokio::time::sleep(LIVE_PASS_PAUSE).await;
        }
    }
}

impl Stage for CatchUpStage {
    fn id(&self) -> &'static str {
        "catch-up"
    }

    fn title(&self) -> &'static str {
        "Online catch-up"
    }

    fn preflight<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            let own = ctx.run_dir().and_then(OnlineState::load).map(|s| s.slot);
            for note in preflight::check(&self.source, own.as_deref()).await? {
                ctx.info("catch-up", note).await;
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let dir = run_dir(ctx)?;
            self.holder.release().await;
            let mut state = state_of(dir)?;
            let mut applier = Applier::open(&ctx.tagged(&self.target), &state.slot).await?;
            if let Some((live, _, _)) = &self.live {
                applier.record_into(live.touched());
            }
            let start = start_of(&applier, &state).await?;
            ctx.info(
                "catch-up",
                format!(
                    "applying the source's changes from {start} (slot {}); it ends once the source has had no write for {} s, or at once on pgshift online cutover",
                    state.slot,
                    self.quiet.as_secs()
                ),
            )
            .await;
            // the measuring stops with the catch-up (the stream's end is what matters)
            let (done, live) = {
                let following = follow(ctx, &self.source, &state, &mut applier, start, Until::Quiet(self.quiet), None);
                let measuring = self.measure_live(ctx);
                tokio::pin!(following, measuring);
                let mut measured = false;
                loop {
                    tokio::select! {
                        r = &mut following => break r?,
                        _ = &mut measuring, if !measured => measured = true,
                    }
                }
            };
            if let Some(old) = self.handover.lock().await.replace(live) {
                old.close();
            }
            // the window starts when the DBA said writes stopped, else at the last write seen
            state.writes_stopped_at = Some(match &done.requested {
                Some(r) => r.requested_at.clone(),
                None => {
                    chrono::DateTime::<chrono::Utc>::from(done.last_write.unwrap_or_else(SystemTime::now)).to_rfc3339()
                }
            });
            // recorded by the stream when it made the source read-only (not when it already was)
            state.source_read_only = OnlineState::load(dir).is_some_and(|s| s.source_read_only);
            state.save(dir)?;
            let how = if done.requested.is_some() { "cutover requested" } else { "writes stopped" };
            let ms = |p: f64| done.lag.percentile(p).map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
            Ok(format!(
                "{} changes in {} transactions applied at {:.0} changes/s (lag p50 {}, p99 {}); {how}, the target is \
                 at {}",
                done.changes,
                done.transactions,
                done.rate(),
                ms(0.5),
                ms(0.99),
                done.position
            ))
        })
    }
}

/// Stage: the last changes, the sequences, and the slot and publication dropped.
pub struct CutoverStage {
    source: ConnSpec,
    target: ConnSpec,
    handover: Handover,
    /// `[tuning] compress_chunks`: without it, chunks are not compressed on the target.
    compress_chunks: bool,
    live: Option<Arc<LiveHashes>>,
}

impl CutoverStage {
    pub fn new(source: ConnSpec, target: ConnSpec, handover: Handover, compress_chunks: bool) -> Self {
        Self { source, target, handover, compress_chunks, live: None }
    }

    /// Its drain records what it touches, as the catch-up's stream does.
    pub fn with_live(mut self, live: Arc<LiveHashes>) -> Self {
        self.live = Some(live);
        self
    }
}

async fn has_chunks(c: &tokio_postgres::Client) -> bool {
    c.query_one("SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL", &[]).await.is_ok_and(|r| r.get(0))
}

async fn chunk_states(c: &tokio_postgres::Client, side: &str) -> Result<Vec<ChunkState>, UserError> {
    c.query(chunks::CHUNK_STATES, &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        .map_err(|e| {
            UserError::new(
                format!("{side}: reading the chunks failed ({})", catalog::db_message(&e)),
                "check the server",
            )
        })
}

impl CutoverStage {
    /// Runs one of the cutover's statements on the target; a failure names it, with the fix.
    async fn on_target(&self, target: &tokio_postgres::Client, what: &str, sql: &str) -> Result<(), UserError> {
        target.batch_execute(sql).await.map_err(|e| {
            UserError::new(
                format!("target {}: {what} failed ({})", self.target.label(), catalog::db_message(&e)),
                "fix the target, then run again (the slot is kept)",
            )
        })
    }

    /// Drops the target's chunks the source dropped during the catch-up (not in the stream: DDL),
    /// and compresses (or decompresses) those the source's jobs compressed (or decompressed): the
    /// stream skips both, as TimescaleDB's own rewrites.
    async fn match_compression(
        &self,
        ctx: &StageContext,
        source: &tokio_postgres::Client,
        target: &tokio_postgres::Client,
    ) -> Result<(), UserError> {
        let (on_source, on_target) = (chunk_states(source, "source").await?, chunk_states(target, "target").await?);
        for (chunk, sql) in chunks::dropped_on_source(&on_source, &on_target) {
            ctx.info("cutover", format!("{chunk} was dropped on the source since the copy (retention?): {sql}")).await;
            self.on_target(target, &sql, &sql).await?;
        }
        let mut todo = chunks::compression_to_match(&on_source, &on_target);
        // the plan said not to compress on the target (`[tuning] compress_chunks = false`)
        todo.retain(|(_, sql)| self.compress_chunks || !sql.starts_with("SELECT compress_chunk"));
        for (chunk, sql) in &todo {
            ctx.info("cutover", format!("{chunk}: {sql}")).await;
            self.on_target(target, sql, sql).await?;
        }
        if !todo.is_empty() {
            ctx.info("cutover", format!("{} chunks compressed or decompressed as the source's jobs did", todo.len()))
                .await;
        }
        Ok(())
    }
}

impl Stage for CutoverStage {
    fn id(&self) -> &'static str {
        "cutover"
    }

    fn title(&self) -> &'static str {
        "Online cutover"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let dir = run_dir(ctx)?;
            let state = state_of(dir)?;
            // one session on each side for the whole cutover (each new one costs the window a
            // connection's setup), opened beside the applier's
            let (src_spec, dst_spec) = (ctx.tagged(&self.source), ctx.tagged(&self.target));
            let (src_reads, dst_reads) = (src_spec.for_catalog_reads(), dst_spec.for_catalog_reads());
            let (mut applier, source, target) = tokio::try_join!(
                Applier::open(&dst_spec, &state.slot),
                slot::writable_session(&src_reads),
                dst_reads.connect()
            )?;
            if let Some(live) = &self.live {
                applier.record_into(live.touched());
            }
            let start = start_of(&applier, &state).await?;
            // the aggregates' refresh state is read before the drain's marker is written: every
            // refresh it reflects is then in the stream before the marker, so applied
            let aggregates = read_aggregates(&source).await?;
            let refresh = if aggregates.is_empty() {
                None
            } else {
                Some(RefreshState::read(&source).await.map_err(|e| {
                    UserError::new(
                        format!(
                            "source: reading the continuous aggregates' refresh state failed ({})",
                            catalog::db_message(&e)
                        ),
                        "connect to the source as a superuser",
                    )
                })?)
            };
            let live = self.handover.lock().await.take();
            ctx.info(
                "cutover",
                format!(
                    "draining: every change up to the source's current position ({})",
                    if live.is_some() { "on the catch-up's stream" } else { "a new stream from the stored position" }
                ),
            )
            .await;
            let step = Instant::now();
            let (done, live) = follow(ctx, &self.source, &state, &mut applier, start, Until::Drained, live).await?;
            live.close();
            ctx.info("cutover", format!("drained in {:.1} s", step.elapsed().as_secs_f64())).await;
            let step = Instant::now();
            if done.changes > 0 {
                ctx.warning(format!(
                    "{} changes arrived after writes were thought stopped: the application may still write",
                    done.changes
                ))
                .await;
            }
            // writes stopped: what the stream cannot carry is copied as it now is
            let again = unlogged::copy_again(&source, &target, &src_spec, &dst_spec).await?;
            if !again.is_empty() {
                let rows: u64 = again.iter().map(|(_, n)| n).sum();
                let names: Vec<&str> = again.iter().map(|(t, _)| t.as_str()).collect();
                ctx.info(
                    "cutover",
                    format!(
                        "{} unlogged table(s) copied again, {rows} rows (their changes are not in the WAL): {}",
                        again.len(),
                        names.join(", ")
                    ),
                )
                .await;
            }
            let setvals = catalog::sequences::setvals_on(&source).await.map_err(|e| {
                UserError::new(
                    format!("source {}: reading sequences failed ({})", src_spec.label(), catalog::db_message(&e)),
                    "connect as a superuser or a role that may read every sequence",
                )
            })?;
            if has_chunks(&source).await && has_chunks(&target).await {
                self.match_compression(ctx, &source, &target).await?;
            }
            // the refreshes the catch-up replicated moved the source's watermarks and logs
            if let Some(state) = &refresh {
                for (what, sql) in caggs::state_statements(&aggregates, state) {
                    self.on_target(&target, &format!("writing the {what}"), &sql).await?;
                }
                ctx.info(
                    "cutover",
                    format!("{} continuous aggregates: refresh state as the source's", aggregates.len()),
                )
                .await;
                // the stream left their materializations alone
                for (view, sql) in caggs::old_form_refreshes(&aggregates) {
                    ctx.warning(caggs::old_form_warning(&view)).await;
                    self.on_target(&target, &format!("the refresh of {view}"), &sql).await?;
                }
            }
            for sql in &setvals {
                self.on_target(&target, "setting a sequence", sql).await?;
            }
            if let Some(live) = &self.live {
                live.mark_drained();
            }
            ctx.info(
                "cutover",
                format!(
                    "{} sequences set to the source's values ({:.1} s with the chunks and aggregates)",
                    setvals.len(),
                    step.elapsed().as_secs_f64()
                ),
            )
            .await;
            let step = Instant::now();
            if let Some(live) = &self.live {
                live.confirm_published(&ctx.tagged(&self.source), &state.publication).await;
            }
            slot::drop_slot_on(&source, &src_spec, &state.slot, &state.publication).await?;
            for (_, why) in slot::reset_identities_on(&source, &state.identity_full, &state.identity_was_nothing).await
            {
                ctx.warning(why).await;
            }
            applier.drop_position().await?;
            CutoverRequest::clear(dir);
            ctx.info(
                "cutover",
                format!(
                    "slot and publication {} dropped on the source ({:.1} s)",
                    state.slot,
                    step.elapsed().as_secs_f64()
                ),
            )
            .await;
            let since =
                state.writes_stopped_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(
                    |t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as f64 / 1000.0,
                );
            Ok(match since {
                Some(s) => format!(
                    "drained at {}; {} sequences set; slot dropped; {s:.1} s since writes stopped (verify follows)",
                    done.position,
                    setvals.len()
                ),
                None => format!("drained at {}; {} sequences set; slot dropped", done.position, setvals.len()),
            })
        })
    }
}

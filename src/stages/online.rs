//! Online migration's two stages: the catch-up, which applies the source's changes since the
//! copy's snapshot while the application still writes, until writes have stopped; and the cutover,
//! which drains what is left, sets the sequences and drops the slot and the publication, so that
//! verify (the stage after) proves two quiet databases equal. The window is from writes stopped to
//! verified.

use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use crate::catalog::{self, Session};
use crate::engine::{Stage, StageContext, StageError};
use crate::error::UserError;
use crate::online::apply::Applier;
use crate::online::slot::{self, parse_lsn, OnlineState};
use crate::online::stream::{follow, Until};
use crate::online::{preflight, OnlineSlot};
use crate::postgres::conn::ConnSpec;

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
}

impl CatchUpStage {
    pub fn new(source: ConnSpec, target: ConnSpec, quiet: Duration, holder: OnlineSlot) -> Self {
        Self { source, target, quiet, holder }
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
            let start = start_of(&applier, &state).await?;
            ctx.info(
                "catch-up",
                format!(
                    "applying the source's changes from {start} (slot {}); it ends once the source has had no write for {} s",
                    state.slot,
                    self.quiet.as_secs()
                ),
            )
            .await;
            let done = follow(ctx, &self.source, &state, &mut applier, start, Until::Quiet(self.quiet)).await?;
            let stopped = done.last_write.unwrap_or_else(SystemTime::now);
            state.writes_stopped_at = Some(chrono::DateTime::<chrono::Utc>::from(stopped).to_rfc3339());
            state.save(dir)?;
            let ms = |p: f64| done.lag.percentile(p).map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
            Ok(format!(
                "{} changes in {} transactions applied at {:.0} changes/s (lag p50 {}, p99 {}); writes stopped, \
                 the target is at {}",
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
}

impl CutoverStage {
    pub fn new(source: ConnSpec, target: ConnSpec) -> Self {
        Self { source, target }
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
            let mut applier = Applier::open(&ctx.tagged(&self.target), &state.slot).await?;
            let start = start_of(&applier, &state).await?;
            ctx.info("cutover", "draining: every change up to the source's current position").await;
            let done = follow(ctx, &self.source, &state, &mut applier, start, Until::Drained).await?;
            if done.changes > 0 {
                ctx.warning(format!(
                    "{} changes arrived after writes were thought stopped: the application may still write",
                    done.changes
                ))
                .await;
            }
            let session = Session::open(&ctx.tagged(&self.source)).await?;
            let setvals = catalog::sequences::setvals(&session).await?;
            drop(session);
            let target = ctx.tagged(&self.target).connect().await?;
            for sql in &setvals {
                target.batch_execute(sql).await.map_err(|e| {
                    UserError::new(
                        format!(
                            "target {}: setting a sequence failed ({})",
                            self.target.label(),
                            catalog::db_message(&e)
                        ),
                        "fix the target, then run again",
                    )
                })?;
            }
            ctx.info("cutover", format!("{} sequences set to the source's values", setvals.len())).await;
            slot::drop_slot(&ctx.tagged(&self.source), &state.slot, &state.publication).await?;
            applier.drop_position().await?;
            ctx.info("cutover", format!("slot and publication {} dropped on the source", state.slot)).await;
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

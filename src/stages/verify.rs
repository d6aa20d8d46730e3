//! Stage 7 — Verify: the side-by-side proof, source against target, with the plan's planned
//! differences allowed; the reports go into the run directory. The run succeeds only if it is clean.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::engine::run_files::{VERIFY_JSON, VERIFY_MARKDOWN};
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::online::live_hashes::LiveHashes;
use crate::plan::allow::{AllowList, AllowRule, Change};
use crate::postgres::conn::ConnSpec;
use crate::timescaledb::jobs::{release_jobs, MadeJobs};
use crate::verify::report;
use crate::verify::{verify_watched, VerifyOptions, VerifyProgress};

pub struct VerifyStage {
    source: ConnSpec,
    target: ConnSpec,
    allow: AllowList,
    options: VerifyOptions,
    live: Option<Arc<LiveHashes>>,
}

impl VerifyStage {
    pub fn new(source: ConnSpec, target: ConnSpec, allow: AllowList, options: VerifyOptions) -> Self {
        Self { source, target, allow, options, live: None }
    }

    /// After an online cutover: takes the catch-up's measurements of what its stream left alone.
    pub fn with_live(mut self, live: Arc<LiveHashes>) -> Self {
        self.live = Some(live);
        self
    }
}

impl Stage for VerifyStage {
    fn id(&self) -> &'static str {
        "verify"
    }

    fn title(&self) -> &'static str {
        "Verify: objects, definitions, grants, rows and checksums, source against target"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let source = ctx.tagged(&self.source);
            let target = ctx.tagged(&self.target);
            // rows counted (or hashed) table by table on each side, shown as one gauge of tables
            let progress = VerifyProgress::default();
            let read = || {
                let ((sd, st, _), (td, tt, _)) = (progress.source.get(), progress.target.get());
                (sd + td, Some(st + tt))
            };
            let online = ctx.run_dir().and_then(crate::online::slot::OnlineState::load);
            let mut allow = self.allow.clone();
            if online.as_ref().is_some_and(|s| s.source_read_only) {
                // the DBA asked the cutover to make the source read-only: not the target's to copy
                allow = allow.with(vec![AllowRule {
                    class: "database".into(),
                    name: "setting default_transaction_read_only".into(),
                    change: Change::Missing,
                    reason: Some("the cutover made the source read-only (pgshift online cutover --read-only)".into()),
                }])?;
            }
            // the catch-up's measurements hold only if nothing wrote the source after the drain:
            // shown by a read-only cutover, not by the DBA's word that writes stopped
            let reuse = match (&self.live, &online) {
                (Some(live), Some(state)) if state.source_read_only => live.untouched(&source, &target).await,
                (Some(_), Some(_)) => {
                    ctx.info(
                        "verify",
                        "every table is read again: only a read-only cutover (pgshift online cutover --read-only) \
                         proves the source quiet after the drain, so that the catch-up's measurements can be used",
                    )
                    .await;
                    None
                }
                _ => None,
            };
            let item = if self.options.checksums { "tables counted and hashed" } else { "tables counted" };
            let work = ctx.metered(
                item,
                Unit::Tables,
                read,
                verify_watched(&source, &target, &allow, self.options, Some(&progress), reuse.as_ref()),
            );
            let r = tokio::select! {
                r = work => r?,
                _ = ctx.cancel_token().cancelled() => return Err(StageError::Cancelled),
            };
            let text = report::verify_text(&r);
            for line in text.lines() {
                ctx.info("verify", line).await;
            }
            if let Some(dir) = ctx.run_dir() {
                let json = serde_json::to_string_pretty(&r).expect("report serializes");
                for (name, body) in [(VERIFY_JSON, json), (VERIFY_MARKDOWN, report::verify_markdown(&r))] {
                    let path = dir.join(name);
                    write_atomic(&path, body.as_bytes()).map_err(|e| write_error(&path, &e))?;
                }
            }
            if r.clean {
                // the target's jobs were held while the migration wrote and verified: let them run
                let released = match ctx.run_dir() {
                    Some(dir) => release_jobs(&target, dir).await?,
                    None => 0,
                };
                if released > 0 {
                    ctx.info(
                        "verify",
                        format!("{released} TimescaleDB job(s) released: each runs next when the source's would have"),
                    )
                    .await;
                }
                // an online run's window: from writes stopped (or the cutover request) to verified
                let window = online
                    .and_then(|s| s.writes_stopped_at)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| {
                        (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds().max(0) as f64 / 1000.0
                    })
                    .map(|s| format!("; online window {s:.1} s (writes stopped → verified)"))
                    .unwrap_or_default();
                Ok(format!(
                    "clean: no differences beyond {} planned; reports in verify.json and verify.md{window}",
                    r.planned
                ))
            } else {
                let held = ctx.run_dir().map(|d| MadeJobs::load(d).held.len()).unwrap_or(0);
                if held > 0 {
                    ctx.warning(format!(
                        "{held} TimescaleDB job(s) on the target stay held (next start: infinity) until verify passes"
                    ))
                    .await;
                }
                let (message, fix) = if r.unexpected == 0 {
                    (
                        format!(
                            "verify found no difference but could not compare everything ({} warning(s))",
                            r.warnings.len()
                        ),
                        "read the warnings above (what could not be read, and why), fix the cause, then run again",
                    )
                } else {
                    (
                        format!("verify found {} unexpected difference(s) between source and target", r.unexpected),
                        "read the differences above (and verify.md in the run directory); fix them or add [[allow]] \
                         entries to the plan for planned ones, then run again",
                    )
                };
                Err(UserError::new(message, fix).into())
            }
        })
    }
}

//! Stage 6a — TimescaleDB, after the data, indexes and constraints: what the source's TimescaleDB
//! holds beyond its hypertables and their rows is recreated on the target, in this order:
//! compression settings (a hypertable's, or a continuous aggregate's through its view); the chunks compressed on the
//! source, compressed again — attached in their copied compressed form where the data stage could
//! copy it, else compressed by TimescaleDB; the indexes of the aggregates' materializations; the
//! state their refreshes reached (threshold, watermark, invalidation logs), so the materialized
//! history is kept and the first refresh starts where the source's would; and the jobs and
//! policies, made by their owners with the source's schedule, config and paused state — held until
//! the final verify passes (the verify stage releases them). Hypertables and the aggregates' (empty)
//! views are made by the schema stage; none of this runs under the Apache license (the license
//! pre-flight refuses such a migration before anything is written).

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

use crate::catalog;
use crate::engine::run_files::COMPRESSED_CHUNKS;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::plan::HypertablePlan;
use crate::postgres::conn::ConnSpec;
use crate::timescaledb::caggs::{self, CaggIndex, RefreshState};
use crate::timescaledb::chunks::{self, CompressionWork};
use crate::timescaledb::jobs::{self, HeldJob, MadeJobs};
use crate::timescaledb::{materializations, read_features, with_planned, Features};

pub struct TimescaleStage {
    source: ConnSpec,
    target: ConnSpec,
    compress_chunks: bool,
    planned: Vec<HypertablePlan>,
}

impl TimescaleStage {
    pub fn new(source: ConnSpec, target: ConnSpec, compress_chunks: bool, planned: Vec<HypertablePlan>) -> Self {
        Self { source, target, compress_chunks, planned }
    }
}

impl TimescaleStage {
    fn fail<'a>(&'a self, what: &'a str) -> impl Fn(tokio_postgres::Error) -> UserError + 'a {
        move |e| {
            catalog::failed_query(
                &self.target,
                &format!("{what} failed on the target"),
                &e,
                "check the target's TimescaleDB version and license (pgshift env status)",
            )
        }
    }

    async fn execute(
        &self,
        ctx: &StageContext,
        target: &Client,
        statements: &[(String, String)],
    ) -> Result<(), UserError> {
        for (what, sql) in statements {
            ctx.info("timescaledb", format!("{what}: {}", first_line(sql))).await;
            target.batch_execute(sql).await.map_err(self.fail(what))?;
        }
        Ok(())
    }

    /// Compression settings for what has none yet on the target (a rerun finds them set).
    async fn compression_settings(
        &self,
        ctx: &StageContext,
        target: &Client,
        f: &Features,
    ) -> Result<usize, UserError> {
        let enabled: Vec<String> = target
            .query(
                "SELECT format('%I.%I', hypertable_schema, hypertable_name) FROM timescaledb_information.hypertables
                 WHERE compression_enabled
                 UNION SELECT format('%I.%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates
                 WHERE compression_enabled",
                &[],
            )
            .await
            .map_err(self.fail("reading compression settings"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let todo: Vec<_> = f.compression.iter().filter(|c| !enabled.contains(&c.hypertable)).cloned().collect();
        self.execute(ctx, target, &caggs::compression_statements(&todo)).await?;
        Ok(todo.len())
    }

    /// The chunks compressed on the source, compressed on the target. Returns (attached as copied,
    /// compressed again).
    async fn compress(&self, ctx: &StageContext, target: &Client, f: &Features) -> Result<(usize, usize), UserError> {
        let work = ctx.run_dir().and_then(|d| std::fs::read_to_string(d.join(COMPRESSED_CHUNKS)).ok());
        let work: CompressionWork = match work {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                UserError::new(format!("{COMPRESSED_CHUNKS} is unreadable: {e}"), "run again with --restart")
            })?,
            // data copied some other way: compress by the source's ranges
            None => CompressionWork {
                by_range: f.compressed_until.iter().map(|(t, _)| t.clone()).collect(),
                ..Default::default()
            },
        };
        // every chunk of the target, and whether it is compressed already (a rerun)
        let states: std::collections::HashMap<String, bool> = target
            .query(
                "SELECT format('%I.%I', chunk_schema, chunk_name), is_compressed FROM timescaledb_information.chunks",
                &[],
            )
            .await
            .map_err(self.fail("reading the target's chunks"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let total = work.chunks.len() as u64;
        let (mut attached, mut again) = (0, 0);
        if total > 0 {
            ctx.progress("compressed chunks", 0, Some(total), Unit::Steps).await;
        }
        for (i, c) in work.chunks.iter().enumerate() {
            let Some(&compressed) = states.get(&c.chunk) else {
                return Err(UserError::new(
                    format!(
                        "the data stage recorded {} of {} as loaded, but the target has no such chunk: the target lost \
                         work it had committed",
                        c.chunk, c.hypertable
                    ),
                    "run again with --restart (a crash of a target running with fsync or synchronous_commit off \
                     loses acknowledged commits)",
                ));
            };
            // a staged chunk is always attached: its compressed rows are nowhere else on the target
            if compressed || (c.staged.is_none() && !self.compress_chunks) {
                continue;
            }
            let what = match &c.staged {
                Some(_) => format!("compressed part of {} attached as copied", c.chunk),
                None => format!("{} compressed", c.chunk),
            };
            target.batch_execute(&chunks::compress_sql(c)).await.map_err(self.fail(&what))?;
            if c.staged.is_some() {
                attached += 1;
            } else {
                again += 1;
            }
            ctx.progress("compressed chunks", i as u64 + 1, Some(total), Unit::Steps).await;
        }
        if attached + again > 0 {
            ctx.info(
                "timescaledb",
                format!("{attached} chunk(s) attached in their copied compressed form, {again} compressed again"),
            )
            .await;
        }
        if self.compress_chunks {
            for table in &work.by_range {
                let Some((_, until)) = f.compressed_until.iter().find(|(t, _)| t == table) else { continue };
                self.compress_up_to(ctx, target, table, until).await?;
            }
        }
        Ok((attached, again))
    }

    /// Compresses `table`'s chunks older than `until` (its chunks differ from the source's), one
    /// chunk at a time so that the gauge moves.
    async fn compress_up_to(
        &self,
        ctx: &StageContext,
        target: &Client,
        table: &str,
        until: &str,
    ) -> Result<(), UserError> {
        let what = format!("compression of {table}'s chunks up to {until} (its chunks differ from the source's)");
        let chunks: Vec<String> = target
            .query(
                "SELECT c::text FROM show_chunks($1::text::regclass, older_than => $2::text::timestamptz) c",
                &[&table, &until],
            )
            .await
            .map_err(self.fail(&what))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ctx.info("timescaledb", format!("{what}: {} chunk(s)", chunks.len())).await;
        let item = format!("chunks of {table} compressed");
        let total = chunks.len() as u64;
        for (i, chunk) in chunks.iter().enumerate() {
            ctx.progress(&item, i as u64, Some(total), Unit::Steps).await;
            target
                .execute("SELECT compress_chunk($1::text::regclass, if_not_compressed => true)", &[chunk])
                .await
                .map_err(self.fail(&format!("compression of {chunk}")))?;
        }
        if total > 0 {
            ctx.progress(&item, total, Some(total), Unit::Steps).await;
        }
        Ok(())
    }

    /// The source aggregates' indexes on the target's materializations, and their refresh state.
    async fn aggregates(
        &self,
        ctx: &StageContext,
        source: &Client,
        target: &Client,
        f: &Features,
    ) -> Result<(), UserError> {
        if f.continuous_aggregates.is_empty() {
            return Ok(());
        }
        let src = |what: &'static str| {
            move |e: tokio_postgres::Error| {
                UserError::new(
                    format!("reading the source's {what}: {}", catalog::db_message(&e)),
                    "connect as a superuser",
                )
            }
        };
        let indexes: Vec<(CaggIndex, String)> = source
            .query(caggs::CAGG_INDEXES, &[])
            .await
            .map_err(src("continuous aggregate indexes"))?
            .iter()
            .map(|r| (CaggIndex { view: r.get(0), name: r.get(1), unique: r.get(2), using: r.get(3) }, r.get(4)))
            .collect();
        let targets = materializations(target).await.map_err(self.fail("reading continuous aggregates"))?;
        let lookup = |view: &str| targets.get(view).cloned();
        self.execute(ctx, target, &caggs::index_statements(&indexes, &lookup)).await?;

        let state = RefreshState::read(source).await.map_err(src("continuous aggregates' refresh state"))?;
        self.execute(ctx, target, &caggs::state_statements(&f.continuous_aggregates, &state)).await?;
        for (view, sql) in caggs::old_form_refreshes(&f.continuous_aggregates) {
            ctx.warning(caggs::old_form_warning(&view)).await;
            self.execute(ctx, target, &[(format!("refresh of {view}"), sql)]).await?;
        }
        Ok(())
    }

    /// The source's jobs, made on the target by their owners, scheduled ones held. A job an earlier,
    /// interrupted attempt made (the same procedure, hypertable and config) is taken over rather
    /// than made twice.
    async fn jobs(&self, ctx: &StageContext, target: &Client, f: &Features) -> Result<(usize, usize), UserError> {
        let (plans, unknown) = jobs::plans(&f.jobs);
        for u in unknown {
            ctx.warning(format!(
                "{u} is a TimescaleDB job pgshift does not know how to recreate: make it again by hand"
            ))
            .await;
        }
        let mut existing: Vec<(i32, String, Option<String>, serde_json::Value)> = target
            .query(&jobs::target_jobs_sql(), &[])
            .await
            .map_err(self.fail("reading the target's jobs"))?
            .iter()
            .map(|r| {
                let config: String = r.get(3);
                let config = serde_json::from_str(&config).unwrap_or(serde_json::Value::Null);
                (r.get(0), r.get(1), r.get(2), jobs::without_ids(&config))
            })
            .collect();
        let dir: Option<PathBuf> = ctx.run_dir().map(Path::to_path_buf);
        let mut made = MadeJobs::default();
        let me: String =
            target.query_one("SELECT current_user::text", &[]).await.map_err(self.fail("reading the user"))?.get(0);
        for p in &plans {
            let fail = self.fail(&p.what);
            let earlier = existing
                .iter()
                .position(|(_, proc, ht, config)| *proc == p.proc && *ht == p.hypertable && *config == p.config)
                .map(|i| existing.remove(i).0);
            match earlier {
                Some(id) => ctx.info("timescaledb", format!("{}: job {id}, made by an earlier attempt", p.what)).await,
                None => ctx.info("timescaledb", format!("{}: {}", p.what, p.create)).await,
            }
            target.batch_execute("BEGIN").await.map_err(&fail)?;
            let result = async {
                let id = match earlier {
                    Some(id) => id,
                    None => {
                        if let Some(role) = p.role.as_ref().filter(|r| **r != crate::postgres::sql::quote_ident(&me)) {
                            target.batch_execute(&format!("SET LOCAL ROLE {role}")).await?;
                        }
                        let id: i32 = target.query_one(&p.create, &[]).await?.get(0);
                        target.batch_execute("RESET ROLE").await?;
                        id
                    }
                };
                target.query(&p.alter, &[&id]).await?;
                Ok::<i32, tokio_postgres::Error>(id)
            }
            .await;
            let id = match result {
                Ok(id) => id,
                Err(e) => {
                    let _ = target.batch_execute("ROLLBACK").await;
                    return Err(fail(e));
                }
            };
            target.batch_execute("COMMIT").await.map_err(&fail)?;
            if p.hold {
                let held = HeldJob {
                    id,
                    what: p.what.clone(),
                    next_start: p.next_start.clone(),
                    timezone: p.timezone.clone(),
                };
                match &dir {
                    Some(d) => {
                        made.held.push(held);
                        made.save(d)?;
                    }
                    // no run directory to remember it in: released at once
                    None => target.batch_execute(&jobs::release_sql(&held)).await.map_err(&fail)?,
                }
            }
        }
        if let Some(d) = &dir {
            made.save(d)?;
        }
        Ok((plans.len(), made.held.len()))
    }
}

fn first_line(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or("").trim();
    if sql.lines().count() > 1 {
        format!("{line} ...")
    } else {
        line.to_string()
    }
}

impl Stage for TimescaleStage {
    fn id(&self) -> &'static str {
        "timescaledb"
    }

    fn title(&self) -> &'static str {
        "TimescaleDB: compression, continuous aggregates, policies and jobs"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let source = ctx.tagged(&self.source).connect().await?;
            let f = with_planned(read_features(&source).await?, &self.planned);
            if f.is_empty() {
                return Ok("no compression, continuous aggregates or jobs on the source".into());
            }
            let target = ctx.tagged(&self.target).connect().await?;
            // what it records as made (jobs) must not vanish in a crash after it said so
            target.batch_execute("SET synchronous_commit = on").await.map_err(self.fail("preparing the session"))?;
            let settings = self.compression_settings(ctx, &target, &f).await?;
            let (attached, again) = self.compress(ctx, &target, &f).await?;
            self.aggregates(ctx, &source, &target, &f).await?;
            let (jobs, held) = self.jobs(ctx, &target, &f).await?;
            let mut parts = vec![format!("{settings} compression setting(s)")];
            if attached + again > 0 {
                parts.push(format!("{attached} chunk(s) attached compressed as copied, {again} compressed again"));
            }
            if !f.continuous_aggregates.is_empty() {
                parts.push(format!(
                    "{} continuous aggregate(s) with their refresh state",
                    f.continuous_aggregates.len()
                ));
            }
            if jobs > 0 {
                parts.push(format!("{jobs} job(s), {held} held until verify passes"));
            }
            Ok(parts.join("; "))
        })
    }
}

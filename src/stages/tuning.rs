//! Stage 8 — Tuning: fresh planner statistics on the target (ANALYZE, or VACUUM ANALYZE when the
//! plan asks), optional `REINDEX ... CONCURRENTLY`, and advice: the indexes the source never used
//! (`pg_stat_user_indexes.idx_scan = 0`, not unique), which cost writes on the new server too.
//! Then the database's own properties and the event triggers' states (held disabled since
//! post-data), which could stop the stages before — the sessions that analyze are opened first,
//! so that no setting of the source's reaches them — and last the statistics, table by table in
//! several sessions, while verify runs beside them (the statistics are not compared).

use futures_util::future::BoxFuture;

use crate::catalog;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::plan::TuningPlan;
use crate::postgres::conn::ConnSpec;

pub struct TuningStage {
    source: ConnSpec,
    target: ConnSpec,
    tuning: TuningPlan,
    /// Target sessions analyzing at once.
    sessions: usize,
}

/// The target's tables and materialized views, each with the bytes it and its descendants hold,
/// largest first: what a database-wide ANALYZE processes (TOAST and temporary tables not), less the
/// partitions and chunks, which the ANALYZE of their partitioned table or hypertable processes.
/// `{chunks}` is a condition on `c` that is true for a TimescaleDB chunk.
fn tables_by_size_sql(chunks: &str) -> String {
    format!(
        "WITH RECURSIVE tree(root, rel) AS (
             SELECT c.oid, c.oid FROM pg_class c WHERE c.relkind IN ('r', 'm', 'p')
             UNION ALL
             SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel
         ), sizes AS (SELECT root, sum(pg_total_relation_size(rel)) AS bytes FROM tree GROUP BY root)
         SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace JOIN sizes s ON s.root = c.oid
          WHERE n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
            AND NOT c.relispartition AND NOT ({chunks})
          ORDER BY s.bytes DESC, 1"
    )
}

/// True for a TimescaleDB chunk, where the catalog is there.
const IS_CHUNK: &str = "EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch
                                 WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname)";

impl TuningStage {
    /// Gives each event trigger the post-data stage held disabled the source's state — last, as
    /// the database's properties, since a DDL guard would refuse the stages' own DDL.
    async fn event_triggers(
        &self,
        ctx: &StageContext,
        source: &tokio_postgres::Client,
        target: &tokio_postgres::Client,
    ) -> Result<usize, StageError> {
        use catalog::event_triggers::{set_state_sql, states_sql};
        let fail = |spec: &ConnSpec, e: tokio_postgres::Error| {
            StageError::Failed(catalog::failed_query(spec, "reading event triggers", &e, "connect as a superuser"))
        };
        let states = source.query(&states_sql(), &[]).await.map_err(|e| fail(&self.source, e))?;
        let present: std::collections::BTreeSet<String> = target
            .query(&states_sql(), &[])
            .await
            .map_err(|e| fail(&self.target, e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut set = 0;
        for row in &states {
            let (name, state): (String, String) = (row.get(0), row.get(1));
            if !present.contains(&name) {
                continue; // verify names it as missing
            }
            let sql = set_state_sql(&name, &state);
            match target.batch_execute(&sql).await {
                Ok(()) => set += 1,
                Err(e) => ctx.warning(format!("{sql}: {}", catalog::db_message(&e))).await,
            }
        }
        if set > 0 {
            ctx.info("tuning", format!("{set} event trigger(s) given the source's state")).await;
        }
        Ok(set)
    }

    pub fn new(source: ConnSpec, target: ConnSpec, tuning: TuningPlan) -> Self {
        Self { source, target, tuning, sessions: 1 }
    }

    /// ANALYZE (or VACUUM) runs table by table in this many sessions at once.
    pub fn with_sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions.max(1);
        self
    }

    /// A query on the target that failed.
    fn target_failed(&self, what: &str, e: tokio_postgres::Error) -> StageError {
        StageError::Failed(catalog::failed_query(&self.target, what, &e, "connect to the target as a superuser"))
    }

    /// The tables to analyze, largest first, and the sessions that will: opened now, before the
    /// database's own settings are given (a `statement_timeout` or `default_transaction_read_only`
    /// of the source's would reach a session opened after).
    async fn statistics_sessions(
        &self,
        ctx: &StageContext,
        client: &tokio_postgres::Client,
    ) -> Result<(Vec<String>, Vec<tokio_postgres::Client>), StageError> {
        let fail = |what: &str, e| self.target_failed(what, e);
        let timescaledb: bool = client
            .query_one("SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL", &[])
            .await
            .map_err(|e| fail("looking for TimescaleDB", e))?
            .get(0);
        let sql = tables_by_size_sql(if timescaledb { IS_CHUNK } else { "false" });
        let tables: Vec<String> =
            client.query(&sql, &[]).await.map_err(|e| fail("listing tables", e))?.iter().map(|r| r.get(0)).collect();
        let mut sessions = Vec::new();
        for _ in 0..self.sessions.min(tables.len().max(1)) {
            sessions.push(ctx.tagged(&self.target).connect().await?);
        }
        Ok((tables, sessions))
    }

    /// `stats` (ANALYZE, or VACUUM (ANALYZE)) of every table in `tables` (largest first), each
    /// session taking the next table when it is done; returns how many tables.
    async fn statistics(
        &self,
        ctx: &StageContext,
        sessions: Vec<tokio_postgres::Client>,
        tables: Vec<String>,
        stats: &str,
    ) -> Result<u64, StageError> {
        let fail = |what: &str, e| self.target_failed(what, e);
        let total = tables.len() as u64;
        let queue = std::sync::Mutex::new(tables.into_iter());
        let done = std::sync::atomic::AtomicU64::new(0);
        let worker = |client: tokio_postgres::Client| async {
            let client = client;
            loop {
                let Some(table) = queue.lock().expect("queue lock").next() else { return Ok::<_, StageError>(()) };
                let sql = format!("{stats} {table}");
                client.batch_execute(&sql).await.map_err(|e| fail(&sql, e))?;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let workers = futures_util::future::try_join_all(sessions.into_iter().map(worker));
        let read = || (done.load(std::sync::atomic::Ordering::Relaxed), Some(total));
        ctx.metered("tables analyzed", Unit::Tables, read, workers).await?;
        Ok(total)
    }
}

impl Stage for TuningStage {
    fn id(&self) -> &'static str {
        "tuning"
    }

    fn title(&self) -> &'static str {
        "Tuning: ANALYZE, optional VACUUM and REINDEX, unused-index advice"
    }

    /// Once the database's properties and the event triggers are given, nothing this stage does
    /// changes what verify compares (unless it reindexes: REINDEX CONCURRENTLY makes `_ccnew`
    /// indexes for a while), so verify runs beside the ANALYZE.
    fn beside_until(&self) -> Option<&'static str> {
        (!self.tuning.reindex).then_some(crate::engine::RUN_END)
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let target = ctx.tagged(&self.target).connect().await?;
            let fail = |what: &str, e| self.target_failed(what, e);
            let stats = if self.tuning.vacuum { "VACUUM (ANALYZE)" } else { "ANALYZE" };
            // the sessions for the statistics first, then the database's own properties (which a
            // session opened later would take)
            let (tables, sessions) = self.statistics_sessions(ctx, &target).await?;
            // REINDEX before the event triggers are given their state (a DDL guard would refuse it)
            let mut reindexed = 0;
            if self.tuning.reindex {
                let tables: Vec<String> = target
                    .query(
                        &format!(
                            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE c.relkind IN ('r', 'm') AND {} AND {} ORDER BY 1",
                            catalog::queries::user_ns("n"),
                            catalog::queries::not_ext("pg_class", "c.oid")
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| fail("listing tables", e))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                // TimescaleDB refuses concurrent index builds on a hypertable: its chunks are reindexed
                let hypertables =
                    crate::timescaledb::hypertables(&target).await.map_err(|e| fail("reading hypertables", e))?;
                for t in tables {
                    let relations: Vec<String> = if hypertables.contains(&t) {
                        target
                            .query("SELECT c::text FROM show_chunks($1::text::regclass) c", &[&t])
                            .await
                            .map_err(|e| fail("listing chunks", e))?
                            .iter()
                            .map(|r| r.get(0))
                            .collect()
                    } else {
                        vec![t.clone()]
                    };
                    for r in relations {
                        ctx.info("tuning", format!("REINDEX TABLE CONCURRENTLY {r}")).await;
                        target
                            .batch_execute(&format!("REINDEX TABLE CONCURRENTLY {r}"))
                            .await
                            .map_err(|e| fail(&format!("REINDEX {r}"), e))?;
                    }
                    reindexed += 1;
                }
            }
            let source = ctx.tagged(&self.source).connect().await?;
            let applied = self.database_properties(ctx, &source, &target).await?;
            let triggers = self.event_triggers(ctx, &source, &target).await?;
            let unused: Vec<(String, String)> = source
                .query(
                    &format!(
                        "SELECT format('%I.%I', s.schemaname, s.indexrelname), pg_size_pretty(pg_relation_size(s.indexrelid))
                         FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
                         WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND {}
                         ORDER BY pg_relation_size(s.indexrelid) DESC",
                        catalog::queries::user_ns_name("s.schemaname")
                    ),
                    &[],
                )
                .await
                .map_err(|e| fail("reading index usage on the source", e))?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for (index, size) in &unused {
                ctx.info(
                    "advice",
                    format!("index {index} ({size}) was never used on the source since its statistics were reset: consider dropping it"),
                )
                .await;
            }
            // nothing below changes what verify compares: it may start
            ctx.release();
            ctx.info(
                "tuning",
                format!("{stats} of the target database, table by table in {} session(s)", sessions.len()),
            )
            .await;
            let analyzed = self.statistics(ctx, sessions, tables, stats).await?;
            Ok(format!(
                "{stats} of {analyzed} table(s) done, {applied} database propert(ies) set, {triggers} event trigger(s) given the source's state, \
                 {reindexed} table(s) reindexed, {} index(es) never used on the source",
                unused.len()
            ))
        })
    }
}

impl TuningStage {
    /// Gives the target database the source's settings, role settings in it, privileges, comment
    /// and connection limit — last, since a setting such as `default_transaction_read_only` or a
    /// `statement_timeout` would stop the stages before. A statement that fails is a warning that
    /// names it (verify then shows the difference).
    async fn database_properties(
        &self,
        ctx: &StageContext,
        source: &tokio_postgres::Client,
        target: &tokio_postgres::Client,
    ) -> Result<usize, StageError> {
        let rows = source.query(catalog::database::PROPERTIES_SQL, &[]).await.map_err(|e| {
            StageError::Failed(catalog::failed_query(
                &self.source,
                "reading the database's properties",
                &e,
                "connect as a superuser",
            ))
        })?;
        let props: Vec<catalog::database::Property> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let mut applied = 0;
        for sql in catalog::database::statements(self.target.dbname(), &props) {
            match target.batch_execute(&sql).await {
                Ok(()) => applied += 1,
                Err(e) => {
                    // a grant made as its grantor runs in a transaction of its own: one that failed
                    // is left aborted, and would fail every statement after it
                    let _ = target.batch_execute("ROLLBACK").await;
                    ctx.warning(format!("{sql}: {}", catalog::db_message(&e))).await
                }
            }
        }
        ctx.info("database", format!("{applied} database property statement(s): settings, privileges, comment, limit"))
            .await;
        Ok(applied)
    }
}

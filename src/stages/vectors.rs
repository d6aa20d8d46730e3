//! Stage 6b — pgvector: the extension, the plan's vector columns (nullable, so compressed
//! hypertables accept them) and their HNSW or IVFFlat indexes, built with the plan's
//! `maintenance_work_mem` and parallel workers while `pg_stat_progress_create_index` is followed
//! and reported (phase, tuples done of total). Dimension limits are checked before anything runs.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::catalog;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::plan::{TuningPlan, VectorPlan};
use crate::postgres::conn::ConnSpec;

/// Largest dimension an HNSW or IVFFlat index takes, per type (pgvector 0.8).
pub fn index_dimension_limit(kind: &str) -> u32 {
    match kind {
        "halfvec" => 4000,
        _ => 2000,
    }
}

fn kind(v: &VectorPlan) -> &str {
    v.kind.as_deref().unwrap_or("vector")
}

fn method(v: &VectorPlan) -> &str {
    v.index.as_deref().unwrap_or("hnsw")
}

fn opclass(v: &VectorPlan) -> String {
    v.opclass.clone().unwrap_or_else(|| format!("{}_cosine_ops", kind(v)))
}

/// Checks one `[[vectors]]` entry; the error names the entry and the fix.
pub fn check(v: &VectorPlan) -> Result<(), UserError> {
    let what = format!("[[vectors]] {}.{}", v.table, v.column);
    if !matches!(kind(v), "vector" | "halfvec") {
        return Err(UserError::new(
            format!("{what}: type \"{}\" is not vector or halfvec", kind(v)),
            "use type = \"vector\" or \"halfvec\"",
        ));
    }
    if v.dimensions == 0 || v.dimensions > 16000 {
        return Err(UserError::new(
            format!("{what}: {} dimensions", v.dimensions),
            "pgvector columns have 1 to 16000 dimensions",
        ));
    }
    match method(v) {
        "none" => return Ok(()),
        "hnsw" | "ivfflat" => {}
        m => {
            return Err(UserError::new(
                format!("{what}: index \"{m}\" is unknown"),
                "use index = \"hnsw\", \"ivfflat\" or \"none\"",
            ))
        }
    }
    let limit = index_dimension_limit(kind(v));
    if v.dimensions > limit {
        let fix = if kind(v) == "vector" && v.dimensions <= 4000 {
            "use type = \"halfvec\" (indexes take up to 4000 dimensions at half precision), or reduce the dimensions"
        } else {
            "reduce the dimensions (e.g. a smaller embedding model), or use index = \"none\""
        };
        return Err(UserError::new(
            format!(
                "{what}: {} indexes on {} take at most {limit} dimensions, not {}",
                method(v),
                kind(v),
                v.dimensions
            ),
            fix,
        ));
    }
    let ops = opclass(v);
    let families = ["_l2_ops", "_ip_ops", "_cosine_ops", "_l1_ops"];
    if !ops.starts_with(kind(v)) || !families.iter().any(|f| ops.ends_with(f)) {
        return Err(UserError::new(
            format!("{what}: operator class {ops} does not fit {}", kind(v)),
            format!("use {k}_l2_ops, {k}_ip_ops, {k}_cosine_ops or {k}_l1_ops", k = kind(v)),
        ));
    }
    if let Some(m) = v.m {
        if !(2..=100).contains(&m) {
            return Err(UserError::new(format!("{what}: m = {m}"), "HNSW m is 2 to 100 (16 is the default)"));
        }
        if v.ef_construction.is_some_and(|ef| ef < 2 * m) {
            return Err(UserError::new(
                format!("{what}: ef_construction below 2 × m"),
                "set ef_construction to at least twice m",
            ));
        }
    }
    if v.lists.is_some_and(|l| l == 0 || l > 32768) {
        return Err(UserError::new(
            format!("{what}: lists out of range"),
            "IVFFlat lists is 1 to 32768 (rows / 1000 is a start)",
        ));
    }
    Ok(())
}

/// Checks one `[[vectors]]` entry against the source: the table exists, and a column of that name
/// already there has the planned type.
pub async fn check_on_source(source: &tokio_postgres::Client, v: &VectorPlan) -> Result<(), UserError> {
    let what = format!("[[vectors]] {}.{}", v.table, v.column);
    let q = |e: tokio_postgres::Error| {
        UserError::new(format!("{what}: {}", catalog::db_message(&e)), "check the table's name (schema.table)")
    };
    let exists: bool = source.query_one("SELECT to_regclass($1) IS NOT NULL", &[&v.table]).await.map_err(q)?.get(0);
    if !exists {
        return Err(UserError::new(
            format!("{what}: no such table on the source"),
            "write it as schema.table, as pgshift inventory lists it",
        ));
    }
    let existing = source
        .query_opt(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[&v.table, &v.column.trim_matches('"')],
        )
        .await
        .map_err(q)?;
    let planned = format!("{}({})", kind(v), v.dimensions);
    if let Some(actual) = existing.map(|r| r.get::<_, String>(0)).filter(|t| *t != planned) {
        return Err(UserError::new(
            format!("{what}: the source's column is {actual}, the plan says {planned}"),
            "make the plan's type and dimensions match the column, or name a new column",
        ));
    }
    Ok(())
}

/// `public.docs` + `embedding` + `hnsw` → `docs_embedding_hnsw_idx` (at most 63 bytes, as
/// PostgreSQL keeps).
pub fn index_name(v: &VectorPlan) -> String {
    let table = v.table.rsplit('.').next().unwrap_or(&v.table).trim_matches('"');
    let mut name = format!("{table}_{}_{}_idx", v.column.trim_matches('"'), method(v));
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// The statement that builds the entry's index.
pub fn index_sql(v: &VectorPlan) -> String {
    let mut with = Vec::new();
    match method(v) {
        "hnsw" => {
            with.push(format!("m = {}", v.m.unwrap_or(16)));
            with.push(format!("ef_construction = {}", v.ef_construction.unwrap_or(64)));
        }
        _ => with.push(format!("lists = {}", v.lists.unwrap_or(100))),
    }
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({} {}) WITH ({})",
        crate::postgres::sql::quote_ident(&index_name(v)),
        v.table,
        method(v),
        v.column,
        opclass(v),
        with.join(", ")
    )
}

/// `512MB` → bytes (PostgreSQL's memory units).
pub fn memory_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().ok()?;
    let unit = match t[split..].trim() {
        "" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some(n * unit)
}

pub struct VectorStage {
    target: ConnSpec,
    vectors: Vec<VectorPlan>,
    tuning: TuningPlan,
    /// The container's /dev/shm, when the target is pgshift's container.
    shm_bytes: Option<u64>,
    /// The source, when the pre-flight checks each entry's table and column there.
    source: Option<ConnSpec>,
}

impl VectorStage {
    pub fn new(target: ConnSpec, vectors: Vec<VectorPlan>, tuning: TuningPlan, shm_bytes: Option<u64>) -> Self {
        Self { target, vectors, tuning, shm_bytes, source: None }
    }

    /// The pre-flight also checks every entry against the source (the tables the target will get):
    /// its table exists, and a column of its name, if there is one, has the planned type.
    pub fn checked_against(mut self, source: ConnSpec) -> Self {
        self.source = Some(source);
        self
    }

    async fn build_index(&self, ctx: &StageContext, v: &VectorPlan) -> Result<(), StageError> {
        let target = ctx.tagged(&self.target);
        let builder = target.connect().await?;
        let watcher = target.connect().await?;
        let q = |e: tokio_postgres::Error| {
            StageError::Failed(catalog::failed_query(
                &self.target,
                &format!("building the vector index on {}.{}", v.table, v.column),
                &e,
                "check maintenance_work_mem against the server's memory and /dev/shm ([tuning] in the plan)",
            ))
        };
        builder
            .batch_execute(&format!(
                "SET maintenance_work_mem = '{}'; SET max_parallel_maintenance_workers = {}",
                self.tuning.maintenance_work_mem.replace('\'', ""),
                self.tuning.parallel_workers
            ))
            .await
            .map_err(q)?;
        let pid: i32 = builder.query_one("SELECT pg_backend_pid()", &[]).await.map_err(q)?.get(0);
        let name = index_name(v);
        let sql = index_sql(v);
        ctx.info("pgvector", format!("$ {sql}")).await;
        let build = builder.batch_execute(&sql);
        tokio::pin!(build);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut phase = String::new();
        loop {
            tokio::select! {
                r = &mut build => { r.map_err(q)?; break; }
                _ = ctx.cancel_token().cancelled() => {
                    let _ = target.cancel(&builder.cancel_token()).await;
                    return Err(StageError::Cancelled);
                }
                _ = tick.tick() => {
                    let row = watcher
                        .query_opt(
                            "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total \
                             FROM pg_stat_progress_create_index WHERE pid = $1",
                            &[&pid],
                        )
                        .await
                        .map_err(q)?;
                    if let Some(r) = row {
                        let p: String = r.get(0);
                        if p != phase {
                            ctx.info("pgvector", format!("{name}: {p}")).await;
                            phase = p;
                        }
                        let (td, tt, bd, bt): (i64, i64, i64, i64) = (r.get(1), r.get(2), r.get(3), r.get(4));
                        if tt > 0 || td > 0 {
                            ctx.progress(&name, td as u64, (tt > 0).then_some(tt as u64), Unit::Rows).await;
                        } else if bt > 0 {
                            ctx.progress(&name, bd as u64, Some(bt as u64), Unit::Steps).await;
                        }
                    }
                }
            }
        }
        ctx.info("pgvector", format!("{name} built")).await;
        Ok(())
    }
}

impl Stage for VectorStage {
    fn id(&self) -> &'static str {
        "pgvector"
    }

    fn title(&self) -> &'static str {
        "pgvector: extension, vector columns, HNSW/IVFFlat indexes"
    }

    fn preflight<'a>(&'a self, _ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            for v in &self.vectors {
                check(v)?;
            }
            if memory_bytes(&self.tuning.maintenance_work_mem).is_none() {
                return Err(UserError::new(
                    format!(
                        "[tuning] maintenance_work_mem = \"{}\" is not a memory size",
                        self.tuning.maintenance_work_mem
                    ),
                    "write it as PostgreSQL does: 512MB, 2GB",
                ));
            }
            if let (Some(source), false) = (&self.source, self.vectors.is_empty()) {
                let client = source.connect().await?;
                for v in &self.vectors {
                    check_on_source(&client, v).await?;
                }
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            if self.vectors.is_empty() {
                return Ok("no vector columns planned".into());
            }
            let client = ctx.tagged(&self.target).connect().await?;
            let q = |what: String, e: tokio_postgres::Error| {
                StageError::Failed(catalog::failed_query(&self.target, &what, &e, "check the plan's [[vectors]] entry"))
            };
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
                .await
                .map_err(|e| q("CREATE EXTENSION vector".into(), e))?;
            if let (Some(shm), Some(mwm)) = (self.shm_bytes, memory_bytes(&self.tuning.maintenance_work_mem)) {
                if self.tuning.parallel_workers > 0 && shm < mwm {
                    ctx.warning(format!(
                        "the container's /dev/shm ({} MiB) is smaller than maintenance_work_mem ({}): parallel index \
                         builds may fail; raise [target.container] shm_mb",
                        shm >> 20,
                        self.tuning.maintenance_work_mem
                    ))
                    .await;
                }
            }
            let mut built = 0;
            for v in &self.vectors {
                let ty = format!("{}({})", kind(v), v.dimensions);
                // nullable and without a default: a compressed hypertable accepts the new column
                client
                    .batch_execute(&format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {ty}", v.table, v.column))
                    .await
                    .map_err(|e| q(format!("adding {}.{}", v.table, v.column), e))?;
                let actual: String = client
                    .query_one(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                         WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped",
                        &[&v.table, &v.column.trim_matches('"')],
                    )
                    .await
                    .map_err(|e| q(format!("reading {}.{}", v.table, v.column), e))?
                    .get(0);
                if actual != ty {
                    return Err(UserError::new(
                        format!("{}.{} exists as {actual}, the plan says {ty}", v.table, v.column),
                        "make the plan's type and dimensions match the column, or name a new column",
                    )
                    .into());
                }
                ctx.info("pgvector", format!("{}.{} {ty}", v.table, v.column)).await;
                if method(v) != "none" {
                    self.build_index(ctx, v).await?;
                    built += 1;
                }
            }
            Ok(format!("{} vector column(s), {built} index(es) built", self.vectors.len()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dims: u32, kind: Option<&str>) -> VectorPlan {
        VectorPlan {
            table: "public.docs".into(),
            column: "embedding".into(),
            dimensions: dims,
            kind: kind.map(String::from),
            index: None,
            opclass: None,
            m: None,
            ef_construction: None,
            lists: None,
        }
    }

    #[test]
    fn dimension_limits_and_the_halfvec_hint() {
        assert!(check(&plan(1536, None)).is_ok());
        let e = check(&plan(3000, None)).unwrap_err();
        assert!(e.message.contains("at most 2000") && e.fix.contains("halfvec"), "{e}");
        assert!(check(&plan(3000, Some("halfvec"))).is_ok());
        let e = check(&plan(5000, Some("halfvec"))).unwrap_err();
        assert!(e.message.contains("at most 4000"), "{e}");
        let mut none = plan(5000, None);
        none.index = Some("none".into());
        assert!(check(&none).is_ok());
    }

    #[test]
    fn index_statements_carry_their_parameters() {
        let mut v = plan(1536, None);
        v.m = Some(24);
        assert_eq!(
            index_sql(&v),
            "CREATE INDEX IF NOT EXISTS docs_embedding_hnsw_idx ON public.docs USING hnsw (embedding vector_cosine_ops) \
             WITH (m = 24, ef_construction = 64)"
        );
        v.index = Some("ivfflat".into());
        v.opclass = Some("vector_l2_ops".into());
        v.lists = Some(50);
        assert!(index_sql(&v).ends_with("USING ivfflat (embedding vector_l2_ops) WITH (lists = 50)"));
        v.opclass = Some("halfvec_l2_ops".into());
        assert!(check(&v).is_err(), "an operator class of another type is refused");
        assert_eq!(memory_bytes("512MB"), Some(512 << 20));
        assert_eq!(memory_bytes("2GB"), Some(2 << 30));
        assert_eq!(memory_bytes("lots"), None);
    }
}

//! Live verification during the catch-up: while the stream applies, every table and chunk is
//! counted (or hashed) on both sides, in passes; the appliers record, at each commit, which source
//! relations it changed. After the cutover's drain both sides are quiet: a table or chunk the
//! stream has not touched since it was measured is, on each side, as it was then, so verify takes
//! those measurements and reads only the rest inside the window. Each pass measures again what
//! was touched since it was measured but has cooled (untouched since the pass before began):
//! what the application keeps writing is left to the cutover, what it wrote once is not.
//!
//! Sound because of the order: the commit count is read, then the target's snapshot is taken,
//! then the source's. A change the target's snapshot lacks is committed on the target after it
//! (so counted after); a change after the source's snapshot is committed on the source after the
//! target's snapshot too (so counted after). Only relations read alone qualify: ordinary tables
//! (`ONLY`) and the chunks of hypertables and aggregates' materializations, published (an unlogged
//! table's changes are never streamed); a partition's changes arrive as its root's, so each
//! relation counts as touched through any of its ancestors, and a chunk also through its
//! compressed table. Views, materialized views and foreign tables are always read again. The
//! target must be written by pgshift alone until verified (its TimescaleDB jobs are held).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::catalog::rows::{HashForm, RowJob, RowMode, RowStats};
use crate::catalog::{db_message, Class, Inventory, Session};
use crate::error::UserError;
use crate::online::apply::{TouchedRelations, Touches, POSITION_SCHEMA};
use crate::plan::allow::AllowList;
use crate::postgres::conn::ConnSpec;
use crate::verify::diff::Difference;
use crate::verify::report::change_word;
use crate::verify::{compare_catalogs, hash_form, row_jobs, Measured, Reuse, VerifyOptions};

/// One table's or chunk's measurement on both sides, each side's relation (by OID: a table dropped
/// and made again under its name is another), the source relations whose changes move it, and the
/// commit count when it was taken.
struct Hashed {
    source: (RowJob, RowStats),
    target: (RowJob, RowStats),
    oids: (u32, u32),
    relations: Vec<u32>,
    taken_at: u64,
}

impl Hashed {
    /// Whether no commit since it was taken changed it.
    fn current(&self, touches: &Touches) -> bool {
        last_touch(&self.relations, touches) <= self.taken_at
    }
}

/// The last commit that changed any of `relations` (0: none).
fn last_touch(relations: &[u32], touches: &Touches) -> u64 {
    relations.iter().filter_map(|r| touches.last.get(r)).max().copied().unwrap_or(0)
}

struct Taken {
    form: HashForm,
    mode: RowMode,
    jobs: HashMap<String, Hashed>,
    /// The commit count when the last pass began.
    last_pass: u64,
}

/// The measurements of a run's catch-up and what its stream touched since; shared by the
/// catch-up, the cutover (whose drain applies too) and verify, in one process.
#[derive(Default)]
pub struct LiveHashes {
    touched: TouchedRelations,
    taken: Mutex<Option<Taken>>,
    /// Set by the cutover once its drain is done: before that, nothing may be reused.
    drained: std::sync::atomic::AtomicBool,
}

/// What a pass did, for the DBA.
pub struct Pass {
    pub first: bool,
    /// Measured in this pass, and their source rows.
    pub measured: usize,
    pub rows: i64,
    /// Of those, equal on both sides now (the rest differ by the lag).
    pub agree: usize,
    /// Touched since the pass before: left for a later pass, or the cutover.
    pub hot: usize,
    /// Current measurements of all qualifying tables and chunks.
    pub current: usize,
    pub candidates: usize,
    pub seconds: f64,
    /// The catalogs' unexpected differences now (`class name: change`): a schema change on one side
    /// the stream does not carry, found at once rather than by the cutover's verify.
    pub drift: Vec<String>,
}

impl LiveHashes {
    /// The set the appliers record into.
    pub fn touched(&self) -> TouchedRelations {
        self.touched.clone()
    }

    /// The cutover's drain is done: the measurements may be used, once.
    pub fn mark_drained(&self) {
        self.drained.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// One pass over the qualifying tables and chunks (those `publication` publishes): measures,
    /// on both sides now, those never measured or touched since (the first pass: all), unless
    /// touched since the pass before began.
    pub async fn pass(
        &self,
        source: &ConnSpec,
        target: &ConnSpec,
        publication: &str,
        opts: VerifyOptions,
        allow: &AllowList,
    ) -> Result<Pass, UserError> {
        let started = Instant::now();
        // the order makes it sound (module docs): the commit count, the target's snapshot, the source's
        let at = self.touched.lock().expect("touched lock").commits;
        let t = Session::open(target).await?;
        let s = Session::open(source).await?;
        let (mut s_inv, mut t_inv) = tokio::try_join!(s.inventory(), t.inventory())?;
        let drift = catalog_drift(target, &mut s_inv, &mut t_inv, allow, publication).await;
        let mode = if opts.checksums { RowMode::Checksum } else { RowMode::Count };
        let form = hash_form(&s, &t, &s_inv, &t_inv).await;
        let (s_jobs, t_jobs) = row_jobs(&s_inv, &t_inv, form);
        let readable = readable_alone(&s_inv);
        let t_by_name: HashMap<&str, &RowJob> = t_jobs.iter().map(|j| (j.name.as_str(), j)).collect();
        let pairs: Vec<(RowJob, RowJob)> = s_jobs
            .iter()
            .filter(|j| readable.contains_key(&j.name))
            .filter_map(|j| t_by_name.get(j.name.as_str()).map(|t| (j.clone(), (*t).clone())))
            .collect();
        let names: Vec<String> = pairs.iter().map(|(j, _)| relation_of(j).to_string()).collect();
        let relations = published_relations(source, &names, publication).await?;
        let t_names: Vec<String> = pairs.iter().map(|(_, j)| relation_of(j).to_string()).collect();
        let t_oids = oids(target, &t_names).await?;

        // what to measure: never measured, or touched since, and not still being written
        let (previous, first) = {
            let taken = self.taken.lock().expect("taken lock");
            match taken.as_ref().filter(|k| k.form == form && k.mode == mode) {
                Some(k) => (Some(k.last_pass), false),
                None => (None, true),
            }
        };
        let mut pass =
            Pass { first, measured: 0, rows: 0, agree: 0, hot: 0, current: 0, candidates: 0, seconds: 0.0, drift };
        let mut todo = Vec::new();
        {
            let taken = self.taken.lock().expect("taken lock");
            let touches = self.touched.lock().expect("touched lock");
            for (sj, tj) in pairs {
                let Some((s_oid, ids)) = relations.get(relation_of(&sj)) else { continue };
                let Some(Some(t_oid)) = t_oids.get(relation_of(&tj)) else { continue };
                pass.candidates += 1;
                let held = taken.as_ref().filter(|_| !first).and_then(|k| k.jobs.get(&sj.name));
                if held.is_some_and(|h| h.source.0 == sj && h.target.0 == tj && h.oids == (*s_oid, *t_oid))
                    && held.is_some_and(|h| h.current(&touches))
                {
                    continue;
                }
                if previous.is_some_and(|p| last_touch(ids, &touches) > p) {
                    pass.hot += 1;
                    continue;
                }
                todo.push((sj, tj, (*s_oid, *t_oid), ids.clone()));
            }
        }
        let (s_rows, t_rows) = tokio::try_join!(
            s.measure_rows(todo.iter().map(|j| j.0.clone()).collect(), mode, opts.workers, None),
            t.measure_rows(todo.iter().map(|j| j.1.clone()).collect(), mode, opts.workers, None)
        )?;
        tokio::join!(s.close(), t.close());
        let mut taken = self.taken.lock().expect("taken lock");
        if first {
            *taken = Some(Taken { form, mode, jobs: HashMap::new(), last_pass: at });
        }
        let k = taken.as_mut().expect("taken");
        k.last_pass = at;
        for (sj, tj, oids, relations) in todo {
            let (Some(Ok(ss)), Some(Ok(ts))) = (s_rows.get(&sj.name), t_rows.get(&tj.name)) else { continue };
            pass.measured += 1;
            pass.rows += ss.rows;
            pass.agree += usize::from(ss == ts);
            let hashed =
                Hashed { source: (sj.clone(), ss.clone()), target: (tj, ts.clone()), oids, relations, taken_at: at };
            k.jobs.insert(sj.name, hashed);
        }
        let touches = self.touched.lock().expect("touched lock");
        pass.current = k.jobs.values().filter(|h| h.current(&touches)).count();
        pass.seconds = started.elapsed().as_secs_f64();
        Ok(pass)
    }

    /// Keeps only the measurements whose source relation is still published as it was when it was
    /// measured (same OID, ancestors and compressed table): DDL since (a partition detached, a
    /// table made unlogged or taken out of the publication) would take it out of the stream
    /// unseen. Run before the publication is dropped; on an error nothing is kept.
    pub async fn confirm_published(&self, source: &ConnSpec, publication: &str) {
        let names: Vec<String> = match self.taken.lock().expect("taken lock").as_ref() {
            Some(k) => k.jobs.values().map(|h| relation_of(&h.source.0).to_string()).collect(),
            None => return,
        };
        let now = published_relations(source, &names, publication).await;
        let mut taken = self.taken.lock().expect("taken lock");
        match (now, taken.as_mut()) {
            (Ok(now), Some(k)) => k.jobs.retain(|_, h| {
                now.get(relation_of(&h.source.0)).is_some_and(|(oid, ids)| {
                    let (mut a, mut b) = (ids.clone(), h.relations.clone());
                    a.sort_unstable();
                    b.sort_unstable();
                    *oid == h.oids.0 && a == b
                })
            }),
            _ => *taken = None,
        }
    }

    /// The measurements of the tables and chunks the stream has not touched since they were taken
    /// (once it has stopped: after the cutover's drain), whose relations are still the same on
    /// both sides, for verify to use instead of reading them, once. None before the drain, when
    /// nothing was taken, or a side cannot be read (verify then reads everything).
    pub async fn untouched(&self, source: &ConnSpec, target: &ConnSpec) -> Option<Reuse> {
        if !self.drained.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let (form, mode, candidates) = {
            // once: a verify run again (after the DBA changed something) reads everything
            let taken = self.taken.lock().expect("taken lock").take();
            let taken = taken.as_ref()?;
            let touches = self.touched.lock().expect("touched lock");
            let candidates: Vec<(String, Measured, (u32, u32))> = taken
                .jobs
                .iter()
                .filter(|(_, h)| h.current(&touches))
                .map(|(name, h)| (name.clone(), (h.source.clone(), h.target.clone()), h.oids))
                .collect();
            (taken.form, taken.mode, candidates)
        };
        let names = |side: fn(&Measured) -> &RowJob| -> Vec<String> {
            candidates.iter().map(|(_, m, _)| relation_of(side(m)).to_string()).collect()
        };
        let (s_names, t_names) = (names(|m| &m.0 .0), names(|m| &m.1 .0));
        let (s_now, t_now) = tokio::join!(oids(source, &s_names), oids(target, &t_names));
        let (s_now, t_now) = (s_now.ok()?, t_now.ok()?);
        let jobs = candidates
            .into_iter()
            .filter(|(_, m, (s_oid, t_oid))| {
                s_now.get(relation_of(&m.0 .0)) == Some(&Some(*s_oid))
                    && t_now.get(relation_of(&m.1 .0)) == Some(&Some(*t_oid))
            })
            .map(|(name, m, _)| (name, m))
            .collect();
        Some(Reuse { form, mode, jobs })
    }
}

/// The unexpected catalog differences between the two sides now, but what follows the data and so
/// differs by the lag alone (sequences' values, chunks made by new rows, an aggregate's refresh
/// state, all set at cutover) and what the online migration itself made (its publication on the
/// source, its position schema on the target, both gone after the cutover).
async fn catalog_drift(
    target: &ConnSpec,
    s_inv: &mut Inventory,
    t_inv: &mut Inventory,
    allow: &AllowList,
    publication: &str,
) -> Vec<String> {
    if let Some(p) = s_inv.objects.get_mut(&Class::Publications) {
        p.remove(publication);
    }
    let own = |name: &str| {
        let schema = POSITION_SCHEMA;
        name == schema
            || name.starts_with(&format!("{schema}."))
            || name == format!("schema {schema}")
            || name.starts_with(&format!("schema {schema} "))
            || name.contains(&format!(" {schema}."))
    };
    for defs in t_inv.objects.values_mut() {
        defs.retain(|name, _| !own(name));
    }
    for inv in [&mut *s_inv, &mut *t_inv] {
        if let Some(aggs) = inv.objects.get_mut(&Class::ContinuousAggregates) {
            for def in aggs.values_mut() {
                *def = def.lines().filter(|l| !l.starts_with("refreshed up to ")).collect::<Vec<_>>().join("\n");
            }
        }
    }
    let lagging = [Class::Sequences.key(), Class::Chunks.key()];
    // the cutover's --read-only sets it on the source alone (verify takes it as planned)
    let frozen = |d: &Difference| d.class == Class::Database.key() && d.name.ends_with("default_transaction_read_only");
    compare_catalogs(target, s_inv, t_inv, allow)
        .await
        .1
        .iter()
        .filter(|d| d.allowed.is_none() && d.part_of.is_none() && !lagging.contains(&d.class.as_str()) && !frozen(d))
        .map(|d| format!("{} {}: {}", d.class, d.name, change_word(d.change)))
        .collect()
}

/// The relation a job reads alone (`ONLY s.t`, or a chunk).
fn relation_of(job: &RowJob) -> &str {
    job.from.strip_prefix("ONLY ").unwrap_or(&job.from)
}

/// The source jobs that read one relation alone, by job name: the relation.
fn readable_alone(inv: &Inventory) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for t in &inv.tables {
        match t.kind.as_str() {
            "table" if t.parts.is_empty() => {
                out.insert(t.name.clone(), t.name.clone());
            }
            "hypertable" | "materialization" => {
                for p in &t.parts {
                    out.insert(crate::catalog::rows::part_job_name(&t.name, &p.key), p.relation.clone());
                }
            }
            _ => {}
        }
    }
    out
}

fn read_error(side: &ConnSpec) -> impl Fn(tokio_postgres::Error) -> UserError + '_ {
    move |e| {
        UserError::new(
            format!("{} {}: reading the tables' OIDs failed ({})", side.role, side.label(), db_message(&e)),
            "check the server (live verification is left out; the cutover's verify reads everything)",
        )
    }
}

/// Each relation's OID now (None: it is gone).
async fn oids(side: &ConnSpec, names: &[String]) -> Result<HashMap<String, Option<u32>>, UserError> {
    let c = side.connect().await?;
    let rows = c
        .query("SELECT r, pg_catalog.to_regclass(r)::oid FROM unnest($1::text[]) r", &[&names])
        .await
        .map_err(read_error(side))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The published relations among `names`: each one's OID and the OIDs whose changes also move it —
/// its ancestors (a partition's changes are published as its root's) and, for a chunk, its
/// compressed table. Published: it is in `publication`'s tables, or it is a partition and an
/// ancestor is (a chunk is not published by its hypertable: only by itself or its schema).
async fn published_relations(
    source: &ConnSpec,
    names: &[String],
    publication: &str,
) -> Result<HashMap<String, (u32, Vec<u32>)>, UserError> {
    let c = source.connect().await?;
    let rows = c
        .query(
            "WITH RECURSIVE given AS (SELECT r, c.oid AS rel, c.relispartition AS part FROM unnest($1::text[]) r \
                                      JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(r)), \
             up(r, anc) AS (SELECT r, rel FROM given WHERE rel IS NOT NULL \
                            UNION SELECT up.r, i.inhparent FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.anc), \
             published AS (SELECT c.oid FROM pg_catalog.pg_publication_tables p \
                            JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname \
                            JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
                            WHERE p.pubname = $2) \
             SELECT up.r, g.rel, array_agg(up.anc ORDER BY up.anc) FROM up JOIN given g USING (r) \
             GROUP BY up.r, g.rel, g.part \
             HAVING bool_or(up.anc IN (SELECT oid FROM published) AND (up.anc = g.rel OR g.part))",
            &[&names, &publication],
        )
        .await
        .map_err(read_error(source))?;
    let mut out: HashMap<String, (u32, Vec<u32>)> =
        rows.iter().map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2)))).collect();
    let timescaledb: bool = c
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb')", &[])
        .await
        .map_err(read_error(source))?
        .get(0);
    if timescaledb {
        let compressed = c
            .query(
                "SELECT format('%I.%I', c.schema_name, c.table_name), \
                        format('%I.%I', z.schema_name, z.table_name)::regclass::oid \
                 FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk z ON z.id = c.compressed_chunk_id \
                 WHERE NOT c.dropped",
                &[],
            )
            .await
            .map_err(read_error(source))?;
        for r in compressed {
            if let Some((_, ids)) = out.get_mut(&r.get::<_, String>(0)) {
                ids.push(r.get(1));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_is_current_until_a_later_commit_touches_one_of_its_relations() {
        let mut touches = Touches::default();
        let job = RowJob { name: "t".into(), from: "ONLY t".into(), columns: vec![], form: HashForm::Text };
        let stats = RowStats { rows: 1, checksum: None };
        // the chunk itself (1) and its compressed table (2); relation 3 is another table
        let h = Hashed {
            source: (job.clone(), stats.clone()),
            target: (job, stats),
            oids: (1, 10),
            relations: vec![1, 2],
            taken_at: 5,
        };
        assert!(h.current(&touches), "never touched");
        touches.last.insert(1, 5);
        touches.last.insert(3, 9);
        assert!(h.current(&touches), "touched by a commit counted before the measurement");
        touches.last.insert(2, 6);
        assert!(!h.current(&touches), "touched through its compressed table after it");
        assert_eq!(last_touch(&[1, 2, 3], &touches), 9);
        assert_eq!(relation_of(&h.source.0), "t");
    }
}

//! `pgshift verify`: inventories both databases at one snapshot each, reads rows (and checksums)
//! of every table in parallel, and compares everything.
//! Knowledge: it may use the catalog, `plan::allow` and the adapters; the verify stage and the
//! commands use it, and the console draws its results.

pub mod diff;
pub mod report;

use serde::{Deserialize, Serialize};

use crate::catalog::rows::{HashForm, RowJob, RowMode, RowProgress, RowResults, RowStats};
use crate::catalog::settings::{self, SettingDifference};
use crate::catalog::{rare_classes, versions, Class, Excluded, Inventory, ServerInfo, Session, TimescaleInfo};
use crate::error::UserError;
use crate::plan::allow::AllowList;
use crate::postgres::conn::ConnSpec;
use crate::verify::diff::{ClassCount, Difference, NaiveRow, Normalized, TableRows};

#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    pub checksums: bool,
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    pub connection: String,
    pub server: ServerInfo,
    pub timescaledb: Option<TimescaleInfo>,
    pub pgvector: Option<String>,
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub pgshift_version: String,
    pub source: Side,
    pub target: Side,
    pub checksums: bool,
    /// Where row checksums were computed: "in each server", or "here, from binary COPY" / "here, from COPY text".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_form: Option<String>,
    pub classes: Vec<ClassCount>,
    pub differences: Vec<Difference>,
    /// Definitions compared in a form both servers agree on (another major), found equal that way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalized: Vec<Normalized>,
    pub tables: Vec<TableRows>,
    pub naive: Vec<NaiveRow>,
    pub warnings: Vec<String>,
    /// Server settings that differ (the servers', not the database's: they do not make a result
    /// unclean), behaviour ones first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<SettingDifference>,
    /// What could not be compared (a side's session could not read it), with the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_compared: Vec<String>,
    /// Differences not covered by the allow file.
    pub unexpected: usize,
    /// Differences the allow file names as planned.
    pub planned: usize,
    /// Tables and chunks (`table [chunk key]`) whose rows were measured during an online catch-up
    /// and not touched since: taken as measured then, not read again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reused: Vec<String>,
    pub clean: bool,
}

impl VerifyReport {
    pub fn unexpected_differences(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.allowed.is_none())
    }
}

/// Gives both sides `placeholder` as the definition of each object of `class` that one side has
/// as `placeholder` (could not read), so it is not reported as changed.
fn unreadable_on_either(s: &mut Inventory, t: &mut Inventory, class: Class, placeholder: &str) {
    let hidden: Vec<String> = [&*s, &*t]
        .iter()
        .flat_map(|inv| inv.class(class).iter().filter(|(_, d)| d.as_str() == placeholder).map(|(n, _)| n.clone()))
        .collect();
    for inv in [s, t] {
        if let Some(defs) = inv.objects.get_mut(&class) {
            for name in &hidden {
                if let Some(d) = defs.get_mut(name) {
                    *d = placeholder.to_string();
                }
            }
        }
    }
}

pub async fn verify(
    source: &ConnSpec,
    target: &ConnSpec,
    allow: &AllowList,
    opts: VerifyOptions,
) -> Result<VerifyReport, UserError> {
    verify_watched(source, target, allow, opts, None, None).await
}

/// Measurements taken earlier that still hold (live verification during an online catch-up: the
/// tables and chunks the stream has not touched since), by job name: each side's job and stats.
#[derive(Debug, Clone)]
pub struct Reuse {
    pub form: HashForm,
    pub mode: RowMode,
    pub jobs: std::collections::HashMap<String, Measured>,
}

/// One job's measurement on the source and on the target: each side's job and stats.
pub type Measured = ((RowJob, RowStats), (RowJob, RowStats));

/// Takes out of both job lists those `reuse` measured with the very same jobs (name, relation,
/// columns, form) and mode, returning their stats for each side.
fn take_reused(
    reuse: Option<&Reuse>,
    form: HashForm,
    mode: RowMode,
    s_jobs: &mut Vec<RowJob>,
    t_jobs: &mut Vec<RowJob>,
) -> (RowResults, RowResults) {
    let (mut s_done, mut t_done) = (RowResults::new(), RowResults::new());
    let Some(reuse) = reuse.filter(|r| r.form == form && r.mode == mode) else {
        return (s_done, t_done);
    };
    let same: std::collections::HashSet<String> = reuse
        .jobs
        .iter()
        .filter(|(name, ((sj, _), (tj, _)))| {
            s_jobs.iter().any(|j| j.name == **name && j == sj) && t_jobs.iter().any(|j| j.name == **name && j == tj)
        })
        .map(|(name, _)| name.clone())
        .collect();
    s_jobs.retain(|j| !same.contains(&j.name));
    t_jobs.retain(|j| !same.contains(&j.name));
    for name in same {
        let ((_, ss), (_, ts)) = &reuse.jobs[&name];
        s_done.insert(name.clone(), Ok(ss.clone()));
        t_done.insert(name, Ok(ts.clone()));
    }
    (s_done, t_done)
}

/// How far a verify's row reading is on each side (tables counted or hashed, rows).
#[derive(Debug, Default)]
pub struct VerifyProgress {
    pub source: std::sync::Arc<RowProgress>,
    pub target: std::sync::Arc<RowProgress>,
}

/// `verify`, counting its row reading into `progress` as it goes.
pub async fn verify_watched(
    source: &ConnSpec,
    target: &ConnSpec,
    allow: &AllowList,
    opts: VerifyOptions,
    progress: Option<&VerifyProgress>,
    reuse: Option<&Reuse>,
) -> Result<VerifyReport, UserError> {
    // the settings are read on sessions of their own (the snapshot sessions set canonical
    // ones), beside everything else
    let (read, settings) =
        tokio::join!(read_both(source, target, opts, progress, reuse), setting_differences(source, target));
    let (mut s_inv, mut t_inv, form, reused) = read?;
    let (classes, mut differences, normalized) = compare_catalogs(target, &mut s_inv, &mut t_inv, allow).await;
    let not_compared: Vec<String> = s_inv
        .not_compared
        .iter()
        .map(|w| format!("source: {w}"))
        .chain(t_inv.not_compared.iter().map(|w| format!("target: {w}")))
        .collect();
    let (tables, row_diffs) = diff::compare_rows(&s_inv, &t_inv, allow);
    differences.extend(row_diffs);
    let naive = diff::naive_rows(&s_inv, &t_inv, &classes);
    // a chunk's difference details its table's: counted once, with the table
    let counted = || differences.iter().filter(|d| d.part_of.is_none());
    let unexpected = counted().filter(|d| d.allowed.is_none()).count();
    let planned = counted().count() - unexpected;
    let warnings: Vec<String> = s_inv
        .warnings
        .iter()
        .map(|w| format!("source: {w}"))
        .chain(t_inv.warnings.iter().map(|w| format!("target: {w}")))
        .collect();
    let warnings_empty = warnings.is_empty();
    Ok(VerifyReport {
        pgshift_version: env!("CARGO_PKG_VERSION").into(),
        source: side(source, s_inv),
        target: side(target, t_inv),
        checksums: opts.checksums,
        checksum_form: opts.checksums.then(|| {
            match form {
                HashForm::InServer => "in each server",
                HashForm::Binary => "here, from binary COPY",
                HashForm::Text => "here, from COPY text",
            }
            .to_string()
        }),
        classes,
        differences,
        normalized,
        tables,
        naive,
        warnings,
        settings,
        not_compared,
        unexpected,
        planned,
        reused,
        // a class that could not be read was not compared: that is not a clean result
        clean: unexpected == 0 && warnings_empty,
    })
}

/// Both inventories with their rows (counted or hashed, or reused), each at its side's snapshot;
/// with the hash form used and the tables whose measurements were reused.
async fn read_both(
    source: &ConnSpec,
    target: &ConnSpec,
    opts: VerifyOptions,
    progress: Option<&VerifyProgress>,
    reuse: Option<&Reuse>,
) -> Result<(Inventory, Inventory, HashForm, Vec<String>), UserError> {
    let (s, t) = tokio::try_join!(Session::open(source), Session::open(target))?;
    let (mut s_inv, mut t_inv) = tokio::try_join!(s.inventory(), t.inventory())?;

    let mode = if opts.checksums { RowMode::Checksum } else { RowMode::Count };
    let form = hash_form(&s, &t, &s_inv, &t_inv).await;
    let (mut s_jobs, mut t_jobs) = row_jobs(&s_inv, &t_inv, form);
    let (s_reused, t_reused) = take_reused(reuse, form, mode, &mut s_jobs, &mut t_jobs);
    let mut reused: Vec<String> = s_reused
        .keys()
        .map(|name| name.replace('\u{1f}', " [") + if name.contains('\u{1f}') { "]" } else { "" })
        .collect();
    reused.sort();
    let (mut s_rows, mut t_rows) = tokio::try_join!(
        s.measure_rows(s_jobs, mode, opts.workers, progress.map(|p| p.source.clone())),
        t.measure_rows(t_jobs, mode, opts.workers, progress.map(|p| p.target.clone()))
    )?;
    s_rows.extend(s_reused);
    t_rows.extend(t_reused);
    s_inv.apply_rows(&s_rows);
    t_inv.apply_rows(&t_rows);
    let any_large_object = [&s_inv, &t_inv].iter().any(|i| !i.class(Class::LargeObjects).is_empty());
    if opts.checksums && any_large_object {
        match tokio::join!(s.large_object_contents(), t.large_object_contents()) {
            (Ok(a), Ok(b)) => {
                s_inv.objects.insert(Class::LargeObjectContents, a);
                t_inv.objects.insert(Class::LargeObjectContents, b);
            }
            (a, b) => {
                for (inv, e) in [(&mut s_inv, a.err()), (&mut t_inv, b.err())] {
                    if let Some(e) = e {
                        inv.not_compared.push(format!(
                            "large object contents: {e} (connect as a superuser, or grant SELECT on every large object)"
                        ));
                    }
                }
            }
        }
    }
    tokio::join!(s.close(), t.close());
    Ok((s_inv, t_inv, form, reused))
}

/// The object classes side by side: a view's query in the target's spelling where the majors
/// differ, a class one side could not read compared on neither.
pub async fn compare_catalogs(
    target: &ConnSpec,
    s_inv: &mut Inventory,
    t_inv: &mut Inventory,
    allow: &AllowList,
) -> (Vec<ClassCount>, Vec<Difference>, Vec<Normalized>) {
    let respelled = align_view_spelling(target, s_inv, t_inv).await;
    // a class one side could not read is compared on neither (said in the report)
    for class in [Class::RolePasswords] {
        if s_inv.objects.contains_key(&class) != t_inv.objects.contains_key(&class) {
            s_inv.objects.remove(&class);
            t_inv.objects.remove(&class);
        }
    }
    // a user mapping whose options one side may not read: its options compared on neither (the
    // report names it as not compared), its presence still compared
    unreadable_on_either(s_inv, t_inv, Class::UserMappings, rare_classes::OPTIONS_NOT_READABLE);
    let (classes, differences, mut normalized) = diff::compare_objects(s_inv, t_inv, allow);
    normalized.extend(respelled);
    (classes, differences, normalized)
}

/// Where the source runs another major, its server deparses the same view query differently
/// (PostgreSQL 16 stopped qualifying the columns of a single-relation query): a view whose
/// definitions differ only in the query is compared as the target's server deparses the source's
/// query — made a temporary view on the target, in a transaction rolled back. A query the target
/// cannot create stays a difference. Returns the views so compared.
async fn align_view_spelling(target: &ConnSpec, s_inv: &mut Inventory, t_inv: &Inventory) -> Vec<Normalized> {
    let (smajor, tmajor) = (s_inv.server.version_num / 10000, t_inv.server.version_num / 10000);
    let mut respelled = Vec::new();
    if smajor == tmajor {
        return respelled;
    }
    let mut client = None;
    for class in [Class::Views, Class::MaterializedViews, Class::ContinuousAggregates] {
        let differing: Vec<(String, String)> = s_inv
            .class(class)
            .iter()
            .filter_map(|(name, sd)| {
                t_inv.class(class).get(name).filter(|td| *td != sd).map(|td| (name.clone(), td.clone()))
            })
            .collect();
        for (name, td) in differing {
            let sd = &s_inv.class(class)[&name];
            let (Some((sp, sq, ss)), Some((tp, tq, ts))) =
                (versions::split_view_definition(class, sd), versions::split_view_definition(class, &td))
            else {
                continue;
            };
            if sp != tp || ss != ts {
                continue; // more than the query's spelling differs
            }
            if client.is_none() {
                match target.connect().await {
                    Ok(c) => client = Some(c),
                    Err(_) => return respelled, // compared as they are
                }
            }
            let c = client.as_ref().expect("connected");
            if deparse_on(c, sq)
                .await
                .is_some_and(|q| crate::catalog::normalize(Some(q)) == crate::catalog::normalize(Some(tq.to_string())))
            {
                if let Some(defs) = s_inv.objects.get_mut(&class) {
                    defs.insert(name.clone(), td);
                }
                respelled.push(Normalized {
                    class: class.key().into(),
                    name,
                    how: format!(
                        "query compared as the PostgreSQL {tmajor} target deparses the PostgreSQL {smajor} source's"
                    ),
                });
            }
        }
    }
    respelled
}

/// The server settings that differ, read on plain sessions (pgshift's own compare with fixed
/// output settings); empty when a side cannot be read (the catalog comparison does not depend on it).
async fn setting_differences(source: &ConnSpec, target: &ConnSpec) -> Vec<SettingDifference> {
    let read = |spec: &ConnSpec| {
        let spec = spec.clone();
        async move { settings::read(&spec.connect().await.ok()?).await.ok() }
    };
    let (Some(s), Some(t)) = tokio::join!(read(source), read(target)) else {
        return Vec::new();
    };
    let mut found = settings::differences(&s, &t);
    found.sort_by_key(|d| d.kind != settings::Kind::Behaviour);
    found
}

/// `query` as this server deparses it (a temporary view, rolled back).
async fn deparse_on(client: &tokio_postgres::Client, query: &str) -> Option<String> {
    client.batch_execute("BEGIN; SET LOCAL search_path = pg_catalog").await.ok()?;
    let created = client
        .batch_execute(&format!("CREATE TEMP VIEW pgshift_deparse AS {}", query.trim().trim_end_matches(';')))
        .await;
    let deparsed = match created {
        Ok(()) => client
            .query_one("SELECT pg_get_viewdef('pg_temp.pgshift_deparse'::regclass, true)", &[])
            .await
            .ok()
            .map(|r| r.get::<_, String>(0)),
        Err(_) => None,
    };
    let _ = client.batch_execute("ROLLBACK").await;
    deparsed
}

/// How both sides hash rows: in each server when they hash alike (same major, and the same answer
/// to a probe row of every type hashed natively: byte order and database encoding show there);
/// else here, from binary COPY when the majors match (types send the same bytes); else from text.
pub async fn hash_form(s: &Session, t: &Session, s_inv: &Inventory, t_inv: &Inventory) -> HashForm {
    if s_inv.server.version_num / 10000 != t_inv.server.version_num / 10000 {
        return HashForm::Text;
    }
    match tokio::join!(s.in_server_probe(), t.in_server_probe()) {
        (Some(a), Some(b)) if a == b => HashForm::InServer,
        _ => HashForm::Binary,
    }
}

/// Jobs for both sides. A table on both sides is read through the columns both have, in the
/// source's order, so a planned extra column does not make every row differ.
pub fn row_jobs(s: &Inventory, t: &Inventory, form: HashForm) -> (Vec<RowJob>, Vec<RowJob>) {
    let mut s_jobs = Vec::new();
    let mut t_jobs = Vec::new();
    for st in &s.tables {
        let columns = match t.table(&st.name) {
            Some(tt) => {
                let common: Vec<String> = st.columns.iter().filter(|c| tt.columns.contains(c)).cloned().collect();
                t_jobs.extend(tt.row_jobs(common.clone(), form));
                common
            }
            None => st.columns.clone(),
        };
        s_jobs.extend(st.row_jobs(columns, form));
    }
    for tt in t.tables.iter().filter(|tt| s.table(&tt.name).is_none()) {
        t_jobs.extend(tt.row_jobs(tt.columns.clone(), form));
    }
    (s_jobs, t_jobs)
}

fn side(spec: &ConnSpec, inv: Inventory) -> Side {
    Side {
        connection: spec.label(),
        server: inv.server,
        timescaledb: inv.timescaledb,
        pgvector: inv.pgvector,
        excluded: inv.excluded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, from: &str, columns: &[&str]) -> RowJob {
        RowJob {
            name: name.into(),
            from: from.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            form: HashForm::InServer,
        }
    }

    fn stats(rows: i64) -> RowStats {
        RowStats { rows, checksum: Some(format!("srv:{rows}")) }
    }

    #[test]
    fn only_the_very_same_jobs_are_taken_from_an_earlier_measurement() {
        let mut jobs = std::collections::HashMap::new();
        jobs.insert("a".to_string(), ((job("a", "ONLY a", &["x"]), stats(1)), (job("a", "ONLY a", &["x"]), stats(1))));
        // the source's columns changed since
        jobs.insert("b".to_string(), ((job("b", "ONLY b", &["x"]), stats(2)), (job("b", "ONLY b", &["x"]), stats(2))));
        let reuse = Reuse { form: HashForm::InServer, mode: RowMode::Checksum, jobs };
        let mut s_jobs = vec![job("a", "ONLY a", &["x"]), job("b", "ONLY b", &["x", "y"]), job("c", "ONLY c", &[])];
        let mut t_jobs = vec![job("a", "ONLY a", &["x"]), job("b", "ONLY b", &["x", "y"]), job("c", "ONLY c", &[])];
        let (s, t) = take_reused(Some(&reuse), HashForm::InServer, RowMode::Checksum, &mut s_jobs, &mut t_jobs);
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(t["a"], Ok(stats(1)));
        assert_eq!(s_jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
        assert_eq!(t_jobs.len(), 2);
        // measured another way (counts only, or another hash form): nothing taken
        let (s, _) = take_reused(Some(&reuse), HashForm::InServer, RowMode::Count, &mut s_jobs, &mut t_jobs);
        assert!(s.is_empty());
        let (s, _) = take_reused(Some(&reuse), HashForm::Text, RowMode::Checksum, &mut s_jobs, &mut t_jobs);
        assert!(s.is_empty());
    }
}

//! The checklist: the nine stages of a plan in order, built from the plan file, and the run
//! directory they share (new, resumed or complete, for this source and target only). The console
//! and `pgshift run` both start here; `headless` drives the stages without the console.

pub mod headless;

use std::path::{Path, PathBuf};

use crate::engine::journal::{Journal, JOURNAL_FILE};
use crate::engine::{Stage, StageStatus};
use crate::error::UserError;
use crate::files;
use crate::online::slot::SlotHolder;
use crate::plan::container::ensure_password;
use crate::plan::Plan;
use crate::stages::backup::{BackupOptions, BackupStage};
use crate::stages::data::DataStage;
use crate::stages::environment::{ContainerStage, ExistingServerStage};
use crate::stages::online::{CatchUpStage, CutoverStage};
use crate::stages::schema::{PostDataStage, SchemaStage};
use crate::stages::timescaledb::TimescaleStage;
use crate::stages::tuning::TuningStage;
use crate::stages::vectors::{index_name, VectorStage};
use crate::stages::verify::VerifyStage;
use crate::verify::VerifyOptions;

const STAGES: [&str; 9] =
    ["backup", "environment", "schema", "data", "post-data", "timescaledb", "pgvector", "tuning", "verify"];
/// An online migration's stages, between tuning and verify.
const ONLINE_STAGES: [&str; 2] = ["catch-up", "cutover"];

/// The checklist's stage ids for a plan, in order.
fn stage_ids(online: bool) -> Vec<&'static str> {
    let mut ids = STAGES.to_vec();
    if online {
        let at = ids.len() - 1;
        ids.splice(at..at, ONLINE_STAGES);
    }
    ids
}

/// Which run directory a run uses.
enum RunDir {
    New(PathBuf),
    /// The latest run stopped before its end: resume it.
    Resume(PathBuf),
    /// The latest run finished every stage: nothing to redo unless --restart.
    Complete(PathBuf),
}

fn run_dir(base: &Path, restart: bool, ids: &[&str]) -> Result<RunDir, UserError> {
    if !restart {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.join(JOURNAL_FILE).exists()).collect())
            .unwrap_or_default();
        dirs.sort();
        if let Some(last) = dirs.pop() {
            let journal = Journal::open(&last).map_err(|m| UserError::new(m, "run with --restart"))?;
            let all_done =
                ids.iter().all(|s| matches!(journal.status(s), Some(StageStatus::Done | StageStatus::Skipped)));
            return Ok(if all_done { RunDir::Complete(last) } else { RunDir::Resume(last) });
        }
    }
    Ok(RunDir::New(files::create_run_dir(base)?))
}

/// The source and target a run directory's run is for (connections as labels: no password).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RunFor {
    source: String,
    target: String,
}

/// A new run directory records what it is for; a run that would resume (or find complete) an
/// earlier one for another source or target refuses, rather than skip stages done elsewhere.
fn check_run_for(dir: &Path, resuming: bool, this: &RunFor) -> Result<(), UserError> {
    let path = dir.join(crate::engine::run_files::RUN_FOR);
    if resuming {
        // a run directory from before this file was written cannot say: resumed as before
        let Some(earlier) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<RunFor>(&t).ok())
        else {
            return Ok(());
        };
        if earlier != *this {
            return Err(UserError::new(
                format!(
                    "the latest run in {} was for {} → {}, but the plan now says {} → {}",
                    dir.display(),
                    earlier.source,
                    earlier.target,
                    this.source,
                    this.target
                ),
                "run with --restart to start a new run for this plan (the earlier run's directory stays as it is)",
            ));
        }
        return Ok(());
    }
    let text = serde_json::to_string_pretty(this).expect("run-for json");
    files::write_atomic(&path, text.as_bytes()).map_err(|e| files::write_error(&path, &e))
}

/// A run ready to start: its directory, its stages in checklist order, and its log file.
pub struct Prepared {
    pub plan: Plan,
    pub dir: PathBuf,
    /// The directory holds an earlier, unfinished run of this plan.
    pub resuming: bool,
    /// The latest run finished every stage (a headless run has nothing to redo).
    pub complete: bool,
    pub stages: Vec<Box<dyn Stage>>,
    pub log: std::fs::File,
}

/// Reads the plan, picks the run directory (new, resumed or complete) and builds the stages;
/// `online` turns the plan's `[online]` on.
pub fn prepare(plan_path: &Path, restart: bool, online: bool) -> Result<Prepared, UserError> {
    let mut plan = Plan::load(plan_path)?;
    plan.online.enabled |= online;
    let ids = stage_ids(plan.online.enabled);
    let source = plan.source()?;
    let container = plan.container_options();
    let shm_bytes = container.as_ref().map(|o| o.shm_size);
    if let Some(o) = &container {
        ensure_password(&o.password_file)?; // the container is created with it; later stages connect with it
    }
    let target = plan.target(&source)?;
    let (dir, resuming, complete) = match run_dir(&plan.backup.dir, restart, &ids)? {
        RunDir::New(d) => (d, false, false),
        RunDir::Resume(d) => (d, true, false),
        RunDir::Complete(d) => (d, true, true),
    };
    let for_this = RunFor { source: source.label(), target: target.label() };
    check_run_for(&dir, resuming, &for_this)?;
    let schema_started = resuming && Journal::open(&dir).ok().and_then(|j| j.status("schema")).is_some();

    let online = plan.online.enabled.then(|| std::sync::Arc::new(SlotHolder::new(source.clone())));
    let backup = BackupStage::new(
        source.clone(),
        BackupOptions {
            bin_dir: plan.backup.bin_dir.clone(),
            role_passwords: plan.backup.role_passwords,
            row_counts: true,
            jobs: 2,
            schema_sql: plan.backup.schema_sql,
            data_sql: plan.backup.data_sql,
            compression: plan.backup.compression,
        },
    );
    let backup = match &online {
        Some(slot) => backup.with_online(slot.clone()),
        None => backup,
    };
    let environment: Box<dyn Stage> = match container {
        Some(o) => Box::new(ContainerStage::new(o).with_settings(plan.target.settings.clone())),
        None => Box::new(
            ExistingServerStage::new(target.with_dbname("postgres")).with_settings(plan.target.settings.clone()),
        ),
    };
    // a resumed run finds its own earlier work in the target database
    let force = plan.target.force || schema_started;
    let schema = SchemaStage::new(
        source.clone(),
        target.clone(),
        plan.target.container.is_some(),
        force,
        plan.hypertables.clone(),
    )
    .with_target_settings(plan.target.settings.clone())
    .with_tablespaces(plan.target.tablespaces);
    let mut data =
        DataStage::new(source.clone(), target.clone(), plan.data.jobs).with_compressed(plan.data.compressed_chunks);
    if let Some(slot) = &online {
        data = data.with_online(slot.clone());
    }
    let post = PostDataStage::new(source.clone(), target.clone(), &plan.tuning, plan.data.jobs)
        .with_tablespaces(plan.target.tablespaces);
    let timescale =
        TimescaleStage::new(source.clone(), target.clone(), plan.tuning.compress_chunks, plan.hypertables.clone());
    let vectors = VectorStage::new(target.clone(), plan.vectors.clone(), plan.tuning.clone(), shm_bytes)
        .checked_against(source.clone());
    let tuning = TuningStage::new(source.clone(), target.clone(), plan.tuning.clone()).with_sessions(plan.data.jobs);
    let workers = plan.data.jobs.max(1);
    let options = VerifyOptions { checksums: plan.verify.checksums, workers };
    let target_user = target.config.get_user().unwrap_or("postgres").to_string();
    let allow = planned_differences(&plan, &target_user)?;
    // the catch-up's hashes of what its stream leaves alone, taken by verify
    let live = online.as_ref().map(|_| std::sync::Arc::new(crate::online::live_hashes::LiveHashes::default()));
    let online_stages: Vec<Box<dyn Stage>> = match (&online, &live) {
        (Some(slot), Some(live)) => {
            let handover = crate::online::stream::Handover::default();
            vec![
                Box::new(
                    CatchUpStage::new(
                        source.clone(),
                        target.clone(),
                        std::time::Duration::from_secs(plan.online.quiet_seconds),
                        slot.clone(),
                        handover.clone(),
                    )
                    .with_live(live.clone(), options, allow.clone()),
                ),
                Box::new(
                    CutoverStage::new(source.clone(), target.clone(), handover, plan.tuning.compress_chunks)
                        .with_live(live.clone()),
                ),
            ]
        }
        _ => Vec::new(),
    };
    let mut verify = VerifyStage::new(source, target, allow, options);
    if let Some(live) = live {
        verify = verify.with_live(live);
    }
    let mut stages: Vec<Box<dyn Stage>> = vec![
        Box::new(backup),
        environment,
        Box::new(schema),
        Box::new(data),
        Box::new(post),
        Box::new(timescale),
        Box::new(vectors),
        Box::new(tuning),
    ];
    stages.extend(online_stages);
    stages.push(Box::new(verify));
    debug_assert_eq!(stages.iter().map(|s| s.id()).collect::<Vec<_>>(), ids);

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pgshift.log"))
        .map_err(|e| files::write_error(&dir, &e))?;
    Ok(Prepared { plan, dir, resuming, complete, stages, log })
}

/// The plan's `[[allow]]` entries plus what its own changes make differ on purpose: tables it turns
/// into hypertables, vector columns it adds and their indexes, passwords it does not carry.
fn planned_differences(plan: &Plan, target_user: &str) -> Result<crate::plan::allow::AllowList, UserError> {
    use crate::plan::allow::{AllowRule, Change};
    let mut rules = plan.allow.clone();
    let rule = |class: &str, name: String, reason: &str| AllowRule {
        class: class.into(),
        name,
        change: Change::Extra,
        reason: Some(reason.into()),
    };
    if !plan.hypertables.is_empty() {
        rules.push(rule("extensions", "timescaledb".into(), "created for the plan's hypertables"));
    }
    if !plan.vectors.is_empty() {
        rules.push(rule("extensions", "vector".into(), "created for the plan's vector columns"));
    }
    // the role pgshift connects to the target as keeps the target's password (schema stage)
    let mut own = rule(
        "role_passwords",
        crate::postgres::sql::quote_ident(target_user),
        "the role pgshift connects to the target as keeps the target's password",
    );
    own.change = Change::Changed;
    rules.push(own);
    if !plan.backup.role_passwords {
        // roles.sql carries no hashes: a login role with a password has none on the target (the
        // backup's pre-flight names them)
        let mut r = rule(
            "role_passwords",
            "*".into(),
            "password not carried ([backup] role_passwords = false): set it on the target",
        );
        r.change = Change::Changed;
        rules.push(r);
    }
    if !plan.tuning.compress_chunks {
        // chunks that came through decompression stay uncompressed
        let mut r = rule("chunks", "*".into(), "left uncompressed by [tuning] compress_chunks = false");
        r.change = Change::Changed;
        rules.push(r);
    }
    if plan.target.tablespaces == crate::plan::Tablespaces::Default {
        let mut r = rule(
            "tablespaces",
            "*".into(),
            "put in the target database's default tablespace by [target] tablespaces = \"default\"",
        );
        r.change = Change::Missing;
        rules.push(r);
    }
    for h in &plan.hypertables {
        // its chunks on the target are part of this planned difference (verify::diff)
        rules.push(rule("hypertables", h.table.clone(), "converted to a hypertable by the plan"));
    }
    for v in &plan.vectors {
        let schema = v.table.rsplit_once('.').map(|(s, _)| s).unwrap_or("public");
        let index = crate::postgres::sql::quote_ident(&index_name(v));
        rules.push(rule("columns", format!("{}.{}", v.table, v.column), "vector column added by the plan"));
        rules.push(rule("vector_columns", format!("{}.{}", v.table, v.column), "vector column added by the plan"));
        rules.push(rule("indexes", format!("{schema}.{index}"), "vector index built by the plan"));
        rules.push(rule("vector_indexes", format!("{schema}.{index}"), "vector index built by the plan"));
    }
    crate::plan::allow::AllowList::from_rules(rules)
}

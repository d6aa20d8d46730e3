//! `pgshift run --plan FILE --yes`: the whole checklist headless — backup, environment, schema,
//! data, post-data, verify — in one run directory under the plan's backup directory. A rerun
//! resumes the latest run: stages its journal records as done are skipped. And `pgshift plan init`.

use std::path::{Path, PathBuf};

use crate::catalog::{self, Class};
use crate::conn::ConnSpec;
use crate::engine::{Stage, StageStatus};
use crate::error::{UserError, EXIT_CANCELLED, EXIT_DIFFERENCES, EXIT_STAGE_FAILED};
use crate::files;
use crate::headless::{self, Ended, Mode};
use crate::journal::{Journal, JOURNAL_FILE};
use crate::plan::Plan;
use crate::stages::backup::{BackupOptions, BackupStage};
use crate::stages::data::DataStage;
use crate::stages::environment::{ensure_password, ContainerStage, ExistingServerStage};
use crate::stages::schema::{PostDataStage, SchemaStage};
use crate::stages::timescaledb::TimescaleStage;
use crate::stages::tuning::TuningStage;
use crate::stages::vectors::{index_name, VectorStage};
use crate::stages::verify::VerifyStage;
use crate::verify::VerifyOptions;

const STAGES: [&str; 9] =
    ["backup", "environment", "schema", "data", "post-data", "timescaledb", "pgvector", "tuning", "verify"];

/// Which run directory a run uses.
enum RunDir {
    New(PathBuf),
    /// The latest run stopped before its end: resume it.
    Resume(PathBuf),
    /// The latest run finished every stage: nothing to redo unless --restart.
    Complete(PathBuf),
}

fn run_dir(base: &Path, restart: bool) -> Result<RunDir, UserError> {
    if !restart {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.join(JOURNAL_FILE).exists()).collect())
            .unwrap_or_default();
        dirs.sort();
        if let Some(last) = dirs.pop() {
            let journal = Journal::open(&last).map_err(|m| UserError::new(m, "run with --restart"))?;
            let all_done =
                STAGES.iter().all(|s| matches!(journal.status(s), Some(StageStatus::Done | StageStatus::Skipped)));
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
    let path = dir.join(crate::run_files::RUN_FOR);
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

/// Reads the plan, picks the run directory (new, resumed or complete) and builds the stages.
pub fn prepare(plan_path: &Path, restart: bool) -> Result<Prepared, UserError> {
    let plan = Plan::load(plan_path)?;
    let source = plan.source()?;
    let container = plan.container_options();
    let shm_bytes = container.as_ref().map(|o| o.shm_size);
    if let Some(o) = &container {
        ensure_password(&o.password_file)?; // the container is created with it; later stages connect with it
    }
    let target = plan.target(&source)?;
    let (dir, resuming, complete) = match run_dir(&plan.backup.dir, restart)? {
        RunDir::New(d) => (d, false, false),
        RunDir::Resume(d) => (d, true, false),
        RunDir::Complete(d) => (d, true, true),
    };
    let for_this = RunFor { source: source.label(), target: target.label() };
    check_run_for(&dir, resuming, &for_this)?;
    let schema_started = resuming && Journal::open(&dir).ok().and_then(|j| j.status("schema")).is_some();

    let backup = BackupStage::new(
        source.clone(),
        BackupOptions {
            bin_dir: plan.backup.bin_dir.clone(),
            role_passwords: plan.backup.role_passwords,
            row_counts: true,
            jobs: 2,
        },
    );
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
    .with_target_settings(plan.target.settings.clone());
    let data =
        DataStage::new(source.clone(), target.clone(), plan.data.jobs).with_compressed(plan.data.compressed_chunks);
    let post = PostDataStage::new(target.clone(), &plan.tuning);
    let timescale =
        TimescaleStage::new(source.clone(), target.clone(), plan.tuning.compress_chunks, plan.hypertables.clone());
    let vectors = VectorStage::new(target.clone(), plan.vectors.clone(), plan.tuning.clone(), shm_bytes)
        .checked_against(source.clone());
    let tuning = TuningStage::new(source.clone(), target.clone(), plan.tuning.clone());
    let workers = plan.data.jobs.max(1);
    let options = VerifyOptions { checksums: plan.verify.checksums, workers };
    let target_user = target.config.get_user().unwrap_or("postgres").to_string();
    let verify = VerifyStage::new(source, target, planned_differences(&plan, &target_user)?, options);
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(backup),
        environment,
        Box::new(schema),
        Box::new(data),
        Box::new(post),
        Box::new(timescale),
        Box::new(vectors),
        Box::new(tuning),
        Box::new(verify),
    ];
    debug_assert_eq!(stages.iter().map(|s| s.id()).collect::<Vec<_>>(), STAGES);

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pgshift.log"))
        .map_err(|e| files::write_error(&dir, &e))?;
    Ok(Prepared { plan, dir, resuming, complete, stages, log })
}

pub async fn run(plan_path: &Path, yes: bool, restart: bool, mode: Mode) -> Result<i32, UserError> {
    if !yes {
        Plan::load(plan_path)?; // a broken plan is the first thing to hear about
        return Err(UserError::new(
            "pgshift run writes to the target server",
            format!(
                "read the plan, then add --yes to run it (or walk it in the console: pgshift console --plan {})",
                plan_path.display()
            ),
        ));
    }
    let Prepared { dir, resuming, complete, stages, log, .. } = prepare(plan_path, restart)?;
    if complete {
        println!(
            "the run in {} completed every stage; nothing to redo (--restart starts a new migration)",
            dir.display()
        );
        return Ok(0);
    }
    if resuming && mode != Mode::Json {
        eprintln!("pgshift: resuming the run in {}", dir.display());
    }
    let stages: Vec<&dyn Stage> = stages.iter().map(|s| s.as_ref()).collect();
    match headless::run_stages(&stages, Some(&dir), Some(log), mode).await? {
        Ended::Done => {
            if mode != Mode::Json {
                println!("migration complete and verified clean; run directory {}", dir.display());
            }
            Ok(0)
        }
        Ended::Refused(e) => {
            if !resuming {
                let _ = std::fs::remove_dir_all(&dir); // nothing was written
            }
            Err(e)
        }
        Ended::Failed(stage, e) => {
            eprintln!("pgshift: {e}");
            Ok(exit_code_for_failure(stage, &e))
        }
        Ended::Cancelled => {
            eprintln!("pgshift: cancelled; run it again to resume from {}", dir.display());
            Ok(EXIT_CANCELLED)
        }
    }
}

/// Exit code of a run that stopped at a failed stage: 1 when verify found differences, else 3.
pub fn exit_code_for_failure(stage: &str, e: &UserError) -> i32 {
    if stage == "verify" && e.message.starts_with("verify found") {
        EXIT_DIFFERENCES
    } else {
        EXIT_STAGE_FAILED
    }
}

/// The plan's `[[allow]]` entries plus what its own changes make differ on purpose: tables it turns
/// into hypertables, vector columns it adds and their indexes, passwords it does not carry.
fn planned_differences(plan: &Plan, target_user: &str) -> Result<crate::allow::AllowList, UserError> {
    use crate::allow::{AllowRule, Change};
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
        crate::sql::quote_ident(target_user),
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
    for h in &plan.hypertables {
        // its chunks on the target are part of this planned difference (catalog::diff)
        rules.push(rule("hypertables", h.table.clone(), "converted to a hypertable by the plan"));
    }
    for v in &plan.vectors {
        let schema = v.table.rsplit_once('.').map(|(s, _)| s).unwrap_or("public");
        let index = crate::sql::quote_ident(&index_name(v));
        rules.push(rule("columns", format!("{}.{}", v.table, v.column), "vector column added by the plan"));
        rules.push(rule("vector_columns", format!("{}.{}", v.table, v.column), "vector column added by the plan"));
        rules.push(rule("indexes", format!("{schema}.{index}"), "vector index built by the plan"));
        rules.push(rule("vector_indexes", format!("{schema}.{index}"), "vector index built by the plan"));
    }
    crate::allow::AllowList::from_rules(rules)
}

/// `pgshift plan init`: a commented plan from the source's inventory, with hypertable candidates.
pub async fn init(source_text: &str, out: &Path, overwrite: bool) -> Result<i32, UserError> {
    let source = ConnSpec::parse("source", source_text)?;
    if out.exists() && !overwrite {
        return Err(UserError::new(
            format!("{} exists", out.display()),
            "choose another --out, or add --overwrite to replace it",
        ));
    }
    let inv = catalog::collect(&source, None, 1).await?;
    let client = source.connect().await?;
    let candidates = client
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(a.attname), format_type(a.atttypid, a.atttypmod)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 WHERE c.relkind = 'r' AND NOT c.relispartition AND {} AND {}
                   AND a.attnotnull AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                   AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
                 ORDER BY 1, a.attnum",
                catalog::queries::user_ns("n"),
                catalog::queries::not_ext("pg_class", "c.oid"),
            ),
            &[],
        )
        .await
        .map_err(|e| UserError::new(format!("reading candidates: {}", catalog::db_message(&e)), "connect as a superuser"))?;
    let hypertables: Vec<&String> = inv.class(Class::Hypertables).keys().collect();
    // a table that is a hypertable already is recreated as one: not a conversion candidate
    let candidates: Vec<_> =
        candidates.into_iter().filter(|r| !hypertables.iter().any(|h| **h == r.get::<_, String>(0))).collect();
    let mut text = format!(
        "# pgshift migration plan, written by `pgshift plan init` from {source}.\n\
         # Run it with: pgshift run --plan {out} --yes\n\
         # Passwords never go here: PGPASSWORD or ~/.pgpass (mode 0600) give them.\n\n\
         [source]\nconnection = \"{conn}\"\n\n\
         [target]\n\
         # Either an existing server (and database) ...\n\
         # connection = \"postgresql://postgres@127.0.0.1:5432/{db}\"\n\
         # ... or a container pgshift builds and runs (Docker engine):\n\
         database = \"{db}\"\n\
         # force = true   # migrate into a database that already holds objects\n\n\
         [target.container]\nname = \"pgshift-timescaledb\"\n# image = \"pgshift/timescaledb-pgvector:pg17\"\n\
         # dockerfile = \"Dockerfile.timescaledb\"\nport = 55432\n# data = \"./data/postgresql\"   # default: volume NAME-data\n\n\
         [backup]\ndir = \"backups\"\n# bin_dir = \"/usr/lib/postgresql/17/bin\"\n# role_passwords = false\n\n\
         [data]\njobs = 2\n# compressed_chunks = \"as-is\"   # or \"recompress\": decompress on the way, compress again\n\n[verify]\nchecksums = true\n\n\
         [tuning]\n# maintenance_work_mem = \"512MB\"   # for index builds (vector indexes above all)\n\
         # parallel_workers = 2\n# vacuum = false\n# reindex = false\n# compress_chunks = true\n",
        source = source.label(),
        out = out.display(),
        conn = source_text.replace('"', "\\\""),
        db = source.dbname(),
    );
    if !hypertables.is_empty() {
        text.push_str("\n# Hypertables on the source are recreated on the target automatically:\n");
        for h in &hypertables {
            text.push_str(&format!("#   {h}\n"));
        }
    }
    text.push_str("\n# Plain tables that look like time series (a NOT NULL time column that leads an index).\n");
    text.push_str("# Uncomment to turn them into hypertables on the target:\n");
    if candidates.is_empty() {
        text.push_str("# (none found)\n");
    }
    for r in &candidates {
        let (table, column, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        // quoted identifiers inside a TOML string
        let (table, column) = (table.replace('"', "\\\""), column.replace('"', "\\\""));
        text.push_str(&format!(
            "# [[hypertables]]\n# table = \"{table}\"\n# time_column = \"{column}\"   # {ty}\n\
             # chunk_interval = \"7 days\"   # default: suggested from the data\n\
             # compress = false   # needs a Timescale-licensed target\n\n"
        ));
    }
    text.push_str(
        "\n# Vector columns to add (pgvector), e.g.:\n# [[vectors]]\n# table = \"public.documents\"\n# column = \"embedding\"\n\
         # dimensions = 384\n# index = \"hnsw\"\n\n\
         # Differences the plan makes on purpose, allowed by the final verify, e.g.:\n\
         # [[allow]]\n# class = \"hypertables\"\n# name = \"energy.meter\"\n# reason = \"converted by the plan\"\n",
    );
    Plan::parse(&text)
        .map_err(|e| UserError::new(format!("the written plan does not read back: {}", e.message), e.fix))?;
    files::write_atomic(out, text.as_bytes()).map_err(|e| files::write_error(out, &e))?;
    println!("wrote {} ({} hypertable candidate(s))", out.display(), candidates.len());
    Ok(0)
}

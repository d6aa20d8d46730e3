//! `pgshift run --plan FILE --yes`: the whole checklist headless — backup, environment, schema,
//! data, post-data, timescaledb, pgvector, tuning, verify — in one run directory under the plan's
//! backup directory. A rerun resumes the latest run: stages its journal records as done are skipped.

use std::path::Path;

use crate::checklist::headless::{self, Ended, Mode};
use crate::checklist::{prepare, Prepared};
use crate::engine::Stage;
use crate::error::{UserError, EXIT_CANCELLED, EXIT_DIFFERENCES, EXIT_STAGE_FAILED};
use crate::plan::Plan;

pub async fn run(plan_path: &Path, yes: bool, restart: bool, online: bool, mode: Mode) -> Result<i32, UserError> {
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
    let Prepared { dir, resuming, complete, stages, log, .. } = prepare(plan_path, restart, online)?;
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

//! `pgshift online cutover --plan FILE [--read-only]`: asks the running catch-up to cut over now.
//! `pgshift online abort --plan FILE`: takes back what an unfinished online migration made on the
//! source (every pgshift slot and publication in the source database, the replica identities, a
//! read-only setting from `--read-only`) and its position table on the target, so that no
//! forgotten slot keeps WAL on the source.

use std::path::Path;

use crate::engine::journal::Journal;
use crate::engine::status::StageStatus;
use crate::error::UserError;
use crate::online::apply::POSITION_SCHEMA;
use crate::online::slot::{self, CutoverRequest};
use crate::plan::Plan;
use crate::postgres::sql::quote_ident;

pub async fn abort(plan_path: &Path) -> Result<i32, UserError> {
    let plan = Plan::load(plan_path)?;
    let source = plan.source()?;
    let (slots, mut publications) = slot::leftovers(&source).await?;
    // a publication whose slot is already gone: the plan's run directories name it
    let (mut identities, mut was_nothing, mut read_only) = (Vec::new(), Vec::new(), false);
    let mut states = Vec::new();
    for dir in std::fs::read_dir(&plan.backup.dir).into_iter().flatten().flatten() {
        if let Some(state) = slot::OnlineState::load(&dir.path()) {
            // a run that cut over is finished: its source stays as the cutover left it
            let cut_over = Journal::open(&dir.path()).is_ok_and(|j| j.status("cutover") == Some(StageStatus::Done));
            if cut_over {
                continue;
            }
            if !publications.contains(&state.publication)
                && slot::publication_exists(&source, &state.publication).await?
            {
                publications.push(state.publication);
            }
            identities.extend(state.identity_full);
            was_nothing.extend(state.identity_was_nothing);
            read_only |= state.source_read_only;
            states.push(dir.path().join(slot::ONLINE_STATE));
        }
    }
    for s in &slots {
        slot::drop_slot(&source, s, s).await?;
        println!("slot {s} dropped on the source");
    }
    for p in publications.iter().filter(|p| !slots.contains(p)) {
        slot::drop_slot(&source, p, p).await?;
        println!("publication {p} dropped on the source");
    }
    identities.sort();
    identities.dedup();
    let left = slot::reset_identities(&source, &identities, &was_nothing).await;
    for t in identities.iter().filter(|t| !left.iter().any(|(l, _)| l == *t)) {
        let to = slot::identity_before(t, &was_nothing);
        println!("{t}: replica identity back to {to} on the source");
    }
    for (_, why) in &left {
        println!("{why}");
    }
    // a cutover made the source read-only on request: the application goes back to it
    if read_only {
        let db = quote_ident(source.dbname());
        let reset = format!("ALTER DATABASE {db} RESET default_transaction_read_only");
        match slot::writable_session(&source).await {
            Ok(c) if c.batch_execute(&reset).await.is_ok() => {
                println!("source database {db} is writable again (default_transaction_read_only reset)")
            }
            _ => println!("source database {db} is still read-only: on the source, {reset}"),
        }
    }
    // the target may not exist yet (the run stopped before its environment): nothing to drop then
    if let Ok(target) = plan.target(&source) {
        if let Ok(client) = target.connect().await {
            if client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(POSITION_SCHEMA)))
                .await
                .is_ok()
            {
                println!("schema {POSITION_SCHEMA} (the catch-up's position) dropped on the target, if it was there");
            }
        }
    }
    // the runs cannot go on without their slot: their state goes, and a rerun says to restart
    for path in &states {
        if let Err(e) = std::fs::remove_file(path) {
            eprintln!("pgshift: {} could not be removed ({e}): remove it by hand", path.display());
        }
    }
    if slots.is_empty() && publications.is_empty() {
        println!("no pgshift slot or publication in the source database");
    }
    Ok(0)
}

/// Writes the cutover request into the newest run directory of the plan that has an online slot.
pub fn cutover(plan_path: &Path, read_only: bool) -> Result<i32, UserError> {
    let plan = Plan::load(plan_path)?;
    let mut runs: Vec<std::path::PathBuf> = std::fs::read_dir(&plan.backup.dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path())
        .filter(|d| slot::OnlineState::load(d).is_some())
        .collect();
    runs.sort();
    let Some(dir) = runs.pop() else {
        return Err(UserError::new(
            format!("no online migration of this plan has a slot (no online.json under {})", plan.backup.dir.display()),
            "start one with pgshift run --online --plan FILE",
        ));
    };
    // only a catch-up that runs (or is still to come) reads the request
    let journal = Journal::open(&dir).map_err(|e| UserError::new(e, "move the file away, then request again"))?;
    let pending = match journal.status("catch-up") {
        None | Some(StageStatus::Pending) => true,
        Some(StageStatus::Running) => false,
        Some(status) => {
            return Err(UserError::new(
                format!(
                    "the catch-up of {} is not running (it is {}): no cutover was requested",
                    dir.display(),
                    status.label()
                ),
                match status {
                    StageStatus::Done | StageStatus::Skipped => {
                        "nothing to request: the cutover follows the catch-up on its own (see the run's journal)"
                    }
                    _ => "run the migration again (pgshift run --online --plan FILE), then request the cutover",
                },
            ))
        }
    };
    let request = CutoverRequest::now(read_only);
    request.save(&dir)?;
    println!(
        "cutover requested in {}: {} drains to the source's current position, then the cutover and verify run{}",
        dir.display(),
        if pending { "the catch-up, as soon as it starts," } else { "the catch-up" },
        if read_only { "; the source database is made read-only first" } else { "" }
    );
    Ok(0)
}

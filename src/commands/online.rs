//! `pgshift online cutover --plan FILE [--read-only]`: asks the running catch-up to cut over now.
//! `pgshift online abort --plan FILE`: drops what an online migration made on the source (every
//! pgshift slot and publication in the source database) and its position table on the target, so
//! that no forgotten slot keeps WAL on the source.

use std::path::Path;

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
    let mut identities = Vec::new();
    let mut states = Vec::new();
    for dir in std::fs::read_dir(&plan.backup.dir).into_iter().flatten().flatten() {
        if let Some(state) = slot::OnlineState::load(&dir.path()) {
            if !publications.contains(&state.publication)
                && slot::publication_exists(&source, &state.publication).await?
            {
                publications.push(state.publication);
            }
            identities.extend(state.identity_full);
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
    let left = slot::reset_identities(&source, &identities).await;
    for t in identities.iter().filter(|t| !left.contains(t)) {
        println!("{t}: replica identity back to DEFAULT on the source");
    }
    for t in &left {
        println!("{t} keeps REPLICA IDENTITY FULL on the source: ALTER TABLE {t} REPLICA IDENTITY DEFAULT");
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
    let request = CutoverRequest::now(read_only);
    request.save(&dir)?;
    println!(
        "cutover requested in {}: the catch-up drains to the source's current position, then the cutover and verify run{}",
        dir.display(),
        if read_only { "; the source database is made read-only first" } else { "" }
    );
    Ok(0)
}

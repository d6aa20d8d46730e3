//! Server errors that say nothing about the query: the same statement, run again, succeeds.

/// How often a read is tried in all when the server's answer is a transient error.
pub const READ_ATTEMPTS: usize = 3;

/// TimescaleDB 2.x forgets for a moment that it is installed when a backend's cache is reset
/// under a flood of catalog changes elsewhere (a shared-invalidation overflow arriving while it
/// re-reads `pg_extension`): the next call to its catalog then fails with "tried calling
/// catalog_get when extension isn't loaded", although nothing is wrong and a retry succeeds.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| db.message().contains("when extension isn't loaded"))
}

/// A statement that lost a lock race with the application's own sessions (chosen as a deadlock's
/// victim, or out of `lock_timeout`): it was rolled back whole and may simply be run again.
pub fn is_lock_conflict(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::LOCK_NOT_AVAILABLE)
}

/// How often a DDL statement on a busy source is run in all before its lock conflict is reported.
pub const LOCK_ATTEMPTS: u32 = 5;

/// Runs `sql` (one statement, or several that succeed or fail as one) until it succeeds, fails
/// for another reason, or lost [`LOCK_ATTEMPTS`] lock races, waiting a little longer each time.
pub async fn execute_through_lock_conflicts(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut attempt = 1;
    loop {
        match client.batch_execute(sql).await {
            Err(e) if is_lock_conflict(&e) && attempt < LOCK_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

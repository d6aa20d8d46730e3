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

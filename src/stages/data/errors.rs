//! The data stage's database errors as user errors: which side failed and, when the connection
//! was lost, that a rerun resumes.

use crate::catalog;
use crate::error::UserError;

/// A copy's database error as one line, with the fix: a lost connection says how to resume.
pub(super) fn copy_error(side: &str, spec_label: &str, e: &tokio_postgres::Error) -> UserError {
    let text = e.to_string();
    let closed = catalog::connection_lost(e) || text.contains("connection") || text.contains("unexpected EOF");
    let fix = if closed {
        format!(
            "the connection to the {side} ({spec_label}) was lost: check that the server runs (a container: \
             pgshift env status), then run again to resume"
        )
    } else {
        format!("fix the cause on the {side} ({spec_label})")
    };
    UserError::new(format!("{side}: {}", catalog::db_message(e)), fix)
}

/// A target-side error of the data stage.
pub(super) fn tgt(e: tokio_postgres::Error) -> UserError {
    copy_error("target", "the target server", &e)
}

/// A source-side error of the data stage.
pub(super) fn srcerr(e: tokio_postgres::Error) -> UserError {
    copy_error("source", "the source server", &e)
}

//! Every user sequence's value as the statements that set it elsewhere (`setval`), read at a
//! session's snapshot: a COPY does not move sequences, so the copy and the cutover set them.

use crate::catalog::{queries, Session};
use crate::error::UserError;

/// `SELECT pg_catalog.setval(...)` for every user sequence, with the source's value and is_called.
pub async fn setvals(session: &Session) -> Result<Vec<String>, UserError> {
    session.strings("sequences", &setvals_sql()).await
}

/// [`setvals`] on a plain session (the cutover's, the source quiet: no snapshot needed).
pub async fn setvals_on(client: &tokio_postgres::Client) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client.query(&setvals_sql(), &[]).await?.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect())
}

fn setvals_sql() -> String {
    format!(
        // the sequence's own row: pg_sequences hides last_value when is_called is false
        "SELECT format('SELECT pg_catalog.setval(%L, %s, %s)', seq, v.last_value, v.is_called)
         FROM (SELECT format('%I.%I', schemaname, sequencename) AS seq FROM pg_catalog.pg_sequences s WHERE {}) q,
         LATERAL (SELECT (pg_catalog.xpath('/row/last_value/text()', x))[1]::text AS last_value,
                         (pg_catalog.xpath('/row/is_called/text()', x))[1]::text AS is_called
                  FROM pg_catalog.query_to_xml(format('SELECT last_value, is_called FROM %s', q.seq), false, true, '') x) v",
        queries::user_ns_name("s.schemaname")
    )
}

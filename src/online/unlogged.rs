//! Unlogged tables in an online run: their changes are not written to the WAL, so the stream never
//! carries them. After the drain (writes stopped) the cutover copies each one again, whole, in one
//! target transaction: the target then holds what the source holds at that moment.

use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::catalog::rows::CANONICAL_SETTINGS;
use crate::catalog::{db_message, queries};
use crate::error::UserError;
use crate::postgres::conn::ConnSpec;

/// Each unlogged user table of the source (not an extension's) with the columns a copy writes:
/// neither dropped nor generated (`attgenerated` read through jsonb: absent before 12).
fn unlogged_tables_sql() -> String {
    format!(
        "SELECT format('%I.%I', n.nspname, c.relname), \
                (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                   AND coalesce(to_jsonb(a) ->> 'attgenerated', '') = '') \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND c.relpersistence = 'u' AND {} AND {} ORDER BY 1",
        queries::user_ns("n"),
        queries::not_ext("pg_class", "c.oid")
    )
}

/// The source's unlogged tables, by name (what the pre-flight names).
pub async fn names(source: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(source.query(&unlogged_tables_sql(), &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// Copies every unlogged table again, source to target (its rows on the target replaced, no user
/// trigger fired), all in one target transaction; returns (table, rows) per table. Runs on the
/// cutover's sessions: what it sets lasts only as long as its transactions.
pub async fn copy_again(
    src: &Client,
    dst: &Client,
    source: &ConnSpec,
    target: &ConnSpec,
) -> Result<Vec<(String, u64)>, UserError> {
    let read = |e: tokio_postgres::Error| {
        UserError::new(
            format!("source {}: copying the unlogged tables again failed ({})", source.label(), db_message(&e)),
            "connect to the source as a superuser or a role that may read every table",
        )
    };
    // the text form both sides read alike (floats exact, dates unambiguous), as the copy's
    src.batch_execute(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}", local(CANONICAL_SETTINGS)))
        .await
        .map_err(read)?;
    let listed = src.query(&unlogged_tables_sql(), &[]).await;
    let tables: Vec<(String, Option<String>)> = match listed {
        Ok(rows) if rows.is_empty() => {
            let _ = src.batch_execute("COMMIT").await;
            return Ok(Vec::new());
        }
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) => {
            let _ = src.batch_execute("ROLLBACK").await;
            return Err(read(e));
        }
    };
    let write = |e: tokio_postgres::Error| {
        UserError::new(
            format!("target {}: writing the unlogged tables again failed ({})", target.label(), db_message(&e)),
            "connect to the target as a superuser (no user trigger may fire) and check that its table has the \
             source's columns, then run again to resume the cutover",
        )
    };
    let copied = copy_tables(src, dst, tables, read, write).await;
    let end = if copied.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = dst.batch_execute(end).await;
    let _ = src.batch_execute(end).await;
    let copied = copied?;
    ended.map_err(write)?;
    Ok(copied)
}

/// The copies themselves, inside the transactions `copy_again` opened (the target's opened here).
async fn copy_tables(
    src: &Client,
    dst: &Client,
    tables: Vec<(String, Option<String>)>,
    read: impl Fn(tokio_postgres::Error) -> UserError,
    write: impl Fn(tokio_postgres::Error) -> UserError,
) -> Result<Vec<(String, u64)>, UserError> {
    // the catch-up's applier's settings: the same text form, no user trigger
    dst.batch_execute(&format!("BEGIN; {}; SET LOCAL session_replication_role = replica", local(CANONICAL_SETTINGS)))
        .await
        .map_err(&write)?;
    let mut copied = Vec::new();
    for (table, columns) in tables {
        dst.batch_execute(&format!("DELETE FROM ONLY {table}")).await.map_err(&write)?;
        let Some(columns) = columns else {
            copied.push((table, 0));
            continue;
        };
        let reader =
            src.copy_out(&format!("COPY (SELECT {columns} FROM ONLY {table}) TO STDOUT")).await.map_err(&read)?;
        let sink = dst.copy_in(&format!("COPY {table} ({columns}) FROM STDIN")).await.map_err(&write)?;
        pin_mut!(reader);
        pin_mut!(sink);
        while let Some(chunk) = reader.next().await {
            sink.send(chunk.map_err(&read)?).await.map_err(&write)?;
        }
        copied.push((table, sink.finish().await.map_err(&write)?));
    }
    Ok(copied)
}

/// Session settings (`SET x = ...; ...`) as the transaction's own (`SET LOCAL`), so a shared
/// session is left as it was.
fn local(settings: &str) -> String {
    settings.replace("SET ", "SET LOCAL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_the_transaction_s() {
        let l = local(CANONICAL_SETTINGS);
        assert!(l.starts_with("SET LOCAL search_path = pg_catalog; SET LOCAL DateStyle"), "{l}");
        assert_eq!(l.matches("SET LOCAL ").count(), CANONICAL_SETTINGS.matches("SET ").count());
        assert!(!l.contains("LOCAL LOCAL"));
    }
}

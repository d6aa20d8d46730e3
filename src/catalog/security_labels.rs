//! Security labels (`SECURITY LABEL FOR provider ON ... IS ...`): what sepgsql or PostgreSQL
//! Anonymizer's masking rules attach to objects. Listed for verify, and the providers they need
//! looked up on the target before anything is written (a label of a provider the target has not
//! loaded fails its restore).

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::queries::{used_roles_cte, TS_SCHEMAS};
use crate::postgres::sql::quote_ident;

/// Which labels a migration carries: those on the database's own objects (large objects
/// included, extension members left out), on the database itself and on roles (pg_dumpall's):
/// every role, or with `relevant_roles` those the database uses (verify's roles class).
fn labels(select: &str, relevant_roles: bool) -> String {
    let (cte, roles) = if relevant_roles {
        (used_roles_cte(), "l.objoid IN (SELECT oid FROM relevant)")
    } else {
        (String::new(), "true")
    };
    format!(
        r#"{cte}
           SELECT {select}
             FROM pg_seclabel l, LATERAL pg_identify_object(l.classoid, l.objoid, l.objsubid) o
            WHERE o.identity IS NOT NULL
              -- objects initdb made (a provider such as sepgsql labels them all on each server),
              -- except the public schema, which pg_dump carries
              AND (l.objoid >= 16384 OR (l.classoid = 'pg_namespace'::regclass AND o.identity = 'public'))
              AND (o.schema IS NULL OR (o.schema !~ '^(pg_catalog|information_schema|pg_toast|pg_temp_)' AND o.schema !~ '{TS_SCHEMAS}'))
              AND NOT EXISTS (SELECT 1 FROM pg_depend xd WHERE xd.classid = l.classoid AND xd.objid = l.objoid AND xd.deptype = 'e')
           UNION ALL
           SELECT {select}
             FROM pg_shseclabel l, LATERAL pg_identify_object(l.classoid, l.objoid, 0) o
            WHERE (l.classoid = 'pg_database'::regclass AND l.objoid = (SELECT oid FROM pg_database WHERE datname = current_database()))
               OR (l.classoid = 'pg_authid'::regclass AND {roles})"#
    )
}

/// Verify's class: `provider on <object>` → label (the database itself as `the database`, whatever
/// its name on either side).
pub fn query() -> String {
    labels(
        "format('%s on %s', l.provider, CASE WHEN l.classoid = 'pg_database'::regclass THEN 'the database'
                                            ELSE o.type || ' ' || o.identity END), l.label",
        true,
    )
}

/// The providers the source's labels need, each with how many objects it labels.
pub fn providers_used() -> String {
    format!("SELECT provider, count(*) FROM ({}) p GROUP BY 1 ORDER BY 1", labels("l.provider", false))
}

/// The `providers` not loaded on the server `client` talks to. Probed by labelling the connecting
/// role with NULL (no label) in a transaction that is rolled back: nothing is written.
pub async fn not_loaded(client: &Client, providers: &[String]) -> Result<Vec<String>, tokio_postgres::Error> {
    let me: String = client.query_one("SELECT current_user::text", &[]).await?.get(0);
    let mut missing = Vec::new();
    for p in providers {
        client.batch_execute("BEGIN").await?;
        let probe = client
            .batch_execute(&format!("SECURITY LABEL FOR {} ON ROLE {} IS NULL", quote_ident(p), quote_ident(&me)))
            .await;
        client.batch_execute("ROLLBACK").await?;
        match probe {
            // "security label provider ... is not loaded"; any other refusal comes from a loaded provider
            Err(e) if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => missing.push(p.clone()),
            _ => {}
        }
    }
    Ok(missing)
}

//! Tablespaces: where this database's relations live when not in its default tablespace, the
//! tablespaces a hypertable's chunks are spread over, and each tablespace so used (its owner,
//! options and grants; tablespaces are cluster-wide, like roles). Read for verify's `tablespaces`
//! class and for the schema pre-flight, which names a tablespace the target lacks before anything is
//! written (pg_restore would otherwise fail each entry placed in it).

use std::collections::{BTreeMap, BTreeSet};

use super::queries::{not_ext, user_ns};

/// The `tablespaces` class: `schema.relation` → `<kind> in tablespace <name>`, `the database` →
/// its default tablespace (when not `pg_default`), and `tablespace <name>` → its owner, options and
/// grants, for each tablespace the database uses.
pub fn query() -> String {
    let un = user_ns("n");
    let not_ext = not_ext("pg_class", "c.oid");
    format!(
        r#"WITH placed AS (
             SELECT c.oid, c.relkind, n.nspname, c.relname, c.reltablespace
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.reltablespace <> 0 AND c.relkind IN ('r', 'p', 'm', 'i', 'I') AND {un} AND {not_ext}),
           used AS (
             SELECT reltablespace AS oid FROM placed
             UNION SELECT dattablespace FROM pg_database WHERE datname = current_database())
         SELECT format('%I.%I', p.nspname, p.relname),
                CASE p.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'm' THEN 'materialized view'
                               ELSE 'index' END || ' in tablespace ' || quote_ident(t.spcname)
           FROM placed p JOIN pg_tablespace t ON t.oid = p.reltablespace
         UNION ALL
         SELECT 'the database', 'default tablespace ' || quote_ident(t.spcname)
           FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
          WHERE d.datname = current_database() AND t.spcname <> 'pg_default'
         UNION ALL
         SELECT 'tablespace ' || quote_ident(t.spcname),
                concat_ws(', ', 'owner ' || quote_ident(pg_get_userbyid(t.spcowner)),
                  CASE WHEN t.spcoptions IS NOT NULL
                       THEN 'options ' || array_to_string(ARRAY(SELECT o FROM unnest(t.spcoptions) o ORDER BY 1), ', ') END,
                  CASE WHEN t.spcacl IS NOT NULL THEN 'grants ' || coalesce(
                    (SELECT string_agg(g, '; ' ORDER BY g)
                     FROM (SELECT format('%s %s%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                         a.privilege_type, CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END) AS g
                           FROM aclexplode(t.spcacl) a WHERE a.grantee <> t.spcowner) x), 'none') END)
           FROM pg_tablespace t JOIN used u ON u.oid = t.oid
          WHERE t.spcname NOT IN ('pg_default', 'pg_global')"#
    )
}

/// A TimescaleDB source's hypertables whose chunks are placed in tablespaces (`attach_tablespace`):
/// `schema.table` → the tablespaces in the order they were attached.
pub const HYPERTABLE_TABLESPACES: &str =
    "SELECT format('%I.%I', hypertable_schema, hypertable_name), tablespaces::text[]
     FROM timescaledb_information.hypertables
     WHERE tablespaces IS NOT NULL AND cardinality(tablespaces) > 0
     ORDER BY 1";

/// Each tablespace the source database uses, with what uses it (`schema.relation`, `the database`,
/// `the chunks of schema.table`), read for the pre-flight.
pub fn used_sql() -> String {
    let un = user_ns("n");
    let not_ext = not_ext("pg_class", "c.oid");
    format!(
        r#"SELECT t.spcname::text, format('%I.%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_tablespace t ON t.oid = c.reltablespace
            WHERE c.reltablespace <> 0 AND c.relkind IN ('r', 'p', 'm', 'i', 'I') AND {un} AND {not_ext}
         UNION ALL
         SELECT t.spcname::text, 'the database (its default tablespace)'
             FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
            WHERE d.datname = current_database() AND t.spcname <> 'pg_default'
         ORDER BY 1, 2"#
    )
}

/// The tablespaces used on the source (name → what uses it) that the target does not have.
pub fn missing(used: &[(String, String)], target_has: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (space, what) in used {
        if !target_has.contains(space) {
            out.entry(space.clone()).or_default().push(what.clone());
        }
    }
    out
}

/// One line naming what `missing` found: each tablespace, how many objects it holds, the first few.
pub fn describe_missing(missing: &BTreeMap<String, Vec<String>>) -> String {
    missing
        .iter()
        .map(|(space, users)| {
            let shown: Vec<&str> = users.iter().take(3).map(String::as_str).collect();
            let more = if users.len() > 3 { format!(" and {} more", users.len() - 3) } else { String::new() };
            format!("{space} (holds {}{more})", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tablespace_the_target_lacks_is_named_with_what_it_holds() {
        let used: Vec<(String, String)> = [
            ("archive", "public.a"),
            ("archive", "public.a_pkey"),
            ("archive", "public.b"),
            ("archive", "public.c"),
            ("fast", "public.hot"),
            ("shared", "the database (its default tablespace)"),
        ]
        .iter()
        .map(|(s, w)| (s.to_string(), w.to_string()))
        .collect();
        let target: BTreeSet<String> = ["fast".to_string()].into();
        let m = missing(&used, &target);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["archive", "shared"]);
        assert_eq!(
            describe_missing(&m),
            "archive (holds public.a, public.a_pkey, public.b and 1 more); shared (holds the database (its default tablespace))"
        );
        assert!(missing(&used, &["archive", "fast", "shared"].iter().map(|s| s.to_string()).collect()).is_empty());
    }
}

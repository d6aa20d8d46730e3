//! `after-data.sql`: what the split `--no-owner --no-privileges` dumps leave out, to run after
//! the data (`data.sql`, or `pg_restore --data-only full.dump`): owners, privileges and default
//! privileges, and the refresh of materialized views.
//!
//! Nothing here parses SQL text that came from the database: owner statements are written by the
//! source server itself (`format('%I')`) at the backup's snapshot, and privileges and refreshes are
//! the archive's own entries, chosen from its table of contents and printed by `pg_restore`.

use crate::catalog::queries::{not_ext, user_ns, TS_SCHEMA_NAMES};

/// Statements that give every user object its source owner, one per row, in an order that works:
/// database, schemas, types, relations (tables before sequences a table owns), routines, large
/// objects.
/// TimescaleDB chunks are left out: they take their hypertable's owner.
pub fn owner_statements_sql() -> String {
    format!(
        r#"SELECT stmt FROM (
           SELECT 0 AS ord, format('DO $pgshift$BEGIN EXECUTE format(%L, current_database()); END$pgshift$;',
                                   format('ALTER DATABASE %%I OWNER TO %I', pg_get_userbyid(d.datdba))) AS stmt, '' AS name
           FROM pg_database d WHERE d.datname = current_database()
         UNION ALL
           SELECT 1, format('ALTER SCHEMA %I OWNER TO %I;', n.nspname, pg_get_userbyid(n.nspowner)), n.nspname
           FROM pg_namespace n WHERE {user_ns} AND {ns_ext}
         UNION ALL
           SELECT 2, format('ALTER %s %I.%I OWNER TO %I;', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                            n.nspname, t.typname, pg_get_userbyid(t.typowner)), n.nspname || '.' || t.typname
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE {user_ns} AND {type_ext} AND t.typtype IN ('c', 'd', 'e', 'r')
             AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
         UNION ALL
           SELECT CASE c.relkind WHEN 'S' THEN 4 ELSE 3 END,
                  format('ALTER %s %I.%I OWNER TO %I;',
                         CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                         n.nspname, c.relname, pg_get_userbyid(c.relowner)), n.nspname || '.' || c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {user_ns} AND {rel_ext}
             -- an identity sequence follows its table's owner and refuses its own ALTER
             AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend id WHERE id.classid = 'pg_class'::regclass
                                                  AND id.objid = c.oid AND id.deptype = 'i'))
         UNION ALL
           SELECT 5, format('ALTER %s %I.%I(%s) OWNER TO %I;',
                            CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                            n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_userbyid(p.proowner)),
                  n.nspname || '.' || p.proname
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user_ns} AND {proc_ext}
         UNION ALL
           SELECT 6, format('ALTER LARGE OBJECT %s OWNER TO %I;', m.oid, pg_get_userbyid(m.lomowner)), lpad(m.oid::text, 10, '0')
           FROM pg_largeobject_metadata m
        ) s ORDER BY ord, name, stmt"#,
        ns_ext = not_ext("pg_namespace", "n.oid"),
        type_ext = not_ext("pg_type", "t.oid"),
        rel_ext = not_ext("pg_class", "c.oid"),
        proc_ext = not_ext("pg_proc", "p.oid"),
        user_ns = user_ns("n"),
    )
}

/// Keeps the archive entries `after-data.sql` needs from `pg_restore --list` output: privileges
/// (ACL), default privileges (DEFAULT ACL) and materialized view contents (MATERIALIZED VIEW DATA),
/// except those on TimescaleDB's own schemas and chunks (chunks take their hypertable's
/// privileges). Returns the filtered list, for `pg_restore --use-list`.
pub fn select_entries(toc: &str) -> (String, usize) {
    let mut kept = String::new();
    let mut count = 0;
    for line in toc.lines() {
        // `4784; 0 0 ACL energy TABLE readings postgres`: the entry's type follows "id; oid oid"
        let Some((_, rest)) = line.split_once("; ") else { continue };
        let mut fields = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(entry)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let after_type = ["ACL ", "DEFAULT ACL ", "MATERIALIZED VIEW DATA "].iter().find_map(|t| entry.strip_prefix(t));
        let Some(after_type) = after_type else { continue };
        let schema = after_type.split(' ').next().unwrap_or("");
        if TS_SCHEMA_NAMES.contains(&schema) {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        count += 1;
    }
    (kept, count)
}

/// Entries in a `pg_restore --list` output (its non-comment lines).
pub fn entry_count(toc: &str) -> usize {
    toc.lines().filter(|l| !l.starts_with(';') && l.contains("; ")).count()
}

/// The file: a header, the owner statements (UTF-8, from the server), then pg_restore's text of the
/// selected entries (in the archive's encoding, which its own `SET client_encoding` announces).
pub fn assemble(owners: &[String], restored: &[u8]) -> Vec<u8> {
    let mut out = String::from(
        "-- after-data.sql, written by pgshift backup.\n\
         -- Run it after schema.sql and the data (data.sql, or pg_restore --data-only full.dump):\n\
         -- it restores what --no-owner --no-privileges and\n\
         -- split schema/data dumps leave out: owners (read from the source at the backup's snapshot),\n\
         -- privileges, default privileges and materialized view contents (from full.dump).\n\n",
    );
    out.push_str(&format!("-- owners: {}\nSET client_encoding = 'UTF8';\n", owners.len()));
    for o in owners {
        out.push_str(o);
        out.push('\n');
    }
    out.push_str("\n-- privileges and materialized views, as pg_restore prints them from full.dump\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(restored);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOC: &str = ";
; Archive created at 2026-11-29 02:25:38 UTC
;
4779; 0 0 ACL - SCHEMA energy pgshift_owner
215; 1259 16390 TABLE energy sites pgshift_owner
216; 1259 16391 TABLE public ACL MATERIALIZED VIEW DATA x owner
4784; 0 0 ACL energy TABLE readings postgres
4785; 0 0 ACL _timescaledb_internal TABLE _hyper_1_10_chunk postgres
4790; 0 0 DEFAULT ACL energy DEFAULT PRIVILEGES FOR TABLES postgres
4800; 0 16500 MATERIALIZED VIEW DATA energy daily_energy pgshift_owner
";

    #[test]
    fn keeps_privileges_and_refreshes_not_chunks_nor_names_that_look_like_types() {
        let (kept, n) = select_entries(TOC);
        assert_eq!(n, 4, "{kept}");
        assert!(kept.contains("4779;") && kept.contains("4784;") && kept.contains("4790;") && kept.contains("4800;"));
        assert!(!kept.contains("_hyper_1_10_chunk"), "chunk privileges follow the hypertable");
        assert!(!kept.contains("216;"), "a table named like an entry type is still a table");
        assert_eq!(entry_count(TOC), 7);
    }
}

//! Catalog SQL for the classes most databases lack but an archive carries: rules, extended
//! statistics, event triggers, publications, foreign-data wrappers, servers and user mappings,
//! collations, casts, operators with their classes and families, text search configurations and
//! dictionaries. Each query returns `(name text, definition text)` like those of `queries.rs`,
//! leaves out system and extension-owned objects, and runs on every major pgshift reads (columns
//! renamed between majors are read through `to_jsonb` of the row).

use super::class::Class;
use super::queries::{not_ext, user_ns};

/// The query for one of these classes; None for the others.
pub fn query(class: Class) -> Option<String> {
    let un = user_ns("n");
    let q = match class {
        Class::Rules => format!(
            r#"SELECT format('%I.%I.%I', n.nspname, c.relname, r.rulename),
                pg_get_ruledef(r.oid, true)
                  || CASE r.ev_enabled WHEN 'D' THEN E'\ndisabled' WHEN 'R' THEN E'\nenabled replica'
                                       WHEN 'A' THEN E'\nenabled always' ELSE '' END
               FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE r.rulename <> '_RETURN' AND {un} AND {}"#,
            not_ext("pg_class", "c.oid")
        ),
        Class::ExtendedStatistics => format!(
            r#"SELECT format('%I.%I', n.nspname, s.stxname),
                pg_get_statisticsobjdef(s.oid)
                  || coalesce(' (statistics target ' || nullif(greatest((to_jsonb(s) ->> 'stxstattarget')::int, -1), -1) || ')', '')
                  || ', owner ' || pg_get_userbyid(s.stxowner)
               FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_statistic_ext", "s.oid")
        ),
        Class::EventTriggers => format!(
            r#"SELECT quote_ident(e.evtname),
                concat_ws(E'\n', 'on ' || e.evtevent, 'execute ' || e.evtfoid::regprocedure::text,
                  CASE WHEN e.evttags IS NOT NULL
                       THEN 'when tag in (' || array_to_string(ARRAY(SELECT t FROM unnest(e.evttags) t ORDER BY 1), ', ') || ')' END,
                  CASE e.evtenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'enabled replica'
                                    WHEN 'A' THEN 'enabled always' ELSE 'enabled' END,
                  'owner ' || pg_get_userbyid(e.evtowner))
               FROM pg_event_trigger e WHERE {}"#,
            not_ext("pg_event_trigger", "e.oid")
        ),
        Class::Publications => r#"SELECT quote_ident(p.pubname),
                concat_ws(E'\n',
                  CASE WHEN p.puballtables THEN 'for all tables' END,
                  'publish ' || concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                                          CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
                  CASE WHEN p.pubviaroot THEN 'via partition root' END,
                  'owner ' || pg_get_userbyid(p.pubowner),
                  (SELECT 'tables ' || string_agg(format('%I.%I', t.schemaname, t.tablename)
                            -- a column list (15 and later; NULL: every column, whatever the target adds)
                            || coalesce(' (' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                                 FROM pg_attribute a
                                                 WHERE a.attrelid = pr.prrelid
                                                   AND to_jsonb(pr) -> 'prattrs' @> to_jsonb(a.attnum::int)) || ')', '')
                            -- a row filter (15 and later), as the server deparses it
                            || coalesce(' where ' || (to_jsonb(t) ->> 'rowfilter'), ''),
                            ', ' ORDER BY t.schemaname, t.tablename)
                   FROM pg_publication_tables t
                   LEFT JOIN pg_publication_rel pr
                          ON pr.prpubid = p.oid AND pr.prrelid = format('%I.%I', t.schemaname, t.tablename)::regclass
                   WHERE t.pubname = p.pubname AND NOT p.puballtables))
               FROM pg_publication p"#
            .to_string(),
        // the connection string is left out: only a superuser may read it, and it may hold a password
        Class::Subscriptions => r#"SELECT quote_ident(s.subname),
                concat_ws(E'\n', CASE WHEN s.subenabled THEN 'enabled' ELSE 'disabled' END,
                  'publications ' || array_to_string(s.subpublications, ', '),
                  'slot ' || coalesce(s.subslotname::text, 'none'),
                  'synchronous_commit ' || s.subsynccommit,
                  CASE WHEN s.subbinary THEN 'binary' END,
                  'owner ' || pg_get_userbyid(s.subowner))
               FROM pg_subscription s WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"#
            .to_string(),
        Class::ForeignDataWrappers => format!(
            r#"SELECT quote_ident(w.fdwname),
                concat_ws(E'\n',
                  CASE WHEN w.fdwhandler <> 0 THEN 'handler ' || w.fdwhandler::regprocedure::text END,
                  CASE WHEN w.fdwvalidator <> 0 THEN 'validator ' || w.fdwvalidator::regprocedure::text END,
                  'options ' || nullif(array_to_string(ARRAY(SELECT o FROM unnest(w.fdwoptions) o ORDER BY 1), ', '), ''),
                  'owner ' || pg_get_userbyid(w.fdwowner))
               FROM pg_foreign_data_wrapper w WHERE {}"#,
            not_ext("pg_foreign_data_wrapper", "w.oid")
        ),
        Class::ForeignServers => format!(
            r#"SELECT quote_ident(s.srvname),
                concat_ws(E'\n', 'wrapper ' || quote_ident(w.fdwname), 'type ' || s.srvtype, 'version ' || s.srvversion,
                  'options ' || nullif(array_to_string(ARRAY(SELECT o FROM unnest(s.srvoptions) o ORDER BY 1), ', '), ''),
                  'owner ' || pg_get_userbyid(s.srvowner))
               FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE {}"#,
            not_ext("pg_foreign_server", "s.oid")
        ),
        // pg_user_mappings shows a mapping's options only to a superuser, the server's owner or the
        // mapped user: a password option's value is never part of the definition, only that it is set
        Class::UserMappings => r#"SELECT 'for ' || CASE WHEN m.umuser = 0 THEN 'PUBLIC' ELSE quote_ident(m.usename) END
                  || ' server ' || quote_ident(m.srvname),
                CASE WHEN NOT (SELECT "#.to_string()
            + USER_MAPPING_READABLE
            + ") THEN '"
            + OPTIONS_NOT_READABLE
            + r#"'
                     WHEN m.umoptions IS NULL THEN 'no options'
                     ELSE 'options ' || array_to_string(ARRAY(
                       SELECT CASE WHEN split_part(o, '=', 1) IN ('password', 'passfile', 'password_required')
                                   THEN split_part(o, '=', 1) || ' (set)' ELSE o END
                       FROM unnest(m.umoptions) o ORDER BY 1), ', ') END
               FROM pg_user_mappings m JOIN pg_foreign_server s ON s.oid = m.srvid"#,
        Class::Collations => format!(
            r#"SELECT format('%I.%I', n.nspname, c.collname),
                concat_ws(', ',
                  'provider ' || CASE c.collprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin'
                                                     ELSE 'default' END,
                  'locale ' || coalesce(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale'),
                  'lc_collate ' || c.collcollate, 'lc_ctype ' || c.collctype,
                  'rules ' || (to_jsonb(c) ->> 'collicurules'),
                  CASE WHEN NOT c.collisdeterministic THEN 'nondeterministic' END,
                  CASE WHEN c.collencoding >= 0 THEN 'encoding ' || pg_encoding_to_char(c.collencoding) END,
                  'owner ' || pg_get_userbyid(c.collowner))
               FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_collation", "c.oid")
        ),
        Class::Casts => format!(
            r#"SELECT format_type(c.castsource, NULL) || ' AS ' || format_type(c.casttarget, NULL),
                concat_ws(', ',
                  CASE c.castmethod WHEN 'f' THEN 'with function ' || c.castfunc::regprocedure::text
                                    WHEN 'i' THEN 'with inout' ELSE 'without function' END,
                  CASE c.castcontext WHEN 'e' THEN 'explicit' WHEN 'a' THEN 'as assignment' ELSE 'implicit' END)
               FROM pg_cast c WHERE c.oid >= 16384 AND {}"#,
            not_ext("pg_cast", "c.oid")
        ),
        Class::Operators => format!(
            r#"SELECT format('%I.%s(%s, %s)', n.nspname, o.oprname,
                       CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE format_type(o.oprleft, NULL) END,
                       CASE WHEN o.oprright = 0 THEN 'NONE' ELSE format_type(o.oprright, NULL) END),
                concat_ws(', ', 'function ' || o.oprcode::regprocedure::text, 'returns ' || format_type(o.oprresult, NULL),
                  CASE WHEN o.oprcom <> 0 THEN 'commutator ' || o.oprcom::regoperator::text END,
                  CASE WHEN o.oprnegate <> 0 THEN 'negator ' || o.oprnegate::regoperator::text END,
                  CASE WHEN o.oprrest <> 0 THEN 'restrict ' || o.oprrest::regprocedure::text END,
                  CASE WHEN o.oprjoin <> 0 THEN 'join ' || o.oprjoin::regprocedure::text END,
                  CASE WHEN o.oprcanhash THEN 'hashes' END, CASE WHEN o.oprcanmerge THEN 'merges' END,
                  'owner ' || pg_get_userbyid(o.oprowner))
               FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_operator", "o.oid")
        ),
        Class::OperatorClasses => format!(
            r#"SELECT format('%I.%I using %I', n.nspname, oc.opcname, am.amname),
                concat_ws(', ', 'for type ' || format_type(oc.opcintype, NULL), CASE WHEN oc.opcdefault THEN 'default' END,
                  'family ' || format('%I.%I', fn.nspname, f.opfname),
                  CASE WHEN oc.opckeytype <> 0 THEN 'storage ' || format_type(oc.opckeytype, NULL) END,
                  'owner ' || pg_get_userbyid(oc.opcowner))
               FROM pg_opclass oc JOIN pg_namespace n ON n.oid = oc.opcnamespace JOIN pg_am am ON am.oid = oc.opcmethod
                    JOIN pg_opfamily f ON f.oid = oc.opcfamily JOIN pg_namespace fn ON fn.oid = f.opfnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_opclass", "oc.oid")
        ),
        Class::OperatorFamilies => format!(
            r#"SELECT format('%I.%I using %I', n.nspname, f.opfname, am.amname),
                concat_ws(E'\n',
                  (SELECT 'operators ' || string_agg(format('%s %s%s', a.amopstrategy, a.amopopr::regoperator,
                            CASE WHEN a.amoppurpose = 'o' THEN ' for order by ' || (
                              SELECT format('%I.%I', sn.nspname, sf.opfname) FROM pg_opfamily sf
                              JOIN pg_namespace sn ON sn.oid = sf.opfnamespace WHERE sf.oid = a.amopsortfamily) ELSE '' END),
                          ', ' ORDER BY format_type(a.amoplefttype, NULL), format_type(a.amoprighttype, NULL), a.amopstrategy)
                   FROM pg_amop a WHERE a.amopfamily = f.oid),
                  (SELECT 'functions ' || string_agg(format('%s %s', p.amprocnum, p.amproc::regprocedure), ', '
                          ORDER BY format_type(p.amproclefttype, NULL), format_type(p.amprocrighttype, NULL), p.amprocnum)
                   FROM pg_amproc p WHERE p.amprocfamily = f.oid),
                  'owner ' || pg_get_userbyid(f.opfowner))
               FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod
               WHERE {un} AND {}"#,
            not_ext("pg_opfamily", "f.oid")
        ),
        Class::TextSearchConfigurations => format!(
            r#"SELECT format('%I.%I', n.nspname, c.cfgname),
                concat_ws(E'\n', 'parser ' || format('%I.%I', pn.nspname, p.prsname),
                  (SELECT 'mappings ' || string_agg(format('%s: %s', t.alias, m.dicts), ', ' ORDER BY t.alias)
                   FROM (SELECT maptokentype, string_agg(mapdict::regdictionary::text, ' ' ORDER BY mapseqno) AS dicts
                         FROM pg_ts_config_map WHERE mapcfg = c.oid GROUP BY maptokentype) m
                   JOIN ts_token_type(c.cfgparser) t ON t.tokid = m.maptokentype),
                  'owner ' || pg_get_userbyid(c.cfgowner))
               FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace
                    JOIN pg_ts_parser p ON p.oid = c.cfgparser JOIN pg_namespace pn ON pn.oid = p.prsnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_ts_config", "c.oid")
        ),
        Class::TextSearchDictionaries => format!(
            r#"SELECT format('%I.%I', n.nspname, d.dictname),
                concat_ws(', ', 'template ' || format('%I.%I', tn.nspname, t.tmplname), 'options ' || d.dictinitoption,
                  'owner ' || pg_get_userbyid(d.dictowner))
               FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace
                    JOIN pg_ts_template t ON t.oid = d.dicttemplate JOIN pg_namespace tn ON tn.oid = t.tmplnamespace
               WHERE {un} AND {}"#,
            not_ext("pg_ts_dict", "d.oid")
        ),
        // by OID, which pg_dump and pgshift keep (applications store them in their columns); their
        // comments are compared with the other comments
        Class::LargeObjects => r#"SELECT m.oid::text,
                concat_ws(', ', 'owner ' || pg_get_userbyid(m.lomowner),
                  CASE WHEN m.lomacl IS NOT NULL THEN 'grants ' || coalesce(
                    (SELECT string_agg(g, '; ' ORDER BY g)
                     FROM (SELECT format('%s %s%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                         a.privilege_type, CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END)
                                  || CASE WHEN a.grantor <> m.lomowner THEN ' granted by ' || pg_get_userbyid(a.grantor) ELSE '' END AS g
                           FROM aclexplode(m.lomacl) a) x), 'none') END)
               FROM pg_largeobject_metadata m"#
            .to_string(),
        _ => return None,
    };
    Some(q)
}

/// A user mapping's definition when the connecting role may not read its options.
pub const OPTIONS_NOT_READABLE: &str = "options not readable";

/// Whether the connecting role may read user mapping `m`'s options (server `s`): pg_user_mappings'
/// own rule, so that a mapping it hides is said not compared instead of passing as "no options".
const USER_MAPPING_READABLE: &str = "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR (m.umuser = 0 AND pg_has_role(s.srvowner, 'USAGE'))
       OR (m.umuser <> 0 AND m.usename = current_user
           AND (pg_has_role(s.srvowner, 'USAGE') OR has_server_privilege(s.oid, 'USAGE')))";

/// The user mappings whose options the connecting role may not read (named as not compared).
pub fn unreadable_user_mappings() -> String {
    format!(
        "SELECT 'for ' || CASE WHEN m.umuser = 0 THEN 'PUBLIC' ELSE quote_ident(m.usename) END || ' server ' || quote_ident(m.srvname)
           FROM pg_user_mappings m JOIN pg_foreign_server s ON s.oid = m.srvid
          WHERE NOT ({USER_MAPPING_READABLE}) ORDER BY 1"
    )
}

/// PostgreSQL 15 and later: each publication's `FOR TABLES IN SCHEMA` schemas (new tables there join
/// it), added to its definition by the inventory.
pub const PUBLICATION_SCHEMAS: &str = "SELECT quote_ident(p.pubname), string_agg(quote_ident(n.nspname), ', ' ORDER BY n.nspname)
     FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid
     GROUP BY p.pubname";

/// Each large object's size and content hash (an md5 per MiB, hashed together), computed in the
/// server a MiB at a time: read by verify's checksums, not by the inventory (it reads every byte).
pub const LARGE_OBJECT_CONTENTS: &str = r#"SELECT m.oid::text, format('%s bytes, md5 %s', sum(c.len), md5(string_agg(c.h, '' ORDER BY c.off)))
    FROM pg_largeobject_metadata m,
         LATERAL (WITH RECURSIVE r(off, len, h) AS (
                    SELECT 0::bigint, length(b)::bigint, md5(b) FROM lo_get(m.oid, 0, 1048576) b
                    UNION ALL
                    SELECT r.off + 1048576, length(b)::bigint, md5(b)
                    FROM r, lo_get(m.oid, r.off + 1048576, 1048576) b WHERE r.len = 1048576)
                  SELECT * FROM r) c
    GROUP BY m.oid"#;

//! The database's own properties, which pg_dump writes only with `--create` and pgshift therefore
//! carries itself: its settings (`ALTER DATABASE ... SET`), the settings of roles in it
//! (`ALTER ROLE ... IN DATABASE ... SET`), its privileges (what was revoked from PUBLIC included),
//! comment, security labels, connection limit and locale. Read from the source's catalog, written as statements for
//! the target's database (its name may differ), and listed for verify.

use crate::postgres::sql::{quote_ident, quote_literal};

/// One row per property: (kind, key, value). Kinds: `setting` (key = name), `role setting` (key =
/// role, value = `name=value`), `acl` (key = grantee or PUBLIC, value = privilege[*], and ` by
/// grantor` when the grantor is not the owner), `comment`,
/// `security label` (key = provider), `connection limit`, `locale`, `collation version` (15 and later), `owner`.
pub const PROPERTIES_SQL: &str = r#"
WITH d AS (SELECT * FROM pg_database WHERE datname = current_database()),
     j AS (SELECT to_jsonb(pd) AS j FROM pg_database pd WHERE datname = current_database())
SELECT 'setting', split_part(s, '=', 1), substr(s, length(split_part(s, '=', 1)) + 2)
  FROM d, pg_db_role_setting rs, unnest(rs.setconfig) s WHERE rs.setdatabase = d.oid AND rs.setrole = 0
UNION ALL
SELECT 'role setting', quote_ident(r.rolname), s
  FROM d, pg_db_role_setting rs JOIN pg_roles r ON r.oid = rs.setrole, unnest(rs.setconfig) s
  WHERE rs.setdatabase = d.oid
UNION ALL
SELECT 'acl', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
       a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
         || CASE WHEN a.grantor <> d.datdba THEN ' by ' || quote_ident(pg_get_userbyid(a.grantor)) ELSE '' END
  FROM d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
UNION ALL
SELECT 'comment', '', sd.description FROM d JOIN pg_shdescription sd ON sd.objoid = d.oid AND sd.classoid = 'pg_database'::regclass
UNION ALL
SELECT 'security label', sl.provider, sl.label FROM d JOIN pg_shseclabel sl ON sl.objoid = d.oid AND sl.classoid = 'pg_database'::regclass
UNION ALL
SELECT 'connection limit', '', d.datconnlimit::text FROM d WHERE d.datconnlimit <> -1
UNION ALL
SELECT 'locale', '', format('provider %s, collate %s, ctype %s%s',
         CASE coalesce(j ->> 'datlocprovider', 'c') WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE j ->> 'datlocprovider' END,
         j ->> 'datcollate', j ->> 'datctype',
         coalesce(', locale ' || coalesce(j ->> 'datlocale', j ->> 'daticulocale'), ''))
  FROM j
UNION ALL
SELECT 'collation version', '', j ->> 'datcollversion' FROM j WHERE j ->> 'datcollversion' IS NOT NULL
UNION ALL
SELECT 'owner', '', quote_ident(pg_get_userbyid(d.datdba)) FROM d
ORDER BY 1, 2, 3"#;

pub type Property = (String, String, String);

/// Settings whose values are lists: written as they are (pg_dump's GUC_LIST_QUOTE), others quoted.
const LIST_SETTINGS: &[&str] =
    &["search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"];

fn set_clause(name: &str, value: &str) -> String {
    if LIST_SETTINGS.contains(&name.to_lowercase().as_str()) {
        format!("SET {} = {value}", quote_ident(name))
    } else {
        format!("SET {} = {}", quote_ident(name), quote_literal(value))
    }
}

/// The statements that give the target database `db` the source's properties (but its locale and
/// owner, which creating the database sets). Privileges: every privilege of PUBLIC revoked first
/// (a new database grants it CONNECT and TEMPORARY), then the source's granted.
pub fn statements(db: &str, props: &[Property]) -> Vec<String> {
    let db = quote_ident(db);
    let mut out = vec![format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC")];
    for (kind, key, value) in props {
        match kind.as_str() {
            "setting" => out.push(format!("ALTER DATABASE {db} {}", set_clause(key, value))),
            "role setting" => {
                let (name, v) = value.split_once('=').unwrap_or((value, ""));
                out.push(format!("ALTER ROLE {key} IN DATABASE {db} {}", set_clause(name, v)));
            }
            "acl" => {}
            "comment" => out.push(format!("COMMENT ON DATABASE {db} IS {}", quote_literal(value))),
            "security label" => out.push(format!(
                "SECURITY LABEL FOR {} ON DATABASE {db} IS {}",
                quote_ident(key),
                quote_literal(value)
            )),
            "connection limit" => out.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {value}")),
            _ => {}
        }
    }
    out.extend(grants(&db, props));
    out
}

/// The database's grants, each by its grantor: the owner's first, then those a role passed on
/// with its grant option, once that role holds it (a chain of grant options in its order).
fn grants(db: &str, props: &[Property]) -> Vec<String> {
    struct Grant<'a> {
        grantee: &'a str,
        privilege: &'a str,
        option: bool,
        grantor: Option<&'a str>,
    }
    let mut left: Vec<Grant> = props
        .iter()
        .filter(|(kind, _, _)| kind == "acl")
        .map(|(_, grantee, value)| {
            let (value, grantor) = match value.split_once(" by ") {
                Some((v, g)) => (v, Some(g)),
                None => (value.as_str(), None),
            };
            let (privilege, option) = match value.strip_suffix('*') {
                Some(p) => (p, true),
                None => (value, false),
            };
            Grant { grantee, privilege, option, grantor }
        })
        .collect();
    let mut holders: Vec<(&str, &str)> = Vec::new(); // (role, privilege) holding the grant option
    let mut out = Vec::new();
    while !left.is_empty() {
        let ready = |g: &Grant| g.grantor.is_none_or(|r| holders.contains(&(r, g.privilege)));
        // a grantor that never receives the option is granted as it anyway: its failure is reported
        let next = left.iter().position(ready).unwrap_or(0);
        let g = left.remove(next);
        let grant = format!(
            "GRANT {} ON DATABASE {db} TO {}{}",
            g.privilege,
            g.grantee,
            if g.option { " WITH GRANT OPTION" } else { "" }
        );
        out.push(match g.grantor {
            // as the role that passed it on, in a transaction: the role ends with it, whatever happens
            Some(r) => format!("BEGIN; SET LOCAL ROLE {r}; {grant}; COMMIT"),
            None => grant,
        });
        if g.option {
            holders.push((g.grantee, g.privilege));
        }
    }
    out
}

/// The locale clause of `CREATE DATABASE` for the source's `locale` property, for a target of
/// major `target_major` (providers from 15, builtin from 17).
pub fn create_clause(locale: &str, target_major: i32) -> String {
    let (provider, collate, ctype, icu) = locale_fields(locale);
    let mut clause = String::new();
    if let (Some(c), Some(t)) = (&collate, &ctype) {
        clause.push_str(&format!(" LC_COLLATE {} LC_CTYPE {}", quote_literal(c), quote_literal(t)));
    }
    if target_major >= 15 {
        match (provider.as_deref(), icu) {
            (Some("icu"), Some(l)) => {
                clause.push_str(&format!(" LOCALE_PROVIDER icu ICU_LOCALE {}", quote_literal(&l)))
            }
            (Some("builtin"), Some(l)) if target_major >= 17 => {
                clause.push_str(&format!(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}", quote_literal(&l)))
            }
            _ => clause.push_str(" LOCALE_PROVIDER libc"),
        }
    }
    clause
}

/// The locale fields of a `locale` property: provider, collate, ctype, and the ICU or builtin
/// locale where there is one.
fn locale_fields(locale: &str) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
    let field = |key: &str| locale.split(", ").find_map(|p| p.strip_prefix(&format!("{key} "))).map(str::to_string);
    (field("provider"), field("collate"), field("ctype"), field("locale"))
}

/// A libc locale name as `locale -a` (and so `pg_collation`) spells it: the codeset lowercased
/// without dashes (`en_US.UTF-8` → `en_US.utf8`).
fn normalized_libc(name: &str) -> String {
    match name.split_once('.') {
        Some((lang, codeset)) => {
            let (codeset, modifier) = codeset.split_once('@').map_or((codeset, None), |(c, m)| (c, Some(m)));
            let codeset: String = codeset.chars().filter(|c| *c != '-').collect::<String>().to_lowercase();
            match modifier {
                Some(m) => format!("{lang}.{codeset}@{m}"),
                None => format!("{lang}.{codeset}"),
            }
        }
        None => name.to_string(),
    }
}

/// Why the target server cannot create a database with the source's `locale`, if it cannot:
/// a libc locale it does not know (neither a collation it imported nor its own default), ICU on a
/// server built without it, the builtin provider before 17.
pub async fn missing_locale(
    target: &tokio_postgres::Client,
    locale: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let (provider, collate, ctype, _) = locale_fields(locale);
    let major: i32 = target.query_one("SELECT current_setting('server_version_num')::int / 10000", &[]).await?.get(0);
    match provider.as_deref() {
        Some("icu") => {
            let icu: bool = target
                .query_one("SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collprovider = 'i')", &[])
                .await?
                .get(0);
            if !icu {
                return Ok(Some("the ICU locale provider (the target server is built without ICU)".into()));
            }
        }
        Some("builtin") if major < 17 => {
            return Ok(Some(format!("the builtin locale provider (new in PostgreSQL 17; the target runs {major})")))
        }
        _ => {}
    }
    let mut missing = Vec::new();
    for name in [collate, ctype].into_iter().flatten() {
        if missing.contains(&name) || matches!(name.as_str(), "C" | "POSIX") {
            continue;
        }
        let known: bool = target
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collprovider = 'c' AND collname IN ($1, $2))
                     OR EXISTS (SELECT 1 FROM pg_database WHERE datname = 'template0' AND $1 IN (datcollate, datctype))",
                &[&name, &normalized_libc(&name)],
            )
            .await?
            .get(0);
        if !known {
            missing.push(name);
        }
    }
    Ok((!missing.is_empty()).then(|| format!("the locale {}", missing.join(" and "))))
}

/// The properties as verify's `database` class: name → value, one entry each. Privileges, the
/// owner and roles' settings are compared by the grants, owners and roles classes, its security
/// labels by the security labels class.
pub fn definitions(props: &[Property]) -> std::collections::BTreeMap<String, String> {
    let mut defs = std::collections::BTreeMap::new();
    for (kind, key, value) in
        props.iter().filter(|(k, _, _)| !matches!(k.as_str(), "acl" | "owner" | "role setting" | "security label"))
    {
        let name = if key.is_empty() { kind.clone() } else { format!("{kind} {key}") };
        defs.entry(name)
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(value)
            })
            .or_insert_with(|| value.clone());
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, key: &str, value: &str) -> Property {
        (kind.into(), key.into(), value.into())
    }

    #[test]
    fn the_source_databases_properties_become_statements_for_the_target() {
        let props = [
            p("acl", "PUBLIC", "TEMPORARY"),
            p("acl", "app", "CONNECT*"),
            p("acl", "PUBLIC", "CONNECT by zeta"),
            p("acl", "zeta", "CONNECT* by app"),
            p("comment", "", "the shop's database"),
            p("connection limit", "", "40"),
            p("locale", "", "provider libc, collate C, ctype C"),
            p("role setting", "app", "work_mem=64MB"),
            p("security label", "anon", "TRUSTED"),
            p("setting", "search_path", "shop, public"),
            p("setting", "statement_timeout", "30s"),
        ];
        assert_eq!(
            statements("shop copy", &props),
            [
                "REVOKE ALL ON DATABASE \"shop copy\" FROM PUBLIC",
                "COMMENT ON DATABASE \"shop copy\" IS 'the shop''s database'",
                "ALTER DATABASE \"shop copy\" CONNECTION LIMIT 40",
                "ALTER ROLE app IN DATABASE \"shop copy\" SET work_mem = '64MB'",
                "SECURITY LABEL FOR anon ON DATABASE \"shop copy\" IS 'TRUSTED'",
                "ALTER DATABASE \"shop copy\" SET search_path = shop, public",
                "ALTER DATABASE \"shop copy\" SET statement_timeout = '30s'",
                "GRANT TEMPORARY ON DATABASE \"shop copy\" TO PUBLIC",
                "GRANT CONNECT ON DATABASE \"shop copy\" TO app WITH GRANT OPTION",
                // zeta's option first: PUBLIC got CONNECT from zeta
                "BEGIN; SET LOCAL ROLE app; GRANT CONNECT ON DATABASE \"shop copy\" TO zeta WITH GRANT OPTION; COMMIT",
                "BEGIN; SET LOCAL ROLE zeta; GRANT CONNECT ON DATABASE \"shop copy\" TO PUBLIC; COMMIT",
            ]
        );
        let defs = definitions(&props);
        assert_eq!(defs["setting search_path"], "shop, public");
        assert_eq!(defs["connection limit"], "40");
        assert!(!defs.contains_key("acl PUBLIC"), "compared by the grants class");
    }

    #[test]
    fn libc_locale_names_are_compared_as_locale_lists_them() {
        assert_eq!(normalized_libc("en_US.UTF-8"), "en_US.utf8");
        assert_eq!(normalized_libc("de_DE.ISO-8859-1@euro"), "de_DE.iso88591@euro");
        assert_eq!(normalized_libc("C"), "C");
    }

    #[test]
    fn the_locale_clause_follows_the_provider_and_the_targets_major() {
        assert_eq!(
            create_clause("provider libc, collate C, ctype C", 17),
            " LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER libc"
        );
        assert_eq!(
            create_clause("provider icu, collate en_US.UTF-8, ctype en_US.UTF-8, locale und-x-icu", 17),
            " LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'und-x-icu'"
        );
        assert_eq!(create_clause("provider libc, collate C, ctype C", 14), " LC_COLLATE 'C' LC_CTYPE 'C'");
    }
}

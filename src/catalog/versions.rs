//! What a newer PostgreSQL major or a newer extension version changes by itself, so that verify
//! does not report it as a loss (sources are often older than targets, and a DBA in a window cannot
//! tell a new default from a lost grant):
//!
//! - PostgreSQL 17 added the `MAINTAIN` table privilege: a grant of every privilege on an older
//!   source (`GRANT ALL`, or the owner's default) includes it on the target;
//! - PostgreSQL 16 stopped qualifying column names in a single-relation view's deparsed query: a
//!   view's text is compared as the target's server deparses the source's query (see
//!   [`split_view_definition`]; the flow in `verify.rs` asks the target to deparse it);
//! - an extension at a newer version on the target is an upgrade, not a difference to fail on.

use super::Class;

/// Every table privilege before PostgreSQL 17, as the grants class lists them.
const TABLE_PRIVILEGES_BEFORE_17: [&str; 7] =
    ["DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"];

/// A target's grant on a table-like object, as it reads against a source older than 17: `MAINTAIN`
/// dropped when the grantee holds every other table privilege (alike with or without grant
/// option), since `GRANT ALL` and the owner's default include it from 17 on. A lone `MAINTAIN`
/// grant stays: that is a privilege the source could not have given.
pub fn without_new_maintain(name: &str, target_def: &str, source_major: i32, target_major: i32) -> Option<String> {
    if source_major >= 17 || target_major < 17 {
        return None;
    }
    let table_like = ["table ", "view ", "materialized view ", "foreign table "].iter().any(|k| name.starts_with(k));
    if !table_like {
        return None;
    }
    let privileges: Vec<&str> = target_def.split(", ").collect();
    let maintain = privileges.iter().position(|p| p.starts_with("MAINTAIN"))?;
    let suffix = &privileges[maintain]["MAINTAIN".len()..];
    let rest: Vec<&str> = privileges.iter().enumerate().filter(|(i, _)| *i != maintain).map(|(_, p)| *p).collect();
    let all = TABLE_PRIVILEGES_BEFORE_17.iter().all(|p| rest.contains(&format!("{p}{suffix}").as_str()));
    all.then(|| rest.join(", "))
}

/// An extension newer on the target than on the source (and in the same schema): the reason to
/// allow the difference, `upgraded on the target: 2.15.3 → 2.19.3`.
pub fn extension_upgrade(source_def: &str, target_def: &str) -> Option<String> {
    let parse = |def: &str| -> Option<(Vec<u64>, String)> {
        let rest = def.strip_prefix("version ")?;
        let (version, schema) = rest.split_once(", schema ")?;
        let numbers: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
        Some((numbers?, schema.to_string()))
    };
    let ((sv, ss), (tv, ts)) = (parse(source_def)?, parse(target_def)?);
    let version = |d: &str| d.strip_prefix("version ").and_then(|r| r.split(',').next()).unwrap_or("").to_string();
    (ss == ts && tv > sv).then(|| format!("upgraded on the target: {} → {}", version(source_def), version(target_def)))
}

/// The deparsed query inside a view-like definition of `class`, with what comes before and after
/// it: a view's or materialized view's definition starts with its query (ending in `;`) and may add
/// a `with ...` or `WITH NO DATA` line; a continuous aggregate's has a first line about it, the
/// query, then its refresh state and indexes.
pub fn split_view_definition(class: Class, def: &str) -> Option<(&str, &str, &str)> {
    match class {
        Class::Views | Class::MaterializedViews => {
            let end = def.rfind(';')? + 1;
            Some(("", &def[..end], &def[end..]))
        }
        Class::ContinuousAggregates => {
            let start = def.find('\n')? + 1;
            let end = def.find("\nrefreshed up to ")?;
            (start <= end).then(|| (&def[..start], &def[start..end], &def[end..]))
        }
        _ => None,
    }
}

/// A subscription enabled on the source and the same one disabled on the target: pg_dump restores
/// subscriptions disabled (`connect = false`), as two active subscribers would both apply the
/// publisher's changes.
pub fn created_disabled(source: &str, target: &str) -> bool {
    match (source.strip_prefix("enabled"), target.strip_prefix("disabled")) {
        (Some(s), Some(t)) => s == t,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "DELETE, INSERT, REFERENCES, SELECT, TRIGGER, TRUNCATE, UPDATE";

    #[test]
    fn maintain_is_part_of_all_privileges_from_17_on() {
        let with = "DELETE, INSERT, MAINTAIN, REFERENCES, SELECT, TRIGGER, TRUNCATE, UPDATE";
        assert_eq!(without_new_maintain("table energy.sites to owner", with, 15, 17).as_deref(), Some(ALL));
        assert_eq!(without_new_maintain("view energy.v to owner", with, 16, 17).as_deref(), Some(ALL));
        // the same major on both sides, or a target before 17: nothing to forgive
        assert_eq!(without_new_maintain("table t to owner", with, 17, 17), None);
        assert_eq!(without_new_maintain("table t to owner", with, 15, 16), None);
        // MAINTAIN beside fewer privileges was given on purpose on the target: a real difference
        assert_eq!(without_new_maintain("table t to app", "MAINTAIN, SELECT", 15, 17), None);
        // with grant option, alike
        let grantable = ALL.split(", ").map(|p| format!("{p} WITH GRANT OPTION")).collect::<Vec<_>>();
        let mut target = grantable.clone();
        target.insert(2, "MAINTAIN WITH GRANT OPTION".into());
        assert_eq!(without_new_maintain("table t to o", &target.join(", "), 15, 17), Some(grantable.join(", ")));
        // sequences and schemas have no MAINTAIN
        assert_eq!(without_new_maintain("sequence s to o", with, 15, 17), None);
    }

    #[test]
    fn a_newer_extension_on_the_target_is_an_upgrade() {
        let reason = extension_upgrade("version 2.15.3, schema public", "version 2.19.3, schema public");
        assert_eq!(reason.as_deref(), Some("upgraded on the target: 2.15.3 → 2.19.3"));
        assert_eq!(extension_upgrade("version 2.19.3, schema public", "version 2.15.3, schema public"), None, "older");
        assert!(extension_upgrade("version 0.7.4, schema public", "version 0.8.0, schema public").is_some());
        assert_eq!(extension_upgrade("version 1.0, schema public", "version 1.1, schema ext"), None, "moved");
        assert_eq!(extension_upgrade("version 1.0beta, schema public", "version 1.1, schema public"), None);
    }

    #[test]
    fn the_query_inside_a_definition() {
        let view = "SELECT a,\n    b\n   FROM t;\nwith security_barrier=true";
        assert_eq!(
            split_view_definition(Class::Views, view),
            Some(("", "SELECT a,\n    b\n   FROM t;", "\nwith security_barrier=true"))
        );
        let cagg = "on m.r, materialized_only t, compression f\n SELECT time_bucket(x) AS b\n   FROM m.r;\nrefreshed up to 2026-01-01";
        assert_eq!(
            split_view_definition(Class::ContinuousAggregates, cagg),
            Some((
                "on m.r, materialized_only t, compression f\n",
                " SELECT time_bucket(x) AS b\n   FROM m.r;",
                "\nrefreshed up to 2026-01-01"
            ))
        );
        assert_eq!(split_view_definition(Class::Indexes, "x"), None);
    }

    #[test]
    fn a_subscription_restored_disabled_is_not_a_loss_but_another_change_is() {
        let on = "enabled\npublications sites\nslot s1\nsynchronous_commit off\nowner postgres";
        let off = on.replacen("enabled", "disabled", 1);
        assert!(created_disabled(on, &off));
        assert!(!created_disabled(&off, on), "disabled on the source, enabled on the target");
        assert!(!created_disabled(on, &off.replace("sites", "devices")), "another publication");
        assert!(!created_disabled(on, on));
    }
}

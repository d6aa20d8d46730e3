//! The server settings an application relies on, source beside target: the source's settings set
//! away from their defaults (configuration file, command line, `ALTER SYSTEM`), and every setting
//! that changes query results or application behaviour whatever its source (time zone, date style,
//! search path, ...). Read on a plain session (no `SET` of pgshift's own), compared here.

use serde::{Deserialize, Serialize};

/// Settings whose value changes what queries return or how the application's statements behave.
/// A difference in one of these is warned about before the run; the rest are sizing and tuning.
/// (`lc_messages` and `client_encoding` are left out: the one changes only the language of
/// messages, the other is the client's to set.)
pub const BEHAVIOUR: &[&str] = &[
    "array_nulls",
    "backslash_quote",
    "bytea_output",
    "check_function_bodies",
    "datestyle",
    "default_table_access_method",
    "default_text_search_config",
    "default_transaction_deferrable",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "escape_string_warning",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "quote_all_identifiers",
    "row_security",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "timezone_abbreviations",
    "transform_null_equals",
    "xmlbinary",
    "xmloption",
];

/// Sources of a value set for the whole server (not a database's, a role's or a session's).
const SERVER_SOURCES: &str = "('configuration file', 'command line', 'environment variable')";

/// name, the value as `SHOW` prints it, whether it is set for the server away from its default.
pub fn settings_sql() -> String {
    let behaviour = BEHAVIOUR.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT name, current_setting(name), source IN {SERVER_SOURCES} AND setting IS DISTINCT FROM boot_val
         FROM pg_settings
         WHERE lower(name) IN ({behaviour}) OR (source IN {SERVER_SOURCES} AND setting IS DISTINCT FROM boot_val)
         ORDER BY lower(name)"
    )
}

/// One side's reading: (name, value, set away from its default).
pub type Reading = Vec<(String, String, bool)>;

/// Reads the settings on a session that set none of its own.
pub async fn read(client: &tokio_postgres::Client) -> Result<Reading, tokio_postgres::Error> {
    let rows = client.query(&settings_sql(), &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Changes query results or application behaviour.
    Behaviour,
    /// Memory, workers, logging, ...: how the server runs, not what it answers.
    Sizing,
}

/// A setting that differs between the servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingDifference {
    pub name: String,
    pub source: String,
    /// None when the target has no such setting (an extension's not loaded there, another major).
    pub target: Option<String>,
    pub kind: Kind,
}

pub fn kind_of(name: &str) -> Kind {
    if BEHAVIOUR.contains(&name.to_lowercase().as_str()) {
        Kind::Behaviour
    } else {
        Kind::Sizing
    }
}

/// The settings that differ: every behaviour setting whose values differ, and each setting the
/// source sets away from its default whose target value differs. Settings only the target sets are
/// the target's own choice and not listed (the target is new).
pub fn differences(source: &Reading, target: &Reading) -> Vec<SettingDifference> {
    let value = |name: &str| target.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name)).map(|(_, v, _)| v.clone());
    source
        .iter()
        .filter_map(|(name, sv, set)| {
            let kind = kind_of(name);
            if kind == Kind::Sizing && !set {
                return None;
            }
            let tv = value(name);
            (tv.as_deref() != Some(sv.as_str())).then(|| SettingDifference {
                name: name.clone(),
                source: sv.clone(),
                target: tv,
                kind,
            })
        })
        .collect()
}

/// The pre-flight's warning for a behaviour setting that differs, unless the plan sets it.
pub fn warning(d: &SettingDifference) -> String {
    format!(
        "server setting {} is '{}' on the source but '{}' on the target: it changes query results or \
         the application's behaviour (fix: add {} = '{}' under [target.settings] in the plan, or set it on the target)",
        d.name,
        d.source,
        d.target.as_deref().unwrap_or("(not there)"),
        d.name,
        d.source
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(items: &[(&str, &str, bool)]) -> Reading {
        items.iter().map(|(n, v, s)| (n.to_string(), v.to_string(), *s)).collect()
    }

    #[test]
    fn behaviour_settings_always_compared_sizing_only_where_the_source_set_them() {
        let source = reading(&[
            ("TimeZone", "Asia/Seoul", true),
            ("DateStyle", "ISO, MDY", true),
            ("work_mem", "64MB", true),
            ("shared_buffers", "128MB", false),
            ("statement_timeout", "0", false),
            ("timescaledb.max_background_workers", "16", true),
        ]);
        let target = reading(&[
            ("TimeZone", "Etc/UTC", true),
            ("DateStyle", "ISO, MDY", true),
            ("work_mem", "4MB", false),
            ("shared_buffers", "1GB", true),
            ("statement_timeout", "30s", true),
        ]);
        let found = differences(&source, &target);
        let names: Vec<(&str, Kind)> = found.iter().map(|d| (d.name.as_str(), d.kind)).collect();
        assert_eq!(
            names,
            [
                ("TimeZone", Kind::Behaviour),
                ("work_mem", Kind::Sizing),
                ("statement_timeout", Kind::Behaviour),
                ("timescaledb.max_background_workers", Kind::Sizing),
            ]
        );
        assert_eq!(found[3].target, None, "not on the target");
        let w = warning(&found[0]);
        assert!(w.contains("'Asia/Seoul'") && w.contains("'Etc/UTC'") && w.contains("[target.settings]"), "{w}");
    }
}

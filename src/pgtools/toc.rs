//! A pg_dump archive's table of contents (`pg_restore --list`) and pg_restore's error reports:
//! which entries to restore in which round, and which of them failed and why.

use std::collections::BTreeMap;

use crate::catalog::queries::TS_SCHEMA_NAMES;

/// Entry types pg_dump writes, longest first so that "FK CONSTRAINT" wins over "CONSTRAINT".
const TYPES: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "FOREIGN DATA WRAPPER",
    "TEXT SEARCH TEMPLATE",
    "TEXT SEARCH PARSER",
    "PROCEDURAL LANGUAGE",
    "SEQUENCE OWNED BY",
    "PUBLICATION TABLE",
    "MATERIALIZED VIEW",
    "PUBLICATION TABLES IN SCHEMA",
    "CHECK CONSTRAINT",
    "OPERATOR FAMILY",
    "SECURITY LABEL",
    "OPERATOR CLASS",
    "BLOB METADATA",
    "ACCESS METHOD",
    "EVENT TRIGGER",
    "FK CONSTRAINT",
    "FOREIGN TABLE",
    "INDEX ATTACH",
    "LARGE OBJECT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "USER MAPPING",
    "DEFAULT ACL",
    "PUBLICATION",
    "SHELL TYPE",
    "SUBSCRIPTION",
    "CONVERSION",
    "STATISTICS",
    "TABLE DATA",
    "CONSTRAINT",
    "COLLATION",
    "EXTENSION",
    "PROCEDURE",
    "AGGREGATE",
    "TRANSFORM",
    "OPERATOR",
    "FUNCTION",
    "SEQUENCE",
    "DATABASE",
    "TRIGGER",
    "COMMENT",
    "DEFAULT",
    "DOMAIN",
    "POLICY",
    "SCHEMA",
    "SERVER",
    "BLOBS",
    "INDEX",
    "TABLE",
    "RULE",
    "TYPE",
    "VIEW",
    "BLOB",
    "CAST",
    "ACL",
];

/// One line of `pg_restore --list`: `4784; 1259 16390 TABLE energy readings postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u32,
    pub line: String,
    pub kind: String,
    /// `-` when the object has no schema.
    pub schema: String,
    /// The rest: object name and owner.
    pub rest: String,
}

impl Entry {
    pub fn parse(line: &str) -> Option<Entry> {
        let (id, rest) = line.split_once("; ")?;
        let id: u32 = id.trim().parse().ok()?;
        let mut fields = rest.splitn(3, ' ');
        let (_, _, typed) = (fields.next()?, fields.next()?, fields.next()?);
        let kind = TYPES.iter().find(|t| typed.starts_with(&format!("{t} ")))?;
        let after = &typed[kind.len() + 1..];
        let (schema, rest) = after.split_once(' ').unwrap_or((after, ""));
        Some(Entry { id, line: line.to_string(), kind: kind.to_string(), schema: schema.into(), rest: rest.into() })
    }

    /// The entry as the list prints it, without its number: the same in every archive pg_dump made
    /// of the database at one snapshot (`1259 16390 TABLE energy readings postgres`), where the
    /// numbers differ (a schema-only archive has no data entries).
    pub fn identity(&self) -> &str {
        self.line.split_once("; ").map(|(_, rest)| rest).unwrap_or(&self.line)
    }

    /// The object's identity on the source: (catalog OID, object OID), as the list prints them
    /// (`1259 16390` for a relation); none for entries without one (`0 0`).
    pub fn object(&self) -> Option<(u32, u32)> {
        let (_, rest) = self.line.split_once("; ")?;
        let mut fields = rest.split(' ');
        let catalog = fields.next()?.parse().ok()?;
        let oid = fields.next()?.parse().ok()?;
        (catalog != 0).then_some((catalog, oid))
    }

    /// In one of TimescaleDB's own schemas (chunks, catalog): recreated by TimescaleDB, not restored.
    pub fn is_timescaledb_internal(&self) -> bool {
        TS_SCHEMA_NAMES.contains(&self.schema.as_str())
    }

    /// The publication `name` (or a table or schema in it): an online migration's own, made on the
    /// source for the catch-up and dropped at cutover, is never restored on the target. Only that
    /// name: a user's publication may start with the same letters.
    pub fn is_publication(&self, name: &str) -> bool {
        self.kind.starts_with("PUBLICATION") && self.rest.split(' ').next() == Some(name)
    }

    /// Data, large objects included: copied by the data stage, never restored from the archive.
    pub fn is_data(&self) -> bool {
        matches!(self.kind.as_str(), "TABLE DATA" | "SEQUENCE SET" | "BLOBS" | "BLOB" | "BLOB METADATA")
            // a large object's grants and comment travel with it (pg_dump 16 and older list them
            // before the data)
            || matches!(self.kind.as_str(), "ACL" | "COMMENT" | "SECURITY LABEL") && self.rest.starts_with("LARGE OBJECT ")
    }

    /// An event trigger, or its comment.
    pub fn is_on_event_trigger(&self) -> bool {
        self.kind == "EVENT TRIGGER" || self.kind == "COMMENT" && self.rest.starts_with("EVENT TRIGGER ")
    }

    /// `energy.readings`-style name for messages.
    pub fn describe(&self) -> String {
        let name = self.rest.rsplit_once(' ').map(|(n, _)| n).unwrap_or(&self.rest);
        if self.schema == "-" {
            format!("{} {name}", self.kind.to_lowercase())
        } else {
            format!("{} {}.{name}", self.kind.to_lowercase(), self.schema)
        }
    }
}

/// The entries of a `pg_restore --list` output.
pub fn parse_list(text: &str) -> Vec<Entry> {
    text.lines().filter(|l| !l.starts_with(';')).filter_map(Entry::parse).collect()
}

/// A `--use-list` file for these entries.
pub fn list_file_text(entries: &[&Entry]) -> String {
    entries.iter().map(|e| format!("{}\n", e.line)).collect()
}

/// Follows pg_restore's stderr and records, per TOC entry id, the first error it reported.
#[derive(Debug, Default)]
pub struct FailureLog {
    current: Option<u32>,
    pub failures: BTreeMap<u32, String>,
}

impl FailureLog {
    pub fn line(&mut self, line: &str) {
        let body = line.strip_prefix("pg_restore: ").unwrap_or(line);
        if let Some(rest) = body.strip_prefix("from TOC entry ") {
            self.current = rest.split(';').next().and_then(|n| n.trim().parse().ok());
        } else if let Some(msg) = body.strip_prefix("error: ") {
            if let Some(id) = self.current {
                let msg = msg.strip_prefix("could not execute query: ").unwrap_or(msg);
                self.failures.entry(id).or_insert_with(|| msg.trim().to_string());
            }
        }
    }
}

/// What to check when an object of this kind still fails after the retry rounds.
pub fn hint(kind: &str, error: &str) -> &'static str {
    if error.contains("role") && error.contains("does not exist") {
        return "a role it names is missing on the target: restore roles.sql (or create the role) and retry";
    }
    match kind {
        "POLICY" | "ROW SECURITY" => "policies need their roles on the target and RLS enabled on the table",
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => "a type, table or function it depends on is missing",
        "TRIGGER" => "its trigger function must exist first (check the FUNCTION failures)",
        "VIEW" | "MATERIALIZED VIEW" | "MATERIALIZED VIEW DATA" => {
            "a table, view or function it reads is missing or failed"
        }
        "INDEX" | "CONSTRAINT" | "FK CONSTRAINT" => {
            "check the data (duplicates, orphans) and, on a hypertable, that unique keys include the time column"
        }
        "EXTENSION" => "install the extension on the target server (pg_available_extensions)",
        "ACL" | "DEFAULT ACL" => "a role it grants to is missing on the target",
        _ => "read the error; fix the object on the target and run again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_multiword_types_and_schemas() {
        let e =
            Entry::parse("4572; 2606 17401 FK CONSTRAINT energy devices devices_site_id_fkey pgshift_owner").unwrap();
        assert_eq!((e.id, e.kind.as_str(), e.schema.as_str()), (4572, "FK CONSTRAINT", "energy"));
        assert_eq!(e.describe(), "fk constraint energy.devices devices_site_id_fkey");
        assert_eq!(e.object(), Some((2606, 17401)));
        assert_eq!(e.identity(), "2606 17401 FK CONSTRAINT energy devices devices_site_id_fkey pgshift_owner");
        let e = Entry::parse("4785; 0 0 ACL _timescaledb_internal TABLE _hyper_1_10_chunk postgres").unwrap();
        assert!(e.is_timescaledb_internal());
        assert_eq!(e.object(), None);
        let e = Entry::parse("3; 2615 2200 SCHEMA - public pg_database_owner").unwrap();
        assert_eq!(e.schema, "-");
        let e = Entry::parse("5000; 0 16400 TABLE DATA energy sites postgres").unwrap();
        assert!(e.is_data());
        assert!(Entry::parse("; Archive created at").is_none());
        let own = "pgshift_20261207t054248z_0a1b2c3d";
        for line in [
            "3380; 6104 16500 PUBLICATION - pgshift_20261207t054248z_0a1b2c3d postgres",
            "3381; 6106 16501 PUBLICATION TABLE public pgshift_20261207t054248z_0a1b2c3d accounts",
            "3382; 6237 16502 PUBLICATION TABLES IN SCHEMA - pgshift_20261207t054248z_0a1b2c3d _timescaledb_internal",
        ] {
            assert!(Entry::parse(line).unwrap().is_publication(own), "{line}");
        }
        // a user's publication with the same prefix is theirs
        assert!(!Entry::parse("3380; 6104 16500 PUBLICATION - pgshift_sites postgres").unwrap().is_publication(own));
        // large objects, as pg_dump 17 (metadata) and 16 (one entry each) list them, with their
        // grants and comments: all carried by the data stage
        for line in [
            "3414; 2613 25970 BLOB METADATA - 25970 pgshift_owner",
            "3412; 2613 25971 BLOB - 25971 postgres",
            "3415; 0 0 BLOBS - 25970 pgshift_owner",
            "3423; 0 0 ACL - LARGE OBJECT 25970 pgshift_owner",
            "3422; 0 0 COMMENT - LARGE OBJECT 25970 pgshift_owner",
        ] {
            let e = Entry::parse(line).unwrap();
            assert!(e.is_data(), "{line}: {e:?}");
        }
        assert_eq!(Entry::parse("3414; 2613 25970 BLOB METADATA - 25970 o").unwrap().kind, "BLOB METADATA");
        assert!(!Entry::parse("3430; 0 0 ACL energy TABLE sites postgres").unwrap().is_data());
        assert!(Entry::parse("3500; 3466 17900 EVENT TRIGGER - guard postgres").unwrap().is_on_event_trigger());
        assert!(Entry::parse("3501; 0 0 COMMENT - EVENT TRIGGER guard postgres").unwrap().is_on_event_trigger());
        assert!(!Entry::parse("3502; 0 0 COMMENT - SCHEMA energy postgres").unwrap().is_on_event_trigger());
    }

    #[test]
    fn failures_are_tied_to_their_entry() {
        let mut log = FailureLog::default();
        for l in [
            "pg_restore: creating POLICY \"energy.sites tenant_isolation\"",
            "pg_restore: while PROCESSING TOC:",
            "pg_restore: from TOC entry 4590; 3256 17500 POLICY energy sites tenant_isolation postgres",
            "pg_restore: error: could not execute query: ERROR:  role \"pgshift_tenant\" does not exist",
            "Command was: CREATE POLICY tenant_isolation ON energy.sites TO pgshift_tenant;",
            "pg_restore: warning: errors ignored on restore: 1",
        ] {
            log.line(l);
        }
        assert_eq!(log.failures.len(), 1);
        assert!(log.failures[&4590].contains("pgshift_tenant"), "{:?}", log.failures);
        assert!(hint("POLICY", &log.failures[&4590]).contains("role"));
    }
}

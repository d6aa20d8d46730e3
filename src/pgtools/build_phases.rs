//! How the post-data stage spreads its entries over several target sessions: the index builds
//! first (indexes, and the primary keys and unique constraints that build one), then the foreign
//! keys that need them, each phase split into sessions by size (largest first, so the big builds
//! start at once and the small ones fill in); everything else after, in the archive's dependency
//! order with the retry rounds. Pure: the post-data stage reads the sizes and runs the sessions.

use std::collections::BTreeMap;

use crate::pgtools::toc::Entry;

/// Source sizes by the TOC's object identity (catalog OID, object OID): for an index or a
/// constraint, the bytes of the table it is built on (partitions and chunks included).
pub type Sizes = BTreeMap<(u32, u32), u64>;

/// The sizes query, run on the source: one row (catalog, oid, bytes) per index and constraint.
pub const SIZES_SQL: &str = "
WITH RECURSIVE tree(root, rel) AS (
    SELECT c.oid, c.oid FROM pg_class c
     WHERE c.relkind IN ('r', 'p', 'm') AND c.relnamespace <> 'pg_catalog'::regnamespace
    UNION ALL
    SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel
), sizes AS (
    SELECT root, sum(pg_relation_size(rel))::int8 AS bytes FROM tree GROUP BY root
)
SELECT 'pg_class'::regclass::oid::int8, x.indexrelid::int8, s.bytes
  FROM pg_index x JOIN sizes s ON s.root = x.indrelid
UNION ALL
SELECT 'pg_constraint'::regclass::oid::int8, k.oid::int8, s.bytes
  FROM pg_constraint k JOIN sizes s ON s.root = k.conrelid";

/// The post-data entries in the order the stage runs them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BuildPhases {
    /// Index builds, one list per session (each largest first).
    pub indexes: Vec<Vec<Entry>>,
    /// Foreign keys, validated one list per session once every index is built.
    pub foreign_keys: Vec<Vec<Entry>>,
    /// Everything else (triggers, rules, policies, grants, index attachments, comments,
    /// materialized view contents), in the archive's order, after both.
    pub rest: Vec<Entry>,
}

/// Splits `entries` (in archive order) into phases for `sessions` sessions.
pub fn plan(entries: Vec<Entry>, sizes: &Sizes, sessions: usize) -> BuildPhases {
    let sessions = sessions.max(1);
    let (mut indexes, mut foreign_keys, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries {
        match e.kind.as_str() {
            "INDEX" | "CONSTRAINT" => indexes.push(e),
            "FK CONSTRAINT" => foreign_keys.push(e),
            _ => rest.push(e),
        }
    }
    BuildPhases { indexes: spread(indexes, sizes, sessions), foreign_keys: spread(foreign_keys, sizes, sessions), rest }
}

/// Largest first, each entry to the session with the least work so far; empty sessions dropped.
fn spread(mut entries: Vec<Entry>, sizes: &Sizes, sessions: usize) -> Vec<Vec<Entry>> {
    let size = |e: &Entry| e.object().and_then(|o| sizes.get(&o)).copied().unwrap_or(0);
    // stable: equal sizes keep the archive's order
    entries.sort_by_key(|e| std::cmp::Reverse(size(e)));
    let mut bins: Vec<(u64, Vec<Entry>)> = (0..sessions.min(entries.len())).map(|_| (0, Vec::new())).collect();
    for e in entries {
        let bin = bins.iter_mut().min_by_key(|(load, list)| (*load, list.len())).expect("a bin per entry");
        // an empty table still costs a statement
        bin.0 += size(&e).max(1);
        bin.1.push(e);
    }
    bins.into_iter().map(|(_, list)| list).collect()
}

/// `maintenance_work_mem` for each of `sessions` builds at once: the plan's value shared out
/// (at least 1 MB each, PostgreSQL's minimum), or the value as it is when it cannot be read.
pub fn share_memory(setting: &str, sessions: usize) -> String {
    let s = setting.trim().replace(' ', "");
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = s[digits.len()..].to_ascii_lowercase();
    let kb_per = match unit.as_str() {
        "" | "kb" => 1u64,
        "mb" => 1 << 10,
        "gb" => 1 << 20,
        "tb" => 1 << 30,
        _ => return s,
    };
    let Ok(n) = digits.parse::<u64>() else { return s };
    let each = (n * kb_per / sessions.max(1) as u64).max(1024);
    format!("{}MB", each / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry {
        Entry::parse(line).unwrap()
    }

    #[test]
    fn builds_come_first_largest_first_spread_over_the_sessions_then_foreign_keys_then_the_rest() {
        let entries = vec![
            entry("10; 1259 100 INDEX public small_idx postgres"),
            entry("11; 2606 200 CONSTRAINT public big big_pkey postgres"),
            entry("12; 1259 101 INDEX public big_ts_idx postgres"),
            entry("13; 2620 300 TRIGGER public big audit postgres"),
            entry("14; 2606 201 FK CONSTRAINT public big big_small_fkey postgres"),
            entry("15; 1259 102 INDEX public medium_idx postgres"),
            entry("16; 0 0 ACL public TABLE big postgres"),
            entry("17; 2606 202 FK CONSTRAINT public medium medium_small_fkey postgres"),
        ];
        let sizes: Sizes =
            [((1259, 100), 10), ((2606, 200), 1000), ((1259, 101), 1000), ((1259, 102), 500), ((2606, 201), 1000)]
                .into_iter()
                .collect();
        let p = plan(entries, &sizes, 2);
        let ids = |bins: &Vec<Vec<Entry>>| -> Vec<Vec<u32>> {
            bins.iter().map(|b| b.iter().map(|e| e.id).collect()).collect()
        };
        // the two big builds start at once; medium and small fill the session that has less
        assert_eq!(ids(&p.indexes), vec![vec![11, 15], vec![12, 10]]);
        assert_eq!(ids(&p.foreign_keys), vec![vec![14], vec![17]]);
        assert_eq!(p.rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![13, 16]);
        // one session: one list each, nothing dropped
        let one = plan(vec![entry("10; 1259 100 INDEX public a postgres")], &sizes, 4);
        assert_eq!(one.indexes.len(), 1);
        assert!(one.foreign_keys.is_empty());
    }

    #[test]
    fn memory_is_shared_out_between_the_sessions() {
        assert_eq!(share_memory("512MB", 2), "256MB");
        assert_eq!(share_memory("1 GB", 4), "256MB");
        assert_eq!(share_memory("2048", 4), "1MB"); // kB, at least PostgreSQL's minimum
        assert_eq!(share_memory("lots", 2), "lots");
    }
}

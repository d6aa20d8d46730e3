//! Source against target: counts per class, per-name differences, rows and checksums per table, and
//! the classic six counts with where they mislead. Pure data in, report out.

use serde::{Deserialize, Serialize};

use crate::catalog::{versions, Class, Inventory, NaiveCounts, TableInfo, TablePart};
use crate::plan::allow::{AllowList, Change};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassCount {
    pub class: Class,
    pub source: usize,
    pub target: usize,
    pub difference: i64,
    pub missing: usize,
    pub extra: usize,
    pub changed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Difference {
    /// A class key, or "rows" for table data.
    pub class: String,
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it does not count: the allow file's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
    /// A detail of another difference (a chunk of a table whose rows differ), not counted apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
}

/// A comparison made in a form both servers agree on rather than as the definitions read (a newer
/// major's default privilege, a newer deparser's spelling): found equal that way, and said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Normalized {
    pub class: String,
    pub name: String,
    /// How it was compared, in plain words.
    pub how: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Same,
    CountDiffers,
    ContentDiffers,
    MissingOnTarget,
    ExtraOnTarget,
    Unreadable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableRows {
    pub name: String,
    pub kind: String,
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_checksum: Option<String>,
    pub status: RowStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NaiveRow {
    pub check: String,
    pub source: i64,
    pub target: i64,
    pub user_source: usize,
    pub user_target: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Compares the object classes. Both inventories must be complete. Returns the counts, the
/// differences and the definitions found equal only once normalized across majors.
pub fn compare_objects(
    source: &Inventory,
    target: &Inventory,
    allow: &AllowList,
) -> (Vec<ClassCount>, Vec<Difference>, Vec<Normalized>) {
    let mut counts = Vec::new();
    let mut diffs = Vec::new();
    let mut normalized = Vec::new();
    let (smajor, tmajor) = (source.server.version_num / 10000, target.server.version_num / 10000);
    for class in Class::ALL {
        let (s, t) = (source.class(class), target.class(class));
        if s.is_empty() && t.is_empty() && !source.objects.contains_key(&class) && !target.objects.contains_key(&class)
        {
            continue;
        }
        let mut count = ClassCount {
            class,
            source: s.len(),
            target: t.len(),
            difference: t.len() as i64 - s.len() as i64,
            missing: 0,
            extra: 0,
            changed: 0,
        };
        let mut push = |name: &str, change: Change, sd: Option<&String>, td: Option<&String>| {
            // an extension upgraded on the target (a newer server) is expected; a login role given
            // a password on the target where the source's had none loses nothing
            let upgraded = match (class, sd, td) {
                (Class::Extensions, Some(sd), Some(td)) => versions::extension_upgrade(sd, td),
                (Class::RolePasswords, Some(sd), Some(_)) if sd == "none" => {
                    Some("a password set on the target where the source's role had none".to_string())
                }
                (Class::Subscriptions, Some(sd), Some(td)) if versions::created_disabled(sd, td) => Some(
                    "created disabled on the target (two active subscribers would apply the same changes twice): \
                     enable it after the cutover"
                        .to_string(),
                ),
                _ => None,
            };
            diffs.push(Difference {
                class: class.key().into(),
                name: name.into(),
                change,
                source: sd.cloned(),
                target: td.cloned(),
                allowed: allow.reason(class.key(), name, change).map(String::from).or(upgraded),
                part_of: None,
            });
        };
        for (name, sd) in s {
            match t.get(name) {
                None => {
                    count.missing += 1;
                    push(name, Change::Missing, Some(sd), None);
                }
                // a newer major's default privilege is not a grant lost or added
                Some(td)
                    if class == Class::Grants
                        && versions::without_new_maintain(name, td, smajor, tmajor).as_deref() == Some(sd.as_str()) =>
                {
                    normalized.push(Normalized {
                        class: class.key().into(),
                        name: name.clone(),
                        how: format!(
                            "MAINTAIN (new in PostgreSQL 17) taken as part of the PostgreSQL {smajor} source's \
                             every-privilege grant"
                        ),
                    });
                }
                // the servers' C or ICU libraries differ: text sorts by the target's, whose indexes
                // were built by it; said, not a loss
                Some(td) if class == Class::Database && name == "collation version" && td != sd => {
                    normalized.push(Normalized {
                        class: class.key().into(),
                        name: name.clone(),
                        how: format!(
                            "collation library {sd} on the source, {td} on the target: the same locale, whose \
                             order may differ in rare cases; the target's indexes were built with its own"
                        ),
                    });
                }
                Some(td) if td != sd => {
                    count.changed += 1;
                    push(name, Change::Changed, Some(sd), Some(td));
                }
                Some(_) => {}
            }
        }
        for (name, td) in t {
            if !s.contains_key(name) {
                count.extra += 1;
                push(name, Change::Extra, None, Some(td));
            }
        }
        counts.push(count);
    }
    allow_chunks_of_allowed_hypertables(source, target, &mut diffs);
    (counts, diffs, normalized)
}

/// A chunk that differs because its hypertable differs on purpose (converted by the plan, left out,
/// partitioned anew) is part of that planned difference.
fn allow_chunks_of_allowed_hypertables(source: &Inventory, target: &Inventory, diffs: &mut [Difference]) {
    let allowed: Vec<(String, String)> = diffs
        .iter()
        .filter(|d| d.class == Class::Hypertables.key())
        .filter_map(|d| d.allowed.clone().map(|reason| (d.name.clone(), reason)))
        .collect();
    if allowed.is_empty() {
        return;
    }
    let hypertables: Vec<&String> =
        source.class(Class::Hypertables).keys().chain(target.class(Class::Hypertables).keys()).collect();
    for d in diffs.iter_mut().filter(|d| d.class == Class::Chunks.key() && d.allowed.is_none()) {
        // the chunk's hypertable: the longest hypertable name its name starts with
        let owner = hypertables.iter().filter(|h| d.name.starts_with(&format!("{h} "))).max_by_key(|h| h.len());
        if let Some(reason) = owner.and_then(|h| allowed.iter().find(|(name, _)| name == *h)).map(|(_, r)| r) {
            d.allowed = Some(format!("{reason} (one of its chunks)"));
        }
    }
}

/// Compares row counts (and checksums when measured) of every table on either side.
pub fn compare_rows(source: &Inventory, target: &Inventory, allow: &AllowList) -> (Vec<TableRows>, Vec<Difference>) {
    let mut names: Vec<&str> = source.tables.iter().chain(&target.tables).map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut rows = Vec::new();
    let mut diffs = Vec::new();
    for name in names {
        let (s, t) = (source.table(name), target.table(name));
        let kind = s.or(t).map(|x| x.kind.clone()).unwrap_or_default();
        let (status, note) = match (s, t) {
            (Some(_), None) => (RowStatus::MissingOnTarget, None),
            (None, Some(_)) => (RowStatus::ExtraOnTarget, None),
            (Some(s), Some(t)) => {
                if s.error.is_some() && s.error == t.error {
                    // unreadable the same way on both sides (an unpopulated materialized view)
                    (RowStatus::Same, s.error.clone())
                } else if let Some(e) = s.error.as_ref().or(t.error.as_ref()) {
                    (RowStatus::Unreadable, Some(e.clone()))
                } else if s.rows != t.rows {
                    (RowStatus::CountDiffers, None)
                } else if s.checksum != t.checksum {
                    (RowStatus::ContentDiffers, Some("same row count, different content".into()))
                } else {
                    (RowStatus::Same, None)
                }
            }
            (None, None) => continue,
        };
        let table_kind_note = match (s, t) {
            (Some(s), Some(t)) if s.kind != t.kind => Some(format!("{} on source, {} on target", s.kind, t.kind)),
            (Some(s), Some(t)) => chunk_note(s, Some(t), status),
            (Some(x), None) | (None, Some(x)) => chunk_note(x, None, status),
            _ => None,
        };
        let entry = TableRows {
            name: name.into(),
            kind,
            source_rows: s.and_then(|x| x.rows),
            target_rows: t.and_then(|x| x.rows),
            source_checksum: s.and_then(|x| x.checksum.clone()),
            target_checksum: t.and_then(|x| x.checksum.clone()),
            status,
            note: note.or(table_kind_note),
        };
        if status != RowStatus::Same {
            let change = match status {
                RowStatus::MissingOnTarget => Change::Missing,
                RowStatus::ExtraOnTarget => Change::Extra,
                _ => Change::Changed,
            };
            let describe = |rows: Option<i64>, sum: &Option<String>| {
                rows.map(|r| match sum {
                    Some(c) => format!("{r} rows, checksum {c}"),
                    None => format!("{r} rows"),
                })
            };
            diffs.push(Difference {
                class: "rows".into(),
                name: name.into(),
                change,
                source: describe(entry.source_rows, &entry.source_checksum).or_else(|| s.and(entry.note.clone())),
                target: describe(entry.target_rows, &entry.target_checksum).or_else(|| t.and(entry.note.clone())),
                allowed: allow.reason("rows", name, change).map(String::from),
                part_of: None,
            });
            if let (Some(s), Some(t)) = (s, t) {
                // the same chunks on both sides: name each one whose rows differ
                let allowed = allow.reason("rows", name, Change::Changed).map(String::from);
                diffs.extend(part_differences(name, s, t).into_iter().map(|mut d| {
                    d.allowed = allowed.clone();
                    d
                }));
            }
        }
        rows.push(entry);
    }
    (rows, diffs)
}

/// Whether both sides hold the same chunks (by their slices).
fn same_parts(s: &TableInfo, t: &TableInfo) -> bool {
    !s.parts.is_empty() && s.parts.len() == t.parts.len() && s.parts.iter().zip(&t.parts).all(|(a, b)| a.key == b.key)
}

/// One difference per chunk whose rows differ between two tables holding the same chunks.
fn part_differences(name: &str, s: &TableInfo, t: &TableInfo) -> Vec<Difference> {
    if !same_parts(s, t) {
        return Vec::new();
    }
    let describe = |p: &TablePart| match (&p.error, p.rows, &p.checksum) {
        (Some(e), _, _) => Some(format!("unreadable: {e}")),
        (None, Some(r), Some(c)) => {
            Some(format!("{r} rows, checksum {c}{}", if p.compressed { ", compressed" } else { "" }))
        }
        (None, Some(r), None) => Some(format!("{r} rows{}", if p.compressed { ", compressed" } else { "" })),
        (None, None, _) => None,
    };
    s.parts
        .iter()
        .zip(&t.parts)
        .filter(|(a, b)| a.error.is_some() || b.error.is_some() || a.rows != b.rows || a.checksum != b.checksum)
        .map(|(a, b)| Difference {
            class: "rows".into(),
            name: format!("{name} chunk {}", a.key),
            change: Change::Changed,
            source: describe(a),
            target: describe(b),
            allowed: None,
            part_of: Some(name.to_string()),
        })
        .collect()
}

/// What a table's chunks say beside its rows: how many there are and how many are compressed (on
/// each side, when both have the table), and whether differing rows can be traced to chunks.
fn chunk_note(s: &TableInfo, t: Option<&TableInfo>, status: RowStatus) -> Option<String> {
    if s.parts.is_empty() && t.is_none_or(|t| t.parts.is_empty()) {
        return None;
    }
    let count = |x: &TableInfo| {
        format!("{} chunks, {} compressed", x.parts.len(), x.parts.iter().filter(|p| p.compressed).count())
    };
    let Some(t) = t else { return Some(count(s)) };
    let mut note =
        if count(s) == count(t) { count(s) } else { format!("{} on the source, {} on the target", count(s), count(t)) };
    if status != RowStatus::Same && !same_parts(s, t) {
        note.push_str("; the chunks differ between the servers, so rows are compared as a whole");
    }
    Some(note)
}

/// The classic six counts, each beside the precise user count, with a note where it misleads.
pub fn naive_rows(source: &Inventory, target: &Inventory, counts: &[ClassCount]) -> Vec<NaiveRow> {
    let user = |inv: &Inventory, classes: &[Class]| classes.iter().map(|c| inv.class(*c).len()).sum::<usize>();
    let differing = |classes: &[Class]| {
        counts.iter().filter(|c| classes.contains(&c.class)).map(|c| c.missing + c.extra + c.changed).sum::<usize>()
    };
    let pick = |n: &NaiveCounts, check: &str| match check {
        "tables" => n.tables,
        "views" => n.views,
        "functions" => n.functions,
        "triggers" => n.triggers,
        "policies" => n.policies,
        _ => n.indexes,
    };
    let checks: [(&str, &[Class]); 6] = [
        ("tables", &[Class::Tables]),
        ("views", &[Class::Views, Class::ContinuousAggregates]),
        ("functions", &[Class::Functions, Class::Procedures, Class::Aggregates]),
        ("triggers", &[Class::Triggers]),
        ("policies", &[Class::Policies]),
        ("indexes", &[Class::Indexes]),
    ];
    checks
        .iter()
        .map(|(check, classes)| {
            let (ns, nt) = (pick(&source.naive, check), pick(&target.naive, check));
            let (us, ut) = (user(source, classes), user(target, classes));
            let hidden = differing(classes);
            let mut notes = Vec::new();
            if ns == nt && hidden > 0 {
                notes.push(format!("equal counts hide {hidden} {check} that differ by name or definition"));
            }
            if ns != nt && hidden == 0 && us == ut {
                notes.push("the counts differ only through internal or extension objects: nothing user-made differs".into());
            }
            let internal_s = ns - us as i64;
            let internal_t = nt - ut as i64;
            if internal_s > 0 || internal_t > 0 {
                notes.push(format!(
                    "includes {internal_s} (source) / {internal_t} (target) TimescaleDB-internal or extension-owned {check}"
                ));
            }
            NaiveRow {
                check: check.to_string(),
                source: ns,
                target: nt,
                user_source: us,
                user_target: ut,
                note: if notes.is_empty() { None } else { Some(notes.join("; ")) },
            }
        })
        .collect()
}

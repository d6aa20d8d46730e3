//! Rendering: the terminal text, the Markdown report and the JSON files, for inventory and verify.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{presets, Cell, CellAlignment, Table};
use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use crate::catalog::settings::Kind;
use crate::catalog::{Class, Inventory};
use crate::error::UserError;
use crate::plan::allow::Change;
use crate::verify::diff::{Difference, RowStatus};
use crate::verify::{Side, VerifyReport};

/// A report file, created before the work starts so a bad path fails early.
pub struct OutputFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl OutputFile {
    pub fn create(path: &Path) -> Result<Self, UserError> {
        let file = std::fs::File::create(path).map_err(|e| write_error(path, &e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    pub fn write_json<T: Serialize>(self, value: &T) -> Result<(), UserError> {
        self.write_text(&serde_json::to_string_pretty(value).expect("reports serialize"))
    }

    pub fn write_text(mut self, text: &str) -> Result<(), UserError> {
        use std::io::Write;
        self.file.write_all(text.as_bytes()).and_then(|_| self.file.sync_all()).map_err(|e| write_error(&self.path, &e))
    }
}

fn write_error(path: &Path, e: &std::io::Error) -> UserError {
    UserError::new(
        format!("cannot write {}: {e}", path.display()),
        "choose a writable path (check the directory, its permissions and free space)",
    )
}

fn table(header: &[&str], markdown: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(if markdown { presets::ASCII_MARKDOWN } else { presets::NOTHING });
    t.set_header(header.iter().map(Cell::new));
    for i in 1..header.len() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

fn server_line(label: &str, side_version: &str, ts: Option<(&str, &str)>, vector: Option<&str>) -> String {
    let short = side_version.split(" on ").next().unwrap_or(side_version);
    let mut s = format!("{label}: {short}");
    match ts {
        Some((v, lic)) => write!(s, ", TimescaleDB {v} ({lic} license)").unwrap(),
        None => s.push_str(", no TimescaleDB"),
    }
    match vector {
        Some(v) => write!(s, ", pgvector {v}").unwrap(),
        None => s.push_str(", no pgvector"),
    }
    s
}

fn side_line(name: &str, side: &Side) -> String {
    server_line(
        &format!("{name} {}", side.connection),
        &side.server.version,
        side.timescaledb.as_ref().map(|t| (t.version.as_str(), t.license.as_str())),
        side.pgvector.as_deref(),
    )
}

// ---------------------------------------------------------------- inventory

pub fn inventory_text(inv: &Inventory, label: &str) -> String {
    let mut out = String::new();
    let ts = inv.timescaledb.as_ref().map(|t| (t.version.as_str(), t.license.as_str()));
    writeln!(
        out,
        "{}",
        server_line(&format!("inventory of {label}"), &inv.server.version, ts, inv.pgvector.as_deref())
    )
    .unwrap();
    writeln!(out).unwrap();
    let mut t = table(&["objects", "count"], false);
    for class in Class::ALL {
        if let Some(defs) = inv.objects.get(&class) {
            t.add_row(vec![Cell::new(class.label()), Cell::new(defs.len())]);
        }
    }
    writeln!(out, "{t}\n").unwrap();
    if !inv.excluded.is_empty() {
        writeln!(out, "kept out of the user counts:").unwrap();
        for e in &inv.excluded {
            writeln!(out, "  {:<28} {:>6} {}", e.owner, e.count, e.what).unwrap();
        }
        writeln!(out).unwrap();
    }
    let mut t = table(&["table", "kind", "rows", "size"], false);
    for ti in &inv.tables {
        let rows = match (&ti.rows, &ti.error) {
            (Some(r), _) => r.to_string(),
            (None, Some(e)) => format!("unreadable: {e}"),
            (None, None) => "-".into(),
        };
        let kind = match ti.chunks {
            Some(n) => format!("{} ({n} chunks)", ti.kind),
            None => ti.kind.clone(),
        };
        t.add_row(vec![Cell::new(&ti.name), Cell::new(kind), Cell::new(rows), Cell::new(human_bytes(ti.bytes))]);
    }
    writeln!(out, "{t}\n").unwrap();
    let n = &inv.naive;
    writeln!(
        out,
        "classic runbook counts: tables {}, views {}, functions {}, triggers {}, policies {}, indexes {} (they include internal objects)",
        n.tables, n.views, n.functions, n.triggers, n.policies, n.indexes
    )
    .unwrap();
    for w in &inv.warnings {
        writeln!(out, "warning: {w}").unwrap();
    }
    out
}

/// Every object, class by class: name, then its definition indented.
pub fn inventory_listing(inv: &Inventory) -> String {
    let mut out = String::new();
    for (class, defs) in &inv.objects {
        writeln!(out, "\n== {} ({})", class.label(), defs.len()).unwrap();
        for (name, def) in defs {
            writeln!(out, "{name}").unwrap();
            for line in def.lines() {
                writeln!(out, "    {line}").unwrap();
            }
        }
    }
    out
}

fn human_bytes(b: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---------------------------------------------------------------- verify

pub fn change_word(c: Change) -> &'static str {
    match c {
        Change::Missing => "missing on target",
        Change::Extra => "extra on target",
        Change::Changed => "changed",
        Change::Any => "any",
    }
}

fn status_word(s: RowStatus) -> &'static str {
    match s {
        RowStatus::Same => "same",
        RowStatus::CountDiffers => "ROW COUNT DIFFERS",
        RowStatus::ContentDiffers => "CONTENT DIFFERS",
        RowStatus::MissingOnTarget => "MISSING ON TARGET",
        RowStatus::ExtraOnTarget => "EXTRA ON TARGET",
        RowStatus::Unreadable => "UNREADABLE",
    }
}

/// Lines of a definition diff: `- source`, `+ target`.
fn definition_diff(d: &Difference, max_lines: usize) -> Vec<String> {
    let (s, t) = (d.source.as_deref().unwrap_or(""), d.target.as_deref().unwrap_or(""));
    let mut lines = Vec::new();
    match d.change {
        Change::Changed => {
            for change in TextDiff::from_lines(s, t).iter_all_changes() {
                let sign = match change.tag() {
                    ChangeTag::Delete => "- ",
                    ChangeTag::Insert => "+ ",
                    ChangeTag::Equal => continue,
                };
                lines.push(format!("{sign}{}", change.value().trim_end()));
            }
        }
        Change::Missing => lines.extend(s.lines().map(|l| format!("source: {l}"))),
        Change::Extra => lines.extend(t.lines().map(|l| format!("target: {l}"))),
        Change::Any => {}
    }
    if lines.len() > max_lines {
        let more = lines.len() - max_lines;
        lines.truncate(max_lines);
        lines.push(format!("... {more} more lines (see --markdown or --json)"));
    }
    lines
}

fn counts_table(r: &VerifyReport, markdown: bool) -> Table {
    let mut t = table(&["objects", "source", "target", "difference", "missing", "extra", "changed"], markdown);
    for c in &r.classes {
        let diff = if c.difference == 0 { "0".to_string() } else { format!("{:+}", c.difference) };
        let nz = |n: usize| if n == 0 { String::new() } else { n.to_string() };
        t.add_row(vec![
            Cell::new(c.class.label()),
            Cell::new(c.source),
            Cell::new(c.target),
            Cell::new(diff),
            Cell::new(nz(c.missing)),
            Cell::new(nz(c.extra)),
            Cell::new(nz(c.changed)),
        ]);
    }
    t
}

fn rows_table(r: &VerifyReport, markdown: bool, all: bool) -> Table {
    let mut header = vec!["table", "kind", "source rows", "target rows", "status"];
    if r.checksums {
        header.push("checksum (source)");
    }
    let mut t = table(&header, markdown);
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    for tr in r.tables.iter().filter(|tr| all || tr.status != RowStatus::Same) {
        let mut status = status_word(tr.status).to_string();
        if let Some(n) = &tr.note {
            write!(status, " ({n})").unwrap();
        }
        let mut row = vec![
            Cell::new(&tr.name),
            Cell::new(&tr.kind),
            Cell::new(opt(tr.source_rows)),
            Cell::new(opt(tr.target_rows)),
            Cell::new(status),
        ];
        if r.checksums {
            row.push(Cell::new(tr.source_checksum.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("-")));
        }
        t.add_row(row);
    }
    t
}

fn naive_table(r: &VerifyReport, markdown: bool) -> Table {
    let mut t = table(
        &["classic check", "source", "target", "user objects (source)", "user objects (target)", "note"],
        markdown,
    );
    for n in &r.naive {
        t.add_row(vec![
            Cell::new(&n.check),
            Cell::new(n.source),
            Cell::new(n.target),
            Cell::new(n.user_source),
            Cell::new(n.user_target),
            Cell::new(n.note.as_deref().unwrap_or("")),
        ]);
    }
    t
}

fn verdict(r: &VerifyReport) -> String {
    let mode = match (&r.checksum_form, r.checksums) {
        (Some(form), true) => format!("row counts and checksums (computed {form})"),
        (None, true) => "row counts and checksums".to_string(),
        (_, false) => "row counts (add --checksums to compare content)".to_string(),
    };
    if r.clean {
        format!(
            "CLEAN: no differences beyond {} planned ones; compared {} classes and {mode}",
            r.planned,
            r.classes.len()
        )
    } else {
        format!(
            "NOT CLEAN: {} unexpected difference(s), {} planned; compared {} classes and {mode}",
            r.unexpected,
            r.planned,
            r.classes.len()
        )
    }
}

/// What live verification saved the window.
fn reused_line(r: &VerifyReport) -> String {
    format!(
        "{} tables and chunks taken as measured on both sides during the online catch-up (its stream did not touch \
         them since, and the target is written by pgshift alone until verified); the rest read now",
        r.reused.len()
    )
}

pub fn verify_text(r: &VerifyReport) -> String {
    let mut out = String::new();
    writeln!(out, "{}", side_line("source", &r.source)).unwrap();
    writeln!(out, "{}", side_line("target", &r.target)).unwrap();
    writeln!(out, "\n{}\n", counts_table(r, false)).unwrap();
    if !r.differences.is_empty() {
        writeln!(out, "differences ({} unexpected, {} planned):", r.unexpected, r.planned).unwrap();
        for d in &r.differences {
            match &d.allowed {
                None => writeln!(out, "  {:<22} {:<18} {}", d.class, change_word(d.change), d.name).unwrap(),
                Some(why) => {
                    writeln!(out, "  planned    {} {} {} ({why})", d.class, change_word(d.change), d.name).unwrap()
                }
            }
            if d.allowed.is_none() {
                for l in definition_diff(d, 12) {
                    writeln!(out, "               {l}").unwrap();
                }
            }
        }
        writeln!(out).unwrap();
    }
    let same = r.tables.iter().filter(|t| t.status == RowStatus::Same).count();
    writeln!(out, "rows: {} tables compared, {} identical, {} different", r.tables.len(), same, r.tables.len() - same)
        .unwrap();
    if same < r.tables.len() {
        writeln!(out, "{}", rows_table(r, false, false)).unwrap();
    }
    if !r.reused.is_empty() {
        writeln!(out, "{}", reused_line(r)).unwrap();
    }
    writeln!(out, "\n{}\n", naive_table(r, false)).unwrap();
    if !r.normalized.is_empty() {
        let mut by_how: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for n in &r.normalized {
            *by_how.entry(n.how.as_str()).or_default() += 1;
        }
        for (how, n) in by_how {
            writeln!(out, "compared across versions: {n} definition(s), {how}").unwrap();
        }
    }
    for w in &r.warnings {
        writeln!(out, "warning: {w}").unwrap();
    }
    for n in &r.not_compared {
        writeln!(out, "not compared: {n}").unwrap();
    }
    for d in r.settings.iter().filter(|d| d.kind == Kind::Behaviour) {
        let target = d.target.as_deref().unwrap_or("(not there)");
        writeln!(out, "server setting differs (changes results): {} source '{}', target '{target}'", d.name, d.source)
            .unwrap();
    }
    let sizing = r.settings.iter().filter(|d| d.kind == Kind::Sizing).count();
    if sizing > 0 {
        writeln!(out, "server settings that differ in sizing or tuning: {sizing} (listed in the Markdown report)")
            .unwrap();
    }
    writeln!(out, "{}", verdict(r)).unwrap();
    out
}

pub fn verify_markdown(r: &VerifyReport) -> String {
    let mut out = String::new();
    writeln!(out, "# pgshift verification report\n").unwrap();
    writeln!(out, "- {}", side_line("source", &r.source)).unwrap();
    writeln!(out, "- {}", side_line("target", &r.target)).unwrap();
    writeln!(out, "- pgshift {}\n", r.pgshift_version).unwrap();
    writeln!(out, "**{}**\n", verdict(r)).unwrap();
    writeln!(out, "## Objects, side by side\n\n{}\n", counts_table(r, true)).unwrap();
    writeln!(out, "## Differences\n").unwrap();
    if r.differences.is_empty() {
        writeln!(out, "None.\n").unwrap();
    }
    for d in &r.differences {
        let planned = d.allowed.as_ref().map(|w| format!(" — planned: {w}")).unwrap_or_default();
        writeln!(out, "### {} `{}`: {}{planned}\n", d.class, d.name, change_word(d.change)).unwrap();
        writeln!(out, "```diff").unwrap();
        for l in definition_diff(d, usize::MAX) {
            writeln!(out, "{l}").unwrap();
        }
        writeln!(out, "```\n").unwrap();
    }
    if !r.normalized.is_empty() {
        writeln!(out, "## Compared across versions\n\nFound equal once compared in a form both servers agree on.\n")
            .unwrap();
        for n in &r.normalized {
            writeln!(out, "- {} `{}`: {}", n.class, n.name, n.how).unwrap();
        }
        writeln!(out).unwrap();
    }
    writeln!(out, "## Rows per table\n\n{}\n", rows_table(r, true, true)).unwrap();
    if !r.reused.is_empty() {
        writeln!(out, "{}\n", reused_line(r)).unwrap();
    }
    writeln!(
        out,
        "## The classic six counts\n\nWhat a runbook's count queries show, beside the user objects pgshift compares.\n"
    )
    .unwrap();
    writeln!(out, "{}\n", naive_table(r, true)).unwrap();
    for (name, side) in [("source", &r.source), ("target", &r.target)] {
        if !side.excluded.is_empty() {
            writeln!(out, "## Kept out of the user counts ({name})\n").unwrap();
            for e in &side.excluded {
                writeln!(out, "- {}: {} {}", e.owner, e.count, e.what).unwrap();
            }
            writeln!(out).unwrap();
        }
    }
    if !r.settings.is_empty() {
        writeln!(
            out,
            "## Server settings that differ\n\nThe servers' settings, not the database's: listed, not counted as differences.\n"
        )
        .unwrap();
        let mut t = table(&["setting", "source", "target", "kind"], true);
        for d in &r.settings {
            let kind = match d.kind {
                Kind::Behaviour => "changes query results or behaviour",
                Kind::Sizing => "sizing, tuning",
            };
            t.add_row(vec![d.name.as_str(), &d.source, d.target.as_deref().unwrap_or("(not there)"), kind]);
        }
        writeln!(out, "{t}\n").unwrap();
    }
    if !r.not_compared.is_empty() {
        writeln!(out, "## Not compared\n").unwrap();
        for n in &r.not_compared {
            writeln!(out, "- {n}").unwrap();
        }
        writeln!(out).unwrap();
    }
    if !r.warnings.is_empty() {
        writeln!(out, "## Warnings\n").unwrap();
        for w in &r.warnings {
            writeln!(out, "- {w}").unwrap();
        }
    }
    out
}

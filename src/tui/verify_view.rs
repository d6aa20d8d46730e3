//! The verification view: the side-by-side proof. Counts per object class (source | target |
//! difference, coloured), and for the selected class its per-name differences, or for table rows
//! every table's row counts and checksums. What changed since the previous verify is on top.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::{App, VerifyRow};
use super::keymap::Action;
use super::text::fill;
use crate::human::human_duration;
use crate::plan::allow::Change;
use crate::verify::diff::RowStatus;
use crate::verify::VerifyReport;

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.text;
    let Some(v) = &app.verify else {
        let key = app.keymap.keys_of(Action::VerifyNow);
        let mut lines = vec![Line::raw(fill(t.verify_none, &[("key", &key)]))];
        lines.extend(status_lines(app));
        let text = Paragraph::new(lines).block(Block::bordered().title(t.view_verify)).wrap(Wrap { trim: true });
        frame.render_widget(text, area);
        return;
    };
    let r = &v.report;
    let changes = v.compared && !(v.appeared.is_empty() && v.resolved.is_empty());
    let extra = status_lines(app).len() as u16 + u16::from(v.earlier.is_some()) + u16::from(changes);
    let [summary, body] = Layout::vertical([Constraint::Length(5 + extra), Constraint::Min(5)]).areas(area);

    let (headline, color) = if r.clean {
        (fill(t.verify_clean, &[("planned", &r.planned)]), Color::Green)
    } else {
        (fill(t.verify_unclean, &[("n", &r.unexpected), ("planned", &r.planned)]), Color::Red)
    };
    let checksums = if r.checksums { t.on } else { t.off };
    let mut lines = vec![
        Line::styled(headline, Style::new().fg(color).bold()),
        Line::raw(fill(
            t.verify_at,
            &[("at", &format!("+{}", human_duration(v.at))), ("run", &v.runs), ("checksums", &checksums)],
        ))
        .fg(Color::DarkGray),
    ];
    if let Some(at) = &v.earlier {
        lines.push(Line::styled(fill(t.verify_earlier, &[("at", at)]), Style::new().fg(Color::Yellow)));
    }
    lines.extend(status_lines(app));
    if v.compared {
        if v.appeared.is_empty() && v.resolved.is_empty() {
            lines.push(Line::raw(t.verify_no_changes));
        } else {
            lines.push(Line::raw(fill(t.verify_changes, &[("new", &v.appeared.len()), ("gone", &v.resolved.len())])));
            let mut spans = Vec::new();
            for a in v.appeared.iter().take(3) {
                spans.push(Span::styled(format!("+ {a}  "), Style::new().fg(Color::Red)));
            }
            for g in v.resolved.iter().take(3) {
                spans.push(Span::styled(format!("− {g}  "), Style::new().fg(Color::Green)));
            }
            lines.push(Line::from(spans));
        }
    }
    let title = format!("{} · {} → {}", t.view_verify, r.source.connection, r.target.connection);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), summary);

    let [counts, details] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body);
    let rows = app.verify_rows();
    draw_counts(frame, app, r, &rows, counts);
    match rows.get(app.verify_selected) {
        Some(VerifyRow::Class(class)) => draw_class_details(frame, app, r, class, details),
        Some(VerifyRow::TableRows) => draw_table_rows(frame, app, r, details),
        None => {}
    }
}

/// A verify running now, or the last one that could not compare.
fn status_lines(app: &App) -> Vec<Line<'static>> {
    let t = app.text;
    let mut lines = Vec::new();
    if app.verify_running {
        lines.push(Line::styled(t.verify_running_now, Style::new().fg(Color::Cyan)));
    }
    if let Some((error, fix)) = &app.verify_failure {
        let fix = fix.clone().unwrap_or_default();
        lines.push(Line::styled(
            fill(t.verify_failed_now, &[("error", error), ("fix", &fix)]),
            Style::new().fg(Color::Red),
        ));
    }
    lines
}

fn draw_counts(frame: &mut Frame, app: &App, r: &VerifyReport, rows: &[VerifyRow], area: Rect) {
    let t = app.text;
    let header = Row::new([t.col_class, t.col_source, t.col_target, t.col_difference]).bold();
    let body: Vec<Row> = rows
        .iter()
        .map(|row| match row {
            VerifyRow::Class(key) => {
                let c = r.classes.iter().find(|c| c.class.key() == *key).expect("row from the report");
                let unexpected = r.differences.iter().any(|d| d.class == *key && d.allowed.is_none());
                let (text, color) = difference_cell(c.difference, c.missing + c.extra + c.changed, unexpected);
                Row::new([
                    Cell::from(c.class.label()),
                    Cell::from(c.source.to_string()),
                    Cell::from(c.target.to_string()),
                    Cell::from(text).style(Style::new().fg(color)),
                ])
            }
            VerifyRow::TableRows => {
                let bad = r.tables.iter().filter(|x| x.status != RowStatus::Same).count();
                let unexpected = r.differences.iter().any(|d| d.class == "rows" && d.allowed.is_none());
                let sum = |f: fn(&crate::verify::diff::TableRows) -> Option<i64>| -> i64 {
                    r.tables.iter().filter_map(f).sum()
                };
                let (source, target) = (sum(|x| x.source_rows), sum(|x| x.target_rows));
                let (text, color) = difference_cell(target - source, bad, unexpected);
                Row::new([
                    Cell::from(format!("{} ({})", t.table_rows, r.tables.len())),
                    Cell::from(source.to_string()),
                    Cell::from(target.to_string()),
                    Cell::from(text).style(Style::new().fg(color)),
                ])
            }
        })
        .collect();
    let table =
        Table::new(body, [Constraint::Min(20), Constraint::Length(8), Constraint::Length(8), Constraint::Length(10)])
            .header(header)
            .row_highlight_style(Style::new().reversed())
            .block(Block::bordered());
    let mut state = TableState::default().with_selected(Some(app.verify_selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// `=` when equal; the count difference, or `≠ N` when equal counts hide changed names.
fn difference_cell(count_diff: i64, changes: usize, unexpected: bool) -> (String, Color) {
    let text = match (count_diff, changes) {
        (0, 0) => "=".to_string(),
        (0, n) => format!("≠ {n}"),
        (d, _) => format!("{d:+}"),
    };
    let color = match (changes, unexpected) {
        (0, _) if count_diff == 0 => Color::Green,
        (_, true) => Color::Red,
        _ => Color::Yellow, // planned
    };
    (text, color)
}

fn draw_class_details(frame: &mut Frame, app: &App, r: &VerifyReport, class: &str, area: Rect) {
    let t = app.text;
    let differences: Vec<_> = r.differences.iter().filter(|d| d.class == class).collect();
    let skip = app.detail_scroll.min(differences.len().saturating_sub(1));
    let rows: Vec<Row> = differences
        .into_iter()
        .skip(skip)
        .map(|d| {
            let (mark, color) = match d.change {
                Change::Missing => (t.change[0], Color::Red),
                Change::Extra => (t.change[1], Color::Magenta),
                Change::Changed | Change::Any => (t.change[2], Color::Yellow),
            };
            let color = if d.allowed.is_some() { Color::DarkGray } else { color };
            let mut name = d.name.clone();
            if d.allowed.is_some() {
                name.push_str(&format!(" ({})", t.planned));
            }
            Row::new([Cell::from(mark), Cell::from(name)]).style(Style::new().fg(color))
        })
        .collect();
    let title = format!("{} · {}", t.details, class.replace('_', " "));
    if rows.is_empty() {
        let p = Paragraph::new(t.details_none).fg(Color::Green).block(Block::bordered().title(title));
        frame.render_widget(p, area);
        return;
    }
    let table = Table::new(rows, [Constraint::Length(8), Constraint::Min(10)])
        .header(Row::new([t.col_change, t.col_name]).bold())
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_table_rows(frame: &mut Frame, app: &App, r: &VerifyReport, area: Rect) {
    let t = app.text;
    // differing tables first
    let mut tables: Vec<_> = r.tables.iter().collect();
    tables.sort_by_key(|x| (x.status == RowStatus::Same, x.name.clone()));
    let skip = app.detail_scroll.min(tables.len().saturating_sub(1));
    let rows: Vec<Row> = tables
        .into_iter()
        .skip(skip)
        .map(|x| {
            let rows = match (x.source_rows, x.target_rows) {
                (Some(s), Some(t)) if s == t => s.to_string(),
                (s, t) => format!("{} → {}", opt(s), opt(t)),
            };
            let checksum = match (&x.source_checksum, &x.target_checksum) {
                (Some(s), Some(t)) if s == t => format!("= {}", s.chars().take(8).collect::<String>()),
                (Some(_), Some(_)) => "≠".to_string(),
                _ => "–".to_string(),
            };
            let (status, color) = match x.status {
                RowStatus::Same => (t.row_status[0], Color::Green),
                RowStatus::CountDiffers => (t.row_status[1], Color::Red),
                RowStatus::ContentDiffers => (t.row_status[2], Color::Red),
                RowStatus::MissingOnTarget => (t.row_status[3], Color::Red),
                RowStatus::ExtraOnTarget => (t.row_status[4], Color::Magenta),
                RowStatus::Unreadable => (t.row_status[5], Color::Yellow),
            };
            Row::new([Cell::from(x.name.clone()), Cell::from(rows), Cell::from(checksum), Cell::from(status)])
                .style(Style::new().fg(color))
        })
        .collect();
    let table =
        Table::new(rows, [Constraint::Min(14), Constraint::Length(13), Constraint::Length(10), Constraint::Length(10)])
            .header(Row::new([t.col_table, t.col_rows, t.col_checksum, t.col_status]).bold())
            .block(Block::bordered().title(format!("{} · {}", t.details, t.table_rows)));
    frame.render_widget(table, area);
}

fn opt(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "–".into())
}

//! The stages view: the checklist, the selected stage's result (its error and fix when it failed),
//! its live output and its progress gauges.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Gauge, List, ListItem, ListState, Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::app::{App, ProgressItem};
use super::style::{pad, status_mark, width};
use super::text::fill;
use crate::engine::{StageStatus, Stream};
use crate::human::human_duration;

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let names: Vec<&str> = app.stages.iter().map(|s| app.text.stage_name(&s.id)).collect();
    let name_width = names.iter().map(|n| width(n)).max().unwrap_or(8);
    let list_width = (name_width + 17) as u16;
    let [list, right] = Layout::horizontal([Constraint::Length(list_width), Constraint::Min(20)]).areas(area);
    draw_checklist(frame, app, list, name_width);

    let stage = &app.stages[app.selected];
    // a running stage whose gauges move in bytes or rows gets a sparkline row too
    let running = stage.status == StageStatus::Running;
    let spark = usize::from(running && !stage.throughput.is_empty()) + usize::from(running && !stage.lag.is_empty());
    let lines = stage.waits.len().min(2) * WAIT_ROWS + stage.progress.len().min(4) + spark;
    let progress_rows = if lines == 0 { 3 } else { (lines + 2) as u16 };
    // the error and its fix in full (wrapped), however long the error is
    let inner = right.width.saturating_sub(2).max(1) as usize;
    let wrapped = |s: &str| width(s).div_ceil(inner);
    let result_rows = match (&stage.error, &stage.summary) {
        (Some(e), _) => {
            let fix = stage.fix.as_deref().unwrap_or("");
            (wrapped(&format!("{}: {e}", app.text.error)) + wrapped(&format!("{}: {fix}", app.text.fix)) + 2).min(12)
                as u16
        }
        (None, Some(s)) => (wrapped(s) + 2).min(5) as u16,
        _ => 0,
    };
    let [result, output, progress] =
        Layout::vertical([Constraint::Length(result_rows), Constraint::Min(3), Constraint::Length(progress_rows)])
            .areas(right);
    draw_result(frame, app, result);
    draw_output(frame, app, output);
    draw_progress(frame, app, progress);
}

fn draw_checklist(frame: &mut Frame, app: &App, area: Rect, name_width: usize) {
    let now = app.now();
    let items: Vec<ListItem> = app
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (mark, color) = status_mark(s.status);
            let time = match (s.status, s.started, s.elapsed) {
                (StageStatus::Running, Some(t), _) => human_duration(now.duration_since(t)),
                (_, _, Some(e)) if s.status != StageStatus::Skipped => human_duration(e),
                _ => String::new(),
            };
            let name = pad(app.text.stage_name(&s.id), name_width);
            ListItem::new(Line::from(vec![
                Span::styled(format!("{} {mark} ", i + 1), Style::new().fg(color)),
                Span::raw(name),
                Span::styled(format!(" {time:>8}"), Style::new().fg(Color::DarkGray)),
            ]))
        })
        .collect();
    let list = List::new(items)
        .block(Block::bordered().title(app.text.checklist))
        .highlight_style(Style::new().reversed())
        .highlight_symbol("›");
    let mut state = ListState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_result(frame: &mut Frame, app: &App, area: Rect) {
    if area.height == 0 {
        return;
    }
    let s = &app.stages[app.selected];
    let t = app.text;
    let (lines, color) = match (&s.error, &s.summary) {
        (Some(e), _) => (
            vec![
                Line::from(vec![Span::styled(format!("{}: ", t.error), Style::new().bold()), Span::raw(e.clone())]),
                Line::from(vec![
                    Span::styled(format!("{}: ", t.fix), Style::new().bold()),
                    Span::raw(s.fix.clone().unwrap_or_default()),
                ]),
            ],
            Color::Red,
        ),
        (None, Some(summary)) => (vec![Line::raw(summary.clone())], Color::Green),
        _ => return,
    };
    let block = Block::bordered().title(app.status_text(s.status)).border_style(Style::new().fg(color));
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(block), area);
}

fn draw_output(frame: &mut Frame, app: &App, area: Rect) {
    let s = &app.stages[app.selected];
    let t = app.text;
    let height = area.height.saturating_sub(2) as usize;
    app.output_height.set(height);
    let hits: &[usize] = app.search.as_ref().map(|x| x.hits.as_slice()).unwrap_or(&[]);
    let current = app.search.as_ref().and_then(|x| x.hits.get(x.current)).copied();
    let mut lines: Vec<Line> = Vec::new();
    let visible: Vec<_> = s.output.visible(height).collect();
    let first = visible.first().map(|(n, _)| *n);
    if s.output.dropped() > 0 && first == Some(s.output.dropped()) {
        lines
            .push(Line::styled(fill(t.dropped_lines, &[("n", &s.output.dropped())]), Style::new().fg(Color::DarkGray)));
    }
    for (n, l) in visible.into_iter().take(height - lines.len().min(height)) {
        let style = match l.stream {
            Stream::Stderr => Style::new().fg(Color::Yellow),
            Stream::Info => Style::new().fg(Color::Cyan),
            Stream::Stdout => Style::new(),
        };
        let style = if Some(n) == current {
            style.reversed()
        } else if hits.binary_search(&n).is_ok() {
            style.underlined()
        } else {
            style
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", l.source), Style::new().fg(Color::DarkGray)),
            Span::styled(l.text.clone(), style),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::styled(t.no_output, Style::new().fg(Color::DarkGray)));
    }
    let mode = if s.output.following() { t.following } else { t.scrolled };
    let mut title = format!("{}: {} · {mode}", t.output, t.stage_name(&s.id));
    if let Some(search) = &app.search {
        if !search.hits.is_empty() {
            title.push_str(&format!(
                " · /{} {}",
                search.query,
                fill(t.search_hit, &[("i", &(search.current + 1)), ("n", &search.hits.len())])
            ));
        }
    }
    let block = Block::bordered().title(title).title_bottom(Line::from(s.title.clone()).right_aligned());
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Rows a waiting session gets in the progress pane (its blocker's statement wraps).
const WAIT_ROWS: usize = 3;

fn draw_progress(frame: &mut Frame, app: &App, area: Rect) {
    let s = &app.stages[app.selected];
    let t = app.text;
    // the title: how many server sessions are busy, and the rate over the last 10 s
    let now_second = s.started.map(|at| app.now().saturating_duration_since(at).as_secs()).unwrap_or(0);
    let rate = s.throughput.per_second(now_second).filter(|_| s.status == StageStatus::Running);
    let mut title = t.progress.to_string();
    if let Some(n) = s.busy.filter(|_| s.status == StageStatus::Running) {
        title.push_str(&format!(" · {}", fill(t.busy_sessions, &[("n", &n)])));
    }
    if let Some((values, unit)) = &rate {
        let recent = &values[values.len().saturating_sub(10)..];
        let per_second = recent.iter().sum::<u64>() / recent.len().max(1) as u64;
        title.push_str(&format!(" · {}/s", amount(t, per_second, None, *unit)));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if s.progress.is_empty() && s.waits.is_empty() {
        frame.render_widget(Paragraph::new(t.no_progress).fg(Color::DarkGray), inner);
        return;
    }
    // a sparkline of the last minute's throughput, on the pane's first row
    let inner = match &rate {
        Some((values, _)) if inner.height > 1 => {
            let [spark, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
            let shown = &values[values.len().saturating_sub(spark.width as usize)..];
            frame.render_widget(Sparkline::default().data(shown).style(Style::new().fg(Color::Cyan)), spark);
            rest
        }
        _ => inner,
    };
    // an online catch-up's lag: now, and a sparkline of its last samples
    let inner = match s.lag.back() {
        Some(&(bytes, millis)) if s.status == StageStatus::Running && inner.height > 1 => {
            let [row, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
            let label = fill(
                t.lag_line,
                &[("bytes", &crate::human::human_bytes(bytes)), ("seconds", &format!("{:.1}", millis as f64 / 1000.0))],
            );
            let label_width = (width(&label) + 1).min(row.width as usize) as u16;
            let [text, spark] = Layout::horizontal([Constraint::Length(label_width), Constraint::Min(0)]).areas(row);
            frame.render_widget(Paragraph::new(label), text);
            let values: Vec<u64> = s.lag.iter().map(|(_, ms)| *ms).collect();
            let shown = &values[values.len().saturating_sub(spark.width as usize)..];
            frame.render_widget(Sparkline::default().data(shown).style(Style::new().fg(Color::Yellow)), spark);
            rest
        }
        _ => inner,
    };
    // a session that waits for another comes first, in amber: for how long, for whom, then what
    let shown = s.waits.len().min(2);
    let height = ((shown * WAIT_ROWS) as u16).min(inner.height);
    let [waits_area, inner] = Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(inner);
    let rows = Layout::vertical(vec![Constraint::Length(WAIT_ROWS as u16); shown]).split(waits_area);
    for (row, w) in rows.iter().zip(&s.waits) {
        let held = w.blocker.as_deref().map(|b| fill(t.held_by, &[("holder", &b)])).unwrap_or_default();
        let server = match w.server.as_str() {
            "source" => t.plan_rows[0],
            "target" => t.plan_rows[1],
            other => other,
        };
        let text = fill(
            t.wait_line,
            &[
                ("seconds", &w.seconds),
                ("wait", &w.wait),
                ("held", &held),
                ("server", &server),
                ("pid", &w.pid),
                ("statement", &w.statement),
            ],
        );
        frame.render_widget(Paragraph::new(text).fg(Color::Yellow).wrap(Wrap { trim: true }), *row);
    }
    // unfinished items first, the most recently moved first; then the finished ones
    let mut items: Vec<&ProgressItem> = s.progress.iter().collect();
    items.sort_by_key(|p| (p.finished(), std::cmp::Reverse(p.updated)));
    let rows = Layout::vertical(vec![Constraint::Length(1); inner.height as usize]).split(inner);
    // names get what the longest shown needs, from a third to a little over half of the pane
    let shown = items.iter().take(rows.len()).map(|p| width(&p.item)).max().unwrap_or(0) as u16 + 1;
    let names = shown.clamp(inner.width * 35 / 100, inner.width * 55 / 100);
    for (row, p) in rows.iter().zip(items) {
        let [name, gauge] = Layout::horizontal([Constraint::Length(names), Constraint::Min(10)]).areas(*row);
        frame.render_widget(Paragraph::new(p.item.clone()), name);
        let mut label = amount(t, p.done, p.total, p.unit);
        // only a running stage stalls: a finished one's last server gauge may never have been closed
        let stalled = p.stalled(app.now(), app.stall_after).filter(|_| s.status == StageStatus::Running);
        match (stalled, p.eta(app.now())) {
            // standing still: how long, instead of a time left that only grows
            (Some(still), _) => {
                let done = match p.total {
                    Some(total) if total > 0 => format!("{:.0}%", p.done as f64 * 100.0 / total as f64),
                    _ => label.clone(),
                };
                label = format!("{done} · {}", fill(t.no_progress_for, &[("n", &still.as_secs())]));
            }
            (None, Some(eta)) => label.push_str(&format!(" · {} {}", t.eta, human_duration(eta))),
            (None, None) => {}
        }
        let ratio = match p.total {
            Some(total) if total > 0 => (p.done as f64 / total as f64).clamp(0.0, 1.0),
            _ => 0.0,
        };
        let color = match (p.finished(), stalled) {
            (true, _) => Color::Green,
            (false, Some(_)) => Color::Yellow,
            (false, None) => Color::Cyan,
        };
        frame.render_widget(Gauge::default().ratio(ratio).label(label).gauge_style(Style::new().fg(color)), gauge);
    }
}

/// `3 MiB / 10 MiB (30%)`, `1200 rows`, in the console's language.
fn amount(t: &super::text::Text, done: u64, total: Option<u64>, unit: crate::engine::Unit) -> String {
    use crate::engine::Unit;
    let fmt = |n: u64| match unit {
        Unit::Bytes => crate::human::human_bytes(n),
        Unit::Rows => format!("{n} {}", t.units[0]),
        Unit::Tables => format!("{n} {}", t.units[1]),
        Unit::Steps => format!("{n} {}", t.units[2]),
        Unit::Seconds => format!("{n} {}", t.units[3]),
    };
    match total {
        Some(total) if total > 0 => {
            format!("{} / {} ({:.0}%)", fmt(done), fmt(total), done as f64 * 100.0 / total as f64)
        }
        _ => fmt(done),
    }
}

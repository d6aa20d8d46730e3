//! The plan view: what this run will do, as the plan file says it (source, target, run directory,
//! hypertables, vector columns, planned differences), and where each stage stands.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::app::App;
use super::style::{pad, status_mark, width};
use super::text::fill;
use crate::engine::timeline;

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let stage_width = app.stages.iter().map(|s| width(app.text.stage_name(&s.id)) + 2).max().unwrap_or(10);
    let key_width = app.plan_lines.iter().map(|(k, _)| width(k)).max().unwrap_or(10).max(stage_width);
    let mut lines: Vec<Line> = app
        .plan_lines
        .iter()
        .map(|(k, v)| Line::from(vec![Span::styled(pad(k, key_width + 2), Style::new().bold()), Span::raw(v.clone())]))
        .collect();
    lines.push(Line::raw(""));
    for s in &app.stages {
        let (mark, color) = status_mark(s.status);
        let detail = s.error.as_deref().or(s.summary.as_deref()).unwrap_or("");
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} "), Style::new().fg(color)),
            Span::styled(pad(app.text.stage_name(&s.id), key_width), Style::new().bold()),
            Span::raw(format!("  {}", app.status_text(s.status))),
            Span::styled(
                if detail.is_empty() { String::new() } else { format!(" · {detail}") },
                Style::new().fg(Color::DarkGray),
            ),
        ]));
    }
    lines.extend(timeline_lines(app, key_width, area.width as usize));
    let text = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .scroll((app.plan_scroll as u16, 0))
        .block(Block::bordered().title(app.text.plan));
    frame.render_widget(text.fg(Color::Reset), area);
}

/// The stages that ran, each a bar on the run's clock, under a line with the wall time and how
/// much of it stages ran beside another.
fn timeline_lines(app: &App, key_width: usize, area_width: usize) -> Vec<Line<'static>> {
    let spans = app.timeline();
    if spans.is_empty() {
        return Vec::new();
    }
    let now = app.timeline_now();
    let wall = timeline::wall(&spans, now);
    let busy: std::time::Duration = spans.iter().map(|s| s.end.unwrap_or(now).saturating_sub(s.start)).sum();
    let secs = |d: std::time::Duration| format!("{:.1} s", d.as_secs_f64());
    let heading = fill(app.text.plan_timeline, &[("wall", &secs(wall)), ("beside", &secs(busy.saturating_sub(wall)))]);
    let bar_width = area_width.saturating_sub(key_width + 6).clamp(10, 60);
    let mut lines = vec![Line::raw(""), Line::styled(heading, Style::new().bold())];
    for s in &spans {
        let (_, color) = status_mark(s.status);
        lines.push(Line::from(vec![
            Span::raw("  "),
            Span::raw(pad(app.text.stage_name(&s.stage), key_width)),
            Span::styled(timeline::bar(s, &spans, now, bar_width), Style::new().fg(color)),
        ]));
    }
    lines
}

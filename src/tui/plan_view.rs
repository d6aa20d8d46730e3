//! The plan view: what this run will do, as the plan file says it (source, target, run directory,
//! hypertables, vector columns, planned differences), and where each stage stands.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::app::App;
use super::style::{pad, status_mark, width};

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
    let text = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .scroll((app.plan_scroll as u16, 0))
        .block(Block::bordered().title(app.text.plan));
    frame.render_widget(text.fg(Color::Reset), area);
}

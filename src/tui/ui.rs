//! Drawing: the frame (header, view, log, key bar) and the overlays. Each view has its own file.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use super::app::{App, Overlay, View};
use super::keymap::Action;
use super::style::{pad, width};
use super::text::fill;
use super::{plan_view, stages_view, verify_view};

pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, log, keys] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(8), Constraint::Length(6), Constraint::Length(1)])
            .areas(frame.area());
    draw_header(frame, app, header);
    match app.view {
        View::Stages => stages_view::draw(frame, app, body),
        View::Verify => verify_view::draw(frame, app, body),
        View::Plan => plan_view::draw(frame, app, body),
    }
    draw_log(frame, app, log);
    draw_keys(frame, app, keys);
    match &app.overlay {
        Some(Overlay::Help) => draw_help(frame, app),
        Some(Overlay::Confirm { question, .. }) => draw_confirm(frame, app, question),
        Some(Overlay::Search(query)) => draw_search(frame, app, query, keys),
        None => {}
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.text;
    let titles = [t.view_stages, t.view_verify, t.view_plan]
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{} {name}", i + 1))
        .collect::<Vec<_>>();
    let selected = match app.view {
        View::Stages => 0,
        View::Verify => 1,
        View::Plan => 2,
    };
    let live = match app.live {
        Some(d) => fill(t.live_every, &[("n", &d.as_secs())]),
        None => t.live_off.to_string(),
    };
    let state = if app.running { t.busy } else { t.idle };
    let right = format!(" {state} · {live} ");
    let left = format!(" {} · {} ", t.app, app.title);
    let tabs_width = titles.iter().map(|t| width(t) + 3).sum::<usize>() as u16;
    let [l, mid, r] = Layout::horizontal([
        Constraint::Min(10),
        Constraint::Length(tabs_width),
        Constraint::Length(width(&right) as u16),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(left).bold(), l);
    let tabs = Tabs::new(titles).select(selected).highlight_style(Style::new().reversed()).divider("│");
    frame.render_widget(tabs, mid);
    let style = if app.running { Style::new().fg(Color::Yellow) } else { Style::new().fg(Color::DarkGray) };
    frame.render_widget(Paragraph::new(right).style(style), r);
}

fn draw_log(frame: &mut Frame, app: &App, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(app.log.len().saturating_sub(height))
        .map(|l| {
            let secs = l.at.as_secs();
            let stamp = Span::styled(format!("+{}:{:02} ", secs / 60, secs % 60), Style::new().fg(Color::DarkGray));
            let style = if l.warning { Style::new().fg(Color::Yellow) } else { Style::new() };
            Line::from(vec![stamp, Span::styled(l.text.clone(), style)])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(app.text.log)), area);
}

/// The few keys that matter most, as the keymap binds them.
fn draw_keys(frame: &mut Frame, app: &App, area: Rect) {
    // help and quit first: on a narrow terminal the end of the bar is cut
    let actions = [
        Action::Help,
        Action::Quit,
        Action::RunAll,
        Action::RunSelected,
        Action::Retry,
        Action::Skip,
        Action::Cancel,
        Action::VerifyNow,
        Action::Cutover,
        Action::LiveVerify,
        Action::Search,
        Action::NextView,
    ];
    let mut spans = Vec::new();
    let online = app.stages.iter().any(|s| s.id == "catch-up");
    for a in actions {
        let keys = app.keymap.keys_of(a);
        if keys.is_empty() || (a == Action::Cutover && !online) {
            continue;
        }
        spans.push(Span::styled(format!(" {keys} "), Style::new().reversed()));
        spans.push(Span::raw(format!(" {} ", app.text.bar_label(a.name()))));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(frame: &mut Frame, app: &App) {
    let t = app.text;
    let mut lines: Vec<Line> = app
        .keymap
        .actions()
        .map(|a| {
            let keys = app.keymap.keys_of(a);
            Line::from(vec![Span::styled(pad(&keys, 16), Style::new().bold()), Span::raw(t.action(a.name()))])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(t.help_footer, Style::new().fg(Color::DarkGray)));
    let area = centered(frame.area(), 76, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    let help = Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(t.help_title));
    frame.render_widget(help, area);
}

fn draw_confirm(frame: &mut Frame, app: &App, question: &str) {
    let area = centered(frame.area(), 64, 6);
    frame.render_widget(Clear, area);
    let text = vec![
        Line::raw(question.to_string()),
        Line::raw(""),
        Line::styled(app.text.confirm_keys, Style::new().fg(Color::Cyan)),
    ];
    let block = Block::bordered().title(app.text.confirm_title).border_style(Style::new().fg(Color::Yellow));
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block), area);
}

fn draw_search(frame: &mut Frame, app: &App, query: &str, area: Rect) {
    frame.render_widget(Clear, area);
    let line = Line::from(vec![
        Span::styled(app.text.search_prompt, Style::new().fg(Color::Cyan)),
        Span::raw(query.to_string()),
        Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// A rectangle `w` × `h` in the middle of `area` (smaller when the area is).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(h.min(area.height))]).flex(Flex::Center).areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(w.min(area.width))]).flex(Flex::Center).areas(row);
    cell
}

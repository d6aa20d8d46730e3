//! What every view draws with: display widths and padding (wide characters count two cells) and
//! the mark and colour of a stage's status. The views and the frame import it; it imports none.

use ratatui::style::Color;
use ratatui::text::Line;

use crate::engine::StageStatus;

/// Display width (wide characters count two cells).
pub fn width(s: &str) -> usize {
    Line::raw(s).width()
}

/// `s` padded with spaces to `cells` display cells.
pub fn pad(s: &str, cells: usize) -> String {
    let w = width(s);
    format!("{s}{}", " ".repeat(cells.saturating_sub(w)))
}

/// The checklist's mark and colour for a stage's status.
pub fn status_mark(status: StageStatus) -> (&'static str, Color) {
    match status {
        StageStatus::Pending => ("·", Color::DarkGray),
        StageStatus::Running => ("▶", Color::Yellow),
        StageStatus::Done => ("✔", Color::Green),
        StageStatus::Failed => ("✘", Color::Red),
        StageStatus::Cancelled => ("■", Color::Magenta),
        StageStatus::Skipped => ("↷", Color::Blue),
    }
}

//! A stage's output as the console keeps it: the last lines only (memory stays bounded however much
//! a tool prints; the run's pgshift.log keeps everything), a scroll position that stays put while
//! lines arrive, and search.

use std::collections::VecDeque;

use crate::engine::Stream;

/// Lines kept per stage.
pub const KEEP_LINES: usize = 10_000;
/// Characters kept per line (a dump's one-line INSERT can be megabytes).
pub const KEEP_CHARS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutLine {
    pub source: String,
    pub stream: Stream,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct OutputBuffer {
    lines: VecDeque<OutLine>,
    /// Lines dropped from the front so far; absolute line numbers count them.
    dropped: usize,
    /// The absolute number of the first visible line, or None to follow the end.
    top: Option<usize>,
    keep: usize,
}

impl OutputBuffer {
    pub fn new() -> Self {
        Self::with_capacity(KEEP_LINES)
    }

    pub fn with_capacity(keep: usize) -> Self {
        Self { lines: VecDeque::new(), dropped: 0, top: None, keep: keep.max(1) }
    }

    pub fn push(&mut self, source: &str, stream: Stream, text: &str) {
        let text = match text.char_indices().nth(KEEP_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        };
        if self.lines.len() == self.keep {
            self.lines.pop_front();
            self.dropped += 1;
        }
        let source = match self.lines.back() {
            Some(last) if last.source == source => last.source.clone(),
            _ => source.to_string(),
        };
        self.lines.push_back(OutLine { source, stream, text });
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Absolute number one past the last line.
    pub fn end(&self) -> usize {
        self.dropped + self.lines.len()
    }

    pub fn following(&self) -> bool {
        self.top.is_none()
    }

    pub fn follow(&mut self) {
        self.top = None;
    }

    /// The lines to show in a pane `height` lines tall, with their absolute numbers.
    pub fn visible(&self, height: usize) -> impl Iterator<Item = (usize, &OutLine)> {
        let first = self.first_visible(height);
        self.lines.iter().enumerate().skip(first - self.dropped).take(height).map(|(i, l)| (i + self.dropped, l))
    }

    fn first_visible(&self, height: usize) -> usize {
        let last_page = self.end().saturating_sub(height).max(self.dropped);
        match self.top {
            None => last_page,
            Some(t) => t.clamp(self.dropped, last_page),
        }
    }

    /// Scrolls by `delta` lines (negative: up); reaching the end follows again.
    pub fn scroll(&mut self, delta: isize, height: usize) {
        let first = self.first_visible(height) as isize + delta;
        let last_page = self.end().saturating_sub(height).max(self.dropped) as isize;
        if first >= last_page {
            self.top = None;
        } else {
            self.top = Some(first.max(self.dropped as isize) as usize);
        }
    }

    pub fn scroll_to_top(&mut self) {
        self.top = Some(self.dropped);
    }

    /// Shows absolute line `n` in the middle of a pane `height` lines tall.
    pub fn show(&mut self, n: usize, height: usize) {
        self.top = Some(n.saturating_sub(height / 2).max(self.dropped));
        if self.first_visible(height) >= self.end().saturating_sub(height) {
            self.top = None;
        }
    }

    /// Absolute numbers of the lines containing `query` (case-insensitive).
    pub fn find(&self, query: &str) -> Vec<usize> {
        let q = query.to_lowercase();
        if q.is_empty() {
            return Vec::new();
        }
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.text.to_lowercase().contains(&q) || l.source.to_lowercase().contains(&q))
            .map(|(i, _)| i + self.dropped)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, keep: usize) -> OutputBuffer {
        let mut b = OutputBuffer::with_capacity(keep);
        for i in 0..n {
            b.push("psql", Stream::Stdout, &format!("line {i}"));
        }
        b
    }

    fn shown(b: &OutputBuffer, h: usize) -> Vec<String> {
        b.visible(h).map(|(_, l)| l.text.clone()).collect()
    }

    #[test]
    fn keeps_only_the_last_lines_and_counts_the_dropped() {
        let b = filled(25, 10);
        assert_eq!(b.len(), 10);
        assert_eq!(b.dropped(), 15);
        assert_eq!(shown(&b, 3), ["line 22", "line 23", "line 24"]);
        let mut long = OutputBuffer::new();
        long.push("x", Stream::Stdout, &"é".repeat(5000));
        assert_eq!(long.visible(1).next().unwrap().1.text.chars().count(), KEEP_CHARS + 1);
    }

    #[test]
    fn a_scrolled_pane_stays_put_while_lines_arrive_and_follows_again_at_the_end() {
        let mut b = filled(20, 100);
        b.scroll(-5, 4); // lines 11..15
        assert_eq!(shown(&b, 4), ["line 11", "line 12", "line 13", "line 14"]);
        b.push("psql", Stream::Stdout, "line 20");
        assert_eq!(shown(&b, 4)[0], "line 11", "new output does not move a scrolled view");
        assert!(!b.following());
        b.scroll(100, 4);
        assert!(b.following());
        assert_eq!(shown(&b, 4).last().unwrap(), "line 20");
    }

    #[test]
    fn search_finds_lines_and_show_centres_them() {
        let mut b = filled(50, 100);
        b.push("pg_restore", Stream::Stderr, "ERROR: relation \"x\" does not exist");
        assert_eq!(b.find("error"), vec![50]);
        assert_eq!(b.find("line 4").len(), 11); // 4, 40..49
        b.show(10, 6);
        assert_eq!(shown(&b, 6)[0], "line 7");
        assert!(b.find("").is_empty());
    }
}

//! The run's timeline: when each stage started and ended, how long it ran beside another, and the
//! whole as text bars — for `run.md` (from the journal's times) and the console's plan view (from
//! the events it saw). Pure.

use std::time::Duration;

use crate::engine::status::StageStatus;

/// One stage's time on the run's clock (offsets from the first stage's start).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub stage: String,
    pub status: StageStatus,
    pub start: Duration,
    /// None while it runs (the bar then ends at `now`).
    pub end: Option<Duration>,
}

impl Span {
    fn end_or(&self, now: Duration) -> Duration {
        self.end.unwrap_or(now).max(self.start)
    }
}

/// How long `span` ran while at least one other stage ran too.
pub fn overlap(span: &Span, all: &[Span], now: Duration) -> Duration {
    // the union of the others' intervals, cut to this one's
    let (a, b) = (span.start, span.end_or(now));
    let mut cut: Vec<(Duration, Duration)> = all
        .iter()
        .filter(|o| o.stage != span.stage)
        .map(|o| (o.start.max(a), o.end_or(now).min(b)))
        .filter(|(s, e)| s < e)
        .collect();
    cut.sort();
    let mut total = Duration::ZERO;
    let mut reach = a;
    for (s, e) in cut {
        let s = s.max(reach);
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    total
}

/// The wall time from the first start to the last end.
pub fn wall(spans: &[Span], now: Duration) -> Duration {
    let start = spans.iter().map(|s| s.start).min().unwrap_or_default();
    let end = spans.iter().map(|s| s.end_or(now)).max().unwrap_or_default();
    end.saturating_sub(start)
}

/// A bar of `width` cells for `span`: `·` before its start, `█` while it ran, spaces after.
pub fn bar(span: &Span, spans: &[Span], now: Duration, width: usize) -> String {
    let whole = wall(spans, now).as_secs_f64().max(1e-9);
    let cell = |t: Duration| ((t.as_secs_f64() / whole) * width as f64).round() as usize;
    let (from, to) = (cell(span.start).min(width), cell(span.end_or(now)).min(width));
    // a stage that ran at all shows at least one cell
    let to = if to <= from && span.end_or(now) > span.start { (from + 1).min(width) } else { to };
    let from = from.min(to);
    format!("{}{}{}", "·".repeat(from), "█".repeat(to - from), " ".repeat(width - to))
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The timeline as Markdown: a table (start, end, time, overlap) and the bars.
pub fn markdown(spans: &[Span]) -> String {
    let now = spans.iter().filter_map(|s| s.end).max().unwrap_or_default();
    let mut out = String::from(
        "## Timeline\n\n| stage | status | start | end | time | beside another stage |\n|---|---|---|---|---|---|\n",
    );
    for s in spans {
        let end = s.end.map(seconds).unwrap_or_else(|| "—".into());
        out.push_str(&format!(
            "| {} | {} | {} | {end} | {} | {} |\n",
            s.stage,
            s.status.label(),
            seconds(s.start),
            seconds(s.end_or(now) - s.start),
            seconds(overlap(s, spans, now))
        ));
    }
    let busy: Duration = spans.iter().map(|s| s.end_or(now) - s.start).sum();
    out.push_str(&format!(
        "\nWall time {} for {} of stage time ({} ran beside another stage).\n\n```\n",
        seconds(wall(spans, now)),
        seconds(busy),
        seconds(busy.saturating_sub(wall(spans, now)))
    ));
    let name_width = spans.iter().map(|s| s.stage.len()).max().unwrap_or(0);
    for s in spans {
        out.push_str(&format!("{:name_width$}  {}\n", s.stage, bar(s, spans, now, 48)));
    }
    out.push_str("```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(stage: &str, start: u64, end: Option<u64>) -> Span {
        Span {
            stage: stage.into(),
            status: if end.is_some() { StageStatus::Done } else { StageStatus::Running },
            start: Duration::from_secs(start),
            end: end.map(Duration::from_secs),
        }
    }

    #[test]
    fn overlap_counts_the_time_another_stage_ran_once() {
        let spans = vec![span("backup", 0, Some(10)), span("schema", 2, Some(4)), span("data", 3, Some(8))];
        let now = Duration::from_secs(10);
        assert_eq!(overlap(&spans[0], &spans, now), Duration::from_secs(6)); // 2..8, not 2 + 5
        assert_eq!(overlap(&spans[1], &spans, now), Duration::from_secs(2));
        assert_eq!(wall(&spans, now), Duration::from_secs(10));
        // one after another: nothing beside
        let serial = vec![span("a", 0, Some(2)), span("b", 2, Some(5))];
        assert_eq!(overlap(&serial[1], &serial, now), Duration::ZERO);
    }

    #[test]
    fn bars_place_each_stage_on_the_run_clock_and_the_table_says_the_overlap() {
        let spans = vec![span("backup", 0, Some(4)), span("data", 2, Some(8)), span("verify", 8, None)];
        let now = Duration::from_secs(10);
        assert_eq!(bar(&spans[0], &spans, now, 10), "████      ");
        assert_eq!(bar(&spans[1], &spans, now, 10), "··██████  ");
        assert_eq!(bar(&spans[2], &spans, now, 10), "········██"); // running: up to now
        let md = markdown(&spans[..2]);
        assert!(md.contains("| backup | done | 0.0 s | 4.0 s | 4.0 s | 2.0 s |"), "{md}");
        assert!(md.contains("Wall time 8.0 s for 10.0 s of stage time (2.0 s ran beside another stage)"), "{md}");
    }
}

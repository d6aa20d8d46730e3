//! `cargo bench --bench console_output [-- LINES]`: a real child process prints LINES lines
//! (default 1,000,000) through a stage, the console's runner and its bounded channels into the
//! console's state, drawn the way the console draws (a batch, then at most one frame per 40 ms) on
//! an off-screen 120×40 terminal. A key is pressed every 100 ms while the lines stream; the bench
//! prints the throughput, how long each key waited for its frame, and the peak memory. Memory must
//! stay flat: the console keeps only the last lines of each stage.
//!
//! It runs twice in one invocation, with the server watcher off and then on (the stage holds a
//! session on the test target, `PGSHIFT_TEST_TARGET`, which the watcher polls once a second), and
//! prints the ratio of the key latencies: polling must not slow the console.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use pgshift::engine::{Stage, StageContext, StageError, StageStatus};
use pgshift::pgtools::process::{run_tool, Discard, LineClass, ToolCommand};
use pgshift::tui::app::{App, Command};
use pgshift::tui::keymap::Keymap;
use pgshift::tui::runner::Runner;
use pgshift::tui::text::Lang;
use pgshift::tui::ui;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

struct Chatty(u64, pgshift::postgres::conn::ConnSpec);

impl Stage for Chatty {
    fn id(&self) -> &'static str {
        "backup"
    }
    fn title(&self) -> &'static str {
        "a tool that prints a lot"
    }
    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            // a session of the stage on a real server, as every stage has: what the watcher polls
            let _session = ctx.tagged(&self.1).connect().await?;
            let cmd = ToolCommand {
                label: "pg_restore".into(),
                program: "sh".into(),
                // a pg_restore --verbose-like line, on stderr where tools narrate
                args: vec![
                    "-c".into(),
                    format!("seq 1 {} | sed 's/^/pg_restore: creating INDEX \"energy.readings_idx_&\"/' >&2", self.0),
                ],
                env: vec![],
                stdin: None,
            };
            run_tool(ctx, &cmd, &mut Discard, &mut |_| LineClass::Plain).await?;
            Ok(format!("printed {} lines", self.0))
        })
    }
}

/// (current, peak) resident memory in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One run's figures: (lines, seconds, frames, sorted key latencies, RSS start/end/peak KiB, samples).
struct Figures {
    seen: usize,
    elapsed: Duration,
    frames: u64,
    latencies: Vec<Duration>,
    kept: usize,
    memory: (u64, u64, u64),
    samples: Vec<(usize, u64)>,
}

impl Figures {
    fn pct(&self, p: f64) -> Duration {
        self.latencies.get(((self.latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default()
    }
}

async fn one_run(lines: u64, server: &pgshift::postgres::conn::ConnSpec) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("pgshift.log")).unwrap();
    let (tx, mut msgs) = tokio::sync::mpsc::channel(8192);
    let runner = Runner::spawn(vec![Box::new(Chatty(lines, server.clone()))], dir.path().to_path_buf(), log, tx);
    let mut app = App::new(
        Lang::En.text(),
        Keymap::defaults(),
        "bench".into(),
        "nowhere".into(),
        &[("backup", "a tool that prints a lot")],
        vec![],
        Duration::from_secs(60),
    );
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let (rss_start, _) = memory();
    let started = Instant::now();
    runner.send(Command::RunAll);
    app.running = true;

    let mut keys = tokio::time::interval(Duration::from_millis(100));
    keys.tick().await;
    let mut pending_key: Option<Instant> = None;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut frames = 0u64;
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let mut next_sample = 100_000usize;
    let mut seen = 0usize;
    while app.running {
        tokio::select! {
            m = msgs.recv() => {
                let Some(m) = m else { break };
                app.on_msg(m);
                for _ in 0..2048 {
                    match msgs.try_recv() {
                        Ok(m) => app.on_msg(m),
                        Err(_) => break,
                    }
                }
            }
            _ = keys.tick(), if pending_key.is_none() => {
                // alternately scroll up a page and follow again, as a DBA reading along would
                let code = if latencies.len() % 2 == 0 { KeyCode::PageUp } else { KeyCode::End };
                pending_key = Some(Instant::now());
                app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
            }
        }
        if pending_key.is_some() || last_draw.elapsed() >= Duration::from_millis(40) {
            terminal.draw(|f| ui::draw(f, &app)).unwrap();
            frames += 1;
            last_draw = Instant::now();
            if let Some(t) = pending_key.take() {
                latencies.push(t.elapsed());
            }
        }
        let out = &app.stages[0].output;
        seen = out.dropped() + out.len();
        if seen >= next_sample {
            samples.push((seen, memory().0));
            next_sample += 100_000;
        }
    }
    let elapsed = started.elapsed();
    runner.shutdown().await;
    assert_eq!(app.stages[0].status, StageStatus::Done, "the stage finished: {:?}", app.stages[0].error);
    let (rss_end, peak) = memory();
    latencies.sort();
    let kept = app.stages[0].output.len();
    Figures { seen, elapsed, frames, latencies, kept, memory: (rss_start, rss_end, peak), samples }
}

fn print(label: &str, f: &Figures) {
    println!(
        "console output bench, server watcher {label}: {} lines (including the command line) through one pane",
        f.seen
    );
    println!(
        "  time {:.2} s, {:.0} lines/s, {} frames drawn",
        f.elapsed.as_secs_f64(),
        f.seen as f64 / f.elapsed.as_secs_f64(),
        f.frames
    );
    println!(
        "  key → frame latency over {} keys: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.latencies.len(),
        f.pct(0.5).as_secs_f64() * 1e3,
        f.pct(0.99).as_secs_f64() * 1e3,
        f.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  lines kept in the pane: {} (older ones only in pgshift.log)", f.kept);
    let (start, end, peak) = f.memory;
    println!("  memory: RSS {} MiB at start, {} MiB at the end, peak {} MiB", start / 1024, end / 1024, peak / 1024);
    for (n, rss) in &f.samples {
        println!("    after {n:>8} lines: RSS {:.1} MiB", *rss as f64 / 1024.0);
    }
}

#[tokio::main]
async fn main() {
    let lines: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let target = std::env::var("PGSHIFT_TEST_TARGET").expect(
        "PGSHIFT_TEST_TARGET: start the test servers (bash tests/env/up.sh; . /var/cache/pgshift-test/state/env.sh)",
    );
    let server = pgshift::postgres::conn::ConnSpec::parse("target", &target).expect("PGSHIFT_TEST_TARGET parses");
    // the watcher reads this when each stage starts; this process runs one stage at a time
    std::env::set_var("PGSHIFT_SERVER_WATCH", "off");
    let off = one_run(lines, &server).await;
    print("off", &off);
    std::env::set_var("PGSHIFT_SERVER_WATCH", "on");
    let on = one_run(lines, &server).await;
    print("on", &on);
    let ratio = |p: f64| on.pct(p).as_secs_f64() / off.pct(p).as_secs_f64().max(1e-6);
    println!(
        "key latency with the watcher on / off: p50 {:.2}, p99 {:.2}; throughput on / off {:.2}",
        ratio(0.5),
        ratio(0.99),
        (on.seen as f64 / on.elapsed.as_secs_f64()) / (off.seen as f64 / off.elapsed.as_secs_f64())
    );
}

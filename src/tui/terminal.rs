//! The terminal while the console is open: raw mode and the alternate screen, always given back —
//! when the console closes, on an error, on a panic (a hook restores it before the report is
//! printed) and on Ctrl-C or SIGTERM (they end the loop like any other way out).

use std::io::{stdout, Stdout};
use std::sync::Once;

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::error::UserError;

pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

static PANIC_HOOK: Once = Once::new();

impl TerminalGuard {
    pub fn enter() -> Result<TerminalGuard, UserError> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        let fail = |e: std::io::Error| {
            restore();
            UserError::new(
                format!("cannot open the console on this terminal: {e}"),
                "run it in an interactive terminal, or use pgshift run --plan FILE --yes (headless)",
            )
        };
        enable_raw_mode().map_err(fail)?;
        execute!(stdout(), EnterAlternateScreen, Hide).map_err(fail)?;
        let terminal = Terminal::new(CrosstermBackend::new(stdout())).map_err(fail)?;
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen; harmless when they are not on.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, Show);
}

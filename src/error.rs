//! Errors a user can fix: one line with what went wrong and how to fix it, and an exit code.

use std::fmt;

/// Exit code when the comparison finished and found differences.
pub const EXIT_DIFFERENCES: i32 = 1;
/// Exit code for bad input or an unreachable/refusing server.
pub const EXIT_USER_ERROR: i32 = 2;
/// Exit code when a stage started and failed (a tool failed, the disk filled up).
pub const EXIT_STAGE_FAILED: i32 = 3;
/// Exit code when the console was left before the checklist was verified (stages to do, or skipped).
pub const EXIT_INCOMPLETE: i32 = 4;
/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_CANCELLED: i32 = 130;

/// A mistake in the user's input or environment, printed as one line with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    pub message: String,
    pub fix: String,
}

impl UserError {
    pub fn new(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { message: message.into(), fix: fix.into() }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // always one line: a message taken from elsewhere (a parser, a server) may hold line breaks
        write!(f, "{} (fix: {})", one_line(&self.message), one_line(&self.fix))
    }
}

/// `text` with its line breaks folded into `; ` (blank lines dropped).
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

impl std::error::Error for UserError {}

/// `line N: ` for a TOML parse error, so a message names where the file is wrong.
pub fn toml_place(text: &str, e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!("line {}: ", text[..s.start.min(text.len())].matches('\n').count() + 1))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_as_one_line() {
        let e = UserError::new("line 8: invalid table header\nexpected `.`, `]`\n", "see\n\nthe plan");
        assert_eq!(e.to_string(), "line 8: invalid table header; expected `.`, `]` (fix: see; the plan)");
    }
}

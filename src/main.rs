use clap::Parser;

use pgshift::cli::{self, Cli};
use pgshift::error::EXIT_USER_ERROR;
use pgshift::postgres::conn::scrub;

fn main() {
    // Internal bugs get color-eyre's report; user mistakes get one line and exit code 2.
    let _ = color_eyre::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // one line, and never an echoed argument that holds a password
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("pgshift: {} (fix: see pgshift --help)", scrub(first));
            std::process::exit(EXIT_USER_ERROR);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgshift: {e}");
            EXIT_USER_ERROR
        }
    };
    std::process::exit(code);
}

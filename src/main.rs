use clap::Parser;

use pgshift::cli::{self, Cli};
use pgshift::error::EXIT_USER_ERROR;

fn main() {
    // Internal bugs get color-eyre's report; user mistakes get one line and exit code 2.
    let _ = color_eyre::install();
    let cli = Cli::parse();
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

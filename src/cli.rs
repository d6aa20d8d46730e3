//! Command-line interface: what each command takes, and running it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::allow::AllowList;
use crate::catalog::{self, rows::RowMode};
use crate::conn::ConnSpec;
use crate::error::{UserError, EXIT_DIFFERENCES};
use crate::report;
use crate::verify::{self, VerifyOptions};

const CONN_HELP: &str = "libpq URL (postgresql://user@host:port/db) or 'key=value' string; \
    missing parts come from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD and ~/.pgpass";

#[derive(Debug, Parser)]
#[command(
    name = "pgshift",
    version,
    about = "Move a PostgreSQL database onto TimescaleDB + pgvector and prove nothing was lost"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every object of a database with its definition, and exact row counts per table.
    Inventory {
        /// The database to inventory.
        #[arg(long, env = "PGSHIFT_DB", hide_env_values = true, help = CONN_HELP)]
        db: String,
        /// Also write the whole inventory (names and definitions) as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Skip the exact row counts (they read every table).
        #[arg(long)]
        no_rows: bool,
        /// Also print every object's name and definition, class by class.
        #[arg(long)]
        list: bool,
        /// Parallel connections for row counts.
        #[arg(long, default_value_t = default_workers())]
        jobs: usize,
    },
    /// Compare source and target: objects, definitions, grants, rows, checksums.
    /// Exit code 0: no differences beyond the allow file; 1: differences; 2: bad input.
    Verify {
        #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true, help = CONN_HELP)]
        source: String,
        #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true, help = CONN_HELP)]
        target: String,
        /// Compare each table's content with a streamed checksum, not only its row count.
        #[arg(long)]
        checksums: bool,
        /// TOML file listing planned differences (see README, "Allow file").
        #[arg(long, value_name = "FILE")]
        allow: Option<PathBuf>,
        /// Write the full report as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the full report as Markdown.
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// Parallel connections per side for rows and checksums.
        #[arg(long, default_value_t = default_workers())]
        jobs: usize,
    },
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

/// Runs a command; returns the process exit code for a finished run, or a user error.
pub async fn run(cli: Cli) -> Result<i32, UserError> {
    match cli.command {
        Command::Inventory { db, json, no_rows, list, jobs } => {
            let spec = ConnSpec::parse("database", &db)?;
            let json = json.map(|p| report::OutputFile::create(&p)).transpose()?;
            let inv = catalog::collect(&spec, (!no_rows).then_some(RowMode::Count), jobs).await?;
            print!("{}", report::inventory_text(&inv, &spec.label()));
            if list {
                print!("{}", report::inventory_listing(&inv));
            }
            if let Some(f) = json {
                f.write_json(&inv)?;
            }
            Ok(0)
        }
        Command::Verify { source, target, checksums, allow, json, markdown, jobs } => {
            let source = ConnSpec::parse("source", &source)?;
            let target = ConnSpec::parse("target", &target)?;
            let allow = match allow {
                Some(p) => AllowList::load(&p)?,
                None => AllowList::default(),
            };
            // open the report files first: a bad path fails now, not after hours of checksums
            let json = json.map(|p| report::OutputFile::create(&p)).transpose()?;
            let markdown = markdown.map(|p| report::OutputFile::create(&p)).transpose()?;
            let r = verify::verify(&source, &target, &allow, VerifyOptions { checksums, workers: jobs }).await?;
            print!("{}", report::verify_text(&r));
            if let Some(f) = json {
                f.write_json(&r)?;
            }
            if let Some(f) = markdown {
                f.write_text(&report::verify_markdown(&r))?;
            }
            Ok(if r.clean { 0 } else { EXIT_DIFFERENCES })
        }
    }
}

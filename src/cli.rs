//! Command-line interface: what each command takes, and running it.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::allow::AllowList;
use crate::catalog::{self, rows::RowMode};
use crate::conn::ConnSpec;
use crate::engine::{Engine, StageError};
use crate::error::{UserError, EXIT_CANCELLED, EXIT_DIFFERENCES, EXIT_STAGE_FAILED};
use crate::journal::Journal;
use crate::stages::backup::{BackupOptions, BackupStage};
use crate::verify::{self, VerifyOptions};
use crate::{files, headless, report};

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
    /// Stage 1 alone: inventory, pg_dump schema/data/archive, roles and a manifest, into
    /// DIR/<timestamp>/. Exit code 0: complete; 2: refused (bad input, tools); 3: failed; 130: cancelled.
    Backup {
        #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true, help = CONN_HELP)]
        source: String,
        /// Directory that receives one timestamped directory per backup.
        #[arg(long, default_value = "backups")]
        dir: PathBuf,
        /// Directory holding pg_dump, pg_dumpall and pg_restore (default: search PATH, pg_config
        /// --bindir and /usr/lib/postgresql/*/bin for the newest).
        #[arg(long, env = "PGSHIFT_BIN_DIR", value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Keep role password hashes in roles.sql (left out by default).
        #[arg(long)]
        role_passwords: bool,
        /// Skip exact row counts in inventory.json.
        #[arg(long)]
        no_rows: bool,
        /// Dumps run at the same time.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Print every event as one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
        /// Also print every line the tools write.
        #[arg(short, long)]
        verbose: bool,
    },
}

/// Events buffered between the engine and a slow consumer; beyond it, the work waits.
const EVENT_BUFFER: usize = 1024;

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
        Command::Backup { source, dir, bin_dir, role_passwords, no_rows, jobs, json, verbose } => {
            let source = ConnSpec::parse("source", &source)?;
            let options = BackupOptions { bin_dir, role_passwords, row_counts: !no_rows, jobs };
            let mode = if json { headless::Mode::Json } else { headless::Mode::Text { verbose } };
            run_backup(source, &dir, options, mode).await
        }
    }
}

/// Cancels the run on Ctrl-C or SIGTERM.
fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        eprintln!("pgshift: cancelling: stopping child processes and ending server sessions");
        cancel.cancel();
    });
}

async fn run_backup(
    source: ConnSpec,
    base: &Path,
    options: BackupOptions,
    mode: headless::Mode,
) -> Result<i32, UserError> {
    let dir = files::create_run_dir(base)?;
    let log = files::create_private(&dir.join("pgshift.log")).map_err(|e| files::write_error(&dir, &e))?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let printer = tokio::spawn(headless::consume(rx, mode, Some(log)));
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let mut engine = Engine::new(tx, cancel);
    engine.set_run_dir(dir.clone());
    let stage = BackupStage::new(source, options);
    if let Err(e) = engine.preflight(&[&stage]).await {
        drop(engine);
        let _ = printer.await;
        let _ = std::fs::remove_dir_all(&dir); // nothing was written but the log of the refusal
        return match e {
            StageError::Failed(e) => Err(e),
            StageError::Cancelled => {
                eprintln!("pgshift: backup cancelled before it started");
                Ok(EXIT_CANCELLED)
            }
        };
    }
    let mut journal = Journal::open(&dir).map_err(|m| UserError::new(m, "use a new --dir"))?;
    let outcome = engine.run(&[&stage], Some(&mut journal)).await;
    drop(engine);
    let _ = printer.await;
    if outcome.succeeded() {
        if mode != headless::Mode::Json {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", dir.display());
        }
        Ok(0)
    } else if outcome.cancelled() {
        eprintln!("pgshift: backup cancelled; {} is incomplete (no manifest.json)", dir.display());
        Ok(EXIT_CANCELLED)
    } else {
        let e = outcome.error.unwrap_or_else(|| UserError::new("backup failed", "see the output above"));
        eprintln!("pgshift: {e}");
        Ok(EXIT_STAGE_FAILED)
    }
}

//! Command-line interface: what each command takes, and running it.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use std::io::Write as _;

use crate::catalog::{self, rows::RowMode};
use crate::checklist::headless;
use crate::commands::env as env_commands;
use crate::error::{UserError, EXIT_CANCELLED, EXIT_DIFFERENCES, EXIT_STAGE_FAILED};
use crate::files;
use crate::plan::allow::AllowList;
use crate::postgres::conn::ConnSpec;
use crate::stages::backup::{BackupOptions, BackupStage};
use crate::verify::report;
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

/// How the console looks and answers.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Language of the console: en or ko (default: from LC_ALL, LC_MESSAGES or LANG).
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,
    /// Keys file (default: ~/.config/pgshift/keys.toml when it exists; see assets/keys.toml).
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Turn live verification on from the start.
    #[arg(long)]
    pub live: bool,
    /// Seconds between live verifications.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
    pub live_every: u64,
    /// Seconds an unfinished progress gauge may stand still before it turns amber and says so.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..))]
    pub stall_after: u64,
}

impl ConsoleArgs {
    pub fn options(&self) -> Result<crate::tui::ConsoleOptions, UserError> {
        Ok(crate::tui::ConsoleOptions {
            lang: crate::tui::text::Lang::detect(self.lang.as_deref())?,
            keys: self.keys.clone(),
            live: self.live,
            live_every: std::time::Duration::from_secs(self.live_every),
            stall_after: std::time::Duration::from_secs(self.stall_after),
        })
    }
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
    /// Stage 1 alone: inventory, pg_dump archive (and schema.sql, data.sql), roles and a manifest, into
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
        /// Also write data.sql: every row once more, as plain SQL (full.dump holds them already).
        #[arg(long)]
        data_sql: bool,
        /// Leave out schema.sql (the classic runbook's schema dump).
        #[arg(long)]
        no_schema_sql: bool,
        /// How full.dump is compressed: auto (lz4 with pg_dump 16+, else gzip), lz4, zstd, gzip, none.
        #[arg(long, default_value = "auto", value_name = "METHOD")]
        compress: crate::plan::Compression,
        /// Print every event as one JSON object per line on stdout.
        #[arg(long)]
        json: bool,
        /// Also print every line the tools write.
        #[arg(short, long)]
        verbose: bool,
    },
    /// One command from a fresh machine to the whole checklist: creates a sample energy/IoT source
    /// database, picks a target (--target, else a container when a Docker engine answers, else a
    /// local PostgreSQL from this machine's binaries), writes DIR/demo.toml and opens the console.
    /// Run it again to resume; --reset starts over.
    Demo {
        /// Server for the sample source (default: a local PostgreSQL started in DIR).
        #[arg(long, value_name = "CONN")]
        source: Option<String>,
        /// Existing target server (default: a container, else a local PostgreSQL in DIR).
        #[arg(long, value_name = "CONN")]
        target: Option<String>,
        /// Where the plan, backups and local servers live.
        #[arg(long, default_value = "pgshift-demo")]
        dir: PathBuf,
        /// Name of the demo database on both sides.
        #[arg(long, default_value = "pgshift_demo")]
        database: String,
        /// Directory of the PostgreSQL tools (and of initdb/pg_ctl for local servers).
        #[arg(long, env = "PGSHIFT_BIN_DIR", value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Container target: the image to run (built from --dockerfile when missing).
        #[arg(long)]
        image: Option<String>,
        /// Container target: the Dockerfile to build (default: the embedded Dockerfile.timescaledb).
        #[arg(long, value_name = "FILE")]
        dockerfile: Option<PathBuf>,
        /// Container target: the port published on 127.0.0.1.
        #[arg(long, default_value_t = 55433)]
        port: u16,
        /// Drop what an earlier demo made (its databases, container, local servers, backups) first.
        #[arg(long)]
        reset: bool,
        /// Run the checklist headless instead of opening the console.
        #[arg(long)]
        headless: bool,
        #[command(flatten)]
        view: ConsoleArgs,
    },
    /// Open the console on a plan: the checklist, live output and progress, the side-by-side
    /// verification. Keys run, retry, skip and cancel stages (press ? for all of them). A reopened
    /// console resumes the latest unfinished run. Exit codes as for run, plus 4: left before the
    /// checklist was verified.
    Console {
        /// The plan (TOML; pgshift plan init writes one).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Start a new run instead of resuming the latest one.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        view: ConsoleArgs,
    },
    /// Run the whole plan headless: backup, environment, schema, data, post-data, timescaledb,
    /// pgvector, tuning, verify. A rerun resumes
    /// the latest unfinished run. Exit code 0: migrated and verified clean; 1: verify found
    /// differences; 2: refused; 3: a stage failed; 130: cancelled.
    Run {
        /// The plan (TOML; pgshift plan init writes one).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Confirm: the run writes to the target.
        #[arg(long)]
        yes: bool,
        /// Start a new run instead of resuming the latest unfinished one.
        #[arg(long)]
        restart: bool,
        /// Online migration (as `[online] enabled = true`): copy while the application writes, catch
        /// up through logical replication, and cut over once writes stopped.
        #[arg(long)]
        online: bool,
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        verbose: bool,
    },
    /// Stage 4 alone: copy every table's rows into a target that already has the tables (pieces in
    /// parallel, resumable through DIR/data-progress.json; compressed chunks arrive uncompressed).
    /// Exit code 0 done, 3 failed, 130 cancelled.
    Copy {
        #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true, help = CONN_HELP)]
        source: String,
        #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true, help = CONN_HELP)]
        target: String,
        /// Tables (or chunks) copied at the same time.
        #[arg(long, default_value_t = crate::plan::default_jobs())]
        jobs: usize,
        /// Directory for the progress file (a rerun with the same one resumes).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Plain tables larger than twice this many MiB are copied in block ranges of about this
        /// size, several at a time.
        #[arg(long, value_name = "MIB", default_value_t = crate::stages::data::RANGE_BYTES >> 20,
              value_parser = clap::value_parser!(i64).range(0..=1 << 20))]
        range_mib: i64,
        #[arg(long)]
        json: bool,
    },
    /// Online migration's housekeeping.
    Online {
        #[command(subcommand)]
        action: OnlineAction,
    },
    /// Write a commented plan from the source's inventory.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Stage 2: the TimescaleDB + pgvector target in a container (Docker Engine API), or a check of
    /// an existing server.
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum OnlineAction {
    /// Drop the slot and publication an online migration left on the source (and its position
    /// table on the target): a slot keeps WAL on the source until it is dropped.
    Abort {
        /// The plan (its source and target).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
    /// Tell the running catch-up that the application has stopped writing: it drains to the
    /// source's current position and the cutover starts now, instead of after the quiet time.
    Cutover {
        /// The plan of the running migration.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Also make the source database read-only (ALTER DATABASE ... SET
        /// default_transaction_read_only = on) and end its other sessions, so that no write can
        /// come after the drain. Undo on the source with ALTER DATABASE ... RESET
        /// default_transaction_read_only.
        #[arg(long)]
        read_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanAction {
    /// Write a plan for this source, suggesting hypertable candidates.
    Init {
        #[arg(long, env = "PGSHIFT_SOURCE", hide_env_values = true, help = CONN_HELP)]
        source: String,
        #[arg(long, default_value = "pgshift.toml", value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        overwrite: bool,
    },
}

/// The container's name and its password file, shared by every `env` command.
#[derive(Debug, clap::Args)]
pub struct ContainerArgs {
    /// Container name.
    #[arg(long, default_value = "pgshift-timescaledb")]
    pub name: String,
    /// pgpass-format file with the generated superuser password (default
    /// ~/.config/pgshift/NAME.pgpass, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EnvAction {
    /// Build the image if needed, create and start the container (or reuse it), wait until healthy,
    /// report versions, license and extensions. With --target: check that server instead.
    Up {
        #[command(flatten)]
        container: ContainerArgs,
        /// Use this existing server as the target instead of a container.
        #[arg(long, help = CONN_HELP)]
        target: Option<String>,
        /// Image tag to build or use.
        #[arg(long, default_value = "pgshift/timescaledb-pgvector:pg17")]
        image: String,
        /// Dockerfile to build (default: pgshift's Dockerfile.timescaledb).
        #[arg(long, value_name = "FILE")]
        dockerfile: Option<PathBuf>,
        /// Build context (default: the Dockerfile's directory).
        #[arg(long, value_name = "DIR")]
        context: Option<PathBuf>,
        /// Build argument (repeatable), e.g. --build-arg PG_MAJOR=17.
        #[arg(long = "build-arg", value_name = "KEY=VALUE")]
        build_args: Vec<String>,
        /// Build the image even if it exists.
        #[arg(long)]
        rebuild: bool,
        /// Host address the port is published on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Host port for PostgreSQL.
        #[arg(long, default_value_t = 55432)]
        port: u16,
        /// Data directory: a named volume (NAME or volume:NAME) or a host path (default volume NAME-data).
        #[arg(long, value_name = "VOLUME|PATH")]
        data: Option<String>,
        /// Shared memory for the container in MiB (parallel index builds need more than Docker's 64).
        #[arg(long, default_value_t = 1024)]
        shm_mb: u64,
        /// Seconds to wait for the health check.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Keep a container that failed to start or become healthy.
        #[arg(long)]
        keep_failed: bool,
        #[arg(long)]
        json: bool,
        /// Also print the build output and the container's log lines.
        #[arg(short, long)]
        verbose: bool,
    },
    /// The container's state and health, and what its server offers (or --target's).
    Status {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(long, env = "PGSHIFT_TARGET", hide_env_values = true, help = CONN_HELP)]
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The container's log.
    Logs {
        #[command(flatten)]
        container: ContainerArgs,
        /// Lines from the end ("all" for everything).
        #[arg(long, default_value = "100")]
        tail: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Run psql inside the container (output streamed, psql's exit code returned).
    Psql {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(short = 'd', long, default_value = "postgres")]
        dbname: String,
        /// SQL to run.
        #[arg(short = 'c', long, conflicts_with = "file")]
        command: Option<String>,
        /// SQL file to run (fed on standard input; "-" reads pgshift's own).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// Stop and remove the container (only with --yes); the data volume stays unless --remove-data.
    Down {
        #[command(flatten)]
        container: ContainerArgs,
        /// Confirm: stop and remove the container.
        #[arg(long)]
        yes: bool,
        /// Also remove the named data volume (all the target's data).
        #[arg(long)]
        remove_data: bool,
    },
}

impl EnvAction {
    /// The plain command `commands::env` runs.
    fn into_command(self) -> env_commands::EnvCommand {
        use env_commands::EnvCommand as C;
        match self {
            EnvAction::Up {
                container,
                target,
                image,
                dockerfile,
                context,
                build_args,
                rebuild,
                bind,
                port,
                data,
                shm_mb,
                timeout,
                keep_failed,
                json,
                verbose,
            } => C::Up {
                container: container.into(),
                target,
                image,
                dockerfile,
                context,
                build_args,
                rebuild,
                bind,
                port,
                data,
                shm_mb,
                timeout,
                keep_failed,
                json,
                verbose,
            },
            EnvAction::Status { container, target, json } => C::Status { container: container.into(), target, json },
            EnvAction::Logs { container, tail, follow } => C::Logs { container: container.into(), tail, follow },
            EnvAction::Psql { container, dbname, command, file } => {
                C::Psql { container: container.into(), dbname, command, file }
            }
            EnvAction::Down { container, yes, remove_data } => {
                C::Down { container: container.into(), yes, remove_data }
            }
        }
    }
}

impl From<ContainerArgs> for env_commands::Container {
    fn from(c: ContainerArgs) -> Self {
        env_commands::Container { name: c.name, password_file: c.password_file }
    }
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
        Command::Backup {
            source,
            dir,
            bin_dir,
            role_passwords,
            no_rows,
            jobs,
            data_sql,
            no_schema_sql,
            compress,
            json,
            verbose,
        } => {
            let source = ConnSpec::parse("source", &source)?;
            let options = BackupOptions {
                bin_dir,
                role_passwords,
                row_counts: !no_rows,
                jobs,
                schema_sql: !no_schema_sql,
                data_sql,
                compression: compress,
            };
            let mode = if json { headless::Mode::Json } else { headless::Mode::Text { verbose } };
            run_backup(source, &dir, options, mode).await
        }
        Command::Env { action } => env_commands::run(action.into_command()).await,
        Command::Demo { source, target, dir, database, bin_dir, image, dockerfile, port, reset, headless, view } => {
            let console = view.options()?; // a bad --lang or keys file is reported before anything is made
            let options = crate::commands::demo::DemoOptions {
                source,
                target,
                dir,
                database,
                bin_dir,
                image,
                dockerfile,
                port,
                reset,
                headless,
            };
            crate::commands::demo::demo(options, console).await
        }
        Command::Console { plan, restart, view } => {
            let options = view.options()?;
            let prepared = crate::checklist::prepare(&plan, restart, false)?;
            crate::tui::open(prepared, &plan, options).await
        }
        Command::Run { plan, yes, restart, online, json, verbose } => {
            let mode = if json { headless::Mode::Json } else { headless::Mode::Text { verbose } };
            crate::commands::run::run(&plan, yes, restart, online, mode).await
        }
        Command::Copy { source, target, jobs, dir, range_mib, json } => {
            use crate::plan::CompressedChunks;
            use crate::stages::data::DataStage;
            let source = ConnSpec::parse("source", &source)?;
            let target = ConnSpec::parse("target", &target)?;
            std::fs::create_dir_all(&dir).map_err(|e| files::write_error(&dir, &e))?;
            // no TimescaleDB stage follows to attach compressed parts copied as they are: a
            // compressed chunk's rows come through decompression, into the chunk itself
            let stage = DataStage::new(source, target, jobs)
                .with_range_bytes(range_mib << 20)
                .with_compressed(CompressedChunks::Recompress);
            let mode = if json { headless::Mode::Json } else { headless::Mode::Text { verbose: false } };
            match headless::run_stage(&stage, Some(&dir), None, mode).await? {
                headless::Ended::Done => Ok(0),
                headless::Ended::Refused(e) => Err(e),
                headless::Ended::Failed(_, e) => {
                    eprintln!("pgshift: {e}");
                    Ok(EXIT_STAGE_FAILED)
                }
                headless::Ended::Cancelled => Ok(EXIT_CANCELLED),
            }
        }
        Command::Online { action: OnlineAction::Abort { plan } } => crate::commands::online::abort(&plan).await,
        Command::Online { action: OnlineAction::Cutover { plan, read_only } } => {
            crate::commands::online::cutover(&plan, read_only)
        }
        Command::Plan { action: PlanAction::Init { source, out, overwrite } } => {
            crate::commands::plan_init::init(&source, &out, overwrite).await
        }
    }
}

async fn run_backup(
    source: ConnSpec,
    base: &Path,
    options: BackupOptions,
    mode: headless::Mode,
) -> Result<i32, UserError> {
    let dir = files::create_run_dir(base)?;
    let log = files::create_private(&dir.join("pgshift.log")).map_err(|e| files::write_error(&dir, &e))?;
    let stage = BackupStage::new(source, options);
    let result = headless::run_stage(&stage, Some(&dir), Some(log), mode).await;
    match result {
        Ok(headless::Ended::Done) => {
            if mode != headless::Mode::Json {
                let _ = writeln!(std::io::stdout(), "{}", dir.display());
            }
            Ok(0)
        }
        Ok(headless::Ended::Refused(e)) => {
            let _ = std::fs::remove_dir_all(&dir); // nothing was written but the log of the refusal
            Err(e)
        }
        Ok(headless::Ended::Failed(_, e)) => {
            eprintln!("pgshift: {e}");
            Ok(EXIT_STAGE_FAILED)
        }
        Ok(headless::Ended::Cancelled) => {
            eprintln!("pgshift: backup cancelled; {} is incomplete (no manifest.json)", dir.display());
            Ok(EXIT_CANCELLED)
        }
        Err(e) => Err(e),
    }
}

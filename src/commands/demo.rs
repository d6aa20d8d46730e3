//! `pgshift demo`: one command from a fresh machine to the whole checklist. It creates a sample
//! source (an energy/IoT database: tenants, sites, devices, sensor readings as a time series, RLS
//! per tenant, audit triggers, functions, a knowledge base to embed), picks a target — a server you
//! name, else a container through the Docker engine when one answers, else a local PostgreSQL
//! started from the binaries on this machine — writes a plan and opens the console on it.

use std::path::{Path, PathBuf};

use crate::checklist::headless::Mode;
use crate::error::UserError;
use crate::files;
use crate::pgtools::process::ToolCommand;
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::quote_ident;

pub const SOURCE_SQL: &str = include_str!("../../assets/demo/source.sql");
const COMMENT: &str = "sample source created by pgshift demo";
const PLAN_FILE: &str = "demo.toml";

pub struct DemoOptions {
    pub source: Option<String>,
    pub target: Option<String>,
    pub dir: PathBuf,
    pub database: String,
    pub bin_dir: Option<PathBuf>,
    /// Container target: image and Dockerfile (defaults as for `env up`), published port.
    pub image: Option<String>,
    pub dockerfile: Option<PathBuf>,
    pub port: u16,
    pub reset: bool,
    pub headless: bool,
}

/// Which target the demo uses.
enum Target {
    Server(ConnSpec),
    Container,
    Local(ConnSpec),
}

pub async fn demo(o: DemoOptions, console: crate::tui::ConsoleOptions) -> Result<i32, UserError> {
    for (text, role) in [(&o.source, "--source"), (&o.target, "--target")] {
        if let Some(text) = text {
            refuse_password(text, role)?;
        }
    }
    std::fs::create_dir_all(&o.dir).map_err(|e| files::write_error(&o.dir, &e))?;
    let local_source = o.dir.join("source-cluster");
    let local_target = o.dir.join("target-cluster");
    let result = walk(&o, console, &local_source, &local_target).await;
    // the local servers run only while the demo does, whatever its end; the next demo starts them again
    for dir in [&local_source, &local_target] {
        if running(dir, o.bin_dir.as_deref()).await {
            stop_local(dir, o.bin_dir.as_deref()).await;
        }
    }
    result
}

async fn walk(
    o: &DemoOptions,
    console: crate::tui::ConsoleOptions,
    local_source: &Path,
    local_target: &Path,
) -> Result<i32, UserError> {
    let plan_path = o.dir.join(PLAN_FILE);
    if o.reset {
        reset(o, local_source, local_target).await?;
    }
    if !plan_path.exists() {
        let source = match &o.source {
            Some(text) => ConnSpec::parse("source", text)?,
            None => start_local(local_source, o.bin_dir.as_deref(), false, "source").await?,
        };
        let target = match &o.target {
            Some(text) => Target::Server(ConnSpec::parse("target", text)?),
            None if crate::docker::connect().await.is_ok() => Target::Container,
            None => Target::Local(start_local(local_target, o.bin_dir.as_deref(), true, "target").await?),
        };
        let source_db = create_source(&source, &o.database).await?;
        let plan = plan_text(o, &source_db, &target);
        crate::plan::Plan::parse(&plan)
            .map_err(|e| UserError::new(format!("the demo plan does not read: {}", e.message), e.fix))?;
        files::write_atomic(&plan_path, plan.as_bytes()).map_err(|e| files::write_error(&plan_path, &e))?;
        eprintln!("pgshift demo: sample source {} ready; plan {}", source_db.label(), plan_path.display());
    } else {
        // a demo run before: its local servers start again and its run resumes
        for (dir, target) in [(local_source, false), (local_target, true)] {
            if dir.join("PG_VERSION").exists() {
                start_local(dir, o.bin_dir.as_deref(), target, "demo").await?;
            }
        }
        eprintln!("pgshift demo: reusing {} (--reset starts over)", plan_path.display());
    }
    if o.headless {
        return crate::commands::run::run(&plan_path, true, false, false, Mode::Text { verbose: false }).await;
    }
    let prepared = crate::checklist::prepare(&plan_path, false, false)?;
    crate::tui::open(prepared, &plan_path, console).await
}

/// The demo writes its connections into its plan: a password in them would land in that file.
fn refuse_password(text: &str, role: &str) -> Result<(), UserError> {
    let given = <tokio_postgres::Config as std::str::FromStr>::from_str(text.trim())
        .map(|c| c.get_password().is_some())
        .unwrap_or(false);
    if given {
        return Err(UserError::new(
            format!("demo: {role} holds a password, and the demo writes its connections into its plan file"),
            "leave the password out and give it with PGPASSWORD or ~/.pgpass (mode 0600)",
        ));
    }
    Ok(())
}

/// Creates the sample database (replacing one an earlier demo created) and loads it.
async fn create_source(server: &ConnSpec, database: &str) -> Result<ConnSpec, UserError> {
    let admin = server.with_dbname("postgres").connect().await?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        UserError::new(
            format!("demo: {what} failed: {}", crate::catalog::db_message(&e)),
            "connect as a superuser (or a role with CREATEDB)",
        )
    };
    let comment: Option<Option<String>> = admin
        .query_opt("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(|e| fail("reading the databases", e))?
        .map(|r| r.get(0));
    match comment {
        Some(Some(c)) if c == COMMENT => {
            let sql = format!("DROP DATABASE {} WITH (FORCE)", quote_ident(database));
            admin.batch_execute(&sql).await.map_err(|e| fail("dropping the earlier demo database", e))?;
        }
        Some(_) => {
            return Err(UserError::new(
                format!("demo: database {database} exists on {} and pgshift demo did not create it", server.label()),
                "choose another name with --database",
            ))
        }
        None => {}
    }
    let q = quote_ident(database);
    admin
        .batch_execute(&format!("CREATE DATABASE {q} TEMPLATE template0 ENCODING 'UTF8'"))
        .await
        .map_err(|e| fail("creating the demo database", e))?;
    // marked at once: a load that fails half-way leaves a database the next demo may replace
    admin
        .batch_execute(&format!("COMMENT ON DATABASE {q} IS '{COMMENT}'"))
        .await
        .map_err(|e| fail("marking the demo database", e))?;
    let spec = server.with_dbname(database);
    let client = spec.connect().await?;
    client.batch_execute(SOURCE_SQL).await.map_err(|e| fail("loading the sample data", e))?;
    Ok(spec)
}

/// Drops what an earlier demo made, and only that: the source database it marked, the target
/// database its plan migrated into, its container, its local servers and its run directories.
async fn reset(o: &DemoOptions, local_source: &Path, local_target: &Path) -> Result<(), UserError> {
    let fail = |spec: &ConnSpec, e: tokio_postgres::Error| {
        UserError::new(
            format!(
                "demo --reset: dropping {} on {} failed: {}",
                o.database,
                spec.label(),
                crate::catalog::db_message(&e)
            ),
            "connect as a superuser",
        )
    };
    let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&o.database));
    if let Some(text) = &o.source {
        let spec = ConnSpec::parse("source", text)?;
        let admin = spec.with_dbname("postgres").connect().await?;
        let marked: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 \
                 AND shobj_description(oid, 'pg_database') = $2)",
                &[&o.database, &COMMENT],
            )
            .await
            .map_err(|e| fail(&spec, e))?
            .get(0);
        if marked {
            admin.batch_execute(&drop_sql).await.map_err(|e| fail(&spec, e))?;
        }
    }
    if let Some(text) = &o.target {
        // only the database an earlier demo's plan (in this directory) migrated into
        let spec = ConnSpec::parse("target", text)?.with_dbname(&o.database);
        let planned = crate::plan::Plan::load(&o.dir.join(PLAN_FILE))
            .ok()
            .and_then(|p| p.source().ok().and_then(|s| p.target(&s).ok()))
            .is_some_and(|t| t.label() == spec.label());
        if planned {
            let admin = spec.with_dbname("postgres").connect().await?;
            admin.batch_execute(&drop_sql).await.map_err(|e| fail(&spec, e))?;
        }
    }
    if o.target.is_none() {
        if let Ok(engine) = crate::docker::connect().await {
            if crate::docker::inspect(&engine, CONTAINER).await?.is_some() {
                crate::docker::remove(&engine, CONTAINER).await?;
            }
            let volume = format!("{CONTAINER}-data");
            if crate::docker::volume_exists(&engine, &volume).await? {
                crate::docker::remove_volume(&engine, &volume).await?;
            }
        }
    }
    for dir in [local_source, local_target] {
        if running(dir, o.bin_dir.as_deref()).await {
            stop_local(dir, o.bin_dir.as_deref()).await;
        }
    }
    for name in ["source-cluster", "target-cluster", "backups", PLAN_FILE] {
        let path = o.dir.join(name);
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if let Err(e) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(files::write_error(&path, &e));
            }
        }
    }
    Ok(())
}

const CONTAINER: &str = "pgshift-demo";

fn plan_text(o: &DemoOptions, source: &ConnSpec, target: &Target) -> String {
    let toml_str = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "# Written by `pgshift demo`. Passwords never go here: PGPASSWORD or ~/.pgpass give them.\n\
         [source]\nconnection = {}\n\n[target]\ndatabase = {}\n",
        toml_str(&conninfo(source)),
        toml_str(&o.database),
    );
    match target {
        Target::Server(t) | Target::Local(t) => {
            text.push_str(&format!("connection = {}\n", toml_str(&conninfo(&t.with_dbname(&o.database)))));
        }
        Target::Container => {
            text.push_str(&format!("\n[target.container]\nname = \"{CONTAINER}\"\nport = {}\n", o.port));
            if let Some(i) = &o.image {
                text.push_str(&format!("image = {}\n", toml_str(i)));
            }
            if let Some(d) = &o.dockerfile {
                text.push_str(&format!("dockerfile = {}\n", toml_str(&d.display().to_string())));
            }
        }
    }
    text.push_str(&format!("\n[backup]\ndir = {}\n", toml_str(&o.dir.join("backups").display().to_string())));
    if let Some(b) = &o.bin_dir {
        text.push_str(&format!("bin_dir = {}\n", toml_str(&b.display().to_string())));
    }
    text.push_str(
        "\n[data]\njobs = 2\n\n[verify]\nchecksums = true\n\n\
         # the readings become a hypertable on the new server\n\
         [[hypertables]]\ntable = \"energy.readings\"\ntime_column = \"ts\"\nchunk_interval = \"7 days\"\n\n\
         # the knowledge base gets an embedding column and an HNSW index\n\
         [[vectors]]\ntable = \"kb.articles\"\ncolumn = \"embedding\"\ndimensions = 384\nindex = \"hnsw\"\n",
    );
    text
}

/// `host=… port=… user=… dbname=…` without the password.
fn conninfo(spec: &ConnSpec) -> String {
    use tokio_postgres::config::Host;
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let host = match spec.config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let mut s = format!("host={} port={}", quote(&host), spec.config.get_ports().first().copied().unwrap_or(5432));
    if let Some(u) = spec.config.get_user() {
        s.push_str(&format!(" user={}", quote(u)));
    }
    s.push_str(&format!(" dbname={}", quote(spec.dbname())));
    // the TLS the user asked for goes with the connection
    for (key, value) in spec.tls.libpq_env() {
        let key = if key == "PGSSLMODE" { "sslmode" } else { "sslrootcert" };
        s.push_str(&format!(" {key}={}", quote(&value)));
    }
    s
}

/// Starts (creating it first when needed) a PostgreSQL cluster in `dir` that listens only on a
/// Unix socket inside it, so only this user can reach it. The target preloads TimescaleDB.
async fn start_local(
    dir: &Path,
    bin_dir: Option<&Path>,
    target: bool,
    role: &'static str,
) -> Result<ConnSpec, UserError> {
    if nix::unistd::geteuid().is_root() {
        return Err(UserError::new(
            format!("demo: a local {role} server cannot be started as root (initdb refuses)"),
            "run pgshift demo as a normal user, or name servers with --source and --target",
        ));
    }
    let tools = crate::pgtools::tools::find_tools(&["initdb", "pg_ctl"], bin_dir, 0).await.map_err(|e| {
        UserError::new(
            format!(
                "demo: no Docker engine answers and no local PostgreSQL server binaries were found ({})",
                e.message
            ),
            "install PostgreSQL 17 with TimescaleDB and pgvector, start a Docker engine, or give --source and --target",
        )
    })?;
    let (initdb, pg_ctl) = (&tools[0].path, &tools[1].path);
    let dir = std::path::absolute(dir).map_err(|e| files::write_error(dir, &e))?;
    if !dir.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&dir).map_err(|e| files::write_error(&dir, &e))?;
        let cmd = ToolCommand {
            label: format!("initdb {role}"),
            program: initdb.clone(),
            args: [
                "-D",
                &dir.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
            stdin: None,
        };
        run_plain(&cmd).await?;
        let port = free_port()?;
        let mut conf = format!(
            "\n# pgshift demo\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {port}\n",
            dir.display()
        );
        if target {
            conf.push_str("shared_preload_libraries = 'timescaledb'\nmax_wal_size = '2GB'\n");
        }
        let path = dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).map_err(|e| files::write_error(&path, &e))?;
        text.push_str(&conf);
        std::fs::write(&path, text).map_err(|e| files::write_error(&path, &e))?;
    }
    let port = std::fs::read_to_string(dir.join("postgresql.conf"))
        .ok()
        .and_then(|t| {
            t.lines().rev().find_map(|l| l.strip_prefix("port = ").and_then(|p| p.trim().parse::<u16>().ok()))
        })
        .unwrap_or(5432);
    if !running(&dir, bin_dir).await {
        let log = dir.join("server.log").display().to_string();
        let cmd = ToolCommand {
            label: format!("pg_ctl {role}"),
            program: pg_ctl.clone(),
            args: ["-D", &dir.display().to_string(), "-l", &log, "-w", "start"].map(String::from).to_vec(),
            env: vec![],
            stdin: None,
        };
        run_plain(&cmd).await.map_err(|e| {
            UserError::new(
                format!("demo: the local {role} server did not start ({}); its log is {log}", e.message),
                if target {
                    "the target needs TimescaleDB and pgvector installed for these binaries (or use --target / Docker)"
                } else {
                    "read the server log"
                },
            )
        })?;
    }
    ConnSpec::parse(role, &format!("host='{}' port={port} user=postgres dbname=postgres", dir.display()))
}

/// Whether a local server runs in `dir` (`pg_ctl status`: a stale pid file left by a crash is not
/// a running server).
async fn running(dir: &Path, bin_dir: Option<&Path>) -> bool {
    if !dir.join("postmaster.pid").exists() {
        return false;
    }
    let Ok(tools) = crate::pgtools::tools::find_tools(&["pg_ctl"], bin_dir, 0).await else { return false };
    tokio::process::Command::new(&tools[0].path)
        .args(["status", "-D"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn stop_local(dir: &Path, bin_dir: Option<&Path>) {
    let Ok(tools) = crate::pgtools::tools::find_tools(&["pg_ctl"], bin_dir, 0).await else { return };
    let cmd = ToolCommand {
        label: "pg_ctl stop".into(),
        program: tools[0].path.clone(),
        args: ["-D", &dir.display().to_string(), "-m", "fast", "-w", "stop"].map(String::from).to_vec(),
        env: vec![],
        stdin: None,
    };
    let _ = run_plain(&cmd).await;
}

fn free_port() -> Result<u16, UserError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| UserError::new(format!("demo: no free port: {e}"), "free a local port"))?;
    Ok(l.local_addr().map(|a| a.port()).unwrap_or(55499))
}

/// Runs a server tool to its end (initdb, pg_ctl); a failure carries its last line of output.
async fn run_plain(cmd: &ToolCommand) -> Result<(), UserError> {
    let out = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| UserError::new(format!("cannot start {}: {e}", cmd.program.display()), "check --bin-dir"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string();
    Err(UserError::new(format!("{} failed: {last}", cmd.label), "read the message above"))
}

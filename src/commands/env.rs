//! `pgshift env up|status|logs|psql|down`: the Environment stage headless, and the commands that
//! look after its container.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::catalog::server::{check_server, report_warnings, ServerReport};
use crate::checklist::headless::{self, Ended, Mode};
use crate::docker;
use crate::error::{UserError, EXIT_CANCELLED, EXIT_STAGE_FAILED};
use crate::plan::container::{default_password_file, DataDir, EnvOptions};
use crate::postgres::conn::ConnSpec;
use crate::stages::environment::{ContainerStage, ExistingServerStage, MANAGED_LABEL};

/// Which container an `env` command is about: its name and the file with its password (default
/// ~/.config/pgshift/NAME.pgpass).
pub struct Container {
    pub name: String,
    pub password_file: Option<PathBuf>,
}

/// What `pgshift env` is asked to do (the CLI's arguments, as plain values).
pub enum EnvCommand {
    /// Build the image if needed, create and start the container (or reuse it), wait until healthy,
    /// report versions, license and extensions. With --target: check that server instead.
    Up {
        container: Container,
        target: Option<String>,
        image: String,
        dockerfile: Option<PathBuf>,
        context: Option<PathBuf>,
        build_args: Vec<String>,
        rebuild: bool,
        bind: String,
        port: u16,
        data: Option<String>,
        shm_mb: u64,
        timeout: u64,
        keep_failed: bool,
        json: bool,
        verbose: bool,
    },
    /// The container's state and health, and what its server offers (or --target's).
    Status { container: Container, target: Option<String>, json: bool },
    /// The container's log.
    Logs { container: Container, tail: String, follow: bool },
    /// Run psql inside the container (output streamed, psql's exit code returned).
    Psql { container: Container, dbname: String, command: Option<String>, file: Option<PathBuf> },
    /// Stop and remove the container (only with --yes); the data volume stays unless --remove-data.
    Down { container: Container, yes: bool, remove_data: bool },
}

pub async fn run(action: EnvCommand) -> Result<i32, UserError> {
    match action {
        EnvCommand::Up {
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
        } => {
            let mode = if json { Mode::Json } else { Mode::Text { verbose } };
            if let Some(target) = target {
                let stage = ExistingServerStage::new(ConnSpec::parse("target", &target)?);
                return finish(headless::run_stage(&stage, None, None, mode).await?, None);
            }
            let mut o = options(&container);
            o.image = image;
            o.dockerfile = dockerfile;
            o.context = context;
            o.build_args = parse_build_args(&build_args)?;
            o.rebuild = rebuild;
            o.bind = bind;
            o.port = port;
            if let Some(d) = data {
                o.data = DataDir::parse(&d);
            }
            o.shm_size = shm_mb << 20;
            o.health_timeout = Duration::from_secs(timeout);
            o.keep_failed = keep_failed;
            let connection = format!(
                "target: postgresql://postgres@{}:{}/postgres (PGPASSFILE={})",
                if o.bind == "0.0.0.0" { "127.0.0.1" } else { &o.bind },
                o.port,
                o.password_file.display()
            );
            let stage = ContainerStage::new(o);
            let ended = headless::run_stage(&stage, None, None, mode).await?;
            finish(ended, (mode != Mode::Json).then_some(connection))
        }
        EnvCommand::Status { container, target, json } => status(&container, target, json).await,
        EnvCommand::Logs { container, tail, follow } => {
            let engine = docker::connect().await?;
            require_container(&engine, &container.name).await?;
            let mut lines = Box::pin(docker::logs(&engine, &container.name, &tail, follow));
            let mut out = std::io::stdout().lock();
            while let Some(line) = lines.next().await {
                if writeln!(out, "{line}").is_err() {
                    break;
                }
            }
            Ok(0)
        }
        EnvCommand::Psql { container, dbname, command, file } => {
            let engine = docker::connect().await?;
            require_container(&engine, &container.name).await?;
            let mut cmd: Vec<String> =
                ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", &dbname].map(String::from).to_vec();
            let stdin = match (command, file) {
                (Some(sql), _) => {
                    cmd.extend(["-c".to_string(), sql]);
                    None
                }
                (None, Some(path)) => {
                    cmd.extend(["-f".to_string(), "-".to_string()]);
                    let mut data = Vec::new();
                    let read = if path.as_os_str() == "-" {
                        std::io::stdin().read_to_end(&mut data).map(|_| ())
                    } else {
                        std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).map(|_| ())
                    };
                    read.map_err(|e| {
                        UserError::new(format!("cannot read {}: {e}", path.display()), "check the file's path")
                    })?;
                    Some(data)
                }
                (None, None) => {
                    return Err(UserError::new("nothing to run", "give -c SQL or -f FILE"));
                }
            };
            let mut print = |is_err: bool, line: String| {
                let _ =
                    if is_err { writeln!(std::io::stderr(), "{line}") } else { writeln!(std::io::stdout(), "{line}") };
            };
            let code = docker::exec(&engine, &container.name, "postgres", cmd, stdin, &mut print).await?;
            Ok(code as i32)
        }
        EnvCommand::Down { container, yes, remove_data } => {
            let engine = docker::connect().await?;
            let c = require_container(&engine, &container.name).await?;
            let labels = c.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
            if !labels.contains_key(MANAGED_LABEL) {
                return Err(UserError::new(
                    format!("container {} was not created by pgshift", container.name),
                    "remove it with the docker CLI if you mean it; pgshift removes only its own containers",
                ));
            }
            let volumes: Vec<String> = c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.typ.as_ref().map(|t| t.to_string()) == Some("volume".into()))
                .filter_map(|m| m.name)
                .collect();
            if !yes {
                return Err(UserError::new(
                    format!(
                        "refusing to stop and remove container {} without confirmation{}",
                        container.name,
                        if remove_data { " (and its data)" } else { "" }
                    ),
                    "add --yes (the data volume is kept unless --remove-data is given too)",
                ));
            }
            docker::stop(&engine, &container.name).await?;
            docker::remove(&engine, &container.name).await?;
            println!("removed container {}", container.name);
            if remove_data {
                for v in volumes {
                    docker::remove_volume(&engine, &v).await?;
                    println!("removed volume {v}");
                }
            } else if !volumes.is_empty() {
                println!("kept data volume(s) {} (--remove-data removes them)", volumes.join(", "));
            }
            Ok(0)
        }
    }
}

fn options(c: &Container) -> EnvOptions {
    let mut o = EnvOptions::new(&c.name);
    o.password_file = c.password_file.clone().unwrap_or_else(|| default_password_file(&c.name));
    o
}

fn parse_build_args(args: &[String]) -> Result<HashMap<String, String>, UserError> {
    args.iter()
        .map(|a| {
            a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                UserError::new(format!("--build-arg {a} is not KEY=VALUE"), "write it as --build-arg PG_MAJOR=17")
            })
        })
        .collect()
}

async fn require_container(
    engine: &docker::Engine,
    name: &str,
) -> Result<bollard::models::ContainerInspectResponse, UserError> {
    docker::inspect(engine, name).await?.ok_or_else(|| {
        UserError::new(format!("no container named {name}"), "create it with pgshift env up (or give --name)")
    })
}

fn finish(ended: Ended, success_line: Option<String>) -> Result<i32, UserError> {
    match ended {
        Ended::Done => {
            if let Some(l) = success_line {
                let _ = writeln!(std::io::stdout(), "{l}");
            }
            Ok(0)
        }
        Ended::Refused(e) => Err(e),
        Ended::Failed(_, e) => {
            eprintln!("pgshift: {e}");
            Ok(EXIT_STAGE_FAILED)
        }
        Ended::Cancelled => {
            eprintln!("pgshift: cancelled");
            Ok(EXIT_CANCELLED)
        }
    }
}

#[derive(Debug, Serialize)]
struct ContainerStatus {
    name: String,
    image: Option<String>,
    state: String,
    health: Option<String>,
    ports: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    container: Option<ContainerStatus>,
    server: Option<ServerReport>,
    warnings: Vec<String>,
}

async fn status(container: &Container, target: Option<String>, json: bool) -> Result<i32, UserError> {
    let mut s = Status { container: None, server: None, warnings: Vec::new() };
    let target = match target {
        Some(t) => ConnSpec::parse("target", &t)?,
        None => {
            let engine = docker::connect().await?;
            let c = require_container(&engine, &container.name).await?;
            let state = c.state.clone().unwrap_or_default();
            let ports: Vec<(String, u16)> = c
                .network_settings
                .as_ref()
                .and_then(|n| n.ports.clone())
                .unwrap_or_default()
                .into_values()
                .flatten()
                .flatten()
                .filter_map(|b| Some((b.host_ip?, b.host_port?.parse().ok()?)))
                .collect();
            s.container = Some(ContainerStatus {
                name: container.name.clone(),
                image: c.config.as_ref().and_then(|c| c.image.clone()),
                state: state.status.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                health: state.health.and_then(|h| h.status).map(|x| x.to_string()),
                ports: ports.iter().map(|(h, p)| format!("{h}:{p}->5432")).collect(),
            });
            let Some((host, port)) = ports.first().cloned() else {
                return print_status(&s, json);
            };
            let mut o = options(container);
            o.bind = host;
            o.port = port;
            o.target()?
        }
    };
    match check_server(&target).await {
        Ok(r) => {
            s.warnings = report_warnings(&r);
            s.server = Some(r);
        }
        Err(e) => s.warnings.push(e.to_string()),
    }
    print_status(&s, json)
}

fn print_status(s: &Status, json: bool) -> Result<i32, UserError> {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(s).expect("status serializes"));
    } else {
        if let Some(c) = &s.container {
            let _ = writeln!(
                out,
                "container {}: {}{}, image {}, ports {}",
                c.name,
                c.state,
                c.health.as_ref().map(|h| format!(" ({h})")).unwrap_or_default(),
                c.image.as_deref().unwrap_or("?"),
                if c.ports.is_empty() { "none".into() } else { c.ports.join(", ") }
            );
        }
        if let Some(r) = &s.server {
            let _ = writeln!(out, "server {}: {}", r.connection, r.summary());
        }
        for w in &s.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    Ok(if s.server.is_some() { 0 } else { EXIT_STAGE_FAILED })
}

//! Stage 2 — Environment: the TimescaleDB + pgvector target, built and run through the Docker
//! Engine API — or an existing server given by connection string.
//!
//! `up`: connect to the engine; reuse a container of the same name (start it if stopped); else
//! build the image (when missing or asked), create the container (generated password in a 0600
//! file, copied into the container, never in its environment or arguments; data volume or
//! directory; port on 127.0.0.1; shared memory for parallel index builds; health check), start it,
//! wait until healthy while streaming its log, and report what the server offers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig, PortBinding};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use crate::catalog::server::{check_server, report_warnings};
use crate::docker::{self, Engine};
use crate::engine::{Stage, StageContext, StageError, Stream, Unit};
use crate::error::UserError;
use crate::files;
use crate::plan::container::{ensure_password, DataDir, EnvOptions};
use crate::postgres::conn::ConnSpec;

/// The Dockerfile shipped with pgshift, used when none is given.
pub const DEFAULT_DOCKERFILE: &str = include_str!("../../Dockerfile.timescaledb");
/// Label on every container pgshift creates; `env down` removes only those.
pub const MANAGED_LABEL: &str = "org.pgshift.managed";
const DATA_DIR: &str = "/var/lib/postgresql/data";
const PASSWORD_IN_CONTAINER: &str = "/run/pgshift/postgres-password";

/// Stage 2 with a container.
pub struct ContainerStage {
    options: EnvOptions,
    settings: BTreeMap<String, String>,
}

impl ContainerStage {
    pub fn new(options: EnvOptions) -> Self {
        Self { options, settings: BTreeMap::new() }
    }

    /// The plan's `[target.settings]`, set once the container is healthy (kept in its data
    /// directory's `postgresql.auto.conf`).
    pub fn with_settings(mut self, settings: BTreeMap<String, String>) -> Self {
        self.settings = settings;
        self
    }

    async fn up(
        &self,
        ctx: &StageContext,
        created_here: &mut bool,
        volume_created_here: &mut bool,
    ) -> Result<String, StageError> {
        let o = &self.options;
        let engine = docker::connect().await?;
        ctx.info("docker", format!("Docker engine {} (API {}) at {}", engine.version, engine.api_version, engine.host))
            .await;
        if !engine.host.starts_with("unix://") && o.bind == "127.0.0.1" {
            ctx.warning(format!(
                "the engine at {} is remote: the port is published on its loopback, which this machine may not reach \
                 (use --bind, or an SSH tunnel)",
                engine.host
            ))
            .await;
        }
        let existing = docker::inspect(&engine, &o.name).await?;
        let mut port = o.port;
        if let Some(c) = &existing {
            // its superuser password was set when it was created: the file must be that one
            if !o.password_file.exists() {
                return Err(UserError::new(
                    format!("container {} exists but its password file {} does not", o.name, o.password_file.display()),
                    "give --password-file of the run that created it (a pgpass line or the bare password), \
                     or remove the container with pgshift env down --yes",
                )
                .into());
            }
            if let Some((_, p)) = docker::published_port(c) {
                if p != o.port {
                    ctx.warning(format!("container {} publishes port {p}, not {}: using {p}", o.name, o.port)).await;
                }
                port = p;
            }
        }
        let (password, new_password) = ensure_password(&o.password_file)?;
        if new_password {
            ctx.info(
                "password",
                format!("generated a superuser password in {} (mode 0600)", o.password_file.display()),
            )
            .await;
        }

        match existing {
            Some(c) if c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {
                ctx.info("container", format!("container {} is running: reusing it", o.name)).await;
            }
            Some(_) => {
                ctx.info("container", format!("container {} exists but is stopped: starting it", o.name)).await;
                docker::start(&engine, &o.name, port).await?;
            }
            None => {
                self.build_if_needed(ctx, &engine).await?;
                if let DataDir::Volume(v) = &o.data {
                    *volume_created_here = !docker::volume_exists(&engine, v).await?;
                }
                docker::create(&engine, &o.name, self.container_body()?).await?;
                *created_here = true;
                ctx.info("container", format!("created container {} from {}", o.name, o.image)).await;
                let tar = docker::tar_file(PASSWORD_IN_CONTAINER.trim_start_matches('/'), password.as_bytes(), 0o600);
                docker::upload(&engine, &o.name, tar).await?;
                docker::start(&engine, &o.name, o.port).await?;
                ctx.info("container", format!("started; port {} on {}", o.port, o.bind)).await;
            }
        }
        self.wait_healthy(ctx, &engine, port).await?;

        let mut reached = o.clone();
        reached.port = port;
        let target = reached.target()?;
        let report = check_server(&target).await?;
        for w in report_warnings(&report) {
            ctx.warning(w).await;
        }
        Ok(format!("{} ready: {}", target.label(), report.summary()))
    }

    async fn build_if_needed(&self, ctx: &StageContext, engine: &Engine) -> Result<(), StageError> {
        let o = &self.options;
        if !o.rebuild && docker::image_exists(engine, &o.image).await? {
            ctx.info("docker build", format!("image {} exists: not rebuilt (--rebuild builds it again)", o.image))
                .await;
            return Ok(());
        }
        let (context, dockerfile_name) = match &o.dockerfile {
            Some(path) => {
                let dir = o.context.clone().unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
                let name = path
                    .canonicalize()
                    .ok()
                    .and_then(|p| dir.canonicalize().ok().and_then(|d| p.strip_prefix(d).ok().map(Path::to_path_buf)))
                    .ok_or_else(|| {
                        UserError::new(
                            format!("{} is not inside its build context {}", path.display(), dir.display()),
                            "check --dockerfile and --context",
                        )
                    })?;
                (docker::tar_context(&dir, 200 << 20)?, name.to_string_lossy().into_owned())
            }
            None => (docker::tar_file("Dockerfile", DEFAULT_DOCKERFILE.as_bytes(), 0o644), "Dockerfile".into()),
        };
        ctx.info("docker build", format!("building {} ({} KiB context)", o.image, context.len() >> 10)).await;
        let events = ctx.events_sender();
        let stage = ctx.stage();
        let mut line = move |l: String| {
            let _ = events.try_send(crate::engine::Event::Output {
                stage: stage.into(),
                source: "docker build".into(),
                stream: Stream::Stdout,
                line: l,
            });
        };
        tokio::select! {
            r = docker::build_image(engine, context, &dockerfile_name, &o.image, &o.build_args, &mut line) => r?,
            _ = ctx.cancel_token().cancelled() => return Err(StageError::Cancelled),
        }
        ctx.info("docker build", format!("built {}", o.image)).await;
        Ok(())
    }

    fn container_body(&self) -> Result<ContainerCreateBody, UserError> {
        let o = &self.options;
        let bind = match &o.data {
            DataDir::Volume(v) => format!("{v}:{DATA_DIR}"),
            DataDir::Host(p) => {
                std::fs::create_dir_all(p).map_err(|e| files::write_error(p, &e))?;
                let abs = p.canonicalize().map_err(|e| files::write_error(p, &e))?;
                format!("{}:{DATA_DIR}", abs.display())
            }
        };
        let seconds = |s: i64| s * 1_000_000_000;
        let mut ports = HashMap::new();
        ports.insert(
            "5432/tcp".to_string(),
            Some(vec![PortBinding { host_ip: Some(o.bind.clone()), host_port: Some(o.port.to_string()) }]),
        );
        Ok(ContainerCreateBody {
            image: Some(o.image.clone()),
            env: Some(vec![format!("POSTGRES_PASSWORD_FILE={PASSWORD_IN_CONTAINER}"), format!("PGDATA={DATA_DIR}")]),
            exposed_ports: Some(vec!["5432/tcp".into()]),
            labels: Some(HashMap::from([(MANAGED_LABEL.to_string(), "true".to_string())])),
            healthcheck: Some(HealthConfig {
                test: Some(
                    ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"].map(String::from).to_vec(),
                ),
                interval: Some(seconds(2)),
                timeout: Some(seconds(5)),
                retries: Some(5),
                start_period: Some(seconds(600)),
                start_interval: None,
            }),
            host_config: Some(HostConfig {
                binds: Some(vec![bind]),
                port_bindings: Some(ports),
                shm_size: Some(o.shm_size as i64),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Waits for the health check to pass, streaming the container's log meanwhile.
    async fn wait_healthy(&self, ctx: &StageContext, engine: &Engine, port: u16) -> Result<(), StageError> {
        let o = &self.options;
        let started = Instant::now();
        let mut last_status = String::new();
        let mut log = Box::pin(docker::logs(engine, &o.name, "20", true));
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = ctx.cancel_token().cancelled() => return Err(StageError::Cancelled),
                Some(line) = log.next() => ctx.output("container", Stream::Stdout, line).await,
                _ = tick.tick() => {
                    let c = docker::inspect(engine, &o.name).await?.ok_or_else(|| {
                        UserError::new(format!("container {} disappeared", o.name), "run pgshift env up again")
                    })?;
                    let state = c.state.unwrap_or_default();
                    if !state.running.unwrap_or(false) {
                        let tail = docker::last_log_lines(engine, &o.name, 3).await.join(" | ");
                        return Err(UserError::new(
                            format!("container {} stopped (exit code {}): {tail}", o.name, state.exit_code.unwrap_or(-1)),
                            "read pgshift env logs; check the image, the data directory and the password file",
                        ).into());
                    }
                    let status = match state.health.and_then(|h| h.status) {
                        Some(HealthStatusEnum::HEALTHY) => {
                            ctx.info("health", format!("healthy after {:.1}s", started.elapsed().as_secs_f64())).await;
                            return Ok(());
                        }
                        Some(HealthStatusEnum::UNHEALTHY) => "unhealthy".to_string(),
                        Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) | None => {
                            // a container without a health check (made elsewhere): try the server itself
                            let mut o2 = o.clone();
                            o2.port = port;
                            if let Ok(spec) = o2.target() {
                                if spec.connect().await.is_ok() {
                                    ctx.info("health", "the server accepts connections (no health check)").await;
                                    return Ok(());
                                }
                            }
                            "no health check; waiting for the server".to_string()
                        }
                        Some(s) => s.to_string(),
                    };
                    if status != last_status {
                        ctx.info("health", status.clone()).await;
                        last_status = status;
                    }
                    let waited = started.elapsed();
                    ctx.progress("health check", waited.as_secs(), Some(o.health_timeout.as_secs()), Unit::Seconds).await;
                    if waited >= o.health_timeout {
                        let tail = docker::last_log_lines(engine, &o.name, 3).await.join(" | ");
                        return Err(UserError::new(
                            format!(
                                "container {} did not become healthy within {} s (health: {last_status}); last log lines: {tail}",
                                o.name,
                                o.health_timeout.as_secs()
                            ),
                            "read pgshift env logs; check the health check (pg_isready), memory and the data directory, \
                             or raise --timeout",
                        ).into());
                    }
                }
            }
        }
    }
}

/// Fails when something already listens on `bind:port` (a local engine would fail later, with a
/// half-created container).
pub fn check_port_free(bind: &str, port: u16) -> Result<(), UserError> {
    let addr = format!("{bind}:{port}");
    match std::net::TcpListener::bind(&addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(docker::port_in_use(port)),
        Err(_) => Ok(()), // an address this host does not have: the engine decides
    }
}

impl Stage for ContainerStage {
    fn id(&self) -> &'static str {
        "environment"
    }

    fn title(&self) -> &'static str {
        "Environment: TimescaleDB + pgvector container"
    }

    fn preflight<'a>(&'a self, _ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            let engine = docker::connect().await?;
            if docker::inspect(&engine, &self.options.name).await?.is_none() {
                // a local engine would fail only at start, after a long build
                check_port_free(&self.options.bind, self.options.port)?;
                if let Some(path) = self.options.dockerfile.as_ref().filter(|p| !p.is_file()) {
                    return Err(UserError::new(
                        format!("the Dockerfile {} does not exist", path.display()),
                        "check --dockerfile (in a plan: [target.container] dockerfile), or leave it out for pgshift's own",
                    ));
                }
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let (mut created_here, mut volume_created_here) = (false, false);
            let mut result = self.up(ctx, &mut created_here, &mut volume_created_here).await;
            if result.is_ok() && !self.settings.is_empty() {
                match self.options.target() {
                    Ok(spec) => {
                        if let Err(e) = apply_settings(ctx, &ctx.tagged(&spec), &self.settings).await {
                            result = Err(e.into());
                        }
                    }
                    Err(e) => result = Err(e.into()),
                }
            }
            if result.is_err() && created_here && !self.options.keep_failed {
                // nothing half-created is left behind: the container, and its volume if this run made it
                if let Ok(engine) = docker::connect().await {
                    if docker::remove(&engine, &self.options.name).await.is_ok() {
                        ctx.info("container", format!("removed the failed container {}", self.options.name)).await;
                    }
                    if let (true, DataDir::Volume(v)) = (volume_created_here, &self.options.data) {
                        if docker::remove_volume(&engine, v).await.is_ok() {
                            ctx.info("container", format!("removed its new volume {v}")).await;
                        }
                    }
                }
            }
            result
        })
    }
}

/// Sets the plan's `[target.settings]` on the target server (`ALTER SYSTEM`, then a reload); a
/// setting that needs a restart is said so. Returns how many were set.
pub async fn apply_settings(
    ctx: &StageContext,
    spec: &ConnSpec,
    settings: &BTreeMap<String, String>,
) -> Result<usize, UserError> {
    if settings.is_empty() {
        return Ok(0);
    }
    let client = spec.connect().await?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        UserError::new(
            format!("{what} on {}: {}", spec.label(), crate::catalog::db_message(&e)),
            "check the name and value in [target.settings] (SHOW name on the target shows its form);              ALTER SYSTEM needs a superuser",
        )
    };
    for (name, value) in settings {
        let sql = format!(
            "ALTER SYSTEM SET {} = {}",
            crate::postgres::sql::quote_ident(name),
            crate::postgres::sql::quote_literal(value)
        );
        client.batch_execute(&sql).await.map_err(|e| fail(&format!("setting {name}"), e))?;
    }
    client.batch_execute("SELECT pg_reload_conf()").await.map_err(|e| fail("reloading the configuration", e))?;
    for (name, value) in settings {
        let row = client
            .query_one("SELECT context, pending_restart FROM pg_settings WHERE lower(name) = lower($1)", &[name])
            .await
            .map_err(|e| fail(&format!("reading {name}"), e))?;
        let (context, pending): (String, bool) = (row.get(0), row.get(1));
        if context == "postmaster" || pending {
            ctx.warning(format!("{name} = '{value}' is set on the target but takes effect only after a restart")).await;
        } else {
            ctx.info("settings", format!("{name} = '{value}' set on the target ([target.settings])")).await;
        }
    }
    Ok(settings.len())
}

/// Stage 2 with an existing server: check it and report what it offers.
pub struct ExistingServerStage {
    target: ConnSpec,
    settings: BTreeMap<String, String>,
}

impl ExistingServerStage {
    pub fn new(target: ConnSpec) -> Self {
        Self { target, settings: BTreeMap::new() }
    }

    /// The plan's `[target.settings]`, set once the server answers.
    pub fn with_settings(mut self, settings: BTreeMap<String, String>) -> Self {
        self.settings = settings;
        self
    }
}

impl Stage for ExistingServerStage {
    fn id(&self) -> &'static str {
        "environment"
    }

    fn title(&self) -> &'static str {
        "Environment: existing target server"
    }

    fn preflight<'a>(&'a self, _ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            if self.settings.is_empty() {
                return Ok(());
            }
            // every setting the plan names must exist on the target, before anything is set
            let client = self.target.connect().await?;
            let q = |e: tokio_postgres::Error| {
                UserError::new(
                    format!("pre-flight query failed: {}", crate::catalog::db_message(&e)),
                    "connect as a superuser",
                )
            };
            for name in self.settings.keys() {
                let known: bool = client
                    .query_one("SELECT EXISTS (SELECT 1 FROM pg_settings WHERE lower(name) = lower($1))", &[name])
                    .await
                    .map_err(q)?
                    .get(0);
                if !known {
                    return Err(UserError::new(
                        format!("[target.settings] names {name}, which the target server does not have"),
                        "correct the name (SHOW ALL on the target lists them), or load the extension that defines it",
                    ));
                }
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let report = check_server(&ctx.tagged(&self.target)).await?;
            for w in report_warnings(&report) {
                ctx.warning(w).await;
            }
            apply_settings(ctx, &ctx.tagged(&self.target), &self.settings).await?;
            Ok(format!("{} ready: {}", report.connection, report.summary()))
        })
    }
}

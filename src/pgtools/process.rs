//! Child processes (pg_dump, pg_dumpall, pg_restore, psql): started in their own process group with
//! the password in their environment, never in their arguments; stdout streamed into a sink,
//! stderr streamed line by line as events; on cancel the whole group is stopped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_postgres::config::Host;

use crate::engine::{StageContext, StageError, Stream, Unit};
use crate::error::UserError;
use crate::postgres::conn::ConnSpec;

/// A tool invocation. `env` may hold the password; only `display()` is ever shown.
pub struct ToolCommand {
    /// What the events call it: `pg_dump data.sql`.
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A file given to the tool as its standard input.
    pub stdin: Option<PathBuf>,
}

impl ToolCommand {
    pub fn new(label: impl Into<String>, program: &std::path::Path, spec: &ConnSpec) -> Self {
        Self {
            label: label.into(),
            program: program.to_path_buf(),
            args: Vec::new(),
            env: libpq_env(spec),
            stdin: None,
        }
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line as shown in logs and the manifest: tool name and arguments (no secrets:
    /// connection details travel in the environment).
    pub fn display(&self) -> String {
        let name = self.program.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        std::iter::once(name).chain(self.args.iter().cloned()).collect::<Vec<_>>().join(" ")
    }
}

/// libpq environment for a connection: host (and hostaddr), port, user, database, password, sslmode
/// and root certificates, timeout, application name. Variables the user set for other purposes
/// (PGOPTIONS, ...) are inherited.
pub fn libpq_env(spec: &ConnSpec) -> Vec<(String, String)> {
    let c = &spec.config;
    let mut env = Vec::new();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    env.push(("PGHOST".into(), hosts.join(",")));
    let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
    env.push(("PGPORT".into(), ports.join(",")));
    if let Some(u) = c.get_user() {
        env.push(("PGUSER".into(), u.into()));
    }
    if let Some(d) = c.get_dbname() {
        env.push(("PGDATABASE".into(), d.into()));
    }
    if let Some(pw) = c.get_password() {
        env.push(("PGPASSWORD".into(), String::from_utf8_lossy(pw).into_owned()));
    }
    if let Some(a) = c.get_application_name() {
        env.push(("PGAPPNAME".into(), a.into()));
    }
    if let Some(t) = c.get_connect_timeout() {
        env.push(("PGCONNECT_TIMEOUT".into(), t.as_secs().max(1).to_string()));
    }
    if !c.get_hostaddrs().is_empty() {
        let addrs: Vec<String> = c.get_hostaddrs().iter().map(ToString::to_string).collect();
        env.push(("PGHOSTADDR".into(), addrs.join(",")));
    }
    // the same sslmode (verify-ca and verify-full included) and root certificates as pgshift's own
    env.extend(spec.tls.libpq_env());
    env
}

/// What a stderr line means beyond being shown.
pub enum LineClass {
    Plain,
    Warning(String),
    Progress { item: String, done: u64, total: Option<u64>, unit: Unit },
}

/// Receives a tool's standard output.
pub trait Sink: Send {
    fn chunk(&mut self, data: &[u8]) -> Result<(), UserError>;
}

/// Discards a tool's standard output.
pub struct Discard;

impl Sink for Discard {
    fn chunk(&mut self, _: &[u8]) -> Result<(), UserError> {
        Ok(())
    }
}

/// Keeps a tool's (small) standard output as bytes: tables of contents, privilege entries, one
/// entry's SQL. More than 256 MiB is refused rather than held.
#[derive(Default)]
pub struct Collect(pub Vec<u8>);

impl Sink for Collect {
    fn chunk(&mut self, data: &[u8]) -> Result<(), UserError> {
        if self.0.len() + data.len() > 256 << 20 {
            return Err(UserError::new(
                "a tool printed more than 256 MiB where pgshift expected a listing",
                "report the archive's size and object count to the pgshift developers",
            ));
        }
        self.0.extend_from_slice(data);
        Ok(())
    }
}

/// Kills the whole process group when dropped (a dropped stage must not leave a pg_dump behind).
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Runs `cmd`, feeding its stdout to `sink` and its stderr lines (classified by `classify`) to the
/// stage's events. Returns when the tool exited successfully and both pipes are drained.
pub async fn run_tool(
    ctx: &StageContext,
    cmd: &ToolCommand,
    sink: &mut dyn Sink,
    classify: &mut (dyn FnMut(&str) -> LineClass + Send),
) -> Result<(), StageError> {
    match run_tool_status(ctx, cmd, sink, classify).await? {
        ToolExit::Success => Ok(()),
        ToolExit::Failed(e) => Err(StageError::Failed(e)),
    }
}

/// How a tool that ran to its end exited.
pub enum ToolExit {
    Success,
    /// A non-zero exit, explained (pg_restore exits 1 when it skipped failed entries).
    Failed(UserError),
}

/// Like [`run_tool`], but a non-zero exit is returned rather than an error.
pub async fn run_tool_status(
    ctx: &StageContext,
    cmd: &ToolCommand,
    sink: &mut dyn Sink,
    classify: &mut (dyn FnMut(&str) -> LineClass + Send),
) -> Result<ToolExit, StageError> {
    let stdin = match &cmd.stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).map_err(|e| {
            UserError::new(format!("cannot read {}: {e}", p.display()), "check that the backup directory is complete")
        })?),
        None => Stdio::null(),
    };
    let mut child = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            UserError::new(
                format!("cannot start {} ({}): {e}", cmd.label, cmd.program.display()),
                "check the tool's path and permissions, or give --bin-dir",
            )
        })?;
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    let mut guard = GroupGuard(pid);
    ctx.info(&cmd.label, format!("$ {}", cmd.display())).await;

    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut buf = vec![0u8; 1 << 16];
    let mut err_line: Vec<u8> = Vec::new();
    let (mut out_open, mut err_open) = (true, true);
    let mut error_lines: Vec<String> = Vec::new();
    let mut last_lines: Vec<String> = Vec::new();
    while out_open || err_open {
        tokio::select! {
            _ = ctx.cancel_token().cancelled() => {
                stop_group(pid, &mut child).await;
                guard.0 = None;
                return Err(StageError::Cancelled);
            }
            r = stdout.read(&mut buf), if out_open => match r {
                Ok(0) => out_open = false,
                Ok(n) => if let Err(e) = sink.chunk(&buf[..n]) {
                    stop_group(pid, &mut child).await;
                    guard.0 = None;
                    return Err(StageError::Failed(e));
                },
                Err(e) => {
                    stop_group(pid, &mut child).await;
                    guard.0 = None;
                    return Err(StageError::Failed(UserError::new(
                        format!("reading the output of {} failed: {e}", cmd.label),
                        "run it again; if it repeats, check the machine's memory and process limits",
                    )));
                }
            },
            // bytes, not text: a tool prints names in the database's encoding, which may not be UTF-8
            l = stderr.read_until(b'\n', &mut err_line), if err_open => match l {
                Ok(0) | Err(_) => err_open = false,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&err_line).trim_end_matches(['\n', '\r']).to_string();
                    err_line.clear();
                    if line.contains("error:") || line.starts_with("ERROR:") || line.starts_with("FATAL:") {
                        error_lines.push(line.clone());
                    }
                    last_lines.push(line.clone());
                    if last_lines.len() > 5 {
                        last_lines.remove(0);
                    }
                    let class = classify(&line);
                    ctx.output(&cmd.label, Stream::Stderr, line).await;
                    match class {
                        LineClass::Plain => {}
                        LineClass::Warning(w) => ctx.warning(w).await,
                        LineClass::Progress { item, done, total, unit } => ctx.progress(&item, done, total, unit).await,
                    }
                }
            },
        }
    }
    let status = tokio::select! {
        s = child.wait() => s,
        _ = ctx.cancel_token().cancelled() => {
            stop_group(pid, &mut child).await;
            guard.0 = None;
            return Err(StageError::Cancelled);
        }
    };
    guard.0 = None;
    let status = status.map_err(|e| UserError::new(format!("{} did not finish: {e}", cmd.label), "run it again"))?;
    if status.success() {
        return Ok(ToolExit::Success);
    }
    let detail = if error_lines.is_empty() { last_lines } else { error_lines };
    let code = status.code().map(|c| format!("exit code {c}")).unwrap_or_else(|| "killed by a signal".into());
    Ok(ToolExit::Failed(explain_failure(&cmd.label, &code, &detail)))
}

/// Stops a tool: SIGTERM to its group, SIGKILL to the group if the leader has not exited after
/// three seconds. (The leader is reaped only after that, so the group id cannot have been reused.)
async fn stop_group(pid: Option<Pid>, child: &mut tokio::process::Child) {
    if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// A tool's failure as one line with the fix for the usual causes.
fn explain_failure(label: &str, code: &str, detail: &[String]) -> UserError {
    let text = crate::postgres::conn::scrub(&detail.join(" | "));
    let lower = text.to_lowercase();
    let fix = if lower.contains("server version mismatch") {
        "use client tools at least as new as the server (--bin-dir)"
    } else if lower.contains("permission denied") {
        "run as a superuser or the owner of every object (or a role granted pg_read_all_data)"
    } else if lower.contains("password authentication failed") || lower.contains("no password supplied") {
        "check the password (PGPASSWORD, ~/.pgpass with mode 0600, or the connection string)"
    } else if lower.contains("could not obtain lock") || lower.contains("lock timeout") {
        "a session holds a conflicting lock: find it in pg_locks / pg_stat_activity, then retry"
    } else if lower.contains("connection to server") || lower.contains("could not connect") {
        "check that the server runs and accepts connections, then retry"
    } else if lower.contains("snapshot") {
        "the exported snapshot ended early (the server restarted or the session was ended); retry"
    } else {
        "read the tool's output above for the cause, fix it and retry"
    };
    UserError::new(format!("{label} failed ({code}): {text}"), fix)
}

//! The Docker Engine API (bollard): connect and negotiate, build an image from a tar context,
//! create/start/inspect/stop/remove a container, upload a file into it, stream its logs, run a
//! command inside it. Errors become one line with the fix.

use std::collections::HashMap;
use std::path::Path;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::error::UserError;

/// A connected engine and where it is.
pub struct Engine {
    pub docker: Docker,
    pub host: String,
    pub version: String,
    pub api_version: String,
}

/// Where the engine is: `DOCKER_HOST`, else the local socket.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

fn no_engine(host: &str, detail: &str) -> UserError {
    UserError::new(
        format!("no Docker engine answers at {host} ({detail})"),
        "start the Docker engine (systemctl start docker) or set DOCKER_HOST to one; \
         or use an existing server as the target (--target CONN)",
    )
}

/// Connects to the engine and agrees on an API version both sides speak.
pub async fn connect() -> Result<Engine, UserError> {
    let host = engine_host();
    let docker = Docker::connect_with_defaults().map_err(|e| no_engine(&host, &e.to_string()))?;
    let docker = tokio::time::timeout(std::time::Duration::from_secs(15), docker.negotiate_version())
        .await
        .map_err(|_| no_engine(&host, "no answer within 15 s"))?
        .map_err(|e| no_engine(&host, &short(&e)))?;
    let v = docker.version().await.map_err(|e| no_engine(&host, &short(&e)))?;
    Ok(Engine {
        host,
        version: v.version.unwrap_or_else(|| "?".into()),
        api_version: v.api_version.unwrap_or_else(|| "?".into()),
        docker,
    })
}

/// A bollard error without its Rust-debug noise.
pub fn short(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// A tar archive (in memory) of `dir`, for a build context; refuses contexts over `limit` bytes.
pub fn tar_context(dir: &Path, limit: u64) -> Result<Vec<u8>, UserError> {
    let size = dir_size(dir);
    if size > limit {
        return Err(UserError::new(
            format!("the build context {} holds {} MiB", dir.display(), size >> 20),
            "give the Dockerfile a small directory of its own as --context (pgshift does not read .dockerignore)",
        ));
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).map_err(|e| {
        UserError::new(format!("cannot read the build context {}: {e}", dir.display()), "check the directory")
    })?;
    builder.into_inner().map_err(|e| UserError::new(format!("cannot pack the build context: {e}"), "retry"))
}

/// A tar archive holding one file.
pub fn tar_file(path: &str, contents: &[u8], mode: u32) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    builder.append_data(&mut header, path, contents).expect("in-memory tar");
    builder.into_inner().expect("in-memory tar")
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Builds `tag` from a tar `context` holding `dockerfile`; every output line goes to `line`.
/// A failure names the step that failed and the engine's error.
pub async fn build_image(
    engine: &Engine,
    context: Vec<u8>,
    dockerfile: &str,
    tag: &str,
    build_args: &HashMap<String, String>,
    line: &mut (dyn FnMut(String) + Send),
) -> Result<(), UserError> {
    let options = BuildImageOptionsBuilder::new()
        .dockerfile(dockerfile)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .buildargs(build_args)
        .build();
    let mut stream = engine.docker.build_image(options, None, Some(body_full(context.into())));
    let mut step = String::new();
    let mut step_tail: Vec<String> = Vec::new();
    let mut failure: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for l in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                        if l.starts_with("Step ") {
                            step = l.to_string();
                            step_tail.clear();
                        } else if !l.starts_with(" ---> ") {
                            step_tail.push(l.to_string());
                            if step_tail.len() > 3 {
                                step_tail.remove(0);
                            }
                        }
                        line(l.to_string());
                    }
                }
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    line(detail.clone());
                    failure = Some(detail);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                line(error.clone());
                failure = Some(error);
                break;
            }
            Err(e) => {
                let text = short(&e);
                line(text.clone());
                failure = Some(text);
                break;
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(error) => {
            let at = if step.is_empty() { String::new() } else { format!(" at {step}") };
            let output =
                if step_tail.is_empty() { String::new() } else { format!(" (last output: {})", step_tail.join(" | ")) };
            let error = format!("{}{output}", error.trim());
            let fix = if error.contains("manifest unknown") || error.contains("not found: manifest") {
                "the base image tag does not exist: check the FROM line and its build args (PG_MAJOR, TIMESCALEDB_VERSION)"
            } else if error.contains("pull access denied")
                || error.contains("no such host")
                || error.contains("dial tcp")
            {
                "the base image could not be pulled: give the engine registry access, or load the base image \
                 (docker load) and build again"
            } else {
                "read the build output above, fix the Dockerfile or its --build-arg values, and run it again"
            };
            Err(UserError::new(format!("image build failed{at}: {error}"), fix))
        }
    }
}

pub async fn image_exists(engine: &Engine, image: &str) -> Result<bool, UserError> {
    match engine.docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(UserError::new(format!("cannot inspect image {image}: {}", short(&e)), "check the engine")),
    }
}

/// The container, or None when there is none of that name.
pub async fn inspect(engine: &Engine, name: &str) -> Result<Option<ContainerInspectResponse>, UserError> {
    match engine.docker.inspect_container(name, None::<InspectContainerOptions>).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(UserError::new(format!("cannot inspect container {name}: {}", short(&e)), "check the engine")),
    }
}

pub async fn create(engine: &Engine, name: &str, body: ContainerCreateBody) -> Result<(), UserError> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    engine.docker.create_container(Some(options), body).await.map(|_| ()).map_err(|e| {
        let text = short(&e);
        let fix = if text.contains("Conflict") || text.contains("already in use") {
            "a container of that name exists: reuse it (pgshift env up reuses a running one), or remove it with pgshift env down --yes"
        } else {
            "check the image name and the options"
        };
        UserError::new(format!("cannot create container {name}: {text}"), fix)
    })
}

/// Copies a tar archive into the container's filesystem at `/` (works before it starts).
pub async fn upload(engine: &Engine, name: &str, tar: Vec<u8>) -> Result<(), UserError> {
    let options = UploadToContainerOptionsBuilder::new().path("/").build();
    engine.docker.upload_to_container(name, Some(options), body_full(tar.into())).await.map_err(|e| {
        UserError::new(format!("cannot copy the password file into {name}: {}", short(&e)), "check the engine")
    })
}

pub async fn start(engine: &Engine, name: &str, port: u16) -> Result<(), UserError> {
    engine.docker.start_container(name, None).await.map_err(|e| {
        let text = short(&e);
        if text.contains("port is already allocated") || text.contains("address already in use") {
            port_in_use(port)
        } else {
            UserError::new(format!("container {name} did not start: {text}"), "read pgshift env logs for the cause")
        }
    })
}

pub fn port_in_use(port: u16) -> UserError {
    UserError::new(
        format!("port {port} is already in use on the host"),
        "choose another --port, or stop what listens there (ss -ltnp)",
    )
}

pub async fn stop(engine: &Engine, name: &str) -> Result<(), UserError> {
    let options = StopContainerOptionsBuilder::new().t(30).build();
    match engine.docker.stop_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()), // already stopped
        Err(e) => Err(UserError::new(format!("cannot stop container {name}: {}", short(&e)), "check the engine")),
    }
}

/// Removes the container (forcefully: it may be running) and its anonymous volumes.
pub async fn remove(engine: &Engine, name: &str) -> Result<(), UserError> {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match engine.docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(UserError::new(format!("cannot remove container {name}: {}", short(&e)), "check the engine")),
    }
}

pub async fn volume_exists(engine: &Engine, volume: &str) -> Result<bool, UserError> {
    match engine.docker.inspect_volume(volume).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(UserError::new(format!("cannot inspect volume {volume}: {}", short(&e)), "check the engine")),
    }
}

/// The host address and port a container publishes 5432 on, if it does.
pub fn published_port(c: &ContainerInspectResponse) -> Option<(String, u16)> {
    c.network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .and_then(|p| p.get("5432/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| Some((b.host_ip.unwrap_or_default(), b.host_port?.parse().ok()?))))
}

pub async fn remove_volume(engine: &Engine, volume: &str) -> Result<(), UserError> {
    match engine.docker.remove_volume(volume, None::<RemoveVolumeOptions>).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(UserError::new(format!("cannot remove volume {volume}: {}", short(&e)), "check the engine")),
    }
}

/// The container's log lines (stdout and stderr), the last `tail` of them, then new ones if `follow`.
/// Lines are cut at newline bytes before decoding, so a character split across frames stays whole.
pub fn logs<'a>(engine: &'a Engine, name: &'a str, tail: &str, follow: bool) -> impl Stream<Item = String> + 'a {
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(tail).follow(follow).build();
    let frames = engine.docker.logs(name, Some(options)).filter_map(|item| async move { item.ok() });
    futures_util::stream::unfold(
        (Box::pin(frames), Lines::default(), false),
        |(mut frames, mut lines, mut ended)| async move {
            loop {
                if let Some(line) = lines.next_line(ended) {
                    return Some((line, (frames, lines, ended)));
                }
                if ended {
                    return None;
                }
                match frames.next().await {
                    Some(frame) => lines.push(frame_bytes(&frame)),
                    None => ended = true,
                }
            }
        },
    )
}

/// Bytes in, whole lines out (decoded once complete).
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line; at the end, whatever is left.
    fn next_line(&mut self, at_end: bool) -> Option<String> {
        let cut = match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if at_end && !self.buf.is_empty() => self.buf.len(),
            None => return None,
        };
        let raw: Vec<u8> = self.buf.drain(..cut).collect();
        Some(String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r']).to_string())
    }
}

/// The last `n` log lines, for an error message.
pub async fn last_log_lines(engine: &Engine, name: &str, n: usize) -> Vec<String> {
    logs(engine, name, &n.to_string(), false).collect().await
}

fn frame_bytes(o: &LogOutput) -> &[u8] {
    match o {
        LogOutput::StdErr { message }
        | LogOutput::StdOut { message }
        | LogOutput::StdIn { message }
        | LogOutput::Console { message } => message,
    }
}

/// Runs `cmd` inside the container as `user`, feeding `stdin`; each output line goes to `line`
/// (with `true` for stderr). Returns the command's exit code.
pub async fn exec(
    engine: &Engine,
    name: &str,
    user: &str,
    cmd: Vec<String>,
    stdin: Option<Vec<u8>>,
    line: &mut (dyn FnMut(bool, String) + Send),
) -> Result<i64, UserError> {
    let fail = |e: bollard::errors::Error| {
        UserError::new(
            format!("cannot run a command in container {name}: {}", short(&e)),
            "check that it is running (pgshift env status)",
        )
    };
    let created = engine
        .docker
        .create_exec(
            name,
            CreateExecOptions {
                attach_stdin: Some(stdin.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some(user.to_string()),
                cmd: Some(cmd),
                ..Default::default()
            },
        )
        .await
        .map_err(fail)?;
    if let StartExecResults::Attached { mut output, mut input } =
        engine.docker.start_exec(&created.id, None).await.map_err(fail)?
    {
        let writer = async move {
            if let Some(data) = stdin {
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await; // end of input: psql -f - finishes
            }
        };
        let reader = async {
            let (mut out, mut err) = (Lines::default(), Lines::default());
            while let Some(Ok(chunk)) = output.next().await {
                let is_err = matches!(chunk, LogOutput::StdErr { .. });
                let lines = if is_err { &mut err } else { &mut out };
                lines.push(frame_bytes(&chunk));
                while let Some(l) = lines.next_line(false) {
                    line(is_err, l);
                }
            }
            for (is_err, mut rest) in [(false, out), (true, err)] {
                while let Some(l) = rest.next_line(true) {
                    line(is_err, l);
                }
            }
        };
        tokio::join!(writer, reader);
    }
    let inspected = engine.docker.inspect_exec(&created.id).await.map_err(fail)?;
    Ok(inspected.exit_code.unwrap_or(-1))
}

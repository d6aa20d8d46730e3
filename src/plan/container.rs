//! The container target a plan (or `pgshift env up`) asks for: image, port, data directory,
//! shared memory, and the 0600 file with its generated superuser password. Plain options and the
//! password file; the environment stage builds and runs the container from them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::UserError;
use crate::files;
use crate::postgres::conn::ConnSpec;

/// Where the container keeps its data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    Volume(String),
    Host(PathBuf),
}

impl DataDir {
    /// `volume:NAME`, or a path (anything with a `/`), or a bare volume name.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("volume:") {
            Some(v) => DataDir::Volume(v.to_string()),
            None if text.contains('/') => DataDir::Host(PathBuf::from(text)),
            None => DataDir::Volume(text.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnvOptions {
    pub name: String,
    pub image: String,
    /// None: the embedded Dockerfile.timescaledb.
    pub dockerfile: Option<PathBuf>,
    /// The build context (default: the Dockerfile's directory).
    pub context: Option<PathBuf>,
    pub build_args: HashMap<String, String>,
    /// Build even when the image exists.
    pub rebuild: bool,
    pub bind: String,
    pub port: u16,
    pub data: DataDir,
    pub shm_size: u64,
    /// pgpass-format file holding the generated superuser password (mode 0600).
    pub password_file: PathBuf,
    pub health_timeout: Duration,
    /// Keep a container that failed to start or become healthy (for inspection).
    pub keep_failed: bool,
}

impl EnvOptions {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            image: "pgshift/timescaledb-pgvector:pg17".into(),
            dockerfile: None,
            context: None,
            build_args: HashMap::new(),
            rebuild: false,
            bind: "127.0.0.1".into(),
            port: 55432,
            data: DataDir::Volume(format!("{name}-data")),
            shm_size: 1 << 30,
            password_file: default_password_file(name),
            health_timeout: Duration::from_secs(180),
            keep_failed: false,
        }
    }

    /// The target as a connection: superuser over the published port, password from the file.
    pub fn target(&self) -> Result<ConnSpec, UserError> {
        let host = if self.bind == "0.0.0.0" { "127.0.0.1" } else { self.bind.as_str() };
        let mut spec =
            ConnSpec::parse("target", &format!("host={host} port={} user=postgres dbname=postgres", self.port))?;
        spec.config.password(read_password(&self.password_file)?);
        Ok(spec)
    }
}

/// `~/.config/pgshift/NAME.pgpass`.
pub fn default_password_file(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pgshift").join(format!("{name}.pgpass"))
}

/// The password from a pgpass-format file (`*:*:*:postgres:PASSWORD`).
pub fn read_password(path: &Path) -> Result<String, UserError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::new(
            format!("cannot read the target's password file {}: {e}", path.display()),
            "run pgshift env up first (it writes the file), or give --password-file",
        )
    })?;
    // a pgpass line (host:port:db:user:password), or the bare password (a Compose secret file)
    let line = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).ok_or_else(|| {
        UserError::new(format!("{} holds no password", path.display()), "remove it and run pgshift env up again")
    })?;
    Ok(match line.splitn(5, ':').nth(4) {
        Some(pw) => pw.to_string(),
        None => line.trim_end().to_string(),
    })
}

/// Reads the password file, or writes a new one with a generated password (0600, directory 0700).
pub fn ensure_password(path: &Path) -> Result<(String, bool), UserError> {
    if path.exists() {
        return Ok((read_password(path)?, false));
    }
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| files::write_error(dir, &e))?;
    }
    let mut bytes = [0u8; 24];
    getrandom(&mut bytes).map_err(|e| files::write_error(Path::new("/dev/urandom"), &e))?;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let password: String = bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    let text = format!(
        "# superuser of the pgshift target container; use with PGPASSFILE={}\n*:*:*:postgres:{password}\n",
        path.display()
    );
    files::write_atomic(path, text.as_bytes()).map_err(|e| files::write_error(path, &e))?;
    Ok((password, true))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

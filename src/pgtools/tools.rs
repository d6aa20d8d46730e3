//! Finding PostgreSQL's client tools (pg_dump, pg_dumpall, pg_restore, psql) and checking their
//! version against the server's: pg_dump cannot dump a server newer than itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::UserError;

/// A tool found on this machine, with the version it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub path: PathBuf,
    /// `17.6 (Debian 17.6-1)`: what `--version` printed after "(PostgreSQL)".
    pub version: String,
    pub major: u32,
}

/// Parses `pg_dump (PostgreSQL) 17.6 (Debian 17.6-1)` → ("17.6 (Debian 17.6-1)", 17).
/// Before PostgreSQL 10 the major version had two parts (9.6); they are returned as 9.
pub fn parse_version(text: &str) -> Option<(String, u32)> {
    let line = text.lines().next()?;
    let after = line.split_once("(PostgreSQL)").map(|(_, v)| v.trim())?;
    let major: u32 = after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((after.to_string(), major))
}

/// Runs `path --version`.
async fn version_of(name: &str, path: &Path) -> Option<Tool> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.arg("--version").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    let (version, major) = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    Some(Tool { name: name.into(), path: path.to_path_buf(), version, major })
}

/// Directories that may hold PostgreSQL client tools, most specific first: PATH, `pg_config
/// --bindir`, the Debian/Ubuntu layout and the PGDG RPM layout.
async fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let mut cmd = tokio::process::Command::new("pg_config");
    cmd.arg("--bindir").stdin(std::process::Stdio::null()).kill_on_drop(true);
    if let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        if out.status.success() {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    for pattern_dir in ["/usr/lib/postgresql", "/usr"] {
        if let Ok(entries) = std::fs::read_dir(pattern_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if pattern_dir == "/usr/lib/postgresql" || name.starts_with("pgsql-") {
                    dirs.push(e.path().join("bin"));
                }
            }
        }
    }
    dirs
}

/// The client tools for a server of major version `server_major`: all from one directory, the
/// newest found (or the one `bin_dir` names), and new enough for the server.
pub async fn find_tools(names: &[&str], bin_dir: Option<&Path>, server_major: u32) -> Result<Vec<Tool>, UserError> {
    let first = names[0];
    let dirs = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => candidate_dirs().await,
    };
    let mut found: Vec<Tool> = Vec::new();
    let mut seen = Vec::new();
    for dir in dirs {
        let path = dir.join(first);
        let Ok(real) = std::fs::canonicalize(&path) else { continue };
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        if let Some(t) = version_of(first, &path).await {
            found.push(t);
        }
    }
    let where_ = match bin_dir {
        Some(d) => format!("in {}", d.display()),
        None => "on PATH, in pg_config --bindir or in /usr/lib/postgresql/*/bin".to_string(),
    };
    let install = format!(
        "install the PostgreSQL {server_major} client tools (Debian/Ubuntu: apt install postgresql-client-{server_major}) \
         or give --bin-dir with a {first} {server_major} or newer"
    );
    // newest first; the first one new enough wins
    found.sort_by_key(|t| std::cmp::Reverse(t.major));
    let Some(best) = found.first() else {
        return Err(UserError::new(format!("no working {first} found {where_}"), install));
    };
    if best.major < server_major {
        let list: Vec<String> = found.iter().map(|t| format!("{} at {}", t.version, t.path.display())).collect();
        return Err(UserError::new(
            format!(
                "{first} {} is older than the source server (PostgreSQL {server_major}) and cannot dump it (found: {})",
                best.major,
                list.join("; ")
            ),
            install,
        ));
    }
    let dir = best.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut tools = vec![best.clone()];
    for name in &names[1..] {
        let path = dir.join(name);
        let tool = version_of(name, &path).await.ok_or_else(|| {
            UserError::new(
                format!("{name} is missing or broken in {} (beside {first} {})", dir.display(), best.version),
                format!("install the complete PostgreSQL {} client package, or give --bin-dir", best.major),
            )
        })?;
        tools.push(tool);
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17.6 (Debian 17.6-1.pgdg120+1)\n"),
            Some(("17.6 (Debian 17.6-1.pgdg120+1)".into(), 17))
        );
        assert_eq!(parse_version("psql (PostgreSQL) 9.6.24").map(|v| v.1), Some(9));
        assert_eq!(parse_version("pg_dump 17"), None);
    }
}

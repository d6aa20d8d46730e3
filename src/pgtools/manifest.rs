//! `manifest.json`: the record that a backup is complete — every file with its size and sha256,
//! the tools and server versions, the snapshot, and the times. Written atomically twice: once the
//! schema archive, the roles and the inventory are there (`complete: false`: what the schema stage
//! may restore from while the rows are dumped), and last with every file (`complete: true`). A
//! backup directory without a complete one is not a complete backup.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::TimescaleInfo;
use crate::error::UserError;
use crate::files::sha256_file;
use crate::pgtools::tools::Tool;

pub const MANIFEST_FILE: &str = "manifest.json";
/// The archive of everything, rows included (`pg_dump --format=custom`): what post-data restores from.
pub const FULL_ARCHIVE: &str = "full.dump";
/// The archive of the schema alone, written first: what the schema stage restores from while
/// `full.dump` is still being written.
pub const SCHEMA_ARCHIVE: &str = "schema.dump";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    pub name: String,
    /// What the file holds, in a few words.
    pub content: String,
    pub bytes: u64,
    pub sha256: String,
    /// The command that wrote it (connection details and password are not part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// `user@host:port/dbname`, never the password.
    pub connection: String,
    pub database: String,
    pub server_version: String,
    pub server_version_num: i32,
    pub timescaledb: Option<TimescaleInfo>,
    pub extensions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub pgshift_version: String,
    pub complete: bool,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub source: SourceInfo,
    /// The exported snapshot every dump and the inventory read: they show one moment.
    pub snapshot: Option<String>,
    pub role_passwords: bool,
    pub tools: Vec<Tool>,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self, UserError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            UserError::new(
                format!("no readable manifest in {} ({e})", dir.display()),
                "give a backup directory that pgshift backup completed (it has manifest.json)",
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            UserError::new(format!("{} is not a pgshift manifest ({e})", path.display()), "run pgshift backup again")
        })
    }

    /// Re-reads every file and returns one line per file whose size or sha256 differs.
    pub fn check(&self, dir: &Path) -> Vec<String> {
        self.check_only(dir, |_| true)
    }

    /// [`Manifest::check`] for the files `wanted` accepts (a missing one is a problem too).
    pub fn check_only(&self, dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        for f in self.files.iter().filter(|f| wanted(&f.name)) {
            match sha256_file(&dir.join(&f.name)) {
                Ok((bytes, sum)) if bytes == f.bytes && sum == f.sha256 => {}
                Ok((bytes, sum)) => problems.push(format!(
                    "{}: {bytes} bytes sha256 {sum}, manifest says {} bytes sha256 {}",
                    f.name, f.bytes, f.sha256
                )),
                Err(e) => problems.push(format!("{}: {e}", f.name)),
            }
        }
        problems
    }
}

//! The migration plan (TOML): source, target (a container pgshift runs, or an existing server),
//! backup directory, stage options, tables to turn into hypertables, vector columns to add, and the
//! differences the plan makes on purpose (allowed by verify).
//! Core: it may use the catalog's classes, `postgres`, `files` and `error`; stages, commands and
//! the console read it.

pub mod allow;
pub mod container;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::plan::allow::{AllowList, AllowRule};
use crate::postgres::conn::ConnSpec;
use container::{default_password_file, DataDir, EnvOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub source: SourcePlan,
    pub target: TargetPlan,
    #[serde(default)]
    pub backup: BackupPlan,
    #[serde(default)]
    pub data: DataPlan,
    #[serde(default)]
    pub verify: VerifyPlan,
    #[serde(default)]
    pub tuning: TuningPlan,
    #[serde(default)]
    pub online: OnlinePlan,
    #[serde(default)]
    pub hypertables: Vec<HypertablePlan>,
    #[serde(default)]
    pub vectors: Vec<VectorPlan>,
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePlan {
    /// libpq URL or key=value string, without the password (PGPASSWORD or ~/.pgpass give it).
    pub connection: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetPlan {
    /// An existing server (and database) to migrate onto.
    pub connection: Option<String>,
    /// Or a container pgshift builds and runs.
    pub container: Option<ContainerPlan>,
    /// The target database (default: the source's name); created when missing.
    pub database: Option<String>,
    /// Migrate into a database that already holds objects (they may collide).
    #[serde(default)]
    pub force: bool,
    /// Server settings to set on the target (`ALTER SYSTEM` and a reload) before the schema:
    /// `[target.settings]` with `TimeZone = "Asia/Seoul"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Where the relations the source keeps outside its default tablespace go.
    #[serde(default)]
    pub tablespaces: Tablespaces,
}

/// `[target] tablespaces`: where the target puts what the source keeps in other tablespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tablespaces {
    /// In the tablespaces of the same names, which the target must have (the pre-flight checks).
    #[default]
    Source,
    /// In the target database's default tablespace (`pg_restore --no-tablespaces`); verify names the
    /// placements as planned differences.
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPlan {
    #[serde(default = "default_container_name")]
    pub name: String,
    pub image: Option<String>,
    pub dockerfile: Option<PathBuf>,
    pub bind: Option<String>,
    pub port: Option<u16>,
    pub data: Option<String>,
    pub shm_mb: Option<u64>,
    pub password_file: Option<PathBuf>,
    pub timeout_seconds: Option<u64>,
}

fn default_container_name() -> String {
    "pgshift-timescaledb".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupPlan {
    #[serde(default = "default_backup_dir")]
    pub dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    #[serde(default)]
    pub role_passwords: bool,
    /// `schema.sql`, the classic runbook's schema dump (default yes: small, and readable).
    #[serde(default = "yes")]
    pub schema_sql: bool,
    /// `data.sql`, every row once more as plain SQL (default no: `full.dump` holds the rows).
    #[serde(default)]
    pub data_sql: bool,
    /// How `full.dump` is compressed.
    #[serde(default)]
    pub compression: Compression,
}

/// `[backup] compression`: how pg_dump compresses `full.dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// lz4 where pg_dump can (PostgreSQL 16+), else gzip at its fastest level.
    #[default]
    Auto,
    Lz4,
    Zstd,
    Gzip,
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let all = [Compression::Auto, Compression::Lz4, Compression::Zstd, Compression::Gzip, Compression::None];
        all.into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown compression {s:?}: use auto, lz4, zstd, gzip or none"))
    }
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }

    /// pg_dump's `--compress` value for a pg_dump of `major`, or why that pg_dump cannot.
    pub fn pg_dump_arg(self, major: u32) -> Result<String, String> {
        let modern = major >= 16; // pg_dump 16 added lz4 and zstd (and the METHOD:LEVEL form)
        Ok(match (self, modern) {
            (Compression::Auto, true) | (Compression::Lz4, true) => "--compress=lz4".into(),
            (Compression::Zstd, true) => "--compress=zstd".into(),
            (Compression::Auto, false) | (Compression::Gzip, false) => "--compress=1".into(),
            (Compression::Gzip, true) => "--compress=gzip:1".into(),
            (Compression::None, _) => "--compress=0".into(),
            (c @ (Compression::Lz4 | Compression::Zstd), false) => {
                return Err(format!("pg_dump {major} cannot compress with {} (pg_dump 16 and later can)", c.name()))
            }
        })
    }
}

fn default_backup_dir() -> PathBuf {
    PathBuf::from("backups")
}

impl Default for BackupPlan {
    fn default() -> Self {
        Self {
            dir: default_backup_dir(),
            bin_dir: None,
            role_passwords: false,
            schema_sql: true,
            data_sql: false,
            compression: Compression::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlan {
    /// Tables copied at the same time.
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    /// How compressed chunks travel: `as-is` (their compressed rows copied as they are where both
    /// servers run the same TimescaleDB, else read through decompression) or `recompress` (always
    /// read through decompression and compressed again on the target).
    #[serde(default)]
    pub compressed_chunks: CompressedChunks,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressedChunks {
    #[default]
    AsIs,
    Recompress,
}

/// One connection pair per core (at least 2, at most 8).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

impl Default for DataPlan {
    fn default() -> Self {
        Self { jobs: default_jobs(), compressed_chunks: CompressedChunks::AsIs }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyPlan {
    #[serde(default = "yes")]
    pub checksums: bool,
}

/// `[online]`: copy while the application writes, then catch up through logical replication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlinePlan {
    #[serde(default)]
    pub enabled: bool,
    /// Seconds without a write on the source after which the catch-up takes writes as stopped.
    #[serde(default = "default_quiet_seconds")]
    pub quiet_seconds: u64,
}

fn default_quiet_seconds() -> u64 {
    10
}

impl Default for OnlinePlan {
    fn default() -> Self {
        Self { enabled: false, quiet_seconds: default_quiet_seconds() }
    }
}

fn yes() -> bool {
    true
}

impl Default for VerifyPlan {
    fn default() -> Self {
        Self { checksums: true }
    }
}

/// Session settings for index builds, and what the tuning stage does after the load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningPlan {
    /// `maintenance_work_mem` for index builds (vector indexes above all).
    #[serde(default = "default_mwm")]
    pub maintenance_work_mem: String,
    /// `max_parallel_maintenance_workers` for index builds.
    #[serde(default = "default_workers")]
    pub parallel_workers: u32,
    /// VACUUM (not only ANALYZE) every table after the load.
    #[serde(default)]
    pub vacuum: bool,
    /// REINDEX ... CONCURRENTLY every table after the load.
    #[serde(default)]
    pub reindex: bool,
    /// Compress the chunks that were compressed on the source (Timescale-licensed targets).
    #[serde(default = "yes")]
    pub compress_chunks: bool,
}

fn default_mwm() -> String {
    "512MB".into()
}

fn default_workers() -> u32 {
    2
}

impl Default for TuningPlan {
    fn default() -> Self {
        Self {
            maintenance_work_mem: default_mwm(),
            parallel_workers: default_workers(),
            vacuum: false,
            reindex: false,
            compress_chunks: true,
        }
    }
}

/// A plain source table to turn into a hypertable on the target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HypertablePlan {
    pub table: String,
    pub time_column: String,
    /// `'1 day'`-style interval; default: suggested from the data.
    pub chunk_interval: Option<String>,
    /// Enable compression (needs the Timescale License on the target).
    #[serde(default)]
    pub compress: bool,
    /// `compress_segmentby` columns, comma-separated.
    pub segment_by: Option<String>,
    /// `compress_orderby`, e.g. `"time DESC"`.
    pub order_by: Option<String>,
    /// Add a compression policy compressing chunks older than this interval.
    pub compress_after: Option<String>,
}

impl HypertablePlan {
    /// The TimescaleDB features this entry asks for that need the Timescale License.
    pub fn licensed(&self) -> Option<String> {
        (self.compress || self.compress_after.is_some()).then(|| format!("planned compression of {}", self.table))
    }
}

/// A vector column (and index) to add on the target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VectorPlan {
    pub table: String,
    pub column: String,
    pub dimensions: u32,
    /// `vector` (default) or `halfvec`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `hnsw` (default) or `ivfflat`; `none` for no index.
    pub index: Option<String>,
    pub opclass: Option<String>,
    pub m: Option<u32>,
    pub ef_construction: Option<u32>,
    pub lists: Option<u32>,
}

/// Whether a connection string names its database itself (a URL path, or `dbname=`).
fn names_database(conn: &str) -> bool {
    let c = conn.trim();
    match c.strip_prefix("postgresql://").or_else(|| c.strip_prefix("postgres://")) {
        Some(rest) => {
            let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
            let db = path.split('?').next().unwrap_or("");
            !db.is_empty() || path.contains("dbname=")
        }
        None => c.split_whitespace().any(|kv| kv.starts_with("dbname=")),
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self, UserError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserError::new(
                format!("cannot read plan {}: {e}", path.display()),
                "check the path, or write one with pgshift plan init --source CONN",
            )
        })?;
        Self::parse(&text).map_err(|e| UserError::new(format!("plan {}: {}", path.display(), e.message), e.fix))
    }

    pub fn parse(text: &str) -> Result<Self, UserError> {
        let plan: Plan = toml::from_str(text).map_err(|e| {
            let place = crate::error::toml_place(text, &e);
            UserError::new(
                format!("{place}{}", e.message().trim()),
                "compare with the plan pgshift plan init writes (sections [source], [target], [backup], [data], \
                 [verify], [[hypertables]], [[vectors]], [[allow]])",
            )
        })?;
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> Result<(), UserError> {
        ConnSpec::parse("source", &self.source.connection)
            .map_err(|e| UserError::new(format!("[source] connection: {}", e.message), e.fix))?;
        match (&self.target.connection, &self.target.container) {
            (Some(c), None) => {
                ConnSpec::parse("target", c)
                    .map_err(|e| UserError::new(format!("[target] connection: {}", e.message), e.fix))?;
            }
            (None, Some(_)) => {}
            _ => {
                return Err(UserError::new(
                    "[target] needs exactly one of connection = \"...\" or a [target.container] section",
                    "give the existing server's connection, or [target.container] for a container pgshift runs",
                ))
            }
        }
        if self.data.jobs == 0 {
            return Err(UserError::new("[data] jobs must be at least 1", "set jobs = 2 (or the number of cores)"));
        }
        AllowList::from_rules(self.allow.clone())
            .map_err(|e| UserError::new(format!("[[allow]]: {}", e.message), e.fix))?;
        Ok(())
    }

    pub fn source(&self) -> Result<ConnSpec, UserError> {
        ConnSpec::parse("source", &self.source.connection)
    }

    pub fn allow_list(&self) -> Result<AllowList, UserError> {
        AllowList::from_rules(self.allow.clone())
    }

    /// The target database's name: the plan's, else the connection's, else the source's.
    pub fn target_database(&self, source: &ConnSpec) -> String {
        if let Some(d) = &self.target.database {
            return d.clone();
        }
        if let Some(c) = &self.target.connection {
            if let Ok(spec) = ConnSpec::parse("target", c) {
                if names_database(c) {
                    return spec.dbname().to_string();
                }
            }
        }
        source.dbname().to_string()
    }

    /// The container's options, when the target is a container.
    pub fn container_options(&self) -> Option<EnvOptions> {
        let c = self.target.container.as_ref()?;
        let mut o = EnvOptions::new(&c.name);
        if let Some(i) = &c.image {
            o.image = i.clone();
        }
        o.dockerfile = c.dockerfile.clone();
        if let Some(b) = &c.bind {
            o.bind = b.clone();
        }
        if let Some(p) = c.port {
            o.port = p;
        }
        if let Some(d) = &c.data {
            o.data = DataDir::parse(d);
        }
        if let Some(s) = c.shm_mb {
            o.shm_size = s << 20;
        }
        o.password_file = c.password_file.clone().unwrap_or_else(|| default_password_file(&c.name));
        if let Some(t) = c.timeout_seconds {
            o.health_timeout = std::time::Duration::from_secs(t);
        }
        Some(o)
    }

    /// The target connection (to the target database).
    pub fn target(&self, source: &ConnSpec) -> Result<ConnSpec, UserError> {
        let db = self.target_database(source);
        let spec = match (&self.target.connection, self.container_options()) {
            (Some(c), _) => ConnSpec::parse("target", c)?,
            (None, Some(o)) => o.target()?,
            (None, None) => unreachable!("checked when the plan was read"),
        };
        Ok(spec.with_dbname(&db))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compression_picks_what_the_pg_dump_can() {
        use super::Compression;
        assert_eq!(Compression::Auto.pg_dump_arg(17).unwrap(), "--compress=lz4");
        assert_eq!(Compression::Auto.pg_dump_arg(15).unwrap(), "--compress=1");
        assert_eq!(Compression::Gzip.pg_dump_arg(17).unwrap(), "--compress=gzip:1");
        assert_eq!(Compression::None.pg_dump_arg(12).unwrap(), "--compress=0");
        let e = Compression::Zstd.pg_dump_arg(15).unwrap_err();
        assert!(e.contains("pg_dump 15") && e.contains("zstd"), "{e}");
    }

    use super::*;

    const GOOD: &str = r#"
[source]
connection = "postgresql://postgres@127.0.0.1:5432/EcoAnP"

[target.container]
name = "tsdb"
port = 55433

[[hypertables]]
table = "energy.meter"
time_column = "taken_at"

[[allow]]
class = "hypertables"
name = "energy.meter"
reason = "converted by the plan"
"#;

    #[test]
    fn a_plan_reads_with_defaults() {
        let p = Plan::parse(GOOD).unwrap();
        assert_eq!(p.data.jobs, default_jobs());
        assert!(names_database("postgresql://u@h:5432/app") && names_database("host=h dbname=app"));
        assert!(!names_database("postgresql://u@h:5432") && !names_database("postgresql://u@h/?sslmode=disable"));
        assert!(p.verify.checksums);
        assert_eq!(p.backup.dir, PathBuf::from("backups"));
        assert_eq!(p.container_options().unwrap().port, 55433);
        let src = p.source().unwrap();
        assert_eq!(p.target_database(&src), "EcoAnP");
        assert_eq!(p.hypertables[0].time_column, "taken_at");
    }

    #[test]
    fn mistakes_name_their_line_and_fix() {
        let e = Plan::parse(&GOOD.replace("port = 55433", "port = \"high\"")).unwrap_err();
        assert!(e.message.starts_with("line 7:"), "{e}");
        let e = Plan::parse(&GOOD.replace("time_column", "time_col")).unwrap_err();
        assert!(e.message.contains("line 11") && e.message.contains("unknown field"), "{e}");
        let e = Plan::parse("[source]\nconnection = \"host=h\"\n[target]\n").unwrap_err();
        assert!(e.message.contains("[target] needs exactly one"), "{e}");
        let e = Plan::parse(&GOOD.replace("class = \"hypertables\"", "class = \"hypertabels\"")).unwrap_err();
        assert!(e.message.contains("unknown class"), "{e}");
    }
}

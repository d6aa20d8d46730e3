//! Stage 1 — Backup: the source inventory and every dump, all read at one exported snapshot.
//!
//! Files in the run directory:
//! - `full.dump`   `pg_dump -Fc`: every row, owners and privileges kept, for selective restore
//!   (compressed with lz4 where pg_dump can; `[backup] compression`)
//! - `schema.sql`  `pg_dump --schema-only --no-owner --no-privileges` (the classic runbook's; optional)
//! - `data.sql`    `pg_dump --data-only --no-owner --no-privileges` (only with `[backup] data_sql`)
//! - `roles.sql`   `pg_dumpall --roles-only` (passwords only when asked)
//! - `after-data.sql` owners, privileges and materialized view refreshes read back from `full.dump`
//! - `inventory.json` the source inventory; `manifest.json` sizes, sha256, versions, times (last)
//!
//! Each file is written as `NAME.partial` and renamed when its tool succeeded; on failure or cancel
//! the partial files are removed and no manifest is written.

pub mod after_data;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::catalog::rows::RowMode;
use crate::catalog::{self, Class, Inventory, Session};
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::files::{self, partial_path, write_atomic, write_error};
use crate::human::human_bytes;
use crate::pgtools::manifest::{Manifest, ManifestFile, SourceInfo, FULL_ARCHIVE, MANIFEST_FILE, SCHEMA_ARCHIVE};
use crate::pgtools::process::{run_tool, Collect, LineClass, Sink, ToolCommand};
use crate::pgtools::tools::{find_tools, Tool};
use crate::plan::Compression;
use crate::postgres::conn::ConnSpec;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Where to look for pg_dump and friends instead of searching.
    pub bin_dir: Option<PathBuf>,
    /// Keep role passwords (hashes) in roles.sql.
    pub role_passwords: bool,
    /// Count every table's rows for the inventory (reads every table once more).
    pub row_counts: bool,
    /// Dumps run at the same time.
    pub jobs: usize,
    /// Write the split `schema.sql` (schema) and `data.sql` (every row once more, as SQL).
    pub schema_sql: bool,
    pub data_sql: bool,
    /// How `full.dump` is compressed.
    pub compression: Compression,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            bin_dir: None,
            role_passwords: false,
            row_counts: true,
            jobs: 2,
            schema_sql: true,
            data_sql: false,
            compression: Compression::Auto,
        }
    }
}

#[derive(Debug, Clone)]
struct Tools {
    pg_dump: Tool,
    pg_dumpall: Tool,
    pg_restore: Tool,
}

pub struct BackupStage {
    source: ConnSpec,
    options: BackupOptions,
    tools: Mutex<Option<Tools>>,
    /// An online migration's slot, whose snapshot the backup reads at.
    online: Option<crate::online::OnlineSlot>,
}

impl BackupStage {
    pub fn new(source: ConnSpec, options: BackupOptions) -> Self {
        Self { source, options, tools: Mutex::new(None), online: None }
    }

    /// Reads at the online migration's slot snapshot (made by the first reader).
    pub fn with_online(mut self, slot: crate::online::OnlineSlot) -> Self {
        self.online = Some(slot);
        self
    }

    async fn find_tools(&self, ctx: &StageContext) -> Result<Tools, UserError> {
        if let Some(t) = self.tools.lock().expect("tools lock").clone() {
            return Ok(t);
        }
        let client = ctx.tagged(&self.source).connect().await?;
        let num: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| {
                UserError::new(
                    format!(
                        "source {}: cannot read the server version ({})",
                        self.source.label(),
                        catalog::db_message(&e)
                    ),
                    "check that the connection reaches a PostgreSQL server",
                )
            })?
            .get(0);
        let major = (num / 10000) as u32;
        let found =
            find_tools(&["pg_dump", "pg_dumpall", "pg_restore"], self.options.bin_dir.as_deref(), major).await?;
        let tools = Tools { pg_dump: found[0].clone(), pg_dumpall: found[1].clone(), pg_restore: found[2].clone() };
        ctx.info(
            "tools",
            format!(
                "using pg_dump {} from {} for PostgreSQL {major}",
                tools.pg_dump.version,
                tools.pg_dump.path.display()
            ),
        )
        .await;
        *self.tools.lock().expect("tools lock") = Some(tools.clone());
        Ok(tools)
    }

    async fn backup(&self, ctx: &StageContext, dir: &Path) -> Result<String, StageError> {
        let started_at = chrono::Utc::now();
        let started = Instant::now();
        let tools = self.find_tools(ctx).await?;
        let source = ctx.tagged(&self.source);

        let read = async {
            ctx.info("inventory", "reading the source catalog at one snapshot (the dumps share it)").await;
            let session = match &self.online {
                Some(slot) => {
                    let snapshot = slot.snapshot(dir).await?;
                    ctx.info("inventory", "reading at the online slot's snapshot: the changes after it are streamed")
                        .await;
                    Session::open_exactly_at(&source, &snapshot).await?
                }
                None => Session::open(&source).await?,
            };
            let inv = session.inventory().await?;
            let owners = session.strings("owners", &after_data::owner_statements_sql()).await?;
            Ok::<_, UserError>((session, inv, owners))
        };
        // catalog queries do not watch the cancel token: race them against it (dropping them
        // closes their connections; the engine then ends their server sessions)
        let (session, mut inv, owners) = tokio::select! {
            r = read => r?,
            _ = ctx.cancel_token().cancelled() => return Err(StageError::Cancelled),
        };
        let snapshot = session.snapshot().map(str::to_string);
        if snapshot.is_none() {
            ctx.warning(
                "the server exported no snapshot (a standby before PostgreSQL 10?): the dumps and the inventory \
                 may each show a different moment; stop writes to the source during the backup",
            )
            .await;
        }

        let estimate: u64 = inv.tables.iter().map(|t| t.bytes.max(0) as u64).sum();
        let copies = if self.options.data_sql { "twice (data.sql, full.dump)" } else { "once (full.dump)" };
        if let Some(free) = files::free_bytes(dir) {
            if free < estimate.saturating_mul(if self.options.data_sql { 2 } else { 1 }) {
                ctx.warning(format!(
                    "{} free in {}; the data is about {} on disk and is dumped {copies}",
                    human_bytes(free),
                    dir.display(),
                    human_bytes(estimate)
                ))
                .await;
            }
        }

        // tables whose rows pg_dump writes (a materialized view's are not data to it)
        let user_tables: BTreeSet<String> = inv
            .tables
            .iter()
            .filter(|t| t.kind != "materialized view" && t.kind != "continuous aggregate")
            .map(|t| t.name.replace('"', ""))
            .collect();
        let has_timescaledb = inv.timescaledb.is_some();
        let (head, tail) = self.dumps(&tools, &source, snapshot.as_deref(), estimate)?;
        let table_count = user_tables.len() as u64;
        let dump_all = |dumps: Vec<Dump>| {
            futures_util::stream::iter(dumps)
                .map(|d| run_dump(ctx, dir, d, &user_tables, table_count, has_timescaledb))
                .buffer_unordered(self.options.jobs.max(1))
                .try_collect::<Vec<ManifestFile>>()
        };
        // first what the later stages need: the schema archive, the roles, the inventory; then a
        // manifest of what is here so far, and the next stages may start while the rows are dumped
        let mut written = dump_all(head).await?;
        let inventory_path = dir.join(crate::engine::run_files::INVENTORY);
        let write_inventory = |inv: &Inventory| {
            let json = serde_json::to_string_pretty(inv).expect("inventory serializes");
            write_atomic(&inventory_path, json.as_bytes()).map_err(|e| write_error(&inventory_path, &e))
        };
        write_inventory(&inv)?;
        let mut so_far = written.clone();
        so_far.push(file_entry(dir, crate::engine::run_files::INVENTORY, INVENTORY_CONTENT, None)?);
        self.write_manifest(dir, &inv, &tools, snapshot.clone(), so_far, None)?;
        ctx.release();

        // the inventory's row counts read at the same snapshot, beside the dumps of the rows
        let counting = async {
            if !self.options.row_counts {
                return Ok(None);
            }
            let jobs = catalog::row_jobs(&inv);
            let chunks = jobs.len() - inv.tables.iter().filter(|t| t.parts.is_empty()).count();
            let parts =
                if chunks > 0 { format!(" (hypertables chunk by chunk: {chunks} chunks)") } else { String::new() };
            ctx.info("inventory", format!("counting rows of {} tables{parts}, beside the dumps", inv.tables.len()))
                .await;
            let counted = std::sync::Arc::new(crate::catalog::rows::RowProgress::default());
            let read = || {
                let (done, total, _) = counted.get();
                (done, Some(total))
            };
            let measure = session.measure_rows(jobs, RowMode::Count, 1, Some(counted.clone()));
            let counting = ctx.metered("tables counted", Unit::Tables, read, measure);
            tokio::select! {
                r = counting => r.map(Some).map_err(StageError::from),
                _ = ctx.cancel_token().cancelled() => Err(StageError::Cancelled),
            }
        };
        let (rows_written, counts) = tokio::join!(dump_all(tail), counting);
        written.extend(rows_written?);
        let counts = counts?;
        let counted = counts.is_some();
        if let Some(counts) = counts {
            inv.apply_rows(&counts);
        }
        let objects: usize = inv.objects.values().map(|d| d.len()).sum();
        ctx.info(
            "inventory",
            format!(
                "{objects} objects in {} classes, {} tables ({})",
                inv.objects.len(),
                inv.tables.len(),
                rows_text(&inv)
            ),
        )
        .await;
        if counted {
            write_inventory(&inv)?;
        }
        session.close().await;

        // after-data.sql: owners (read above at the snapshot), and the archive's privilege and
        // materialized view entries, chosen from its table of contents and printed by pg_restore
        let archive = dir.join(FULL_ARCHIVE);
        let mut toc = Collect::default();
        let list_cmd = restore_command(&tools.pg_restore, &archive, ["--list"]);
        run_tool(ctx, &list_cmd, &mut toc, &mut |_| LineClass::Plain).await?;
        let toc = String::from_utf8_lossy(&toc.0).into_owned(); // entries are chosen by their number
        let (selected, selected_count) = after_data::select_entries(&toc);
        let list_file = files::temp_file("pgshift-list-", selected.as_bytes())?;
        let mut restored = Collect::default();
        let use_list = format!("--use-list={}", list_file.path().display());
        let cmd = restore_command(&tools.pg_restore, &archive, [use_list.as_str(), "--file=-"]);
        run_tool(ctx, &cmd, &mut restored, &mut |_| LineClass::Plain).await?;
        let after_path = dir.join("after-data.sql");
        let text = after_data::assemble(&owners, &restored.0);
        write_atomic(&after_path, &text).map_err(|e| write_error(&after_path, &e))?;
        ctx.info(
            "after-data.sql",
            format!(
                "archive holds {} entries; after-data.sql: {} owner statements, {selected_count} privilege and \
                 materialized view entries",
                after_data::entry_count(&toc),
                owners.len(),
            ),
        )
        .await;

        written.push(file_entry(
            dir,
            "after-data.sql",
            "owners, privileges, materialized view refreshes from full.dump; run after the data",
            Some(cmd.display()),
        )?);
        written.push(file_entry(dir, crate::engine::run_files::INVENTORY, INVENTORY_CONTENT, None)?);
        let manifest = self.write_manifest(dir, &inv, &tools, snapshot, written, Some((started_at, started)))?;
        let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        Ok(format!("{} files, {} in {}", manifest.files.len() + 1, human_bytes(total), dir.display()))
    }

    /// Writes `manifest.json` listing `files`: complete when `timing` (the backup's start) is
    /// given, else the early one the later stages read while the rows are still being dumped.
    fn write_manifest(
        &self,
        dir: &Path,
        inv: &Inventory,
        tools: &Tools,
        snapshot: Option<String>,
        mut files: Vec<ManifestFile>,
        timing: Option<(chrono::DateTime<chrono::Utc>, Instant)>,
    ) -> Result<Manifest, UserError> {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let extensions: BTreeMap<String, String> = inv
            .class(Class::Extensions)
            .iter()
            .map(|(name, def)| {
                let version = def.strip_prefix("version ").and_then(|v| v.split(',').next()).unwrap_or(def);
                (name.clone(), version.to_string())
            })
            .collect();
        let now = chrono::Utc::now();
        let (started_at, duration_ms) = match timing {
            Some((at, started)) => (at, started.elapsed().as_millis() as u64),
            None => (now, 0),
        };
        let manifest = Manifest {
            pgshift_version: env!("CARGO_PKG_VERSION").into(),
            complete: timing.is_some(),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            finished_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            duration_ms,
            source: SourceInfo {
                connection: self.source.label(),
                database: inv.server.database.clone(),
                server_version: inv.server.version.clone(),
                server_version_num: inv.server.version_num,
                timescaledb: inv.timescaledb.clone(),
                extensions,
            },
            snapshot,
            role_passwords: self.options.role_passwords,
            tools: vec![tools.pg_dump.clone(), tools.pg_dumpall.clone(), tools.pg_restore.clone()],
            files,
        };
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        write_atomic(&manifest_path, text.as_bytes()).map_err(|e| write_error(&manifest_path, &e))?;
        Ok(manifest)
    }
}

const INVENTORY_CONTENT: &str = "the source inventory: every object with its definition, row counts";

/// A file of the backup as the manifest lists it: its size and sha256 read back from the disk.
fn file_entry(dir: &Path, name: &str, content: &str, command: Option<String>) -> Result<ManifestFile, UserError> {
    let path = dir.join(name);
    let (bytes, sha256) = files::sha256_file(&path).map_err(|e| write_error(&path, &e))?;
    Ok(ManifestFile { name: name.into(), content: content.into(), bytes, sha256, command })
}

impl BackupStage {
    /// pg_dump's `--compress` for `full.dump`, refused when the pg_dump found cannot do it.
    fn compress_arg(&self, tools: &Tools) -> Result<String, UserError> {
        self.options
            .compression
            .pg_dump_arg(tools.pg_dump.major)
            .map_err(|e| UserError::new(e, "set [backup] compression = \"auto\" (or install pg_dump 16 or later)"))
    }

    /// The dumps the plan asks for, all reading `snapshot`: first (head) what the later stages need
    /// — `schema.dump`, `roles.sql` and the split `schema.sql` when asked — then (tail) the rows:
    /// `full.dump`, and `data.sql` when asked.
    fn dumps(
        &self,
        tools: &Tools,
        source: &ConnSpec,
        snapshot: Option<&str>,
        estimate: u64,
    ) -> Result<(Vec<Dump>, Vec<Dump>), UserError> {
        let snapshot_args: Vec<String> = snapshot.iter().map(|s| format!("--snapshot={s}")).collect();
        let compress = self.compress_arg(tools)?;
        let mut head = vec![Dump {
            file: SCHEMA_ARCHIVE,
            content: "the schema with owners and privileges: pg_dump --format=custom --schema-only (the schema \
                      stage restores from it while full.dump is written)",
            cmd: ToolCommand::new("pg_dump schema.dump", &tools.pg_dump.path, source)
                .args(["--format=custom", "--schema-only", "--verbose", "--no-password"])
                .args(snapshot_args.clone()),
            estimate: None,
        }];
        // the classic runbook's split dumps: `pg_dump ONLY --no-owner --no-privileges`
        let split = |file: &'static str, only: &str, content: &'static str, estimate: Option<u64>| Dump {
            file,
            content,
            cmd: ToolCommand::new(format!("pg_dump {file}"), &tools.pg_dump.path, source)
                .args([only, "--no-owner", "--no-privileges", "--verbose", "--no-password"])
                .args(snapshot_args.clone()),
            estimate,
        };
        if self.options.schema_sql {
            head.push(split(
                "schema.sql",
                "--schema-only",
                "schema: pg_dump --schema-only --no-owner --no-privileges",
                None,
            ));
        }
        // --database: the database to connect to for the roles (default postgres), which the role
        // may not be allowed to connect to
        let mut roles_args = vec![
            "--roles-only".to_string(),
            "--verbose".into(),
            "--no-password".into(),
            format!("--database={}", self.source.dbname()),
        ];
        if !self.options.role_passwords {
            roles_args.push("--no-role-passwords".into());
        }
        head.push(Dump {
            file: "roles.sql",
            content: if self.options.role_passwords {
                "roles and memberships with password hashes: pg_dumpall --roles-only"
            } else {
                "roles and memberships, no passwords: pg_dumpall --roles-only --no-role-passwords"
            },
            cmd: ToolCommand::new("pg_dumpall roles.sql", &tools.pg_dumpall.path, source).args(roles_args),
            estimate: None,
        });
        let mut tail = vec![Dump {
            file: FULL_ARCHIVE,
            content: "everything with owners and privileges: pg_dump --format=custom",
            cmd: ToolCommand::new("pg_dump full.dump", &tools.pg_dump.path, source)
                .args(["--format=custom", "--verbose", "--no-password", compress.as_str()])
                .args(snapshot_args.clone()),
            estimate: Some(if self.options.compression == Compression::None { estimate } else { estimate / 3 }),
        }];
        if self.options.data_sql {
            tail.push(split(
                "data.sql",
                "--data-only",
                "data: pg_dump --data-only --no-owner --no-privileges",
                Some(estimate),
            ));
        }
        Ok((head, tail))
    }
}

impl Stage for BackupStage {
    fn id(&self) -> &'static str {
        "backup"
    }

    /// Once the schema archive, the roles and the inventory are written, the stages up to the data
    /// run while the rows are dumped; post-data starts only once the backup is complete.
    fn beside_until(&self) -> Option<&'static str> {
        Some("post-data")
    }

    fn title(&self) -> &'static str {
        "Backup: inventory, pg_dump archive and schema, roles, manifest"
    }

    fn preflight<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            let tools = self.find_tools(ctx).await?;
            self.compress_arg(&tools)?;
            for w in self.password_warnings().await? {
                ctx.warning(w).await;
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let dir = ctx.run_dir().map(Path::to_path_buf).ok_or_else(|| {
                UserError::new("the backup stage has no directory to write to", "give --dir (or the plan's backup dir)")
            })?;
            let result = self.backup(ctx, &dir).await;
            if result.is_err() {
                remove_partials(&dir);
            }
            result
        })
    }
}

impl BackupStage {
    /// What the pre-flight says about passwords before anything is written: the login roles whose
    /// passwords the plan will not carry (they could not log in on the target), or, when it does,
    /// the MD5 hashes it carries. Never a hash itself.
    async fn password_warnings(&self) -> Result<Vec<String>, UserError> {
        let client = self.source.connect().await?;
        let q = |e: tokio_postgres::Error| {
            UserError::new(format!("pre-flight query failed: {}", catalog::db_message(&e)), "connect as a superuser")
        };
        let readable: bool = client.query_one(catalog::queries::PASSWORDS_READABLE, &[]).await.map_err(q)?.get(0);
        if !readable {
            return Ok(vec![format!(
                "cannot tell which login roles have passwords ({} may not read pg_authid): roles.sql {}",
                self.source.label(),
                if self.options.role_passwords { "carries what pg_dumpall may read" } else { "carries none" }
            )]);
        }
        let rows = client.query(&catalog::queries::role_passwords(), &[]).await.map_err(q)?;
        let with: Vec<(String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).filter(|(_, kind): &(String, String)| kind != "none").collect();
        Ok(password_warnings(&with, self.options.role_passwords))
    }
}

/// The warnings for login roles with passwords, (role, kind), given whether the plan carries them.
fn password_warnings(with: &[(String, String)], carried: bool) -> Vec<String> {
    let names = |kind: Option<&str>| -> Vec<&str> {
        with.iter().filter(|(_, k)| kind.is_none_or(|kind| k == kind)).map(|(n, _)| n.as_str()).collect()
    };
    let mut w = Vec::new();
    if !carried && !with.is_empty() {
        w.push(format!(
            "login role(s) with a password that this plan will not carry: {} — they cannot log in on the target \
             with it (fix: set [backup] role_passwords = true in the plan (pgshift backup: --role-passwords), \
             or set their passwords on the target after the run)",
            names(None).join(", ")
        ));
    }
    let md5 = names(Some("MD5"));
    if carried && !md5.is_empty() {
        w.push(format!(
            "login role(s) with an MD5 password hash, carried as it is: {} — MD5 passwords are deprecated \
             (PostgreSQL 18 warns on them; fix: set them again with password_encryption = scram-sha-256)",
            md5.join(", ")
        ));
    }
    w
}

struct Dump {
    file: &'static str,
    content: &'static str,
    cmd: ToolCommand,
    /// Expected size, for a progress total (an estimate: on-disk size of the tables).
    estimate: Option<u64>,
}

async fn run_dump(
    ctx: &StageContext,
    dir: &Path,
    dump: Dump,
    user_tables: &BTreeSet<String>,
    table_count: u64,
    has_timescaledb: bool,
) -> Result<ManifestFile, StageError> {
    let path = dir.join(dump.file);
    let mut sink = FileSink::create(ctx, &path, dump.estimate)?;
    let mut tables_done = 0u64;
    let mut circular = false;
    let item = format!("{} tables", dump.file);
    let mut classify = |line: &str| -> LineClass {
        let body = line.split_once(": ").map(|(_, b)| b).unwrap_or(line);
        if let Some(table) = body.strip_prefix("dumping contents of table ") {
            let table = table.trim_matches('"').replace('"', "");
            if user_tables.contains(&table) {
                tables_done += 1;
                return LineClass::Progress {
                    item: item.clone(),
                    done: tables_done,
                    total: Some(table_count),
                    unit: Unit::Tables,
                };
            }
            return LineClass::Plain;
        }
        if body.starts_with("warning: there are circular foreign-key constraints") {
            circular = true;
            return LineClass::Plain;
        }
        if circular {
            if let Some(table) = body.strip_prefix("detail: ") {
                circular = false;
                let internal = ["hypertable", "chunk", "continuous_agg", "dimension", "chunk_constraint"];
                if has_timescaledb && internal.contains(&table.trim()) {
                    return LineClass::Plain; // TimescaleDB's own catalog: known noise
                }
                return LineClass::Warning(format!(
                    "{}: circular foreign keys on {}: load data.sql with triggers disabled (session_replication_role = replica)",
                    dump.file,
                    table.trim()
                ));
            }
        }
        if body.starts_with("warning:") {
            return LineClass::Warning(format!("{}: {body}", dump.file));
        }
        LineClass::Plain
    };
    run_tool(ctx, &dump.cmd, &mut sink, &mut classify).await?;
    let (bytes, sha256) = sink.finish()?;
    ctx.progress(dump.file, bytes, Some(bytes), Unit::Bytes).await;
    ctx.info(dump.file, format!("{} written, sha256 {}", human_bytes(bytes), &sha256[..16])).await;
    Ok(ManifestFile {
        name: dump.file.into(),
        content: dump.content.into(),
        bytes,
        sha256,
        command: Some(dump.cmd.display()),
    })
}

/// Writes a tool's stdout to `NAME.partial`, hashing and counting as it goes; `finish` syncs it
/// and renames it to `NAME`.
struct FileSink<'a> {
    ctx: &'a StageContext,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
    estimate: Option<u64>,
    item: String,
    last_progress: Instant,
}

impl<'a> FileSink<'a> {
    fn create(ctx: &'a StageContext, path: &Path, estimate: Option<u64>) -> Result<Self, UserError> {
        let partial = partial_path(path);
        let file = files::create_private(&partial).map_err(|e| write_error(&partial, &e))?;
        Ok(Self {
            ctx,
            path: path.to_path_buf(),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
            estimate,
            item: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            last_progress: Instant::now(),
        })
    }

    fn finish(mut self) -> Result<(u64, String), UserError> {
        let partial = partial_path(&self.path);
        self.file.flush().map_err(|e| write_error(&partial, &e))?;
        self.file.get_ref().sync_all().map_err(|e| write_error(&partial, &e))?;
        std::fs::rename(&partial, &self.path).map_err(|e| write_error(&self.path, &e))?;
        files::sync_dir(&self.path).map_err(|e| write_error(&self.path, &e))?;
        Ok((self.bytes, files::hex(&self.hasher.finalize())))
    }
}

impl Sink for FileSink<'_> {
    fn chunk(&mut self, data: &[u8]) -> Result<(), UserError> {
        self.file.write_all(data).map_err(|e| write_error(&partial_path(&self.path), &e))?;
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        if self.last_progress.elapsed() >= Duration::from_millis(200) {
            self.last_progress = Instant::now();
            let total = self.estimate.map(|e| e.max(self.bytes));
            self.ctx.try_progress(&self.item, self.bytes, total, Unit::Bytes);
        }
        Ok(())
    }
}

/// `pg_restore ARGS` reading `archive` on its standard input; it connects nowhere.
fn restore_command<'a>(tool: &Tool, archive: &Path, args: impl IntoIterator<Item = &'a str>) -> ToolCommand {
    ToolCommand {
        label: "pg_restore full.dump".into(),
        program: tool.path.clone(),
        args: args.into_iter().map(String::from).collect(),
        env: Vec::new(),
        stdin: Some(archive.to_path_buf()),
    }
}

/// Removes the `.partial` files of a failed or cancelled backup (they could pass for complete), and
/// the early manifest it may have written.
fn remove_partials(dir: &Path) {
    if Manifest::load(dir).is_ok_and(|m| !m.complete) {
        let _ = std::fs::remove_file(dir.join(MANIFEST_FILE));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn rows_text(inv: &Inventory) -> String {
    let counted: Vec<i64> = inv.tables.iter().filter_map(|t| t.rows).collect();
    if counted.is_empty() {
        "rows not counted".into()
    } else {
        format!("{} rows", counted.iter().sum::<i64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_the_plan_does_not_carry_are_named_and_md5_is_flagged_when_carried() {
        let with = [("app".to_string(), "SCRAM-SHA-256".to_string()), ("legacy".to_string(), "MD5".to_string())];
        let w = password_warnings(&with, false);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("app, legacy") && w[0].contains("role_passwords = true"), "{w:?}");
        let w = password_warnings(&with, true);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("MD5") && w[0].contains("legacy") && !w[0].contains("app"), "{w:?}");
        assert!(password_warnings(&[], false).is_empty());
    }
}

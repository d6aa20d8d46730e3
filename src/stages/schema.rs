//! Stage 3 — roles and schema before the data; and stage 5 — indexes, constraints, triggers,
//! policies, privileges and materialized views after it.
//!
//! Roles come from `roles.sql` through psql. The schema comes from the backup's schema archive
//! (`schema.dump`, written first, while the backup goes on dumping the rows), what follows the data
//! from its full archive (`full.dump`, complete by then), owners and privileges kept, through
//! pg_restore, entry by entry from their table of contents: TimescaleDB's internals (chunks, catalog) are left out and hypertables are recreated
//! with `create_hypertable` instead, so nothing depends on the TimescaleDB version. pg_restore
//! reports each failing entry; failed entries are retried after the rest (dependency order: a view
//! over a view, a policy whose function comes later), and what still fails is reported with a hint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures_util::future::BoxFuture;

use crate::catalog;
use crate::catalog::security_labels;
use crate::catalog::server::check_server;
use crate::catalog::tablespaces;
use crate::engine::{Stage, StageContext, StageError, Unit};
use crate::error::UserError;
use crate::files::{self, write_atomic, write_error};
use crate::pgtools::build_phases;
use crate::pgtools::manifest::{Manifest, FULL_ARCHIVE, SCHEMA_ARCHIVE};
use crate::pgtools::process::{libpq_env, run_tool, run_tool_status, Collect, Discard, LineClass, ToolCommand};
use crate::pgtools::toc::{self, Entry, FailureLog};
use crate::plan::{HypertablePlan, Tablespaces};
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::{quote_ident, quote_literal};
use crate::timescaledb;

const MAX_ROUNDS: usize = 5;

/// What a stage restores from the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The schema before the data, and the roles: `schema.dump` (written first; the backup may
    /// still be dumping the rows), or `full.dump` in a backup made before it existed.
    Schema,
    /// Everything after the data: `full.dump`, from a complete backup.
    Everything,
}

/// The backup files this stage restores from, found in the run directory.
struct Backup {
    dir: PathBuf,
    pg_restore: PathBuf,
    psql: PathBuf,
    /// The archive pg_restore reads.
    archive: PathBuf,
    /// `[target] tablespaces = "default"`: every entry restored with `--no-tablespaces`.
    no_tablespaces: bool,
}

impl Backup {
    fn open(ctx: &StageContext, need: Need) -> Result<Self, UserError> {
        let dir = ctx.run_dir().ok_or_else(|| UserError::new("no run directory", "run through pgshift run"))?;
        let manifest = Manifest::load(dir)?;
        if need == Need::Everything && !manifest.complete {
            return Err(UserError::new(
                format!("the backup in {} is not complete (its rows were still being dumped)", dir.display()),
                "run again: the backup stage runs again first",
            ));
        }
        let has = |name: &str| manifest.files.iter().any(|f| f.name == name);
        let archive = if need == Need::Schema && has(SCHEMA_ARCHIVE) { SCHEMA_ARCHIVE } else { FULL_ARCHIVE };
        // an early manifest vouches for what was written first; a complete one for everything
        let problems = if manifest.complete {
            manifest.check(dir)
        } else {
            manifest.check_only(dir, |name| name == archive || name == "roles.sql")
        };
        if !problems.is_empty() {
            return Err(UserError::new(
                format!("the backup in {} does not match its manifest: {}", dir.display(), problems.join("; ")),
                "run again with --restart to take a new backup",
            ));
        }
        if !has(archive) {
            return Err(UserError::new(
                format!("the backup in {} holds no {archive}", dir.display()),
                "run again with --restart to take a new backup",
            ));
        }
        let pg_restore = manifest
            .tools
            .iter()
            .find(|t| t.name == "pg_restore")
            .map(|t| t.path.clone())
            .ok_or_else(|| UserError::new("the manifest names no pg_restore", "run again with --restart"))?;
        let psql = pg_restore.with_file_name("psql");
        if !psql.exists() {
            return Err(UserError::new(
                format!("no psql beside {}", pg_restore.display()),
                "install the PostgreSQL client package completely (psql comes with pg_restore)",
            ));
        }
        Ok(Self { dir: dir.to_path_buf(), pg_restore, psql, archive: dir.join(archive), no_tablespaces: false })
    }

    fn placing(mut self, tablespaces: Tablespaces) -> Self {
        self.no_tablespaces = tablespaces == Tablespaces::Default;
        self
    }

    /// The pg_restore arguments every restore of an entry takes.
    fn restore_args(&self) -> Vec<String> {
        if self.no_tablespaces {
            vec!["--no-tablespaces".into()]
        } else {
            Vec::new()
        }
    }

    fn archive(&self) -> PathBuf {
        self.archive.clone()
    }
}

async fn list_section(ctx: &StageContext, backup: &Backup, section: &str) -> Result<Vec<Entry>, StageError> {
    let mut out = Collect::default();
    let cmd = ToolCommand {
        label: "pg_restore --list".into(),
        program: backup.pg_restore.clone(),
        args: vec!["--list".into(), format!("--section={section}")],
        env: Vec::new(),
        stdin: Some(backup.archive()),
    };
    run_tool(ctx, &cmd, &mut out, &mut |_| LineClass::Plain).await?;
    Ok(toc::parse_list(&String::from_utf8_lossy(&out.0)))
}

/// Entries pgshift restores from the archive: not data, not TimescaleDB's internals, not the views
/// of continuous aggregates (the TimescaleDB stage creates those through TimescaleDB's API), not
/// this run's online publication (named in the run directory's `online.json`).
fn restorable(ctx: &StageContext, entries: Vec<Entry>, caggs: &BTreeSet<String>) -> Vec<Entry> {
    let own = ctx.run_dir().and_then(crate::online::slot::OnlineState::load).map(|s| s.publication);
    entries
        .into_iter()
        .filter(|e| !e.is_data() && !e.is_timescaledb_internal())
        .filter(|e| own.as_deref().is_none_or(|p| !e.is_publication(p)))
        .filter(|e| {
            let name = e.rest.rsplit_once(' ').map(|(n, _)| n).unwrap_or(&e.rest);
            !(e.kind == "VIEW" && caggs.contains(&format!("{}.{name}", e.schema)))
        })
        // created by create_hypertable on the target
        .filter(|e| !(e.kind == "TRIGGER" && e.rest.contains(" ts_insert_blocker ")))
        .collect()
}

/// An entry about a continuous aggregate's view (its grants, comments, security labels).
fn on_aggregate(e: &Entry, caggs: &BTreeSet<String>) -> bool {
    if !matches!(e.kind.as_str(), "ACL" | "COMMENT" | "SECURITY LABEL") {
        return false;
    }
    let mut words = e.rest.split_whitespace();
    let (_, name) = (words.next(), words.next().unwrap_or(""));
    let name = name.split('.').next().unwrap_or(name);
    caggs.contains(&format!("{}.{name}", e.schema))
}

/// The source's continuous aggregate views (`schema.name`).
async fn cagg_views(source: &ConnSpec) -> Result<BTreeSet<String>, UserError> {
    let client = source.connect().await?;
    let f = timescaledb::read_features(&client).await?;
    Ok(f.continuous_aggregates.into_iter().map(|a| a.view).collect())
}

/// One pg_restore run over `entries` into `target`; returns the entries that failed, with errors.
async fn restore_round(
    ctx: &StageContext,
    backup: &Backup,
    target: &ConnSpec,
    entries: &[&Entry],
    label: &str,
    pgoptions: Option<&str>,
) -> Result<Vec<(Entry, String)>, StageError> {
    let list = files::temp_file("pgshift-restore-", toc::list_file_text(entries).as_bytes())?;
    let cmd = ToolCommand {
        label: label.into(),
        program: backup.pg_restore.clone(),
        args: [
            format!("--dbname={}", target.dbname()),
            "--no-password".into(),
            "--verbose".into(),
            format!("--use-list={}", list.path().display()),
        ]
        .into_iter()
        .chain(backup.restore_args())
        .collect(),
        env: libpq_env(target).into_iter().chain(pgoptions.map(|o| ("PGOPTIONS".to_string(), o.to_string()))).collect(),
        stdin: Some(backup.archive()),
    };
    let mut log = FailureLog::default();
    // entries done of the round's, from pg_restore's --verbose line per entry it takes up
    let total = entries.len() as u64;
    let mut done = 0u64;
    ctx.progress(label, 0, Some(total), Unit::Steps).await;
    let exit = run_tool_status(ctx, &cmd, &mut Discard, &mut |line| {
        log.line(line);
        if ["creating ", "executing ", "processing "]
            .iter()
            .any(|w| line.trim_start_matches("pg_restore: ").starts_with(w))
        {
            done = (done + 1).min(total);
            ctx.try_progress(label, done, Some(total), Unit::Steps);
        }
        LineClass::Plain
    })
    .await?;
    ctx.progress(label, total, Some(total), Unit::Steps).await;
    // a failure tied to no entry (lost connection, unreadable archive) fails the round
    if let crate::pgtools::process::ToolExit::Failed(e) = exit {
        if log.failures.is_empty() {
            return Err(StageError::Failed(e));
        }
    }
    Ok(entries
        .iter()
        .filter_map(|e| log.failures.get(&e.id).map(|err| ((*e).clone(), err.clone())))
        // an object left by an earlier, interrupted run of this stage is there: that is success
        .filter(|(_, err)| !err.contains("already exists"))
        .collect())
}

/// Restores `entries`, then retries the failed ones (in their order) while a round makes progress.
async fn restore_with_retries(
    ctx: &StageContext,
    backup: &Backup,
    target: &ConnSpec,
    entries: Vec<Entry>,
    what: &str,
    pgoptions: Option<&str>,
) -> Result<Vec<(Entry, String)>, StageError> {
    let total = entries.len();
    let refs: Vec<&Entry> = entries.iter().collect();
    let mut failed = restore_round(ctx, backup, target, &refs, &format!("pg_restore {what}"), pgoptions).await?;
    ctx.info(what, format!("{} of {total} entries restored, {} failed", total - failed.len(), failed.len())).await;
    for round in 2..=MAX_ROUNDS {
        if failed.is_empty() {
            break;
        }
        let retry: Vec<&Entry> = failed.iter().map(|(e, _)| e).collect();
        let again =
            restore_round(ctx, backup, target, &retry, &format!("pg_restore {what} (retry {round})"), pgoptions)
                .await?;
        ctx.info(
            what,
            format!(
                "retry {round}: {} of {} restored now (dependency order)",
                failed.len() - again.len(),
                failed.len()
            ),
        )
        .await;
        let progress = again.len() < failed.len();
        failed = again;
        if !progress {
            break;
        }
    }
    Ok(failed)
}

/// pg_dump writes `ALTER TABLE ONLY t ADD CONSTRAINT ...`; TimescaleDB refuses ONLY on a hypertable
/// (the constraint must reach its chunks). Such entries are printed by pg_restore, run without ONLY
/// on the target, and reported if they still fail. Returns the entries that still fail.
async fn retry_on_hypertables(
    ctx: &StageContext,
    backup: &Backup,
    target: &ConnSpec,
    failed: Vec<(Entry, String)>,
) -> Result<Vec<(Entry, String)>, StageError> {
    let (only, rest): (Vec<_>, Vec<_>) =
        failed.into_iter().partition(|(_, err)| err.contains("ONLY option not supported on hypertable"));
    if only.is_empty() {
        return Ok(rest);
    }
    let client = target.connect().await?;
    let mut still = rest;
    for (entry, err) in only {
        let list = files::temp_file("pgshift-entry-", toc::list_file_text(&[&entry]).as_bytes())?;
        let mut text = Collect::default();
        let cmd = ToolCommand {
            label: "pg_restore --file=-".into(),
            program: backup.pg_restore.clone(),
            args: [format!("--use-list={}", list.path().display()), "--file=-".into()]
                .into_iter()
                .chain(backup.restore_args())
                .collect(),
            env: Vec::new(),
            stdin: Some(backup.archive()),
        };
        run_tool(ctx, &cmd, &mut text, &mut |_| LineClass::Plain).await?;
        // the entry's own SQL (pg_restore's text: settings, the statement, its owner), without
        // psql meta-commands, with ONLY dropped from its ALTER TABLE
        let sql: String = String::from_utf8_lossy(&text.0)
            .lines()
            .filter(|l| !l.starts_with('\\'))
            .map(|l| l.replacen("ALTER TABLE ONLY ", "ALTER TABLE ", 1) + "\n")
            .collect();
        match client.batch_execute(&sql).await {
            Ok(()) => {
                ctx.info("hypertables", format!("{} created on the hypertable (without ONLY)", entry.describe())).await
            }
            Err(e) => still.push((entry, format!("{err}; without ONLY: {}", catalog::db_message(&e)))),
        }
    }
    Ok(still)
}

async fn report_failures(ctx: &StageContext, failed: &[(Entry, String)]) {
    for (e, err) in failed {
        ctx.warning(format!("{} still fails: {err} (hint: {})", e.describe(), toc::hint(&e.kind, err))).await;
    }
}

/// Stage 3: roles, the target database, the schema before the data, hypertables.
pub struct SchemaStage {
    source: ConnSpec,
    /// The target database (created when missing).
    target: ConnSpec,
    /// The target is a container that may not exist before the environment stage.
    target_is_container: bool,
    force: bool,
    hypertables: Vec<HypertablePlan>,
    /// The plan's `[target.settings]`: a setting set there is not warned about.
    target_settings: BTreeMap<String, String>,
    tablespaces: Tablespaces,
}

impl SchemaStage {
    pub fn new(
        source: ConnSpec,
        target: ConnSpec,
        target_is_container: bool,
        force: bool,
        hypertables: Vec<HypertablePlan>,
    ) -> Self {
        Self {
            source,
            target,
            target_is_container,
            force,
            hypertables,
            target_settings: BTreeMap::new(),
            tablespaces: Tablespaces::Source,
        }
    }

    pub fn with_tablespaces(mut self, tablespaces: Tablespaces) -> Self {
        self.tablespaces = tablespaces;
        self
    }

    pub fn with_target_settings(mut self, settings: BTreeMap<String, String>) -> Self {
        self.target_settings = settings;
        self
    }

    /// The pre-flight: refuses what cannot work, and returns what the move upgrades (empty while a
    /// container target does not run yet).
    async fn check_target(&self) -> Result<Preflight, UserError> {
        let source = self.source.connect().await?;
        let q = preflight_failed;
        let admin = self.target.with_dbname("postgres");
        let server = match admin.connect().await {
            Ok(c) => c,
            // created by the environment stage: what the source alone decides is checked now
            Err(_) if self.target_is_container => {
                // a container pgshift makes has only the built-in tablespaces
                let builtin = ["pg_default".to_string(), "pg_global".to_string()].into();
                self.check_tablespaces(&source, &builtin).await?;
                self.check_container_label_providers(&source).await?;
                return self.check_source(&source).await.map(|()| Preflight::default());
            }
            Err(e) => return Err(e),
        };
        // the same cluster (system identifier) and database: a restore would write into the source
        let ident = "SELECT system_identifier::text FROM pg_control_system()";
        if let (Ok(a), Ok(b)) = (source.query_one(ident, &[]).await, server.query_one(ident, &[]).await) {
            if a.get::<_, String>(0) == b.get::<_, String>(0) && self.source.dbname() == self.target.dbname() {
                return Err(UserError::new(
                    format!("the target database {} is the source database itself", self.target.label()),
                    "give the target another server, or another database name ([target] database)",
                ));
            }
        }
        let smajor: i32 =
            source.query_one("SELECT current_setting('server_version_num')::int / 10000", &[]).await.map_err(q)?.get(0);
        let tmajor: i32 =
            server.query_one("SELECT current_setting('server_version_num')::int / 10000", &[]).await.map_err(q)?.get(0);
        if tmajor < smajor {
            return Err(UserError::new(
                format!("the target runs PostgreSQL {tmajor}, older than the source's {smajor}"),
                "use a target server at least as new as the source",
            ));
        }
        let installed: Vec<(String, String)> = source
            .query("SELECT extname, extversion FROM pg_extension ORDER BY 1", &[])
            .await
            .map_err(q)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut wanted: Vec<String> = installed.iter().map(|(e, _)| e.clone()).collect();
        if !self.hypertables.is_empty() && !wanted.iter().any(|e| e == "timescaledb") {
            wanted.push("timescaledb".into()); // the plan's hypertables need it even if the source has none
        }
        let defaults: BTreeMap<String, Option<String>> = server
            .query("SELECT name, default_version FROM pg_available_extensions", &[])
            .await
            .map_err(q)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let available: BTreeSet<String> = defaults.keys().cloned().collect();
        let version = "SELECT current_setting('server_version')";
        let sversion: String = source.query_one(version, &[]).await.map_err(q)?.get(0);
        let tversion: String = server.query_one(version, &[]).await.map_err(q)?.get(0);
        let upgrades = upgrades((&sversion, smajor), (&tversion, tmajor), &installed, &defaults);
        let (s_settings, t_settings) =
            (catalog::settings::read(&source).await.map_err(q)?, catalog::settings::read(&server).await.map_err(q)?);
        let planned = |name: &str| self.target_settings.keys().any(|k| k.eq_ignore_ascii_case(name));
        let setting_warnings = catalog::settings::differences(&s_settings, &t_settings)
            .iter()
            .filter(|d| d.kind == catalog::settings::Kind::Behaviour && !planned(&d.name))
            .map(catalog::settings::warning)
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|e| !available.contains(*e)).collect();
        if !missing.is_empty() {
            return Err(UserError::new(
                format!(
                    "the target server cannot install extension(s) the source uses: {}",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
                "install them on the target (its image or packages) before migrating",
            ));
        }
        // the license pre-flight: what the source's TimescaleDB holds must be creatable on the target
        let features = timescaledb::read_features(&source).await?;
        let mut licensed = features.licensed();
        licensed.extend(self.hypertables.iter().filter_map(HypertablePlan::licensed));
        if !licensed.is_empty() {
            let report = check_server(&admin).await?;
            if report.timescaledb_license.as_deref() != Some("timescale") {
                return Err(UserError::new(
                    format!(
                        "the target's TimescaleDB is {} and cannot hold the source's {}",
                        match report.timescaledb_license.as_deref() {
                            Some("apache") => "the Apache-only build".to_string(),
                            Some(other) => format!("licensed \"{other}\""),
                            None => "missing or of an unknown license".to_string(),
                        },
                        licensed.join(", ")
                    ),
                    "use a Timescale-licensed TimescaleDB on the target (the official timescale/timescaledb image, \
                     as Dockerfile.timescaledb does)",
                ));
            }
        }
        self.check_source(&source).await?;
        let spaces: BTreeSet<String> = server
            .query("SELECT spcname::text FROM pg_tablespace", &[])
            .await
            .map_err(q)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.check_tablespaces(&source, &spaces).await?;
        check_label_providers(&source, &server).await?;
        let exists: bool = server
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&self.target.dbname()])
            .await
            .map_err(q)?
            .get(0);
        if !exists {
            // pgshift creates the database with the source's locale: the target must have it
            let locale: Option<String> = source
                .query(catalog::database::PROPERTIES_SQL, &[])
                .await
                .map_err(q)?
                .iter()
                .find(|r| r.get::<_, String>(0) == "locale")
                .map(|r| r.get(2));
            if let Some(locale) = locale {
                if let Some(what) = catalog::database::missing_locale(&server, &locale).await.map_err(q)? {
                    return Err(UserError::new(
                        format!(
                            "the target server lacks {what}, which the source database uses ({locale}): text would \
                             sort and compare otherwise"
                        ),
                        "install the locale on the target (locale-gen, or an image built with it) and restart it, or \
                         create the target database yourself with the locale you choose",
                    ));
                }
            }
        }
        if exists && !self.force {
            let db = self.target.connect().await?;
            let sql = format!(
                "SELECT count(*), string_agg(name, ', ' ORDER BY name) FILTER (WHERE rn <= 3) FROM (
                   SELECT format('%I.%I', n.nspname, c.relname) AS name, row_number() OVER () AS rn
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {} AND {}
                   UNION ALL
                   SELECT format('%I.%I()', n.nspname, p.proname), 0
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {} AND {}) o",
                catalog::queries::user_ns("n"),
                catalog::queries::not_ext("pg_class", "c.oid"),
                catalog::queries::user_ns("n"),
                catalog::queries::not_ext("pg_proc", "p.oid"),
            );
            let row = db.query_one(&sql, &[]).await.map_err(q)?;
            let count: i64 = row.get(0);
            if count > 0 {
                let some: Option<String> = row.get(1);
                return Err(UserError::new(
                    format!(
                        "the target database {} is not empty: {count} objects (e.g. {})",
                        self.target.label(),
                        some.unwrap_or_default()
                    ),
                    "migrate into an empty database, or set force = true in the plan's [target] if you mean to",
                ));
            }
        }
        Ok(Preflight { upgrades, warnings: setting_warnings })
    }

    /// Before a container is made: it loads no security label provider but those the plan's
    /// `[target.settings] shared_preload_libraries` names, so a provider the source's labels need
    /// and the plan does not name is refused now (the rest are checked once it runs).
    async fn check_container_label_providers(&self, source: &tokio_postgres::Client) -> Result<(), UserError> {
        let used: Vec<String> = source
            .query(&security_labels::providers_used(), &[])
            .await
            .map_err(preflight_failed)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let preload = self
            .target_settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("shared_preload_libraries"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let loaded: BTreeSet<&str> =
            preload.split(',').map(|l| l.trim().trim_matches('\'').trim_matches('"')).collect();
        let missing: Vec<&String> = used.iter().filter(|p| !loaded.contains(p.as_str())).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(UserError::new(
            format!(
                "the source's security labels need the provider{} {}, which the container pgshift makes would not load",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "name its module in the plan's [target.settings] shared_preload_libraries (the image must hold it), \
             or migrate to an existing server that loads it",
        ))
    }

    /// Every tablespace the source database uses must exist on the target, unless the plan puts
    /// everything in the target's default tablespace.
    async fn check_tablespaces(
        &self,
        source: &tokio_postgres::Client,
        target_has: &BTreeSet<String>,
    ) -> Result<(), UserError> {
        if self.tablespaces == Tablespaces::Default {
            return Ok(());
        }
        let q = preflight_failed;
        let mut used: Vec<(String, String)> = source
            .query(&tablespaces::used_sql(), &[])
            .await
            .map_err(q)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if timescaledb::has_timescaledb(source).await.map_err(q)? {
            for r in source.query(tablespaces::HYPERTABLE_TABLESPACES, &[]).await.map_err(q)? {
                let table: String = r.get(0);
                for space in r.get::<_, Vec<String>>(1) {
                    used.push((space, format!("the chunks of {table}")));
                }
            }
        }
        let missing = tablespaces::missing(&used, target_has);
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.keys().map(String::as_str).collect();
        Err(UserError::new(
            format!(
                "the target server lacks {} the source database uses: {}",
                if names.len() == 1 { "a tablespace" } else { "tablespaces" },
                tablespaces::describe_missing(&missing)
            ),
            format!(
                "create {} on the target first (CREATE TABLESPACE {} LOCATION '<an empty directory on the target>'), \
                 or set [target] tablespaces = \"default\" in the plan to put everything in the target database's \
                 default tablespace",
                if names.len() == 1 { "it" } else { "them" },
                quote_ident(names[0])
            ),
        ))
    }

    /// The pre-flight checks the source alone decides: each planned conversion, every large object
    /// readable.
    async fn check_source(&self, source: &tokio_postgres::Client) -> Result<(), UserError> {
        for h in &self.hypertables {
            check_conversion(source, h).await?;
        }
        // large objects are copied by the data stage: each must be readable by the connecting role
        let unreadable: i64 = source
            .query_one(
                "SELECT count(*) FROM pg_largeobject_metadata m
                  WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                    AND current_setting('lo_compat_privileges') <> 'on'
                    AND NOT pg_has_role(current_user, m.lomowner, 'USAGE')
                    AND NOT EXISTS (SELECT 1 FROM aclexplode(m.lomacl) a
                                     WHERE a.privilege_type = 'SELECT'
                                       AND (a.grantee = 0 OR pg_has_role(current_user, a.grantee, 'USAGE')))",
                &[],
            )
            .await
            .map_err(preflight_failed)?
            .get(0);
        if unreadable > 0 {
            return Err(UserError::new(
                format!("the connecting role may not read {unreadable} of the source's large objects"),
                "connect to the source as a superuser, or GRANT SELECT ON LARGE OBJECT ... to the connecting role",
            ));
        }
        Ok(())
    }

    async fn restore_roles(&self, ctx: &StageContext, backup: &Backup) -> Result<(), StageError> {
        let admin = ctx.tagged(&self.target.with_dbname("postgres"));
        let me = admin.config.get_user().unwrap_or("postgres").to_string();
        let text = std::fs::read_to_string(backup.dir.join("roles.sql"))
            .map_err(|e| UserError::new(format!("cannot read roles.sql: {e}"), "run again with --restart"))?;
        // the role pgshift connects as is the target's, not the source's: leave it alone
        let quoted = quote_ident(&me);
        let filtered: String = text
            .lines()
            .filter(|l| *l != format!("CREATE ROLE {quoted};") && !l.starts_with(&format!("ALTER ROLE {quoted} ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let file = files::temp_file("pgshift-roles-", filtered.as_bytes())?;
        let cmd = ToolCommand {
            label: "psql roles.sql".into(),
            program: backup.psql.clone(),
            args: vec!["-X".into(), "-q".into(), "--no-password".into(), format!("--dbname={}", admin.dbname())],
            env: libpq_env(&admin),
            stdin: Some(file.path().to_path_buf()),
        };
        let mut existed = 0;
        let mut errors = Vec::new();
        run_tool(ctx, &cmd, &mut Discard, &mut |line| {
            if line.contains("already exists") || line.contains("has already been granted") {
                existed += 1;
            } else if line.contains("ERROR:") {
                errors.push(line.to_string());
            }
            LineClass::Plain
        })
        .await?;
        ctx.info("roles", format!("roles.sql applied ({existed} roles or memberships already there)")).await;
        for e in errors {
            ctx.warning(format!("roles.sql: {e}")).await;
        }
        Ok(())
    }

    async fn create_database(&self, ctx: &StageContext) -> Result<(), StageError> {
        let admin = ctx.tagged(&self.target.with_dbname("postgres")).connect().await?;
        let source = ctx.tagged(&self.source).connect().await?;
        let q = |spec: &ConnSpec, e: tokio_postgres::Error| {
            StageError::Failed(catalog::failed_query(
                spec,
                "creating the target database failed",
                &e,
                "connect to the target as a superuser (or a role with CREATEDB)",
            ))
        };
        let row = source
            .query_one(
                "SELECT pg_encoding_to_char(encoding), pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(|e| q(&self.source, e))?;
        let (encoding, owner): (String, String) = (row.get(0), row.get(1));
        let locale: Option<String> = source
            .query(catalog::database::PROPERTIES_SQL, &[])
            .await
            .map_err(|e| q(&self.source, e))?
            .iter()
            .find(|r| r.get::<_, String>(0) == "locale")
            .map(|r| r.get(2));
        let tmajor: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int / 10000", &[])
            .await
            .map_err(|e| q(&self.target, e))?
            .get(0);
        let db = self.target.dbname();
        let exists: bool = admin
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&db])
            .await
            .map_err(|e| q(&self.target, e))?
            .get(0);
        if !exists {
            // the source's locale (provider, collation, ctype): text sorts and compares as it did
            let mut clause = locale.as_deref().map(|l| catalog::database::create_clause(l, tmajor)).unwrap_or_default();
            if self.tablespaces == Tablespaces::Source {
                // the source database's default tablespace, which the pre-flight found on the target
                let space: Option<String> = source
                    .query_opt(
                        "SELECT t.spcname::text FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
                          WHERE d.datname = current_database() AND t.spcname <> 'pg_default'",
                        &[],
                    )
                    .await
                    .map_err(|e| q(&self.source, e))?
                    .map(|r| r.get(0));
                if let Some(space) = space {
                    clause.push_str(&format!(" TABLESPACE {}", quote_ident(&space)));
                }
            }
            let sql = format!("CREATE DATABASE {} TEMPLATE template0 ENCODING '{encoding}'{clause}", quote_ident(db));
            admin.batch_execute(&sql).await.map_err(|e| {
                StageError::Failed(UserError::new(
                    format!(
                        "creating the target database {db} with the source's locale ({}) failed: {}",
                        locale.as_deref().unwrap_or("default"),
                        catalog::db_message(&e)
                    ),
                    "install that locale on the target server (locale-gen, or an image with it) and run again",
                ))
            })?;
            ctx.info("database", format!("created database {db} ({encoding}, {})", locale.as_deref().unwrap_or("")))
                .await;
        }
        let sql = format!("ALTER DATABASE {} OWNER TO {}", quote_ident(db), quote_ident(&owner));
        if let Err(e) = admin.batch_execute(&sql).await {
            ctx.warning(format!("database owner not set to {owner}: {}", catalog::db_message(&e))).await;
        }
        Ok(())
    }

    /// Recreates the source's hypertables (every dimension, its interval) and the plan's new ones,
    /// before any data, so rows go straight into chunks.
    async fn create_hypertables(&self, ctx: &StageContext) -> Result<usize, StageError> {
        let target = ctx.tagged(&self.target).connect().await?;
        let source = ctx.tagged(&self.source).connect().await?;
        let q = |spec: &ConnSpec, what: &str, e: tokio_postgres::Error| {
            StageError::Failed(catalog::failed_query(
                spec,
                what,
                &e,
                "check the hypertable's time column and that unique keys include it",
            ))
        };
        let has_ts = timescaledb::has_timescaledb(&source)
            .await
            .map_err(|e| q(&self.source, "reading the source's extensions", e))?;
        let mut statements: Vec<(String, String)> = Vec::new();
        if has_ts {
            // dimension_number 1 is the partitioning column create_hypertable takes; others are added
            let rows = source
                .query(
                    "SELECT format('%I.%I', hypertable_schema, hypertable_name), dimension_number, column_name,
                            dimension_type, time_interval::text, integer_interval, num_partitions
                     FROM timescaledb_information.dimensions
                     WHERE hypertable_schema NOT LIKE '\\_timescaledb%' -- continuous aggregates' own
                     ORDER BY 1, 2",
                    &[],
                )
                .await
                .map_err(|e| q(&self.source, "reading the source's hypertables", e))?;
            for r in rows {
                let (table, n, column): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
                let kind: String = r.get(3);
                let interval = match (r.get::<_, Option<String>>(4), r.get::<_, Option<i64>>(5)) {
                    (Some(t), _) => format!("INTERVAL {}", quote_literal(&t)),
                    (None, Some(i)) => i.to_string(),
                    (None, None) => "NULL".into(),
                };
                let partitions: Option<i16> = r.get(6);
                let lit = quote_literal(&table);
                let col = quote_literal(&column);
                let sql = match (n, kind.as_str()) {
                    (1, _) => format!(
                        "SELECT create_hypertable({lit}::regclass, {col}, chunk_time_interval => {interval}, \
                         create_default_indexes => false, if_not_exists => true)"
                    ),
                    (_, "Space") => format!(
                        "SELECT add_dimension({lit}::regclass, {col}, number_partitions => {}, if_not_exists => true)",
                        partitions.unwrap_or(1)
                    ),
                    _ => format!(
                        "SELECT add_dimension({lit}::regclass, {col}, chunk_time_interval => {interval}, if_not_exists => true)"
                    ),
                };
                statements.push((table, sql));
            }
            if self.tablespaces == Tablespaces::Source {
                // the tablespaces its chunks are spread over, in the order they were attached
                let rows = source
                    .query(tablespaces::HYPERTABLE_TABLESPACES, &[])
                    .await
                    .map_err(|e| q(&self.source, "reading the source's hypertables' tablespaces", e))?;
                for r in rows {
                    let table: String = r.get(0);
                    for space in r.get::<_, Vec<String>>(1) {
                        let sql = format!(
                            "SELECT attach_tablespace({}, {}::regclass, if_not_attached => true)",
                            quote_literal(&space),
                            quote_literal(&table)
                        );
                        statements.push((table.clone(), sql));
                    }
                }
            }
        }
        for h in &self.hypertables {
            let interval = match &h.chunk_interval {
                Some(i) => i.clone(),
                None => {
                    let row = source
                        .query_one(
                            &format!(
                                "SELECT coalesce(extract(epoch FROM max({c})::timestamptz - min({c})::timestamptz), 0)::float8, \
                                 pg_total_relation_size({lit}::regclass) FROM {t}",
                                c = h.time_column,
                                lit = quote_literal(&h.table),
                                t = h.table,
                            ),
                            &[],
                        )
                        .await
                        .map_err(|e| q(&self.source, &format!("measuring {}", h.table), e))?;
                    let suggested = suggest_interval(row.get(0), row.get(1));
                    ctx.info(
                        "hypertables",
                        format!("{}: chunk interval {suggested} suggested from its span and size", h.table),
                    )
                    .await;
                    suggested
                }
            };
            // no default index: the source's indexes come with the post-data stage
            statements.push((
                h.table.clone(),
                format!(
                    "SELECT create_hypertable({}::regclass, {}, chunk_time_interval => INTERVAL {}, \
                     create_default_indexes => false, if_not_exists => true)",
                    quote_literal(&h.table),
                    quote_literal(h.time_column.trim_matches('"')),
                    quote_literal(&interval)
                ),
            ));
        }
        if !statements.is_empty() {
            // a plain source converts its first tables: the target needs the extension first
            target.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await.map_err(|e| {
                StageError::Failed(catalog::failed_query(
                    &self.target,
                    "CREATE EXTENSION timescaledb",
                    &e,
                    "install TimescaleDB on the target and add it to shared_preload_libraries",
                ))
            })?;
        }
        let mut tables = BTreeSet::new();
        for (table, sql) in statements {
            target
                .batch_execute(&sql)
                .await
                .map_err(|e| q(&self.target, &format!("making {table} a hypertable"), e))?;
            tables.insert(table);
        }
        for t in &tables {
            ctx.info("hypertables", format!("{t} is a hypertable on the target")).await;
        }
        Ok(tables.len())
    }
}

impl SchemaStage {
    /// The source's continuous aggregates, empty, in dependency order, before the data: the data
    /// stage copies their materialized rows into them (a rerun finds those made already).
    async fn create_aggregates(&self, ctx: &StageContext) -> Result<usize, StageError> {
        let source = ctx.tagged(&self.source).connect().await?;
        let f = timescaledb::read_features(&source).await?;
        if f.continuous_aggregates.is_empty() {
            return Ok(0);
        }
        let target = ctx.tagged(&self.target).connect().await?;
        let q = |what: &str, e: tokio_postgres::Error| {
            StageError::Failed(catalog::failed_query(
                &self.target,
                what,
                &e,
                "check that the functions and tables the aggregate reads exist on the target (the schema entries \
                 above), and the target's TimescaleDB license",
            ))
        };
        let exists = |view: String| {
            let target = &target;
            async move {
                target.query_one("SELECT to_regclass($1) IS NOT NULL", &[&view]).await.map(|r| r.get::<_, bool>(0))
            }
        };
        let mut made = 0;
        for (what, sql) in timescaledb::caggs::create_statements(&f) {
            let view = what.strip_prefix("continuous aggregate ").map(String::from);
            if let Some(v) = &view {
                if exists(v.clone()).await.map_err(|e| q(&what, e))? {
                    continue;
                }
                made += 1;
            }
            ctx.info("continuous aggregates", format!("{what}: {}", sql.lines().next().unwrap_or(""))).await;
            target.batch_execute(&sql).await.map_err(|e| q(&format!("creating {what}"), e))?;
        }
        Ok(made)
    }
}

impl Stage for SchemaStage {
    fn id(&self) -> &'static str {
        "schema"
    }

    fn title(&self) -> &'static str {
        "Schema: roles, database, tables and functions, hypertables"
    }

    fn preflight<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<(), UserError>> {
        Box::pin(async move {
            let found = self.check_target().await?;
            for u in found.upgrades {
                ctx.upgrade(&u.what, &u.from, &u.to).await;
            }
            for w in found.warnings {
                ctx.warning(w).await;
            }
            Ok(())
        })
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            // the container may be new: check again now that it runs (and say what it upgrades)
            let found = self.check_target().await?;
            if self.target_is_container {
                for u in found.upgrades {
                    ctx.upgrade(&u.what, &u.from, &u.to).await;
                }
                for w in found.warnings {
                    ctx.warning(w).await;
                }
            }
            let backup = Backup::open(ctx, Need::Schema)?.placing(self.tablespaces);
            self.restore_roles(ctx, &backup).await?;
            self.create_database(ctx).await?;
            let target = ctx.tagged(&self.target);
            let caggs = cagg_views(&ctx.tagged(&self.source)).await?;
            let entries = restorable(ctx, list_section(ctx, &backup, "pre-data").await?, &caggs);
            // grants and comments on an aggregate wait for it: it is made after these entries
            let (later, entries): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| on_aggregate(e, &caggs));
            let failed = restore_with_retries(ctx, &backup, &target, entries, "schema", None).await?;
            // what still fails may work once post-data objects exist: the post-data stage retries it
            // by identity, not entry number: post-data reads them in full.dump, numbered its own way
            let left: Vec<&str> =
                failed.iter().map(|(e, _)| e.identity()).chain(later.iter().map(|e| e.identity())).collect();
            let path = backup.dir.join(crate::engine::run_files::SCHEMA_FAILURES);
            write_atomic(&path, serde_json::to_string(&left).expect("identities").as_bytes())
                .map_err(|e| write_error(&path, &e))?;
            let hypertables = self.create_hypertables(ctx).await?;
            let aggregates = self.create_aggregates(ctx).await?;
            let aggregates =
                if aggregates > 0 { format!(", {aggregates} continuous aggregate(s)") } else { String::new() };
            Ok(format!(
                "schema restored into {}; {hypertables} hypertable(s){aggregates}; {} entr(ies) left for after the data",
                self.target.label(),
                failed.len()
            ))
        })
    }
}

/// What the schema pre-flight found that does not stop the run: what the move upgrades, and the
/// behaviour settings that differ between the servers.
#[derive(Debug, Default)]
struct Preflight {
    upgrades: Vec<Upgrade>,
    warnings: Vec<String>,
}

/// One thing the move upgrades: the server (`PostgreSQL`) or an extension, from → to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub what: String,
    pub from: String,
    pub to: String,
}

/// What the move upgrades: the server when the majors differ, and each source extension the target
/// would install at another version (`CREATE EXTENSION` takes the default version).
fn upgrades(
    (sversion, smajor): (&str, i32),
    (tversion, tmajor): (&str, i32),
    installed: &[(String, String)],
    defaults: &BTreeMap<String, Option<String>>,
) -> Vec<Upgrade> {
    let mut out = Vec::new();
    let short = |v: &str| v.split_whitespace().next().unwrap_or(v).to_string();
    if smajor != tmajor {
        out.push(Upgrade { what: "PostgreSQL".into(), from: short(sversion), to: short(tversion) });
    }
    for (name, version) in installed {
        if let Some(Some(default)) = defaults.get(name) {
            if default != version {
                out.push(Upgrade { what: name.clone(), from: version.clone(), to: default.clone() });
            }
        }
    }
    out
}

/// Stage 5: what is built after the data — indexes, constraints, triggers, rules, policies, RLS,
/// default privileges, materialized view contents — and the schema entries that failed before.
/// Index builds and then foreign keys run in several sessions at once (`pgtools::build_phases`).
pub struct PostDataStage {
    /// Read for the tables' sizes, which order the builds.
    source: ConnSpec,
    target: ConnSpec,
    /// `maintenance_work_mem` and parallel workers for the index builds.
    tuning: crate::plan::TuningPlan,
    /// Target sessions building at once.
    sessions: usize,
    tablespaces: Tablespaces,
}

impl PostDataStage {
    pub fn new(source: ConnSpec, target: ConnSpec, tuning: &crate::plan::TuningPlan, sessions: usize) -> Self {
        Self { source, target, tuning: tuning.clone(), sessions: sessions.max(1), tablespaces: Tablespaces::Source }
    }

    pub fn with_tablespaces(mut self, tablespaces: Tablespaces) -> Self {
        self.tablespaces = tablespaces;
        self
    }

    /// PGOPTIONS for index builds when `sessions` run at once: the plan's maintenance_work_mem
    /// shared out between them.
    fn build_options(&self, sessions: usize) -> String {
        format!(
            "-c maintenance_work_mem={} -c max_parallel_maintenance_workers={}",
            build_phases::share_memory(&self.tuning.maintenance_work_mem, sessions),
            self.tuning.parallel_workers
        )
    }

    /// The source's table sizes behind each index and constraint; none when they cannot be read
    /// (then the builds keep the archive's order: the sizes only order them).
    async fn sizes(&self, ctx: &StageContext) -> build_phases::Sizes {
        let read = async {
            let client = ctx.tagged(&self.source).connect().await.ok()?;
            let rows = client.query(build_phases::SIZES_SQL, &[]).await.ok()?;
            Some(
                rows.iter()
                    .map(|r| ((r.get::<_, i64>(0) as u32, r.get::<_, i64>(1) as u32), r.get::<_, i64>(2).max(0) as u64))
                    .collect(),
            )
        };
        read.await.unwrap_or_default()
    }
}

/// One pg_restore per list of `bins`, all at once; the entries that failed, with their errors.
async fn parallel_rounds(
    ctx: &StageContext,
    backup: &Backup,
    target: &ConnSpec,
    bins: &[Vec<Entry>],
    what: &str,
    pgoptions: &str,
) -> Result<Vec<(Entry, String)>, StageError> {
    let n = bins.len();
    let rounds = bins.iter().enumerate().map(|(i, bin)| async move {
        let refs: Vec<&Entry> = bin.iter().collect();
        let label =
            if n > 1 { format!("pg_restore {what} (session {}/{n})", i + 1) } else { format!("pg_restore {what}") };
        restore_round(ctx, backup, target, &refs, &label, Some(pgoptions)).await
    });
    Ok(futures_util::future::try_join_all(rounds).await?.into_iter().flatten().collect())
}

impl Stage for PostDataStage {
    fn id(&self) -> &'static str {
        "post-data"
    }

    fn title(&self) -> &'static str {
        "Indexes, constraints, triggers, policies, privileges, materialized views"
    }

    fn run<'a>(&'a self, ctx: &'a StageContext) -> BoxFuture<'a, Result<String, StageError>> {
        Box::pin(async move {
            let backup = Backup::open(ctx, Need::Everything)?.placing(self.tablespaces);
            let target = ctx.tagged(&self.target);
            // identities; a run directory of an earlier pgshift holds entry numbers (of full.dump)
            let earlier: Vec<serde_json::Value> =
                std::fs::read_to_string(backup.dir.join(crate::engine::run_files::SCHEMA_FAILURES))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let was_left = |e: &Entry| {
                earlier.iter().any(|v| v.as_str() == Some(e.identity()) || v.as_u64() == Some(u64::from(e.id)))
            };
            let retried: Vec<Entry> = if earlier.is_empty() {
                Vec::new()
            } else {
                restorable(ctx, list_section(ctx, &backup, "pre-data").await?, &BTreeSet::new())
                    .into_iter()
                    .filter(|e| was_left(e))
                    .collect()
            };
            let post = restorable(ctx, list_section(ctx, &backup, "post-data").await?, &BTreeSet::new());
            let total = retried.len() + post.len();
            // event triggers last, once everything else is built: a DDL guard would refuse the rest
            let (event_triggers, post): (Vec<Entry>, Vec<Entry>) =
                post.into_iter().partition(|e| e.is_on_event_trigger());
            let (retried_triggers, retried): (Vec<Entry>, Vec<Entry>) =
                retried.into_iter().partition(|e| e.is_on_event_trigger());
            let event_triggers: Vec<Entry> = retried_triggers.into_iter().chain(event_triggers).collect();

            // the schema entries that failed before the data first: an index may need one
            let mut failed = Vec::new();
            if !retried.is_empty() {
                let refs: Vec<&Entry> = retried.iter().collect();
                let serial = self.build_options(1);
                failed =
                    restore_round(ctx, &backup, &target, &refs, "pg_restore earlier failures", Some(&serial)).await?;
            }
            let phases = build_phases::plan(post, &self.sizes(ctx).await, self.sessions);
            let count = |bins: &[Vec<Entry>]| bins.iter().map(Vec::len).sum::<usize>();
            ctx.info(
                "post-data",
                format!(
                    "{} index builds in {} session(s), then {} foreign keys in {}, then {} other entries",
                    count(&phases.indexes),
                    phases.indexes.len(),
                    count(&phases.foreign_keys),
                    phases.foreign_keys.len(),
                    phases.rest.len()
                ),
            )
            .await;
            // indexes are built after the data, several at once, with parallel maintenance workers
            let options = self.build_options(phases.indexes.len().max(1));
            failed.extend(parallel_rounds(ctx, &backup, &target, &phases.indexes, "indexes", &options).await?);
            failed
                .extend(parallel_rounds(ctx, &backup, &target, &phases.foreign_keys, "foreign keys", &options).await?);
            // what failed in a parallel phase is tried again with the rest, in dependency order —
            // except what TimescaleDB refuses with ONLY, which is made without it below
            let (only, again): (Vec<_>, Vec<_>) =
                failed.into_iter().partition(|(_, err)| err.contains("ONLY option not supported on hypertable"));
            let rest: Vec<Entry> = phases.rest.into_iter().chain(again.into_iter().map(|(e, _)| e)).collect();
            let mut failed = only;
            if !rest.is_empty() {
                let serial = self.build_options(1);
                failed.extend(restore_with_retries(ctx, &backup, &target, rest, "post-data", Some(&serial)).await?);
            }
            let mut failed = retry_on_hypertables(ctx, &backup, &target, failed).await?;
            if !event_triggers.is_empty() {
                failed
                    .extend(restore_with_retries(ctx, &backup, &target, event_triggers, "event triggers", None).await?);
            }
            report_failures(ctx, &failed).await;
            if !failed.is_empty() {
                // not recorded as done: once the cause is fixed, a rerun restores them (what exists is kept)
                return Err(UserError::new(
                    format!(
                        "{} of {total} schema entries still fail on the target (see the warnings above)",
                        failed.len()
                    ),
                    "fix each cause the warnings name (their hints say where to look), then run again",
                )
                .into());
            }
            let client = target.connect().await?;
            let held = hold_event_triggers(&target, &client).await?;
            if held > 0 {
                ctx.info(
                    "post-data",
                    format!(
                        "{held} event trigger(s) held disabled until the tuning stage, so they do not fire on \
                         pgshift's own DDL (the tuning stage gives each the source's state)"
                    ),
                )
                .await;
            }
            for name in disabled_subscriptions(&target, &client).await? {
                ctx.warning(format!(
                    "subscription {name} was created disabled on the target (two active subscribers would apply \
                     the same changes twice): after the cutover, disable it on the source and run \
                     ALTER SUBSCRIPTION {name} ENABLE on the target"
                ))
                .await;
            }
            Ok(format!("{total} entries restored"))
        })
    }
}

/// Disables the target's event triggers until the tuning stage; returns how many.
async fn hold_event_triggers(target: &ConnSpec, client: &tokio_postgres::Client) -> Result<usize, UserError> {
    let fail = |e: tokio_postgres::Error| {
        catalog::failed_query(target, "holding the target's event triggers", &e, "connect as a superuser")
    };
    let statements: Vec<String> =
        client.query(&catalog::event_triggers::hold_sql(), &[]).await.map_err(fail)?.iter().map(|r| r.get(0)).collect();
    for sql in &statements {
        client.batch_execute(sql).await.map_err(fail)?;
    }
    Ok(statements.len())
}

/// The target database's subscriptions that are disabled (as pg_restore creates them).
async fn disabled_subscriptions(target: &ConnSpec, client: &tokio_postgres::Client) -> Result<Vec<String>, UserError> {
    let rows = client
        .query(
            "SELECT quote_ident(subname) FROM pg_subscription
              WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND NOT subenabled
              ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| {
            catalog::failed_query(target, "reading the target's subscriptions", &e, "connect as a superuser")
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A pre-flight query the server refused.
fn preflight_failed(e: tokio_postgres::Error) -> UserError {
    UserError::new(format!("pre-flight query failed: {}", catalog::db_message(&e)), "connect as a superuser")
}

/// Every security label provider the source's labels need must be loaded on the target: its
/// restore fails each label otherwise (after the data, in post-data's rounds).
async fn check_label_providers(
    source: &tokio_postgres::Client,
    server: &tokio_postgres::Client,
) -> Result<(), UserError> {
    let q = preflight_failed;
    let used: Vec<(String, i64)> = source
        .query(&security_labels::providers_used(), &[])
        .await
        .map_err(q)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if used.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = used.iter().map(|(p, _)| p.clone()).collect();
    let missing = security_labels::not_loaded(server, &names).await.map_err(q)?;
    if missing.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = used
        .iter()
        .filter(|(p, _)| missing.contains(p))
        .map(|(p, n)| format!("{p} (labels {n} object{})", if *n == 1 { "" } else { "s" }))
        .collect();
    Err(UserError::new(
        format!(
            "the target server has not loaded the security label provider{} the source's labels need: {}",
            if missing.len() == 1 { "" } else { "s" },
            described.join(", ")
        ),
        "install and load it on the target (its module in shared_preload_libraries, then a restart), as on the source",
    ))
}

/// Can this plain source table become a hypertable? Its time column must exist and be NOT NULL
/// and of a time or integer type, every unique key must include it, and it must not already be one.
pub async fn check_conversion(source: &tokio_postgres::Client, h: &HypertablePlan) -> Result<(), UserError> {
    let what = format!("[[hypertables]] {}", h.table);
    let q = |e: tokio_postgres::Error| {
        UserError::new(format!("{what}: {}", catalog::db_message(&e)), "check the table's name (schema.table)")
    };
    let row = source
        .query_opt(
            "SELECT a.attnotnull, format_type(a.atttypid, NULL)
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
            &[&h.table, &h.time_column.trim_matches('"')],
        )
        .await
        .map_err(q)?;
    let exists: bool = source.query_one("SELECT to_regclass($1) IS NOT NULL", &[&h.table]).await.map_err(q)?.get(0);
    if !exists {
        return Err(UserError::new(
            format!("{what}: no such table on the source"),
            "write it as schema.table, as pgshift inventory lists it",
        ));
    }
    for (field, value) in [("chunk_interval", &h.chunk_interval), ("compress_after", &h.compress_after)] {
        if let Some(text) = value {
            if source.query_one("SELECT $1::text::interval", &[text]).await.is_err() {
                return Err(UserError::new(
                    format!("{what}: {field} = \"{text}\" is not an interval"),
                    "write it as PostgreSQL reads an interval: \"6 hours\", \"1 day\", \"7 days\"",
                ));
            }
        }
    }
    let Some(row) = row else {
        return Err(UserError::new(
            format!("{what}: the table has no column {}", h.time_column),
            "set time_column to the table's timestamp column",
        ));
    };
    let (not_null, ty): (bool, String) = (row.get(0), row.get(1));
    // integer time needs an integer_now function and integer intervals: not planned through this file yet
    let time_types = ["timestamp with time zone", "timestamp without time zone", "date"];
    if !time_types.contains(&ty.as_str()) {
        return Err(UserError::new(
            format!("{what}: {} is {ty}, not a timestamp or date column", h.time_column),
            "choose a timestamptz, timestamp or date column (integer time is converted by hand for now)",
        ));
    }
    if !not_null {
        return Err(UserError::new(
            format!("{what}: {} may be NULL, and a hypertable's time column may not", h.time_column),
            format!(
                "fill its NULLs and ALTER TABLE {} ALTER COLUMN {} SET NOT NULL on the source first",
                h.table, h.time_column
            ),
        ));
    }
    let bad: Vec<String> = source
        .query(
            "SELECT conname::text FROM pg_constraint k
             WHERE k.conrelid = to_regclass($1) AND k.contype IN ('p', 'u')
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.conrelid AND a.attname = $2 AND a.attnum = ANY (k.conkey))",
            &[&h.table, &h.time_column.trim_matches('"')],
        )
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !bad.is_empty() {
        return Err(UserError::new(
            format!("{what}: unique key(s) {} do not include {}", bad.join(", "), h.time_column),
            "a hypertable's primary and unique keys must include its time column: change them on the source, \
             or leave this table plain",
        ));
    }
    let already: bool = source
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AND EXISTS (
               SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE i.inhparent = to_regclass($1) AND n.nspname = '_timescaledb_internal')",
            &[&h.table],
        )
        .await
        .map_err(q)?
        .get(0);
    if already {
        return Err(UserError::new(
            format!("{what}: it is a hypertable already"),
            "remove it from [[hypertables]]: it is recreated anyway",
        ));
    }
    Ok(())
}

/// A chunk interval for a table spanning `span_secs` of time in `bytes`: chunks of about 256 MiB,
/// between an hour and a month, in whole hours or days.
pub fn suggest_interval(span_secs: f64, bytes: i64) -> String {
    let chunks = (bytes as f64 / (256u64 << 20) as f64).ceil().max(1.0);
    let secs = (span_secs / chunks).clamp(3600.0, 30.0 * 86400.0);
    if secs >= 86400.0 {
        format!("{} days", (secs / 86400.0).round() as i64)
    } else {
        format!("{} hours", (secs / 3600.0).round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_comments_on_an_aggregate_wait_for_it() {
        let caggs: BTreeSet<String> = ["metrics.readings_hourly".to_string()].into();
        let entry = |line: &str| Entry::parse(line).expect("entry");
        assert!(on_aggregate(&entry("5098; 0 0 ACL metrics TABLE readings_hourly pgshift_ingest"), &caggs));
        assert!(on_aggregate(&entry("5099; 0 0 COMMENT metrics COLUMN readings_hourly.bucket pgshift_ingest"), &caggs));
        assert!(!on_aggregate(&entry("5100; 0 0 ACL metrics TABLE readings pgshift_ingest"), &caggs));
        assert!(!on_aggregate(&entry("373; 1259 29533 VIEW metrics readings_hourly pgshift_ingest"), &caggs));
    }

    #[test]
    fn the_move_upgrades_the_major_and_each_extension_installed_at_another_version() {
        let installed = [("plpgsql", "1.0"), ("timescaledb", "2.15.3"), ("pgcrypto", "1.3")]
            .map(|(n, v)| (n.to_string(), v.to_string()));
        let defaults: BTreeMap<String, Option<String>> =
            [("plpgsql", Some("1.0")), ("timescaledb", Some("2.19.3")), ("pgcrypto", Some("1.3")), ("vector", None)]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.map(String::from)))
                .collect();
        let found = upgrades(("15.14 (Debian 15.14-0+deb12u1)", 15), ("17.6", 17), &installed, &defaults);
        let up = |w: &str, f: &str, t: &str| Upgrade { what: w.into(), from: f.into(), to: t.into() };
        assert_eq!(found, [up("PostgreSQL", "15.14", "17.6"), up("timescaledb", "2.15.3", "2.19.3")]);
        assert!(upgrades(("17.5", 17), ("17.6", 17), &installed[..1], &defaults).is_empty(), "a minor is no move");
    }
}

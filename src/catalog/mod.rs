//! The inventory of one database: every object class with names and normalized definitions,
//! TimescaleDB and pgvector state, exact row counts, and what was left out as internal.
//! Core: it may use only `postgres` and `error`; every stage, verify and
//! the TimescaleDB knowledge read through it.

pub mod class;
pub mod database;
pub mod event_triggers;
pub mod extensions;
pub mod queries;
pub mod rare_classes;
pub mod rows;
pub mod security_labels;
pub mod sequences;
pub mod server;
pub mod settings;
pub mod tablespaces;
pub mod versions;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

pub use class::Class;
pub use extensions::TimescaleInfo;
use rows::{RowJob, RowMode, RowStats};

use crate::error::UserError;
use crate::postgres::conn::ConnSpec;
use crate::postgres::transient;

/// Name → normalized definition, for one class.
pub type Definitions = BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub user: String,
}

/// Objects kept out of the user counts, shown so nothing is silently hidden.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Excluded {
    /// `extension timescaledb`, `TimescaleDB internal`, ...
    pub owner: String,
    pub what: String,
    pub count: i64,
}

/// The six counts of the classic runbook check.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NaiveCounts {
    pub tables: i64,
    pub views: i64,
    pub functions: i64,
    pub triggers: i64,
    pub policies: i64,
    pub indexes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    /// table, partition, hypertable, materialized view, continuous aggregate
    pub kind: String,
    pub bytes: i64,
    pub columns: Vec<String>,
    /// A hypertable's chunk count (information, not compared: chunk history may differ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The relation that holds the rows, where it is not `name`: a continuous aggregate's
    /// materialization hypertable (named differently on each server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// A hypertable's (or materialization's) chunks, each counted on its own so a difference names
    /// the chunk; the table's rows are their sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<TablePart>,
    /// How many of its chunks are compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed_chunks: Option<i64>,
}

/// One chunk of a hypertable: named by its slices (the same on any server holding the same chunk),
/// read from its own relation (through TimescaleDB's decompression when it is compressed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TablePart {
    pub key: String,
    pub relation: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compressed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a materialization's entry is called: `view (materialization)`.
pub const MATERIALIZATION_SUFFIX: &str = " (materialization)";

impl TableInfo {
    /// A table as the catalog lists it, before its rows, chunks or parts are read.
    pub fn new(name: impl Into<String>, kind: &str, bytes: i64, columns: Vec<String>) -> Self {
        TableInfo {
            name: name.into(),
            kind: kind.into(),
            bytes,
            columns,
            chunks: None,
            rows: None,
            checksum: None,
            error: None,
            relation: None,
            parts: Vec::new(),
            compressed_chunks: None,
        }
    }

    /// The jobs that measure this table through `columns`: one per part (chunk) where it has
    /// parts, else one for the whole table.
    pub fn row_jobs(&self, columns: Vec<String>, form: rows::HashForm) -> Vec<RowJob> {
        if self.parts.is_empty() {
            return vec![RowJob { name: self.name.clone(), from: self.from_clause(), columns, form }];
        }
        self.parts
            .iter()
            .map(|p| RowJob {
                name: rows::part_job_name(&self.name, &p.key),
                from: p.relation.clone(),
                columns: columns.clone(),
                form,
            })
            .collect()
    }

    /// What follows FROM to read exactly this table's own rows.
    pub fn from_clause(&self) -> String {
        match self.kind.as_str() {
            "hypertable" | "continuous aggregate" | "materialized view" => self.name.clone(),
            "materialization" => self.relation.clone().unwrap_or_else(|| self.name.clone()),
            _ => format!("ONLY {}", self.name),
        }
    }

    /// The continuous aggregate whose materialization this is.
    pub fn aggregate(&self) -> Option<&str> {
        (self.kind == "materialization").then(|| self.name.strip_suffix(MATERIALIZATION_SUFFIX)).flatten()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    pub pgshift_version: String,
    pub server: ServerInfo,
    pub timescaledb: Option<TimescaleInfo>,
    pub pgvector: Option<String>,
    pub objects: BTreeMap<Class, Definitions>,
    pub excluded: Vec<Excluded>,
    pub naive: NaiveCounts,
    pub tables: Vec<TableInfo>,
    pub warnings: Vec<String>,
    /// What this session could not read and so was not compared (not a failure: said in the report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_compared: Vec<String>,
}

impl Inventory {
    pub fn class(&self, class: Class) -> &Definitions {
        static EMPTY: Definitions = BTreeMap::new();
        self.objects.get(&class).unwrap_or(&EMPTY)
    }

    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Fills `rows`/`checksum`/`error` of each table (and of each of its parts) from a measurement;
    /// a table measured in parts gets their sum.
    pub fn apply_rows(&mut self, results: &rows::RowResults) {
        for t in &mut self.tables {
            if !t.parts.is_empty() {
                let mut total: Option<RowStats> = Some(RowStats { rows: 0, checksum: None });
                for (i, p) in t.parts.iter_mut().enumerate() {
                    match results.get(&rows::part_job_name(&t.name, &p.key)) {
                        Some(Ok(stats)) => {
                            p.rows = Some(stats.rows);
                            p.checksum = stats.checksum.clone();
                            total =
                                total.and_then(|sum| if i == 0 { Some(stats.clone()) } else { sum.combined(stats) });
                        }
                        Some(Err(e)) => {
                            p.error = Some(e.clone());
                            t.error.get_or_insert_with(|| format!("chunk {}: {e}", p.key));
                        }
                        None => total = None,
                    }
                }
                if t.error.is_none() {
                    if let Some(RowStats { rows, checksum }) = total {
                        t.rows = Some(rows);
                        t.checksum = checksum;
                    }
                }
                continue;
            }
            match results.get(&t.name) {
                Some(Ok(RowStats { rows, checksum })) => {
                    t.rows = Some(*rows);
                    t.checksum = checksum.clone();
                }
                Some(Err(e)) => t.error = Some(e.clone()),
                None => {}
            }
        }
    }
}

/// One read-only connection holding a repeatable-read snapshot that row readers can share.
pub struct Session {
    pub spec: ConnSpec,
    client: Client,
    snapshot: Option<String>,
    /// The roles the database uses (`queries::used_roles_cte`), once computed at this snapshot.
    used_roles: std::sync::OnceLock<String>,
}

impl Session {
    pub async fn open(spec: &ConnSpec) -> Result<Self, UserError> {
        Ok(Self::open_at(spec, None).await?.0)
    }

    /// [`Session::open`] at exactly `snapshot` (an online slot's): an error if it cannot be taken.
    pub async fn open_exactly_at(spec: &ConnSpec, snapshot: &str) -> Result<Self, UserError> {
        match Self::open_at(spec, Some(snapshot)).await? {
            (session, true) => Ok(session),
            (_, false) => Err(UserError::new(
                format!(
                    "{} {}: the online slot's snapshot {snapshot} can no longer be imported",
                    spec.role,
                    spec.label()
                ),
                "start the migration again: pgshift online abort --plan FILE, then pgshift run --online --restart",
            )),
        }
    }

    /// [`Session::open`] at `snapshot` (another session's exported snapshot) when its transaction
    /// is still open; returns whether it was taken (else the session has a snapshot of its own).
    pub async fn open_at(spec: &ConnSpec, snapshot: Option<&str>) -> Result<(Self, bool), UserError> {
        let client = spec.connect().await?;
        let fail = |e: tokio_postgres::Error| {
            UserError::new(
                format!("{} {}: cannot open a read-only snapshot ({})", spec.role, spec.label(), db_message(&e)),
                "connect as a role that can read the catalog (a superuser or the database owner)",
            )
        };
        // catalog queries are small, but where TimescaleDB's catalog was never analyzed (a freshly
        // loaded target) their estimates passed jit_above_cost (compiling one took 0.8 s) and the
        // parallel thresholds (starting the workers of one query took 15-20 ms); sent together
        let settings = format!("{}; SET jit = off; SET max_parallel_workers_per_gather = 0", rows::CANONICAL_SETTINGS);
        let (set, began) = tokio::join!(
            client.batch_execute(&settings),
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        );
        set.and(began).map_err(fail)?;
        let mut imported = false;
        if let Some(id) = snapshot {
            let set = format!("SET TRANSACTION SNAPSHOT {}", crate::postgres::sql::quote_literal(id));
            imported = client.batch_execute(&set).await.is_ok();
            if !imported {
                // its exporting transaction ended: a snapshot of this session's own
                client
                    .batch_execute("ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(fail)?;
            }
        }
        // A standby cannot export snapshots before PostgreSQL 10; then readers take their own.
        let snapshot = match client.query_one("SELECT pg_export_snapshot()", &[]).await {
            Ok(row) => Some(row.get::<_, String>(0)),
            Err(_) => {
                client
                    .batch_execute("ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(fail)?;
                None
            }
        };
        Ok((Self { spec: spec.clone(), client, snapshot, used_roles: Default::default() }, imported))
    }

    /// The database's own properties (settings, privileges, comment, connection limit, locale).
    pub async fn database_properties(&self) -> Result<Vec<database::Property>, UserError> {
        let rows = self
            .guarded_query(database::PROPERTIES_SQL)
            .await
            .map_err(|e| self.query_error("database properties", &e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Every class, TimescaleDB and pgvector state, exclusions, naive counts and the table list.
    /// Row counts are not read here (see [`Session::measure_rows`]).
    pub async fn inventory(&self) -> Result<Inventory, UserError> {
        let row = self
            .guarded_row(
                "server version",
                "SELECT version(), current_setting('server_version_num')::int, current_database(), current_user",
            )
            .await?;
        let server =
            ServerInfo { version: row.get(0), version_num: row.get(1), database: row.get(2), user: row.get(3) };

        let mut objects = BTreeMap::new();
        for class in Class::ALL {
            if let Some(sql) = queries::class_query(class) {
                objects.insert(class, self.definitions(class, &sql).await?);
            }
        }

        if server.version_num >= 150000 {
            let rows = self
                .guarded_query(rare_classes::PUBLICATION_SCHEMAS)
                .await
                .map_err(|e| self.query_error("publications' schemas", &e))?;
            let publications = objects.entry(Class::Publications).or_default();
            for r in rows {
                if let Some(def) = publications.get_mut(&r.get::<_, String>(0)) {
                    def.push_str(&format!("\ntables in schemas {}", r.get::<_, String>(1)));
                }
            }
        }
        let props = self.database_properties().await?;
        objects.insert(Class::Database, database::definitions(&props));
        let mut warnings = Vec::new();
        let mut not_compared = Vec::new();
        let readable: bool = self.guarded_row("role passwords", queries::PASSWORDS_READABLE).await?.get(0);
        if readable {
            objects.insert(
                Class::RolePasswords,
                self.definitions(Class::RolePasswords, &queries::role_passwords()).await?,
            );
        } else {
            not_compared.push(format!(
                "role passwords: {} may not read pg_authid (connect as a superuser to compare whether each login role has a password)",
                server.user
            ));
        }
        let hidden: Vec<String> = self
            .guarded_query(&rare_classes::unreadable_user_mappings())
            .await
            .map_err(|e| self.query_error("user mappings", &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !hidden.is_empty() {
            not_compared.push(format!(
                "user mappings' options: {} may not read those of {} (connect as a superuser, the foreign server's owner or the mapped role to compare them)",
                server.user,
                hidden.join(", ")
            ));
        }
        let timescaledb = match self.guarded_query(extensions::TIMESCALE_VERSION).await {
            Ok(rows) => rows.first().map(|r| TimescaleInfo { version: r.get(0), license: r.get(1) }),
            Err(e) => return Err(self.query_error("TimescaleDB version", &e)),
        };
        let mut cagg_names = BTreeSet::new();
        let mut hypertable_names = BTreeSet::new();
        if timescaledb.is_some() {
            cagg_names =
                self.names(extensions::CAGG_VIEWS).await.map_err(|e| self.query_error("continuous aggregates", &e))?;
            for class in [
                Class::Hypertables,
                Class::Chunks,
                Class::CompressionSettings,
                Class::ContinuousAggregates,
                Class::Jobs,
            ] {
                if class == Class::ContinuousAggregates && cagg_names.is_empty() {
                    // none to describe: the view's plan alone costs 10-25 ms
                    objects.insert(class, Definitions::new());
                    continue;
                }
                let sql = extensions::timescale_query(class).expect("timescale class");
                match self.optional_definitions(class, &sql).await {
                    Ok(defs) => {
                        objects.insert(class, defs);
                    }
                    Err(w) => warnings.push(w),
                }
            }
            // the tablespaces a hypertable's chunks are spread over belong to the tablespaces class
            match self.guarded_query(tablespaces::HYPERTABLE_TABLESPACES).await {
                Ok(rows) => {
                    let placed = objects.entry(Class::Tablespaces).or_default();
                    for r in rows {
                        let spaces: Vec<String> = r.get(1);
                        placed.insert(
                            format!("hypertable {}", r.get::<_, String>(0)),
                            format!("chunks in tablespaces {}", spaces.join(", ")),
                        );
                    }
                }
                Err(e) => warnings.push(format!("hypertables' tablespaces not read: {}", db_message(&e))),
            }
            hypertable_names =
                self.names(extensions::HYPERTABLE_NAMES).await.map_err(|e| self.query_error("hypertables", &e))?;
            if let Some(views) = objects.get_mut(&Class::Views) {
                views.retain(|name, _| !cagg_names.contains(name));
            }
        }
        let pgvector = match self.guarded_query(extensions::VECTOR_VERSION).await {
            Ok(rows) => rows.first().map(|r| r.get::<_, String>(0)),
            Err(e) => return Err(self.query_error("pgvector version", &e)),
        };
        if pgvector.is_some() {
            for class in [Class::VectorColumns, Class::VectorIndexes] {
                let sql = extensions::vector_query(class).expect("vector class");
                match self.optional_definitions(class, &sql).await {
                    Ok(defs) => {
                        objects.insert(class, defs);
                    }
                    Err(w) => warnings.push(w),
                }
            }
        }

        let excluded = self
            .guarded_query(queries::excluded_counts())
            .await
            .map_err(|e| self.query_error("excluded objects", &e))?
            .iter()
            .map(|r| Excluded { owner: r.get(0), what: r.get(1), count: r.get(2) })
            .collect();
        let n = self.guarded_row("naive counts", queries::naive_counts()).await?;
        let naive = NaiveCounts {
            tables: n.get(0),
            views: n.get(1),
            functions: n.get(2),
            triggers: n.get(3),
            policies: n.get(4),
            indexes: n.get(5),
        };

        let mut tables = Vec::new();
        for r in self.guarded_query(&queries::row_tables()).await.map_err(|e| self.query_error("table list", &e))? {
            let name: String = r.get(0);
            let relkind: String = r.get(1);
            let kind = if hypertable_names.contains(&name) {
                "hypertable"
            } else if cagg_names.contains(&name) {
                "continuous aggregate"
            } else {
                match relkind.as_str() {
                    "m" => "materialized view",
                    "v" => continue,
                    "p" => "partition",
                    _ => "table",
                }
            };
            tables.push(TableInfo::new(name, kind, r.get(2), r.get(3)));
        }
        // what an aggregate holds is read from its materialization too, not only through its view
        // (which adds raw rows above the watermark for a real-time aggregate)
        if timescaledb.is_some() && !cagg_names.is_empty() {
            let rows = self
                .guarded_query(extensions::MATERIALIZATIONS)
                .await
                .map_err(|e| self.query_error("materializations", &e))?;
            for r in rows {
                let view: String = r.get(0);
                tables.push(TableInfo {
                    relation: Some(r.get(1)),
                    ..TableInfo::new(format!("{view}{MATERIALIZATION_SUFFIX}"), "materialization", 0, r.get(2))
                });
            }
            tables.sort_by(|a, b| a.name.cmp(&b.name));
        }

        // A hypertable's own relation is empty: its size is its chunks'.
        let chunks: BTreeMap<String, (i64, i64)> = if timescaledb.is_some() {
            match self.guarded_query(extensions::HYPERTABLE_CHUNKS).await {
                Ok(rows) => rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect(),
                Err(e) => return Err(self.query_error("hypertable chunks", &e)),
            }
        } else {
            BTreeMap::new()
        };
        for t in tables.iter_mut().filter(|t| matches!(t.kind.as_str(), "hypertable" | "materialization")) {
            let relation = t.relation.clone().unwrap_or_else(|| t.name.clone());
            if let Some(&(count, bytes)) = chunks.get(&relation) {
                t.chunks = Some(count);
                t.bytes = bytes;
            }
        }
        if timescaledb.is_some() {
            let rows =
                self.guarded_query(&extensions::chunks_query()).await.map_err(|e| self.query_error("chunks", &e))?;
            // a hypertable by its name, an aggregate's materialization by its view
            let owners: BTreeMap<String, usize> = tables
                .iter()
                .enumerate()
                .filter_map(|(i, t)| match t.kind.as_str() {
                    "hypertable" => Some((t.name.clone(), i)),
                    _ => t.aggregate().map(|view| (view.to_string(), i)),
                })
                .collect();
            for r in rows {
                let owner: String = r.get(0);
                let key: Option<String> = r.get(1);
                if let Some(&i) = owners.get(&owner) {
                    tables[i].parts.push(TablePart {
                        key: key.unwrap_or_else(|| "(no slices)".into()),
                        relation: r.get(2),
                        compressed: r.get(3),
                        rows: None,
                        checksum: None,
                        error: None,
                    });
                }
            }
            // in key order: chunk ids follow creation order, which differs between servers
            for t in &mut tables {
                t.parts.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }

        Ok(Inventory {
            pgshift_version: env!("CARGO_PKG_VERSION").into(),
            server,
            timescaledb,
            pgvector,
            objects,
            excluded,
            naive,
            tables,
            warnings,
            not_compared,
        })
    }

    /// The exported snapshot other sessions (pg_dump --snapshot) can share, when the server gave one.
    pub fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }

    /// The first column of every row of `sql`, as text, read at this session's snapshot.
    pub async fn strings(&self, what: &str, sql: &str) -> Result<Vec<String>, UserError> {
        let rows = self.guarded_query(sql).await.map_err(|e| self.query_error(what, &e))?;
        Ok(rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect())
    }

    /// Every row of `sql`, read at this session's snapshot.
    pub async fn rows(&self, what: &str, sql: &str) -> Result<Vec<tokio_postgres::Row>, UserError> {
        self.guarded_query(sql).await.map_err(|e| self.query_error(what, &e))
    }

    /// Like `strings`, but a failure is returned as the server's error (a query that older
    /// versions of an extension cannot answer), leaving the snapshot usable.
    pub async fn try_strings(&self, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
        Ok(self.guarded_query(sql).await?.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect())
    }

    /// Runs `sql` in the snapshot's transaction (a `LOCK TABLE` held until the session closes).
    pub async fn execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(sql).await
    }

    /// Counts or checksums the given tables with `workers` connections sharing this snapshot.
    pub async fn measure_rows(
        &self,
        jobs: Vec<RowJob>,
        mode: RowMode,
        workers: usize,
        progress: Option<std::sync::Arc<rows::RowProgress>>,
    ) -> Result<rows::RowResults, UserError> {
        rows::measure(&self.spec, self.snapshot.clone(), jobs, mode, workers, progress).await
    }

    /// Each large object's size and content hash, at this snapshot; the server's error when the
    /// session may not read one.
    pub async fn large_object_contents(&self) -> Result<Definitions, String> {
        self.guarded_query(rare_classes::LARGE_OBJECT_CONTENTS)
            .await
            .map(|r| named_rows(&r))
            .map_err(|e| db_message(&e))
    }

    /// This server's answer to `rows::IN_SERVER_PROBE`; None where it has no answer (before 14).
    pub async fn in_server_probe(&self) -> Option<String> {
        self.guarded_query(rows::IN_SERVER_PROBE).await.ok()?.first().map(|r| r.get(0))
    }

    pub async fn close(self) {
        let _ = self.client.batch_execute("COMMIT").await;
    }

    async fn definitions(&self, class: Class, sql: &str) -> Result<Definitions, UserError> {
        let rows = self.guarded_query(sql).await.map_err(|e| self.query_error(&class.label(), &e))?;
        Ok(named_rows(&rows))
    }

    /// Like `definitions`, but a failure (an extension version with another catalog) is a warning.
    async fn optional_definitions(&self, class: Class, sql: &str) -> Result<Definitions, String> {
        self.guarded_query(sql)
            .await
            .map(|rows| named_rows(&rows))
            .map_err(|e| format!("{} not read: {}", class.label(), db_message(&e)))
    }

    async fn names(&self, sql: &str) -> Result<BTreeSet<String>, tokio_postgres::Error> {
        Ok(self.guarded_query(sql).await?.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// A query inside a savepoint, so its failure does not abort the snapshot transaction; tried
    /// again (at the same snapshot) when the server's error was a transient one.
    async fn guarded_query(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        // built once: every guarded query is looked through for it
        static USED_ROLES_CTE: std::sync::LazyLock<String> = std::sync::LazyLock::new(queries::used_roles_cte);
        let cte = USED_ROLES_CTE.as_str();
        if !sql.contains(cte) {
            return self.guarded_query_as_is(sql).await;
        }
        // several classes start from the roles the database uses; found once (the snapshot does
        // not change), they are given to the others as a list: 10-15 ms less for each
        let used = match self.used_roles.get() {
            Some(used) => used.clone(),
            None => {
                let sql = format!("{cte}\nSELECT coalesce(array_agg(oid ORDER BY oid), '{{}}')::text FROM relevant");
                let used: String = self.guarded_query_as_is(&sql).await?[0].get(0);
                self.used_roles.get_or_init(|| used).clone()
            }
        };
        self.guarded_query_as_is(&sql.replace(cte, &queries::used_roles_given(&used))).await
    }

    async fn guarded_query_as_is(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let mut attempt = 1;
        loop {
            // one round trip: the savepoint, the query (unnamed, no separate prepare) and the release
            // are sent together; after a failed query the release fails too and the savepoint undoes it
            let (opened, result, released) = tokio::join!(
                self.client.batch_execute("SAVEPOINT guarded"),
                self.client.query_typed(sql, &[]),
                self.client.batch_execute("RELEASE SAVEPOINT guarded"),
            );
            opened?;
            let e = match result {
                Ok(rows) => return released.map(|_| rows),
                Err(e) => e,
            };
            self.client.batch_execute("ROLLBACK TO SAVEPOINT guarded; RELEASE SAVEPOINT guarded").await?;
            if !(transient::is_transient(&e) && attempt < transient::READ_ATTEMPTS) {
                return Err(e);
            }
            attempt += 1;
        }
    }

    /// The first row of `sql`, which always returns one (see [`Session::guarded_query`]).
    async fn guarded_row(&self, what: &str, sql: &str) -> Result<tokio_postgres::Row, UserError> {
        let rows = self.guarded_query(sql).await.map_err(|e| self.query_error(what, &e))?;
        rows.into_iter().next().ok_or_else(|| {
            UserError::new(
                format!("{} {}: reading {what} returned no row", self.spec.role, self.spec.label()),
                "report a bug with the server's version",
            )
        })
    }

    fn query_error(&self, what: &str, e: &tokio_postgres::Error) -> UserError {
        UserError::new(
            format!("{} {}: reading {what} failed ({})", self.spec.role, self.spec.label(), db_message(e)),
            "connect as a superuser or the database owner so the whole catalog is readable",
        )
    }
}

/// The server's message without the "db error:" prefix.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Whether a failed query means the session is gone — the server stopped, the connection broke —
/// rather than that the statement failed.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    e.is_closed()
        || e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"))
        || e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// A failed query on `spec` as one line: a lost connection names the server and says so (whatever
/// the query was for); any other failure is `what: the server's message` with `fix`.
pub fn failed_query(spec: &ConnSpec, what: &str, e: &tokio_postgres::Error, fix: &str) -> UserError {
    if connection_lost(e) {
        return UserError::new(
            format!("{what}: the connection to the {} {} was lost ({})", spec.role, spec.label(), db_message(e)),
            "check that the server runs (a container: pgshift env status and pgshift env logs), then run again \
             to resume",
        );
    }
    UserError::new(format!("{what}: {}", db_message(e)), fix)
}

/// `(name, definition)` rows; a row without a name (an object dropped while being read) is skipped.
fn named_rows(rows: &[tokio_postgres::Row]) -> Definitions {
    rows.iter()
        .filter_map(|r| {
            let name: Option<String> = r.try_get(0).ok().flatten();
            name.map(|n| (n, normalize(r.try_get::<_, Option<String>>(1).ok().flatten())))
        })
        .collect()
}

/// Trailing blanks on each line are noise between servers; the rest of a definition is kept as is.
pub fn normalize(def: Option<String>) -> String {
    let def = def.unwrap_or_default();
    let lines: Vec<&str> = def.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

/// Row jobs for every table of an inventory (its own columns), one per part for a table in parts.
pub fn row_jobs(inv: &Inventory) -> Vec<RowJob> {
    inv.tables.iter().flat_map(|t| t.row_jobs(t.columns.clone(), rows::HashForm::Text)).collect()
}

/// `pgshift inventory`: everything, with exact row counts.
pub async fn collect(spec: &ConnSpec, rows: Option<RowMode>, workers: usize) -> Result<Inventory, UserError> {
    let session = Session::open(spec).await?;
    let mut inv = session.inventory().await?;
    if let Some(mode) = rows {
        let results = session.measure_rows(row_jobs(&inv), mode, workers, None).await?;
        inv.apply_rows(&results);
    }
    session.close().await;
    Ok(inv)
}

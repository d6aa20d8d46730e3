//! Applying the source's decoded changes to the target, exactly once: inserts batched into COPY,
//! updates and deletes by the replica identity (one row each, or the catch-up stops: the target
//! then differs from the source), all in target transactions that also store the applied source
//! position (`pgshift.online_position`). The statement text is built by pure functions below.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use pg_walstream::{ColumnData, TupleData};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::catalog::db_message;
use crate::error::UserError;
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::quote_ident;

/// Inserts held for one COPY before they are sent.
const COPY_BATCH_ROWS: usize = 10_000;

/// The target table a source relation's changes go to, and the columns both sides share.
#[derive(Debug, Clone)]
pub struct Route {
    /// The source relation, for messages (`schema.table`).
    pub source: String,
    /// The target table, quoted (`"schema"."table"`).
    pub target: String,
    /// The source relation's columns in its order (the tuples' order).
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone)]
pub struct Column {
    /// Quoted name.
    pub name: String,
    /// The target column's type, as `format_type` spells it.
    pub type_sql: String,
    /// Part of the replica identity the source sends.
    pub key: bool,
}

/// One value of a tuple as a statement parameter (text format): `None` for NULL.
fn value(c: &ColumnData) -> Option<String> {
    if c.is_null() {
        None
    } else {
        Some(String::from_utf8_lossy(c.as_bytes()).into_owned())
    }
}

/// Appends one row to COPY text: tab-separated, `\N` for NULL, backslash, tab, newline and
/// carriage return escaped.
pub fn copy_line(tuple: &TupleData, out: &mut Vec<u8>) {
    for (i, c) in tuple.columns.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        if c.is_null() || c.is_unchanged() {
            out.extend_from_slice(b"\\N");
            continue;
        }
        for &b in c.as_bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    }
    out.push(b'\n');
}

/// Which old row an UPDATE or DELETE names.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// The replica identity's columns (a key): `col = value`, at most one row.
    Key(Vec<usize>),
    /// Every column (REPLICA IDENTITY FULL): the first row equal in all of them — `=` where the old
    /// value is not NULL (so an index can find the row), `IS NULL` where it is.
    Full { equal: Vec<usize>, null: Vec<usize> },
}

/// The old row's identity: from the old tuple when the source sent one (`K` key, `O` full row),
/// else the key columns of the new tuple (the key did not change).
pub fn identity(route: &Route, old: Option<(&TupleData, char)>, new: Option<&TupleData>) -> Identity {
    match old {
        Some((t, 'O')) => {
            let sent = (0..route.columns.len()).filter(|&i| t.columns.get(i).is_some_and(|c| !c.is_unchanged()));
            let (null, equal) = sent.partition(|&i| t.columns[i].is_null());
            Identity::Full { equal, null }
        }
        Some(_) | None => {
            let _ = new;
            Identity::Key(route.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect())
        }
    }
}

fn cast(n: usize, column: &Column) -> String {
    format!("CAST(${n} AS {})", column.type_sql)
}

/// The WHERE clause naming the old row, with parameters numbered from `first`.
fn row_condition(route: &Route, id: &Identity, first: usize) -> String {
    match id {
        Identity::Key(cols) => cols
            .iter()
            .enumerate()
            .map(|(k, &i)| format!("{} = {}", route.columns[i].name, cast(first + k, &route.columns[i])))
            .collect::<Vec<_>>()
            .join(" AND "),
        Identity::Full { equal, null } => {
            let equal = equal
                .iter()
                .enumerate()
                .map(|(k, &i)| format!("{} = {}", route.columns[i].name, cast(first + k, &route.columns[i])))
                .chain(null.iter().map(|&i| format!("{} IS NULL", route.columns[i].name)))
                .collect::<Vec<_>>()
                .join(" AND ");
            // one row only: a table without a key may hold equal rows, and the source changed one
            format!(
                "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {} LIMIT 1)",
                route.target,
                if equal.is_empty() { "true".into() } else { equal }
            )
        }
    }
}

/// `UPDATE` setting the columns `set` (indexes into the route), the old row by `id`.
pub fn update_sql(route: &Route, set: &[usize], id: &Identity) -> String {
    let assignments = set
        .iter()
        .enumerate()
        .map(|(k, &i)| format!("{} = {}", route.columns[i].name, cast(k + 1, &route.columns[i])))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE {} SET {assignments} WHERE {}", route.target, row_condition(route, id, set.len() + 1))
}

/// `DELETE` of the old row named by `id`.
pub fn delete_sql(route: &Route, id: &Identity) -> String {
    format!("DELETE FROM {} WHERE {}", route.target, row_condition(route, id, 1))
}

/// `COPY` of the route's columns, in the source's order.
pub fn copy_sql(route: &Route) -> String {
    let cols = route.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    format!("COPY {} ({cols}) FROM STDIN", route.target)
}

/// The columns whose old values are the statement's identity parameters, in order.
fn id_columns(id: &Identity) -> &[usize] {
    match id {
        Identity::Key(c) | Identity::Full { equal: c, .. } => c,
    }
}

/// The source relations (by OID) whose changes committed target transactions applied, each with
/// the number of the last commit that changed it (commits counted from 1): for live verification.
#[derive(Debug, Default)]
pub struct Touches {
    pub commits: u64,
    pub last: HashMap<u32, u64>,
}

pub type TouchedRelations = std::sync::Arc<std::sync::Mutex<Touches>>;

/// The target session changes are applied in, with its open transaction and pending COPY.
pub struct Applier {
    target: ConnSpec,
    client: Client,
    slot: String,
    statements: HashMap<String, Statement>,
    open: bool,
    copy_route: Option<Arc<Route>>,
    copy_rows: usize,
    copy_buf: Vec<u8>,
    /// Changes applied in the open transaction.
    pub pending_changes: u64,
    /// The source relations the open transaction's changes came from, and where they go once
    /// committed.
    touching: std::collections::HashSet<u32>,
    touched: Option<TouchedRelations>,
}

/// The table holding the applied position, on the target, dropped at cutover.
pub const POSITION_SCHEMA: &str = "pgshift";

impl Applier {
    /// A target session that fires no user trigger, with the position table made if missing.
    pub async fn open(target: &ConnSpec, slot: &str) -> Result<Self, UserError> {
        let client = target.connect().await?;
        client
            .batch_execute(&format!(
                "{}; SET session_replication_role = replica; SET synchronous_commit = on; \
                 CREATE SCHEMA IF NOT EXISTS {POSITION_SCHEMA}; \
                 CREATE TABLE IF NOT EXISTS {POSITION_SCHEMA}.online_position \
                 (slot text PRIMARY KEY, lsn pg_lsn NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                crate::catalog::rows::CANONICAL_SETTINGS
            ))
            .await
            .map_err(|e| {
                UserError::new(
                    format!("target {}: cannot prepare the catch-up session ({})", target.label(), db_message(&e)),
                    "connect to the target as a superuser (session_replication_role needs one)",
                )
            })?;
        Ok(Self {
            target: target.clone(),
            client,
            slot: slot.to_string(),
            statements: HashMap::new(),
            open: false,
            copy_route: None,
            copy_rows: 0,
            copy_buf: Vec::new(),
            pending_changes: 0,
            touching: std::collections::HashSet::new(),
            touched: None,
        })
    }

    /// Records, at each commit, the source relations the committed changes came from into `touched`.
    pub fn record_into(&mut self, touched: TouchedRelations) {
        self.touched = Some(touched);
    }

    /// A change of source relation `id` is part of the open transaction (applied or not: a
    /// compression's rows move a chunk's relations too).
    pub fn touch(&mut self, id: u32) {
        if self.touched.is_some() {
            self.touching.insert(id);
        }
    }

    fn error(&self, what: &str, e: &tokio_postgres::Error) -> UserError {
        UserError::new(
            format!("target {}: {what} failed ({})", self.target.label(), db_message(e)),
            "fix the target, then run again: the catch-up resumes from the last position it stored",
        )
    }

    /// The position stored by an earlier catch-up of this slot, if any.
    pub async fn stored_position(&self) -> Result<Option<String>, UserError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT lsn::text FROM {POSITION_SCHEMA}.online_position WHERE slot = $1"),
                &[&self.slot],
            )
            .await
            .map_err(|e| self.error("reading the stored position", &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The columns of a target table, by name: (quoted name, type), or `None` if it is missing.
    pub async fn target_columns(&self, table: &str) -> Result<Option<HashMap<String, String>>, UserError> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table],
            )
            .await
            .map_err(|e| self.error("reading a table's columns", &e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect()))
    }

    /// The target's materialization hypertable of a continuous aggregate (`schema.view`, quoted as
    /// `format('%I.%I')` quotes), or `None` if the target has no such aggregate.
    pub async fn materialization_of(&self, view: &str) -> Result<Option<String>, UserError> {
        let row = self
            .client
            .query_opt(
                "SELECT format('%I.%I', h.schema_name, h.table_name) FROM _timescaledb_catalog.continuous_agg a \
                 JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id \
                 WHERE format('%I.%I', a.user_view_schema, a.user_view_name) = $1",
                &[&view],
            )
            .await
            .map_err(|e| self.error("reading a continuous aggregate's materialization", &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn begin(&mut self) -> Result<(), UserError> {
        if !self.open {
            self.client.batch_execute("BEGIN").await.map_err(|e| self.error("BEGIN", &e))?;
            self.open = true;
        }
        Ok(())
    }

    /// Whether a target transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub async fn insert(&mut self, route: &Arc<Route>, tuple: &TupleData) -> Result<(), UserError> {
        self.begin().await?;
        if self.copy_route.as_ref().is_some_and(|r| !Arc::ptr_eq(r, route)) {
            self.flush().await?;
        }
        if self.copy_route.is_none() {
            self.copy_route = Some(route.clone());
        }
        copy_line(tuple, &mut self.copy_buf);
        self.copy_rows += 1;
        self.pending_changes += 1;
        if self.copy_rows >= COPY_BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the inserts held for COPY.
    async fn flush(&mut self) -> Result<(), UserError> {
        let Some(route) = self.copy_route.take() else { return Ok(()) };
        let data = Bytes::from(std::mem::take(&mut self.copy_buf));
        self.copy_rows = 0;
        let sink = self.client.copy_in(&copy_sql(&route)).await.map_err(|e| self.error("COPY", &e))?;
        futures_util::pin_mut!(sink);
        sink.send(data).await.map_err(|e| self.error(&format!("COPY into {}", route.target), &e))?;
        sink.finish().await.map_err(|e| self.error(&format!("COPY into {}", route.target), &e))?;
        Ok(())
    }

    async fn statement(&mut self, sql: String, params: usize) -> Result<Statement, UserError> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(&sql, &vec![Type::TEXT; params])
            .await
            .map_err(|e| self.error("preparing a change", &e))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    async fn one_row(
        &mut self,
        route: &Route,
        kind: &str,
        sql: String,
        values: Vec<Option<String>>,
    ) -> Result<(), UserError> {
        let stmt = self.statement(sql, values.len()).await?;
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let n = self
            .client
            .execute(&stmt, &params)
            .await
            .map_err(|e| self.error(&format!("{kind} on {}", route.target), &e))?;
        if n != 1 {
            return Err(UserError::new(
                format!(
                    "catch-up: an {kind} of the source's {} found {n} rows on the target where it changed one: \
                     the target no longer matches the source",
                    route.source
                ),
                "find what changed the target's table outside pgshift, then start the migration again with --restart",
            ));
        }
        self.pending_changes += 1;
        Ok(())
    }

    pub async fn update(
        &mut self,
        route: &Arc<Route>,
        old: Option<(&TupleData, char)>,
        new: &TupleData,
    ) -> Result<(), UserError> {
        self.begin().await?;
        self.flush().await?;
        let id = identity(route, old, Some(new));
        let set: Vec<usize> =
            (0..route.columns.len()).filter(|&i| new.columns.get(i).is_some_and(|c| !c.is_unchanged())).collect();
        let key_source = old.map(|(t, _)| t).unwrap_or(new);
        let mut values: Vec<Option<String>> = set.iter().map(|&i| value(&new.columns[i])).collect();
        values.extend(id_columns(&id).iter().map(|&i| key_source.columns.get(i).and_then(value)));
        self.one_row(route, "UPDATE", update_sql(route, &set, &id), values).await
    }

    pub async fn delete(&mut self, route: &Arc<Route>, old: &TupleData, key_type: char) -> Result<(), UserError> {
        self.begin().await?;
        self.flush().await?;
        let id = identity(route, Some((old, key_type)), None);
        let values = id_columns(&id).iter().map(|&i| old.columns.get(i).and_then(value)).collect();
        self.one_row(route, "DELETE", delete_sql(route, &id), values).await
    }

    pub async fn truncate(&mut self, routes: &[Arc<Route>]) -> Result<(), UserError> {
        if routes.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        self.flush().await?;
        let names = routes.iter().map(|r| r.target.as_str()).collect::<Vec<_>>().join(", ");
        self.client.batch_execute(&format!("TRUNCATE {names}")).await.map_err(|e| self.error("TRUNCATE", &e))?;
        self.pending_changes += 1;
        Ok(())
    }

    /// Stores `lsn` as applied and commits everything applied since the last commit.
    pub async fn commit(&mut self, lsn: &str) -> Result<(), UserError> {
        self.begin().await?;
        self.flush().await?;
        self.client
            .execute(
                &format!(
                    "INSERT INTO {POSITION_SCHEMA}.online_position (slot, lsn) VALUES ($1, $2::text::pg_lsn) \
                     ON CONFLICT (slot) DO UPDATE SET lsn = excluded.lsn, applied_at = now()"
                ),
                &[&self.slot, &lsn],
            )
            .await
            .map_err(|e| self.error("storing the applied position", &e))?;
        let committed = self.client.batch_execute("COMMIT").await;
        // recorded even when the COMMIT's answer is lost (it may have committed): the safe side
        if let Some(touched) = &self.touched {
            let mut t = touched.lock().expect("touched lock");
            t.commits += 1;
            let n = t.commits;
            t.last.extend(self.touching.drain().map(|id| (id, n)));
        }
        committed.map_err(|e| self.error("COMMIT", &e))?;
        self.open = false;
        self.pending_changes = 0;
        Ok(())
    }

    /// Drops the position table's schema (at cutover, once every change is applied).
    pub async fn drop_position(&self) -> Result<(), UserError> {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(POSITION_SCHEMA)))
            .await
            .map_err(|e| self.error("dropping the pgshift schema", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ColumnData {
        ColumnData::text(s.as_bytes().to_vec())
    }

    fn route(keys: &[bool]) -> Route {
        Route {
            source: "public.t".into(),
            target: "\"public\".\"t\"".into(),
            columns: keys
                .iter()
                .enumerate()
                .map(|(i, &key)| Column { name: format!("c{i}"), type_sql: "integer".into(), key })
                .collect(),
        }
    }

    #[test]
    fn copy_text_escapes_what_copy_reads_as_structure() {
        let t = TupleData::new(vec![text("a\tb\\c\nd\re"), ColumnData::null(), text("x")]);
        let mut out = Vec::new();
        copy_line(&t, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re\t\\N\tx\n");
    }

    #[test]
    fn an_update_names_the_row_by_its_key_and_leaves_unchanged_toast_alone() {
        let r = route(&[true, false, false]);
        let id = identity(&r, None, None);
        assert_eq!(id, Identity::Key(vec![0]));
        assert_eq!(
            update_sql(&r, &[1], &id),
            "UPDATE \"public\".\"t\" SET c1 = CAST($1 AS integer) WHERE c0 = CAST($2 AS integer)"
        );
        assert_eq!(delete_sql(&r, &id), "DELETE FROM \"public\".\"t\" WHERE c0 = CAST($1 AS integer)");
    }

    #[test]
    fn a_full_identity_changes_one_of_several_equal_rows() {
        let r = route(&[true, true]);
        let old = TupleData::new(vec![text("1"), ColumnData::null()]);
        let id = identity(&r, Some((&old, 'O')), None);
        assert_eq!(id, Identity::Full { equal: vec![0], null: vec![1] });
        assert_eq!(
            delete_sql(&r, &id),
            "DELETE FROM \"public\".\"t\" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM \"public\".\"t\" \
             WHERE c0 = CAST($1 AS integer) AND c1 IS NULL LIMIT 1)"
        );
    }

    #[test]
    fn copy_names_the_source_columns_in_order() {
        assert_eq!(copy_sql(&route(&[true, false])), "COPY \"public\".\"t\" (c0, c1) FROM STDIN");
    }
}

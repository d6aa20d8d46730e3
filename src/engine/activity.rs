//! What a running stage's server sessions are doing, read from the servers themselves while the
//! stage runs: the progress views (`pg_stat_progress_create_index`, `_copy`, `_analyze`,
//! `_vacuum`) as progress items, and a session waiting for a lock named with the session that
//! holds it — so that a step the stage cannot meter itself (an index pg_restore builds, an ANALYZE)
//! still moves, and a step that stopped says why. Sessions are found by the stage's
//! application name; each server is polled over one connection of its own, once a second.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{Event, StageContext, Unit};
use crate::postgres::conn::ConnSpec;

/// How often the servers are asked.
const POLL: Duration = Duration::from_secs(1);
/// A wait that goes on is said again this often (the plain output's cadence).
const REPEAT: Duration = Duration::from_secs(10);
/// A statement no progress view covers gets a gauge of the seconds it has run once it has run
/// this long (a step of more than 2 s always has a moving figure).
const RUNNING_WORTH_SAYING: i64 = 2;
/// A wait shorter than this is a lock taken in passing, not news: it is said once it lasts.
const WAIT_WORTH_SAYING: Duration = Duration::from_secs(3);

/// A server gauge's last figure: (done, total, unit).
pub(super) type Gauge = (u64, Option<u64>, Unit);
/// The server gauges a watcher has shown and not yet seen end, by item.
pub(super) type OpenItems = std::sync::Mutex<HashMap<String, Gauge>>;

/// A session of the stage that waits for another one (a lock, a buffer pin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWait {
    /// `source` or `target`.
    pub server: String,
    pub pid: i32,
    /// The start of the statement that waits.
    pub statement: String,
    /// The server's wait event, as `Lock relation`.
    pub wait: String,
    /// How long pgshift has seen it waiting.
    pub seconds: u64,
    /// The session holding what it waits for: pid, application, user, state and statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
}

impl SessionWait {
    /// One line: `target pid 4242 waits for Lock relation for 12 s (CREATE INDEX ...), held by pid 4343 (...)`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} pid {} waits for {} for {} s ({})",
            self.server, self.pid, self.wait, self.seconds, self.statement
        );
        if let Some(b) = &self.blocker {
            s.push_str(&format!(", held by {b}"));
        }
        s
    }
}

/// Sessions of the application `$1` that are running a statement, with their progress view (if
/// any) and, when they wait for another session, that session. Views the server lacks are left
/// out (copy from 14, analyze from 13).
pub fn activity_sql(version_num: i32) -> String {
    // (view, progress as [done, total, unit], what it works on); a relation's name is read only in
    // the database the watcher is connected to (an OID means nothing elsewhere)
    let here =
        |oid: &str| format!("CASE WHEN a.datname = current_database() AND {oid} <> 0 THEN {oid}::regclass::text END");
    let mut views = vec![
        (
            "pg_stat_progress_create_index",
            "CASE WHEN p.blocks_total > 0 THEN jsonb_build_array(p.blocks_done * bs.v, p.blocks_total * bs.v, 'bytes')
                  WHEN p.tuples_total > 0 THEN jsonb_build_array(p.tuples_done, p.tuples_total, 'rows') END"
                .to_string(),
            format!("lower(p.command) || ' ' || coalesce({}, 'on ' || {})", here("p.index_relid"), here("p.relid")),
        ),
        (
            "pg_stat_progress_vacuum",
            "CASE WHEN p.heap_blks_total > 0 THEN jsonb_build_array(p.heap_blks_scanned * bs.v, p.heap_blks_total * bs.v, 'bytes') END"
                .to_string(),
            format!("'vacuum ' || {}", here("p.relid")),
        ),
    ];
    if version_num >= 130000 {
        views.push((
            "pg_stat_progress_analyze",
            "CASE WHEN p.sample_blks_total > 0 THEN jsonb_build_array(p.sample_blks_scanned * bs.v, p.sample_blks_total * bs.v, 'bytes') END"
                .to_string(),
            format!("'analyze ' || {}", here("p.relid")),
        ));
    }
    if version_num >= 140000 {
        views.push((
            "pg_stat_progress_copy",
            "CASE WHEN p.bytes_total > 0 THEN jsonb_build_array(p.bytes_processed, p.bytes_total, 'bytes')
                  ELSE jsonb_build_array(p.tuples_processed, NULL, 'rows') END"
                .to_string(),
            format!("lower(p.command) || ' ' || {}", here("p.relid")),
        ));
    }
    let pick = |expr: &dyn Fn(&(&str, String, String)) -> String| {
        views
            .iter()
            .map(|v| format!("(SELECT {} FROM {} p WHERE p.pid = a.pid)", expr(v), v.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // a statement that may carry a password (or its hash) is not shown
    let statement = |q: &str, n: u32| {
        format!(
            "CASE WHEN {q} ~* 'password' THEN '(a statement naming a password, not shown)' \
             ELSE left(regexp_replace({q}, '\\s+', ' ', 'g'), {n}) END"
        )
    };
    let (statement_a, statement_b) = (statement("a.query", 72), statement("b.query", 60));
    let progress = pick(&|v| v.1.clone());
    let label = pick(&|v| v.2.clone());
    format!(
        r#"WITH bs AS (SELECT current_setting('block_size')::bigint AS v)
           SELECT a.pid, {statement_a},
                  CASE WHEN a.wait_event_type IN ('Lock', 'BufferPin') THEN a.wait_event_type || ' ' || a.wait_event END,
                  (SELECT format('pid %s (%s, user %s, %s%s: %s)', b.pid,
                                 coalesce(nullif(b.application_name, ''), 'no application name'), b.usename, b.state,
                                 CASE WHEN b.xact_start IS NOT NULL
                                      THEN format(', transaction open %s s', extract(epoch FROM now() - b.xact_start)::bigint) ELSE '' END,
                                 {statement_b})
                     FROM pg_stat_activity b
                    -- asked only of a session that waits: pg_blocking_pids takes the lock manager's locks
                    WHERE a.wait_event_type = 'Lock' AND b.pid = (pg_blocking_pids(a.pid))[1]),
                  coalesce({progress})::text,
                  coalesce({label}),
                  a.query ~* '^\s*copy\M',
                  extract(epoch FROM now() - a.query_start)::bigint
             FROM pg_stat_activity a, bs
            WHERE a.application_name = $1 AND a.state = 'active' AND a.pid <> pg_backend_pid()"#
    )
}

/// One server the stage uses, asked over a connection of its own (made when first needed).
struct Watched {
    spec: ConnSpec,
    client: Option<(Client, String)>,
    tried: Option<Instant>,
}

impl Watched {
    async fn client(&mut self) -> Option<&(Client, String)> {
        if self.client.is_none() && self.tried.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.tried = Some(Instant::now());
            let mut spec = self.spec.clone();
            spec.config.application_name("pgshift watch");
            spec.config.connect_timeout(Duration::from_secs(5));
            if let Ok(c) = spec.connect().await {
                if let Ok(row) = c.query_one("SELECT current_setting('server_version_num')::int", &[]).await {
                    let sql = activity_sql(row.get(0));
                    self.client = Some((c, sql));
                }
            }
        }
        self.client.as_ref()
    }
}

/// Watches the stage's sessions until the stage ends (the caller drops this future then, and
/// closes the gauges left in `open`).
pub(super) async fn watch(ctx: &StageContext, open: &OpenItems) -> Infallible {
    // off only for the benchmark that measures what watching costs (benches/progress_polling.sh)
    if std::env::var("PGSHIFT_SERVER_WATCH").is_ok_and(|v| v == "off") {
        return std::future::pending().await;
    }
    let mut servers: BTreeMap<(String, String), Watched> = BTreeMap::new();
    let mut waiting_since: HashMap<(String, i32), Instant> = HashMap::new();
    let mut said: (Vec<SessionWait>, Instant) = (Vec::new(), Instant::now());
    let mut busy_said: Option<u32> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let specs: Vec<ConnSpec> = ctx.servers.lock().expect("servers lock").clone();
        for spec in &specs {
            let server = spec.label();
            let server = server.rsplit_once('/').map(|(s, _)| s.to_string()).unwrap_or(server);
            servers.entry((spec.role.to_string(), server)).or_insert_with(|| Watched {
                spec: spec.clone(),
                client: None,
                tried: None,
            });
        }
        let mut now_items: HashMap<String, Gauge> = HashMap::new();
        let mut waits = Vec::new();
        let mut still_waiting = Vec::new();
        let mut busy = 0u32;
        let mut asked = false;
        for ((role, _), watched) in servers.iter_mut() {
            let Some((client, sql)) = watched.client().await else { continue };
            let rows = match client.query(sql.as_str(), &[&ctx.application_name()]).await {
                Ok(rows) => {
                    asked = true;
                    busy += rows.len() as u32;
                    rows
                }
                Err(_) => {
                    // the server went away or refuses the query: connect again, not before 10 s
                    watched.client = None;
                    watched.tried = Some(Instant::now());
                    continue;
                }
            };
            for row in rows {
                let pid: i32 = row.get(0);
                let statement: String = row.get::<_, Option<String>>(1).unwrap_or_default();
                if let Some(wait) = row.get::<_, Option<String>>(2) {
                    let since = *waiting_since.entry((role.clone(), pid)).or_insert_with(Instant::now);
                    still_waiting.push((role.clone(), pid));
                    if since.elapsed() < WAIT_WORTH_SAYING {
                        continue; // nor a gauge: a session that waits does not move
                    }
                    waits.push(SessionWait {
                        server: role.clone(),
                        pid,
                        statement: statement.clone(),
                        wait,
                        seconds: since.elapsed().as_secs(),
                        blocker: row.get(3),
                    });
                }
                // the data stage meters its own COPY streams (told by the statement itself, which
                // the text shown may hide)
                if ctx.stage() == "data" && row.get::<_, Option<bool>>(6).unwrap_or(false) {
                    continue;
                }
                if let Some(p) = row.get::<_, Option<String>>(4).and_then(|j| parse_progress(&j)) {
                    // `target 4242: create index on energy.readings`, or the statement where the
                    // view names no relation here; the pid tells apart two builds on one table
                    let what = row.get::<_, Option<String>>(5).filter(|l| l.contains(' ') && !l.ends_with(' '));
                    now_items.insert(format!("{role} {pid}: {}", what.unwrap_or(statement)), p);
                } else if let Some(secs) = row.get::<_, Option<i64>>(7).filter(|s| *s >= RUNNING_WORTH_SAYING) {
                    // no view covers it (a foreign key validated, a view materialized, a chunk
                    // compressed): how long it has run, the statement named; a wait is said above
                    if row.get::<_, Option<String>>(2).is_none() {
                        now_items.insert(format!("{role} {pid}: {statement}"), (secs as u64, None, Unit::Seconds));
                    }
                }
            }
        }
        waiting_since.retain(|key, _| still_waiting.contains(key));
        if asked && busy_said != Some(busy) {
            ctx.send(Event::Sessions { stage: ctx.stage().into(), busy }).await;
            busy_said = Some(busy);
        }
        for (item, (done, total, unit)) in &now_items {
            ctx.progress(item, *done, *total, *unit).await;
        }
        let ended: Vec<(String, Gauge)> = {
            let mut items = open.lock().expect("open items lock");
            let last = std::mem::replace(&mut *items, now_items.clone());
            last.into_iter().filter(|(item, _)| !now_items.contains_key(item)).collect()
        };
        for (item, last) in ended {
            close(ctx, &item, last).await;
        }
        let key = |w: &[SessionWait]| -> Vec<(String, i32, String, Option<String>)> {
            // who waits for what and for whom: not the seconds, which move every round
            let holder = |b: &Option<String>| b.as_deref().map(|b| b.split(" (").next().unwrap_or(b).to_string());
            w.iter().map(|w| (w.server.clone(), w.pid, w.wait.clone(), holder(&w.blocker))).collect()
        };
        let changed = key(&waits) != key(&said.0);
        if changed || (!waits.is_empty() && said.1.elapsed() >= REPEAT) {
            ctx.send(Event::Waits { stage: ctx.stage().into(), waits: waits.clone() }).await;
            said = (waits, Instant::now());
        }
    }
}

/// A gauge whose statement ended (or whose stage did): shown full.
pub(super) async fn close(ctx: &StageContext, item: &str, (done, total, unit): Gauge) {
    let end = total.unwrap_or(done).max(done);
    ctx.progress(item, end, Some(end), unit).await;
}

/// `[done, total|null, "bytes"|"rows"]` from the activity query.
pub fn parse_progress(json: &str) -> Option<(u64, Option<u64>, Unit)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let done = v.get(0)?.as_u64()?;
    let total = v.get(1).and_then(|t| t.as_u64());
    let unit = match v.get(2)?.as_str()? {
        "bytes" => Unit::Bytes,
        _ => Unit::Rows,
    };
    Some((done, total, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_waits_read_as_a_dba_reads_them() {
        assert_eq!(parse_progress("[8192, 81920, \"bytes\"]"), Some((8192, Some(81920), Unit::Bytes)));
        assert_eq!(parse_progress("[120, null, \"rows\"]"), Some((120, None, Unit::Rows)));
        assert_eq!(parse_progress("null"), None);
        let w = SessionWait {
            server: "target".into(),
            pid: 4242,
            statement: "CREATE INDEX big_payload_idx ON public.big USING btree (payload);".into(),
            wait: "Lock relation".into(),
            seconds: 12,
            blocker: Some(
                "pid 4343 (psql, user postgres, idle in transaction, transaction open 30 s: LOCK TABLE public.big)"
                    .into(),
            ),
        };
        assert_eq!(
            w.describe(),
            "target pid 4242 waits for Lock relation for 12 s (CREATE INDEX big_payload_idx ON public.big USING btree (payload);), \
             held by pid 4343 (psql, user postgres, idle in transaction, transaction open 30 s: LOCK TABLE public.big)"
        );
    }
}

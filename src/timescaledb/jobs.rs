//! Jobs and policies recreated as they were: created through TimescaleDB's API by their owner
//! (`add_compression_policy`, `add_job`, ...), then given the source's schedule, retries, config
//! and paused state with `alter_job`. A scheduled job is held (`next_start => 'infinity'`: nothing
//! runs while the migration still writes and verifies) and released after the final verify, to
//! run when the source's would have.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::features::Job;
use crate::catalog;
use crate::engine::run_files::TIMESCALEDB_JOBS;
use crate::error::UserError;
use crate::files::{write_atomic, write_error};
use crate::postgres::conn::ConnSpec;
use crate::postgres::sql::quote_literal;

/// How one job is made on the target: `create` returns the new job's id (run as `role`, so the job
/// belongs to its owner); `alter` takes that id as `$1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    pub what: String,
    /// What identifies the job on a target: procedure, hypertable, config without internal ids.
    pub proc: String,
    pub hypertable: Option<String>,
    pub config: serde_json::Value,
    pub role: Option<String>,
    pub create: String,
    pub alter: String,
    /// Scheduled on the source: held on the target until released.
    pub hold: bool,
    pub next_start: Option<String>,
    pub timezone: Option<String>,
}

/// A job value as an argument: an interval string, or an integer for integer time.
fn time_arg(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(format!("INTERVAL {}", quote_literal(s))),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn interval(text: &str) -> String {
    format!("INTERVAL {}", quote_literal(text))
}

/// The plans for the source's jobs. A job of TimescaleDB's own that pgshift does not know is left
/// out and returned by name, to be reported.
pub fn plans(jobs: &[Job]) -> (Vec<JobPlan>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for j in jobs {
        let cfg = |k: &str| j.config.get(k).filter(|v| !v.is_null());
        let target = j.hypertable.clone().unwrap_or_default();
        let rel = quote_literal(&target);
        let mut start = Vec::new();
        if let Some(s) = &j.initial_start {
            start.push(format!("initial_start => {}::timestamptz", quote_literal(s)));
        }
        if let Some(tz) = &j.timezone {
            start.push(format!("timezone => {}", quote_literal(tz)));
        }
        let start: String = start.iter().map(|s| format!(", {s}")).collect();
        let every = format!("schedule_interval => {}", interval(&j.schedule_interval));
        let name = j.proc.rsplit('.').next().unwrap_or("");
        let internal = j.proc.starts_with("_timescaledb_functions.") || j.proc.starts_with("_timescaledb_internal.");
        // what TimescaleDB's API takes as arguments; the rest of the config is merged in by alter_job
        let (create, merge_config) = match (internal, name) {
            (true, "policy_compression") => {
                let when = match (time_arg(cfg("compress_after")), time_arg(cfg("compress_created_before"))) {
                    (Some(a), _) => format!("compress_after => {a}"),
                    (None, Some(b)) => format!("compress_created_before => {b}"),
                    (None, None) => "compress_after => NULL".into(),
                };
                (format!("SELECT add_compression_policy({rel}, {when}, {every}{start})"), true)
            }
            (true, "policy_retention") => {
                let when = match (time_arg(cfg("drop_after")), time_arg(cfg("drop_created_before"))) {
                    (Some(a), _) => format!("drop_after => {a}"),
                    (None, Some(b)) => format!("drop_created_before => {b}"),
                    (None, None) => "drop_after => NULL".into(),
                };
                (format!("SELECT add_retention_policy({rel}, {when}, {every}{start})"), true)
            }
            (true, "policy_refresh_continuous_aggregate") => (
                format!(
                    "SELECT add_continuous_aggregate_policy({rel}, start_offset => {}, end_offset => {}, {every}{start})",
                    time_arg(cfg("start_offset")).unwrap_or_else(|| "NULL".into()),
                    time_arg(cfg("end_offset")).unwrap_or_else(|| "NULL".into())
                ),
                true,
            ),
            (true, "policy_reorder") => (
                format!(
                    "SELECT add_reorder_policy({rel}, {}{start})",
                    quote_literal(cfg("index_name").and_then(|v| v.as_str()).unwrap_or(""))
                ),
                true,
            ),
            (true, _) => {
                unknown.push(format!("{} (job {})", j.proc, j.id));
                continue;
            }
            (false, _) => {
                let check = j.check.as_ref().map(|c| format!(", check_config => {}::regproc", quote_literal(c))).unwrap_or_default();
                let fixed = j.fixed_schedule.map(|f| format!(", fixed_schedule => {f}")).unwrap_or_default();
                (
                    format!(
                        "SELECT add_job({}::regproc, {}, config => {}::jsonb, scheduled => false{check}{fixed}{start})",
                        quote_literal(&j.proc),
                        interval(&j.schedule_interval),
                        if j.config.is_null() { "NULL".to_string() } else { quote_literal(&j.config.to_string()) }
                    ),
                    false,
                )
            }
        };
        let mut alter = vec!["$1".to_string(), every.clone()];
        if let Some(r) = &j.max_runtime {
            alter.push(format!("max_runtime => {}", interval(r)));
        }
        if let Some(n) = j.max_retries {
            alter.push(format!("max_retries => {n}"));
        }
        if let Some(r) = &j.retry_period {
            alter.push(format!("retry_period => {}", interval(r)));
        }
        // a policy is made on a fixed schedule; turning that on again in alter_job would reset its
        // initial start to now, so only a drifting schedule is said
        if merge_config && j.fixed_schedule == Some(false) {
            alter.push("fixed_schedule => false".into());
        }
        if merge_config {
            // the target's config names its own hypertable ids; everything else is the source's
            let own = without_ids(&j.config);
            alter.push(format!(
                "config => (SELECT b.config FROM _timescaledb_config.bgw_job b WHERE b.id = $1) || {}::jsonb",
                quote_literal(&own.to_string())
            ));
        }
        // alter_job clears a time zone it is not given
        if let Some(tz) = &j.timezone {
            alter.push(format!("timezone => {}", quote_literal(tz)));
        }
        alter.push(format!("scheduled => {}", j.scheduled));
        if j.scheduled {
            alter.push("next_start => 'infinity'".into());
        }
        let what = match &j.hypertable {
            Some(h) => format!("job {} on {h}", j.proc),
            None => format!("job {}", j.proc),
        };
        out.push(JobPlan {
            what,
            proc: j.proc.clone(),
            hypertable: j.hypertable.clone(),
            config: without_ids(&j.config),
            role: j.owner.clone(),
            create,
            alter: format!("SELECT alter_job({})", alter.join(", ")),
            hold: j.scheduled,
            next_start: j.next_start.clone(),
            timezone: j.timezone.clone(),
        });
    }
    (out, unknown)
}

/// A job's config without the internal hypertable ids (they differ on every server).
pub fn without_ids(config: &serde_json::Value) -> serde_json::Value {
    let mut own = config.clone();
    if let Some(o) = own.as_object_mut() {
        o.remove("hypertable_id");
        o.remove("mat_hypertable_id");
    }
    own
}

/// The target's jobs as plans identify them: id, procedure, hypertable (an aggregate by its view),
/// config without internal ids.
pub fn target_jobs_sql() -> String {
    format!(
        "SELECT j.job_id, format('%I.%I', j.proc_schema, j.proc_name), {ht}, coalesce(j.config::text, 'null')
         FROM timescaledb_information.jobs j WHERE j.job_id >= 1000 ORDER BY j.job_id",
        ht = crate::catalog::queries::user_hypertable_sql("j.hypertable_schema", "j.hypertable_name")
    )
}

/// A scheduled job made by pgshift and held until the migration is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldJob {
    /// The job's id on the target.
    pub id: i32,
    pub what: String,
    /// When the source would run it next.
    pub next_start: Option<String>,
    /// Its time zone (alter_job clears one it is not given).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Lets a held job run: at the source's next start, or now if that has passed (a job deleted on
/// the target meanwhile is left alone).
pub fn release_sql(job: &HeldJob) -> String {
    let when = match &job.next_start {
        Some(t) => format!("greatest({}::timestamptz, now())", quote_literal(t)),
        None => "now()".into(),
    };
    let tz = job.timezone.as_ref().map(|t| format!(", timezone => {}", quote_literal(t))).unwrap_or_default();
    format!(
        "SELECT alter_job(job_id, next_start => {when}{tz}) FROM timescaledb_information.jobs WHERE job_id = {}",
        job.id
    )
}

/// The scheduled jobs the TimescaleDB stage made on the target and holds until verify releases
/// them (`timescaledb-jobs.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MadeJobs {
    pub held: Vec<HeldJob>,
}

impl MadeJobs {
    pub fn load(dir: &Path) -> Self {
        std::fs::read_to_string(dir.join(TIMESCALEDB_JOBS))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, dir: &Path) -> Result<(), UserError> {
        let path = dir.join(TIMESCALEDB_JOBS);
        write_atomic(&path, serde_json::to_string_pretty(self).expect("jobs serialize").as_bytes())
            .map_err(|e| write_error(&path, &e))
    }
}

/// Releases the jobs held on the target: each runs next when the source's would have (or now, if
/// that has passed). Returns how many.
pub async fn release_jobs(target: &ConnSpec, dir: &Path) -> Result<usize, UserError> {
    let mut made = MadeJobs::load(dir);
    if made.held.is_empty() {
        return Ok(0);
    }
    let client = target.connect().await?;
    for job in &made.held {
        client.batch_execute(&release_sql(job)).await.map_err(|e| {
            catalog::failed_query(
                target,
                &format!("releasing {}", job.what),
                &e,
                "check the job on the target (timescaledb_information.jobs)",
            )
        })?;
    }
    let n = made.held.len();
    made.held.clear();
    made.save(dir)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(proc: &str, hypertable: Option<&str>, config: serde_json::Value) -> Job {
        Job {
            id: 1000,
            proc: proc.into(),
            hypertable: hypertable.map(String::from),
            schedule_interval: "12:00:00".into(),
            config,
            owner: Some("pgshift_ingest".into()),
            max_runtime: Some("00:00:00".into()),
            max_retries: Some(-1),
            retry_period: Some("01:00:00".into()),
            scheduled: true,
            fixed_schedule: Some(true),
            initial_start: Some("2030-01-01 02:00:00+00".into()),
            next_start: Some("2030-01-01 02:00:00+00".into()),
            timezone: None,
            check: Some("_timescaledb_functions.policy_compression_check".into()),
        }
    }

    #[test]
    fn a_policy_is_made_by_its_api_and_gets_the_rest_of_its_config() {
        let j = job(
            "_timescaledb_functions.policy_compression",
            Some("m.readings"),
            serde_json::json!({"hypertable_id": 1, "compress_after": "10 days", "maxchunks_to_compress": 5}),
        );
        let (p, unknown) = plans(&[j]);
        assert!(unknown.is_empty());
        assert_eq!(
            p[0].create,
            "SELECT add_compression_policy('m.readings', compress_after => INTERVAL '10 days', schedule_interval => \
             INTERVAL '12:00:00', initial_start => '2030-01-01 02:00:00+00'::timestamptz)"
        );
        assert_eq!(
            p[0].alter,
            "SELECT alter_job($1, schedule_interval => INTERVAL '12:00:00', max_runtime => INTERVAL '00:00:00', \
             max_retries => -1, retry_period => INTERVAL '01:00:00', config => (SELECT b.config \
             FROM _timescaledb_config.bgw_job b WHERE b.id = $1) || '{\"compress_after\":\"10 days\",\"maxchunks_to_compress\":5}'::jsonb, \
             scheduled => true, next_start => 'infinity')"
        );
        assert!(p[0].hold && p[0].role.as_deref() == Some("pgshift_ingest"));
    }

    #[test]
    fn a_paused_user_job_stays_paused_and_is_not_held() {
        let mut j = job("metrics.rollup", None, serde_json::json!({"keep": 30}));
        j.scheduled = false;
        j.check = None;
        j.timezone = Some("Europe/Berlin".into());
        let (p, _) = plans(&[j]);
        assert_eq!(
            p[0].create,
            "SELECT add_job('metrics.rollup'::regproc, INTERVAL '12:00:00', config => '{\"keep\":30}'::jsonb, \
             scheduled => false, fixed_schedule => true, initial_start => '2030-01-01 02:00:00+00'::timestamptz, \
             timezone => 'Europe/Berlin')"
        );
        assert!(p[0].alter.ends_with("timezone => 'Europe/Berlin', scheduled => false)"), "{}", p[0].alter);
        assert!(!p[0].alter.contains("config =>"), "a user job's config is given whole at creation");
        assert!(!p[0].hold);
    }

    #[test]
    fn refresh_retention_and_unknown_jobs() {
        let (p, unknown) = plans(&[
            job(
                "_timescaledb_functions.policy_refresh_continuous_aggregate",
                Some("m.hourly"),
                serde_json::json!({"mat_hypertable_id": 5, "start_offset": "3 days", "end_offset": null}),
            ),
            job("_timescaledb_functions.policy_retention", Some("m.events"), serde_json::json!({"drop_after": 400})),
            job("_timescaledb_functions.policy_something_new", None, serde_json::Value::Null),
        ]);
        assert!(p[0].create.starts_with(
            "SELECT add_continuous_aggregate_policy('m.hourly', start_offset => INTERVAL '3 days', end_offset => NULL, "
        ));
        assert!(
            p[1].create.starts_with("SELECT add_retention_policy('m.events', drop_after => 400, "),
            "{}",
            p[1].create
        );
        assert_eq!(unknown, ["_timescaledb_functions.policy_something_new (job 1000)"]);
    }

    #[test]
    fn a_held_job_is_released_no_earlier_than_now() {
        let held =
            HeldJob { id: 1007, what: "job".into(), next_start: Some("2030-01-01 02:00:00+00".into()), timezone: None };
        assert_eq!(
            release_sql(&held),
            "SELECT alter_job(job_id, next_start => greatest('2030-01-01 02:00:00+00'::timestamptz, now())) \
             FROM timescaledb_information.jobs WHERE job_id = 1007"
        );
        let berlin = HeldJob { next_start: None, timezone: Some("Europe/Berlin".into()), ..held };
        assert_eq!(
            release_sql(&berlin),
            "SELECT alter_job(job_id, next_start => now(), timezone => 'Europe/Berlin') \
             FROM timescaledb_information.jobs WHERE job_id = 1007"
        );
    }
}

//! Exact row counts and content checksums per table, read in parallel by a pool of connections
//! that all share one exported snapshot, so every table is seen at the same moment.
//!
//! A checksum streams `COPY (SELECT cols FROM table) TO STDOUT` and adds up a 128-bit hash of each
//! row's text: independent of row order (no sort on the server), memory flat in table size, and a
//! single changed value changes it. Sessions use fixed output settings so both servers print a value
//! the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::{pin_mut, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use xxhash_rust::xxh3::xxh3_128;

use crate::conn::ConnSpec;
use crate::error::UserError;

/// Output settings that make a row's text identical on any server of the same major version.
pub const CANONICAL_SETTINGS: &str = "SET search_path = pg_catalog; SET DateStyle = 'ISO, YMD'; \
    SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
    SET bytea_output = 'hex'; SET lc_monetary = 'C'; SET statement_timeout = 0; \
    SET idle_in_transaction_session_timeout = 0; SET lock_timeout = '30s'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMode {
    Count,
    Checksum,
}

/// One table to read: its display name, what follows FROM (`ONLY s.t` or `s.t`), and the columns.
#[derive(Debug, Clone)]
pub struct RowJob {
    pub name: String,
    pub from: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowStats {
    pub rows: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// Per table: its stats, or the error reading it (permission denied, ...).
pub type RowResults = BTreeMap<String, Result<RowStats, String>>;

/// Reads every job with `workers` connections importing `snapshot` (when given).
pub async fn measure(
    spec: &ConnSpec,
    snapshot: Option<String>,
    jobs: Vec<RowJob>,
    mode: RowMode,
    workers: usize,
) -> Result<RowResults, UserError> {
    let workers = workers.clamp(1, jobs.len().max(1));
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let client = spec.connect().await?;
        prepare(&client, snapshot.as_deref()).await.map_err(|e| {
            UserError::new(
                format!("{} {}: cannot start a consistent read ({e})", spec.role, spec.label()),
                "check that the server allows REPEATABLE READ snapshots and enough connections",
            )
        })?;
        let queue = queue.clone();
        let in_tx = snapshot.is_some();
        handles.push(tokio::spawn(async move {
            let mut out = RowResults::new();
            loop {
                let job = queue.lock().expect("queue lock").pop_front();
                let Some(job) = job else { break };
                let result = read_one(&client, &job, mode, in_tx).await;
                out.insert(job.name, result);
            }
            let _ = client.batch_execute("COMMIT").await;
            out
        }));
    }
    let mut all = RowResults::new();
    for h in handles {
        all.extend(
            h.await
                .map_err(|e| UserError::new(format!("row reader stopped: {e}"), "retry; report a bug if it repeats"))?,
        );
    }
    Ok(all)
}

async fn prepare(client: &Client, snapshot: Option<&str>) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(CANONICAL_SETTINGS).await?;
    if let Some(id) = snapshot {
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                id.replace('\'', "")
            ))
            .await?;
    }
    Ok(())
}

async fn read_one(client: &Client, job: &RowJob, mode: RowMode, in_tx: bool) -> Result<RowStats, String> {
    if in_tx {
        client.batch_execute("SAVEPOINT row_read").await.map_err(|e| e.to_string())?;
    }
    let result = match mode {
        RowMode::Count => count(client, job).await,
        RowMode::Checksum => checksum(client, job).await,
    };
    if in_tx {
        let undo = if result.is_ok() { "RELEASE SAVEPOINT row_read" } else { "ROLLBACK TO SAVEPOINT row_read" };
        client.batch_execute(undo).await.map_err(|e| e.to_string())?;
    }
    result.map_err(|e| match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    })
}

async fn count(client: &Client, job: &RowJob) -> Result<RowStats, tokio_postgres::Error> {
    let row = client.query_one(&format!("SELECT count(*) FROM {}", job.from), &[]).await?;
    Ok(RowStats { rows: row.get(0), checksum: None })
}

async fn checksum(client: &Client, job: &RowJob) -> Result<RowStats, tokio_postgres::Error> {
    let cols = if job.columns.is_empty() { "1".to_string() } else { job.columns.join(", ") };
    let stream = client.copy_out(&format!("COPY (SELECT {cols} FROM {}) TO STDOUT", job.from)).await?;
    pin_mut!(stream);
    let mut hasher = RowHasher::default();
    while let Some(chunk) = stream.next().await {
        hasher.feed(&chunk?);
    }
    let (rows, sum) = hasher.finish();
    Ok(RowStats { rows, checksum: Some(format!("{sum:032x}")) })
}

/// Splits COPY text output into rows (a raw newline ends a row; newlines inside values are escaped)
/// and sums a 128-bit hash of each row.
#[derive(Default)]
pub struct RowHasher {
    carry: Vec<u8>,
    rows: i64,
    sum: u128,
}

impl RowHasher {
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                self.add(&data[..pos]);
            } else {
                self.carry.extend_from_slice(&data[..pos]);
                let line = std::mem::take(&mut self.carry);
                self.add(&line);
            }
            data = &data[pos + 1..];
        }
        self.carry.extend_from_slice(data);
    }

    fn add(&mut self, line: &[u8]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxh3_128(line));
    }

    pub fn finish(mut self) -> (i64, u128) {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            self.add(&line);
        }
        (self.rows, self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(chunks: &[&[u8]]) -> (i64, u128) {
        let mut h = RowHasher::default();
        for c in chunks {
            h.feed(c);
        }
        h.finish()
    }

    #[test]
    fn independent_of_chunking_and_order() {
        let whole = hash(&[b"1\ta\n2\tb\n3\tc\n"]);
        assert_eq!(whole.0, 3);
        assert_eq!(whole, hash(&[b"1\ta", b"\n2\t", b"b\n3\tc\n"]));
        assert_eq!(whole, hash(&[b"3\tc\n", b"1\ta\n", b"2\tb\n"]));
    }

    #[test]
    fn one_changed_value_changes_the_sum() {
        assert_ne!(hash(&[b"1\ta\n2\tb\n"]).1, hash(&[b"1\ta\n2\tB\n"]).1);
        // swapping values between rows keeps the count but not the content
        assert_ne!(hash(&[b"1\ta\n2\tb\n"]).1, hash(&[b"1\tb\n2\ta\n"]).1);
    }
}

//! Exact row counts and content checksums per table, read in parallel by a pool of connections
//! that all share one exported snapshot, so every table is seen at the same moment.
//!
//! A checksum adds up a hash of each row: independent of row order (no sort on the server), memory
//! flat in table size, and a single changed value changes it. Three ways, chosen per comparison
//! (`HashForm`): inside each server, where only the sum crosses the network (same major, and both
//! servers hash a probe row alike); here, over each row's binary COPY form (same major); or here,
//! over each row's COPY text (any two servers). Sessions use fixed output settings so both servers
//! print a value the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{pin_mut, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use xxhash_rust::xxh3::xxh3_128;

use crate::error::UserError;
use crate::postgres::conn::ConnSpec;
use crate::postgres::transient;

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

/// How rows are hashed. Both sides of a comparison must use the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashForm {
    /// Each row's COPY text, hashed here: any two servers.
    Text,
    /// Each row's binary COPY form (built-in types as they are, others as text), hashed here:
    /// servers of the same major.
    Binary,
    /// Hashed inside each server (`hash_record_extended` over values whose hash is their identity);
    /// only a count and a sum cross the network. Servers of the same major whose hashes of a probe
    /// row (every type used, a non-ASCII text) are equal.
    InServer,
}

/// One table to read: its display name, what follows FROM (`ONLY s.t` or `s.t`), and the columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowJob {
    pub name: String,
    pub from: String,
    pub columns: Vec<String>,
    pub form: HashForm,
}

/// A row of every type the in-server checksum hashes natively or through its send function. Two
/// servers whose answers differ (another major, byte order or database encoding) are compared by
/// hashing here instead.
pub const IN_SERVER_PROBE: &str =
    "SELECT hash_record_extended(ROW(true, '\\x00ff'::bytea, 'c'::\"char\", 7::int2, 7::int4, \
    7::int8, 'Zürich 東京'::text COLLATE \"C\", 'ab'::varchar COLLATE \"C\", 'nm'::name, bpcharsend('a '::bpchar), \
    '2026-01-31'::date, '12:34:56.789'::time, '2026-01-31 12:34:56.789'::timestamp, \
    '2026-01-31 12:34:56.789+02'::timestamptz, '12:34+02'::timetz, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, \
    float4send(1.5), float8send(-0.0), numeric_send(1.50), interval_send('1 day 2 hours'), \
    ('{1,2}'::int[])::text COLLATE \"C\"), 0)::text";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowStats {
    pub rows: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// How far a `measure` is: tables read of the tables to read, and the rows they held (shared
/// with whoever shows it while the reading goes on).
#[derive(Debug, Default)]
pub struct RowProgress {
    pub tables: AtomicU64,
    pub done: AtomicU64,
    pub rows: AtomicU64,
}

impl RowProgress {
    /// (tables read, tables to read, rows read).
    pub fn get(&self) -> (u64, u64, u64) {
        (self.done.load(Ordering::Relaxed), self.tables.load(Ordering::Relaxed), self.rows.load(Ordering::Relaxed))
    }
}

/// Per table: its stats, or the error reading it (permission denied, ...).
pub type RowResults = BTreeMap<String, Result<RowStats, String>>;

impl RowStats {
    /// The stats of two disjoint sets of rows together (checksums are sums, so they add up), if
    /// both were hashed the same way.
    pub fn combined(self, other: &RowStats) -> Option<RowStats> {
        let checksum = match (&self.checksum, &other.checksum) {
            (None, None) => None,
            (Some(a), Some(b)) => Some(match (a.strip_prefix("srv:"), b.strip_prefix("srv:")) {
                (Some(x), Some(y)) => format!("srv:{}", x.parse::<i128>().ok()?.checked_add(y.parse::<i128>().ok()?)?),
                (None, None) => {
                    let sum = u128::from_str_radix(a, 16).ok()?.wrapping_add(u128::from_str_radix(b, 16).ok()?);
                    format!("{sum:032x}")
                }
                _ => return None,
            }),
            _ => return None,
        };
        Some(RowStats { rows: self.rows + other.rows, checksum })
    }
}

/// The name a part's measurement is filed under: the table's name and the part's key.
pub fn part_job_name(table: &str, key: &str) -> String {
    format!("{table}\u{1f}{key}")
}

/// Reads every job with `workers` connections importing `snapshot` (when given).
pub async fn measure(
    spec: &ConnSpec,
    snapshot: Option<String>,
    jobs: Vec<RowJob>,
    mode: RowMode,
    workers: usize,
    progress: Option<Arc<RowProgress>>,
) -> Result<RowResults, UserError> {
    let progress = progress.unwrap_or_default();
    progress.tables.store(jobs.len() as u64, Ordering::Relaxed);
    let workers = workers.clamp(1, jobs.len().max(1));
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    // the readers' sessions are set up side by side: each costs a connection's setup
    let clients = futures_util::future::try_join_all((0..workers).map(|_| async {
        let client = spec.connect().await?;
        prepare(&client, snapshot.as_deref()).await.map_err(|e| {
            UserError::new(
                format!("{} {}: cannot start a consistent read ({e})", spec.role, spec.label()),
                "check that the server allows REPEATABLE READ snapshots and enough connections",
            )
        })?;
        Ok::<_, UserError>(client)
    }))
    .await?;
    let mut readers = Readers { spec: spec.clone(), running: Vec::new() };
    for client in clients {
        let token = client.cancel_token();
        let queue = queue.clone();
        let in_tx = snapshot.is_some();
        let progress = progress.clone();
        let reader = tokio::spawn(async move {
            let mut out = RowResults::new();
            loop {
                let job = queue.lock().expect("queue lock").pop_front();
                let Some(job) = job else { break };
                let result = read_one(&client, &job, mode, in_tx).await;
                if let Ok(stats) = &result {
                    progress.rows.fetch_add(stats.rows.max(0) as u64, Ordering::Relaxed);
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
                out.insert(job.name, result);
            }
            let _ = client.batch_execute("COMMIT").await;
            out
        });
        readers.running.push((reader, token));
    }
    let mut all = RowResults::new();
    for (reader, _) in &mut readers.running {
        all.extend(
            reader
                .await
                .map_err(|e| UserError::new(format!("row reader stopped: {e}"), "retry; report a bug if it repeats"))?,
        );
    }
    readers.running.clear();
    Ok(all)
}

/// The readers of one [`measure`], stopped when it is dropped before they are done (a live pass
/// cut short by the cutover, a cancelled verify): each reader's task would go on through the
/// queue, and each server on its query, taking the cores from what runs next.
struct Readers {
    spec: ConnSpec,
    running: Vec<(tokio::task::JoinHandle<RowResults>, tokio_postgres::CancelToken)>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        for (reader, token) in self.running.drain(..) {
            if reader.is_finished() {
                continue;
            }
            reader.abort();
            let spec = self.spec.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = spec.cancel(&token).await;
                });
            }
        }
    }
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
    let mut attempt = 1;
    loop {
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
        match result {
            // the same read at the same snapshot: a transient error said nothing about the rows
            Err(e) if transient::is_transient(&e) && attempt < transient::READ_ATTEMPTS => attempt += 1,
            result => {
                return result.map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                })
            }
        }
    }
}

async fn count(client: &Client, job: &RowJob) -> Result<RowStats, tokio_postgres::Error> {
    let row = client.query_one(&format!("SELECT count(*) FROM {}", job.from), &[]).await?;
    Ok(RowStats { rows: row.get(0), checksum: None })
}

async fn checksum(client: &Client, job: &RowJob) -> Result<RowStats, tokio_postgres::Error> {
    let cols = if job.columns.is_empty() { vec!["1".to_string()] } else { job.columns.clone() };
    if job.form == HashForm::InServer {
        return in_server_checksum(client, job, &cols).await;
    }
    let (rows, sum) = if job.form == HashForm::Binary {
        // the binary form skips the text output of floats, timestamps and numbers: cheaper on the
        // server; types that are not built in (their binary form may hold OIDs) are read as text
        let select: Vec<String> = cols
            .iter()
            .zip(column_types(client, job, &cols).await?)
            .map(|(c, t)| if binary_safe(&t) { c.clone() } else { format!("{c}::text") })
            .collect();
        let sql = format!("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)", select.join(", "), job.from);
        let mut hasher = BinaryRowHasher::default();
        stream_copy(client, &sql, |chunk| hasher.feed(chunk)).await?;
        hasher.finish()
    } else {
        let sql = format!("COPY (SELECT {} FROM {}) TO STDOUT", cols.join(", "), job.from);
        let mut hasher = RowHasher::default();
        stream_copy(client, &sql, |chunk| hasher.feed(chunk)).await?;
        hasher.finish()
    };
    Ok(RowStats { rows, checksum: Some(format!("{sum:032x}")) })
}

/// The types of the job's columns, as the server describes them.
async fn column_types(
    client: &Client,
    job: &RowJob,
    cols: &[String],
) -> Result<Vec<tokio_postgres::types::Type>, tokio_postgres::Error> {
    let probe = client.prepare(&format!("SELECT {} FROM {} LIMIT 0", cols.join(", "), job.from)).await?;
    Ok(probe.columns().iter().map(|c| c.type_().clone()).collect())
}

/// Runs a `COPY ... TO STDOUT` and hands each chunk of its output to `feed`.
async fn stream_copy(client: &Client, sql: &str, mut feed: impl FnMut(&[u8])) -> Result<(), tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        feed(&chunk?);
    }
    Ok(())
}

/// The server hashes every row and adds the hashes up: no row leaves it. Each value is hashed in a
/// form where equal hashes mean equal bytes (`hash_record_extended` hashes by type equality, under
/// which 1.0 = 1.00 and '1 day' = '24 hours'): numbers, intervals and padded text through their
/// send functions, text under the "C" collation, other types as text. The row's hash combines its
/// columns linearly, so each is mixed (xor-shift) before the sum: otherwise two rows trading one
/// column's values would leave the sum unchanged.
async fn in_server_checksum(client: &Client, job: &RowJob, cols: &[String]) -> Result<RowStats, tokio_postgres::Error> {
    let values: Vec<String> =
        cols.iter().zip(column_types(client, job, cols).await?).map(|(c, t)| hashable(c, t.oid())).collect();
    // OFFSET 0 keeps the subquery whole: flattened, `h` would be computed once per use
    let sql = format!(
        "SELECT count(*), coalesce(sum(h # (h >> 29) # (h << 23)), 0)::text \
         FROM (SELECT hash_record_extended(ROW({}), 0) AS h FROM {} OFFSET 0) q",
        values.join(", "),
        job.from
    );
    let row = client.query_one(&sql, &[]).await?;
    let sum: String = row.get(1);
    Ok(RowStats { rows: row.get(0), checksum: Some(format!("srv:{sum}")) })
}

/// A column as hashed in the server (see `in_server_checksum`), by its type's OID.
fn hashable(column: &str, type_oid: u32) -> String {
    match type_oid {
        // bool, bytea, "char", int8, int2, int4, date, time, timestamp, timestamptz, timetz, uuid
        16 | 17 | 18 | 20 | 21 | 23 | 1082 | 1083 | 1114 | 1184 | 1266 | 2950 => column.to_string(),
        // text, varchar, name: bytes, whatever the column's collation
        25 | 1043 | 19 => format!("({column} COLLATE \"C\")"),
        1042 => format!("bpcharsend({column})"),
        700 => format!("float4send({column})"),
        701 => format!("float8send({column})"),
        1700 => format!("numeric_send({column})"),
        1186 => format!("interval_send({column})"),
        _ => format!("({column}::text COLLATE \"C\")"),
    }
}

/// OIDs below this are the server's own (built-in) objects.
const FIRST_USER_OID: u32 = 16384;

/// Whether a type's binary form means the same on any server of the same major: built in, and not
/// an OID alias (`regclass` & co. send OIDs, which differ between servers) nor `aclitem` (no binary
/// form).
fn binary_safe(t: &tokio_postgres::types::Type) -> bool {
    let name = t.name().trim_start_matches('_');
    t.oid() < FIRST_USER_OID && !name.starts_with("reg") && name != "aclitem" && name != "oid"
}

/// Splits binary COPY output into tuples and sums a 128-bit hash of each tuple's bytes (its field
/// count, lengths and values). Tuples split across chunks wait in a small carry buffer.
#[derive(Default)]
pub struct BinaryRowHasher {
    carry: Vec<u8>,
    header_done: bool,
    rows: i64,
    sum: u128,
}

impl BinaryRowHasher {
    pub fn feed(&mut self, data: &[u8]) {
        if self.carry.is_empty() {
            let used = self.consume(data);
            self.carry.extend_from_slice(&data[used..]);
        } else {
            self.carry.extend_from_slice(data);
            let carry = std::mem::take(&mut self.carry);
            let used = self.consume(&carry);
            self.carry = carry[used..].to_vec();
        }
    }

    /// Hashes the complete tuples at the start of `data`; returns how many bytes they took.
    fn consume(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        if !self.header_done {
            let Some(header) = binary_header_len(data) else { return 0 };
            pos = header;
            self.header_done = true;
        }
        while let Some(len) = tuple_len(&data[pos..]) {
            let tuple = &data[pos..pos + len];
            if tuple == [0xff, 0xff] {
                return data.len(); // the trailer: nothing follows
            }
            self.rows += 1;
            self.sum = self.sum.wrapping_add(xxh3_128(tuple));
            pos += len;
        }
        pos
    }

    pub fn finish(self) -> (i64, u128) {
        (self.rows, self.sum)
    }
}

/// The length of a binary COPY header at the start of `data`: PGCOPY\n\xff\r\n\0, flags (4
/// bytes), header extension length (4) and extension.
pub fn binary_header_len(data: &[u8]) -> Option<usize> {
    if !data.starts_with(b"PGCOPY\n\xff\r\n\0") || data.len() < 19 {
        return None;
    }
    let ext = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
    (data.len() >= 19 + ext).then_some(19 + ext)
}

/// The length of the complete tuple (or trailer) at the start of `data`, if all of it is there.
pub fn tuple_len(data: &[u8]) -> Option<usize> {
    let count = i16::from_be_bytes([*data.first()?, *data.get(1)?]);
    if count == -1 {
        return Some(2);
    }
    let mut off = 2usize;
    for _ in 0..count.max(0) {
        let len = i32::from_be_bytes(data.get(off..off + 4)?.try_into().ok()?);
        off += 4 + len.max(0) as usize;
        if off > data.len() {
            return None;
        }
    }
    Some(off)
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

    /// A binary COPY stream: header, then tuples of (count, (len, bytes)*), then the trailer.
    fn binary(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in *row {
                match field {
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn binary_tuples_split_anywhere_hash_the_same_and_nulls_count() {
        let stream = binary(&[&[Some(b"\0\0\0\x01"), Some(b"abc")], &[Some(b"\0\0\0\x02"), None]]);
        let whole = {
            let mut h = BinaryRowHasher::default();
            h.feed(&stream);
            h.finish()
        };
        assert_eq!(whole.0, 2);
        for cut in 0..stream.len() {
            for cut2 in cut..stream.len() {
                let mut h = BinaryRowHasher::default();
                h.feed(&stream[..cut]);
                h.feed(&stream[cut..cut2]);
                h.feed(&stream[cut2..]);
                assert_eq!(h.finish(), whole, "cut at {cut} and {cut2}");
            }
        }
        let other = binary(&[&[Some(b"\0\0\0\x01"), Some(b"abc")], &[Some(b"\0\0\0\x02"), Some(b"")]]);
        let mut h = BinaryRowHasher::default();
        h.feed(&other);
        assert_ne!(h.finish().1, whole.1, "NULL and empty differ");
    }

    #[test]
    fn parts_add_up_to_the_whole() {
        let whole = hash(&[b"1\ta\n2\tb\n3\tc\n"]);
        let (a, b) = (hash(&[b"1\ta\n"]), hash(&[b"2\tb\n3\tc\n"]));
        let stats = |(rows, sum): (i64, u128)| RowStats { rows, checksum: Some(format!("{sum:032x}")) };
        assert_eq!(stats(a).combined(&stats(b)), Some(stats(whole)));
        let srv = |rows: i64, sum: &str| RowStats { rows, checksum: Some(format!("srv:{sum}")) };
        assert_eq!(srv(2, "-5").combined(&srv(3, "9223372036854775807")), Some(srv(5, "9223372036854775802")));
        assert_eq!(srv(1, "1").combined(&stats(a)), None, "two hash forms do not add up");
        let count = |rows: i64| RowStats { rows, checksum: None };
        assert_eq!(count(2).combined(&count(3)), Some(count(5)));
    }

    #[test]
    fn one_changed_value_changes_the_sum() {
        assert_ne!(hash(&[b"1\ta\n2\tb\n"]).1, hash(&[b"1\ta\n2\tB\n"]).1);
        // swapping values between rows keeps the count but not the content
        assert_ne!(hash(&[b"1\ta\n2\tb\n"]).1, hash(&[b"1\tb\n2\ta\n"]).1);
    }
}

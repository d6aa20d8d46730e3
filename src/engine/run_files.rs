//! The files of a run directory that stages hand to one another, named once.

/// The source's inventory taken by the backup (the data stage's table list).
pub const INVENTORY: &str = "inventory.json";
/// The pieces (tables, chunks, block ranges) the data stage has committed on the target.
pub const DATA_PROGRESS: &str = "data-progress.json";
/// Schema entries that failed before the data, retried by the post-data stage.
pub const SCHEMA_FAILURES: &str = "schema-failures.json";
/// Target chunks the TimescaleDB stage compresses: compressed rows copied as they are (attached), or
/// rows to compress again.
pub const COMPRESSED_CHUNKS: &str = "compressed-chunks.json";
/// Jobs the TimescaleDB stage made on the target, and which of them are held until verify passes.
pub const TIMESCALEDB_JOBS: &str = "timescaledb-jobs.json";
/// The final verification, as JSON and as Markdown.
pub const VERIFY_JSON: &str = "verify.json";
pub const VERIFY_MARKDOWN: &str = "verify.md";
/// Which source and target the run is for, checked before a later run resumes it.
pub const RUN_FOR: &str = "run-for.json";
/// The run's report: each stage's result and the timeline (start, end, overlap), rewritten when a
/// run ends.
pub const RUN_REPORT: &str = "run.md";

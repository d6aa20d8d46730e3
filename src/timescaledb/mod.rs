//! TimescaleDB as pgshift reads it on the source and recreates it on the target: through
//! TimescaleDB's documented API where it has one (hypertables, compression settings, continuous
//! aggregates, policies, jobs), and through its catalog where it has none (a compressed chunk copied
//! as it is, the refresh state of a continuous aggregate). Pure planning (`statements`-style
//! functions) is kept apart from the few queries that feed it, so the plans are unit-tested.
//! Knowledge: it may use the catalog, the plan's hypertable entries and the adapters; the schema,
//! data, timescaledb and verify code use it alike.

pub mod caggs;
pub mod chunks;
pub mod features;
pub mod installed;
pub mod jobs;

pub use features::{read_features, with_planned, CompressionSetting, ContinuousAggregate, Features, Job};
pub use installed::{has_timescaledb, hypertables, materializations, version};

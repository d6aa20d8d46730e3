//! The checklist's stages, one file each. A stage emits events through its context and never prints.

pub mod backup;
pub mod data;
pub mod environment;
pub mod schema;
pub mod timescaledb;
pub mod tuning;
pub mod vectors;
pub mod verify;

//! The checklist's stages, one file each. A stage emits events through its context and never prints.
//! A stage may use every floor below it (knowledge, core, adapters) but never another stage: what
//! two stages share lives lower down. The checklist builds them; the commands never reach in.

pub mod backup;
pub mod data;
pub mod environment;
pub mod online;
pub mod schema;
pub mod timescaledb;
pub mod tuning;
pub mod vectors;
pub mod verify;

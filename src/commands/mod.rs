//! The commands a DBA types, one file each: `run` (the checklist headless), `plan init`, `demo`,
//! `online abort`,
//! and the `env` commands for the test container. They take plain option structs from `cli` and
//! may use everything below them; nothing below imports them.

pub mod demo;
pub mod env;
pub mod online;
pub mod plan_init;
pub mod run;

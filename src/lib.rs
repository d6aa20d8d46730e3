//! pgshift: move a PostgreSQL database onto a TimescaleDB + pgvector server and prove that nothing
//! was lost. The library holds everything; `main.rs` only parses the command line.
//!
//! Floors, top to bottom (a module imports only from floors below it):
//! `cli` → `commands` → `tui` → `checklist` → `stages` → `verify`, `timescaledb`, `pgtools`, `online` →
//! `catalog` → `engine`, `plan` → `postgres`, `docker`, `files`, `error`, `human`.

pub mod catalog;
pub mod checklist;
pub mod cli;
pub mod commands;
pub mod docker;
pub mod engine;
pub mod error;
pub mod files;
pub mod human;
pub mod online;
pub mod pgtools;
pub mod plan;
pub mod postgres;
pub mod stages;
pub mod timescaledb;
pub mod tui;
pub mod verify;

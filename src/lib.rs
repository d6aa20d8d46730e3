//! pgshift: move a PostgreSQL database onto a TimescaleDB + pgvector server and prove that nothing
//! was lost. The library holds everything; `main.rs` only parses the command line.

pub mod after_data;
pub mod allow;
pub mod catalog;
pub mod cli;
pub mod conn;
pub mod demo;
pub mod docker;
pub mod engine;
pub mod env_commands;
pub mod error;
pub mod files;
pub mod headless;
pub mod journal;
pub mod manifest;
pub mod pgpass;
pub mod plan;
pub mod process;
pub mod report;
pub mod run;
pub mod run_files;
pub mod sql;
pub mod stages;
pub mod timescaledb;
pub mod tls;
pub mod toc;
pub mod tools;
pub mod tui;
pub mod verify;

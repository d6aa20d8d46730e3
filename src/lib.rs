//! pgshift: move a PostgreSQL database onto a TimescaleDB + pgvector server and prove that nothing
//! was lost. The library holds everything; `main.rs` only parses the command line.

pub mod allow;
pub mod catalog;
pub mod cli;
pub mod conn;
pub mod error;
pub mod pgpass;
pub mod report;
pub mod verify;

//! The PostgreSQL client programs pgshift runs (`pg_dump`, `pg_restore`, `pg_dumpall`, `psql`):
//! finding them (`tools`), running them with their output streamed (`process`), reading an
//! archive's table of contents (`toc`), the post-data entries spread over parallel sessions
//! (`build_phases`) and the backup's manifest (`manifest`).
//! Core: it may use the catalog's names, the engine's stage context (to stream output and cancel)
//! and the adapters; the backup and schema stages run it.

pub mod build_phases;
pub mod manifest;
pub mod process;
pub mod toc;
pub mod tools;

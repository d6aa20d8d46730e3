//! Online migration: a logical replication slot made with an exported snapshot that the backup and
//! the copy read at (no gap, no overlap), then the source's changes after that snapshot applied to
//! the target in commit order while the application writes, so that only the cutover sits inside
//! the window. `slot` is the source's side, `stream` follows the slot, `apply` writes the target,
//! `live_hashes` verifies during the catch-up what the stream leaves alone, `preflight` checks the source before anything is made,
//! `unlogged` copies again at cutover the tables whose changes the WAL does not hold.

pub mod apply;
pub mod live_hashes;
pub mod preflight;
pub mod slot;
pub mod stream;
pub mod unlogged;

/// The slot holder the backup, the copy and the catch-up share in one run.
pub type OnlineSlot = std::sync::Arc<slot::SlotHolder>;

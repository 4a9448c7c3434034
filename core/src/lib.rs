//! ketch-core: one Ketch member as a library — `Member::start(MemberConfig)`.
//!
//! A put flows: `server::kv` (validate) → `server::propose` (id, wait registration) →
//! `raft::node` (log append, WAL fdatasync, commit) → `apply` (MVCC write batch, applied index
//! in the same backend transaction) → the waiting request is woken with its response.

pub mod apply;
pub mod cluster;
pub mod compactor;
pub mod config;
mod logging;
pub mod member;
pub mod raft;
pub mod server;
pub mod transport;
pub mod watch;

pub use member::{Member, StartError};

//! ketch-core: one Ketch member as a library — `Member::start(MemberConfig)`.
//!
//! A put flows: `server::kv` (validate) → `server::propose` (id, wait registration) →
//! `raft::node` (log append, WAL fdatasync, commit) → `apply` (MVCC write batch, applied index
//! in the same backend transaction; lease attachments in `lease`) → `watch` (events to
//! watchers) → the waiting request is woken with its response. Leases expire on the leader
//! (`lease::primary`) and are revoked through the log like any write.

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod cluster;
pub mod compactor;
pub mod config;
pub mod lease;
mod logging;
pub mod member;
pub mod raft;
pub mod restore;
pub mod security;
pub mod server;
pub mod transport;
pub mod watch;

pub use member::{Member, StartError};

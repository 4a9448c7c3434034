//! The Raft side of a member: the node thread that owns raft-rs's `RawNode` (node.rs), and how
//! its storage is rebuilt from the WAL at start (bootstrap.rs).

pub mod bootstrap;
pub mod node;

pub use node::{RaftHandle, RaftMsg};

/// Applied entries kept in memory for peers that fall behind (etcd keeps 5000 too); older ones
/// reach a lagging peer as a snapshot.
pub(crate) const CATCH_UP_ENTRIES: u64 = 5000;

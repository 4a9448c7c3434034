//! The Raft side of a member: the node thread that owns raft-rs's `RawNode` (node.rs), and how
//! its storage is rebuilt from the WAL at start (bootstrap.rs).

pub mod bootstrap;
pub mod node;
pub mod persist;

pub use node::{RaftHandle, RaftMsg};

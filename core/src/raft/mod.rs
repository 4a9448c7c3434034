//! The Raft side of a member: the node thread that owns raft-rs's `RawNode` (node.rs), and how
//! its storage is rebuilt from the WAL at start (bootstrap.rs), and the WAL writer (persist.rs).

// raft-rs's rust-protobuf messages are filled field by field after Default (their struct
// literals would have to name rust-protobuf's bookkeeping fields).
#![allow(clippy::field_reassign_with_default)]

pub mod bootstrap;
pub mod node;
pub mod persist;

pub use node::{RaftHandle, RaftMsg};

//! Watch: the hub that hands committed events to watchers (hub.rs, modelled on etcd's
//! watchable store), the key lookup it uses (group.rs), a stream's bounded queue (queue.rs)
//! and one client watch stream (stream.rs). The gRPC service in `server/watch.rs` only starts streams.

pub mod group;
pub mod hub;
pub mod queue;
pub mod stream;

pub use group::KeyRange;
pub use hub::{WatchHub, WatchSpec, WatchUpdate, WatcherId};

#[cfg(test)]
mod tests;

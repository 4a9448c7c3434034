//! The wait registry: a proposing request registers its id and waits; the apply thread (or the
//! raft thread, when a proposal is refused) answers it exactly once. A waiter that gives up
//! (timeout, client gone) removes its entry when its guard drops, so nothing leaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::ApplyResult;

const SHARDS: usize = 16;

/// Sharded so that concurrent proposers and the apply thread rarely meet on one lock.
#[derive(Default)]
pub struct WaitRegistry {
    shards: [Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>; SHARDS],
}

impl WaitRegistry {
    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Registers `id`; the returned guard yields the result and unregisters on drop.
    pub fn register(self: &Arc<Self>, id: u64) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.shard(id).lock().expect("wait shard").insert(id, tx);
        Waiter {
            id,
            rx: Some(rx),
            registry: Arc::clone(self),
        }
    }

    /// Answers the waiter for `id` if it is still waiting here.
    pub fn trigger(&self, id: u64, result: ApplyResult) {
        let tx = self.shard(id).lock().expect("wait shard").remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }

    pub fn is_registered(&self, id: u64) -> bool {
        self.shard(id).lock().expect("wait shard").contains_key(&id)
    }

    fn remove(&self, id: u64) {
        self.shard(id).lock().expect("wait shard").remove(&id);
    }
}

pub struct Waiter {
    id: u64,
    rx: Option<oneshot::Receiver<ApplyResult>>,
    registry: Arc<WaitRegistry>,
}

impl Waiter {
    /// Waits for the result; `None` if the registry dropped the entry without answering.
    pub async fn wait(mut self) -> Option<ApplyResult> {
        let rx = self.rx.take()?;
        rx.await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_api::status::EtcdError;

    #[tokio::test]
    async fn trigger_wakes_waiter_and_drop_unregisters() {
        let reg = Arc::new(WaitRegistry::default());
        let w = reg.register(7);
        reg.trigger(7, Err(EtcdError::Timeout));
        assert!(matches!(w.wait().await, Some(Err(EtcdError::Timeout))));
        let w = reg.register(8);
        assert!(reg.is_registered(8));
        drop(w);
        assert!(!reg.is_registered(8));
    }
}

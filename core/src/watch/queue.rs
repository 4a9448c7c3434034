//! A stream's queue of hub updates, bounded in count and in bytes, so that a client that stops
//! reading holds at most this much of the member's memory. The hub only `try_send`s: a full
//! queue turns the watcher unsynced (see [`super::hub`]); it never waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::hub::WatchUpdate;

/// Bytes an update is counted as: keys and values of its events, plus a little per event.
fn update_bytes(u: &WatchUpdate) -> usize {
    64 + u
        .events
        .iter()
        .map(|e| e.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 32)
        .sum::<usize>()
}

/// The hub's end of a stream's queue.
#[derive(Clone, Debug)]
pub struct UpdateSender {
    tx: mpsc::Sender<WatchUpdate>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The stream's end.
#[derive(Debug)]
pub struct UpdateReceiver {
    rx: mpsc::Receiver<WatchUpdate>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A queue of at most `max_updates` updates and about `max_bytes` bytes (an update larger than
/// that still goes through an empty queue, so nothing is ever stuck for good).
pub fn update_queue(max_updates: usize, max_bytes: usize) -> (UpdateSender, UpdateReceiver) {
    let (tx, rx) = mpsc::channel(max_updates);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        UpdateSender {
            tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes,
        },
        UpdateReceiver { rx, queued_bytes },
    )
}

impl UpdateSender {
    /// Queues `update` unless the queue is full (by count or bytes) or the stream is gone.
    pub fn try_send(&self, update: WatchUpdate) -> Result<(), TrySendError<WatchUpdate>> {
        let size = update_bytes(&update);
        let queued = self.queued_bytes.load(Ordering::Acquire);
        if queued > 0 && queued + size > self.max_bytes {
            return if self.tx.is_closed() {
                Err(TrySendError::Closed(update))
            } else {
                Err(TrySendError::Full(update))
            };
        }
        self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        self.tx.try_send(update).inspect_err(|_| {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }
}

impl UpdateSender {
    /// Whether an update could be queued now (a hint: the stream may drain or fill meanwhile).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0 && self.queued_bytes.load(Ordering::Acquire) < self.max_bytes
    }
}

impl UpdateReceiver {
    pub async fn recv(&mut self) -> Option<WatchUpdate> {
        let u = self.rx.recv().await?;
        self.queued_bytes
            .fetch_sub(update_bytes(&u), Ordering::AcqRel);
        Some(u)
    }

    /// The next update if one is queued (tests).
    pub fn try_recv(&mut self) -> Option<WatchUpdate> {
        let u = self.rx.try_recv().ok()?;
        self.queued_bytes
            .fetch_sub(update_bytes(&u), Ordering::AcqRel);
        Some(u)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ketch_api::mvccpb::{Event, KeyValue};

    fn update(value_len: usize) -> WatchUpdate {
        WatchUpdate {
            watcher: 1,
            revision: 2,
            events: vec![Event {
                kv: Some(KeyValue {
                    key: "k".into(),
                    value: vec![0u8; value_len].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            compact_revision: 0,
        }
    }

    #[test]
    fn bounded_by_count_and_by_bytes_but_an_empty_queue_takes_anything() {
        let (tx, mut rx) = update_queue(3, 10_000);
        assert!(
            tx.try_send(update(50_000)).is_ok(),
            "an empty queue takes a big update"
        );
        assert!(matches!(
            tx.try_send(update(10)),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.try_recv().is_some());
        for _ in 0..3 {
            tx.try_send(update(10)).unwrap();
        }
        assert!(
            matches!(tx.try_send(update(10)), Err(TrySendError::Full(_))),
            "count bound"
        );
        assert!(!tx.has_room());
        while rx.try_recv().is_some() {}
        assert!(rx.is_empty());
        tx.try_send(update(6_000)).unwrap();
        assert!(
            matches!(tx.try_send(update(6_000)), Err(TrySendError::Full(_))),
            "byte bound"
        );
        drop(rx);
        assert!(matches!(
            tx.try_send(update(6_000)),
            Err(TrySendError::Closed(_))
        ));
    }
}

//! The WAL writer thread. The Raft thread hands it each Ready's entries and hard state and
//! goes on ticking, sending heartbeats and appends; this thread writes and fdatasyncs them,
//! then sends the messages that had to wait for the disk (a follower's append responses and
//! votes) and tells the Raft thread the Ready is persisted (raft-rs's asynchronous Ready). A
//! slow fsync therefore delays only what must wait for it — never a heartbeat, so a slow disk
//! does not cause elections (etcd's most common operational complaint).
//!
//! Consecutive Readies queued while a sync ran are written together and synced once. A Ready
//! that only moved the commit index is written without a sync (raft-rs's `must_sync`, etcd's
//! MustSync): on a leader that is every other Ready, and its fsync would delay the next write.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use ketch_wal::{Wal, WalError};
use raft::eraftpb::{Entry, HardState, Message, MessageType, SnapshotMetadata};
use tracing::{error, info, warn};

use super::{RaftHandle, RaftMsg};
use crate::transport::Transport;

pub enum PersistJob {
    /// Everything of Ready `number` that must be durable, and the messages that may go only
    /// after it is.
    Ready {
        number: u64,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        messages: Vec<Message>,
        /// raft-rs's `must_sync`: false when the Ready only moved the commit index.
        must_sync: bool,
    },
    /// A snapshot received from the leader: record its marker.
    Snapshot(SnapshotMetadata),
    /// The backend durably holds everything up to `meta.index`: record a marker and release
    /// the WAL segments before it.
    Compact(SnapshotMetadata),
    Stop,
}

pub struct Persister {
    wal: Wal,
    transport: Arc<Transport>,
    raft: RaftHandle,
}

/// A run of Readies merged into one write.
#[derive(Default)]
struct Batch {
    number: u64,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    must_sync: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.number == 0
    }

    /// Whether `entries` continue this batch's (a rewrite of earlier indexes needs a write of
    /// its own so that the WAL sees the conflict in order).
    fn continues(&self, entries: &[Entry]) -> bool {
        match (self.entries.last(), entries.first()) {
            (Some(last), Some(first)) => first.index == last.index + 1,
            _ => true,
        }
    }
}

impl Persister {
    pub fn new(wal: Wal, transport: Arc<Transport>, raft: RaftHandle) -> Self {
        Persister {
            wal,
            transport,
            raft,
        }
    }

    pub fn run(mut self, rx: Receiver<PersistJob>) {
        let mut batch = Batch::default();
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut next = Some(first);
            // take everything queued, merging Readies, flushing before anything else
            while let Some(job) = next.take() {
                if matches!(job, PersistJob::Stop) {
                    stop = true;
                    break;
                }
                if let Some(n) = self.take(job, &mut batch) {
                    let _ = self.raft.send(RaftMsg::Persisted(n));
                }
                next = rx.try_recv().ok();
            }
            if let Some(n) = self.flush(&mut batch) {
                let _ = self.raft.send(RaftMsg::Persisted(n));
            }
        }
        info!(target: "raft", "WAL writer stopped");
    }

    /// Does one job at once, on the caller's thread (a member without peers, where nothing
    /// can wait for this disk but the member itself). Returns the Ready number now durable.
    pub fn run_inline(&mut self, job: PersistJob) -> Option<u64> {
        let mut batch = Batch::default();
        let flushed = self.take(job, &mut batch);
        self.flush(&mut batch).or(flushed)
    }

    /// Adds a job to `batch`, writing out what must be written first; returns the Ready number
    /// made durable by a write it did.
    fn take(&mut self, job: PersistJob, batch: &mut Batch) -> Option<u64> {
        match job {
            PersistJob::Ready {
                number,
                hard_state,
                entries,
                messages,
                must_sync,
            } => {
                let flushed = if batch.continues(&entries) {
                    None
                } else {
                    self.flush(batch)
                };
                batch.number = number;
                if hard_state.is_some() {
                    batch.hard_state = hard_state;
                }
                batch.entries.extend(entries);
                batch.messages.extend(messages);
                batch.must_sync |= must_sync;
                flushed
            }
            PersistJob::Snapshot(meta) => {
                let flushed = self.flush(batch);
                Self::fatal_on_error(self.wal.save_snapshot(&meta), "record snapshot");
                flushed
            }
            PersistJob::Compact(meta) => {
                let flushed = self.flush(batch);
                Self::fatal_on_error(self.wal.save_snapshot(&meta), "record snapshot");
                if let Err(e) = self.wal.release_to(meta.index) {
                    warn!(target: "raft", "failed to release WAL before {}: {e}", meta.index);
                }
                flushed
            }
            PersistJob::Stop => None,
        }
    }

    /// Writes and syncs `batch`, then sends the messages that waited for it; returns its Ready
    /// number.
    fn flush(&mut self, batch: &mut Batch) -> Option<u64> {
        if batch.is_empty() {
            return None;
        }
        let b = std::mem::take(batch);
        let saved = match &b.hard_state {
            // Only the commit index moved (a leader's Ready after every committed batch):
            // written without a sync of its own, as etcd does.
            Some(hs) if !b.must_sync && b.entries.is_empty() => {
                match self.wal.save_commit_lazily(hs) {
                    Err(WalError::UnsyncedHardState) => self.wal.save(Some(hs), &[]),
                    other => other,
                }
            }
            hs => self.wal.save(hs.as_ref(), &b.entries),
        };
        Self::fatal_on_error(saved, "persist raft state");
        for m in b.messages {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.transport.send_snapshot(m);
            } else if !self.transport.send(m) {
                let _ = self.raft.send(RaftMsg::Unreachable(to));
            }
        }
        Some(b.number)
    }

    /// A WAL that cannot be written leaves this member unable to keep its promises: stop
    /// rather than acknowledge anything more (etcd does the same).
    fn fatal_on_error(r: Result<(), WalError>, what: &str) {
        if let Err(e) = r {
            error!(target: "raft", "fatal: failed to {what}: {e}");
            std::process::abort();
        }
    }
}

/// Where the Raft thread's persistence happens: on the Raft thread itself while the member has
/// no peers (two fewer thread hops per write, and no heartbeat a slow disk could delay), on
/// the WAL writer thread once it has any.
pub enum Persist {
    Inline(Box<Persister>),
    Thread(PersistHandle),
}

/// The Raft thread's handle on the writer.
pub struct PersistHandle {
    pub tx: Sender<PersistJob>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl PersistHandle {
    pub fn send(&self, job: PersistJob) {
        if self.tx.send(job).is_err() {
            error!(target: "raft", "fatal: the WAL writer is gone");
            std::process::abort();
        }
    }

    /// Starts the writer thread with `persister`.
    pub fn spawn(persister: Persister) -> PersistHandle {
        let (tx, jobs) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ketch-wal".into())
            .spawn(move || persister.run(jobs))
            .expect("spawn the WAL writer thread");
        PersistHandle {
            tx,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        let _ = self.tx.send(PersistJob::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

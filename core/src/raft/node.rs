//! The Raft node thread. One OS thread owns raft-rs's `RawNode` and only moves data: it takes
//! proposals, read-index requests and peer messages from one channel, ticks the clock, and for
//! each Ready sends what needs no disk to peers (through [`crate::transport`]), hands entries
//! and hard state to the WAL writer thread ([`super::persist`]), committed entries to the apply
//! thread, and answers read-index requests. It never waits for a disk or a peer. raft-rs is
//! synchronous, so a plain thread (not a tokio task) is the honest shape; the async side talks
//! to it through [`RaftHandle`].
//!
//! Batching: every loop drains all queued requests before asking for a Ready, and the WAL
//! writer merges the Readies queued while it synced, so one fdatasync covers every proposal
//! that arrived meanwhile (group commit); one read-index round covers every linearizable read
//! that queued meanwhile.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ketch_api::ketchpb::MemberRecord;
use ketch_api::status::EtcdError;
use ketch_wal::Wal;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::persist::{Persist, PersistHandle, PersistJob, Persister};
use crate::apply::ApplyTask;
use crate::cluster::ClusterState;
use crate::transport::Transport;

/// Messages a follower may send before its pending writes are durable: they report nothing
/// about its log or vote.
fn needs_no_sync(t: raft::eraftpb::MessageType) -> bool {
    use raft::eraftpb::MessageType::*;
    matches!(
        t,
        MsgHeartbeatResponse | MsgPropose | MsgReadIndex | MsgReadIndexResp | MsgTransferLeader
    )
}

/// How long a read-index round may go unanswered before it is asked again (etcd: 500 ms).
const READ_RETRY: Duration = Duration::from_millis(500);

/// Where a read-index request's answer goes.
type ReadReply = oneshot::Sender<Result<u64, EtcdError>>;

/// What the rest of the member asks of the Raft thread.
pub enum RaftMsg {
    /// Append `data` (an encoded `RaftRequest`) to the log. If it cannot be proposed, the
    /// waiter registered under `id` is answered with the error.
    Propose {
        id: u64,
        data: Vec<u8>,
    },
    /// Propose a membership change (`cc.id` is the waiter's id). A promotion is refused here,
    /// on the leader, unless the learner has caught up (etcd's isLearnerReady).
    ProposeConfChange {
        cc: ConfChange,
    },
    /// The apply thread applied a membership change (`cc` for raft-rs, none for a peer URL
    /// update); `members` is the list after it.
    ConfChangeApplied {
        cc: Option<ConfChange>,
        members: Vec<MemberRecord>,
    },
    /// The WAL writer made Readies up to this number durable.
    Persisted(u64),
    /// How sending a snapshot to a peer ended.
    SnapshotStatus(u64, raft::SnapshotStatus),
    /// Hand leadership to this member (etcd's MoveLeader).
    TransferLeader(u64),
    /// Confirm leadership and report the commit index a linearizable read must wait for.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, EtcdError>>,
    },
    /// A message from a peer.
    Step(Message),
    /// The link to this peer failed; Raft slows down sending to it until it answers again.
    Unreachable(u64),
    /// A peer refused this member's messages because the cluster removed it (it may never
    /// receive the entry that did, once the others stopped sending to it).
    RemovedByPeer(u64),
    /// The apply thread has applied (and committed to the backend) everything up to here.
    Applied(u64),
    /// Record a snapshot at `index` (already durable in the backend) and release the WAL and
    /// in-memory log before it.
    Compact {
        index: u64,
    },
    Stop,
}

/// The async side's handle on the Raft thread.
#[derive(Clone)]
pub struct RaftHandle {
    tx: Sender<RaftMsg>,
}

impl RaftHandle {
    pub fn new(tx: Sender<RaftMsg>) -> Self {
        RaftHandle { tx }
    }

    pub fn send(&self, msg: RaftMsg) -> Result<(), EtcdError> {
        self.tx.send(msg).map_err(|_| EtcdError::Stopped)
    }

    /// Waits until this member has confirmed it may serve a linearizable read and returns the
    /// index the local state must reach first.
    pub async fn read_index(&self) -> Result<u64, EtcdError> {
        let (reply, rx) = oneshot::channel();
        self.send(RaftMsg::ReadIndex { reply })?;
        rx.await.map_err(|_| EtcdError::Stopped)?
    }
}

/// Everything the node thread owns.
pub struct RaftNode {
    pub raw: RawNode<MemStorage>,
    /// handed to the WAL writer thread when the node runs
    wal: Option<Wal>,
    persist: Option<Persist>,
    /// this thread's own handle, for the WAL writer to report to
    handle: RaftHandle,
    pub cluster: Arc<ClusterState>,
    pub apply: ApplyTask,
    pub transport: Arc<Transport>,
    pub heartbeat: Duration,
    /// applied entries kept in memory for peers (`--experimental-snapshot-catchup-entries`)
    pub catchup_entries: u64,
    /// read-index requests waiting for the Ready that answers their round, by round id
    pending_reads: Vec<(u64, Vec<ReadReply>)>,
    /// read-index requests that arrived since the last round was started
    queued_reads: Vec<ReadReply>,
    next_read_round: u64,
    last_read_round_at: Instant,
    last_role: StateRole,
}

impl RaftNode {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: RawNode<MemStorage>,
        wal: Wal,
        handle: RaftHandle,
        cluster: Arc<ClusterState>,
        apply: ApplyTask,
        transport: Arc<Transport>,
        heartbeat: Duration,
        catchup_entries: u64,
    ) -> Self {
        RaftNode {
            raw,
            wal: Some(wal),
            persist: None,
            handle,
            cluster,
            apply,
            transport,
            heartbeat,
            catchup_entries,
            pending_reads: Vec::new(),
            queued_reads: Vec::new(),
            next_read_round: 1,
            last_read_round_at: Instant::now(),
            last_role: StateRole::Follower,
        }
    }

    /// Runs the loop until `Stop` or until every sender is gone.
    pub fn run(mut self, rx: Receiver<RaftMsg>) {
        let wal = self.wal.take().expect("a WAL to write");
        let persister = Persister::new(wal, self.transport.clone(), self.handle.clone());
        self.persist = Some(if self.has_peers() {
            Persist::Thread(PersistHandle::spawn(persister))
        } else {
            Persist::Inline(Box::new(persister))
        });
        // A lone voter need not wait an election timeout to lead its own cluster.
        let voters = self.raw.raft.prs().conf().voters().ids().len();
        if voters == 1
            && self
                .raw
                .raft
                .prs()
                .conf()
                .voters()
                .contains(self.raw.raft.id)
        {
            if let Err(e) = self.raw.campaign() {
                warn!(target: "raft", "campaign failed: {e}");
            }
        }
        let mut next_tick = Instant::now() + self.heartbeat;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        break;
                    }
                    let mut stop = false;
                    while let Ok(msg) = rx.try_recv() {
                        if !self.handle(msg) {
                            stop = true;
                            break;
                        }
                    }
                    if stop {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + self.heartbeat;
            }
            self.start_read_round();
            // persisting inline makes the next Ready (the commit) available at once
            for _ in 0..4 {
                if !self.on_ready() {
                    break;
                }
            }
        }
        if let Some(Persist::Thread(mut p)) = self.persist.take() {
            p.stop();
        }
        self.fail_reads(EtcdError::Stopped);
        info!(target: "raft", "raft node stopped");
    }

    /// Returns false when the loop must stop.
    fn handle(&mut self, msg: RaftMsg) -> bool {
        match msg {
            RaftMsg::Propose { id, data } => {
                if let Err(e) = self.raw.propose(vec![], data) {
                    let err = match e {
                        raft::Error::ProposalDropped => {
                            if self.raw.raft.leader_id == raft::INVALID_ID {
                                EtcdError::NoLeader
                            } else {
                                EtcdError::LeaderChanged
                            }
                        }
                        _ => EtcdError::Stopped,
                    };
                    self.apply.fail_waiter(id, err);
                }
            }
            RaftMsg::ProposeConfChange { cc } => {
                let id = cc.id;
                if let Err(e) = self.check_promotion(&cc) {
                    self.apply.fail_waiter(id, e);
                } else if let Err(e) = self.raw.propose_conf_change(vec![], cc) {
                    let err = match e {
                        raft::Error::ProposalDropped
                            if self.raw.raft.leader_id == raft::INVALID_ID =>
                        {
                            EtcdError::NoLeader
                        }
                        // another change is still pending: etcd answers such a proposal late
                        // with a timeout; say so at once
                        raft::Error::ProposalDropped => EtcdError::Timeout,
                        _ => EtcdError::Stopped,
                    };
                    self.apply.fail_waiter(id, err);
                }
            }
            RaftMsg::ConfChangeApplied { cc, members } => {
                if let Some(cc) = cc {
                    match self.raw.apply_conf_change(&cc) {
                        Ok(cs) => self.raw.mut_store().wl().set_conf_state(cs),
                        Err(e) => {
                            error!(target: "raft", "raft refused an applied conf change: {e}")
                        }
                    }
                }
                self.transport.set_peers(&members);
            }
            RaftMsg::Persisted(number) => self.raw.on_persist_ready(number),
            RaftMsg::SnapshotStatus(to, status) => self.raw.report_snapshot(to, status),
            RaftMsg::TransferLeader(to) => {
                info!(target: "etcdserver", "{:x} starts leadership transfer from {:x} to {to:x}", self.raw.raft.id, self.raw.raft.leader_id);
                self.raw.transfer_leader(to);
            }
            RaftMsg::ReadIndex { reply } => self.queued_reads.push(reply),
            RaftMsg::Step(m) => {
                if let Err(e) = self.raw.step(m) {
                    warn!(target: "raft", "failed to step message: {e}");
                }
            }
            RaftMsg::Unreachable(id) => self.raw.report_unreachable(id),
            RaftMsg::RemovedByPeer(peer) => {
                if !self.cluster.is_removed() {
                    warn!(target: "rafthttp", "peer {peer:x} says this member has been permanently removed from the cluster");
                    self.cluster.mark_self_removed();
                }
            }
            RaftMsg::Applied(index) => {
                if index > self.raw.raft.raft_log.applied {
                    self.raw.advance_apply_to(index);
                }
                self.trim_memory_log(index);
            }
            RaftMsg::Compact { index } => self.compact_log(index),
            RaftMsg::Stop => return false,
        }
        true
    }

    /// Starts one read-index round for every read queued since the last round. A round left
    /// unanswered for [`READ_RETRY`] (its request or answer was lost on the way to or from the
    /// leader, or the leader had not yet committed in its term) is asked again with a new round,
    /// whose answer also answers the older ones, as etcd retries its read index.
    fn start_read_round(&mut self) {
        let stale =
            !self.pending_reads.is_empty() && self.last_read_round_at.elapsed() >= READ_RETRY;
        if self.queued_reads.is_empty() && !stale {
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            for r in self.queued_reads.drain(..) {
                let _ = r.send(Err(EtcdError::NoLeader));
            }
            return;
        }
        let round = self.next_read_round;
        self.next_read_round += 1;
        self.last_read_round_at = Instant::now();
        self.raw.read_index(round.to_be_bytes().to_vec());
        let waiters = std::mem::take(&mut self.queued_reads);
        match self.pending_reads.last_mut() {
            // a retry with nothing new: the newest round's answer covers the same waiters
            Some((r, ws)) if waiters.is_empty() && ws.is_empty() => *r = round,
            _ => self.pending_reads.push((round, waiters)),
        }
    }

    /// etcd's isLearnerReady: a learner may become a voter once its log has reached 90% of the
    /// leader's. Only the leader knows; a follower passes the proposal on unchecked.
    fn check_promotion(&self, cc: &ConfChange) -> Result<(), EtcdError> {
        let raft = &self.raw.raft;
        if cc.get_change_type() != ConfChangeType::AddNode
            || raft.state != StateRole::Leader
            || !raft.prs().conf().learners().contains(&cc.node_id)
        {
            return Ok(());
        }
        let leader_match = raft.prs().get(raft.id).map_or(0, |p| p.matched);
        let learner_match = raft.prs().get(cc.node_id).map_or(0, |p| p.matched);
        if (learner_match as f64) < leader_match as f64 * 0.9 {
            return Err(EtcdError::LearnerNotReady);
        }
        Ok(())
    }

    fn fail_reads(&mut self, err: EtcdError) {
        for (_, ws) in self.pending_reads.drain(..) {
            for w in ws {
                let _ = w.send(Err(err.clone()));
            }
        }
        for w in self.queued_reads.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// One Ready, raft-rs's asynchronous way: messages that need no disk go out first, the log
    /// and hard state go to raft-rs's storage at once and to the WAL writer thread, and the
    /// Ready is advanced without waiting for the disk. The writer reports back
    /// ([`RaftMsg::Persisted`]) and sends the messages that had to wait for the sync; only then
    /// does raft-rs count the entries as persisted here (so a lone member commits, and a client
    /// is answered, only after its entry is on disk).
    /// Returns whether another Ready may be waiting (persistence happened inline).
    fn on_ready(&mut self) -> bool {
        if !self.raw.has_ready() {
            return false;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        if !rd.messages().is_empty() {
            self.send_messages(rd.take_messages());
        }
        if *rd.snapshot() != Snapshot::default() {
            let snap = rd.snapshot().clone();
            // A snapshot from the leader: its backend file was received before the message
            // (the path is in `data`). A restart that finds the WAL's marker ahead of the store
            // restores from the same file; one that finds the store ahead starts from the store.
            let index = snap.get_metadata().index;
            let path = std::path::PathBuf::from(String::from_utf8_lossy(&snap.data).into_owned());
            self.persist(PersistJob::Snapshot(snap.get_metadata().clone()));
            if let Err(e) = self.raw.mut_store().wl().apply_snapshot(snap) {
                error!(target: "raft", "failed to apply snapshot to raft storage: {e}");
            }
            self.apply.restore(path, index);
        }
        self.hand_to_apply(rd.take_committed_entries());
        {
            let store = self.raw.mut_store();
            let mut core = store.wl();
            if !rd.entries().is_empty() {
                if let Err(e) = core.append(rd.entries()) {
                    error!(target: "raft", "failed to append to raft storage: {e}");
                }
            }
            if let Some(hs) = rd.hs() {
                core.set_hardstate(hs.clone());
            }
        }
        self.answer_reads(rd.take_read_states());
        // raft-rs holds every message of a non-leader until the Ready is persisted. Only
        // append and vote responses claim anything about this member's disk; heartbeat
        // responses and forwarded requests go now, so a slow sync on a follower does not look
        // like a dead follower to the leader's quorum check.
        let (now, after_sync): (Vec<Message>, Vec<Message>) = rd
            .take_persisted_messages()
            .into_iter()
            .partition(|m| needs_no_sync(m.get_msg_type()));
        if !now.is_empty() {
            self.send_messages(now);
        }
        let job = PersistJob::Ready {
            number: rd.number(),
            hard_state: rd.hs().cloned(),
            must_sync: rd.must_sync(),
            entries: rd.take_entries(),
            messages: after_sync,
        };
        let number = rd.number();
        self.raw.advance_append_async(rd);
        let persisted_inline = self.persist(job);
        if let Some(n) = persisted_inline {
            self.raw.on_persist_ready(n.max(number));
        }
        self.cluster
            .set_leader_and_term(self.raw.raft.leader_id, self.raw.raft.term);
        self.cluster
            .set_commit_index(self.raw.raft.raft_log.committed);
        persisted_inline.is_some()
    }

    fn has_peers(&self) -> bool {
        self.raw
            .raft
            .prs()
            .iter()
            .any(|(id, _)| *id != self.raw.raft.id)
    }

    /// Hands a job to the WAL writer, or does it here while the member has no peers (moving
    /// the writer to its own thread for good once it has one). Returns the Ready number made
    /// durable when done here.
    fn persist(&mut self, job: PersistJob) -> Option<u64> {
        if matches!(self.persist, Some(Persist::Inline(_))) && self.has_peers() {
            if let Some(Persist::Inline(p)) = self.persist.take() {
                self.persist = Some(Persist::Thread(PersistHandle::spawn(*p)));
            }
        }
        match self
            .persist
            .as_mut()
            .expect("persistence while the node runs")
        {
            Persist::Inline(p) => p.run_inline(job),
            Persist::Thread(h) => {
                h.send(job);
                None
            }
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        self.cluster.set_leader_and_term(leader, self.raw.raft.term);
        if role != self.last_role {
            match role {
                StateRole::Leader => info!(
                    target: "raft",
                    "{:x} became leader at term {}", self.raw.raft.id, self.raw.raft.term
                ),
                StateRole::Follower if leader != raft::INVALID_ID => info!(
                    target: "raft",
                    "raft.node: {:x} elected leader {:x} at term {}",
                    self.raw.raft.id, leader, self.raw.raft.term
                ),
                _ => {}
            }
            if self.last_role == StateRole::Leader && role != StateRole::Leader {
                // Reads confirmed against the old term can no longer be trusted.
                self.fail_reads(EtcdError::LeaderChanged);
            }
            self.last_role = role;
        }
    }

    fn answer_reads(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let round = u64::from_be_bytes(bytes);
            // Rounds complete in order; an answer for a round also answers older ones.
            while let Some((r, _)) = self.pending_reads.first() {
                if *r > round {
                    break;
                }
                let (_, ws) = self.pending_reads.remove(0);
                for w in ws {
                    let _ = w.send(Ok(rs.index));
                }
            }
        }
    }

    fn hand_to_apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.apply.submit(entries);
    }

    fn send_messages(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                // the backend goes with it, on a stream of its own
                self.transport.send_snapshot(m);
                continue;
            }
            if !self.transport.send(m) {
                self.raw.report_unreachable(to);
            }
        }
    }

    /// Drops applied entries from the in-memory log. They stay in the WAL until a snapshot
    /// releases it; memory only needs what peers may still ask for (etcd keeps 5000 entries
    /// for catch-up), and a member without peers needs none — otherwise a stream of large
    /// values would stay in memory until the next snapshot (up to `--snapshot-count` entries).
    fn trim_memory_log(&mut self, applied: u64) {
        let has_peers = self
            .raw
            .raft
            .prs()
            .iter()
            .any(|(id, _)| *id != self.raw.raft.id);
        let keep = if has_peers { self.catchup_entries } else { 0 };
        let upto = applied.saturating_sub(keep);
        let store = self.raw.mut_store();
        let first = raft::Storage::first_index(&*store).unwrap_or(1);
        if upto > first {
            if let Err(e) = store.wl().compact(upto) {
                warn!(target: "raft", "failed to trim the in-memory log to {upto}: {e}");
            }
        }
    }

    /// Records a snapshot marker at `index` (the backend already holds everything up to it
    /// durably), then drops the log before it from memory and whole WAL segments from disk.
    fn compact_log(&mut self, index: u64) {
        use raft::Storage as _;
        let store = self.raw.mut_store();
        let (term, conf_state) = match (store.term(index), store.initial_state()) {
            (Ok(t), Ok(st)) => (t, st.conf_state),
            (Err(e), _) | (_, Err(e)) => {
                warn!(target: "raft", "cannot snapshot at {index}: {e}");
                return;
            }
        };
        let mut meta = raft::eraftpb::SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        if store.first_index().is_ok_and(|first| first < index) {
            if let Err(e) = store.wl().compact(index) {
                warn!(target: "raft", "failed to compact raft log at {index}: {e}");
            }
        }
        if let Some(n) = self.persist(PersistJob::Compact(meta)) {
            self.raw.on_persist_ready(n);
        }
    }
}

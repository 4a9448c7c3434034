//! The apply thread: committed Raft entries become state changes, strictly in log order, on
//! every member. A batch of entries is applied in one backend transaction together with the
//! applied index, so replay after a crash skips exactly what is already in the store. After the
//! batch commits, readers can see it, and then the waiting clients are woken — a client never
//! gets an answer its next read could contradict.

pub mod wait;

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ketch_api::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    ResponseHeader, TxnResponse,
};
use ketch_api::ketchpb::{raft_request::Request, MemberRecord, RaftRequest};
use ketch_api::status::EtcdError;
use ketch_mvcc::{Store, WriteBatch};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cluster::{ClusterState, MemberChange};
use crate::lease::Lessor;
use crate::raft::{RaftHandle, RaftMsg};
use crate::watch::WatchHub;
use wait::WaitRegistry;

/// What applying one request produced, for the client that proposed it.
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(ketch_api::etcdserverpb::AlarmResponse),
    /// A membership change: the member list after it.
    Members(Vec<MemberRecord>),
    /// Authenticate's simple token.
    Token(String),
    /// Requests whose only answer is "done" (publish, lease checkpoints, auth changes).
    Done,
}

pub type ApplyResult = Result<Applied, EtcdError>;

/// Backend commits are non-durable (the WAL already holds every applied entry) except every
/// this many entries or this long, which bounds how much WAL a restart replays.
const DURABLE_EVERY_ENTRIES: u64 = 10_000;
const DURABLE_EVERY: Duration = Duration::from_secs(5);

enum ApplyMsg {
    Entries(Vec<Entry>),
    /// Replace the store with the snapshot file at `path` (a leader's backend at `index`).
    Restore {
        path: std::path::PathBuf,
        index: u64,
    },
    Stop,
}

/// The Raft thread's handle on the apply thread.
pub struct ApplyTask {
    tx: Sender<ApplyMsg>,
    waits: Arc<WaitRegistry>,
}

impl ApplyTask {
    pub fn submit(&self, entries: Vec<Entry>) {
        if self.tx.send(ApplyMsg::Entries(entries)).is_err() {
            error!(target: "etcdserver", "apply thread is gone; committed entries dropped");
        }
    }

    pub fn restore(&self, path: std::path::PathBuf, index: u64) {
        if self.tx.send(ApplyMsg::Restore { path, index }).is_err() {
            error!(target: "etcdserver", "apply thread is gone; snapshot dropped");
        }
    }

    pub fn fail_waiter(&self, id: u64, err: EtcdError) {
        self.waits.trigger(id, Err(err));
    }

    pub fn stop(&self) {
        let _ = self.tx.send(ApplyMsg::Stop);
    }
}

pub struct ApplyReceiver(Receiver<ApplyMsg>);

pub struct Applier {
    pub store: Arc<Store>,
    pub waits: Arc<WaitRegistry>,
    pub cluster: Arc<ClusterState>,
    pub applied: watch::Sender<u64>,
    pub raft: RaftHandle,
    pub snapshot_count: u64,
    /// gets the events of every committed batch, before the waiting clients are woken
    pub watch_hub: Arc<WatchHub>,
    /// the leases, changed by lease requests and by writes that attach or detach keys
    pub lessor: Arc<Lessor>,
    /// users and roles: auth requests change them, every request is checked against them
    pub auth: Arc<crate::auth::AuthStore>,
    /// raised alarms: a NOSPACE alarm caps the writes that grow the store
    pub alarms: Arc<crate::alarm::Alarms>,
    last_snapshot_index: u64,
    last_durable_index: u64,
    last_durable_at: Instant,
}

impl Applier {
    // One argument per part of the member the apply thread changes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        waits: Arc<WaitRegistry>,
        cluster: Arc<ClusterState>,
        applied: watch::Sender<u64>,
        raft: RaftHandle,
        snapshot_count: u64,
        watch_hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        auth: Arc<crate::auth::AuthStore>,
        alarms: Arc<crate::alarm::Alarms>,
    ) -> Self {
        let index = store.applied_index();
        Applier {
            store,
            waits,
            cluster,
            applied,
            raft,
            snapshot_count: snapshot_count.max(1),
            watch_hub,
            lessor,
            auth,
            alarms,
            last_snapshot_index: index,
            last_durable_index: index,
            last_durable_at: Instant::now(),
        }
    }

    /// Creates the channel pair: the task handle for the Raft thread and the receiver `run` takes.
    pub fn channel(waits: Arc<WaitRegistry>) -> (ApplyTask, ApplyReceiver) {
        let (tx, rx) = std::sync::mpsc::channel();
        (ApplyTask { tx, waits }, ApplyReceiver(rx))
    }

    pub fn run(mut self, rx: ApplyReceiver) {
        let rx = rx.0;
        let mut pending: Option<ApplyMsg> = None;
        loop {
            let msg = match pending.take() {
                Some(m) => m,
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            let mut entries = match msg {
                ApplyMsg::Entries(e) => e,
                ApplyMsg::Restore { path, index } => {
                    if let Err(e) = self.restore(&path, index) {
                        error!(target: "etcdserver", "fatal: failed to restore the snapshot at {index} from {}: {e}", path.display());
                        std::process::abort();
                    }
                    continue;
                }
                ApplyMsg::Stop => break,
            };
            // everything queued meanwhile goes into the same batch, up to a restore or stop
            let mut stop = false;
            while let Ok(more) = rx.try_recv() {
                match more {
                    ApplyMsg::Entries(e) => entries.extend(e),
                    other @ ApplyMsg::Restore { .. } => {
                        pending = Some(other);
                        break;
                    }
                    ApplyMsg::Stop => {
                        stop = true;
                        break;
                    }
                }
            }
            if let Err(e) = self.apply_entries(&entries) {
                error!(target: "etcdserver", "fatal: failed to apply committed entries: {e}");
                std::process::abort();
            }
            if stop {
                break;
            }
        }
        if let Err(e) = self
            .store
            .write()
            .and_then(|wb| wb.commit(true).map(|_| ()))
        {
            error!(target: "etcdserver", "failed to flush the backend at stop: {e}");
        }
        info!(target: "etcdserver", "apply loop stopped");
    }

    fn apply_entries(&mut self, entries: &[Entry]) -> Result<(), ketch_mvcc::StoreError> {
        let store = Arc::clone(&self.store);
        let already = store.applied_index();
        let mut wb = store.write()?;
        let mut results: Vec<(u64, ApplyResult)> = Vec::new();
        let mut conf_changes: Vec<Option<ConfChange>> = Vec::new();
        let mut last = already;
        for e in entries {
            if e.index <= already {
                continue;
            }
            last = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        continue; // a new leader's empty entry
                    }
                    match RaftRequest::decode(&e.data[..]) {
                        Ok(req) => {
                            let id = req.header.as_ref().map(|h| h.id).unwrap_or(0);
                            let updates_members =
                                matches!(req.request, Some(Request::MemberUpdate(_)));
                            let res = self.apply_request(&mut wb, req, e.index);
                            self.lessor.apply_key_changes(&wb.take_lease_changes());
                            if updates_members && res.is_ok() {
                                conf_changes.push(None);
                            }
                            results.push((id, res));
                        }
                        Err(err) => {
                            error!(target: "etcdserver", "skipping undecodable entry {}: {err}", e.index);
                        }
                    }
                }
                EntryType::EntryConfChange => match ConfChange::parse_from_bytes(&e.data) {
                    Ok(cc) => {
                        let res = self.apply_conf_change(&mut wb, &cc);
                        if res.is_ok() {
                            conf_changes.push(Some(cc.clone()));
                        }
                        results.push((cc.id, res));
                    }
                    Err(err) => {
                        error!(target: "etcdserver", "skipping undecodable conf change {}: {err}", e.index);
                    }
                },
                EntryType::EntryConfChangeV2 => {
                    // Ketch proposes only v1 changes (one member at a time, as etcd 3.4).
                    warn!(target: "etcdserver", "ignoring a joint-consensus conf change at {}", e.index);
                }
            }
        }
        if last == already {
            return Ok(());
        }
        wb.set_applied_index(last);
        let durable = last - self.last_durable_index >= DURABLE_EVERY_ENTRIES
            || self.last_durable_at.elapsed() >= DURABLE_EVERY
            || last - self.last_snapshot_index >= self.snapshot_count;
        let revision = wb.revision();
        let events = wb.commit(durable)?;
        // Watchers first: a client that sees its put acknowledged finds the event already
        // queued for its watches. Notify never blocks on a client.
        self.watch_hub.notify(&events, revision);
        if durable {
            self.last_durable_index = last;
            self.last_durable_at = Instant::now();
        }
        self.applied.send_replace(last);
        if !conf_changes.is_empty() {
            let members = self.cluster.members();
            for cc in conf_changes {
                let _ = self.raft.send(RaftMsg::ConfChangeApplied {
                    cc,
                    members: members.clone(),
                });
            }
        }
        let _ = self.raft.send(RaftMsg::Applied(last));
        for (id, res) in results {
            self.waits.trigger(id, res);
        }
        if last - self.last_snapshot_index >= self.snapshot_count {
            // The backend now durably holds everything up to `last`: the log before it can go.
            self.last_snapshot_index = last;
            let _ = self.raft.send(RaftMsg::Compact { index: last });
        }
        Ok(())
    }

    /// Replaces the store with a leader's snapshot and takes the member list from it.
    fn restore(
        &mut self,
        path: &std::path::Path,
        index: u64,
    ) -> Result<(), ketch_mvcc::StoreError> {
        if index <= self.store.applied_index() {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
        let restored = self.store.restore_from(path)?;
        if restored != index {
            warn!(target: "etcdserver", "snapshot file holds index {restored}, its message said {index}");
        }
        if let Some(b) = self.store.meta_get(crate::cluster::MEMBERS_META_KEY)? {
            match crate::cluster::decode_members(&b) {
                Ok(members) => self.cluster.replace_members(members),
                Err(e) => error!(target: "etcdserver", "snapshot's member list is unreadable: {e}"),
            }
        }
        self.lessor.recover(&self.store)?;
        self.alarms.recover(&self.store)?;
        self.auth.recover(&self.store)?;
        self.watch_hub.restored(self.store.current_revision());
        info!(target: "etcdserver", "applied snapshot at index {restored}");
        self.last_snapshot_index = restored;
        self.last_durable_index = restored;
        self.applied.send_replace(restored);
        let _ = self.raft.send(RaftMsg::ConfChangeApplied {
            cc: None,
            members: self.cluster.members(),
        });
        let _ = self.raft.send(RaftMsg::Applied(restored));
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    /// A committed membership change: checked and recorded in the member list (kept in the
    /// backend in the same batch); raft-rs learns of it from the Raft thread afterwards.
    fn apply_conf_change(&self, wb: &mut WriteBatch<'_>, cc: &ConfChange) -> ApplyResult {
        let record = || {
            MemberRecord::decode(&cc.context[..]).map_err(|e| {
                error!(target: "etcdserver", "conf change for {:x} has no member record: {e}", cc.node_id);
                EtcdError::MemberBadUrls
            })
        };
        let change = match cc.get_change_type() {
            ConfChangeType::AddNode => match self.cluster.member(cc.node_id) {
                Some(m) if m.is_learner => MemberChange::Promote(cc.node_id),
                _ => MemberChange::Add(MemberRecord {
                    is_learner: false,
                    ..record()?
                }),
            },
            ConfChangeType::AddLearnerNode => MemberChange::Add(MemberRecord {
                is_learner: true,
                ..record()?
            }),
            ConfChangeType::RemoveNode => MemberChange::Remove(cc.node_id),
        };
        self.record_member_change(wb, &change)
    }

    fn record_member_change(&self, wb: &mut WriteBatch<'_>, change: &MemberChange) -> ApplyResult {
        self.cluster.apply_change(change)?;
        let cid = self.cluster.cluster_id;
        match change {
            MemberChange::Add(m) => {
                info!(target: "etcdserver/membership", "added member {:x} {:?} to cluster {cid:x}{}", m.id, m.peer_urls, if m.is_learner { " as a learner" } else { "" })
            }
            MemberChange::Promote(id) => {
                info!(target: "etcdserver/membership", "promote member {id:x} in cluster {cid:x}")
            }
            MemberChange::Remove(id) => {
                info!(target: "etcdserver/membership", "removed member {id:x} from cluster {cid:x}")
            }
            MemberChange::UpdatePeerUrls(id, urls) => {
                info!(target: "etcdserver/membership", "updated member {id:x} {urls:?} in cluster {cid:x}")
            }
        }
        if self.cluster.is_removed() {
            warn!(target: "etcdserver", "the member has been permanently removed from the cluster");
        }
        wb.meta_put(
            crate::cluster::MEMBERS_META_KEY,
            &self.cluster.encode_members(),
        );
        Ok(Applied::Members(self.cluster.members()))
    }

    fn apply_request(&self, wb: &mut WriteBatch<'_>, req: RaftRequest, index: u64) -> ApplyResult {
        let Some(request) = req.request else {
            return Err(EtcdError::KeyNotFound);
        };
        // etcd's auth applier: the proposer's user and auth revision, checked as of now
        self.auth
            .check_applied(&req.header.unwrap_or_default(), &request, &|id| {
                self.lessor.keys_of(id)
            })?;
        self.capped(&request)?;
        match request {
            auth @ (Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::Authenticate(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_)) => Ok(self
                .auth
                .apply_change(wb, auth, index)?
                .map_or(Applied::Done, Applied::Token)),
            Request::Put(p) => {
                if p.lease != 0 && !self.lessor.exists(p.lease) {
                    return Err(EtcdError::LeaseNotFound);
                }
                wb.put(&p).map(Applied::Put)
            }
            Request::DeleteRange(d) => wb.delete_range(&d).map(Applied::DeleteRange),
            Request::Txn(t) => wb
                .txn_checked(&t, &|id| self.lessor.exists(id))
                .map(Applied::Txn),
            Request::Compaction(c) => wb.compact(c.revision).map(Applied::Compaction),
            Request::Publish(attrs) => {
                if self
                    .cluster
                    .publish(attrs.id, &attrs.name, &attrs.client_urls)
                {
                    wb.meta_put(
                        crate::cluster::MEMBERS_META_KEY,
                        &self.cluster.encode_members(),
                    );
                }
                Ok(Applied::Done)
            }
            Request::MemberUpdate(m) => {
                self.record_member_change(wb, &MemberChange::UpdatePeerUrls(m.id, m.peer_urls))
            }
            Request::LeaseGrant(g) => {
                let ttl = self.lessor.grant(wb, g.id, g.ttl)?;
                Ok(Applied::LeaseGrant(LeaseGrantResponse {
                    header: None,
                    id: g.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Request::LeaseRevoke(r) => {
                self.lessor.revoke(wb, r.id)?;
                let header = ResponseHeader {
                    revision: wb.revision(),
                    ..Default::default()
                };
                Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
                    header: Some(header),
                }))
            }
            Request::LeaseCheckpoint(c) => {
                self.lessor.checkpoint(wb, &c.checkpoints);
                Ok(Applied::Done)
            }
            Request::Alarm(a) => Ok(Applied::Alarm(self.alarms.apply(wb, &a))),
        }
    }

    /// etcd's capped applier: while NOSPACE is raised, writes that grow the store are refused
    /// (deletes, compaction, revocations and the rest still apply).
    fn capped(&self, request: &Request) -> Result<(), EtcdError> {
        let grows = match request {
            Request::Put(_) | Request::LeaseGrant(_) => true,
            Request::Txn(t) => !ketch_mvcc::is_read_only_txn(t),
            _ => false,
        };
        if grows && self.alarms.no_space() {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }
}

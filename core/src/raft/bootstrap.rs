//! Start-up of the Raft side: a new member writes its cluster identity and an empty WAL; a
//! restarting member rebuilds raft-rs's in-memory log from the WAL and tells raft-rs how far the
//! store has already applied, so committed entries are replayed from exactly there.

use std::sync::Arc;

use ketch_api::ketchpb::MemberRecord;
use ketch_mvcc::Store;
use ketch_wal::{Wal, WalOptions};
use raft::eraftpb::{ConfState, Snapshot};
use raft::storage::MemStorage;
use raft::RawNode;
use tracing::{info, warn};

use crate::cluster::{self, ClusterState, MEMBERS_META_KEY};
use crate::config::MemberConfig;
use crate::member::StartError;

pub struct Booted {
    pub raw: RawNode<MemStorage>,
    pub wal: Wal,
    pub cluster: Arc<ClusterState>,
}

/// WAL metadata: member id then cluster id, 8 bytes each, big endian.
fn encode_metadata(member_id: u64, cluster_id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&member_id.to_be_bytes());
    b.extend_from_slice(&cluster_id.to_be_bytes());
    b
}

fn decode_metadata(b: &[u8]) -> Result<(u64, u64), StartError> {
    if b.len() != 16 {
        return Err(StartError::Other(format!(
            "WAL metadata has {} bytes, want 16",
            b.len()
        )));
    }
    let id = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    let cid = u64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
    Ok((id, cid))
}

/// Fault injection for tests of slow disks: when `KETCH_FAULT_WAL_SYNC_DELAY_FILE` names a
/// file, its content (milliseconds) is how long every WAL fdatasync takes at least, re-read
/// every 100 ms so a test can slow the disk of a running member. Unset in production.
pub const FAULT_SYNC_DELAY_ENV: &str = "KETCH_FAULT_WAL_SYNC_DELAY_FILE";

fn watch_fault_sync_delay() {
    let Some(path) = std::env::var_os(FAULT_SYNC_DELAY_ENV) else {
        return;
    };
    warn!(target: "etcdserver", "{FAULT_SYNC_DELAY_ENV} is set: WAL syncs may be slowed down for a test");
    let _ = std::thread::Builder::new()
        .name("ketch-fault".into())
        .spawn(move || loop {
            let ms = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            ketch_wal::FAULT_SYNC_DELAY_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(100));
        });
}

pub(crate) fn conf_state_of(members: &[MemberRecord]) -> ConfState {
    let voters: Vec<u64> = members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let learners: Vec<u64> = members
        .iter()
        .filter(|m| m.is_learner)
        .map(|m| m.id)
        .collect();
    ConfState::from((voters, learners))
}

/// Starts the Raft side. `joined` is the cluster fetched from its members when this member
/// joins an existing cluster (`--initial-cluster-state existing`) for the first time.
pub fn boot(
    cfg: &MemberConfig,
    store: &Store,
    joined: Option<(u64, Vec<MemberRecord>)>,
) -> Result<Booted, StartError> {
    let wal_dir = cfg.wal_dir();
    watch_fault_sync_delay();
    let opts = WalOptions::default();
    // What the store has applied is needed from the WAL only as terms, except the entries a
    // peer may still ask for; their payloads are dropped while reading (see `Wal::open_hollow`).
    let mut applied = store.applied_index();
    let hollow_upto = {
        let stored = store
            .meta_get(MEMBERS_META_KEY)
            .map_err(|e| StartError::Other(e.to_string()))?;
        let peers = match stored {
            Some(b) => cluster::decode_members(&b)
                .map(|m| m.len() > 1)
                .unwrap_or(true),
            None => cfg
                .initial_cluster
                .iter()
                .any(|(n, _)| *n != cfg.initial_cluster[0].0),
        };
        applied.saturating_sub(if peers {
            cfg.snapshot_catchup_entries
        } else {
            0
        })
    };
    let (mut wal, recovered, member_id, cluster_id, mut members) = if Wal::exists(&wal_dir) {
        let (wal, rec) = Wal::open_hollow(&wal_dir, opts, hollow_upto)
            .map_err(|e| StartError::Other(format!("open wal: {e}")))?;
        let (member_id, cluster_id) = decode_metadata(&rec.metadata)?;
        // A snapshot from a peer recorded in the WAL but not yet restored into the store (a
        // crash in between): restore it now from the file kept for that purpose.
        if let Some(meta) = rec.snapshot.as_ref().filter(|m| m.index > applied) {
            let path = crate::transport::received_snapshot_path(&cfg.snap_dir(), meta.index);
            if path.exists() {
                info!(target: "etcdserver", "restoring the store from the received snapshot at {}", meta.index);
                store.restore_from(&path).map_err(|e| {
                    StartError::Other(format!("restore snapshot {}: {e}", path.display()))
                })?;
                let _ = std::fs::remove_file(&path);
                applied = store.applied_index();
            }
        }
        let members = match store
            .meta_get(MEMBERS_META_KEY)
            .map_err(|e| StartError::Other(e.to_string()))?
        {
            Some(b) => cluster::decode_members(&b)
                .map_err(|e| StartError::Other(format!("members record: {e}")))?,
            None => cluster::initial_members(cfg),
        };
        info!(
            target: "etcdserver",
            "restarting member {member_id:x} in cluster {cluster_id:x} at commit index {}",
            rec.hard_state.commit
        );
        (wal, Some(rec), member_id, cluster_id, members)
    } else {
        let (member_id, cluster_id, members) = match joined {
            // Joining: the cluster says who we are (the id `member add` gave our peer URLs).
            Some((cluster_id, members)) => {
                let mine: Vec<String> = cfg
                    .initial_advertise_peer_urls
                    .iter()
                    .map(crate::config::url_text)
                    .collect();
                let me = members
                    .iter()
                    .find(|m| !m.peer_urls.is_empty() && m.peer_urls.iter().all(|u| mine.contains(u)))
                    .ok_or_else(|| {
                        StartError::Other(format!(
                            "this member's peer URLs {mine:?} are not in the cluster's member list; add it first with 'etcdctl member add {} --peer-urls={}'",
                            cfg.name,
                            mine.join(",")
                        ))
                    })?;
                (me.id, cluster_id, members)
            }
            None => {
                let members = cluster::initial_members(cfg);
                let me = members.iter().find(|m| m.name == cfg.name).ok_or_else(|| {
                    StartError::Other(format!(
                        "couldn't find local name {:?} in the initial cluster configuration",
                        cfg.name
                    ))
                })?;
                let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
                (me.id, cluster::cluster_id(&ids), members)
            }
        };
        // Membership goes to the backend before the WAL exists: a WAL is what marks the
        // member as created, so a crash in between simply starts over.
        let mut wb = store
            .write()
            .map_err(|e| StartError::Other(e.to_string()))?;
        wb.meta_put(MEMBERS_META_KEY, &cluster::encode_members(&members));
        wb.commit(true)
            .map_err(|e| StartError::Other(e.to_string()))?;
        let wal = Wal::create(&wal_dir, &encode_metadata(member_id, cluster_id), opts)
            .map_err(|e| StartError::Other(format!("create wal: {e}")))?;
        info!(target: "etcdserver", "starting member {member_id:x} in cluster {cluster_id:x}");
        (wal, None, member_id, cluster_id, members)
    };

    let storage = MemStorage::new();
    {
        let mut core = storage.wl();
        let mut last_index = 0;
        match recovered.as_ref().and_then(|r| r.snapshot.clone()) {
            Some(meta) if meta.index > 0 => {
                last_index = meta.index;
                let mut snap = Snapshot::default();
                snap.set_metadata(meta);
                core.apply_snapshot(snap)
                    .map_err(|e| StartError::Other(format!("raft snapshot: {e}")))?;
            }
            _ => core.set_conf_state(conf_state_of(&members)),
        }
        if let Some(rec) = &recovered {
            // The in-memory log starts at the last hollow entry: raft-rs needs its term to match
            // what follows, never its payload.
            let mut entries = &rec.entries[..];
            if let Some(pos) = entries.iter().position(|e| e.index == hollow_upto) {
                let mut snap = Snapshot::default();
                snap.mut_metadata().index = hollow_upto;
                snap.mut_metadata().term = entries[pos].term;
                snap.mut_metadata().set_conf_state(conf_state_of(&members));
                core.apply_snapshot(snap)
                    .map_err(|e| StartError::Other(format!("raft snapshot: {e}")))?;
                last_index = hollow_upto;
                entries = &entries[pos + 1..];
            }
            if !entries.is_empty() {
                core.append(entries)
                    .map_err(|e| StartError::Other(format!("raft log: {e}")))?;
                last_index = entries.last().map(|e| e.index).unwrap_or(last_index);
            }
            let mut hs = rec.hard_state.clone();
            if applied > last_index {
                // The store holds entries the WAL no longer has: fsynced WAL data was lost (a
                // disk that lied about a sync, or a hand-edited WAL). The store is the newer
                // truth; restart the log after it rather than refuse to start.
                warn!(
                    target: "etcdserver",
                    "WAL ends at index {last_index} but the store has applied up to {applied}; continuing from the store"
                );
                let mut snap = Snapshot::default();
                snap.mut_metadata().index = applied;
                snap.mut_metadata().term = hs.term;
                snap.mut_metadata().set_conf_state(conf_state_of(&members));
                wal.save_snapshot(snap.get_metadata())
                    .map_err(|e| StartError::Other(format!("record snapshot in wal: {e}")))?;
                core.apply_snapshot(snap)
                    .map_err(|e| StartError::Other(format!("raft snapshot: {e}")))?;
                last_index = applied;
            }
            // The commit index is persisted lazily; whatever the store applied was committed.
            if applied > hs.commit && applied <= last_index {
                hs.commit = applied;
            }
            let (commit, term) = (hs.commit, hs.term);
            core.set_hardstate(hs);
            if cfg.force_new_cluster {
                // etcd's disaster recovery: keep the data and everything committed, drop what
                // was not, and become the only member of the cluster (same cluster id).
                warn!(
                    target: "etcdserver",
                    "forcing restart of member {member_id:x} in cluster {cluster_id:x} at commit index {commit}"
                );
                let me = members
                    .iter()
                    .find(|m| m.id == member_id)
                    .cloned()
                    .ok_or_else(|| {
                        StartError::Other(format!(
                            "member {member_id:x} is not in its own member list"
                        ))
                    })?;
                members = vec![MemberRecord {
                    is_learner: false,
                    ..me
                }];
                // raft-rs's log again, from the WAL's snapshot marker, committed entries only,
                // with this member as the only voter
                let (base, base_term) = rec.snapshot.as_ref().map_or((0, 0), |m| (m.index, m.term));
                let committed: Vec<_> = rec
                    .entries
                    .iter()
                    .filter(|e| e.index > base && e.index <= commit)
                    .cloned()
                    .collect();
                *core = raft::storage::MemStorageCore::default();
                if base > 0 {
                    let mut snap = Snapshot::default();
                    snap.mut_metadata().index = base;
                    snap.mut_metadata().term = base_term;
                    snap.mut_metadata().set_conf_state(conf_state_of(&members));
                    core.apply_snapshot(snap)
                        .map_err(|e| StartError::Other(format!("raft snapshot: {e}")))?;
                } else {
                    core.set_conf_state(conf_state_of(&members));
                }
                if !committed.is_empty() {
                    core.append(&committed)
                        .map_err(|e| StartError::Other(format!("raft log: {e}")))?;
                }
                let mut hs = raft::eraftpb::HardState::default();
                hs.term = term;
                hs.commit = commit;
                core.set_hardstate(hs);
                // The next start must see the new membership in the WAL too: a marker at the
                // applied index carries it (the store already holds everything up to there).
                let applied_term = committed
                    .iter()
                    .find(|e| e.index == applied)
                    .map(|e| e.term)
                    .or((applied == base).then_some(base_term));
                if let (true, Some(t)) = (applied > 0, applied_term) {
                    let mut meta = raft::eraftpb::SnapshotMetadata::default();
                    meta.index = applied;
                    meta.term = t;
                    meta.set_conf_state(conf_state_of(&members));
                    wal.save_snapshot(&meta)
                        .map_err(|e| StartError::Other(format!("record snapshot in wal: {e}")))?;
                }
                let mut wb = store
                    .write()
                    .map_err(|e| StartError::Other(e.to_string()))?;
                wb.meta_put(MEMBERS_META_KEY, &cluster::encode_members(&members));
                wb.commit(true)
                    .map_err(|e| StartError::Other(e.to_string()))?;
            }
        }
    }

    let config = raft::Config {
        id: member_id,
        election_tick: (cfg.election_timeout.as_millis()
            / cfg.heartbeat_interval.as_millis().max(1)) as usize,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 512,
        check_quorum: true,
        pre_vote: cfg.pre_vote,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| StartError::Other(format!("raft config: {e}")))?;
    let logger = slog::Logger::root(crate::logging::SlogToTracing, slog::o!());
    let raw = RawNode::new(&config, storage, &logger)
        .map_err(|e| StartError::Other(format!("raft: {e}")))?;
    let cluster = Arc::new(ClusterState::new(cluster_id, member_id, members));
    Ok(Booted { raw, wal, cluster })
}

//! Cluster identity and membership as this member knows it: member and cluster ids derived the
//! way etcd derives them (so the same flags give the same ids as etcd), the member records, and
//! which member leads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use ketch_api::etcdserverpb::Member as PbMember;
use ketch_api::ketchpb::MemberRecord;
use ketch_api::status::EtcdError;
use prost::Message as _;
use sha1::{Digest, Sha1};

use crate::config::{url_text, MemberConfig};

/// etcd's member id: the first 8 bytes (big endian) of SHA-1 over the sorted peer URLs followed
/// by the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// etcd's cluster id: the first 8 bytes of SHA-1 over the sorted member ids, 8 bytes each.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// The members `--initial-cluster` describes, grouped by name as etcd does (one name may list
/// several peer URLs), in the order first given.
pub fn initial_members(cfg: &MemberConfig) -> Vec<MemberRecord> {
    let mut members: Vec<MemberRecord> = Vec::new();
    for (name, url) in &cfg.initial_cluster {
        let url = url_text(url);
        match members.iter_mut().find(|m| &m.name == name) {
            Some(m) => m.peer_urls.push(url),
            None => members.push(MemberRecord {
                id: 0,
                name: name.clone(),
                peer_urls: vec![url],
                client_urls: vec![],
                is_learner: false,
            }),
        }
    }
    for m in &mut members {
        m.id = member_id(&m.peer_urls, &cfg.initial_cluster_token);
    }
    members
}

/// What this member knows about the cluster. Read by every request (ids for headers), written
/// by the apply thread when membership changes and by the raft thread on leader change.
pub struct ClusterState {
    pub cluster_id: u64,
    pub member_id: u64,
    leader_id: AtomicU64,
    term: AtomicU64,
    commit_index: AtomicU64,
    members: RwLock<Vec<MemberRecord>>,
    /// Turns true once a membership change removing this member is applied.
    removed: tokio::sync::watch::Sender<bool>,
    /// The leader's id (0 for none), for tasks that start or stop with leadership.
    leader_changes: tokio::sync::watch::Sender<u64>,
    /// Members removed since this one started (etcd keeps them too): their Raft messages are
    /// refused, which tells a removed member that missed its own removal.
    removed_ids: RwLock<std::collections::HashSet<u64>>,
    /// Times a new leader was seen (etcd_server_leader_changes_seen_total).
    leader_changes_seen: AtomicU64,
}

/// A membership change as the Raft log carries it (a `ConfChange` and its member record).
#[derive(Clone, Debug)]
pub enum MemberChange {
    Add(MemberRecord),
    /// Learner to voter.
    Promote(u64),
    Remove(u64),
    UpdatePeerUrls(u64, Vec<String>),
}

/// etcd 3.4 allows one learner at a time.
pub const MAX_LEARNERS: usize = 1;

impl ClusterState {
    pub fn new(cluster_id: u64, member_id: u64, members: Vec<MemberRecord>) -> Self {
        ClusterState {
            cluster_id,
            member_id,
            leader_id: AtomicU64::new(0),
            term: AtomicU64::new(0),
            commit_index: AtomicU64::new(0),
            members: RwLock::new(members),
            removed: tokio::sync::watch::channel(false).0,
            leader_changes: tokio::sync::watch::channel(0).0,
            removed_ids: RwLock::new(std::collections::HashSet::new()),
            leader_changes_seen: AtomicU64::new(0),
        }
    }

    /// Applies a committed membership change, with etcd's checks (the same on every member,
    /// since all apply the same log): adding an id or a peer URL that exists, a second learner,
    /// or changing a member that does not exist is refused and changes nothing.
    pub fn apply_change(&self, change: &MemberChange) -> Result<(), EtcdError> {
        let mut members = self.members.write().expect("members lock");
        let find = |members: &[MemberRecord], id: u64| members.iter().position(|m| m.id == id);
        match change {
            MemberChange::Add(m) => {
                if find(&members, m.id).is_some() {
                    return Err(EtcdError::MemberExist);
                }
                if members
                    .iter()
                    .any(|x| x.peer_urls.iter().any(|u| m.peer_urls.contains(u)))
                {
                    return Err(EtcdError::PeerUrlExist);
                }
                if m.is_learner && members.iter().filter(|x| x.is_learner).count() >= MAX_LEARNERS {
                    return Err(EtcdError::TooManyLearners);
                }
                // an id added again is a member again
                self.removed_ids
                    .write()
                    .expect("removed ids lock")
                    .remove(&m.id);
                members.push(m.clone());
            }
            MemberChange::Promote(id) => {
                let i = find(&members, *id).ok_or(EtcdError::MemberNotFound)?;
                if !members[i].is_learner {
                    return Err(EtcdError::MemberNotLearner);
                }
                members[i].is_learner = false;
            }
            MemberChange::Remove(id) => {
                let i = find(&members, *id).ok_or(EtcdError::MemberNotFound)?;
                members.remove(i);
                self.removed_ids
                    .write()
                    .expect("removed ids lock")
                    .insert(*id);
                if *id == self.member_id {
                    self.removed.send_replace(true);
                }
            }
            MemberChange::UpdatePeerUrls(id, urls) => {
                let i = find(&members, *id).ok_or(EtcdError::MemberNotFound)?;
                if members
                    .iter()
                    .any(|x| x.id != *id && x.peer_urls.iter().any(|u| urls.contains(u)))
                {
                    return Err(EtcdError::PeerUrlExist);
                }
                members[i].peer_urls = urls.clone();
            }
        }
        Ok(())
    }

    /// Whether this member is a learner (which serves almost no client requests).
    pub fn local_is_learner(&self) -> bool {
        self.members
            .read()
            .expect("members lock")
            .iter()
            .any(|m| m.id == self.member_id && m.is_learner)
    }

    /// Takes the member list of a restored snapshot.
    pub fn replace_members(&self, members: Vec<MemberRecord>) {
        let removed = !members.iter().any(|m| m.id == self.member_id);
        *self.members.write().expect("members lock") = members;
        if removed {
            self.removed.send_replace(true);
        }
    }

    /// Resolves once this member has been removed from the cluster.
    pub async fn wait_removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether `id` was a member that the cluster removed.
    pub fn was_removed(&self, id: u64) -> bool {
        self.removed_ids
            .read()
            .expect("removed ids lock")
            .contains(&id)
    }

    /// Peers say the cluster removed this member: it stops as if it had applied that itself.
    pub fn mark_self_removed(&self) {
        self.removed.send_replace(true);
    }

    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    pub fn leader(&self) -> u64 {
        self.leader_id.load(Ordering::Acquire)
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    pub fn set_leader_and_term(&self, leader: u64, term: u64) {
        self.leader_id.store(leader, Ordering::Release);
        self.term.store(term, Ordering::Release);
        let changed = self.leader_changes.send_if_modified(|known| {
            let changed = *known != leader;
            *known = leader;
            changed
        });
        if changed && leader != 0 {
            self.leader_changes_seen.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times a new leader was seen.
    pub fn leader_changes_seen(&self) -> u64 {
        self.leader_changes_seen.load(Ordering::Relaxed)
    }

    /// The leader's id (0 while there is none), marked changed whenever another takes over.
    pub fn watch_leader(&self) -> tokio::sync::watch::Receiver<u64> {
        self.leader_changes.subscribe()
    }

    /// The Raft commit index as the Raft thread last saw it.
    pub fn commit_index(&self) -> u64 {
        self.commit_index.load(Ordering::Acquire)
    }

    pub fn set_commit_index(&self, index: u64) {
        self.commit_index.store(index, Ordering::Release);
    }

    pub fn members(&self) -> Vec<MemberRecord> {
        self.members.read().expect("members lock").clone()
    }

    pub fn member(&self, id: u64) -> Option<MemberRecord> {
        self.members
            .read()
            .expect("members lock")
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// Records a member's published name and client URLs; false if the member is unknown.
    pub fn publish(&self, id: u64, name: &str, client_urls: &[String]) -> bool {
        let mut members = self.members.write().expect("members lock");
        match members.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                m.name = name.to_string();
                m.client_urls = client_urls.to_vec();
                true
            }
            None => false,
        }
    }

    pub fn members_pb(&self) -> Vec<PbMember> {
        self.members().into_iter().map(to_pb).collect()
    }

    /// The member list as stored under [`MEMBERS_META_KEY`].
    pub fn encode_members(&self) -> Vec<u8> {
        encode_members(&self.members())
    }
}

/// Backend meta key holding the member list (length-delimited `MemberRecord`s).
pub const MEMBERS_META_KEY: &str = "members";

pub fn encode_members(members: &[MemberRecord]) -> Vec<u8> {
    let mut buf = Vec::new();
    for m in members {
        m.encode_length_delimited(&mut buf).expect("Vec grows");
    }
    buf
}

pub fn decode_members(mut buf: &[u8]) -> Result<Vec<MemberRecord>, prost::DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(MemberRecord::decode_length_delimited(&mut buf)?);
    }
    Ok(out)
}

pub fn to_pb(m: MemberRecord) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_member_and_cluster_ids_match_etcd() {
        // `etcd` with no flags: member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }
}

//! etcd's Cluster service: the member list, and membership changes proposed through the Raft
//! log one member at a time (etcd 3.4's rules: checks before proposing here, the authoritative
//! ones when applying, in [`crate::cluster::ClusterState::apply_change`]).

use std::time::{SystemTime, UNIX_EPOCH};

use ketch_api::etcdserverpb::cluster_server::Cluster;
use ketch_api::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use ketch_api::ketchpb::raft_request::Request as Proposal;
use ketch_api::ketchpb::MemberRecord;
use ketch_api::status::EtcdError;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType};
use tonic::{Request, Response, Status};

use super::propose::expect_applied;
use super::{Server, SharedServer};
use crate::cluster::{member_id, to_pb};

pub struct ClusterService(pub SharedServer);

/// How long a peer link must have been up to count as healthy for a reconfiguration (etcd's
/// HealthInterval).
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// etcd's types.NewURLs: every URL http(s)://host:port with no path.
fn check_peer_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls);
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let parsed = url::Url::parse(u).map_err(|_| EtcdError::MemberBadUrls)?;
        let ok = matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some()
            && parsed.port().is_some()
            && matches!(parsed.path(), "" | "/")
            && parsed.query().is_none();
        if !ok {
            return Err(EtcdError::MemberBadUrls);
        }
        out.push(crate::config::url_text(&parsed));
    }
    out.sort();
    Ok(out)
}

impl Server {
    /// etcd's strict reconfiguration check for adding a member: for a voter, the members that
    /// have started (published their name) must stay a quorum of the larger cluster; for any
    /// member, this one must have been connected to every voting member for 5 s.
    fn may_add_member(&self, learner: bool) -> Result<(), EtcdError> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        let voters: Vec<MemberRecord> = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| !m.is_learner)
            .collect();
        let started = voters.iter().filter(|m| !m.name.is_empty()).count();
        let total = voters.len() + 1;
        // etcd lets a one-member cluster add its second member (data restore)
        let restoring = started == 1 && total == 2;
        if !learner && !restoring && started < total / 2 + 1 {
            return Err(EtcdError::MemberNotEnoughStarted);
        }
        let me = self.cluster.member_id;
        if voters
            .iter()
            .any(|m| m.id != me && !self.transport.is_active_for(m.id, HEALTH_INTERVAL))
        {
            return Err(EtcdError::Unhealthy);
        }
        Ok(())
    }

    /// etcd's check for removing voter `id`: the started members left must be a quorum of
    /// what is left, and this member connected to a quorum of it.
    fn may_remove_voter(&self, id: u64) -> Result<(), EtcdError> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        let rest: Vec<MemberRecord> = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| !m.is_learner && m.id != id)
            .collect();
        let quorum = rest.len() / 2 + 1;
        if rest.iter().filter(|m| !m.name.is_empty()).count() < quorum {
            return Err(EtcdError::MemberNotEnoughStarted);
        }
        let me = self.cluster.member_id;
        let connected = rest
            .iter()
            .filter(|m| m.id == me || self.transport.is_active_for(m.id, HEALTH_INTERVAL))
            .count();
        if connected < quorum {
            return Err(EtcdError::Unhealthy);
        }
        Ok(())
    }

    async fn change_members(&self, cc: ConfChange) -> Result<Vec<MemberRecord>, Status> {
        expect_applied!(self.propose_conf_change(cc).await, Members)
    }
}

async fn forward_promote(
    s: &Server,
    leader: u64,
    id: u64,
) -> Result<Response<MemberPromoteResponse>, Status> {
    use ketch_api::etcdserverpb::cluster_client::ClusterClient;
    let urls = s
        .cluster
        .member(leader)
        .map(|m| m.client_urls)
        .unwrap_or_default();
    let url = urls.first().ok_or(EtcdError::NoLeader)?;
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|_| EtcdError::NoLeader)?
        .connect_timeout(std::time::Duration::from_secs(1))
        .timeout(s.request_timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|_| EtcdError::TimeoutDueToConnectionLost)?;
    ClusterClient::new(channel)
        .member_promote(MemberPromoteRequest { id })
        .await
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, once auth is enabled
        self.0.check_admin(&req).await?;
        let req = req.into_inner();
        let s = &self.0;
        let peer_urls = check_peer_urls(&req.peer_ur_ls)?;
        let members = s.cluster.members();
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist.into());
        }
        s.may_add_member(req.is_learner)?;
        // etcd's NewMember("", urls, "", now): SHA-1 of the sorted URLs and the Unix time
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = MemberRecord {
            id: member_id(&peer_urls, &now.to_string()),
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(if req.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        });
        cc.node_id = record.id;
        cc.context = record.encode_to_vec().into();
        let members = s.change_members(cc).await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(s.header_without_revision()),
            member: Some(to_pb(record)),
            members: members.into_iter().map(to_pb).collect(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, once auth is enabled
        self.0.check_admin(&req).await?;
        let id = req.into_inner().id;
        let s = &self.0;
        let member = s.cluster.member(id).ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            s.may_remove_voter(id)?;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        let members = s.change_members(cc).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(s.header_without_revision()),
            members: members.into_iter().map(to_pb).collect(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, once auth is enabled
        self.0.check_admin(&req).await?;
        let req = req.into_inner();
        let s = &self.0;
        let peer_urls = check_peer_urls(&req.peer_ur_ls)?;
        let mut record = s.cluster.member(req.id).ok_or(EtcdError::MemberNotFound)?;
        record.peer_urls = peer_urls;
        let applied = s.propose(Proposal::MemberUpdate(record)).await;
        let members = expect_applied!(applied, Members)?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(s.header_without_revision()),
            members: members.into_iter().map(to_pb).collect(),
        }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header_without_revision()),
            members: self.0.cluster.members_pb(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        // etcd's checkMembershipOperationPermission: root only, once auth is enabled
        self.0.check_admin(&req).await?;
        let id = req.into_inner().id;
        let s = &self.0;
        let member = s.cluster.member(id).ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        // Only the leader knows whether the learner has caught up: pass the request on (etcd
        // forwards it over the peer port).
        let leader = s.cluster.leader();
        if leader == 0 {
            return Err(EtcdError::NoLeader.into());
        }
        if leader != s.cluster.member_id {
            return forward_promote(s, leader, id).await;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = id;
        cc.context = MemberRecord {
            is_learner: false,
            ..member
        }
        .encode_to_vec()
        .into();
        let members = s.change_members(cc).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(s.header_without_revision()),
            members: members.into_iter().map(to_pb).collect(),
        }))
    }
}

//! etcd's Cluster service. Listing works for any cluster; changing membership arrives with the
//! peer transport and answers `Unimplemented` until then.

use ketch_api::etcdserverpb::cluster_server::Cluster;
use ketch_api::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::SharedServer;

pub struct ClusterService(pub SharedServer);

fn membership_changes_unavailable() -> Status {
    Status::unimplemented("ketch: membership changes need the peer transport, which this build does not have yet")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(membership_changes_unavailable())
    }

    async fn member_remove(&self, _: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(membership_changes_unavailable())
    }

    async fn member_update(&self, _: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(membership_changes_unavailable())
    }

    async fn member_list(&self, _: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header_without_revision()),
            members: self.0.cluster.members_pb(),
        }))
    }

    async fn member_promote(&self, _: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(membership_changes_unavailable())
    }
}

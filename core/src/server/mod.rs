//! The client-facing side of a member: etcd's v3 gRPC services (kv.rs, watch.rs, lease.rs,
//! cluster.rs, maintenance.rs, lock.rs and election.rs over concurrency.rs), the propose-and-wait path (propose.rs) and the listener that serves gRPC
//! and HTTP on each client URL (listen.rs). Every service holds an `Arc<Server>`.

pub mod auth;
pub mod authority;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod kv;
pub mod lease;
pub mod listen;
pub mod lock;
pub mod maintenance;
pub mod propose;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use ketch_api::etcdserverpb::ResponseHeader;
use ketch_mvcc::Store;

use crate::apply::wait::WaitRegistry;
use crate::cluster::ClusterState;
use crate::raft::RaftHandle;
use crate::watch::WatchHub;
use propose::IdGenerator;

/// What every request handler shares.
pub struct Server {
    pub store: Arc<Store>,
    pub cluster: Arc<ClusterState>,
    pub raft: RaftHandle,
    pub waits: Arc<WaitRegistry>,
    /// the index the apply thread has applied and committed to the backend
    pub applied: tokio::sync::watch::Receiver<u64>,
    pub ids: IdGenerator,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// how long a proposal or read barrier may take: etcd's 5 s plus two election timeouts
    pub request_timeout: Duration,
    pub election_timeout: Duration,
    /// the peer links (membership checks ask which peers are connected)
    pub transport: Arc<crate::transport::Transport>,
    pub strict_reconfig_check: bool,
    pub initial_cluster_token: String,
    /// every watcher of the member; the apply thread feeds it
    pub watch_hub: Arc<WatchHub>,
    /// how often watches that asked for progress notifications get one (etcd: 10 minutes)
    pub watch_progress_interval: Duration,
    /// the leases (the apply thread changes them; the lease task expires them)
    pub lessor: Arc<crate::lease::Lessor>,
    /// keep-alives and TTL queries answered on the leader
    pub primary_leases: crate::lease::primary::PrimaryLeases,
    /// users, roles and tokens (the apply thread changes them)
    pub auth: Arc<crate::auth::AuthStore>,
    /// raised alarms (the apply thread changes them)
    pub alarms: Arc<crate::alarm::Alarms>,
    /// `--quota-backend-bytes`: live bytes of keys and values beyond which growing writes
    /// raise NOSPACE
    pub quota_bytes: u64,
    /// `--experimental-trusted-proxy-cn`: see `auth::Credentials::of`
    pub trusted_proxy_cns: Vec<String>,
}

impl Server {
    /// A response header as etcd fills it: ids, term, and the revision (the store's current one
    /// unless the operation already set it).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster.cluster_id,
            member_id: self.cluster.member_id,
            revision: if revision == 0 {
                self.store.current_revision()
            } else {
                revision
            },
            raft_term: self.cluster.term(),
        }
    }

    /// The header the Cluster service sends: ids and term, no revision (as etcd).
    pub fn header_without_revision(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster.cluster_id,
            member_id: self.cluster.member_id,
            revision: 0,
            raft_term: self.cluster.term(),
        }
    }

    pub fn fill_header(&self, h: &mut Option<ResponseHeader>) {
        let rev = h.as_ref().map(|h| h.revision).unwrap_or(0);
        *h = Some(self.header(rev));
    }
}

/// The metadata key clientv3 sets to `true` for calls that need a leader.
const REQUIRE_LEADER_KEY: &str = "hasleader";

/// clientv3's WithRequireLeader (etcdctl always sets it on streams): refuse a stream while
/// there is no leader, as etcd's stream interceptor does.
pub fn refuse_without_leader<T>(
    server: &Server,
    req: &tonic::Request<T>,
) -> Result<(), tonic::Status> {
    let require_leader = req
        .metadata()
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v == "true");
    if require_leader && server.cluster.leader() == 0 {
        return Err(ketch_api::status::EtcdError::NoLeader.into());
    }
    Ok(())
}

/// Shared handle type used by the service wrappers.
pub type SharedServer = Arc<Server>;
